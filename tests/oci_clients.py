"""Drive a runc-compatible OCI runtime through REAL clients: Podman (+ conmon) and
containerd (+ containerd-shim-runc-v2, driven with ctr).

The runtime under test comes from ``MINIRUN_TEST_RUNTIME`` (see :func:`runtime_binary`).
Clients never get it directly: each gets a tiny shell wrapper named like the runtime
(:func:`runtime_wrapper`) that

* logs every command line the client used to ``MINIRUN_TEST_RUNTIME_LOG`` (if set), which
  is how the flags a drop-in runc replacement must accept were collected;
* for Podman, adds ``--root DIR``: as root, Podman passes no ``--root`` (the runtime's
  default, /run/runc, would be shared with the host), and ``podman --runtime-flag
  root=...`` is not handed to the ``podman container cleanup`` that conmon runs at exit,
  so that cleanup would look for the container in the wrong place;
* for crun on a hybrid host whose cgroup2 hierarchy has controllers (this VM's has
  hugetlb), hides /sys/fs/cgroup/unified in a private mount namespace: crun 1.8 refuses
  such hosts outright ("cgroups in hybrid mode not supported"), runc does not care.

Everything the clients keep lives in one short tmp dir (``oci_work``); Podman and
containerd each get their own config, storage, state and cgroup parent there. Teardown
first lets the client remove what a failed test left, then checks (and only then
cleans up by PID / rmdir / umount) that no process, cgroup, mount or runtime state is
left over.
"""

from __future__ import annotations

import fcntl
import os
import re
import resource
import select
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import termios
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

RUNTIME_ENV = "MINIRUN_TEST_RUNTIME"
RUNTIME_LOG_ENV = "MINIRUN_TEST_RUNTIME_LOG"
PATH_ENV = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PODMAN_IMAGE_REF = "busybox:latest"  # org.opencontainers.image.ref.name in images/build.py

Run = subprocess.CompletedProcess[str]


# -- which runtime -----------------------------------------------------------------------


def runtime_binary() -> Path:
    """The runtime under test: ``MINIRUN_TEST_RUNTIME`` (``runc``, ``crun``, any name on
    PATH or an absolute path, resolved with shutil.which), else the venv's
    ``minirun-runtime`` next to this interpreter. It may not exist: see
    :func:`require_runtime`."""
    choice = os.environ.get(RUNTIME_ENV, "").strip()
    if not choice:
        return Path(sys.executable).parent / "minirun-runtime"
    found = shutil.which(choice)
    if found is None:
        raise FileNotFoundError(f"{RUNTIME_ENV}={choice!r}: not an executable (shutil.which)")
    return Path(found)


def require_runtime() -> Path:
    """:func:`runtime_binary`, or skip with the reason."""
    try:
        path = runtime_binary()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    if not os.access(path, os.X_OK):
        pytest.skip(f"{path} does not exist yet; set {RUNTIME_ENV}=runc (or crun) to run "
                    "these tests against a reference runtime")
    return path


def need(*tools: str) -> None:
    for tool in tools:
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")


# -- cgroups ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hierarchy:
    mountpoint: Path
    version: int  # 1 or 2
    controllers: frozenset[str]  # v1: from the mount options (incl. name=systemd)


def _mountinfo() -> list[tuple[list[str], list[str]]]:
    """(fields before " - ", fields after) for every line of /proc/self/mountinfo."""
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        out.append((left.split(), right.split()))
    return out


def cgroup_hierarchies() -> list[Hierarchy]:
    """Every mounted cgroup hierarchy: one cgroup2 on a v2 host, one per controller on
    v1, and the v1 ones plus /sys/fs/cgroup/unified on a hybrid host."""
    out = []
    for left, right in _mountinfo():
        fstype = right[0]
        if fstype == "cgroup":
            opts = set(right[2].split(","))
            out.append(Hierarchy(Path(left[4]), 1, frozenset(opts - {"rw", "ro"})))
        elif fstype == "cgroup2":
            path = Path(left[4])
            try:
                ctrls = frozenset((path / "cgroup.controllers").read_text().split())
            except OSError:
                ctrls = frozenset()
            out.append(Hierarchy(path, 2, ctrls))
    return out


def hybrid_v2_has_controllers() -> bool:
    """A v1 host that also mounts cgroup2 at /sys/fs/cgroup/unified with controllers on
    it: the layout crun refuses."""
    hs = cgroup_hierarchies()
    return any(h.version == 1 for h in hs) and any(
        h.version == 2 and h.controllers for h in hs
    )


