"""Volume verbs: ``volume create|ls|inspect|rm|prune`` (Docker's flags and output), over
minirun/container/volumes.py."""

from __future__ import annotations

from typing import Any

import click

from minirun.cli.main import store_from
from minirun.cli.output import FORMAT_HELP, each, json_doc, listing
from minirun.errors import MinirunError, UsageError
from minirun.filters import parse_filters


@click.group()
def volume() -> None:
    """Manage volumes (directories in the store that outlive the containers using them)."""


def _pairs(items: tuple[str, ...], what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, _, value = item.partition("=")
        if not key:
            raise UsageError(f"invalid {what} {item!r}: the key is empty (use KEY=VALUE)")
        out[key] = value
    return out


@volume.command("create")
@click.option("-d", "--driver", default="local", show_default=True, help="Volume driver (only local).")
@click.option("--label", multiple=True, metavar="KEY=VALUE", help="Set metadata for a volume.")
@click.option("-o", "--opt", multiple=True, metavar="KEY=VALUE", help="Set driver specific options.")
@click.option("--name", "name_flag", hidden=True, help="The volume's name (as the argument).")
@click.argument("name", required=False)
@click.pass_context
def create(ctx: click.Context, driver: str, label: tuple[str, ...], opt: tuple[str, ...],
           name_flag: str | None, name: str | None) -> None:
    """Create a volume (a random name when none is given); prints its name. Creating one
    that exists already leaves it as it is."""
    from minirun.container import volumes as vols

    if name is not None and name_flag is not None and name != name_flag:
        raise UsageError(f"conflicting options: cannot specify a volume-name through both --name "
                         f"and as a positional arg ({name_flag} and {name})")
    vol = vols.create(store_from(ctx, "volume create"), name if name is not None else name_flag,
                      labels=_pairs(label, "label"), options=_pairs(opt, "option"), driver=driver)
    click.echo(vol.name)


# Docker's volume ls columns (cli/command/formatter/volume.go)
_HEADERS: dict[str, Any] = {
    "Name": "VOLUME NAME", "Driver": "DRIVER", "Scope": "SCOPE", "Mountpoint": "MOUNTPOINT",
    "Labels": "LABELS", "Links": "LINKS", "Size": "SIZE", "Label": lambda *_: "LABEL",
}
_FILTERS = ("dangling", "name", "label", "driver")


@volume.command("ls")
@click.option("-q", "--quiet", is_flag=True, help="Only display volume names.")
@click.option("-f", "--filter", "filters", multiple=True, metavar="KEY=VALUE",
              help="Filter: dangling=true|false, name=, label=KEY[=VALUE], driver= (repeatable).")
@click.option("--format", "fmt", default="table", metavar="table|json|TEMPLATE", help=FORMAT_HELP)
@click.pass_context
def ls(ctx: click.Context, quiet: bool, filters: tuple[str, ...], fmt: str) -> None:
    """List volumes."""
    from minirun.container import volumes as vols

    store = store_from(ctx, "volume ls")
    wanted = parse_filters(filters, _FILTERS)
    held = vols.users(store)
    chosen = [v for v in vols.all_volumes(store) if vols.matches(v, wanted, held)]
    if quiet:
        for v in chosen:
            click.echo(v.name)
        return
    template = fmt not in ("", "table", "json")
    rows = []
    for v in chosen:
        labels = dict(v.labels or {})
        row: dict[str, Any] = {
            "Driver": v.driver, "Labels": ",".join(f"{k}={val}" for k, val in sorted(labels.items())),
            "Links": "N/A", "Mountpoint": str(vols.data_dir(store, v.name)), "Name": v.name,
            "Scope": "local", "Size": "N/A",
        }
        if template:
            row["Label"] = lambda key, labels=labels: labels.get(key, "")
        rows.append(row)
    listing(fmt, rows, _HEADERS, ["Driver", "Name"], "volume")


@volume.command("inspect")
@click.option("-f", "--format", "fmt", metavar="TEMPLATE",
              help="Format each volume with a Go template ('{{.Mountpoint}}'); json: the JSON array.")
@click.argument("name", nargs=-1, required=True)
@click.pass_context
def inspect(ctx: click.Context, fmt: str | None, name: tuple[str, ...]) -> None:
    """Show volumes as JSON (Docker's fields: CreatedAt, Driver, Labels, Mountpoint...)."""
    from minirun.container import volumes as vols

    template = None
    if fmt and fmt != "json":
        from minirun.cli.template import parse

        template = parse(fmt)
    store = store_from(ctx, "volume inspect")
    docs = []
    failed = 0
    for n in name:
        try:
            docs.append(vols.get(store, n).inspect(store))
        except MinirunError as e:
            click.echo(f"Error: {e}", err=True)
            failed += 1
    if template is None:
        json_doc(docs)
    else:
        click.echo("".join(template.render(d, "volume") + "\n" for d in docs), nl=False)
    if failed:
        ctx.exit(1)


@volume.command("rm")
@click.option("-f", "--force", is_flag=True, help="Do not fail for a volume that does not exist.")
@click.argument("name", nargs=-1, required=True)
@click.pass_context
def rm(ctx: click.Context, force: bool, name: tuple[str, ...]) -> None:
    """Remove volumes; one that a container (running or not) uses is refused."""
    from minirun.container import volumes as vols

    store = store_from(ctx, "volume rm")
    each(ctx, name, lambda n: vols.remove(store, n, force=force))


@volume.command("prune")
@click.option("-a", "--all", "all_", is_flag=True, help="Remove all unused volumes, not just anonymous ones.")
@click.option("--filter", "filters", multiple=True, metavar="KEY=VALUE",
              help="Provide filter values (label=KEY[=VALUE], label!=KEY[=VALUE], all=true).")
@click.option("-f", "--force", is_flag=True, help="Do not prompt for confirmation.")
@click.pass_context
def prune(ctx: click.Context, all_: bool, filters: tuple[str, ...], force: bool) -> None:
    """Remove unused local volumes: anonymous ones only, unless -a (as Docker 23 and later)."""
    from minirun.cli.prune import confirmed, show
    from minirun.container.volumes import bool_filter
    from minirun.prune import prune_volumes

    wanted = parse_filters(filters, ("label", "label!", "all"))
    if "all" in wanted:
        if all_:
            raise UsageError("conflicting options: cannot specify both --all and --filter all=1")
        all_ = any(bool_filter("all", v) for v in wanted["all"])
    store = store_from(ctx, "volume prune")
    what = "all local volumes" if all_ else "anonymous local volumes"
    if not confirmed(ctx, f"This will remove {what} not used by at least one container.", force):
        return
    show(prune_volumes(store, all_, wanted.get("label", []), wanted.get("label!", [])), volumes=True)
