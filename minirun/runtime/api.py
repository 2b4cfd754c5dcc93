"""The OCI runtime's operations over bundles: create, start, state, kill, delete, exec,
pause, resume, update, list, ps (runtime-spec runtime.md), as a library.

``minirun-runtime`` (cli/runtime.py) is a thin front-end over ``Runtime``, as runc's
main.go is over libcontainer; ``minirun run`` calls the same methods in-process. The
engine adds two things an OCI CLI cannot carry, exactly as containerd hands its shim
"rootfs mounts": ``rootfs`` (an overlay mounted on root.path inside the container's own
mount namespace, so the host never sees it) and ``prestart`` (a Python callback at the
prestart point, where networking plugs a veth into the new network namespace).

Process model: ``create`` forks the container's init (PID 1 of its new PID namespace),
which sets everything up and then blocks opening ``exec.fifo`` for writing; ``create``
returns (the CLI exits: the init is re-parented to the caller's subreaper — conmon, the
containerd shim). ``start`` opens the fifo for reading; the init execs the command.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from minirun.errors import RuntimeFailure
from minirun.runtime import linux
from minirun.runtime.child import (
    FORWARDED_SIGNALS,
    PID,
    READY,
    USERNS,
    Plan,
    become,
    process_plan,
)
from minirun.runtime.config import Config, ConfigError, Hook, Process
from minirun.runtime.state import DEFAULT_ROOT, State, StateDir, StateError, start_time
from minirun.runtime.supervise import pipe, raise_child_failure, read_all

if TYPE_CHECKING:
    import socket

    from minirun.runtime import OverlayRootfs, Stdio

SECCOMP_CACHE_ANNOTATION = "org.minirun.seccomp.cache"
Log = Callable[[str, str], None]  # (level, message)


@dataclass
class Created:
    """A created container: its init's host pid (our child until this process exits) and
    the signal mask to restore when the caller asked to keep forwarded signals blocked."""

    pid: int
    old_mask: Any = None


def _no_log(_level: str, _msg: str) -> None:
    pass


class Runtime:
    def __init__(self, root: str = DEFAULT_ROOT, *, systemd_cgroup: bool = False,
                 log: Log = _no_log) -> None:  # fmt: skip
        self.states = StateDir(root)
        self.systemd_cgroup = systemd_cgroup
        self.log = log

    # -- create ------------------------------------------------------------------------

    def create(
        self,
        cid: str,
        bundle: str,
        *,
        config: Config | None = None,
        stdio: Stdio | None = None,
        console: socket.socket | None = None,
        pid_file: str | None = None,
        no_pivot: bool = False,
        preserve_fds: int = 0,
        rootfs: OverlayRootfs | None = None,
        prestart: Callable[[int], None] | None = None,
        default_cgroup: str | None = None,
        keep_signals_blocked: bool = False,
        die_with_parent: bool = False,
    ) -> Created:
        """``die_with_parent``: the init gets SIGKILL when this process dies (the engine's
        attached runs; an OCI ``create`` returns at once, so never for the CLI)."""
        from minirun.runtime import config as cfgmod

        cfg = config or cfgmod.load(bundle)
        if cfg.process is None:
            raise ConfigError("process: config.json has no process to create")
        if cfg.process.terminal and console is None:
            raise ConfigError("process.terminal: a terminal needs --console-socket (or an "
                              "attached run)")  # fmt: skip
        if console is not None and not cfg.process.terminal:
            raise ConfigError("--console-socket: process.terminal is false, so there is no "
                              "terminal to send")  # fmt: skip
        for line in cfg.ignored:
            self.log("debug", f"ignored (not supported here): {line}")
        d = self.states.reserve(cid)
        pid = -1
        made: list[Any] = []  # the cgroup, once made (in _spawn)
        old_mask: Any = None
        plan = None
        try:
            with open(os.path.join(d, "config.json"), "w") as f:
                f.write(json.dumps(cfg.raw))
            plan = Plan()
            self._plan(plan, cfg, rootfs, no_pivot, preserve_fds)
            plan.pdeathsig = signal.SIGKILL if die_with_parent else 0
            cg_path = self._cgroup_path(cfg, cid, default_cgroup)

            def make_cgroup() -> list[str]:
                made.append(self._make_cgroup(cg_path, cfg))
                return list(made[0].procs_files)
            now = time.time_ns()
            created = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now // 10**9)) + (
                f".{now % 10**9:09d}Z")
            st = State(id=cid, pid=0, pid_start="", bundle=cfg.bundle, rootfs=plan.root,
                       created=created, cgroup=cg_path,
                       annotations=cfg.annotations,
                       poststop=[_hook_dict(h) for h in cfg.hooks.get("poststop", [])],
                       creator=os.getpid(), creator_start=start_time(os.getpid()))
            # saved before anything runs: a create killed half-way leaves a "stopped"
            # container that delete cleans up (its cgroup included), never an orphan dir
            self.states.save(st)
            fifo = self.states.fifo(cid)
            # 0622: the init opens it after switching to the container's user (runc's mode)
            os.mkfifo(fifo)
            os.chmod(fifo, 0o622)
            root_ids = _host_root(cfg)
            if root_ids is not None:
                # the init opens it as the user namespace's root: let that id in (runc too)
                os.chown(fifo, *root_ids)
            plan.fifo = _high(os.open(fifo, os.O_PATH | os.O_CLOEXEC))

            def ready(child: int) -> bytes:
                st.pid = child
                state = json.dumps(st.oci("creating")).encode()
                if prestart is not None:
                    prestart(child)
                for kind in ("prestart", "createRuntime"):
                    for hook in cfg.hooks.get(kind, []):
                        self._hook(kind, hook, state)
                return state

            std = (stdio.stdin, stdio.stdout, stdio.stderr) if stdio is not None else (None, None, None)
            pidns = None if plan.fork_pid_ns else _pid_ns(cfg)
            try:
                pid, old_mask = _spawn(plan, std, console, pidns, ready, _maps(cfg), make_cgroup)
            finally:
                if pidns is not None and pidns[0] == "join":
                    os.close(pidns[1])
            st.pid, st.pid_start = pid, start_time(pid)
            self.states.save(st)
            if pid_file:
                _write_pid_file(pid_file, pid)
        except BaseException:
            if pid > 0:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)
            if old_mask is not None:
                signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
            for cg in made:
                with contextlib.suppress(RuntimeFailure):
                    cg.remove()
            self.states.remove(cid)
            raise
        finally:
            if plan is not None:
                for fd in [plan.fifo, plan.chroot_fd, *(fd for fd, _ in plan.join)]:
                    if fd >= 0:
                        with contextlib.suppress(OSError):
                            os.close(fd)
        if not keep_signals_blocked:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
            old_mask = None
        return Created(pid, old_mask)

    def _plan(self, plan: Plan, cfg: Config, rootfs: OverlayRootfs | None, no_pivot: bool,
              preserve_fds: int) -> None:  # fmt: skip
        """Fill ``plan`` from the config; the namespace fds it opens are the caller's to
        close (also when this raises half-way)."""
        from minirun.runtime import mounts

        assert cfg.process is not None
        process_plan(plan, cfg.process, _seccomp(cfg.seccomp, cfg.annotations))
        ns_flags = 0
        for ns in cfg.namespaces:
            if ns.type == "pid":
                continue  # the parent's business (see _spawn)
            if ns.type == "user" and ns.path is None:
                plan.userns = True
            elif ns.path is not None:
                fd = _high(_open_ns(ns.path, ns.type))
                # the user namespace first: joining it gives the rights to join the rest
                plan.join.insert(0 if ns.type == "user" else len(plan.join), (fd, ns.flag))
            else:
                ns_flags |= ns.flag
        if plan.userns and cfg.has_new("pid"):
            ns_flags |= linux.CLONE_NEWPID
            plan.fork_pid_ns = True
        plan.unshare = ns_flags
        plan.loopback = bool(ns_flags & linux.CLONE_NEWNET)
        plan.hostname = cfg.hostname if cfg.has("uts") else None
        plan.domainname = cfg.domainname if cfg.has("uts") else None
        plan.sysctl = [("/proc/sys/" + k.replace(".", "/"), v) for k, v in cfg.sysctl.items()]
        if cfg.rootfs_propagation:
            plan.propagation = mounts.PROPAGATION[cfg.rootfs_propagation] | linux.MS_REC
        if rootfs is not None:
            plan.overlay = mounts.overlay_options(rootfs.lowerdirs, rootfs.upperdir, rootfs.workdir)
            plan.root = rootfs.target
        else:
            if not os.path.isdir(cfg.root_path):
                raise ConfigError(f"root.path: {cfg.root_path} is not a directory")
            plan.root = cfg.root_path
        plan.mounts = mounts.parse_mounts(cfg.mounts)
        plan.devices = mounts.parse_devices(cfg.devices)
        plan.masked = list(cfg.masked_paths)
        plan.readonly_paths = list(cfg.readonly_paths)
        plan.readonly_root = cfg.root_readonly
        plan.no_pivot = no_pivot
        plan.container_hooks = cfg.hooks.get("createContainer", [])
        plan.start_hooks = cfg.hooks.get("startContainer", [])
        plan.preserve_fds = preserve_fds

    def _cgroup_path(self, cfg: Config, cid: str, default: str | None) -> str:
        from minirun.runtime import cgroups

        if self.systemd_cgroup and not cgroups.systemd_available():
            raise RuntimeFailure("--systemd-cgroup: systemd is not running on this host (no "
                                 "/run/systemd/system); use the cgroupfs driver")  # fmt: skip
        return cgroups.resolve_path(cfg.cgroups_path, cid, systemd=self.systemd_cgroup,
                                    default=default)  # fmt: skip

    def _make_cgroup(self, path: str, cfg: Config) -> Any:
        from minirun.runtime import cgroups

        # linux.devices are made as nodes only: using one needs an allow rule in
        # linux.resources.devices, as with runc
        cg = cgroups.Cgroup.create(path, cfg.resources)
        for w in cg.warnings:
            self.log("warning", w)
        return cg

    def _hook(self, kind: str, hook: Hook, state: bytes) -> None:
        from minirun.runtime.syscalls import run_hook_here

        try:
            run_hook_here(hook, state)
        except RuntimeFailure as e:
            raise RuntimeFailure(f"{kind} hook: {e}") from None

    # -- start, state, kill, delete ----------------------------------------------------

    def start(self, cid: str) -> State:
        st = self.states.load(cid)
        status = self.states.status(st)
        if status != "created":
            raise StateError(f"cannot start a container that is {status} (only a created "
                             "container can be started)")  # fmt: skip
        try:
            fd = os.open(self.states.fifo(cid), os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            raise StateError(f"cannot start container {cid}: it is already started") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise StateError(f"container {cid} is being started already") from None
            import select

            started = False
            while True:
                if select.select([fd], [], [], 0.1)[0]:
                    if os.read(fd, 1):
                        started = True  # the init goes on: its startContainer hooks, exec
                    elif started:
                        break  # EOF: the init exec'd its command (or died trying)
                if start_time(st.pid) != st.pid_start:
                    if started:
                        break  # it ran and is already gone
                    raise StateError(f"cannot start container {cid}: its init process died")
        finally:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.states.fifo(cid))
        cfg_hooks = self._saved_hooks(cid, "poststart")
        if cfg_hooks:
            state = json.dumps(st.oci("running")).encode()
            for hook in cfg_hooks:
                try:
                    self._hook("poststart", hook, state)
                except RuntimeFailure as e:
                    self.log("warning", str(e))  # the spec: log and go on
        return st

    def _saved_hooks(self, cid: str, kind: str) -> list[Hook]:
        try:
            with open(os.path.join(self.states.dir(cid), "config.json"), "rb") as f:
                raw = json.loads(f.read())
        except (OSError, ValueError):
            return []
        return [_hook_from(h) for h in (raw.get("hooks") or {}).get(kind) or []]

    def state(self, cid: str) -> dict[str, Any]:
        st = self.states.load(cid)
        return st.oci(self.states.status(st))

    def list_all(self) -> list[dict[str, Any]]:
        out = []
        for cid in self.states.ids():
            with contextlib.suppress(StateError):
                out.append(self.state(cid))
        return out

    def kill(self, cid: str, sig: int, *, all: bool = False) -> None:
        st = self.states.load(cid)
        status = self.states.status(st)
        if status == "stopped":
            raise StateError(f"container {cid} is not running")
        from minirun.runtime import cgroups

        cg = cgroups.Cgroup.open(st.cgroup) if st.cgroup else None
        if all and cg is not None:
            cg.kill_all(sig)
            return
        _signal(st, sig)
        if sig == signal.SIGKILL and status == "paused" and cg is not None:
            cg.thaw()  # a frozen process dies of SIGKILL only once thawed (runc does this)

    def delete(self, cid: str, *, force: bool = False) -> None:
        try:
            st = self.states.load(cid)
        except StateError:
            d = self.states.dir(cid)
            if force and os.path.isdir(d) and not os.path.exists(os.path.join(d, "state.json")):
                self.states.remove(cid)  # a create killed before it wrote any state
                return
            raise
        status = self.states.status(st)
        if status in ("running", "paused") and not force:
            raise StateError(f"cannot delete container {cid} that is not stopped: {status} "
                             "(use --force)")  # fmt: skip
        cg = None
        if st.cgroup:
            from minirun.runtime import cgroups

            cg = cgroups.Cgroup.open(st.cgroup)
        if status != "stopped":
            # a created container too: its init is waiting at the fifo (runc does the same)
            if cg is not None:
                cg.kill_all(signal.SIGKILL)
            _signal(st, signal.SIGKILL)
            _wait_dead(st, 10.0)
        elif cg is not None and cg.pids():
            # the init is gone, but without a pid namespace its children outlive it
            cg.kill_all(signal.SIGKILL)
        if cg is not None:
            cg.remove()
        self.states.remove(cid)
        # the spec: poststop hooks run once the container is deleted, before delete returns
        if st.poststop:
            state = json.dumps(st.oci("stopped")).encode()
            for h in st.poststop:
                try:
                    self._hook("poststop", _hook_from(h), state)
                except RuntimeFailure as e:
                    self.log("warning", str(e))

    def run(
        self,
        cid: str,
        bundle: str,
        *,
        config: Config | None = None,
        stdio: Stdio | None = None,
        rootfs: OverlayRootfs | None = None,
        prestart: Callable[[int], None] | None = None,
        on_start: Callable[[int], None] | None = None,
        no_pivot: bool = False,
        default_cgroup: str | None = None,
        preserve_fds: int = 0,
        keep: bool = False,
        die_with_parent: bool = False,
    ) -> int:
        """create + start + wait, attached (runc run): forward signals, copy the pty of a
        terminal process, return Docker's exit status; then delete, unless ``keep``."""
        from minirun.runtime import config as cfgmod
        from minirun.runtime import supervise

        cfg = config or cfgmod.load(bundle)
        psock = csock = None
        if cfg.process is not None and cfg.process.terminal:
            import socket  # ~2 ms: only for a terminal

            psock, csock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        master = None
        try:
            try:
                created = self.create(cid, bundle, config=cfg, stdio=stdio, console=csock,
                                      no_pivot=no_pivot, rootfs=rootfs, prestart=prestart,
                                      default_cgroup=default_cgroup, preserve_fds=preserve_fds,
                                      keep_signals_blocked=True,
                                      die_with_parent=die_with_parent)  # fmt: skip
            finally:
                if csock is not None:
                    csock.close()
            try:
                if psock is not None:
                    master = supervise.receive_master(psock)
                self.start(cid)
            except BaseException:
                signal.pthread_sigmask(signal.SIG_SETMASK, created.old_mask)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(created.pid, signal.SIGKILL)
                os.waitpid(created.pid, 0)
                raise
            return supervise.wait(
                created.pid, master=master, stdin=stdio.stdin if stdio else None,
                stdout=stdio.stdout if stdio else None, old_mask=created.old_mask,
                on_running=(lambda: on_start(created.pid)) if on_start is not None else None)
        finally:
            if master is not None:
                os.close(master)
            if psock is not None:
                psock.close()
            if not keep:
                with contextlib.suppress(StateError):
                    self.delete(cid, force=True)

    # -- exec --------------------------------------------------------------------------

    def exec(
        self,
        cid: str,
        process: Process,
        *,
        stdio: Stdio | None = None,
        console: socket.socket | None = None,
        detach: bool = False,
        pid_file: str | None = None,
        preserve_fds: int = 0,
        keep_signals_blocked: bool = False,
    ) -> Created:
        """Start ``process`` in the running container; returns once it has exec'd (its
        pid is our child). Every namespace of the container's init is joined (the user
        namespace first, the mount namespace last), then its cgroup and root."""
        st = self.states.load(cid)
        status = self.states.status(st)
        if status not in ("running", "created"):
            raise StateError(f"cannot exec in a {status} container")
        if process.terminal and console is None:
            raise ConfigError("process.terminal: a terminal needs --console-socket")
        raw = json.loads(open(os.path.join(self.states.dir(cid), "config.json"), "rb").read())
        lx = raw.get("linux") or {}
        if process.capabilities is None:
            # runc: a process.json without capabilities gets the container's, not none
            import dataclasses

            saved = (raw.get("process") or {}).get("capabilities")
            process = dataclasses.replace(process, capabilities=dict(saved or {}))
        plan = Plan()
        process_plan(plan, process, _seccomp(lx.get("seccomp"), raw.get("annotations") or {}))
        plan.preserve_fds = preserve_fds
        plan.console_mount = False  # the container's /dev/console stays its own
        pidns = -1
        try:
            for name, flag in _EXEC_NAMESPACES:
                path = f"/proc/{st.pid}/ns/{name}"
                try:
                    if os.readlink(path) == os.readlink(f"/proc/self/ns/{name}"):
                        continue  # shared with us (e.g. the host's network): nothing to join
                    fd = _high(os.open(path, os.O_RDONLY | os.O_CLOEXEC))
                except FileNotFoundError:
                    raise StateError(f"container {cid} is not running (its process is gone)") from None
                if name == "pid":
                    pidns = fd
                else:
                    plan.join.append((fd, flag))
            # In a --no-pivot container the namespace's root is the host's: always chroot.
            plan.chroot_fd = _high(os.open(f"/proc/{st.pid}/root", os.O_PATH | os.O_DIRECTORY
                                           | os.O_CLOEXEC))  # fmt: skip
            # Still the same start time: the init lived through every open above, so each
            # /proc/PID path was the container's, never a reused pid's.
            if start_time(st.pid) != st.pid_start:
                raise StateError(f"container {cid} is not running (its process is gone)")
            if st.cgroup:
                from minirun.runtime import cgroups

                cg = cgroups.Cgroup.open(st.cgroup)
                plan.cgroup_procs = cg.procs_files if cg is not None else []
            std = (stdio.stdin, stdio.stdout, stdio.stderr) if stdio is not None else (None, None, None)
            pid, old_mask = _spawn(plan, std, console, ("join", pidns) if pidns >= 0 else None,
                                   None, None)  # fmt: skip
        finally:
            for fd in [pidns, plan.chroot_fd, *(fd for fd, _ in plan.join)]:
                if fd >= 0:
                    with contextlib.suppress(OSError):
                        os.close(fd)
        if pid_file:
            _write_pid_file(pid_file, pid)
        if not keep_signals_blocked:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
            old_mask = None
        return Created(pid, old_mask)

    def exec_run(
        self,
        cid: str,
        process: Process,
        *,
        stdio: Stdio | None = None,
        console: socket.socket | None = None,
        detach: bool = False,
        pid_file: str | None = None,
        preserve_fds: int = 0,
    ) -> int:
        """exec, then (unless ``detach``) wait for it: forward signals, and for a terminal
        process without a console socket copy its pty here. Docker's exit status."""
        import socket as socketmod

        from minirun.runtime import supervise

        psock = None
        if process.terminal and console is None:
            if detach:
                raise ConfigError("process.terminal: a detached exec with a terminal needs "
                                  "--console-socket")  # fmt: skip
            psock, console = socketmod.socketpair(socketmod.AF_UNIX, socketmod.SOCK_STREAM)
        master = None
        try:
            try:
                ex = self.exec(cid, process, stdio=stdio, console=console, detach=detach,
                               pid_file=pid_file, preserve_fds=preserve_fds,
                               keep_signals_blocked=not detach)  # fmt: skip
            finally:
                if psock is not None and console is not None:
                    console.close()
            if detach:
                return 0
            if psock is not None:
                master = supervise.receive_master(psock)
            return supervise.wait(ex.pid, master=master, stdin=stdio.stdin if stdio else None,
                                  stdout=stdio.stdout if stdio else None, old_mask=ex.old_mask)
        finally:
            if master is not None:
                os.close(master)
            if psock is not None:
                psock.close()

    def process_of(self, cid: str) -> dict[str, Any]:
        """The container's own process object (what an exec without -p starts from)."""
        self.states.load(cid)
        with open(os.path.join(self.states.dir(cid), "config.json"), "rb") as f:
            proc: dict[str, Any] = json.loads(f.read()).get("process") or {}
        return proc

    # -- cgroup operations -------------------------------------------------------------

    def _cg(self, cid: str) -> Any:
        from minirun.runtime import cgroups

        st = self.states.load(cid)
        cg = cgroups.Cgroup.open(st.cgroup) if st.cgroup else None
        if cg is None:
            raise StateError(f"container {cid} has no cgroup")
        return st, cg

    def pause(self, cid: str) -> None:
        st, cg = self._cg(cid)
        status = self.states.status(st)
        if status != "running":
            raise StateError(f"container {cid} is not running ({status})")
        cg.freeze()

    def resume(self, cid: str) -> None:
        st, cg = self._cg(cid)
        if self.states.status(st) != "paused":
            raise StateError(f"container {cid} is not paused")
        cg.thaw()

    def update(self, cid: str, resources: dict[str, Any]) -> None:
        st, cg = self._cg(cid)
        if self.states.status(st) == "stopped":
            raise StateError(f"container {cid} is not running")
        cg.update(resources)

    def ps(self, cid: str) -> list[int]:
        st = self.states.load(cid)
        if not st.cgroup:
            return [st.pid] if self.states.status(st) != "stopped" else []
        _, cg = self._cg(cid)
        pids: list[int] = cg.pids()
        return pids


