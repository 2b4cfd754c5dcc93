"""Seccomp profiles, Docker's way: a profile file → the OCI ``linux.seccomp`` object.

Docker's profiles are *conditional*: a rule may apply only on some architectures, only when
the container holds some capabilities (``includes.caps``), only when it does NOT hold them
(``excludes.caps``), or only on kernels >= X.Y (``includes.minKernel``). The daemon resolves
those conditions against one container (its bounding set, the host's arch and kernel) and
hands runc a plain OCI ``linux.seccomp`` object: a default action, the architectures to
filter, and unconditional ``syscalls`` rules. :func:`to_oci` is that step; the runtime then
compiles the OCI object with libseccomp (``minirun.runtime.seccomp``).

The default profile below has the semantics of Docker's (moby/profiles, 2025): an
allowlist with ``defaultAction`` ERRNO(EPERM), and the dangerous calls left out or gated by
the capability that makes them meaningful. It is written here as our own data, grouped by
purpose. One deliberate difference: Docker first gated ``unshare`` entirely behind
CAP_SYS_ADMIN (Docker <= 28) and its newest profile allows it entirely; we allow it without
namespace flags (``unshare(CLONE_FS)`` & co. need no privilege) and deny the namespace flags
without CAP_SYS_ADMIN — the same argument rule Docker applies to ``clone``. So, without
CAP_SYS_ADMIN, a container can create no namespace at all, user namespaces included (they
are the entry point of most container-escape kernel bugs).

``--privileged`` and ``--security-opt seccomp=unconfined`` mean no filter at all
(:func:`oci_for` returns None); ``seccomp=PROFILE.json`` replaces the default profile.
"""

from __future__ import annotations

import copy
import json
import os
from typing import Any

from minirun.errors import UsageError

# --- vocabulary ------------------------------------------------------------------------------

ACTIONS = frozenset({
    "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_TRAP",
    "SCMP_ACT_ERRNO", "SCMP_ACT_TRACE", "SCMP_ACT_ALLOW", "SCMP_ACT_LOG", "SCMP_ACT_NOTIFY",
})  # fmt: skip

OPERATORS = frozenset({
    "SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT",
    "SCMP_CMP_MASKED_EQ",
})  # fmt: skip

ARCHES = frozenset({
    "SCMP_ARCH_X86", "SCMP_ARCH_X86_64", "SCMP_ARCH_X32", "SCMP_ARCH_ARM", "SCMP_ARCH_AARCH64",
    "SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64", "SCMP_ARCH_MIPS64N32", "SCMP_ARCH_MIPSEL",
    "SCMP_ARCH_MIPSEL64", "SCMP_ARCH_MIPSEL64N32", "SCMP_ARCH_PPC", "SCMP_ARCH_PPC64",
    "SCMP_ARCH_PPC64LE", "SCMP_ARCH_S390", "SCMP_ARCH_S390X", "SCMP_ARCH_PARISC",
    "SCMP_ARCH_PARISC64", "SCMP_ARCH_RISCV64", "SCMP_ARCH_LOONGARCH64", "SCMP_ARCH_M68K",
    "SCMP_ARCH_SH", "SCMP_ARCH_SHEB",
})  # fmt: skip

# Filter flags runc accepts (seccomp(2) SECCOMP_FILTER_FLAG_*); NEW_LISTENER needs a
# seccomp agent (listenerPath), which minirun does not have.
FLAGS = frozenset({
    "SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV",
})  # fmt: skip

