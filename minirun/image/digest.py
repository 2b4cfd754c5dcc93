"""Digests as the store addresses content: ``sha256:<64 lowercase hex>`` only."""

from __future__ import annotations

import re
from typing import Any

from minirun.errors import ManifestError

_DIGEST_RE = re.compile(r"sha256:[a-f0-9]{64}")  # fullmatch: "$" would accept a trailing "\n"


def check_digest(value: Any, where: str) -> str:
    """Only sha256 is accepted: it is the only algorithm the store addresses by."""
    if not isinstance(value, str) or not _DIGEST_RE.fullmatch(value):
        raise ManifestError(f"{where}: invalid or unsupported digest {value!r} (want sha256:<64 hex>)")
    return value


def hex_of(digest: str) -> str:
    return digest.split(":", 1)[1] if ":" in digest else digest


def short_id(digest: str) -> str:
    """The 12 hex characters Docker shows."""
    return hex_of(digest)[:12]
