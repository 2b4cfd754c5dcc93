"""``minirun cp``: files and folders between a container and the host (Docker's flags,
path rules and messages), over minirun.container.copy."""

from __future__ import annotations

import sys

import click

from minirun.cli.main import store_from
from minirun.errors import UsageError


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-a", "--archive", is_flag=True,
              help="Archive mode: files copied into the container keep their uid:gid (else root's).")
@click.option("-L", "--follow-link", "follow", is_flag=True, help="Always follow a symlink in SRC_PATH.")
@click.option("-q", "--quiet", is_flag=True,
              help="Suppress the progress line (it is printed only when stderr is a terminal).")
@click.argument("src", metavar="SRC")
@click.argument("dest", metavar="DEST")
@click.pass_context
def cp(ctx: click.Context, archive: bool, follow: bool, quiet: bool, src: str, dest: str) -> None:
    """Copy files/folders between a container and the local filesystem.

    minirun cp [OPTIONS] CONTAINER:SRC_PATH DEST_PATH|-

    minirun cp [OPTIONS] SRC_PATH|- CONTAINER:DEST_PATH

    Works for running, paused, created and exited containers. Use '-' as the source to
    read a tar archive from stdin and extract it to a directory in the container; use
    '-' as the destination to write a tar archive of the container's SRC_PATH to
    stdout. Container paths are relative to the container's / and are resolved inside
    it: its symlinks never lead out of it."""
    from minirun.container import copy
    from minirun.container.records import Containers
    from minirun.humanize import human_size

    src_ctr, src_path = copy.split_cp_arg(src)
    dst_ctr, dst_path = copy.split_cp_arg(dest)
    if src_ctr and dst_ctr:
        raise UsageError("copying between containers is not supported")
    if not src_ctr and not dst_ctr:
        raise UsageError("must specify at least one container source (CONTAINER:PATH)")
    store = store_from(ctx, "cp")
    containers = Containers(store)
    if src_ctr:
        rec = containers.get(src_ctr)
        if dst_path == "-":
            copy.copy_from(store, rec, src_path, sys.stdout.buffer, follow=follow, archive=archive,
                           label=src_ctr)
            sys.stdout.buffer.flush()
            return
        res = copy.copy_from(store, rec, src_path, dst_path, follow=follow, archive=archive, label=src_ctr)
        shown = dst_path
    else:
        rec = containers.get(dst_ctr)
        source = sys.stdin.buffer if src_path == "-" else src_path
        res = copy.copy_to(store, rec, source, dst_path, follow=follow, archive=archive, label=dst_ctr)
        shown = dest
    if not quiet and sys.stderr.isatty():
        click.echo(f"Successfully copied {human_size(res.size)} to {shown}", err=True)
