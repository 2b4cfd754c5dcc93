"""Authoring verbs: commit (a container's layer as a new image), export (a container's
filesystem as a tar), import (a tar as a new image) — Docker's flags and output."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from minirun.cli.main import store_from
from minirun.errors import UsageError

_GO_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_GO_FALSE = ("0", "f", "F", "FALSE", "false", "False")


class _DockerBoolFlags(click.Command):
    """Docker's boolean flags also take a value after ``=``: ``--pause=false``, ``-p=true``
    (Go's strconv.ParseBool spellings). Rewritten to ``--pause``/``--no-pause`` here."""

    bool_flags: dict[str, tuple[str, str]] = {"-p": ("--pause", "--no-pause"),
                                              "--pause": ("--pause", "--no-pause")}
    value_options = ("-a", "--author", "-c", "--change", "-m", "--message")

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        out: list[str] = []
        i = 0
        while i < len(args):
            a = args[i]
            if a == "--":
                out.extend(args[i:])
                break
            name, eq, value = a.partition("=")
            if eq and name in self.bool_flags:
                on, off = self.bool_flags[name]
                if value in _GO_TRUE:
                    out.append(on)
                elif value in _GO_FALSE:
                    out.append(off)
                else:
                    raise UsageError(f'invalid argument "{value}" for "{name}" flag: '
                                     f'strconv.ParseBool: parsing "{value}": invalid syntax')
            else:
                out.append(a)
                if a in self.value_options and i + 1 < len(args):
                    out.append(args[i + 1])  # an option's value is never rewritten
                    i += 1
            i += 1
        return super().parse_args(ctx, out)


@click.command(cls=_DockerBoolFlags)
@click.option("-a", "--author", default="", help='Author (e.g. "Jane Doe <jane@example.com>").')
@click.option("-c", "--change", multiple=True,
              help="Apply a Dockerfile instruction to the image (CMD, ENTRYPOINT, ENV, EXPOSE, "
                   "HEALTHCHECK, LABEL, ONBUILD, STOPSIGNAL, USER, VOLUME, WORKDIR).")
@click.option("-m", "--message", default="", help="Commit message.")
@click.option("--pause/--no-pause", "-p", "pause", default=True, show_default=True,
              help="Pause the container during the commit (--pause=false to not).")
@click.argument("container")
@click.argument("repository", required=False, metavar="[REPOSITORY[:TAG]]")
@click.pass_context
def commit(ctx: click.Context, author: str, change: tuple[str, ...], message: str, pause: bool,
           container: str, repository: str | None) -> None:
    """Create a new image from a container's changes; prints its ID."""
    from minirun.container.records import Containers
    from minirun.image import commit as authoring

    store = store_from(ctx, "commit")
    tag = authoring.parse_tag(repository) if repository else None
    authoring.parse_changes(change)  # a bad --change is reported before the container is looked up
    rec = Containers(store).get(container)
    done = authoring.commit(store, rec, tag=tag, message=message, author=author, changes=change,
                            pause=pause)
    click.echo(done.image.id)


@click.command()
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write to a file, instead of STDOUT.")
@click.argument("container")
@click.pass_context
def export(ctx: click.Context, output: Path | None, container: str) -> None:
    """Export a container's filesystem as a tar archive."""
    from minirun.container import export as exporting
    from minirun.container.records import Containers

    if output is None and sys.stdout.isatty():
        raise UsageError("cowardly refusing to save to a terminal; use -o FILE or redirect")
    store = store_from(ctx, "export")
    rec = Containers(store).get(container)
    if output is not None:
        exporting.export_to_file(store, rec, output)
        return
    out = sys.stdout.buffer
    exporting.export(store, rec, out)
    out.flush()


@click.command("import")
@click.option("-c", "--change", multiple=True, help="Apply a Dockerfile instruction to the image.")
@click.option("-m", "--message", default="", help="Set a commit message for the imported image.")
@click.option("--platform", metavar="OS/ARCH[/VARIANT]", help="Set the platform (default: the host's).")
@click.argument("source", metavar="file|-")
@click.argument("repository", required=False, metavar="[REPOSITORY[:TAG]]")
@click.pass_context
def import_(ctx: click.Context, change: tuple[str, ...], message: str, platform: str | None,
            source: str, repository: str | None) -> None:
    """Import the contents of a tarball (plain or compressed) to create an image; prints its ID."""
    from minirun.image import commit as authoring
    from minirun.image import oci

    store = store_from(ctx, "import")
    tag = authoring.parse_tag(repository) if repository else None
    authoring.parse_changes(change)
    plat = oci.Platform.parse(platform) if platform else None
    if source.startswith(("http://", "https://")):
        raise UsageError("import from a URL is not supported: download it, then import the file")
    kwargs: dict[str, Any] = {"tag": tag, "message": message, "changes": change, "platform": plat}
    if source == "-":
        if sys.stdin.isatty():
            raise UsageError("requested import from stdin, but stdin is a terminal (pipe a tar, or give FILE)")
        rec = authoring.import_image(store, sys.stdin.buffer, **kwargs)
    else:
        with open(source, "rb") as f:
            rec = authoring.import_image(store, f, **kwargs)
    click.echo(rec.id)
