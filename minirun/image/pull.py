"""``minirun pull``: an image from a registry into the store, verified on the way.

1. ``GET /v2/<name>/manifests/<tag|digest>``; its sha256 is computed from the bytes
   received (and must equal the digest asked for, and ``Docker-Content-Digest``).
2. An index (OCI index, Docker manifest list) → the entry for the host's platform or
   ``--platform``, fetched by digest and verified the same way.
3. The image config, verified against the manifest, before any layer is fetched.
4. Layers: up to three downloads at once, each streamed into the store's tmp while
   hashed, renamed into ``blobs/`` only when digest and size match, and unpacked (the
   diff_id checked) as soon as it is verified, while the other downloads go on. A layer
   the store has is not fetched. (Unpacking while downloading was measured: on this
   CPU-bound path it gained nothing, so the simpler verify-then-unpack order stays.)
5. The image record, its tag and ``RepoDigests`` (``name@<digest>``).

A failure anywhere (bad digest, broken connection, Ctrl-C) removes what this pull added
that no image uses; nothing unverified ever enters ``blobs/`` or ``layers/``.
"""

from __future__ import annotations

import hashlib
import http.client
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import BinaryIO, cast

from minirun import events
from minirun.errors import (
    DigestMismatch,
    ImageNotFound,
    ManifestError,
    RegistryError,
    UsageError,
)
from minirun.image import oci
from minirun.image import reference as refs
from minirun.image.digest import short_id
from minirun.image.progress import ProgressEvent, Report, ignore
from minirun.image.registry import RegistryClient, RegistryConfig, Response
from minirun.image.store import ImageRecord, Store

PULL_POLICIES = ("missing", "always", "never")
_READ = 1 << 20


@dataclass
class PullResult:
    record: ImageRecord
    reference: refs.Reference
    digest: str  # what the tag points to: the index's digest for a multi-platform image
    up_to_date: bool


class _Cancelled(Exception):
    pass


class _Serial:
    """Calls the report callback from one thread at a time (layer workers share it)."""

    def __init__(self, report: Report) -> None:
        self.report = report
        self.lock = threading.Lock()

    def __call__(self, ev: ProgressEvent) -> None:
        with self.lock:
            self.report(ev)

    def msg(self, text: str) -> None:
        self(ProgressEvent(text))


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _fetch_manifest(client: RegistryClient, repo: str, reference: str) -> tuple[bytes, str, str]:
    """(bytes, media type, digest computed from the bytes), checked against what was asked."""
    data, ctype, header_digest = client.get_manifest(repo, reference)
    digest = _sha256(data)
    if reference.startswith("sha256:") and digest != reference:
        raise DigestMismatch(f"manifest {repo}@{reference}", reference, digest)
    if header_digest.startswith("sha256:") and header_digest != digest:
        raise DigestMismatch(f"manifest {repo}:{reference} (Docker-Content-Digest)", header_digest, digest)
    doc = oci.load_json(data, f"manifest {repo}:{reference}")
    mt = doc.get("mediaType") if isinstance(doc.get("mediaType"), str) and doc.get("mediaType") else ""
    if not mt:
        mt = ctype if ctype in oci.INDEX_TYPES + oci.MANIFEST_TYPES else oci.detect_media_type(doc)
    return data, str(mt), digest


class _Download:
    """A response body read through the store's hashing writer (``put_blob_stream``):
    counts and reports bytes, stops at the expected size + 1 (a lying server cannot fill
    the disk), tells a broken connection from a bad blob, and can be cancelled."""

    def __init__(self, resp: Response, desc: oci.Descriptor, on_bytes: Callable[[int], None],
                 cancel: threading.Event) -> None:
        self.resp = resp
        self.lid = short_id(desc.digest)
        self.left = desc.size + 1
        self.on_bytes = on_bytes
        self.cancel = cancel

    def read(self, n: int = -1) -> bytes:
        if self.cancel.is_set():
            raise _Cancelled()
        if self.left <= 0:
            return b""
        try:
            b = self.resp.read(min(n if n > 0 else _READ, self.left))
        except (OSError, http.client.HTTPException) as e:
            if self.cancel.is_set():
                raise _Cancelled() from None
            raise RegistryError(f"download of layer {self.lid} broke off ({e or type(e).__name__}); "
                                "nothing of it was kept, pull again to retry") from None
        if b:
            self.left -= len(b)
            self.on_bytes(len(b))
        elif self.resp.raw is not None and (self.resp.raw.length or 0) > 0:
            # http.client returns b"" when the peer closes before Content-Length is reached
            if self.cancel.is_set():
                raise _Cancelled()
            raise RegistryError(f"download of layer {self.lid} broke off: the connection closed "
                                f"{self.resp.raw.length} bytes early; nothing of it was kept, pull again to retry")
        return b


