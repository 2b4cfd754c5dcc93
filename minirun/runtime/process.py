"""Start one container from an OCI runtime spec and wait for it: fork, isolate, exec.

Shape of a run (parent = the minirun process, child = the future container init):

  parent: parse the spec (errors raise here, cleanly) → block forwarded signals →
          unshare(CLONE_NEWPID) → fork → setns back to its own PID namespace
  child:  non-dumpable → stdio → close host fds → unshare the other namespaces →
          / private → overlay → spec mounts, /dev, masked paths → pivot_root →
          [pty] → hostname, rlimits, user, caps, no_new_privs → chdir → exec
  parent: read the CLOEXEC sync pipe (EOF = exec happened; a record = the step that
          failed) → on_start(pid) → [copy the pty] → wait → Docker's exit status

PID namespace, decided by measuring: Python has no clone(2) with flags. The parent calls
unshare(CLONE_NEWPID) right before its one fork, so the child is PID 1 of the new namespace
with a single fork (~0.7 ms; an intermediate child + grandchild costs a second fork and a
subreaper). unshare(CLONE_NEWPID) only changes where the parent's *next* children go, so
right after the fork the parent setns()es back to its own PID namespace fd: later forks
(subprocess, a second run() in the same process, pytest) behave normally.
"""

from __future__ import annotations

import fcntl
import os
import signal
import struct
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from minirun.errors import KernelUnsupported, RuntimeFailure
from minirun.runtime import SECCOMP_CACHE_ANNOTATION, linux, mounts, security

if TYPE_CHECKING:
    import socket

    from minirun.runtime import OverlayRootfs, Stdio
    from minirun.runtime.mounts import Device, Mount

# The child may import nothing: after pivot_root the host's site-packages are gone. Every
# module it uses is imported by the parent, before fork.

FORWARDED_SIGNALS = (
    signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2,
)  # fmt: skip

_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# sync-pipe records, child -> parent: b"X<errno>\0<argv0>" (exec failed) or
# b"S<errno>\0<kind>\0<message>" (a setup step failed; kind picks the exception class)
_EXEC_FAILED = b"X"
_SETUP_FAILED = b"S"


class _Plan:
    """Everything the child needs, computed in the parent before fork (a plain slotted
    class: a 21-field NamedTuple costs ~1 ms to import)."""

    __slots__ = (
        "args", "env", "cwd", "user", "caps", "rlimits", "no_new_privs", "terminal",
        "console_size", "hostname", "ns_flags", "new_pid_ns", "overlay_opts", "overlay_chdir",
        "target", "mounts", "devices", "masked", "readonly_paths", "readonly_root", "no_pivot",
        "cgroup_procs", "seccomp",
    )  # fmt: skip

    args: list[str]
    env: dict[str, str]
    cwd: str
    user: security.User
    caps: security.Caps | None
    rlimits: list[tuple[int, int, int]]
    no_new_privs: bool
    terminal: bool
    console_size: dict[str, Any] | None
    hostname: str | None
    ns_flags: int  # all but CLONE_NEWPID, which the parent does
    new_pid_ns: bool
    overlay_opts: str
    overlay_chdir: str | None
    target: str
    mounts: list[Mount]
    devices: list[Device]
    masked: list[str]
    readonly_paths: list[str]
    readonly_root: bool
    no_pivot: bool
    cgroup_procs: list[str]  # cgroup.procs files the child joins before its cgroup namespace
    seccomp: Any  # a compiled seccomp.Filter, or None (unconfined)


