"""load / save: docker-archive and OCI layout (dir, tar, stream); hostile archives are
refused with a clear error and leave the store exactly as it was."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from minirun.errors import ArchiveError, DigestMismatch, ImageNotFound, LayerError, MinirunError
from minirun.image import archive, build, oci
from minirun.image.store import Store, hex_of, short_id
from tests.conftest import make_layout, store_snapshot

Snap = Callable[[Path], dict[str, set[str]]]


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def tar_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tar.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def tar_members(data: bytes) -> dict[str, bytes]:
    out = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for m in tar:
            if m.isfile():
                f = tar.extractfile(m)
                assert f is not None
                out[m.name] = f.read()
    return out


def saved(store: Store, *names: str) -> bytes:
    buf = io.BytesIO()
    archive.save(store, list(names), buf)
    return buf.getvalue()


def lines_of(store: Store, src: Path | io.BytesIO) -> tuple[list[archive.LoadedImage], list[str]]:
    out: list[str] = []
    return archive.load(store, src, out.append), out


@pytest.fixture(scope="module")
def _docker_extra(built_images: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    s = Store(tmp_path_factory.mktemp("extra") / "store")
    archive.load(s, built_images / "busybox-extra")
    m = tar_members(saved(s, "busybox-extra"))
    del m["index.json"], m["oci-layout"]
    shutil.rmtree(s.root)
    return m


@pytest.fixture
def docker_extra(_docker_extra: dict[str, bytes]) -> dict[str, bytes]:
    """busybox-extra as a plain docker-archive (no OCI files), as members to tamper with."""
    return dict(_docker_extra)


@pytest.fixture
def base_store(store: Store, built_images: Path) -> Store:
    """A store with busybox only: busybox-extra's base layer exists, its top layer not."""
    archive.load(store, built_images / "busybox")
    return store


def manifest_of(members: dict[str, bytes]) -> list[dict[str, Any]]:
    doc: list[dict[str, Any]] = json.loads(members["manifest.json"])
    return doc


# -- loading the formats ---------------------------------------------------------------------


def test_load_oci_layout_dir(store: Store, built_images: Path) -> None:
    loaded, out = lines_of(store, built_images / "busybox")
    rec = store.resolve("busybox")
    assert [li.names for li in loaded] == [["busybox:latest"]] and loaded[0].record.id == rec.id
    assert out == [f"{short_id(rec.layers[0].diff_id)}: Loading layer "
                   f"{out[0].split('Loading layer ')[1].split(' ...')[0]} ... done",
                   "Loaded image: busybox:latest"]
    index = json.loads((built_images / "busybox" / "index.json").read_text())
    assert rec.manifest_digest == index["manifests"][0]["digest"]
    assert (store.layer_dir(rec.layers[0].diff_id) / "bin" / "busybox").is_file()


def test_shared_layer_already_exists(store: Store, built_images: Path) -> None:
    archive.load(store, built_images / "busybox")
    base = store.resolve("busybox").layers[0].diff_id
    _, out = lines_of(store, built_images / "busybox-extra")
    top = store.resolve("busybox-extra").layers[1].diff_id
    assert out[0] == f"{short_id(base)}: Already exists"
    assert out[1].startswith(f"{short_id(top)}: Loading layer ") and out[1].endswith(" ... done")
    assert out[2] == "Loaded image: busybox-extra:latest"
    assert len(out) == 3


def test_load_oci_layout_tar_and_stream(store: Store, built_images: Path, tmp_path: Path) -> None:
    tar = tmp_path / "edit.tar"
    with tarfile.open(tar, "w") as t:
        for p in sorted((built_images / "busybox-edit").rglob("*")):
            t.add(p, p.relative_to(built_images / "busybox-edit").as_posix(), recursive=False)
    archive.load(store, tar)
    rec = store.resolve("busybox-edit")
    archive.load(store, built_images / "busybox-extra")
    # a stream (stdin) is spooled to the store's tmp first, then removed
    loaded, out = lines_of(store, io.BytesIO(tar.read_bytes()))
    assert loaded[0].record.id == rec.id and out[-1] == "Loaded image: busybox-edit:latest"
    assert all(line.endswith("Already exists") for line in out[:-1])
    assert list(store.tmp.iterdir()) == []


