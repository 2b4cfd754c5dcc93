"""The networking API of the container lifecycle, callable from any process.

* ``prepare`` (in ``create``): writes the container's /etc/hosts and /etc/resolv.conf;
  on a bridge network also allocates the address and binds the published host ports —
  so a taken port fails *before* the container exists, and leaves nothing allocated.
* ``attach`` (the runtime's ``prestart(pid)`` hook, child namespaces exist, nothing
  exec'd yet): bridge (created on first use, with its firewall rules), veth pair, eth0
  with address and default route, port proxy; the container's init becomes the owner.
* ``release`` (when the container exits, on ``rm``): proxy stopped, veth deleted if
  still there, address and ports given back, other members' /etc/hosts updated.
* ``reconcile`` (at the start of every network operation): whatever a SIGKILL left
  behind — endpoints whose owner process is dead — is released as above.
* ``connect`` / ``disconnect`` (``network connect|disconnect``): a running container gets
  (or loses) one more veth, ``ethN``, at once; a stopped one only has its list changed.

A container is on one or more networks: the list is ``containers/<id>/networks.json``
(absent: just the network it was run with, ``--network``), read at every start. The first
network gets eth0, the default route and the published ports; the others eth1, eth2...
The list is a file of its own, not part of container.json, because a container's
supervisor rewrites its record from memory when the container exits.

All state lives on disk (``ipam.State`` under ``Networks.lock``); the only in-memory
thing is an optimisation: the sockets bound by ``prepare`` are handed to the proxy by
``attach`` when both run in the same process (else ``attach`` binds them again).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from minirun import events
from minirun.errors import NetworkError, PortInUse, UsageError
from minirun.image.store import Store
from minirun.network import dns, ipam, local
from minirun.network.config import DEFAULT_NETWORK, Network, Networks, default_route_mtu
from minirun.network.ipam import Endpoint, PortMap, State
from minirun.network.local import uses_bridge

_reserved: dict[str, list[socket.socket]] = {}  # container ID -> bound host ports


def _state_path(nets: Networks) -> Path:
    return nets.root / "state.json"


def veth_name(cid: str, interface: str = "eth0") -> str:
    """The host end of a container's veth: 15 characters (IFNAMSIZ - 1). eth0's is
    ``mrv<id12>``; ethN's has an ``n`` (never a hex digit, so never another's eth0)."""
    if interface == "eth0":
        return "mrv" + cid[:12]
    n = str(ipam.if_index(interface))
    return f"mrv{cid[:11 - len(n)]}n{n}"


# -- the networks a container is on ----------------------------------------------------------


@dataclass
class Attachment:
    """One network of a container's list (``networks.json``): what ``connect`` asked for."""

    network: str  # the network's name
    ip: str = ""  # --ip: the address to have on it, else the lowest free one
    aliases: list[str] = field(default_factory=list)  # --alias: more names for its members


def _list_path(store: Store, cid: str) -> Path:
    return store.containers / cid / "networks.json"


def attachments(store: Store, cid: str, request: dict[str, Any]) -> list[Attachment]:
    """The networks the container is on, in order (the first has eth0 and the default
    route): its list, or without one the network it was run with."""
    try:
        d = json.loads(_list_path(store, cid).read_bytes())
        return [Attachment(network=str(a["network"]), ip=str(a.get("ip") or ""),
                           aliases=[str(x) for x in a.get("aliases") or []])
                for a in d["networks"]]  # fmt: skip
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise NetworkError(f"cannot read {_list_path(store, cid)}: {e}") from None
    mode = request.get("mode") or "none"
    return [Attachment(network=mode)] if uses_bridge(mode) else []


def _save_attachments(store: Store, cid: str, atts: list[Attachment]) -> None:
    from minirun.image.store import atomic_write

    data = json.dumps({"networks": [asdict(a) for a in atts]}).encode()
    try:
        atomic_write(_list_path(store, cid), data)
    except FileNotFoundError:
        from minirun.errors import ContainerNotFound

        raise ContainerNotFound(cid) from None


# -- prepare ----------------------------------------------------------------------------------


