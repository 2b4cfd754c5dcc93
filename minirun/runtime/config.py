"""config.json, read and checked: the whole contract between an engine and this runtime.

``load(bundle)`` parses an OCI runtime-spec config (ociVersion 1.0.0 to 1.3.x) into a
``Config``: every value the runtime acts on is validated here, in the parent, before any
process is forked, so a bad value is one clear error naming its field
(``linux.namespaces[2].type: unknown namespace type 'bogus'``) and nothing is left half
made. Unknown fields are ignored, as the spec asks. Fields this runtime does not act on
(apparmorProfile, selinuxLabel, mountLabel, idmapped mounts...) are listed in
``Config.ignored`` so ``--debug`` can say so.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from minirun.errors import RuntimeFailure
from minirun.runtime import linux

SUPPORTED_VERSIONS = ("1.0", "1.1", "1.2", "1.3")
OCI_VERSION = "1.2.0"  # what this runtime implements; reported by `state` and `features`

HOOK_NAMES = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart",
              "poststop")  # fmt: skip

# Sysctls that belong to a namespace (runc's validator): only these may be set, and only
# when the container has its own namespace of that kind; anything else would change the host.
_IPC_SYSCTLS = ("kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall",
                "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced")  # fmt: skip


_DEV_MAX = 2**32 - 1  # a device major or minor number: an unsigned int for makedev(3)
_HOOK_TIMEOUT_MAX = 2**63 - 1  # a hook's timeout in seconds: runc's is a Go int


class ConfigError(RuntimeFailure):
    """A config.json value that cannot be run; the message starts with the field's path."""

    exit_code = 1


@dataclass(frozen=True)
class Namespace:
    """One of linux.namespaces: a type (its CLONE_* flag), new or joined by path."""

    type: str
    flag: int
    path: str | None  # join this namespace instead of making a new one


@dataclass(frozen=True)
class IdMapping:
    """One entry of linux.uidMappings / gidMappings."""

    container_id: int
    host_id: int
    size: int


@dataclass(frozen=True)
class Hook:
    """One OCI hook: a host path, its argv and env, an optional timeout."""

    path: str
    args: tuple[str, ...]
    env: tuple[str, ...]
    timeout: float | None


@dataclass
class Process:
    """``process`` (or an exec's process.json)."""

    args: list[str]
    env: list[str]
    cwd: str
    terminal: bool = False
    console_size: tuple[int, int] | None = None  # (height, width)
    uid: int = 0
    gid: int = 0
    additional_gids: tuple[int, ...] = ()
    umask: int | None = None
    capabilities: dict[str, list[str]] | None = None  # None: none at all (an exec: the container's)
    rlimits: list[tuple[str, int, int]] = field(default_factory=list)
    no_new_privileges: bool = False
    oom_score_adj: int | None = None


@dataclass
class Config:
    """A validated config.json: everything a container is made from."""

    bundle: str
    oci_version: str
    root_path: str  # absolute
    root_readonly: bool
    process: Process | None
    hostname: str | None
    domainname: str | None
    mounts: list[dict[str, Any]]
    namespaces: list[Namespace]
    uid_mappings: list[IdMapping]
    gid_mappings: list[IdMapping]
    devices: list[dict[str, Any]]
    resources: dict[str, Any]
    cgroups_path: str | None
    sysctl: dict[str, str]
    seccomp: dict[str, Any] | None
    masked_paths: list[str]
    readonly_paths: list[str]
    rootfs_propagation: str | None
    hooks: dict[str, list[Hook]]
    annotations: dict[str, str]
    ignored: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)

    def has_new(self, ns_type: str) -> bool:
        return any(n.type == ns_type and n.path is None for n in self.namespaces)

    def has(self, ns_type: str) -> bool:
        return any(n.type == ns_type for n in self.namespaces)


# --- helpers ---------------------------------------------------------------------------------


def _obj(v: Any, where: str) -> dict[str, Any]:
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise ConfigError(f"{where}: must be an object, got {type(v).__name__}")
    return v


