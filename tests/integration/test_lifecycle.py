"""Long-running containers: run -d, logs, exec, stop/kill/start/restart/wait, --init,
crash safety and concurrency — through the real CLI, as root."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from minirun.image import build as b
from tests.conftest import CONTAINER_TESTS, Cli, store_cli, wait_for

pytestmark = CONTAINER_TESTS

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
MINIRUN = str(BIN / "minirun")


def _env(store: Path) -> dict[str, str]:
    return {**os.environ, "MINIRUN_ROOT": str(store)}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    sys.path.insert(0, str(REPO))
    from images.build import build_all, busybox_layer, find_busybox

    store = tmp_path_factory.mktemp("store")
    layouts = tmp_path_factory.mktemp("layouts")
    for p in build_all(layouts):
        subprocess.run([MINIRUN, "load", "-q", "-i", str(p)], check=True, env=_env(store))
    # An image whose StopSignal is SIGUSR1 (and that traps it), as `STOPSIGNAL` would make.
    img = b.image("stopsig:latest", [busybox_layer(find_busybox())], {
        "Env": ["PATH=/bin"], "StopSignal": "SIGUSR1",
        "Cmd": ["sh", "-c", "trap 'echo got usr1; exit 7' USR1; while true; do sleep 0.05; done"]})
    b.write_oci_layout(layouts / "stopsig", [img])
    subprocess.run([MINIRUN, "load", "-q", "-i", str(layouts / "stopsig")], check=True, env=_env(store))
    yield store
    ids = subprocess.run([MINIRUN, "ps", "-aq"], env=_env(store), capture_output=True, text=True).stdout.split()
    if ids:
        subprocess.run([MINIRUN, "rm", "-f", *ids], env=_env(store), capture_output=True)


@pytest.fixture
def cli(root: Path) -> Cli:
    return store_cli(_env(root))


def inspect(cli: Cli, name: str) -> dict:
    r = cli("inspect", "--type", "container", name)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)[0]


def shim_pids() -> set[int]:
    """Live minirun-shim processes. A killed shim whose zombie waits for the host's PID 1
    to reap it is not one: some PID 1s (a VM's agent, a container's shell) reap late or
    never, and nothing of minirun's can."""
    out = set()
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    comm, _, rest = f.read().partition(" (")[2].rpartition(") ")
                if comm == "minirun-shim" and not rest.startswith(("Z", "X")):
                    out.add(int(d))
            except OSError:
                pass
    return out


def detach(cli: Cli, name: str, *cmd: str, image: str = "busybox", opts: tuple[str, ...] = ()) -> str:
    r = cli("run", "-d", "--name", name, *opts, image, *cmd)
    assert r.returncode == 0, r.stderr
    cid = r.stdout.strip()
    assert len(cid) == 64 and all(c in "0123456789abcdef" for c in cid)
    return cid


def test_detach_prints_the_id_and_keeps_running(cli: Cli) -> None:
    cid = detach(cli, "d1", "sleep", "30")
    try:
        info = inspect(cli, "d1")
        assert info["Id"] == cid and info["State"]["Running"]
        row = next(line for line in cli("ps").stdout.splitlines() if line.endswith(" d1"))
        assert "Up " in row
        # its watcher is the small C shim, and the container init is the shim's child
        with open(f"/proc/{info['State']['Pid']}/stat") as f:
            ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        with open(f"/proc/{ppid}/comm") as f:
            assert f.read().strip() == "minirun-shim"
    finally:
        assert cli("rm", "-f", "d1").returncode == 0


def test_logs_plain_tail_timestamps_and_streams(cli: Cli) -> None:
    # stderr first, then (after the shim surely logged it) stdout: --tail counts lines of
    # both streams together, as Docker's does, so this order makes the tail deterministic
    detach(cli, "lg", "sh", "-c",
           "for i in 1 2 3 4 5; do echo err$i >&2; done; sleep 0.3; for i in 1 2 3 4 5; do echo out$i; done")
    try:
        assert cli("wait", "lg").stdout.strip() == "0"
        r = cli("logs", "lg")
        assert r.stdout.split() == [f"out{i}" for i in range(1, 6)]
        assert r.stderr.split() == [f"err{i}" for i in range(1, 6)]
        assert cli("logs", "--tail", "2", "lg").stdout.split() == ["out4", "out5"]
        stamped = cli("logs", "-t", "--tail", "1", "lg").stdout.strip().split(" ")
        assert stamped[1] == "out5" and stamped[0].endswith("Z") and "T" in stamped[0]
    finally:
        cli("rm", "-f", "lg")


