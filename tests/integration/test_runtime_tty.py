"""process.terminal through a REAL pty: a driver process runs the container with its stdio
on the slave side of a pty we hold the master of, as a user's terminal would be."""

from __future__ import annotations

import os
import signal
import subprocess
import termios
import time

import pytest

from minirun.runtime import OverlayRootfs
from tests.integration import runtime_fixtures
from tests.integration.runtime_fixtures import (
    REPO_ROOT,
    driver_cmd,
    make_spec,
)
from tests.terminal import Terminal

pytestmark = pytest.mark.root

# the shared fixtures (a conftest is the lead's; these are imported explicitly)
busybox_layer = runtime_fixtures.busybox_layer
rootfs = runtime_fixtures.rootfs


def _start(rootfs: OverlayRootfs, args: list[str]) -> tuple[subprocess.Popen[bytes], Terminal, int]:
    master, slave = os.openpty()
    # a typical cooked terminal: what must come back after minirun used raw mode
    os.set_blocking(master, True)
    spec = make_spec(args, terminal=True, consoleSize={"height": 30, "width": 100})
    proc = subprocess.Popen(driver_cmd(spec, rootfs), cwd=REPO_ROOT, stdin=slave, stdout=slave,
                            stderr=slave, start_new_session=True)  # fmt: skip
    return proc, Terminal(master), slave


def test_interactive_shell(rootfs: OverlayRootfs) -> None:
    master, slave = -1, -1
    proc, term, slave = _start(rootfs, ["sh", "-i"])
    master = term.master
    attrs_before = termios.tcgetattr(slave)
    try:
        term.expect(b"# ")  # the prompt of `sh -i` as root
        term.send(b"echo h''i\r")
        term.expect(b"hi\r\n")
        term.expect(b"# ")
        term.send(b"tty; stty size; ls -l /dev/console | wc -l\r")
        out = term.expect(b"# ")
        assert b"/dev/pts/0" in out
        assert b"1\r\n" in out  # /dev/console exists (the pty slave bound over it)
        # ^C is a byte for the container's line discipline: it stops `sleep`, not minirun
        term.send(b"sleep 30\r")
        time.sleep(0.3)
        term.send(b"\x03")
        term.expect(b"# ", timeout=5)
        assert proc.poll() is None
        term.send(b"exit 3\r")
        assert proc.wait(timeout=10) == 3
        # the raw mode minirun put the terminal in is undone
        assert termios.tcgetattr(slave) == attrs_before
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
        os.close(slave)


def _set_size(fd: int, rows: int, cols: int) -> None:
    import fcntl
    import struct

    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def test_window_size_follows_host_terminal(rootfs: OverlayRootfs) -> None:
    proc, term, slave = _start(rootfs, ["sh", "-c", "read a; stty size; read b; stty size"])
    try:
        _set_size(slave, 40, 120)  # before the driver reads it at start
        proc.send_signal(signal.SIGWINCH)
        time.sleep(0.3)
        term.send(b"a\r")
        assert term.expect(b"\r\n", timeout=10) == b"a"  # echo of the line
        assert term.expect(b"\r\n") == b"40 120"
        _set_size(slave, 50, 132)
        proc.send_signal(signal.SIGWINCH)  # what the kernel sends a terminal's fg group
        time.sleep(0.3)
        term.send(b"b\r")
        assert term.expect(b"\r\n") == b"b"
        assert term.expect(b"\r\n") == b"50 132"
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(term.master)
        os.close(slave)


def test_tty_without_host_terminal(rootfs: OverlayRootfs) -> None:
    """stdin not a tty (a pipe): no raw mode, output still flows through the pty."""
    spec = make_spec(["sh", "-c", "tty; exit 5"], terminal=True)
    proc = subprocess.run(driver_cmd(spec, rootfs), cwd=REPO_ROOT, stdin=subprocess.DEVNULL,
                          capture_output=True, timeout=20)  # fmt: skip
    assert proc.returncode == 5, proc.stderr
    assert proc.stdout.strip() == b"/dev/pts/0"
