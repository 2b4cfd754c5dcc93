"""``minirun cp``'s path rules and archive checks (see copy.py), with no I/O but the
reading of a tar stream.

* Docker's path rules (``archive.CopyInfo*``, ``PrepareArchiveCopy``): how SRC and DEST
  are cleaned and where SRC lands (:func:`placement`), and the rename of an archive's
  top name (:func:`renamed`).
* :func:`check_member` / :func:`check_archive`: every member of an untrusted tar checked
  before anything is written — no absolute names, no ``..``, no path through a symlink
  the same archive planted, no hardlink out of it, no unsupported member type.
"""

from __future__ import annotations

import contextlib
import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO, Protocol, cast

from minirun.errors import CopyError, UnsafeArchive


class Reader(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


# -- Docker's path rules (pure) ------------------------------------------------------------


def clean(path: str) -> str:
    """Go's filepath.Clean: lexical, ``""`` -> ``.``, no trailing ``/`` (but ``/``)."""
    if not path:
        return "."
    rooted = path.startswith("/")
    parts: list[str] = []
    for c in path.split("/"):
        if c in ("", "."):
            continue
        if c == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not rooted:
                parts.append(c)
            continue
        parts.append(c)
    out = "/".join(parts)
    return ("/" + out) if rooted else (out or ".")


def go_base(path: str) -> str:
    if path == "":
        return "."
    stripped = path.rstrip("/")
    return stripped.rsplit("/", 1)[-1] if stripped else "/"


def specifies_current_dir(path: str) -> bool:
    return go_base(path) == "."


def has_trailing_separator(path: str) -> bool:
    return path.endswith("/")


def preserve_trailing(cleaned: str, original: str) -> str:
    """Docker's PreserveTrailingDotOrSeparator: keep a ``/.`` or ``/`` the user gave."""
    if not specifies_current_dir(cleaned) and specifies_current_dir(original):
        if not has_trailing_separator(cleaned):
            cleaned += "/"
        cleaned += "."
    if not has_trailing_separator(cleaned) and has_trailing_separator(original):
        cleaned += "/"
    return cleaned


def container_abs(path: str) -> str:
    """A container path as Docker reads it: relative to the container's ``/``."""
    return preserve_trailing(clean("/" + path), path)


def local_abs(path: str, cwd: str | None = None) -> str:
    """A host path made absolute (Docker's resolveLocalPath), ``/.`` and ``/`` kept."""
    full = path if path.startswith("/") else os.path.join(cwd or os.getcwd(), path)
    return preserve_trailing(clean(full), path)


def split_dir_entry(path: str) -> tuple[str, str]:
    """Docker's SplitPathDirEntry: (dir, last entry), ``.`` as the entry of ``dir/.``."""
    cleaned = clean(path)
    if specifies_current_dir(path):
        cleaned = cleaned.rstrip("/") + "/."
    i = cleaned.rfind("/")
    parent = clean(cleaned[: i + 1]) if i >= 0 else "."
    return parent, go_base(cleaned)


def asserts_directory(path: str) -> bool:
    return has_trailing_separator(path) or specifies_current_dir(path)


def archive_top(path: str) -> str:
    """The name of the top entry in a tar of ``path``: its base, ``.`` for ``dir/.`` and
    the root (its contents)."""
    name = split_dir_entry(path)[1]
    return "." if name == "/" else name


def rebase_name(path: str, resolved: str) -> tuple[str, str]:
    """Docker's GetRebaseName: (resolved path with the user's ``/.`` or ``/`` carried over,
    the name entries must take when a followed link changed the last component, or "")."""
    if specifies_current_dir(path) and not specifies_current_dir(resolved):
        resolved = resolved.rstrip("/") + "/."
    if has_trailing_separator(path) and not has_trailing_separator(resolved):
        resolved += "/"
    return resolved, (go_base(path) if go_base(path) != go_base(resolved) else "")


@dataclass(frozen=True)
class SourceInfo:
    """What is copied: its path, kind, the top name its tar has, and the name -L asks the
    entries to take instead (the link's, not its target's)."""

    path: str
    is_dir: bool
    top: str
    rebase: str = ""


@dataclass(frozen=True)
class DestInfo:
    path: str
    exists: bool
    is_dir: bool = False


@dataclass(frozen=True)
class Placement:
    """Where the tar is extracted, and the name its top entry takes there (None: as is)."""

    extract_dir: str
    top: str | None


def placement(src: SourceInfo, dst: DestInfo, where: str = "") -> Placement:
    """Docker's PrepareArchiveCopy: into an existing dir as is; else into DEST's parent,
    the top entry renamed to DEST's name. ``where``: how messages name DEST's side
    (``c1:``)."""
    dst_dir, dst_base = split_dir_entry(dst.path)
    if dst.exists and dst.is_dir:
        return Placement(dst.path, src.rebase or None)
    if dst.exists and src.is_dir:
        raise CopyError(f"cannot copy a directory to a file: {where}{dst.path} exists and is not a directory")
    if not dst.exists and not src.is_dir and asserts_directory(dst.path):
        raise CopyError(f"no such directory: {where}{dst.path} (a file is copied into an existing "
                        "directory only; create it first, or drop the trailing '/')")
    return Placement(dst_dir, dst_base)


def renamed(name: str, old: str, new: str | None) -> str:
    """A member name (normalised, see :func:`normalise`) with its top component ``old``
    (``""``: the archive root) replaced by ``new``."""
    if new is None:
        return name
    new_n = normalise(new, "rename") if new not in ("", ".") else ""
    if old == "":
        return f"{new_n}/{name}".strip("/") if name else new_n
    if name == old:
        return new_n
    if name.startswith(old + "/"):
        return f"{new_n}/{name[len(old) + 1:]}".strip("/")
    return name


def normalise(name: str, what: str = "member") -> str:
    """A tar name as a relative path below the extraction dir: ``.`` and empty components
    dropped; absolute names and ``..`` refused (``""`` is the extraction dir itself)."""
    if "\0" in name:
        raise UnsafeArchive(f"{what} {name!r} has a NUL byte in its name")
    if name.startswith("/"):
        raise UnsafeArchive(f"{what} {name!r} is an absolute path (refused: tar names are "
                            "relative to the destination)")
    parts = [c for c in name.split("/") if c not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchive(f"{what} {name!r} climbs out of the destination with '..' (refused)")
    return "/".join(parts)


_KINDS = {tarfile.REGTYPE: "file", tarfile.AREGTYPE: "file", tarfile.CONTTYPE: "file",
          tarfile.DIRTYPE: "dir", tarfile.SYMTYPE: "symlink", tarfile.LNKTYPE: "hardlink",
          tarfile.CHRTYPE: "char", tarfile.BLKTYPE: "block", tarfile.FIFOTYPE: "fifo"}  # fmt: skip


@dataclass
class ArchiveCheck:
    """The state :func:`check_member` keeps across one archive: the symlinks it planted
    (nothing may be written through them) and the names it made."""

    symlinks: set[str] = field(default_factory=set)
    members: int = 0


def check_member(m: tarfile.TarInfo, old_top: str, new_top: str | None, state: ArchiveCheck
                 ) -> tuple[str, str, str]:
    """(kind, relative name, hardlink target) of one member, renamed as placed, or
    :class:`UnsafeArchive`."""
    kind = _KINDS.get(m.type)
    if m.issparse() or kind is None:
        raise UnsafeArchive(f"member {m.name!r} has an unsupported type {m.type!r} "
                            "(files, dirs, links, devices and fifos only)")
    name = renamed(normalise(m.name), old_top, new_top)
    parts = name.split("/") if name else []
    for i in range(1, len(parts)):
        if "/".join(parts[:i]) in state.symlinks:
            raise UnsafeArchive(f"member {m.name!r} would be written through the symlink "
                                f"{'/'.join(parts[:i])!r} that the same archive created (refused)")
    if not name and kind != "dir":
        raise UnsafeArchive(f"member {m.name!r} would replace the destination directory "
                            "with a non-directory")
    target = ""
    if kind == "char" and m.devmajor == 0 and m.devminor == 0:
        raise UnsafeArchive(f"member {m.name!r} is a char device 0:0, overlayfs's whiteout "
                            "(it would delete the name instead of creating it)")
    if kind == "symlink":
        if not m.linkname:
            raise UnsafeArchive(f"member {m.name!r} is a symlink with an empty target")
        if "\0" in m.linkname:
            raise UnsafeArchive(f"member {m.name!r} has a NUL byte in its link target")
        state.symlinks.add(name)
    else:
        state.symlinks.discard(name)
    if kind == "hardlink":
        target = renamed(normalise(m.linkname, f"hardlink target of {m.name!r}:"), old_top, new_top)
        if not target:
            raise UnsafeArchive(f"member {m.name!r} is a hardlink to the destination directory")
        tparts = target.split("/")
        for i in range(1, len(tparts)):
            if "/".join(tparts[:i]) in state.symlinks:
                raise UnsafeArchive(f"member {m.name!r} is a hardlink through the symlink "
                                    f"{'/'.join(tparts[:i])!r} that the same archive created (refused)")
    if not (0 <= m.uid < (1 << 32) - 1 and 0 <= m.gid < (1 << 32) - 1):
        raise UnsafeArchive(f"member {m.name!r} has an owner out of range ({m.uid}:{m.gid})")
    state.members += 1
    return kind, name, target


def check_archive(f: Reader) -> int:
    """Read a whole tar stream and check every member (:func:`check_member`); the number
    of members. Raises UnsafeArchive, or CopyError for what is not a tar."""
    state = ArchiveCheck()
    with tar_stream(f) as tf:
        for m in members(tf):
            check_member(m, "", None, state)
    return state.members


@contextlib.contextmanager
def tar_stream(f: Reader) -> Iterator[tarfile.TarFile | None]:
    """A tar stream opened for one pass in order (None: the stream is empty)."""
    head = f.read(tarfile.BLOCKSIZE)
    if not head:
        yield None
        return
    reader = _Prefixed(head, f)
    try:
        tf = tarfile.open(fileobj=cast(BinaryIO, reader), mode="r|", encoding="utf-8",
                          errors="surrogateescape")
    except tarfile.TarError as e:
        raise CopyError(f"not a valid tar archive: {e}") from None
    try:
        yield tf
    finally:
        tf.close()


def members(tf: tarfile.TarFile | None) -> Iterator[tarfile.TarInfo]:
    """The members of :func:`tar_stream`'s archive; a corrupt one is a CopyError."""
    if tf is None:
        return
    it = iter(tf)
    while True:
        try:
            m = next(it)
        except StopIteration:
            return
        except tarfile.TarError as e:
            raise CopyError(f"not a valid tar archive (truncated or corrupt): {e}") from None
        yield m


class _Prefixed:
    """A reader that returns ``head`` first, then the rest of ``f``."""

    def __init__(self, head: bytes, f: Reader) -> None:
        self.head = head
        self.f = f

    def read(self, n: int = -1) -> bytes:
        if self.head:
            if n < 0 or n >= len(self.head):
                out, self.head = self.head, b""
                rest = self.f.read(-1 if n < 0 else n - len(out))
                return out + (rest or b"")
            out, self.head = self.head[:n], self.head[n:]
            return out
        return self.f.read(n)
