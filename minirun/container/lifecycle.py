"""Create and start containers: the writable side on top of an image.

``create`` makes the container layer (empty upper/work dirs), its /etc files and the
OCI spec; ``start`` hands the spec and the layer stack to the runtime, which mounts
``overlay(lower = image layers, read-only, shared; upper = this container's layer)``
inside the container's own mount namespace and execs the process.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from pathlib import Path

from minirun.container.records import ContainerRecord, Containers, process_start_time
from minirun.container.spec import RunOptions, build_spec
from minirun.container.users import resolve_user
from minirun.errors import ContainerError
from minirun.image.store import Store

HOSTS = """127.0.0.1\tlocalhost
::1\tlocalhost ip6-localhost ip6-loopback
fe00::0\tip6-localnet
ff00::0\tip6-mcastprefix
ff02::1\tip6-allnodes
ff02::2\tip6-allrouters
"""


def resolv_conf(host_text: str) -> str:
    """The host's resolv.conf without loopback nameservers (a stub resolver such as
    127.0.0.53 is unreachable from the container's own network namespace)."""
    lines = []
    for line in host_text.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "nameserver" and (
                words[1].startswith("127.") or words[1] == "::1"):
            continue
        lines.append(line)
    return "\n".join(lines) + "\n"


# Mount points every container needs. They live in a small read-only "init" layer
# between the image and the container layer (Docker does the same), so the container
# layer holds only what the container itself changed and `diff` shows nothing else.
INIT_DIRS = ("proc", "sys", "dev", "etc")
INIT_FILES = ("etc/hosts", "etc/hostname", "etc/resolv.conf")


def make_init_layer(path: Path) -> None:
    path.mkdir(mode=0o755)
    for d in INIT_DIRS:
        (path / d).mkdir(mode=0o755)
    for f in INIT_FILES:
        (path / f).touch(mode=0o644)


def stack(containers: Containers, rec: ContainerRecord) -> list[str]:
    """The read-only lowerdirs of a container, topmost first: init layer, then the image's."""
    return [str(containers.dir(rec.id) / "init"), *rec.lowerdirs]


def create(store: Store, image: str, opts: RunOptions) -> ContainerRecord:
    """Prepare everything in a fresh container dir, then register the record once."""
    img = store.resolve(image)
    image_cfg = json.loads(store.read_blob(img.id)).get("config") or {}
    lowerdirs = [str(store.links / layer.link) for layer in reversed(img.layers)]
    user = resolve_user(opts.user or image_cfg.get("User") or None, lowerdirs)
    containers = Containers(store)
    cid = containers.new_id()
    try:
        cdir = containers.dir(cid)
        for d in ("upper", "work", "rootfs"):
            (cdir / d).mkdir(mode=0o755)
        make_init_layer(cdir / "init")
        hostname = opts.hostname or cid[:12]
        (cdir / "hostname").write_text(hostname + "\n")
        (cdir / "hosts").write_text(HOSTS)
        try:
            host_resolv = Path("/etc/resolv.conf").read_text()
        except OSError:
            host_resolv = ""
        (cdir / "resolv.conf").write_text(resolv_conf(host_resolv))
        etc = {f"/etc/{n}": str(cdir / n) for n in ("hostname", "hosts", "resolv.conf")}
        spec = build_spec(image_cfg, opts, user, hostname, etc)
        (cdir / "config.json").write_text(json.dumps(spec))
        rec = ContainerRecord(
            id=cid, name="", image=image, image_id=img.id, args=spec["process"]["args"],
            created=time.time(), lowerdirs=lowerdirs,
            diff_ids=[layer.diff_id for layer in reversed(img.layers)],
            auto_remove=opts.remove, no_pivot=opts.chroot, extra={"options": asdict(opts)})
        containers.register(rec, opts.name)
    except BaseException:
        containers.discard(cid)
        raise
    return rec


def start(store: Store, rec: ContainerRecord, stdin_open: bool) -> int:
    """Run the container to its end in the foreground; returns Docker's exit status."""
    from minirun import runtime

    containers = Containers(store)
    if rec.alive():
        raise ContainerError(f"container {rec.name} is already running")
    cdir = containers.dir(rec.id)
    spec = json.loads((cdir / "config.json").read_bytes())
    rootfs = runtime.OverlayRootfs(
        lowerdirs=stack(containers, rec), upperdir=str(cdir / "upper"), workdir=str(cdir / "work"),
        target=str(cdir / "rootfs"))

    def started(pid: int) -> None:
        rec.status, rec.pid, rec.started_at = "running", pid, time.time()
        rec.pid_start = process_start_time(pid)
        containers.save(rec)

    devnull = None
    if not stdin_open:  # without -i the container reads EOF, with or without a tty
        devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    try:
        code = runtime.run(spec, rootfs, no_pivot=rec.no_pivot,
                           stdio=runtime.Stdio(stdin=devnull), on_start=started)
    except BaseException:
        rec.status, rec.exit_code, rec.finished_at = "exited", 125, time.time()
        if cdir.exists():
            containers.save(rec)
        raise
    finally:
        if devnull is not None:
            os.close(devnull)
    rec.status, rec.exit_code, rec.finished_at = "exited", code, time.time()
    if not rec.auto_remove:  # --rm: the record is about to go; skip a write on the way out
        containers.save(rec)
    return code


def run(store: Store, image: str, opts: RunOptions) -> int:
    """``minirun run``: create, start, wait; with --rm, remove the container layer after."""
    rec = create(store, image, opts)
    try:
        return start(store, rec, stdin_open=opts.interactive)
    finally:
        if opts.remove:
            Containers(store).remove(rec, force=True)
