"""The build cache of ``minirun build``: ``<store>/buildcache/``.

::

    buildcache/entries/<key hex>.json   {"config": <image config JSON text>, "layers": [...],
                                         "created": <time>, "last_used": <time>,
                                         "uses": <builds that took it, its own included>}
    buildcache/stages.json              image IDs of the non-target stages kept for the cache

A key is the sha256 of (the state the step starts from — an image ID, i.e. the digest of
a config that lists every diff_id — , the instruction after substitution, the ARG values
in effect, and for COPY/ADD the path, mode, owner and content of everything copied).
The value is the state after the step: its image config (byte for byte, so the next
step's key is the same on the next build) and its layer descriptors.

Entries hold no layers themselves: the layers belong to images (the built image, or the
kept images of the non-target stages), so ``system check`` sees nothing unreferenced, and
``rmi``/``prune`` may take them. An entry whose layers or blobs are gone is a miss (and
is dropped). :func:`usage`/:func:`entries` and :func:`prune` are for ``system df`` and
``system prune``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Iterator
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


def lookup(store: Store, k: str, use: bool = False) -> Entry | None:
    """The entry of key ``k`` if it is there and everything it names is still stored;
    ``use``: a build takes it (its last-used time and usage count go up)."""
    found = _load(store, k)
    if found is None:
        return None
    entry, data = found
    if use:
        from minirun.image.store import atomic_write

        data.update(last_used=time.time(), uses=_uses(data) + 1)
        with contextlib.suppress(OSError):
            atomic_write(_entries(store) / f"{k}.json", json.dumps(data).encode(), store.tmp)
    return entry


def _uses(data: dict[str, Any]) -> int:
    n = data.get("uses", 1)
    return n if isinstance(n, int) and n > 0 else 1


def _load(store: Store, k: str) -> tuple[Entry, dict[str, Any]] | None:
    """The entry of key ``k`` and its raw record, if everything it names is still stored
    (else None, and an entry that can no longer hit is dropped)."""
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
    return entry, data


def record(store: Store, k: str, entry: Entry) -> None:
    from minirun.image.store import atomic_write

    d = _entries(store)
    d.mkdir(parents=True, exist_ok=True)
    now = time.time()
    data = {"config": entry.config.decode(), "layers": entry.layers, "created": now,
            "last_used": now, "uses": 1}
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
    sizes: dict[str, int] = {}
    count = 0
    for _, entry, _data in _valid(store):
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


def _valid(store: Store) -> Iterator[tuple[str, Entry, dict[str, Any]]]:
    """(key, entry, raw record) of every entry that can still hit."""
    d = _entries(store)
    if not d.is_dir():
        return
    for p in d.glob("*.json"):
        found = _load(store, p.stem)
        if found is not None:
            yield p.stem, found[0], found[1]


def entries(store: Store) -> list[dict[str, Any]]:
    """``system df -v``'s Build Cache rows (Docker's keys; the same entries :func:`usage`
    counts), the most recently used first. Size is the layer the step itself added (0 for
    a step that added none); Shared: that layer is also in a tagged image. No build runs
    while ``system df`` looks, so none is InUse."""
    from minirun.humanize import ago, human_size

    now = time.time()
    tagged: set[str] = set()
    for rec in store.images():
        if rec.repo_tags:
            tagged.update(layer.diff_id for layer in rec.layers)
    rows: list[tuple[float, dict[str, Any]]] = []
    for k, entry, data in _valid(store):
        cfg = json.loads(entry.config)
        history = cfg.get("history") or [{}]
        last = history[-1] if isinstance(history[-1], dict) else {}
        diff_ids = cfg["rootfs"]["diff_ids"]
        own = diff_ids[-1] if diff_ids and not last.get("empty_layer") else None
        size = 0
        if own is not None:
            with contextlib.suppress(Exception):
                size = int(store.layer_info(own)["size"])
        created = _time(data.get("created"), now)
        last_used = _time(data.get("last_used"), created)
        rows.append((last_used, {
            "ID": k[:12], "CacheType": "regular",
            "Description": str(last.get("created_by", "")).removesuffix(" # buildkit"),
            "Size": human_size(size), "CreatedSince": ago(created, now),
            "LastUsedSince": ago(last_used, now), "UsageCount": str(_uses(data)),
            "Shared": "true" if own in tagged else "false", "InUse": False}))
    rows.sort(key=lambda r: -r[0])
    return [r for _, r in rows]


def _time(value: Any, default: float) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else default


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
