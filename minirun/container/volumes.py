"""Volumes: directories in the store that outlive containers, with Docker's semantics.

::

    volumes/<name>/_data         what the container sees (bind-mounted, rbind)
    volumes/<name>/volume.json   name, driver "local", labels, options, created, anonymous
    containers/<id>/mounts.json  the mounts a container got (-v, --mount, image VOLUMEs)

* **Names** follow Docker's rule for the local driver (``[a-zA-Z0-9][a-zA-Z0-9_.-]+``), so
  a name is always one path component under ``volumes/``; ``-v NAME:/path`` (a name, not
  an absolute path) is a named volume, made on first use; ``-v /path`` alone and every
  image ``VOLUME`` not covered by a mount is an anonymous volume (a random 64-hex name,
  label ``com.docker.volume.anonymous``, as Docker ≥ 23 marks them).
* **In use** means named by the ``mounts.json`` of any container, running or not. Making
  a volume and recording it in the container's ``mounts.json`` happen under one lock
  (``locks/volumes``), which ``volume rm`` and ``prune`` take too: a volume is never
  removed between the two.
* **First use**: an empty volume mounted without ``nocopy`` is filled from the image's
  content at that path (modes, owners, times, xattrs, symlinks, devices, hard links), read
  from the layer dirs as overlayfs would merge them, every component opened relative to
  its parent with ``O_NOFOLLOW``: a hostile image cannot make minirun read or write a host
  path.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import stat
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from minirun import events
from minirun.df import tree_size
from minirun.errors import UsageError, VolumeError, VolumeInUse, VolumeNotFound
from minirun.image.store import Store, file_lock

DRIVER = "local"
ANONYMOUS_LABEL = "com.docker.volume.anonymous"
_NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+")
MOUNTS_FILE = "mounts.json"
# the local driver's option keys (moby volume/local); minirun records them, see _check_usable
_OPTION_KEYS = ("type", "device", "o", "size")


def check_name(name: str) -> str:
    """Docker's local-driver rule; the message is Docker's, with its hint."""
    if not _NAME_RE.fullmatch(name) or len(name) > 255:
        raise UsageError(f'create {name}: "{name}" includes invalid characters for a local volume name, '
                         'only "[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed. If you intended to pass a host '
                         "directory, use absolute path")
    return name


def _lookup_name(name: str) -> str:
    """A name given to look a volume up (rm, inspect): never a path."""
    if not _NAME_RE.fullmatch(name) or len(name) > 255:
        raise VolumeNotFound(name)
    return name


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


@dataclass
class Volume:
    """One volume (volumes/<name>/volume.json)."""

    name: str
    created: float
    driver: str = DRIVER
    labels: dict[str, str] | None = None  # None: made by a container's -v (Docker: null)
    options: dict[str, str] | None = None
    anonymous: bool = False

    def inspect(self, store: Store) -> dict[str, Any]:
        """Docker's ``volume inspect`` object."""
        return {"CreatedAt": _iso(self.created), "Driver": self.driver, "Labels": self.labels,
                "Mountpoint": str(data_dir(store, self.name)), "Name": self.name,
                "Options": self.options, "Scope": "local"}


@dataclass
class MountRequest:
    """One mount asked for: ``-v``, ``--mount`` or an image ``VOLUME``."""

    type: str  # bind | volume | tmpfs
    target: str
    source: str = ""  # bind: a host path; volume: a name ("" = anonymous)
    readonly: bool = False
    nocopy: bool = False
    propagation: str = ""  # bind only
    recursive: bool = True  # bind: rbind (bind-nonrecursive: plain bind)
    mode: str = ""  # Docker's Mode: the -v mode text ("z" for a -v volume without one)
    tmpfs_size: int = 0
    tmpfs_mode: int = 0
    labels: dict[str, str] = field(default_factory=dict)  # --mount volume-label=
    origin: str = "-v"  # -v | --mount | image


