"""``minirun cp``: files between a container (running, paused, created or exited) and the
host, with Docker's path rules, as a tar stream.

Where the container's files are read and written. Never through a host path into the
container's layers: a forked child enters the container's own view first.

* A running (or paused) container: the child ``setns()``es into its mount namespace
  (``/proc/PID/ns/mnt``) and ``chroot``s into ``/proc/PID/root``. It sees what the
  container sees, volumes and binds included, and nothing of the host.
* A created or exited container: the child ``unshare``s a mount namespace, makes every
  mount private, mounts the container's overlay (the same stack ``start`` mounts) on its
  ``rootfs/`` dir, mounts the spec's binds (``-v``, the /etc files; read-only as given;
  the root read-only for ``--read-only``), and chroots there. The mounts exist only in
  the child's namespace and go away with it: the host never sees them, and nothing is
  ever written into ``upper/`` by hand.

Inside, every path is opened with ``openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)``
from the container's root, on top of the chroot, so a container symlink (``/evil -> /``,
``/etc/x -> ../../../../host``) resolves in the container's scope, as Docker's
FollowSymlinkInScope does, and ``/proc/N/root`` cannot lead out. The child talks to the
parent over pipes: a status line (JSON), then the tar stream. The parent does the host's
side (reading or writing host paths, stdin, stdout).

Path rules (Docker's ``archive.CopyInfo*``, ``PrepareArchiveCopy``; see cppaths.placement):
the last component of a container SRC is not followed (a symlink is copied as a symlink)
unless ``-L`` or a trailing ``/``; ``SRC/.`` copies the contents; an existing DEST dir
receives SRC inside it; a missing DEST takes SRC's content under its own name (its
parent must exist); DEST ending in ``/`` must exist when SRC is a file; a dir cannot
replace a file; a symlink at DEST is followed.

Tar streams are untrusted in both directions (a container controls its names and link
targets; a tar on stdin is anyone's). Every member is checked (cppaths.check_member):
no absolute names, no ``..``, no path through a symlink the same archive planted, no
hardlink to a name outside the destination, no unsupported member types. A tar from
stdin is spooled to the store's tmp and checked whole before the first byte is written
into the container. Members are created with ``O_EXCL``/``O_NOFOLLOW`` in parent dirs
resolved confined (in the container: from its root; on the host: beneath the
destination, ``RESOLVE_BENEATH``); an existing directory is never replaced by a
non-directory or the other way round.

Ownership: written into a container, files belong to root (0:0) unless ``-a`` (then the
tar's, i.e. the host files', uid:gid); written to the host, they belong to the user who
runs ``cp`` unless ``-a`` (then the container's uid:gid), as Docker documents. Modes (setuid included), mtimes and
``security.capability`` are kept.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import stat
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from minirun.container.cppaths import (
    ArchiveCheck,
    DestInfo,
    Placement,
    Reader,
    SourceInfo,
    archive_top,
    asserts_directory,
    check_archive,
    check_member,
    clean,
    container_abs,
    go_base,
    has_trailing_separator,
    local_abs,
    members,
    normalise,
    placement,
    preserve_trailing,
    rebase_name,
    split_dir_entry,
    tar_stream,
)
from minirun.errors import CopyError, CopyPathNotFound, MinirunError, UnsafeArchive
from minirun.image.layertar import TarWriter, sorted_names
from minirun.runtime import linux

if TYPE_CHECKING:
    from minirun.container.records import ContainerRecord
    from minirun.image.store import Store
    from minirun.runtime.mounts import Mount

_CHUNK = 1 << 20


_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_O_PATH_DIR = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
_O_NEWFILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
IN_CONTAINER = linux.RESOLVE_IN_ROOT | linux.RESOLVE_NO_MAGICLINKS
BENEATH = linux.RESOLVE_BENEATH | linux.RESOLVE_NO_MAGICLINKS
_CAP_XATTR = "security.capability"
_DIR_CACHE_MAX = 256

# filesystems a running container has mounted that are no files of it (Docker's cp reads
# the rootfs, where these are empty mount points): listed, never descended into
PSEUDO_FILESYSTEMS = frozenset({
    "proc", "sysfs", "devpts", "mqueue", "cgroup", "cgroup2", "securityfs", "debugfs",
    "tracefs", "bpf", "pstore", "configfs", "fusectl", "binfmt_misc", "hugetlbfs", "autofs",
    "efivarfs", "rpc_pipefs", "nsfs",
})  # fmt: skip


# -- the container side (runs in the child) ------------------------------------------------


@dataclass(frozen=True)
class _Stat:
    path: str  # the container path resolved as Docker's ResolvePath does (last element kept)
    st: os.stat_result
    link_target: str  # for a symlink: its target resolved in the container's scope


def _split(path: str) -> tuple[str, str]:
    """Go's filepath.Split: (dir with its trailing ``/``, last element, maybe empty)."""
    i = path.rfind("/")
    return path[: i + 1], path[i + 1 :]


def _rel(path: str) -> str:
    return "/".join(c for c in path.split("/") if c not in ("", ".")) or "."


