"""OCI runtime-spec conformance of a runc-compatible runtime CLI, section by section.

The runtime under test is ``$MINIRUN_TEST_RUNTIME`` ("runc", "crun" or an absolute path),
else ``minirun-runtime`` next to the interpreter (see tests/oci_bundle.py). Every config
assertion is made from INSIDE the container by a small busybox probe (sh, cat, id, ...);
lifecycle assertions use the runtime's own ``state``/``list`` plus what the host sees
(pids, cgroup dirs, files in bind-mounted dirs).

Section names refer to runtime-spec v1.2: runtime.md (State, Lifecycle, Errors,
Operations), config.md (Root, Mounts, Process, Hostname, Domainname, POSIX-platform Hooks,
Annotations, Extensibility), config-linux.md (Namespaces, User namespace mappings, Devices,
Control groups, Sysctl, Seccomp, Rootfs Mount Propagation, Masked Paths, Readonly Paths),
features.md.

Where a real runtime deviates, the test is not weakened: the difference is listed in
``DIFFERENCES`` (runtime name -> reason) and the test is a strict xfail for that runtime.

Every test goes through the ``oci`` fixture, which on teardown ``delete --force``-es every
container the test made, then fails the test if any container, container process, cgroup
dir (``/minirun-oci/<id>`` in any hierarchy) or host mount was left behind.
"""

from __future__ import annotations

import json
import os
import platform
import re
import secrets
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.oci_bundle import (
    CGROUP_ROOT,
    Runtime,
    cgroup_dirs,
    cgroups_path,
    default_config,
    make_bundle,
    make_rootfs,
    pid_alive,
    remove_cgroup_parents,
    require_runtime,
    runtime_name,
    sh_config,
    wait_pid_gone,
    write_config,
)

pytestmark = pytest.mark.root

RUNTIME = runtime_name()

# --- known per-runtime differences ------------------------------------------------------------
# key -> {runtime name: reason}. A test (or param) marked ``differs(key)`` is a strict xfail
# for the runtimes listed (non-strict for the (key, runtime) pairs in RACY_DIFFERENCES): the
# assertion stays what the spec says.
DIFFERENCES: dict[str, dict[str, str]] = {
    "poststart_order": {
        "runc": "runc 1.1 runs poststart hooks during `create`, before `start` and before the "
        "startContainer hooks (opencontainers/runc#1710; moved to `start` by runc#5186)",
        "crun": "crun 1.8 runs the poststart hooks as soon as it has told the container to "
        "start, racing the container's startContainer hooks (containers/crun#1562)",
    },
    "poststart_in_start": {
        "runc": "runc 1.1 runs poststart hooks during `create` (status 'created'), not in "
        "`start` (opencontainers/runc#1710)",
    },
    "poststop_continue": {
        "runc": "runc 1.1 stops at the first failing poststop hook: later poststop hooks are "
        "not run (config.md: the remaining hooks MUST continue)",
    },
    "domainname": {
        "runc": "runc 1.1 ignores `domainname` (the container's domainname stays '(none)')",
    },
    "rootfs_shared": {
        "runc": "runc 1.1.5 leaves the container's / private with rootfsPropagation=shared "
        "(it applies the propagation before pivot_root, not to the new /)",
    },
    "id_charset": {
        "crun": "crun 1.8 accepts any id that is a valid file name (spaces, ':', '@'); runc "
        "allows only [A-Za-z0-9_+.-]",
    },
    "duplicate_namespace": {
        "crun": "crun 1.8 accepts duplicated namespace types (config-linux.md: MUST error)",
    },
    "relative_cwd": {
        "crun": "crun 1.8 accepts a relative process.cwd (config.md: MUST be absolute)",
    },
    "bogus_propagation": {
        "crun": "crun 1.8 ignores an unknown rootfsPropagation value",
    },
    "features": {
        "crun": "crun 1.8.1 has no `features` command",
    },
}


RACY_DIFFERENCES = {("poststart_order", "crun")}


def differs(key: str) -> pytest.MarkDecorator:
    reason = DIFFERENCES[key].get(RUNTIME)
    strict = (key, RUNTIME) not in RACY_DIFFERENCES
    return pytest.mark.xfail(reason is not None, reason=reason or "", strict=strict)


# --- fixtures -----------------------------------------------------------------------------------


def _mount_points(*prefixes: str | Path) -> list[str]:
    """The host's mount points that have to do with this test's paths (mount point, root
    or source under one of ``prefixes``): the host may have others coming and going."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields and any(str(p) in line for p in prefixes):
                out.append(fields[4])
    return sorted(out)


def _safe_id(cid: str) -> bool:
    """Ids the teardown may pass to ``delete --force``: crun resolves "..", "." or "a/b"
    as paths under its state root (``delete --force ..`` removes the root's parent)."""
    return bool(cid) and "/" not in cid and cid not in (".", "..")


@pytest.fixture(scope="session")
def runtime_binary() -> str:
    return require_runtime()


@pytest.fixture(scope="session")
def work_base() -> Iterator[Path]:
    """Bundles live under /tmp in a 0755 dir (not pytest's 0700 tmp): a container whose
    root is a mapped uid (user namespace) must still be able to reach its rootfs."""
    base = Path(tempfile.mkdtemp(prefix="minirun-oci-", dir="/tmp"))
    base.chmod(0o755)
    try:
        make_rootfs(base / "template")
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)
        remove_cgroup_parents()


class Oci:
    """One test's containers: bundles, the runtime, and what to check on teardown."""

    def __init__(self, rt: Runtime, base: Path, template: Path) -> None:
        self.rt = rt
        self.base = base
        self.template = template
        self.ids: list[str] = []
        self.pids: set[int] = set()

    def new_id(self, prefix: str = "oci") -> str:
        cid = f"{prefix}-{secrets.token_hex(4)}"
        self.ids.append(cid)
        return cid

    def track(self, cid: str) -> None:
        if cid not in self.ids:
            self.ids.append(cid)

    def dir(self, name: str) -> Path:
        """A host dir for the test (bind sources, hook output), world-readable."""
        d = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.base))
        d.chmod(0o755)
        return d

    def bundle(self, config: dict[str, Any], cid: str | None = None) -> tuple[str, Path]:
        """(id, bundle dir). The config gets ``linux.cgroupsPath = /minirun-oci/<id>``
        unless it has one."""
        cid = cid or self.new_id()
        self.track(cid)
        config.setdefault("linux", {}).setdefault("cgroupsPath", cgroups_path(cid))
        path = make_bundle(self.base / f"bundle-{secrets.token_hex(4)}", config,
                           template=self.template)  # fmt: skip
        return cid, path

    def run(self, config: dict[str, Any], *extra: str) -> subprocess.CompletedProcess[str]:
        """``run`` attached: the container's stdout/stderr and exit status."""
        cid, path = self.bundle(config)
        return self.rt.run(cid, path, *extra)

    def sh(self, script: str, mutate: Callable[[dict[str, Any]], None] | None = None,
           **process: Any) -> subprocess.CompletedProcess[str]:  # fmt: skip
        """Run ``sh -c script`` attached, after ``mutate(config)``."""
        cfg = sh_config(script, **process)
        if mutate is not None:
            mutate(cfg)
        return self.run(cfg)

    def create(self, config: dict[str, Any]) -> tuple[str, Path]:
        cid, path = self.bundle(config)
        p = self.rt.create(cid, path)
        assert p.returncode == 0, f"create failed ({p.returncode}): {p.stderr}"
        self.state(cid)
        return cid, path

    def state(self, cid: str) -> dict[str, Any]:
        st = self.rt.state(cid)
        if st.get("pid"):
            self.pids.add(int(st["pid"]))
        return st

    def cleanup(self) -> list[str]:
        problems: list[str] = []
        for cid in self.ids:
            if _safe_id(cid):
                p = self.rt.state_result(cid)
                if p.returncode == 0 and json.loads(p.stdout).get("pid"):
                    self.pids.add(int(json.loads(p.stdout)["pid"]))
                self.rt.delete(cid, force=True)
        for cid in self.ids:
            if _safe_id(cid) and self.rt.state_result(cid).returncode == 0:
                problems.append(f"container {cid} still exists after delete --force")
        for pid in self.pids:
            if not wait_pid_gone(pid):
                problems.append(f"container process {pid} still alive")
                os.kill(pid, signal.SIGKILL)
        for cid in self.ids:
            left = cgroup_dirs(cid) if _safe_id(cid) else []
            if left:
                problems.append(f"cgroup dirs left: {left}")
                for d in sorted(left, key=len, reverse=True):
                    try:
                        os.rmdir(d)
                    except OSError:
                        pass
        listed = self.rt.list_ids()
        if listed:
            problems.append(f"`list` still shows {listed}")
        return problems


