"""Cgroups driven by the OCI runtime spec: ``linux.cgroupsPath`` and ``linux.resources``.

One cgroup per container, for limits, stats, OOM reporting, pausing, killing and device
rules. ``resolve_path`` turns ``linux.cgroupsPath`` into a path below the root of every
hierarchy (``/minirun/<id>`` for minirun's own engine, ``/machine.slice/libpod-<id>.scope``
for Podman...), ``Cgroup.create(path, resources)`` makes it and applies the spec's
``linux.resources`` object, ``Cgroup.update(resources)`` changes it (``runtime update``).
Nothing here knows minirun's engine: the engine turns its Docker flags into an OCI
``linux.resources`` object itself (``minirun.container.resources.Resources.to_oci``).

The version is detected at run time (``version()``):

* **v1 / hybrid** (separate hierarchies per controller, maybe an empty
  ``/sys/fs/cgroup/unified``): a dir in each of memory, cpu, cpuacct, pids, devices,
  freezer, cpuset, blkio and hugetlb, wherever ``/proc/self/mountinfo`` says they are
  mounted (co-mounts such as ``cpu,cpuacct`` share one dir). cpuset.cpus/mems start empty
  in a new v1 cpuset and a process cannot join an empty one, so they are copied from the
  parent at each level.
* **v2** (``/sys/fs/cgroup/cgroup.controllers`` exists): one dir; memory, pids and cpu
  (and cpuset, io, hugetlb when the resources need them) are enabled in the
  ``cgroup.subtree_control`` of every ancestor.

The container's process joins by writing "0" into every file of ``Cgroup.procs_files``
itself, before it unshares its cgroup namespace, so its own cgroup is that namespace's root.

Where each ``linux.resources`` field goes:

=========================  ===================================  ============================
field                      v1 file                              v2 file
=========================  ===================================  ============================
memory.limit               memory.limit_in_bytes                memory.max
memory.swap (mem+swap)     memory.memsw.limit_in_bytes          memory.swap.max (swap-limit)
memory.reservation         memory.soft_limit_in_bytes           memory.low
memory.swappiness          memory.swappiness                    (ignored, warning)
memory.disableOOMKiller    memory.oom_control                   (ignored, warning)
memory.kernel/kernelTCP    (ignored, warning: deprecated)       (ignored, warning)
cpu.shares                 cpu.shares (read back)               cpu.weight (runc's map)
cpu.quota, cpu.period      cpu.cfs_quota_us, cpu.cfs_period_us  cpu.max
cpu.burst, cpu.idle        cpu.cfs_burst_us, cpu.idle           cpu.max.burst, cpu.idle
cpu.cpus, cpu.mems         cpuset.cpus, cpuset.mems             cpuset.cpus, cpuset.mems
cpu.realtime*              error when non-zero                  error when non-zero
pids.limit                 pids.max                             pids.max
blockIO.weight             blkio.weight | blkio.bfq.weight      io.bfq.weight | io.weight
blockIO.weightDevice       blkio[.bfq].weight_device            io.bfq.weight | io.weight
blockIO.throttle*Device    blkio.throttle.*_device              io.max
hugepageLimits             hugetlb.<size>.limit_in_bytes        hugetlb.<size>.max
unified                    error when non-empty                 the named files, as given
devices                    devices.deny / devices.allow         eBPF program (devices_bpf)
network, rdma              error when non-empty                 error when non-empty
=========================  ===================================  ============================

Swap limits need swap accounting (v1 ``memory.memsw.*``, v2 ``memory.swap.max``); when the
kernel has none the swap limit is skipped and a note added to ``Cgroup.warnings``, as
Docker does ("Memory limited without swap").

**Devices on v2** have no files: ``create`` and ``update`` compile the rules to an eBPF
program (BPF_CGROUP_DEVICE) and attach it to the cgroup, replacing the previous one
(``minirun.runtime.devices_bpf``, with the v1 semantics runc's emulator gives). Rules the
kernel cannot enforce (no bpf(2), not privileged) are an error, never silently skipped;
rules that allow everything need no program. ``devices_enforced()`` says whether rules
apply on this host (v1: the devices controller is mounted; v2: bpf(2) loads the program).

Device rules are runc's: when ``linux.resources.devices`` is given, ``create`` and
``update`` apply it followed by the default allowed devices (``DEFAULT_ALLOWED_DEVICES``:
/dev/null, /dev/zero, /dev/pts/*...) and an allow rule per ``linux.devices`` node (pass
``linux_devices=``), because engines such as containerd send only the leading deny-all
``[{"allow": false, "access": "rwm"}]`` and rely on the runtime for the rest
(``with_default_devices`` builds the same list). No ``devices`` at all: nothing is written,
every device stays allowed (runc's result too).

Tests point ``CGROUP_ROOT``, ``_version`` and ``_v1_mounts`` at a fake tree.

Import-light on purpose (it is on ``run``'s path): ``os``, ``errno``, ``re``, ``time``,
``dataclasses``; ``devices_bpf`` (ctypes) only when device rules meet a v2 cgroup.
"""

from __future__ import annotations

import errno
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from minirun.errors import RuntimeFailure

__all__ = [
    "DEFAULT_ALLOWED_DEVICES",
    "Cgroup",
    "CgroupStats",
    "blkio_weight_to_io_weight",
    "check_resources",
    "devices_enforced",
    "expand_slice",
    "resolve_path",
    "shares_to_weight",
    "systemd_available",
    "version",
    "with_default_devices",
]

CGROUP_ROOT = "/sys/fs/cgroup"
SYSTEMD_RUNTIME_DIR = "/run/systemd/system"  # sd_booted(3): exists iff systemd is PID 1
PARENT = "minirun"  # the legacy bare-name form ``Cgroup.create(<id>, ...)`` lives in /minirun
SYSTEMD_SCOPE_PREFIX = "minirun"  # an empty cgroupsPath with --systemd-cgroup: ":minirun:<id>"

# v1 controllers a container gets a dir in. memory/cpu/pids/cpuset/blkio/hugetlb carry
# limits; cpuacct gives CPU usage; freezer pauses (and lets kill_all stop forks while it
# signals); devices holds the allow-list.
V1_CONTROLLERS = (
    "memory", "cpu", "cpuacct", "pids", "devices", "freezer", "cpuset", "blkio", "hugetlb",
)  # fmt: skip
# v2 controllers always enabled for a container (when the kernel has them): stats use them.
# cpuset, io and hugetlb are enabled only when the resources (or an update) need them.
V2_CONTROLLERS = ("memory", "pids", "cpu")

# runc's specconv.AllowedDevices (less tun/tap), in linux.resources.devices form: mknod of
# any node (m) but no use of it, the harmless char devices and the pty devices a terminal
# needs. A container's /dev/console is a pts (major 136).
DEFAULT_ALLOWED_DEVICES: tuple[dict[str, Any], ...] = (
    {"allow": True, "type": "c", "access": "m"},
    {"allow": True, "type": "b", "access": "m"},
    {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},  # /dev/null
    {"allow": True, "type": "c", "major": 1, "minor": 8, "access": "rwm"},  # /dev/random
    {"allow": True, "type": "c", "major": 1, "minor": 7, "access": "rwm"},  # /dev/full
    {"allow": True, "type": "c", "major": 5, "minor": 0, "access": "rwm"},  # /dev/tty
    {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "rwm"},  # /dev/zero
    {"allow": True, "type": "c", "major": 1, "minor": 9, "access": "rwm"},  # /dev/urandom
    {"allow": True, "type": "c", "major": 136, "access": "rwm"},  # /dev/pts/*
    {"allow": True, "type": "c", "major": 5, "minor": 2, "access": "rwm"},  # /dev/ptmx
)

