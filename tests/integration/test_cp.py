"""``minirun cp`` as root with real containers: both directions, running, exited and
never-started containers, Docker's path rules, tar streams on stdin/stdout, ownership,
symlinks in the container that point out of it, hostile tars, -v binds, read-only roots."""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import CONTAINER_TESTS, MINIRUN, RUN, store_cli

pytestmark = CONTAINER_TESTS

Cli = Callable[..., "subprocess.CompletedProcess[str]"]
# what each test container holds (made by its own command, so the exited one has it too)
SETUP = ("mkdir -p /d/sub /in && echo hi > /d/f && echo sub > /d/sub/g && chown 1234:567 /d/f "
         "&& ln -s / /evil && ln -s ../../../../{escape} /etc/x && ln -s /d/f /lnk && ln -s /d /dlnk "
         "&& ln -s {host_secret} /abslnk && echo container > /who")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, built_images: Path) -> Iterator[dict[str, str]]:
    store = tmp_path_factory.mktemp("store")
    e = {**os.environ, "MINIRUN_ROOT": str(store)}
    subprocess.run([str(MINIRUN), "load", "-q", "-i", str(built_images / "busybox")], check=True, env=e)
    yield e
    ids = subprocess.run([str(MINIRUN), "ps", "-aq"], env=e, capture_output=True, text=True).stdout.split()
    if ids:
        subprocess.run([str(MINIRUN), "rm", "-f", *ids], env=e, capture_output=True)


@pytest.fixture(scope="module")
def mr(env: dict[str, str]) -> Cli:
    return store_cli(env)


@pytest.fixture(scope="module")
def escape() -> Iterator[str]:
    """A name at the host's / that the container's symlinks aim at: must never appear."""
    name = f"minirun-cp-escape-{uuid.uuid4().hex[:8]}"
    yield name
    assert not os.path.lexists(f"/{name}"), "a container symlink led a write out to the host"


