"""OCI bundles and a runc-compatible runtime CLI wrapper, for the conformance tests.

* :func:`default_config` — the config.json ``runc spec`` writes (runtime-spec v1.x
  config.md / config-linux.md), as a plain dict to edit. :func:`cgroups_path` is the
  absolute ``linux.cgroupsPath`` the tests give each container, so its cgroup can be found
  and checked for removal (:func:`cgroup_dirs`).
* :func:`make_bundle` — a bundle directory (runtime-spec bundle.md): ``config.json`` and a
  ``rootfs`` holding static busybox with its applet links, /etc/passwd and /etc/group
  (``tests.integration.runtime_fixtures.make_busybox_tree``).
* :class:`Runtime` — drives the runtime binary (``runc``, ``crun`` or ``minirun-runtime``)
  with the runc command line and a private ``--root`` state dir; every call returns a
  ``CompletedProcess``.

The runtime under test is ``$MINIRUN_TEST_RUNTIME`` ("runc", "crun", or an absolute path),
else ``minirun-runtime`` next to the interpreter (the venv's entry point).
"""

from __future__ import annotations

import copy
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.runtime_fixtures import BUSYBOX, make_busybox_tree

RUNTIME_ENV = "MINIRUN_TEST_RUNTIME"
CGROUP_ROOT = "/sys/fs/cgroup"
CGROUP_PARENT = "minirun-oci"
"""Every test container's cgroupsPath is ``/minirun-oci/<id>`` (absolute: config-linux.md
"Cgroups path": relative to the cgroups mount point)."""

DEFAULT_TIMEOUT = 30.0


# --- which runtime ------------------------------------------------------------------------


def runtime_binary() -> str | None:
    """The runtime binary's absolute path, or None when it is not installed."""
    want = os.environ.get(RUNTIME_ENV, "")
    if want:
        if os.path.isabs(want):
            return want if os.access(want, os.X_OK) else None
        return shutil.which(want)
    own = Path(sys.executable).parent / "minirun-runtime"
    return str(own) if os.access(own, os.X_OK) else None


def runtime_name(binary: str | None = None) -> str:
    """"runc", "crun", "minirun-runtime"...: the key of the per-runtime xfail/skip tables."""
    if binary is None:
        binary = runtime_binary() or os.environ.get(RUNTIME_ENV) or "minirun-runtime"
    return os.path.basename(binary)


def require_runtime() -> str:
    """The runtime binary, or skip the test with the reason."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    if not os.path.exists(BUSYBOX):
        pytest.skip("needs busybox-static (/bin/busybox)")
    binary = runtime_binary()
    if binary is None:
        want = os.environ.get(RUNTIME_ENV)
        if want:
            pytest.skip(f"{RUNTIME_ENV}={want}: no such executable")
        pytest.skip(
            f"minirun-runtime is not installed ({Path(sys.executable).parent / 'minirun-runtime'}"
            f" missing); set {RUNTIME_ENV}=runc or crun to run these tests against another runtime"
        )
    return binary


# --- config.json ----------------------------------------------------------------------------

DEFAULT_CAPS = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]

MASKED_PATHS = [
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi",
]  # fmt: skip
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]


def default_config(args: list[str], terminal: bool = False) -> dict[str, Any]:
    """What ``runc spec`` writes (ociVersion, process, root, hostname, mounts, linux), with
    ``args`` as process.args. root.readonly is true there, as in runc's default."""
    env = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    if terminal:
        env.append("TERM=xterm")
    cfg: dict[str, Any] = {
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": terminal,
            "user": {"uid": 0, "gid": 0},
            "args": list(args),
            "env": env,
            "cwd": "/",
            "capabilities": {
                k: list(DEFAULT_CAPS) for k in ("bounding", "effective", "permitted", "ambient")
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "runc",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
        ],  # fmt: skip
        "linux": {
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")],
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
        },
    }
    return copy.deepcopy(cfg)


def sh_config(script: str, **process: Any) -> dict[str, Any]:
    """default_config running ``sh -c script``; keyword args update ``process``."""
    cfg = default_config(["sh", "-c", script])
    cfg["process"].update(process)
    return cfg


