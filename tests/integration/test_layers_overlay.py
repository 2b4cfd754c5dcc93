"""Whiteout / opaque conversion checked against what overlayfs really shows.

Three layers are unpacked with minirun.image.layers and mounted as overlay lowerdirs inside
a private mount namespace (``unshare --mount --propagation private``), so the mount dies
with the helper process and nothing can leak into the host mount table. The merged view
must be what OCI image-spec layer.md says applying the layers in order gives.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from minirun.image.layers import OPAQUE_MARKER, unpack_layer
from tests.layertar import E, gz, tar_bytes

pytestmark = [pytest.mark.root]

BASE = [
    E("etc", "dir"),
    E("etc/keep", data=b"base"),
    E("etc/gone", data=b"base"),
    E("dir1", "dir"),
    E("dir1/a", data=b"a"),
    E("dir1/sub", "dir"),
    E("dir1/sub/b", data=b"b"),
    E("dir2", "dir"),
    E("dir2/old1", data=b"o1"),
    E("dir2/sub", "dir"),
    E("dir2/sub/old2", data=b"o2"),
    E("dir3", "dir"),
    E("dir3/f", data=b"f"),
    E("dir4", "dir"),
    E("dir4/x", data=b"x"),
    E("dir5", "dir"),
    E("dir5/old", data=b"old"),
    E("dir6", "dir"),
    E("dir6/old", data=b"old"),
    E("r", data=b"base"),
    E("f2", data=b"base"),
    E("link", "symlink", link="/etc/keep"),
]

MIDDLE = [
    E("etc/.wh.gone"),  # plain whiteout of a file
    E(".wh.dir1"),  # whiteout of a whole directory
    E("dir2", "dir"),
    E("dir2/" + OPAQUE_MARKER),  # opaque marker before the new children
    E("dir2/new", data=b"new"),
    E(".wh.dir3"),  # whiteout, then the dir recreated in the same layer
    E("dir3", "dir"),
    E("dir3/g", data=b"g"),
    E(".wh.r"),  # whiteout, then the file recreated
    E("r", data=b"middle"),
    E("dir4/y", data=b"y"),  # plain merge
    E("dir5/new", data=b"new"),
    E("dir5/" + OPAQUE_MARKER),  # opaque marker AFTER this layer's children
    E("f2", data=b"middle"),
    E(".wh.f2"),  # whiteout after a same-layer entry: the entry wins
    E("dir6/new", data=b"new"),
    E(".wh.dir6"),  # same, for a directory: lower dir6/* hidden, this layer's stays
    E(".wh.link"),
]

TOP = [
    E("etc/.wh.keep"),
    E("dir1", "dir"),  # dir1 came back (not opaque): lower whiteout still hides base's
    E("dir1/c", data=b"c"),
    E("dir4/.wh.x"),
]

EXPECTED = {
    "etc": None,
    "dir1": None,
    "dir1/c": "c",
    "dir2": None,
    "dir2/new": "new",
    "dir3": None,
    "dir3/g": "g",
    "dir4": None,
    "dir4/y": "y",
    "dir5": None,
    "dir5/new": "new",
    "dir6": None,
    "dir6/new": "new",
    "r": "middle",
    "f2": "middle",
}

_PROBE = r"""
import json, os, subprocess, sys
mnt, lower = sys.argv[1], sys.argv[2]
subprocess.run(["mount", "-t", "overlay", "overlay", "-o", "lowerdir=" + lower, mnt], check=True)
out = {}
for dp, dns, fns in os.walk(mnt):
    for n in dns + fns:
        p = os.path.join(dp, n)
        rel = os.path.relpath(p, mnt)
        if os.path.islink(p):
            out[rel] = "-> " + os.readlink(p)  # never followed: it would resolve on the host
        else:
            out[rel] = None if os.path.isdir(p) else open(p).read()
print(json.dumps(out))
"""


def _overlay_available() -> bool:
    if "overlay" in Path("/proc/filesystems").read_text():
        return True
    subprocess.run(["modprobe", "overlay"], capture_output=True)
    return "overlay" in Path("/proc/filesystems").read_text()


@pytest.fixture
def layers(tmp_path: Path) -> list[Path]:
    if os.geteuid() != 0:
        pytest.skip("needs root (mknod whiteouts, trusted.* xattrs, mount)")
    if shutil.which("unshare") is None or not _overlay_available():
        pytest.skip("needs unshare(1) and overlayfs")
    dirs = []
    for i, entries in enumerate((BASE, MIDDLE, TOP)):
        d = tmp_path / f"l{i}"
        d.mkdir()
        unpack_layer(io.BytesIO(gz(tar_bytes(entries))), d, name=f"test-layer-{i}")
        dirs.append(d)
    return dirs


def _merged(tmp_path: Path, lowers_top_first: list[Path]) -> dict[str, str | None]:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", sys.executable, "-c", _PROBE,
         str(mnt), ":".join(str(p) for p in lowers_top_first)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    # The mount lived only in the helper's namespace.
    assert str(mnt) not in Path("/proc/self/mountinfo").read_text()
    return json.loads(r.stdout)


def test_overlay_merged_view_matches_oci_semantics(tmp_path: Path, layers: list[Path]) -> None:
    base, middle, top = layers
    assert _merged(tmp_path, [top, middle, base]) == EXPECTED


def test_overlay_keeps_absolute_symlinks_unresolved(tmp_path: Path, layers: list[Path]) -> None:
    base, _, top = layers  # top has no whiteout for 'link'
    view = _merged(tmp_path, [top, base])
    assert view["link"] == "-> /etc/keep"
    assert view["dir2/sub/old2"] == "o2"


def test_two_layer_view(tmp_path: Path, layers: list[Path]) -> None:
    base, middle, _ = layers
    view = _merged(tmp_path, [middle, base])
    assert view["etc/keep"] == "base" and "etc/gone" not in view
    assert "dir1" not in view
    assert "link" not in view
    assert {k for k in view if k.startswith("dir4/")} == {"dir4/x", "dir4/y"}
