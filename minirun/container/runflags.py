"""The run flags that are each a small language of their own, parsed with Docker's rules
and error messages: --label/--label-file, --ulimit, --device, --sysctl, --restart,
--health-*, --stop-timeout, durations (``1m30s``).

Each parser turns the flag's text into what the record or the OCI spec holds; a bad
value is a :class:`UsageError` naming the flag, so ``run`` and ``create`` exit 125 before
anything is made.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from typing import Any

from minirun.errors import UsageError

# --- labels -----------------------------------------------------------------------------------


def parse_labels(labels: list[str], label_files: list[str]) -> dict[str, str]:
    """--label-file lines first, then --label (a later key wins, as in Docker). ``KEY``
    alone is ``KEY=""``; blank lines and ``#`` comments in a file are skipped."""
    out: dict[str, str] = {}
    for path in label_files:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                lines = f.read().split("\n")
        except OSError as e:
            raise UsageError(f"--label-file {path}: {e.strerror}") from None
        for n, line in enumerate(lines, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            _add_label(out, line, f"--label-file {path} line {n}")
    for item in labels:
        _add_label(out, item, "--label")
    return out


def _add_label(out: dict[str, str], item: str, where: str) -> None:
    key, _, value = item.partition("=")
    if not key.strip():
        raise UsageError(f"invalid label {item!r} in {where}: the key is empty (use KEY=VALUE)")
    out[key] = value


# --- ulimits ----------------------------------------------------------------------------------

ULIMIT_NAMES = ("as", "core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice",
                "nofile", "nproc", "rss", "rtprio", "rttime", "sigpending", "stack")
UNLIMITED = 2**64 - 1  # RLIM_INFINITY, as the OCI spec's uint64 holds it


@dataclass(frozen=True)
class Ulimit:
    name: str
    soft: int
    hard: int

    def to_oci(self) -> dict[str, Any]:
        return {"type": f"RLIMIT_{self.name.upper()}", "soft": self.soft, "hard": self.hard}

    def to_docker(self) -> dict[str, Any]:  # HostConfig.Ulimits
        def shown(v: int) -> int:
            return -1 if v == UNLIMITED else v

        return {"Name": self.name, "Soft": shown(self.soft), "Hard": shown(self.hard)}


def parse_ulimit(text: str) -> Ulimit:
    """``nofile=1024[:2048]`` (soft[:hard]; one value sets both); -1 or ``unlimited`` is
    no limit."""
    name, sep, values = text.partition("=")
    if not sep:
        raise UsageError(f"invalid --ulimit {text!r}: expected NAME=SOFT[:HARD], e.g. nofile=1024:2048")
    if name not in ULIMIT_NAMES:
        raise UsageError(f"invalid --ulimit {text!r}: unknown resource {name!r} "
                         f"(one of {', '.join(ULIMIT_NAMES)})")
    soft_s, _, hard_s = values.partition(":")
    soft = _limit(soft_s, text)
    hard = _limit(hard_s, text) if hard_s else soft
    if soft > hard:
        raise UsageError(f"invalid --ulimit {text!r}: soft limit must be less than or equal "
                         f"to hard limit: {soft_s} > {hard_s}")
    return Ulimit(name, soft, hard)


def _limit(value: str, text: str) -> int:
    if value in ("-1", "unlimited"):
        return UNLIMITED
    if not value.isascii() or not value.isdigit() or len(value) > 19:
        raise UsageError(f"invalid --ulimit {text!r}: {value!r} is not a number (or -1 for unlimited)")
    return int(value)


# --- devices ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Device:
    """One --device: the host node, where it appears, and the cgroup access (rwm)."""

    host: str
    path: str
    kind: str  # c | b
    major: int
    minor: int
    mode: int
    uid: int
    gid: int
    access: str

    def to_oci(self) -> dict[str, Any]:  # linux.devices
        return {"path": self.path, "type": self.kind, "major": self.major, "minor": self.minor,
                "fileMode": self.mode, "uid": self.uid, "gid": self.gid}

    def rule(self) -> dict[str, Any]:  # linux.resources.devices
        return {"allow": True, "type": self.kind, "major": self.major, "minor": self.minor,
                "access": self.access}

    def to_docker(self) -> dict[str, str]:  # HostConfig.Devices
        return {"PathOnHost": self.host, "PathInContainer": self.path, "CgroupPermissions": self.access}


def parse_device(text: str) -> list[Device]:
    """``HOST[:CONTAINER][:PERMS]``: a char or block device of the host (a directory: each
    device below it), PERMS a subset of ``rwm`` (default rwm)."""
    parts = text.split(":")
    access = "rwm"
    if len(parts) > 1 and _is_access(parts[-1]):
        access = parts.pop()
    if len(parts) > 2 or not parts[0]:
        raise UsageError(f"invalid --device {text!r}: expected HOST[:CONTAINER][:PERMISSIONS]")
    host = parts[0]
    path = parts[1] if len(parts) == 2 and parts[1] else host
    for p, what in ((host, "host"), (path, "container")):
        if not p.startswith("/"):
            raise UsageError(f"invalid --device {text!r}: the {what} path {p!r} must be absolute")
    try:
        st = os.stat(host)
    except OSError as e:
        raise UsageError(f"error gathering device information while adding custom device {host!r}: "
                         f"{(e.strerror or str(e)).lower()}") from None
    if stat.S_ISDIR(st.st_mode):
        found = []
        for dirpath, _dirs, files in os.walk(host):
            for name in sorted(files):
                full = os.path.join(dirpath, name)
                try:
                    sub = os.stat(full)
                except OSError:
                    continue
                if stat.S_ISCHR(sub.st_mode) or stat.S_ISBLK(sub.st_mode):
                    found.append(_device(full, path + full[len(host):], sub, access))
        return found
    if not (stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)):
        raise UsageError(f"error gathering device information while adding custom device {host!r}: "
                         "not a device node")
    return [_device(host, path, st, access)]