def cgroups_path(cid: str) -> str:
    return f"/{CGROUP_PARENT}/{cid}"


def cgroup_dirs(cid: str) -> list[str]:
    """The container's cgroup dirs that exist on the host, in every hierarchy (v1 or v2)."""
    rel = cgroups_path(cid).lstrip("/")
    return sorted(
        set(glob.glob(f"{CGROUP_ROOT}/*/{rel}")) | set(glob.glob(f"{CGROUP_ROOT}/{rel}"))
    )


def remove_cgroup_parents() -> None:
    """rmdir the (empty) ``minirun-oci`` parents the runtimes made; leave non-empty ones."""
    for d in [*glob.glob(f"{CGROUP_ROOT}/*/{CGROUP_PARENT}"), f"{CGROUP_ROOT}/{CGROUP_PARENT}"]:
        try:
            os.rmdir(d)
        except OSError:
            pass


# --- bundles ----------------------------------------------------------------------------------


def make_rootfs(dest: Path, template: Path | None = None) -> Path:
    """A busybox rootfs at ``dest``: a copy of ``template`` if given (fast), else built."""
    if template is not None:
        shutil.copytree(template, dest, symlinks=True)
    else:
        make_busybox_tree(dest)
    return dest


def write_config(bundle: Path, config: dict[str, Any]) -> Path:
    path = bundle / "config.json"
    path.write_text(json.dumps(config, indent=2))
    return path


def make_bundle(
    bundle: Path, config: dict[str, Any], *, template: Path | None = None
) -> Path:
    """bundle.md: a directory with config.json and the root filesystem (root.path)."""
    bundle.mkdir(parents=True, exist_ok=True)
    root = Path(config.get("root", {}).get("path", "rootfs"))
    if not root.is_absolute():  # an absolute root.path is the caller's to provide
        make_rootfs(bundle / root, template)
    write_config(bundle, config)
    return bundle


# --- the runtime CLI --------------------------------------------------------------------------


