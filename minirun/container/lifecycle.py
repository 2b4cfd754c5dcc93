"""Create and start containers: the writable side on top of an image.

``create`` makes the container layer (empty upper/work dirs), its /etc files and the
OCI spec; ``start`` hands the spec and the layer stack to the runtime, which mounts
``overlay(lower = image layers, read-only, shared; upper = this container's layer)``
inside the container's own mount namespace and execs the process.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from minirun import events, faults
from minirun.container.records import ContainerRecord, Containers, process_start_time
from minirun.container.resources import engine_path, parse_resources
from minirun.container.spec import RunOptions, build_spec, make_bind_sources
from minirun.container.users import resolve_user
from minirun.errors import ContainerError, ImageNotFound
from minirun.helpers import helper_binary
from minirun.image.store import ImageRecord, Store
from minirun.runtime import SECCOMP_CACHE_ANNOTATION

if TYPE_CHECKING:
    from minirun.runtime import OverlayRootfs
    from minirun.runtime.api import Runtime

# Mount points every container needs. They live in a small read-only "init" layer
# between the image and the container layer (Docker does the same), so the container
# layer holds only what the container itself changed and `diff` shows nothing else.
INIT_DIRS = ("proc", "sys", "dev", "etc")
INIT_FILES = ("etc/hosts", "etc/hostname", "etc/resolv.conf")


def make_init_layer(path: Path) -> None:
    path.mkdir(mode=0o755)
    for d in INIT_DIRS:
        (path / d).mkdir(mode=0o755)
    for f in INIT_FILES:
        (path / f).touch(mode=0o644)


def stack(containers: Containers, rec: ContainerRecord) -> list[str]:
    """The read-only lowerdirs of a container, topmost first: init layer, then the image's."""
    return [str(containers.dir(rec.id) / "init"), *rec.lowerdirs]


def image_for(store: Store, image: str, opts: RunOptions, report: Callable[[Any], None] | None = None
              ) -> ImageRecord:
    """The image to run, pulled as ``--pull`` says. The registry code is imported only
    when a pull happens, so running a stored image never pays for it."""
    from minirun.image import reference as refs

    if opts.pull in ("missing", "never") and not opts.platform:  # --platform: checked by ensure_image
        try:
            return store.resolve(image)
        except ImageNotFound:
            if not refs.is_image_id(image):
                refs.parse(image)  # invalid is said as such, not as "not found"
            if opts.pull == "never":
                raise
    from minirun.image.pull import ensure_image

    return ensure_image(store, image, opts.pull, report or (lambda _event: None), platform=opts.platform)


