"""cgroup v2 device rules: ``linux.resources.devices`` compiled to an eBPF program of type
BPF_PROG_TYPE_CGROUP_DEVICE and attached to the container's cgroup, as runc
(libcontainer/cgroups/devices: devicefilter + ebpf) and crun (libcrun/ebpf.c) do.

cgroup v2 has no devices.allow/deny files. Instead the kernel runs every BPF_CGROUP_DEVICE
program attached to the cgroup (and to its ancestors) on each mknod(2) and each open(2) of
a device node, with a ``struct bpf_cgroup_dev_ctx`` {u32 access_type (device type in the
low 16 bits, access bits in the high 16), u32 major, u32 minor}; 1 allows, 0 denies
(EPERM). Programs attached with BPF_F_ALLOW_MULTI all have to allow.

**Rule semantics: the v1 devices cgroup's, emulated** (runc's ``devicefilter`` does the same
through its ``emulator``), so a rule list means on v2 what it means written line by line
into v1's devices.allow/devices.deny (``_DeviceRule.v1_lines`` in cgroups.py):

* The state is a default (allow or deny) plus exceptions keyed by (type, major, minor),
  each with access bits. It starts as default deny with no exceptions (runc's emulator).
* A full wildcard rule ("a *:* rwm") resets: default = its verdict, exceptions cleared. A
  type "a" rule with a number or a partial access means the "c" and the "b" rule.
* A rule whose verdict differs from the default adds an exception (merging the access
  bits of an exception for the same key). One whose verdict equals the default removes its
  bits from the exception with exactly its key (the kernel never splits wildcards). As
  runc, removing bits that a wider wildcard exception still grants is refused instead of
  silently ignored ("cannot punch a hole in a wildcard rule").
* Matching, as the kernel's v1 ``match_exception``/``match_exception_partial``: in allow
  mode (default deny) an exception allows a request when it holds *every* requested access
  bit (open O_RDWR asks for r and w at once); in deny mode (default allow) an exception
  denies when it holds *any* requested bit. (runc's program checks "every" for deny
  exceptions too, so its deny "w" does not stop an O_RDWR open; here it does, as on v1.)

In practice, for the lists the engine and containerd send (a leading deny-all, then allow
rules, then ``DEFAULT_ALLOWED_DEVICES``), this is "the last matching rule wins, deny when
none matches". A list that resolves to "allow everything" needs no program: ``attach``
then only removes ours.

The program (``compile_rules``) loads type/access/major/minor into r2..r5, then one block
per exception ("if type != T goto next; if access not covered goto next; if major != M goto
next; if minor != N goto next; r0 = verdict; exit"), then "r0 = default; exit". Only
forward jumps, every path sets r0 before exit, r1 (the context) is read before it is reused
as a scratch register: the verifier accepts it from Linux 4.15 on.

``attach`` loads it (BPF_PROG_LOAD, named ``PROG_NAME``), attaches it (BPF_PROG_ATTACH,
BPF_CGROUP_DEVICE, BPF_F_ALLOW_MULTI) and then detaches the programs of ours attached
before (BPF_PROG_QUERY, BPF_PROG_GET_FD_BY_ID, BPF_OBJ_GET_INFO_BY_FD for the name,
BPF_PROG_DETACH), so an update never leaves the cgroup without a filter. The cgroup keeps
the program after our fds close; it goes with the cgroup's rmdir. Programs of others
(systemd's) are left alone: they can only restrict more.

Pure Python: ``ctypes`` (imported on first syscall), ``os``, ``struct``. x86_64, aarch64
and riscv64 syscall numbers.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import struct
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from minirun.errors import KernelUnsupported, RuntimeFailure

__all__ = [
    "PROG_NAME",
    "Insn",
    "Policy",
    "Program",
    "Rule",
    "attach",
    "attached",
    "available",
    "compile_policy",
    "compile_rules",
    "emulate",
    "encode",
    "load",
]

PROG_NAME = "minirun_devices"  # BPF_OBJ_NAME_LEN is 16 with the NUL: 15 chars at most

# -- uapi (include/uapi/linux/bpf.h) -------------------------------------------------------

_BPF_PROG_LOAD = 5
_BPF_PROG_ATTACH = 8
_BPF_PROG_DETACH = 9
_BPF_PROG_GET_FD_BY_ID = 13
_BPF_OBJ_GET_INFO_BY_FD = 15
_BPF_PROG_QUERY = 16
_BPF_PROG_TYPE_CGROUP_DEVICE = 15
_BPF_CGROUP_DEVICE = 6  # enum bpf_attach_type
_BPF_F_ALLOW_MULTI = 1 << 1
_ATTR_SIZE = 128  # enough for every command used; the kernel zero-fills the rest of its union
_INFO_SIZE = 256  # struct bpf_prog_info, more than the fields read (id at 4, name at 64)
_NR_BPF = {"x86_64": 321, "aarch64": 280, "arm64": 280, "riscv64": 280}

DEV_BLOCK = 1  # BPF_DEVCG_DEV_BLOCK
DEV_CHAR = 2  # BPF_DEVCG_DEV_CHAR
ACC_MKNOD = 1  # BPF_DEVCG_ACC_MKNOD
ACC_READ = 2  # BPF_DEVCG_ACC_READ
ACC_WRITE = 4  # BPF_DEVCG_ACC_WRITE
ACC_ALL = ACC_MKNOD | ACC_READ | ACC_WRITE
_ACCESS_BITS = {"r": ACC_READ, "w": ACC_WRITE, "m": ACC_MKNOD}
_TYPE_BITS = {"b": DEV_BLOCK, "c": DEV_CHAR}
_U32_MAX = (1 << 32) - 1

# instruction classes, sizes, modes, operations (bpf_common.h)
BPF_LDX, BPF_ALU, BPF_JMP, BPF_ALU64 = 0x01, 0x04, 0x05, 0x07
BPF_W, BPF_MEM = 0x00, 0x60
BPF_K, BPF_X = 0x00, 0x08
BPF_AND, BPF_RSH, BPF_MOV = 0x50, 0x70, 0xB0
BPF_JEQ, BPF_JNE, BPF_EXIT = 0x10, 0x50, 0x90
R0, R1, R2, R3, R4, R5 = range(6)


# -- instructions ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Insn:
    """One ``struct bpf_insn``: {u8 code; u8 dst_reg:4, src_reg:4; s16 off; s32 imm}."""

    code: int
    dst: int = 0
    src: int = 0
    off: int = 0
    imm: int = 0

    def encode(self) -> bytes:
        """The 8 bytes, in this machine's byte order (the bitfields follow it too)."""
        if sys.byteorder == "little":
            return struct.pack("<BBhi", self.code, (self.src << 4) | self.dst, self.off, self.imm)
        return struct.pack(">BBhi", self.code, (self.dst << 4) | self.src, self.off, self.imm)

    @property
    def is_jump(self) -> bool:
        return self.code & 0x07 == BPF_JMP and self.code & 0xF0 not in (BPF_EXIT, 0x80)