def test_logs_follow_ends_when_the_container_exits(cli: Cli) -> None:
    detach(cli, "fl", "sh", "-c", "for i in 1 2 3; do echo line$i; sleep 0.3; done")
    try:
        t = time.monotonic()
        r = cli("logs", "-f", "fl", timeout=20)
        assert r.returncode == 0 and r.stdout.split() == ["line1", "line2", "line3"]
        assert time.monotonic() - t < 10
    finally:
        cli("rm", "-f", "fl")


def test_stop_uses_the_stop_signal_then_kills(cli: Cli) -> None:
    detach(cli, "ss", image="stopsig")
    try:
        assert cli("stop", "ss").returncode == 0
        assert inspect(cli, "ss")["State"]["ExitCode"] == 7  # the image's StopSignal, trapped
        assert "got usr1" in cli("logs", "ss").stdout
    finally:
        cli("rm", "-f", "ss")
    detach(cli, "st", "sleep", "30")  # PID 1 without a handler ignores SIGTERM: killed after -t
    try:
        t = time.monotonic()
        assert cli("stop", "-t", "1", "st").returncode == 0
        assert 0.9 < time.monotonic() - t < 8
        info = inspect(cli, "st")
        assert info["State"]["Status"] == "exited" and info["State"]["ExitCode"] == 137
        assert "Exited (137)" in cli("ps", "-a").stdout
    finally:
        cli("rm", "-f", "st")


def test_kill_with_a_signal_and_wait(cli: Cli) -> None:
    detach(cli, "kl", "sh", "-c", "trap 'exit 12' HUP; while true; do sleep 0.05; done")
    try:
        assert cli("kill", "-s", "HUP", "kl").returncode == 0
        assert cli("wait", "kl").stdout.strip() == "12"
        assert cli("kill", "kl").returncode == 1  # not running any more
    finally:
        cli("rm", "-f", "kl")


def test_start_keeps_the_container_layer_and_restart(cli: Cli) -> None:
    assert cli("run", "--name", "keep", "busybox", "sh", "-c",
               "echo $((`cat /n 2>/dev/null || echo 0` + 1)) > /n; cat /n").stdout == "1\n"
    try:
        assert cli("start", "-a", "keep").stdout == "2\n"
        assert cli("start", "keep").returncode == 0
        assert cli("wait", "keep").stdout.strip() == "0"
        assert cli("start", "-a", "keep").stdout == "4\n"
        assert cli("diff", "keep").stdout.split("\n")[0] == "A /n"
    finally:
        cli("rm", "keep")
    detach(cli, "rs", "sleep", "30")
    try:
        pid1 = inspect(cli, "rs")["State"]["Pid"]
        assert cli("restart", "-t", "1", "rs").returncode == 0
        info = inspect(cli, "rs")
        assert info["State"]["Running"] and info["State"]["Pid"] != pid1
    finally:
        cli("rm", "-f", "rs")


