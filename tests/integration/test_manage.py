"""Everyday verbs (issue 14), through the real CLI as root: rename, pause/unpause, top,
load of compressed archives, -v making a missing host dir, --platform of a local image."""

from __future__ import annotations

import gzip
import json
import os
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import CONTAINER_TESTS, MINIRUN, RUN, Cli, loaded_root, store_snapshot, wait_for

pytestmark = CONTAINER_TESTS


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory, built_images: Path) -> Iterator[Path]:
    yield from loaded_root(tmp_path_factory, built_images)


def detach(mr: Cli, name: str, *cmd: str, opts: tuple[str, ...] = ()) -> str:
    r = mr("run", "-d", "--name", name, *RUN, *opts, "busybox", *cmd)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def inspect(mr: Cli, name: str) -> dict:
    r = mr("inspect", "--type", "container", name)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)[0]


def row_of(mr: Cli, name: str, *flags: str) -> str:
    return next((ln for ln in mr("ps", *flags).stdout.splitlines() if ln.endswith(f" {name}")), "")


def one_error(r: subprocess.CompletedProcess[str], code: int = 1) -> str:
    assert r.returncode == code, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.stderr
    return lines[0]


def settled(root: Path, cid: str) -> None:
    """Wait until the shim of the container's last run is gone: its _cleanup records the
    exit after `stop` returns, and a `start` before that races it (not this issue's)."""
    rec = json.loads((root / "containers" / cid / "container.json").read_text())
    sup = rec.get("supervisor_pid") or 0
    wait_for(lambda: not sup or not os.path.exists(f"/proc/{sup}")
             or open(f"/proc/{sup}/stat").read().rpartition(") ")[2].startswith("Z"))


# -- rename --------------------------------------------------------------------------------


def test_rename_running_then_stopped_and_the_old_name_is_free(mr: Cli, root: Path) -> None:
    cid = detach(mr, "rn-old", "sleep", "30")
    try:
        r = mr("rename", "rn-old", "rn-new")
        assert r.returncode == 0 and r.stdout == "" and r.stderr == "", r
        assert row_of(mr, "rn-new") and not row_of(mr, "rn-old")
        assert inspect(mr, "rn-new")["Name"] == "/rn-new"
        assert inspect(mr, cid)["State"]["Running"]
        assert "no such container: rn-old" in one_error(mr("inspect", "--type", "container", "rn-old"))
        assert os.readlink(root / "names" / "rn-new") == cid
        assert not os.path.lexists(root / "names" / "rn-old")
        # the old name can be taken again at once, by a new container
        assert mr("run", "--rm", "--name", "rn-old", *RUN, "busybox", "true").returncode == 0
        # a stopped container renames the same way, and starts under its new name
        assert mr("stop", "-t", "0", "rn-new").returncode == 0
        settled(root, cid)
        assert mr("rename", "/rn-new", "rn-stopped").returncode == 0  # Docker's "/name" form
        assert inspect(mr, "rn-stopped")["State"]["Status"] == "exited"
        assert mr("start", "rn-stopped").returncode == 0
        assert inspect(mr, "rn-stopped")["State"]["Running"]
        assert mr("inspect", "--type", "container", "rn-new").returncode == 1
    finally:
        mr("rm", "-f", "rn-stopped", "rn-new", "rn-old")


def test_rename_refuses_a_taken_same_or_invalid_name(mr: Cli, root: Path) -> None:
    a = detach(mr, "rn-a", "sleep", "30")
    b = detach(mr, "rn-b", "sleep", "30")
    try:
        err = one_error(mr("rename", "rn-a", "rn-b"))
        assert '"/rn-b" is already in use by container ' + b[:12] in err
        assert "same name" in one_error(mr("rename", "rn-a", "rn-a"))
        assert "invalid container name" in one_error(mr("rename", "rn-a", "bad name"))
        assert "no such container: nope" in one_error(mr("rename", "nope", "rn-c"))
        # nothing moved
        assert os.readlink(root / "names" / "rn-a") == a
        assert os.readlink(root / "names" / "rn-b") == b
        assert not os.path.lexists(root / "names" / "rn-c")
        assert inspect(mr, "rn-a")["Id"] == a
    finally:
        mr("rm", "-f", "rn-a", "rn-b")


# -- pause / unpause -----------------------------------------------------------------------

