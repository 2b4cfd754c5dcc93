"""~/.docker/config.json: lookup, SUDO_USER's file, login/logout writes."""

from __future__ import annotations

import base64
import json
import os
import pwd
import stat
from pathlib import Path

import pytest

from minirun.errors import RegistryError
from minirun.image import credentials
from minirun.image.auth import Credentials


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    monkeypatch.setenv("HOME", str(h))
    monkeypatch.delenv("DOCKER_CONFIG", raising=False)
    monkeypatch.delenv("SUDO_USER", raising=False)
    return h


def write_config(path: Path, doc: dict[str, object]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def test_lookup_from_config_json(home: Path) -> None:
    write_config(home / ".docker" / "config.json", {"auths": {
        "https://index.docker.io/v1/": {"auth": _b64("hubuser:hubpass")},
        "registry.example.com:5000": {"auth": _b64("bob:pa:ss")},  # ':' in the password
        "https://ghcr.io": {"username": "carol", "password": "x"},
        "empty.example.com": {},
    }})
    assert credentials.config_path() == home / ".docker" / "config.json"
    assert credentials.lookup("docker.io") == Credentials("hubuser", "hubpass")
    assert credentials.lookup("registry-1.docker.io") == Credentials("hubuser", "hubpass")
    assert credentials.lookup("registry.example.com:5000") == Credentials("bob", "pa:ss")
    assert credentials.lookup("ghcr.io") == Credentials("carol", "x")
    assert credentials.lookup("registry.example.com") is None
    assert credentials.lookup("empty.example.com") is None


def test_missing_or_broken_file(home: Path) -> None:
    assert credentials.lookup("docker.io") is None  # no file at all
    write_config(home / ".docker" / "config.json", {"credsStore": "desktop"})
    assert credentials.lookup("docker.io") is None
    (home / ".docker" / "config.json").write_text("{not json")
    with pytest.raises(RegistryError, match="not valid JSON"):
        credentials.lookup("docker.io")
    write_config(home / ".docker" / "config.json", {"auths": {"r.io": {"auth": _b64("nocolon")}}})
    with pytest.raises(RegistryError, match="minirun login"):
        credentials.lookup("r.io")


def test_docker_config_env(tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "elsewhere"))
    write_config(tmp_path / "elsewhere" / "config.json", {"auths": {"r.io": {"auth": _b64("u:p")}}})
    assert credentials.lookup("r.io") == Credentials("u", "p")


def test_sudo_user_file(tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    user_home = tmp_path / "invoker"
    write_config(user_home / ".docker" / "config.json", {"auths": {"r.io": {"auth": _b64("inv:pw")}}})
    monkeypatch.setenv("SUDO_USER", "invoker")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    fake = pwd.struct_passwd(("invoker", "x", 1000, 1000, "", str(user_home), "/bin/sh"))
    monkeypatch.setattr(pwd, "getpwnam", lambda name: fake if name == "invoker" else pwd.getpwnam(name))
    assert credentials.config_path() == user_home / ".docker" / "config.json"
    assert credentials.lookup("r.io") == Credentials("inv", "pw")
    monkeypatch.setenv("SUDO_USER", "root")  # sudo from root: root's own file
    assert credentials.config_path() == home / ".docker" / "config.json"


def test_store_and_remove(home: Path) -> None:
    cfg = write_config(home / ".docker" / "config.json",
                       {"auths": {"https://other.io": {"auth": _b64("o:o")}}, "psFormat": "table"})
    credentials.store("docker.io", Credentials("me", "secret"))
    credentials.store("127.0.0.1:5000", Credentials("a", "b"))
    credentials.store("https://127.0.0.1:5000", Credentials("a", "c"))  # replaces, does not add
    doc = json.loads(cfg.read_text())
    assert doc["psFormat"] == "table"
    assert set(doc["auths"]) == {"https://other.io", "https://index.docker.io/v1/", "127.0.0.1:5000"}
    assert doc["auths"]["https://index.docker.io/v1/"] == {"auth": _b64("me:secret")}
    assert credentials.lookup("127.0.0.1:5000") == Credentials("a", "c")
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o600
    assert credentials.remove("docker.io")
    assert not credentials.remove("docker.io")
    assert credentials.lookup("docker.io") is None
    assert credentials.lookup("other.io") == Credentials("o", "o")


def test_store_creates_private_dir(home: Path) -> None:
    path = credentials.store("r.io", Credentials("u", "p"))
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
