"""``minirun-runtime``: an OCI runtime with runc's command line, so Podman, containerd (its
runc shim) and anything else that drives runc can drive minirun instead.

Only flags and output live here; every operation is ``minirun.runtime.api.Runtime``.
Errors are one line on stderr and, with ``--log``, one record in the log file in the
chosen format (runc's logrus text, or JSON lines ``{"level", "msg", "time"}`` that
containerd and conmon read back), exit status 1.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import click

from minirun import __version__
from minirun.errors import MinirunError


class _Log:
    def __init__(self) -> None:
        self.path: str | None = None
        self.fmt = "text"
        self.debug = False

    def __call__(self, level: str, msg: str) -> None:
        if level == "debug" and not self.debug:
            return
        if level in ("warning", "error") or self.debug:
            if self.path is None and level != "error":
                click.echo(f"{level}: {msg}", err=True)
        if self.path is None:
            return
        now = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{time.time_ns() % 10**9:09d}Z"
        if self.fmt == "json":
            line = json.dumps({"level": level, "msg": msg, "time": now})
        else:
            line = f'time="{now}" level={level} msg={json.dumps(msg)}'
        try:
            with open(self.path, "a") as f:
                f.write(line + "\n")
        except OSError:
            pass


LOG = _Log()


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MinirunError as e:
            LOG("error", str(e))
            click.echo(str(e), err=True)
            sys.exit(getattr(e, "exit_code", 1) if getattr(e, "exit_code", 1) != 125 else 1)
        except OSError as e:
            msg = f"{e.strerror or e}" + (f": {e.filename}" if e.filename else "")
            LOG("error", msg)
            click.echo(msg, err=True)
            sys.exit(1)


def _version() -> str:
    from minirun.runtime.config import OCI_VERSION

    return f"minirun-runtime version {__version__}\nspec: {OCI_VERSION}"


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--root", default=None, help="State dir (default /run/minirun-runtime).")
@click.option("--log", "log_path", default=None, help="Log file (default: stderr only).")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text")
@click.option("--debug", is_flag=True)
@click.option("--systemd-cgroup", is_flag=True, help="cgroupsPath is slice:prefix:name.")
@click.option("--rootless", default="auto", help="Accepted for runc compatibility.")
@click.option("--criu", default=None, hidden=True)
@click.version_option(message="%(version)s", version=_version(), prog_name="minirun-runtime")
@click.pass_context
def cli(ctx: click.Context, root: str | None, log_path: str | None, log_format: str, debug: bool,
        systemd_cgroup: bool, rootless: str, criu: str | None) -> None:  # fmt: skip
    """minirun-runtime: an OCI runtime (runtime-spec 1.2), a drop-in for runc."""
    from minirun.runtime.api import Runtime
    from minirun.runtime.state import DEFAULT_ROOT

    LOG.path, LOG.fmt, LOG.debug = log_path, log_format, debug
    ctx.obj = Runtime(root or DEFAULT_ROOT, systemd_cgroup=systemd_cgroup, log=LOG)


def _rt(ctx: click.Context) -> Any:
    return ctx.find_root().obj


def _console(path: str | None) -> Any:
    if not path:
        return None
    import socket

    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
    except OSError as e:
        s.close()
        from minirun.errors import RuntimeFailure

        raise RuntimeFailure(f"--console-socket {path}: cannot connect: {e.strerror}") from None
    return s


_bundle = click.option("--bundle", "-b", default=".", help="Bundle dir (config.json, rootfs).")
_pid_file = click.option("--pid-file", default=None, help="Write the init's pid here.")
_console_socket = click.option("--console-socket", default=None,
                               help="Unix socket to send the pty master to.")
_no_pivot = click.option("--no-pivot", is_flag=True, help="chroot instead of pivot_root.")
_no_keyring = click.option("--no-new-keyring", is_flag=True, help="Accepted (no session keyring).")
_preserve = click.option("--preserve-fds", type=int, default=0, help="Pass fds 3..3+N-1 on.")


@cli.command()
@_bundle
@_console_socket
@_pid_file
@_no_pivot
@_no_keyring
@_preserve
@click.argument("container_id")
@click.pass_context
def create(ctx: click.Context, bundle: str, console_socket: str | None, pid_file: str | None,
           no_pivot: bool, no_new_keyring: bool, preserve_fds: int, container_id: str) -> None:  # fmt: skip
    """Create a container: set up, then wait for `start`."""
    sock = _console(console_socket)
    try:
        _rt(ctx).create(container_id, bundle, console=sock, pid_file=pid_file, no_pivot=no_pivot,
                        preserve_fds=_total_fds(preserve_fds))  # fmt: skip
    finally:
        if sock is not None:
            sock.close()


def _total_fds(preserve: int) -> int:
    """--preserve-fds plus systemd's LISTEN_FDS, as runc passes both."""
    try:
        listen = int(os.environ.get("LISTEN_FDS", "0"))
    except ValueError:
        listen = 0
    return preserve + listen


