"""Network records: ``<store>/networks/<name>.json``, one per network.

The default network is named ``bridge`` (as in Docker) and is created on first use:
bridge ``minirun0`` on ``10.88.0.0/16`` (Podman's default) unless that subnet collides
with a route on the host, then the next free candidate. User-defined networks get a
bridge ``mr-<id12>`` and, without ``--subnet``, the first free ``10.89.N.0/24``.

``MINIRUN_DEFAULT_BRIDGE`` / ``MINIRUN_DEFAULT_SUBNET`` choose the default network's
bridge and subnet when it is first created (tests use them to stay on their own range).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from minirun.errors import NetworkError, NetworkNotFound, UsageError
from minirun.image.store import Store, atomic_write, file_lock
from minirun.network.local import DEFAULT_NETWORK, SPECIAL_MODES  # noqa: F401 - re-exported

DEFAULT_BRIDGE = "minirun0"
DEFAULT_SUBNETS = ["10.88.0.0/16"] + [f"172.{n}.0.0/16" for n in range(18, 32)]
USER_SUBNETS = [f"10.89.{n}.0/24" for n in range(256)]  # Podman's pool for user networks
BRIDGE_OPT = "com.docker.network.bridge.name"
_NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")


@dataclass
class Network:
    """One network record (networks/<name>.json): bridge, subnet, gateway."""

    name: str
    id: str  # 64 hex
    bridge: str  # the host's bridge interface
    subnet: str  # "10.88.0.0/16"
    gateway: str  # the bridge's address, the containers' default route
    created: float
    default: bool = False  # the "bridge" network: no name resolution between members

    @property
    def prefixlen(self) -> int:
        return ipaddress.ip_network(self.subnet).prefixlen


class Networks:
    """The network records of one store, and the lock all network state is changed under."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.root = store.root / "networks"

    def _ensure(self) -> None:
        if not self.root.is_dir():
            self.store.ensure()
            self.root.mkdir(mode=0o700, exist_ok=True)

    def lock(self) -> contextlib.AbstractContextManager[None]:
        """One flock for networks, addresses, ports and proxies: every change to them is
        a read-modify-write of small files, so a single lock keeps it simple and safe."""
        self._ensure()
        return file_lock(self.root / "lock")

    def path(self, name: str) -> Path:
        return self.root / f"{name}.json"

    def get(self, name: str) -> Network:
        net = self.find(name)
        if net is None:
            raise NetworkNotFound(name)
        return net

    def find(self, name: str) -> Network | None:
        if not _NAME_RE.fullmatch(name):
            return None
        try:
            return Network(**json.loads(self.path(name).read_bytes()))
        except (FileNotFoundError, NotADirectoryError, ValueError, TypeError):
            return None

    def lookup(self, ref: str) -> Network:
        """By name, full ID or unique ID prefix (as Docker)."""
        net = self.find(ref)
        if net is not None:
            return net
        matches = [n for n in self.all() if n.id.startswith(ref)] if ref else []
        if len(matches) == 1:
            return matches[0]
        raise NetworkNotFound(ref)

    def all(self) -> list[Network]:
        if not self.root.is_dir():
            return []
        nets = []
        for p in self.root.glob("*.json"):
            if p.name == "state.json":
                continue
            net = self.find(p.stem)
            if net is not None:
                nets.append(net)
        nets.sort(key=lambda n: n.created)
        return nets

    def save(self, net: Network) -> None:
        self._ensure()
        atomic_write(self.path(net.name), json.dumps(asdict(net)).encode())

    def delete(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(name).unlink()

    # -- creation (callers hold the lock) -------------------------------------------------

    def new(self, name: str, subnet: str | None = None, bridge: str | None = None,
            gateway: str | None = None) -> Network:
        """A new network record (not yet saved), its subnet checked against the host's
        routes and the other networks of this store."""
        if name in SPECIAL_MODES:
            raise UsageError(f"network name {name!r} is reserved")
        if not _NAME_RE.fullmatch(name) or len(name) > 64 or name == "state":
            raise UsageError(f"invalid network name {name!r}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
        if self.find(name) is not None:
            raise NetworkError(f"network with name {name} already exists")
        nid = os.urandom(32).hex()
        taken = [ipaddress.ip_network(n.subnet) for n in self.all()] + host_routes() + host_addresses()
        default = name == DEFAULT_NETWORK
        if subnet is not None:
            net = parse_subnet(subnet)
            for t in taken:
                if net.overlaps(t):
                    raise NetworkError(f"subnet {net} overlaps {t}, already in use on this host "
                                       "(by a route, an address or another network); choose "
                                       "another --subnet")
        else:
            candidates = DEFAULT_SUBNETS if default else USER_SUBNETS
            free = [c for c in candidates
                    if not any(ipaddress.ip_network(c).overlaps(t) for t in taken)]
            if not free:
                raise NetworkError("no free subnet for a new network (every candidate overlaps a "
                                   "route on this host); give one with --subnet")
            net = parse_subnet(free[0])
        if gateway is None:
            gw = str(next(net.hosts()))
        else:
            gw = gateway
            if ipaddress.ip_address(gw) not in net:
                raise UsageError(f"gateway {gw} is not in subnet {net}")
        if bridge is None:
            bridge = default_bridge_name(self) if default else f"mr-{nid[:12]}"
        check_ifname(bridge)
        if any(n.bridge == bridge for n in self.all()) or Path(f"/sys/class/net/{bridge}").exists():
            raise NetworkError(f"bridge interface {bridge} already exists on this host; choose another name")
        return Network(name=name, id=nid, bridge=bridge, subnet=str(net), gateway=gw,
                       created=time.time(), default=default)

    def default(self) -> Network:
        """The ``bridge`` network, created (as a record) on first use."""
        net = self.find(DEFAULT_NETWORK)
        if net is not None:
            return net
        with self.lock():
            net = self.find(DEFAULT_NETWORK)
            if net is None:
                net = self.new(DEFAULT_NETWORK, subnet=os.environ.get("MINIRUN_DEFAULT_SUBNET") or None,
                               bridge=os.environ.get("MINIRUN_DEFAULT_BRIDGE") or None)
                self.save(net)
        return net


def default_bridge_name(nets: Networks) -> str:
    """minirun0, or minirun1... if another store on this host already has minirun0."""
    ours = {n.bridge for n in nets.all()}
    for i in range(100):
        name = f"minirun{i}"
        if name not in ours and not Path(f"/sys/class/net/{name}").exists():
            return name
    raise NetworkError("no free bridge name minirun0..minirun99")


def check_ifname(name: str) -> None:
    if not 0 < len(name) <= 15 or "/" in name or any(c.isspace() for c in name) or name in (".", ".."):
        raise UsageError(f"invalid bridge name {name!r} (1-15 characters, no '/' or spaces)")


def parse_subnet(text: str) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.ip_network(text, strict=True)
    except ValueError as e:
        raise UsageError(f"invalid subnet {text!r}: {e}") from None
    if not isinstance(net, ipaddress.IPv4Network):
        raise UsageError(f"invalid subnet {text!r}: only IPv4 subnets are supported")
    if net.prefixlen > 30:
        raise UsageError(f"subnet {text} is too small (at most /30)")
    return net


def host_routes() -> list[ipaddress.IPv4Network]:
    """IPv4 routes of the host's main table (default route excluded), from /proc: a
    subnet that overlaps one would make the host send that traffic the wrong way."""
    out: list[ipaddress.IPv4Network] = []
    try:
        with open("/proc/net/route") as f:
            lines = f.read().splitlines()[1:]
    except OSError:
        return out
    for line in lines:
        fields = line.split()
        if len(fields) < 8:
            continue
        dest = int(fields[1], 16)
        mask = int(fields[7], 16)
        if mask == 0:
            continue
        # /proc/net/route prints addresses in host (little-endian) byte order
        d = ipaddress.IPv4Address(int.from_bytes(dest.to_bytes(4, "little"), "big"))
        m = ipaddress.IPv4Address(int.from_bytes(mask.to_bytes(4, "little"), "big"))
        with contextlib.suppress(ValueError):
            out.append(ipaddress.IPv4Network(f"{d}/{m}", strict=False))
    return out


def host_addresses() -> list[ipaddress.IPv4Network]:
    """The subnet of every IPv4 address on the host's interfaces, also those that are down
    or have no route (``ip -j -4 addr``, iproute2): a bridge on the same subnet as any of
    them would collide as soon as that interface comes up."""
    import shutil
    import subprocess

    ip = shutil.which("ip") or "/usr/sbin/ip"
    try:
        out = subprocess.run([ip, "-j", "-4", "addr", "show"], capture_output=True, text=True,
                             timeout=5).stdout  # fmt: skip
        links = json.loads(out or "[]")
    except (OSError, ValueError, subprocess.SubprocessError):
        return []
    nets: list[ipaddress.IPv4Network] = []
    for link in links:
        for a in link.get("addr_info") or []:
            with contextlib.suppress(KeyError, TypeError, ValueError):
                if not ipaddress.IPv4Address(a["local"]).is_loopback:
                    nets.append(ipaddress.IPv4Network(f"{a['local']}/{a['prefixlen']}",
                                                      strict=False))  # fmt: skip
    return nets


def default_route_mtu() -> int:
    """The MTU of the interface the host's default route leaves by (1500 without one)."""
    try:
        with open("/proc/net/route") as f:
            lines = f.read().splitlines()[1:]
        for line in lines:
            fields = line.split()
            if len(fields) >= 8 and int(fields[1], 16) == 0 and int(fields[7], 16) == 0:
                return int(Path(f"/sys/class/net/{fields[0]}/mtu").read_text())
    except (OSError, ValueError):
        pass
    return 1500
