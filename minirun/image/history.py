"""An image's history lined up with its layers: which step made which layer, and how
many images in the store share that layer (the point of the image/container split)."""

from __future__ import annotations

from dataclasses import dataclass

from minirun.image.store import ImageRecord, Store


@dataclass(frozen=True)
class HistoryEntry:
    diff_id: str  # "" for steps that made no layer (ENV, CMD...)
    created: str
    created_by: str
    size: int
    shared_by: int  # images that have this layer; 0 for steps without one
    comment: str


def image_history(store: Store, rec: ImageRecord) -> list[HistoryEntry]:
    """Newest first, as ``docker history``. Steps marked ``empty_layer`` own no layer; the
    others take the image's layers in order. Missing history gets one entry per layer."""
    _, config = store.manifest_and_config(rec)
    users = store.layer_users()
    steps = config.history or [{} for _ in rec.layers]
    out: list[HistoryEntry] = []
    layers = iter(rec.layers)
    for step in steps:
        layer = None if step.get("empty_layer") else next(layers, None)
        out.append(HistoryEntry(
            diff_id=layer.diff_id if layer else "",
            created=str(step.get("created", "")),
            created_by=str(step.get("created_by", "")),
            size=layer.size if layer else 0,
            shared_by=users.get(layer.diff_id, 0) if layer else 0,
            comment=str(step.get("comment", "")),
        ))
    for layer in layers:  # a history shorter than the layer list: still show every layer
        out.append(HistoryEntry(layer.diff_id, "", "", layer.size, users.get(layer.diff_id, 0), ""))
    out.reverse()
    return out


def image_inspect(store: Store, rec: ImageRecord) -> dict[str, object]:
    """``inspect IMAGE``: Docker's field names, plus the layer dirs overlayfs will stack."""
    _, config = store.manifest_and_config(rec)
    raw = config.raw
    users = store.layer_users()
    return {
        "Id": rec.id,
        "RepoTags": [_familiar(t) for t in rec.repo_tags],
        "RepoDigests": [_familiar(d) for d in rec.repo_digests],
        "Created": rec.created,
        "Author": raw.get("author", ""),
        "Config": config.config,
        "Architecture": raw.get("architecture", ""),
        "Variant": raw.get("variant", ""),
        "Os": raw.get("os", ""),
        "Size": rec.size,
        "Manifest": {"Digest": rec.manifest_digest, "MediaType": rec.manifest_media_type},
        "GraphDriver": {
            "Name": "overlay",
            # overlayfs order: the topmost layer first
            "Data": {"LowerDir": ":".join(str(store.layer_dir(layer.diff_id)) for layer in reversed(rec.layers))},
        },
        "RootFS": {
            "Type": "layers",
            "Layers": [layer.diff_id for layer in rec.layers],
        },
        "Layers": [
            {"DiffID": layer.diff_id, "Digest": layer.digest, "MediaType": layer.media_type,
             "Size": layer.size, "Dir": str(store.layer_dir(layer.diff_id)),
             "SharedBy": users.get(layer.diff_id, 0)}
            for layer in rec.layers
        ],
    }


def _familiar(name: str) -> str:
    from minirun.image import reference as refs

    ref = refs.parse(name)
    return ref.familiar()
