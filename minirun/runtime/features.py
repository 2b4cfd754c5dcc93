"""``features`` (runtime-spec features.md: what this runtime understands) and ``spec`` (a
default config.json, as ``runc spec`` writes)."""

from __future__ import annotations

import os
from typing import Any

from minirun.runtime.config import HOOK_NAMES, OCI_VERSION

_SECCOMP_ACTIONS = ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS",
                    "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG", "SCMP_ACT_TRACE", "SCMP_ACT_TRAP"]
_SECCOMP_OPERATORS = ["SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE", "SCMP_CMP_LT",
                      "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"]
_SECCOMP_FLAGS = ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
                  "SECCOMP_FILTER_FLAG_TSYNC"]  # fmt: skip


def features() -> dict[str, Any]:
    from minirun.runtime import cgroups, mounts, seccomp
    from minirun.runtime.security import CAP_NUMBERS

    options = sorted(set(mounts.FLAG_OPTIONS) | set(mounts.PROPAGATION))
    return {
        "ociVersionMin": "1.0.0",
        "ociVersionMax": OCI_VERSION,
        "hooks": list(HOOK_NAMES),
        "mountOptions": options,
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "user", "uts"],
            "capabilities": sorted(CAP_NUMBERS, key=CAP_NUMBERS.__getitem__),
            "cgroup": {"v1": True, "v2": True, "systemd": cgroups.systemd_available(),
                       "systemdUser": False, "rdma": False},  # fmt: skip
            "seccomp": {"enabled": seccomp.available(), "actions": _SECCOMP_ACTIONS,
                        "operators": _SECCOMP_OPERATORS,
                        "archs": ["SCMP_ARCH_X86", "SCMP_ARCH_X86_64", "SCMP_ARCH_X32",
                                  "SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
                        "knownFlags": _SECCOMP_FLAGS, "supportedFlags": _SECCOMP_FLAGS},
            "apparmor": {"enabled": False},
            "selinux": {"enabled": False},
            "intelRdt": {"enabled": False},
            "mountExtensions": {"idmap": {"enabled": False}},
        },
        "annotations": {"org.minirun.runtime.devices.v2": "eBPF (BPF_CGROUP_DEVICE)"},
    }


def default_spec(rootless: bool = False) -> dict[str, Any]:
    """runc's default config: ``sh`` on a terminal, a rootfs dir beside it."""
    caps = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
    spec: dict[str, Any] = {
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": True,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "TERM=xterm"],
            "cwd": "/",
            "capabilities": {k: list(caps) for k in ("bounding", "effective", "permitted")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "minirun",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620",
                         "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
        ],
        "linux": {
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount",
                                                  "cgroup")],
            "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                            "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                            "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                              "/proc/sysrq-trigger"],
        },
    }  # fmt: skip
    if rootless:
        lx = spec["linux"]
        lx["namespaces"] = [n for n in lx["namespaces"] if n["type"] != "network"]
        lx["namespaces"].append({"type": "user"})
        lx["uidMappings"] = [{"containerID": 0, "hostID": os.geteuid(), "size": 1}]
        lx["gidMappings"] = [{"containerID": 0, "hostID": os.getegid(), "size": 1}]
        del lx["resources"]
        for m in spec["mounts"]:
            if m["destination"] == "/sys":
                m.update(type="none", source="/sys", options=["rbind", "nosuid", "noexec",
                                                              "nodev", "ro"])  # fmt: skip
            if m["destination"] == "/dev/pts":
                m["options"] = [o for o in m["options"] if o != "gid=5"]
        spec["mounts"] = [m for m in spec["mounts"] if m["destination"] != "/sys/fs/cgroup"]
    return spec
