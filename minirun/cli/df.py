"""``system df``'s output, in Docker's shapes: the summary table, ``-v``'s four
sections, or ``--format json``/a template (one object per type, or per item with -v)."""

from __future__ import annotations

import time
from typing import Any

import click

from minirun.cli.output import listing, table
from minirun.humanize import ago, human_size
from minirun.image.store import Store

_SUMMARY_HEADERS = {"Type": "TYPE", "TotalCount": "TOTAL", "Active": "ACTIVE", "Size": "SIZE",
                    "Reclaimable": "RECLAIMABLE"}


def _repo_tag(name: str) -> tuple[str, str]:
    from minirun.image import reference as refs

    ref = refs.parse(name)
    return ref.familiar_name, ref.tag or "<none>"


def show(store: Store, verbose: bool, fmt: str) -> None:
    from minirun import df

    du = df.usage(store)
    if not verbose:
        rows = [{"Type": s.type, "TotalCount": str(s.total), "Active": str(s.active),
                 "Size": human_size(s.size), "Reclaimable": _reclaimable(s)} for s in du.summary]
        listing(fmt, rows, _SUMMARY_HEADERS, list(_SUMMARY_HEADERS), "disk usage")
        return
    now = time.time()
    images = []
    for u in du.images:
        names = [_repo_tag(t) for t in u.image.repo_tags] or [("<none>", "<none>")]
        for repo, tag in names:
            images.append({"Repository": repo, "Tag": tag, "ID": u.image.id.split(":")[-1][:12],
                           "CreatedSince": _created(u.image.created, now), "Size": human_size(u.size),
                           "SharedSize": human_size(u.shared), "UniqueSize": human_size(u.unique),
                           "Containers": str(u.containers)})
    containers = [{"ID": c.id[:12], "Image": c.image, "Command": _command(c.args),
                   "LocalVolumes": str(c.volumes), "Size": human_size(c.size),
                   "RunningFor": ago(c.created, now), "Status": c.status, "Names": c.name}
                  for c in du.containers]
    volumes = [{"Name": v.name, "Links": str(v.links), "Size": human_size(v.size)} for v in du.volumes]
    if fmt not in ("", "table"):
        import json

        doc = {"Images": images, "Containers": containers, "Volumes": volumes,
               "BuildCache": du.build_cache}
        if fmt == "json":
            click.echo(json.dumps(doc))
        else:
            from minirun.cli.template import format_rows

            click.echo(format_rows(fmt, [doc], {}, "disk usage"), nl=False)
        return
    click.echo("Images space usage:\n")
    table(["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE", "SHARED SIZE", "UNIQUE SIZE", "CONTAINERS"],
          [list(r.values()) for r in images])
    click.echo("\nContainers space usage:\n")
    table(["CONTAINER ID", "IMAGE", "COMMAND", "LOCAL VOLUMES", "SIZE", "CREATED", "STATUS", "NAMES"],
          [list(r.values()) for r in containers])
    click.echo("\nLocal Volumes space usage:\n")
    table(["VOLUME NAME", "LINKS", "SIZE"], [list(r.values()) for r in volumes])
    cache = next(s for s in du.summary if s.type == "Build Cache")
    click.echo(f"\nBuild cache usage: {human_size(cache.size)}\n")
    table(["CACHE ID", "CACHE TYPE", "SIZE", "CREATED", "LAST USED", "USAGE", "SHARED"],
          [[str(e.get(k, "")) for k in ("ID", "CacheType", "Size", "CreatedSince", "LastUsedSince",
                                          "UsageCount", "Shared")] for e in du.build_cache])


def _reclaimable(s: Any) -> str:
    if s.type == "Build Cache" or not s.size:
        return human_size(s.reclaimable)
    return f"{human_size(s.reclaimable)} ({s.reclaimable * 100 // s.size}%)"


def _command(args: list[str]) -> str:
    text = " ".join(args)
    return f'"{text[:19] + "…" if len(text) > 20 else text}"'


def _created(created: str, now: float) -> str:
    import datetime as dt

    try:
        ts = dt.datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return "N/A"
    return ago(ts, now)