def create(store: Store, image: str, opts: RunOptions,
           report: Callable[[Any], None] | None = None) -> ContainerRecord:
    """Prepare everything in a fresh container dir, then register the record once."""
    if opts.cidfile and os.path.lexists(opts.cidfile):
        raise ContainerError(f"container ID file found, make sure the other container isn't "
                             f"running or delete {opts.cidfile}")
    mount_reqs = None
    if opts.volumes or opts.mounts:  # -v/--mount errors before anything is made
        from minirun.container import volumes as vols

        mount_reqs = vols.requests(opts.volumes, opts.mounts)
    img = image_for(store, image, opts, report)
    image_cfg = json.loads(store.read_blob(img.id)).get("config") or {}
    mount_plan = None
    if mount_reqs is not None or image_cfg.get("Volumes"):  # and the image's VOLUMEs
        from minirun.container import volumes as vols

        mount_plan = vols.plan(mount_reqs or [], opts.tmpfs, image_cfg)
    lowerdirs = [str(store.links / layer.link) for layer in reversed(img.layers)]
    user = resolve_user(opts.user or image_cfg.get("User") or None, lowerdirs)
    resources = parse_resources(opts.memory, opts.memory_swap, opts.cpus, opts.cpu_shares, opts.pids_limit)
    if opts.privileged:
        resources = replace(resources, all_devices=True)
    elif opts.devices:
        from minirun.container.runflags import parse_device

        resources = replace(resources, device_rules=[
            d.rule() for spec in opts.devices for d in parse_device(spec)])
    healthcheck = None
    if opts.health or image_cfg.get("Healthcheck"):
        from minirun.container.runflags import HealthFlags
        from minirun.container.runflags import healthcheck as resolve_healthcheck

        healthcheck = resolve_healthcheck(HealthFlags(**opts.health), image_cfg.get("Healthcheck"))
    containers = Containers(store)
    cid = containers.new_id()
    points: list[Any] = []
    try:
        cdir = containers.dir(cid)
        for d in ("upper", "work", "rootfs"):
            (cdir / d).mkdir(mode=0o755)
        make_init_layer(cdir / "init")
        hostname = opts.hostname or cid[:12]
        (cdir / "hostname").write_text(hostname + "\n")
        # networking: /etc/hosts, /etc/resolv.conf; on a bridge the address and host ports
        # (a taken port fails here, before the container exists)
        from minirun.network import local

        if local.uses_bridge(opts.network):
            from minirun.network import attach as net

            network = net.prepare(
                store, cid, mode=opts.network, hostname=hostname, name=opts.name,
                publish=opts.publish, publish_all=opts.publish_all, dns_servers=opts.dns,
                add_hosts=opts.add_hosts, image_cfg=image_cfg, hosts_path=cdir / "hosts",
                resolv_path=cdir / "resolv.conf")
        else:
            network = local.prepare(
                opts.network, publish=opts.publish, publish_all=opts.publish_all,
                dns_servers=opts.dns, add_hosts=opts.add_hosts, hosts_path=cdir / "hosts",
                resolv_path=cdir / "resolv.conf")
        etc = {f"/etc/{n}": str(cdir / n) for n in ("hostname", "hosts", "resolv.conf")}
        make_bind_sources(opts.volumes)  # Docker: -v makes a missing host dir (a failure is create's)
        volume_mounts = None
        if mount_plan is not None:  # volumes made (or filled from the image) and recorded
            from minirun.container import volumes as vols

            points = vols.prepare(store, cid, mount_plan, [str(cdir / "init"), *lowerdirs])
            volume_mounts = vols.spec_mounts(points)
        spec = build_spec(image_cfg, opts, user, hostname, etc, helper_binary("minirun-init"),
                          volume_mounts=volume_mounts)
        # compiled seccomp programs are cached in the store: the next container with the
        # same profile and capabilities loads one in ~0.4 ms instead of ~20 ms
        spec["annotations"] = {SECCOMP_CACHE_ANNOTATION: str(store.root / "cache" / "seccomp")}
        # the runtime makes the cgroup and applies the limits from the spec alone
        spec["linux"]["cgroupsPath"] = engine_path(cid)
        spec["linux"]["resources"] = resources.to_oci()
        (cdir / "config.json").write_text(json.dumps(spec))
        rec = ContainerRecord(
            # what ps shows: the user's command, not --init's wrapper around it
            id=cid, name="", image=image, image_id=img.id, args=spec["process"]["args"][2 if opts.init else 0:],
            created=time.time(), lowerdirs=lowerdirs,
            diff_ids=[layer.diff_id for layer in reversed(img.layers)],
            auto_remove=opts.remove, no_pivot=opts.chroot, options=opts,
            stop_signal=opts.stop_signal or image_cfg.get("StopSignal"), resources=resources,
            network=network, healthcheck=healthcheck)
        containers.register(rec, opts.name)
        if opts.cidfile:
            _write_cidfile(opts.cidfile, cid)
        faults.point("run.record-written")
    except BaseException:
        from minirun.network import local

        if local.uses_bridge(opts.network):
            from minirun.network import attach as net

            net.release(store, cid)  # what prepare allocated, if it got that far
        containers.discard(cid)
        if points:  # the anonymous volumes made for it
            from minirun.container import volumes as vols

            vols.drop_anonymous(store, points)
        raise
    events.container(store, rec, "create")
    return rec


