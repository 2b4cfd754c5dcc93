"""``network connect`` / ``network disconnect`` through the real CLI, as root.

Traffic goes only to addresses inside the network namespaces these tests create. The
networks are this module's own: bridges ``mrc*`` on subnets ``10.214.x.0/24``, created
here and removed at the end (also on failure), with every container.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import CONTAINER_TESTS, Cli, store_cli, wait_for

pytestmark = CONTAINER_TESTS
MINIRUN = str(Path(sys.executable).parent / "minirun")

DEFAULT_BRIDGE, DEFAULT_SUBNET = "mrc0", "10.214.100.0/24"
NET_A, SUBNET_A, BRIDGE_A, GW_A = "mrc-a", "10.214.1.0/24", "mrc1", "10.214.1.1"
NET_B, SUBNET_B, BRIDGE_B, GW_B = "mrc-b", "10.214.2.0/24", "mrc2", "10.214.2.1"


def _env(store: Path) -> dict[str, str]:
    return {**os.environ, "MINIRUN_ROOT": str(store), "MINIRUN_DEFAULT_BRIDGE": DEFAULT_BRIDGE,
            "MINIRUN_DEFAULT_SUBNET": DEFAULT_SUBNET}


def _links() -> set[str]:
    """This module's bridges (mrc*) and every port on them."""
    ours = {n for n in os.listdir("/sys/class/net") if n.startswith("mrc")}
    return ours | {p for b in ours if os.path.isdir(f"/sys/class/net/{b}/brif")
                   for p in os.listdir(f"/sys/class/net/{b}/brif")}


def _ports(bridge: str) -> set[str]:
    path = f"/sys/class/net/{bridge}/brif"
    return set(os.listdir(path)) if os.path.isdir(path) else set()


def _state(store: Path) -> dict:
    try:
        return json.loads((store / "networks" / "state.json").read_text())
    except FileNotFoundError:
        return {"endpoints": {}}


def _nft_rules(store: Path) -> int:
    from minirun.network.nat import table_name

    out = subprocess.run(["nft", "list", "table", "ip", table_name(str(store))],
                         capture_output=True, text=True).stdout  # fmt: skip
    return sum(1 for line in out.splitlines() if line.strip().endswith(("drop", "masquerade")))


def _host_addrs() -> str:
    return subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory, built_images: Path) -> Iterator[Path]:
    store = tmp_path_factory.mktemp("connstore")
    env = _env(store)
    subprocess.run([MINIRUN, "load", "-q", "-i", str(built_images / "busybox")], check=True, env=env)
    links = _links()
    try:
        for name, subnet, bridge in ((NET_A, SUBNET_A, BRIDGE_A), (NET_B, SUBNET_B, BRIDGE_B)):
            r = subprocess.run([MINIRUN, "network", "create", "--subnet", subnet, "-o",
                                f"com.docker.network.bridge.name={bridge}", name],
                               env=env, capture_output=True, text=True)
            assert r.returncode == 0, r.stderr
        yield store
    finally:
        ids = subprocess.run([MINIRUN, "ps", "-aq"], env=env, capture_output=True,
                             text=True).stdout.split()  # fmt: skip
        if ids:
            subprocess.run([MINIRUN, "rm", "-f", *ids], env=env, capture_output=True)
        r = subprocess.run([MINIRUN, "network", "prune", "-f"], env=env, capture_output=True, text=True)
        for name in _links() - links:  # last resort; a failure above leaves nothing behind
            subprocess.run(["ip", "link", "del", name], capture_output=True)
        assert r.returncode == 0, r.stderr
        assert not _state(store)["endpoints"]
        assert _nft_rules(store) == 0
        for bridge in (DEFAULT_BRIDGE, BRIDGE_A, BRIDGE_B):
            assert not os.path.exists(f"/run/minirun/bridges/{bridge}.json")
        assert "10.214." not in _host_addrs()


@pytest.fixture
def mr(root: Path) -> Cli:
    return store_cli(_env(root))


def detach(mr: Cli, name: str, network: str, *opts: str) -> str:
    r = mr("run", "-d", "--pull", "never", "--name", name, "--network", network, *opts,
           "busybox", "sleep", "120")
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def inspect(mr: Cli, name: str) -> dict:
    r = mr("inspect", "--type", "container", name)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)[0]


def sh(mr: Cli, name: str, script: str) -> subprocess.CompletedProcess[str]:
    return mr("exec", name, "sh", "-c", script)