def encode(insns: Iterable[Insn]) -> bytes:
    return b"".join(i.encode() for i in insns)


def _ldx_w(dst: int, src: int, off: int) -> Insn:
    return Insn(BPF_LDX | BPF_W | BPF_MEM, dst, src, off)


def _alu32_imm(op: int, dst: int, imm: int) -> Insn:
    return Insn(BPF_ALU | op | BPF_K, dst, 0, 0, imm)


def _mov32_reg(dst: int, src: int) -> Insn:
    return Insn(BPF_ALU | BPF_MOV | BPF_X, dst, src)


def _mov64_imm(dst: int, imm: int) -> Insn:
    return Insn(BPF_ALU64 | BPF_MOV | BPF_K, dst, 0, 0, imm)


def _jmp_imm(op: int, dst: int, imm: int, off: int) -> Insn:
    return Insn(BPF_JMP | op | BPF_K, dst, 0, off, imm)


def _jmp_reg(op: int, dst: int, src: int, off: int) -> Insn:
    return Insn(BPF_JMP | op | BPF_X, dst, src, off)


_EXIT = Insn(BPF_JMP | BPF_EXIT)
_NEXT = -0x8000  # placeholder offset: "to the next block", patched when the block is done


# -- rules -> the v1 state ------------------------------------------------------------------


class Rule(Protocol):
    """A device rule (``cgroups._DeviceRule``): type "a"/"b"/"c", None numbers = any."""

    @property
    def allow(self) -> bool: ...
    @property
    def type(self) -> str: ...
    @property
    def major(self) -> int | None: ...
    @property
    def minor(self) -> int | None: ...
    @property
    def access(self) -> str: ...


Key = tuple[str, int | None, int | None]  # (type "b"/"c", major, minor); None = wildcard


