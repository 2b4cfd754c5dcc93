"""The container's setup process: one typed plan, one ``become(plan)``, for create and exec.

``Plan`` is everything the forked child does between fork and exec, computed in the
parent (where every error is a clean exception). ``become`` carries it out through a
``Syscalls`` object (the real kernel, or a recorder in unit tests) and never returns:
it execs the container's command or reports why it could not and exits.

Order for a new container (``create``)::

    non-dumpable, pdeathsig → stdio, host fds closed → join cgroup → setns(namespaces with a path)
    → [user ns: unshare, parent writes uid/gid maps] → unshare(the rest) → sysctl,
    oom_score_adj, hostname, lo up → / rprivate (or rootfsPropagation) → rootfs (overlay
    or bind) → spec mounts, /dev, devices → "R": parent runs prestart/createRuntime hooks
    → createContainer hooks → masked/readonly paths → pivot_root → [pty] → readonly /
    → rlimits → chdir → [seccomp, without no_new_privs: before the cap drop] → user, caps
    → no_new_privs → look up the command → "C": created; wait on the exec fifo
    → startContainer hooks → exec the sealed minirun-exec → [seccomp] → execve(command)

For ``exec`` into a running container: setns into all of its namespaces, chroot into its
root (an fd of /proc/PID/root opened before), then the same process steps.

The sync pipe (CLOEXEC) tells the parent what happened: EOF means exec succeeded; ``R``
and ``C`` are the two rendezvous; ``X`` (exec failed) or ``S`` (a setup step failed) carry
the error. CVE-2019-5736: until exec this process IS the host's python, so it is
non-dumpable from its first step (a container process cannot open /proc/PID/exe), and it
never execs a container's file itself: the command (and every hook run inside the
container) is exec'd by a sealed memfd copy of minirun-exec (runtime/sealed.py), so a
"#!/proc/self/exe" command meets that copy, not the host's python.
"""

from __future__ import annotations

import os
import signal
from typing import TYPE_CHECKING, Any

from minirun import faults
from minirun.errors import KernelUnsupported, RuntimeFailure
from minirun.runtime import linux, security
from minirun.runtime.syscalls import REAL, Syscalls

if TYPE_CHECKING:
    import socket

    from minirun.runtime.config import Hook
    from minirun.runtime.mounts import Device, Mount

FORWARDED_SIGNALS = (
    signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2,
    signal.SIGWINCH,
)  # fmt: skip

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# child -> parent records on the sync pipe
PID = b"P"  # b"P" + 10 digits: the container's init, forked in its own pid namespace
USERNS = b"U"  # the user namespace exists: write its uid/gid maps, then answer "G"
READY = b"R"  # namespaces and mounts exist: run the runtime-side hooks, then answer "G"
CREATED = b"C"  # all set up, waiting for start
EXEC_FAILED = b"X"  # b"X<errno>\0<argv0>"
SETUP_FAILED = b"S"  # b"S<errno>\0<kind>\0<message>"