def prepare(store: Store, cid: str, *, mode: str, hostname: str, name: str | None,
            publish: list[str], publish_all: bool, dns_servers: list[str], add_hosts: list[str],
            image_cfg: dict[str, Any], hosts_path: Path, resolv_path: Path) -> dict[str, Any]:
    """Write the container's hosts and resolv.conf; on a bridge network allocate its
    endpoint. Returns what the container record keeps (its ``network`` field): the
    request, enough to allocate again when the container is started again."""
    mode = mode or DEFAULT_NETWORK
    if mode.startswith("container:"):
        raise UsageError("--network container:NAME is not supported")
    if not uses_bridge(mode):
        return local.prepare(mode, publish=publish, publish_all=publish_all,
                             dns_servers=dns_servers, add_hosts=add_hosts,
                             hosts_path=hosts_path, resolv_path=resolv_path)  # fmt: skip
    from minirun.network import hostwide

    hostwide.reclaim()  # a gone store's bridge must not hold a subnet or name we need
    maps = [pm for spec in publish for pm in _parse_publish(spec)]
    if publish_all:
        have = {pm.key() for pm in maps}
        maps += [pm for pm in _exposed(image_cfg) if pm.key() not in have]
    nets = Networks(store)
    net = nets.default() if mode == DEFAULT_NETWORK else nets.get(mode)
    extra = [dns.parse_add_host(h, net.gateway) for h in add_hosts]
    request = {"mode": net.name, "dns": dns_servers, "add_hosts": extra, "hostname": hostname,
               "publish": [asdict(pm) for pm in maps]}
    resolv_path.write_text(dns.resolv_conf(dns_servers, host_network=False))
    hosts_path.touch()
    _allocate(store, nets, cid, request, str(hosts_path), name or "", os.getpid())
    return request


def _parse_publish(spec: str) -> list[PortMap]:
    from minirun.network.ports import parse_publish

    return parse_publish(spec)


def _exposed(image_cfg: dict[str, Any]) -> list[PortMap]:
    from minirun.network.ports import exposed

    return exposed(image_cfg)


def _allocate(store: Store, nets: Networks, cid: str, request: dict[str, Any], hosts_path: str,
              name: str, owner: int, *, network: str | None = None, interface: str = "eth0",
              default_route: bool = True, primary: bool = True, ip: str = "",
              aliases: list[str] | None = None) -> Endpoint:
    """Address (``ip`` if given) for ``cid`` on ``network`` (default: the one it was run
    with) under the lock, and with ``primary`` its host ports; its hosts file written."""
    from minirun.network.ports import reserve

    net = nets.get(network or request["mode"])
    maps = [PortMap(**p) for p in request.get("publish", [])] if primary else []
    socks: list[socket.socket] = []
    with nets.lock():
        state = State.load(_state_path(nets))
        _reconcile_locked(nets, state)
        old = state.find(cid, net.name)
        if old is not None:
            state.drop(old)
            _teardown(old)
        used = {e.ip for e in state.on(net.name)}
        if ip:
            ip = ipam.check_requested_ip(ip, net.subnet, net.gateway)
            if ip in used:
                holder = next(e for e in state.on(net.name) if e.ip == ip)
                raise NetworkError(f"Address already in use: {ip} on network {net.name} is "
                                   f"{holder.name or holder.container[:12]}'s")
        else:
            ip = ipam.allocate_ip(net.subnet, net.gateway, used)
        taken = state.used_ports()
        try:
            for pm in maps:
                for hip, hport, proto in taken:
                    if pm.host_port and hport == pm.host_port and proto == pm.proto and (
                            "0.0.0.0" in (hip, pm.host_ip) or hip == pm.host_ip):
                        raise PortInUse(f"cannot publish port {pm.host_port}: {hip}:{hport}/{proto} "
                                        "is already published by another container")
                socks.append(reserve(pm))  # fills in a random host port
        except BaseException:
            for s in socks:
                s.close()
            raise
        ep = Endpoint(container=cid, network=net.name, ip=ip, mac=ipam.mac_for(ip),
                      veth=veth_name(cid, interface), owner_pid=owner,
                      owner_start=ipam.start_time(owner),
                      hostname=request.get("hostname") or cid[:12], name=name,
                      hosts_path=hosts_path, add_hosts=list(request.get("add_hosts", [])),
                      ports=maps, interface=interface, default_route=default_route,
                      aliases=list(aliases or []))
        state.put(ep)
        state.save(_state_path(nets))
        _write_hosts(nets, state, cid)
    if primary:
        _close_reserved(cid)
        _reserved[cid] = socks
    return ep


