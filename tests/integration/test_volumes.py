"""Volumes (issue 14): ``volume create|ls|inspect|rm|prune``, ``-v NAME:/path``, ``-v /path``,
image ``VOLUME``s, ``--mount``, ``rm -v``, ``system prune --volumes`` and the ``Mounts`` of
``inspect`` — as root, through the real CLI, with real containers (Docker's semantics)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from minirun.container import volumes as vols
from minirun.errors import UsageError, VolumeInUse, VolumeNotFound
from minirun.image import build
from minirun.image.store import Store
from minirun.image.whiteout import OVERLAY_OPAQUE_XATTR
from tests.conftest import MINIRUN, RUN, load_image_recipes, store_cli

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: real containers")

Cli = Callable[..., "subprocess.CompletedProcess[str]"]


def _entry(path: str, data: str = "", *, kind: str = "file", mode: int = 0o644, uid: int = 0,
           gid: int = 0, target: str = "") -> build.Entry:
    return build.Entry(path, kind, data.encode(), mode, target, uid, gid)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory, built_images: Path) -> Iterator[Path]:
    """A store with busybox and two images of our own: ``volimg`` declares VOLUME /data
    (with content in two layers: a whiteout and an opaque-free merge), ``owned`` has files
    with owners, modes and a symlink under /srv."""
    store = tmp_path_factory.mktemp("volstore")
    layouts = tmp_path_factory.mktemp("vollayouts")
    env = {**os.environ, "MINIRUN_ROOT": str(store)}
    lower = build.Layer(build.layer_tar([
        _entry("data", kind="dir", mode=0o750, uid=7, gid=8),
        _entry("data/a", "a\n"), _entry("data/b", "b\n"),
        _entry("srv", kind="dir"),
        _entry("srv/secret", "s\n", mode=0o600, uid=1000, gid=1001),
        _entry("srv/tool", "#!/bin/sh\n", mode=0o4755, uid=0, gid=0),
        _entry("srv/link", kind="symlink", mode=0o777, target="/etc/shadow"),
        _entry("srv/sub", kind="dir", mode=0o1777, uid=5, gid=6),
        _entry("srv/sub/f", "f\n", uid=5, gid=6),
    ]), "ADD lower")
    upper = build.Layer(build.layer_tar([_entry("data", kind="dir", mode=0o750, uid=7, gid=8),
                                         build.whiteout("data/b"), _entry("data/c", "c\n")]), "ADD upper")
    recipes = load_image_recipes()
    base = recipes.busybox_layer(recipes.find_busybox())  # a shell under our layers
    imgs = [build.image("volimg:1", [base, lower, upper], {"Cmd": ["sh"], "Volumes": {"/data": {}}}),
            build.image("owned:1", [base, lower, upper], {"Cmd": ["sh"]}),
            build.image("emptyvol:1", [base], {"Cmd": ["sh"], "Volumes": {"/nothing/here": {}}})]
    for img in imgs:
        build.write_oci_layout(layouts / img.name.replace(":", "-"), [img])
    for src in (built_images / "busybox", *(layouts / i.name.replace(":", "-") for i in imgs)):
        subprocess.run([str(MINIRUN), "load", "-q", "-i", str(src)], check=True, env=env,
                       capture_output=True)
    yield store
    mr = store_cli(env)
    ids = mr("ps", "-aq").stdout.split()
    if ids:
        mr("rm", "-f", "-v", *ids)
    mr("volume", "prune", "-a", "-f")
    left = sorted(os.listdir(store / "volumes")) if (store / "volumes").is_dir() else []
    assert left == [], f"volumes left behind: {left}"
    assert os.listdir(store / "tmp") == []


@pytest.fixture
def mr(root: Path) -> Iterator[Cli]:
    run = store_cli({**os.environ, "MINIRUN_ROOT": str(root)})
    yield run
    ids = run("ps", "-aq").stdout.split()
    if ids:
        run("rm", "-f", "-v", *ids)
    run("volume", "prune", "-a", "-f")


def ok(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 0, (r.stdout, r.stderr)
    return r.stdout


def one_error(r: subprocess.CompletedProcess[str], code: int = 1) -> str:
    assert r.returncode == code, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.stderr
    return lines[0]


def sh(mr: Cli, script: str, *opts: str, image: str = "busybox") -> subprocess.CompletedProcess[str]:
    return mr("run", "--rm", *RUN, *opts, image, "sh", "-c", script)


def names(mr: Cli, *flags: str) -> list[str]:
    return ok(mr("volume", "ls", "-q", *flags)).split()


def mounts(mr: Cli, container: str) -> list[dict]:
    return json.loads(ok(mr("inspect", "--type", "container", container)))[0]["Mounts"]


def test_named_volume_outlives_containers_and_is_shared(mr: Cli, root: Path) -> None:
    assert ok(sh(mr, "echo kept > /d/file; ls /d", "-v", "keep:/d")) == "file\n"  # made on first use
    assert "keep" in names(mr)
    assert ok(sh(mr, "cat /d/file", "-v", "keep:/d")) == "kept\n"  # a second container sees it
    ok(mr("run", *RUN, "--name", "w", "-v", "keep:/d", "busybox", "sh", "-c", "echo more >> /d/file"))
    ok(mr("rm", "-v", "w"))  # rm -v never takes a named volume
    assert (root / "volumes" / "keep" / "_data" / "file").read_text() == "kept\nmore\n"
    doc = json.loads(ok(mr("volume", "inspect", "keep")))
    assert doc == [{"CreatedAt": doc[0]["CreatedAt"], "Driver": "local", "Labels": None,
                    "Mountpoint": str(root / "volumes" / "keep" / "_data"), "Name": "keep",
                    "Options": None, "Scope": "local"}]
    assert ok(mr("volume", "inspect", "-f", "{{.Name}} {{.Driver}} {{.Scope}}", "keep")) == "keep local local\n"
    ok(mr("volume", "rm", "keep"))
    assert "keep" not in names(mr)


def test_volume_create_names_and_labels(mr: Cli, root: Path) -> None:
    assert ok(mr("volume", "create", "--label", "team=db", "--label", "x", "labelled")) == "labelled\n"
    assert ok(mr("volume", "create", "labelled")) == "labelled\n"  # exists: a no-op
    doc = json.loads(ok(mr("volume", "inspect", "labelled")))[0]
    assert doc["Labels"] == {"team": "db", "x": ""} and doc["Options"] == {}
    anon = ok(mr("volume", "create")).strip()
    assert len(anon) == 64 and all(c in "0123456789abcdef" for c in anon)
    assert set(names(mr)) >= {"labelled", anon}
    before = sorted(os.listdir(root / "volumes"))
    for hostile in ("../x", "/", "", ".hidden", "a/b", "x"):
        err = one_error(mr("volume", "create", hostile))
        assert "includes invalid characters for a local volume name" in err
    for verb in ("inspect", "rm"):
        for hostile in ("../x", "/", "", ".."):
            assert "no such volume" in one_error(mr("volume", verb, hostile))
    assert one_error(sh(mr, "true", "-v", "a*b:/x"), 125).endswith("use absolute path")
    assert one_error(mr("volume", "create", "--opt", "bogus=1", "o1")).startswith("Error: invalid option key")
    assert "not supported" in one_error(mr("volume", "create", "-d", "nfs", "o2"))
    assert sorted(os.listdir(root / "volumes")) == before  # nothing made half-way
    r = mr("volume", "rm", "labelled", "nosuch", anon)  # each name reported, each failure too
    assert r.returncode == 1 and r.stdout.split() == ["labelled", anon]
    assert r.stderr.strip() == "Error: no such volume: nosuch (see 'minirun volume ls')"
    assert ok(mr("volume", "rm", "-f", "nosuch")) == "nosuch\n"


def test_first_use_copies_the_image_content(mr: Cli) -> None:
    listing = "ls -ln /etc | tail -n +2 | grep -v -e hosts -e hostname -e resolv.conf; stat -c '%a %u %g' /etc"
    plain = ok(sh(mr, listing))
    assert "passwd" in plain and "group" in plain
    assert ok(sh(mr, listing, "-v", "etcvol:/etc")) == plain  # names, modes, owners, sizes, times
    # owners, modes, setuid, a symlink copied as a symlink (never followed), sticky dirs
    script = "stat -c '%n %a %u %g %F' /srv /srv/* /srv/sub/f; readlink /srv/link"
    want = ok(sh(mr, script, image="owned:1"))
    assert "/srv/secret 600 1000 1001" in want and "/srv/tool 4755 0 0" in want
    assert "/srv/sub 1777 5 6 directory" in want and want.endswith("/etc/shadow\n")
    assert ok(sh(mr, script, "-v", "srvvol:/srv", image="owned:1")) == want
    # the merged view: data/b is whited out by the upper layer, data/c added; the dir's owner
    assert ok(sh(mr, "ls /data; stat -c '%a %u %g' /data", "-v", "datavol:/data", image="owned:1")) \
        == "a\nc\n750 7 8\n"


def test_no_copy_into_a_non_empty_volume_or_with_nocopy(mr: Cli) -> None:
    ok(sh(mr, "echo mine > /v/only", "-v", "full:/v"))
    assert ok(sh(mr, "ls /etc", "-v", "full:/etc")) == "hostname\nhosts\nonly\nresolv.conf\n"
    # nocopy: an empty volume stays empty (only the mount points of /etc's binds appear)
    assert "passwd" not in ok(sh(mr, "ls /etc", "-v", "bare:/etc:nocopy"))
    assert ok(sh(mr, "ls -A /srv", "--mount", "type=volume,src=bare2,dst=/srv,volume-nocopy",
                 image="owned:1")) == ""
    assert ok(sh(mr, "ls /srv", "--mount", "type=volume,src=copied,dst=/srv", image="owned:1")) \
        == "link\nsecret\nsub\ntool\n"


def test_read_only_volume(mr: Cli, root: Path) -> None:
    r = sh(mr, "echo x > /v/new", "-v", "rov:/v:ro")
    assert r.returncode != 0 and "Read-only file system" in r.stderr
    assert not (root / "volumes" / "rov" / "_data" / "new").exists()
    r = sh(mr, "touch /v/new", "--mount", "type=volume,source=rov,target=/v,readonly")
    assert r.returncode != 0 and "Read-only" in r.stderr


def test_anonymous_volumes_and_rm_v(mr: Cli, root: Path) -> None:
    ok(mr("run", *RUN, "--name", "anon", "-v", "/data", "busybox", "sh", "-c", "echo a > /data/f"))
    (m,) = mounts(mr, "anon")
    name = m["Name"]
    assert m == {"Type": "volume", "Name": name, "Source": str(root / "volumes" / name / "_data"),
                 "Destination": "/data", "Driver": "local", "Mode": "z", "RW": True, "Propagation": ""}
    doc = json.loads(ok(mr("volume", "inspect", name)))[0]
    assert doc["Labels"] == {"com.docker.volume.anonymous": ""} and doc["Options"] is None
    assert ok(mr("volume", "ls", "--filter", "dangling=false", "-q")).split() == [name]
    assert "volume is in use" in one_error(mr("volume", "rm", name))  # a stopped container holds it
    ok(mr("container", "prune", "-f"))  # leaves volumes alone
    assert name in names(mr)
    ok(mr("run", *RUN, "--name", "anon2", "-v", "/data", "busybox", "true"))
    second = mounts(mr, "anon2")[0]["Name"]
    ok(mr("rm", "anon2"))  # plain rm keeps it
    assert second in names(mr, "--filter", "dangling=true")
    ok(mr("run", *RUN, "--name", "anon3", "-v", "/data", "busybox", "true"))
    third = mounts(mr, "anon3")[0]["Name"]
    ok(mr("rm", "-v", "anon3"))  # rm -v takes it
    assert third not in names(mr)
    before = set(names(mr))
    assert ok(sh(mr, "ls /data /keep", "-v", "/data", "-v", "kept:/keep")) == "/data:\n\n/keep:\n"
    assert set(names(mr)) == before | {"kept"}  # run --rm took its anonymous volume only
    ok(mr("volume", "rm", second, "kept"))


def test_image_volume_becomes_an_anonymous_volume(mr: Cli, root: Path) -> None:
    ok(mr("run", *RUN, "--name", "iv", "volimg:1", "sh", "-c", "ls /data; echo w > /data/w"))
    (m,) = mounts(mr, "iv")
    assert m["Type"] == "volume" and m["Destination"] == "/data" and m["Mode"] == "" and m["RW"]
    data = root / "volumes" / m["Name"] / "_data"
    assert sorted(os.listdir(data)) == ["a", "c", "w"]  # the image's content, then the write
    assert stat.S_IMODE(os.stat(data).st_mode) == 0o750 and os.stat(data).st_uid == 7
    ok(mr("rm", "-v", "iv"))
    assert not data.exists()
    # a mount at that path covers the image's VOLUME: no anonymous volume is made
    before = set(names(mr))
    assert ok(sh(mr, "ls /data", "-v", "cover:/data", image="volimg:1")) == "a\nc\n"
    assert ok(sh(mr, "ls /data", "--tmpfs", "/data", image="volimg:1")) == ""
    assert set(names(mr)) == before | {"cover"}
    # a VOLUME at a path the image lacks: an empty volume, the mount point made
    ok(mr("create", *RUN, "--name", "ev", "emptyvol:1", "true"))
    assert [x["Destination"] for x in mounts(mr, "ev")] == ["/nothing/here"]
    ok(mr("rm", "-v", "ev"))
    assert ok(sh(mr, "ls -A /nothing/here && echo there", image="emptyvol:1")) == "there\n"
    assert set(names(mr)) == before | {"cover"}  # --rm took its anonymous volume
    ok(mr("volume", "rm", "cover"))


def test_mount_flag_each_type(mr: Cli, tmp_path: Path) -> None:
    (tmp_path / "in").write_text("host\n")
    out = ok(sh(mr, "cat /b/in; touch /b/x 2>/dev/null || echo ro; grep ' /t ' /proc/mounts; stat -c %a /t; "
                    "echo v > /v/f; cat /v/f",
                "--mount", f"type=bind,source={tmp_path},target=/b,readonly",
                "--mount", "type=tmpfs,destination=/t,tmpfs-size=1m,tmpfs-mode=1770",
                "--mount", "type=volume,src=mvol,dst=/v"))
    lines = out.splitlines()
    assert lines[:2] == ["host", "ro"] and "size=1024k" in lines[2] and lines[3:] == ["1770", "v"]
    ok(mr("create", *RUN, "--name", "m", "--mount", f"type=bind,src={tmp_path},dst=/b",
          "--mount", "type=tmpfs,dst=/t", "--mount", "type=volume,dst=/anon",
          "-v", f"{tmp_path}:/b2:ro", "busybox", "true"))
    ms = {x["Destination"]: x for x in mounts(mr, "m")}
    assert ms["/b"] == {"Type": "bind", "Source": str(tmp_path), "Destination": "/b", "Mode": "",
                        "RW": True, "Propagation": "rprivate"}
    assert ms["/b2"] == {"Type": "bind", "Source": str(tmp_path), "Destination": "/b2", "Mode": "ro",
                         "RW": False, "Propagation": "rprivate"}
    assert ms["/t"] == {"Type": "tmpfs", "Source": "", "Destination": "/t", "Mode": "", "RW": True,
                        "Propagation": ""}
    assert ms["/anon"]["Type"] == "volume" and ms["/anon"]["Driver"] == "local"
    assert ok(mr("ps", "-a", "--filter", "volume=/anon", "--format", "{{.Names}}")) == "m\n"
    assert ok(mr("ps", "-a", "--filter", "volume=mvol", "--format", "{{.Names}}")) == ""
    ok(mr("rm", "-v", "m"))
    ok(mr("volume", "rm", "mvol"))


@pytest.mark.parametrize(("flags", "message"), [
    (("--mount", "type=bind,src=/no/such/dir,dst=/x"),
     'invalid mount config for type "bind": bind source path does not exist: /no/such/dir'),
    (("--mount", "type=bind,src=/tmp,dst=/x,colour=red"),
     "for \"--mount\" flag: unexpected key 'colour' in 'colour=red'"),
    (("--mount", "type=volume,src=v"), 'for "--mount" flag: target is required'),
    (("--mount", "type=bind,dst=/x"), 'invalid mount config for type "bind": field Source must not be empty'),
    (("--mount", "type=tmpfs,src=x,dst=/x"), 'invalid mount config for type "tmpfs": field Source must not'),
    (("--mount", "type=volume,dst=/x,readonly"), "must not set ReadOnly mode when using anonymous volumes"),
    (("--mount", "type=bind,src=/tmp,dst=/x,volume-nocopy"), "cannot mix 'volume-*' options with mount type 'bind'"),
    (("--mount", "type=npipe,dst=/x"), "mount type unknown"),
    (("--mount", "type=volume,dst=/x,ro=maybe"), "invalid value for ro: maybe"),
    (("--mount", "type=volume,dst=relative"), "mount path must be absolute"),
    (("--mount", "type=volume,dst=/"), "destination can't be '/'"),
    (("-v", "/tmp:/x", "--mount", "type=bind,src=/tmp,dst=/x/"), "Duplicate mount point: /x"),
    (("-v", "a1:/x", "-v", "a2:/x"), "Duplicate mount point: /x"),
    (("--tmpfs", "/x", "-v", "a1:/x"), "Duplicate mount point: /x"),
    (("-v", "/tmp:rw"), "invalid volume specification: '/tmp:rw'"),
    (("-v", "vol:/x:bogus"), "invalid mode: bogus"),
    (("-v", ":/x"), "invalid volume specification: ':/x'"),
])
def test_mount_errors(mr: Cli, root: Path, flags: tuple[str, ...], message: str) -> None:
    before_vols = sorted(os.listdir(root / "volumes")) if (root / "volumes").is_dir() else []
    before_ctrs = sorted(os.listdir(root / "containers"))
    assert message in one_error(mr("run", "--rm", *RUN, *flags, "busybox", "true"), 125)
    assert (sorted(os.listdir(root / "volumes")) if (root / "volumes").is_dir() else []) == before_vols
    assert sorted(os.listdir(root / "containers")) == before_ctrs


def test_volume_ls_filters_and_formats(mr: Cli, root: Path) -> None:
    ok(mr("volume", "create", "--label", "tier=web", "--label", "keep", "lsweb"))
    ok(mr("volume", "create", "--label", "tier=db", "lsdb"))
    ok(mr("volume", "create", "lsplain"))
    ok(mr("create", *RUN, "--name", "user", "-v", "lsdb:/d", "busybox", "true"))
    assert names(mr, "--filter", "name=^ls") == ["lsdb", "lsplain", "lsweb"]
    assert names(mr, "--filter", "label=tier") == ["lsdb", "lsweb"]
    assert names(mr, "--filter", "label=tier=web") == ["lsweb"]
    assert names(mr, "--filter", "label=tier", "--filter", "label=keep") == ["lsweb"]
    assert names(mr, "--filter", "name=ls", "--filter", "dangling=true") == ["lsplain", "lsweb"]
    assert names(mr, "--filter", "name=ls", "--filter", "dangling=0") == ["lsdb"]
    assert names(mr, "--filter", "driver=local", "--filter", "name=lsweb") == ["lsweb"]
    assert "invalid filter 'dangling=maybe'" in one_error(mr("volume", "ls", "--filter", "dangling=maybe"))
    assert "invalid filter 'colour'" in one_error(mr("volume", "ls", "--filter", "colour=red"))
    table = ok(mr("volume", "ls", "--filter", "name=lsweb")).splitlines()
    assert table[0].split() == ["DRIVER", "VOLUME", "NAME"] and table[1].split() == ["local", "lsweb"]
    rows = [json.loads(line) for line in ok(mr("volume", "ls", "--filter", "name=ls", "--format", "json")).splitlines()]
    assert [r["Name"] for r in rows] == ["lsdb", "lsplain", "lsweb"]
    assert rows[2] == {"Driver": "local", "Labels": "keep=,tier=web", "Links": "N/A",
                       "Mountpoint": str(root / "volumes" / "lsweb" / "_data"), "Name": "lsweb",
                       "Scope": "local", "Size": "N/A"}
    out = ok(mr("volume", "ls", "--filter", "name=lsweb", "--format", '{{.Name}}:{{.Label "tier"}}'))
    assert out == "lsweb:web\n"
    out = ok(mr("volume", "ls", "--filter", "name=lsd", "--format", "table {{.Name}}\t{{.Mountpoint}}"))
    assert out.splitlines()[0].split() == ["VOLUME", "NAME", "MOUNTPOINT"] and "lsdb" in out
    ok(mr("rm", "user"))
    ok(mr("volume", "rm", "lsweb", "lsdb", "lsplain"))


def test_volume_rm_refuses_a_volume_in_use(mr: Cli) -> None:
    cid = ok(mr("run", "-d", *RUN, "--name", "holder", "-v", "busy:/b", "busybox", "sleep", "60")).strip()
    err = one_error(mr("volume", "rm", "busy"))
    assert err == f"Error: remove busy: volume is in use - [{cid}]"
    assert "volume is in use" in one_error(mr("volume", "rm", "-f", "busy"))  # -f does not override
    ok(mr("stop", "-t", "0", "holder"))
    assert "volume is in use" in one_error(mr("volume", "rm", "busy"))  # stopped: still in use
    ok(mr("rm", "holder"))
    assert ok(mr("volume", "rm", "busy")) == "busy\n"


def test_volume_prune(mr: Cli, root: Path) -> None:
    ok(mr("volume", "create", "--label", "p=1", "pnamed"))
    ok(mr("run", *RUN, "--name", "pa", "-v", "/data", "busybox", "sh", "-c", "head -c 3000 /dev/zero > /data/z"))
    anon = mounts(mr, "pa")[0]["Name"]
    r = mr("volume", "prune", "-f")
    assert r.stdout == "Total reclaimed space: 0B\n"  # in use by a stopped container
    ok(mr("rm", "pa"))
    r = mr("volume", "prune", input="n\n")
    assert r.stdout.startswith("WARNING! This will remove anonymous local volumes not used by at least "
                               "one container.\nAre you sure you want to continue? [y/N] ")
    assert anon in names(mr)
    r = mr("volume", "prune", input="y\n")
    assert r.stdout.endswith(f"Deleted Volumes:\n{anon}\n\nTotal reclaimed space: 3kB\n"), r.stdout
    assert "pnamed" in names(mr)  # named volumes only with -a
    r = mr("volume", "prune", "-a", input="n\n")
    assert "remove all local volumes not used" in r.stdout and "pnamed" in names(mr)
    assert ok(mr("volume", "prune", "-a", "-f", "--filter", "label=p=2")) == "Total reclaimed space: 0B\n"
    assert "pnamed" in ok(mr("volume", "prune", "-f", "--filter", "all=true", "--filter", "label=p"))
    assert "pnamed" not in names(mr)
    assert "conflicting options" in one_error(mr("volume", "prune", "-a", "-f", "--filter", "all=1"))


def test_system_prune_volumes(mr: Cli) -> None:
    ok(mr("run", *RUN, "--name", "sp", "-v", "/data", "-v", "spnamed:/n", "busybox", "true"))
    anon = next(m["Name"] for m in mounts(mr, "sp") if m["Destination"] == "/data")
    r = mr("system", "prune", input="n\n")
    assert "volumes" not in r.stdout and "  - all stopped containers" in r.stdout
    r = mr("system", "prune", "--volumes", input="n\n")
    assert "  - all networks not used by at least one container\n" \
           "  - all anonymous volumes not used by at least one container\n" in r.stdout
    assert anon in names(mr) and "sp" in ok(mr("ps", "-a", "--format", "{{.Names}}"))
    r = mr("system", "prune", "--volumes", input="y\n")
    out = r.stdout
    assert out.index("Deleted Containers:") < out.index("Deleted Volumes:") < out.index("Total reclaimed space:")
    assert f"Deleted Volumes:\n{anon}\n" in out
    assert anon not in names(mr) and "spnamed" in names(mr)  # named: only volume prune -a
    ok(mr("volume", "rm", "spnamed"))


# --- the library ---------------------------------------------------------------------------------

def test_usage_and_library_errors(root: Path, mr: Cli) -> None:
    store = Store(root)
    ok(mr("run", *RUN, "--name", "u", "-v", "usagevol:/u", "busybox", "sh", "-c", "head -c 1234 /dev/zero > /u/f"))
    assert ("usagevol", 1234, 1) in vols.usage(store)
    with pytest.raises(VolumeInUse):
        vols.remove(store, "usagevol")
    ok(mr("rm", "u"))
    assert ("usagevol", 1234, 0) in vols.usage(store)
    vols.remove(store, "usagevol")
    with pytest.raises(VolumeNotFound):
        vols.get(store, "usagevol")
    with pytest.raises(UsageError):
        vols.create(store, "../escape")
    assert not (root / "escape").exists() and not (root.parent / "escape").exists()


def test_copy_up_reads_layers_as_overlay_merges_them(tmp_path: Path) -> None:
    """Whiteouts, opaque dirs, symlinks (never followed), hard links, fifos, xattrs."""
    upper, lower, dest = tmp_path / "upper", tmp_path / "lower", tmp_path / "dest"
    for d in (upper / "d" / "opq", lower / "d" / "opq", lower / "d" / "sub", dest):
        d.mkdir(parents=True)
    (lower / "d" / "gone").write_text("x")
    os.mknod(upper / "d" / "gone", stat.S_IFCHR | 0o000, os.makedev(0, 0))  # overlay whiteout
    (lower / "d" / "opq" / "hidden").write_text("x")
    (upper / "d" / "opq" / "shown").write_text("y")
    os.setxattr(upper / "d" / "opq", OVERLAY_OPAQUE_XATTR, b"y")
    (lower / "d" / "sub" / "f").write_text("f")
    os.link(lower / "d" / "sub" / "f", lower / "d" / "sub" / "hard")
    os.symlink("/etc/shadow", lower / "d" / "esc")
    os.mkfifo(lower / "d" / "fifo")
    (upper / "d" / "top").write_text("top")
    os.chown(upper / "d" / "top", 123, 456)
    os.chmod(upper / "d" / "top", 0o640)
    try:
        os.setxattr(upper / "d" / "top", "user.test", b"v")
        xattrs = True
    except OSError:
        xattrs = False
    assert vols.copy_up([str(upper), str(lower)], "/d", dest)
    assert sorted(os.listdir(dest)) == ["esc", "fifo", "opq", "sub", "top"]
    assert os.listdir(dest / "opq") == ["shown"]
    assert os.readlink(dest / "esc") == "/etc/shadow"
    assert stat.S_ISFIFO(os.lstat(dest / "fifo").st_mode)
    st = os.stat(dest / "top")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (123, 456, 0o640)
    assert os.stat(dest / "sub" / "f").st_ino == os.stat(dest / "sub" / "hard").st_ino
    if xattrs:
        assert os.getxattr(dest / "top", "user.test") == b"v"
    assert OVERLAY_OPAQUE_XATTR not in os.listxattr(dest / "opq")
    assert not vols.copy_up([str(upper), str(lower)], "/d", dest)  # not empty: no copy
    # a symlink on the path is not a directory to copy from
    empty = tmp_path / "empty"
    empty.mkdir()
    os.symlink("/etc", lower / "link")
    assert not vols.copy_up([str(lower)], "/link", empty) and os.listdir(empty) == []


def test_relative_bind_from_the_cwd(root: Path, tmp_path: Path) -> None:
    """Docker's CLI (23+): -v ./dir:/m binds a dir relative to the current directory."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "f").write_text("relative\n")
    env = {**os.environ, "MINIRUN_ROOT": str(root)}
    r = subprocess.run([str(MINIRUN), "run", "--rm", "--network", "none", "--pull", "never",
                        "-v", "./sub:/m:ro", "busybox", "cat", "/m/f"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "relative\n"
