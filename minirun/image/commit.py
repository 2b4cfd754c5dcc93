"""New images authored locally: ``commit`` (a container's layer on top of its image) and
``import`` (a flat tar as a one-layer image), with Docker's ``--change`` instructions.

**commit** (moby daemon/commit.go and its containerd twin) writes the container layer
(the overlayfs upper dir) as ONE gzip layer tar in OCI form (layertar.write_upper:
whiteouts as ``.wh.NAME``, opaque dirs as ``.wh..wh..opq``), unpacks it as a store layer
through the same unpacker as every pulled layer (so the parent's layers stay shared, and
the content is checked once more), and records an image whose config is:

* ``config``: the container's own config (the image's, with the run's command, -e, -w, -u,
  --entrypoint and published ports), with the ``--change`` instructions applied: Docker
  commits what the container ran, so ``commit`` of ``run busybox sh -c 'x'`` has
  ``Cmd ["sh", "-c", "x"]``;
* ``rootfs.diff_ids``: the parent's, plus the new layer's;
* ``history``: the parent's, plus ``{created, created_by: the container's Cmd joined by
  spaces, author, comment}``; with nothing changed there is no new layer and the entry
  says ``empty_layer``, as in Docker;
* ``author``: ``-a``, else the parent's; ``architecture``/``os``/``variant``: the parent's.

A running container is paused (its cgroup frozen) while its layer is read, unless
``pause`` is false or it is paused already; it is thawed as soon as the tar is written.
What the runtime itself created in the container layer is left out: the mount points of
``-v`` and ``--tmpfs`` that the image does not have (an empty dir or file, and the parents
made only for them). The /etc files and /proc, /sys, /dev live in the init layer, never
in the container layer. Docker keeps such mount points (moby#30466); minirun does not, so
an image made by commit never has empty stand-ins for the volumes of the container.

**import** (``docker import``): a flat tar (plain, gzip, zstd, bzip2 or xz) becomes a gzip
layer of a one-layer image for the host's platform, config ``{}`` plus the changes,
history ``[{created, comment: -m or "Imported from -"}]``. The tar goes through the
store's unpacker, which refuses hostile members (``..``, writes through symlinks) before
anything is recorded; a refused import leaves no blob, layer or image behind.

Both hold :meth:`Store.writing` while they write blobs and layers, so a concurrent
prune never takes them for garbage before the image record makes them live.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from minirun import events
from minirun.container.spec import env_map, merge_env
from minirun.errors import ContainerError, ImageNotFound, LayerError, UsageError
from minirun.image import oci
from minirun.image import reference as refs
from minirun.image.digest import short_id

if TYPE_CHECKING:
    from minirun.container.records import ContainerRecord
    from minirun.image.layertar import LayerBlob
    from minirun.image.store import ImageRecord, Store

# moby builder/dockerfile: validCommitCommands
VALID_CHANGES = ("CMD", "ENTRYPOINT", "ENV", "EXPOSE", "HEALTHCHECK", "LABEL", "ONBUILD",
                 "STOPSIGNAL", "USER", "VOLUME", "WORKDIR")
DEFAULT_SHELL = ["/bin/sh", "-c"]
IMPORT_COMMENT = "Imported from -"  # Docker's, for a file or stdin


# -- --change: Dockerfile instructions ------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction of a ``--change``: ``ENV A=1`` is ("ENV", "A=1")."""

    keyword: str  # upper case
    rest: str  # what follows the keyword, without surrounding whitespace
    original: str  # the whole logical line


def parse_changes(changes: Sequence[str]) -> list[Instruction]:
    """The instructions of ``--change`` values, joined by newlines and read as a Dockerfile
    (as Docker does): ``\\`` at a line's end continues it, ``#`` lines are comments.
    Every instruction is checked to be one commit accepts before any is applied."""
    out: list[Instruction] = []
    pieces: list[str] | None = None  # a continued instruction so far
    for raw in "\n".join(changes).split("\n"):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue  # also inside a continued instruction, as Docker's parser does
        m = _CONTINUATION.search(raw)
        piece = raw[:m.start()] if m else raw
        pieces = [*(pieces or []), piece.lstrip()]
        if m:
            continue
        out.append(_instruction("".join(pieces).strip()))
        pieces = None
    if pieces and "".join(pieces).strip():
        out.append(_instruction("".join(pieces).strip()))
    return out


