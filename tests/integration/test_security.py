"""Confinement of real containers, seen from inside by a static probe that makes the
syscalls itself (as crun's functional tests do): Docker's default seccomp profile,
unconfined, a custom profile, --privileged, capabilities and non-root users."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from minirun.image import build as b
from tests.conftest import store_cli

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: real containers")

REPO = Path(__file__).resolve().parents[2]
MINIRUN = str(Path(sys.executable).parent / "minirun")
PROBE_SRC = REPO / "tests" / "probe" / "syscalls.c"
Cli = Callable[..., subprocess.CompletedProcess[str]]

DENIED_BY_DEFAULT = ("unshare_newuser", "unshare_newns", "mount", "keyctl", "add_key", "kexec_load",
                     "init_module", "reboot")


def _env(store: Path) -> dict[str, str]:
    return {**os.environ, "MINIRUN_ROOT": str(store)}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A store with `probe`: busybox plus the statically built syscall probe at /probe."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("needs gcc")
    tmp = tmp_path_factory.mktemp("probe")
    exe = tmp / "syscalls"
    r = subprocess.run([gcc, "-static", "-O2", "-o", str(exe), str(PROBE_SRC)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot build the static probe: {r.stderr[-300:]}")
    sys.path.insert(0, str(REPO))
    from images.build import busybox_layer, find_busybox

    layers = [busybox_layer(find_busybox()),
              b.Layer(b.layer_tar([b.file("probe", exe.read_bytes(), 0o755)]), "COPY probe /probe")]
    b.write_oci_layout(tmp / "layout", [b.image("probe:latest", layers, {"Env": ["PATH=/bin"], "Cmd": ["/probe"]})])
    store = tmp_path_factory.mktemp("store")
    subprocess.run([MINIRUN, "load", "-q", "-i", str(tmp / "layout")], check=True, env=_env(store))
    yield store


@pytest.fixture
def cli(root: Path) -> Cli:
    return store_cli(_env(root))


def probe(cli: Cli, *opts: str, calls: tuple[str, ...] = DENIED_BY_DEFAULT) -> dict[str, str]:
    r = cli("run", "--rm", "--network", "none", *opts, "probe", "/probe", *calls)
    assert r.returncode == 0, r.stderr
    return dict(line.split("=", 1) for line in r.stdout.split())


def test_default_profile_denies_the_dangerous_syscalls(cli: Cli) -> None:
    got = probe(cli, calls=(*DENIED_BY_DEFAULT, "getpid", "uname"))
    assert {k: got[k] for k in DENIED_BY_DEFAULT} == dict.fromkeys(DENIED_BY_DEFAULT, "EPERM")
    assert got["getpid"] == "OK" and got["uname"] == "OK"
    status = cli("run", "--rm", "--network", "none", "probe", "grep", "Seccomp:", "/proc/self/status").stdout
    assert status.split() == ["Seccomp:", "2"]


def test_unconfined_lifts_the_filter(cli: Cli) -> None:
    got = probe(cli, "--security-opt", "seccomp=unconfined", calls=("keyctl", "unshare_newuser"))
    # No filter: the kernel itself answers (capabilities still limit what succeeds).
    assert got["keyctl"] != "EPERM" or got["unshare_newuser"] != "EPERM"
    status = cli("run", "--rm", "--network", "none", "--security-opt", "seccomp=unconfined", "probe",
                 "grep", "Seccomp:", "/proc/self/status").stdout
    assert status.split() == ["Seccomp:", "0"]


def test_custom_profile_applies(cli: Cli, tmp_path: Path) -> None:
    profile = {"defaultAction": "SCMP_ACT_ALLOW",
               "syscalls": [{"names": ["uname"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}]}
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(profile))
    got = probe(cli, "--security-opt", f"seccomp={path}", calls=("uname", "getpid"))
    assert got == {"uname": "ENOSYS", "getpid": "OK"}
    path.write_text("{not json")
    r = cli("run", "--rm", "--security-opt", f"seccomp={path}", "probe", "true")
    assert r.returncode == 125 and "Traceback" not in r.stderr and str(path) in r.stderr


def test_cap_sys_admin_opens_what_the_profile_gates(cli: Cli) -> None:
    got = probe(cli, "--cap-add", "SYS_ADMIN", calls=("unshare_newns", "keyctl"))
    assert got["unshare_newns"] == "OK"  # allowed with CAP_SYS_ADMIN, as in Docker
    assert got["keyctl"] == "EPERM"  # never allowed


def test_privileged(cli: Cli) -> None:
    r = cli("run", "--rm", "--network", "none", "--privileged", "probe", "sh", "-c",
            "grep -E 'Seccomp:|CapEff' /proc/self/status; cat /proc/keys >/dev/null && echo unmasked; "
            "ls /dev | wc -l")
    lines = r.stdout.split("\n")
    with open("/proc/self/status") as f:
        host_bnd = next(line.split()[1] for line in f if line.startswith("CapBnd"))
    assert f"CapEff:\t{host_bnd}" in lines and "Seccomp:\t0" in lines
    assert "unmasked" in lines
    assert int(lines[-2]) > 20  # the host's devices


def test_cap_add_all_and_drop_all(cli: Cli) -> None:
    def capeff(*opts: str) -> str:
        return cli("run", "--rm", "--network", "none", *opts, "probe", "grep", "CapEff", "/proc/self/status").stdout.split()[1]

    with open("/proc/self/status") as f:
        host_bnd = next(line.split()[1] for line in f if line.startswith("CapBnd"))
    assert capeff("--cap-add", "ALL") == host_bnd
    assert capeff("--cap-drop", "ALL") == "0000000000000000"


def test_non_root_user_has_no_caps_and_no_host_groups(cli: Cli) -> None:
    r = cli("run", "--rm", "--network", "none", "-u", "65534:65534", "probe", "sh", "-c",
            "grep -E 'CapEff|CapPrm|Groups' /proc/self/status")
    fields = dict(line.split(":", 1) for line in r.stdout.splitlines())
    assert fields["CapEff"].strip() == fields["CapPrm"].strip() == "0000000000000000"
    assert fields["Groups"].strip() == ""  # setgroups cleared the host's supplementary groups


def test_no_new_privileges_with_seccomp(cli: Cli) -> None:
    """With no_new_privs the filter is loaded last; the container still runs and is filtered."""
    got = probe(cli, "--security-opt", "no-new-privileges", calls=("keyctl", "getpid"))
    assert got == {"keyctl": "EPERM", "getpid": "OK"}


def test_exec_runs_under_the_containers_seccomp_profile(cli: Cli) -> None:
    r = cli("run", "-d", "--name", "sx", "--network", "none", "probe", "sleep", "30")
    assert r.returncode == 0, r.stderr
    try:
        out = cli("exec", "sx", "/probe", "keyctl", "getpid").stdout
        assert dict(line.split("=", 1) for line in out.split()) == {"keyctl": "EPERM", "getpid": "OK"}
        assert cli("exec", "sx", "grep", "Seccomp:", "/proc/self/status").stdout.split() == ["Seccomp:", "2"]
    finally:
        cli("rm", "-f", "sx")