def _open_dir_in(root: int, path: str, flags: int = _O_PATH_DIR) -> int:
    return linux.openat2(root, _rel(path), flags, 0, IN_CONTAINER)


def _lstat_in(root: int, path: str) -> os.stat_result:
    """lstat of ``path`` in the container: its dir resolved in scope, the last element
    not followed (none, or ``.``: the dir itself)."""
    dir_part, last = _split(path)
    fd = _open_dir_in(root, dir_part or "/")
    try:
        if last in ("", "."):
            return os.fstat(fd)
        return os.stat(last, dir_fd=fd, follow_symlinks=False)
    finally:
        os.close(fd)


def _resolve_in(path: str) -> str:
    """``path`` with every symlink followed in the container's scope (the chroot makes
    ``/`` and ``..`` stop at its root; missing components are kept as they are)."""
    return os.path.realpath(path)


def _stat_in(root: int, given: str, label: str, *, not_a_dir: bool = True) -> _Stat:
    """Docker's ResolvePath + StatPath for a container path. A trailing ``/`` or ``/.`` on
    something that is no directory (a file, or a link to one) is "not a directory", as
    Docker's lstat says, unless ``not_a_dir`` is False (a DEST: then it is just missing)."""
    abs_path = container_abs(given)
    dir_part, last = _split(abs_path)
    resolved = _resolve_in(dir_part or "/").rstrip("/") + "/" + last
    try:
        st = _lstat_in(root, resolved)
    except NotADirectoryError:
        if not_a_dir and asserts_directory(abs_path) and _exists_in(root, clean(abs_path)):
            raise CopyError(f"lstat {abs_path}: not a directory (in container {label})") from None
        raise CopyPathNotFound(abs_path, label) from None
    except FileNotFoundError:
        raise CopyPathNotFound(abs_path, label) from None
    target = _resolve_in(abs_path) if stat.S_ISLNK(st.st_mode) else ""
    return _Stat(resolved, st, target)


def _source_in(root: int, src: str, follow: bool, label: str) -> tuple[_Stat, str, str]:
    """(stat of what is archived, the path Docker's daemon is asked for, rebase name):
    with -L a symlink SRC is replaced by its target, entries keeping the link's name."""
    info = _stat_in(root, src, label)
    asked, rebase = src, ""
    if follow and stat.S_ISLNK(info.st.st_mode):
        asked, rebase = rebase_name(container_abs(src), info.link_target)
        info = _stat_in(root, asked, label)
    return info, asked, rebase


def _pseudo_devices(mountinfo: str) -> set[int]:
    """st_dev of every pseudo filesystem mounted in the container (mountinfo's maj:min)."""
    devs: set[int] = set()
    for line in mountinfo.splitlines():
        head, sep, tail = line.partition(" - ")
        fields = head.split()
        if not sep or len(fields) < 3 or not tail:
            continue
        if tail.split()[0] in PSEUDO_FILESYSTEMS:
            maj, _, mnr = fields[2].partition(":")
            with contextlib.suppress(ValueError):
                devs.add(os.makedev(int(maj), int(mnr)))
    return devs


def _capability(dirfd: int, name: str, st: os.stat_result) -> dict[bytes, bytes] | None:
    """security.capability of a regular file (the only xattr Docker's cp carries)."""
    if not stat.S_ISREG(st.st_mode):
        return None
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dirfd)
    except OSError:
        return None
    try:
        return {_CAP_XATTR.encode(): os.getxattr(fd, _CAP_XATTR)}
    except OSError:
        return None
    finally:
        os.close(fd)


def write_tree(w: TarWriter, parent_fd: int, name: str, top: str, st: os.stat_result,
               skip_devices: set[int] | None = None) -> None:
    """``name`` in ``parent_fd`` (``""``: ``parent_fd`` is the directory itself) as tar
    members named ``top``, ``top/child``...: parents first, children in byte order, read
    through dir fds that never follow a symlink (layertar's TarWriter)."""
    if not stat.S_ISDIR(st.st_mode):
        w.add(parent_fd, name, top, st, _capability(parent_fd, name, st))
        return
    w.add(parent_fd, name, top, st)
    if skip_devices and st.st_dev in skip_devices:
        return
    fd = os.open(name or ".", _O_DIR, dir_fd=parent_fd)
    stack: list[tuple[int, str, Iterator[str]]] = [(fd, top, iter(sorted_names(fd)))]
    try:
        while stack:
            dfd, rel, names = stack[-1]
            child = next(names, None)
            if child is None:
                os.close(dfd)
                stack.pop()
                continue
            try:
                cst = os.stat(child, dir_fd=dfd, follow_symlinks=False)
            except FileNotFoundError:
                continue  # gone meanwhile (a running container)
            arc = f"{rel}/{child}"
            if not stat.S_ISDIR(cst.st_mode):
                w.add(dfd, child, arc, cst, _capability(dfd, child, cst))
                continue
            try:
                cfd = os.open(child, _O_DIR, dir_fd=dfd)
            except OSError as e:
                if e.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
                    continue  # replaced by a non-dir meanwhile
                raise
            w.add(dfd, child, arc, os.fstat(cfd))
            if skip_devices and cst.st_dev in skip_devices:
                os.close(cfd)
                continue
            try:
                stack.append((cfd, arc, iter(sorted_names(cfd))))
            except BaseException:
                os.close(cfd)
                raise
    finally:
        for dfd, _, _ in stack:
            os.close(dfd)