def _plan(spec: dict[str, Any], rootfs: OverlayRootfs, no_pivot: bool) -> _Plan:
    proc = spec.get("process") or {}
    args = list(proc.get("args") or [])
    if not args:
        raise RuntimeFailure("spec has no process.args: no command to run")
    env: dict[str, str] = {}
    for item in proc.get("env") or []:
        key, _, value = item.partition("=")
        env[key] = value
    env.setdefault("PATH", _DEFAULT_PATH)
    linux_ = spec.get("linux") or {}
    ns_flags = 0
    for ns in linux_.get("namespaces") or []:
        if ns.get("path"):
            raise RuntimeFailure(f"joining an existing {ns.get('type')} namespace is not supported")
        try:
            ns_flags |= linux.NAMESPACE_FLAGS[ns["type"]]
        except KeyError:
            raise RuntimeFailure(f"unknown namespace type {ns.get('type')!r}") from None
    if ns_flags & linux.CLONE_NEWUSER:
        raise RuntimeFailure("user namespaces are not supported yet")
    if not ns_flags & linux.CLONE_NEWNS:
        raise RuntimeFailure("a mount namespace is required (the rootfs is mounted in it)")
    opts, chdir_to = mounts.overlay_options(rootfs.lowerdirs, rootfs.upperdir, rootfs.workdir)
    root = spec.get("root") or {}
    p = _Plan()
    p.args = args
    p.env = env
    p.cwd = proc.get("cwd") or "/"
    p.user = security.parse_user(proc.get("user"))
    p.caps = security.parse_caps(proc.get("capabilities"))
    p.rlimits = security.parse_rlimits(proc.get("rlimits"))
    p.no_new_privs = bool(proc.get("noNewPrivileges"))
    p.terminal = bool(proc.get("terminal"))
    p.console_size = proc.get("consoleSize")
    p.hostname = spec.get("hostname") if ns_flags & linux.CLONE_NEWUTS else None
    p.ns_flags = ns_flags & ~linux.CLONE_NEWPID
    p.new_pid_ns = bool(ns_flags & linux.CLONE_NEWPID)
    p.overlay_opts = opts
    p.overlay_chdir = chdir_to
    p.target = rootfs.target
    p.mounts = mounts.parse_mounts(spec.get("mounts") or [])
    p.devices = mounts.parse_devices(linux_.get("devices") or [])
    p.masked = list(linux_.get("maskedPaths") or [])
    p.readonly_paths = list(linux_.get("readonlyPaths") or [])
    p.readonly_root = bool(root.get("readonly"))
    p.no_pivot = no_pivot
    p.cgroup_procs = []
    p.seccomp = None
    if linux_.get("seccomp"):
        # compiled here, in the parent: every error is a clean exception, and the child
        # only has one syscall left to make (it cannot import anything after pivot_root)
        from minirun.runtime import seccomp

        cache = (spec.get("annotations") or {}).get(SECCOMP_CACHE_ANNOTATION)
        p.seccomp = seccomp.compile_filter(linux_["seccomp"], cache_dir=cache)
    return p



def _channels(terminal: bool) -> tuple[int, int, socket.socket | None, socket.socket | None]:
    """The child→parent sync pipe (EOF = exec happened; a record = what failed), and with a
    terminal the socketpair the child sends the pty master through."""
    r, w = os.pipe2(os.O_CLOEXEC)
    r, w = _high_cloexec(r), _high_cloexec(w)
    if not terminal:
        return r, w, None, None
    import socket

    from minirun.runtime import tty  # noqa: F401 - imported here so the child need not

    psock, csock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    return r, w, psock, csock


def _high_cloexec(fd: int) -> int:
    """Move a sync fd to >= 3 so dup2-ing stdio onto 0..2 can never clobber it."""
    if fd >= 3:
        return fd
    new = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
    os.close(fd)
    return new


def run(
    spec: dict[str, Any],
    rootfs: OverlayRootfs,
    *,
    no_pivot: bool = False,
    stdio: Stdio | None = None,
    on_start: Callable[[int], None] | None = None,
    prestart: Callable[[int], None] | None = None,
    cgroup_procs: Sequence[str] = (),
) -> int:
    """Run the container described by ``spec`` on ``rootfs``; return Docker's exit status.

    ``prestart(pid)`` runs in the parent once the child's namespaces exist and before it
    mounts anything or execs (networking moves a veth into the new network namespace
    there); the child waits for it. ``cgroup_procs`` are cgroup.procs files the child
    writes itself into before it unshares its cgroup namespace, so that namespace's root
    is the container's own cgroup."""
    pid, _, std, r, psock, old_mask = _launch(spec, rootfs, no_pivot, stdio, prestart, cgroup_procs)
    return _supervise(pid, std, r, psock, old_mask, on_start)


class Started:
    """A container started in the background (``run -d``): its init's host pid, the pty
    master when it has a terminal, or the exit status when its command could not be
    exec'd (then ``pid`` is already reaped)."""

    __slots__ = ("pid", "master", "exec_failed")

    def __init__(self, pid: int, master: int | None, exec_failed: int | None) -> None:
        self.pid = pid
        self.master = master
        self.exec_failed = exec_failed


def start(
    spec: dict[str, Any],
    rootfs: OverlayRootfs,
    *,
    no_pivot: bool = False,
    stdio: Stdio | None = None,
    prestart: Callable[[int], None] | None = None,
    cgroup_procs: Sequence[str] = (),
) -> Started:
    """Start the container and return once its command runs, without waiting for it: the
    caller becomes (or execs into) its supervisor. No signals are forwarded."""
    pid, plan, _std, r, psock, old_mask = _launch(spec, rootfs, no_pivot, stdio, prestart, cgroup_procs)
    signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    master: int | None = None
    try:
        if psock is not None:
            from minirun.runtime import tty

            master = tty.receive_master(psock)
        report = b""
        while chunk := os.read(r, 4096):
            report += chunk
    except BaseException:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        if master is not None:
            os.close(master)
        raise
    finally:
        os.close(r)
        if psock is not None:
            psock.close()
    if report:
        os.waitpid(pid, 0)
        if master is not None:
            os.close(master)
        return Started(pid, None, _child_failed(report))
    return Started(pid, master, None)