COUNTER = "i=0; while :; do i=$((i+1)); echo $i > /out/n; sleep 0.05; done"


def test_pause_stops_the_processes_and_unpause_resumes_them(mr: Cli, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    detach(mr, "pz", "sh", "-c", COUNTER, opts=("-v", f"{out}:/out"))
    counter = out / "n"

    def count() -> int:
        try:
            return int(counter.read_text() or 0)
        except (OSError, ValueError):
            return 0

    try:
        wait_for(lambda: count() > 3)
        r = mr("pause", "pz")
        assert r.returncode == 0 and r.stdout == "pz\n", r
        frozen = count()
        time.sleep(0.6)
        assert count() == frozen, "it went on counting while paused"
        status = next(json.loads(ln)["Status"] for ln in mr("ps", "--format", "json").stdout.splitlines()
                      if json.loads(ln)["Names"] == "pz")  # shown by plain ps: still running
        assert status.startswith("Up ") and status.endswith(" (Paused)"), status
        assert "(Paused)" in row_of(mr, "pz")
        state = inspect(mr, "pz")["State"]
        assert state["Status"] == "paused" and state["Paused"] is True and state["Running"] is True
        assert "container pz is already paused" in one_error(mr("pause", "pz"))
        r = mr("unpause", "pz")
        assert r.returncode == 0 and r.stdout == "pz\n", r
        wait_for(lambda: count() > frozen + 3)
        state = inspect(mr, "pz")["State"]
        assert state["Status"] == "running" and state["Paused"] is False
        assert "(Paused)" not in row_of(mr, "pz")
        assert "container pz is not paused" in one_error(mr("unpause", "pz"))
    finally:
        mr("rm", "-f", "pz")


def test_pause_several_names_reports_each_and_refuses_a_stopped_one(mr: Cli) -> None:
    detach(mr, "pa", "sleep", "30")
    detach(mr, "pb", "sleep", "30")
    assert mr("run", "--name", "pdead", *RUN, "busybox", "true").returncode == 0
    try:
        r = mr("pause", "pa", "pdead", "nope", "pb")
        assert r.returncode == 1
        assert r.stdout.split() == ["pa", "pb"]
        errs = r.stderr.strip().splitlines()
        assert errs == ["Error: container pdead is not running", "Error: no such container: nope"]
        assert inspect(mr, "pa")["State"]["Paused"] and inspect(mr, "pb")["State"]["Paused"]
        r = mr("unpause", "pa", "pb")
        assert r.returncode == 0 and r.stdout.split() == ["pa", "pb"]
    finally:
        mr("rm", "-f", "pa", "pb", "pdead")


def test_stop_and_kill_of_a_paused_container(mr: Cli) -> None:
    # a TERM handler: exit status 3 shows stop's signal itself was delivered (after the
    # thaw), not the SIGKILL of the timeout
    detach(mr, "ps-stop", "sh", "-c", "trap 'exit 3' TERM; while :; do sleep 0.05; done")
    detach(mr, "ps-kill", "sleep", "30")
    try:
        assert mr("pause", "ps-stop", "ps-kill").returncode == 0
        t = time.monotonic()
        r = mr("stop", "-t", "20", "ps-stop")
        assert r.returncode == 0, r.stderr
        assert time.monotonic() - t < 10, "stop waited for its timeout"
        state = inspect(mr, "ps-stop")["State"]
        assert state["Status"] == "exited" and state["ExitCode"] == 3 and not state["Paused"]
        assert mr("kill", "ps-kill").returncode == 0
        wait_for(lambda: inspect(mr, "ps-kill")["State"]["Status"] == "exited")
        assert inspect(mr, "ps-kill")["State"]["ExitCode"] == 137
        assert "Exited (137)" in row_of(mr, "ps-kill", "-a")
    finally:
        mr("rm", "-f", "ps-stop", "ps-kill")


def test_rm_force_of_a_paused_container(mr: Cli) -> None:
    detach(mr, "ps-rm", "sleep", "30")
    assert mr("pause", "ps-rm").returncode == 0
    r = mr("rm", "-f", "ps-rm")
    assert r.returncode == 0, r.stderr
    assert not row_of(mr, "ps-rm", "-a")


# -- top -----------------------------------------------------------------------------------


def test_top_shows_only_the_containers_processes(mr: Cli) -> None:
    host = subprocess.Popen(["sleep", "31338"])  # a host process that is not the container's
    cid = detach(mr, "tp", "sh", "-c", "sleep 31337 & wait")
    try:
        pid = inspect(mr, "tp")["State"]["Pid"]
        wait_for(lambda: "sleep 31337" in mr("top", "tp").stdout)
        r = mr("top", "tp")
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert lines[0].split() == ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
        assert lines[0].startswith("UID" + " " * 17 + "PID")  # docker's 20-wide columns
        rows = [ln.split(None, 7) for ln in lines[1:]]
        assert {int(r[1]) for r in rows} >= {pid}
        assert len(rows) == 2, lines  # the shell and its sleep: nothing else of the host
        assert any(r[7] == "sleep 31337" for r in rows)
        assert "31338" not in r.stdout and str(os.getpid()) not in [x[1] for x in rows]
        # ps options are passed through, the PID column found wherever it is
        r = mr("top", "tp", "-o", "comm,pid")
        assert r.returncode == 0, r.stderr
        out = [ln.split() for ln in r.stdout.splitlines()]
        assert out[0] == ["COMMAND", "PID"] and sorted(x[0] for x in out[1:]) == ["sh", "sleep"]
        # options -q cannot go with (a forest) still work: ps is run again without it
        r = mr("top", "tp", "axf")
        assert r.returncode == 0 and "sleep 31337" in r.stdout, r.stderr
        assert "is not allowed" in one_error(mr("top", "tp", "-o", "user=PID"))
        # paused processes are still listed (Docker too)
        assert mr("pause", "tp").returncode == 0
        assert "sleep 31337" in mr("top", "tp").stdout
        assert mr("unpause", "tp").returncode == 0
    finally:
        host.kill()
        host.wait()
        mr("rm", "-f", cid)
    assert mr("run", "--name", "tp-dead", *RUN, "busybox", "true").returncode == 0
    try:
        assert "container tp-dead is not running" in one_error(mr("top", "tp-dead"))
    finally:
        mr("rm", "-f", "tp-dead")


# -- load of compressed archives -------------------------------------------------------------


@pytest.fixture(scope="module")
def saved(root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """busybox saved with `minirun save`: a plain tar."""
    out = tmp_path_factory.mktemp("saved") / "busybox.tar"
    r = subprocess.run([str(MINIRUN), "save", "-o", str(out), "busybox"],
                       env={**os.environ, "MINIRUN_ROOT": str(root)}, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return out


def _gzip(data: bytes) -> bytes:
    half = len(data) // 2  # two members, as `cat a.gz b.gz` makes: one stream to gunzip
    return gzip.compress(data[:half]) + gzip.compress(data[half:])


def _zstd(data: bytes) -> bytes:
    import zstandard

    c = zstandard.ZstdCompressor(write_checksum=True)
    half = len(data) // 2  # two frames
    return c.compress(data[:half]) + c.compress(data[half:])


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_load_compressed_archive_file_and_stdin(kind: str, saved: Path, cli: Cli,
                                                tmp_path: Path, store_root: Path) -> None:
    data = saved.read_bytes()
    packed = tmp_path / f"busybox.tar.{kind}"
    packed.write_bytes(_gzip(data) if kind == "gzip" else _zstd(data))
    r = cli(["load", "-i", str(packed)])
    assert r.returncode == 0, r.stderr
    assert "Loaded image: busybox:latest" in r.stdout
    assert cli(["run", "--rm", *RUN, "busybox", "true"]).returncode == 0
    assert cli(["rmi", "busybox"]).returncode == 0
    r = cli(["load"], input=packed.read_bytes())  # the same, on stdin
    assert r.returncode == 0, r.stderr
    assert "Loaded image: busybox:latest" in r.stdout
    assert not list((store_root / "tmp").iterdir())  # the decompressed spool is gone


@pytest.mark.skipif(subprocess.run(["sh", "-c", "command -v gzip && command -v zstd"],
                                   capture_output=True).returncode != 0, reason="gzip/zstd tools")
def test_load_of_docker_save_piped_through_the_tools(saved: Path, cli: Cli, tmp_path: Path) -> None:
    for tool in ("gzip", "zstd"):
        packed = subprocess.run([tool, "-c", str(saved)], capture_output=True, check=True).stdout
        r = cli(["load", "-q"], input=packed)
        assert r.returncode == 0 and "Loaded image: busybox:latest" in r.stdout, r.stderr
        assert cli(["rmi", "busybox"]).returncode == 0


@pytest.mark.parametrize("how", ["corrupt-gzip", "truncated-gzip", "truncated-zstd", "gzip-of-junk"])
def test_load_bad_compressed_archive_is_one_line_and_writes_nothing(
        how: str, saved: Path, cli: Cli, tmp_path: Path, store_root: Path,
        built_images: Path) -> None:
    assert cli(["load", "-q", "-i", str(built_images / "busybox-extra")]).returncode == 0
    data = saved.read_bytes()
    if how == "corrupt-gzip":
        packed = bytearray(gzip.compress(data))
        packed[200:2200] = os.urandom(2000)
        blob = bytes(packed)
    elif how == "truncated-gzip":
        blob = gzip.compress(data)[:-5000]
    elif how == "truncated-zstd":
        blob = _zstd(data)[:-5000]
    else:
        blob = gzip.compress(b"not a tar at all\n" * 100)
    f = tmp_path / "bad.tar.gz"
    f.write_bytes(blob)
    before = store_snapshot(store_root)
    for r in (cli(["load", "-i", str(f)]), cli(["load"], input=blob)):
        err = one_error(r)
        assert ("gzip" in err or "zstd" in err or "tar" in err), err
        assert store_snapshot(store_root) == before
    assert "busybox:latest" not in cli(["images"]).stdout


# -- -v with a missing host dir ---------------------------------------------------------------


def test_volume_with_a_missing_host_dir_creates_it(mr: Cli, root: Path, tmp_path: Path) -> None:
    src = tmp_path / "not" / "yet" / "there"
    old = os.umask(0o077)  # the dirs are 0755 whatever the umask
    try:
        r = mr("run", "--rm", *RUN, "-v", f"{src}:/d", "busybox", "sh", "-c", "echo hi > /d/f")
    finally:
        os.umask(old)
    assert r.returncode == 0, r.stderr
    assert (src / "f").read_text() == "hi\n"
    for d in (tmp_path / "not", tmp_path / "not" / "yet", src):
        st = d.stat()
        assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o755 and st.st_uid == 0
    # made again when a stopped container starts and its dir is gone (Docker too)
    cid = mr("run", "-d", *RUN, "-v", f"{tmp_path / 'again'}:/d", "busybox", "true").stdout.strip()
    try:
        assert mr("wait", cid).stdout.strip() == "0"
        settled(root, cid)
        (tmp_path / "again").rmdir()
        assert mr("start", cid).returncode == 0
        assert (tmp_path / "again").is_dir()
    finally:
        mr("rm", "-f", cid)
    # a source that cannot be made: one line, exit 125, no container left behind
    (tmp_path / "file").write_text("x")
    before = mr("ps", "-aq").stdout
    r = mr("run", "--rm", *RUN, "-v", f"{tmp_path / 'file' / 'sub'}:/d", "busybox", "true")
    assert "cannot create it" in one_error(r, 125)
    assert mr("ps", "-aq").stdout == before


# -- --platform of a local image ---------------------------------------------------------------


def test_run_platform_mismatch_names_both(mr: Cli, root: Path) -> None:
    from minirun.image.oci import host_platform

    host = f"linux/{host_platform().architecture}"
    other = "windows/amd64"
    err = one_error(mr("run", "--rm", *RUN, "--platform", other, "busybox", "true"), 125)
    assert err == f"Error: image busybox is {host}, not {other}"
    # --pull missing tries to pull that platform, as Docker does; when that fails, both
    r = subprocess.run([str(MINIRUN), "run", "--rm", "--network", "none", "--platform", other,
                        "busybox", "true"], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "MINIRUN_ROOT": str(root),
                            "MINIRUN_REGISTRY_MIRROR": "http://127.0.0.1:1"})
    assert r.returncode == 125
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(f"Error: image busybox is {host}, not {other}; pulling {other} failed: "), last
    # the image's own platform is fine, offline
    assert mr("run", "--rm", *RUN, "--platform", host, "busybox", "true").returncode == 0
    assert "invalid platform" in one_error(mr("run", "--rm", *RUN, "--platform", "nope", "busybox"), 125)
