"""minirun.runtime.cgroups against the real kernel: limits, join, OOM, pids, stats, devices,
kill and removal. Runs on v1/hybrid and v2 hosts (branches on ``version()``).

Every cgroup is made through the ``cgroup`` fixture, which kills whatever is left in it,
removes it and then checks that no ``minirun/<test id>`` dir remains in any hierarchy,
whether the test passed or not. Processes join exactly as the runtime's child does: by
writing "0" into every ``procs_files`` entry before exec.
"""

from __future__ import annotations

import glob
import json
import os
import secrets
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from minirun.container.resources import Resources, engine_path, parse_resources, shares_to_weight
from minirun.errors import RuntimeFailure
from minirun.runtime import cgroups
from minirun.runtime.cgroups import Cgroup, version

pytestmark = pytest.mark.root

MiB = 1 << 20
CG = "/sys/fs/cgroup"

MakeCgroup = Callable[..., Cgroup]
Spawn = Callable[..., "subprocess.Popen[str]"]


def leftovers(name: str) -> list[str]:
    return glob.glob(f"{CG}/*/minirun/{name}") + glob.glob(f"{CG}/minirun/{name}")


@pytest.fixture
def cgroup() -> Iterator[MakeCgroup]:
    """``cgroup(Resources(...))`` -> a fresh Cgroup named like a container id."""
    made: list[Cgroup] = []
    names: list[str] = []

    def make(res: Resources = Resources(), name: str | None = None) -> Cgroup:  # noqa: B008
        name = name or secrets.token_hex(32)
        names.append(name)
        cg = Cgroup.create(engine_path(name), res.to_oci())
        made.append(cg)
        return cg

    try:
        yield make
    finally:
        errors = []
        for cg in made:
            try:
                cg.kill_all()
                cg.remove()
            except Exception as e:  # keep cleaning the others
                errors.append(e)
        left = [p for n in names for p in leftovers(n)]
        assert not left, f"cgroups left behind: {left}"
        assert not errors, errors


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """``spawn(cg, argv)``: a process that joins ``cg`` before exec; reaped afterwards."""
    procs: list[subprocess.Popen[str]] = []

    def start(cg: Cgroup, argv: list[str], **kw: object) -> subprocess.Popen[str]:
        files = cg.procs_files

        def join() -> None:  # what the runtime's child does before unshare(CLONE_NEWCGROUP)
            for f in files:
                with open(f, "w") as fh:
                    fh.write("0")

        p = subprocess.Popen(
            argv, preexec_fn=join, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, **kw,  # type: ignore[call-overload]
        )  # fmt: skip
        procs.append(p)
        return p

    try:
        yield start
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.communicate(timeout=10)


