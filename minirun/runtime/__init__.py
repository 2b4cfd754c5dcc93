"""Kernel side of minirun: an OCI runtime (runtime-spec v1.2) as a library.

``api.Runtime`` does create/start/state/kill/delete/exec/pause/resume/update over bundles
(``minirun-runtime``, cli/runtime.py, is its runc-compatible front-end; ``minirun run``
calls it in-process). ``run()`` below is the one-call form: a spec dict and an overlay
rootfs in, Docker's exit status out.

Import-light on purpose: the syscall machinery (ctypes, ~2 ms) loads on the first use.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["OverlayRootfs", "Stdio", "run", "SECCOMP_CACHE_ANNOTATION"]

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
    inherit ours."""

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
) -> int:
    """Run one container to its end with a throw-away runtime state dir: create, start,
    wait, delete. Returns Docker's exit status (128+N if killed by signal N; 127/126 when
    the command is not found / not executable, with Docker's message on our stderr).
    Setup failures raise RuntimeFailure (KernelUnsupported for a missing kernel feature)."""
    import os
    import tempfile

    from minirun.runtime import api, config
    from minirun.runtime.supervise import CommandNotRunnable

    bundle = os.path.dirname(rootfs.target.rstrip("/"))
    cfg = config.parse(spec, bundle)
    state_root = tempfile.mkdtemp(prefix="minirun-runtime-")
    try:
        return api.Runtime(state_root).run(
            os.path.basename(state_root), bundle, config=cfg, stdio=stdio, rootfs=rootfs,
            prestart=prestart, on_start=on_start, no_pivot=no_pivot)
    except CommandNotRunnable as e:
        os.write(2, f"minirun: {e}\n".encode())
        return e.code
    finally:
        import shutil

        shutil.rmtree(state_root, ignore_errors=True)
