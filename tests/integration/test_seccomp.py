"""Seccomp filters in a real kernel: compile in this (parent) process, fork, load the filter
in the child, exec the static C probe (tests/probe/syscalls.c) and read what each syscall
returned — on the host, no container needed, exactly the parent/child split minirun uses.

The probe runs as root with every capability, so an EPERM it reports for a call that the
unfiltered baseline does not fail with EPERM is the filter's doing."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from minirun.container import seccomp_profile as sp
from minirun.errors import RuntimeFailure
from minirun.runtime import linux, seccomp

PROBE_SRC = Path(__file__).resolve().parent.parent / "probe" / "syscalls.c"

DOCKER_CAPS = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
]  # fmt: skip

AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_I386 = 0x40000003


@pytest.fixture(scope="session")
def probe(tmp_path_factory: pytest.TempPathFactory) -> str:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("needs gcc")
    out = tmp_path_factory.mktemp("probe") / "syscalls"
    res = subprocess.run(
        [gcc, "-static", "-O2", "-o", str(out), str(PROBE_SRC)], capture_output=True, text=True
    )
    if res.returncode != 0:
        pytest.skip(f"cannot build the static probe (libc6-dev's libc.a?): {res.stderr[-300:]}")
    return str(out)


def run_probe(
    probe: str,
    flt: seccomp.Filter | None,
    *names: str,
    nnp: bool = False,
    uid: int | None = None,
) -> dict[str, str]:
    """Fork; in the child: [setresuid] → [no_new_privs] → load → exec the probe."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.dup2(w, 1)
            if uid is not None:
                os.setresuid(uid, uid, uid)  # drops every capability (no keepcaps)
            if nnp:
                linux.prctl(linux.PR_SET_NO_NEW_PRIVS, 1)
            if flt is not None:
                seccomp.load(flt)
            os.execv(probe, [probe, *names])
        except BaseException as e:
            os.write(1, f"LOADERR={e}\n".encode())
        os._exit(3)
    os.close(w)
    out = b""
    while chunk := os.read(r, 65536):
        out += chunk
    os.close(r)
    os.waitpid(pid, 0)
    result = {}
    for line in out.decode().splitlines():
        key, _, value = line.partition("=")
        result[key] = value
    return result


def compiled(profile: dict[str, Any], caps: list[str] | None = None) -> seccomp.Filter:
    return seccomp.compile_filter(sp.to_oci(profile, DOCKER_CAPS if caps is None else caps))


def x86_64_only() -> None:
    if os.uname().machine != "x86_64":
        pytest.skip("expectations written for x86_64")


# --- the default profile, through the kernel -------------------------------------------------

pytestmark = pytest.mark.root


def test_available() -> None:
    assert seccomp.available()


def test_unfiltered_baseline(probe: str) -> None:
    """Without a filter none of the calls below fails with EPERM (as root): any EPERM in
    the other tests comes from the filter."""
    got = run_probe(probe, None)
    assert got["getpid"] == "OK" and got["uname"] == "OK"
    for name in ("mount", "umount2", "pivot_root", "chroot"):
        assert got[name] == "ENOENT", name
    assert got["keyctl"] == "OK" and got["add_key"] == "ENODEV"
    assert got["reboot"] == "EINVAL" and got["clock_settime"] == "EINVAL"
    assert got["unshare_newuser"] == "OK" and got["unshare_newns"] == "OK"
    assert got["clone_newuser"] == "OK" and got["clone3"] == "EINVAL"
    assert got["personality_bad"] == "OK"
    # kexec and modules may be EPERM without a filter too (kexec_load_disabled,
    # modules_disabled sysctls); for them the default-profile test shows the filter's EPERM
    # only where the kernel would say ENOSYS/EINVAL/EFAULT.
    sysctl_gated = {"kexec_load", "init_module", "finit_module", "delete_module"}
    assert "EPERM" not in {v for k, v in got.items() if k not in sysctl_gated}


def test_default_profile_with_docker_caps(probe: str) -> None:
    got = run_probe(probe, compiled(sp.default_profile()))
    allowed = {
        "getpid": "OK", "uname": "OK", "unshare_fs": "OK", "personality_query": "OK",
        "socket_unix": "OK",
        "chroot": "ENOENT",  # CAP_SYS_CHROOT is one of Docker's default caps
        "ptrace": "ESRCH",  # allowed on kernels >= 4.8; the kernel says "not your tracee"
        "clone3": "ENOSYS",  # so that libc falls back to clone(), which the filter can read
    }  # fmt: skip
    denied = (
        "unshare_newuser", "unshare_newns", "clone_newuser", "mount", "umount2", "pivot_root",
        "keyctl", "add_key", "request_key", "kexec_load", "init_module", "finit_module",
        "delete_module", "reboot", "personality_bad", "bpf", "perf_event_open",
        "open_by_handle_at", "clock_settime", "socket_vsock", "io_uring_setup",
    )  # fmt: skip
    assert {k: got.get(k) for k in allowed} == allowed
    assert {k: got.get(k) for k in denied} == dict.fromkeys(denied, "EPERM")


