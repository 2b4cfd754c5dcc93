"""The runc command line that engines (containerd's shim, conmon, Docker) rely on, beyond
what the spec's lifecycle needs: --log/--log-format, features, spec, list, ps, kill
variants, exec's flags, update, pause/resume, pid files, run's exit status, crash-safety,
--systemd-cgroup and bad input.

test_oci_conformance.py covers the runtime-spec lifecycle and config fields; this module
reuses its ``oci`` fixture (bundles, the ``Runtime`` wrapper, and a teardown that
``delete --force``-es every container and fails the test on any container, process,
cgroup dir or host mount left behind).

Every test runs against the runtime under test (``$MINIRUN_TEST_RUNTIME``: "runc", "crun",
or a path; default the venv's ``minirun-runtime``) and passes against runc 1.1. Where
crun differs, the test is a strict xfail for crun (``DIFFERENCES``); the assertion stays
what runc does. Tests that only make sense for minirun are marked ``minirun_only`` and
skipped for other runtimes.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration import test_oci_conformance as conformance
from tests.integration.test_oci_conformance import TRAP_SCRIPT, Oci, bind, ok, wait_file
from tests.oci_bundle import (
    CGROUP_ROOT,
    DEFAULT_TIMEOUT,
    Runtime,
    cgroup_dirs,
    cgroups_path,
    make_rootfs,
    pid_alive,
    runtime_name,
    sh_config,
    wait_pid_gone,
    write_config,
)

pytestmark = pytest.mark.root

# the conformance module's fixtures, bound here under their own names so pytest finds them
runtime_binary = conformance.runtime_binary
work_base = conformance.work_base
oci = conformance.oci

RUNTIME = runtime_name()

# key -> {runtime name: reason}: a strict xfail for the runtimes listed.
DIFFERENCES: dict[str, dict[str, str]] = {
    "features": {"crun": "crun 1.8.1 has no `features` command"},
    "log_text": {
        "crun": "crun 1.8 --log-format text writes the bare message, not logrus' "
        '`time="..." level=error msg="..."`',
    },
    "systemd_message": {
        "crun": "crun 1.8 only says 'cannot open sd-bus: No such file or directory'",
    },
    "rootless_mappings": {
        "crun": "crun 1.8 `spec --rootless` adds a user namespace but no uid/gid mappings",
    },
    "list_table": {"crun": "crun 1.8 `list` heads its table NAME PID STATUS BUNDLE PATH ..."},
    "ps_table": {"crun": "crun 1.8 `ps ID` prints only a PID column, not ps(1)'s table"},
    "kill_bogus": {"crun": "crun 1.8 `kill ID BOGUS` exits 0 (an unknown name is signal 0)"},
    "not_found_message": {
        "crun": "crun 1.8 says 'executable file `CMD` not found in $PATH'",
    },
    "resume_running": {"crun": "crun 1.8 `resume` of a running container exits 0"},
    "pid_file_relative": {
        "crun": "crun 1.8 writes a relative --pid-file relative to the bundle, not the cwd",
    },
    "run_keep": {"crun": "crun 1.8 `run` has no --keep"},
    "kill_created_term": {
        "crun": "crun 1.8's created init ignores SIGTERM (it stays 'created')",
    },
    "kill_paused_kill": {
        "crun": "crun 1.8 does not thaw a paused container for SIGKILL (it stays 'paused')",
    },
}


def differs(key: str) -> pytest.MarkDecorator:
    reason = DIFFERENCES[key].get(RUNTIME)
    return pytest.mark.xfail(reason is not None, reason=reason or "", strict=True)


minirun_only = pytest.mark.skipif(
    RUNTIME != "minirun-runtime", reason="minirun-specific (runs against minirun-runtime only)"
)

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")
NAMESPACES = {"pid", "network", "mount", "ipc", "uts", "user", "cgroup"}

# Probes put into a bundle's rootfs, so exec's own flags are tested with plain arguments
# (test_exec_args_with_dashes covers arguments that look like options).
PROBES = {
    "probe": '#!/bin/sh\npwd\necho "uid=$(id -u) gid=$(id -g)"\necho "FOO=$FOO"\n',
    "exitwith": '#!/bin/sh\nexit "$1"\n',
}


# --- helpers ------------------------------------------------------------------------------------


def state_root_entries(rt: Runtime) -> list[str]:
    """What is under the runtime's --root (it need not exist)."""
    return sorted(os.listdir(rt.root)) if rt.root.exists() else []


