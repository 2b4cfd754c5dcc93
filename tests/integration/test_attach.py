"""`attach`, `start -a/-i` through the shim's attach socket, and the logs every container
keeps (foreground runs too) — through the real CLI, as root, interactive parts through a
REAL pty (the attach client's stdio is the slave side of a pty whose master we hold)."""

from __future__ import annotations

import fcntl
import json
import os
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from minirun.container.attach import _Escape, parse_detach_keys
from minirun.errors import UsageError
from tests.conftest import CONTAINER_TESTS, RUN, Cli, store_cli, wait_for
from tests.terminal import Terminal

pytestmark = CONTAINER_TESTS

REPO = Path(__file__).resolve().parents[2]
MINIRUN = str(Path(sys.executable).parent / "minirun")


def _env(store: Path) -> dict[str, str]:
    return {**os.environ, "MINIRUN_ROOT": str(store)}


def _load(store: Path, layouts: Path) -> None:
    sys.path.insert(0, str(REPO))
    from images.build import build_all

    for p in build_all(layouts):
        if p.name == "busybox":
            subprocess.run([MINIRUN, "load", "-q", "-i", str(p)], check=True, env=_env(store))


def _remove_all(store: Path) -> None:
    ids = subprocess.run([MINIRUN, "ps", "-aq"], env=_env(store), capture_output=True,
                         text=True).stdout.split()
    if ids:
        subprocess.run([MINIRUN, "rm", "-f", *ids], env=_env(store), capture_output=True)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    store = tmp_path_factory.mktemp("store")
    _load(store, tmp_path_factory.mktemp("layouts"))
    yield store
    _remove_all(store)


@pytest.fixture
def cli(root: Path) -> Cli:
    return store_cli(_env(root))


def state(cli: Cli, name: str) -> dict:
    r = cli("inspect", "--type", "container", name)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)[0]["State"]


class Term(Terminal):
    """A user's terminal: the attach client's stdio is the slave, we hold the master."""

    def __init__(self, root: Path, *args: str, rows: int = 0, cols: int = 0) -> None:
        self.master, self.slave = os.openpty()
        if rows:
            fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.cooked = termios.tcgetattr(self.slave)
        self.proc = subprocess.Popen([MINIRUN, *args], env=_env(root), stdin=self.slave,
                                     stdout=self.slave, stderr=self.slave, start_new_session=True)
        super().__init__(self.master)

    def wait(self, timeout: float = 20) -> int:
        return self.proc.wait(timeout=timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)
        os.close(self.slave)


def _raw(fd: int) -> bool:
    return not termios.tcgetattr(fd)[3] & termios.ICANON


def _attached(term: Term, probe: bytes = b"echo at-$((2+3))\r", mark: bytes = b"at-5") -> None:
    """Typed input is relayed from the moment the client is in raw mode and connected;
    retype the probe until its output shows (the shell may not have read yet)."""
    wait_for(lambda: _raw(term.slave))
    term.send(probe)
    term.expect(mark)


def test_tty_attach_detach_keys_and_reattach(cli: Cli, root: Path) -> None:
    r = cli("run", "-dit", "--name", "tsh", *RUN, "busybox", "sh")
    assert r.returncode == 0, r.stderr
    term = Term(root, "attach", "tsh", rows=33, cols=101)
    try:
        _attached(term)
        term.send(b"echo hi-$((1+1))\r")
        term.expect(b"hi-2\r\n")
        term.send(b"\x10\x11")  # ctrl-p ctrl-q
        assert term.wait() == 1  # Docker's status after the detach keys
        term.expect(b"read escape sequence")
        assert termios.tcgetattr(term.slave) == term.cooked  # raw mode undone
    finally:
        term.close()
    assert state(cli, "tsh")["Status"] == "running"
    # again: the window size follows ours, and the container's exit is attach's status
    term = Term(root, "attach", "tsh", rows=41, cols=97)
    try:
        _attached(term)
        term.send(b"stty size\r")
        term.expect(b"41 97\r\n")
        term.send(b"exit 5\r")
        assert term.wait() == 5
        assert termios.tcgetattr(term.slave) == term.cooked
    finally:
        term.close()
    wait_for(lambda: state(cli, "tsh")["Status"] == "exited")
    assert state(cli, "tsh")["ExitCode"] == 5
    logs = cli("logs", "tsh").stdout
    assert "hi-2" in logs and "41 97" in logs  # the tty's transcript is in the log
    assert cli("rm", "tsh").returncode == 0


