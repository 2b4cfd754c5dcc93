"""Where minirun's small C helpers live: minirun-shim (watches a detached container),
minirun-init (the PID 1 of ``run --init``) and minirun-exec (execs every container command
from a sealed copy, see minirun/shim/exec.c).

They are built into the package (``minirun/libexec/``) by ``pip install .`` and by
``make install`` (minirun/shim/build.py)."""

from __future__ import annotations

import os

LIBEXEC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "libexec")


def helper_binary(name: str) -> str | None:
    path = os.path.join(LIBEXEC, name)
    return path if os.access(path, os.X_OK) else None