@pytest.fixture
def oci(runtime_binary: str, work_base: Path, tmp_path: Path) -> Iterator[Oci]:
    mounts_before = _mount_points(work_base, tmp_path)
    base = Path(tempfile.mkdtemp(prefix="t-", dir=work_base))
    base.chmod(0o755)
    rt = Runtime(runtime_binary, tmp_path / "state", tmp_path / "io")
    h = Oci(rt, base, work_base / "template")
    try:
        yield h
    finally:
        problems = h.cleanup()
        shutil.rmtree(base, ignore_errors=True)
        mounts_after = _mount_points(work_base, tmp_path)
        if mounts_after != mounts_before:
            problems.append(
                f"host mounts changed: +{sorted(set(mounts_after) - set(mounts_before))} "
                f"-{sorted(set(mounts_before) - set(mounts_after))}"
            )
        assert not problems, "; ".join(problems)


def bind(cfg: dict[str, Any], src: Path | str, dest: str, *options: str) -> None:
    cfg["mounts"].append({"destination": dest, "type": "bind", "source": str(src),
                          "options": ["rbind", *options]})  # fmt: skip


def ok(p: subprocess.CompletedProcess[str]) -> str:
    assert p.returncode == 0, f"exit {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}"
    return p.stdout


def wait_file(path: Path, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def same_file(a: str | Path, b: str | Path) -> bool:
    sa, sb = os.stat(a), os.stat(b)
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


# === runtime.md: State, Lifecycle, Operations ===================================================


def test_lifecycle_create_start_stop_delete(oci: Oci) -> None:
    """runtime.md Lifecycle 1-6 and State: create -> created (user code not run), start ->
    running, exit -> stopped, delete -> gone. The process's stdout is the create call's
    stdout when there is no console socket."""
    out = oci.dir("out")
    cfg = sh_config("echo ran > /out/marker; echo hello; "
                    "while [ ! -e /out/go ]; do sleep 0.02; done; echo bye")  # fmt: skip
    bind(cfg, out, "/out", "rw")
    cfg["annotations"] = {"org.example.key": "value", "com.example/other": "x=y"}
    cid, bundle = oci.bundle(cfg)
    assert oci.rt.create(cid, bundle).returncode == 0

    st = oci.state(cid)
    assert st["id"] == cid
    assert st["status"] == "created"
    assert isinstance(st["ociVersion"], str) and st["ociVersion"]
    assert isinstance(st["pid"], int) and st["pid"] > 0 and pid_alive(st["pid"])
    assert os.path.isabs(st["bundle"]) and Path(st["bundle"]) == bundle
    assert st.get("annotations") == cfg["annotations"]
    # "the user-specified code MUST NOT be run at this time"
    time.sleep(0.2)
    assert not (out / "marker").exists()
    assert oci.rt.output(cid) == ""
    assert not same_file(f"/proc/{st['pid']}/exe", bundle / "rootfs" / "bin" / "busybox")

    ok(oci.rt.start(cid))
    assert wait_file(out / "marker")
    st = oci.state(cid)
    assert st["status"] == "running" and st["pid"] > 0
    # the state's pid is the container process as seen by the host (now exec'd busybox sh)
    assert same_file(f"/proc/{st['pid']}/exe", bundle / "rootfs" / "bin" / "busybox")
    assert oci.rt.wait_output(cid, "hello\n") == "hello\n"

    (out / "go").touch()
    assert oci.rt.wait_status(cid, "stopped")["status"] == "stopped"
    assert oci.rt.output(cid) == "hello\nbye\n"
    assert cid in oci.rt.list_ids()

    ok(oci.rt.delete(cid))
    p = oci.rt.state_result(cid)
    assert p.returncode != 0 and p.stderr.strip()
    assert cid not in oci.rt.list_ids()
    assert cgroup_dirs(cid) == []


def test_state_pid_file_and_list(oci: Oci) -> None:
    """runc CLI: create --pid-file writes the state's pid; list shows the container."""
    cid, bundle = oci.bundle(sh_config("sleep 30"))
    pid_file = oci.base / "pid"
    ok(oci.rt.create(cid, bundle, pid_file=pid_file))
    st = oci.state(cid)
    assert int(pid_file.read_text().strip()) == st["pid"]
    assert oci.rt.list_ids() == [cid]
    p = oci.rt("list", "--format", "json")
    rows = json.loads(ok(p))
    assert [(r["id"], r["status"], r["pid"]) for r in rows] == [(cid, "created", st["pid"])]


def test_create_duplicate_id_fails(oci: Oci) -> None:
    """runtime.md Create: an id that is not unique MUST error and no new container is made."""
    cid, bundle = oci.create(sh_config("sleep 30"))
    before = oci.state(cid)
    _, other = oci.bundle(sh_config("echo second"), cid=cid)
    p = oci.rt.create(cid, other)
    assert p.returncode != 0 and p.stderr.strip()
    after = oci.state(cid)
    assert (after["status"], after["pid"], after["bundle"]) == (
        before["status"], before["pid"], before["bundle"])  # fmt: skip


@pytest.mark.parametrize(
    "bad_id",
    [
        "a/b",
        "../escape",
        "..",
        pytest.param("a b", marks=differs("id_charset")),
        pytest.param("a:b", marks=differs("id_charset")),
    ],
)
def test_create_invalid_id_rejected(oci: Oci, bad_id: str) -> None:
    """runtime.md Create: an id "not valid in any other way" MUST error, and no container
    is created (runc's rule: ^[\\w+-.]+$, not "." or "..")."""
    _, bundle = oci.bundle(sh_config("echo ran"), cid=oci.new_id())
    oci.track(bad_id)
    p = oci.rt.create(bad_id, bundle)
    assert p.returncode != 0 and p.stderr.strip()
    assert oci.rt.list_ids() == []


def test_start_twice_fails(oci: Oci) -> None:
    """runtime.md Start: starting an already started container MUST error and MUST have no
    effect on it — whether it is running or stopped."""
    out = oci.dir("out")
    cfg = sh_config("echo started >> /out/log; while [ ! -e /out/go ]; do sleep 0.02; done")
    bind(cfg, out, "/out", "rw")
    cid, _ = oci.create(cfg)
    ok(oci.rt.start(cid))
    assert wait_file(out / "log")
    pid = oci.state(cid)["pid"]
    p = oci.rt.start(cid)
    assert p.returncode != 0 and p.stderr.strip()
    st = oci.state(cid)
    assert (st["status"], st["pid"]) == ("running", pid)
    (out / "go").touch()
    assert oci.rt.wait_status(cid, "stopped")["status"] == "stopped"
    p = oci.rt.start(cid)
    assert p.returncode != 0 and p.stderr.strip()
    assert oci.state(cid)["status"] == "stopped"
    assert (out / "log").read_text() == "started\n"


def test_delete_created_container_kills_it(oci: Oci) -> None:
    """runtime.md Delete + runc behaviour: a created (never started) container can be
    deleted; its init process is killed and its resources removed. (The spec only forbids
    deleting a container whose *user process* is running; runc and crun accept this.)"""
    out = oci.dir("out")
    cfg = sh_config("echo ran > /out/marker")
    bind(cfg, out, "/out", "rw")
    cid, _ = oci.create(cfg)
    pid = oci.state(cid)["pid"]
    assert cgroup_dirs(cid)
    ok(oci.rt.delete(cid))
    assert wait_pid_gone(pid)
    assert oci.rt.state_result(cid).returncode != 0
    assert cgroup_dirs(cid) == []
    assert not (out / "marker").exists()


def test_delete_running_needs_force(oci: Oci) -> None:
    """runtime.md Delete: deleting a container whose process is running MUST error (and
    leave it running); runc's --force kills it first."""
    cid, _ = oci.create(sh_config("sleep 30"))
    ok(oci.rt.start(cid))
    pid = oci.state(cid)["pid"]
    p = oci.rt.delete(cid)
    assert p.returncode != 0 and p.stderr.strip()
    st = oci.state(cid)
    assert (st["status"], st["pid"]) == ("running", pid) and pid_alive(pid)
    ok(oci.rt.delete(cid, force=True))
    assert wait_pid_gone(pid)
    assert oci.rt.state_result(cid).returncode != 0
    assert cgroup_dirs(cid) == []


def test_kill_stopped_container_fails(oci: Oci) -> None:
    """runtime.md Kill: signalling a container that is not running MUST error."""
    cid, _ = oci.create(sh_config("true"))
    ok(oci.rt.start(cid))
    assert oci.rt.wait_status(cid, "stopped")["status"] == "stopped"
    p = oci.rt.kill(cid, "KILL")
    assert p.returncode != 0 and p.stderr.strip()
    assert oci.state(cid)["status"] == "stopped"


TRAP_SCRIPT = (
    "trap 'echo got-TERM; exit 0' TERM; trap 'echo got-USR1; exit 0' USR1; "
    "echo ready; while :; do sleep 0.02; done"
)


@pytest.mark.parametrize(
    "sig,caught",
    [("TERM", "TERM"), ("SIGTERM", "TERM"), ("15", "TERM"), (None, "TERM"),
     ("USR1", "USR1"), ("SIGUSR1", "USR1"), ("10", "USR1"),
     ("KILL", None), ("SIGKILL", None), ("9", None)],
)  # fmt: skip
def test_kill_signal_names(oci: Oci, sig: str | None, caught: str | None) -> None:
    """runtime.md Kill: the named signal (name, SIG-name or number; none = TERM, as runc)
    is sent to the container process, which then stops."""
    cid, _ = oci.create(sh_config(TRAP_SCRIPT))
    ok(oci.rt.start(cid))
    assert "ready" in oci.rt.wait_output(cid, "ready\n")
    ok(oci.rt.kill(cid, sig))
    assert oci.rt.wait_status(cid, "stopped")["status"] == "stopped"
    expected = "ready\n" + (f"got-{caught}\n" if caught else "")
    assert oci.rt.output(cid) == expected


def test_kill_all(oci: Oci) -> None:
    """runc CLI: kill --all signals every process of the container."""
    cid, _ = oci.create(sh_config("sleep 30 & sleep 30 & echo ready; wait"))
    ok(oci.rt.start(cid))
    oci.rt.wait_output(cid, "ready")
    ok(oci.rt.kill(cid, "KILL", all=True))
    assert oci.rt.wait_status(cid, "stopped")["status"] == "stopped"


@pytest.mark.parametrize("op", ["state", "start", "kill", "delete"])
def test_unknown_container_errors(oci: Oci, op: str) -> None:
    """runtime.md Query State / Start / Kill / Delete: a container that does not exist
    MUST generate an error."""
    args = {"state": ["state"], "start": ["start"], "kill": ["kill"], "delete": ["delete"]}
    cid = f"nope-{secrets.token_hex(4)}"
    p = oci.rt(*args[op], cid)
    assert p.returncode != 0 and p.stderr.strip()


@pytest.mark.parametrize("code", [0, 1, 42])
def test_run_attached_stdio_and_exit_status(oci: Oci, code: int) -> None:
    """runc CLI `run` (create + start + wait): the process's stdout/stderr are the
    runtime's, and run exits with the process's exit status."""
    p = oci.sh(f"echo out; echo err >&2; exit {code}")
    assert (p.returncode, p.stdout, p.stderr) == (code, "out\n", "err\n")


def test_run_exit_status_of_signal(oci: Oci) -> None:
    """runc CLI `run`: a process killed by a signal gives 128+signal."""
    cid, bundle = oci.bundle(sh_config("echo ready; sleep 30"))
    result: list[subprocess.CompletedProcess[str]] = []
    t = threading.Thread(target=lambda: result.append(oci.rt.run(cid, bundle)))
    t.start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            st = oci.rt.state_result(cid)
            if st.returncode == 0 and json.loads(st.stdout)["status"] == "running":
                break
            time.sleep(0.02)
        ok(oci.rt.kill(cid, "KILL"))
    finally:
        t.join(30)
    assert result and result[0].returncode == 128 + signal.SIGKILL


def test_run_detached(oci: Oci) -> None:
    """runc CLI `run -d`: created and started; the caller gets control back."""
    cid, bundle = oci.bundle(sh_config("echo up; sleep 30"))
    ok(oci.rt.run(cid, bundle, detach=True))
    assert oci.state(cid)["status"] == "running"
    assert oci.rt.wait_output(cid, "up") == "up\n"


def test_config_changes_after_create_have_no_effect(oci: Oci) -> None:
    """runtime.md Create / Lifecycle 2: updates to config.json after create MUST NOT affect
    the container."""
    cfg = sh_config("echo original")
    cid, bundle = oci.create(cfg)
    changed = sh_config("echo changed")
    changed["linux"]["cgroupsPath"] = cfg["linux"]["cgroupsPath"]
    write_config(bundle, changed)
    ok(oci.rt.start(cid))
    oci.rt.wait_status(cid, "stopped")
    assert oci.rt.output(cid) == "original\n"


def test_console_socket_terminal(oci: Oci) -> None:
    """config.md process.terminal + runc --console-socket: the pty master is sent over the
    socket (SCM_RIGHTS); the process has the slave as its controlling terminal and
    /dev/console (config-linux.md Default Devices)."""
    sock_dir = tempfile.mkdtemp(prefix="cs-", dir="/tmp")  # sun_path is 108 bytes at most
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    fds: list[int] = []
    try:
        srv.bind(f"{sock_dir}/s")
        srv.listen(1)
        cfg = default_config(["sh", "-c", "tty; [ -t 0 ] && [ -t 1 ] && echo is-a-tty; "
                              "[ -c /dev/console ] && echo console"], terminal=True)  # fmt: skip
        cid, bundle = oci.bundle(cfg)
        ok(oci.rt.create(cid, bundle, "--console-socket", f"{sock_dir}/s"))
        srv.settimeout(10)
        conn, _ = srv.accept()
        with conn:
            _, fds, _, _ = socket.recv_fds(conn, 1024, 1)
        assert len(fds) == 1
        ok(oci.rt.start(cid))
        out = b""
        while True:
            ready, _, _ = select.select([fds[0]], [], [], 10)
            if not ready:
                break
            try:
                chunk = os.read(fds[0], 4096)
            except OSError:  # EIO: the slave side is closed
                break
            if not chunk:
                break
            out += chunk
        lines = out.decode().replace("\r\n", "\n").splitlines()
        assert lines[0].startswith("/dev/pts/") and lines[1:] == ["is-a-tty", "console"], out
        assert oci.rt.wait_status(cid, "stopped")["status"] == "stopped"
    finally:
        for fd in fds:
            os.close(fd)
        srv.close()
        shutil.rmtree(sock_dir, ignore_errors=True)


# === config.md: POSIX-platform Hooks ============================================================

HOOK_NAMES = ["prestart", "createRuntime", "createContainer", "startContainer", "poststart",
              "poststop"]  # fmt: skip


def hook_config(oci: Oci, names: list[str], script: str = "true") -> tuple[dict[str, Any], Path]:
    """A config whose hooks each save the state they get on stdin to <dir>/<name>.json and
    append their name to <dir>/log. <dir> is bind-mounted at the same path inside, so the
    hooks that run in the container's mount namespace write to the same place; the hooks
    run /bin/busybox, which the host and the rootfs both have."""
    d = oci.dir("hooks")
    cfg = sh_config(f"echo main >> {d}/log; {script}")
    bind(cfg, d, str(d), "rw")

    def hook(name: str) -> dict[str, Any]:
        return {
            "path": "/bin/busybox",
            "args": ["sh", "-c", f'cat > {d}/$0.json; echo $0 >> {d}/log; '
                                 f'echo "$HOOK_VAR|$PATH|$1" > {d}/$0.env', name, "arg1"],
            "env": ["HOOK_VAR=v1", "PATH=/bin"],
        }  # fmt: skip

    cfg["hooks"] = {name: [hook(name)] for name in names}
    return cfg, d


# A hook that fails after reading its stdin: one that exits without reading can make the
# runtime's write of the state hit EPIPE, and crun 1.8 then dies of SIGPIPE (racy).
FAILING_HOOK = {"path": "/bin/busybox", "args": ["sh", "-c", "cat > /dev/null; exit 1"]}


def hook_log(d: Path) -> list[str]:
    p = d / "log"
    return [x for x in p.read_text().split() if x != "main"] if p.exists() else []


def hook_state(d: Path, name: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads((d / f"{name}.json").read_text())
    return out


def test_hooks_create_phase(oci: Oci) -> None:
    """config.md Hooks / runtime.md Lifecycle 3-5: prestart, createRuntime, createContainer
    run during create, in that order, each given the container's state on stdin; the
    runtime-namespace ones see the container's host pid. args/env are the hook's own."""
    cfg, d = hook_config(oci, ["prestart", "createRuntime", "createContainer"])
    cid, bundle = oci.create(cfg)
    st = oci.state(cid)
    assert hook_log(d) == ["prestart", "createRuntime", "createContainer"]
    for name in ("prestart", "createRuntime", "createContainer"):
        hs = hook_state(d, name)
        assert hs["id"] == cid and hs["bundle"] == str(bundle), hs
        assert hs["status"] in ("creating", "created"), hs
        assert isinstance(hs["ociVersion"], str) and hs["ociVersion"]
        assert (d / f"{name}.env").read_text() == "v1|/bin|arg1\n"
    # prestart and createRuntime run in the runtime namespace: pid as the host sees it
    assert hook_state(d, "prestart")["pid"] == st["pid"]
    assert hook_state(d, "createRuntime")["pid"] == st["pid"]
    assert not (d / "log").read_text().count("main")


@differs("poststart_in_start")
def test_hooks_start_phase(oci: Oci) -> None:
    """runtime.md Lifecycle 6-9: startContainer and poststart run in start (not create);
    poststart gets status running and the process's pid, before start returns."""
    cfg, d = hook_config(oci, ["startContainer", "poststart"], "sleep 30")
    cid, _ = oci.create(cfg)
    assert hook_log(d) == []
    ok(oci.rt.start(cid))
    st = oci.state(cid)
    assert sorted(hook_log(d)) == ["poststart", "startContainer"]
    assert hook_state(d, "startContainer")["id"] == cid
    post = hook_state(d, "poststart")
    assert (post["id"], post["status"], post["pid"]) == (cid, "running", st["pid"])


@differs("poststart_order")
def test_hooks_all_six_in_order(oci: Oci) -> None:
    """config.md Hooks: the full order over create, start and delete."""
    cfg, d = hook_config(oci, HOOK_NAMES)
    cid, _ = oci.create(cfg)
    ok(oci.rt.start(cid))
    oci.rt.wait_status(cid, "stopped")
    ok(oci.rt.delete(cid))
    assert hook_log(d) == HOOK_NAMES


def test_hook_poststop_runs_on_delete(oci: Oci) -> None:
    """runtime.md Lifecycle 11-13: poststop runs in delete, after the container was
    destroyed, with status stopped."""
    cfg, d = hook_config(oci, ["poststop"])
    cid, bundle = oci.create(cfg)
    ok(oci.rt.start(cid))
    oci.rt.wait_status(cid, "stopped")
    assert hook_log(d) == []
    ok(oci.rt.delete(cid))
    assert hook_log(d) == ["poststop"]
    hs = hook_state(d, "poststop")
    assert (hs["id"], hs["status"], hs["bundle"]) == (cid, "stopped", str(bundle))


@pytest.mark.parametrize("name", ["prestart", "createRuntime", "createContainer"])
def test_failing_create_hook_fails_create(oci: Oci, name: str) -> None:
    """runtime.md Lifecycle 3-5: a failing prestart/createRuntime/createContainer hook MUST
    make create error; the container is stopped and destroyed; later hooks and the user
    process never run."""
    d = oci.dir("hooks")
    cfg = sh_config(f"echo main >> {d}/log")
    bind(cfg, d, str(d), "rw")
    cfg["hooks"] = {
        name: [FAILING_HOOK],
        "startContainer": [{"path": "/bin/busybox", "args": ["sh", "-c", f"echo late >> {d}/log"]}],
    }
    cid, bundle = oci.bundle(cfg)
    p = oci.rt.create(cid, bundle)
    assert p.returncode != 0 and p.stderr.strip()
    start = oci.rt.start(cid)
    assert start.returncode != 0
    time.sleep(0.1)
    assert not (d / "log").exists()


def test_failing_start_container_hook_stops_container(oci: Oci) -> None:
    """runtime.md Lifecycle 7: a failing startContainer hook stops the container; the user
    process and the later hooks never run."""
    d = oci.dir("hooks")
    cfg = sh_config(f"echo main >> {d}/log")
    bind(cfg, d, str(d), "rw")
    cfg["hooks"] = {"startContainer": [
        FAILING_HOOK,
        {"path": "/bin/busybox", "args": ["sh", "-c", f"echo second >> {d}/log"]},
    ]}  # fmt: skip
    cid, _ = oci.create(cfg)
    oci.rt.start(cid)  # how the error is reported is not mandated (runtime.md Errors)
    assert oci.rt.wait_status(cid, "stopped")["status"] == "stopped"
    assert not (d / "log").exists()


@differs("poststop_continue")
def test_failing_poststop_hook_is_only_a_warning(oci: Oci) -> None:
    """runtime.md Lifecycle 13: a failing poststop hook MUST only be a warning; the
    remaining hooks and the lifecycle continue (delete succeeds)."""
    d = oci.dir("hooks")
    cfg = sh_config("true")
    cfg["hooks"] = {"poststop": [
        FAILING_HOOK,
        {"path": "/bin/busybox", "args": ["sh", "-c", f"echo second >> {d}/log"]},
    ]}  # fmt: skip
    cid, _ = oci.create(cfg)
    ok(oci.rt.start(cid))
    oci.rt.wait_status(cid, "stopped")
    ok(oci.rt.delete(cid))
    assert oci.rt.state_result(cid).returncode != 0
    assert (d / "log").read_text() == "second\n"


@pytest.mark.parametrize("name", ["prestart", "createRuntime"])
def test_hook_timeout_fails_create(oci: Oci, name: str) -> None:
    """config.md Hooks timeout: a hook running past `timeout` seconds is an error."""
    cfg = sh_config("true")
    cfg["hooks"] = {name: [{"path": "/bin/busybox", "args": ["sleep", "20"], "timeout": 1}]}
    cid, bundle = oci.bundle(cfg)
    t0 = time.monotonic()
    p = oci.rt.create(cid, bundle)
    assert p.returncode != 0 and p.stderr.strip()
    assert time.monotonic() - t0 < 10


# === config.md: Root, Process, Hostname, Mounts ==================================================


def test_root_readonly(oci: Oci) -> None:
    """config.md Root readonly=true: the root filesystem is read-only inside."""
    p = oci.sh("touch /newfile")
    assert p.returncode != 0 and "Read-only file system" in p.stderr


def test_root_writable_and_absolute_path(oci: Oci) -> None:
    """config.md Root: readonly=false lets the process write to the rootfs (seen on the
    host); root.path may be an absolute path outside the bundle."""
    rootfs = make_rootfs(oci.base / "elsewhere-rootfs", oci.template)
    cfg = sh_config("echo hi > /newfile")
    cfg["root"] = {"path": str(rootfs), "readonly": False}
    cid, bundle = oci.bundle(cfg)
    assert not (bundle / "rootfs").exists()
    ok(oci.rt.run(cid, bundle))
    assert (rootfs / "newfile").read_text() == "hi\n"


def test_process_cwd(oci: Oci) -> None:
    """config.md Process cwd: the working directory of the process."""
    assert ok(oci.sh("pwd", cwd="/etc")) == "/etc\n"


def test_process_env(oci: Oci) -> None:
    """config.md Process env: exactly the listed variables (the runtime's own environment
    does not leak; runc adds HOME when unset)."""
    env = ["PATH=/bin", "FOO=bar", "WITH_EQ=a=b=c", "SPACES=x y  z"]
    cfg = default_config(["env"])
    cfg["process"]["env"] = env
    got = ok(oci.run(cfg)).splitlines()
    for e in env:
        assert e in got
    assert not any(v.startswith(("PYTEST_", "MINIRUN_")) for v in got), got
    assert set(got) - set(env) <= {"HOME=/root"}, got


def test_process_args(oci: Oci) -> None:
    """config.md Process args: argv passed verbatim (no shell), args[0] looked up in PATH."""
    cfg = default_config(["echo", "a b", "$HOME", "*", "", "'q'"])
    assert ok(oci.run(cfg)) == "a b $HOME *  'q'\n"
    cfg = default_config(["/bin/sh", "-c", 'echo "$0|$1"', "zero", "one"])
    assert ok(oci.run(cfg)) == "zero|one\n"


def test_process_args_missing_executable(oci: Oci) -> None:
    """config.md Process args: the executable MUST be available in the rootfs; a missing
    one is an error, the container does not stay."""
    p = oci.run(default_config(["/no/such/binary"]))
    assert p.returncode != 0 and p.stderr.strip()


def test_process_user(oci: Oci) -> None:
    """config.md POSIX process user: uid, gid and additionalGids (as /proc sees them)."""
    p = oci.sh("id -u; id -g; id -G; grep -E '^(Uid|Gid|Groups):' /proc/self/status",
               user={"uid": 1000, "gid": 1001, "additionalGids": [10, 20]})  # fmt: skip
    lines = ok(p).splitlines()
    assert lines[:3] == ["1000", "1001", "10 20"] or lines[:3] == ["1000", "1001", "1001 10 20"]
    assert lines[3].split() == ["Uid:", "1000", "1000", "1000", "1000"]
    assert lines[4].split() == ["Gid:", "1001", "1001", "1001", "1001"]
    assert lines[5].split() == ["Groups:", "10", "20"]


def test_process_user_no_additional_gids(oci: Oci) -> None:
    """config.md POSIX process user: without additionalGids the process has no
    supplementary groups (the runtime's own are dropped)."""
    p = oci.sh("grep '^Groups:' /proc/self/status", user={"uid": 1000, "gid": 1001})
    assert ok(p).split() == ["Groups:"]


def test_process_user_umask(oci: Oci) -> None:
    """config.md POSIX process user umask."""
    cfg = sh_config("umask; touch /tmp/f; stat -c %a /tmp/f",
                    user={"uid": 0, "gid": 0, "umask": 0o027})  # fmt: skip
    cfg["mounts"].append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"})
    assert ok(oci.run(cfg)).split() == ["0027", "640"]


def test_hostname(oci: Oci) -> None:
    """config.md Hostname (needs a new UTS namespace)."""
    cfg = sh_config("hostname; cat /proc/sys/kernel/hostname")
    cfg["hostname"] = "oci-host"
    assert ok(oci.run(cfg)) == "oci-host\noci-host\n"
    assert socket.gethostname() != "oci-host"


@differs("domainname")
def test_domainname(oci: Oci) -> None:
    """config.md Domainname (runtime-spec 1.1+)."""
    cfg = sh_config("cat /proc/sys/kernel/domainname")
    cfg["domainname"] = "example.org"
    assert ok(oci.run(cfg)) == "example.org\n"


def test_mount_tmpfs_options(oci: Oci) -> None:
    """config.md Mounts: a tmpfs with size/mode and flag options; the mount point is
    created when missing."""
    cfg = sh_config("stat -c %a /mnt/deep/t; df -k /mnt/deep/t | tail -1; "
                    "awk '$5==\"/mnt/deep/t\" {print $6, $NF}' /proc/self/mountinfo")  # fmt: skip
    cfg["mounts"].append({"destination": "/mnt/deep/t", "type": "tmpfs", "source": "tmpfs",
                          "options": ["size=1m", "mode=0710", "nodev", "noexec", "nosuid"]})  # fmt: skip
    lines = ok(oci.run(cfg)).splitlines()
    assert lines[0] == "710"
    assert lines[1].split()[1] == "1024"
    flags, fs_opts = lines[2].split()
    assert {"nodev", "noexec", "nosuid"} <= set(flags.split(","))
    assert {"size=1024k", "mode=710"} <= set(fs_opts.split(","))


def test_mount_bind_rw_and_ro(oci: Oci) -> None:
    """config.md Mounts: bind mounts of a host dir, rw (writes reach the host) and ro."""
    src = oci.dir("src")
    (src / "in").write_text("from-host\n")
    cfg = sh_config("cat /rw/in; echo from-ctr > /rw/out; cat /ro/in; "
                    "echo x > /ro/nope || echo ro-refused")  # fmt: skip
    bind(cfg, src, "/rw", "rw")
    bind(cfg, src, "/ro", "ro")
    p = oci.run(cfg)
    assert ok(p) == "from-host\nfrom-host\nro-refused\n"
    assert "Read-only file system" in p.stderr
    assert (src / "out").read_text() == "from-ctr\n"
    assert not (src / "nope").exists()


def test_mount_rbind_vs_bind(oci: Oci) -> None:
    """config.md Mounts: `rbind` brings the source's submounts along, plain `bind` not."""
    src = oci.dir("src")
    (src / "sub").mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "oci-sub", str(src / "sub")],
                   check=True)  # fmt: skip
    try:
        (src / "sub" / "file").write_text("in-submount\n")
        cfg = sh_config("cat /r/sub/file; ls -A /b/sub | wc -l")
        cfg["mounts"].append({"destination": "/r", "type": "bind", "source": str(src),
                              "options": ["rbind", "ro"]})  # fmt: skip
        cfg["mounts"].append({"destination": "/b", "type": "bind", "source": str(src),
                              "options": ["bind", "ro"]})  # fmt: skip
        assert ok(oci.run(cfg)).split() == ["in-submount", "0"]
    finally:
        subprocess.run(["umount", "-l", str(src / "sub")], check=True)


