"""The `make bench` table: each start-up and listing path of minirun next to its peers
(Podman with --network none and its default network, runc/crun on a bundle), with
medians, min-max, the ratio minirun/peer and the issue's target, met or missed.

    .venv/bin/python bench/bench_table.py [--runs 20] [--quick]

Single commands are timed by hyperfine (-N, 3 warm-ups, --runs R; median, min and max
from its JSON). minirun runs with MINIRUN_ROOT set to the bench store under bench/out/
(bench_run.py's), Podman with --cgroup-manager cgroupfs on a scratch store holding the
same busybox (bench_run.scratch_podman), runc and crun on bench_runtime.py's busybox
bundle. --quick (5 runs, no 1000-container store, no concurrent Podman) is a smoke test.

Prints the table and writes it, under a header naming the date and the machine, to
bench/results/YYYY-MM-DD-<hostname>.txt. Asserts nothing but that minirun's commands
succeed (exit status 1 after the table when one did not). Everything it creates is
removed at the end, also on Ctrl-C: containers of every engine, the temp stores, the
bridges, and the firewall tables and state Podman's CNI default network leaves behind.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_net  # noqa: E402
import bench_run as br  # noqa: E402
from bench_runtime import make_bundle  # noqa: E402

MINIRUN = br.MINIRUN
# the bench store (bench_run's), its default network on bench_net's bench-only bridge
# and subnet, so row 2 never touches a bridge of the host's own minirun
ENV = bench_net.ENV
RESULTS = HERE / "results"
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
CONCURRENT = 50
FLAT = 1.2  # "flat": the median with 100/1000 containers within 20 % of the smallest store


@dataclass(frozen=True)
class Stat:
    """Median, min and max of one measurement, in ms."""

    median: float
    lo: float
    hi: float

    @classmethod
    def of(cls, ms: Sequence[float]) -> Stat:
        return cls(statistics.median(ms), min(ms), max(ms))


# a measurement, or why there is none (minirun's: why it failed)
Result = Stat | str


class Failed(Exception):
    """A benched command failed; the message is its last line of stderr."""


@dataclass
class Row:
    path: str
    ours: Result
    peers: list[tuple[str, Result]]  # (name, its figure); empty when there is none
    target: str
    met: str  # "met" | "MISSED" | "-" (nothing measured)


@dataclass
class Bench:
    runs: int
    quick: bool
    failures: list[str] = field(default_factory=list)  # minirun commands that failed

    def time(self, cmd: list[str], env: dict[str, str], cleanup: str | None = None) -> Stat:
        """One probe run (so a failure comes with its reason, which hyperfine hides),
        then hyperfine. ``cleanup`` runs after all of hyperfine's runs (without a shell)."""
        probe = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if probe.returncode != 0:
            lines = (probe.stderr or probe.stdout).strip().splitlines() or [f"exit {probe.returncode}"]
            raise Failed(f"`{shlex.join(cmd)}`: {lines[-1][:300]}")
        with tempfile.NamedTemporaryFile(prefix="bench-table-", suffix=".json") as out:
            hf = ["hyperfine", "-N", "--warmup", "3", "--runs", str(self.runs),
                  "--export-json", out.name, *(["--cleanup", cleanup] if cleanup else []),
                  shlex.join(cmd)]  # fmt: skip
            r = subprocess.run(hf, env=env, capture_output=True, text=True)
            if r.returncode != 0:
                raise Failed(f"hyperfine `{shlex.join(cmd)}`: {r.stderr.strip()[-300:]}")
            result = json.loads(Path(out.name).read_text())["results"][0]
        return Stat(result["median"] * 1000, result["min"] * 1000, result["max"] * 1000)

    def ours(self, cmd: list[str], env: dict[str, str] = ENV, cleanup: str | None = None) -> Result:
        try:
            return self.time(cmd, env, cleanup)
        except Failed as e:
            self.failures.append(str(e))
            return str(e)

    def peer(self, cmd: list[str], env: dict[str, str] | None = None,
             cleanup: str | None = None) -> Result:
        try:
            return self.time(cmd, env or os.environ.copy(), cleanup)
        except Failed as e:
            return str(e)


