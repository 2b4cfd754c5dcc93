"""Write tar archives of directories on the host the way Docker writes layer tars: an
overlayfs upper dir as an OCI layer (``commit``), or any tree of entries (``export``).

The format is what Go's ``archive/tar`` writes for Docker (moby pkg/archive): ustar
headers, a PAX extended header only for what ustar cannot hold (long or non-ASCII names,
big sizes and ids, xattrs as ``SCHILY.xattr.*``), numeric owners without names, mtimes
truncated to whole seconds, directories named with a trailing ``/``, parents before
their children in byte order, and two zero blocks at the end (no padding to a 10 KiB
record, unlike ``tarfile``). A file with several links is stored once; its other names
are hardlink entries to the first. Sockets are skipped, as Docker does.

The writer reads through directory fds only: every name is looked up with
``O_NOFOLLOW`` relative to its parent's fd, a symlink is read with ``readlinkat`` and
never followed, and xattrs of non-directories are read without following the last
component. A running container that swaps a directory for a symlink to ``/`` while a tree
is being read cannot make minirun read a host file.

:func:`write_upper` is the container layer's conversion: a char device 0:0 (overlayfs's
whiteout) becomes ``.wh.NAME``, a directory with ``trusted.overlay.opaque=y`` (or
``user.overlay.opaque=y``, the userxattr form) is followed by ``DIR/.wh..wh..opq``, and
overlayfs's own xattrs are left out.
"""

from __future__ import annotations

import errno
import gzip
import os
import stat
from collections.abc import Callable, Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from minirun.errors import ContainerError
from minirun.image.whiteout import (
    OPAQUE_MARKER,
    OVERLAY_OPAQUE_XATTR,
    WHITEOUT_PREFIX,
    is_overlay_whiteout,
)

_BLOCK = 512
_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_O_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CHUNK = 1 << 20

# overlayfs's own namespaces (the second when mounted with userxattr): never in a layer
OVERLAY_XATTR_PREFIXES = (b"trusted.overlay.", b"user.overlay.")
USER_OPAQUE_XATTR = "user.overlay.opaque"
# what a container layer cannot be committed with: the data or the name of such an entry
# lives in a lower layer (redirect_dir, metacopy), which a layer tar cannot express
_UNSUPPORTED = {b"redirect": "renamed directories (redirect_dir)", b"metacopy": "metadata-only copy-ups (metacopy)"}

_REG, _LNK, _SYM, _CHR, _BLK, _DIR, _FIFO, _PAX = b"0", b"1", b"2", b"3", b"4", b"5", b"6", b"x"


class Sink(Protocol):
    def write(self, b: bytes, /) -> int: ...


@dataclass(frozen=True)
class LayerBlob:
    """A gzip layer tar written to a file: its digests (OCI diff_id and blob digest)."""

    diff_id: str  # sha256 of the uncompressed tar
    digest: str  # sha256 of the gzip stream (the blob)
    size: int  # bytes of the blob
    tar_size: int  # bytes of the uncompressed tar
    entries: int  # members written (0: an empty layer)