def _write_cidfile(path: str, cid: str) -> None:
    """--cidfile: the new container's ID, in a file that must not exist yet."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    except OSError as e:
        raise ContainerError(f"failed to create the container ID file {path}: {e.strerror}") from None
    with os.fdopen(fd, "w") as f:
        f.write(cid)


def runtime(store: Store) -> Runtime:
    """The OCI runtime, in-process, with its state dir inside the store (so a throw-away
    --root holds everything)."""
    from minirun.runtime.api import Runtime

    return Runtime(str(store.root / "runtime"))


def _bundle(containers: Containers, rec: ContainerRecord) -> tuple[str, OverlayRootfs]:
    """The container dir is an OCI bundle (config.json + rootfs/); the overlay that
    becomes rootfs/ is mounted by the runtime inside the container's mount namespace."""
    from minirun.runtime import OverlayRootfs

    make_bind_sources(rec.options.volumes)  # and again at each start, as Docker does
    cdir = containers.dir(rec.id)
    rootfs = OverlayRootfs(
        lowerdirs=stack(containers, rec), upperdir=str(cdir / "upper"), workdir=str(cdir / "work"),
        target=str(cdir / "rootfs"))
    return str(cdir), rootfs


def _fresh_runtime(store: Store, rec: ContainerRecord) -> Runtime:
    """The runtime, with any state of an earlier run of this container (a crash, a
    restart) deleted first: a new run creates it anew."""
    from minirun.runtime.state import StateError

    rt = runtime(store)
    with contextlib.suppress(StateError):
        rt.delete(rec.id, force=True)
    return rt


def _mark_started(containers: Containers, rec: ContainerRecord, pid: int) -> None:
    """The container runs, supervised by this process (the shim it becomes, or this
    foreground minirun)."""
    rec.status, rec.pid, rec.started_at = "running", pid, time.time()
    rec.pid_start = process_start_time(pid)
    rec.exit_code, rec.finished_at = 0, 0.0
    rec.supervisor_pid, rec.supervisor_start = os.getpid(), process_start_time(os.getpid())
    rec.oom_killed = False
    with contextlib.suppress(FileNotFoundError):
        containers.exit_file(rec.id).unlink()
    containers.save(rec)
    events.container(containers.store, rec, "start")
    if rec.healthcheck:  # its checker (container/health.py), for this run
        from minirun.container import health

        health.spawn(containers.store, rec)


def start(store: Store, rec: ContainerRecord, stdin_open: bool) -> int:
    """Run the container to its end in the foreground; returns Docker's exit status."""
    from minirun import runtime as rtmod
    from minirun.runtime.supervise import CommandNotRunnable

    containers = Containers(store)
    if rec.alive():
        raise ContainerError(f"container {rec.name} is already running")
    devnull = None
    if not stdin_open:  # without -i the container reads EOF, with or without a tty
        devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    # the log, as a shim keeps it (Docker logs attached runs too): the container writes
    # pipes (with a tty, the pty relay does) that a thread copies to our stdout/stderr
    # and into containers/<id>/container.log
    from minirun.container.logs import Tee
    from minirun.runtime.child import FORWARDED_SIGNALS

    tee = Tee(containers.log_file(rec.id), (("stdout", 1),) if rec.options.tty else (("stdout", 1), ("stderr", 2)))
    stdio = rtmod.Stdio(stdin=devnull, stdout=tee.fd("stdout"),
                        stderr=None if rec.options.tty else tee.fd("stderr"))

    def ended() -> None:
        tee.finish()
        if devnull is not None:
            os.close(devnull)

    try:
        # the main thread's handlers forward signals: the tee's thread blocks them
        code = run_supervised(store, rec, stdio, lambda _pid: tee.start(block=FORWARDED_SIGNALS), ended)
    except CommandNotRunnable as e:
        os.write(2, f"minirun: {e}\n".encode())
        code = e.code
    if rec.options.restart != "no":  # Docker: restarted in the background after this first run
        from minirun.container import restart

        restart.after_foreground_exit(store, rec)
    return code