_CONTINUATION = re.compile(r"\\[ \t]*$")


def _instruction(line: str) -> Instruction:
    m = re.match(r"(\S+)\s*(.*)", line, re.S)
    assert m is not None  # line is not blank
    keyword = m.group(1).upper()
    if keyword not in VALID_CHANGES:
        raise UsageError(f"{keyword} is not a valid change command (commit and import take "
                         f"{', '.join(VALID_CHANGES)})")
    return Instruction(keyword, m.group(2).strip(), line)


def apply_changes(config: dict[str, Any], changes: Sequence[str] | Sequence[Instruction]) -> dict[str, Any]:
    """A copy of the image config's ``config`` object with the instructions applied in
    order, as Docker's BuildFromConfig does: ENV, LABEL, EXPOSE, USER, WORKDIR, VOLUME and
    STOPSIGNAL expand ``$VAR`` from the Env so far; ENTRYPOINT drops the Cmd unless a CMD
    came before it; a shell-form CMD or ENTRYPOINT runs under the config's Shell."""
    instructions = [c for c in changes if isinstance(c, Instruction)]
    if len(instructions) != len(changes):
        instructions = parse_changes([c for c in changes if isinstance(c, str)])
    cfg = json.loads(json.dumps(config or {}))  # a deep copy, JSON types only
    cmd_set = False
    for ins in instructions:
        env = env_map(cfg.get("Env") or [])
        k, rest = ins.keyword, ins.rest
        if k == "CMD":
            cfg["Cmd"] = _command(rest, cfg, k)
            cmd_set = True
        elif k == "ENTRYPOINT":
            cfg["Entrypoint"] = _command(rest, cfg, k)
            if not cmd_set:
                cfg["Cmd"] = None
        elif k == "ENV":
            pairs = [(expand(key, env), expand(value, env)) for key, value in _name_values(rest, k)]
            if any(not key for key, _ in pairs):
                raise UsageError("ENV names can not be blank")
            cfg["Env"] = merge_env(list(cfg.get("Env") or []), [f"{key}={value}" for key, value in pairs])
        elif k == "LABEL":
            labels = dict(cfg.get("Labels") or {})
            for key, value in _name_values(rest, k):
                key = expand(key, env)
                if not key:
                    raise UsageError("LABEL names can not be blank")
                labels[key] = expand(value, env)
            cfg["Labels"] = labels
        elif k == "EXPOSE":
            words = rest.split()
            if not words:
                raise UsageError("EXPOSE requires at least one argument")
            ports = dict(cfg.get("ExposedPorts") or {})
            for w in words:
                for port in _ports(expand(w, env)):
                    ports[port] = {}
            cfg["ExposedPorts"] = ports
        elif k == "VOLUME":
            items = _json_list(rest)
            if items is None:
                items = rest.split()
            if not items:
                raise UsageError("VOLUME requires at least one argument")
            volumes = dict(cfg.get("Volumes") or {})
            for v in items:
                path = expand(v, env).strip()
                if not path:
                    raise UsageError("VOLUME specified can not be an empty string")
                volumes[path] = {}
            cfg["Volumes"] = volumes
        elif k == "USER":
            cfg["User"] = expand(_one(rest, k), env)
        elif k == "WORKDIR":
            path = expand(_one(rest, k), env)
            # relative to the WorkingDir so far (moby normalizeWorkdir)
            cfg["WorkingDir"] = "/" + posixpath.normpath(
                posixpath.join("/", str(cfg.get("WorkingDir") or "/"), path)).lstrip("/")
        elif k == "STOPSIGNAL":
            sig = expand(_one(rest, k), env)
            _check_signal(sig)
            cfg["StopSignal"] = sig
        elif k == "ONBUILD":
            if not rest:
                raise UsageError("ONBUILD requires at least one argument")
            trigger = rest.split(None, 1)[0].upper()
            if trigger in ("ONBUILD", "FROM", "MAINTAINER"):
                raise UsageError(f"{trigger} isn't allowed as an ONBUILD trigger")
            cfg["OnBuild"] = [*(cfg.get("OnBuild") or []), rest]
        elif k == "HEALTHCHECK":
            cfg["Healthcheck"] = _healthcheck(rest)
    return cfg


