"""Container verbs: run, ps, rm, diff."""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from minirun.cli.main import store_from
from minirun.cli.output import FORMAT_HELP, each, json_lines, listing, table
from minirun.cli.runflags import run_flags, run_options
from minirun.errors import MinirunError, UsageError

if TYPE_CHECKING:
    from minirun.container.records import ContainerRecord
    from minirun.image.store import Store


@click.command(context_settings={"allow_interspersed_args": False})
@click.option("-d", "--detach", is_flag=True, help="Run in the background and print the container ID.")
@run_flags
@click.argument("image")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def run(ctx: click.Context, detach: bool, image: str, command: tuple[str, ...], **flags: Any) -> None:
    """Run a command in a new container."""
    from minirun.container import lifecycle

    store = store_from(ctx, "run")
    opts = run_options(flags, list(command), detach)
    network = opts.network
    if not detach and network not in ("none", "host"):
        from minirun.network.netlink import prewarm

        prewarm()  # pyroute2 is imported on the other core while the container is made
    if not detach:
        ctx.exit(lifecycle.run(store, image, opts, _pull_report))
    rec = lifecycle.create(store, image, opts, _pull_report)
    code = lifecycle.start_detached(store, rec)
    if code is not None:  # the command could not be exec'd; the runtime said why on stderr
        ctx.exit(code)
    click.echo(rec.id)


@click.command(context_settings={"allow_interspersed_args": False})
@run_flags
@click.argument("image")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def create(ctx: click.Context, image: str, command: tuple[str, ...], **flags: Any) -> None:
    """Create a new container (its layer, config and name) without starting it; prints
    its ID. `minirun start` runs it."""
    from minirun.container import lifecycle

    store = store_from(ctx, "create")
    rec = lifecycle.create(store, image, run_options(flags, list(command), detach=False), _pull_report)
    click.echo(rec.id)


class _PullReport:
    """Pull progress of `run --pull`, on stderr (stdout is the container's). The renderer
    is made on the first event, so a run that pulls nothing never imports it."""

    def __init__(self) -> None:
        self.render: Callable[[Any], None] | None = None

    def __call__(self, event: Any) -> None:
        if self.render is None:
            from minirun.image import progress

            self.render = progress.renderer(sys.stderr)
        self.render(event)


_pull_report = _PullReport()


def _command_text(args: list[str], trunc: bool) -> str:
    text = " ".join(args)
    if trunc and len(text) > 20:
        text = text[:19] + "…"
    return f'"{text}"'


# Docker's ps columns (cli/command/formatter/container.go): a template's header row
_PS_HEADERS: dict[str, Any] = {
    "ID": "CONTAINER ID", "Image": "IMAGE", "Command": "COMMAND", "CreatedAt": "CREATED AT",
    "RunningFor": "CREATED", "Ports": "PORTS", "State": "STATE", "Status": "STATUS", "Size": "SIZE",
    "Names": "NAMES", "Labels": "LABELS", "Label": lambda *_: "LABEL", "Mounts": "MOUNTS",
    "Networks": "NETWORKS", "LocalVolumes": "LOCAL VOLUMES",
}
_PS_FILTERS = ("status", "name", "id", "ancestor", "label", "exited", "volume", "health")
_STATES = ("created", "restarting", "running", "removing", "paused", "exited", "dead")


@click.command()
@click.option("-a", "--all", "all_", is_flag=True, help="Show all containers (default shows just running).")
@click.option("-q", "--quiet", is_flag=True, help="Only display container IDs.")
@click.option("--no-trunc", is_flag=True, help="Don't truncate output.")
@click.option("-f", "--filter", "filters", multiple=True, metavar="KEY=VALUE",
              help="Filter: status=, name=, id=, ancestor=, label=, exited=, volume= (repeatable).")