@dataclass
class Policy:
    """The devices cgroup state a rule list leaves (as v1 would hold it)."""

    default_allow: bool = False
    exceptions: dict[Key, int] = dataclasses.field(default_factory=dict)  # -> ACC_* bits

    @property
    def allows_all(self) -> bool:
        return self.default_allow and not self.exceptions


def _show(key: Key, bits: int) -> str:
    t, major, minor = key
    access = "".join(ch for ch in "rwm" if bits & _ACCESS_BITS[ch])
    return f"{t} {'*' if major is None else major}:{'*' if minor is None else minor} {access}"


def _default_where(i: int) -> str:
    return f"device rule {i}"


def emulate(rules: Sequence[Rule], where: Callable[[int], str] | None = None) -> Policy:
    """The state v1 would reach applying ``rules`` in order to a default-deny cgroup (see
    the module docstring). ``where(i)`` names rule ``i`` in errors (RuntimeFailure)."""
    name = where or _default_where
    p = Policy()
    for i, rule in enumerate(rules):
        bits = 0
        for ch in rule.access:
            if ch not in _ACCESS_BITS:
                raise RuntimeFailure(f'{name(i)}: access must be some of "rwm", got {rule.access!r}')
            bits |= _ACCESS_BITS[ch]
        for n, what in ((rule.major, "major"), (rule.minor, "minor")):
            if n is not None and not 0 <= n <= _U32_MAX:
                raise RuntimeFailure(
                    f"{name(i)}: {what} {n} is not a device number (0 to {_U32_MAX}, or -1/unset "
                    "for any)"
                )
        if rule.type == "a" and rule.major is None and rule.minor is None and bits == ACC_ALL:
            p = Policy(default_allow=rule.allow)  # "a": reset to allow-all / deny-all
            continue
        if rule.type not in ("a", "b", "c"):
            raise RuntimeFailure(f'{name(i)}: type must be "a", "b" or "c", got {rule.type!r}')
        if not bits:
            continue
        for t in ("c", "b") if rule.type == "a" else (rule.type,):
            key: Key = (t, rule.major, rule.minor)
            if rule.allow != p.default_allow:
                p.exceptions[key] = p.exceptions.get(key, 0) | bits
                continue
            for wide in ((t, None, rule.minor), (t, rule.major, None), (t, None, None)):
                if wide != key and p.exceptions.get(wide, 0) & bits:
                    verb = "allow" if rule.allow else "deny"
                    raise RuntimeFailure(
                        f"{name(i)}: cannot {verb} {_show(key, bits)}: an earlier rule "
                        f"{'denies' if rule.allow else 'allows'} {_show(wide, p.exceptions[wide])} "
                        "and the devices cgroup cannot punch a hole in a wildcard rule "
                        "(v1 ignores such a rule silently; runc refuses it too): reorder the "
                        "rules or narrow the wildcard"
                    )
            left = p.exceptions.get(key, 0) & ~bits
            if left:
                p.exceptions[key] = left
            else:
                p.exceptions.pop(key, None)
    return p


# -- the v1 state -> a program --------------------------------------------------------------


def _jne_number(reg: int, n: int) -> list[Insn]:
    """if reg != n goto next. A jump's imm is sign-extended to 64 bits and the loaded field
    is zero-extended, so numbers from 2^31 go through a zero-extending mov32 into r1."""
    if n < 1 << 31:
        return [_jmp_imm(BPF_JNE, reg, n, _NEXT)]
    return [_alu32_imm(BPF_MOV, R1, n - (1 << 32)), _jmp_reg(BPF_JNE, reg, R1, _NEXT)]


