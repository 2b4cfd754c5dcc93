"""Unpack one image layer blob (tar, tar+gzip, tar+zstd) into a directory that is used as
it is as an overlayfs lowerdir.

Why not ``tarfile.extractall``: its safety filters reject what real images contain
(absolute symlinks such as ``/bin/sh -> /bin/busybox``, device nodes) and strip setuid
bits, and without a filter it follows symlinks the archive itself planted. So this module
parses tar headers itself (stream mode, one pass) and writes with its own root-confined
code.

Safety rules (all violations raise :class:`~minirun.errors.LayerError` naming the member
and the layer, and stop at once):

* Member names are normalised lexically (leading ``/`` and ``.`` dropped, ``a/../b`` ->
  ``b``); a name that climbs above the root is refused.
* Every write is an ``*at`` call on a directory fd obtained by walking the parent path from
  an fd of ``dest`` one component at a time with ``O_NOFOLLOW|O_DIRECTORY``. **A symlink
  in a parent path is refused**, whatever it points to (even inside the layer): tar
  archives made from a real filesystem never go through a symlink, so such a member is
  either hostile or broken, and refusing is simpler to get right than an in-root
  resolution. The final component is never followed either: an existing entry is removed
  and recreated (``O_CREAT|O_EXCL``, ``mkdirat``, ``symlinkat``...).
* Hardlink targets must name a non-directory already unpacked from this same layer.
* Whiteouts must name a real sibling (not ``""``, ``.``, ``..``); parent components named
  ``.wh.*`` are refused (OCI: no such file can exist).

OCI whiteouts become their overlayfs form, as containerd does: ``.wh.NAME`` -> char
device 0:0 ``NAME``; ``D/.wh..wh..opq`` -> xattr ``trusted.overlay.opaque=y`` on ``D``.
Both apply to LOWER layers only (image-spec layer.md), whatever their position in the tar:

* an entry of this layer that exists when ``.wh.NAME`` is met wins (the whiteout is
  dropped); if that entry is a directory it is made opaque, so lower ``NAME/*`` stays
  hidden, which is what "delete lower NAME, then this layer's NAME" means;
* an entry created where this layer put a whiteout replaces it; a directory replacing a
  whiteout is made opaque for the same reason;
* the opaque marker only sets the xattr: this layer's children of ``D`` stay.

``.wh..wh.*`` names other than the opaque marker (aufs bookkeeping such as
``.wh..wh.plnk``) are skipped, as Docker does. ``trusted.overlay.*`` xattrs in the tar are
dropped: only whiteout markers may steer overlayfs (a forged ``trusted.overlay.redirect``
could make overlay look up paths the image never meant).

Speed: decompression and sha256 run in a helper thread (zlib, zstd and hashlib release
the GIL on large buffers) feeding ~1 MiB chunks through a small queue, so they overlap
with the extraction syscalls done by the calling thread, as ``tar -xzf`` overlaps with
its ``gzip -d`` child. Directory fds are cached so each member costs one ``*at`` call
per syscall instead of a walk from the root.
"""

from __future__ import annotations

import errno
import hashlib
import os
import queue
import shutil
import stat
import threading
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from minirun.errors import LayerError
from minirun.image.compression import GZIP_MAGIC as _GZIP_MAGIC
from minirun.image.compression import ZSTD_MAGIC as _ZSTD_MAGIC
from minirun.image.whiteout import (
    OPAQUE_MARKER,
    OVERLAY_OPAQUE_XATTR,
    WHITEOUT_PREFIX,
    is_overlay_whiteout,
)

__all__ = [
    "OPAQUE_MARKER",
    "WHITEOUT_PREFIX",
    "UnpackResult",
    "is_overlay_whiteout",
    "unpack_layer",
]


_WH = WHITEOUT_PREFIX.encode()
_WH_META = b".wh..wh."
_OPQ = OPAQUE_MARKER.encode()

_BLOCK = 512
_ZERO_BLOCK = bytes(_BLOCK)
_READ_SIZE = 256 * 1024  # compressed bytes per read() of src
_CHUNK = 1024 * 1024  # max uncompressed bytes per queued chunk
_QUEUE_DEPTH = 16  # chunks in flight: bounds memory to ~16 MiB
_META_MAX = 16 * 1024 * 1024  # PAX / GNU long-name bodies larger than this are refused
_DIR_CACHE_MAX = 256  # open dir fds kept (default RLIMIT_NOFILE is 1024)


