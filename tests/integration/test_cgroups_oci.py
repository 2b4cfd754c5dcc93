"""minirun.runtime.cgroups driven by OCI linux.resources / linux.cgroupsPath, against the
real kernel: limits land in the files, update changes only what it is given, freeze/thaw
a real process, device rules as runc applies them, and removal leaves nothing. Runs on
v1/hybrid and v2 hosts (branches on ``version()``); on a hybrid host the freeze and
removal tests run on its controller-less cgroup2 hierarchy too, for the v2 code.

Every cgroup lives below a fresh ``/minirun-test-<hex>`` (or a fresh systemd-style slice)
made through the ``cg`` fixture, which kills what is left in it, removes it and the test's
parent dirs from every hierarchy, and checks nothing of them remains.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from minirun.container.resources import Resources, engine_path, parse_resources
from minirun.errors import RuntimeFailure
from minirun.runtime import cgroups
from minirun.runtime.cgroups import Cgroup, resolve_path, shares_to_weight, version

pytestmark = pytest.mark.root

MiB = 1 << 20
UNIFIED = "/sys/fs/cgroup/unified"
HYBRID = version() == 1 and os.path.exists(f"{UNIFIED}/cgroup.controllers")


def roots() -> list[str]:
    """The root of every hierarchy a cgroup of this module can be in."""
    if version() == 2:
        return [cgroups.CGROUP_ROOT]
    return sorted(set(cgroups._v1_hierarchies().values())) + ([UNIFIED] if HYBRID else [])


class Maker:
    def __init__(self) -> None:
        self.prefix = f"/minirun-test-{secrets.token_hex(6)}"
        self.tops = [self.prefix]  # first path components to clean up
        self.made: list[Cgroup] = []
        self.procs: list[subprocess.Popen[str]] = []

    def __call__(self, resources: dict[str, Any] | None = None, path: str | None = None,
                 **kw: Any) -> Cgroup:  # fmt: skip
        path = path or f"{self.prefix}/{secrets.token_hex(4)}"
        top = "/" + path.strip("/").split("/")[0]
        if top not in self.tops:
            self.tops.append(top)
        cg = Cgroup.create(path, resources, **kw)
        self.made.append(cg)
        return cg

    def spawn(self, cg: Cgroup, argv: list[str]) -> subprocess.Popen[str]:
        """A process that joins ``cg`` before exec, as the runtime's child does."""
        files = cg.procs_files

        def join() -> None:
            for f in files:
                with open(f, "w") as fh:
                    fh.write("0")

        p = subprocess.Popen(argv, preexec_fn=join, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
        self.procs.append(p)
        return p

    def leftovers(self) -> list[str]:
        return [f"{r}{t}" for r in roots() for t in self.tops if os.path.exists(f"{r}{t}")]

    def cleanup(self) -> list[Exception]:
        errors: list[Exception] = []
        for p in self.procs:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGKILL)  # ours, by its pid
            p.communicate(timeout=10)
        for cg in self.made:
            try:
                if cg.frozen():
                    cg.thaw()
                cg.kill_all()
                cg.remove()
            except Exception as e:  # keep cleaning the others
                errors.append(e)
        for top in self.leftovers():  # the parents this module made, children first
            for d, _subs, _files in sorted(os.walk(top, topdown=False), key=lambda w: -len(w[0])):
                try:
                    os.rmdir(d)
                except OSError as e:
                    errors.append(e)
        return errors


@pytest.fixture
def cg() -> Iterator[Maker]:
    maker = Maker()
    try:
        yield maker
    finally:
        errors = maker.cleanup()
        left = maker.leftovers()
        assert not left, f"cgroups left behind: {left}"
        assert not errors, errors