@dataclass
class MountPoint:
    """One mount a container got, as ``inspect`` shows it (Docker's MountPoint)."""

    type: str
    destination: str
    source: str = ""
    name: str = ""
    driver: str = ""
    mode: str = ""
    rw: bool = True
    propagation: str = ""
    anonymous: bool = False
    recursive: bool = True
    tmpfs_options: list[str] = field(default_factory=list)

    def docker(self) -> dict[str, Any]:
        out: dict[str, Any] = {"Type": self.type}
        if self.name:
            out["Name"] = self.name
        out |= {"Source": self.source, "Destination": self.destination}
        if self.driver:
            out["Driver"] = self.driver
        return out | {"Mode": self.mode, "RW": self.rw, "Propagation": self.propagation}

    def oci(self) -> dict[str, Any]:
        """The OCI spec mount."""
        if self.type == "tmpfs":
            return {"destination": self.destination, "type": "tmpfs", "source": "tmpfs",
                    "options": list(self.tmpfs_options)}
        return {"destination": self.destination, "type": "bind", "source": self.source,
                "options": ["rbind" if self.recursive else "bind", self.propagation or "rprivate",
                            "rw" if self.rw else "ro"]}


# --- the store --------------------------------------------------------------------------------

def volumes_dir(store: Store) -> Path:
    return store.root / "volumes"


def data_dir(store: Store, name: str) -> Path:
    return volumes_dir(store) / name / "_data"


@contextlib.contextmanager
def _locked(store: Store) -> Iterator[None]:
    store.ensure()
    with file_lock(store.locks / "volumes"):
        yield


def _load(store: Store, name: str) -> Volume | None:
    try:
        d = json.loads((volumes_dir(store) / name / "volume.json").read_bytes())
        return Volume(**d)
    except (OSError, ValueError, TypeError):
        return None


def get(store: Store, name: str) -> Volume:
    vol = _load(store, _lookup_name(name))
    if vol is None:
        raise VolumeNotFound(name)
    return vol


def all_volumes(store: Store) -> list[Volume]:
    """Every volume, by name."""
    try:
        names = sorted(n for n in os.listdir(volumes_dir(store)) if not n.startswith("."))
    except FileNotFoundError:
        return []
    return [v for n in names if (v := _load(store, n)) is not None]


def _parse_options(options: Mapping[str, str]) -> dict[str, str]:
    for key in options:
        if key not in _OPTION_KEYS:
            raise UsageError(f"invalid option key: {key!r} (the local driver takes type, device, o)")
    return dict(options)


def _create_locked(store: Store, name: str | None, labels: dict[str, str] | None,
                   options: dict[str, str] | None, anonymous: bool) -> tuple[Volume, bool]:
    """(the volume, whether it was made now). Holds the volumes lock."""
    if name is not None:
        existing = _load(store, check_name(name))
        if existing is not None:
            return existing, False
    top = volumes_dir(store)
    top.mkdir(mode=0o701, exist_ok=True)
    while True:
        vname = name if name is not None else os.urandom(32).hex()
        vol = Volume(name=vname, created=time.time(), labels=labels, options=options, anonymous=anonymous)
        tmp = top / f".new-{os.getpid()}-{os.urandom(6).hex()}"
        try:
            tmp.mkdir(mode=0o701)
            (tmp / "_data").mkdir(mode=0o755)
            os.chmod(tmp / "_data", 0o755)  # whatever the umask
            (tmp / "volume.json").write_text(json.dumps(asdict(vol)))
            os.rename(tmp, top / vname)  # fails if it exists (a non-empty dir)
            events.volume(store, vname, "create")
            return vol, True
        except OSError:
            _rmtree(tmp)
            if (top / vname).exists():
                if name is not None and (existing := _load(store, vname)) is not None:
                    return existing, False
                if name is None:
                    continue  # 256 random bits collided: take another
            raise


def create(store: Store, name: str | None = None, labels: Mapping[str, str] | None = None,
           options: Mapping[str, str] | None = None, driver: str = DRIVER) -> Volume:
    """``volume create``: a new volume (a random 64-hex name without ``name``); an existing
    one of that name is returned as it is (Docker: a no-op)."""
    if driver != DRIVER:
        raise UsageError(f"volume driver {driver!r} is not supported (only local)")
    opts = _parse_options(options or {})
    with _locked(store):
        vol, _ = _create_locked(store, name, dict(labels or {}), opts, anonymous=False)
    return vol


