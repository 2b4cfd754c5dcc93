"""A container's log, as minirun-shim writes it for a detached container (and
:class:`Tee` for one that ``run`` supervises in the foreground): the CRI log format
(Podman's k8s-file driver writes the same), one record a line::

    2026-01-01T00:00:00.123456789Z stdout F hello world
    2026-01-01T00:00:00.123456789Z stderr P a long line's first part…

``F`` ends a line; ``P`` is part of a line that goes on in the next record.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class LogLine:
    time: str  # RFC 3339 with nanoseconds, UTC
    stream: str  # "stdout" or "stderr"
    text: str  # with its trailing "\n" when the line is complete


    @property
    def time_ns(self) -> int:
        """The record's time in ns since the epoch (0 if malformed)."""
        import calendar
        import time as _time

        head, _, frac = self.time.rstrip("Z").partition(".")
        try:
            secs = calendar.timegm(_time.strptime(head, "%Y-%m-%dT%H:%M:%S"))
        except ValueError:
            return 0
        digits = (frac + "000000000")[:9]
        return secs * 10**9 + (int(digits) if digits.isdigit() else 0)


def parse(record: str) -> LogLine | None:
    parts = record.rstrip("\n").split(" ", 3)
    if len(parts) < 3 or parts[1] not in ("stdout", "stderr") or parts[2] not in ("F", "P"):
        return None
    text = parts[3] if len(parts) == 4 else ""
    return LogLine(parts[0], parts[1], text + ("\n" if parts[2] == "F" else ""))


def _records(f: object) -> Iterator[LogLine]:
    for raw in f:  # type: ignore[attr-defined]
        line = parse(raw)
        if line is not None:
            yield line


def read(path: Path, tail: int | None = None, since_ns: int | None = None,
         until_ns: int | None = None) -> tuple[list[LogLine], int]:
    """All records (or the last ``tail`` complete lines), those written in
    [since_ns, until_ns) when given, and the offset read up to."""
    try:
        with open(path, encoding="utf-8", errors="replace", newline="\n") as f:
            records = _records(f)
            if since_ns is not None or until_ns is not None:
                records = (r for r in records
                           if (since_ns is None or r.time_ns >= since_ns)
                           and (until_ns is None or r.time_ns < until_ns))
            if tail is None:
                lines = list(records)
            else:
                lines = _last_lines(records, tail)
            return lines, f.tell()
    except FileNotFoundError:
        return [], 0


def _last_lines(records: Iterator[LogLine], n: int) -> list[LogLine]:
    """The records of the last ``n`` complete lines, partial records kept with their line."""
    if n <= 0:
        return []
    groups: deque[list[LogLine]] = deque(maxlen=n)
    current: list[LogLine] = []
    for rec in records:
        current.append(rec)
        if rec.text.endswith("\n"):
            groups.append(current)
            current = []
    out = [r for g in groups for r in g]
    return out + current


def follow(path: Path, offset: int, running: Callable[[], bool], poll: float = 0.1) -> Iterator[LogLine]:
    """Records written after ``offset``, until the container has stopped and the log has
    no more to give (``logs -f`` ends when the container exits, as in Docker)."""
    pending = ""
    while True:
        alive = running()  # read before the file, so nothing written before exit is missed
        try:
            with open(path, encoding="utf-8", errors="replace", newline="\n") as f:
                f.seek(offset)
                chunk = f.read()
                offset = f.tell()
        except FileNotFoundError:
            chunk = ""
        if chunk:
            pending += chunk
            *complete, pending = pending.split("\n")
            for raw in complete:
                line = parse(raw)
                if line is not None:
                    yield line
            continue
        if not alive:
            return
        time.sleep(poll)


def size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


# --- writing: the foreground supervisor's copy (a detached container's shim writes its own) --

LINE_MAX_BYTES = 16384  # as minirun-shim: a longer line goes out in P records


