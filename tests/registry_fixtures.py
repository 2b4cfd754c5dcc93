"""Real registries for the pull/push tests, all on 127.0.0.1 and all gone after the test.

* ``registry``: Debian's ``docker-registry`` (CNCF distribution 2.8) serving a temp
  filesystem store, anonymous; ``basic_registry``: htpasswd (bcrypt) Basic auth;
  ``token_registry``: Docker Hub's flow — the registry trusts JWTs signed by a test CA
  (``auth: token: rootcertbundle``), issued by :class:`TokenServer`, a tiny token service.
* :class:`TcpProxy`: a byte pump in front of a registry that can throttle and cut the
  connection mid-blob; :class:`RedirectProxy`: answers blob GETs with a 307 to another
  host and records whether ``Authorization`` followed the redirect (it must not).
* ``upload_image`` / ``upload_index``: put built images (``minirun.image.build``) into a
  registry with minirun's own client; ``skopeo_copy`` does it with skopeo.

Import this module as a pytest plugin: ``pytest_plugins = ["tests.registry_fixtures"]``.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import http.client
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from minirun.image import build, oci
from minirun.image.auth import Credentials
from minirun.image.registry import RegistryClient, RegistryConfig

REGISTRY_BIN = shutil.which("docker-registry") or "/usr/bin/docker-registry"
SERVICE = "minirun-test-registry"
ISSUER = "minirun-test-token-issuer"
USER, PASSWORD = "alice", "s3cret-pass"

_ISOLATE = "mount -t tmpfs tmpfs /run && mount -t tmpfs tmpfs /var/lib && exec \"$@\""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def need(*tools: str) -> None:
    for t in tools:
        if shutil.which(t) is None:
            pytest.skip(f"{t} is not installed")


# -- the registry ------------------------------------------------------------------------------


@dataclass
class RegistryServer:
    workdir: Path
    auth: str = "none"  # none | htpasswd | token
    token_server: TokenServer | None = None
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    storage: Path = field(init=False)

    def __post_init__(self) -> None:
        self.storage = self.workdir / "storage"
        self.storage.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()

    @property
    def netloc(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.netloc}"

    def _config(self) -> str:
        auth = ""
        if self.auth == "htpasswd":
            import bcrypt

            hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
            (self.workdir / "htpasswd").write_text(f"{USER}:{hashed}\n")
            auth = f"auth:\n  htpasswd:\n    realm: minirun-test\n    path: {self.workdir / 'htpasswd'}\n"
        elif self.auth == "token":
            assert self.token_server is not None
            ts = self.token_server
            auth = (f"auth:\n  token:\n    realm: {ts.url}/token\n    service: {SERVICE}\n"
                    f"    issuer: {ISSUER}\n    rootcertbundle: {ts.cert_path}\n")
        return (
            "version: 0.1\n"
            "log:\n  level: error\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.storage}\n"
            "  delete:\n    enabled: true\n"
            "  maintenance:\n    uploadpurging:\n      enabled: false\n"
            f"http:\n  addr: {self.netloc}\n  secret: minirun-test-secret\n"
            + auth
        )

    def start(self) -> RegistryServer:
        cfg = self.workdir / "config.yml"
        cfg.write_text(self._config())
        log = open(self.workdir / "registry.log", "ab")  # noqa: SIM115 - closed below
        try:
            self.proc = subprocess.Popen([REGISTRY_BIN, "serve", str(cfg)], stdout=log, stderr=log,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            log.close()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"docker-registry exited: {(self.workdir / 'registry.log').read_text()}")
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                c.request("GET", "/v2/")
                status = c.getresponse().status
                c.close()
                if status in (200, 401):
                    return self
            except OSError:
                pass
            time.sleep(0.02)
        self.stop()
        raise RuntimeError("docker-registry did not answer /v2/ within 15 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def kill(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
            self.proc = None

    def blob_file(self, digest: str) -> Path:
        hexd = digest.split(":", 1)[1]
        return self.storage / "docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"

    def client(self, credentials: Credentials | None = None) -> RegistryClient:
        return RegistryClient(self.netloc, RegistryConfig(), credentials, use_stored_credentials=False)


# -- the token service -----------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class _KeyMaterial:
    """An RSA key and a self-signed CA certificate the registry trusts (made once)."""

    _cached: _KeyMaterial | None = None

    def __init__(self) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID

        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "minirun test token CA")])
        now = dt.datetime.now(dt.UTC)
        self.cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True, crl_sign=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.cert_pem = self.cert.public_bytes(serialization.Encoding.PEM)
        self.cert_der = self.cert.public_bytes(serialization.Encoding.DER)

    @classmethod
    def get(cls) -> _KeyMaterial:
        if cls._cached is None:
            cls._cached = cls()
        return cls._cached

    def sign_jwt(self, claims: dict[str, Any]) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(self.cert_der).decode()]}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        sig = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64url(sig)}"


class TokenServer:
    """distribution's token protocol: ``GET /token?service=&scope=...`` with optional Basic
    credentials → ``{"token": <JWT>}``. Anonymous callers get ``pull`` only (Docker Hub's
    public repositories); ``alice`` gets everything she asks for; wrong passwords get 401."""

    def __init__(self, workdir: Path, anonymous_pull: bool = True) -> None:
        self.keys = _KeyMaterial.get()
        self.cert_path = workdir / "token-ca.pem"
        self.cert_path.write_bytes(self.keys.cert_pem)
        self.anonymous_pull = anonymous_pull
        self.requests: list[dict[str, Any]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                server._handle(self)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def _handle(self, h: http.server.BaseHTTPRequestHandler) -> None:
        u = urllib.parse.urlsplit(h.path)
        q = urllib.parse.parse_qs(u.query)
        user = ""
        auth = h.headers.get("Authorization", "")
        record = {"path": u.path, "query": q, "user": None}
        self.requests.append(record)
        if auth.startswith("Basic "):
            name, _, pw = base64.b64decode(auth[6:]).decode().partition(":")
            if (name, pw) != (USER, PASSWORD):
                h.send_response(401)
                h.send_header("Content-Type", "application/json")
                body = b'{"details":"incorrect username or password"}'
                h.send_header("Content-Length", str(len(body)))
                h.end_headers()
                h.wfile.write(body)
                return
            user = name
            record["user"] = name
        access = []
        for scope in " ".join(q.get("scope", [])).split():
            parts = scope.split(":")
            if len(parts) < 3:
                continue
            kind, name, actions = parts[0], ":".join(parts[1:-1]), parts[-1].split(",")
            granted = actions if user else (["pull"] if self.anonymous_pull and "pull" in actions else [])
            access.append({"type": kind, "name": name, "actions": granted})
        now = int(time.time())
        claims = {"iss": ISSUER, "sub": user, "aud": q.get("service", [""])[0], "exp": now + 300,
                  "nbf": now - 30, "iat": now, "jti": uuid.uuid4().hex, "access": access}
        body = json.dumps({"token": self.keys.sign_jwt(claims), "expires_in": 300}).encode()
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


# -- proxies -------------------------------------------------------------------------------------


class TcpProxy:
    """127.0.0.1:port → target port, byte for byte. ``rate`` (bytes/s) throttles what the
    server sends; ``cut_after`` closes a connection once it has passed that many bytes
    to the client (a registry dying mid-blob); ``stall`` stops relaying (a hung server)."""

    def __init__(self, target_port: int, rate: float = 0, cut_after: int = 0) -> None:
        self.target_port = target_port
        self.rate = rate
        self.cut_after = cut_after
        self.stall = threading.Event()
        self.sent = 0  # bytes server → client, all connections
        self._stop = threading.Event()
        self._socks: list[socket.socket] = []
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.listener.settimeout(0.2)
        self.port = int(self.listener.getsockname()[1])
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def netloc(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            self._socks += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, downstream: bool) -> None:
        passed = 0
        try:
            while not self._stop.is_set():
                data = src.recv(16384)
                if not data:
                    break
                if downstream:
                    while self.stall.is_set() and not self._stop.is_set():
                        time.sleep(0.01)
                    if self.cut_after and passed + len(data) > self.cut_after:
                        dst.sendall(data[: self.cut_after - passed])
                        break
                    if self.rate:
                        time.sleep(len(data) / self.rate)
                    passed += len(data)
                    self.sent += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._stop.set()
        self.listener.close()
        for s in self._socks:
            with contextlib.suppress(OSError):
                s.close()
        self.thread.join(2)


class RedirectProxy:
    """A registry front (``127.0.0.1:P1``) that passes everything to ``upstream`` except
    blob GETs, which it redirects (307) to ``localhost:P2`` — another host — where
    :attr:`cdn_requests` records the headers that arrived, then serves the blob."""

    def __init__(self, upstream: RegistryServer, upstream_credentials: Credentials | None = None) -> None:
        self.upstream = upstream
        self.creds = upstream_credentials
        self.cdn_requests: list[dict[str, str]] = []
        self.redirects = 0
        outer = self

        class Front(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _any(self) -> None:
                outer._front(self)

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = _any  # noqa: N815

        class Cdn(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                outer._cdn(self)

        self.front = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Front)
        self.cdn = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Cdn)
        for s in (self.front, self.cdn):
            s.daemon_threads = True
        self.threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in (self.front, self.cdn)]
        for t in self.threads:
            t.start()

    @property
    def netloc(self) -> str:
        return f"127.0.0.1:{self.front.server_address[1]}"

    def _relay(self, h: http.server.BaseHTTPRequestHandler, method: str, path: str,
               headers: dict[str, str]) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else None
        c = http.client.HTTPConnection("127.0.0.1", self.upstream.port, timeout=30)
        c.request(method, path, body=body, headers=headers)
        r = c.getresponse()
        data = r.read()
        h.send_response(r.status)
        for k, v in r.getheaders():
            if k.lower() not in ("content-length", "connection", "transfer-encoding"):
                h.send_header(k, v)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        if method != "HEAD":
            h.wfile.write(data)
        c.close()

    def _front(self, h: http.server.BaseHTTPRequestHandler) -> None:
        parts = urllib.parse.urlsplit(h.path).path.split("/")
        if h.command == "GET" and len(parts) >= 5 and parts[-2] == "blobs" and parts[-1].startswith("sha256:"):
            # the registry checks the credentials first, as a real one does before it redirects
            c = http.client.HTTPConnection("127.0.0.1", self.upstream.port, timeout=30)
            auth = h.headers.get("Authorization")
            c.request("HEAD", h.path, headers={"Authorization": auth} if auth else {})
            r = c.getresponse()
            r.read()
            c.close()
            if r.status != 200:
                self._relay(h, "GET", h.path, {k: v for k, v in h.headers.items() if k.lower() != "host"})
                return
            self.redirects += 1
            h.send_response(307)
            h.send_header("Location", f"http://localhost:{self.cdn.server_address[1]}/cdn{h.path}?sig=abc")
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        self._relay(h, h.command, h.path, {k: v for k, v in h.headers.items() if k.lower() != "host"})

    def _cdn(self, h: http.server.BaseHTTPRequestHandler) -> None:
        self.cdn_requests.append({k.lower(): v for k, v in h.headers.items()})
        path = urllib.parse.urlsplit(h.path).path.removeprefix("/cdn")
        headers = {"Authorization": self.creds.basic_header()} if self.creds else {}
        self._relay(h, "GET", path, headers)

    def close(self) -> None:
        for s in (self.front, self.cdn):
            s.shutdown()
            s.server_close()


# -- putting images into a registry --------------------------------------------------------------


def upload_image(client: RegistryClient, repo: str, tag: str, img: build.BuiltImage) -> str:
    """Blobs, then the manifest, with minirun's client (no store needed)."""
    with tempfile.TemporaryDirectory() as d:
        for digest, data in img.blobs.items():
            if client.has_blob(repo, digest):
                continue
            p = Path(d) / digest.split(":")[1]
            p.write_bytes(data)
            location, mounted = client.start_upload(repo)
            if not mounted:
                client.upload_blob(repo, location, p, digest)
    client.put_manifest(repo, tag, img.manifest, oci.OCI_MANIFEST)
    return img.manifest_digest


