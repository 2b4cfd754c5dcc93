"""Property-based (fuzz) tests of minirun's parsers of user and image input (Hypothesis).

The property, for ANY input (random text, bytes and JSON values, plus strategies built
around each valid grammar and valid documents with random fields replaced): the parser
returns a value or raises one of minirun's typed errors (a ``MinirunError``) whose message
is one non-empty line -- never a raw KeyError, TypeError, ValueError, OverflowError,
RecursionError... Where a round trip holds (references, sizes, port specs, manifests,
cgroup paths...) it is asserted too.

Known bugs
----------
Each bug these tests found has a ``test_bug_*`` regression test at the end of its section,
marked ``xfail(strict=True)`` and carrying the minimal failing input as an ``@example``.
So that the broad fuzz tests stay green, and keep finding *new* bugs meanwhile, ``attempt``
rejects (Hypothesis discards) an example that fails with exactly a known bug: the same
exception type raised from the same minirun function (``KNOWN_BUGS``). When a bug is
fixed, its ``test_bug_*`` test passes, strict xfail turns that into a failure, and its
xfail mark and ``KNOWN_BUGS`` entry are deleted together.

Nothing here needs root. Layer unpacking and archive loading run only inside ``tmp_path``;
each example checks that nothing was written outside its own directory (and that the
tmp dir's parent is unchanged). Unpacking runs under a SIGALRM watchdog so that an
infinite loop fails the test instead of hanging the run.
"""

from __future__ import annotations

import contextlib
import copy
import gzip
import hashlib
import io
import json
import os
import signal
import string
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Generic, TypeVar

from hypothesis import HealthCheck, assume, example, given, reject, settings
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

import minirun
from minirun.container import lifecycle, logs, resources, seccomp_profile, spec, users
from minirun.errors import MinirunError
from minirun.image import archive, auth, layers, oci
from minirun.image import reference as refs
from minirun.image.store import Store
from minirun.network import attach, dns, ports
from minirun.network.config import parse_subnet
from minirun.network.ipam import PortMap
from minirun.runtime import cgroups, mounts, seccomp, security
from minirun.runtime import config as rtconfig
from tests.layertar import E, tar_bytes
from tests.oci_bundle import default_config

T = TypeVar("T")
# `make fuzz` sets MINIRUN_FUZZ_SCALE (20): every test tries that many times the examples.
SCALE = max(1, int(os.environ.get("MINIRUN_FUZZ_SCALE") or 1))
ROOT = os.geteuid() == 0
BUNDLE = "/fuzz-bundle"  # config.parse only joins paths to it: nothing is read
_PKG = os.path.dirname(os.path.abspath(minirun.__file__)) + os.sep

# ---------------------------------------------------------------------------------------
# The property, and the known bugs it tolerates in the broad tests


@dataclass(frozen=True)
class KnownBug:
    """A failure the broad tests skip: ``exc`` raised with the innermost minirun frame in
    one of ``where`` ("module/file.py:function"); ``multiline``: a typed error whose message
    is not one line (instead of a raw exception)."""

    exc: tuple[type[BaseException], ...]
    where: frozenset[str]
    multiline: bool = False


def _bug(exc: tuple[type[BaseException], ...], *where: str, multiline: bool = False) -> KnownBug:
    return KnownBug(exc, frozenset(where), multiline)


KNOWN_BUGS: dict[str, KnownBug] = {
}


def _one_line(message: str) -> bool:
    return bool(message.strip()) and "\n" not in message and "\r" not in message


def _raised_in(exc: BaseException) -> str | None:
    """'module/file.py:function' of the innermost minirun frame of exc's traceback."""
    where = None
    tb = exc.__traceback__
    while tb is not None:
        frame: FrameType = tb.tb_frame
        path = frame.f_code.co_filename
        if path.startswith(_PKG):
            where = f"{path[len(_PKG):]}:{frame.f_code.co_name}"
        tb = tb.tb_next
    return where


def known_bug(exc: BaseException) -> str | None:
    where = _raised_in(exc)
    multiline = isinstance(exc, MinirunError) and not _one_line(str(exc))
    for key, bug in KNOWN_BUGS.items():
        if isinstance(exc, bug.exc) and where in bug.where and bug.multiline == multiline:
            return key
    return None


@dataclass
class Outcome(Generic[T]):
    value: T | None = None
    error: MinirunError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def attempt(fn: Callable[..., T], *args: Any, known: bool = True, **kwargs: Any) -> Outcome[T]:
    """Call fn; its value, or the typed error it raised (checked to be one line). Any other
    exception fails the test, unless it is a known bug and ``known`` (then the example is
    rejected)."""
    name = getattr(fn, "__qualname__", repr(fn))
    try:
        return Outcome(value=fn(*args, **kwargs))
    except MinirunError as e:
        if not _one_line(str(e)):
            if known and known_bug(e):
                reject()
            raise AssertionError(
                f"{name} raised {type(e).__name__} with a message that is not one non-empty "
                f"line: {str(e)!r}") from e
        return Outcome(error=e)
    except Exception as e:
        if known and known_bug(e):
            reject()
        raise AssertionError(
            f"{name} let a raw {type(e).__name__} escape (not a MinirunError): {e}"[:2000]
        ) from e


def strict(fn: Callable[..., T], *args: Any, **kwargs: Any) -> Outcome[T]:
    """attempt() without tolerating known bugs (for the test_bug_* regression tests)."""
    return attempt(fn, *args, known=False, **kwargs)


class Hung(Exception):
    pass


@contextlib.contextmanager
def watchdog(seconds: float) -> Iterator[None]:
    """Raise Hung in the main thread if the body runs longer than ``seconds``."""

    def fire(signum: int, frame: FrameType | None) -> None:
        raise Hung(f"no result after {seconds} s: an infinite loop?")

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# ---------------------------------------------------------------------------------------
# Generic strategies: JSON-like values and mutated valid documents

_FIELD_NAMES = (
    # image manifests / indexes / configs / docker-archive manifest.json
    "schemaVersion", "mediaType", "config", "layers", "manifests", "digest", "size", "platform",
    "annotations", "os", "architecture", "variant", "rootfs", "type", "diff_ids", "history",
    "Config", "Layers", "RepoTags", "Env", "Cmd", "Entrypoint", "WorkingDir", "User",
    "ExposedPorts", "StopSignal",
    # runtime config.json
    "ociVersion", "process", "root", "path", "readonly", "args", "env", "cwd", "user", "uid",
    "gid", "umask", "additionalGids", "capabilities", "bounding", "rlimits", "soft", "hard",
    "consoleSize", "oomScoreAdj", "linux", "namespaces", "uidMappings", "gidMappings",
    "containerID", "hostID", "mounts", "destination", "source", "options", "devices",
    "major", "minor", "fileMode", "sysctl", "seccomp", "hooks", "prestart", "poststop",
    "timeout", "cgroupsPath", "rootfsPropagation", "maskedPaths", "hostname",
    # linux.resources
    "resources", "memory", "limit", "swap", "swappiness", "cpu", "shares", "quota", "period",
    "cpus", "mems", "pids", "blockIO", "weight", "weightDevice", "rate", "hugepageLimits",
    "pageSize", "unified", "allow", "access", "realtimeRuntime", "network", "rdma",
    "throttleReadBpsDevice",
    # seccomp
    "defaultAction", "defaultErrnoRet", "architectures", "archMap", "subArchitectures",
    "flags", "syscalls", "names", "name", "action", "errnoRet", "index", "value", "valueTwo",
    "op", "includes", "excludes", "caps", "arches", "minKernel", "listenerPath",
)  # fmt: skip

_INTERESTING: tuple[Any, ...] = (
    None, True, False, 0, -1, 1, 2, 5, 1000, 2**31, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64,
    -(2**63), 0.5, -0.0, 1e300, float("inf"), float("nan"), "", " ", "/", ".", "..", "../x",
    "/dev/null", "a\tb", "\x00", "é", "sha256:" + "0" * 64, "sha256:" + "A" * 64, "mount",
    "user", "c", "p", "rwm", "bind", "SCMP_ACT_ALLOW", "SCMP_CMP_EQ", "CAP_SYS_ADMIN", "2MB",
    "0-3", "layers", oci.OCI_MANIFEST, oci.OCI_INDEX, oci.DOCKER_MANIFEST_V1, oci.OCI_LAYER,
    [], {}, [[]], [{}], {"": None}, ["a"],
)  # fmt: skip

# Dict keys: the fields the parsers look at, or any text.
KEYS: SearchStrategy[str] = st.sampled_from(_FIELD_NAMES) | st.text(max_size=10)

SCALARS: SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**66), max_value=2**66),
    st.floats(),
    st.text(max_size=16),
    st.sampled_from(_INTERESTING).map(copy.deepcopy),
)


def json_values(max_leaves: int = 16) -> SearchStrategy[Any]:
    return st.recursive(
        SCALARS,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4),
        max_leaves=max_leaves,
    )


