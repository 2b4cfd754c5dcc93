"""``system df``: the disk the store uses, by kind — images, containers, volumes, build
cache — with what is in use and what a prune would give back.

The point minirun makes is that image layers are stored once: an image's SIZE counts
every layer it has, but the Images total counts each layer dir once however many images
share it, and an image's SHARED SIZE is the part other images hold too. Reclaimable is
what the matching prune would really free: the layers no container's image uses, the
layers of stopped containers, the volumes no container mounts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from minirun.image.store import ImageRecord, Store


def tree_size(path: Path) -> int:
    """Bytes of the files under ``path``, as Docker's SizeRw: links not followed (a
    symlink counts its own size), a hard link counted once."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for top, dirs, files in os.walk(path):
        # os.walk lists a symlink to a dir among dirs (and does not enter it)
        for name in files + [d for d in dirs if os.path.islink(os.path.join(top, d))]:
            try:
                st = os.lstat(os.path.join(top, name))
            except OSError:
                continue
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


@dataclass
class ImageUsage:
    image: ImageRecord
    size: int  # every layer of it
    shared: int  # the part other images share
    containers: int  # how many containers use it

    @property
    def unique(self) -> int:
        return self.size - self.shared


@dataclass
class ContainerUsage:
    id: str
    name: str
    image: str
    args: list[str]
    created: float
    status: str
    running: bool
    size: int  # its container layer (upper dir)
    volumes: int  # local volumes it mounts


@dataclass
class VolumeUsage:
    name: str
    size: int
    links: int  # containers that mount it


@dataclass
class Summary:
    """One row of the default table."""

    type: str
    total: int
    active: int
    size: int
    reclaimable: int


@dataclass
class DiskUsage:
    images: list[ImageUsage] = field(default_factory=list)
    containers: list[ContainerUsage] = field(default_factory=list)
    volumes: list[VolumeUsage] = field(default_factory=list)
    build_cache: list[dict[str, Any]] = field(default_factory=list)  # buildcache's own entries
    summary: list[Summary] = field(default_factory=list)


def usage(store: Store) -> DiskUsage:
    """Measure everything (walks each container layer and volume; layers' sizes are
    recorded at unpack time)."""
    from minirun.container.records import Containers

    out = DiskUsage()
    images = store.images() if store.root.is_dir() else []
    containers = Containers(store)
    recs = [containers.refresh(r) for r in containers.all()] if store.root.is_dir() else []
    users = store.layer_users() if images else {}
    used_by: dict[str, int] = {}
    for rec in recs:
        used_by[rec.image_id] = used_by.get(rec.image_id, 0) + 1
    layer_size: dict[str, int] = {}
    active_layers: set[str] = set()
    for img in images:
        sizes = {layer.diff_id: layer.size for layer in img.layers}
        layer_size.update(sizes)
        if used_by.get(img.id):
            active_layers.update(sizes)
        out.images.append(ImageUsage(
            image=img, size=sum(sizes.values()),
            shared=sum(s for d, s in sizes.items() if users.get(d, 0) > 1),
            containers=used_by.get(img.id, 0)))
    total_layers = sum(layer_size.values())
    out.summary.append(Summary(
        "Images", len(images), sum(1 for i in out.images if i.containers), total_layers,
        sum(s for d, s in layer_size.items() if d not in active_layers)))

    vol_links = _volume_links(store)
    for rec in recs:
        size = tree_size(containers.dir(rec.id) / "upper")
        alive = rec.alive()
        out.containers.append(ContainerUsage(
            id=rec.id, name=rec.name, image=rec.image, args=rec.args, created=rec.created,
            status=rec.status_text(), running=alive, size=size,
            volumes=sum(1 for names in vol_links.values() if rec.id in names)))
    out.summary.append(Summary(
        "Containers", len(out.containers), sum(1 for c in out.containers if c.running),
        sum(c.size for c in out.containers), sum(c.size for c in out.containers if not c.running)))

    out.volumes = _volumes(store)
    out.summary.append(Summary(
        "Local Volumes", len(out.volumes), sum(1 for v in out.volumes if v.links),
        sum(v.size for v in out.volumes), sum(v.size for v in out.volumes if not v.links)))

    entries, size, reclaimable = _build_cache(store, out)
    out.summary.append(Summary("Build Cache", entries, _active_cache(out), size, reclaimable))
    return out


def _volumes(store: Store) -> list[VolumeUsage]:
    """Named and anonymous volumes, with how many containers mount each."""
    from minirun.container import volumes

    return [VolumeUsage(name=name, size=size, links=links) for name, size, links in volumes.usage(store)]


def _volume_links(store: Store) -> dict[str, list[str]]:
    """volume name -> the IDs of the containers that mount it."""
    from minirun.container import volumes

    return volumes.users(store)


def _build_cache(store: Store, out: DiskUsage) -> tuple[int, int, int]:
    from minirun.image import buildcache

    entries = getattr(buildcache, "entries", None)
    if entries is not None:
        out.build_cache = list(entries(store))
    count, size, reclaimable = buildcache.usage(store)
    return int(count), int(size), int(reclaimable)


def _active_cache(out: DiskUsage) -> int:
    return sum(1 for e in out.build_cache if e.get("InUse"))