def test_cap_sys_admin_lets_namespaces_and_mounts_through(probe: str) -> None:
    got = run_probe(probe, compiled(sp.default_profile(), [*DOCKER_CAPS, "CAP_SYS_ADMIN"]))
    assert got["unshare_newuser"] == "OK" and got["unshare_newns"] == "OK"
    assert got["clone_newuser"] == "OK"
    assert got["clone3"] == "EINVAL"  # allowed: the kernel rejects the NULL args
    assert got["mount"] == "ENOENT" and got["umount2"] == "ENOENT"
    assert got["bpf"] == "EINVAL" and got["perf_event_open"] == "EFAULT"
    # never allowed, whatever the caps
    for name in ("keyctl", "add_key", "kexec_load", "pivot_root", "reboot", "finit_module"):
        assert got[name] == "EPERM", name


@pytest.mark.parametrize(
    "cap, probe_name, allowed_result",
    [
        ("CAP_SYS_BOOT", "reboot", "EINVAL"),
        ("CAP_SYS_TIME", "clock_settime", "EINVAL"),
        ("CAP_BPF", "bpf", "EINVAL"),
        ("CAP_PERFMON", "perf_event_open", "EFAULT"),
        ("CAP_DAC_READ_SEARCH", "open_by_handle_at", "EFAULT"),
    ],
)
def test_capability_gated_calls(probe: str, cap: str, probe_name: str, allowed_result: str) -> None:
    profile = sp.default_profile()
    assert run_probe(probe, compiled(profile), probe_name)[probe_name] == "EPERM"
    got = run_probe(probe, compiled(profile, [*DOCKER_CAPS, cap]), probe_name)
    assert got[probe_name] == allowed_result


def test_filter_covers_the_compat_arches() -> None:
    """x86_64 → x86 and x32 too, as Docker does: a 32-bit binary is filtered as well
    (and an arch absent from the filter is killed, libseccomp's default)."""
    x86_64_only()
    flt = compiled(sp.default_profile())
    constants = {struct.unpack_from("<HBBI", flt.bpf, off)[3] for off in range(0, len(flt.bpf), 8)}
    assert AUDIT_ARCH_X86_64 in constants and AUDIT_ARCH_I386 in constants
    assert len(flt) > 100


# --- custom profiles -------------------------------------------------------------------------


def write_profile(tmp_path: Path, profile: dict[str, Any]) -> str:
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(profile))
    return str(path)


def test_custom_profile_deny_uname_with_enosys(probe: str, tmp_path: Path) -> None:
    path = write_profile(
        tmp_path,
        {
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["uname"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}],
        },
    )
    got = run_probe(probe, compiled(sp.load_profile(path)))
    assert got["uname"] == "ENOSYS"
    # everything else is the kernel's answer
    assert got["getpid"] == "OK" and got["mount"] == "ENOENT" and got["keyctl"] == "OK"


def test_custom_errno_rule_defaults_to_eperm_and_arguments_match(
    probe: str, tmp_path: Path
) -> None:
    path = write_profile(
        tmp_path,
        {
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
                {"names": ["getpid", "chroot"], "action": "SCMP_ACT_ERRNO"},
                # socket(AF_UNIX=1, ...) only: masked compare on the domain argument
                {
                    "names": ["socket"],
                    "action": "SCMP_ACT_ERRNO",
                    "errnoRet": 13,
                    "args": [
                        {"index": 0, "value": 0xFF, "valueTwo": 1, "op": "SCMP_CMP_MASKED_EQ"}
                    ],
                },
            ],
        },  # fmt: skip
    )
    got = run_probe(probe, compiled(sp.load_profile(path)))
    assert got["getpid"] == "EPERM" and got["chroot"] == "EPERM"
    assert got["socket_unix"] == "EACCES" and got["socket_vsock"] != "EACCES"


def test_kill_action_kills_the_process(probe: str) -> None:
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["uname"], "action": "SCMP_ACT_KILL_PROCESS"}],
    }
    got = run_probe(probe, compiled(profile), "uname", "getpid")
    assert got == {"uname": "SIG31", "getpid": "OK"}  # SIGSYS


def test_errno_default_with_allowlist(probe: str) -> None:
    """A minimal allowlist profile: what the probe itself needs, nothing else."""
    needed = ["execve", "brk", "arch_prctl", "set_tid_address", "set_robust_list", "rseq",
              "prlimit64", "mprotect", "readlink", "uname", "getrandom", "newfstatat",
              "fstat", "write", "exit_group", "exit", "wait4", "clone", "fork",
              "rt_sigprocmask", "getpid", "mmap", "munmap"]  # fmt: skip
    profile = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,
        "syscalls": [{"names": needed, "action": "SCMP_ACT_ALLOW"}],
    }
    got = run_probe(probe, compiled(profile), "getpid", "mount", "socket_unix")
    assert got == {"getpid": "OK", "mount": "EPERM", "socket_unix": "EPERM"}