class _Puller:
    def __init__(self, store: Store, client: RegistryClient, ref: refs.Reference, report: _Serial,
                 workers: int) -> None:
        self.store = store
        self.client = client
        self.ref = ref
        self.repo = ref.repository
        self.report = report
        self.workers = max(1, workers)
        self.cancel = threading.Event()
        self.lock = threading.Lock()
        self.new_blobs: list[str] = []
        self.new_layers: list[str] = []
        self.active: set[Response] = set()

    def layer(self, desc: oci.Descriptor, diff_id: str) -> None:
        """Fetch one layer: the blob streams into tmp while hashed and enters ``blobs/``
        only when digest and size match; then, at once, it is unpacked (diff_id checked)."""
        lid = short_id(desc.digest)
        store = self.store
        if not store.has_blob(desc.digest):
            self.report(ProgressEvent("Downloading", lid, 0, desc.size))
            resp = self.client.open_blob(self.repo, desc.digest)
            with self.lock:
                self.active.add(resp)
            done = 0

            def on_bytes(n: int) -> None:
                nonlocal done
                done += n
                self.report(ProgressEvent("Downloading", lid, done, desc.size))

            try:
                if self.cancel.is_set():
                    raise _Cancelled()
                store.put_blob_stream(cast(BinaryIO, _Download(resp, desc, on_bytes, self.cancel)),
                                      desc.digest, desc.size, what=f"layer {lid}")
            finally:
                with self.lock:
                    self.active.discard(resp)
                resp.close(reusable=True)
            with self.lock:
                self.new_blobs.append(desc.digest)
            self.report(ProgressEvent("Verifying Checksum", lid))
            self.report(ProgressEvent("Download complete", lid))
        if self.cancel.is_set():
            raise _Cancelled()
        if not store.has_layer(diff_id):
            self.report(ProgressEvent("Extracting", lid))
            self._added(store.add_layer(store.blob_path(desc.digest), diff_id, desc.media_type or None)[1],
                        diff_id)
        self.report(ProgressEvent("Pull complete", lid))

    def _added(self, new: bool, diff_id: str) -> None:
        if new:
            with self.lock:
                self.new_layers.append(diff_id)

    def layers(self, manifest: oci.Manifest, config: oci.ImageConfig) -> None:
        jobs: dict[str, tuple[oci.Descriptor, str]] = {}
        for desc, diff_id in zip(manifest.layers, config.diff_ids, strict=True):
            lid = short_id(desc.digest)
            if desc.digest in jobs:
                continue
            if self.store.has_layer(diff_id) and self.store.has_blob(desc.digest):
                self.report(ProgressEvent("Already exists", lid))
                continue
            self.report(ProgressEvent("Pulling fs layer", lid))
            jobs[desc.digest] = (desc, diff_id)
        if not jobs:
            return
        pool = ThreadPoolExecutor(min(self.workers, len(jobs)), thread_name_prefix="pull")
        futures: list[Future[None]] = []
        try:
            futures = [pool.submit(self.layer, d, i) for d, i in jobs.values()]
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            for f in futures:  # the first failure, in manifest order, is the one to tell
                if f in done and f.exception() is not None:
                    exc = f.exception()
                    if not isinstance(exc, _Cancelled):
                        raise exc  # type: ignore[misc]
        except BaseException:
            self.abort()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown(wait=True)

    def abort(self) -> None:
        self.cancel.set()
        with self.lock:
            for r in self.active:
                r.abort()

    def undo(self) -> None:
        self.store.discard_unreferenced(self.new_layers, self.new_blobs)


def pull(store: Store, ref_text: str, *, platform: str | oci.Platform | None = None,
         report: Report = ignore, config: RegistryConfig | None = None,
         client: RegistryClient | None = None, workers: int = 3) -> PullResult:
    """Pull ``ref_text`` (``busybox``, ``host:5000/app:1``, ``name@sha256:...``) into ``store``."""
    rep = _Serial(report)
    ref = refs.parse(ref_text)
    want = oci.Platform.parse(platform) if isinstance(platform, str) else platform
    if refs.parse(ref_text, default_tag=False).tag is None and ref.digest is None:
        rep.msg(f"Using default tag: {refs.DEFAULT_TAG}")
    own_client = client is None
    if client is None:
        client = RegistryClient(ref.registry, config or RegistryConfig.load())
    store.ensure()
    puller = _Puller(store, client, ref, rep, workers)
    try:
        with store.writing():  # until the image is recorded, prune must not take its blobs
            try:
                return _pull(store, client, ref, want, rep, puller)
            except BaseException:
                puller.abort()
                puller.undo()
                raise
    finally:
        if own_client:
            client.close()


