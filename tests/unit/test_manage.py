"""Issue 14 without root: top's ps parsing and layout, compressed archives for load,
rename in the records' names index, --platform against a stored image."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import time
from pathlib import Path

import pytest

from minirun.cli.manage import _tabwriter
from minirun.container.manage import parse_ps_output
from minirun.container.records import ContainerRecord, Containers
from minirun.errors import ArchiveError, ContainerError, ContainerNotFound, NameInUse, UsageError
from minirun.image import archive, compression
from minirun.image.store import Store
from tests.conftest import store_snapshot

# -- top -------------------------------------------------------------------------------------

PS_EF = """\
UID        PID  PPID  C STIME TTY          TIME CMD
root         1     0  0 08:43 ?        00:00:01 /sbin/init splash
root       100    90  0 08:44 ?        00:00:00 sh -c sleep 5 & wait
root       101   100  0 08:44 ?        00:00:00 sleep 5
root       200     1  0 08:44 ?        00:00:00 sleep 99
"""


def test_parse_ps_keeps_only_the_containers_rows_and_the_command_whole() -> None:
    titles, rows = parse_ps_output(PS_EF, {100, 101})
    assert titles == ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    assert [r[1] for r in rows] == ["100", "101"]
    assert rows[0][-1] == "sh -c sleep 5 & wait" and len(rows[0]) == len(titles)


def test_parse_ps_thread_lines_follow_their_process() -> None:
    out = """\
  PID   LWP CMD
  100     - sh
    -   100 -
  200     - other
    -   200 -