_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_O_NEWFILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

# tar type flags (ustar + GNU + PAX)
_REG, _AREG, _CONTIG = ord("0"), 0, ord("7")
_LNK, _SYM, _CHR, _BLK, _DIR, _FIFO = (ord(c) for c in "123456")
_GNU_LONGNAME, _GNU_LONGLINK = ord("L"), ord("K")
_PAX_X, _PAX_G = ord("x"), ord("g")
_TYPE_NAMES = {ord("S"): "GNU sparse file", ord("V"): "volume label",
               ord("M"): "multi-volume continuation", ord("D"): "GNU dump dir",
               ord("N"): "GNU old long name"}  # fmt: skip


@dataclass(frozen=True)
class UnpackResult:
    """What the store records for an unpacked layer."""

    diff_id: str  # "sha256:<hex>" of the uncompressed tar stream (OCI diff_id)
    size: int  # bytes of the uncompressed tar stream


def unpack_layer(
    src: BinaryIO, dest: Path, *, media_type: str | None = None, name: str = "layer"
) -> UnpackResult:
    """Unpack the layer blob ``src`` into the existing empty directory ``dest``.

    Compression is detected from magic bytes (gzip, zstd, else plain tar); ``media_type``
    is only a hint and does not override them, since registries and ``docker save``
    archives mislabel blobs. The whole stream is consumed so the digest covers tar padding
    too. ``name`` is how errors name the layer. On any error a :class:`LayerError` is
    raised and ``dest`` holds partial content the caller must delete.
    """
    del media_type  # hint only: magic bytes decide (see docstring)
    head = _read_head(src, 4)
    if head.startswith(_GZIP_MAGIC):
        chunks: Callable[[], Iterator[bytes]] = lambda: _gunzip(src, head)  # noqa: E731
    elif head.startswith(_ZSTD_MAGIC):
        import zstandard  # lazily: only zstd layers pay for it

        chunks = lambda: _unzstd(src, head, zstandard)  # noqa: E731
    else:
        chunks = lambda: _plain(src, head)  # noqa: E731

    root_fd = os.open(dest, _O_DIR)
    stream = _ChunkStream(chunks, name)
    try:
        _Extractor(stream, root_fd, name).run()
        return stream.finish()
    finally:
        stream.stop()
        os.close(root_fd)


# --------------------------------------------------------------------------------------
# Decompression (runs in the helper thread)


def _read_head(src: BinaryIO, n: int) -> bytes:
    head = b""
    while len(head) < n:
        b = src.read(n - len(head))
        if not b:
            break
        head += b
    return head


def _plain(src: BinaryIO, head: bytes) -> Iterator[bytes]:
    if head:
        yield head
    while b := src.read(_CHUNK):
        yield b


def _gunzip(src: BinaryIO, head: bytes) -> Iterator[bytes]:
    """gzip, including multi-member streams (pigz, concatenated blobs)."""
    d = zlib.decompressobj(31)
    fresh = True  # d has consumed nothing yet
    data = head
    while True:
        if not data:
            data = src.read(_READ_SIZE)
            if not data:
                break
        while data:
            if fresh and data.strip(b"\0") == b"":
                data = b""  # zero padding after the last member: tolerated, like gzip -d
                break
            fresh = False
            out = d.decompress(data, _CHUNK)
            if out:
                yield out
            if d.eof:
                data = d.unused_data
                d = zlib.decompressobj(31)
                fresh = True
            else:
                data = d.unconsumed_tail
    if not fresh:
        out = d.flush()
        if out:
            yield out
        if not d.eof:
            raise _Corrupt("gzip stream ends early")


def _unzstd(src: BinaryIO, head: bytes, zstandard: object) -> Iterator[bytes]:
    """zstd, including multi-frame streams (one decompressobj per frame)."""
    new = zstandard.ZstdDecompressor().decompressobj  # type: ignore[attr-defined]
    d = new()
    fresh = True
    data = head
    while True:
        if not data:
            data = src.read(_READ_SIZE)
            if not data:
                break
        while data:
            fresh = False
            out = d.decompress(data)
            if out:
                yield out
            if d.eof:
                data = d.unused_data
                d = new()
                fresh = True
            else:
                data = b""
    if not fresh and not d.eof:
        raise _Corrupt("zstd stream ends early")