class CriWriter:
    """Appends CRI records to a container's log as minirun-shim does: one record a line,
    the partial line of each stream held until its newline (or 16 KiB). Write errors (a
    full disk) never stop the container's output."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = -1
        self.partial: dict[str, bytes] = {"stdout": b"", "stderr": b""}

    @staticmethod
    def stamp() -> bytes:
        ns = time.time_ns()
        sec, frac = divmod(ns, 1_000_000_000)
        return (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + f".{frac:09d}Z").encode()

    def write(self, stream: str, data: bytes) -> None:
        lines = (self.partial[stream] + data).split(b"\n")
        self.partial[stream] = lines.pop()
        head = self.stamp() + b" " + stream.encode() + b" "
        out = [head + b"F " + line + b"\n" for line in lines]
        rest = self.partial[stream]
        while len(rest) > LINE_MAX_BYTES:
            out.append(head + b"P " + rest[:LINE_MAX_BYTES] + b"\n")
            rest = rest[LINE_MAX_BYTES:]
        self.partial[stream] = rest
        if out:
            self._append(b"".join(out))

    def close(self) -> None:
        """The partial lines as P records (the container ended mid-line), then close."""
        tail = [self.stamp() + f" {s} P ".encode() + rest + b"\n"
                for s, rest in self.partial.items() if rest]
        if tail:
            self._append(b"".join(tail))
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def _append(self, data: bytes) -> None:
        try:
            if self.fd < 0:
                self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
            view = memoryview(data)
            while view:
                view = view[os.write(self.fd, view):]
        except OSError:
            pass


class Tee:
    """The output of a container minirun supervises in the foreground, copied to where it
    was going (our stdout/stderr) and into its log: pipes the container (or the pty relay)
    writes, read by a thread until EOF, or, after :meth:`finish`, until they are empty.

    Docker keeps the log of an attached ``run`` too; this is minirun's copy for the run
    that it supervises itself (``start``/``run -d`` containers are logged by their shim)."""

    def __init__(self, path: Path, streams: tuple[tuple[str, int], ...]) -> None:
        self.log = CriWriter(path)
        self.pipes: list[tuple[str, int, int, int]] = []  # (stream, read end, write end, dest)
        for stream, dest in streams:
            r, w = os.pipe2(os.O_CLOEXEC)
            self.pipes.append((stream, r, w, dest))
        self.wake_r, self.wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self.thread: Any = None

    def fd(self, stream: str) -> int:
        """The write end that replaces ``stream``'s destination."""
        return next(w for s, _r, w, _d in self.pipes if s == stream)

    def start(self, block: tuple[int, ...] = ()) -> None:
        """Start copying (after the container exists: no thread lives across its fork);
        ``block``: signals the thread must never take from the main thread's handlers.
        Our write ends stay open (the pty relay writes one); :meth:`finish` ends the copy."""
        import signal
        import threading

        old = signal.pthread_sigmask(signal.SIG_BLOCK, block) if block else None
        try:
            self.thread = threading.Thread(target=self._copy, name="minirun-log", daemon=True)
            self.thread.start()
        finally:
            if old is not None:
                signal.pthread_sigmask(signal.SIG_SETMASK, old)

    def finish(self) -> None:
        """After the container ended: copy what is left, then close everything."""
        if self.thread is not None:
            os.write(self.wake_w, b"x")
            self.thread.join()
        for _s, r, w, _d in self.pipes:
            for fd in (r, w):
                if fd >= 0:
                    os.close(fd)
        os.close(self.wake_r)
        os.close(self.wake_w)
        self.log.close()

    def _copy(self) -> None:
        import select

        live = {r: (s, d) for s, r, _w, d in self.pipes}
        poller = select.poll()
        for r in live:
            poller.register(r, select.POLLIN)
        poller.register(self.wake_r, select.POLLIN)
        draining = False
        while live:
            events = [(r, 0) for r in list(live)] if draining else poller.poll()
            for fd, _ev in events:
                if fd == self.wake_r:
                    draining = True  # the container is gone: read what is left, no waiting
                    for r in live:
                        os.set_blocking(r, False)
                    continue
                if fd not in live:
                    continue
                stream, dest = live[fd]
                try:
                    data = os.read(fd, 65536)
                except BlockingIOError:
                    data = b""
                except OSError:
                    data = b""
                if not data:
                    poller.unregister(fd)
                    del live[fd]
                    continue
                self.log.write(stream, data)
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(dest, view):]
                except BrokenPipeError:
                    # our reader went away (`run ... | head`): the container gets EPIPE/SIGPIPE
                    # as it would writing there itself
                    poller.unregister(fd)
                    del live[fd]
                    os.close(fd)
                    self.pipes = [(s, -1 if r == fd else r, w, d) for s, r, w, d in self.pipes]
                except OSError:
                    pass