def users(store: Store) -> dict[str, list[str]]:
    """volume name -> the IDs of the containers that name it (running or not)."""
    out: dict[str, list[str]] = {}
    try:
        cids = os.listdir(store.containers)
    except FileNotFoundError:
        return out
    for cid in sorted(cids):
        for mp in _read_mounts(store.containers / cid / MOUNTS_FILE):
            if mp.type == "volume" and mp.name:
                out.setdefault(mp.name, []).append(cid)
    return out


def _delete_locked(store: Store, name: str) -> None:
    """Rename away (the volume vanishes at once), then delete its files."""
    doomed = store.new_tmp(".rmvol")
    try:
        os.rename(volumes_dir(store) / name, doomed)
    except FileNotFoundError:
        raise VolumeNotFound(name) from None
    _rmtree(doomed)
    events.volume(store, name, "destroy")


def remove(store: Store, name: str, force: bool = False) -> None:
    """``volume rm``: refused while any container (running or not) names the volume;
    ``force`` only makes a missing volume no error (as in Docker)."""
    try:
        _lookup_name(name)
    except VolumeNotFound:
        if force:
            return
        raise
    with _locked(store):
        if _load(store, name) is None:
            if force:
                return
            raise VolumeNotFound(name)
        held = users(store).get(name)
        if held:
            raise VolumeInUse(name, held)
        _delete_locked(store, name)


def usage(store: Store) -> list[tuple[str, int, int]]:
    """For ``system df``: (name, size in bytes, containers using it) of every volume."""
    held = users(store)
    return [(v.name, tree_size(data_dir(store, v.name)), len(held.get(v.name, [])))
            for v in all_volumes(store)]


def label_match(labels: Mapping[str, str] | None, wanted: Sequence[str]) -> bool:
    """``label=KEY`` / ``label=KEY=VALUE``: every one must match."""
    have = labels or {}
    for w in wanted:
        key, sep, value = w.partition("=")
        if key not in have or (sep and have[key] != value):
            return False
    return True


def _label_excluded(labels: Mapping[str, str] | None, unwanted: Sequence[str]) -> bool:
    """``label!=KEY[=VALUE]``: any match excludes."""
    return any(label_match(labels, [u]) for u in unwanted)


def prune(store: Store, all_: bool = False, labels: Sequence[str] = (),
          not_labels: Sequence[str] = ()) -> tuple[list[str], int]:
    """``volume prune``: the volumes no container names — only anonymous ones unless
    ``all_`` (Docker ≥ 23) — that match the label filters. (names removed, bytes freed)"""
    removed: list[str] = []
    freed = 0
    if not store.root.is_dir():
        return removed, freed
    with _locked(store):
        held = users(store)
        for vol in all_volumes(store):
            if vol.name in held or not (all_ or vol.anonymous):
                continue
            if not label_match(vol.labels, labels) or _label_excluded(vol.labels, not_labels):
                continue
            size = tree_size(data_dir(store, vol.name))
            with contextlib.suppress(VolumeNotFound):
                _delete_locked(store, vol.name)
                removed.append(vol.name)
                freed += size
    return removed, freed


def matches(vol: Volume, filters: Mapping[str, Sequence[str]], held: Mapping[str, list[str]]) -> bool:
    """``volume ls --filter``: dangling=, name= (a pattern), label=, driver= (keys AND,
    values of one key OR; label= filters AND)."""
    for value in filters.get("dangling", []):
        want = bool_filter("dangling", value)
        if (vol.name not in held) != want:
            return False
    if "name" in filters:
        try:
            if not any(re.search(p, vol.name) for p in filters["name"]):
                return False
        except re.error as e:
            raise UsageError(f"invalid filter 'name': bad pattern: {e}") from None
    if "driver" in filters and vol.driver not in filters["driver"]:
        return False
    return "label" not in filters or label_match(vol.labels, filters["label"])


def bool_filter(key: str, value: str) -> bool:
    low = value.lower()
    if low in ("true", "1"):
        return True
    if low in ("false", "0"):
        return False
    raise UsageError(f"invalid filter '{key}={value}' (use true or false)")


# --- -v and --mount --------------------------------------------------------------------------