def compile_policy(policy: Policy) -> list[Insn]:
    """The instructions deciding as ``policy`` does (see the module docstring)."""
    insns = [
        _ldx_w(R2, R1, 0), _alu32_imm(BPF_AND, R2, 0xFFFF),  # r2 = type
        _ldx_w(R3, R1, 0), _alu32_imm(BPF_RSH, R3, 16),  # r3 = access
        _ldx_w(R4, R1, 4),  # r4 = major
        _ldx_w(R5, R1, 8),  # r5 = minor
    ]  # fmt: skip
    verdict = 0 if policy.default_allow else 1  # an exception says the opposite of the default
    for (t, major, minor), bits in policy.exceptions.items():
        block = [_jmp_imm(BPF_JNE, R2, _TYPE_BITS[t], _NEXT)]
        if bits != ACC_ALL:  # every request is covered by rwm (and overlaps it)
            block += [_mov32_reg(R1, R3), _alu32_imm(BPF_AND, R1, bits)]
            if policy.default_allow:  # a deny exception: any requested bit it holds
                block.append(_jmp_imm(BPF_JEQ, R1, 0, _NEXT))
            else:  # an allow exception: it must hold every requested bit
                block.append(_jmp_reg(BPF_JNE, R1, R3, _NEXT))
        if major is not None:
            block += _jne_number(R4, major)
        if minor is not None:
            block += _jne_number(R5, minor)
        block += [_mov64_imm(R0, verdict), _EXIT]
        for j, ins in enumerate(block):
            if ins.is_jump and ins.off == _NEXT:
                block[j] = dataclasses.replace(ins, off=len(block) - j - 1)
        insns += block
    insns += [_mov64_imm(R0, 1 if policy.default_allow else 0), _EXIT]
    return insns


def compile_rules(rules: Sequence[Rule], where: Callable[[int], str] | None = None) -> bytes:
    """``rules`` (in ``linux.resources.devices`` order, defaults appended) as the bytes of a
    BPF_PROG_TYPE_CGROUP_DEVICE program. Pure; RuntimeFailure (naming the rule with
    ``where(i)``) for a list v1 could not hold either."""
    return encode(compile_policy(emulate(rules, where)))


# -- bpf(2) ---------------------------------------------------------------------------------

_syscall: Any = None


def _bpf(cmd: int, attr: Any) -> int:
    """bpf(cmd, attr, sizeof attr); OSError(errno) on failure."""
    global _syscall
    import ctypes

    if _syscall is None:
        fn = ctypes.CDLL(None, use_errno=True).syscall
        fn.restype = ctypes.c_long
        _syscall = fn
    nr = _NR_BPF.get(os.uname().machine)
    if nr is None:
        raise OSError(errno.ENOSYS, f"no bpf(2) syscall number known for {os.uname().machine}")
    ret = int(_syscall(ctypes.c_long(nr), ctypes.c_long(cmd), attr, ctypes.c_ulong(len(attr))))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return ret


def _attr() -> Any:
    import ctypes

    return ctypes.create_string_buffer(_ATTR_SIZE)


def _addr(buf: Any) -> int:
    import ctypes

    return ctypes.addressof(buf)


def _refused(step: str, e: OSError) -> RuntimeFailure:
    """The one-line error for a bpf(2) failure, with what to do where there is something."""
    if e.errno == errno.ENOSYS:
        return KernelUnsupported(
            f"the kernel refused the device filter ({step}: {e.strerror}): it has no bpf(2) "
            "(CONFIG_BPF_SYSCALL), so cgroup v2 device rules cannot be enforced"
        )
    if e.errno in (errno.EPERM, errno.EACCES):
        return KernelUnsupported(
            f"the kernel refused the device filter ({step}: {e.strerror}): enforcing cgroup v2 "
            "device rules needs root (CAP_SYS_ADMIN or CAP_BPF + CAP_NET_ADMIN) outside any "
            "user namespace"
        )
    return RuntimeFailure(f"the device filter could not be installed ({step}: {e.strerror})")


def _prog_load(code: bytes, log_size: int = 0) -> tuple[int, str]:
    """(fd, "") or (-errno, the verifier's log)."""
    import ctypes

    insns = ctypes.create_string_buffer(code, len(code))
    license = ctypes.create_string_buffer(b"MIT")
    log = ctypes.create_string_buffer(log_size) if log_size else None
    attr = _attr()
    struct.pack_into(
        "=IIQQIIQ", attr, 0, _BPF_PROG_TYPE_CGROUP_DEVICE, len(code) // 8, _addr(insns),
        _addr(license), 1 if log else 0, log_size, _addr(log) if log else 0,
    )  # fmt: skip
    attr[48 : 48 + len(PROG_NAME)] = PROG_NAME.encode()  # prog_name
    try:
        return _bpf(_BPF_PROG_LOAD, attr), ""
    except OSError as e:
        text = log.value.decode(errors="replace") if log is not None else ""
        return -(e.errno or errno.EINVAL), text


def _verifier_line(log: str) -> str:
    """The line of a verifier log that says what is wrong (its last meaningful one)."""
    lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
    noise = ("processed ", "verification time", "stack depth", "max_states_per_insn")
    meaningful = [ln for ln in lines if not ln.startswith(noise)]
    return (meaningful or lines or ["(no verifier log)"])[-1]


