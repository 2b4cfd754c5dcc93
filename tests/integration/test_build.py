"""``minirun build`` as root, through the real CLI and the library: RUN as real
containers, COPY/ADD layers, the cache, multi-stage, failures that leave nothing."""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from minirun.image import buildcache
from minirun.image.store import Store
from tests.conftest import loaded_root

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: real containers")

Cli = Callable[..., "subprocess.CompletedProcess[str]"]
NET = ("--network", "none")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory, built_images: Path) -> Iterator[Path]:
    yield from loaded_root(tmp_path_factory, built_images)


def build(mr: Cli, ctx: Path, *args: str) -> subprocess.CompletedProcess[str]:
    r = mr("build", *NET, *args, str(ctx), timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def config(mr: Cli, image: str) -> dict:
    r = mr("inspect", "--type", "image", image)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)[0]


def no_containers(mr: Cli) -> None:
    assert mr("ps", "-aq").stdout.strip() == ""


def test_config_applied_and_history(mr: Cli, root: Path, tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text(
        "FROM busybox\n"
        "ENV GREETING=hello APPDIR=/srv/app\n"
        "WORKDIR $APPDIR\n"
        "COPY --chown=www-data:users hello.txt ./\n"
        "RUN echo \"$GREETING from RUN\" > /srv/app/run.txt && chown nobody /srv/app/run.txt\n"
        "LABEL org.example.v=1\n"
        "EXPOSE 8080/tcp\n"
        "VOLUME /data\n"
        "STOPSIGNAL SIGINT\n"
        "USER nobody\n"
        "ENTRYPOINT [\"/bin/sh\", \"-c\", \"echo $GREETING $(id -u) $(pwd) \\\"$@\\\"; cat *.txt; ls -ln hello.txt\", \"--\"]\n"
        "CMD [\"dflt\"]\n")
    (tmp_path / "hello.txt").write_text("hi there\n")
    out = build(mr, tmp_path, "-t", "cfgtest:1").stdout
    assert "#2 [1/4] FROM docker.io/library/busybox:latest" in out
    assert "[3/4] COPY --chown=www-data:users hello.txt ./" in out
    assert "writing image sha256:" in out and "naming to docker.io/library/cfgtest:1 done" in out
    r = mr("run", "--rm", *NET, "cfgtest:1")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "hello 65534 /srv/app dflt"
    assert lines[1:3] == ["hi there", "hello from RUN"]
    assert lines[3].split()[2:4] == ["33", "100"]  # --chown names from the image's passwd/group
    img = config(mr, "cfgtest:1")
    c = img["Config"]
    assert c["Env"][-2:] == ["GREETING=hello", "APPDIR=/srv/app"] and c["WorkingDir"] == "/srv/app"
    assert c["User"] == "nobody" and c["Labels"] == {"org.example.v": "1"}
    assert c["ExposedPorts"] == {"8080/tcp": {}} and c["Volumes"] == {"/data": {}}
    assert c["StopSignal"] == "SIGINT" and c["Cmd"] == ["dflt"]
    # history: busybox's entries, then one per instruction; WORKDIR (which makes the
    # missing /srv/app), COPY and RUN own a layer each
    store = Store(root)
    rec = store.resolve("cfgtest:1")
    raw = json.loads(store.read_blob(rec.id))
    hist = raw["history"][len(json.loads(store.read_blob(store.resolve("busybox").id))["history"]):]
    assert len(rec.layers) == 4 and len(raw["rootfs"]["diff_ids"]) == 4
    assert [h.get("empty_layer", False) for h in hist] == [True, False, False, False] + [True] * 7
    assert hist[1]["created_by"] == "WORKDIR /srv/app"
    assert hist[3]["created_by"].startswith("RUN /bin/sh -c echo \"$GREETING from RUN\"")
    assert hist[3]["created_by"].endswith(" # buildkit")
    assert hist[2]["created_by"] == "COPY --chown=www-data:users hello.txt ./ # buildkit"
    assert hist[0]["created_by"] == "ENV GREETING=hello APPDIR=/srv/app"
    assert all(h["comment"] == "buildkit.dockerfile.v0" for h in hist)
    no_containers(mr)


def test_cache_hit_runs_nothing_and_miss_on_change(mr: Cli, root: Path, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    # the RUN writes a random stamp: the same stamp after a rebuild proves it did not run
    (ctx / "Dockerfile").write_text(
        "FROM busybox\nCOPY a.txt /a.txt\nRUN cat /proc/sys/kernel/random/uuid > /stamp\nCOPY b.txt /b.txt\n")
    (ctx / "a.txt").write_text("one\n")
    (ctx / "b.txt").write_text("bee\n")
    first = build(mr, ctx, "-t", "cachetest")
    assert "CACHED" not in first.stdout
    id1 = config(mr, "cachetest")["Id"]
    stamp1 = mr("run", "--rm", *NET, "cachetest", "cat", "/stamp").stdout
    second = build(mr, ctx, "-t", "cachetest")
    assert second.stdout.count("CACHED") == 3, second.stdout
    assert "#4 [3/4] RUN cat /proc/sys/kernel/random/uuid > /stamp\n#4 CACHED" in second.stdout
    assert config(mr, "cachetest")["Id"] == id1  # byte-identical config: the same image
    assert mr("run", "--rm", *NET, "cachetest", "cat", "/stamp").stdout == stamp1
    # a change of b.txt (after the RUN): only the last COPY misses
    (ctx / "b.txt").write_text("changed\n")
    third = build(mr, ctx, "-t", "cachetest")
    assert third.stdout.count("CACHED") == 2
    assert mr("run", "--rm", *NET, "cachetest", "cat", "/stamp").stdout == stamp1
    # a change of a.txt (before the RUN): the RUN runs again
    (ctx / "a.txt").write_text("two\n")
    fourth = build(mr, ctx, "-t", "cachetest")
    assert "CACHED" not in fourth.stdout
    assert mr("run", "--rm", *NET, "cachetest", "cat", "/stamp").stdout != stamp1
    # a mode change is a change too
    os.chmod(ctx / "a.txt", 0o600)
    assert "CACHED" not in build(mr, ctx, "-t", "cachetest").stdout.split("RUN")[0]
    # --no-cache runs every step
    assert "CACHED" not in build(mr, ctx, "--no-cache", "-t", "cachetest").stdout
    entries, size, _ = buildcache.usage(Store(root))
    assert entries >= 3 and size > 0
    no_containers(mr)


def test_library_counts_runs(root: Path, tmp_path: Path) -> None:
    from minirun.image.builder import BuildOptions
    from minirun.image.builder import build as run_build

    (tmp_path / "Dockerfile").write_text("FROM busybox\nRUN echo one > /one\nRUN echo two > /two\n")
    store = Store(root)
    lines: list[str] = []
    opts = BuildOptions(context=tmp_path, tags=["libcount"], network="none")
    first = run_build(store, opts, lines.append)
    assert (first.ran, first.cached) == (2, 0)
    again = run_build(store, opts, lines.append)
    assert (again.ran, again.cached) == (0, 2) and again.image.id == first.image.id


def test_build_args_and_meta_args(mr: Cli, tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text(
        "ARG BASE=busybox\nFROM $BASE\nARG WHO=world\nARG UNUSED_DEFAULT=x\n"
        "RUN echo \"hello $WHO\" > /greeting\nENV FROM_ARG=${WHO:-none}\n")
    build(mr, tmp_path, "-t", "argtest")
    assert mr("run", "--rm", *NET, "argtest", "cat", "/greeting").stdout == "hello world\n"
    r = build(mr, tmp_path, "-t", "argtest", "--build-arg", "WHO=minirun", "--build-arg", "NOPE=1")
    assert "[Warning] One or more build-args ['NOPE'] were not consumed" in r.stdout
    assert mr("run", "--rm", *NET, "argtest", "cat", "/greeting").stdout == "hello minirun\n"
    img = config(mr, "argtest")
    assert "FROM_ARG=minirun" in img["Config"]["Env"]
    assert not any(e.startswith("WHO=") for e in img["Config"]["Env"])  # ARGs are not ENV
    r = mr("build", *NET, "--build-arg", "BASE=nonexistent", str(tmp_path))
    assert r.returncode == 1 and "FROM nonexistent: no such image" in r.stderr


def test_multistage_target_and_copy_from(mr: Cli, root: Path, tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text(
        "FROM busybox AS builder\nRUN mkdir /out && echo artefact > /out/thing && chmod 0751 /out/thing "
        "&& chown 33:33 /out/thing\n"
        "FROM scratch AS final\nCOPY --from=builder /out/thing /thing\nCOPY --from=busybox /bin/busybox /bin/\n"
        "CMD [\"/bin/busybox\", \"cat\", \"/thing\"]\n")
    out = build(mr, tmp_path, "-t", "ms:final").stdout
    assert "[builder 2/2] RUN mkdir /out" in out and "[final 1/2] COPY --from=builder /out/thing /thing" in out
    assert mr("run", "--rm", *NET, "ms:final").stdout == "artefact\n"
    r = mr("run", "--rm", *NET, "ms:final", "/bin/busybox", "stat", "-c", "%a %u", "/thing")
    assert r.stdout == "751 33\n"  # COPY --from keeps mode and owner
    store = Store(root)
    final = store.resolve("ms:final")
    assert len(final.layers) == 2  # only the target stage's layers
    kept = buildcache.stage_images(store)
    assert len(kept) == 1 and store.resolve(kept[0]).repo_tags == []  # the builder stage: untagged
    # as Docker's intermediate images: listed by images -a only
    short = kept[0].split(":")[1][:12]
    assert short not in mr("images", "-q").stdout.split()
    assert short in mr("images", "-a", "-q").stdout.split()
    # a rebuild runs nothing: the builder stage's result was kept for the cache
    again = build(mr, tmp_path, "-t", "ms:final").stdout
    assert again.count("CACHED") == 3
    # --target builds only that stage (and what it needs), and tags it
    t = build(mr, tmp_path, "--target", "builder", "-t", "ms:builder").stdout
    assert "[final" not in t
    assert mr("run", "--rm", *NET, "ms:builder", "cat", "/out/thing").stdout == "artefact\n"
    r = mr("build", *NET, "--target", "nope", str(tmp_path))
    assert r.returncode == 1 and "target stage 'nope' could not be found" in r.stderr
    assert mr("system", "check").returncode == 0, mr("system", "check").stdout
    assert buildcache.prune(store) > 0
    assert buildcache.stage_images(store) == [] and buildcache.usage(store)[0] == 0


def _tar(members: dict[str, bytes], mode: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:  # type: ignore[call-overload]
        for name, data in members.items():
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode, ti.uid, ti.gid = len(data), 0o640, 7, 8
            tar.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def test_add_archives_dockerignore_and_url(mr: Cli, tmp_path: Path) -> None:
    (tmp_path / "plain.tar").write_bytes(_tar({"p/file": b"plain\n"}, "w"))
    (tmp_path / "a.tar.gz").write_bytes(_tar({"g/file": b"gz\n"}, "w:gz"))
    (tmp_path / "a.tar.bz2").write_bytes(_tar({"b/file": b"bz2\n"}, "w:bz2"))
    (tmp_path / "a.tar.xz").write_bytes(_tar({"x/file": b"xz\n"}, "w:xz"))
    import zstandard

    (tmp_path / "a.tar.zst").write_bytes(zstandard.ZstdCompressor().compress(_tar({"z/file": b"zst\n"}, "w")))
    (tmp_path / "not-an-archive.gz").write_bytes(b"\x1f\x8bnot really gzip")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "keep.txt").write_text("keep\n")
    (tmp_path / "src" / "drop.log").write_text("drop\n")
    (tmp_path / "src" / "deep").mkdir()
    (tmp_path / "src" / "deep" / "x.log").write_text("deep log\n")
    (tmp_path / "src" / "deep" / "important.log").write_text("kept by !\n")
    (tmp_path / ".dockerignore").write_text("# comment\n**/*.log\n!src/deep/important.log\n*.gz\n!a.tar.gz\n")
    (tmp_path / "Dockerfile").write_text(
        "FROM busybox\nADD plain.tar a.tar.gz a.tar.bz2 a.tar.xz a.tar.zst /unpacked/\n"
        "COPY src /copied\nADD --chown=1:1 src/keep.txt /added/\n")
    build(mr, tmp_path, "-t", "addtest")
    r = mr("run", "--rm", *NET, "addtest", "sh", "-c",
           "cat /unpacked/*/file; stat -c '%a %u %g' /unpacked/g/file; find /copied | sort; "
           "stat -c '%u' /added/keep.txt")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "bz2", "gz", "plain", "xz", "zst", "640 7 8",
        "/copied", "/copied/deep", "/copied/deep/important.log", "/copied/keep.txt", "1"]
    # an excluded file is not in the context
    (tmp_path / "Dockerfile").write_text("FROM busybox\nCOPY src/drop.log /x\n")
    r = mr("build", *NET, str(tmp_path))
    assert r.returncode == 1 and "excluded by .dockerignore" in r.stderr
    (tmp_path / "Dockerfile").write_text("FROM busybox\nADD https://example.com/x.tar /x\n")
    r = mr("build", *NET, str(tmp_path))
    assert r.returncode == 1 and "URLs are not supported" in r.stderr
    no_containers(mr)


def test_hostile_tar_and_escapes(mr: Cli, root: Path, tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        ti = tarfile.TarInfo("../../escape")
        ti.size = 3
        tar.addfile(ti, io.BytesIO(b"bad"))
    (tmp_path / "evil.tar").write_bytes(buf.getvalue())
    (tmp_path / "f").write_text("inside\n")
    (tmp_path / "Dockerfile").write_text("FROM busybox\nADD evil.tar /x/\n")
    before = sorted(p.name for p in (root / "layers").iterdir())
    r = mr("build", *NET, "-t", "evil", str(tmp_path))
    assert r.returncode == 1 and "refused" in r.stderr
    assert sorted(p.name for p in (root / "layers").iterdir()) == before
    assert mr("images", "-q", "evil").stdout == ""
    # a destination through symlinks of the image stays in its rootfs; ../ cannot leave the context
    (tmp_path / "Dockerfile").write_text(
        "FROM busybox\nRUN ln -s / /up && ln -s ../../../.. /tmp/rel\nCOPY f /up/tmp/via-abs\n"
        "COPY f /tmp/rel/tmp/via-rel\nCOPY ../../f /from-outside\n")
    build(mr, tmp_path, "-t", "escapes")
    r = mr("run", "--rm", *NET, "escapes", "cat", "/tmp/via-abs", "/tmp/via-rel", "/from-outside")
    assert r.stdout == "inside\n" * 3, r.stderr
    assert not Path("/tmp/via-abs").exists() and not Path("/tmp/via-rel").exists()


def test_failing_run_leaves_nothing(mr: Cli, root: Path, tmp_path: Path) -> None:
    (tmp_path / "big").write_bytes(os.urandom(4096))
    (tmp_path / "Dockerfile").write_text("FROM busybox\nCOPY big /big\nRUN echo before-fail && false\n")
    images_before = mr("images", "-q", "--no-trunc").stdout
    r = mr("build", *NET, "-t", "willfail", str(tmp_path))
    assert r.returncode == 1
    assert 'process "/bin/sh -c echo before-fail && false" did not complete successfully: exit code: 1' in r.stderr
    assert "before-fail" in r.stdout and "ERROR: process" in r.stdout
    assert mr("images", "-q", "--no-trunc").stdout == images_before
    no_containers(mr)
    check = mr("system", "check")
    assert check.returncode == 0 and "consistent" in check.stdout, check.stdout
    r = mr("build", *NET, str(tmp_path / "missing-dir"))
    assert r.returncode == 1 and "not found" in r.stderr


def test_quiet_containerfile_and_empty_run(mr: Cli, root: Path, tmp_path: Path) -> None:
    (tmp_path / "Containerfile").write_text("FROM busybox\nRUN true\n")
    r = build(mr, tmp_path, "-q", "-t", "quiet")
    assert r.stdout.strip().startswith("sha256:") and len(r.stdout.splitlines()) == 1
    store = Store(root)
    rec = store.resolve("quiet")
    raw = json.loads(store.read_blob(rec.id))
    # a RUN that changes nothing: a history entry, no layer (as BuildKit)
    assert len(rec.layers) == 1 and raw["history"][-1]["empty_layer"] is True
    assert raw["history"][-1]["created_by"] == "RUN /bin/sh -c true # buildkit"


def test_workdir_makes_the_missing_dir(mr: Cli, root: Path, tmp_path: Path) -> None:
    """WORKDIR makes its dir (and the missing parents) as BuildKit's mkdir -p does: 0755,
    root's, or the USER's when one is set, in a layer of its own; an existing dir adds no
    layer, and a path through a file is an error."""
    (tmp_path / "Dockerfile").write_text(
        "FROM busybox\nWORKDIR /opt/app/data\nWORKDIR rel\nWORKDIR /tmp\nUSER nobody\n"
        "WORKDIR /home/work\nRUN pwd > /tmp/pwd\nWORKDIR /opt/app/data/rel\n")
    out = build(mr, tmp_path, "-t", "wdtest").stdout
    assert "[2/7] WORKDIR /opt/app/data" in out and "[3/7] WORKDIR /opt/app/data/rel" in out
    r = mr("run", "--rm", *NET, "wdtest", "sh", "-c",
           "pwd; cat /tmp/pwd; stat -c '%a %u %g %n' /opt /opt/app /opt/app/data /opt/app/data/rel /home/work")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["/opt/app/data/rel", "/home/work", "755 0 0 /opt", "755 0 0 /opt/app",
                                     "755 0 0 /opt/app/data", "755 0 0 /opt/app/data/rel",
                                     "755 65534 65534 /home/work"]
    store = Store(root)
    rec = store.resolve("wdtest")
    raw = json.loads(store.read_blob(rec.id))
    hist = raw["history"][len(json.loads(store.read_blob(store.resolve("busybox").id))["history"]):]
    assert [(h["created_by"].split(" #")[0], h.get("empty_layer", False)) for h in hist] == [
        ("WORKDIR /opt/app/data", False), ("WORKDIR /opt/app/data/rel", False), ("WORKDIR /tmp", True),
        ("USER nobody", True), ("WORKDIR /home/work", False), ("RUN /bin/sh -c pwd > /tmp/pwd", False),
        ("WORKDIR /opt/app/data/rel", True)]
    # the first WORKDIR's layer holds the three new dirs and nothing else
    top = store.layer_dir(rec.layers[1].diff_id)
    assert sorted(str(p.relative_to(top)) for p in top.rglob("*")) == ["opt", "opt/app", "opt/app/data"]
    assert build(mr, tmp_path, "-t", "wdtest").stdout.count("CACHED") == 1  # the RUN; WORKDIRs hit too
    assert config(mr, "wdtest")["Id"] == rec.id
    (tmp_path / "Dockerfile").write_text("FROM busybox\nWORKDIR /etc/passwd/sub\n")
    images_before = mr("images", "-q", "--no-trunc").stdout
    r = mr("build", *NET, "-t", "wdbad", str(tmp_path))
    assert r.returncode == 1 and "WORKDIR /etc/passwd/sub: mkdir /etc/passwd: not a directory" in r.stderr
    assert mr("images", "-q", "--no-trunc").stdout == images_before
    no_containers(mr)


def test_source_date_epoch_makes_builds_reproducible(mr: Cli, root: Path, tmp_path: Path) -> None:
    """--build-arg SOURCE_DATE_EPOCH: created times are that time and file times in the
    new layers are clamped to it, so building again from nothing gives the same image."""
    (tmp_path / "Dockerfile").write_text(
        "FROM busybox\nARG SOURCE_DATE_EPOCH\nCOPY f /srv/f\nWORKDIR /srv/new\n"
        "RUN echo \"$SOURCE_DATE_EPOCH\" > epoch && mkdir -p /var/log/app && rm /etc/issue\n")
    (tmp_path / "f").write_text("content\n")
    args = ("--build-arg", "SOURCE_DATE_EPOCH=1700000000")
    out = build(mr, tmp_path, *args, "--no-cache", "-t", "sde:1").stdout
    assert "were not consumed" not in out
    first = config(mr, "sde:1")
    build(mr, tmp_path, *args, "--no-cache", "-t", "sde:2")  # every step again, later
    assert config(mr, "sde:2")["Id"] == first["Id"]
    assert first["Created"].startswith("2023-11-14T22:13:20")
    r = mr("run", "--rm", *NET, "sde:1", "sh", "-c", "cat epoch; stat -c '%Y' /srv /srv/f /srv/new /var/log/app")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["1700000000"] + ["1700000000"] * 4
    r = mr("build", *NET, "--build-arg", "SOURCE_DATE_EPOCH=yesterday", str(tmp_path))
    assert r.returncode == 1 and "SOURCE_DATE_EPOCH='yesterday'" in r.stderr
    no_containers(mr)


def test_missing_sources_say_what_and_where(mr: Cli, tmp_path: Path) -> None:
    """A COPY/ADD source that is not there names the path and where it was looked for (the
    build context, a stage, an image), as BuildKit's '"/nofile": not found'; a symlink in
    the context that leads nowhere keeps its own message. Nothing is left behind."""
    (tmp_path / "f").write_text("f\n")
    os.symlink("no-such-target", tmp_path / "dangling")
    images_before = mr("images", "-q", "--no-trunc").stdout

    def fails(dockerfile: str) -> str:
        (tmp_path / "Dockerfile").write_text(dockerfile)
        r = mr("build", *NET, str(tmp_path))
        assert r.returncode == 1, r.stdout + r.stderr
        return r.stderr

    err = fails("FROM busybox\nCOPY f nofile /x/\n")
    assert 'COPY failed: "/nofile": not found in the build context' in err and "symlink" not in err, err
    err = fails("FROM busybox\nADD ./sub/../nofile /x\n")
    assert 'ADD failed: "/nofile": not found in the build context' in err, err
    err = fails("FROM busybox\nCOPY *.nomatch /x/\n")
    assert '"/*.nomatch": not found in the build context' in err, err
    err = fails("FROM busybox AS builder\nRUN true\nFROM busybox\nCOPY --from=builder /app /app\n")
    assert 'COPY failed: "/app": not found in stage "builder"' in err and "context" not in err, err
    err = fails("FROM busybox\nCOPY --from=busybox /nope /x\n")
    assert 'COPY failed: "/nope": not found in image "busybox"' in err, err
    err = fails("FROM busybox\nCOPY dangling /x\n")
    assert "COPY failed: dangling: a symlink that leads nowhere inside the build context" in err, err
    err = fails("FROM busybox\nRUN ln -s /nowhere /lnk\nFROM busybox\nCOPY --from=0 /lnk /x\n")
    assert 'a symlink that leads nowhere inside stage "0"' in err, err
    assert mr("images", "-q", "--no-trunc").stdout == images_before
    no_containers(mr)


def test_system_df_lists_the_build_cache(mr: Cli, root: Path, tmp_path: Path) -> None:
    """``system df -v`` has one Build Cache row per entry ``usage`` counts; a rebuild's hits
    raise an entry's usage count; its size is the layer the step added."""
    (tmp_path / "f").write_bytes(os.urandom(3000))  # a new COPY layer: a new entry
    (tmp_path / "Dockerfile").write_text("FROM busybox\nCOPY f /f\nENV X=1\n")
    build(mr, tmp_path, "-t", "dfcache")
    build(mr, tmp_path, "-t", "dfcache")
    store = Store(root)
    count = buildcache.usage(store)[0]
    assert count >= 2
    rows = buildcache.entries(store)
    assert len(rows) == count
    copy = next(r for r in rows if r["Description"] == "COPY f /f")
    assert copy["UsageCount"] == "2" and copy["Shared"] == "true" and copy["CacheType"] == "regular"
    assert copy["Size"].endswith("kB") and len(copy["ID"]) == 12 and copy["InUse"] is False
    env = next(r for r in rows if r["Description"] == "ENV X=1")
    assert env["Size"] == "0B" and env["Shared"] == "false"
    out = mr("system", "df", "-v")
    assert out.returncode == 0, out.stderr
    section = out.stdout.split("Build cache usage:")[1].splitlines()[1:]
    header = [i for i, line in enumerate(section) if line.startswith("CACHE ID")]
    assert header, out.stdout
    table_rows = [line for line in section[header[0] + 1:] if line.strip()]
    assert len(table_rows) == count, out.stdout
    assert any(line.split()[:2] == [copy["ID"], "regular"] and " 2 " in line for line in table_rows)
    doc = json.loads(mr("system", "df", "-v", "--format", "json").stdout)
    assert len(doc["BuildCache"]) == count
    summary = mr("system", "df", "--format", "{{.Type}} {{.TotalCount}}").stdout
    assert f"Build Cache {count}" in summary
