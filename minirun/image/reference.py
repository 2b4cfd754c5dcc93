"""Image references, normalised the way Docker does.

``alpine`` is ``docker.io/library/alpine:latest``; ``user/app:1`` is
``docker.io/user/app:1``; ``localhost:5000/ns/app@sha256:...`` names a registry
because its first component has a ``.`` or ``:`` or is ``localhost``. The grammar
is distribution/reference's (the one Docker and Podman share).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from minirun.errors import InvalidReference

DEFAULT_REGISTRY = "docker.io"
DEFAULT_TAG = "latest"
OFFICIAL_NAMESPACE = "library"

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_DOMAIN_RE = re.compile(
    r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?))*"
    r"(?::[0-9]+)?|\[[0-9a-fA-F:]+\](?::[0-9]+)?"
)
# Every pattern is used with fullmatch(): "$" would also match before a trailing newline.
# re.ASCII: Go's \w (distribution/reference) is [0-9A-Za-z_], Python's str \w is Unicode.
_TAG_RE = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)
# distribution/reference's anchored digest: algorithm ":" at least 32 hex digits; a sha256
# digest must be exactly 64 lowercase hex (opencontainers/go-digest validates that too).
_DIGEST_RE = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-f0-9]{32,}", re.ASCII)
_SHA256_RE = re.compile(r"sha256:[a-f0-9]{64}")
_HEX_ID_RE = re.compile(r"[a-f0-9]{64}")
# Length limits. Docker's only one is the name's (registry/repository, after
# normalisation): 255. A tag has at most 128 characters (_TAG_RE); distribution's grammar
# does not bound a digest, minirun does (sha512's is 135 characters). The limit on the
# whole text follows from those three, so it holds for the normalised form (str()) of any
# reference that parses, which adds at most "docker.io/library/" to the name.
_NAME_MAX = 255
_DIGEST_MAX = 512
_TEXT_MAX = _NAME_MAX + 1 + 128 + 1 + _DIGEST_MAX


@dataclass(frozen=True)
class Reference:
    """A fully normalised reference. ``tag`` and ``digest`` may both be set."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """``docker.io/library/alpine`` — registry plus repository."""
        return f"{self.registry}/{self.repository}"

    def __str__(self) -> str:
        s = self.name
        if self.tag:
            s += f":{self.tag}"
        if self.digest:
            s += f"@{self.digest}"
        return s

    @property
    def familiar_name(self) -> str:
        """The short form Docker shows: ``alpine``, ``user/app``, ``localhost:5000/app``."""
        if self.registry == DEFAULT_REGISTRY:
            repo = self.repository
            if repo.startswith(OFFICIAL_NAMESPACE + "/") and repo.count("/") == 1:
                return repo[len(OFFICIAL_NAMESPACE) + 1 :]
            return repo
        return self.name

    def familiar(self) -> str:
        s = self.familiar_name
        if self.tag:
            s += f":{self.tag}"
        if self.digest:
            s += f"@{self.digest}"
        return s

    def with_tag(self, tag: str) -> Reference:
        return Reference(self.registry, self.repository, tag, None)


def _split_domain(name: str) -> tuple[str, str]:
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first != first.lower()):
        return first, rest
    return DEFAULT_REGISTRY, name


def parse(text: str, *, default_tag: bool = True) -> Reference:
    """Parse and normalise ``text``. A missing tag becomes ``latest`` unless a digest is
    given or ``default_tag`` is false. Raises :class:`InvalidReference`."""
    if not text or text != text.strip():
        raise InvalidReference(f"invalid reference format: {text!r}")
    if len(text) > _TEXT_MAX:  # before any regex looks at it
        raise InvalidReference(f"invalid reference format: reference too long: {text[:40]!r}...")
    rest, at, digest = text.partition("@")
    if len(digest) > _DIGEST_MAX:
        raise InvalidReference(f"invalid reference format: digest too long (more than "
                               f"{_DIGEST_MAX} characters): {text[:40]!r}...")
    if at and (not _DIGEST_RE.fullmatch(digest)
                   or (digest.startswith("sha256:") and not _SHA256_RE.fullmatch(digest))):
        raise InvalidReference(f"invalid reference format: bad digest in {text!r}")
    # A tag follows the last ':' that comes after the last '/' (a port is before a '/').
    tag: str | None = None
    colon = rest.rfind(":")
    if colon > rest.rfind("/"):
        rest, tag = rest[:colon], rest[colon + 1 :]
        if not _TAG_RE.fullmatch(tag):
            raise InvalidReference(f"invalid reference format: bad tag {tag!r} in {text!r}")
    registry, repository = _split_domain(rest)
    if not _DOMAIN_RE.fullmatch(registry):
        raise InvalidReference(f"invalid reference format: bad registry {registry!r} in {text!r}")
    if repository != repository.lower():
        raise InvalidReference(
            f"invalid reference format: repository name must be lowercase: {text!r}"
        )
    if registry == DEFAULT_REGISTRY and "/" not in repository:
        repository = f"{OFFICIAL_NAMESPACE}/{repository}"
    if len(registry) + 1 + len(repository) > _NAME_MAX:
        raise InvalidReference(f"invalid reference format: repository name must not be more than "
                               f"{_NAME_MAX} characters: {text[:40]!r}...")
    if not _PATH_RE.fullmatch(repository):
        raise InvalidReference(f"invalid reference format: {text!r}")
    if tag is None and digest == "" and default_tag:
        tag = DEFAULT_TAG
    return Reference(registry, repository, tag, digest or None)


def is_image_id(text: str) -> bool:
    """True for ``sha256:<64 hex>`` or a bare 64-hex id (an image ID, not a name)."""
    return bool(_SHA256_RE.fullmatch(text) or _HEX_ID_RE.fullmatch(text))


def is_sha256_digest(text: str) -> bool:
    return bool(_SHA256_RE.fullmatch(text))
