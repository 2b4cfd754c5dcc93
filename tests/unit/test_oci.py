"""OCI / Docker manifest, index and config parsing (oci.py)."""

from __future__ import annotations

import json
import platform
from typing import Any

import pytest

from minirun.errors import ManifestError
from minirun.image import oci

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
D3 = "sha256:" + "3" * 64
D4 = "sha256:" + "4" * 64


def _j(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def oci_manifest(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": oci.OCI_MANIFEST,
        "config": {"mediaType": oci.OCI_CONFIG, "digest": D1, "size": 100},
        "layers": [
            {"mediaType": oci.OCI_LAYER_GZIP, "digest": D2, "size": 2000},
            {"mediaType": oci.OCI_LAYER_ZSTD, "digest": D3, "size": 30},
        ],
    }
    doc.update(over)
    return doc


def docker_manifest() -> dict[str, Any]:
    return {
        "schemaVersion": 2,
        "mediaType": oci.DOCKER_MANIFEST,
        "config": {"mediaType": oci.DOCKER_CONFIG, "digest": D1, "size": 1469},
        "layers": [{"mediaType": oci.DOCKER_LAYER, "digest": D2, "size": 3370706}],
    }


def index(
    *platforms: tuple[str, str, str],
    media_type: str = oci.OCI_INDEX,
    manifest_type: str = oci.OCI_MANIFEST,
) -> dict[str, Any]:
    ms = []
    for i, (os_, arch, variant) in enumerate(platforms):
        plat = {"os": os_, "architecture": arch}
        if variant:
            plat["variant"] = variant
        ms.append(
            {
                "mediaType": manifest_type,
                "digest": "sha256:" + f"{i:x}" * 64,
                "size": 500 + i,
                "platform": plat,
            }
        )
    return {"schemaVersion": 2, "mediaType": media_type, "manifests": ms}


MULTI = [
    ("linux", "amd64", ""),
    ("linux", "arm", "v7"),
    ("linux", "arm64", "v8"),
    ("linux", "s390x", ""),
    ("unknown", "unknown", ""),
]


# -- manifests ------------------------------------------------------------------------------


def test_oci_manifest() -> None:
    m = oci.Manifest.parse(_j(oci_manifest()))
    assert m.media_type == oci.OCI_MANIFEST
    assert m.config.digest == D1 and m.config.size == 100
    assert [(d.digest, d.size, d.media_type) for d in m.layers] == [
        (D2, 2000, oci.OCI_LAYER_GZIP),
        (D3, 30, oci.OCI_LAYER_ZSTD),
    ]
    # to_json round-trips
    assert oci.Manifest.parse(_j(m.to_json())) == m


def test_oci_manifest_without_media_type_is_detected() -> None:
    doc = oci_manifest()
    del doc["mediaType"]
    assert oci.Manifest.parse(_j(doc)).media_type == oci.OCI_MANIFEST


def test_docker_schema2_manifest() -> None:
    m = oci.Manifest.parse(_j(docker_manifest()))
    assert m.media_type == oci.DOCKER_MANIFEST
    assert m.config.media_type == oci.DOCKER_CONFIG
    assert m.layers[0].media_type == oci.DOCKER_LAYER and m.layers[0].size == 3370706


def test_annotations_and_empty_layers() -> None:
    doc = oci_manifest(layers=[])
    doc["config"]["annotations"] = {"a": "b"}
    m = oci.Manifest.parse(_j(doc))
    assert m.layers == [] and m.config.annotations == {"a": "b"}


@pytest.mark.parametrize(
    "doc",
    [
        {
            "schemaVersion": 1,
            "name": "library/busybox",
            "tag": "latest",
            "fsLayers": [],
            "history": [],
        },
        {"schemaVersion": 1, "mediaType": oci.DOCKER_MANIFEST_V1, "fsLayers": []},
        {
            "schemaVersion": 1,
            "mediaType": oci.DOCKER_MANIFEST_V1_SIGNED,
            "fsLayers": [],
            "signatures": [],
        },
    ],
)
def test_legacy_schema1_is_refused(doc: dict[str, Any]) -> None:
    with pytest.raises(ManifestError, match="unsupported legacy manifest"):
        oci.Manifest.parse(_j(doc))


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d["config"].update(digest="sha256:abc"), "config"),
        (lambda d: d["config"].update(digest="md5:" + "a" * 32), "config"),
        (lambda d: d["config"].pop("digest"), "config"),
        (lambda d: d["layers"][1].update(digest="sha256:" + "A" * 64), "layer 1"),
        (lambda d: d["layers"][0].update(digest="sha256:" + "a" * 64 + "\n"), "layer 0"),
        (lambda d: d["layers"][0].update(digest=12), "layer 0"),
        (lambda d: d["layers"][0].update(size=-1), "layer 0"),
        (lambda d: d["layers"][0].update(size="12"), "layer 0"),
        (lambda d: d["layers"][0].update(size=1.5), "layer 0"),
        (lambda d: d["layers"][0].update(size=True), "layer 0"),
        (lambda d: d["layers"][1].pop("size"), "layer 1"),
        (lambda d: d["config"].update(size=None), "config"),
        (lambda d: d["layers"][0].update(mediaType="text/html"), "layer 0"),
        (lambda d: d["layers"][0].update(mediaType=5), "layer 0"),
        (lambda d: d["layers"][0].update(annotations=["x"]), "layer 0"),
        (lambda d: d.update(layers={"a": 1}), "layers"),
        (lambda d: d.update(layers=["x"]), "layer 0"),
        (lambda d: d.pop("config"), "config"),
        (lambda d: d.update(schemaVersion=3), "schemaVersion"),
        (lambda d: d.update(mediaType="application/x-foo"), "media type"),
        (lambda d: d.update(mediaType=oci.OCI_INDEX), "index"),
    ],
)
def test_bad_manifest_names_the_field(mutate: Any, field: str) -> None:
    doc = oci_manifest()
    mutate(doc)
    with pytest.raises(ManifestError) as ei:
        oci.Manifest.parse(_j(doc), "manifest")
    assert field in str(ei.value)
    assert str(ei.value).startswith("manifest")


