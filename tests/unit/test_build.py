"""minirun.image.build (reproducible layers and images) and the offline images, built from
images/*/Containerfile by images/build.py."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import stat
import tarfile
from pathlib import Path

import pytest

from minirun.image import build, oci
from minirun.image.store import Store, hex_of
from tests.conftest import IMAGE_NAMES, load_image_recipes


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def members(tar: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        return t.getmembers()


def test_layer_tar_is_reproducible_and_ordered() -> None:
    entries = [build.file("b/z", "z"), build.directory("b"), build.file("a", b"\x00\x01", 0o4755),
               build.symlink("b/link", "/a"), build.Entry("b/hard", "hardlink", target="/a"),
               build.whiteout("c/gone"), build.opaque("d")]
    one = build.layer_tar(entries)
    assert one == build.layer_tar(list(reversed(entries)))
    ms = members(one)
    names = [m.name for m in ms]
    assert names.index("b") < names.index("b/z")  # parents before children
    assert names == sorted(names, key=lambda n: n.split("/"))
    by = {m.name: m for m in ms}
    assert by["a"].mode == 0o4755 and by["a"].isfile() and by["a"].size == 2
    assert by["b"].isdir() and by["b/link"].issym() and by["b/link"].linkname == "/a"
    assert by["b/hard"].islnk() and by["b/hard"].linkname == "a"
    assert "c/.wh.gone" in by and by["c/.wh.gone"].size == 0
    assert "d/.wh..wh..opq" in by
    assert {m.mtime for m in ms} == {build.EPOCH}
    assert {(m.uid, m.gid, m.uname, m.gname) for m in ms} == {(0, 0, "", "")}


def test_unknown_entry_kind() -> None:
    with pytest.raises(ValueError, match="fifo"):
        build.layer_tar([build.Entry("x", "fifo")])


def test_layer_digests() -> None:
    tar = build.layer_tar([build.file("f", "x")])
    layer = build.Layer(tar, "ADD f")
    assert layer.diff_id == sha(tar)
    assert gzip.decompress(layer.blob) == tar
    assert layer.digest == sha(layer.blob)
    assert build.Layer(tar, "other").digest == layer.digest  # gzip header has no mtime/name


def test_image() -> None:
    layers = [build.Layer(build.layer_tar([build.file("f", str(i))]), f"step {i}") for i in range(2)]
    img = build.image("x:1", layers, {"Cmd": ["sh"]}, platform=oci.Platform("linux", "arm64", "v8"))
    man = oci.Manifest.parse(img.manifest)
    cfg = oci.ImageConfig.parse(img.config)
    assert man.media_type == oci.OCI_MANIFEST
    assert man.config.digest == sha(img.config) and man.config.size == len(img.config)
    assert cfg.diff_ids == [layer.diff_id for layer in layers]
    assert [d.digest for d in man.layers] == [layer.digest for layer in layers]
    assert [d.size for d in man.layers] == [len(layer.blob) for layer in layers]
    assert {d.media_type for d in man.layers} == {oci.OCI_LAYER_GZIP}
    assert str(cfg.platform) == "linux/arm64/v8"
    assert cfg.config == {"Cmd": ["sh"]}
    assert [h["created_by"] for h in cfg.history] == ["step 0", "step 1"]
    assert cfg.created == "2026-01-01T00:00:00Z"
    assert img.manifest_digest == sha(img.manifest)
    assert set(img.blobs) == {man.config.digest, *(d.digest for d in man.layers)}
    for d, data in img.blobs.items():
        assert sha(data) == d
    # the default platform is the host's
    assert oci.ImageConfig.parse(build.image("y", layers, {}).config).platform == oci.host_platform()


def test_write_oci_layout(tmp_path: Path) -> None:
    img = build.image("app:2", [build.Layer(build.layer_tar([build.file("f", "x")]), "f")], {})
    build.write_oci_layout(tmp_path / "l", [img])
    assert json.loads((tmp_path / "l" / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = oci.Index.parse((tmp_path / "l" / "index.json").read_bytes())
    assert index.manifests[0].digest == img.manifest_digest
    assert index.manifests[0].annotations == {oci.ANNOTATION_REF_NAME: "app:2"}
    for p in (tmp_path / "l" / "blobs" / "sha256").iterdir():
        assert hex_of(sha(p.read_bytes())) == p.name


# -- the offline images -----------------------------------------------------------------------


def _layout_layers(layout: Path) -> tuple[oci.Manifest, oci.ImageConfig, list[bytes]]:
    index = json.loads((layout / "index.json").read_text())
    blobs = layout / "blobs" / "sha256"
    man = oci.Manifest.parse((blobs / hex_of(index["manifests"][0]["digest"])).read_bytes())
    cfg = oci.ImageConfig.parse((blobs / hex_of(man.config.digest)).read_bytes())
    tars = [gzip.decompress((blobs / hex_of(d.digest)).read_bytes()) for d in man.layers]
    return man, cfg, tars


def test_offline_images(built_images: Path) -> None:
    layouts = {name: _layout_layers(built_images / name) for name in IMAGE_NAMES}
    base_man, base_cfg, (base_tar,) = layouts["busybox"]
    # the derived images share busybox's layer byte for byte, and add one each
    for name in ("busybox-extra", "busybox-edit"):
        man, cfg, tars = layouts[name]
        assert len(man.layers) == 2
        assert man.layers[0] == base_man.layers[0]
        assert cfg.diff_ids[0] == base_cfg.diff_ids[0] == sha(base_tar)
        assert cfg.diff_ids[1:] == [sha(t) for t in tars[1:]]
    assert base_cfg.config["Cmd"] == ["sh"]
    assert any(e.startswith("PATH=") for e in base_cfg.config["Env"])
    extra_cfg = layouts["busybox-extra"][1].config
    assert extra_cfg["Cmd"] == ["hello"] and extra_cfg["WorkingDir"] == "/srv/www"
    assert extra_cfg["Env"][-1] == "GREETING=hello"

    base = {m.name: m for m in members(base_tar)}
    assert base["bin/busybox"].isfile() and base["bin/busybox"].mode == 0o755
    assert base["bin/sh"].issym() and base["bin/sh"].linkname == "busybox"
    assert base["usr/bin/env"].issym() and base["usr/bin/env"].linkname == "../../bin/busybox"
    assert base["tmp"].mode == 0o1777 and base["root"].mode == 0o700
    for f in ("etc/passwd", "etc/group", "etc/issue", "usr/share/doc/busybox/README", "home/README"):
        assert base[f].isfile()

    edit = {m.name for m in members(layouts["busybox-edit"][2][1])}
    assert {"etc/.wh.issue", "home/.wh..wh..opq", "usr/share/.wh.doc", "home/app/NEW"} <= edit
    extra = {m.name: m for t in layouts["busybox-extra"][2][1:] for m in members(t)}
    assert {"srv/www/index.html", "etc/motd", "usr/local/bin/hello"} <= set(extra)
    assert extra["usr/local/bin/hello"].mode == 0o755 and extra["etc/motd"].mode == 0o644
    assert extra["srv/www"].isdir() and extra["srv/www"].mode == 0o755
    every = [m for t in (base_tar, *layouts["busybox-edit"][2][1:], *layouts["busybox-extra"][2][1:])
             for m in members(t)]
    assert {(m.uid, m.gid) for m in every} == {(0, 0)}
    assert {m.mtime for m in every} <= {0, build.EPOCH}  # SOURCE_DATE_EPOCH clamps them


def test_offline_images_are_reproducible(built_images: Path, tmp_path: Path) -> None:
    """A second build from the Containerfiles, in another throw-away store, gives the same
    image IDs and blobs (SOURCE_DATE_EPOCH: fixed created times, clamped file times)."""
    load_image_recipes().build_all(tmp_path, reuse=False)
    for name in IMAGE_NAMES:
        assert (tmp_path / name / "index.json").read_bytes() == \
            (built_images / name / "index.json").read_bytes()
        assert sorted(p.name for p in (tmp_path / name / "blobs" / "sha256").iterdir()) == \
            sorted(p.name for p in (built_images / name / "blobs" / "sha256").iterdir())


@pytest.mark.root
def test_busybox_edit_unpacks_to_overlay_whiteouts(loaded_store: Store) -> None:
    top = loaded_store.layer_dir(loaded_store.resolve("busybox-edit").layers[1].diff_id)
    st = os.lstat(top / "etc" / "issue")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    st = os.lstat(top / "usr" / "share" / "doc")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert os.getxattr(top / "home", "trusted.overlay.opaque") == b"y"
    assert (top / "home" / "app" / "NEW").is_file()
    base = loaded_store.layer_dir(loaded_store.resolve("busybox").layers[0].diff_id)
    assert (base / "etc" / "issue").is_file() and os.readlink(base / "bin" / "sh") == "busybox"