JSON = json_values()
JSON_OBJECTS: SearchStrategy[dict[str, Any]] = st.dictionaries(KEYS, JSON, max_size=6)


def _nodes(doc: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _nodes(v, (*path, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _nodes(v, (*path, i))
    return out


def _at(doc: Any, path: tuple[Any, ...]) -> Any:
    for p in path:
        doc = doc[p]
    return doc


@st.composite
def mutated(draw: st.DrawFn, base: Any, max_mutations: int = 4) -> Any:
    """``base`` (a valid document) with 1..max_mutations random edits: a node replaced by a
    random value, deleted, or a sibling inserted."""
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, max_mutations))):
        path = draw(st.sampled_from(_nodes(doc)))
        op = draw(st.sampled_from(("replace", "delete", "insert")))
        if not path:
            if op == "replace":
                doc = draw(JSON)
            continue
        parent, key = _at(doc, path[:-1]), path[-1]
        if op == "replace":
            parent[key] = draw(JSON)
        elif op == "delete":
            del parent[key]
        elif isinstance(parent, dict):
            parent[draw(KEYS)] = draw(JSON)
        else:
            parent.insert(key, draw(JSON))
    return doc


def dumps(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def _nondecimal_digits() -> SearchStrategy[str]:
    """Characters for which str.isdigit() is true but int() refuses ('²', '①', ...)."""
    return st.characters(categories=["No"]).filter(lambda c: c.isdigit() and not c.isdecimal())


# =======================================================================================
# 1. Image references

_ALNUM = string.ascii_lowercase + string.digits
_REF_ALPHABET = _ALNUM + "ABZ._-/:@+[]" + "sha256"


@st.composite
def path_components(draw: st.DrawFn) -> str:
    parts = draw(st.lists(st.text(_ALNUM, min_size=1, max_size=6), min_size=1, max_size=3))
    out = parts[0]
    for p in parts[1:]:
        out += draw(st.sampled_from((".", "_", "__", "-", "--", "---"))) + p
    return out


_LABEL = st.from_regex(r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,6}[a-zA-Z0-9])?", fullmatch=True)


@st.composite
def registries(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(("localhost", "domain", "ipv6", "docker.io")))
    if kind == "docker.io":
        return "docker.io"
    if kind == "localhost":
        host = "localhost"
    elif kind == "domain":
        host = ".".join(draw(st.lists(_LABEL, min_size=2, max_size=3)))
    else:
        host = "[" + draw(st.sampled_from(("::1", "fe80::1", "2001:db8::42"))) + "]"
    port = draw(st.none() | st.integers(0, 65535))
    return host if port is None else f"{host}:{port}"


_TAGS = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,40}", fullmatch=True) | st.from_regex(
    r"[a-z0-9_][A-Za-z0-9_.-]{120,127}", fullmatch=True)
_DIGESTS = st.one_of(
    st.text("0123456789abcdef", min_size=64, max_size=64).map(lambda h: "sha256:" + h),
    st.text("0123456789abcdef", min_size=128, max_size=128).map(lambda h: "sha512:" + h),
    st.text("0123456789abcdef", min_size=32, max_size=40).map(lambda h: "multihash+base58:" + h),
)


@st.composite
def valid_references(draw: st.DrawFn) -> tuple[str, refs.Reference]:
    """A reference from distribution/reference's grammar, and what it must parse to."""
    registry = draw(st.none() | registries())
    path = draw(st.lists(path_components(), min_size=1, max_size=3))
    if registry is None and len(path) > 1:
        first = path[0]
        assume("." not in first and first != "localhost")  # it would name a registry
    tag = draw(st.none() | _TAGS)
    digest = draw(st.none() | _DIGESTS)
    repo = "/".join(path)
    text = repo if registry is None else f"{registry}/{repo}"
    text += f":{tag}" if tag else ""
    text += f"@{digest}" if digest else ""
    want_registry = registry or refs.DEFAULT_REGISTRY
    if want_registry == refs.DEFAULT_REGISTRY and "/" not in repo:
        repo = f"{refs.OFFICIAL_NAMESPACE}/{repo}"
    assume(len(want_registry) + 1 + len(repo) <= 255 and len(text) <= 455)
    want = refs.Reference(want_registry, repo, tag or (None if digest else refs.DEFAULT_TAG), digest)
    return text, want


@st.composite
def edited(draw: st.DrawFn, texts: SearchStrategy[str]) -> str:
    """A text with a few characters inserted, deleted or replaced (near-valid input)."""
    s = draw(texts)
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(s)))
        ch = draw(st.sampled_from(_REF_ALPHABET + " \n\x00é"))
        op = draw(st.sampled_from(("insert", "delete", "replace")))
        if op == "insert" or not s:
            s = s[:i] + ch + s[i:]
        elif op == "delete":
            s = s[:i] + s[i + 1:]
        else:
            s = s[:i] + ch + s[i + 1:]
    return s


REFERENCE_TEXTS = st.one_of(
    st.text(),
    st.text(alphabet=_REF_ALPHABET, max_size=90),
    valid_references().map(lambda c: c[0]),
    edited(valid_references().map(lambda c: c[0])),
)


def _familiar_ambiguous(r: refs.Reference) -> bool:
    """docker.io/a.b/c is shown as 'a.b/c', which names registry a.b: Docker's own
    FamiliarString has the same ambiguity, so that case is not a round trip."""
    first, sep, _ = r.familiar_name.partition("/")
    return r.registry == refs.DEFAULT_REGISTRY and bool(sep) and (
        "." in first or ":" in first or first == "localhost" or first != first.lower())


@settings(max_examples=500 * SCALE, deadline=None)
@given(REFERENCE_TEXTS, st.booleans())
def test_reference_parse_any_text(text: str, default_tag: bool) -> None:
    assert isinstance(refs.is_image_id(text), bool)
    assert isinstance(refs.is_sha256_digest(text), bool)
    r = attempt(refs.parse, text, default_tag=default_tag).value
    if r is None:
        return
    assert r.tag or r.digest or not default_tag
    assert attempt(refs.parse, str(r), default_tag=default_tag).value == r
    if not _familiar_ambiguous(r):
        assert attempt(refs.parse, r.familiar(), default_tag=default_tag).value == r


@settings(max_examples=400 * SCALE, deadline=None)
@given(valid_references())
def test_valid_reference_parses_and_round_trips(case: tuple[str, refs.Reference]) -> None:
    text, want = case
    got = refs.parse(text)
    assert got == want
    assert refs.parse(str(got)) == got
    if not _familiar_ambiguous(got):
        assert refs.parse(got.familiar()) == got
    assert refs.parse(str(got.with_tag("v1"))) == refs.Reference(got.registry, got.repository, "v1")
    if got.digest and got.digest.startswith("sha256:"):
        assert refs.is_sha256_digest(got.digest) and refs.is_image_id(got.digest)


@settings(max_examples=10 * SCALE, deadline=None)
@example(tag="t" * 128, hexdigits=320)
@given(tag=st.from_regex(r"[a-z]{128}", fullmatch=True), hexdigits=st.integers(305, 322))
def test_bug_long_reference_does_not_round_trip(tag: str, hexdigits: int) -> None:
    r = refs.parse(f"a:{tag}@x:{'0' * hexdigits}")
    assert strict(refs.parse, str(r)).value == r


# =======================================================================================
# 2. OCI manifests, indexes, image configs (and what run makes of an image config)

D1, D2, D3, D4, D5 = ("sha256:" + c * 64 for c in "12345")
MANIFEST: dict[str, Any] = {
    "schemaVersion": 2,
    "mediaType": oci.OCI_MANIFEST,
    "config": {"mediaType": oci.OCI_CONFIG, "digest": D1, "size": 100},
    "layers": [
        {"mediaType": oci.OCI_LAYER_GZIP, "digest": D2, "size": 2000, "annotations": {"a": "b"}},
        {"mediaType": oci.DOCKER_LAYER, "digest": D3, "size": 0},
    ],
}
INDEX: dict[str, Any] = {
    "schemaVersion": 2,
    "mediaType": oci.OCI_INDEX,
    "manifests": [
        {"mediaType": oci.OCI_MANIFEST, "digest": D4, "size": 500,
         "platform": {"os": "linux", "architecture": "amd64"}},
        {"mediaType": oci.DOCKER_MANIFEST, "digest": D5, "size": 501,
         "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"},
         "annotations": {oci.ANNOTATION_REF_NAME: "1.0"}},
    ],
}  # fmt: skip
IMAGE_CONFIG: dict[str, Any] = {
    "architecture": "amd64",
    "os": "linux",
    "created": "2024-01-01T00:00:00Z",
    "config": {
        "Env": ["PATH=/usr/bin:/bin", "A=1"],
        "Entrypoint": ["/bin/sh", "-c"],
        "Cmd": ["echo hi"],
        "WorkingDir": "/srv",
        "User": "1000:1000",
        "ExposedPorts": {"80/tcp": {}, "53/udp": {}},
        "StopSignal": "SIGQUIT",
    },
    "rootfs": {"type": "layers", "diff_ids": [D2, D3]},
    "history": [{"created_by": "ADD rootfs.tar /"}, {"created_by": "CMD", "empty_layer": True}],
}

