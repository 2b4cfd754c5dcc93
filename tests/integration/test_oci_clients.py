"""Real OCI clients drive the runtime under test as they drive runc: Podman (through
conmon) and containerd (through containerd-shim-runc-v2, with ctr).

    MINIRUN_TEST_RUNTIME=runc .venv/bin/pytest -q tests/integration/test_oci_clients.py

runs them against runc (or crun, or a path); unset, against the venv's minirun-runtime
(skipped until it exists). MINIRUN_TEST_RUNTIME_LOG=FILE appends every runtime command
line the clients used to FILE. See tests/oci_clients.py for the isolation and cleanup.
"""

from __future__ import annotations

import re
import time

import pytest

from tests import oci_clients
from tests.oci_clients import (
    Containerd,
    Podman,
    freezer_state,
    memory_and_pids_limits,
    run_in_pty,
    wait_until,
)

pytestmark = pytest.mark.root

# the shared fixtures (imported explicitly, as the other integration modules do)
oci_runtime = oci_clients.oci_runtime
oci_work = oci_clients.oci_work
podman = oci_clients.podman
containerd = oci_clients.containerd
no_leaked_mounts = oci_clients.no_leaked_mounts  # autouse: no test may leave a mount

# typed into the container's shell through the pty: the answer (42) is not in what is
# typed, and the exit status must come back through the client
TTY_KEYS = b"tty; echo $((6*7)); exit 7\r"
FORTY_TWO = re.compile(r"^42\r*$", re.M)
# PID 1 ignores SIGTERM without a handler: this one says it got it and exits 0
TERM_AWARE = 'echo started; trap "echo got-TERM; exit 0" TERM; while :; do sleep 0.1; done'


def _inspect(pm: Podman, cid: str, fmt: str) -> str:
    return pm("inspect", "--format", fmt, cid).stdout.strip()


# -- podman ------------------------------------------------------------------------------


def test_podman_run_output_and_exit_status(podman: Podman) -> None:
    """create/start/delete via conmon: stdout reaches the client, the exit status too."""
    res = podman("run", "--rm", *podman.run_flags, podman.image, "echo", "hi")
    assert res.stdout == "hi\n"
    res = podman("run", "--rm", *podman.run_flags, podman.image, "sh", "-c", "exit 3",
                 check=False)
    assert res.returncode == 3, res.stderr
    assert podman("ps", "-aq").stdout == ""  # --rm removed both


def test_podman_run_interactive_tty(podman: Podman) -> None:
    """-it: conmon passes --console-socket; the runtime must send it the pty master of a
    terminal that is the container's /dev/pts/0 and its stdin, stdout and stderr."""
    code, shown = run_in_pty(
        podman.argv("run", "--rm", "-it", *podman.run_flags, podman.image, "sh"),
        podman.env, wait_for=b"# ", keys=TTY_KEYS)
    assert "/dev/pts/0" in shown
    assert FORTY_TWO.search(shown), shown
    assert code == 7, shown


def test_podman_detached_logs_stop_rm(podman: Podman) -> None:
    """-d, podman logs, podman stop (the runtime's kill delivers SIGTERM to PID 1, no
    fallback to SIGKILL), the exit status kept, rm deletes."""
    cid = podman("run", "-d", *podman.run_flags, podman.image, "sh", "-c", TERM_AWARE).stdout.strip()
    try:
        wait_until(lambda: "started" in podman("logs", cid).stdout, "the container's output")
        assert _inspect(podman, cid, "{{.State.Status}}") == "running"
        t0 = time.monotonic()
        podman("stop", "--time", "20", cid)
        assert time.monotonic() - t0 < 10, "stop waited for its SIGKILL fallback"
        assert _inspect(podman, cid, "{{.State.Status}} {{.State.ExitCode}}") == "exited 0"
        assert podman("logs", cid).stdout == "started\ngot-TERM\n"
    finally:
        podman("rm", "--force", "--time", "0", cid)
    assert cid not in podman("ps", "-aq", "--no-trunc").stdout


def test_podman_exec(podman: Podman) -> None:
    """exec --process --detach --pid-file (and --tty --console-socket for -it): output,
    exit status, env/cwd/user of the process.json, and a terminal."""
    cid = podman("run", "-d", *podman.run_flags, podman.image, "sleep", "600").stdout.strip()
    try:
        res = podman("exec", cid, "sh", "-c", "echo $((6*7)); exit 4", check=False)
        assert (res.returncode, res.stdout) == (4, "42\n"), res.stderr
        res = podman("exec", "--env", "FOO=bar", "--workdir", "/tmp", "--user", "nobody", cid,
                     "sh", "-c", 'echo "$FOO $(pwd) $(id -u)"')
        assert res.stdout == "bar /tmp 65534\n"
        code, shown = run_in_pty(podman.argv("exec", "-it", cid, "sh"), podman.env,
                                 wait_for=b"# ", keys=TTY_KEYS)
        assert re.search(r"/dev/pts/\d+", shown) and FORTY_TWO.search(shown), shown
        assert code == 7, shown
    finally:
        podman("rm", "--force", "--time", "0", cid)


