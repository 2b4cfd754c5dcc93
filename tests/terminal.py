"""The user's side of a real pty, for the interactive tests: type into the master, read
what the terminal shows."""

from __future__ import annotations

import os
import select
import time


class Terminal:
    """The master side of a pty: :meth:`expect` reads until a needle shows."""

    def __init__(self, master: int) -> None:
        self.master = master
        self.seen = b""

    def expect(self, needle: bytes, timeout: float = 15.0) -> bytes:
        """Read until ``needle`` shows; what came before it (the rest is kept for the
        next expect). Fails the test on timeout or when the terminal closes."""
        deadline = time.monotonic() + timeout
        while needle not in self.seen:
            left = deadline - time.monotonic()
            assert left > 0, f"timed out waiting for {needle!r}; got {self.seen!r}"
            if select.select([self.master], [], [], left)[0]:
                try:
                    chunk = os.read(self.master, 4096)
                except OSError:  # EIO: every slave fd is closed
                    chunk = b""
                assert chunk, f"terminal closed waiting for {needle!r}; got {self.seen!r}"
                self.seen += chunk
        before, _, self.seen = self.seen.partition(needle)
        return before

    def send(self, data: bytes) -> None:
        os.write(self.master, data)
