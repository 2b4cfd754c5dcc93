"""Container records: one directory per container under ``<root>/containers/<id>/``.

::

    container.json   the record below (rewritten atomically on every state change)
    config.json      the OCI runtime spec it runs with
    upper/ work/     the container layer: overlayfs upperdir and its workdir
    rootfs/          the mount point of the merged root, used inside the container's
                     own mount namespace only (empty on the host)
    hosts hostname resolv.conf   bind-mounted over the container's /etc files

The state shown to users is derived, not trusted: a record that says "running"
whose process is gone (minirun was killed, the machine rebooted) reads as exited.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from minirun.container.resources import Resources, engine_path
from minirun.container.spec import RunOptions
from minirun.errors import (
    ContainerError,
    ContainerNotFound,
    ImageNotFound,
    MinirunError,
    NameInUse,
    UsageError,
)
from minirun.humanize import ago, human_duration
from minirun.image.store import Store

_ADJECTIVES = ("brave", "calm", "eager", "fond", "gentle", "happy", "jolly", "keen", "lucid",
               "merry", "nimble", "proud", "quiet", "sharp", "tender", "vivid", "witty", "zen")
_NOUNS = ("turing", "hopper", "lovelace", "ritchie", "thompson", "torvalds", "knuth", "dijkstra",
          "liskov", "hamilton", "kernighan", "pike", "wirth", "backus", "mccarthy", "allen")


@dataclass
class ContainerRecord:
    """One container (containers/<id>/container.json): what ps, inspect and start read."""

    id: str
    name: str
    image: str  # as the user named it (ps shows this)
    image_id: str
    args: list[str]
    created: float
    lowerdirs: list[str]  # layer dirs (short links), topmost first
    diff_ids: list[str]  # the same layers, topmost first
    auto_remove: bool = False
    no_pivot: bool = False
    status: str = "created"  # created | running | exited
    pid: int = 0
    pid_start: str = ""  # the process's start time in /proc/PID/stat: tells a reused pid apart
    started_at: float = 0.0
    finished_at: float = 0.0
    exit_code: int = 0
    options: RunOptions = field(default_factory=RunOptions)  # the run flags, as given
    resources: Resources = field(default_factory=Resources)  # the limits, as applied
    stop_signal: str | None = None  # the image's StopSignal
    network: dict[str, Any] = field(default_factory=dict)  # network/attach's request record
    # the process supervising the current run (the shim, or a foreground minirun) and its
    # start time: while it lives, it is the one to record the exit status
    supervisor_pid: int = 0
    supervisor_start: str = ""
    oom_killed: bool = False
    # Config.Healthcheck: the image's HEALTHCHECK with the --health-* flags over it
    healthcheck: dict[str, Any] | None = None
    # derived, never saved: a restarter waits to start it again (container/restart.py)
    restarting: bool = field(default=False, repr=False)
    # derived, never saved: the health check's status (containers/<id>/health.json)
    health: str = field(default="", repr=False)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ContainerRecord:
        extra = d.pop("extra", None) or {}  # records written before the typed fields
        if extra:
            d.setdefault("options", extra.get("options") or {})
            d.setdefault("resources", extra.get("resources") or {})
            d.setdefault("stop_signal", extra.get("stop_signal"))
            d.setdefault("network", extra.get("network") or {})
            d.setdefault("oom_killed", bool(extra.get("oom_killed")))
            shim = extra.get("shim") or [0, ""]
            d.setdefault("supervisor_pid", shim[0])
            d.setdefault("supervisor_start", shim[1])
        d["options"] = RunOptions(**(d.get("options") or {}))
        d["resources"] = Resources(**(d.get("resources") or {}))
        return cls(**d)

    def alive(self) -> bool:
        return self.status == "running" and self.pid > 0 and _start_time(self.pid) == self.pid_start

    def paused(self) -> bool:
        """Frozen by ``pause`` (its cgroup's freezer: v1 freezer.state, v2 cgroup.freeze),
        derived like the rest of the state. Docker's State.Paused; still "running"."""
        if not self.alive():
            return False
        from minirun.runtime import cgroups

        cg = cgroups.Cgroup.open(engine_path(self.id))
        return bool(cg is not None and cg.frozen())

    def effective_status(self) -> str:
        if self.status == "running" and not self.alive():
            return "exited"
        if self.restarting and self.status == "exited":
            return "restarting"
        return self.status

    def status_text(self, now: float | None = None) -> str:
        """``Up 3 minutes`` / ``Exited (0) 5 seconds ago`` / ``Created``, as ``docker ps``.
        Call :meth:`Containers.refresh` first so an unobserved exit has its code."""
        now = now if now is not None else time.time()
        st = self.effective_status()
        if st == "running":
            up = f"Up {human_duration(now - self.started_at)}"
            if self.paused():
                return f"{up} (Paused)"
            # Docker: "(healthy)", "(unhealthy)", "(health: starting)"
            if self.health:
                return f"{up} (health: starting)" if self.health == "starting" else f"{up} ({self.health})"
            return up
        if st == "restarting":
            return f"Restarting ({self.exit_code}) {ago(self.finished_at or now, now)}"
        if st == "exited":
            return f"Exited ({self.exit_code}) {ago(self.finished_at or now, now)}"
        return "Created"


def process_start_time(pid: int) -> str:
    """The runtime's start-time reading (tells a reused pid apart; "" when gone)."""
    from minirun.runtime.state import start_time

    return start_time(pid)


_start_time = process_start_time


_OPTION_DEFAULTS: dict[str, Any] = {}


def _option_defaults() -> dict[str, Any]:
    if not _OPTION_DEFAULTS:
        _OPTION_DEFAULTS.update(asdict(RunOptions()))
    return _OPTION_DEFAULTS


class Containers:
    """The container records of one store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.root = store.containers
        self._root = str(self.root)
        # names/<name> -> <id> (a symlink: made atomically, and only once): a name is
        # found and claimed without reading every record, so `run` and `inspect NAME`
        # cost the same with 1000 containers as with none
        self._names = str(store.root / "names")

    def dir(self, cid: str) -> Path:
        return self.root / cid

    def _path(self, cid: str) -> Path:
        return self.root / cid / "container.json"

    def _load(self, cid: str) -> ContainerRecord | None:
        try:
            # plain strings, not Path objects: `ps` loads every record
            with open(f"{self._root}/{cid}/container.json", "rb") as f:
                d = json.loads(f.read())
            return ContainerRecord.from_json(d)
        except (FileNotFoundError, NotADirectoryError, ValueError, TypeError):
            return None

    def save(self, rec: ContainerRecord) -> None:
        """Write then rename, without fsync: the record is rewritten at every state change
        on the start-up path, and after a power loss the state is re-derived anyway."""
        if rec.name:
            self._keep_renamed(rec)
        path = self._path(rec.id)
        tmp = path.with_name(f".container.json.{os.getpid()}")
        d = asdict(rec)
        # only the flags that differ from their defaults: every `ps` parses every record
        d["options"] = {k: v for k, v in d["options"].items() if _option_defaults().get(k, k) != v}
        d.pop("restarting", None)
        d.pop("health", None)
        try:
            tmp.write_text(json.dumps(d))
            os.replace(tmp, path)
        except FileNotFoundError:
            # its dir is gone: an `rm -f` removed the container while its runner was
            # recording the exit; there is nothing left to record it in
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def _keep_renamed(self, rec: ContainerRecord) -> None:
        """A writer that loaded the record before a ``rename`` (a shim's _cleanup, a start)
        must not write the old name back: when names/<its name> is not this container's
        (one readlink, the usual case), take the name the record on disk has now."""
        try:
            if os.readlink(f"{self._names}/{rec.name}") == rec.id:
                return
        except OSError:
            pass
        disk = self._load(rec.id)
        if disk is None or disk.name == rec.name or not disk.name:
            return
        with contextlib.suppress(OSError):
            if os.readlink(f"{self._names}/{disk.name}") == rec.id:
                rec.name = disk.name

    def rename(self, rec: ContainerRecord, new_name: str) -> ContainerRecord:
        """``rename``: claim the new name, rewrite the record, release the old name — in
        that order, under the store lock (``run --name`` takes it too), so the container
        is never without a name and nobody can take the new one meanwhile."""
        new = new_name[1:] if new_name.startswith("/") else new_name  # Docker: "/name"
        if not new:
            raise UsageError("the new name may not be empty")
        _check_name(new)
        with self.store.lock():
            self._ensure_names()
            os.makedirs(self._names, mode=0o700, exist_ok=True)
            cur = self._load(rec.id)
            if cur is None:
                raise ContainerNotFound(rec.name or rec.id)
            if cur.name == new:
                raise ContainerError(f"cannot rename container {new}: renaming a container "
                                     "with the same name as its current name")
            if not self._claim_name(new, cur.id):
                owner = ""
                with contextlib.suppress(OSError):
                    owner = os.readlink(f"{self._names}/{new}")
                raise _NameTaken(new, owner)
            old, cur.name = cur.name, new
            try:
                self.save(cur)
            except BaseException:
                self._release_name(new, cur.id)
                raise
            if old:
                self._release_name(old, cur.id)
        rec.name = new
        return cur

    def exit_file(self, cid: str) -> Path:
        """Written by the shim of a detached container when it exits: "<status> <unix-ns>"."""
        return self.root / cid / "exit"

    def log_file(self, cid: str) -> Path:
        return self.root / cid / "container.log"

    def read_exit(self, cid: str) -> tuple[int, float] | None:
        """(status, finished) from the exit file a shim wrote, if there is one."""
        try:
            status_s, ns_s = self.exit_file(cid).read_text().split()
            return int(status_s), int(ns_s) / 1e9
        except (OSError, ValueError):
            return None

    def refresh(self, rec: ContainerRecord) -> ContainerRecord:
        """Bring a record that says "running" up to date with what really happened: its
        process is gone, so take the exit status its shim wrote, or — no shim survived
        (minirun or the machine went down) — 137, as it was killed along with them."""
        if rec.status == "exited" and rec.options.restart not in ("", "no"):
            from minirun.container.restart import pending_in

            rec.restarting = pending_in(self, rec.id)
        if rec.healthcheck and rec.status == "running":
            from minirun.container.health import current_status

            rec.health = current_status(self, rec.id)
        if rec.status != "running" or rec.alive():
            return rec
        sup = rec.supervisor_pid
        supervised = bool(sup) and _start_time(sup) == rec.supervisor_start
        if supervised and not self.exit_file(rec.id).exists():
            return rec  # the container just ended; its shim is about to write the status
        code, finished = self.read_exit(rec.id) or (137, time.time())
        rec.status, rec.exit_code, rec.finished_at, rec.pid = "exited", code, finished, 0
        rec.oom_killed = self.oom_killed(rec)
        if rec.auto_remove and not supervised:
            # a --rm container whose supervisor died with it: nobody else will remove it,
            # so whoever notices does (Docker's daemon does the same when it restarts)
            from minirun.container import lifecycle  # the layer above: only on this path

            with contextlib.suppress(ContainerError, OSError):
                lifecycle.remove(self.store, rec, force=True)
            return rec
        with contextlib.suppress(OSError):
            if self.dir(rec.id).is_dir():
                self.save(rec)
        return rec

    @staticmethod
    def oom_killed(rec: ContainerRecord) -> bool:
        """OOMKilled, read from the container's cgroup while it still exists."""
        from minirun.runtime import cgroups

        cg = cgroups.Cgroup.open(engine_path(rec.id))
        return rec.oom_killed or bool(cg and cg.oom_killed())

    def new_id(self) -> str:
        """A fresh 64-hex ID and its (empty, private) directory."""
        self.store.ensure()
        while True:
            cid = os.urandom(32).hex()
            with contextlib.suppress(FileExistsError):
                (self.root / cid).mkdir(mode=0o700)
                return cid

    def all(self) -> list[ContainerRecord]:
        if not self.root.is_dir():
            return []
        recs = [self.refresh(r) for n in os.listdir(self._root) if (r := self._load(n)) is not None]
        recs = [r for r in recs if not (r.auto_remove and r.status == "exited")
                or os.path.isdir(f"{self._root}/{r.id}")]  # fmt: skip
        recs.sort(key=lambda r: r.created, reverse=True)
        return recs

    def get(self, ref: str) -> ContainerRecord:
        """By full ID, name (with or without Docker's leading '/'), or unique ID prefix —
        Docker's order. Reads one record, not all of them."""
        ref = ref.lstrip("/")
        if not ref or "/" in ref or ref in (".", ".."):
            raise ContainerNotFound(ref)
        self._ensure_names()
        if len(ref) == 64 and (rec := self._load(ref)) is not None:
            return self.refresh(rec)
        with contextlib.suppress(OSError):
            cid = os.readlink(f"{self._names}/{ref}")
            if (rec := self._load(cid)) is not None and rec.name == ref:
                return self.refresh(rec)
        try:
            ids = [n for n in os.listdir(self._root) if n.startswith(ref)]
        except FileNotFoundError:
            ids = []
        recs = [r for n in ids if (r := self._load(n)) is not None]
        if len(recs) == 1:
            return self.refresh(recs[0])
        if len(recs) > 1:
            raise ContainerError(f"container ID prefix {ref!r} is ambiguous; give more characters")
        raise ContainerNotFound(ref)

    def _ensure_names(self) -> None:
        """A store from before the names index: build it once from the records."""
        if os.path.isdir(self._names) or not os.path.isdir(self._root):
            return
        tmp = f"{self._names}.{os.getpid()}"
        os.makedirs(tmp, mode=0o700, exist_ok=True)
        for n in os.listdir(self._root):
            rec = self._load(n)
            if rec is not None and rec.name:
                with contextlib.suppress(FileExistsError):
                    os.symlink(rec.id, f"{tmp}/{rec.name}")
        try:
            os.rename(tmp, self._names)
        except OSError:  # another process built it first
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)

    def _claim_name(self, name: str, cid: str) -> bool:
        """Make names/<name> point at ``cid``; False if a live container has it. A link
        whose container is gone (a crash between claim and record) is taken over."""
        link = f"{self._names}/{name}"
        for _ in range(2):
            try:
                os.symlink(cid, link)
                return True
            except FileExistsError:
                pass
            try:
                owner = os.readlink(link)
            except FileNotFoundError:
                continue  # released meanwhile: try again
            rec = self._load(owner)
            if owner == cid or (rec is not None and rec.name == name):
                return owner == cid
            with contextlib.suppress(FileNotFoundError):
                os.unlink(link)  # stale
        return False

    def _release_name(self, name: str, cid: str) -> None:
        link = f"{self._names}/{name}"
        with contextlib.suppress(OSError):
            if os.readlink(link) == cid:
                os.unlink(link)

    def register(self, rec: ContainerRecord, name: str | None) -> None:
        """Give a prepared container (its dir made by :meth:`new_id`) a unique name and
        write its record, under the store lock so two ``run --name x`` racing cannot both win."""
        if name is not None:
            _check_name(name)
        with self.store.lock():
            # rmi takes the same lock and spares images that registered containers use;
            # an image removed while this one was being prepared must not be run
            if not self.store.has_image(rec.image_id):
                raise ImageNotFound(rec.image)
            self._ensure_names()
            os.makedirs(self._names, mode=0o700, exist_ok=True)
            if name is not None:
                if not self._claim_name(name, rec.id):
                    owner = ""
                    with contextlib.suppress(OSError):
                        owner = os.readlink(f"{self._names}/{name}")
                    raise NameInUse(name, owner)
            else:
                tries = 0
                while name is None:
                    adj, noun, n = os.urandom(3)
                    name = f"{_ADJECTIVES[adj % len(_ADJECTIVES)]}_{_NOUNS[noun % len(_NOUNS)]}"
                    if tries:
                        name += str(n % 100 if tries < 20 else int.from_bytes(os.urandom(4)))
                    tries += 1
                    if not self._claim_name(name, rec.id):
                        name = None
            rec.name = name
            try:
                self.store.pin(rec.id, rec.image_id)  # rmi spares the images containers use
                self.save(rec)
            except BaseException:
                self._release_name(name, rec.id)
                raise

    def remove(self, rec: ContainerRecord, force: bool = False) -> None:
        if rec.alive():
            if not force:
                raise ContainerError(f"cannot remove container {rec.name}: it is running "
                                     "(stop it first, or use rm -f)")
            with contextlib.suppress(ProcessLookupError):
                os.kill(rec.pid, 9)
            _wait_gone(rec.pid)
        self.discard(rec.id, rec.name)

    def discard(self, cid: str, name: str = "") -> None:
        """Delete a container's dir: renamed away first so the record vanishes at once;
        then its name is free."""
        doomed = self.store.new_tmp(".rm")
        try:
            os.rename(self.dir(cid), doomed)
        except FileNotFoundError:
            self.store.unpin(cid)
            if name:
                self._release_name(name, cid)
            return
        from minirun import faults

        faults.point("rm.renamed")
        self.store.unpin(cid)
        if name:
            self._release_name(name, cid)
        _rmtree(str(doomed))


class _NameTaken(NameInUse):
    """``rename`` to a name another container has (Docker's "Conflict" message)."""

    def __init__(self, name: str, cid: str) -> None:
        MinirunError.__init__(
            self, f'the container name "/{name}" is already in use by container {cid[:12]}; '
            "remove (or rename) that container to be able to reuse that name")


def _rmtree(path: str) -> None:
    """shutil.rmtree without importing shutil (2 ms on run --rm's exit path). Symlinks are
    removed, never followed; a whiteout or device is just an entry to unlink."""
    for root, dirs, files, rootfd in os.fwalk(path, topdown=False):
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=rootfd)
        for name in dirs:
            with contextlib.suppress(FileNotFoundError):
                if os.path.islink(os.path.join(root, name)):
                    os.unlink(name, dir_fd=rootfd)
                else:
                    os.rmdir(name, dir_fd=rootfd)
    with contextlib.suppress(FileNotFoundError):
        os.rmdir(path)


def _wait_gone(pid: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and os.path.exists(f"/proc/{pid}"):
        time.sleep(0.01)


def _check_name(name: str) -> None:
    import re

    if not re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*", name) or len(name) > 128:
        raise UsageError(f"invalid container name {name!r}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
