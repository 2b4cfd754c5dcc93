"""Progress of pulls and pushes: events from the library, rendered by the CLI.

The library never prints: it calls ``report(ProgressEvent)`` (serialised, so a renderer
needs no lock of its own). A renderer turns events into Docker's output:

* on a terminal, one live line per layer, redrawn in place with ANSI cursor moves::

      f1a8f6215f16: Downloading [=========>                                  ]  1.2MB/4.5MB

* otherwise plain lines, one per state change, without the byte counts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from minirun.humanize import human_size

# statuses that carry byte counts: shown as bars on a terminal, skipped in plain output
PROGRESS_STATUSES = frozenset({"Downloading", "Extracting", "Pushing"})
BAR_WIDTH = 50


@dataclass(frozen=True)
class ProgressEvent:
    """``id`` is a layer's 12-hex short digest, or "" for a message line."""

    status: str
    id: str = ""
    current: int = 0
    total: int = 0


Report = Callable[[ProgressEvent], None]


def ignore(_: ProgressEvent) -> None:
    pass


def bar(current: int, total: int, width: int = BAR_WIDTH) -> str:
    """Docker's progress bar: ``[=====>     ]  1.2MB/4.5MB`` (no bar without a total)."""
    if total <= 0:
        return human_size(current)
    frac = min(max(current / total, 0.0), 1.0)
    filled = int(frac * width)
    arrow = "=" * filled + (">" if filled < width else "") + " " * max(width - filled - 1, 0)
    return f"[{arrow}] {human_size(current):>7}/{human_size(total)}"


def format_line(ev: ProgressEvent, with_bar: bool) -> str:
    text = ev.status
    if with_bar and ev.status in PROGRESS_STATUSES and (ev.current or ev.total):
        text = f"{ev.status} {bar(ev.current, ev.total)}"
    return f"{ev.id}: {text}" if ev.id else text


class PlainRenderer:
    """One line per state change (pipes, logs, CI)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self._last: dict[str, str] = {}

    def __call__(self, ev: ProgressEvent) -> None:
        if ev.id and ev.status in PROGRESS_STATUSES:
            return
        if ev.id:
            if self._last.get(ev.id) == ev.status:
                return
            self._last[ev.id] = ev.status
        self.out.write(format_line(ev, False) + "\n")
        self.out.flush()


class TtyRenderer:
    """Docker's live display: a line per layer, updated in place; messages scroll below."""

    def __init__(self, out: TextIO, min_interval: float = 0.1) -> None:
        self.out = out
        self.rows: dict[str, int] = {}  # layer id -> line number (from the top of our output)
        self.lines = 0  # lines written so far
        self.min_interval = min_interval
        self._drawn: dict[str, float] = {}

    def __call__(self, ev: ProgressEvent) -> None:
        if not ev.id:
            self.out.write(format_line(ev, True) + "\n")
            self.lines += 1
            self.out.flush()
            return
        now = time.monotonic()
        if ev.status in PROGRESS_STATUSES and ev.current < ev.total and ev.id in self._drawn \
                and now - self._drawn[ev.id] < self.min_interval:
            return  # throttle redraws of byte counts; state changes always show
        self._drawn[ev.id] = now
        line = format_line(ev, True)
        row = self.rows.get(ev.id)
        if row is None:
            self.rows[ev.id] = self.lines
            self.out.write(f"\x1b[2K{line}\n")
            self.lines += 1
        else:
            up = self.lines - row
            # up to the layer's line, clear it, write, and back down
            self.out.write(f"\x1b[{up}A\x1b[2K\r{line}\r\x1b[{up}B")
        self.out.flush()


def renderer(out: TextIO, tty: bool | None = None) -> Report:
    """The renderer for ``out``: live bars on a terminal, plain lines otherwise."""
    if tty is None:
        try:
            tty = out.isatty()
        except (AttributeError, ValueError):
            tty = False
    return TtyRenderer(out) if tty else PlainRenderer(out)