def index_bytes(images: list[tuple[build.BuiltImage, oci.Platform]], media_type: str = oci.OCI_INDEX) -> bytes:
    manifest_type = oci.OCI_MANIFEST if media_type == oci.OCI_INDEX else oci.DOCKER_MANIFEST
    entries = [{"mediaType": manifest_type, "digest": img.manifest_digest, "size": len(img.manifest),
                "platform": plat.to_json()} for img, plat in images]
    return json.dumps({"schemaVersion": 2, "mediaType": media_type, "manifests": entries}).encode()


def upload_index(client: RegistryClient, repo: str, tag: str,
                 images: list[tuple[build.BuiltImage, oci.Platform]]) -> str:
    """Each image by digest, then an OCI index over them under ``tag``."""
    for img, _ in images:
        upload_image(client, repo, img.manifest_digest, img)
    data = index_bytes(images)
    client.put_manifest(repo, tag, data, oci.OCI_INDEX)
    return "sha256:" + hashlib.sha256(data).hexdigest()


def make_built(name: str, layers: list[dict[str, bytes]], platform: oci.Platform | None = None,
               cmd: str = "sh") -> build.BuiltImage:
    """A small image: one layer per dict of ``path: content``."""
    built = [build.Layer(build.layer_tar(build.file(p, d) for p, d in layer.items()), f"ADD {' '.join(layer)}")
             for layer in layers]
    return build.image(name, built, {"Cmd": [cmd]}, platform)


