"""Build the OCI runtime spec (config.json) for a container: image config + run flags.

This is the contract between the container side and the runtime, exactly as
containerd hands runc a bundle. Docker's precedence rules are kept:
``--entrypoint`` replaces the image's Entrypoint *and* drops its Cmd; arguments after
the image replace Cmd; ``-e`` overrides the image's Env; ``-u``/``-w`` override
User/WorkingDir.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from minirun.container.runflags import parse_device, parse_ulimit
from minirun.errors import UsageError

# Docker's default capability set (moby oci/caps/defaults.go).
DEFAULT_CAPS = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
)

# Every capability the kernel knows, for --cap-add ALL (linux/capability.h, up to 6.x).
ALL_CAPS = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
    "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)

MASKED_PATHS = (
    "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
    "/sys/firmware", "/sys/devices/virtual/powercap",
)
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class RunOptions:
    """What ``minirun run`` was asked for, flag by flag (Docker's names)."""

    command: list[str] = field(default_factory=list)
    entrypoint: str | None = None  # None: the image's; "": none
    env: list[str] = field(default_factory=list)  # KEY=VAL, already merged from --env-file
    workdir: str | None = None
    user: str | None = None
    hostname: str | None = None
    tty: bool = False
    interactive: bool = False
    read_only: bool = False
    volumes: list[str] = field(default_factory=list)  # HOST:CTR[:ro|rw]
    tmpfs: list[str] = field(default_factory=list)  # PATH[:options]
    cap_add: list[str] = field(default_factory=list)
    cap_drop: list[str] = field(default_factory=list)
    no_new_privileges: bool = False
    chroot: bool = False
    name: str | None = None
    remove: bool = False
    detach: bool = False
    init: bool = False  # a minimal init as PID 1 (minirun-init, bind-mounted at /dev/init)
    network: str = "bridge"  # none | host | bridge | a network's name
    publish: list[str] = field(default_factory=list)  # -p [IP:][HOSTPORT:]CTRPORT[/PROTO]
    publish_all: bool = False  # -P: every ExposedPorts of the image, on random host ports
    dns: list[str] = field(default_factory=list)  # --dns servers (replace the host's)
    add_hosts: list[str] = field(default_factory=list)  # --add-host HOST:IP
    pull: str = "missing"  # --pull missing|always|never
    platform: str | None = None  # --platform for that pull
    privileged: bool = False  # all capabilities and host devices, no seccomp, no masked paths
    seccomp: str | None = None  # --security-opt seccomp=PROFILE.json | unconfined
    memory: str | None = None  # --memory and friends, as given; parsed by container.resources
    memory_swap: str | None = None
    cpus: str | None = None
    cpu_shares: int | None = None
    pids_limit: int | None = None
    labels: dict[str, str] = field(default_factory=dict)  # --label/--label-file (over the image's)
    ulimits: list[str] = field(default_factory=list)  # --ulimit NAME=SOFT[:HARD]
    devices: list[str] = field(default_factory=list)  # --device HOST[:CTR][:rwm]
    sysctls: dict[str, str] = field(default_factory=dict)  # --sysctl KEY=VALUE
    stop_signal: str | None = None  # --stop-signal (over the image's StopSignal)
    stop_timeout: int | None = None  # --stop-timeout seconds (stop's default -t)
    restart: str = "no"  # --restart no|always|unless-stopped|on-failure[:N]
    health: dict[str, Any] = field(default_factory=dict)  # --health-* as given (runflags.HealthFlags)
    mounts: list[str] = field(default_factory=list)  # --mount type=...,source=,target=,...
    cidfile: str | None = None  # --cidfile: the ID is written there at create


def host_capabilities() -> list[str]:
    """"All capabilities" means all that minirun itself may pass on: its bounding set (a
    sandboxed root may lack some; asking for those makes capset fail). ALL_CAPS is in the
    kernel's numbering, so bit i of CapBnd is ALL_CAPS[i]."""
    try:
        with open("/proc/self/status") as f:
            bnd = next(int(line.split()[1], 16) for line in f if line.startswith("CapBnd:"))
    except (OSError, StopIteration, ValueError):
        return list(ALL_CAPS)
    return [c for i, c in enumerate(ALL_CAPS) if bnd >> i & 1]


def cap_name(text: str) -> str:
    name = text.strip().upper()
    if name == "ALL":
        return name
    if not name.startswith("CAP_"):
        name = "CAP_" + name
    if name not in ALL_CAPS:
        raise UsageError(f"unknown capability {text!r} (e.g. NET_ADMIN, SYS_PTRACE, ALL)")
    return name


def capabilities(add: list[str], drop: list[str]) -> list[str]:
    """Docker's rule: start from the defaults; ALL in drop empties it, ALL in add fills it;
    then the named adds and drops apply."""
    adds = [cap_name(c) for c in add]
    drops = [cap_name(c) for c in drop]
    caps = list(DEFAULT_CAPS)
    if "ALL" in drops:
        caps = []
    if "ALL" in adds:
        caps = host_capabilities()
    for c in adds:
        if c != "ALL" and c not in caps:
            caps.append(c)
    return [c for c in caps if c not in drops or c == "ALL"]


def parse_env_file(text: str, host_env: dict[str, str], where: str) -> list[str]:
    """``--env-file``: KEY=VAL lines; a bare KEY takes the host's value; # starts a comment."""
    out = []
    # Lines end at "\n" only (with an optional "\r" before it), as Docker's bufio.Scanner
    # reads them: str.splitlines() would also split at \x0b, \x1c, \u2028... inside a value.
    for n, raw in enumerate(text.split("\n"), 1):
        line = raw.removesuffix("\r").lstrip()
        if not line or line.startswith("#"):
            continue
        key = line.split("=", 1)[0]
        if not key or any(c.isspace() for c in key):
            raise UsageError(f"{where}:{n}: variable {key!r} contains whitespace or is empty")
        out.extend(expand_env([line], host_env))
    return out


def expand_env(items: list[str], host_env: dict[str, str]) -> list[str]:
    """``-e KEY`` without a value passes the host's KEY through, or nothing if unset."""
    out = []
    for item in items:
        if "=" in item:
            if item.startswith("="):
                raise UsageError(f"invalid environment variable {item!r}")
            out.append(item)
        elif item in host_env:
            out.append(f"{item}={host_env[item]}")
    return out


def env_map(env: Sequence[str]) -> dict[str, str]:
    """``KEY=VALUE`` items as a dict: a later value wins, at its key's first position."""
    out: dict[str, str] = {}
    for item in env:
        k, _, v = str(item).partition("=")
        out[k] = v
    return out


def merge_env(base: list[str], overrides: list[str]) -> list[str]:
    """Later values win, keeping the first position of each key (as Docker does)."""
    return [f"{k}={v}" for k, v in env_map([*base, *overrides]).items()]


def process_args(image_cfg: dict[str, Any], opts: RunOptions) -> list[str]:
    if opts.entrypoint is not None:
        entry = [opts.entrypoint] if opts.entrypoint else []
        cmd = opts.command
    else:
        entry = list(image_cfg.get("Entrypoint") or [])
        cmd = opts.command or list(image_cfg.get("Cmd") or [])
    args = entry + cmd
    if not args:
        raise UsageError("no command specified (the image has no Cmd or Entrypoint; give one after the image)")
    return args


def parse_volume(spec: str) -> dict[str, Any]:
    parts = spec.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise UsageError(f"invalid volume specification {spec!r} (want /host/path:/container/path[:ro])")
    src, dst = parts[0], parts[1]
    mode = parts[2] if len(parts) == 3 else "rw"
    if not src.startswith("/"):
        raise UsageError(f"invalid volume {spec!r}: named volumes are not supported; give an absolute host path")
    if not dst.startswith("/") or dst == "/":
        raise UsageError(f"invalid volume {spec!r}: the container path must be absolute and not /")
    opts = []
    for m in mode.split(","):
        if m not in ("ro", "rw", "z", "Z"):
            raise UsageError(f"invalid volume mode {m!r} in {spec!r} (use ro or rw)")
        if m in ("ro", "rw"):
            opts.append(m)
    return {"destination": dst, "type": "bind", "source": src, "options": ["rbind", "rprivate", *opts]}


def make_bind_sources(volumes: list[str]) -> None:
    """Docker's -v (not --mount): a host path that does not exist is made as a directory
    (0755, root's, parents too) before the container starts, so the bind has a source."""
    for spec in volumes:
        if ":" not in spec or not spec.startswith("/"):
            continue  # a named or anonymous volume (container/volumes.py), not a host path
        src = parse_volume(spec)["source"]
        if os.path.lexists(src):
            continue  # whatever it is (a dangling link too): the mount will say if it is wrong
        missing = []
        path = os.path.normpath(src)
        while not os.path.lexists(path):
            missing.append(path)
            path = os.path.dirname(path)
        for d in reversed(missing):
            try:
                os.mkdir(d, 0o755)
            except FileExistsError:
                continue  # made meanwhile (another container with the same -v)
            except OSError as e:
                raise UsageError(f"bind mount source {src}: cannot create it "
                                 f"({e.strerror or e}{f': {d}' if d != src else ''})") from None
            os.chmod(d, 0o755)  # whatever the umask


def parse_tmpfs(spec: str) -> dict[str, Any]:
    path, _, extra = spec.partition(":")
    if not path.startswith("/") or path == "/":
        raise UsageError(f"invalid --tmpfs {spec!r}: the path must be absolute and not /")
    options = ["nosuid", "nodev", "noexec"]
    if extra:
        options += [o for o in extra.split(",") if o]
    return {"destination": path, "type": "tmpfs", "source": "tmpfs", "options": options}


def default_mounts() -> list[dict[str, Any]]:
    """What runc's default spec and Docker mount in every container."""
    return [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
        # the container's own cgroup (its cgroup namespace's root), read-only, as Docker
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
    ]


@dataclass(frozen=True)
class User:
    """The process's user as the image's /etc/passwd and /etc/group resolve it."""

    uid: int
    gid: int
    additional_gids: list[int]
    home: str


INIT_PATH = "/dev/init"  # where --init's PID 1 appears (Docker: /sbin/docker-init)


def build_spec(image_cfg: dict[str, Any], opts: RunOptions, user: User, hostname: str,
               etc_files: dict[str, str], init_binary: str | None = None,
               volume_mounts: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The OCI runtime spec. ``etc_files`` maps /etc/hosts etc. to host files to bind;
    ``init_binary`` is the host's minirun-init, used with --init; ``volume_mounts``: the
    -v/--mount/image-VOLUME mounts container/volumes.py resolved (None: -v binds only).
    The image config's fields are type-checked first (ManifestError names a bad one)."""
    from minirun.image.oci import check_run_config

    image_cfg = check_run_config(image_cfg)
    env = merge_env(list(image_cfg.get("Env") or []), [])
    if not any(e.startswith("PATH=") for e in env):
        env.insert(0, f"PATH={DEFAULT_PATH}")
    env = merge_env(env, [f"HOSTNAME={hostname}"] + (["TERM=xterm"] if opts.tty else []))
    env = merge_env(env, opts.env)
    if not any(e.startswith("HOME=") for e in env):
        env.append(f"HOME={user.home}")
    caps = host_capabilities() if opts.privileged else capabilities(opts.cap_add, opts.cap_drop)
    mounts = default_mounts()
    if opts.privileged:  # /sys (and its cgroup mount) read-write, as Docker's --privileged
        for m in mounts:
            if m["destination"].startswith("/sys"):
                m["options"] = [o for o in m["options"] if o != "ro"]
    user_mounts: list[dict[str, Any]] = [
        {"destination": dst, "type": "bind", "source": src, "options": ["rbind", "rprivate", "rw"]}
        for dst, src in etc_files.items()]
    user_mounts += [parse_tmpfs(t) for t in opts.tmpfs]
    user_mounts += volume_mounts if volume_mounts is not None else [parse_volume(v) for v in opts.volumes]
    # parents before children, as Docker sorts them: -v vol:/etc, then /etc/hosts over it
    user_mounts.sort(key=lambda m: os.path.normpath(m["destination"]).count("/"))
    mounts += user_mounts
    args = process_args(image_cfg, opts)
    devices = [d for spec in opts.devices for d in parse_device(spec)]
    if opts.init:
        if not init_binary:
            raise UsageError("--init needs minirun-init (reinstall minirun: pip install . or make install)")
        mounts.append({"destination": INIT_PATH, "type": "bind", "source": init_binary,
                       "options": ["bind", "ro", "nosuid", "nodev"]})
        args = [INIT_PATH, "--", *args]
    cwd = opts.workdir or image_cfg.get("WorkingDir") or "/"
    if not cwd.startswith("/"):
        raise UsageError(f"the working directory {cwd!r} is invalid: it needs to be an absolute path")
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": opts.tty,
            "user": {"uid": user.uid, "gid": user.gid, "additionalGids": user.additional_gids},
            "args": args,
            "env": env,
            "cwd": cwd,
            # A non-root user gets the set as its bounding set only, as moby does: the
            # process can regain them only through a file capability or setuid binary.
            "capabilities": {"bounding": caps, "effective": caps if user.uid == 0 else [],
                             "permitted": caps if user.uid == 0 else [], "inheritable": [], "ambient": []},
            "noNewPrivileges": opts.no_new_privileges,
            "rlimits": [parse_ulimit(u).to_oci() for u in opts.ulimits],
        },
        "root": {"path": "rootfs", "readonly": opts.read_only},
        "hostname": hostname,
        "mounts": mounts,
        "linux": {
            # --network host: no network namespace, the host's own network
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount", "cgroup")
                           if t != "network" or opts.network != "host"],
            "maskedPaths": [] if opts.privileged else list(MASKED_PATHS),
            "readonlyPaths": [] if opts.privileged else list(READONLY_PATHS),
            **({"devices": host_devices()} if opts.privileged else {}),
            **({"devices": [d.to_oci() for d in devices]} if devices and not opts.privileged else {}),
            **({"sysctl": dict(opts.sysctls)} if opts.sysctls else {}),
            **({"seccomp": sc} if (sc := seccomp_for(opts, caps)) else {}),
        },
    }


def seccomp_for(opts: RunOptions, caps: list[str]) -> dict[str, Any] | None:
    """``linux.seccomp``: Docker's default profile unless --privileged or
    seccomp=unconfined; a profile file with seccomp=PATH."""
    from minirun.container.seccomp_profile import oci_for

    return oci_for(opts.seccomp, caps, privileged=opts.privileged)


def host_devices() -> list[dict[str, Any]]:
    """--privileged: every char and block device of the host's /dev, as Docker gives."""
    import stat

    out = []
    for dirpath, dirnames, filenames in os.walk("/dev"):
        dirnames[:] = [d for d in dirnames if d not in ("pts", "shm", "mqueue")]
        for name in filenames:
            path = os.path.join(dirpath, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                if path in ("/dev/console", "/dev/ptmx", "/dev/tty"):
                    continue  # the container gets its own
                out.append({"path": path, "type": "c" if stat.S_ISCHR(st.st_mode) else "b",
                            "major": os.major(st.st_rdev), "minor": os.minor(st.st_rdev),
                            "fileMode": stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid})
    return out