@pytest.mark.parametrize(
    ("data", "msg"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'"x"', "not a JSON object"),
        (b"{}", "neither an image manifest nor an index"),
    ],
)
def test_bad_json(data: bytes, msg: str) -> None:
    with pytest.raises(ManifestError, match=msg):
        oci.Manifest.parse(data, "manifest")


# -- indexes and platforms ------------------------------------------------------------------


@pytest.mark.parametrize("media_type", [oci.OCI_INDEX, oci.DOCKER_MANIFEST_LIST])
def test_index_selects_the_host_platform(media_type: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for machine, want in [("x86_64", "amd64"), ("aarch64", "arm64"), ("s390x", "s390x")]:
        monkeypatch.setattr(platform, "machine", lambda m=machine: m)
        host = oci.host_platform()
        assert host.os == "linux" and host.architecture == want
        idx = oci.Index.parse(_j(index(*MULTI, media_type=media_type)))
        assert idx.select(host).platform is not None
        assert idx.select(host).platform.architecture == want  # type: ignore[union-attr]


def test_index_selects_real_host() -> None:
    idx = oci.Index.parse(_j(index(*MULTI)))
    d = idx.select(oci.host_platform())
    assert d.platform and d.platform.architecture == oci.host_platform().architecture


def test_index_selects_arm64_when_asked() -> None:
    idx = oci.Index.parse(_j(index(*MULTI)))
    d = idx.select(oci.Platform.parse("linux/arm64"))
    assert d.digest == "sha256:" + "2" * 64
    assert str(d.platform) == "linux/arm64/v8"
    assert idx.select(oci.Platform.parse("linux/arm/v7")).digest == "sha256:" + "1" * 64
    # aliases as uname spells them
    assert idx.select(oci.Platform.parse("linux/aarch64")).digest == "sha256:" + "2" * 64
    assert idx.select(oci.Platform.parse("linux/x86_64")).digest == "sha256:" + "0" * 64


def test_index_variant_mismatch_is_not_chosen() -> None:
    idx = oci.Index.parse(_j(index(("linux", "arm", "v6"), ("linux", "arm", "v7"))))
    assert idx.select(oci.Platform.parse("linux/arm/v7")).digest == "sha256:" + "1" * 64
    with pytest.raises(ManifestError, match="linux/arm/v6, linux/arm/v7"):
        idx.select(oci.Platform.parse("linux/arm/v5"))


def test_unknown_platform_lists_the_available_ones() -> None:
    idx = oci.Index.parse(_j(index(*MULTI)))
    with pytest.raises(ManifestError) as ei:
        idx.select(oci.Platform.parse("linux/riscv64"))
    msg = str(ei.value)
    assert "linux/riscv64" in msg
    for p in ("linux/amd64", "linux/arm/v7", "linux/arm64/v8", "linux/s390x"):
        assert p in msg
    assert "--platform" in msg


def test_index_without_platforms() -> None:
    idx = oci.Index.parse(
        _j(
            {
                "schemaVersion": 2,
                "manifests": [{"mediaType": oci.OCI_MANIFEST, "digest": D1, "size": 1}],
            }
        )
    )
    assert idx.media_type == oci.OCI_INDEX
    with pytest.raises(ManifestError, match="available: none"):
        idx.select(oci.Platform.parse("linux/amd64"))


def test_index_skips_nested_indexes_for_a_platform() -> None:
    doc = index(("linux", "amd64", ""), ("linux", "amd64", ""))
    doc["manifests"][0]["mediaType"] = oci.OCI_INDEX
    assert (
        oci.Index.parse(_j(doc)).select(oci.Platform.parse("linux/amd64")).digest
        == "sha256:" + "1" * 64
    )


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"schemaVersion": 2, "mediaType": oci.OCI_INDEX, "manifests": {}}, "manifests"),
        (
            {
                "schemaVersion": 2,
                "mediaType": oci.OCI_INDEX,
                "manifests": [{"digest": "sha256:xyz", "size": 1}],
            },
            "entry 0",
        ),
        (
            {
                "schemaVersion": 2,
                "mediaType": oci.OCI_INDEX,
                "manifests": [{"digest": D1, "size": 1}, {"digest": D2, "size": -5}],
            },
            "entry 1",
        ),
        (oci_manifest(), "not an image index"),
    ],
)
def test_bad_index(doc: dict[str, Any], field: str) -> None:
    with pytest.raises(ManifestError) as ei:
        oci.Index.parse(_j(doc), "index")
    assert field in str(ei.value)


