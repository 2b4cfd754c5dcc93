"""Image references are normalised the way Docker (distribution/reference) does it."""

from __future__ import annotations

import pytest

from minirun.errors import InvalidReference
from minirun.image import reference as refs

HEX = "0123456789abcdef" * 4


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest"),
    [
        ("alpine", "docker.io", "library/alpine", "latest", None),
        ("alpine:3.19", "docker.io", "library/alpine", "3.19", None),
        ("library/alpine", "docker.io", "library/alpine", "latest", None),
        ("docker.io/library/alpine:latest", "docker.io", "library/alpine", "latest", None),
        ("user/app:1", "docker.io", "user/app", "1", None),
        ("user/app", "docker.io", "user/app", "latest", None),
        (f"localhost:5000/ns/app@sha256:{HEX}", "localhost:5000", "ns/app", None, f"sha256:{HEX}"),
        ("localhost/app", "localhost", "app", "latest", None),
        ("localhost:5000/app:v2", "localhost:5000", "app", "v2", None),
        ("registry.example.com/a/b:tag", "registry.example.com", "a/b", "tag", None),
        ("registry.example.com:443/a/b/c", "registry.example.com:443", "a/b/c", "latest", None),
        ("[::1]:5000/app", "[::1]:5000", "app", "latest", None),
        (f"alpine:3@sha256:{HEX}", "docker.io", "library/alpine", "3", f"sha256:{HEX}"),
        (
            "my_app__x-z/web---svc.v2:V1.0_rc-2",
            "docker.io",
            "my_app__x-z/web---svc.v2",
            "V1.0_rc-2",
            None,
        ),
        ("localhost:5000", "docker.io", "library/localhost", "5000", None),  # as Docker: a tag
    ],
)
def test_parse_normalises(
    text: str, registry: str, repository: str, tag: str | None, digest: str | None
) -> None:
    ref = refs.parse(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (
        registry,
        repository,
        tag,
        digest,
    )


def test_alpine_is_docker_library_alpine_latest() -> None:
    assert str(refs.parse("alpine")) == "docker.io/library/alpine:latest"
    assert refs.parse("alpine") == refs.parse("docker.io/library/alpine:latest")
    assert str(refs.parse("user/app:1")) == "docker.io/user/app:1"
    assert refs.parse("alpine").name == "docker.io/library/alpine"


def test_no_default_tag_when_asked_or_with_digest() -> None:
    assert refs.parse("alpine", default_tag=False).tag is None
    assert refs.parse(f"alpine@sha256:{HEX}").tag is None


@pytest.mark.parametrize(
    ("text", "familiar"),
    [
        ("alpine", "alpine:latest"),
        ("docker.io/library/alpine:3", "alpine:3"),
        ("user/app:1", "user/app:1"),
        ("docker.io/library/a/b:1", "library/a/b:1"),
        ("localhost:5000/ns/app:x", "localhost:5000/ns/app:x"),
        ("registry.example.com/a/b:tag", "registry.example.com/a/b:tag"),
        (f"localhost:5000/ns/app@sha256:{HEX}", f"localhost:5000/ns/app@sha256:{HEX}"),
    ],
)
def test_familiar_round_trip(text: str, familiar: str) -> None:
    ref = refs.parse(text)
    assert ref.familiar() == familiar
    assert refs.parse(ref.familiar()) == ref  # the short form names the same image
    assert refs.parse(str(ref)) == ref


def test_familiar_name_and_with_tag() -> None:
    ref = refs.parse(f"alpine:3@sha256:{HEX}")
    assert ref.familiar_name == "alpine"
    assert str(ref.with_tag("edge")) == "docker.io/library/alpine:edge"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "invalid reference format"),
        ("Alpine", "lowercase"),
        ("docker.io/Library/alpine", "lowercase"),
        ("user/App:1", "lowercase"),
        ("a:b:c", "invalid reference format"),
        (":tag", "invalid reference format"),
        ("alpine:", "bad tag"),
        ("alpine:-x", "bad tag"),
        ("alpine:tag\u00e9", "bad tag"),  # Go's \w is ASCII
        ("alpine:" + "t" * 129, "bad tag"),
        ("alpine@sha256:abc", "bad digest"),
        ("alpine@sha256:" + "a" * 63, "bad digest"),
        ("alpine@sha256:" + "a" * 65, "bad digest"),
        ("alpine@sha256:" + "A" * 64, "bad digest"),
        ("alpine@sha256:" + "z" * 64, "bad digest"),
        ("alpine@", "bad digest"),
        ("alpine@" + HEX, "bad digest"),
        ("busy box", "invalid reference format"),
        (" alpine", "invalid reference format"),
        ("alpine ", "invalid reference format"),
        ("alpine\n", "invalid reference format"),
        ("a\n:tag", "invalid reference format"),
        ("a\n/b", "invalid reference format"),
        ("app/", "invalid reference format"),
        ("/app", "invalid reference format"),
        ("a//b", "invalid reference format"),
        ("-app", "invalid reference format"),
        ("app_", "invalid reference format"),
        ("a___b", "invalid reference format"),
        ("bad_host!.com/app", "bad registry"),
        ("my_app.x/web", "bad registry"),  # a "." makes it a registry, as in Docker
        ("a" * 256, "255 characters"),
        ("example.com/" + "a" * 250, "255 characters"),
        ("a" * 1000, "too long"),
    ],
)
def test_bad_references_raise(text: str, why: str) -> None:
    with pytest.raises(InvalidReference) as ei:
        refs.parse(text)
    msg = str(ei.value)
    assert msg.startswith("invalid reference format")
    assert why in msg
    assert "\n" not in msg
    assert len(msg) < 400  # a too-long reference is not echoed whole


def test_long_reference_round_trips() -> None:
    # a name without a registry prints 18 characters longer ("docker.io/library/"): what
    # parses must parse again once printed
    text = f"a:{'t' * 128}@x:{'0' * 500}"
    r = refs.parse(text)
    assert len(str(r)) > len(text)
    assert refs.parse(str(r)) == r
    longest = refs.parse(f"{'a' * 237}:{'t' * 128}@x:{'0' * 510}")
    assert refs.parse(str(longest)) == longest


def test_digest_too_long() -> None:
    with pytest.raises(InvalidReference, match="digest too long") as ei:
        refs.parse(f"a@x:{'0' * 511}")
    assert len(str(ei.value)) < 200


def test_longest_allowed_name() -> None:
    name = "a" * (255 - len("docker.io/library/"))
    assert refs.parse(name).repository == "library/" + name


@pytest.mark.parametrize(
    ("text", "is_id"),
    [
        (f"sha256:{HEX}", True),
        (HEX, True),
        (HEX[:12], False),
        (f"sha256:{HEX}\n", False),
        (f"{HEX}\n", False),
        (HEX.upper(), False),
        ("alpine", False),
    ],
)
def test_is_image_id(text: str, is_id: bool) -> None:
    assert refs.is_image_id(text) is is_id


def test_is_sha256_digest() -> None:
    assert refs.is_sha256_digest(f"sha256:{HEX}")
    assert not refs.is_sha256_digest(HEX)
    assert not refs.is_sha256_digest(f"sha512:{HEX}")