def _pull(store: Store, client: RegistryClient, ref: refs.Reference, want: oci.Platform | None,
          rep: _Serial, puller: _Puller) -> PullResult:
    repo = ref.repository
    tag_or_digest = ref.digest or ref.tag or refs.DEFAULT_TAG
    data, mt, top_digest = _fetch_manifest(client, repo, tag_or_digest)
    rep.msg(f"{tag_or_digest}: Pulling from {repo}")
    manifest_bytes, manifest_digest = data, top_digest
    depth = 0
    while mt in oci.INDEX_TYPES:
        depth += 1
        if depth > 2:
            raise ManifestError(f"{ref}: indexes nested too deep")
        entry = oci.Index.parse(data, f"index of {ref.familiar()}").select(want or oci.host_platform())
        data, mt, manifest_digest = _fetch_manifest(client, repo, entry.digest)
        manifest_bytes = data
    manifest = oci.Manifest.parse(manifest_bytes, f"manifest of {ref.familiar()}")

    existing: ImageRecord | None = None
    try:
        existing = store.resolve(str(ref))
    except ImageNotFound:
        pass
    up_to_date = (existing is not None and existing.id == manifest.config.digest
                  and existing.manifest_digest == manifest_digest
                  and all(store.has_layer(layer.diff_id) for layer in existing.layers))

    if up_to_date:
        assert existing is not None
        rec = existing
    else:
        if store.has_blob(manifest.config.digest):
            config_bytes = store.read_blob(manifest.config.digest)
        else:
            config_bytes = client.get_blob(repo, manifest.config.digest)
        got = _sha256(config_bytes)
        if got != manifest.config.digest:
            raise DigestMismatch(f"image config of {ref.familiar()}", manifest.config.digest, got)
        config = oci.ImageConfig.parse(config_bytes, f"image config of {ref.familiar()}")
        if len(config.diff_ids) != len(manifest.layers):
            raise ManifestError(f"{ref.familiar()}: the manifest lists {len(manifest.layers)} layers, "
                                f"its config {len(config.diff_ids)}")
        have = config.platform
        if want is not None and have.os and not oci.platform_matches(want, have):
            raise ManifestError(f"image {ref.familiar()} was found but its platform ({have}) does not "
                                f"match the requested {want}")
        puller.layers(manifest, config)
        rec = store.add_image(manifest_bytes, config_bytes, [ref] if ref.tag and not ref.digest else [],
                              repo_digest_names=[ref.name])
    if top_digest != manifest_digest:
        store.add_repo_digest(rec.id, ref.name, top_digest)
    rep.msg(f"Digest: {top_digest}")
    rep.msg(f"Status: {'Image is up to date' if up_to_date else 'Downloaded newer image'} for {ref.familiar()}")
    rec = store.resolve(rec.id)
    events.emit(store, "image", "pull", ref.familiar(), {"name": events.strip_tag(ref.familiar())})
    return PullResult(rec, ref, top_digest, up_to_date)


def ensure_image(store: Store, ref_text: str, policy: str, report: Report,
                 config: RegistryConfig | None = None, platform: str | None = None) -> ImageRecord:
    """``run --pull missing|always|never``: the image to run, pulled as the policy says.

    * ``missing`` (the default): pull only when the store has no such image;
    * ``always``: pull (a no-op transfer when the registry has nothing newer);
    * ``never``: use the store's, :class:`ImageNotFound` when absent."""
    if policy not in PULL_POLICIES:
        raise UsageError(f"invalid --pull value {policy!r} (want one of: {', '.join(PULL_POLICIES)})")
    if not refs.is_image_id(ref_text):
        refs.parse(ref_text)  # an invalid reference is that, before any lookup or pull
    want = oci.Platform.parse(platform) if platform else None
    mismatch: PlatformMismatch | None = None
    if policy != "always":
        try:
            local = store.resolve(ref_text)
        except ImageNotFound:
            if policy == "never" or refs.is_image_id(ref_text):
                raise
        else:
            mismatch = _platform_mismatch(store, local, ref_text, want)
            if mismatch is None:
                return local
            if policy == "never" or refs.is_image_id(ref_text):
                raise mismatch
        try:
            shown = refs.parse(ref_text).familiar()
        except Exception:
            shown = ref_text
        report(ProgressEvent(f"Unable to find image '{shown}' locally"))  # (Docker: also on a mismatch)
    try:
        return pull(store, ref_text, platform=platform, report=report, config=config).record
    except (RegistryError, ManifestError) as e:
        if mismatch is None:
            raise
        # Docker: a local image of another platform is "not found", so it pulls; when that
        # fails too, say both: what the store has and why the pull did not help
        raise PlatformMismatch(f"{mismatch}; pulling {want} failed: {e}") from None


class PlatformMismatch(ManifestError):
    """``run --platform P IMAGE`` where the store's IMAGE is of another platform."""


def _platform_mismatch(store: Store, rec: ImageRecord, ref_text: str,
                       want: oci.Platform | None) -> PlatformMismatch | None:
    """None when ``rec`` is of the platform wanted (or none is, or it names none)."""
    if want is None:
        return None
    have = oci.ImageConfig.parse(store.read_blob(rec.id), f"image config of {ref_text}").platform
    if not have.os or oci.platform_matches(want, have):
        return None
    return PlatformMismatch(f"image {ref_text} is {have}, not {want}")