def cgroup_dirs(rel: str) -> list[Path]:
    """``rel`` (a cgroup path like ``/mr-oci-x``) in every hierarchy that has it."""
    return [p for h in cgroup_hierarchies() if (p := h.mountpoint / rel.lstrip("/")).is_dir()]


def cgroup_tree_pids(rel: str) -> set[int]:
    pids: set[int] = set()
    for top in cgroup_dirs(rel):
        for dirpath, _, _ in os.walk(top):
            try:
                pids.update(int(p) for p in (Path(dirpath) / "cgroup.procs").read_text().split())
            except OSError:
                pass
    return pids


def cgroup_subdirs(rel: str) -> set[str]:
    """Every cgroup below ``rel`` (relative names, any hierarchy)."""
    out: set[str] = set()
    for top in cgroup_dirs(rel):
        for dirpath, dirnames, _ in os.walk(top):
            out.update(str((Path(dirpath) / d).relative_to(top)) for d in dirnames)
    return out


def thaw_cgroup_tree(rel: str) -> None:
    """A frozen task cannot die of SIGKILL until thawed (a test failed while paused)."""
    for top in cgroup_dirs(rel):
        for dirpath, _, filenames in os.walk(top):
            for name, value in (("freezer.state", "THAWED"), ("cgroup.freeze", "0")):
                if name in filenames:
                    try:
                        (Path(dirpath) / name).write_text(value)
                    except OSError:
                        pass


def remove_cgroup_tree(rel: str) -> list[str]:
    """rmdir ``rel`` and everything below it in every hierarchy; what could not go."""
    failed = []
    for top in cgroup_dirs(rel):
        for dirpath, _, _ in os.walk(top, topdown=False):
            try:
                os.rmdir(dirpath)
            except OSError as e:
                failed.append(f"{dirpath}: {e.strerror}")
    return failed


def _cgroup_dir(pid: int, controller: str) -> tuple[int, Path]:
    """(cgroup version, directory) of ``pid``'s cgroup for ``controller``, seen from the
    host: its v1 hierarchy if there is one, else the v2 one."""
    paths: dict[str, str] = {}
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, ctrls, path = line.split(":", 2)
        for c in ctrls.split(",") if ctrls else [""]:
            paths[c] = path.lstrip("/")
    hierarchies = cgroup_hierarchies()
    for h in hierarchies:
        if h.version == 1 and controller in h.controllers and controller in paths:
            return 1, h.mountpoint / paths[controller]
    for h in hierarchies:
        if h.version == 2 and "" in paths and (h.mountpoint / paths[""]).is_dir():
            return 2, h.mountpoint / paths[""]
    raise AssertionError(f"no {controller} cgroup found for pid {pid}")


def freezer_state(pid: int) -> str:
    """FROZEN / THAWED (FREEZING on v1 while it happens) of ``pid``'s cgroup."""
    version, d = _cgroup_dir(pid, "freezer")
    if version == 1:
        return (d / "freezer.state").read_text().strip()
    return "FROZEN" if re.search(r"^frozen 1$", (d / "cgroup.events").read_text(), re.M) else "THAWED"


def memory_and_pids_limits(pid: int) -> tuple[str, str]:
    """The memory and pids limits of ``pid``'s cgroup, read on the host."""
    version, d = _cgroup_dir(pid, "memory")
    memory = (d / ("memory.limit_in_bytes" if version == 1 else "memory.max")).read_text()
    _, d = _cgroup_dir(pid, "pids")
    return memory.strip(), (d / "pids.max").read_text().strip()


# -- mounts and processes ----------------------------------------------------------------------


def mount_table() -> Counter[tuple[str, str, str]]:
    """(mount point, fs type, source) of every mount, counted (mount ids change)."""
    return Counter((left[4], right[0], right[1]) for left, right in _mountinfo())


def leaked_mounts(before: Counter[tuple[str, str, str]], after: Counter[tuple[str, str, str]],
                  work: Path) -> list[tuple[str, str, str]]:
    """Mounts in ``after`` that ``before`` did not have. New mounts elsewhere under /tmp
    and /var/tmp are left out: other test runs on this host (the lead's suite mounts
    overlays in pytest's tmp dirs) would make the check flaky; anything else new (e.g.
    a runtime that mounted /proc/sys in the host's namespace) counts."""
    out = []
    for mnt in after - before:
        point = mnt[0]
        if point.startswith(str(work)) or not point.startswith(("/tmp/", "/var/tmp/")):
            out.append(mnt)
    return out


