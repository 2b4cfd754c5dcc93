"""``--filter KEY=VALUE`` flags, parsed once for every verb (ps, images, volume ls,
events, prune): Docker's rules, values of one key OR, keys AND."""

from __future__ import annotations

from collections.abc import Sequence

from minirun.errors import UsageError


def parse_filters(specs: Sequence[str], accepted: Sequence[str]) -> dict[str, list[str]]:
    """``--filter KEY=VALUE`` flags, by key (Docker: values of one key OR, keys AND)."""
    out: dict[str, list[str]] = {}
    for spec in specs:
        key, sep, value = spec.partition("=")
        key = key.strip().lower()
        if not sep:
            raise UsageError(f"bad format of filter {spec!r} (expected name=value)")
        if key not in accepted:
            raise UsageError(f"invalid filter '{key}' (supported: {', '.join(accepted)})")
        out.setdefault(key, []).append(value)
    return out
