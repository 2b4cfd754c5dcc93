"""``load`` and ``save``: images as files, in the two formats the ecosystem writes.

* docker-archive (``docker save``, ``podman save``): ``manifest.json`` lists, per
  image, a ``Config`` file, ``RepoTags`` and ``Layers`` (tar files, usually uncompressed).
* OCI image layout (``skopeo copy oci:``, ``docker save`` since 25, ``buildah``):
  ``oci-layout``, ``index.json`` and ``blobs/sha256/...``; names come from the
  ``org.opencontainers.image.ref.name`` / ``io.containerd.image.name`` annotations.

Either may be a directory or a tar file (or a tar on stdin, which is spooled to the
store's tmp first: manifest.json may come after the layers). ``save`` writes one tar
that is both, as Docker 25+ does, so ``docker load``, ``podman load`` and
``skopeo copy docker-archive:``/``oci-archive:`` all read it.

Everything read from an archive is verified before the store takes it; a failed load
removes the blobs and layers it added that no image refers to.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import posixpath
import shutil
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

from minirun import events, faults
from minirun.errors import ArchiveError, InvalidReference, ManifestError
from minirun.humanize import human_size
from minirun.image import oci
from minirun.image import reference as refs
from minirun.image.compression import (
    CorruptData,
    decompressed_chunks,
    open_decompressed,
    sniff_archive,
    sniff_file,
)
from minirun.image.digest import hex_of, short_id
from minirun.image.store import ImageRecord, Store

Report = Callable[[str], None]
_JSON_LIMIT = 32 << 20  # no manifest or config is this big; refuse rather than fill memory


def _quiet(_: str) -> None:
    pass


@dataclass
class LoadedImage:
    record: ImageRecord
    names: list[str]  # familiar names it was tagged with; empty = loaded by ID only


# -- reading archives ----------------------------------------------------------------------


class _Source:
    """A read-only view of an archive's files by their relative names."""

    def open(self, name: str) -> BinaryIO:
        raise NotImplementedError

    def exists(self, name: str) -> bool:
        raise NotImplementedError

    def read_json(self, name: str) -> Any:
        with self.open(name) as f:
            data = f.read(_JSON_LIMIT + 1)
        if len(data) > _JSON_LIMIT:
            raise ArchiveError(f"{name}: larger than {_JSON_LIMIT >> 20} MiB; not an image archive")
        try:
            return json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ArchiveError(f"{name}: invalid JSON: {e}") from None
        except (RecursionError, ValueError):  # nested too deep, or an int of > 4300 digits
            raise ArchiveError(f"{name}: invalid JSON: beyond the parser's limits") from None


def _clean(name: str) -> str:
    """Archive member names are relative; anything that climbs out is refused."""
    if "\0" in name:
        raise ArchiveError(f"archive path {name!r} contains a NUL byte")
    norm = posixpath.normpath(name.lstrip("/"))
    if norm.startswith("../") or norm == ".." or norm == ".":
        raise ArchiveError(f"archive path {name!r} points outside the archive")
    return norm


