"""Privileges of the container process: rlimits, user/groups, capabilities, no_new_privs.

``parse_*`` run in the parent (a bad capability name fails cleanly before fork); ``apply_*``
run in the child, after the mounts (which need CAP_SYS_ADMIN) and right before exec.

Capabilities go through python-prctl's C core ``_prctl`` (libcap's cap_set_proc and
PR_CAPBSET_DROP): the pure-Python ``prctl`` wrapper on top of it costs ~0.5 ms more to
import and adds nothing we use. Ambient caps (which python-prctl lacks) use raw prctl(2).
"""

from __future__ import annotations

import os
from typing import Any

# python-prctl's C module (~0.3 ms). Imported here, before fork, on purpose: after
# pivot_root the child can no longer import anything from the host.
import _prctl

from minirun.errors import RuntimeFailure
from minirun.runtime import linux

RLIMIT_NAMES = {
    "RLIMIT_CPU": 0, "RLIMIT_FSIZE": 1, "RLIMIT_DATA": 2, "RLIMIT_STACK": 3, "RLIMIT_CORE": 4,
    "RLIMIT_RSS": 5, "RLIMIT_NPROC": 6, "RLIMIT_NOFILE": 7, "RLIMIT_MEMLOCK": 8, "RLIMIT_AS": 9,
    "RLIMIT_LOCKS": 10, "RLIMIT_SIGPENDING": 11, "RLIMIT_MSGQUEUE": 12, "RLIMIT_NICE": 13,
    "RLIMIT_RTPRIO": 14, "RLIMIT_RTTIME": 15,
}  # fmt: skip

# Docker's default set; `process.capabilities` absent means "leave them as they are".
DEFAULT_CAPS = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
)  # fmt: skip

# Numbers from linux/capability.h, so parsing needs no import of _prctl in the parent.
CAP_NUMBERS: dict[str, int] = {
    "CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_DAC_READ_SEARCH": 2, "CAP_FOWNER": 3,
    "CAP_FSETID": 4, "CAP_KILL": 5, "CAP_SETGID": 6, "CAP_SETUID": 7, "CAP_SETPCAP": 8,
    "CAP_LINUX_IMMUTABLE": 9, "CAP_NET_BIND_SERVICE": 10, "CAP_NET_BROADCAST": 11,
    "CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13, "CAP_IPC_LOCK": 14, "CAP_IPC_OWNER": 15,
    "CAP_SYS_MODULE": 16, "CAP_SYS_RAWIO": 17, "CAP_SYS_CHROOT": 18, "CAP_SYS_PTRACE": 19,
    "CAP_SYS_PACCT": 20, "CAP_SYS_ADMIN": 21, "CAP_SYS_BOOT": 22, "CAP_SYS_NICE": 23,
    "CAP_SYS_RESOURCE": 24, "CAP_SYS_TIME": 25, "CAP_SYS_TTY_CONFIG": 26, "CAP_MKNOD": 27,
    "CAP_LEASE": 28, "CAP_AUDIT_WRITE": 29, "CAP_AUDIT_CONTROL": 30, "CAP_SETFCAP": 31,
    "CAP_MAC_OVERRIDE": 32, "CAP_MAC_ADMIN": 33, "CAP_SYSLOG": 34, "CAP_WAKE_ALARM": 35,
    "CAP_BLOCK_SUSPEND": 36, "CAP_AUDIT_READ": 37, "CAP_PERFMON": 38, "CAP_BPF": 39,
    "CAP_CHECKPOINT_RESTORE": 40,
}  # fmt: skip


class Caps:
    __slots__ = (
        "bounding",
        "effective",
        "permitted",
        "inheritable",
        "ambient",
        "last_cap",
    )

    def __init__(
        self,
        bounding: frozenset[int],
        effective: frozenset[int],
        permitted: frozenset[int],
        inheritable: frozenset[int],
        ambient: frozenset[int],
        last_cap: int,
    ) -> None:
        self.bounding = bounding
        self.effective = effective
        self.permitted = permitted
        self.inheritable = inheritable
        self.ambient = ambient
        self.last_cap = last_cap  # highest capability the running kernel knows


