"""Container networking through the real CLI, as root.

Traffic goes only to 127.0.0.1 and to addresses inside the network namespaces these tests
create. Every bridge and subnet is on a test-only range (bridges ``mrt*``, subnets
``10.213.x.0/24``) and is removed at the end — by ``network prune``, also on failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import store_cli

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: real containers")

REPO = Path(__file__).resolve().parents[2]
MINIRUN = str(Path(sys.executable).parent / "minirun")
Cli = Callable[..., subprocess.CompletedProcess[str]]

DEFAULT_BRIDGE = "mrt0"
DEFAULT_SUBNET = "10.213.100.0/24"
NET_A, SUBNET_A, BRIDGE_A = "mrt-a", "10.213.1.0/24", "mrt1"
NET_B, SUBNET_B, BRIDGE_B = "mrt-b", "10.213.2.0/24", "mrt2"
PORT = 18080  # host ports used: 18080-18099


def _env(store: Path) -> dict[str, str]:
    return {**os.environ, "MINIRUN_ROOT": str(store), "MINIRUN_DEFAULT_BRIDGE": DEFAULT_BRIDGE,
            "MINIRUN_DEFAULT_SUBNET": DEFAULT_SUBNET}


def _links() -> set[str]:
    """This module's interfaces: its bridges (mrt*) and every port on them. Other tests
    may create and remove their own interfaces meanwhile; those are not looked at."""
    ours = {n for n in os.listdir("/sys/class/net") if n.startswith("mrt")}
    ports = {p for b in ours if os.path.isdir(f"/sys/class/net/{b}/brif")
             for p in os.listdir(f"/sys/class/net/{b}/brif")}
    return ours | ports


def _proxies(store: Path) -> list[int]:
    """Port proxy processes serving this store."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(c.endswith(b"network/proxy.py") for c in cmd) and str(store).encode() in cmd:
            out.append(int(pid))
    return out


def _state(store: Path) -> dict:
    try:
        return json.loads((store / "networks" / "state.json").read_text())
    except FileNotFoundError:
        return {"endpoints": {}}