_RW_MODES = ("rw", "ro")
_LABEL_MODES = ("z", "Z")
_PROPAGATIONS = ("private", "rprivate", "slave", "rslave", "shared", "rshared")
_COPY_MODES = ("nocopy",)
_CONSISTENCY = ("consistent", "cached", "delegated")


def _valid_mode(mode: str) -> bool:
    """Docker's linuxValidMountMode: each kind of mode at most once."""
    if not mode:
        return True
    counts = [0, 0, 0, 0, 0]
    for o in mode.split(","):
        for i, kind in enumerate((_RW_MODES, _LABEL_MODES, _PROPAGATIONS, _COPY_MODES, _CONSISTENCY)):
            if o in kind:
                counts[i] += 1
                break
        else:
            return False
    return max(counts) <= 1


def _check_target(target: str, kind: str, spec: str | None = None) -> str:
    where = f"invalid volume specification: '{spec}': " if spec is not None else ""
    if not target.startswith("/"):
        raise UsageError(f'{where}invalid mount config for type "{kind}": invalid mount path: '
                         f"'{target}' mount path must be absolute")
    clean = os.path.normpath(target)
    if clean.startswith("//"):
        clean = "/" + clean.lstrip("/")
    if clean == "/":
        raise UsageError(f'{where}invalid mount config for type "{kind}": invalid specification: '
                         "destination can't be '/'")
    return clean


def parse_volume_flag(spec: str) -> MountRequest:
    """``-v``: ``/ctr`` (anonymous volume), ``NAME:/ctr[:MODE]`` (named volume) or
    ``/host:/ctr[:MODE]`` (bind), with Docker's ParseMountRaw rules."""
    arr = spec.split(":", 3)
    if not arr[0]:
        raise UsageError(f"invalid volume specification: '{spec}'")
    mode = ""
    if len(arr) == 1:
        source, target = "", arr[0]
    elif len(arr) == 2:
        if _valid_mode(arr[1]):  # /foo:rw is a destination and a mode, which volumes cannot have
            raise UsageError(f"invalid volume specification: '{spec}'")
        source, target = arr
    elif len(arr) == 3:
        source, target, mode = arr
    else:
        raise UsageError(f"invalid volume specification: '{spec}' (too many colons)")
    if not _valid_mode(mode):
        raise UsageError(f"invalid mode: {mode} (in -v '{spec}'; use ro or rw, nocopy, a propagation)")
    if source in (".", "..") or source.startswith(("./", "../")):
        source = os.path.abspath(source)  # Docker's CLI (23+): a relative bind, from the cwd
    kind = "bind" if source.startswith("/") else "volume"
    modes = mode.split(",") if mode else []
    req = MountRequest(type=kind, target=_check_target(target, kind, spec), source=source,
                       readonly="ro" in modes, nocopy="nocopy" in modes, mode=mode)
    props = [m for m in modes if m in _PROPAGATIONS]
    if kind == "bind":
        if req.nocopy:
            raise UsageError(f"invalid volume specification: '{spec}': invalid mount config for type "
                             '"bind": field VolumeOptions must not be specified')
        req.source = os.path.normpath(source)
        req.propagation = props[0] if props else "rprivate"
    else:
        if props:
            raise UsageError(f"invalid volume specification: '{spec}': invalid mount config for type "
                             '"volume": field BindOptions must not be specified')
        if source:
            check_name(source)
        req.mode = mode or "z"  # Docker: a local volume's empty mode reads "z"
    return req


def _parse_bool(key: str, value: str) -> bool:
    """Go's strconv.ParseBool."""
    if value in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if value in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise UsageError(f"invalid value for {key}: {value}")


