"""Provenance: which layer of a stack gives each path its version, and what every layer
adds, changes and deletes (``minirun blame`` and ``minirun layers``).

Both work from small per-layer indexes, not from the layer dirs themselves::

    layers/<hex>/index.json   {"version": 1, "diff_id": ..., "paths": [sorted],
                               "kinds": "dfl...", "sizes": [...], "modes": [...],
                               "targets": {symlink path: target}}

One letter per path: ``d`` dir, ``o`` opaque dir (xattr trusted.overlay.opaque=y), ``f``
regular file, ``l`` symlink, ``c``/``b`` devices, ``p`` fifo, ``s`` socket, ``w``
overlayfs whiteout (char device 0:0). Paths are relative to the layer root, without a
leading slash, sorted, so a lookup is a bisect of a list ``json.loads`` made in C: no
dict is built and a 100-layer stack answers in a few milliseconds. A layer dir never
changes, so its index is written once, lazily on first use (tmp + rename; two creators
write the same bytes), and rebuilt if it is unreadable. A container's own layers (its
init dir and its upper dir) change, so they are walked live and never cached.

The walk opens every directory with O_NOFOLLOW relative to its parent and lstats its
entries, so nothing is followed on the host — a container may replace a dir of its
upper dir by a symlink while it is read.

Sizes are lstat sizes of regular files and symlinks (dirs, devices and whiteouts count 0);
a layer's size is the sum over its paths. Lookups follow overlayfs: the topmost layer
that has a path gives it, a whiteout deletes it and what is below, an opaque dir hides
what lower layers have under it, and a non-directory hides everything a lower layer has
below that name.
"""

from __future__ import annotations

import json
import os
import stat
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from minirun.errors import MinirunError, StoreError

if TYPE_CHECKING:
    from pathlib import Path

    from minirun.image.store import ImageRecord, Store

INDEX_NAME = "index.json"
INDEX_VERSION = 1
OPAQUE_XATTR = "trusted.overlay.opaque"  # = whiteout.OVERLAY_OPAQUE_XATTR
MAX_SYMLINKS = 40  # Linux's limit on symlinks followed in one lookup (ELOOP)

KIND_NAMES = {"d": "dir", "o": "dir", "f": "file", "l": "symlink", "c": "char device",
              "b": "block device", "p": "fifo", "s": "socket", "w": "whiteout", "?": "unknown"}
_DIRS = "do"


class NoSuchPath(MinirunError):
    """A path that no layer of the stack has (or that is not reachable as asked)."""

    exit_code = 1


@dataclass(frozen=True)
class Entry:
    """One path of a layer. ``path`` has no leading slash; ``kind`` is one index letter."""

    path: str
    kind: str
    size: int = 0
    mode: int = 0
    target: str = ""  # symlinks only

    @property
    def is_dir(self) -> bool:
        return self.kind in _DIRS


class LayerIndex:
    """The paths of one layer dir, sorted, in parallel columns."""

    __slots__ = ("paths", "kinds", "sizes", "modes", "targets")

    def __init__(self, paths: list[str], kinds: str, sizes: list[int], modes: list[int],
                 targets: dict[str, str]) -> None:
        if not len(paths) == len(kinds) == len(sizes) == len(modes):
            raise ValueError("index columns differ in length")
        self.paths = paths
        self.kinds = kinds
        self.sizes = sizes
        self.modes = modes
        self.targets = targets

    @classmethod
    def from_entries(cls, entries: Iterable[Entry]) -> LayerIndex:
        rows = sorted((e for e in entries if e.path.strip("/")), key=lambda e: e.path.strip("/"))
        return cls([e.path.strip("/") for e in rows], "".join(e.kind for e in rows),
                   [e.size for e in rows], [e.mode for e in rows],
                   {e.path.strip("/"): e.target for e in rows if e.kind == "l"})

    def __len__(self) -> int:
        return len(self.paths)

    def find(self, path: str) -> int:
        """The position of ``path`` (no leading slash), or -1."""
        i = bisect_left(self.paths, path)
        return i if i < len(self.paths) and self.paths[i] == path else -1

    def entry(self, i: int) -> Entry:
        p = self.paths[i]
        return Entry(p, self.kinds[i], self.sizes[i], self.modes[i], self.targets.get(p, ""))

    def get(self, path: str) -> Entry | None:
        i = self.find(path.strip("/"))
        return self.entry(i) if i >= 0 else None

    def entries(self) -> Iterator[Entry]:
        return (self.entry(i) for i in range(len(self.paths)))

    @property
    def size(self) -> int:
        return sum(self.sizes)

    def to_json(self, diff_id: str = "") -> dict[str, Any]:
        return {"version": INDEX_VERSION, "diff_id": diff_id, "paths": self.paths,
                "kinds": self.kinds, "sizes": self.sizes, "modes": self.modes,
                "targets": self.targets}

    @classmethod
    def from_json(cls, d: Any, diff_id: str = "") -> LayerIndex | None:
        """The index, or None when ``d`` is not a current index of layer ``diff_id``."""
        if not isinstance(d, dict) or d.get("version") != INDEX_VERSION or d.get("diff_id") != diff_id:
            return None
        try:
            return cls(d["paths"], d["kinds"], d["sizes"], d["modes"], d["targets"])
        except (KeyError, TypeError, ValueError):
            return None


