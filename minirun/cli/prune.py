"""The prune verbs: ``container prune``, ``image prune [-a]``, ``network prune`` and
``system prune [-a]``, each asking first unless ``-f`` (Docker's prompt and output)."""

from __future__ import annotations

import sys

import click

from minirun.cli.main import store_from
from minirun.humanize import human_size
from minirun.prune import PruneReport

_FORCE = click.option("-f", "--force", is_flag=True, help="Do not prompt for confirmation.")


def confirmed(ctx: click.Context, warning: str, force: bool) -> bool:
    """Docker's prompt: the warning, then ``[y/N]`` read from stdin (a tty or not)."""
    if force:
        return True
    click.echo(f"WARNING! {warning}\nAre you sure you want to continue? [y/N] ", nl=False)
    answer = sys.stdin.readline()
    if not answer.endswith("\n"):
        click.echo()
    return answer.strip().lower() in ("y", "yes")


def show(report: PruneReport, containers: bool = False, networks: bool = False,
         images: bool = False, volumes: bool = False) -> None:
    """Docker's report: a section per kind that removed something, then the total."""
    lines: list[str] = []
    if containers and report.containers:
        lines += ["Deleted Containers:", *report.containers, ""]
    if networks and report.networks:
        lines += ["Deleted Networks:", *report.networks, ""]
    if volumes and report.volumes:
        lines += ["Deleted Volumes:", *report.volumes, ""]
    listed = [r for r in report.images if r.listed]
    if images and listed:
        lines += ["Deleted Images:", *(f"{r.action.lower()}: {r.what}" for r in listed), ""]
    if containers or images or volumes:
        lines.append(f"Total reclaimed space: {human_size(report.reclaimed)}")
    if lines:
        click.echo("\n".join(lines))
    for failure in report.failures:
        click.echo(f"Error: {failure}", err=True)


def _end(ctx: click.Context, report: PruneReport) -> None:
    if report.failures:
        ctx.exit(1)


@click.command("prune")
@_FORCE
@click.pass_context
def container_prune(ctx: click.Context, force: bool) -> None:
    """Remove all stopped containers (and their container layers)."""
    from minirun.prune import prune_containers

    store = store_from(ctx, "container prune")
    if not confirmed(ctx, "This will remove all stopped containers.", force):
        return
    report = prune_containers(store)
    show(report, containers=True)
    _end(ctx, report)


@click.command("prune")
@click.option("-a", "--all", "all_", is_flag=True,
              help="Remove all images no container uses, not just dangling ones.")
@_FORCE
@click.pass_context
def image_prune(ctx: click.Context, all_: bool, force: bool) -> None:
    """Remove dangling images (untagged and unused), and every blob and layer no image
    refers to (what a killed pull or load left)."""
    from minirun.prune import prune_images

    store = store_from(ctx, "image prune")
    what = "all images without at least one container associated to them" if all_ else "all dangling images"
    if not confirmed(ctx, f"This will remove {what}.", force):
        return
    report = prune_images(store, all_)
    show(report, images=True)
    _end(ctx, report)


@click.command("prune")
@_FORCE
@click.pass_context
def network_prune(ctx: click.Context, force: bool) -> None:
    """Remove every network no container uses (the default one too: it comes back on use)."""
    from minirun.prune import prune_networks

    store = store_from(ctx, "network prune")
    if not confirmed(ctx, "This will remove all custom networks not used by at least one container.", force):
        return
    show(prune_networks(store), networks=True)


@click.command("prune")
@click.option("-a", "--all", "all_", is_flag=True, help="Remove all unused images, not just dangling ones.")
@click.option("--volumes", is_flag=True, help="Prune anonymous volumes.")
@_FORCE
@click.pass_context
def system_prune(ctx: click.Context, all_: bool, volumes: bool, force: bool) -> None:
    """Remove stopped containers, unused networks, dangling (with -a: unused) images and,
    with --volumes, unused anonymous volumes."""
    from minirun.prune import prune_system

    store = store_from(ctx, "system prune")
    images = "all images without at least one container associated to them" if all_ else "all dangling images"
    anonymous = "  - all anonymous volumes not used by at least one container\n" if volumes else ""
    warning = ("This will remove:\n  - all stopped containers\n"
               f"  - all networks not used by at least one container\n{anonymous}"
               f"  - {images}\n  - all blobs and layers no image refers to\n")
    if not confirmed(ctx, warning, force):
        return
    report = prune_system(store, all_, volumes=volumes)
    show(report, containers=True, networks=True, images=True, volumes=volumes)
    _end(ctx, report)
