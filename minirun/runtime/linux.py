"""Every raw Linux syscall minirun needs and the standard library lacks, through ctypes.

Python has no ``mount``, ``pivot_root`` or ``openat2`` at all, and ``os.unshare``/``os.setns``
only from 3.12. Each wrapper here raises ``OSError(errno, "<strerror>: call(args...)")`` with
the call's own arguments, so a failure deep inside container setup still says exactly which
syscall failed on which path (BenchExec's libc.py does the same).

This module is imported on the ``run`` fast path: it must stay cheap (only ctypes, os,
struct) and do no work at import time beyond resolving libc symbols.
"""

from __future__ import annotations

import ctypes
import os
import struct

_libc = ctypes.CDLL(None, use_errno=True)

# --- constants (linux/sched.h, linux/mount.h, linux/prctl.h, linux/openat2.h) -------------

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NEWTIME = 0x00000080

# OCI linux.namespaces[].type -> clone flag
NAMESPACE_FLAGS: dict[str, int] = {
    "mount": CLONE_NEWNS,
    "uts": CLONE_NEWUTS,
    "ipc": CLONE_NEWIPC,
    "pid": CLONE_NEWPID,
    "network": CLONE_NEWNET,
    "cgroup": CLONE_NEWCGROUP,
    "user": CLONE_NEWUSER,
    "time": CLONE_NEWTIME,
}

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_SYNCHRONOUS = 0x10
MS_REMOUNT = 0x20
MS_MANDLOCK = 0x40
MS_DIRSYNC = 0x80
MS_NOSYMFOLLOW = 0x100
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_MOVE = 0x2000
MS_REC = 0x4000
MS_SILENT = 0x8000
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
MS_LAZYTIME = 1 << 25

MNT_FORCE = 1
MNT_DETACH = 2

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_KEEPCAPS = 8
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4

RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10

_SYSCALLS: dict[str, dict[str, int]] = {
    # new syscalls (>= 424) share one number on every architecture
    "x86_64": {"pivot_root": 155, "openat2": 437, "mount_setattr": 442},
    "aarch64": {"pivot_root": 41, "openat2": 437, "mount_setattr": 442},
    "riscv64": {"pivot_root": 41, "openat2": 437, "mount_setattr": 442},
    "ppc64le": {"pivot_root": 203, "openat2": 437, "mount_setattr": 442},
    "s390x": {"pivot_root": 217, "openat2": 437, "mount_setattr": 442},
}
_NR = _SYSCALLS.get(os.uname().machine, _SYSCALLS["x86_64"])

# --- prototypes ---------------------------------------------------------------------------

