"""The soak: many sequential container runs of every kind, then proof that nothing
leaked. `make soak` runs 1000; tests/integration/test_soak.py a short version in CI.

    .venv/bin/python tests/soak.py [--runs 1000]

Each round is one of: `run --rm --network none`, `run --rm` on the default bridge, on a
user network, with `-p` (and a request to the published port), `run -d` + `exec` +
`stop` + `rm`. Before and after, it counts what a leak would leave: network links,
IPv4 addresses, routes, nftables rules, mounts, minirun cgroup dirs, processes, the
open fds of processes minirun starts (shims, port proxies), and entries under the store
root. It prints both counts and returns them; any difference is a leak.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MINIRUN = str(Path(sys.executable).parent / "minirun")
SOAK_NET, SOAK_SUBNET = "soak-net", "10.213.240.0/24"
PORT = 18190


def _lines(cmd: list[str]) -> int:
    out = subprocess.run(cmd, capture_output=True, text=True).stdout
    return len([ln for ln in out.splitlines() if ln.strip()])


def _cgroup_dirs() -> int:
    n = 0
    for base in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
        for ctrl in os.listdir(base) if os.path.isdir(base) else []:
            d = os.path.join(base, ctrl, "minirun")
            if os.path.isdir(d):
                n += sum(len(dirs) for _, dirs, _ in os.walk(d))
        d = os.path.join(base, "minirun")
        if os.path.isdir(d) and base.endswith("unified"):
            n += sum(len(dirs) for _, dirs, _ in os.walk(d))
    return n


def _helper_procs() -> list[int]:
    """Processes minirun leaves running on purpose (shims, port proxies)."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if comm == "minirun-shim" or b"minirun/network/proxy" in cmd or b"minirun.network.proxy" in cmd:
            out.append(int(pid))
    return out


def _user_processes() -> int:
    """Processes with a command line (kernel threads come and go on their own)."""
    n = 0
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                n += bool(Path(f"/proc/{pid}/cmdline").read_bytes())
            except OSError:
                pass
    return n


def _fds(pids: list[int]) -> int:
    n = 0
    for pid in pids:
        with_fds = f"/proc/{pid}/fd"
        try:
            n += len(os.listdir(with_fds))
        except OSError:
            pass
    return n


def _store_entries(root: Path) -> int:
    n = 0
    for sub in ("containers", "runtime", "names", "pins", "tmp"):
        d = root / sub
        n += len(os.listdir(d)) if d.is_dir() else 0
    return n


def counts(root: Path) -> dict[str, int]:
    helpers = _helper_procs()
    return {
        "links": len(os.listdir("/sys/class/net")),
        "addresses": _lines(["ip", "-4", "-o", "addr", "show"]),
        "routes": _lines(["ip", "route", "show", "table", "all"]),
        "nft rules": _lines(["nft", "list", "ruleset"]) if shutil.which("nft") else 0,
        "mounts": _lines(["cat", "/proc/self/mountinfo"]),
        "cgroup dirs": _cgroup_dirs(),
        "processes": _user_processes(),
        "helper processes": len(helpers),
        "helper fds": _fds(helpers),
        "store entries": _store_entries(root),
    }


def _mr(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MINIRUN_ROOT": str(root)}
    r = subprocess.run([MINIRUN, *args], env=env, capture_output=True, text=True, timeout=60)
    if check and r.returncode != 0:
        raise AssertionError(f"minirun {' '.join(args)}: exit {r.returncode}: {r.stderr}")
    return r


def _fetch(port: int) -> bytes:
    """What the container's server sends; retried while it is not listening yet (the
    port proxy accepts at once and closes when the container refuses)."""
    deadline = time.monotonic() + 5
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                data = s.recv(64)
                if data:
                    return data
        except OSError:
            pass
        if time.monotonic() > deadline:
            return b""
        time.sleep(0.02)


def _rounds(root: Path) -> list[Callable[[int], None]]:
    def none(_i: int) -> None:
        assert _mr(root, "run", "--rm", "--network", "none", "busybox", "true").returncode == 0

    def bridge(_i: int) -> None:
        out = _mr(root, "run", "--rm", "busybox", "sh", "-c", "ip -4 addr show eth0").stdout
        assert "inet " in out

    def user_net(_i: int) -> None:
        _mr(root, "run", "--rm", "--network", SOAK_NET, "busybox", "true")

    def publish(i: int) -> None:
        port = PORT + i % 5
        name = f"soak-p{i}"
        _mr(root, "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:80", "busybox", "sh",
            "-c", "echo hi | nc -l -p 80")  # fmt: skip
        try:
            assert _fetch(port).startswith(b"hi")
        finally:
            _mr(root, "rm", "-f", name)

    def detached_exec(i: int) -> None:
        name = f"soak-d{i}"
        _mr(root, "run", "-d", "--name", name, "--network", "none", "busybox", "sleep", "60")
        try:
            assert _mr(root, "exec", name, "echo", "in").stdout == "in\n"
            _mr(root, "stop", "-t", "1", name)
        finally:
            _mr(root, "rm", "-f", name)

    return [none, bridge, user_net, publish, detached_exec]


def soak(root: Path, runs: int, say: Callable[[str], None] = lambda _s: None) -> tuple[dict[str, int], dict[str, int]]:
    """``runs`` rounds in ``root`` (a store with busybox loaded); (before, after)."""
    rounds = _rounds(root)
    # one round of each kind first: the bridges come up on first use (with their routes
    # and rules), so counting starts from that steady state
    _mr(root, "network", "create", "--subnet", SOAK_SUBNET, SOAK_NET)
    for i, r in enumerate(rounds):
        r(i)
    before = counts(root)
    t = time.monotonic()
    for i in range(runs):
        rounds[i % len(rounds)](i)
        if (i + 1) % 100 == 0:
            say(f"  {i + 1} runs, {time.monotonic() - t:.0f} s")
    time.sleep(0.2)
    after = counts(root)
    return before, after


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=1000)
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    from images.build import build_all

    base = Path(tempfile.mkdtemp(prefix="minirun-soak-"))
    root = base / "store"
    try:
        layouts = build_all(base / "layouts")
        busybox = next(p for p in layouts if p.name == "busybox")
        _mr(root, "load", "-q", "-i", str(busybox))
        t = time.monotonic()
        before, after = soak(root, args.runs, print)
        print(f"{args.runs} runs in {time.monotonic() - t:.0f} s")
        print(f"{'':<18} {'before':>8} {'after':>8}")
        for k in before:
            flag = "" if before[k] == after[k] else "   <-- changed"
            print(f"{k:<18} {before[k]:>8} {after[k]:>8}{flag}")
        leaks = {k for k in before if before[k] != after[k]}
        print("leaks:", ", ".join(sorted(leaks)) or "none")
        sys.exit(1 if leaks else 0)
    finally:
        _mr(root, "network", "prune", "-f", check=False)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