def test_mount_order(oci: Oci) -> None:
    """config.md Mounts: the runtime MUST mount entries in the listed order."""
    cfg = sh_config("awk '$5 ~ /^\\/mnt/ {print $5}' /proc/self/mountinfo")
    cfg["mounts"] += [
        {"destination": "/mnt/a", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m"]},
        {"destination": "/mnt/a/b", "type": "tmpfs", "source": "tmpfs", "options": ["size=2m"]},
    ]
    assert ok(oci.run(cfg)).splitlines() == ["/mnt/a", "/mnt/a/b"]


def test_mount_relative_destination(oci: Oci) -> None:
    """config.md Mounts destination: a relative path (deprecated) MUST be taken relative
    to "/"."""
    cfg = sh_config("awk '$5==\"/mnt/rel\" {print $5}' /proc/self/mountinfo")
    cfg["mounts"].append({"destination": "mnt/rel", "type": "tmpfs", "source": "tmpfs"})
    assert ok(oci.run(cfg)) == "/mnt/rel\n"


def test_annotations_in_state(oci: Oci) -> None:
    """config.md Annotations -> runtime.md State annotations."""
    cfg = sh_config("sleep 30")
    cfg["annotations"] = {"a.b/c": "1", "empty": ""}
    cid, _ = oci.create(cfg)
    assert oci.state(cid)["annotations"] == {"a.b/c": "1", "empty": ""}


def test_unknown_properties_ignored(oci: Oci) -> None:
    """config.md Extensibility: unknown properties MUST be ignored, not an error."""
    cfg = sh_config("echo fine")
    cfg["org.example.bogus"] = {"nested": [1, 2]}
    cfg["process"]["bogusField"] = True
    cfg["linux"]["bogusLinux"] = "x"
    cfg["root"]["bogusRoot"] = 1
    cfg["mounts"][0]["bogusMount"] = None
    assert ok(oci.run(cfg)) == "fine\n"


# === config.md process (Linux): capabilities, rlimits, noNewPrivileges, oomScoreAdj ============


def _status_fields(out: str) -> dict[str, str]:
    return {k.strip(): v.strip() for k, _, v in (ln.partition(":") for ln in out.splitlines())}


def _capmask(*bits: int) -> str:
    return f"{sum(1 << b for b in bits):016x}"


CAP_CHOWN, CAP_KILL, CAP_NET_BIND_SERVICE, CAP_NET_RAW = 0, 5, 10, 13
CAP_SYS_CHROOT, CAP_AUDIT_WRITE = 18, 29


def test_capabilities_default(oci: Oci) -> None:
    """config.md Linux process capabilities: bounding/effective/permitted as listed."""
    f = _status_fields(ok(oci.sh("grep ^Cap /proc/self/status")))
    want = _capmask(CAP_AUDIT_WRITE, CAP_KILL, CAP_NET_BIND_SERVICE)
    assert (f["CapBnd"], f["CapEff"], f["CapPrm"]) == (want, want, want)


def test_capabilities_sets_and_ambient(oci: Oci) -> None:
    """config.md Linux process capabilities: each of the five sets, ambient included (it
    needs the cap in permitted and inheritable)."""
    caps = ["CAP_CHOWN", "CAP_NET_RAW", "CAP_SYS_CHROOT"]
    cfg = sh_config("grep ^Cap /proc/self/status")
    cfg["process"]["capabilities"] = {
        "bounding": caps, "effective": caps, "permitted": caps,
        "inheritable": ["CAP_NET_RAW"], "ambient": ["CAP_NET_RAW"],
    }  # fmt: skip
    cfg["process"]["noNewPrivileges"] = False
    f = _status_fields(ok(oci.run(cfg)))
    want = _capmask(CAP_CHOWN, CAP_NET_RAW, CAP_SYS_CHROOT)
    assert (f["CapBnd"], f["CapEff"], f["CapPrm"]) == (want, want, want)
    assert f["CapInh"] == f["CapAmb"] == _capmask(CAP_NET_RAW)


@pytest.mark.parametrize("granted", [True, False])
def test_capability_is_enforced(oci: Oci, granted: bool) -> None:
    """config.md Linux process capabilities: chroot(2) works only with CAP_SYS_CHROOT."""
    caps = ["CAP_SYS_CHROOT"] if granted else []
    cfg = sh_config("chroot / /bin/true && echo chroot-ok")
    cfg["process"]["capabilities"] = {k: caps for k in ("bounding", "effective", "permitted")}
    p = oci.run(cfg)
    if granted:
        assert ok(p) == "chroot-ok\n"
    else:
        assert p.returncode != 0 and "Operation not permitted" in p.stderr


def test_rlimits(oci: Oci) -> None:
    """config.md POSIX process rlimits: soft and hard values."""
    cfg = sh_config("ulimit -Sn; ulimit -Hn; grep -E '^Max (open files|core file size)' "
                    "/proc/self/limits")  # fmt: skip
    cfg["process"]["rlimits"] = [
        {"type": "RLIMIT_NOFILE", "soft": 512, "hard": 2048},
        {"type": "RLIMIT_CORE", "soft": 0, "hard": 4096},
    ]
    lines = ok(oci.run(cfg)).splitlines()
    assert lines[:2] == ["512", "2048"]
    core = next(ln for ln in lines if ln.startswith("Max core file size"))
    nofile = next(ln for ln in lines if ln.startswith("Max open files"))
    assert core.split()[4:6] == ["0", "4096"]
    assert nofile.split()[3:5] == ["512", "2048"]


@pytest.mark.parametrize("nnp", [True, False])
def test_no_new_privileges(oci: Oci, nnp: bool) -> None:
    """config.md Linux process noNewPrivileges."""
    cfg = sh_config("grep ^NoNewPrivs /proc/self/status")
    cfg["process"]["noNewPrivileges"] = nnp
    assert ok(oci.run(cfg)).split() == ["NoNewPrivs:", "1" if nnp else "0"]


def test_oom_score_adj(oci: Oci) -> None:
    """config.md Linux process oomScoreAdj."""
    cfg = sh_config("cat /proc/self/oom_score_adj")
    cfg["process"]["oomScoreAdj"] = 123
    assert ok(oci.run(cfg)) == "123\n"


# === config-linux.md: Namespaces, user namespace mappings ======================================

NS_FILE = {"pid": "pid", "network": "net", "ipc": "ipc", "uts": "uts", "mount": "mnt",
           "cgroup": "cgroup"}  # fmt: skip


def _with_namespaces(cfg: dict[str, Any], types: list[str]) -> None:
    cfg["linux"]["namespaces"] = [{"type": t} for t in types]
    if "uts" not in types:
        cfg.pop("hostname", None)


@pytest.mark.parametrize("ns", list(NS_FILE))
def test_namespace_new(oci: Oci, ns: str) -> None:
    """config-linux.md Namespaces: a listed type without path MUST be a new namespace."""
    cfg = sh_config(f"readlink /proc/self/ns/{NS_FILE[ns]}")
    _with_namespaces(cfg, ["pid", "network", "ipc", "uts", "mount", "cgroup"])
    inside = ok(oci.run(cfg)).strip()
    assert inside.startswith(f"{NS_FILE[ns]}:[")
    assert inside != os.readlink(f"/proc/self/ns/{NS_FILE[ns]}")


@pytest.mark.parametrize("ns", ["pid", "network", "ipc", "uts", "cgroup"])
def test_namespace_inherited_when_not_listed(oci: Oci, ns: str) -> None:
    """config-linux.md Namespaces: a type not listed MUST be the runtime's namespace."""
    cfg = sh_config(f"readlink /proc/self/ns/{NS_FILE[ns]}")
    _with_namespaces(cfg, [t for t in ("pid", "network", "ipc", "uts", "mount") if t != ns])
    assert ok(oci.run(cfg)).strip() == os.readlink(f"/proc/self/ns/{NS_FILE[ns]}")


def test_pid_namespace_init(oci: Oci) -> None:
    """config-linux.md Namespaces pid: the process is pid 1 and sees only its own."""
    lines = ok(oci.sh("echo $$; ps -o pid,comm; true")).splitlines()
    assert lines[0] == "1"
    procs = [ln.split() for ln in lines[2:]]  # after ps's header: sh (pid 1) and ps itself
    assert len(procs) == 2 and procs[0] == ["1", "sh"] and procs[1][1] == "ps", lines


def test_network_namespace_only_loopback(oci: Oci) -> None:
    """config-linux.md Namespaces network: a new stack with only lo."""
    assert ok(oci.sh("ls /sys/class/net")).split() == ["lo"]


def test_uts_change_stays_inside(oci: Oci) -> None:
    """config-linux.md Namespaces uts: a hostname change inside does not reach the host."""
    cfg = sh_config("hostname changed-inside; hostname")
    cfg["process"]["capabilities"] = {k: ["CAP_SYS_ADMIN"] for k in ("bounding", "effective",
                                                                      "permitted")}  # fmt: skip
    assert ok(oci.run(cfg)) == "changed-inside\n"
    assert socket.gethostname() != "changed-inside"


@pytest.fixture
def netns_holder() -> Iterator[int]:
    """A `sleep` in a new network namespace made with unshare(1); its pid."""
    proc = subprocess.Popen(["unshare", "--net", "sleep", "60"])
    try:
        host = os.readlink("/proc/self/ns/net")
        deadline = time.monotonic() + 5
        while os.readlink(f"/proc/{proc.pid}/ns/net") == host:
            assert time.monotonic() < deadline, "unshare --net did not take effect"
            time.sleep(0.01)
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def test_namespace_path_joined(oci: Oci, netns_holder: int) -> None:
    """config-linux.md Namespaces path: the process MUST be placed in that namespace."""
    target = f"/proc/{netns_holder}/ns/net"
    cfg = sh_config("readlink /proc/self/ns/net")
    cfg["linux"]["namespaces"] = [
        n for n in cfg["linux"]["namespaces"] if n["type"] != "network"
    ] + [{"type": "network", "path": target}]
    assert ok(oci.run(cfg)).strip() == os.readlink(target)


def test_user_namespace_mappings(oci: Oci) -> None:
    """config-linux.md User namespace mappings: uid_map/gid_map as configured; files owned
    by unmapped host ids show as the overflow id (the runtime does not chown the rootfs)."""
    cfg = sh_config("cat /proc/self/uid_map /proc/self/gid_map; id -u; id -g; "
                    "stat -c '%u %g' /bin/busybox")  # fmt: skip
    cfg["linux"]["namespaces"].append({"type": "user"})
    cfg["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    cfg["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 200000, "size": 65536}]
    cfg["mounts"] = [m for m in cfg["mounts"] if m["destination"] != "/sys/fs/cgroup"]
    lines = [ln.split() for ln in ok(oci.run(cfg)).splitlines()]
    assert lines[0] == ["0", "100000", "65536"]
    assert lines[1] == ["0", "200000", "65536"]
    assert lines[2:4] == [["0"], ["0"]]
    assert lines[4] == ["65534", "65534"]


