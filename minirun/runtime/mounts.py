"""The container's filesystem: overlay rootfs, spec mounts, /dev, masked paths, pivot_root.

Everything here runs in the forked child, inside its fresh mount namespace, so every mount
disappears with the namespace when the container exits (or minirun is killed): the host's
mount table never sees any of it.

``parse_mounts`` runs in the parent (before fork) so a malformed spec fails with a clean
exception; the ``setup_*`` functions run in the child and only do syscalls.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Sequence
from typing import Any

from minirun.errors import KernelUnsupported, RuntimeFailure
from minirun.runtime import linux
from minirun.runtime.linux import (
    MS_BIND,
    MS_DIRSYNC,
    MS_MANDLOCK,
    MS_MOVE,
    MS_NOATIME,
    MS_NODEV,
    MS_NODIRATIME,
    MS_NOEXEC,
    MS_NOSUID,
    MS_NOSYMFOLLOW,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    MS_RELATIME,
    MS_REMOUNT,
    MS_SHARED,
    MS_SLAVE,
    MS_STRICTATIME,
    MS_SYNCHRONOUS,
    MS_UNBINDABLE,
)

# The kernel copies mount(2) data into one page; the terminating NUL must fit too.
PAGE_LIMIT = 4096 - 1

# option -> (set?, flag)  (runc's mount option table)
FLAG_OPTIONS: dict[str, tuple[bool, int]] = {
    "async": (False, MS_SYNCHRONOUS),
    "atime": (False, MS_NOATIME),
    "bind": (True, MS_BIND),
    "defaults": (True, 0),
    "dev": (False, MS_NODEV),
    "diratime": (False, MS_NODIRATIME),
    "dirsync": (True, MS_DIRSYNC),
    "exec": (False, MS_NOEXEC),
    "mand": (True, MS_MANDLOCK),
    "noatime": (True, MS_NOATIME),
    "nodev": (True, MS_NODEV),
    "nodiratime": (True, MS_NODIRATIME),
    "noexec": (True, MS_NOEXEC),
    "nomand": (False, MS_MANDLOCK),
    "norelatime": (False, MS_RELATIME),
    "nostrictatime": (False, MS_STRICTATIME),
    "nosuid": (True, MS_NOSUID),
    "nosymfollow": (True, MS_NOSYMFOLLOW),
    "rbind": (True, MS_BIND | MS_REC),
    "relatime": (True, MS_RELATIME),
    "ro": (True, MS_RDONLY),
    "rro": (True, MS_RDONLY),
    "rw": (False, MS_RDONLY),
    "strictatime": (True, MS_STRICTATIME),
    "suid": (False, MS_NOSUID),
    "sync": (True, MS_SYNCHRONOUS),
}
PROPAGATION: dict[str, int] = {
    "private": MS_PRIVATE,
    "rprivate": MS_PRIVATE | MS_REC,
    "shared": MS_SHARED,
    "rshared": MS_SHARED | MS_REC,
    "slave": MS_SLAVE,
    "rslave": MS_SLAVE | MS_REC,
    "unbindable": MS_UNBINDABLE,
    "runbindable": MS_UNBINDABLE | MS_REC,
}
# per-mount flags a bind remount can change (the rest belong to the superblock)
_BIND_REMOUNT_MASK = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_NOATIME | MS_NODIRATIME
_BIND_REMOUNT_MASK |= MS_RELATIME | MS_STRICTATIME | MS_NOSYMFOLLOW

# O_PATH fds are enough to name a mount target or a *at() directory, and open nothing.
_O_PATH = os.O_PATH | os.O_CLOEXEC
# RESOLVE_IN_ROOT: "/" and ".." and absolute symlinks all stay at the container's root;
# no magic links (/proc/self/root, /proc/N/cwd) to jump out by (CVE-2021-30465).
_IN_ROOT = linux.RESOLVE_IN_ROOT | linux.RESOLVE_NO_MAGICLINKS

# Devices every container gets when /dev is a tmpfs: (name, major, minor), mode 0666.
_DEVICES = (("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8),
            ("urandom", 1, 9), ("tty", 5, 0))  # fmt: skip
_DEV_SYMLINKS = (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                 ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"),
                 ("ptmx", "pts/ptmx"), ("core", "/proc/kcore"))  # fmt: skip


class Mount:
    """One spec mount, parsed (in the parent) into what mount(2) takes.

    Plain slotted classes, not NamedTuple: each NamedTuple costs ~0.5 ms of import time
    on the `run` path."""

    __slots__ = (
        "destination",
        "type",
        "source",
        "flags",
        "data",
        "propagation",
        "bind",
    )

    def __init__(
        self,
        destination: str,
        type: str,
        source: str,
        flags: int,
        data: str,
        propagation: tuple[int, ...],
        bind: bool,
    ) -> None:
        self.destination = destination
        self.type = type
        self.source = source
        self.flags = flags  # MS_* to set
        self.data = data  # comma-joined fs-specific options
        self.propagation = propagation
        self.bind = bind


class Device:
    __slots__ = (
        "path",
        "kind",
        "major",
        "minor",
        "mode",
        "uid",
        "gid",
    )

    def __init__(
        self, path: str, kind: int, major: int, minor: int, mode: int, uid: int, gid: int
    ) -> None:
        self.path = path
        self.kind = kind  # stat.S_IFCHR / S_IFBLK / S_IFIFO
        self.major = major
        self.minor = minor
        self.mode = mode
        self.uid = uid
        self.gid = gid


def parse_options(options: Sequence[str]) -> tuple[int, str, tuple[int, ...]]:
    """Mount options -> (MS_* flags, data string, propagation flags)."""
    flags = 0
    data: list[str] = []
    prop: list[int] = []
    for opt in options:
        if opt in FLAG_OPTIONS:
            set_, flag = FLAG_OPTIONS[opt]
            flags = flags | flag if set_ else flags & ~flag
        elif opt in PROPAGATION:
            prop.append(PROPAGATION[opt])
        else:
            data.append(opt)
    return flags, ",".join(data), tuple(prop)


def parse_mounts(mounts: Sequence[dict[str, Any]]) -> list[Mount]:
    out = []
    for m in mounts:
        dest = m.get("destination")
        if not dest or not dest.startswith("/"):
            raise RuntimeFailure(f"mount destination must be an absolute path: {dest!r}")
        type_ = m.get("type") or ""
        flags, data, prop = parse_options(m.get("options") or [])
        bind = type_ == "bind" or bool(flags & MS_BIND)
        if bind:
            flags |= MS_BIND
        source = m.get("source") or type_
        out.append(Mount(dest, type_, source, flags, data, prop, bind))
    return out


def parse_devices(devices: Sequence[dict[str, Any]]) -> list[Device]:
    """linux.devices, as config.parse checked them (types and ranges); an absent or null
    field takes its default."""
    kinds = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}

    def num(d: dict[str, Any], key: str, default: int) -> int:
        v = d.get(key)
        return default if v is None else int(v)

    out = []
    for d in devices:
        out.append(Device(d["path"], kinds[d.get("type") or "c"], num(d, "major", 0),
                          num(d, "minor", 0), num(d, "fileMode", 0o666) & 0o7777,
                          num(d, "uid", 0), num(d, "gid", 0)))  # fmt: skip
    return out


# --- confined path resolution (CVE-2021-30465) ---------------------------------------------


def _rel(path: str) -> str:
    parts = [p for p in path.split("/") if p and p != "."]
    return "/".join(parts) or "."


def open_in_root(rootfd: int, path: str, *, create: str | None = None) -> int:
    """An O_PATH fd for ``path`` resolved INSIDE the tree at ``rootfd``.

    Symlinks and ".." are followed but can never leave the root (RESOLVE_IN_ROOT): an image
    that plants ``/proc -> /host/path`` cannot make us mount over the host (runc
    CVE-2021-30465 raced exactly such a re-resolved string). Missing components are created
    in the same confined way when ``create`` is "dir" or "file" (the last component only).
    """
    rel = _rel(path)
    try:
        return linux.openat2(rootfd, rel, _O_PATH, 0, _IN_ROOT)
    except FileNotFoundError:
        if create is None:
            raise
    # Slow path, only when something is missing: walk component by component, following
    # symlinks by hand (absolute ones restart at the container's root, ".." stops there),
    # and create what is missing. Each step works on a symlink-free prefix.
    pending = [c for c in rel.split("/") if c not in ("", ".")]
    resolved: list[str] = []
    links = 0
    while pending:
        comp = pending.pop(0)
        if comp == "..":
            if resolved:
                resolved.pop()
            continue
        parent = linux.openat2(rootfd, "/".join(resolved) or ".", _O_PATH | os.O_DIRECTORY,
                               0, _IN_ROOT)  # fmt: skip
        try:
            try:
                st = os.stat(comp, dir_fd=parent, follow_symlinks=False)
            except FileNotFoundError:
                if not pending and create == "file":
                    # O_NOFOLLOW|O_EXCL: never create through a symlink
                    os.close(os.open(comp, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW
                                     | os.O_CLOEXEC, 0o644, dir_fd=parent))  # fmt: skip
                else:
                    os.mkdir(comp, 0o755, dir_fd=parent)
                resolved.append(comp)
                continue
            if stat.S_ISLNK(st.st_mode):
                links += 1
                if links > 40:
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
                target = os.readlink(comp, dir_fd=parent)
                if target.startswith("/"):
                    resolved = []
                pending = [c for c in target.split("/") if c not in ("", ".")] + pending
            else:
                resolved.append(comp)
        finally:
            os.close(parent)
    return linux.openat2(rootfd, "/".join(resolved) or ".", _O_PATH, 0, _IN_ROOT)


def _fdpath(fd: int) -> str:
    return f"/proc/self/fd/{fd}"


def _remount_bind(rootfd: int, dest: str, flags: int) -> None:
    """Change per-mount flags (ro, nosuid...) of the mount now at ``dest``.

    Re-resolved after the mount on purpose: an fd opened before mounting names the dentry
    underneath, and remounting through it would hit the parent mount instead.
    """
    fd = open_in_root(rootfd, dest)
    try:
        path = _fdpath(fd)
        keep = _statvfs_flags(path)
        linux.mount(None, path, None, MS_REMOUNT | MS_BIND | keep | (flags & _BIND_REMOUNT_MASK))
        if flags & MS_REC and flags & MS_RDONLY:
            # `-v /src:/dst:ro` with mounts under /src: a remount changes only the top
            # mount, so the submounts would stay writable. Make the whole tree read-only
            # (Docker 25+ does the same with the same call).
            try:
                linux.mount_setattr(fd, "", linux.AT_EMPTY_PATH | linux.AT_RECURSIVE,
                                    linux.MOUNT_ATTR_RDONLY)
            except OSError as e:
                if e.errno != errno.ENOSYS:
                    raise
                _remount_submounts_ro(path)
    finally:
        os.close(fd)


def _remount_submounts_ro(top: str) -> None:
    """Kernels before 5.12: remount every mount below ``top`` read-only, one by one."""
    real = os.path.realpath(top)
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    for point in points:
        if point.startswith(real.rstrip("/") + "/"):
            linux.mount(None, point, None, MS_REMOUNT | MS_BIND | MS_RDONLY | _statvfs_flags(point))


def _statvfs_flags(path: str) -> int:
    f = os.statvfs(path).f_flag
    out = f & (MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_NOATIME | MS_NODIRATIME)
    if f & os.ST_RELATIME:
        out |= MS_RELATIME
    return out


# --- the steps, in order -------------------------------------------------------------------


def make_root_private() -> None:
    set_root_propagation(MS_REC | MS_PRIVATE)


def set_root_propagation(flags: int) -> None:
    # First thing in the new mount namespace: nothing we mount may propagate to the host
    # (and nothing stays there if we die); pivot_root also refuses shared mounts. rprivate
    # by default; linux.rootfsPropagation (e.g. rslave) when the config asks.
    linux.mount(None, "/", None, flags)


def bind_onto_itself(target: str) -> None:
    """A bundle's rootfs dir made a mount point (pivot_root needs one), as runc does."""
    linux.mount(target, target, None, MS_BIND | MS_REC)


