"""Which compression a layer blob uses, told by its first bytes (media types lie)."""

from __future__ import annotations

import gzip
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