# -- building an index from a layer dir ---------------------------------------------------------


def _kind(st: os.stat_result) -> str:
    m = st.st_mode
    if stat.S_ISDIR(m):
        return "d"
    if stat.S_ISREG(m):
        return "f"
    if stat.S_ISLNK(m):
        return "l"
    if stat.S_ISCHR(m):
        return "w" if st.st_rdev == 0 else "c"
    if stat.S_ISBLK(m):
        return "b"
    if stat.S_ISFIFO(m):
        return "p"
    if stat.S_ISSOCK(m):
        return "s"
    return "?"


def _fd_opaque(fd: int) -> bool:
    try:
        return os.getxattr(fd, OPAQUE_XATTR) == b"y"
    except OSError:  # ENODATA; EPERM when not root (trusted.* needs CAP_SYS_ADMIN)
        return False


_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def scan_dir(root: str) -> LayerIndex:
    """Walk a layer dir (or a container's upper dir) into an index. Every dir is opened
    relative to its parent with O_NOFOLLOW; entries that vanish meanwhile are skipped."""
    entries: list[Entry] = []
    try:
        top = os.open(root, _OPEN_DIR)
    except FileNotFoundError:
        raise StoreError(f"layer dir {root} is missing") from None
    except OSError as err:
        raise StoreError(f"cannot read layer dir {root}: {err.strerror}") from None
    stack: list[tuple[int, str, Iterator[os.DirEntry[str]]]] = [(top, "", iter(()))]
    try:
        with os.scandir(top) as it:
            stack[0] = (top, "", iter(list(it)))
        while stack:
            fd, rel, todo = stack[-1]
            e = next(todo, None)
            if e is None:
                os.close(fd)
                stack.pop()
                continue
            path = f"{rel}/{e.name}" if rel else e.name
            try:
                st = e.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            kind = _kind(st)
            size = st.st_size if kind in "fl" else 0
            target = ""
            if kind == "l":
                try:
                    target = os.readlink(e.name, dir_fd=fd)
                except OSError:
                    continue
            elif kind == "d":
                try:
                    cfd = os.open(e.name, _OPEN_DIR, dir_fd=fd)
                except OSError:  # gone, or no longer a dir (ELOOP, ENOTDIR)
                    continue
                try:
                    if _fd_opaque(cfd):
                        kind = "o"
                    with os.scandir(cfd) as it:
                        children = list(it)
                except OSError:
                    os.close(cfd)
                    continue
                stack.append((cfd, path, iter(children)))
            entries.append(Entry(path, kind, size, stat.S_IMODE(st.st_mode), target))
    finally:
        for fd, _, _ in stack:
            os.close(fd)
    return LayerIndex.from_entries(entries)