def sh(cmd: list[str], env: dict[str, str] = ENV) -> str:
    """Run a set-up command that must succeed; its stdout."""
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise Failed(f"`{shlex.join(cmd)}`: {r.stderr.strip()[-300:]}")
    return r.stdout


def verdict(ours: Result, ok: bool) -> str:
    return "-" if isinstance(ours, str) else ("met" if ok else "MISSED")


def limit_row(path: str, ours: Result, peers: list[tuple[str, Result]], limit: float) -> Row:
    return Row(path, ours, peers, f"<= {limit:g} ms",
               verdict(ours, isinstance(ours, Stat) and ours.median <= limit))


# -- minirun in the bench store -------------------------------------------------------------


def container_ids(env: dict[str, str] = ENV) -> set[str]:
    return set(sh([MINIRUN, "ps", "-aq", "--no-trunc"], env).split())


def remove_containers_except(keep: set[str]) -> None:
    """``rm -f`` every container of the bench store this bench made."""
    ids = container_ids() - keep
    if ids:
        subprocess.run([MINIRUN, "rm", "-f", *sorted(ids)], env=ENV, capture_output=True)


def rm_cleanup(keep_file: Path) -> str:
    """A hyperfine --cleanup that removes the bench store's containers not listed in
    ``keep_file`` (those that were there before)."""
    mr = shlex.quote(MINIRUN)
    script = (f"{mr} ps -aq --no-trunc | grep -vxF -f {shlex.quote(str(keep_file))} "
              f"| xargs -r {mr} rm -f >/dev/null")
    return shlex.join(["sh", "-c", script])


def concurrent(cmd: list[str], n: int, reps: int, env: dict[str, str]) -> Result:
    """Wall time of ``n`` copies of ``cmd`` started at once, until the last ends, over
    ``reps`` rounds; a string when any of them failed."""
    walls = []
    for _ in range(reps):
        procs: list[subprocess.Popen[str]] = []
        errors = []
        t = time.perf_counter()
        try:
            for _ in range(n):
                procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                                              stderr=subprocess.PIPE, text=True))
            for p in procs:
                _, err = p.communicate()
                if p.returncode != 0:
                    errors.append((err.strip().splitlines() or [f"exit {p.returncode}"])[-1])
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        walls.append((time.perf_counter() - t) * 1000)
        if errors:
            return f"{len(errors)}/{n} failed: {errors[0][:200]}"
    return Stat.of(walls)


def minirun_rows(b: Bench) -> dict[str, Result]:
    """Rows 1, 2, 3, 4, 6 and 7 for minirun, in the bench store."""
    out: dict[str, Result] = {}
    before = container_ids()
    with tempfile.NamedTemporaryFile("w", prefix="bench-table-keep-") as keep:
        keep.write("".join(f"{cid}\n" for cid in sorted(before)))
        keep.flush()
        try:
            out["none"] = b.ours([MINIRUN, "run", "--rm", "--network", "none", "busybox", "/bin/true"])
            out["big"] = b.ours([MINIRUN, "run", "--rm", "--network", "none", "bench-big", "/bin/true"])
            out["bridge"] = b.ours([MINIRUN, "run", "--rm", "busybox", "/bin/true"])
            out["detach"] = b.ours([MINIRUN, "run", "-d", "busybox", "sleep", "100"],
                                   cleanup=rm_cleanup(Path(keep.name)))
            remove_containers_except(before)
            try:
                cid = sh([MINIRUN, "run", "-d", "--network", "none", "busybox", "sleep", "1000"]).strip()
                out["exec"] = b.ours([MINIRUN, "exec", cid, "true"])
            except Failed as e:
                b.failures.append(str(e))
                out["exec"] = str(e)
            remove_containers_except(before)
            reps = 1 if b.quick else 3
            out["concurrent"] = concurrent([MINIRUN, "run", "--rm", "--network", "none", "busybox", "true"],
                                           CONCURRENT, reps, ENV)
            if isinstance(out["concurrent"], str):
                b.failures.append(f"{CONCURRENT} concurrent runs: {out['concurrent']}")
        finally:
            remove_containers_except(before)
            subprocess.run([MINIRUN, "network", "prune", "-f"], env=ENV, capture_output=True)
    return out