def unmount_under(work: Path) -> list[str]:
    """Lazily unmount whatever is still mounted below ``work`` (deepest first) so that
    removing the tree cannot reach through a mount; the mount points."""
    points = sorted({left[4] for left, _ in _mountinfo() if left[4].startswith(f"{work}/")},
                    key=len, reverse=True)
    for point in points:
        subprocess.run(["umount", "-l", point], capture_output=True)
    return points


def pids_mentioning(text: str) -> dict[int, str]:
    """Processes whose command line contains ``text`` (conmon, shims, containerd: they
    all carry our tmp paths), without this process."""
    out = {}
    for p in Path("/proc").iterdir():
        if not p.name.isdigit() or int(p.name) == os.getpid():
            continue
        try:
            cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmd:
            out[int(p.name)] = cmd.strip()
    return out


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead, just not reaped


def kill_pids(pids: set[int], timeout: float = 5) -> None:
    """SIGKILL exactly these PIDs (processes the clients started for us) and wait for
    them to be gone."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)


def describe(pids: set[int]) -> list[str]:
    out = []
    for pid in sorted(pids):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            cmd = "?"
        out.append(f"{pid}: {cmd.strip()}")
    return out


def wait_until(pred: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


# -- a real terminal -----------------------------------------------------------------------


def run_in_pty(argv: list[str], env: dict[str, str], *, wait_for: bytes, keys: bytes,
               timeout: float = 30) -> tuple[int, str]:
    """Run ``argv`` with a new pty as its stdin/stdout/stderr and controlling terminal (as a
    user's shell would), type ``keys`` once ``wait_for`` was shown, read until it exits.
    Returns (exit status, everything shown)."""
    master, slave = os.openpty()

    def make_controlling_tty() -> None:
        # after setsid (start_new_session): the pty becomes the session's terminal, so
        # the client's raw mode / SIGWINCH handling works on it as on a real one
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env,
                            start_new_session=True, preexec_fn=make_controlling_tty)
    os.close(slave)
    seen = b""
    typed = False
    deadline = time.monotonic() + timeout
    try:
        while True:
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                raise AssertionError(f"{argv[0]} in a pty timed out; it showed {seen!r}")
            ready, _, _ = select.select([master], [], [], 0.05)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: no one holds the slave side any more
                    chunk = b""
                if not chunk:
                    break
                seen += chunk
            elif proc.poll() is not None:
                break
            if not typed and wait_for in seen:
                os.write(master, keys)
                typed = True
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        os.close(master)
    assert typed, f"never saw {wait_for!r}; {argv[0]} showed {seen!r} (exit {proc.returncode})"
    return code, seen.decode(errors="replace")


# -- the runtime wrapper ---------------------------------------------------------------------


def runtime_wrapper(real: Path, dest_dir: Path, label: str, root: Path | None = None) -> Path:
    """``dest_dir/<real's name>``: a shell script that execs ``real`` with the client's
    arguments (see the module docstring for why each client gets one). It keeps the
    runtime's name because clients key behaviour on it (podman's runtime_supports_json)."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    lines = ["#!/bin/sh"]
    log = os.environ.get(RUNTIME_LOG_ENV)
    if log:
        lines.append(f"printf '%s\\n' {shlex.quote(f'[{label}]')}\" $*\" >> {shlex.quote(log)}")
    argv = [str(real)] + (["--root", str(root)] if root is not None else [])
    if real.name == "crun" and hybrid_v2_has_controllers():
        argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                'umount /sys/fs/cgroup/unified && exec "$@"', "sh", *argv]
    lines.append("exec " + " ".join(shlex.quote(a) for a in argv) + ' "$@"')
    wrapper = dest_dir / real.name
    wrapper.write_text("\n".join(lines) + "\n")
    wrapper.chmod(0o755)
    return wrapper


# -- fixtures: shared ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def oci_runtime() -> Path:
    return require_runtime()


