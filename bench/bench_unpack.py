"""Benchmark: minirun's layer unpack vs GNU ``tar -xzf`` of the same gzip layer.

Builds once (cached under bench/out/) a real layer: a ``debootstrap --variant=minbase
bookworm`` rootfs (~170 MB uncompressed, ~6,700 members) tarred like an image layer (PAX,
numeric owners, xattrs) and gzipped. If
debootstrap is unavailable or fails, it falls back to a ~100 MB subset of the host's
/usr/lib + /usr/share. Then it times both extractors (best and median of N runs, each into a
fresh empty dir, page cache warm) and prints uncompressed MB/s and the ratio. It prints
figures only; it asserts nothing about speed.

Run as root (owners, devices, xattrs):  .venv/bin/python bench/bench_unpack.py [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from minirun.image.layers import unpack_layer  # noqa: E402

OUT = HERE / "out"
LAYER = OUT / "layer.tar.gz"
MIRROR = "http://deb.debian.org/debian"
TARGET_BYTES = 100 * 1024 * 1024

# Layer-like tar: PAX headers only where needed (no per-file atime/ctime records, as
# Docker/BuildKit layers have none), numeric owners, xattrs kept, stable order.
TAR_CREATE = [
    "tar",
    "--format=pax",
    "--pax-option=delete=atime,delete=ctime",
    "--numeric-owner",
    "--xattrs",
    "--xattrs-include=*",
    "--sort=name",
]


def _build_debootstrap(tmp: Path) -> Path | None:
    if shutil.which("debootstrap") is None:
        subprocess.run(["apt-get", "install", "-y", "debootstrap"], capture_output=True)
    if shutil.which("debootstrap") is None:
        return None
    root = tmp / "rootfs"
    print(f"building rootfs: debootstrap --variant=minbase bookworm ({MIRROR}) ...", flush=True)
    r = subprocess.run(
        ["debootstrap", "--variant=minbase", "bookworm", str(root), MIRROR],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        print(f"debootstrap failed ({r.returncode}): {r.stderr.strip()[-300:]}", flush=True)
        return None
    # Caches are not part of a real image layer.
    for p in (root / "var/cache/apt/archives").glob("*.deb"):
        p.unlink()
    return root


def _build_host_subset(tmp: Path) -> Path:
    """Copy ~TARGET_BYTES of /usr/lib and /usr/share into a tree (keeps links/modes)."""
    root = tmp / "hosttree"
    root.mkdir()
    total = 0
    for top in ("/usr/lib", "/usr/share"):
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames.sort()
            if total >= TARGET_BYTES:
                break
            for fn in sorted(filenames):
                if total >= TARGET_BYTES:
                    break
                src = os.path.join(dirpath, fn)
                dst = root / os.path.relpath(src, "/")
                dst.parent.mkdir(parents=True, exist_ok=True)
                try:
                    if os.path.islink(src):
                        os.symlink(os.readlink(src), dst)
                    elif os.path.isfile(src):
                        shutil.copy2(src, dst)
                        total += os.path.getsize(src)
                except OSError:
                    continue
    return root


def build_layer() -> Path:
    if LAYER.exists():
        return LAYER
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=OUT, prefix="build-") as t:
        tmp = Path(t)
        root = _build_debootstrap(tmp) or _build_host_subset(tmp)
        part = LAYER.with_suffix(".part")
        with open(part, "wb") as f:
            tar = subprocess.Popen(
                [*TAR_CREATE, "-C", str(root), "-cf", "-", "."], stdout=subprocess.PIPE
            )
            subprocess.run(["gzip", "-6", "-n"], stdin=tar.stdout, stdout=f, check=True)
            assert tar.stdout is not None
            tar.stdout.close()
            if tar.wait() != 0:
                raise SystemExit("tar failed while building the layer")
        part.rename(LAYER)
    return LAYER


_runs = 0


def _fresh(work: Path, label: str) -> Path:
    # A new dir per run, all deleted only at the end: on ext4, creating inodes right after
    # mass deletion is slow (recently_deleted() scans), which would swamp both extractors.
    global _runs
    _runs += 1
    path = work / f"{label}-{_runs}"
    path.mkdir()
    os.sync()  # the previous run's writeback must not land on this run
    return path


def time_minirun(layer: Path, work: Path) -> tuple[float, int]:
    dest = _fresh(work, "minirun")
    t0 = time.perf_counter()
    with open(layer, "rb") as f:
        res = unpack_layer(f, dest, media_type="application/vnd.oci.image.layer.v1.tar+gzip")
    return time.perf_counter() - t0, res.size


def time_tar(layer: Path, work: Path) -> float:
    dest = _fresh(work, "tar")
    cmd = [
        "tar",
        "--same-owner",
        "--numeric-owner",
        "-p",
        "--xattrs",
        "--xattrs-include=*",
        "-xzf",
        str(layer),
        "-C",
        str(dest),
    ]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument(
        "--dir",
        type=Path,
        default=OUT,
        help="where to unpack (default bench/out, the disk; /dev/shm isolates CPU cost)",
    )
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("note: not root; owners/devices will not be restored faithfully", flush=True)

    layer = build_layer()
    comp = layer.stat().st_size
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="minirun-bench-") as t:
        work = Path(t)
        # Warm-up (page cache for the blob, imports) — not timed.
        _, size = time_minirun(layer, work)
        time_tar(layer, work)
        ours: list[float] = []
        theirs: list[float] = []
        for _ in range(args.runs):  # interleave so drift hits both equally
            ours.append(time_minirun(layer, work)[0])
            theirs.append(time_tar(layer, work))

    mb = size / 1e6
    print(f"layer: {layer} ({comp / 1e6:.1f} MB gzip, {mb:.1f} MB uncompressed)")
    print(f"unpacked into: {args.dir} ({args.runs} runs each, interleaved)")
    for label, ts in (("minirun unpack_layer", ours), ("GNU tar -xzf", theirs)):
        print(
            f"{label:22s} best {min(ts):.3f}s = {mb / min(ts):7.1f} MB/s   "
            f"median {statistics.median(ts):.3f}s = {mb / statistics.median(ts):7.1f} MB/s"
        )
    print(
        f"ratio (minirun/tar throughput): best {min(theirs) / min(ours):.2f}x   "
        f"median {statistics.median(theirs) / statistics.median(ours):.2f}x"
    )


if __name__ == "__main__":
    main()
