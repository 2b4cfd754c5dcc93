"""Real containers through minirun.runtime.run: every assertion is made from INSIDE the
container (a busybox shell probe), as crun's functional tests do. Needs root + overlayfs."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from minirun.errors import KernelUnsupported, RuntimeFailure
from minirun.runtime import OverlayRootfs, mounts, run
from tests.integration import runtime_fixtures
from tests.integration.runtime_fixtures import (
    DEFAULT_CAPS_MASK,
    REPO_ROOT,
    driver_cmd,
    make_layers,
    make_spec,
    run_capture,
    sh,
)

pytestmark = pytest.mark.root

# the shared fixtures (a conftest is the lead's; these are imported explicitly)
busybox_layer = runtime_fixtures.busybox_layer
rootfs = runtime_fixtures.rootfs


def _mountinfo() -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return f.read().splitlines()


def _mount_points(mountinfo: str) -> set[str]:
    return {line.split()[4] for line in mountinfo.splitlines() if line.strip()}


# --- isolation ---------------------------------------------------------------------------------


def test_pid_namespace_init_and_ps(rootfs: OverlayRootfs) -> None:
    code, out, _ = run_capture(sh("echo $$; ps -o pid,comm; true"), rootfs)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "1"
    pids = [line.split()[0] for line in lines[2:]]
    assert pids[0] == "1" and len(pids) == 2, out  # sh and ps, nothing of the host


def test_hostname_and_loopback(rootfs: OverlayRootfs) -> None:
    code, out, _ = run_capture(sh("hostname; ip -o link"), rootfs)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "testbox"
    assert len(lines) == 2 and ": lo:" in lines[1] and "UP" in lines[1], out


def test_no_host_mounts_visible(rootfs: OverlayRootfs) -> None:
    code, out, _ = run_capture(sh("cat /proc/self/mountinfo"), rootfs)
    assert code == 0
    inside = _mount_points(out)
    host_only = _mount_points("\n".join(_mountinfo())) - inside
    assert "/sys/fs/cgroup" in host_only or "/sys/fs/cgroup" not in _mount_points(
        "\n".join(_mountinfo())
    )
    allowed_prefixes = ("/proc", "/dev", "/sys")
    assert "/" in inside
    for mp in inside - {"/"}:
        assert mp.startswith(allowed_prefixes), mp
    # and the overlay is the root, not a host filesystem
    root_line = next(line for line in out.splitlines() if line.split()[4] == "/")
    assert " - overlay " in root_line


def test_default_capabilities(rootfs: OverlayRootfs) -> None:
    code, out, _ = run_capture(sh("grep -E '^Cap(Eff|Prm|Bnd|Amb)' /proc/self/status"), rootfs)
    assert code == 0
    caps = dict(line.split(":\t") for line in out.splitlines())
    assert caps["CapEff"] == caps["CapPrm"] == caps["CapBnd"] == DEFAULT_CAPS_MASK
    assert caps["CapAmb"] == "0" * 16


def test_mount_and_proc_sys_are_refused(rootfs: OverlayRootfs) -> None:
    script = (
        "mkdir -p /mnt; mount -t tmpfs none /mnt 2>/dev/null && echo MOUNTED;"
        "echo 1 > /proc/sys/kernel/panic 2>/dev/null && echo WROTE;"
        "echo h > /proc/sysrq-trigger 2>/dev/null && echo SYSRQ;"
        "touch /sys/x 2>/dev/null && echo SYS; echo done"
    )
    code, out, _ = run_capture(sh(script), rootfs)
    assert code == 0
    assert out == "done\n"


def test_masked_paths(rootfs: OverlayRootfs) -> None:
    script = (
        "for p in /proc/keys /proc/timer_list /proc/kcore /proc/sched_debug; do"
        "  [ -e $p ] && echo $p $(wc -c < $p); done;"
        "for d in /proc/acpi /proc/scsi /sys/firmware; do"
        "  [ -d $d ] && echo $d $(ls -A $d | wc -l); done"
    )
    code, out, _ = run_capture(sh(script), rootfs)
    assert code == 0
    assert out.strip(), "expected at least some masked paths on this kernel"
    for line in out.splitlines():
        assert line.split()[1] == "0", line


def test_proc_exe_is_the_container_binary(rootfs: OverlayRootfs) -> None:
    # CVE-2019-5736: nothing in the container may reach the host's python interpreter
    host_python = os.path.realpath(sys.executable)
    script = f"readlink /proc/1/exe; ls -l /proc/*/exe 2>/dev/null | grep -c python; test -e {host_python} && echo REACHABLE; true"
    code, out, _ = run_capture(sh(script), rootfs)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "/bin/busybox"
    assert lines[1] == "0"
    assert "REACHABLE" not in out


def test_host_fds_are_closed(rootfs: OverlayRootfs) -> None:
    # CVE-2024-21626: a leaked host fd (a dir here) is a way out of the root
    leak = os.open("/", os.O_RDONLY)
    os.set_inheritable(leak, True)
    try:
        code, out, _ = run_capture(sh("ls /proc/self/fd"), rootfs)
    finally:
        os.close(leak)
    assert code == 0
    assert sorted(int(x) for x in out.split()) == [0, 1, 2, 3]  # 3 = ls's own dir fd


def test_no_new_privileges_and_rlimits(rootfs: OverlayRootfs) -> None:
    _soft, hard = __import__("resource").getrlimit(__import__("resource").RLIMIT_NOFILE)
    spec = sh(
        "grep NoNewPrivs /proc/self/status; ulimit -n; ulimit -Hn",
        noNewPrivileges=True,
        rlimits=[{"type": "RLIMIT_NOFILE", "soft": 100, "hard": hard + 1000}],
    )
    code, out, _ = run_capture(spec, rootfs)
    assert code == 0
    lines = out.split("\n")
    assert lines[0].split() == ["NoNewPrivs:", "1"]
    assert lines[1] == "100"
    assert lines[2] == str(hard)  # clamped to the current hard limit


# --- exit statuses -------------------------------------------------------------------------------


@pytest.mark.parametrize(("script", "expected"), [("true", 0), ("exit 3", 3)])
def test_exit_codes(rootfs: OverlayRootfs, script: str, expected: int) -> None:
    assert run_capture(sh(script), rootfs)[0] == expected


def test_command_not_found_is_127(rootfs: OverlayRootfs, capfd: pytest.CaptureFixture[str]) -> None:
    code, _, _ = run_capture(make_spec(["nosuchcmd"]), rootfs)
    assert code == 127
    assert (
        'minirun: exec: "nosuchcmd": executable file not found in $PATH' in capfd.readouterr().err
    )


def test_not_executable_is_126(rootfs: OverlayRootfs, capfd: pytest.CaptureFixture[str]) -> None:
    code, _, _ = run_capture(make_spec(["/etc/passwd"]), rootfs)
    assert code == 126
    assert "permission denied" in capfd.readouterr().err


def test_killed_by_signal_is_128_plus_n(rootfs: OverlayRootfs) -> None:
    def kill(pid: int) -> None:
        os.kill(pid, signal.SIGKILL)

    code, _, _ = run_capture(make_spec(["sleep", "30"]), rootfs, on_start=kill)
    assert code == 128 + signal.SIGKILL


def test_on_start_gets_the_host_pid(rootfs: OverlayRootfs) -> None:
    seen: list[str] = []

    def record(pid: int) -> None:
        with open(f"/proc/{pid}/status") as f:
            seen.extend(line for line in f if line.startswith("NSpid:"))

    assert run_capture(make_spec(["sleep", "0.2"]), rootfs, on_start=record)[0] == 0
    assert seen and seen[0].split()[-1] == "1"  # PID 1 in its own namespace


def test_signal_forwarding(rootfs: OverlayRootfs, tmp_path: Path) -> None:
    ready = "/dev/shm/ready"
    spec = sh(f"trap 'exit 42' TERM; touch {ready}; while :; do sleep 0.05; done")
    marker = tmp_path / "ready"
    spec["mounts"].append(
        {"destination": "/dev/shm", "type": "bind", "source": str(tmp_path), "options": ["rbind"]}
    )
    proc = subprocess.Popen(driver_cmd(spec, rootfs), cwd=REPO_ROOT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not marker.exists():
            assert time.monotonic() < deadline, "container never got ready"
            assert proc.poll() is None, proc.returncode
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 42
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# --- process settings ------------------------------------------------------------------------------


def test_env_and_cwd(rootfs: OverlayRootfs) -> None:
    spec = sh('echo "$FOO"; pwd', env=["PATH=/bin", "FOO=bar baz"], cwd="/work/dir")
    code, out, _ = run_capture(spec, rootfs)
    assert code == 0
    assert out == "bar baz\n/work/dir\n"


def test_path_search_uses_container_path(rootfs: OverlayRootfs) -> None:
    spec = make_spec(["echo", "found"], env=["PATH=/nowhere:/bin"])
    assert run_capture(spec, rootfs)[:2] == (0, "found\n")


def test_user_uid_gid_groups(rootfs: OverlayRootfs) -> None:
    spec = sh(
        "id; grep -E '^Cap(Eff|Prm)' /proc/self/status",
        user={"uid": 65534, "gid": 65534, "additionalGids": [0]},
        capabilities={"bounding": make_spec([])["process"]["capabilities"]["bounding"]},
    )
    code, out, _ = run_capture(spec, rootfs)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("uid=65534(nobody) gid=65534(nogroup) groups=")
    assert "0(root)" in lines[0]
    assert lines[1].split() == ["CapPrm:", "0" * 16]
    assert lines[2].split() == ["CapEff:", "0" * 16]


def test_stdin_pipe(rootfs: OverlayRootfs) -> None:
    r, w = os.pipe()
    os.write(w, b"hello through a pipe\n")
    os.close(w)
    try:
        code, out, _ = run_capture(make_spec(["cat"]), rootfs, stdin=r)
    finally:
        os.close(r)
    assert (code, out) == (0, "hello through a pipe\n")


# --- mounts ------------------------------------------------------------------------------------------


@pytest.fixture
def volume() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="minirun-rt-vol-"))
    try:
        yield d
    finally:
        shutil.rmtree(d)


def test_bind_volumes_rw_ro_and_file(rootfs: OverlayRootfs, volume: Path) -> None:
    (volume / "rw").mkdir()
    (volume / "ro").mkdir()
    (volume / "ro" / "keep").write_text("old\n")
    (volume / "hosts").write_text("127.0.0.1 localhost\n")
    spec = sh(
        "echo new > /data/rw/out; echo x > /data/ro/keep 2>/dev/null && echo WROTE_RO;"
        "cat /data/ro/keep /etc/hosts"
    )
    spec["mounts"] += [
        {"destination": "/data/rw", "type": "bind", "source": str(volume / "rw"),
         "options": ["rbind", "rw"]},
        {"destination": "/data/ro", "type": "bind", "source": str(volume / "ro"),
         "options": ["rbind", "ro"]},
        {"destination": "/etc/hosts", "type": "bind", "source": str(volume / "hosts"),
         "options": ["rbind", "rprivate", "ro"]},
    ]  # fmt: skip
    code, out, _ = run_capture(spec, rootfs)
    assert code == 0
    assert out == "old\n127.0.0.1 localhost\n"
    assert (volume / "rw" / "out").read_text() == "new\n"
    assert (volume / "ro" / "keep").read_text() == "old\n"


def test_tmpfs_mount(rootfs: OverlayRootfs) -> None:
    spec = sh("grep ' /run ' /proc/self/mounts; echo x > /run/f && cat /run/f")
    spec["mounts"].append(
        {"destination": "/run", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "nodev", "noexec", "size=1m"]}
    )  # fmt: skip
    code, out, _ = run_capture(spec, rootfs)
    assert code == 0
    mount_line, content = out.splitlines()
    assert mount_line.startswith("tmpfs /run tmpfs rw,nosuid,nodev,noexec")
    assert content == "x"
    assert not os.path.exists(os.path.join(rootfs.upperdir, "run", "f"))


def test_readonly_root(rootfs: OverlayRootfs) -> None:
    spec = sh("touch /newfile 2>/dev/null && echo WROTE; echo ok > /dev/shm/f && cat /dev/shm/f")
    spec["root"]["readonly"] = True
    assert run_capture(spec, rootfs)[:2] == (0, "ok\n")


def test_writes_land_in_upperdir(rootfs: OverlayRootfs) -> None:
    assert run_capture(sh("echo data > /root/file; rm /bin/vi"), rootfs)[0] == 0
    assert Path(rootfs.upperdir, "root", "file").read_text() == "data\n"
    assert os.stat(Path(rootfs.upperdir, "bin", "vi"), follow_symlinks=False).st_rdev == 0


def test_no_pivot_chroot(rootfs: OverlayRootfs) -> None:
    code, out, _ = run_capture(sh("echo $$; hostname; ls /proc/1/root/ | head -1"), rootfs,
                               no_pivot=True)  # fmt: skip
    assert code == 0
    assert out.splitlines()[:2] == ["1", "testbox"]


def test_120_layers(busybox_layer: Path) -> None:
    base = Path(tempfile.mkdtemp(prefix="minirun-rt-layers-"))
    try:
        lowers = make_layers(base, busybox_layer, 120)
        for d in ("upper", "work", "merged"):
            (base / d).mkdir()
        rf = OverlayRootfs(lowers, str(base / "upper"), str(base / "work"), str(base / "merged"))
        opts, chdir_to = mounts.overlay_options(lowers, rf.upperdir, rf.workdir)
        assert chdir_to is not None  # the absolute form would not fit a page
        code, out, _ = run_capture(sh("ls /layers | wc -l; cat /layers/file119"), rf)
        assert (code, out) == (0, "119\n119\n")
    finally:
        shutil.rmtree(base)


def test_mount_target_symlink_cannot_escape(rootfs: OverlayRootfs, volume: Path) -> None:
    # CVE-2021-30465 style: the image's /evil points at a host path; the tmpfs must land
    # inside the container at that path, never on the host.
    host_dir = volume / "hostdir"
    host_dir.mkdir()
    os.symlink(str(host_dir), os.path.join(rootfs.upperdir, "evil"))
    spec = sh(f"grep -c ' {host_dir} tmpfs' /proc/self/mounts")
    spec["mounts"].append({"destination": "/evil", "type": "tmpfs", "source": "tmpfs",
                           "options": ["size=1m"]})  # fmt: skip
    before = _mountinfo()
    code, out, _ = run_capture(spec, rootfs)
    assert (code, out) == (0, "1\n")
    assert _mountinfo() == before
    assert list(host_dir.iterdir()) == []
    # the mount point was created inside the container's upper layer instead
    assert os.path.isdir(os.path.join(rootfs.upperdir, str(host_dir).lstrip("/")))


# --- failures ----------------------------------------------------------------------------------------


def test_missing_bind_source_raises(rootfs: OverlayRootfs) -> None:
    spec = make_spec(["true"])
    spec["mounts"].append({"destination": "/x", "type": "bind", "source": "/nonexistent/src",
                           "options": ["rbind"]})  # fmt: skip
    with pytest.raises(RuntimeFailure, match="/nonexistent/src"):
        run_capture(spec, rootfs)


def test_missing_overlay_is_kernel_unsupported(
    rootfs: OverlayRootfs, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = mounts.linux.mount

    def no_overlay(source: Any, target: str, fstype: Any, *a: Any) -> None:
        if fstype == "overlay":
            raise OSError(errno.ENODEV, "No such device")
        real(source, target, fstype, *a)

    # patched before fork, so the child inherits it
    monkeypatch.setattr(mounts.linux, "mount", no_overlay)
    with pytest.raises(KernelUnsupported, match="modprobe overlay"):
        run_capture(make_spec(["true"]), rootfs)


def test_bad_spec_raises_before_fork(rootfs: OverlayRootfs) -> None:
    spec = make_spec(["true"])
    spec["process"]["capabilities"]["bounding"].append("CAP_NOPE")
    with pytest.raises(RuntimeFailure, match="CAP_NOPE"):
        run(spec, rootfs)


# --- nothing leaks ---------------------------------------------------------------------------------


def test_nothing_leaks(rootfs: OverlayRootfs) -> None:
    before = _mountinfo()
    for script in ("true", "exit 3", "sleep 0.01 & sleep 0.01 & wait", "nosuchcmd"):
        run_capture(sh(script), rootfs)
    run_capture(make_spec(["sleep", "5"]), rootfs, on_start=lambda pid: os.kill(pid, 9))
    assert _mountinfo() == before
    assert os.listdir(rootfs.target) == []  # the overlay never showed on the host
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)  # no child (zombie or alive) left behind
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            root = os.readlink(f"/proc/{pid}/root")
        except OSError:
            continue
        assert root == "/", f"process {pid} still has root {root}"
    # the parent went back to its own PID namespace for later forks
    assert os.readlink("/proc/self/ns/pid_for_children") == os.readlink("/proc/self/ns/pid")


def test_cgroup_mount_and_spec_devices(rootfs: OverlayRootfs) -> None:
    spec = sh(
        "cut -d: -f3 /proc/self/cgroup | sort -u; touch /sys/fs/cgroup/x 2>/dev/null && echo RW;"
        "ls -l /dev/mydev"
    )
    spec["mounts"].append({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
                           "options": ["ro", "nosuid", "noexec", "nodev"]})  # fmt: skip
    spec["linux"]["devices"] = [
        {"path": "/dev/mydev", "type": "c", "major": 1, "minor": 3, "fileMode": 0o620}
    ]
    code, out, _ = run_capture(spec, rootfs)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "/"  # the cgroup namespace makes our own cgroup the root
    assert lines[1].startswith("crw--w----") and "1,   3" in lines[1]


def test_prestart_runs_in_the_new_namespaces_before_exec(rootfs: OverlayRootfs) -> None:
    """The hook networking uses: the child's net namespace exists and it has not exec'd."""
    seen: dict[str, str] = {}

    def hook(pid: int) -> None:
        seen["net"] = os.readlink(f"/proc/{pid}/ns/net")
        seen["exe"] = os.readlink(f"/proc/{pid}/exe")
        # what the hook does is visible to the container: write a file it will read
        with open(os.path.join(rootfs.upperdir, "from-hook"), "w") as f:
            f.write("hooked\n")

    code, out, _ = run_capture(sh("cat /from-hook"), rootfs, prestart=hook)
    assert code == 0 and out == "hooked\n"
    assert seen["net"] != os.readlink("/proc/self/ns/net")
    assert "busybox" not in seen["exe"]  # still the setup process, before exec


def test_prestart_failure_kills_the_child_and_raises(rootfs: OverlayRootfs) -> None:
    def hook(pid: int) -> None:
        raise RuntimeFailure("network setup failed")

    before = _mountinfo()
    with pytest.raises(RuntimeFailure, match="network setup failed"):
        run_capture(sh("echo never"), rootfs, prestart=hook)
    assert _mountinfo() == before


def test_the_cgroup_of_cgroups_path_is_joined_before_exec(rootfs: OverlayRootfs) -> None:
    """The runtime makes linux.cgroupsPath's cgroup, the child joins it before it unshares
    its cgroup namespace, and delete removes it."""
    path = f"/minirun-test/{os.getpid()}-{time.monotonic_ns()}"
    spec = sh("true")
    spec["linux"]["cgroupsPath"] = path
    spec["linux"]["resources"] = {"pids": {"limit": 64}}
    seen: list[str] = []
    code, _, _ = run_capture(spec, rootfs, prestart=lambda pid: seen.append(
        open(f"/proc/{pid}/cgroup").read()))
    assert code == 0
    assert path in seen[0]
    from minirun.runtime import cgroups

    assert cgroups.Cgroup.open(path) is None  # deleted with the container
    parent = cgroups.Cgroup.open("/minirun-test")
    if parent is not None:
        parent.remove()
