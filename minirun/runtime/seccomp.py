"""Seccomp: compile the OCI ``linux.seccomp`` object in the parent, load it in the child.

How it is split (and why)
-------------------------
* :func:`compile_filter` runs in the PARENT, before fork. It builds the filter with
  libseccomp (through the ``pyseccomp`` binding, imported only here and only on a cache
  miss) and exports it as a ready BPF program, so every error — an unknown action, a
  conflicting rule, a missing libseccomp — is a clean exception in the parent, and the
  child has no library work left to do (after pivot_root it could not import anything).
  Like runc, names libseccomp does not know are skipped (a profile may list syscalls newer
  than the host's libseccomp); for the syscalls numbered alike on every modern arch (>= 424)
  the number is used instead, so e.g. ``mseal`` is allowed even with libseccomp 2.5.
* :func:`load` runs in the CHILD right before exec: one ``seccomp(2)`` (or
  ``prctl(PR_SET_SECCOMP)``) call on the precompiled program. runc does the same: it
  exports libseccomp's BPF and loads it with its own syscall.
* A cache miss costs ~20 ms for the default profile: importing pyseccomp is 10-16 ms
  (mostly ``ctypes.util.find_library`` running ``ldconfig``), libseccomp ~9 ms. With
  ``cache_dir`` the program is stored under a hash of the OCI object, the arch and the
  installed libseccomp, and the next container with the same profile and capabilities
  pays ~0.4 ms and imports nothing (this module itself imports in ~0.2 ms).

Where the lead must call ``load()`` in ``process._child`` (what runc does)
-----------------------------------------------------------------------
Installing a filter needs either ``no_new_privs`` set or CAP_SYS_ADMIN (else EACCES). And
every syscall the runtime itself makes after ``load()`` is filtered too. Hence two cases:

1. ``process.noNewPrivileges`` true: load as LATE as possible, so the runtime's own setup
   is not subject to the container's profile:

       ... apply_user_and_caps → set_no_new_privs → PR_SET_PDEATHSIG → umask
       → restore signal dispositions → unblock signals → **seccomp.load(filter)** → execve

2. ``process.noNewPrivileges`` false (Docker's default): load BEFORE the capability
   drop and setuid, while the process still has CAP_SYS_ADMIN:

       ... rlimits → chdir + getcwd check → **seccomp.load(filter)**
       → apply_user_and_caps → PR_SET_PDEATHSIG → umask → signals → execve

   The calls made after the filter (setgroups, setresgid, setresuid, capset, prctl, umask,
   rt_sigaction, rt_sigprocmask, execve, and write/exit_group on the failure path) are all
   allowed by Docker's default profile; a custom profile that denies one of them makes the
   container fail to start, exactly as with runc.

``compile_filter`` goes in ``_plan``/``run`` before the fork (with the other parsing);
``load`` raises RuntimeFailure, which the child's step reporting already forwards (use
``step = "seccomp"``). ``--privileged`` / ``seccomp=unconfined`` mean no ``linux.seccomp``
in the spec and no call at all. :func:`available` says whether the kernel can filter:
Docker silently runs the *default* profile unfiltered on such a kernel but refuses a
custom one.
"""

from __future__ import annotations

import ctypes
import errno
import os
from typing import Any

from minirun.errors import RuntimeFailure

__all__ = ["Filter", "available", "compile_filter", "load"]

# Bump when compile_filter's output for the same input could change (cache invalidation).
_CACHE_VERSION = 1

_PR_GET_SECCOMP = 21
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
_SECCOMP_SET_MODE_FILTER = 1
_BPF_MAXINSNS = 4096  # the kernel's limit per filter program
_SCMP_ERROR = -1  # libseccomp's __NR_SCMP_ERROR: name unknown to it

_FLAG_BITS = {
    "SECCOMP_FILTER_FLAG_TSYNC": 1,
    "SECCOMP_FILTER_FLAG_LOG": 2,
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": 4,
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV": 32,
}

# seccomp(2)'s number, needed only when flags are set (prctl cannot pass flags).
_NR_SECCOMP = {
    "x86_64": 317, "i386": 354, "i686": 354, "aarch64": 277, "riscv64": 277, "armv7l": 383,
    "ppc64le": 358, "ppc64": 358, "s390x": 348, "loongarch64": 277,
}  # fmt: skip

