"""Where the time of `minirun run --rm --network none busybox /bin/true` goes.

    .venv/bin/python bench/bench_breakdown.py [--runs 20]

Two measurements, printed as one breakdown (docs/performance.md quotes it):

1. hyperfine -N medians of the interpreter alone, of `import click`, of importing the
   modules the run path loads, and of the whole run: the differences are the
   interpreter, click and minirun's own imports.
2. One run under `strace -f --seccomp-bpf` stopping only at the milestones (fork,
   unshare, pivot_root, the sealed exec, the command's execve, its exit, the parent's
   exit): the container's own timeline, with next to no tracing overhead.

Uses the bench store of bench_run.py. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from bench_run import ENV, MINIRUN, prepare  # noqa: E402

PYTHON = str(Path(sys.executable).parent / "python")
RUN = [MINIRUN, "run", "--rm", "--network", "none", "busybox", "/bin/true"]
# what `run --network none` imports (python -X importtime of a real run lists them)
RUN_MODULES = ("minirun.cli.main, minirun.cli.containers, minirun.container.lifecycle, "
               "minirun.runtime.api, minirun.runtime.cgroups, minirun.runtime.supervise, "
               "minirun.runtime.seccomp, minirun.network.local, minirun.runtime.sealed")  # fmt: skip


def hyperfine(cmds: list[str], runs: int) -> list[float]:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        subprocess.run(["hyperfine", "-N", "--warmup", "3", "--runs", str(runs),
                        "--export-json", out.name, *cmds],
                       check=True, capture_output=True, env=ENV)  # fmt: skip
        data = json.loads(Path(out.name).read_text())
    return [statistics.median(r["times"]) * 1000 for r in data["results"]]


_LINE = re.compile(r"^(\d+)\s+(\d+):(\d+):(\d+\.\d+) (.*)$")


def timeline() -> list[tuple[str, float]]:
    """(milestone, ms since the exec of minirun) from one strace'd run."""
    with tempfile.NamedTemporaryFile(suffix=".strace") as log:
        subprocess.run(["strace", "-f", "--seccomp-bpf", "-tt", "-o", log.name, "-e",
                        "trace=clone,clone3,unshare,pivot_root,execve,execveat,exit_group",
                        *RUN], check=True, capture_output=True, env=ENV)  # fmt: skip
        lines = Path(log.name).read_text().splitlines()
    events: list[tuple[str, float]] = []
    t0 = None
    main_pid = None
    for line in lines:
        m = _LINE.match(line)
        if not m:
            continue
        pid, rest = m.group(1), m.group(5)
        t = int(m.group(2)) * 3600 + int(m.group(3)) * 60 + float(m.group(4))
        if t0 is None:
            t0, main_pid = t, pid
        ms = (t - t0) * 1000
        me = "parent" if pid == main_pid else "child"
        if rest.startswith("clone"):
            events.append((f"{me}: fork", ms))
        elif rest.startswith("unshare(CLONE_NEWCGROUP"):
            events.append((f"{me}: in its cgroup (cgroup namespace made)", ms))
        elif rest.startswith("unshare(CLONE_NEWPID"):
            continue
        elif rest.startswith("unshare"):
            events.append((f"{me}: unshare (mount, net, uts, ipc)", ms))
        elif rest.startswith("pivot_root"):
            events.append((f"{me}: pivot_root", ms))
        elif rest.startswith("execveat"):
            events.append((f"{me}: exec of the sealed minirun-exec", ms))
        elif rest.startswith("execve(") and me == "child":
            events.append((f"{me}: execve of the command", ms))
        elif rest.startswith("+++ exited") and me == "child":
            events.append((f"{me}: gone (namespaces torn down)", ms))
        elif rest.startswith("+++ exited"):
            events.append((f"{me}: exits", ms))
    return events


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    if not shutil.which("hyperfine") or not shutil.which("strace"):
        print("needs hyperfine and strace")
        return
    prepare()
    py, click_, mods, run = hyperfine(
        [f"{PYTHON} -c pass", f"{PYTHON} -c 'import click'", f"{PYTHON} -c 'import {RUN_MODULES}'",
         " ".join(RUN)], args.runs)  # fmt: skip
    print(f"`{' '.join(['minirun', *RUN[1:]])}`: median of {args.runs} runs (hyperfine -N)")
    print(f"  whole run                         {run:6.1f} ms")
    print(f"  interpreter start (venv python)   {py:6.1f} ms")
    print(f"  + import click                    {click_ - py:6.1f} ms")
    print(f"  + minirun's run-path imports      {mods - click_:6.1f} ms")
    print(f"  = everything else (work)          {run - mods:6.1f} ms")
    print("one run's timeline (strace --seccomp-bpf, milestones only), ms since exec:")
    prev = 0.0
    for name, ms in timeline():
        print(f"  {ms:6.1f}  (+{ms - prev:5.1f})  {name}")
        prev = ms
    os.environ.pop("MINIRUN_DEBUG", None)


if __name__ == "__main__":
    main()
