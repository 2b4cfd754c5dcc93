"""The event journal: ``<store>/events.jsonl``, what ``minirun events`` reads.

Every state change of a container, image, network or volume appends one line, Docker's
event object (``Type``, ``Action``, ``Actor{ID, Attributes}``, ``scope``, ``time``,
``timeNano``, and for containers and images the legacy ``status``/``id``/``from``)::

    {"status":"start","id":"3f..","from":"busybox","Type":"container","Action":"start",
     "Actor":{"ID":"3f..","Attributes":{"image":"busybox","name":"c1"}},"scope":"local",
     "time":1764783812,"timeNano":1764783812123456789}

minirun has no daemon, so there is no event bus: the journal is the bus. :func:`emit` is
one ``open(O_APPEND)`` + shared ``flock`` + one ``write`` (a few microseconds; stdlib
modules only): a line is written whole by one write, so concurrent writers never
interleave. The file is bounded: past :data:`MAX_BYTES` the writer that crossed the
limit trims it to the newest :data:`KEEP_BYTES` (at most :data:`MAX_LINES` lines) under an
exclusive ``flock``, written aside and renamed over it; a writer that opened the old
file before the rename sees the inode change once it holds its lock, and writes to the
new one. An event is never worth failing the operation it reports: errors are ignored.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from minirun.errors import UsageError

JOURNAL = "events.jsonl"
MAX_BYTES = 1 << 20  # trim past 1 MiB ...
KEEP_BYTES = MAX_BYTES // 2  # ... to the newest half
MAX_LINES = 10_000


def journal_path(root: Any) -> str:
    """The journal of a store (a :class:`~minirun.image.store.Store` or its root dir)."""
    if not isinstance(root, (str, os.PathLike)):
        root = root.root  # a Store
    return os.path.join(os.fspath(root), JOURNAL)


def message(type_: str, action: str, actor_id: str, attributes: Mapping[str, str] | None = None,
            time_ns: int | None = None) -> dict[str, Any]:
    """Docker's events.Message as its API encodes it."""
    ns = time.time_ns() if time_ns is None else time_ns
    attrs = {str(k): str(v) for k, v in (attributes or {}).items()}
    ev: dict[str, Any] = {}
    if type_ in ("container", "image"):  # the deprecated fields Docker still fills for these
        ev["status"] = action
        ev["id"] = actor_id
        if type_ == "container" and "image" in attrs:
            ev["from"] = attrs["image"]
    ev.update({"Type": type_, "Action": action, "Actor": {"ID": actor_id, "Attributes": attrs},
               "scope": "local", "time": ns // 1_000_000_000, "timeNano": ns})
    return ev


def emit(store: Any, type_: str, action: str, actor_id: str,
         attributes: Mapping[str, str] | None = None) -> None:
    """Append one event to the store's journal. Never raises."""
    try:
        line = (json.dumps(message(type_, action, actor_id, attributes), separators=(",", ":"))
                + "\n").encode()
        path = journal_path(store)
        if _append(path, line) > MAX_BYTES:
            trim(path)
    except (OSError, ValueError, TypeError):
        pass


def container(store: Any, rec: Any, action: str, **extra: str) -> None:
    """A container event: Docker's attributes (the container's labels, image, name)."""
    labels = getattr(getattr(rec, "options", None), "labels", None) or {}
    emit(store, "container", action, rec.id, {**labels, "image": rec.image, "name": rec.name, **extra})


def network(store: Any, net: Any, name: str, action: str, **extra: str) -> None:
    """A network event: Actor = the network's ID (its name when the record is gone)."""
    emit(store, "network", action, getattr(net, "id", None) or name, {**extra, "name": name, "type": "bridge"})


def volume(store: Any, name: str, action: str, **extra: str) -> None:
    emit(store, "volume", action, name, {"driver": "local", **extra})


def _append(path: str, line: bytes) -> int:
    """Write ``line`` at the end of the journal the path names now; its new size."""
    for _ in range(5):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            st = os.fstat(fd)
            try:
                cur = os.stat(path)
            except FileNotFoundError:
                continue  # trimmed between our open and our lock: write to the new one
            if (cur.st_ino, cur.st_dev) != (st.st_ino, st.st_dev):
                continue
            os.write(fd, line)
            return st.st_size + len(line)
        finally:
            os.close(fd)
    return 0


def trim(path: str, keep_bytes: int | None = None, keep_lines: int | None = None,
         limit: int | None = None) -> None:
    """Keep the newest events (``keep_bytes``, at most ``keep_lines`` lines) when the
    journal is past ``limit``; whole lines only."""
    keep_bytes = KEEP_BYTES if keep_bytes is None else keep_bytes
    keep_lines = MAX_LINES if keep_lines is None else keep_lines
    limit = MAX_BYTES if limit is None else limit
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        st = os.fstat(fd)
        try:
            cur = os.stat(path)
        except FileNotFoundError:
            return
        if (cur.st_ino, cur.st_dev) != (st.st_ino, st.st_dev) or st.st_size <= limit:
            return  # another writer trimmed it first
        start = max(0, st.st_size - keep_bytes)
        os.lseek(fd, start, os.SEEK_SET)
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        data = b"".join(chunks)
        if start:
            nl = data.find(b"\n")
            data = data[nl + 1:] if nl >= 0 else b""
        lines = data.splitlines(keepends=True)
        if len(lines) > keep_lines:
            data = b"".join(lines[-keep_lines:])
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    finally:
        os.close(fd)  # releases the lock: blocked writers find the new file


# --- reading ------------------------------------------------------------------------------


def _parse_lines(data: bytes) -> Iterator[dict[str, Any]]:
    for raw in data.split(b"\n"):
        if not raw.strip():
            continue
        try:
            ev = json.loads(raw)
        except ValueError:
            continue  # a torn line (a full disk): skipped
        if isinstance(ev, dict) and isinstance(ev.get("timeNano"), int):
            yield ev


def read(root: Any) -> list[dict[str, Any]]:
    """Every event the journal holds, oldest first."""
    try:
        with open(journal_path(root), "rb") as f:
            return list(_parse_lines(f.read()))
    except FileNotFoundError:
        return []


def follow(root: Any, since_ns: int | None, until_ns: int | None,
           poll: float = 0.1, stop: Callable[[], bool] | None = None) -> Iterator[dict[str, Any]]:
    """The events with ``since_ns <= timeNano <= until_ns``: the journal's, then (while
    ``until_ns`` is in the future or None) new ones as they are appended, found by polling
    the file every ``poll`` seconds. A trim (a new file holding the old one's tail) is
    followed: the lines already given are recognised and not given again."""
    from collections import deque

    path = journal_path(root)
    f = None
    ino: tuple[int, int] | None = None
    offset = 0
    pending = b""
    seen: set[int] = set()  # hashes of the lines given: a trim copies some of them
    order: deque[int] = deque()
    rotated = False
    # without --since: only what happens from now on (Docker)
    floor = since_ns if since_ns is not None else time.time_ns()
    try:
        while True:
            try:
                st = os.stat(path)
                if ino != (st.st_ino, st.st_dev) or st.st_size < offset:
                    if f is not None:
                        f.close()
                        rotated = True
                    f = open(path, "rb")  # noqa: SIM115 - kept open across polls
                    ino, offset, pending = (st.st_ino, st.st_dev), 0, b""
            except FileNotFoundError:
                pass
            if f is not None:
                f.seek(offset)
                data = f.read()
                offset += len(data)
                buf = pending + data
                cut = buf.rfind(b"\n")
                complete, pending = (buf[:cut], buf[cut + 1:]) if cut >= 0 else (b"", buf)
                for raw in complete.split(b"\n"):
                    if not raw.strip():
                        continue
                    h = hash(raw)
                    if rotated and h in seen:
                        continue
                    seen.add(h)
                    order.append(h)
                    if len(order) > 2 * MAX_LINES:
                        seen.discard(order.popleft())
                    for ev in _parse_lines(raw):
                        ns = ev["timeNano"]
                        if ns >= floor and (until_ns is None or ns <= until_ns):
                            yield ev
            if until_ns is not None and time.time_ns() > until_ns:
                return
            if stop is not None and stop():
                return
            time.sleep(poll)
    finally:
        if f is not None:
            f.close()


# --- filters --------------------------------------------------------------------------------

FILTER_KEYS = ("type", "event", "container", "image", "label", "network", "volume", "scope")
_FUZZY_EVENTS = ("health_status", "exec_create", "exec_start")


@dataclass
class Filter:
    """Docker's events filters: values of one key OR, keys AND."""

    wanted: dict[str, list[str]]

    def _has(self, key: str) -> bool:
        return key in self.wanted

    def _prefix(self, key: str, *texts: str) -> bool:
        return any(t.startswith(v) for v in self.wanted[key] for t in texts if t)

    def match(self, ev: Mapping[str, Any]) -> bool:
        type_, action = ev.get("Type", ""), ev.get("Action", "")
        actor = ev.get("Actor") or {}
        aid, attrs = actor.get("ID", ""), actor.get("Attributes") or {}
        w = self.wanted
        if "type" in w and type_ not in w["type"]:
            return False
        if "scope" in w and ev.get("scope", "local") not in w["scope"]:
            return False
        if "event" in w:
            if any(v in _FUZZY_EVENTS for v in w["event"]):
                if not any(action.startswith(v) for v in w["event"]):
                    return False
            elif action not in w["event"]:
                return False
        for key in ("container", "network", "volume"):
            if key in w and not (type_ == key and self._prefix(key, aid, attrs.get("name", ""))):
                return False
        if "image" in w:
            name = attrs.get("name" if type_ == "image" else "image", "")
            cands = {aid, name, strip_tag(aid), strip_tag(name)}
            if not any(v in cands for v in w["image"]):
                return False
        if "label" in w:
            for want in w["label"]:
                k, sep, v = want.partition("=")
                if k not in attrs or (sep and attrs[k] != v):
                    return False
        return True


def strip_tag(ref: str) -> str:
    """``busybox:latest`` -> ``busybox`` (a registry port is not a tag)."""
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    return ref[:colon] if colon > slash and "@" not in ref else ref


def parse_filters(specs: list[str] | tuple[str, ...]) -> Filter:
    from minirun.filters import parse_filters as parse

    return Filter(parse(specs, FILTER_KEYS))


# --- times ------------------------------------------------------------------------------------

# patterns (compiled on first use: emit, on every verb's path, never needs them)
_DURATION = r"[+-]?(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:ns|us|µs|ms|s|m|h))+"
_UNIX = r"[0-9]{1,12}(?:\.[0-9]{1,9})?"
_LOCAL_FORMATS = ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%dT%H", "%Y-%m-%d")


def parse_time(text: str, flag: str = "--since", now_ns: int | None = None) -> int:
    """Docker's --since/--until value → unix ns: a Go duration before now (``10m``; a
    negative one is after now), a unix timestamp (``1700000000[.123456789]``), or an RFC
    3339 date-time (``2026-01-02T15:04:05[.999999999](Z|+01:00)``; without a zone, or a
    bare date, it is local time)."""
    import datetime as dt

    now = time.time_ns() if now_ns is None else now_ns
    value = text.strip()
    if value != "0" and re.fullmatch(_DURATION, value):
        from minirun.container.runflags import parse_duration

        sign = -1 if value.startswith("-") else 1
        return now - sign * parse_duration(value.lstrip("+-"), flag)
    if re.fullmatch(_UNIX, value):
        sec, _, frac = value.partition(".")
        return int(sec) * 1_000_000_000 + int((frac + "000000000")[:9])
    iso = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    m = re.fullmatch(r"(.*T[0-9:]+)\.([0-9]{1,9})(.*)", iso)
    frac_ns = 0
    if m:  # fromisoformat takes 6 fraction digits at most
        iso, frac_ns = m.group(1) + m.group(3), int((m.group(2) + "000000000")[:9])
    d: dt.datetime | None = None
    try:
        d = dt.datetime.fromisoformat(iso)
    except ValueError:
        for fmt in _LOCAL_FORMATS:
            try:
                d = dt.datetime.strptime(iso, fmt)
                break
            except ValueError:
                continue
    if d is None:
        raise UsageError(f"invalid value {text!r} for {flag}: use an RFC 3339 time "
                         "(2026-01-02T15:04:05Z), a unix timestamp or a duration (10m)")
    if d.tzinfo is None:
        d = d.astimezone()  # local time, as Docker reads it
    return int(d.timestamp()) * 1_000_000_000 + frac_ns


# --- output -----------------------------------------------------------------------------------


def rfc3339_nano(ns: int) -> str:
    """Go's RFC3339NanoFixed in local time: ``2026-12-03T17:43:32.123456789Z`` (or +01:00)."""
    sec, frac = divmod(ns, 1_000_000_000)
    lt = time.localtime(sec)
    off = lt.tm_gmtoff or 0
    zone = "Z" if off == 0 else f"{'+' if off > 0 else '-'}{abs(off) // 3600:02d}:{abs(off) % 3600 // 60:02d}"
    return time.strftime("%Y-%m-%dT%H:%M:%S", lt) + f".{frac:09d}{zone}"


def pretty(ev: Mapping[str, Any]) -> str:
    """Docker's default line: ``TIME TYPE ACTION ID (k=v, k=v)``, attributes sorted."""
    actor = ev.get("Actor") or {}
    attrs = actor.get("Attributes") or {}
    line = f"{rfc3339_nano(ev['timeNano'])} {ev.get('Type', '')} {ev.get('Action', '')} {actor.get('ID', '')}"
    if attrs:
        line += " (" + ", ".join(f"{k}={attrs[k]}" for k in sorted(attrs)) + ")"
    return line


def template_data(ev: Mapping[str, Any]) -> dict[str, Any]:
    """An event under Go's field names, for --format templates (``{{.Actor.ID}}``)."""
    actor = ev.get("Actor") or {}
    return {
        "Status": ev.get("status", ""), "ID": ev.get("id", ""), "From": ev.get("from", ""),
        "Type": ev.get("Type", ""), "Action": ev.get("Action", ""),
        "Actor": {"ID": actor.get("ID", ""), "Attributes": dict(actor.get("Attributes") or {})},
        "Scope": ev.get("scope", "local"), "Time": ev.get("time", 0), "TimeNano": ev.get("timeNano", 0),
    }