# === config-linux.md: Devices ==================================================================

DEFAULT_DEVICES = {"null": (1, 3), "zero": (1, 5), "full": (1, 7), "random": (1, 8),
                   "urandom": (1, 9), "tty": (5, 0)}  # fmt: skip


def test_default_devices(oci: Oci) -> None:
    """config-linux.md Default Devices (+ /dev/ptmx, and the /dev/fd, stdin/out/err
    symlinks of runc's and crun's dev setup); they are usable."""
    script = "".join(f"stat -c '%n %F %t %T' /dev/{d}; " for d in DEFAULT_DEVICES)
    script += "[ -e /dev/ptmx ] && echo ptmx; "
    script += "".join(f"readlink /dev/{n}; " for n in ("fd", "stdin", "stdout", "stderr"))
    script += "echo x > /dev/null && head -c 3 /dev/zero | wc -c"
    lines = ok(oci.sh(script)).splitlines()
    assert lines[:6] == [f"/dev/{name} character special file {major:x} {minor:x}"
                         for name, (major, minor) in DEFAULT_DEVICES.items()]  # fmt: skip
    assert lines[6:] == ["ptmx", "/proc/self/fd", "/proc/self/fd/0", "/proc/self/fd/1",
                         "/proc/self/fd/2", "3"]  # fmt: skip


