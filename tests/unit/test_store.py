"""The content-addressed store: verified blobs, layers unpacked once, atomic metadata,
tmp sweeping, locking between processes, rmi's reference counting."""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from minirun.errors import DigestMismatch, ImageInUse, ImageNotFound, LayerError, StoreError
from minirun.image import archive, build
from minirun.image import reference as refs
from minirun.image.store import Store, atomic_write, hex_of
from tests.conftest import MINIRUN, load_image_recipes, make_layout

Snap = Callable[[Path], dict[str, set[str]]]


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_dirs(store: Store) -> list[Path]:
    return sorted(p for p in store.layers.iterdir() if p.name != "l")


def assert_consistent(store: Store) -> None:
    """Every layer dir is complete, every link resolves, every image's layers and blobs
    are there."""
    for p in layer_dirs(store):
        assert (p / "layer.json").is_file(), f"half layer dir {p}"
        assert (p / "diff").is_dir()
    for link in store.links.iterdir():
        assert link.resolve().is_dir(), f"dangling link {link}"
    for rec in store.images():
        assert store.has_blob(rec.id) and store.has_blob(rec.manifest_digest)
        for layer in rec.layers:
            assert store.has_layer(layer.diff_id)
            assert store.has_blob(layer.digest)
            assert (store.links / layer.link).resolve() == store.layer_dir(layer.diff_id).resolve()


# -- blobs ----------------------------------------------------------------------------------


def test_put_blob_verifies(store: Store) -> None:
    data = b"hello blob"
    assert store.put_blob(data, sha(data)) == sha(data)
    assert store.read_blob(sha(data)) == data
    assert store.put_blob(data) == sha(data)  # idempotent
    assert list(store.tmp.iterdir()) == []


def test_put_blob_wrong_digest_stores_nothing(store: Store) -> None:
    store.ensure()
    wrong = sha(b"something else")
    with pytest.raises(DigestMismatch) as ei:
        store.put_blob(b"data", wrong, "my blob")
    assert "my blob" in str(ei.value) and wrong in str(ei.value) and sha(b"data") in str(ei.value)
    assert list(store.blobs.iterdir()) == []
    assert list(store.tmp.iterdir()) == []


def test_put_blob_stream(store: Store) -> None:
    data = os.urandom(3 << 20)  # more than one read chunk
    assert store.put_blob_stream(io.BytesIO(data), sha(data), len(data)) == sha(data)
    assert store.blob_path(sha(data)).read_bytes() == data
    assert list(store.tmp.iterdir()) == []


@pytest.mark.parametrize(("expected", "size"), [
    (sha(b"other"), None),
    (None, 5),
    (sha(b"x" * 100), 99),
])
def test_put_blob_stream_mismatch_stores_nothing(store: Store, expected: str | None,
                                                 size: int | None) -> None:
    with pytest.raises(DigestMismatch):
        store.put_blob_stream(io.BytesIO(b"x" * 100), expected, size)
    assert list(store.blobs.iterdir()) == []
    assert list(store.tmp.iterdir()) == []


def test_read_missing_blob(store: Store) -> None:
    with pytest.raises(StoreError, match="missing"):
        store.read_blob(sha(b"nothing"))


# -- layers ---------------------------------------------------------------------------------


def _layer_blob(tmp_path: Path, files: dict[str, bytes]) -> tuple[Path, str]:
    layer = build.Layer(build.layer_tar(build.file(p, d) for p, d in files.items()), "test")
    blob = tmp_path / "layer.tar.gz"
    blob.write_bytes(layer.blob)
    return blob, layer.diff_id


def test_add_layer_once(store: Store, tmp_path: Path) -> None:
    blob, diff_id = _layer_blob(tmp_path, {"etc/hello": b"hi\n"})
    info, new = store.add_layer(blob, diff_id)
    assert new is True
    assert info["diff_id"] == diff_id and info["size"] > 0
    path = store.layer_path(diff_id)
    assert path.name == hex_of(diff_id)
    assert (store.layer_dir(diff_id) / "etc" / "hello").read_bytes() == b"hi\n"
    assert json.loads((path / "layer.json").read_text()) == info
    link = store.links / info["link"]
    assert link.is_symlink() and link.resolve() == store.layer_dir(diff_id).resolve()
    before = (path.stat().st_ino, path.stat().st_mtime_ns,
              store.layer_dir(diff_id).stat().st_ino, (path / "layer.json").stat().st_mtime_ns)

    info2, new2 = store.add_layer(blob, diff_id)
    assert new2 is False and info2 == info
    after = (path.stat().st_ino, path.stat().st_mtime_ns,
             store.layer_dir(diff_id).stat().st_ino, (path / "layer.json").stat().st_mtime_ns)
    assert after == before  # not unpacked again
    assert len(layer_dirs(store)) == 1 and len(list(store.links.iterdir())) == 1
    assert list(store.tmp.iterdir()) == []


