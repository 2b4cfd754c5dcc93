"""The content-addressed image store (default /var/lib/minirun).

::

    blobs/sha256/<hex>        manifests, configs, compressed layers; only ever verified content
    layers/<hex>/diff/        one unpacked layer, keyed by its diff_id: an overlayfs lowerdir
    layers/<hex>/layer.json   {"diff_id", "size", "link"}
    layers/l/<link>           short link -> ../<hex>/diff (keeps overlay's mount options short)
    images/<hex>.json         one image, keyed by its ID (= config digest, as in Docker)
    repositories.json         "docker.io/library/busybox:latest" -> image ID
    tmp/<pid>-<rand>          partial downloads and unpacks; renamed into place when complete

Every write is a write to ``tmp`` then a rename, so a crash or Ctrl-C leaves either
the old or the new state. Metadata changes hold an exclusive ``flock`` on ``lock``;
unpacking a layer holds ``locks/<hex>`` only, so two pulls of different layers overlap
while two unpacks of the same layer do not. ``tmp`` entries of dead processes are
swept when the store is opened for writing.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, BinaryIO

from minirun import events
from minirun.errors import DigestMismatch, ImageInUse, ImageNotFound, InvalidReference, StoreError
from minirun.image import reference as refs
from minirun.image.digest import check_digest, hex_of, short_id

if TYPE_CHECKING:
    from minirun.image import oci

DEFAULT_ROOT = "/var/lib/minirun"
_LINK_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_CHUNK = 1 << 20


def default_root() -> Path:
    return Path(os.environ.get("MINIRUN_ROOT") or DEFAULT_ROOT)


@dataclass(frozen=True)
class LayerRef:
    """One layer of an image: its blob (compressed) and its unpacked dir (diff_id)."""

    digest: str
    diff_id: str
    size: int  # uncompressed bytes
    media_type: str
    link: str  # name under layers/l/


@dataclass
class ImageRecord:
    """One stored image (images/<hex>.json): its manifest, config and layers."""

    id: str  # "sha256:<hex>" of the config blob
    manifest_digest: str
    manifest_media_type: str
    layers: list[LayerRef]
    created: str  # from the image config (RFC 3339)
    added: float  # when it entered this store
    repo_tags: list[str] = field(default_factory=list)  # filled in from repositories.json
    repo_digests: list[str] = field(default_factory=list)

    @property
    def size(self) -> int:
        return sum(layer.size for layer in self.layers)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("repo_tags")
        d.pop("repo_digests")
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ImageRecord:
        layers = [LayerRef(**layer) for layer in d["layers"]]
        return cls(d["id"], d["manifest_digest"], d["manifest_media_type"], layers,
                   d.get("created", ""), d.get("added", 0.0))


@dataclass(frozen=True)
class Removal:
    """One thing rmi or prune did: Untagged / Deleted (Docker's words) a name, an image, a
    layer or a blob (``kind``; reports list all but blobs); ``size``: the bytes freed."""

    action: str
    what: str
    size: int = 0
    kind: str = "name"

    @property
    def listed(self) -> bool:
        return self.kind != "blob"


def atomic_write(path: Path, data: bytes, tmpdir: Path | None = None) -> None:
    """Write then rename: readers see the old file or the new one, never half of one.
    In the store's tmp the name starts with ``<pid>-`` so a sweep removes it if we die."""
    if tmpdir is not None:
        tmp = tmpdir / f"{os.getpid()}-{os.urandom(4).hex()}.{path.name}"
    else:
        tmp = path.parent / f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@contextlib.contextmanager
def file_lock(path: Path, shared: bool = False) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing drops the lock


@contextlib.contextmanager
def try_exclusive(path: Path) -> Iterator[bool]:
    """Hold ``path``'s lock exclusively if nobody holds it now; yields whether we do."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
        else:
            yield True
    finally:
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class HashingWriter:
    """Copies a stream to a file while hashing it; the blob's digest is known at the end."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f = f
        import hashlib

        self.h = hashlib.sha256()
        self.size = 0

    def write(self, b: bytes) -> int:
        self.h.update(b)
        self.size += len(b)
        return self.f.write(b)

    @property
    def digest(self) -> str:
        return "sha256:" + self.h.hexdigest()


class Store:
    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root) if root is not None else default_root()
        self.blobs = self.root / "blobs" / "sha256"
        self.layers = self.root / "layers"
        self.links = self.layers / "l"
        self.images_dir = self.root / "images"
        self.tmp = self.root / "tmp"
        self.locks = self.root / "locks"
        self.containers = self.root / "containers"  # owned by container.records
        self.pins = self.root / "pins"  # <holder id> -> the image ID it keeps from rmi
        self._repos_path = self.root / "repositories.json"
        self._ready = False

    # -- set-up and locking -------------------------------------------------------------

    def ensure(self) -> None:
        """Create the layout (once per process) and sweep what dead writers left in tmp."""
        if self._ready:
            return
        try:
            for d in (self.blobs, self.links, self.images_dir, self.tmp, self.locks, self.containers,
                      self.pins):
                d.mkdir(parents=True, exist_ok=True)
            os.chmod(self.root, 0o711)
        except PermissionError:
            raise StoreError(f"cannot write the store at {self.root} (run as root, or set MINIRUN_ROOT)") from None
        self._ready = True
        self._sweep_tmp()

    def _sweep_tmp(self) -> None:
        for entry in self.tmp.iterdir():
            pid_s = entry.name.split("-", 1)[0]
            if pid_s.isdigit() and int(pid_s) != os.getpid() and not _pid_alive(int(pid_s)):
                _remove(entry)

    def lock(self) -> contextlib.AbstractContextManager[None]:
        self.ensure()
        return file_lock(self.root / "lock")

    def writing(self) -> contextlib.AbstractContextManager[None]:
        """Held (shared) by a pull or load for its whole run: until it records its image,
        the blobs and layers it wrote are referenced by nothing. A sweep of everything
        unreferenced (prune, and rmi when no writer runs) needs it exclusively, so it never
        deletes them. Take it before :meth:`lock`, never inside it."""
        self.ensure()
        return file_lock(self.root / "writers.lock", shared=True)

    def _no_writers(self) -> contextlib.AbstractContextManager[None]:
        """Wait until no pull or load runs, and keep new ones out (see :meth:`writing`)."""
        self.ensure()
        return file_lock(self.root / "writers.lock")

    def new_tmp(self, suffix: str = "") -> Path:
        """A fresh path in tmp, named after this process so a sweep can tell it is orphaned."""
        self.ensure()
        return self.tmp / f"{os.getpid()}-{os.urandom(8).hex()}{suffix}"

    # -- blobs ------------------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        return self.blobs / hex_of(check_digest(digest, "blob"))

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def read_blob(self, digest: str) -> bytes:
        try:
            return self.blob_path(digest).read_bytes()
        except FileNotFoundError:
            raise StoreError(f"blob {digest} is missing from the store") from None

    def put_blob(self, data: bytes, expected: str | None = None, what: str = "blob") -> str:
        import hashlib

        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if expected is not None and digest != expected:
            raise DigestMismatch(what, expected, digest)
        path = self.blob_path(digest)
        if not path.exists():
            self.ensure()
            atomic_write(path, data, self.tmp)
        return digest

    def put_blob_stream(self, src: BinaryIO, expected: str | None = None,
                        expected_size: int | None = None, what: str = "blob") -> str:
        """Stream into tmp while hashing; only verified content is renamed into blobs/."""
        tmp = self.new_tmp(".blob")
        try:
            with open(tmp, "wb") as f:
                w = HashingWriter(f)
                while chunk := src.read(_CHUNK):
                    w.write(chunk)
            if expected_size is not None and w.size != expected_size:
                raise DigestMismatch(f"{what} (size {w.size}, expected {expected_size})",
                                     expected or "?", w.digest)
            if expected is not None and w.digest != expected:
                raise DigestMismatch(what, expected, w.digest)
            os.replace(tmp, self.blob_path(w.digest))
            return w.digest
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    # -- layers -----------------------------------------------------------------------------

    def layer_path(self, diff_id: str) -> Path:
        return self.layers / hex_of(check_digest(diff_id, "diff_id"))

    def layer_dir(self, diff_id: str) -> Path:
        """The unpacked layer: what overlayfs gets as a lowerdir."""
        return self.layer_path(diff_id) / "diff"

    def has_layer(self, diff_id: str) -> bool:
        return (self.layer_path(diff_id) / "layer.json").is_file()

    def layer_info(self, diff_id: str) -> dict[str, Any]:
        try:
            info: dict[str, Any] = json.loads((self.layer_path(diff_id) / "layer.json").read_bytes())
            return info
        except FileNotFoundError:
            raise StoreError(f"layer {diff_id} is missing from the store") from None

    def add_layer(self, blob: Path, diff_id: str, media_type: str | None = None) -> tuple[dict[str, Any], bool]:
        """Unpack a verified blob as the layer ``diff_id`` unless it is there already.
        Returns (layer info, True if it was new). The unpacked stream's digest must be
        ``diff_id``; otherwise nothing is kept."""
        from minirun.image.layers import unpack_layer  # the unpacker is only needed here

        self.ensure()
        final = self.layer_path(diff_id)
        with file_lock(self.locks / hex_of(diff_id)):
            if self.has_layer(diff_id):
                return self.layer_info(diff_id), False
            work = self.new_tmp(".layer")
            try:
                (work / "diff").mkdir(parents=True)
                with open(blob, "rb") as src:
                    res = unpack_layer(src, work / "diff", media_type=media_type, name=diff_id[:19])
                if res.diff_id != diff_id:
                    raise DigestMismatch(f"layer {short_id(diff_id)} (uncompressed)", diff_id, res.diff_id)
                link = "".join(_LINK_ALPHABET[b % 32] for b in os.urandom(12))
                info = {"diff_id": diff_id, "size": res.size, "link": link}
                (work / "layer.json").write_text(json.dumps(info))
                if final.exists():  # a half-removed layer from a crash: it has no layer.json
                    _remove(final)
                # The link first: a crash between the two leaves a dangling link, never a
                # layer (has_layer() true) whose short link is missing.
                os.symlink(f"../{hex_of(diff_id)}/diff", self.links / link)
                try:
                    os.rename(work, final)
                except BaseException:
                    (self.links / link).unlink()
                    raise
                return info, True
            finally:
                if work.exists():
                    _remove(work)

    def _remove_layer(self, diff_id: str) -> None:
        path = self.layer_path(diff_id)
        with file_lock(self.locks / hex_of(diff_id)):
            link = None
            with contextlib.suppress(FileNotFoundError, StoreError):
                link = self.links / self.layer_info(diff_id)["link"]
            if path.exists():
                # Rename first: the layer vanishes at once (a crash now leaves no layer that
                # looks whole but has lost its link; add_layer orders it the other way round),
                # the slow delete happens in tmp.
                doomed = self.new_tmp(".rm")
                os.rename(path, doomed)
                _remove(doomed)
            if link is not None:
                with contextlib.suppress(FileNotFoundError):
                    link.unlink()
        with contextlib.suppress(FileNotFoundError):
            (self.locks / hex_of(diff_id)).unlink()

    # -- images and names -------------------------------------------------------------------

    def _image_path(self, image_id: str) -> Path:
        return self.images_dir / f"{hex_of(image_id)}.json"

    def has_image(self, image_id: str) -> bool:
        return self._image_path(image_id).is_file()

    def _read_repos(self) -> dict[str, str]:
        try:
            data: dict[str, str] = json.loads(self._repos_path.read_bytes())
            return data
        except FileNotFoundError:
            return {}

    def _write_repos(self, repos: dict[str, str]) -> None:
        atomic_write(self._repos_path, json.dumps(repos, indent=1, sort_keys=True).encode(), self.tmp)

    def add_image(self, manifest_bytes: bytes, config_bytes: bytes,
                  tags: Sequence[refs.Reference] = (), repo_digest_names: Sequence[str] = ()) -> ImageRecord:
        """Record an image whose blobs and layers are already in the store, and tag it.
        Verifies that the config's diff_ids match the layers the manifest names."""
        import hashlib

        from minirun.image import oci

        manifest = oci.Manifest.parse(manifest_bytes)
        config = oci.ImageConfig.parse(config_bytes)
        if len(config.diff_ids) != len(manifest.layers):
            raise StoreError(f"image config lists {len(config.diff_ids)} layers, manifest {len(manifest.layers)}")
        config_digest = "sha256:" + hashlib.sha256(config_bytes).hexdigest()
        if config_digest != manifest.config.digest:  # checked before anything is written
            raise DigestMismatch("image config", manifest.config.digest, config_digest)
        with self.lock():
            layers = []
            for desc, diff_id in zip(manifest.layers, config.diff_ids, strict=True):
                if not self.has_layer(diff_id) or not self.has_blob(desc.digest):
                    raise StoreError(f"layer {short_id(diff_id)} vanished while the image was added; try again")
                info = self.layer_info(diff_id)
                layers.append(LayerRef(desc.digest, diff_id, info["size"], desc.media_type, info["link"]))
            # Under the lock, so a concurrent rmi's garbage collection cannot take them
            # between their write and the image record that makes them live.
            manifest_digest = self.put_blob(manifest_bytes)
            self.put_blob(config_bytes, config_digest, "image config")
            rec = ImageRecord(config_digest, manifest_digest, manifest.media_type, layers,
                              config.created, time.time())
            path = self._image_path(rec.id)
            if path.exists():  # the same image again: keep when it first came
                rec.added = ImageRecord.from_json(json.loads(path.read_bytes())).added
            atomic_write(path, json.dumps(rec.to_json()).encode(), self.tmp)
            repos = self._read_repos()
            for ref in tags:
                repos[str(ref.with_tag(ref.tag or refs.DEFAULT_TAG))] = rec.id
            for name in repo_digest_names:
                repos[f"{name}@{manifest_digest}"] = rec.id
            self._write_repos(repos)
        return self._with_names(rec, repos)

    def _with_names(self, rec: ImageRecord, repos: dict[str, str]) -> ImageRecord:
        rec.repo_tags = sorted(k for k, v in repos.items() if v == rec.id and "@" not in k)
        rec.repo_digests = sorted(k for k, v in repos.items() if v == rec.id and "@" in k)
        return rec

    def _load_image(self, image_id: str) -> ImageRecord | None:
        try:
            return ImageRecord.from_json(json.loads(self._image_path(image_id).read_bytes()))
        except FileNotFoundError:
            return None

    def images(self) -> list[ImageRecord]:
        if not self.images_dir.is_dir():
            return []
        repos = self._read_repos()
        out = []
        for p in self.images_dir.glob("*.json"):
            rec = self._load_image("sha256:" + p.stem)
            if rec:
                out.append(self._with_names(rec, repos))
        out.sort(key=lambda r: r.added, reverse=True)
        return out

    def resolve(self, text: str) -> ImageRecord:
        """Find an image by name[:tag], name@digest, full ID or a unique ID prefix (>= 4 hex).
        A name wins over an ID prefix, as in Docker: ``rmi beef`` must not delete the image
        whose ID starts with beef when an image is called beef."""
        repos = self._read_repos()
        image_id = None if refs.is_image_id(text) else self._image_id_by_name(text, repos)
        rec = self._load_image(image_id) if image_id else None
        if rec is not None:
            return self._with_names(rec, repos)
        candidate = text[7:] if text.startswith("sha256:") else text
        if all(c in "0123456789abcdef" for c in candidate) and len(candidate) >= 4:
            matches = [p.stem for p in self.images_dir.glob(f"{candidate}*.json")] if self.images_dir.is_dir() else []
            if len(matches) == 1:
                rec = self._load_image("sha256:" + matches[0])
                if rec:
                    return self._with_names(rec, repos)
            if len(matches) > 1:
                raise StoreError(f"image ID prefix {text!r} is ambiguous; give more characters")
        raise ImageNotFound(text)

    @staticmethod
    def _image_id_by_name(text: str, repos: dict[str, str]) -> str | None:
        try:
            ref = refs.parse(text)
        except InvalidReference:
            return None
        image_id = repos.get(str(ref))
        if image_id is None and ref.digest and ref.tag:  # name:tag@digest: the digest decides
            image_id = repos.get(f"{ref.name}@{ref.digest}")
        return image_id

    def tag(self, source: str, target: refs.Reference) -> ImageRecord:
        rec = self.resolve(source)
        with self.lock():
            repos = self._read_repos()
            repos[str(target.with_tag(target.tag or refs.DEFAULT_TAG))] = rec.id
            self._write_repos(repos)
        events.emit(self, "image", "tag", rec.id, {"name": target.with_tag(target.tag or refs.DEFAULT_TAG).familiar()})
        return self._with_names(rec, repos)

    def add_repo_digest(self, image_id: str, name: str, digest: str) -> None:
        """Record ``name@digest`` for a stored image (pull of a multi-platform index, push):
        the digest a registry knows the image by, which may be an index's."""
        check_digest(digest, "repo digest")
        with self.lock():
            if self._load_image(image_id) is None:
                raise ImageNotFound(image_id)
            repos = self._read_repos()
            if repos.get(f"{name}@{digest}") != image_id:
                repos[f"{name}@{digest}"] = image_id
                self._write_repos(repos)

    def pin(self, holder: str, image_id: str) -> None:
        """Keep ``image_id`` (and its layers) from ``rmi`` while ``holder`` (a container)
        exists. Call under :meth:`lock`, after checking the image is still there. The store
        knows its users only by these pins: it never reads the users' own records."""
        self.ensure()
        tmp = self.pins / f".{holder}.{os.getpid()}"
        tmp.write_text(image_id)
        os.replace(tmp, self.pins / holder)

    def unpin(self, holder: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.pins / holder).unlink()

    def pinned_by(self, image_id: str) -> list[str]:
        """The holders (container IDs) that keep this image."""
        out = []
        if self.pins.is_dir():
            for p in self.pins.iterdir():
                try:
                    if not p.name.startswith(".") and p.read_text() == image_id:
                        out.append(p.name)
                except OSError:
                    continue
        return sorted(out)

    def remove_image(self, text: str, force: bool = False) -> list[Removal]:
        """``rmi``: untag a name, and delete the image when no name is left. Layers go only
        when no other image uses them. By ID, an image with several names needs -f."""
        rec = self.resolve(text)
        out: list[Removal] = []
        with self.lock():
            repos = self._read_repos()
            names = [k for k, v in repos.items() if v == rec.id]
            by_name = not refs.is_image_id(text) and self._image_id_by_name(text, repos) == rec.id
            users = self.pinned_by(rec.id)
            if by_name:
                ref = str(refs.parse(text))
                untag = [ref] if ref in repos else []
                if len([n for n in names if "@" not in n]) <= 1:
                    untag = names  # last tag: its digest references go with it
            else:
                if len([n for n in names if "@" not in n]) > 1 and not force:
                    raise ImageInUse(f"unable to delete {short_id(rec.id)} (must be forced): "
                                     "image is referenced in multiple repositories")
                untag = names
            remaining = [n for n in names if n not in untag]
            if users and not remaining and not force:
                raise ImageInUse(f"unable to remove image {text}: container {users[0][:12]} is using "
                                 f"its referenced image {short_id(rec.id)} (remove the container first, or use -f)")
            for n in untag:
                del repos[n]
                out.append(Removal("Untagged", _familiar(n)))
            self._write_repos(repos)
            if not remaining and not users:
                out.extend(self._gc([rec.id]))
        for _n in untag:
            events.emit(self, "image", "untag", rec.id, {"name": rec.id})
        if not remaining and not users:
            events.emit(self, "image", "delete", rec.id, {"name": rec.id})
        return out

    def _gc(self, image_ids: list[str], sweep: bool | None = None) -> list[Removal]:
        """Delete these images, then the layers and blobs no remaining image refers to:
        every such one when ``sweep`` (the caller keeps writers out), or when no pull or
        load runs now (``sweep`` None); else only those of the deleted images, since a
        writer's unrecorded blobs look unreferenced too. Caller holds the store lock."""
        out: list[Removal] = []
        candidates_layers: set[str] = set()
        candidates_blobs: set[str] = set()
        for image_id in image_ids:
            rec = self._load_image(image_id)
            if rec is not None:
                candidates_blobs.update({rec.id, rec.manifest_digest})
                for layer in rec.layers:
                    candidates_layers.add(layer.diff_id)
                    candidates_blobs.add(layer.digest)
            with contextlib.suppress(FileNotFoundError):
                self._image_path(image_id).unlink()
                out.append(Removal("Deleted", image_id, kind="image"))
        if sweep is None:
            with try_exclusive(self.root / "writers.lock") as alone:
                return out + self._sweep(candidates_layers, candidates_blobs, everything=alone)
        return out + self._sweep(candidates_layers, candidates_blobs, everything=sweep)

    def _sweep(self, layers: set[str], blobs: set[str], everything: bool) -> list[Removal]:
        out: list[Removal] = []
        live_layers, live_blobs = self._live()
        if everything:
            layers = {"sha256:" + p.name for p in self.layers.iterdir()
                      if p.name != "l" and len(p.name) == 64}
            blobs = {"sha256:" + p.name for p in self.blobs.iterdir()}
        for diff_id in sorted(layers - live_layers):
            if not self.layer_path(diff_id).exists():
                continue
            size = 0
            with contextlib.suppress(StoreError, KeyError, TypeError):
                size = int(self.layer_info(diff_id)["size"])
            self._remove_layer(diff_id)
            out.append(Removal("Deleted", diff_id, size, kind="layer"))
        for digest in sorted(blobs - live_blobs):
            path = self.blob_path(digest)
            with contextlib.suppress(FileNotFoundError):
                size = path.stat().st_size
                path.unlink()
                out.append(Removal("Deleted", digest, size, kind="blob"))
        return out

    def prune_images(self, all_unused: bool = False) -> list[Removal]:
        """``image prune``: delete dangling images (no tag) that no container uses, or
        with ``all_unused`` every image no container uses; then every layer and blob no
        image refers to (what a killed pull or load left). Waits for running pulls and
        loads to end first, so nothing they wrote is taken for garbage."""
        with self._no_writers(), self.lock():
            repos = self._read_repos()
            tagged = {v for k, v in repos.items() if "@" not in k}
            pinned = {self._read_pin(p) for p in self.pins.iterdir() if not p.name.startswith(".")}
            doomed = sorted(p.stem for p in self.images_dir.glob("*.json"))
            doomed = [f"sha256:{h}" for h in doomed]
            doomed = [i for i in doomed if i not in pinned and (all_unused or i not in tagged)]
            out: list[Removal] = []
            for name in sorted(k for k, v in repos.items() if v in doomed):
                del repos[name]
                out.append(Removal("Untagged", _familiar(name)))
            self._write_repos(repos)
            out.extend(self._gc(doomed, sweep=True))
        return out

    def _read_pin(self, path: Path) -> str:
        try:
            return path.read_text()
        except OSError:
            return ""

    def discard_unreferenced(self, diff_ids: Sequence[str], blobs: Sequence[str]) -> None:
        """Undo a failed load or pull: drop the layers and blobs it added that no image uses."""
        if not diff_ids and not blobs:
            return
        with self.lock():
            live_layers, live_blobs = self._live()
            for diff_id in diff_ids:
                if diff_id not in live_layers:
                    self._remove_layer(diff_id)
            for digest in blobs:
                if digest not in live_blobs:
                    with contextlib.suppress(FileNotFoundError):
                        self.blob_path(digest).unlink()

    def _live(self) -> tuple[set[str], set[str]]:
        """Layers and blobs some image record refers to."""
        live_layers: set[str] = set()
        live_blobs: set[str] = set()
        for p in self.images_dir.glob("*.json"):
            rec = self._load_image("sha256:" + p.stem)
            if rec is None:
                continue
            live_blobs.update({rec.id, rec.manifest_digest})
            for layer in rec.layers:
                live_layers.add(layer.diff_id)
                live_blobs.add(layer.digest)
        return live_layers, live_blobs

    def layer_blob(self, diff_id: str) -> LayerRef | None:
        """A stored blob of layer ``diff_id`` that some image already uses, if any."""
        for p in self.images_dir.glob("*.json"):
            rec = self._load_image("sha256:" + p.stem)
            for layer in rec.layers if rec else []:
                if layer.diff_id == diff_id and self.has_blob(layer.digest):
                    return layer
        return None

    def layer_users(self) -> dict[str, int]:
        """diff_id -> how many images share that layer (``history`` shows it)."""
        counts: dict[str, int] = {}
        for rec in self.images():
            for diff_id in {layer.diff_id for layer in rec.layers}:
                counts[diff_id] = counts.get(diff_id, 0) + 1
        return counts

    def manifest_and_config(self, rec: ImageRecord) -> tuple[oci.Manifest, oci.ImageConfig]:
        from minirun.image import oci

        return (oci.Manifest.parse(self.read_blob(rec.manifest_digest)),
                oci.ImageConfig.parse(self.read_blob(rec.id)))


def _familiar(name: str) -> str:
    try:
        return refs.parse(name).familiar()
    except Exception:
        return name


def _remove(path: Path) -> None:
    """Remove a file or tree, tolerating races with another remover."""
    try:
        if path.is_dir() and not path.is_symlink():
            import shutil

            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        pass
    except OSError as e:
        if e.errno != errno.ENOENT:
            raise