_OPS = {
    "SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4, "SCMP_CMP_GE": 5,
    "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7,
}  # fmt: skip

# Since Linux 5.1 new syscalls get the same number on every arch but alpha, ia64 and MIPS
# (x32 adds its 0x40000000 bit, which libseccomp does). Used only for names the installed
# libseccomp cannot resolve, and only on the native arch.
_UNIFIED_NR = {
    "pidfd_send_signal": 424, "io_uring_setup": 425, "io_uring_enter": 426,
    "io_uring_register": 427, "open_tree": 428, "move_mount": 429, "fsopen": 430,
    "fsconfig": 431, "fsmount": 432, "fspick": 433, "pidfd_open": 434, "clone3": 435,
    "close_range": 436, "openat2": 437, "pidfd_getfd": 438, "faccessat2": 439,
    "process_madvise": 440, "epoll_pwait2": 441, "mount_setattr": 442, "quotactl_fd": 443,
    "landlock_create_ruleset": 444, "landlock_add_rule": 445, "landlock_restrict_self": 446,
    "memfd_secret": 447, "process_mrelease": 448, "futex_waitv": 449,
    "set_mempolicy_home_node": 450, "cachestat": 451, "fchmodat2": 452,
    "map_shadow_stack": 453, "futex_wake": 454, "futex_wait": 455, "futex_requeue": 456,
    "statmount": 457, "listmount": 458, "lsm_get_self_attr": 459, "lsm_set_self_attr": 460,
    "lsm_list_modules": 461, "mseal": 462, "setxattrat": 463, "getxattrat": 464,
    "listxattrat": 465, "removexattrat": 466, "open_tree_attr": 467,
}  # fmt: skip
_UNIFIED_MACHINES = frozenset({
    "x86_64", "i386", "i686", "aarch64", "armv7l", "armv6l", "riscv64", "ppc64le", "ppc64",
    "s390x", "loongarch64",
})  # fmt: skip

_libc = ctypes.CDLL(None, use_errno=True)


class _SockFprog(ctypes.Structure):
    # struct sock_fprog { unsigned short len; struct sock_filter *filter; }
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