class User:
    __slots__ = (
        "uid",
        "gid",
        "groups",
        "umask",
    )

    def __init__(self, uid: int, gid: int, groups: tuple[int, ...], umask: int) -> None:
        self.uid = uid
        self.gid = gid
        self.groups = groups
        self.umask = umask


def _cap_set(names: list[str] | None) -> frozenset[int]:
    out = set()
    for name in names or ():
        key = name.upper()
        if not key.startswith("CAP_"):
            key = "CAP_" + key
        if key not in CAP_NUMBERS:
            raise RuntimeFailure(f"unknown capability {name!r}")
        out.add(CAP_NUMBERS[key])
    return frozenset(out)


def parse_caps(caps: dict[str, Any] | None) -> Caps | None:
    if caps is None:
        return None
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            last = int(f.read())
    except OSError:
        last = max(CAP_NUMBERS.values())
    return Caps(
        _cap_set(caps.get("bounding")),
        _cap_set(caps.get("effective")),
        _cap_set(caps.get("permitted")),
        _cap_set(caps.get("inheritable")),
        _cap_set(caps.get("ambient")),
        last,
    )


def parse_user(user: dict[str, Any] | None) -> User:
    user = user or {}
    umask = user.get("umask")
    return User(
        int(user.get("uid", 0)),
        int(user.get("gid", 0)),
        tuple(int(g) for g in user.get("additionalGids") or ()),
        0o022 if umask is None else int(umask),
    )


def parse_rlimits(rlimits: list[dict[str, Any]] | None) -> list[tuple[int, int, int]]:
    out = []
    for r in rlimits or ():
        if r["type"] not in RLIMIT_NAMES:
            raise RuntimeFailure(f"unknown rlimit {r['type']!r}")
        out.append((RLIMIT_NAMES[r["type"]], int(r["soft"]), int(r["hard"])))
    return out


# --- child side ------------------------------------------------------------------------------


def apply_rlimits(rlimits: list[tuple[int, int, int]]) -> None:
    for res, soft, hard in rlimits:
        # Never above the current hard limit: root without CAP_SYS_RESOURCE (in some
        # setups) would get EPERM for the whole container over a limit it cannot raise.
        _cur, cur_hard = linux.getrlimit(res)
        hard = min(hard, cur_hard)
        linux.setrlimit(res, min(soft, hard), hard)


def apply_user_and_caps(user: User, caps: Caps | None) -> None:
    """setgroups/setgid/setuid, then the capability sets, in the order that works.

    The bounding set is cut first (needs CAP_SETPCAP, which a non-root uid loses). Keepcaps
    lets the permitted set survive setuid so the spec's sets can be applied afterwards; at
    exec the kernel recomputes them anyway: root gets bounding ∩ ... (so CapEff = the
    bounding set), a non-root uid gets only its ambient set (empty by default, like Docker).
    """
    if caps is not None:
        for cap in range(caps.last_cap + 1):
            if cap not in caps.bounding:
                _prctl.prctl(_prctl.PR_CAPBSET_DROP, cap)
        linux.prctl(linux.PR_SET_KEEPCAPS, 1)
    os.setgroups(list(user.groups))
    os.setresgid(user.gid, user.gid, user.gid)
    os.setresuid(user.uid, user.uid, user.uid)
    if caps is None:
        return
    known = range(min(caps.last_cap, _prctl.CAP_LAST_CAP) + 1)
    e, p, i = caps.effective, caps.permitted, caps.inheritable
    _prctl.set_caps(
        [c for c in known if c in e], [c for c in known if c in p], [c for c in known if c in i],
        [c for c in known if c not in e], [c for c in known if c not in p],
        [c for c in known if c not in i],
    )  # fmt: skip
    linux.prctl(linux.PR_CAP_AMBIENT, linux.PR_CAP_AMBIENT_CLEAR_ALL)
    for cap in sorted(caps.ambient & p & i):
        # a cap can only be ambient if it is permitted and inheritable; runc skips the
        # others the same way instead of failing the container
        linux.prctl(linux.PR_CAP_AMBIENT, linux.PR_CAP_AMBIENT_RAISE, cap)
    linux.prctl(linux.PR_SET_KEEPCAPS, 0)


def set_no_new_privs() -> None:
    linux.prctl(linux.PR_SET_NO_NEW_PRIVS, 1)