def _close_reserved(cid: str) -> None:
    for s in _reserved.pop(cid, []):
        s.close()


def abort(store: Store, cid: str) -> None:
    """``create`` failed after ``prepare``: give everything back."""
    release(store, cid)


# -- /etc/hosts of the members ------------------------------------------------------------------


def _member_line(ep: Endpoint) -> str:
    names = [n for n in (ep.name, *ep.aliases, ep.container[:12]) if n]
    return f"{ep.ip}\t{' '.join(dict.fromkeys(names))}"


def _write_hosts(nets: Networks, state: State, cid: str) -> None:
    """The container's /etc/hosts: its own name at each of its addresses (eth0's first,
    so that one is what its name resolves to inside), its --add-host lines, then the
    other members of each user-defined network it is on."""
    eps = state.of(cid)
    if not eps:
        return
    first = eps[0]
    own_names = " ".join(dict.fromkeys(n for n in (first.hostname, first.name) if n))
    own = "\n".join(f"{ep.ip}\t{own_names}" for ep in eps)
    members: list[str] = []
    for ep in eps:
        net = nets.find(ep.network)
        if net is None or net.default:
            continue
        members += [_member_line(o) for o in state.on(net.name)
                    if o.container != cid and (o.name or o.aliases)]
    dns.rewrite_in_place(first.hosts_path, dns.hosts(own, list(dict.fromkeys(members)),
                                                     first.add_hosts))


def _refresh_members(nets: Networks, state: State, network: str) -> None:
    net = nets.find(network)
    if net is None or net.default:
        return
    for cid in dict.fromkeys(ep.container for ep in state.on(network)):
        _write_hosts(nets, state, cid)


# -- attach -----------------------------------------------------------------------------------


def hook(store: Store, cid: str) -> Any:
    """The runtime's ``prestart`` for this container (None without bridge networking)."""
    try:
        rec = json.loads((store.containers / cid / "container.json").read_bytes())
    except (OSError, ValueError):
        return None
    request = rec.get("network") or (rec.get("extra") or {}).get("network") or {}
    if not uses_bridge(request.get("mode", "none")):
        return None

    def prestart(pid: int) -> None:
        from minirun.network import netlink

        try:
            attach(store, cid, pid)
        finally:
            netlink.done()  # the pyroute2 worker (if prewarm() started one) is not needed now
        from minirun import faults

        faults.point("run.network-attached")

    return prestart