@click.option("--format", "fmt", default="table", metavar="table|json|TEMPLATE", help=FORMAT_HELP)
@click.pass_context
def ps(ctx: click.Context, all_: bool, quiet: bool, no_trunc: bool, filters: tuple[str, ...],
       fmt: str) -> None:
    """List containers."""
    from minirun.container.records import Containers
    from minirun.filters import parse_filters
    from minirun.humanize import ago

    def ports_text(store: Store, cid: str) -> str:
        from minirun.network.attach import ports_text  # only for running containers

        return ports_text(store, cid)

    store = store_from(ctx, "ps")
    wanted = parse_filters(filters, _PS_FILTERS)
    for value in wanted.get("exited", []):
        if not value.lstrip("-").isdigit():
            raise UsageError(f"invalid filter 'exited={value}' (an exit code)")
    for value in wanted.get("health", []):
        if value not in ("starting", "healthy", "unhealthy", "none"):
            raise UsageError(f"unrecognised filter value for health: {value} "
                             "(starting, healthy, unhealthy or none)")
    for value in wanted.get("status", []):
        if value not in _STATES:
            raise UsageError(f"invalid filter 'status={value}' (one of {', '.join(_STATES)})")
    all_ = all_ or "status" in wanted  # Docker: a status filter looks at every container
    full = fmt not in ("", "table")  # json and templates have Docker's every field
    template = full and fmt != "json"
    images = _Images(store)
    now = time.time()
    rows = []
    for rec in Containers(store).all():
        status = rec.status_text(now)
        state = "paused" if status.endswith("(Paused)") else rec.effective_status()
        if not all_ and state not in ("running", "paused", "restarting"):
            continue
        if wanted and not _ps_match(rec, state, wanted, images):
            continue
        row: dict[str, Any] = {
            "ID": rec.id if no_trunc else rec.id[:12], "Image": rec.image,
            "Command": _command_text(rec.args, not no_trunc), "RunningFor": ago(rec.created, now),
            "Status": status, "State": state,
            "Ports": ports_text(store, rec.id) if rec.alive() else "",
            "Names": rec.name,
        }
        if full:
            row.update(_ps_more(rec, images.container_labels(rec), no_trunc))
        if template:
            row.update(_ps_methods(store, rec, images))
        rows.append(row)
    if quiet:
        for r in rows:
            click.echo(r["ID"])
        return
    listing(fmt, rows, _PS_HEADERS,
            ["ID", "Image", "Command", "RunningFor", "Status", "Ports", "Names"], "container")


def _ps_match(rec: ContainerRecord, state: str, wanted: dict[str, list[str]],
              images: _Images) -> bool:
    """Docker's ps filters: the values of one key OR, the keys AND (label= filters AND)."""
    from minirun.cli.output import label_match

    def search(key: str, *texts: str) -> bool:
        try:
            return any(re.search(p, t) for p in wanted[key] for t in texts)
        except re.error as e:
            raise UsageError(f"invalid filter '{key}': bad pattern: {e}") from None

    if "status" in wanted and state not in wanted["status"]:
        return False
    if "health" in wanted:
        from minirun.container.health import filter_status
        from minirun.container.records import Containers

        if filter_status(Containers(images.store), rec) not in wanted["health"]:
            return False
    if "name" in wanted and not search("name", "/" + rec.name, rec.name):
        return False
    if "id" in wanted and not search("id", rec.id):
        return False
    if "exited" in wanted and not (state == "exited" and rec.status == "exited"
                                   and str(rec.exit_code) in wanted["exited"]):
        return False
    if "ancestor" in wanted and not any(images.is_image_of(a, rec) for a in wanted["ancestor"]):
        return False
    if "volume" in wanted:  # a volume's name or a mount point (container/volumes.py)
        from minirun.container.volumes import uses_volume

        if not uses_volume(images.store, rec.id, wanted["volume"]):
            return False
    return "label" not in wanted or label_match(images.container_labels(rec), wanted["label"])