# --- helpers ---------------------------------------------------------------------------------

# (name in /proc/PID/ns, CLONE_* flag), in the order exec joins them: user first (it gives
# the rights for the rest), mnt last (after it the host's /proc is out of reach).
_EXEC_NAMESPACES = (
    ("user", linux.CLONE_NEWUSER), ("pid", linux.CLONE_NEWPID),
    ("cgroup", linux.CLONE_NEWCGROUP), ("ipc", linux.CLONE_NEWIPC), ("uts", linux.CLONE_NEWUTS),
    ("net", linux.CLONE_NEWNET), ("mnt", linux.CLONE_NEWNS),
)  # fmt: skip


def _high(fd: int) -> int:
    from minirun.runtime.supervise import high_cloexec

    return high_cloexec(fd)


def _open_ns(path: str, kind: str) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise ConfigError(f"linux.namespaces: cannot open the {kind} namespace {path}: "
                          f"{e.strerror}") from None  # fmt: skip


def _seccomp(oci: dict[str, Any] | None, annotations: dict[str, str]) -> Any:
    if not oci:
        return None
    # compiled here, in the parent: every error is a clean exception, and the child only
    # has one syscall left to make (it cannot import anything after pivot_root)
    from minirun.runtime import seccomp

    return seccomp.compile_filter(oci, cache_dir=annotations.get(SECCOMP_CACHE_ANNOTATION))