@pytest.mark.parametrize("allowed", [True, False])
def test_device_node_and_allowlist(oci: Oci, allowed: bool) -> None:
    """config-linux.md Devices (node with type/major/minor/fileMode/uid/gid) and Allowed
    Device list (cgroup): the node exists either way; opening it is denied unless allowed."""
    cfg = sh_config("stat -c '%F %t %T %a %u %g' /dev/fuse; : < /dev/fuse && echo opened")
    cfg["linux"]["devices"] = [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229,
                                "fileMode": 0o640, "uid": 0, "gid": 5}]  # fmt: skip
    if allowed:
        cfg["linux"]["resources"]["devices"].append(
            {"allow": True, "type": "c", "major": 10, "minor": 229, "access": "rw"})
    p = oci.run(cfg)
    if allowed:
        assert ok(p) == "character special file a e5 640 0 5\nopened\n"
    else:
        assert p.stdout == "character special file a e5 640 0 5\n"
        assert p.returncode != 0 and "can't open /dev/fuse: Operation not permitted" in p.stderr


# === config-linux.md: Control groups ===========================================================

CGROUP_PROBE = (
    "cd /sys/fs/cgroup; if [ -e cgroup.controllers ]; then echo v2; cat memory.max pids.max "
    "cpu.max cpu.weight; else echo v1; cat memory/memory.limit_in_bytes pids/pids.max "
    "cpu/cpu.cfs_quota_us cpu/cpu.cfs_period_us cpu/cpu.shares; fi"
)


