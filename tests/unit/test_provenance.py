"""Provenance: per-layer indexes (built from layer dirs, cached atomically), ``blame``
lookups over a stack as overlayfs would merge it, and per-layer statistics with wasted
bytes. Most tests use indexes made in memory; those that need real whiteouts (char
devices 0:0) or the trusted opaque xattr need root."""

from __future__ import annotations

import json
import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from minirun.image import archive
from minirun.image.provenance import (
    OPAQUE_XATTR,
    Entry,
    LayerIndex,
    NoSuchPath,
    StackLayer,
    blame,
    image_stack,
    layer_index,
    layer_stats,
    scan_dir,
)
from minirun.image.store import Store

# -- helpers ------------------------------------------------------------------------------------


def f(path: str, data: str = "", mode: int = 0o644) -> Entry:
    return Entry(path, "f", len(data), mode)


def d(path: str, opaque: bool = False) -> Entry:
    return Entry(path, "o" if opaque else "d", 0, 0o755)


def ln(path: str, target: str) -> Entry:
    return Entry(path, "l", len(target), 0o777, target)


def wh(path: str) -> Entry:
    return Entry(path, "w")


def make_stack(*layers: list[Entry]) -> list[StackLayer]:
    return [StackLayer(str(n), f"sha256:{n:064x}", f"STEP {n}", 1, LayerIndex.from_entries(es))
            for n, es in enumerate(layers)]


BASE = [d("bin"), f("bin/busybox", "x" * 100, 0o755), ln("bin/sh", "busybox"),
        d("etc"), f("etc/passwd", "root:x:0:0\n"), f("etc/issue", "hello\n"),
        d("home"), f("home/README", "readme\n"), d("home/old"), f("home/old/a", "aaaa"),
        d("usr"), d("usr/share"), d("usr/share/doc"), f("usr/share/doc/README", "doc\n")]
EDIT = [d("etc"), wh("etc/issue"), d("home", opaque=True), d("home/app"), f("home/app/NEW", "new\n"),
        d("usr"), d("usr/share"), wh("usr/share/doc")]


# -- blame on in-memory indexes ------------------------------------------------------------------


def test_blame_present_in_the_bottom_layer() -> None:
    stack = make_stack(BASE, EDIT)
    b = blame(stack, "/etc/passwd")
    assert (b.status, b.layer.label, b.kind, b.size, b.mode) == ("present", "0", "file", 11, 0o644)
    assert b.layer.created_by == "STEP 0" and b.shadows == ()


def test_blame_symlink_is_reported_itself() -> None:
    b = blame(make_stack(BASE), "/bin/sh")
    assert (b.kind, b.target, b.layer.label, b.size) == ("symlink", "busybox", "0", 7)


def test_blame_whiteout_names_deleter_and_origin() -> None:
    b = blame(make_stack(BASE, EDIT), "/etc/issue")
    assert (b.status, b.reason, b.layer.label, b.at) == ("deleted", "whiteout", "1", "/etc/issue")
    assert b.origin is not None and b.origin.label == "0"
    assert b.size == 6  # the deleted version's


def test_blame_inside_deleted_dir() -> None:
    b = blame(make_stack(BASE, EDIT), "/usr/share/doc/README")
    assert (b.status, b.reason, b.at, b.layer.label) == ("deleted", "dir deleted", "/usr/share/doc", "1")
    assert b.origin is not None and b.origin.label == "0"


def test_blame_hidden_by_opaque_dir() -> None:
    stack = make_stack(BASE, EDIT)
    for path in ("/home/README", "/home/old/a", "/home/old"):
        b = blame(stack, path)
        assert (b.status, b.reason, b.at, b.layer.label) == ("hidden", "opaque dir", "/home", "1"), path
        assert b.origin is not None and b.origin.label == "0"
    new = blame(stack, "/home/app/NEW")
    assert (new.status, new.layer.label, new.shadows) == ("present", "1", ())
    home = blame(stack, "/home")
    assert home.opaque and [s.label for s in home.shadows] == ["0"]


