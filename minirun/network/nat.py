"""IP forwarding, masquerading and bridge isolation, with nftables or iptables.

The rules are a pure function of the store's networks, so they are never patched, only
rewritten whole: with nftables one ``nft -f`` transaction replaces the store's own table
atomically (``table ip minirun``; another store gets ``minirun_<hash>``); with iptables
the store's own chains are flushed and refilled. Reconciling after a crash is then just
"apply again", and removing the last network deletes the table (or chains).

    forward      iifname <bridge A> oifname { <bridge B>, ... } drop
                 (isolation, like Docker's DOCKER-ISOLATION chains: containers on
                 different networks cannot reach each other through the host. With
                 br_netfilter loaded, traffic inside one bridge passes this hook too,
                 with iif = oif, so it is not matched.)
    postrouting  ip saddr <subnet> oifname != <bridge> masquerade

An nftables ``drop`` is final whatever other tables say; an ``accept`` is not, so on a
host whose own FORWARD policy is DROP (a Docker host), outbound container traffic also
needs that host's rules to allow it (not done here: tests never send traffic out).
Published ports use a userland proxy (see ports.py), so no DNAT rules are needed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

from minirun.errors import NetworkError
from minirun.network.config import Network

_NFT = ("/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft")
_IPT = ("/usr/sbin/iptables", "/sbin/iptables", "/usr/bin/iptables")


def _which(paths: Sequence[str]) -> str | None:
    return next((p for p in paths if os.access(p, os.X_OK)), None)


def backend() -> str:
    """``nft`` when the host has it (iptables-nft hosts included), else ``iptables``;
    ``MINIRUN_FIREWALL=nft|iptables|none`` overrides."""
    forced = os.environ.get("MINIRUN_FIREWALL")
    if forced in ("nft", "iptables", "none"):
        return forced
    if _which(_NFT):
        return "nft"
    if _which(_IPT):
        return "iptables"
    return "none"


def table_name(store_root: str) -> str:
    """``minirun`` for the default store, ``minirun_<8 hex>`` for any other."""
    root = os.path.realpath(store_root)
    if root == "/var/lib/minirun":
        return "minirun"
    return "minirun_" + hashlib.sha256(root.encode()).hexdigest()[:8]


def nft_script(table: str, nets: Sequence[Network]) -> str:
    """Delete and recreate the table in one transaction (``table`` first, so the delete
    never fails on a host where it does not exist yet)."""
    out = [f"table ip {table}", f"delete table ip {table}"]
    if not nets:
        return "\n".join(out) + "\n"
    out += [f"table ip {table} {{", "  chain forward {",
            "    type filter hook forward priority filter; policy accept;"]
    bridges = [n.bridge for n in nets]
    for n in nets:
        others = [f'"{b}"' for b in bridges if b != n.bridge]
        if others:
            out.append(f'    iifname "{n.bridge}" oifname {{ {", ".join(others)} }} drop')
    out += ["  }", "  chain postrouting {",
            "    type nat hook postrouting priority srcnat; policy accept;"]
    for n in nets:
        out.append(f'    ip saddr {n.subnet} oifname != "{n.bridge}" masquerade')
    out += ["  }", "}"]
    return "\n".join(out) + "\n"


def _run(cmd: list[str], input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        p = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=30)
    except OSError as e:
        raise NetworkError(f"cannot run {cmd[0]}: {e.strerror}") from None
    if check and p.returncode != 0:
        msg = (p.stderr or p.stdout).strip().splitlines()
        raise NetworkError(f"{' '.join(cmd[:3])} failed: {msg[-1] if msg else p.returncode}")
    return p


def _ipt_chains(table: str) -> tuple[str, str]:
    tag = table.upper().replace("_", "-")
    return f"{tag}-FWD", f"{tag}-NAT"


def apply(kind: str, table: str, nets: Sequence[Network]) -> None:
    """Make the firewall hold exactly the rules for ``nets`` (none: remove ours)."""
    if kind == "nft":
        _run([_which(_NFT) or "nft", "-f", "-"], input=nft_script(table, nets))
    elif kind == "iptables":
        _iptables(table, nets)


def _iptables(table: str, nets: Sequence[Network]) -> None:
    ipt = _which(_IPT) or "iptables"
    fwd, nat = _ipt_chains(table)
    jumps = (("filter", "FORWARD", fwd), ("nat", "POSTROUTING", nat))
    if not nets:
        for t, parent, chain in jumps:
            while _run([ipt, "-w", "-t", t, "-D", parent, "-j", chain], check=False).returncode == 0:
                pass
            _run([ipt, "-w", "-t", t, "-F", chain], check=False)
            _run([ipt, "-w", "-t", t, "-X", chain], check=False)
        return
    for t, parent, chain in jumps:
        _run([ipt, "-w", "-t", t, "-N", chain], check=False)  # exists already: fine
        _run([ipt, "-w", "-t", t, "-F", chain])
        if _run([ipt, "-w", "-t", t, "-C", parent, "-j", chain], check=False).returncode != 0:
            _run([ipt, "-w", "-t", t, "-I", parent, "1", "-j", chain])
    for n in nets:
        for other in nets:
            if other.bridge != n.bridge:
                _run([ipt, "-w", "-t", "filter", "-A", fwd, "-i", n.bridge, "-o", other.bridge, "-j", "DROP"])
        _run([ipt, "-w", "-t", "nat", "-A", nat, "-s", n.subnet, "!", "-o", n.bridge, "-j", "MASQUERADE"])


def installed(kind: str, table: str) -> bool:
    """Are our rules there at all? (A reboot or a ``nft flush ruleset`` drops them.)"""
    if kind == "nft":
        return _run([_which(_NFT) or "nft", "list", "table", "ip", table], check=False).returncode == 0
    if kind == "iptables":
        fwd, _ = _ipt_chains(table)
        return _run([_which(_IPT) or "iptables", "-w", "-S", fwd], check=False).returncode == 0
    return True


def installed_kind(table: str) -> str | None:
    """The backend ``table`` is installed with, if any (nft first)."""
    for kind in ("nft", "iptables"):
        if (_which(_NFT) if kind == "nft" else _which(_IPT)) and installed(kind, table):
            return kind
    return None


def others_installed(kind: str, table: str) -> bool:
    """Does another store on this host still have minirun rules?"""
    if kind == "nft":
        out = _run([_which(_NFT) or "nft", "list", "tables"], check=False).stdout.split()
        return any(w.startswith("minirun") and w != table for w in out)
    if kind == "iptables":
        fwd, _ = _ipt_chains(table)
        out = _run([_which(_IPT) or "iptables", "-w", "-S"], check=False).stdout.split()
        return any(w.startswith("MINIRUN") and w.endswith("-FWD") and w != fwd for w in out)
    return False


IP_FORWARD = "/proc/sys/net/ipv4/ip_forward"
# The host's own value, kept host-wide and per boot (like the sysctl itself) by the first
# minirun store that turned forwarding on; the last store to remove its rules restores it.
SAVED_FORWARD = "/run/minirun/ip_forward.orig"


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def _write_forward(value: str) -> None:
    try:
        with open(IP_FORWARD, "w") as f:
            f.write(value)
    except OSError as e:
        raise NetworkError(f"cannot set net.ipv4.ip_forward: {e.strerror}") from None


def host_lock() -> contextlib.AbstractContextManager[None]:
    """Host-wide (all stores): "turn forwarding on" and "am I the last one? then restore"
    must not interleave between two stores."""
    from minirun.image.store import file_lock

    os.makedirs(os.path.dirname(SAVED_FORWARD), mode=0o700, exist_ok=True)
    return file_lock(Path(os.path.dirname(SAVED_FORWARD)) / "lock")


def enable_ip_forward() -> None:
    current = _read(IP_FORWARD)
    if current == "1":
        return
    os.makedirs(os.path.dirname(SAVED_FORWARD), mode=0o700, exist_ok=True)
    if not os.path.exists(SAVED_FORWARD):
        with open(SAVED_FORWARD, "w") as f:
            f.write(current or "0")
    _write_forward("1")


def restore_ip_forward() -> None:
    saved = _read(SAVED_FORWARD)
    if saved in ("0", "1"):
        _write_forward(saved)
    try:
        os.unlink(SAVED_FORWARD)
    except FileNotFoundError:
        pass
