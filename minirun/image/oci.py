"""OCI and Docker image formats: media types, manifests, indexes, image configs.

Parsing is strict where a mistake would be dangerous (digests, layer lists) and
lenient where the ecosystem is (missing optional fields). Everything malformed
raises :class:`ManifestError` with a message that names the field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from minirun.errors import ManifestError
from minirun.image.digest import check_digest

# Media types (OCI image-spec media-types.md; Docker's manifest v2 schema 2).
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER_NONDIST_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_V1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_MANIFEST_V1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

INDEX_TYPES = (OCI_INDEX, DOCKER_MANIFEST_LIST)
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
LAYER_TYPES = (
    OCI_LAYER,
    OCI_LAYER_GZIP,
    OCI_LAYER_ZSTD,
    OCI_LAYER_NONDIST_GZIP,
    DOCKER_LAYER,
    DOCKER_LAYER_FOREIGN,
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
)

ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
ANNOTATION_DOCKER_NAME = "io.containerd.image.name"



@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    annotations: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, d: Any, where: str) -> Descriptor:
        if not isinstance(d, dict):
            raise ManifestError(f"{where}: descriptor is not an object")
        size = d.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ManifestError(f"{where}: descriptor size {size!r} is not a non-negative integer")
        media_type = d.get("mediaType", "")
        if not isinstance(media_type, str):
            raise ManifestError(f"{where}: mediaType is not a string")
        plat = d.get("platform")
        ann = d.get("annotations") or {}
        if not isinstance(ann, dict):
            raise ManifestError(f"{where}: annotations is not an object")
        return cls(
            media_type=media_type,
            digest=check_digest(d.get("digest"), where),
            size=size,
            platform=Platform.from_json(plat) if isinstance(plat, dict) else None,
            annotations={str(k): str(v) for k, v in ann.items()},
        )

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.platform:
            d["platform"] = self.platform.to_json()
        if self.annotations:
            d["annotations"] = dict(self.annotations)
        return d


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Platform:
        return cls(str(d.get("os", "")), str(d.get("architecture", "")), str(d.get("variant", "") or ""))

    def to_json(self) -> dict[str, str]:
        d = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            d["variant"] = self.variant
        return d

    @classmethod
    def parse(cls, text: str) -> Platform:
        parts = text.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise ManifestError(f"invalid platform {text!r} (want os/arch[/variant], e.g. linux/arm64)")
        return cls(parts[0], normalize_arch(parts[1]), parts[2] if len(parts) == 3 else "")

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


_ARCH_ALIASES = {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64", "armhf": "arm",
                 "armel": "arm", "i386": "386", "i686": "386"}


def normalize_arch(arch: str) -> str:
    return _ARCH_ALIASES.get(arch.lower(), arch.lower())


def host_platform() -> Platform:
    import platform as _platform  # only pulls and loads need it; keep it off run's path

    machine = _platform.machine()
    arch = normalize_arch(machine)
    variant = "v8" if arch == "arm64" else ("v7" if machine.startswith("armv7") else "")
    return Platform("linux", arch, variant)


def platform_matches(want: Platform, have: Platform) -> bool:
    """containerd's rule, simplified: os and arch must match; a variant is compared only
    when both sides name one (arm64 images often omit ``v8``)."""
    if want.os != have.os or want.architecture != have.architecture:
        return False
    return not (want.variant and have.variant and want.variant != have.variant)


def load_json(data: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ManifestError(f"{what} is not valid JSON: {e}") from None
    except (RecursionError, ValueError):  # nested too deep, or an int of > 4300 digits
        raise ManifestError(f"{what} is not valid JSON: beyond the parser's limits") from None
    if not isinstance(doc, dict):
        raise ManifestError(f"{what} is not a JSON object")
    return doc


def detect_media_type(doc: dict[str, Any]) -> str:
    """The manifest's own mediaType, or what its shape says when it omits it (OCI allows that)."""
    mt = doc.get("mediaType")
    if isinstance(mt, str) and mt:
        return mt
    if doc.get("schemaVersion") == 1:
        return DOCKER_MANIFEST_V1
    if "manifests" in doc:
        return OCI_INDEX
    if "layers" in doc and "config" in doc:
        return OCI_MANIFEST
    raise ManifestError("document is neither an image manifest nor an index")


@dataclass(frozen=True)
class Manifest:
    media_type: str
    config: Descriptor
    layers: list[Descriptor]

    @classmethod
    def parse(cls, data: bytes, what: str = "manifest") -> Manifest:
        doc = load_json(data, what)
        mt = detect_media_type(doc)
        if mt in (DOCKER_MANIFEST_V1, DOCKER_MANIFEST_V1_SIGNED):
            raise ManifestError(f"{what}: unsupported legacy manifest (Docker schema 1); "
                                "re-push the image with a current client")
        if mt in INDEX_TYPES:
            raise ManifestError(f"{what}: is an index, not an image manifest")
        if mt not in MANIFEST_TYPES:
            raise ManifestError(f"{what}: unsupported media type {mt!r}")
        if doc.get("schemaVersion") != 2:
            raise ManifestError(f"{what}: schemaVersion must be 2")
        layers = doc.get("layers")
        if not isinstance(layers, list):
            raise ManifestError(f"{what}: 'layers' is not a list")
        config = Descriptor.from_json(doc.get("config"), f"{what} config")
        descs = [Descriptor.from_json(layer, f"{what} layer {i}") for i, layer in enumerate(layers)]
        for i, d in enumerate(descs):
            if d.media_type and d.media_type not in LAYER_TYPES:
                raise ManifestError(f"{what} layer {i}: unsupported layer media type {d.media_type!r}")
        return cls(mt, config, descs)

    def to_json(self) -> dict[str, Any]:
        return {
            "schemaVersion": 2,
            "mediaType": self.media_type,
            "config": self.config.to_json(),
            "layers": [d.to_json() for d in self.layers],
        }