_V1_UNLIMITED = 1 << 62  # memory.limit_in_bytes reads 9223372036854771712 when unlimited
_I64_MAX = (1 << 63) - 1
_U64_MAX = (1 << 64) - 1
_MIN_SHARES, _MAX_SHARES = 2, 262144  # the kernel's bounds (kernel/sched/sched.h)
_NO_SWAP = (
    "Your kernel does not support swap limit capabilities or the cgroup is not mounted. "
    "Memory limited without swap."
)
_CPU_LIST_RE = re.compile(r"\d+(-\d+)?(,\d+(-\d+)?)*")
_PAGE_SIZE_RE = re.compile(r"[1-9]\d*[KMG]B")
_THROTTLE = (  # (OCI field, v1 file, v2 io.max key)
    ("throttleReadBpsDevice", "blkio.throttle.read_bps_device", "rbps"),
    ("throttleWriteBpsDevice", "blkio.throttle.write_bps_device", "wbps"),
    ("throttleReadIOPSDevice", "blkio.throttle.read_iops_device", "riops"),
    ("throttleWriteIOPSDevice", "blkio.throttle.write_iops_device", "wiops"),
)


@dataclass(frozen=True)
class CgroupStats:
    """A snapshot for ``stats``/``inspect``, in Docker's meanings."""

    cpu_usage_ns: int  # total CPU time of all the container's processes, ever
    memory_usage: int  # bytes, minus inactive page cache (what `docker stats` shows)
    memory_limit: int  # bytes; the host's RAM when unlimited
    pids: int  # processes (tasks) now
    pids_limit: int | None  # None when unlimited


# -- host ---------------------------------------------------------------------------------

_version: int | None = None


def version() -> int:
    """2 on a unified (v2-only) host, 1 on a v1 or hybrid host. Cached."""
    global _version
    if _version is None:
        # A hybrid host has cgroup2 at /sys/fs/cgroup/unified only; its controllers are all
        # on v1, so it is a v1 host for us (runc decides the same way).
        _version = 2 if os.path.exists(f"{CGROUP_ROOT}/cgroup.controllers") else 1
    return _version


_v1_mounts: dict[str, str] | None = None


def _v1_hierarchies() -> dict[str, str]:
    """v1 controller -> mount point, from mountinfo (co-mounts map to the same dir)."""
    global _v1_mounts
    if _v1_mounts is None:
        mounts: dict[str, str] = {}
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                fields, rfields = left.split(), right.split()
                if len(rfields) < 3 or rfields[0] != "cgroup" or len(fields) < 5:
                    continue
                point = fields[4].replace("\\040", " ")
                for opt in rfields[2].split(","):
                    if opt in V1_CONTROLLERS:
                        mounts.setdefault(opt, point)
        _v1_mounts = mounts
    return _v1_mounts


def devices_enforced() -> bool:
    """True when containers' device rules are enforced: on v1 with the devices controller,
    on v2 when this process can load a BPF_CGROUP_DEVICE program (``devices_bpf``)."""
    if version() == 1:
        return "devices" in _v1_hierarchies()
    from minirun.runtime import devices_bpf

    return devices_bpf.available()


def _device_where(given: int) -> Callable[[int], str]:
    """Names rule i of a device list in errors, as ``_devices_v1`` does."""
    return lambda i: f"linux.resources.devices[{i}]" if i < given else "default device rule"


def _attach_device_filter(cgroup_dir: str, rules: list[_DeviceRule], given: int) -> None:
    """v2: enforce ``rules`` with an eBPF program on ``cgroup_dir`` (tests replace this)."""
    from minirun.runtime import devices_bpf

    devices_bpf.attach(cgroup_dir, rules, _device_where(given))


def systemd_available() -> bool:
    """Whether systemd runs this host (sd_booted(3)); ``--systemd-cgroup`` needs it."""
    return os.path.isdir(SYSTEMD_RUNTIME_DIR)


# -- conversions --------------------------------------------------------------------------


def shares_to_weight(shares: int) -> int:
    """cpu.shares (2..262144) -> cgroup v2 cpu.weight (1..10000): the linear map runc and
    crun use (runc's ConvertCPUSharesToCgroupV2Value), so 1024 -> 39, 2 -> 1,
    262144 -> 10000. Out-of-range shares are clamped first, as v1 does. 0 keeps meaning
    "unset"."""
    if shares == 0:
        return 0
    shares = min(max(shares, _MIN_SHARES), _MAX_SHARES)
    return 1 + ((shares - 2) * 9999) // 262142


