"""pull and push against a real registry (distribution 2.8 on 127.0.0.1, started per test):
anonymous, Basic (htpasswd) and Docker Hub's token flow; multi-platform indexes; shared
layers; corrupt blobs; a registry dying mid-blob, Ctrl-C and kill -9; redirects that must
not carry the registry's credentials; round trips with skopeo and podman."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from minirun.errors import (
    AuthenticationError,
    DigestMismatch,
    ImageNotFound,
    ManifestError,
    RegistryError,
)
from minirun.image import archive, build, credentials, oci
from minirun.image import reference as refs
from minirun.image.auth import Credentials
from minirun.image.digest import short_id
from minirun.image.progress import ProgressEvent
from minirun.image.pull import ensure_image, pull
from minirun.image.push import push
from minirun.image.registry import RegistryConfig
from minirun.image.store import Store
from tests.conftest import MINIRUN, Cli
from tests.registry_fixtures import (
    PASSWORD,
    USER,
    RedirectProxy,
    RegistryFactory,
    RegistryServer,
    TcpProxy,
    index_bytes,
    isolated_tool,
    make_built,
    need,
    upload_image,
    upload_index,
)

pytestmark = [pytest.mark.root, pytest.mark.usefixtures("docker_config")]

ALICE = Credentials(USER, PASSWORD)
Events = list[ProgressEvent]


def recorder() -> tuple[Events, Callable[[ProgressEvent], None]]:
    events: Events = []
    return events, events.append


def lines(events: Events) -> list[str]:
    return [f"{e.id}: {e.status}" if e.id else e.status for e in events if e.status != "Downloading"]


def three_layer_pair() -> tuple[build.BuiltImage, build.BuiltImage]:
    """A and B: 3 layers each, the first 2 shared (same bytes → same digests)."""
    base = [{"etc/base": b"base layer\n" * 100}, {"usr/lib/shared": os.urandom(4096)}]
    a = make_built("a", [*base, {"app/a": b"only in A"}])
    b = make_built("b", [*base, {"app/b": b"only in B"}])
    return a, b


def assert_clean(store: Store) -> None:
    """Nothing half-done: no tmp leftovers, no image-less layers or blobs."""
    root = store.root
    assert list((root / "tmp").iterdir()) == []
    live = set()
    for rec in store.images():
        live |= {rec.id, rec.manifest_digest} | {layer.digest for layer in rec.layers}
    blobs = {"sha256:" + p.name for p in (root / "blobs" / "sha256").iterdir()}
    assert blobs <= live, blobs - live
    layers = {p.name for p in (root / "layers").iterdir()} - {"l"}
    used = {layer.diff_id.split(":")[1] for rec in store.images() for layer in rec.layers}
    assert layers <= used


# -- anonymous pull through the CLI -------------------------------------------------------------------


def test_pull_cli_output_and_up_to_date(registry: RegistryServer, cli: Cli, store: Store) -> None:
    img = make_built("app", [{"a": b"1" * 1000}, {"b": b"2" * 1000}])
    upload_image(registry.client(), "test/app", "1", img)
    name = f"{registry.netloc}/test/app:1"
    res = cli(["pull", name], check=True)
    out = res.stdout.splitlines()
    layer_ids = [short_id(d.digest) for d in oci.Manifest.parse(img.manifest).layers]
    assert out[0] == "1: Pulling from test/app"
    for lid in layer_ids:
        assert f"{lid}: Pull complete" in out
    assert f"Digest: {img.manifest_digest}" in out
    assert f"Status: Downloaded newer image for {name}" in out
    assert out[-1] == name
    rec = store.resolve(name)
    assert rec.repo_digests == [f"{registry.netloc}/test/app@{img.manifest_digest}"]
    assert rec.manifest_digest == img.manifest_digest

    again = cli(["pull", name], check=True).stdout.splitlines()
    assert f"Status: Image is up to date for {name}" in again
    assert not any("Pull complete" in line for line in again)
    assert cli(["pull", "-q", name], check=True).stdout == name + "\n"
    assert_clean(store)


def test_pull_by_digest_and_unknown(registry: RegistryServer, store: Store) -> None:
    img = make_built("app", [{"a": b"by digest"}])
    upload_image(registry.client(), "test/app", "1", img)
    ref = f"{registry.netloc}/test/app@{img.manifest_digest}"
    res = pull(store, ref)
    assert res.record.repo_tags == []  # a digest pull creates no tag, as in Docker
    assert f"{registry.netloc}/test/app@{img.manifest_digest}" in res.record.repo_digests
    with pytest.raises(RegistryError, match="not found"):
        pull(store, f"{registry.netloc}/test/app:nope")
    with pytest.raises(RegistryError, match="not found"):
        pull(store, f"{registry.netloc}/test/nothing:1")


# -- Docker Hub's flow: a mirror with token auth --------------------------------------------------------


def test_pull_busybox_through_mirror_with_token_auth(registry_factory: RegistryFactory, cli: Cli,
                                                     store: Store, built_images: Path, tool_dir: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """``minirun pull busybox`` → docker.io/library/busybox via MINIRUN_REGISTRY_MIRROR, with an
    anonymous Bearer token from the token service, the image put there by skopeo."""
    need("skopeo", "unshare")
    reg = registry_factory("token")
    isolated_tool(tool_dir, "skopeo", "copy", "--dest-tls-verify=false", f"--dest-creds={USER}:{PASSWORD}",
                  f"oci:{built_images / 'busybox'}:busybox:latest",
                  f"docker://{reg.netloc}/library/busybox:latest")
    assert reg.token_server is not None
    reg.token_server.requests.clear()
    monkeypatch.setenv("MINIRUN_REGISTRY_MIRROR", reg.url)
    res = cli(["pull", "busybox"], check=True)
    out = res.stdout.splitlines()
    assert out[:2] == ["Using default tag: latest", "latest: Pulling from library/busybox"]
    assert "Status: Downloaded newer image for busybox:latest" in out
    assert out[-1] == "docker.io/library/busybox:latest"
    # one anonymous token, reused for manifest, config and layers
    assert len(reg.token_server.requests) == 1
    assert reg.token_server.requests[0]["user"] is None
    assert reg.token_server.requests[0]["query"]["scope"] == ["repository:library/busybox:pull"]
    reference = Store(tool_dir / "ref")
    archive.load(reference, built_images / "busybox")
    assert [x.diff_id for x in store.resolve("busybox").layers] == \
        [x.diff_id for x in reference.resolve("busybox").layers]
    ran = cli(["run", "--rm", "busybox", "echo", "pulled"])
    assert ran.returncode == 0 and ran.stdout.strip() == "pulled", ran.stderr


def test_run_pulls_a_missing_image(registry_factory: RegistryFactory, cli: Cli, store: Store,
                                    built_images: Path, tool_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``run --pull missing`` (the default) pulls what the store lacks, then runs it; the pull's
    progress goes to stderr, the container's output alone to stdout; ``never`` does not pull."""
    need("skopeo", "unshare")
    reg = registry_factory("token")
    isolated_tool(tool_dir, "skopeo", "copy", "--dest-tls-verify=false", f"--dest-creds={USER}:{PASSWORD}",
                  f"oci:{built_images / 'busybox'}:busybox:latest",
                  f"docker://{reg.netloc}/library/busybox:latest")
    monkeypatch.setenv("MINIRUN_REGISTRY_MIRROR", reg.url)
    never = cli(["run", "--rm", "--pull", "never", "busybox", "true"])
    assert never.returncode == 125 and "not found" in never.stderr
    ran = cli(["run", "--rm", "--network", "none", "busybox", "echo", "pulled"])
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == "pulled\n"
    assert "Unable to find image 'busybox:latest' locally" in ran.stderr
    assert "Pull complete" in ran.stderr
    again = cli(["run", "--rm", "--network", "none", "busybox", "true"])
    assert again.returncode == 0 and again.stderr == ""  # present now: no pull


