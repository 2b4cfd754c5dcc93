"""minirun.runtime.devices_bpf without the kernel: the struct bpf_insn encoding, the v1
semantics rule lists resolve to (runc's emulator), and what the compiled programs decide,
run here by a small interpreter of the instructions the compiler emits."""

from __future__ import annotations

import struct
import sys
from collections.abc import Sequence
from typing import Any

import pytest

from minirun.errors import RuntimeFailure
from minirun.runtime import cgroups, devices_bpf
from minirun.runtime.cgroups import _device_rule, check_resources, with_default_devices
from minirun.runtime.devices_bpf import (
    ACC_MKNOD,
    ACC_READ,
    ACC_WRITE,
    DEV_BLOCK,
    DEV_CHAR,
    Insn,
    compile_rules,
    emulate,
)

R, W, M = ACC_READ, ACC_WRITE, ACC_MKNOD
RW = R | W
DENY_ALL = {"allow": False, "access": "rwm"}
ALLOW_ALL = {"allow": True, "access": "rwm"}


def rules(entries: Sequence[dict[str, Any]]) -> list[cgroups._DeviceRule]:
    return [_device_rule(e, f"rule {i}") for i, e in enumerate(entries)]


def dev(t: str, major: int | None, minor: int | None, access: str, allow: bool = True) -> dict[str, Any]:
    d: dict[str, Any] = {"allow": allow, "type": t, "access": access}
    if major is not None:
        d["major"] = major
    if minor is not None:
        d["minor"] = minor
    return d


# -- a tiny eBPF interpreter: just what compile_policy emits ---------------------------------

MASK64 = (1 << 64) - 1


def sext32(imm: int) -> int:
    return imm & MASK64  # Python ints: imm is already signed; two's complement to 64 bits


def run(code: bytes, dev_type: int, access: int, major: int, minor: int) -> int:
    """Execute ``code`` on a struct bpf_cgroup_dev_ctx; r0 at exit. Fails on anything the
    compiler is not supposed to emit, on a backward jump and on reading an unset register."""
    assert len(code) % 8 == 0
    insns = [struct.unpack("<BBhi" if sys.byteorder == "little" else ">BBhi", code[i : i + 8])
             for i in range(0, len(code), 8)]  # fmt: skip
    ctx = struct.pack("=III", (access << 16) | dev_type, major, minor)
    regs: dict[int, int] = {1: -1}  # r1: the context (a pointer, never used as a number)
    pc = 0
    steps = 0
    while True:
        steps += 1
        assert steps <= len(insns), "a loop"
        code_, regs_byte, off, imm = insns[pc]
        dst, src = (regs_byte & 0xF, regs_byte >> 4) if sys.byteorder == "little" else (
            regs_byte >> 4, regs_byte & 0xF)  # fmt: skip
        cls, op = code_ & 0x07, code_ & 0xF0
        use_src = bool(code_ & 0x08)

        def get(r: int, at: int = pc) -> int:
            assert r in regs, f"insn {at}: r{r} read before it is set"
            return regs[r]

        if code_ == 0x61:  # ldx w
            assert src == 1 and regs[1] == -1, "loads only from the context"
            assert off in (0, 4, 8)
            regs[dst] = struct.unpack_from("=I", ctx, off)[0]
        elif cls == 0x04:  # alu32
            b = get(src) & 0xFFFFFFFF if use_src else imm & 0xFFFFFFFF
            a = 0 if op == 0xB0 else get(dst) & 0xFFFFFFFF
            regs[dst] = {0x50: a & b, 0x70: a >> (b & 31), 0xB0: b}[op]
        elif cls == 0x07:  # alu64: only mov imm
            assert op == 0xB0 and not use_src
            regs[dst] = sext32(imm)
        elif cls == 0x05 and op == 0x90:  # exit
            return get(0)
        elif cls == 0x05:
            a, b = get(dst), get(src) if use_src else sext32(imm)
            taken = {0x10: a == b, 0x50: a != b}[op]
            assert off >= 0, "backward jump"
            if taken:
                pc += off
                assert pc + 1 < len(insns), "jump out of the program"
        else:
            raise AssertionError(f"unexpected opcode {code_:#x}")
        pc += 1
        assert pc < len(insns), "fell off the end"


def decide(entries: Sequence[dict[str, Any]], t: str, major: int, minor: int, access: int) -> bool:
    code = compile_rules(rules(entries))
    return run(code, DEV_CHAR if t == "c" else DEV_BLOCK, access, major, minor) == 1


# -- encoding --------------------------------------------------------------------------------


