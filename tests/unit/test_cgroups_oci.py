"""minirun.runtime.cgroups without root: linux.cgroupsPath resolution, linux.resources
validation, and which file gets which value on v1 and v2, against a fake cgroup tree.

The fake tree is plain files in a tmp dir: ``CGROUP_ROOT``, ``_version`` and ``_v1_mounts``
point at it, ``_mkdir`` fills each new dir with the files the kernel would show, and
``_write`` records every write (path relative to the fake root, value) in order, acting
like the kernel where the code reads back (subtree_control, freezing, cpu.shares clamping).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from minirun.container.resources import Resources, engine_path, parse_resources
from minirun.errors import RuntimeFailure
from minirun.runtime import cgroups
from minirun.runtime.cgroups import (
    DEFAULT_ALLOWED_DEVICES,
    Cgroup,
    blkio_weight_to_io_weight,
    check_resources,
    expand_slice,
    resolve_path,
    shares_to_weight,
    systemd_available,
    with_default_devices,
)

MiB = 1 << 20
UNLIMITED_V1 = "9223372036854771712"
CID = "c0ffee" * 10 + "beef"

V1_FILES: dict[str, dict[str, str]] = {
    "memory": {
        "memory.limit_in_bytes": UNLIMITED_V1,
        "memory.memsw.limit_in_bytes": UNLIMITED_V1,
        "memory.soft_limit_in_bytes": UNLIMITED_V1,
        "memory.swappiness": "60",
        "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 0",
        "memory.usage_in_bytes": "0",
        "memory.stat": "total_inactive_file 0",
    },
    "cpu": {
        "cpu.shares": "1024",
        "cpu.cfs_quota_us": "-1",
        "cpu.cfs_period_us": "100000",
        "cpu.cfs_burst_us": "0",
        "cpu.idle": "0",
    },
    "cpuacct": {"cpuacct.usage": "0"},
    "pids": {"pids.max": "max", "pids.current": "0"},
    "devices": {"devices.allow": "", "devices.deny": "", "devices.list": "a *:* rwm"},
    "freezer": {"freezer.state": "THAWED"},
    "cpuset": {"cpuset.cpus": "", "cpuset.mems": ""},
    "blkio": {
        "blkio.bfq.weight": "100",
        "blkio.bfq.weight_device": "",
        "blkio.throttle.read_bps_device": "",
        "blkio.throttle.write_bps_device": "",
        "blkio.throttle.read_iops_device": "",
        "blkio.throttle.write_iops_device": "",
    },
    "hugetlb": {"hugetlb.2MB.limit_in_bytes": UNLIMITED_V1, "hugetlb.1GB.limit_in_bytes": "0"},
}
# v1 hierarchies as mounted (cpu and cpuacct co-mounted, as on most hosts)
V1_HIERARCHIES = ("memory", "cpu,cpuacct", "pids", "devices", "freezer", "cpuset", "blkio",
                  "hugetlb")  # fmt: skip

V2_FILES = {
    "cgroup.procs": "",
    "cgroup.subtree_control": "",
    "cgroup.freeze": "0",
    "cgroup.events": "populated 0\nfrozen 0",
    "cgroup.kill": "",
    "memory.max": "max",
    "memory.high": "max",
    "memory.swap.max": "max",
    "memory.low": "0",
    "memory.current": "0",
    "memory.events": "oom 0\noom_kill 0",
    "cpu.weight": "100",
    "cpu.max": "max 100000",
    "cpu.max.burst": "0",
    "cpu.idle": "0",
    "cpu.stat": "usage_usec 0",
    "pids.max": "max",
    "pids.current": "0",
    "io.weight": "default 100",
    "io.max": "",
    "cpuset.cpus": "",
    "cpuset.mems": "",
    "hugetlb.2MB.max": "max",
    "hugetlb.2MB.rsvd.max": "max",
}
V2_CONTROLLERS = "cpuset cpu io memory hugetlb pids"


class FakeFS:
    def __init__(self, tmp: Path, monkeypatch: pytest.MonkeyPatch, ver: int,
                 hierarchies: tuple[str, ...] = V1_HIERARCHIES,
                 controllers: str = V2_CONTROLLERS) -> None:  # fmt: skip
        self.root = tmp / "cgroup"
        self.ver = ver
        self.writes: list[tuple[str, str]] = []
        self.stuck = False  # freezing never completes
        self.clamp: dict[str, Callable[[str], str]] = {}  # file name -> what the kernel stores
        self.drop: set[str] = set()  # file names new dirs do not get
        self.extra: dict[str, str] = {}  # more files for new dirs
        monkeypatch.setattr(cgroups, "_version", ver)
        monkeypatch.setattr(cgroups, "CGROUP_ROOT", str(self.root))
        if ver == 1:
            mounts: dict[str, str] = {}
            for hier in hierarchies:
                d = self.root / hier
                d.mkdir(parents=True)
                (d / "cgroup.procs").write_text("")
                if "cpuset" in hier:
                    (d / "cpuset.cpus").write_text("0-3")
                    (d / "cpuset.mems").write_text("0")
                for c in hier.split(","):
                    mounts[c] = str(d)
            monkeypatch.setattr(cgroups, "_v1_mounts", mounts)
        else:
            self.root.mkdir()
            (self.root / "cgroup.controllers").write_text(controllers)
            (self.root / "cgroup.subtree_control").write_text("")
            (self.root / "cgroup.procs").write_text("")
        real_mkdir = cgroups._mkdir

        def mkdir(path: str) -> bool:
            made = real_mkdir(path)
            if made:
                self.populate(Path(path))
            return made

        monkeypatch.setattr(cgroups, "_mkdir", mkdir)
        monkeypatch.setattr(cgroups, "_write", self.write)
        monkeypatch.setattr(cgroups, "_rmdir", self.rmdir)
        # v2 device rules: (dir, rules) per eBPF filter attached (devices_bpf needs a kernel)
        self.device_filters: list[tuple[str, list[cgroups._DeviceRule]]] = []
        monkeypatch.setattr(cgroups, "_attach_device_filter", lambda d, rules, _given:
                            self.device_filters.append((self.rel(Path(d)), list(rules))))  # fmt: skip

    def rmdir(self, path: str) -> None:
        """As cgroupfs: a dir goes with its files, but not with processes or children."""
        d = Path(path)
        if not d.is_dir():
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
        if (d / "cgroup.procs").exists() and (d / "cgroup.procs").read_text().strip():
            raise OSError(errno.EBUSY, "Device or resource busy", path)
        if any(e.is_dir() for e in d.iterdir()):
            raise OSError(errno.ENOTEMPTY, "Directory not empty", path)
        for f in d.iterdir():
            f.unlink()
        d.rmdir()

    def populate(self, d: Path) -> None:
        files: dict[str, str] = {"cgroup.procs": ""}
        if self.ver == 1:
            hier = d.relative_to(self.root).parts[0]
            for c in hier.split(","):
                files.update(V1_FILES.get(c, {}))
        else:
            files.update(V2_FILES)
            files["cgroup.controllers"] = (d.parent / "cgroup.subtree_control").read_text()
        files.update(self.extra)
        for name, text in files.items():
            if name not in self.drop:
                (d / name).write_text(text)

    def write(self, path: str, value: str, what: str = "") -> None:
        p = Path(path)
        if not p.exists():
            raise cgroups._WriteFailed(f"{what}: cgroup: cannot open {path}", errno.ENOENT)
        self.writes.append((self.rel(p), value))
        name = p.name
        if name in ("devices.allow", "devices.deny", "cgroup.kill"):
            return
        if name == "cgroup.subtree_control":
            on = set(p.read_text().split())
            (on.add if value[0] == "+" else on.discard)(value[1:])
            p.write_text(" ".join(sorted(on)))
        elif name == "cgroup.freeze":
            p.write_text(value)
            if not self.stuck:
                (p.parent / "cgroup.events").write_text(f"populated 1\nfrozen {value}")
        elif name == "freezer.state":
            p.write_text("FREEZING" if value == "FROZEN" and self.stuck else value)
        else:
            p.write_text(self.clamp.get(name, lambda v: v)(value))

    def rel(self, p: Path) -> str:
        return str(p.relative_to(self.root))

    def values(self, rel: str) -> list[str]:
        return [v for path, v in self.writes if path == rel]

    def order(self, *items: tuple[str, str]) -> list[int]:
        return [self.writes.index(item) for item in items]

    def read(self, rel: str) -> str:
        return (self.root / rel).read_text()

    def tree(self) -> list[str]:
        return sorted(self.rel(Path(d)) for d, _s, _f in os.walk(self.root))


@pytest.fixture
def v1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeFS:
    return FakeFS(tmp_path, monkeypatch, 1)


@pytest.fixture
def v2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeFS:
    return FakeFS(tmp_path, monkeypatch, 2)


# -- linux.cgroupsPath ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        ("/minirun/abc", "/minirun/abc"),
        ("/a//b/./c/", "/a/b/c"),
        ("/kubepods/burstable/pod1/abc", "/kubepods/burstable/pod1/abc"),
        ("rel/x", "/rel/x"),  # relative: taken under the root
        ("machine.slice:libpod:abc", "/machine.slice:libpod:abc"),  # cgroupfs: just a name
    ],
)
def test_cgroupfs_paths(raw: str, want: str) -> None:
    assert resolve_path(raw, CID) == want


def test_empty_path_uses_the_default_or_runcs() -> None:
    assert resolve_path(None, CID, default=engine_path(CID)) == f"/minirun/{CID}"
    assert resolve_path("", CID, default="/minirun-runtime/x/") == "/minirun-runtime/x"
    assert resolve_path(None, CID) == f"/{CID}"
    assert resolve_path("", CID, systemd=True) == f"/system.slice/minirun-{CID}.scope"
    assert resolve_path("/given", CID, default="/ignored") == "/given"


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        ("machine.slice:libpod:abc", "/machine.slice/libpod-abc.scope"),
        ("system.slice:docker:1234", "/system.slice/docker-1234.scope"),
        (":cri-containerd:abc", "/system.slice/cri-containerd-abc.scope"),
        ("a-b.slice:p:n", "/a.slice/a-b.slice/p-n.scope"),
        ("a-b-c.slice:p:n", "/a.slice/a-b.slice/a-b-c.slice/p-n.scope"),
        ("-.slice:p:n", "/p-n.scope"),
        ("user.slice:x:user-1000.slice", "/user.slice/user-1000.slice"),  # a slice unit
        (
            "kubepods-burstable.slice:cri-o:ab",
            "/kubepods.slice/kubepods-burstable.slice/cri-o-ab.scope",
        ),
    ],
)
def test_systemd_paths(raw: str, want: str) -> None:
    assert resolve_path(raw, CID, systemd=True) == want


@pytest.mark.parametrize(
    ("raw", "systemd", "match"),
    [
        ("/a/../b", False, r"linux\.cgroupsPath: must not contain '\.\.'"),
        ("../escape", False, r"linux\.cgroupsPath: must not contain '\.\.'"),
        ("/a\0b", False, r"linux\.cgroupsPath: must not contain NUL"),
        ("/", False, r"linux\.cgroupsPath: '/' is the root cgroup"),
        ("//.", False, r"linux\.cgroupsPath: .* is the root cgroup"),
        ("a:b", True, r'linux\.cgroupsPath: expected "slice:prefix:name"'),
        ("/a/b", True, r'linux\.cgroupsPath: expected "slice:prefix:name"'),
        ("foo:p:n", True, r"linux\.cgroupsPath: invalid systemd slice name 'foo'"),
        ("a--b.slice:p:n", True, r"linux\.cgroupsPath: invalid systemd slice name"),
        ("-a.slice:p:n", True, r"linux\.cgroupsPath: invalid systemd slice name"),
        (".slice:p:n", True, r"linux\.cgroupsPath: invalid systemd slice name"),
        ("x.slice:p:", True, r"linux\.cgroupsPath: the name part .* is empty"),
        ("x.slice:p:a/b", True, r"linux\.cgroupsPath: invalid unit name part 'a/b'"),
        ("x.slice:..:n", True, r"linux\.cgroupsPath: invalid unit name part '\.\.'"),
    ],
)
def test_invalid_paths(raw: str, systemd: bool, match: str) -> None:
    with pytest.raises(RuntimeFailure, match=match):
        resolve_path(raw, CID, systemd=systemd)


def test_invalid_ids_and_defaults() -> None:
    with pytest.raises(RuntimeFailure, match="invalid container id"):
        resolve_path(None, "a/b")
    with pytest.raises(RuntimeFailure, match="default cgroup path"):
        resolve_path(None, CID, default="/x/../y")
    with pytest.raises(RuntimeFailure, match="linux.cgroupsPath: must be a string"):
        resolve_path(5, CID)  # type: ignore[arg-type]


def test_expand_slice() -> None:
    assert expand_slice("system.slice") == "/system.slice"
    assert expand_slice("user-1000.slice") == "/user.slice/user-1000.slice"
    assert expand_slice("-.slice") == "/"
    for bad in ("foo", ".slice", "a-.slice", "a/b.slice"):
        with pytest.raises(RuntimeFailure, match="invalid systemd slice name"):
            expand_slice(bad)


def test_systemd_available(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cgroups, "SYSTEMD_RUNTIME_DIR", str(tmp_path / "system"))
    assert not systemd_available()
    (tmp_path / "system").mkdir()
    assert systemd_available()


# -- linux.resources: validation -------------------------------------------------------------


@pytest.mark.parametrize(
    ("resources", "match"),
    [
        ("x", r"^linux\.resources: must be an object"),
        ({"memory": 5}, r"^linux\.resources\.memory: must be an object"),
        ({"memory": {"limit": "x"}}, r"^linux\.resources\.memory\.limit: must be an integer, got 'x'$"),
        ({"memory": {"limit": True}}, r"^linux\.resources\.memory\.limit: must be an integer"),
        ({"memory": {"limit": 1.5}}, r"^linux\.resources\.memory\.limit: must be an integer"),
        ({"memory": {"limit": -2}}, r"^linux\.resources\.memory\.limit: must be between -1 and"),
        ({"memory": {"limit": 64 * MiB, "swap": 32 * MiB}},
         r"^linux\.resources\.memory\.swap: the memory\+swap limit .* must be at least"),
        ({"memory": {"swappiness": 101}}, r"^linux\.resources\.memory\.swappiness: must be between 0 and 100"),
        ({"memory": {"disableOOMKiller": 1}}, r"^linux\.resources\.memory\.disableOOMKiller: must be true or false"),
        ({"cpu": {"shares": -1}}, r"^linux\.resources\.cpu\.shares: must be between 0"),
        ({"cpu": {"quota": 500}}, r"^linux\.resources\.cpu\.quota: must be at least 1000"),
        ({"cpu": {"period": 10}}, r"^linux\.resources\.cpu\.period: must be between 1000 and 1000000"),
        ({"cpu": {"realtimeRuntime": 950000}}, r"^linux\.resources\.cpu\.realtimeRuntime: real-time CPU limits are not supported"),
        ({"cpu": {"realtimePeriod": 1000000}}, r"^linux\.resources\.cpu\.realtimePeriod: real-time"),
        ({"cpu": {"cpus": "zero"}}, r"^linux\.resources\.cpu\.cpus: must be a list such as"),
        ({"cpu": {"mems": 0}}, r"^linux\.resources\.cpu\.mems: must be a list such as"),
        ({"cpu": {"idle": 2}}, r"^linux\.resources\.cpu\.idle: must be between 0 and 1"),
        ({"pids": {"limit": "10"}}, r"^linux\.resources\.pids\.limit: must be an integer, got '10'"),
        ({"blockIO": {"weight": 5}}, r"^linux\.resources\.blockIO\.weight: must be between 10 and 1000"),
        ({"blockIO": {"weightDevice": [{"minor": 0, "weight": 100}]}},
         r"^linux\.resources\.blockIO\.weightDevice\[0\]: major and minor are required"),
        ({"blockIO": {"throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": "fast"}]}},
         r"^linux\.resources\.blockIO\.throttleReadBpsDevice\[0\]\.rate: must be an integer"),
        ({"hugepageLimits": [{"pageSize": "2M", "limit": 1}]},
         r"^linux\.resources\.hugepageLimits\[0\]\.pageSize: must be a size such as"),
        ({"hugepageLimits": {}}, r"^linux\.resources\.hugepageLimits: must be an array"),
        ({"unified": {"a/b": "1"}}, r"^linux\.resources\.unified: 'a/b' must be a cgroup file name"),
        ({"unified": {"memory.high": 5}}, r"^linux\.resources\.unified\.memory\.high: must be a string"),
        ({"unified": {"a\nb": 5}}, r"^linux\.resources\.unified\['a\\nb'\]: must be a string, got 5$"),
        ({"network": {"classID": 5}}, r"^linux\.resources\.network: not supported"),
        ({"rdma": {"mlx": {"hcaHandles": 1}}}, r"^linux\.resources\.rdma: not supported"),
        ({"devices": [{"allow": True, "type": "x", "access": "rwm"}]},
         r'^linux\.resources\.devices\[0\]\.type: must be "a", "b" or "c"'),
        ({"devices": ["x"]}, r"^linux\.resources\.devices\[0\]: must be an object, got 'x'"),
        ({"devices": {"allow": False}}, r"^linux\.resources\.devices: must be an array"),
        ({"devices": [{"allow": False, "access": ""}]}, r"^linux\.resources\.devices\[0\]\.access: must be some of"),
        ({"devices": [{"allow": False, "access": "rwx"}]}, r"^linux\.resources\.devices\[0\]\.access"),
        ({"devices": [{"allow": "yes", "access": "r"}]}, r"^linux\.resources\.devices\[0\]\.allow: must be true or false"),
        ({"devices": [{"allow": True, "type": "c", "major": -5, "access": "r"}]},
         r"^linux\.resources\.devices\[0\]\.major: must be between -1"),
    ],
)  # fmt: skip
def test_invalid_values_name_the_field(v1: FakeFS, resources: object, match: str) -> None:
    with pytest.raises(RuntimeFailure, match=match):
        check_resources(resources)  # type: ignore[arg-type]
    with pytest.raises(RuntimeFailure, match=match):
        Cgroup.create("/t/c1", resources)  # type: ignore[arg-type]
    assert v1.writes == [] and not [d for d in v1.tree() if "/t" in d]  # nothing made


def test_zero_means_unset_and_kernel_memory_is_ignored() -> None:
    notes = check_resources({"memory": {"limit": 0, "kernel": 1 << 30, "kernelTCP": 0},
                             "cpu": {"shares": 0, "quota": 0, "realtimeRuntime": 0},
                             "blockIO": {"weight": 0, "leafWeight": 10}})  # fmt: skip
    assert any("memory.kernel" in n and "ignored" in n for n in notes)
    assert any("leafWeight" in n for n in notes)
    assert check_resources(None) == []
    assert check_resources({}) == []


# -- v1 --------------------------------------------------------------------------------------

FULL = {
    "memory": {"limit": 64 * MiB, "swap": 128 * MiB, "reservation": 32 * MiB, "swappiness": 10,
               "disableOOMKiller": True, "kernel": 1 << 20},
    "cpu": {"shares": 512, "quota": 50000, "period": 100000, "burst": 1000, "idle": 0,
            "cpus": "0-1", "mems": "0"},
    "pids": {"limit": 20},
    "blockIO": {"weight": 300, "weightDevice": [{"major": 8, "minor": 0, "weight": 500}],
                "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1 << 20}],
                "throttleWriteIOPSDevice": [{"major": 8, "minor": 16, "rate": 100}]},
    "hugepageLimits": [{"pageSize": "2MB", "limit": 4 * MiB}],
    "devices": [{"allow": False, "access": "rwm"},
                {"allow": True, "type": "c", "major": 10, "minor": 200, "access": "rw"}],
}  # fmt: skip


def test_v1_create_writes_every_field(v1: FakeFS) -> None:
    cg = Cgroup.create("/a/b", FULL)
    assert cg.path == cg.name == "/a/b" and cg.version == 1
    hier = ("memory", "cpu,cpuacct", "pids", "devices", "freezer", "cpuset", "blkio", "hugetlb")
    assert cg.paths == sorted(str(v1.root / h / "a/b") for h in hier)  # co-mount: one dir
    assert cg.procs_files == [f"{d}/cgroup.procs" for d in cg.paths]
    # a new cpuset is empty: the parent's cpus/mems at each level, then the given ones
    assert v1.values("cpuset/a/cpuset.cpus") == ["0-3"]
    assert v1.values("cpuset/a/b/cpuset.cpus") == ["0-3", "0-1"]
    assert v1.values("cpuset/a/b/cpuset.mems") == ["0", "0"]
    # devices: the spec's rules in order, then runc's defaults
    assert v1.values("devices/a/b/devices.deny") == ["a"]
    assert v1.values("devices/a/b/devices.allow")[:4] == ["c 10:200 rw", "c *:* m", "b *:* m",
                                                           "c 1:3 rwm"]  # fmt: skip
    assert "c 136:* rwm" in v1.values("devices/a/b/devices.allow")
    assert v1.order(("devices/a/b/devices.deny", "a"))[0] < v1.order(
        ("devices/a/b/devices.allow", "c 10:200 rw"))[0]  # fmt: skip
    # memory: the limit first in a fresh (unlimited) cgroup, then memory+swap
    m = "memory/a/b/"
    assert v1.values(m + "memory.limit_in_bytes") == [str(64 * MiB)]
    assert v1.values(m + "memory.memsw.limit_in_bytes") == [str(128 * MiB)]
    a, b = v1.order((m + "memory.limit_in_bytes", str(64 * MiB)),
                    (m + "memory.memsw.limit_in_bytes", str(128 * MiB)))  # fmt: skip
    assert a < b
    assert v1.values(m + "memory.soft_limit_in_bytes") == [str(32 * MiB)]
    assert v1.values(m + "memory.swappiness") == ["10"]
    assert v1.values(m + "memory.oom_control") == ["1"]
    c = "cpu,cpuacct/a/b/"
    assert v1.values(c + "cpu.shares") == ["512"]
    assert v1.values(c + "cpu.cfs_period_us") == ["100000"]
    assert v1.values(c + "cpu.cfs_quota_us") == ["50000"]
    assert v1.values(c + "cpu.cfs_burst_us") == ["1000"]
    assert v1.values(c + "cpu.idle") == ["0"]
    assert v1.values("pids/a/b/pids.max") == ["20"]
    # blkio: no blkio.weight (blk-mq), so BFQ's files
    assert v1.values("blkio/a/b/blkio.bfq.weight") == ["300"]
    assert v1.values("blkio/a/b/blkio.bfq.weight_device") == ["8:0 500"]
    assert v1.values("blkio/a/b/blkio.throttle.read_bps_device") == [f"8:0 {1 << 20}"]
    assert v1.values("blkio/a/b/blkio.throttle.write_iops_device") == ["8:16 100"]
    assert v1.values("hugetlb/a/b/hugetlb.2MB.limit_in_bytes") == [str(4 * MiB)]
    assert any("memory.kernel" in w for w in cg.warnings)
    # nothing was written outside the container's own dirs, but the cpuset parents' copy
    # (and the freezer's has nothing to write)
    written = {p.rsplit("/", 1)[0] for p, _v in v1.writes}
    assert written == {f"{h}/a/b" for h in hier if h != "freezer"} | {"cpuset/a"}


def test_v1_blkio_weight_prefers_cfq_files(v1: FakeFS) -> None:
    v1.extra = {"blkio.weight": "500", "blkio.weight_device": ""}
    Cgroup.create("/a", {"blockIO": {"weight": 10, "weightDevice": [{"major": 8, "minor": 0,
                                                                      "weight": 20}]}})  # fmt: skip
    assert v1.values("blkio/a/blkio.weight") == ["10"]
    assert v1.values("blkio/a/blkio.weight_device") == ["8:0 20"]
    assert v1.values("blkio/a/blkio.bfq.weight") == []


def test_v1_empty_resources_write_nothing_but_the_cpuset(v1: FakeFS) -> None:
    Cgroup.create("/a", None)
    Cgroup.create("/b", {})
    assert {p.split("/")[-1] for p, _v in v1.writes} == {"cpuset.cpus", "cpuset.mems"}


def test_v1_unlimited_memory_and_pids(v1: FakeFS) -> None:
    Cgroup.create("/a", {"memory": {"limit": -1}, "pids": {"limit": 0}})
    # runc: unlimited memory with swap unset means unlimited swap too
    assert v1.values("memory/a/memory.memsw.limit_in_bytes") == ["-1"]
    assert v1.values("memory/a/memory.limit_in_bytes") == ["-1"]
    assert v1.values("pids/a/pids.max") == ["max"]
    Cgroup.create("/b", {"pids": {"limit": -1}})
    assert v1.values("pids/b/pids.max") == ["max"]


def test_v1_swap_order_on_update(v1: FakeFS) -> None:
    cg = Cgroup.create("/a", {"memory": {"limit": 32 * MiB, "swap": 64 * MiB}})
    m = "memory/a/"
    v1.writes.clear()
    cg.update({"memory": {"limit": 128 * MiB, "swap": 256 * MiB}})  # growing: swap first
    assert [p.rsplit("/", 1)[1] for p, _v in v1.writes] == [
        "memory.memsw.limit_in_bytes", "memory.limit_in_bytes"]  # fmt: skip
    v1.writes.clear()
    cg.update({"memory": {"limit": 16 * MiB, "swap": 32 * MiB}})  # shrinking: memory first
    assert [p.rsplit("/", 1)[1] for p, _v in v1.writes] == [
        "memory.limit_in_bytes", "memory.memsw.limit_in_bytes"]  # fmt: skip
    assert v1.read(m + "memory.limit_in_bytes") == str(16 * MiB)
    v1.writes.clear()
    cg.update({"memory": {"limit": 8 * MiB, "swap": -1}})  # unlimited swap: swap first
    assert [v for _p, v in v1.writes] == ["-1", str(8 * MiB)]


def test_v1_without_swap_accounting_warns(v1: FakeFS) -> None:
    v1.drop = {"memory.memsw.limit_in_bytes"}
    cg = Cgroup.create("/a", {"memory": {"limit": 32 * MiB, "swap": 64 * MiB}})
    assert v1.values("memory/a/memory.limit_in_bytes") == [str(32 * MiB)]
    assert cg.warnings == [cgroups._NO_SWAP]
    assert not Cgroup.create("/b", {"memory": {"limit": 32 * MiB, "swap": -1}}).warnings


def test_v1_update_applies_only_what_is_given(v1: FakeFS) -> None:
    cg = Cgroup.create("/a", FULL)
    v1.writes.clear()
    cg.update({"pids": {"limit": 50}, "cpu": {"quota": 20000}})
    assert v1.writes == [("cpu,cpuacct/a/cpu.cfs_quota_us", "20000"), ("pids/a/pids.max", "50")]
    v1.writes.clear()
    cg.update({})
    assert v1.writes == []


def test_v1_shares_read_back(v1: FakeFS) -> None:
    v1.clamp["cpu.shares"] = lambda v: str(min(max(int(v), 2), 262144))
    with pytest.raises(
        RuntimeFailure, match=r"cpu\.shares: the maximum allowed cpu-shares is 262144"
    ):
        Cgroup.create("/a", {"cpu": {"shares": 1 << 20}})
    with pytest.raises(RuntimeFailure, match=r"cpu\.shares: the minimum allowed cpu-shares is 2"):
        Cgroup.create("/b", {"cpu": {"shares": 1}})
    assert not [d for d in v1.tree() if d.endswith(("/a", "/b"))]  # undone


def test_v1_refuses_unified(v1: FakeFS) -> None:
    with pytest.raises(
        RuntimeFailure, match=r"^linux\.resources\.unified: this host uses cgroup v1"
    ):
        Cgroup.create("/a", {"unified": {"memory.high": "1G"}})
    assert not [d for d in v1.tree() if d.endswith("/a")]
    Cgroup.create("/b", {"unified": {}})  # empty is fine


def test_v1_missing_controller_names_the_field(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    fs = FakeFS(tmp_path, monkeypatch, 1, hierarchies=("memory", "cpu,cpuacct", "pids"))
    with pytest.raises(RuntimeFailure, match=r"controller\(s\) hugetlb are not mounted.*"
                                             r"linux\.resources\.hugepageLimits"):  # fmt: skip
        Cgroup.create("/a", {"hugepageLimits": [{"pageSize": "2MB", "limit": 0}]})
    with pytest.raises(RuntimeFailure, match=r"blkio are not mounted.*linux\.resources\.blockIO"):
        Cgroup.create("/a", {"blockIO": {"weight": 100}})
    assert fs.tree() == [".", "cpu,cpuacct", "memory", "pids"]  # nothing made
    # device rules without the devices controller: not enforced, said so
    cg = Cgroup.create("/a", Resources().to_oci())
    assert any("devices" in w and "not enforced" in w for w in cg.warnings)


def test_v1_unknown_huge_page_size(v1: FakeFS) -> None:
    with pytest.raises(
        RuntimeFailure, match=r"hugepageLimits\[1\]\.pageSize: this kernel has no 64KB"
    ):
        Cgroup.create("/a", {"hugepageLimits": [{"pageSize": "2MB", "limit": 0},
                                                {"pageSize": "64KB", "limit": 0}]})  # fmt: skip
    assert not [d for d in v1.tree() if d.endswith("/a")]


@pytest.mark.parametrize(
    ("rule", "lines"),
    [
        ({"allow": True, "access": "rwm"}, ["a"]),
        ({"allow": True, "type": "a", "major": -1, "access": "mrw"}, ["a"]),
        ({"allow": True, "type": "a", "access": "m"}, ["c *:* m", "b *:* m"]),
        ({"allow": True, "type": "a", "major": 8, "access": "rw"}, ["c 8:* rw", "b 8:* rw"]),
        ({"allow": True, "type": "b", "major": 8, "minor": 1, "access": "wr"}, ["b 8:1 rw"]),
        ({"allow": True, "type": "c", "minor": 3, "access": "r"}, ["c *:3 r"]),
    ],
)
def test_v1_device_rule_lines(v1: FakeFS, rule: dict[str, object], lines: list[str]) -> None:
    Cgroup.create("/a", {"devices": [rule]})
    written = v1.values("devices/a/devices.allow")
    assert written[: len(lines)] == lines
    assert len(written) == len(lines) + len(DEFAULT_ALLOWED_DEVICES)
    assert v1.values("devices/a/devices.deny") == []


def test_v1_device_rules_with_linux_devices(v1: FakeFS) -> None:
    Cgroup.create("/a", {"devices": [{"allow": False, "access": "rwm"}]},
                  linux_devices=[{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229},
                                 {"path": "/dev/sda", "type": "b", "major": 8, "minor": 0},
                                 {"path": "/dev/fifo", "type": "p"}])  # fmt: skip
    assert v1.values("devices/a/devices.deny") == ["a"]
    assert v1.values("devices/a/devices.allow")[-2:] == ["c 10:229 rwm", "b 8:0 rwm"]


def test_v1_privileged_allows_everything(v1: FakeFS) -> None:
    Cgroup.create("/a", Resources(all_devices=True).to_oci())
    assert v1.values("devices/a/devices.allow")[0] == "a"
    assert v1.values("devices/a/devices.deny") == []


def test_v1_freeze_and_thaw(v1: FakeFS) -> None:
    cg = Cgroup.create("/a", None)
    assert not cg.frozen()
    cg.freeze()
    assert cg.frozen() and v1.read("freezer/a/freezer.state") == "FROZEN"
    cg.thaw()
    assert not cg.frozen() and v1.read("freezer/a/freezer.state") == "THAWED"
    v1.stuck = True
    with pytest.raises(RuntimeFailure, match="did not all freeze within 0.05s.*thawed them again"):
        cg.freeze(timeout=0.05)
    assert v1.read("freezer/a/freezer.state") == "THAWED"


def test_no_freezer_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    FakeFS(tmp_path, monkeypatch, 1, hierarchies=("memory", "pids"))
    cg = Cgroup.create("/a", None)
    with pytest.raises(RuntimeFailure, match="has no freezer"):
        cg.freeze()
    assert not cg.frozen()


def test_create_undoes_only_what_it_made(v1: FakeFS) -> None:
    for h in V1_HIERARCHIES:
        (v1.root / h / "keep").mkdir()
        v1.populate(v1.root / h / "keep")
        if h == "cpuset":
            (v1.root / h / "keep/cpuset.cpus").write_text("0")
            (v1.root / h / "keep/cpuset.mems").write_text("0")
    v1.drop = {"pids.max"}
    with pytest.raises(
        RuntimeFailure,
        match=r"linux\.resources\.pids\.limit: the kernel has no cgroup file pids\.max",
    ):
        Cgroup.create("/keep/x/y", {"pids": {"limit": 5}})
    assert [d for d in v1.tree() if "keep" in d] == sorted(f"{h}/keep" for h in V1_HIERARCHIES)


def test_create_refuses_a_busy_cgroup(v1: FakeFS) -> None:
    first = Cgroup.create("/a", None)
    Path(first._dirs["memory"], "cgroup.procs").write_text("4242\n")
    with pytest.raises(RuntimeFailure, match=r"cgroup /a already has processes in it \(\[4242\]\)"):
        Cgroup.create("/a", {"pids": {"limit": 5}})
    assert os.path.isdir(first._dirs["memory"])  # not ours to delete
    assert v1.values("pids/a/pids.max") == []


def test_open_and_remove(v1: FakeFS) -> None:
    assert Cgroup.open("/a/b") is None
    made = Cgroup.create("/a/b", None)
    cg = Cgroup.open("/a/b")
    assert cg is not None and cg.paths == made.paths and cg.path == "/a/b"
    cg.remove()
    assert Cgroup.open("/a/b") is None
    assert all((v1.root / h / "a").is_dir() for h in V1_HIERARCHIES)  # the parent stays


def test_engine_path_and_bad_paths(v1: FakeFS) -> None:
    """The engine's form: /minirun/<id> with the record converted by to_oci."""
    cg = Cgroup.create(engine_path(CID), parse_resources(memory="32m", pids_limit=7).to_oci())
    assert cg.path == f"/minirun/{CID}"
    assert v1.values(f"pids/minirun/{CID}/pids.max") == ["7"]
    assert v1.values(f"memory/minirun/{CID}/memory.memsw.limit_in_bytes") == [str(64 * MiB)]
    opened = Cgroup.open(engine_path(CID))
    assert opened is not None and opened.paths == cg.paths
    for bad in ("", "/", "/a/..", "a/../.."):
        with pytest.raises(RuntimeFailure):
            Cgroup.create(bad, None)