def parse_mount_flag(spec: str) -> MountRequest:
    """``--mount type=bind|volume|tmpfs,source=,target=,readonly,...`` (Docker's CSV keys
    and errors; checks that need the host, like a bind source existing, are in plan())."""
    def bad(msg: str) -> UsageError:
        return UsageError(f'invalid argument "{spec}" for "--mount" flag: {msg}')

    try:
        fields = next(csv.reader([spec]), [])
    except csv.Error as e:
        raise bad(str(e)) from None
    kind, source, target = "volume", "", ""
    readonly = nocopy = False
    recursive = True
    propagation = ""
    size = mode_bits = 0
    labels: dict[str, str] = {}
    used: set[str] = set()  # which option families were given: volume / bind / tmpfs
    for item in fields:
        key, sep, val = item.partition("=")
        if not sep:
            if key in ("readonly", "ro"):
                readonly = True
            elif key == "volume-nocopy":
                nocopy = True
                used.add("volume")
            elif key == "bind-nonrecursive":
                recursive = False
                used.add("bind")
            else:
                raise bad(f"invalid field '{item}' must be a key=value pair")
            continue
        if key == "type":
            kind = val.lower()
        elif key in ("source", "src"):
            source = os.path.abspath(val) if val == "." or val.startswith("./") else val
        elif key in ("target", "dst", "destination"):
            target = val
        elif key in ("readonly", "ro"):
            readonly = _parse_bool(key, val) if val else True
        elif key == "consistency":
            pass  # macOS only, as in Docker on Linux
        elif key == "bind-propagation":
            propagation = val.lower()
            used.add("bind")
        elif key == "bind-nonrecursive":
            recursive = not _parse_bool(key, val)
            used.add("bind")
        elif key == "volume-nocopy":
            nocopy = _parse_bool(key, val)
            used.add("volume")
        elif key == "volume-label":
            lk, _, lv = val.partition("=")
            if lk:
                labels[lk] = lv
            used.add("volume")
        elif key == "volume-driver":
            if val and val != DRIVER:
                raise bad(f"volume driver {val!r} is not supported (only local)")
            used.add("volume")
        elif key == "volume-opt":
            raise bad("volume-opt is not supported (minirun's local volumes are plain directories)")
        elif key == "tmpfs-size":
            from minirun.container.resources import parse_bytes

            try:
                size = parse_bytes(val)
            except UsageError:
                raise bad(f"invalid value for {key}: {val}") from None
            used.add("tmpfs")
        elif key == "tmpfs-mode":
            try:
                mode_bits = int(val, 8)
            except ValueError:
                raise bad(f"invalid value for {key}: {val}") from None
            if not 0 <= mode_bits < 1 << 32:
                raise bad(f"invalid value for {key}: {val}")
            used.add("tmpfs")
        else:
            raise bad(f"unexpected key '{key}' in '{item}'")
    if not kind:
        raise bad("type is required")
    if not target:
        raise bad("target is required")
    for family in sorted(used):
        if family != kind:
            raise bad(f"cannot mix '{family}-*' options with mount type '{kind}'")
    if kind not in ("bind", "volume", "tmpfs"):
        raise UsageError(f'invalid mount config for type "{kind}": mount type unknown '
                         "(minirun has bind, volume and tmpfs)")
    clean = _check_target(target, kind)
    if kind == "bind":
        if not source:
            raise UsageError('invalid mount config for type "bind": field Source must not be empty')
        if not source.startswith("/"):
            raise UsageError(f'invalid mount config for type "bind": invalid mount path: '
                             f"'{source}' mount path must be absolute")
        if propagation and propagation not in _PROPAGATIONS:
            raise UsageError(f'invalid mount config for type "bind": invalid propagation mode: {propagation}')
        return MountRequest("bind", clean, os.path.normpath(source), readonly,
                            propagation=propagation or "rprivate", recursive=recursive, origin="--mount")
    if kind == "volume":
        if source:
            check_name(source)
        elif readonly:
            raise UsageError('invalid mount config for type "volume": must not set ReadOnly mode '
                             "when using anonymous volumes")
        return MountRequest("volume", clean, source, readonly, nocopy=nocopy, mode="z", labels=labels,
                            origin="--mount")
    if source:
        raise UsageError('invalid mount config for type "tmpfs": field Source must not be specified')
    return MountRequest("tmpfs", clean, readonly=readonly, tmpfs_size=size, tmpfs_mode=mode_bits,
                        origin="--mount")


def requests(volumes: Sequence[str], mounts: Sequence[str]) -> list[MountRequest]:
    """Every -v then every --mount, parsed (nothing on the host is looked at)."""
    return [*(parse_volume_flag(v) for v in volumes), *(parse_mount_flag(m) for m in mounts)]