@pytest.mark.skipif(sys.byteorder != "little", reason="the little-endian layout")
def test_insn_encoding() -> None:
    assert Insn(0xB7, 0, 0, 0, 1).encode() == bytes([0xB7, 0, 0, 0, 1, 0, 0, 0])  # r0 = 1
    assert Insn(0x95).encode() == bytes([0x95, 0, 0, 0, 0, 0, 0, 0])  # exit
    # r2 = *(u32 *)(r1 + 4): dst in the low nibble, src in the high one
    assert Insn(0x61, 2, 1, 4).encode() == bytes([0x61, 0x12, 4, 0, 0, 0, 0, 0])
    # if r4 != 0xfffffffe goto +3 (s16 offset, s32 imm, little-endian)
    assert Insn(0x55, 4, 0, 3, -2).encode() == bytes([0x55, 0x04, 3, 0, 0xFE, 0xFF, 0xFF, 0xFF])
    assert devices_bpf.encode([Insn(0x95), Insn(0x95)]) == bytes([0x95] + [0] * 7) * 2


@pytest.mark.skipif(sys.byteorder != "little", reason="the little-endian layout")
def test_deny_all_program_is_the_prologue_and_a_deny() -> None:
    code = compile_rules(rules([DENY_ALL]))
    want = [
        (0x61, 0x12, 0, 0),  # r2 = *(u32 *)(r1 + 0)
        (0x54, 0x02, 0, 0xFFFF),  # w2 &= 0xffff: the type
        (0x61, 0x13, 0, 0),  # r3 = *(u32 *)(r1 + 0)
        (0x74, 0x03, 0, 16),  # w3 >>= 16: the access
        (0x61, 0x14, 4, 0),  # r4 = major
        (0x61, 0x15, 8, 0),  # r5 = minor
        (0xB7, 0x00, 0, 0),  # r0 = 0
        (0x95, 0x00, 0, 0),  # exit
    ]
    assert code == b"".join(struct.pack("<BBhi", *w) for w in want)


def test_allow_all_is_one_verdict() -> None:
    assert emulate(rules([ALLOW_ALL])).allows_all
    assert run(compile_rules(rules([ALLOW_ALL])), DEV_BLOCK, RW, 8, 0) == 1
    assert not emulate(rules([])).allows_all  # no rule: runc's emulator starts deny-all


# -- semantics --------------------------------------------------------------------------------


def test_engine_defaults() -> None:
    """containerd's lone deny-all plus runc's defaults: the harmless char devices, pts,
    mknod of anything, and nothing else."""
    entries = with_default_devices([DENY_ALL])
    for t, major, minor, access, want in [
        ("c", 1, 3, RW, True),  # /dev/null
        ("c", 1, 9, R, True),  # /dev/urandom
        ("c", 136, 7, RW, True),  # /dev/pts/7
        ("c", 5, 2, RW, True),  # /dev/ptmx
        ("c", 1, 11, R, False),  # /dev/kmsg
        ("b", 8, 0, R, False),  # a disk
        ("b", 8, 0, M, True),  # mknod of it (b *:* m)
        ("c", 10, 200, M, True),
        ("c", 10, 200, RW, False),
        ("c", 1, 3, RW | M, True),  # one exception must hold every requested bit
    ]:
        assert decide(entries, t, major, minor, access) is want, (t, major, minor, access)


def test_later_allow_rules_open_and_merge() -> None:
    entries = [DENY_ALL, dev("c", 10, 200, "r"), dev("c", 10, 200, "w")]
    assert emulate(rules(entries)).exceptions == {("c", 10, 200): RW}  # merged, as v1
    assert decide(entries, "c", 10, 200, RW)  # O_RDWR needs both: the merged rule has them
    assert not decide(entries, "c", 10, 200, M)
    assert not decide(entries, "c", 10, 201, R)
    assert not decide(entries, "b", 10, 200, R)  # the type must match


def test_allow_needs_every_requested_bit() -> None:
    entries = [DENY_ALL, dev("c", 1, 5, "r")]
    assert decide(entries, "c", 1, 5, R)
    assert not decide(entries, "c", 1, 5, W)
    assert not decide(entries, "c", 1, 5, RW)  # open(O_RDWR) asks r and w at once


def test_deny_removes_an_exact_exception_only() -> None:
    entries = [DENY_ALL, dev("c", 1, 3, "rwm"), dev("c", 1, 3, "w", allow=False)]
    assert emulate(rules(entries)).exceptions == {("c", 1, 3): R | M}
    assert decide(entries, "c", 1, 3, R) and not decide(entries, "c", 1, 3, W)
    # the last rule wins for the same device, both ways
    entries += [dev("c", 1, 3, "w")]
    assert decide(entries, "c", 1, 3, RW)
    # a narrower deny than an allowed wildcard would punch a hole: refused, as runc does
    with pytest.raises(RuntimeFailure, match=r"^device rule 2: cannot deny c 1:3 w: an earlier rule "
                                             r"allows c 1:\* rwm .*punch a hole"):  # fmt: skip
        emulate(rules([DENY_ALL, dev("c", 1, None, "rwm"), dev("c", 1, 3, "w", allow=False)]))
    # ... but a disjoint access is fine
    emulate(rules([DENY_ALL, dev("c", 1, None, "rw"), dev("c", 1, 3, "m", allow=False)]))


