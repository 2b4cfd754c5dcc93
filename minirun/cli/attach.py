"""``attach``: connect our stdin/stdout/stderr to a running (detached) container."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from minirun.cli.main import store_from

if TYPE_CHECKING:
    from minirun.container.attach import AttachResult


@click.command()
@click.option("--no-stdin", is_flag=True, help="Do not attach STDIN.")
@click.option("--sig-proxy", type=click.BOOL, default=True, show_default=True,
              help="Proxy all received signals to the process (non-TTY containers).")
@click.option("--detach-keys", default=None, metavar="KEYS",
              help="Override the key sequence for detaching a container (default ctrl-p,ctrl-q).")
@click.argument("container")
@click.pass_context
def attach(ctx: click.Context, no_stdin: bool, sig_proxy: bool, detach_keys: str | None,
           container: str) -> None:
    """Attach local standard input, output, and error streams to a running container."""
    from minirun.container import attach as att
    from minirun.container.records import Containers

    keys = att.parse_detach_keys(detach_keys if detach_keys is not None else att.DEFAULT_DETACH_KEYS)
    store = store_from(ctx, "attach")
    rec = Containers(store).get(container)
    result = att.attach(store, rec, att.AttachOptions(stdin=not no_stdin, sig_proxy=sig_proxy,
                                                      detach_keys=keys))
    ctx.exit(exit_status(result))


def exit_status(result: AttachResult) -> int:
    """Docker's client after the detach keys: ``read escape sequence`` on stderr, status 1."""
    if result.detached:
        click.echo("read escape sequence", err=True)
        return 1
    return result.code
