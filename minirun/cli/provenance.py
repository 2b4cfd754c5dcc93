"""Provenance verbs: ``blame`` (which layer gives a path its version) and ``layers``
(what each layer of an image or container adds, changes and deletes, and the space
wasted by versions nobody sees)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from minirun.cli.main import store_from
from minirun.cli.output import json_doc, json_lines, table
from minirun.errors import ContainerNotFound, ImageNotFound, MinirunError
from minirun.humanize import human_size
from minirun.image.digest import short_id

if TYPE_CHECKING:
    from minirun.image.provenance import Blame, LayerName, StackLayer, StackReport
    from minirun.image.store import Store

_FORMATS = click.Choice(["table", "json"])


def open_stack(store: Store, name: str) -> list[StackLayer]:
    """The stack of image ``name`` or, if no image has that name, of container ``name``
    (an image name wins, as with ``inspect``)."""
    from minirun.image import provenance

    try:
        return provenance.image_stack(store, store.resolve(name))
    except ImageNotFound:
        pass
    from minirun.container.records import Containers

    containers = Containers(store)
    try:
        rec = containers.get(name)
    except ContainerNotFound:
        raise MinirunError(f"no such image or container: {name}") from None
    try:
        image = store.resolve(rec.image_id)
    except ImageNotFound:
        image = None
    cdir = containers.dir(rec.id)
    return provenance.container_stack(store, list(reversed(rec.diff_ids)), image,
                                      str(cdir / "init"), str(cdir / "upper"))


def _trunc(text: str, no_trunc: bool) -> str:
    return text if no_trunc or len(text) <= 45 else text[:44] + "…"


def _layer_id(diff_id: str, no_trunc: bool) -> str:
    if not diff_id:
        return "-"
    return diff_id if no_trunc else short_id(diff_id)


def _shared(n: int) -> str:
    return f"{n} image{'s' if n != 1 else ''}" if n else ""


def _labels(names: tuple[LayerName, ...]) -> str:
    """Layer labels, topmost first, with runs of adjacent layers as ranges: "init,98-0"."""
    out: list[str] = []
    run: list[int] = []

    def flush() -> None:
        if run:
            out.append(str(run[0]) if len(run) == 1 else
                       f"{run[0]},{run[1]}" if len(run) == 2 else f"{run[0]}-{run[-1]}")
            run.clear()

    for n in names:
        if n.label.isdigit() and run and int(n.label) == run[-1] - 1:
            run.append(int(n.label))
            continue
        flush()
        if n.label.isdigit():
            run.append(int(n.label))
        else:
            out.append(n.label)
    flush()
    return ",".join(out) or "-"


def _name_json(n: LayerName | None, no_trunc: bool) -> dict[str, Any] | None:
    if n is None:
        return None
    return {"Layer": n.key, "DiffID": _layer_id(n.diff_id, no_trunc) if n.diff_id else "",
            "CreatedBy": _trunc(n.created_by, no_trunc), "SharedBy": n.shared_by}


def _blame_json(b: Blame, no_trunc: bool) -> dict[str, Any]:
    return {
        "Path": b.path, "Resolved": b.resolved, "Status": b.status,
        **(_name_json(b.layer, no_trunc) or {}),
        "Kind": b.kind, "Size": b.size, "Mode": f"{b.mode:04o}", "Target": b.target,
        "Opaque": b.opaque,
        "Shadows": [_name_json(s, no_trunc) for s in b.shadows],
        "Reason": b.reason, "At": b.at,
        "From": _name_json(b.origin, no_trunc),
        "Via": list(b.via),
    }


def _note(b: Blame) -> str:
    notes: list[str] = []
    what = b.kind if b.kind != "symlink" else f"symlink -> {b.target}"
    if b.opaque:
        what = "opaque dir"
    origin = f"was from layer {b.origin.label}" if b.origin else ""
    if b.status == "present":
        if b.kind != "file":
            notes.append(what)
        if b.layer.label == "rw":
            notes.append("changed in the container" if b.shadows else "new in the container")
    elif b.reason == "whiteout":
        notes.append(f"deleted (whiteout), {origin}")
    elif b.reason == "dir deleted":
        notes.append(f"deleted with its dir {b.at}, {origin}")
    elif b.reason == "opaque dir":
        notes.append(f"hidden by opaque dir {b.at}, {origin}")
    else:
        notes.append(f"hidden: {b.at} is not a dir there, {origin}")
    if b.status != "present" and b.kind != "file":
        notes.append(f"was a {what}")
    if b.via:
        notes.append("via " + ", ".join(b.via))
    return "; ".join(notes)


@click.command()
@click.option("--no-trunc", is_flag=True, help="Don't truncate output.")
@click.option("--format", "fmt", type=_FORMATS, default="table")
@click.argument("target")
@click.argument("paths", nargs=-1, required=True)
@click.pass_context
def blame(ctx: click.Context, no_trunc: bool, fmt: str, target: str, paths: tuple[str, ...]) -> None:
    """Show which layer of an image or container gives each PATH its version: the layer,
    the step that made it, the lower versions it shadows, or who deleted or hid it."""
    from minirun.image import provenance

    store = store_from(ctx, "blame")
    stack = open_stack(store, target)
    found: list[Blame] = []
    failed = 0
    for path in paths:
        try:
            found.append(provenance.blame(stack, path))
        except provenance.NoSuchPath as e:  # Docker's rule for several names: report, go on, exit 1
            click.echo(f"Error: {e} in {target}", err=True)
            failed += 1
    if fmt == "json":
        json_lines([_blame_json(b, no_trunc) for b in found])
    elif found:
        table(["PATH", "LAYER", "LAYER ID", "CREATED BY", "SIZE", "SHARED BY", "SHADOWS", "NOTE"],
              [[b.path, b.layer.label, _layer_id(b.layer.diff_id, no_trunc),
                _trunc(b.layer.created_by, no_trunc), human_size(b.size),
                _shared(b.layer.shared_by),
                _labels(b.shadows), _note(b)] for b in found])
    if failed:
        ctx.exit(1)


def _efficiency(report: StackReport) -> str:
    pct = report.efficiency * 100
    text = f"{pct:.2f}%"
    if report.wasted_bytes and text == "100.00%":
        text = f"{pct:.4f}%"
    return text


@click.command()
@click.option("--no-trunc", is_flag=True, help="Don't truncate output.")
@click.option("--format", "fmt", type=_FORMATS, default="table")
@click.argument("target")
@click.pass_context
def layers(ctx: click.Context, no_trunc: bool, fmt: str, target: str) -> None:
    """Show the layer stack of an image or container, bottom first: what each layer adds,
    changes and deletes, and the space wasted by files a higher layer overwrites or deletes."""
    from minirun.image import provenance

    store = store_from(ctx, "layers")
    report = provenance.layer_stats(open_stack(store, target))
    if fmt == "json":
        json_doc({
            "Layers": [{
                **(_name_json(s.layer, no_trunc) or {}),
                "Size": s.size, "Entries": s.entries, "Added": s.added, "Changed": s.changed,
                "Deleted": s.deleted, "Whiteouts": s.whiteouts, "OpaqueDirs": s.opaque_dirs,
                "Hidden": s.hidden, "WastedBytes": s.wasted,
            } for s in report.layers],
            "TotalSize": report.total_size,
            "WastedBytes": report.wasted_bytes,
            "WastedFiles": len(report.waste),
            "Efficiency": round(report.efficiency, 6),
            "Wasted": [{"Path": w.path, "Layer": int(w.layer) if w.layer.isdigit() else w.layer,
                        "Size": w.size, "By": int(w.by) if w.by.isdigit() else w.by}
                       for w in report.waste],
        })
        return
    table(["LAYER", "LAYER ID", "SIZE", "ADDED", "CHANGED", "DELETED", "SHARED BY", "CREATED BY"],
          [[s.layer.label, _layer_id(s.layer.diff_id, no_trunc), human_size(s.size), str(s.added),
            str(s.changed), str(s.deleted), _shared(s.layer.shared_by),
            _trunc(s.layer.created_by, no_trunc)] for s in report.layers])
    n = len(report.waste)
    click.echo(f"\nTotal size: {human_size(report.total_size)}   "
               f"Wasted: {human_size(report.wasted_bytes)} in {n} file{'s' if n != 1 else ''}   "
               f"Efficiency: {_efficiency(report)}")