class _DirSource(_Source):
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def _path(self, name: str) -> Path:
        try:
            p = (self.root / _clean(name)).resolve()
        except (OSError, ValueError) as e:
            raise ArchiveError(f"archive path {name!r}: {_reason(e)}") from None
        if p != self.root and self.root not in p.parents:
            raise ArchiveError(f"archive path {name!r} resolves outside {str(self.root)!r}")
        return p

    def open(self, name: str) -> BinaryIO:
        path = self._path(name)
        try:
            return open(path, "rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ArchiveError(f"{name!r}: missing from {str(self.root)!r}") from None
        except OSError as e:  # a name too long (ENAMETOOLONG), a permission...
            raise ArchiveError(f"{name!r}: cannot be read from {str(self.root)!r} ({_reason(e)})") from None

    def exists(self, name: str) -> bool:
        path = self._path(name)
        try:
            return path.is_file()
        except OSError:  # ENAMETOOLONG, EACCES: no such file that can be read
            return False


def _reason(e: BaseException) -> str:
    """An OSError's strerror (or the exception's text) as one line."""
    text = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
    return " ".join(text.split()) or type(e).__name__


class _TarSource(_Source):
    def __init__(self, path: Path) -> None:
        try:
            self.tar = tarfile.open(path, "r:")  # noqa: SIM115 - closed by close()
        except tarfile.TarError as e:
            raise ArchiveError(f"{path}: not a tar archive ({e})") from None
        self.members: dict[str, tarfile.TarInfo] = {}
        try:
            for m in self.tar:
                with contextlib.suppress(ArchiveError):
                    self.members[_clean(m.name)] = m
        except tarfile.TarError as e:
            raise ArchiveError(f"{path}: truncated or corrupt tar archive ({e})") from None

    def _member(self, name: str) -> tarfile.TarInfo:
        name = _clean(name)
        for _ in range(16):  # follow symlinks inside the archive (Docker 25 links legacy paths to blobs)
            m = self.members.get(name)
            if m is None:
                raise ArchiveError(f"{name!r}: missing from the archive")
            if not m.issym():
                return m
            name = _clean(posixpath.join(posixpath.dirname(name), m.linkname))
        raise ArchiveError(f"{name!r}: too many levels of symbolic links in the archive")

    def open(self, name: str) -> BinaryIO:
        m = self._member(name)
        f = self.tar.extractfile(m) if (m.isfile() or m.islnk()) else None
        if f is None:
            raise ArchiveError(f"{name!r}: not a regular file in the archive")
        return f  # type: ignore[return-value]

    def exists(self, name: str) -> bool:
        try:
            m = self._member(name)
        except ArchiveError:
            return False
        return m.isfile() or m.islnk()

    def close(self) -> None:
        self.tar.close()


@contextlib.contextmanager
def _open_source(store: Store, src: Path | BinaryIO) -> Iterator[_Source]:
    """The archive as a _Source. A tar on stdin is spooled to the store's tmp first; a
    compressed one (``docker save | gzip``; zstd, xz and bzip2 too, told by their magic
    bytes, as ``docker load`` does), file or stream, is decompressed there."""
    spooled: Path | None = None
    try:
        if isinstance(src, Path):
            if src.is_dir():
                yield _DirSource(src)
                return
            if not src.exists():
                raise ArchiveError(f"{src}: no such file or directory")
            path = src
            with open(src, "rb") as f:
                kind = sniff_archive(f.read(8))
                if kind != "none":
                    f.seek(0)
                    spooled = path = store.new_tmp(".load.tar")
                    _spool(f, path, kind, str(src))
        else:
            head = _read_head(src, 8)
            spooled = path = store.new_tmp(".load.tar")
            _spool(cast(BinaryIO, _Prefixed(head, src)), path, sniff_archive(head), "standard input")
            if path.stat().st_size == 0:
                raise ArchiveError("nothing to load: standard input was empty (use -i FILE)")
        tsrc = _TarSource(path)
        try:
            yield tsrc
        finally:
            tsrc.close()
    finally:
        if spooled is not None:
            with contextlib.suppress(FileNotFoundError):
                spooled.unlink()


def _spool(src: BinaryIO, path: Path, kind: str, what: str) -> None:
    """Copy ``src`` to ``path``, decompressing it as ``kind`` says ("none": as it is)."""
    with open(path, "wb") as out:
        if kind == "none":
            shutil.copyfileobj(src, out, 1 << 20)
            return
        try:
            for chunk in decompressed_chunks(src, kind):
                out.write(chunk)
        except CorruptData as e:
            raise ArchiveError(f"{what}: {e}; nothing was loaded") from None


def _read_head(src: BinaryIO, n: int) -> bytes:
    """The first ``n`` bytes of a stream (fewer only at its end; a pipe gives short reads)."""
    head = b""
    while len(head) < n and (b := src.read(n - len(head))):
        head += b
    return head


class _Prefixed:
    """A stream whose first bytes were read already (to tell its compression)."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self.head, self.rest = head, rest

    def read(self, n: int = -1) -> bytes:
        if not self.head:
            return self.rest.read(n)
        if n is None or n < 0:
            data, self.head = self.head + self.rest.read(), b""
            return data
        data, self.head = self.head[:n], self.head[n:]
        return data


# -- loading -------------------------------------------------------------------------------


class _Loader:
    def __init__(self, store: Store, source: _Source, report: Report) -> None:
        self.store = store
        self.src = source
        self.report = report
        self.new_layers: list[str] = []
        self.new_blobs: list[str] = []

    def blob(self, name: str, expected: str | None = None, size: int | None = None) -> str:
        """Copy one archive file into the blob store (verified); returns its digest."""
        if expected and self.store.has_blob(expected):
            return expected
        with self.src.open(name) as f:
            digest = self.store.put_blob_stream(f, expected, size, what=name)
        self.new_blobs.append(digest)
        faults.point("load.blob-written")
        return digest

    def layer(self, name: str, diff_id: str, expected: str | None, media_type: str | None) -> str:
        """Make sure layer ``diff_id`` is stored and its blob too; say which happened."""
        if self.store.has_layer(diff_id):
            # A docker-archive names no blob digest: reuse the blob the store already has
            # for this layer rather than keep a second (uncompressed) copy of it.
            known = self.store.layer_blob(diff_id) if expected is None else None
            if known and not self.src.exists(name):  # (exists() refuses a path that escapes)
                raise ArchiveError(f"{name!r}: missing from the archive")
            digest = known.digest if known else self.blob(name, expected)
            self.report(f"{short_id(diff_id)}: Already exists")
            return digest
        digest = self.blob(name, expected)
        info, new = self.store.add_layer(self.store.blob_path(digest), diff_id, media_type)
        if new:
            self.new_layers.append(diff_id)
        faults.point("load.layer-unpacked")
        self.report(f"{short_id(diff_id)}: Loading layer {human_size(info['size'])} ... done")
        return digest

    def undo(self) -> None:
        self.store.discard_unreferenced(self.new_layers, self.new_blobs)

    # docker-archive ------------------------------------------------------------------------

    def docker_archive(self) -> list[LoadedImage]:
        entries = self.src.read_json("manifest.json")
        if not isinstance(entries, list) or not entries:
            raise ArchiveError("manifest.json: expected a non-empty list of images")
        out = []
        for i, e in enumerate(entries):
            where = f"manifest.json entry {i}"
            if not isinstance(e, dict) or not isinstance(e.get("Config"), str) \
                    or not isinstance(e.get("Layers"), list):
                raise ArchiveError(f"{where}: needs Config (string) and Layers (list)")
            repo_tags = e.get("RepoTags")
            if repo_tags is None:
                repo_tags = []
            if not isinstance(repo_tags, list):
                raise ArchiveError(f"{where}: RepoTags must be a list of strings "
                                   f"(got {type(repo_tags).__name__})")
            tags = [_parse_tag(t, where) for t in repo_tags]
            with self.src.open(e["Config"]) as f:
                config_bytes = f.read(_JSON_LIMIT + 1)
            config = oci.ImageConfig.parse(config_bytes, f"{where} config")
            layer_names = e["Layers"]
            if len(layer_names) != len(config.diff_ids):
                raise ArchiveError(f"{where}: {len(layer_names)} layer files but the config lists "
                                   f"{len(config.diff_ids)} diff_ids")
            descs = []
            for name, diff_id in zip(layer_names, config.diff_ids, strict=True):
                if not isinstance(name, str):
                    raise ArchiveError(f"{where}: layer names must be strings")
                digest = self.layer(name, diff_id, None, None)
                descs.append(self._layer_descriptor(digest))
            out.append(self._finish(config_bytes, descs, tags))
        return out

    def _layer_descriptor(self, digest: str) -> oci.Descriptor:
        with open(self.store.blob_path(digest), "rb") as f:
            kind = sniff_file(f)
        mt = {"gzip": oci.OCI_LAYER_GZIP, "zstd": oci.OCI_LAYER_ZSTD}.get(kind, oci.OCI_LAYER)
        return oci.Descriptor(mt, digest, self.store.blob_path(digest).stat().st_size)

    def _finish(self, config_bytes: bytes, layers: list[oci.Descriptor],
                tags: list[refs.Reference]) -> LoadedImage:
        """A docker-archive has no manifest: write the OCI manifest it implies."""
        config_desc = oci.Descriptor(oci.OCI_CONFIG, "sha256:" + hashlib.sha256(config_bytes).hexdigest(),
                                     len(config_bytes))
        manifest = oci.Manifest(oci.OCI_MANIFEST, config_desc, layers)
        manifest_bytes = json.dumps(manifest.to_json(), separators=(",", ":")).encode()
        return self._add(manifest_bytes, config_bytes, tags)

    def _add(self, manifest_bytes: bytes, config_bytes: bytes, tags: list[refs.Reference]) -> LoadedImage:
        rec = self.store.add_image(manifest_bytes, config_bytes, tags)
        faults.point("load.image-recorded")
        names = [t.familiar() for t in tags]
        for n in names:
            self.report(f"Loaded image: {n}")
        if not names:
            self.report(f"Loaded image ID: {rec.id}")
        return LoadedImage(rec, names)

    # OCI layout ---------------------------------------------------------------------------

    def oci_layout(self) -> list[LoadedImage]:
        layout = self.src.read_json("oci-layout")
        if not isinstance(layout, dict) or "imageLayoutVersion" not in layout:
            raise ArchiveError("oci-layout: missing imageLayoutVersion")
        with self.src.open("index.json") as f:
            index = oci.Index.parse(f.read(_JSON_LIMIT + 1), "index.json")
        out = []
        for desc in index.manifests:
            tags = _tags_from_annotations(desc.annotations)
            out.append(self._oci_manifest(desc, tags))
        if not out:
            raise ArchiveError("index.json lists no images")
        return out

    def _oci_manifest(self, desc: oci.Descriptor, tags: list[refs.Reference], depth: int = 0) -> LoadedImage:
        name = f"blobs/sha256/{hex_of(desc.digest)}"
        with self.src.open(name) as f:
            data = f.read(_JSON_LIMIT + 1)
        actual = "sha256:" + hashlib.sha256(data).hexdigest()
        if actual != desc.digest:
            raise ArchiveError(f"{name}: digest mismatch (index says {desc.digest}, content is {actual})")
        mt = desc.media_type or oci.detect_media_type(oci.load_json(data, name))
        if mt in oci.INDEX_TYPES:  # a multi-platform image: load the host's entry
            if depth > 2:
                raise ArchiveError(f"{name}: indexes nested too deep")
            entry = oci.Index.parse(data, name).select(oci.host_platform())
            return self._oci_manifest(entry, tags, depth + 1)
        manifest = oci.Manifest.parse(data, name)
        cfg_name = f"blobs/sha256/{hex_of(manifest.config.digest)}"
        with self.src.open(cfg_name) as f:
            config_bytes = f.read(_JSON_LIMIT + 1)
        config = oci.ImageConfig.parse(config_bytes, cfg_name)
        if len(config.diff_ids) != len(manifest.layers):
            raise ArchiveError(f"{name}: {len(manifest.layers)} layers but the config lists "
                               f"{len(config.diff_ids)} diff_ids")
        for layer, diff_id in zip(manifest.layers, config.diff_ids, strict=True):
            self.layer(f"blobs/sha256/{hex_of(layer.digest)}", diff_id, layer.digest, layer.media_type)
        return self._add(data, config_bytes, tags)


def _parse_tag(text: Any, where: str) -> refs.Reference:
    if not isinstance(text, str):
        raise ArchiveError(f"{where}: RepoTags must be strings")
    try:
        return refs.parse(text)
    except InvalidReference as e:
        raise ArchiveError(f"{where}: {e}") from None


def _tags_from_annotations(ann: dict[str, str]) -> list[refs.Reference]:
    """containerd writes the full name in io.containerd.image.name; skopeo and others put a
    name or a bare tag in org.opencontainers.image.ref.name. A bare tag names no repository,
    so such an image is loaded by ID only (as Podman does)."""
    for key in (oci.ANNOTATION_DOCKER_NAME, oci.ANNOTATION_REF_NAME):
        text = ann.get(key)
        if text and ("/" in text or ":" in text):
            with contextlib.suppress(InvalidReference):
                return [refs.parse(text)]
    return []


def load(store: Store, src: Path | BinaryIO, report: Report = _quiet) -> list[LoadedImage]:
    """Load every image of a docker-archive or OCI layout (dir, tar, or tar stream)."""
    store.ensure()
    # writing(): until its images are recorded, prune must not take what the load wrote
    with store.writing(), _open_source(store, src) as source:
        loader = _Loader(store, source, report)
        try:
            if source.exists("manifest.json"):
                return _loaded(store, loader.docker_archive())
            if source.exists("index.json"):
                return _loaded(store, loader.oci_layout())
            raise ArchiveError("not an image archive: it has neither manifest.json (docker-archive) "
                               "nor index.json (OCI layout)")
        except ManifestError as e:
            loader.undo()
            raise ArchiveError(str(e)) from None
        except tarfile.TarError as e:  # a member's data cut short, after the index was read
            loader.undo()
            raise ArchiveError(f"truncated or corrupt tar archive ({e})") from None
        except BaseException:
            loader.undo()  # a failed or interrupted load leaves nothing behind
            raise


def _loaded(store: Store, images: list[LoadedImage]) -> list[LoadedImage]:
    """Docker's ``image load`` events, one per image."""
    for img in images:
        events.emit(store, "image", "load", img.record.id, {"name": img.record.id})
    return images


# -- saving --------------------------------------------------------------------------------


@dataclass
class _SaveItem:
    record: ImageRecord
    tags: list[str]  # familiar names to put in RepoTags


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mtime: float) -> None:
    ti = tarfile.TarInfo(name)
    ti.size = len(data)
    ti.mtime = int(mtime)
    ti.mode = 0o644
    tar.addfile(ti, io.BytesIO(data))


