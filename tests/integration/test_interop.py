"""Interoperability with tools nobody here wrote: skopeo and podman read what
``minirun save`` writes, and ``minirun load`` reads what they write, with the same layers.

skopeo and podman run in a private mount namespace with tmpfs over /run and /var/lib, so
their caches (/var/lib/containers/cache, /run/containers) never touch the host; podman
uses a vfs store under the test's tmp dir (no containers are run: this host has cgroup v1).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from minirun.image import archive
from minirun.image.store import Store
from tests.conftest import Cli
from tests.registry_fixtures import isolated_tool

pytestmark = pytest.mark.root

Tool = Callable[..., "subprocess.CompletedProcess[str]"]


def _need(*tools: str) -> None:
    for t in tools:
        if shutil.which(t) is None:
            pytest.skip(f"{t} is not installed")


@pytest.fixture
def tool() -> Iterator[Tool]:
    """Run skopeo/podman confined to tmp dirs: ``tool("skopeo", "copy", ...)``."""
    _need("unshare")
    # podman wants a runroot of at most 50 characters: pytest's tmp_path is longer
    work = Path(tempfile.mkdtemp(prefix="minirun-interop-", dir="/tmp"))

    def run(name: str, *args: str) -> subprocess.CompletedProcess[str]:
        return isolated_tool(work, name, *args)

    yield run
    leftover = _procs_mentioning(str(work))
    shutil.rmtree(work, ignore_errors=True)
    assert leftover == [], f"processes left behind: {leftover}"


def _procs_mentioning(text: str) -> list[str]:
    out = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmd:
            out.append(f"{p.name}: {cmd}")
    return out


def tree(root: Path) -> dict[str, Any]:
    """Everything overlayfs would see of an unpacked layer: type, mode, owner, content,
    link target, whiteout devices, the opaque xattr."""
    out: dict[str, Any] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = os.lstat(p)
            rel = str(p.relative_to(root))
            entry: tuple[Any, ...] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
            if stat.S_ISREG(st.st_mode):
                entry += (hashlib.sha256(p.read_bytes()).hexdigest(),)
            elif stat.S_ISLNK(st.st_mode):
                entry += (os.readlink(p),)
            elif stat.S_ISCHR(st.st_mode):
                entry += (st.st_rdev,)
            elif stat.S_ISDIR(st.st_mode):
                try:
                    entry += (os.getxattr(p, "trusted.overlay.opaque", follow_symlinks=False),)
                except OSError:
                    entry += (None,)
            out[rel] = entry
    return out


def layers_of(store: Store, name: str) -> list[str]:
    return [layer.diff_id for layer in store.resolve(name).layers]


def assert_same_image(a: Store, a_name: str, b: Store, b_name: str) -> None:
    assert layers_of(a, a_name) == layers_of(b, b_name)
    for diff_id in layers_of(a, a_name):
        assert tree(a.layer_dir(diff_id)) == tree(b.layer_dir(diff_id)), diff_id


@pytest.fixture
def reference(tmp_path: Path, built_images: Path) -> Store:
    """The three images loaded straight from our own OCI layouts."""
    s = Store(tmp_path / "reference")
    for name in ("busybox", "busybox-extra", "busybox-edit"):
        archive.load(s, built_images / name)
    return s


# -- skopeo writes, minirun loads -------------------------------------------------------------


@pytest.mark.parametrize("transport", ["docker-archive", "oci-archive"])
@pytest.mark.parametrize("image", ["busybox", "busybox-edit"])
def test_skopeo_archive_loads_into_minirun(tool: Tool, cli: Cli, built_images: Path, reference: Store,
                                           store_root: Path, tmp_path: Path, transport: str,
                                           image: str) -> None:
    _need("skopeo")
    out = tmp_path / f"{image}.tar"
    tool("skopeo", "copy", f"oci:{built_images / image}:{image}:latest", f"{transport}:{out}:{image}:latest")
    res = cli(["load", "-i", str(out)])
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[-1] == f"Loaded image: {image}:latest"
    mine = Store(store_root)
    assert_same_image(mine, image, reference, image)
    if transport == "docker-archive":  # skopeo keeps the config: the image ID is the same
        assert mine.resolve(image).id == reference.resolve(image).id


# -- minirun saves, skopeo reads ----------------------------------------------------------------


@pytest.mark.parametrize("transport", ["docker-archive", "oci-archive"])
def test_skopeo_reads_minirun_save(tool: Tool, reference: Store, tmp_path: Path, transport: str) -> None:
    _need("skopeo")
    saved = tmp_path / "saved.tar"
    archive.save_to_file(reference, ["busybox-edit"], saved)
    raw = json.loads(tool("skopeo", "inspect", "--raw", f"{transport}:{saved}").stdout)
    assert len(raw["layers"]) == 2
    cfg = json.loads(tool("skopeo", "inspect", "--config", "--raw", f"{transport}:{saved}").stdout)
    assert cfg["rootfs"]["diff_ids"] == layers_of(reference, "busybox-edit")
    layout = tmp_path / "copied"
    tool("skopeo", "copy", f"{transport}:{saved}", f"oci:{layout}:busybox-edit:latest")
    again = Store(tmp_path / "again")
    archive.load(again, layout)
    assert_same_image(again, "busybox-edit", reference, "busybox-edit")


def test_skopeo_picks_one_of_two_saved_images(tool: Tool, reference: Store, tmp_path: Path) -> None:
    _need("skopeo")
    saved = tmp_path / "two.tar"
    archive.save_to_file(reference, ["busybox", "busybox-extra"], saved)
    cfg = json.loads(tool("skopeo", "inspect", "--config", "--raw",
                          f"docker-archive:{saved}:busybox-extra:latest").stdout)
    assert cfg["rootfs"]["diff_ids"] == layers_of(reference, "busybox-extra")


# -- podman ---------------------------------------------------------------------------------


def test_podman_round_trip(tool: Tool, cli: Cli, reference: Store, store_root: Path,
                           tmp_path: Path) -> None:
    """minirun save → podman load → podman save (docker-archive, oci-archive) → minirun load."""
    _need("podman")
    saved = tmp_path / "saved.tar"
    archive.save_to_file(reference, ["busybox-extra", "busybox-edit"], saved)
    out = tool("podman", "load", "-i", str(saved)).stdout
    assert "busybox-extra:latest" in out and "busybox-edit:latest" in out
    for name in ("busybox-extra", "busybox-edit"):
        inspected = json.loads(tool("podman", "image", "inspect", f"{name}:latest").stdout)
        assert inspected[0]["RootFS"]["Layers"] == layers_of(reference, name)

    mine = Store(store_root)
    for fmt in ("docker-archive", "oci-archive"):
        back = tmp_path / f"podman-{fmt}.tar"
        tool("podman", "save", "--format", fmt, "-o", str(back), "busybox-extra:latest")
        res = cli(["load", "-i", str(back)])
        assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
        assert res.stdout.splitlines()[-1] == "Loaded image: localhost/busybox-extra:latest"
        assert_same_image(mine, "localhost/busybox-extra", reference, "busybox-extra")
    # the second load found both layers already stored
    assert len([p for p in mine.layers.iterdir() if p.name != "l"]) == 2
