"""``inspect``: JSON for images and containers (an image name wins, as in Docker)."""

from __future__ import annotations

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
    from minirun.image.history import image_inspect

    store = store_from(ctx, "inspect")
    out = []
    for n in name:
        if kind in (None, "image"):
            try:
                out.append(image_inspect(store, store.resolve(n)))
                continue
            except ImageNotFound:
                if kind == "image":
                    raise
        if kind in (None, "container"):
            from minirun.container.inspect import container_inspect
            from minirun.container.records import Containers

            containers = Containers(store)
            try:
                out.append(container_inspect(containers, containers.get(n)))
                continue
            except ContainerNotFound:
                if kind == "container":
                    raise
        raise MinirunError(f"no such object: {n}")
    json_doc(out)
