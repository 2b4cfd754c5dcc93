"""Which compression a layer blob (or a whole archive given to ``load``) uses, told by its
first bytes (media types lie)."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from typing import BinaryIO

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def sniff(head: bytes) -> str:
    """'gzip', 'zstd' or 'none' for the first bytes of a blob."""
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    return "none"


def sniff_file(f: BinaryIO) -> str:
    pos = f.tell()
    kind = sniff(f.read(4))
    f.seek(pos)
    return kind


def open_decompressed(f: BinaryIO) -> BinaryIO:
    """A stream of the uncompressed tar inside a (seekable) layer blob."""
    kind = sniff_file(f)
    if kind == "gzip":
        return gzip.GzipFile(fileobj=f, mode="rb")  # type: ignore[return-value]
    if kind == "zstd":
        import zstandard  # only zstd layers pay for this import

        return zstandard.ZstdDecompressor().stream_reader(f, read_across_frames=True)
    return f


# -- whole archives (``docker save | gzip``) ----------------------------------------------

BZIP2_MAGIC = b"BZh"
XZ_MAGIC = b"\xfd7zXZ\x00"
_CHUNK = 1 << 20
# zstd's decompressobj has no output limit: a small input chunk bounds what one call can
# return (zstd's best ratio is ~32000:1, so 4 KiB in is at most ~128 MiB out)
_ZSTD_IN = 4096


class CorruptData(ValueError):
    """Compressed data that cannot be decompressed (bad, or cut short); one line."""


def sniff_archive(head: bytes) -> str:
    """What ``docker load`` accepts: 'gzip', 'zstd', 'bzip2', 'xz' or 'none'."""
    kind = sniff(head)
    if kind != "none":
        return kind
    if head.startswith(XZ_MAGIC):
        return "xz"
    if head.startswith(BZIP2_MAGIC):
        return "bzip2"
    return "none"


def decompressed_chunks(src: BinaryIO, kind: str) -> Iterator[bytes]:
    """The uncompressed bytes of ``src`` (a stream, read once), in bounded chunks: every
    frame or member (``cat a.gz b.gz``), checked to its end. Raises :class:`CorruptData`
    for bad or truncated data; errors of the reader's own source are that too."""
    if kind == "zstd":
        yield from _zstd_chunks(src)
        return
    import zlib

    if kind == "gzip":
        f: BinaryIO = gzip.GzipFile(fileobj=src, mode="rb")  # type: ignore[assignment]
        errors: tuple[type[BaseException], ...] = (OSError, EOFError, zlib.error)
    elif kind == "bzip2":
        import bz2

        f, errors = bz2.BZ2File(src), (OSError, EOFError)  # type: ignore[assignment]
    elif kind == "xz":
        import lzma

        f, errors = lzma.LZMAFile(src), (lzma.LZMAError, EOFError)  # type: ignore[assignment]
    else:
        raise ValueError(f"unknown compression {kind!r}")
    with f:
        while True:
            try:
                chunk = f.read(_CHUNK)
            except errors as e:
                raise CorruptData(_why(kind, e)) from None
            if not chunk:
                return
            yield chunk


def _zstd_chunks(src: BinaryIO) -> Iterator[bytes]:
    import zstandard

    dctx = zstandard.ZstdDecompressor()
    d = dctx.decompressobj()
    inside = False  # in the middle of a frame: the input must not end here
    try:
        while data := src.read(_ZSTD_IN):
            while data:
                inside = True
                out = d.decompress(data)
                if out:
                    yield out
                if not d.eof:
                    break
                data, d, inside = d.unused_data, dctx.decompressobj(), False  # the next frame
    except zstandard.ZstdError as e:
        raise CorruptData(_why("zstd", e)) from None
    if inside:
        raise CorruptData("zstd data is truncated (the stream ends inside a frame)")


def _why(kind: str, e: BaseException) -> str:
    if isinstance(e, EOFError):
        return f"{kind} data is truncated ({' '.join(str(e).split()) or 'unexpected end'})"
    return f"corrupt {kind} data ({' '.join(str(e).split()) or type(e).__name__})"