def wait_for(cond: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


def read(path: str) -> str:
    return Path(path).read_text().strip()


def cgfile(cg: Cgroup, controller: str, name: str) -> str:
    d = [p for p in cg.paths if version() == 2 or f"/{controller}/" in p]
    assert d, f"no {controller} dir in {cg.paths}"
    return f"{d[0]}/{name}"


def test_limits_land_in_the_files(cgroup: MakeCgroup) -> None:
    res = parse_resources(memory="32m", memory_swap="100m", cpus="0.5", cpu_shares=512,
                          pids_limit=20)  # fmt: skip
    cg = cgroup(res)
    if version() == 2:
        assert read(cgfile(cg, "", "memory.max")) == str(32 * MiB)
        if os.path.exists(cgfile(cg, "", "memory.swap.max")):
            assert read(cgfile(cg, "", "memory.swap.max")) == str(68 * MiB)  # swap alone
        assert read(cgfile(cg, "", "cpu.max")) == "50000 100000"
        assert read(cgfile(cg, "", "cpu.weight")) == str(shares_to_weight(512)) == "20"
    else:
        assert read(cgfile(cg, "memory", "memory.limit_in_bytes")) == str(32 * MiB)
        memsw = cgfile(cg, "memory", "memory.memsw.limit_in_bytes")
        if os.path.exists(memsw):
            assert read(memsw) == str(100 * MiB)
        else:
            assert cg.warnings
        assert read(cgfile(cg, "cpu", "cpu.cfs_period_us")) == "100000"
        assert read(cgfile(cg, "cpu", "cpu.cfs_quota_us")) == "50000"
        assert read(cgfile(cg, "cpu", "cpu.shares")) == "512"
        # a new v1 cpuset is empty and unjoinable: it must have the parent's CPUs
        assert read(cgfile(cg, "cpuset", "cpuset.cpus"))
        assert read(cgfile(cg, "cpuset", "cpuset.mems"))
    assert read(cgfile(cg, "pids", "pids.max")) == "20"
    st = cg.stats()
    assert (st.memory_limit, st.pids_limit, st.pids) == (32 * MiB, 20, 0)


def test_default_swap_and_unlimited_values(cgroup: MakeCgroup) -> None:
    cg = cgroup(parse_resources(memory="16m", pids_limit=0))
    assert read(cgfile(cg, "pids", "pids.max")) == "max"
    assert cg.stats().pids_limit is None
    if version() == 1:
        memsw = cgfile(cg, "memory", "memory.memsw.limit_in_bytes")
        if os.path.exists(memsw):
            assert read(memsw) == str(32 * MiB)  # Docker's default: memory+swap = 2 x memory
    elif os.path.exists(cgfile(cg, "", "memory.swap.max")):
        assert read(cgfile(cg, "", "memory.swap.max")) == str(16 * MiB)


def test_unlimited_cgroup_reports_host_ram(cgroup: MakeCgroup) -> None:
    cg = cgroup()
    st = cg.stats()
    assert st.memory_limit == os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert st.pids_limit is None
    assert not cg.oom_killed()


def test_join_puts_the_process_in_every_hierarchy(cgroup: MakeCgroup, spawn: Spawn) -> None:
    cg = cgroup(Resources(pids_limit=50))
    out, _ = spawn(cg, ["cat", "/proc/self/cgroup"]).communicate(timeout=10)
    lines = [line.split(":", 2) for line in out.splitlines()]
    want = cg.path
    if version() == 2:
        assert [path for _id, ctl, path in lines if ctl == ""] == [want]
    else:
        by_ctl = {c: path for _id, ctls, path in lines for c in ctls.split(",")}
        for ctl in ("memory", "cpu", "cpuacct", "pids", "devices", "freezer", "cpuset"):
            if ctl in cgroups._v1_hierarchies():
                assert by_ctl[ctl] == want, (ctl, out)
    assert len(cg.procs_files) == len(cg.paths)


def test_oom_kill_is_reported(cgroup: MakeCgroup, spawn: Spawn) -> None:
    cg = cgroup(parse_resources(memory="32m"))
    hog = "b = bytearray(200 << 20); b[::4096] = b'x' * len(b[::4096])"  # touch every page
    p = spawn(cg, [sys.executable, "-S", "-c", hog])
    p.communicate(timeout=15)
    assert p.returncode == -signal.SIGKILL
    assert cg.oom_killed()


def test_pids_limit_stops_a_fork_loop(cgroup: MakeCgroup, spawn: Spawn) -> None:
    cg = cgroup(Resources(pids_limit=20))
    p = spawn(cg, ["sh", "-c",
                   "for i in $(seq 100); do sleep 30 >/dev/null 2>&1 & done; echo looped; wait"])  # fmt: skip
    events = cgfile(cg, "pids", "pids.events")
    current = cgfile(cg, "pids", "pids.current")
    seen: list[int] = []

    def refused() -> bool:  # the kernel counts every fork pids.max refused
        seen.append(int(read(current)))
        return cgroups._keyed(events).get("max", 0) > 0

    assert wait_for(refused, timeout=10), read(events)
    assert max(seen) <= 20 and int(read(current)) <= 20
    assert 1 <= cg.stats().pids <= 20
    cg.kill_all()
    assert wait_for(lambda: not cg.pids())
    _out, err = p.communicate(timeout=10)
    # dash gives up at the first refused fork ("Cannot fork"); bash would have retried
    assert p.returncode != 0
    assert "fork" in err.lower() or p.returncode == -signal.SIGKILL


def test_stats(cgroup: MakeCgroup, spawn: Spawn) -> None:
    cg = cgroup(parse_resources(memory="64m", pids_limit=30))
    busy = ("import sys, time\nt = time.time()\nwhile time.time() - t < 0.3: pass\n"
            "b = bytearray(8 << 20)\nprint('ready', flush=True)\ntime.sleep(30)\n")  # fmt: skip
    p = spawn(cg, [sys.executable, "-S", "-c", busy])
    assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    st = cg.stats()
    assert st.cpu_usage_ns > 100_000_000  # >= 0.1 s of the 0.3 s busy loop
    assert st.memory_usage > 8 * MiB
    assert st.memory_limit == 64 * MiB
    assert (st.pids, st.pids_limit) == (1, 30)
    assert cg.pids() == [p.pid]
    cg.kill_all()
    p.communicate(timeout=10)
    assert p.returncode == -signal.SIGKILL
    assert not cg.oom_killed()


def test_kill_all_remove_and_open(cgroup: MakeCgroup, spawn: Spawn) -> None:
    cg = cgroup(Resources(pids_limit=10))
    p = spawn(cg, ["sh", "-c", "sleep 100 & sleep 100 & echo up; wait"])
    assert p.stdout is not None and p.stdout.readline().strip() == "up"
    assert wait_for(lambda: len(cg.pids()) == 3)
    assert Cgroup.open(cg.path) is not None
    with pytest.raises(RuntimeFailure, match="still has processes"):
        cg.remove(timeout=0.2)  # busy: refuses, leaves it intact
    assert all(os.path.isdir(d) for d in cg.paths)
    cg.kill_all()
    p.communicate(timeout=10)
    assert p.returncode == -signal.SIGKILL
    cg.remove()
    assert leftovers(cg.path.rsplit("/", 1)[1]) == []
    cg.remove()  # idempotent
    assert Cgroup.open(cg.path) is None


def test_kill_all_with_sigterm(cgroup: MakeCgroup, spawn: Spawn) -> None:
    cg = cgroup()
    p = spawn(cg, ["sleep", "100"])
    assert wait_for(lambda: cg.pids() == [p.pid])
    cg.kill_all(signal.SIGTERM)  # frozen, signalled, thawed: it must still die
    p.communicate(timeout=10)
    assert p.returncode == -signal.SIGTERM
    if version() == 1 and "freezer" in cgroups._v1_hierarchies():
        assert read(cgfile(cg, "freezer", "freezer.state")) == "THAWED"


def test_remove_takes_subcgroups(cgroup: MakeCgroup) -> None:
    cg = cgroup()
    for d in cg.paths:
        os.makedirs(f"{d}/sub/inner")
    cg.remove()
    assert leftovers(cg.path.rsplit("/", 1)[1]) == []


def test_create_refuses_a_busy_cgroup_and_leaves_it(cgroup: MakeCgroup, spawn: Spawn) -> None:
    cg = cgroup()
    p = spawn(cg, ["sleep", "100"])
    assert wait_for(lambda: cg.pids() == [p.pid])
    with pytest.raises(RuntimeFailure, match="already has processes"):
        Cgroup.create(cg.path, {})
    assert cg.pids() == [p.pid]  # the running container's cgroup is untouched


def test_reuses_an_empty_leftover(cgroup: MakeCgroup) -> None:
    name = secrets.token_hex(32)
    first = cgroup(Resources(pids_limit=5), name=name)
    second = cgroup(Resources(pids_limit=7), name=name)  # e.g. after a crash
    assert first.paths == second.paths
    assert read(cgfile(second, "pids", "pids.max")) == "7"


def test_bad_paths_are_refused() -> None:
    for bad in ("", "/", "/minirun/..", "/a/../../b", "/x\0y"):
        with pytest.raises(RuntimeFailure):
            Cgroup.create(bad, {})


def test_missing_controller_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    name = secrets.token_hex(32)
    if version() == 2:
        monkeypatch.setattr(cgroups, "_read", lambda path: "memory cpu")
        pytest.raises(RuntimeFailure, Cgroup.create, engine_path(name), {"pids": {"limit": 5}})
    else:
        mounts = dict(cgroups._v1_hierarchies())
        mounts.pop("pids", None)
        monkeypatch.setattr(cgroups, "_v1_mounts", mounts)
        with pytest.raises(RuntimeFailure, match="controller.* pids are not mounted"):
            Cgroup.create(engine_path(name), {"pids": {"limit": 5}})
    assert leftovers(name) == []


DEVICE_PROBE = """
import errno, json, os, sys
out = {}
def probe(key, fn):
    try:
        fn(); out[key] = "ok"
    except OSError as e:
        out[key] = errno.errorcode[e.errno]
probe("null", lambda: os.close(os.open("/dev/null", os.O_RDWR)))
probe("kmsg", lambda: os.close(os.open("/dev/kmsg", os.O_RDONLY)))
node = sys.argv[1]
probe("mknod", lambda: os.mknod(node, 0o600 | 0o060000, int(sys.argv[2])))  # S_IFBLK
probe("disk", lambda: os.close(os.open(node, os.O_RDONLY)))
print(json.dumps(out))
"""


def openable_block_device(tmp: Path) -> int:
    """A block device root can open outside any devices cgroup: the host's root disk,
    else one under /dev (a loop device), as a node made in ``tmp``."""
    candidates = [os.stat("/").st_dev]
    for entry in sorted(os.scandir("/dev"), key=lambda e: e.name):
        st = entry.stat(follow_symlinks=False)
        if stat.S_ISBLK(st.st_mode):
            candidates.append(st.st_rdev)
    for i, rdev in enumerate(candidates):
        if os.major(rdev) == 0:
            continue  # an anonymous device (overlay, btrfs subvolume): no driver behind it
        node = tmp / f"candidate{i}"
        os.mknod(node, 0o600 | stat.S_IFBLK, rdev)
        try:
            os.close(os.open(node, os.O_RDONLY))
            return rdev
        except OSError:
            continue  # the host itself refuses this one (a VM sandbox may)
        finally:
            node.unlink()
    pytest.skip("no block device that root can open on this host")


@pytest.mark.skipif(not cgroups.devices_enforced(), reason="device rules are not enforced here "
                    "(v1 without the devices controller, or v2 without bpf(2))")
def test_device_rules(cgroup: MakeCgroup, spawn: Spawn, tmp_path: Path) -> None:
    cg = cgroup()
    rdev = openable_block_device(tmp_path)
    node = tmp_path / "disk"
    p = spawn(cg, [sys.executable, "-S", "-c", DEVICE_PROBE, str(node), str(rdev)])
    out, err = p.communicate(timeout=10)
    assert p.returncode == 0, err
    # mknod allowed ("b *:* m") but use denied; only the allow-list opens
    assert json.loads(out) == {"null": "ok", "kmsg": "EPERM", "mknod": "ok", "disk": "EPERM"}


def test_devices_enforced_matches_the_host() -> None:
    if version() == 2:  # an eBPF program (devices_bpf) when the kernel loads one
        from minirun.runtime import devices_bpf

        assert cgroups.devices_enforced() == devices_bpf.available()
    else:
        assert cgroups.devices_enforced() == ("devices" in cgroups._v1_hierarchies())


@pytest.mark.skipif(
    version() != 1 or not os.path.exists(f"{CG}/unified/cgroup.controllers"),
    reason="needs a hybrid host's (controller-less) cgroup2 at /sys/fs/cgroup/unified",
)
def test_v2_paths_on_the_hybrid_unified_hierarchy(
    cgroup: MakeCgroup, spawn: Spawn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The v2 code (subtree_control, join, cpu.stat, cgroup.freeze, cgroup.kill, removal)
    exercised on a v1 host, with the hybrid's empty cgroup2 hierarchy as the root."""
    monkeypatch.setattr(cgroups, "CGROUP_ROOT", f"{CG}/unified")
    monkeypatch.setattr(cgroups, "_version", 2)
    cg = cgroup()
    assert cg.paths == [f"{CG}/unified{cg.path}"]
    p = spawn(cg, ["sh", "-c", "sleep 100 & echo up; wait"])
    assert p.stdout is not None and p.stdout.readline().strip() == "up"
    assert f"0::{cg.path}" in Path(f"/proc/{p.pid}/cgroup").read_text()
    assert wait_for(lambda: len(cg.pids()) == 2)
    st = cg.stats()
    assert st.pids == 2 and st.cpu_usage_ns > 0 and st.pids_limit is None
    cg.kill_all(signal.SIGTERM)  # cgroup.freeze, signal, thaw
    p.communicate(timeout=10)
    assert p.returncode == -signal.SIGTERM
    assert read(f"{cg.paths[0]}/cgroup.freeze") == "0"
    q = spawn(cg, ["sleep", "100"])
    assert wait_for(lambda: cg.pids() == [q.pid])
    cg.kill_all()  # cgroup.kill
    q.communicate(timeout=10)
    assert q.returncode == -signal.SIGKILL
    cg.remove()
    assert Cgroup.open(cg.path) is None
