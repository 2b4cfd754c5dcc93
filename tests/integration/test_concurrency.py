"""Concurrency: many runs at once on one image, and the races a user can start (two
`network create` of one name, `rm -f` of a starting container, `rmi` while a run of the
image starts): each ends in a consistent store, and the loser gets a clear error."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from minirun.image.check import check
from minirun.image.store import Store
from tests.conftest import prune_networks

pytestmark = [pytest.mark.root, pytest.mark.slow]

MINIRUN = str(Path(sys.executable).parent / "minirun")
N = int(os.environ.get("MINIRUN_CONCURRENCY", "50"))


@pytest.fixture
def root(tmp_path: Path, built_images: Path) -> Iterator[Path]:
    store = tmp_path / "store"
    subprocess.run([MINIRUN, "load", "-q", "-i", str(built_images / "busybox")],
                   env=_env(store), check=True)  # fmt: skip
    yield store
    ids = mr(store, "ps", "-aq").stdout.split()
    if ids:
        mr(store, "rm", "-f", *ids)
    prune_networks(store)


def _env(store: Path) -> dict[str, str]:
    return {**os.environ, "MINIRUN_ROOT": str(store), "MINIRUN_DEFAULT_BRIDGE": "mrc0",
            "MINIRUN_DEFAULT_SUBNET": "10.213.200.0/24"}  # fmt: skip


def mr(store: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MINIRUN, *args], env=_env(store), capture_output=True, text=True,
                          timeout=120)  # fmt: skip


def consistent(store: Path) -> None:
    assert mr(store, "ps", "-a").returncode == 0
    assert [p for p in check(Store(store)) if p.kind != "unreferenced-blob"] == []


@pytest.mark.parametrize("network", ["none", "bridge"])
def test_many_runs_at_once(root: Path, tmp_path: Path, network: str) -> None:
    """N runs at once; each writes its address to a shared dir and waits there until all
    N have, so they truly overlap: every one succeeds and every address is distinct."""
    shared = tmp_path / "shared"
    shared.mkdir()
    script = (f"ip -4 -o addr show eth0 2>/dev/null | awk '{{print $4}}' > /shared/$(hostname); "
              f"i=0; while [ $(ls /shared | wc -l) -lt {N} ] && [ $i -lt 600 ]; do "
              "sleep 0.1; i=$((i+1)); done")  # fmt: skip
    with ThreadPoolExecutor(N) as pool:
        results = list(pool.map(lambda i: mr(root, "run", "--rm", "--name", f"c{i}",
                                             "--network", network, "-v", f"{shared}:/shared",
                                             "busybox", "sh", "-c", script), range(N)))  # fmt: skip
    failed = [(r.returncode, r.stderr) for r in results if r.returncode != 0]
    assert failed == []
    assert len(os.listdir(shared)) == N
    if network == "bridge":
        ips = [(shared / n).read_text().strip() for n in os.listdir(shared)]
        assert all(ip.startswith("10.213.200.") for ip in ips), ips
        assert len(set(ips)) == N, sorted(ips)
    assert mr(root, "ps", "-aq").stdout == ""
    consistent(root)


def test_two_network_creates_of_one_name(root: Path) -> None:
    with ThreadPoolExecutor(2) as pool:
        a, b = pool.map(lambda s: mr(root, "network", "create", "--subnet", s, "twin"),
                        ["10.213.201.0/24", "10.213.202.0/24"])  # fmt: skip
    assert sorted([a.returncode, b.returncode]) == [0, 1], (a.stderr, b.stderr)
    loser = a if a.returncode else b
    assert "already exists" in loser.stderr and loser.stderr.count("\n") == 1
    assert mr(root, "network", "ls").stdout.count(" twin ") == 1


def test_rm_force_of_a_starting_container(root: Path) -> None:
    for i in range(5):
        p = subprocess.Popen([MINIRUN, "run", "--name", f"s{i}", "--network", "none",
                              "busybox", "sleep", "30"], env=_env(root),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
        time.sleep(0.02 * i)  # at different points of its start
        deadline = time.monotonic() + 10
        while mr(root, "rm", "-f", f"s{i}").returncode != 0:
            if p.poll() is not None:
                break  # it never got registered, or already went
            assert time.monotonic() < deadline
            time.sleep(0.01)
        p.wait(20)
        assert f"s{i}" not in mr(root, "ps", "-a").stdout
    consistent(root)


def test_rmi_while_a_run_of_the_image_starts(root: Path) -> None:
    with ThreadPoolExecutor(2) as pool:
        run = pool.submit(mr, root, "run", "--pull", "never", "--name", "r", "--network", "none",
                          "busybox", "true")  # fmt: skip
        time.sleep(0.01)
        rmi = pool.submit(mr, root, "rmi", "busybox")
        r, d = run.result(), rmi.result()
    if r.returncode == 0:
        # the run won: its container pins the image, rmi refuses with a clear line
        if d.returncode != 0:
            assert "busybox" in d.stderr and d.stderr.count("\n") == 1
    else:
        assert r.returncode == 125 and "not found" in r.stderr and d.returncode == 0
    # never a container whose image layers are gone
    assert [p for p in check(Store(root)) if p.kind == "broken-container"] == []
    mr(root, "rm", "-f", "r")
    consistent(root)