def test_podman_pause_unpause(podman: Podman) -> None:
    """pause/resume: podman's status follows, and the container's cgroup really is
    frozen (v1 freezer on this host; cgroup.freeze on v2) and thawed again."""
    cid = podman("run", "-d", *podman.run_flags, podman.image, "sleep", "600").stdout.strip()
    try:
        pid = int(_inspect(podman, cid, "{{.State.Pid}}"))
        podman("pause", cid)
        assert _inspect(podman, cid, "{{.State.Status}}") == "paused"
        assert freezer_state(pid) == "FROZEN"
        podman("unpause", cid)
        assert _inspect(podman, cid, "{{.State.Status}}") == "running"
        assert freezer_state(pid) == "THAWED"
        assert podman("exec", cid, "echo", "awake").stdout == "awake\n"
    finally:
        podman("rm", "--force", "--time", "0", cid)


def test_podman_resources_reach_cgroup(podman: Podman) -> None:
    """--memory / --pids-limit land in linux.resources; the runtime writes them into the
    container's cgroup (read on the host) and mounts that cgroup at /sys/fs/cgroup (read
    inside; cgroup v1 or v2 layout)."""
    limits = (str(64 * 1024 * 1024), "50")
    cid = podman("run", "-d", *podman.run_flags, "--memory", "64m", "--pids-limit", "50",
                 podman.image, "sleep", "600").stdout.strip()
    try:
        pid = int(_inspect(podman, cid, "{{.State.Pid}}"))
        assert memory_and_pids_limits(pid) == limits
        script = (
            "if [ -e /sys/fs/cgroup/cgroup.controllers ]; then "
            "cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/pids.max; else "
            "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max; fi"
        )
        assert tuple(podman("exec", cid, "sh", "-c", script).stdout.split()) == limits
    finally:
        podman("rm", "--force", "--time", "0", cid)


# -- containerd ------------------------------------------------------------------------


def _cleanup_ctr(cd: Containerd, cid: str) -> None:
    """What the test would have done at its end, if it got there."""
    if cd.task_status(cid) is not None:
        cd("task", "kill", "--signal", "SIGKILL", cid, check=False)
        wait_until(lambda: cd.task_status(cid) in (None, "STOPPED"), f"task {cid} to stop")
        cd("task", "delete", cid, check=False)
    if cid in cd("containers", "ls", "-q").stdout.split():
        cd("containers", "delete", cid)


def test_ctr_run_attached(containerd: Containerd) -> None:
    """ctr run --rm through the shim: create/start/delete, output and exit status."""
    res = containerd("run", "--rm", *containerd.run_flags, containerd.image, "echo-1",
                     "echo", "hi")
    assert res.stdout == "hi\n"
    res = containerd("run", "--rm", *containerd.run_flags, containerd.image, "exit-1",
                     "sh", "-c", "exit 3", check=False)
    assert res.returncode == 3, res.stderr
    assert containerd("containers", "ls", "-q").stdout == ""


def test_ctr_detached_exec_kill_delete(containerd: Containerd) -> None:
    """run -d, task exec (output and status), task kill (SIGTERM reaches PID 1), task
    delete and container delete leave nothing behind (no task, no active snapshot)."""
    cid = "detached-1"
    containerd("run", "-d", *containerd.run_flags, containerd.image, cid, "sh", "-c", TERM_AWARE)
    try:
        assert containerd.task_status(cid) == "RUNNING"
        res = containerd("task", "exec", *containerd.fifo_flags, "--exec-id", "x", cid,
                         "echo", "hi")
        assert res.stdout == "hi\n"
        res = containerd("task", "exec", *containerd.fifo_flags, "--exec-id", "y", cid,
                         "sh", "-c", "exit 5", check=False)
        assert res.returncode == 5, res.stderr
        containerd("task", "kill", cid)  # SIGTERM
        wait_until(lambda: containerd.task_status(cid) == "STOPPED", "the task to stop")
        containerd("task", "delete", cid)
        assert containerd.task_status(cid) is None
        containerd("containers", "delete", cid)
        assert cid not in containerd("containers", "ls", "-q").stdout.split()
        assert cid not in containerd("snapshots", "ls").stdout
    finally:
        _cleanup_ctr(containerd, cid)


def test_ctr_pause_resume_ps(containerd: Containerd) -> None:
    """task pause/resume (freezer) and task ps (the runtime's ps --format json)."""
    cid = "paused-1"
    containerd("run", "-d", *containerd.run_flags, containerd.image, cid, "sleep", "600")
    try:
        pid = int(containerd("task", "ps", cid).stdout.split()[2])  # header: PID INFO
        containerd("task", "pause", cid)
        assert containerd.task_status(cid) == "PAUSED"
        assert freezer_state(pid) == "FROZEN"
        containerd("task", "resume", cid)
        assert containerd.task_status(cid) == "RUNNING"
        assert freezer_state(pid) == "THAWED"
    finally:
        _cleanup_ctr(containerd, cid)


def test_ctr_run_tty(containerd: Containerd) -> None:
    """ctr run -t: the shim passes --console-socket, like conmon but its own code."""
    code, shown = run_in_pty(
        containerd.argv("run", "--rm", "-t", *containerd.run_flags, containerd.image, "tty-1",
                        "sh"),
        containerd.env, wait_for=b"# ", keys=TTY_KEYS)
    assert "/dev/pts/0" in shown
    assert FORTY_TWO.search(shown), shown
    assert code == 7, shown