@pytest.fixture(params=["native", "hybrid-unified"])
def any_version(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The host's own cgroups, and (on a hybrid host) its cgroup2 hierarchy as a v2 root."""
    if request.param == "hybrid-unified":
        if not HYBRID:
            pytest.skip("needs a hybrid host's cgroup2 at /sys/fs/cgroup/unified")
        monkeypatch.setattr(cgroups, "CGROUP_ROOT", UNIFIED)
        monkeypatch.setattr(cgroups, "_version", 2)
    return str(request.param)


def read(path: str) -> str:
    return Path(path).read_text().strip()


def cgfile(cg: Cgroup, controller: str, name: str) -> str:
    if cg.version == 2:
        return f"{cg.paths[0]}/{name}"
    mounts = cgroups._v1_hierarchies()
    if controller not in mounts:
        pytest.skip(f"the {controller} controller is not mounted")
    return f"{mounts[controller]}{cg.path}/{name}"


def whole_disk() -> tuple[int, int] | None:
    """major:minor of a whole disk (blk-throttle refuses partitions), preferring real ones."""
    found = []
    for name in sorted(os.listdir("/sys/block")):
        try:
            major, minor = (int(x) for x in read(f"/sys/block/{name}/dev").split(":"))
        except (OSError, ValueError):
            continue
        size = int(read(f"/sys/block/{name}/size") or 0)
        found.append((name.startswith(("loop", "ram", "zram")) or size == 0, major, minor))
    return (sorted(found)[0][1], sorted(found)[0][2]) if found else None


def controllers_v2() -> set[str]:
    return set(read(f"{cgroups.CGROUP_ROOT}/cgroup.controllers").split())


# -- create ----------------------------------------------------------------------------------


def test_create_with_limits(cg: Maker) -> None:
    disk = whole_disk()
    res: dict[str, Any] = {
        "memory": {"limit": 64 * MiB, "swap": 128 * MiB, "reservation": 32 * MiB},
        "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0", "mems": "0"},
        "pids": {"limit": 20},
        "devices": [{"allow": False, "access": "rwm"}],
    }
    if disk:
        res["blockIO"] = {"throttleReadBpsDevice": [{"major": disk[0], "minor": disk[1],
                                                      "rate": 1 << 20}]}  # fmt: skip
    if version() == 2 and "cpuset" not in controllers_v2():
        del res["cpu"]["cpus"], res["cpu"]["mems"]
    if version() == 2 and "io" not in controllers_v2():
        res.pop("blockIO", None)
    path = resolve_path(f"{cg.prefix}/create", "ignored")
    c = cg(res, path=path)
    assert c.path == path
    if version() == 2:
        assert c.paths == [f"{cgroups.CGROUP_ROOT}{path}"]
        assert read(cgfile(c, "", "memory.max")) == str(64 * MiB)
        assert read(cgfile(c, "", "memory.low")) == str(32 * MiB)
        if os.path.exists(cgfile(c, "", "memory.swap.max")):
            assert read(cgfile(c, "", "memory.swap.max")) == str(64 * MiB)  # swap alone
        assert read(cgfile(c, "", "cpu.weight")) == str(shares_to_weight(512))
        assert read(cgfile(c, "", "cpu.max")) == "50000 100000"
        if "cpus" in res["cpu"]:
            assert read(cgfile(c, "", "cpuset.cpus")) == "0"
        if "blockIO" in res and disk:
            assert f"{disk[0]}:{disk[1]} rbps={1 << 20}" in read(cgfile(c, "", "io.max"))
        from minirun.runtime import devices_bpf  # v2 device rules: one eBPF filter of ours

        assert [p.ours for p in devices_bpf.attached(c.paths[0])] == [True]
        assert not any("devices" in w for w in c.warnings)
    else:
        assert read(cgfile(c, "memory", "memory.limit_in_bytes")) == str(64 * MiB)
        assert read(cgfile(c, "memory", "memory.soft_limit_in_bytes")) == str(32 * MiB)
        memsw = cgfile(c, "memory", "memory.memsw.limit_in_bytes")
        if os.path.exists(memsw):
            assert read(memsw) == str(128 * MiB)
        assert read(cgfile(c, "cpu", "cpu.shares")) == "512"
        assert read(cgfile(c, "cpu", "cpu.cfs_quota_us")) == "50000"
        assert read(cgfile(c, "cpu", "cpu.cfs_period_us")) == "100000"
        assert read(cgfile(c, "cpuset", "cpuset.cpus")) == "0"
        assert read(cgfile(c, "cpuset", "cpuset.mems")) == "0"
        # the parent got the host's cpus/mems (a new v1 cpuset is empty and unjoinable)
        assert read(f"{cgroups._v1_hierarchies()['cpuset']}{cg.prefix}/cpuset.cpus")
        if disk and "blkio" in cgroups._v1_hierarchies():
            assert read(cgfile(c, "blkio", "blkio.throttle.read_bps_device")) == (
                f"{disk[0]}:{disk[1]} {1 << 20}")  # fmt: skip
        if cgroups.devices_enforced():
            # containerd's lone deny-all, plus runc's defaults the runtime appends
            rules = read(cgfile(c, "devices", "devices.list")).splitlines()
            assert "a *:* rwm" not in rules
            assert {"c 1:3 rwm", "c 136:* rwm", "c *:* m", "b *:* m"} <= set(rules)
    assert read(cgfile(c, "pids", "pids.max")) == "20"
    st = c.stats()
    assert (st.memory_limit, st.pids_limit, st.pids) == (64 * MiB, 20, 0)