def one_error(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 1, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.stderr
    return lines[0]


def settled(root: Path, cid: str) -> None:
    """The shim of the container's last run is gone (its _cleanup recorded the exit)."""
    rec = json.loads((root / "containers" / cid / "container.json").read_text())
    sup = rec.get("supervisor_pid") or 0
    wait_for(lambda: not sup or not os.path.exists(f"/proc/{sup}")
             or open(f"/proc/{sup}/stat").read().rpartition(") ")[2].startswith("Z"))


def stop(mr: Cli, root: Path, name: str, cid: str) -> None:
    assert mr("stop", "-t", "0", name).returncode == 0
    settled(root, cid)


def inet(text: str) -> str:
    return text.split("inet ")[1].split("/")[0]


# -- a running container ------------------------------------------------------------------------


def test_connect_a_running_container_then_disconnect(mr: Cli, root: Path) -> None:
    cid = detach(mr, "cc-main", NET_A)
    peer = detach(mr, "cc-peer", NET_B)
    try:
        ip_a = inspect(mr, "cc-main")["NetworkSettings"]["Networks"][NET_A]["IPAddress"]
        peer_ip = inspect(mr, "cc-peer")["NetworkSettings"]["IPAddress"]
        assert peer_ip.startswith("10.214.2.")
        r = mr("run", "--rm", "--pull", "never", "--network", NET_A, "busybox", "ping", "-c1",
               "-W1", peer_ip)  # fmt: skip
        assert r.returncode != 0  # networks are isolated: A cannot reach B through the host

        r = mr("network", "connect", "--alias", "cc-alias", NET_B, "cc-main")
        assert r.returncode == 0 and r.stdout == "" and r.stderr == "", r
        r = sh(mr, "cc-main", "ip -4 addr show eth1; ip route; cat /proc/net/dev /etc/hosts")
        assert r.returncode == 0, r.stderr
        ip_b = inet(r.stdout)
        assert ip_b.startswith("10.214.2.") and ip_b != peer_ip
        assert f"default via {GW_A} dev eth0" in r.stdout  # the first network keeps the route
        assert "default via 10.214.2." not in r.stdout
        assert "eth1:" in r.stdout  # /proc/net/dev
        hosts = r.stdout.split("ff02::2")[1]
        assert f"{ip_a}\t" in hosts and f"{ip_b}\t" in hosts  # its name at both addresses
        assert f"{peer_ip}\tcc-peer" in hosts  # B's members, by name
        # over eth1 it reaches B's members, by address and by name; they reach it by name and alias
        r = sh(mr, "cc-main", f"ping -c1 -W1 {peer_ip} && ping -c1 -W1 cc-peer")
        assert r.returncode == 0, r.stdout + r.stderr
        r = sh(mr, "cc-peer", "ping -c1 -W1 cc-main && ping -c1 -W1 cc-alias")
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"({ip_b})" in r.stdout

        nets = inspect(mr, "cc-main")["NetworkSettings"]
        assert set(nets["Networks"]) == {NET_A, NET_B}
        assert nets["Networks"][NET_B]["IPAddress"] == ip_b
        assert nets["Networks"][NET_B]["Gateway"] == GW_B
        assert "cc-alias" in nets["Networks"][NET_B]["Aliases"]
        assert nets["IPAddress"] == ip_a  # the top level is the first network's
        info = json.loads(mr("network", "inspect", NET_B).stdout)[0]
        assert {c["Name"]: c["IPv4Address"] for c in info["Containers"].values()} == {
            "cc-main": f"{ip_b}/24", "cc-peer": f"{peer_ip}/24"}
        assert cid in info["Containers"]
        assert len(_ports(BRIDGE_B)) == 2

        # a network a running container is connected to cannot be removed
        assert "cc-main" in one_error(mr("network", "rm", NET_B))

        r = mr("network", "disconnect", NET_B, "cc-main")
        assert r.returncode == 0 and r.stdout == "" and r.stderr == "", r
        r = sh(mr, "cc-main", "ls /sys/class/net; ip route; cat /etc/hosts")
        assert r.stdout.split("default")[0].split() == ["eth0", "lo"]
        assert f"default via {GW_A} dev eth0" in r.stdout
        assert ip_b not in r.stdout and "cc-peer" not in r.stdout
        assert "cc-main" not in (root / "containers" / peer / "hosts").read_text()
        assert len(_ports(BRIDGE_B)) == 1
        assert set(inspect(mr, "cc-main")["NetworkSettings"]["Networks"]) == {NET_A}
        info = json.loads(mr("network", "inspect", NET_B).stdout)[0]
        assert [c["Name"] for c in info["Containers"].values()] == ["cc-peer"]
        assert not [e for e in _state(root)["endpoints"].values()
                    if e["container"] == cid and e["network"] == NET_B]
    finally:
        mr("rm", "-f", "cc-main", "cc-peer")


def test_connect_with_ip_and_disconnect_the_first_network(mr: Cli) -> None:
    detach(mr, "cc-ip", NET_A)
    try:
        r = mr("network", "connect", "--ip", "10.214.2.77", NET_B, "cc-ip")
        assert r.returncode == 0, r.stderr
        assert "inet 10.214.2.77/24" in sh(mr, "cc-ip", "ip -4 addr show eth1").stdout
        # the first network goes: the default route moves to the one left
        assert mr("network", "disconnect", NET_A, "cc-ip").returncode == 0
        r = sh(mr, "cc-ip", "ls /sys/class/net; ip route")
        assert "eth0" not in r.stdout.split() and "eth1" in r.stdout.split()
        assert f"default via {GW_B} dev eth1" in r.stdout
        info = inspect(mr, "cc-ip")["NetworkSettings"]
        assert set(info["Networks"]) == {NET_B} and info["IPAddress"] == "10.214.2.77"
        # connected again it gets the lowest free interface, and no default route
        assert mr("network", "connect", NET_A, "cc-ip").returncode == 0
        r = sh(mr, "cc-ip", "ip -4 addr show eth0; ip route")
        assert "inet 10.214.1." in r.stdout and f"default via {GW_B} dev eth1" in r.stdout
        assert f"default via {GW_A}" not in r.stdout
    finally:
        mr("rm", "-f", "cc-ip")


# -- a stopped container --------------------------------------------------------------------------


def test_connect_a_stopped_container_applies_at_start(mr: Cli, root: Path) -> None:
    cid = detach(mr, "cc-stopped", NET_A)
    try:
        stop(mr, root, "cc-stopped", cid)
        r = mr("network", "connect", "--ip", "10.214.2.88", "--alias", "cc-later", NET_B, "cc-stopped")
        assert r.returncode == 0, r.stderr
        assert mr("network", "connect", NET_B, "cc-stopped").returncode == 0  # again: no change
        nets = inspect(mr, "cc-stopped")["NetworkSettings"]["Networks"]
        assert list(nets) == [NET_A, NET_B] and nets[NET_B]["IPAddress"] == ""
        assert nets[NET_B]["IPAMConfig"] == {"IPv4Address": "10.214.2.88"}
        for _ in range(2):  # every start attaches both, in order
            assert mr("start", "cc-stopped").returncode == 0
            r = sh(mr, "cc-stopped", "ip -4 addr show eth0; ip -4 addr show eth1; ip route")
            assert r.returncode == 0, r.stderr
            assert "inet 10.214.1." in r.stdout and "inet 10.214.2.88/24" in r.stdout
            assert f"default via {GW_A} dev eth0" in r.stdout
            nets = inspect(mr, "cc-stopped")["NetworkSettings"]["Networks"]
            assert nets[NET_B]["IPAddress"] == "10.214.2.88"
            stop(mr, root, "cc-stopped", cid)
            assert not [e for e in _state(root)["endpoints"].values() if e["container"] == cid]
            assert not any(p.startswith("mrv" + cid[:9]) for p in _ports(BRIDGE_A) | _ports(BRIDGE_B))
        # disconnected while stopped: gone from the record, not attached at the next start
        assert mr("network", "disconnect", NET_B, "cc-stopped").returncode == 0
        assert list(inspect(mr, "cc-stopped")["NetworkSettings"]["Networks"]) == [NET_A]
        err = one_error(mr("network", "disconnect", NET_B, "cc-stopped"))
        assert f"container {cid} is not connected to the network {NET_B}" in err
        assert mr("start", "cc-stopped").returncode == 0
        assert sh(mr, "cc-stopped", "ls /sys/class/net").stdout.split() == ["eth0", "lo"]
    finally:
        mr("rm", "-f", "cc-stopped")


# -- errors ------------------------------------------------------------------------------------------


def test_errors(mr: Cli, root: Path) -> None:
    cid = detach(mr, "cc-err", NET_A)
    try:
        assert "network mrc-nosuch not found" in one_error(mr("network", "connect", "mrc-nosuch", "cc-err"))
        assert "no such container: cc-nosuch" in one_error(mr("network", "connect", NET_B, "cc-nosuch"))
        assert (f"endpoint with name cc-err already exists in network {NET_A}"
                in one_error(mr("network", "connect", NET_A, "cc-err")))
        assert (f"container {cid} is not connected to network {NET_B}"
                in one_error(mr("network", "disconnect", NET_B, "cc-err")))
        assert "no configured subnet or ip-range contain the IP address 10.214.9.9" in one_error(
            mr("network", "connect", "--ip", "10.214.9.9", NET_B, "cc-err"))
        assert "invalid IPv4 address: nonsense" in one_error(
            mr("network", "connect", "--ip", "nonsense", NET_B, "cc-err"))
        assert mr("network", "connect", "--ip", "10.214.2.66", NET_B, "cc-err").returncode == 0
        detach(mr, "cc-err2", NET_A)
        assert "Address already in use: 10.214.2.66" in one_error(
            mr("network", "connect", "--ip", "10.214.2.66", NET_B, "cc-err2"))
        assert "Address already in use" in one_error(
            mr("network", "connect", "--ip", GW_B, NET_B, "cc-err2"))
        assert "user specified IP address is supported on user defined networks only" in one_error(
            mr("network", "connect", "--ip", "10.214.100.9", "bridge", "cc-err2"))
        assert "network-scoped alias is supported only" in one_error(
            mr("network", "connect", "--alias", "x", "bridge", "cc-err2"))
        assert "invalid --alias" in one_error(mr("network", "connect", "--alias", "a b", NET_B, "cc-err2"))
        assert ("container cannot be disconnected from host network or connected to host network"
                in one_error(mr("network", "connect", "host", "cc-err")))
        # the failures changed nothing
        assert set(inspect(mr, "cc-err2")["NetworkSettings"]["Networks"]) == {NET_A}
        for mode in ("host", "none"):
            r = mr("run", "--pull", "never", "--name", f"cc-{mode}", "--network", mode, "busybox", "true")
            assert r.returncode == 0, r.stderr
        assert ("container sharing network namespace with another container or host cannot be "
                "connected to any other network") in one_error(mr("network", "connect", NET_A, "cc-host"))
        assert ("container cannot be disconnected from host network or connected to host network"
                in one_error(mr("network", "disconnect", "host", "cc-host")))
        assert ("container cannot be connected to multiple networks with one of the networks in "
                "private (none) mode") in one_error(mr("network", "connect", NET_A, "cc-none"))
    finally:
        mr("rm", "-f", "cc-err", "cc-err2", "cc-host", "cc-none")


# -- nothing left behind ----------------------------------------------------------------------------


def test_rm_f_releases_everything_connect_added(mr: Cli, root: Path) -> None:
    mr("run", "--rm", "--pull", "never", "busybox", "true")  # the default bridge exists from here
    links, rules, addrs = _links(), _nft_rules(root), _host_addrs()
    cid = detach(mr, "cc-leak", NET_A)
    try:
        assert mr("network", "connect", NET_B, "cc-leak").returncode == 0
        assert mr("network", "connect", "bridge", "cc-leak").returncode == 0
        r = sh(mr, "cc-leak", "ls /sys/class/net")
        assert r.stdout.split() == ["eth0", "eth1", "eth2", "lo"]
        assert len(_links() - links) == 3
    finally:
        assert mr("rm", "-f", "cc-leak").returncode == 0
    wait_for(lambda: _links() == links, 5)  # a namespace's veths go asynchronously
    assert not [e for e in _state(root)["endpoints"].values() if e["container"] == cid]
    assert _nft_rules(root) == rules and _host_addrs() == addrs
    assert not os.path.exists(root / "containers" / cid)


# -- the pure parts -------------------------------------------------------------------------------


def test_veth_names_are_unique_and_fit_ifnamsiz() -> None:
    from minirun.network.attach import veth_name

    cid = "0123456789ab" + "c" * 52
    names = [veth_name(cid, f"eth{n}") for n in range(100)]
    assert names[0] == "mrv0123456789ab" and names[1] == "mrv0123456789n1"
    assert len(set(names)) == 100 and all(len(n) <= 15 for n in names)
    # ethN's name has an 'n' where an ID has hex: never another container's eth0
    assert all("n" in n[3:] for n in names[1:])


def test_requested_ip_checks() -> None:
    from minirun.errors import MinirunError
    from minirun.network.ipam import check_requested_ip

    assert check_requested_ip("10.214.2.7", SUBNET_B, GW_B) == "10.214.2.7"
    for bad, msg in (("10.214.3.7", "no configured subnet"), ("::1", "invalid IPv4"),
                     ("0.0.0.0", "invalid IPv4"), ("10.214.2.255", "broadcast"),
                     ("10.214.2.0", "network or broadcast"), (GW_B, "Address already in use")):
        with pytest.raises(MinirunError, match=msg):
            check_requested_ip(bad, SUBNET_B, GW_B)