def attach(store: Store, cid: str, pid: int) -> list[Endpoint]:
    """Plug the container whose init is ``pid`` (namespaces made, not yet exec'd) into
    each network of its list; from here on that process owns the endpoints."""
    from minirun.network import netlink
    from minirun.network.ports import reserve, spawn_proxy

    nets = Networks(store)
    cdir = store.containers / cid
    rec = json.loads((cdir / "container.json").read_bytes())
    request = rec.get("network") or rec["extra"]["network"]
    name = rec.get("name", "")
    atts = attachments(store, cid, request)
    for att in atts:
        nets.get(att.network)  # a network removed since: fail before anything is plugged in
    want = {att.network: f"eth{i}" for i, att in enumerate(atts)}
    reuse: dict[str, Endpoint] = {}
    with nets.lock():
        state = State.load(_state_path(nets))
        stale = []
        for ep in state.of(cid):  # what create prepared is kept if it is still eth0 of the list
            if not ep.attached and want.get(ep.network) == ep.interface:
                reuse[ep.network] = ep
            else:  # a previous run's (restart), or a network disconnected before this start
                stale.append(ep)
                state.drop(ep)
        if stale:
            if any(ep.ports for ep in stale):
                _close_reserved(cid)
            for ep in stale:
                _teardown(ep)
            state.save(_state_path(nets))
            for network in {ep.network for ep in stale}:
                _refresh_members(nets, state, network)
    for i, att in enumerate(atts):
        if att.network not in reuse:
            reuse[att.network] = _allocate(
                store, nets, cid, request, str(cdir / "hosts"), name, pid, network=att.network,
                interface=f"eth{i}", default_route=i == 0, primary=i == 0, ip=att.ip,
                aliases=att.aliases)
    owner_start = ipam.start_time(pid)
    eps: list[Endpoint] = []
    with nets.lock():
        state = State.load(_state_path(nets))
        for att in atts:
            ep = state.find(cid, att.network) or reuse[att.network]
            ep.owner_pid, ep.owner_start, ep.name = pid, owner_start, name or ep.name
            ep.aliases = list(att.aliases)
            state.put(ep)
            eps.append(ep)
            net = nets.get(ep.network)
            if not netlink.link_exists(net.bridge):
                _bridge_up(nets, state, net)
        state.save(_state_path(nets))
        for ep in eps:
            _refresh_members(nets, state, ep.network)
        _write_hosts(nets, state, cid)
    mtu = default_route_mtu()
    for ep in eps:
        net = nets.get(ep.network)
        netlink.attach_veth(net.bridge, ep.veth, pid, ep.ip, net.prefixlen, net.gateway, ep.mac,
                            mtu, ep.interface, ep.default_route)
    socks = _reserved.pop(cid, None)
    first = eps[0] if eps else None
    if first is not None and first.ports:
        if socks is None:  # prepared by another process: bind again
            socks = [reserve(PortMap(**asdict(pm))) for pm in first.ports]
        try:
            proxy = spawn_proxy(socks, first.ports, first.ip, pid, owner_start, str(store.root))
        finally:
            for s in socks:
                s.close()
        first.proxy_pid, first.proxy_start = proxy, ipam.start_time(proxy)
    elif socks:
        for s in socks:
            s.close()
    with nets.lock():
        state = State.load(_state_path(nets))
        for ep in eps:
            ep.attached = True
            if state.find(cid, ep.network) is not None:
                state.put(ep)
        state.save(_state_path(nets))
    for ep in eps:
        events.network(store, nets.find(ep.network), ep.network, "connect", container=cid)
    return eps


def _bridge_up(nets: Networks, state: State, net: Network) -> None:
    """Create the bridge (first use, or after a reboot) and (re)install the rules; the
    bridge is recorded host-wide, so it is reclaimed if this store's root goes away."""
    from minirun.network import hostwide, nat, netlink

    netlink.ensure_bridge(net.bridge, net.gateway, net.prefixlen)
    hostwide.record(net.bridge, str(nets.store.root), net.name,
                    nat.table_name(str(nets.store.root)))  # fmt: skip
    _apply_firewall(nets, state)


def _apply_firewall(nets: Networks, state: State) -> None:
    """Rules for exactly the store's networks; IP forwarding on while any store on the
    host has networks, and back to what it was when the last of them goes."""
    from minirun.network import nat

    table = nat.table_name(str(nets.store.root))
    all_nets = nets.all()
    with nat.host_lock():
        if all_nets:
            nat.enable_ip_forward()
            kind = state.firewall or nat.backend()
            nat.apply(kind, table, all_nets)
            state.firewall = kind
        elif state.firewall:
            nat.apply(state.firewall, table, [])
            if not nat.others_installed(state.firewall, table):
                nat.restore_ip_forward()
            state.firewall = None


# -- release and reconcile ----------------------------------------------------------------------


def _teardown(ep: Endpoint) -> None:
    from minirun.network.ports import stop_proxy

    stop_proxy(ep.proxy_pid, ep.proxy_start)
    if _gone_with_namespace(ep.veth):
        return
    from minirun.network import netlink

    netlink.delete_link(ep.veth)


def _gone_with_namespace(veth: str, timeout: float = 0.2) -> bool:
    """The kernel deletes the pair when the container's network namespace goes, a few
    ms after its last process (cleanup_net runs from a workqueue): wait for that rather
    than load pyroute2 (~0.1 s) to delete what is about to vanish anyway."""
    import time

    path = f"/sys/class/net/{veth}"
    deadline = time.monotonic() + timeout
    while os.path.exists(path):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.002)
    return True