def run_supervised(store: Store, rec: ContainerRecord, stdio: Any,
                   on_start: Callable[[int], None] | None = None,
                   on_end: Callable[[], None] | None = None) -> int:
    """Run the container to its end with ``stdio`` (a runtime Stdio), this process its
    supervisor (foreground ``run``/``start -a``, a build's RUN step): mark it started,
    then record its exit (:func:`finish`) after ``on_end``. A command that cannot be
    exec'd raises CommandNotRunnable once that exit is recorded."""
    from minirun.runtime.supervise import CommandNotRunnable

    containers = Containers(store)
    bundle, rootfs = _bundle(containers, rec)
    rt = _fresh_runtime(store, rec)

    def started(pid: int) -> None:
        # while this process lives, readers wait for it to record the exit status
        if on_start is not None:
            on_start(pid)
        _mark_started(containers, rec, pid)
        faults.point("run.process-started")

    code = 125
    try:
        code = rt.run(rec.id, bundle, rootfs=rootfs, no_pivot=rec.no_pivot, keep=True,
                      stdio=stdio, on_start=started,
                      prestart=_network_hook(store, rec), die_with_parent=True)
    except CommandNotRunnable as e:
        code = e.code
        raise
    finally:
        if on_end is not None:
            on_end()
        finish(store, rec, code)
    return code


def finish(store: Store, rec: ContainerRecord, code: int | None, pid: int | None = None) -> None:
    """After the container's process ended: record its status (``code``, or what its shim
    wrote when None), release what it held, and remove it if it was run with --rm.
    ``pid``: the process that ended; if the record names another, a newer run of the
    container (``restart``) owns it now and there is nothing to do."""
    containers = Containers(store)
    if pid is not None and rec.supervisor_pid != os.getpid():
        return  # not the supervisor of the current run: a restart has replaced it
    finished = time.time()
    ended = pid if pid is not None else rec.pid
    if code is None:
        code, finished = containers.read_exit(rec.id) or (137, finished)
    rec.status, rec.exit_code, rec.finished_at, rec.pid = "exited", code, finished, 0
    rec.oom_killed = containers.oom_killed(rec)  # before the runtime deletes the cgroup
    if rec.oom_killed:
        events.container(store, rec, "oom")
    events.container(store, rec, "die", exitCode=str(code),
                     execDuration=str(int(max(0.0, finished - rec.started_at)) if rec.started_at else 0))
    _release_network(store, rec)
    _delete_runtime_state(store, rec, ended)
    if rec.auto_remove:
        remove(store, rec, force=True)
    elif containers.dir(rec.id).is_dir():
        containers.save(rec)


# the shim's attach socket, in the container's dir (minirun/shim/shim.c has its protocol)
ATTACH_SOCKET = "attach.sock"


def shim_binary() -> str:
    path = helper_binary("minirun-shim")
    if path is None:
        raise ContainerError("minirun-shim is missing: detached containers need it "
                             "(reinstall minirun: pip install . or make install)")
    return path


