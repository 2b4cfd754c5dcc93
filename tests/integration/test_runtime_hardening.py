"""What a security review of the runtime found, each pinned by a test that fails if it
comes back: CVE-2019-5736 (a container command must never run the host's runtime binary),
a config without capabilities gets none, exec failures after `create` are reported, a
stopped container's leftover processes do not block `delete`, relative bind sources are
the bundle's, and the "creating" status. Runtime-agnostic where runc behaves the same
(``MINIRUN_TEST_RUNTIME=runc``)."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
import time
from pathlib import Path

import pytest

from tests.integration import test_oci_conformance as conformance
from tests.integration.test_oci_conformance import Oci, ok
from tests.oci_bundle import (
    cgroup_dirs,
    default_config,
    pid_alive,
    runtime_name,
    sh_config,
    wait_pid_gone,
)

pytestmark = pytest.mark.root

runtime_binary = conformance.runtime_binary
work_base = conformance.work_base
oci = conformance.oci

RUNTIME = runtime_name()
only_minirun = pytest.mark.skipif(RUNTIME != "minirun-runtime",
                                  reason="minirun-runtime's own messages and helper")  # fmt: skip


def _digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _status_fields(out: str) -> dict[str, str]:
    return {k.strip(): v.strip() for k, _, v in (ln.partition(":") for ln in out.splitlines())}


# --- CVE-2019-5736 ----------------------------------------------------------------------------


def _copy_libraries_of(binary: str, rootfs: Path) -> None:
    """The dynamic loader and libraries ``binary`` needs, at their host paths in
    ``rootfs``: so that, were the host binary ever exec'd in the container, it would run
    (as in a real glibc-based image) instead of failing for want of ld.so."""
    import shutil
    import subprocess

    out = subprocess.run(["ldd", binary], capture_output=True, text=True).stdout
    for line in out.splitlines():
        path = line.split("=>")[-1].split("(")[0].strip()
        if path.startswith("/") and os.path.exists(path):
            dest = rootfs / path.lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(os.path.realpath(path), dest)


def test_proc_self_exe_script_cannot_reach_the_host_binary(oci: Oci) -> None:
    """The runc breakout: a command that is a "#!/proc/self/exe" script gets, as its
    interpreter, whatever binary exec'd it. That must not be the host's runtime binary
    (python for minirun, runc for runc): the script cannot run it, nor open it for writing
    from inside the container, and the host binary is unchanged afterwards."""
    host = os.path.realpath(sys.executable if RUNTIME == "minirun-runtime" else oci.rt.binary)
    before = _digest(host)
    cid, bundle = oci.bundle(default_config(["/evil"]))
    evil = bundle / "rootfs" / "evil"
    evil.write_text("#!/proc/self/exe\nimport os; print('HOST-PYTHON-RAN', os.getpid())\n")
    evil.chmod(0o755)
    _copy_libraries_of(host, bundle / "rootfs")
    p = oci.rt.run(cid, bundle)
    assert p.returncode != 0
    # the host's python would at least get as far as complaining about its stdlib
    assert "HOST-PYTHON-RAN" not in p.stdout + p.stderr
    assert "python" not in (p.stdout + p.stderr).lower(), p.stderr
    assert _digest(host) == before


@only_minirun
def test_proc_self_exe_meets_the_sealed_helper(oci: Oci) -> None:
    cid, bundle = oci.bundle(default_config(["/evil"]))
    evil = bundle / "rootfs" / "evil"
    evil.write_text("#!/proc/self/exe\n")
    evil.chmod(0o755)
    p = oci.rt.run(cid, bundle)
    assert p.returncode == 126
    assert "minirun-exec: only the minirun runtime runs this" in p.stderr


def test_command_sees_its_own_binary_as_exe(oci: Oci) -> None:
    """After the exec, /proc/self/exe is the container's own file (not a runtime helper)."""
    out = ok(oci.sh("readlink /proc/self/exe"))
    assert out.strip() in ("/bin/busybox", "/bin/readlink")


