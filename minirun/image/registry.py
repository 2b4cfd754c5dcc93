"""A client for the OCI distribution API v2 (what ``docker pull``/``push`` speak).

Only the standard library: ``http.client`` with one keep-alive connection per host and
thread (the layer downloads run in a few threads), ``ssl`` for HTTPS. It is imported
only by pull/push/login, never on ``minirun run``'s start-up path.

* **Endpoints.** ``docker.io`` is ``registry-1.docker.io``, or the mirror named by
  ``MINIRUN_REGISTRY_MIRROR`` (Docker's ``registry-mirrors``). Everything is HTTPS except
  registries on loopback (127.0.0.0/8, ``localhost``, ``::1``) and those named insecure
  (``--insecure-registry``, ``MINIRUN_INSECURE_REGISTRIES``, the config file): those may
  use plain HTTP, or HTTPS without certificate checks, whichever answers (Docker's rule).
* **Auth.** ``GET /v2/`` tells the scheme (``WWW-Authenticate``): Basic, or Bearer tokens
  from the challenge's realm, per scope, cached (see :mod:`minirun.image.auth`).
* **Redirects.** Blob downloads usually redirect to a CDN: redirects are followed, and
  the registry's ``Authorization`` is never sent to another host.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import json
import os
import threading
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from minirun.errors import AuthenticationError, RegistryError
from minirun.image import auth as _auth
from minirun.image import oci
from minirun.image.auth import Challenge, Credentials

DOCKER_HUB_REGISTRY = "docker.io"
DOCKER_HUB_HOST = "registry-1.docker.io"
CONFIG_PATH = "/etc/minirun/registries.json"
USER_AGENT = "minirun/0.1 (+distribution-api-v2)"
MANIFEST_ACCEPT = ", ".join((oci.OCI_INDEX, oci.DOCKER_MANIFEST_LIST, oci.OCI_MANIFEST, oci.DOCKER_MANIFEST,
                             # asked for so a legacy-only image gets a clear error, not a 404
                             oci.DOCKER_MANIFEST_V1_SIGNED + ";q=0.1"))
MANIFEST_LIMIT = 32 << 20
_MAX_REDIRECTS = 5
_TIMEOUT = float(os.environ.get("MINIRUN_REGISTRY_TIMEOUT", "60"))

Progress = Callable[[int], None]  # bytes moved since the last call


# -- configuration ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RegistryConfig:
    """Which registries may use plain HTTP, and Docker Hub's mirror."""

    insecure: tuple[str, ...] = ()
    mirror: str = ""

    @classmethod
    def load(cls, insecure: Iterable[str] = (), mirror: str | None = None,
             path: str | None = None) -> RegistryConfig:
        """Merge ``insecure`` (``--insecure-registry``), ``MINIRUN_INSECURE_REGISTRIES`` (comma
        list), ``MINIRUN_REGISTRY_MIRROR`` and the config file (``MINIRUN_REGISTRIES_CONFIG``,
        default /etc/minirun/registries.json: ``{"insecure-registries": [...],
        "registry-mirrors": [...]}``, the keys of Docker's daemon.json)."""
        names = [s.strip() for s in insecure if s.strip()]
        names += [s.strip() for s in os.environ.get("MINIRUN_INSECURE_REGISTRIES", "").split(",") if s.strip()]
        file_mirror = ""
        cfg_path = Path(path or os.environ.get("MINIRUN_REGISTRIES_CONFIG") or CONFIG_PATH)
        try:
            doc = json.loads(cfg_path.read_bytes())
        except FileNotFoundError:
            doc = {}
        except (OSError, ValueError) as e:
            raise RegistryError(f"cannot read the registry config {cfg_path}: {e}") from None
        if isinstance(doc, dict):
            names += [str(s) for s in doc.get("insecure-registries") or [] if str(s).strip()]
            mirrors = doc.get("registry-mirrors") or []
            if isinstance(mirrors, list) and mirrors:
                file_mirror = str(mirrors[0])
        env_mirror = os.environ.get("MINIRUN_REGISTRY_MIRROR", "").strip()
        return cls(tuple(dict.fromkeys(names)), mirror if mirror is not None else (env_mirror or file_mirror))


