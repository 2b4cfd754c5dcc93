"""Docker-format seccomp profiles: the default profile's semantics, loading/validation of a
profile file, and resolution into the OCI ``linux.seccomp`` object for one container."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from minirun.container import seccomp_profile as sp
from minirun.errors import UsageError

DOCKER_CAPS = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
]  # fmt: skip
NEW_KERNEL = (6, 1)


def oci(caps: list[str] | None = None, arch: str = "x86_64", **kw: Any) -> dict[str, Any]:
    return sp.to_oci(sp.default_profile(), DOCKER_CAPS if caps is None else caps, arch, **kw)


def unconditional(o: dict[str, Any], action: str = "SCMP_ACT_ALLOW") -> set[str]:
    """Names a rule with ``action`` matches whatever the arguments."""
    return {
        n for r in o["syscalls"] if r["action"] == action and not r.get("args") for n in r["names"]
    }


def rules_for(o: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [r for r in o["syscalls"] if name in r["names"]]


# --- the default profile ---------------------------------------------------------------------


def test_default_profile_shape() -> None:
    p = sp.default_profile()
    assert p["defaultAction"] == "SCMP_ACT_ERRNO" and p["defaultErrnoRet"] == 1
    x86 = next(e for e in p["archMap"] if e["architecture"] == "SCMP_ARCH_X86_64")
    assert x86["subArchitectures"] == ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    # a fresh copy every time: callers may edit theirs
    p["syscalls"].clear()
    assert sp.default_profile()["syscalls"]


def test_default_profile_is_a_valid_profile_file(tmp_path: Path) -> None:
    path = tmp_path / "default.json"
    path.write_text(json.dumps(sp.default_profile()))
    assert sp.load_profile(str(path)) == sp.default_profile()


def test_default_container_gets_the_usual_allowlist_and_no_dangerous_call() -> None:
    o = oci(kernel=NEW_KERNEL)
    assert o["defaultAction"] == "SCMP_ACT_ERRNO" and o["defaultErrnoRet"] == 1
    assert o["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    allowed = unconditional(o)
    for name in ("read", "write", "openat", "execve", "getpid", "uname", "mmap", "futex",
                 "rt_sigaction", "setuid", "capset", "prctl", "arch_prctl", "chroot",
                 "ptrace", "wait4", "pipe2", "epoll_wait", "name_to_handle_at"):  # fmt: skip
        assert name in allowed, name
    for name in ("kexec_load", "kexec_file_load", "init_module", "finit_module",
                 "delete_module", "reboot", "keyctl", "add_key", "request_key", "mount",
                 "umount2", "pivot_root", "unshare", "clone", "clone3", "setns", "bpf",
                 "perf_event_open", "open_by_handle_at", "acct", "settimeofday",
                 "clock_settime", "swapon", "syslog", "io_uring_setup", "socket",
                 "personality", "iopl", "vhangup", "userfaultfd"):  # fmt: skip
        assert name not in allowed, name
    # Docker's arch-specific calls for other hosts stay out
    assert "cacheflush" not in allowed and "s390_runtime_instr" not in allowed


def test_clone_and_unshare_are_allowed_only_without_namespace_flags() -> None:
    o = oci()
    (clone,) = rules_for(o, "clone")
    assert clone["action"] == "SCMP_ACT_ALLOW"
    assert clone["args"] == [
        {"index": 0, "value": 0x7E020000, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}
    ]
    (unshare,) = rules_for(o, "unshare")
    assert unshare["args"][0]["op"] == "SCMP_CMP_MASKED_EQ"
    mask = unshare["args"][0]["value"]
    for flag in (0x10000000, 0x00020000, 0x40000000, 0x20000000, 0x80):  # USER NS NET PID TIME
        assert mask & flag
    assert not mask & 0x200  # CLONE_FS stays allowed
    (clone3,) = rules_for(o, "clone3")
    assert clone3 == {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}


def test_cap_sys_admin_unlocks_mounts_and_namespaces() -> None:
    o = oci([*DOCKER_CAPS, "CAP_SYS_ADMIN"])
    allowed = unconditional(o)
    for name in ("mount", "umount2", "unshare", "clone", "clone3", "setns", "sethostname",
                 "bpf", "perf_event_open", "fsopen", "open_tree"):  # fmt: skip
        assert name in allowed, name
    # the argument-limited and ENOSYS rules are gone: they would only narrow it again
    assert all(not r.get("args") for r in rules_for(o, "clone") + rules_for(o, "unshare"))
    assert all(r["action"] == "SCMP_ACT_ALLOW" for r in rules_for(o, "clone3"))
    # some calls are never allowed, whatever the capabilities
    for name in ("kexec_load", "keyctl", "add_key", "request_key", "pivot_root"):
        assert not rules_for(o, name), name


@pytest.mark.parametrize(
    "cap, names",
    [
        ("CAP_SYS_BOOT", ["reboot"]),
        ("CAP_SYS_MODULE", ["init_module", "finit_module", "delete_module"]),
        ("CAP_SYS_PACCT", ["acct"]),
        ("CAP_SYS_TIME", ["settimeofday", "clock_settime", "clock_settime64"]),
        ("CAP_DAC_READ_SEARCH", ["open_by_handle_at"]),
        ("CAP_SYS_PTRACE", ["kcmp", "pidfd_getfd", "process_madvise"]),
        ("CAP_SYS_RAWIO", ["iopl", "ioperm"]),
        ("CAP_SYS_NICE", ["mbind", "set_mempolicy"]),
        ("CAP_SYSLOG", ["syslog"]),
        ("CAP_BPF", ["bpf"]),
        ("CAP_PERFMON", ["perf_event_open"]),
        ("CAP_SYS_TTY_CONFIG", ["vhangup"]),
    ],
)
def test_capability_gated_calls(cap: str, names: list[str]) -> None:
    without = unconditional(oci())
    with_cap = unconditional(oci([*DOCKER_CAPS, cap]))
    for name in names:
        assert name not in without and name in with_cap, name


def test_cap_names_may_omit_the_prefix_and_case() -> None:
    assert unconditional(oci(["sys_admin"])) == unconditional(oci(["CAP_SYS_ADMIN"]))


def test_ptrace_needs_kernel_4_8() -> None:
    assert "ptrace" in unconditional(oci(kernel=(4, 8)))
    assert "process_vm_readv" in unconditional(oci(kernel=(5, 10)))
    assert "ptrace" not in unconditional(oci(kernel=(4, 4)))
    assert "ptrace" in unconditional(oci([*DOCKER_CAPS, "CAP_SYS_PTRACE"], kernel=(4, 4)))


def test_personality_and_socket_argument_rules() -> None:
    o = oci()
    values = sorted(r["args"][0]["value"] for r in rules_for(o, "personality"))
    assert values == [0, 8, 0x20000, 0x20008, 0xFFFFFFFF]
    (sock,) = rules_for(o, "socket")
    assert sock["args"] == [{"index": 0, "value": 40, "valueTwo": 0, "op": "SCMP_CMP_NE"}]


@pytest.mark.parametrize(
    "machine, arches, present, absent",
    [
        ("x86_64", ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
         ["arch_prctl", "modify_ldt"], ["set_tls"]),
        ("amd64", ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"], ["arch_prctl"], []),
        ("aarch64", ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"], ["set_tls", "cacheflush"],
         ["arch_prctl", "modify_ldt"]),
        ("riscv64", ["SCMP_ARCH_RISCV64"], ["riscv_flush_icache"], ["arch_prctl"]),
    ],
)  # fmt: skip
def test_archmap_picks_the_host_and_its_compat_arches(
    machine: str, arches: list[str], present: list[str], absent: list[str]
) -> None:
    o = oci(arch=machine)
    assert o["architectures"] == arches
    allowed = unconditional(o)
    assert all(n in allowed for n in present) and not any(n in allowed for n in absent)


def test_s390_clone_flags_are_the_second_argument() -> None:
    (clone,) = rules_for(oci(arch="s390x"), "clone")
    assert clone["args"][0]["index"] == 1


def test_unknown_host_arch_gets_no_architectures() -> None:
    assert "architectures" not in oci(arch="sparc64")


def test_to_oci_keeps_flags_errno_and_explicit_architectures() -> None:
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64"],
        "flags": ["SECCOMP_FILTER_FLAG_LOG"],
        "syscalls": [
            {"names": ["uname"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38, "comment": "x"},
            {"names": ["reboot"], "action": "SCMP_ACT_KILL", "excludes": {"arches": ["amd64"]}},
        ],
    }
    assert sp.to_oci(profile, [], "x86_64") == {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64"],
        "flags": ["SECCOMP_FILTER_FLAG_LOG"],
        "syscalls": [{"names": ["uname"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}],
    }


def test_includes_caps_needs_all_excludes_caps_any() -> None:
    profile = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [
            {"names": ["a"], "action": "SCMP_ACT_ALLOW",
             "includes": {"caps": ["CAP_SYS_ADMIN", "CAP_NET_ADMIN"]}},
            {"names": ["b"], "action": "SCMP_ACT_ALLOW",
             "excludes": {"caps": ["CAP_SYS_ADMIN", "CAP_NET_ADMIN"]}},
        ],
    }  # fmt: skip
    names = lambda caps: unconditional(sp.to_oci(profile, caps, "x86_64"))  # noqa: E731
    assert names([]) == {"b"}
    assert names(["CAP_SYS_ADMIN"]) == set()
    assert names(["CAP_SYS_ADMIN", "CAP_NET_ADMIN"]) == {"a"}


def test_kernel_release_parsing() -> None:
    assert sp._parse_release("6.18.44-fc-v857") == (6, 18)
    assert sp._parse_release("4.8") == (4, 8)
    assert sp._parse_release("5.15.0-rc3+") == (5, 15)
    assert sp.host_kernel() >= (3, 0)


# --- choosing the profile --------------------------------------------------------------------


def test_oci_for(tmp_path: Path) -> None:
    assert sp.oci_for(None, DOCKER_CAPS, privileged=True) is None
    assert sp.oci_for("unconfined", DOCKER_CAPS) is None
    assert sp.oci_for(None, DOCKER_CAPS, arch="x86_64") == oci()
    path = tmp_path / "p.json"
    path.write_text('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": []}')
    assert sp.oci_for(str(path), []) == {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": []}


# --- loading and validating ------------------------------------------------------------------


def write(tmp_path: Path, data: Any) -> str:
    path = tmp_path / "profile.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


def test_load_profile_normalises_name_to_names(tmp_path: Path) -> None:
    p = sp.load_profile(
        write(
            tmp_path,
            {
                "defaultAction": "SCMP_ACT_ERRNO",
                "defaultErrnoRet": 1,
                "unknownKey": True,
                "syscalls": [
                    {"name": "getpid", "action": "SCMP_ACT_ALLOW"},
                    {
                        "names": ["personality"],
                        "action": "SCMP_ACT_ALLOW",
                        "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}],
                        "includes": {"caps": ["sys_admin"], "minKernel": "4.8"},
                    },
                ],
            },  # fmt: skip
        )
    )
    assert p["syscalls"][0] == {"names": ["getpid"], "action": "SCMP_ACT_ALLOW"}
    assert p["syscalls"][1]["args"] == [
        {"index": 0, "value": 8, "valueTwo": 0, "op": "SCMP_CMP_EQ"}
    ]
    assert p["syscalls"][1]["includes"] == {"caps": ["CAP_SYS_ADMIN"], "minKernel": "4.8"}
    assert "unknownKey" not in p


OK_RULE = {"names": ["getpid"], "action": "SCMP_ACT_ALLOW"}


@pytest.mark.parametrize(
    "profile, field",
    [
        ([], "must be a JSON object"),
        ({"syscalls": []}, "defaultAction: is required"),
        ({"defaultAction": "SCMP_ACT_MAYBE"}, "defaultAction: unknown action"),
        ({"defaultAction": "SCMP_ACT_NOTIFY"}, "defaultAction: SCMP_ACT_NOTIFY"),
        ({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": -1}, "defaultErrnoRet"),
        ({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": "1"}, "defaultErrnoRet"),
        ({"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["x86_64"]},
         "architectures[0]: unknown architecture"),
        ({"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86"],
          "archMap": [{"architecture": "SCMP_ARCH_X86"}]}, "archMap: use either"),
        ({"defaultAction": "SCMP_ACT_ERRNO",
          "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["i386"]}]},
         "archMap[0].subArchitectures[0]"),
        ({"defaultAction": "SCMP_ACT_ERRNO", "flags": ["SECCOMP_FILTER_FLAG_NEW_LISTENER"]},
         "flags[0]"),
        ({"defaultAction": "SCMP_ACT_ERRNO", "listenerPath": "/run/agent.sock"},
         "listenerPath"),
        ({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": {}}, "syscalls: must be a list"),
        ({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [OK_RULE, "getpid"]}, "syscalls[1]:"),
        ({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"action": "SCMP_ACT_ALLOW"}]},
         "syscalls[0].names: must list at least one"),
        ({"defaultAction": "SCMP_ACT_ERRNO",
          "syscalls": [{"name": "a", "names": ["b"], "action": "SCMP_ACT_ALLOW"}]},
         "syscalls[0]: use either 'name' or 'names'"),
        ({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["getpid"]}]},
         "syscalls[0].action: is required"),
        ({"defaultAction": "SCMP_ACT_ERRNO",
          "syscalls": [{"names": ["getpid", 3], "action": "SCMP_ACT_ALLOW"}]},
         "syscalls[0].names[1]: must be a string"),
        ({"defaultAction": "SCMP_ACT_ERRNO",
          "syscalls": [{**OK_RULE, "errnoRet": 70000}]}, "syscalls[0].errnoRet"),
        ({"defaultAction": "SCMP_ACT_ERRNO",
          "syscalls": [{**OK_RULE, "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]},
         "syscalls[0].args[0].index"),
        ({"defaultAction": "SCMP_ACT_ERRNO",
          "syscalls": [{**OK_RULE, "args": [{"index": 0, "value": 1, "op": "EQ"}]}]},
         "syscalls[0].args[0].op: unknown operator"),
        ({"defaultAction": "SCMP_ACT_ERRNO",
          "syscalls": [{**OK_RULE, "args": [{"index": 0, "value": -1, "op": "SCMP_CMP_EQ"}]}]},
         "syscalls[0].args[0].value"),
        ({"defaultAction": "SCMP_ACT_ERRNO",
          "syscalls": [{**OK_RULE, "args": [{"index": 0, "op": "SCMP_CMP_EQ"}] * 7}]},
         "syscalls[0].args: a syscall has at most 6"),
        ({"defaultAction": "SCMP_ACT_ERRNO",
          "syscalls": [{**OK_RULE, "includes": {"minKernel": "4"}}]},
         "syscalls[0].includes.minKernel"),
        ({"defaultAction": "SCMP_ACT_ERRNO",
          "syscalls": [{**OK_RULE, "includes": {"minKernel": "\u00b2.1"}}]},  # '²'.isdigit()
         "syscalls[0].includes.minKernel"),
        ({"defaultAction": "SCMP_ACT_ERRNO",
          "syscalls": [{**OK_RULE, "excludes": {"minKernel": "4." + "1" * 5000}}]},
         "syscalls[0].excludes.minKernel"),
        ({"defaultAction": []}, "defaultAction: unknown action"),
        ({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": {}}]},
         "syscalls[0].action: unknown action"),
        ({"defaultAction": "SCMP_ACT_ERRNO", "architectures": [["SCMP_ARCH_X86"]]},
         "architectures[0]: unknown architecture"),
        ({"defaultAction": "SCMP_ACT_ERRNO",
          "archMap": [{"architecture": {}, "subArchitectures": []}]},
         "archMap[0].architecture: unknown architecture"),
        ({"defaultAction": "SCMP_ACT_ERRNO",
          "syscalls": [{**OK_RULE, "args": [{"index": 0, "value": 1, "op": []}]}]},
         "syscalls[0].args[0].op: unknown operator"),
        ({"defaultAction": "SCMP_ACT_ERRNO",
          "syscalls": [{**OK_RULE, "excludes": {"caps": ["CAP_SYS ADMIN"]}}]},
         "syscalls[0].excludes.caps[0]"),
        ({"defaultAction": "SCMP_ACT_ERRNO",
          "syscalls": [{**OK_RULE, "includes": {"arches": "amd64"}}]},
         "syscalls[0].includes.arches: must be a list"),
    ],
)  # fmt: skip
def test_load_profile_names_the_bad_field(tmp_path: Path, profile: Any, field: str) -> None:
    path = write(tmp_path, profile)
    with pytest.raises(UsageError) as info:
        sp.load_profile(path)
    assert field in str(info.value)
    assert path in str(info.value)


def test_load_profile_bad_json_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not valid JSON"):
        sp.load_profile(write(tmp_path, "{nope"))
    with pytest.raises(UsageError, match="opening seccomp profile .*No such file"):
        sp.load_profile(str(tmp_path / "missing.json"))


def test_parse_release_takes_ascii_digits_only() -> None:
    assert sp._parse_release("6.18.44-foo") == (6, 18)
    assert sp._parse_release("\u00b2.1") == (0, 1)  # '²'.isdigit() is true; int() refuses it
    assert sp._parse_release("5") == (5, 0)
