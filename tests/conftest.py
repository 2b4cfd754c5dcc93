"""Shared fixtures.

* ``built_images`` (session): the offline images, built once from images/*/Containerfile
  (as root), as OCI layout dirs ``busybox/``, ``busybox-extra/``, ``busybox-edit/``.
* ``store_root`` / ``store`` / ``loaded_store``: a fresh image store in a tmp dir (never
  the real /var/lib/minirun), empty or with the three images loaded.
* ``cli``: runs the real ``minirun`` entry point as a subprocess against ``store_root``.
* ``root`` marker: tests that need root are skipped when not run as root.
* ``CONTAINER_TESTS`` (a module's ``pytestmark``), ``RUN``, ``wait_for``, ``loaded_root``
  and ``mr``: what the container integration modules share.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from minirun.image import archive
from minirun.image.store import Store

pytest_plugins = ["tests.registry_fixtures"]

REPO = Path(__file__).resolve().parent.parent
MINIRUN = Path(sys.executable).parent / "minirun"
IMAGE_NAMES = ("busybox", "busybox-extra", "busybox-edit")

Cli = Callable[..., "subprocess.CompletedProcess[str]"]
# a container test's run options: offline images, no network
RUN = ("--network", "none", "--pull", "never")


def _container_marks() -> list[pytest.MarkDecorator]:
    from minirun.helpers import helper_binary

    return [pytest.mark.skipif(os.geteuid() != 0, reason="needs root: real containers"),
            pytest.mark.skipif(helper_binary("minirun-shim") is None,
                               reason="minirun-shim is not built (make install)")]


CONTAINER_TESTS = _container_marks()  # ``pytestmark = CONTAINER_TESTS``


def wait_for(pred: Callable[[], object], timeout: float = 20) -> None:
    """Poll ``pred`` every 50 ms until it is true; the test fails after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def store_cli(env: dict[str, str]) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``run("ps", "-a")``: the real minirun with ``env`` (MINIRUN_ROOT...), text output
    captured — the form the container integration modules share."""

    def run(*args: str, input: str | None = None, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(MINIRUN), *args], env=env, capture_output=True, text=True,
                              input=input, timeout=timeout)

    return run


def loaded_root(tmp_path_factory: pytest.TempPathFactory, built_images: Path,
                names: Sequence[str] = ("busybox",)) -> Iterator[Path]:
    """The body of a module-scoped ``root`` fixture: a fresh store with the offline
    images ``names`` loaded through the real CLI; every container in it removed after."""
    store = tmp_path_factory.mktemp("store")
    env = {**os.environ, "MINIRUN_ROOT": str(store)}
    for name in names:
        subprocess.run([str(MINIRUN), "load", "-q", "-i", str(built_images / name)], check=True, env=env)
    yield store
    ids = subprocess.run([str(MINIRUN), "ps", "-aq"], env=env, capture_output=True, text=True).stdout.split()
    if ids:
        subprocess.run([str(MINIRUN), "rm", "-f", *ids], env=env, capture_output=True)


@pytest.fixture
def mr(root: Path) -> Cli:
    """``mr("ps", "-a")``: the real minirun against the module's ``root`` store."""
    return store_cli({**os.environ, "MINIRUN_ROOT": str(root)})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)


def load_image_recipes() -> Any:
    """images/build.py (``build_all``, ``busybox_layer``, ``find_busybox``), imported as
    ``images.build`` as the integration modules do, so one build serves the session."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    return importlib.import_module("images.build")


@pytest.fixture(scope="session")
def built_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """OCI layouts of busybox, busybox-extra and busybox-edit, built once per session from
    their Containerfiles by minirun's builder (into a throw-away store, --network none)."""
    if os.geteuid() != 0:
        pytest.skip("building the offline images needs root (busybox-edit's RUN step is a real container)")
    out = tmp_path_factory.mktemp("images")
    load_image_recipes().build_all(out)
    for name in IMAGE_NAMES:
        assert (out / name / "index.json").is_file()
    return out


def make_layout(dest: Path, images: Sequence[Any]) -> Path:
    """Write ``minirun.image.build.BuiltImage`` s as one OCI layout dir ``dest``."""
    from minirun.image import build

    build.write_oci_layout(dest, images)
    return dest


@pytest.fixture
def make_image(tmp_path: Path) -> Callable[..., Path]:
    """``make_image("app:1", [{"path": b"data"}, ...])``: an OCI layout dir with one image
    whose layers hold those files (a ``build.Layer`` may be given instead of a dict)."""
    from minirun.image import build

    counter = iter(range(1 << 30))

    def make(name: str, layers: Sequence[Any], config: dict[str, Any] | None = None) -> Path:
        built = []
        for layer in layers:
            if isinstance(layer, build.Layer):
                built.append(layer)
            else:
                built.append(
                    build.Layer(
                        build.layer_tar(build.file(p, d) for p, d in layer.items()),
                        f"ADD {' '.join(layer)}",
                    )
                )
        img = build.image(name, built, config or {"Cmd": ["sh"]})
        return make_layout(tmp_path / f"layout-{next(counter)}", [img])

    return make