def test_blame_readded_under_opaque_dir_shadows_lower() -> None:
    stack = make_stack(BASE, [d("home", opaque=True), f("home/README", "again\n")])
    b = blame(stack, "/home/README")
    assert b.status == "present" and b.layer.label == "1" and [s.label for s in b.shadows] == ["0"]


def test_blame_shadows_topmost_first_and_stop_at_a_whiteout() -> None:
    stack = make_stack([d("etc"), f("etc/x", "1")], [d("etc"), wh("etc/x")], [d("etc"), f("etc/x", "333")],
                       [d("etc"), f("etc/x", "4444")])
    b = blame(stack, "/etc/x")
    assert b.layer.label == "3" and [s.label for s in b.shadows] == ["2"]  # layer 0's died in 1
    assert b.size == 4


def test_blame_names_the_layer_that_first_cut_it_off() -> None:
    stack = make_stack([d("o"), f("o/old", "1"), d("e"), f("e/x", "22")],
                       [d("o", opaque=True), d("e"), wh("e/x")],
                       [d("o", opaque=True), f("o/new", "n"), d("e"), wh("e/x")],  # again: no news
                       [d("o", opaque=True)])
    hidden = blame(stack, "/o/old")
    assert (hidden.status, hidden.layer.label, hidden.origin.label if hidden.origin else "") == \
        ("hidden", "1", "0")
    deleted = blame(stack, "/e/x")
    assert (deleted.status, deleted.layer.label, deleted.size) == ("deleted", "1", 2)
    assert blame(stack, "/o/new").reason == "opaque dir"  # hidden by layer 3's opaque /o
    assert blame(stack, "/o/new").layer.label == "3"


def test_blame_dir_replaced_by_a_file() -> None:
    stack = make_stack([d("a"), f("a/b", "bb")], [f("a", "now a file")], [d("a")])
    b = blame(stack, "/a/b")
    assert (b.status, b.reason, b.at, b.layer.label) == ("hidden", "dir replaced", "/a", "1")
    assert b.origin is not None and b.origin.label == "0"


def test_blame_follows_parent_symlinks_inside_the_stack() -> None:
    stack = make_stack([ln("bin", "usr/bin"), d("usr"), d("usr/bin"), f("usr/bin/ls", "ls"),
                        d("opt"), ln("opt/abs", "/usr"), ln("opt/up", "../../../usr/bin"),
                        ln("loop", "loop")])
    b = blame(stack, "/bin/ls")
    assert b.resolved == "/usr/bin/ls" and b.via == ("/bin -> usr/bin",) and b.kind == "file"
    assert blame(stack, "/opt/abs/bin/ls").resolved == "/usr/bin/ls"
    assert blame(stack, "/opt/up/ls").resolved == "/usr/bin/ls"  # .. stops at the image root
    assert blame(stack, "/bin").kind == "symlink"  # the last component is not followed
    with pytest.raises(NoSuchPath, match="too many levels"):
        blame(stack, "/loop/x")


def test_blame_missing_and_not_a_dir() -> None:
    stack = make_stack(BASE, EDIT)
    with pytest.raises(NoSuchPath, match="no such file"):
        blame(stack, "/nosuch")
    with pytest.raises(NoSuchPath, match="no such file"):
        blame(stack, "/home/never")  # under an opaque dir, but no layer had it
    with pytest.raises(NoSuchPath, match="not a directory"):
        blame(stack, "/etc/passwd/x")
    with pytest.raises(NoSuchPath, match="no such file"):
        blame(make_stack([d("etc"), wh("etc/ghost")]), "/etc/ghost")  # whiteout of nothing


def test_blame_normalises_and_root() -> None:
    stack = make_stack(BASE, EDIT)
    assert blame(stack, "etc//./passwd").path == "/etc/passwd"
    assert blame(stack, "/etc/../etc/passwd").resolved == "/etc/passwd"
    root = blame(stack, "/")
    assert root.kind == "dir" and root.layer.label == "1" and [s.label for s in root.shadows] == ["0"]


