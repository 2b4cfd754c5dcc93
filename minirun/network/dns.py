"""The container's /etc/hosts and /etc/resolv.conf (host files bind-mounted over them).

Names: on a user-defined network each member's /etc/hosts lists every other member by
name (and short ID). The files are host files bind-mounted into the containers, so when
a member joins or leaves, minirun rewrites every member's file in place (the bind mount
pins the inode: a rename would not be seen). This resolves containers started before
and after, needs no DNS server process, and costs nothing when nobody looks a name up.
The default ``bridge`` network has no name resolution between containers, as in Docker.

DNS servers: the host's resolv.conf; a loopback stub (systemd-resolved's 127.0.0.53) is
unreachable from the container's namespace, so then the upstream servers in
/run/systemd/resolve/resolv.conf are used, as Docker does. ``--dns`` overrides. minirun
never looks anything up itself.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re

from minirun.errors import UsageError

BASE_HOSTS = """127.0.0.1\tlocalhost
::1\tlocalhost ip6-localhost ip6-loopback
fe00::0\tip6-localnet
ff00::0\tip6-mcastprefix
ff02::1\tip6-allnodes
ff02::2\tip6-allrouters
"""

SYSTEMD_RESOLV = "/run/systemd/resolve/resolv.conf"
FALLBACK_DNS = ("8.8.8.8", "8.8.4.4")  # Docker's, when the host has only loopback servers
# An --add-host name: ASCII letters, digits, '.', '-' and '_' (common in container and
# compose names), not starting with '.' or '-'. It becomes one field of an /etc/hosts line,
# so whitespace, '#' and control characters, which would end the field, start a comment or
# inject another line, are refused.
_HOST_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,252}")


def parse_add_host(text: str, gateway: str | None) -> str:
    """``--add-host NAME:IP`` (or NAME=IP; IP ``host-gateway`` = the bridge's address)
    as an /etc/hosts line."""
    sep = "=" if "=" in text else ":"
    name, _, ip = text.partition(sep)
    if not name or not ip:
        raise UsageError(f"invalid --add-host {text!r} (want HOST:IP)")
    if not _HOST_NAME_RE.fullmatch(name):
        raise UsageError(f"invalid host name {name!r} in --add-host {text!r} (at most 253 "
                         "letters, digits, '.', '-' and '_', not starting with '.' or '-')")
    if ip == "host-gateway":
        if gateway is None:
            raise UsageError("--add-host ...:host-gateway needs a bridge network")
        ip = gateway
    ip = ip.strip("[]")
    try:
        ipaddress.ip_address(ip)
    except ValueError:
        raise UsageError(f"invalid IP address in --add-host {text!r}") from None
    return f"{ip}\t{name}"


def check_alias(name: str) -> str:
    """``network connect --alias NAME``: a name other members' /etc/hosts will list."""
    if not _HOST_NAME_RE.fullmatch(name):
        raise UsageError(f"invalid --alias {name!r} (at most 253 letters, digits, '.', '-' and "
                         "'_', not starting with '.' or '-')")
    return name


def hosts(own: str | None, members: list[str], extra: list[str], base: str = BASE_HOSTS) -> str:
    """``own``: "IP\\thostname" of the container itself; ``extra``: --add-host lines;
    ``members``: the other members' lines. The first match wins (glibc and musl), so the
    container's own and --add-host names come before the members'."""
    lines = [base.rstrip("\n")]
    if own:
        lines.append(own)
    lines += extra
    lines += members
    return "\n".join(lines) + "\n"


def rewrite_in_place(path: str, text: str) -> None:
    """Replace a bind-mounted file's contents without replacing its inode."""
    data = text.encode()
    with contextlib.suppress(FileNotFoundError):
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.pwrite(fd, data, 0)
            os.ftruncate(fd, len(data))
        finally:
            os.close(fd)


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _nameservers(text: str) -> list[str]:
    return [w[1] for line in text.splitlines() if len(w := line.split()) >= 2 and w[0] == "nameserver"]


def _loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False


def resolv_conf(dns: list[str], host_network: bool, host_path: str = "/etc/resolv.conf",
                systemd_path: str = SYSTEMD_RESOLV) -> str:
    """The container's resolv.conf: the host's search/options lines with usable servers."""
    text = _read(host_path)
    if not host_network and any(_loopback(ns) for ns in _nameservers(text)):
        upstream = _read(systemd_path)
        if _nameservers(upstream):
            text = upstream
    for ns in dns:
        try:
            ipaddress.ip_address(ns)
        except ValueError:
            raise UsageError(f"invalid --dns {ns!r}: an IP address") from None
    keep = []
    for line in text.splitlines():
        words = line.split()
        if words and words[0] == "nameserver":
            if dns or (not host_network and len(words) >= 2 and _loopback(words[1])):
                continue
        keep.append(line)
    servers = list(dns)
    if not dns and not host_network and not _nameservers("\n".join(keep)):
        servers = list(FALLBACK_DNS)
    keep += [f"nameserver {ns}" for ns in servers]
    return "\n".join(keep).strip("\n") + "\n"
