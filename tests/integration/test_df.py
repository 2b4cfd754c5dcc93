"""``system df``: shared layers counted once, per-image shared/unique sizes, container
layers, what is active and reclaimable — checked against the store's own layer records
and files a container wrote."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from minirun import df
from minirun.image.store import Store
from tests.conftest import CONTAINER_TESTS, RUN, loaded_root

pytestmark = CONTAINER_TESTS


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory, built_images: Path) -> Iterator[Path]:
    yield from loaded_root(tmp_path_factory, built_images, ("busybox", "busybox-extra"))


def test_shared_layers_counted_once(root: Path, mr) -> None:  # type: ignore[no-untyped-def]
    store = Store(root)
    base, extra = store.resolve("busybox"), store.resolve("busybox-extra")
    shared = base.layers[0]
    assert extra.layers[0].diff_id == shared.diff_id  # the premise: one layer, two images
    du = df.usage(store)
    images = next(s for s in du.summary if s.type == "Images")
    assert images.total == 2
    assert images.size == shared.size + extra.layers[1].size  # not base.size + extra.size
    by_id = {u.image.id: u for u in du.images}
    assert by_id[extra.id].size == extra.size
    assert by_id[extra.id].shared == shared.size
    assert by_id[extra.id].unique == extra.layers[1].size
    assert by_id[base.id].unique == 0


def test_containers_active_and_reclaimable(root: Path, mr) -> None:  # type: ignore[no-untyped-def]
    assert mr("run", "--name", "df-stopped", *RUN, "busybox", "sh", "-c",
              "head -c 100000 /dev/zero > /big").returncode == 0
    assert mr("run", "-d", "--name", "df-running", *RUN, "busybox", "sleep", "60").returncode == 0
    try:
        du = df.usage(Store(root))
        cont = next(s for s in du.summary if s.type == "Containers")
        assert (cont.total, cont.active) == (2, 1)
        stopped = next(c for c in du.containers if c.name == "df-stopped")
        assert 100000 <= stopped.size < 110000
        assert cont.reclaimable == stopped.size
        images = next(s for s in du.summary if s.type == "Images")
        extra = Store(root).resolve("busybox-extra")
        assert images.active == 1  # busybox has containers; busybox-extra none
        assert images.reclaimable == extra.layers[1].size  # only what no container's image uses

        out = mr("system", "df").stdout.splitlines()
        assert out[0].split() == ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]
        assert out[2].split()[:3] == ["Containers", "2", "1"] and "(" in out[2]
        rows = [json.loads(line) for line in mr("system", "df", "--format", "json").stdout.splitlines()]
        assert [r["Type"] for r in rows] == ["Images", "Containers", "Local Volumes", "Build Cache"]
        assert mr("system", "df", "--format", "{{.Type}}={{.TotalCount}}").stdout.splitlines()[1] == "Containers=2"

        verbose = mr("system", "df", "-v").stdout
        assert "Images space usage:" in verbose and "Containers space usage:" in verbose
        line = next(ln for ln in verbose.splitlines() if ln.startswith("busybox-extra"))
        assert line.split()[-1] == "0"  # CONTAINERS
        assert "SHARED SIZE" in verbose and "UNIQUE SIZE" in verbose
        assert any(ln.endswith("df-stopped") and "100kB" in ln for ln in verbose.splitlines())
    finally:
        mr("rm", "-f", "df-stopped", "df-running")


def test_empty_store(tmp_path: Path) -> None:
    du = df.usage(Store(tmp_path / "none"))
    assert [(s.type, s.total, s.size) for s in du.summary] == [
        ("Images", 0, 0), ("Containers", 0, 0), ("Local Volumes", 0, 0), ("Build Cache", 0, 0)]


def test_volumes_active_and_reclaimable(root: Path, mr) -> None:  # type: ignore[no-untyped-def]
    assert mr("volume", "create", "df-used").returncode == 0
    assert mr("volume", "create", "df-idle").returncode == 0
    try:
        assert mr("run", "--name", "df-vol", "-v", "df-used:/data", *RUN, "busybox", "sh", "-c",
                  "head -c 50000 /dev/zero > /data/f").returncode == 0
        assert mr("run", "--rm", "-v", "df-idle:/data", *RUN, "busybox", "sh", "-c",
                  "head -c 20000 /dev/zero > /data/f").returncode == 0
        du = df.usage(Store(root))
        vols = next(s for s in du.summary if s.type == "Local Volumes")
        assert (vols.total, vols.active) == (2, 1)
        assert vols.size == 70000 and vols.reclaimable == 20000
        assert next(c for c in du.containers if c.name == "df-vol").volumes == 1
        verbose = mr("system", "df", "-v").stdout
        assert any(ln.split() == ["df-used", "1", "50kB"] for ln in verbose.splitlines())
    finally:
        mr("rm", "-f", "df-vol")
        mr("volume", "rm", "df-used", "df-idle")


def test_build_cache_row(root: Path, mr, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "Containerfile").write_text("FROM busybox\nRUN echo cached > /f\n")
    r = mr("build", "-q", "--network", "none", "-t", "df-built", str(tmp_path))
    assert r.returncode == 0, r.stderr
    try:
        cache = next(s for s in df.usage(Store(root)).summary if s.type == "Build Cache")
        assert cache.total >= 1 and cache.size > 0
    finally:
        mr("rmi", "df-built")
