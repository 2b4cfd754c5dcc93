"""Networking cost: `minirun run --rm busybox true` with `--network bridge` vs `none`
(median of N), next to `podman run --rm` with its default bridge network and with
`--network none` when podman is installed; then where minirun's bridge time goes.

    .venv/bin/python bench/bench_net.py [--runs 20]

Prints figures; asserts nothing. Uses bench/out/store (as bench_run.py does) with its
default network on a bench-only subnet, and removes the networks it made at the end.
No traffic is sent anywhere: the containers run `true`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_run as br  # noqa: E402

ENV = {**br.ENV, "MINIRUN_DEFAULT_BRIDGE": "mrbench0", "MINIRUN_DEFAULT_SUBNET": "10.214.0.0/24"}


def minirun(network: str, runs: int) -> list[float]:
    return br.timed([br.MINIRUN, "run", "--rm", "--network", network, "busybox", "true"], runs, ENV)


def podman(runs: int) -> dict[str, list[float]] | None:
    had_podman0 = os.path.exists("/sys/class/net/podman0")
    tables = _nft_tables()  # netavark leaves its iptables(-nft) chains behind: remove them after
    out: dict[str, list[float]] = {}
    try:
        with br.scratch_podman() as run:
            if run is None:
                return None
            for net in ("bridge", "none"):
                out[net] = br.timed([*run, "--rm", "--network", net, "busybox", "true"], runs,
                                    os.environ.copy())
        return out
    except subprocess.CalledProcessError as e:
        print(f"  podman: failed ({(e.stderr or b'').decode().strip()[:300]})")
        return out or None
    finally:
        if not had_podman0 and os.path.exists("/sys/class/net/podman0"):
            subprocess.run(["ip", "link", "del", "podman0"], capture_output=True)
        for t in _nft_tables() - tables:
            if not t.split()[-1].startswith("minirun"):
                subprocess.run(["nft", "delete", "table", *t.split()], capture_output=True)


def _nft_tables() -> set[str]:
    """``ip nat``, ``inet foo``...: the host's nftables tables."""
    out = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    return {line.split(None, 1)[1] for line in out.splitlines() if line.startswith("table ")}


def breakdown(runs: int) -> None:
    """Where the bridge time goes, measured in-process (median of ``runs``)."""
    code = r"""
import os, sys, time, json, subprocess
t = time.perf_counter(); import pyroute2.iproute.linux; imp = time.perf_counter() - t
sys.path.insert(0, sys.argv[1])
from minirun.network import netlink
p = subprocess.Popen(["unshare", "-n", "sleep", "30"]); time.sleep(0.2)
br, sub = "mrbench1", "10.214.1"
t = time.perf_counter(); netlink.ensure_bridge(br, sub + ".1", 24); bridge = time.perf_counter() - t
t = time.perf_counter()
netlink.attach_veth(br, "mrvbench0", p.pid, sub + ".2", 24, sub + ".1", "02:42:0a:d6:01:02", 1500)
veth = time.perf_counter() - t
p.kill(); p.wait(); netlink.delete_link("mrvbench0")
t = time.perf_counter(); netlink.delete_link(br); delete = time.perf_counter() - t
print(json.dumps([imp, bridge, veth, delete]))
"""
    import json

    samples = []
    for _ in range(max(3, runs // 4)):
        r = subprocess.run([sys.executable, "-c", code, str(br.REPO)], capture_output=True, text=True)
        if r.returncode != 0:
            print(f"  breakdown failed: {r.stderr.strip()[-300:]}")
            return
        samples.append(json.loads(r.stdout))
    med = [statistics.median(s[i] for s in samples) * 1000 for i in range(4)]
    print(f"  import pyroute2.iproute.linux        {med[0]:6.1f} ms (overlapped with create()"
          " in a thread)")
    print(f"  bridge create + address + up (once)  {med[1]:6.1f} ms")
    print(f"  veth pair + eth0 address/up/route    {med[2]:6.1f} ms")
    print(f"  bridge delete (network rm)           {med[3]:6.1f} ms")
    t = time.perf_counter()
    subprocess.run(["nft", "list", "tables"], capture_output=True)
    print(f"  one `nft` call (rules; only when a network/bridge is made)  {(time.perf_counter() - t) * 1000:.1f} ms")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_net needs root (sudo make bench)")
    br.OUT.mkdir(exist_ok=True)
    br.prepare()
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(br.REPO / "minirun")], capture_output=True)
    try:
        print(f"container start latency by network mode, {args.runs} runs each (lower is better)")
        none = br.report("minirun run --rm --network none busybox true", minirun("none", args.runs))
        bridge = br.report("minirun run --rm --network bridge busybox true", minirun("bridge", args.runs))
        print(f"    bridge costs {bridge - none:+.1f} ms over none")
        peers = podman(args.runs)
        if peers:
            for net, samples in peers.items():
                med = br.report(f"podman run --rm --network {net} busybox true", samples)
                mine = bridge if net == "bridge" else none
                print(f"    minirun is {med / mine:.2f}x faster" if med > mine else
                      f"    minirun is {mine / med:.2f}x slower")
        else:
            print("  podman: not installed or not runnable here")
        print("where minirun's bridge time goes:")
        breakdown(args.runs)
    finally:
        subprocess.run([br.MINIRUN, "network", "prune"], env=ENV, capture_output=True)


if __name__ == "__main__":
    main()
