"""Registry authentication: ``WWW-Authenticate`` challenges, Basic, Bearer tokens.

A registry answers ``GET /v2/`` (or any request) with ``401`` and a challenge::

    WWW-Authenticate: Bearer realm="https://auth.docker.io/token",service="registry.docker.io"

For ``Basic`` the client repeats the request with ``Authorization: Basic b64(user:pass)``.
For ``Bearer`` it asks the realm for a token (``GET realm?service=...&scope=...``, with
Basic credentials when it has some, anonymously otherwise: distribution's token spec) and
sends ``Authorization: Bearer <token>``. Tokens are cached per scope set until they expire,
so one pull asks for one token.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from dataclasses import dataclass, field

from minirun.errors import AuthenticationError, RegistryError

_TOKEN_LIMIT = 1 << 20
# A token is reused at most this long (s), whatever expires_in says: it is held in memory by
# one process, and a huge or infinite value must not overflow float() or time arithmetic.
_MAX_TTL = 24 * 3600.0


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    def basic_header(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def __repr__(self) -> str:  # never show a secret, not even in a traceback
        return f"Credentials(username={self.username!r}, password=***)"


@dataclass(frozen=True)
class Challenge:
    scheme: str  # lower case: "bearer", "basic"
    params: dict[str, str] = field(default_factory=dict)  # keys lower case


def parse_www_authenticate(header: str) -> list[Challenge]:
    """Parse RFC 7235 challenges: ``scheme k=v, k="quoted, with \\" escapes", Other k=v``.

    Several challenges may share one header; a parameter value may be a token or a
    quoted string holding commas. Malformed pieces are skipped, never fatal."""
    out: list[Challenge] = []
    i, n = 0, len(header)
    current: Challenge | None = None

    def skip(chars: str) -> None:
        nonlocal i
        while i < n and header[i] in chars:
            i += 1

    def token() -> str:
        nonlocal i
        start = i
        while i < n and header[i] not in ' \t,="':
            i += 1
        return header[start:i]

    while i < n:
        skip(" \t,")
        if i >= n:
            break
        name = token()
        if not name:  # a stray character: skip it
            i += 1
            continue
        j = i
        while j < n and header[j] in " \t":
            j += 1
        if j < n and header[j] == "=" and current is not None:
            # key=value (token68 values, which end in '=', are not used by registries)
            i = j + 1
            skip(" \t")
            if i < n and header[i] == '"':
                i += 1
                buf = []
                while i < n and header[i] != '"':
                    if header[i] == "\\" and i + 1 < n:
                        i += 1
                    buf.append(header[i])
                    i += 1
                i += 1  # closing quote
                value = "".join(buf)
            else:
                value = token()
            current.params[name.lower()] = value
        else:
            current = Challenge(name.lower(), {})
            out.append(current)
            i = j
    return out


def scope_for(repository: str, actions: str = "pull") -> str:
    """A token scope: ``repository:library/busybox:pull`` (actions comma-separated)."""
    return f"repository:{repository}:{actions}"


@dataclass
class _Token:
    value: str
    expires: float


class TokenCache:
    """Bearer tokens by (realm, service, scopes), reused until shortly before expiry."""

    def __init__(self) -> None:
        self._tokens: dict[tuple[str, str, tuple[str, ...], str], _Token] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str, tuple[str, ...], str]) -> str | None:
        with self._lock:
            t = self._tokens.get(key)
            if t and t.expires > time.time() + 5:
                return t.value
            return None

    def put(self, key: tuple[str, str, tuple[str, ...], str], value: str, expires_in: float) -> None:
        with self._lock:
            self._tokens[key] = _Token(value, time.time() + expires_in)

    def drop(self, key: tuple[str, str, tuple[str, ...], str]) -> None:
        with self._lock:
            self._tokens.pop(key, None)


def parse_token_response(body: bytes) -> tuple[str, float]:
    """``{"token": ..., "expires_in": 300}`` (``access_token`` is the OAuth2 alias)."""
    try:
        doc = json.loads(body[:_TOKEN_LIMIT])
    except (ValueError, RecursionError):
        # ValueError: JSONDecodeError, UnicodeDecodeError, and an integer of more digits than
        # int()'s limit; RecursionError: arrays or objects nested too deep
        raise RegistryError("the registry's token service sent an invalid response (not JSON)") from None
    if not isinstance(doc, dict):
        raise RegistryError("the registry's token service sent an invalid response")
    token = doc.get("token") or doc.get("access_token")
    if not isinstance(token, str) or not token:
        raise RegistryError("the registry's token service sent no token")
    expires_in = doc.get("expires_in")
    # distribution's token spec: 60 s when the server does not say
    ttl = 60.0
    if isinstance(expires_in, int | float) and not isinstance(expires_in, bool) and expires_in > 0:
        ttl = float(min(expires_in, _MAX_TTL))  # min() first: float(10**400) overflows
    return token, ttl


def unauthorized(what: str, anonymous: bool) -> AuthenticationError:
    if anonymous:
        return AuthenticationError(
            f"{what}: access denied; the repository does not exist or needs credentials "
            "(try 'minirun login REGISTRY')", 401, "UNAUTHORIZED")
    return AuthenticationError(
        f"{what}: access denied with the stored credentials (wrong user or password, "
        "or no permission; run 'minirun login REGISTRY' again)", 401, "UNAUTHORIZED")