def release(store: Store, cid: str, only_dead: bool = False) -> None:
    """Give back everything ``cid`` holds on its networks. Idempotent; any process. With
    ``only_dead``, keep endpoints a running container owns (a restarted container's)."""
    _close_reserved(cid)
    nets = Networks(store)
    if not nets.root.is_dir():
        return
    with nets.lock():
        state = State.load(_state_path(nets))
        gone = [ep for ep in state.of(cid) if not (
            only_dead and ep.attached and ipam.alive(ep.owner_pid, ep.owner_start))]
        if not gone:
            return
        for ep in gone:
            state.drop(ep)
        try:
            for ep in gone:
                _teardown(ep)
        finally:
            state.save(_state_path(nets))
            for network in {ep.network for ep in gone}:
                _refresh_members(nets, state, network)
    for ep in gone:
        events.network(store, nets.find(ep.network), ep.network, "disconnect", container=cid)


def _reconcile_locked(nets: Networks, state: State) -> bool:
    dead = [ep for ep in state.endpoints.values() if not ipam.alive(ep.owner_pid, ep.owner_start)]
    for ep in dead:
        state.drop(ep)
        _teardown(ep)
    if dead:
        state.save(_state_path(nets))
        for network in {ep.network for ep in dead}:
            _refresh_members(nets, state, network)
    return bool(dead)


def reconcile(store: Store, full: bool = False) -> None:
    """Release what dead containers (or a killed minirun) left behind; with ``full``
    also check the firewall rules are there (a reboot or a flush drops them)."""
    from minirun.network import hostwide

    hostwide.reclaim()  # bridges and tables of other stores whose root is gone
    nets = Networks(store)
    if not nets.root.is_dir():
        return
    with nets.lock():
        state = State.load(_state_path(nets))
        _reconcile_locked(nets, state)
        if full:
            from minirun.network import nat

            table = nat.table_name(str(store.root))
            if nets.all():
                if not state.firewall or not nat.installed(state.firewall, table):
                    _apply_firewall(nets, state)
                    state.save(_state_path(nets))
            elif state.firewall:
                _apply_firewall(nets, state)
                state.save(_state_path(nets))


# -- what inspect, port and network inspect show ----------------------------------------------------


def live_endpoints(store: Store, cid: str) -> list[Endpoint]:
    """The container's live endpoints, eth0 first."""
    nets = Networks(store)
    if not nets.root.is_dir():
        return []
    state = State.load(_state_path(nets))
    return [ep for ep in state.of(cid) if ipam.alive(ep.owner_pid, ep.owner_start)]


def endpoint(store: Store, cid: str) -> Endpoint | None:
    """The container's live endpoint with its published ports (its first network's),
    else the one with its default route, if it has any."""
    eps = live_endpoints(store, cid)
    return next((e for e in eps if e.ports), None) or next(
        (e for e in eps if e.default_route), eps[0] if eps else None)