# Host arch names: what ``includes.arches`` / ``excludes.arches`` say (Docker uses
# libseccomp-golang's names, i.e. Go's GOARCH spelling), keyed by os.uname().machine.
_MACHINE_TO_NATIVE = {
    "x86_64": "amd64", "amd64": "amd64", "i386": "x86", "i686": "x86", "x86": "x86",
    "aarch64": "arm64", "arm64": "arm64", "armv7l": "arm", "armv6l": "arm", "arm": "arm",
    "ppc64le": "ppc64le", "ppc64": "ppc64", "ppc": "ppc", "s390x": "s390x", "s390": "s390",
    "riscv64": "riscv64", "mips64": "mips64", "mips": "mips", "mipsel": "mipsel",
    "mips64el": "mipsel64", "loongarch64": "loong64",
}  # fmt: skip
# ... and the OCI name of each native arch (where archMap entries are looked up).
_NATIVE_TO_OCI = {
    "amd64": "SCMP_ARCH_X86_64", "x86": "SCMP_ARCH_X86", "arm64": "SCMP_ARCH_AARCH64",
    "arm": "SCMP_ARCH_ARM", "ppc64le": "SCMP_ARCH_PPC64LE", "ppc64": "SCMP_ARCH_PPC64",
    "ppc": "SCMP_ARCH_PPC", "s390x": "SCMP_ARCH_S390X", "s390": "SCMP_ARCH_S390",
    "riscv64": "SCMP_ARCH_RISCV64", "mips64": "SCMP_ARCH_MIPS64", "mips": "SCMP_ARCH_MIPS",
    "mipsel": "SCMP_ARCH_MIPSEL", "mipsel64": "SCMP_ARCH_MIPSEL64",
    "loong64": "SCMP_ARCH_LOONGARCH64",
}  # fmt: skip

EPERM = 1
ENOSYS = 38
AF_VSOCK = 40

# Every namespace flag of clone(2)/unshare(2) (CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|
# NEWPID|NEWNET). unshare also takes CLONE_NEWTIME (0x80); for clone that bit is part of the
# exit signal, so it is only in the unshare mask.
_CLONE_NS_FLAGS = 0x7E020000
_UNSHARE_NS_FLAGS = _CLONE_NS_FLAGS | 0x80

# --- the default profile: data ---------------------------------------------------------------

