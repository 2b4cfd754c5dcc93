"""The build cache of ``minirun build``: ``<store>/buildcache/``.

::

    buildcache/entries/<key hex>.json   {"config": <image config JSON text>, "layers": [...],
                                         "created": <time>}
    buildcache/stages.json              image IDs of the non-target stages kept for the cache

A key is the sha256 of (the state the step starts from — an image ID, i.e. the digest of
a config that lists every diff_id — , the instruction after substitution, the ARG values
in effect, and for COPY/ADD the path, mode, owner and content of everything copied).
The value is the state after the step: its image config (byte for byte, so the next
step's key is the same on the next build) and its layer descriptors.

Entries hold no layers themselves: the layers belong to images (the built image, or the
kept images of the non-target stages), so ``system check`` sees nothing unreferenced, and
``rmi``/``prune`` may take them. An entry whose layers or blobs are gone is a miss (and
is dropped). :func:`usage` and :func:`prune` are for ``system df`` and ``system prune``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from minirun.errors import ImageInUse, ImageNotFound

if TYPE_CHECKING:
    from minirun.image.store import Store


@dataclass(frozen=True)
class Entry:
    """A cached step result: the config bytes of the state and its layers (OCI descriptors
    as JSON: mediaType, digest, size)."""

    config: bytes
    layers: list[dict[str, Any]]

    @property
    def image_id(self) -> str:
        return "sha256:" + hashlib.sha256(self.config).hexdigest()


def _dir(store: Store) -> Path:
    return store.root / "buildcache"


def _entries(store: Store) -> Path:
    return _dir(store) / "entries"


def key(*parts: Any) -> str:
    """The cache key of a step (hex sha256 of its canonical JSON)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def lookup(store: Store, k: str) -> Entry | None:
    """The entry of key ``k`` if it is there and everything it names is still stored."""
    path = _entries(store) / f"{k}.json"
    try:
        data = json.loads(path.read_bytes())
        entry = Entry(data["config"].encode(), list(data["layers"]))
        cfg = json.loads(entry.config)
        diff_ids = cfg["rootfs"]["diff_ids"]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        with contextlib.suppress(OSError):
            path.unlink()  # unreadable: a miss, and gone
        return None
    if len(diff_ids) != len(entry.layers) or not all(
            store.has_layer(d) and store.has_blob(str(layer.get("digest")))
            for d, layer in zip(diff_ids, entry.layers, strict=True)):
        with contextlib.suppress(OSError):
            path.unlink()  # its layers went with an rmi or prune: a miss
        return None
    return entry


def record(store: Store, k: str, entry: Entry) -> None:
    from minirun.image.store import atomic_write

    d = _entries(store)
    d.mkdir(parents=True, exist_ok=True)
    data = {"config": entry.config.decode(), "layers": entry.layers, "created": time.time()}
    atomic_write(d / f"{k}.json", json.dumps(data).encode(), store.tmp)


def _stages_path(store: Store) -> Path:
    return _dir(store) / "stages.json"


def stage_images(store: Store) -> list[str]:
    """The kept images of non-target stages (still stored)."""
    try:
        ids = json.loads(_stages_path(store).read_bytes())
    except (OSError, ValueError):
        return []
    return [i for i in ids if isinstance(i, str) and store.has_image(i)]


def keep_stage_image(store: Store, image_id: str) -> None:
    from minirun.image.store import atomic_write

    _dir(store).mkdir(parents=True, exist_ok=True)
    with store.lock():
        ids = stage_images(store)
        if image_id not in ids:
            ids.append(image_id)
        atomic_write(_stages_path(store), json.dumps(ids).encode(), store.tmp)


def usage(store: Store) -> tuple[int, int, int]:
    """(entries, bytes, reclaimable bytes) for ``system df``'s Build Cache row: the entries
    still valid, the bytes of the layers they name, and of those only the kept stage
    images hold (what :func:`prune` would free)."""
    if not _entries(store).is_dir():
        return 0, 0, 0
    sizes: dict[str, int] = {}
    count = 0
    for p in _entries(store).glob("*.json"):
        entry = lookup(store, p.stem)
        if entry is None:
            continue
        count += 1
        for diff_id in json.loads(entry.config)["rootfs"]["diff_ids"]:
            with contextlib.suppress(Exception):
                sizes[diff_id] = int(store.layer_info(diff_id)["size"])
    total = sum(sizes.values())
    stage_ids = set(stage_images(store))
    held_elsewhere: set[str] = set()
    held_by_stages: set[str] = set()
    for rec in store.images():
        target = held_by_stages if rec.id in stage_ids else held_elsewhere
        target.update(layer.diff_id for layer in rec.layers)
    reclaimable = sum(sizes.get(d, 0) for d in held_by_stages - held_elsewhere)
    return count, total, reclaimable


def prune(store: Store) -> int:
    """Drop the whole build cache: every entry, and the kept stage images no container uses
    and no tag names (their layers go unless another image has them). The bytes freed."""
    freed = 0
    for image_id in stage_images(store):
        rec = None
        with contextlib.suppress(ImageNotFound):
            rec = store.resolve(image_id)
        if rec is None or rec.repo_tags:
            continue
        with contextlib.suppress(ImageNotFound, ImageInUse):
            freed += sum(r.size for r in store.remove_image(image_id))
    d = _entries(store)
    if d.is_dir():
        for p in d.glob("*.json"):
            with contextlib.suppress(FileNotFoundError):
                freed += p.stat().st_size
                p.unlink()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(_stages_path(store))
    return freed
