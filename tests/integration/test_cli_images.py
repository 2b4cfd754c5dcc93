"""The image verbs through the real ``minirun`` command: load, save, images, rmi, tag,
history, inspect, and how errors are reported."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from minirun.image.store import Store, short_id
from tests.conftest import MINIRUN, Cli

pytestmark = pytest.mark.root  # the CLI refuses to run without root

ID12 = re.compile(r"^[0-9a-f]{12}$")


def ok(res: subprocess.CompletedProcess[str]) -> list[str]:
    assert res.returncode == 0, f"rc={res.returncode}\nstdout={res.stdout}\nstderr={res.stderr}"
    assert "Traceback" not in res.stderr
    return res.stdout.splitlines()


def fails(res: subprocess.CompletedProcess[str], *words: str) -> str:
    """A user error: non-zero exit, one ``Error: ...`` line on stderr, no traceback."""
    assert res.returncode != 0, res.stdout
    assert "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("Error: "), res.stderr
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


# -- load -----------------------------------------------------------------------------------


def test_load_layouts_report_shared_layer(cli: Cli, built_images: Path, store_root: Path) -> None:
    out = ok(cli(["load", "-i", str(built_images / "busybox")]))
    assert len(out) == 2
    assert re.fullmatch(r"[0-9a-f]{12}: Loading layer [0-9.]+[kMG]?B \.\.\. done", out[0]), out
    assert out[1] == "Loaded image: busybox:latest"
    base = out[0][:12]
    out = ok(cli(["load", "-i", str(built_images / "busybox-extra")]))
    assert out[0] == f"{base}: Already exists"
    assert re.fullmatch(r"[0-9a-f]{12}: Loading layer .* \.\.\. done", out[1])
    assert out[2] == "Loaded image: busybox-extra:latest"
    # quiet: only the result
    out = ok(cli(["load", "-q", "-i", str(built_images / "busybox-edit")]))
    assert out == ["Loaded image: busybox-edit:latest"]
    assert len([p for p in (store_root / "layers").iterdir() if p.name != "l"]) == 3


def test_load_from_stdin_and_save_to_stdout(cli: Cli, loaded_store: Store, tmp_path: Path) -> None:
    res = subprocess.run([str(MINIRUN), "save", "busybox-extra"], capture_output=True,
                         env={"MINIRUN_ROOT": str(loaded_store.root), "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0 and res.stdout[:512].count(b"\0") > 0, res.stderr
    ok(cli(["rmi", "busybox-extra"]))
    out = ok(cli(["load"], input=res.stdout))
    assert out[0].endswith(": Already exists")
    assert out[1].endswith(" ... done")
    assert out[-1] == "Loaded image: busybox-extra:latest"
    assert not list((loaded_store.root / "tmp").iterdir())


def test_save_rmi_load_round_trip(cli: Cli, loaded_store: Store, tmp_path: Path) -> None:
    want = ok(cli(["images", "-q", "--no-trunc", "busybox-edit"]))
    assert len(want) == 1 and want[0].startswith("sha256:")
    tar = tmp_path / "edit.tar"
    assert ok(cli(["save", "-o", str(tar), "busybox-edit"])) == []
    ok(cli(["rmi", "busybox-edit"]))
    assert ok(cli(["images", "-q", "busybox-edit"])) == []
    out = ok(cli(["load", "-i", str(tar)]))
    assert out[-1] == "Loaded image: busybox-edit:latest"
    assert ok(cli(["images", "-q", "--no-trunc", "busybox-edit"])) == want


def test_save_two_images_sharing_a_layer(cli: Cli, loaded_store: Store, tmp_path: Path) -> None:
    import tarfile

    tar = tmp_path / "two.tar"
    ok(cli(["save", "-o", str(tar), "busybox-extra", "busybox-edit"]))
    with tarfile.open(tar) as t:
        names = t.getnames()
    base = loaded_store.resolve("busybox").layers[0].diff_id.split(":")[1]
    assert names.count(f"blobs/sha256/{base}") == 1
    fresh = tmp_path / "fresh"
    out = ok(cli(["load", "-i", str(tar)], env={"MINIRUN_ROOT": str(fresh)}))
    assert out.count(f"{base[:12]}: Already exists") == 1  # second image: shared base exists
    assert [line for line in out if line.startswith("Loaded image")] == [
        "Loaded image: busybox-extra:latest", "Loaded image: busybox-edit:latest"]
    shutil.rmtree(fresh)


# -- images ---------------------------------------------------------------------------------


def test_images_table(cli: Cli, loaded_store: Store) -> None:
    out = ok(cli(["images"]))
    assert re.split(r" {3,}", out[0]) == ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"]
    assert out[0].startswith("REPOSITORY   ")
    rows = [re.split(r" {3,}", line) for line in out[1:]]
    assert [r[:2] for r in rows] == [["busybox-edit", "latest"], ["busybox-extra", "latest"],
                                     ["busybox", "latest"]]  # newest first
    for r in rows:
        assert len(r) == 5 and ID12.match(r[2]) and r[3].endswith("ago") and re.match(r"[0-9.]+MB", r[4])
    # columns line up: every field starts where its header starts
    starts = [out[0].index(h) for h in ("TAG", "IMAGE ID", "CREATED", "SIZE")]
    for line in out[1:]:
        for s in starts:
            assert line[s - 1] == " " and line[s] != " "
    assert ok(cli(["images", "busybox"]))[1].startswith("busybox ")
    assert len(ok(cli(["images", "busybox"]))) == 2


def test_images_json(cli: Cli, loaded_store: Store) -> None:
    rows = [json.loads(line) for line in ok(cli(["images", "--format", "json"]))]
    assert len(rows) == 3
    for r in rows:
        assert {"Repository", "Tag", "ID", "Size", "CreatedSince", "CreatedAt", "Digest"} <= set(r)
        assert ID12.match(r["ID"])
    by = {r["Repository"]: r for r in rows}
    assert by["busybox"]["ID"] == short_id(loaded_store.resolve("busybox").id)
    assert by["busybox"]["Tag"] == "latest"


def test_images_quiet_and_untagged(cli: Cli, loaded_store: Store) -> None:
    ok(cli(["tag", "busybox", "localhost:5000/me/bb:v1"]))
    ids = ok(cli(["images", "-q"]))
    assert len(ids) == 3 and all(ID12.match(i) for i in ids)  # one line per image, not per tag
    rows = [json.loads(line) for line in ok(cli(["images", "--format", "json"]))]
    assert {"localhost:5000/me/bb", "busybox"} <= {r["Repository"] for r in rows}
    assert ok(cli(["images", "--format", "json", "localhost:5000/me/bb"]))


def test_images_empty_store(cli: Cli) -> None:
    assert ok(cli(["images"])) == ["REPOSITORY   TAG   IMAGE ID   CREATED   SIZE"]
    assert ok(cli(["images", "--format", "json"])) == []


# -- rmi and tag ----------------------------------------------------------------------------


def _layer_dirs(root: Path) -> set[str]:
    return {p.name for p in (root / "layers").iterdir() if p.name != "l"}


def test_rmi_deletes_a_layer_only_when_unused(cli: Cli, loaded_store: Store, store_root: Path) -> None:
    base = loaded_store.resolve("busybox").layers[0].diff_id
    extra = loaded_store.resolve("busybox-extra")
    out = ok(cli(["rmi", "busybox-extra"]))
    assert out[0] == "Untagged: busybox-extra:latest"
    assert out[1] == f"Deleted: {extra.id}"
    assert out[2:] == [f"Deleted: {extra.layers[1].diff_id}"]
    assert base.split(":")[1] in _layer_dirs(store_root)

    out = ok(cli(["rmi", "busybox"]))
    assert out[0] == "Untagged: busybox:latest" and out[1].startswith("Deleted: sha256:")
    assert len(out) == 2  # the base layer is still used by busybox-edit
    assert base.split(":")[1] in _layer_dirs(store_root)

    out = ok(cli(["rmi", "busybox-edit"]))
    assert f"Deleted: {base}" in out
    assert _layer_dirs(store_root) == set()
    assert list((store_root / "blobs" / "sha256").iterdir()) == []
    assert list((store_root / "layers" / "l").iterdir()) == []
    assert ok(cli(["images", "-q"])) == []


def test_rmi_several_at_once(cli: Cli, loaded_store: Store, store_root: Path) -> None:
    out = ok(cli(["rmi", "busybox", "busybox-extra", "busybox-edit"]))
    assert sum(line.startswith("Untagged: ") for line in out) == 3
    assert sum(line.startswith("Deleted: ") for line in out) == 3 + 3
    assert _layer_dirs(store_root) == set()


def test_rmi_by_id_with_two_tags(cli: Cli, loaded_store: Store) -> None:
    image_id = short_id(loaded_store.resolve("busybox").id)
    ok(cli(["tag", "busybox", "mybox:1"]))
    fails(cli(["rmi", image_id]), "must be forced", image_id)
    assert image_id in ok(cli(["images", "-q"]))
    assert ok(cli(["rmi", "mybox:1"])) == ["Untagged: mybox:1"]  # by name: untag only
    assert image_id in ok(cli(["images", "-q"]))
    ok(cli(["tag", image_id, "mybox:1"]))
    out = ok(cli(["rmi", "-f", image_id]))
    assert sorted(line for line in out if line.startswith("Untagged")) == [
        "Untagged: busybox:latest", "Untagged: mybox:1"]
    assert image_id not in ok(cli(["images", "-q"]))


def test_tag_then_rmi_one_tag_keeps_the_image(cli: Cli, loaded_store: Store) -> None:
    want = ok(cli(["images", "-q", "busybox"]))
    assert ok(cli(["tag", "busybox", "registry.example.com/a/b:tag"])) == []
    assert ok(cli(["images", "-q", "registry.example.com/a/b"])) == want
    assert ok(cli(["rmi", "busybox"])) == ["Untagged: busybox:latest"]
    assert ok(cli(["images", "-q", "registry.example.com/a/b"])) == want
    inspect = json.loads(cli(["inspect", "registry.example.com/a/b:tag"]).stdout)
    assert inspect[0]["RepoTags"] == ["registry.example.com/a/b:tag"]


# -- history and inspect --------------------------------------------------------------------


def test_history(cli: Cli, loaded_store: Store) -> None:
    rec = loaded_store.resolve("busybox-extra")
    out = ok(cli(["history", "busybox-extra"]))
    assert re.split(r" {3,}", out[0]) == ["LAYER", "CREATED", "CREATED BY", "SIZE", "SHARED BY", "COMMENT"]
    # built from its Containerfile: a row per instruction, newest first; the metadata ones
    # (CMD, WORKDIR, ENV of both images) own no layer
    assert [line.split()[0] for line in out[1:]] == [
        "<missing>", "<missing>", "<missing>", short_id(rec.layers[1].diff_id)[:12],
        "<missing>", "<missing>", short_id(rec.layers[0].diff_id)[:12]]
    assert "1 image" in out[4] and "1 images" not in out[4]
    assert "3 images" in out[7]

    rows = [json.loads(line) for line in ok(cli(["history", "--format", "json", "--no-trunc", "busybox-extra"]))]
    layered = [r for r in rows if r["Layer"] != "<missing>"]
    assert [r["Layer"] for r in layered] == [rec.layers[1].diff_id, rec.layers[0].diff_id]
    assert [r["SharedBy"] for r in layered] == [1, 3]
    assert layered[0]["CreatedBy"] == "COPY files/ / # buildkit"
    assert [r["CreatedBy"] for r in rows[:3]] == ['CMD ["hello"]', "WORKDIR /srv/www", "ENV GREETING=hello"]
    assert {r["CreatedAt"] for r in rows} == {"2026-01-01T00:00:00Z"}  # SOURCE_DATE_EPOCH

    ok(cli(["rmi", "busybox-edit"]))
    rows = [json.loads(line) for line in ok(cli(["history", "--format", "json", "busybox"]))]
    assert [r["SharedBy"] for r in rows if r["Layer"] != "<missing>"] == [2]


def test_inspect(cli: Cli, loaded_store: Store) -> None:
    rec = loaded_store.resolve("busybox-edit")
    docs = json.loads(ok_text := cli(["inspect", "busybox-edit"]).stdout)
    assert ok_text.startswith("[")
    assert len(docs) == 1
    d = docs[0]
    assert d["Id"] == rec.id
    assert d["RepoTags"] == ["busybox-edit:latest"]
    assert d["RootFS"] == {"Type": "layers", "Layers": [layer.diff_id for layer in rec.layers]}
    lower = d["GraphDriver"]["Data"]["LowerDir"].split(":")
    assert len(lower) == 2
    for p in lower:
        assert Path(p).is_dir()
    # overlay order: the top layer first
    assert lower[0] == str(loaded_store.layer_dir(rec.layers[1].diff_id))
    assert (Path(lower[1]) / "bin" / "busybox").is_file()
    assert d["Config"]["Cmd"] == ["sh"]
    assert d["Os"] == "linux" and d["Architecture"]
    assert [layer["SharedBy"] for layer in d["Layers"]] == [3, 1]
    two = json.loads(cli(["inspect", "busybox", short_id(rec.id)]).stdout)
    assert [x["Id"] for x in two] == [loaded_store.resolve("busybox").id, rec.id]


# -- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "words"), [
    (["inspect", "nosuch"], ["nosuch"]),
    (["inspect", "--type", "image", "nosuch"], ["nosuch", "not found"]),
    (["rmi", "nosuch"], ["nosuch", "not found"]),
    (["history", "nosuch"], ["nosuch"]),
    (["save", "-o", "/tmp/minirun-never-written.tar", "nosuch"], ["nosuch"]),
    (["tag", "nosuch", "x:1"], ["nosuch"]),
    (["tag", "busybox", "BAD:Ref"], ["invalid reference format"]),
    (["tag", "busybox", "a:b:c"], ["invalid reference format"]),
    (["load", "-i", "/nonexistent"], ["/nonexistent", "no such file"]),
])
def test_errors_are_one_line(cli: Cli, loaded_store: Store, args: list[str], words: list[str]) -> None:
    fails(cli(args), *words)
    assert not Path("/tmp/minirun-never-written.tar").exists()


def test_load_errors(cli: Cli, loaded_store: Store, tmp_path: Path) -> None:
    bad = tmp_path / "bad.tar"
    bad.write_text("not a tar at all\n" * 100)
    fails(cli(["load", "-i", str(bad)]), "not a tar archive")
    fails(cli(["load"], input=b""), "empty")
    fails(cli(["load"], input=bad.read_bytes()), "not a tar archive")
    (tmp_path / "empty-dir").mkdir()
    fails(cli(["load", "-i", str(tmp_path / "empty-dir")]), "not an image archive")
    assert not list((loaded_store.root / "tmp").iterdir())


def test_not_root(cli: Cli, loaded_store: Store) -> None:
    runas = shutil.which("setpriv")
    if runas:
        prefix = [runas, "--reuid=65534", "--regid=65534", "--clear-groups"]
    elif shutil.which("runuser"):
        prefix = ["runuser", "-u", "nobody", "--"]
    else:
        pytest.skip("neither setpriv nor runuser")
    for verb in (["images"], ["rmi", "busybox"], ["load", "-i", "/nonexistent"]):
        res = cli(verb, prefix=prefix)
        line = fails(res)
        assert line.startswith("Error: minirun needs root (try: sudo minirun"), line
        assert line == f"Error: minirun needs root (try: sudo minirun {verb[0]})"
    assert len(ok(cli(["images", "-q"]))) == 3  # nothing was removed


def test_help_lists_image_verbs(cli: Cli) -> None:
    out = "\n".join(ok(cli(["--help"])))
    for verb in ("images", "load", "save", "rmi", "tag", "history", "inspect"):
        assert re.search(rf"^\s+{verb}\s", out, re.M), verb


@pytest.mark.parametrize(("text", "ts"), [
    ("2026-01-01T00:00:00Z", 1767225600.0),
    ("2026-01-01T00:00:00.123456789Z", 1767225600.123456),  # Go's nanoseconds
    ("2026-01-01T02:00:00+02:00", 1767225600.0),
    ("2026-01-01T02:00:00.5+02:00", 1767225600.5),
    ("2025-12-31T19:00:00-05:00", 1767225600.0),
    ("", 0.0),
    ("yesterday", 0.0),
    ("2026-13-01T00:00:00Z", 0.0),
])
def test_created_time_parsing(text: str, ts: float) -> None:
    from minirun.cli.images import _created_ts

    assert _created_ts(text) == pytest.approx(ts)