@pytest.fixture(scope="module")
def oci_work() -> Iterator[Path]:
    """One short dir for both clients (podman's runroot and the socket paths want short
    names; pytest's tmp_path is long)."""
    work = Path(tempfile.mkdtemp(prefix="mr-oci-", dir="/tmp"))
    yield work
    unmount_under(work)  # the clients' teardowns already said what was left; be safe
    shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(autouse=True)
def no_leaked_mounts(oci_work: Path) -> Iterator[None]:
    """Each test leaves the host's mount table as it found it (autouse in every module
    that imports it)."""
    before = mount_table()
    yield
    leaked = leaked_mounts(before, mount_table(), oci_work)
    assert not leaked, f"mounts left behind: {leaked}"


def _cleanup_leftovers(label: str, cgroup_parent: str, mentioning: str, work: Path,
                       expected_cgroups: set[str], runtime_root: Path) -> list[str]:
    """After the client's own cleanup: report and remove what is still there. Processes
    are killed by PID only when they are in our cgroup tree or carry our paths."""
    problems = []

    def stray_pids() -> set[int]:
        pids = cgroup_tree_pids(cgroup_parent) | set(pids_mentioning(mentioning))
        return {p for p in pids if _alive(p)}

    # conmon / a shim may still be on its way out after the client's own cleanup
    deadline = time.monotonic() + 3
    while (stray := stray_pids()) and time.monotonic() < deadline:
        time.sleep(0.05)
    if stray:
        problems.append(f"{label}: processes left: {describe(stray)}")
        thaw_cgroup_tree(cgroup_parent)
        kill_pids(stray)
    extra = cgroup_subdirs(cgroup_parent) - expected_cgroups
    if extra:
        problems.append(f"{label}: cgroups left under {cgroup_parent}: {sorted(extra)}")
    failed = remove_cgroup_tree(cgroup_parent)
    if failed:
        problems.append(f"{label}: cgroups that could not be removed: {failed}")
    mounted = unmount_under(work)
    if mounted:
        problems.append(f"{label}: mounts left: {mounted}")
    if runtime_root.is_dir():
        state = sorted(str(p.relative_to(runtime_root)) for p in runtime_root.rglob("*"))
        if state:
            problems.append(f"{label}: runtime state left in {runtime_root}: {state}")
    return problems


# -- fixtures: podman ----------------------------------------------------------------------


@dataclass
class Podman:
    work: Path
    runtime: Path  # the wrapper podman is given
    runtime_root: Path
    cgroup_parent: str
    env: dict[str, str]
    image: str = ""  # image ID, so that no name is ever resolved (or pulled)
    run_flags: list[str] = field(default_factory=list)

    def argv(self, *args: str) -> list[str]:
        return [
            "podman", "--root", str(self.work / "root"), "--runroot", str(self.work / "run"),
            "--tmpdir", str(self.work / "libpod-tmp"), "--storage-driver", "vfs",
            "--cgroup-manager", "cgroupfs", "--events-backend", "file",
            "--runtime", str(self.runtime), *args,
        ]  # fmt: skip

    def __call__(self, *args: str, check: bool = True, timeout: float = 60) -> Run:
        res = subprocess.run(self.argv(*args), env=self.env, capture_output=True, text=True,
                             stdin=subprocess.DEVNULL, timeout=timeout)
        if check and res.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} failed ({res.returncode}):\n"
                                 f"{res.stdout}\n{res.stderr}")
        return res


def _podman_config(work: Path) -> dict[str, str]:
    """containers.conf, storage.conf, registries.conf and policy.json of our own, so
    neither /etc/containers nor /usr/share/containers decide anything; the env to use."""
    # Podman gives a root container nofile = nproc = 1048576 and lowers its own nproc to
    # 32768; raising a hard limit needs CAP_SYS_RESOURCE, which this test VM's root lacks,
    # so every create would fail ("error setting rlimit type 7/6"). Stay within reach.
    nofile = min(resource.getrlimit(resource.RLIMIT_NOFILE)[1], 1048576)
    nproc = min(resource.getrlimit(resource.RLIMIT_NPROC)[1], 32768)
    (work / "containers.conf").write_text(f"""\
[containers]
# no journald without systemd: podman logs reads a file
log_driver = "k8s-file"
default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
# the default shm lock (/dev/shm/libpod_lock) is shared by every podman store on the host
lock_type = "file"
tmp_dir = "{work / 'libpod-tmp'}"
# podman decides by the runtime's base name whether it may ask for --log-format=json
runtime_supports_json = ["runc", "crun", "minirun-runtime"]

[network]
network_config_dir = "{work / 'net'}"
""")
    (work / "storage.conf").write_text(f"""\
[storage]
# vfs: the overlay driver bind-mounts its home onto itself and never unmounts it
driver = "vfs"
graphroot = "{work / 'root'}"
runroot = "{work / 'run'}"
""")
    (work / "registries.conf").write_text('unqualified-search-registries = []\n'
                                          'short-name-mode = "disabled"\n')
    (work / "policy.json").write_text('{"default": [{"type": "insecureAcceptAnything"}]}\n')
    for d in ("home", "tmp"):
        (work / d).mkdir()
    return {
        "PATH": os.environ.get("PATH", PATH_ENV), "LANG": "C.UTF-8",
        "HOME": str(work / "home"), "TMPDIR": str(work / "tmp"),
        "CONTAINERS_CONF": str(work / "containers.conf"),
        "CONTAINERS_STORAGE_CONF": str(work / "storage.conf"),
        "CONTAINERS_REGISTRIES_CONF": str(work / "registries.conf"),
    }  # fmt: skip


