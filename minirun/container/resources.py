"""Resource limits as Docker's ``run`` flags express them, validated with Docker's rules.

``parse_resources`` turns ``--memory --memory-swap --cpus --cpu-shares --pids-limit`` into a
``Resources`` record in the cgroup's own units (bytes, CFS microseconds, shares), so
``inspect`` can show exactly what was applied, and ``Resources.to_oci`` turns that into
the OCI runtime spec's ``linux.resources`` object, which is all the runtime
(``minirun.runtime.cgroups``) takes. ``engine_path`` is where the engine's containers'
cgroups live (``linux.cgroupsPath``). Everything here is pure: no cgroup filesystem is
touched.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

from minirun.errors import UsageError


def shares_to_weight(shares: int) -> int:
    """cpu.shares (v1) -> cpu.weight (v2), as runtime/cgroups converts it (imported only
    when a container has --cpu-shares: every verb reads records, few need cgroups)."""
    from minirun.runtime.cgroups import shares_to_weight as convert

    return convert(shares)


__all__ = [
    "MIN_MEMORY",
    "Resources",
    "engine_path",
    "parse_bytes",
    "parse_cpus",
    "parse_resources",
    "shares_to_weight",
]

# Docker's floor (daemon_unix.go linuxMinMemory): not a kernel limit, but below it a
# container cannot even start its init reliably, so Docker refuses it up front.
MIN_MEMORY = 6 * 1024 * 1024
# The kernel's bounds for cpu.shares (MIN_SHARES/MAX_SHARES in kernel/sched/sched.h);
# v1 clamps silently, so clamping here keeps what inspect shows equal to what applies.
MIN_SHARES = 2
MAX_SHARES = 262144
CPU_PERIOD = 100_000  # Docker's --cpus always uses the default CFS period (100 ms)
_MIN_QUOTA = 1000  # the kernel refuses cfs_quota_us below 1 ms: --cpus 0.01 is the floor
_INT64_MAX = (1 << 63) - 1

# go-units' binary map, used by Docker's RAMInBytes: every unit is a power of 1024.
_UNITS = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
# A number (integer or decimal), one optional space, then an optional unit: "b" alone, or
# k/m/g/t/p optionally followed by "b" or "ib" (32m, 32mb, 32MiB, 1.5g, "100 k").
# ASCII digits only: Python's \d (and int(), float()) also take other scripts' digits.
_SIZE_RE = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+) ?([a-z]*)", re.IGNORECASE)
_CPUS_RE = re.compile(r"([0-9]*)(?:\.([0-9]*))?")
# More significant digits than this cannot fit an int64 (10**19 > 2**63 - 1): refusing them
# up front keeps int() under its digit limit and float() away from inf.
_INT64_DIGITS = 19


@dataclass(frozen=True)
class Resources:
    """The limits of one container, in the units the cgroup files take. None = no limit
    (the cgroup keeps its default)."""

    memory: int | None = None  # bytes
    memory_swap: int | None = None  # bytes of memory+swap; -1 = unlimited (Docker's meaning)
    cpu_quota: int | None = None  # microseconds per cpu_period, from --cpus
    cpu_period: int = CPU_PERIOD
    cpu_shares: int | None = None
    pids_limit: int | None = None  # -1 or 0 = unlimited (Docker)
    all_devices: bool = False  # --privileged: the device cgroup allows every device
    device_rules: list[dict[str, Any]] = field(default_factory=list)  # --device: allowed too

    @property
    def cpus(self) -> float | None:
        """--cpus as given (quota/period), for display."""
        return None if self.cpu_quota is None else self.cpu_quota / self.cpu_period

    @property
    def cpu_weight(self) -> int | None:
        """cgroup v2's cpu.weight for ``cpu_shares``."""
        return None if self.cpu_shares is None else shares_to_weight(self.cpu_shares)

    def is_empty(self) -> bool:
        return self == Resources(cpu_period=self.cpu_period)

    def to_oci(self) -> dict[str, Any]:
        """The OCI runtime spec's ``linux.resources`` for these limits (config-linux.md):
        memory.limit, memory.swap (memory+swap, as Docker's flag; -1 = unlimited),
        cpu.shares, cpu.quota/period, pids.limit (-1 = unlimited) and the device rules:
        everything denied but Docker's default devices, or everything allowed for
        --privileged."""
        out: dict[str, Any] = {}
        memory: dict[str, int] = {}
        if self.memory is not None:
            memory["limit"] = self.memory
        # a swap limit only means something with a memory limit (or as "unlimited")
        if self.memory_swap is not None and (self.memory is not None or self.memory_swap == -1):
            memory["swap"] = self.memory_swap
        if memory:
            out["memory"] = memory
        cpu: dict[str, int] = {}
        if self.cpu_shares is not None:
            cpu["shares"] = self.cpu_shares
        if self.cpu_quota is not None:
            cpu["quota"] = self.cpu_quota
            cpu["period"] = self.cpu_period
        if cpu:
            out["cpu"] = cpu
        if self.pids_limit is not None:
            out["pids"] = {"limit": self.pids_limit if self.pids_limit > 0 else -1}
        if self.all_devices:
            out["devices"] = [{"allow": True, "access": "rwm"}]
        else:
            out["devices"] = [{"allow": False, "access": "rwm"}]
            from minirun.runtime.cgroups import DEFAULT_ALLOWED_DEVICES

            out["devices"] += [dict(rule) for rule in DEFAULT_ALLOWED_DEVICES]
            out["devices"] += [dict(rule) for rule in self.device_rules]
        return out