class Plan:
    """What the child does. A plain slotted class: building it is on every run's path."""

    __slots__ = (
        # the process
        "args", "env", "cwd", "user", "caps", "rlimits", "no_new_privs", "terminal",
        "console_size", "oom_score_adj", "seccomp", "start_hooks",
        # a new container (create); exec leaves these empty
        "join", "userns", "unshare", "sysctl", "hostname", "domainname", "loopback",
        "propagation", "overlay", "root", "mounts", "devices", "masked", "readonly_paths",
        "readonly_root", "no_pivot", "container_hooks", "fifo",
        # exec: the running container's root (an O_PATH fd of /proc/PID/root)
        "chroot_fd",
        # both
        "cgroup_procs", "cgroup_by_parent", "preserve_fds", "console_mount", "hook_state", "pdeathsig", "parent",
        "fork_pid_ns", "exec_fd",
    )  # fmt: skip

    def __init__(self) -> None:
        self.args: list[str] = []
        self.env: dict[str, str] = {}
        self.cwd = "/"
        self.user = security.User(0, 0, (), 0o022)
        self.caps: security.Caps | None = None
        self.rlimits: list[tuple[int, int, int]] = []
        self.no_new_privs = False
        self.terminal = False
        self.console_size: tuple[int, int] | None = None
        self.oom_score_adj: int | None = None
        self.seccomp: Any = None  # a compiled seccomp.Filter
        self.start_hooks: list[Hook] = []
        self.join: list[tuple[int, int]] = []  # (fd, CLONE_*) to setns, user ns first
        self.userns = False  # unshare a user namespace and wait for the parent's maps
        self.unshare = 0  # CLONE_* flags (not NEWPID: the parent does that before fork)
        self.sysctl: list[tuple[str, str]] = []  # (/proc/sys path, value)
        self.hostname: str | None = None
        self.domainname: str | None = None
        self.loopback = False
        self.propagation = linux.MS_REC | linux.MS_PRIVATE
        self.overlay: tuple[str, str | None] | None = None  # (options, chdir) onto root
        self.root = ""
        self.mounts: list[Mount] = []
        self.devices: list[Device] = []
        self.masked: list[str] = []
        self.readonly_paths: list[str] = []
        self.readonly_root = False
        self.no_pivot = False
        self.container_hooks: list[Hook] = []
        self.fifo = -1  # O_PATH fd of the exec fifo; -1: exec right away
        self.chroot_fd = -1
        self.cgroup_procs: list[str] = []
        # the parent moves us into the cgroup while we set up (a v1 migration waits ~10 ms
        # for an RCU grace period: overlapped, not on the critical path); we wait for it
        # at the READY rendezvous, before anything of the container runs
        self.cgroup_by_parent = False
        self.preserve_fds = 0
        self.console_mount = True  # bind the pty slave over /dev/console (not for exec)
        self.hook_state = b"{}"  # the OCI state JSON the parent sends at READY
        self.pdeathsig = 0  # the engine's attached runs: the container dies with its runner
        self.parent = 0  # the pid pdeathsig is about (the runtime process that forked us)
        self.exec_fd = -1  # the sealed minirun-exec every command is exec'd through
        # a new user AND pid namespace: the pid namespace must belong to the user namespace
        # (or /proc cannot be mounted), so it is unshared here, after the user namespace,
        # and one more fork makes its PID 1 (the parent is told its pid: b"P" + 10 digits)
        self.fork_pid_ns = False


def process_plan(plan: Plan, proc: Any, seccomp: Any) -> None:
    """Fill the process part of ``plan`` from a config.Process."""
    env: dict[str, str] = {}
    for item in proc.env:
        key, _, value = item.partition("=")
        env[key] = value
    plan.args = list(proc.args)
    plan.env = env
    plan.cwd = proc.cwd
    plan.user = security.User(proc.uid, proc.gid, proc.additional_gids,
                              0o022 if proc.umask is None else proc.umask)  # fmt: skip
    # no "capabilities" at all means none (runc): never the runtime's own full set
    plan.caps = security.parse_caps(proc.capabilities or {})
    plan.rlimits = security.parse_rlimits(
        [{"type": t, "soft": s, "hard": h} for t, s, h in proc.rlimits])
    plan.no_new_privs = proc.no_new_privileges
    plan.terminal = proc.terminal
    plan.console_size = proc.console_size
    plan.oom_score_adj = proc.oom_score_adj
    plan.seccomp = seccomp