# Allowed for every container. Grouped by purpose so a reader can audit what a container may
# do; 32-bit and time64 variants sit next to their 64-bit call (they are the same operation
# on the x86/arm compat ABIs the filter also covers).
_ALLOW_ALWAYS: tuple[str, ...] = (
    # files: open, read/write, metadata, links, xattrs
    "open", "openat", "openat2", "creat", "close", "close_range", "read", "readv", "pread64",
    "preadv", "preadv2", "write", "writev", "pwrite64", "pwritev", "pwritev2", "lseek",
    "_llseek", "readahead", "sendfile", "sendfile64", "splice", "tee", "vmsplice",
    "copy_file_range", "fallocate", "fadvise64", "fadvise64_64", "ftruncate", "ftruncate64",
    "truncate", "truncate64", "fsync", "fdatasync", "sync", "syncfs", "sync_file_range",
    "flock", "fcntl", "fcntl64", "dup", "dup2", "dup3", "pipe", "pipe2", "ioctl",
    "stat", "stat64", "fstat", "fstat64", "lstat", "lstat64", "newfstatat", "fstatat64",
    "statx", "statfs", "statfs64", "fstatfs", "fstatfs64", "access", "faccessat",
    "faccessat2", "readlink", "readlinkat", "getdents", "getdents64", "getcwd", "chdir",
    "fchdir", "mkdir", "mkdirat", "mknod", "mknodat", "rmdir", "rename", "renameat",
    "renameat2", "link", "linkat", "symlink", "symlinkat", "unlink", "unlinkat", "umask",
    "chmod", "fchmod", "fchmodat", "fchmodat2", "chown", "chown32", "fchown", "fchown32",
    "fchownat", "lchown", "lchown32", "utime", "utimes", "utimensat", "utimensat_time64",
    "futimesat", "getxattr", "lgetxattr", "fgetxattr", "getxattrat", "setxattr", "lsetxattr",
    "fsetxattr", "setxattrat", "listxattr", "llistxattr", "flistxattr", "listxattrat",
    "removexattr", "lremovexattr", "fremovexattr", "removexattrat", "name_to_handle_at",
    "cachestat", "statmount", "listmount",
    # file events and async I/O (io_uring is left out: Docker blocks it since 25.0, it has
    # been a steady source of kernel exploits)
    "inotify_init", "inotify_init1", "inotify_add_watch", "inotify_rm_watch", "fanotify_mark",
    "io_setup", "io_destroy", "io_submit", "io_cancel", "io_getevents", "io_pgetevents",
    "io_pgetevents_time64",
    # waiting: poll/select/epoll, eventfd, timerfd, signalfd
    "poll", "ppoll", "ppoll_time64", "select", "_newselect", "pselect6", "pselect6_time64",
    "epoll_create", "epoll_create1", "epoll_ctl", "epoll_ctl_old", "epoll_wait",
    "epoll_wait_old", "epoll_pwait", "epoll_pwait2", "eventfd", "eventfd2", "timerfd_create",
    "timerfd_settime", "timerfd_settime64", "timerfd_gettime", "timerfd_gettime64",
    "signalfd", "signalfd4",
    # memory (mlock is fine: RLIMIT_MEMLOCK bounds it)
    "brk", "mmap", "mmap2", "munmap", "mremap", "mprotect", "madvise", "mincore", "msync",
    "mlock", "mlock2", "mlockall", "munlock", "munlockall", "remap_file_pages",
    "memfd_create", "memfd_secret", "membarrier", "pkey_alloc", "pkey_free", "pkey_mprotect",
    "map_shadow_stack", "mseal",
    # processes and threads (clone/clone3/unshare are argument- or capability-gated below)
    "fork", "vfork", "execve", "execveat", "exit", "exit_group", "wait4", "waitid", "waitpid",
    "kill", "tkill", "tgkill", "pidfd_open", "pidfd_send_signal", "process_mrelease",
    "getpid", "getppid", "gettid", "getpgid", "setpgid", "getpgrp", "getsid", "setsid",
    "set_tid_address", "set_robust_list", "get_robust_list", "rseq", "futex", "futex_time64",
    "futex_waitv", "futex_wake", "futex_wait", "futex_requeue", "restart_syscall",
    "get_thread_area", "set_thread_area", "prctl", "seccomp", "landlock_create_ruleset",
    "landlock_add_rule", "landlock_restrict_self", "uretprobe", "riscv_hwprobe",
    # credentials (what a uid may become is the kernel's business: CAP_SETUID/SETGID)
    "getuid", "getuid32", "geteuid", "geteuid32", "getgid", "getgid32", "getegid",
    "getegid32", "getresuid", "getresuid32", "getresgid", "getresgid32", "getgroups",
    "getgroups32", "setuid", "setuid32", "setgid", "setgid32", "setreuid", "setreuid32",
    "setregid", "setregid32", "setresuid", "setresuid32", "setresgid", "setresgid32",
    "setgroups", "setgroups32", "setfsuid", "setfsuid32", "setfsgid", "setfsgid32", "capget",
    "capset",
    # signals
    "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "rt_sigpending", "rt_sigsuspend",
    "rt_sigtimedwait", "rt_sigtimedwait_time64", "rt_sigqueueinfo", "rt_tgsigqueueinfo",
    "sigaltstack", "sigprocmask", "sigreturn", "pause",
    # scheduling, limits, accounting
    "sched_yield", "sched_getaffinity", "sched_setaffinity", "sched_getattr",
    "sched_setattr", "sched_getparam", "sched_setparam", "sched_getscheduler",
    "sched_setscheduler", "sched_get_priority_max", "sched_get_priority_min",
    "sched_rr_get_interval", "sched_rr_get_interval_time64", "getpriority", "setpriority",
    "ioprio_get", "ioprio_set", "getcpu", "getrlimit", "ugetrlimit", "setrlimit", "prlimit64",
    "getrusage", "times", "sysinfo", "uname", "getrandom",
    # time (reading clocks; setting them needs CAP_SYS_TIME, below)
    "time", "gettimeofday", "clock_gettime", "clock_gettime64", "clock_getres",
    "clock_getres_time64", "clock_nanosleep", "clock_nanosleep_time64", "nanosleep",
    "alarm", "getitimer", "setitimer", "timer_create", "timer_delete", "timer_getoverrun",
    "timer_gettime", "timer_gettime64", "timer_settime", "timer_settime64", "adjtimex",
    "clock_adjtime", "clock_adjtime64",
    # sockets (socket(2) itself is argument-gated below)
    "socketpair", "socketcall", "bind", "listen", "accept", "accept4", "connect", "shutdown",
    "getsockname", "getpeername", "getsockopt", "setsockopt", "send", "sendto", "sendmsg",
    "sendmmsg", "recv", "recvfrom", "recvmsg", "recvmmsg", "recvmmsg_time64",
    # System V and POSIX IPC (namespaced by the container's IPC namespace)
    "ipc", "msgget", "msgsnd", "msgrcv", "msgctl", "semget", "semop", "semtimedop",
    "semtimedop_time64", "semctl", "shmget", "shmat", "shmdt", "shmctl", "mq_open",
    "mq_unlink", "mq_timedsend", "mq_timedsend_time64", "mq_timedreceive",
    "mq_timedreceive_time64", "mq_notify", "mq_getsetattr",
)  # fmt: skip