def blkio_weight_to_io_weight(weight: int) -> int:
    """blkio.weight (10..1000) -> io.weight (1..10000), runc's ConvertBlkIOToIOWeightValue."""
    if weight == 0:
        return 0
    return max(1, 1 + (weight - 10) * 9999 // 990)


# -- linux.cgroupsPath --------------------------------------------------------------------


def _clean_path(raw: str, what: str) -> str:
    """``raw`` as "/a/b": empty and "." parts dropped; "..", NUL, newline refused."""
    if "\0" in raw or "\n" in raw:
        raise RuntimeFailure(f"{what}: must not contain NUL or newline characters, got {raw!r}")
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise RuntimeFailure(f"{what}: must not contain '..' components, got {raw!r}")
    if not parts:
        raise RuntimeFailure(
            f"{what}: {raw!r} is the root cgroup; a container needs a cgroup of its own"
        )
    return "/" + "/".join(parts)


def expand_slice(slice_name: str) -> str:
    """A systemd slice name -> its cgroup path, as systemd nests slices by their dashes:
    "a-b.slice" -> "/a.slice/a-b.slice"; "-.slice" (the root slice) -> "/"."""
    suffix = ".slice"
    if len(slice_name) <= len(suffix) or not slice_name.endswith(suffix) or "/" in slice_name:
        raise RuntimeFailure(f"invalid systemd slice name {slice_name!r}")
    stem = slice_name[: -len(suffix)]
    if stem == "-":
        return "/"
    path, prefix = "", ""
    for component in stem.split("-"):
        if not component:  # "a--b.slice", "-a.slice", "a-.slice"
            raise RuntimeFailure(f"invalid systemd slice name {slice_name!r}")
        path += f"/{prefix}{component}{suffix}"
        prefix += component + "-"
    return path


def _systemd_path(raw: str) -> str:
    what = "linux.cgroupsPath"
    parts = raw.split(":")
    if len(parts) != 3:
        raise RuntimeFailure(
            f'{what}: expected "slice:prefix:name" for systemd cgroups, got {raw!r}'
        )
    slice_name, prefix, name = parts
    try:
        base = expand_slice(slice_name or "system.slice")
    except RuntimeFailure as e:
        raise RuntimeFailure(f"{what}: {e} (in {raw!r})") from None
    if not name:
        raise RuntimeFailure(f"{what}: the name part of {raw!r} is empty")
    for part in (prefix, name):
        if "/" in part or "\0" in part or "\n" in part or part in (".", ".."):
            raise RuntimeFailure(f"{what}: invalid unit name part {part!r} in {raw!r}")
    # runc's getUnitName: a scope "<prefix>-<name>.scope" unless the name is a slice
    unit = name if name.endswith(".slice") else f"{prefix}-{name}.scope"
    return base.rstrip("/") + "/" + unit


def resolve_path(
    cgroups_path: str | None,
    container_id: str,
    systemd: bool = False,
    *,
    default: str | None = None,
) -> str:
    """``linux.cgroupsPath`` -> the container's cgroup path below every hierarchy's root,
    starting with "/".

    * cgroupfs (``systemd=False``): an absolute path is used as is (cleaned); a relative
      one is taken relative to the root (runc takes it relative to its own cgroup; both
      agree when the runtime runs in the root cgroup, as under a daemon).
    * systemd (``systemd=True``): "slice:prefix:name" -> "<slice path>/<prefix>-<name>.scope"
      ("machine.slice:libpod:abc" -> "/machine.slice/libpod-abc.scope"; an empty slice is
      system.slice; a name ending in .slice is used as is). Only computed here: whether
      systemd runs (``systemd_available()``) is the caller's question.
    * empty or None: ``default`` when given (minirun's engine passes "/minirun/<id>"), else
      what runc does: "/<id>" (cgroupfs) or ":minirun:<id>" (systemd).

    A path with ".." components, NUL or newline is refused (RuntimeFailure naming the
    field), and so is the root cgroup itself."""
    if cgroups_path is not None and not isinstance(cgroups_path, str):
        raise RuntimeFailure(f"linux.cgroupsPath: must be a string, got {cgroups_path!r}")
    raw = cgroups_path or ""
    if "\0" in raw or "\n" in raw:
        raise RuntimeFailure(
            f"linux.cgroupsPath: must not contain NUL or newline characters, got {raw!r}"
        )
    if not raw:
        if default is not None:
            return _clean_path(default, "default cgroup path")
        _check_name(container_id, "container id")
        raw = f":{SYSTEMD_SCOPE_PREFIX}:{container_id}" if systemd else container_id
    if systemd:
        return _systemd_path(raw)
    return _clean_path(raw, "linux.cgroupsPath")


def _check_name(name: str, what: str = "cgroup name") -> None:
    # A single path component: never let it climb out of its parent.
    if not name or "/" in name or name in (".", "..") or "\0" in name or "\n" in name:
        raise RuntimeFailure(f"invalid {what} {name!r}")


# -- linux.resources: validation ----------------------------------------------------------


@dataclass(frozen=True)
class _DeviceRule:
    """One device cgroup rule (linux.resources.devices entry)."""

    allow: bool
    type: str  # "a" (any), "c", "b"
    major: int | None  # None = any
    minor: int | None
    access: str  # some of "rwm"

    def v1_lines(self) -> list[str]:
        """What devices.allow/deny take. The kernel reads any "a ..." as *everything*, so
        only a full wildcard becomes "a"; "type a" with a number or partial access is
        spelt as the char and the block rule it means."""
        if (self.type == "a" and self.major is None and self.minor is None
                and set(self.access) == set("rwm")):  # fmt: skip
            return ["a"]
        major = "*" if self.major is None else str(self.major)
        minor = "*" if self.minor is None else str(self.minor)
        types = ("c", "b") if self.type == "a" else (self.type,)
        return [f"{t} {major}:{minor} {self.access}" for t in types]


@dataclass
class _Limits:
    """linux.resources, validated and typed. None = not given (leave the cgroup as is)."""

    mem_limit: int | None = None  # -1 = unlimited
    mem_reservation: int | None = None
    mem_swap: int | None = None  # memory+swap; -1 = unlimited
    swappiness: int | None = None
    oom_kill_disable: bool | None = None
    cpu_shares: int | None = None
    cpu_quota: int | None = None  # -1 = unlimited
    cpu_period: int | None = None
    cpu_burst: int | None = None
    cpu_idle: int | None = None
    cpus: str | None = None
    mems: str | None = None
    pids_limit: int | None = None  # <= 0 = unlimited
    blkio_weight: int | None = None
    blkio_weight_device: list[tuple[int, int, int]] = field(default_factory=list)
    throttle: dict[str, list[tuple[int, int, int]]] = field(default_factory=dict)
    hugepages: list[tuple[int, str, int]] = field(default_factory=list)  # (index, size, limit)
    unified: dict[str, str] = field(default_factory=dict)
    devices: list[_DeviceRule] | None = None  # the given rules, then the defaults
    devices_given: int = 0  # how many of ``devices`` the spec gave
    notes: list[str] = field(default_factory=list)  # fields accepted but not applied

    def needed(self, ver: int) -> list[tuple[str, str]]:
        """(controller, field) for every controller these settings cannot do without.
        v1 devices are not in it: without the devices controller rules are simply not
        enforced, as on v2 (``devices_enforced()``)."""
        r = "linux.resources"
        memory = (self.mem_limit, self.mem_reservation, self.mem_swap, self.swappiness,
                  self.oom_kill_disable)  # fmt: skip
        cpu = (self.cpu_shares, self.cpu_quota, self.cpu_period, self.cpu_burst, self.cpu_idle)
        out: list[tuple[str, str]] = []
        if any(v is not None for v in memory):
            out.append(("memory", f"{r}.memory"))
        if any(v is not None for v in cpu):
            out.append(("cpu", f"{r}.cpu"))
        if self.cpus is not None or self.mems is not None:
            out.append(("cpuset", f"{r}.cpu.cpus/mems"))
        if self.pids_limit is not None:
            out.append(("pids", f"{r}.pids"))
        if self.blkio_weight is not None or self.blkio_weight_device or self.throttle:
            out.append(("blkio" if ver == 1 else "io", f"{r}.blockIO"))
        if self.hugepages:
            out.append(("hugetlb", f"{r}.hugepageLimits"))
        return out


def _get(obj: Mapping[str, Any], key: str) -> Any:
    return obj.get(key)


def _as_int(value: Any, where: str, lo: int | None = None, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise RuntimeFailure(f"{where}: must be an integer, got {value!r}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        if hi is None:
            raise RuntimeFailure(f"{where}: must be at least {lo}, got {value}")
        if lo is None:
            raise RuntimeFailure(f"{where}: must be at most {hi}, got {value}")
        raise RuntimeFailure(f"{where}: must be between {lo} and {hi}, got {value}")
    return value


def _opt_int(obj: Mapping[str, Any], key: str, where: str, lo: int | None = None,
             hi: int | None = None) -> int | None:  # fmt: skip
    value = _get(obj, key)
    return None if value is None else _as_int(value, f"{where}.{key}", lo, hi)


def _opt_obj(obj: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = _get(obj, key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise RuntimeFailure(f"{where}.{key}: must be an object, got {value!r}")
    return value


def _opt_list(obj: Mapping[str, Any], key: str, where: str) -> list[Any]:
    value = _get(obj, key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise RuntimeFailure(f"{where}.{key}: must be an array, got {value!r}")
    return value


def _opt_bool(obj: Mapping[str, Any], key: str, where: str) -> bool | None:
    value = _get(obj, key)
    if value is not None and not isinstance(value, bool):
        raise RuntimeFailure(f"{where}.{key}: must be true or false, got {value!r}")
    return value


def _device_numbers(entry: Mapping[str, Any], where: str) -> tuple[int, int]:
    major = _get(entry, "major")
    minor = _get(entry, "minor")
    if major is None or minor is None:
        raise RuntimeFailure(f"{where}: major and minor are required")
    return (_as_int(major, f"{where}.major", 0, _I64_MAX),
            _as_int(minor, f"{where}.minor", 0, _I64_MAX))  # fmt: skip


def _parse(
    resources: Mapping[str, Any] | None, linux_devices: Sequence[Mapping[str, Any]] = ()
) -> _Limits:
    """Validate ``linux.resources`` (version-independent checks); RuntimeFailure names the
    first bad field. Given device rules get runc's defaults (and ``linux_devices``'
    rules) appended. Pure: no cgroup file is touched."""
    lim = _Limits()
    if resources is None:
        return lim
    r = "linux.resources"
    if not isinstance(resources, Mapping):
        raise RuntimeFailure(f"{r}: must be an object, got {resources!r}")

    m, mw = _opt_obj(resources, "memory", r), f"{r}.memory"
    lim.mem_limit = _nonzero(_opt_int(m, "limit", mw, -1, _I64_MAX))
    lim.mem_reservation = _nonzero(_opt_int(m, "reservation", mw, -1, _I64_MAX))
    lim.mem_swap = _nonzero(_opt_int(m, "swap", mw, -1, _I64_MAX))
    for key in ("kernel", "kernelTCP"):
        if _opt_int(m, key, mw, -1, _I64_MAX):
            lim.notes.append(f"{mw}.{key}: kernel memory limits are deprecated and ignored")
    swappiness = _opt_int(m, "swappiness", mw, -1, _U64_MAX)
    if swappiness is not None and swappiness not in (-1, _U64_MAX):  # -1: runc's "unset"
        lim.swappiness = _as_int(swappiness, f"{mw}.swappiness", 0, 100)
    lim.oom_kill_disable = _opt_bool(m, "disableOOMKiller", mw)
    for key in ("useHierarchy", "checkBeforeUpdate"):
        _opt_bool(m, key, mw)
    if (lim.mem_limit is not None and lim.mem_limit > 0 and lim.mem_swap is not None
            and lim.mem_swap > 0 and lim.mem_swap < lim.mem_limit):  # fmt: skip
        raise RuntimeFailure(
            f"{mw}.swap: the memory+swap limit ({lim.mem_swap}) must be at least "
            f"memory.limit ({lim.mem_limit})"
        )

    c, cw = _opt_obj(resources, "cpu", r), f"{r}.cpu"
    lim.cpu_shares = _nonzero(_opt_int(c, "shares", cw, 0, _U64_MAX))
    quota = _opt_int(c, "quota", cw, -1, _I64_MAX)
    lim.cpu_quota = _nonzero(quota)
    if lim.cpu_quota is not None and 0 < lim.cpu_quota < 1000:
        raise RuntimeFailure(f"{cw}.quota: must be at least 1000 (microseconds), got {quota}")
    period = _opt_int(c, "period", cw, 0, _U64_MAX)
    if period:
        lim.cpu_period = _as_int(period, f"{cw}.period", 1000, 1_000_000)
    lim.cpu_burst = _opt_int(c, "burst", cw, 0, _U64_MAX)
    lim.cpu_idle = _opt_int(c, "idle", cw, 0, 1)
    for key in ("realtimeRuntime", "realtimePeriod"):
        if _opt_int(c, key, cw, -1 if key == "realtimeRuntime" else 0, _U64_MAX):
            raise RuntimeFailure(
                f"{cw}.{key}: real-time CPU limits are not supported by this runtime "
                "(leave it 0 or unset)"
            )
    for key in ("cpus", "mems"):
        value = _get(c, key)
        if value is None or value == "":
            continue
        if not isinstance(value, str) or not _CPU_LIST_RE.fullmatch(value.replace(" ", "")):
            raise RuntimeFailure(f'{cw}.{key}: must be a list such as "0-3,6", got {value!r}')
        setattr(lim, key, value.replace(" ", ""))

    p = _opt_obj(resources, "pids", r)
    lim.pids_limit = _opt_int(p, "limit", f"{r}.pids", None, _I64_MAX)

    b, bw = _opt_obj(resources, "blockIO", r), f"{r}.blockIO"
    weight = _opt_int(b, "weight", bw, 0, 1000)
    if weight:
        lim.blkio_weight = _as_int(weight, f"{bw}.weight", 10, 1000)
    if _opt_int(b, "leafWeight", bw, 0, 1000):
        lim.notes.append(f"{bw}.leafWeight: ignored (the kernel dropped leaf weights)")
    for i, entry in enumerate(_opt_list(b, "weightDevice", bw)):
        where = f"{bw}.weightDevice[{i}]"
        if not isinstance(entry, Mapping):
            raise RuntimeFailure(f"{where}: must be an object, got {entry!r}")
        major, minor = _device_numbers(entry, where)
        w = _opt_int(entry, "weight", where, 0, 1000)
        _opt_int(entry, "leafWeight", where, 0, 1000)
        if w:
            lim.blkio_weight_device.append((major, minor, _as_int(w, f"{where}.weight", 10, 1000)))
    for key, _v1file, _v2key in _THROTTLE:
        for i, entry in enumerate(_opt_list(b, key, bw)):
            where = f"{bw}.{key}[{i}]"
            if not isinstance(entry, Mapping):
                raise RuntimeFailure(f"{where}: must be an object, got {entry!r}")
            major, minor = _device_numbers(entry, where)
            rate = _as_int(_get(entry, "rate") or 0, f"{where}.rate", 0, _U64_MAX)
            lim.throttle.setdefault(key, []).append((major, minor, rate))

    for i, entry in enumerate(_opt_list(resources, "hugepageLimits", r)):
        where = f"{r}.hugepageLimits[{i}]"
        if not isinstance(entry, Mapping):
            raise RuntimeFailure(f"{where}: must be an object, got {entry!r}")
        size = _get(entry, "pageSize")
        if not isinstance(size, str) or not _PAGE_SIZE_RE.fullmatch(size):
            raise RuntimeFailure(
                f'{where}.pageSize: must be a size such as "2MB" or "1GB", got {size!r}'
            )
        limit = _as_int(_get(entry, "limit") or 0, f"{where}.limit", 0, _U64_MAX)
        lim.hugepages.append((i, size, limit))

    unified = _opt_obj(resources, "unified", r)
    for key, value in unified.items():
        if (not isinstance(key, str) or not key or "/" in key or "\0" in key
                or key.startswith(".")):  # fmt: skip
            raise RuntimeFailure(f"{r}.unified: {key!r} must be a cgroup file name (no slashes)")
        # an untrusted key: quoted unless it is plain text, so the message is one line
        plain = key.isprintable() and not any(ch.isspace() for ch in key)
        where = f"{r}.unified.{key}" if plain else f"{r}.unified[{key!r}]"
        if not isinstance(value, str):
            raise RuntimeFailure(f"{where}: must be a string, got {value!r}")
        lim.unified[key] = value

    for key in ("network", "rdma"):
        if _get(resources, key):
            raise RuntimeFailure(f"{r}.{key}: not supported by this runtime (leave it unset)")

    if _get(resources, "devices") is not None:
        given = _opt_list(resources, "devices", r)
        n = len(given)
        rules = given + with_default_devices((), linux_devices)  # validated one by one below
        lim.devices = [
            _device_rule(d, f"{r}.devices[{i}]" if i < n else "default device rule")
            for i, d in enumerate(rules)
        ]
        lim.devices_given = n
    return lim


def _nonzero(value: int | None) -> int | None:
    """OCI (as runc reads it): 0 means "not set" for most limits."""
    return None if value == 0 else value


def _device_rule(entry: Any, where: str) -> _DeviceRule:
    if not isinstance(entry, Mapping):
        raise RuntimeFailure(f"{where}: must be an object, got {entry!r}")
    allow = _opt_bool(entry, "allow", where)
    dtype = _get(entry, "type") or "a"
    if dtype not in ("a", "b", "c"):
        raise RuntimeFailure(f'{where}.type: must be "a", "b" or "c", got {dtype!r}')
    numbers: list[int | None] = []
    for key in ("major", "minor"):
        n = _opt_int(entry, key, where, -1, _I64_MAX)
        numbers.append(None if n is None or n == -1 else n)
    access = _get(entry, "access")
    if not isinstance(access, str) or not access or set(access) - set("rwm"):
        raise RuntimeFailure(
            f'{where}.access: must be some of "rwm" (r read, w write, m mknod), got {access!r}'
        )
    access = "".join(ch for ch in "rwm" if ch in access)
    return _DeviceRule(bool(allow), dtype, numbers[0], numbers[1], access)


def _check_version(lim: _Limits, ver: int) -> list[str]:
    """Errors and warnings that depend on the cgroup version; the warnings."""
    notes = list(lim.notes)
    r = "linux.resources"
    restricts = bool(lim.devices) and any(not d.allow for d in lim.devices or ())
    if ver == 1:
        if lim.unified:
            raise RuntimeFailure(
                f"{r}.unified: this host uses cgroup v1, where unified (cgroup v2) files "
                f"do not exist ({', '.join(sorted(lim.unified))}); leave it empty"
            )
        if restricts and "devices" not in _v1_hierarchies():
            notes.append(
                f"{r}.devices: device rules are not enforced (the cgroup v1 devices "
                "controller is not mounted)"
            )
        return notes
    if lim.swappiness is not None:
        notes.append(f"{r}.memory.swappiness: cgroup v2 has no per-cgroup swappiness; ignored")
    if lim.oom_kill_disable:
        notes.append(
            f"{r}.memory.disableOOMKiller: cgroup v2 cannot disable the OOM killer; ignored"
        )
    if lim.devices is not None:  # refuse what the eBPF filter cannot hold before any mkdir
        from minirun.runtime import devices_bpf

        devices_bpf.emulate(lim.devices, _device_where(lim.devices_given))
    return notes


def check_resources(resources: Mapping[str, Any] | None) -> list[str]:
    """Validate ``linux.resources`` for this host without touching any cgroup (for a
    config check before anything is forked). Raises RuntimeFailure naming the field;
    returns the warnings (fields accepted but not applied)."""
    return _check_version(_parse(resources), version())


def with_default_devices(
    devices: Sequence[Mapping[str, Any]] | None,
    linux_devices: Sequence[Mapping[str, Any]] = (),
) -> list[dict[str, Any]]:
    """runc's device list: the spec's ``linux.resources.devices`` rules, then the default
    allowed devices (``DEFAULT_ALLOWED_DEVICES``), then an "rwm" allow rule for each
    ``linux.devices`` node the runtime creates. (Later rules win, so the defaults cannot
    be denied by the spec, exactly as with runc.)"""
    out = [dict(d) for d in devices or ()]
    out += [dict(d) for d in DEFAULT_ALLOWED_DEVICES]
    for i, dev in enumerate(linux_devices):
        where = f"linux.devices[{i}]"
        dtype = dev.get("type")
        if dtype == "p":
            continue  # a fifo: no device cgroup rule
        if dtype not in ("c", "b", "u"):
            raise RuntimeFailure(f'{where}.type: must be "c", "b", "u" or "p", got {dtype!r}')
        major = _as_int(dev.get("major"), f"{where}.major", 0, _I64_MAX)
        minor = _as_int(dev.get("minor"), f"{where}.minor", 0, _I64_MAX)
        out.append({"allow": True, "type": "b" if dtype == "b" else "c", "major": major,
                    "minor": minor, "access": "rwm"})  # fmt: skip
    return out


# -- files --------------------------------------------------------------------------------


class _WriteFailed(RuntimeFailure):
    def __init__(self, message: str, err: int) -> None:
        super().__init__(message)
        self.errno = err


def _read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def _write(path: str, value: str, what: str = "") -> None:
    """One write(2) per value: cgroup files parse each write separately (devices.allow
    takes one rule per write), and the error comes from that write, not a later flush.
    ``what``: the spec field being applied, to start the error message with."""
    lead = f"{what}: " if what else ""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except OSError as e:
        raise _WriteFailed(f"{lead}cgroup: cannot open {path}: {e.strerror}", e.errno or 0) from e
    try:
        os.write(fd, value.encode())
    except OSError as e:
        raise _WriteFailed(
            f"{lead}cgroup: cannot write {value!r} to {path}: {e.strerror}", e.errno or 0
        ) from e
    finally:
        os.close(fd)


def _keyed(path: str) -> dict[str, int]:
    """A "key value" per line file (memory.stat, memory.events, cpu.stat...)."""
    out: dict[str, int] = {}
    try:
        with open(path) as f:
            for line in f:
                k, _, v = line.partition(" ")
                if v.strip().lstrip("-").isdigit():
                    out[k] = int(v)
    except FileNotFoundError:
        pass
    return out


def _read_int(path: str | None) -> int | None:
    """An integer file; None when missing or "max" (unlimited)."""
    if path is None:
        return None
    try:
        text = _read(path)
    except OSError:
        return None
    return int(text) if text.lstrip("-").isdigit() else None


def _host_ram() -> int:
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _mkdir(path: str) -> bool:
    """mkdir; False when it already existed."""
    try:
        os.mkdir(path)
    except FileExistsError:
        return False
    except OSError as e:
        raise RuntimeFailure(f"cgroup: cannot create {path}: {e.strerror}") from e
    return True


def _rmdir(path: str) -> None:
    os.rmdir(path)  # a cgroup dir goes with its (virtual) files; tests replace this


def _tree_bottom_up(top: str) -> list[str]:
    """``top`` and every cgroup below it, children before parents (the rmdir order)."""
    dirs = [d for d, _subs, _files in os.walk(top, topdown=False)]
    return dirs


def _copy_cpuset(src: str, dst: str) -> None:
    for name in ("cpuset.cpus", "cpuset.mems"):
        if not _read(f"{dst}/{name}"):
            _write(f"{dst}/{name}", _read(f"{src}/{name}"))


def _enable_controllers(path: str, controllers: Sequence[str]) -> None:
    """Enable controllers for ``path``'s children, skipping those already on."""
    on = set(_read(f"{path}/cgroup.subtree_control").split())
    for c in controllers:
        if c in on:
            continue
        try:
            _write(f"{path}/cgroup.subtree_control", f"+{c}")
        except RuntimeFailure as e:
            # EBUSY: ``path`` has processes of its own and v2's "no internal processes"
            # rule forbids it (e.g. inside a container with a private cgroup namespace).
            raise RuntimeFailure(
                f"{e} (cgroup v2 cannot enable controllers in a cgroup that holds "
                "processes; use a cgroup path below an empty (or delegated) parent)"
            ) from e


# -- the cgroup ---------------------------------------------------------------------------


class Cgroup:
    """The cgroup(s) of one container. Get one with ``create`` or ``open``."""

    def __init__(self, path: str, dirs: dict[str, str], ver: int) -> None:
        self.path = path  # below each hierarchy's root, e.g. "/minirun/<id>"
        self.name = path
        self.version = ver
        # controller -> dir (v1); {"": dir} on v2. Co-mounted v1 controllers share a dir.
        self._dirs = dirs
        self.warnings: list[str] = []  # settings the kernel could not apply (no swap accounting)
        self._created: list[str] = []  # dirs create() made (parents first), for its failure path

    def __repr__(self) -> str:
        return f"Cgroup({self.path!r}, v{self.version}, {self.paths})"

    # -- lookup -------------------------------------------------------------------------

    @property
    def paths(self) -> list[str]:
        """Every distinct dir of this cgroup (one per hierarchy)."""
        return sorted(set(self._dirs.values()))

    @property
    def procs_files(self) -> list[str]:
        """The cgroup.procs files a process writes "0" into to join this cgroup."""
        return [f"{d}/cgroup.procs" for d in self.paths]

    def _file(self, controller: str, name: str) -> str | None:
        d = self._dirs.get("" if self.version == 2 else controller)
        return None if d is None else f"{d}/{name}"

    def _need(self, controller: str, name: str, what: str) -> str:
        path = self._file(controller, name)
        if path is None or not os.path.exists(path):
            raise RuntimeFailure(
                f"{what}: the kernel has no cgroup file {name} (controller {controller}), "
                "so this setting cannot be applied"
            )
        return path

    @staticmethod
    def _locate(path: str) -> dict[str, str]:
        if version() == 2:
            return {"": f"{CGROUP_ROOT}{path}"}
        return {c: f"{p}{path}" for c, p in _v1_hierarchies().items()}

    @classmethod
    def open(cls, path: str) -> Cgroup | None:
        """The existing cgroup at ``path`` (from ``resolve_path``), or None."""
        path = _clean_path(path, "cgroup path")
        dirs = {c: d for c, d in cls._locate(path).items() if os.path.isdir(d)}
        return cls(path, dirs, version()) if dirs else None

    # -- creation and update ------------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: str,
        resources: Mapping[str, Any] | None = None,
        *,
        linux_devices: Sequence[Mapping[str, Any]] = (),
    ) -> Cgroup:
        """Create the cgroup at ``path`` (from ``resolve_path``) and apply ``resources``
        (the spec's ``linux.resources``), before any process is in it. Every value is
        validated first. Device rules get runc's defaults and an allow rule per
        ``linux_devices`` entry (the spec's ``linux.devices``) appended. An existing
        empty cgroup (left by a crash) is reused; one with processes in it is an error.
        On failure, the dirs this call made are removed."""
        path = _clean_path(path, "cgroup path")
        lim = _parse(resources, linux_devices)
        ver = version()
        notes = _check_version(lim, ver)
        cg = cls(path, {}, ver)
        try:
            if ver == 2:
                cg._create_v2(lim)
            else:
                cg._create_v1(lim)
            if cg.pids():
                raise RuntimeFailure(
                    f"cgroup {path} already has processes in it ({cg.pids()}): is the "
                    "container already running?"
                )
            cg.warnings.extend(notes)
            cg._apply(lim)
        except BaseException:
            # Undo only what this call made: a cgroup that was there before (maybe a
            # running container's) is not ours to delete.
            for d in reversed(cg._created):
                try:
                    _rmdir(d)
                except OSError:
                    pass
            raise
        cg._created = []
        return cg

    def update(
        self, resources: Mapping[str, Any], *, linux_devices: Sequence[Mapping[str, Any]] = ()
    ) -> None:
        """Apply the fields given in ``resources`` (a partial ``linux.resources``) to
        the running container's cgroup; everything not given stays as it is. Given
        device rules replace the old ones (with the defaults appended, as in create)."""
        lim = _parse(resources, linux_devices)
        notes = _check_version(lim, self.version)
        if self.version == 2:
            available = set(_read(f"{CGROUP_ROOT}/cgroup.controllers").split())
            self._enable_v2(lim, available)
        else:
            missing = [(c, f) for c, f in lim.needed(1) if c not in self._dirs]
            if missing:
                raise RuntimeFailure(
                    f"{', '.join(sorted({f for _c, f in missing}))}: the container's cgroup "
                    f"has no {', '.join(c for c, _f in missing)} controller dir, so this "
                    "setting cannot be changed"
                )
        self.warnings.extend(notes)
        self._apply(lim)

    def _create_v1(self, lim: _Limits) -> None:
        mounts = _v1_hierarchies()
        if not mounts:
            raise RuntimeFailure(
                "no cgroup v1 controllers are mounted under /sys/fs/cgroup (and no cgroup2 "
                "either): mount the cgroup filesystems to run containers"
            )
        missing = [(c, f) for c, f in lim.needed(1) if c not in mounts]
        if missing:
            raise RuntimeFailure(
                f"the cgroup v1 controller(s) {', '.join(c for c, _f in missing)} are not "
                "mounted, so the requested limits cannot be applied "
                f"({', '.join(f for _c, f in missing)}: mount them under /sys/fs/cgroup "
                "or drop those settings)"
            )
        parts = self.path.strip("/").split("/")
        for controller in V1_CONTROLLERS:
            point = mounts.get(controller)
            if point is None:
                continue  # not needed for a limit: the container runs without it
            leaf = f"{point}{self.path}"
            if leaf in self._dirs.values():  # a co-mounted controller: dir already made
                self._dirs[controller] = leaf
                continue
            cur = point
            for part in parts:
                parent, cur = cur, f"{cur}/{part}"
                if _mkdir(cur):
                    self._created.append(cur)
                if controller == "cpuset":
                    _copy_cpuset(parent, cur)
            self._dirs[controller] = leaf

    def _create_v2(self, lim: _Limits) -> None:
        available = set(_read(f"{CGROUP_ROOT}/cgroup.controllers").split())
        missing = [(c, f) for c, f in lim.needed(2) if c not in available]
        if missing:
            raise RuntimeFailure(
                f"the cgroup v2 controller(s) {', '.join(c for c, _f in missing)} are not "
                f"available in {CGROUP_ROOT}/cgroup.controllers, so the requested limits "
                f"cannot be applied ({', '.join(f for _c, f in missing)})"
            )
        self._dirs[""] = f"{CGROUP_ROOT}{self.path}"
        self._enable_v2(lim, available, create=True)
        if _mkdir(self._dirs[""]):
            self._created.append(self._dirs[""])

    def _enable_v2(self, lim: _Limits, available: set[str], create: bool = False) -> None:
        """Enable the controllers this cgroup needs in every ancestor's subtree_control
        (top-down: a controller must be on in the parent to be enabled below it),
        making missing ancestors when ``create``."""
        missing = [(c, f) for c, f in lim.needed(2) if c not in available]
        if missing:
            raise RuntimeFailure(
                f"{', '.join(f for _c, f in missing)}: the cgroup v2 controller(s) "
                f"{', '.join(c for c, _f in missing)} are not available on this host"
            )
        enable: list[str] = [c for c in V2_CONTROLLERS if c in available]
        wanted = [c for c, _f in lim.needed(2)]
        wanted += [k.split(".", 1)[0] for k in lim.unified]  # "memory.high" -> memory
        for c in wanted:
            if c in available and c not in enable:
                enable.append(c)
        cur = CGROUP_ROOT
        for part in self.path.strip("/").split("/")[:-1]:
            _enable_controllers(cur, enable)
            cur = f"{cur}/{part}"
            if create and _mkdir(cur):
                self._created.append(cur)
        _enable_controllers(cur, enable)

    # -- applying linux.resources -------------------------------------------------------

    def _apply(self, lim: _Limits) -> None:
        if self.version == 2:
            self._apply_v2(lim)
        else:
            self._apply_v1(lim)

    def _apply_v1(self, lim: _Limits) -> None:
        r = "linux.resources"
        if lim.cpus is not None:
            _write(self._need("cpuset", "cpuset.cpus", f"{r}.cpu.cpus"), lim.cpus, f"{r}.cpu.cpus")
        if lim.mems is not None:
            _write(self._need("cpuset", "cpuset.mems", f"{r}.cpu.mems"), lim.mems, f"{r}.cpu.mems")
        if lim.devices is not None:
            self._devices_v1(lim.devices, lim.devices_given)
        self._memory_v1(lim)
        self._cpu_v1(lim)
        if lim.pids_limit is not None:
            value = str(lim.pids_limit) if lim.pids_limit > 0 else "max"
            _write(self._need("pids", "pids.max", f"{r}.pids.limit"), value, f"{r}.pids.limit")
        self._blkio_v1(lim)
        for i, size, limit in lim.hugepages:
            self._hugetlb(i, size, limit, "limit_in_bytes")

    def _devices_v1(self, rules: list[_DeviceRule], given: int) -> None:
        """Each rule in order, as the spec asks: a leading deny-all ("a" into
        devices.deny) empties the list, then the allow rules open it."""
        d = self._dirs.get("devices")
        if d is None:
            return  # no devices controller: rules are not enforced (devices_enforced())
        for i, rule in enumerate(rules):
            target = f"{d}/devices.allow" if rule.allow else f"{d}/devices.deny"
            what = f"linux.resources.devices[{i}]" if i < given else "default device rule"
            for line in rule.v1_lines():
                _write(target, line, what)

    def _memory_v1(self, lim: _Limits) -> None:
        w = "linux.resources.memory"
        limit, swap = lim.mem_limit, lim.mem_swap
        memsw = self._file("memory", "memory.memsw.limit_in_bytes")
        has_memsw = memsw is not None and os.path.exists(memsw)
        if limit == -1 and swap is None and has_memsw:
            swap = -1  # runc: unlimited memory with swap unset means unlimited swap too
        if swap is not None and not has_memsw:
            if swap != -1:
                self.warnings.append(_NO_SWAP)
            swap = None
        ops = []
        if limit is not None:
            ops.append(("memory.limit_in_bytes", limit, f"{w}.limit"))
        if swap is not None:
            ops.append(("memory.memsw.limit_in_bytes", swap, f"{w}.swap"))
        if limit is not None and swap is not None:
            # memsw may never be below limit_in_bytes: raise the one that must go first
            # (runc's order: swap first when it grows past the current memory limit).
            current = _read_int(self._file("memory", "memory.limit_in_bytes"))
            if swap == -1 or (current is not None and current < swap):
                ops.reverse()
        for name, value, what in ops:
            try:
                _write(self._need("memory", name, what), str(value), what)
            except _WriteFailed as e:
                if e.errno == errno.EBUSY and name == "memory.limit_in_bytes":
                    raise RuntimeFailure(
                        f"{what}: the container already uses more memory than {value} bytes "
                        "and the kernel could not reclaim it (memory.limit_in_bytes: busy)"
                    ) from e
                if e.errno == errno.EINVAL and swap is not None and limit is not None:
                    raise RuntimeFailure(
                        f"{w}.swap: the kernel refused memory {limit} / memory+swap {swap} "
                        "(memory+swap must be at least the memory limit)"
                    ) from e
                raise
        if lim.mem_reservation is not None:
            what = f"{w}.reservation"
            _write(self._need("memory", "memory.soft_limit_in_bytes", what),
                   str(lim.mem_reservation), what)  # fmt: skip
        if lim.swappiness is not None:
            what = f"{w}.swappiness"
            _write(self._need("memory", "memory.swappiness", what), str(lim.swappiness), what)
        if lim.oom_kill_disable is not None:
            what = f"{w}.disableOOMKiller"
            _write(self._need("memory", "memory.oom_control", what),
                   "1" if lim.oom_kill_disable else "0", what)  # fmt: skip

    def _cpu_v1(self, lim: _Limits) -> None:
        w = "linux.resources.cpu"
        if lim.cpu_shares is not None:
            path = self._need("cpu", "cpu.shares", f"{w}.shares")
            _write(path, str(lim.cpu_shares), f"{w}.shares")
            got = _read_int(path)
            # v1 clamps silently: say so, as runc does, instead of applying another value
            if got is not None and got != lim.cpu_shares:
                bound = "maximum" if lim.cpu_shares > got else "minimum"
                raise RuntimeFailure(f"{w}.shares: the {bound} allowed cpu-shares is {got}")
        retry_period = False
        if lim.cpu_period is not None:
            path = self._need("cpu", "cpu.cfs_period_us", f"{w}.period")
            try:
                _write(path, str(lim.cpu_period), f"{w}.period")
            except _WriteFailed as e:
                # A shorter period can exceed the parent's quota/period until the quota
                # is lowered too: retry after the quota (runc does the same).
                if e.errno != errno.EINVAL or lim.cpu_quota is None:
                    raise
                retry_period = True
        if lim.cpu_quota is not None:
            path = self._need("cpu", "cpu.cfs_quota_us", f"{w}.quota")
            _write(path, str(lim.cpu_quota), f"{w}.quota")
            if retry_period:
                _write(self._need("cpu", "cpu.cfs_period_us", f"{w}.period"),
                       str(lim.cpu_period), f"{w}.period")  # fmt: skip
        if lim.cpu_burst is not None:
            path = self._need("cpu", "cpu.cfs_burst_us", f"{w}.burst")
            _write(path, str(lim.cpu_burst), f"{w}.burst")
        if lim.cpu_idle is not None:
            _write(self._need("cpu", "cpu.idle", f"{w}.idle"), str(lim.cpu_idle), f"{w}.idle")

    def _blkio_v1(self, lim: _Limits) -> None:
        w = "linux.resources.blockIO"
        if lim.blkio_weight is not None or lim.blkio_weight_device:
            # CFQ's blkio.weight on older kernels; BFQ's blkio.bfq.weight on blk-mq ones
            weight = self._file("blkio", "blkio.weight")
            prefix = "blkio" if weight is not None and os.path.exists(weight) else "blkio.bfq"
            if lim.blkio_weight is not None:
                what = f"{w}.weight"
                path = self._file("blkio", f"{prefix}.weight")
                if path is None or not os.path.exists(path):
                    raise RuntimeFailure(
                        f"{what}: the kernel has neither blkio.weight nor blkio.bfq.weight "
                        "(no CFQ or BFQ I/O scheduler), so I/O weights cannot be applied"
                    )
                _write(path, str(lim.blkio_weight), what)
            for major, minor, weight_value in lim.blkio_weight_device:
                what = f"{w}.weightDevice"
                path = self._need("blkio", f"{prefix}.weight_device", what)
                _write(path, f"{major}:{minor} {weight_value}", what)
        for key, v1file, _v2key in _THROTTLE:
            for major, minor, rate in lim.throttle.get(key, []):
                what = f"{w}.{key}"
                _write(self._need("blkio", v1file, what), f"{major}:{minor} {rate}", what)

    def _hugetlb(self, index: int, size: str, limit: int, suffix: str) -> None:
        what = f"linux.resources.hugepageLimits[{index}]"
        path = self._file("hugetlb", f"hugetlb.{size}.{suffix}")
        if path is None or not os.path.exists(path):
            raise RuntimeFailure(
                f"{what}.pageSize: this kernel has no {size} huge pages (no hugetlb.{size}."
                f"{suffix} in the container's cgroup)"
            )
        _write(path, str(limit), what)
        # the reservation limit too, where the kernel has it (5.7+), as runc does
        rsvd_suffix = "rsvd.limit_in_bytes" if suffix == "limit_in_bytes" else "rsvd.max"
        rsvd = self._file("hugetlb", f"hugetlb.{size}.{rsvd_suffix}")
        if rsvd is not None and os.path.exists(rsvd):
            _write(rsvd, str(limit), what)

    def _apply_v2(self, lim: _Limits) -> None:
        r = "linux.resources"
        if lim.devices is not None:
            _attach_device_filter(self._dirs[""], lim.devices, lim.devices_given)
        if lim.cpus is not None:
            _write(self._need("cpuset", "cpuset.cpus", f"{r}.cpu.cpus"), lim.cpus, f"{r}.cpu.cpus")
        if lim.mems is not None:
            _write(self._need("cpuset", "cpuset.mems", f"{r}.cpu.mems"), lim.mems, f"{r}.cpu.mems")
        self._memory_v2(lim)
        self._cpu_v2(lim)
        if lim.pids_limit is not None:
            value = str(lim.pids_limit) if lim.pids_limit > 0 else "max"
            _write(self._need("pids", "pids.max", f"{r}.pids.limit"), value, f"{r}.pids.limit")
        self._io_v2(lim)
        for i, size, limit in lim.hugepages:
            self._hugetlb(i, size, limit, "max")
        for key, value in lim.unified.items():  # last: the engine's explicit override
            self._unified(key, value)

    def _memory_v2(self, lim: _Limits) -> None:
        w = "linux.resources.memory"
        limit, swap = lim.mem_limit, lim.mem_swap
        swap_value: str | None = None
        if limit == -1 and swap is None:
            swap_value = "max"  # runc: unlimited memory, swap unset: both unlimited
        elif swap == -1:
            swap_value = "max"
        elif swap is not None:
            # v2 limits swap alone; the spec's (and Docker's) value is memory+swap
            memory = limit
            if memory is None:  # an update of the swap limit alone
                memory = _read_int(self._file("memory", "memory.max"))
            if memory is None or memory < 0:
                raise RuntimeFailure(
                    f"{w}.swap: a memory+swap limit needs a memory limit (memory.limit)"
                )
            if swap < memory:
                raise RuntimeFailure(
                    f"{w}.swap: the memory+swap limit ({swap}) must be at least the memory "
                    f"limit ({memory})"
                )
            swap_value = str(swap - memory)
        if swap_value is not None:
            path = self._file("memory", "memory.swap.max")
            if path is not None and os.path.exists(path):
                _write(path, swap_value, f"{w}.swap")
            elif swap is not None and swap != -1:
                self.warnings.append(_NO_SWAP)
        if limit is not None:
            value = "max" if limit == -1 else str(limit)
            _write(self._need("memory", "memory.max", f"{w}.limit"), value, f"{w}.limit")
        if lim.mem_reservation is not None:
            what = f"{w}.reservation"
            value = "max" if lim.mem_reservation == -1 else str(lim.mem_reservation)
            _write(self._need("memory", "memory.low", what), value, what)

    def _cpu_v2(self, lim: _Limits) -> None:
        w = "linux.resources.cpu"
        if lim.cpu_shares is not None:
            what = f"{w}.shares"
            _write(
                self._need("cpu", "cpu.weight", what), str(shares_to_weight(lim.cpu_shares)), what
            )
        if lim.cpu_idle is not None:
            _write(self._need("cpu", "cpu.idle", f"{w}.idle"), str(lim.cpu_idle), f"{w}.idle")
        if lim.cpu_burst is not None:
            what = f"{w}.burst"
            _write(self._need("cpu", "cpu.max.burst", what), str(lim.cpu_burst), what)
        if lim.cpu_quota is not None or lim.cpu_period is not None:
            what = f"{w}.quota" if lim.cpu_quota is not None else f"{w}.period"
            path = self._need("cpu", "cpu.max", what)
            if lim.cpu_quota is None:  # only the period: keep the quota there is
                quota = (_read(path).split() or ["max"])[0]
            else:
                quota = "max" if lim.cpu_quota < 0 else str(lim.cpu_quota)
            value = quota if lim.cpu_period is None else f"{quota} {lim.cpu_period}"
            _write(path, value, what)

    def _io_v2(self, lim: _Limits) -> None:
        w = "linux.resources.blockIO"
        if lim.blkio_weight is not None or lim.blkio_weight_device:
            bfq = self._file("io", "io.bfq.weight")
            use_bfq = bfq is not None and os.path.exists(bfq)
            name = "io.bfq.weight" if use_bfq else "io.weight"

            def scaled(weight: int) -> int:
                # BFQ takes blkio's 1..1000 scale; io.weight is 1..10000
                return weight if use_bfq else blkio_weight_to_io_weight(weight)

            if lim.blkio_weight is not None:
                what = f"{w}.weight"
                _write(self._need("io", name, what), str(scaled(lim.blkio_weight)), what)
            for major, minor, weight in lim.blkio_weight_device:
                what = f"{w}.weightDevice"
                _write(self._need("io", name, what), f"{major}:{minor} {scaled(weight)}", what)
        for key, _v1file, v2key in _THROTTLE:
            for major, minor, rate in lim.throttle.get(key, []):
                what = f"{w}.{key}"
                value = "max" if rate == 0 else str(rate)  # v1's 0: no limit
                _write(self._need("io", "io.max", what), f"{major}:{minor} {v2key}={value}", what)

    def _unified(self, key: str, value: str) -> None:
        what = f"linux.resources.unified.{key}"
        path = self._file("", key)
        assert path is not None
        if not os.path.exists(path):
            controller = key.split(".", 1)[0]
            available = set(_read(f"{CGROUP_ROOT}/cgroup.controllers").split())
            if "." in key and controller not in available and controller != "cgroup":
                raise RuntimeFailure(
                    f"{what}: the cgroup v2 controller {controller} is not available"
                )
            raise RuntimeFailure(
                f"{what}: there is no cgroup file {key} in {os.path.dirname(path)}"
            )
        # one write per line, as runc's WriteFileByLine (io.max takes one device per write)
        for line in [line for line in value.split("\n") if line] or [value]:
            _write(path, line, what)

    # -- reading ------------------------------------------------------------------------

    def _all_pids(self, dirs: list[str]) -> list[int]:
        pids: set[int] = set()
        for top in dirs:
            try:
                tree = _tree_bottom_up(top)
            except OSError:
                continue
            for d in tree:
                try:
                    text = _read(f"{d}/cgroup.procs")
                except OSError:
                    continue  # removed under us
                pids.update(int(p) for p in text.split())
        return sorted(pids)

    def pids(self) -> list[int]:
        """Every process in the container's cgroup, including sub-cgroups it made."""
        return self._all_pids(self.paths)

    def stats(self) -> CgroupStats:
        if self.version == 2:
            cpu = _keyed(f"{self._dirs['']}/cpu.stat").get("usage_usec", 0) * 1000
            usage = _read_int(self._file("memory", "memory.current")) or 0
            inactive = _keyed(f"{self._dirs['']}/memory.stat").get("inactive_file", 0)
            limit = _read_int(self._file("memory", "memory.max"))
        else:
            cpu = _read_int(self._file("cpuacct", "cpuacct.usage")) or 0
            usage = _read_int(self._file("memory", "memory.usage_in_bytes")) or 0
            stat = self._file("memory", "memory.stat")
            # `docker stats` subtracts the inactive page cache (docker/cli
            # calculateMemUsageUnixNoCache): reclaimable, so not "used".
            inactive = _keyed(stat).get("total_inactive_file", 0) if stat else 0
            limit = _read_int(self._file("memory", "memory.limit_in_bytes"))
        host = _host_ram()
        if limit is None or limit >= _V1_UNLIMITED or limit > host:
            limit = host
        pids_max = _read_int(self._file("pids", "pids.max"))
        current = _read_int(self._file("pids", "pids.current"))
        return CgroupStats(
            cpu_usage_ns=cpu,
            memory_usage=usage - inactive if inactive < usage else usage,
            memory_limit=limit,
            pids=current if current is not None else len(self.pids()),
            pids_limit=pids_max,
        )

    def oom_killed(self) -> bool:
        """Whether the kernel's OOM killer killed a process of this cgroup (Docker's
        State.OOMKilled). Read it before ``remove``."""
        if self.version == 2:
            path = self._file("memory", "memory.events")
        else:
            # "oom_kill N" in memory.oom_control exists since kernel 4.13.
            path = self._file("memory", "memory.oom_control")
        return path is not None and _keyed(path).get("oom_kill", 0) > 0

    # -- pausing ------------------------------------------------------------------------

    def _freezer(self) -> tuple[str | None, str | None]:
        """(the freeze control file, v2's cgroup.events), or (None, None) without one."""
        if self.version == 2:
            path, events = self._file("", "cgroup.freeze"), self._file("", "cgroup.events")
        else:
            path, events = self._file("freezer", "freezer.state"), None
        if path is None or not os.path.exists(path):
            return None, None
        return path, events

    def frozen(self) -> bool:
        """True when every process of the cgroup is frozen (v1 freezer.state FROZEN;
        v2 cgroup.freeze 1 and "frozen 1" in cgroup.events). False while still freezing."""
        path, events = self._freezer()
        if path is None:
            return False
        try:
            if events is not None:
                return _read(path) == "1" and _keyed(events).get("frozen") == 1
            return _read(path) == "FROZEN"
        except OSError:
            return False

    def freeze(self, timeout: float = 5.0) -> None:
        """Freeze (pause) every process and wait until all are frozen. A process that
        does not freeze in ``timeout`` seconds (one stuck in the kernel) thaws the
        cgroup again and raises RuntimeFailure."""
        path, _events = self._freezer()
        if path is None:
            raise RuntimeFailure(
                f"cgroup {self.path} has no freezer (v1: the freezer controller is not "
                "mounted; v2: the kernel is older than 5.2), so it cannot be paused"
            )
        value = "1" if self.version == 2 else "FROZEN"
        _write(path, value)
        deadline = time.monotonic() + timeout
        delay = 0.001
        while not self.frozen():
            if time.monotonic() >= deadline:
                self.thaw()
                raise RuntimeFailure(
                    f"cgroup {self.path}: its processes did not all freeze within "
                    f"{timeout:g}s (one may be stuck in the kernel); thawed them again"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
            if self.version == 1:
                _write(path, value)  # v1 retries a FREEZING cgroup on each write

    def thaw(self) -> None:
        """Thaw (resume) the cgroup's processes."""
        path, _events = self._freezer()
        if path is None:
            raise RuntimeFailure(f"cgroup {self.path} has no freezer, so it cannot be resumed")
        _write(path, "0" if self.version == 2 else "THAWED")

    def _freeze(self, on: bool, timeout: float = 1.0) -> bool:
        """Best effort for kill_all: freeze (or thaw); False when there is no freezer or
        it is gone. If some task will not freeze, signal anyway: a missed fork is better
        than a hang."""
        path, events = self._freezer()
        if path is None:
            return False
        value = ("1" if on else "0") if events is not None else ("FROZEN" if on else "THAWED")
        try:
            _write(path, value)
        except RuntimeFailure:
            return False
        if not on:
            return True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if events is not None:
                    if _keyed(events).get("frozen") == 1:
                        break
                elif _read(path) == "FROZEN":
                    break
            except OSError:
                return False
            time.sleep(0.002)
        return True

    # -- killing and removal ------------------------------------------------------------

    def kill_all(self, sig: int = 9) -> None:
        """Send ``sig`` to every process of the container. Frozen first (when possible),
        so a process cannot fork a child we would miss while we signal; thawed after,
        so the signal is handled."""
        if self.version == 2 and sig == 9:
            kill = self._file("", "cgroup.kill")  # kernel >= 5.14: atomic, recursive
            if kill is not None and os.path.exists(kill):
                try:
                    _write(kill, "1")
                    return
                except RuntimeFailure:
                    pass  # fall back to freeze + signal
        frozen = self._freeze(True)
        try:
            for pid in self.pids():
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
        finally:
            if frozen:
                # A frozen process never handles a signal: thaw so SIGKILL/SIGTERM land.
                self._freeze(False)

    def remove(self, timeout: float = 5.0) -> None:
        """rmdir the container's cgroup (and any cgroups it created inside), retrying
        while its last processes exit. Idempotent. Parent dirs (``/minirun``, a slice)
        stay, as with runc."""
        deadline = time.monotonic() + timeout
        delay = 0.005
        while True:
            busy: list[str] = []
            for top in self.paths:
                try:
                    tree = _tree_bottom_up(top) if os.path.isdir(top) else []
                except OSError:
                    tree = []
                for d in tree:
                    try:
                        _rmdir(d)
                    except FileNotFoundError:
                        pass
                    except OSError as e:
                        if e.errno != errno.EBUSY:
                            raise RuntimeFailure(f"cgroup: cannot remove {d}: {e.strerror}") from e
                        busy.append(d)
            if not busy:
                return
            if time.monotonic() >= deadline:
                raise RuntimeFailure(
                    f"cgroup {self.path} still has processes {self.pids()} after "
                    f"{timeout:g}s; kill them first (busy: {', '.join(busy)})"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
