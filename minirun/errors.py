"""Typed errors. Every failure a user can meet is one of these; the CLI prints
``Error: <message>`` on one line and exits non-zero (125 for ``run``, as Docker does).

Messages say what went wrong *and* what to do about it where there is something to do.
"""

from __future__ import annotations


class MinirunError(Exception):
    """Base of every error minirun raises on purpose."""

    exit_code = 125


class UsageError(MinirunError):
    """A flag or argument is malformed (bad --env-file line, bad -v spec...)."""


class NeedsRoot(MinirunError):
    def __init__(self, command: str = "") -> None:
        hint = f"sudo minirun {command}".rstrip() if command else "sudo minirun ..."
        super().__init__(f"minirun needs root (try: {hint})")


class InvalidReference(MinirunError):
    """An image reference that cannot be parsed (``invalid reference format`` in Docker)."""


class ImageNotFound(MinirunError):
    def __init__(self, ref: str) -> None:
        super().__init__(
            f"image {ref!r} not found in the local store "
            "(see 'minirun images'; load one with 'minirun load -i FILE' or 'make images')"
        )
        self.ref = ref


class ImageInUse(MinirunError):
    """rmi of an image a container still uses, without -f."""


class ManifestError(MinirunError):
    """A manifest, index or image config that is malformed or unsupported."""


class DigestMismatch(MinirunError):
    def __init__(self, what: str, expected: str, actual: str) -> None:
        super().__init__(f"{what}: digest mismatch (expected {expected}, got {actual})")
        self.expected = expected
        self.actual = actual


class LayerError(MinirunError):
    """A layer tar that is corrupt or hostile; nothing of it is kept."""


class ArchiveError(MinirunError):
    """An image archive (docker-archive, OCI layout) that cannot be loaded."""


class StoreError(MinirunError):
    """The on-disk store is unusable (permissions, corruption, lock)."""


class ContainerNotFound(MinirunError):
    def __init__(self, ref: str) -> None:
        super().__init__(f"no such container: {ref}")
        self.ref = ref


class ContainerError(MinirunError):
    """A container operation that cannot be done in the container's current state."""


class NameInUse(MinirunError):
    def __init__(self, name: str, cid: str) -> None:
        super().__init__(
            f'the container name "/{name}" is already in use by container {cid[:12]}; '
            "remove it ('minirun rm') or choose another --name"
        )


class RuntimeFailure(MinirunError):
    """The kernel refused a step of container setup (mount, unshare, pivot_root...)."""


class KernelUnsupported(RuntimeFailure):
    """A kernel feature minirun needs is missing (overlayfs, a namespace kind)."""


class RegistryError(MinirunError):
    """A registry cannot be reached, refuses a request or sends something unusable."""

    def __init__(self, message: str, status: int | None = None, code: str = "") -> None:
        super().__init__(message)
        self.status = status  # HTTP status, when the registry answered
        self.code = code  # the distribution error code (MANIFEST_UNKNOWN, UNAUTHORIZED...)


class AuthenticationError(RegistryError):
    """The registry (or its token service) refused the credentials, or wants some."""


class NetworkError(MinirunError):
    """A network cannot be created, joined or removed (subnet taken, bridge refused...)."""


class NetworkNotFound(NetworkError):
    def __init__(self, name: str) -> None:
        super().__init__(f"network {name} not found (see 'minirun network ls'; "
                         "create one with 'minirun network create NAME')")
        self.name = name


class PortInUse(NetworkError):
    """A port to publish is already bound on the host (or published by another container)."""


class DockerfileError(UsageError):
    """A Dockerfile that cannot be parsed or built as written (the message names the line)."""

    exit_code = 1


class BuildError(MinirunError):
    """``build`` failed: a RUN step's command failed, a COPY source is missing..."""

    exit_code = 1


class CopyError(MinirunError):
    """``cp``: a path that cannot be copied as asked (missing, the wrong kind, read-only)."""


class CopyPathNotFound(CopyError):
    def __init__(self, path: str, container: str) -> None:
        super().__init__(f"Could not find the file {path} in container {container}")
        self.path = path


class UnsafeArchive(CopyError):
    """A tar for ``cp`` that names a path outside its destination, or writes through a
    link it planted itself: refused before anything of it is written."""


class VolumeError(MinirunError):
    """A volume cannot be made, used or removed (see minirun/container/volumes.py)."""


class VolumeNotFound(VolumeError):
    def __init__(self, name: str) -> None:
        super().__init__(f"no such volume: {name} (see 'minirun volume ls')")
        self.name = name


class VolumeInUse(VolumeError):
    """``volume rm`` of a volume a container (running or not) names: Docker's message."""

    def __init__(self, name: str, containers: list[str]) -> None:
        super().__init__(f"remove {name}: volume is in use - [{' '.join(containers)}]")
        self.containers = containers
