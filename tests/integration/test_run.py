"""`minirun run` and friends through the real CLI, as root, with real containers."""

from __future__ import annotations

import hashlib
import json
import os
import pty
import select
import shutil
import signal
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from minirun.image import build as b
from tests.conftest import store_cli

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: real containers")

REPO = Path(__file__).resolve().parents[2]
MINIRUN = str(Path(sys.executable).parent / "minirun")
Cli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A store with the three offline images, shared by this module's tests (they only
    create containers; each test removes its own)."""
    sys.path.insert(0, str(REPO))
    from images.build import build_all

    store = tmp_path_factory.mktemp("store")
    layouts = tmp_path_factory.mktemp("layouts")
    for p in build_all(layouts):
        subprocess.run([MINIRUN, "load", "-q", "-i", str(p)], check=True, env=_env(store))
    yield store
    subprocess.run([MINIRUN, "rm", "-f", *_all_ids(store)], env=_env(store), capture_output=True)


def _env(store: Path) -> dict[str, str]:
    return {**os.environ, "MINIRUN_ROOT": str(store)}


def _all_ids(store: Path) -> list[str]:
    out = subprocess.run([MINIRUN, "ps", "-aq"], env=_env(store), capture_output=True, text=True)
    return out.stdout.split() or ["-"]


@pytest.fixture
def cli(root: Path) -> Cli:
    return store_cli(_env(root))


def sh(cli: Cli, script: str, *opts: str, image: str = "busybox") -> subprocess.CompletedProcess[str]:
    return cli("run", "--rm", *opts, image, "sh", "-c", script)


def tree_digest(path: Path) -> str:
    """Content, mode, owner and link target of every entry: 'byte-identical' made checkable."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            h.update(f"{os.path.relpath(p, path)} {st.st_mode} {st.st_uid} {st.st_gid} {st.st_rdev}".encode())
            if os.path.islink(p):
                h.update(os.readlink(p).encode())
            elif os.path.isfile(p):
                with open(p, "rb") as f:
                    h.update(f.read())
            for attr in os.listxattr(p, follow_symlinks=False):
                h.update(attr.encode() + os.getxattr(p, attr, follow_symlinks=False))
    return h.hexdigest()


# -- the seed's point: the container layer holds exactly what the container changed --


def test_diff_shows_exactly_what_the_container_changed(cli: Cli, root: Path) -> None:
    layers = sorted((root / "layers").glob("*/diff"))
    before = {p: tree_digest(p) for p in layers}
    r = cli("run", "--name", "w", "busybox", "sh", "-c", "echo x > /etc/motd; rm /bin/ls; mkdir /data")
    assert r.returncode == 0, r.stderr
    try:
        d = cli("diff", "w")
        assert d.returncode == 0, d.stderr
        assert d.stdout.splitlines() == ["C /bin", "D /bin/ls", "A /data", "C /etc", "A /etc/motd"]
        assert {p: tree_digest(p) for p in layers} == before  # image layers untouched
        again = sh(cli, "ls /bin/ls && cat /etc/motd 2>&1 || true")
        assert "/bin/ls" in again.stdout and "x" not in again.stdout.split("\n")[1:]
        info = json.loads(cli("inspect", "w").stdout)[0]
        modes = [(layer["Mode"], layer["DiffID"]) for layer in info["Layers"]]
        assert modes[-1] == ("rw", None)
        assert all(m == "ro" for m, _ in modes[:-1])
        assert modes[0][1] == json.loads(cli("inspect", "busybox").stdout)[0]["RootFS"]["Layers"][0]
        assert info["Layers"][-1]["Dir"].endswith("/upper")
    finally:
        cli("rm", "w")


def test_diff_of_opaque_and_whiteouts_in_the_image(cli: Cli) -> None:
    r = sh(cli, "ls /home; ls /etc/issue /usr/share/doc 2>&1; true", image="busybox-edit")
    assert r.stdout.split()[0] == "app"
    assert "README" not in r.stdout and r.stdout.count("No such file") == 2


# -- exit status ------------------------------------------------------------------------


@pytest.mark.parametrize("script,code", [("exit 0", 0), ("exit 3", 3), ("nosuchcmd", 127)])
def test_exit_status_is_the_containers(cli: Cli, script: str, code: int) -> None:
    assert sh(cli, script).returncode == code