def test_engine_records_and_paths(cg: Maker) -> None:
    """The engine's shape: /minirun/<id> with ``Resources.to_oci()``; ``open`` of the
    same path finds it."""
    cid = secrets.token_hex(32)
    path = resolve_path(None, cid, default=engine_path(cid))
    c = cg(parse_resources(memory="32m", pids_limit=9).to_oci(), path=path)
    cg.tops.remove("/minirun")  # the engine's shared parent is not ours to remove
    try:
        opened = Cgroup.open(engine_path(cid))
        assert opened is not None and opened.paths == c.paths
        assert read(cgfile(c, "pids", "pids.max")) == "9"
        assert c.stats().memory_limit == 32 * MiB
    finally:
        c.remove()
    assert Cgroup.open(path) is None


def test_systemd_style_path_nests_slices(cg: Maker) -> None:
    """ "slice:prefix:name" as cgroupfs dirs (what runc's systemd driver's cgroup looks
    like): a-b.slice lives in a.slice."""
    stem = f"minirunt{secrets.token_hex(4)}"
    path = resolve_path(f"{stem}-inner.slice:test:abc", "ignored", systemd=True)
    assert path == f"/{stem}.slice/{stem}-inner.slice/test-abc.scope"
    c = cg({"pids": {"limit": 5}}, path=path)
    assert read(cgfile(c, "pids", "pids.max")) == "5"
    assert all(d.endswith(path) for d in c.paths)


def test_invalid_values_leave_nothing(cg: Maker) -> None:
    with pytest.raises(
        RuntimeFailure, match=r"^linux\.resources\.memory\.limit: must be an integer, got 'x'"
    ):
        cg({"memory": {"limit": "x"}})
    # a failure after the dirs were made (a page size the kernel lacks / no hugetlb) undoes them
    with pytest.raises(RuntimeFailure, match="hugepageLimits"):
        cg({"hugepageLimits": [{"pageSize": "3MB", "limit": 0}]})
    if version() == 1:
        with pytest.raises(
            RuntimeFailure, match=r"^linux\.resources\.unified: this host uses cgroup v1"
        ):
            cg({"unified": {"pids.max": "5"}})
    assert cg.leftovers() == []  # not even the parent dirs the failed create made


@pytest.mark.skipif(version() != 2, reason="unified needs cgroup v2")
def test_unified_on_v2(cg: Maker) -> None:
    c = cg({"pids": {"limit": 5}, "unified": {"pids.max": "7"}})
    assert read(cgfile(c, "", "pids.max")) == "7"  # unified is applied last


# -- update ----------------------------------------------------------------------------------


def test_update_changes_only_what_is_given(cg: Maker) -> None:
    c = cg({"memory": {"limit": 64 * MiB}, "pids": {"limit": 10},
            "cpu": {"shares": 512, "quota": 50000, "period": 100000}})  # fmt: skip
    c.update({"pids": {"limit": 30}, "memory": {"limit": 128 * MiB, "swap": 256 * MiB}})
    assert read(cgfile(c, "pids", "pids.max")) == "30"
    if version() == 2:
        assert read(cgfile(c, "", "memory.max")) == str(128 * MiB)
        if os.path.exists(cgfile(c, "", "memory.swap.max")):
            assert read(cgfile(c, "", "memory.swap.max")) == str(128 * MiB)
        assert read(cgfile(c, "", "cpu.max")) == "50000 100000"  # untouched
        c.update({"cpu": {"period": 200000}})
        assert read(cgfile(c, "", "cpu.max")) == "50000 200000"  # the quota stayed
        assert read(cgfile(c, "", "cpu.weight")) == str(shares_to_weight(512))
    else:
        assert read(cgfile(c, "memory", "memory.limit_in_bytes")) == str(128 * MiB)
        memsw = cgfile(c, "memory", "memory.memsw.limit_in_bytes")
        if os.path.exists(memsw):
            assert read(memsw) == str(256 * MiB)
            # shrinking both: the kernel needs memory lowered before memory+swap
            c.update({"memory": {"limit": 32 * MiB, "swap": 48 * MiB}})
            assert (read(cgfile(c, "memory", "memory.limit_in_bytes")), read(memsw)) == (
                str(32 * MiB), str(48 * MiB))  # fmt: skip
        assert read(cgfile(c, "cpu", "cpu.cfs_quota_us")) == "50000"  # untouched
        c.update({"cpu": {"quota": 20000}})
        assert read(cgfile(c, "cpu", "cpu.cfs_quota_us")) == "20000"
        assert read(cgfile(c, "cpu", "cpu.shares")) == "512"
    c.update({"pids": {"limit": -1}})
    assert read(cgfile(c, "pids", "pids.max")) == "max"
    with pytest.raises(RuntimeFailure, match=r"linux\.resources\.cpu\.shares: must be"):
        c.update({"cpu": {"shares": "lots"}})