# -- v2 --------------------------------------------------------------------------------------


def test_v2_create_writes_every_field(v2: FakeFS) -> None:
    res = dict(FULL, unified={"memory.high": str(48 * MiB), "io.max": "8:0 wbps=100\n8:16 riops=5"})
    cg = Cgroup.create("/machine.slice/libpod-abc.scope", res)
    leaf = "machine.slice/libpod-abc.scope/"
    assert cg.paths == [str(v2.root / leaf.rstrip("/"))] and cg.version == 2
    # every ancestor delegates what the resources need (the base set, then cpuset, io...)
    for d in ("cgroup.subtree_control", "machine.slice/cgroup.subtree_control"):
        assert v2.values(d) == ["+memory", "+pids", "+cpu", "+cpuset", "+io", "+hugetlb"]
    assert v2.values(leaf + "cgroup.subtree_control") == []  # the leaf's own stays empty
    assert v2.values(leaf + "memory.swap.max") == [str(64 * MiB)]  # swap alone
    assert v2.values(leaf + "memory.max") == [str(64 * MiB)]
    assert v2.values(leaf + "memory.low") == [str(32 * MiB)]
    assert v2.values(leaf + "cpu.weight") == [str(shares_to_weight(512))] == ["20"]
    assert v2.values(leaf + "cpu.max") == ["50000 100000"]
    assert v2.values(leaf + "cpu.max.burst") == ["1000"]
    assert v2.values(leaf + "cpu.idle") == ["0"]
    assert v2.values(leaf + "cpuset.cpus") == ["0-1"]
    assert v2.values(leaf + "cpuset.mems") == ["0"]
    assert v2.values(leaf + "pids.max") == ["20"]
    # no io.bfq.weight: io.weight on its 1..10000 scale
    assert v2.values(leaf + "io.weight") == [str(blkio_weight_to_io_weight(300)),
                                             f"8:0 {blkio_weight_to_io_weight(500)}"]  # fmt: skip
    # io.max: the throttles, then the unified lines one write each
    assert v2.values(leaf + "io.max") == [f"8:0 rbps={1 << 20}", "8:16 wiops=100",
                                          "8:0 wbps=100", "8:16 riops=5"]  # fmt: skip
    assert v2.values(leaf + "hugetlb.2MB.max") == [str(4 * MiB)]
    assert v2.values(leaf + "hugetlb.2MB.rsvd.max") == [str(4 * MiB)]
    assert v2.values(leaf + "memory.high") == [str(48 * MiB)]
    assert v2.writes[-1] == (leaf + "io.max", "8:16 riops=5")  # unified last
    # devices: one eBPF filter with the spec's rules, then runc's defaults
    [(where, rules)] = v2.device_filters
    assert where == leaf.rstrip("/") and not rules[0].allow and rules[1].major == 10
    assert len(rules) == 2 + len(DEFAULT_ALLOWED_DEVICES)
    assert not any("devices" in w for w in cg.warnings)
    assert any("swappiness" in w for w in cg.warnings)
    assert any("disableOOMKiller" in w for w in cg.warnings)


