"""``minirun export``: a container's whole filesystem as one flat tar (``docker export``),
for a running or a stopped container alike.

The tree is the merged view overlayfs shows, computed from the layer dirs themselves
(the container layer, the init layer, the image's layers, topmost first) instead of from
a mount: nothing is mounted, a stopped container needs no overlay, and what the runtime
mounts inside the container (/proc, /sys, /dev, the /etc binds, volumes) is never in it,
as in Docker, whose export reads the rootfs without the container's mounts. The init
layer's mount points (empty /etc/hosts, /etc/hostname, /etc/resolv.conf, /proc, /sys,
/dev) are, as Docker's export has its init layer's.

Merging: in each directory the topmost layer that has a name decides it; a whiteout
(char 0:0) hides it from the layers below; a directory is merged with the same
directory of the layers below until one of them is opaque, a whiteout or not a
directory. Metadata and xattrs come from the deciding layer, without overlayfs's own.
Every lookup goes through directory fds with ``O_NOFOLLOW`` (layertar's writer), so a
running container's symlinks never lead the reader out of its layers.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from minirun.image.layertar import TarWriter, is_overlay_xattr, read_xattrs, write_plain
from minirun.image.whiteout import OVERLAY_OPAQUE_XATTR, is_overlay_whiteout

if TYPE_CHECKING:
    from minirun.container.records import ContainerRecord
    from minirun.image.store import Store

_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def layer_stack(store: Store, rec: ContainerRecord) -> list[str]:
    """The container's layer dirs, topmost first: its own layer, init, the image's."""
    from minirun.container.lifecycle import stack
    from minirun.container.records import Containers

    containers = Containers(store)
    return [str(containers.dir(rec.id) / "upper"), *stack(containers, rec)]


def export(store: Store, rec: ContainerRecord, out: BinaryIO) -> int:
    """Write the container's merged filesystem to ``out`` as a tar; the member count."""
    layers = layer_stack(store, rec)
    return write_plain(out, lambda w: write_merged(w, layers))


def export_to_file(store: Store, rec: ContainerRecord, path: Path) -> int:
    """:func:`export` into ``path``, through a temporary file next to it that is renamed
    into place when complete (a failed export leaves no partial file). A path that is not
    a regular file (``/dev/stdout``, a fifo) is written to as it is; through a symlink,
    its target is replaced, not the link."""
    try:
        is_file = stat.S_ISREG(os.stat(path).st_mode)
    except FileNotFoundError:
        is_file = True
    if not is_file:
        with open(path, "wb") as f:
            return export(store, rec, f)
    given, path = path, Path(os.path.realpath(path))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        try:
            f = open(tmp, "wb")  # noqa: SIM115 - closed by the with below
        except OSError as e:  # say the user's path, not the temporary one
            raise OSError(e.errno, e.strerror, str(given)) from None
        with f:
            n = export(store, rec, f)
        os.replace(tmp, path)
        return n
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _opaque(fd: int) -> bool:
    with contextlib.suppress(OSError):
        return os.getxattr(fd, OVERLAY_OPAQUE_XATTR) == b"y"
    return False


def _open_dir(dirfd: int, name: str) -> int | None:
    try:
        return os.open(name, _O_DIR, dir_fd=dirfd)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
            return None  # gone, or replaced by a non-dir meanwhile
        raise


def _below(fds: Sequence[int], owner: int, name: str, top: int) -> list[int]:
    """The fds of directory ``name`` in each layer it merges from: ``top`` (its fd in
    layer ``owner``), then the layers below until one hides what is under it."""
    out = [top]
    if _opaque(top):
        return out
    try:
        for fd in fds[owner + 1:]:
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            if not stat.S_ISDIR(st.st_mode):
                break  # a whiteout or a non-dir: nothing further down shows
            cfd = _open_dir(fd, name)
            if cfd is None:
                break
            out.append(cfd)
            if _opaque(cfd):
                break
    except BaseException:
        for fd in out[1:]:
            os.close(fd)
        raise
    return out


def _children(fds: Sequence[int]) -> list[tuple[str, int, os.stat_result]]:
    """The merged entries of one directory (given as its fd in each layer, topmost
    first): (name, index of the deciding layer, its lstat), in byte order."""
    found: dict[str, tuple[int, os.stat_result]] = {}
    hidden: set[str] = set()
    for i, fd in enumerate(fds):
        for name in os.listdir(fd):
            if name in found or name in hidden:
                continue
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            if is_overlay_whiteout(st):
                hidden.add(name)
            else:
                found[name] = (i, st)
    return [(n, *found[n]) for n in sorted(found, key=os.fsencode)]


def write_merged(w: TarWriter, layers: Sequence[str]) -> None:
    """The merged view of ``layers`` (topmost first) as tar members, parents first; the
    root itself is not a member (Docker's export has none either)."""
    # the layer dirs themselves are the store's (short links under layers/l): followed
    roots: list[int] = []
    try:
        for p in layers:
            roots.append(os.open(p, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
    except BaseException:
        for fd in roots:
            os.close(fd)
        raise
    stack: list[tuple[list[int], str, Iterator[tuple[str, int, os.stat_result]]]] = []
    try:
        stack.append((roots, "", iter(_children(roots))))
        while stack:
            fds, rel, entries = stack[-1]
            item = next(entries, None)
            if item is None:
                stack.pop()
                if fds is not roots:
                    for fd in fds:
                        os.close(fd)
                continue
            name, owner, st = item
            child = f"{rel}/{name}" if rel else name
            xattrs = {k: v for k, v in read_xattrs(fds[owner], name).items() if not is_overlay_xattr(k)}
            if not stat.S_ISDIR(st.st_mode):
                w.add(fds[owner], name, child, st, xattrs)
                continue
            top = _open_dir(fds[owner], name)
            if top is None:
                continue
            try:
                below = _below(fds, owner, name, top)
            except BaseException:
                os.close(top)
                raise
            try:
                w.add(fds[owner], name, child, st, xattrs)
                entries_below = iter(_children(below))
            except BaseException:
                for fd in below:
                    os.close(fd)
                raise
            stack.append((below, child, entries_below))
    finally:
        for fds, _, _ in stack:
            if fds is not roots:
                for fd in fds:
                    os.close(fd)
        for fd in roots:
            os.close(fd)
