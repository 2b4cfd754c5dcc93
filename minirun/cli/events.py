"""``minirun events``: the store's event journal (minirun/events.py), as Docker prints it."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click

from minirun.cli.main import store_from


def _formatter(fmt: str | None) -> Callable[[dict[str, Any]], str]:
    from minirun import events as ev

    if not fmt:
        return ev.pretty
    if fmt == "json":
        return lambda e: json.dumps(e, separators=(",", ":"))
    from minirun.cli.template import docker_format, parse

    _table, body = docker_format(fmt)
    if body.replace(" ", "") == "{{json.}}":  # Docker's API encoding, not Go's field names
        return lambda e: json.dumps(e, separators=(",", ":"))
    tmpl = parse(body)
    return lambda e: tmpl.render(ev.template_data(e), "events.Message")


@click.command()
@click.option("--since", help="Show events created since this time (RFC 3339, unix timestamp, or a duration like 10m).")
@click.option("--until", help="Stream events until this time (same forms as --since).")
@click.option("-f", "--filter", "filters", multiple=True, metavar="KEY=VALUE",
              help="Filter: type=, event=, container=, image=, label=, network=, volume= (repeatable).")
@click.option("--format", "fmt", metavar="json|TEMPLATE", help="Format the output: json, or a Go template.")
@click.pass_context
def events(ctx: click.Context, since: str | None, until: str | None, filters: tuple[str, ...],
           fmt: str | None) -> None:
    """Get real time events from the store: without --until, follows new events until
    interrupted."""
    from minirun import events as ev

    store = store_from(ctx, "events")
    since_ns = ev.parse_time(since, "--since") if since else None
    until_ns = ev.parse_time(until, "--until") if until else None
    flt = ev.parse_filters(list(filters))
    out = _formatter(fmt)
    try:
        for e in ev.follow(store.root, since_ns, until_ns):
            if flt.match(e):
                click.echo(out(e))
    except KeyboardInterrupt:
        pass  # Ctrl-C ends the stream: that is how it is meant to end


@click.command(name="_health", hidden=True)
@click.argument("container")
@click.argument("pid", type=int)
@click.argument("pid_start")
@click.pass_context
def health_checker(ctx: click.Context, container: str, pid: int, pid_start: str) -> None:
    """Started with each run of a container that has a health check: runs the check
    every interval until the container's init ``PID`` (started at ``PID_START``) ends."""
    from minirun.container.health import monitor

    monitor(store_from(ctx, "_health"), container, pid, pid_start)