def test_resources_memory_pids_cpu(oci: Oci) -> None:
    """config-linux.md Memory limit, Pids limit, CPU shares/quota/period, read from the
    container's own cgroup files inside (cgroup namespace; v1 or v2)."""
    cfg = sh_config(CGROUP_PROBE)
    cfg["linux"]["namespaces"].append({"type": "cgroup"})
    cfg["linux"]["resources"].update({
        "memory": {"limit": 64 << 20}, "pids": {"limit": 32},
        "cpu": {"shares": 512, "quota": 50000, "period": 100000},
    })  # fmt: skip
    lines = ok(oci.run(cfg)).splitlines()
    if lines[0] == "v1":
        assert lines[1:] == [str(64 << 20), "32", "50000", "100000", "512"]
    else:  # shares -> weight as runc/crun convert: 1 + (shares - 2) * 9999 / 262142
        assert lines[1:] == [str(64 << 20), "32", "50000 100000", "20"]


@pytest.mark.parametrize("limit", [4, 64])
def test_resources_pids_limit_enforced(oci: Oci, limit: int) -> None:
    """config-linux.md Pids limit: forks beyond it fail (EAGAIN) inside the container."""
    cfg = sh_config("for i in 1 2 3 4 5 6 7 8 9 10; do sleep 5 & done; echo forked-10")
    cfg["linux"]["resources"]["pids"] = {"limit": limit}
    p = oci.run(cfg)
    if limit < 11:
        assert p.returncode != 0 and "can't fork: Resource temporarily unavailable" in p.stderr
        assert p.stdout == ""
    else:
        assert ok(p) == "forked-10\n"


