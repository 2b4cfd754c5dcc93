"""``minirun blame`` and ``minirun layers`` through the real CLI, as root: the offline
images (busybox-edit deletes a file, replaces a dir wholesale and deletes a dir) and a
running container's writable layer."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from minirun.helpers import helper_binary
from tests.conftest import store_cli

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the CLI and real containers")]

REPO = Path(__file__).resolve().parents[2]
MINIRUN = str(Path(sys.executable).parent / "minirun")
Cli = Callable[..., subprocess.CompletedProcess[str]]


def _env(store: Path) -> dict[str, str]:
    return {**os.environ, "MINIRUN_ROOT": str(store)}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    sys.path.insert(0, str(REPO))
    from images.build import build_all

    store = tmp_path_factory.mktemp("store")
    layouts = tmp_path_factory.mktemp("layouts")
    for p in build_all(layouts):
        subprocess.run([MINIRUN, "load", "-q", "-i", str(p)], check=True, env=_env(store))
    yield store
    ids = subprocess.run([MINIRUN, "ps", "-aq"], env=_env(store), capture_output=True, text=True).stdout.split()
    if ids:
        subprocess.run([MINIRUN, "rm", "-f", *ids], env=_env(store), capture_output=True)


@pytest.fixture
def cli(root: Path) -> Cli:
    return store_cli(_env(root))


@pytest.fixture(scope="module")
def base_members() -> dict[str, tarfile.TarInfo]:
    """The members of busybox's layer, straight from the recipe."""
    sys.path.insert(0, str(REPO))
    from images.build import busybox_layer, find_busybox

    with tarfile.open(fileobj=io.BytesIO(busybox_layer(find_busybox()).tar)) as tar:
        return {m.name.strip("/"): m for m in tar.getmembers()}


def ok(res: subprocess.CompletedProcess[str]) -> list[str]:
    assert res.returncode == 0, f"rc={res.returncode}\n{res.stdout}\n{res.stderr}"
    assert "Traceback" not in res.stderr
    return res.stdout.splitlines()


def blame_json(cli: Cli, target: str, *paths: str) -> dict[str, dict[str, Any]]:
    rows = [json.loads(line) for line in ok(cli("blame", "--format", "json", "--no-trunc", target, *paths))]
    return {str(r["Path"]): r for r in rows}


def diff_id(cli: Cli, image: str, n: int) -> str:
    return str(json.loads(cli("inspect", image).stdout)[0]["RootFS"]["Layers"][n])


# -- images -------------------------------------------------------------------------------------


def test_blame_file_deleted_by_the_top_layer(cli: Cli, base_members: dict[str, tarfile.TarInfo]) -> None:
    r = blame_json(cli, "busybox-edit", "/etc/issue")["/etc/issue"]
    assert (r["Status"], r["Reason"], r["Layer"], r["At"]) == ("deleted", "whiteout", 1, "/etc/issue")
    assert r["DiffID"] == diff_id(cli, "busybox-edit", 1)
    assert str(r["CreatedBy"]).startswith("RUN /bin/sh -c rm /etc/issue")
    assert r["From"] == {"Layer": 0, "DiffID": diff_id(cli, "busybox", 0),
                         "CreatedBy": r["From"]["CreatedBy"], "SharedBy": 3}
    assert r["Size"] == base_members["etc/issue"].size
    line = ok(cli("blame", "busybox-edit", "/etc/issue"))[1]
    assert line.startswith("/etc/issue ") and "deleted (whiteout), was from layer 0" in line


def test_blame_inside_replaced_and_deleted_dirs(cli: Cli) -> None:
    rows = blame_json(cli, "busybox-edit", "/home/README", "/home/app/NEW", "/home",
                      "/usr/share/doc/busybox/README")
    hidden = rows["/home/README"]
    assert (hidden["Status"], hidden["Reason"], hidden["At"], hidden["Layer"]) == \
        ("hidden", "opaque dir", "/home", 1)
    assert hidden["From"]["Layer"] == 0
    new = rows["/home/app/NEW"]
    assert (new["Status"], new["Layer"], new["Shadows"], new["Kind"]) == ("present", 1, [], "file")
    home = rows["/home"]
    assert home["Opaque"] is True and [s["Layer"] for s in home["Shadows"]] == [0]
    doc = rows["/usr/share/doc/busybox/README"]
    assert (doc["Status"], doc["Reason"], doc["At"], doc["Layer"]) == \
        ("deleted", "dir deleted", "/usr/share/doc", 1)
    text = "\n".join(ok(cli("blame", "busybox-edit", "/home/README", "/usr/share/doc/busybox/README")))
    assert "hidden by opaque dir /home, was from layer 0" in text
    assert "deleted with its dir /usr/share/doc, was from layer 0" in text


