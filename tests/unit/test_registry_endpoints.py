"""Reference → registry endpoint, insecure-registry rules, mirrors, platform choice."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from minirun.errors import ManifestError
from minirun.image import oci
from minirun.image import reference as refs
from minirun.image.registry import (
    Endpoint,
    RegistryConfig,
    endpoints_for,
    is_insecure,
    is_loopback,
    split_host_port,
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MINIRUN_REGISTRY_MIRROR", raising=False)
    monkeypatch.delenv("MINIRUN_INSECURE_REGISTRIES", raising=False)
    monkeypatch.setenv("MINIRUN_REGISTRIES_CONFIG", str(tmp_path / "none.json"))


def test_docker_hub_maps_to_registry_1() -> None:
    ref = refs.parse("busybox")
    assert (ref.registry, ref.repository) == ("docker.io", "library/busybox")
    assert endpoints_for(ref.registry) == [Endpoint("https", "registry-1.docker.io")]


def test_other_registries_are_https() -> None:
    assert endpoints_for(refs.parse("ghcr.io/owner/app:1").registry) == [Endpoint("https", "ghcr.io")]
    assert endpoints_for("registry.example.com:5000") == [Endpoint("https", "registry.example.com:5000")]


@pytest.mark.parametrize("netloc", ["127.0.0.1:5000", "127.3.2.1", "localhost:5000", "localhost",
                                    "[::1]:5000", "registry.localhost:80"])
def test_loopback_may_use_plain_http(netloc: str) -> None:
    assert is_loopback(netloc)
    eps = endpoints_for(netloc)
    assert eps[0] == Endpoint("http", netloc)
    assert eps[1] == Endpoint("https", netloc, verify=False)


@pytest.mark.parametrize("netloc", ["128.0.0.1:5000", "10.0.0.1", "example.com", "localhost.example.com",
                                    "[::2]:5000"])
def test_not_loopback(netloc: str) -> None:
    assert not is_loopback(netloc)
    assert not is_insecure(netloc)


def test_insecure_rules() -> None:
    listed = ["reg.lan:5000", "other.lan", "http://scheme.lan:8080/", "10.1.0.0/16"]
    assert is_insecure("reg.lan:5000", listed)
    assert not is_insecure("reg.lan:5001", listed)  # host:port names only that port
    assert is_insecure("other.lan:443", listed) and is_insecure("other.lan", listed)
    assert is_insecure("scheme.lan:8080", listed)
    assert is_insecure("10.1.200.3:5000", listed)
    assert not is_insecure("10.2.0.1:5000", listed)
    cfg = RegistryConfig(insecure=("reg.lan:5000",))
    assert endpoints_for("reg.lan:5000", cfg) == [Endpoint("https", "reg.lan:5000", verify=False),
                                                   Endpoint("http", "reg.lan:5000")]


def test_config_from_env_flag_and_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MINIRUN_INSECURE_REGISTRIES", "a.lan:5000, b.lan")
    cfg_file = tmp_path / "registries.json"
    cfg_file.write_text(json.dumps({"insecure-registries": ["c.lan"], "registry-mirrors": ["https://m.lan"]}))
    monkeypatch.setenv("MINIRUN_REGISTRIES_CONFIG", str(cfg_file))
    cfg = RegistryConfig.load(["d.lan:1"])
    assert cfg.insecure == ("d.lan:1", "a.lan:5000", "b.lan", "c.lan")
    assert cfg.mirror == "https://m.lan"
    monkeypatch.setenv("MINIRUN_REGISTRY_MIRROR", "http://127.0.0.1:5000")
    assert RegistryConfig.load().mirror == "http://127.0.0.1:5000"


def test_mirror_serves_docker_hub_only() -> None:
    cfg = RegistryConfig(mirror="http://127.0.0.1:5000/")
    assert endpoints_for("docker.io", cfg) == [Endpoint("http", "127.0.0.1:5000", verify=False)]
    assert endpoints_for("quay.io", cfg) == [Endpoint("https", "quay.io")]
    assert endpoints_for("docker.io", RegistryConfig(mirror="mirror.lan")) == [Endpoint("https", "mirror.lan")]
    assert endpoints_for("docker.io", RegistryConfig(mirror="https://mirror.lan")) == \
        [Endpoint("https", "mirror.lan")]


def test_split_host_port() -> None:
    assert split_host_port("Example.com:5000") == ("example.com", 5000)
    assert split_host_port("[::1]:5000") == ("::1", 5000)
    assert split_host_port("[::1]") == ("::1", None)
    assert split_host_port("host") == ("host", None)


# -- platform choice (oci.Index.select, as pull uses it) ------------------------------------------------


def _index(*plats: oci.Platform) -> oci.Index:
    return oci.Index(oci.OCI_INDEX, [oci.Descriptor(oci.OCI_MANIFEST, "sha256:" + f"{i:064x}", 1, p)
                                     for i, p in enumerate(plats)])


def test_platform_matching() -> None:
    idx = _index(oci.Platform("linux", "amd64"), oci.Platform("linux", "arm64", "v8"),
                 oci.Platform("linux", "arm", "v7"))
    assert idx.select(oci.Platform("linux", "amd64")).platform == oci.Platform("linux", "amd64")
    assert idx.select(oci.Platform.parse("linux/arm64")).digest.endswith("1")
    assert idx.select(oci.Platform.parse("linux/aarch64")).digest.endswith("1")  # alias
    assert idx.select(oci.Platform.parse("linux/arm/v7")).digest.endswith("2")
    with pytest.raises(ManifestError, match="available: linux/amd64, linux/arm/v7, linux/arm64/v8"):
        idx.select(oci.Platform.parse("linux/arm/v6"))
    with pytest.raises(ManifestError, match="invalid platform"):
        oci.Platform.parse("linux")


def test_attestation_entries_are_not_chosen() -> None:
    """BuildKit adds unknown/unknown attestation manifests to indexes: never picked."""
    idx = _index(oci.Platform("unknown", "unknown"), oci.Platform("linux", "amd64"))
    assert idx.select(oci.Platform("linux", "amd64")).digest.endswith("1")
