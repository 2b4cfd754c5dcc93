"""Build contexts for the offline images' Containerfiles (``make images``, images/build.py).

    python images/context.py OUTDIR

writes OUTDIR/<image> for busybox, busybox-extra and busybox-edit: a copy of
images/<image>/ (Containerfile and files; directories 0755, files 0755 or 0644 as git
records them, whatever the checkout's umask), and for busybox the host-specific part,
which git cannot hold: the directories listed in images/busybox/skeleton, the host's
static busybox as rootfs/bin/busybox and the links of ``busybox --list-full``. Then::

    minirun build -t busybox -f images/busybox/Containerfile OUTDIR/busybox
"""

from __future__ import annotations

import argparse
import os
import shutil
import stat
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
IMAGES = ("busybox", "busybox-extra", "busybox-edit")  # in build order: the others are FROM busybox


def find_busybox() -> Path:
    """The host's busybox, which must be static (it runs in images with no libc)."""
    for p in (Path("/bin/busybox"), Path("/usr/bin/busybox")):
        if p.is_file():
            out = subprocess.run(["ldd", str(p)], capture_output=True, text=True)
            if "not a dynamic executable" in out.stdout + out.stderr or out.returncode != 0:
                return p
            raise SystemExit(f"{p} is dynamically linked; install busybox-static (make deps)")
    raise SystemExit("no busybox found; install busybox-static (make deps)")


def _copy_tree(src: Path, dest: Path) -> None:
    """``src`` to ``dest`` with modes that do not depend on the umask: dirs 0755, files
    0755 if git has them executable, else 0644."""
    dest.mkdir(parents=True)
    os.chmod(dest, 0o755)
    for entry in sorted(os.scandir(src), key=lambda e: e.name):
        target = dest / entry.name
        if entry.is_symlink():
            os.symlink(os.readlink(entry.path), target)
        elif entry.is_dir():
            _copy_tree(Path(entry.path), target)
        elif entry.is_file():
            shutil.copyfile(entry.path, target)
            os.chmod(target, 0o755 if entry.stat().st_mode & stat.S_IXUSR else 0o644)


def _skeleton(rootfs: Path, listing: Path) -> None:
    for n, line in enumerate(listing.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        mode, _, rel = line.partition(" ")
        rel = rel.strip().strip("/")
        if not rel or ".." in rel.split("/"):
            raise SystemExit(f"{listing}:{n}: want MODE PATH (a path inside rootfs/)")
        d = rootfs / rel
        d.mkdir(parents=True, exist_ok=True)
        os.chmod(d, int(mode, 8))


def _host_busybox(rootfs: Path, busybox: Path) -> None:
    """The host's busybox as /bin/busybox and an applet link for each path it lists."""
    (rootfs / "bin").mkdir(mode=0o755, exist_ok=True)
    shutil.copyfile(busybox, rootfs / "bin" / "busybox")
    os.chmod(rootfs / "bin" / "busybox", 0o755)
    applets = subprocess.run([str(busybox), "--list-full"], capture_output=True, text=True,
                             check=True).stdout.split()
    for path in applets:
        if path == "bin/busybox":
            continue
        depth = path.count("/")
        link = rootfs / path
        for parent in reversed(link.relative_to(rootfs).parents[:-1]):
            if not (rootfs / parent).is_dir():
                (rootfs / parent).mkdir()
                os.chmod(rootfs / parent, 0o755)
        os.symlink("../" * depth + "bin/busybox" if depth > 1 else "busybox", link)


def make_contexts(out: Path, busybox: Path | None = None) -> dict[str, Path]:
    """OUT/<image> for each image (replaced if there), with ``busybox`` (default: the
    host's, see find_busybox) in busybox's."""
    contexts = {}
    for name in IMAGES:
        ctx = out / name
        if ctx.exists():
            shutil.rmtree(ctx)
        _copy_tree(HERE / name, ctx)
        contexts[name] = ctx
    rootfs = contexts["busybox"] / "rootfs"
    _skeleton(rootfs, HERE / "busybox" / "skeleton")
    _host_busybox(rootfs, busybox or find_busybox())
    return contexts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    for name, path in make_contexts(ap.parse_args().out).items():
        print(f"{name} {path}")


if __name__ == "__main__":
    main()
