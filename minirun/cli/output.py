"""Tables and JSON lines the way Docker prints them."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
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


FORMAT_HELP = ("Format the output: table, json, or a Go template ('table {{.ID}}\\t{{.Names}}' "
               "prints a header row and aligned columns).")


def listing(fmt: str, rows: Sequence[dict[str, Any]], headers: Mapping[str, Any],
            columns: Sequence[str], type_name: str = "") -> None:
    """A listing as ``--format`` asks: ``table`` (the default ``columns``), ``json`` (one
    object a line) or a Go template (minirun/cli/template.py, imported only then)."""
    if fmt in ("", "table"):
        table([headers[c] for c in columns], [[str(r[c]) for c in columns] for r in rows])
    elif fmt == "json":
        json_lines(rows)
    else:
        from minirun.cli.template import format_rows

        click.echo(format_rows(fmt, rows, headers, type_name), nl=False)


def label_match(labels: Mapping[str, str], wanted: Sequence[str]) -> bool:
    """``label=KEY`` or ``label=KEY=VALUE`` filters: every one must match (Docker's
    MatchKVList, so several label filters AND)."""
    for w in wanted:
        key, sep, value = w.partition("=")
        if key not in labels or (sep and labels[key] != value):
            return False
    return True


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
