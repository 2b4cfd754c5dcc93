"""``inspect CONTAINER``: Docker's field names, plus the layer stack made explicit —
each image layer dir with its diff_id and "ro", then the container layer with "rw"."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from minirun.container.records import ContainerRecord, Containers
from minirun.container.runflags import Device, parse_device, parse_restart, parse_ulimit
from minirun.errors import MinirunError


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
            # a restarting one is Running too (moby's SetRestarting), with the last exit
            "Status": "paused" if paused else status, "Running": status in ("running", "restarting"),
            "Paused": paused, "Restarting": status == "restarting",
            "Pid": rec.pid if status == "running" else 0,
            "ExitCode": rec.exit_code if status in ("exited", "restarting") and rec.status == "exited" else (
                255 if status == "exited" else 0),
            "OOMKilled": rec.oom_killed,
            "StartedAt": _iso(rec.started_at), "FinishedAt": _iso(rec.finished_at),
            **_health(containers, rec),
        },
        "Image": rec.image_id,
        "Name": "/" + rec.name,
        "RestartCount": _restart_count(containers, rec),
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
            "Labels": _labels(containers, rec),
            **({"StopSignal": rec.stop_signal} if rec.stop_signal else {}),
            **({"StopTimeout": opts.stop_timeout} if opts.stop_timeout is not None else {}),
            **({"Healthcheck": rec.healthcheck} if rec.healthcheck else {}),
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
            "RestartPolicy": parse_restart(opts.restart).to_docker(),
            "ContainerIDFile": opts.cidfile or "",
            "Ulimits": [parse_ulimit(u).to_docker() for u in opts.ulimits] or None,
            "Devices": [d.to_docker() for spec in opts.devices for d in _devices(spec)],
            "Sysctls": dict(opts.sysctls) or None,
            **_resources(rec),
        },
        "Mounts": _mounts(containers, rec),
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


def _restart_count(containers: Containers, rec: ContainerRecord) -> int:
    """The restarts its --restart policy made since the user last started it."""
    if rec.options.restart in ("", "no"):
        return 0
    from minirun.container.restart import restart_count

    return restart_count(containers, rec)


def _health(containers: Containers, rec: ContainerRecord) -> dict[str, Any]:
    """State.Health {Status, FailingStreak, Log}, for a container with a health check."""
    if not rec.healthcheck:
        return {}
    from minirun.container.health import inspect_health

    health = inspect_health(containers, rec)
    return {"Health": health} if health is not None else {}


def _labels(containers: Containers, rec: ContainerRecord) -> dict[str, str]:
    """Config.Labels: the image's labels, with --label/--label-file over them."""
    labels: dict[str, str] = {}
    try:
        cfg = json.loads(containers.store.read_blob(rec.image_id)).get("config") or {}
        labels = {str(k): str(v) for k, v in (cfg.get("Labels") or {}).items()}
    except (MinirunError, OSError, ValueError, AttributeError):
        pass  # the image is gone (rmi -f): the container's own labels remain
    return {**labels, **rec.options.labels}


def _devices(spec: str) -> list[Device]:
    """A --device as recorded; a host node gone since create shows no entry."""
    try:
        return parse_device(spec)
    except MinirunError:
        return []


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


def _mounts(containers: Containers, rec: ContainerRecord) -> list[dict[str, Any]]:
    """Docker's Mounts: each -v, --mount and image-VOLUME mount (container/volumes.py)."""
    from minirun.container.volumes import inspect_mounts

    return inspect_mounts(containers.store, rec.id)