def start_detached(store: Store, rec: ContainerRecord, attach_wait: float = 0.0) -> int | None:
    """Start the container in the background, watched by minirun-shim; returns None once
    it runs, or the exit status when its command could not be exec'd (127/126).

    minirun forks a monitor that creates and starts the container through the runtime
    (so the container init is the monitor's child) and then exec()s minirun-shim in its
    own place: the shim keeps the pid, waits for its child, copies its output to the log
    and to attached clients (``attach.sock``), and writes its exit status. It reports
    "OK" once its attach socket listens. ``attach_wait``: seconds the shim waits for a
    first client before it copies any output (``start -a`` attaches right after, and
    sees everything)."""
    containers = Containers(store)
    if rec.alive():
        raise ContainerError(f"container {rec.name} is already running")
    _after_previous_run(containers, rec)
    shim = shim_binary()
    bundle, rootfs = _bundle(containers, rec)
    log = containers.log_file(rec.id)
    status_r, status_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the monitor: reports through status_w, never returns
        os.close(status_r)
        _monitor(store, rec, bundle, rootfs, shim, str(log), status_w, attach_wait)
    os.close(status_w)
    with os.fdopen(status_r, "rb") as f:
        report = f.read().decode(errors="replace")
    kind, _, detail = report.partition(" ")
    if kind == "OK":
        return None
    if kind == "EXIT":
        code, _, message = detail.partition(" ")
        if message:
            os.write(2, f"minirun: {message}\n".encode())
        return int(code)
    os.waitpid(pid, 0)
    raise ContainerError(detail or "the container's monitor died before it started the container")


def _after_previous_run(containers: Containers, rec: ContainerRecord) -> None:
    """The previous run's supervisor (its shim, then the cleanup the shim execs) may still
    be recording that run's end: wait for it (15 s at most), so that it cannot overwrite
    the record of the run we start; ``rec`` is then updated to what it recorded."""
    pid = rec.supervisor_pid
    if not pid or pid == os.getpid() or process_start_time(pid) != rec.supervisor_start:
        return
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return
    try:
        if process_start_time(pid) == rec.supervisor_start:  # the pid was not reused meanwhile
            import select

            select.select([pidfd], [], [], 15.0)
    finally:
        os.close(pidfd)
    vars(rec).update(vars(containers.get(rec.id)))


def _monitor(store: Store, rec: ContainerRecord, bundle: str, rootfs: OverlayRootfs,
             shim: str, log: str, status_w: int, attach_wait: float = 0.0) -> None:
    """The forked monitor: create and start, become the shim (which reports). Never returns."""
    from minirun import runtime as rtmod
    from minirun.runtime.supervise import CommandNotRunnable, receive_master

    rt = None
    try:
        from minirun.network.local import uses_bridge

        if uses_bridge(rec.network.get("mode", "none")):
            from minirun.network.netlink import prewarm

            prewarm()  # pyroute2 imported by a worker, on the other core, meanwhile
        os.setsid()  # not killed with the terminal or the CLI's process group
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):  # keep nothing of the CLI's stdio: a reader would wait for EOF
            os.dup2(null, fd)
        os.close(null)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        rt = _fresh_runtime(store, rec)
        terminal = rec.options.tty
        # -i without a tty: the container reads a pipe whose write end the shim holds
        # (attached clients' input goes there); without -i it reads /dev/null
        in_r, in_w = os.pipe() if rec.options.interactive and not terminal else (0, -1)
        psock = csock = None
        if terminal:
            import socket

            psock, csock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            created = rt.create(rec.id, bundle, rootfs=rootfs, no_pivot=rec.no_pivot,
                                console=csock, die_with_parent=True,
                                stdio=rtmod.Stdio(stdin=in_r, stdout=out_w, stderr=err_w),
                                prestart=_network_hook(store, rec))
        except CommandNotRunnable as e:
            finish(store, rec, e.code)
            os.write(status_w, f"EXIT {e.code} {e}".encode())
            os._exit(0)
        finally:
            if csock is not None:
                csock.close()
        master = receive_master(psock) if psock is not None else None
        rt.start(rec.id)
        os.close(out_w)
        os.close(err_w)
        if in_w >= 0:
            os.close(in_r)
        containers = Containers(store)
        if master is not None:  # a tty: its master carries stdout and stderr
            os.close(out_r)
            out_r = master
            os.close(err_r)
            err_r = -1
            if rec.options.interactive:
                in_w = master
        _mark_started(containers, rec, created.pid)
        for fd in (out_r, err_r, in_w, status_w):
            if fd >= 0:
                os.set_inheritable(fd, True)
        cleanup = [sys.executable, "-m", "minirun", "--root", str(store.root), "_cleanup", rec.id,
                   str(created.pid)]
        flags = ["-S", str(containers.dir(rec.id) / ATTACH_SOCKET), "-r", str(status_w)]
        if in_w >= 0:
            flags += ["-i", str(in_w)]
            if rec.options.interactive and not rec.options.detach:
                flags.append("-o")  # Docker's StdinOnce: an attached run -i
        if terminal:
            flags.append("-t")
        if attach_wait > 0:
            flags += ["-w", str(int(attach_wait * 1000))]
        # the shim says "OK" on status_w once its attach socket listens
        os.execv(shim, [shim, *flags, str(created.pid), str(containers.exit_file(rec.id)), log,
                        str(out_r), str(err_r), "--", *cleanup])
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.write(status_w, f"ERR {e}".encode())
        if rt is not None:  # a created (or half-started) container is not left behind
            with contextlib.suppress(Exception):
                rt.delete(rec.id, force=True)
        os._exit(125)


