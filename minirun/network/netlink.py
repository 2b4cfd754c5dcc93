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

pyroute2's import is ~0.1 s of CPU. A thread would only overlap it with our waits (the
GIL), so ``prewarm()`` forks a worker process instead: it imports pyroute2 on the other
core while this process creates the container, then makes the netlink calls sent to it
(``ensure_bridge``, ``attach_veth``) and is reaped by ``done()``. Without a worker every
call runs here.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable
from typing import Any

from minirun.errors import NetworkError

_worker: _Worker | None = None


def _iproute() -> Any:
    """pyroute2's IPRoute class, without pyroute2/__init__.py: that file imports every
    part of the library (NDB, IPDB, conntrack, ipset, devlink, wifi...), 150 ms here,
    of which IPRoute needs 95. The package is registered unexecuted, so importing its
    iproute module loads only what that module itself imports."""
    import sys

    if "pyroute2" not in sys.modules:
        import importlib.util

        spec = importlib.util.find_spec("pyroute2")
        if spec is not None:
            sys.modules["pyroute2"] = importlib.util.module_from_spec(spec)
    from pyroute2.iproute.linux import IPRoute

    return IPRoute


class _Worker:
    """A forked child that imports pyroute2 and runs the calls sent to it: one JSON line
    each way per call. It exits at EOF on its request pipe (or with its parent)."""

    def __init__(self) -> None:
        self.used = False
        req_r, self.req_w = os.pipe2(os.O_CLOEXEC)
        self.rep_r, rep_w = os.pipe2(os.O_CLOEXEC)
        self.pid = os.fork()
        if self.pid == 0:  # pragma: no cover - the worker
            try:
                os.close(self.req_w)
                os.close(self.rep_r)
                _serve(req_r, rep_w, os.getppid())
            finally:
                os._exit(0)
        os.close(req_r)
        os.close(rep_w)
        self.replies = os.fdopen(self.rep_r, "rb")

    def call(self, name: str, *args: Any) -> Any:
        import json

        self.used = True
        os.write(self.req_w, json.dumps([name, list(args)]).encode() + b"\n")
        line = self.replies.readline()
        if not line:
            raise NetworkError(f"netlink worker died during {name}")
        ok, value = json.loads(line)
        if not ok:
            raise NetworkError(value)
        return value

    def close(self) -> None:
        os.close(self.req_w)
        self.replies.close()
        if not self.used:  # still importing, maybe: no need to wait for that
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, 9)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)


def _serve(req_r: int, rep_w: int, parent: int) -> None:  # pragma: no cover - the worker
    import json

    from minirun.runtime import linux

    linux.prctl(linux.PR_SET_PDEATHSIG, 9)
    if os.getppid() != parent:
        return
    # nothing of the parent's: no lock, pipe or socket it holds may outlive its use there
    for fd in [int(n) for n in os.listdir("/proc/self/fd")]:
        if fd > 2 and fd not in (req_r, rep_w):
            with contextlib.suppress(OSError):
                os.close(fd)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)  # stderr stays: a traceback of a bug is worth seeing
    os.close(null)
    with contextlib.suppress(Exception):
        _iproute()
    calls: dict[str, Callable[..., Any]] = {"ensure_bridge": _ensure_bridge,
                                            "attach_veth": _attach_veth,
                                            "set_default_route": _set_default_route}  # fmt: skip
    with os.fdopen(req_r, "rb") as requests:
        for line in requests:
            name, args = json.loads(line)
            try:
                reply = [True, calls[name](*args)]
            except NetworkError as e:
                reply = [False, str(e)]
            except Exception as e:
                reply = [False, f"{name}: {type(e).__name__}: {e}"]
            os.write(rep_w, json.dumps(reply).encode() + b"\n")


def prewarm() -> None:
    """Start the worker (call while this process has no other threads: it forks)."""
    global _worker
    if _worker is None:
        _worker = _Worker()


def done() -> None:
    """The netlink work of this run is over: let the worker go."""
    global _worker
    if _worker is not None:
        w, _worker = _worker, None
        w.close()


def _code(e: Exception) -> int:
    return int(getattr(e, "code", 0) or getattr(e, "errno", 0) or 0)


def link_exists(name: str) -> bool:
    return os.path.exists(f"/sys/class/net/{name}")


def ensure_bridge(name: str, gateway: str, prefixlen: int) -> bool:
    """The bridge with the gateway address, up; True if this call created it."""
    if _worker is not None:
        return bool(_worker.call("ensure_bridge", name, gateway, prefixlen))
    return _ensure_bridge(name, gateway, prefixlen)


def _ensure_bridge(name: str, gateway: str, prefixlen: int) -> bool:
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


def _socket_in_netns(pid: int) -> Any:
    import socket

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
                mac: str, mtu: int, ifname: str = "eth0", default_route: bool = True) -> None:
    """veth pair: ``veth`` on ``bridge`` (host), ``ifname`` in /proc/PID/ns/net with the
    address, up, and (``default_route``) the default route via ``gateway``."""
    if _worker is not None:
        _worker.call("attach_veth", bridge, veth, pid, ip, prefixlen, gateway, mac, mtu, ifname,
                     default_route)
        return
    _attach_veth(bridge, veth, pid, ip, prefixlen, gateway, mac, mtu, ifname, default_route)


def set_default_route(pid: int, gateway: str) -> None:
    """The default route of /proc/PID/ns/net via ``gateway`` (after the interface that had
    it was disconnected)."""
    if _worker is not None:
        _worker.call("set_default_route", pid, gateway)
        return
    _set_default_route(pid, gateway)


def _set_default_route(pid: int, gateway: str) -> None:
    IPRoute = _iproute()
    with IPRoute(use_socket=_socket_in_netns(pid)) as c:
        try:
            c.route("replace", dst="0.0.0.0/0", gateway=gateway)
        except Exception as e:
            raise NetworkError(f"cannot set the container's default route via {gateway}: {e}") from None


def _attach_veth(bridge: str, veth: str, pid: int, ip: str, prefixlen: int, gateway: str,
                 mac: str, mtu: int, ifname: str = "eth0",
                 default_route: bool = True) -> None:  # fmt: skip
    IPRoute = _iproute()
    with IPRoute() as ipr:
        br = ipr.link_lookup(ifname=bridge)
        if not br:
            raise NetworkError(f"bridge {bridge} does not exist")
        try:
            ipr.link("add", ifname=veth, kind="veth", mtu=mtu, master=br[0],
                     peer={"ifname": ifname, "net_ns_pid": pid, "address": mac, "mtu": mtu})
        except Exception as e:
            raise NetworkError(f"cannot create veth pair {veth}: {e}") from None
        ipr.link("set", ifname=veth, state="up")
    with IPRoute(use_socket=_socket_in_netns(pid)) as c:
        idx = c.link_lookup(ifname=ifname)
        if not idx:
            raise NetworkError(f"{ifname} did not appear in the container's network namespace")
        c.addr("add", index=idx[0], address=ip, prefixlen=prefixlen)
        c.link("set", index=idx[0], state="up")
        if default_route:
            c.route("add", dst="0.0.0.0/0", gateway=gateway)
