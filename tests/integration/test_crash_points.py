"""kill -9 at every named crash point (minirun/faults.py), then: `ps -a`, `images` and
`inspect` work, the same command run again succeeds, `rm -f` removes every trace, and
`system check --repair` leaves a consistent store. Nothing is left on the host."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from minirun.image.check import check
from minirun.image.store import Store
from tests.conftest import prune_networks

pytestmark = pytest.mark.root

MINIRUN = str(Path(sys.executable).parent / "minirun")
KILLED = -signal.SIGKILL


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    store = tmp_path / "store"
    store.mkdir()
    yield store
    ids = subprocess.run([MINIRUN, "ps", "-aq"], env=_env(store), capture_output=True,
                         text=True).stdout.split()  # fmt: skip
    if ids:
        subprocess.run([MINIRUN, "rm", "-f", *ids], env=_env(store), capture_output=True)
    prune_networks(store)


def _env(store: Path, at: str | None = None) -> dict[str, str]:
    env = {**os.environ, "MINIRUN_ROOT": str(store)}
    env.pop("MINIRUN_CRASH_AT", None)
    if at:
        env["MINIRUN_CRASH_AT"] = at
    return env


def mr(store: Path, *args: str, at: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MINIRUN, *args], env=_env(store, at), capture_output=True, text=True,
                          timeout=60)  # fmt: skip


def _mounts_under(store: Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [ln.split()[4] for ln in f if str(store) in ln.split()[4]]


def _cgroups() -> list[str]:
    base = "/sys/fs/cgroup/pids/minirun"
    if not os.path.isdir(base):
        base = "/sys/fs/cgroup/minirun"
    return os.listdir(base) if os.path.isdir(base) else []


def _still_usable(store: Path) -> None:
    for args in (["ps", "-a"], ["images"], ["system", "check", "--repair"]):
        r = mr(store, *args)
        assert r.returncode in (0, 1) and "Traceback" not in r.stderr, (args, r.stderr)
    assert mr(store, "ps", "-a").returncode == 0
    assert mr(store, "images").returncode == 0
    leftovers = [p for p in check(Store(store), repair=True, grace=0) if not p.repaired]
    assert leftovers == [], leftovers
    assert check(Store(store)) == []


def _no_trace(store: Path, cgroups_before: list[str]) -> None:
    ids = mr(store, "ps", "-aq").stdout.split()
    if ids:
        assert mr(store, "rm", "-f", *ids).returncode == 0
    assert os.listdir(store / "containers") == []
    assert not os.listdir(store / "names") if (store / "names").is_dir() else True
    assert not os.listdir(store / "pins")
    assert not (store / "runtime").is_dir() or os.listdir(store / "runtime") == []
    assert _mounts_under(store) == []
    deadline = time.monotonic() + 5
    while sorted(set(_cgroups()) - set(cgroups_before)):
        assert time.monotonic() < deadline, set(_cgroups()) - set(cgroups_before)
        time.sleep(0.05)


@pytest.mark.parametrize("point", ["load.blob-written", "load.layer-unpacked",
                                   "load.image-recorded"])  # fmt: skip
def test_load_killed(root: Path, built_images: Path, point: str) -> None:
    r = mr(root, "load", "-q", "-i", str(built_images / "busybox"), at=point)
    assert r.returncode == KILLED, (r.returncode, r.stderr)
    _still_usable(root)
    r = mr(root, "load", "-q", "-i", str(built_images / "busybox"))
    assert r.returncode == 0, r.stderr
    assert "busybox" in mr(root, "images").stdout
    assert mr(root, "inspect", "busybox").returncode == 0
    assert mr(root, "run", "--rm", "--network", "none", "busybox", "true").returncode == 0
    assert check(Store(root)) == []


@pytest.mark.parametrize("point, network", [
    ("run.record-written", "none"), ("run.rootfs-mounted", "none"),
    ("run.network-attached", "bridge"), ("run.process-started", "none"),
    ("run.process-started", "bridge"),
])  # fmt: skip
def test_run_killed(root: Path, built_images: Path, point: str, network: str) -> None:
    assert mr(root, "load", "-q", "-i", str(built_images / "busybox")).returncode == 0
    before = _cgroups()
    r = mr(root, "run", "--name", "k", "--network", network, "busybox", "sleep", "30", at=point)
    # the point is reached in minirun itself (killed), or in the container's init (then
    # minirun reports the failed set-up)
    assert r.returncode in (KILLED, 125), (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    # the container never outlives the minirun that ran it
    deadline = time.monotonic() + 5
    while "Up " in mr(root, "ps").stdout:
        assert time.monotonic() < deadline, mr(root, "ps").stdout
        time.sleep(0.05)
    assert mr(root, "ps", "-a").returncode == 0
    ids = mr(root, "ps", "-aq").stdout.split()
    for cid in ids:
        assert mr(root, "inspect", cid).returncode == 0
    # the same command again: the old record (if any) must go first, as the name is taken
    if ids:
        assert mr(root, "rm", "-f", "k").returncode == 0
    r = mr(root, "run", "--rm", "--name", "k", "--network", network, "busybox", "true")
    assert r.returncode == 0, r.stderr
    _no_trace(root, before)
    _still_usable(root)


def test_rm_killed_after_the_rename(root: Path, built_images: Path) -> None:
    assert mr(root, "load", "-q", "-i", str(built_images / "busybox")).returncode == 0
    assert mr(root, "run", "--name", "gone", "--network", "none", "busybox", "true").returncode == 0
    r = mr(root, "rm", "gone", at="rm.renamed")
    assert r.returncode == KILLED
    assert "gone" not in mr(root, "ps", "-a").stdout  # the record vanished at the rename
    # its name is free again, and rmi is not blocked by the dead container's pin
    assert mr(root, "run", "--rm", "--name", "gone", "--network", "none", "busybox",
              "true").returncode == 0  # fmt: skip
    _still_usable(root)
    r = mr(root, "rmi", "busybox")
    assert r.returncode == 0, r.stderr