def layer_index(store: Store, diff_id: str) -> LayerIndex:
    """The index of a stored layer: read from layers/<hex>/index.json, or built from the
    layer dir and saved there (atomically) on first use."""
    path = store.layer_path(diff_id) / INDEX_NAME
    try:
        with open(path, "rb") as f:
            idx = LayerIndex.from_json(json.loads(f.read()), diff_id)
        if idx is not None:
            return idx
    except FileNotFoundError:
        pass
    except (OSError, ValueError):
        pass  # unreadable or damaged: rebuilt below
    if not store.has_layer(diff_id):
        raise StoreError(f"layer {diff_id} is missing from the store")
    idx = scan_dir(str(store.layer_dir(diff_id)))
    _save_index(store, path, idx, diff_id)
    return idx


def _save_index(store: Store, path: Path, idx: LayerIndex, diff_id: str) -> None:
    """Write then rename; a tmp name in the store's tmp/ (swept if we die). A store we may
    not write to still answers, from the index in memory."""
    from minirun.image.store import atomic_write

    data = json.dumps(idx.to_json(diff_id), separators=(",", ":")).encode()
    try:
        store.tmp.mkdir(parents=True, exist_ok=True)
        atomic_write(path, data, store.tmp)
    except OSError:
        pass


# -- stacks ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StackLayer:
    """One layer of a stack: ``label`` is its index from the bottom ("0", "1", ...), or
    "init" / "rw" for a container's init layer and writable layer."""

    label: str
    diff_id: str  # "" for a container's own layers
    created_by: str
    shared_by: int  # images in the store that have this layer
    index: LayerIndex = field(repr=False, compare=False)

    @property
    def key(self) -> int | str:
        """The label as JSON gives it: a number for image layers."""
        return int(self.label) if self.label.isdigit() else self.label


def image_stack(store: Store, rec: ImageRecord) -> list[StackLayer]:
    """An image's layers, bottom first, with the history line that made each."""
    return _stack(store, [layer.diff_id for layer in rec.layers], rec)


def container_stack(store: Store, diff_ids: Sequence[str], image: ImageRecord | None,
                    init_dir: str, upper_dir: str) -> list[StackLayer]:
    """A container's stack, bottom first: the image's layers (``diff_ids``, bottom first),
    its init layer, then its writable layer (walked live: it changes)."""
    out = _stack(store, list(diff_ids), image)
    out.append(StackLayer("init", "", "(init layer)", 0, scan_dir(init_dir)))
    out.append(StackLayer("rw", "", "(container layer)", 0, scan_dir(upper_dir)))
    return out


def _stack(store: Store, diff_ids: list[str], rec: ImageRecord | None) -> list[StackLayer]:
    created: list[str] = [""] * len(diff_ids)
    shared: list[int] = [0] * len(diff_ids)
    if rec is not None and [layer.diff_id for layer in rec.layers] == diff_ids:
        from minirun.image.history import image_history

        steps = [h for h in reversed(image_history(store, rec)) if h.diff_id]
        for n, h in enumerate(steps[:len(diff_ids)]):
            created[n], shared[n] = h.created_by, h.shared_by
    else:
        users = store.layer_users()
        shared = [users.get(d, 0) for d in diff_ids]
    return [StackLayer(str(n), d, created[n], shared[n], layer_index(store, d))
            for n, d in enumerate(diff_ids)]


# -- blame ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerName:
    """A layer as a blame record names it."""

    label: str
    diff_id: str
    created_by: str
    shared_by: int

    @classmethod
    def of(cls, layer: StackLayer) -> LayerName:
        return cls(layer.label, layer.diff_id, layer.created_by, layer.shared_by)

    @property
    def key(self) -> int | str:
        return int(self.label) if self.label.isdigit() else self.label