def test_update_with_processes_inside(cg: Maker) -> None:
    c = cg({"pids": {"limit": 10}})
    p = cg.spawn(c, ["sleep", "1000"])
    deadline = time.monotonic() + 5
    while c.pids() != [p.pid] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert c.pids() == [p.pid]
    c.update({"pids": {"limit": 3}})
    assert read(cgfile(c, "pids", "pids.max")) == "3"
    os.kill(p.pid, signal.SIGKILL)
    p.communicate(timeout=10)


# -- freeze / thaw ---------------------------------------------------------------------------


def wait_in(c: Cgroup, pid: int) -> None:
    deadline = time.monotonic() + 5
    while pid not in c.pids() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert pid in c.pids()


def test_freeze_and_thaw_a_real_process(cg: Maker, any_version: str) -> None:
    c = cg(None)
    if cgroups.version() == 1 and "freezer" not in cgroups._v1_hierarchies():
        pytest.skip("no v1 freezer")
    if cgroups.version() == 2 and not os.path.exists(f"{c.paths[0]}/cgroup.freeze"):
        pytest.skip("kernel without cgroup.freeze")
    p = cg.spawn(c, ["sleep", "1000"])
    wait_in(c, p.pid)
    assert not c.frozen()
    c.freeze()
    assert c.frozen()
    reopened = Cgroup.open(c.path)
    assert reopened is not None and reopened.frozen()  # the state is the kernel's
    if cgroups.version() == 2:
        assert cgroups._keyed(f"{c.paths[0]}/cgroup.events")["frozen"] == 1
    else:
        assert read(cgfile(c, "freezer", "freezer.state")) == "FROZEN"
    c.freeze()  # again: already frozen is fine
    c.thaw()
    assert not c.frozen()
    assert p.poll() is None  # still alive, running again
    # a frozen container can still be killed: kill_all thaws so the signal lands
    c.freeze()
    c.kill_all(signal.SIGTERM)
    p.communicate(timeout=10)
    assert p.returncode == -signal.SIGTERM
    assert not c.frozen()


def test_frozen_process_makes_no_progress(cg: Maker, tmp_path: Path) -> None:
    c = cg(None)
    if version() == 1 and "freezer" not in cgroups._v1_hierarchies():
        pytest.skip("no v1 freezer")
    out = tmp_path / "ticks"
    p = cg.spawn(c, ["sh", "-c", f"while :; do echo x >> {out}; sleep 0.01; done"])
    wait_in(c, p.pid)
    deadline = time.monotonic() + 5
    while (not out.exists() or not out.read_text()) and time.monotonic() < deadline:
        time.sleep(0.01)
    c.freeze()
    time.sleep(0.05)  # a write already past the freeze point may still land
    ticks = out.read_text().count("x")
    time.sleep(0.3)
    assert out.read_text().count("x") == ticks
    c.thaw()
    deadline = time.monotonic() + 5
    while out.read_text().count("x") == ticks and time.monotonic() < deadline:
        time.sleep(0.01)
    assert out.read_text().count("x") > ticks
    os.kill(p.pid, signal.SIGKILL)
    p.communicate(timeout=10)


# -- devices ---------------------------------------------------------------------------------

DEVICE_PROBE = """
import errno, json, os
out = {}
for key, path, flags in (("null", "/dev/null", os.O_RDWR), ("kmsg", "/dev/kmsg", os.O_RDONLY),
                         ("full", "/dev/full", os.O_WRONLY)):
    try:
        os.close(os.open(path, flags)); out[key] = "ok"
    except OSError as e:
        out[key] = errno.errorcode[e.errno]
print(json.dumps(out))
"""