def merge_container_config(new: dict[str, Any], container: dict[str, Any]) -> dict[str, Any]:
    """moby daemon/commit.go merge(): what the changes left empty comes from the
    container's config; the Cmd comes back only when there is no Entrypoint."""
    out = dict(new)
    if not out.get("Entrypoint"):
        if not out.get("Cmd"):
            out["Cmd"] = container.get("Cmd")
        if out.get("Entrypoint") is None:
            out["Entrypoint"] = container.get("Entrypoint")
    return out


def _one(rest: str, keyword: str) -> str:
    if not rest:
        raise UsageError(f"{keyword} requires exactly one argument")
    return rest


def _json_list(rest: str) -> list[str] | None:
    """The exec (JSON array of strings) form, or None for the shell form."""
    if not rest.startswith("["):
        return None
    try:
        value = json.loads(rest)
    except ValueError:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return None
    return value


def _command(rest: str, cfg: dict[str, Any], keyword: str) -> list[str]:
    exec_form = _json_list(rest)
    if exec_form is not None:
        return exec_form
    if not rest:
        raise UsageError(f"{keyword} requires at least one argument")
    shell = cfg.get("Shell") or DEFAULT_SHELL
    return [*shell, rest]


def parse_words(rest: str) -> list[str]:
    """Whitespace-separated words, quotes and escapes kept in them (moby's parseWords):
    ``A="x y" B=z`` is ``['A="x y"', 'B=z']``."""
    words: list[str] = []
    word = ""
    quote = ""
    blank_ok = False
    in_word = False
    i = 0
    n = len(rest)
    while i < n:
        ch = rest[i]
        if quote:
            if ch == quote:
                quote = ""
            elif ch == "\\" and quote != "'":
                if i + 1 == n:
                    i += 1
                    continue
                word += ch
                i += 1
                ch = rest[i]
            word += ch
            i += 1
            continue
        if ch.isspace():
            if in_word and (blank_ok or word):
                words.append(word)
            in_word, word, blank_ok = False, "", False
            i += 1
            continue
        in_word = True
        if ch in "'\"":
            quote = ch
            blank_ok = True
        elif ch == "\\":
            if i + 1 == n:
                i += 1
                continue
            word += ch
            i += 1
            ch = rest[i]
        word += ch
        i += 1
    if in_word and (blank_ok or word):
        words.append(word)
    return words


def _name_values(rest: str, keyword: str) -> list[tuple[str, str]]:
    """``KEY=VALUE ...`` pairs, or the old ``KEY VALUE`` form (moby's parseNameVal);
    quotes are still in them (:func:`expand` removes them)."""
    words = parse_words(rest)
    if not words:
        raise UsageError(f"{keyword} requires at least one argument")
    if "=" not in words[0]:
        parts = re.split(r"[\t\v\f\r ]+", rest, maxsplit=1)
        if len(parts) < 2:
            raise UsageError(f"{keyword} must have two arguments")
        return [(parts[0], parts[1])]
    out = []
    for w in words:
        if "=" not in w:
            raise UsageError(f"Syntax error - can't find = in {w!r}. Must be of the form: name=value")
        key, _, value = w.partition("=")
        out.append((key, value))
    return out


