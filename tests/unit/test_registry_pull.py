"""pull's manifest checks with a fake registry client (no network)."""

from __future__ import annotations

import hashlib
import json

import pytest

from minirun.errors import DigestMismatch, ImageNotFound, ManifestError, UsageError
from minirun.image import oci
from minirun.image.pull import ensure_image, pull
from minirun.image.registry import RegistryClient, RegistryConfig
from minirun.image.store import Store


class FakeClient(RegistryClient):
    def __init__(self, manifests: dict[str, tuple[bytes, str, str]]) -> None:
        super().__init__("fake.example", RegistryConfig(), use_stored_credentials=False)
        self.manifests = manifests

    def get_manifest(self, repository: str, reference: str) -> tuple[bytes, str, str]:
        return self.manifests[reference]


def _digest(b: bytes) -> str:
    return "sha256:" + hashlib.sha256(b).hexdigest()


def test_schema1_is_refused(store: Store) -> None:
    data = json.dumps({"schemaVersion": 1, "name": "x", "tag": "1", "fsLayers": []}).encode()
    client = FakeClient({"1": (data, oci.DOCKER_MANIFEST_V1_SIGNED, "")})
    with pytest.raises(ManifestError, match="unsupported legacy manifest"):
        pull(store, "fake.example/x:1", client=client)


def test_content_digest_header_must_match(store: Store) -> None:
    data = b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}'
    client = FakeClient({"1": (data, oci.OCI_MANIFEST, "sha256:" + "0" * 64)})
    with pytest.raises(DigestMismatch, match="Docker-Content-Digest"):
        pull(store, "fake.example/x:1", client=client)


def test_by_digest_must_match(store: Store) -> None:
    data = b'{"schemaVersion":2}'
    wanted = "sha256:" + "1" * 64
    client = FakeClient({wanted: (data, oci.OCI_MANIFEST, "")})
    with pytest.raises(DigestMismatch, match=f"expected {wanted}, got {_digest(data)}"):
        pull(store, f"fake.example/x@{wanted}", client=client)


def test_ensure_image_policy_errors(store: Store) -> None:
    with pytest.raises(UsageError, match="invalid --pull value"):
        ensure_image(store, "busybox", "sometimes", lambda e: None)
    with pytest.raises(ImageNotFound):
        ensure_image(store, "busybox", "never", lambda e: None)
    with pytest.raises(ImageNotFound):  # an ID is never pulled
        ensure_image(store, "sha256:" + "a" * 64, "missing", lambda e: None)