@cli.command()
@click.argument("container_id")
@click.pass_context
def start(ctx: click.Context, container_id: str) -> None:
    """Start a created container (its process execs its command)."""
    _rt(ctx).start(container_id)


@cli.command()
@click.argument("container_id")
@click.pass_context
def state(ctx: click.Context, container_id: str) -> None:
    """Print the container's state (runtime-spec state JSON)."""
    click.echo(json.dumps(_rt(ctx).state(container_id), indent=2))


@cli.command()
@click.option("--all", "-a", "all_", is_flag=True, help="Signal every process of the container.")
@click.argument("container_id")
@click.argument("signal", default="SIGTERM")
@click.pass_context
def kill(ctx: click.Context, all_: bool, container_id: str, signal: str) -> None:
    """Send a signal (name with or without SIG, or number) to the container's init."""
    from minirun.runtime.api import signal_number

    _rt(ctx).kill(container_id, signal_number(signal), all=all_)


@cli.command()
@click.option("--force", "-f", is_flag=True, help="Kill a running container first.")
@click.argument("container_id")
@click.pass_context
def delete(ctx: click.Context, force: bool, container_id: str) -> None:
    """Delete a stopped (or created) container and everything it held."""
    from minirun.runtime.state import StateError

    try:
        _rt(ctx).delete(container_id, force=force)
    except StateError as e:
        if force and "does not exist" in str(e):
            return  # runc: delete --force of a missing container succeeds
        raise


@cli.command()
@_bundle
@_console_socket
@_pid_file
@_no_pivot
@_no_keyring
@_preserve
@click.option("--detach", "-d", is_flag=True, help="Do not wait for the container.")
@click.option("--keep", is_flag=True, help="Do not delete the container after it exits.")
@click.argument("container_id")
@click.pass_context
def run(ctx: click.Context, bundle: str, console_socket: str | None, pid_file: str | None,
        no_pivot: bool, no_new_keyring: bool, preserve_fds: int, detach: bool, keep: bool,
        container_id: str) -> None:  # fmt: skip
    """Create and start a container; wait for it unless -d. Exit status is its own."""
    rt = _rt(ctx)
    from minirun.runtime.supervise import CommandNotRunnable

    if detach or console_socket:
        sock = _console(console_socket)
        try:
            rt.create(container_id, bundle, console=sock, pid_file=pid_file, no_pivot=no_pivot,
                      preserve_fds=_total_fds(preserve_fds))  # fmt: skip
        finally:
            if sock is not None:
                sock.close()
        rt.start(container_id)
        if detach:
            return
        from minirun.runtime.supervise import wait

        st = rt.state(container_id)
        code = wait(st["pid"])
        if not keep:
            rt.delete(container_id, force=True)
        sys.exit(code)
    try:
        code = rt.run(container_id, bundle, no_pivot=no_pivot, keep=keep,
                      preserve_fds=_total_fds(preserve_fds))  # fmt: skip
    except CommandNotRunnable as e:
        LOG("error", str(e))
        click.echo(str(e), err=True)
        sys.exit(e.code)
    sys.exit(code)