def engine_path(container_id: str) -> str:
    """The ``linux.cgroupsPath`` of an engine container, like Docker's cgroupfs driver:
    ``/minirun/<id>`` below every hierarchy's root."""
    return f"/minirun/{container_id}"


def parse_bytes(text: str) -> int:
    """Docker's ``RAMInBytes`` (go-units): "32m", "1g", "512k", "1024b", "1.5GiB", "100"
    (plain bytes). Units are powers of 1024 and case-insensitive; fractions are truncated
    to whole bytes, as Docker does."""
    raw = text
    m = _SIZE_RE.fullmatch(text.strip())
    if m is None:
        raise UsageError(
            f"invalid size: {_shown(raw)} (expected a number with an optional unit b, k, m, g, "
            "t or p, e.g. 512m or 1g)"
        )
    number, suffix = m.group(1), m.group(2).lower()
    if suffix in ("", "b"):
        mul = 1
    elif suffix[0] in _UNITS and suffix[1:] in ("", "b", "ib"):
        mul = _UNITS[suffix[0]]
    else:
        raise UsageError(
            f"invalid suffix {suffix!r} in size {_shown(raw)} (use b, k, m, g, t or p, "
            "optionally followed by b or ib: 512m, 512mb, 512MiB)"
        )
    whole = number.partition(".")[0].lstrip("0")
    if len(whole) > _INT64_DIGITS:
        raise UsageError(f"invalid size: {_shown(raw)} is too large")
    # Integers stay exact; decimals go through float exactly as Go's ParseFloat does (the
    # fraction may be long: float() has no digit limit, and whole < 10**19 stays finite).
    value = int(whole or "0") * mul if number.isdigit() else int(float(number) * mul)
    if value > _INT64_MAX:
        raise UsageError(f"invalid size: {_shown(raw)} is too large")
    return value


def parse_cpus(text: str) -> int:
    """``--cpus`` as nano-CPUs (Docker's NanoCPUs): "1.5" -> 1_500_000_000. Decimal
    notation only, at most 9 decimals ("value is too precise" in Docker)."""
    m = _CPUS_RE.fullmatch(text.strip())
    if m is None or not (m.group(1) or m.group(2)):
        raise UsageError(f"invalid --cpus value {_shown(text)}: failed to parse it as a number")
    whole, frac = m.group(1).lstrip("0") or "0", m.group(2) or ""
    frac = frac.rstrip("0")
    if len(frac) > 9:
        raise UsageError(f"invalid --cpus value {_shown(text)}: value is too precise")
    if len(whole) > _INT64_DIGITS:
        raise UsageError(f"invalid --cpus value {_shown(text)}: value is too large")
    nano = int(whole) * 1_000_000_000 + int(frac.ljust(9, "0") or "0")
    if nano > _INT64_MAX:  # Docker's NanoCPUs is an int64
        raise UsageError(f"invalid --cpus value {_shown(text)}: value is too large")
    return nano


