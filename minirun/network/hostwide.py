"""What each store made in the host's network namespace, recorded host-wide.

Every store root has its own bridges and its own firewall table (``nat.table_name``),
and only that store's ``network rm``/``prune`` removed them: a throw-away ``--root``
deleted with ``rm -rf`` (as tests, CI and scripts do) left its bridge, route and nft
table on the host for good, and its subnet and bridge name taken. So each bridge a store
brings up is recorded in ``/run/minirun/bridges/<bridge>.json`` (its store root, network
and firewall table), and the next network operation of *any* store reclaims the bridges
and tables of roots that are gone. /run is a tmpfs: after a reboot the bridges are gone
too, and so are the records.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

BRIDGES = "/run/minirun/bridges"


def record(bridge: str, store_root: str, network: str, table: str) -> None:
    os.makedirs(BRIDGES, mode=0o700, exist_ok=True)
    data = {"bridge": bridge, "root": os.path.realpath(store_root), "network": network,
            "table": table}  # fmt: skip
    tmp = f"{BRIDGES}/.{bridge}.{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(json.dumps(data))
    os.replace(tmp, f"{BRIDGES}/{bridge}.json")


def forget(bridge: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(f"{BRIDGES}/{bridge}.json")


def orphans() -> list[dict[str, Any]]:
    """Records whose store no longer has the network (its root removed, or the network
    record deleted by hand)."""
    out = []
    try:
        names = os.listdir(BRIDGES)
    except FileNotFoundError:
        return []
    for n in names:
        if not n.endswith(".json") or n.startswith("."):
            continue
        try:
            rec = json.loads(Path(BRIDGES, n).read_text())
            net_file = Path(rec["root"], "networks", f"{rec['network']}.json")
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if not net_file.exists():
            out.append(rec)
    return out


def reclaim() -> list[str]:
    """Delete the bridges and firewall tables of stores that are gone; returns the
    bridges removed. Cheap when there is nothing to do (a directory listing)."""
    gone = orphans()
    if not gone:
        return []
    from minirun.network import nat, netlink

    removed = []
    with nat.host_lock():
        for rec in gone:
            netlink.delete_link(rec["bridge"])
            kind = nat.installed_kind(rec["table"])
            if kind is not None:
                nat.apply(kind, rec["table"], [])
            forget(rec["bridge"])
            removed.append(rec["bridge"])
        if not nat.others_installed(nat.backend(), ""):
            nat.restore_ip_forward()
    return removed
