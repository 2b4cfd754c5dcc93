"""The runtime's own state dir: one ``<root>/<id>/`` per container, owned by this module.

::

    state.json   what ``create`` recorded (below); rewritten atomically
    exec.fifo    exists while the container is "created": its init blocks opening it for
                 writing until ``start`` opens it for reading (runc's exec fifo)

The status is derived, never trusted (so it stays true when the runtime process that
created the container was killed -9): the init's pid must be alive with the start time
recorded at create (a reused pid is not ours) — else "stopped"; a frozen cgroup is
"paused"; an exec fifo still there is "created"; otherwise "running".
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from minirun.errors import MinirunError

DEFAULT_ROOT = "/run/minirun-runtime"
_ID_RE = re.compile(r"[\w+\-.]+")  # runc's rule for container ids


class StateError(MinirunError):
    """A container that does not exist, exists already, or is in the wrong state."""

    exit_code = 1


@dataclass
class State:
    """The runtime's state.json of one container."""

    id: str
    pid: int
    pid_start: str  # /proc/PID/stat starttime: tells a reused pid apart
    bundle: str
    rootfs: str
    created: str  # RFC 3339
    cgroup: str  # the cgroup path (relative to each hierarchy's root), "" if none
    annotations: dict[str, str] = field(default_factory=dict)
    poststop: list[dict[str, Any]] = field(default_factory=list)  # hooks, run at delete
    owner: str = "root"
    # the process running ``create``: while pid is 0 and it lives, the status is "creating"
    creator: int = 0
    creator_start: str = ""

    def oci(self, status: str) -> dict[str, Any]:
        """The runtime spec's state object (what `state` prints, what hooks read)."""
        from minirun.runtime.config import OCI_VERSION

        return {"ociVersion": OCI_VERSION, "id": self.id, "status": status,
                "pid": self.pid if status in ("creating", "created", "running", "paused") else 0,
                "bundle": self.bundle, "rootfs": self.rootfs, "created": self.created,
                "owner": self.owner, "annotations": self.annotations}  # fmt: skip


def check_id(cid: str) -> None:
    if not cid or not _ID_RE.fullmatch(cid) or cid in (".", ".."):
        raise StateError(f"invalid container id {cid!r}: use letters, digits and _+-. only")


def start_time(pid: int) -> str:
    """Field 22 of /proc/PID/stat, or "" when the process is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return ""
    fields = data.rsplit(b")", 1)[1].split()
    if fields[0] in (b"Z", b"X"):
        return ""
    return fields[19].decode()


class StateDir:
    """The containers of one runtime root."""

    def __init__(self, root: str = DEFAULT_ROOT) -> None:
        self.root = root

    def dir(self, cid: str) -> str:
        return os.path.join(self.root, cid)

    def fifo(self, cid: str) -> str:
        return os.path.join(self.root, cid, "exec.fifo")

    def reserve(self, cid: str) -> str:
        """Make ``<root>/<id>`` (the atomic "this id is taken" step)."""
        check_id(cid)
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        d = self.dir(cid)
        try:
            os.mkdir(d, 0o700)
        except FileExistsError:
            raise StateError(f"container with id {cid!r} already exists") from None
        return d

    def save(self, st: State) -> None:
        path = os.path.join(self.dir(st.id), "state.json")
        tmp = f"{path}.{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(json.dumps(asdict(st)))
        os.replace(tmp, path)

    def load(self, cid: str) -> State:
        check_id(cid)
        try:
            with open(os.path.join(self.dir(cid), "state.json"), "rb") as f:
                return State(**json.loads(f.read()))
        except (FileNotFoundError, NotADirectoryError):
            raise StateError(f"container {cid!r} does not exist") from None
        except (ValueError, TypeError) as e:
            raise StateError(f"container {cid!r}: state is unreadable ({e})") from None

    def ids(self) -> list[str]:
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
            return []
        return sorted(n for n in names if os.path.exists(os.path.join(self.root, n, "state.json")))

    def status(self, st: State) -> str:
        if st.pid <= 0:
            alive = st.creator > 0 and start_time(st.creator) == st.creator_start
            return "creating" if alive else "stopped"
        if start_time(st.pid) != st.pid_start:
            return "stopped"
        if st.cgroup:
            from minirun.runtime import cgroups

            cg = cgroups.Cgroup.open(st.cgroup)
            if cg is not None and cg.frozen():
                return "paused"
        if os.path.exists(self.fifo(st.id)):
            return "created"
        return "running"

    def remove(self, cid: str) -> None:
        d = self.dir(cid)
        for name in ("state.json", "exec.fifo"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(d, name))
        try:
            names = os.listdir(d)
        except (FileNotFoundError, NotADirectoryError):
            names = []  # another delete (a shim's cleanup racing `rm -f`) got there first
        for name in names:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(d, name))
        with contextlib.suppress(FileNotFoundError):
            os.rmdir(d)
