"""The endpoint state: which container holds which address, ports and proxy.

One file, ``<store>/networks/state.json``, changed only under the networks lock
(``Networks.lock``, an flock), so any process — the foreground ``minirun run``, a
detached container's monitor, ``rm``, ``network prune`` — can allocate and release.

An endpoint is kept alive by an *owner* process: the minirun process that prepared it
until the container starts, then the container's init. Each is recorded as (pid, start
time), so a reused pid never keeps a dead endpoint alive. ``live()`` tells which
endpoints a crash left behind; the allocator never hands out an address a live
endpoint holds, and reconcile frees the others (see ``attach.reconcile``).
"""

from __future__ import annotations

import ipaddress
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from minirun.errors import NetworkError, UsageError


@dataclass
class PortMap:
    """``-p [host_ip:][host_port:]container_port[/proto]``; host_port 0 = pick one."""

    container_port: int
    proto: str = "tcp"
    host_ip: str = "0.0.0.0"
    host_port: int = 0

    def key(self) -> str:
        return f"{self.container_port}/{self.proto}"

    def docker(self) -> str:
        """``80/tcp -> 0.0.0.0:8080``, as ``docker port`` prints it."""
        return f"{self.key()} -> {self.host_ip}:{self.host_port}"


@dataclass
class Endpoint:
    """A container's place on a network: address, MAC, veth, ports, its owner process."""

    container: str  # container ID
    network: str  # network name
    ip: str
    mac: str
    veth: str  # the host end of the veth pair
    owner_pid: int  # the process that keeps this endpoint alive (see module docstring)
    owner_start: str
    hostname: str = ""
    name: str = ""  # the container's name, for the other members' /etc/hosts
    hosts_path: str = ""  # the container's /etc/hosts on the host (rewritten as members change)
    add_hosts: list[str] = field(default_factory=list)  # "IP\tNAME" lines from --add-host
    ports: list[PortMap] = field(default_factory=list)
    proxy_pid: int = 0
    proxy_start: str = ""
    attached: bool = False  # the veth exists (attach ran)
    interface: str = "eth0"  # its name inside the container (eth0, eth1... in connect order)
    default_route: bool = True  # the container's default route goes through this one
    aliases: list[str] = field(default_factory=list)  # ``network connect --alias``: more names

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Endpoint:
        d = dict(d)
        d["ports"] = [PortMap(**p) for p in d.get("ports", [])]
        return cls(**d)


@dataclass
class State:
    """Every endpoint of a store's networks, and the firewall backend in use."""

    # key(container, network) -> endpoint; a container has one per network it is on
    # (files written before ``network connect`` keyed its only endpoint by container ID)
    endpoints: dict[str, Endpoint] = field(default_factory=dict)
    firewall: str | None = None  # the backend our rules were installed with, if any

    @classmethod
    def load(cls, path: Path) -> State:
        try:
            d = json.loads(path.read_bytes())
        except (FileNotFoundError, ValueError):
            return cls()
        return cls(endpoints={k: Endpoint.from_json(v) for k, v in d.get("endpoints", {}).items()},
                   firewall=d.get("firewall"))

    def save(self, path: Path) -> None:
        """Write then rename (no fsync: after a power loss every owner is dead anyway and
        reconcile frees what the file still lists)."""
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_bytes(json.dumps(asdict(self)).encode())
        os.replace(tmp, path)

    def on(self, network: str) -> list[Endpoint]:
        return [e for e in self.endpoints.values() if e.network == network]

    def of(self, cid: str) -> list[Endpoint]:
        """The container's endpoints, eth0 first."""
        return sorted((e for e in self.endpoints.values() if e.container == cid),
                      key=lambda e: if_index(e.interface))

    def find(self, cid: str, network: str) -> Endpoint | None:
        return next((e for e in self.endpoints.values()
                     if e.container == cid and e.network == network), None)

    def put(self, ep: Endpoint) -> None:
        self.drop(ep)
        self.endpoints[key(ep.container, ep.network)] = ep

    def drop(self, ep: Endpoint) -> None:
        for k in [k for k, e in self.endpoints.items()
                  if e.container == ep.container and e.network == ep.network]:
            del self.endpoints[k]

    def used_ports(self) -> set[tuple[str, int, str]]:
        return {(p.host_ip, p.host_port, p.proto) for e in self.endpoints.values() for p in e.ports}


def key(cid: str, network: str) -> str:
    return f"{cid}/{network}"


def if_index(name: str) -> int:
    """eth3 -> 3 (the order of a container's interfaces)."""
    digits = name[3:]
    return int(digits) if name.startswith("eth") and digits.isdigit() else 1 << 16


def allocate_ip(subnet: str, gateway: str, used: set[str]) -> str:
    """The lowest free host address of ``subnet`` (not the network, broadcast or gateway
    address). Lowest-free keeps the choice deterministic; with the MAC derived from the
    address (``mac_for``) a reused address never meets a stale ARP entry."""
    net = ipaddress.ip_network(subnet)
    taken = used | {gateway}
    for host in net.hosts():
        s = str(host)
        if s not in taken:
            return s
    raise NetworkError(f"no free address left in {subnet} ({len(used)} containers use it)")


def check_requested_ip(ip: str, subnet: str, gateway: str) -> str:
    """``--ip``: an IPv4 host address of ``subnet`` other than its gateway (Docker's
    messages); whether another container holds it is checked when it is allocated."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        raise UsageError(f"invalid IPv4 address: {ip}") from None
    if not isinstance(addr, ipaddress.IPv4Address) or addr.is_unspecified:
        raise UsageError(f"invalid IPv4 address: {ip}")
    net = ipaddress.ip_network(subnet)
    if addr not in net:
        raise UsageError(f"no configured subnet or ip-range contain the IP address {ip} "
                         f"(the network's subnet is {subnet})")
    if net.prefixlen < 31 and addr in (net.network_address, net.broadcast_address):
        raise UsageError(f"{ip} is the network or broadcast address of {subnet}, not a host address")
    if str(addr) == gateway:
        raise NetworkError(f"Address already in use: {ip} is the gateway of {subnet}")
    return str(addr)


def mac_for(ip: str) -> str:
    """Docker's scheme: 02:42 (locally administered) + the four bytes of the IPv4 address."""
    return "02:42:" + ":".join(f"{b:02x}" for b in ipaddress.IPv4Address(ip).packed)


def alive(pid: int, start: str) -> bool:
    """Is (pid, start time) still that process? A zombie counts as gone."""
    if pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return False
    fields = data.rsplit(b")", 1)[1].split()
    if fields[0] in (b"Z", b"X"):
        return False
    return fields[19].decode() == start


def start_time(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return ""
