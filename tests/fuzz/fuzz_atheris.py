"""Coverage-guided fuzzing (atheris, libFuzzer) of the parsers that read untrusted bytes:
a layer tar, a whole image archive, manifests/indexes/configs, and an OCI runtime
config.json. The Hypothesis tests (tests/unit/test_fuzz.py) generate structured input;
these mutate raw bytes, guided by which branches of minirun they reach.

The property is the Hypothesis tests' one: every input either parses or raises a typed
:class:`MinirunError` whose message is one line, and unpacking writes nothing outside
its own directory. Anything else is a crash, which libFuzzer reports with the input.

    python tests/fuzz/fuzz_atheris.py layer -max_total_time=60     # one target
    make fuzz                                                     # all, plus Hypothesis x20

Nothing here needs root; every write goes to a temp dir made for one input.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import sys
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["minirun"]):
    from minirun.errors import MinirunError
    from minirun.image import archive, layers, oci
    from minirun.image.store import Store
    from minirun.runtime import config as rtconfig

# libFuzzer ends the process with exit(): no Python cleanup runs, so the work dirs live
# under one known dir that `make fuzz` removes (inputs are cleaned up one by one anyway).
BASE = Path(os.environ.get("MINIRUN_FUZZ_DIR") or Path(tempfile.gettempdir()) / "minirun-fuzz")
SCRATCH = BASE / f"scratch-{os.getpid()}"


def _one_line(e: MinirunError) -> None:
    msg = str(e)
    if not msg.strip() or "\n" in msg or "\r" in msg:
        raise AssertionError(f"{type(e).__name__} message is not one line: {msg!r}")


def _outside_untouched(before: set[str]) -> None:
    after = set(os.listdir(SCRATCH))
    if after != before:
        raise AssertionError(f"written outside the target dir: {sorted(after - before)}")


def fuzz_layer(data: bytes) -> None:
    work = Path(tempfile.mkdtemp(dir=SCRATCH))
    dest = work / "diff"
    dest.mkdir()
    before = set(os.listdir(SCRATCH))
    try:
        layers.unpack_layer(io.BytesIO(data), dest, name="fuzz")
    except MinirunError as e:
        _one_line(e)
    finally:
        _outside_untouched(before)
        if set(os.listdir(work)) != {"diff"}:
            raise AssertionError(f"written beside the layer dir: {os.listdir(work)}")
        shutil.rmtree(work)


def fuzz_archive(data: bytes) -> None:
    work = Path(tempfile.mkdtemp(dir=SCRATCH))
    try:
        archive.load(Store(work / "store"), io.BytesIO(data))
    except MinirunError as e:
        _one_line(e)
    finally:
        shutil.rmtree(work)


def fuzz_manifest(data: bytes) -> None:
    for parse in (oci.Manifest.parse, oci.Index.parse, oci.ImageConfig.parse):
        try:
            parse(data)
        except MinirunError as e:
            _one_line(e)


def fuzz_runtime_config(data: bytes) -> None:
    try:
        raw = json.loads(data)
    except (ValueError, RecursionError):
        return  # not JSON: the runtime's reader refuses it before parse
    try:
        rtconfig.parse(raw, "/fuzz-bundle")
    except MinirunError as e:
        _one_line(e)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "layer": fuzz_layer,
    "archive": fuzz_archive,
    "manifest": fuzz_manifest,
    "runtime-config": fuzz_runtime_config,
}


def _tar(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, body in members.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(body)
            tf.addfile(ti, io.BytesIO(body))
    return buf.getvalue()


def seeds(target: str) -> list[bytes]:
    """A few valid inputs to start from: mutations of valid input reach deep branches."""
    layer = _tar({"etc/hostname": b"fuzz\n", "bin/.wh.ls": b"", "usr/.wh..wh..opq": b""})
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["sh"]},
                         "rootfs": {"type": "layers", "diff_ids": []}}).encode()  # fmt: skip
    manifest = json.dumps({"schemaVersion": 2, "mediaType": oci.OCI_MANIFEST,
                           "config": {"mediaType": oci.OCI_CONFIG, "digest": "sha256:" + "a" * 64, "size": 2},
                           "layers": []}).encode()  # fmt: skip
    if target == "layer":
        return [layer]
    if target == "archive":
        docker = [{"Config": "c.json", "RepoTags": ["fuzz:1"], "Layers": ["l.tar"]}]
        return [_tar({"manifest.json": json.dumps(docker).encode(), "c.json": config, "l.tar": layer})]
    if target == "manifest":
        return [manifest, config]
    return [json.dumps({"ociVersion": "1.0.2", "process": {"args": ["sh"], "cwd": "/"},
                        "root": {"path": "rootfs"}, "linux": {"namespaces": [{"type": "mount"}]}}).encode()]


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: {sys.argv[0]} {{{'|'.join(TARGETS)}}} [libFuzzer options]")
    target = sys.argv.pop(1)
    SCRATCH.mkdir(parents=True, exist_ok=True)
    corpus = BASE / f"corpus-{target}"
    corpus.mkdir(exist_ok=True)
    for i, seed in enumerate(seeds(target)):
        (corpus / f"seed-{i}").write_bytes(seed)
    atheris.Setup([*sys.argv, str(corpus)], TARGETS[target])
    atheris.Fuzz()


if __name__ == "__main__":
    main()
