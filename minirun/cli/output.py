"""Tables and JSON lines the way Docker prints them."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import click


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Columns padded by three spaces, like Docker's tabwriter output."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = ["   ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in [list(headers), *rows]]  # fmt: skip
    click.echo("\n".join(lines))  # one write: `ps -a` of 1000 containers is 1001 lines


def json_lines(objs: Sequence[dict[str, Any]]) -> None:
    """``--format json``: one JSON object per line, as ``docker images --format json``."""
    if objs:
        click.echo("\n".join(json.dumps(o) for o in objs))


def each(ctx: click.Context, names: Sequence[str], action: Callable[[str], object], echo: bool = True) -> None:
    """Docker's way with several names: act on each, print the name given (``echo``),
    report a failure in one line and go on; exit 1 if any failed."""
    from minirun.errors import MinirunError

    failed = 0
    for name in names:
        try:
            action(name)
            if echo:
                click.echo(name)
        except MinirunError as e:
            click.echo(f"Error: {e}", err=True)
            failed += 1
    if failed:
        ctx.exit(1)


def json_doc(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=4))