def _launch(
    spec: dict[str, Any],
    rootfs: OverlayRootfs,
    no_pivot: bool,
    stdio: Stdio | None,
    prestart: Callable[[int], None] | None,
    cgroup_procs: Sequence[str],
) -> tuple[int, _Plan, tuple[int | None, int | None, int | None], int, socket.socket | None, set[int | signal.Signals]]:
    """Fork the child and run the prestart hook. Returns with the forwarded signals still
    blocked (their old mask is returned), so the caller decides who gets them."""
    plan = _plan(spec, rootfs, no_pivot)
    plan.cgroup_procs = list(cgroup_procs)
    std = (stdio.stdin, stdio.stdout, stdio.stderr) if stdio is not None else (None, None, None)
    r, w, psock, csock = _channels(plan.terminal)
    gate: tuple[int, int, int, int] | None = None  # ready (r, w), go (r, w) for prestart
    if prestart is not None:
        rr, rw = os.pipe2(os.O_CLOEXEC)
        gr, gw = os.pipe2(os.O_CLOEXEC)
        gate = (_high_cloexec(rr), _high_cloexec(rw), _high_cloexec(gr), _high_cloexec(gw))
    keep = sorted([w] + ([csock.fileno()] if csock is not None else [])
                  + ([gate[1], gate[2]] if gate is not None else []))

    # Forwarded signals stay blocked until their handlers point at the child, so a ^C or a
    # `kill` in between is delivered to the container, not lost or fatal to minirun.
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED_SIGNALS)
    own_pidns = -1
    pid = -1
    try:
        if plan.new_pid_ns:
            own_pidns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
            _raise_setup(linux.unshare, linux.CLONE_NEWPID, what="unshare(CLONE_NEWPID)")
        try:
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child never returns
                _child(plan, std, w, csock, keep, gate)
        finally:
            if own_pidns >= 0:
                # back to our own PID namespace for every later fork (see module docstring)
                linux.setns(own_pidns, linux.CLONE_NEWPID)
                os.close(own_pidns)
    except BaseException:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        os.close(r)
        os.close(w)
        for s in (psock, csock):
            if s is not None:
                s.close()
        for fd in gate or ():
            os.close(fd)
        raise
    os.close(w)
    if csock is not None:
        csock.close()
    if gate is not None and prestart is not None:
        os.close(gate[1])
        os.close(gate[2])
        try:
            _run_prestart(pid, gate[0], gate[3], prestart)
        except BaseException:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(r)
            if psock is not None:
                psock.close()
            raise
    return pid, plan, std, r, psock, old_mask


def _run_prestart(pid: int, ready: int, go: int, prestart: Callable[[int], None]) -> None:
    """Wait until the child's namespaces exist, run the hook, then let the child go on.
    If the child failed before it got there (EOF), the sync pipe will say why."""
    try:
        if os.read(ready, 1) == b"R":
            prestart(pid)
            os.write(go, b"G")
    finally:
        os.close(ready)
        os.close(go)


def _raise_setup(fn: Callable[[int], None], arg: int, *, what: str) -> None:
    try:
        fn(arg)
    except OSError as e:
        raise RuntimeFailure(f"{what} failed: {e.strerror}") from e


