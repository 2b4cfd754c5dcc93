"""``-u name[:group]``: resolve names against the image's own /etc/passwd and /etc/group.

The files are read from the layer dirs, topmost first, as overlayfs would show them
(a whiteout or an opaque dir stops the search), without following any symlink: a
hostile image must not make minirun read a host file.
"""

from __future__ import annotations

from collections.abc import Sequence

from minirun.container.layerview import read_merged
from minirun.container.spec import User
from minirun.errors import UsageError


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
        if len(e) >= 7 and (e[0] == user_s or (user_s.isdigit() and e[2] == user_s)):
            name, uid, gid, home = e[0], _int(e[2], spec), _int(e[3], spec), e[5] or "/"
            break
    if uid is None:
        if not user_s.isdigit():
            raise UsageError(f"unable to find user {user_s}: no matching entries in the image's /etc/passwd")
        uid = int(user_s)
    if uid == 0 and not name:
        home = "/root"
    if group_s:
        if group_s.isdigit():
            gid = int(group_s)
        else:
            match = [g for g in groups if len(g) >= 3 and g[0] == group_s]
            if not match:
                raise UsageError(f"unable to find group {group_s}: no matching entries in the image's /etc/group")
            gid = _int(match[0][2], spec)
    extra = sorted({_int(g[2], spec) for g in groups
                    if len(g) >= 4 and name and name in g[3].split(",") and g[2].isdigit()} - {gid})
    return User(uid, gid, extra, home)


def _int(text: str, spec: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"user {spec!r}: the image's passwd/group files have a bad id {text!r}") from None
