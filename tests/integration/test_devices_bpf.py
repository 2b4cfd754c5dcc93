"""minirun.runtime.devices_bpf against the real kernel: the BPF_CGROUP_DEVICE program a rule
list compiles to, attached to a cgroup2 dir, decides a real process's open(2) and mknod(2);
an update replaces it (one program of ours, others' untouched); the verifier's and the
kernel's refusals are one-line errors; and the ``Cgroup`` class and a real container
(through ``minirun.runtime.run``) get their device rules enforced on cgroup v2.

Runs where a cgroup2 hierarchy is mounted: /sys/fs/cgroup on a pure v2 host, the hybrid's
controller-less /sys/fs/cgroup/unified otherwise (eBPF device programs work there too).
Every dir is made through the ``cgdir`` fixture, which kills the probe processes, removes
the dirs and checks that nothing of them remains.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from minirun.container.resources import Resources
from minirun.errors import RuntimeFailure
from minirun.runtime import OverlayRootfs, cgroups, devices_bpf
from minirun.runtime.cgroups import Cgroup, _device_rule, version
from tests.integration import runtime_fixtures
from tests.integration.runtime_fixtures import run_capture, sh

pytestmark = pytest.mark.root

busybox_layer = runtime_fixtures.busybox_layer
rootfs = runtime_fixtures.rootfs

DENY_ALL = {"allow": False, "access": "rwm"}
ALLOW_ALL = {"allow": True, "access": "rwm"}


def cgroup2_mount() -> str | None:
    """Where a cgroup2 hierarchy is mounted: /sys/fs/cgroup on v2, else the hybrid's."""
    if version() == 2:
        return cgroups.CGROUP_ROOT
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            if right.split()[:1] == ["cgroup2"]:
                return left.split()[4]
    return None


ROOT = cgroup2_mount()
HYBRID = version() == 1 and ROOT is not None
needs_cgroup2 = pytest.mark.skipif(ROOT is None, reason="no cgroup2 hierarchy is mounted")


def dev(t: str, major: int, minor: int, access: str, allow: bool = True) -> dict[str, Any]:
    return {"allow": allow, "type": t, "major": major, "minor": minor, "access": access}


def rules(entries: list[dict[str, Any]]) -> list[cgroups._DeviceRule]:
    return [_device_rule(e, f"rule {i}") for i, e in enumerate(entries)]


PROBE = r"""
import errno, json, os, sys
tmp = sys.argv[1]
def attempt(fn):
    try:
        fn()
        return "ok"
    except OSError as e:
        return errno.errorcode[e.errno]
def mknod(name, rdev):
    path = os.path.join(tmp, name)
    try:
        return attempt(lambda: os.mknod(path, 0o600 | 0o020000, rdev))
    finally:
        if os.path.lexists(path):
            os.unlink(path)
for _line in sys.stdin:
    print(json.dumps({
        "null_w": attempt(lambda: os.close(os.open("/dev/null", os.O_WRONLY))),
        "zero_r": attempt(lambda: os.close(os.open("/dev/zero", os.O_RDONLY))),
        "zero_w": attempt(lambda: os.close(os.open("/dev/zero", os.O_WRONLY))),
        "full": attempt(lambda: os.close(os.open("/dev/full", os.O_RDONLY))),
        "mknod_null": mknod("null", os.makedev(1, 3)),
        "mknod_full": mknod("full", os.makedev(1, 7)),
    }), flush=True)
"""
ALL_OK = dict.fromkeys(("null_w", "zero_r", "zero_w", "full", "mknod_null", "mknod_full"), "ok")