# Arch-specific calls, allowed only where they exist. Keys are Docker's arch names.
_ALLOW_ON_ARCHES: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    (("amd64", "x32"), ("arch_prctl",)),
    (("amd64", "x32", "x86"), ("modify_ldt",)),
    (("arm", "arm64"), ("arm_fadvise64_64", "arm_sync_file_range", "sync_file_range2",
                        "breakpoint", "cacheflush", "set_tls")),
    (("ppc64le",), ("sync_file_range2", "swapcontext")),
    (("s390", "s390x"), ("s390_pci_mmio_read", "s390_pci_mmio_write", "s390_runtime_instr")),
    (("riscv64",), ("riscv_flush_icache",)),
)  # fmt: skip

# Calls that only make sense with a capability: allowed when the container holds it (the
# kernel then checks the capability itself), denied by the filter otherwise — a smaller
# kernel surface for the default container. Never allowed, whatever the caps: kexec_load,
# kexec_file_load, keyctl, add_key, request_key (the keyring is not namespaced), pivot_root,
# swapon/swapoff, userfaultfd, nfsservctl, uselib, ustat, sysfs, vm86, and every other call
# not named in this module.
_ALLOW_WITH_CAP: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("CAP_SYS_ADMIN", (
        "mount", "umount", "umount2", "mount_setattr", "move_mount", "open_tree", "fsopen",
        "fsconfig", "fsmount", "fspick", "setns", "unshare", "clone", "clone3", "sethostname",
        "setdomainname", "quotactl", "quotactl_fd", "lookup_dcookie", "fanotify_init", "bpf",
        "perf_event_open", "syslog", "lsm_get_self_attr", "lsm_set_self_attr",
        "lsm_list_modules",
    )),
    ("CAP_DAC_READ_SEARCH", ("open_by_handle_at",)),  # the "shocker" container escape
    ("CAP_SYS_BOOT", ("reboot",)),
    ("CAP_SYS_CHROOT", ("chroot",)),
    ("CAP_SYS_MODULE", ("init_module", "finit_module", "delete_module")),
    ("CAP_SYS_PACCT", ("acct",)),
    ("CAP_SYS_PTRACE", ("ptrace", "process_vm_readv", "process_vm_writev", "kcmp",
                        "pidfd_getfd", "process_madvise")),
    ("CAP_SYS_RAWIO", ("iopl", "ioperm")),
    ("CAP_SYS_TIME", ("settimeofday", "stime", "clock_settime", "clock_settime64")),
    ("CAP_SYS_TTY_CONFIG", ("vhangup",)),
    ("CAP_SYS_NICE", ("mbind", "get_mempolicy", "set_mempolicy", "set_mempolicy_home_node")),
    ("CAP_SYSLOG", ("syslog",)),
    ("CAP_BPF", ("bpf",)),
    ("CAP_PERFMON", ("perf_event_open",)),
)  # fmt: skip

# personality(2) values a program may set: PER_LINUX, PER_LINUX32, UNAME26 variants, and
# 0xffffffff (query). Others (e.g. READ_IMPLIES_EXEC) weaken ASLR/NX or are legacy ABIs.
_PERSONALITIES = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)

_ARCH_MAP: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("SCMP_ARCH_X86_64", ("SCMP_ARCH_X86", "SCMP_ARCH_X32")),
    ("SCMP_ARCH_AARCH64", ("SCMP_ARCH_ARM",)),
    ("SCMP_ARCH_MIPS64", ("SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64N32")),
    ("SCMP_ARCH_MIPS64N32", ("SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64")),
    ("SCMP_ARCH_MIPSEL64", ("SCMP_ARCH_MIPSEL", "SCMP_ARCH_MIPSEL64N32")),
    ("SCMP_ARCH_MIPSEL64N32", ("SCMP_ARCH_MIPSEL", "SCMP_ARCH_MIPSEL64")),
    ("SCMP_ARCH_S390X", ("SCMP_ARCH_S390",)),
    ("SCMP_ARCH_RISCV64", ()),
)


