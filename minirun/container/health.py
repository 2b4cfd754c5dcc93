"""Health checks (``--health-cmd`` / the image's HEALTHCHECK), with Docker's rules
(moby daemon/health.go):

* the test runs every Interval (default 30 s; the first one an Interval after the
  start) through the exec path (the container's namespaces, cgroup, user, seccomp):
  ``CMD-SHELL cmd`` as ``/bin/sh -c cmd``, ``CMD args...`` as given;
* a run longer than Timeout (default 30 s) is killed and fails (ExitCode -1, "Health
  check exceeded timeout (30s)"); exit 0 is a pass, anything else a failure;
* a pass sets ``healthy`` and FailingStreak 0; Retries (default 3) failures in a row set
  ``unhealthy``; failures while still ``starting`` and within StartPeriod do not count;
* each start resets the status to ``starting`` and the streak to 0; Log keeps the last
  5 results {Start, End, ExitCode, Output (4096 bytes at most)}; no probe runs while the
  container is paused; a change of status is a ``health_status: STATUS`` event.

The state is ``containers/<id>/health.json``. Who runs the checks: minirun has no
daemon, and the C shim cannot enter a container (that is the Python runtime's exec), so
a small checker process is started with each run of a container that has a check:
``python -m minirun --root R _health ID PID START`` (double-forked, setsid, stdio on
/dev/null). It sleeps on the init's pidfd between checks, so it ends with the container
(also when it is killed), and never outlives it. Cost: one Python process per
checked container (~20 MiB RSS, most of it shared pages), and a fork per check.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from minirun.container.records import ContainerRecord, Containers, process_start_time

if TYPE_CHECKING:
    from minirun.image.store import Store

HEALTH_FILE = "health.json"
DEFAULT_INTERVAL_NS = 30_000_000_000
DEFAULT_TIMEOUT_NS = 30_000_000_000
DEFAULT_RETRIES = 3
MAX_LOG = 5
MAX_OUTPUT = 4096
STATUSES = ("starting", "healthy", "unhealthy")


@dataclass
class Health:
    """Docker's State.Health."""

    Status: str = "starting"
    FailingStreak: int = 0
    Log: list[dict[str, Any]] = field(default_factory=list)


def active(check: dict[str, Any] | None) -> bool:
    """A check that runs something (not absent, not NONE)."""
    test = (check or {}).get("Test") or []
    return bool(test) and test[0] in ("CMD", "CMD-SHELL") and len(test) > 1


def _path(containers: Containers, cid: str) -> str:
    return str(containers.dir(cid) / HEALTH_FILE)


def load(containers: Containers, cid: str) -> Health | None:
    try:
        with open(_path(containers, cid), "rb") as f:
            d = json.loads(f.read())
        return Health(str(d.get("Status", "starting")), int(d.get("FailingStreak", 0)),
                      list(d.get("Log") or []))
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def current_status(containers: Containers, cid: str) -> str:
    """The status ps shows ("" when no check has a state yet)."""
    h = load(containers, cid)
    return h.Status if h is not None else ""


def filter_status(containers: Containers, rec: ContainerRecord) -> str:
    """``ps --filter health=``: starting | healthy | unhealthy | none."""
    if not active(rec.healthcheck):
        return "none"
    return current_status(containers, rec.id) or "starting"


def _save(containers: Containers, cid: str, h: Health) -> None:
    path = _path(containers, cid)
    tmp = f"{path}.{os.getpid()}"
    try:
        with open(tmp, "w") as f:
            f.write(json.dumps(asdict(h)))
        os.replace(tmp, path)
    except FileNotFoundError:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)  # the container was removed


def _iso(ns: int) -> str:
    from minirun.events import rfc3339_nano

    return rfc3339_nano(ns)


# --- started with the container -----------------------------------------------------------