@pytest.fixture(scope="module")
def podman(built_images: Path, oci_runtime: Path, oci_work: Path) -> Iterator[Podman]:
    """Podman with its own throw-away storage, config and cgroup parent, the busybox image
    loaded, and ``run_flags`` (--pull never --network none --cgroup-parent) for every run."""
    need("podman", "conmon", "unshare")
    work = oci_work / "p"
    work.mkdir()
    env = _podman_config(work)
    root = work / "runtime-root"
    pm = Podman(work, runtime_wrapper(oci_runtime, work / "bin", "podman", root), root,
                f"/{oci_work.name}-podman", env)
    pm.run_flags = ["--pull", "never", "--network", "none", "--cgroup-parent", pm.cgroup_parent]
    # containers/image keeps root's blob-info cache in /var/lib/containers/cache whatever
    # --root says: copy the image in a mount namespace with tmpfs over /var/lib and /run
    # (nothing else in them is needed: all state is in work).
    pull = pm.argv("pull", "-q", "--signature-policy", str(work / "policy.json"),
                   f"oci:{built_images / 'busybox'}:{PODMAN_IMAGE_REF}")
    res = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         'mount -t tmpfs tmpfs /var/lib && mount -t tmpfs tmpfs /run && exec "$@"', "sh", *pull],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode == 0, f"podman pull failed:\n{res.stdout}\n{res.stderr}"
    pm.image = res.stdout.split()[-1]
    try:
        yield pm
    finally:
        problems = []
        left = pm("ps", "-aq", check=False).stdout.split()
        if left:
            problems.append(f"podman: containers left: {left}")
            pm("rm", "--force", "--time", "0", *left, check=False)
        # conmon's cgroup (<parent>/conmon) is podman's own and never removed by it
        problems += _cleanup_leftovers("podman", pm.cgroup_parent, str(work), work,
                                       {"conmon"}, root)
        assert not problems, "\n".join(problems)


# -- fixtures: containerd ------------------------------------------------------------------


@dataclass
class Containerd:
    work: Path
    address: Path
    namespace: str
    runtime: Path  # the wrapper given as --runc-binary
    runtime_root: Path
    env: dict[str, str]
    image: str = ""
    proc: subprocess.Popen[bytes] | None = None

    @property
    def fifo_flags(self) -> list[str]:
        # ctr's default FIFO dir is /run/containerd/fifo, on the host
        return ["--fifo-dir", str(self.work / "fifo")]

    @property
    def run_flags(self) -> list[str]:
        return ["--runc-binary", str(self.runtime), "--runc-root", str(self.runtime_root),
                *self.fifo_flags]

    def argv(self, *args: str) -> list[str]:
        return ["ctr", "--address", str(self.address), "--namespace", self.namespace, *args]

    def __call__(self, *args: str, check: bool = True, timeout: float = 60) -> Run:
        res = subprocess.run(self.argv(*args), env=self.env, capture_output=True, text=True,
                             stdin=subprocess.DEVNULL, timeout=timeout)
        if check and res.returncode != 0:
            raise AssertionError(f"ctr {' '.join(args)} failed ({res.returncode}):\n"
                                 f"{res.stdout}\n{res.stderr}\n{self.log_tail()}")
        return res

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = (self.work / "containerd.log").read_text(errors="replace")
        except OSError:
            return ""
        return "containerd log:\n" + "\n".join(text.splitlines()[-lines:])

    def task_status(self, cid: str) -> str | None:
        """RUNNING / PAUSED / STOPPED..., None without a task."""
        for line in self("task", "ls").stdout.splitlines()[1:]:
            parts = line.split()
            if parts and parts[0] == cid:
                return parts[-1]
        return None


