"""Published ports: ``-p``/``-P`` parsing, host port reservation, the proxy process.

Mechanism: a userland proxy, as docker-proxy, not DNAT. Why:

* The host port is really bound — by minirun in ``create``, before the container
  starts — so "port already in use" is an honest, race-free error, and nothing else on
  the host can take the port while the container has it.
* 127.0.0.1:PORT works without ``route_localnet`` (which DNAT to a bridge needs for
  loopback traffic, and which exposes the host's loopback services to the bridge:
  CVE-2020-8558) and without hairpin NAT rules.
* Cleanup cannot be forgotten: no kernel state is left behind. The proxy watches the
  container's init through a pidfd and exits the moment it dies — even when minirun
  was SIGKILLed — and reconcile kills a proxy whose container is gone.

The cost: the container sees connections coming from its gateway, not from the client
(Docker without ``userland-proxy=false`` has the same), and one small process per
container with ports (stdlib-only, ``python -I -S``, started in the background: it is not
on the start-up path; its listening sockets already queue connections).
"""

from __future__ import annotations

import errno
import ipaddress
import os
import re
import signal
import socket
import sys
from collections.abc import Sequence
from typing import Any

from minirun.errors import PortInUse, UsageError
from minirun.network.ipam import PortMap

PROXY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "proxy.py")


# ASCII digits only (str.isdigit() is also true for '²', '①', which int() refuses); leading
# zeros are allowed, as Go's ParseUint does, but int() only ever sees at most 5 digits.
_PORT_RE = re.compile(r"0*([0-9]{1,5})")


def _port(text: str, what: str, spec: str) -> int:
    m = _PORT_RE.fullmatch(text)
    if m is None or not 0 < int(m.group(1)) < 65536:
        raise UsageError(f"invalid {what} port {text!r} in -p {spec!r} (1-65535)")
    return int(m.group(1))


def parse_publish(spec: str) -> list[PortMap]:
    """``[IP:][HOSTPORT:]CTRPORT[/tcp|udp]``; ranges as ``8000-8001:80-81``."""
    rest, _, proto = spec.partition("/")
    proto = proto or "tcp"
    if proto not in ("tcp", "udp"):
        raise UsageError(f"invalid protocol {proto!r} in -p {spec!r} (tcp or udp)")
    if rest.startswith("["):
        raise UsageError(f"-p {spec!r}: IPv6 host addresses are not supported")
    parts = rest.split(":")
    if len(parts) > 3 or not parts[-1]:
        raise UsageError(f"invalid -p {spec!r} (want [IP:][HOSTPORT:]CONTAINERPORT[/PROTO])")
    host_ip = parts[0] if len(parts) == 3 else "0.0.0.0"
    host = parts[-2] if len(parts) >= 2 else ""
    if len(parts) == 3 and not host_ip:
        host_ip = "0.0.0.0"
    try:
        ipaddress.IPv4Address(host_ip)
    except ValueError:
        raise UsageError(f"invalid host IP {host_ip!r} in -p {spec!r}") from None

    def span(text: str, what: str) -> list[int]:
        lo, _, hi = text.partition("-")
        a = _port(lo, what, spec)
        b = _port(hi, what, spec) if hi else a
        if b < a:
            raise UsageError(f"invalid {what} port range {text!r} in -p {spec!r}")
        return list(range(a, b + 1))

    ctr = span(parts[-1], "container")
    hosts = span(host, "host") if host else [0] * len(ctr)
    if len(hosts) != len(ctr):
        raise UsageError(f"-p {spec!r}: the host and container port ranges differ in size")
    return [PortMap(container_port=c, proto=proto, host_ip=host_ip, host_port=h)
            for h, c in zip(hosts, ctr, strict=True)]


def exposed(image_cfg: dict[str, Any]) -> list[PortMap]:
    """``-P``: every ExposedPorts entry of the image ("80/tcp", "53/udp", "8080"); an
    entry that names no port number (1..65535) is skipped. The image config's field types
    are checked first (ManifestError names a bad one)."""
    from minirun.image.oci import check_run_config

    out = []
    for key in sorted(check_run_config(image_cfg).get("ExposedPorts") or {}):
        port, _, proto = key.partition("/")
        # ASCII digits only: str.isdigit() is also true for '²', which int() refuses
        if port.isascii() and port.isdigit() and len(port) <= 5 and 0 < int(port) < 65536:
            out.append(PortMap(container_port=int(port), proto=proto or "tcp"))
    return out


def reserve(pm: PortMap) -> socket.socket:
    """Bind (and for TCP listen on) the host side; fills in a random host port if 0.
    The socket is what the proxy will serve: the port is ours from here on."""
    kind = socket.SOCK_STREAM if pm.proto == "tcp" else socket.SOCK_DGRAM
    s = socket.socket(socket.AF_INET, kind)
    try:
        if pm.proto == "tcp":
            # TIME_WAIT from a previous run's connections must not block a re-run
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((pm.host_ip, pm.host_port))
        if pm.proto == "tcp":
            s.listen(128)
    except OSError as e:
        s.close()
        where = f"{pm.host_ip}:{pm.host_port}/{pm.proto}"
        if e.errno == errno.EADDRINUSE:
            raise PortInUse(f"cannot publish port {pm.host_port}: {where} is already in use on "
                            "the host; choose another host port (-p HOSTPORT:"
                            f"{pm.container_port})") from None
        if e.errno == errno.EADDRNOTAVAIL:
            raise PortInUse(f"cannot publish on {pm.host_ip}: it is not an address of this host") from None
        raise PortInUse(f"cannot publish port {where}: {e.strerror}") from None
    pm.host_port = s.getsockname()[1]
    return s


def spawn_proxy(socks: Sequence[socket.socket], maps: Sequence[PortMap], target_ip: str,
                watch_pid: int, watch_start: str, store_root: str) -> int:
    """Start the proxy (see proxy.py) serving ``socks`` for the container whose init is
    ``watch_pid``; returns its pid. The listening sockets are its only inherited fds."""
    args = [sys.executable, "-I", "-S", "-B", PROXY, "--store", store_root,
            "--watch", f"{watch_pid}:{watch_start}"]
    fds = []
    for s, pm in zip(socks, maps, strict=True):
        fd = s.fileno()
        os.set_inheritable(fd, True)
        fds.append(fd)
        args.append(f"{fd}:{pm.proto}:{target_ip}:{pm.container_port}")
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    try:
        pid = os.posix_spawn(
            sys.executable, args, {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
            file_actions=[(os.POSIX_SPAWN_DUP2, null, 0), (os.POSIX_SPAWN_DUP2, null, 1),
                          (os.POSIX_SPAWN_DUP2, null, 2)],
            setsid=True, setsigmask=(),
            setsigdef=(signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGPIPE))
    finally:
        os.close(null)
        for fd in fds:
            os.set_inheritable(fd, False)
    return pid


def stop_proxy(pid: int, start: str) -> None:
    """SIGTERM the proxy if (pid, start) is still it; reap it if it is our child."""
    from minirun.network.ipam import start_time

    if pid <= 0:
        return
    if start and start_time(pid) == start:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass
