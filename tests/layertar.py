"""Build layer tars for tests: a small declarative list of entries -> tar bytes.

tarfile is fine for *writing* test archives (it refuses nothing when writing), including
hostile names, PAX xattr records and GNU long names.
"""

from __future__ import annotations

import gzip
import io
import tarfile
from dataclasses import dataclass, field

MTIME = 1_600_000_000


@dataclass
class E:
    """One tar entry. kind: file, dir, symlink, hardlink, char, block, fifo, or a raw
    tarfile type byte (for unsupported types)."""

    name: str
    kind: str = "file"
    data: bytes = b""
    mode: int | None = None
    uid: int = 0
    gid: int = 0
    mtime: float = MTIME
    link: str = ""
    major: int = 0
    minor: int = 0
    xattrs: dict[str, bytes] = field(default_factory=dict)
    pax: dict[str, str] = field(default_factory=dict)


_TYPES = {
    "file": tarfile.REGTYPE,
    "dir": tarfile.DIRTYPE,
    "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE,
    "char": tarfile.CHRTYPE,
    "block": tarfile.BLKTYPE,
    "fifo": tarfile.FIFOTYPE,
}


def tar_bytes(entries: list[E], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for e in entries:
            ti = tarfile.TarInfo(e.name)
            ti.type = _TYPES.get(e.kind, e.kind.encode() if len(e.kind) == 1 else b"?")
            ti.mode = e.mode if e.mode is not None else (0o755 if e.kind == "dir" else 0o644)
            ti.uid, ti.gid = e.uid, e.gid
            ti.mtime = e.mtime
            ti.linkname = e.link
            ti.devmajor, ti.devminor = e.major, e.minor
            pax = dict(e.pax)
            for k, v in e.xattrs.items():
                # tarfile writes PAX values as UTF-8 text; binary values round-trip
                # through surrogateescape (as tarfile itself decodes them).
                pax["SCHILY.xattr." + k] = v.decode("utf-8", "surrogateescape")
            ti.pax_headers = pax
            if e.kind == "file":
                ti.size = len(e.data)
                tf.addfile(ti, io.BytesIO(e.data))
            else:
                tf.addfile(ti)
    return buf.getvalue()


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def zst(data: bytes) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor().compress(data)
