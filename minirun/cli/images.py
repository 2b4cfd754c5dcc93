"""Image verbs: load, save, images, rmi, tag, history."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path
from typing import Any

import click

from minirun.cli.main import store_from
from minirun.cli.output import (
    FORMAT_HELP,
    each,
    json_lines,
    label_match,
    listing,
    table,
)
from minirun.errors import UsageError
from minirun.filters import parse_filters
from minirun.humanize import ago, human_size
from minirun.image import reference as refs
from minirun.image.digest import short_id


@click.command()
@click.option("-i", "--input", "input_", type=click.Path(dir_okay=True, path_type=Path),
              help="Read from a tar archive or OCI layout directory instead of STDIN.")
@click.option("-q", "--quiet", is_flag=True, help="Suppress the per-layer lines.")
@click.pass_context
def load(ctx: click.Context, input_: Path | None, quiet: bool) -> None:
    """Load images from a docker-archive or an OCI image layout (dir or tar)."""
    from minirun.image import archive

    store = store_from(ctx, "load")
    if input_ is None and sys.stdin.isatty():
        raise UsageError("requested load from stdin, but stdin is empty (use -i FILE)")

    def report(line: str) -> None:
        if not quiet or line.startswith("Loaded image"):
            click.echo(line)

    src = input_ if input_ is not None else sys.stdin.buffer
    archive.load(store, src, report)


@click.command()
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write to a file instead of STDOUT.")
@click.argument("image", nargs=-1, required=True)
@click.pass_context
def save(ctx: click.Context, output: Path | None, image: tuple[str, ...]) -> None:
    """Save images to a tar archive (docker-archive and OCI layout in one)."""
    from minirun.image import archive

    store = store_from(ctx, "save")
    if output is not None:
        archive.save_to_file(store, list(image), output)
        return
    if sys.stdout.isatty():
        raise UsageError("cowardly refusing to save to a terminal; use -o FILE or redirect")
    archive.save(store, list(image), sys.stdout.buffer)


def _repo_tag(name: str) -> tuple[str, str]:
    ref = refs.parse(name)
    return ref.familiar_name, ref.tag or "<none>"


# Docker's images columns (cli/command/formatter/image.go): a template's header row
_IMAGE_HEADERS = {
    "ID": "IMAGE ID", "Repository": "REPOSITORY", "Tag": "TAG", "Digest": "DIGEST",
    "CreatedSince": "CREATED", "CreatedAt": "CREATED AT", "Size": "SIZE", "Containers": "CONTAINERS",
    "SharedSize": "SHARED SIZE", "UniqueSize": "UNIQUE SIZE", "VirtualSize": "VIRTUAL SIZE",
}
_TRUE, _FALSE = ("1", "t", "T", "true", "TRUE", "True"), ("0", "f", "F", "false", "FALSE", "False")


@click.command()
@click.option("-a", "--all", "all_", is_flag=True,
              help="Show all images (by default the intermediate images build keeps are hidden).")
@click.option("-q", "--quiet", is_flag=True, help="Only show image IDs.")
@click.option("--no-trunc", is_flag=True, help="Don't truncate output.")
@click.option("-f", "--filter", "filters", multiple=True, metavar="KEY=VALUE",
              help="Filter: dangling=true|false, reference=PATTERN, label=KEY[=VALUE] (repeatable).")
@click.option("--format", "fmt", default="table", metavar="table|json|TEMPLATE", help=FORMAT_HELP)
@click.argument("repository", required=False)
@click.pass_context
def images(ctx: click.Context, all_: bool, quiet: bool, no_trunc: bool, filters: tuple[str, ...],
           fmt: str, repository: str | None) -> None:
    """List images."""
    store = store_from(ctx, "images")
    wanted = parse_filters(filters, ("dangling", "reference", "label"))
    dangling = None
    for value in wanted.get("dangling", []):
        if value not in _TRUE + _FALSE or (dangling is not None and dangling != (value in _TRUE)):
            raise UsageError(f"invalid filter 'dangling={value}' (true or false)")
        dangling = value in _TRUE
    now = time.time()
    rows: list[dict[str, str]] = []
    hidden: set[str] = set()
    if not all_ and (store.root / "buildcache").is_dir():
        from minirun.image import buildcache

        hidden = set(buildcache.stage_images(store))  # Docker: intermediate images, -a only
    for rec in store.images():
        if dangling is not None and bool(rec.repo_tags) == dangling:
            continue
        if rec.id in hidden and not rec.repo_tags:
            continue
        if "label" in wanted and not label_match(_labels(store, rec), wanted["label"]):
            continue
        created = _created_ts(rec.created)
        names = [_repo_tag(t) for t in rec.repo_tags] or [("<none>", "<none>")]
        for repo, tag in names:
            if repository and repo != repository and repo != refs.parse(repository).familiar_name:
                continue
            if "reference" in wanted and not (rec.repo_tags and _reference_match(wanted["reference"], repo, tag)):
                continue
            rows.append({
                "Repository": repo, "Tag": tag,
                "ID": rec.id if no_trunc else short_id(rec.id),
                "CreatedSince": ago(created, now) if created else "N/A",
                "CreatedAt": _go_time(created) if created else rec.created,
                "Size": human_size(rec.size),
                "Digest": rec.manifest_digest,
                "Containers": "N/A", "SharedSize": "N/A", "UniqueSize": "N/A",
                "VirtualSize": human_size(rec.size),
            })
    if quiet:
        for r in dict.fromkeys(r["ID"] for r in rows):
            click.echo(r)
        return
    listing(fmt, rows, _IMAGE_HEADERS, ["Repository", "Tag", "ID", "CreatedSince", "Size"], "image")


def _labels(store: Any, rec: Any) -> dict[str, str]:
    labels = store.manifest_and_config(rec)[1].config.get("Labels") or {}
    return {str(k): str(v) for k, v in labels.items()}


def _reference_match(patterns: list[str], repo: str, tag: str) -> bool:
    """Docker's reference= filter: the pattern (Go's path.Match: ``*`` and ``?`` stop at
    ``/``) matches the familiar ``name:tag`` or the name alone."""
    try:
        return any(_path_match(p, f"{repo}:{tag}") or _path_match(p, repo) for p in patterns)
    except re.error as e:
        raise UsageError(f"invalid filter 'reference': bad pattern: {e}") from None


def _path_match(pattern: str, name: str) -> bool:
    """Go's path.Match of the whole ``name``."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        end = pattern.find("]", i + 2) if c == "[" else -1
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif end > 0:  # [abc] [a-z] [^a-z]
            body = pattern[i + 1:end]
            neg = body.startswith("^")
            body = body[neg:].replace("\\", "\\\\").replace("[", "\\[")
            out.append(f"[{'^' if neg else ''}{body}]")
            i = end
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(c))
        i += 1
    return re.fullmatch("".join(out), name) is not None