def _ps_more(rec: ContainerRecord, labels: dict[str, str], no_trunc: bool) -> dict[str, Any]:
    """The fields beyond the default table's, as Docker's ps formatter has them."""
    def ellipsis(s: str, n: int = 15) -> str:
        return s if no_trunc or len(s) <= n else s[:n - 1] + "…"

    return {
        "CreatedAt": time.strftime("%Y-%m-%d %H:%M:%S %z %Z", time.localtime(rec.created)),
        "Labels": ",".join(f"{k}={v}" for k, v in sorted(labels.items())),
        "Mounts": ",".join(ellipsis(v.split(":", 1)[0]) for v in rec.options.volumes),
        "Networks": rec.options.network,
        "LocalVolumes": "0",  # named volumes: minirun has none
    }


def _ps_methods(store: Store, rec: ContainerRecord, images: _Images) -> dict[str, Any]:
    """What only a template may ask for: .Size (walks the container layer), .Label "KEY"."""
    from minirun.cli.template import Lazy
    from minirun.container.records import Containers
    from minirun.df import tree_size
    from minirun.humanize import human_size

    def size() -> str:
        rw = tree_size(Containers(store).dir(rec.id) / "upper")
        image = images.record(rec.image_id)
        virtual = rw + (image.size if image is not None else 0)
        return f"{human_size(rw)} (virtual {human_size(virtual)})" if virtual else human_size(rw)

    labels = images.container_labels(rec)
    return {"Size": Lazy(size), "Label": lambda key: labels.get(key, "")}


