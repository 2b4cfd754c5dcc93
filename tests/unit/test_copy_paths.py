"""``cp``'s pure rules: Docker's path handling (CopyInfo, PrepareArchiveCopy, GetRebaseName,
splitCpArg) and the per-member checks of a tar stream."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from minirun.container import copy as cp
from minirun.container import cppaths as paths
from minirun.container.cppaths import DestInfo, Placement, SourceInfo
from minirun.errors import CopyError, UnsafeArchive


@pytest.mark.parametrize(("given", "want"), [
    ("etc/passwd", "/etc/passwd"), ("/etc/", "/etc/"), ("/etc/.", "/etc/."), ("etc/./", "/etc/./"),
    ("/", "/"), ("", "/."), (".", "/."), ("../../x", "/x"), ("/a//b/../c", "/a/c"),
])
def test_container_paths_are_rooted_and_keep_a_trailing_slash_or_dot(given: str, want: str) -> None:
    assert paths.container_abs(given) == want


@pytest.mark.parametrize(("path", "want"), [
    ("/a/b", ("/a", "b")), ("/a/b/", ("/a", "b")), ("/a/b/.", ("/a/b", ".")), ("/", ("/", "/")),
    ("b", (".", "b")), ("/a", ("/", "a")),
])
def test_split_dir_entry(path: str, want: tuple[str, str]) -> None:
    assert paths.split_dir_entry(path) == want


def test_archive_top_names() -> None:
    assert paths.archive_top("/etc/passwd") == "passwd"
    assert paths.archive_top("/etc/") == "etc"
    assert paths.archive_top("/etc/.") == "."
    assert paths.archive_top("/") == "."  # the root: its contents


def test_rebase_name_after_following_a_link() -> None:
    assert paths.rebase_name("/lnk", "/etc/passwd") == ("/etc/passwd", "lnk")
    assert paths.rebase_name("/lnk/", "/real") == ("/real/", "lnk")
    assert paths.rebase_name("/lnk/.", "/real") == ("/real/.", "")
    assert paths.rebase_name("/same", "/x/same") == ("/x/same", "")


def src(path: str, is_dir: bool, rebase: str = "") -> SourceInfo:
    return SourceInfo(path, is_dir, paths.archive_top(path), rebase)


def test_into_an_existing_directory_as_is() -> None:
    assert paths.placement(src("/d", True), DestInfo("/tmp", True, True)) == Placement("/tmp", None)
    assert paths.placement(src("/f", False), DestInfo("/tmp/", True, True)) == Placement("/tmp/", None)
    # -L of a link named otherwise: the entries take the link's name
    assert paths.placement(src("/etc/passwd", False, "lnk"), DestInfo("/tmp", True, True)) == Placement("/tmp", "lnk")


def test_a_missing_dest_takes_the_source_under_its_own_name() -> None:
    assert paths.placement(src("/d", True), DestInfo("/tmp/new", False)) == Placement("/tmp", "new")
    assert paths.placement(src("/d/.", True), DestInfo("/tmp/new", False)) == Placement("/tmp", "new")
    assert paths.placement(src("/f", False), DestInfo("/tmp/g", False)) == Placement("/tmp", "g")
    # a dir may be created from a trailing-slash DEST; a file may not
    assert paths.placement(src("/d", True), DestInfo("/tmp/new/", False)) == Placement("/tmp", "new")
    with pytest.raises(CopyError, match="no such directory"):
        paths.placement(src("/f", False), DestInfo("/tmp/new/", False))


def test_a_file_replaces_a_file_but_a_dir_cannot() -> None:
    assert paths.placement(src("/f", False), DestInfo("/tmp/g", True, False)) == Placement("/tmp", "g")
    with pytest.raises(CopyError, match="cannot copy a directory to a file"):
        paths.placement(src("/d", True), DestInfo("/tmp/g", True, False), "c1:")


@pytest.mark.parametrize(("arg", "want"), [
    ("c1:/etc", ("c1", "/etc")), ("c1:", ("c1", "")), ("/abs:x", ("", "/abs:x")), ("./c1:x", ("", "./c1:x")),
    ("file", ("", "file")), ("-", ("", "-")), ("c1:rel/p", ("c1", "rel/p")),
])
def test_split_cp_arg(arg: str, want: tuple[str, str]) -> None:
    assert cp.split_cp_arg(arg) == want


def test_renamed_top_component() -> None:
    assert paths.renamed("d/x", "d", "new") == "new/x"
    assert paths.renamed("d", "d", "new") == "new"
    assert paths.renamed("x/y", "", "new") == "new/x/y"
    assert paths.renamed("", "", "new") == "new"
    assert paths.renamed("dd/x", "d", "new") == "dd/x"  # a prefix of a name is not its top
    assert paths.renamed("d/x", "d", None) == "d/x"


def tar_of(*members: tuple[str, bytes, str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, typ, link in members:
            ti = tarfile.TarInfo(name)
            ti.type = typ
            ti.linkname = link
            if typ == tarfile.CHRTYPE:
                ti.devmajor, ti.devminor = (1, 3) if link != "0:0" else (0, 0)
                ti.linkname = ""
            t.addfile(ti, io.BytesIO(b""))
    return buf.getvalue()


R, D, S, H, C = tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE


def test_a_plain_archive_passes() -> None:
    data = tar_of(("./", D, ""), ("a", D, ""), ("a/f", R, ""), ("a/h", H, "a/f"), ("a/s", S, "/etc/passwd"),
                  ("a/up", S, "../../../x"), ("null", C, ""))
    assert paths.check_archive(io.BytesIO(data)) == 7


def test_an_empty_stream_is_an_empty_archive() -> None:
    assert paths.check_archive(io.BytesIO(b"")) == 0


@pytest.mark.parametrize(("members", "match"), [
    ([("/etc/passwd", R, "")], "absolute path"),
    ([("a/../../x", R, "")], r"'\.\.'"),
    ([("../x", R, "")], r"'\.\.'"),
    ([("l", S, "/"), ("l/etc/passwd", R, "")], "through the symlink 'l'"),
    ([("d", D, ""), ("d/l", S, "/etc"), ("d/l/x/y", R, "")], "through the symlink 'd/l'"),
    ([("h", H, "../etc/shadow")], r"'\.\.'"),
    ([("h", H, "/etc/shadow")], "absolute path"),
    ([("l", S, "/etc"), ("h", H, "l/shadow")], "hardlink through the symlink"),
    ([("./", R, "")], "replace the destination directory"),
    ([("w", C, "0:0")], "whiteout"),
    ([("s", S, "")], "empty target"),
])
def test_hostile_archives_are_refused(members: list[tuple[str, bytes, str]], match: str) -> None:
    with pytest.raises(UnsafeArchive, match=match):
        paths.check_archive(io.BytesIO(tar_of(*members)))


def test_a_name_replaced_by_a_file_is_no_longer_a_planted_link() -> None:
    data = tar_of(("l", S, "/"), ("l", R, ""))
    assert paths.check_archive(io.BytesIO(data)) == 2


def test_garbage_is_not_a_tar() -> None:
    with pytest.raises(CopyError, match="not a valid tar archive"):
        paths.check_archive(io.BytesIO(b"x" * 2000))


def test_pseudo_devices_from_mountinfo() -> None:
    info = ("22 1 0:40 / / rw - overlay overlay rw\n"
            "23 22 0:41 / /proc rw - proc proc rw\n"
            "24 22 0:42 / /dev rw - tmpfs tmpfs rw\n"
            "25 24 0:43 / /dev/pts rw - devpts devpts rw\n")
    import os

    assert cp._pseudo_devices(info) == {os.makedev(0, 41), os.makedev(0, 43)}


@pytest.mark.parametrize("suffix", ["/", "/.", "/x"])
@pytest.mark.parametrize("follow", [False, True])
def test_a_host_file_given_as_a_directory_is_not_a_directory(tmp_path: Path, suffix: str, follow: bool) -> None:
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "lnk").symlink_to("a.txt")
    for name in ("a.txt", "lnk"):
        given = f"{tmp_path}/{name}{suffix}"
        with pytest.raises(CopyError) as e:
            cp.host_source(given, follow)
        assert str(e.value) == f"lstat {given}: not a directory"


def test_a_missing_host_source_is_still_missing(tmp_path: Path) -> None:
    for given in (f"{tmp_path}/nope", f"{tmp_path}/nope/", f"{tmp_path}/nope/."):
        with pytest.raises(CopyError, match=f"^lstat {tmp_path}/nope(/\\.)?: no such file or directory$"):
            cp.host_source(given, False)
    assert cp.host_source(f"{tmp_path}/", False).info.is_dir  # a real dir/ still copies