"""
    _, rows = parse_ps_output(out, {100})
    assert rows == [["100", "-", "sh"], ["-", "100", "-"]]


def test_parse_ps_without_a_pid_column_or_with_a_bad_pid() -> None:
    with pytest.raises(ContainerError, match="PID field"):
        parse_ps_output("USER COMMAND\nroot sh\n", {1})
    with pytest.raises(ContainerError, match="unexpected pid"):
        parse_ps_output("PID CMD\nx sh\n", {1})


def test_top_layout_is_dockers_tabwriter() -> None:
    text = _tabwriter([["UID", "PID", "CMD"], ["root", "1234567890123456789012", "sleep 5"]])
    head, row = text.splitlines()
    assert head == "UID".ljust(20) + "PID".ljust(25) + "CMD"
    assert row == "root".ljust(20) + "1234567890123456789012".ljust(25) + "sleep 5"


def test_top_refuses_renaming_another_column_to_pid(loaded_store: Store) -> None:
    from minirun.container import manage

    rec = ContainerRecord(id="a" * 64, name="x", image="busybox", image_id="", args=[],
                          created=0.0, lowerdirs=[], diff_ids=[])
    with pytest.raises(ContainerError, match="not running"):
        manage.top(loaded_store, rec, ["-o", "user=PID"])


# -- compressed archives -------------------------------------------------------------------------


def _zstd(data: bytes, frames: int = 2) -> bytes:
    import zstandard

    c = zstandard.ZstdCompressor(write_checksum=True)
    step = len(data) // frames + 1
    return b"".join(c.compress(data[i:i + step]) for i in range(0, len(data), step))


PACK = {
    "gzip": lambda d: gzip.compress(d[:1000]) + gzip.compress(d[1000:]),
    "zstd": _zstd,
    "xz": lzma.compress,
    "bzip2": bz2.compress,
}


@pytest.mark.parametrize("kind", sorted(PACK))
def test_decompress_every_kind_every_member(kind: str) -> None:
    data = os.urandom(3000) * 200
    packed = PACK[kind](data)
    assert compression.sniff_archive(packed[:8]) == kind
    assert b"".join(compression.decompressed_chunks(io.BytesIO(packed), kind)) == data


@pytest.mark.parametrize("kind", sorted(PACK))
def test_decompress_truncated_or_trailing_junk_is_corrupt(kind: str) -> None:
    data = os.urandom(3000) * 200
    packed = PACK[kind](data)
    # trailing junk: the stdlib's xz and bzip2 readers ignore it after the last stream
    # (bzip2 -d too); what was decompressed is whole, and a tar then says if it is not
    for bad in (packed[:-7], *([packed + b"junk" * 10] if kind in ("gzip", "zstd") else [])):
        with pytest.raises(compression.CorruptData) as e:
            b"".join(compression.decompressed_chunks(io.BytesIO(bad), kind))
        assert "\n" not in str(e.value) and kind in str(e.value)


def test_sniff_archive_plain_tar_is_none() -> None:
    assert compression.sniff_archive(b"manifest.json\0") == "none"
    assert compression.sniff_archive(b"") == "none"


@pytest.fixture
def saved_tar(loaded_store: Store) -> bytes:
    out = io.BytesIO()
    archive.save(loaded_store, ["busybox"], out)
    return out.getvalue()


class _Pipe(io.RawIOBase):
    """A stream that gives at most 3 bytes a read, as a pipe may."""

    def __init__(self, data: bytes) -> None:
        self.f = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        return self.f.read(3 if n is None or n < 0 else min(n, 3))


@pytest.mark.parametrize("kind", sorted(PACK))
@pytest.mark.parametrize("as_file", [True, False])
def test_load_compressed_archive(kind: str, as_file: bool, saved_tar: bytes, store_root: Path,
                                 tmp_path: Path) -> None:
    fresh = Store(tmp_path / "fresh")
    packed = PACK[kind](saved_tar)
    if as_file:
        src: Path | io.IOBase = tmp_path / "a.tar.x"
        src.write_bytes(packed)  # type: ignore[union-attr]
    else:
        src = _Pipe(packed)
    loaded = archive.load(fresh, src)  # type: ignore[arg-type]
    assert loaded[0].names == ["busybox:latest"]
    assert not list(fresh.tmp.iterdir())


def test_load_corrupt_gzip_leaves_the_store_as_it_was(saved_tar: bytes, loaded_store: Store,
                                                      tmp_path: Path) -> None:
    packed = bytearray(gzip.compress(saved_tar))
    packed[300:1300] = os.urandom(1000)
    f = tmp_path / "bad.tar.gz"
    f.write_bytes(bytes(packed))
    before = store_snapshot(loaded_store.root)
    for src in (f, io.BytesIO(bytes(packed))):
        with pytest.raises(ArchiveError, match="gzip") as e:
            archive.load(loaded_store, src)
        assert "\n" not in str(e.value) and "nothing was loaded" in str(e.value)
        assert store_snapshot(loaded_store.root) == before


# -- rename ---------------------------------------------------------------------------------------


def _registered(store: Store, name: str) -> ContainerRecord:
    containers = Containers(store)
    cid = containers.new_id()
    rec = ContainerRecord(id=cid, name="", image="busybox", image_id=store.resolve("busybox").id,
                          args=["true"], created=time.time(), lowerdirs=[], diff_ids=[])
    containers.register(rec, name)
    return rec


def test_rename_moves_the_name_index(loaded_store: Store) -> None:
    containers = Containers(loaded_store)
    a = _registered(loaded_store, "ka")
    b = _registered(loaded_store, "kb")
    names = loaded_store.root / "names"
    containers.rename(containers.get("ka"), "/kc")
    assert containers.get("kc").id == a.id and os.readlink(names / "kc") == a.id
    assert not os.path.lexists(names / "ka")
    with pytest.raises(ContainerNotFound):
        containers.get("ka")
    with pytest.raises(NameInUse, match="remove \\(or rename\\)"):
        containers.rename(containers.get("kc"), "kb")
    with pytest.raises(ContainerError, match="same name"):
        containers.rename(containers.get("kc"), "kc")
    with pytest.raises(UsageError, match="invalid container name"):
        containers.rename(containers.get("kc"), "-x")
    assert os.readlink(names / "kb") == b.id and containers.get("kc").id == a.id
    assert _registered(loaded_store, "ka").name == "ka"  # the old name is free again


def test_a_writer_that_loaded_before_the_rename_keeps_the_new_name(loaded_store: Store) -> None:
    containers = Containers(loaded_store)
    rec = _registered(loaded_store, "old")
    stale = containers.get("old")  # e.g. a shim's _cleanup, about to record the exit
    containers.rename(containers.get("old"), "new")
    stale.status, stale.exit_code = "exited", 3
    containers.save(stale)
    got = containers.get("new")
    assert got.id == rec.id and got.name == "new" and got.exit_code == 3


# -- --platform of a stored image ----------------------------------------------------------------


def test_platform_of_a_stored_image(loaded_store: Store) -> None:
    from minirun.image.oci import host_platform
    from minirun.image.pull import PlatformMismatch, ensure_image

    host = f"linux/{host_platform().architecture}"
    assert ensure_image(loaded_store, "busybox", "never", lambda _e: None, platform=host).id
    with pytest.raises(PlatformMismatch) as e:
        ensure_image(loaded_store, "busybox", "never", lambda _e: None, platform="windows/amd64")
    assert str(e.value) == f"image busybox is {host}, not windows/amd64"