def split_host_port(netloc: str) -> tuple[str, int | None]:
    """``host``, ``host:5000``, ``[::1]:5000`` -> (host, port)."""
    if netloc.startswith("["):
        host, _, rest = netloc[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif netloc.count(":") == 1:
        host, _, port = netloc.partition(":")
    else:
        host, port = netloc, ""
    return host.lower(), int(port) if port.isdigit() else None


def is_loopback(netloc: str) -> bool:
    host, _ = split_host_port(netloc)
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_insecure(netloc: str, insecure: Sequence[str] = ()) -> bool:
    """May ``netloc`` be spoken to over plain HTTP? Loopback always; others when listed
    (as ``host:port``, as ``host`` for any port, or inside a listed CIDR range)."""
    if is_loopback(netloc):
        return True
    host, _ = split_host_port(netloc)
    for entry in insecure:
        e = entry.strip().lower()
        for scheme in ("http://", "https://"):
            if e.startswith(scheme):
                e = e[len(scheme):]
        e = e.rstrip("/")
        if e == netloc.lower() or e == host:
            return True
        if "/" in e:
            with contextlib.suppress(ValueError):
                if ipaddress.ip_address(host) in ipaddress.ip_network(e, strict=False):
                    return True
    return False


@dataclass(frozen=True)
class Endpoint:
    scheme: str  # "https" or "http"
    netloc: str  # host[:port]
    verify: bool = True  # check the TLS certificate

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.netloc}"


def endpoints_for(registry: str, config: RegistryConfig | None = None) -> list[Endpoint]:
    """Where to reach ``registry`` (a reference's domain), in the order to try."""
    cfg = config or RegistryConfig()
    if registry == DOCKER_HUB_REGISTRY:
        if cfg.mirror:
            m = cfg.mirror.strip().rstrip("/")
            if m.startswith(("http://", "https://")):
                u = urllib.parse.urlsplit(m)
                insecure = is_insecure(u.netloc, cfg.insecure)
                return [Endpoint(u.scheme, u.netloc, verify=not insecure)]
            return _candidates(m, cfg)
        return [Endpoint("https", DOCKER_HUB_HOST)]
    return _candidates(registry, cfg)


def _candidates(netloc: str, cfg: RegistryConfig) -> list[Endpoint]:
    if is_loopback(netloc):  # a local test registry nearly always speaks plain HTTP
        return [Endpoint("http", netloc), Endpoint("https", netloc, verify=False)]
    if is_insecure(netloc, cfg.insecure):
        return [Endpoint("https", netloc, verify=False), Endpoint("http", netloc)]
    return [Endpoint("https", netloc)]


# -- HTTP ---------------------------------------------------------------------------------


@dataclass
class FileBody:
    """A request body read from a file slice, re-readable for a retry, reporting progress."""

    path: Path
    offset: int = 0
    length: int = -1
    progress: Progress | None = None

    def size(self) -> int:
        return self.path.stat().st_size - self.offset if self.length < 0 else self.length


class _Reader:
    def __init__(self, body: FileBody) -> None:
        self.f = open(body.path, "rb")  # noqa: SIM115 - closed by close()
        self.f.seek(body.offset)
        self.left = body.size()
        self.progress = body.progress

    def read(self, n: int = -1) -> bytes:
        if self.left <= 0:
            return b""
        n = self.left if n < 0 else min(n, self.left)
        b = self.f.read(n)
        self.left -= len(b)
        if self.progress and b:
            self.progress(len(b))
        return b

    def close(self) -> None:
        self.f.close()