def _go_time(ts: float) -> str:
    """Go's time.Time.String() in local time, as Docker prints CreatedAt."""
    return time.strftime("%Y-%m-%d %H:%M:%S %z %Z", time.localtime(ts))


_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d)(?:\.(\d+))?([Zz]|[+-]\d\d:\d\d)?")


def _created_ts(text: str) -> float:
    """RFC 3339 as Go writes it (nanoseconds, ``Z`` or an offset) to a Unix time; 0 if unknown."""
    import datetime as dt

    m = _RFC3339.fullmatch(text.strip())
    if not m:
        return 0.0
    head, frac, zone = m.groups()
    zone = "+00:00" if zone in (None, "Z", "z") else zone
    try:
        # Python takes at most microseconds
        return dt.datetime.fromisoformat(f"{head.replace('t', 'T').replace(' ', 'T')}"
                                         f"{'.' + frac[:6] if frac else ''}{zone}").timestamp()
    except ValueError:
        return 0.0


@click.command()
@click.option("-f", "--force", is_flag=True, help="Force removal of the image.")
@click.argument("image", nargs=-1, required=True)
@click.pass_context
def rmi(ctx: click.Context, force: bool, image: tuple[str, ...]) -> None:
    """Remove one or more images. A layer is deleted only when no image uses it."""
    store = store_from(ctx, "rmi")

    def remove(name: str) -> None:
        for r in store.remove_image(name, force=force):
            if r.listed:
                click.echo(f"{r.action}: {r.what}")

    each(ctx, image, remove, echo=False)


@click.command()
@click.argument("source")
@click.argument("target")
@click.pass_context
def tag(ctx: click.Context, source: str, target: str) -> None:
    """Create a tag TARGET that refers to SOURCE."""
    store_from(ctx, "tag").tag(source, refs.parse(target))


@click.command()
@click.option("--no-trunc", is_flag=True, help="Don't truncate output.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.argument("image")
@click.pass_context
def history(ctx: click.Context, no_trunc: bool, fmt: str, image: str) -> None:
    """Show the layers of an image, newest first, and how many images share each."""
    from minirun.image.history import image_history

    store = store_from(ctx, "history")
    now = time.time()
    rows: list[dict[str, Any]] = []
    for h in image_history(store, store.resolve(image)):
        created = _created_ts(h.created)
        by = h.created_by if no_trunc or len(h.created_by) <= 45 else h.created_by[:44] + "…"
        rows.append({
            "Layer": (h.diff_id if no_trunc else short_id(h.diff_id)) if h.diff_id else "<missing>",
            "CreatedSince": ago(created, now) if created else "N/A",
            "CreatedAt": h.created,
            "CreatedBy": by,
            "Size": human_size(h.size),
            "SharedBy": h.shared_by,
            "Comment": h.comment,
        })
    if fmt == "json":
        json_lines(rows)
    else:
        table(["LAYER", "CREATED", "CREATED BY", "SIZE", "SHARED BY", "COMMENT"],
              [[str(r["Layer"]), str(r["CreatedSince"]), str(r["CreatedBy"]), str(r["Size"]),
                f"{r['SharedBy']} image{'s' if r['SharedBy'] != 1 else ''}" if r["SharedBy"] else "",
                str(r["Comment"])] for r in rows])
