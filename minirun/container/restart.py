"""``--restart no|on-failure[:N]|always|unless-stopped``, kept without a daemon.

minirun has no daemon: whoever sees a container end decides whether it runs again. For a
detached container that is its ``_cleanup`` (the process minirun-shim becomes once it
has recorded the exit); for a foreground ``run`` it is a small process forked off once
the attached run ended (``run`` itself returns the first exit status, as Docker's CLI
does). That process, the container's *restarter*:

1. decides with Docker's rules (moby's restartmanager): ``always`` and
   ``unless-stopped`` restart any exit, ``on-failure`` a non-zero one while fewer than N
   restarts were made; nothing restarts after the user stopped it (``stop``, ``kill``
   with SIGKILL or the stop signal, ``rm -f``);
2. waits Docker's back-off: 100 ms, doubled at each restart up to 1 minute, back to
   100 ms when the run lasted 10 s or more. Meanwhile the container is ``restarting``
   (``ps``: ``Restarting (1) 2 seconds ago``), derived from ``containers/<id>/restarting``
   (the restarter's pid and start time: a dead restarter restarts nothing);
3. starts it again (``lifecycle.start_detached``: a new monitor, a new shim), counting
   ``RestartCount`` in ``containers/<id>/restart.json``, then exits.

Files in the container dir: ``restart.stopped`` (the run the user stopped: its
supervisor's pid and start time), ``restarting``, ``restart.json`` and ``restart.lock``.
``stop``/``rm -f`` write ``restart.stopped`` first, then wait for a restarter named in
``restarting`` to be gone, so a pending restart is cancelled and a restart already under
way has finished (its new run is then what they stop). A restarter writes
``restarting`` first, then reads ``restart.stopped``; the last check and the start hold
``restart.lock``, which a user's ``start``/``restart`` (:func:`manual_start`) holds too, so
two starts never race. A user's start clears the mark and resets RestartCount, as
Docker's start does.

Nothing runs after a reboot (no daemon restores ``always`` containers at boot).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from minirun.container.records import ContainerRecord, Containers, process_start_time
from minirun.container.runflags import RestartPolicy, parse_restart
from minirun.errors import ContainerError, MinirunError

if TYPE_CHECKING:
    from minirun.image.store import Store

BACKOFF_START_NS = 100_000_000  # Docker: 100 ms ...
BACKOFF_MAX_NS = 60_000_000_000  # ... doubled up to 1 minute
RESET_AFTER_S = 10.0  # a run this long resets the back-off
POLL_S = 0.05  # how often a waiting restarter looks for a cancel

STOPPED, PENDING, STATE, LOCK = "restart.stopped", "restarting", "restart.json", "restart.lock"


@dataclass
class RestartState:
    """``containers/<id>/restart.json``: what outlives each restarter."""

    RestartCount: int = 0
    Delay: int = 0  # ns: the last back-off; 0 = none yet


def policy(rec: ContainerRecord) -> RestartPolicy:
    try:
        return parse_restart(rec.options.restart or "no")
    except MinirunError:
        return RestartPolicy()


def has_policy(rec: ContainerRecord) -> bool:
    return (rec.options.restart or "no") != "no"


def run_id(rec: ContainerRecord) -> str:
    """Which run of the container this record describes: its supervisor (the shim, or a
    foreground minirun), which is new at every start."""
    return f"{rec.supervisor_pid}:{rec.supervisor_start}"


def _own_run() -> str:
    return f"{os.getpid()}:{process_start_time(os.getpid())}"


def _read(containers: Containers, cid: str, name: str) -> str | None:
    try:
        with open(containers.dir(cid) / name) as f:
            return f.read()
    except OSError:
        return None


def _write(containers: Containers, cid: str, name: str, text: str) -> None:
    path = containers.dir(cid) / name
    tmp = path.with_name(f".{name}.{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def load_state(containers: Containers, cid: str) -> RestartState:
    text = _read(containers, cid, STATE)
    try:
        d = json.loads(text) if text else {}
        return RestartState(int(d.get("RestartCount", 0)), int(d.get("Delay", 0)))
    except (ValueError, TypeError, AttributeError):
        return RestartState()


def restart_count(containers: Containers, rec: ContainerRecord) -> int:
    """inspect's RestartCount: the restarts the policy made since the user's last start."""
    return load_state(containers, rec.id).RestartCount if has_policy(rec) else 0


def _pending(containers: Containers, cid: str) -> tuple[int, float] | None:
    """(pid, exit time) of a live restarter waiting to start the container again."""
    text = _read(containers, cid, PENDING)
    if not text:
        return None
    try:
        d = json.loads(text)
        pid, start = int(d["pid"]), str(d["start"])
    except (ValueError, KeyError, TypeError):
        return None
    if pid <= 0 or process_start_time(pid) != start:
        return None
    return pid, float(d.get("since", 0.0))


def pending_in(containers: Containers, cid: str) -> bool:
    """Docker's State.Restarting (set on records by ``Containers.refresh``): exited, and a
    restarter is waiting to start it again."""
    return _pending(containers, cid) is not None


@contextlib.contextmanager
def _lock(containers: Containers, cid: str) -> Iterator[bool]:
    """The container's restart lock; yields False when the container is gone."""
    import fcntl

    try:
        fd = os.open(containers.dir(cid) / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except (FileNotFoundError, NotADirectoryError):
        yield False
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield containers.dir(cid).is_dir()
    finally:
        os.close(fd)


# --- the user's side --------------------------------------------------------------------------


def mark_stopped(store: Store, rec: ContainerRecord) -> None:
    """The user stopped (or killed) this run: it is not restarted when it ends."""
    if has_policy(rec):
        with contextlib.suppress(OSError):
            _write(Containers(store), rec.id, STOPPED, run_id(rec))


def cancel(store: Store, rec: ContainerRecord, timeout: float = 15.0) -> ContainerRecord:
    """Before ``stop``/``rm``: no restart of the current run, and none pending. Waits for a
    restarter already at work; returns the record as it is then (a run the restarter
    started meanwhile is the one to stop)."""
    if not has_policy(rec):
        return rec
    containers = Containers(store)
    mark_stopped(store, rec)
    pending = _pending(containers, rec.id)
    if pending is not None:
        deadline = time.monotonic() + timeout
        while _pending(containers, rec.id) is not None and time.monotonic() < deadline:
            time.sleep(0.01)
    try:
        return containers.get(rec.id)
    except MinirunError:
        return rec


def before_remove(store: Store, rec: ContainerRecord, force: bool) -> ContainerRecord:
    """``rm``: a restarting container only with -f (Docker), its pending restart cancelled."""
    if not has_policy(rec):
        return rec
    if not force and _pending(Containers(store), rec.id) is not None:
        raise ContainerError(f"cannot remove container {rec.name}: it is restarting "
                             "(stop it first, or use rm -f)")
    return cancel(store, rec)


@contextlib.contextmanager
def manual_start(store: Store, rec: ContainerRecord) -> Iterator[None]:
    """Around a user's ``start``/``restart``: the policy applies again, RestartCount
    back to 0 (Docker), and no restarter starts the container at the same time."""
    if not has_policy(rec):
        yield
        return
    containers = Containers(store)
    with _lock(containers, rec.id):
        with contextlib.suppress(FileNotFoundError):
            (containers.dir(rec.id) / STOPPED).unlink()
        with contextlib.suppress(OSError):
            _write(containers, rec.id, STATE, json.dumps(asdict(RestartState())))
        yield


# --- the restarter ------------------------------------------------------------------------------


def should_restart(pol: RestartPolicy, exit_code: int, restarts: int, stopped: bool) -> bool:
    """Docker's decision (restartmanager.ShouldRestart), a user's stop cancelling it."""
    if pol.name == "no" or stopped:
        return False
    if pol.name in ("always", "unless-stopped"):
        return True
    if pol.name == "on-failure":
        return exit_code != 0 and (pol.max_retries == 0 or restarts < pol.max_retries)
    return False


def next_delay(previous_ns: int, ran_s: float) -> int:
    """Docker's back-off: 100 ms, doubled each time up to 1 min; reset by a 10 s run."""
    if ran_s >= RESET_AFTER_S or previous_ns <= 0:
        return BACKOFF_START_NS
    return min(previous_ns * 2, BACKOFF_MAX_NS)


def after_exit(store: Store, cid: str, run: str | None = None) -> bool:
    """Called by whoever recorded the end of run ``run`` (default: this process, the
    shim's ``_cleanup``): restart the container if its policy says so, after the
    back-off. True if it was started again."""
    containers = Containers(store)
    run = run or _own_run()
    try:
        rec = containers.get(cid)
    except MinirunError:
        return False
    if not has_policy(rec) or run_id(rec) != run or rec.status != "exited":
        return False
    state = load_state(containers, cid)
    stopped = _read(containers, cid, STOPPED) == run
    if not should_restart(policy(rec), rec.exit_code, state.RestartCount, stopped):
        return False
    delay = next_delay(state.Delay, max(0.0, rec.finished_at - rec.started_at))
    try:
        _write(containers, cid, PENDING, json.dumps(
            {"pid": os.getpid(), "start": process_start_time(os.getpid()), "since": time.time()}))
    except OSError:
        return False  # removed meanwhile
    try:
        return _wait_and_start(store, containers, cid, run, delay)
    finally:
        with contextlib.suppress(OSError):
            (containers.dir(cid) / PENDING).unlink()


def _cancelled(containers: Containers, cid: str, run: str) -> bool:
    return not containers.dir(cid).is_dir() or _read(containers, cid, STOPPED) == run


def _wait_and_start(store: Store, containers: Containers, cid: str, run: str, delay_ns: int) -> bool:
    from minirun.container import lifecycle

    deadline = time.monotonic() + delay_ns / 1e9
    while True:
        if _cancelled(containers, cid, run):
            return False
        left = deadline - time.monotonic()
        if left <= 0:
            break
        time.sleep(min(left, POLL_S))
    with _lock(containers, cid) as present:
        if not present or _cancelled(containers, cid, run):
            return False
        try:
            rec = containers.get(cid)
        except MinirunError:
            return False
        if run_id(rec) != run or rec.alive():
            return False  # the user started it meanwhile
        state = load_state(containers, cid)
        state.RestartCount += 1
        state.Delay = delay_ns
        _write(containers, cid, STATE, json.dumps(asdict(state)))
        try:
            return lifecycle.start_detached(store, rec) is None
        except MinirunError:
            return False


def after_foreground_exit(store: Store, rec: ContainerRecord) -> None:
    """A foreground run ended: Docker's CLI returns its status while the daemon restarts
    the container in the background. Here a detached restarter does."""
    if not has_policy(rec) or rec.status != "exited":
        return
    if not should_restart(policy(rec), rec.exit_code, 0, False):
        return  # (the counts are checked again by the restarter)
    run = run_id(rec)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the restarter, detached from the terminal
        code = 0
        try:
            if os.fork() != 0:
                os._exit(0)
            os.setsid()
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            os.close(null)
            after_exit(store, rec.id, run)
        except BaseException:
            code = 1
        os._exit(code)
    os.waitpid(pid, 0)