@pytest.mark.skipif(not cgroups.devices_enforced(), reason="device rules are not enforced here")
@pytest.mark.parametrize(
    ("devices", "linux_devices", "want"),
    [
        # containerd's lone deny-all: runc's defaults (/dev/null, /dev/full...) still open
        ([{"allow": False, "access": "rwm"}], [], {"null": "ok", "kmsg": "EPERM", "full": "ok"}),
        # a linux.devices node gets its allow rule (/dev/kmsg is c 1:11)
        ([{"allow": False, "access": "rwm"}], [{"path": "/dev/kmsg", "type": "c", "major": 1,
                                                "minor": 11}],
         {"null": "ok", "kmsg": "ok", "full": "ok"}),
        # privileged
        ([{"allow": True, "access": "rwm"}], [], {"null": "ok", "kmsg": "ok", "full": "ok"}),
    ],
)  # fmt: skip
def test_device_rules_as_runc(cg: Maker, devices: list[dict[str, Any]],
                              linux_devices: list[dict[str, Any]], want: dict[str, str]) -> None:  # fmt: skip
    c = cg({"devices": devices}, linux_devices=linux_devices)
    p = cg.spawn(c, [sys.executable, "-S", "-c", DEVICE_PROBE])
    out, err = p.communicate(timeout=10)
    assert p.returncode == 0, err
    assert json.loads(out) == want


@pytest.mark.skipif(not cgroups.devices_enforced(), reason="device rules are not enforced here")
def test_device_update_replaces_the_rules(cg: Maker) -> None:
    c = cg(Resources().to_oci())
    if c.version == 2:  # no devices.list: what a process can open tells

        def probe() -> dict[str, str]:
            out, err = cg.spawn(c, [sys.executable, "-S", "-c", DEVICE_PROBE]).communicate(timeout=10)
            return dict(json.loads(out))

        assert probe()["kmsg"] == "EPERM"
        c.update({"devices": [{"allow": False, "access": "rwm"},
                              {"allow": True, "type": "c", "major": 1, "minor": 11, "access": "r"}]})  # fmt: skip
        assert probe() == {"null": "ok", "kmsg": "ok", "full": "ok"}
        return
    rules = read(cgfile(c, "devices", "devices.list")).splitlines()
    assert "c 1:11 rwm" not in rules
    c.update({"devices": [{"allow": False, "access": "rwm"},
                          {"allow": True, "type": "c", "major": 1, "minor": 11, "access": "r"}]})  # fmt: skip
    assert "c 1:11 r" in read(cgfile(c, "devices", "devices.list")).splitlines()


# -- removal ---------------------------------------------------------------------------------


def test_remove_leaves_nothing(cg: Maker, any_version: str) -> None:
    res = {"pids": {"limit": 5}} if cgroups.version() == 1 or "pids" in controllers_v2() else None
    c = cg(res, path=f"{cg.prefix}/a/b")
    for d in c.paths:
        os.makedirs(f"{d}/sub/inner")  # cgroups the container made inside its own
    p = cg.spawn(c, ["sleep", "1000"])
    wait_in(c, p.pid)
    with pytest.raises(RuntimeFailure, match="still has processes"):
        c.remove(timeout=0.2)
    assert all(os.path.isdir(d) for d in c.paths)  # refused: left intact
    os.kill(p.pid, signal.SIGKILL)
    p.communicate(timeout=10)
    c.remove()
    assert Cgroup.open(c.path) is None
    root_dirs = [cgroups.CGROUP_ROOT] if cgroups.version() == 2 else roots()
    assert [f"{r}{c.path}" for r in root_dirs if os.path.exists(f"{r}{c.path}")] == []
    assert all(os.path.isdir(os.path.dirname(d)) for d in c.paths)  # parents stay, as runc
    c.remove()  # idempotent


def test_create_refuses_a_busy_cgroup(cg: Maker) -> None:
    c = cg({"pids": {"limit": 5}})
    p = cg.spawn(c, ["sleep", "1000"])
    wait_in(c, p.pid)
    with pytest.raises(RuntimeFailure, match="already has processes"):
        Cgroup.create(c.path, {"pids": {"limit": 1}})
    assert c.pids() == [p.pid]
    assert read(cgfile(c, "pids", "pids.max")) == "5"  # untouched
    os.kill(p.pid, signal.SIGKILL)
    p.communicate(timeout=10)