def plan(reqs: Sequence[MountRequest], tmpfs: Sequence[str], image_cfg: Mapping[str, Any]
         ) -> list[MountRequest]:
    """The container's mounts: the requests (a mount point twice is an error, --tmpfs
    counted), then an anonymous volume for each image ``VOLUME`` no mount covers. A
    --mount bind source must exist (Docker: -v makes it, --mount does not)."""
    seen: set[str] = {_check_target(t.partition(":")[0], "tmpfs") for t in tmpfs
                      if t.partition(":")[0].startswith("/")}
    seen_tmpfs = set(seen)
    out: list[MountRequest] = []
    for r in reqs:
        if r.target in seen:
            if r.target in seen_tmpfs:
                raise UsageError(f"Duplicate mount point: {r.target} (also a --tmpfs)")
            raise UsageError(f"Duplicate mount point: {r.target}")
        seen.add(r.target)
        out.append(r)
    for r in out:
        if r.type == "bind" and r.origin == "--mount" and not os.path.lexists(r.source):
            raise UsageError(f'invalid mount config for type "bind": bind source path does not exist: {r.source}')
    for path in sorted(image_cfg.get("Volumes") or {}):
        if not isinstance(path, str) or not path.startswith("/"):
            continue
        clean = os.path.normpath(path)
        if clean == "/" or clean in seen:
            continue
        seen.add(clean)
        out.append(MountRequest("volume", clean, origin="image"))
    return out


def _tmpfs_options(r: MountRequest) -> list[str]:
    opts = ["nosuid", "nodev", "noexec"]
    if r.readonly:
        opts.append("ro")
    if r.tmpfs_mode:
        opts.append(f"mode={r.tmpfs_mode:o}")
    if r.tmpfs_size:
        opts.append(f"size={r.tmpfs_size}")
    return opts


def _check_usable(vol: Volume) -> None:
    if vol.options and any(k in vol.options for k in ("type", "device")):
        raise VolumeError(f"volume {vol.name} has driver options ({', '.join(sorted(vol.options))}) that "
                          "minirun cannot mount: its volumes are plain directories (recreate it without --opt)")


def prepare(store: Store, cid: str, reqs: Sequence[MountRequest], layer_dirs: Sequence[str]
            ) -> list[MountPoint]:
    """Make the volumes the container needs (named ones on first use, anonymous ones
    fresh), record them in its ``mounts.json``, and fill each empty one from the image
    (``layer_dirs``, topmost first) unless nocopy. All or nothing: on failure the
    anonymous volumes made here are removed again and no mounts.json is left."""
    points: list[MountPoint] = []
    made: list[str] = []
    copies: list[tuple[MountRequest, Volume]] = []
    with _locked(store):
        try:
            for r in reqs:
                if r.type == "bind":
                    points.append(MountPoint("bind", r.target, r.source, mode=r.mode, rw=not r.readonly,
                                             propagation=r.propagation, recursive=r.recursive))
                elif r.type == "tmpfs":
                    points.append(MountPoint("tmpfs", r.target, rw=not r.readonly,
                                             tmpfs_options=_tmpfs_options(r)))
                else:
                    anonymous = not r.source
                    labels = {ANONYMOUS_LABEL: ""} if anonymous else (dict(r.labels) or None)
                    vol, new = _create_locked(store, r.source or None, labels, None, anonymous)
                    if new:
                        made.append(vol.name)
                    _check_usable(vol)
                    points.append(MountPoint("volume", r.target, str(data_dir(store, vol.name)),
                                             name=vol.name, driver=vol.driver, mode=r.mode,
                                             rw=not r.readonly, anonymous=vol.anonymous))
                    if not r.nocopy:
                        copies.append((r, vol))
            _write_mounts(store.containers / cid / MOUNTS_FILE, points)
            for r, vol in copies:
                copy_up(layer_dirs, r.target, data_dir(store, vol.name))
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                (store.containers / cid / MOUNTS_FILE).unlink()
            held = users(store)
            for name in made:
                if name not in held:
                    with contextlib.suppress(VolumeNotFound, OSError):
                        _delete_locked(store, name)
            raise
    return points


def spec_mounts(points: Sequence[MountPoint]) -> list[dict[str, Any]]:
    return [p.oci() for p in points]


def _write_mounts(path: Path, points: Sequence[MountPoint]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps([asdict(p) for p in points]))
    os.replace(tmp, path)