def run(store: Store, image: str, opts: RunOptions, report: Callable[[Any], None] | None = None) -> int:
    """``minirun run``: create, start, wait; with --rm, remove the container after.
    With -d the container runs on in the background; this prints nothing and returns 0.
    ``report`` gets the progress of a pull, if ``--pull`` makes one."""
    rec = create(store, image, opts, report)
    if opts.detach:
        code = start_detached(store, rec)
        return 0 if code is None else code
    return start(store, rec, stdin_open=opts.interactive)


def remove(store: Store, rec: ContainerRecord, force: bool = False, volumes: bool = False) -> None:
    """``rm``: a running container only with force (SIGKILL, then wait for its end).
    ``volumes`` (``rm -v``; always for a --rm container, as Docker): its anonymous volumes
    go too, unless another container uses them; named volumes always stay."""
    containers = Containers(store)
    if rec.options.restart != "no":  # a pending restart cancelled, none after the kill
        from minirun.container import restart

        rec = restart.before_remove(store, rec, force)
    if rec.alive():
        if not force:
            raise ContainerError(f"cannot remove container {rec.name}: it is running "
                                 "(stop it first, or use rm -f)")
        _signal(store, rec, signal.SIGKILL)  # it may end on its own meanwhile: gone all the same
        _wait_exit(containers, rec, 10.0)
    release(store, rec)
    points: list[Any] = []
    if (volumes or rec.auto_remove) and os.path.exists(containers.dir(rec.id) / "mounts.json"):
        from minirun.container import volumes as vols

        points = vols.mounts_of(store, rec.id)
    containers.discard(rec.id, rec.name)
    events.container(store, rec, "destroy")
    if points:
        from minirun.container import volumes as vols

        vols.drop_anonymous(store, points)


def _network_hook(store: Store, rec: ContainerRecord) -> Any:
    """The runtime's prestart hook that plugs a bridge-networked container in (veth, eth0,
    port proxy); None for --network none/host, which then never import pyroute2."""
    from minirun.network.local import uses_bridge

    if not uses_bridge(rec.network.get("mode", "none")):
        return None
    from minirun.network import attach as net

    return net.hook(store, rec.id)


def _release_network(store: Store, rec: ContainerRecord) -> None:
    """Give back the container's address, ports and proxy once its process is gone
    (a newer run of it, after a restart, keeps its own)."""
    from minirun.network.local import uses_bridge

    if uses_bridge(rec.network.get("mode", "none")):
        from minirun.network import attach as net

        net.release(store, rec.id, only_dead=True)