def settings(store: Store, cid: str, request: dict[str, Any], running: bool) -> dict[str, Any]:
    """Docker's NetworkSettings for ``inspect``: one entry per network the container is
    on; addresses only while running, as Docker. The top-level fields are the first
    network's (its default route's)."""
    mode = request.get("mode") or DEFAULT_NETWORK
    if not uses_bridge(mode):
        return {"Bridge": "", "IPAddress": "", "IPPrefixLen": 0, "Gateway": "", "MacAddress": "",
                "Ports": {}, "Networks": {mode: {
                    "IPAMConfig": None, "NetworkID": "", "IPAddress": "", "IPPrefixLen": 0,
                    "Gateway": "", "MacAddress": "", "Aliases": None, "DNSNames": None}}}
    nets = Networks(store)
    eps = {ep.network: ep for ep in live_endpoints(store, cid)} if running else {}
    networks: dict[str, Any] = {}
    atts = attachments(store, cid, request)
    for att in atts:
        net = nets.find(att.network)
        ep = eps.get(att.network)
        user = net is not None and not net.default
        names = list(dict.fromkeys(n for n in ((ep.name if ep else ""), *att.aliases, cid[:12]) if n))
        networks[att.network] = {
            "IPAMConfig": {"IPv4Address": att.ip} if att.ip else None,
            "NetworkID": net.id if net else "",
            "IPAddress": ep.ip if ep else "",
            "IPPrefixLen": net.prefixlen if (net and ep) else 0,
            "Gateway": net.gateway if (net and ep) else "",
            "MacAddress": ep.mac if ep else "",
            "Aliases": ([*att.aliases, cid[:12]] if ep else (att.aliases or None)) if user else None,
            "DNSNames": names if (user and ep) else None,
        }
    first = next((e for e in eps.values() if e.default_route), None) or next(iter(eps.values()), None)
    fnet = nets.find(first.network) if first else None
    ports: dict[str, Any] = {}
    for e in eps.values():
        for pm in e.ports:
            ports.setdefault(pm.key(), []).append({"HostIp": pm.host_ip, "HostPort": str(pm.host_port)})
    bnet = fnet or (nets.find(atts[0].network) if atts else None)
    return {
        "Bridge": bnet.bridge if bnet else "",
        "IPAddress": first.ip if first else "",
        "IPPrefixLen": fnet.prefixlen if fnet else 0,
        "Gateway": fnet.gateway if fnet else "",
        "MacAddress": first.mac if first else "",
        "Ports": ports,
        "Networks": networks,
    }


# -- network connect / disconnect --------------------------------------------------------------

_HOST_CONFLICT = "container cannot be disconnected from host network or connected to host network"
_SHARED_CONFLICT = ("container sharing network namespace with another container or host cannot "
                    "be connected to any other network")
_NONE_CONFLICT = ("container cannot be connected to multiple networks with one of the networks "
                  "in private (none) mode")


def _container(store: Store, ref: str) -> Any:
    from minirun.container.records import Containers

    return Containers(store).get(ref)


def _next_interface(eps: list[Endpoint]) -> str:
    used = {ep.interface for ep in eps}
    return next(f"eth{n}" for n in range(len(used) + 1) if f"eth{n}" not in used)


def connect(store: Store, network: str, container: str, ip: str | None = None,
            aliases: list[str] | None = None) -> None:
    """``network connect``: a running container gets an interface on ``network`` now (the
    next free ethN, an address from its subnet or ``ip``, no default route unless it has
    none), its members learn its names; a stopped one has it added to its list, for its
    next start."""
    rec = _container(store, container)
    mode = (rec.network or {}).get("mode") or "none"
    if network == "host":
        if mode == "host":
            raise NetworkError(f"endpoint with name {rec.name} already exists in network host")
        raise NetworkError(_HOST_CONFLICT)
    if mode == "host":
        raise NetworkError(_SHARED_CONFLICT)
    if network == "none" or mode == "none":
        if network == mode:
            raise NetworkError(f"endpoint with name {rec.name} already exists in network none")
        raise NetworkError(_NONE_CONFLICT)
    reconcile(store)
    nets = Networks(store)
    net = nets.default() if network == DEFAULT_NETWORK else nets.lookup(network)  # always there
    aliases = [dns.check_alias(a) for a in dict.fromkeys(aliases or [])]
    if net.default and ip:
        raise UsageError("user specified IP address is supported on user defined networks only")
    if net.default and aliases:
        raise UsageError("network-scoped alias is supported only for containers in user defined networks")
    if ip:
        ip = ipam.check_requested_ip(ip, net.subnet, net.gateway)
    att = Attachment(network=net.name, ip=ip or "", aliases=aliases)
    with nets.lock():
        atts = attachments(store, rec.id, rec.network or {})
        known = any(a.network == net.name for a in atts)
        running = rec.alive()
        if known and not running:
            return  # Docker: connecting a stopped container again changes nothing
        state = State.load(_state_path(nets))
        live = [ep for ep in state.of(rec.id) if ipam.alive(ep.owner_pid, ep.owner_start)]
        if known or any(ep.network == net.name for ep in live):
            raise NetworkError(f"endpoint with name {rec.name} already exists in network {net.name}")
        if running and ip and any(e.ip == ip for e in state.on(net.name)):
            raise NetworkError(f"Address already in use: {ip} on network {net.name}")
        _save_attachments(store, rec.id, [*atts, att])
    if not running:
        return
    try:
        _plug(store, nets, rec, net, att, live)
    except BaseException:
        with nets.lock():
            _save_attachments(store, rec.id, [a for a in attachments(store, rec.id, rec.network)
                                              if a.network != net.name])
        _unplug(store, nets, rec.id, net.name, rec.pid)
        raise


