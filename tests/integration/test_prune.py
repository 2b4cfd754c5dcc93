"""The prune verbs (``container``/``image``/``network``/``system prune``), the ``image`` and
``container`` management groups, and verbs given several names.

Prune must take exactly what nothing uses — a stopped container, an untagged image, what
a killed ``load`` left — and never what a running container or a pull in progress needs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from minirun.image import archive
from minirun.image.check import check
from minirun.image.store import Store
from tests.conftest import prune_networks

pytestmark = pytest.mark.root

MINIRUN = str(Path(sys.executable).parent / "minirun")
RUN = ["run", "--pull", "never", "--network", "none"]


@pytest.fixture(autouse=True)
def _cleanup(store_root: Path, cli: Any) -> Any:
    yield
    ids = cli(["ps", "-aq"]).stdout.split()
    if ids:
        cli(["rm", "-f", *ids])
    prune_networks(store_root)


def _image_ids(store: Store) -> set[str]:
    return {r.id for r in store.images()}


def test_container_prune_removes_stopped_containers_only(loaded_store: Store, cli: Any) -> None:
    cli([*RUN, "--name", "done", "busybox", "sh", "-c", "head -c 5000 /dev/zero > /big"], check=True)
    cli([*RUN, "-d", "--name", "live", "busybox", "sleep", "60"], check=True)
    done_id = json.loads(cli(["inspect", "done"]).stdout)[0]["Id"]

    r = cli(["container", "prune", "-f"], check=True)
    assert r.stdout.splitlines()[:2] == ["Deleted Containers:", done_id]
    assert "Total reclaimed space: 5kB" in r.stdout  # the container layer's /big
    names = cli(["ps", "-a", "--format", "json"]).stdout
    assert '"live"' in names and '"done"' not in names
    assert check(loaded_store) == []


def test_prune_asks_first_and_no_keeps_everything(loaded_store: Store, cli: Any) -> None:
    cli([*RUN, "--name", "done", "busybox", "true"], check=True)
    for answer in ("n\n", "", "maybe\n"):  # no, end of input, anything but y/yes
        r = cli(["container", "prune"], input=answer)
        assert r.returncode == 0
        assert "WARNING! This will remove all stopped containers." in r.stdout
        assert "Are you sure you want to continue? [y/N]" in r.stdout
        assert "Deleted" not in r.stdout
    assert "done" in cli(["ps", "-a"]).stdout
    r = cli(["container", "prune"], input="y\n")
    assert r.returncode == 0 and "Deleted Containers:" in r.stdout
    assert "done" not in cli(["ps", "-a"]).stdout


def test_image_prune_takes_dangling_images_and_all_with_a(loaded_store: Store, cli: Any) -> None:
    s = loaded_store
    extra = s.resolve("busybox-extra").id
    edit = s.resolve("busybox-edit").id
    busybox = s.resolve("busybox").id
    cli(["rmi", "busybox-extra"], check=True)  # a load keeps no untagged image: make one
    assert extra not in _image_ids(s)
    # an untagged image: tag busybox-edit's image by digest only
    repos_path = s.root / "repositories.json"
    repos = json.loads(repos_path.read_text())
    for name in [k for k, v in repos.items() if v == edit]:
        del repos[name]
    repos_path.write_text(json.dumps(repos))
    cli([*RUN, "--name", "user", "busybox", "true"], check=True)  # a stopped container uses busybox

    r = cli(["image", "prune", "-f"], check=True)
    assert f"deleted: {edit}" in r.stdout and "Total reclaimed space:" in r.stdout
    assert _image_ids(s) == {busybox}

    cli(["tag", "busybox", "other:1"], check=True)
    r = cli(["image", "prune", "-a", "-f"], check=True)
    assert "Deleted Images" not in r.stdout  # busybox is used by a container, even stopped
    assert _image_ids(s) == {busybox}
    cli(["rm", "user"], check=True)
    r = cli(["image", "prune", "-a", "-f"], check=True)
    assert "untagged: busybox:latest" in r.stdout and "untagged: other:1" in r.stdout
    assert f"deleted: {busybox}" in r.stdout
    assert _image_ids(s) == set()
    assert list(s.blobs.iterdir()) == []
    assert [p.name for p in s.layers.iterdir()] == ["l"] and list(s.links.iterdir()) == []
    assert check(s) == []


def test_image_prune_reclaims_what_a_killed_load_left(store_root: Path, built_images: Path,
                                                       cli: Any) -> None:  # fmt: skip
    r = cli(["load", "-q", "-i", str(built_images / "busybox")],
            env={"MINIRUN_CRASH_AT": "load.layer-unpacked"})  # fmt: skip
    assert r.returncode == -9
    s = Store(store_root)
    assert list(s.blobs.iterdir()) and _image_ids(s) == set()  # a blob and a layer, unused
    r = cli(["image", "prune", "-f"], check=True)
    assert "deleted: sha256:" in r.stdout  # the layer
    assert not r.stdout.startswith("Total reclaimed space: 0B")
    assert list(s.blobs.iterdir()) == [] and [p.name for p in s.layers.iterdir()] == ["l"]
    assert check(s) == []


def test_prune_waits_for_a_load_in_progress(loaded_store: Store, cli: Any) -> None:
    """What a running pull or load has written is referenced by nothing until it records
    its image: prune waits for it instead of deleting it under it."""
    s = loaded_store
    env = {**os.environ, "MINIRUN_ROOT": str(s.root)}
    with s.writing():
        fresh = s.put_blob(b"a load is writing this")
        p = subprocess.Popen([MINIRUN, "image", "prune", "-f"], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
        time.sleep(1.0)
        assert p.poll() is None, "prune did not wait for the writer"
        assert s.has_blob(fresh)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    assert not s.has_blob(fresh)  # the writer ended without recording it: now it is garbage


def test_rmi_sweeps_leftovers_only_when_no_writer_runs(loaded_store: Store, cli: Any) -> None:
    s = loaded_store
    with s.writing():
        fresh = s.put_blob(b"a pull is writing this")
        cli(["rmi", "busybox-extra"], check=True)
        assert s.has_blob(fresh)  # rmi took only the image's own layers and blobs
    cli(["rmi", "busybox-edit"], check=True)
    assert not s.has_blob(fresh)  # no writer now: the leftover goes too
    assert check(s) == []


def test_a_concurrent_load_and_prune_leave_a_whole_image(store: Store, built_images: Path) -> None:
    """A load racing a prune: either the image is whole afterwards or it never existed."""
    errors: list[BaseException] = []

    def loader() -> None:
        try:
            for _ in range(3):
                archive.load(store, built_images / "busybox")
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    t = threading.Thread(target=loader)
    t.start()
    from minirun.prune import prune_images

    while t.is_alive():
        prune_images(store, all_unused=True)
    t.join()
    assert not errors
    assert check(store) == []


def test_system_prune_removes_everything_unused(loaded_store: Store, cli: Any, store_root: Path) -> None:
    cli(["network", "create", "prunenet", "--subnet", "10.213.77.0/24"], check=True)
    net = json.loads(cli(["network", "inspect", "prunenet"], check=True).stdout)[0]
    bridge = net["Options"]["com.docker.network.bridge.name"]
    assert subprocess.run(["ip", "link", "show", "dev", bridge], capture_output=True).returncode == 0
    cli([*RUN, "--name", "done", "busybox", "true"], check=True)
    cli([*RUN, "-d", "--name", "live", "busybox", "sleep", "60"], check=True)
    r = cli(["system", "prune"], input="n\n")
    assert "  - all stopped containers" in r.stdout and "Deleted" not in r.stdout
    r = cli(["system", "prune", "-a", "-f"], check=True)
    out = r.stdout
    assert out.index("Deleted Containers:") < out.index("Deleted Networks:") < out.index("Deleted Images:")
    assert "prunenet" in out and "untagged: busybox-extra:latest" in out
    assert "untagged: busybox:latest" not in out  # the live container's image stays
    assert "prunenet" not in cli(["network", "ls"]).stdout
    assert {r.repo_tags[0] for r in loaded_store.images()} == {"docker.io/library/busybox:latest"}
    assert "live" in cli(["ps"]).stdout
    assert subprocess.run(["ip", "link", "show", "dev", bridge], capture_output=True).returncode != 0
    assert check(loaded_store) == []


def test_management_groups_name_the_same_verbs(loaded_store: Store, cli: Any) -> None:
    assert cli(["image", "ls"], check=True).stdout == cli(["images"], check=True).stdout
    cli([*RUN, "--name", "c", "busybox", "true"], check=True)
    assert cli(["container", "ls", "-a"], check=True).stdout.splitlines()[1:] == \
        cli(["ps", "-a"], check=True).stdout.splitlines()[1:]
    # typed inspect: a container named like an image is not found by `image inspect`
    r = cli(["image", "inspect", "c"])
    assert r.returncode == 1 and "c" in r.stderr
    assert json.loads(cli(["container", "inspect", "c"], check=True).stdout)[0]["Name"] == "/c"
    # `container run` is `run`: minirun's own failure is 125
    r = cli(["container", "run", "--pull", "never", "--network", "none", "no-such-image", "true"])
    assert r.returncode == 125
    r = cli(["container", "rm", "nope"])
    assert r.returncode == 1


def test_verbs_with_several_names_act_on_each(loaded_store: Store, cli: Any) -> None:
    r = cli(["rmi", "nope1", "busybox-extra", "nope2"])
    assert r.returncode == 1
    assert "Untagged: busybox-extra:latest" in r.stdout
    errors = r.stderr.strip().splitlines()
    assert len(errors) == 2 and "nope1" in errors[0] and "nope2" in errors[1]
    assert "busybox-extra" not in cli(["images"]).stdout

    r = cli(["inspect", "nope1", "busybox", "nope2"])
    assert r.returncode == 1
    assert [d["RepoTags"] for d in json.loads(r.stdout)] == [["busybox:latest"]]
    assert len(r.stderr.strip().splitlines()) == 2

    for verb in (["rm"], ["stop"], ["kill"], ["wait"], ["start"]):
        r = cli([*verb, "nope1", "nope2"])
        assert r.returncode == 1, verb
        assert len(r.stderr.strip().splitlines()) == 2, (verb, r.stderr)