class _Lexer:
    """Docker's shell-word processing of one word: quotes removed, ``\\`` escapes,
    ``$VAR``, ``${VAR}``, ``${VAR:-word}``, ``${VAR-word}``, ``${VAR:+word}``,
    ``${VAR+word}``, ``${VAR:?msg}``, ``${VAR?msg}`` expanded from ``env``."""

    def __init__(self, text: str, env: dict[str, str]) -> None:
        self.s = text
        self.i = 0
        self.env = env

    def word(self, stop: str = "") -> str:
        out: list[str] = []
        s = self.s
        while self.i < len(s):
            ch = s[self.i]
            if stop and ch == stop:
                return "".join(out)
            if ch == "'":
                end = s.find("'", self.i + 1)
                if end < 0:
                    raise UsageError("unexpected end of statement while looking for matching single-quote")
                out.append(s[self.i + 1:end])
                self.i = end + 1
            elif ch == '"':
                self.i += 1
                out.append(self._double_quoted())
            elif ch == "\\":
                if self.i + 1 < len(s):
                    out.append(s[self.i + 1])
                self.i += 2
            elif ch == "$":
                out.append(self._dollar())
            else:
                out.append(ch)
                self.i += 1
        if stop:
            raise UsageError(f"syntax error: missing '{stop}' in {self.s!r}")
        return "".join(out)

    def _double_quoted(self) -> str:
        out: list[str] = []
        s = self.s
        while self.i < len(s):
            ch = s[self.i]
            if ch == '"':
                self.i += 1
                return "".join(out)
            if ch == "\\" and self.i + 1 < len(s) and s[self.i + 1] in '"$\\':
                out.append(s[self.i + 1])
                self.i += 2
            elif ch == "$":
                out.append(self._dollar())
            else:
                out.append(ch)
                self.i += 1
        raise UsageError("unexpected end of statement while looking for matching double-quote")

    def _name(self) -> str:
        m = re.compile(r"[0-9]+|[A-Za-z_][A-Za-z0-9_]*").match(self.s, self.i)
        if not m:
            return ""
        self.i = m.end()
        return m.group(0)

    def _dollar(self) -> str:
        self.i += 1  # the '$'
        if self.i >= len(self.s) or self.s[self.i] != "{":
            name = self._name()
            return self.env.get(name, "") if name else "$"
        self.i += 1  # the '{'
        name = self._name()
        if not name:
            raise UsageError(f"syntax error: bad substitution in {self.s!r}")
        if self.i >= len(self.s):
            raise UsageError(f"syntax error: missing '}}' in {self.s!r}")
        ch = self.s[self.i]
        if ch == "}":
            self.i += 1
            return self.env.get(name, "")
        colon = ch == ":"
        if colon:
            self.i += 1
            ch = self.s[self.i] if self.i < len(self.s) else ""
        if ch not in ("-", "+", "?"):
            raise UsageError(f"unsupported modifier ({ch or 'end'}) in substitution {self.s!r}")
        self.i += 1
        word = self.word(stop="}")
        self.i += 1  # the '}'
        value = self.env.get(name)
        present = value is not None and (value != "" or not colon)
        if ch == "-":
            return value if present and value is not None else word
        if ch == "+":
            return word if present else ""
        if not present:
            raise UsageError(f"{name}: {word or 'is not allowed to be unset'}")
        return value or ""


def expand(word: str, env: dict[str, str]) -> str:
    """One word as Docker's shell lexer reads it (quotes, escapes, ``$VAR`` from ``env``)."""
    return _Lexer(word, env).word()


_PORT = re.compile(r"([0-9]{1,5})(?:-([0-9]{1,5}))?(?:/([A-Za-z]+))?")


def _ports(text: str) -> list[str]:
    m = _PORT.fullmatch(text)
    proto = (m.group(3) or "tcp").lower() if m else ""
    if m is None or proto not in ("tcp", "udp", "sctp"):
        raise UsageError(f"EXPOSE: invalid port {text!r} (want PORT[/PROTO] or FROM-TO[/PROTO], PROTO tcp, udp or sctp)")
    lo = int(m.group(1))
    hi = int(m.group(2)) if m.group(2) else lo
    if not 0 < lo <= hi < 65536:
        raise UsageError(f"EXPOSE: invalid port {text!r} (ports are 1-65535)")
    return [f"{p}/{proto}" for p in range(lo, hi + 1)]


def _check_signal(sig: str) -> None:
    from minirun.runtime.api import signal_number
    from minirun.runtime.state import StateError

    try:
        if signal_number(sig) == 0:
            raise UsageError(f"Invalid signal: {sig}")
    except StateError:
        raise UsageError(f"Invalid signal: {sig}") from None