@only_minirun
def test_sealed_helper_cannot_be_written() -> None:
    from minirun.runtime import sealed

    fd = sealed.exec_fd()
    with pytest.raises(PermissionError):
        os.write(fd, b"x")
    with pytest.raises(PermissionError):
        os.ftruncate(fd, 0)
    again = os.open(f"/proc/self/fd/{fd}", os.O_WRONLY)  # reopened: still sealed
    try:
        with pytest.raises(PermissionError):
            os.write(again, b"x")
    finally:
        os.close(again)


# --- capabilities -----------------------------------------------------------------------------


def test_no_capabilities_field_means_no_capabilities(oci: Oci) -> None:
    """runc: a process without "capabilities" gets empty sets, bounding included, never
    the runtime's own full set."""
    cfg = sh_config("grep ^Cap /proc/self/status")
    del cfg["process"]["capabilities"]
    f = _status_fields(ok(oci.run(cfg)))
    zero = "0" * 16
    assert (f["CapBnd"], f["CapEff"], f["CapPrm"], f["CapAmb"]) == (zero,) * 4


def test_exec_process_without_capabilities_gets_the_containers(oci: Oci) -> None:
    """runc exec -p: a process.json without capabilities runs with the container's."""
    cfg = sh_config("echo ready; sleep 300")
    caps = ["CAP_KILL", "CAP_CHOWN"]
    cfg["process"]["capabilities"] = {k: caps for k in ("bounding", "effective", "permitted")}
    cid, bundle = oci.bundle(cfg)
    ok(oci.rt.create(cid, bundle))
    ok(oci.rt.start(cid))
    oci.rt.wait_output(cid, "ready\n")
    proc = {"terminal": False, "user": {"uid": 0, "gid": 0}, "cwd": "/",
            "args": ["grep", "^Cap", "/proc/self/status"], "env": ["PATH=/bin"]}  # fmt: skip
    path = oci.base / "process.json"
    path.write_text(json.dumps(proc))
    f = _status_fields(ok(oci.rt("exec", "-p", str(path), cid)))
    want = f"{(1 << 0) | (1 << 5):016x}"
    assert (f["CapBnd"], f["CapEff"], f["CapPrm"]) == (want, want, want)


# --- exec failures after "created" --------------------------------------------------------------


def test_exec_format_error_is_reported(oci: Oci) -> None:
    """An executable file the kernel cannot run (ENOEXEC) passes the look-up at create; the
    failure at exec, after start, still reaches the user, with a non-zero status."""
    cid, bundle = oci.bundle(sh_config("unused"))
    junk = bundle / "rootfs" / "junk"
    junk.write_bytes(b"\x00\x01\x02 not a program\n")
    junk.chmod(0o755)
    cfg = json.loads((bundle / "config.json").read_text())
    cfg["process"]["args"] = ["/junk"]
    (bundle / "config.json").write_text(json.dumps(cfg))
    p = oci.rt.run(cid, bundle)
    assert p.returncode != 0
    assert "exec format error" in p.stderr.lower()
    if RUNTIME == "minirun-runtime":
        assert p.returncode == 126
        assert "exec /junk: exec format error" in p.stderr.lower()


def test_bad_user_fails_create_not_start(oci: Oci) -> None:
    """User and capabilities are applied before the container is "created" (runc's
    order): a supplementary group the kernel refuses fails `create` itself."""
    cfg = sh_config("true")
    cfg["process"]["user"] = {"uid": 0, "gid": 0, "additionalGids": [-5]}
    cid, bundle = oci.bundle(cfg)
    p = oci.rt.create(cid, bundle)
    assert p.returncode != 0
    assert oci.rt.state_result(cid).returncode != 0  # nothing left behind


# --- delete -------------------------------------------------------------------------------------