def test_custom_detach_keys_and_held_bytes(cli: Cli, root: Path) -> None:
    assert cli("run", "-dit", "--name", "tkeys", *RUN, "busybox", "sh").returncode == 0
    term = Term(root, "attach", "--detach-keys", "ctrl-x,y", "tkeys")
    try:
        _attached(term)
        # ctrl-x then something else: both bytes reach the shell (^X is ignored by ash)
        term.send(b"\x18echo k-$((3+4))\r")
        term.expect(b"k-7")
        term.send(b"\x18y")
        assert term.wait() == 1
    finally:
        term.close()
    assert state(cli, "tkeys")["Status"] == "running"
    assert cli("rm", "-f", "tkeys").returncode == 0


def _reader(proc: subprocess.Popen[bytes], want: bytes, timeout: float = 15) -> bytes:
    assert proc.stdout is not None
    buf = b""
    deadline = time.monotonic() + timeout
    while want not in buf:
        left = deadline - time.monotonic()
        assert left > 0, f"timed out waiting for {want!r}; got {buf!r}"
        if select.select([proc.stdout], [], [], left)[0]:
            chunk = os.read(proc.stdout.fileno(), 4096)
            assert chunk, f"EOF waiting for {want!r}; got {buf!r}"
            buf += chunk
    return buf