def spawn(store: Store, rec: ContainerRecord) -> None:
    """At each start of a container with a check: its status back to ``starting``, and a
    checker process for this run. Never raises: a check is not worth a failed start."""
    if not active(rec.healthcheck):
        return
    containers = Containers(store)
    with contextlib.suppress(OSError):
        old = load(containers, rec.id)
        _save(containers, rec.id, Health(Log=old.Log if old else []))
    argv = [sys.executable, "-m", "minirun", "--root", str(store.root), "_health", rec.id,
            str(rec.pid), rec.pid_start]
    try:
        pid = os.fork()
    except OSError:
        return
    if pid == 0:  # pragma: no cover - the intermediate child: fork again, and leave
        try:
            if os.fork() == 0:
                os.setsid()
                null = os.open(os.devnull, os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(null, fd)
                os.closerange(3, 65536)
                signal.pthread_sigmask(signal.SIG_SETMASK, ())
                for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
                    signal.signal(sig, signal.SIG_DFL)
                os.execv(sys.executable, argv)
        finally:
            os._exit(0)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


# --- the checker -----------------------------------------------------------------------------


def _ns(check: dict[str, Any], key: str, default: int) -> int:
    value = int(check.get(key) or 0)
    return value if value > 0 else default


def _go_duration(ns: int) -> str:
    """What Go prints for a time.Duration: 30s, 1.5s, 200ms, 1m0s."""
    if ns % 1_000_000_000 == 0 and ns >= 60_000_000_000:
        m, s = divmod(ns // 1_000_000_000, 60)
        return f"{m // 60}h{m % 60}m{s}s" if m >= 60 else f"{m}m{s}s"
    if ns >= 1_000_000_000:
        return f"{ns / 1e9:g}s"
    if ns >= 1_000_000:
        return f"{ns / 1e6:g}ms"
    return f"{ns / 1e3:g}µs"


def probe(store: Store, rec: ContainerRecord, check: dict[str, Any]) -> dict[str, Any]:
    """Run the test once in the container; Docker's HealthcheckResult."""
    from minirun import runtime as rtmod
    from minirun.container.lifecycle import runtime
    from minirun.runtime.config import parse_process

    containers = Containers(store)
    test = list(check["Test"])
    args = ["/bin/sh", "-c", test[1]] if test[0] == "CMD-SHELL" else test[1:]
    timeout_ns = _ns(check, "Timeout", DEFAULT_TIMEOUT_NS)
    start = time.time_ns()
    out = bytearray()
    truncated = False
    code = -1
    r = w = devnull = -1
    try:
        spec = json.loads((containers.dir(rec.id) / "config.json").read_bytes())
        proc = dict(spec["process"])
        proc["args"], proc["terminal"] = args, False
        proc.pop("consoleSize", None)
        r, w = os.pipe2(os.O_CLOEXEC)
        devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        ex = runtime(store).exec(rec.id, parse_process(proc),
                                 stdio=rtmod.Stdio(stdin=devnull, stdout=w, stderr=w))
        os.close(w)
        w = -1
        os.set_blocking(r, False)
        pidfd = os.pidfd_open(ex.pid)
        deadline = time.monotonic() + timeout_ns / 1e9
        timed_out = False
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    timed_out = True
                    break
                ready = select.select([pidfd, r], [], [], left)[0]
                if r in ready:
                    truncated |= _drain(r, out)
                if pidfd in ready:
                    break
        finally:
            os.close(pidfd)
        if timed_out:
            with contextlib.suppress(ProcessLookupError):
                os.kill(ex.pid, signal.SIGKILL)  # our child, not yet reaped: not reused
            os.waitpid(ex.pid, 0)
            truncated |= _drain(r, out)
            text = _output(out, truncated)
            msg = f"Health check exceeded timeout ({_go_duration(timeout_ns)})"
            return {"Start": _iso(start), "End": _iso(time.time_ns()), "ExitCode": -1,
                    "Output": f"{msg}: {text}" if text else msg}
        _, status = os.waitpid(ex.pid, 0)
        code = os.waitstatus_to_exitcode(status)
        if code < 0:
            code = 128 - code
        truncated |= _drain(r, out)
        output = _output(out, truncated)
    except Exception as e:  # the exec could not start: Docker records the error as output
        code, output = -1, str(e)
    finally:
        for fd in (r, w, devnull):
            if fd >= 0:
                os.close(fd)
    return {"Start": _iso(start), "End": _iso(time.time_ns()), "ExitCode": code, "Output": output}


def _drain(fd: int, out: bytearray) -> bool:
    """Read what is there (non-blocking); True if some was dropped past MAX_OUTPUT."""
    dropped = False
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return dropped
        if not chunk:
            return dropped
        keep = max(0, MAX_OUTPUT - len(out))
        out += chunk[:keep]
        dropped |= len(chunk) > keep


def _output(out: bytearray, truncated: bool) -> str:
    text = out.decode(errors="replace")
    return text + "..." if truncated else text


def record(h: Health, result: dict[str, Any], check: dict[str, Any], started_at: float,
           probe_start_ns: int) -> Health:
    """Docker's handleProbeResult: the new status after one result."""
    retries = int(check.get("Retries") or 0) or DEFAULT_RETRIES
    h.Log = [*h.Log, result][-MAX_LOG:]
    if result["ExitCode"] == 0:
        h.FailingStreak, h.Status = 0, "healthy"
        return h
    counts = True
    if h.Status == "starting":
        start_period = _ns(check, "StartPeriod", 0)
        if probe_start_ns - int(started_at * 1e9) < start_period:
            counts = False
    if counts:
        h.FailingStreak += 1
        if h.FailingStreak >= retries:
            h.Status = "unhealthy"
    return h


def monitor(store: Store, cid: str, pid: int, pid_start: str) -> None:
    """The checker of one run: check every Interval until the container's init ends."""
    from minirun import events
    from minirun.errors import MinirunError

    containers = Containers(store)
    try:
        pidfd = os.pidfd_open(pid)
    except (ProcessLookupError, OSError):
        return
    try:
        if process_start_time(pid) != pid_start:
            return  # that run is over already
        while True:
            try:
                rec = containers.get(cid)
            except MinirunError:
                return
            check = rec.healthcheck or {}
            if not active(check) or rec.pid != pid:
                return
            interval = _ns(check, "Interval", DEFAULT_INTERVAL_NS)
            if select.select([pidfd], [], [], interval / 1e9)[0]:
                return  # the container ended
            try:
                rec = containers.get(cid)
            except MinirunError:
                return
            if rec.pid != pid or not rec.alive():
                return
            if rec.paused():
                continue  # Docker: no probes while paused
            probe_start = time.time_ns()
            result = probe(store, rec, check)
            if select.select([pidfd], [], [], 0)[0]:
                return  # it ended during the probe: that result says nothing
            h = load(containers, cid) or Health()
            before = h.Status
            h = record(h, result, check, rec.started_at, probe_start)
            if not containers.dir(cid).is_dir():
                return
            _save(containers, cid, h)
            if h.Status != before:
                events.container(store, rec, f"health_status: {h.Status}")
    finally:
        os.close(pidfd)


def inspect_health(containers: Containers, rec: ContainerRecord) -> dict[str, Any] | None:
    """inspect's State.Health (None without an active check)."""
    if not active(rec.healthcheck):
        return None
    h = load(containers, rec.id) or Health()
    return asdict(h)
