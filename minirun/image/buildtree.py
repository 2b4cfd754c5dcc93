"""What a build reads and what its COPY/ADD writes (see builder.py).

* :class:`Tree`: a read-only view of a stack of dirs merged as overlayfs merges its
  lowerdirs — the build context (a one-dir stack), or an image's or a stage's layers.
  Every path is read through dir fds with ``O_NOFOLLOW``; :meth:`Tree.resolve` follows
  symlinks *inside* the tree, as a chroot would.
* :class:`Plan`: the members of one COPY/ADD layer (path -> :class:`PlanEntry`), with
  the ownership, modes and times BuildKit gives them, its cache-key material, and the
  layer tar it writes.
* :func:`expand_sources`: a COPY source's ``filepath.Match`` wildcards, expanded.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import os
import stat
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from minirun.errors import BuildError
from minirun.image import dockerfile as df
from minirun.image.whiteout import OVERLAY_OPAQUE_XATTR, is_overlay_whiteout

if TYPE_CHECKING:
    from minirun.image.layertar import TarWriter

_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_O_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_MAX_LINKS = 40
_GLOB = set("*?[")


# -- reading trees: the context, or image layers merged as overlayfs would ---------------------


class Tree:
    """Read-only view of a stack of dirs (topmost first), merged as overlayfs merges
    lowerdirs (a whiteout deletes, an opaque dir hides what is below), never following a
    symlink. The build context is a one-dir stack."""

    def __init__(self, dirs: list[str]) -> None:
        self.dirs = dirs

    @staticmethod
    def _walk(top: str, parts: list[str]) -> tuple[int | None, bool, bool]:
        """Open dir ``parts`` in layer ``top``: (fd or None, nothing below matters, an
        opaque dir on the way)."""
        fd = os.open(top, _O_DIR)
        opaque = False
        for name in parts:
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                os.close(fd)
                return None, opaque, opaque
            if is_overlay_whiteout(st) or not stat.S_ISDIR(st.st_mode):
                os.close(fd)
                return None, True, opaque
            nfd = os.open(name, _O_DIR, dir_fd=fd)
            os.close(fd)
            fd = nfd
            with contextlib.suppress(OSError):
                opaque = opaque or os.getxattr(fd, OVERLAY_OPAQUE_XATTR) == b"y"
        return fd, False, opaque

    @staticmethod
    def _parts(rel: str) -> list[str]:
        return [p for p in rel.split("/") if p and p != "."]

    def provider(self, rel: str) -> tuple[str, os.stat_result] | None:
        """The layer dir that shows ``rel``, and its lstat; None if absent."""
        parts = self._parts(rel)
        if not parts:
            return (self.dirs[0], os.stat(self.dirs[0])) if self.dirs else None
        for top in self.dirs:
            fd, stop, opaque = self._walk(top, parts[:-1])
            if fd is None:
                if stop:
                    return None
                continue
            try:
                st = os.stat(parts[-1], dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                if opaque:
                    return None
                continue
            finally:
                os.close(fd)
            return None if is_overlay_whiteout(st) else (top, st)
        return None

    def lstat(self, rel: str) -> os.stat_result | None:
        found = self.provider(rel)
        return found[1] if found else None

    def children(self, rel: str) -> list[str]:
        parts = self._parts(rel)
        seen: set[str] = set()
        deleted: set[str] = set()
        for top in self.dirs:
            fd, stop, opaque = self._walk(top, parts)
            if fd is None:
                if stop:
                    break
                continue
            try:
                for name in os.listdir(fd):
                    if name in seen or name in deleted:
                        continue
                    st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                    (deleted if is_overlay_whiteout(st) else seen).add(name)
            finally:
                os.close(fd)
            if opaque:
                break
        return sorted(seen, key=os.fsencode)

    def _in_provider(self, rel: str) -> tuple[int, str]:
        found = self.provider(rel)
        if found is None:
            raise BuildError(f"/{rel} vanished while it was read")
        parts = self._parts(rel)
        fd, _, _ = self._walk(found[0], parts[:-1])
        if fd is None:
            raise BuildError(f"/{rel} vanished while it was read")
        return fd, parts[-1]

    def open(self, rel: str) -> int:
        fd, name = self._in_provider(rel)
        try:
            return os.open(name, _O_FILE, dir_fd=fd)
        finally:
            os.close(fd)

    def readlink(self, rel: str) -> str:
        fd, name = self._in_provider(rel)
        try:
            return os.readlink(name, dir_fd=fd)
        finally:
            os.close(fd)

    def resolve(self, path: str, follow_last: bool = True) -> str:
        """``path`` with its symlinks followed inside the tree (``..`` and absolute targets
        stop at its root, as in a chroot): the real relative path."""
        parts = self._parts(path)
        out: list[str] = []
        hops = 0
        while parts:
            p = parts.pop(0)
            if p == "..":
                if out:
                    out.pop()
                continue
            cand = "/".join([*out, p])
            st = self.lstat(cand)
            if st is not None and stat.S_ISLNK(st.st_mode) and (parts or follow_last):
                hops += 1
                if hops > _MAX_LINKS:
                    raise BuildError(f"/{path.lstrip('/')}: too many levels of symbolic links")
                target = self.readlink(cand)
                if target.startswith("/"):
                    out = []
                parts = self._parts(target) + parts
                continue
            out.append(p)
        return "/".join(out)


def _file_digest(tree: Tree, rel: str) -> str:
    h = hashlib.sha256()
    fd = tree.open(rel)
    try:
        while chunk := os.read(fd, 1 << 20):
            h.update(chunk)
    finally:
        os.close(fd)
    return h.hexdigest()


# -- COPY/ADD plans ----------------------------------------------------------------------------


@dataclass
class PlanEntry:
    """One member of a COPY/ADD layer."""

    rel: str  # path in the image
    kind: str  # dir | file | symlink
    mode: int
    uid: int
    gid: int
    mtime: int
    size: int = 0
    tree: Tree | None = None  # where a file's content is
    src: str = ""
    link: str = ""
    digest: str = ""

    def key(self) -> list[Any]:
        return [self.rel, self.kind, self.mode, self.uid, self.gid, self.size, self.digest or self.link]


@dataclass(frozen=True)
class Owner:
    uid: int
    gid: int


class Plan:
    """What a COPY/ADD puts in its layer, path -> entry (a later source wins)."""

    def __init__(self, image: Tree, clamp: int | None = None) -> None:
        self.image = image
        self.entries: dict[str, PlanEntry] = {}
        self.extra: list[Any] = []  # more cache-key material (archive digests)
        self.clamp = clamp  # SOURCE_DATE_EPOCH: no mtime in the layer is later

    def parents(self, rel: str, ids: Owner) -> None:
        parts = rel.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            self.directory("/".join(parts[:i]), ids, None)

    def directory(self, rel: str, ids: Owner, like: os.stat_result | None,
                  chmod: int | None = None) -> None:
        """A dir in the layer: as the image has it, else new (``like``'s mode, or 0755)."""
        if not rel or (rel in self.entries and self.entries[rel].kind == "dir"):
            return
        st = self.image.lstat(rel)
        if st is not None and stat.S_ISDIR(st.st_mode):
            self.entries[rel] = PlanEntry(rel, "dir", stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid,
                                          int(st.st_mtime))
            return
        if st is not None and rel not in self.entries:
            raise BuildError(f"cannot copy to /{rel}: it exists in the image and is not a directory")
        mode = chmod if chmod is not None else (stat.S_IMODE(like.st_mode) if like is not None else 0o755)
        self.entries[rel] = PlanEntry(rel, "dir", mode, ids.uid, ids.gid,
                                      int(like.st_mtime) if like is not None else int(time.time()))

    @staticmethod
    def _ids(owner: Owner | None, keep_owner: bool, st: os.stat_result) -> Owner:
        """--chown's ids; else the source's (COPY --from, an archive); else root's."""
        if owner is not None:
            return owner
        return Owner(st.st_uid, st.st_gid) if keep_owner else Owner(0, 0)

    def copy(self, tree: Tree, src: str, dest: str, *, owner: Owner | None, chmod: int | None,
             ignore: df.IgnoreRules | None, keep_owner: bool) -> None:
        """``src`` of ``tree`` to ``dest`` (a dir's contents into ``dest``)."""
        st = tree.lstat(src)
        if st is None:
            raise BuildError(f"/{src}: not found")
        new_dirs = owner or Owner(0, 0)
        self.parents(dest, new_dirs)
        if stat.S_ISDIR(st.st_mode):
            self.directory(dest, self._ids(owner, keep_owner, st), st, chmod)
            self._tree(tree, src, dest, owner, chmod, ignore, keep_owner)
        else:
            self._member(tree, src, dest, st, owner, chmod, keep_owner)

    def _tree(self, tree: Tree, src: str, dest: str, owner: Owner | None, chmod: int | None,
              ignore: df.IgnoreRules | None, keep_owner: bool) -> None:
        for name in tree.children(src):
            s = f"{src}/{name}" if src else name
            d = f"{dest}/{name}" if dest else name
            st = tree.lstat(s)
            if st is None:
                continue
            skip = ignore is not None and ignore.excluded(s)
            if stat.S_ISDIR(st.st_mode):
                if skip and not (ignore is not None and ignore.may_hold_included(s)):
                    continue
                if not skip:
                    if d in self.entries and self.entries[d].kind != "dir":
                        del self.entries[d]
                    self.directory(d, self._ids(owner, keep_owner, st), st, chmod)
                self._tree(tree, s, d, owner, chmod, ignore, keep_owner)
                if skip and any(k.startswith(d + "/") for k in self.entries):
                    self.directory(d, self._ids(owner, keep_owner, st), st, chmod)
                continue
            if skip:
                continue
            self._member(tree, s, d, st, owner, chmod, keep_owner)

    def _member(self, tree: Tree, src: str, dest: str, st: os.stat_result, owner: Owner | None,
                chmod: int | None, keep_owner: bool) -> None:
        ids = self._ids(owner, keep_owner, st)
        mode = chmod if chmod is not None else stat.S_IMODE(st.st_mode)
        if stat.S_ISREG(st.st_mode):
            e = PlanEntry(dest, "file", mode, ids.uid, ids.gid, int(st.st_mtime), st.st_size, tree, src,
                          digest=_file_digest(tree, src))
        elif stat.S_ISLNK(st.st_mode):
            e = PlanEntry(dest, "symlink", 0o777, ids.uid, ids.gid, int(st.st_mtime), link=tree.readlink(src))
        else:
            return  # devices, fifos, sockets: not copied (as BuildKit's context transfer)
        existing = self.image.lstat(dest)
        if existing is not None and stat.S_ISDIR(existing.st_mode) and dest not in self.entries:
            raise BuildError(f"cannot replace directory /{dest} with a file")
        self.entries[dest] = e

    def key(self) -> list[Any]:
        return [e.key() for e in self.ordered()] + self.extra

    def ordered(self) -> list[PlanEntry]:
        return sorted(self.entries.values(), key=lambda e: [os.fsencode(p) for p in e.rel.split("/")])

    def write(self, w: TarWriter) -> None:
        from minirun.image.layertar import header

        for e in self.ordered():
            name = os.fsencode(e.rel)
            mtime = e.mtime if self.clamp is None else min(e.mtime, self.clamp)
            if e.kind == "dir":
                w.out.write(header(name + b"/", b"5", mode=e.mode, uid=e.uid, gid=e.gid, mtime=mtime))
            elif e.kind == "symlink":
                w.out.write(header(name, b"2", mode=0o777, uid=e.uid, gid=e.gid, mtime=mtime,
                                   linkname=os.fsencode(e.link)))
            else:
                assert e.tree is not None
                fd = e.tree.open(e.src)
                try:
                    if not stat.S_ISREG(os.fstat(fd).st_mode):
                        raise BuildError(f"/{e.src} changed while it was copied")
                    w.out.write(header(name, b"0", mode=e.mode, uid=e.uid, gid=e.gid, mtime=mtime,
                                       size=e.size))
                    left = e.size
                    while left:
                        chunk = os.read(fd, min(1 << 20, left))
                        if not chunk:
                            raise BuildError(f"/{e.src} shrank while it was copied")
                        w.out.write(chunk)
                        left -= len(chunk)
                    if e.size % 512:
                        w.out.write(bytes(512 - e.size % 512))
                finally:
                    os.close(fd)
            w.entries += 1


def expand_sources(tree: Tree, pattern: str, ignore: df.IgnoreRules | None) -> list[str]:
    """A COPY source (relative, cleaned) with filepath.Match wildcards expanded in the tree."""
    parts = Tree._parts(pattern)
    if not any(_GLOB & set(p) for p in parts):
        return [pattern]
    out = [""]
    for part in parts:
        nxt: list[str] = []
        for base in out:
            if _GLOB & set(part):
                st = tree.lstat(base)
                if st is None or not stat.S_ISDIR(st.st_mode):
                    continue
                for name in tree.children(base):
                    if fnmatch.fnmatchcase(name, part):
                        nxt.append(f"{base}/{name}" if base else name)
            else:
                nxt.append(f"{base}/{part}" if base else part)
        out = nxt
    return [p for p in out if tree.lstat(p) is not None and not (ignore and ignore.excluded(p))]