def test_blame_unchanged_base_file_is_shared(cli: Cli) -> None:
    rows = blame_json(cli, "busybox-edit", "/bin/busybox", "/bin/sh")
    bb = rows["/bin/busybox"]
    assert (bb["Status"], bb["Layer"], bb["SharedBy"], bb["Kind"], bb["Shadows"]) == \
        ("present", 0, 3, "file", [])
    from images.build import find_busybox

    assert bb["Size"] == find_busybox().stat().st_size
    sh = rows["/bin/sh"]  # a symlink: reported itself, with its target
    assert (sh["Kind"], sh["Target"], sh["Layer"]) == ("symlink", "busybox", 0)
    out = ok(cli("blame", "busybox-edit", "/bin/busybox"))
    assert out[0].split()[:4] == ["PATH", "LAYER", "LAYER", "ID"]
    assert out[1].split()[:3] == ["/bin/busybox", "0", diff_id(cli, "busybox", 0)[7:19]]
    assert "3 images" in out[1]


def test_blame_several_paths_one_missing(cli: Cli) -> None:
    r = cli("blame", "busybox-edit", "/etc/passwd", "/no/such/file", "/etc/group")
    assert r.returncode == 1
    err = r.stderr.strip().splitlines()
    assert err == ["Error: /no/such/file: no such file or directory in busybox-edit"]
    rows = r.stdout.splitlines()
    assert [line.split()[0] for line in rows[1:]] == ["/etc/passwd", "/etc/group"]
    j = cli("blame", "--format", "json", "busybox-edit", "/etc/passwd", "/nope")
    assert j.returncode == 1 and len(j.stderr.strip().splitlines()) == 1
    assert [json.loads(line)["Path"] for line in j.stdout.splitlines()] == ["/etc/passwd"]


def test_blame_unknown_target(cli: Cli) -> None:
    r = cli("blame", "nosuchthing", "/etc/passwd")
    assert r.returncode == 1 and r.stderr.strip() == "Error: no such image or container: nosuchthing"


def test_layers_counts_match_the_recipe(cli: Cli, root: Path, base_members: dict[str, tarfile.TarInfo]) -> None:
    doc = json.loads(cli("layers", "--format", "json", "busybox-edit").stdout)
    base, edit = doc["Layers"]
    assert base["Layer"] == 0 and base["Added"] == len(base_members) and base["SharedBy"] == 3
    assert (base["Changed"], base["Deleted"]) == (0, 0)
    assert base["Size"] == sum(m.size if m.isfile() else len(m.linkname) if m.issym() else 0
                               for m in base_members.values())
    # busybox-edit's RUN: whiteout etc/issue; opaque home + home/app + home/app/NEW; whiteout
    # usr/share/doc. Added: home/app, home/app/NEW. Changed (a lower version shadowed):
    # etc, home, usr, usr/share. Deleted: etc/issue, home/README (opaque-hidden), and
    # usr/share/doc with doc/busybox and doc/busybox/README.
    assert (edit["Added"], edit["Changed"], edit["Deleted"]) == (2, 4, 5)
    assert (edit["Whiteouts"], edit["OpaqueDirs"], edit["Hidden"]) == (2, 1, 1)
    assert edit["SharedBy"] == 1 and edit["CreatedBy"].startswith("RUN /bin/sh -c rm /etc/issue")
    gone = ("etc/issue", "home/README", "usr/share/doc/busybox/README")
    wasted = sum(base_members[p].size for p in gone)
    assert doc["WastedBytes"] == wasted == edit["WastedBytes"]
    assert sorted(w["Path"] for w in doc["Wasted"]) == sorted("/" + p for p in gone)
    assert doc["TotalSize"] == base["Size"] + edit["Size"]
    assert doc["Efficiency"] == pytest.approx(1 - wasted / doc["TotalSize"], abs=1e-6)
    text = ok(cli("layers", "busybox-edit"))
    assert text[0].split() == ["LAYER", "LAYER", "ID", "SIZE", "ADDED", "CHANGED", "DELETED", "SHARED",
                               "BY", "CREATED", "BY"]
    assert text[1].split()[0] == "0" and text[2].split()[0] == "1"
    assert text[2].split()[3:6] == ["2", "4", "5"]
    assert text[-1].startswith("Total size:") and f"Wasted: {wasted}B in 3 files" in text[-1]
    # the indexes were written once, next to each layer
    assert len(list((root / "layers").glob("*/index.json"))) >= 2


