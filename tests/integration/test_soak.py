"""The soak, short (tests/soak.py; `make soak` runs 1000): sequential runs of every kind
leave no link, address, route, rule, mount, cgroup, process, fd or store entry behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import soak

pytestmark = [pytest.mark.root, pytest.mark.slow]

RUNS = int(os.environ.get("MINIRUN_SOAK_RUNS", "15"))


def test_soak_leaves_nothing_behind(tmp_path: Path, built_images: Path) -> None:
    root = tmp_path / "store"
    env = {**os.environ, "MINIRUN_ROOT": str(root)}
    minirun = str(Path(sys.executable).parent / "minirun")
    subprocess.run([minirun, "load", "-q", "-i", str(built_images / "busybox")], env=env,
                   check=True)  # fmt: skip
    try:
        before, after = soak.soak(root, RUNS)
    finally:
        subprocess.run([minirun, "network", "prune", "-f"], env=env, capture_output=True)
    assert after == before, {k: (before[k], after[k]) for k in before if before[k] != after[k]}
