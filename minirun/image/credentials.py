"""Registry credentials in Docker's own file, ``~/.docker/config.json``::

    {"auths": {"https://index.docker.io/v1/": {"auth": "<base64 user:password>"},
               "registry.example.com:5000": {"auth": "..."}}}

Docker Hub's key is ``https://index.docker.io/v1/`` (what ``docker login`` writes);
other registries are keyed by ``host[:port]``, sometimes with a scheme, which lookups
ignore. Under ``sudo`` the file is the invoking user's (``SUDO_USER``'s home), so
``sudo minirun pull`` uses what ``docker login`` stored for that user; ``DOCKER_CONFIG``
names another directory, as with Docker. Files are written 0600, secrets never printed.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
from pathlib import Path
from typing import Any

from minirun.errors import RegistryError
from minirun.image.auth import Credentials
from minirun.image.reference import DEFAULT_REGISTRY

DOCKER_HUB_KEY = "https://index.docker.io/v1/"
_HUB_ALIASES = {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}


def _sudo_user_home() -> Path | None:
    user = os.environ.get("SUDO_USER")
    if not user or user == "root" or os.geteuid() != 0:
        return None
    import pwd

    try:
        return Path(pwd.getpwnam(user).pw_dir)
    except KeyError:
        return None


def config_path() -> Path:
    """``$DOCKER_CONFIG/config.json``, else the (sudo-invoking) user's ``~/.docker/config.json``."""
    env = os.environ.get("DOCKER_CONFIG")
    if env:
        return Path(env) / "config.json"
    home = _sudo_user_home() or Path(os.path.expanduser("~"))
    return home / ".docker" / "config.json"


def normalize_key(key: str) -> str:
    """A config key or registry name as a bare ``host[:port]``; Docker Hub as ``docker.io``."""
    k = key.strip()
    for scheme in ("https://", "http://"):
        if k.startswith(scheme):
            k = k[len(scheme):]
    k = k.split("/", 1)[0].lower()
    return DEFAULT_REGISTRY if k in _HUB_ALIASES else k


def _read(path: Path) -> dict[str, Any]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise RegistryError(f"cannot read {path}: {e.strerror}") from None
    try:
        doc = json.loads(data) if data.strip() else {}
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RegistryError(f"{path} is not valid JSON ({e}); fix or remove it") from None
    if not isinstance(doc, dict):
        raise RegistryError(f"{path}: expected a JSON object")
    return doc


def _decode(entry: Any, key: str, path: Path) -> Credentials | None:
    if not isinstance(entry, dict):
        return None
    auth = entry.get("auth")
    if isinstance(auth, str) and auth:
        try:
            user, sep, password = base64.b64decode(auth, validate=False).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            raise RegistryError(f"{path}: the 'auth' entry for {key} is not base64 'user:password'; "
                                "run 'minirun login' again") from None
        if not sep:
            raise RegistryError(f"{path}: the 'auth' entry for {key} has no ':'; run 'minirun login' again")
        return Credentials(user, password)
    name, secret = entry.get("username"), entry.get("password")
    if isinstance(name, str) and isinstance(secret, str) and name:
        return Credentials(name, secret)
    return None


def lookup(registry: str, path: Path | None = None) -> Credentials | None:
    """The stored credentials for ``registry`` (``docker.io``, ``host:port``), if any."""
    path = path or config_path()
    auths = _read(path).get("auths")
    if not isinstance(auths, dict):
        return None
    want = normalize_key(registry)
    for key, entry in auths.items():
        if isinstance(key, str) and normalize_key(key) == want:
            creds = _decode(entry, key, path)
            if creds:
                return creds
    return None


def _key_for(registry: str) -> str:
    return DOCKER_HUB_KEY if normalize_key(registry) == DEFAULT_REGISTRY else normalize_key(registry)


def store(registry: str, creds: Credentials, path: Path | None = None) -> Path:
    """Write ``creds`` for ``registry`` (other keys of the file are kept). Returns the path."""
    path = path or config_path()
    doc = _read(path)
    auths = doc.get("auths")
    if not isinstance(auths, dict):
        auths = {}
    want = normalize_key(registry)
    for key in [k for k in auths if isinstance(k, str) and normalize_key(k) == want]:
        del auths[key]
    raw = f"{creds.username}:{creds.password}".encode()
    auths[_key_for(registry)] = {"auth": base64.b64encode(raw).decode()}
    doc["auths"] = auths
    _write(path, doc)
    return path


def remove(registry: str, path: Path | None = None) -> bool:
    """Forget ``registry``'s credentials; False if there were none."""
    path = path or config_path()
    doc = _read(path)
    auths = doc.get("auths")
    if not isinstance(auths, dict):
        return False
    want = normalize_key(registry)
    keys = [k for k in auths if isinstance(k, str) and normalize_key(k) == want]
    for k in keys:
        del auths[k]
    if keys:
        _write(path, doc)
    return bool(keys)


def _write(path: Path, doc: dict[str, Any]) -> None:
    owner: tuple[int, int] | None = None
    home = _sudo_user_home()
    if home is not None and home in path.parents and not os.environ.get("DOCKER_CONFIG"):
        # the file is the invoking user's: keep it theirs, not root's
        with contextlib.suppress(OSError):
            st = home.stat()
            owner = (st.st_uid, st.st_gid)
    try:
        new_dir = not path.parent.exists()
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if new_dir and owner:
            os.chown(path.parent, *owner)
        tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent="\t")
            f.write("\n")
        os.chmod(tmp, 0o600)
        if owner:
            os.chown(tmp, *owner)
        os.replace(tmp, path)
    except OSError as e:
        raise RegistryError(f"cannot write {path}: {e.strerror}") from None
