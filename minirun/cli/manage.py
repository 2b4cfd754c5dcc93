"""Container verbs for existing containers: rename, pause, unpause, top (Docker's output)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import click

from minirun.cli.main import store_from
from minirun.cli.output import each

if TYPE_CHECKING:
    from minirun.container.records import ContainerRecord
    from minirun.image.store import Store


def _each(ctx: click.Context, verb: str, names: Sequence[str],
          action: Callable[[Store, ContainerRecord], None]) -> None:
    """Docker's way with several names: each name on success, each error on its own
    line, exit 1 if any failed."""
    from minirun.container.records import Containers

    store = store_from(ctx, verb)
    containers = Containers(store)
    each(ctx, names, lambda ref: action(store, containers.get(ref)))


@click.command()
@click.argument("container")
@click.argument("new_name")
@click.pass_context
def rename(ctx: click.Context, container: str, new_name: str) -> None:
    """Rename a container (running or not)."""
    from minirun.container import manage
    from minirun.container.records import Containers

    store = store_from(ctx, "rename")
    manage.rename(store, Containers(store).get(container), new_name)


@click.command()
@click.argument("container", nargs=-1, required=True)
@click.pass_context
def pause(ctx: click.Context, container: tuple[str, ...]) -> None:
    """Pause all processes within one or more containers (cgroup freezer)."""
    from minirun.container import manage

    _each(ctx, "pause", container, manage.pause)


@click.command()
@click.argument("container", nargs=-1, required=True)
@click.pass_context
def unpause(ctx: click.Context, container: tuple[str, ...]) -> None:
    """Unpause all processes within one or more containers."""
    from minirun.container import manage

    _each(ctx, "unpause", container, manage.unpause)


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("container")
@click.argument("ps_options", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def top(ctx: click.Context, container: str, ps_options: tuple[str, ...]) -> None:
    """Display the running processes of a container (host ps; default options -ef)."""
    from minirun.container import manage
    from minirun.container.records import Containers

    store = store_from(ctx, "top")
    titles, rows = manage.top(store, Containers(store).get(container), ps_options)
    click.echo(_tabwriter([titles, *rows]))


def _tabwriter(rows: Sequence[Sequence[str]], minwidth: int = 20, padding: int = 3) -> str:
    """docker top's layout (Go's tabwriter, minwidth 20, padding 3): every column but the
    last padded to the widest cell + 3, and at least 20."""
    ncols = max((len(r) for r in rows), default=0)
    widths = [max(minwidth, max((len(r[i]) for r in rows if i < len(r)), default=0) + padding)
              for i in range(ncols - 1)]  # fmt: skip
    lines = []
    for r in rows:
        cells = [c.ljust(widths[i]) if i < len(r) - 1 else c for i, c in enumerate(r)]
        lines.append("".join(cells).rstrip())
    return "\n".join(lines)
