"""``exec``: start another process inside a running container, in every one of its
namespaces, its cgroup and its root, with its capabilities and security settings.

  parent: open the container's namespace fds and root (from /proc/PID) → block the
          forwarded signals → setns(its PID namespace) → fork → setns back
  child:  non-dumpable → stdio → join the cgroup → setns ipc, uts, net, cgroup, mnt
          (mnt last: after it, the host's /proc is out of reach) → chroot into the
          container's root → [pty from the container's own devpts] → user, caps,
          no_new_privs → chdir → exec
  parent: the same supervision as ``run``: sync pipe, signals, pty relay, exit status.

CVE-2019-5736 applies here most of all: the joining process is the host's python inside
the container's PID namespace, so it is non-dumpable from its first instruction until
exec replaces it; a container process can't open it through /proc/PID/exe or ptrace it.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from minirun.errors import ContainerError, RuntimeFailure
from minirun.runtime import linux, security
from minirun.runtime.process import (
    FORWARDED_SIGNALS,
    _channels,
    _child_failed,
    _exec,
    _report_setup_failure,
    _setup_stdio,
    _supervise,
)

if TYPE_CHECKING:
    import socket

    from minirun.runtime import Stdio

# (name in /proc/PID/ns, CLONE_* flag), in the order they are joined; mnt is last.
_NAMESPACES = (
    ("cgroup", linux.NAMESPACE_FLAGS["cgroup"]),
    ("ipc", linux.NAMESPACE_FLAGS["ipc"]),
    ("uts", linux.NAMESPACE_FLAGS["uts"]),
    ("net", linux.NAMESPACE_FLAGS["network"]),
    ("mnt", linux.NAMESPACE_FLAGS["mount"]),
)


class _ExecPlan:
    __slots__ = ("args", "env", "cwd", "user", "caps", "no_new_privs", "terminal", "console_size")

    args: list[str]
    env: dict[str, str]
    cwd: str
    user: security.User
    caps: security.Caps | None
    no_new_privs: bool
    terminal: bool
    console_size: dict[str, Any] | None


def _plan(process: dict[str, Any]) -> _ExecPlan:
    p = _ExecPlan()
    p.args = list(process.get("args") or [])
    if not p.args:
        raise RuntimeFailure("no command given to exec")
    p.env = dict(item.partition("=")[::2] for item in process.get("env") or [])
    p.cwd = process.get("cwd") or "/"
    p.user = security.parse_user(process.get("user"))
    p.caps = security.parse_caps(process.get("capabilities"))
    p.no_new_privs = bool(process.get("noNewPrivileges"))
    p.terminal = bool(process.get("terminal"))
    p.console_size = process.get("consoleSize")
    return p


def exec_in(
    pid: int,
    process: dict[str, Any],
    *,
    stdio: Stdio | None = None,
    cgroup_procs: Sequence[str] = (),
    detach: bool = False,
    seccomp: dict[str, Any] | None = None,
    seccomp_cache: str | None = None,
) -> int:
    """Run ``process`` (an OCI process object) in the container whose init is ``pid``,
    under the container's ``seccomp`` (its spec's linux.seccomp) too. Returns its exit
    status as Docker reports it (0 at once with ``detach``)."""
    plan = _plan(process)
    flt = None
    if seccomp:
        from minirun.runtime import seccomp as sc

        flt = sc.compile_filter(seccomp, cache_dir=seccomp_cache)
    std = (stdio.stdin, stdio.stdout, stdio.stderr) if stdio is not None else (None, None, None)
    ns_fds: list[tuple[int, int]] = []
    own_pidns = target_pidns = root_fd = -1
    try:
        for name, flag in _NAMESPACES:
            path = f"/proc/{pid}/ns/{name}"
            try:
                if os.readlink(path) == os.readlink(f"/proc/self/ns/{name}"):
                    continue  # shared with the host (e.g. --network host): nothing to join
                ns_fds.append((os.open(path, os.O_RDONLY | os.O_CLOEXEC), flag))
            except FileNotFoundError:
                raise ContainerError(f"container process {pid} is gone") from None
        # The container's root, taken before we leave the host's mount namespace. In
        # --chroot containers the namespace's root is the host's, so always chroot here.
        root_fd = os.open(f"/proc/{pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        target_pidns = os.open(f"/proc/{pid}/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
        own_pidns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    except BaseException:
        for fd, _ in ns_fds:
            os.close(fd)
        for fd in (root_fd, target_pidns, own_pidns):
            if fd >= 0:
                os.close(fd)
        raise

    r, w, psock, csock = _channels(plan.terminal)
    keep = sorted([w, root_fd, *(fd for fd, _ in ns_fds)]
                  + ([csock.fileno()] if csock is not None else []))
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED_SIGNALS)
    try:
        try:
            linux.setns(target_pidns, linux.NAMESPACE_FLAGS["pid"])
            child = os.fork()
            if child == 0:  # pragma: no cover - never returns
                _child(plan, std, w, csock, keep, ns_fds, root_fd, list(cgroup_procs), flt)
        finally:
            linux.setns(own_pidns, linux.NAMESPACE_FLAGS["pid"])
    except BaseException:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        os.close(r)
        for s in (psock, csock):
            if s is not None:
                s.close()
        raise
    finally:
        os.close(w)
        for fd, _ in ns_fds:
            os.close(fd)
        for fd in (root_fd, target_pidns, own_pidns):
            os.close(fd)
    if csock is not None:
        csock.close()
    if detach:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        report = b""
        while chunk := os.read(r, 4096):
            report += chunk
        os.close(r)
        if psock is not None:
            psock.close()
        if report:
            os.waitpid(child, 0)
            return _child_failed(report)
        return 0
    return _supervise(child, std, r, psock, old_mask, None)


def _child(
    plan: _ExecPlan,
    std: tuple[int | None, int | None, int | None],
    w: int,
    csock: socket.socket | None,
    keep: list[int],
    ns_fds: list[tuple[int, int]],
    root_fd: int,
    cgroup_procs: list[str],
    flt: Any,
) -> None:
    step = "start"
    try:
        linux.prctl(linux.PR_SET_DUMPABLE, 0)  # CVE-2019-5736: see the module docstring
        step = "stdio"
        _setup_stdio(std, keep)
        step = "cgroup"
        for procs in cgroup_procs:
            with open(procs, "w") as f:
                f.write("0")
        step = "setns"
        for fd, flag in ns_fds:
            linux.setns(fd, flag)
            os.close(fd)
        step = "chroot"
        os.fchdir(root_fd)
        os.chroot(".")
        os.close(root_fd)
        slave = -1
        if csock is not None:
            step = "terminal"
            from minirun.runtime import tty

            slave = tty.child_open_pty(csock, plan.console_size, console=False)
            tty.child_make_controlling(slave)
        if flt is not None and not plan.no_new_privs:
            step = "seccomp"  # before the capability drop: see runtime.process
            from minirun.runtime import seccomp as sc

            sc.load(flt)
        step = "user and capabilities"
        security.apply_user_and_caps(plan.user, plan.caps)
        if plan.no_new_privs:
            security.set_no_new_privs()
        step = "chdir"
        os.chdir(plan.cwd)
        if not os.getcwd().startswith("/"):  # CVE-2024-21626, as in run
            raise RuntimeFailure(f"cwd {plan.cwd!r} is outside the container root")
        os.umask(plan.user.umask)
        for sig in (signal.SIGPIPE, signal.SIGXFSZ, *FORWARDED_SIGNALS):
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, ())
        if flt is not None and plan.no_new_privs:
            step = "seccomp"
            from minirun.runtime import seccomp as sc

            sc.load(flt)
    except BaseException as e:
        _report_setup_failure(w, step, e)
        os._exit(1)
    _exec(w, plan.args, plan.env)
