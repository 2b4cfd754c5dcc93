"""Fixtures for the runtime's integration tests: a busybox rootfs and Docker-like specs.

Import the fixtures you use into the test module (``from tests.integration.runtime_fixtures
import busybox_layer, rootfs``); they need root, overlayfs and /bin/busybox (static).
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from minirun.runtime import OverlayRootfs, Stdio, run

BUSYBOX = "/bin/busybox"

DEFAULT_CAPS = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
]  # fmt: skip
DEFAULT_CAPS_MASK = "00000000a80425fb"

MASKED_PATHS = [
    "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
    "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
    "/sys/devices/virtual/powercap",
]  # fmt: skip
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]


def skip_unless_possible() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    if not os.path.exists(BUSYBOX):
        pytest.skip("needs busybox-static (/bin/busybox)")
    with open("/proc/filesystems") as f:
        if "overlay" not in f.read():
            pytest.skip("kernel has no overlayfs")


def make_busybox_tree(root: Path) -> None:
    """A minimal image: static busybox with its applet links, passwd/group."""
    (root / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    applets = subprocess.run(
        [BUSYBOX, "--list"], check=True, capture_output=True, text=True
    ).stdout.split()
    for name in applets:
        if name != "busybox":
            os.symlink("busybox", root / "bin" / name)
    (root / "etc").mkdir()
    (root / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
    )
    (root / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
    for d in ("root", "tmp", "proc", "sys", "dev"):
        (root / d).mkdir()
    os.chmod(root / "tmp", 0o1777)


@pytest.fixture(scope="session")
def busybox_layer() -> Iterator[Path]:
    skip_unless_possible()
    base = Path(tempfile.mkdtemp(prefix="minirun-rt-layer-"))
    try:
        make_busybox_tree(base / "diff")
        yield base / "diff"
    finally:
        shutil.rmtree(base)


@pytest.fixture
def rootfs(busybox_layer: Path) -> Iterator[OverlayRootfs]:
    base = Path(tempfile.mkdtemp(prefix="minirun-rt-ctr-"))
    try:
        for d in ("upper", "work", "merged"):
            (base / d).mkdir()
        yield OverlayRootfs(
            lowerdirs=[str(busybox_layer)],
            upperdir=str(base / "upper"),
            workdir=str(base / "work"),
            target=str(base / "merged"),
        )
    finally:
        shutil.rmtree(base)


def make_spec(args: list[str], **process: Any) -> dict[str, Any]:
    """A spec shaped like the one `minirun run` builds (Docker's defaults)."""
    spec: dict[str, Any] = {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "cwd": "/",
            "capabilities": {
                "bounding": list(DEFAULT_CAPS),
                "effective": list(DEFAULT_CAPS),
                "permitted": list(DEFAULT_CAPS),
            },
            "noNewPrivileges": False,
        },
        "root": {"path": "rootfs", "readonly": False},
        "hostname": "testbox",
        "mounts": [
            {
                "destination": "/proc",
                "type": "proc",
                "source": "proc",
                "options": ["nosuid", "noexec", "nodev"],
            },
            {
                "destination": "/dev",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
            },
            {
                "destination": "/dev/pts",
                "type": "devpts",
                "source": "devpts",
                "options": [
                    "nosuid",
                    "noexec",
                    "newinstance",
                    "ptmxmode=0666",
                    "mode=0620",
                    "gid=5",
                ],
            },
            {
                "destination": "/sys",
                "type": "sysfs",
                "source": "sysfs",
                "options": ["nosuid", "noexec", "nodev", "ro"],
            },
            {
                "destination": "/dev/mqueue",
                "type": "mqueue",
                "source": "mqueue",
                "options": ["nosuid", "noexec", "nodev"],
            },
            {
                "destination": "/dev/shm",
                "type": "tmpfs",
                "source": "shm",
                "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=67108864"],
            },
        ],  # fmt: skip
        "linux": {
            "namespaces": [
                {"type": t} for t in ("mount", "uts", "ipc", "pid", "network", "cgroup")
            ],
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
        },
    }
    if process:
        spec["process"].update(process)
    return copy.deepcopy(spec)


def sh(script: str, **process: Any) -> dict[str, Any]:
    return make_spec(["sh", "-c", script], **process)


def run_capture(
    spec: dict[str, Any], rootfs: OverlayRootfs, *, stdin: int | None = None, **kw: Any
) -> tuple[int, str, str]:
    """Run the container with stdout/stderr into temp files; (status, stdout, stderr)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        null = os.open("/dev/null", os.O_RDONLY) if stdin is None else None
        try:
            code = run(
                spec,
                rootfs,
                stdio=Stdio(
                    stdin=stdin if null is None else null, stdout=out.fileno(), stderr=err.fileno()
                ),  # fmt: skip
                **kw,
            )
        finally:
            if null is not None:
                os.close(null)
        out.seek(0)
        err.seek(0)
        return code, out.read().decode(), err.read().decode()


def make_layers(base: Path, busybox_layer: Path, count: int) -> list[str]:
    """``count`` lowerdirs laid out like the lead's store: layers/<hex>/diff with short
    links layers/l/<26 chars> -> ../<hex>/diff; topmost (busybox) first."""
    links = base / "layers" / "l"
    links.mkdir(parents=True)
    out = []
    for i in range(count):
        hexid = f"{i:064x}"
        diff = base / "layers" / hexid / "diff"
        if i == 0:
            diff.parent.mkdir()
            shutil.copytree(busybox_layer, diff, symlinks=True)
        else:
            (diff / "layers").mkdir(parents=True)
            (diff / "layers" / f"file{i}").write_text(f"{i}\n")
        link = links / f"{i:026d}"
        os.symlink(f"../{hexid}/diff", link)
        out.append(str(link))
    return out


def drive() -> None:
    """Entry point of a driver subprocess: ``python -c 'from ... import drive; drive()'
    JSON`` with {"spec":..., "rootfs": [lower, upper, work, target], "ready": path?}.
    Exits with the container's status (125 on a runtime error)."""
    import json
    import sys

    from minirun.errors import MinirunError

    arg = json.loads(sys.argv[1])
    lowers, upper, work, target = arg["rootfs"]
    try:
        code = run(arg["spec"], OverlayRootfs(lowers, upper, work, target))
    except MinirunError as e:
        os.write(2, f"Error: {e}\n".encode())
        code = 125
    sys.exit(code)


def driver_cmd(spec: dict[str, Any], rootfs: OverlayRootfs) -> list[str]:
    import json
    import sys

    arg = {
        "spec": spec,
        "rootfs": [rootfs.lowerdirs, rootfs.upperdir, rootfs.workdir, rootfs.target],
    }
    code = "from tests.integration.runtime_fixtures import drive; drive()"
    return [sys.executable, "-c", code, json.dumps(arg)]


REPO_ROOT = str(Path(__file__).resolve().parents[2])