def test_token_flow_with_credentials(registry_factory: RegistryFactory, cli: Cli, store: Store,
                                     docker_config: Path) -> None:
    reg = registry_factory("token", anonymous_pull=False)
    img = make_built("private", [{"secret/data": b"private bits"}])
    upload_image(reg.client(ALICE), "team/private", "1", img)
    name = f"{reg.netloc}/team/private:1"
    with pytest.raises(AuthenticationError, match="minirun login"):
        pull(store, name)

    bad = cli(["login", "-u", USER, "--password-stdin", reg.netloc], input="wrong-password\n")
    assert bad.returncode != 0 and "incorrect" not in bad.stdout
    assert "access denied" in bad.stderr
    assert not (docker_config / "config.json").exists()

    ok = cli(["login", "-u", USER, "--password-stdin", reg.netloc], input=PASSWORD + "\n", check=True)
    assert "Login Succeeded" in ok.stdout
    assert PASSWORD not in ok.stdout + ok.stderr
    cfg = docker_config / "config.json"
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o600
    assert reg.netloc in json.loads(cfg.read_text())["auths"]

    assert reg.token_server is not None
    reg.token_server.requests.clear()
    res = cli(["pull", name], check=True)
    assert res.stdout.splitlines()[-1] == name
    assert PASSWORD not in res.stdout + res.stderr
    assert [r["user"] for r in reg.token_server.requests] == [USER]

    out = cli(["logout", reg.netloc], check=True).stdout
    assert f"Removing login credentials for {reg.netloc}" in out
    assert reg.netloc not in json.loads(cfg.read_text())["auths"]
    assert "Not logged in" in cli(["logout", reg.netloc], check=True).stdout