def test_layers_busybox_extra_adds_only(cli: Cli) -> None:
    doc = json.loads(cli("layers", "--format", "json", "busybox-extra").stdout)
    extra = doc["Layers"][1]
    # srv, srv/www, index.html, usr/local, usr/local/bin, hello, etc/motd; etc and usr shadowed
    assert (extra["Added"], extra["Changed"], extra["Deleted"]) == (7, 2, 0)
    assert doc["WastedBytes"] == 0 and doc["Efficiency"] == 1.0


# -- a running container ------------------------------------------------------------------------


@pytest.fixture
def running(cli: Cli, root: Path) -> Iterator[str]:
    if helper_binary("minirun-shim") is None:
        pytest.skip("minirun-shim is not built (make install)")
    r = cli("run", "-d", "--name", "blamed", "--network", "none", "--pull", "never", "busybox", "sh", "-c",
            "echo x >> /etc/passwd; rm /bin/ls; touch /new; exec sleep 60")
    assert r.returncode == 0, r.stderr
    cid = r.stdout.strip()
    try:
        deadline = time.monotonic() + 10
        while not (root / "containers" / cid / "upper" / "new").exists():
            assert time.monotonic() < deadline, "the container did not get to touch /new"
            time.sleep(0.02)
        yield cid
    finally:
        cli("rm", "-f", cid)


def test_blame_container_rw_layer(cli: Cli, running: str) -> None:
    rows = blame_json(cli, "blamed", "/etc/passwd", "/bin/ls", "/new", "/bin/sh")
    passwd = rows["/etc/passwd"]
    assert (passwd["Status"], passwd["Layer"], [s["Layer"] for s in passwd["Shadows"]]) == \
        ("present", "rw", [0])
    ls = rows["/bin/ls"]
    assert (ls["Status"], ls["Layer"], ls["Reason"]) == ("deleted", "rw", "whiteout")
    assert ls["From"]["Layer"] == 0
    new = rows["/new"]
    assert (new["Status"], new["Layer"], new["Shadows"]) == ("present", "rw", [])
    sh = rows["/bin/sh"]
    assert (sh["Status"], sh["Layer"]) == ("present", 0)
    text = ok(cli("blame", running[:12], "/etc/passwd", "/bin/ls", "/new", "/bin/sh"))
    by_path = {line.split()[0]: line for line in text[1:]}
    assert by_path["/etc/passwd"].split()[1] == "rw" and "changed in the container" in by_path["/etc/passwd"]
    assert by_path["/bin/ls"].split()[1] == "rw" and "deleted" in by_path["/bin/ls"]
    assert by_path["/new"].split()[1] == "rw" and "new in the container" in by_path["/new"]
    assert by_path["/bin/sh"].split()[1] == "0"


def test_layers_of_a_container(cli: Cli, running: str) -> None:
    doc = json.loads(cli("layers", "--format", "json", "blamed").stdout)
    labels = [row["Layer"] for row in doc["Layers"]]
    assert labels == [0, "init", "rw"]
    rw = doc["Layers"][-1]
    # bin, etc, etc/passwd shadow lower versions; /new is new; /bin/ls is a whiteout
    assert (rw["Added"], rw["Changed"], rw["Deleted"], rw["Whiteouts"]) == (1, 3, 1, 1)
    wasted = {w["Path"]: w["By"] for w in doc["Wasted"]}
    assert wasted["/etc/passwd"] == "rw" and wasted["/bin/ls"] == "rw"
    text = ok(cli("layers", "blamed"))
    assert text[1 + 2].split()[0] == "rw"  # the stack's top row