_DURATION_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000,
                   "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000}
_DURATION_PART = re.compile(r"([0-9]*\.?[0-9]*)(ns|us|µs|μs|ms|s|m|h)")


def parse_duration(text: str) -> int:
    """A Go duration (``30s``, ``1m30s``, ``1.5h``, ``500ms``) in nanoseconds."""
    s = text.strip()
    if s == "0":
        return 0
    total = 0.0
    pos = 0
    while pos < len(s):
        m = _DURATION_PART.match(s, pos)
        if not m or m.group(1) in ("", "."):
            break
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    if not s or pos != len(s):
        raise UsageError(f"time: invalid duration {text!r}")
    return int(total)


_HEALTH_FLAGS = {"interval": "Interval", "timeout": "Timeout", "start-period": "StartPeriod",
                 "start-interval": "StartInterval", "retries": "Retries"}


def _healthcheck(rest: str) -> dict[str, Any]:
    """``HEALTHCHECK NONE`` or ``HEALTHCHECK [--interval=D --timeout=D --start-period=D
    --start-interval=D --retries=N] CMD command`` (durations in nanoseconds, as Docker)."""
    flags: dict[str, Any] = {}
    while (m := re.match(r"--(\S*)\s*", rest)) is not None:
        rest = rest[m.end():]
        name, eq, value = m.group(1).partition("=")
        if name not in _HEALTH_FLAGS:
            raise UsageError(f"Unknown flag: {name}")
        if not eq:
            raise UsageError(f"Missing a value on flag: --{name}")
        if name == "retries":
            if not re.fullmatch(r"-?[0-9]{1,9}", value):
                raise UsageError(f"HEALTHCHECK: invalid --retries {value!r}")
            if int(value) < 0:
                raise UsageError("--retries cannot be negative")
            flags["Retries"] = int(value)
        else:
            d = parse_duration(value)
            if 0 < d < 1_000_000:
                raise UsageError(f"{_HEALTH_FLAGS[name]} {value!r} cannot be less than 1ms")
            flags[_HEALTH_FLAGS[name]] = d
    parts = rest.split(None, 1)
    kind = parts[0] if parts else ""
    after = parts[1].strip() if len(parts) > 1 else ""
    if kind.upper() == "NONE":
        if flags or after:
            raise UsageError("HEALTHCHECK NONE takes no arguments")
        return {"Test": ["NONE"]}
    if kind.upper() != "CMD":
        raise UsageError(f"Unknown type {kind!r} in HEALTHCHECK (try CMD)" if kind
                         else "HEALTHCHECK requires an argument (CMD ... or NONE)")
    if not after:
        raise UsageError("Missing command after HEALTHCHECK CMD")
    exec_form = _json_list(after)
    test = ["CMD", *exec_form] if exec_form is not None else ["CMD-SHELL", after]
    return {"Test": test, **{k: v for k, v in flags.items() if v}}


# -- commit -----------------------------------------------------------------------------


def parse_tag(text: str) -> refs.Reference:
    """REPOSITORY[:TAG] for the new image (``latest`` when no tag is given)."""
    ref = refs.parse(text)
    if ref.digest:
        raise UsageError(f"refusing to create a tag with a digest reference: {text}")
    return ref


def container_config(image_cfg: dict[str, Any], rec: ContainerRecord) -> dict[str, Any]:
    """The container's config as Docker keeps it (and commits it): the image's config
    with what ``run`` changed: the command, --entrypoint, -e, -w, -u, -p's ports."""
    cfg = json.loads(json.dumps(image_cfg or {}))
    opts = rec.options
    if opts.entrypoint is not None:
        cfg["Entrypoint"] = [opts.entrypoint] if opts.entrypoint else None
        cfg["Cmd"] = list(opts.command) or None
    elif opts.command:
        cfg["Cmd"] = list(opts.command)
    if opts.env:
        cfg["Env"] = merge_env(list(cfg.get("Env") or []), list(opts.env))
    if opts.user:
        cfg["User"] = opts.user
    if opts.workdir:
        cfg["WorkingDir"] = opts.workdir
    if opts.publish:
        from minirun.network.ports import parse_publish

        ports = dict(cfg.get("ExposedPorts") or {})
        for spec in opts.publish:
            for pm in parse_publish(spec):
                ports[f"{pm.container_port}/{pm.proto}"] = {}
        cfg["ExposedPorts"] = ports
    return cfg