def _rule(names: tuple[str, ...] | list[str], action: str = "SCMP_ACT_ALLOW",
          **extra: Any) -> dict[str, Any]:  # fmt: skip
    return {"names": list(names), "action": action, **extra}


def _build_default() -> dict[str, Any]:
    syscalls: list[dict[str, Any]] = [_rule(_ALLOW_ALWAYS)]
    # ptrace could bypass seccomp before Linux 4.8 (a tracer could change the syscall after
    # the filter ran); on newer kernels it is as safe as any other call.
    syscalls.append(_rule(("ptrace", "process_vm_readv", "process_vm_writev"),
                          includes={"minKernel": "4.8"}))  # fmt: skip
    # AF_VSOCK talks to the hypervisor/host, outside every network namespace.
    syscalls.append(_rule(("socket",), args=[
        {"index": 0, "value": AF_VSOCK, "valueTwo": 0, "op": "SCMP_CMP_NE"}]))  # fmt: skip
    for value in _PERSONALITIES:
        syscalls.append(_rule(("personality",), args=[
            {"index": 0, "value": value, "valueTwo": 0, "op": "SCMP_CMP_EQ"}]))  # fmt: skip
    for arches, names in _ALLOW_ON_ARCHES:
        syscalls.append(_rule(names, includes={"arches": list(arches)}))
    for cap, names in _ALLOW_WITH_CAP:
        syscalls.append(_rule(names, includes={"caps": [cap]}))
    # Without CAP_SYS_ADMIN: clone only without namespace flags (fork, threads). The flags
    # are argument 0, except on s390 where the kernel takes (stack, flags).
    no_ns = {"value": _CLONE_NS_FLAGS, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}
    syscalls.append(
        _rule(
            ("clone",),
            args=[{"index": 0, **no_ns}],
            excludes={"caps": ["CAP_SYS_ADMIN"], "arches": ["s390", "s390x"]},
        )
    )
    syscalls.append(
        _rule(
            ("clone",),
            args=[{"index": 1, **no_ns}],
            includes={"arches": ["s390", "s390x"]},
            excludes={"caps": ["CAP_SYS_ADMIN"]},
        )
    )
    # clone3 passes its flags in a struct the filter cannot read, so it cannot get clone's
    # argument rule: ENOSYS instead of EPERM makes glibc/musl fall back to clone().
    syscalls.append(
        _rule(("clone3",), "SCMP_ACT_ERRNO", errnoRet=ENOSYS, excludes={"caps": ["CAP_SYS_ADMIN"]})
    )
    # unshare without namespace flags (CLONE_FS, CLONE_FILES, CLONE_SYSVSEM) is harmless.
    syscalls.append(_rule(("unshare",), args=[
        {"index": 0, "value": _UNSHARE_NS_FLAGS, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}],
        excludes={"caps": ["CAP_SYS_ADMIN"]}))  # fmt: skip
    return {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": EPERM,
        "archMap": [
            {"architecture": arch, "subArchitectures": list(subs)} for arch, subs in _ARCH_MAP
        ],
        "syscalls": syscalls,
    }


_DEFAULT: dict[str, Any] | None = None


def default_profile() -> dict[str, Any]:
    """Docker's default profile (Docker's JSON format, conditions unresolved); a fresh copy
    the caller may change."""
    return copy.deepcopy(_default())


def _default() -> dict[str, Any]:
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = _build_default()
    return _DEFAULT


# --- loading and validating a profile file ---------------------------------------------------


class _Invalid(Exception):
    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}" if where else message)