def test_add_layer_wrong_diff_id_keeps_nothing(store: Store, tmp_path: Path) -> None:
    blob, diff_id = _layer_blob(tmp_path, {"a": b"1"})
    wrong = sha(b"not this layer")
    with pytest.raises(DigestMismatch) as ei:
        store.add_layer(blob, wrong)
    assert wrong in str(ei.value) and diff_id in str(ei.value)
    assert layer_dirs(store) == []
    assert list(store.links.iterdir()) == []
    assert list(store.tmp.iterdir()) == []
    assert not store.has_layer(wrong)


def test_add_layer_hostile_tar_keeps_nothing(store: Store, tmp_path: Path) -> None:
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        ti = tarfile.TarInfo("../escape")
        ti.size = 3
        tar.addfile(ti, io.BytesIO(b"bad"))
    blob = tmp_path / "evil.tar"
    blob.write_bytes(buf.getvalue())
    with pytest.raises(LayerError):
        store.add_layer(blob, sha(buf.getvalue()))
    assert layer_dirs(store) == [] and list(store.tmp.iterdir()) == []
    assert not (store.root / "escape").exists() and not (store.layers / "escape").exists()


def test_add_layer_replaces_a_half_removed_dir(store: Store, tmp_path: Path) -> None:
    blob, diff_id = _layer_blob(tmp_path, {"f": b"x"})
    store.ensure()
    half = store.layer_path(diff_id)
    (half / "diff" / "junk").mkdir(parents=True)  # a crash mid-delete: no layer.json
    assert not store.has_layer(diff_id)
    _, new = store.add_layer(blob, diff_id)
    assert new and (store.layer_dir(diff_id) / "f").is_file()
    assert not (store.layer_dir(diff_id) / "junk").exists()


# -- tmp and atomic writes -----------------------------------------------------------------


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_tmp_sweep_removes_dead_writers_only(store_root: Path) -> None:
    tmp = store_root / "tmp"
    tmp.mkdir()
    dead = _dead_pid()
    (tmp / f"{dead}-abc.blob").write_bytes(b"partial")
    (tmp / f"{dead}-def.layer" / "diff" / "x").mkdir(parents=True)
    (tmp / f"{dead}-1234.repositories.json").write_text("{")
    alive = [f"{os.getpid()}-mine.blob", "1-init.blob", "notapid"]
    for name in alive:
        (tmp / name).write_bytes(b"")
    Store(store_root).ensure()
    assert sorted(p.name for p in tmp.iterdir()) == sorted(alive)