def test_basic_auth(basic_registry: RegistryServer, store: Store) -> None:
    img = make_built("app", [{"a": b"basic"}])
    upload_image(basic_registry.client(ALICE), "test/app", "1", img)
    name = f"{basic_registry.netloc}/test/app:1"
    with pytest.raises(AuthenticationError):
        pull(store, name)
    credentials.store(basic_registry.netloc, Credentials(USER, "nope"))
    with pytest.raises(AuthenticationError, match="stored credentials"):
        pull(store, name)
    credentials.store(basic_registry.netloc, ALICE)
    assert pull(store, name).record.manifest_digest == img.manifest_digest
    assert_clean(store)


# -- platforms ----------------------------------------------------------------------------------------


def test_multi_platform_index(registry: RegistryServer, store: Store, cli: Cli) -> None:
    host = oci.host_platform()
    other = oci.Platform("linux", "arm64", "v8") if host.architecture != "arm64" else oci.Platform("linux", "amd64")
    native = make_built("multi", [{"arch": str(host).encode()}], host)
    foreign = make_built("multi", [{"arch": str(other).encode()}], other)
    index_digest = upload_index(registry.client(), "test/multi", "1", [(native, host), (foreign, other)])
    name = f"{registry.netloc}/test/multi:1"

    events, report = recorder()
    res = pull(store, name, report=report)
    assert res.record.manifest_digest == native.manifest_digest
    assert res.digest == index_digest
    assert f"Digest: {index_digest}" in lines(events)
    assert f"{registry.netloc}/test/multi@{index_digest}" in res.record.repo_digests
    assert pull(store, name).up_to_date

    other_store = Store(store.root.parent / "other")
    res2 = pull(other_store, name, platform=str(other))
    assert res2.record.manifest_digest == foreign.manifest_digest
    assert other_store.manifest_and_config(res2.record)[1].platform.architecture == other.architecture

    out = cli(["pull", "--platform", "linux/s390x", name])
    assert out.returncode != 0
    assert "no image for platform linux/s390x" in out.stderr
    assert "linux/amd64" in out.stderr and "linux/arm64" in out.stderr
    # by the index's digest works too
    assert pull(Store(store.root.parent / "third"), f"{registry.netloc}/test/multi@{index_digest}").digest \
        == index_digest


def test_platform_mismatch_of_single_manifest(registry: RegistryServer, store: Store) -> None:
    img = make_built("one", [{"x": b"x"}], oci.Platform("linux", "riscv64"))
    upload_image(registry.client(), "test/one", "1", img)
    with pytest.raises(ManifestError, match="does not match the requested linux/arm64"):
        pull(store, f"{registry.netloc}/test/one:1", platform="linux/arm64")
    assert_clean(store)