def overlay_options(
    lowerdirs: Sequence[str], upperdir: str, workdir: str
) -> tuple[str, str | None]:
    """(options, directory to chdir into first or None).

    The options must fit one page. When the absolute form does not, use names relative to
    the lowerdirs' common parent and chdir there first (containerd's trick; the lead gives
    us short links, so 120+ layers fit).
    """
    opts = f"lowerdir={':'.join(lowerdirs)},upperdir={upperdir},workdir={workdir}"
    if len(opts) <= PAGE_LIMIT:
        return opts, None
    common = os.path.commonpath(lowerdirs)
    if common in lowerdirs:  # one lowerdir is the parent of another: use their parent
        common = os.path.dirname(common)
    rel = [os.path.relpath(d, common) for d in lowerdirs]
    opts = f"lowerdir={':'.join(rel)},upperdir={upperdir},workdir={workdir}"
    if len(opts) > PAGE_LIMIT:
        raise RuntimeFailure(
            f"overlay mount options are {len(opts)} bytes even with relative lowerdirs "
            f"({len(lowerdirs)} layers); the kernel takes at most {PAGE_LIMIT}: "
            "use shorter layer link names"
        )
    return opts, common


def mount_overlay(opts: str, chdir_to: str | None, target: str) -> None:
    if chdir_to is not None:
        os.chdir(chdir_to)
    try:
        linux.mount("overlay", target, "overlay", 0, opts)
    except OSError as e:
        if e.errno == errno.ENODEV:
            raise KernelUnsupported("kernel has no overlayfs: modprobe overlay") from e
        raise