# -- row 5: listing with many containers and images ----------------------------------------


def add_images(root: Path, count: int) -> None:
    """``count`` images besides busybox: its config with a label of its own (so an ID of
    its own) over the same layer, each tagged bench-img<i>; made through the store."""
    from minirun.image import reference as refs
    from minirun.image.store import Store

    store = Store(root)
    base = store.resolve("busybox")
    manifest = json.loads(store.read_blob(base.manifest_digest))
    config = json.loads(store.read_blob(base.id))
    for i in range(count):
        config["config"]["Labels"] = {"bench.image": str(i)}
        config_bytes = json.dumps(config).encode()
        manifest["config"].update(digest="sha256:" + hashlib.sha256(config_bytes).hexdigest(),
                                  size=len(config_bytes))
        store.add_image(json.dumps(manifest).encode(), config_bytes, [refs.parse(f"bench-img{i}")])


def add_containers(root: Path, names: Sequence[str]) -> None:
    """Created (never started) busybox containers, as `docker create` makes them: the
    container layer, init layer, spec and record, through minirun's own create()."""
    from minirun.container import lifecycle
    from minirun.container.spec import RunOptions
    from minirun.image.store import Store

    store = Store(root)
    for name in names:
        lifecycle.create(store, "busybox", RunOptions(command=["/bin/true"], name=name, network="none"))


def ctrs(n: int) -> str:
    return f"{n} ctr" if n == 1 else f"{n} ctrs"


