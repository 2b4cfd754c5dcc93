"""``minirun system check``: the store's fsck.

Every write path of the store is ordered so that a crash leaves at worst something
*unreferenced* (a blob or layer no image names, a temp file) and never a record that
points at something half-written. This module verifies that claim on a real store and,
with ``repair``, removes what is unreferenced or half-written:

* blobs: each file's sha256 is its name (a corrupt blob is removed; images that need it
  are reported, since only a new pull or load can bring the content back);
* layers: ``layer.json`` and ``diff/`` present, the short link in ``layers/l/`` pointing
  at it; a layer no image uses;
* images: the manifest and config blobs and every layer they name are present;
* names: every tag in repositories.json names a stored image;
* temp files of processes that are gone;
* containers: a record that cannot be read, or whose image layers are gone; pins and
  names left by a container that is gone.

A blob or layer written by a pull still in progress is not referenced yet either: while a
pull or load runs (it holds ``Store.writing``), repair only removes unreferenced things
older than ``grace`` seconds (10 minutes by default); when none runs, all of them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from dataclasses import dataclass

from minirun.image.store import Store, _pid_alive, _remove, try_exclusive

GRACE = 600.0


@dataclass(frozen=True)
class Problem:
    """One finding: what kind, which thing, in words; whether repair removed it."""

    kind: str
    what: str
    detail: str
    repaired: bool = False


def _sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _old(path: str, grace: float) -> bool:
    try:
        return time.time() - os.lstat(path).st_mtime >= grace
    except FileNotFoundError:
        return False


def check(store: Store, *, repair: bool = False, grace: float = GRACE) -> list[Problem]:
    """All findings, repaired ones marked. Holds the store lock throughout."""
    out: list[Problem] = []
    if not store.root.is_dir():
        return out
    # No pull or load running (none holds Store.writing): nothing unreferenced can be
    # in the middle of being written, so no grace is needed for it.
    with try_exclusive(store.root / "writers.lock") as alone, store.lock():
        if alone:
            grace = 0.0
        out += _check_blobs(store, repair)
        live_layers, live_blobs = store._live()
        out += _check_unreferenced_blobs(store, live_blobs, repair, grace)
        out += _check_layers(store, live_layers, repair, grace)
        out += _check_images(store)
        out += _check_names(store, repair)
        out += _check_tmp(store, repair)
        out += _check_containers(store)
        out += _check_pins_and_names(store, repair)
    return out


def _check_blobs(store: Store, repair: bool) -> list[Problem]:
    out = []
    for name in sorted(os.listdir(store.blobs)):
        path = os.path.join(store.blobs, name)
        if _sha256_file(path) != name:
            if repair:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            out.append(Problem("corrupt-blob", f"sha256:{name}",
                               "its content does not match its digest", repair))  # fmt: skip
    return out


def _check_unreferenced_blobs(store: Store, live: set[str], repair: bool, grace: float) -> list[Problem]:
    out = []
    for name in sorted(os.listdir(store.blobs)):
        if f"sha256:{name}" in live:
            continue
        path = os.path.join(store.blobs, name)
        fix = repair and _old(path, grace)
        if fix:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        out.append(Problem("unreferenced-blob", f"sha256:{name}", "no image uses it", fix))
    return out


def _check_layers(store: Store, live: set[str], repair: bool, grace: float) -> list[Problem]:
    out = []
    for name in sorted(os.listdir(store.layers)):
        if name == "l" or len(name) != 64:
            continue
        diff_id = f"sha256:{name}"
        path = os.path.join(store.layers, name)
        try:
            info = json.loads(open(os.path.join(path, "layer.json"), "rb").read())
            link = os.path.join(store.links, info["link"])
        except (OSError, ValueError, KeyError, TypeError):
            fix = repair and _old(path, grace)
            if fix:
                _remove(store.layers / name)
            out.append(Problem("half-written-layer", diff_id, "no readable layer.json", fix))
            continue
        if not os.path.isdir(os.path.join(path, "diff")):
            out.append(Problem("broken-layer", diff_id, "its diff/ directory is missing"))
        if os.path.realpath(link) != os.path.realpath(os.path.join(path, "diff")):
            if repair:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(link)
                os.symlink(f"../{name}/diff", link)
            out.append(Problem("broken-link", diff_id, f"layers/l/{info['link']} does not "
                               "point at it", repair))  # fmt: skip
        if diff_id not in live:
            fix = repair and _old(path, grace)
            if fix:
                store._remove_layer(diff_id)
            out.append(Problem("unreferenced-layer", diff_id, "no image uses it", fix))
    return out


def _check_images(store: Store) -> list[Problem]:
    out = []
    for p in sorted(store.images_dir.glob("*.json")):
        image_id = f"sha256:{p.stem}"
        rec = store._load_image(image_id)
        if rec is None:
            out.append(Problem("unreadable-image", image_id, f"{p} cannot be read"))
            continue
        for digest, what in ((rec.manifest_digest, "manifest"), (rec.id, "config")):
            if not store.has_blob(digest):
                out.append(Problem("broken-image", image_id, f"its {what} blob {digest} is "
                                   "missing (pull or load it again)"))  # fmt: skip
        for layer in rec.layers:
            if not store.has_layer(layer.diff_id):
                out.append(Problem("broken-image", image_id, f"layer {layer.diff_id} is "
                                   "missing (pull or load it again)"))  # fmt: skip
    return out


def _check_names(store: Store, repair: bool) -> list[Problem]:
    repos = store._read_repos()
    dangling = {n: i for n, i in repos.items() if not store.has_image(i)}
    if dangling and repair:
        store._write_repos({n: i for n, i in repos.items() if n not in dangling})
    return [Problem("dangling-name", n, f"names {i}, which is not stored", repair)
            for n, i in sorted(dangling.items())]  # fmt: skip


def _check_tmp(store: Store, repair: bool) -> list[Problem]:
    out = []
    for entry in sorted(store.tmp.iterdir()) if store.tmp.is_dir() else []:
        pid_s = entry.name.split("-", 1)[0]
        if pid_s.isdigit() and int(pid_s) != os.getpid() and not _pid_alive(int(pid_s)):
            if repair:
                _remove(entry)
            out.append(Problem("temp", str(entry), f"left by process {pid_s}, which is gone",
                               repair))  # fmt: skip
    return out


def _check_containers(store: Store) -> list[Problem]:
    from minirun.container.records import Containers

    out = []
    containers = Containers(store)
    for cid in sorted(os.listdir(store.containers)) if store.containers.is_dir() else []:
        rec = containers._load(cid)
        if rec is None:
            if os.path.exists(os.path.join(store.containers, cid, "container.json")):
                out.append(Problem("unreadable-container", cid, "container.json cannot be read "
                                   "(remove that directory by hand)"))  # fmt: skip
            continue
        missing = [d for d in rec.lowerdirs if not os.path.isdir(d)]
        if missing:
            out.append(Problem("broken-container", cid, f"{len(missing)} of its image layers "
                               "are missing"))  # fmt: skip
    return out


def _check_pins_and_names(store: Store, repair: bool) -> list[Problem]:
    """A pin or a name whose container is gone (a crash inside `rm`, after the rename):
    it would keep an image from rmi, or a name from reuse, for nothing."""
    out = []
    for holder in sorted(os.listdir(store.pins)) if store.pins.is_dir() else []:
        if holder.startswith(".") or (store.containers / holder).is_dir():
            continue
        if repair:
            store.unpin(holder)
        out.append(Problem("stale-pin", holder, "keeps an image for a container that is gone",
                           repair))  # fmt: skip
    names = store.root / "names"
    for name in sorted(os.listdir(names)) if names.is_dir() else []:
        try:
            cid = os.readlink(names / name)
        except OSError:
            continue
        if (store.containers / cid).is_dir():
            continue
        if repair:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(names / name)
        out.append(Problem("stale-name", name, f"names container {cid[:12]}, which is gone",
                           repair))  # fmt: skip
    return out