@dataclass(eq=False)
class Response:
    status: int
    headers: http.client.HTTPMessage
    url: str
    raw: http.client.HTTPResponse | None = None  # set for streamed responses
    body: bytes = b""
    _release: Callable[[bool], None] | None = field(default=None, repr=False)
    _conn: http.client.HTTPConnection | None = field(default=None, repr=False)

    def header(self, name: str) -> str:
        return self.headers.get(name, "") or ""

    def read(self, n: int = -1) -> bytes:
        assert self.raw is not None
        return self.raw.read(n)

    def abort(self) -> None:
        """Break the connection from another thread: a read blocked on it returns at once."""
        sock = self._conn.sock if self._conn is not None else None
        if sock is not None:
            import socket

            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self, reusable: bool = False) -> None:
        """Give the connection back (if the body was read to its end) or drop it."""
        if self._release is not None:
            self._release(reusable and self.raw is not None and self.raw.isclosed())
            self._release = None


class Transport:
    """Keep-alive ``http.client`` connections, one per (scheme, host, verify) and thread."""

    def __init__(self, timeout: float = _TIMEOUT) -> None:
        self.timeout = timeout
        self._local = threading.local()
        self._ssl: dict[bool, Any] = {}

    def _pool(self) -> dict[tuple[str, str, bool], http.client.HTTPConnection]:
        pool = getattr(self._local, "pool", None)
        if pool is None:
            pool = self._local.pool = {}
        return pool

    def _context(self, verify: bool) -> Any:
        if verify not in self._ssl:
            import ssl

            ctx = ssl.create_default_context()
            if not verify:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            self._ssl[verify] = ctx
        return self._ssl[verify]

    def _connect(self, scheme: str, netloc: str, verify: bool) -> http.client.HTTPConnection:
        host, port = split_host_port(netloc)
        if scheme == "https":
            return http.client.HTTPSConnection(host, port, timeout=self.timeout,
                                               context=self._context(verify), blocksize=1 << 18)
        return http.client.HTTPConnection(host, port, timeout=self.timeout, blocksize=1 << 18)

    def close(self) -> None:
        pool = getattr(self._local, "pool", None) or {}
        for c in pool.values():
            c.close()
        pool.clear()

    def request(self, method: str, url: str, headers: dict[str, str], body: bytes | FileBody | None = None,
                stream: bool = False, verify: bool = True) -> Response:
        u = urllib.parse.urlsplit(url)
        if u.scheme not in ("http", "https"):
            raise RegistryError(f"unsupported URL scheme in {url!r}")
        path = u.path or "/"
        if u.query:
            path += "?" + u.query
        key = (u.scheme, u.netloc, verify)
        pool = self._pool()
        hdrs = {"User-Agent": USER_AGENT, **headers}
        if body is None and method in ("PUT", "POST", "PATCH"):
            hdrs.setdefault("Content-Length", "0")
        for attempt in (0, 1):
            conn = pool.pop(key, None)
            reused = conn is not None
            if conn is None:
                conn = self._connect(u.scheme, u.netloc, verify)
            reader: _Reader | None = None
            try:
                if isinstance(body, FileBody):
                    reader = _Reader(body)
                    hdrs["Content-Length"] = str(body.size())
                    conn.request(method, path, body=reader, headers=hdrs)
                else:
                    conn.request(method, path, body=body, headers=hdrs)
                resp = conn.getresponse()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as e:
                conn.close()
                if reused and attempt == 0:  # a stale keep-alive connection: once more, fresh
                    continue
                raise RegistryError(f"connection to {u.netloc} failed: {_oserror(e)}") from None
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                raise RegistryError(f"cannot reach {u.scheme}://{u.netloc}: {_oserror(e)}") from None
            finally:
                if reader is not None:
                    reader.close()

            def release(reusable: bool, conn: http.client.HTTPConnection = conn) -> None:
                if reusable and key not in pool:
                    pool[key] = conn
                else:
                    conn.close()

            if method == "HEAD" or not stream:
                try:
                    data = resp.read()
                except (OSError, http.client.HTTPException) as e:
                    conn.close()
                    raise RegistryError(f"connection to {u.netloc} broke: {_oserror(e)}") from None
                r = Response(resp.status, resp.headers, url, None, data)
                release(not resp.will_close)
                return r
            return Response(resp.status, resp.headers, url, resp, b"", release, conn)
        raise AssertionError("unreachable")


