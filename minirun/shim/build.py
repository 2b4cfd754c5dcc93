"""Compile minirun's C helpers: ``python minirun/shim/build.py OUTDIR``.

Used by setup.py (so ``pip install .`` ships them in minirun/libexec/) and by
``make install``. Standard library only: it runs before minirun is installed.

- minirun-shim: watches a detached container (dynamic: it runs on the host)
- minirun-init: ``run --init``'s PID 1 (static: it runs inside any image)
- minirun-exec: execs every container command from a sealed copy, CVE-2019-5736 (static)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
HELPERS = {"minirun-shim": ("shim.c", False), "minirun-init": ("init.c", True),
           "minirun-exec": ("exec.c", True)}  # fmt: skip


def build(outdir: str) -> list[str]:
    """Build what is missing or older than its source; returns the paths."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise SystemExit("minirun: its helpers need a C compiler and a static libc "
                         "(Debian/Ubuntu: apt-get install gcc libc6-dev)")  # fmt: skip
    os.makedirs(outdir, exist_ok=True)
    out = []
    for name, (src, static) in HELPERS.items():
        target = os.path.join(outdir, name)
        source = os.path.join(HERE, src)
        out.append(target)
        if os.path.exists(target) and os.path.getmtime(target) >= os.path.getmtime(source):
            continue
        tmp = target + ".tmp"
        subprocess.run([cc, "-O2", "-Wall", "-Wextra", *(["-static"] if static else []),
                        "-o", tmp, source], check=True)  # fmt: skip
        os.replace(tmp, target)
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: build.py OUTDIR")
    build(sys.argv[1])