def _ruleset(store: Path) -> str:
    from minirun.network.nat import table_name

    return subprocess.run(["nft", "list", "table", "ip", table_name(str(store))],
                          capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    sys.path.insert(0, str(REPO))
    from images.build import build_all

    store = tmp_path_factory.mktemp("netstore")
    layouts = tmp_path_factory.mktemp("layouts")
    for p in build_all(layouts):
        subprocess.run([MINIRUN, "load", "-q", "-i", str(p)], check=True, env=_env(store))
    saved = Path("/run/minirun/ip_forward.orig")  # the host's value while any store has rules
    forward = saved.read_text() if saved.exists() else Path("/proc/sys/net/ipv4/ip_forward").read_text()
    links = _links()
    try:
        yield store
    finally:
        ids = subprocess.run([MINIRUN, "ps", "-aq"], env=_env(store), capture_output=True,
                             text=True).stdout.split()
        if ids:
            subprocess.run([MINIRUN, "rm", "-f", *ids], env=_env(store), capture_output=True)
        subprocess.run([MINIRUN, "network", "prune", "-f"], env=_env(store), capture_output=True)
        for pid in _proxies(store):
            os.kill(pid, signal.SIGKILL)
        for name in _links() - links:  # last resort; a failure above leaves nothing behind
            if name.startswith(("mrt", "mrv")):
                subprocess.run(["ip", "link", "del", name], capture_output=True)
        assert not _ruleset(store)  # our table went with the last network
        tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
        if "minirun" not in tables:  # no other store has rules: forwarding is as it was
            assert Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() == forward.strip()
        assert not _proxies(store)


@pytest.fixture
def cli(root: Path) -> Cli:
    return store_cli(_env(root))


@pytest.fixture(scope="module")
def networks(root: Path) -> Iterator[None]:
    env = _env(root)
    for name, subnet, bridge in ((NET_A, SUBNET_A, BRIDGE_A), (NET_B, SUBNET_B, BRIDGE_B)):
        r = subprocess.run([MINIRUN, "network", "create", "--subnet", subnet, "-o",
                            f"com.docker.network.bridge.name={bridge}", name],
                           env=env, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    yield
    r = subprocess.run([MINIRUN, "network", "rm", NET_A, NET_B], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def background(root: Path, *args: str) -> subprocess.Popen[str]:
    """``minirun run ARGS`` in the background (a "detached" container for the test)."""
    return subprocess.Popen([MINIRUN, "run", *args], env=_env(root), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_running(cli: Cli, name: str, timeout: float = 10) -> dict:
    """The container's inspect JSON once it runs with its address."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = cli("inspect", "--type", "container", name)
        if r.returncode == 0:
            info = json.loads(r.stdout)[0]
            if info["State"]["Running"] and info["NetworkSettings"]["IPAddress"]:
                return info
        time.sleep(0.05)
    raise AssertionError(f"container {name} did not start")


def finish(cli: Cli, proc: subprocess.Popen[str], name: str) -> tuple[str, str]:
    cli("rm", "-f", name)
    out, err = proc.communicate(timeout=20)
    return out, err


# -- modes ------------------------------------------------------------------------------------


def test_none_has_only_loopback(cli: Cli) -> None:
    r = cli("run", "--rm", "--network", "none", "busybox", "ls", "/sys/class/net")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["lo"]


def test_host_sees_the_hosts_interfaces(cli: Cli) -> None:
    r = cli("run", "--rm", "--network", "host", "busybox", "cat", "/proc/net/dev")
    assert r.returncode == 0, r.stderr
    names = {line.split(":")[0].strip() for line in r.stdout.splitlines()[2:]}
    default_if = next(line.split()[0] for line in Path("/proc/net/route").read_text().splitlines()[1:]
                      if line.split()[1] == "00000000")
    assert {"lo", default_if} <= names


def test_bridge_is_the_default(cli: Cli, root: Path) -> None:
    r = cli("run", "--rm", "--name", "b1", "busybox", "sh", "-c",
            "ip addr show eth0; ip route; cat /etc/hosts /sys/class/net/eth0/mtu; "
            "ping -c1 -W2 10.213.100.1 >/dev/null && echo GATEWAY-OK")
    assert r.returncode == 0, r.stderr
    assert "inet 10.213.100." in r.stdout
    assert "default via 10.213.100.1 dev eth0" in r.stdout
    assert "GATEWAY-OK" in r.stdout
    ip = r.stdout.split("inet ")[1].split("/")[0]
    assert f"{ip}\t" in r.stdout and " b1" in r.stdout  # own line in /etc/hosts
    iface = next(line.split()[0] for line in Path("/proc/net/route").read_text().splitlines()[1:]
                 if line.split()[1] == "00000000")
    assert Path(f"/sys/class/net/{iface}/mtu").read_text().strip() in r.stdout.split()
    assert os.path.isdir(f"/sys/class/net/{DEFAULT_BRIDGE}")
    assert not _state(root)["endpoints"]  # released at exit


def test_dns_and_add_host(cli: Cli) -> None:
    r = cli("run", "--rm", "--dns", "10.213.0.53", "--add-host", "db.test:10.213.0.9",
            "--add-host", "gw.test:host-gateway", "busybox", "cat", "/etc/resolv.conf", "/etc/hosts")
    assert r.returncode == 0, r.stderr
    assert [line for line in r.stdout.splitlines() if line.startswith("nameserver")] == [
        "nameserver 10.213.0.53"]
    assert "10.213.0.9\tdb.test" in r.stdout
    assert "10.213.100.1\tgw.test" in r.stdout


# -- user-defined networks: names, isolation ------------------------------------------------------


@pytest.mark.usefixtures("networks")
def test_containers_on_one_network_reach_each_other_by_name(cli: Cli, root: Path) -> None:
    srv = background(root, "--rm", "--name", "srv", "--network", NET_A, "busybox",
                     "sh", "-c", "nc -l -p 1234")
    try:
        info = wait_running(cli, "srv")
        srv_ip = info["NetworkSettings"]["Networks"][NET_A]["IPAddress"]
        assert srv_ip.startswith("10.213.1.")
        r = cli("run", "--rm", "--name", "client", "--network", NET_A, "busybox", "sh", "-c",
                "ping -c1 -W2 srv && echo hello-by-name | nc srv 1234")
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"({srv_ip})" in r.stdout
        out, err = srv.communicate(timeout=10)
        assert "hello-by-name" in out, err
        # a container on another network cannot reach it
        srv2 = background(root, "--rm", "--name", "srv2", "--network", NET_A, "busybox", "sleep", "30")
        try:
            ip2 = wait_running(cli, "srv2")["NetworkSettings"]["IPAddress"]
            r = cli("run", "--rm", "--network", NET_B, "busybox", "ping", "-c1", "-W1", ip2)
            assert r.returncode != 0 and "0 packets received" in r.stdout
            r = cli("run", "--rm", "--network", NET_A, "busybox", "ping", "-c1", "-W2", ip2)
            assert r.returncode == 0, r.stdout  # the same check works on its own network
        finally:
            finish(cli, srv2, "srv2")
    finally:
        if srv.poll() is None:
            finish(cli, srv, "srv")


@pytest.mark.usefixtures("networks")
def test_earlier_members_learn_later_names(cli: Cli, root: Path) -> None:
    """/etc/hosts of every member is updated on the host side as members come and go."""
    first = background(root, "--rm", "--name", "first", "--network", NET_A, "busybox", "sleep", "30")
    second = None
    try:
        hosts = Path(wait_running(cli, "first")["HostsPath"])
        second = background(root, "--rm", "--name", "second", "--network", NET_A, "busybox",
                            "sleep", "30")
        ip2 = wait_running(cli, "second")["NetworkSettings"]["IPAddress"]
        assert f"{ip2}\tsecond " in hosts.read_text()
        finish(cli, second, "second")
        assert "second" not in hosts.read_text()
    finally:
        for p, n in ((first, "first"), (second, "second")):
            if p is not None and p.poll() is None:
                finish(cli, p, n)


@pytest.mark.usefixtures("networks")
def test_network_in_use_cannot_be_removed(cli: Cli, root: Path) -> None:
    p = background(root, "--rm", "--name", "busy", "--network", NET_B, "busybox", "sleep", "30")
    try:
        wait_running(cli, "busy")
        r = cli("network", "rm", NET_B)
        assert r.returncode == 1 and "busy" in r.stderr
        info = json.loads(cli("network", "inspect", NET_B).stdout)[0]
        assert [c["Name"] for c in info["Containers"].values()] == ["busy"]
        assert info["IPAM"]["Config"][0]["Subnet"] == SUBNET_B
    finally:
        finish(cli, p, "busy")


def test_network_create_refuses_a_taken_subnet(cli: Cli) -> None:
    r = cli("network", "create", "--subnet", DEFAULT_SUBNET, "mrt-clash")
    assert r.returncode == 1 and "overlaps" in r.stderr


# -- published ports ------------------------------------------------------------------------------


def _fetch(url: str, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:  # 127.0.0.1 only
                return resp.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _port_free(port: int, proto: str = "tcp") -> bool:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def test_publish_tcp(cli: Cli, root: Path) -> None:
    p = background(root, "--rm", "--name", "web", "-p", f"127.0.0.1:{PORT}:80", "busybox-extra",
                   "httpd", "-f", "-p", "80", "-h", "/srv/www")
    try:
        info = wait_running(cli, "web")
        assert _fetch(f"http://127.0.0.1:{PORT}/") == "<h1>hello from minirun</h1>\n"
        assert cli("port", "web").stdout == f"80/tcp -> 127.0.0.1:{PORT}\n"
        assert info["NetworkSettings"]["Ports"] == {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(PORT)}]}
        assert len(_proxies(root)) == 1
    finally:
        finish(cli, p, "web")
    assert _port_free(PORT) and not _proxies(root)


# busybox's nc here is built without UDP (-u), so the container's UDP echo server is the
# host's python, bind-mounted read-only (Debian's merged /usr: /lib and /lib64 live in it).
HOST_PYTHON = ["-v", "/usr:/usr:ro", "-v", "/usr/lib:/lib:ro", "-v", "/usr/lib64:/lib64:ro"]
UDP_ECHO = ("import socket\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('0.0.0.0', 53))\n"
            "while True:\n"
            "    data, peer = s.recvfrom(512); s.sendto(b'echo:' + data, peer)\n")


def test_publish_udp_and_random_port(cli: Cli, root: Path) -> None:
    p = background(root, "--rm", "--name", "udp", "-p", f"127.0.0.1:{PORT + 1}:53/udp",
                   "-p", "127.0.0.1::80", *HOST_PYTHON, "busybox", "/usr/bin/python3", "-c", UDP_ECHO)
    try:
        wait_running(cli, "udp")
        lines = cli("port", "udp").stdout.splitlines()
        assert f"53/udp -> 127.0.0.1:{PORT + 1}" in lines
        random_port = int(next(line for line in lines if line.startswith("80/tcp")).rsplit(":", 1)[1])
        assert random_port > 1024
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(0.5)
        answer = b""
        for _ in range(40):  # the server may still be starting: UDP has no backlog to wait in
            s.sendto(b"ping-udp", ("127.0.0.1", PORT + 1))
            try:
                answer = s.recv(512)
                break
            except TimeoutError:
                continue
        s.close()
        assert answer == b"echo:ping-udp"
    finally:
        finish(cli, p, "udp")
    assert _port_free(PORT + 1, "udp") and not _proxies(root)


def test_taken_port_fails_before_the_container_starts(cli: Cli, root: Path) -> None:
    before = _state(root)["endpoints"]
    holder = socket.socket()
    holder.bind(("127.0.0.1", PORT + 2))
    holder.listen()
    try:
        r = cli("run", "--rm", "--name", "clash", "-p", f"127.0.0.1:{PORT + 2}:80", "busybox",
                "echo", "SHOULD-NOT-RUN")
        assert r.returncode == 125
        assert str(PORT + 2) in r.stderr and "already in use" in r.stderr
        assert "SHOULD-NOT-RUN" not in r.stdout
        assert r.stderr.count("\n") == 1  # one clear line
    finally:
        holder.close()
    assert _state(root)["endpoints"] == before
    assert "clash" not in cli("ps", "-a").stdout
    # a port published by a running container is taken too
    p = background(root, "--rm", "--name", "owner", "-p", f"127.0.0.1:{PORT + 3}:80", "busybox",
                   "sleep", "30")
    try:
        wait_running(cli, "owner")
        r = cli("run", "--rm", "-p", f"{PORT + 3}:80", "busybox", "true")
        assert r.returncode == 125 and str(PORT + 3) in r.stderr
    finally:
        finish(cli, p, "owner")


def test_publish_needs_a_bridge(cli: Cli) -> None:
    r = cli("run", "--rm", "--network", "none", "-p", "80", "busybox", "true")
    assert r.returncode == 125 and "bridge" in r.stderr


# -- lifecycle: leaks, crashes --------------------------------------------------------------------


def test_no_leaks_after_100_runs(cli: Cli, root: Path) -> None:
    cli("run", "--rm", "busybox", "true")  # the default bridge and its rules exist from here
    links, rules = _links(), _ruleset(root)
    assert "masquerade" in rules
    for i in range(100):
        args = ["-p", "127.0.0.1::80"] if i % 10 == 0 else []
        r = cli("run", "--rm", *args, "busybox", "true")
        assert r.returncode == 0, r.stderr
    deadline = time.monotonic() + 5  # a namespace's veth goes asynchronously in the kernel
    while _links() != links and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _links() == links
    assert _ruleset(root) == rules
    assert not _state(root)["endpoints"]
    assert not _proxies(root)


@pytest.mark.usefixtures("networks")
def test_reconcile_after_sigkill_of_minirun(cli: Cli, root: Path) -> None:
    links = _links()
    p = background(root, "--rm", "--name", "victim", "--network", NET_A,
                   "-p", f"127.0.0.1:{PORT + 4}:80", "busybox-extra", "httpd", "-f", "-p", "80",
                   "-h", "/srv/www")
    wait_running(cli, "victim")
    assert _fetch(f"http://127.0.0.1:{PORT + 4}/")
    assert _state(root)["endpoints"]
    p.send_signal(signal.SIGKILL)
    p.wait()
    r = cli("network", "ls")  # any network command reconciles
    assert r.returncode == 0, r.stderr
    assert not _state(root)["endpoints"]
    deadline = time.monotonic() + 5
    while (_links() != links or _proxies(root)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _links() == links and not _proxies(root)
    assert _port_free(PORT + 4)
    cli("rm", "-f", "victim")


def test_none_and_host_never_import_pyroute2(root: Path) -> None:
    for mode in ("none", "host"):
        r = subprocess.run([sys.executable, "-X", "importtime", MINIRUN, "run", "--rm",
                            "--network", mode, "busybox", "true"],
                           env=_env(root), capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-500:]
        assert "pyroute2" not in r.stderr


def test_a_removed_store_roots_bridge_and_table_are_reclaimed(cli: Cli, root: Path,
                                                              tmp_path: Path) -> None:  # fmt: skip
    """A throw-away --root deleted with rm -rf (no network prune) must not leave its
    bridge, route and nft table on the host: the next network operation of any store
    reclaims them (they are recorded in /run/minirun/bridges)."""
    import shutil

    from minirun.network import nat

    other = tmp_path / "throwaway"
    env = {**os.environ, "MINIRUN_ROOT": str(other), "MINIRUN_DEFAULT_BRIDGE": "mrt9",
           "MINIRUN_DEFAULT_SUBNET": "10.213.9.0/24"}  # fmt: skip
    layouts = tmp_path / "layouts"
    sys.path.insert(0, str(REPO))
    from images.build import build_all

    busybox = next(p for p in build_all(layouts) if p.name == "busybox")
    subprocess.run([MINIRUN, "load", "-q", "-i", str(busybox)], check=True, env=env)
    r = subprocess.run([MINIRUN, "run", "--rm", "busybox", "true"], env=env,
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr
    table = nat.table_name(str(other))
    try:
        assert os.path.exists("/sys/class/net/mrt9")
        assert os.path.exists("/run/minirun/bridges/mrt9.json")
        assert table in subprocess.run(["nft", "list", "tables"], capture_output=True,
                                       text=True).stdout  # fmt: skip
        shutil.rmtree(other)
        assert cli("network", "ls").returncode == 0  # any store's network operation
        assert not os.path.exists("/sys/class/net/mrt9")
        assert not os.path.exists("/run/minirun/bridges/mrt9.json")
        assert table not in subprocess.run(["nft", "list", "tables"], capture_output=True,
                                           text=True).stdout  # fmt: skip
        assert "10.213.9." not in subprocess.run(["ip", "route"], capture_output=True,
                                                 text=True).stdout  # fmt: skip
    finally:  # a failure above still leaves nothing behind
        subprocess.run(["ip", "link", "del", "mrt9"], capture_output=True)
        subprocess.run(["nft", "delete", "table", "ip", table], capture_output=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink("/run/minirun/bridges/mrt9.json")


def test_subnet_of_an_address_on_a_down_interface_is_taken(cli: Cli) -> None:
    """An address whose interface is down has no route; its subnet is still in use."""
    subprocess.run(["ip", "link", "add", "mrtd0", "type", "veth", "peer", "name", "mrtd1"],
                   check=True)  # fmt: skip
    try:
        subprocess.run(["ip", "addr", "add", "10.213.77.1/24", "dev", "mrtd0"], check=True)
        assert "10.213.77." not in subprocess.run(["ip", "route"], capture_output=True,
                                                  text=True).stdout  # fmt: skip
        r = cli("network", "create", "--subnet", "10.213.77.0/24", "mrt-down")
        assert r.returncode == 1 and "overlaps" in r.stderr and "address" in r.stderr
    finally:
        subprocess.run(["ip", "link", "del", "mrtd0"], capture_output=True)
