"""Container start latency: `minirun run --rm IMAGE true`, median over N runs, for the
small busybox image and a ~100 MB image (the time must not grow with image size),
next to `podman run --rm` and `runc run` / `crun run` of the same rootfs when installed.

    .venv/bin/python bench/bench_run.py [--runs 20]

Prints figures; asserts nothing. Uses its own store under bench/out/ and temp dirs for
the peers, and removes what it started.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from images.build import build_all  # noqa: E402
from minirun.image import build as b  # noqa: E402

OUT = HERE / "out"
STORE = OUT / "store"
MINIRUN = str(Path(sys.executable).parent / "minirun")
ENV = {**os.environ, "MINIRUN_ROOT": str(STORE)}


def sh(*args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), check=True, text=True, capture_output=True, env=ENV, **kw)  # type: ignore[call-overload, no-any-return]


def prepare() -> None:
    """busybox and a ~100 MB image (busybox + 100 MB of incompressible files) in the store."""
    names = sh(MINIRUN, "images", "--format", "json").stdout
    have = {json.loads(line)["Repository"] for line in names.splitlines()}
    if "busybox" not in have:
        layouts = OUT / "layouts"
        build_all(layouts)
        sh(MINIRUN, "load", "-q", "-i", str(layouts / "busybox"))
    if "bench-big" not in have:
        from images.build import busybox_layer, find_busybox

        base = busybox_layer(find_busybox())
        rnd = os.urandom(1 << 20)
        files = [b.directory("data")] + [b.file(f"data/f{i:03d}", rnd[i:] + rnd[:i]) for i in range(100)]
        big = b.Layer(b.layer_tar(files), "COPY 100 MB of data")
        img = b.image("bench-big:latest", [base, big], {"Env": ["PATH=/bin"], "Cmd": ["sh"]})
        dest = OUT / "layouts" / "bench-big"
        shutil.rmtree(dest, ignore_errors=True)
        b.write_oci_layout(dest, [img])
        sh(MINIRUN, "load", "-q", "-i", str(dest))


def timed(cmd: list[str], runs: int, env: dict[str, str] | None = None) -> list[float]:
    subprocess.run(cmd, check=True, env=env or ENV, capture_output=True)  # warm-up
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, env=env or ENV, capture_output=True)
        out.append((time.perf_counter() - t) * 1000)
    return out


def report(name: str, samples: list[float]) -> float:
    med = statistics.median(samples)
    print(f"  {name:<44} median {med:7.1f} ms   min {min(samples):7.1f}   max {max(samples):7.1f}")
    return med


def runc_like(tool: str, runs: int) -> list[float] | None:
    """`runc run` / `crun run` of an exported busybox rootfs with the tool's default spec
    (no network namespace setup beyond an empty one, like minirun's)."""
    exe = shutil.which(tool)
    if not exe:
        return None
    with tempfile.TemporaryDirectory(prefix=f"bench-{tool}-") as tmp:
        bundle = Path(tmp)
        rootfs = bundle / "rootfs"
        rootfs.mkdir()
        sh(MINIRUN, "save", "-o", str(bundle / "img.tar"), "busybox")
        # Unpack the single busybox layer as the rootfs (it is one plain tar inside).
        import tarfile

        with tarfile.open(bundle / "img.tar") as t:
            manifest = json.load(t.extractfile("manifest.json"))  # type: ignore[arg-type]
            layer = t.extractfile(manifest[0]["Layers"][0])
            with tarfile.open(fileobj=layer, mode="r|") as lt:
                lt.extractall(rootfs)  # our own image: trusted
        subprocess.run([exe, "spec"], cwd=bundle, check=True)
        spec = json.loads((bundle / "config.json").read_text())
        spec["process"]["terminal"] = False
        spec["process"]["args"] = ["true"]
        (bundle / "config.json").write_text(json.dumps(spec))
        state = bundle / "state"
        cmd = [exe, "--root", str(state), "run", "--bundle", str(bundle), f"bench-{os.getpid()}"]
        try:
            return timed(cmd, runs, os.environ.copy())
        except subprocess.CalledProcessError as e:
            print(f"  {tool}: failed ({(e.stderr or b'').decode().strip()[:200]})")
            return None


def _ulimits() -> list[str]:
    """podman's default nofile/nproc limits exceed the hard limits root has here, and runc
    fails setting even equal ones; moderate limits below them work."""
    return ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096"]


@contextlib.contextmanager
def scratch_podman() -> Iterator[list[str] | None]:
    """podman with its own store in a short tmp dir (its runroot must stay under 50
    characters), our busybox loaded into it; yields the `podman ... run` prefix (runc
    when present: crun refuses cgroup v1 hybrid hosts like this one), or None when podman
    is not installed. Everything it made is removed after."""
    exe = shutil.which("podman")
    if not exe:
        yield None
        return
    tmp = Path(tempfile.mkdtemp(prefix="bp-", dir="/tmp"))
    base = [exe, "--root", str(tmp / "root"), "--runroot", str(tmp / "run"),
            "--cgroup-manager", "cgroupfs", "--events-backend", "none"]
    try:
        sh(MINIRUN, "save", "-o", str(tmp / "img.tar"), "busybox")
        subprocess.run([*base, "load", "-q", "-i", str(tmp / "img.tar")], check=True, capture_output=True)
        yield [*base, "run", *_ulimits(), *(["--runtime", "runc"] if shutil.which("runc") else [])]
    finally:
        subprocess.run([*base, "rm", "-af", "-t", "0"], capture_output=True)
        subprocess.run([*base, "system", "reset", "-f"], capture_output=True)
        subprocess.run(["umount", "-R", str(tmp / "root" / "overlay")], capture_output=True)
        subprocess.run(["umount", "-R", str(tmp / "root")], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


def podman(runs: int) -> list[float] | None:
    try:
        with scratch_podman() as run:
            if run is None:
                return None
            return timed([*run, "--rm", "--network", "none", "busybox", "true"], runs, os.environ.copy())
    except subprocess.CalledProcessError as e:
        print(f"  podman: failed ({(e.stderr or b'').decode().strip()[:300]})")
        return None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_run needs root (sudo make bench)")
    OUT.mkdir(exist_ok=True)
    prepare()
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "minirun")], capture_output=True)
    print(f"container start latency, {args.runs} runs each (lower is better)")
    # --network none: the container start itself (bench_net.py measures bridge networking)
    small = report("minirun run --rm busybox true", timed([MINIRUN, "run", "--rm", "--network", "none",
                                                             "busybox", "true"], args.runs))
    big = report("minirun run --rm bench-big true (~100 MB)",
                 timed([MINIRUN, "run", "--rm", "--network", "none", "bench-big", "true"], args.runs))
    print(f"  large/small image ratio: {big / small:.2f}x (target <= 1.1x)")
    print(f"  python floor: `{Path(sys.executable).name} -c 'import click'`: "
          f"{statistics.median(timed([sys.executable, '-c', 'import click'], args.runs)):.1f} ms")
    peers: list[tuple[str, Callable[[int], list[float] | None]]] = [
        ("podman run --rm --network none busybox true", podman),
        ("runc run (busybox rootfs, default spec)", lambda n: runc_like("runc", n)),
        ("crun run (busybox rootfs, default spec)", lambda n: runc_like("crun", n)),
    ]
    for name, fn in peers:
        samples = fn(args.runs)
        if samples:
            med = report(name, samples)
            print(f"    minirun is {med / small:.2f}x faster" if med > small else
                  f"    minirun is {small / med:.2f}x slower")
        else:
            print(f"  {name}: not installed or not runnable here")


if __name__ == "__main__":
    main()