def test_a_wildcard_rule_resets() -> None:
    entries = [DENY_ALL, dev("c", 1, 3, "rwm"), ALLOW_ALL, dev("b", 8, None, "rw", allow=False)]
    p = emulate(rules(entries))
    assert p.default_allow and p.exceptions == {("b", 8, None): RW}
    assert decide(entries, "c", 4, 1, RW)
    assert not decide(entries, "b", 8, 16, R)
    assert decide(entries, "b", 8, 16, M)
    # a deny-all again forgets everything before it
    assert emulate(rules([*entries, DENY_ALL])).exceptions == {}
    assert not decide([*entries, DENY_ALL], "c", 1, 3, R)


def test_deny_exception_denies_any_overlap() -> None:
    """Default allow: a deny "w" rule stops an O_RDWR open, as v1's match_exception_partial
    (runc's program would let it through)."""
    entries = [ALLOW_ALL, dev("c", 1, 3, "w", allow=False)]
    assert decide(entries, "c", 1, 3, R)
    assert not decide(entries, "c", 1, 3, W)
    assert not decide(entries, "c", 1, 3, RW)
    assert decide(entries, "c", 1, 4, RW)


def test_type_a_with_numbers_means_char_and_block() -> None:
    entries = [DENY_ALL, dev("a", 7, None, "r")]
    assert emulate(rules(entries)).exceptions == {("c", 7, None): R, ("b", 7, None): R}
    assert decide(entries, "c", 7, 1, R) and decide(entries, "b", 7, 1, R)
    assert not decide(entries, "c", 8, 1, R)
    # "a" with only part of rwm is not a reset either
    assert emulate(rules([ALLOW_ALL, dev("a", None, None, "m", allow=False)])).exceptions == {
        ("c", None, None): M, ("b", None, None): M}  # fmt: skip


def test_large_numbers_compare_unsigned() -> None:
    """A jump's imm is sign-extended: numbers from 2^31 go through a register."""
    big = (1 << 32) - 2
    entries = [DENY_ALL, dev("c", big, 1, "r"), dev("c", 1, 1 << 31, "r")]
    assert decide(entries, "c", big, 1, R)
    assert not decide(entries, "c", big - 1, 1, R)
    assert decide(entries, "c", 1, 1 << 31, R)
    assert not decide(entries, "c", 1, 0, R)
    with pytest.raises(RuntimeFailure, match=r"^device rule 1: major 4294967296 is not a device number"):
        emulate(rules([DENY_ALL, dev("c", 1 << 32, 1, "r")]))


def test_where_names_the_rule() -> None:
    where = cgroups._device_where(2)
    bad = [DENY_ALL, dev("c", 1, None, "rwm"), dev("c", 1, 3, "r", allow=False)]
    with pytest.raises(RuntimeFailure, match=r"^default device rule: cannot deny"):
        emulate(rules(bad), where)
    with pytest.raises(RuntimeFailure, match=r"^linux\.resources\.devices\[1\]: major"):
        emulate(rules([DENY_ALL, dev("c", 1 << 40, 1, "r")]), where)


def test_programs_only_jump_forward_and_always_set_r0() -> None:
    """The verifier's rules, checked statically: forward jumps inside the program, and the
    interpreter (which refuses unset registers) reaches exit for every kind of request."""
    entries = [*with_default_devices([DENY_ALL]), dev("b", 8, None, "rw"),
               dev("c", (1 << 32) - 1, None, "m")]  # fmt: skip
    code = compile_rules(rules(entries))
    for t in (DEV_CHAR, DEV_BLOCK):
        for access in (R, W, M, RW):
            for major, minor in ((1, 3), (8, 0), (136, 0), ((1 << 32) - 1, 5), (0, 0)):
                assert run(code, t, access, major, minor) in (0, 1)


def test_check_resources_refuses_a_hole_on_v2(monkeypatch: pytest.MonkeyPatch) -> None:
    """The emulation runs in the version check, before any cgroup dir is made."""
    monkeypatch.setattr(cgroups, "_version", 2)
    with pytest.raises(RuntimeFailure, match=r"^linux\.resources\.devices\[2\]: cannot deny"):
        check_resources({"devices": [DENY_ALL, dev("c", 1, None, "rwm"),
                                     dev("c", 1, 3, "r", allow=False)]})  # fmt: skip
    assert check_resources({"devices": [DENY_ALL]}) == []  # no "not enforced" warning any more
    # v1 leaves such a list to the kernel (which ignores the hole silently)
    monkeypatch.setattr(cgroups, "_version", 1)
    monkeypatch.setattr(cgroups, "_v1_mounts", {"devices": "/x"})
    check_resources({"devices": [DENY_ALL, dev("c", 1, None, "rwm"),
                                 dev("c", 1, 3, "r", allow=False)]})  # fmt: skip


def test_verifier_line() -> None:
    log = "func#0 @0\n0: R1=ctx() R10=fp0\n0: (95) exit\nR0 !read_ok\nprocessed 1 insns (limit 1000000)\n"
    assert devices_bpf._verifier_line(log) == "R0 !read_ok"
    assert devices_bpf._verifier_line("") == "(no verifier log)"
