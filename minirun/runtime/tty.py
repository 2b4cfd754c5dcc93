"""``process.terminal``: a pty whose slave is the container's stdio and /dev/console.

Decision: the pty is created INSIDE the container, from its own devpts instance (opened via
/dev/ptmx after pivot_root), as runc does; the master fd travels to the parent over a
socketpair (SCM_RIGHTS). So the slave is /dev/pts/0 of the container's devpts — `tty`
inside prints /dev/pts/0 and nothing of the host's devpts is exposed. The parent then runs
the copy loop between the user's terminal and the master.

Only imported when a terminal is asked for: termios/socket cost ~2 ms we do not pay for
plain runs.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import signal
import socket
import struct
import termios
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from minirun.runtime import linux

# asm-generic ioctl numbers (x86, arm, riscv); not all are exposed by the termios module
TIOCSPTLCK = 0x40045431
TIOCGPTPEER = 0x5441


def _winsize(rows: int, cols: int) -> bytes:
    return struct.pack("HHHH", rows, cols, 0, 0)


# --- child side --------------------------------------------------------------------------


def child_open_pty(sock: socket.socket, console_size: tuple[int, int] | None,
                   console: bool = True) -> int:
    """Runs after pivot_root: open the container's /dev/ptmx, send the master to the
    parent, bind the slave over /dev/console (not for exec: that would change the running
    container's console). Returns the slave fd."""
    master = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))  # unlockpt
    # TIOCGPTPEER opens the slave from the master itself: no path lookup to race
    slave = fcntl.ioctl(master, TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    if console_size:
        h, w = console_size
        if h and w:
            fcntl.ioctl(slave, termios.TIOCSWINSZ, _winsize(h, w))
    # the payload names the slave, as runc's console socket protocol does
    socket.send_fds(sock, [b"/dev/pts/" + str(_pty_number(master)).encode()], [master])
    os.close(master)
    if console and os.path.exists("/dev/console"):
        linux.mount(f"/proc/self/fd/{slave}", "/dev/console", None, linux.MS_BIND)
    return slave


def _pty_number(master: int) -> int:
    TIOCGPTN = 0x80045430  # noqa: N806
    return int(struct.unpack("I", fcntl.ioctl(master, TIOCGPTN, b"\0" * 4))[0])


def child_make_controlling(slave: int) -> None:
    """New session, the slave as its controlling terminal and as fds 0, 1, 2."""
    os.setsid()
    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    if slave > 2:
        os.close(slave)


# --- parent side -------------------------------------------------------------------------


def receive_master(sock: socket.socket) -> int | None:
    """The master fd from the child; None if the child failed before sending it."""
    _msg, fds, _flags, _addr = socket.recv_fds(sock, 16, 1)
    return fds[0] if fds else None


def _copy_winsize(src: int, dst: int) -> None:
    try:
        size = fcntl.ioctl(src, termios.TIOCGWINSZ, _winsize(0, 0))
        if size[:4] != b"\0\0\0\0":  # an unset (0x0) host size keeps consoleSize
            fcntl.ioctl(dst, termios.TIOCSWINSZ, size)
    except OSError:
        pass


@contextmanager
def host_terminal(in_fd: int, master: int) -> Iterator[None]:
    """Raw mode on the user's terminal for the container's lifetime, ALWAYS restored.

    Raw mode makes ^C a plain byte for the container's line discipline (so it interrupts
    the shell inside, not minirun); SIGWINCH keeps the container's window size in step.
    """
    if not os.isatty(in_fd):
        yield
        return
    _copy_winsize(in_fd, master)
    old_winch: Any = None
    try:
        old_winch = signal.signal(signal.SIGWINCH, lambda *_: _copy_winsize(in_fd, master))
    except ValueError:  # not the main thread: no resize forwarding
        pass
    try:
        with raw_terminal(in_fd):
            yield
    finally:
        if old_winch is not None:
            signal.signal(signal.SIGWINCH, old_winch)


@contextmanager
def raw_terminal(fd: int) -> Iterator[None]:
    """cfmakeraw on ``fd`` for the block (tty.setraw's, without importing tty), its
    modes ALWAYS restored after."""
    saved = termios.tcgetattr(fd)
    mode = termios.tcgetattr(fd)
    mode[0] &= ~(termios.BRKINT | termios.ICRNL | termios.INPCK | termios.ISTRIP | termios.IXON)
    mode[1] &= ~termios.OPOST
    mode[2] &= ~(termios.CSIZE | termios.PARENB)
    mode[2] |= termios.CS8
    mode[3] &= ~(termios.ECHO | termios.ICANON | termios.IEXTEN | termios.ISIG)
    mode[6][termios.VMIN] = 1
    mode[6][termios.VTIME] = 0
    try:
        termios.tcsetattr(fd, termios.TCSAFLUSH, mode)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def relay(master: int, in_fd: int, out_fd: int) -> None:
    """Copy in_fd -> master and master -> out_fd until the container side is closed.

    The master reads EIO once every slave fd is gone (the container's init exited, which
    kills the rest of its PID namespace); everything it had written is read before that.
    """
    poller = select.poll()
    poller.register(master, select.POLLIN)
    reading_in = True
    try:
        poller.register(in_fd, select.POLLIN)
    except (OSError, ValueError):
        reading_in = False
    while True:
        for fd, _events in poller.poll():
            if fd == master:
                try:
                    data = os.read(master, 65536)
                except OSError as e:
                    if e.errno == errno.EIO:
                        return
                    raise
                if not data:
                    return
                _write_all(out_fd, data)
            elif reading_in:
                try:
                    data = os.read(in_fd, 65536)
                except OSError:
                    data = b""
                if data:
                    try:
                        _write_all(master, data)
                    except OSError as e:
                        if e.errno != errno.EIO:
                            raise
                else:  # EOF on our input: stop reading it, keep showing output
                    poller.unregister(in_fd)
                    reading_in = False