def _shown(text: str, limit: int = 40) -> str:
    """``text`` quoted for a message, cut short if long (a 5000-digit --memory is not
    echoed whole)."""
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}..."


def _cpu_count() -> int:
    # Docker's sysinfo.NumCPU counts the CPUs this process may run on, not the host's.
    try:
        return len(os.sched_getaffinity(0))
    except OSError:
        return os.cpu_count() or 1


def parse_resources(
    memory: str | None = None,
    memory_swap: str | None = None,
    cpus: str | None = None,
    cpu_shares: int | None = None,
    pids_limit: int | None = None,
) -> Resources:
    """The ``run`` flags -> ``Resources``, with Docker's validation and defaults. Raises
    ``UsageError`` with Docker's message (plus a hint) for each rule it breaks."""
    mem: int | None = None
    if memory is not None:
        try:
            mem = parse_bytes(memory)
        except UsageError as e:
            raise UsageError(f"invalid --memory: {e}") from None
        if mem == 0:
            mem = None  # Docker: 0 means "no limit"
        elif mem < MIN_MEMORY:
            raise UsageError("Minimum memory limit allowed is 6MB (--memory must be >= 6m)")

    swap: int | None = None
    if memory_swap is not None:
        if memory_swap.strip() == "-1":
            swap = -1
        else:
            try:
                swap = parse_bytes(memory_swap)
            except UsageError as e:
                raise UsageError(f"invalid --memory-swap: {e} (or -1 for unlimited swap)") from None
            if swap == 0:
                swap = None  # Docker: 0 means "unset", so the default below applies
    if swap is not None and swap > 0:
        if mem is None:
            raise UsageError(
                "You should always set the Memory limit when using Memoryswap limit, "
                "see usage (add --memory)"
            )
        if swap < mem:
            raise UsageError(
                "Minimum memoryswap limit should be larger than memory limit, see usage "
                "(--memory-swap is memory plus swap, so it must be >= --memory)"
            )
    if mem is not None and swap is None:
        # Docker's default: as much swap as memory, i.e. memory+swap = 2 x memory, kept
        # within the int64 the OCI spec (and the cgroup files) take: from 4 EiB of memory
        # on, 2 x memory would not fit, and that much memory+swap is no limit anyway.
        swap = min(2 * mem, _INT64_MAX)

    quota: int | None = None
    if cpus is not None:
        nano = parse_cpus(cpus)
        ncpu = _cpu_count()
        quota = nano * CPU_PERIOD // 1_000_000_000
        if nano > ncpu * 1_000_000_000 or quota < _MIN_QUOTA:
            raise UsageError(
                f"range of CPUs is from 0.01 to {ncpu}.00, as there are only {ncpu} CPUs "
                f"available (got --cpus {cpus.strip()})"
            )

    shares: int | None = None
    if cpu_shares is not None and cpu_shares != 0:  # 0 = Docker's "default weight"
        if cpu_shares < 0:
            raise UsageError(
                f"invalid --cpu-shares {cpu_shares}: must be a positive integer "
                f"({MIN_SHARES}..{MAX_SHARES}, default 1024)"
            )
        shares = min(max(cpu_shares, MIN_SHARES), MAX_SHARES)

    pids: int | None = None
    if pids_limit is not None:
        # Docker: any value <= 0 means unlimited; keep one spelling of it.
        pids = pids_limit if pids_limit > 0 else -1

    return Resources(
        memory=mem, memory_swap=swap, cpu_quota=quota, cpu_shares=shares, pids_limit=pids
    )
