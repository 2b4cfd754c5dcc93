"""The one door from the container's setup process to the kernel.

``child.become`` makes every kernel-changing step through a ``Syscalls`` object: the real
one below (each method a thin call into ``linux``, ``mounts``, ``security``, ``tty``), or
``Recorder``, a fake that only writes down what it was asked (youki's ``Syscall`` trait is
the model). So a plain unit test, without root, can assert that for a given config.json
the child unshares, mounts the rootfs, pivots, drops capabilities, loads seccomp and execs
in exactly the right order, and the root-only integration tests prove the real thing.

Nothing here may import lazily: after pivot_root the host's modules are out of reach.
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from minirun.errors import RuntimeFailure
from minirun.runtime import linux, mounts, sealed, security

if TYPE_CHECKING:
    import socket

    from minirun.runtime.config import Hook


class Syscalls:
    """The real kernel."""

    def set_dumpable(self, on: bool) -> None:
        linux.prctl(linux.PR_SET_DUMPABLE, 1 if on else 0)

    def setup_stdio(self, std: tuple[int | None, int | None, int | None], keep: Sequence[int]) -> None:
        """Container stdio onto 0, 1, 2; then close every other host fd but ``keep``.

        Closing matters: an inherited fd to a host directory is how CVE-2024-21626 walked
        out of the container."""
        tmp = [None if fd is None else fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3) for fd in std]
        for target, src in enumerate(tmp):
            if src is not None:
                os.dup2(src, target, inheritable=True)
        lo = 3
        for fd in sorted(keep):
            if fd >= lo:
                os.closerange(lo, fd)
                lo = fd + 1
        os.closerange(lo, 1 << 20)

    def set_umask(self, mask: int) -> None:
        os.umask(mask)

    def write_file(self, path: str, value: str) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)

    def setns(self, fd: int, flag: int) -> None:
        linux.setns(fd, flag)

    def unshare(self, flags: int) -> None:
        linux.unshare(flags)

    def become_root_in_userns(self) -> None:
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)

    def sethostname(self, name: str) -> None:
        linux.sethostname(name)

    def setdomainname(self, name: str) -> None:
        linux.setdomainname(name)

    def loopback_up(self) -> None:
        """ifconfig lo up, with one ioctl: pyroute2 would cost 0.2 s of import for this."""
        siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
        fd = linux.socket(2, 2 | os.O_CLOEXEC, 0)  # AF_INET, SOCK_DGRAM|SOCK_CLOEXEC
        try:
            ifreq = fcntl.ioctl(fd, siocgifflags, struct.pack("16sH22x", b"lo", 0))
            (flags,) = struct.unpack_from("H", ifreq, 16)
            fcntl.ioctl(fd, siocsifflags, struct.pack("16sH22x", b"lo", flags | iff_up))
        finally:
            os.close(fd)

    def set_propagation(self, flags: int) -> None:
        mounts.set_root_propagation(flags)

    def parent_mount_private(self, root: str) -> None:
        mounts.parent_mount_private(root)

    def mount_overlay(self, opts: str, chdir_to: str | None, target: str) -> None:
        mounts.mount_overlay(opts, chdir_to, target)

    def bind_root(self, target: str) -> None:
        mounts.bind_onto_itself(target)

    def open_root(self, target: str) -> int:
        return os.open(target, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)

    def mount_all(self, rootfd: int, ms: Sequence[mounts.Mount], console: bool) -> None:
        mounts.mount_all(rootfd, ms, console=console)

    def create_devices(self, rootfd: int, devices: Sequence[mounts.Device]) -> None:
        mounts.create_devices(rootfd, devices)

    def mask_paths(self, rootfd: int, masked: Sequence[str], readonly: Sequence[str]) -> None:
        mounts.mask_paths(rootfd, masked, readonly)

    def make_dir_in_root(self, rootfd: int, path: str) -> None:
        os.close(mounts.open_in_root(rootfd, path, create="dir"))

    def pivot(self, rootfd: int, no_pivot: bool) -> None:
        mounts.pivot(rootfd, no_pivot)

    def chroot_fd(self, fd: int) -> None:
        os.fchdir(fd)
        os.chroot(".")

    def close(self, fd: int) -> None:
        os.close(fd)

    def open_pty(self, sock: socket.socket, size: tuple[int, int] | None, console: bool) -> int:
        from minirun.runtime import tty

        return tty.child_open_pty(sock, size, console=console)

    def make_controlling(self, slave: int) -> None:
        from minirun.runtime import tty

        tty.child_make_controlling(slave)

    def readonly_root(self) -> None:
        mounts.finalize(True)

    def set_rlimits(self, rlimits: list[tuple[int, int, int]]) -> None:
        security.apply_rlimits(rlimits)

    def chdir(self, path: str) -> None:
        os.chdir(path)
        # CVE-2024-21626: a cwd outside the root (via a leaked host dir fd) shows up as an
        # unreachable path; glibc's getcwd fails with ENOENT for it.
        if not os.getcwd().startswith("/"):
            raise RuntimeFailure(f"cwd {path!r} is outside the container root")

    def load_seccomp(self, flt: Any) -> None:
        from minirun.runtime import seccomp

        seccomp.load(flt)

    def set_user_and_caps(self, user: security.User, caps: security.Caps | None) -> None:
        security.apply_user_and_caps(user, caps)

    def set_no_new_privs(self) -> None:
        security.set_no_new_privs()

    def prepare_exec(self, umask: int, forwarded: Sequence[int]) -> None:
        """Last process-wide settings: umask, default signal dispositions (Python ignores
        SIGPIPE/SIGXFSZ, and ignored signals survive exec), nothing blocked."""
        os.umask(umask)
        for sig in (signal.SIGXFSZ, *forwarded):
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, ())

    def set_pdeathsig(self, sig: int, parent: int) -> None:
        """Get ``sig`` when ``parent`` dies; if it died already (we were reparented before
        the call), act as if the signal came. In a new pid namespace getppid() is 0 (the
        parent is outside it): nothing to compare then."""
        linux.prctl(linux.PR_SET_PDEATHSIG, sig)
        if parent and os.getppid() not in (0, parent):
            os._exit(128 + sig)

    def run_hook(self, hook: Hook, state: bytes, exec_fd: int) -> None:
        run_hook_here(hook, state, exec_fd)

    def rendezvous(self, gate: tuple[int, int], what: bytes) -> bytes:
        """Tell the parent we reached ``what``; wait for its b"G" + 8-digit length +
        payload (the OCI state for hooks). Anything else: the parent gave up."""
        os.write(gate[0], what)
        head = _read_exact(gate[1], 9)
        if len(head) != 9 or head[:1] != b"G":
            os._exit(1)
        return _read_exact(gate[1], int(head[1:]))

    def wait_joined(self, gate: tuple[int, int]) -> None:
        """Wait for the parent's b"J": it has moved us into the container's cgroup."""
        if _read_exact(gate[1], 1) != b"J":
            os._exit(1)  # the parent gave up (its error is the report)

    def wait_for_start(self, fifo_fd: int) -> None:
        """Block until ``start`` opens the exec fifo (runc's exec.fifo): the fifo was opened
        O_PATH before pivot_root, and is reopened for writing through /proc/self/fd."""
        # A created container must die of the signals a waiting runc init dies of
        # (`kill ID` = SIGTERM before start). This is PID 1 of its namespace: the kernel
        # delivers a signal from outside only if a handler is installed, so install one
        # that exits (prepare_exec puts the defaults back before exec).
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
                    signal.SIGUSR1, signal.SIGUSR2):  # fmt: skip
            signal.signal(sig, _exit_on_signal)
        signal.pthread_sigmask(signal.SIG_SETMASK, ())
        fd = os.open(f"/proc/self/fd/{fifo_fd}", os.O_WRONLY | os.O_CLOEXEC)
        os.close(fifo_fd)
        # The write end stays open (close-on-exec) until the exec of the command: `start`
        # reads to EOF, so it returns (and runs poststart hooks) only after the
        # startContainer hooks, as the spec orders them.
        os.write(fd, b"0")

    def lookup(self, name: str, path: str) -> str:
        return lookup(name, path)

    def fork(self) -> int:
        return os.fork()

    def rendezvous_pid(self, gate: tuple[int, int] | None, pid: int) -> None:
        if gate is not None:
            os.write(gate[0], b"P%010d" % pid)

    def execve(self, path: str, args: list[str], env: dict[str, str], exec_fd: int, sync: int,
               to_stderr: bool, seccomp: Any = None) -> None:  # fmt: skip
        """Exec the command through the sealed minirun-exec (runtime/sealed.py), never
        directly. ``seccomp``: a filter minirun-exec installs right before its execve (the
        no_new_privs case), so the container's profile only has to allow execve."""
        sfd, flags = -1, 0
        if seccomp is not None:
            sfd, w = os.pipe()  # <= 32 KiB of BPF: fits the pipe's buffer
            try:
                os.write(w, seccomp.bpf)
            finally:
                os.close(w)
            os.set_inheritable(sfd, True)
            flags = seccomp.flags
        os.set_inheritable(sync, True)  # minirun-exec reports a failed execve on it
        argv = sealed.argv(sync, to_stderr, sfd, flags, path, args)
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        try:
            try:
                os.execve(exec_fd, argv, env)  # fexecve: execveat(fd, "", AT_EMPTY_PATH)
            except PermissionError:
                # a seccomp profile loaded earlier (no no_new_privs) that denies execveat
                # but allows execve: the same sealed file, by its /proc path
                os.execve(f"/proc/self/fd/{exec_fd}", argv, env)
        finally:
            signal.signal(signal.SIGPIPE, signal.SIG_IGN)


def _exit_on_signal(signum: int, _frame: Any) -> None:
    os._exit(128 + signum)


def _read_exact(fd: int, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = os.read(fd, n - len(out))
        if not chunk:
            break
        out += chunk
    return out


def lookup(name: str, path: str) -> str:
    """Go's exec.LookPath inside the container: the file ``execve`` would run, or OSError
    (ENOENT not found, EACCES not executable). Done before the container reports "created",
    as runc does, so a missing command fails ``create``, not a later ``start``."""
    if "/" in name:
        candidates = [name]
    else:
        candidates = [os.path.join(d or ".", name) for d in path.split(":")]
    denied = False
    for c in candidates:
        try:
            st = os.stat(c)
        except OSError:
            continue
        if (st.st_mode & 0o170000) == 0o040000:
            denied = True
            continue
        if os.access(c, os.X_OK):
            return c
        denied = True
    raise OSError(errno.EACCES if denied else errno.ENOENT, name)


def run_hook_here(hook: Hook, state: bytes, exec_fd: int = -1) -> None:
    """Run one OCI hook with the state on its stdin; a non-zero exit or a timeout is an
    error (the hook is killed on timeout). Uses only fork/exec/waitpid, so it also works
    from the container's setup process (createContainer, startContainer hooks), where
    ``exec_fd`` is the sealed minirun-exec: a hook inside the container is exec'd
    through it, as the container's command is (CVE-2019-5736)."""
    import time

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the hook process
        try:
            os.close(w)
            os.dup2(r, 0)
            env = dict(e.partition("=")[::2] for e in hook.env)
            args = list(hook.args) or [hook.path]
            if exec_fd >= 0:
                os.execve(exec_fd, sealed.argv(-1, True, -1, 0, hook.path, args), env)
            os.execve(hook.path, args, env)
        finally:
            os._exit(127)
    os.close(r)
    try:
        os.write(w, state)
    except OSError:
        pass  # a hook that does not read its stdin is fine
    os.close(w)
    deadline = None if hook.timeout is None else time.monotonic() + hook.timeout
    while True:
        done, status = os.waitpid(pid, 0 if deadline is None else os.WNOHANG)
        if done:
            break
        if deadline is not None and time.monotonic() >= deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise RuntimeFailure(f"hook {hook.path} timed out after {hook.timeout:g}s")
        time.sleep(0.005)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeFailure(f"hook {hook.path} failed with exit status {code}")


class ExecReached(Exception):
    """Raised by ``Recorder.execve``: in a test, the point where the real child is replaced."""


class Recorder(Syscalls):
    """A fake kernel for unit tests: records ``(call, args)`` and does nothing. Fds it
    hands out are fake numbers; ``execve`` raises ExecReached."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self._fd = 100

    def names(self) -> list[str]:
        return [c for c, _ in self.calls]

    def _rec(self, name: str, *args: Any) -> None:
        self.calls.append((name, args))

    def __getattribute__(self, name: str) -> Any:
        real = object.__getattribute__(self, name)
        if name.startswith("_") or name in ("calls", "names") or not callable(real):
            return real
        if name in ("open_root", "open_pty", "lookup", "execve", "rendezvous", "fork"):
            return real

        def record(*args: Any) -> None:
            object.__getattribute__(self, "_rec")(name, *args)

        return record

    def open_root(self, target: str) -> int:
        self._rec("open_root", target)
        self._fd += 1
        return self._fd

    def open_pty(self, sock: socket.socket, size: tuple[int, int] | None, console: bool) -> int:
        self._rec("open_pty", size, console)
        return 99

    def fork(self) -> int:
        self._rec("fork")
        return 0  # carry on as the new init

    def rendezvous(self, gate: tuple[int, int], what: bytes) -> bytes:
        self._rec("rendezvous", what)
        return b"{}"

    def lookup(self, name: str, path: str) -> str:
        self._rec("lookup", name)
        return name if "/" in name else "/bin/" + name

    def execve(self, path: str, args: list[str], env: dict[str, str], exec_fd: int, sync: int,
               to_stderr: bool, seccomp: Any = None) -> None:  # fmt: skip
        self._rec("execve", path, args)
        if seccomp is not None:
            self._rec("seccomp_at_exec", seccomp)
        raise ExecReached(path)


REAL = Syscalls()