@dataclass(frozen=True)
class Blame:
    """Where the version of ``path`` one sees comes from.

    ``status``: "present" — ``layer`` gives it, and ``shadows`` lists the lower layers
    whose versions it hides (topmost first); "deleted" — ``layer`` deleted it (``reason``
    "whiteout", or "dir deleted" when the whiteout is of its dir ``at``); "hidden" —
    ``layer`` hid it ("opaque dir" ``at`` replaced its dir, or "dir replaced": ``at``
    became a non-directory). For the last two, ``layer`` is the one that first cut the
    path off (higher layers may do it again), ``origin`` the layer whose version is gone,
    and kind/size/mode describe that version."""

    path: str  # as asked, normalised ("/etc/passwd")
    resolved: str  # after the symlinks in its parent dirs
    status: str
    layer: LayerName
    kind: str  # "file", "dir", "symlink", ...
    size: int
    mode: int
    target: str = ""  # a symlink's target (never followed)
    opaque: bool = False  # a dir marked opaque in ``layer``
    shadows: tuple[LayerName, ...] = ()
    reason: str = ""
    at: str = ""
    origin: LayerName | None = None
    via: tuple[str, ...] = ()  # "/bin -> usr/bin": symlinks followed on the way


# outcomes of looking at one layer
_ABSENT, _ENTRY, _WHITEOUT, _DIR_DELETED, _DIR_REPLACED = range(5)


def _probe(idx: LayerIndex, prefixes: list[str]) -> tuple[int, int, str, str]:
    """Look at ``prefixes[-1]`` in one layer: (outcome, position, where, opaque ancestor).
    ``where`` is the ancestor that is whited out or not a dir."""
    opaque_at = ""
    for a in prefixes[:-1]:
        i = idx.find(a)
        if i < 0:
            return _ABSENT, -1, "", opaque_at
        k = idx.kinds[i]
        if k == "w":
            return _DIR_DELETED, -1, a, opaque_at
        if k not in _DIRS:
            return _DIR_REPLACED, i, a, opaque_at
        if k == "o":
            opaque_at = a  # the deepest one: the closest to the path
    i = idx.find(prefixes[-1])
    if i < 0:
        return _ABSENT, -1, "", opaque_at
    return (_WHITEOUT if idx.kinds[i] == "w" else _ENTRY), i, prefixes[-1], opaque_at


class _Found:
    """An internal result of :func:`_find` (a plain class: no dataclass set-up at import)."""

    __slots__ = ("status", "layer", "pos", "reason", "at", "origin", "origin_pos")

    def __init__(self, status: str, layer: int = -1, pos: int = -1, reason: str = "", at: str = "") -> None:
        self.status = status  # "present" | "deleted" | "hidden" | "" (no layer has it)
        self.layer = layer  # the layer that gives it, or that deleted or hid it
        self.pos = pos  # the entry's position in that layer's index (present)
        self.reason = reason
        self.at = at
        self.origin = -1  # deleted or hidden: the layer of the version that is gone...
        self.origin_pos = -1  # ...and its position in that layer's index


def _find(stack: Sequence[StackLayer], prefixes: list[str]) -> _Found:
    """What ``prefixes[-1]`` is in the merged view: the topmost layer that has it, or —
    when a layer above that one cut it off — the lowest such layer (the one that first
    deleted or hid it; those above only deleted it again). Status "" if no layer has it."""
    cut: _Found | None = None
    for n in range(len(stack) - 1, -1, -1):
        idx = stack[n].index
        outcome, pos, where, opaque_at = _probe(idx, prefixes)
        if outcome == _ENTRY:
            if cut is None:
                return _Found("present", n, pos)
            cut.origin, cut.origin_pos = n, pos
            return cut
        if outcome == _WHITEOUT:
            cut = _Found("deleted", n, reason="whiteout", at=where)
        elif outcome == _DIR_DELETED:
            cut = _Found("deleted", n, reason="dir deleted", at=where)
        elif outcome == _DIR_REPLACED:
            cut = _Found("hidden", n, reason="dir replaced", at=where)
        elif opaque_at:
            cut = _Found("hidden", n, reason="opaque dir", at=opaque_at)
    return _Found("")


def _versions_below(stack: Sequence[StackLayer], prefixes: list[str], top: int) -> list[tuple[int, int]]:
    """(layer, position) of every version of the path below layer ``top`` that is cut off
    from view by ``top``, topmost first: down to where a lower layer deleted it."""
    out: list[tuple[int, int]] = []
    for n in range(top - 1, -1, -1):
        outcome, pos, _, opaque_at = _probe(stack[n].index, prefixes)
        if outcome == _ENTRY:
            out.append((n, pos))
        elif outcome != _ABSENT:
            break
        if opaque_at:
            break
    return out