_c_str = ctypes.c_char_p
_libc.mount.argtypes = [_c_str, _c_str, _c_str, ctypes.c_ulong, _c_str]
_libc.umount2.argtypes = [_c_str, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.sethostname.argtypes = [_c_str, ctypes.c_size_t]
_libc.setdomainname.argtypes = [_c_str, ctypes.c_size_t]
_libc.prctl.argtypes = [
    ctypes.c_int,
    ctypes.c_ulong,
    ctypes.c_ulong,
    ctypes.c_ulong,
    ctypes.c_ulong,
]
_libc.socket.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
_libc.syscall.restype = ctypes.c_long


class _Rlimit(ctypes.Structure):
    _fields_ = [("rlim_cur", ctypes.c_uint64), ("rlim_max", ctypes.c_uint64)]


_libc.prlimit.argtypes = [
    ctypes.c_int,
    ctypes.c_int,
    ctypes.POINTER(_Rlimit),
    ctypes.POINTER(_Rlimit),
]


def _enc(s: str | bytes | None) -> bytes | None:
    if s is None:
        return None
    return os.fsencode(s)


def _fail(call: str) -> OSError:
    err = ctypes.get_errno()
    return OSError(err, f"{os.strerror(err)}: {call}")


# --- wrappers -----------------------------------------------------------------------------


def mount(
    source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None
) -> None:
    if _libc.mount(_enc(source), _enc(target), _enc(fstype), flags, _enc(data)) != 0:
        raise _fail(f"mount({source!r}, {target!r}, {fstype!r}, {flags:#x}, {data!r})")


def umount2(target: str, flags: int = 0) -> None:
    if _libc.umount2(_enc(target), flags) != 0:
        raise _fail(f"umount2({target!r}, {flags:#x})")


def pivot_root(new_root: str, put_old: str) -> None:
    if _libc.syscall(_NR["pivot_root"], _enc(new_root), _enc(put_old)) != 0:
        raise _fail(f"pivot_root({new_root!r}, {put_old!r})")


def unshare(flags: int) -> None:
    if _libc.unshare(flags) != 0:
        raise _fail(f"unshare({flags:#x})")


def setns(fd: int, nstype: int = 0) -> None:
    if _libc.setns(fd, nstype) != 0:
        raise _fail(f"setns({fd}, {nstype:#x})")


def sethostname(name: str) -> None:
    raw = name.encode()
    if _libc.sethostname(raw, len(raw)) != 0:
        raise _fail(f"sethostname({name!r})")


def setdomainname(name: str) -> None:
    raw = name.encode()
    if _libc.setdomainname(raw, len(raw)) != 0:
        raise _fail(f"setdomainname({name!r})")


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    ret: int = _libc.prctl(option, arg2, arg3, arg4, arg5)
    if ret < 0:
        raise _fail(f"prctl({option}, {arg2}, {arg3}, {arg4}, {arg5})")
    return ret


def openat2(dirfd: int, path: str, flags: int, mode: int = 0, resolve: int = 0) -> int:
    """openat2(2): open ``path`` relative to ``dirfd`` with RESOLVE_* confinement (Linux 5.6+)."""
    how = struct.pack("QQQ", flags, mode, resolve)  # struct open_how
    ret: int = _libc.syscall(
        _NR["openat2"],
        ctypes.c_int(dirfd),
        _enc(path),
        ctypes.c_char_p(how),
        ctypes.c_size_t(len(how)),
    )
    if ret < 0:
        raise _fail(f"openat2({dirfd}, {path!r}, {flags:#o}, resolve={resolve:#x})")
    return ret


MOUNT_ATTR_RDONLY = 0x1
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000


def mount_setattr(dirfd: int, path: str, flags: int, attr_set: int, attr_clr: int = 0) -> None:
    """mount_setattr(2) (Linux 5.12+): change mount attributes, with AT_RECURSIVE of a whole
    mount tree at once, which a remount cannot do."""
    attr = struct.pack("QQQQ", attr_set, attr_clr, 0, 0)  # struct mount_attr
    ret: int = _libc.syscall(
        _NR["mount_setattr"], ctypes.c_int(dirfd), _enc(path), ctypes.c_uint(flags),
        ctypes.c_char_p(attr), ctypes.c_size_t(len(attr)),
    )  # fmt: skip
    if ret < 0:
        raise _fail(f"mount_setattr({dirfd}, {path!r}, {flags:#x}, set={attr_set:#x})")


def getrlimit(resource: int) -> tuple[int, int]:
    old = _Rlimit()
    if _libc.prlimit(0, resource, None, ctypes.byref(old)) != 0:
        raise _fail(f"prlimit(0, {resource}, NULL, &old)")
    return old.rlim_cur, old.rlim_max


def setrlimit(resource: int, soft: int, hard: int) -> None:
    new = _Rlimit(soft, hard)
    if _libc.prlimit(0, resource, ctypes.byref(new), None) != 0:
        raise _fail(f"prlimit(0, {resource}, {{{soft}, {hard}}})")


def socket(family: int, type_: int, proto: int = 0) -> int:
    """A raw socket fd; avoids importing the ``socket`` module (~2 ms) on the run path."""
    fd: int = _libc.socket(family, type_, proto)
    if fd < 0:
        raise _fail(f"socket({family}, {type_:#x}, {proto})")
    return fd