def test_v2_engine_container(v2: FakeFS) -> None:
    res = parse_resources(memory="32m", pids_limit=10).to_oci()
    cg = Cgroup.create(engine_path(CID), res)
    leaf = f"minirun/{CID}/"
    assert v2.values("cgroup.subtree_control") == ["+memory", "+pids", "+cpu"]
    assert v2.values(leaf + "memory.max") == [str(32 * MiB)]
    assert v2.values(leaf + "memory.swap.max") == [str(32 * MiB)]  # Docker's 2x default
    assert v2.values(leaf + "pids.max") == ["10"]
    assert cg.stats().memory_limit == 32 * MiB and cg.stats().pids_limit == 10


def test_v2_bfq_weights(v2: FakeFS) -> None:
    v2.extra = {"io.bfq.weight": "default 100"}
    Cgroup.create("/a", {"blockIO": {"weight": 300, "weightDevice": [{"major": 8, "minor": 0,
                                                                       "weight": 50}]}})  # fmt: skip
    assert v2.values("a/io.bfq.weight") == ["300", "8:0 50"]  # BFQ keeps blkio's scale
    assert v2.values("a/io.weight") == []


@pytest.mark.parametrize(
    ("memory", "swap_max", "memory_max"),
    [
        ({"limit": 32 * MiB, "swap": 32 * MiB}, "0", str(32 * MiB)),  # no swap at all
        ({"limit": 32 * MiB, "swap": -1}, "max", str(32 * MiB)),
        ({"limit": -1}, "max", "max"),  # both unlimited
        ({"swap": -1}, "max", None),
        ({"limit": 32 * MiB}, None, str(32 * MiB)),  # swap left alone
    ],
)
def test_v2_swap(v2: FakeFS, memory: dict[str, int], swap_max: str | None,
                 memory_max: str | None) -> None:  # fmt: skip
    Cgroup.create("/a", {"memory": memory})
    assert v2.values("a/memory.swap.max") == ([swap_max] if swap_max else [])
    assert v2.values("a/memory.max") == ([memory_max] if memory_max else [])