def test_delete_kills_what_a_stopped_init_left_in_its_cgroup(oci: Oci) -> None:
    """Without a pid namespace the init's children outlive it: the container is stopped,
    yet its cgroup is busy. `delete` kills them and removes the cgroup, promptly."""
    marker = oci.dir("orphan") / "pid"
    cfg = sh_config(f"sleep 300 & echo $! > {marker}; exit 0")
    cfg["linux"]["namespaces"] = [n for n in cfg["linux"]["namespaces"] if n["type"] != "pid"]
    conformance.bind(cfg, marker.parent, str(marker.parent), "rw")
    cid, bundle = oci.bundle(cfg)
    ok(oci.rt.create(cid, bundle))
    ok(oci.rt.start(cid))
    oci.rt.wait_status(cid, "stopped")
    assert conformance.wait_file(marker)
    time.sleep(0.05)
    orphan = int(marker.read_text())  # its pid in the host's namespace: no pid ns
    assert pid_alive(orphan)
    t0 = time.monotonic()
    ok(oci.rt.delete(cid))
    assert time.monotonic() - t0 < 3.0
    assert wait_pid_gone(orphan, 3.0)
    assert cgroup_dirs(cid) == []


# --- config: relative bind sources --------------------------------------------------------------


def test_relative_bind_source_is_relative_to_the_bundle(oci: Oci, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """config.md mounts: a relative source is relative to the bundle, not the cwd of
    whoever calls the runtime."""
    cid, bundle = oci.bundle(sh_config("cat /data/hello"))
    (bundle / "shared").mkdir()
    (bundle / "shared" / "hello").write_text("from the bundle\n")
    (bundle / "shared").chmod(0o755)
    cfg = json.loads((bundle / "config.json").read_text())
    cfg["mounts"].append({"destination": "/data", "type": "bind", "source": "shared",
                          "options": ["rbind", "ro"]})  # fmt: skip
    (bundle / "config.json").write_text(json.dumps(cfg))
    monkeypatch.chdir(tmp_path)  # a cwd where "shared" does not exist
    assert ok(oci.rt.run(cid, bundle)) == "from the bundle\n"


# --- state: "creating" ------------------------------------------------------------------------


@only_minirun
def test_state_is_creating_while_create_runs(oci: Oci) -> None:
    """runtime.md State: "creating" while create has not finished (asked from a
    createRuntime hook, which runs in the middle of create)."""
    out = oci.dir("creating") / "state.json"
    hook = {"path": "/bin/sh", "args": ["sh", "-c",
            f'cat >/dev/null; {oci.rt.binary} --root {oci.rt.root} state "$CID" > {out}']}  # fmt: skip
    cfg = sh_config("true")
    cid, bundle = oci.bundle(cfg)
    hook["env"] = [f"CID={cid}", "PATH=/usr/bin:/bin"]
    cfg = json.loads((bundle / "config.json").read_text())
    cfg["hooks"] = {"createRuntime": [hook]}
    (bundle / "config.json").write_text(json.dumps(cfg))
    ok(oci.rt.create(cid, bundle))
    st = json.loads(out.read_text())
    assert st["status"] == "creating"
    assert oci.rt.state(cid)["status"] == "created"
    ok(oci.rt.delete(cid, force=True))


def test_exec_fifo_mode(oci: Oci) -> None:
    """The init opens the exec fifo after switching to the container's user: the fifo
    must let that user write (runc: 0622)."""
    cfg = sh_config("true")
    cfg["process"]["user"] = {"uid": 1000, "gid": 1000}
    cid, bundle = oci.bundle(cfg)
    ok(oci.rt.create(cid, bundle))
    fifos = list(Path(oci.rt.root).glob(f"{cid}/exec.fifo"))
    if fifos:  # runc and minirun keep it in the state dir
        assert stat.S_IMODE(fifos[0].stat().st_mode) == 0o622
    ok(oci.rt.start(cid))
    oci.rt.wait_status(cid, "stopped")