def test_load_docker_archive_file_and_stream(loaded_store: Store, store: Store, tmp_path: Path,
                                             docker_extra: dict[str, bytes]) -> None:
    want = loaded_store.resolve("busybox-extra").id
    data = tar_bytes(docker_extra)
    s1 = Store(tmp_path / "s1")
    (tmp_path / "a.tar").write_bytes(data)
    loaded, out = lines_of(s1, tmp_path / "a.tar")
    assert loaded[0].record.id == want and loaded[0].names == ["busybox-extra:latest"]
    assert out[-1] == "Loaded image: busybox-extra:latest"
    assert sum("Loading layer" in line for line in out) == 2
    s2 = Store(tmp_path / "s2")
    assert archive.load(s2, io.BytesIO(data))[0].record.id == want
    rec = s2.resolve("busybox-extra")
    assert [layer.diff_id for layer in rec.layers] == \
        [layer.diff_id for layer in loaded_store.resolve("busybox-extra").layers]
    assert list(s2.tmp.iterdir()) == []


def test_docker_archive_all_repo_tags(loaded_store: Store, tmp_path: Path) -> None:
    from minirun.image import reference as refs

    rec = loaded_store.resolve("busybox")
    loaded_store.tag("busybox", refs.parse("localhost:5000/tools/bb:v1"))
    data = saved(loaded_store, rec.id)  # by ID: every name goes into RepoTags
    assert sorted(manifest_of(tar_members(data))[0]["RepoTags"]) == [
        "busybox:latest", "localhost:5000/tools/bb:v1"]
    fresh = Store(tmp_path / "fresh")
    loaded, out = lines_of(fresh, io.BytesIO(data))
    assert sorted(loaded[0].names) == ["busybox:latest", "localhost:5000/tools/bb:v1"]
    assert sorted(line for line in out if line.startswith("Loaded image")) == [
        "Loaded image: busybox:latest", "Loaded image: localhost:5000/tools/bb:v1"]
    assert fresh.resolve("localhost:5000/tools/bb:v1").id == rec.id
    assert fresh.resolve("busybox").id == rec.id


def test_docker_archive_without_tags_loads_by_id(docker_extra: dict[str, bytes], tmp_path: Path) -> None:
    m = manifest_of(docker_extra)
    m[0]["RepoTags"] = None
    docker_extra["manifest.json"] = json.dumps(m).encode()
    s = Store(tmp_path / "s")
    loaded, out = lines_of(s, io.BytesIO(tar_bytes(docker_extra)))
    assert loaded[0].names == [] and out[-1] == f"Loaded image ID: {loaded[0].record.id}"
    assert s.images()[0].repo_tags == []


def test_docker_archive_with_legacy_layout_and_gzip_layers(docker_extra: dict[str, bytes],
                                                           loaded_store: Store, tmp_path: Path) -> None:
    """docker save < 25 / skopeo: <id>/layer.tar names, <hex>.json config; layers may be gzip."""
    m = manifest_of(docker_extra)[0]
    members: dict[str, bytes] = {}
    layers = []
    for i, name in enumerate(m["Layers"]):
        data = docker_extra[name]
        if i == 1:
            import gzip
            data = gzip.compress(data)
        members[f"{i}abc/layer.tar"] = data
        layers.append(f"{i}abc/layer.tar")
    members["cfg.json"] = docker_extra[m["Config"]]
    members["manifest.json"] = json.dumps([{"Config": "cfg.json", "RepoTags": ["x/y:z"],
                                            "Layers": layers}]).encode()
    s = Store(tmp_path / "s")
    rec = archive.load(s, io.BytesIO(tar_bytes(members)))[0].record
    assert rec.id == loaded_store.resolve("busybox-extra").id
    assert rec.layers[1].media_type == oci.OCI_LAYER_GZIP
    assert rec.layers[0].media_type == oci.OCI_LAYER
    # save writes it back uncompressed; the layer's blob is then its diff_id
    again = tar_members(saved(s, "x/y:z"))
    for layer in rec.layers:
        assert sha(again[f"blobs/sha256/{hex_of(layer.diff_id)}"]) == layer.diff_id