def _read_mounts(path: Path) -> list[MountPoint]:
    try:
        raw = json.loads(path.read_bytes())
        return [MountPoint(**d) for d in raw]
    except (OSError, ValueError, TypeError):
        return []


def mounts_of(store: Store, cid: str) -> list[MountPoint]:
    """The mounts a container got (none recorded: a container from before volumes)."""
    return _read_mounts(store.containers / cid / MOUNTS_FILE)


def inspect_mounts(store: Store, cid: str) -> list[dict[str, Any]]:
    """Docker's container ``Mounts``."""
    return [p.docker() for p in mounts_of(store, cid)]


def drop_anonymous(store: Store, points: Sequence[MountPoint]) -> None:
    """After a container is gone (``rm -v``, ``run --rm``, a failed create): remove its
    anonymous volumes that no other container names. Named volumes always stay."""
    names = [p.name for p in points if p.type == "volume" and p.anonymous and p.name]
    if not names:
        return
    with _locked(store):
        held = users(store)
        for name in names:
            if name not in held:
                with contextlib.suppress(VolumeNotFound):
                    _delete_locked(store, name)


def uses_volume(store: Store, cid: str, wanted: Sequence[str]) -> bool:
    """``ps --filter volume=``: the container mounts a volume of that name, or anything at
    that mount point."""
    for p in mounts_of(store, cid):
        if any(w in (p.name, p.destination) or (p.type == "bind" and w == p.source) for w in wanted):
            return True
    return False


# --- first use: the image's content at the mount point ---------------------------------------

_SKIP_XATTRS = ("trusted.overlay.",)
_MAX_LINK_FDS = 1024


def _opaque(fd: int) -> bool:
    from minirun.container.layerview import is_opaque

    return is_opaque(fd)


def _is_whiteout(st: os.stat_result) -> bool:
    from minirun.image.whiteout import is_overlay_whiteout

    return is_overlay_whiteout(st)


def _open_dir(name: str, dir_fd: int) -> int:
    return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)


def _merged_dir_fds(layer_dirs: Sequence[str], relpath: str) -> list[int]:
    """Fds of the directory ``relpath`` in each layer that contributes to its merged view,
    topmost first. A layer's whiteout or non-dir on the path ends the list, and so does an
    opaque dir on it (it hides the layers below). Empty: no directory there."""
    parts = [p for p in relpath.split("/") if p]
    fds: list[int] = []
    try:
        for top in layer_dirs:
            fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            state, opaque = "dir", False
            for name in parts:
                try:
                    st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                except FileNotFoundError:
                    state = "absent"
                    break
                if not stat.S_ISDIR(st.st_mode):  # a whiteout, file or symlink
                    state = "blocked"
                    break
                nfd = _open_dir(name, fd)
                os.close(fd)
                fd = nfd
                opaque = opaque or _opaque(fd)
            if state == "dir":
                fds.append(fd)
            else:
                os.close(fd)
            if state == "blocked" or opaque:
                break
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return fds


def copy_up(layer_dirs: Sequence[str], relpath: str, dest: Path) -> bool:
    """Fill ``dest`` (a volume's _data) from the merged image at ``relpath`` if ``dest`` is
    empty and the image has a directory there; the dir's owner and mode too, as Docker's
    copyOwnership. True if something was copied."""
    if os.listdir(dest):
        return False
    srcs = _merged_dir_fds(layer_dirs, relpath)
    if not srcs:
        return False
    dst = -1
    links: dict[tuple[int, int], int] = {}
    try:
        dst = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        _copy_tree(srcs, dst, links)
        st = os.fstat(srcs[0])
        os.fchown(dst, st.st_uid, st.st_gid)
        os.fchmod(dst, stat.S_IMODE(st.st_mode))
        _copy_xattrs(srcs[0], dst)
        os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
    finally:
        for fd in [*srcs, dst, *links.values()]:
            if fd >= 0:
                os.close(fd)
    return True


