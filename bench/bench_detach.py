"""Host memory per detached container: `minirun run -d busybox sleep` ×N, measured as the
PSS of the watcher processes (minirun-shim; Podman's conmon) and as the MemAvailable
drop per container, next to `podman run -d` of the same image when podman is installed.

    .venv/bin/python bench/bench_detach.py [--count 50]

Prints figures; asserts nothing; removes every container it started.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from bench_run import ENV, MINIRUN, OUT, prepare, scratch_podman  # noqa: E402


def mem_available() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def pss_of(comm: str) -> tuple[int, int]:
    """(count, total PSS bytes) of the processes named ``comm``."""
    n = total = 0
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/comm") as f:
                if f.read().strip() != comm:
                    continue
            with open(f"/proc/{d}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1]) * 1024
                        n += 1
        except OSError:
            continue
    return n, total


def settle() -> int:
    subprocess.run(["sync"])
    time.sleep(1.0)
    return mem_available()


def kib(n: float) -> str:
    return f"{n / 1024:8.0f} KiB"


def minirun(count: int) -> None:
    before = settle()
    ids = []
    for _ in range(count):
        r = subprocess.run([MINIRUN, "run", "-d", "--network", "none", "busybox", "sleep", "600"], env=ENV,
                           capture_output=True, text=True, check=True)
        ids.append(r.stdout.strip())
    try:
        after = settle()
        n, pss = pss_of("minirun-shim")
        print(f"  minirun: {count} detached containers, {n} minirun-shim processes")
        print(f"    watcher PSS per container      {kib(pss / max(n, 1))}")
        print(f"    MemAvailable drop per container {kib((before - after) / count)}  (shim + container + kernel)")
    finally:
        subprocess.run([MINIRUN, "rm", "-f", *ids], env=ENV, capture_output=True)


def podman(count: int) -> None:
    try:
        with scratch_podman() as run:
            if run is None:
                print("  podman: not installed")
                return
            before = settle()
            for _ in range(count):
                subprocess.run([*run, "-d", "--network", "none", "busybox", "sleep", "600"],
                               check=True, capture_output=True)
            after = settle()
            n, pss = pss_of("conmon")
            print(f"  podman: {count} detached containers, {n} conmon processes")
            print(f"    watcher PSS per container      {kib(pss / max(n, 1))}")
            print(f"    MemAvailable drop per container {kib((before - after) / count)}  (conmon + container + kernel)")
    except subprocess.CalledProcessError as e:
        print(f"  podman: failed ({(e.stderr or b'').decode().strip()[:300]})")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=50)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_detach needs root (sudo make bench)")
    OUT.mkdir(exist_ok=True)
    prepare()
    print(f"host memory per detached container ({args.count} containers; lower is better)")
    minirun(args.count)
    podman(args.count)


if __name__ == "__main__":
    main()
