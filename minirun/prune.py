"""Reclaiming what nothing uses: ``container prune``, ``image prune``, ``network prune``
and ``system prune`` (all three), with the bytes each freed.

Each part is the store's own removal path (``lifecycle.remove``, ``Store.prune_images``,
``remove_networks``), so a prune leaves the same state as removing the same things one by
one — and what a killed ``pull``/``load`` left (blobs and layers no image names) goes with
``image prune``, which waits for running pulls and loads to end first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from minirun.df import tree_size
from minirun.errors import MinirunError
from minirun.image.store import Removal, Store


@dataclass
class PruneReport:
    """What one prune removed, in the order Docker prints it, and the bytes freed."""

    containers: list[str] = field(default_factory=list)  # full IDs
    networks: list[str] = field(default_factory=list)  # names
    volumes: list[str] = field(default_factory=list)  # names
    images: list[Removal] = field(default_factory=list)  # untagged names, deleted images/layers/blobs
    failures: list[str] = field(default_factory=list)  # one line each: what could not go, and why
    reclaimed: int = 0


def prune_containers(store: Store, report: PruneReport | None = None) -> PruneReport:
    """Remove every container that is not running (created or exited)."""
    from minirun.container import lifecycle
    from minirun.container.records import Containers

    out = report if report is not None else PruneReport()
    if not store.root.is_dir():
        return out
    containers = Containers(store)
    for rec in containers.all():
        rec = containers.refresh(rec)
        if rec.alive():
            continue
        size = tree_size(containers.dir(rec.id) / "upper")
        try:
            lifecycle.remove(store, rec)
        except MinirunError as e:
            out.failures.append(f"container {rec.name}: {e}")
            continue
        out.containers.append(rec.id)
        out.reclaimed += size
    return out


def prune_networks(store: Store, report: PruneReport | None = None) -> PruneReport:
    """Remove every network no container uses (with its bridge and firewall rules)."""
    from minirun.network.attach import remove_networks

    out = report if report is not None else PruneReport()
    if store.root.is_dir():
        out.networks.extend(remove_networks(store, [], prune=True))
    return out


def prune_images(store: Store, all_unused: bool = False, report: PruneReport | None = None) -> PruneReport:
    """Remove dangling images (every unused one with ``all_unused``) and every blob and
    layer no image refers to."""
    out = report if report is not None else PruneReport()
    if not store.root.is_dir():
        return out
    removed = store.prune_images(all_unused)
    out.images.extend(removed)
    out.reclaimed += sum(r.size for r in removed)
    return out


def prune_volumes(store: Store, all_unused: bool = False, labels: Sequence[str] = (),
                  not_labels: Sequence[str] = (), report: PruneReport | None = None) -> PruneReport:
    """Remove the volumes no container (running or not) uses: only anonymous ones unless
    ``all_unused`` (Docker ≥ 23), and only those the label filters match."""
    from minirun.container.volumes import prune

    out = report if report is not None else PruneReport()
    removed, freed = prune(store, all_unused, labels, not_labels)
    out.volumes.extend(removed)
    out.reclaimed += freed
    return out


def prune_system(store: Store, all_unused: bool = False, volumes: bool = False) -> PruneReport:
    """``system prune``: stopped containers, then unused networks, then (with ``volumes``)
    unused anonymous volumes, then images — Docker's order."""
    out = PruneReport()
    prune_containers(store, out)
    prune_networks(store, out)
    if volumes:
        prune_volumes(store, report=out)
    prune_images(store, all_unused, out)
    return out
