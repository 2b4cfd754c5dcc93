"""``attach`` and ``start -a``: the client side of minirun-shim's attach socket.

A detached container's shim listens on ``containers/<id>/attach.sock`` (0600) and sends
every attached client the container's output, as it writes the log; the client sends
input, EOF and window sizes. Every message is a frame with Docker's stdcopy header (8
bytes: type, 3 zero bytes, big-endian u32 length), so stdout and stderr of a non-tty
container stay apart (minirun/shim/shim.c has the whole protocol).

The socket path is reached as ``/proc/self/fd/<dir fd>/attach.sock``: sun_path holds
108 bytes, a store root may be longer.

Docker's rules, followed here:

* a tty container with a terminal on our stdin: the terminal goes to raw mode for the
  attachment (restored on every way out) and the window size follows ours (SIGWINCH);
* the detach keys (``ctrl-p,ctrl-q`` by default) leave the container running; Docker's
  client then says ``read escape sequence`` and exits 1;
* our stdin's EOF closes the container's stdin only for StdinOnce (an attached ``run -i``,
  ``start -ai``); a ``run -di`` container's stdin stays open for the next client, a tty's
  is never closed;
* ``--sig-proxy`` (default true) forwards the signals we get to the container's init,
  for a non-tty container only (with a tty, ^C is a byte for its line discipline);
* when the container exits, attach exits with its status (after the shim's cleanup has
  recorded it, so ``inspect`` and ``--rm`` are done by then).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import struct
import termios
from dataclasses import dataclass
from typing import Any

from minirun.container.records import ContainerRecord, Containers, process_start_time
from minirun.errors import ContainerError, ContainerNotFound, UsageError
from minirun.image.store import Store
from minirun.runtime.tty import raw_terminal

DEFAULT_DETACH_KEYS = "ctrl-p,ctrl-q"

# client -> shim frame types, shim -> client frame types (minirun/shim/shim.c)
C_STDIN, C_EOF, C_RESIZE = 0, 1, 2
S_STDOUT, S_STDERR, S_EXIT = 1, 2, 3

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
           signal.SIGUSR2)  # fmt: skip
_CLEANUP_WAIT = 15.0  # seconds to wait for the shim's cleanup after the exit status
_OUT_CAP = 1 << 20  # stop reading our stdin while this much input waits for the shim


@dataclass(frozen=True)
class AttachOptions:
    """``attach``'s flags: ``stdin`` False is ``--no-stdin``; ``detach_keys`` is raw bytes
    (see :func:`parse_detach_keys`), empty for none."""

    stdin: bool = True
    sig_proxy: bool = True
    detach_keys: bytes = b"\x10\x11"


@dataclass(frozen=True)
class AttachResult:
    """How an attachment ended: ``detached`` by the detach keys (the container runs on),
    or the container's exit status in ``code``."""

    code: int
    detached: bool = False


def parse_detach_keys(text: str) -> bytes:
    """Docker's ``--detach-keys``: comma-separated keys, each one character or
    ``ctrl-<x>`` with x one of a-z @ [ \\ ] ^ _ (``ctrl-p,ctrl-q`` -> b"\\x10\\x11")."""
    out = bytearray()
    for key in text.split(","):
        if len(key) == 1 and key.isascii():
            out.append(ord(key))
            continue
        low = key.lower()
        if low.startswith("ctrl-") and len(key) == 6:
            c = low[5]
            if "a" <= c <= "z":
                out.append(ord(c) - ord("a") + 1)
                continue
            specials = {"@": 0, "[": 27, "\\": 28, "]": 29, "^": 30, "_": 31}
            if c in specials:
                out.append(specials[c])
                continue
        raise UsageError(f"Invalid detach keys ({text}) provided: use a comma-separated list of "
                         "characters or ctrl-<a-z, @, [, \\, ], ^, _> (e.g. ctrl-p,ctrl-q)")
    return bytes(out)


def socket_path(containers: Containers, rec: ContainerRecord) -> str:
    from minirun.container.lifecycle import ATTACH_SOCKET

    return str(containers.dir(rec.id) / ATTACH_SOCKET)