@dataclass(frozen=True)
class Index:
    media_type: str
    manifests: list[Descriptor]

    @classmethod
    def parse(cls, data: bytes, what: str = "index") -> Index:
        doc = load_json(data, what)
        mt = detect_media_type(doc)
        if mt not in INDEX_TYPES:
            raise ManifestError(f"{what}: not an image index (media type {mt!r})")
        ms = doc.get("manifests")
        if not isinstance(ms, list):
            raise ManifestError(f"{what}: 'manifests' is not a list")
        return cls(mt, [Descriptor.from_json(m, f"{what} entry {i}") for i, m in enumerate(ms)])

    def select(self, want: Platform) -> Descriptor:
        """The entry for ``want``; a clear error listing what the index offers otherwise."""
        for d in self.manifests:
            if d.platform and platform_matches(want, d.platform) and d.media_type in MANIFEST_TYPES + ("",):
                return d
        offered = sorted({str(d.platform) for d in self.manifests if d.platform})
        raise ManifestError(
            f"no image for platform {want} in the index; available: {', '.join(offered) or 'none'}"
            " (choose one with --platform)"
        )


def _json_type(v: Any) -> str:
    """The JSON name of a decoded value's type, for messages."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, (int, float)):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list):
        return "an array"
    return "an object" if isinstance(v, dict) else type(v).__name__


# The fields of an image config's ``config`` that ``run`` uses (OCI image-spec config.md),
# by JSON type; null means unset for each, as for Go's decoder.
_RUN_STRING_LISTS = ("Env", "Entrypoint", "Cmd")
_RUN_STRINGS = ("User", "WorkingDir", "StopSignal")
_RUN_OBJECTS = ("ExposedPorts",)
_RUN_STR_SLICES = ("Entrypoint", "Cmd")  # a lone string is accepted, as Docker does


def check_run_config(cfg: Any, what: str = "image config") -> dict[str, Any]:
    """An image config's ``config`` object with the types of the fields ``run`` uses
    checked: Env, Entrypoint and Cmd arrays of strings (a lone string for Entrypoint or
    Cmd is a one-item array, as Docker's StrSlice reads it); User, WorkingDir and
    StopSignal strings; ExposedPorts an object. Returns it, normalised ({} for null);
    ManifestError names the first bad field. Other fields are left as they are."""
    if cfg is None:
        return {}
    if not isinstance(cfg, dict):
        raise ManifestError(f"{what}: config must be an object, got {_json_type(cfg)}")
    for key in _RUN_STRING_LISTS:
        v = cfg.get(key)
        if v is None:
            continue
        if isinstance(v, str) and key in _RUN_STR_SLICES:
            cfg = {**cfg, key: [v]}  # Docker's StrSlice: "sh" means ["sh"]
            continue
        if not isinstance(v, list):
            raise ManifestError(f"{what}: config.{key} must be an array of strings, got {_json_type(v)}")
        for i, item in enumerate(v):
            if not isinstance(item, str):
                raise ManifestError(f"{what}: config.{key}[{i}] must be a string, got {_json_type(item)}")
    for key in _RUN_STRINGS:
        v = cfg.get(key)
        if v is not None and not isinstance(v, str):
            raise ManifestError(f"{what}: config.{key} must be a string, got {_json_type(v)}")
    for key in _RUN_OBJECTS:
        v = cfg.get(key)
        if v is not None and not isinstance(v, dict):
            raise ManifestError(f"{what}: config.{key} must be an object, got {_json_type(v)}")
    return cfg


@dataclass(frozen=True)
class ImageConfig:
    """The parts of an image config (OCI config.md) that minirun uses; ``raw`` keeps all."""

    raw: dict[str, Any]
    diff_ids: list[str]

    @classmethod
    def parse(cls, data: bytes, what: str = "image config") -> ImageConfig:
        doc = load_json(data, what)
        rootfs = doc.get("rootfs")
        if not isinstance(rootfs, dict) or rootfs.get("type") != "layers":
            raise ManifestError(f"{what}: rootfs.type must be 'layers'")
        diff_ids = rootfs.get("diff_ids")
        if not isinstance(diff_ids, list):
            raise ManifestError(f"{what}: rootfs.diff_ids is not a list")
        check_run_config(doc.get("config"), what)
        return cls(doc, [check_digest(d, f"{what} diff_id {i}") for i, d in enumerate(diff_ids)])

    @property
    def config(self) -> dict[str, Any]:
        c = self.raw.get("config") or {}
        return c if isinstance(c, dict) else {}

    @property
    def created(self) -> str:
        return str(self.raw.get("created") or "")

    @property
    def platform(self) -> Platform:
        return Platform(str(self.raw.get("os", "")), str(self.raw.get("architecture", "")),
                        str(self.raw.get("variant", "") or ""))

    @property
    def history(self) -> list[dict[str, Any]]:
        h = self.raw.get("history") or []
        return [e for e in h if isinstance(e, dict)] if isinstance(h, list) else []