def listing_rows(b: Bench) -> list[Row]:
    """ps -a, images and inspect NAME in a temp store with 200 images and 0/100/1000
    containers (inspect: with the inspected one alone, then 100 and 1000)."""
    counts = [0, 100] if b.quick else [0, 100, 1000]
    root = Path(tempfile.mkdtemp(prefix="minirun-bench-table-store-"))
    env = {**br.ENV, "MINIRUN_ROOT": str(root)}
    results: dict[str, list[tuple[int, Result]]] = {"ps -a": [], "images": [], "inspect bench-target": []}
    try:
        sh([MINIRUN, "save", "-o", str(root / "busybox.tar"), "busybox"])
        sh([MINIRUN, "load", "-q", "-i", str(root / "busybox.tar")], env)
        (root / "busybox.tar").unlink()
        add_images(root, 199)
        have = 0
        for n in counts:
            if n == 0:
                results["ps -a"].append((0, b.ours([MINIRUN, "ps", "-a"], env)))
                results["images"].append((0, b.ours([MINIRUN, "images"], env)))
                add_containers(root, ["bench-target"])
                have = 1
            else:
                add_containers(root, [f"bench-c{i}" for i in range(have, n)])
                have = n
                results["ps -a"].append((n, b.ours([MINIRUN, "ps", "-a"], env)))
                results["images"].append((n, b.ours([MINIRUN, "images"], env)))
            results["inspect bench-target"].append(
                (have, b.ours([MINIRUN, "inspect", "bench-target"], env)))
    finally:
        subprocess.run([MINIRUN, "--root", str(root), "network", "prune", "-f"], env=env,
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
    rows = []
    for verb, figures in results.items():
        first_n, first = figures[0]
        for n, ours in figures:
            path = f"5 {verb} ({ctrs(n)}, 200 imgs)"
            if n == first_n:
                rows.append(limit_row(path, ours, [], 60))
                continue
            ok = (isinstance(ours, Stat) and isinstance(first, Stat)
                  and ours.median <= 60 and ours.median <= FLAT * first.median)
            rows.append(Row(path, ours, [(f"same, {ctrs(first_n)}", first)], "<= 60 ms, flat",
                            verdict(ours, ok)))
    return rows


# -- peers ----------------------------------------------------------------------------------


def spec_1_1(bundle: Path) -> Path:
    """The same bundle as runtime-spec 1.1.0 (its rootfs shared): crun 1.8 refuses the
    1.2.0 that minirun's default spec says ("unknown version specified")."""
    spec = json.loads((bundle / "config.json").read_text())
    spec["ociVersion"] = "1.1.0"
    spec["root"]["path"] = str(bundle / "rootfs")
    dest = bundle.with_name("bundle-1.1")
    dest.mkdir()
    (dest / "config.json").write_text(json.dumps(spec))
    return dest


def bundle_peers(b: Bench) -> dict[str, Result]:
    """``runc run`` / ``crun run`` of a busybox bundle running /bin/true."""
    out: dict[str, Result] = {}
    base = Path(tempfile.mkdtemp(prefix="minirun-bench-table-rt-"))
    made: list[list[str]] = []
    try:
        bundle = make_bundle(base)
        bundles = {"runc": bundle, "crun": spec_1_1(bundle)}
        for tool in ("runc", "crun"):
            exe = shutil.which(tool)
            if exe is None:
                out[tool] = "not installed"
                continue
            state = ["--root", str(base / f"state-{tool}")]
            cid = f"bench-table-{tool}-{os.getpid()}"
            made.append([exe, *state, "delete", "--force", cid])
            out[tool] = b.peer([exe, *state, "run", "--bundle", str(bundles[tool]), cid])
    finally:
        for delete in made:  # a run interrupted half-way
            subprocess.run(delete, capture_output=True)
        shutil.rmtree(base, ignore_errors=True)
    return out


def podman_peers(b: Bench) -> dict[str, Result]:
    """Podman's figures for rows 1, 2, 4, 6 and 7, in one scratch store."""
    keys = ("none", "bridge", "detach", "exec", "concurrent")
    try:
        with br.scratch_podman() as run:
            if run is None:
                return dict.fromkeys(keys, "podman not installed")
            base = run[: run.index("run")]  # `podman --root ... --cgroup-manager cgroupfs`
            rm_all = shlex.join([*base, "rm", "-af", "-t", "0"])
            out: dict[str, Result] = {
                "none": b.peer([*run, "--rm", "--network", "none", "busybox", "/bin/true"]),
                "bridge": b.peer([*run, "--rm", "busybox", "/bin/true"]),
                "detach": b.peer([*run, "-d", "busybox", "sleep", "100"], cleanup=rm_all),
            }
            subprocess.run(shlex.split(rm_all), capture_output=True)
            try:
                cid = sh([*run, "-d", "--network", "none", "busybox", "sleep", "1000"], os.environ.copy())
                out["exec"] = b.peer([*base, "exec", cid.strip(), "true"])
            except Failed as e:
                out["exec"] = str(e)
            subprocess.run(shlex.split(rm_all), capture_output=True)
            out["concurrent"] = ("skipped (--quick)" if b.quick else
                                 concurrent([*run, "--rm", "--network", "none", "busybox", "true"],
                                            CONCURRENT, 3, os.environ.copy()))
            return out
    except (subprocess.CalledProcessError, Failed) as e:  # the scratch store's set-up
        err = e.stderr if isinstance(e, subprocess.CalledProcessError) else str(e)
        reason = (err.decode() if isinstance(err, bytes) else err or "").strip()[-300:]
        return dict.fromkeys(keys, f"podman set-up failed: {reason}")


@contextlib.contextmanager
def host_network_restored() -> Iterator[None]:
    """Podman's CNI default network leaves its bridge (cni-podman0), iptables-nft tables,
    /var/lib/cni and net.ipv4.ip_forward=1 behind: put back what was there before (minirun's
    own bridge and rules go with its `network prune`)."""
    links = set(os.listdir("/sys/class/net"))
    tables = bench_net._nft_tables()
    had_cni = os.path.exists("/var/lib/cni")
    forward = IP_FORWARD.read_text()
    try:
        yield
    finally:
        for link in set(os.listdir("/sys/class/net")) - links:
            if link.startswith(("cni-podman", "podman", "mrbench")):
                subprocess.run(["ip", "link", "del", link], capture_output=True)
        for t in bench_net._nft_tables() - tables:
            if not t.split()[-1].startswith("minirun"):
                subprocess.run(["nft", "delete", "table", *t.split()], capture_output=True)
        if not had_cni:
            shutil.rmtree("/var/lib/cni", ignore_errors=True)
        if IP_FORWARD.read_text() != forward:
            IP_FORWARD.write_text(forward)


# -- the table ------------------------------------------------------------------------------


def build_rows(ours: dict[str, Result], bundle: dict[str, Result], podman: dict[str, Result],
               listing: list[Row]) -> list[Row]:
    row1 = ours["none"]
    big = ours["big"]
    big_ok = isinstance(big, Stat) and isinstance(row1, Stat) and big.median <= 1.1 * row1.median
    return [
        limit_row("1 run --rm --network none busybox /bin/true", row1,
                  [("podman --network none", podman["none"]), ("runc run (bundle)", bundle["runc"]),
                   ("crun run (bundle)", bundle["crun"])], 45),
        limit_row("2 run --rm busybox /bin/true (bridge)", ours["bridge"],
                  [("podman (default network)", podman["bridge"])], 80),
        Row("3 run --rm --network none bench-big /bin/true", big, [("row 1 (busybox)", row1)],
            "<= 1.10x row 1", verdict(big, big_ok)),
        limit_row("4 run -d busybox sleep 100 (returns the id)", ours["detach"],
                  [("podman run -d", podman["detach"])], 60),
        *listing,
        Row(f"6 {CONCURRENT}x run --rm --network none busybox true, at once", ours["concurrent"],
            [(f"{CONCURRENT}x podman --network none", podman["concurrent"])],
            f"all {CONCURRENT} exit 0", verdict(ours["concurrent"], True)),
        limit_row("7 exec CONTAINER true (detached, running)", ours["exec"],
                  [("podman exec", podman["exec"])], 40),
    ]


def render(rows: list[Row]) -> str:
    """The fixed-width table; reasons for missing figures become numbered notes below it."""
    notes: list[str] = []

    def cell(r: Result, missing: str) -> tuple[str, str]:
        if isinstance(r, Stat):
            return f"{r.median:.1f}", f"{r.lo:.1f}-{r.hi:.1f}"
        notes.append(r)
        return f"{missing} [{len(notes)}]", ""

    header = ["path", "minirun ms", "min-max", "peer", "peer ms", "ratio", "target", "met?"]
    lines: list[list[str]] = []
    for row in rows:
        median, spread = cell(row.ours, "FAILED")
        for i, (name, peer) in enumerate(row.peers or [("-", "")]):  # "": no figure
            peer_median = "" if peer == "" else cell(peer, "n/a")[0]
            ratio = (f"{row.ours.median / peer.median:.2f}x"
                     if isinstance(row.ours, Stat) and isinstance(peer, Stat) else "")
            first = i == 0
            lines.append([row.path if first else "", median if first else "",
                          spread if first else "", name, peer_median, ratio,
                          row.target if first else "", row.met if first else ""])
    widths = [max(len(x[c]) for x in [header, *lines]) for c in range(len(header))]
    right = {1, 2, 4, 5}

    def fmt(cols: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cols, widths, strict=True))).rstrip()

    out = [fmt(header), fmt(["-" * w for w in widths]), *map(fmt, lines)]
    out += [f"[{i}] {n}" for i, n in enumerate(notes, 1)]
    return "\n".join(out)