class _Images:
    """The image facts some ps filters and fields need, each image read once."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._records: dict[str, Any] = {}
        self._labels: dict[str, dict[str, str]] = {}

    def record(self, ref: str) -> Any:
        if ref not in self._records:
            try:
                self._records[ref] = self.store.resolve(ref)
            except MinirunError:
                self._records[ref] = None
        return self._records[ref]

    def labels(self, image_id: str) -> dict[str, str]:
        if image_id not in self._labels:
            rec, labels = self.record(image_id), {}
            if rec is not None:
                try:
                    labels = dict(self.store.manifest_and_config(rec)[1].config.get("Labels") or {})
                except (MinirunError, OSError):
                    pass
            self._labels[image_id] = {str(k): str(v) for k, v in labels.items()}
        return self._labels[image_id]

    def container_labels(self, rec: ContainerRecord) -> dict[str, str]:
        """Docker's container labels: the image's, with --label/--label-file over them."""
        return {**self.labels(rec.image_id), **rec.options.labels}

    def is_image_of(self, ancestor: str, rec: ContainerRecord) -> bool:
        """``ancestor=IMAGE``: the container was made from it (by name, tag or ID)."""
        if rec.image == ancestor:
            return True
        image = self.record(ancestor)
        return image is not None and image.id == rec.image_id


def _each(ctx: click.Context, verb: str, names: tuple[str, ...],
          action: Callable[[Store, ContainerRecord], None], echo: bool = True) -> None:
    """Apply ``action`` to each named container like Docker: print the name given, report
    errors one line each, and exit 1 if any failed."""
    from minirun.container.records import Containers

    store = store_from(ctx, verb)
    containers = Containers(store)
    each(ctx, names, lambda ref: action(store, containers.get(ref)), echo)


@click.command()
@click.option("-f", "--force", is_flag=True, help="Force the removal of a running container (SIGKILL).")
@click.option("-v", "--volumes", is_flag=True, help="Remove anonymous volumes associated with the container.")
@click.argument("container", nargs=-1, required=True)
@click.pass_context
def rm(ctx: click.Context, force: bool, volumes: bool, container: tuple[str, ...]) -> None:
    """Remove one or more containers (and their container layers)."""
    from minirun.container import lifecycle

    _each(ctx, "rm", container, lambda store, rec: lifecycle.remove(store, rec, force=force, volumes=volumes))


@click.command()
@click.option("-t", "--time", "timeout", type=float, default=None,
              help="Seconds to wait for the container to stop before killing it "
                   "(default: its --stop-timeout, or 10).")
@click.argument("container", nargs=-1, required=True)
@click.pass_context
def stop(ctx: click.Context, timeout: float | None, container: tuple[str, ...]) -> None:
    """Stop running containers: StopSignal (SIGTERM), then SIGKILL after the timeout."""
    from minirun.container import lifecycle

    _each(ctx, "stop", container, lambda store, rec: lifecycle.stop(store, rec, timeout))


@click.command()
@click.option("-s", "--signal", "sig", default="KILL", show_default=True, help="Signal to send.")
@click.argument("container", nargs=-1, required=True)
@click.pass_context
def kill(ctx: click.Context, sig: str, container: tuple[str, ...]) -> None:
    """Send a signal to running containers."""
    from minirun.container import lifecycle

    number = lifecycle.parse_signal(sig)
    _each(ctx, "kill", container, lambda store, rec: lifecycle.kill(store, rec, number))


@click.command()
@click.option("-a", "--attach", is_flag=True, help="Attach STDOUT/STDERR and wait for the container.")
@click.option("-i", "--interactive", is_flag=True, help="Attach STDIN.")
@click.argument("container", nargs=-1, required=True)
@click.pass_context
def start(ctx: click.Context, attach: bool, interactive: bool, container: tuple[str, ...]) -> None:
    """Start stopped containers, on the container layer they already have."""
    from minirun.container import lifecycle
    from minirun.container.records import Containers

    if attach or interactive:
        if len(container) != 1:
            raise MinirunError("you cannot start and attach multiple containers at once")
        from minirun.cli.attach import exit_status
        from minirun.container.attach import start_attached

        store = store_from(ctx, "start")
        rec = Containers(store).get(container[0])
        with _manual_start(store, rec):  # the restart policy applies again (Docker)
            pass
        # through the shim, as `run -d`, then attached: its output is logged too
        ctx.exit(exit_status(start_attached(store, rec, stdin=interactive)))

    def go(store: Store, rec: ContainerRecord) -> None:
        if rec.alive():
            return  # Docker: starting a running container is a no-op
        with _manual_start(store, rec):
            code = lifecycle.start_detached(store, rec)
        if code is not None:
            raise MinirunError(f"container {rec.name}: its command could not be run (exit status {code})")

    _each(ctx, "start", container, go)


@click.command()
@click.option("-t", "--time", "timeout", type=float, default=None,
              help="Seconds to wait for the container to stop before killing it "
                   "(default: its --stop-timeout, or 10).")
@click.argument("container", nargs=-1, required=True)
@click.pass_context
def restart(ctx: click.Context, timeout: float | None, container: tuple[str, ...]) -> None:
    """Restart containers (stop, then start in the background)."""
    from minirun.container import lifecycle

    def go(store: Store, rec: ContainerRecord) -> None:
        lifecycle.stop(store, rec, timeout)
        with _manual_start(store, rec):
            code = lifecycle.start_detached(store, rec)
        if code is not None:
            raise MinirunError(f"container {rec.name}: its command could not be run (exit status {code})")
        from minirun import events

        events.container(store, rec, "restart")

    _each(ctx, "restart", container, go)


@click.command()
@click.argument("container", nargs=-1, required=True)
@click.pass_context
def wait(ctx: click.Context, container: tuple[str, ...]) -> None:
    """Block until containers stop, then print their exit codes."""
    from minirun.container import lifecycle

    _each(ctx, "wait", container,
          lambda store, rec: click.echo(str(lifecycle.wait(store, rec))), echo=False)


@click.command()
@click.option("-f", "--follow", is_flag=True, help="Follow log output (ends when the container exits).")
@click.option("-n", "--tail", default="all", show_default=True, help="Lines to show from the end.")
@click.option("-t", "--timestamps", is_flag=True, help="Show timestamps.")
@click.option("--since", help="Show logs since a time (e.g. 2026-12-03T10:00:00Z, a unix timestamp) "
                              "or a duration before now (e.g. 42m).")
@click.option("--until", help="Show logs before a time or a duration before now.")
@click.argument("container")
@click.pass_context
def logs(ctx: click.Context, follow: bool, tail: str, timestamps: bool, since: str | None,
         until: str | None, container: str) -> None:
    """Fetch the logs of a container (detached or not): its stdout and stderr, each to its own."""
    import minirun.container.logs as log
    from minirun.container.records import Containers

    if tail != "all" and not tail.isdigit():
        raise MinirunError(f"invalid --tail {tail!r}: a number of lines, or all")
    containers = Containers(store_from(ctx, "logs"))
    rec = containers.get(container)
    path = containers.log_file(rec.id)
    since_ns = until_ns = None
    if since or until:
        from minirun.events import parse_time

        since_ns = parse_time(since, "--since") if since else None
        until_ns = parse_time(until, "--until") if until else None
    lines, offset = log.read(path, None if tail == "all" else int(tail), since_ns, until_ns)
    out, err = sys.stdout, sys.stderr

    def emit(line: log.LogLine) -> None:
        stream = out if line.stream == "stdout" else err
        stream.write(f"{line.time} {line.text}" if timestamps else line.text)
        stream.flush()

    for line in lines:
        emit(line)
    if follow:
        def running() -> bool:
            return containers.refresh(containers.get(rec.id)).alive()

        for line in log.follow(path, offset, running):
            if until_ns is not None and line.time_ns >= until_ns:
                break
            emit(line)


@click.command()
@click.option("-a", "--all", "all_", is_flag=True, help="Show all containers (default shows just running).")
@click.option("--no-stream", is_flag=True, help="Print one result and exit.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.argument("container", nargs=-1)
@click.pass_context
def stats(ctx: click.Context, all_: bool, no_stream: bool, fmt: str, container: tuple[str, ...]) -> None:
    """Live resource usage of containers: CPU %, memory usage / limit, PIDs (from their cgroups)."""
    from minirun.container.records import Containers
    from minirun.container.stats import sample

    containers = Containers(store_from(ctx, "stats"))

    def chosen() -> list[ContainerRecord]:
        if container:
            return [containers.get(c) for c in container]
        return [r for r in containers.all() if all_ or r.alive()]

    first = True
    while True:
        rows = sample(chosen(), interval=0.5 if first else 1.0)
        if fmt == "json":
            json_lines(rows)
        else:
            if not no_stream:
                click.echo("\x1b[2J\x1b[H", nl=False)  # redraw in place, like docker stats
            table(["CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "PIDS"],
                  [[r["ID"], r["Name"], r["CPUPerc"], r["MemUsage"], r["MemPerc"], r["PIDs"]] for r in rows])
        if no_stream:
            return
        first = False


@click.command(name="_cleanup", hidden=True)
@click.argument("container")
@click.argument("pid", type=int)
@click.pass_context
def cleanup(ctx: click.Context, container: str, pid: int) -> None:
    """Run by minirun-shim when a detached container exits: record it, release, --rm."""
    from minirun.container import lifecycle
    from minirun.container.records import Containers

    store = store_from(ctx, "_cleanup")
    try:
        rec = Containers(store).get(container)
    except MinirunError:
        return  # removed meanwhile (rm -f)
    lifecycle.finish(store, rec, None, pid)
    if rec.options.restart != "no":  # this process keeps the restart policy (back-off, start)
        from minirun.container import restart

        restart.after_exit(store, rec.id)


def _manual_start(store: Store, rec: ContainerRecord) -> Any:
    """A user's start: the restart policy applies again and RestartCount is 0 (Docker);
    no restarter starts the container meanwhile."""
    import contextlib

    if rec.options.restart == "no":
        return contextlib.nullcontext()
    from minirun.container import restart

    return restart.manual_start(store, rec)


@click.command()
@click.argument("container")
@click.pass_context
def diff(ctx: click.Context, container: str) -> None:
    """Show what a container changed: A added, C changed, D deleted (read from its layer)."""
    from minirun.container.diff import changes
    from minirun.container.lifecycle import stack
    from minirun.container.records import Containers

    containers = Containers(store_from(ctx, "diff"))
    rec = containers.get(container)
    for change in changes(str(containers.dir(rec.id) / "upper"), stack(containers, rec)):
        click.echo(str(change))