@pytest.fixture
def store_root(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "store"
    root.mkdir()
    yield root
    prune_networks(root)
    shutil.rmtree(root, ignore_errors=True)  # stores are big; don't keep 3 runs' worth


def prune_networks(root: Path) -> None:
    """Remove the bridges and firewall rules a test store made: ``run`` uses bridge
    networking by default, and those live in the host's kernel, not in the store."""
    if os.geteuid() != 0 or not (root / "networks").is_dir():
        return
    from minirun.network.attach import remove_networks

    try:
        remove_networks(Store(root), [], prune=True)
    except Exception as e:  # never fail a test's teardown for this; say it
        print(f"warning: network prune of {root} failed: {e}", file=sys.stderr)


@pytest.fixture(scope="session", autouse=True)
def _prune_test_networks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """At the end of the session, prune the networks of every store the tests made
    (module-scoped stores, the per-test default root)."""
    yield
    base = tmp_path_factory.getbasetemp()
    for networks in [*base.glob("*/networks"), *base.glob("*/*/networks")]:
        prune_networks(networks.parent)


@pytest.fixture
def store(store_root: Path) -> Store:
    return Store(store_root)


@pytest.fixture
def loaded_store(store: Store, built_images: Path) -> Store:
    """The store with busybox, busybox-extra and busybox-edit loaded."""
    for name in IMAGE_NAMES:
        archive.load(store, built_images / name)
    return store


@pytest.fixture
def cli(store_root: Path) -> Cli:
    """``cli(["images"])`` runs ``minirun images`` with MINIRUN_ROOT=store_root.
    ``input`` may be bytes (then stdout/stderr are still decoded as text)."""

    def run(
        args: Sequence[str],
        *,
        input: bytes | str | None = None,
        check: bool = False,
        env: dict[str, str] | None = None,
        prefix: Sequence[str] = (),
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        full_env = {**os.environ, "MINIRUN_ROOT": str(store_root), **(env or {})}
        cmd = [*prefix, str(MINIRUN), *args]
        if isinstance(input, bytes) or input is None:
            p = subprocess.run(
                cmd,
                input=input if input is not None else b"",
                capture_output=True,
                env=full_env,
                timeout=timeout,
            )
            res = subprocess.CompletedProcess(
                p.args,
                p.returncode,
                p.stdout.decode(errors="replace"),
                p.stderr.decode(errors="replace"),
            )
        else:
            res = subprocess.run(
                cmd, input=input, capture_output=True, text=True, env=full_env, timeout=timeout
            )
        if check and res.returncode != 0:
            raise AssertionError(
                f"minirun {' '.join(args)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}"
            )
        return res

    return run


def store_snapshot(root: Path) -> dict[str, set[str]]:
    """What a store holds: blob, layer and image names, names in tmp, and tags."""

    def names(p: Path) -> set[str]:
        return {c.name for c in p.iterdir()} if p.is_dir() else set()

    repos = (
        (root / "repositories.json").read_text() if (root / "repositories.json").exists() else ""
    )
    return {
        "blobs": names(root / "blobs" / "sha256"),
        "layers": names(root / "layers") - {"l"},
        "links": names(root / "layers" / "l"),
        "images": names(root / "images"),
        "tmp": names(root / "tmp"),
        "repos": {repos},
    }


@pytest.fixture
def snapshot() -> Callable[[Path], dict[str, set[str]]]:
    return store_snapshot


@pytest.fixture(autouse=True)
def _no_real_store(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No test may fall back to /var/lib/minirun: point the default at a tmp dir."""
    monkeypatch.setenv("MINIRUN_ROOT", str(tmp_path / "default-root"))
    yield


@pytest.fixture(scope="session", autouse=True)
def _remove_empty_test_cgroup_parents() -> Iterator[None]:
    """The shared parents the tests' containers used (the engine's minirun/, the OCI
    tests' minirun-oci/, minirun-test/): removed at the end when empty, so a test run
    leaves no cgroup behind. rmdir only succeeds on an empty cgroup, so a parent still in
    use by anything else stays."""
    yield
    if os.geteuid() != 0:
        return
    import glob

    for name in ("minirun", "minirun-oci", "minirun-test"):
        for d in glob.glob(f"/sys/fs/cgroup/*/{name}") + glob.glob(f"/sys/fs/cgroup/{name}"):
            try:
                os.rmdir(d)
            except OSError:
                pass