def _plug(store: Store, nets: Networks, rec: Any, net: Network, att: Attachment,
          live: list[Endpoint]) -> None:
    """A running container's new endpoint: allocated, then its veth, then marked."""
    from minirun.network import netlink

    pid = rec.pid
    interface = _next_interface(live)
    gateway_route = not any(ep.default_route for ep in live)
    ep = _allocate(store, nets, rec.id, rec.network, str(store.containers / rec.id / "hosts"),
                   rec.name, pid, network=net.name, interface=interface,
                   default_route=gateway_route, primary=False, ip=att.ip, aliases=att.aliases)
    with nets.lock():
        state = State.load(_state_path(nets))
        state.put(ep)
        if not netlink.link_exists(net.bridge):
            _bridge_up(nets, state, net)
        state.save(_state_path(nets))
    netlink.attach_veth(net.bridge, ep.veth, pid, ep.ip, net.prefixlen, net.gateway, ep.mac,
                        default_route_mtu(), ep.interface, ep.default_route)
    with nets.lock():
        state = State.load(_state_path(nets))
        ep.attached = True
        state.put(ep)
        state.save(_state_path(nets))
        _write_hosts(nets, state, rec.id)
        _refresh_members(nets, state, net.name)
    events.network(store, net, net.name, "connect", container=rec.id)


def _unplug(store: Store, nets: Networks, cid: str, network: str, pid: int) -> Endpoint | None:
    """Remove a running container's endpoint on ``network`` now: its veth (the container's
    end goes with it), address, proxy; the default route moves to the next interface."""
    from minirun.network import netlink
    from minirun.network.ports import stop_proxy

    with nets.lock():
        state = State.load(_state_path(nets))
        ep = state.find(cid, network)
        if ep is None:
            return None
        state.drop(ep)
        try:
            stop_proxy(ep.proxy_pid, ep.proxy_start)
            netlink.delete_link(ep.veth)
            rest = [e for e in state.of(cid) if e.attached]
            if ep.default_route and rest and ipam.alive(pid, ep.owner_start):
                nxt = rest[0]
                nnet = nets.find(nxt.network)
                if nnet is not None:
                    netlink.set_default_route(pid, nnet.gateway)
                    nxt.default_route = True
                    state.put(nxt)
        finally:
            state.save(_state_path(nets))
            _write_hosts(nets, state, cid)
            _refresh_members(nets, state, network)
    events.network(store, nets.find(network), network, "disconnect", container=cid)
    return ep


def disconnect(store: Store, network: str, container: str, force: bool = False) -> None:
    """``network disconnect``: a running container loses its interface on ``network`` now
    (address, rules and names given back); a stopped one has it removed from its list.
    ``force``: also when the network itself no longer exists."""
    rec = _container(store, container)
    mode = (rec.network or {}).get("mode") or "none"
    if mode == "host" and network == "host":
        raise NetworkError(_HOST_CONFLICT)
    if mode == "none" and network == "none":
        raise NetworkError("a container run with --network none cannot be disconnected from "
                           "it (minirun); remove the container and run it on a network instead")
    reconcile(store)
    nets = Networks(store)
    running = rec.alive()
    try:
        name = nets.lookup(network).name
    except NetworkError:
        if running and not force:
            raise
        name = network
    with nets.lock():
        atts = attachments(store, rec.id, rec.network or {})
        if not running or nets.find(name) is None:
            if not any(a.network == name for a in atts):
                raise NetworkError(f"container {rec.id} is not connected to the network {name}")
            _save_attachments(store, rec.id, [a for a in atts if a.network != name])
            state = State.load(_state_path(nets))
            if state.find(rec.id, name) is None:
                return
        else:
            state = State.load(_state_path(nets))
            ep = state.find(rec.id, name)
            if ep is None or not ipam.alive(ep.owner_pid, ep.owner_start):
                if not any(a.network == name for a in atts):
                    raise NetworkError(f"container {rec.id} is not connected to network {name}")
            _save_attachments(store, rec.id, [a for a in atts if a.network != name])
    _unplug(store, nets, rec.id, name, rec.pid)