# the command's own flags follow the id: stop parsing ours there (runc does the same)
@cli.command(name="exec", context_settings={"allow_interspersed_args": False})
@click.option("--process", "-p", "process_file", default=None, help="A process.json.")
@click.option("--tty", "-t", is_flag=True)
@_console_socket
@click.option("--detach", "-d", is_flag=True)
@_pid_file
@click.option("--cwd", default=None)
@click.option("--env", "-e", multiple=True)
@click.option("--user", "-u", default=None, help="UID[:GID]")
@click.option("--additional-gids", "-g", multiple=True, type=int)
@click.option("--cap", "-c", multiple=True, help="Add a capability.")
@click.option("--no-new-privs", is_flag=True)
@click.option("--apparmor", default=None, hidden=True)
@click.option("--process-label", default=None, hidden=True)
@click.option("--preserve-fds", type=int, default=0)
@click.option("--cgroup", default=None, hidden=True)
@click.option("--ignore-paused", is_flag=True, hidden=True)
@click.argument("container_id")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def exec_(ctx: click.Context, process_file: str | None, tty: bool, console_socket: str | None,
          detach: bool, pid_file: str | None, cwd: str | None, env: tuple[str, ...],
          user: str | None, additional_gids: tuple[int, ...], cap: tuple[str, ...],
          no_new_privs: bool, apparmor: str | None, process_label: str | None,
          preserve_fds: int, cgroup: str | None, ignore_paused: bool, container_id: str,
          args: tuple[str, ...]) -> None:  # fmt: skip
    """Run another process in a running container."""
    from minirun.runtime import config as cfgmod

    rt = _rt(ctx)
    if process_file:
        with open(process_file, "rb") as f:
            raw = json.loads(f.read())
    else:
        if not args:
            raise click.UsageError("exec needs a command, or --process FILE")
        raw = {**rt.process_of(container_id), "args": list(args), "terminal": tty}
        raw.pop("consoleSize", None)
    if cwd:
        raw["cwd"] = cwd
    if env:
        raw["env"] = list(raw.get("env") or []) + list(env)
    if user:
        uid, _, gid = user.partition(":")
        raw["user"] = {**(raw.get("user") or {}), "uid": int(uid), "gid": int(gid or 0)}
    if additional_gids:
        raw.setdefault("user", {})["additionalGids"] = list(additional_gids)
    if cap:
        caps = dict(raw.get("capabilities") or {})
        for s in ("bounding", "effective", "permitted"):
            caps[s] = sorted(set(caps.get(s) or []) | {c.upper() for c in cap})
        raw["capabilities"] = caps
    if no_new_privs:
        raw["noNewPrivileges"] = True
    proc = cfgmod.parse_process(raw, "process")
    sock = _console(console_socket)
    try:
        code = rt.exec_run(container_id, proc, console=sock, detach=detach, pid_file=pid_file,
                           preserve_fds=_total_fds(preserve_fds))  # fmt: skip
    finally:
        if sock is not None:
            sock.close()
    sys.exit(code)


