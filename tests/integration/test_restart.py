"""``--restart`` through the real CLI as root: Docker's policies kept without a daemon
(the shim's _cleanup is the restarter), stop/rm cancelling them, nothing left behind."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from minirun.container import lifecycle, restart
from minirun.container.records import ContainerRecord, Containers
from minirun.image.store import Store
from tests.conftest import CONTAINER_TESTS, RUN, Cli, loaded_root, wait_for

pytestmark = CONTAINER_TESTS


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory, built_images: Path) -> Iterator[Path]:
    yield from loaded_root(tmp_path_factory, built_images)


def inspect(mr: Cli, name: str) -> dict:
    r = mr("inspect", "--type", "container", name)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)[0]


def store_processes(root: Path) -> list[str]:
    """Processes working for this store: shims, _cleanup, restarters, checkers (their
    command lines name the store's root)."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if str(root) in cmd and state != "Z":
            out.append(f"{pid} {cmd}")
    return out


def cgroups_of(cid: str) -> list[str]:
    found = []
    for base in Path("/sys/fs/cgroup").glob("**/minirun"):
        if (base / cid).exists():
            found.append(str(base / cid))
    return found


def assert_nothing_left(root: Path, cid: str | None = None) -> None:
    wait_for(lambda: not store_processes(root), timeout=15)
    if cid is not None:
        assert not (root / "containers" / cid).exists()
        assert cgroups_of(cid) == []
        assert not (root / "runtime" / cid).exists()


def test_on_failure_restarts_exactly_n_times(mr: Cli, root: Path) -> None:
    r = mr("run", "-d", "--name", "rf", "--restart", "on-failure:2", *RUN, "busybox",
           "sh", "-c", "echo run; exit 3")
    assert r.returncode == 0, r.stderr
    wait_for(lambda: inspect(mr, "rf")["RestartCount"] == 2 and inspect(mr, "rf")["State"]["Status"] == "exited"
             and not store_processes(root))
    doc = inspect(mr, "rf")
    assert doc["State"]["ExitCode"] == 3 and not doc["State"]["Restarting"]
    assert doc["HostConfig"]["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 2}
    assert mr("logs", "rf").stdout.splitlines() == ["run"] * 3  # the first run and 2 restarts
    r = mr("events", "--since", "1m", "--until", "0s", "--filter", "container=rf", "--filter", "event=start")
    assert len(r.stdout.splitlines()) == 3
    time.sleep(0.5)
    assert inspect(mr, "rf")["RestartCount"] == 2  # and no more
    assert mr("rm", "rf").returncode == 0


def test_on_failure_does_not_restart_success(mr: Cli, root: Path) -> None:
    assert mr("run", "-d", "--name", "rs", "--restart", "on-failure", *RUN, "busybox", "true").returncode == 0
    wait_for(lambda: inspect(mr, "rs")["State"]["Status"] == "exited" and not store_processes(root))
    assert inspect(mr, "rs")["RestartCount"] == 0
    assert mr("rm", "rs").returncode == 0


def test_always_restarts_exit_0_and_stop_ends_it(mr: Cli, root: Path) -> None:
    r = mr("run", "-d", "--name", "ra", "--restart", "always", *RUN, "busybox", "sh", "-c", "sleep 0.2")
    assert r.returncode == 0, r.stderr
    wait_for(lambda: inspect(mr, "ra")["RestartCount"] >= 2)
    r = mr("stop", "ra")
    assert r.returncode == 0, r.stderr
    doc = inspect(mr, "ra")
    assert doc["State"]["Status"] == "exited" and not doc["State"]["Running"]
    count = doc["RestartCount"]
    assert_nothing_left(root)
    time.sleep(1.0)  # longer than any back-off it had reached
    doc = inspect(mr, "ra")
    assert doc["State"]["Status"] == "exited" and doc["RestartCount"] == count
    # a user's start: the policy applies again, the count starts over (Docker)
    assert mr("start", "ra").returncode == 0
    wait_for(lambda: inspect(mr, "ra")["RestartCount"] >= 1)
    assert mr("rm", "-f", "ra").returncode == 0
    assert_nothing_left(root)


class EndsWhenSignalled:
    """A record whose run ends on its own right after ``stop``/``rm -f`` checked it is
    alive: its next alive() check first SIGKILLs the real init and waits until it is gone
    (the race the CI run hit with a --restart always container whose run was ending)."""

    def __init__(self, rec: ContainerRecord) -> None:
        self.rec, self.calls = rec, 0
        self.real = rec.alive

    def __call__(self) -> bool:
        self.calls += 1
        if self.calls == 2:
            os.kill(self.rec.pid, signal.SIGKILL)
            wait_for(lambda: not os.path.exists(f"/proc/{self.rec.pid}"))
        return self.real()


@pytest.mark.parametrize("verb", ["stop", "rm -f"])
@pytest.mark.parametrize("policy", ["no", "always"])
def test_a_run_that_ends_while_being_stopped_is_stopped(mr: Cli, root: Path, verb: str, policy: str) -> None:
    name = f"re-{policy}-{verb[:2]}"
    r = mr("run", "-d", "--name", name, "--restart", policy, *RUN, "busybox", "sleep", "30")
    assert r.returncode == 0, r.stderr
    store = Store(root)
    rec = Containers(store).get(name)
    if policy != "no":  # stop's cancel re-reads the record: patch the one it gets
        restart.mark_stopped(store, rec)
    ends = EndsWhenSignalled(rec)
    object.__setattr__(rec, "alive", ends)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(restart, "cancel", lambda store, r, timeout=15.0: rec)
        mp.setattr(restart, "before_remove", lambda store, r, force: rec)
        if verb == "stop":
            lifecycle.stop(store, rec, timeout=5)  # no "container ... is not running"
        else:
            lifecycle.remove(store, rec, force=True)
    assert ends.calls >= 2
    if verb == "stop":
        doc = inspect(mr, name)
        assert doc["State"]["Status"] == "exited" and not doc["State"]["Running"]
        time.sleep(0.5)  # a --restart always run stopped by the user is not restarted
        assert inspect(mr, name)["State"]["Status"] == "exited"
        assert mr("rm", name).returncode == 0
    else:
        assert mr("inspect", "--type", "container", name).returncode != 0
    assert_nothing_left(root, rec.id)


def test_kill_disables_the_policy_but_a_crash_does_not(mr: Cli, root: Path) -> None:
    r = mr("run", "-d", "--name", "rk", "--restart", "always", *RUN, "busybox", "sleep", "30")
    assert r.returncode == 0, r.stderr
    first = inspect(mr, "rk")["State"]["Pid"]
    os.kill(first, 9)  # not the user's kill: the container crashed
    wait_for(lambda: inspect(mr, "rk")["State"]["Pid"] not in (0, first))
    assert inspect(mr, "rk")["RestartCount"] == 1
    assert mr("kill", "rk").returncode == 0  # docker kill: no restart until the next start
    wait_for(lambda: inspect(mr, "rk")["State"]["Status"] == "exited" and not store_processes(root))
    time.sleep(0.5)
    doc = inspect(mr, "rk")
    assert doc["State"]["Status"] == "exited" and doc["State"]["ExitCode"] == 137
    assert mr("rm", "rk").returncode == 0


def test_rm_f_of_a_restarting_container_leaves_nothing(mr: Cli, root: Path) -> None:
    r = mr("run", "-d", "--name", "rr", "--restart", "always", *RUN, "busybox", "sh", "-c", "exit 1")
    assert r.returncode == 0, r.stderr
    cid = r.stdout.strip()
    # the back-off grows (100 ms, doubled): after 5 restarts it waits 3.2 s between runs
    wait_for(lambda: inspect(mr, "rr")["RestartCount"] >= 5)
    wait_for(lambda: "Restarting (1)" in mr("ps", "--filter", "name=rr").stdout)
    wait_for(lambda: inspect(mr, "rr")["State"]["Restarting"] is True)
    doc = inspect(mr, "rr")["State"]
    assert doc["Status"] == "restarting" and doc["Running"] and doc["ExitCode"] == 1
    r = mr("rm", "rr")
    assert r.returncode == 1 and "restarting" in r.stderr
    r = mr("rm", "-f", "rr")
    assert r.returncode == 0, r.stderr
    assert_nothing_left(root, cid)
    time.sleep(1.0)  # nothing resurrects it
    assert mr("ps", "-a", "--filter", "name=rr", "-q").stdout == ""
    assert not (root / "containers" / cid).exists()


def test_foreground_run_returns_then_restarts_in_background(mr: Cli, root: Path) -> None:
    r = mr("run", "--name", "rfg", "--restart", "on-failure:1", *RUN, "busybox", "sh", "-c", "echo hi; exit 5")
    assert r.returncode == 5 and r.stdout == "hi\n"  # the first run's status, as Docker's CLI
    wait_for(lambda: inspect(mr, "rfg")["RestartCount"] == 1 and inspect(mr, "rfg")["State"]["Status"] == "exited"
             and not store_processes(root))
    assert inspect(mr, "rfg")["State"]["ExitCode"] == 5
    assert mr("logs", "rfg").stdout.count("hi") == 2
    assert mr("rm", "rfg").returncode == 0


def test_restart_conflicts_with_rm(mr: Cli) -> None:
    r = mr("run", "--rm", "--restart", "always", *RUN, "busybox", "true")
    assert r.returncode == 125 and "--restart and --rm" in r.stderr
