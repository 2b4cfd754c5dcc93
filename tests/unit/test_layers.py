"""minirun.image.layers: unpacking layer tars into overlay-ready dirs."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import struct
import tarfile
from pathlib import Path

import pytest

from minirun.errors import LayerError
from minirun.image.layers import (
    OPAQUE_MARKER,
    WHITEOUT_PREFIX,
    UnpackResult,
    is_overlay_whiteout,
    unpack_layer,
)
from tests.layertar import MTIME, E, gz, tar_bytes, zst

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="needs root (owners, devices, trusted.*)")
OPAQUE = "trusted.overlay.opaque"


def unpack(tmp: Path, blob: bytes, **kw: object) -> tuple[Path, UnpackResult]:
    dest = tmp / "dest"
    dest.mkdir(parents=True)
    res = unpack_layer(io.BytesIO(blob), dest, name="sha256:testlayer", **kw)  # type: ignore[arg-type]
    return dest, res


def xattr(p: Path, name: str) -> bytes | None:
    try:
        return os.getxattr(p, name, follow_symlinks=False)
    except OSError:
        return None


def listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# ---------------------------------------------------------------------------- basics


def test_constants() -> None:
    assert WHITEOUT_PREFIX == ".wh."
    assert OPAQUE_MARKER == ".wh..wh..opq"


def test_regular_file_content_mode_mtime(tmp_path: Path) -> None:
    dest, _ = unpack(tmp_path, tar_bytes([E("bin/tool", data=b"#!/bin/sh\n", mode=0o751)]))
    st = os.lstat(dest / "bin/tool")
    assert (dest / "bin/tool").read_bytes() == b"#!/bin/sh\n"
    assert stat.S_IMODE(st.st_mode) == 0o751
    assert st.st_mtime == MTIME


@needs_root
def test_owners_numeric(tmp_path: Path) -> None:
    dest, _ = unpack(
        tmp_path,
        tar_bytes(
            [
                E("d", "dir", uid=1234, gid=5678),
                E("d/f", uid=4321, gid=8765, data=b"x"),
                E("d/l", "symlink", link="/nowhere", uid=77, gid=88),
                E("big", uid=3_000_000, gid=4_000_000),
            ]
        ),
    )
    for rel, ids in {"d": (1234, 5678), "d/f": (4321, 8765), "d/l": (77, 88)}.items():
        st = os.lstat(dest / rel)
        assert (st.st_uid, st.st_gid) == ids, rel
    st = os.lstat(dest / "big")
    assert (st.st_uid, st.st_gid) == (3_000_000, 4_000_000)


@needs_root
def test_base256_numbers_gnu_format(tmp_path: Path) -> None:
    blob = tar_bytes([E("f", uid=0o10000000 + 5, data=b"a")], fmt=tarfile.GNU_FORMAT)
    dest, _ = unpack(tmp_path, blob)
    assert os.lstat(dest / "f").st_uid == 0o10000000 + 5


@needs_root
def test_setuid_setgid_sticky_kept_after_chown(tmp_path: Path) -> None:
    dest, _ = unpack(
        tmp_path,
        tar_bytes(
            [
                E("usr/bin/su", mode=0o4755, uid=0, gid=0, data=b"elf"),
                E("usr/bin/wall", mode=0o2755, uid=0, gid=5, data=b"elf"),
                E("tmp", "dir", mode=0o1777),
                E("shared", "dir", mode=0o2775, gid=50),
            ]
        ),
    )
    assert stat.S_IMODE(os.lstat(dest / "usr/bin/su").st_mode) == 0o4755
    assert stat.S_IMODE(os.lstat(dest / "usr/bin/wall").st_mode) == 0o2755
    assert stat.S_IMODE(os.lstat(dest / "tmp").st_mode) == 0o1777
    assert stat.S_IMODE(os.lstat(dest / "shared").st_mode) == 0o2775


def test_dir_mode_and_mtime_set_after_children(tmp_path: Path) -> None:
    dest, _ = unpack(
        tmp_path,
        tar_bytes(
            [
                E("ro", "dir", mode=0o555, mtime=1_000_000),
                E("ro/child", data=b"x", mtime=2_000_000),
                E("ro/sub", "dir", mode=0o700, mtime=3_000_000),
                E("ro/sub/f", data=b"y"),
            ]
        ),
    )
    st = os.lstat(dest / "ro")
    assert stat.S_IMODE(st.st_mode) == 0o555
    assert st.st_mtime == 1_000_000
    assert os.lstat(dest / "ro/sub").st_mtime == 3_000_000
    assert os.lstat(dest / "ro/child").st_mtime == 2_000_000


def test_pax_subsecond_mtime(tmp_path: Path) -> None:
    dest, _ = unpack(tmp_path, tar_bytes([E("f", mtime=1_600_000_000.25)]))
    assert os.lstat(dest / "f").st_mtime_ns == 1_600_000_000_250_000_000


def test_symlinks_kept_verbatim(tmp_path: Path) -> None:
    dest, _ = unpack(
        tmp_path,
        tar_bytes(
            [
                E("bin/sh", "symlink", link="/bin/busybox", mtime=1_234_567),
                E("lib", "symlink", link="usr/lib"),
                E("up", "symlink", link="../../../../etc/shadow"),
            ]
        ),
    )
    assert os.readlink(dest / "bin/sh") == "/bin/busybox"
    assert os.readlink(dest / "lib") == "usr/lib"
    assert os.readlink(dest / "up") == "../../../../etc/shadow"
    assert os.lstat(dest / "bin/sh").st_mtime == 1_234_567


def test_hardlinks_share_inode(tmp_path: Path) -> None:
    dest, _ = unpack(
        tmp_path,
        tar_bytes(
            [
                E("usr/bin/a", data=b"same", mode=0o755),
                E("usr/bin/b", "hardlink", link="usr/bin/a"),
                E("c", "hardlink", link="/usr/bin/a"),  # absolute: rooted like tar does
            ]
        ),
    )
    a, b, c = (os.lstat(dest / p) for p in ("usr/bin/a", "usr/bin/b", "c"))
    assert a.st_ino == b.st_ino == c.st_ino
    assert a.st_nlink == 3


@needs_root
def test_devices_and_fifo(tmp_path: Path) -> None:
    dest, _ = unpack(
        tmp_path,
        tar_bytes(
            [
                E("dev/null", "char", major=1, minor=3, mode=0o666),
                E("dev/sda", "block", major=8, minor=0, mode=0o660, gid=6),
                E("run/fifo", "fifo", mode=0o620),
            ]
        ),
    )
    st = os.lstat(dest / "dev/null")
    assert stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == 1 and os.minor(st.st_rdev) == 3
    assert stat.S_IMODE(st.st_mode) == 0o666
    st = os.lstat(dest / "dev/sda")
    assert stat.S_ISBLK(st.st_mode) and st.st_rdev == os.makedev(8, 0) and st.st_gid == 6
    st = os.lstat(dest / "run/fifo")
    assert stat.S_ISFIFO(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o620


@needs_root
def test_xattrs_including_binary_capability(tmp_path: Path) -> None:
    # VFS_CAP_REVISION_2 | effective, permitted = CAP_NET_RAW
    cap = struct.pack("<IIIII", 0x02000001, 1 << 13, 0, 0, 0)
    dest, _ = unpack(
        tmp_path,
        tar_bytes(
            [
                E("bin/ping", data=b"elf", mode=0o755, xattrs={"security.capability": cap}),
                E("etc", "dir", xattrs={"user.comment": b"hello"}),
                E("etc/f", xattrs={"user.bin": bytes(range(256))}),
                E("sneaky", "dir", xattrs={"trusted.overlay.redirect": b"/etc"}),
            ]
        ),
    )
    assert xattr(dest / "bin/ping", "security.capability") == cap
    assert xattr(dest / "etc", "user.comment") == b"hello"
    assert xattr(dest / "etc/f", "user.bin") == bytes(range(256))
    # Only whiteout markers may steer overlayfs.
    assert xattr(dest / "sneaky", "trusted.overlay.redirect") is None


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT])
def test_long_names_and_long_link_targets(tmp_path: Path, fmt: int) -> None:
    deep = "/".join(f"component{i:03d}" for i in range(30))  # ~390 chars
    target = "/" + "t" * 200
    dest, _ = unpack(
        tmp_path,
        tar_bytes(
            [
                E(deep + "/file.txt", data=b"deep"),
                E(deep + "/link", "symlink", link=target),
                E("hl", "hardlink", link=deep + "/file.txt"),
            ],
            fmt=fmt,
        ),
    )
    assert (dest / deep / "file.txt").read_bytes() == b"deep"
    assert os.readlink(dest / deep / "link") == target
    assert os.lstat(dest / "hl").st_ino == os.lstat(dest / deep / "file.txt").st_ino


def test_ustar_prefix_field(tmp_path: Path) -> None:
    name = "p" * 80 + "/" + "q" * 60 + "/f"  # > 100 chars: ustar splits into prefix+name
    dest, _ = unpack(tmp_path, tar_bytes([E(name, data=b"u")], fmt=tarfile.USTAR_FORMAT))
    assert (dest / name).read_bytes() == b"u"


def test_implicit_parents_and_absolute_names(tmp_path: Path) -> None:
    dest, _ = unpack(tmp_path, tar_bytes([E("/etc/x", data=b"1"), E("./a/b/c/d", data=b"2")]))
    assert (dest / "etc/x").read_bytes() == b"1"
    assert (dest / "a/b/c/d").read_bytes() == b"2"
    assert stat.S_IMODE(os.lstat(dest / "a/b").st_mode) == 0o755


def test_dotdot_inside_the_root_is_normalised(tmp_path: Path) -> None:
    dest, _ = unpack(tmp_path, tar_bytes([E("a/b/../c", data=b"1")]))
    assert (dest / "a/c").read_bytes() == b"1"


def test_root_entry_sets_dest_metadata(tmp_path: Path) -> None:
    dest, _ = unpack(tmp_path, tar_bytes([E("./", "dir", mode=0o711, mtime=42), E("./f")]))
    st = os.lstat(dest)
    assert stat.S_IMODE(st.st_mode) == 0o711 and st.st_mtime == 42


def test_large_file_across_chunks(tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 123)
    blob = tar_bytes([E("small", data=b"s" * 700), E("big", data=data), E("after", data=b"a")])
    dest, _ = unpack(tmp_path, gz(blob))
    assert (dest / "big").read_bytes() == data
    assert (dest / "after").read_bytes() == b"a"


def test_many_dirs_beyond_fd_cache(tmp_path: Path) -> None:
    entries = [E(f"d{i}/sub/f", data=str(i).encode()) for i in range(400)]
    entries += [E(f"d{i}/sub/g", data=b"g") for i in range(400)]  # revisit after eviction
    dest, _ = unpack(tmp_path, tar_bytes(entries))
    assert (dest / "d0/sub/f").read_bytes() == b"0"
    assert (dest / "d399/sub/g").read_bytes() == b"g"


def test_explicit_dirs_beyond_fd_cache_get_metadata(tmp_path: Path) -> None:
    entries = [E(f"d{i}", "dir", mode=0o750, mtime=1000 + i) for i in range(300)]
    entries += [E(f"d{i}/s", "dir", mode=0o705, mtime=5000 + i) for i in range(300)]
    entries += [E(f"d{i}/s/f") for i in range(300)]
    dest, _ = unpack(tmp_path, tar_bytes(entries))
    for i in (0, 150, 299):
        assert os.lstat(dest / f"d{i}").st_mtime == 1000 + i
        st = os.lstat(dest / f"d{i}/s")
        assert st.st_mtime == 5000 + i and stat.S_IMODE(st.st_mode) == 0o705


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_no_fd_or_thread_leak(tmp_path: Path) -> None:
    import threading

    blob = gz(tar_bytes([E(f"a{i}/b/c", data=b"x") for i in range(50)]))
    before, threads = _fds(), threading.active_count()
    unpack(tmp_path / "ok", blob)
    with pytest.raises(LayerError):
        unpack(tmp_path / "bad", gz(tar_bytes([E("a/b/c"), E("../x")])))
    with pytest.raises(LayerError):
        unpack(tmp_path / "trunc", blob[: len(blob) // 2])
    assert _fds() == before
    assert threading.active_count() == threads


# ------------------------------------------------------------ compression and digest


@pytest.mark.parametrize("codec", ["plain", "gzip", "zstd"])
def test_compressions_and_diff_id(tmp_path: Path, codec: str) -> None:
    raw = tar_bytes([E("etc/os-release", data=b"ID=test\n"), E("x", "dir")])
    assert raw.endswith(bytes(1024))  # end-of-archive zeros + record padding: hashed too
    blob = {"plain": raw, "gzip": gz(raw), "zstd": zst(raw)}[codec]
    dest, res = unpack(tmp_path, blob)
    assert res == UnpackResult("sha256:" + hashlib.sha256(raw).hexdigest(), len(raw))
    assert (dest / "etc/os-release").read_bytes() == b"ID=test\n"


def test_media_type_is_only_a_hint(tmp_path: Path) -> None:
    raw = tar_bytes([E("f", data=b"1")])
    dest, res = unpack(tmp_path, gz(raw), media_type="application/vnd.oci.image.layer.v1.tar")
    assert (dest / "f").read_bytes() == b"1" and res.size == len(raw)


def test_multi_member_gzip_and_multi_frame_zstd(tmp_path: Path) -> None:
    raw = tar_bytes([E("a", data=os.urandom(5000)), E("b", data=b"b")])
    half = len(raw) // 2
    d1, r1 = unpack(tmp_path / "1", gz(raw[:half]) + gz(raw[half:]))
    d2, r2 = unpack(tmp_path / "2", zst(raw[:half]) + zst(raw[half:]))
    digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    assert r1.diff_id == r2.diff_id == digest
    assert (d1 / "b").read_bytes() == (d2 / "b").read_bytes() == b"b"


def test_trailing_data_after_end_marker_is_hashed(tmp_path: Path) -> None:
    raw = tar_bytes([E("f", data=b"1")]) + bytes(4096)
    _, res = unpack(tmp_path, gz(raw))
    assert res.diff_id == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert res.size == len(raw)


@pytest.mark.parametrize("raw", [b"", bytes(1024)], ids=["zero-bytes", "empty-tar"])
def test_empty_layers(tmp_path: Path, raw: bytes) -> None:
    dest, res = unpack(tmp_path, raw)
    assert res.size == len(raw) and listing(dest) == set()


# ------------------------------------------------------------- whiteouts and opaque


@needs_root
def test_whiteout_becomes_char_device(tmp_path: Path) -> None:
    dest, _ = unpack(tmp_path, tar_bytes([E("etc", "dir"), E("etc/.wh.passwd"), E(".wh.opt")]))
    assert is_overlay_whiteout(os.lstat(dest / "etc/passwd"))
    assert is_overlay_whiteout(os.lstat(dest / "opt"))
    assert listing(dest) == {"etc", "etc/passwd", "opt"}  # markers themselves never appear


@needs_root
@pytest.mark.parametrize("marker_first", [True, False])
def test_opaque_marker_keeps_this_layers_children(tmp_path: Path, marker_first: bool) -> None:
    children = [E("d/new", data=b"n"), E("d/sub", "dir"), E("d/sub/f")]
    marker = [E("d/" + OPAQUE_MARKER)]
    entries = [E("d", "dir"), *(marker + children if marker_first else children + marker)]
    dest, _ = unpack(tmp_path, tar_bytes(entries))
    assert xattr(dest / "d", OPAQUE) == b"y"
    assert listing(dest) == {"d", "d/new", "d/sub", "d/sub/f"}
    assert xattr(dest / "d/sub", OPAQUE) is None


@needs_root
def test_opaque_marker_without_dir_entry_creates_dir(tmp_path: Path) -> None:
    dest, _ = unpack(tmp_path, tar_bytes([E("a/b/" + OPAQUE_MARKER)]))
    assert xattr(dest / "a/b", OPAQUE) == b"y" and xattr(dest / "a", OPAQUE) is None


@needs_root
def test_same_layer_entry_before_whiteout_wins(tmp_path: Path) -> None:
    dest, _ = unpack(
        tmp_path,
        tar_bytes(
            [
                E("f", data=b"mine"),
                E(".wh.f"),
                E("d", "dir"),
                E("d/x", data=b"x"),
                E(".wh.d"),
            ]
        ),
    )
    assert (dest / "f").read_bytes() == b"mine"
    assert (dest / "d/x").read_bytes() == b"x"
    # Lower d/* must still be hidden: the surviving dir is opaque.
    assert xattr(dest / "d", OPAQUE) == b"y"


@needs_root
def test_entry_after_whiteout_replaces_it(tmp_path: Path) -> None:
    dest, _ = unpack(
        tmp_path,
        tar_bytes(
            [
                E(".wh.f"),
                E("f", data=b"new"),
                E(".wh.d"),
                E("d", "dir"),
                E("d/y", data=b"y"),
                E(".wh.e"),
                E("e/implicit", data=b"i"),  # parent recreated implicitly over the whiteout
            ]
        ),
    )
    assert stat.S_ISREG(os.lstat(dest / "f").st_mode) and (dest / "f").read_bytes() == b"new"
    assert xattr(dest / "d", OPAQUE) == b"y" and (dest / "d/y").read_bytes() == b"y"
    assert xattr(dest / "e", OPAQUE) == b"y" and (dest / "e/implicit").read_bytes() == b"i"


def test_aufs_metadata_markers_skipped(tmp_path: Path) -> None:
    dest, _ = unpack(tmp_path, tar_bytes([E(".wh..wh.plnk", "dir"), E(".wh..wh.aufs"), E("f")]))
    assert listing(dest) == {"f"}


# ------------------------------------------------------------------- duplicates


def test_duplicates_later_entry_wins(tmp_path: Path) -> None:
    dest, _ = unpack(
        tmp_path,
        tar_bytes(
            [
                E("f", data=b"one"),
                E("f", data=b"two", mode=0o600),
                E("d", "dir"),
                E("d/child", data=b"c"),
                E("d", "dir", mode=0o700),  # dir over dir: merged, mode updated
                E("g", "dir"),
                E("g/child"),
                E("g", data=b"file now"),  # file over dir: dir removed
                E("h", data=b"file"),
                E("h", "dir"),  # dir over file
                E("h/in", data=b"in"),
                E("s", "symlink", link="/etc"),
                E("s", data=b"plain"),  # file over symlink: symlink replaced, not followed
                E("t", data=b"t"),
                E("t", "symlink", link="f"),
            ]
        ),
    )
    assert (dest / "f").read_bytes() == b"two"
    assert stat.S_IMODE(os.lstat(dest / "f").st_mode) == 0o600
    assert (dest / "d/child").read_bytes() == b"c"
    assert stat.S_IMODE(os.lstat(dest / "d").st_mode) == 0o700
    assert (dest / "g").read_bytes() == b"file now"
    assert (dest / "h/in").read_bytes() == b"in"
    assert not (dest / "s").is_symlink() and (dest / "s").read_bytes() == b"plain"
    assert os.readlink(dest / "t") == "f"


# ------------------------------------------------------------------- hostile corpus


def _hostile(tmp_path: Path, sentinel: Path) -> list[tuple[str, list[E], str]]:
    """(id, entries, member expected in the message)."""
    return [
        ("dotdot", [E("../x", data=b"pwn")], "../x"),
        ("nested-dotdot", [E("a/../../x", data=b"pwn")], "a/../../x"),
        ("abs-symlink-then-write", [E("x", "symlink", link=str(sentinel)), E("x/pwn")], "x/pwn"),
        ("rel-symlink-then-write", [E("x", "symlink", link="../.."), E("x/pwn")], "x/pwn"),
        ("rel-symlink-to-sentinel", [E("x", "symlink", link="../sentinel"), E("x/pwn")], "x/pwn"),
        (
            "symlink-deep-parent",
            [E("a/b", "symlink", link="../../sentinel"), E("a/b/c/pwn")],
            "a/b/c/pwn",
        ),
        ("symlink-inside-layer", [E("d", "dir"), E("l", "symlink", link="d"), E("l/f")], "l/f"),
        ("hardlink-dotdot", [E("evil", "hardlink", link="../../etc/passwd")], "evil"),
        ("hardlink-absolute", [E("evil", "hardlink", link="/etc/passwd")], "evil"),
        ("hardlink-later-member", [E("evil", "hardlink", link="f"), E("f")], "evil"),
        ("hardlink-to-dir", [E("d", "dir"), E("evil", "hardlink", link="d")], "evil"),
        (
            "hardlink-through-symlink",
            [E("x", "symlink", link="/etc"), E("evil", "hardlink", link="x/passwd")],
            "evil",
        ),
        ("whiteout-dotdot", [E(".wh..")], ".wh.."),
        ("whiteout-dotdotdot", [E("a/.wh...")], "a/.wh..."),
        ("whiteout-empty-name", [E("a/.wh.")], "a/.wh."),
        ("whiteout-as-parent", [E(".wh.../x")], ".wh.../x"),
        ("whiteout-escape", [E("../.wh.x")], "../.wh.x"),
        ("parent-is-file", [E("f", data=b"1"), E("f/x")], "f/x"),
        ("root-replaced-by-file", [E("./", "file")], "./"),
        ("unknown-type", [E("weird", "Z")], "weird"),
        ("gnu-sparse", [E("sp", "S")], "sp"),
        ("nul-in-pax-path", [E("ok", pax={"path": "a\0b"})], "a"),
    ]


def _assert_contained(tmp_path: Path, sentinel: Path) -> None:
    assert list(sentinel.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dest", "sentinel"]
    assert not Path("/pwn").exists()


HOSTILE_IDS = [h[0] for h in _hostile(Path("/t"), Path("/t/sentinel"))]


@pytest.mark.parametrize("case", HOSTILE_IDS)
@pytest.mark.parametrize("codec", ["plain", "gzip"])
def test_hostile_members_refused(tmp_path: Path, case: str, codec: str) -> None:
    sentinel = tmp_path / "sentinel"
    sentinel.mkdir()
    _, entries, member = next(h for h in _hostile(tmp_path, sentinel) if h[0] == case)
    passwd_links = os.lstat("/etc/passwd").st_nlink
    raw = tar_bytes([*entries, E("after-the-bad-one", data=b"x")])
    with pytest.raises(LayerError) as ei:
        unpack(tmp_path, gz(raw) if codec == "gzip" else raw)
    msg = str(ei.value)
    assert "sha256:testlayer" in msg
    assert f"'{member}" in msg, msg
    _assert_contained(tmp_path, sentinel)
    assert not (tmp_path / "dest/after-the-bad-one").exists()  # stopped at once
    assert os.lstat("/etc/passwd").st_nlink == passwd_links


def _corrupt_cases() -> dict[str, bytes]:
    raw = tar_bytes([E("a", data=os.urandom(200_000)), E("b", data=b"b" * 1000)])
    g = gz(raw)
    bad = bytearray(g)
    bad[len(bad) // 2] ^= 0xFF
    crc = bytearray(g)
    crc[-8] ^= 0xFF  # gzip trailer: CRC32
    z = zst(raw)
    return {
        "truncated-gzip": g[: len(g) // 2],
        "truncated-gzip-trailer": g[:-4],
        "corrupt-gzip": bytes(bad),
        "gzip-crc": bytes(crc),
        "truncated-zstd": z[: len(z) // 2],
        "truncated-tar-in-data": raw[:100_000],
        "truncated-tar-in-header": raw[:700],
        "garbage": b"this is not a tar archive at all" * 40,
        "gzip-of-garbage": gzip.compress(os.urandom(4096)),
    }


@pytest.mark.parametrize("case", list(_corrupt_cases()))
def test_truncated_or_corrupt_refused(tmp_path: Path, case: str) -> None:
    sentinel = tmp_path / "sentinel"
    sentinel.mkdir()
    with pytest.raises(LayerError, match="truncated/corrupt") as ei:
        unpack(tmp_path, _corrupt_cases()[case])
    assert "sha256:testlayer" in str(ei.value)
    _assert_contained(tmp_path, sentinel)


def test_symlink_at_final_component_is_never_followed(tmp_path: Path) -> None:
    target = tmp_path / "sentinel"
    target.mkdir()
    victim = target / "victim"
    dest, _ = unpack(
        tmp_path,
        tar_bytes([E("x", "symlink", link=str(victim)), E("x", data=b"overwritten?")]),
    )
    assert not victim.exists()
    assert (dest / "x").read_bytes() == b"overwritten?"


def test_deep_paths_are_walked_without_recursion(tmp_path: Path) -> None:
    """More components than the recursion limit and than the dir-fd cache holds: every
    level is made, nothing is left open."""
    import subprocess
    import sys

    depth = sys.getrecursionlimit() + 500
    deep = "a/" * depth
    fds = len(os.listdir("/proc/self/fd"))
    try:
        dest, _ = unpack(tmp_path, tar_bytes([E(deep + "f", data=b"1"), E(deep + "g", data=b"2"),
                                              E("a/a/h", data=b"3")]))
        assert len(os.listdir("/proc/self/fd")) == fds
        fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for _ in range(depth):
                nxt = os.open("a", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
                os.close(fd)
                fd = nxt
            assert sorted(os.listdir(fd)) == ["f", "g"]
        finally:
            os.close(fd)
        assert (dest / "a" / "a" / "h").read_bytes() == b"3"
    finally:
        # shutil.rmtree (and pytest's cleanup) recurse per level; rm -rf does not
        subprocess.run(["rm", "-rf", "--", str(tmp_path / "dest")], check=False)


@pytest.mark.parametrize(("name", "shown"), [
    ("../\n", "'../\\n'"),
    ("../a\rb\x1b", "'../a\\rb\\x1b'"),
    ("../\u2028x", "'../\\u2028x'"),
])  # fmt: skip
def test_member_names_in_messages_are_one_line(tmp_path: Path, name: str, shown: str) -> None:
    with pytest.raises(LayerError) as ei:
        unpack(tmp_path, tar_bytes([E(name)]))
    assert shown in str(ei.value) and "escapes the layer root" in str(ei.value)
    assert "\n" not in str(ei.value) and "\r" not in str(ei.value)