def test_manifest_parse_refuses_an_index() -> None:
    with pytest.raises(ManifestError, match="is an index"):
        oci.Manifest.parse(_j(index(*MULTI)))


@pytest.mark.parametrize("text", ["linux", "linux/", "/amd64", "linux/arm/v7/x", ""])
def test_bad_platform_text(text: str) -> None:
    with pytest.raises(ManifestError, match="invalid platform"):
        oci.Platform.parse(text)


def test_platform_parse_and_str() -> None:
    p = oci.Platform.parse("linux/arm64/v8")
    assert (p.os, p.architecture, p.variant) == ("linux", "arm64", "v8")
    assert str(p) == "linux/arm64/v8"
    assert str(oci.Platform.parse("linux/amd64")) == "linux/amd64"
    assert p.to_json() == {"os": "linux", "architecture": "arm64", "variant": "v8"}


# -- image config ---------------------------------------------------------------------------


def test_image_config() -> None:
    cfg = {
        "created": "2024-01-02T03:04:05.123456789Z",
        "architecture": "arm64",
        "variant": "v8",
        "os": "linux",
        "config": {"Cmd": ["sh"], "Env": ["A=1"]},
        "rootfs": {"type": "layers", "diff_ids": [D1, D2]},
        "history": [{"created_by": "a"}, "junk", {"created_by": "b", "empty_layer": True}],
    }
    c = oci.ImageConfig.parse(_j(cfg))
    assert c.diff_ids == [D1, D2]
    assert c.config == {"Cmd": ["sh"], "Env": ["A=1"]}
    assert c.created.startswith("2024-01-02")
    assert str(c.platform) == "linux/arm64/v8"
    assert [h["created_by"] for h in c.history] == ["a", "b"]