def become(
    plan: Plan,
    std: tuple[int | None, int | None, int | None],
    sync: int,
    gate: tuple[int, int] | None,
    console: socket.socket | None,
    sc: Syscalls = REAL,
) -> None:
    """Never returns (with the real kernel): exec()s the command or _exit()s after
    reporting on ``sync``. ``gate`` = (ready_w, go_r) for the "R" rendezvous."""
    step = "start"
    try:
        # CVE-2019-5736: see the module docstring; exec resets the flag.
        sc.set_dumpable(False)
        if plan.pdeathsig and not plan.fork_pid_ns:
            # as early as possible: a runner killed during setup takes its container along
            step = "pdeathsig"
            sc.set_pdeathsig(plan.pdeathsig, plan.parent)
        step = "stdio"
        keep = [sync, *(gate or ()), plan.fifo, plan.chroot_fd, plan.exec_fd,
                *(fd for fd, _ in plan.join),
                *range(3, 3 + plan.preserve_fds)]
        if console is not None:
            keep.append(console.fileno())
        sc.setup_stdio(std, [fd for fd in keep if fd >= 0])
        sc.set_umask(0)  # device nodes and mount points get exactly the modes we ask for
        if plan.cgroup_procs and not plan.cgroup_by_parent:
            step = "cgroup"
            for procs in plan.cgroup_procs:
                sc.write_file(procs, "0")
        if plan.oom_score_adj is not None:
            step = "oom_score_adj"
            sc.write_file("/proc/self/oom_score_adj", str(plan.oom_score_adj))
        step = "join namespaces"
        for fd, flag in plan.join:
            sc.setns(fd, flag)
            sc.close(fd)
        if plan.userns:
            step = "user namespace"
            sc.unshare(linux.CLONE_NEWUSER)
        if gate is not None and plan.userns:
            if plan.cgroup_by_parent:
                sc.wait_joined(gate)
            sc.rendezvous(gate, USERNS)  # the parent writes uid_map/gid_map
            sc.become_root_in_userns()
        step = "namespaces"
        unshare = plan.unshare
        if plan.cgroup_by_parent:
            # a cgroup namespace is rooted where we are when it is made: only once the
            # parent has moved us into the container's cgroup (see _mounts)
            unshare &= ~linux.CLONE_NEWCGROUP
        if unshare:
            sc.unshare(unshare)
        if plan.fork_pid_ns:
            child = sc.fork()
            if child:
                sc.rendezvous_pid(gate, child)
                os._exit(0)
        if plan.sysctl:
            step = "sysctl"
            for path, value in plan.sysctl:
                sc.write_file(path, value)
        if plan.hostname is not None:
            step = "sethostname"
            sc.sethostname(plan.hostname)
        if plan.domainname is not None:
            step = "setdomainname"
            sc.setdomainname(plan.domainname)
        if plan.loopback:
            step = "loopback"
            sc.loopback_up()
        if plan.chroot_fd >= 0:
            step = "chroot"
            sc.chroot_fd(plan.chroot_fd)
            sc.close(plan.chroot_fd)
        else:
            step = "mount"
            _mounts(plan, sc, gate)
        slave = -1
        if console is not None:
            step = "terminal"
            slave = sc.open_pty(console, plan.console_size, plan.console_mount)
        if plan.readonly_root:
            step = "readonly root"
            sc.readonly_root()
        if slave >= 0:
            sc.make_controlling(slave)
        if plan.rlimits:
            step = "rlimits"
            sc.set_rlimits(plan.rlimits)
        step = "chdir"
        sc.chdir(plan.cwd)
        if plan.seccomp is not None and not plan.no_new_privs:
            # Without no_new_privs, installing a filter needs CAP_SYS_ADMIN: load it now,
            # before the capability drop and setuid (runc's order). What follows (setgroups,
            # setres*id, capset, prctl, the fifo's open/write, rt_sig*, execve) is allowed
            # by the default profile.
            step = "seccomp"
            sc.load_seccomp(plan.seccomp)
        step = "user and capabilities"
        sc.set_user_and_caps(plan.user, plan.caps)
        if plan.pdeathsig:
            step = "pdeathsig"
            sc.set_pdeathsig(plan.pdeathsig, plan.parent)  # setuid cleared it
        if plan.no_new_privs:
            step = "no_new_privs"
            sc.set_no_new_privs()
        step = "exec lookup"  # as the container's user, as execve will be
        plan.env.setdefault("PATH", DEFAULT_PATH)
        try:
            path = sc.lookup(plan.args[0], plan.env["PATH"])
        except OSError as e:
            _report(sync, EXEC_FAILED + f"{e.errno or 0}\0".encode() + os.fsencode(plan.args[0]))
            os._exit(127)
        # Everything that can fail for the container's own reasons is done: only now is it
        # "created" (runc's order), so a bad user or capability set fails `create`.
        if plan.fifo >= 0:
            step = "wait for start"
            _send(sync, CREATED)
            sc.wait_for_start(plan.fifo)
        step = "start hooks"
        for hook in plan.start_hooks:
            sc.run_hook(hook, plan.hook_state, plan.exec_fd)
        sc.prepare_exec(plan.user.umask, FORWARDED_SIGNALS)
        step = "exec"
        # with no_new_privs the filter needs no privilege: minirun-exec installs it right
        # before its execve, so none of the runtime's own steps is subject to it
        sc.execve(path, plan.args, plan.env, plan.exec_fd, sync, plan.fifo >= 0,
                  plan.seccomp if plan.no_new_privs else None)  # fmt: skip
    except OSError as e:
        if step == "exec":  # the sealed helper itself could not be exec'd
            _report_setup_failure(sync, step, e, plan.fifo >= 0)
            os._exit(126)
        _report_setup_failure(sync, step, e, plan.fifo >= 0 and step_after_created(step))
        os._exit(1)
    except BaseException as e:
        if type(e).__name__ == "ExecReached":
            raise
        _report_setup_failure(sync, step, e, plan.fifo >= 0 and step_after_created(step))
        os._exit(1)


