"""``inspect CONTAINER``: Docker's field names, plus the layer stack made explicit —
each image layer dir with its diff_id and "ro", then the container layer with "rw"."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from minirun.container.records import ContainerRecord, Containers


def _iso(ts: float) -> str:
    if not ts:
        return "0001-01-01T00:00:00Z"
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat().replace("+00:00", "Z")


def container_inspect(containers: Containers, rec: ContainerRecord) -> dict[str, Any]:
    cdir = containers.dir(rec.id)
    try:
        spec = json.loads((cdir / "config.json").read_bytes())
    except (OSError, ValueError):
        spec = {}
    opts = rec.options
    proc = spec.get("process", {})
    status = rec.effective_status()
    paused = status == "running" and rec.paused()
    upper = str(cdir / "upper")
    return {
        "Id": rec.id,
        "Created": _iso(rec.created),
        "Path": rec.args[0] if rec.args else "",
        "Args": rec.args[1:],
        "State": {
            # Docker: a paused container is still Running, with Status "paused"
            "Status": "paused" if paused else status, "Running": status == "running",
            "Paused": paused,
            "Pid": rec.pid if status == "running" else 0,
            "ExitCode": rec.exit_code if status == "exited" and rec.status == "exited" else (
                255 if status == "exited" else 0),
            "OOMKilled": rec.oom_killed,
            "StartedAt": _iso(rec.started_at), "FinishedAt": _iso(rec.finished_at),
        },
        "Image": rec.image_id,
        "Name": "/" + rec.name,
        "HostnamePath": str(cdir / "hostname"),
        "HostsPath": str(cdir / "hosts"),
        "ResolvConfPath": str(cdir / "resolv.conf"),
        "Config": {
            "Hostname": spec.get("hostname", ""),
            "User": opts.user or "",
            "Tty": bool(proc.get("terminal")),
            "OpenStdin": opts.interactive,
            "Env": proc.get("env", []),
            "Cmd": opts.command or None,
            "Image": rec.image,
            "WorkingDir": proc.get("cwd", "/"),
            "Entrypoint": opts.entrypoint,
        },
        "HostConfig": {
            "Binds": opts.volumes,
            "Tmpfs": opts.tmpfs,
            "ReadonlyRootfs": opts.read_only,
            "CapAdd": opts.cap_add,
            "CapDrop": opts.cap_drop,
            "SecurityOpt": ["no-new-privileges"] if opts.no_new_privileges else [],
            "AutoRemove": rec.auto_remove,
            "NoPivotRoot": rec.no_pivot,
            "Init": opts.init,
            **_resources(rec),
        },
        "NetworkSettings": _network_settings(containers, rec, status == "running"),
        "GraphDriver": {
            "Name": "overlay",
            "Data": {"LowerDir": ":".join([str(cdir / "init"), *rec.lowerdirs]), "UpperDir": upper,
                     "WorkDir": str(cdir / "work"), "MergedDir": str(cdir / "rootfs")},
        },
        # The point of minirun: the read-only image layers (shared with every container of
        # every image that has them), the container's init layer (its /etc mount points),
        # then the container's own writable layer. Bottom first, like RootFS.Layers.
        "Layers": [{"DiffID": d, "Dir": p, "Mode": "ro"}
                   for d, p in reversed(list(zip(rec.diff_ids, rec.lowerdirs, strict=True)))]
        + [{"DiffID": None, "Dir": str(cdir / "init"), "Mode": "ro", "Init": True},
           {"DiffID": None, "Dir": upper, "Mode": "rw"}],
    }


def _resources(rec: ContainerRecord) -> dict[str, Any]:
    """Docker's HostConfig names for the limits, as applied (0 = unset)."""
    res = rec.resources
    quota, period = res.cpu_quota, res.cpu_period or 100_000
    return {
        "Memory": res.memory or 0,
        "MemorySwap": res.memory_swap or 0,
        "NanoCpus": int(quota * 1e9 / period) if quota else 0,
        "CpuQuota": quota or 0,
        "CpuPeriod": period if quota else 0,
        "CpuShares": res.cpu_shares or 0,
        "PidsLimit": res.pids_limit or 0,
    }


def _network_settings(containers: Containers, rec: ContainerRecord, running: bool) -> dict[str, Any]:
    """Docker's NetworkSettings: the live endpoint's address, MAC and published ports
    (empty once the container stopped, as in Docker)."""
    from minirun.network.attach import settings

    request = rec.network or {"mode": "none"}
    return settings(containers.store, rec.id, request, running)
