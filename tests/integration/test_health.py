"""Health checks through the real CLI as root: the checker process, healthy → unhealthy
in ps and inspect, the start period, the timeout, ps --filter health=, events, and no
checker left once the container is gone."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import CONTAINER_TESTS, RUN, Cli, loaded_root, wait_for

pytestmark = CONTAINER_TESTS

FAST = ("--health-interval", "200ms", "--health-timeout", "2s")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory, built_images: Path) -> Iterator[Path]:
    yield from loaded_root(tmp_path_factory, built_images)


def checkers(root: Path, cid: str = "") -> list[int]:
    """The live `_health` processes of this store (of one container)."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if b"_health" in args and str(root).encode() in args and state != "Z" \
                and (not cid or cid.encode() in args):
            out.append(int(pid))
    return out


def health(mr: Cli, name: str) -> dict:
    r = mr("inspect", "--type", "container", name)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)[0]["State"].get("Health") or {}


def status(mr: Cli, name: str) -> str:
    return next((ln for ln in mr("ps", "-a", "--format", "{{.Names}}\t{{.Status}}").stdout.splitlines()
                 if ln.startswith(name + "\t")), "").partition("\t")[2]


def test_healthy_then_unhealthy_in_ps_and_inspect(mr: Cli, root: Path) -> None:
    r = mr("run", "-d", "--name", "hc", *RUN, *FAST, "--health-retries", "2",
           "--health-cmd", "cat /tmp/ok", "busybox", "sh", "-c", "echo fine > /tmp/ok; sleep 300")
    assert r.returncode == 0, r.stderr
    cid = r.stdout.strip()
    wait_for(lambda: len(checkers(root, cid)) == 1)
    wait_for(lambda: status(mr, "hc").endswith("(healthy)"))
    assert status(mr, "hc").startswith("Up ")
    h = health(mr, "hc")
    assert h["Status"] == "healthy" and h["FailingStreak"] == 0
    last = h["Log"][-1]
    assert last["ExitCode"] == 0 and last["Output"] == "fine\n" and last["Start"] <= last["End"]
    assert mr("ps", "--filter", "health=healthy", "--format", "{{.Names}}").stdout.split() == ["hc"]
    assert mr("exec", "hc", "rm", "/tmp/ok").returncode == 0
    wait_for(lambda: status(mr, "hc").endswith("(unhealthy)"))
    h = health(mr, "hc")
    assert h["Status"] == "unhealthy" and h["FailingStreak"] >= 2
    assert h["Log"][-1]["ExitCode"] == 1 and "No such file" in h["Log"][-1]["Output"]
    wait_for(lambda: len(health(mr, "hc")["Log"]) == 5)
    assert mr("ps", "--filter", "health=unhealthy", "-q").stdout.split() == [cid[:12]]
    assert mr("ps", "--filter", "health=healthy", "-q").stdout == ""
    r = mr("events", "--since", "1m", "--until", "0s", "--filter", "container=hc",
           "--filter", "event=health_status", "--format", "{{.Action}}")
    assert r.stdout.splitlines() == ["health_status: healthy", "health_status: unhealthy"]
    assert mr("rm", "-f", "hc").returncode == 0
    wait_for(lambda: not checkers(root, cid))


def test_start_period_and_restart_resets(mr: Cli, root: Path) -> None:
    r = mr("run", "-d", "--name", "hs", *RUN, *FAST, "--health-retries", "1", "--health-start-period", "30s",
           "--health-cmd", "exit 1", "busybox", "sleep", "300")
    assert r.returncode == 0, r.stderr
    cid = r.stdout.strip()
    wait_for(lambda: len(health(mr, "hs").get("Log", [])) >= 3)
    h = health(mr, "hs")
    assert h["Status"] == "starting" and h["FailingStreak"] == 0  # failures in the period
    assert status(mr, "hs").endswith("(health: starting)")
    assert mr("ps", "--filter", "health=starting", "-q").stdout.split() == [cid[:12]]
    assert mr("stop", "-t", "0", "hs").returncode == 0
    wait_for(lambda: not checkers(root, cid))
    assert status(mr, "hs").startswith("Exited")  # no health once it stopped (Docker)
    assert mr("start", "hs").returncode == 0
    wait_for(lambda: len(checkers(root, cid)) == 1)
    assert health(mr, "hs")["Status"] == "starting"
    assert mr("rm", "-f", "hs").returncode == 0
    wait_for(lambda: not checkers(root, cid))


def test_timeout_kills_the_check(mr: Cli, root: Path) -> None:
    r = mr("run", "-d", "--name", "ht", *RUN, "--health-interval", "200ms", "--health-timeout", "300ms",
           "--health-retries", "1", "--health-cmd", "sleep 5", "busybox", "sleep", "300")
    assert r.returncode == 0, r.stderr
    cid = r.stdout.strip()
    wait_for(lambda: health(mr, "ht").get("Status") == "unhealthy")
    last = health(mr, "ht")["Log"][-1]
    assert last["ExitCode"] == -1 and last["Output"] == "Health check exceeded timeout (300ms)"
    assert mr("rm", "-f", "ht").returncode == 0
    wait_for(lambda: not checkers(root, cid))


def test_checker_ends_with_the_container(mr: Cli, root: Path) -> None:
    r = mr("run", "-d", "--name", "he", *RUN, *FAST, "--health-cmd", "true", "busybox", "sleep", "1")
    assert r.returncode == 0, r.stderr
    cid = r.stdout.strip()
    wait_for(lambda: len(checkers(root, cid)) == 1)
    wait_for(lambda: not checkers(root, cid))  # the container exited by itself
    assert status(mr, "he").startswith("Exited (0)")
    assert mr("rm", "he").returncode == 0


def test_no_healthcheck_and_none_filter(mr: Cli, root: Path) -> None:
    r = mr("run", "-d", "--name", "hn", *RUN, "--no-healthcheck", "busybox", "sleep", "300")
    assert r.returncode == 0, r.stderr
    cid = r.stdout.strip()
    time.sleep(0.3)
    assert checkers(root, cid) == []
    doc = json.loads(mr("inspect", "hn").stdout)[0]
    assert "Health" not in doc["State"]
    assert status(mr, "hn").startswith("Up") and "health" not in status(mr, "hn")
    assert mr("ps", "--filter", "health=none", "-q").stdout.split() == [cid[:12]]
    r = mr("ps", "--filter", "health=great")
    assert r.returncode == 1 and "health" in r.stderr
    assert mr("rm", "-f", "hn").returncode == 0
