"""``minirun push``: an image of the store to a registry (distribution API v2).

For each blob (layers, then the config): ``HEAD`` first (already there: nothing to
send); else a cross-repository mount (``POST .../blobs/uploads/?mount=<digest>&from=<repo>``)
when another repository of the same registry is known to hold it (the store's names of
the images that use the blob: pulled from or pushed to); else an upload, monolithic
(``POST`` + one ``PUT ?digest=``) or chunked (``PATCH`` with ``Content-Range``, then
``PUT``). Last the manifest, the stored bytes unchanged so its digest is the same
everywhere, and ``name@digest`` is recorded in the image's RepoDigests.
"""

from __future__ import annotations

import threading
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass

from minirun import events
from minirun.errors import DigestMismatch, InvalidReference, RegistryError
from minirun.image import oci
from minirun.image import reference as refs
from minirun.image.digest import short_id
from minirun.image.progress import ProgressEvent, Report, ignore
from minirun.image.registry import RegistryClient, RegistryConfig
from minirun.image.store import ImageRecord, Store

_MAX_MOUNT_SOURCES = 3


@dataclass
class PushResult:
    record: ImageRecord
    reference: refs.Reference
    digest: str
    size: int


def mount_sources(store: Store, ref: refs.Reference) -> dict[str, list[str]]:
    """blob digest -> other repositories of ``ref``'s registry that hold it, as far as the
    store knows: names (tags, digests) of the images that use the blob."""
    out: dict[str, list[str]] = {}
    for rec in store.images():
        repos = []
        for name in rec.repo_tags + rec.repo_digests:
            try:
                r = refs.parse(name)
            except InvalidReference:
                continue
            if r.registry == ref.registry and r.repository != ref.repository and r.repository not in repos:
                repos.append(r.repository)
        if not repos:
            continue
        for digest in [layer.digest for layer in rec.layers] + [rec.id]:
            lst = out.setdefault(digest, [])
            lst.extend(r for r in repos if r not in lst)
    return out


def push(store: Store, ref_text: str, *, report: Report = ignore, config: RegistryConfig | None = None,
         client: RegistryClient | None = None, workers: int = 3, chunk_size: int = 0) -> PushResult:
    """Push the stored image named ``ref_text`` to the registry its name points at."""
    lock = threading.Lock()

    def rep(ev: ProgressEvent) -> None:
        with lock:
            report(ev)

    ref = refs.parse(ref_text)
    if refs.parse(ref_text, default_tag=False).tag is None and ref.digest is None:
        rep(ProgressEvent(f"Using default tag: {refs.DEFAULT_TAG}"))
    rec = store.resolve(ref_text)
    manifest_bytes = store.read_blob(rec.manifest_digest)
    manifest = oci.Manifest.parse(manifest_bytes, f"manifest of {ref.familiar()}")
    own_client = client is None
    if client is None:
        client = RegistryClient(ref.registry, config or RegistryConfig.load())
    try:
        rep(ProgressEvent(f"The push refers to repository [{ref.name}]"))
        sources = mount_sources(store, ref)
        layers = list({d.digest: d for d in manifest.layers}.values())
        for d in layers:
            rep(ProgressEvent("Preparing", short_id(d.digest)))
        repo = ref.repository

        def send(desc: oci.Descriptor, shown: bool) -> None:
            lid = short_id(desc.digest)
            say = (lambda ev: rep(ev)) if shown else (lambda ev: None)
            if client.has_blob(repo, desc.digest):
                say(ProgressEvent("Layer already exists", lid))
                return
            for src in sources.get(desc.digest, [])[:_MAX_MOUNT_SOURCES]:
                location, mounted = client.start_upload(repo, mount=desc.digest, from_repo=src)
                if mounted:
                    say(ProgressEvent(f"Mounted from {src}", lid))
                    return
                break  # not mountable from there: the registry opened an upload session instead
            else:
                location, _ = client.start_upload(repo)
            path = store.blob_path(desc.digest)
            if not path.is_file():
                raise RegistryError(f"blob {desc.digest} of {ref.familiar()} is missing from the store; "
                                    "pull or load the image again")
            done = 0

            def progress(n: int) -> None:
                nonlocal done
                done += n
                say(ProgressEvent("Pushing", lid, done, desc.size))

            client.upload_blob(repo, location, path, desc.digest, progress, chunk_size)
            say(ProgressEvent("Pushed", lid))

        jobs = [(d, True) for d in layers] + [(manifest.config, False)]
        with ThreadPoolExecutor(max(1, min(workers, len(jobs))), thread_name_prefix="push") as pool:
            futures = [pool.submit(send, d, shown) for d, shown in jobs]
            wait(futures, return_when=FIRST_EXCEPTION)
            for f in futures:
                exc = f.exception() if f.done() else None
                if exc is not None:
                    for g in futures:
                        g.cancel()
                    raise exc
        reference = ref.digest or ref.tag or refs.DEFAULT_TAG
        got = client.put_manifest(repo, reference, manifest_bytes, rec.manifest_media_type)
        if got and got != rec.manifest_digest:
            raise DigestMismatch(f"manifest pushed to {ref.name}", rec.manifest_digest, got)
        store.add_repo_digest(rec.id, ref.name, rec.manifest_digest)
        rep(ProgressEvent(f"{reference}: digest: {rec.manifest_digest} size: {len(manifest_bytes)}"))
        events.emit(store, "image", "push", ref.familiar(), {"name": events.strip_tag(ref.familiar())})
        return PushResult(store.resolve(rec.id), ref, rec.manifest_digest, len(manifest_bytes))
    finally:
        if own_client:
            client.close()