def test_command_not_found_and_not_executable(cli: Cli) -> None:
    r = cli("run", "--rm", "busybox", "/no/such/binary")
    assert r.returncode == 127 and "no/such/binary" in r.stderr
    r = cli("run", "--rm", "busybox", "/etc/passwd")
    assert r.returncode == 126


def test_minirun_failure_is_125_with_one_line(cli: Cli) -> None:
    r = cli("run", "--rm", "--pull", "never", "nosuchimage")  # never: no registry is asked
    assert r.returncode == 125
    assert r.stderr.startswith("Error:") and "nosuchimage" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = cli("run", "--rm", "--bogus-flag", "busybox", "true")
    assert r.returncode == 125 and "Traceback" not in r.stderr
    r = cli("run", "--rm", "-v", "rel/ative:/x", "busybox", "true")  # not a path, nor a volume name
    assert r.returncode == 125 and "absolute" in r.stderr


def _wait_running(cli: Cli, name: str) -> dict:
    for _ in range(200):
        r = cli("inspect", name)
        if r.returncode == 0:
            info = json.loads(r.stdout)[0]
            if info["State"]["Running"]:
                return info
        time.sleep(0.05)
    raise AssertionError(f"{name} never ran")


def _popen(root: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([MINIRUN, *args], env=_env(root), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_killed_by_signal_is_128_plus_n(cli: Cli, root: Path) -> None:
    p = _popen(root, "run", "--rm", "--name", "k9", "busybox", "sleep", "30")
    info = _wait_running(cli, "k9")
    os.kill(info["State"]["Pid"], signal.SIGKILL)
    assert p.wait(10) == 137


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1])
def test_signals_to_minirun_reach_the_container(cli: Cli, root: Path, sig: signal.Signals) -> None:
    name = f"sig{int(sig)}"
    p = _popen(root, "run", "--rm", "--name", name, "busybox", "sh", "-c",
               f"trap 'exit 42' {sig.name[3:]}; echo ready; while true; do sleep 0.05; done")
    _wait_running(cli, name)
    assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    p.send_signal(sig)
    assert p.wait(10) == 42


# -- image config and flags -------------------------------------------------------------


def test_image_config_is_honoured(cli: Cli) -> None:
    r = cli("run", "--rm", "busybox-extra")  # Cmd ["hello"], WorkingDir /srv/www, Env GREETING
    assert r.returncode == 0 and r.stdout.startswith("hello from ")
    r = sh(cli, 'pwd; echo "$GREETING"; echo "$HOME"', image="busybox-extra")
    assert r.stdout.split() == ["/srv/www", "hello", "/root"]


def test_env_workdir_user_entrypoint_precedence(cli: Cli, root: Path, tmp_path: Path) -> None:
    r = sh(cli, 'echo "$GREETING $A"', "-e", "GREETING=bye", "-e", "A=1", image="busybox-extra")
    assert r.stdout.strip() == "bye 1"
    envfile = tmp_path / "env"
    envfile.write_text("# comment\nB=two words\nFROMHOST\n")
    r = subprocess.run([MINIRUN, "run", "--rm", "--env-file", str(envfile), "busybox", "sh", "-c",
                        'echo "$B|$FROMHOST"'], env={**_env(root), "FROMHOST": "yes"},
                       capture_output=True, text=True)
    assert r.stdout.strip() == "two words|yes", r.stderr
    assert sh(cli, "pwd", "-w", "/new/dir").stdout.strip() == "/new/dir"
    assert sh(cli, "id -u; id -g", "-u", "nobody").stdout.split() == ["65534", "65534"]
    assert sh(cli, "id -u; id -g", "-u", "33:100").stdout.split() == ["33", "100"]
    assert sh(cli, "id -un; id -gn", "-u", "www-data:users").stdout.split() == ["www-data", "users"]
    r = cli("run", "--rm", "-u", "nosuchuser", "busybox", "true")
    assert r.returncode == 125 and "nosuchuser" in r.stderr
    r = cli("run", "--rm", "--entrypoint", "echo", "busybox-extra", "via", "entrypoint")
    assert r.stdout.strip() == "via entrypoint"  # --entrypoint drops the image's Cmd
    r = cli("run", "--rm", "--entrypoint", "", "busybox", "echo", "plain")
    assert r.stdout.strip() == "plain"
    assert cli("run", "--rm", "--hostname", "box1", "busybox", "hostname").stdout.strip() == "box1"


