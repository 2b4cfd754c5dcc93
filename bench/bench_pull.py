"""Benchmark: pulling from a local registry — minirun vs podman vs skopeo.

Starts Debian's ``docker-registry`` on 127.0.0.1 with a temp store, pushes two images
built here (image A: 3 gzip layers, ~50 MB compressed; image B: A's first two layers
plus a small third), then times, best of N runs, each into a fresh store:

* ``minirun pull A`` (the CLI, cold: empty store) — download, verify, unpack;
* ``podman pull A`` (overlay storage driver when it works, else vfs; temp root) —
  download, verify, unpack; in a private mount namespace so nothing touches the host;
* ``skopeo copy docker://A oci:DIR`` — download and verify only (no unpack), and
  ``skopeo copy docker://A containers-storage:`` — download, verify, unpack (podman's store);
* ``minirun pull B`` after A (2 of 3 layers shared: only one small layer moves), through
  the CLI and through the library (no interpreter start-up).

Prints figures only; asserts nothing.  Run as root:  .venv/bin/python bench/bench_pull.py
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from minirun.image import build  # noqa: E402
from minirun.image.pull import pull  # noqa: E402
from minirun.image.store import Store  # noqa: E402
from tests.registry_fixtures import RegistryServer, isolated_tool, upload_image  # noqa: E402

MINIRUN = Path(sys.executable).parent / "minirun"


def _layer(seed: int, files: int, size: int) -> build.Layer:
    """``files`` incompressible files of ``size`` bytes (random, so gzip keeps ~the size)."""
    rnd = __import__("random").Random(seed)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        d = tarfile.TarInfo(f"data{seed}")
        d.type, d.mode, d.mtime = tarfile.DIRTYPE, 0o755, build.EPOCH
        tar.addfile(d)
        for i in range(files):
            ti = tarfile.TarInfo(f"data{seed}/f{i:04d}")
            ti.size, ti.mode, ti.mtime = size, 0o644, build.EPOCH
            tar.addfile(ti, io.BytesIO(rnd.randbytes(size)))
    layer = build.Layer.__new__(build.Layer)
    layer.tar, layer.created_by = buf.getvalue(), f"layer {seed}"
    import gzip

    layer.blob = gzip.compress(layer.tar, compresslevel=1, mtime=0)
    return layer


def best(runs: int, fn: Callable[[int], None]) -> list[float]:
    times = []
    for i in range(runs):
        t = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - t)
    return times


def fmt(times: list[float]) -> str:
    return f"best {min(times):6.3f} s   (runs: {', '.join(f'{t:.3f}' for t in times)})"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--mb", type=int, default=50, help="compressed size of image A")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root (unpacking layers keeps owners and device nodes)")
    if not Path(shutil.which("docker-registry") or "/usr/bin/docker-registry").exists():
        sys.exit("docker-registry is not installed (apt-get install docker-registry)")

    work = Path(tempfile.mkdtemp(prefix="mr-bench-", dir="/tmp"))
    reg = None
    try:
        per = (args.mb << 20) // 3
        print(f"building image A: 3 layers x {per >> 20} MiB of incompressible files ...", flush=True)
        l1, l2, l3 = _layer(1, 40, per // 40), _layer(2, 40, per // 40), _layer(3, 40, per // 40)
        l4 = _layer(4, 4, 64 << 10)
        a = build.image("a", [l1, l2, l3], {"Cmd": ["sh"]})
        b = build.image("b", [l1, l2, l4], {"Cmd": ["sh"]})
        size_a = sum(len(x) for x in a.blobs.values())
        (work / "reg").mkdir()
        reg = RegistryServer(work / "reg").start()
        client = reg.client()
        upload_image(client, "bench/a", "1", a)
        upload_image(client, "bench/b", "1", b)
        client.close()
        ref_a, ref_b = f"{reg.netloc}/bench/a:1", f"{reg.netloc}/bench/b:1"
        print(f"registry {reg.netloc}; image A {size_a / 1e6:.1f} MB compressed, "
              f"{sum(len(x.tar) for x in (l1, l2, l3)) / 1e6:.1f} MB unpacked\n")

        def minirun_cold(i: int) -> None:
            root = work / f"mr-{i}"
            r = subprocess.run([str(MINIRUN), "--root", str(root), "pull", "-q", ref_a],
                               capture_output=True, text=True)
            if r.returncode != 0:
                raise SystemExit(f"minirun pull failed: {r.stderr}")

        results: dict[str, list[float]] = {}
        results["minirun pull (cold, CLI)"] = best(args.runs, minirun_cold)

        driver = "overlay"
        if shutil.which("podman") and shutil.which("unshare"):
            probe = isolated_tool(work / "pprobe", "podman", "--storage-driver", "overlay", "info", check=False)
            if probe.returncode != 0:
                driver = "vfs"

            def podman_cold(i: int) -> None:
                d = work / f"p{i}"
                args_ = ["pull", "-q", "--tls-verify=false", ref_a]
                if driver == "overlay":
                    args_ = ["--storage-driver", "overlay", *args_]
                isolated_tool(d, "podman", *args_)

            results[f"podman pull ({driver}, cold)"] = best(args.runs, podman_cold)
            for i in range(args.runs):
                subprocess.run(["rm", "-rf", str(work / f"p{i}")])
        else:
            print("podman: not installed, skipped")

        if shutil.which("skopeo") and shutil.which("unshare"):
            def skopeo_cold(i: int) -> None:
                d = work / f"s{i}"
                isolated_tool(d, "skopeo", "copy", "-q", "--src-tls-verify=false", f"docker://{ref_a}",
                              f"oci:{d / 'layout'}:a")

            results["skopeo copy -> oci: (no unpack)"] = best(args.runs, skopeo_cold)

            def skopeo_storage(i: int) -> None:
                d = work / f"t{i}"
                isolated_tool(d, "skopeo", "copy", "-q", "--src-tls-verify=false", f"docker://{ref_a}",
                              f"containers-storage:[{driver}@{d / 'root'}+{d / 'run'}]bench/a:1")

            results[f"skopeo copy -> containers-storage ({driver})"] = best(args.runs, skopeo_storage)
        else:
            print("skopeo: not installed, skipped")

        def minirun_shared_cli(i: int) -> None:
            r = subprocess.run([str(MINIRUN), "--root", str(work / f"mr-{i}"), "pull", "-q", ref_b],
                               capture_output=True, text=True)
            if r.returncode != 0:
                raise SystemExit(f"minirun pull failed: {r.stderr}")

        results["minirun pull B, 2/3 layers shared (CLI)"] = best(args.runs, minirun_shared_cli)

        def minirun_shared_lib(i: int) -> None:
            pull(Store(work / f"lib-{i}"), ref_b)

        for i in range(args.runs):  # A first, untimed
            pull(Store(work / f"lib-{i}"), ref_a)
        results["minirun pull B, 2/3 layers shared (library)"] = best(args.runs, minirun_shared_lib)

        width = max(len(k) for k in results)
        for name, times in results.items():
            print(f"{name:<{width}}  {fmt(times)}")
        mr = min(results["minirun pull (cold, CLI)"])
        for name, times in results.items():
            if not name.startswith("minirun"):
                print(f"  minirun cold pull vs {name}: {min(times) / mr:.2f}x "
                      f"({'faster' if mr < min(times) else 'slower'})")
    finally:
        if reg is not None:
            reg.stop()
        subprocess.run(["rm", "-rf", str(work)])


if __name__ == "__main__":
    main()