def _archive_in(root: int, info: _Stat, top: str, out: BinaryIO, skip: set[int]) -> None:
    """The tar of a resolved container path to ``out``."""
    w = TarWriter(out)
    dir_part, last = _split(info.path)
    if stat.S_ISDIR(info.st.st_mode):
        fd = _open_dir_in(root, info.path, _O_DIR if last in ("", ".") else os.O_RDONLY
                          | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            if last not in ("", "."):  # the last element is a dir, not a symlink (lstat said)
                os.close(fd)
                pfd = _open_dir_in(root, dir_part or "/")
                try:
                    fd = os.open(last, _O_DIR, dir_fd=pfd)
                finally:
                    os.close(pfd)
            write_tree(w, fd, "", top, os.fstat(fd), skip)
        finally:
            os.close(fd)
    else:
        pfd = _open_dir_in(root, dir_part or "/")
        try:
            write_tree(w, pfd, last, top, info.st, skip)
        finally:
            os.close(pfd)
    w.close()


def _dest_in(root: int, dest: str, label: str) -> DestInfo:
    """Docker's client-side stat of a container DEST: a symlink is followed (in scope)."""
    abs_path = container_abs(dest)
    try:
        info = _stat_in(root, abs_path, label, not_a_dir=False)
    except CopyPathNotFound:
        return DestInfo(abs_path, False)
    path, st = abs_path, info.st
    if stat.S_ISLNK(st.st_mode):
        path = preserve_trailing(info.link_target, abs_path)
        try:
            st = _stat_in(root, path, label, not_a_dir=False).st
        except CopyPathNotFound:
            return DestInfo(path, False)
    if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
        raise CopyError(f'destination "{label}:{dest}" must be a directory or a regular file')
    return DestInfo(path, True, stat.S_ISDIR(st.st_mode))


def _extract_point_in(root: int, path: str, label: str) -> str:
    """The container dir an archive is extracted into, every symlink followed in scope
    (Docker's containerExtractToDir); it must exist and be a directory."""
    resolved = _resolve_in(container_abs(path))
    try:
        fd = _open_dir_in(root, resolved)
    except (FileNotFoundError, NotADirectoryError) as e:
        if isinstance(e, NotADirectoryError) or _exists_in(root, resolved):
            raise CopyError(f"extraction point is not a directory: {path}") from None
        raise CopyPathNotFound(clean(container_abs(path)), label) from None
    os.close(fd)
    return resolved


def _exists_in(root: int, path: str) -> bool:
    try:
        _lstat_in(root, path)
        return True
    except OSError:
        return False


# -- extraction (both sides) -----------------------------------------------------------------


class Extractor:
    """Writes checked tar members below one directory.

    ``base_fd`` + ``prefix`` name the extraction dir; each member's parent is opened with
    openat2(``resolve``) from ``base_fd`` (in a container: its root with RESOLVE_IN_ROOT,
    so the container's symlinks resolve as it sees them; on the host: the destination with
    RESOLVE_BENEATH); the member itself is made with O_EXCL/O_NOFOLLOW. ``owner``: the
    uid:gid every member gets, or None to keep the tar's."""

    def __init__(self, base_fd: int, prefix: str, resolve: int, *, owner: tuple[int, int] | None,
                 old_top: str = "", new_top: str | None = None, where: str = "") -> None:
        self.base = base_fd
        self.prefix = _rel(prefix) if prefix not in ("", ".", "/") else ""
        self.resolve = resolve
        self.owner = owner
        self.old_top = normalise(old_top) if old_top not in ("", ".") else ""
        self.new_top = new_top
        self.where = where
        self.state = ArchiveCheck()
        self.dirs: dict[str, int] = {}
        self.pending: list[tuple[str, int, float]] = []  # dirs: (name, mode, mtime)

    def run(self, f: Reader) -> int:
        """Extract the tar stream ``f``; the number of members."""
        try:
            with tar_stream(f) as tf:
                for m in members(tf):
                    kind, name, target = check_member(m, self.old_top, self.new_top, self.state)
                    try:
                        self._one(m, kind, name, target, tf)
                    except OSError as e:
                        if e.errno == errno.EROFS:
                            raise  # said as the container's read-only root, or the volume's
                        raise CopyError(f"cannot write {m.name!r} to {self._shown(name)}: "
                                        f"{e.strerror or e}") from None
            self._finish_dirs()
        finally:
            for fd in self.dirs.values():
                os.close(fd)
            self.dirs = {}
        return self.state.members

    # -- paths

    def _path(self, name: str) -> str:
        return "/".join(p for p in (self.prefix, name) if p) or "."

    def _dir(self, name: str, member: str, create: bool = True) -> int:
        """An O_PATH fd of directory ``name`` (below the extraction dir), missing ones made
        (0755, as tar does) when ``create``, resolved confined (see the class doc)."""
        fd = self.dirs.get(name)
        if fd is not None:
            return fd
        parts = name.split("/") if name else []
        have = len(parts)
        while True:
            try:
                fd = linux.openat2(self.base, self._path("/".join(parts[:have])), _O_PATH_DIR, 0,
                                   self.resolve)
                break
            except FileNotFoundError:
                if not create:
                    raise
                if have == 0:
                    raise CopyError(f"the destination directory {self.where} is gone") from None
                have -= 1
            except OSError as e:
                raise self._path_error(e, "/".join(parts[:have]), member) from None
        try:
            for comp in parts[have:]:
                os.mkdir(comp, 0o755, dir_fd=fd)
                os.chmod(comp, 0o755, dir_fd=fd)
                nfd = os.open(comp, _O_PATH_DIR | os.O_NOFOLLOW, dir_fd=fd)
                os.close(fd)
                fd = nfd
        except BaseException:
            os.close(fd)
            raise
        if len(self.dirs) >= _DIR_CACHE_MAX:
            for old in self.dirs.values():
                os.close(old)
            self.dirs = {}
        self.dirs[name] = fd
        return fd

    def _path_error(self, e: OSError, name: str, member: str) -> MinirunError:
        shown = "/".join(p for p in (self.where.rstrip("/"), name) if p)
        if e.errno == errno.ENOTDIR:
            return CopyError(f"cannot write {member!r}: {shown} is not a directory")
        if e.errno == errno.EXDEV:
            return UnsafeArchive(f"cannot write {member!r}: {shown} leads outside the destination "
                                 "through a symlink (refused)")
        if e.errno == errno.ELOOP:
            return CopyError(f"cannot write {member!r}: too many levels of symlinks at {shown}")
        return CopyError(f"cannot write {member!r}: {e.strerror}: {shown}")

    def _shown(self, name: str) -> str:
        return "/".join(p for p in (self.where.rstrip("/"), name) if p) or self.where

    # -- members

    def _ids(self, m: tarfile.TarInfo) -> tuple[int, int]:
        return self.owner if self.owner is not None else (m.uid, m.gid)

    def _one(self, m: tarfile.TarInfo, kind: str, name: str, target: str,
             tf: tarfile.TarFile | None) -> None:
        if not name:  # the extraction dir itself: its mode and mtime, not its owner
            self.pending.append(("", m.mode, m.mtime))
            return
        parent, _, last = name.rpartition("/")
        pfd = self._dir(parent, m.name)
        uid, gid = self._ids(m)
        if kind == "dir":
            try:
                os.mkdir(last, 0o700, dir_fd=pfd)
            except FileExistsError:
                st = os.stat(last, dir_fd=pfd, follow_symlinks=False)
                if not stat.S_ISDIR(st.st_mode):
                    raise CopyError(f"cannot overwrite non-directory {self._shown(name)} with "
                                    f"directory {m.name!r}") from None
            os.chown(last, uid, gid, dir_fd=pfd, follow_symlinks=False)
            self.pending.append((name, m.mode, m.mtime))
            return
        if kind == "file":
            self._file(m, tf, pfd, last, name, uid, gid)
        elif kind == "symlink":
            self._replace(pfd, last, name, m, lambda: os.symlink(m.linkname, last, dir_fd=pfd))
            os.chown(last, uid, gid, dir_fd=pfd, follow_symlinks=False)
            os.utime(last, (m.mtime, m.mtime), dir_fd=pfd, follow_symlinks=False)
        elif kind == "hardlink":
            tparent, _, tlast = target.rpartition("/")
            try:
                tfd = self._dir(tparent, m.name, create=False)
                tst = os.stat(tlast, dir_fd=tfd, follow_symlinks=False)
            except (FileNotFoundError, NotADirectoryError, CopyError):
                raise UnsafeArchive(f"member {m.name!r} is a hardlink to {m.linkname!r}, which is "
                                    "not in the destination") from None
            if stat.S_ISDIR(tst.st_mode):
                raise UnsafeArchive(f"member {m.name!r} is a hardlink to the directory {m.linkname!r}")
            if target == name:
                return
            self._replace(pfd, last, name, m, lambda: os.link(tlast, last, src_dir_fd=tfd, dst_dir_fd=pfd,
                                                              follow_symlinks=False))
        else:  # char, block, fifo: created as Docker's cp creates them (as root)
            fmt = {"char": stat.S_IFCHR, "block": stat.S_IFBLK, "fifo": stat.S_IFIFO}[kind]
            dev = os.makedev(m.devmajor, m.devminor) if kind != "fifo" else 0
            self._replace(pfd, last, name, m, lambda: os.mknod(last, fmt | 0o600, dev, dir_fd=pfd))
            os.chown(last, uid, gid, dir_fd=pfd, follow_symlinks=False)
            os.chmod(last, m.mode & 0o7777, dir_fd=pfd)
            os.utime(last, (m.mtime, m.mtime), dir_fd=pfd, follow_symlinks=False)

    def _replace(self, pfd: int, last: str, name: str, m: tarfile.TarInfo, make: Callable[[], None]) -> None:
        try:
            make()
            return
        except FileExistsError:
            pass
        st = os.stat(last, dir_fd=pfd, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            raise CopyError(f"cannot overwrite directory {self._shown(name)} with non-directory {m.name!r}")
        os.unlink(last, dir_fd=pfd)
        make()

    def _file(self, m: tarfile.TarInfo, tf: tarfile.TarFile | None, pfd: int, last: str, name: str,
              uid: int, gid: int) -> None:
        try:
            fd = os.open(last, _O_NEWFILE, 0o600, dir_fd=pfd)
        except FileExistsError:
            st = os.stat(last, dir_fd=pfd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                raise CopyError(f"cannot overwrite directory {self._shown(name)} with non-directory "
                                f"{m.name!r}") from None
            try:
                os.unlink(last, dir_fd=pfd)
                fd = os.open(last, _O_NEWFILE, 0o600, dir_fd=pfd)
            except OSError as e:
                # a file bind-mounted there (/etc/hosts, -v FILE:...) cannot be unlinked:
                # written in place, as the container itself would
                if e.errno != errno.EBUSY or not stat.S_ISREG(st.st_mode):
                    raise
                fd = os.open(last, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd)
        try:
            self._data(m, tf, fd)
            os.fchown(fd, uid, gid)
            os.fchmod(fd, m.mode & 0o7777)  # after chown: chown clears setuid/setgid
            cap = m.pax_headers.get("SCHILY.xattr." + _CAP_XATTR)
            if cap is not None:
                with contextlib.suppress(OSError):  # after chown, which drops it
                    os.setxattr(fd, _CAP_XATTR, cap.encode("utf-8", "surrogateescape"))
            os.utime(fd, (m.mtime, m.mtime))
        finally:
            os.close(fd)

    def _data(self, m: tarfile.TarInfo, tf: tarfile.TarFile | None, fd: int) -> None:
        src = tf.extractfile(m) if tf is not None else None
        if src is None:
            return
        while True:
            chunk = src.read(_CHUNK)
            if not chunk:
                return
            view = memoryview(chunk)
            while view:
                n = os.write(fd, view)
                view = view[n:]

    def _finish_dirs(self) -> None:
        for name, mode, mtime in reversed(self.pending):
            if name:
                parent, _, last = name.rpartition("/")
                try:
                    fd = os.open(last, _O_DIR, dir_fd=self._dir(parent, name))
                except OSError:
                    continue  # replaced by a later member
            else:
                fd = linux.openat2(self.base, self._path(""), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC,
                                   0, self.resolve)
            try:
                os.fchmod(fd, mode & 0o7777)
                os.utime(fd, (mtime, mtime))
            finally:
                os.close(fd)


# -- the child that enters the container -----------------------------------------------------


@dataclass
class _Entry:
    """How the child gets into the container's view; opened by the parent before fork."""

    readonly: bool  # the spec's root.readonly (--read-only)
    mnt_fd: int = -1  # a running container: its mount namespace
    root_fd: int = -1  # ... and its root (/proc/PID/root)
    mountinfo: str = ""  # ... and what it has mounted (for the pseudo filesystems)
    overlay: tuple[str, str | None, str] | None = None  # a stopped one: options, chdir, target
    binds: list[Mount] = field(default_factory=list)

    def close(self) -> None:
        for fd in (self.mnt_fd, self.root_fd):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.mnt_fd = self.root_fd = -1


def _entry(store: Store, rec: ContainerRecord) -> _Entry:
    """A running container's namespace and root (checked to still be its process after
    they are open), or what a stopped one needs mounted."""
    from minirun.container.records import Containers, process_start_time
    from minirun.runtime import mounts

    containers = Containers(store)
    cdir = containers.dir(rec.id)
    try:
        spec = json.loads((cdir / "config.json").read_bytes())
    except (OSError, ValueError) as e:
        raise CopyError(f"container {rec.name or rec.id[:12]} has no readable config.json: {e}") from None
    readonly = bool((spec.get("root") or {}).get("readonly"))
    for _ in range(3):
        if not rec.alive():
            break
        entry = _Entry(readonly)
        try:
            entry.mnt_fd = os.open(f"/proc/{rec.pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
            entry.root_fd = os.open(f"/proc/{rec.pid}/root", _O_PATH_DIR)
            with open(f"/proc/{rec.pid}/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
                entry.mountinfo = f.read()
        except (FileNotFoundError, ProcessLookupError):
            entry.close()
        else:
            # still the same start time: every /proc/PID file opened was the container's
            if process_start_time(rec.pid) == rec.pid_start:
                return entry
            entry.close()
        rec = containers.get(rec.id)  # it ended meanwhile (refreshed): stopped now
    from minirun.container.lifecycle import stack
    from minirun.container.spec import make_bind_sources

    make_bind_sources(rec.options.volumes)  # as each start does
    opts, chdir_to = mounts.overlay_options(stack(containers, rec), str(cdir / "upper"), str(cdir / "work"))
    binds = [m for m in mounts.parse_mounts(spec.get("mounts") or []) if m.bind]
    return _Entry(readonly, overlay=(opts, chdir_to, str(cdir / "rootfs")), binds=binds)


def _enter(entry: _Entry) -> int:
    """In the child: become part of the container's view, chrooted at its root; an
    O_PATH fd of that root."""
    from minirun.runtime import mounts

    linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
    if entry.mnt_fd >= 0:
        linux.setns(entry.mnt_fd, linux.CLONE_NEWNS)
        os.fchdir(entry.root_fd)
        os.chroot(".")
    else:
        assert entry.overlay is not None
        opts, chdir_to, target = entry.overlay
        linux.unshare(linux.CLONE_NEWNS)
        mounts.make_root_private()  # nothing mounted here reaches the host's namespace
        mounts.mount_overlay(opts, chdir_to, target)
        rootfd = os.open(target, _O_PATH_DIR)
        try:
            mounts.mount_all(rootfd, entry.binds, console=False)
            if entry.readonly:
                linux.mount(None, target, None, linux.MS_REMOUNT | linux.MS_BIND | linux.MS_RDONLY)
            os.fchdir(rootfd)
            os.chroot(".")
        finally:
            os.close(rootfd)
    entry.close()
    os.chdir("/")
    return os.open("/", _O_PATH_DIR)


def _send(fd: int, obj: dict[str, Any]) -> None:
    data = memoryview((json.dumps(obj) + "\n").encode())
    while data:
        data = data[os.write(fd, data):]


def _error_record(e: BaseException, readonly: bool) -> dict[str, Any]:
    if isinstance(e, CopyPathNotFound):
        return {"error": "notfound", "path": e.path}
    if isinstance(e, UnsafeArchive):
        return {"error": "unsafe", "message": str(e)}
    if isinstance(e, MinirunError):
        return {"error": "copy", "message": str(e)}
    if isinstance(e, OSError):
        if e.errno == errno.EROFS:
            return {"error": "copy", "message": "container rootfs is marked read-only" if readonly
                    else f"read-only file system{': ' + str(e.filename) if e.filename else ''}"}
        where = f": {e.filename}" if e.filename else ""
        return {"error": "copy", "message": f"{e.strerror or e}{where}"}
    return {"error": "internal", "message": f"{type(e).__name__}: {e}"}


class _Child:
    """The forked child in the container's view, and the three pipes to it: ``to_child``
    (a "go" byte, or the tar to extract), ``data`` (the tar it writes) and ``status``
    (JSON lines: its answer, then "done" or an error)."""

    def __init__(self, entry: _Entry, label: str, job: Callable[[int, _Child], None]) -> None:
        self.entry = entry
        self.label = label
        self.job = job
        self.pid = 0
        self.to_child_r, self.to_child_w = os.pipe2(os.O_CLOEXEC)
        self.data_r, self.data_w = os.pipe2(os.O_CLOEXEC)
        self.status_r, self.status_w = os.pipe2(os.O_CLOEXEC)
        self._status: BinaryIO | None = None

    # -- the child's side

    def _run_child(self) -> None:  # pragma: no cover - runs in the forked child
        try:
            os.close(self.to_child_w)
            os.close(self.data_r)
            os.close(self.status_r)
            null = os.open(os.devnull, os.O_RDWR)
            os.dup2(null, 0)
            os.dup2(null, 1)
            os.close(null)
            root = _enter(self.entry)
            self.job(root, self)
        except BaseException as e:  # noqa: BLE001 - everything is reported to the parent
            with contextlib.suppress(OSError):
                _send(self.status_w, _error_record(e, self.entry.readonly))
        finally:
            os._exit(0)

    def answer(self, obj: dict[str, Any]) -> None:
        _send(self.status_w, obj)

    def wait_go(self) -> bool:
        return os.read(self.to_child_r, 1) == b"g"

    # -- the parent's side

    def __enter__(self) -> _Child:
        try:
            self.pid = os.fork()
        except BaseException:
            self._close_all()
            raise
        if self.pid == 0:  # pragma: no cover - the child
            self._run_child()
        self.entry.close()
        for fd in (self.to_child_r, self.data_w, self.status_w):
            os.close(fd)
        self.to_child_r = self.data_w = self.status_w = -1
        self._status = os.fdopen(self.status_r, "rb")
        self.status_r = -1
        return self

    def __exit__(self, *exc: object) -> None:
        self.close_to_child()
        for fd in (self.data_r,):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.data_r = -1
        if exc[0] is not None and self.pid > 0:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        if self.pid > 0:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, 0)
        if self._status is not None:
            self._status.close()

    def _close_all(self) -> None:
        self.entry.close()
        for fd in (self.to_child_r, self.to_child_w, self.data_r, self.data_w, self.status_r, self.status_w):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)

    def close_to_child(self) -> None:
        if self.to_child_w >= 0:
            with contextlib.suppress(OSError):
                os.close(self.to_child_w)
            self.to_child_w = -1

    def go(self) -> None:
        os.write(self.to_child_w, b"g")

    def status(self) -> dict[str, Any]:
        """The child's next status line; its error raised as ours."""
        assert self._status is not None
        line = self._status.readline()
        if not line:
            _, code = os.waitpid(self.pid, 0)
            self.pid = -1
            raise CopyError(f"the copy process for container {self.label} ended without an answer "
                            f"(wait status {code})")
        msg: dict[str, Any] = json.loads(line)
        kind = msg.get("error")
        if kind == "notfound":
            raise CopyPathNotFound(msg["path"], self.label)
        if kind == "unsafe":
            raise UnsafeArchive(msg["message"])
        if kind == "internal":
            raise CopyError(f"internal error in the copy process: {msg['message']}")
        if kind:
            raise CopyError(msg["message"])
        return msg


# -- the host side -------------------------------------------------------------------------


@dataclass(frozen=True)
class CopyResult:
    """What was copied: the size of the tar stream and its member count."""

    size: int
    members: int


class _Counting:
    """A reader over a pipe that counts what passed."""

    def __init__(self, f: Reader) -> None:
        self.f = f
        self.n = 0

    def read(self, n: int = -1) -> bytes:
        b = self.f.read(n)
        self.n += len(b)
        return b

    def drain(self) -> None:
        while self.read(_CHUNK):
            pass


def host_dest(dest: str) -> DestInfo:
    """A host DEST as Docker's client reads it (ValidateOutputPath, then
    CopyInfoDestinationPath: a symlink is followed; a missing DEST needs its parent)."""
    path = local_abs(dest)
    parent = split_dir_entry(clean(path))[0]
    if not os.path.exists(parent):
        raise CopyError(f'invalid output path: directory "{parent}" does not exist')
    if os.path.exists(path):
        mode = os.stat(path).st_mode
        if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
            raise CopyError(f'invalid output path: "{path}" must be a directory or a regular file')
    original = path
    for _ in range(11):
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            break
        except NotADirectoryError:
            raise CopyError(f"not a directory: {split_dir_entry(path)[0]}") from None
        if not stat.S_ISLNK(st.st_mode):
            return DestInfo(path, True, stat.S_ISDIR(st.st_mode))
        target = os.readlink(path)
        path = preserve_trailing(clean(target if target.startswith("/")
                                       else split_dir_entry(path)[0] + "/" + target), original)
    else:
        raise CopyError(f"too many symlinks in {original}")
    parent = split_dir_entry(path)[0]
    if not os.path.isdir(parent):
        raise CopyError(f"not a directory: {parent}" if os.path.exists(parent)
                        else f"no such file or directory: {parent}")
    return DestInfo(path, False)


@dataclass(frozen=True)
class _HostSource:
    info: SourceInfo
    resolved: str
    st: os.stat_result


def host_source(src: str, follow: bool) -> _HostSource:
    """A host SRC as Docker's client reads it (CopyInfoSourcePath): its dir's symlinks
    resolved, the last element followed only with -L (or a trailing ``/``)."""
    path = local_abs(src)
    try:
        if follow:
            resolved, rebase = rebase_name(path, os.path.realpath(path, strict=True))
        else:
            dir_part, last = _split(path)
            resolved = os.path.realpath(dir_part or "/", strict=True).rstrip("/") + "/" + last
            rebase = (go_base(path) if has_trailing_separator(path) and go_base(path) != go_base(resolved)
                      else "")
        st = os.lstat(resolved)
    except NotADirectoryError:  # a file (or a link to one) given as ``f/``, ``f/.`` or ``f/x``
        raise CopyError(f"lstat {path}: not a directory") from None
    except FileNotFoundError:
        raise CopyError(f"lstat {path.rstrip('/') or '/'}: no such file or directory") from None
    return _HostSource(SourceInfo(resolved, stat.S_ISDIR(st.st_mode), archive_top(resolved), rebase),
                       resolved, st)


def _write_host_tar(src: _HostSource, out: BinaryIO) -> None:
    w = TarWriter(out)
    dir_part, last = _split(src.resolved)
    if stat.S_ISDIR(src.st.st_mode):
        fd = os.open(src.resolved, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            write_tree(w, fd, "", src.info.top, os.fstat(fd))
        finally:
            os.close(fd)
    else:
        pfd = os.open(dir_part or "/", _O_PATH_DIR)
        try:
            write_tree(w, pfd, last, src.info.top, src.st)
        finally:
            os.close(pfd)
    w.close()


def _label(rec: ContainerRecord, label: str | None) -> str:
    return label or rec.name or rec.id[:12]


def copy_from(store: Store, rec: ContainerRecord, src: str, dest: str | BinaryIO, *,
              follow: bool = False, archive: bool = False, label: str | None = None) -> CopyResult:
    """``cp CONTAINER:SRC DEST``: SRC of the container to the host path DEST (Docker's
    rules, see the module doc), or, when ``dest`` is a stream, a tar of SRC written to
    it (``cp CONTAINER:SRC -``). ``follow``: -L. The files belong to the user running
    this, or keep the container's uid:gid with ``archive`` (-a); a tar stream always
    carries the container's."""
    name = _label(rec, label)
    if not src:
        raise CopyError("source path cannot be empty")
    dst = host_dest(dest) if isinstance(dest, str) else None
    entry = _entry(store, rec)

    def job(root: int, ch: _Child) -> None:  # pragma: no cover - runs in the child
        info, asked, rebase = _source_in(root, src, follow, name)
        top = archive_top(container_abs(asked))
        ch.answer({"path": container_abs(asked), "is_dir": stat.S_ISDIR(info.st.st_mode), "top": top,
                   "rebase": rebase})
        if not ch.wait_go():
            return
        with os.fdopen(ch.data_w, "wb", buffering=_CHUNK) as out:
            _archive_in(root, info, top, out, _pseudo_devices(entry.mountinfo))
        ch.answer({"done": True})

    try:
        with _Child(entry, name, job) as child:
            meta = child.status()
            source = SourceInfo(meta["path"], meta["is_dir"], meta["top"], meta["rebase"])
            if dst is None:
                assert not isinstance(dest, str)
                child.go()
                size = 0
                with os.fdopen(child.data_r, "rb", buffering=0) as stream:
                    child.data_r = -1
                    while chunk := stream.read(_CHUNK):
                        dest.write(chunk)
                        size += len(chunk)
                child.status()
                return CopyResult(size, 0)
            place = placement(source, dst)
            base_fd = _open_host_dir(place.extract_dir)
            try:
                child.go()
                with os.fdopen(child.data_r, "rb", buffering=_CHUNK) as pipe_in:
                    child.data_r = -1
                    raw = pipe_in
                    reader = _Counting(raw)
                    owner = None if archive else (os.getuid(), os.getgid())
                    n = Extractor(base_fd, "", BENEATH, owner=owner, old_top=source.top,
                                  new_top=place.top, where=place.extract_dir).run(reader)
                    reader.drain()
            finally:
                os.close(base_fd)
            child.status()
            return CopyResult(reader.n, n)
    finally:
        entry.close()


def _open_host_dir(path: str) -> int:
    try:
        return os.open(path, _O_PATH_DIR)
    except FileNotFoundError:
        raise CopyError(f"no such directory: {path}") from None
    except NotADirectoryError:
        raise CopyError(f"not a directory: {path}") from None


def copy_to(store: Store, rec: ContainerRecord, src: str | BinaryIO, dest: str, *,
            follow: bool = False, archive: bool = False, label: str | None = None) -> CopyResult:
    """``cp SRC CONTAINER:DEST``: the host path SRC into the container (Docker's rules),
    or, when ``src`` is a stream, the tar it carries extracted into the container
    directory DEST (``cp - CONTAINER:DEST``; checked whole before anything is written).
    The files belong to root unless ``archive`` (-a: the tar's/host files' uid:gid)."""
    name = _label(rec, label)
    if not dest:
        raise CopyError("destination path cannot be empty")
    owner = None if archive else (0, 0)
    source = host_source(src, follow) if isinstance(src, str) else None
    spool: Path | None = None
    try:
        if source is None:
            assert not isinstance(src, str)
            spool = store.new_tmp(".cp.tar")
            with open(spool, "wb") as sf:
                while chunk := src.read(_CHUNK):
                    sf.write(chunk)
            with open(spool, "rb") as rf:
                check_archive(rf)  # every member, before the container is touched
        entry = _entry(store, rec)

        def job(root: int, ch: _Child) -> None:  # pragma: no cover - runs in the child
            dst = _dest_in(root, dest, name)
            if source is None:
                if not (dst.exists and dst.is_dir):
                    raise CopyError(f'destination "{name}:{dest}" must be a directory')
                place, old_top = Placement(dst.path, None), ""
            else:
                place, old_top = placement(source.info, dst, f"{name}:"), source.info.top
            point = _extract_point_in(root, place.extract_dir, name)
            ch.answer({"extract": point})
            with os.fdopen(ch.to_child_r, "rb", buffering=_CHUNK) as raw:
                reader = _Counting(raw)
                n = Extractor(root, point, IN_CONTAINER, owner=owner, old_top=old_top, new_top=place.top,
                              where=f"{name}:{point}").run(reader)
                reader.drain()
            ch.answer({"done": True, "members": n, "size": reader.n})

        try:
            with _Child(entry, name, job) as child:
                child.status()
                try:
                    with os.fdopen(child.to_child_w, "wb", buffering=_CHUNK) as out:
                        child.to_child_w = -1
                        if spool is not None:
                            with open(spool, "rb") as rf:
                                while chunk := rf.read(_CHUNK):
                                    out.write(chunk)
                        else:
                            assert source is not None
                            _write_host_tar(source, out)
                except BrokenPipeError:
                    pass  # the child stopped reading: its status says why
                done = child.status()
                return CopyResult(int(done.get("size", 0)), int(done.get("members", 0)))
        finally:
            entry.close()
    finally:
        if spool is not None:
            with contextlib.suppress(FileNotFoundError):
                spool.unlink()


def split_cp_arg(arg: str) -> tuple[str, str]:
    """Docker's splitCpArg: ``CONTAINER:PATH`` -> (container, path); a local path (absolute,
    or starting with ``.``, or without ``:``) -> ("", arg)."""
    if arg.startswith("/"):
        return "", arg
    container, sep, path = arg.partition(":")
    if not sep or container.startswith("."):
        return "", arg
    return container, path


__all__ = ["CopyResult", "DestInfo", "Placement", "SourceInfo", "check_archive", "copy_from", "copy_to",
           "placement", "split_cp_arg"]