def _copy_tree(srcs: list[int], dst: int, links: dict[tuple[int, int], int]) -> None:
    """Copy the merged directory whose layer fds are ``srcs`` (topmost first) into ``dst``."""
    decided: set[str] = set()
    for i, sfd in enumerate(srcs):
        for entry in sorted(os.listdir(sfd)):
            if entry in decided:
                continue
            decided.add(entry)
            st = os.stat(entry, dir_fd=sfd, follow_symlinks=False)
            if _is_whiteout(st):
                continue
            if stat.S_ISDIR(st.st_mode):
                child = [_open_dir(entry, sfd)]
                try:
                    if not _opaque(child[0]):
                        for lower in srcs[i + 1:]:
                            try:
                                lst = os.stat(entry, dir_fd=lower, follow_symlinks=False)
                            except FileNotFoundError:
                                continue
                            if not stat.S_ISDIR(lst.st_mode):
                                break
                            child.append(_open_dir(entry, lower))
                            if _opaque(child[-1]):
                                break
                    os.mkdir(entry, 0o700, dir_fd=dst)
                    dfd = _open_dir(entry, dst)
                    try:
                        _copy_tree(child, dfd, links)
                        _set_meta(dfd, child[0], st)
                    finally:
                        os.close(dfd)
                finally:
                    for fd in child:
                        os.close(fd)
            else:
                _copy_entry(sfd, dst, entry, st, links)


def _set_meta(dfd: int, sfd: int, st: os.stat_result) -> None:
    os.fchown(dfd, st.st_uid, st.st_gid)
    os.fchmod(dfd, stat.S_IMODE(st.st_mode))
    _copy_xattrs(sfd, dfd)
    os.utime(dfd, ns=(st.st_atime_ns, st.st_mtime_ns))


def _copy_xattrs(sfd: int | str, dfd: int | str, follow: bool = True) -> None:
    with contextlib.suppress(OSError):
        for key in os.listxattr(sfd, follow_symlinks=follow):
            if key.startswith(_SKIP_XATTRS):
                continue
            with contextlib.suppress(OSError):
                os.setxattr(dfd, key, os.getxattr(sfd, key, follow_symlinks=follow), follow_symlinks=follow)


def _copy_entry(sfd: int, dst: int, name: str, st: os.stat_result, links: dict[tuple[int, int], int]) -> None:
    key = (st.st_dev, st.st_ino)
    if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode) and key in links:
        with contextlib.suppress(OSError):  # a hard link to what was copied already
            os.link(f"/proc/self/fd/{links[key]}", name, dst_dir_fd=dst, follow_symlinks=True)
            return
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISREG(st.st_mode):
        src = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=sfd)
        try:
            out = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                          0o600, dir_fd=dst)
            try:
                left = st.st_size
                while left > 0:
                    n = os.copy_file_range(src, out, min(left, 1 << 30)) if hasattr(os, "copy_file_range") \
                        else os.sendfile(out, src, None, min(left, 1 << 30))
                    if n == 0:
                        break
                    left -= n
                os.fchown(out, st.st_uid, st.st_gid)
                os.fchmod(out, mode)  # after chown, which clears setuid bits
                _copy_xattrs(src, out)
                os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns))
                if st.st_nlink > 1 and len(links) < _MAX_LINK_FDS:
                    links[key] = os.dup(out)
            finally:
                os.close(out)
        finally:
            os.close(src)
        return
    if stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(name, dir_fd=sfd), name, dir_fd=dst)
    elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) or stat.S_ISFIFO(st.st_mode):
        os.mknod(name, st.st_mode, st.st_rdev, dir_fd=dst)
    else:
        return  # a socket: nothing to copy, as tar would not carry one
    os.chown(name, st.st_uid, st.st_gid, dir_fd=dst, follow_symlinks=False)
    if not stat.S_ISLNK(st.st_mode):  # through an O_PATH fd: a node swapped for a link is not followed
        pfd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dst)
        try:
            if not stat.S_ISLNK(os.fstat(pfd).st_mode):
                os.chmod(f"/proc/self/fd/{pfd}", mode)
        finally:
            os.close(pfd)
    _copy_xattrs(f"/proc/self/fd/{sfd}/{name}", f"/proc/self/fd/{dst}/{name}", follow=False)
    os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=dst, follow_symlinks=False)


def _rmtree(path: Path) -> None:
    """Remove a tree without following a symlink (a container wrote it)."""
    import shutil

    shutil.rmtree(path, ignore_errors=True)