def read_xattrs(dirfd: int, name: str) -> dict[bytes, bytes]:
    """Every xattr of ``name`` in directory ``dirfd``, the last component not followed."""
    path = f"/proc/self/fd/{dirfd}/{name}"
    try:
        keys = os.listxattr(path, follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOENT):
            return {}
        raise
    out: dict[bytes, bytes] = {}
    for key in keys:
        try:
            out[os.fsencode(key)] = os.getxattr(path, key, follow_symlinks=False)
        except OSError as e:
            if e.errno not in (errno.ENODATA, errno.ENOENT, errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
    return out


def is_overlay_xattr(key: bytes) -> bool:
    return key.startswith(OVERLAY_XATTR_PREFIXES)


def sorted_names(dirfd: int) -> list[str]:
    """A directory's names in byte order (Go's filepath.Walk order)."""
    return sorted(os.listdir(dirfd), key=os.fsencode)


class TarWriter:
    """Writes tar members to ``out`` (any object with ``write``); see the module doc."""

    def __init__(self, out: Sink) -> None:
        self.out = out
        self.entries = 0
        self._links: dict[tuple[int, int], bytes] = {}  # (dev, ino) -> first name written

    # -- members

    def add(self, dirfd: int, name: str, rel: str, st: os.stat_result,
            xattrs: dict[bytes, bytes] | None = None) -> None:
        """The entry ``name`` of directory ``dirfd``, stored as ``rel``; ``st`` is its lstat.
        A directory's children are the caller's to add (after it)."""
        arcname = os.fsencode(rel)
        mode = stat.S_IMODE(st.st_mode)
        fmt = stat.S_IFMT(st.st_mode)
        if fmt == stat.S_IFSOCK:
            return  # Docker: "archive: skipping since it is a socket"
        if fmt != stat.S_IFDIR and st.st_nlink > 1:
            key = (st.st_dev, st.st_ino)
            first = self._links.get(key)
            if first is not None:
                self._member(arcname, _LNK, st, mode, linkname=first, xattrs=xattrs)
                return
            self._links[key] = arcname
        if fmt == stat.S_IFDIR:
            self._member(arcname + b"/", _DIR, st, mode, xattrs=xattrs)
        elif fmt == stat.S_IFREG:
            if not self._file(dirfd, name, arcname, xattrs):
                self._links.pop((st.st_dev, st.st_ino), None)
        elif fmt == stat.S_IFLNK:
            target = os.fsencode(os.readlink(name, dir_fd=dirfd))
            self._member(arcname, _SYM, st, mode, linkname=target, xattrs=xattrs)
        elif fmt in (stat.S_IFCHR, stat.S_IFBLK):
            self._member(arcname, _CHR if fmt == stat.S_IFCHR else _BLK, st, mode, xattrs=xattrs,
                         dev=(os.major(st.st_rdev), os.minor(st.st_rdev)))
        elif fmt == stat.S_IFIFO:
            self._member(arcname, _FIFO, st, mode, xattrs=xattrs)

    def whiteout(self, rel: str, st: os.stat_result) -> None:
        """``.wh.NAME``: ``rel`` of the layers below is deleted (Docker: a regular file,
        mode 0600, the whiteout device's owner and mtime)."""
        parent, _, base = rel.rpartition("/")
        name = f"{parent}/{WHITEOUT_PREFIX}{base}" if parent else WHITEOUT_PREFIX + base
        self._member(os.fsencode(name), _REG, st, 0o600)

    def opaque(self, rel: str, st: os.stat_result) -> None:
        """``DIR/.wh..wh..opq``: what the layers below have in ``rel`` is hidden (Docker:
        the dir's permissions and owner, no mtime)."""
        self._member(os.fsencode(f"{rel}/{OPAQUE_MARKER}"), _REG, st, stat.S_IMODE(st.st_mode) & 0o777,
                     mtime=0)

    def close(self) -> None:
        """The end-of-archive marker: two zero blocks."""
        self.out.write(bytes(2 * _BLOCK))

    # -- encoding

    def _file(self, dirfd: int, name: str, arcname: bytes, xattrs: dict[bytes, bytes] | None) -> bool:
        """A regular file's header and content; False if it is gone or no longer a file
        (a running container changed it meanwhile)."""
        try:
            fd = os.open(name, _O_FILE, dir_fd=dirfd)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ELOOP, errno.ENXIO):
                return False
            raise
        try:
            fst = os.fstat(fd)
            if not stat.S_ISREG(fst.st_mode):
                return False
            size = fst.st_size
            self._member(arcname, _REG, fst, stat.S_IMODE(fst.st_mode), size=size, xattrs=xattrs)
            left = size
            while left:
                chunk = os.read(fd, min(_CHUNK, left))
                if not chunk:  # it shrank while being read: keep the archive consistent
                    self.out.write(bytes(left))
                    break
                self.out.write(chunk)
                left -= len(chunk)
            if size % _BLOCK:
                self.out.write(bytes(_BLOCK - size % _BLOCK))
            return True
        finally:
            os.close(fd)

    def _member(self, name: bytes, typ: bytes, st: os.stat_result, mode: int, *, size: int = 0,
                linkname: bytes = b"", xattrs: dict[bytes, bytes] | None = None,
                dev: tuple[int, int] = (0, 0), mtime: int | None = None) -> None:
        self.out.write(header(name, typ, mode=mode, uid=st.st_uid, gid=st.st_gid, size=size,
                              mtime=st.st_mtime_ns // 1_000_000_000 if mtime is None else mtime,
                              linkname=linkname, xattrs=xattrs, dev=dev))
        self.entries += 1