def test_docker_manifest_list_media_type(registry: RegistryServer, store: Store) -> None:
    host = oci.host_platform()
    img = make_built("dl", [{"x": b"docker list"}], host)
    c = registry.client()
    upload_image(c, "test/dl", img.manifest_digest, img)
    # an OCI manifest under a Docker list is unusual but legal for distribution; the
    # client must pick it by platform all the same
    data = json.loads(index_bytes([(img, host)], oci.DOCKER_MANIFEST_LIST))
    data["manifests"][0]["mediaType"] = oci.OCI_MANIFEST
    c.put_manifest("test/dl", "1", json.dumps(data).encode(), oci.DOCKER_MANIFEST_LIST)
    assert pull(store, f"{registry.netloc}/test/dl:1").record.manifest_digest == img.manifest_digest


# -- shared layers ------------------------------------------------------------------------------------


def test_shared_layers_are_fetched_once(registry: RegistryServer, store: Store) -> None:
    a, b = three_layer_pair()
    c = registry.client()
    upload_image(c, "test/a", "1", a)
    upload_image(c, "test/b", "1", b)
    pull(store, f"{registry.netloc}/test/a:1")
    events, report = recorder()
    pull(store, f"{registry.netloc}/test/b:1", report=report)
    mb = oci.Manifest.parse(b.manifest)
    ids = [short_id(d.digest) for d in mb.layers]
    out = lines(events)
    assert f"{ids[0]}: Already exists" in out and f"{ids[1]}: Already exists" in out
    assert f"{ids[2]}: Pull complete" in out
    assert not any(e.id in ids[:2] and e.status == "Downloading" for e in events)
    layers = [p for p in store.layers.iterdir() if p.name != "l"]
    assert len(layers) == 4
    assert len({layer.diff_id for rec in store.images() for layer in rec.layers}) == 4
    assert_clean(store)


# -- verification and failures --------------------------------------------------------------------------


def test_corrupt_blob_is_refused_then_repaired(registry: RegistryServer, store: Store) -> None:
    img = make_built("app", [{"a": b"good" * 1000}, {"b": b"data" * 1000}])
    upload_image(registry.client(), "test/app", "1", img)
    victim = oci.Manifest.parse(img.manifest).layers[1].digest
    path = registry.blob_file(victim)
    good = path.read_bytes()
    path.write_bytes(good[:-8] + bytes(b ^ 0xFF for b in good[-8:]))  # same size, other bytes
    with pytest.raises(DigestMismatch, match="digest mismatch"):
        pull(store, f"{registry.netloc}/test/app:1")
    assert store.images() == []
    assert [p for p in store.layers.iterdir() if p.name != "l"] == []
    assert list(store.blobs.iterdir()) == []
    assert_clean(store)
    path.write_bytes(good)
    assert pull(store, f"{registry.netloc}/test/app:1").record.manifest_digest == img.manifest_digest


def test_corrupt_manifest_by_digest(registry: RegistryServer, store: Store) -> None:
    img = make_built("app", [{"a": b"m"}])
    upload_image(registry.client(), "test/app", "1", img)
    path = registry.blob_file(img.manifest_digest)
    path.write_bytes(path.read_bytes().replace(b'"schemaVersion":2', b'"schemaVersion": 2'))
    with pytest.raises(DigestMismatch):
        pull(store, f"{registry.netloc}/test/app@{img.manifest_digest}")
    assert list(store.blobs.iterdir()) == []


def _big_image(name: str, mb: int = 3) -> build.BuiltImage:
    return make_built(name, [{"small": b"s"}, {"big": os.urandom(mb << 20)}])  # incompressible


def test_registry_dies_mid_blob(registry: RegistryServer, store: Store) -> None:
    img = _big_image("big")
    upload_image(registry.client(), "test/big", "1", img)
    proxy = TcpProxy(registry.port, cut_after=1 << 20)
    try:
        name = f"{proxy.netloc}/test/big:1"
        with pytest.raises(RegistryError, match="broke"):
            pull(store, name)
        assert store.images() == []
        assert_clean(store)
        proxy.cut_after = 0
        assert pull(store, name).record.manifest_digest == img.manifest_digest
        assert_clean(store)
    finally:
        proxy.close()


