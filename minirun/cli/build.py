"""``minirun build``: a thin click verb over :func:`minirun.image.builder.build`."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from minirun.cli.main import store_from
from minirun.errors import UsageError


def _pairs(values: tuple[str, ...], flag: str, from_env: bool) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values:
        key, eq, value = item.partition("=")
        if not key:
            raise UsageError(f"{flag} {item!r}: want KEY=VALUE")
        if not eq:
            if not from_env:
                raise UsageError(f"{flag} {item!r}: want KEY=VALUE")
            if key not in os.environ:
                continue  # Docker: a --build-arg NAME that the environment lacks is not set
            value = os.environ[key]
        out[key] = value
    return out


@click.command(context_settings={"help_option_names": ["--help"]})
@click.option("-t", "--tag", "tags", multiple=True, metavar="NAME[:TAG]",
              help="Name (and tag) the image; repeatable.")
@click.option("-f", "--file", "file_", metavar="FILE",
              help="The Dockerfile (default: CONTEXT/Dockerfile, else CONTEXT/Containerfile; - for stdin).")
@click.option("--build-arg", "build_args", multiple=True, metavar="KEY[=VALUE]",
              help="Set a build-time ARG (KEY alone: from the environment); repeatable.")
@click.option("--no-cache", is_flag=True, help="Do not use the build cache.")
@click.option("--target", metavar="STAGE", help="Build this stage (default: the last).")
@click.option("--network", default="default", type=click.Choice(["default", "bridge", "none", "host"]),
              help="The network of RUN steps (default: bridge).")
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE", help="Set an image label; repeatable.")
@click.option("-q", "--quiet", is_flag=True, help="Print only the image ID.")
@click.argument("context", type=click.Path(path_type=Path))
@click.pass_context
def build(ctx: click.Context, tags: tuple[str, ...], file_: str | None, build_args: tuple[str, ...],
          no_cache: bool, target: str | None, network: str, labels: tuple[str, ...], quiet: bool,
          context: Path) -> None:
    """Build an image from a Dockerfile (or Containerfile) and a context directory."""
    from minirun.image.builder import BuildOptions
    from minirun.image.builder import build as run_build
    from minirun.image.commit import parse_tag

    for t in tags:
        parse_tag(t)  # a bad name fails before anything runs
    store = store_from(ctx, "build")
    text = None
    dockerfile = None
    if file_ == "-":
        text = sys.stdin.read()
    elif file_ is not None:
        dockerfile = Path(file_)
    opts = BuildOptions(context=context, dockerfile=dockerfile, dockerfile_text=text, tags=list(tags),
                        build_args=_pairs(build_args, "--build-arg", True), no_cache=no_cache,
                        target=target, network="default" if network == "bridge" else network,
                        labels=_pairs(labels, "--label", False), quiet=quiet)
    result = run_build(store, opts, lambda line: click.echo(line, err=False))
    if quiet:
        click.echo(result.image.id)
