"""The parent's side of the child protocol (runtime/child.py): the sync pipe's records,
the exit status, signal forwarding and the pty copy loop of an attached container."""

from __future__ import annotations

import errno
import fcntl
import os
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from minirun.errors import KernelUnsupported, RuntimeFailure
from minirun.runtime.child import EXEC_FAILED, FORWARDED_SIGNALS

if TYPE_CHECKING:
    import socket


class CommandNotRunnable(RuntimeFailure):
    """The container's command could not be executed: 127 not found, 126 not executable
    (Docker's statuses; the message is runc's, which Podman and containerd parse)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def high_cloexec(fd: int) -> int:
    """Move a sync fd to >= 3 so dup2-ing stdio onto 0..2 can never clobber it."""
    if fd >= 3:
        return fd
    new = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
    os.close(fd)
    return new


def pipe() -> tuple[int, int]:
    r, w = os.pipe2(os.O_CLOEXEC)
    return high_cloexec(r), high_cloexec(w)


def read_all(fd: int) -> bytes:
    out = b""
    while chunk := os.read(fd, 4096):
        out += chunk
    return out


def raise_child_failure(report: bytes) -> None:
    """Turn a child's failure record into the exception it stands for."""
    kind, body = report[:1], report[1:]
    if kind == EXEC_FAILED:
        err_s, _, argv0 = body.partition(b"\0")
        err = int(err_s or 0)
        name = argv0.decode(errors="replace")
        if err == errno.ENOENT:
            reason = "executable file not found in $PATH" if "/" not in name else (
                f"stat {name}: no such file or directory")  # fmt: skip
            code = 127
        else:
            reason = os.strerror(err).lower()
            code = 126
        raise CommandNotRunnable(f'exec: "{name}": {reason}', code)
    _err, _, rest = body.partition(b"\0")
    cls_name, _, message = rest.partition(b"\0")
    cls = KernelUnsupported if cls_name == b"KernelUnsupported" else RuntimeFailure
    raise cls(message.decode(errors="replace") or "container setup failed")


def exit_status(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code  # killed by signal N -> 128+N


def receive_master(sock: socket.socket) -> int | None:
    from minirun.runtime import tty

    return tty.receive_master(sock)


def wait(
    pid: int,
    *,
    master: int | None = None,
    stdin: int | None = None,
    stdout: int | None = None,
    old_mask: Any = None,
    on_running: Callable[[], None] | None = None,
    reap: bool = True,
) -> int:
    """Supervise an attached container: forward signals to it (pidfd: no pid-reuse race),
    copy its pty when it has one, wait for it and return Docker's exit status. If this
    fails half-way (a tty error, ^C in the copy loop...) the container is killed.

    ``old_mask``: the signal mask to restore once the handlers point at the container
    (the caller blocked the forwarded signals before fork). ``reap=False``: ``pid`` is not
    our child (a runtime ``start`` of a container another process created); then wait for
    it through its pidfd and report 0."""
    pidfd = os.pidfd_open(pid)
    done = False
    old_handlers: dict[int, Any] = {}

    def forward(signum: int, _frame: Any) -> None:
        try:
            signal.pidfd_send_signal(pidfd, signum)
        except ProcessLookupError:
            pass

    try:
        for sig in FORWARDED_SIGNALS:
            if sig == signal.SIGWINCH and master is not None:
                continue  # host_terminal copies the window size instead
            try:
                old_handlers[sig] = signal.signal(sig, forward)
            except ValueError:  # not the main thread: Python cannot catch signals here
                break
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask if old_mask is not None else ())
        if on_running is not None:
            on_running()
        if master is not None:
            from minirun.runtime import tty

            in_fd = 0 if stdin is None else stdin
            out_fd = 1 if stdout is None else stdout
            with tty.host_terminal(in_fd, master):
                tty.relay(master, in_fd, out_fd)
        if not reap:
            import select

            select.select([pidfd], [], [])
            done = True
            return 0
        _, status = os.waitpid(pid, 0)  # EINTR is retried by Python (PEP 475)
        done = True
        return exit_status(status)
    finally:
        if not done:
            try:
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            except ProcessLookupError:
                pass
            if reap:
                os.waitpid(pid, 0)
        for signum, handler in old_handlers.items():
            signal.signal(signum, handler)
        if old_mask is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        os.close(pidfd)