def test_flags_load_through_seccomp_syscall(probe: str) -> None:
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "flags": ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"],
        "syscalls": [{"names": ["uname"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}],
    }
    flt = compiled(profile)
    assert flt.flags == 2 | 4
    assert run_probe(probe, flt, "uname", "getpid") == {"uname": "ENOSYS", "getpid": "OK"}


# --- load order: why the lead loads before the capability drop, or after no_new_privs -------


def test_load_without_nnp_needs_cap_sys_admin(probe: str) -> None:
    # the probe where uid 65534 may execute it (pytest's tmp dirs are 0700)
    shared = tempfile.mkdtemp(prefix="minirun-probe-")
    try:
        os.chmod(shared, 0o755)
        probe = shutil.copy(probe, shared)
        _load_as_nobody(probe)
    finally:
        shutil.rmtree(shared)


def _load_as_nobody(probe: str) -> None:
    flt = compiled(sp.default_profile())
    got = run_probe(probe, flt, "getpid", uid=65534)
    assert "no_new_privs nor CAP_SYS_ADMIN" in got.get("LOADERR", ""), got
    got = run_probe(probe, flt, "getpid", "mount", uid=65534, nnp=True)
    assert got == {"getpid": "OK", "mount": "EPERM"}


# --- compilation: unknown names, errors, the cache -------------------------------------------


def test_unknown_names_are_skipped_and_new_ones_allowed_by_number() -> None:
    x86_64_only()
    profile = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
        "syscalls": [{"names": ["getpid", "mseal", "no_such_syscall"], "action": "SCMP_ACT_ALLOW"}],
    }
    flt = seccomp.compile_filter(profile)
    assert "no_such_syscall" in flt.skipped
    assert "mseal" not in flt.skipped  # known to libseccomp, or added as number 462


def test_same_action_as_default_is_ignored() -> None:
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["getpid"], "action": "SCMP_ACT_ALLOW"}],
    }
    assert len(seccomp.compile_filter(profile)) > 0


@pytest.mark.parametrize(
    "oci, field",
    [
        ({"defaultAction": "SCMP_ACT_NOTIFY"}, "linux.seccomp.defaultAction"),
        ({"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_VAX"]},
         "linux.seccomp.architectures[0]"),
        ({"defaultAction": "SCMP_ACT_ERRNO", "flags": ["BOGUS"]}, "linux.seccomp.flags[0]"),
        ({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": [], "action": "x"}]},
         "linux.seccomp.syscalls[0].names"),
        ({"defaultAction": "SCMP_ACT_ERRNO",
          "syscalls": [{"names": ["getpid"], "action": "SCMP_ACT_ALLOW",
                        "args": [{"index": 9, "op": "SCMP_CMP_EQ", "value": 1}]}]},
         "linux.seccomp.syscalls[0].args[0].index"),
    ],
)  # fmt: skip
def test_malformed_oci_object(oci: dict[str, Any], field: str) -> None:
    with pytest.raises(RuntimeFailure, match=field.replace("[", r"\[").replace("]", r"\]")):
        seccomp.compile_filter(oci)


def test_first_of_two_conflicting_rules_wins(probe: str) -> None:
    """libseccomp keeps the first rule for the same syscall and arguments (runc too)."""
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": ["uname"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
            {"names": ["uname"], "action": "SCMP_ACT_KILL_PROCESS"},
        ],
    }
    assert run_probe(probe, seccomp.compile_filter(profile), "uname") == {"uname": "ENOSYS"}


def test_cache_hit_needs_no_binding(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    oci = sp.to_oci(sp.default_profile(), DOCKER_CAPS)
    first = seccomp.compile_filter(oci, cache_dir=str(cache))
    (entry,) = cache.iterdir()
    assert entry.read_bytes() == first.bpf and entry.stat().st_mode & 0o777 == 0o600
    # a fresh interpreter: the hit must not import pyseccomp (its import is ~16 ms)
    code = (
        "import json, sys; from minirun.runtime import seccomp; "
        f"f = seccomp.compile_filter(json.loads({json.dumps(json.dumps(oci))}), "
        f"cache_dir={str(cache)!r}); "
        "print(len(f), 'pyseccomp' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == [str(len(first)), "False"]
    # a damaged entry is recompiled and rewritten, not loaded
    entry.write_bytes(b"\x01\x02\x03")
    again = seccomp.compile_filter(oci, cache_dir=str(cache))
    assert again.bpf == first.bpf and entry.read_bytes() == first.bpf
    # other capabilities, other program, other entry
    seccomp.compile_filter(sp.to_oci(sp.default_profile(), ["CAP_SYS_ADMIN"]), cache_dir=str(cache))
    assert len(list(cache.iterdir())) == 2