def _delete_runtime_state(store: Store, rec: ContainerRecord, ended: int | None = None) -> None:
    """The runtime's delete: kills what is left, removes the cgroup and its state.
    ``ended``: the init whose end this cleans up; a runtime container with another pid
    (a restart creating its next run, "creating" with pid 0) is not this one's to delete."""
    from minirun.runtime.state import StateError

    rt = runtime(store)
    with contextlib.suppress(StateError):
        if ended and rt.states.load(rec.id).pid != ended:
            return
        rt.delete(rec.id, force=True)


def release(store: Store, rec: ContainerRecord) -> None:
    """Give back what a container holds besides its dir: its runtime state and cgroup
    (and, with networking, its address). Idempotent."""
    _release_network(store, rec)
    _delete_runtime_state(store, rec)
    from minirun.runtime import cgroups

    # a start that failed half-way may have left a cgroup the runtime has no state for
    cg = cgroups.Cgroup.open(engine_path(rec.id))
    if cg is not None:
        cg.kill_all()
        cg.remove()


def kill(store: Store, rec: ContainerRecord, sig: int) -> None:
    """Send a signal to the container's init, through the runtime (a pidfd, checked
    against the init's start time, so a reused pid is never signalled)."""
    if not _signal(store, rec, sig):
        raise ContainerError(f"container {rec.name} is not running")


def _signal(store: Store, rec: ContainerRecord, sig: int) -> bool:
    """:func:`kill`'s work; False if the container was not running. A run that ends on
    its own while being signalled counts as signalled (``stop`` must not fail on it)."""
    from minirun.runtime.state import StateError

    if not rec.alive():
        return False
    if rec.options.restart != "no" and sig in (signal.SIGKILL, _signal_number(rec.stop_signal or "SIGTERM")):
        from minirun.container import restart  # Docker: a fatal kill disables the policy

        restart.mark_stopped(store, rec)
    try:
        runtime(store).kill(rec.id, sig)
    except StateError:
        return True  # it ended (and was deleted) between our check and the signal
    events.container(store, rec, "kill", signal=str(sig))
    from minirun.container.manage import unpause_after_signal

    unpause_after_signal(store, rec, sig)  # a paused container: thawed so it can end
    return True


def _wait_exit(containers: Containers, rec: ContainerRecord, timeout: float | None) -> bool:
    """Wait until the container's process is gone; True if it is."""
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        pidfd = os.pidfd_open(rec.pid)
    except (ProcessLookupError, ValueError):
        return True
    try:
        import select

        while rec.alive():
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if select.select([pidfd], [], [], min(left, 0.5) if left is not None else 0.5)[0]:
                break
            if deadline is not None and time.monotonic() >= deadline:
                return not rec.alive()
        return True
    finally:
        os.close(pidfd)


def wait(store: Store, rec: ContainerRecord) -> int:
    """``wait``: block until the container exits; its exit status."""
    containers = Containers(store)
    if rec.status == "running":
        _wait_exit(containers, rec, None)
        # its shim (or foreground minirun) records the status right after: give it a moment
        for _ in range(200):
            rec = containers.get(rec.id) if containers.dir(rec.id).is_dir() else rec
            if rec.status != "running" or containers.exit_file(rec.id).exists():
                break
            time.sleep(0.01)
        containers.refresh(rec)
    return rec.exit_code


def stop_timeout(rec: ContainerRecord, timeout: float | None = None) -> float | None:
    """How long ``stop`` waits before SIGKILL: ``-t``, else the container's --stop-timeout,
    else 10 s; a negative value waits without a limit (None), as in Docker."""
    if timeout is None:
        timeout = rec.options.stop_timeout if rec.options.stop_timeout is not None else 10.0
    return None if timeout < 0 else timeout