def test_image_config_minimal() -> None:
    c = oci.ImageConfig.parse(_j({"rootfs": {"type": "layers", "diff_ids": []}}))
    assert c.config == {} and c.history == [] and c.created == ""


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({}, "rootfs"),
        ({"rootfs": {"type": "tar", "diff_ids": []}}, "rootfs.type"),
        ({"rootfs": {"type": "layers"}}, "rootfs.diff_ids"),
        ({"rootfs": {"type": "layers", "diff_ids": "x"}}, "rootfs.diff_ids"),
        ({"rootfs": {"type": "layers", "diff_ids": [D1, "sha256:nothex"]}}, "diff_id 1"),
        ({"rootfs": {"type": "layers", "diff_ids": ["sha512:" + "a" * 128]}}, "diff_id 0"),
    ],
)
def test_bad_image_config(doc: dict[str, Any], field: str) -> None:
    with pytest.raises(ManifestError) as ei:
        oci.ImageConfig.parse(_j(doc))
    assert field in str(ei.value)


def test_check_digest() -> None:
    assert oci.check_digest(D4, "x") == D4
    for bad in ("sha256:" + "a" * 63, "sha256:" + "a" * 64 + "\n", "SHA256:" + "a" * 64, None, 5):
        with pytest.raises(ManifestError, match="where"):
            oci.check_digest(bad, "where")


@pytest.mark.parametrize(
    ("config", "field"),
    [
        (5, "config must be an object"),
        ({"Env": 1}, "config.Env must be an array of strings, got a number"),
        ({"Env": ["A=1", None]}, "config.Env[1] must be a string, got null"),
        ({"Env": "A=1"}, "config.Env must be an array of strings, got a string"),
        ({"Cmd": {"a": 1}}, "config.Cmd must be an array of strings, got an object"),
        ({"Entrypoint": [True]}, "config.Entrypoint[0] must be a string, got a boolean"),
        ({"WorkingDir": 1}, "config.WorkingDir must be a string"),
        ({"User": ["root"]}, "config.User must be a string, got an array"),
        ({"StopSignal": []}, "config.StopSignal must be a string"),
        ({"ExposedPorts": ["80/tcp"]}, "config.ExposedPorts must be an object, got an array"),
    ],
)
def test_image_config_field_types(config: Any, field: str) -> None:
    doc = {"rootfs": {"type": "layers", "diff_ids": []}, "config": config}
    with pytest.raises(ManifestError, match=field.replace("[", r"\[").replace("]", r"\]")):
        oci.ImageConfig.parse(_j(doc), "cfg")
    with pytest.raises(ManifestError, match="image config: "):
        oci.check_run_config(config)


def test_a_lone_string_cmd_or_entrypoint_is_a_one_item_list() -> None:
    """Docker's StrSlice: images built by tools that write "Cmd": "sh" run as in Docker."""
    cfg = {"Cmd": "sh", "Entrypoint": "/bin/init", "Env": ["A=1"]}
    assert oci.check_run_config(cfg) == {"Cmd": ["sh"], "Entrypoint": ["/bin/init"], "Env": ["A=1"]}
    assert cfg["Cmd"] == "sh"  # the caller's dict is not changed


def test_image_config_nulls_are_unset() -> None:
    fields = ("Env", "Entrypoint", "Cmd", "WorkingDir", "User", "StopSignal", "ExposedPorts")
    cfg = {k: None for k in fields}
    c = oci.ImageConfig.parse(_j({"rootfs": {"type": "layers", "diff_ids": []}, "config": cfg}))
    assert c.config == cfg
    assert oci.check_run_config(None) == {}
