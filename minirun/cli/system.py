"""``minirun system check [--repair]`` (verify the store, see minirun/image/check.py),
``system df`` and ``system prune``."""

from __future__ import annotations

import click

from minirun.cli.main import store_from
from minirun.cli.prune import system_prune


@click.group()
def system() -> None:
    """Manage minirun's store as a whole."""


@system.command()
@click.option("--repair", is_flag=True,
              help="Remove what is unreferenced, corrupt or half-written (older than 10 minutes).")
@click.pass_context
def check(ctx: click.Context, repair: bool) -> None:
    """Verify every blob's digest, layer, image, name and container record (like git fsck).
    Exit status 1 when a problem is left."""
    from minirun.image.check import check as run_check

    problems = run_check(store_from(ctx, "system check"), repair=repair)
    for p in problems:
        mark = "repaired" if p.repaired else "found"
        click.echo(f"{mark:<9} {p.kind:<20} {p.what}: {p.detail}")
    left = [p for p in problems if not p.repaired]
    if problems:
        click.echo(f"{len(problems)} problem(s), {len(problems) - len(left)} repaired")
    else:
        click.echo("store is consistent")
    if left:
        ctx.exit(1)


@system.command()
@click.option("-v", "--verbose", is_flag=True, help="Show detailed information on space usage.")
@click.option("--format", "fmt", default="table", metavar="table|json|TEMPLATE",
              help="Format the output: table, json, or a Go template ('{{.Type}} {{.Size}}').")
@click.pass_context
def df(ctx: click.Context, verbose: bool, fmt: str) -> None:
    """Show the disk the store uses: images (each shared layer counted once), containers,
    volumes and build cache, with what is active and reclaimable."""
    from minirun.cli.df import show

    show(store_from(ctx, "system df"), verbose, fmt)


system.add_command(system_prune)
