"""The run/create flags of issue 14, in real containers as root: create, --label and
label filters, --ulimit, --device, --sysctl, --stop-signal, --stop-timeout, --cidfile,
and what inspect shows of each."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import CONTAINER_TESTS, RUN, loaded_root

pytestmark = CONTAINER_TESTS


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory, built_images: Path) -> Iterator[Path]:
    yield from loaded_root(tmp_path_factory, built_images)


def inspect(mr, name: str) -> dict:  # type: ignore[no-untyped-def]
    r = mr("inspect", "--type", "container", name)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)[0]


def test_create_then_start(mr) -> None:  # type: ignore[no-untyped-def]
    r = mr("create", "--name", "cr1", *RUN, "busybox", "sh", "-c", "echo made > /made; sleep 30")
    assert r.returncode == 0, r.stderr
    cid = r.stdout.strip()
    assert len(cid) == 64
    assert inspect(mr, "cr1")["State"]["Status"] == "created"
    assert "Created" in mr("ps", "-a", "--filter", "name=cr1").stdout
    assert mr("start", "cr1").returncode == 0
    assert mr("exec", "cr1", "cat", "/made").stdout == "made\n"
    assert mr("rm", "-f", "cr1").returncode == 0


def test_create_errors_exit_1(mr) -> None:  # type: ignore[no-untyped-def]
    # Docker: 125 is run's; other verbs (create too) exit 1
    r = mr("create", *RUN, "no-such-image")
    assert r.returncode == 1 and "not found" in r.stderr
    r = mr("create", "--ulimit", "nofile=2:1", *RUN, "busybox")
    assert r.returncode == 1 and "soft limit" in r.stderr
    assert "Traceback" not in r.stderr


def test_labels_inspect_and_filter(mr, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "labels"
    f.write_text("tier=db\n# note\nowner=ops\n")
    assert mr("create", "--name", "lab1", "-l", "tier=web", "--label", "x", "--label-file", str(f),
              *RUN, "busybox", "true").returncode == 0
    assert mr("create", "--name", "lab2", "--label", "tier=db", *RUN, "busybox", "true").returncode == 0
    try:
        assert inspect(mr, "lab1")["Config"]["Labels"] == {"tier": "web", "owner": "ops", "x": ""}
        names = mr("ps", "-a", "--filter", "label=tier=web", "--format", "{{.Names}}").stdout.split()
        assert names == ["lab1"]
        names = mr("ps", "-a", "--filter", "label=tier", "--format", "{{.Names}}").stdout.split()
        assert sorted(names) == ["lab1", "lab2"]
        out = mr("ps", "-a", "--filter", "name=lab1", "--format", '{{.Label "owner"}}').stdout
        assert out == "ops\n"
    finally:
        mr("rm", "lab1", "lab2")


def test_ulimit_applied(mr) -> None:  # type: ignore[no-untyped-def]
    r = mr("run", "--rm", "--ulimit", "nofile=321:654", "--ulimit", "nproc=77", *RUN, "busybox",
           "sh", "-c", "ulimit -n; ulimit -Hn; ulimit -u")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["321", "654", "77"]


def test_device_added_and_allowed(mr) -> None:  # type: ignore[no-untyped-def]
    # /dev/loop-control (10:237) is not among the default devices: only --device lets it
    # through, and with "r" the device cgroup refuses to open it for writing
    if not os.path.exists("/dev/loop-control"):
        pytest.skip("no /dev/loop-control on this host")
    r = mr("run", "--name", "dev1", "--device", "/dev/loop-control:/dev/k:r", *RUN, "busybox", "sh", "-c",
           "ls -l /dev/k; exec 3</dev/k && echo read-ok; (echo x > /dev/k) 2>&1 || echo denied")
    try:
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert lines[0].startswith("c") and "10, 237" in lines[0]
        assert lines[1] == "read-ok"
        assert "Operation not permitted" in lines[2] and lines[-1] == "denied"
        dev = inspect(mr, "dev1")["HostConfig"]["Devices"]
        assert dev == [{"PathOnHost": "/dev/loop-control", "PathInContainer": "/dev/k", "CgroupPermissions": "r"}]
    finally:
        mr("rm", "dev1")
    r = mr("run", "--rm", "--device", "/dev/nonexistent", *RUN, "busybox", "true")
    assert r.returncode == 125 and "/dev/nonexistent" in r.stderr


def test_device_denied_without_flag(mr) -> None:  # type: ignore[no-untyped-def]
    r = mr("run", "--rm", *RUN, "busybox", "sh", "-c",
           "test -e /dev/k && echo present; mknod /tmp/k c 10 237 && (exec 3</tmp/k) 2>&1 || echo denied")
    assert "present" not in r.stdout
    assert "Operation not permitted" in r.stdout and r.stdout.endswith("denied\n")


def test_sysctl(mr) -> None:  # type: ignore[no-untyped-def]
    host = Path("/proc/sys/kernel/shmmni").read_text()
    r = mr("run", "--rm", "--sysctl", "kernel.shmmni=1234", "--sysctl", "net.ipv4.ip_forward=1", *RUN,
           "busybox", "sh", "-c", "cat /proc/sys/kernel/shmmni /proc/sys/net/ipv4/ip_forward")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["1234", "1"]
    assert Path("/proc/sys/kernel/shmmni").read_text() == host  # the host's is untouched
    for bad in ("kernel.panic=1", "vm.swappiness=1"):
        r = mr("run", "--rm", "--sysctl", bad, *RUN, "busybox", "true")
        assert r.returncode == 125 and "not allowed" in r.stderr
    r = mr("run", "--rm", "--network", "host", "--sysctl", "net.ipv4.ip_forward=1", "--pull", "never",
           "busybox", "true")
    assert r.returncode == 125 and "network namespace" in r.stderr


def test_stop_signal_and_timeout(mr) -> None:  # type: ignore[no-untyped-def]
    # the trap proves which signal arrived; --stop-timeout 30 leaves time for it
    script = "trap 'echo got-usr1; exit 3' USR1; while :; do sleep 0.1; done"
    r = mr("run", "-d", "--name", "sig1", "--stop-signal", "SIGUSR1", "--stop-timeout", "30", *RUN,
           "busybox", "sh", "-c", script)
    assert r.returncode == 0, r.stderr
    try:
        info = inspect(mr, "sig1")
        assert info["Config"]["StopSignal"] == "SIGUSR1" and info["Config"]["StopTimeout"] == 30
        assert mr("stop", "sig1").returncode == 0
        info = inspect(mr, "sig1")
        assert info["State"]["ExitCode"] == 3
        assert "got-usr1" in mr("logs", "sig1").stdout
    finally:
        mr("rm", "-f", "sig1")


def test_stop_timeout_is_the_default_wait(mr) -> None:  # type: ignore[no-untyped-def]
    # sh as PID 1 ignores SIGTERM: stop must fall back to SIGKILL after --stop-timeout 1
    assert mr("run", "-d", "--name", "st1", "--stop-timeout", "1", *RUN, "busybox", "sh", "-c",
              "while :; do sleep 0.1; done").returncode == 0
    try:
        t0 = time.monotonic()
        assert mr("stop", "st1").returncode == 0
        took = time.monotonic() - t0
        assert 0.9 < took < 8, took
        assert inspect(mr, "st1")["State"]["ExitCode"] == 137
    finally:
        mr("rm", "-f", "st1")


def test_bad_stop_signal(mr) -> None:  # type: ignore[no-untyped-def]
    r = mr("run", "--rm", "--stop-signal", "SIGNOPE", *RUN, "busybox", "true")
    assert r.returncode == 125 and "SIGNOPE" in r.stderr


def test_cidfile(mr, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cidfile = tmp_path / "cid"
    r = mr("run", "--cidfile", str(cidfile), "--name", "cid1", *RUN, "busybox", "true")
    try:
        assert r.returncode == 0, r.stderr
        assert cidfile.read_text() == inspect(mr, "cid1")["Id"]
        assert inspect(mr, "cid1")["HostConfig"]["ContainerIDFile"] == str(cidfile)
        r = mr("run", "--cidfile", str(cidfile), *RUN, "busybox", "true")
        assert r.returncode == 125 and "container ID file found" in r.stderr
        assert len(mr("ps", "-aq").stdout.split()) == 1  # nothing was made
    finally:
        mr("rm", "cid1")


def test_restart_policy_recorded(mr) -> None:  # type: ignore[no-untyped-def]
    assert mr("create", "--name", "rp1", "--restart", "on-failure:4", *RUN, "busybox").returncode == 0
    try:
        assert inspect(mr, "rp1")["HostConfig"]["RestartPolicy"] == {"Name": "on-failure",
                                                                     "MaximumRetryCount": 4}
    finally:
        mr("rm", "rp1")
    r = mr("run", "--rm", "--restart", "always", *RUN, "busybox", "true")
    assert r.returncode == 125 and "--restart and --rm" in r.stderr
    r = mr("run", "--restart", "sometimes", *RUN, "busybox", "true")
    assert r.returncode == 125 and "restart policy" in r.stderr


def test_health_flags_recorded(mr) -> None:  # type: ignore[no-untyped-def]
    assert mr("create", "--name", "hc1", "--health-cmd", "true", "--health-interval", "2s",
              "--health-retries", "2", *RUN, "busybox").returncode == 0
    try:
        assert inspect(mr, "hc1")["Config"]["Healthcheck"] == {
            "Test": ["CMD-SHELL", "true"], "Interval": 2 * 10**9, "Retries": 2}
    finally:
        mr("rm", "hc1")
    r = mr("run", "--health-interval", "soon", *RUN, "busybox", "true")
    assert r.returncode == 125 and "invalid duration" in r.stderr


def test_logs_since_until(mr) -> None:  # type: ignore[no-untyped-def]
    r = mr("run", "--name", "lg1", *RUN, "busybox", "sh", "-c", "echo early; sleep 1.2; echo late")
    try:
        assert r.returncode == 0, r.stderr
        stamps = mr("logs", "-t", "lg1").stdout.splitlines()
        assert [s.split(" ", 1)[1] for s in stamps] == ["early", "late"]
        late_at = stamps[1].split(" ", 1)[0]
        assert mr("logs", "--since", late_at, "lg1").stdout == "late\n"
        assert mr("logs", "--until", late_at, "lg1").stdout == "early\n"
        assert mr("logs", "--since", "1h", "lg1").stdout == "early\nlate\n"
        assert mr("logs", "--until", "1h", "lg1").stdout == ""
        r = mr("logs", "--since", "yesterday-ish", "lg1")
        assert r.returncode == 1 and "--since" in r.stderr
    finally:
        mr("rm", "lg1")