def legend(b: Bench) -> str:
    return "\n".join([
        f"medians and min-max in ms over {b.runs} hyperfine -N runs (3 warm-ups); "
        "ratio = minirun median / peer median (< 1: minirun is faster)",
        "minirun: MINIRUN_ROOT=bench/out/store; podman: --cgroup-manager cgroupfs "
        "--runtime runc, scratch store, default ulimits lowered (bench_run.scratch_podman)",
        "runc/crun: `run` of a busybox bundle (bench_runtime.make_bundle), /bin/true",
        "row 4: the containers are removed by hyperfine --cleanup after each batch",
        "row 5: a temp store; 200 imgs = busybox + 199 images with their own ID (busybox's "
        "config plus a label, same layer), each with its own tag; ctrs: created, not started; "
        f"flat = median within {FLAT:.1f}x of the smallest store",
        f"row 6: wall time from the first start until the last of {CONCURRENT} ends, "
        f"{'1 round' if b.quick else '3 rounds'}",
    ])


def machine_header(b: Bench) -> str:
    def out(*cmd: str) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, cwd=br.REPO).stdout.strip()
        except OSError:
            return ""

    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        cgroup = "v2"
    elif os.path.exists("/sys/fs/cgroup/unified"):
        cgroup = "v1 (hybrid)"
    else:
        cgroup = "v1"
    commit = out("git", "rev-parse", "--short", "HEAD") or "unknown"
    if subprocess.run(["git", "diff", "--quiet", "HEAD"], cwd=br.REPO).returncode != 0:
        commit += " + uncommitted changes"
    versions = [v.splitlines()[0] for v in (out("podman", "--version"), out("runc", "--version"),
                                            out("crun", "--version"), out("hyperfine", "--version")) if v]
    return "\n".join([
        f"minirun bench table, {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}"
        f"{' (--quick)' if b.quick else ''}",
        f"machine: {os.uname().nodename}, {len(os.sched_getaffinity(0))} cores, kernel "
        f"{os.uname().release}, cgroup {cgroup}",
        f"minirun: commit {commit}",
        f"peers: {'; '.join(versions)}",
    ])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=20, help="hyperfine runs per command (default 20)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: 5 runs, no 1000-container store, no concurrent podman")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_table needs root (sudo make bench)")
    if not shutil.which("hyperfine"):
        sys.exit("bench_table needs hyperfine (make deps)")
    b = Bench(runs=5 if args.quick else args.runs, quick=args.quick)
    # a SIGTERM cleans up as Ctrl-C does
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.monotonic()
    br.OUT.mkdir(exist_ok=True)
    br.prepare()
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(br.REPO / "minirun")], capture_output=True)
    with host_network_restored():
        ours = minirun_rows(b)
        listing = listing_rows(b)
        bundle = bundle_peers(b)
        podman = podman_peers(b)
    table = render(build_rows(ours, bundle, podman, listing))
    text = f"{machine_header(b)}\n\n{table}\n\n{legend(b)}\n"
    print(table)
    print()
    print(legend(b))
    RESULTS.mkdir(exist_ok=True)
    dest = RESULTS / f"{datetime.date.today():%Y-%m-%d}-{os.uname().nodename}.txt"
    dest.write_text(text)
    print(f"\nwritten to {dest.relative_to(br.REPO)} ({time.monotonic() - started:.0f} s)")
    if b.failures:
        print("minirun commands failed:\n  " + "\n  ".join(b.failures), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # everything is cleaned up by then
        sys.exit(130)
