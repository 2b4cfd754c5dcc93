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

All state lives on disk (``ipam.State`` under ``Networks.lock``); the only in-memory
thing is an optimisation: the sockets bound by ``prepare`` are handed to the proxy by
``attach`` when both run in the same process (else ``attach`` binds them again).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from dataclasses import asdict
from pathlib import Path
from typing import Any

from minirun.errors import NetworkError, PortInUse, UsageError
from minirun.image.store import Store
from minirun.network import dns, ipam, local
from minirun.network.config import DEFAULT_NETWORK, Network, Networks, default_route_mtu
from minirun.network.ipam import Endpoint, PortMap, State
from minirun.network.local import uses_bridge

_reserved: dict[str, list[socket.socket]] = {}  # container ID -> bound host ports


def _state_path(nets: Networks) -> Path:
    return nets.root / "state.json"


def veth_name(cid: str) -> str:
    return "mrv" + cid[:12]  # 15 characters: IFNAMSIZ - 1


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
              name: str, owner: int) -> Endpoint:
    """Address + host ports for ``cid`` under the lock; its hosts file written."""
    from minirun.network.ports import reserve

    net = nets.get(request["mode"])
    maps = [PortMap(**p) for p in request.get("publish", [])]
    socks: list[socket.socket] = []
    with nets.lock():
        state = State.load(_state_path(nets))
        _reconcile_locked(nets, state)
        old = state.endpoints.pop(cid, None)
        if old is not None:
            _teardown(old)
        used = {e.ip for e in state.on(net.name)}
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
                      veth=veth_name(cid), owner_pid=owner, owner_start=ipam.start_time(owner),
                      hostname=request.get("hostname") or cid[:12], name=name,
                      hosts_path=hosts_path, add_hosts=list(request.get("add_hosts", [])),
                      ports=maps)
        state.endpoints[cid] = ep
        state.save(_state_path(nets))
        _write_hosts(state, net, ep)
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
    names = [n for n in (ep.name, ep.container[:12]) if n]
    return f"{ep.ip}\t{' '.join(dict.fromkeys(names))}"


def _write_hosts(state: State, net: Network, ep: Endpoint) -> None:
    own_names = [ep.hostname] + ([ep.name] if ep.name and ep.name != ep.hostname else [])
    members = [] if net.default else [_member_line(o) for o in state.on(net.name)
                                      if o.container != ep.container and o.name]
    dns.rewrite_in_place(ep.hosts_path, dns.hosts(f"{ep.ip}\t{' '.join(own_names)}", members,
                                                  ep.add_hosts))


def _refresh_members(nets: Networks, state: State, network: str) -> None:
    net = nets.find(network)
    if net is None or net.default:
        return
    for ep in state.on(network):
        _write_hosts(state, net, ep)


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


def attach(store: Store, cid: str, pid: int) -> Endpoint:
    """Plug the container whose init is ``pid`` (namespaces made, not yet exec'd) into its
    network; from here on that process owns the endpoint."""
    from minirun.network import netlink
    from minirun.network.ports import reserve, spawn_proxy

    nets = Networks(store)
    cdir = store.containers / cid
    rec = json.loads((cdir / "container.json").read_bytes())
    request = rec.get("network") or rec["extra"]["network"]
    with nets.lock():
        state = State.load(_state_path(nets))
        ep = state.endpoints.get(cid)
    if ep is None or ep.attached:  # released meanwhile, or a restart: allocate again
        ep = _allocate(store, nets, cid, request, str(cdir / "hosts"), rec.get("name", ""), pid)
    net = nets.get(ep.network)
    owner_start = ipam.start_time(pid)
    with nets.lock():
        state = State.load(_state_path(nets))
        ep = state.endpoints.get(cid) or ep
        ep.owner_pid, ep.owner_start, ep.name = pid, owner_start, rec.get("name", "") or ep.name
        state.endpoints[cid] = ep
        if not netlink.link_exists(net.bridge):
            _bridge_up(nets, state, net)
        state.save(_state_path(nets))
        _refresh_members(nets, state, net.name)
    netlink.attach_veth(net.bridge, ep.veth, pid, ep.ip, net.prefixlen, net.gateway, ep.mac,
                        default_route_mtu())
    socks = _reserved.pop(cid, None)
    if ep.ports:
        if socks is None:  # prepared by another process: bind again
            socks = [reserve(PortMap(**asdict(pm))) for pm in ep.ports]
        try:
            proxy = spawn_proxy(socks, ep.ports, ep.ip, pid, owner_start, str(store.root))
        finally:
            for s in socks:
                s.close()
        ep.proxy_pid, ep.proxy_start = proxy, ipam.start_time(proxy)
    ep.attached = True
    with nets.lock():
        state = State.load(_state_path(nets))
        if cid in state.endpoints:
            state.endpoints[cid] = ep
            state.save(_state_path(nets))
    return ep


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
    """Give back everything ``cid`` holds on its network. Idempotent; any process. With
    ``only_dead``, keep an endpoint a running container owns (a restarted container's)."""
    _close_reserved(cid)
    nets = Networks(store)
    if not nets.root.is_dir():
        return
    with nets.lock():
        state = State.load(_state_path(nets))
        ep = state.endpoints.get(cid)
        if ep is None or (only_dead and ep.attached and ipam.alive(ep.owner_pid, ep.owner_start)):
            return
        del state.endpoints[cid]
        try:
            _teardown(ep)
        finally:
            state.save(_state_path(nets))
            _refresh_members(nets, state, ep.network)


def _reconcile_locked(nets: Networks, state: State) -> bool:
    dead = [ep for ep in state.endpoints.values() if not ipam.alive(ep.owner_pid, ep.owner_start)]
    for ep in dead:
        del state.endpoints[ep.container]
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


def endpoint(store: Store, cid: str) -> Endpoint | None:
    """The live endpoint of a container, if it has one."""
    nets = Networks(store)
    if not nets.root.is_dir():
        return None
    ep = State.load(_state_path(nets)).endpoints.get(cid)
    if ep is None or not ipam.alive(ep.owner_pid, ep.owner_start):
        return None
    return ep


def settings(store: Store, cid: str, request: dict[str, Any], running: bool) -> dict[str, Any]:
    """Docker's NetworkSettings for ``inspect``: addresses only while running, as Docker."""
    mode = request.get("mode") or DEFAULT_NETWORK
    ep = endpoint(store, cid) if running and uses_bridge(mode) else None
    net = Networks(store).find(mode) if uses_bridge(mode) else None
    ports: dict[str, Any] = {}
    if ep is not None:
        for pm in ep.ports:
            ports.setdefault(pm.key(), []).append({"HostIp": pm.host_ip, "HostPort": str(pm.host_port)})
    ip = ep.ip if ep else ""
    gw = net.gateway if (net and ep) else ""
    mac = ep.mac if ep else ""
    plen = net.prefixlen if (net and ep) else 0
    return {
        "Bridge": net.bridge if net else "",
        "IPAddress": ip, "IPPrefixLen": plen, "Gateway": gw, "MacAddress": mac,
        "Ports": ports,
        "Networks": {mode: {
            "NetworkID": net.id if net else "", "IPAddress": ip, "IPPrefixLen": plen,
            "Gateway": gw, "MacAddress": mac,
            "Aliases": [ep.name, cid[:12]] if (ep and not (net and net.default)) else None,
        }},
    }


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