class Filter:
    """A compiled filter: the BPF program (8-byte ``struct sock_filter`` instructions) and
    the seccomp(2) flags, ready for :func:`load`. ``skipped`` lists the names the installed
    libseccomp could not resolve (empty when the program came from the cache)."""

    __slots__ = ("bpf", "flags", "skipped", "_buf", "_prog", "_nr")

    def __init__(self, bpf: bytes, flags: int = 0, skipped: tuple[str, ...] = ()) -> None:
        if not bpf or len(bpf) % 8 or len(bpf) // 8 > _BPF_MAXINSNS:
            raise RuntimeFailure(f"seccomp: invalid BPF program ({len(bpf)} bytes)")
        self.bpf = bpf
        self.flags = flags
        self.skipped = skipped
        # Built here, in the parent, so load() in the child is a single syscall.
        self._buf = ctypes.create_string_buffer(bpf, len(bpf))
        self._prog = _SockFprog(len(bpf) // 8, ctypes.addressof(self._buf))
        self._nr = 0
        if flags:  # prctl cannot pass flags: seccomp(2) by number, known here, not in the child
            self._nr = _NR_SECCOMP.get(os.uname().machine, 0)
            if not self._nr:
                raise RuntimeFailure("seccomp: filter flags are not supported on this arch")

    def __len__(self) -> int:
        return len(self.bpf) // 8

    def __repr__(self) -> str:
        return f"<seccomp.Filter {len(self)} instructions, flags={self.flags:#x}>"


# --- parent side -----------------------------------------------------------------------------


def compile_filter(oci_seccomp: dict[str, Any], *, cache_dir: str | None = None) -> Filter:
    """Compile an OCI ``linux.seccomp`` object (in the parent, before fork).

    ``cache_dir`` (e.g. ``<store root>/cache/seccomp``) keeps compiled programs: a hit
    neither imports the binding nor runs libseccomp. Raises RuntimeFailure (naming the
    field) for a malformed object, or when libseccomp or its binding is missing."""
    _check(oci_seccomp)
    flags = 0
    for flag in oci_seccomp.get("flags") or ():
        flags |= _FLAG_BITS[flag]
    path = None
    if cache_dir:
        path = os.path.join(cache_dir, _cache_key(oci_seccomp) + ".bpf")
        try:
            with open(path, "rb") as f:
                return Filter(f.read(), flags)
        except (OSError, RuntimeFailure):
            pass  # a miss, or a damaged entry: compile and rewrite it
    bpf, skipped = _compile(oci_seccomp)
    if path is not None:
        _store(path, bpf)
    return Filter(bpf, flags, skipped)


def _check(oci: Any) -> None:
    """Validate what libseccomp would otherwise reject with a bare errno."""
    if not isinstance(oci, dict):
        raise RuntimeFailure("linux.seccomp must be an object")
    _check_action(oci.get("defaultAction"), "linux.seccomp.defaultAction")
    _check_errno(oci.get("defaultErrnoRet"), "linux.seccomp.defaultErrnoRet")
    for key in ("architectures", "flags", "syscalls"):
        if not isinstance(oci.get(key) or [], list):
            raise RuntimeFailure(f"linux.seccomp.{key} must be a list")
    for i, flag in enumerate(oci.get("flags") or ()):
        if not isinstance(flag, str) or flag not in _FLAG_BITS:
            raise RuntimeFailure(f"linux.seccomp.flags[{i}]: unsupported flag {flag!r}")
    if oci.get("listenerPath"):
        raise RuntimeFailure("linux.seccomp.listenerPath: seccomp agents are not supported")
    for i, rule in enumerate(oci.get("syscalls") or ()):
        where = f"linux.seccomp.syscalls[{i}]"
        if not isinstance(rule, dict):
            raise RuntimeFailure(f"{where} must be an object")
        names = rule.get("names")
        if (
            not isinstance(names, list)
            or not names
            or not all(isinstance(n, str) and n for n in names)
        ):
            raise RuntimeFailure(f"{where}.names must be a non-empty list of syscall names")
        _check_action(rule.get("action"), f"{where}.action")
        _check_errno(rule.get("errnoRet"), f"{where}.errnoRet")
        args = rule.get("args") or []
        if not isinstance(args, list) or len(args) > 6:
            raise RuntimeFailure(f"{where}.args must be a list of at most 6 conditions")
        for j, arg in enumerate(args):
            op = arg.get("op") if isinstance(arg, dict) else None
            if not isinstance(op, str) or op not in _OPS:
                raise RuntimeFailure(f"{where}.args[{j}].op: unknown operator {arg!r}")
            if not _is_int(arg.get("index")) or arg["index"] not in range(6):
                raise RuntimeFailure(f"{where}.args[{j}].index must be 0..5")
            for key in ("value", "valueTwo"):
                v = arg.get(key)
                if v is not None and (not _is_int(v) or not 0 <= v < 1 << 64):
                    raise RuntimeFailure(f"{where}.args[{j}].{key} must be an unsigned 64-bit "
                                         f"integer, got {v!r}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_errno(ret: Any, where: str) -> None:
    """An errno for SCMP_ACT_ERRNO/TRACE: the filter's 16-bit return data (None: EPERM)."""
    if ret is not None and (not _is_int(ret) or not 0 <= ret <= 0xFFFF):
        raise RuntimeFailure(f"{where} must be an integer 0..65535, got {ret!r}")


def _check_action(action: Any, where: str) -> None:
    known = (
        "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_TRAP",
        "SCMP_ACT_ERRNO", "SCMP_ACT_TRACE", "SCMP_ACT_ALLOW", "SCMP_ACT_LOG",
    )  # fmt: skip
    if action not in known:
        raise RuntimeFailure(f"{where}: unsupported action {action!r}")


def _compile(oci: dict[str, Any]) -> tuple[bytes, tuple[str, ...]]:
    try:
        import pyseccomp as sc
    except ImportError as e:  # the package, or libseccomp.so.2 itself
        raise RuntimeFailure(
            f"seccomp needs libseccomp and its Python binding ({e}); install them with "
            "'apt-get install libseccomp2' and 'pip install pyseccomp', or run the "
            "container with --security-opt seccomp=unconfined"
        ) from e
    except RuntimeError as e:  # pyseccomp: "Unable to find libseccomp"
        raise RuntimeFailure(f"seccomp: {e} (install it with 'apt-get install libseccomp2')") from e

    def action(name: str, ret: int | None) -> int:
        if name == "SCMP_ACT_ERRNO":
            return int(sc.ERRNO(errno.EPERM if ret is None else ret))
        if name == "SCMP_ACT_TRACE":
            return int(sc.TRACE(errno.EPERM if ret is None else ret))
        return {
            "SCMP_ACT_KILL": sc.KILL_THREAD, "SCMP_ACT_KILL_THREAD": sc.KILL_THREAD,
            "SCMP_ACT_KILL_PROCESS": sc.KILL_PROCESS, "SCMP_ACT_TRAP": sc.TRAP,
            "SCMP_ACT_ALLOW": sc.ALLOW, "SCMP_ACT_LOG": sc.LOG,
        }[name]  # fmt: skip

    default = action(oci["defaultAction"], oci.get("defaultErrnoRet"))
    native = sc.system_arch()
    arches: list[int] = []
    for i, name in enumerate(oci.get("architectures") or ()):
        token = getattr(sc.Arch, str(name).removeprefix("SCMP_ARCH_"), None)
        if not isinstance(token, int) or not str(name).startswith("SCMP_ARCH_"):
            raise RuntimeFailure(f"linux.seccomp.architectures[{i}]: unsupported arch {name!r}")
        if token != native and token not in arches:
            arches.append(token)
    unified = os.uname().machine in _UNIFIED_MACHINES

    def new_filter() -> Any:
        f = sc.SyscallFilter(default)
        # libseccomp would set no_new_privs itself on load; whether the container gets it
        # is the spec's noNewPrivileges, applied by the runtime (we load the BPF ourselves
        # anyway, so this only keeps the exported program honest).
        f.set_attr(sc.Attr.CTL_NNP, 0)
        return f

    # The native arch and its compat arches go in two filters merged at the end: libseccomp
    # adds a rule by number to every arch of a filter and fails if one of them does not know
    # the number, so numbers it cannot name (the _UNIFIED_NR fallback) go to the native one.
    main = new_filter()
    compat = None
    if arches:
        compat = new_filter()
        for token in arches:
            compat.add_arch(token)
        compat.remove_arch(native)
    skipped: list[str] = []
    for i, rule in enumerate(oci.get("syscalls") or ()):
        act = action(rule["action"], rule.get("errnoRet"))
        if act == default:
            continue  # a no-op; libseccomp refuses such rules (EACCES), runc skips them too
        conds = [
            sc.Arg(a["index"], _OPS[a["op"]], int(a.get("value") or 0), int(a.get("valueTwo") or 0))
            for a in rule.get("args") or ()
        ]
        indexes = [a["index"] for a in rule.get("args") or ()]
        # libseccomp ANDs the conditions of one rule, but cannot AND two on the same
        # argument: runc then adds one rule per condition (OR), and so do we. Of two rules
        # with the same conditions, libseccomp keeps the first (silently), as under runc.
        groups = [conds] if len(set(indexes)) == len(indexes) else [[c] for c in conds]
        for name in rule["names"]:
            nr = sc.resolve_syscall(sc.Arch.NATIVE, name)
            known = nr != _SCMP_ERROR
            if not known:
                nr = _UNIFIED_NR.get(name, _SCMP_ERROR) if unified else _SCMP_ERROR
            if nr == _SCMP_ERROR:
                skipped.append(name)
                continue
            for group in groups:
                targets = [main, compat] if known and compat is not None else [main]
                for target in targets:
                    try:
                        target.add_rule(act, nr, *group)
                    except OSError as e:
                        raise RuntimeFailure(
                            f"linux.seccomp.syscalls[{i}]: libseccomp refused the rule for "
                            f"{name!r}: {e.strerror}"
                        ) from None
    if compat is not None:
        main.merge(compat)
    fd = os.memfd_create("minirun-seccomp", os.MFD_CLOEXEC)
    with os.fdopen(fd, "w+b") as out:
        main.export_bpf(out)
        out.seek(0)
        bpf = out.read()
    return bpf, tuple(dict.fromkeys(skipped))


def _libseccomp_id() -> str:
    """Which libseccomp would compile (without loading it): its real file name and stat. A
    libseccomp upgrade may learn new syscall names, so it must not reuse old programs."""
    import sys

    multiarch = getattr(sys.implementation, "_multiarch", "")
    for d in (f"/usr/lib/{multiarch}", f"/lib/{multiarch}", "/usr/lib64", "/lib64", "/usr/lib"):
        path = os.path.join(d, "libseccomp.so.2")
        try:
            st = os.stat(path)
        except OSError:
            continue
        return f"{os.path.realpath(path)}:{st.st_size}:{st.st_mtime_ns}"
    return ""


def _cache_key(oci: dict[str, Any]) -> str:
    import json

    try:  # the builtin sha256 imports in ~0.03 ms; hashlib (OpenSSL) costs ~3 ms
        from _sha2 import sha256  # type: ignore[import-not-found, unused-ignore]  # 3.12+
    except ImportError:
        try:
            from _sha256 import sha256  # type: ignore[import-not-found, no-redef, unused-ignore]
        except ImportError:  # pragma: no cover - a Python built without them
            from hashlib import sha256  # type: ignore[assignment, unused-ignore]
    blob = json.dumps(oci, sort_keys=True, separators=(",", ":"))
    ident = f"v{_CACHE_VERSION}\0{os.uname().machine}\0{_libseccomp_id()}\0{blob}"
    return str(sha256(ident.encode()).hexdigest())


def _store(path: str, bpf: bytes) -> None:
    """Best effort, atomic (write + rename): a cache that cannot be written is no error."""
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(bpf)
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass


_AVAILABLE: bool | None = None


def available() -> bool:
    """Whether this kernel supports seccomp filters (CONFIG_SECCOMP_FILTER). Cheap: no
    import of the binding. The binding and libseccomp are dependencies, not options:
    their absence is an error from compile_filter, not a reason to run unfiltered."""
    global _AVAILABLE
    if _AVAILABLE is None:
        if _libc.prctl(_PR_GET_SECCOMP, 0, 0, 0, 0) < 0 and ctypes.get_errno() == errno.EINVAL:
            _AVAILABLE = False  # no CONFIG_SECCOMP
        else:
            # runc's probe: with a NULL program, a kernel that has filter mode fails the
            # copy (EFAULT) and installs nothing; one without it says EINVAL.
            rc = _libc.prctl(
                _PR_SET_SECCOMP, ctypes.c_ulong(_SECCOMP_MODE_FILTER), None, 0, 0
            )  # fmt: skip
            _AVAILABLE = rc < 0 and ctypes.get_errno() == errno.EFAULT
    return _AVAILABLE


# --- child side ------------------------------------------------------------------------------


def load(filter: Filter) -> None:
    """Install ``filter`` in the calling process (the forked child, right before exec; see
    the module docstring for where). Needs no_new_privs or CAP_SYS_ADMIN. No allocation
    beyond ctypes' call, no import: the program was prepared in the parent."""
    prog = ctypes.c_void_p(ctypes.addressof(filter._prog))
    zero = ctypes.c_ulong(0)
    if filter.flags:
        rc = _libc.syscall(
            ctypes.c_long(filter._nr), ctypes.c_ulong(_SECCOMP_SET_MODE_FILTER),
            ctypes.c_ulong(filter.flags), prog,
        )  # fmt: skip
    else:
        rc = _libc.prctl(_PR_SET_SECCOMP, ctypes.c_ulong(_SECCOMP_MODE_FILTER), prog, zero, zero)
    if rc != 0:
        err = ctypes.get_errno()
        hint = ""
        if err == errno.EACCES:
            hint = (
                " (the process has neither no_new_privs nor CAP_SYS_ADMIN: load the filter"
                " before dropping capabilities, or after setting no_new_privs)"
            )
        raise RuntimeFailure(f"loading the seccomp filter failed: {os.strerror(err)}{hint}")
