"""Cgroups: one per container, for limits, stats, OOM reporting, killing and device rules.

Layout, like Docker's ``cgroupfs`` driver: every container gets ``minirun/<id>`` (``id`` =
the 64-hex container id) under the root of each hierarchy, and the shared ``minirun``
parent is left in place. The version is detected at run time (``version()``):

* **v1 / hybrid** (separate hierarchies per controller, maybe an empty
  ``/sys/fs/cgroup/unified``): a dir in each of memory, cpu, cpuacct, pids, devices,
  freezer and cpuset, wherever ``/proc/self/mountinfo`` says they are mounted (so co-mounts
  such as ``cpu,cpuacct`` work too). cpuset.cpus/mems start empty in a new v1 cpuset and a
  process cannot join an empty one, so they are copied from the parent at each level.
* **v2** (``/sys/fs/cgroup/cgroup.controllers`` exists): ``/sys/fs/cgroup/minirun/<id>``;
  memory, pids and cpu are enabled in the ``cgroup.subtree_control`` of the root and of
  ``minirun`` (a systemd host usually delegates them at the root already).

The container's process joins by writing "0" into every file of ``Cgroup.procs_files``
itself, before it unshares its cgroup namespace, so its own cgroup is that namespace's root.

What is enforced where:

================  ===============================  =================================
limit             v1 file                          v2 file
================  ===============================  =================================
--memory          memory.limit_in_bytes            memory.max
--memory-swap     memory.memsw.limit_in_bytes      memory.swap.max (= swap - memory)
--cpus            cpu.cfs_quota_us/cfs_period_us   cpu.max
--cpu-shares      cpu.shares                       cpu.weight (runc's conversion)
--pids-limit      pids.max                         pids.max
devices           devices.deny/devices.allow       NOT enforced (see below)
================  ===============================  =================================

Swap limits need swap accounting (v1 ``memory.memsw.*``, v2 ``memory.swap.max``); when the
kernel has none the swap limit is skipped and a note added to ``Cgroup.warnings``, as
Docker does ("Memory limited without swap").

**Devices on v2 are not enforced.** cgroup v2 has no devices files: access control is an
eBPF program (BPF_CGROUP_DEVICE) attached to the cgroup, which minirun does not build.
``devices_enforced()`` says whether the rules apply. Without them a container still only
sees the device nodes the runtime creates in its tmpfs /dev, and mknod needs CAP_MKNOD
(in Docker's default set), so on v2 a container process could mknod and open a host disk:
drop CAP_MKNOD (``--cap-drop MKNOD``) where that matters.

Import-light on purpose (it is on ``run``'s path): ``os``, ``errno``, ``time``,
``dataclasses`` and the tiny ``container.resources``.
"""

from __future__ import annotations

import errno
import os
import time
from dataclasses import dataclass

from minirun.container.resources import Resources, shares_to_weight
from minirun.errors import RuntimeFailure

__all__ = [
    "DEFAULT_DEVICE_RULES",
    "Cgroup",
    "CgroupStats",
    "devices_enforced",
    "version",
]

CGROUP_ROOT = "/sys/fs/cgroup"
PARENT = "minirun"

# v1 controllers a container gets a dir in. memory/cpu/pids carry limits; cpuacct gives
# CPU usage; freezer lets kill_all stop forks while it signals; devices holds the
# allow-list; cpuset, as Docker does, so a --cpuset-cpus has a place to go later.
V1_CONTROLLERS = ("memory", "cpu", "cpuacct", "pids", "devices", "freezer", "cpuset")
V2_CONTROLLERS = ("memory", "pids", "cpu")

# runc's specconv.AllowedDevices, which Docker relies on: everything denied ("a"), then
# mknod of any node (m) but no use of it, plus the handful of harmless char devices and
# the pty devices a terminal needs. A container's /dev/console is a pts (major 136).
DEFAULT_DEVICE_RULES = (
    "c *:* m",
    "b *:* m",
    "c 1:3 rwm",  # /dev/null
    "c 1:8 rwm",  # /dev/random
    "c 1:7 rwm",  # /dev/full
    "c 5:0 rwm",  # /dev/tty
    "c 1:5 rwm",  # /dev/zero
    "c 1:9 rwm",  # /dev/urandom
    "c 136:* rwm",  # /dev/pts/*
    "c 5:2 rwm",  # /dev/ptmx
)