def detached(rt: Runtime, name: str, *args: str,
             global_args: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """A command that leaves a process holding its stdio (exec -d, run -d): stdout and
    stderr go to files, not pipes ``subprocess.run`` would wait on."""
    out, err = rt.io_dir / f"{name}.out", rt.io_dir / f"{name}.err"
    with open(out, "wb") as o, open(err, "wb") as e:
        p = subprocess.run(rt.cmd(*args, global_args=global_args), stdin=subprocess.DEVNULL,
                           stdout=o, stderr=e, timeout=DEFAULT_TIMEOUT)  # fmt: skip
    return subprocess.CompletedProcess(p.args, p.returncode, out.read_text(), err.read_text())


def started(oci: Oci, cfg: dict[str, Any], ready: str = "ready\n") -> tuple[str, Path, int]:
    """create + start a container whose process prints ``ready`` once set up; (id, bundle,
    init's host pid)."""
    cid, bundle = oci.create(cfg)
    ok(oci.rt.start(cid))
    if ready:
        assert ready in oci.rt.wait_output(cid, ready), oci.rt.output(cid)
    st = oci.state(cid)
    assert st["status"] == "running"
    return cid, bundle, int(st["pid"])


def add_probes(bundle: Path) -> None:
    for name, text in PROBES.items():
        path = bundle / "rootfs" / name
        path.write_text(text)
        path.chmod(0o755)


def children(pid: int) -> list[int]:
    """The host pids whose parent is ``pid``."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.append(int(entry))
    return out


def wait_for(pred: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.02)


def cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_text().split("\0")[:-1]


def unified() -> bool:
    return os.path.exists(f"{CGROUP_ROOT}/cgroup.controllers")


def v1_mount_points() -> dict[str, str]:
    """cgroup v1 controller -> its hierarchy's mount point (from /proc/self/mountinfo)."""
    out: dict[str, str] = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fstype, _source, superopts = right.split()[:3]
            if fstype == "cgroup":
                for opt in superopts.split(","):
                    out.setdefault(opt, left.split()[4])
    return out


def host_cgroup_dir(pid: int, controller: str) -> Path:
    """The host dir of the cgroup ``pid`` is in, for ``controller`` (v1), or its unified
    cgroup (v2): read from /proc/PID/cgroup, as an engine finds a container's cgroup."""
    lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    if unified():
        rel = next(ln.split(":", 2)[2] for ln in lines if ln.startswith("0::"))
        return Path(CGROUP_ROOT + rel)
    mounts = v1_mount_points()
    for ln in lines:
        _, controllers, rel = ln.split(":", 2)
        if controller in controllers.split(","):
            return Path(mounts[controller] + rel)
    raise AssertionError(f"no {controller} cgroup in /proc/{pid}/cgroup: {lines}")


def limits(pid: int) -> dict[str, str]:
    """The memory limit, pids limit and cpu weight/shares of ``pid``'s cgroup, host side."""
    if unified():
        d = host_cgroup_dir(pid, "")
        files = {"memory": d / "memory.max", "pids": d / "pids.max", "cpu": d / "cpu.weight"}
    else:
        files = {"memory": host_cgroup_dir(pid, "memory") / "memory.limit_in_bytes",
                 "pids": host_cgroup_dir(pid, "pids") / "pids.max",
                 "cpu": host_cgroup_dir(pid, "cpu") / "cpu.shares"}  # fmt: skip
    return {k: p.read_text().strip() for k, p in files.items()}


def frozen(pid: int) -> bool:
    if unified():
        return (host_cgroup_dir(pid, "") / "cgroup.freeze").read_text().strip() == "1"
    return (host_cgroup_dir(pid, "freezer") / "freezer.state").read_text().strip() == "FROZEN"


def one_line(p: subprocess.CompletedProcess[str]) -> str:
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, f"want a one-line message on stderr, got {p.stderr!r}"
    return lines[0]


# === --log FILE --log-format json|text ========================================================

EARLIER_JSON = '{"level":"info","msg":"an earlier line","time":"2020-01-01T00:00:00Z"}\n'
EARLIER_TEXT = 'time="2020-01-01T00:00:00Z" level=info msg="an earlier line"\n'


def failing_command(oci: Oci, how: str, log_args: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
    """A command that fails: `start` of a missing id, or `create` from a broken config."""
    if how == "start-missing":
        return oci.rt("start", f"nope-{os.urandom(4).hex()}", global_args=log_args)
    cid, bundle = oci.bundle(sh_config("true"))
    (bundle / "config.json").write_text('{"ociVersion": "1.0.2", "process": ')
    return oci.rt.create(cid, bundle, global_args=log_args)


@pytest.mark.parametrize("how", ["start-missing", "create-bad-config"])
def test_log_json_appends_error_line(oci: Oci, how: str) -> None:
    """runc --log FILE --log-format json: the failing command exits 1, says why on stderr
    and appends {"level": "error", "msg", "time"} to FILE (what containerd's shim and conmon
    read back); what FILE held before stays."""
    log = oci.base / "log.json"
    log.write_text(EARLIER_JSON)
    p = failing_command(oci, how, ("--log", str(log), "--log-format", "json"))
    assert p.returncode == 1, p
    assert p.stderr.strip(), "no error on stderr"
    lines = log.read_text().splitlines(keepends=True)
    assert lines[0] == EARLIER_JSON
    entries = [json.loads(ln) for ln in lines[1:] if ln.strip()]
    errors = [e for e in entries if e.get("level") == "error"]
    assert errors, entries
    for e in errors:
        assert {"level", "msg", "time"} <= set(e), e
        assert isinstance(e["msg"], str) and e["msg"] and e["msg"] in p.stderr, (e, p.stderr)
        assert RFC3339.match(e["time"]), e


@differs("log_text")
def test_log_text_is_logrus_line(oci: Oci) -> None:
    """runc --log FILE --log-format text: a logrus line `time="RFC3339" level=error
    msg="..."`, appended."""
    log = oci.base / "log.txt"
    log.write_text(EARLIER_TEXT)
    p = failing_command(oci, "start-missing", ("--log", str(log), "--log-format", "text"))
    assert p.returncode == 1 and p.stderr.strip(), p
    lines = log.read_text().splitlines(keepends=True)
    assert lines[0] == EARLIER_TEXT
    logrus = re.compile(r'^time="(?P<time>[^"]+)" level=(?P<level>\w+) msg=(?P<msg>"(?:[^"\\]|\\.)*"|\S+)$')
    new = [logrus.match(ln.rstrip("\n")) for ln in lines[1:]]
    assert new and all(new), lines[1:]
    errors = [m for m in new if m and m["level"] == "error"]
    assert errors, lines[1:]
    for m in errors:
        assert RFC3339.match(m["time"]), m[0]
        msg = json.loads(m["msg"]) if m["msg"].startswith('"') else m["msg"]
        assert msg and msg in p.stderr, (msg, p.stderr)


# === features, spec ==============================================================================


@differs("features")
def test_features_json(oci: Oci) -> None:
    """runc features: JSON with the OCI version range, the 7 namespace types, the known
    capabilities and seccomp actions."""
    f = json.loads(ok(oci.rt("features")))

    def version(v: str) -> tuple[int, ...]:
        m = re.match(r"^(\d+)\.(\d+)\.(\d+)", v)
        assert m, v
        return tuple(int(x) for x in m.groups())

    assert version(f["ociVersionMin"]) <= version(f["ociVersionMax"])
    assert version(f["ociVersionMin"])[0] == 1
    lx = f["linux"]
    assert NAMESPACES <= set(lx["namespaces"]), lx["namespaces"]
    assert "CAP_SYS_ADMIN" in lx["capabilities"] and "CAP_KILL" in lx["capabilities"]
    assert {"SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL"} <= set(lx["seccomp"]["actions"])


def test_spec_writes_config_once_and_runs(oci: Oci) -> None:
    """runc spec -b DIR: writes DIR/config.json, refuses (exit 1, file untouched) when one
    exists; with terminal off and other args, the bundle runs."""
    bundle = oci.base / "spec-bundle"
    bundle.mkdir()
    ok(oci.rt("spec", "-b", str(bundle)))
    text = (bundle / "config.json").read_text()
    cfg = json.loads(text)
    assert cfg["ociVersion"] and cfg["root"]["path"] == "rootfs" and cfg["process"]["args"]
    p = oci.rt("spec", "-b", str(bundle))
    assert p.returncode == 1 and p.stderr.strip(), p
    assert (bundle / "config.json").read_text() == text

    cid = oci.new_id()
    cfg["process"].update(terminal=False, args=["sh", "-c", "echo from-spec; hostname"])
    cfg["linux"]["cgroupsPath"] = cgroups_path(cid)
    make_rootfs(bundle / "rootfs", oci.template)
    write_config(bundle, cfg)
    assert ok(oci.rt.run(cid, bundle)) == f"from-spec\n{cfg['hostname']}\n"


@differs("rootless_mappings")
def test_spec_rootless_maps_caller(oci: Oci) -> None:
    """runc spec --rootless: a user namespace mapping the caller's uid/gid to root; the
    bundle runs (as root here, so the mapping is 0 -> 0)."""
    bundle = oci.base / "rootless-bundle"
    bundle.mkdir()
    ok(oci.rt("spec", "--rootless", "-b", str(bundle)))
    cfg = json.loads((bundle / "config.json").read_text())
    lx = cfg["linux"]
    assert "user" in {n["type"] for n in lx["namespaces"]}
    assert {"containerID": 0, "hostID": os.geteuid(), "size": 1} in lx["uidMappings"]
    assert {"containerID": 0, "hostID": os.getegid(), "size": 1} in lx["gidMappings"]

    cid = oci.new_id()
    cfg["process"].update(terminal=False, args=["sh", "-c", "id -u; cat /proc/self/uid_map"])
    lx["cgroupsPath"] = cgroups_path(cid)
    make_rootfs(bundle / "rootfs", oci.template)
    write_config(bundle, cfg)
    lines = ok(oci.rt.run(cid, bundle)).splitlines()
    assert lines[0] == "0"
    assert lines[1].split() == ["0", str(os.geteuid()), "1"]


# === list, ps ==================================================================================


@differs("list_table")
def test_list_table_json_quiet(oci: Oci) -> None:
    """runc list (table), --format json, -q: created, running and stopped containers."""
    created, _ = oci.create(sh_config("sleep 30"))
    running, _, running_pid = started(oci, sh_config("echo ready; sleep 30"))
    stopped, bundle = oci.bundle(sh_config("true"))
    ok(detached(oci.rt, stopped, "run", "-d", "--bundle", str(bundle), stopped))
    assert oci.rt.wait_status(stopped, "stopped")["status"] == "stopped"
    created_pid = oci.state(created)["pid"]
    want = {created: ("created", created_pid), running: ("running", running_pid),
            stopped: ("stopped", 0)}  # fmt: skip

    assert sorted(oci.rt.list_ids()) == sorted(want)

    rows = json.loads(ok(oci.rt("list", "--format", "json")))
    assert {r["id"]: (r["status"], r["pid"]) for r in rows} == want
    for r in rows:
        assert os.path.isabs(r["bundle"]) and RFC3339.match(r["created"]), r

    lines = ok(oci.rt("list")).splitlines()
    assert lines[0].split() == ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]
    table = {f[0]: (f[2], int(f[1])) for f in (ln.split() for ln in lines[1:])}
    assert table == want


@differs("ps_table")
def test_ps_json_and_table(oci: Oci) -> None:
    """runc ps --format json ID: the host pids of the container's processes (the init and
    the child it forked); ps ID: ps(1)'s header and those processes' lines."""
    cid, _, pid = started(oci, sh_config("sleep 300 & echo ready; wait"))
    kids = wait_for(lambda: [k for k in children(pid) if cmdline(k) == ["sleep", "300"]])
    assert len(kids) == 1, children(pid)
    oci.pids.add(kids[0])

    pids = json.loads(ok(oci.rt("ps", "--format", "json", cid)))
    assert isinstance(pids, list) and all(isinstance(x, int) for x in pids)
    assert {pid, kids[0]} <= set(pids)

    lines = ok(oci.rt("ps", cid)).splitlines()
    header = lines[0].split()
    assert "PID" in header and "CMD" in header, lines[0]
    col = header.index("PID")
    listed = {int(ln.split()[col]): ln for ln in lines[1:]}
    assert pid in listed and kids[0] in listed, lines
    assert "sleep 300" in listed[kids[0]]


# === kill =======================================================================================


@pytest.mark.parametrize("sig", [None, "KILL", "9"])
def test_kill_variants(oci: Oci, sig: str | None) -> None:
    """runc kill ID [SIGNAL]: no signal is SIGTERM (the container's trap sees it); KILL and
    9 kill the init (gone on the host; state stopped, pid 0)."""
    cid, _, pid = started(oci, sh_config(TRAP_SCRIPT))
    ok(oci.rt.kill(cid, sig))
    assert wait_pid_gone(pid)
    st = oci.rt.wait_status(cid, "stopped")
    assert (st["status"], st["pid"]) == ("stopped", 0)
    assert oci.rt.output(cid) == ("ready\ngot-TERM\n" if sig is None else "ready\n")


def test_kill_all_kills_children(oci: Oci) -> None:
    """runc kill --all ID SIGKILL: every process of the container dies, the init's child
    too (seen from the host)."""
    cid, _, pid = started(oci, sh_config("sleep 300 & echo ready; wait"))
    kids = wait_for(lambda: [k for k in children(pid) if cmdline(k) == ["sleep", "300"]])
    assert kids, children(pid)
    oci.pids.update(kids)
    ok(oci.rt.kill(cid, "SIGKILL", all=True))
    assert wait_pid_gone(kids[0]) and wait_pid_gone(pid)
    assert oci.rt.wait_status(cid, "stopped")["status"] == "stopped"


@differs("kill_created_term")
def test_kill_created_container_default_sigterm(oci: Oci) -> None:
    """runc kill ID (SIGTERM) of a created, never started container: its init dies (runc's
    init exits on TERM), the state is stopped and the process never runs."""
    out = oci.dir("out")
    cfg = sh_config("echo ran > /out/marker")
    bind(cfg, out, "/out", "rw")
    cid, _ = oci.create(cfg)
    pid = oci.state(cid)["pid"]
    ok(oci.rt.kill(cid, None))
    assert wait_pid_gone(pid, 3.0), "the created container's init ignored SIGTERM"
    assert oci.rt.wait_status(cid, "stopped")["status"] == "stopped"
    assert oci.rt.start(cid).returncode != 0
    time.sleep(0.1)
    assert not (out / "marker").exists()


@differs("kill_paused_kill")
def test_kill_paused_container_sigkill(oci: Oci) -> None:
    """runc kill ID KILL of a paused container: the init dies now (runc thaws the cgroup
    for SIGKILL: a frozen task cannot act on it), the state is stopped."""
    cid, _, pid = started(oci, sh_config("echo ready; sleep 300"))
    ok(oci.rt("pause", cid))
    assert oci.state(cid)["status"] == "paused"
    ok(oci.rt.kill(cid, "KILL"))
    assert wait_pid_gone(pid, 3.0), "the paused container's init did not die of SIGKILL"
    assert oci.rt.wait_status(cid, "stopped")["status"] == "stopped"


@differs("kill_bogus")
@pytest.mark.parametrize("sig", ["BOGUS", "SIGBOGUS"])
def test_kill_invalid_signal(oci: Oci, sig: str) -> None:
    """runc kill ID BOGUS: an error (exit 1, a message), the container keeps running."""
    cid, _, pid = started(oci, sh_config(TRAP_SCRIPT))
    p = oci.rt.kill(cid, sig)
    assert p.returncode == 1 and p.stderr.strip(), p
    time.sleep(0.1)
    assert pid_alive(pid) and oci.state(cid)["status"] == "running"
    assert oci.rt.output(cid) == "ready\n"


# === exec =======================================================================================


def exec_target(oci: Oci) -> tuple[str, int]:
    """A running container with the probes in its rootfs; (id, init pid)."""
    cid, bundle = oci.bundle(sh_config("echo ready; sleep 300"))
    add_probes(bundle)
    p = oci.rt.create(cid, bundle)
    assert p.returncode == 0, p.stderr
    ok(oci.rt.start(cid))
    assert "ready" in oci.rt.wait_output(cid, "ready\n")
    return cid, int(oci.state(cid)["pid"])


def test_exec_args(oci: Oci) -> None:
    """runc exec ID CMD ARGS...: runs in the container (its hostname, its pid namespace),
    stdout passed through."""
    cid, init = exec_target(oci)
    assert ok(oci.rt("exec", cid, "echo", "hello", "world")) == "hello world\n"
    assert ok(oci.rt("exec", cid, "hostname")) == "runc\n"
    # its PID 1 is the container's init
    assert ok(oci.rt("exec", cid, "cat", "/proc/1/cmdline")).split("\0")[:-1] == cmdline(init)


def test_exec_args_with_dashes(oci: Oci) -> None:
    """runc exec ID CMD ARGS...: everything after the command is the command's, options
    included (`sh -c SCRIPT`, `id -u`), as every engine passes them."""
    cid, _ = exec_target(oci)
    assert ok(oci.rt("exec", cid, "sh", "-c", "echo $((6 * 7))")) == "42\n"
    assert ok(oci.rt("exec", cid, "id", "-u")) == "0\n"
    assert ok(oci.rt("exec", cid, "ls", "-d", "/etc")) == "/etc\n"


def test_exec_process_json(oci: Oci) -> None:
    """runc exec -p process.json ID: args, env and cwd come from the file."""
    cid, _ = exec_target(oci)
    proc = {"terminal": False, "user": {"uid": 0, "gid": 0}, "args": ["/probe"],
            "env": ["PATH=/bin", "FOO=from-json"], "cwd": "/tmp"}  # fmt: skip
    path = oci.base / "process.json"
    path.write_text(json.dumps(proc))
    assert ok(oci.rt("exec", "-p", str(path), cid)).splitlines() == [
        "/tmp", "uid=0 gid=0", "FOO=from-json"]  # fmt: skip


def test_exec_env_cwd_user(oci: Oci) -> None:
    """runc exec --env K=V --cwd DIR --user UID:GID ID CMD."""
    cid, _ = exec_target(oci)
    out = ok(oci.rt("exec", "--env", "FOO=bar", "--cwd", "/etc", "--user", "1000:1000",
                    cid, "/probe"))  # fmt: skip
    assert out.splitlines() == ["/etc", "uid=1000 gid=1000", "FOO=bar"]


@pytest.mark.parametrize("code", [0, 3, 77])
def test_exec_exit_status(oci: Oci, code: int) -> None:
    """runc exec (attached): its exit status is the process's."""
    cid, _ = exec_target(oci)
    p = oci.rt("exec", cid, "/exitwith", str(code))
    assert p.returncode == code, p


def test_exec_detached_pid_file(oci: Oci) -> None:
    """runc exec -d --pid-file F ID CMD: returns at once; F holds the host pid of the
    process, alive, in the container's pid namespace."""
    cid, init = exec_target(oci)
    pid_file = oci.base / "exec.pid"
    t0 = time.monotonic()
    ok(detached(oci.rt, "exec-d", "exec", "-d", "--pid-file", str(pid_file), cid, "sleep", "300"))
    assert time.monotonic() - t0 < 10
    pid = int(pid_file.read_text().strip())
    oci.pids.add(pid)
    assert pid_alive(pid) and pid != init
    assert os.readlink(f"/proc/{pid}/ns/pid") == os.readlink(f"/proc/{init}/ns/pid")
    assert os.readlink(f"/proc/{pid}/ns/pid") != os.readlink("/proc/self/ns/pid")
    assert cmdline(pid) == ["sleep", "300"]
    assert pid in json.loads(ok(oci.rt("ps", "--format", "json", cid)))


def test_exec_stopped_container_fails(oci: Oci) -> None:
    """runc exec into a stopped container: an error, nothing run."""
    cid, _ = oci.create(sh_config("true"))
    ok(oci.rt.start(cid))
    assert oci.rt.wait_status(cid, "stopped")["status"] == "stopped"
    p = oci.rt("exec", cid, "echo", "ran")
    assert p.returncode != 0 and "ran" not in p.stdout, p
    assert "stopped" in p.stderr or "not running" in p.stderr, p.stderr


@differs("not_found_message")
def test_exec_missing_command(oci: Oci) -> None:
    """runc exec of a command not in PATH: non-zero, 'executable file not found'."""
    cid, _ = exec_target(oci)
    p = oci.rt("exec", cid, "no-such-command")
    assert p.returncode != 0, p
    assert "executable file not found" in p.stderr, p.stderr
    assert oci.state(cid)["status"] == "running"


# === update =====================================================================================


def update_target(oci: Oci) -> tuple[str, int]:
    cfg = sh_config("echo ready; sleep 300")
    cfg["linux"]["resources"].update(memory={"limit": 64 << 20}, pids={"limit": 100},
                                     cpu={"shares": 1024})  # fmt: skip
    cid, _, pid = started(oci, cfg)
    return cid, pid


def test_update_memory_pids_flags(oci: Oci) -> None:
    """runc update --memory N --pids-limit M ID: the container's cgroup files change
    (found from the host through /proc/INITPID/cgroup)."""
    cid, pid = update_target(oci)
    assert limits(pid)["memory"] == str(64 << 20) and limits(pid)["pids"] == "100"
    ok(oci.rt("update", "--memory", str(32 << 20), "--pids-limit", "42", cid))
    now = limits(pid)
    assert (now["memory"], now["pids"]) == (str(32 << 20), "42")


def test_update_resources_file(oci: Oci) -> None:
    """runc update --resources FILE ID: a linux.resources JSON object."""
    cid, pid = update_target(oci)
    res = oci.base / "resources.json"
    res.write_text(json.dumps({"memory": {"limit": 48 << 20}, "pids": {"limit": 33},
                               "cpu": {"shares": 256}}))  # fmt: skip
    ok(oci.rt("update", "--resources", str(res), cid))
    # v2: shares -> weight as runc/crun convert: 1 + (shares - 2) * 9999 / 262142
    assert limits(pid) == {"memory": str(48 << 20), "pids": "33",
                           "cpu": "10" if unified() else "256"}  # fmt: skip


# === pause, resume ==============================================================================


@differs("resume_running")
def test_pause_resume(oci: Oci) -> None:
    """runc pause/resume: state says paused (the cgroup is frozen) then running; resume
    of a running container is an error."""
    cid, _, pid = started(oci, sh_config("echo ready; sleep 300"))
    p = oci.rt("resume", cid)
    assert p.returncode != 0 and p.stderr.strip(), p
    assert oci.state(cid)["status"] == "running"

    ok(oci.rt("pause", cid))
    assert oci.state(cid)["status"] == "paused" and frozen(pid)
    p = oci.rt("exec", cid, "echo", "ran")
    assert p.returncode != 0 and "ran" not in p.stdout and p.stderr.strip(), p
    rows = json.loads(ok(oci.rt("list", "--format", "json")))
    assert [(r["id"], r["status"]) for r in rows] == [(cid, "paused")]

    ok(oci.rt("resume", cid))
    assert oci.state(cid)["status"] == "running" and not frozen(pid)
    p = oci.rt("resume", cid)
    assert p.returncode != 0 and p.stderr.strip(), p


# === create --pid-file, run, delete --force ====================================================


@differs("pid_file_relative")
def test_create_pid_file_relative(oci: Oci) -> None:
    """runc create --pid-file F: F (relative to the caller's cwd) holds the init's pid
    once create returns."""
    cid, bundle = oci.bundle(sh_config("sleep 30"))
    cwd = oci.dir("cwd")
    args = ("create", "--bundle", str(bundle), "--pid-file", "init.pid", cid)
    with open(oci.rt.stdout_path(cid), "wb") as out, open(oci.rt.stderr_path(cid), "wb") as err:
        p = subprocess.run(oci.rt.cmd(*args), cwd=cwd, stdin=subprocess.DEVNULL, stdout=out,
                           stderr=err, timeout=DEFAULT_TIMEOUT)  # fmt: skip
    assert p.returncode == 0, oci.rt.stderr_path(cid).read_text()
    st = oci.state(cid)
    assert st["status"] == "created"
    assert int((cwd / "init.pid").read_text().strip()) == st["pid"]


def test_run_detached_returns_while_running(oci: Oci) -> None:
    """runc run -d --pid-file F: returns while the container runs; F holds its pid."""
    cid, bundle = oci.bundle(sh_config("echo up; sleep 300"))
    pid_file = oci.base / "run.pid"
    t0 = time.monotonic()
    ok(detached(oci.rt, cid, "run", "-d", "--pid-file", str(pid_file), "--bundle", str(bundle),
                cid))  # fmt: skip
    assert time.monotonic() - t0 < 10
    st = oci.state(cid)
    assert st["status"] == "running" and pid_alive(st["pid"])
    assert int(pid_file.read_text().strip()) == st["pid"]


@pytest.mark.parametrize("code", [0, 5, 130])
def test_run_exit_status(oci: Oci, code: int) -> None:
    """runc run (attached): exits with the container's status, then the container is
    gone."""
    p = oci.sh(f"echo out; exit {code}")
    assert (p.returncode, p.stdout) == (code, "out\n"), p
    assert oci.rt.list_ids() == []
    assert state_root_entries(oci.rt) == []


@differs("run_keep")
@pytest.mark.parametrize("code", [0, 5])
def test_run_keep(oci: Oci, code: int) -> None:
    """runc run --keep: the exit status is the container's and the container stays,
    stopped."""
    cid, bundle = oci.bundle(sh_config(f"exit {code}"))
    p = oci.rt.run(cid, bundle, "--keep")
    assert p.returncode == code, p
    assert oci.state(cid)["status"] == "stopped"


def test_delete_force_missing_is_ok(oci: Oci) -> None:
    """runc delete --force of a container that does not exist exits 0 (plain delete: 1)."""
    cid = f"nope-{os.urandom(4).hex()}"
    assert oci.rt.delete(cid, force=True).returncode == 0
    p = oci.rt.delete(cid)
    assert p.returncode == 1 and p.stderr.strip(), p


# === crash-safety ===============================================================================


@pytest.mark.parametrize("phase", ["created", "running"])
def test_init_killed_from_host(oci: Oci, phase: str) -> None:
    """The status is derived, not trusted: after create (the create process has exited)
    the state is "created"; SIGKILL the init from the host and `state` says "stopped";
    a plain delete then cleans up: no state under --root, no cgroup."""
    cid, _ = oci.create(sh_config("echo ready; sleep 300"))
    st = oci.state(cid)
    assert st["status"] == "created" and pid_alive(st["pid"])
    if phase == "running":
        ok(oci.rt.start(cid))
        oci.rt.wait_output(cid, "ready\n")
        assert oci.state(cid)["status"] == "running"
    assert cgroup_dirs(cid)
    os.kill(st["pid"], signal.SIGKILL)
    assert wait_pid_gone(st["pid"])
    st = oci.rt.wait_status(cid, "stopped")
    assert (st["status"], st["pid"]) == ("stopped", 0)
    assert [(r["id"], r["status"]) for r in json.loads(ok(oci.rt("list", "-f", "json")))] == [
        (cid, "stopped")]  # fmt: skip
    ok(oci.rt.delete(cid))
    assert oci.rt.state_result(cid).returncode != 0
    assert state_root_entries(oci.rt) == []
    assert cgroup_dirs(cid) == []


def test_create_killed_midway_id_reusable(oci: Oci) -> None:
    """`create` SIGKILLed while a createRuntime hook runs (the container half made):
    `delete --force ID` clears what it left, so the id can be created again; the new
    container works and a delete leaves no state under --root and no cgroup."""
    hooks = oci.dir("hooks")
    cfg = sh_config("echo second-life")
    # the hook blocks the first create only; it records its host pid so it can be killed
    cfg["hooks"] = {"createRuntime": [{"path": "/bin/busybox", "args": [
        "sh", "-c", f"cat > /dev/null; [ -e {hooks}/once ] && exit 0; touch {hooks}/once; "
                    f"echo $$ > {hooks}/pid.tmp; mv {hooks}/pid.tmp {hooks}/pid; exec sleep 300"]}]}  # fmt: skip
    cid, bundle = oci.bundle(cfg)
    hook_pid = 0
    with open(oci.rt.stdout_path(cid), "wb") as out:
        proc = subprocess.Popen(oci.rt.cmd("create", "--bundle", str(bundle), cid),
                                stdin=subprocess.DEVNULL, stdout=out, stderr=out)  # fmt: skip
        try:
            assert wait_file(hooks / "pid"), "the createRuntime hook did not run"
            hook_pid = int((hooks / "pid").read_text())
            oci.pids.add(hook_pid)
        finally:
            proc.kill()
            proc.wait()
            if hook_pid:
                os.kill(hook_pid, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    p = oci.rt.state_result(cid)
    assert p.returncode != 0 or json.loads(p.stdout)["status"] == "stopped", p

    ok(oci.rt.delete(cid, force=True))
    assert state_root_entries(oci.rt) == [], "delete --force left state behind"

    ok(oci.rt.create(cid, bundle))
    assert oci.state(cid)["status"] == "created"
    ok(oci.rt.start(cid))
    assert oci.rt.wait_status(cid, "stopped")["status"] == "stopped"
    assert oci.rt.output(cid) == "second-life\n"
    ok(oci.rt.delete(cid))
    assert state_root_entries(oci.rt) == []
    assert cgroup_dirs(cid) == []


# === --systemd-cgroup on a host without systemd ================================================


@differs("systemd_message")
@pytest.mark.parametrize("path", ["slice", "plain"])
def test_systemd_cgroup_without_systemd(oci: Oci, path: str) -> None:
    """runc --systemd-cgroup create on a host without systemd: exit 1 and a message that
    names systemd (runc: "systemd not running on this host"; with a cgroupfs-style path,
    "expected cgroupsPath to be of format slice:prefix:name for systemd cgroups");
    nothing left behind."""
    if os.path.isdir("/run/systemd/system"):
        pytest.skip("systemd runs on this host")
    cid = oci.new_id()
    cfg = sh_config("echo ran")
    cfg["linux"]["cgroupsPath"] = (f"system.slice:minirun-oci:{cid}" if path == "slice"
                                   else cgroups_path(cid))  # fmt: skip
    _, bundle = oci.bundle(cfg, cid=cid)
    p = oci.rt.create(cid, bundle, global_args=("--systemd-cgroup",))
    assert p.returncode == 1, p
    assert "systemd" in one_line(p).lower(), p.stderr
    assert oci.rt.output(cid) == ""
    assert oci.rt.state_result(cid).returncode != 0
    assert state_root_entries(oci.rt) == []
    assert cgroup_dirs(cid) == []


@minirun_only
def test_systemd_cgroup_message_is_clear(oci: Oci) -> None:
    """minirun-specific: the --systemd-cgroup error says what to do instead."""
    cid = oci.new_id()
    cfg = sh_config("echo ran")
    cfg["linux"]["cgroupsPath"] = f"system.slice:minirun-oci:{cid}"
    _, bundle = oci.bundle(cfg, cid=cid)
    if os.path.isdir("/run/systemd/system"):
        pytest.skip("systemd runs on this host")
    p = oci.rt.create(cid, bundle, global_args=("--systemd-cgroup",))
    assert p.returncode == 1
    assert one_line(p) == ("--systemd-cgroup: systemd is not running on this host (no "
                           "/run/systemd/system); use the cgroupfs driver")  # fmt: skip


# === bad input ==================================================================================


@pytest.mark.parametrize("case", ["not-json", "missing-config", "id-with-slash", "existing-id"])
def test_bad_input(oci: Oci, case: str) -> None:
    """create with a config.json that is not JSON, without config.json, with an id holding
    '/', or with an id in use: exit 1, a one-line message, nothing left under --root (but
    the existing container, untouched), no cgroup, the process not run."""
    out = oci.dir("out")
    existing: dict[str, Any] | None = None
    cfg = sh_config("echo ran > /out/marker")
    bind(cfg, out, "/out", "rw")
    if case == "existing-id":
        first, _ = oci.create(sh_config("sleep 30"))
        existing = oci.state(first)
        cid, bundle = oci.bundle(cfg, cid=first)
    elif case == "id-with-slash":
        _, bundle = oci.bundle(cfg)
        cid = f"a/{os.urandom(3).hex()}"
        oci.track(cid)
    else:
        cid, bundle = oci.bundle(cfg)
        if case == "not-json":
            (bundle / "config.json").write_text("this is not JSON {")
        else:
            (bundle / "config.json").unlink()
    p = oci.rt.create(cid, bundle)
    assert p.returncode == 1, p
    assert one_line(p)
    time.sleep(0.1)
    assert not (out / "marker").exists()
    if existing is not None:
        assert state_root_entries(oci.rt) == [cid]
        after = oci.state(cid)
        assert (after["status"], after["pid"], after["bundle"]) == (
            "created", existing["pid"], existing["bundle"])  # fmt: skip
        assert cgroup_dirs(cid)
    else:
        assert state_root_entries(oci.rt) == []
        assert oci.rt.list_ids() == []
        if "/" not in cid:
            assert cgroup_dirs(cid) == []
