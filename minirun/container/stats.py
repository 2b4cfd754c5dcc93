"""``stats``: resource usage read from each container's cgroup, in Docker's terms."""

from __future__ import annotations

import time
from collections.abc import Sequence

from minirun.container.records import ContainerRecord
from minirun.humanize import binary_size


def sample(recs: Sequence[ContainerRecord], interval: float) -> list[dict[str, str]]:
    """One row per container. CPU % is the cgroup's CPU time over ``interval`` seconds of
    wall time, where 100% is one full CPU (so up to N×100% on N CPUs, as Docker shows)."""
    from minirun.container.resources import engine_path
    from minirun.runtime import cgroups

    groups = {r.id: cgroups.Cgroup.open(engine_path(r.id)) if r.alive() else None for r in recs}
    before = {cid: cg.stats().cpu_usage_ns for cid, cg in groups.items() if cg is not None}
    t0 = time.monotonic()
    if before:
        time.sleep(interval)
    elapsed = time.monotonic() - t0
    rows = []
    for r in recs:
        cg = groups[r.id]
        st = cg.stats() if cg is not None else None
        if st is None:
            rows.append({"ID": r.id[:12], "Name": r.name, "CPUPerc": "0.00%",
                         "MemUsage": "0B / 0B", "MemPerc": "0.00%", "PIDs": "0"})
            continue
        cpu = (st.cpu_usage_ns - before.get(r.id, st.cpu_usage_ns)) / 1e9 / max(elapsed, 1e-9) * 100
        limit = st.memory_limit or 1
        rows.append({
            "ID": r.id[:12], "Name": r.name,
            "CPUPerc": f"{cpu:.2f}%",
            "MemUsage": f"{binary_size(st.memory_usage)} / {binary_size(st.memory_limit)}",
            "MemPerc": f"{st.memory_usage / limit * 100:.2f}%",
            "PIDs": str(st.pids),
        })
    return rows
