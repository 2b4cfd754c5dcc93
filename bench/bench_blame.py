"""Benchmark: ``minirun blame`` and ``minirun layers`` on a 100-layer image.

Builds (with minirun.image.build, no network) an image of 100 layers: a base of ~300
files, then 99 layers that each add 20 files in a dir of their own, overwrite a shared
config file, delete a file of the layer below (a whiteout), and every tenth one replace a
dir wholesale (an opaque dir). Loads it into a throw-away store under /tmp, runs
``minirun blame`` once cold (that run writes the 100 layer indexes), then times the warm
command with hyperfine (``--warmup 2 -N``) if it is installed, else with a loop of
subprocess runs, and prints the figures. ``minirun --version`` is timed too: the
interpreter's and click's start-up, which every verb pays.

Run as root (the CLI wants it; whiteouts are char devices):

    .venv/bin/python bench/bench_blame.py [--layers 100] [--runs 30]
"""

from __future__ import annotations

import argparse
import json
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

from minirun.image import archive  # noqa: E402
from minirun.image import build as b  # noqa: E402
from minirun.image.store import Store  # noqa: E402

MINIRUN = str(Path(sys.executable).parent / "minirun")
NAME = "bench-blame:latest"


def build_image(n_layers: int) -> b.BuiltImage:
    base = [b.directory(d) for d in ("bin", "etc", "base", "base/sub", "opq")]
    base += [b.file(f"base/f{i:03d}", f"base file {i}\n" * 20) for i in range(200)]
    base += [b.file(f"base/sub/g{i:03d}", f"sub file {i}\n") for i in range(80)]
    base += [b.file(f"opq/o{i:02d}", "old\n") for i in range(10)]
    base += [b.file("etc/config", "version=0\n"), b.file("bin/tool", b"\x7fELF" + b"\0" * 4096, 0o755)]
    layers = [b.Layer(b.layer_tar(base), "COPY base/ /")]
    for n in range(1, n_layers):
        entries = [b.directory(f"l{n:03d}")]
        entries += [b.file(f"l{n:03d}/f{i:02d}", f"layer {n} file {i}\n" * (i + 1)) for i in range(20)]
        entries.append(b.file("etc/config", f"version={n}\n" + "x" * n))
        if n > 1:
            entries.append(b.whiteout(f"l{n - 1:03d}/f00"))
        if n % 10 == 0:
            entries += [b.opaque("opq"), b.directory("opq"), b.file(f"opq/n{n:03d}", "new\n")]
        layers.append(b.Layer(b.layer_tar(entries), f"RUN step {n} && update /etc/config"))
    return b.image(NAME, layers, {"Cmd": ["sh"]})


def hyperfine(cmds: list[list[str]], runs: int, env: dict[str, str]) -> list[float]:
    """Mean wall time (ms) of each command."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        subprocess.run(["hyperfine", "--warmup", "2", "-N", "--runs", str(runs), "--export-json", out.name,
                        *[" ".join(c) for c in cmds]], check=True, env=env)
        return [r["mean"] * 1000 for r in json.loads(Path(out.name).read_text())["results"]]


def loop(cmds: list[list[str]], runs: int, env: dict[str, str]) -> list[float]:
    means = []
    for cmd in cmds:
        for _ in range(2):
            subprocess.run(cmd, env=env, capture_output=True)
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            subprocess.run(cmd, env=env, capture_output=True)
            times.append((time.perf_counter() - t) * 1000)
        means.append(statistics.mean(times))
        print(f"  {' '.join(cmd[1:])}: mean {means[-1]:.1f} ms, median {statistics.median(times):.1f} ms")
    return means


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=100)
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the CLI needs it, and whiteouts are char devices")
    tmp = Path(tempfile.mkdtemp(prefix="minirun-bench-blame-", dir="/tmp"))
    try:
        print(f"building a {args.layers}-layer image ...", flush=True)
        img = build_image(args.layers)
        b.write_oci_layout(tmp / "layout", [img])
        store = Store(tmp / "store")
        archive.load(store, tmp / "layout")
        env = {**os.environ, "MINIRUN_ROOT": str(store.root)}
        mid = args.layers // 2
        paths = ["/etc/config", "/base/f007", f"/l{mid:03d}/f05", f"/l{mid:03d}/f00", "/opq/o03"]
        blame = [MINIRUN, "blame", NAME, *paths]
        t = time.perf_counter()
        first = subprocess.run(blame, env=env, capture_output=True, text=True)
        cold = (time.perf_counter() - t) * 1000
        if first.returncode != 0:
            raise SystemExit(f"blame failed: {first.stderr}")
        print(first.stdout)
        indexes = len(list((store.root / "layers").glob("*/index.json")))
        print(f"cold blame (writes {indexes} layer indexes): {cold:.1f} ms")
        cmds = [[MINIRUN, "--version"], blame, [MINIRUN, "layers", NAME]]
        timer = hyperfine if shutil.which("hyperfine") else loop
        version_ms, blame_ms, layers_ms = timer(cmds, args.runs, env)
        print(f"\n{args.layers} layers, {len(paths)} paths: minirun blame {blame_ms:.1f} ms "
              f"(minirun --version {version_ms:.1f} ms; blame's own work ~{blame_ms - version_ms:.1f} ms); "
              f"minirun layers {layers_ms:.1f} ms")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
