"""WWW-Authenticate parsing, token responses, and secrets kept out of reprs."""

from __future__ import annotations

import pytest

from minirun.errors import RegistryError
from minirun.image.auth import (
    Challenge,
    Credentials,
    TokenCache,
    parse_token_response,
    parse_www_authenticate,
)


def test_docker_hub_bearer_challenge() -> None:
    h = 'Bearer realm="https://auth.docker.io/token",service="registry.docker.io"'
    assert parse_www_authenticate(h) == [
        Challenge("bearer", {"realm": "https://auth.docker.io/token", "service": "registry.docker.io"})]


def test_quoted_commas_escapes_and_scope() -> None:
    h = ('Bearer realm="https://a.example/token?x=1,2",service="reg, with comma",'
         'scope="repository:library/busybox:pull,push",error="insufficient_scope",note="say \\"hi\\""')
    (c,) = parse_www_authenticate(h)
    assert c.scheme == "bearer"
    assert c.params["realm"] == "https://a.example/token?x=1,2"
    assert c.params["service"] == "reg, with comma"
    assert c.params["scope"] == "repository:library/busybox:pull,push"
    assert c.params["error"] == "insufficient_scope"
    assert c.params["note"] == 'say "hi"'


def test_basic_and_several_challenges() -> None:
    assert parse_www_authenticate('Basic realm="Registry Realm"') == [Challenge("basic", {"realm": "Registry Realm"})]
    cs = parse_www_authenticate('Basic realm="r1", Bearer realm="https://t/token", service=s')
    assert [c.scheme for c in cs] == ["basic", "bearer"]
    assert cs[1].params == {"realm": "https://t/token", "service": "s"}


def test_case_spaces_and_junk() -> None:
    (c,) = parse_www_authenticate('  BEARER   Realm = "https://t/x" ,  Service=svc  ')
    assert c.scheme == "bearer" and c.params == {"realm": "https://t/x", "service": "svc"}
    assert parse_www_authenticate("") == []
    assert parse_www_authenticate('Bearer realm="unterminated')[0].params["realm"] == "unterminated"


def test_token_response() -> None:
    assert parse_token_response(b'{"token": "abc", "expires_in": 120}') == ("abc", 120.0)
    assert parse_token_response(b'{"access_token": "xyz"}') == ("xyz", 60.0)
    with pytest.raises(RegistryError, match="no token"):
        parse_token_response(b'{"nothing": 1}')
    with pytest.raises(RegistryError, match="not JSON"):
        parse_token_response(b"<html>")


@pytest.mark.parametrize(
    "body", [b"[" * 100_000, b'{"token": "t", "n": 1' + b"0" * 5000 + b"}", b"\xff\xfe"]
)
def test_token_response_beyond_json_limits(body: bytes) -> None:
    # RecursionError (deep nesting) and int()'s digit limit (ValueError) are not
    # JSONDecodeErrors: both must still be the registry's invalid response
    with pytest.raises(RegistryError, match="invalid response"):
        parse_token_response(body)


@pytest.mark.parametrize(
    ("expires_in", "ttl"),
    [(b"1" + b"0" * 400, 86400.0), (b"1e400", 86400.0), (b"Infinity", 86400.0), (b"NaN", 60.0),
     (b"true", 60.0), (b"-5", 60.0), (b"100000", 86400.0), (b"0.5", 0.5)],
)
def test_token_response_expires_in_bounds(expires_in: bytes, ttl: float) -> None:
    body = b'{"token": "t", "expires_in": ' + expires_in + b"}"
    assert parse_token_response(body) == ("t", ttl)


def test_token_cache_expiry() -> None:
    c = TokenCache()
    key = ("realm", "svc", ("repository:a:pull",), "")
    c.put(key, "t1", 300)
    assert c.get(key) == "t1"
    assert c.get(("realm", "svc", ("repository:b:pull",), "")) is None
    c.put(key, "t2", 1)  # expires within the 5 s safety margin: not reused
    assert c.get(key) is None


def test_credentials_never_show_the_password() -> None:
    creds = Credentials("alice", "hunter2")
    assert "hunter2" not in repr(creds) and "hunter2" not in str(creds)
    assert creds.basic_header() == "Basic YWxpY2U6aHVudGVyMg=="