@pytest.fixture(scope="module")
def host_secret(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("secret") / "secret"
    p.write_text("HOST SECRET\n")
    return p


@pytest.fixture(scope="module")
def vol(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("vol")


@pytest.fixture(scope="module")
def containers(mr: Cli, escape: str, host_secret: Path, vol: Path) -> dict[str, str]:
    """name -> state: a running one (sleeping), an exited one, both with SETUP and a
    -v bind at /data."""
    setup = SETUP.format(escape=escape, host_secret=host_secret)
    out = {}
    vr, vx = vol / "running", vol / "exited"
    r = mr("run", "-d", "--name", "cr", *RUN, "-v", f"{vr}:/data", "busybox", "sh", "-c",
           setup + " && exec sleep 1000")
    assert r.returncode == 0, r.stderr
    r = mr("run", "--name", "cx", *RUN, "-v", f"{vx}:/data", "busybox", "sh", "-c", setup)
    assert r.returncode == 0, r.stderr
    deadline = 200
    while mr("exec", "cr", "test", "-e", "/who").returncode != 0 and deadline:
        deadline -= 1
        subprocess.run(["sleep", "0.05"])
    out["cr"], out["cx"] = "running", "exited"
    return out


def mrb(env: dict[str, str], *args: str, input: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([str(MINIRUN), *args], env=env, input=input, capture_output=True, timeout=60)


def one_error(r: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert r.returncode == 1, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def listing(env: dict[str, str], ctr: str, path: str) -> dict[str, tuple[str, int, int, bytes]]:
    """What the container has at ``path``, read back through `cp CTR:PATH -` (works for
    every state): name -> (kind, uid, gid, content)."""
    r = mrb(env, "cp", f"{ctr}:{path}", "-")
    assert r.returncode == 0, r.stderr
    out = {}
    with tarfile.open(fileobj=io.BytesIO(r.stdout), mode="r:") as t:
        for m in t:
            data = t.extractfile(m).read() if m.isreg() else m.linkname.encode()  # type: ignore[union-attr]
            kind = "dir" if m.isdir() else "file" if m.isreg() else "link" if m.issym() else "other"
            out[m.name] = (kind, m.uid, m.gid, data)
    return out


BOTH = pytest.mark.parametrize("ctr", ["cr", "cx"])


# -- out of the container ------------------------------------------------------------------


@BOTH
def test_out_file_dir_and_contents(containers: dict[str, str], mr: Cli, tmp_path: Path, ctr: str) -> None:
    assert mr("cp", f"{ctr}:/d/f", str(tmp_path / "f2")).returncode == 0
    assert (tmp_path / "f2").read_text() == "hi\n"
    assert mr("cp", f"{ctr}:/d", str(tmp_path)).returncode == 0  # existing dir: copied into it
    assert (tmp_path / "d" / "sub" / "g").read_text() == "sub\n"
    assert mr("cp", f"{ctr}:/d", str(tmp_path / "new")).returncode == 0  # missing: takes the name
    assert sorted(os.listdir(tmp_path / "new")) == ["f", "sub"]
    (tmp_path / "into").mkdir()
    assert mr("cp", f"{ctr}:/d/.", str(tmp_path / "into")).returncode == 0  # /. : the contents
    assert sorted(os.listdir(tmp_path / "into")) == ["f", "sub"]
    assert mr("cp", f"{ctr}:/d/f", str(tmp_path / "into") + "/").returncode == 0  # file into a dir
    assert mr("cp", f"{ctr}:/who", str(tmp_path / "f2")).returncode == 0  # file over a file
    assert (tmp_path / "f2").read_text() == "container\n"
    assert mr("cp", f"{ctr}:/d/", str(tmp_path / "slash")).returncode == 0  # a dir may make DEST/
    assert (tmp_path / "slash" / "f").is_file()


@BOTH
def test_out_path_rules_errors(containers: dict[str, str], mr: Cli, tmp_path: Path, ctr: str) -> None:
    (tmp_path / "file").write_text("x")
    one_error(mr("cp", f"{ctr}:/d/f", str(tmp_path / "nodir") + "/"), "no such directory")
    one_error(mr("cp", f"{ctr}:/d", str(tmp_path / "file")), "cannot copy a directory to a file")
    one_error(mr("cp", f"{ctr}:/d/f", str(tmp_path / "missing" / "x")), "invalid output path", "does not exist")
    one_error(mr("cp", f"{ctr}:/nope", str(tmp_path / "y")), f"Could not find the file /nope in container {ctr}")
    one_error(mr("cp", f"{ctr}:/d/f/x", str(tmp_path / "y")), "Could not find the file")
    assert sorted(os.listdir(tmp_path)) == ["file"]
    assert (tmp_path / "file").read_text() == "x"


@BOTH
def test_a_trailing_slash_or_dot_on_a_file_is_not_a_directory(containers: dict[str, str], mr: Cli,
                                                              env: dict[str, str], tmp_path: Path,
                                                              ctr: str) -> None:
    # Docker: lstat .../etc/passwd/: not a directory (not "Could not find the file")
    for given in ("/d/f/", "/d/f/.", "/lnk/", "/lnk/."):
        line = one_error(mr("cp", f"{ctr}:{given}", str(tmp_path / "y")),
                         f"lstat {given}: not a directory (in container {ctr})")
        assert "Could not find" not in line
        one_error(mr("cp", "-L", f"{ctr}:{given}", str(tmp_path / "y")), f"lstat {given}: not a directory")
    one_error(mr("cp", f"{ctr}:/nope/", str(tmp_path / "y")), "Could not find the file /nope/ in container")
    # host side: the file exists, it is no directory
    host = tmp_path / "src"
    host.mkdir()
    (host / "a.txt").write_text("A\n")
    for suffix in ("/", "/."):
        given = f"{host}/a.txt{suffix}"
        line = one_error(mr("cp", given, f"{ctr}:/tmp"), f"lstat {given}: not a directory")
        assert "no such file" not in line
    # as a DEST a file/ is what Docker calls it: a directory that does not exist
    one_error(mr("cp", str(host / "a.txt"), f"{ctr}:/d/f/"), "no such directory")
    assert not (tmp_path / "y").exists()
    assert listing(env, ctr, "/d/f")["f"][3] == b"hi\n"  # untouched


def test_errors_about_the_arguments(containers: dict[str, str], mr: Cli, tmp_path: Path) -> None:
    one_error(mr("cp", "nosuch:/x", str(tmp_path)), "no such container: nosuch")
    one_error(mr("cp", str(tmp_path), str(tmp_path)), "at least one container")
    one_error(mr("cp", "cr:/x", "cx:/y"), "between containers is not supported")
    one_error(mr("cp", str(tmp_path / "absent"), "cr:/tmp"), "no such file or directory")


@BOTH
def test_out_symlinks_copied_as_links_or_followed_with_L(containers: dict[str, str], mr: Cli, tmp_path: Path,
                                                          ctr: str) -> None:
    assert mr("cp", f"{ctr}:/lnk", str(tmp_path / "l")).returncode == 0
    assert os.readlink(tmp_path / "l") == "/d/f"
    assert mr("cp", "-L", f"{ctr}:/lnk", str(tmp_path)).returncode == 0  # named as the link
    assert (tmp_path / "lnk").read_text() == "hi\n" and not (tmp_path / "lnk").is_symlink()
    assert mr("cp", f"{ctr}:/dlnk/", str(tmp_path / "viaslash")).returncode == 0  # trailing / follows
    assert (tmp_path / "viaslash" / "f").read_text() == "hi\n"


@BOTH
def test_out_through_container_links_reads_the_container_never_the_host(
        containers: dict[str, str], mr: Cli, tmp_path: Path, ctr: str, escape: str, host_secret: Path) -> None:
    # /evil -> / : the container's root, not the host's
    assert mr("cp", f"{ctr}:/evil/who", str(tmp_path / "who")).returncode == 0
    assert (tmp_path / "who").read_text() == "container\n"
    # /abslnk -> a host path that does not exist in the container
    one_error(mr("cp", "-L", f"{ctr}:/abslnk", str(tmp_path / "s")), "Could not find the file")
    one_error(mr("cp", f"{ctr}:/abslnk/", str(tmp_path / "s")), "Could not find the file")
    one_error(mr("cp", f"{ctr}:/etc/x/anything", str(tmp_path / "s")), "Could not find the file")
    assert not (tmp_path / "s").exists()
    assert host_secret.read_text() == "HOST SECRET\n"


@BOTH
def test_out_owner_is_the_caller_unless_archive(containers: dict[str, str], mr: Cli, tmp_path: Path,
                                                ctr: str) -> None:
    # Docker's documented rule: the invoking user's uid:gid; -a keeps the source's
    assert mr("cp", f"{ctr}:/d", str(tmp_path / "plain")).returncode == 0
    st = os.lstat(tmp_path / "plain" / "f")
    assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid())
    assert mr("cp", "-a", f"{ctr}:/d", str(tmp_path / "kept")).returncode == 0
    st = os.lstat(tmp_path / "kept" / "f")
    assert (st.st_uid, st.st_gid) == (1234, 567)


@BOTH
def test_out_to_stdout_is_a_tar(containers: dict[str, str], env: dict[str, str], ctr: str) -> None:
    r = mrb(env, "cp", f"{ctr}:/d", "-")
    assert r.returncode == 0, r.stderr
    names = subprocess.run(["tar", "-tf", "-"], input=r.stdout, capture_output=True, check=True).stdout.split()
    assert names == [b"d/", b"d/f", b"d/sub/", b"d/sub/g"]
    r = mrb(env, "cp", f"{ctr}:/d/.", "-")
    names = subprocess.run(["tar", "-tf", "-"], input=r.stdout, capture_output=True, check=True).stdout.split()
    assert names == [b"./", b"./f", b"./sub/", b"./sub/g"]
    assert r.stderr == b""


def test_out_of_a_running_container_skips_proc_and_sys(containers: dict[str, str], env: dict[str, str]) -> None:
    got = listing(env, "cr", "/")
    assert "./proc" in got and "./sys" in got and "./who" in got
    assert not [n for n in got if n.startswith(("./proc/", "./sys/", "./dev/pts/"))]


# -- into the container --------------------------------------------------------------------


@pytest.fixture
def src_tree(tmp_path: Path) -> Path:
    s = tmp_path / "src"
    (s / "dir" / "sub").mkdir(parents=True)
    (s / "dir" / "a").write_text("A\n")
    (s / "dir" / "sub" / "b").write_text("B\n")
    (s / "file").write_text("F\n")
    os.chown(s / "file", 1000, 1001)
    os.chown(s / "dir" / "a", 1000, 1001)
    os.chmod(s / "file", 0o4755)
    (s / "lnk").symlink_to("file")
    return s


def fresh_dir(mr: Cli, env: dict[str, str], ctr: str) -> str:
    """An empty dir in the container, made through cp itself (works when it is stopped)."""
    name = f"/t{uuid.uuid4().hex[:8]}"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        ti = tarfile.TarInfo(name.lstrip("/"))
        ti.type, ti.mode = tarfile.DIRTYPE, 0o755
        t.addfile(ti)
    r = mrb(env, "cp", "-", f"{ctr}:/", input=buf.getvalue())
    assert r.returncode == 0, r.stderr
    return name


@BOTH
def test_in_path_rules(containers: dict[str, str], mr: Cli, env: dict[str, str], src_tree: Path, ctr: str) -> None:
    t = fresh_dir(mr, env, ctr)
    assert mr("cp", str(src_tree / "file"), f"{ctr}:{t}/").returncode == 0
    assert mr("cp", str(src_tree / "dir"), f"{ctr}:{t}").returncode == 0
    assert mr("cp", str(src_tree / "dir") + "/.", f"{ctr}:{t}/contents").returncode == 0
    assert mr("cp", str(src_tree / "file"), f"{ctr}:{t}/renamed").returncode == 0
    assert mr("cp", str(src_tree / "lnk"), f"{ctr}:{t}").returncode == 0
    assert mr("cp", "-L", str(src_tree / "lnk"), f"{ctr}:{t}/followed").returncode == 0
    got = listing(env, ctr, t + "/.")
    assert got["./file"][3] == b"F\n" and got["./renamed"][3] == b"F\n"
    assert got["./dir/sub/b"][3] == b"B\n" and got["./contents/a"][3] == b"A\n"
    assert "./contents/sub" in got and "./contents/dir" not in got
    assert got["./lnk"][:1] == ("link",) and got["./lnk"][3] == b"file"
    assert got["./followed"][0] == "file"
    one_error(mr("cp", str(src_tree / "file"), f"{ctr}:{t}/nodir/"), "no such directory")
    one_error(mr("cp", str(src_tree / "dir"), f"{ctr}:{t}/file"), "cannot copy a directory to a file")
    one_error(mr("cp", str(src_tree / "file"), f"{ctr}:{t}/missing/x"), "Could not find the file")


@BOTH
def test_in_ownership_root_unless_archive(containers: dict[str, str], mr: Cli, env: dict[str, str],
                                          src_tree: Path, ctr: str) -> None:
    t = fresh_dir(mr, env, ctr)
    assert mr("cp", str(src_tree / "file"), f"{ctr}:{t}/plain").returncode == 0
    assert mr("cp", "-a", str(src_tree / "file"), f"{ctr}:{t}/kept").returncode == 0
    got = listing(env, ctr, t + "/.")
    assert got["./plain"][1:3] == (0, 0)
    assert got["./kept"][1:3] == (1000, 1001)
    r = mrb(env, "cp", f"{ctr}:{t}/plain", "-")
    with tarfile.open(fileobj=io.BytesIO(r.stdout)) as tf:
        assert tf.getmembers()[0].mode == 0o4755  # setuid kept (chmod after chown)


@BOTH
def test_in_through_container_links_stays_in_the_container(
        containers: dict[str, str], mr: Cli, env: dict[str, str], src_tree: Path, ctr: str, escape: str) -> None:
    t = fresh_dir(mr, env, ctr)
    assert mr("cp", str(src_tree / "file"), f"{ctr}:/evil{t}/via-evil").returncode == 0
    assert listing(env, ctr, f"{t}/via-evil")["via-evil"][3] == b"F\n"
    # /etc/x -> ../../../../ESCAPE: written at the container's /ESCAPE, never the host's
    assert mr("cp", str(src_tree / "file"), f"{ctr}:/etc/x").returncode == 0
    assert listing(env, ctr, f"/{escape}")[escape][3] == b"F\n"
    assert not os.path.lexists(f"/{escape}")


def test_in_to_stdin_tar_from_gnu_tar(containers: dict[str, str], mr: Cli, env: dict[str, str],
                                      src_tree: Path) -> None:
    data = subprocess.run(["tar", "-C", str(src_tree), "-cf", "-", "dir", "file"], capture_output=True,
                          check=True).stdout
    for ctr in ("cr", "cx"):
        t = fresh_dir(mr, env, ctr)
        r = mrb(env, "cp", "-", f"{ctr}:{t}", input=data)
        assert r.returncode == 0, r.stderr
        got = listing(env, ctr, t + "/.")
        assert got["./dir/sub/b"][3] == b"B\n" and got["./file"][1:3] == (0, 0)
        r = mrb(env, "cp", "-a", "-", f"{ctr}:{t}", input=data)
        assert listing(env, ctr, t + "/.")["./file"][1:3] == (1000, 1001)
        r = mrb(env, "cp", "-", f"{ctr}:{t}/file", input=data)
        assert r.returncode == 1 and b"must be a directory" in r.stderr


def hostile(*members: tuple[str, bytes, str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, typ, link in members:
            ti = tarfile.TarInfo(name)
            ti.type, ti.linkname, ti.mode = typ, link, 0o644
            body = b"pwned\n" if typ == tarfile.REGTYPE else b""
            ti.size = len(body)
            t.addfile(ti, io.BytesIO(body))
    return buf.getvalue()


R, D, S, H = tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE


@BOTH
@pytest.mark.parametrize(("members", "said"), [
    ([("ok", R, ""), ("/etc/pwned", R, "")], "absolute path"),
    ([("ok", R, ""), ("a/../../pwned", R, "")], "'..'"),
    ([("ok", R, ""), ("l", S, "/"), ("l/pwned", R, "")], "through the symlink"),
    ([("ok", R, ""), ("l", S, "{escape_dir}"), ("l/pwned", R, "")], "through the symlink"),
    ([("ok", R, ""), ("h", H, "../../etc/shadow")], "'..'"),
])
def test_hostile_tar_is_refused_and_nothing_written(
        containers: dict[str, str], mr: Cli, env: dict[str, str], ctr: str, tmp_path: Path,
        members: list[tuple[str, bytes, str]], said: str) -> None:
    members = [(n, t, link.format(escape_dir=str(tmp_path))) for n, t, link in members]
    t = fresh_dir(mr, env, ctr)
    r = mrb(env, "cp", "-", f"{ctr}:{t}", input=hostile(*members))
    assert r.returncode == 1
    err = r.stderr.decode().strip()
    assert err.startswith("Error: ") and said in err and "\n" not in err, err
    assert set(listing(env, ctr, t + "/.")) == {"."}  # not even the harmless first member
    assert os.listdir(tmp_path) == []
    assert not os.path.exists("/etc/pwned")
    assert not [p for p in os.listdir(Path(env["MINIRUN_ROOT"]) / "tmp")]  # the spool is gone


def test_a_tar_that_is_not_one(containers: dict[str, str], mr: Cli, env: dict[str, str]) -> None:
    r = mrb(env, "cp", "-", "cr:/tmp", input=b"this is not a tar archive\n" * 100)
    assert r.returncode == 1 and b"not a valid tar archive" in r.stderr


# -- states, volumes, mounts ---------------------------------------------------------------


def test_created_never_started(mr: Cli, env: dict[str, str], containers: dict[str, str], src_tree: Path) -> None:
    r = mr("create", "--name", "cc", *RUN, "busybox", "cat", "/hello")
    assert r.returncode == 0, r.stderr
    cid = r.stdout.strip()
    try:
        assert mr("cp", str(src_tree / "file"), "cc:/hello").returncode == 0
        assert mr("cp", "cc:/hello", "-").returncode == 0
        assert mr("diff", "cc").stdout.split() == ["A", "/hello"]
        r = mr("start", "-a", "cc")
        assert r.returncode == 0 and r.stdout == "F\n", (r.stdout, r.stderr)
        assert no_mount_of(env, cid)
    finally:
        mr("rm", "-f", "cc")


def no_mount_of(env: dict[str, str], cid: str) -> bool:
    cdir = str(Path(env["MINIRUN_ROOT"]) / "containers" / cid)
    with open("/proc/self/mountinfo") as f:
        return not [line for line in f if cdir in line]


def test_stopped_container_leaves_no_mount(containers: dict[str, str], mr: Cli, env: dict[str, str],
                                           src_tree: Path) -> None:
    cid = mr("inspect", "--type", "container", "cx").stdout
    cid = json.loads(cid)[0]["Id"]
    assert mr("cp", str(src_tree / "file"), "cx:/tmp/").returncode == 0
    assert mr("cp", "cx:/tmp/file", "-").returncode == 0
    assert no_mount_of(env, cid)
    assert mr("ps", "-a", "--filter", "name=cx", "--format", "{{.Status}}").stdout.startswith("Exited")


@BOTH
def test_into_a_bind_lands_in_its_source(containers: dict[str, str], mr: Cli, src_tree: Path, vol: Path,
                                         ctr: str) -> None:
    source = vol / ("running" if ctr == "cr" else "exited")
    assert mr("cp", str(src_tree / "dir"), f"{ctr}:/data/").returncode == 0
    assert (source / "dir" / "sub" / "b").read_text() == "B\n"
    (source / "from-host").write_text("H\n")
    r = mr("cp", f"{ctr}:/data/from-host", "-")
    assert r.returncode == 0 and "H\n" in r.stdout


def test_read_only_root_is_refused_but_its_volume_is_not(mr: Cli, env: dict[str, str], containers: dict[str, str],
                                                        src_tree: Path, tmp_path: Path) -> None:
    v = tmp_path / "v"
    r = mr("run", "--name", "cro", "--read-only", *RUN, "-v", f"{v}:/data", "busybox", "true")
    assert r.returncode == 0, r.stderr
    try:
        one_error(mr("cp", str(src_tree / "file"), "cro:/x"), "container rootfs is marked read-only")
        assert mr("cp", str(src_tree / "file"), "cro:/data/").returncode == 0
        assert (v / "file").read_text() == "F\n"
    finally:
        mr("rm", "-f", "cro")


def test_paused_container(containers: dict[str, str], mr: Cli, src_tree: Path, tmp_path: Path) -> None:
    assert mr("pause", "cr").returncode == 0
    try:
        assert mr("cp", "cr:/who", str(tmp_path / "who")).returncode == 0
        assert (tmp_path / "who").read_text() == "container\n"
        assert mr("cp", str(src_tree / "file"), "cr:/tmp/while-paused").returncode == 0
    finally:
        assert mr("unpause", "cr").returncode == 0
    assert mr("exec", "cr", "cat", "/tmp/while-paused").stdout == "F\n"


def test_running_container_sees_what_cp_wrote(containers: dict[str, str], mr: Cli, src_tree: Path) -> None:
    assert mr("cp", str(src_tree / "dir"), "cr:/in/").returncode == 0
    r = mr("exec", "cr", "sh", "-c", "cat /in/dir/a; stat -c '%u:%g' /in/dir/a")
    assert r.stdout == "A\n0:0\n", r.stderr


def test_host_dest_symlink_is_followed(containers: dict[str, str], mr: Cli, tmp_path: Path) -> None:
    (tmp_path / "real").write_text("old")
    (tmp_path / "link").symlink_to("real")
    assert mr("cp", "cr:/who", str(tmp_path / "link")).returncode == 0
    assert (tmp_path / "real").read_text() == "container\n" and (tmp_path / "link").is_symlink()


def test_library_directly(containers: dict[str, str], env: dict[str, str], tmp_path: Path) -> None:
    from minirun.container import copy
    from minirun.container.records import Containers
    from minirun.image.store import Store

    store = Store(env["MINIRUN_ROOT"])
    rec = Containers(store).get("cx")
    buf = io.BytesIO()
    res = copy.copy_from(store, rec, "/d", buf)
    assert res.size == len(buf.getvalue()) > 0
    res = copy.copy_to(store, rec, io.BytesIO(buf.getvalue()), "/tmp")
    assert res.members == 4
    res = copy.copy_from(store, rec, "/tmp/d", str(tmp_path / "back"))
    assert (tmp_path / "back" / "f").read_text() == "hi\n" and res.members == 4