def test_registry_killed_mid_pull_then_retry(registry: RegistryServer, store: Store) -> None:
    img = _big_image("big", 4)
    upload_image(registry.client(), "test/big", "1", img)
    proxy = TcpProxy(registry.port, rate=4 << 20)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            pull(store, f"{proxy.netloc}/test/big:1")
        except BaseException as e:  # noqa: BLE001 - recorded for the assertion below
            errors.append(e)

    try:
        t = threading.Thread(target=run)
        t.start()
        deadline = time.monotonic() + 20
        while proxy.sent < (1 << 20) and time.monotonic() < deadline:
            time.sleep(0.01)
        registry.kill()
        t.join(30)
        assert not t.is_alive()
        assert errors and isinstance(errors[0], RegistryError), errors
        assert_clean(store)
        registry.start()
        proxy.rate = 0
        assert pull(store, f"{proxy.netloc}/test/big:1").record.manifest_digest == \
            img.manifest_digest
    finally:
        proxy.close()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_interrupted_cli_pull_leaves_store_consistent(registry: RegistryServer, store: Store,
                                                      store_root: Path, sig: signal.Signals) -> None:
    img = _big_image("big", 4)
    upload_image(registry.client(), "test/big", "1", img)
    proxy = TcpProxy(registry.port, rate=2 << 20)
    name = f"{proxy.netloc}/test/big:1"
    env = {**os.environ, "MINIRUN_ROOT": str(store_root)}
    try:
        p = subprocess.Popen([str(MINIRUN), "pull", name], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 20
        while proxy.sent < (1 << 20) and time.monotonic() < deadline:
            time.sleep(0.01)
        p.send_signal(sig)
        _, err = p.communicate(timeout=20)
        assert p.returncode == (130 if sig == signal.SIGINT else -signal.SIGKILL), err
        if sig == signal.SIGINT:
            assert "Traceback" not in err
            assert_clean(store)
        proxy.rate = 0
        res = subprocess.run([str(MINIRUN), "pull", name], env=env, capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        assert_clean(Store(store_root))
    finally:
        proxy.close()


def test_redirect_does_not_forward_authorization(basic_registry: RegistryServer, store: Store) -> None:
    img = make_built("app", [{"a": b"redirected" * 100}, {"b": b"also"}])
    upload_image(basic_registry.client(ALICE), "test/app", "1", img)
    proxy = RedirectProxy(basic_registry, upstream_credentials=ALICE)
    try:
        credentials.store(proxy.netloc, ALICE)
        res = pull(store, f"{proxy.netloc}/test/app:1")
        assert res.record.manifest_digest == img.manifest_digest
        assert proxy.redirects >= 3  # config and two layers
        assert proxy.cdn_requests and all("authorization" not in h for h in proxy.cdn_requests)
    finally:
        proxy.close()


# -- push ---------------------------------------------------------------------------------------------


def test_push_round_trip_with_skopeo_and_podman(registry: RegistryServer, cli: Cli, store: Store,
                                                built_images: Path, tool_dir: Path) -> None:
    need("skopeo", "podman", "unshare")
    archive.load(store, built_images / "busybox-extra")
    target = f"{registry.netloc}/test/bbx:1"
    cli(["tag", "busybox-extra", target], check=True)
    res = cli(["push", target], check=True)
    rec = store.resolve(target)
    out = res.stdout.splitlines()
    assert out[0] == f"The push refers to repository [{registry.netloc}/test/bbx]"
    for layer in rec.layers:
        assert f"{short_id(layer.digest)}: Pushed" in out
    size = len(store.read_blob(rec.manifest_digest))
    assert out[-1] == f"1: digest: {rec.manifest_digest} size: {size}"
    assert f"{registry.netloc}/test/bbx@{rec.manifest_digest}" in store.resolve(target).repo_digests

    inspected = json.loads(isolated_tool(tool_dir, "skopeo", "inspect", "--tls-verify=false",
                                         f"docker://{target}").stdout)
    assert inspected["Digest"] == rec.manifest_digest
    assert inspected["Layers"] == [layer.digest for layer in rec.layers]
    isolated_tool(tool_dir, "podman", "pull", "--tls-verify=false", target)
    podman = json.loads(isolated_tool(tool_dir, "podman", "image", "inspect", target).stdout)
    assert podman[0]["RootFS"]["Layers"] == [layer.diff_id for layer in rec.layers]

    again = cli(["push", target], check=True).stdout.splitlines()
    for layer in rec.layers:
        assert f"{short_id(layer.digest)}: Layer already exists" in again

    other = f"{registry.netloc}/test/copy:2"
    cli(["tag", target, other], check=True)
    mounted = cli(["push", other], check=True).stdout.splitlines()
    for layer in rec.layers:
        assert f"{short_id(layer.digest)}: Mounted from test/bbx" in mounted

    fresh = Store(store.root.parent / "fresh")
    back = pull(fresh, other)
    assert back.record.id == rec.id and back.record.manifest_digest == rec.manifest_digest


def test_pull_what_skopeo_pushed(registry: RegistryServer, store: Store, built_images: Path,
                                 tool_dir: Path) -> None:
    need("skopeo", "unshare")
    isolated_tool(tool_dir, "skopeo", "copy", "--dest-tls-verify=false",
                  f"oci:{built_images / 'busybox-edit'}:busybox-edit:latest",
                  f"docker://{registry.netloc}/test/edit:latest")
    res = pull(store, f"{registry.netloc}/test/edit")
    reference = Store(tool_dir / "ref")
    archive.load(reference, built_images / "busybox-edit")
    assert [x.diff_id for x in res.record.layers] == [x.diff_id for x in reference.resolve("busybox-edit").layers]
    assert res.record.id == reference.resolve("busybox-edit").id


def test_chunked_push_and_token_push(registry_factory: RegistryFactory, store: Store) -> None:
    reg = registry_factory("token")
    a, _ = three_layer_pair()
    src = Store(store.root.parent / "src")
    upload_image(reg.client(ALICE), "team/a", "1", a)
    credentials.store(reg.netloc, ALICE)
    pull(src, f"{reg.netloc}/team/a:1")
    src.tag(f"{reg.netloc}/team/a:1", refs.parse(f"{reg.netloc}/team/chunked:1"))
    events, report = recorder()
    res = push(src, f"{reg.netloc}/team/chunked:1", report=report, chunk_size=1024)
    assert res.digest == a.manifest_digest
    assert any(e.status == "Mounted from team/a" for e in events)
    assert pull(store, f"{reg.netloc}/team/chunked:1").record.manifest_digest == res.digest


def test_push_needs_credentials(registry_factory: RegistryFactory, store: Store) -> None:
    reg = registry_factory("token")
    a, _ = three_layer_pair()
    src = Store(store.root.parent / "src")
    upload_image(reg.client(ALICE), "team/a", "1", a)
    pull(src, f"{reg.netloc}/team/a:1")  # anonymous pull is allowed
    with pytest.raises(AuthenticationError):
        push(src, f"{reg.netloc}/team/a:1")


# -- run --pull ---------------------------------------------------------------------------------------


def test_ensure_image_policies(registry: RegistryServer, store: Store) -> None:
    img = make_built("app", [{"a": b"policy"}])
    upload_image(registry.client(), "test/app", "1", img)
    name = f"{registry.netloc}/test/app:1"
    with pytest.raises(ImageNotFound):
        ensure_image(store, name, "never", lambda e: None)
    events, report = recorder()
    rec = ensure_image(store, name, "missing", report)
    assert rec.manifest_digest == img.manifest_digest
    assert lines(events)[0] == f"Unable to find image '{name}' locally"
    assert ensure_image(store, name, "never", report).id == rec.id
    registry.stop()  # present: "missing" must not touch the network
    events.clear()
    assert ensure_image(store, name, "missing", report).id == rec.id
    assert events == []
    with pytest.raises(RegistryError, match="cannot reach"):
        ensure_image(store, name, "always", report)
    registry.start()
    events.clear()
    assert ensure_image(store, name, "always", report, config=RegistryConfig()).id == rec.id
    assert f"Status: Image is up to date for {name}" in lines(events)


def test_tty_progress_bars(registry: RegistryServer, store_root: Path) -> None:
    """Under a pseudo-terminal, pull draws bars and redraws them with cursor moves."""
    import pty

    img = _big_image("big", 2)
    upload_image(registry.client(), "test/big", "1", img)
    env = {**os.environ, "MINIRUN_ROOT": str(store_root)}
    pid, fd = pty.fork()
    if pid == 0:  # the child: exec at once
        os.execve(str(MINIRUN), [str(MINIRUN), "pull", f"{registry.netloc}/test/big:1"], env)
    out = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    text = out.decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 0, text
    assert "\x1b[" in text and "A\x1b[2K" in text
    assert "Pull complete" in text and "Download complete" in text
    assert "[" in text and "MB" in text


def test_pull_output_is_not_printed_by_the_library(registry: RegistryServer, store: Store,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    img = make_built("app", [{"a": b"quiet"}])
    upload_image(registry.client(), "test/app", "1", img)
    pull(store, f"{registry.netloc}/test/app:1")
    assert capsys.readouterr() == ("", "")


def test_sha256_of_pushed_manifest_is_stable(registry: RegistryServer, store: Store) -> None:
    """The stored manifest bytes go up unchanged: the registry's digest is ours."""
    img = make_built("app", [{"a": b"stable"}])
    upload_image(registry.client(), "test/app", "1", img)
    rec = pull(store, f"{registry.netloc}/test/app:1").record
    store.tag(f"{registry.netloc}/test/app:1", refs.parse(f"{registry.netloc}/test/moved:1"))
    res = push(store, f"{registry.netloc}/test/moved:1")
    data, _, header = registry.client().get_manifest("test/moved", "1")
    assert header == res.digest == rec.manifest_digest == "sha256:" + hashlib.sha256(data).hexdigest()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))


# -- concurrency ------------------------------------------------------------------------------------


def test_concurrent_pulls_of_one_image(registry: RegistryServer, store_root: Path) -> None:
    """Four processes pull the same image at once: all succeed, each layer is unpacked
    once, and the store is consistent (system check finds nothing)."""
    from minirun.image.check import check

    img = _big_image("same", mb=2)
    upload_image(registry.client(), "test/same", "1", img)
    name = f"{registry.netloc}/test/same:1"
    env = {**os.environ, "MINIRUN_ROOT": str(store_root)}
    procs = [subprocess.Popen([MINIRUN, "pull", "-q", name], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]  # fmt: skip
    results = [(p.wait(60), p.stderr.read() if p.stderr else "") for p in procs]
    assert all(code == 0 for code, _ in results), results
    store = Store(store_root)
    assert store.resolve(name).manifest_digest == img.manifest_digest
    assert_clean(store)
    assert check(store) == []


def test_pull_racing_rmi(registry: RegistryServer, store_root: Path) -> None:
    """pull and rmi of the same image at once, repeatedly: whichever wins, the store is
    consistent and the loser's error is one line."""
    from minirun.image.check import check

    img = _big_image("race", mb=1)
    upload_image(registry.client(), "test/race", "1", img)
    name = f"{registry.netloc}/test/race:1"
    env = {**os.environ, "MINIRUN_ROOT": str(store_root)}
    for _ in range(3):
        pull_p = subprocess.Popen([MINIRUN, "pull", "-q", name], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)  # fmt: skip
        time.sleep(0.05)
        rmi = subprocess.run([MINIRUN, "rmi", name], env=env, capture_output=True, text=True)
        code = pull_p.wait(60)
        err = pull_p.stderr.read() if pull_p.stderr else ""
        assert code == 0 or err.count("\n") == 1, err
        assert rmi.returncode == 0 or rmi.stderr.count("\n") == 1, rmi.stderr
        problems = [p for p in check(Store(store_root)) if p.kind != "unreferenced-blob"]
        assert problems == [], problems