_V1_UNLIMITED = 1 << 62  # memory.limit_in_bytes reads 9223372036854771712 when unlimited


@dataclass(frozen=True)
class CgroupStats:
    """A snapshot for ``stats``/``inspect``, in Docker's meanings."""

    cpu_usage_ns: int  # total CPU time of all the container's processes, ever
    memory_usage: int  # bytes, minus inactive page cache (what `docker stats` shows)
    memory_limit: int  # bytes; the host's RAM when unlimited
    pids: int  # processes (tasks) now
    pids_limit: int | None  # None when unlimited


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
    """True when containers' device rules are enforced: on v1 with the devices controller.
    Never on v2 (that would need a BPF_CGROUP_DEVICE program)."""
    return version() == 1 and "devices" in _v1_hierarchies()


def _check_name(name: str) -> None:
    # The name becomes a path component: never let it climb out of minirun/.
    if not name or "/" in name or name in (".", "..") or "\0" in name:
        raise RuntimeFailure(f"invalid cgroup name {name!r}")


def _read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def _write(path: str, value: str) -> None:
    """One write(2) per value: cgroup files parse each write separately (devices.allow
    takes one rule per write), and the error comes from that write, not a later flush."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except OSError as e:
        raise RuntimeFailure(f"cgroup: cannot open {path}: {e.strerror}") from e
    try:
        os.write(fd, value.encode())
    except OSError as e:
        raise RuntimeFailure(f"cgroup: cannot write {value!r} to {path}: {e.strerror}") from e
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


def _tree_bottom_up(top: str) -> list[str]:
    """``top`` and every cgroup below it, children before parents (the rmdir order)."""
    dirs = [d for d, _subs, _files in os.walk(top, topdown=False)]
    return dirs


class Cgroup:
    """The cgroup(s) of one container. Get one with ``create`` or ``open``."""

    def __init__(self, name: str, dirs: dict[str, str], ver: int) -> None:
        self.name = name
        self.version = ver
        # controller -> dir (v1); {"": dir} on v2. Co-mounted v1 controllers share a dir.
        self._dirs = dirs
        self.warnings: list[str] = []  # limits the kernel could not apply (no swap accounting)
        self._created: list[str] = []  # leaf dirs create() made, for its failure path

    def __repr__(self) -> str:
        return f"Cgroup({self.name!r}, v{self.version}, {sorted(set(self._dirs.values()))})"

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

    @classmethod
    def _locate(cls, name: str) -> dict[str, str]:
        if version() == 2:
            return {"": f"{CGROUP_ROOT}/{PARENT}/{name}"}
        return {c: f"{p}/{PARENT}/{name}" for c, p in _v1_hierarchies().items()}

    @classmethod
    def open(cls, name: str) -> Cgroup | None:
        """The existing cgroup of container ``name``, or None."""
        _check_name(name)
        dirs = {c: d for c, d in cls._locate(name).items() if os.path.isdir(d)}
        return cls(name, dirs, version()) if dirs else None

    # -- creation -----------------------------------------------------------------------

    @classmethod
    def create(cls, name: str, res: Resources) -> Cgroup:
        """Create the container's cgroup and write its limits (and, on v1, device rules).
        An existing empty cgroup of that name (left by a crash) is reused; one with
        processes in it is an error."""
        _check_name(name)
        ver = version()
        cg = cls(name, {}, ver)
        try:
            if ver == 2:
                cg._create_v2(res)
            else:
                cg._create_v1(res)
            if cg.pids():
                raise RuntimeFailure(
                    f"cgroup {name} already has processes in it ({cg.pids()}): is the "
                    "container already running?"
                )
            cg._apply(res)
        except BaseException:
            # Undo only what this call made: a cgroup that was there before (maybe a
            # running container's) is not ours to delete.
            for d in reversed(cg._created):
                try:
                    os.rmdir(d)
                except OSError:
                    pass
            raise
        return cg

    def _create_v1(self, res: Resources) -> None:
        mounts = _v1_hierarchies()
        if not mounts:
            raise RuntimeFailure(
                "no cgroup v1 controllers are mounted under /sys/fs/cgroup (and no cgroup2 "
                "either): mount the cgroup filesystems to run containers"
            )
        missing = [c for c in _needed(res) if c not in mounts]
        if missing:
            raise RuntimeFailure(
                f"the cgroup v1 controller(s) {', '.join(missing)} are not mounted, so "
                "the requested limits cannot be applied (mount them under /sys/fs/cgroup "
                "or drop the flags)"
            )
        for controller in V1_CONTROLLERS:
            point = mounts.get(controller)
            if point is None:
                continue  # not needed for a limit: the container runs without it
            parent, leaf = f"{point}/{PARENT}", f"{point}/{PARENT}/{self.name}"
            if leaf in self._dirs.values():  # a co-mounted controller: dir already made
                self._dirs[controller] = leaf
                continue
            _mkdir(parent)
            if controller == "cpuset":
                _copy_cpuset(point, parent)
            if _mkdir(leaf):
                self._created.append(leaf)
            self._dirs[controller] = leaf
            if controller == "cpuset":
                _copy_cpuset(parent, leaf)

    def _create_v2(self, res: Resources) -> None:
        available = set(_read(f"{CGROUP_ROOT}/cgroup.controllers").split())
        missing = [c for c in _needed(res) if c not in available]
        if missing:
            raise RuntimeFailure(
                f"the cgroup v2 controller(s) {', '.join(missing)} are not available in "
                f"{CGROUP_ROOT}/cgroup.controllers, so the requested limits cannot be applied"
            )
        enable = [c for c in V2_CONTROLLERS if c in available]
        parent = f"{CGROUP_ROOT}/{PARENT}"
        _enable_controllers(CGROUP_ROOT, enable)
        _mkdir(parent)
        _enable_controllers(parent, enable)
        leaf = f"{parent}/{self.name}"
        if _mkdir(leaf):
            self._created.append(leaf)
        self._dirs[""] = leaf

    def _apply(self, res: Resources) -> None:
        if self.version == 2:
            self._apply_v2(res)
        else:
            self._apply_v1(res)

    def _apply_v1(self, res: Resources) -> None:
        if res.memory is not None:
            # Order matters: memsw must never be below limit_in_bytes, so raise the memory
            # limit first (both start unlimited in a new cgroup).
            _write(self._need("memory", "memory.limit_in_bytes"), str(res.memory))
        if res.memory_swap is not None and (res.memory is not None or res.memory_swap == -1):
            memsw = self._file("memory", "memory.memsw.limit_in_bytes")
            if memsw is not None and os.path.exists(memsw):
                _write(memsw, str(res.memory_swap))
            elif res.memory_swap != -1:
                self.warnings.append(
                    "Your kernel does not support swap limit capabilities or the cgroup is "
                    "not mounted. Memory limited without swap."
                )
        if res.cpu_quota is not None:
            quota = self._need("cpu", "cpu.cfs_quota_us", "CFS bandwidth control (--cpus)")
            _write(self._need("cpu", "cpu.cfs_period_us"), str(res.cpu_period))
            _write(quota, str(res.cpu_quota))
        if res.cpu_shares is not None:
            _write(self._need("cpu", "cpu.shares"), str(res.cpu_shares))
        if res.pids_limit is not None:
            limit = str(res.pids_limit) if res.pids_limit > 0 else "max"
            _write(self._need("pids", "pids.max"), limit)
        deny = self._file("devices", "devices.deny")
        if deny is not None and res.all_devices:  # --privileged: a fresh cgroup allows all
            _write(f"{os.path.dirname(deny)}/devices.allow", "a")
        elif deny is not None:
            # Before any process joins: deny everything, then open the allow-list.
            _write(deny, "a")
            allow = f"{os.path.dirname(deny)}/devices.allow"
            for rule in DEFAULT_DEVICE_RULES:
                _write(allow, rule)

    def _apply_v2(self, res: Resources) -> None:
        if res.memory is not None:
            _write(self._need("memory", "memory.max"), str(res.memory))
        if res.memory_swap is not None and (res.memory is not None or res.memory_swap == -1):
            # v2 limits swap alone, Docker's flag is memory+swap.
            swap = "max" if res.memory_swap == -1 else str(res.memory_swap - (res.memory or 0))
            path = self._file("memory", "memory.swap.max")
            if path is not None and os.path.exists(path):
                _write(path, swap)
            elif res.memory_swap != -1:
                self.warnings.append(
                    "Your kernel does not support swap limit capabilities or the cgroup is "
                    "not mounted. Memory limited without swap."
                )
        if res.cpu_quota is not None:
            _write(self._need("cpu", "cpu.max"), f"{res.cpu_quota} {res.cpu_period}")
        if res.cpu_shares is not None:
            _write(self._need("cpu", "cpu.weight"), str(shares_to_weight(res.cpu_shares)))
        if res.pids_limit is not None:
            limit = str(res.pids_limit) if res.pids_limit > 0 else "max"
            _write(self._need("pids", "pids.max"), limit)

    def _need(self, controller: str, name: str, what: str = "") -> str:
        path = self._file(controller, name)
        if path is None or not os.path.exists(path):
            raise RuntimeFailure(
                f"the kernel has no cgroup file {name} (controller {controller}"
                f"{': needed for ' + what if what else ''}), so the limit cannot be applied"
            )
        return path

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
            usage = _int(self._file("memory", "memory.current")) or 0
            inactive = _keyed(f"{self._dirs['']}/memory.stat").get("inactive_file", 0)
            limit = _int(self._file("memory", "memory.max"))
        else:
            cpu = _int(self._file("cpuacct", "cpuacct.usage")) or 0
            usage = _int(self._file("memory", "memory.usage_in_bytes")) or 0
            stat = self._file("memory", "memory.stat")
            # `docker stats` subtracts the inactive page cache (docker/cli
            # calculateMemUsageUnixNoCache): reclaimable, so not "used".
            inactive = _keyed(stat).get("total_inactive_file", 0) if stat else 0
            limit = _int(self._file("memory", "memory.limit_in_bytes"))
        host = _host_ram()
        if limit is None or limit >= _V1_UNLIMITED or limit > host:
            limit = host
        pids_max = _int(self._file("pids", "pids.max"))
        current = _int(self._file("pids", "pids.current"))
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

    # -- killing and removal ------------------------------------------------------------

    def kill_all(self, sig: int = 9) -> None:
        """Send ``sig`` to every process of the container. Frozen first (when possible),
        so a process cannot fork a child we would miss while we signal."""
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

    def _freeze(self, on: bool, timeout: float = 1.0) -> bool:
        """Freeze (or thaw) the cgroup; False when there is no freezer or it is gone."""
        if self.version == 2:
            path = self._file("", "cgroup.freeze")
            value, events = ("1" if on else "0"), self._file("", "cgroup.events")
        else:
            path = self._file("freezer", "freezer.state")
            value, events = ("FROZEN" if on else "THAWED"), None
        if path is None or not os.path.exists(path):
            return False
        try:
            _write(path, value)
        except RuntimeFailure:
            return False
        if not on:
            return True
        # Freezing is asynchronous: wait (briefly) until every task is frozen. If some
        # task will not freeze, signal anyway: a missed fork is better than a hang.
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

    def remove(self, timeout: float = 5.0) -> None:
        """rmdir the container's cgroup (and any cgroups it created inside), retrying
        while its last processes exit. Idempotent. The shared ``minirun`` parent stays."""
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
                        os.rmdir(d)
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
                    f"cgroup {self.name} still has processes {self.pids()} after "
                    f"{timeout:g}s; kill them first (busy: {', '.join(busy)})"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.1)


def _needed(res: Resources) -> list[str]:
    """The controllers the requested limits cannot do without."""
    needed = {
        "memory": res.memory is not None or res.memory_swap is not None,
        "cpu": res.cpu_quota is not None or res.cpu_shares is not None,
        "pids": res.pids_limit is not None,
    }
    return [c for c, need in needed.items() if need]


def _int(path: str | None) -> int | None:
    """An integer file; None when missing or "max" (unlimited)."""
    if path is None:
        return None
    try:
        text = _read(path)
    except OSError:
        return None
    return int(text) if text.lstrip("-").isdigit() else None


def _copy_cpuset(src: str, dst: str) -> None:
    for name in ("cpuset.cpus", "cpuset.mems"):
        if not _read(f"{dst}/{name}"):
            _write(f"{dst}/{name}", _read(f"{src}/{name}"))


def _enable_controllers(path: str, controllers: list[str]) -> None:
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
                "processes; run minirun from the host's root cgroup or a delegated one)"
            ) from e