OCI_BYTES = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=100).map(str.encode),
    JSON.map(dumps),
    JSON_OBJECTS.map(dumps),
    st.sampled_from((MANIFEST, INDEX, IMAGE_CONFIG)).flatmap(mutated).map(dumps),
)


@settings(max_examples=400 * SCALE, deadline=None)
@given(OCI_BYTES)
def test_oci_parsers_any_bytes(data: bytes) -> None:
    m = attempt(oci.Manifest.parse, data).value
    if m is not None:
        assert oci.Manifest.parse(dumps(m.to_json())) == m
    i = attempt(oci.Index.parse, data).value
    if i is not None:
        attempt(i.select, oci.Platform("linux", "amd64"))
    c = attempt(oci.ImageConfig.parse, data).value
    if c is not None:
        assert all(oci.check_digest(d, "x") == d for d in c.diff_ids)
        assert isinstance(c.config, dict) and isinstance(c.history, list)
        assert isinstance(c.created, str) and isinstance(c.platform, oci.Platform)


@settings(max_examples=300 * SCALE, deadline=None)
@given(mutated(MANIFEST))
def test_mutated_manifest(doc: Any) -> None:
    m = attempt(oci.Manifest.parse, dumps(doc)).value
    if m is None:
        return
    assert m.media_type in oci.MANIFEST_TYPES
    for d in [m.config, *m.layers]:
        assert refs.is_sha256_digest(d.digest) and isinstance(d.size, int) and d.size >= 0
        assert oci.Descriptor.from_json(d.to_json(), "again") == d
    assert all(d.media_type in oci.LAYER_TYPES + ("",) for d in m.layers)
    assert oci.Manifest.parse(dumps(m.to_json())) == m


@settings(max_examples=300 * SCALE, deadline=None)
@given(mutated(INDEX), st.sampled_from(("linux/amd64", "linux/arm64", "linux/arm64/v8")))
def test_mutated_index(doc: Any, platform: str) -> None:
    i = attempt(oci.Index.parse, dumps(doc)).value
    if i is None:
        return
    assert i.media_type in oci.INDEX_TYPES
    for d in i.manifests:
        assert oci.Descriptor.from_json(d.to_json(), "again") == d
    chosen = attempt(i.select, oci.Platform.parse(platform)).value
    assert chosen is None or chosen in i.manifests


@settings(max_examples=300 * SCALE, deadline=None)
@given(st.text(max_size=30) | st.text("linux/amd64arm/v8", max_size=20))
def test_platform_parse(text: str) -> None:
    p = attempt(oci.Platform.parse, text).value
    if p is not None:
        assert oci.Platform.parse(str(p)) == p


def _run_spec(image_cfg: dict[str, Any]) -> dict[str, Any]:
    return spec.build_spec(image_cfg, spec.RunOptions(), spec.User(0, 0, [], "/root"), "fuzz", {})


@settings(max_examples=250 * SCALE, deadline=None)
@given(mutated(IMAGE_CONFIG))
def test_mutated_image_config_to_run_spec(doc: Any) -> None:
    """An image config from a registry or an archive, through everything ``run`` does with
    it: ImageConfig.parse, -P's ExposedPorts, StopSignal, the OCI spec, and the runtime's
    config.json parser on that spec."""
    c = attempt(oci.ImageConfig.parse, dumps(doc)).value
    if c is None:
        return
    cfg = c.config
    attempt(ports.exposed, cfg)
    attempt(lifecycle._signal_number, cfg.get("StopSignal") or "SIGTERM")
    out = attempt(_run_spec, cfg).value
    if out is not None:
        attempt(rtconfig.parse, out, BUNDLE)


@settings(max_examples=10 * SCALE, deadline=None)
@example(data=b"[" * 100_000)
@example(data=b"1" * 4301)
@given(st.integers(5000, 20_000).map(lambda n: b'{"a":' + b"[" * n))
def test_oci_json_beyond_parser_limits(data: bytes) -> None:
    strict(oci.Manifest.parse, data)


@settings(max_examples=20 * SCALE, deadline=None)
@example(cfg={"Env": 1})
@example(cfg={"ExposedPorts": ["80/tcp"]})
@given(st.sampled_from(("Env", "Entrypoint", "Cmd", "WorkingDir", "ExposedPorts")).flatmap(
    lambda k: st.sampled_from((1, 2.5, True, [1], ["a", None])).map(lambda v: {k: v, "Cmd": ["sh"]}
                                                                   if k != "Cmd" else {k: v})))
def test_bug_image_config_field_types(cfg: dict[str, Any]) -> None:
    strict(ports.exposed, cfg)
    strict(_run_spec, cfg)


# =======================================================================================
# 3. Archives: docker-archive manifest.json (and the pure helpers)


@settings(max_examples=300 * SCALE, deadline=None)
@given(st.text() | st.sampled_from(("..", "../x", "/abs", "a/../..", "./", "a//b/", "/")))
def test_archive_member_path_is_confined(name: str) -> None:
    norm = attempt(archive._clean, name).value
    if norm is not None:
        assert not norm.startswith("/") and norm not in ("", ".", "..")
        assert ".." not in norm.split("/")


@settings(max_examples=300 * SCALE, deadline=None)
@given(JSON | REFERENCE_TEXTS, st.dictionaries(
    st.sampled_from((oci.ANNOTATION_REF_NAME, oci.ANNOTATION_DOCKER_NAME, "x")), REFERENCE_TEXTS))
def test_archive_tags(tag: Any, annotations: dict[str, str]) -> None:
    r = attempt(archive._parse_tag, tag, "manifest.json entry 0").value
    assert r is None or r == refs.parse(tag)
    assert all(isinstance(t, refs.Reference) for t in archive._tags_from_annotations(annotations))


_LAYER_TAR = tar_bytes([E("etc", kind="dir"), E("etc/hostname", data=b"fuzz\n"),
                        E("bin/sh", kind="symlink", link="busybox")])
_LAYER_DIFF_ID = "sha256:" + hashlib.sha256(_LAYER_TAR).hexdigest()
ARCHIVE_CONFIG: dict[str, Any] = {**IMAGE_CONFIG, "rootfs": {"type": "layers", "diff_ids": [_LAYER_DIFF_ID]}}
ARCHIVE_MANIFEST: list[Any] = [
    {"Config": "config.json", "RepoTags": ["example.com/fuzz:1", "fuzz"], "Layers": ["layer.tar"]},
]


def _snapshot(d: Path) -> list[str]:
    return sorted(os.listdir(d))