@cli.command(name="list")
@click.option("--format", "-f", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.option("--quiet", "-q", is_flag=True)
@click.pass_context
def list_(ctx: click.Context, fmt: str, quiet: bool) -> None:
    """List containers."""
    states = _rt(ctx).list_all()
    if quiet:
        for s in states:
            click.echo(s["id"])
    elif fmt == "json":
        click.echo(json.dumps(states))
    else:
        from minirun.cli.output import table

        table(["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"],
              [[s["id"], str(s["pid"]), s["status"], s["bundle"], s["created"], s["owner"]]
               for s in states])  # fmt: skip


@cli.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--format", "-f", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.argument("container_id")
@click.argument("ps_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def ps(ctx: click.Context, fmt: str, container_id: str, ps_args: tuple[str, ...]) -> None:
    """The processes of a container (json: their pids)."""
    pids = _rt(ctx).ps(container_id)
    if fmt == "json":
        click.echo(json.dumps(pids))
        return
    import subprocess

    out = subprocess.run(["ps", *(ps_args or ("-ef",))], capture_output=True, text=True).stdout
    lines = out.splitlines()
    if not lines:
        return
    header = lines[0].split()
    col = header.index("PID") if "PID" in header else 0
    click.echo(lines[0])
    wanted = {str(p) for p in pids}
    for line in lines[1:]:
        fields = line.split()
        if len(fields) > col and fields[col] in wanted:
            click.echo(line)


@cli.command()
@click.argument("container_id")
@click.pass_context
def pause(ctx: click.Context, container_id: str) -> None:
    """Freeze every process of the container (cgroup freezer)."""
    _rt(ctx).pause(container_id)


@cli.command()
@click.argument("container_id")
@click.pass_context
def resume(ctx: click.Context, container_id: str) -> None:
    """Thaw a paused container."""
    _rt(ctx).resume(container_id)


@cli.command()
@click.option("--resources", "-r", default=None, help="linux.resources JSON file, - for stdin.")
@click.option("--memory", default=None, type=int)
@click.option("--memory-swap", default=None, type=int)
@click.option("--memory-reservation", default=None, type=int)
@click.option("--cpu-shares", default=None, type=int)
@click.option("--cpu-quota", default=None, type=int)
@click.option("--cpu-period", default=None, type=int)
@click.option("--cpuset-cpus", default=None)
@click.option("--cpuset-mems", default=None)
@click.option("--pids-limit", default=None, type=int)
@click.option("--blkio-weight", default=None, type=int)
@click.option("--cpus", default=None, type=float, help="CPUs (quota over a 100 ms period).")
@click.argument("container_id")
@click.pass_context
def update(ctx: click.Context, resources: str | None, memory: int | None, memory_swap: int | None,
           memory_reservation: int | None, cpu_shares: int | None, cpu_quota: int | None,
           cpu_period: int | None, cpuset_cpus: str | None, cpuset_mems: str | None,
           pids_limit: int | None, blkio_weight: int | None, cpus: float | None,
           container_id: str) -> None:  # fmt: skip
    """Change a running container's linux.resources."""
    res: dict[str, Any] = {}
    if resources:
        text = sys.stdin.read() if resources == "-" else open(resources).read()
        res = json.loads(text)
    mem = {k: v for k, v in (("limit", memory), ("swap", memory_swap),
                             ("reservation", memory_reservation)) if v is not None}  # fmt: skip
    if cpus is not None:
        cpu_period = cpu_period or 100_000
        cpu_quota = int(cpus * cpu_period)
    cpu = {k: v for k, v in (("shares", cpu_shares), ("quota", cpu_quota), ("period", cpu_period),
                             ("cpus", cpuset_cpus), ("mems", cpuset_mems)) if v is not None}  # fmt: skip
    if mem:
        res.setdefault("memory", {}).update(mem)
    if cpu:
        res.setdefault("cpu", {}).update(cpu)
    if pids_limit is not None:
        res["pids"] = {"limit": pids_limit}
    if blkio_weight is not None:
        res["blockIO"] = {"weight": blkio_weight}
    _rt(ctx).update(container_id, res)


@cli.command()
def features() -> None:
    """What this runtime supports (runtime-spec features.md)."""
    from minirun.runtime.features import features as f

    click.echo(json.dumps(f(), indent=2))


@cli.command()
@click.option("--bundle", "-b", default=".", help="Where to write config.json.")
@click.option("--rootless", is_flag=True, help="A spec for a user namespace of the caller.")
def spec(bundle: str, rootless: bool) -> None:
    """Write a default config.json (like `runc spec`)."""
    from minirun.runtime.features import default_spec

    path = os.path.join(bundle, "config.json")
    if os.path.exists(path):
        from minirun.errors import UsageError

        raise UsageError(f"File {path} exists. Remove it first")
    with open(path, "w") as f:
        f.write(json.dumps(default_spec(rootless=rootless), indent=2) + "\n")


def main() -> None:
    """Run the verb, then flush and leave with os._exit: the interpreter's teardown of
    every module costs ~10 ms that an engine pays at each of its runtime calls."""
    code = 0
    try:
        cli.main(prog_name="minirun-runtime", standalone_mode=True)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        code = code or 1
    os._exit(code)