def _pid_ns(cfg: Config) -> tuple[str, Any] | None:
    for ns in cfg.namespaces:
        if ns.type == "pid":
            return ("join", _high(_open_ns(ns.path, "pid"))) if ns.path else ("new", None)
    return None


def _host_root(cfg: Config) -> tuple[int, int] | None:
    """The host uid/gid the container's root maps to, in a new user namespace."""
    def host(maps: list[Any]) -> int | None:
        return next((m.host_id + (0 - m.container_id) for m in maps
                     if m.container_id <= 0 < m.container_id + m.size), None)  # fmt: skip

    if not cfg.uid_mappings:
        return None
    uid, gid = host(cfg.uid_mappings), host(cfg.gid_mappings)
    return (uid if uid is not None else -1, gid if gid is not None else -1)


def _maps(cfg: Config) -> Callable[[int], None] | None:
    if not cfg.uid_mappings:
        return None

    def write(pid: int) -> None:
        for name, maps in (("uid_map", cfg.uid_mappings), ("gid_map", cfg.gid_mappings)):
            text = "".join(f"{m.container_id} {m.host_id} {m.size}\n" for m in maps)
            try:
                with open(f"/proc/{pid}/{name}", "w") as f:
                    f.write(text)
            except OSError as e:
                raise RuntimeFailure(f"linux.{name.replace('_map', '')}Mappings: writing "
                                     f"/proc/{pid}/{name} failed: {e.strerror}") from None

    return write


