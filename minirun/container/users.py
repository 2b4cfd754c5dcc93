"""``-u name[:group]``: resolve names against the image's own /etc/passwd and /etc/group.

The files are read from the layer dirs, topmost first, as overlayfs would show them
(a whiteout or an opaque dir stops the search), without following any symlink: a
hostile image must not make minirun read a host file.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from minirun.container.layerview import read_merged
from minirun.container.spec import User
from minirun.errors import UsageError

# A numeric uid/gid: ASCII digits only (str.isdigit() is also true for '²', which int()
# refuses); _id() bounds it to the kernel's 32-bit ids before int() (which has a digit limit).
_ID_RE = re.compile(r"[0-9]+")
_ID_MAX = (1 << 32) - 2  # (uid_t)-1 is "no id" to the kernel


def _numeric(text: str) -> bool:
    return _ID_RE.fullmatch(text) is not None


def _entries(data: bytes | None) -> list[list[str]]:
    if not data:
        return []
    return [line.split(":") for line in data.decode(errors="replace").splitlines()
            if line and not line.startswith("#")]


def resolve_user(spec: str | None, layer_dirs: Sequence[str]) -> User:
    """Docker's rules: name or uid, optional :group or :gid; a numeric uid need not exist;
    supplementary groups are the user's memberships in /etc/group."""
    spec = spec or "0"
    user_s, _, group_s = spec.partition(":")
    passwd = _entries(read_merged(layer_dirs, "etc/passwd"))
    groups = _entries(read_merged(layer_dirs, "etc/group"))
    uid: int | None = None
    gid = 0
    home = "/"
    name = ""
    for e in passwd:
        if len(e) >= 7 and (e[0] == user_s or (_numeric(user_s) and e[2] == user_s)):
            name, uid, gid, home = e[0], _int(e[2], spec), _int(e[3], spec), e[5] or "/"
            break
    if uid is None:
        if not _numeric(user_s):
            raise UsageError(f"unable to find user {user_s!r}: no matching entries in the "
                             "image's /etc/passwd")
        uid = _id(user_s, "uid", spec)
    if uid == 0 and not name:
        home = "/root"
    if group_s:
        if _numeric(group_s):
            gid = _id(group_s, "gid", spec)
        else:
            match = [g for g in groups if len(g) >= 3 and g[0] == group_s]
            if not match:
                raise UsageError(f"unable to find group {group_s!r}: no matching entries in the "
                                 "image's /etc/group")
            gid = _int(match[0][2], spec)
    extra = sorted({_int(g[2], spec) for g in groups
                    if len(g) >= 4 and name and name in g[3].split(",") and _numeric(g[2])} - {gid})
    return User(uid, gid, extra, home)


def _bounded(text: str) -> int | None:
    """The id ``text`` spells (ASCII digits), or None if it is not one or above _ID_MAX."""
    digits = text.lstrip("0") or "0"
    if not _numeric(text) or len(digits) > len(str(_ID_MAX)) or int(digits) > _ID_MAX:
        return None
    return int(digits)


def _id(text: str, what: str, spec: str) -> int:
    n = _bounded(text)
    if n is None:
        raise UsageError(f"invalid {what} in -u {spec[:40]!r}: ids are 0-{_ID_MAX}")
    return n


def _int(text: str, spec: str) -> int:
    n = _bounded(text)
    if n is None:
        raise UsageError(f"user {spec!r}: the image's passwd/group files have a bad id "
                         f"{text[:40]!r}")
    return n
