"""minirun's port proxy: ``python -I -S proxy.py --store ROOT --watch PID:START FD:PROTO:IP:PORT...``

A standalone, stdlib-only program (run with -I -S: no site-packages, starts in ~10 ms,
a few MB): it serves listening sockets it inherits (bound by minirun before the
container started) and relays each TCP connection / UDP flow to the container's
IP:PORT. It watches the container's init through a pidfd and exits as soon as it ends,
so it never outlives its container, whoever started it and whatever happened to them.
"""

from __future__ import annotations

import os
import selectors
import socket
import sys
import threading
import time

UDP_IDLE = 60.0  # seconds a UDP flow without traffic is kept


def _start_time(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return ""


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def _tcp(client: socket.socket, target: tuple[str, int]) -> None:
    try:
        upstream = socket.create_connection(target, timeout=10)
    except OSError:
        client.close()
        return
    upstream.settimeout(None)
    t = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
    t.start()
    _pump(client, upstream)
    t.join()
    client.close()
    upstream.close()


class _Udp:
    """One host socket; one connected socket to the container per client address."""

    def __init__(self, sel: selectors.BaseSelector, sock: socket.socket, target: tuple[str, int]) -> None:
        self.sel, self.sock, self.target = sel, sock, target
        self.flows: dict[tuple[str, int], tuple[socket.socket, float]] = {}

    def incoming(self) -> None:
        try:
            data, client = self.sock.recvfrom(65535)
        except OSError:
            return
        flow = self.flows.get(client)
        if flow is None:
            up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            up.connect(self.target)
            self.sel.register(up, selectors.EVENT_READ, ("udp-reply", self, client))
        else:
            up = flow[0]
        self.flows[client] = (up, time.monotonic())
        try:
            up.send(data)
        except OSError:
            pass

    def reply(self, client: tuple[str, int]) -> None:
        up, _ = self.flows[client]
        try:
            data = up.recv(65535)
            self.sock.sendto(data, client)
        except OSError:
            return
        self.flows[client] = (up, time.monotonic())

    def expire(self) -> None:
        now = time.monotonic()
        for client, (up, last) in list(self.flows.items()):
            if now - last > UDP_IDLE:
                self.sel.unregister(up)
                up.close()
                del self.flows[client]


def main(argv: list[str]) -> int:
    watch = ""
    specs = []
    i = 0
    while i < len(argv):
        if argv[i] in ("--watch", "--store"):
            if argv[i] == "--watch":
                watch = argv[i + 1]
            i += 2
            continue
        specs.append(argv[i])
        i += 1
    pid_s, _, start = watch.partition(":")
    pid = int(pid_s)
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return 0  # the container is gone already
    if _start_time(pid) != start:
        return 0  # not our container any more (a reused pid)
    sel = selectors.DefaultSelector()
    sel.register(pidfd, selectors.EVENT_READ, ("exit",))
    udps = []
    for spec in specs:
        fd_s, proto, ip, port = spec.split(":")
        kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
        s = socket.socket(socket.AF_INET, kind, fileno=int(fd_s))
        if proto == "tcp":
            sel.register(s, selectors.EVENT_READ, ("tcp", s, (ip, int(port))))
        else:
            u = _Udp(sel, s, (ip, int(port)))
            udps.append(u)
            sel.register(s, selectors.EVENT_READ, ("udp", u))
    while True:
        for key, _ in sel.select(timeout=UDP_IDLE / 2 if udps else None):
            what = key.data
            if what[0] == "exit":
                return 0
            if what[0] == "tcp":
                try:
                    client, _addr = what[1].accept()
                except OSError:
                    continue
                threading.Thread(target=_tcp, args=(client, what[2]), daemon=True).start()
            elif what[0] == "udp":
                what[1].incoming()
            elif what[0] == "udp-reply":
                what[1].reply(what[2])
        for u in udps:
            u.expire()


if __name__ == "__main__":
    try:
        code = main(sys.argv[1:])
    except KeyboardInterrupt:
        code = 0
    os._exit(code)  # daemon threads may be mid-relay: do not wait for them