def test_exec_joins_every_namespace(cli: Cli) -> None:
    detach(cli, "ex", "sh", "-c", "echo marker > /tmp/m; exec sleep 30", image="busybox")
    try:
        wait_for(lambda: "marker" in cli("exec", "ex", "cat", "/tmp/m").stdout)
        pid = inspect(cli, "ex")["State"]["Pid"]
        r = cli("exec", "ex", "sh", "-c", "hostname; ps -o pid,comm; "
                "for n in net mnt uts ipc pid cgroup; do readlink /proc/self/ns/$n; done")
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert lines[0] == inspect(cli, "ex")["Config"]["Hostname"]
        assert any(line.split()[:2] == ["1", "sleep"] for line in lines)  # its PID namespace
        for name in ("net", "mnt", "uts", "ipc", "pid", "cgroup"):
            assert os.readlink(f"/proc/{pid}/ns/{name}") in lines
        caps = cli("exec", "ex", "grep", "CapEff", "/proc/self/status").stdout.split()[1]
        assert caps == "00000000a80425fb"
        assert cli("exec", "ex", "sh", "-c", "exit 3").returncode == 3
        assert cli("exec", "ex", "nosuchcmd").returncode == 127
        assert cli("exec", "-u", "nobody", "ex", "id", "-u").stdout.strip() == "65534"
        assert cli("exec", "-w", "/tmp", "-e", "X=1", "ex", "sh", "-c", "pwd; echo $X").stdout.split() == ["/tmp", "1"]
        assert cli("exec", "-i", "ex", "cat", input="piped\n").stdout == "piped\n"
        assert cli("exec", "-d", "ex", "sh", "-c", "sleep 0.2; echo late > /tmp/late").returncode == 0
        wait_for(lambda: cli("exec", "ex", "cat", "/tmp/late").stdout == "late\n")
    finally:
        cli("rm", "-f", "ex")
    r = cli("exec", "ex", "true")
    assert r.returncode != 0 and "ex" in r.stderr


def test_exec_with_a_tty(cli: Cli, root: Path) -> None:
    detach(cli, "et", "sleep", "30")
    try:
        pid, fd = pty.fork()
        if pid == 0:
            os.environ["MINIRUN_ROOT"] = str(root)
            os.execv(MINIRUN, [MINIRUN, "exec", "-it", "et", "sh"])
        buf = b""

        def expect(token: bytes) -> None:
            nonlocal buf
            deadline = time.monotonic() + 10
            while token not in buf:
                assert time.monotonic() < deadline, buf
                if select.select([fd], [], [], 0.5)[0]:
                    try:
                        buf += os.read(fd, 4096)
                    except OSError:
                        break

        expect(b"# ")
        os.write(fd, b"tty; exit 5\r")
        expect(b"/dev/pts/")
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 5
        os.close(fd)
    finally:
        cli("rm", "-f", "et")


def test_init_reaps_zombies_and_forwards_signals(cli: Cli) -> None:
    # sh leaves an orphan that exits: without an init that reaps, it stays a zombie.
    script = "(sleep 0.1 &); sleep 0.5; ps -o stat,comm | grep -c '^Z' || true"
    assert cli("run", "--rm", "--init", "busybox", "sh", "-c", script).stdout.strip() == "0"
    detach(cli, "in", "sleep", "30", opts=("--init",))
    try:
        t = time.monotonic()
        assert cli("stop", "in").returncode == 0
        assert time.monotonic() - t < 5  # SIGTERM reached sleep through the init
        assert inspect(cli, "in")["State"]["ExitCode"] == 143
    finally:
        cli("rm", "-f", "in")


def _mounts() -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return sorted(" ".join(line.split()[3:5]) for line in f)


def test_crash_safety_when_minirun_or_its_shim_is_killed(cli: Cli, root: Path) -> None:
    mounts = _mounts()
    # a detached container whose shim is SIGKILLed: the container goes with it
    detach(cli, "cr1", "sleep", "30")
    info = inspect(cli, "cr1")
    with open(f"/proc/{info['State']['Pid']}/stat") as f:
        shim = int(f.read().rsplit(")", 1)[1].split()[1])
    os.kill(shim, signal.SIGKILL)
    wait_for(lambda: not inspect(cli, "cr1")["State"]["Running"])
    assert "Exited (137)" in cli("ps", "-a").stdout
    assert cli("stop", "cr1").returncode == 0 and cli("rm", "cr1").returncode == 0
    # a foreground container whose minirun is SIGKILLed
    p = subprocess.Popen([MINIRUN, "run", "--name", "cr2", "busybox", "sleep", "30"], env=_env(root))
    wait_for(lambda: cli("inspect", "cr2").returncode == 0 and inspect(cli, "cr2")["State"]["Running"])
    p.kill()
    p.wait()
    wait_for(lambda: not inspect(cli, "cr2")["State"]["Running"])
    assert cli("rm", "cr2").returncode == 0
    # "reboot": a record that says running, whose processes are all gone
    detach(cli, "cr3", "sleep", "30")
    rec_path = root / "containers" / inspect(cli, "cr3")["Id"] / "container.json"
    pid = inspect(cli, "cr3")["State"]["Pid"]
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not os.path.exists(f"/proc/{pid}"))
    rec = json.loads(rec_path.read_text())
    rec["status"], rec["pid_start"] = "running", "1"  # as if the machine went down under it
    (root / "containers" / rec["id"] / "exit").unlink(missing_ok=True)
    rec_path.write_text(json.dumps(rec))
    assert inspect(cli, "cr3")["State"]["Status"] == "exited"
    assert cli("rm", "cr3").returncode == 0
    assert _mounts() == mounts
    wait_for(lambda: not shim_pids())