def test_cgroups_path_honoured(oci: Oci) -> None:
    """config-linux.md Cgroups Path: an absolute cgroupsPath is relative to the cgroups
    mount point; the process is in it (host view and /proc/self/cgroup inside), the
    limits are written there, and delete removes it."""
    out = oci.dir("out")
    cfg = sh_config("cat /proc/self/cgroup > /out/tmp && mv /out/tmp /out/cgroup; sleep 30")
    bind(cfg, out, "/out", "rw")
    cfg["linux"]["resources"]["memory"] = {"limit": 32 << 20}
    cid, _ = oci.create(cfg)
    ok(oci.rt.start(cid))
    pid = oci.state(cid)["pid"]
    assert wait_file(out / "cgroup")
    path = cgroups_path(cid)
    if os.path.exists(f"{CGROUP_ROOT}/cgroup.controllers"):  # v2
        dirs = {"": f"{CGROUP_ROOT}{path}"}
        limit_file = ("", "memory.max")
    else:
        dirs = {c: f"{CGROUP_ROOT}/{c}{path}" for c in ("memory", "pids", "cpu", "devices")}
        limit_file = ("memory", "memory.limit_in_bytes")
    for d in dirs.values():
        procs = Path(d, "cgroup.procs").read_text().split()
        assert str(pid) in procs, (d, procs)
    assert Path(dirs[limit_file[0]], limit_file[1]).read_text().strip() == str(32 << 20)
    inside = (out / "cgroup").read_text().splitlines()
    own = [ln for ln in inside if (ln.startswith("0::") if not limit_file[0] else ":memory:" in ln)]
    assert len(own) == 1 and own[0].endswith(f":{path}"), inside
    ok(oci.rt.delete(cid, force=True))
    assert cgroup_dirs(cid) == []


# === config-linux.md: Sysctl, Seccomp, Rootfs Mount Propagation, Masked/Readonly Paths =========


def test_sysctl(oci: Oci) -> None:
    """config-linux.md Sysctl: namespaced kernel parameters set inside, host untouched."""
    host = {k: Path(f"/proc/sys/{k}").read_text() for k in
            ("net/ipv4/ip_forward", "kernel/shm_rmid_forced")}  # fmt: skip
    want = {k: "0" if v.strip() == "1" else "1" for k, v in host.items()}
    cfg = sh_config("cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shm_rmid_forced")
    cfg["linux"]["sysctl"] = {"net.ipv4.ip_forward": want["net/ipv4/ip_forward"],
                              "kernel.shm_rmid_forced": want["kernel/shm_rmid_forced"]}  # fmt: skip
    assert ok(oci.run(cfg)).split() == [want["net/ipv4/ip_forward"],
                                        want["kernel/shm_rmid_forced"]]  # fmt: skip
    assert {k: Path(f"/proc/sys/{k}").read_text() for k in host} == host


SCMP_ARCH = {"x86_64": "SCMP_ARCH_X86_64", "aarch64": "SCMP_ARCH_AARCH64"}


def test_seccomp_errno(oci: Oci) -> None:
    """config-linux.md Seccomp: defaultAction allow, listed syscalls fail with errnoRet
    (EACCES) or, without it, EPERM; everything else works."""
    cfg = sh_config("grep '^Seccomp:' /proc/self/status; touch /tmp/f && echo touch-ok; "
                    "mkdir /tmp/d; cd /tmp && /bin/pwd")  # fmt: skip
    cfg["mounts"].append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"})
    cfg["linux"]["seccomp"] = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": [SCMP_ARCH.get(platform.machine(), "SCMP_ARCH_NATIVE")],
        "syscalls": [
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
            {"names": ["getcwd"], "action": "SCMP_ACT_ERRNO"},
        ],
    }
    p = oci.run(cfg)
    assert p.stdout.splitlines()[:2] == ["Seccomp:\t2", "touch-ok"]
    assert "mkdir: can't create directory '/tmp/d': Permission denied" in p.stderr
    assert "getcwd: Operation not permitted" in p.stderr


@pytest.mark.parametrize(
    "prop,shared",
    [pytest.param("shared", True, marks=differs("rootfs_shared")), ("private", False),
     pytest.param("rshared", True, marks=differs("rootfs_shared")), ("rprivate", False)],
)  # fmt: skip
def test_rootfs_propagation(oci: Oci, prop: str, shared: bool) -> None:
    """config-linux.md Rootfs Mount Propagation: the container's / is shared or private."""
    cfg = sh_config("awk '$5==\"/\"' /proc/self/mountinfo")
    cfg["linux"]["rootfsPropagation"] = prop
    line = ok(oci.run(cfg))
    optional = line.split(" - ")[0].split()[6:]
    assert any(f.startswith("shared:") for f in optional) is shared, line
    if not shared:
        assert optional == [], line