# -- layer statistics ----------------------------------------------------------------------------


def test_layer_stats_counts_and_waste() -> None:
    report = layer_stats(make_stack(BASE, EDIT))
    base, edit = report.layers
    assert (base.added, base.changed, base.deleted) == (len(BASE), 0, 0)
    # changed: etc, home (opaque), usr, usr/share; added: home/app, home/app/NEW
    assert (edit.added, edit.changed) == (2, 4)
    # deleted: etc/issue; home/README, home/old, home/old/a (opaque); usr/share/doc + README
    assert (edit.deleted, edit.hidden, edit.whiteouts, edit.opaque_dirs) == (6, 3, 2, 1)
    wasted = {w.path: (w.layer, w.size, w.by) for w in report.waste}
    assert wasted == {"/etc/issue": ("0", 6, "1"), "/home/README": ("0", 7, "1"),
                      "/home/old/a": ("0", 4, "1"), "/usr/share/doc/README": ("0", 4, "1")}
    assert report.wasted_bytes == 21 == edit.wasted
    assert report.total_size == base.size + edit.size
    assert report.efficiency == pytest.approx(1 - 21 / report.total_size)


def test_layer_stats_overwrites_and_replacements() -> None:
    report = layer_stats(make_stack(
        [d("a"), f("a/x", "12345"), f("a/y", "12"), f("f", "123")],
        [d("a"), f("a/x", "1")],  # overwrite: 5 bytes wasted
        [f("a", "file"), d("f")],  # a dir replaced by a file (hides a/x, a/y); a file by a dir
    ))
    _, one, two = report.layers
    assert (one.added, one.changed, one.deleted, one.wasted) == (0, 2, 0, 5)
    assert (two.added, two.changed, two.deleted) == (0, 2, 2)
    assert two.wasted == 1 + 2 + 3  # a/x (layer 1's), a/y, f
    assert report.wasted_bytes == 11


def test_layer_stats_empty() -> None:
    report = layer_stats([])
    assert report.total_size == 0 and report.efficiency == 1.0


# -- indexes from real dirs ----------------------------------------------------------------------


def _tree(root: Path) -> None:
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("root\n")
    os.chmod(root / "etc" / "passwd", 0o600)
    (root / "bin").mkdir()
    (root / "bin" / "sh").symlink_to("busybox")
    (root / "escape").symlink_to("/")  # must never be walked into
    (root / "fifo").parent.mkdir(exist_ok=True)
    os.mkfifo(root / "fifo")


def test_scan_dir_kinds_sizes_modes(tmp_path: Path) -> None:
    _tree(tmp_path / "l")
    idx = scan_dir(str(tmp_path / "l"))
    assert idx.paths == sorted(idx.paths)
    got = {e.path: (e.kind, e.size, e.mode, e.target) for e in idx.entries()}
    assert got == {
        "bin": ("d", 0, 0o755, ""), "bin/sh": ("l", 7, 0o777, "busybox"),
        "escape": ("l", 1, 0o777, "/"), "etc": ("d", 0, 0o755, ""),
        "etc/passwd": ("f", 5, 0o600, ""), "fifo": ("p", 0, 0o644 & ~_umask(), ""),
    }


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def test_index_json_round_trip() -> None:
    idx = LayerIndex.from_entries(BASE + [ln("odd\udcff", "t")])
    back = LayerIndex.from_json(json.loads(json.dumps(idx.to_json("sha256:x"))), "sha256:x")
    assert back is not None and list(back.entries()) == list(idx.entries())
    assert LayerIndex.from_json(idx.to_json("sha256:x"), "sha256:other") is None
    assert LayerIndex.from_json({"version": 99}, "") is None


