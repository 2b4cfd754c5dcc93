"""`pip install .` of a clean clone gives a complete minirun: the C helpers (shim, init,
exec) are built by the package build, the bytecode is compiled, and a detached container
runs, logs and stops with nothing but that install."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.root, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh venv with minirun pip-installed from a clean clone of this checkout's
    HEAD (what users and tools do); yields its bin/."""
    if subprocess.run(["git", "-C", str(REPO), "rev-parse"], capture_output=True).returncode:
        pytest.skip("not a git checkout")
    base = tmp_path_factory.mktemp("install")
    clone = base / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    venv = base / "venv"
    # the interpreter the project's venv was made from (not a pyenv shim)
    python = os.path.realpath(sys.executable)
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    r = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(clone)],
                       capture_output=True, text=True, timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    yield venv / "bin"


def test_pip_install_ships_helpers_and_bytecode(installed: Path) -> None:
    site = subprocess.run([str(installed / "python"), "-c",
                           "import minirun, os; print(os.path.dirname(minirun.__file__))"],
                          capture_output=True, text=True, check=True,
                          cwd=installed).stdout.strip()  # fmt: skip
    assert not site.startswith(str(REPO)), site  # the installed copy, not the checkout
    for name in ("minirun-shim", "minirun-init", "minirun-exec"):
        assert os.access(os.path.join(site, "libexec", name), os.X_OK), name
    pycache = Path(site) / "runtime" / "__pycache__"
    assert any(p.name.startswith("api.") for p in pycache.iterdir())


def test_installed_minirun_runs_detached_logs_and_stops(installed: Path, built_images: Path,
                                                        tmp_path: Path) -> None:  # fmt: skip
    minirun = str(installed / "minirun")
    env = {**os.environ, "MINIRUN_ROOT": str(tmp_path / "store")}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([minirun, *args], env=env, capture_output=True, text=True,
                              timeout=60)  # fmt: skip

    assert cli("load", "-q", "-i", str(built_images / "busybox")).returncode == 0
    r = cli("run", "-d", "--name", "inst", "--network", "none", "busybox", "sh", "-c",
            "echo up; exec sleep 60")  # fmt: skip
    assert r.returncode == 0, r.stderr
    try:
        deadline = time.monotonic() + 10
        while "up" not in cli("logs", "inst").stdout:
            assert time.monotonic() < deadline, "no log line"
            time.sleep(0.05)
        assert cli("stop", "-t", "1", "inst").returncode == 0
        row = next(ln for ln in cli("ps", "-a").stdout.splitlines() if ln.endswith(" inst"))
        assert "Exited" in row
        # the runtime's own console script is installed too
        assert subprocess.run([str(installed / "minirun-runtime"), "--version"],
                              capture_output=True).returncode == 0  # fmt: skip
    finally:
        cli("rm", "-f", "inst")