def _oserror(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__


def registry_error(resp: Response, what: str) -> RegistryError:
    """The registry's JSON error (``{"errors": [{"code", "message"}]}``) as a typed error."""
    code, message = "", ""
    with contextlib.suppress(ValueError, TypeError, AttributeError, IndexError):
        errs = json.loads(resp.body[:65536]).get("errors") or []
        code = str(errs[0].get("code", ""))
        message = str(errs[0].get("message", ""))
    detail = f"{message or code}" if (message or code) else f"HTTP {resp.status}"
    if resp.status == 401:
        return AuthenticationError(f"{what}: unauthorized ({detail}); "
                                   "check the name, or log in with 'minirun login REGISTRY'", 401, code)
    if resp.status == 403:
        return AuthenticationError(f"{what}: denied ({detail})", 403, code)
    if resp.status == 404:
        return RegistryError(f"{what}: not found ({detail})", 404, code or "NOT_FOUND")
    if resp.status == 429:
        return RegistryError(f"{what}: the registry's rate limit was reached; try again later", 429, code)
    if resp.status >= 500:
        return RegistryError(f"{what}: the registry failed (HTTP {resp.status}: {detail}); try again later",
                             resp.status, code)
    return RegistryError(f"{what}: the registry answered HTTP {resp.status} ({detail})", resp.status, code)


# -- the client -------------------------------------------------------------------------------


class RegistryClient:
    """One registry: ping, authenticate, then manifests, blobs and uploads by repository.

    Thread-safe: the layer workers share it (tokens are shared, connections per thread)."""

    def __init__(self, registry: str, config: RegistryConfig | None = None,
                 credentials: Credentials | None = None, *, use_stored_credentials: bool = True,
                 transport: Transport | None = None) -> None:
        self.registry = registry
        self.config = config or RegistryConfig.load()
        self.credentials = credentials
        if credentials is None and use_stored_credentials:
            from minirun.image import credentials as creds_file

            self.credentials = creds_file.lookup(registry)
        self.transport = transport or Transport()
        self.endpoint: Endpoint | None = None
        self.challenge: Challenge | None = None
        self.tokens = _auth.TokenCache()
        self.token_requests = 0  # how many tokens this client asked for (tests, stats)
        self._lock = threading.Lock()

    # -- ping and auth -------------------------------------------------------------------

    def ping(self) -> Endpoint:
        """``GET /v2/`` on the first endpoint that answers; remembers the auth challenge."""
        with self._lock:
            if self.endpoint is not None:
                return self.endpoint
            errors = []
            for ep in endpoints_for(self.registry, self.config):
                try:
                    resp = self.transport.request("GET", ep.url + "/v2/", {}, verify=ep.verify)
                except RegistryError as e:
                    errors.append(str(e))
                    continue
                if resp.status == 400 and ep.scheme == "http":
                    errors.append(f"{ep.url} speaks HTTPS")  # Go's answer to plain HTTP on a TLS port
                    continue
                if resp.status == 401:
                    challenges = _auth.parse_www_authenticate(resp.header("WWW-Authenticate"))
                    self.challenge = next((c for c in challenges if c.scheme == "bearer"),
                                          next((c for c in challenges if c.scheme == "basic"), None))
                elif resp.status not in (200, 404):  # 404: a v2 registry behind a strict proxy
                    errors.append(f"{ep.url}/v2/ answered HTTP {resp.status}")
                    continue
                self.endpoint = ep
                return ep
            where = self.registry if self.registry == self._shown() else f"{self.registry} ({self._shown()})"
            tls = any(w in e for e in errors for w in ("SSL", "certificate", "wrong version"))
            raise RegistryError(f"cannot reach registry {where}: {'; '.join(errors)}"
                                + (" (for a registry without TLS or with a self-signed certificate, "
                                   "use --insecure-registry)" if tls and not is_loopback(self.registry) else ""))

    def _shown(self) -> str:
        eps = endpoints_for(self.registry, self.config)
        return eps[0].netloc if eps else self.registry

    def _token(self, scopes: tuple[str, ...], force: bool = False) -> str:
        ch = self.challenge
        assert ch is not None
        realm = ch.params.get("realm", "")
        service = ch.params.get("service", "")
        user = self.credentials.username if self.credentials else ""
        key = (realm, service, scopes, user)
        if not force:
            cached = self.tokens.get(key)
            if cached:
                return cached
        u = urllib.parse.urlsplit(realm)
        if u.scheme not in ("http", "https") or not u.netloc:
            raise RegistryError(f"registry {self.registry} names an invalid token realm {realm!r}")
        if u.scheme == "http" and not is_insecure(u.netloc, self.config.insecure):
            raise RegistryError(f"registry {self.registry} wants tokens over plain HTTP from {u.netloc}; "
                                "refused (add it with --insecure-registry if that is intended)")
        query = [("service", service)] if service else []
        query += [("scope", s) for s in scopes]
        if self.credentials:
            query.append(("account", self.credentials.username))
        sep = "&" if u.query else "?"
        url = realm + (sep + urllib.parse.urlencode(query) if query else "")
        headers = {"Authorization": self.credentials.basic_header()} if self.credentials else {}
        verify = not is_insecure(u.netloc, self.config.insecure)  # (a self-signed test realm)
        resp = self.transport.request("GET", url, headers, verify=verify)
        self.token_requests += 1
        if resp.status in (401, 403):
            raise _auth.unauthorized(f"token service {u.netloc}", anonymous=self.credentials is None)
        if resp.status != 200:
            raise registry_error(resp, f"token service {u.netloc}")
        token, ttl = _auth.parse_token_response(resp.body)
        self.tokens.put(key, token, ttl)
        return token

    def _auth_header(self, scopes: tuple[str, ...], force: bool = False) -> dict[str, str]:
        ch = self.challenge
        if ch is None:
            return {}
        if ch.scheme == "basic":
            return {"Authorization": self.credentials.basic_header()} if self.credentials else {}
        if ch.scheme == "bearer":
            return {"Authorization": "Bearer " + self._token(scopes, force)}
        raise RegistryError(f"registry {self.registry} wants unsupported authentication {ch.scheme!r}")

    def login_check(self) -> None:
        """Verify the credentials against the registry (``minirun login``)."""
        ep = self.ping()
        if self.challenge is None:
            return
        if self.challenge.scheme == "bearer":
            self._token((), force=True)
            return
        resp = self.transport.request("GET", ep.url + "/v2/", self._auth_header(()), verify=ep.verify)
        if resp.status == 401:
            raise _auth.unauthorized(f"registry {self.registry}", anonymous=self.credentials is None)
        if resp.status != 200:
            raise registry_error(resp, f"registry {self.registry}")

    def request(self, method: str, path_or_url: str, scopes: Sequence[str], *, what: str,
                headers: dict[str, str] | None = None, body: bytes | FileBody | None = None,
                stream: bool = False, ok: Sequence[int] = (200,), follow: bool = False) -> Response:
        """One authenticated request; a 401 refreshes the token once (the challenge may ask
        for more scope). Responses not in ``ok`` become typed errors."""
        ep = self.ping()
        url = path_or_url if "://" in path_or_url else ep.url + path_or_url
        scope_t = tuple(sorted(set(scopes)))
        hdrs = dict(headers or {})
        for attempt in (0, 1):
            auth_hdr = self._auth_header(scope_t, force=attempt == 1) if self._same_host(url) else {}
            resp = self._send(method, url, {**hdrs, **auth_hdr}, body, stream, follow)
            if resp.status == 401 and attempt == 0:
                resp.close()
                challenges = _auth.parse_www_authenticate(resp.header("WWW-Authenticate"))
                fresh = next((c for c in challenges if c.scheme == "bearer"),
                             next((c for c in challenges if c.scheme == "basic"), None))
                if fresh is None or (fresh.scheme == "basic" and not self.credentials):
                    break
                self.challenge = fresh
                # the challenge may name more scope than asked for (a mount's source repo)
                extra = fresh.params.get("scope", "") if fresh.scheme == "bearer" else ""
                scope_t = tuple(sorted(set(scope_t) | set(extra.split())))
                continue
            if resp.status in ok:
                return resp
            if stream and resp.raw is not None:
                with contextlib.suppress(OSError, http.client.HTTPException):
                    resp.body = resp.raw.read(65536)
                resp.close()
            if resp.status == 401:
                raise _auth.unauthorized(what, anonymous=self.credentials is None)
            raise registry_error(resp, what)
        raise _auth.unauthorized(what, anonymous=self.credentials is None)

    def _same_host(self, url: str) -> bool:
        assert self.endpoint is not None
        u = urllib.parse.urlsplit(url)
        return (u.scheme, u.netloc) == (self.endpoint.scheme, self.endpoint.netloc)

    def _send(self, method: str, url: str, headers: dict[str, str], body: bytes | FileBody | None,
              stream: bool, follow: bool) -> Response:
        assert self.endpoint is not None
        origin = urllib.parse.urlsplit(url)[:2]
        for _ in range(_MAX_REDIRECTS + 1):
            same = urllib.parse.urlsplit(url)[:2] == origin
            verify = self.endpoint.verify if same else True
            resp = self.transport.request(method, url, headers, body, stream, verify)
            if not (follow and resp.status in (301, 302, 303, 307, 308) and resp.header("Location")):
                return resp
            resp.close(reusable=True)
            url = urllib.parse.urljoin(url, resp.header("Location"))
            if urllib.parse.urlsplit(url)[:2] != origin:
                # Never hand the registry's credentials to another host (a CDN, or worse).
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
        raise RegistryError(f"too many redirects fetching {url}")

    # -- manifests and blobs ---------------------------------------------------------------

    def get_manifest(self, repository: str, reference: str) -> tuple[bytes, str, str]:
        """(bytes, Content-Type, Docker-Content-Digest header or "")."""
        resp = self.request("GET", f"/v2/{repository}/manifests/{reference}",
                            [_auth.scope_for(repository, "pull")], what=f"manifest {repository}:{reference}"
                            if not reference.startswith("sha256:") else f"manifest {repository}@{reference}",
                            headers={"Accept": MANIFEST_ACCEPT}, follow=True)
        if len(resp.body) > MANIFEST_LIMIT:
            raise RegistryError(f"manifest {repository}:{reference} is larger than {MANIFEST_LIMIT >> 20} MiB")
        ctype = resp.header("Content-Type").split(";")[0].strip()
        return resp.body, ctype, resp.header("Docker-Content-Digest")

    def open_blob(self, repository: str, digest: str) -> Response:
        """A streamed blob download (redirects followed); the caller reads and closes it."""
        return self.request("GET", f"/v2/{repository}/blobs/{digest}", [_auth.scope_for(repository, "pull")],
                            what=f"blob {digest[:19]} of {repository}", stream=True, follow=True)

    def get_blob(self, repository: str, digest: str, limit: int = MANIFEST_LIMIT) -> bytes:
        resp = self.open_blob(repository, digest)
        try:
            data = resp.read(limit + 1)
            if len(data) > limit:
                raise RegistryError(f"blob {digest} of {repository} is larger than {limit >> 20} MiB")
            rest = resp.read()
            if rest:
                raise RegistryError(f"blob {digest} of {repository} is larger than {limit >> 20} MiB")
        except (OSError, http.client.HTTPException) as e:
            resp.close()
            raise RegistryError(f"download of {digest[:19]} broke: {_oserror(e)}") from None
        resp.close(reusable=True)
        return data

    def has_blob(self, repository: str, digest: str, actions: str = "pull,push") -> bool:
        resp = self.request("HEAD", f"/v2/{repository}/blobs/{digest}",
                            [_auth.scope_for(repository, actions)], what=f"blob {digest[:19]}",
                            ok=(200, 404), follow=True)
        return resp.status == 200

    def start_upload(self, repository: str, mount: str = "", from_repo: str = "") -> tuple[str, bool]:
        """``POST /v2/<name>/blobs/uploads/`` (with ``?mount=&from=`` for a cross-repository
        mount). Returns (upload URL, mounted?): a 201 means the blob was mounted."""
        scopes = [_auth.scope_for(repository, "pull,push")]
        path = f"/v2/{repository}/blobs/uploads/"
        if mount and from_repo:
            path += "?" + urllib.parse.urlencode({"mount": mount, "from": from_repo})
            scopes.append(_auth.scope_for(from_repo, "pull"))
        resp = self.request("POST", path, scopes, what=f"upload to {repository}", ok=(201, 202))
        if resp.status == 201:
            return "", True
        loc = resp.header("Location")
        if not loc:
            raise RegistryError(f"upload to {repository}: the registry gave no upload location")
        assert self.endpoint is not None
        return urllib.parse.urljoin(self.endpoint.url + path, loc), False

    def upload_blob(self, repository: str, location: str, path: Path, digest: str,
                    progress: Progress | None = None, chunk_size: int = 0) -> None:
        """Send a blob to an upload session: one ``PUT ?digest=`` with the whole body
        (monolithic), or ``PATCH`` chunks with ``Content-Range`` then an empty ``PUT``."""
        scopes = [_auth.scope_for(repository, "pull,push")]
        size = path.stat().st_size
        what = f"upload of {digest[:19]} to {repository}"
        body: FileBody | None
        if chunk_size and size > chunk_size:
            offset = 0
            while offset < size:
                n = min(chunk_size, size - offset)
                resp = self.request("PATCH", location, scopes, what=what, ok=(202,),
                                    headers={"Content-Type": "application/octet-stream",
                                             "Content-Range": f"{offset}-{offset + n - 1}"},
                                    body=FileBody(path, offset, n, progress))
                offset += n
                loc = resp.header("Location")
                if loc:
                    location = urllib.parse.urljoin(location, loc)
            body = None
        else:
            body = FileBody(path, 0, size, progress)
        u = urllib.parse.urlsplit(location)
        query = urllib.parse.parse_qsl(u.query, keep_blank_values=True) + [("digest", digest)]
        put_url = urllib.parse.urlunsplit((u.scheme, u.netloc, u.path, urllib.parse.urlencode(query), ""))
        self.request("PUT", put_url, scopes, what=what, ok=(201, 204),
                     headers={"Content-Type": "application/octet-stream"}, body=body)

    def put_manifest(self, repository: str, reference: str, data: bytes, media_type: str) -> str:
        resp = self.request("PUT", f"/v2/{repository}/manifests/{reference}",
                            [_auth.scope_for(repository, "pull,push")], what=f"manifest {repository}:{reference}",
                            headers={"Content-Type": media_type}, body=data, ok=(201, 202))
        return resp.header("Docker-Content-Digest")

    def close(self) -> None:
        self.transport.close()