def _list(v: Any, where: str) -> list[Any]:
    if v is None:
        return []
    if not isinstance(v, list):
        raise ConfigError(f"{where}: must be an array, got {type(v).__name__}")
    return v


def _str(v: Any, where: str, *, optional: bool = True) -> str | None:
    if v is None and optional:
        return None
    if not isinstance(v, str):
        raise ConfigError(f"{where}: must be a string, got {v!r}")
    return v


def _key(where: str, key: Any) -> str:
    """``where.key`` for a field named by an untrusted object key: ``where['a\\nb']`` (the
    key quoted) when it is not plain printable text, so a message stays one line."""
    if isinstance(key, str) and key and key.isprintable() and not any(c.isspace() for c in key):
        return f"{where}.{key}"
    return f"{where}[{key!r}]"


def _int(v: Any, where: str, *, lo: int | None = None, hi: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ConfigError(f"{where}: must be an integer, got {v!r}")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        shown = str(v) if abs(v) < 10**30 else f"a {v.bit_length()}-bit integer"
        bounds = (f"from {lo} to {hi}" if lo is not None and hi is not None
                  else f"at least {lo}" if lo is not None else f"at most {hi}")
        raise ConfigError(f"{where}: {shown} is out of range (must be {bounds})")
    return v


def _strings(v: Any, where: str) -> list[str]:
    out = _list(v, where)
    for i, s in enumerate(out):
        if not isinstance(s, str):
            raise ConfigError(f"{where}[{i}]: must be a string, got {s!r}")
    return out


def check_version(v: Any) -> str:
    s = _str(v, "ociVersion", optional=False)
    assert s is not None
    major_minor = ".".join(s.split("-")[0].split("+")[0].split(".")[:2])
    if major_minor not in SUPPORTED_VERSIONS:
        raise ConfigError(f"ociVersion: {s!r} is not supported (this runtime implements "
                          f"{OCI_VERSION} and accepts 1.0.0 to 1.3.x)")  # fmt: skip
    return s


# --- process ---------------------------------------------------------------------------------

_CAP_SETS = ("bounding", "effective", "inheritable", "permitted", "ambient")


def parse_process(p: Any, where: str = "process", ignored: list[str] | None = None) -> Process:
    from minirun.runtime.security import CAP_NUMBERS, RLIMIT_NAMES

    p = _obj(p, where)
    args = _strings(p.get("args"), f"{where}.args")
    if not args:
        raise ConfigError(f"{where}.args: must name a command (it is empty)")
    env = _strings(p.get("env"), f"{where}.env")
    cwd = _str(p.get("cwd"), f"{where}.cwd") or "/"
    if not cwd.startswith("/"):
        raise ConfigError(f"{where}.cwd: must be an absolute path, got {cwd!r}")
    proc = Process(args=args, env=env, cwd=cwd, terminal=bool(p.get("terminal", False)))
    cs = p.get("consoleSize")
    if cs is not None:
        cs = _obj(cs, f"{where}.consoleSize")
        proc.console_size = (_int(cs.get("height", 0), f"{where}.consoleSize.height", lo=0),
                             _int(cs.get("width", 0), f"{where}.consoleSize.width", lo=0))
    user = _obj(p.get("user"), f"{where}.user")
    proc.uid = _int(user.get("uid", 0), f"{where}.user.uid", lo=0, hi=2**32 - 2)
    proc.gid = _int(user.get("gid", 0), f"{where}.user.gid", lo=0, hi=2**32 - 2)
    proc.additional_gids = tuple(_int(g, f"{where}.user.additionalGids[{i}]", lo=0)
                                 for i, g in enumerate(_list(user.get("additionalGids"),
                                                             f"{where}.user.additionalGids")))
    if user.get("umask") is not None:
        proc.umask = _int(user["umask"], f"{where}.user.umask", lo=0, hi=0o777)
    if user.get("username") and ignored is not None:
        ignored.append(f"{where}.user.username (Windows only)")
    caps = p.get("capabilities")
    if caps is not None:
        caps = _obj(caps, f"{where}.capabilities")
        proc.capabilities = {}
        for s in _CAP_SETS:
            names = _strings(caps.get(s), f"{where}.capabilities.{s}")
            for i, n in enumerate(names):
                key = n.upper() if n.upper().startswith("CAP_") else "CAP_" + n.upper()
                if key not in CAP_NUMBERS:
                    raise ConfigError(f"{where}.capabilities.{s}[{i}]: unknown capability {n!r}")
            proc.capabilities[s] = names
    for i, r in enumerate(_list(p.get("rlimits"), f"{where}.rlimits")):
        r = _obj(r, f"{where}.rlimits[{i}]")
        t = _str(r.get("type"), f"{where}.rlimits[{i}].type", optional=False)
        if t not in RLIMIT_NAMES:
            raise ConfigError(f"{where}.rlimits[{i}].type: unknown rlimit {t!r}")
        soft = _int(r.get("soft"), f"{where}.rlimits[{i}].soft", lo=0, hi=2**64 - 1)
        hard = _int(r.get("hard"), f"{where}.rlimits[{i}].hard", lo=0, hi=2**64 - 1)
        assert t is not None
        proc.rlimits.append((t, soft, hard))
    proc.no_new_privileges = bool(p.get("noNewPrivileges", False))
    if p.get("oomScoreAdj") is not None:
        proc.oom_score_adj = _int(p["oomScoreAdj"], f"{where}.oomScoreAdj", lo=-1000, hi=1000)
    if ignored is not None:
        for k in ("apparmorProfile", "selinuxLabel", "ioPriority", "scheduler", "execCPUAffinity"):
            if p.get(k):
                ignored.append(f"{where}.{k}")
    return proc


# --- the whole config ------------------------------------------------------------------------


def load(bundle: str) -> Config:
    """Read ``bundle``/config.json."""
    bundle = os.path.abspath(bundle)
    path = os.path.join(bundle, "config.json")
    try:
        with open(path, "rb") as f:
            raw = json.loads(f.read())
    except FileNotFoundError:
        raise ConfigError(f"config.json: no such file {path} (is --bundle right?)") from None
    except (OSError, ValueError) as e:
        raise ConfigError(f"config.json: cannot read {path}: {e}") from None
    return parse(raw, bundle)


def parse(raw: Any, bundle: str) -> Config:
    if not isinstance(raw, dict):
        raise ConfigError("config.json: must be a JSON object")
    ignored: list[str] = []
    version = check_version(raw.get("ociVersion"))
    root = _obj(raw.get("root"), "root")
    rpath = _str(root.get("path"), "root.path", optional=False) or ""
    if not rpath:
        raise ConfigError("root.path: must name the container's root filesystem")
    rpath = os.path.normpath(os.path.join(bundle, rpath))
    proc = parse_process(raw["process"], "process", ignored) if raw.get("process") else None
    lx = _obj(raw.get("linux"), "linux")

    namespaces: list[Namespace] = []
    seen: set[str] = set()
    for i, ns in enumerate(_list(lx.get("namespaces"), "linux.namespaces")):
        ns = _obj(ns, f"linux.namespaces[{i}]")
        t = ns.get("type")
        if not isinstance(t, str) or t not in linux.NAMESPACE_FLAGS:
            raise ConfigError(f"linux.namespaces[{i}].type: unknown namespace type {t!r}")
        if t in seen:
            raise ConfigError(f"linux.namespaces[{i}].type: namespace {t!r} listed twice")
        seen.add(t)
        p = _str(ns.get("path"), f"linux.namespaces[{i}].path") or None
        if p is not None and not p.startswith("/"):
            raise ConfigError(f"linux.namespaces[{i}].path: must be absolute, got {p!r}")
        if t == "time":
            ignored.append("linux.namespaces: time")
            continue
        namespaces.append(Namespace(t, linux.NAMESPACE_FLAGS[t], p))
    if "mount" not in seen:
        # Without its own mount namespace the runtime would mount the rootfs, /proc... and
        # pivot_root in the host's namespace (the spec forbids the pivot there).
        raise ConfigError("linux.namespaces: a mount namespace is required (the root "
                          "filesystem and every mount are made inside it)")

    def mappings(key: str) -> list[IdMapping]:
        out = []
        for i, m in enumerate(_list(lx.get(key), f"linux.{key}")):
            m = _obj(m, f"linux.{key}[{i}]")
            out.append(IdMapping(_int(m.get("containerID"), f"linux.{key}[{i}].containerID", lo=0),
                                 _int(m.get("hostID"), f"linux.{key}[{i}].hostID", lo=0),
                                 _int(m.get("size"), f"linux.{key}[{i}].size", lo=1)))
        return out

    uid_maps, gid_maps = mappings("uidMappings"), mappings("gidMappings")
    if (uid_maps or gid_maps) and "user" not in seen:
        raise ConfigError("linux.uidMappings: mappings need a user namespace in linux.namespaces")
    if "user" in seen and not any(n.path for n in namespaces if n.type == "user") and not uid_maps:
        raise ConfigError("linux.uidMappings: a new user namespace needs uid and gid mappings")

    mounts = []
    for i, m in enumerate(_list(raw.get("mounts"), "mounts")):
        m = _obj(m, f"mounts[{i}]")
        dest = _str(m.get("destination"), f"mounts[{i}].destination", optional=False) or ""
        if not dest:
            raise ConfigError(f"mounts[{i}].destination: must name a path in the container")
        if not dest.startswith("/"):
            m = {**m, "destination": "/" + dest}  # deprecated relative form: from "/"
        _str(m.get("type"), f"mounts[{i}].type")
        src = _str(m.get("source"), f"mounts[{i}].source")
        opts = _strings(m.get("options"), f"mounts[{i}].options")
        if src and not src.startswith("/") and (m.get("type") == "bind" or any(
                o in ("bind", "rbind") for o in opts)):  # fmt: skip
            # the spec: a relative bind source is relative to the bundle (not our cwd)
            m = {**m, "source": os.path.join(bundle, src)}
        if m.get("uidMappings") or m.get("gidMappings"):
            raise ConfigError(f"mounts[{i}].uidMappings: idmapped mounts are not supported")
        mounts.append(m)

    devices = []
    for i, d in enumerate(_list(lx.get("devices"), "linux.devices")):
        d = _obj(d, f"linux.devices[{i}]")
        p = _str(d.get("path"), f"linux.devices[{i}].path", optional=False) or ""
        if not p.startswith("/"):
            raise ConfigError(f"linux.devices[{i}].path: must be absolute, got {p!r}")
        if d.get("type") not in ("c", "b", "u", "p"):
            raise ConfigError(f"linux.devices[{i}].type: must be c, b, u or p, got {d.get('type')!r}")
        # major/minor: what makedev(3) takes; fileMode: a mode_t (only its permission bits
        # are used); uid/gid: as process.user's
        for k, hi in (("major", _DEV_MAX), ("minor", _DEV_MAX), ("fileMode", 2**32 - 1),
                      ("uid", 2**32 - 2), ("gid", 2**32 - 2)):
            if d.get(k) is not None or (k in ("major", "minor") and d["type"] != "p"):
                _int(d.get(k), f"linux.devices[{i}].{k}", lo=0, hi=hi)
        devices.append(d)

    sysctl = {}
    for k, v in _obj(lx.get("sysctl"), "linux.sysctl").items():
        if not isinstance(v, str):
            raise ConfigError(f"{_key('linux.sysctl', k)}: value must be a string, got {v!r}")
        _check_sysctl(k, seen)
        sysctl[k] = v

    seccomp = lx.get("seccomp")
    if seccomp is not None:
        seccomp = _obj(seccomp, "linux.seccomp")
        if seccomp.get("listenerPath"):
            raise ConfigError("linux.seccomp.listenerPath: seccomp notify (SCMP_ACT_NOTIFY "
                              "to an agent) is not supported by this runtime")

    hooks: dict[str, list[Hook]] = {}
    for name, items in _obj(raw.get("hooks"), "hooks").items():
        if name not in HOOK_NAMES:
            continue  # unknown hook kinds are ignored, like unknown fields
        out = []
        for i, h in enumerate(_list(items, f"hooks.{name}")):
            h = _obj(h, f"hooks.{name}[{i}]")
            hp = _str(h.get("path"), f"hooks.{name}[{i}].path", optional=False) or ""
            if not hp.startswith("/"):
                raise ConfigError(f"hooks.{name}[{i}].path: must be absolute, got {hp!r}")
            t = h.get("timeout")
            # seconds, a positive int (runc: a Go int)
            if t is not None and _int(t, f"hooks.{name}[{i}].timeout", hi=_HOOK_TIMEOUT_MAX) <= 0:
                raise ConfigError(f"hooks.{name}[{i}].timeout: must be greater than zero")
            out.append(Hook(hp, tuple(_strings(h.get("args"), f"hooks.{name}[{i}].args")),
                            tuple(_strings(h.get("env"), f"hooks.{name}[{i}].env")),
                            float(t) if t is not None else None))
        hooks[name] = out

    prop = _str(lx.get("rootfsPropagation"), "linux.rootfsPropagation")
    if prop:
        from minirun.runtime.mounts import PROPAGATION

        if prop not in PROPAGATION:
            raise ConfigError(f"linux.rootfsPropagation: unknown propagation {prop!r}")
    annotations = _obj(raw.get("annotations"), "annotations")
    for k, v in annotations.items():
        if not isinstance(v, str):
            raise ConfigError(f"{_key('annotations', k)}: must be a string, got {v!r}")
    for k in ("mountLabel", "intelRdt", "personality", "timeOffsets"):
        if lx.get(k):
            ignored.append(f"linux.{k}")
    cgroups_path = _str(lx.get("cgroupsPath"), "linux.cgroupsPath") or None
    hostname = _str(raw.get("hostname"), "hostname")
    domainname = _str(raw.get("domainname"), "domainname")
    if (hostname or domainname) and "uts" not in seen:
        raise ConfigError("hostname: setting a hostname needs a uts namespace in linux.namespaces")
    return Config(
        bundle=bundle, oci_version=version, root_path=rpath,
        root_readonly=bool(root.get("readonly", False)), process=proc, hostname=hostname,
        domainname=domainname, mounts=mounts, namespaces=namespaces, uid_mappings=uid_maps,
        gid_mappings=gid_maps, devices=devices,
        resources=_obj(lx.get("resources"), "linux.resources"), cgroups_path=cgroups_path,
        sysctl=sysctl, seccomp=seccomp,
        masked_paths=_strings(lx.get("maskedPaths"), "linux.maskedPaths"),
        readonly_paths=_strings(lx.get("readonlyPaths"), "linux.readonlyPaths"),
        rootfs_propagation=prop or None, hooks=hooks, annotations=annotations, ignored=ignored,
        raw=raw,
    )  # fmt: skip


def namespaced_sysctl_problem(key: str, ns: set[str]) -> str | None:
    """Why ``key`` may not be set in a container with namespaces ``ns``, or None: only
    sysctls that the container's own namespaces hold (IPC's, net.*) are settable."""
    if key in _IPC_SYSCTLS or key.startswith("fs.mqueue."):
        if "ipc" not in ns:
            return "needs an ipc namespace (it would change the host's)"
    elif key.startswith("net."):
        if "network" not in ns:
            return "needs a network namespace (it would change the host's)"
    elif key in ("kernel.hostname", "kernel.domainname"):
        return "set hostname/domainname in the config instead"
    else:
        return "not a namespaced sysctl; setting it would change the host"
    if ".." in key.split(".") or "/" in key or not key.isascii():
        return "invalid name"
    return None


def _check_sysctl(key: str, ns: set[str]) -> None:
    problem = namespaced_sysctl_problem(key, ns)
    if problem:
        raise ConfigError(f"{_key('linux.sysctl', key)}: {problem}")
