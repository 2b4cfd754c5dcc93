"""`pip install .`, `pip install -e .` and `pipx install .` of a clean clone each give a
complete minirun: the C helpers (shim, init, exec) are built by the package build, the
bytecode is compiled, and a detached container runs, logs and stops with nothing but that
install."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.root, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", params=["pip", "pip-editable", "pipx"])
def installed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """minirun installed from a clean clone of this checkout's HEAD the ways users and
    tools do: ``pip install .`` and ``pip install -e .`` into a fresh venv, and
    ``pipx install .``; yields the bin/ of the venv it went into."""
    if subprocess.run(["git", "-C", str(REPO), "rev-parse"], capture_output=True).returncode:
        pytest.skip("not a git checkout")
    how = request.param
    base = tmp_path_factory.mktemp(f"install-{how}")
    clone = base / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    # the interpreter the project's venv was made from (not a pyenv shim)
    python = os.path.realpath(sys.executable)
    if how == "pipx":
        pipx = shutil.which("pipx")
        if pipx is None:
            pytest.skip("pipx is not installed (make deps installs it)")
        env = {**os.environ, "PIPX_HOME": str(base / "pipx"), "PIPX_BIN_DIR": str(base / "bin"),
               "PIPX_DEFAULT_PYTHON": python}  # fmt: skip
        cmd = [pipx, "install", "--python", python, str(clone)]
        bin_dir = base / "pipx" / "venvs" / "minirun" / "bin"
    else:
        venv = base / "venv"
        subprocess.run([python, "-m", "venv", str(venv)], check=True)
        env = dict(os.environ)
        cmd = [str(venv / "bin" / "pip"), "install", "-q",
               *(["-e"] if how == "pip-editable" else []), str(clone)]  # fmt: skip
        bin_dir = venv / "bin"
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    if how == "pipx":  # pipx links the console scripts into PIPX_BIN_DIR
        assert os.access(base / "bin" / "minirun", os.X_OK)
    yield bin_dir


def test_pip_install_ships_helpers_and_bytecode(installed: Path) -> None:
    site = subprocess.run([str(installed / "python"), "-c",
                           "import minirun, os; print(os.path.dirname(minirun.__file__))"],
                          capture_output=True, text=True, check=True,
                          cwd=installed).stdout.strip()  # fmt: skip
    assert not site.startswith(str(REPO)), site  # the installed copy (or clone), not the checkout
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