class _VerifyingReader:
    """Reads the uncompressed layer while hashing it, so save never writes a wrong layer."""

    def __init__(self, f: BinaryIO, want: str) -> None:
        self.f = f
        self.h = hashlib.sha256()
        self.want = want

    def read(self, n: int = -1) -> bytes:
        b = self.f.read(n)
        self.h.update(b)
        return b

    def check(self) -> None:
        got = "sha256:" + self.h.hexdigest()
        if got != self.want:
            raise ArchiveError(f"layer {short_id(self.want)} in the store is corrupt (its content "
                               f"hashes to {got}); remove the image and load or pull it again")


def save(store: Store, names: list[str], out: IO[bytes]) -> None:
    """Write the images as one tar that is a docker-archive and an OCI layout at once.
    Layers are written uncompressed (their blob is then their diff_id), as Docker does."""
    items: list[_SaveItem] = []
    for text in names:
        rec = store.resolve(text)
        tag: list[str] = []
        if not refs.is_image_id(text) and not all(c in "0123456789abcdef" for c in text):
            tag = [refs.parse(text).familiar()]
        else:
            tag = [refs.parse(t).familiar() for t in rec.repo_tags]
        for it in items:
            if it.record.id == rec.id:
                it.tags += [t for t in tag if t not in it.tags]
                break
        else:
            items.append(_SaveItem(rec, tag))
    now = time.time()
    written: set[str] = set()
    docker_manifest: list[dict[str, Any]] = []
    index_entries: list[dict[str, Any]] = []
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        _add_bytes(tar, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}', now)
        for item in items:
            rec = item.record
            config_bytes = store.read_blob(rec.id)
            layer_names = []
            layer_descs = []
            for layer in rec.layers:
                name = f"blobs/sha256/{hex_of(layer.diff_id)}"
                layer_names.append(name)
                layer_descs.append(oci.Descriptor(oci.OCI_LAYER, layer.diff_id, layer.size))
                if name in written:
                    continue
                ti = tarfile.TarInfo(name)
                ti.size, ti.mtime, ti.mode = layer.size, int(now), 0o644
                with open(store.blob_path(layer.digest), "rb") as raw:
                    reader = _VerifyingReader(open_decompressed(raw), layer.diff_id)
                    tar.addfile(ti, reader)
                    reader.check()
                written.add(name)
            cfg_name = f"blobs/sha256/{hex_of(rec.id)}"
            if cfg_name not in written:
                _add_bytes(tar, cfg_name, config_bytes, now)
                written.add(cfg_name)
            manifest = oci.Manifest(oci.OCI_MANIFEST,
                                    oci.Descriptor(oci.OCI_CONFIG, rec.id, len(config_bytes)), layer_descs)
            mbytes = json.dumps(manifest.to_json(), separators=(",", ":")).encode()
            mdigest = "sha256:" + hashlib.sha256(mbytes).hexdigest()
            mname = f"blobs/sha256/{hex_of(mdigest)}"
            if mname not in written:
                _add_bytes(tar, mname, mbytes, now)
                written.add(mname)
            docker_manifest.append({"Config": cfg_name, "RepoTags": item.tags, "Layers": layer_names})
            tags_or_none: list[str | None] = list(item.tags) or [None]
            for t in tags_or_none:
                ann = {}
                if t:
                    full = refs.parse(t)
                    ann = {oci.ANNOTATION_DOCKER_NAME: str(full), oci.ANNOTATION_REF_NAME: full.tag or "latest"}
                index_entries.append({"mediaType": oci.OCI_MANIFEST, "digest": mdigest,
                                      "size": len(mbytes), **({"annotations": ann} if ann else {})})
        _add_bytes(tar, "index.json", json.dumps({"schemaVersion": 2, "mediaType": oci.OCI_INDEX,
                                                  "manifests": index_entries}).encode(), now)
        _add_bytes(tar, "manifest.json", json.dumps(docker_manifest).encode(), now)
    for item in items:
        events.emit(store, "image", "save", item.record.id, {"name": item.record.id})


def save_to_file(store: Store, names: list[str], path: Path) -> None:
    """save() into a temp file next to ``path``, renamed only when complete."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    if not path.parent.is_dir():
        raise ArchiveError(f"cannot write {path}: no such directory {path.parent}")
    try:
        with open(tmp, "wb") as f:
            save(store, names, f)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