@settings(max_examples=80 * SCALE, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(manifest=mutated(ARCHIVE_MANIFEST), config=st.none() | mutated(ARCHIVE_CONFIG))
def test_docker_archive_load(tmp_path: Path, manifest: Any, config: Any) -> None:
    """``minirun load`` of a docker-archive directory whose manifest.json (and config) are
    mutated; everything stays inside this example's directory."""
    parent_before = _snapshot(tmp_path.parent)
    ex = Path(tempfile.mkdtemp(dir=tmp_path))
    src = ex / "src"
    src.mkdir()
    (src / "manifest.json").write_bytes(dumps(manifest))
    (src / "config.json").write_bytes(dumps(ARCHIVE_CONFIG if config is None else config))
    (src / "layer.tar").write_bytes(_LAYER_TAR)
    files_before = _snapshot(src)
    with watchdog(20):
        loaded = attempt(archive.load, Store(ex / "store"), src).value
    for img in loaded or []:
        assert all(isinstance(n, str) and n for n in img.names)
        assert refs.is_sha256_digest(img.record.id)
    assert _snapshot(ex) == ["src", "store"]
    assert _snapshot(src) == files_before
    assert _snapshot(tmp_path.parent) == parent_before


def _load_dir(tmp: Path, manifest: bytes, config: Any = None) -> None:
    src = Path(tempfile.mkdtemp(dir=tmp))
    (src / "manifest.json").write_bytes(manifest)
    (src / "config.json").write_bytes(dumps(config or {"rootfs": {"type": "layers", "diff_ids": []}}))
    strict(archive.load, Store(tmp / "store"), src)


@settings(max_examples=10 * SCALE, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@example(name="a\x00b")
@example(name="a" * 300)
@given(st.text(min_size=1, max_size=5).map(lambda s: s + "\x00"))
def test_bug_archive_member_names(tmp_path: Path, name: str) -> None:
    _load_dir(tmp_path, dumps([{"Config": name, "Layers": []}]))


@settings(max_examples=10 * SCALE, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@example(tags=1)
@given(st.sampled_from((1, 2.5, True)))
def test_bug_archive_repotags_not_a_list(tmp_path: Path, tags: Any) -> None:
    _load_dir(tmp_path, dumps([{"Config": "config.json", "Layers": [], "RepoTags": tags}]))


@settings(max_examples=5 * SCALE, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@example(data=b"[" * 100_000)
@example(data=b"[" + b"1" * 4301 + b"]")
@given(st.integers(5000, 20_000).map(lambda n: b"[" * n))
def test_archive_json_beyond_parser_limits(tmp_path: Path, data: bytes) -> None:
    _load_dir(tmp_path, data)


# =======================================================================================
# 4. Layer tars: member names, whiteouts, headers (unpacked only into tmp_path)


def _normalise(raw: bytes) -> bytes:
    # _Extractor._normalise uses nothing of the extractor: call it unbound
    return layers._Extractor._normalise(None, raw)  # type: ignore[arg-type]


def _lexical(raw: bytes) -> bytes | None:
    """The specification: drop '', '.'; '..' pops; None if it climbs above the root."""
    parts: list[bytes] = []
    for c in raw.split(b"/"):
        if c in (b"", b"."):
            continue
        if c == b"..":
            if not parts:
                return None
            parts.pop()
        else:
            parts.append(c)
    return b"/".join(parts)


MEMBER_PARTS = st.sampled_from(
    ("a", "b", "dir", "..", ".", "", ".wh.a", ".wh.b", ".wh.", ".wh..", ".wh..wh..opq",
     ".wh..wh.plnk", "x" * 255, "y" * 256, "é", " ", "a\x00b", "outside"))  # fmt: skip


@st.composite
def member_names(draw: st.DrawFn) -> str:
    if draw(st.integers(0, 4)) == 0:
        return draw(st.text(max_size=30))
    parts = draw(st.lists(MEMBER_PARTS, min_size=1, max_size=6))
    lead = draw(st.sampled_from(("", "/", "./", "../", "//", "a/../")))
    return lead + "/".join(parts) + draw(st.sampled_from(("", "/")))


@settings(max_examples=500 * SCALE, deadline=None)
@given(st.binary(max_size=60) | member_names().map(lambda s: s.encode()))
def test_layer_member_name_normalisation(raw: bytes) -> None:
    want = None if b"\0" in raw else _lexical(raw)
    try:
        got = _normalise(raw)
    except layers._Refuse:
        assert want is None
        return
    assert got == want
    assert not got.startswith(b"/") and b"\0" not in got
    assert all(c not in (b"", b".", b"..") for c in got.split(b"/")) or got == b""
    assert _normalise(got) == got


OUTSIDE = "@OUTSIDE@"  # replaced by an absolute path next to dest, which must stay empty
KINDS = ("file", "file", "dir", "dir", "symlink", "hardlink", "fifo", "char", "S", "V", "D", "N")


@st.composite
def layer_entries(draw: st.DrawFn) -> E:
    kind = draw(st.sampled_from(KINDS))
    link = ""
    if kind in ("symlink", "hardlink"):
        link = draw(member_names() | st.sampled_from((OUTSIDE, OUTSIDE + "/x", "../outside",
                                                     "../outside/x", "/etc/passwd", "")))
    pax: dict[str, str] = {}
    if draw(st.booleans()):
        pax = draw(st.dictionaries(
            st.sampled_from(("mtime", "uid", "gid", "GNU.sparse.major", "comment", "atime")),
            st.from_regex(r"-?[0-9]{1,12}(\.[0-9]{1,12})?", fullmatch=True) | st.text(max_size=5),
            max_size=2))
    xattrs = draw(st.dictionaries(
        st.sampled_from(("user.fuzz", "trusted.overlay.redirect", "trusted.overlay.opaque",
                         "trusted.fuzz", "security.capability", "bogus.x")),
        st.binary(max_size=8), max_size=2))
    return E(
        name=draw(member_names()),
        kind=kind,
        data=draw(st.binary(max_size=700)) if kind == "file" else b"",
        mode=draw(st.integers(0, 0o7777)),
        uid=draw(st.integers(0, 70000)),
        gid=draw(st.integers(0, 70000)),
        mtime=draw(st.integers(0, 2**33)),
        link=link,
        xattrs=xattrs,
        pax=pax,
    )


def _overlay_xattrs_ok(dest: Path) -> None:
    """Only the opaque marker may steer overlayfs: no other trusted.overlay.* xattr."""
    for top, dirs, files in os.walk(dest):
        for name in dirs + files:
            try:
                keys = os.listxattr(os.path.join(top, name), follow_symlinks=False)
            except OSError:
                continue
            assert all(k == "trusted.overlay.opaque" for k in keys if k.startswith("trusted.overlay."))


def _unpack_confined(tmp_path: Path, blob: bytes | Callable[[str], bytes]) -> Outcome[Any]:
    """Unpack into a fresh <ex>/dest next to an empty <ex>/outside; assert that nothing
    was written anywhere but dest."""
    parent_before = _snapshot(tmp_path.parent)
    ex = Path(tempfile.mkdtemp(dir=tmp_path))
    (ex / "dest").mkdir()
    (ex / "outside").mkdir()
    data = blob(str(ex / "outside")) if callable(blob) else blob
    with watchdog(10):
        out = attempt(layers.unpack_layer, io.BytesIO(data), ex / "dest", name="sha256:fuzz")
    assert _snapshot(ex) == ["dest", "outside"]
    assert _snapshot(ex / "outside") == []
    assert _snapshot(tmp_path.parent) == parent_before
    _overlay_xattrs_ok(ex / "dest")
    if out.value is not None and not data.startswith(b"\x28\xb5\x2f\xfd"):
        assert out.value.size == len(gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data)
    return out


def _build_tar(entries: list[E], outside: str, fmt: int, compress: bool) -> bytes:
    fixed = [E(**{**e.__dict__, "link": e.link.replace(OUTSIDE, outside)}) for e in entries]
    data = tar_bytes(fixed, fmt)
    return gzip.compress(data, mtime=0) if compress else data


@settings(max_examples=200 * SCALE, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(entries=st.lists(layer_entries(), min_size=1, max_size=6),
       fmt=st.sampled_from((tarfile.PAX_FORMAT, tarfile.GNU_FORMAT)), compress=st.booleans())
def test_unpack_generated_layers(tmp_path: Path, entries: list[E], fmt: int, compress: bool) -> None:
    try:
        _build_tar(entries, "/x", fmt, compress)
    except (ValueError, UnicodeError, tarfile.TarError, OverflowError):
        reject()  # tarfile cannot write it (e.g. a GNU-format value out of range)
    _unpack_confined(tmp_path, lambda outside: _build_tar(entries, outside, fmt, compress))


_BASE_TAR = tar_bytes(
    [E("d", kind="dir"), E("d/f", data=b"hello " * 30), E("d/s", kind="symlink", link="f"),
     E("d/h", kind="hardlink", link="d/f"), E("d/.wh.gone"), E("d/.wh..wh..opq")],
    tarfile.USTAR_FORMAT,
)
# Header fields that may be mutated. Not size (124:136: a negative base-256 size is the
# known hang, test_bug_layer_negative_size_hangs) nor devmajor/devminor (329:345: no
# random device node is ever made, even in tmp).
_MUTABLE = [*range(0, 124), *range(136, 329), *range(345, 512)]


def _fix_checksum(hdr: bytearray) -> None:
    hdr[148:156] = b" " * 8
    hdr[148:156] = b"%06o\0 " % sum(hdr)


@st.composite
def corrupted_tars(draw: st.DrawFn) -> bytes:
    data = bytearray(_BASE_TAR)
    headers = [i for i in range(0, len(data), 512) if data[i + 257:i + 262] == b"ustar"]
    for _ in range(draw(st.integers(0, 6))):
        h = draw(st.sampled_from(headers))
        off = draw(st.sampled_from(_MUTABLE))
        data[h + off] = draw(st.integers(0, 255) | st.sampled_from(b"0x7LKgS/.\0 "))
        if draw(st.booleans()):
            hdr = bytearray(data[h:h + 512])
            _fix_checksum(hdr)
            data[h:h + 512] = hdr
    if draw(st.booleans()):
        data = data[:draw(st.integers(0, len(data)))]
    data += draw(st.binary(max_size=50))
    how = draw(st.sampled_from(("plain", "gzip", "gzip-truncated", "gzip-magic", "zstd-magic")))
    if how == "gzip":
        return gzip.compress(bytes(data), mtime=0)
    if how == "gzip-truncated":
        z = gzip.compress(bytes(data), mtime=0)
        return z[:draw(st.integers(0, len(z)))]
    if how == "gzip-magic":
        return b"\x1f\x8b" + draw(st.binary(max_size=100))
    if how == "zstd-magic":
        return b"\x28\xb5\x2f\xfd" + draw(st.binary(max_size=100))
    return bytes(data)


@settings(max_examples=250 * SCALE, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(corrupted_tars() | st.binary(max_size=1200))
def test_unpack_corrupted_layers(tmp_path: Path, blob: bytes) -> None:
    _unpack_confined(tmp_path, blob)


@settings(max_examples=3 * SCALE, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@example(depth=10_000)
@given(st.integers(10_000, 20_000))
def test_bug_layer_deep_path_recursion(tmp_path: Path, depth: int) -> None:
    # Deeper than any recursion limit in force here (Hypothesis raises it to ~2000 while a
    # test runs, pytest to 3000), so it fails before creating anything.
    dest = Path(tempfile.mkdtemp(dir=tmp_path))
    try:
        strict(layers.unpack_layer, io.BytesIO(tar_bytes([E("a/" * depth + "f")])), dest)
    finally:
        # once fixed, this makes a 10000-deep tree: shutil.rmtree (pytest's cleanup too)
        # recurses per level and would fail on it; rm -rf does not
        subprocess.run(["rm", "-rf", "--", str(dest)], check=False)


@settings(max_examples=3 * SCALE, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@example(size="-1")
@given(st.integers(-(2**20), -1).map(str))
def test_layer_negative_size_is_refused(tmp_path: Path, size: str) -> None:
    dest = Path(tempfile.mkdtemp(dir=tmp_path))
    with watchdog(3):
        strict(layers.unpack_layer, io.BytesIO(tar_bytes([E("f", pax={"size": size})])), dest)


@settings(max_examples=5 * SCALE, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@example(mtime="10000000000000000000")
@given(st.integers(10**19, 10**30).map(str))
def test_layer_mtime_out_of_range_is_refused(tmp_path: Path, mtime: str) -> None:
    dest = Path(tempfile.mkdtemp(dir=tmp_path))
    strict(layers.unpack_layer, io.BytesIO(tar_bytes([E("f", pax={"mtime": mtime})])), dest)


@settings(max_examples=5 * SCALE, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@example(uid="4294967296")
@given(st.sampled_from(("-2", "4294967296", str(2**63))))
def test_layer_uid_out_of_range_is_refused(tmp_path: Path, uid: str) -> None:
    dest = Path(tempfile.mkdtemp(dir=tmp_path))
    strict(layers.unpack_layer, io.BytesIO(tar_bytes([E("f", pax={"uid": uid})])), dest)


@settings(max_examples=10 * SCALE, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@example(name="../\n")
@given(st.text(max_size=5).map(lambda s: f"../{s}\n"))
def test_bug_layer_message_has_member_newline(tmp_path: Path, name: str) -> None:
    dest = Path(tempfile.mkdtemp(dir=tmp_path))
    strict(layers.unpack_layer, io.BytesIO(tar_bytes([E(name)])), dest)


# =======================================================================================
# 5. run flags: -p, -v, --tmpfs, --memory/--cpus, -u, --env-file, --add-host, signals

_PORT_TEXT = st.one_of(st.integers(0, 70000).map(str), st.text("0123456789-", max_size=12))
PUBLISH_TEXTS = st.one_of(
    st.text(max_size=40),
    st.text("0123456789.:-/tcpudp[]", max_size=30),
    st.builds(lambda *p: "".join(p), st.sampled_from(("", "127.0.0.1:", "0.0.0.0:", ":", "::",
                                                      "1.2.3:", "[::1]:")),
              st.sampled_from(("", "8080:", "8000-8002:", ":")), _PORT_TEXT,
              st.sampled_from(("", "/tcp", "/udp", "/sctp", "/"))),
)


@st.composite
def valid_publish(draw: st.DrawFn) -> tuple[str, list[PortMap]]:
    n = draw(st.integers(1, 4))
    ctr = draw(st.integers(1, 65536 - n))
    host = draw(st.none() | st.integers(1, 65536 - n))
    ip = draw(st.none() | st.sampled_from(("", "127.0.0.1")) | st.ip_addresses(v=4).map(str))
    proto = draw(st.sampled_from(("", "tcp", "udp")))

    def span(lo: int) -> str:
        return f"{lo}-{lo + n - 1}" if n > 1 or draw(st.booleans()) else str(lo)

    text = span(ctr)
    if host is not None or ip is not None:
        text = (span(host) if host is not None else "") + ":" + text
    if ip is not None:
        text = f"{ip}:{text}"
    if proto:
        text += f"/{proto}"
    want = [PortMap(container_port=ctr + i, proto=proto or "tcp", host_ip=ip or "0.0.0.0",
                    host_port=0 if host is None else host + i) for i in range(n)]
    return text, want


@settings(max_examples=500 * SCALE, deadline=None)
@given(PUBLISH_TEXTS)
def test_publish_any_text(text: str) -> None:
    maps = attempt(ports.parse_publish, text).value
    if maps is not None:
        assert maps and all(1 <= pm.container_port <= 65535 and 0 <= pm.host_port <= 65535
                            and pm.proto in ("tcp", "udp") for pm in maps)
        assert attach._parse_publish(text) == maps


@settings(max_examples=300 * SCALE, deadline=None)
@given(valid_publish())
def test_valid_publish(case: tuple[str, list[PortMap]]) -> None:
    text, want = case
    assert ports.parse_publish(text) == want


@settings(max_examples=20 * SCALE, deadline=None)
@example(port="²")
@example(port="1" * 4301)
@given(_nondecimal_digits())
def test_bug_publish_non_decimal_digits(port: str) -> None:
    strict(ports.parse_publish, port)


VOLUME_TEXTS = st.one_of(
    st.text(max_size=30),
    st.lists(st.sampled_from(("/a", "/", "", "rel", "/b/c", "ro", "rw", "z", "Z", "ro,z", "rw,",
                              "bogus", "/x y")), max_size=4).map(":".join))


@settings(max_examples=300 * SCALE, deadline=None)
@given(VOLUME_TEXTS)
def test_volume_and_tmpfs_any_text(text: str) -> None:
    m = attempt(spec.parse_volume, text).value
    if m is not None:
        assert m["type"] == "bind" and m["source"].startswith("/")
        assert m["destination"].startswith("/") and m["destination"] != "/"
    t = attempt(spec.parse_tmpfs, text).value
    if t is not None:
        assert t["destination"].startswith("/") and t["type"] == "tmpfs"


_PATHS = st.lists(st.text(string.ascii_letters + "._- é", min_size=1, max_size=8), min_size=1,
                  max_size=3).map(lambda ps: "/" + "/".join(ps))


@settings(max_examples=200 * SCALE, deadline=None)
@given(_PATHS, _PATHS, st.lists(st.sampled_from(("ro", "rw", "z", "Z")), max_size=3))
def test_valid_volume(src: str, dst: str, modes: list[str]) -> None:
    text = f"{src}:{dst}" + (":" + ",".join(modes) if modes else "")
    opts = [m for m in modes if m in ("ro", "rw")] if modes else ["rw"]
    assert spec.parse_volume(text) == {"destination": dst, "type": "bind", "source": src,
                                       "options": ["rbind", "rprivate", *opts]}


_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
SIZE_TEXTS = st.one_of(
    st.text(max_size=20),
    st.text("0123456789.kmgtpbiKMGTPBI -+e", max_size=20),
    st.builds(lambda n, u: f"{n}{u}", st.integers(-5, 2**64), st.sampled_from(
        ("", "b", "k", "kb", "KiB", "m", "MB", "g", "Gib", "t", "p", "x", "kk", "bb", " m"))),
)


@settings(max_examples=500 * SCALE, deadline=None)
@given(SIZE_TEXTS)
def test_parse_bytes_any_text(text: str) -> None:
    n = attempt(resources.parse_bytes, text).value
    if n is not None:
        assert 0 <= n <= 2**63 - 1


@st.composite
def valid_sizes(draw: st.DrawFn) -> tuple[str, int]:
    unit = draw(st.sampled_from(sorted(_UNITS)))
    suffix = "" if unit in ("", "b") else draw(st.sampled_from(("", "b", "ib")))
    mul = _UNITS[unit]
    if draw(st.booleans()):
        number = draw(st.integers(0, (2**63 - 1) // mul))
        text, want = str(number), number * mul
    else:
        whole, frac = draw(st.integers(0, 10**6)), draw(st.text("0123456789", max_size=6))
        text = f"{whole}.{frac}" if whole or frac else "0."
        want = int(float(text) * mul)  # Docker (go-units) goes through a float64 too
        assume(want <= 2**63 - 1)
    spelt = unit + suffix
    spelt = "".join(c.upper() if draw(st.booleans()) else c for c in spelt)
    return f"{text}{draw(st.sampled_from(('', ' ')))}{spelt}", want


@settings(max_examples=400 * SCALE, deadline=None)
@given(valid_sizes())
def test_valid_sizes(case: tuple[str, int]) -> None:
    text, want = case
    assert resources.parse_bytes(text) == want
    assert resources.parse_bytes(str(want)) == want


@settings(max_examples=400 * SCALE, deadline=None)
@given(st.text(max_size=20) | st.text("0123456789.-e ", max_size=20))
def test_parse_cpus_any_text(text: str) -> None:
    n = attempt(resources.parse_cpus, text).value
    if n is not None:
        assert n >= 0
        assert resources.parse_cpus(f"{n // 10**9}.{n % 10**9:09d}") == n


@settings(max_examples=300 * SCALE, deadline=None)
@given(st.integers(0, 10**6), st.text("0123456789", max_size=9), st.sampled_from(("", "0", "00")))
def test_valid_cpus(whole: int, frac: str, zeros: str) -> None:
    want = whole * 10**9 + int(frac.ljust(9, "0"))
    assert resources.parse_cpus(f"{whole}.{frac}{zeros}") == want
    if not frac and not zeros:
        assert resources.parse_cpus(str(whole)) == want


_OPT_SIZE = st.none() | SIZE_TEXTS | valid_sizes().map(lambda c: c[0]) | st.just("-1")


@settings(max_examples=400 * SCALE, deadline=None)
@given(memory=_OPT_SIZE, memory_swap=_OPT_SIZE,
       cpus=st.none() | st.text("0123456789.", max_size=6) | st.text(max_size=6),
       cpu_shares=st.none() | st.integers(-10, 10**6), pids_limit=st.none() | st.integers(-10, 10**6))
def test_parse_resources(memory: str | None, memory_swap: str | None, cpus: str | None,
                         cpu_shares: int | None, pids_limit: int | None) -> None:
    r = attempt(resources.parse_resources, memory, memory_swap, cpus, cpu_shares, pids_limit).value
    if r is None:
        return
    if r.memory is not None:
        assert r.memory >= resources.MIN_MEMORY
        assert r.memory_swap is not None and (r.memory_swap == -1 or r.memory_swap >= r.memory)
    assert r.cpu_quota is None or r.cpu_quota >= 1000
    assert r.cpu_shares is None or resources.MIN_SHARES <= r.cpu_shares <= resources.MAX_SHARES
    assert r.pids_limit is None or r.pids_limit == -1 or r.pids_limit > 0
    assert r.memory_swap is None or r.memory_swap <= 2**63 - 1
    # what run builds, the runtime accepts
    assert attempt(cgroups._parse, r.to_oci()).ok


@settings(max_examples=10 * SCALE, deadline=None)
@example(memory="4096p")
@given(st.integers(2**62, 2**63 - 1).map(str))
def test_bug_memory_default_swap_overflows(memory: str) -> None:
    r = strict(resources.parse_resources, memory).value
    assert r is not None
    assert strict(cgroups._parse, r.to_oci()).ok


@settings(max_examples=10 * SCALE, deadline=None)
@example(text="1" + "0" * 309 + ".")
@example(text="1" * 4301)
@given(st.integers(310, 400).map(lambda n: "9" * n + ".5m"))
def test_bug_parse_bytes_huge_numbers(text: str) -> None:
    strict(resources.parse_bytes, text)


@settings(max_examples=5 * SCALE, deadline=None)
@example(text="1" * 4301)
@given(st.integers(4301, 6000).map(lambda n: "2" * n + ".5"))
def test_bug_parse_cpus_huge_numbers(text: str) -> None:
    strict(resources.parse_cpus, text)


# -- -u/--user, resolved against the image's /etc/passwd and /etc/group

_NAMES = st.sampled_from(("root", "app", "www-data", "nobody", "", "1000", "x y"))
_IDS = st.integers(0, 70000).map(str) | st.sampled_from(("", "-1", "abc", "1.5", " 7"))


@st.composite
def passwd_files(draw: st.DrawFn) -> tuple[bytes, bytes]:
    passwd = draw(st.lists(st.one_of(
        st.builds(lambda n, u, g, h: f"{n}:x:{u}:{g}::{h}:/bin/sh", _NAMES, _IDS, _IDS,
                  st.sampled_from(("/home/app", "", "/"))),
        st.text(max_size=30), st.just("#comment")), max_size=6))
    group = draw(st.lists(st.one_of(
        st.builds(lambda n, g, m: f"{n}:x:{g}:{','.join(m)}", _NAMES, _IDS, st.lists(_NAMES, max_size=3)),
        st.text(max_size=30)), max_size=6))
    if draw(st.integers(0, 5)) == 0:
        return draw(st.binary(max_size=80)), draw(st.binary(max_size=80))
    return "\n".join(passwd).encode(), "\n".join(group).encode()


USER_SPECS = st.one_of(
    st.none(), st.text(max_size=12),
    st.builds(lambda u, g: f"{u}:{g}" if g is not None else u, _NAMES | _IDS, st.none() | _NAMES | _IDS),
)


@settings(max_examples=300 * SCALE, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(files=passwd_files(), user=USER_SPECS)
def test_resolve_user(tmp_path: Path, files: tuple[bytes, bytes], user: str | None) -> None:
    etc = tmp_path / "layer" / "etc"
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "passwd").write_bytes(files[0])
    (etc / "group").write_bytes(files[1])
    u = attempt(users.resolve_user, user, [str(tmp_path / "layer")]).value
    if u is None:
        return
    assert isinstance(u.uid, int) and isinstance(u.gid, int) and isinstance(u.home, str)
    name, _, _ = (user or "0").partition(":")
    if name.isdecimal() and not any(line.split(":")[0] == name for line in
                                    files[0].decode(errors="replace").splitlines()):
        assert u.uid == int(name)


@settings(max_examples=20 * SCALE, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@example(user="²")
@example(user="a\nb")
@given(_nondecimal_digits() | _nondecimal_digits().map(lambda c: "0:" + c))
def test_bug_resolve_user(tmp_path: Path, user: str) -> None:
    (tmp_path / "layer").mkdir(exist_ok=True)
    strict(users.resolve_user, user, [str(tmp_path / "layer")])


# -- --env-file

_ENV_KEYS = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True)
# str.splitlines() also breaks lines at these (test_bug_env_file_unicode_line_breaks)
_LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
_ENV_VALUES = st.text(st.characters(blacklist_characters=_LINE_BREAKS, blacklist_categories=["Cs"]),
                      max_size=12)


@settings(max_examples=400 * SCALE, deadline=None)
@given(st.text(max_size=60) | st.lists(st.text("AB_=# \t\n1", max_size=8), max_size=5).map("\n".join),
       st.dictionaries(_ENV_KEYS, _ENV_VALUES, max_size=3))
def test_env_file_any_text(text: str, host_env: dict[str, str]) -> None:
    env = attempt(spec.parse_env_file, text, host_env, "env.list").value
    if env is not None:
        assert all("=" in e and not e.startswith("=") for e in env)


@st.composite
def env_files(draw: st.DrawFn) -> tuple[str, dict[str, str], list[str]]:
    host_env = draw(st.dictionaries(_ENV_KEYS, _ENV_VALUES, max_size=3))
    lines, want = [], []
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(("set", "pass", "comment", "blank")))
        indent = draw(st.sampled_from(("", " ", "\t")))
        if kind == "set":
            k, v = draw(_ENV_KEYS), draw(_ENV_VALUES)
            lines.append(f"{indent}{k}={v}")
            want.append(f"{k}={v}")
        elif kind == "pass":
            k = draw(st.sampled_from(sorted(host_env)) | _ENV_KEYS if host_env else _ENV_KEYS)
            lines.append(indent + k)
            if k in host_env:
                want.append(f"{k}={host_env[k]}")
        elif kind == "comment":
            lines.append(f"{indent}# {draw(_ENV_VALUES)}")
        else:
            lines.append(indent)
    return draw(st.sampled_from(("\n", "\r\n"))).join(lines), host_env, want


@settings(max_examples=300 * SCALE, deadline=None)
@given(env_files())
def test_valid_env_file(case: tuple[str, dict[str, str], list[str]]) -> None:
    text, host_env, want = case
    assert spec.parse_env_file(text, host_env, "env.list") == want


@settings(max_examples=20 * SCALE, deadline=None)
@example(value="1\x1cB=2")
@given(st.sampled_from(_LINE_BREAKS[2:]).map(lambda c: f"x{c}y"))
def test_bug_env_file_unicode_line_breaks(value: str) -> None:
    assert spec.parse_env_file(f"A={value}", {}, "env.list") == [f"A={value}"]


# -- --add-host

ADD_HOST_TEXTS = st.one_of(
    st.text(max_size=30),
    st.builds(lambda n, s, ip: f"{n}{s}{ip}", st.sampled_from(("h", "", "a.b", "x y")),
              st.sampled_from((":", "=")),
              st.sampled_from(("1.2.3.4", "::1", "[::1]", "host-gateway", "", "999.1.1.1", "fe80::1%eth0"))
              | st.ip_addresses().map(str)),
)


@settings(max_examples=400 * SCALE, deadline=None)
@given(ADD_HOST_TEXTS, st.none() | st.just("10.88.0.1"))
def test_add_host_any_text(text: str, gateway: str | None) -> None:
    line = attempt(dns.parse_add_host, text, gateway).value
    if line is not None:
        ip, tab, name = line.partition("\t")
        assert tab and name


_HOSTNAMES = st.from_regex(r"[a-z0-9]([a-z0-9.-]{0,20}[a-z0-9])?", fullmatch=True)


@settings(max_examples=300 * SCALE, deadline=None)
@given(_HOSTNAMES, st.ip_addresses(), st.sampled_from((":", "=")), st.booleans())
def test_valid_add_host(name: str, ip: Any, sep: str, brackets: bool) -> None:
    shown = f"[{ip}]" if brackets and ip.version == 6 else str(ip)
    assert dns.parse_add_host(f"{name}{sep}{shown}", None) == f"{ip}\t{name}"
    assert dns.parse_add_host(f"{name}{sep}host-gateway", str(ip)) == f"{ip}\t{name}"


@settings(max_examples=20 * SCALE, deadline=None)
@example(text="a\n6.6.6.6 b:1.2.3.4")
@given(st.sampled_from(("\n", "\r", " ", "\t", "#")).map(lambda c: f"a{c}b:1.2.3.4"))
def test_bug_add_host_name_not_validated(text: str) -> None:
    line = strict(dns.parse_add_host, text, None).value
    assert line is None or (len(line.splitlines()) == 1 and len(line.split()) == 2)


# -- signals (kill -s, the image's StopSignal)


@settings(max_examples=300 * SCALE, deadline=None)
@given(st.text(max_size=12) | st.sampled_from(("KILL", "sigterm", " 9", "SIGRTMIN", "0", "99999")))
def test_parse_signal(text: str) -> None:
    n = attempt(lifecycle.parse_signal, text).value
    assert n is None or n >= 0


@settings(max_examples=20 * SCALE, deadline=None)
@example(text="²")
@example(text="a\nb")
@given(_nondecimal_digits())
def test_bug_parse_signal(text: str) -> None:
    strict(lifecycle.parse_signal, text)


# =======================================================================================
# 6. OCI runtime config.json, linux.resources, cgroupsPath


def _rich_config() -> dict[str, Any]:
    cfg = default_config(["sh"])
    lx = cfg["linux"]
    lx["namespaces"] += [{"type": "user"}, {"type": "cgroup"}]
    lx["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    lx["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    lx["devices"] = [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229,
                      "fileMode": 0o666, "uid": 0, "gid": 0}]
    lx["sysctl"] = {"net.ipv4.ip_forward": "1", "kernel.shmmax": "4096"}
    lx["cgroupsPath"] = "/minirun-fuzz/abc"
    lx["rootfsPropagation"] = "rslave"
    lx["seccomp"] = copy.deepcopy(SECCOMP)
    lx["resources"] = copy.deepcopy(RESOURCES)
    cfg["hooks"] = {"prestart": [{"path": "/bin/true", "args": ["true"], "env": ["A=1"], "timeout": 5}],
                    "poststop": [{"path": "/bin/true"}]}
    cfg["annotations"] = {"org.example": "x"}
    cfg["process"]["consoleSize"] = {"height": 24, "width": 80}
    cfg["process"]["user"].update(additionalGids=[1, 2], umask=0o22)
    cfg["process"]["oomScoreAdj"] = 100
    cfg["domainname"] = "example.com"
    return cfg


RESOURCES: dict[str, Any] = {
    "memory": {"limit": 64 << 20, "reservation": 32 << 20, "swap": 128 << 20, "swappiness": 10,
               "disableOOMKiller": False},
    "cpu": {"shares": 1024, "quota": 50000, "period": 100000, "cpus": "0-1", "mems": "0"},
    "pids": {"limit": 100},
    "blockIO": {"weight": 500, "weightDevice": [{"major": 8, "minor": 0, "weight": 300}],
                "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1048576}]},
    "hugepageLimits": [{"pageSize": "2MB", "limit": 0}],
    "unified": {"memory.high": "max"},
    "devices": [{"allow": False, "access": "rwm"},
                {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rw"}],
}  # fmt: skip
SECCOMP: dict[str, Any] = {
    "defaultAction": "SCMP_ACT_ERRNO",
    "architectures": ["SCMP_ARCH_X86_64"],
    "flags": ["SECCOMP_FILTER_FLAG_LOG"],
    "syscalls": [{"names": ["read", "write"], "action": "SCMP_ACT_ALLOW",
                  "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}]}],
}
RICH_CONFIG = _rich_config()


def _after_config(cfg: rtconfig.Config) -> None:
    """What the runtime does next with a parsed config, before any fork: all pure."""
    assert os.path.isabs(cfg.root_path) and cfg.has("mount")
    attempt(mounts.parse_mounts, cfg.mounts)
    attempt(mounts.parse_devices, cfg.devices)
    if cfg.process is not None:
        assert cfg.process.args and cfg.process.cwd.startswith("/")
        attempt(security.parse_caps, cfg.process.capabilities or {})
        attempt(security.parse_rlimits, [{"type": t, "soft": s, "hard": h}
                                         for t, s, h in cfg.process.rlimits])
    attempt(cgroups._parse, cfg.resources, cfg.devices)
    attempt(cgroups.resolve_path, cfg.cgroups_path, "fuzz")
    if cfg.seccomp is not None:
        attempt(seccomp._check, cfg.seccomp)


def test_rich_config_is_valid() -> None:
    cfg = rtconfig.parse(copy.deepcopy(RICH_CONFIG), BUNDLE)
    assert not cfg.ignored
    _after_config(cfg)


@settings(max_examples=300 * SCALE, deadline=None)
@given(JSON | JSON_OBJECTS | st.builds(lambda d: {**d, "ociVersion": "1.0.2"}, JSON_OBJECTS))
def test_runtime_config_any_json(raw: Any) -> None:
    cfg = attempt(rtconfig.parse, raw, BUNDLE).value
    if cfg is not None:
        _after_config(cfg)


@settings(max_examples=400 * SCALE, deadline=None)
@given(mutated(RICH_CONFIG))
def test_runtime_config_mutated(raw: Any) -> None:
    cfg = attempt(rtconfig.parse, raw, BUNDLE).value
    if cfg is not None:
        _after_config(cfg)
        assert rtconfig.parse(raw, BUNDLE) == cfg


@settings(max_examples=300 * SCALE, deadline=None)
@given(JSON | mutated(RESOURCES), st.lists(st.dictionaries(
    st.sampled_from(("type", "major", "minor", "path")), SCALARS, max_size=4), max_size=2))
def test_cgroup_resources(resources_doc: Any, linux_devices: list[dict[str, Any]]) -> None:
    lim = attempt(cgroups._parse, resources_doc, linux_devices).value
    if lim is None:
        return
    assert lim.cpu_period is None or 1000 <= lim.cpu_period <= 1_000_000
    for rule in lim.devices or []:
        assert rule.type in ("a", "b", "c") and rule.access and set(rule.access) <= set("rwm")
        assert rule.v1_lines()
    lim.needed(1)
    lim.needed(2)
    cgroups._check_version(lim, 2)


CGROUP_PATHS = st.one_of(
    st.none(), st.text(max_size=30), SCALARS,
    st.lists(st.sampled_from(("a", "..", ".", "", "system.slice", "a-b.slice", "-.slice", "x\n",
                              "p", "n.scope", "\x00")), max_size=4).map("/".join),
    st.lists(st.sampled_from(("", "machine.slice", "a--b.slice", "-.slice", "libpod", "abc",
                              "x.slice", "a/b", "..")), min_size=1, max_size=4).map(":".join),
)


@settings(max_examples=500 * SCALE, deadline=None)
@given(CGROUP_PATHS, st.text(max_size=10), st.booleans(), st.none() | st.text(max_size=10))
def test_cgroups_path(path: Any, cid: str, systemd: bool, default: str | None) -> None:
    got = attempt(cgroups.resolve_path, path, cid, systemd, default=default).value
    if got is None:
        return
    assert got.startswith("/") and "\0" not in got and "\n" not in got
    assert ".." not in got.split("/")
    if not systemd:
        assert cgroups.resolve_path(got, cid) == got  # a cleaned path is its own cleaning
    s = attempt(cgroups.expand_slice, path if isinstance(path, str) else "").value
    assert s is None or (s.startswith("/") and (s == "/" or s.endswith(".slice")))


@settings(max_examples=10 * SCALE, deadline=None)
@example(value=[])
@given(st.sampled_from(([], {}, ["mount"], {"a": 1})))
def test_bug_config_unhashable_namespace_type(value: Any) -> None:
    strict(rtconfig.parse, {"ociVersion": "1.0.0", "root": {"path": "r"},
                            "linux": {"namespaces": [{"type": value}]}}, BUNDLE)


@settings(max_examples=5 * SCALE, deadline=None)
@example(timeout=10**309)
@given(st.integers(10**309, 10**400))
def test_bug_config_huge_hook_timeout(timeout: int) -> None:
    raw = {"ociVersion": "1.0.0", "root": {"path": "r"}, "linux": {"namespaces": [{"type": "mount"}]},
           "hooks": {"prestart": [{"path": "/bin/true", "timeout": timeout}]}}
    strict(rtconfig.parse, raw, BUNDLE)


@settings(max_examples=10 * SCALE, deadline=None)
@example(where="sysctl", key="a\nb")
@example(where="annotations", key="a\nb")
@given(st.sampled_from(("sysctl", "annotations")), st.text(max_size=4).map(lambda s: s + "\n"))
def test_bug_config_message_keys(where: str, key: str) -> None:
    raw: dict[str, Any] = {"ociVersion": "1.0.0", "root": {"path": "r"},
                           "linux": {"namespaces": [{"type": "mount"}]}}
    if where == "sysctl":
        raw["linux"]["sysctl"] = {key: "1"}
    else:
        raw["annotations"] = {key: 1}
    strict(rtconfig.parse, raw, BUNDLE)


@settings(max_examples=20 * SCALE, deadline=None)
@example(key="fileMode", value="x")
@example(key="fileMode", value=None)
@example(key="major", value=2**32)
@given(st.sampled_from(("fileMode", "uid", "gid", "major", "minor")),
       st.sampled_from(("x", [], {}, None, float("nan"), float("inf"), 1.5, True, -1, 2**32, 2**64)))
def test_bug_config_devices_fields_unchecked(key: str, value: Any) -> None:
    """config.parse checks linux.devices[] fileMode/uid/gid/major/minor (runc: integers in
    range) and names the field; null fileMode/uid/gid means the default."""
    raw = copy.deepcopy(RICH_CONFIG)
    raw["linux"]["devices"][0][key] = value
    out = strict(rtconfig.parse, raw, BUNDLE)
    if value is None and key not in ("major", "minor"):
        assert out.value is not None
        strict(mounts.parse_devices, out.value.devices)
    else:
        assert out.error is not None and str(out.error).startswith(f"linux.devices[0].{key}:")


@settings(max_examples=5 * SCALE, deadline=None)
@example(key="a\nb")
@given(st.text(max_size=4).map(lambda s: "k" + s + "\n"))
def test_bug_cgroups_unified_key_message(key: str) -> None:
    strict(cgroups._parse, {"unified": {key: 1}})


# =======================================================================================
# 7. seccomp: the runtime's OCI check, and Docker-format profiles (--security-opt)


@settings(max_examples=300 * SCALE, deadline=None)
@given(JSON | mutated(SECCOMP))
def test_oci_seccomp_check(doc: Any) -> None:
    attempt(seccomp._check, doc)


_PROFILE = seccomp_profile.default_profile()
_SMALL_PROFILE: dict[str, Any] = {
    "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1,
    "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]}],
    "flags": ["SECCOMP_FILTER_FLAG_LOG"],
    "syscalls": [
        {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW",
         "args": [{"index": 0, "value": 1, "valueTwo": 0, "op": "SCMP_CMP_EQ"}]},
        {"name": "ptrace", "action": "SCMP_ACT_ALLOW",
         "includes": {"caps": ["CAP_SYS_PTRACE"], "minKernel": "4.8"}},
        {"names": ["clone"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38,
         "excludes": {"caps": ["SYS_ADMIN"], "arches": ["s390x"]}},
    ],
}  # fmt: skip


@settings(max_examples=300 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(JSON | mutated(_SMALL_PROFILE) | mutated(_PROFILE, max_mutations=2),
       st.lists(st.sampled_from(("CAP_SYS_ADMIN", "sys_ptrace", "NET_ADMIN", "")), max_size=3),
       st.sampled_from(("x86_64", "aarch64", "s390x", "riscv64")),
       st.tuples(st.integers(0, 7), st.integers(0, 20)))
def test_seccomp_profile(doc: Any, caps: list[str], arch: str, kernel: tuple[int, int]) -> None:
    """A --security-opt seccomp=PROFILE.json document: validated, resolved for a container,
    and the OCI object it gives must pass the runtime's check."""
    profile = attempt(seccomp_profile.validate_profile, doc).value
    if profile is None:
        return
    out = attempt(seccomp_profile.to_oci, profile, caps, arch, kernel=kernel).value
    if out is not None:
        check = attempt(seccomp._check, out)
        assert check.ok, f"a validated profile fails the runtime's check: {check.error}"


@settings(max_examples=10 * SCALE, deadline=None)
@example(doc={"defaultAction": "SCMP_ACT_ALLOW", "flags": [[]]})
@given(st.sampled_from(([], {}, [1])).map(lambda v: {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
    {"names": ["read"], "action": "SCMP_ACT_ALLOW", "args": [{"op": v, "index": 0}]}]}))
def test_bug_oci_seccomp_unhashable(doc: dict[str, Any]) -> None:
    strict(seccomp._check, doc)


@settings(max_examples=10 * SCALE, deadline=None)
@example(doc={"defaultAction": []})
@example(doc={"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
    {"names": ["read"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "².1"}}]})
@given(st.sampled_from(([], {}, [1])).map(lambda v: {"defaultAction": "SCMP_ACT_ALLOW",
                                                     "architectures": [v]}))
def test_bug_seccomp_profile(doc: dict[str, Any]) -> None:
    profile = strict(seccomp_profile.validate_profile, doc).value
    if profile is not None:
        strict(seccomp_profile.to_oci, profile, [], "x86_64", kernel=(6, 1))


# =======================================================================================
# 8. Other input from registries and files: token responses, WWW-Authenticate, subnets,
#    log records


@settings(max_examples=300 * SCALE, deadline=None)
@given(OCI_BYTES | st.builds(lambda t, e: dumps({"token": t, "expires_in": e}), JSON, JSON))
def test_token_response(body: bytes) -> None:
    out = attempt(auth.parse_token_response, body).value
    if out is not None:
        token, ttl = out
        assert isinstance(token, str) and token and ttl > 0


@settings(max_examples=5 * SCALE, deadline=None)
@example(body=b'{"token": "t", "expires_in": 1' + b"0" * 400 + b"}")
@example(body=b"[" * 100_000)
@given(st.integers(5000, 20_000).map(lambda n: b"[" * n))
def test_bug_token_response_limits(body: bytes) -> None:
    strict(auth.parse_token_response, body)


_TOKEN = st.text(string.ascii_letters + string.digits + "-_.", min_size=1, max_size=8)


@settings(max_examples=400 * SCALE, deadline=None)
@given(st.text(max_size=60) | st.text('Bearer realm="x",\\ =,\t', max_size=40))
def test_www_authenticate_any_text(header: str) -> None:
    for c in auth.parse_www_authenticate(header):  # never raises: bad pieces are skipped
        assert c.scheme and c.scheme == c.scheme.lower()
        assert all(k == k.lower() for k in c.params)


@settings(max_examples=300 * SCALE, deadline=None)
@given(_TOKEN, st.dictionaries(_TOKEN.map(str.lower), st.text(max_size=12), min_size=1, max_size=4))
def test_www_authenticate_round_trip(scheme: str, params: dict[str, str]) -> None:
    def quote(v: str) -> str:
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'

    header = f"{scheme} " + ", ".join(f"{k}={quote(v)}" for k, v in params.items())
    assert auth.parse_www_authenticate(header) == [auth.Challenge(scheme.lower(), params)]


@settings(max_examples=300 * SCALE, deadline=None)
@given(st.text(max_size=20) | st.text("0123456789./:", max_size=20) | st.builds("{}/{}".format, st.ip_addresses(v=4), st.integers(0, 33)))
def test_parse_subnet(text: str) -> None:
    net = attempt(parse_subnet, text).value
    if net is not None:
        assert net.version == 4 and net.prefixlen <= 30
        assert parse_subnet(str(net)) == net


@settings(max_examples=300 * SCALE, deadline=None)
@given(st.text(max_size=40) | st.builds(
    lambda t, s, f, x: f"{t} {s} {f} {x}", _TOKEN, st.sampled_from(("stdout", "stderr", "x")),
    st.sampled_from(("F", "P", "")), st.text(max_size=10)))
def test_log_records(record: str) -> None:
    line = logs.parse(record)
    if line is not None:
        assert line.stream in ("stdout", "stderr")
        t, s, kind = record.rstrip("\n").split(" ", 3)[:3]
        assert line.text.endswith("\n") == (kind == "F")


@settings(max_examples=200 * SCALE, deadline=None)
@given(st.lists(st.text(max_size=12) | st.sampled_from(("ALL", "net_admin", "CAP_KILL", "bogus")),
                max_size=3),
       st.lists(st.text(max_size=12) | st.sampled_from(("ALL", "chown", "CAP_KILL")), max_size=3))
def test_capability_flags(add: list[str], drop: list[str]) -> None:
    caps = attempt(spec.capabilities, add, drop).value
    if caps is not None:
        assert all(c.startswith("CAP_") or c == "ALL" for c in caps)
