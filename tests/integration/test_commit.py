"""commit, export and import through the real ``minirun`` command, with real containers:
a container's changes committed as one layer and compared, entry by entry, with what the
container saw; the parent's layers shared; --change; export/import round trips; hostile
import tars refused with nothing written."""

from __future__ import annotations

import errno
import gzip
import io
import json
import os
import stat
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from minirun.image.check import check
from minirun.image.store import Store
from tests.conftest import MINIRUN, Cli, store_snapshot

pytestmark = pytest.mark.root

RUN = ["run", "--network", "none", "--pull", "never"]
LONG = "d" * 120  # a name longer than ustar's 100 bytes: a PAX path record
CAFE = "caf\u00e9"  # a non-ASCII name: a PAX path record too

# What the container does to its layer: new files of every kind, owners, modes, links,
# deletes a lower file and a lower dir, replaces a lower dir wholesale (opaque) and
# changes a lower file (copy-up).
SETUP = f"""set -e
mkdir -p /data/sub /data/{LONG}
echo hello > /data/file; chmod 4755 /data/file
echo secret > /data/owned; chown 1000:2000 /data/owned; chmod 0640 /data/owned
chown 33:33 /data/sub; chmod 1777 /data/sub
echo deep > /data/{LONG}/{LONG}
echo accent > /data/{CAFE}
ln /data/file /data/hard; ln /data/file /data/sub/hard2
ln -s ../data/file /data/rel-link; ln -s /etc/passwd /data/abs-link; ln -s /nowhere /data/dangling
mkfifo /data/fifo; chmod 0600 /data/fifo
mknod /data/null c 1 3; mknod /data/loop b 7 0; chown 5:6 /data/null
touch -d '2020-01-02 03:04:05' /data/owned
rm /etc/issue
rm -rf /var/log
rm -rf /usr/share/doc/busybox; mkdir /usr/share/doc/busybox; echo new > /usr/share/doc/busybox/new
echo extra:x:7:7::/:/bin/false >> /etc/passwd
touch /ready
exec sleep 3600
"""

# Where the runtime mounts over the tree (and the init layer's mount points): not part of
# what a layer carries, so left out of the comparison.
SKIP = ("proc", "sys", "dev", "etc/hosts", "etc/hostname", "etc/resolv.conf")
# Directories whose metadata the init layer (above the image) decides in every container.
INIT_DIRS = ("", "etc", "proc", "sys", "dev")


def ok(res: subprocess.CompletedProcess[str]) -> list[str]:
    assert res.returncode == 0, f"rc={res.returncode}\nstdout={res.stdout}\nstderr={res.stderr}"
    assert "Traceback" not in res.stderr
    return res.stdout.splitlines()