class Runtime:
    """The runc command line (``runc --root DIR CMD ...``) against a private state dir.

    ``create`` and ``run -d`` leave the container process holding the stdio they were given
    (runtime.md: without a console socket the process inherits the runtime's stdio), so
    those calls write stdout/stderr to files under ``io_dir`` — pipes would keep
    ``subprocess.run`` waiting for the container to exit. :meth:`output` reads them later.
    """

    def __init__(self, binary: str, root: Path, io_dir: Path) -> None:
        self.binary = binary
        self.name = runtime_name(binary)
        self.root = root
        self.io_dir = io_dir
        self.prefix = host_workaround(self.name)
        root.mkdir(parents=True, exist_ok=True)
        io_dir.mkdir(parents=True, exist_ok=True)

    # -- generic
    def cmd(self, *args: str, global_args: tuple[str, ...] = ()) -> list[str]:
        return [*self.prefix, self.binary, "--root", str(self.root), *global_args, *args]

    def __call__(
        self,
        *args: str,
        input: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        global_args: tuple[str, ...] = (),
    ) -> subprocess.CompletedProcess[str]:
        """Any runtime command, stdout/stderr captured (for commands that don't leave a
        process behind holding them)."""
        return subprocess.run(
            self.cmd(*args, global_args=global_args),
            input=input if input is not None else "",
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def _detached(
        self, cid: str, args: list[str], timeout: float, global_args: tuple[str, ...] = ()
    ) -> subprocess.CompletedProcess[str]:
        out, err = self.stdout_path(cid), self.stderr_path(cid)
        with open(out, "wb") as o, open(err, "wb") as e:
            p = subprocess.run(
                self.cmd(*args, global_args=global_args),
                stdin=subprocess.DEVNULL,
                stdout=o,
                stderr=e,
                timeout=timeout,
            )
        return subprocess.CompletedProcess(
            p.args, p.returncode, out.read_text(errors="replace"), err.read_text(errors="replace")
        )

    def stdout_path(self, cid: str) -> Path:
        return self.io_dir / f"{_file_name(cid)}.out"

    def stderr_path(self, cid: str) -> Path:
        return self.io_dir / f"{_file_name(cid)}.err"

    def output(self, cid: str) -> str:
        """What the container process (and the create call) wrote to stdout so far."""
        p = self.stdout_path(cid)
        return p.read_text(errors="replace") if p.exists() else ""

    # -- runtime.md operations
    def create(
        self,
        cid: str,
        bundle: Path,
        *extra: str,
        pid_file: Path | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        global_args: tuple[str, ...] = (),
    ) -> subprocess.CompletedProcess[str]:
        args = ["create", "--bundle", str(bundle)]
        if pid_file is not None:
            args += ["--pid-file", str(pid_file)]
        return self._detached(cid, [*args, *extra, cid], timeout, global_args)

    def start(self, cid: str) -> subprocess.CompletedProcess[str]:
        return self("start", cid)

    def state_result(self, cid: str) -> subprocess.CompletedProcess[str]:
        return self("state", cid)

    def state(self, cid: str) -> dict[str, Any]:
        """The state JSON (runtime.md "State"); AssertionError if the command fails."""
        p = self.state_result(cid)
        assert p.returncode == 0, f"state {cid} failed ({p.returncode}): {p.stderr}"
        out: dict[str, Any] = json.loads(p.stdout)
        return out

    def kill(
        self, cid: str, signal: str | None = "TERM", *, all: bool = False
    ) -> subprocess.CompletedProcess[str]:
        args = ["kill"] + (["--all"] if all else []) + [cid]
        if signal is not None:
            args.append(signal)
        return self(*args)

    def delete(self, cid: str, *, force: bool = False) -> subprocess.CompletedProcess[str]:
        return self("delete", *(["--force"] if force else []), cid)

    def run(
        self,
        cid: str,
        bundle: Path,
        *extra: str,
        detach: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> subprocess.CompletedProcess[str]:
        """``run [-d] --bundle DIR ID``: attached, stdout/stderr captured and the exit
        status is the container process's; detached, stdio goes to the io files."""
        args = ["run", "--bundle", str(bundle), *(["-d"] if detach else []), *extra, cid]
        if detach:
            return self._detached(cid, args, timeout)
        return subprocess.run(
            self.cmd(*args), stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=timeout,
        )  # fmt: skip

    def list_ids(self) -> list[str]:
        p = self("list", "-q")
        assert p.returncode == 0, p.stderr
        return p.stdout.split()

    # -- waiting
    def wait_status(self, cid: str, status: str, timeout: float = 10.0) -> dict[str, Any]:
        """Poll ``state`` until its status is ``status``; the last state."""
        deadline = time.monotonic() + timeout
        while True:
            st = self.state(cid)
            if st.get("status") == status or time.monotonic() > deadline:
                return st
            time.sleep(0.02)

    def wait_output(self, cid: str, text: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            out = self.output(cid)
            if text in out or time.monotonic() > deadline:
                return out
            time.sleep(0.02)


def _file_name(cid: str) -> str:
    """A file name for any id, even the invalid ones the tests try ("a/b", "..")."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", cid).lstrip(".")[:64]
    return f"{safe}-{hashlib.sha256(cid.encode()).hexdigest()[:8]}"


def host_workaround(name: str) -> list[str]:
    """A command prefix some runtime needs on this host, or [].

    crun (1.8 at least) refuses every container on a hybrid cgroup host whose cgroup2
    hierarchy has any controller ("cgroups in hybrid mode not supported, drop all
    controllers from cgroupv2"); on hosts where a controller such as hugetlb is not bound
    to a v1 hierarchy, it lands in cgroup2. crun is then run in a private mount namespace
    without /sys/fs/cgroup/unified, where it sees (and uses) plain cgroup v1. The host is
    left as it is.
    """
    if name != "crun":
        return []
    try:
        with open(f"{CGROUP_ROOT}/unified/cgroup.controllers") as f:
            if not f.read().strip():
                return []
    except OSError:
        return []
    return [
        "unshare", "--mount", "--propagation", "private", "--",
        "sh", "-c", f'umount -l {CGROUP_ROOT}/unified && exec "$0" "$@"',
    ]  # fmt: skip


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_pid_gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