def _spawn(
    plan: Plan,
    std: tuple[int | None, int | None, int | None],
    console: socket.socket | None,
    pidns: tuple[str, Any] | None,
    on_ready: Callable[[int], bytes] | None,
    on_userns: Callable[[int], None] | None,
    make_cgroup: Callable[[], list[str]] | None = None,
) -> tuple[int, Any]:
    """Fork the child into ``plan`` and see it through its rendezvous. Returns (pid,
    the signal mask from before; the forwarded signals are still blocked) once the child
    is created (waiting at the fifo) or has exec'd; raises what the child reported.

    ``make_cgroup`` creates the container's cgroup and returns its cgroup.procs files.
    For a create whose init is our child, that happens after the fork and the child is
    moved in from here, both while it sets up its namespaces and mounts (a v1 migration
    alone waits ~10 ms for an RCU grace period); it waits at READY, so nothing of the
    container runs outside the cgroup. Otherwise (the init is a grandchild, behind a
    user namespace) the cgroup is made first and the child joins it itself."""
    if console is not None:
        from minirun.runtime import tty  # noqa: F401 - the child cannot import after pivot_root
    from minirun.runtime import sealed

    plan.exec_fd = sealed.exec_fd()
    plan.parent = os.getpid()
    plan.cgroup_by_parent = make_cgroup is not None and on_ready is not None and not plan.fork_pid_ns
    if make_cgroup is not None and not plan.cgroup_by_parent:
        plan.cgroup_procs = make_cgroup()
    r, w = pipe()
    ready_r, ready_w = pipe()
    go_r, go_w = pipe()
    # Forwarded signals stay blocked until their handlers point at the child, so a ^C or a
    # `kill` in between is delivered to the container, not lost or fatal to us.
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED_SIGNALS)
    own = -1
    pid = -1
    if plan.fork_pid_ns:
        # the init will be our grandchild: as a subreaper we still get to wait for it
        linux.prctl(linux.PR_SET_CHILD_SUBREAPER, 1)
    try:
        if pidns is not None:
            # unshare(CLONE_NEWPID) / setns(pidns) change where our NEXT child goes: the one
            # fork below. Then straight back to our own PID namespace for every later fork.
            own = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
            if pidns[0] == "new":
                linux.unshare(linux.CLONE_NEWPID)
            else:
                linux.setns(pidns[1], linux.CLONE_NEWPID)
        try:
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child never returns
                try:
                    become(plan, std, w, (ready_w, go_r) if on_ready or on_userns else None, console)
                finally:
                    os._exit(1)
        finally:
            if own >= 0:
                linux.setns(own, linux.CLONE_NEWPID)
                os.close(own)
    except BaseException as e:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        for fd in (r, w, ready_r, ready_w, go_r, go_w):
            os.close(fd)
        if isinstance(e, OSError):
            raise RuntimeFailure(f"cannot start the container process: {e}") from e
        raise
    for fd in (w, ready_w, go_r):
        os.close(fd)
    try:
        if plan.cgroup_by_parent and make_cgroup is not None:
            _join_cgroup(pid, make_cgroup())
            with contextlib.suppress(BrokenPipeError):  # it died early: its report says why
                os.write(go_w, b"J")
        try:
            while on_ready is not None or on_userns is not None:
                what = os.read(ready_r, 1)
                if what == USERNS and on_userns is not None:
                    on_userns(pid)
                    os.write(go_w, b"G00000000")
                elif what == PID:
                    middle, pid = pid, int(os.read(ready_r, 10))
                    os.waitpid(middle, 0)
                elif what == READY and on_ready is not None:
                    state = on_ready(pid)
                    os.write(go_w, b"G%08d" % len(state) + state)
                    break
                else:
                    break  # EOF: the child failed (the sync pipe says why)
        finally:
            os.close(ready_r)
            os.close(go_w)
        first = os.read(r, 1)
        if first and first != b"C":
            report = first + read_all(r)
            os.waitpid(pid, 0)
            pid = -1
            raise_child_failure(report)
        if not first and on_ready is not None:
            # EOF before "C" in a create: the child died without a word
            os.waitpid(pid, 0)
            pid = -1
            raise RuntimeFailure("the container's init process died during setup")
    except BaseException:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        if pid > 0:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        raise
    finally:
        os.close(r)
    return pid, old_mask