@pytest.fixture
def one_layer_store(store: Store, make_image: Callable[..., Path]) -> Store:
    archive.load(store, make_image("app:1", [{"etc/app.conf": b"a=1\n", "bin/app": b"#!/bin/sh\n"},
                                             {"etc/app.conf": b"a=2, longer\n"}]))
    return store


def test_layer_index_is_cached_once(one_layer_store: Store) -> None:
    store = one_layer_store
    rec = store.resolve("app:1")
    diff_id = rec.layers[0].diff_id
    cache = store.layer_path(diff_id) / "index.json"
    assert not cache.exists()
    idx = layer_index(store, diff_id)
    assert cache.is_file() and idx.get("etc/app.conf") == Entry("etc/app.conf", "f", 4, 0o644)
    before = cache.stat().st_mtime_ns
    assert list(layer_index(store, diff_id).entries()) == list(idx.entries())
    assert cache.stat().st_mtime_ns == before  # read, not rebuilt
    assert not list(store.tmp.iterdir())  # the tmp file was renamed into place
    cache.write_text("{garbage")  # damaged: rebuilt
    assert list(layer_index(store, diff_id).entries()) == list(idx.entries())
    assert json.loads(cache.read_text())["diff_id"] == diff_id


def test_layer_index_concurrent_creators(one_layer_store: Store) -> None:
    store = one_layer_store
    diff_id = store.resolve("app:1").layers[1].diff_id
    results: list[LayerIndex] = []
    errors: list[BaseException] = []

    def go() -> None:
        try:
            results.append(layer_index(Store(store.root), diff_id))
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=go) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 8
    assert all(list(r.entries()) == list(results[0].entries()) for r in results)
    assert LayerIndex.from_json(json.loads((store.layer_path(diff_id) / "index.json").read_bytes()),
                                diff_id) is not None


def test_image_stack_blame_and_stats(one_layer_store: Store) -> None:
    stack = image_stack(one_layer_store, one_layer_store.resolve("app:1"))
    assert [s.label for s in stack] == ["0", "1"]
    assert stack[1].created_by == "ADD etc/app.conf" and stack[0].shared_by == 1
    b = blame(stack, "/etc/app.conf")
    assert b.layer.label == "1" and [s.label for s in b.shadows] == ["0"] and b.size == 12
    report = layer_stats(stack)
    assert report.wasted_bytes == 4 and [w.path for w in report.waste] == ["/etc/app.conf"]


def test_missing_layer_is_a_store_error(store: Store) -> None:
    from minirun.errors import StoreError

    with pytest.raises(StoreError):
        layer_index(store, "sha256:" + "0" * 64)


# -- whiteouts and opaque dirs: root only --------------------------------------------------------


@pytest.mark.root
def test_scan_dir_whiteouts_and_opaque(tmp_path: Path) -> None:
    root = tmp_path / "l"
    (root / "etc").mkdir(parents=True)
    os.mknod(root / "etc" / "issue", stat.S_IFCHR | 0o000, os.makedev(0, 0))
    os.mknod(root / "etc" / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    (root / "home").mkdir()
    os.setxattr(root / "home", OPAQUE_XATTR, b"y")
    (root / "home" / "NEW").write_text("n")
    idx = scan_dir(str(root))
    kinds = {e.path: e.kind for e in idx.entries()}
    assert kinds == {"etc": "d", "etc/issue": "w", "etc/null": "c", "home": "o", "home/NEW": "f"}
    base = LayerIndex.from_entries([d("etc"), f("etc/issue", "hi\n"), d("home"), f("home/old", "o")])
    stack = [StackLayer("0", "", "", 0, base), StackLayer("1", "", "", 0, idx)]
    assert blame(stack, "/etc/issue").status == "deleted"
    assert blame(stack, "/home/old").reason == "opaque dir"
    stats = layer_stats(stack).layers[1]
    assert (stats.deleted, stats.hidden, stats.whiteouts, stats.opaque_dirs) == (2, 1, 1, 1)
