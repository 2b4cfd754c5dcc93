"""Read the merged view of a stack of layer dirs the way overlayfs would show it,
without mounting anything: a whiteout deletes, an opaque dir hides what is below it.

Nothing here follows a symlink (every component is opened with O_NOFOLLOW relative to
its parent), so a hostile image cannot make minirun read a host file.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Sequence

from minirun.image.whiteout import OVERLAY_OPAQUE_XATTR, is_overlay_whiteout

OPAQUE_XATTR = OVERLAY_OPAQUE_XATTR


def is_opaque(path_or_fd: str | int) -> bool:
    with contextlib.suppress(OSError):
        if isinstance(path_or_fd, int):
            return os.getxattr(path_or_fd, OPAQUE_XATTR) == b"y"
        return os.getxattr(path_or_fd, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    return False


def _lookup(top: str, parts: list[str], want_data: bool, limit: int
            ) -> tuple[os.stat_result | None, bytes | None, bool]:
    """Look in one layer. Returns (stat, data, final): final means lower layers don't
    matter (found, whited out, or hidden by an opaque dir or a non-dir on the path)."""
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    opaque = False
    try:
        for i, name in enumerate(parts):
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                return None, None, opaque
            if is_overlay_whiteout(st):
                return None, None, True
            if i == len(parts) - 1:
                data = None
                if want_data and stat.S_ISREG(st.st_mode):
                    ffd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
                    with os.fdopen(ffd, "rb") as f:
                        data = f.read(limit)
                return st, data, True
            if not stat.S_ISDIR(st.st_mode):
                return None, None, True  # a file or symlink where a dir should be: nothing below
            nfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = nfd
            opaque = opaque or is_opaque(fd)
        return os.fstat(fd), None, True
    finally:
        os.close(fd)


def stat_merged(layer_dirs: Sequence[str], relpath: str) -> os.stat_result | None:
    """lstat of ``relpath`` in the merged view of ``layer_dirs`` (topmost first)."""
    parts = [p for p in relpath.split("/") if p]
    for top in layer_dirs:
        st, _, final = _lookup(top, parts, False, 0)
        if final:
            return st
    return None


def read_merged(layer_dirs: Sequence[str], relpath: str, limit: int = 1 << 20) -> bytes | None:
    """The content of a regular file ``relpath`` in the merged view (None: absent, or not
    a regular file — a symlink is not followed)."""
    parts = [p for p in relpath.split("/") if p]
    for top in layer_dirs:
        _, data, final = _lookup(top, parts, True, limit)
        if final:
            return data
    return None


def list_merged(layer_dirs: Sequence[str], relpath: str) -> list[str]:
    """Names in directory ``relpath`` of the merged view (for opaque-dir diffs)."""
    names: set[str] = set()
    hidden: set[str] = set()
    parts = [p for p in relpath.split("/") if p]
    for top in layer_dirs:
        st, _, final = _lookup(top, parts, False, 0)
        if st is not None and stat.S_ISDIR(st.st_mode):
            path = os.path.join(top, *parts)
            with contextlib.suppress(OSError):
                for e in os.scandir(path):
                    est = e.stat(follow_symlinks=False)
                    if is_overlay_whiteout(est):
                        hidden.add(e.name)
                    elif e.name not in hidden:
                        names.add(e.name)
            if is_opaque(path):
                break
        elif final:
            break
    return sorted(names)