def connect(store: Store, rec: ContainerRecord, *, just_started: bool = False) -> socket.socket:
    """A connection to the container's shim; ContainerError with Docker's words when the
    container is not running. ``just_started``: its shim waits for us (start -a), even if
    the container already exited."""
    containers = Containers(store)
    if not just_started:
        rec = containers.refresh(rec)
        if not rec.alive():
            raise ContainerError("You cannot attach to a stopped container, start it first")
        if rec.paused():
            raise ContainerError("You cannot attach to a paused container, unpause it first")
    dfd = os.open(containers.dir(rec.id), os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        from minirun.container.lifecycle import ATTACH_SOCKET

        sock.connect(f"/proc/self/fd/{dfd}/{ATTACH_SOCKET}")
    except (FileNotFoundError, ConnectionRefusedError):
        sock.close()
        if not containers.refresh(containers.get(rec.id)).alive():
            raise ContainerError("You cannot attach to a stopped container, start it first") from None
        raise ContainerError(
            f"container {rec.name} cannot be attached to: it is supervised by the 'minirun run' "
            "that started it in the foreground (attach works for containers started with "
            "run -d or start)") from None
    except BaseException:
        sock.close()
        raise
    finally:
        os.close(dfd)
    return sock


def _frame(kind: int, payload: bytes = b"") -> bytes:
    return struct.pack(">B3xI", kind, len(payload)) + payload


def _winsize(fd: int) -> tuple[int, int] | None:
    import fcntl

    try:
        rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
    except OSError:
        return None
    return (rows, cols) if rows and cols else None


class _Escape:
    """Docker's detach-key matching: a byte that continues the sequence is held back; a
    byte that breaks it releases what was held."""

    def __init__(self, keys: bytes) -> None:
        self.keys = keys
        self.held = 0

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        """(what to send on, whether the whole sequence was typed)."""
        keys = self.keys
        if not keys or (not self.held and keys[0] not in data):
            return data, False
        out = bytearray()
        for b in data:
            if b == keys[self.held]:
                self.held += 1
                if self.held == len(keys):
                    return bytes(out), True
                continue
            out += keys[:self.held]
            self.held = 0
            if b == keys[0]:
                self.held = 1
                if len(keys) == 1:
                    return bytes(out), True
            else:
                out.append(b)
        return bytes(out), False


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            select.select([], [fd], [])
            continue
        view = view[n:]


def _init_pidfd(rec: ContainerRecord) -> int | None:
    """A pidfd of the container's init, checked against its recorded start time."""
    try:
        fd = os.pidfd_open(rec.pid)
    except (ProcessLookupError, OSError):
        return None
    if process_start_time(rec.pid) != rec.pid_start:
        os.close(fd)
        return None
    return fd


def _peer_pidfd(sock: socket.socket) -> int | None:
    """A pidfd of the shim at the other end (it becomes the cleanup, same pid)."""
    try:
        pid, _uid, _gid = struct.unpack("3i", sock.getsockopt(
            socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
        return os.pidfd_open(pid)
    except OSError:
        return None


def attach(store: Store, rec: ContainerRecord, opts: AttachOptions | None = None, *,
           stdin: int = 0, stdout: int = 1, stderr: int = 2,
           just_started: bool = False) -> AttachResult:
    """Attach our stdio to a running detached container until it exits or we detach."""
    opts = opts or AttachOptions()
    sock = connect(store, rec, just_started=just_started)
    try:
        return _session(store, rec, sock, opts, stdin, stdout, stderr)
    finally:
        sock.close()


def start_attached(store: Store, rec: ContainerRecord, *, stdin: bool,
                   opts: AttachOptions | None = None) -> AttachResult:
    """``start -a [-i]``: start the container through its shim (so its output is logged)
    and attach before the shim copies anything; a running container is just attached."""
    from minirun.container import lifecycle

    opts = opts or AttachOptions()
    opts = AttachOptions(stdin=stdin, sig_proxy=opts.sig_proxy, detach_keys=opts.detach_keys)
    containers = Containers(store)
    rec = containers.refresh(rec)
    if rec.alive():
        return attach(store, rec, opts)
    code = lifecycle.start_detached(store, rec, attach_wait=10.0)
    if code is not None:  # the command could not be exec'd; the runtime said why
        return AttachResult(code)
    return attach(store, containers.get(rec.id), opts, just_started=True)


def _session(store: Store, rec: ContainerRecord, sock: socket.socket, opts: AttachOptions,
             in_fd: int, out_fd: int, err_fd: int) -> AttachResult:
    tty = rec.options.tty
    send_input = opts.stdin and rec.options.interactive
    raw = tty and send_input and os.isatty(in_fd)
    term_fd = in_fd if os.isatty(in_fd) else out_fd if os.isatty(out_fd) else None
    shim = _peer_pidfd(sock)
    init = _init_pidfd(rec) if opts.sig_proxy and not tty else None
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    state: dict[str, Any] = {"resize": tty and term_fd is not None, "stop": 0}
    handlers: dict[int, Any] = {}

    def on_signal(signum: int, _frame: Any) -> None:
        if signum == signal.SIGWINCH:
            state["resize"] = True
        elif init is not None:
            with contextlib.suppress(ProcessLookupError, OSError):
                signal.pidfd_send_signal(init, signum)
        else:
            state["stop"] = signum  # a tty session: leave (terminal restored), container runs on

    old_wakeup = signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    try:
        for sig in ((signal.SIGWINCH,) if tty else ()) + (SIGNALS if (init is not None or raw) else ()):
            handlers[sig] = signal.signal(sig, on_signal)
        with raw_terminal(in_fd) if raw else contextlib.nullcontext():
            return _relay(store, rec, sock, opts, state, send_input, term_fd, wake_r,
                          in_fd, out_fd, err_fd, shim)
    finally:
        signal.set_wakeup_fd(old_wakeup)
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        for fd in (wake_r, wake_w, shim, init):
            if fd is not None:
                os.close(fd)


def _relay(store: Store, rec: ContainerRecord, sock: socket.socket, opts: AttachOptions,
           state: dict[str, Any], send_input: bool, term_fd: int | None, wake_r: int,
           in_fd: int, out_fd: int, err_fd: int, shim: int | None) -> AttachResult:
    escape = _Escape(opts.detach_keys if send_input else b"")
    sfd = sock.fileno()
    sock.setblocking(False)
    pending = bytearray()  # frames for the shim
    inbuf = bytearray()  # what the shim sent, not yet a whole frame
    reading_in = send_input
    code: int | None = None
    while True:
        if state["stop"]:
            return AttachResult(128 + int(state["stop"]))
        if state["resize"] and term_fd is not None:
            state["resize"] = False
            size = _winsize(term_fd)
            if size:
                pending += _frame(C_RESIZE, struct.pack(">HH", *size))
        if pending:
            try:
                n = sock.send(pending)
                del pending[:n]
            except BlockingIOError:
                pass
            except (BrokenPipeError, ConnectionResetError):
                pending.clear()
        poller = select.poll()
        poller.register(sfd, select.POLLIN | (select.POLLOUT if pending else 0))
        poller.register(wake_r, select.POLLIN)
        if reading_in and len(pending) < _OUT_CAP:
            poller.register(in_fd, select.POLLIN)
        for fd, _ev in poller.poll():
            if fd == wake_r:
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_r, 4096)
            elif fd == in_fd:
                try:
                    data = os.read(in_fd, 65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    reading_in = False
                    pending += _frame(C_EOF)
                    continue
                data, detach = escape.feed(data)
                if data:
                    pending += _frame(C_STDIN, data)
                if detach:
                    _flush(sock, pending)
                    return AttachResult(0, detached=True)
            elif fd == sfd:
                try:
                    chunk = sock.recv(65536)
                except BlockingIOError:
                    continue
                except ConnectionResetError:
                    chunk = b""
                if not chunk:
                    return _ended(store, rec, code, shim)
                inbuf += chunk
                while len(inbuf) >= 8:
                    kind, length = struct.unpack(">B3xI", inbuf[:8])
                    if len(inbuf) < 8 + length:
                        break
                    payload = bytes(inbuf[8:8 + length])
                    del inbuf[:8 + length]
                    if kind == S_STDOUT:
                        _write_all(out_fd, payload)
                    elif kind == S_STDERR:
                        _write_all(err_fd, payload)
                    elif kind == S_EXIT:
                        code = int(payload or b"0")


def _flush(sock: socket.socket, pending: bytearray) -> None:
    """What is queued for the shim (input typed before the detach keys), briefly."""
    sock.settimeout(2.0)
    with contextlib.suppress(OSError):
        sock.sendall(pending)


def _ended(store: Store, rec: ContainerRecord, code: int | None, shim: int | None) -> AttachResult:
    """The shim closed the connection: after the exit status, wait for its cleanup (the
    record is final then, --rm done); without one the shim died: the record says."""
    if code is not None:
        if shim is not None:
            select.select([shim], [], [], _CLEANUP_WAIT)
        return AttachResult(code)
    containers = Containers(store)
    try:
        now = containers.refresh(containers.get(rec.id))
    except ContainerNotFound:  # removed meanwhile (rm -f: SIGKILL)
        return AttachResult(137)
    if now.alive():
        raise ContainerError(f"container {rec.name}: the connection to its shim was lost "
                             "(the container still runs; attach again)")
    return AttachResult(now.exit_code)
