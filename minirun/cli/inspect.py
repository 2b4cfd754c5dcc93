"""``inspect``: JSON for images and containers (an image name wins, as in Docker)."""

from __future__ import annotations

from typing import Any

import click

from minirun.cli.main import store_from
from minirun.cli.output import json_doc
from minirun.errors import ContainerNotFound, ImageNotFound, MinirunError


@click.command()
@click.option("--type", "kind", type=click.Choice(["image", "container"]), default=None,
              help="Only look for this kind of object.")
@click.argument("name", nargs=-1, required=True)
@click.pass_context
def inspect(ctx: click.Context, kind: str | None, name: tuple[str, ...]) -> None:
    """Show low-level information on images or containers, as JSON."""
    store = store_from(ctx, "inspect")
    out = []
    failed = 0
    for n in name:
        try:
            out.append(_inspect_one(store, kind, n))
        except MinirunError as e:  # Docker: every name is tried, each failure on its own line
            click.echo(f"Error: {e}", err=True)
            failed += 1
    json_doc(out)
    if failed:
        ctx.exit(1)


def _inspect_one(store: Any, kind: str | None, n: str) -> dict[str, Any]:
    from minirun.image.history import image_inspect

    if kind in (None, "image"):
        try:
            doc: dict[str, Any] = image_inspect(store, store.resolve(n))
            return doc
        except ImageNotFound:
            if kind == "image":
                raise
    if kind in (None, "container"):
        from minirun.container.inspect import container_inspect
        from minirun.container.records import Containers

        containers = Containers(store)
        try:
            doc = container_inspect(containers, containers.get(n))
            return doc
        except ContainerNotFound:
            if kind == "container":
                raise
    raise MinirunError(f"no such object: {n}")