def test_zstd_layer(store: Store, tmp_path: Path) -> None:
    import zstandard

    tar = build.layer_tar([build.file("z/hello", b"zstd!\n")])
    blob = zstandard.ZstdCompressor().compress(tar)
    cfg = json.dumps({"architecture": "amd64", "os": "linux",
                      "rootfs": {"type": "layers", "diff_ids": [sha(tar)]}}).encode()
    man = json.dumps({"schemaVersion": 2, "mediaType": oci.OCI_MANIFEST,
                      "config": {"mediaType": oci.OCI_CONFIG, "digest": sha(cfg), "size": len(cfg)},
                      "layers": [{"mediaType": oci.OCI_LAYER_ZSTD, "digest": sha(blob),
                                  "size": len(blob)}]}).encode()
    layout = tmp_path / "z"
    _write_layout(layout, [cfg, blob, man], [{"mediaType": oci.OCI_MANIFEST, "digest": sha(man),
                                              "size": len(man),
                                              "annotations": {oci.ANNOTATION_REF_NAME: "zz:1"}}])
    rec = archive.load(store, layout)[0].record
    assert (store.layer_dir(sha(tar)) / "z" / "hello").read_bytes() == b"zstd!\n"
    assert tar_members(saved(store, "zz:1"))[f"blobs/sha256/{hex_of(sha(tar))}"] == tar
    assert rec.layers[0].media_type == oci.OCI_LAYER_ZSTD