# -- network create / rm / prune ---------------------------------------------------------------


def create_network(store: Store, name: str, subnet: str | None = None, bridge: str | None = None,
                   gateway: str | None = None) -> Network:
    if name == DEFAULT_NETWORK:
        raise NetworkError(f"network with name {name} already exists (it is the default network)")
    nets = Networks(store)
    with nets.lock():
        state = State.load(_state_path(nets))
        _reconcile_locked(nets, state)
        net = nets.new(name, subnet=subnet, bridge=bridge, gateway=gateway)
        nets.save(net)
        try:
            _bridge_up(nets, state, net)
        except BaseException:
            nets.delete(name)
            with contextlib.suppress(Exception):
                _remove_bridge(net)
                _apply_firewall(nets, state)
            state.save(_state_path(nets))
            raise
        state.save(_state_path(nets))
    events.network(store, net, net.name, "create")
    return net


def _remove_bridge(net: Network) -> None:
    from minirun.network import hostwide, netlink

    netlink.delete_link(net.bridge)
    hostwide.forget(net.bridge)


def remove_networks(store: Store, refs: list[str], prune: bool = False) -> list[str]:
    """Remove networks (by name or ID); with ``prune`` every network without containers.
    Returns the names removed. A network with live containers is an error."""
    nets = Networks(store)
    if not nets.root.is_dir():
        if refs:
            raise NetworkError(f"network {refs[0]} not found")
        return []
    removed = []
    with nets.lock():
        state = State.load(_state_path(nets))
        _reconcile_locked(nets, state)
        targets = nets.all() if prune else [nets.lookup(r) for r in refs]
        try:
            for net in targets:
                users = state.on(net.name)
                if users:
                    if prune:
                        continue
                    names = ", ".join(e.name or e.container[:12] for e in users)
                    raise NetworkError(f"network {net.name} has active endpoints ({names}); "
                                       "stop or remove those containers first")
                _remove_bridge(net)
                nets.delete(net.name)
                removed.append(net.name)
                events.network(store, net, net.name, "destroy")
        finally:
            if removed or prune:
                _apply_firewall(nets, state)
            state.save(_state_path(nets))
    return removed


def network_inspect(store: Store, net: Network) -> dict[str, Any]:
    from minirun.network.config import BRIDGE_OPT

    state = State.load(_state_path(Networks(store)))
    import datetime as dt

    created = dt.datetime.fromtimestamp(net.created, dt.UTC).isoformat().replace("+00:00", "Z")
    return {
        "Name": net.name, "Id": net.id, "Created": created, "Scope": "local", "Driver": "bridge",
        "EnableIPv6": False,
        "IPAM": {"Driver": "default", "Config": [{"Subnet": net.subnet, "Gateway": net.gateway}]},
        "Internal": False,
        "Containers": {
            e.container: {"Name": e.name, "MacAddress": e.mac,
                          "IPv4Address": f"{e.ip}/{net.prefixlen}", "IPv6Address": ""}
            for e in state.on(net.name) if ipam.alive(e.owner_pid, e.owner_start)},
        "Options": {BRIDGE_OPT: net.bridge},
        "Labels": {},
    }


def ports_text(store: Store, cid: str) -> str:
    """``ps``'s PORTS column: ``127.0.0.1:8080->80/tcp, 0.0.0.0:5353->53/udp``."""
    ep = endpoint(store, cid)
    if ep is None:
        return ""
    return ", ".join(f"{pm.host_ip}:{pm.host_port}->{pm.key()}" for pm in ep.ports)
