"""Links and addresses over netlink, with pyroute2 — imported here only, inside the
functions (it costs ~0.1 s; ``--network none``/``host`` never load it).

Per container: one veth pair created in a single RTM_NEWLINK whose peer is born directly
in the container's network namespace as ``eth0`` (``net_ns_pid``), so there is never a
moment where the container end sits in the host's namespace under a temporary name. The
host end joins the bridge in the same message. Then eth0 gets its address, is set up and
gets a default route via the bridge, through a netlink socket opened *in* the
container's namespace: the calling thread setns()es there, opens the socket and returns
at once (a socket stays in the namespace it was created in). pyroute2's own netns
support forks a helper process for that, which costs more than the whole set-up.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import threading
from typing import Any

from minirun.errors import NetworkError

_imported = threading.Event()


def _iproute() -> Any:
    from pyroute2.iproute.linux import IPRoute

    return IPRoute


def prewarm() -> threading.Thread:
    """Import pyroute2 in a thread, so its ~0.1 s overlaps the container's set-up."""

    def load() -> None:
        with contextlib.suppress(Exception):
            _iproute()
        _imported.set()

    t = threading.Thread(target=load, name="pyroute2-import", daemon=True)
    t.start()
    return t


def _code(e: Exception) -> int:
    return int(getattr(e, "code", 0) or getattr(e, "errno", 0) or 0)


def link_exists(name: str) -> bool:
    return os.path.exists(f"/sys/class/net/{name}")


def ensure_bridge(name: str, gateway: str, prefixlen: int) -> bool:
    """The bridge with the gateway address, up; True if this call created it."""
    IPRoute = _iproute()
    created = False
    with IPRoute() as ipr:
        idx = ipr.link_lookup(ifname=name)
        if not idx:
            try:
                ipr.link("add", ifname=name, kind="bridge")
                created = True
            except Exception as e:
                if _code(e) != errno.EEXIST:  # another minirun made it meanwhile
                    raise NetworkError(f"cannot create bridge {name}: {e}") from None
            idx = ipr.link_lookup(ifname=name)
        if not idx:
            raise NetworkError(f"bridge {name} vanished while being set up")
        try:
            ipr.addr("add", index=idx[0], address=gateway, prefixlen=prefixlen)
        except Exception as e:
            if _code(e) != errno.EEXIST:
                raise NetworkError(f"cannot give bridge {name} address {gateway}/{prefixlen}: {e}") from None
        ipr.link("set", index=idx[0], state="up")
    return created


def delete_link(name: str) -> None:
    """Delete an interface if it exists (a veth's peer goes with it)."""
    if not link_exists(name):
        return
    IPRoute = _iproute()
    with IPRoute() as ipr:
        try:
            ipr.link("del", ifname=name)
        except Exception as e:
            if _code(e) not in (errno.ENODEV, errno.ENOENT):
                raise NetworkError(f"cannot delete interface {name}: {e}") from None


def _socket_in_netns(pid: int) -> socket.socket:
    from minirun.runtime import linux

    own = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    target = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        linux.setns(target, linux.CLONE_NEWNET)
        try:
            # pyroute2 (asyncio) wants a datagram-type socket; netlink accepts both types
            return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, 0)
        finally:
            linux.setns(own, linux.CLONE_NEWNET)
    finally:
        os.close(target)
        os.close(own)


def attach_veth(bridge: str, veth: str, pid: int, ip: str, prefixlen: int, gateway: str,
                mac: str, mtu: int) -> None:
    """veth pair: ``veth`` on ``bridge`` (host), ``eth0`` in /proc/PID/ns/net with the
    address, up, default route via ``gateway``."""
    IPRoute = _iproute()
    with IPRoute() as ipr:
        br = ipr.link_lookup(ifname=bridge)
        if not br:
            raise NetworkError(f"bridge {bridge} does not exist")
        try:
            ipr.link("add", ifname=veth, kind="veth", mtu=mtu, master=br[0],
                     peer={"ifname": "eth0", "net_ns_pid": pid, "address": mac, "mtu": mtu})
        except Exception as e:
            raise NetworkError(f"cannot create veth pair {veth}: {e}") from None
        ipr.link("set", ifname=veth, state="up")
    with IPRoute(use_socket=_socket_in_netns(pid)) as c:
        idx = c.link_lookup(ifname="eth0")
        if not idx:
            raise NetworkError("eth0 did not appear in the container's network namespace")
        c.addr("add", index=idx[0], address=ip, prefixlen=prefixlen)
        c.link("set", index=idx[0], state="up")
        c.route("add", dst="0.0.0.0/0", gateway=gateway)