def test_atomic_write_temp_files_are_sweepable(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer killed between write and rename leaves a tmp file named after its pid."""
    store.ensure()
    target = store.root / "repositories.json"
    seen: list[str] = []
    real_replace = os.replace

    def spy(src: str, dst: str) -> None:
        seen.append(Path(src).name)
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    atomic_write(target, b"{}", store.tmp)
    monkeypatch.undo()
    assert target.read_bytes() == b"{}"
    assert seen and seen[0].split("-", 1)[0] == str(os.getpid())
    assert list(store.tmp.iterdir()) == []


# -- images, names, rmi ----------------------------------------------------------------------


def test_loaded_store(loaded_store: Store) -> None:
    recs = loaded_store.images()
    assert sorted(t for r in recs for t in r.repo_tags) == [
        "docker.io/library/busybox-edit:latest", "docker.io/library/busybox-extra:latest",
        "docker.io/library/busybox:latest"]
    assert len(layer_dirs(loaded_store)) == 3  # base shared by all three + 2 small layers
    base = loaded_store.resolve("busybox").layers[0].diff_id
    assert all(r.layers[0].diff_id == base for r in recs)
    assert loaded_store.layer_users()[base] == 3
    assert_consistent(loaded_store)


def test_resolve(loaded_store: Store) -> None:
    rec = loaded_store.resolve("busybox")
    assert rec.id.startswith("sha256:") and len(rec.id) == 71
    assert loaded_store.resolve("busybox:latest").id == rec.id
    assert loaded_store.resolve("docker.io/library/busybox:latest").id == rec.id
    assert loaded_store.resolve(rec.id).id == rec.id
    assert loaded_store.resolve(hex_of(rec.id)).id == rec.id
    assert loaded_store.resolve(hex_of(rec.id)[:12]).id == rec.id
    assert rec.repo_tags == ["docker.io/library/busybox:latest"]
    for bad in ("nosuch", "busybox:nosuch", "BAD:Ref", "sha256:" + "0" * 64, "0000"):
        with pytest.raises(ImageNotFound):
            loaded_store.resolve(bad)


def test_tag_and_untag_keeps_image(loaded_store: Store) -> None:
    rec = loaded_store.resolve("busybox")
    loaded_store.tag("busybox", refs.parse("example.com/my/box:1"))
    assert loaded_store.resolve("example.com/my/box:1").id == rec.id
    out = loaded_store.remove_image("example.com/my/box:1")
    assert [(r.action, r.what) for r in out] == [("Untagged", "example.com/my/box:1")]
    assert loaded_store.resolve("busybox").id == rec.id


def test_rmi_layer_goes_only_with_its_last_image(loaded_store: Store) -> None:
    s = loaded_store
    base = s.resolve("busybox").layers[0].diff_id
    extra = s.resolve("busybox-extra")
    out = s.remove_image("busybox-extra")
    assert ("Untagged", "busybox-extra:latest") in [(r.action, r.what) for r in out]
    assert ("Deleted", extra.id) in [(r.action, r.what) for r in out]
    assert ("Deleted", extra.layers[1].diff_id) in [(r.action, r.what) for r in out]
    assert s.has_layer(base) and not s.has_layer(extra.layers[1].diff_id)
    assert not s.has_blob(extra.id) and not s.has_blob(extra.layers[1].digest)
    assert s.has_blob(s.resolve("busybox").layers[0].digest)
    assert_consistent(s)

    s.remove_image("busybox")
    assert s.has_layer(base)  # busybox-edit still uses it
    s.remove_image("busybox-edit")
    assert not s.has_layer(base)
    assert layer_dirs(s) == [] and list(s.links.iterdir()) == []
    assert list(s.blobs.iterdir()) == [] and list(s.images_dir.iterdir()) == []
    assert list(s.tmp.iterdir()) == []


def test_rmi_by_id_with_two_tags_needs_force(loaded_store: Store) -> None:
    s = loaded_store
    rec = s.resolve("busybox")
    s.tag("busybox", refs.parse("other:2"))
    with pytest.raises(ImageInUse, match="must be forced"):
        s.remove_image(hex_of(rec.id)[:12])
    assert s.resolve("busybox").id == rec.id
    out = s.remove_image("other:2")  # by name: untag only
    assert [(r.action, r.what) for r in out] == [("Untagged", "other:2")]
    s.tag("busybox", refs.parse("other:2"))
    out = s.remove_image(rec.id, force=True)
    assert {r.what for r in out if r.action == "Untagged"} == {"busybox:latest", "other:2"}
    with pytest.raises(ImageNotFound):
        s.resolve(rec.id)


def test_rmi_unknown(loaded_store: Store) -> None:
    with pytest.raises(ImageNotFound, match="nosuch"):
        loaded_store.remove_image("nosuch")


def test_rmi_refused_while_a_container_uses_it(loaded_store: Store) -> None:
    rec = loaded_store.resolve("busybox")
    with loaded_store.lock():
        loaded_store.pin("c" * 64, rec.id)
    with pytest.raises(ImageInUse, match="cccccccccccc"):
        loaded_store.remove_image("busybox")
    assert loaded_store.resolve("busybox").id == rec.id
    loaded_store.unpin("c" * 64)
    loaded_store.remove_image("busybox")


def test_add_image_config_digest_mismatch_writes_nothing(store: Store, make_image: Callable[..., Path],
                                                         snapshot: Snap) -> None:
    layout = make_image("x:1", [{"a": b"1"}])
    index = json.loads((layout / "index.json").read_text())
    manifest = (layout / "blobs/sha256" / hex_of(index["manifests"][0]["digest"])).read_bytes()
    store.ensure()
    before = snapshot(store.root)
    with pytest.raises(DigestMismatch, match="image config"):
        store.add_image(manifest, b'{"rootfs":{"type":"layers","diff_ids":["sha256:' + b"1" * 64 + b'"]}}')
    assert snapshot(store.root) == before


def test_images_newest_first(store: Store, make_image: Callable[..., Path]) -> None:
    for i in range(3):
        archive.load(store, make_image(f"img{i}:latest", [{"f": str(i).encode()}]))
        time.sleep(0.01)
    assert [r.repo_tags[0] for r in store.images()] == [
        f"docker.io/library/img{i}:latest" for i in (2, 1, 0)]


def test_reload_keeps_added_time(loaded_store: Store, built_images: Path) -> None:
    added = loaded_store.resolve("busybox").added
    archive.load(loaded_store, built_images / "busybox")
    assert loaded_store.resolve("busybox").added == added


# -- disk: a shared base is stored once ------------------------------------------------------


def _du(path: Path) -> int:
    return int(subprocess.run(["du", "-s", "-B1", str(path)], capture_output=True, text=True,
                              check=True).stdout.split()[0])


def test_shared_base_is_stored_once(store: Store, built_images: Path,
                                    make_image: Callable[..., Path]) -> None:
    recipes = load_image_recipes()
    base = recipes.busybox_layer(recipes.find_busybox())
    n = 5
    for i in range(n):
        small = build.Layer(build.layer_tar([build.file(f"app{i}/data", os.urandom(2000))]), f"app{i}")
        archive.load(store, make_image(f"app{i}:1", [base, small]))
    assert len(store.images()) == n
    assert len(layer_dirs(store)) == n + 1
    base_dir = store.layer_path(base.diff_id)
    one_base = _du(base_dir) + len(base.blob)
    total = _du(store.root)
    # one copy of the base (dir + blob) plus n small layers and metadata, never n bases
    assert total < one_base + n * 64 * 1024 + 256 * 1024, (total, one_base)
    assert total < 2 * one_base


# -- several processes at once ---------------------------------------------------------------


def _load_in_child(root: str, src: str, barrier: multiprocessing.synchronize.Barrier) -> None:
    barrier.wait()
    archive.load(Store(root), Path(src))


def test_concurrent_loads_of_the_same_archive(store_root: Path, built_images: Path,
                                              tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    n = 4
    barrier = ctx.Barrier(n)
    procs = [ctx.Process(target=_load_in_child, args=(str(store_root), str(built_images / name), barrier))
             for name in ("busybox", "busybox", "busybox-extra", "busybox-edit")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert [p.exitcode for p in procs] == [0] * n
    s = Store(store_root)
    assert len(s.images()) == 3
    assert len(layer_dirs(s)) == 3  # the shared base exactly once
    assert len(list(s.links.iterdir())) == 3
    assert list(s.tmp.iterdir()) == []
    assert_consistent(s)


# -- kill -9 in the middle of a load ----------------------------------------------------------


@pytest.fixture(scope="module")
def big_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A docker-archive with 4 layers of 4 MB random data each."""
    out = tmp_path_factory.mktemp("big")
    layers = [build.Layer(build.layer_tar([build.file(f"data{i}/blob", os.urandom(4 << 20))]), f"l{i}")
              for i in range(4)]
    img = build.image("big:1", layers, {"Cmd": ["sh"]})
    root = out / "store"
    s = Store(root)
    archive.load(s, make_layout(out / "layout", [img]))
    tar = out / "big.tar"
    archive.save_to_file(s, ["big:1"], tar)
    return tar


def _env(root: Path) -> dict[str, str]:
    return {**os.environ, "MINIRUN_ROOT": str(root)}


@pytest.mark.root
@pytest.mark.parametrize("when", ["blob", "layer"])
def test_kill_9_during_load_leaves_a_consistent_store(store_root: Path, big_archive: Path,
                                                      loaded_store: Store, when: str) -> None:
    """SIGKILL ``minirun load`` once it has started writing (a blob in tmp, or after the
    first layer is in place); the store must still work and a re-load must succeed."""
    env = _env(store_root)
    before = len(layer_dirs(loaded_store))
    p = subprocess.Popen([str(MINIRUN), "load", "-i", str(big_archive)], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    try:
        while time.monotonic() < deadline and p.poll() is None:
            tmp_names = [e.name for e in loaded_store.tmp.iterdir()]
            if when == "blob" and any(n.endswith((".blob", ".layer")) for n in tmp_names):
                break
            if when == "layer" and len(layer_dirs(loaded_store)) > before:
                break
            time.sleep(0.0005)
        killed_mid_way = p.poll() is None
        p.send_signal(signal.SIGKILL)
    finally:
        p.wait()
    assert killed_mid_way, "the load finished before it could be killed"
    assert p.returncode == -signal.SIGKILL

    s = Store(store_root)
    for d in layer_dirs(s):
        assert (d / "layer.json").is_file(), f"half layer {d}"
    r = subprocess.run([str(MINIRUN), "images"], env=env, capture_output=True, text=True)
    assert r.returncode == 0 and "busybox" in r.stdout and "Traceback" not in r.stderr
    assert "big" not in r.stdout  # the image was never recorded

    r = subprocess.run([str(MINIRUN), "load", "-i", str(big_archive)], env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("Loaded image: big:1")
    assert list(s.tmp.iterdir()) == []  # the dead loader's partial files were swept
    assert len(layer_dirs(s)) == before + 4
    assert_consistent(s)


def test_store_tolerates_missing_root(tmp_path: Path) -> None:
    s = Store(tmp_path / "nothing-here")
    assert s.images() == []
    with pytest.raises(ImageNotFound):
        s.resolve("busybox")
    assert not (tmp_path / "nothing-here").exists()  # reading does not create the store


def test_unwritable_root_is_a_store_error(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root can write anywhere")
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    with pytest.raises(StoreError, match="MINIRUN_ROOT"):
        Store(ro / "store").ensure()



def test_a_name_wins_over_an_id_prefix(loaded_store: Store) -> None:
    """As in Docker: an image *named* like another image's ID prefix is found by name, and
    ``rmi NAME`` untags it instead of deleting the other image."""
    s = loaded_store
    edit = s.resolve("busybox-edit")
    prefix = hex_of(edit.id)[:12]
    s.tag("busybox", refs.parse(prefix))
    assert s.resolve(prefix).id == s.resolve("busybox").id
    assert s.resolve(f"{prefix}:latest").id == s.resolve("busybox").id
    assert s.resolve(hex_of(edit.id)[:11]).id == edit.id  # no such name: the prefix
    out = s.remove_image(prefix)
    assert [(r.action, r.what) for r in out] == [("Untagged", f"{prefix}:latest")]
    assert s.resolve("busybox-edit").id == edit.id
    assert s.resolve(prefix).id == edit.id  # the name is gone; the prefix finds edit again


def test_ambiguous_id_prefix(loaded_store: Store) -> None:
    rec = loaded_store.resolve("busybox")
    data = loaded_store._image_path(rec.id).read_bytes()
    for tail in ("1", "2"):  # two records whose IDs share the prefix abcd
        (loaded_store.images_dir / f"abcd{tail * 60}.json").write_bytes(data)
    with pytest.raises(StoreError, match="ambiguous"):
        loaded_store.resolve("abcd")
    assert loaded_store.resolve("abcd1").id == rec.id  # the record's own id
    with pytest.raises(ImageNotFound):
        loaded_store.resolve("abc")  # fewer than 4 hex digits is not an ID prefix


def test_a_container_of_a_removed_image_is_not_registered(tmp_path: Path) -> None:
    """rmi between resolving the image and registering the container: register refuses."""
    from minirun.container.records import ContainerRecord, Containers
    from minirun.errors import ImageNotFound

    store = Store(tmp_path / "store")
    containers = Containers(store)
    cid = containers.new_id()
    rec = ContainerRecord(id=cid, name="", image="gone", image_id="sha256:" + "0" * 64, args=["true"],
                          created=0.0, lowerdirs=[], diff_ids=[])
    with pytest.raises(ImageNotFound):
        containers.register(rec, None)
    assert not (containers.dir(cid) / "container.json").exists()