class Probe:
    """A child process moved into a cgroup that tries the devices each time it is asked."""

    def __init__(self, procs_file: str, tmp: Path) -> None:
        self.p = subprocess.Popen([sys.executable, "-S", "-c", PROBE, str(tmp)], text=True,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
        with open(procs_file, "w") as f:  # moved by its parent, as the task says
            f.write(str(self.p.pid))

    def __call__(self) -> dict[str, str]:
        assert self.p.stdin is not None and self.p.stdout is not None
        self.p.stdin.write("go\n")
        self.p.stdin.flush()
        return dict(json.loads(self.p.stdout.readline()))

    def close(self) -> None:
        if self.p.poll() is None:
            self.p.kill()  # ours, by its pid
        self.p.communicate(timeout=10)


class Dirs:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.tops: list[str] = []
        self.probes: list[Probe] = []

    def make(self) -> str:
        assert ROOT is not None
        d = f"{ROOT}/minirun-test-devbpf-{secrets.token_hex(6)}"
        os.mkdir(d)
        self.tops.append(d)
        return d

    def probe(self, cgroup_dir: str) -> Probe:
        p = Probe(f"{cgroup_dir}/cgroup.procs", self.tmp)
        self.probes.append(p)
        return p

    def cleanup(self) -> list[str]:
        for p in self.probes:
            p.close()
        left = []
        for top in self.tops:
            deadline = time.monotonic() + 5
            for d, _subs, _files in sorted(os.walk(top, topdown=False), key=lambda w: -len(w[0])):
                while True:
                    try:
                        os.rmdir(d)
                        break
                    except FileNotFoundError:
                        break
                    except OSError as e:  # EBUSY while the last process exits
                        if e.errno != errno.EBUSY or time.monotonic() > deadline:
                            break
                        time.sleep(0.02)
            if os.path.exists(top):
                left.append(top)
        return left


@pytest.fixture
def cgdir(tmp_path: Path) -> Iterator[Dirs]:
    if ROOT is None:
        pytest.skip("no cgroup2 hierarchy is mounted")
    if not devices_bpf.available():
        pytest.skip("this kernel does not load BPF_CGROUP_DEVICE programs")
    dirs = Dirs(tmp_path)
    try:
        yield dirs
    finally:
        left = dirs.cleanup()
        assert not left, f"cgroups left behind: {left}"


def ours(d: str) -> list[devices_bpf.Program]:
    return [p for p in devices_bpf.attached(d) if p.ours]


# -- devices_bpf on a bare cgroup2 dir --------------------------------------------------------


def test_rules_decide_open_and_mknod_and_update_replaces(cgdir: Dirs) -> None:
    d = cgdir.make()
    probe = cgdir.probe(d)
    assert probe() == ALL_OK  # no program: everything (the host's own rules)
    devices_bpf.attach(d, rules([DENY_ALL, dev("c", 1, 3, "rwm"), dev("c", 1, 5, "r")]))
    assert probe() == {"null_w": "ok", "zero_r": "ok", "zero_w": "EPERM", "full": "EPERM",
                       "mknod_null": "ok", "mknod_full": "EPERM"}  # fmt: skip
    [first] = ours(d)
    assert first.name == devices_bpf.PROG_NAME

    # update: the new program is attached, the old one detached (only one of ours)
    devices_bpf.attach(d, rules([DENY_ALL, dev("c", 1, 7, "rw"), dev("c", 1, 5, "rw")]))
    assert probe() == {"null_w": "EPERM", "zero_r": "ok", "zero_w": "ok", "full": "ok",
                       "mknod_null": "EPERM", "mknod_full": "EPERM"}  # fmt: skip
    [second] = ours(d)
    assert second.id != first.id

    # rules that allow everything need no program: ours is just detached
    devices_bpf.attach(d, rules([ALLOW_ALL]))
    assert ours(d) == [] and probe() == ALL_OK
    devices_bpf.attach(d, rules([DENY_ALL, dev("c", 1, 3, "rwm")]))
    assert len(ours(d)) == 1 and probe()["zero_r"] == "EPERM"


def test_programs_of_others_stay(cgdir: Dirs, monkeypatch: pytest.MonkeyPatch) -> None:
    d = cgdir.make()
    probe = cgdir.probe(d)
    with monkeypatch.context() as m:  # a foreign filter (systemd's, say): no /dev/full
        m.setattr(devices_bpf, "PROG_NAME", "other_devices")
        devices_bpf.attach(d, rules([ALLOW_ALL, dev("c", 1, 7, "rwm", allow=False)]))
    devices_bpf.attach(d, rules([ALLOW_ALL, dev("c", 1, 5, "w", allow=False)]))
    names = sorted(p.name for p in devices_bpf.attached(d))
    assert names == [devices_bpf.PROG_NAME, "other_devices"]
    # both apply (every attached program must allow)
    want = dict(ALL_OK, full="EPERM", mknod_full="EPERM", zero_w="EPERM")
    assert probe() == want
    devices_bpf.attach(d, rules([ALLOW_ALL]))  # ours go, the other stays
    assert [p.name for p in devices_bpf.attached(d)] == ["other_devices"]
    assert probe() == dict(ALL_OK, full="EPERM", mknod_full="EPERM")


def test_deny_exception_stops_read_write_opens(cgdir: Dirs) -> None:
    """Default allow with a deny "w": an O_RDWR open asks r and w at once and is denied,
    as on v1 (match_exception_partial)."""
    d = cgdir.make()
    devices_bpf.attach(d, rules([ALLOW_ALL, dev("c", 1, 3, "w", allow=False)]))
    script = ("import os\nfor f in (os.O_RDONLY, os.O_WRONLY, os.O_RDWR):\n"
              "    try: os.close(os.open('/dev/null', f)); print('ok')\n"
              "    except PermissionError: print('EPERM')\n")  # fmt: skip
    procs = f"{d}/cgroup.procs"

    def join() -> None:
        with open(procs, "w") as fh:
            fh.write("0")

    out = subprocess.run([sys.executable, "-S", "-c", script], preexec_fn=join,
                         capture_output=True, text=True, timeout=30, check=True).stdout  # fmt: skip
    assert out.split() == ["ok", "EPERM", "EPERM"]


def test_refusals_are_one_line_errors(cgdir: Dirs, tmp_path: Path) -> None:
    exit_only = devices_bpf.encode([devices_bpf.Insn(0x95)])  # exit with r0 unset
    with pytest.raises(RuntimeFailure, match=r"^the kernel's BPF verifier rejected the device "
                                             r"filter \(1 instructions\): R0 !read_ok$"):  # fmt: skip
        devices_bpf.load(exit_only)
    with pytest.raises(RuntimeFailure, match=r"cannot attach it to .*: Bad file descriptor "
                                             r"\(not a cgroup v2 directory\?\)$"):  # fmt: skip
        devices_bpf.attach(str(tmp_path), rules([DENY_ALL]))
    with pytest.raises(RuntimeFailure, match=r"cannot open the cgroup .*/nonexistent"):
        devices_bpf.attach(f"{cgdir.make()}/nonexistent", rules([DENY_ALL]))


def test_not_privileged_is_a_clear_refusal(cgdir: Dirs) -> None:
    """Without privilege the kernel refuses BPF_PROG_LOAD: KernelUnsupported, saying so."""
    d = cgdir.make()
    script = (
        "import os, sys\n"
        "os.setgroups([]); os.setgid(65534); os.setuid(65534)\n"
        "from minirun.runtime import devices_bpf, cgroups\n"
        "from minirun.errors import KernelUnsupported\n"
        "print(devices_bpf.available())\n"
        "try:\n"
        "    devices_bpf.attach(sys.argv[1], [cgroups._device_rule({'allow': False, "
        "'access': 'rwm'}, 'r')])\n"
        "except KernelUnsupported as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", script, d], capture_output=True, text=True,
                         timeout=30, check=True).stdout.splitlines()  # fmt: skip
    assert out[0] == "False"
    assert out[1].startswith("the kernel refused the device filter (BPF_PROG_LOAD: Operation "
                             "not permitted)")  # fmt: skip
    assert ours(d) == []