def _supervise(
    pid: int,
    std: tuple[int | None, int | None, int | None],
    r: int,
    psock: socket.socket | None,
    old_mask: set[int | signal.Signals],
    on_start: Callable[[int], None] | None,
) -> int:
    pidfd = os.pidfd_open(pid)  # not reaped yet, so this is our child: no pid-reuse race
    reaped = False
    master: int | None = None
    old_handlers: dict[int, Any] = {}

    def forward(signum: int, _frame: Any) -> None:
        try:
            signal.pidfd_send_signal(pidfd, signum)
        except ProcessLookupError:
            pass

    try:
        for sig in FORWARDED_SIGNALS:
            try:
                old_handlers[sig] = signal.signal(sig, forward)
            except ValueError:  # not the main thread: Python cannot catch signals here
                break
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)

        if psock is not None:
            from minirun.runtime import tty

            master = tty.receive_master(psock)
            psock.close()
            psock = None
        report = b""
        while chunk := os.read(r, 4096):
            report += chunk
        os.close(r)
        r = -1
        if report:
            _, status = os.waitpid(pid, 0)
            reaped = True
            return _child_failed(report)
        if on_start is not None:
            on_start(pid)
        if master is not None:
            from minirun.runtime import tty

            in_fd = 0 if std[0] is None else std[0]
            out_fd = 1 if std[1] is None else std[1]
            with tty.host_terminal(in_fd, master):
                tty.relay(master, in_fd, out_fd)
        _, status = os.waitpid(pid, 0)  # EINTR is retried by Python (PEP 475)
        reaped = True
        code = os.waitstatus_to_exitcode(status)
        return 128 - code if code < 0 else code  # killed by signal N -> 128+N
    finally:
        if not reaped:
            # we are failing (on_start raised, a tty error...): take the container down too
            try:
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(pid, 0)
        for signum, handler in old_handlers.items():
            signal.signal(signum, handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        os.close(pidfd)
        if master is not None:
            os.close(master)
        if r >= 0:
            os.close(r)
        if psock is not None:
            psock.close()


def _child_failed(report: bytes) -> int:
    kind, body = report[:1], report[1:]
    if kind == _EXEC_FAILED:
        err_s, _, argv0 = body.partition(b"\0")
        err = int(err_s)
        name = argv0.decode(errors="replace")
        import errno

        if err == errno.ENOENT:
            reason = "executable file not found in $PATH" if "/" not in name else (
                f"stat {name}: no such file or directory")  # fmt: skip
            code = 127
        else:
            reason = os.strerror(err).lower()
            code = 126
        # The one user-facing line of the runtime (Docker prints the same): the CLI never
        # sees it as an exception, exec failures are exit statuses.
        os.write(2, f'minirun: exec: "{name}": {reason}\n'.encode())
        return code
    err_s, _, rest = body.partition(b"\0")
    cls_name, _, message = rest.partition(b"\0")
    cls = KernelUnsupported if cls_name == b"KernelUnsupported" else RuntimeFailure
    raise cls(message.decode(errors="replace"))


# --- the child -------------------------------------------------------------------------------


def _child(
    plan: _Plan,
    std: tuple[int | None, int | None, int | None],
    w: int,
    csock: socket.socket | None,
    keep: list[int],
    gate: tuple[int, int, int, int] | None,
) -> None:
    """Never returns: exec()s the container command or _exit()s after reporting."""
    step = "start"
    try:
        # CVE-2019-5736: until exec this process IS the host's python; non-dumpable keeps
        # container processes from opening it via /proc/<pid>/exe (or ptrace-ing it).
        # exec resets the flag for the container's own binary.
        linux.prctl(linux.PR_SET_DUMPABLE, 0)
        step = "stdio"
        _setup_stdio(std, keep)
        os.umask(0)  # device nodes and mount points get exactly the modes we ask for
        if plan.cgroup_procs:
            step = "cgroup"
            for procs in plan.cgroup_procs:
                with open(procs, "w") as f:
                    f.write("0")
        step = "namespaces"
        linux.unshare(plan.ns_flags)
        if plan.hostname is not None:
            step = "sethostname"
            linux.sethostname(plan.hostname)
        if plan.ns_flags & linux.CLONE_NEWNET:
            step = "loopback"
            _loopback_up()
        if gate is not None:
            step = "prestart hooks"
            os.write(gate[1], b"R")
            if os.read(gate[2], 1) != b"G":  # the parent gave up (its hook failed)
                os._exit(1)
            os.close(gate[1])
            os.close(gate[2])
        step = "mount"
        mounts.make_root_private()
        mounts.mount_overlay(plan.overlay_opts, plan.overlay_chdir, plan.target)
        rootfd = os.open(plan.target, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        mounts.mount_all(rootfd, plan.mounts, console=plan.terminal)
        mounts.create_devices(rootfd, plan.devices)
        mounts.mask_paths(rootfd, plan.masked, plan.readonly_paths)
        # Docker creates a missing WORKDIR; do it inside the root, confined.
        os.close(mounts.open_in_root(rootfd, plan.cwd, create="dir"))
        step = "pivot_root" if not plan.no_pivot else "chroot"
        mounts.pivot(rootfd, plan.no_pivot)
        os.close(rootfd)
        slave = -1
        if csock is not None:
            step = "terminal"
            from minirun.runtime import tty

            slave = tty.child_open_pty(csock, plan.console_size)
        step = "readonly root"
        mounts.finalize(plan.readonly_root)
        if slave >= 0:
            tty.child_make_controlling(slave)
        step = "rlimits"
        security.apply_rlimits(plan.rlimits)
        step = "chdir"
        os.chdir(plan.cwd)
        # CVE-2024-21626: a cwd outside the root (via a leaked host dir fd) shows up as an
        # unreachable path; glibc's getcwd fails with ENOENT for it.
        if not os.getcwd().startswith("/"):
            raise RuntimeFailure(f"cwd {plan.cwd!r} is outside the container root")
        if plan.seccomp is not None and not plan.no_new_privs:
            # Without no_new_privs, installing a filter needs CAP_SYS_ADMIN: load it now,
            # before the capability drop and setuid (runc's order). What follows (setgroups,
            # setres*id, capset, prctl, rt_sig*, execve) is allowed by the default profile.
            step = "seccomp"
            from minirun.runtime import seccomp

            seccomp.load(plan.seccomp)
        step = "user and capabilities"
        security.apply_user_and_caps(plan.user, plan.caps)
        if plan.no_new_privs:
            step = "no_new_privs"
            security.set_no_new_privs()
        # If minirun dies, its container goes too (set after setuid, which clears it).
        linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
        os.umask(plan.user.umask)
        # Python ignores SIGPIPE and SIGXFSZ; ignored signals survive exec, so restore them
        # (as subprocess's restore_signals does), then unblock what the parent blocked.
        for sig in (signal.SIGPIPE, signal.SIGXFSZ, *FORWARDED_SIGNALS):
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, ())
        if plan.seccomp is not None and plan.no_new_privs:
            # with no_new_privs no privilege is needed: load as late as possible, so the
            # runtime's own setup is not subject to the container's profile
            step = "seccomp"
            from minirun.runtime import seccomp

            seccomp.load(plan.seccomp)
    except BaseException as e:
        _report_setup_failure(w, step, e)
        os._exit(1)
    _exec(w, plan.args, plan.env)


def _exec(w: int, args: list[str], env: dict[str, str]) -> None:
    """The last step of a child: exec, searching the container's PATH; if that fails, tell
    the parent why through the sync pipe (it maps ENOENT to 127, the rest to 126)."""
    try:
        os.execvpe(args[0], args, env)
    except OSError as e:
        _write_report(w, _EXEC_FAILED + f"{e.errno or 0}\0".encode() + os.fsencode(args[0]))
        os._exit(127)
    except BaseException:
        os._exit(127)


def _report_setup_failure(w: int, step: str, e: BaseException) -> None:
    try:
        err = getattr(e, "errno", None) or 0
        if isinstance(e, RuntimeFailure):
            msg = str(e)
        elif isinstance(e, OSError):
            msg = f"container setup failed at {step}: {e.strerror or e}"
            if e.filename is not None:
                msg += f" ({e.filename})"
        else:
            msg = f"container setup failed at {step}: {type(e).__name__}: {e}"
        kind = type(e).__name__ if isinstance(e, KernelUnsupported) else "RuntimeFailure"
        _write_report(w, _SETUP_FAILED + f"{err}\0{kind}\0{msg}".encode())
    except BaseException:
        pass


def _write_report(w: int, data: bytes) -> None:
    try:
        os.write(w, data)
    except OSError:
        pass


def _setup_stdio(std: tuple[int | None, int | None, int | None], keep: list[int]) -> None:
    """Container stdio onto 0, 1, 2; then close every other host fd.

    Closing matters: an inherited fd to a host directory is how CVE-2024-21626 walked out
    of the container. Only the CLOEXEC sync fds in ``keep`` survive until exec.
    """
    # dup the sources above 2 first, so stdout=2/stderr=1 style swaps cannot clobber
    tmp = [None if fd is None else fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3) for fd in std]
    for target, src in enumerate(tmp):
        if src is not None:
            os.dup2(src, target, inheritable=True)
    lo = 3
    for fd in keep:
        os.closerange(lo, fd)
        lo = fd + 1
    os.closerange(lo, 1 << 20)


def _loopback_up() -> None:
    """ifconfig lo up, with one ioctl: pyroute2 would cost 0.2 s of import for this."""
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    fd = linux.socket(2, 2 | os.O_CLOEXEC, 0)  # AF_INET, SOCK_DGRAM|SOCK_CLOEXEC
    try:
        ifreq = fcntl.ioctl(fd, siocgifflags, struct.pack("16sH22x", b"lo", 0))
        (flags,) = struct.unpack_from("H", ifreq, 16)
        fcntl.ioctl(fd, siocsifflags, struct.pack("16sH22x", b"lo", flags | iff_up))
    finally:
        os.close(fd)
