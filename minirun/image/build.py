"""Build OCI images from files at hand, with no network: the offline images in images/
and the test fixtures are made with this.

A layer is described as a list of :class:`Entry` (files, dirs, links, whiteouts) and
written as a reproducible tar (fixed mtimes, sorted, numeric owners), so building the
same recipe twice gives the same digests — which is what lets two images share a layer.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from minirun.image import oci
from minirun.image.whiteout import OPAQUE_MARKER, WHITEOUT_PREFIX

EPOCH = 1767225600  # 2026-01-01T00:00:00Z: fixed, so layers are reproducible


@dataclass(frozen=True)
class Entry:
    """One member of a layer. ``kind``: file, dir, symlink, hardlink, whiteout, opaque."""

    path: str
    kind: str = "file"
    data: bytes = b""
    mode: int = 0o644
    target: str = ""  # symlink / hardlink target
    uid: int = 0
    gid: int = 0


def file(path: str, data: bytes | str, mode: int = 0o644) -> Entry:
    return Entry(path, "file", data.encode() if isinstance(data, str) else data, mode)


def directory(path: str, mode: int = 0o755) -> Entry:
    return Entry(path, "dir", mode=mode)


def symlink(path: str, target: str) -> Entry:
    return Entry(path, "symlink", mode=0o777, target=target)


def whiteout(path: str) -> Entry:
    """Deletes ``path`` of the layers below (OCI ``.wh.NAME``)."""
    return Entry(path, "whiteout")


def opaque(path: str) -> Entry:
    """Hides everything the layers below have in directory ``path`` (``.wh..wh..opq``)."""
    return Entry(path, "opaque")


def _tarinfo(e: Entry) -> tuple[tarfile.TarInfo, bytes | None]:
    path = e.path.strip("/")
    if e.kind == "whiteout":
        d, base = os.path.split(path)
        ti = tarfile.TarInfo(os.path.join(d, WHITEOUT_PREFIX + base))
    elif e.kind == "opaque":
        ti = tarfile.TarInfo(os.path.join(path, OPAQUE_MARKER))
    else:
        ti = tarfile.TarInfo(path)
    ti.mtime, ti.uid, ti.gid, ti.mode = EPOCH, e.uid, e.gid, e.mode
    ti.uname = ti.gname = ""
    data: bytes | None = None
    if e.kind == "file":
        ti.type, ti.size, data = tarfile.REGTYPE, len(e.data), e.data
    elif e.kind == "dir":
        ti.type = tarfile.DIRTYPE
    elif e.kind == "symlink":
        ti.type, ti.linkname = tarfile.SYMTYPE, e.target
    elif e.kind == "hardlink":
        ti.type, ti.linkname = tarfile.LNKTYPE, e.target.strip("/")
    elif e.kind in ("whiteout", "opaque"):
        ti.type, ti.size, ti.mode, data = tarfile.REGTYPE, 0, 0o644, b""
    else:
        raise ValueError(f"unknown entry kind {e.kind!r}")
    return ti, data


def layer_tar(entries: Iterable[Entry]) -> bytes:
    """An uncompressed layer tar; parents are listed before their children."""
    entries = list(entries)
    seen: set[str] = set()
    for e in entries:
        key = e.path.strip("/") + ("/.wh" if e.kind in ("whiteout", "opaque") else "")
        if key in seen:  # podman and containers/storage refuse layers with duplicate paths
            raise ValueError(f"duplicate layer entry {e.path!r}")
        seen.add(key)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in sorted(entries, key=lambda e: (e.path.strip("/").split("/"), e.kind != "dir")):
            ti, data = _tarinfo(e)
            tar.addfile(ti, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


@dataclass
class Layer:
    tar: bytes  # uncompressed
    created_by: str
    blob: bytes = field(init=False)  # gzip, reproducible (mtime 0 in the header)

    def __post_init__(self) -> None:
        self.blob = gzip.compress(self.tar, compresslevel=6, mtime=0)

    @property
    def diff_id(self) -> str:
        return "sha256:" + hashlib.sha256(self.tar).hexdigest()

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.blob).hexdigest()


@dataclass
class BuiltImage:
    name: str
    manifest: bytes
    config: bytes
    blobs: dict[str, bytes]  # digest -> content, config and layers included

    @property
    def manifest_digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.manifest).hexdigest()


def image(name: str, layers: Sequence[Layer], config: dict[str, Any],
          platform: oci.Platform | None = None) -> BuiltImage:
    """An OCI image (manifest + config + gzip layers) from layers and a container config."""
    plat = platform or oci.host_platform()
    cfg: dict[str, Any] = {
        "created": _rfc3339(EPOCH),
        "architecture": plat.architecture,
        "os": plat.os,
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        "history": [{"created": _rfc3339(EPOCH), "created_by": layer.created_by} for layer in layers],
    }
    if plat.variant:
        cfg["variant"] = plat.variant
    config_bytes = json.dumps(cfg, sort_keys=True, separators=(",", ":")).encode()
    config_desc = oci.Descriptor(oci.OCI_CONFIG, "sha256:" + hashlib.sha256(config_bytes).hexdigest(),
                                 len(config_bytes))
    manifest = oci.Manifest(oci.OCI_MANIFEST, config_desc,
                            [oci.Descriptor(oci.OCI_LAYER_GZIP, layer.digest, len(layer.blob)) for layer in layers])
    blobs = {layer.digest: layer.blob for layer in layers}
    blobs[config_desc.digest] = config_bytes
    return BuiltImage(name, json.dumps(manifest.to_json(), separators=(",", ":")).encode(), config_bytes, blobs)


def write_oci_layout(out: Path, images: Sequence[BuiltImage]) -> None:
    """An OCI image layout directory (oci-layout, index.json, blobs/sha256/...)."""
    blob_dir = out / "blobs" / "sha256"
    blob_dir.mkdir(parents=True, exist_ok=True)
    (out / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    entries = []
    for img in images:
        for digest, data in {**img.blobs, img.manifest_digest: img.manifest}.items():
            path = blob_dir / digest.split(":", 1)[1]
            if not path.exists():
                path.write_bytes(data)
        entries.append({
            "mediaType": oci.OCI_MANIFEST, "digest": img.manifest_digest, "size": len(img.manifest),
            "annotations": {oci.ANNOTATION_REF_NAME: img.name},
        })
    (out / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": entries}, indent=1))


def _rfc3339(ts: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
