"""``exec``: run a command in a running container."""

from __future__ import annotations

import os

import click

from minirun.cli.main import store_from
from minirun.container.spec import expand_env


@click.command(name="exec", context_settings={"allow_interspersed_args": False})
@click.option("-i", "--interactive", is_flag=True, help="Keep STDIN open.")
@click.option("-t", "--tty", is_flag=True, help="Allocate a pseudo-TTY.")
@click.option("-d", "--detach", is_flag=True, help="Run the command in the background.")
@click.option("-e", "--env", multiple=True, help="Set environment variables.")
@click.option("-w", "--workdir", help="Working directory inside the container.")
@click.option("-u", "--user", help="Username or UID (format: <name|uid>[:<group|gid>]).")
@click.argument("container")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_context
def exec_(ctx: click.Context, interactive: bool, tty: bool, detach: bool, env: tuple[str, ...],
          workdir: str | None, user: str | None, container: str, command: tuple[str, ...]) -> None:
    """Run a command in a running container (all its namespaces, cgroup and root)."""
    from minirun.container import lifecycle
    from minirun.container.records import Containers

    store = store_from(ctx, "exec")
    rec = Containers(store).get(container)
    ctx.exit(lifecycle.exec_in(
        store, rec, list(command), interactive=interactive, tty=tty,
        env=expand_env(list(env), dict(os.environ)), workdir=workdir, user=user, detach=detach))