def load(code: bytes) -> int:
    """BPF_PROG_LOAD ``code`` (``compile_rules``' bytes) as a CGROUP_DEVICE program named
    ``PROG_NAME``; its fd (the caller closes it). A program the verifier rejects raises
    RuntimeFailure with the log's telling line; EPERM/ENOSYS KernelUnsupported."""
    if not code or len(code) % 8:
        raise RuntimeFailure(f"device filter: {len(code)} bytes is not a whole number of instructions")
    fd, _log = _prog_load(code)
    if fd == -errno.EPERM:
        fd = _with_memlock_raised(code)
    if fd >= 0:
        return fd
    err = -fd
    if err in (errno.ENOSYS, errno.EPERM):  # (the verifier's own refusals are EACCES/EINVAL)
        raise _refused("BPF_PROG_LOAD", OSError(err, os.strerror(err)))
    fd, log = _prog_load(code, 1 << 18)  # again with the verifier's log, for the message
    if fd >= 0:
        return fd  # a transient failure (memory)
    if not log.strip():
        if err == errno.EINVAL:
            raise KernelUnsupported(
                "the kernel refused the device filter (BPF_PROG_LOAD: Invalid argument): it "
                "has no BPF_PROG_TYPE_CGROUP_DEVICE (needs Linux 4.15+ with CONFIG_CGROUP_BPF)"
            )
        raise _refused("BPF_PROG_LOAD", OSError(err, os.strerror(err)))
    raise RuntimeFailure(
        f"the kernel's BPF verifier rejected the device filter ({len(code) // 8} instructions): "
        f"{_verifier_line(log)}"
    )


def _with_memlock_raised(code: bytes) -> int:
    """Kernels before 5.11 charge BPF programs to RLIMIT_MEMLOCK (runc's #2167): retry
    with it raised, then put it back (the charge is taken at load; nothing is inherited)."""
    import resource

    try:
        old = resource.getrlimit(resource.RLIMIT_MEMLOCK)
        if old[0] == resource.RLIM_INFINITY:
            return -errno.EPERM
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    except (OSError, ValueError):
        return -errno.EPERM
    try:
        return _prog_load(code)[0]
    finally:
        try:
            resource.setrlimit(resource.RLIMIT_MEMLOCK, old)
        except (OSError, ValueError):
            pass


_available: bool | None = None


def available() -> bool:
    """Whether this process can load a CGROUP_DEVICE program (a trivial one). Cached."""
    global _available
    if _available is None:
        try:
            os.close(load(encode([_mov64_imm(R0, 1), _EXIT])))
            _available = True
        except RuntimeFailure:
            _available = False
    return _available


@dataclass(frozen=True)
class Program:
    """A program attached to a cgroup, as BPF_OBJ_GET_INFO_BY_FD tells."""

    id: int
    name: str

    @property
    def ours(self) -> bool:
        return self.name == PROG_NAME


def _info(fd: int) -> Program:
    import ctypes

    info = ctypes.create_string_buffer(_INFO_SIZE)
    attr = _attr()
    struct.pack_into("=IIQ", attr, 0, fd, _INFO_SIZE, _addr(info))
    _bpf(_BPF_OBJ_GET_INFO_BY_FD, attr)
    (prog_id,) = struct.unpack_from("=I", info, 4)
    name = info.raw[64:80].split(b"\0", 1)[0].decode(errors="replace")
    return Program(prog_id, name)


def _query(dirfd: int) -> list[int]:
    """The ids of the BPF_CGROUP_DEVICE programs attached to the cgroup itself."""
    import ctypes

    size = 64  # the kernel's limit per cgroup and attach type, as of 6.x
    for _ in range(10):
        ids = (ctypes.c_uint32 * size)()
        attr = _attr()
        struct.pack_into("=IIIIQI", attr, 0, dirfd, _BPF_CGROUP_DEVICE, 0, 0, _addr(ids), size)
        try:
            _bpf(_BPF_PROG_QUERY, attr)
        except OSError as e:
            if e.errno == errno.ENOSPC:  # more than ``size``: prog_cnt says how many
                size = max(struct.unpack_from("=I", attr, 24)[0], size * 2)
                continue
            raise
        (count,) = struct.unpack_from("=I", attr, 24)
        return list(ids[: min(count, size)])
    raise RuntimeFailure("BPF_PROG_QUERY: the list of device filters kept growing")


