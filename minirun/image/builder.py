"""``minirun build``: run a Dockerfile (see dockerfile.py) into an image of the store.

A build is a chain of *states* (an image config + its layer descriptors); each step turns
one state into the next, and the state after each step is cached (buildcache.py) under a
key made of the state before it and what the step does. A state's identity is its image
ID (the digest of its config, which lists every diff_id), so keys chain: a fully cached
build yields the same image ID as the build before it.

* ``FROM``: a local image (never pulled), ``scratch`` (Env PATH, as BuildKit sets), or an
  earlier stage. Only the stages the target needs are built (as BuildKit does).
* ``RUN``: a real minirun container from the current state (recorded as an untagged
  image while it runs), with ``--network`` of the build, the ARG values in its
  environment, no entrypoint; its output goes to the progress, prefixed. Its container
  layer becomes the step's layer exactly as ``commit`` makes one (layertar.write_upper);
  a RUN that changes nothing adds a history entry with ``empty_layer`` and no layer, as
  BuildKit does. The container is removed whatever happens.
* ``COPY``/``ADD``: a layer written directly from the context (or from another stage or
  an image, read as overlayfs would merge its layers: buildtree.py), never through a container. Every
  path is read through dir fds with ``O_NOFOLLOW``; ``..`` cannot leave the context; the
  destination is resolved in the image with its symlinks followed *inside* the rootfs.
  ADD of a local tar (plain, gzip, bzip2, xz, zstd) unpacks it through the store's
  unpacker (its safety rules: nothing escapes, hostile members refused); URLs are refused.
* ``WORKDIR``: the config's WorkingDir, and the directory made when the image lacks it
  (with its missing parents: mode 0755, owned by root or by the USER in effect, as
  BuildKit's mkdir), in a layer of the step's own; an existing dir adds no layer.
* Metadata instructions change the config and add a history entry with ``empty_layer``.
* ``SOURCE_DATE_EPOCH`` (a build arg, as BuildKit's): the ``created`` times of the config
  and the history are that time, and every file time in the new layers is clamped to it
  (BuildKit needs its exporter's ``rewrite-timestamp=true`` for the latter), so the same
  context builds the same image IDs in any store. RUN sees it only after ``ARG
  SOURCE_DATE_EPOCH``.

History entries are BuildKit's (``RUN /bin/sh -c echo hi # buildkit``, comment
``buildkit.dockerfile.v0``). A failed build removes its containers and the temporary
images, and the layers no image holds; the cache entries of its successful steps stay but
are misses once their layers are gone. The last states of the non-target stages are kept
as untagged images (buildcache.stage_images), so a rebuild finds their layers.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import posixpath
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from minirun.container.spec import env_map, merge_env
from minirun.errors import BuildError, DockerfileError, ImageNotFound, LayerError, MinirunError
from minirun.image import buildcache
from minirun.image import dockerfile as df
from minirun.image.buildtree import Owner, Plan, Tree, expand_sources

if TYPE_CHECKING:
    from minirun.image.store import ImageRecord, Store

DEFAULT_PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_SHELL = ["/bin/sh", "-c"]
HISTORY_COMMENT = "buildkit.dockerfile.v0"


@dataclass
class BuildOptions:
    """What ``minirun build`` was asked for (Docker's flags)."""

    context: Path
    dockerfile: Path | None = None  # -f; None: CONTEXT/Dockerfile, else CONTEXT/Containerfile
    dockerfile_text: str | None = None  # -f - (read by the CLI)
    tags: list[str] = field(default_factory=list)
    build_args: dict[str, str] = field(default_factory=dict)
    no_cache: bool = False
    target: str | None = None
    network: str = "default"  # default (= bridge) | none | host
    labels: dict[str, str] = field(default_factory=dict)
    quiet: bool = False


@dataclass(frozen=True)
class BuildResult:
    image: ImageRecord
    steps: int  # RUN/COPY/ADD steps of the stages built
    cached: int  # of those, how many came from the cache
    ran: int  # RUN steps executed


# -- progress (BuildKit's plain output) ------------------------------------------------------


class Progress:
    """``#N title`` ... ``#N DONE 0.4s``; output lines of a step as ``#N 0.351 line``."""

    def __init__(self, out: Callable[[str], None], quiet: bool) -> None:
        self.out = out if not quiet else (lambda _line: None)
        self.n = 0
        self._lock = threading.Lock()

    def vertex(self, title: str) -> Vertex:
        self.n += 1
        v = Vertex(self, self.n, time.monotonic())
        self.emit(("\n" if self.n > 1 else "") + f"#{self.n} {title}")
        return v

    def emit(self, line: str) -> None:
        with self._lock:
            self.out(line)


@dataclass
class Vertex:
    progress: Progress
    n: int
    started: float

    def log(self, line: str) -> None:
        self.progress.emit(f"#{self.n} {time.monotonic() - self.started:.3f} {line}")

    def note(self, text: str) -> None:
        self.progress.emit(f"#{self.n} {text}")

    def done(self) -> None:
        self.progress.emit(f"#{self.n} DONE {time.monotonic() - self.started:.1f}s")

    def cached(self) -> None:
        self.progress.emit(f"#{self.n} CACHED")

    def error(self, text: str) -> None:
        self.progress.emit(f"#{self.n} ERROR: {text}")


# -- states ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class State:
    """An image config (exact bytes) and its layer descriptors."""

    config_bytes: bytes
    layers: tuple[tuple[str, str, int], ...]  # (media type, digest, size)

    @property
    def id(self) -> str:
        return "sha256:" + hashlib.sha256(self.config_bytes).hexdigest()

    def cfg(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.config_bytes)
        return data

    def diff_ids(self) -> list[str]:
        return list(self.cfg().get("rootfs", {}).get("diff_ids") or [])

    @staticmethod
    def make(cfg: dict[str, Any], layers: tuple[tuple[str, str, int], ...]) -> State:
        return State(json.dumps(cfg, separators=(",", ":")).encode(), layers)

    def entry(self) -> buildcache.Entry:
        return buildcache.Entry(self.config_bytes, [{"mediaType": m, "digest": d, "size": s}
                                                    for m, d, s in self.layers])

    @staticmethod
    def from_entry(e: buildcache.Entry) -> State:
        return State(e.config, tuple((str(x["mediaType"]), str(x["digest"]), int(x["size"])) for x in e.layers))


def _now() -> str:
    from minirun.image.commit import _now as now

    return now()


def _rfc3339(epoch: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def source_date_epoch(build_args: dict[str, str]) -> int | None:
    """The ``SOURCE_DATE_EPOCH`` build arg (seconds since 1970, UTC), or None."""
    text = build_args.get("SOURCE_DATE_EPOCH")
    if text is None or text == "":
        return None
    if not text.isdigit() or len(text) > 12:
        raise BuildError(f"SOURCE_DATE_EPOCH={text!r}: want a number of seconds since 1970-01-01 UTC "
                         "(e.g. $(git log -1 --format=%ct))")
    return int(text)


def clamp_mtimes(top: str, epoch: int) -> None:
    """Every mtime under ``top`` (a stopped container's upper dir) no later than
    ``epoch``, through dir fds, never following a symlink."""
    limit = epoch * 1_000_000_000
    for _, dirs, files, dfd in os.fwalk(top, follow_symlinks=False):
        for name in [*dirs, *files]:  # a symlink to a dir is among dirs (and not walked into)
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            if st.st_mtime_ns > limit:
                os.utime(name, ns=(st.st_atime_ns, limit), dir_fd=dfd, follow_symlinks=False)


def _scratch() -> State:
    from minirun.image import oci

    plat = oci.host_platform()
    cfg: dict[str, Any] = {"architecture": plat.architecture, "os": plat.os}
    if plat.variant:
        cfg["variant"] = plat.variant
    cfg["config"] = {"Env": [DEFAULT_PATH_ENV]}
    cfg["rootfs"] = {"type": "layers", "diff_ids": []}
    cfg["history"] = []
    return State.make(cfg, ())


# -- the build ---------------------------------------------------------------------------------


@dataclass
class _StageRun:
    stage: df.Stage
    state: State
    args: dict[str, str | None] = field(default_factory=dict)  # ARGs declared in the stage
    cmd_set: bool = False
    built: bool = False


class Builder:
    def __init__(self, store: Store, opts: BuildOptions, out: Callable[[str], None]) -> None:
        self.store = store
        self.opts = opts
        self.progress = Progress(out, opts.quiet)
        self.temps: list[str] = []  # images recorded for RUN steps; removed at the end
        self.added_layers: list[str] = []
        self.added_blobs: list[str] = []
        self.steps = self.cached = self.ran = 0
        self.used_args: set[str] = set()
        self.epoch = source_date_epoch(opts.build_args)
        if self.epoch is not None:
            self.used_args.add("SOURCE_DATE_EPOCH")

    # -- entry

    def build(self) -> BuildResult:
        text, name = self._read_dockerfile()
        v = self.progress.vertex(f"[internal] load build definition from {name}")
        v.note(f"transferring dockerfile: {len(text.encode())}B done")
        parsed = df.parse(text)
        v.done()
        self.dockerfile = parsed
        self.escape = parsed.escape
        self.ignore = self._read_ignore()
        self.context = Tree([str(self.opts.context)])
        self.meta: dict[str, str] = {}
        for ins in parsed.meta_args:
            for k, value in df.name_values(ins, dict(self.meta), self.escape):
                if k in self.opts.build_args:
                    self.meta[k] = self.opts.build_args[k]
                    self.used_args.add(k)
                elif value != df.UNSET:
                    self.meta[k] = value
        target = parsed.stages[-1]
        if self.opts.target:
            found = parsed.stage(self.opts.target)
            if found is None:
                raise BuildError(f"target stage {self.opts.target!r} could not be found")
            target = found
        order = self._needed(parsed, target)
        runs: dict[int, _StageRun] = {}
        with self.store.writing():
            try:
                for idx in order:
                    runs[idx] = self._build_stage(parsed.stages[idx], runs)
                final = runs[target.index].state
                if self.opts.labels:
                    cfg = final.cfg()
                    c = cfg.setdefault("config", {})
                    c["Labels"] = {**(c.get("Labels") or {}), **self.opts.labels}
                    final = State.make(cfg, final.layers)
                image = self._export(final, target, runs)
            except BaseException:
                self._cleanup(keep=set())
                raise
        unused = sorted(set(self.opts.build_args) - self.used_args)
        if unused:
            self.progress.emit(f"[Warning] One or more build-args {unused} were not consumed")
        return BuildResult(image, self.steps, self.cached, self.ran)

    def _read_dockerfile(self) -> tuple[str, str]:
        if self.opts.dockerfile_text is not None:
            return self.opts.dockerfile_text, "-"
        if not self.opts.context.is_dir():
            raise BuildError(f"unable to prepare context: path {str(self.opts.context)!r} not found "
                             "(CONTEXT must be a directory)")
        path = self.opts.dockerfile
        if path is None:
            for n in ("Dockerfile", "Containerfile"):
                if (self.opts.context / n).is_file():
                    path = self.opts.context / n
                    break
            else:
                raise BuildError(f"no Dockerfile or Containerfile in {self.opts.context} (or give -f FILE)")
        try:
            data = path.read_bytes()
        except OSError as e:
            raise BuildError(f"cannot read the Dockerfile {path}: {e.strerror}") from None
        try:
            return data.decode("utf-8-sig"), path.name
        except UnicodeDecodeError:
            raise DockerfileError(f"{path}: not UTF-8 text") from None

    def _read_ignore(self) -> df.IgnoreRules | None:
        if self.opts.dockerfile_text is None and not self.opts.context.is_dir():
            return None
        for n in (".dockerignore", ".containerignore"):
            p = self.opts.context / n
            if p.is_file():
                v = self.progress.vertex(f"[internal] load {n}")
                text = p.read_text(errors="replace")
                v.note(f"transferring context: {len(text.encode())}B done")
                v.done()
                return df.IgnoreRules.parse(text)
        return None

    def _needed(self, parsed: df.Dockerfile, target: df.Stage) -> list[int]:
        need: set[int] = set()

        def visit(stage: df.Stage) -> None:
            if stage.index in need:
                return
            need.add(stage.index)
            base = df.substitute(stage.base, self.meta, self.escape)
            dep = parsed.stage(base)
            if dep is not None and dep.index < stage.index:
                visit(dep)
            for ins in stage.instructions:
                if ins.keyword == "COPY" and "from" in ins.flags:
                    src = parsed.stage(df.substitute(ins.flags["from"], self.meta, self.escape))
                    if src is not None:
                        if src.index >= stage.index:
                            raise DockerfileError(f"line {ins.line}: COPY --from={ins.flags['from']}: "
                                                  "a stage can only copy from an earlier stage")
                        visit(src)

        visit(target)
        return sorted(need)

    # -- stages

    def _title(self, stage: df.Stage, i: int, n: int, text: str) -> str:
        where = f"{stage.label} {i}/{n}" if len(self.dockerfile.stages) > 1 else f"{i}/{n}"
        return f"[{where}] {text}"

    def _build_stage(self, stage: df.Stage, runs: dict[int, _StageRun]) -> _StageRun:
        base = df.substitute(stage.base, self.meta, self.escape)
        dep = self.dockerfile.stage(base)
        vertices = [i for i in stage.instructions if i.keyword in ("RUN", "COPY", "ADD", "WORKDIR")]
        scratch = base.lower() == "scratch" and dep is None
        total = len(vertices) + (0 if scratch else 1)
        num = 0
        if dep is not None and dep.index < stage.index:
            state = runs[dep.index].state
            num += 1
            v = self.progress.vertex(self._title(stage, num, total, f"FROM {dep.label}"))
            v.done()
        elif scratch:
            state = _scratch()
        else:
            state = self._base_image(base, stage, num + 1, total)
            num += 1
        run = _StageRun(stage, state)
        for ins in stage.instructions:
            if ins.keyword in ("RUN", "COPY", "ADD", "WORKDIR"):
                num += 1
            try:
                self._step(run, ins, num, total, runs)
            except DockerfileError as e:
                msg = str(e)
                raise DockerfileError(msg if msg.startswith("line ") else f"line {ins.line}: {msg}") from None
        run.built = True
        return run

    def _base_image(self, ref: str, stage: df.Stage, num: int, total: int) -> State:
        from minirun.image import reference as refs

        try:
            rec = self.store.resolve(ref)
        except ImageNotFound:
            raise BuildError(f"line {stage.line}: FROM {ref}: no such image in the local store "
                             "(minirun build never pulls: pull or load it first)") from None
        try:
            shown = str(refs.parse(ref)) if not refs.is_image_id(ref) else rec.id
        except MinirunError:
            shown = ref
        v = self.progress.vertex(self._title(stage, num, total, f"FROM {shown}"))
        manifest, _ = self.store.manifest_and_config(rec)
        state = State(self.store.read_blob(rec.id),
                      tuple((d.media_type, d.digest, d.size) for d in manifest.layers))
        v.done()
        return state

    def _env(self, run: _StageRun) -> dict[str, str]:
        """What substitution sees: the stage's ARG values, with ENV over them."""
        env = {k: v for k, v in run.args.items() if v is not None}
        env.update(env_map(run.state.cfg().get("config", {}).get("Env") or []))
        return env

    def _step(self, run: _StageRun, ins: df.Instruction, num: int, total: int,
              runs: dict[int, _StageRun]) -> None:
        k = ins.keyword
        if k == "ARG":
            self._arg(run, ins)
            return
        env = self._env(run)
        args_in_effect = sorted((a, v) for a, v in run.args.items() if v is not None)
        if k in ("RUN", "COPY", "ADD"):
            self.steps += 1
            if k == "RUN":
                self._run(run, ins, num, total, args_in_effect)
            else:
                self._copy(run, ins, num, total, env, args_in_effect, runs)
            return
        cfg = run.state.cfg()
        c = cfg.setdefault("config", {})
        created_by = self._metadata(run, ins, c, env)
        v = None
        if k == "WORKDIR":
            v = self.progress.vertex(self._title(run.stage, num, total, f"WORKDIR {c['WorkingDir']}"))
        key = buildcache.key("meta", run.state.id, created_by, args_in_effect)
        if not self._from_cache(run, key):
            layer = None
            if v is not None:
                try:
                    layer = self._workdir_layer(run.state, str(c["WorkingDir"]), str(c.get("User") or ""))
                except (BuildError, LayerError) as e:
                    v.error(str(e))
                    raise BuildError(f"failed to solve: {e}") from None
            run.state = self._commit(cfg, run.state, created_by, layer)
            buildcache.record(self.store, key, run.state.entry())
        if v is not None:
            v.done()

    def _workdir_layer(self, state: State, path: str, user: str) -> tuple[str, str, int, str] | None:
        """WORKDIR's mkdir -p: a layer with ``path`` and its missing parents (0755, owned
        by root or by ``user``), or None when the image has the dir already."""
        lowers = [str(self.store.layer_dir(d)) for d in reversed(state.diff_ids())]
        image = Tree(lowers)
        real = image.resolve(path)  # symlinks followed inside the rootfs, as mkdir would
        if not real:
            return None
        parts = real.split("/")
        for i in range(1, len(parts) + 1):
            st = image.lstat("/".join(parts[:i]))
            if st is None:
                break
            if not stat.S_ISDIR(st.st_mode):
                raise BuildError(f"WORKDIR {path}: mkdir /{'/'.join(parts[:i])}: not a directory")
        else:
            return None  # there already: no layer (BuildKit's empty diff)
        ids = Owner(0, 0)
        if user:
            from minirun.container.users import resolve_user

            try:
                u = resolve_user(user, lowers)
            except MinirunError as e:
                raise BuildError(f"WORKDIR {path}: USER {user}: {e}") from None
            ids = Owner(u.uid, u.gid)
        plan = Plan(image, clamp=self.epoch)
        plan.parents(real, ids)
        plan.directory(real, ids, None)
        return self._write_plan(plan)

    def _arg(self, run: _StageRun, ins: df.Instruction) -> None:
        for name, value in df.name_values(ins, self._env(run), self.escape):
            if name in self.opts.build_args:
                run.args[name] = self.opts.build_args[name]
                self.used_args.add(name)
            elif value != df.UNSET:
                run.args[name] = value
            elif name in self.meta:
                run.args[name] = self.meta[name]
            else:
                run.args[name] = None
        cfg = run.state.cfg()
        shown = " ".join(f"{n}={v}" if v is not None else n for n, v in run.args.items()
                         if n in [x for x, _ in df.name_values(ins, {}, self.escape)])
        key = buildcache.key("arg", run.state.id, shown)
        if not self._from_cache(run, key):
            run.state = self._commit(cfg, run.state, f"ARG {shown}", None)
            buildcache.record(self.store, key, run.state.entry())

    def _from_cache(self, run: _StageRun, key: str) -> bool:
        """The state cached under ``key`` becomes the stage's (unless --no-cache)."""
        hit = None if self.opts.no_cache else buildcache.lookup(self.store, key, use=True)
        if hit is not None:
            run.state = State.from_entry(hit)
        return hit is not None

    def _metadata(self, run: _StageRun, ins: df.Instruction, c: dict[str, Any], env: dict[str, str]) -> str:
        """Apply a metadata instruction to the config ``c``; its history created_by."""
        from minirun.image import commit as cm

        k, args, esc = ins.keyword, ins.args, self.escape
        if k == "ENV":
            pairs = df.name_values(ins, env, esc)
            c["Env"] = merge_env(list(c.get("Env") or []), [f"{key}={value}" for key, value in pairs])
            return "ENV " + " ".join(f"{key}={value}" for key, value in pairs)
        if k == "LABEL":
            pairs = df.name_values(ins, env, esc)
            c["Labels"] = {**(c.get("Labels") or {}), **dict(pairs)}
            return "LABEL " + " ".join(f"{key}={value}" for key, value in pairs)
        if k == "MAINTAINER":
            return f"MAINTAINER {args}"
        if k == "EXPOSE":
            ports = dict(c.get("ExposedPorts") or {})
            for w in df.substitute_words(args, env, esc):
                try:
                    for p in cm._ports(w):
                        ports[p] = {}
                except MinirunError as e:
                    raise DockerfileError(str(e)) from None
            c["ExposedPorts"] = ports
            return "EXPOSE map[" + " ".join(f"{p}:{{}}" for p in sorted(ports)) + "]"
        if k == "USER":
            c["User"] = df.substitute(args, env, esc)
            return f"USER {c['User']}"
        if k == "WORKDIR":
            path = df.substitute(args, env, esc)
            c["WorkingDir"] = "/" + posixpath.normpath(
                posixpath.join("/", str(c.get("WorkingDir") or "/"), path)).lstrip("/")
            return f"WORKDIR {c['WorkingDir']}"
        if k == "VOLUME":
            form = df.exec_form(args)
            items = [df.substitute(x, env, esc) for x in form] if form is not None else \
                df.substitute_words(args, env, esc)
            volumes = dict(c.get("Volumes") or {})
            for item in items:
                if not item.strip():
                    raise DockerfileError("VOLUME specified can not be an empty string")
                volumes[item.strip()] = {}
            c["Volumes"] = volumes
            return "VOLUME [" + " ".join(items) + "]"
        if k == "STOPSIGNAL":
            sig = df.substitute(args, env, esc)
            try:
                cm._check_signal(sig)
            except MinirunError as e:
                raise DockerfileError(str(e)) from None
            c["StopSignal"] = sig
            return f"STOPSIGNAL {sig}"
        if k in ("CMD", "ENTRYPOINT"):
            form = df.exec_form(args)
            argv = form if form is not None else [*(c.get("Shell") or DEFAULT_SHELL), args]
            if k == "CMD":
                c["Cmd"] = argv
                run.cmd_set = True
            else:
                c["Entrypoint"] = argv
                if not run.cmd_set:
                    c["Cmd"] = None
            return f"{k} {json.dumps(argv)}"
        if k == "SHELL":
            shell = df.exec_form(args) or []
            c["Shell"] = shell
            return "SHELL [" + " ".join(shell) + "]"
        if k == "ONBUILD":
            c["OnBuild"] = [*(c.get("OnBuild") or []), args]
            return f"ONBUILD {args}"
        if k == "HEALTHCHECK":
            try:
                c["Healthcheck"] = cm._healthcheck(args)
            except MinirunError as e:
                raise DockerfileError(str(e)) from None
            return f"HEALTHCHECK {args}"
        raise DockerfileError(f"{k} is not supported")  # pragma: no cover - parse() refuses it

    def _commit(self, cfg: dict[str, Any], parent: State, created_by: str,
                layer: tuple[str, str, int, str] | None) -> State:
        """The next state: ``cfg`` (the parent's, changed) with a history entry, and a new
        layer (media type, digest, size, diff_id) when there is one."""
        created = _now() if self.epoch is None else _rfc3339(self.epoch)
        history = list(cfg.get("history") or [])
        owned = sum(1 for h in history if not h.get("empty_layer"))
        history += [{} for _ in range(len(parent.diff_ids()) - owned)]
        step: dict[str, Any] = {"created": created, "created_by": created_by, "comment": HISTORY_COMMENT}
        layers = parent.layers
        if layer is None:
            step["empty_layer"] = True
        else:
            cfg.setdefault("rootfs", {"type": "layers", "diff_ids": []})
            cfg["rootfs"]["diff_ids"] = [*parent.diff_ids(), layer[3]]
            layers = (*layers, (layer[0], layer[1], layer[2]))
        cfg["history"] = [*history, step]
        cfg["created"] = created
        c = cfg.get("config") or {}
        cfg["config"] = {k: v for k, v in c.items() if v is not None}
        order = ("created", "author", "architecture", "os", "variant", "config", "rootfs", "history")
        cfg = {**{k: cfg[k] for k in order if k in cfg}, **{k: v for k, v in cfg.items() if k not in order}}
        return State.make(cfg, layers)

    # -- RUN

    def _run(self, run: _StageRun, ins: df.Instruction, num: int, total: int,
             args_in_effect: list[tuple[str, str]]) -> None:
        c = run.state.cfg().get("config") or {}
        form = ins.exec_form()
        argv = form if form is not None else [*(c.get("Shell") or DEFAULT_SHELL), ins.args]
        network = self.opts.network
        flag = ins.flags.get("network")
        if flag in ("none", "host"):
            network = flag
        prefix = f"|{len(args_in_effect)} " + " ".join(f"{a}={v}" for a, v in args_in_effect) + " " \
            if args_in_effect else ""
        created_by = f"RUN {prefix}{' '.join(argv)} # buildkit"
        v = self.progress.vertex(self._title(run.stage, num, total, f"RUN {ins.args}"))
        key = buildcache.key("run", run.state.id, argv, args_in_effect, network)
        if self._from_cache(run, key):
            self.cached += 1
            v.cached()
            return
        env_names = set(env_map(c.get("Env") or []))
        env = [f"{a}={val}" for a, val in args_in_effect if a not in env_names]
        layer = self._run_container(run.state, argv, env, network, v)
        self.ran += 1
        run.state = self._commit(run.state.cfg(), run.state, created_by, layer)
        buildcache.record(self.store, key, run.state.entry())
        v.done()

    def _record(self, state: State, tags: list[Any]) -> ImageRecord:
        from minirun.image import oci

        config_desc = oci.Descriptor(oci.OCI_CONFIG, state.id, len(state.config_bytes))
        manifest = oci.Manifest(oci.OCI_MANIFEST, config_desc,
                                [oci.Descriptor(m, d, s) for m, d, s in state.layers])
        manifest_bytes = json.dumps(manifest.to_json(), separators=(",", ":")).encode()
        return self.store.add_image(manifest_bytes, state.config_bytes, tags)

    def _run_container(self, state: State, argv: list[str], env: list[str], network: str,
                       v: Vertex) -> tuple[str, str, int, str] | None:
        from minirun.container import lifecycle
        from minirun.container.records import Containers
        from minirun.container.spec import RunOptions
        from minirun.image import commit as cm
        from minirun.image import oci
        from minirun.image.layertar import write_gzip_layer, write_upper

        if not self.store.has_image(state.id):
            self._record(state, [])
            self.temps.append(state.id)
        opts = RunOptions(command=list(argv), entrypoint="", env=env,
                          network="bridge" if network == "default" else network, pull="never")
        try:
            rec = lifecycle.create(self.store, state.id, opts)
        except MinirunError as e:
            v.error(str(e))
            raise BuildError(f"failed to solve: RUN {' '.join(argv)}: {e}") from None
        containers = Containers(self.store)
        try:
            code = self._start(rec, v)
            if code != 0:
                msg = f'process "{" ".join(argv)}" did not complete successfully: exit code: {code}'
                v.error(msg)
                raise BuildError(f"failed to solve: {msg}")
            cdir = containers.dir(rec.id)
            upper = str(cdir / "upper")
            lowers = lifecycle.stack(containers, rec)
            exclude = cm.leftover_mountpoints(upper, lowers, cm._mount_destinations(cdir / "config.json"))
            if self.epoch is not None:
                clamp_mtimes(upper, self.epoch)
            tmp = self.store.new_tmp(".layer.tar.gz")
            try:
                blob = write_gzip_layer(tmp, lambda w: write_upper(w, upper, exclude))
                if not blob.entries:
                    return None
                cm._store_layer(self.store, tmp, blob, self.added_layers, self.added_blobs)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
            return (oci.OCI_LAYER_GZIP, blob.digest, blob.size, blob.diff_id)
        finally:
            with contextlib.suppress(MinirunError):
                lifecycle.remove(self.store, containers.refresh(rec), force=True)

    def _start(self, rec: Any, v: Vertex) -> int:
        """Run the step's container in the foreground, its output into the progress."""
        from minirun import runtime as rtmod
        from minirun.container import lifecycle
        from minirun.runtime.supervise import CommandNotRunnable

        r, w = os.pipe2(os.O_CLOEXEC)
        devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        reader = threading.Thread(target=self._relay, args=(r, v), daemon=True)
        reader.start()

        def ended() -> None:
            os.close(w)
            os.close(devnull)
            reader.join(timeout=30)

        try:
            return lifecycle.run_supervised(self.store, rec, rtmod.Stdio(stdin=devnull, stdout=w, stderr=w),
                                            on_end=ended)
        except CommandNotRunnable as e:
            v.log(str(e))
            return e.code

    @staticmethod
    def _relay(fd: int, v: Vertex) -> None:
        buf = b""
        try:
            while chunk := os.read(fd, 65536):
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    v.log(line.decode(errors="replace").rstrip("\r"))
            if buf:
                v.log(buf.decode(errors="replace"))
        finally:
            os.close(fd)

    # -- COPY / ADD

    def _owner(self, spec: str, state: State) -> Owner:
        from minirun.container.users import resolve_user

        lowers = [str(self.store.layer_dir(d)) for d in reversed(state.diff_ids())]
        user_s, colon, group_s = spec.partition(":")
        try:
            u = resolve_user(user_s, lowers)
            gid = u.uid  # Docker: a user without a group means the gid of the same number
            if colon and group_s:
                gid = resolve_user(f"{user_s}:{group_s}", lowers).gid
        except MinirunError as e:
            raise BuildError(f"--chown={spec}: {e}") from None
        return Owner(u.uid, gid)

    def _copy(self, run: _StageRun, ins: df.Instruction, num: int, total: int, env: dict[str, str],
              args_in_effect: list[tuple[str, str]], runs: dict[int, _StageRun]) -> None:
        k = ins.keyword
        form = ins.exec_form()
        words = [df.substitute(w, env, self.escape) for w in form] if form is not None \
            else df.substitute_words(ins.args, env, self.escape)
        sources, dest = words[:-1], words[-1]
        flags = {f: df.substitute(val, env, self.escape) for f, val in ins.flags.items()}
        shown = " ".join([*(f"--{f}={val}" for f, val in flags.items() if f != "link"), *words])
        v = self.progress.vertex(self._title(run.stage, num, total, f"{k} {shown}"))
        try:
            state_layers = [str(self.store.layer_dir(d)) for d in reversed(run.state.diff_ids())]
            image = Tree(state_layers)
            owner = self._owner(flags["chown"], run.state) if flags.get("chown") else None
            chmod = None
            if flags.get("chmod"):
                try:
                    chmod = int(flags["chmod"], 8)
                    if not 0 <= chmod <= 0o7777:
                        raise ValueError
                except ValueError:
                    raise BuildError(f"--chmod={flags['chmod']}: want an octal mode like 0755") from None
            src_tree, ignore, keep_owner, from_id = self.context, self.ignore, False, ""
            where = "the build context"
            if "from" in flags:
                src_tree, from_id = self._from_tree(flags["from"], runs)
                ignore, keep_owner = None, True
                is_stage = self.dockerfile.stage(flags["from"]) is not None
                where = f'{"stage" if is_stage else "image"} "{flags["from"]}"'
            workdir = str((run.state.cfg().get("config") or {}).get("WorkingDir") or "/")
            dest_path = dest if dest.startswith("/") else posixpath.join(workdir, dest)
            as_dir = dest.endswith("/") or dest in (".", "") or dest_path.endswith("/.")
            plan = Plan(image, clamp=self.epoch)
            expanded: list[str] = []
            for s in sources:
                if k == "ADD" and _is_url(s):
                    raise BuildError(f"ADD {s}: URLs are not supported by minirun build "
                                     "(download the file into the context and COPY it)")
                clean = posixpath.normpath("/" + s).lstrip("/")
                found = expand_sources(src_tree, clean, ignore)
                # a plain (non-glob) source comes back unchecked: it must exist (a symlink
                # as the last part counts; where it leads is checked below)
                if not found or (found == [clean] and src_tree.lstat(src_tree.resolve(clean, False)) is None):
                    raise BuildError(f'{k} failed: "/{clean}": not found in {where}')
                if ignore is not None and clean and ignore.excluded(clean):
                    raise BuildError(f'{k} failed: "/{clean}": not found in the build context: '
                                     "excluded by .dockerignore")
                expanded += found
            if len(expanded) > 1 and not as_dir:
                raise BuildError(f"When using {k} with more than one source file, the destination "
                                 "must be a directory and end with a /")
            real_dest = image.resolve(dest_path)
            dst_st = image.lstat(real_dest)
            if dst_st is not None and stat.S_ISDIR(dst_st.st_mode):
                as_dir = True
            with self._archives(k, src_tree, expanded) as archives:
                for s in expanded:
                    s_real = src_tree.resolve(s)  # a top-level symlink is followed, inside the tree
                    st = src_tree.lstat(s_real)
                    if st is None:
                        raise BuildError(f"{k} failed: {s}: a symlink that leads nowhere inside {where}")
                    if s in archives:
                        tree, digest = archives[s]
                        plan.extra.append(["archive", s, digest])
                        plan.copy(tree, "", real_dest, owner=owner, chmod=chmod, ignore=None, keep_owner=True)
                    elif stat.S_ISDIR(st.st_mode):
                        plan.copy(src_tree, s_real, real_dest, owner=owner, chmod=chmod, ignore=ignore,
                                  keep_owner=keep_owner)
                    else:
                        target = posixpath.join(real_dest, posixpath.basename(s)) if as_dir else real_dest
                        target = image.resolve(target, follow_last=False)
                        plan.copy(src_tree, s_real, target, owner=owner, chmod=chmod, ignore=None,
                                  keep_owner=keep_owner)
                created_by = f"{k} {shown} # buildkit"
                key = buildcache.key("copy", run.state.id, created_by, from_id, plan.key(), args_in_effect)
                if self._from_cache(run, key):
                    self.cached += 1
                    v.cached()
                    return
                layer = self._write_plan(plan)
            run.state = self._commit(run.state.cfg(), run.state, created_by, layer)
            buildcache.record(self.store, key, run.state.entry())
            v.done()
        except (BuildError, LayerError) as e:
            v.error(str(e))
            raise BuildError(f"failed to solve: {e}") from None

    def _from_tree(self, ref: str, runs: dict[int, _StageRun]) -> tuple[Tree, str]:
        stage = self.dockerfile.stage(ref)
        if stage is not None and stage.index in runs:
            state = runs[stage.index].state
        else:
            try:
                rec = self.store.resolve(ref)
            except ImageNotFound:
                raise BuildError(f"COPY --from={ref}: no stage of that name and no such image in "
                                 "the local store") from None
            state = State(self.store.read_blob(rec.id), ())
        return Tree([str(self.store.layer_dir(d)) for d in reversed(state.diff_ids())]), state.id

    @contextlib.contextmanager
    def _archives(self, k: str, tree: Tree, sources: list[str]) -> Iterator[dict[str, tuple[Tree, str]]]:
        """ADD: the local tar archives among ``sources``, each unpacked (by the store's
        unpacker) into a temp dir, with the archive's digest."""
        out: dict[str, tuple[Tree, str]] = {}
        temps: list[Path] = []
        try:
            if k == "ADD":
                for s in sources:
                    s_real = tree.resolve(s)
                    st = tree.lstat(s_real)
                    if st is None or not stat.S_ISREG(st.st_mode):
                        continue
                    unpacked = self._unpack_archive(tree, s_real, s, temps)
                    if unpacked is not None:
                        out[s] = unpacked
            yield out
        finally:
            from minirun.image.store import _remove

            for t in temps:
                _remove(t)

    def _unpack_archive(self, tree: Tree, rel: str, shown: str, temps: list[Path]) -> tuple[Tree, str] | None:
        from minirun.image import compression
        from minirun.image.layers import unpack_layer

        fd = tree.open(rel)
        with os.fdopen(fd, "rb") as f:
            head = f.read(512)
            kind = compression.sniff_archive(head)
            if kind == "none" and not (len(head) >= 262 and head[257:262] == b"ustar"):
                return None  # not an archive: copied as it is
            f.seek(0)
            digest = hashlib.sha256()
            plain = self.store.new_tmp(".add.tar")
            temps.append(plain)
            with open(plain, "wb") as out:
                if kind == "none":
                    while chunk := f.read(1 << 20):
                        digest.update(chunk)
                        out.write(chunk)
                else:
                    try:
                        for chunk in compression.decompressed_chunks(_Hashed(f, digest), kind):  # type: ignore[arg-type]
                            out.write(chunk)
                    except compression.CorruptData as e:
                        raise BuildError(f"ADD {shown}: {e}") from None
        with open(plain, "rb") as p:
            head = p.read(512)
            if len(head) < 262 or head[257:262] != b"ustar":
                raise BuildError(f"ADD {shown}: compressed, but not a tar archive")
        dest = self.store.new_tmp(".add")
        temps.append(dest)
        dest.mkdir()
        try:
            with open(plain, "rb") as p:
                unpack_layer(p, dest, name=f"ADD {shown}")
        except LayerError as e:
            raise BuildError(f"ADD {shown}: the archive is refused: {e}") from None
        return Tree([str(dest)]), digest.hexdigest()

    def _write_plan(self, plan: Plan) -> tuple[str, str, int, str]:
        from minirun.image import commit as cm
        from minirun.image import oci
        from minirun.image.layertar import write_gzip_layer

        tmp = self.store.new_tmp(".layer.tar.gz")
        try:
            blob = write_gzip_layer(tmp, plan.write)
            cm._store_layer(self.store, tmp, blob, self.added_layers, self.added_blobs)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        return (oci.OCI_LAYER_GZIP, blob.digest, blob.size, blob.diff_id)

    # -- the end

    def _export(self, final: State, target: df.Stage, runs: dict[int, _StageRun]) -> ImageRecord:
        from minirun.image.commit import parse_tag

        tags = [parse_tag(t) for t in self.opts.tags]
        v = self.progress.vertex("exporting to image")
        v.note("exporting layers done")
        image = self._record(final, tags)
        v.note(f"writing image {image.id} done")
        for t in tags:
            v.note(f"naming to {t.with_tag(t.tag or 'latest')} done")
        keep = {image.id}
        for idx, r in runs.items():
            if idx != target.index:
                if not self.store.has_image(r.state.id):
                    self._record(r.state, [])
                buildcache.keep_stage_image(self.store, r.state.id)
                keep.add(r.state.id)
        self._cleanup(keep)
        v.done()
        return self.store.resolve(image.id)

    def _cleanup(self, keep: set[str]) -> None:
        for image_id in self.temps:
            if image_id in keep:
                continue
            with contextlib.suppress(MinirunError):
                self.store.remove_image(image_id)
        self.temps = []
        self.store.discard_unreferenced(self.added_layers, self.added_blobs)


class _Hashed:
    """A reader that hashes what is read through it (the archive's digest for the cache)."""

    def __init__(self, f: Any, h: Any) -> None:
        self.f = f
        self.h = h

    def read(self, n: int = -1) -> bytes:
        b: bytes = self.f.read(n)
        self.h.update(b)
        return b

    def readable(self) -> bool:
        return True


def _is_url(s: str) -> bool:
    low = s.lower()
    return low.startswith(("http://", "https://", "git@", "git://", "ssh://")) or ".git#" in low


def build(store: Store, opts: BuildOptions, out: Callable[[str], None]) -> BuildResult:
    """``minirun build``: see the module doc. ``out`` gets the progress lines."""
    return Builder(store, opts, out).build()