def _parts(path: str) -> list[str]:
    return [p for p in path.split("/") if p and p != "."]


def _resolve(stack: Sequence[StackLayer], path: str) -> tuple[list[str], list[str]]:
    """The path's components with the symlinks of its parent dirs followed inside the
    stack (an absolute target starts again at the image root; ``..`` stops at the root);
    the last component is not followed (lstat). Returns (components, symlinks followed).
    A parent that is missing ends the resolution: the lookup then says why."""
    todo = _parts(path)
    out: list[str] = []
    via: list[str] = []
    while todo:
        name = todo.pop(0)
        if name == "..":
            if out:
                out.pop()
            continue
        cand = [*out, name]
        if not todo:
            return cand, via
        f = _find(stack, _prefixes(cand))
        if f.status != "present":
            out = cand
            break
        idx = stack[f.layer].index
        kind = idx.kinds[f.pos]
        if kind == "l":
            if len(via) >= MAX_SYMLINKS:
                raise NoSuchPath(f"{path}: too many levels of symbolic links")
            target = idx.targets.get(idx.paths[f.pos], "")
            via.append(f"/{'/'.join(cand)} -> {target}")
            if target.startswith("/"):
                out = []
            todo = _parts(target) + todo
            continue
        if kind not in _DIRS:
            raise NoSuchPath(f"{path}: not a directory (/{'/'.join(cand)} is a {KIND_NAMES[kind]})")
        out = cand
    for name in todo:  # after a missing parent: lexically
        if name == "..":
            if out:
                out.pop()
        else:
            out.append(name)
    return out, via


def _prefixes(parts: list[str]) -> list[str]:
    acc: list[str] = []
    out: list[str] = []
    for p in parts:
        acc.append(p)
        out.append("/".join(acc))
    return out


def blame(stack: Sequence[StackLayer], path: str) -> Blame:
    """Which layer gives ``path`` (absolute inside the image) its version, or which layer
    deleted or hid it. Raises :class:`NoSuchPath` if no layer ever had it."""
    if not stack:
        raise NoSuchPath(f"{path}: the image has no layers")
    shown = "/" + "/".join(_parts(path))
    parts, via = _resolve(stack, path)
    if not parts:  # the root: every layer has it; the top one's is what one sees
        top = stack[-1]
        return Blame(shown, "/", "present", LayerName.of(top), "dir", 0, 0o755,
                     shadows=tuple(LayerName.of(s) for s in reversed(stack[:-1])), via=tuple(via))
    resolved = "/" + "/".join(parts)
    prefixes = _prefixes(parts)
    f = _find(stack, prefixes)
    if f.status == "present":
        idx = stack[f.layer].index
        e = idx.entry(f.pos)
        below = _versions_below(stack, prefixes, f.layer)
        return Blame(shown, resolved, "present", LayerName.of(stack[f.layer]), KIND_NAMES[e.kind],
                     e.size, e.mode, e.target, e.kind == "o",
                     tuple(LayerName.of(stack[n]) for n, _ in below), via=tuple(via))
    if not f.status:
        raise NoSuchPath(f"{shown}: no such file or directory")
    e = stack[f.origin].index.entry(f.origin_pos)
    return Blame(shown, resolved, f.status, LayerName.of(stack[f.layer]), KIND_NAMES[e.kind],
                 e.size, e.mode, e.target, e.kind == "o", reason=f.reason, at="/" + f.at,
                 origin=LayerName.of(stack[f.origin]), via=tuple(via))


# -- layer statistics -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Waste:
    """A version of ``path`` in layer ``layer`` that layer ``by`` overwrote or removed."""

    path: str
    layer: str
    size: int
    by: str


@dataclass
class LayerStats:
    """What one layer does to the stack below it. ``deleted`` counts the lower paths it
    removes: whited out (with everything under a whited-out dir), hidden by its opaque
    dirs (also in ``hidden``), or under a dir it replaced by a non-directory."""

    layer: LayerName
    size: int = 0  # bytes of its files and symlinks
    entries: int = 0  # paths it holds, whiteouts not counted
    added: int = 0  # paths no lower layer shows
    changed: int = 0  # paths that shadow a lower version
    deleted: int = 0
    whiteouts: int = 0  # whiteout entries
    opaque_dirs: int = 0
    hidden: int = 0  # of deleted: hidden by an opaque dir
    wasted: int = 0  # bytes of lower versions this layer overwrote or removed