def load_profile(path: str) -> dict[str, Any]:
    """Read and validate a Docker-format profile (``--security-opt seccomp=PATH``).

    Raises UsageError naming the file and the offending field
    (``syscalls[3].args[0].op: unknown operator ...``). Unknown keys are ignored, as
    Docker's JSON decoding does; ``name`` (the old single-name form) becomes ``names``."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise UsageError(f"opening seccomp profile {path}: {e.strerror}") from None
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise UsageError(f"seccomp profile {path} is not valid JSON: {e}") from None
    try:
        return _validate(data)
    except _Invalid as e:
        raise UsageError(f"seccomp profile {path}: {e}") from None


def validate_profile(data: Any) -> dict[str, Any]:
    """Check a Docker-format profile dict; return a normalised copy. Raises UsageError."""
    try:
        return _validate(data)
    except _Invalid as e:
        raise UsageError(f"seccomp profile: {e}") from None


def _validate(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise _Invalid("", "a profile must be a JSON object")
    out: dict[str, Any] = {}
    if "defaultAction" not in data:
        raise _Invalid("defaultAction", 'is required (e.g. "SCMP_ACT_ERRNO")')
    out["defaultAction"] = _action(data["defaultAction"], "defaultAction")
    if data.get("defaultErrnoRet") is not None:
        out["defaultErrnoRet"] = _errno(data["defaultErrnoRet"], "defaultErrnoRet")
    if data.get("listenerPath"):
        raise _Invalid("listenerPath", "seccomp agents (SCMP_ACT_NOTIFY) are not supported")
    if data.get("flags") is not None:
        flags = _str_list(data["flags"], "flags")
        for i, flag in enumerate(flags):
            if flag not in FLAGS:
                raise _Invalid(f"flags[{i}]", f"unknown or unsupported flag {flag!r} "
                               f"(one of {', '.join(sorted(FLAGS))})")  # fmt: skip
        out["flags"] = flags
    arches = data.get("architectures")
    arch_map = data.get("archMap")
    if arches and arch_map:
        raise _Invalid("archMap", "use either 'architectures' or 'archMap', not both")
    if arches is not None:
        out["architectures"] = [
            _arch(a, f"architectures[{i}]") for i, a in enumerate(_list(arches, "architectures"))
        ]
    if arch_map is not None:
        entries = []
        for i, entry in enumerate(_list(arch_map, "archMap")):
            where = f"archMap[{i}]"
            if not isinstance(entry, dict):
                raise _Invalid(where, "must be an object {architecture, subArchitectures}")
            if "architecture" not in entry:
                raise _Invalid(f"{where}.architecture", "is required")
            subs = _or_empty(entry.get("subArchitectures"))
            entries.append({
                "architecture": _arch(entry["architecture"], f"{where}.architecture"),
                "subArchitectures": [
                    _arch(s, f"{where}.subArchitectures[{j}]")
                    for j, s in enumerate(_list(subs, f"{where}.subArchitectures"))
                ],
            })  # fmt: skip
        out["archMap"] = entries
    out["syscalls"] = [
        _syscall(rule, f"syscalls[{i}]")
        for i, rule in enumerate(_list(_or_empty(data.get("syscalls")), "syscalls"))
    ]
    return out


def _syscall(rule: Any, where: str) -> dict[str, Any]:
    if not isinstance(rule, dict):
        raise _Invalid(where, "must be an object {names, action, ...}")
    names = rule.get("names")
    name = rule.get("name")
    if name and names:
        raise _Invalid(where, "use either 'name' or 'names', not both")
    if name:
        if not isinstance(name, str):
            raise _Invalid(f"{where}.name", "must be a string")
        names = [name]
    names = _str_list(names if names is not None else [], f"{where}.names")
    if not names:
        raise _Invalid(f"{where}.names", "must list at least one syscall")
    for j, n in enumerate(names):
        if not n:
            raise _Invalid(f"{where}.names[{j}]", "must not be empty")
    if "action" not in rule:
        raise _Invalid(f"{where}.action", "is required")
    out: dict[str, Any] = {"names": names, "action": _action(rule["action"], f"{where}.action")}
    if rule.get("errnoRet") is not None:
        out["errnoRet"] = _errno(rule["errnoRet"], f"{where}.errnoRet")
    args = _list(_or_empty(rule.get("args")), f"{where}.args")
    if len(args) > 6:
        raise _Invalid(f"{where}.args", "a syscall has at most 6 arguments")
    if args:
        out["args"] = [_arg(a, f"{where}.args[{k}]") for k, a in enumerate(args)]
    for key in ("includes", "excludes"):
        if rule.get(key) is not None:
            out[key] = _condition(rule[key], f"{where}.{key}")
    if rule.get("comment") is not None:
        out["comment"] = str(rule["comment"])
    return out


def _arg(arg: Any, where: str) -> dict[str, Any]:
    if not isinstance(arg, dict):
        raise _Invalid(where, "must be an object {index, value, valueTwo, op}")
    index = arg.get("index")
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index <= 5:
        raise _Invalid(f"{where}.index", f"must be an integer 0..5, not {index!r}")
    op = arg.get("op")
    if not isinstance(op, str) or op not in OPERATORS:
        raise _Invalid(f"{where}.op", f"unknown operator {op!r} "
                       f"(one of {', '.join(sorted(OPERATORS))})")  # fmt: skip
    return {
        "index": index,
        "value": _u64(arg.get("value", 0), f"{where}.value"),
        "valueTwo": _u64(arg.get("valueTwo", 0), f"{where}.valueTwo"),
        "op": op,
    }


def _condition(cond: Any, where: str) -> dict[str, Any]:
    if not isinstance(cond, dict):
        raise _Invalid(where, "must be an object {caps, arches, minKernel}")
    out: dict[str, Any] = {}
    if cond.get("caps"):
        out["caps"] = [
            _cap(c, f"{where}.caps[{i}]")
            for i, c in enumerate(_str_list(cond["caps"], f"{where}.caps"))
        ]
    if cond.get("arches"):
        out["arches"] = _str_list(cond["arches"], f"{where}.arches")
    if cond.get("minKernel"):
        out["minKernel"] = _kernel_version(cond["minKernel"], f"{where}.minKernel")
    return out


def _kernel_version(value: Any, where: str) -> str:
    parts = value.split(".") if isinstance(value, str) else []
    # ASCII digits only: str.isdigit() is also true for '²', '①'... which int() refuses
    if (len(parts) != 2 or not all(0 < len(p) <= 9 and p.isascii() and p.isdigit() for p in parts)
            or parts == ["0", "0"]):  # fmt: skip
        raise _Invalid(where, f'expected "<kernel>.<major>" (e.g. "4.8"), not {value!r}')
    return value


def _action(value: Any, where: str) -> str:
    if not isinstance(value, str) or value not in ACTIONS:
        raise _Invalid(where, f"unknown action {value!r} (one of {', '.join(sorted(ACTIONS))})")
    if value == "SCMP_ACT_NOTIFY":
        raise _Invalid(where, "SCMP_ACT_NOTIFY needs a seccomp agent, which minirun lacks")
    return str(value)


def _arch(value: Any, where: str) -> str:
    if not isinstance(value, str) or value not in ARCHES:
        raise _Invalid(where, f"unknown architecture {value!r} (e.g. SCMP_ARCH_X86_64)")
    return str(value)


def _errno(value: Any, where: str) -> int:
    # The filter returns errno in 16 bits; the kernel treats only 1..4095 as errors.
    if not _is_int(value) or not 0 <= value <= 4095:
        raise _Invalid(where, f"must be an errno number 0..4095, not {value!r}")
    return int(value)


def _u64(value: Any, where: str) -> int:
    if not _is_int(value) or not 0 <= value < 1 << 64:
        raise _Invalid(where, f"must be an unsigned 64-bit integer, not {value!r}")
    return int(value)


def _cap(value: str, where: str) -> str:
    name = normalize_cap(value)
    if not name[4:] or not name[4:].replace("_", "").isalnum():
        raise _Invalid(where, f"not a capability name: {value!r}")
    return name


def _or_empty(value: Any) -> Any:
    """JSON null means absent (Go's decoder does the same); {} or "" stays, to be refused."""
    return [] if value is None else value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise _Invalid(where, f"must be a list, not {type(value).__name__}")
    return value


def _str_list(value: Any, where: str) -> list[str]:
    items = _list(value, where)
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise _Invalid(f"{where}[{i}]", f"must be a string, not {item!r}")
    return list(items)


def normalize_cap(name: str) -> str:
    """``sys_admin`` / ``SYS_ADMIN`` / ``CAP_SYS_ADMIN`` → ``CAP_SYS_ADMIN``."""
    key = name.strip().upper()
    return key if key.startswith("CAP_") else "CAP_" + key


# --- profile + container → OCI ---------------------------------------------------------------


def native_arch(machine: str | None = None) -> str:
    """The host arch in the spelling of ``includes.arches`` (``amd64``, ``arm64``...)."""
    m = machine or os.uname().machine
    if m in _NATIVE_TO_OCI:
        return m
    return _MACHINE_TO_NATIVE.get(m, m)


def host_kernel() -> tuple[int, int]:
    """(major, minor) of the running kernel: ``6.18.44-foo`` → (6, 18)."""
    return _parse_release(os.uname().release)


def _parse_release(release: str) -> tuple[int, int]:
    nums: list[int] = []
    for part in release.split(".")[:2]:
        digits = ""
        for ch in part[:9]:  # ASCII digits only ('²'.isdigit() is true, int() refuses it)
            if not "0" <= ch <= "9":
                break
            digits += ch
        nums.append(int(digits or 0))
    while len(nums) < 2:
        nums.append(0)
    return nums[0], nums[1]


def to_oci(
    profile: dict[str, Any],
    caps: list[str],
    arch: str | None = None,
    *,
    kernel: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """Resolve a Docker-format profile for one container into OCI ``linux.seccomp``.

    ``caps`` is the container's capability list (Docker uses the bounding set); names may
    omit ``CAP_``. ``arch`` is the host arch (``x86_64``/``amd64``...; default: this host);
    ``kernel`` the host kernel (major, minor), default: this host's. As in Docker:
    a rule with ``includes.caps`` is kept only if the container holds *all* of them, one
    with ``excludes.caps`` is dropped if it holds *any*; ``arches`` compare to the host arch;
    ``minKernel`` to the running kernel. ``archMap`` picks the host's entry: native arch
    plus its compat arches (x86_64 → x86, x32), so 32-bit binaries are filtered too."""
    have = {normalize_cap(c) for c in caps}
    native = native_arch(arch)
    host = kernel if kernel is not None else None
    out: dict[str, Any] = {"defaultAction": profile["defaultAction"]}
    if profile.get("defaultErrnoRet") is not None:
        out["defaultErrnoRet"] = profile["defaultErrnoRet"]
    architectures: list[str] = list(profile.get("architectures") or [])
    oci_native = _NATIVE_TO_OCI.get(native)
    for entry in profile.get("archMap") or []:
        if entry["architecture"] == oci_native:
            architectures = [entry["architecture"], *(entry.get("subArchitectures") or [])]
            break
    if architectures:
        out["architectures"] = architectures
    if profile.get("flags"):
        out["flags"] = list(profile["flags"])
    syscalls = []
    for rule in profile.get("syscalls") or []:
        exc = rule.get("excludes") or {}
        inc = rule.get("includes") or {}
        if native in (exc.get("arches") or ()):
            continue
        if any(normalize_cap(c) in have for c in exc.get("caps") or ()):
            continue
        if exc.get("minKernel"):
            host = host or host_kernel()
            if host >= _parse_release(exc["minKernel"]):
                continue
        if inc.get("arches") and native not in inc["arches"]:
            continue
        if not all(normalize_cap(c) in have for c in inc.get("caps") or ()):
            continue
        if inc.get("minKernel"):
            host = host or host_kernel()
            if host < _parse_release(inc["minKernel"]):
                continue
        names = rule.get("names") or ([rule["name"]] if rule.get("name") else [])
        oci_rule: dict[str, Any] = {"names": list(names), "action": rule["action"]}
        if rule.get("errnoRet") is not None:
            oci_rule["errnoRet"] = rule["errnoRet"]
        if rule.get("args"):
            oci_rule["args"] = [dict(a) for a in rule["args"]]
        syscalls.append(oci_rule)
    out["syscalls"] = syscalls
    return out


def oci_for(
    option: str | None, caps: list[str], *, privileged: bool = False, arch: str | None = None
) -> dict[str, Any] | None:
    """``linux.seccomp`` for ``--security-opt seccomp=<option>`` (None: no option), or None
    when the container runs unfiltered (``--privileged``, ``seccomp=unconfined``)."""
    if privileged or option == "unconfined":
        return None
    if option in (None, "", "builtin"):
        profile = _default()  # to_oci only reads it: no copy
    else:
        profile = load_profile(option)
    return to_oci(profile, caps, arch)