class _Corrupt(Exception):
    """Truncated or corrupt input; becomes a LayerError naming the layer (and member)."""


class _Refuse(Exception):
    """A member that must not be unpacked; the message completes 'member X ...'."""


class _Done:
    __slots__ = ("hexdigest", "size")

    def __init__(self, hexdigest: str, size: int) -> None:
        self.hexdigest = hexdigest
        self.size = size


class _Failed:
    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class _NotInLayer(_Refuse):
    """A path a hardlink refers to does not exist in this layer."""


class _Stopped(Exception):
    pass


class _ChunkStream:
    """The uncompressed tar stream, produced by a helper thread that decompresses and
    hashes; read here in 512-byte headers and bulk data copies."""

    def __init__(self, chunks: Callable[[], Iterator[bytes]], name: str) -> None:
        self._name = name
        self._q: queue.Queue[bytes | _Done | _Failed] = queue.Queue(_QUEUE_DEPTH)
        self._stop = threading.Event()
        self._chunk = b""
        self._mv = memoryview(b"")
        self._pos = 0
        self._end = 0
        self._done: _Done | None = None
        self._thread = threading.Thread(
            target=self._produce, args=(chunks,), name="minirun-unpack", daemon=True
        )
        self._thread.start()

    # -- helper thread
    def _put(self, item: bytes | _Done | _Failed) -> None:
        while True:
            if self._stop.is_set():
                raise _Stopped
            try:
                self._q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _produce(self, chunks: Callable[[], Iterator[bytes]]) -> None:
        h = hashlib.sha256()
        size = 0
        try:
            for c in chunks():
                h.update(c)
                size += len(c)
                self._put(c)
            self._put(_Done(h.hexdigest(), size))
        except _Stopped:
            pass
        except zlib.error as e:
            self._fail(_Corrupt(f"gzip: {e}"))
        except Exception as e:  # noqa: BLE001 - handed to the reader, re-raised there
            if type(e).__name__ == "ZstdError":
                self._fail(_Corrupt(f"zstd: {e}"))
            else:
                self._fail(e)

    def _fail(self, exc: BaseException) -> None:
        try:
            self._put(_Failed(exc))
        except _Stopped:
            pass

    # -- reader side
    def _next_chunk(self) -> bool:
        """Load the next chunk; False at the end of the stream."""
        if self._done is not None:
            return False
        item = self._q.get()
        if isinstance(item, bytes):
            self._chunk = item
            self._mv = memoryview(item)
            self._pos = 0
            self._end = len(item)
            return True
        if isinstance(item, _Done):
            self._done = item
            return False
        raise item.exc

    def block(self) -> bytes | None:
        """Next 512-byte block, or None at a clean end of stream (block boundary)."""
        pos = self._pos
        if pos + _BLOCK <= self._end:
            self._pos = pos + _BLOCK
            return self._chunk[pos : pos + _BLOCK]
        parts = [self._chunk[pos:]]
        have = self._end - pos
        self._pos = self._end
        while have < _BLOCK:
            if not self._next_chunk():
                if have == 0:
                    return None
                raise _Corrupt("unexpected end of data in a header")
            take = min(_BLOCK - have, self._end)
            parts.append(self._chunk[:take])
            self._pos = take
            have += take
        return b"".join(parts)

    def read(self, n: int) -> bytes:
        """n bytes of member data plus its padding to the next block."""
        parts = []
        want = n
        while want:
            if self._pos == self._end and not self._next_chunk():
                raise _Corrupt("unexpected end of data")
            take = min(want, self._end - self._pos)
            parts.append(self._chunk[self._pos : self._pos + take])
            self._pos += take
            want -= take
        self.skip(-n % _BLOCK)
        return b"".join(parts)

    def copy_to(self, fd: int, n: int) -> None:
        """Write n bytes of member data to fd (zero-copy slices), then skip padding."""
        pad = -n % _BLOCK
        while n:
            if self._pos == self._end and not self._next_chunk():
                raise _Corrupt("unexpected end of file data")
            take = min(n, self._end - self._pos)
            written = os.write(fd, self._mv[self._pos : self._pos + take])
            self._pos += written
            n -= written
        if pad:
            self.skip(pad)

    def skip(self, n: int) -> None:
        while n:
            if self._pos == self._end and not self._next_chunk():
                raise _Corrupt("unexpected end of data")
            take = min(n, self._end - self._pos)
            self._pos += take
            n -= take

    def finish(self) -> UnpackResult:
        """Consume the rest (end-of-archive zeros, padding) and return the digest."""
        try:
            while self._next_chunk():
                pass
        except _Corrupt as e:
            raise LayerError(f"layer {self._name}: truncated/corrupt archive: {e}") from None
        assert self._done is not None
        return UnpackResult(f"sha256:{self._done.hexdigest}", self._done.size)

    def stop(self) -> None:
        """Stop the helper thread (after success or error) and wait for it."""
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._q.get(timeout=0.05)
            except queue.Empty:
                pass
        self._thread.join()


