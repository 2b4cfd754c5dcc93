"""The networking of containers that have no bridge (``--network none`` and ``host``):
only their /etc/hosts and /etc/resolv.conf. Kept apart from attach.py so that these
runs import nothing of the bridge machinery (ipam, nftables, sockets, pyroute2)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from minirun.errors import UsageError
from minirun.network import dns

DEFAULT_NETWORK = "bridge"
SPECIAL_MODES = ("none", "host")


def uses_bridge(mode: str | None) -> bool:
    return (mode or DEFAULT_NETWORK) not in SPECIAL_MODES


def prepare(mode: str, *, publish: list[str], publish_all: bool, dns_servers: list[str],
            add_hosts: list[str], hosts_path: Path, resolv_path: Path) -> dict[str, Any]:  # fmt: skip
    """Write hosts and resolv.conf of a none/host container; returns its record's
    ``network`` field."""
    if publish or publish_all:
        raise UsageError(f"cannot publish ports with --network {mode} (use a bridge network)")
    extra = [dns.parse_add_host(h, None) for h in add_hosts]
    base = dns.BASE_HOSTS
    if mode == "host":
        with contextlib.suppress(OSError):
            base = Path("/etc/hosts").read_text()
    hosts_path.write_text(dns.hosts(None, [], extra, base=base))
    resolv_path.write_text(dns.resolv_conf(dns_servers, host_network=mode == "host"))
    return {"mode": mode, "dns": dns_servers, "add_hosts": extra}