def _mounts(plan: Plan, sc: Syscalls, gate: tuple[int, int] | None) -> None:
    sc.set_propagation(plan.propagation)
    if plan.propagation & linux.MS_SHARED:
        sc.parent_mount_private(plan.root)
    if plan.overlay is not None:
        sc.mount_overlay(plan.overlay[0], plan.overlay[1], plan.root)
        faults.point("run.rootfs-mounted")
    else:
        sc.bind_root(plan.root)  # pivot_root needs the new root to be a mount point
    rootfd = sc.open_root(plan.root)
    if plan.cgroup_by_parent:
        if gate is not None and not plan.userns:
            sc.wait_joined(gate)  # cgroup mounts show (and bind) the cgroup we are in
        if plan.unshare & linux.CLONE_NEWCGROUP:
            sc.unshare(linux.CLONE_NEWCGROUP)
    sc.mount_all(rootfd, plan.mounts, plan.terminal)
    if plan.devices:
        sc.create_devices(rootfd, plan.devices)
    if gate is not None:
        # prestart / createRuntime hooks run in the parent, which answers with the state
        # the hooks on this side get on their stdin
        plan.hook_state = sc.rendezvous(gate, READY)
    if plan.pdeathsig and plan.fork_pid_ns:
        # our parent was the middle process of the pid-namespace fork, reaped by the
        # runtime (our subreaper, now our parent) before it answered READY
        sc.set_pdeathsig(plan.pdeathsig, plan.parent)
    for hook in plan.container_hooks:
        sc.run_hook(hook, plan.hook_state, plan.exec_fd)
    sc.mask_paths(rootfd, plan.masked, plan.readonly_paths)
    # Docker creates a missing WORKDIR; do it inside the root, confined.
    sc.make_dir_in_root(rootfd, plan.cwd)
    sc.pivot(rootfd, plan.no_pivot)
    sc.close(rootfd)
    if plan.propagation & (linux.MS_SHARED | linux.MS_SLAVE):
        sc.set_propagation(plan.propagation)  # now of the container's own "/"


_AFTER_CREATED = ("wait for start", "start hooks", "exec")


def step_after_created(step: str) -> bool:
    return step in _AFTER_CREATED


def _send(sync: int, what: bytes) -> None:
    try:
        os.write(sync, what)
    except OSError:
        pass


def _report(sync: int, data: bytes) -> None:
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # the parent may be gone (after create)
    try:
        os.write(sync, data)
    except OSError:
        pass


def _report_setup_failure(sync: int, step: str, e: BaseException, created: bool = False) -> None:
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
        _report(sync, SETUP_FAILED + f"{err}\0{kind}\0{msg}".encode())
        if created:
            # after "created" nobody may be reading the sync pipe (create has returned):
            # the container's own stderr is where its supervisor (conmon, a shim) looks
            os.write(2, f"minirun-runtime: {msg}\n".encode())
    except BaseException:
        pass