def test_volumes_rw_ro_tmpfs_readonly(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("from host\n")
    r = sh(cli, "cat /v/in.txt; echo out > /v/out.txt", "-v", f"{tmp_path}:/v")
    assert r.returncode == 0 and r.stdout == "from host\n"
    assert (tmp_path / "out.txt").read_text() == "out\n"
    r = sh(cli, "echo no > /v/x", "-v", f"{tmp_path}:/v:ro")
    assert r.returncode != 0 and not (tmp_path / "x").exists()
    # read-only all the way down: a mount under the source is read-only too (recursive)
    (tmp_path / "sub").mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "t", str(tmp_path / "sub")], check=True)
    try:
        r = sh(cli, "touch /v/sub/f", "-v", f"{tmp_path}:/v:ro")
        assert r.returncode != 0 and "Read-only" in r.stderr and not (tmp_path / "sub" / "f").exists()
    finally:
        subprocess.run(["umount", str(tmp_path / "sub")], check=True)
    r = sh(cli, "touch /t/a && grep ' /t ' /proc/mounts", "--tmpfs", "/t")
    assert r.returncode == 0 and "tmpfs" in r.stdout
    r = sh(cli, "touch /etc/x", "--read-only")
    assert r.returncode != 0 and "Read-only" in r.stderr
    assert sh(cli, "touch /t/ok", "--read-only", "--tmpfs", "/t").returncode == 0


def test_chroot_mode_runs(cli: Cli) -> None:
    r = sh(cli, "echo $$; ls /", "--chroot")
    assert r.returncode == 0 and r.stdout.split()[0] == "1" and "bin" in r.stdout


def test_capabilities_flags(cli: Cli) -> None:
    def capeff(*opts: str) -> str:
        return sh(cli, "grep CapEff /proc/self/status", *opts).stdout.split()[1]

    assert capeff() == "00000000a80425fb"
    assert capeff("--cap-drop", "ALL") == "0000000000000000"
    assert capeff("--cap-drop", "ALL", "--cap-add", "NET_ADMIN") == "0000000000001000"
    assert capeff("--cap-drop", "chown") == "00000000a80425fa"
    r = sh(cli, "grep NoNewPrivs /proc/self/status", "--security-opt", "no-new-privileges")
    assert r.stdout.split()[1] == "1"
    assert cli("run", "--rm", "--cap-add", "BOGUS", "busybox", "true").returncode == 125


def test_isolation_from_inside(cli: Cli) -> None:
    r = sh(cli, "echo $$; ps -o pid | tail -n +2 | wc -l; cat /proc/self/mountinfo; "
                "echo masked=$(cat /proc/keys /proc/timer_list 2>/dev/null | wc -c); echo 1 > /proc/sys/kernel/domainname; "
                "echo nsys=$?; mount -t tmpfs t /mnt; echo mnt=$?; readlink /proc/1/exe",
           "--hostname", "iso")
    lines = r.stdout.splitlines()
    assert lines[0] == "1"  # the command is PID 1 of its own PID namespace
    assert int(lines[1]) <= 4  # sh, ps, tail, wc: only the container's own processes
    points = {line.split()[4] for line in lines if len(line.split()) > 6 and " - " in line}
    allowed = ("/", "/proc", "/dev", "/sys", "/etc/hosts", "/etc/hostname", "/etc/resolv.conf")
    # Only the container's own mounts: no host mount point is visible.
    assert points and all(p in allowed or p.startswith(("/proc/", "/dev/", "/sys/")) for p in points), points
    assert "masked=0" in lines  # /proc/keys, /proc/timer_list read empty (masked)
    assert "nsys=1" in lines and ("mnt=1" in lines or "mnt=255" in lines)
    assert lines[-1] == "/bin/busybox"  # not the host's python


def test_pipes_without_a_tty(cli: Cli) -> None:
    assert cli("run", "--rm", "-i", "busybox", "cat", input="hi\n").stdout == "hi\n"
    # Without -i the container's stdin is empty, as with Docker.
    assert cli("run", "--rm", "busybox", "cat", input="hi\n").stdout == ""