def stop(store: Store, rec: ContainerRecord, timeout: float | None = None) -> None:
    """``stop``: --stop-signal or the image's StopSignal (SIGTERM by default), then SIGKILL
    after ``timeout`` (see :func:`stop_timeout`). A PID 1 ignores signals it has no
    handler for, as in Docker: use --init for that."""
    containers = Containers(store)
    if rec.options.restart != "no":  # no restart after it, and a pending one cancelled
        from minirun.container import restart

        rec = restart.cancel(store, rec)
    if not rec.alive():
        return
    sig = _signal_number(rec.stop_signal or "SIGTERM")
    _signal(store, rec, sig)  # False: it ended on its own since the check above, stopped all the same
    if not _wait_exit(containers, rec, stop_timeout(rec, timeout)):
        _signal(store, rec, signal.SIGKILL)
        _wait_exit(containers, rec, 10.0)
    wait(store, rec)
    _wait_recorded(rec)
    events.container(store, rec, "stop")


def _wait_recorded(rec: ContainerRecord, timeout: float = 5.0) -> None:
    """Until the stopped run's supervisor (its shim's _cleanup) has recorded the exit and
    is gone, as Docker's stop returns after "die": a ``start`` right after then never
    races it, and no process of the old run is left."""
    deadline = time.monotonic() + timeout
    while (rec.supervisor_pid and rec.supervisor_pid != os.getpid()
           and process_start_time(rec.supervisor_pid) == rec.supervisor_start
           and time.monotonic() < deadline):
        time.sleep(0.01)


def _signal_number(text: str | int) -> int:
    """SIGTERM, TERM, 15 -> 15 (docker kill -s and StopSignal accept all three)."""
    from minirun.runtime.api import signal_number
    from minirun.runtime.state import StateError

    if isinstance(text, int):
        return text
    try:
        return signal_number(text)
    except StateError as e:  # its message quotes the text (repr): one line
        raise ContainerError(str(e)) from None


def parse_signal(text: str) -> int:
    return _signal_number(text)


def exec_in(store: Store, rec: ContainerRecord, command: list[str], *, interactive: bool = False,
            tty: bool = False, env: Sequence[str] = (), workdir: str | None = None,
            user: str | None = None, detach: bool = False) -> int:
    """``exec``: run ``command`` in the running container, with the container's own process
    settings (env, user, capabilities, no_new_privs) unless overridden; the runtime joins
    its namespaces, cgroup and root, under its seccomp profile."""
    from minirun import runtime as rtmod
    from minirun.container.spec import merge_env
    from minirun.runtime.config import parse_process
    from minirun.runtime.supervise import CommandNotRunnable

    containers = Containers(store)
    if not rec.alive():
        raise ContainerError(f"container {rec.name} is not running")
    if not command:
        raise ContainerError("no command given: minirun exec CONTAINER COMMAND [ARG...]")
    spec = json.loads((containers.dir(rec.id) / "config.json").read_bytes())
    proc = dict(spec["process"])
    proc["args"] = command
    proc["terminal"] = tty
    proc.pop("consoleSize", None)
    proc["env"] = merge_env(proc.get("env", []), list(env) + (["TERM=xterm"] if tty else []))
    if workdir:
        proc["cwd"] = workdir
    if user:
        u = resolve_user(user, stack(containers, rec))
        proc["user"] = {"uid": u.uid, "gid": u.gid, "additionalGids": u.additional_gids}
        caps = proc["capabilities"]["bounding"]
        proc["capabilities"] = {**proc["capabilities"], "effective": caps if u.uid == 0 else [],
                                "permitted": caps if u.uid == 0 else []}
    devnull = None
    if detach or not interactive:
        devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    try:
        out = devnull if detach else None
        return runtime(store).exec_run(
            rec.id, parse_process(proc), detach=detach,
            stdio=rtmod.Stdio(stdin=devnull, stdout=out, stderr=out))
    except CommandNotRunnable as e:
        os.write(2, f"minirun: {e}\n".encode())
        return e.code
    finally:
        if devnull is not None:
            os.close(devnull)
