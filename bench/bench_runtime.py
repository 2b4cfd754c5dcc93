"""OCI runtime start-up: `minirun-runtime run` of a bundle (busybox rootfs, `/bin/true`),
next to `runc run` and `crun run` of the same bundle, each timed by hyperfine (-N, from a
fresh process every run) when it is installed, else by a plain loop.

    .venv/bin/python bench/bench_runtime.py [--runs 30]

Prints one line per runtime with median/min/max and the ratio to minirun-runtime; asserts
nothing. The bundle and the state dirs live in a temp dir that is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from minirun.runtime.features import default_spec  # noqa: E402
from tests.integration.runtime_fixtures import make_busybox_tree  # noqa: E402

MINIRUN_RUNTIME = str(Path(sys.executable).parent / "minirun-runtime")


def make_bundle(base: Path) -> Path:
    bundle = base / "bundle"
    make_busybox_tree(bundle / "rootfs")
    spec = default_spec()
    spec["process"].update(terminal=False, args=["/bin/true"])
    spec["root"]["readonly"] = False
    (bundle / "config.json").write_text(json.dumps(spec))
    return bundle


def measure(cmd: list[str], runs: int) -> list[float]:
    """Wall times in ms, one fresh process per run."""
    if shutil.which("hyperfine"):
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            subprocess.run(["hyperfine", "-N", "--warmup", "3", "--runs", str(runs),
                            "--export-json", out.name, " ".join(cmd)],
                           check=True, capture_output=True)  # fmt: skip
            data = json.loads(Path(out.name).read_text())
        return [t * 1000 for t in data["results"][0]["times"]]
    out = []
    for _ in range(runs + 3):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        out.append((time.perf_counter() - t) * 1000)
    return out[3:]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="minirun-bench-rt-"))
    try:
        bundle = make_bundle(base)
        peers = {"minirun-runtime": MINIRUN_RUNTIME, "runc": shutil.which("runc"),
                 "crun": shutil.which("crun")}  # fmt: skip
        print(f"OCI runtime `run` of a busybox bundle, /bin/true, {args.runs} runs each "
              f"({'hyperfine -N' if shutil.which('hyperfine') else 'plain loop'}):")
        medians: dict[str, float] = {}
        for name, binary in peers.items():
            if binary is None:
                print(f"  {name:<18} not installed")
                continue
            state = base / f"state-{name}"
            cmd = [binary, "--root", str(state), "run", "--bundle", str(bundle), f"bench-{name}"]
            probe = subprocess.run(cmd, capture_output=True, text=True)
            if probe.returncode != 0:
                # e.g. crun 1.8 refuses a cgroup v1 host with controllers on its hybrid
                # cgroup2 mount: say so instead of timing a failure
                reason = (probe.stderr.strip().splitlines() or ["?"])[-1]
                print(f"  {name:<18} cannot run here: {reason}")
                continue
            samples = measure(cmd, args.runs)
            medians[name] = statistics.median(samples)
            print(f"  {name:<18} median {medians[name]:6.1f} ms   min {min(samples):6.1f}   "
                  f"max {max(samples):6.1f}")  # fmt: skip
        ours = medians.get("minirun-runtime")
        for name in ("runc", "crun"):
            if ours and name in medians:
                print(f"  minirun-runtime / {name}: {ours / medians[name]:.2f}x")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