def test_v2_swap_without_accounting_warns(v2: FakeFS) -> None:
    v2.drop = {"memory.swap.max"}
    cg = Cgroup.create("/a", {"memory": {"limit": 32 * MiB, "swap": 64 * MiB}})
    assert cg.warnings == [cgroups._NO_SWAP]
    assert v2.values("a/memory.max") == [str(32 * MiB)]


def test_v2_update(v2: FakeFS) -> None:
    cg = Cgroup.create(
        "/a", {"memory": {"limit": 32 * MiB}, "cpu": {"quota": 50000, "period": 100000}}
    )
    v2.writes.clear()
    cg.update({"cpu": {"period": 200000}})  # the quota stays
    assert v2.writes == [("a/cpu.max", "50000 200000")]
    v2.writes.clear()
    cg.update({"cpu": {"quota": -1}})
    assert v2.writes == [("a/cpu.max", "max")]
    v2.writes.clear()
    cg.update({"memory": {"swap": 48 * MiB}})  # swap alone: against the memory limit there is
    assert v2.writes == [("a/memory.swap.max", str(16 * MiB))]
    with pytest.raises(RuntimeFailure, match=r"memory\.swap: the memory\+swap limit .* at least"):
        cg.update({"memory": {"swap": 16 * MiB}})
    v2.writes.clear()
    cg.update({"blockIO": {"weight": 100}})  # io was not needed at create: enabled now
    assert v2.writes == [
        ("cgroup.subtree_control", "+io"),
        ("a/io.weight", str(blkio_weight_to_io_weight(100))),
    ]
    assert v2.device_filters == []  # no devices given: no filter
    cg.update({"devices": [{"allow": True, "access": "rwm"}]})  # replaced (devices_bpf.attach)
    assert [(d, len(r)) for d, r in v2.device_filters] == [("a", 1 + len(DEFAULT_ALLOWED_DEVICES))]