def test_masked_paths(oci: Oci) -> None:
    """config-linux.md Masked Paths: files read as empty, dirs are empty; a path that does
    not exist is ignored."""
    masked_file = "/proc/timer_list"
    if not os.path.exists(masked_file) or not Path(masked_file).read_text():
        pytest.skip(f"{masked_file} is missing or empty on this host")
    assert os.listdir("/sys/firmware"), "precondition: /sys/firmware has entries on the host"
    cfg = sh_config(f"wc -c < {masked_file}; wc -c < /etc/group; ls -A /sys/firmware | wc -l; "
                    "wc -c < /etc/passwd | tr -d ' '")  # fmt: skip
    cfg["linux"]["maskedPaths"] = [masked_file, "/etc/group", "/sys/firmware", "/no/such/path"]
    lines = [ln.strip() for ln in ok(oci.run(cfg)).splitlines()]
    assert lines[:3] == ["0", "0", "0"]
    assert int(lines[3]) > 0  # not masked


def test_readonly_paths(oci: Oci) -> None:
    """config-linux.md Readonly Paths: read-only inside even with a writable root; a path
    that does not exist is ignored."""
    cfg = sh_config("touch /etc/ok && echo etc-writable; touch /srv/x || echo srv-ro; "
                    "echo 1 > /proc/sys/kernel/shm_rmid_forced || echo sys-ro; cat /srv/f")  # fmt: skip
    cfg["root"]["readonly"] = False
    cfg["linux"]["readonlyPaths"] = ["/srv", "/proc/sys", "/no/such/path"]
    cid, bundle = oci.bundle(cfg)
    (bundle / "rootfs" / "srv").mkdir()
    (bundle / "rootfs" / "srv" / "f").write_text("readable\n")
    p = oci.rt.run(cid, bundle)
    assert ok(p).splitlines() == ["etc-writable", "srv-ro", "sys-ro", "readable"]
    assert p.stderr.count("Read-only file system") == 2


# === errors: invalid configurations ============================================================


def _drop_ns(cfg: dict[str, Any], ns: str) -> list[dict[str, Any]]:
    return [n for n in cfg["linux"]["namespaces"] if n["type"] != ns]


INVALID: dict[str, Callable[[dict[str, Any]], None]] = {
    # config-linux.md Namespaces: every type is one of the listed ones
    "namespace-type-bogus": lambda c: c["linux"]["namespaces"].append({"type": "bogus"}),
    # config-linux.md Namespaces: duplicated types MUST error
    "namespace-duplicate": lambda c: c["linux"]["namespaces"].append({"type": "pid"}),
    # config-linux.md Namespaces: path not associated with a namespace of that type
    "namespace-path-wrong-type": lambda c: c["linux"].update(
        namespaces=_drop_ns(c, "network") + [{"type": "network", "path": "/proc/1/ns/ipc"}]),
    "namespace-path-missing": lambda c: c["linux"].update(
        namespaces=_drop_ns(c, "network") + [{"type": "network", "path": "/proc/0/ns/net"}]),
    # config.md Hostname: needs a new UTS namespace
    "hostname-without-uts": lambda c: c["linux"].update(namespaces=_drop_ns(c, "uts")),
    # config.md POSIX process rlimits: a type that maps to no kernel resource
    "rlimit-bogus": lambda c: c["process"]["rlimits"].append(
        {"type": "RLIMIT_BOGUS", "soft": 1, "hard": 1}),
    # config.md Process args: REQUIRED, non-empty
    "args-empty": lambda c: c["process"].update(args=[]),
    # config.md Process cwd: MUST be absolute
    "cwd-relative": lambda c: c["process"].update(cwd="tmp"),
    # config-linux.md Rootfs Mount Propagation: one of the listed values
    "rootfs-propagation-bogus": lambda c: c["linux"].update(rootfsPropagation="bogus"),
    # config-linux.md Seccomp: actions are the listed SCMP_ACT_* values
    "seccomp-action-bogus": lambda c: c["linux"].update(
        seccomp={"defaultAction": "SCMP_ACT_BOGUS"}),
    # config.md Mounts: a bind mount whose source does not exist
    "bind-source-missing": lambda c: bind(c, "/no/such/source", "/mnt"),
}
INVALID_DIFFERS = {"namespace-duplicate": "duplicate_namespace", "cwd-relative": "relative_cwd",
                   "rootfs-propagation-bogus": "bogus_propagation"}  # fmt: skip


@pytest.mark.parametrize(
    "case",
    [pytest.param(k, marks=differs(INVALID_DIFFERS[k])) if k in INVALID_DIFFERS else k
     for k in INVALID],
)  # fmt: skip
def test_invalid_config_errors(oci: Oci, case: str) -> None:
    """runtime.md Lifecycle 2 / Errors: a config the runtime cannot realise MUST generate
    an error (non-zero exit and a message), leave no container behind (the teardown
    checks cgroups and processes) and not run the process."""
    out = oci.dir("out")
    cfg = sh_config("echo ran > /out/marker")
    bind(cfg, out, "/out", "rw")
    INVALID[case](cfg)
    cid, bundle = oci.bundle(cfg)
    p = oci.rt.create(cid, bundle)
    assert p.returncode != 0, p
    assert p.stderr.strip(), "no error message"
    oci.rt.start(cid)
    time.sleep(0.1)
    assert not (out / "marker").exists()
    st = oci.rt.state_result(cid)
    assert st.returncode != 0 or json.loads(st.stdout)["status"] == "stopped"


def test_invalid_json_config(oci: Oci) -> None:
    """bundle.md: config.json MUST be valid JSON; a broken one is an error."""
    cid, bundle = oci.bundle(sh_config("true"))
    (bundle / "config.json").write_text('{"ociVersion": "1.0.2", "process": ')
    p = oci.rt.create(cid, bundle)
    assert p.returncode != 0 and p.stderr.strip()
    assert oci.rt.state_result(cid).returncode != 0


# === runc CLI: global options, features, spec ==================================================


def test_log_json(oci: Oci) -> None:
    """runc CLI --log FILE --log-format json: errors are JSON lines with level and msg."""
    cfg = sh_config("true")
    cfg["linux"]["namespaces"].append({"type": "bogus"})
    cid, bundle = oci.bundle(cfg)
    log = oci.base / "log.json"
    p = oci.rt.create(cid, bundle, global_args=("--log", str(log), "--log-format", "json"))
    assert p.returncode != 0
    entries = [json.loads(ln) for ln in log.read_text().splitlines() if ln.strip()]
    errors = [e for e in entries if e.get("level") == "error"]
    assert errors and all(isinstance(e.get("msg"), str) and e["msg"] for e in errors)
    assert any("bogus" in e["msg"] for e in errors)


@differs("features")
def test_features(oci: Oci) -> None:
    """features.md: `features` prints the runtime's supported ociVersion range, hooks,
    mount options and Linux namespaces as JSON."""
    f = json.loads(ok(oci.rt("features")))
    assert re.match(r"^1\.\d+\.\d+", f["ociVersionMin"]) and f["ociVersionMax"]
    assert set(HOOK_NAMES) <= set(f["hooks"])
    assert {"bind", "rbind", "ro", "nosuid"} <= set(f["mountOptions"])
    assert {"pid", "network", "mount", "ipc", "uts", "user", "cgroup"} <= set(
        f["linux"]["namespaces"])


def test_spec_writes_usable_config(oci: Oci) -> None:
    """runc CLI `spec --bundle DIR`: a default config.json that runs a rootfs/ busybox."""
    cid = oci.new_id()
    bundle = oci.base / "spec-bundle"
    bundle.mkdir()
    ok(oci.rt("spec", "--bundle", str(bundle)))
    cfg = json.loads((bundle / "config.json").read_text())
    assert cfg["ociVersion"] and cfg["root"]["path"] == "rootfs"
    assert cfg["process"]["args"] == ["sh"]
    cfg["process"].update(terminal=False, args=["echo", "from-spec"])
    cfg["linux"]["cgroupsPath"] = cgroups_path(cid)
    make_rootfs(bundle / "rootfs", oci.template)
    write_config(bundle, cfg)
    assert ok(oci.rt.run(cid, bundle)) == "from-spec\n"