def test_interactive_shell_through_a_real_pty(root: Path) -> None:
    pid, fd = pty.fork()
    if pid == 0:
        os.environ["MINIRUN_ROOT"] = str(root)
        os.execv(MINIRUN, [MINIRUN, "run", "--rm", "-it", "busybox", "sh"])
    before = termios.tcgetattr(fd)
    buf = b""

    def expect(token: bytes, timeout: float = 10) -> None:
        nonlocal buf
        deadline = time.monotonic() + timeout
        while token not in buf:
            left = deadline - time.monotonic()
            assert left > 0, f"timed out waiting for {token!r}; got {buf!r}"
            if select.select([fd], [], [], left)[0]:
                try:
                    buf += os.read(fd, 4096)
                except OSError:
                    break
        assert token in buf

    expect(b"# ")
    os.write(fd, b"echo $((6*7))\r")
    expect(b"42")
    os.write(fd, b"tty\r")
    expect(b"/dev/pts/0")
    os.write(fd, b"exit 3\r")
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 3
    try:
        after = termios.tcgetattr(fd)
    except termios.error:
        after = before  # the pty closed with the child; restoration is checked in test_runtime_tty
    assert after == before
    os.close(fd)


# -- around it: ps, rm, names, no leaks ------------------------------------------------------


def test_ps_rm_and_unique_names(cli: Cli) -> None:
    assert cli("run", "--name", "one", "busybox", "true").returncode == 0
    try:
        dup = cli("run", "--name", "one", "busybox", "true")
        assert dup.returncode == 125 and "already in use" in dup.stderr
        lines = cli("ps", "-a").stdout.splitlines()
        assert lines[0].split() == ["CONTAINER", "ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"]
        row = next(line for line in lines if line.endswith(" one"))
        assert "Exited (0)" in row and '"true"' in row
        assert "one" not in cli("ps").stdout  # not running
    finally:
        assert cli("rm", "one").stdout.strip() == "one"
    assert cli("rm", "one").returncode != 0


def test_rm_force_of_a_running_container(cli: Cli, root: Path) -> None:
    p = _popen(root, "run", "--name", "busy", "busybox", "sleep", "30")
    _wait_running(cli, "busy")
    assert "Up " in cli("ps").stdout
    assert cli("rm", "busy").returncode != 0
    assert cli("rm", "-f", "busy").returncode == 0
    assert p.wait(10) == 137
    assert "busy" not in cli("ps", "-a").stdout


def test_rm_option_removes_the_container_layer(cli: Cli, root: Path) -> None:
    before = set(os.listdir(root / "containers"))
    assert sh(cli, "echo hi > /file").returncode == 0
    assert set(os.listdir(root / "containers")) == before


def _mounts() -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return sorted(" ".join(line.split()[3:5]) for line in f)


def _children() -> set[int]:
    me = str(os.getpid())
    out = set()
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[1] == me:
                        out.add(int(d))
            except OSError:
                pass
    return out


@pytest.mark.slow
def test_no_leaks_after_200_runs(cli: Cli, root: Path) -> None:
    mounts = _mounts()
    dirs = set(os.listdir(root / "containers"))
    for _ in range(200):
        assert cli("run", "--rm", "busybox", "true").returncode == 0
    assert _mounts() == mounts
    assert set(os.listdir(root / "containers")) == dirs
    assert not list((root / "tmp").iterdir())
    assert _children() == set()


def test_many_layers_mount(cli: Cli, tmp_path: Path) -> None:
    """overlayfs's options must fit one page; 120 layers do, through the short links."""
    sys.path.insert(0, str(REPO))
    from images.build import busybox_layer, find_busybox

    layers = [busybox_layer(find_busybox())]
    layers += [b.Layer(b.layer_tar([b.file(f"l{i:03d}", f"{i}\n")]), f"layer {i}") for i in range(119)]
    b.write_oci_layout(tmp_path / "many", [b.image("many:latest", layers, {"Cmd": ["sh"]})])
    assert cli("load", "-q", "-i", str(tmp_path / "many")).returncode == 0
    try:
        r = sh(cli, "cat /l000 /l118; ls / | grep -c '^l[0-9]'", image="many")
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == ["0", "118", "119"]
    finally:
        cli("rmi", "many")