def mount_all(rootfd: int, mounts: Sequence[Mount], console: bool) -> None:
    """The spec's mounts inside the new root, in spec order, then the minimal /dev."""
    dev_is_tmpfs = False
    for m in mounts:
        _mount_one(rootfd, m)
        if _rel(m.destination) == "dev" and m.type == "tmpfs":
            dev_is_tmpfs = True
    if dev_is_tmpfs:
        populate_dev(rootfd, console)


def _mount_one(rootfd: int, m: Mount) -> None:
    if m.bind:
        try:
            st = os.stat(m.source)
        except OSError as e:
            raise RuntimeFailure(f"bind mount source {m.source!r} for {m.destination}: "
                                 f"{e.strerror}") from e  # fmt: skip
        create = "dir" if stat.S_ISDIR(st.st_mode) else "file"
    else:
        create = "dir"
    if m.type == "cgroup":
        _mount_cgroup(rootfd, m)
        return
    fd = open_in_root(rootfd, m.destination, create=create)
    try:
        target = _fdpath(fd)
        if m.bind:
            linux.mount(m.source, target, None, m.flags & (MS_BIND | MS_REC))
        else:
            linux.mount(m.source, target, m.type, m.flags & ~MS_REC, m.data or None)
    finally:
        os.close(fd)
    # a bind mount ignores every flag but MS_REC: ro, nosuid... take a second, remount call
    if m.bind and m.flags & _BIND_REMOUNT_MASK:
        _remount_bind(rootfd, m.destination, m.flags)
    for prop in m.propagation:
        fd = open_in_root(rootfd, m.destination)
        try:
            linux.mount(None, _fdpath(fd), None, prop)
        finally:
            os.close(fd)