def leftover_mountpoints(upper: str, lowers: Sequence[str], destinations: Sequence[str]) -> set[str]:
    """The paths of the container layer that the runtime made as mount points and that
    hold nothing of the container's: a ``-v``/``--tmpfs`` destination the layers below do
    not have, still an empty dir or empty file, and the parents made only for such ones.
    Nothing is followed: a path through a symlink is kept as it is."""
    from minirun.container.layerview import stat_merged

    out: set[str] = set()
    rels = {os.path.normpath("/" + d).lstrip("/") for d in destinations}
    for rel in sorted((r for r in rels if r), key=lambda r: r.count("/"), reverse=True):
        if stat_merged(lowers, rel) is not None:
            continue
        if not _empty_in(upper, rel, out):
            continue
        out.add(rel)
        parent = os.path.dirname(rel)
        while parent and parent not in out and stat_merged(lowers, parent) is None \
                and _empty_in(upper, parent, out):
            out.add(parent)
            parent = os.path.dirname(parent)
    return out


def _empty_in(upper: str, rel: str, ignored: set[str]) -> bool:
    """``rel`` in ``upper`` is an empty file, or a dir holding only ``ignored`` paths."""
    import stat

    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(upper, flags)
    try:
        parts = rel.split("/")
        for name in parts[:-1]:
            try:
                nfd = os.open(name, flags, dir_fd=fd)
            except OSError:
                return False
            os.close(fd)
            fd = nfd
        try:
            st = os.stat(parts[-1], dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        if stat.S_ISREG(st.st_mode):
            return st.st_size == 0
        if not stat.S_ISDIR(st.st_mode):
            return False
        dfd = os.open(parts[-1], flags, dir_fd=fd)
        try:
            return all(f"{rel}/{n}" in ignored for n in os.listdir(dfd))
        finally:
            os.close(dfd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Committed:
    """What ``commit`` made: the image, and whether it has a new layer."""

    image: ImageRecord
    layer: str | None  # the new layer's diff_id; None when the container changed nothing


def commit(store: Store, rec: ContainerRecord, *, tag: refs.Reference | None = None,
           message: str = "", author: str = "", changes: Sequence[str] = (),
           pause: bool = True) -> Committed:
    """``commit CONTAINER [REPO[:TAG]]``: the container's layer as a new image (see the
    module doc)."""
    from minirun.container.lifecycle import stack
    from minirun.container.records import Containers
    from minirun.image.layertar import write_gzip_layer, write_upper

    instructions = parse_changes(changes)  # a bad change fails before anything is done
    try:
        parent = store.resolve(rec.image_id)
    except ImageNotFound:
        raise ContainerError(f"the image of container {rec.name} ({short_id(rec.image_id)}) "
                             "is no longer in the store") from None
    manifest, pconfig = store.manifest_and_config(parent)
    base = container_config(pconfig.config, rec)
    config = merge_container_config(apply_changes(base, instructions), base)
    containers = Containers(store)
    cdir = containers.dir(rec.id)
    upper = str(cdir / "upper")
    lowers = stack(containers, rec)
    destinations = _mount_destinations(cdir / "config.json")

    with store.writing():
        tmp = store.new_tmp(".layer.tar.gz")
        added_layer: list[str] = []
        added_blob: list[str] = []
        try:
            with _paused(store, rec, pause):
                exclude = leftover_mountpoints(upper, lowers, destinations)
                blob = write_gzip_layer(tmp, lambda w: write_upper(w, upper, exclude))
            layers = [_oci_descriptor(d) for d in manifest.layers]
            diff_id: str | None = None
            if blob.entries:
                diff_id = blob.diff_id
                _store_layer(store, tmp, blob, added_layer, added_blob)
                layers.append(oci.Descriptor(oci.OCI_LAYER_GZIP, blob.digest, blob.size))
            created = _now()
            author = author or str(pconfig.raw.get("author") or "")
            # Docker: what the container ran, whatever Cmd a change gives the image
            step: dict[str, Any] = {"created": created, "created_by": " ".join(base.get("Cmd") or [])}
            if author:
                step["author"] = author
            if message:
                step["comment"] = message
            if diff_id is None:
                step["empty_layer"] = True
            cfg: dict[str, Any] = {"created": created}
            if author:
                cfg["author"] = author
            for key in ("architecture", "variant", "os", "os.version", "os.features"):
                if key in pconfig.raw:
                    cfg[key] = pconfig.raw[key]
            cfg["config"] = {k: v for k, v in config.items() if v is not None}
            cfg["rootfs"] = {"type": "layers",
                             "diff_ids": [*pconfig.diff_ids, *([diff_id] if diff_id else [])]}
            cfg["history"] = [*_parent_history(pconfig), step]
            image = _record(store, cfg, layers, [tag] if tag else [])
        except BaseException:
            store.discard_unreferenced(added_layer, added_blob)
            raise
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    events.container(store, rec, "commit", comment=message, imageID=image.id,
                     imageRef=tag.familiar() if tag else "")
    return Committed(image, diff_id)


def _mount_destinations(spec_path: Path) -> list[str]:
    try:
        spec = json.loads(spec_path.read_bytes())
    except (OSError, ValueError):
        return []
    mounts = spec.get("mounts") if isinstance(spec, dict) else None
    return [str(m["destination"]) for m in mounts or []
            if isinstance(m, dict) and isinstance(m.get("destination"), str)]


@contextlib.contextmanager
def _paused(store: Store, rec: ContainerRecord, pause: bool) -> Iterator[None]:
    """Freeze a running container (Docker's commit --pause, the default) unless it is
    paused already; thaw it afterwards."""
    if not pause or not rec.alive() or rec.paused():
        yield
        return
    from minirun.container.lifecycle import runtime
    from minirun.errors import RuntimeFailure
    from minirun.runtime.state import StateError

    rt = runtime(store)
    try:
        rt.pause(rec.id)
    except StateError:  # it ended meanwhile: nothing to pause
        yield
        return
    except RuntimeFailure as e:
        raise ContainerError(f"cannot pause container {rec.name} for the commit: {e} "
                             "(commit with --pause=false)") from None
    try:
        yield
    finally:
        with contextlib.suppress(StateError, RuntimeFailure):
            rt.resume(rec.id)


def _store_layer(store: Store, tmp: Path, blob: LayerBlob, added_layer: list[str],
                 added_blob: list[str]) -> None:
    """Unpack the layer file as a store layer (the unpacker checks it and its diff_id),
    then keep it as a blob. Records what was new, for the caller's undo."""
    _, new = store.add_layer(tmp, blob.diff_id, oci.OCI_LAYER_GZIP)
    if new:
        added_layer.append(blob.diff_id)
    if not store.has_blob(blob.digest):
        added_blob.append(blob.digest)
        with open(tmp, "rb") as f:
            store.put_blob_stream(f, expected=blob.digest, expected_size=blob.size, what="layer")


def _record(store: Store, cfg: dict[str, Any], layers: list[oci.Descriptor],
            tags: list[refs.Reference]) -> ImageRecord:
    config_bytes = json.dumps(cfg, separators=(",", ":")).encode()
    import hashlib

    config_desc = oci.Descriptor(oci.OCI_CONFIG, "sha256:" + hashlib.sha256(config_bytes).hexdigest(),
                                 len(config_bytes))
    manifest = oci.Manifest(oci.OCI_MANIFEST, config_desc, layers)
    manifest_bytes = json.dumps(manifest.to_json(), separators=(",", ":")).encode()
    return store.add_image(manifest_bytes, config_bytes, tags)


_DOCKER_TO_OCI = {oci.DOCKER_LAYER: oci.OCI_LAYER_GZIP, oci.DOCKER_LAYER_FOREIGN: oci.OCI_LAYER_NONDIST_GZIP}


def _oci_descriptor(d: oci.Descriptor) -> oci.Descriptor:
    """A parent layer in the new OCI manifest: the same blob, Docker's media types in
    their OCI names (the bytes are the same gzip tar)."""
    return oci.Descriptor(_DOCKER_TO_OCI.get(d.media_type, d.media_type or oci.OCI_LAYER_GZIP),
                          d.digest, d.size, annotations=d.annotations)


def _parent_history(pconfig: oci.ImageConfig) -> list[dict[str, Any]]:
    """The parent's history, with a blank step for each layer it does not account for,
    so each step still lines up with its layer after the new one is added."""
    history = list(pconfig.history)
    owned = sum(1 for h in history if not h.get("empty_layer"))
    return history + [{} for _ in range(len(pconfig.diff_ids) - owned)]


def _now() -> str:
    """RFC 3339 in UTC with nanoseconds, as Go's time.RFC3339Nano (trailing zeros trimmed)."""
    ns = time.time_ns()
    secs, frac = divmod(ns, 1_000_000_000)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
    digits = f"{frac:09d}".rstrip("0")
    return f"{text}.{digits}Z" if digits else f"{text}Z"


# -- import -----------------------------------------------------------------------------


def import_image(store: Store, src: BinaryIO, *, tag: refs.Reference | None = None,
                 message: str = "", changes: Sequence[str] = (),
                 platform: oci.Platform | None = None) -> ImageRecord:
    """``import FILE|- [REPO[:TAG]]``: a flat tar as a one-layer image (see the module doc)."""
    from minirun.image.layertar import write_gzip_stream

    instructions = parse_changes(changes)
    config = apply_changes({}, instructions)
    plat = platform or oci.host_platform()
    with store.writing():
        tmp = store.new_tmp(".import.tar.gz")
        added_layer: list[str] = []
        added_blob: list[str] = []
        try:
            blob = write_gzip_stream(tmp, _decompressed(src))
            if blob.tar_size == 0:
                raise LayerError("import: the input is empty (want a tar archive, plain or compressed)")
            try:
                _store_layer(store, tmp, blob, added_layer, added_blob)
            except LayerError as e:
                raise LayerError(f"import refused: {e}") from None
            created = _now()
            cfg: dict[str, Any] = {"created": created, "architecture": plat.architecture, "os": plat.os}
            if plat.variant:
                cfg["variant"] = plat.variant
            cfg["config"] = config
            cfg["rootfs"] = {"type": "layers", "diff_ids": [blob.diff_id]}
            cfg["history"] = [{"created": created, "comment": message or IMPORT_COMMENT}]
            layers = [oci.Descriptor(oci.OCI_LAYER_GZIP, blob.digest, blob.size)]
            imported = _record(store, cfg, layers, [tag] if tag else [])
            events.emit(store, "image", "import", imported.id, {"name": imported.id})
            return imported
        except BaseException:
            store.discard_unreferenced(added_layer, added_blob)
            raise
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def _decompressed(src: BinaryIO) -> Iterator[bytes]:
    """The tar inside ``src``: plain, or gzip, zstd, bzip2, xz (told by the first bytes)."""
    from minirun.image import compression

    head = b""
    while len(head) < 6:
        b = src.read(6 - len(head))
        if not b:
            break
        head += b
    kind = compression.sniff_archive(head)
    if kind == "none":
        if head:
            yield head
        while chunk := src.read(1 << 20):
            yield chunk
        return
    try:
        yield from compression.decompressed_chunks(cast(BinaryIO, _Prefixed(head, src)), kind)
    except compression.CorruptData as e:
        raise LayerError(f"import: {e}") from None


class _Prefixed:
    """``src`` with ``head`` (already read from it) put back in front."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self.head = head
        self.rest = rest

    def read(self, n: int = -1) -> bytes:
        if self.head:
            if n < 0:
                out, self.head = self.head + self.rest.read(), b""
                return out
            out, self.head = self.head[:n], self.head[n:]
            return out
        return self.rest.read(n)

    def readable(self) -> bool:
        return True