# --------------------------------------------------------------------------------------
# Tar header parsing


def _num(field: bytes) -> int:
    """A numeric header field: octal ASCII, or GNU base-256 (first byte 0x80 / 0xff)."""
    if field and field[0] & 0x80:
        if field[0] == 0xFF:
            return int.from_bytes(field, "big", signed=True)
        return int.from_bytes(field[1:], "big")
    s = field.split(b"\0", 1)[0].strip()
    return int(s, 8) if s else 0


def _cstr(field: bytes) -> bytes:
    i = field.find(b"\0")
    return field if i < 0 else field[:i]


def _pax_records(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    pos = 0
    n = len(data)
    while pos < n:
        if data[pos] == 0:  # some writers pad the body with NULs
            break
        sp = data.index(b" ", pos)
        length = int(data[pos:sp])
        end = pos + length
        if length <= 0 or end > n or data[end - 1] != 0x0A:
            raise ValueError("bad PAX record length")
        key, eq, value = data[sp + 1 : end - 1].partition(b"=")
        if not eq:
            raise ValueError("PAX record without '='")
        yield key, value
        pos = end


def _pax_time_ns(v: bytes) -> int:
    neg = v.startswith(b"-")
    sec, _, frac = v.lstrip(b"-").partition(b".")
    ns = int(sec or b"0") * 1_000_000_000 + int((frac + b"000000000")[:9] or b"0")
    return -ns if neg else ns


def _show(b: bytes) -> str:
    """A member name (or link target) for a message: undecodable bytes as \\xNN, and
    newlines and other non-printable characters escaped too, so the message is one line."""
    text = b.decode("utf-8", "backslashreplace")
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


# --------------------------------------------------------------------------------------
# Extraction


class _Extractor:
    def __init__(self, stream: _ChunkStream, root_fd: int, name: str) -> None:
        self.s = stream
        self.root = root_fd
        self.layer = name
        self.as_root = os.geteuid() == 0
        self.dirs: dict[bytes, int] = {b"": root_fd}  # rel dir path -> open fd
        # Dir mode + mtime are applied at the end: children change mtime, and a
        # read-only dir mode must not block writing its children.
        self.pending: dict[bytes, tuple[int, int]] = {}
        self.member = b""

    # -- main loop
    def run(self) -> None:
        s = self.s
        gpax: dict[bytes, bytes] = {}
        pax: dict[bytes, bytes] | None = None
        longname: bytes | None = None
        longlink: bytes | None = None
        try:
            while True:
                hdr = s.block()
                if hdr is None or hdr == _ZERO_BLOCK:
                    # End of archive (a missing trailer is tolerated, as Go's tar does).
                    self.finish_dirs()
                    return
                self.member = longname or _cstr(hdr[:100])
                chk = sum(hdr) - sum(hdr[148:156]) + 256
                try:
                    stored = _num(hdr[148:156])
                    size = _num(hdr[124:136])
                except ValueError:
                    raise _Corrupt("bad header (not a tar archive?)") from None
                if stored != chk and stored != chk - 256 * sum(
                    1 for i, b in enumerate(hdr) if b > 127 and not 148 <= i < 156
                ):  # some old writers summed signed chars
                    raise _Corrupt("header checksum mismatch (not a tar archive?)")
                typ = hdr[156]
                if typ in (_PAX_X, _PAX_G, _GNU_LONGNAME, _GNU_LONGLINK):
                    if size > _META_MAX:
                        raise _Refuse(f"has an oversized metadata header ({size} bytes)")
                    body = s.read(size)
                    if typ == _GNU_LONGNAME:
                        longname = _cstr(body)
                    elif typ == _GNU_LONGLINK:
                        longlink = _cstr(body)
                    else:
                        try:
                            recs = dict(_pax_records(body))
                        except ValueError as e:
                            raise _Corrupt(f"bad PAX header: {e}") from None
                        if typ == _PAX_G:
                            gpax.update(recs)
                            gpax = {k: v for k, v in gpax.items() if v}
                        else:
                            pax = recs
                    continue
                if hdr[257:263] == b"ustar\0" and hdr[345] and longname is None:
                    # POSIX ustar prefix (GNU's "ustar  " puts atime there instead)
                    name = _cstr(hdr[345:500]) + b"/" + _cstr(hdr[:100])
                else:
                    name = longname if longname is not None else _cstr(hdr[:100])
                link = longlink if longlink is not None else _cstr(hdr[157:257])
                mode = _num(hdr[100:108]) & 0o7777
                uid = _num(hdr[108:116])
                gid = _num(hdr[116:124])
                mtime_ns = _num(hdr[136:148]) * 1_000_000_000
                xattrs: list[tuple[bytes, bytes]] | None = None
                if pax is not None or gpax:
                    p = {**gpax, **pax} if pax is not None else gpax
                    name = p.get(b"path", name)
                    link = p.get(b"linkpath", link)
                    size = int(p.get(b"size", size))
                    uid = int(p.get(b"uid", uid))
                    gid = int(p.get(b"gid", gid))
                    if b"mtime" in p:
                        mtime_ns = _pax_time_ns(p[b"mtime"])
                    for k, v in p.items():
                        if k.startswith(b"SCHILY.xattr."):
                            if xattrs is None:
                                xattrs = []
                            xattrs.append((k[13:], v))
                        elif k.startswith(b"GNU.sparse."):
                            raise _Refuse("is a GNU sparse file (unsupported member type)")
                pax = longname = longlink = None
                self.member = name
                # hostile numbers: a negative size would make the readers below loop
                # forever; ids and times outside what the kernel takes would escape later
                if not 0 <= size < 1 << 63:
                    raise _Corrupt(f"bad member size {size}")
                if not (0 <= uid < (1 << 32) - 1 and 0 <= gid < (1 << 32) - 1):
                    raise _Corrupt(f"uid/gid out of range ({uid}:{gid})")
                if not -(1 << 63) <= mtime_ns // 1_000_000_000 < 1 << 63:
                    raise _Corrupt("modification time out of range")
                if typ == _AREG and name.endswith(b"/"):
                    typ = _DIR  # pre-POSIX directory
                self.one(name, typ, size, mode, uid, gid, mtime_ns, link, hdr, xattrs)
        except _Refuse as e:
            raise LayerError(f"layer {self.layer}: member '{_show(self.member)}' {e}") from None
        except _Corrupt as e:
            raise LayerError(
                f"layer {self.layer}: truncated/corrupt archive near member "
                f"'{_show(self.member)}': {e}"
            ) from None
        except OSError as e:
            raise LayerError(
                f"layer {self.layer}: member '{_show(self.member)}': "
                f"{e.strerror or e} (errno {e.errno})"
            ) from None
        except ValueError as e:  # bad PAX numbers, NUL in a name...
            raise LayerError(
                f"layer {self.layer}: member '{_show(self.member)}': invalid header ({e})"
            ) from None
        finally:
            self._close_dirs()

    def finish_dirs(self) -> None:
        for rel, (mode, mtime_ns) in self.pending.items():
            parent, _, base = rel.rpartition(b"/")
            if not rel:
                os.chmod(self.root, mode)
                os.utime(self.root, ns=(mtime_ns, mtime_ns))
                continue
            if len(self.dirs) > _DIR_CACHE_MAX:
                self._close_dirs()
            pfd = self._dirfd(parent, create=False)
            os.chmod(base, mode, dir_fd=pfd)  # a dir we made (replacement drops the record)
            os.utime(base, ns=(mtime_ns, mtime_ns), dir_fd=pfd, follow_symlinks=False)

    # -- one member
    def one(
        self,
        raw: bytes,
        typ: int,
        size: int,
        mode: int,
        uid: int,
        gid: int,
        mtime_ns: int,
        link: bytes,
        hdr: bytes,
        xattrs: list[tuple[bytes, bytes]] | None,
    ) -> None:
        rel = self._normalise(raw)
        parent, _, base = rel.rpartition(b"/")
        if b"/.wh." in b"/" + parent:
            raise _Refuse("has a whiteout name as a parent directory")
        body = size if typ in (_REG, _AREG, _CONTIG) else 0
        if len(self.dirs) > _DIR_CACHE_MAX:
            self._close_dirs()

        if base.startswith(_WH):
            self.s.skip(body + (-body % _BLOCK))
            self._whiteout(parent, base)
            return
        if not rel:
            if typ != _DIR:
                raise _Refuse("would replace the layer root with a non-directory")
            if self.as_root:
                os.fchown(self.root, uid, gid)
            self._xattrs(self.root, None, xattrs)
            self.pending[b""] = (mode, mtime_ns)
            self.s.skip(body + (-body % _BLOCK))
            return

        pfd = self._dirfd(parent, create=True)
        if typ in (_REG, _AREG, _CONTIG):
            try:
                fd = os.open(base, _O_NEWFILE, 0o600, dir_fd=pfd)
            except FileExistsError:
                self._remove(pfd, base, rel)
                fd = os.open(base, _O_NEWFILE, 0o600, dir_fd=pfd)
            try:
                if size:
                    self.s.copy_to(fd, size)
                if self.as_root:
                    os.fchown(fd, uid, gid)
                os.fchmod(fd, mode)  # after chown: chown clears setuid/setgid
                if xattrs:
                    self._xattrs(fd, None, xattrs)  # after chown: it drops capabilities
                os.utime(fd, ns=(mtime_ns, mtime_ns))
            finally:
                os.close(fd)
        elif typ == _DIR:
            self._mkdir(pfd, base, rel)
            if self.as_root:
                os.chown(base, uid, gid, dir_fd=pfd, follow_symlinks=False)
            if xattrs:
                dfd = os.open(base, _O_DIR, dir_fd=pfd)
                try:
                    self._xattrs(dfd, None, xattrs)
                finally:
                    os.close(dfd)
            self.pending[rel] = (mode, mtime_ns)
        elif typ == _SYM:
            if not link:
                raise _Refuse("is a symlink with an empty target")
            self._create(lambda: os.symlink(link, base, dir_fd=pfd), pfd, base, rel)
            self._finish_node(pfd, base, uid, gid, None, mtime_ns, xattrs)
        elif typ == _LNK:
            self._hardlink(pfd, base, rel, link)
        elif typ in (_CHR, _BLK, _FIFO):
            if typ == _FIFO:
                fmt, dev = stat.S_IFIFO, 0
            else:
                fmt = stat.S_IFCHR if typ == _CHR else stat.S_IFBLK
                dev = os.makedev(_num(hdr[329:337]), _num(hdr[337:345]))
            self._create(lambda: os.mknod(base, fmt | 0o600, dev, dir_fd=pfd), pfd, base, rel)
            self._finish_node(pfd, base, uid, gid, mode, mtime_ns, xattrs)
        else:
            what = _TYPE_NAMES.get(typ, "unknown")
            raise _Refuse(f"has unsupported member type {chr(typ)!r} ({what})")

    # -- paths
    def _normalise(self, raw: bytes, what: str = "") -> bytes:
        """Lexical normalisation like tar: drop leading '/', '.' and empty components;
        resolve '..' lexically and refuse any that climbs above the root."""
        if b"\0" in raw:
            raise _Refuse("has a NUL byte in its name")
        if (
            b".." not in raw
            and b"/." not in raw
            and b"//" not in raw
            and raw[:1] not in (b"/", b".")
        ):
            return raw.rstrip(b"/")  # fast path: already clean (the common case)
        parts: list[bytes] = []
        for c in raw.split(b"/"):
            if c == b"" or c == b".":
                continue
            if c == b"..":
                if not parts:
                    raise _Refuse(f"{what}escapes the layer root")
                parts.pop()
            else:
                parts.append(c)
        return b"/".join(parts)

    def _dirfd(self, rel: bytes, *, create: bool) -> int:
        """fd of directory rel, walked from the root without following any symlink;
        missing parents are created (0755, as tar does) when create is set.

        A loop, not a recursion: a member may have more components than Python's recursion
        limit. The walk starts at the deepest ancestor already open; the directories it
        opens are cached while the cache has room (rel's own fd always is: callers use it),
        the others closed as soon as the next level is open."""
        fd = self.dirs.get(rel)
        if fd is not None:
            return fd
        pos = len(rel)  # rel[:pos] is the open ancestor (pos -1: the root)
        while True:
            pos = rel.rfind(b"/", 0, pos)
            if pos < 0 or rel[:pos] in self.dirs:
                break
        pfd = self.dirs[rel[:pos]] if pos >= 0 else self.root
        spare: int | None = None  # pfd, when it is an uncached fd of ours to close
        try:
            while True:
                end = rel.find(b"/", pos + 1)
                last = end < 0
                if last:
                    end = len(rel)
                cur = rel[:end]
                fd = self._open_dir(pfd, rel[pos + 1 : end], cur, create)
                if spare is not None:
                    os.close(spare)
                    spare = None
                if last or len(self.dirs) <= _DIR_CACHE_MAX:
                    self.dirs[cur] = fd
                else:
                    spare = fd
                if last:
                    return fd
                pfd, pos = fd, end
        finally:
            if spare is not None:
                os.close(spare)

    def _open_dir(self, pfd: int, base: bytes, rel: bytes, create: bool) -> int:
        """fd of directory base in pfd (rel: its path, for messages), made if missing and
        create is set; never through a symlink."""
        try:
            fd = os.open(base, _O_DIR, dir_fd=pfd)
        except FileNotFoundError:
            if not create:
                raise _NotInLayer(f"refers to '{_show(rel)}', which is not in this layer") from None
            os.mkdir(base, 0o755, dir_fd=pfd)
            fd = os.open(base, _O_DIR, dir_fd=pfd)
            os.fchmod(fd, 0o755)  # umask-independent
        except OSError as e:
            if e.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            st = os.stat(base, dir_fd=pfd, follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                # The core defence: never write through a symlink (e.g. one the layer
                # planted: 'x -> /etc' then 'x/passwd').
                raise _Refuse(f"has a path through the symlink '{_show(rel)}' (refused)") from None
            if not create or not is_overlay_whiteout(st):
                raise _Refuse(f"has a parent '{_show(rel)}' that is not a directory") from None
            # A whiteout of this layer, then children: lower 'rel' deleted, new dir here.
            os.unlink(base, dir_fd=pfd)
            os.mkdir(base, 0o755, dir_fd=pfd)
            fd = os.open(base, _O_DIR, dir_fd=pfd)
            os.fchmod(fd, 0o755)
            os.setxattr(fd, OVERLAY_OPAQUE_XATTR, b"y")
        return fd

    def _close_dirs(self) -> None:
        for rel, fd in self.dirs.items():
            if rel:
                os.close(fd)
        self.dirs = {b"": self.root}

    def _forget(self, rel: bytes) -> None:
        """rel (a dir) is being removed: drop cached fds and pending metadata below it."""
        pre = rel + b"/"
        for k in [k for k in self.dirs if k == rel or k.startswith(pre)]:
            os.close(self.dirs.pop(k))
        for k in [k for k in self.pending if k == rel or k.startswith(pre)]:
            del self.pending[k]

    def _remove(self, pfd: int, base: bytes, rel: bytes) -> os.stat_result:
        """Remove what is at rel (an earlier entry of this layer: later entries win)."""
        st = os.stat(base, dir_fd=pfd, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            self._forget(rel)
            shutil.rmtree(base, dir_fd=pfd)  # fd-based: never follows symlinks
        else:
            os.unlink(base, dir_fd=pfd)
        return st

    def _create(self, make: Callable[[], None], pfd: int, base: bytes, rel: bytes) -> None:
        try:
            make()
        except FileExistsError:
            self._remove(pfd, base, rel)
            make()

    def _mkdir(self, pfd: int, base: bytes, rel: bytes) -> None:
        try:
            os.mkdir(base, 0o700, dir_fd=pfd)
            return
        except FileExistsError:
            pass
        st = os.stat(base, dir_fd=pfd, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            return  # dir over dir: merge, as tar does; metadata is updated
        self._remove(pfd, base, rel)
        os.mkdir(base, 0o700, dir_fd=pfd)
        if is_overlay_whiteout(st):
            self._set_opaque(pfd, base)

    def _set_opaque(self, pfd: int, base: bytes) -> None:
        fd = os.open(base, _O_DIR, dir_fd=pfd) if base else pfd
        try:
            os.setxattr(fd, OVERLAY_OPAQUE_XATTR, b"y")
        finally:
            if base:
                os.close(fd)

    # -- member kinds
    def _whiteout(self, parent: bytes, base: bytes) -> None:
        if base == _OPQ:
            os.setxattr(self._dirfd(parent, create=True), OVERLAY_OPAQUE_XATTR, b"y")
            return
        if base.startswith(_WH_META):
            return  # aufs bookkeeping (.wh..wh.plnk, .wh..wh.aufs): skipped, as Docker does
        victim = base[len(_WH) :]
        if victim in (b"", b".", b".."):
            raise _Refuse("is a whiteout that names no entry of its directory")
        pfd = self._dirfd(parent, create=True)
        try:
            st = os.stat(victim, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            os.mknod(victim, stat.S_IFCHR, os.makedev(0, 0), dir_fd=pfd)
            return
        if stat.S_ISDIR(st.st_mode):
            # This layer's dir wins but lower victim/* must stay hidden.
            self._set_opaque(pfd, victim)

    def _hardlink(self, pfd: int, base: bytes, rel: bytes, link: bytes) -> None:
        target = self._normalise(link, f"is a hardlink whose target '{_show(link)}' ")
        if not target:
            raise _Refuse("is a hardlink to the layer root")
        tparent, _, tbase = target.rpartition(b"/")
        missing = f"is a hardlink to '{_show(link)}', which is not (yet) in this layer"
        try:
            tfd = self._dirfd(tparent, create=False)
        except _NotInLayer:
            raise _Refuse(missing) from None
        except _Refuse as e:
            raise _Refuse(f"is a hardlink to '{_show(link)}', whose path {e.args[0][4:]}") from None
        if target == rel:
            return  # a link to itself: nothing to do
        try:
            tst = os.stat(tbase, dir_fd=tfd, follow_symlinks=False)
        except FileNotFoundError:
            raise _Refuse(missing) from None
        if stat.S_ISDIR(tst.st_mode):
            raise _Refuse(f"is a hardlink to the directory '{_show(link)}'")
        self._create(
            lambda: os.link(tbase, base, src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False),
            pfd,
            base,
            rel,
        )

    def _finish_node(
        self,
        pfd: int,
        base: bytes,
        uid: int,
        gid: int,
        mode: int | None,
        mtime_ns: int,
        xattrs: list[tuple[bytes, bytes]] | None,
    ) -> None:
        """Owner, mode, xattrs, mtime of a symlink / device / fifo just created at base."""
        if self.as_root:
            os.chown(base, uid, gid, dir_fd=pfd, follow_symlinks=False)
        if mode is not None:
            os.chmod(base, mode, dir_fd=pfd)  # a node we just made, never a symlink
        if xattrs:
            self._xattrs(pfd, base, xattrs)
        os.utime(base, ns=(mtime_ns, mtime_ns), dir_fd=pfd, follow_symlinks=False)

    def _xattrs(
        self, fd: int, base: bytes | None, xattrs: list[tuple[bytes, bytes]] | None
    ) -> None:
        """Set xattrs on fd itself, or on base inside dir fd (no fd for symlinks and
        device nodes: go through /proc/self/fd, never following base)."""
        if not xattrs:
            return
        for key, value in xattrs:
            if key.startswith(b"trusted.overlay.") or not key:
                continue  # only whiteout markers may steer overlayfs (see module doc)
            try:
                if base is None:
                    os.setxattr(fd, key, value)
                else:
                    path = b"/proc/self/fd/%d/%s" % (fd, base)
                    os.setxattr(path, key, value, follow_symlinks=False)
            except OSError as e:
                if e.errno in (errno.EOPNOTSUPP, errno.ENOTSUP):
                    continue  # the filesystem has no such namespace: skip, as tar does
                raise