def _tar_dir(src: Path, dest: Path) -> Path:
    """The OCI layout dir as the tar ``ctr images import`` reads (entries at the top)."""
    with tarfile.open(dest, "w") as tar:
        for p in sorted(src.rglob("*")):
            tar.add(p, arcname=str(p.relative_to(src)), recursive=False)
    return dest


# containerd 1.6's shims always put their sockets in /run/containerd/s (not configurable)
SHIM_SOCKET_DIRS = (Path("/run/containerd/s"), Path("/run/containerd"))


@pytest.fixture(scope="module")
def containerd(built_images: Path, oci_runtime: Path, oci_work: Path) -> Iterator[Containerd]:
    """A private containerd (own root, state, socket; no CRI), started here and ended by
    its PID, with the busybox image imported into a namespace of our own (so that its
    default cgroup parent, /<namespace>, is ours too)."""
    need("containerd", "ctr", "containerd-shim-runc-v2")
    work = oci_work / "c"
    (work / "tmp").mkdir(parents=True)
    (work / "fifo").mkdir()
    address = work / "containerd.sock"
    # plugins that need the network, /opt or kernel features we do not use
    disabled = ["io.containerd.grpc.v1.cri", "io.containerd.internal.v1.opt",
                "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
                "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
    (work / "config.toml").write_text(f"""\
version = 2
root = "{work / 'root'}"
state = "{work / 'state'}"
disabled_plugins = [{', '.join(f'"{p}"' for p in disabled)}]

[grpc]
  address = "{address}"
""")
    # the shim writes exec process specs to TMPDIR (default /tmp)
    env = {"PATH": os.environ.get("PATH", PATH_ENV), "LANG": "C.UTF-8",
           "HOME": str(work / "tmp"), "TMPDIR": str(work / "tmp")}
    root = work / "runtime-root"
    # containerd namespaces are [A-Za-z0-9]+ joined by single [._-]: mkdtemp's random
    # suffix may hold "_" anywhere, so keep only its letters and digits
    suffix = "".join(c for c in oci_work.name.removeprefix("mr-oci-") if c.isalnum())
    ns = f"minirun-test-{suffix or 'x'}"
    cd = Containerd(work, address, ns, runtime_wrapper(oci_runtime, work / "bin", "containerd"),
                    root, env)
    created_run_dirs = [d for d in SHIM_SOCKET_DIRS if not d.exists()]
    with open(work / "containerd.log", "wb") as log:
        # its own session: a ^C to pytest must not kill it before this teardown ran
        cd.proc = subprocess.Popen(["containerd", "--config", str(work / "config.toml")],
                                   stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                                   start_new_session=True)
    try:
        def up() -> bool:
            assert cd.proc is not None and cd.proc.poll() is None, f"containerd died\n{cd.log_tail()}"
            return cd("version", check=False).returncode == 0

        wait_until(up, "containerd to answer")
        tar = _tar_dir(built_images / "busybox", work / "busybox.tar")
        cd("images", "import", str(tar))
        names = cd("images", "ls", "-q").stdout.split()
        assert names, f"ctr images import imported nothing\n{cd.log_tail()}"
        cd.image = names[0]
        yield cd
    finally:
        problems = []
        if cd.proc.poll() is None:
            for cid in cd("containers", "ls", "-q", check=False).stdout.split():
                problems.append(f"containerd: container left: {cid}")
                cd("task", "kill", "--signal", "SIGKILL", cid, check=False)
                cd("task", "delete", "--force", cid, check=False)
                cd("containers", "delete", cid, check=False)
            cd.proc.terminate()
            try:
                cd.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                problems.append("containerd: did not stop on SIGTERM")
                cd.proc.kill()
                cd.proc.wait()
        problems += _cleanup_leftovers("containerd", f"/{ns}", str(work), work, set(),
                                       root / ns)
        for d in created_run_dirs:  # only if we made them and nothing else is in them
            try:
                d.rmdir()
            except OSError:
                pass
        assert not problems, "\n".join(problems)
