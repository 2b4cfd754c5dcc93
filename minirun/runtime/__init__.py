"""Kernel side of minirun: run one container from an OCI runtime spec.

Import-light on purpose: the syscall machinery (ctypes, ~2 ms) loads on the first ``run``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from minirun.runtime.process import Started

__all__ = ["OverlayRootfs", "Stdio", "run", "start", "SECCOMP_CACHE_ANNOTATION"]

# Where compiled seccomp programs are cached (a store dir): an OCI annotation, the spec's
# place for what one runtime understands and others ignore.
SECCOMP_CACHE_ANNOTATION = "org.minirun.seccomp.cache"


@dataclass(frozen=True)
class OverlayRootfs:
    """The container's rootfs as overlay parts; mounted at ``target`` inside the
    container's own mount namespace only (the host never sees the mount)."""

    lowerdirs: list[str]  # image layer dirs, topmost first (overlayfs lowerdir order)
    upperdir: str  # the container's writable layer
    workdir: str  # overlay workdir, same filesystem as upperdir
    target: str  # empty host dir the merged rootfs is mounted on


@dataclass(frozen=True)
class Stdio:
    """The container's stdin/stdout/stderr when there is no tty: fds to dup, or None to
    inherit minirun's own."""

    stdin: int | None = None
    stdout: int | None = None
    stderr: int | None = None


def run(
    spec: dict[str, Any],
    rootfs: OverlayRootfs,
    *,
    no_pivot: bool = False,
    stdio: Stdio = Stdio(),  # noqa: B008 - frozen, so a shared default is safe
    on_start: Callable[[int], None] | None = None,
    prestart: Callable[[int], None] | None = None,
    cgroup_procs: Sequence[str] = (),
) -> int:
    """Start the container, call ``on_start(host_pid)`` once its command runs, wait, and
    return the exit status as Docker reports it (128+N if killed by signal N; 127/126 when
    the command is not found / not executable). Setup failures raise RuntimeFailure
    (KernelUnsupported for a missing kernel feature)."""
    from minirun.runtime.process import run as _run

    return _run(spec, rootfs, no_pivot=no_pivot, stdio=stdio, on_start=on_start,
                prestart=prestart, cgroup_procs=cgroup_procs)


def start(
    spec: dict[str, Any],
    rootfs: OverlayRootfs,
    *,
    no_pivot: bool = False,
    stdio: Stdio = Stdio(),  # noqa: B008 - frozen, so a shared default is safe
    prestart: Callable[[int], None] | None = None,
    cgroup_procs: Sequence[str] = (),
) -> Started:
    """Start the container without waiting (``run -d``): returns once its command runs,
    with its host pid (and pty master with a terminal); the caller supervises it."""
    from minirun.runtime.process import start as _start

    return _start(spec, rootfs, no_pivot=no_pivot, stdio=stdio, prestart=prestart,
                  cgroup_procs=cgroup_procs)
