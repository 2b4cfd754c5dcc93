"""Container verbs: run, ps, rm, diff."""

from __future__ import annotations

import os
import time
from pathlib import Path

import click

from minirun.cli.main import store_from
from minirun.cli.output import json_lines, table
from minirun.container.spec import RunOptions, expand_env, parse_env_file
from minirun.errors import MinirunError


@click.command(context_settings={"allow_interspersed_args": False})
@click.option("-i", "--interactive", is_flag=True, help="Keep STDIN open.")
@click.option("-t", "--tty", is_flag=True, help="Allocate a pseudo-TTY.")
@click.option("--rm", "remove", is_flag=True, help="Remove the container when it exits.")
@click.option("--name", help="Assign a name to the container.")
@click.option("-e", "--env", multiple=True, help="Set environment variables (KEY=VAL, or KEY to pass the host's).")
@click.option("--env-file", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Read environment variables from a file.")
@click.option("-w", "--workdir", help="Working directory inside the container.")
@click.option("-u", "--user", help="Username or UID (format: <name|uid>[:<group|gid>]).")
@click.option("-h", "--hostname", help="Container host name.")
@click.option("--entrypoint", help="Overwrite the image's ENTRYPOINT (\"\" for none).")
@click.option("--read-only", is_flag=True, help="Mount the container's root filesystem read-only.")
@click.option("-v", "--volume", multiple=True, help="Bind mount a volume (/host:/container[:ro]).")
@click.option("--tmpfs", multiple=True, help="Mount a tmpfs directory (PATH[:options]).")
@click.option("--cap-add", multiple=True, help="Add Linux capabilities.")
@click.option("--cap-drop", multiple=True, help="Drop Linux capabilities.")
@click.option("--security-opt", multiple=True, help="Security options (no-new-privileges).")
@click.option("--chroot", is_flag=True, help="Use chroot instead of pivot_root (runc's --no-pivot).")
@click.argument("image")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def run(ctx: click.Context, interactive: bool, tty: bool, remove: bool, name: str | None,
        env: tuple[str, ...], env_file: tuple[Path, ...], workdir: str | None, user: str | None,
        hostname: str | None, entrypoint: str | None, read_only: bool, volume: tuple[str, ...],
        tmpfs: tuple[str, ...], cap_add: tuple[str, ...], cap_drop: tuple[str, ...],
        security_opt: tuple[str, ...], chroot: bool, image: str, command: tuple[str, ...]) -> None:
    """Run a command in a new container."""
    from minirun.container import lifecycle

    store = store_from(ctx, "run")
    host_env = dict(os.environ)
    env_list: list[str] = []
    for f in env_file:
        try:
            text = f.read_text()
        except OSError as e:
            raise MinirunError(f"--env-file {f}: {e.strerror}") from None
        env_list += parse_env_file(text, host_env, str(f))
    env_list += expand_env(list(env), host_env)
    nnp = False
    for opt in security_opt:
        if opt in ("no-new-privileges", "no-new-privileges:true", "no-new-privileges=true"):
            nnp = True
        elif opt not in ("no-new-privileges:false", "no-new-privileges=false"):
            raise MinirunError(f"unsupported --security-opt {opt!r} (supported: no-new-privileges)")
    opts = RunOptions(
        command=list(command), entrypoint=entrypoint, env=env_list, workdir=workdir, user=user,
        hostname=hostname, tty=tty, interactive=interactive, read_only=read_only,
        volumes=list(volume), tmpfs=list(tmpfs), cap_add=list(cap_add), cap_drop=list(cap_drop),
        no_new_privileges=nnp, chroot=chroot, name=name, remove=remove,
    )
    ctx.exit(lifecycle.run(store, image, opts))


def _command_text(args: list[str], trunc: bool) -> str:
    text = " ".join(args)
    if trunc and len(text) > 20:
        text = text[:19] + "…"
    return f'"{text}"'


@click.command()
@click.option("-a", "--all", "all_", is_flag=True, help="Show all containers (default shows just running).")
@click.option("-q", "--quiet", is_flag=True, help="Only display container IDs.")
@click.option("--no-trunc", is_flag=True, help="Don't truncate output.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.pass_context
def ps(ctx: click.Context, all_: bool, quiet: bool, no_trunc: bool, fmt: str) -> None:
    """List containers."""
    from minirun.container.records import Containers
    from minirun.humanize import ago

    store = store_from(ctx, "ps")
    now = time.time()
    rows = []
    for rec in Containers(store).all():
        if not all_ and rec.effective_status() != "running":
            continue
        rows.append({
            "ID": rec.id if no_trunc else rec.id[:12], "Image": rec.image,
            "Command": _command_text(rec.args, not no_trunc), "RunningFor": ago(rec.created, now),
            "Status": rec.status_text(now), "State": rec.effective_status(), "Ports": "",
            "Names": rec.name,
        })
    if quiet:
        for r in rows:
            click.echo(r["ID"])
    elif fmt == "json":
        json_lines(rows)
    else:
        table(["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"],
              [[r["ID"], r["Image"], r["Command"], r["RunningFor"], r["Status"], r["Ports"], r["Names"]]
               for r in rows])


@click.command()
@click.option("-f", "--force", is_flag=True, help="Force the removal of a running container (SIGKILL).")
@click.argument("container", nargs=-1, required=True)
@click.pass_context
def rm(ctx: click.Context, force: bool, container: tuple[str, ...]) -> None:
    """Remove one or more containers (and their container layers)."""
    from minirun.container.records import Containers

    containers = Containers(store_from(ctx, "rm"))
    failed = 0
    for ref in container:
        try:
            containers.remove(containers.get(ref), force=force)
            click.echo(ref)
        except MinirunError as e:
            click.echo(f"Error: {e}", err=True)
            failed += 1
    if failed:
        ctx.exit(1)


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