def header(name: bytes, typ: bytes, *, mode: int, uid: int, gid: int, size: int = 0, mtime: int = 0,
           linkname: bytes = b"", xattrs: dict[bytes, bytes] | None = None,
           dev: tuple[int, int] = (0, 0)) -> bytes:
    """One member's header block(s): a PAX extended header first when needed."""
    pax: list[tuple[bytes, bytes]] = []
    if len(name) > 100 or not name.isascii():
        pax.append((b"path", name))
    if len(linkname) > 100 or not linkname.isascii():
        pax.append((b"linkpath", linkname))
    for key, value, digits in ((b"size", size, 11), (b"uid", uid, 7), (b"gid", gid, 7), (b"mtime", mtime, 11)):
        if not 0 <= value < 8 ** digits:
            pax.append((key, str(value).encode()))
    for key in sorted(xattrs or {}):
        pax.append((b"SCHILY.xattr." + key, (xattrs or {})[key]))
    out = b""
    if pax:
        body = b"".join(_pax_record(k, v) for k, v in pax)
        d, _, f = name.rstrip(b"/").rpartition(b"/")
        pax_name = (d + b"/" if d else b"") + b"PaxHeaders.0/" + f
        out = _ustar(_ascii(pax_name), _PAX, 0, 0, 0, len(body), 0, b"", (0, 0))
        out += body + bytes(-len(body) % _BLOCK)
    return out + _ustar(_ascii(name), typ, mode, uid, gid, size, mtime, _ascii(linkname), dev)


def _ascii(b: bytes) -> bytes:
    """What the ustar field holds when PAX has the real value: ASCII, at most 100 bytes."""
    return bytes(c if c < 128 else 0x3F for c in b)[:100]


def _pax_record(key: bytes, value: bytes) -> bytes:
    body = b" " + key + b"=" + value + b"\n"
    n = len(body) + len(str(len(body)))
    n = len(body) + len(str(n))  # the length counts its own digits
    return str(n).encode() + body


def _ustar(name: bytes, typ: bytes, mode: int, uid: int, gid: int, size: int, mtime: int,
           linkname: bytes, dev: tuple[int, int]) -> bytes:
    h = bytearray(_BLOCK)
    h[0:len(name)] = name
    _num(h, 100, 8, mode)
    _num(h, 108, 8, uid)
    _num(h, 116, 8, gid)
    _num(h, 124, 12, size)
    _num(h, 136, 12, mtime)
    h[148:156] = b" " * 8
    h[156:157] = typ
    h[157:157 + len(linkname)] = linkname
    h[257:265] = b"ustar\x0000"
    _num(h, 329, 8, dev[0], base256=True)
    _num(h, 337, 8, dev[1], base256=True)
    h[148:156] = b"%06o\x00 " % sum(h)
    return bytes(h)


def _num(h: bytearray, off: int, width: int, value: int, base256: bool = False) -> None:
    """Octal, NUL-terminated (Go's format); out of range: 0 (a PAX record has it), or
    GNU base-256 for the device numbers, which PAX cannot carry."""
    if 0 <= value < 8 ** (width - 1):
        h[off:off + width] = b"%0*o\x00" % (width - 1, value)
    elif base256 and 0 <= value < 1 << (8 * (width - 1)):
        h[off:off + width] = b"\x80" + value.to_bytes(width - 1, "big")
    else:
        h[off:off + width] = b"%0*o\x00" % (width - 1, 0)


# -- the container layer ----------------------------------------------------------------