# -- through minirun.runtime.cgroups -----------------------------------------------------------


@pytest.fixture
def as_v2(monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """Make ``cgroups`` use the cgroup2 hierarchy: the host's own on v2, the hybrid's one
    (controller-less, as the hybrid tests of test_cgroups.py do) otherwise."""

    def use() -> None:
        if HYBRID:
            assert ROOT is not None
            monkeypatch.setattr(cgroups, "CGROUP_ROOT", ROOT)
            monkeypatch.setattr(cgroups, "_version", 2)

    return use


def test_cgroup_create_and_update_enforce(cgdir: Dirs, as_v2: Callable[[], None]) -> None:
    as_v2()
    assert cgroups.devices_enforced()
    top = cgdir.make()
    path = top.removeprefix(cgroups.CGROUP_ROOT) + "/ctr"
    cg = Cgroup.create(path, Resources().to_oci())  # containerd's deny-all + runc's defaults
    try:
        d = cg.paths[0]
        assert len(ours(d)) == 1 and not any("devices" in w for w in cg.warnings)
        probe = cgdir.probe(d)
        assert probe() == ALL_OK  # null, zero, full are defaults; mknod "c *:* m"
        cg.update({"devices": [DENY_ALL, dev("c", 1, 5, "rwm", allow=False)]})
        # the defaults come after the spec's rules and win, as with runc: zero stays open
        assert probe() == ALL_OK and len(ours(d)) == 1
        # allow mode: the defaults' allow rules remove the deny exceptions for the same
        # device, c 1:7 rwm (/dev/full) among them: what is left allows all, no program
        cg.update({"devices": [ALLOW_ALL, dev("c", 1, 7, "rwm", allow=False)]})
        assert ours(d) == [] and probe() == ALL_OK
        cg.update({"devices": [ALLOW_ALL, dev("b", 8, 0, "rwm", allow=False)]})
        assert probe() == ALL_OK and len(ours(d)) == 1
        cg.update({"devices": [ALLOW_ALL]})
        assert ours(d) == []
        with pytest.raises(RuntimeFailure, match=r"^linux\.resources\.devices\[2\]: cannot deny"):
            cg.update({"devices": [DENY_ALL, {"allow": True, "type": "c", "major": 1,
                                              "access": "rwm"},
                                   dev("c", 1, 9, "r", allow=False)]})  # fmt: skip
    finally:
        for p in cgdir.probes:
            p.close()
        cg.remove()


@pytest.mark.parametrize("where", ["native", "hybrid-unified"])
def test_container_device_rules(rootfs: OverlayRootfs, cgdir: Dirs, where: str,
                                as_v2: Callable[[], None]) -> None:  # fmt: skip
    """A real container (minirun.runtime.run) on cgroup v2: a linux.devices node without an
    allow rule cannot be opened, runc's defaults can, mknod is allowed but not the use of
    the node. "native" needs a pure v2 host (the cgroup2 VM test); "hybrid-unified" runs the
    same through the hybrid's cgroup2 hierarchy."""
    if where == "native" and version() != 2:
        pytest.skip("needs a pure cgroup v2 host (make test-cgroup2)")
    if where == "hybrid-unified" and not HYBRID:
        pytest.skip("needs a hybrid host's cgroup2 at /sys/fs/cgroup/unified")
    as_v2()
    top = cgdir.make()
    spec = sh(
        "for f in /dev/null /dev/kmsg; do ( : < $f ) 2>/dev/null && echo $f=ok || echo $f=no; "
        "done; mknod /tmp/disk b 8 0 && echo mknod=ok; "
        "( : < /tmp/disk ) 2>&1 | grep -q 'not permitted' && echo disk=EPERM || echo disk=?"
    )
    spec["linux"]["devices"] = [{"path": "/dev/kmsg", "type": "c", "major": 1, "minor": 11}]
    spec["linux"]["resources"] = {"devices": [DENY_ALL]}
    spec["linux"]["cgroupsPath"] = top.removeprefix(cgroups.CGROUP_ROOT) + "/ctr"
    code, out, err = run_capture(spec, rootfs)
    assert code == 0, err
    assert out.split() == ["/dev/null=ok", "/dev/kmsg=no", "mknod=ok", "disk=EPERM"]
    assert not os.path.exists(f"{top}/ctr")  # deleted with the container
