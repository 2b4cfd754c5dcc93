"""A detached container's log, as minirun-shim writes it: the CRI log format (Podman's
k8s-file driver writes the same), one record a line::

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


@dataclass(frozen=True)
class LogLine:
    time: str  # RFC 3339 with nanoseconds, UTC
    stream: str  # "stdout" or "stderr"
    text: str  # with its trailing "\n" when the line is complete


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


def read(path: Path, tail: int | None = None) -> tuple[list[LogLine], int]:
    """All records (or the last ``tail`` complete lines) and the offset read up to."""
    try:
        with open(path, encoding="utf-8", errors="replace", newline="\n") as f:
            if tail is None:
                lines = list(_records(f))
            else:
                lines = _last_lines(_records(f), tail)
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