def _write_layout(dest: Path, blobs: list[bytes], entries: list[dict[str, Any]]) -> None:
    (dest / "blobs" / "sha256").mkdir(parents=True)
    (dest / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    for b in blobs:
        (dest / "blobs" / "sha256" / hex_of(sha(b))).write_bytes(b)
    (dest / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": entries}))


def test_multi_platform_layout_loads_the_host_entry(store: Store, built_images: Path,
                                                    tmp_path: Path) -> None:
    src = built_images / "busybox"
    index = json.loads((src / "index.json").read_text())
    entry = index["manifests"][0]
    host = oci.host_platform()
    other = "arm64" if host.architecture != "arm64" else "amd64"
    fake = json.dumps({"schemaVersion": 2, "mediaType": oci.OCI_MANIFEST,
                       "config": {"mediaType": oci.OCI_CONFIG, "digest": "sha256:" + "e" * 64, "size": 1},
                       "layers": []}).encode()
    inner = json.dumps({"schemaVersion": 2, "mediaType": oci.OCI_INDEX, "manifests": [
        {"mediaType": oci.OCI_MANIFEST, "digest": sha(fake), "size": len(fake),
         "platform": {"os": "linux", "architecture": other}},
        {"mediaType": oci.OCI_MANIFEST, "digest": entry["digest"], "size": entry["size"],
         "platform": host.to_json()},
    ]}).encode()
    dest = tmp_path / "multi"
    blobs = [p.read_bytes() for p in (src / "blobs" / "sha256").iterdir()] + [fake, inner]
    _write_layout(dest, blobs, [{"mediaType": oci.OCI_INDEX, "digest": sha(inner), "size": len(inner),
                                 "annotations": {oci.ANNOTATION_REF_NAME: "multi:1"}}])
    rec = archive.load(store, dest)[0].record
    assert rec.manifest_digest == entry["digest"]
    assert store.resolve("multi:1").id == rec.id


def test_oci_annotations_naming(store: Store, built_images: Path, tmp_path: Path) -> None:
    src = built_images / "busybox"
    index = json.loads((src / "index.json").read_text())
    entries = []
    for ann in ({oci.ANNOTATION_REF_NAME: "latest"},  # a bare tag names no repository
                {oci.ANNOTATION_DOCKER_NAME: "docker.io/library/full:name", oci.ANNOTATION_REF_NAME: "x"},
                {oci.ANNOTATION_REF_NAME: "reg.example.com/a/b:c"}):
        entries.append({**index["manifests"][0], "annotations": ann})
    dest = tmp_path / "named"
    _write_layout(dest, [p.read_bytes() for p in (src / "blobs" / "sha256").iterdir()], entries)
    loaded = archive.load(store, dest)
    assert [li.names for li in loaded] == [[], ["full:name"], ["reg.example.com/a/b:c"]]


# -- save ----------------------------------------------------------------------------------


def test_save_round_trip(loaded_store: Store, tmp_path: Path) -> None:
    rec = loaded_store.resolve("busybox-edit")
    out = tmp_path / "edit.tar"
    archive.save_to_file(loaded_store, ["busybox-edit"], out)
    assert not list(tmp_path.glob(".edit.tar*"))  # written via a tmp file, renamed at the end
    loaded_store.remove_image("busybox-edit")
    with pytest.raises(ImageNotFound):
        loaded_store.resolve("busybox-edit")
    loaded = archive.load(loaded_store, out)
    assert loaded[0].record.id == rec.id
    assert [layer.diff_id for layer in loaded_store.resolve("busybox-edit").layers] == \
        [layer.diff_id for layer in rec.layers]


def test_save_is_docker_archive_and_oci_layout(loaded_store: Store) -> None:
    m = tar_members(saved(loaded_store, "busybox", "busybox-extra"))
    docker = manifest_of(m)
    assert [d["RepoTags"] for d in docker] == [["busybox:latest"], ["busybox-extra:latest"]]
    base = loaded_store.resolve("busybox").layers[0].diff_id
    base_name = f"blobs/sha256/{hex_of(base)}"
    assert docker[0]["Layers"][0] == docker[1]["Layers"][0] == base_name
    assert sha(m[base_name]) == base
    for d in docker:
        cfg = oci.ImageConfig.parse(m[d["Config"]])
        assert [f"blobs/sha256/{hex_of(x)}" for x in cfg.diff_ids] == d["Layers"]
    assert json.loads(m["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    index = oci.Index.parse(m["index.json"])
    names = [e.annotations[oci.ANNOTATION_DOCKER_NAME] for e in index.manifests]
    assert names == ["docker.io/library/busybox:latest", "docker.io/library/busybox-extra:latest"]
    for e in index.manifests:
        man = oci.Manifest.parse(m[f"blobs/sha256/{hex_of(e.digest)}"])
        assert sha(m[f"blobs/sha256/{hex_of(e.digest)}"]) == e.digest
        for layer in man.layers:
            assert sha(m[f"blobs/sha256/{hex_of(layer.digest)}"]) == layer.digest
            assert len(m[f"blobs/sha256/{hex_of(layer.digest)}"]) == layer.size


def test_save_writes_a_shared_layer_once(loaded_store: Store) -> None:
    data = saved(loaded_store, "busybox", "busybox-extra", "busybox-edit", "busybox")
    base = hex_of(loaded_store.resolve("busybox").layers[0].diff_id)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = tar.getnames()
    assert names.count(f"blobs/sha256/{base}") == 1
    assert len(names) == len(set(names))
    assert len(manifest_of(tar_members(data))) == 3  # busybox named twice: one entry
    # and it loads back, sharing the base
    assert len(archive.load(Store(loaded_store.root.parent / "again"), io.BytesIO(data))) == 3


def test_save_unknown_image(loaded_store: Store, tmp_path: Path) -> None:
    with pytest.raises(ImageNotFound):
        archive.save_to_file(loaded_store, ["busybox", "nosuch"], tmp_path / "x.tar")
    assert list(tmp_path.iterdir()) == [loaded_store.root]


def test_save_refuses_a_corrupt_layer(loaded_store: Store, tmp_path: Path) -> None:
    rec = loaded_store.resolve("busybox-extra")
    blob = loaded_store.blob_path(rec.layers[1].digest)
    import gzip
    blob.write_bytes(gzip.compress(build.layer_tar([build.file("evil", b"x" * 5)])))
    with pytest.raises(ArchiveError, match="corrupt"):
        archive.save_to_file(loaded_store, ["busybox-extra"], tmp_path / "x.tar")
    assert not (tmp_path / "x.tar").exists()
    assert not list(tmp_path.glob(".x.tar*"))


# -- hostile and broken archives ----------------------------------------------------------------


def _hostile_cases() -> list[tuple[str, Callable[[dict[str, bytes]], dict[str, bytes] | bytes], str]]:
    def with_manifest(f: Callable[[list[dict[str, Any]]], Any]) -> Callable[[dict[str, bytes]], dict[str, bytes]]:
        def mutate(m: dict[str, bytes]) -> dict[str, bytes]:
            doc = manifest_of(m)
            new = f(doc)  # a new document, or None when f changed doc in place
            doc = doc if new is None else new
            m["manifest.json"] = json.dumps(doc).encode()
            return m
        return mutate

    def set_layers(doc: list[dict[str, Any]], i: int, v: str) -> None:
        doc[0]["Layers"][i] = v

    def evil_layer(m: dict[str, bytes]) -> dict[str, bytes]:
        """The top layer replaced by one with a ../ member; its diff_id made to match."""
        doc = manifest_of(m)
        evil = tar_bytes({"ok": b"fine", "../../evil": b"owned"})
        cfg = json.loads(m[doc[0]["Config"]])
        cfg["rootfs"]["diff_ids"][1] = sha(evil)
        m[doc[0]["Config"]] = json.dumps(cfg).encode()
        m[doc[0]["Layers"][1]] = evil
        return m

    def wrong_diff_id(m: dict[str, bytes]) -> dict[str, bytes]:
        doc = manifest_of(m)
        cfg = json.loads(m[doc[0]["Config"]])
        cfg["rootfs"]["diff_ids"][1] = sha(b"some other layer")
        m[doc[0]["Config"]] = json.dumps(cfg).encode()
        return m

    def drop(name_of: Callable[[list[dict[str, Any]]], str]) -> Callable[[dict[str, bytes]], dict[str, bytes]]:
        def mutate(m: dict[str, bytes]) -> dict[str, bytes]:
            del m[name_of(manifest_of(m))]
            return m
        return mutate

    def truncated(m: dict[str, bytes]) -> bytes:
        data = tar_bytes(m)
        return data[: len(data) * 2 // 3]

    def truncated_mid_member(m: dict[str, bytes]) -> bytes:
        # manifest.json first, then the layers, cut inside the first layer's data
        order = {"manifest.json": m["manifest.json"], **m}
        data = tar_bytes(order)
        return data[:20000]

    return [
        ("not a tar", lambda m: b"hello, I am not a tar file\n" * 40, "not a tar archive"),
        ("random bytes", lambda m: os.urandom(4096), "tar"),
        ("manifest.json not a list", with_manifest(lambda d: {"Config": "x"}), "list"),
        ("manifest.json empty list", with_manifest(lambda d: []), "non-empty list"),
        ("manifest.json invalid", lambda m: {**m, "manifest.json": b"[{"}, "invalid JSON"),
        ("entry not an object", with_manifest(lambda d: ["x"]), "needs Config"),
        ("layers not a list", with_manifest(lambda d: d[0].update(Layers="x")), "needs Config"),
        ("layer path escapes", with_manifest(lambda d: set_layers(d, 1, "../../etc/passwd")),
         "outside the archive"),
        ("config path escapes", with_manifest(lambda d: d[0].update(Config="../../etc/passwd")),
         "outside the archive"),
        ("absolute config path", with_manifest(lambda d: d[0].update(Config="/etc/passwd")), "missing"),
        ("config missing", drop(lambda d: d[0]["Config"]), "missing"),
        ("layer missing", drop(lambda d: d[0]["Layers"][1]), "missing"),
        ("layer count != diff_ids", with_manifest(lambda d: d[0].update(Layers=d[0]["Layers"][:1])),
         "diff_ids"),
        ("layer name not a string", with_manifest(lambda d: set_layers(d, 1, 5)), "strings"),  # type: ignore[arg-type]
        ("bad RepoTags", with_manifest(lambda d: d[0].update(RepoTags=["BAD:Tag"])), "invalid reference"),
        ("config not a config", lambda m: {**m, manifest_of(m)[0]["Config"]: b'{"rootfs":{}}'}, "rootfs"),
        ("diff_id does not match content", wrong_diff_id, "digest mismatch"),
        ("layer with ../ member", evil_layer, ".."),
        ("truncated tar", truncated, "truncated"),
        ("truncated inside a member", truncated_mid_member, "truncated"),
        ("neither format", lambda m: {"hello.txt": b"hi"}, "neither manifest.json"),
    ]


@pytest.mark.parametrize(("how", "mutate", "msg"), _hostile_cases(), ids=[c[0] for c in _hostile_cases()])
@pytest.mark.parametrize("via", ["file", "stream"])
def test_bad_docker_archive_adds_nothing(base_store: Store, docker_extra: dict[str, bytes],
                                         tmp_path: Path, how: str, mutate: Any, msg: str, via: str) -> None:
    loaded_store = base_store
    result = mutate(dict(docker_extra))
    data = result if isinstance(result, bytes) else tar_bytes(result)
    before = store_snapshot(loaded_store.root)
    src: Path | io.BytesIO
    if via == "file":
        src = tmp_path / "bad.tar"
        src.write_bytes(data)
    else:
        src = io.BytesIO(data)
    with pytest.raises(MinirunError) as ei:
        archive.load(loaded_store, src)
    assert msg in str(ei.value), str(ei.value)
    assert "\n" not in str(ei.value)
    assert store_snapshot(loaded_store.root) == before
    assert not (tmp_path / "evil").exists() and not (loaded_store.root / "evil").exists()


def test_hostile_layer_is_refused_by_the_unpacker(loaded_store: Store, docker_extra: dict[str, bytes]) -> None:
    case = next(c for c in _hostile_cases() if c[0] == "layer with ../ member")
    with pytest.raises(LayerError):
        archive.load(loaded_store, io.BytesIO(tar_bytes(case[1](dict(docker_extra)))))  # type: ignore[arg-type]


def test_empty_stream(store: Store, snapshot: Snap) -> None:
    store.ensure()
    before = snapshot(store.root)
    with pytest.raises(ArchiveError, match="empty"):
        archive.load(store, io.BytesIO(b""))
    assert snapshot(store.root) == before


def test_missing_file(store: Store) -> None:
    with pytest.raises(ArchiveError, match="no such file"):
        archive.load(store, Path("/nonexistent/x.tar"))


def _oci_case(layout: Path, how: str) -> str:
    index = json.loads((layout / "index.json").read_text())
    blobs = layout / "blobs" / "sha256"
    man_path = blobs / hex_of(index["manifests"][0]["digest"])
    man = json.loads(man_path.read_bytes())
    if how == "layer blob != its digest":
        p = blobs / hex_of(man["layers"][1]["digest"])
        p.write_bytes(p.read_bytes()[:-10] + b"0123456789")
        return "digest mismatch"
    if how == "manifest blob != index digest":
        man_path.write_bytes(man_path.read_bytes() + b" ")
        return "digest mismatch"
    if how == "config blob != its digest":
        p = blobs / hex_of(man["config"]["digest"])
        p.write_bytes(p.read_bytes().replace(b'"Cmd"', b'"Cmx"'))
        return "digest mismatch"
    if how == "blob missing":
        (blobs / hex_of(man["layers"][1]["digest"])).unlink()
        return "missing"
    if how == "no oci-layout":
        (layout / "oci-layout").unlink()
        return "oci-layout"
    if how == "legacy schema 1 manifest":
        data = json.dumps({"schemaVersion": 1, "name": "x", "fsLayers": []}).encode()
        (blobs / hex_of(sha(data))).write_bytes(data)
        index["manifests"][0].update(digest=sha(data), size=len(data), mediaType="")
        (layout / "index.json").write_text(json.dumps(index))
        return "unsupported legacy manifest"
    if how == "empty index":
        (layout / "index.json").write_text('{"schemaVersion":2,"manifests":[]}')
        return "lists no images"
    if how == "index digest escapes":
        index["manifests"][0]["digest"] = "sha256:../../../etc/passwd"
        (layout / "index.json").write_text(json.dumps(index))
        return "digest"
    if how == "manifest layer count != diff_ids":
        man["layers"].pop()
        data = json.dumps(man).encode()
        (blobs / hex_of(sha(data))).write_bytes(data)
        index["manifests"][0].update(digest=sha(data), size=len(data))
        (layout / "index.json").write_text(json.dumps(index))
        return "diff_ids"
    raise AssertionError(how)


OCI_CASES = ["layer blob != its digest", "manifest blob != index digest", "config blob != its digest",
             "blob missing", "no oci-layout", "legacy schema 1 manifest", "empty index",
             "index digest escapes", "manifest layer count != diff_ids"]


@pytest.mark.parametrize("how", OCI_CASES)
def test_bad_oci_layout_adds_nothing(loaded_store: Store, built_images: Path, tmp_path: Path,
                                     how: str) -> None:
    layout = tmp_path / "layout"
    shutil.copytree(built_images / "busybox-extra", layout)
    loaded_store.remove_image("busybox-extra")
    msg = _oci_case(layout, how)
    before = store_snapshot(loaded_store.root)
    with pytest.raises(MinirunError) as ei:
        archive.load(loaded_store, layout)
    assert msg in str(ei.value)
    assert store_snapshot(loaded_store.root) == before
    # and as a tar
    tar = tmp_path / "layout.tar"
    with tarfile.open(tar, "w") as t:
        t.add(layout, ".")
    with pytest.raises(MinirunError) as ei:
        archive.load(loaded_store, tar)
    assert msg in str(ei.value)
    assert store_snapshot(loaded_store.root) == before


def test_digest_mismatch_is_typed(loaded_store: Store, built_images: Path, tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    shutil.copytree(built_images / "busybox-extra", layout)
    loaded_store.remove_image("busybox-extra")
    _oci_case(layout, "layer blob != its digest")
    with pytest.raises(DigestMismatch):
        archive.load(loaded_store, layout)


def test_failure_in_a_later_image_keeps_nothing_of_it(store: Store, built_images: Path,
                                                      make_image: Callable[..., Path]) -> None:
    """Two images in one docker-archive, the second broken: the first stays loaded (its
    record was written), the second leaves nothing."""
    good = make_image("good:1", [{"g": b"good"}])
    archive.load(store, good)
    two = tar_members(saved(store, "good:1"))
    store.remove_image("good:1")
    doc = manifest_of(two)
    doc.append({"Config": doc[0]["Config"], "RepoTags": ["bad:1"], "Layers": ["nope.tar"]})
    two["manifest.json"] = json.dumps(doc).encode()
    with pytest.raises(ArchiveError, match="nope.tar"):
        archive.load(store, io.BytesIO(tar_bytes(two)))
    assert [r.repo_tags for r in store.images()] == [["docker.io/library/good:1"]]
    with pytest.raises(ImageNotFound):
        store.resolve("bad:1")
    assert list(store.tmp.iterdir()) == []


def test_layout_helper_writes_shared_blobs_once(tmp_path: Path) -> None:
    base = build.Layer(build.layer_tar([build.file("a", b"1")]), "a")
    imgs = [build.image(f"i{i}:1", [base], {}) for i in range(2)]
    make_layout(tmp_path / "l", imgs)
    index = json.loads((tmp_path / "l" / "index.json").read_text())
    assert len(index["manifests"]) == 2
    assert len(list((tmp_path / "l" / "blobs" / "sha256").iterdir())) == 3  # layer, config, manifest


def test_docker_archive_reuses_the_stored_blob_of_an_existing_layer(
        loaded_store: Store, docker_extra: dict[str, bytes], tmp_path: Path) -> None:
    """busybox came from an OCI layout (gzip blob); loading busybox-extra from a
    docker-archive (uncompressed layers) must not store the base a second time."""
    s = loaded_store
    s.remove_image("busybox-extra")
    base = s.resolve("busybox").layers[0]
    blobs_before = {p.name for p in s.blobs.iterdir()}
    rec = archive.load(s, io.BytesIO(tar_bytes(docker_extra)))[0].record
    assert rec.layers[0].digest == base.digest  # the gzip blob already stored
    new = {p.name for p in s.blobs.iterdir()} - blobs_before
    assert hex_of(base.diff_id) not in new
    assert len(new) == 3  # top layer, config, manifest
    # and it still saves and loads back identically
    again = Store(tmp_path / "again")
    assert archive.load(again, io.BytesIO(saved(s, "busybox-extra")))[0].record.id == rec.id


@pytest.mark.parametrize("layer_name", ["../../etc/passwd", "nosuch.tar"])
def test_existing_layer_path_is_still_checked(loaded_store: Store, docker_extra: dict[str, bytes],
                                              layer_name: str) -> None:
    loaded_store.remove_image("busybox-extra")
    m = manifest_of(docker_extra)
    m[0]["Layers"][0] = layer_name  # the base layer, which the store already has
    docker_extra["manifest.json"] = json.dumps(m).encode()
    before = store_snapshot(loaded_store.root)
    with pytest.raises(ArchiveError):
        archive.load(loaded_store, io.BytesIO(tar_bytes(docker_extra)))
    assert store_snapshot(loaded_store.root) == before


def _docker_dir(tmp_path: Path, entry: dict[str, Any]) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    (src / "manifest.json").write_text(json.dumps([entry]))
    (src / "config.json").write_text(json.dumps({"rootfs": {"type": "layers", "diff_ids": []}}))
    return src


@pytest.mark.parametrize(("name", "match"), [
    ("a\0b", "NUL byte"),
    ("a" * 300, "cannot be read"),  # a component longer than NAME_MAX: ENAMETOOLONG
    ("x\ny", "missing from"),
])  # fmt: skip
def test_docker_archive_dir_bad_member_names(store: Store, tmp_path: Path, name: str, match: str) -> None:
    src = _docker_dir(tmp_path, {"Config": name, "Layers": []})
    with pytest.raises(ArchiveError, match=match) as ei:
        archive.load(store, src)
    assert "\n" not in str(ei.value)


@pytest.mark.parametrize("tags", [1, 2.5, True, "a:1", {"a": 1}, False])
def test_docker_archive_repotags_must_be_a_list(store: Store, tmp_path: Path, tags: Any) -> None:
    src = _docker_dir(tmp_path, {"Config": "config.json", "Layers": [], "RepoTags": tags})
    with pytest.raises(ArchiveError, match="RepoTags must be a list of strings"):
        archive.load(store, src)
    assert store.images() == []


def test_docker_archive_null_repotags_loads_by_id(store: Store, tmp_path: Path) -> None:
    src = _docker_dir(tmp_path, {"Config": "config.json", "Layers": [], "RepoTags": None})
    assert [li.names for li in archive.load(store, src)] == [[]]
