"""``inspect``: JSON for images and containers (an image name wins, as in Docker), or each
one rendered through a Go template (``-f '{{.State.Pid}}'``, minirun/cli/template.py)."""

from __future__ import annotations

from typing import Any

import click

from minirun.cli.main import store_from
from minirun.cli.output import json_doc
from minirun.errors import ContainerNotFound, ImageNotFound, MinirunError


@click.command()
@click.option("-f", "--format", "fmt", metavar="TEMPLATE",
              help="Format each object with a Go template, one line each ('{{.State.Pid}}', "
                   "'{{json .Config}}'); json: the JSON array (the default).")
@click.option("--type", "kind", type=click.Choice(["image", "container"]), default=None,
              help="Only look for this kind of object.")
@click.argument("name", nargs=-1, required=True)
@click.pass_context
def inspect(ctx: click.Context, fmt: str | None, kind: str | None, name: tuple[str, ...]) -> None:
    """Show low-level information on images or containers, as JSON or through a template."""
    template = None
    if fmt and fmt != "json":
        from minirun.cli.template import parse

        template = parse(fmt)  # a bad template fails before anything is looked up, as in Docker
    store = store_from(ctx, "inspect")
    out = []
    failed = 0
    for n in name:
        try:
            out.append(_inspect_one(store, kind, n))
        except MinirunError as e:  # Docker: every name is tried, each failure on its own line
            click.echo(f"Error: {e}", err=True)
            failed += 1
    if template is None:
        json_doc(out)
    else:
        lines = [template.render(doc, "image" if "RepoTags" in doc else "container") for doc in out]
        click.echo("".join(line + "\n" for line in lines), nl=False)
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