def test_names_index_claims_frees_and_finds(cli: Cli, root: Path) -> None:
    """Names live in <root>/names (one symlink each): a name is claimed once, freed by rm,
    found without reading the other records, and an ID prefix still works."""
    assert cli("run", "--name", "idx", "busybox", "true").returncode == 0
    try:
        cid = os.readlink(root / "names" / "idx")
        assert (root / "containers" / cid / "container.json").exists()
        assert json.loads(cli("inspect", "idx").stdout)[0]["Id"] == cid
        assert json.loads(cli("inspect", cid[:8]).stdout)[0]["Id"] == cid
    finally:
        assert cli("rm", "idx").returncode == 0
    assert not (root / "names" / "idx").exists()
    assert cli("run", "--name", "idx", "busybox", "true").returncode == 0  # free again
    cli("rm", "idx")


def test_names_index_stale_link_is_taken_over(cli: Cli, root: Path) -> None:
    """A link left by a crash (its container dir gone) does not block the name."""
    (root / "names").mkdir(exist_ok=True)
    os.symlink("0" * 64, root / "names" / "ghost")
    assert cli("run", "--name", "ghost", "busybox", "true").returncode == 0
    cli("rm", "ghost")


def test_names_index_built_for_an_older_store(cli: Cli, root: Path) -> None:
    assert cli("run", "--name", "old1", "busybox", "true").returncode == 0
    try:
        shutil.rmtree(root / "names")  # as a store from before the index
        assert json.loads(cli("inspect", "old1").stdout)[0]["Name"] == "/old1"
        assert (root / "names" / "old1").is_symlink()
        dup = cli("run", "--name", "old1", "busybox", "true")
        assert dup.returncode == 125 and "already in use" in dup.stderr
    finally:
        cli("rm", "old1")


def test_racing_runs_with_one_name_one_wins(cli: Cli, root: Path) -> None:
    procs = [_popen(root, "run", "--name", "race", "busybox", "true") for _ in range(6)]
    codes = [p.wait(60) for p in procs]
    try:
        assert sorted(codes) == [0] + [125] * 5, codes
        assert cli("ps", "-a", "-q").stdout.count("\n") >= 1
        assert [ln for ln in cli("ps", "-a").stdout.splitlines() if ln.endswith(" race")]
    finally:
        cli("rm", "race")


@pytest.mark.parametrize("args", [
    ["logs", "nope"], ["inspect", "nope"], ["diff", "nope"], ["exec", "nope", "true"],
    ["rmi", "nope"], ["tag", "nope", "x"], ["port", "nope"], ["kill", "nope"],
    ["stop", "nope"], ["rm", "nope"], ["wait", "nope"],
])  # fmt: skip
def test_other_verbs_fail_with_status_1(cli: Cli, args: list[str]) -> None:
    """Docker: 125 is run's own failure; every other verb's error exits 1, one line."""
    r = cli(*args)
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert r.stderr.startswith("Error: ") and r.stderr.count("\n") == 1


def test_run_keeps_125_attached_start_does_not(cli: Cli) -> None:
    # Docker: only run's own failures are 125; start -a passes on the container's status,
    # and its own errors (no such container, several names) are 1
    assert cli("run", "--pull", "never", "nope:1", "true").returncode == 125
    assert cli("start", "-a", "nope").returncode == 1
    assert cli("start", "-a", "nope", "nope2").returncode == 1


@pytest.mark.parametrize("pull", ["missing", "never"])
def test_invalid_reference_is_said_before_any_lookup(cli: Cli, pull: str) -> None:
    r = cli("run", "--rm", "--pull", pull, "UPPER", "true")
    assert r.returncode == 125
    assert "invalid reference format" in r.stderr and "Unable to find" not in r.stdout + r.stderr


def test_io_errors_are_one_line_naming_the_path(cli: Cli, root: Path, tmp_path: Path) -> None:
    r = cli("save", "-o", str(tmp_path / "missing" / "x.tar"), "busybox")
    assert r.returncode == 1 and "internal error" not in r.stderr
    assert str(tmp_path / "missing") in r.stderr
    with open("/dev/full", "wb") as full:
        p = subprocess.run([MINIRUN, "save", "busybox"], stdout=full, stderr=subprocess.PIPE,
                           text=True, env=_env(root))  # fmt: skip
    assert p.returncode == 1 and "internal error" not in p.stderr
    assert "No space left on device" in p.stderr