@dataclass
class StackReport:
    layers: list[LayerStats]
    waste: list[Waste]  # biggest first

    @property
    def total_size(self) -> int:
        return sum(s.size for s in self.layers)

    @property
    def wasted_bytes(self) -> int:
        return sum(w.size for w in self.waste)

    @property
    def efficiency(self) -> float:
        """dive's score: 1 - wasted / total bytes of all layers."""
        total = self.total_size
        return 1.0 - self.wasted_bytes / total if total else 1.0


def layer_stats(stack: Sequence[StackLayer]) -> StackReport:
    """Merge the stack bottom up as overlayfs would, counting what each layer adds,
    changes and deletes, and the bytes of every version nobody sees any more."""
    visible: dict[str, tuple[int, str, int]] = {}  # path -> (layer, kind, size)
    children: dict[str, set[str]] = {}
    waste: list[Waste] = []
    rows: list[LayerStats] = []

    def unlink(p: str) -> None:
        parent, _, name = p.rpartition("/")
        kids = children.get(parent)
        if kids is not None:
            kids.discard(name)

    def remove_below(p: str, by: int) -> int:
        """Drop everything visible under ``p`` (not ``p``); how many paths."""
        count = 0
        todo = [p]
        while todo:
            d = todo.pop()
            for name in children.pop(d, ()):
                q = f"{d}/{name}" if d else name
                v = visible.pop(q, None)
                if v is None:
                    continue
                count += 1
                if v[2]:
                    waste.append(Waste("/" + q, stack[v[0]].label, v[2], stack[by].label))
                if v[1] in _DIRS:
                    todo.append(q)
        return count

    def remove_tree(p: str, by: int) -> int:
        v = visible.pop(p)
        if v[2]:
            waste.append(Waste("/" + p, stack[v[0]].label, v[2], stack[by].label))
        unlink(p)
        return 1 + (remove_below(p, by) if v[1] in _DIRS else 0)

    for n, layer in enumerate(stack):
        idx = layer.index
        s = LayerStats(LayerName.of(layer))
        start = len(waste)

        def hide_under(d: str, idx: LayerIndex = idx, n: int = n, s: LayerStats = s) -> None:
            """An opaque dir ``d``: hide every lower path under it that the layer does
            not have again (those it has are counted as changed when their turn comes)."""
            for name in sorted(children.get(d, ())):
                q = f"{d}/{name}" if d else name
                i = idx.find(q)
                if i >= 0 and idx.kinds[i] != "w":
                    if idx.kinds[i] in _DIRS and visible[q][1] in _DIRS:
                        hide_under(q)
                    continue
                removed = remove_tree(q, n)
                s.deleted += removed
                s.hidden += removed

        for i, p in enumerate(idx.paths):
            kind = idx.kinds[i]
            prior = visible.get(p)
            if kind == "w":
                s.whiteouts += 1
                if prior is not None:
                    s.deleted += remove_tree(p, n)
                continue
            size = idx.sizes[i]
            s.size += size
            s.entries += 1
            if prior is None:
                s.added += 1
                parent, _, name = p.rpartition("/")
                children.setdefault(parent, set()).add(name)
            else:
                s.changed += 1
                if prior[2]:
                    waste.append(Waste("/" + p, stack[prior[0]].label, prior[2], layer.label))
                if prior[1] in _DIRS and kind not in _DIRS:
                    s.deleted += remove_below(p, n)
            if kind == "o":
                s.opaque_dirs += 1
                if prior is not None and prior[1] in _DIRS:
                    hide_under(p)
            visible[p] = (n, kind, size)
        s.wasted = sum(w.size for w in waste[start:])
        rows.append(s)
    waste.sort(key=lambda w: (-w.size, w.path))
    return StackReport(rows, waste)