def _join_cgroup(pid: int, procs_files: list[str]) -> None:
    """Move the child into the container's cgroup (every hierarchy) while it sets up."""
    data = str(pid).encode()
    for path in procs_files:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        except OSError as e:
            raise RuntimeFailure(f"cgroup: cannot open {path}: {e.strerror}") from None
        try:
            os.write(fd, data)
        except ProcessLookupError:
            return  # the child died early: its own report says why
        except OSError as e:
            raise RuntimeFailure(f"cgroup: cannot join {path}: {e.strerror}") from None
        finally:
            os.close(fd)


def _signal(st: State, sig: int) -> None:
    """Signal the init, sure that the pid is still that process (pidfd, then start time)."""
    try:
        pidfd = os.pidfd_open(st.pid)
    except ProcessLookupError:
        return
    try:
        if start_time(st.pid) == st.pid_start:
            signal.pidfd_send_signal(pidfd, sig)
    except ProcessLookupError:
        pass
    finally:
        os.close(pidfd)


def _wait_dead(st: State, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while start_time(st.pid) == st.pid_start and st.pid_start:
        if time.monotonic() > deadline:
            raise RuntimeFailure(f"container {st.id}: process {st.pid} did not die after SIGKILL")
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(st.pid, os.WNOHANG)[0]:
                return
        time.sleep(0.005)


def _write_pid_file(path: str, pid: int) -> None:
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}.tmp")
    with open(tmp, "w") as f:
        f.write(str(pid))
    os.replace(tmp, path)


def _hook_dict(h: Hook) -> dict[str, Any]:
    return {"path": h.path, "args": list(h.args), "env": list(h.env), "timeout": h.timeout}


def _hook_from(d: dict[str, Any]) -> Hook:
    t = d.get("timeout")
    return Hook(d["path"], tuple(d.get("args") or ()), tuple(d.get("env") or ()),
                float(t) if t else None)


def signal_number(text: str) -> int:
    """runc's kill: "KILL", "SIGKILL", "9" all mean 9."""
    t = text.strip().upper()
    if t.isascii() and t.isdigit():  # str.isdigit() alone is also true for '²'
        digits = t.lstrip("0") or "0"
        n = int(digits) if len(digits) <= 3 else None  # int() has a digit limit
        if n is None or n > signal.SIGRTMAX:
            raise StateError(f"invalid signal {text[:40]!r}: signal numbers are "
                             f"0-{int(signal.SIGRTMAX)}")
        return n
    name = t if t.startswith("SIG") else "SIG" + t
    try:
        return int(signal.Signals[name])
    except KeyError:
        raise StateError(f"invalid signal {text!r}") from None


__all__ = ["Created", "Runtime"]