def isolated_tool(work: Path, name: str, *args: str, check: bool = True,
                  timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """skopeo/podman in a private mount namespace (tmpfs over /run and /var/lib), with their
    state under ``work`` (keep it short: podman's runroot must be < 50 characters)."""
    for d in ("tmp", "home"):
        (work / d).mkdir(parents=True, exist_ok=True)
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "TMPDIR": str(work / "tmp"),
           "HOME": str(work / "home"), "LANG": "C.UTF-8"}
    if name == "skopeo":
        cmd = ["skopeo", "--insecure-policy", *args]
    elif name == "podman":
        cmd = ["podman", "--root", str(work / "root"), "--runroot", str(work / "run"),
               "--tmpdir", str(work / "ptmp"), "--storage-driver", "vfs",
               "--events-backend", "none", "--cgroup-manager", "cgroupfs", *args]
    else:
        raise ValueError(name)
    res = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", _ISOLATE, "sh", *cmd],
                         capture_output=True, text=True, env=env, timeout=timeout)
    if check:
        assert res.returncode == 0, f"{' '.join(cmd)} failed:\n{res.stdout}\n{res.stderr}"
    return res


# -- fixtures ------------------------------------------------------------------------------------


RegistryFactory = Callable[..., RegistryServer]


@pytest.fixture
def registry_factory(tmp_path: Path) -> Iterator[RegistryFactory]:
    """``registry_factory(auth="none"|"htpasswd"|"token", anonymous_pull=True)``."""
    if not os.path.exists(REGISTRY_BIN):
        pytest.skip("docker-registry is not installed")
    servers: list[RegistryServer] = []
    tokens: list[TokenServer] = []
    counter = iter(range(100))

    def make(auth: str = "none", anonymous_pull: bool = True) -> RegistryServer:
        work = tmp_path / f"registry-{next(counter)}"
        work.mkdir()
        ts = None
        if auth == "token":
            ts = TokenServer(work, anonymous_pull)
            tokens.append(ts)
        srv = RegistryServer(work, auth, ts)
        servers.append(srv)
        return srv.start()

    yield make
    for s in servers:
        s.stop()
    for t in tokens:
        t.stop()


@pytest.fixture
def registry(registry_factory: RegistryFactory) -> RegistryServer:
    return registry_factory()


@pytest.fixture
def basic_registry(registry_factory: RegistryFactory) -> RegistryServer:
    return registry_factory("htpasswd")


@pytest.fixture
def token_registry(registry_factory: RegistryFactory) -> RegistryServer:
    return registry_factory("token")


@pytest.fixture
def tool_dir() -> Iterator[Path]:
    """A short /tmp dir for skopeo/podman state (podman wants a short runroot)."""
    work = Path(tempfile.mkdtemp(prefix="mr-reg-", dir="/tmp"))
    yield work
    shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``DOCKER_CONFIG`` pointed at an empty tmp dir: no test reads or writes ~/.docker."""
    d = tmp_path / "docker-config"
    d.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(d))
    monkeypatch.delenv("SUDO_USER", raising=False)
    monkeypatch.delenv("MINIRUN_REGISTRY_MIRROR", raising=False)
    monkeypatch.delenv("MINIRUN_INSECURE_REGISTRIES", raising=False)
    monkeypatch.setenv("MINIRUN_REGISTRIES_CONFIG", str(tmp_path / "no-registries.json"))
    return d