def test_v2_swap_needs_a_memory_limit(v2: FakeFS) -> None:
    with pytest.raises(
        RuntimeFailure, match=r"memory\.swap: a memory\+swap limit needs a memory limit"
    ):
        Cgroup.create("/a", {"memory": {"swap": 64 * MiB}})
    assert v2.tree() == ["."]


def test_v2_missing_controller(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fs = FakeFS(tmp_path, monkeypatch, 2, controllers="memory pids cpu")
    with pytest.raises(
        RuntimeFailure, match=r"controller\(s\) io are not available.*linux\.resources\.blockIO"
    ):
        Cgroup.create("/x/a", {"blockIO": {"weight": 100}})
    with pytest.raises(RuntimeFailure, match=r"hugetlb are not available.*hugepageLimits"):
        Cgroup.create("/x/a", {"hugepageLimits": [{"pageSize": "2MB", "limit": 0}]})
    assert fs.tree() == ["."] and fs.writes == []


def test_v2_unified_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fs = FakeFS(tmp_path, monkeypatch, 2, controllers="memory pids cpu")
    with pytest.raises(
        RuntimeFailure, match=r"unified\.rdma\.max: the cgroup v2 controller rdma is not available"
    ):
        Cgroup.create("/a", {"unified": {"rdma.max": "x"}})
    with pytest.raises(RuntimeFailure, match=r"unified\.memory\.nonsense: there is no cgroup file"):
        Cgroup.create("/a", {"unified": {"memory.nonsense": "1"}})
    assert fs.tree() == ["."]
    Cgroup.create("/a", {"unified": {"pids.max": "9"}})
    assert fs.values("a/pids.max") == ["9"]


def test_v2_freeze_and_thaw(v2: FakeFS) -> None:
    cg = Cgroup.create("/a", None)
    assert not cg.frozen()
    cg.freeze()
    assert cg.frozen() and v2.read("a/cgroup.freeze") == "1"
    cg.thaw()
    assert not cg.frozen() and v2.read("a/cgroup.freeze") == "0"
    v2.stuck = True
    with pytest.raises(RuntimeFailure, match="did not all freeze"):
        cg.freeze(timeout=0.05)
    assert v2.read("a/cgroup.freeze") == "0" and not cg.frozen()


# -- conversions and the engine's side --------------------------------------------------------


def test_conversions() -> None:
    assert [shares_to_weight(s) for s in (0, 1, 2, 1024, 262144, 10**6)] == [
        0,
        1,
        1,
        39,
        10000,
        10000,
    ]
    assert [blkio_weight_to_io_weight(w) for w in (0, 10, 500, 1000)] == [0, 1, 4950, 10000]


def test_with_default_devices() -> None:
    rules = with_default_devices([{"allow": False, "access": "rwm"}],
                                 [{"type": "u", "major": 4, "minor": 1}, {"type": "p"}])  # fmt: skip
    assert rules[0] == {"allow": False, "access": "rwm"}
    assert rules[1 : 1 + len(DEFAULT_ALLOWED_DEVICES)] == list(DEFAULT_ALLOWED_DEVICES)
    assert rules[-1] == {"allow": True, "type": "c", "major": 4, "minor": 1, "access": "rwm"}
    assert len(rules) == 2 + len(DEFAULT_ALLOWED_DEVICES)
    with pytest.raises(RuntimeFailure, match=r"linux\.devices\[0\]\.type"):
        with_default_devices(None, [{"type": "x"}])
    with pytest.raises(RuntimeFailure, match=r"linux\.devices\[0\]\.major: must be an integer"):
        with_default_devices(None, [{"type": "c", "minor": 1}])


def test_to_oci_empty() -> None:
    oci = Resources().to_oci()
    assert set(oci) == {"devices"}
    assert oci["devices"][0] == {"allow": False, "access": "rwm"}
    assert {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"} in oci["devices"]
    assert {"allow": True, "type": "c", "major": 136, "access": "rwm"} in oci["devices"]
    check_resources(oci)  # valid for the runtime


def test_to_oci_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    from minirun.container import resources

    monkeypatch.setattr(resources, "_cpu_count", lambda: 4)
    res = parse_resources(memory="32m", memory_swap="100m", cpus="1.5", cpu_shares=512,
                          pids_limit=20)  # fmt: skip
    oci = res.to_oci()
    assert oci["memory"] == {"limit": 32 * MiB, "swap": 100 * MiB}
    assert oci["cpu"] == {"shares": 512, "quota": 150_000, "period": 100_000}
    assert oci["pids"] == {"limit": 20}
    assert parse_resources(memory="32m").to_oci()["memory"] == {"limit": 32 * MiB, "swap": 64 * MiB}
    assert parse_resources(memory="32m", memory_swap="-1").to_oci()["memory"]["swap"] == -1
    assert parse_resources(pids_limit=0).to_oci()["pids"] == {"limit": -1}
    # a swap limit without a memory limit means nothing (but "unlimited" passes)
    assert "memory" not in Resources(memory_swap=64 * MiB).to_oci()
    assert Resources(memory_swap=-1).to_oci()["memory"] == {"swap": -1}
    assert Resources(all_devices=True).to_oci()["devices"] == [{"allow": True, "access": "rwm"}]
    # the runtime accepts what the engine makes
    check_resources(oci)


def test_engine_path() -> None:
    assert engine_path(CID) == f"/minirun/{CID}"
    assert resolve_path(None, CID, default=engine_path(CID)) == engine_path(CID)