def _is_access(text: str) -> bool:
    return bool(text) and all(c in "rwm" for c in text) and len(set(text)) == len(text)


def _device(host: str, path: str, st: os.stat_result, access: str) -> Device:
    return Device(host=host, path=path, kind="c" if stat.S_ISCHR(st.st_mode) else "b",
                  major=os.major(st.st_rdev), minor=os.minor(st.st_rdev),
                  mode=stat.S_IMODE(st.st_mode), uid=st.st_uid, gid=st.st_gid, access=access)


# --- sysctls ----------------------------------------------------------------------------------


def parse_sysctls(items: list[str], network: str) -> dict[str, str]:
    """``--sysctl KEY=VALUE``: only the namespaced ones (IPC's kernel.msg*/sem/shm*,
    fs.mqueue.*, and net.* in the container's own network namespace), as Docker allows."""
    from minirun.runtime.config import namespaced_sysctl_problem

    out: dict[str, str] = {}
    namespaces = {"ipc", "uts"} | ({"network"} if network != "host" else set())
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"invalid argument {item!r} for \"--sysctl\" flag: expected KEY=VALUE")
        problem = namespaced_sysctl_problem(key, namespaces)
        if problem:
            raise UsageError(f"invalid --sysctl {item!r}: sysctl {key!r} is not allowed ({problem})")
        out[key] = value
    return out


# --- restart policy ---------------------------------------------------------------------------

RESTART_NAMES = ("no", "always", "unless-stopped", "on-failure")


@dataclass(frozen=True)
class RestartPolicy:
    name: str = "no"
    max_retries: int = 0  # on-failure:N; 0 = no limit

    def to_docker(self) -> dict[str, Any]:  # HostConfig.RestartPolicy
        return {"Name": self.name, "MaximumRetryCount": self.max_retries}


def parse_restart(text: str) -> RestartPolicy:
    """``no | always | unless-stopped | on-failure[:N]``."""
    name, sep, count = text.partition(":")
    if name not in RESTART_NAMES:
        raise UsageError(f"invalid restart policy {text!r}: use no, always, unless-stopped "
                         "or on-failure[:max-retries]")
    if sep:
        if name != "on-failure":
            raise UsageError(f"invalid restart policy {text!r}: maximum retry count can only "
                             "be used with 'on-failure'")
        if not count.isascii() or not count.isdigit() or len(count) > 9:
            raise UsageError(f"invalid restart policy {text!r}: {count!r} is not a retry count")
        return RestartPolicy(name, int(count))
    return RestartPolicy(name)


# --- durations and health checks --------------------------------------------------------------

_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 10**9, "m": 60 * 10**9,
          "h": 3600 * 10**9}
_PART = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ns|us|µs|ms|s|m|h)")


def parse_duration(text: str, flag: str) -> int:
    """A Go duration (``30s``, ``1m30s``, ``500ms``, ``0``) → nanoseconds."""
    if text == "0":
        return 0
    pos, total = 0, 0.0
    while pos < len(text):
        m = _PART.match(text, pos)
        if not m:
            raise UsageError(f"invalid argument {text!r} for \"{flag}\" flag: time: invalid "
                             "duration (e.g. 30s, 1m30s, 500ms)")
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if not text or total > 2**63 - 1:
        raise UsageError(f"invalid argument {text!r} for \"{flag}\" flag: time: invalid duration")
    return int(total)


@dataclass
class HealthFlags:
    """The --health-* flags as given (None: the image's value, or Docker's default)."""

    cmd: str | None = None
    interval: str | None = None
    timeout: str | None = None
    start_period: str | None = None
    retries: int | None = None
    disabled: bool = False  # --no-healthcheck


def healthcheck(flags: HealthFlags, image_check: dict[str, Any] | None) -> dict[str, Any] | None:
    """The container's Config.Healthcheck (Docker's shape: Test, Interval, Timeout,
    StartPeriod in ns, Retries): the image's, with each given flag over it; None when
    there is none. ``--no-healthcheck`` gives ``{"Test": ["NONE"]}``."""
    if flags.disabled:
        if flags.cmd or flags.interval or flags.timeout or flags.start_period or flags.retries:
            raise UsageError("--no-healthcheck conflicts with --health-* options")
        return {"Test": ["NONE"]}
    check = dict(image_check or {})
    if flags.cmd is not None:
        check["Test"] = ["CMD-SHELL", flags.cmd] if flags.cmd else ["NONE"]
    for key, value, flag in (("Interval", flags.interval, "--health-interval"),
                             ("Timeout", flags.timeout, "--health-timeout"),
                             ("StartPeriod", flags.start_period, "--health-start-period")):
        if value is not None:
            ns = parse_duration(value, flag)
            if 0 < ns < 1_000_000:
                raise UsageError(f"{flag} cannot be less than 1ms")
            check[key] = ns
    if flags.retries is not None:
        if flags.retries < 0:
            raise UsageError("--health-retries cannot be negative")
        check["Retries"] = flags.retries
    test = check.get("Test")
    if not test or test == ["NONE"]:
        return {"Test": ["NONE"]} if test == ["NONE"] else None
    return check


def parse_stop_timeout(value: int | None) -> int | None:
    """--stop-timeout seconds (-1: wait for ever, as Docker)."""
    if value is not None and value < -1:
        raise UsageError(f"invalid --stop-timeout {value}: use seconds, or -1 to wait without a limit")
    return value