def test_names_are_unique_under_a_race(cli: Cli) -> None:
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: cli("run", "-d", "--name", "race", "busybox", "sleep", "30"), range(4)))
    try:
        assert sum(r.returncode == 0 for r in results) == 1
        assert all("already in use" in r.stderr for r in results if r.returncode != 0)
    finally:
        cli("rm", "-f", "race")


@pytest.mark.slow
def test_fifty_concurrent_detached_runs(cli: Cli, root: Path) -> None:
    mounts = _mounts()
    before = set(os.listdir(root / "containers"))
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: cli("run", "-d", "--name", f"c{i}", "busybox", "sleep", "60"), range(50)))
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results if r.returncode]
    ids = [r.stdout.strip() for r in results]
    assert len(set(ids)) == 50
    running = [line for line in cli("ps").stdout.splitlines()[1:] if line.split()[-1].startswith("c")]
    assert len(running) == 50
    assert cli("rm", "-f", *ids, timeout=120).returncode == 0
    assert set(os.listdir(root / "containers")) == before
    assert _mounts() == mounts
    wait_for(lambda: not shim_pids())


# -- resources (cgroups) ---------------------------------------------------------------------


def _cgroup_file(cid: str, v1: str, v2: str) -> Path:
    from minirun.runtime import cgroups

    if cgroups.version() == 2:
        return Path("/sys/fs/cgroup/minirun") / cid / v2
    controller, _, name = v1.partition("/")
    return Path("/sys/fs/cgroup") / controller / "minirun" / cid / name


def test_oom_kill_is_reported(cli: Cli) -> None:
    r = cli("run", "--name", "oom", "--memory", "32m", "busybox", "sh", "-c",
            'x=$(head -c 200000000 /dev/zero | tr "\\0" a); echo survived')
    try:
        assert r.returncode == 137 and "survived" not in r.stdout
        info = inspect(cli, "oom")
        assert info["State"]["OOMKilled"] is True and info["State"]["ExitCode"] == 137
        assert info["HostConfig"]["Memory"] == 32 << 20
    finally:
        cli("rm", "oom")
    ok = inspect_after(cli, "nooom", "--memory", "64m")
    assert ok["State"]["OOMKilled"] is False


def inspect_after(cli: Cli, name: str, *opts: str) -> dict:
    assert cli("run", "--name", name, *opts, "busybox", "true").returncode == 0
    try:
        return inspect(cli, name)
    finally:
        cli("rm", name)


def test_pids_limit_stops_a_fork_loop(cli: Cli) -> None:
    # Bounded: at most 60 forks; with --pids-limit 20 the shell (1) plus 19 sleeps fill it,
    # the next fork fails and the shell gives up.
    script = "i=0; while [ $i -lt 60 ]; do sleep 30 & i=$((i+1)); echo $i; done"
    r = cli("run", "--rm", "--pids-limit", "20", "busybox", "sh", "-c", script, timeout=60)
    assert r.returncode != 0 and "fork" in r.stderr
    assert int(r.stdout.split()[-1]) == 19