def write_upper(w: TarWriter, upper: str, exclude: AbstractSet[str] = frozenset()) -> None:
    """The overlayfs upper dir ``upper`` as OCI layer members (the root itself is not a
    member, as in Docker's layer tars). ``exclude``: relative paths to leave out (with
    everything below them). ContainerError for what a layer tar cannot express."""
    root = os.open(upper, _O_DIR)
    stack: list[tuple[int, str, Iterator[str]]] = [(root, "", iter(sorted_names(root)))]
    try:
        while stack:
            dirfd, rel, names = stack[-1]
            name = next(names, None)
            if name is None:
                stack.pop()
                os.close(dirfd)
                continue
            child = f"{rel}/{name}" if rel else name
            if child in exclude:
                continue
            try:
                st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
            except FileNotFoundError:
                continue  # gone meanwhile
            if is_overlay_whiteout(st):
                w.whiteout(child, st)
                continue
            raw = read_xattrs(dirfd, name)
            _check_supported(raw, child)
            xattrs = {k: v for k, v in raw.items() if not is_overlay_xattr(k)}
            if not stat.S_ISDIR(st.st_mode):
                w.add(dirfd, name, child, st, xattrs)
                continue
            try:
                cfd = os.open(name, _O_DIR, dir_fd=dirfd)
            except OSError as e:
                if e.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
                    continue  # replaced meanwhile
                raise
            try:
                w.add(dirfd, name, child, st, xattrs)
                if raw.get(os.fsencode(OVERLAY_OPAQUE_XATTR)) == b"y" or raw.get(os.fsencode(USER_OPAQUE_XATTR)) == b"y":
                    w.opaque(child, st)
                names_below = iter(sorted_names(cfd))
            except BaseException:
                os.close(cfd)
                raise
            stack.append((cfd, child, names_below))
    finally:
        for fd, _, _ in stack:
            os.close(fd)


def _check_supported(raw: dict[bytes, bytes], rel: str) -> None:
    for prefix in OVERLAY_XATTR_PREFIXES:
        for what, text in _UNSUPPORTED.items():
            if prefix + what in raw:
                raise ContainerError(f"/{rel} is one of overlayfs's {text}, whose content lives in a "
                                     "lower layer; a layer tar cannot express that (mount without it)")


# -- gzip layer files -------------------------------------------------------------------


class _Hashing:
    def __init__(self, out: Sink) -> None:
        import hashlib

        self.out = out
        self.h = hashlib.sha256()
        self.size = 0

    def write(self, b: bytes, /) -> int:
        self.h.update(b)
        self.size += len(b)
        self.out.write(b)
        return len(b)

    def flush(self) -> None:
        pass

    @property
    def digest(self) -> str:
        return "sha256:" + self.h.hexdigest()


def write_gzip_layer(path: Path, fill: Callable[[TarWriter], None]) -> LayerBlob:
    """Write a gzip layer tar to ``path`` (Docker's application/vnd.oci.image.layer.v1.tar+gzip,
    reproducible: no name or mtime in the gzip header); ``fill`` adds the members."""
    with open(path, "wb") as f:
        outer = _Hashing(f)
        gz = gzip.GzipFile(filename="", fileobj=outer, mode="wb", compresslevel=6, mtime=0)
        inner = _Hashing(gz)
        w = TarWriter(inner)
        fill(w)
        w.close()
        gz.close()
    return LayerBlob(inner.digest, outer.digest, outer.size, inner.size, w.entries)


def write_gzip_stream(path: Path, chunks: Iterator[bytes]) -> LayerBlob:
    """Gzip an already made tar stream (``import``) to ``path``; ``entries`` is -1 (unknown)."""
    with open(path, "wb") as f:
        outer = _Hashing(f)
        gz = gzip.GzipFile(filename="", fileobj=outer, mode="wb", compresslevel=6, mtime=0)
        inner = _Hashing(gz)
        for chunk in chunks:
            inner.write(chunk)
        gz.close()
    return LayerBlob(inner.digest, outer.digest, outer.size, inner.size, -1)


def write_plain(out: BinaryIO, fill: Callable[[TarWriter], None]) -> int:
    """An uncompressed tar to ``out`` (``export``); the number of members."""
    w = TarWriter(out)
    fill(w)
    w.close()
    return w.entries
