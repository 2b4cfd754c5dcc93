"""`minirun system check [--repair]`: the store's fsck finds what a crash or a bad disk
can leave, repairs what is unreferenced or half-written, and reports what only a new
pull can fix."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from minirun.image.check import check
from minirun.image.store import Store

pytestmark = pytest.mark.root


def kinds(problems: list[Any], repaired: bool | None = None) -> set[str]:
    return {p.kind for p in problems if repaired is None or p.repaired == repaired}


def test_a_loaded_store_is_consistent(loaded_store: Store, cli: Any) -> None:
    assert check(loaded_store) == []
    r = cli(["system", "check"])
    assert r.returncode == 0 and "store is consistent" in r.stdout


def test_what_a_crash_leaves_is_found_and_repaired(loaded_store: Store, cli: Any) -> None:
    s = loaded_store
    # a blob a killed load wrote but never recorded, and one that rotted on disk
    orphan = s.put_blob(b"half of a pull")
    rotten = s.blobs / ("ab" * 32)
    rotten.write_bytes(b"not what the name says")
    # a layer unpacked by a killed load, before its layer.json
    half = s.layers / ("cd" * 32)
    (half / "diff").mkdir(parents=True)
    # a temp file of a process that is gone, and a tag naming a missing image
    (s.tmp / "999999-deadbeef").write_bytes(b"x" * 100)
    repos = json.loads((s.root / "repositories.json").read_text())
    repos["docker.io/library/ghost:latest"] = "sha256:" + "ef" * 32
    (s.root / "repositories.json").write_text(json.dumps(repos))

    found = check(s)
    assert {"unreferenced-blob", "corrupt-blob", "half-written-layer", "temp",
            "dangling-name"} <= kinds(found)  # fmt: skip
    assert not kinds(found, repaired=True)
    r = cli(["system", "check"])
    assert r.returncode == 1 and "dangling-name" in r.stdout

    fixed = check(s, repair=True, grace=0)
    assert kinds(fixed, repaired=False) == set(), fixed
    assert not s.has_blob(orphan) and not rotten.exists() and not half.exists()
    assert not (s.tmp / "999999-deadbeef").exists()
    assert "docker.io/library/ghost:latest" not in json.loads((s.root / "repositories.json").read_text())
    assert check(s) == []
    # the images are untouched: a container still runs
    assert cli(["run", "--rm", "--network", "none", "busybox", "true"]).returncode == 0


def test_repair_spares_what_a_pull_in_progress_just_wrote(loaded_store: Store) -> None:
    with loaded_store.writing():  # as pull and load hold it until their image is recorded
        fresh = loaded_store.put_blob(b"a pull is writing this right now")
        problems = check(loaded_store, repair=True)  # default grace: 10 minutes
    assert [p.repaired for p in problems if p.kind == "unreferenced-blob"] == [False]
    assert loaded_store.has_blob(fresh)


def test_repair_removes_a_fresh_leftover_when_no_pull_or_load_runs(loaded_store: Store) -> None:
    """What a killed load left is reclaimed at once: a dead writer holds no lock."""
    fresh = loaded_store.put_blob(b"a killed load left this a moment ago")
    problems = check(loaded_store, repair=True)  # no grace needed
    assert [p.repaired for p in problems if p.kind == "unreferenced-blob"] == [True]
    assert not loaded_store.has_blob(fresh)


def test_a_broken_image_is_reported_not_hidden(loaded_store: Store, cli: Any) -> None:
    rec = loaded_store.resolve("busybox")
    layer_json = loaded_store.layer_path(rec.layers[0].diff_id) / "layer.json"
    os.rename(layer_json, layer_json.with_suffix(".moved"))
    try:
        problems = check(loaded_store)
        assert "broken-image" in kinds(problems)
        assert any(p.what == rec.id and "missing" in p.detail for p in problems)
        r = cli(["system", "check"])
        assert r.returncode == 1 and "pull or load it again" in r.stdout
    finally:
        os.rename(layer_json.with_suffix(".moved"), layer_json)
    assert check(loaded_store) == []


def test_a_broken_short_link_is_relinked(loaded_store: Store) -> None:
    rec = loaded_store.resolve("busybox")
    info = loaded_store.layer_info(rec.layers[0].diff_id)
    link: Path = loaded_store.links / info["link"]
    link.unlink()
    link.symlink_to("../nowhere/diff")
    fixed = check(loaded_store, repair=True, grace=0)
    assert [p.kind for p in fixed] == ["broken-link"] and fixed[0].repaired
    assert check(loaded_store) == []
