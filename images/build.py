"""The offline images as OCI image layouts, built from their Containerfiles.

    python images/build.py OUTDIR            (as root: busybox-edit has a RUN step)

images/<image>/Containerfile (and the files beside it) define the images; this builds
them the way ``make images`` does — contexts from images/context.py, minirun's builder
(minirun.image.builder, ``--network none``) into a throw-away store — and writes one OCI
layout dir per image (OUTDIR/busybox, OUTDIR/busybox-extra, OUTDIR/busybox-edit) for the
test fixtures and the benchmarks. SOURCE_DATE_EPOCH is fixed (minirun.image.build.EPOCH),
so every build of the same host busybox gives the same image IDs, and the derived images
share busybox's layer byte for byte (loading them says "Already exists" for it).
"""

from __future__ import annotations

import atexit
import gzip
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from images.context import IMAGES, find_busybox, make_contexts  # noqa: E402
from minirun.image import build as b  # noqa: E402

if TYPE_CHECKING:
    from minirun.image.store import Store

__all__ = ["IMAGES", "build_all", "busybox_layer", "find_busybox"]

HERE = Path(__file__).resolve().parent
_built: dict[str, Path] = {}  # host busybox -> a dir holding the layouts (this process)


def _write_layout(store: Store, name: str, dest: Path) -> None:
    rec = store.resolve(f"{name}:latest")
    blobs = {d: store.read_blob(d) for d in (rec.id, *(layer.digest for layer in rec.layers))}
    img = b.BuiltImage(f"{name}:latest", store.read_blob(rec.manifest_digest), blobs[rec.id], blobs)
    b.write_oci_layout(dest, [img])


def _build(dest: Path, busybox: Path) -> None:
    from minirun.errors import MinirunError
    from minirun.image.builder import BuildOptions, build
    from minirun.image.store import Store  # noqa: F811 (the real one, at run time)

    with tempfile.TemporaryDirectory(prefix="minirun-images-") as tmp:
        contexts = make_contexts(Path(tmp) / "contexts", busybox)
        store = Store(Path(tmp) / "store")
        for name in IMAGES:
            lines: list[str] = []
            opts = BuildOptions(context=contexts[name], dockerfile=contexts[name] / "Containerfile",
                                tags=[f"{name}:latest"], network="none",
                                build_args={"SOURCE_DATE_EPOCH": str(b.EPOCH)})
            try:
                build(store, opts, lines.append)
            except MinirunError as e:
                tail = "\n".join(lines[-40:])
                raise RuntimeError(f"building {name} from images/{name}/Containerfile: {e}\n{tail}") from None
            _write_layout(store, name, dest / name)


def _layouts(busybox: Path | None, reuse: bool) -> Path:
    bb = busybox or find_busybox()
    if reuse and str(bb) in _built:
        return _built[str(bb)]
    dest = Path(tempfile.mkdtemp(prefix="minirun-layouts-"))
    atexit.register(shutil.rmtree, dest, True)
    _build(dest, bb)
    if reuse:
        _built[str(bb)] = dest
    return dest


def build_all(out: Path, busybox: Path | None = None, *, reuse: bool = True) -> list[Path]:
    """OUT/<image> for each image (replaced if there). The images are built once per
    process and copied (``reuse=False``: built again, for the reproducibility test)."""
    built = _layouts(busybox, reuse)
    paths = []
    for name in IMAGES:
        dest = out / name
        if dest.exists():
            shutil.rmtree(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(built / name, dest)
        paths.append(dest)
    return paths


def busybox_layer(busybox: Path | None = None) -> b.Layer:
    """busybox's one layer, as built from its Containerfile, for crafting images on top of
    it with minirun.image.build (the same blob: its digest is the built image's)."""
    layout = _layouts(busybox, True) / "busybox"
    blobs = layout / "blobs" / "sha256"
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads((blobs / index["manifests"][0]["digest"].split(":", 1)[1]).read_bytes())
    config = json.loads((blobs / manifest["config"]["digest"].split(":", 1)[1]).read_bytes())
    (desc,) = manifest["layers"]
    blob = (blobs / desc["digest"].split(":", 1)[1]).read_bytes()
    created_by = next(h["created_by"] for h in config["history"] if not h.get("empty_layer"))
    layer = b.Layer(gzip.decompress(blob), created_by)
    layer.blob = blob
    return layer


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    for p in build_all(ap.parse_args().out):
        print(p)


if __name__ == "__main__":
    main()