def _mount_cgroup(rootfd: int, m: Mount) -> None:
    """type "cgroup", as runc does it: cgroup2 on a unified host; on a v1/hybrid host a
    tmpfs with one mount per hierarchy. In a new cgroup namespace (our cgroup reads as "/"
    in /proc/self/cgroup) a fresh mount shows the container's own cgroup as the root.
    Without one (Podman's default on v1) a fresh mount would show the host's whole tree,
    so the container's own cgroup dir is bind-mounted from the host's hierarchy instead."""
    fd = open_in_root(rootfd, m.destination, create="dir")
    base = m.flags & (MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RELATIME)
    ro = m.flags & MS_RDONLY
    with open("/proc/self/cgroup") as f:
        lines = [line.split(":", 2) for line in f.read().splitlines()]
    try:
        if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):  # unified (v2-only) host
            own = next((p for _id, c, p in lines if c == ""), "/")
            if own == "/":
                linux.mount("cgroup2", _fdpath(fd), "cgroup2", base | ro)
            else:
                linux.mount(f"/sys/fs/cgroup{own}", _fdpath(fd), None, MS_BIND | MS_REC)
                if ro:
                    _remount_bind(rootfd, m.destination, m.flags | MS_RDONLY | MS_BIND)
            return
        linux.mount("tmpfs", _fdpath(fd), "tmpfs", base, "mode=755")
    finally:
        os.close(fd)
    points = _cgroup_mount_points()
    for _id, controllers, own in lines:
        name = controllers.removeprefix("name=") or "unified"
        sub = f"{m.destination}/{name}"
        sfd = open_in_root(rootfd, sub, create="dir")
        try:
            if own != "/" and controllers in points:
                linux.mount(points[controllers] + own, _fdpath(sfd), None, MS_BIND)
            elif controllers:
                linux.mount("cgroup", _fdpath(sfd), "cgroup", base | ro, controllers)
            else:
                linux.mount("cgroup2", _fdpath(sfd), "cgroup2", base | ro)
        except OSError:
            pass  # a hierarchy we may not mount here: leave its dir empty, as runc does
        finally:
            os.close(sfd)
        if ro and own != "/" and controllers in points:
            try:
                _remount_bind(rootfd, sub, MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
            except OSError:
                pass
    if ro:
        _remount_bind(rootfd, m.destination, m.flags | MS_RDONLY)


def _cgroup_mount_points() -> dict[str, str]:
    """The host's cgroup mounts: controllers as /proc/self/cgroup names them -> mount point."""
    out: dict[str, str] = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, rfields = left.split(), right.split()
            if len(rfields) < 3 or len(fields) < 5:
                continue
            if rfields[0] == "cgroup2":
                out.setdefault("", fields[4])
            elif rfields[0] == "cgroup":
                opts = rfields[2].split(",")
                names = [o for o in opts if o not in ("rw", "ro", "nosuid", "nodev", "noexec",
                                                       "relatime", "noatime", "xattr",
                                                       "clone_children")]  # fmt: skip
                # /proc/self/cgroup lists co-mounted controllers comma-joined (cpu,cpuacct),
                # in the kernel's order, which the super options share
                out.setdefault(",".join(names), fields[4])
    return out


def populate_dev(rootfd: int, console: bool) -> None:
    """The minimal /dev runc builds on its tmpfs: a few char devices, symlinks, console."""
    devfd = open_in_root(rootfd, "dev")
    try:
        for name, major, minor in _DEVICES:
            _make_dev(devfd, name, stat.S_IFCHR, major, minor, 0o666)
        for name, target in _DEV_SYMLINKS:
            try:
                os.symlink(target, name, dir_fd=devfd)
            except FileExistsError:
                pass
        if console:
            # mount point for the pty slave, bound at TTY setup
            try:
                os.close(os.open("console", os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW
                                 | os.O_CLOEXEC, 0o600, dir_fd=devfd))  # fmt: skip
            except FileExistsError:
                pass
    finally:
        os.close(devfd)


def _make_dev(dirfd: int, name: str, kind: int, major: int, minor: int, mode: int) -> None:
    try:
        os.mknod(name, kind | mode, os.makedev(major, minor), dir_fd=dirfd)
    except FileExistsError:
        return
    except PermissionError:
        # no CAP_MKNOD (or a nodev mount): bind the host's node instead, as rootless runc does
        os.close(os.open(name, os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666,
                         dir_fd=dirfd))  # fmt: skip
        fd = linux.openat2(dirfd, name, _O_PATH, 0, _IN_ROOT)
        try:
            linux.mount(f"/dev/{name}", _fdpath(fd), None, MS_BIND)
        finally:
            os.close(fd)


def create_devices(rootfd: int, devices: Sequence[Device]) -> None:
    """linux.devices from the spec."""
    for d in devices:
        parent, _, name = _rel(d.path).rpartition("/")
        pfd = open_in_root(rootfd, parent or ".", create="dir")
        try:
            _make_dev(pfd, name, d.kind, d.major, d.minor, d.mode)
            os.chown(name, d.uid, d.gid, dir_fd=pfd, follow_symlinks=False)
        finally:
            os.close(pfd)


def mask_paths(rootfd: int, masked: Sequence[str], readonly: Sequence[str]) -> None:
    """Docker's /proc and /sys hardening: masked paths hidden, readonly paths ro binds."""
    for path in readonly:
        try:
            fd = open_in_root(rootfd, path)
        except FileNotFoundError:
            continue
        try:
            linux.mount(_fdpath(fd), _fdpath(fd), None, MS_BIND | MS_REC)
        finally:
            os.close(fd)
        _remount_bind(rootfd, path, MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    for path in masked:
        try:
            fd = open_in_root(rootfd, path)
        except FileNotFoundError:
            continue
        try:
            if stat.S_ISDIR(os.fstat(fd).st_mode):
                linux.mount("tmpfs", _fdpath(fd), "tmpfs", MS_RDONLY)
            else:
                linux.mount("/dev/null", _fdpath(fd), None, MS_BIND)
        finally:
            os.close(fd)


def pivot(rootfd: int, no_pivot: bool) -> None:
    """Make the new root the process's "/" with nothing of the host left reachable."""
    os.fchdir(rootfd)
    if no_pivot:
        # runc --no-pivot: move the root mount over "/" and chroot. Weaker: the host root is
        # still under it, reachable by a process with CAP_SYS_CHROOT.
        linux.mount(".", "/", None, MS_MOVE)
        os.chroot(".")
    else:
        # pivot_root(".", ".") stacks the old root on top of the new one; detaching it leaves
        # no path back to the host tree (chroot alone can be escaped).
        linux.pivot_root(".", ".")
        linux.umount2(".", linux.MNT_DETACH)
    os.chdir("/")


def parent_mount_private(root: str) -> None:
    """pivot_root refuses a new root that is, or whose parent mount is, shared (as with
    rootfsPropagation "shared"): before the rootfs is mounted, make just the mount it sits
    on private, in our own namespace, so the rootfs mount is made private too (runc's
    rootfsParentMountPrivate). The configured propagation is applied to "/" after pivot."""
    here = os.path.realpath(os.path.dirname(root.rstrip("/")) or "/")
    best = ""
    shared = False
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split(" - ")[0].split()
            point = fields[4].replace("\\040", " ")
            inside = here == point or here.startswith(point.rstrip("/") + "/")
            if inside and len(point) >= len(best):
                best, shared = point, any(o.startswith("shared:") for o in fields[6:])
    if best and shared:
        linux.mount(None, best, None, MS_PRIVATE)


def finalize(readonly_root: bool) -> None:
    if readonly_root:
        keep = _statvfs_flags("/")
        linux.mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | keep)