def _open_prog(prog_id: int) -> int | None:
    """An fd of program ``prog_id``; None when it is gone or not ours to open (an LSM)."""
    attr = _attr()
    struct.pack_into("=I", attr, 0, prog_id)
    try:
        return _bpf(_BPF_PROG_GET_FD_BY_ID, attr)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.EPERM, errno.EACCES):
            return None
        raise


def _attach_or_detach(cmd: int, dirfd: int, prog_fd: int) -> None:
    attr = _attr()
    flags = _BPF_F_ALLOW_MULTI if cmd == _BPF_PROG_ATTACH else 0
    struct.pack_into("=IIII", attr, 0, dirfd, prog_fd, _BPF_CGROUP_DEVICE, flags)
    _bpf(cmd, attr)


def _open_dir(cgroup_dir: str) -> int:
    try:
        return os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise RuntimeFailure(f"device filter: cannot open the cgroup {cgroup_dir}: {e.strerror}") from e


def _programs(dirfd: int) -> list[tuple[Program, int]]:
    """(program, an open fd of it) for every program attached to the cgroup we can open."""
    out: list[tuple[Program, int]] = []
    try:
        for prog_id in _query(dirfd):
            fd = _open_prog(prog_id)
            if fd is None:
                continue
            try:
                out.append((_info(fd), fd))
            except OSError:
                os.close(fd)
    except BaseException:
        for _p, fd in out:
            os.close(fd)
        raise
    return out


def attached(cgroup_dir: str) -> list[Program]:
    """The BPF_CGROUP_DEVICE programs attached to ``cgroup_dir`` itself (ours and others')."""
    dirfd = _open_dir(cgroup_dir)
    try:
        progs = _programs(dirfd)
    except OSError as e:
        raise _refused("BPF_PROG_QUERY", e) from e
    finally:
        os.close(dirfd)
    for _p, fd in progs:
        os.close(fd)
    return [p for p, _fd in progs]


def attach(cgroup_dir: str, rules: Sequence[Rule], where: Callable[[int], str] | None = None) -> None:
    """Enforce ``rules`` on the cgroup v2 dir ``cgroup_dir``: load their program, attach it,
    then detach the programs of ours attached before (an update replaces, never leaves a
    gap). Rules that allow everything need no program: ours are only detached. Errors are
    RuntimeFailure (KernelUnsupported when the kernel refuses BPF device filters)."""
    policy = emulate(rules, where)
    dirfd = _open_dir(cgroup_dir)
    new_fd: int | None = None
    new_id: int | None = None
    try:
        if not policy.allows_all:
            new_fd = load(encode(compile_policy(policy)))
            try:
                new_id = _info(new_fd).id
                _attach_or_detach(_BPF_PROG_ATTACH, dirfd, new_fd)
            except OSError as e:
                raise _attach_error(cgroup_dir, e) from e
        try:
            old = _programs(dirfd)
        except OSError as e:
            if new_fd is None and e.errno in (errno.ENOSYS, errno.EINVAL, errno.EPERM):
                return  # no bpf here: nothing of ours can be attached, nothing to enforce
            raise _refused("BPF_PROG_QUERY", e) from e
        try:
            for prog, fd in old:
                if prog.ours and prog.id != new_id:
                    try:
                        _attach_or_detach(_BPF_PROG_DETACH, dirfd, fd)
                    except OSError as e:
                        if e.errno != errno.ENOENT:  # detached meanwhile
                            raise RuntimeFailure(
                                f"device filter: cannot detach the old program {prog.id} from "
                                f"{cgroup_dir}: {e.strerror} (both stay attached: the stricter "
                                "of the two rule sets applies)"
                            ) from e
        finally:
            for _p, fd in old:
                os.close(fd)
    finally:
        if new_fd is not None:
            os.close(new_fd)
        os.close(dirfd)


def _attach_error(cgroup_dir: str, e: OSError) -> RuntimeFailure:
    if e.errno in (errno.EPERM, errno.EACCES, errno.ENOSYS):
        return _refused(f"BPF_PROG_ATTACH to {cgroup_dir}", e)
    hint = " (not a cgroup v2 directory?)" if e.errno in (errno.EBADF, errno.EINVAL) else ""
    return RuntimeFailure(
        f"device filter: cannot attach it to {cgroup_dir}: {e.strerror}{hint}"
    )
