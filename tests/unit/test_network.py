"""Networking pieces that need no root: parsing, the allocator, hosts/resolv.conf, rules."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from minirun.errors import NetworkError, PortInUse, UsageError
from minirun.network import dns, ipam, nat
from minirun.network.config import Network, parse_subnet
from minirun.network.ipam import Endpoint, PortMap, State
from minirun.network.ports import PROXY, exposed, parse_publish, reserve


@pytest.mark.parametrize("spec,want", [
    ("80", [PortMap(80, "tcp", "0.0.0.0", 0)]),
    ("8080:80", [PortMap(80, "tcp", "0.0.0.0", 8080)]),
    ("127.0.0.1:8080:80/udp", [PortMap(80, "udp", "127.0.0.1", 8080)]),
    ("127.0.0.1::80", [PortMap(80, "tcp", "127.0.0.1", 0)]),
    ("8000-8001:80-81", [PortMap(80, "tcp", "0.0.0.0", 8000), PortMap(81, "tcp", "0.0.0.0", 8001)]),
])
def test_parse_publish(spec: str, want: list[PortMap]) -> None:
    assert parse_publish(spec) == want


@pytest.mark.parametrize("spec", ["", "80/sctp", "x:80", "1.2.3.4:a:80", "70000", "1:2:3:4", "8000-8002:80-81"])
def test_parse_publish_rejects(spec: str) -> None:
    with pytest.raises(UsageError):
        parse_publish(spec)


@pytest.mark.parametrize("port", ["²", "①", "٨٠", "1" * 4301, "0" * 5000, "100000"])
def test_parse_publish_refuses_non_ascii_and_huge_ports(port: str) -> None:
    # str.isdigit() is true for '²' and '①' (int() refuses them), int() also takes '٨٠'
    # (Arabic-Indic 80), and refuses more than 4300 digits: each is one clear UsageError
    for spec in (port, f"{port}:80", f"80-{port}"):
        with pytest.raises(UsageError, match="invalid (container|host) port") as ei:
            parse_publish(spec)
        assert "\n" not in str(ei.value)


def test_parse_publish_leading_zeros() -> None:
    assert parse_publish("0000080:00443") == [PortMap(443, "tcp", "0.0.0.0", 80)]


def test_exposed_ports() -> None:
    cfg = {"ExposedPorts": {"80/tcp": {}, "53/udp": {}, "8080": {}}}
    assert [p.key() for p in exposed(cfg)] == ["53/udp", "80/tcp", "8080/tcp"]
    assert PortMap(80, "tcp", "0.0.0.0", 8080).docker() == "80/tcp -> 0.0.0.0:8080"


def test_allocator_lowest_free_skips_gateway_and_used() -> None:
    assert ipam.allocate_ip("10.213.0.0/24", "10.213.0.1", set()) == "10.213.0.2"
    assert ipam.allocate_ip("10.213.0.0/24", "10.213.0.1", {"10.213.0.2", "10.213.0.3"}) == "10.213.0.4"
    full = {f"10.213.0.{i}" for i in range(2, 7)}
    with pytest.raises(NetworkError, match="no free address"):
        ipam.allocate_ip("10.213.0.0/29", "10.213.0.1", full)
    assert ipam.mac_for("10.213.0.2") == "02:42:0a:d5:00:02"


def test_state_round_trip_and_liveness(tmp_path: Path) -> None:
    st = State()
    me = os.getpid()
    st.endpoints["c1"] = Endpoint("c1", "n", "10.0.0.2", "m", "v", me, ipam.start_time(me),
                                  ports=[PortMap(80, "tcp", "0.0.0.0", 8080)])
    st.save(tmp_path / "state.json")
    back = State.load(tmp_path / "state.json")
    assert back == st
    assert back.used_ports() == {("0.0.0.0", 8080, "tcp")}
    assert ipam.alive(me, ipam.start_time(me))
    assert not ipam.alive(me, "1")  # same pid, other start time: a reused pid
    p = subprocess.Popen(["true"])
    p.wait()
    assert not ipam.alive(p.pid, "")


def test_reserve_reports_a_taken_port_by_number() -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        with pytest.raises(PortInUse, match=str(port)):
            reserve(PortMap(80, "tcp", "127.0.0.1", port))
    finally:
        holder.close()
    pm = PortMap(80, "tcp", "127.0.0.1", 0)
    s = reserve(pm)
    assert pm.host_port == s.getsockname()[1] > 0
    s.close()


def test_parse_subnet() -> None:
    assert str(parse_subnet("10.213.0.0/24")) == "10.213.0.0/24"
    for bad in ("10.213.0.1/24", "fd00::/64", "nonsense", "10.0.0.0/31"):
        with pytest.raises(UsageError):
            parse_subnet(bad)


def test_hosts_file() -> None:
    text = dns.hosts("10.0.0.2\tabc web", ["10.0.0.3\tdb 123456789012"],
                     [dns.parse_add_host("x.test:10.1.1.1", None)])
    lines = text.splitlines()
    assert lines[0] == "127.0.0.1\tlocalhost"
    assert lines[-3:] == ["10.0.0.2\tabc web", "10.1.1.1\tx.test", "10.0.0.3\tdb 123456789012"]
    assert dns.parse_add_host("gw:host-gateway", "10.0.0.1") == "10.0.0.1\tgw"
    with pytest.raises(UsageError):
        dns.parse_add_host("bad", None)
    with pytest.raises(UsageError):
        dns.parse_add_host("h:notanip", None)
    assert dns.parse_add_host("my_db-1.local=::1", None) == "::1\tmy_db-1.local"


@pytest.mark.parametrize("name", ["a\n6.6.6.6 evil", "a\rb", "a b", "a\tb", "a#b", "-a", ".a",
                                  "é", "a\x00", "a" * 254])
def test_add_host_refuses_bad_names(name: str) -> None:
    # the name is a field of an /etc/hosts line: a newline would inject another line
    with pytest.raises(UsageError, match="invalid host name") as ei:
        dns.parse_add_host(f"{name}:1.2.3.4", None)
    assert "\n" not in str(ei.value) and "\r" not in str(ei.value)


def test_rewrite_in_place_keeps_the_inode(tmp_path: Path) -> None:
    f = tmp_path / "hosts"
    f.write_text("a much longer original content\n")
    ino = f.stat().st_ino
    dns.rewrite_in_place(str(f), "short\n")
    assert f.read_text() == "short\n" and f.stat().st_ino == ino


def test_resolv_conf_uses_upstream_of_a_loopback_stub(tmp_path: Path) -> None:
    host = tmp_path / "resolv.conf"
    upstream = tmp_path / "upstream.conf"
    host.write_text("nameserver 127.0.0.53\noptions edns0\nsearch corp.test\n")
    upstream.write_text("nameserver 10.213.0.53\nsearch corp.test\n")
    out = dns.resolv_conf([], False, str(host), str(upstream))
    assert "nameserver 10.213.0.53" in out and "127.0.0.53" not in out
    # no upstream file: Docker's fallback servers
    assert "nameserver 8.8.8.8" in dns.resolv_conf([], False, str(host), str(tmp_path / "none"))
    # the host network keeps the stub (it is reachable there)
    assert "nameserver 127.0.0.53" in dns.resolv_conf([], True, str(host), str(upstream))
    # --dns replaces the servers, keeps search/options
    out = dns.resolv_conf(["10.213.0.9"], False, str(host), str(upstream))
    assert [ln for ln in out.splitlines() if ln.startswith("nameserver")] == ["nameserver 10.213.0.9"]
    assert "search corp.test" in out
    with pytest.raises(UsageError):
        dns.resolv_conf(["not-an-ip"], False, str(host), str(upstream))


def _net(name: str, bridge: str, subnet: str) -> Network:
    return Network(name, "0" * 64, bridge, subnet, subnet.rsplit(".", 1)[0] + ".1", 0.0)


def test_nft_script_isolates_bridges_and_masquerades() -> None:
    nets = [_net("a", "mra", "10.213.1.0/24"), _net("b", "mrb", "10.213.2.0/24")]
    script = nat.nft_script("minirun_test", nets)
    assert script.startswith("table ip minirun_test\ndelete table ip minirun_test\n")
    assert 'iifname "mra" oifname { "mrb" } drop' in script
    assert 'iifname "mrb" oifname { "mra" } drop' in script
    assert 'ip saddr 10.213.1.0/24 oifname != "mra" masquerade' in script
    assert nat.nft_script("t", []) == "table ip t\ndelete table ip t\n"
    assert nat.table_name("/var/lib/minirun") == "minirun"
    assert nat.table_name("/tmp/x").startswith("minirun_")


def test_none_and_host_paths_do_not_import_pyroute2(tmp_path: Path) -> None:
    """``--network none``/``host`` must not pay pyroute2's import: prepare + the hook."""
    code = f"""
import sys
from pathlib import Path
from minirun.image.store import Store
from minirun.network import attach
from minirun.container import lifecycle
from minirun.container.records import ContainerRecord
tmp = Path({str(tmp_path)!r})
for mode in ("none", "host"):
    req = attach.prepare(Store(tmp / "store"), "c" * 64, mode=mode, hostname="h", name=None,
                         publish=[], publish_all=False, dns_servers=[], add_hosts=["a:10.0.0.1"],
                         image_cfg={{}}, hosts_path=tmp / "hosts", resolv_path=tmp / "resolv")
    rec = ContainerRecord("c" * 64, "n", "i", "i", ["true"], 0.0, [], [], network=req)
    assert lifecycle._network_hook(Store(tmp / "store"), rec) is None
    lifecycle._release_network(Store(tmp / "store"), rec)
assert "pyroute2" not in " ".join(sys.modules), [m for m in sys.modules if "pyroute2" in m]
print("ok")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.stdout.strip() == "ok", r.stderr


def test_proxy_relays_tcp_and_udp_and_exits_with_its_container() -> None:
    """The proxy program on its own: relays to an echo server and exits when the watched
    process (the container's init, here a sleep) ends."""
    def tcp_echo(srv: socket.socket) -> None:
        c, _ = srv.accept()
        c.sendall(b"echo:" + c.recv(100))
        c.close()

    def udp_echo(srv: socket.socket) -> None:
        data, peer = srv.recvfrom(100)
        srv.sendto(b"echo:" + data, peer)

    tsrv = socket.create_server(("127.0.0.1", 0))
    usrv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    usrv.bind(("127.0.0.1", 0))
    threading.Thread(target=tcp_echo, args=(tsrv,), daemon=True).start()
    threading.Thread(target=udp_echo, args=(usrv,), daemon=True).start()
    tpub, upub = PortMap(1, "tcp", "127.0.0.1", 0), PortMap(1, "udp", "127.0.0.1", 0)
    tsock, usock = reserve(tpub), reserve(upub)
    sleeper = subprocess.Popen(["sleep", "30"])
    specs = [f"{tsock.fileno()}:tcp:127.0.0.1:{tsrv.getsockname()[1]}",
             f"{usock.fileno()}:udp:127.0.0.1:{usrv.getsockname()[1]}"]
    proxy = subprocess.Popen([sys.executable, "-I", "-S", PROXY, "--watch",
                              f"{sleeper.pid}:{ipam.start_time(sleeper.pid)}", *specs],
                             pass_fds=(tsock.fileno(), usock.fileno()))
    tsock.close()
    usock.close()
    try:
        with socket.create_connection(("127.0.0.1", tpub.host_port), timeout=5) as c:
            c.sendall(b"tcp")
            assert c.recv(100) == b"echo:tcp"
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.settimeout(5)
        u.sendto(b"udp", ("127.0.0.1", upub.host_port))
        assert u.recv(100) == b"echo:udp"
        u.close()
        sleeper.kill()
        sleeper.wait()
        assert proxy.wait(timeout=5) == 0
    finally:
        sleeper.kill()
        proxy.kill()
        proxy.wait()
        tsrv.close()
        usrv.close()


@pytest.mark.parametrize("argv, bridge", [
    (["run", "--rm", "busybox", "true"], True),
    (["--root", "/x", "run", "busybox"], True),
    (["run", "--network", "none", "busybox", "true"], False),
    (["run", "--network=host", "busybox"], False),
    (["run", "--net", "none", "busybox"], False),
    (["run", "-d", "busybox", "sleep", "1"], False),
    (["run", "-dit", "busybox", "sh"], False),
    (["run", "-it", "busybox", "sh"], True),
    (["run", "busybox", "--network", "none"], True),  # the container's own args
    (["ps", "-a"], False),
    (["--root", "run", "ps"], False),
    ([], False),
])  # fmt: skip
def test_bridge_run_guess_for_the_netlink_worker(argv: list[str], bridge: bool) -> None:
    from minirun.cli.main import _bridge_run

    assert _bridge_run(argv) is bridge


def test_netlink_worker_unused_is_killed_and_reaped() -> None:
    """prewarm() forks a worker that imports pyroute2; done() without a call kills and
    reaps it at once (not after its import)."""
    import time

    from minirun.network import netlink

    netlink.prewarm()
    w = netlink._worker
    assert w is not None
    t = time.monotonic()
    netlink.done()
    assert time.monotonic() - t < 1.0 and netlink._worker is None
    with pytest.raises(ChildProcessError):
        os.waitpid(w.pid, os.WNOHANG)


def test_netlink_worker_reports_errors_as_network_errors() -> None:
    from minirun.errors import NetworkError
    from minirun.network import netlink

    netlink.prewarm()
    try:
        with pytest.raises(NetworkError, match="does not exist"):
            netlink.attach_veth("nosuchbridge0", "mrvtest", os.getpid(), "10.99.0.2", 24,
                                "10.99.0.1", "02:42:0a:63:00:02", 1500)  # fmt: skip
    finally:
        netlink.done()