def fails(res: subprocess.CompletedProcess[str], *words: str) -> str:
    """A user error: exit 1, one ``Error: ...`` line on stderr, no traceback."""
    assert res.returncode == 1, (res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.stderr
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def containers(cli: Cli) -> Iterator[list[str]]:
    """Names of the containers a test starts; all removed (rm -f) at its end."""
    names: list[str] = []
    yield names
    for n in names:
        cli(["rm", "-f", n])


def start(cli: Cli, names: list[str], name: str, image: str, *cmd: str) -> int:
    """A detached container; its init's pid once it has created /ready."""
    names.append(name)
    ok(cli([*RUN, "-d", "--name", name, image, *cmd]))
    info = json.loads(cli(["inspect", name]).stdout)[0]
    pid = int(info["State"]["Pid"])
    deadline = time.monotonic() + 20
    while not os.path.exists(f"/proc/{pid}/root/ready"):
        assert time.monotonic() < deadline, cli(["logs", name]).stdout
        time.sleep(0.05)
    return pid


def require_user_xattrs(store: Store) -> None:
    """Skip where the store's own filesystem keeps no user.* xattrs (tmpfs before Linux
    6.6, as the cgroup-v2 VM's /tmp): probed there, not through the container's overlay,
    so an overlay that loses them still fails the test."""
    probe = store.root / ".xattr-probe"
    probe.touch()
    try:
        os.setxattr(probe, "user.probe", b"1")
    except OSError as e:
        if e.errno != errno.EOPNOTSUPP:
            raise
        pytest.skip("the store's filesystem keeps no user.* xattrs")
    finally:
        probe.unlink()


def set_xattrs(root: str) -> None:
    """xattrs set from the host through the container's overlay (busybox has no setfattr)."""
    os.setxattr(f"{root}/data/file", "user.note", b"v1")
    os.setxattr(f"{root}/data/file", "trusted.minirun", b"\x00\xffbinary")
    os.setxattr(f"{root}/data/sub", "user.dir", b"on a dir")
    os.setxattr(f"{root}/etc/passwd", "user.copied", b"up")  # a copied-up lower file
    os.setxattr(f"{root}/data/fifo", "trusted.fifo", b"f")


def tree(root: str) -> dict[Any, Any]:
    """Every entry under ``root`` (a container's /proc/PID/root): type, mode, owner, size,
    link target, device numbers, xattrs, mtime (whole seconds, as layer tars keep it), plus
    the hardlink groups under the key ``None``."""
    out: dict[Any, Any] = {"": entry(root, "")}
    inodes: dict[int, set[str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        rel_dir = "" if rel_dir == "." else rel_dir
        dirnames[:] = [d for d in dirnames if os.path.join(rel_dir, d) not in SKIP]
        for name in dirnames + filenames:
            rel = os.path.join(rel_dir, name)
            if rel in SKIP:
                continue
            out[rel] = entry(os.path.join(root, rel), rel)
            st = os.lstat(os.path.join(root, rel))
            if not stat.S_ISDIR(st.st_mode) and st.st_nlink > 1:
                inodes.setdefault(st.st_ino, set()).add(rel)
    out[None] = sorted(sorted(g) for g in inodes.values())
    return out


def entry(path: str, rel: str) -> dict[str, Any]:
    st = os.lstat(path)
    kind = stat.S_IFMT(st.st_mode)
    return {
        "type": kind, "mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid,
        "size": st.st_size if kind == stat.S_IFREG else None,
        "link": os.readlink(path) if kind == stat.S_IFLNK else None,
        "rdev": (os.major(st.st_rdev), os.minor(st.st_rdev)) if kind in (stat.S_IFCHR, stat.S_IFBLK) else None,
        "xattrs": {k: os.getxattr(path, k, follow_symlinks=False) for k in os.listxattr(path, follow_symlinks=False)},
        "mtime": None if rel in INIT_DIRS else int(st.st_mtime),
    }


def assert_same_tree(want: dict[Any, Any], got: dict[Any, Any]) -> None:
    missing = sorted(k for k in want if k not in got and k is not None)
    extra = sorted(k for k in got if k not in want and k is not None)
    assert not missing and not extra, f"missing {missing[:10]}, extra {extra[:10]}"
    diffs = {k: (want[k], got[k]) for k in want if want[k] != got[k]}
    assert not diffs, json.dumps({str(k): [str(a), str(b)] for k, (a, b) in list(diffs.items())[:8]}, indent=1)


def layer_members(store: Store, image: str) -> list[tarfile.TarInfo]:
    """The members of an image's topmost layer blob (gzip)."""
    rec = store.resolve(image)
    manifest, _ = store.manifest_and_config(rec)
    desc = manifest.layers[-1]
    assert desc.media_type == "application/vnd.oci.image.layer.v1.tar+gzip"
    with tarfile.open(store.blob_path(desc.digest), "r:gz") as t:
        return t.getmembers()


# -- commit ---------------------------------------------------------------------------------


def test_commit_round_trip_keeps_every_entry(cli: Cli, loaded_store: Store, containers: list[str]) -> None:
    require_user_xattrs(loaded_store)
    pid = start(cli, containers, "src", "busybox", "sh", "-c", SETUP)
    root = f"/proc/{pid}/root"
    set_xattrs(root)
    want = tree(root)
    assert want["data/file"]["xattrs"] == {"user.note": b"v1", "trusted.minirun": b"\x00\xffbinary"}
    assert want["data/null"]["rdev"] == (1, 3) and want["data/loop"]["rdev"] == (7, 0)
    assert ["data/file", "data/hard", "data/sub/hard2"] in want[None]
    assert "etc/issue" not in want and "var/log" not in want and "usr/share/doc/busybox/README" not in want

    out = ok(cli(["commit", "-m", "round trip", "-a", "Jane <jane@example.com>", "src", "snap:1"]))
    assert len(out) == 1 and out[0].startswith("sha256:") and len(out[0]) == 71
    assert json.loads(cli(["inspect", "src"]).stdout)[0]["State"]["Status"] == "running"  # thawed again

    pid2 = start(cli, containers, "copy", "snap:1", "sleep", "3600")
    assert_same_tree(want, tree(f"/proc/{pid2}/root"))

    members = {m.name: m for m in layer_members(loaded_store, "snap:1")}
    assert "etc/.wh.issue" in members and "var/.wh.log" in members
    assert "usr/share/doc/busybox/.wh..wh..opq" in members
    assert members["data/hard"].islnk() or members["data/file"].islnk()
    assert "ready" in members and "etc/passwd" in members
    assert not any(k.startswith("SCHILY.xattr.trusted.overlay") for m in members.values() for k in m.pax_headers)
    assert members["data/file"].pax_headers["SCHILY.xattr.user.note"] == "v1"

    cfg = json.loads(loaded_store.read_blob(out[0]))
    assert cfg["author"] == "Jane <jane@example.com>"
    assert cfg["history"][-1]["comment"] == "round trip"
    assert cfg["history"][-1]["created_by"].startswith("sh -c set -e")  # Docker: the container's Cmd
    assert cfg["config"]["Cmd"][:2] == ["sh", "-c"]  # Docker commits what the container ran


def test_history_shows_parent_layers_shared(cli: Cli, loaded_store: Store, containers: list[str]) -> None:
    names = ["busybox", "busybox-extra", "busybox-edit"]
    layers_before = {p.name for p in (loaded_store.root / "layers").iterdir()} - {"l"}
    containers.append("h")
    ok(cli([*RUN, "--name", "h", "busybox-extra", "sh", "-c", "echo changed > /srv/www/index.html"]))
    image_id = ok(cli(["commit", "h", "extra:committed"]))[0]
    rows = [json.loads(line) for line in ok(cli(["history", "--format", "json", "--no-trunc", "extra:committed"]))]
    rows = [r for r in rows if r["Layer"] != "<missing>"]  # the Containerfiles' ENV/CMD/WORKDIR rows
    assert len(rows) == 3
    parent = loaded_store.resolve("busybox-extra")
    new = loaded_store.resolve(image_id)
    assert [la.diff_id for la in new.layers[:2]] == [la.diff_id for la in parent.layers]
    assert [la.digest for la in new.layers[:2]] == [la.digest for la in parent.layers]  # the same blobs
    assert rows[0]["Layer"] == new.layers[2].diff_id and rows[0]["SharedBy"] == 1
    assert rows[0]["CreatedBy"] == "sh -c echo changed > /srv/www/index.html"
    assert rows[1]["Layer"] == parent.layers[1].diff_id and rows[1]["SharedBy"] == 2
    assert rows[2]["Layer"] == parent.layers[0].diff_id and rows[2]["SharedBy"] == len(names) + 1
    layers_after = {p.name for p in (loaded_store.root / "layers").iterdir()} - {"l"}
    assert layers_after - layers_before == {new.layers[2].diff_id.split(":")[1]}  # one new layer, nothing copied
    assert check(loaded_store) == []


def test_commit_changes_config(cli: Cli, loaded_store: Store, containers: list[str]) -> None:
    containers.append("c")
    ok(cli([*RUN, "--name", "c", "-e", "FROM_RUN=yes", "busybox", "sh", "-c", "echo data > /f"]))
    image_id = ok(cli(["commit", "-c", 'CMD ["echo","hi"]', "-c", "ENV A=1", "-c", "LABEL x=y",
                       "-c", "EXPOSE 8080/udp", "-c", "WORKDIR /srv", "c", "changed"]))[0]
    full = json.loads(loaded_store.read_blob(image_id))
    # Docker: the history names what the container ran, not the Cmd a change gave the image
    assert full["history"][-1]["created_by"] == "sh -c echo data > /f"
    cfg = full["config"]
    assert cfg["Cmd"] == ["echo", "hi"]
    assert "A=1" in cfg["Env"] and "FROM_RUN=yes" in cfg["Env"] and any(e.startswith("PATH=") for e in cfg["Env"])
    assert cfg["Labels"] == {"x": "y"} and cfg["ExposedPorts"] == {"8080/udp": {}} and cfg["WorkingDir"] == "/srv"
    containers.extend(["r1", "r2"])
    assert ok(cli([*RUN, "--name", "r1", "changed"])) == ["hi"]
    assert ok(cli([*RUN, "--name", "r2", "changed", "sh", "-c", "echo $A $FROM_RUN; pwd; cat /f"])) == \
        ["1 yes", "/srv", "data"]
    fails(cli(["commit", "-c", "ADD . /x", "c"]), "ADD is not a valid change command")
    fails(cli(["commit", "--pause=maybe", "c"]), "invalid argument")


def test_commit_errors_and_empty_layer(cli: Cli, loaded_store: Store, containers: list[str]) -> None:
    fails(cli(["commit", "nope"]), "no such container: nope")
    containers.append("e")
    ok(cli([*RUN, "--name", "e", "busybox", "true"]))
    image_id = ok(cli(["commit", "e"]))[0]  # no name: a dangling image
    rec = loaded_store.resolve(image_id)
    assert rec.repo_tags == []
    # nothing changed: no new layer, a history step marked empty_layer (Docker)
    assert [la.diff_id for la in rec.layers] == [la.diff_id for la in loaded_store.resolve("busybox").layers]
    cfg = json.loads(loaded_store.read_blob(image_id))
    assert cfg["history"][-1]["empty_layer"] is True and cfg["history"][-1]["created_by"] == "true"
    fails(cli(["commit", "e", "Bad:Name"]), "invalid reference format")
    fails(cli(["commit", "e", "x@sha256:" + "0" * 64]), "digest")


def test_commit_leaves_out_runtime_mount_points(cli: Cli, loaded_store: Store, containers: list[str],
                                                tmp_path: Path) -> None:
    containers.append("m")
    ok(cli([*RUN, "--name", "m", "-v", f"{tmp_path}:/mnt/a/b", "--tmpfs", "/scratch", "--tmpfs", "/run/x",
            "-w", "/work", "busybox", "sh", "-c", "echo x > /mnt/a/b/inside; echo y > /mnt/kept"]))
    ok(cli(["commit", "m", "mounts"]))
    names = {m.name for m in layer_members(loaded_store, "mounts")}
    assert "mnt/kept" in names and "mnt" in names  # the container's own file keeps its parent
    assert "work" in names  # the workdir: made for the process, kept as Docker does
    assert not {"mnt/a", "mnt/a/b", "scratch", "run/x", "mnt/a/b/inside"} & names
    assert (tmp_path / "inside").read_text() == "x\n"  # the volume's content stays in the volume


def test_pause_during_commit(cli: Cli, loaded_store: Store, containers: list[str],
                             monkeypatch: pytest.MonkeyPatch) -> None:
    from minirun.container.records import Containers
    from minirun.image import commit as authoring
    from minirun.runtime.api import Runtime

    start(cli, containers, "p", "busybox", "sh", "-c", "touch /ready; exec sleep 3600")
    calls: list[str] = []
    real_pause, real_resume = Runtime.pause, Runtime.resume

    def pause(self: Runtime, cid: str) -> None:
        calls.append("pause")
        real_pause(self, cid)

    def resume(self: Runtime, cid: str) -> None:
        calls.append("resume")
        real_resume(self, cid)

    monkeypatch.setattr(Runtime, "pause", pause)
    monkeypatch.setattr(Runtime, "resume", resume)
    store = Store(loaded_store.root)
    rec = Containers(store).get("p")
    authoring.commit(store, rec)
    assert calls == ["pause", "resume"] and not rec.paused()
    calls.clear()
    authoring.commit(store, rec, pause=False)
    assert calls == []
    ok(cli(["pause", "p"]))
    authoring.commit(store, rec)
    assert calls == [] and rec.paused()  # paused already: left as it was (Docker)
    ok(cli(["unpause", "p"]))


# -- export / import ------------------------------------------------------------------------


def test_export_import_round_trip(cli: Cli, loaded_store: Store, containers: list[str], tmp_path: Path) -> None:
    require_user_xattrs(loaded_store)
    pid = start(cli, containers, "src", "busybox", "sh", "-c", SETUP)
    set_xattrs(f"/proc/{pid}/root")
    want = tree(f"/proc/{pid}/root")
    out = tmp_path / "fs.tar"
    assert ok(cli(["export", "-o", str(out), "src"])) == []
    with tarfile.open(out) as t:
        names = set(t.getnames())
    assert "etc/issue" not in names and "data/fifo" in names and not any(".wh." in n for n in names)
    image_id = ok(cli(["import", "-m", "flat", "-c", "CMD [\"sh\"]", str(out), "flat:1"]))[0]
    cfg = json.loads(loaded_store.read_blob(image_id))
    assert cfg["history"] == [{"created": cfg["created"], "comment": "flat"}]
    assert cfg["config"] == {"Cmd": ["sh"]} and len(cfg["rootfs"]["diff_ids"]) == 1
    pid2 = start(cli, containers, "copy", "flat:1", "sleep", "3600")
    assert_same_tree(want, tree(f"/proc/{pid2}/root"))
    # stdin, gzip: the same layer (the same tar inside)
    res = cli(["import", "-", "flat:gz"], input=gzip.compress(out.read_bytes()))
    gz_id = ok(res)[0]
    assert loaded_store.resolve(gz_id).layers[0].diff_id == loaded_store.resolve(image_id).layers[0].diff_id
    rows = [json.loads(line) for line in ok(cli(["history", "--format", "json", "flat:gz"]))]
    assert rows[0]["Comment"] == "Imported from -"


def test_export_of_stopped_container_to_stdout(cli: Cli, loaded_store: Store, containers: list[str]) -> None:
    containers.append("s")
    ok(cli([*RUN, "--name", "s", "busybox-edit", "sh", "-c", "echo x > /f; rm /bin/ls"]))
    res = subprocess.run([str(MINIRUN), "export", "s"], capture_output=True,
                         env={**os.environ, "MINIRUN_ROOT": str(loaded_store.root)})
    assert res.returncode == 0, res.stderr
    with tarfile.open(fileobj=io.BytesIO(res.stdout)) as t:
        members = {m.name: m for m in t.getmembers()}
        assert t.extractfile(members["f"]).read() == b"x\n"  # type: ignore[union-attr]
    assert "bin/ls" not in members and "etc/issue" not in members  # the container's and the image's deletes
    assert "home/app/NEW" in members and "home/README" not in members  # the image's opaque dir
    assert "etc/hosts" in members  # the init layer's mount point, as in Docker's export
    fails(cli(["export", "nope"]), "no such container")


def _hostile(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w") as t:
        for ti, data in members:
            t.addfile(ti, io.BytesIO(data) if data is not None else None)
    return path


def test_import_refuses_hostile_tars(cli: Cli, loaded_store: Store, tmp_path: Path) -> None:
    target = tmp_path / "host-dir"
    target.mkdir()
    escape = tarfile.TarInfo("../escape")
    escape.size = 2
    link = tarfile.TarInfo("evil")
    link.type, link.linkname = tarfile.SYMTYPE, str(target)
    through = tarfile.TarInfo("evil/pwned")
    through.size = 2
    cases = {
        "dotdot": (_hostile(tmp_path / "h1.tar", [(escape, b"hi")]), "escapes the layer root"),
        "symlink": (_hostile(tmp_path / "h2.tar", [(link, None), (through, b"hi")]), "through the symlink"),
    }
    before = store_snapshot(loaded_store.root)
    for path, why in cases.values():
        fails(cli(["import", str(path), "bad:1"]), "import refused", why)
    (tmp_path / "empty").write_bytes(b"")
    fails(cli(["import", str(tmp_path / "empty")]), "empty")
    fails(cli(["import", str(tmp_path / "not-there.tar")]), "No such file")
    assert list(target.iterdir()) == []
    assert not (tmp_path / "escape").exists()
    assert store_snapshot(loaded_store.root) == before
    assert check(loaded_store) == []
