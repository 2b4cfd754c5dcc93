"""``minirun diff``: what a container changed, read straight from its container layer
(the overlayfs upperdir), in ``docker diff``'s words: A added, C changed, D deleted.

A char device 0:0 in the upper dir is overlayfs's whiteout: D. A dir marked opaque
replaced the lower one wholesale: every lower child it no longer shows is D. A path
that the image's layers also have is C, otherwise A.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from minirun.container.layerview import is_opaque, list_merged, stat_merged
from minirun.image.whiteout import is_overlay_whiteout


@dataclass(frozen=True, order=True)
class Change:
    path: str
    kind: str  # "A", "C" or "D"

    def __str__(self) -> str:
        return f"{self.kind} {self.path}"


def changes(upper: str, lowerdirs: Sequence[str]) -> list[Change]:
    out: list[Change] = []

    def walk(rel: str) -> None:
        with os.scandir(os.path.join(upper, rel) if rel else upper) as it:
            entries = sorted(it, key=lambda e: e.name)
        for e in entries:
            path = f"{rel}/{e.name}" if rel else e.name
            st = e.stat(follow_symlinks=False)
            if is_overlay_whiteout(st):
                if stat_merged(lowerdirs, path) is not None:
                    out.append(Change("/" + path, "D"))
                continue
            in_lower = stat_merged(lowerdirs, path) is not None
            out.append(Change("/" + path, "C" if in_lower else "A"))
            if e.is_dir(follow_symlinks=False):
                if in_lower and is_opaque(e.path):
                    present = set(os.listdir(e.path))
                    out.extend(Change(f"/{path}/{n}", "D") for n in list_merged(lowerdirs, path)
                               if n not in present)
                walk(path)

    walk("")
    return sorted(out)