def test_non_tty_attach_new_output_streams_apart_and_exit_status(cli: Cli, root: Path) -> None:
    script = ("echo before; while [ ! -e /go ]; do echo tick; sleep 0.05; done; "
              "echo out-line; echo err-line >&2; exit 7")
    assert cli("run", "-d", "--name", "tick", *RUN, "busybox", "sh", "-c", script).returncode == 0
    proc = subprocess.Popen([MINIRUN, "attach", "tick"], env=_env(root), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _reader(proc, b"tick\n")  # attached: new output arrives
        assert cli("exec", "tick", "touch", "/go").returncode == 0
        out, err = proc.communicate(timeout=20)
        assert proc.returncode == 7
        assert out.endswith(b"out-line\n") and b"err-line" not in out
        assert err == b"err-line\n"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert state(cli, "tick")["ExitCode"] == 7
    assert cli("rm", "tick").returncode == 0


def test_interactive_detached_cat_echoes_input_and_stdin_stays_open(cli: Cli, root: Path) -> None:
    assert cli("run", "-di", "--name", "kitty", *RUN, "busybox", "cat").returncode == 0
    for word in (b"hello\n", b"again\n"):
        proc = subprocess.Popen([MINIRUN, "attach", "kitty"], env=_env(root), stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE)
        try:
            assert proc.stdin is not None
            proc.stdin.write(word)
            proc.stdin.flush()
            _reader(proc, word)
            # Docker: a run -di container's stdin is not StdinOnce: our EOF leaves it open
            proc.stdin.close()
            time.sleep(0.2)
            assert state(cli, "kitty")["Status"] == "running"
        finally:
            proc.kill()
            proc.wait()
    assert state(cli, "kitty")["Status"] == "running"
    # the container's end ends the attachment with its status
    proc = subprocess.Popen([MINIRUN, "attach", "--no-stdin", "kitty"], env=_env(root),
                            stdout=subprocess.PIPE)
    try:
        wait_for(lambda: _has_client(root, "kitty"))
        assert cli("kill", "kitty").returncode == 0
        assert proc.wait(timeout=20) == 137
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert cli("rm", "kitty").returncode == 0


def _has_client(root: Path, name: str) -> bool:
    """The shim holds a connected socket besides its listening one."""
    cid = subprocess.run([MINIRUN, "inspect", "-f", "{{.Id}}", name], env=_env(root),
                         capture_output=True, text=True).stdout.strip()
    rec = json.loads((root / "containers" / cid / "container.json").read_text())
    sockets = 0
    for fd in os.listdir(f"/proc/{rec['supervisor_pid']}/fd"):
        try:
            sockets += os.readlink(f"/proc/{rec['supervisor_pid']}/fd/{fd}").startswith("socket:")
        except OSError:
            pass
    return sockets >= 2


def test_several_clients_attached_at_once_each_see_all_output(cli: Cli, root: Path) -> None:
    """Docker: every attached client gets the output; any one's input reaches the
    container; one client leaving does not end the others, and all get the exit status."""
    assert cli("run", "-di", "--name", "many", *RUN, "busybox", "sh", "-c",
               "while read -r l; do echo \"seen:$l\"; [ \"$l\" = bye ] && exit 5; done").returncode == 0
    procs = [subprocess.Popen([MINIRUN, "attach", "many"], env=_env(root), stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE) for _ in range(3)]
    try:
        a, b, c = procs
        assert a.stdin is not None and b.stdin is not None
        seen = [b"", b"", b""]
        # typed into a until every client shows it: each is attached once it does
        deadline = time.monotonic() + 15
        while not all(b"seen:one" in buf for buf in seen):
            assert time.monotonic() < deadline, f"not every client saw the output: {seen!r}"
            a.stdin.write(b"one\n")
            a.stdin.flush()
            for i, proc in enumerate(procs):
                assert proc.stdout is not None
                if select.select([proc.stdout], [], [], 0.2)[0]:
                    seen[i] += os.read(proc.stdout.fileno(), 4096)
        c.kill()  # one client gone: the container and the others go on
        c.wait()
        b.stdin.write(b"two\n")
        b.stdin.flush()
        _reader(a, b"seen:two")
        _reader(b, b"seen:two")
        assert state(cli, "many")["Status"] == "running"
        a.stdin.write(b"bye\n")
        a.stdin.flush()
        assert a.wait(timeout=20) == 5 and b.wait(timeout=20) == 5
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert state(cli, "many")["ExitCode"] == 5
    assert cli("rm", "many").returncode == 0


def test_sig_proxy_forwards_signals_to_a_non_tty_container(cli: Cli, root: Path) -> None:
    script = "trap 'echo got-term; exit 9' TERM; while :; do echo tick; sleep 0.05; done"
    assert cli("run", "-d", "--name", "sigs", *RUN, "busybox", "sh", "-c", script).returncode == 0
    proc = subprocess.Popen([MINIRUN, "attach", "sigs"], env=_env(root), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE)
    try:
        _reader(proc, b"tick\n")
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
        assert b"got-term" in out and proc.returncode == 9
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert cli("rm", "sigs").returncode == 0


def test_start_a_of_an_exited_container_prints_its_output_and_status(cli: Cli) -> None:
    r = cli("run", "--name", "again", *RUN, "busybox", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (r.returncode, r.stdout, r.stderr) == (3, "out\n", "err\n")
    r = cli("start", "-a", "again")
    assert (r.returncode, r.stdout, r.stderr) == (3, "out\n", "err\n")
    assert state(cli, "again")["Status"] == "exited"
    logs = cli("logs", "again")  # the foreground run and the started one, both logged
    assert (logs.stdout, logs.stderr) == ("out\nout\n", "err\nerr\n")
    assert cli("rm", "again").returncode == 0


def test_start_ai_sends_stdin_and_closes_it_at_eof(cli: Cli) -> None:
    r = cli("run", "-i", "--name", "cat1", *RUN, "busybox", "cat", input="first\n")
    assert (r.returncode, r.stdout) == (0, "first\n")
    # an attached run -i is StdinOnce, as in Docker: our EOF ends cat
    r = cli("start", "-ai", "cat1", input="second\n")
    assert (r.returncode, r.stdout) == (0, "second\n")
    assert cli("logs", "cat1").stdout == "first\nsecond\n"
    assert cli("rm", "cat1").returncode == 0


def test_start_a_with_rm_is_removed_when_it_returns(cli: Cli, root: Path) -> None:
    assert cli("run", "--name", "gone", *RUN, "busybox", "true").returncode == 0
    cid = cli("inspect", "-f", "{{.Id}}", "gone").stdout.strip()
    r = cli("start", "-a", "gone")
    assert r.returncode == 0, r.stderr
    assert state(cli, "gone")["Status"] == "exited"  # recorded by the cleanup it waited for
    assert not (root / "containers" / cid / "attach.sock").exists()
    assert cli("rm", "gone").returncode == 0


def test_logs_of_foreground_runs(cli: Cli, root: Path) -> None:
    r = cli("run", "--name", "fg", *RUN, "busybox", "echo", "x")
    assert (r.returncode, r.stdout) == (0, "x\n")
    assert cli("logs", "fg").stdout == "x\n"
    assert cli("rm", "fg").returncode == 0
    # a tty run keeps its transcript (the stdout stream)
    term = Term(root, "run", "-t", "--name", "fgt", *RUN, "busybox", "sh", "-c",
                "echo trans-$((4*5)); exit 4")
    try:
        term.expect(b"trans-20")
        assert term.wait() == 4
        assert termios.tcgetattr(term.slave) == term.cooked
    finally:
        term.close()
    logs = cli("logs", "fgt")
    assert "trans-20\n" in logs.stdout and logs.stderr == ""  # (text mode reads \r\n as \n)
    assert cli("rm", "fgt").returncode == 0


def test_attach_to_a_stopped_container_is_an_error(cli: Cli) -> None:
    assert cli("run", "--name", "stopped", *RUN, "busybox", "true").returncode == 0
    r = cli("attach", "stopped")
    assert r.returncode == 1
    assert r.stderr == "Error: You cannot attach to a stopped container, start it first\n"
    assert cli("attach", "no-such").returncode == 1
    assert cli("rm", "stopped").returncode == 0
    r = cli("attach", "--detach-keys", "ctrl-1", "whatever")
    assert r.returncode == 1 and "Invalid detach keys" in r.stderr


def test_long_store_root(tmp_path_factory: pytest.TempPathFactory) -> None:
    """sun_path holds 108 bytes; a store root longer than that still attaches."""
    base = tmp_path_factory.mktemp("long")
    store = base / ("r" * 60) / ("o" * 60)
    store.mkdir(parents=True)
    _load(store, tmp_path_factory.mktemp("layouts"))
    long_cli = store_cli(_env(store))
    try:
        r = long_cli("run", "-d", "--name", "far", *RUN, "busybox", "sh", "-c",
                     "while [ ! -e /go ]; do echo tick; sleep 0.05; done; echo far-out; exit 2")
        assert r.returncode == 0, r.stderr
        sock = store / "containers" / r.stdout.strip() / "attach.sock"
        assert len(str(sock)) > 108
        assert (os.stat(sock).st_mode & 0o777) == 0o600
        proc = subprocess.Popen([MINIRUN, "attach", "far"], env=_env(store),
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        try:
            _reader(proc, b"tick\n")
            assert long_cli("exec", "far", "touch", "/go").returncode == 0
            out, _ = proc.communicate(timeout=20)
            assert proc.returncode == 2 and out.endswith(b"far-out\n")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        r = long_cli("start", "-a", "far")
        assert r.returncode == 2 and r.stdout.endswith("far-out\n")
    finally:
        _remove_all(store)


def test_detach_keys_format() -> None:
    assert parse_detach_keys("ctrl-p,ctrl-q") == b"\x10\x11"
    assert parse_detach_keys("ctrl-a,x,ctrl-@,ctrl-_") == b"\x01x\x00\x1f"
    for bad in ("ctrl-1", "ctrl-", "ab", ""):
        with pytest.raises(UsageError):
            parse_detach_keys(bad)
    esc = _Escape(b"\x10\x11")
    assert esc.feed(b"ab\x10") == (b"ab", False)  # held: it may start the sequence
    assert esc.feed(b"c") == (b"\x10c", False)  # released with what broke it
    assert esc.feed(b"\x10\x10") == (b"\x10", False)
    assert esc.feed(b"\x11rest") == (b"", True)