def test_cpus_sets_the_quota_and_stats_reads_it_back(cli: Cli) -> None:
    cid = detach(cli, "cpu", "sh", "-c", "while true; do :; done", opts=("--cpus", "0.5", "--memory", "64m"))
    try:
        from minirun.runtime import cgroups

        if cgroups.version() == 2:
            assert _cgroup_file(cid, "", "cpu.max").read_text().split() == ["50000", "100000"]
        else:
            assert _cgroup_file(cid, "cpu/cpu.cfs_quota_us", "").read_text().strip() == "50000"
            assert _cgroup_file(cid, "cpu/cpu.cfs_period_us", "").read_text().strip() == "100000"
        r = cli("stats", "--no-stream", "cpu")
        header, row = r.stdout.splitlines()[:2]
        assert header.split()[:4] == ["CONTAINER", "ID", "NAME", "CPU"]
        cpu = float(row.split()[2].rstrip("%"))
        assert 20 < cpu < 70  # about half a CPU
        assert "/ 64MiB" in row
        assert inspect(cli, "cpu")["HostConfig"]["NanoCpus"] == 500_000_000
    finally:
        cli("rm", "-f", "cpu")
    assert not _cgroup_file(cid, "memory/", "").exists()  # the cgroup went with rm


def test_bad_resource_flags_are_clear_errors(cli: Cli) -> None:
    r = cli("run", "--rm", "--memory", "1k", "busybox", "true")
    assert r.returncode == 125 and "Minimum memory limit" in r.stderr
    r = cli("run", "--rm", "--cpus", "lots", "busybox", "true")
    assert r.returncode == 125 and "Traceback" not in r.stderr


# -- regressions found in review ---------------------------------------------------------------


def test_detached_rm_removes_the_container_when_it_exits(cli: Cli, root: Path) -> None:
    before = set(os.listdir(root / "containers"))
    r = cli("run", "-d", "--rm", "--network", "none", "busybox", "true")
    assert r.returncode == 0, r.stderr
    wait_for(lambda: set(os.listdir(root / "containers")) == before)


def test_wait_on_a_foreground_container_gets_its_real_status(cli: Cli, root: Path) -> None:
    p = subprocess.Popen([MINIRUN, "run", "--name", "fgw", "--network", "none", "busybox", "sh", "-c",
                          "sleep 0.5; exit 3"], env=_env(root))
    try:
        wait_for(lambda: cli("inspect", "fgw").returncode == 0)
        assert cli("wait", "fgw").stdout.strip() == "3"
        assert p.wait(10) == 3
        assert "Exited (3)" in cli("ps", "-a").stdout
    finally:
        cli("rm", "-f", "fgw")


def test_a_failed_detached_start_leaves_no_cgroup(cli: Cli, tmp_path: Path) -> None:
    # a missing -v source is created (as Docker does); a dangling symlink cannot be
    dangling = tmp_path / "dangling"
    os.symlink(tmp_path / "nowhere", dangling)
    r = cli("run", "-d", "--name", "bad", "--network", "none", "-v", f"{dangling}:/x", "busybox", "true")
    assert r.returncode == 125 and str(dangling) in r.stderr
    cid = inspect(cli, "bad")["Id"]
    assert cli("rm", "bad").returncode == 0
    assert not _cgroup_file(cid, "memory/", "").exists()


def test_rm_container_whose_minirun_was_killed_is_removed_by_the_next_command(
        cli: Cli, root: Path) -> None:  # fmt: skip
    """`run --rm` killed -9: the container dies with it (pdeathsig); nobody is left to
    remove it, so the next command that looks at it does, as Docker's daemon would."""
    p = subprocess.Popen([MINIRUN, "run", "--rm", "--name", "rmk", "--network", "none",
                          "busybox", "sleep", "30"], env=_env(root))  # fmt: skip
    wait_for(lambda: cli("inspect", "rmk").returncode == 0 and inspect(cli, "rmk")["State"]["Running"])
    cid = inspect(cli, "rmk")["Id"]
    p.kill()
    p.wait()
    wait_for(lambda: "rmk" not in cli("ps", "-a").stdout)
    assert not (root / "containers" / cid).exists()
    assert not (root / "names" / "rmk").exists()
    assert cli("run", "--rm", "--name", "rmk", "--network", "none", "busybox", "true").returncode == 0
