"""`make demo` tells the seed's story: run scripts/demo.sh against a throw-away store and
check each beat of it — commands shown as typed, whiteouts in an image layer's tar and
in the container layer, blame moving to rw, the image layer dirs unchanged, commit
sharing every lower layer, system df — and that it removes what it made."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import MINIRUN, REPO, store_snapshot

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: real containers")


def test_demo_story(tmp_path: Path, built_images: Path) -> None:
    if shutil.which("getfattr") is None:
        pytest.skip("getfattr is missing (make deps installs attr)")
    root = tmp_path / "store"
    env = {**os.environ, "MINIRUN_ROOT": str(root), "MINIRUN": str(MINIRUN)}
    subprocess.run([str(MINIRUN), "load", "-q", "-i", str(built_images / "busybox")], check=True, env=env)
    before = store_snapshot(root)
    r = subprocess.run(["bash", str(REPO / "scripts" / "demo.sh")], env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    out = re.sub(r"\x1b\[[0-9;]*m", "", r.stdout)
    # commands appear as typed, not shell-escaped
    assert "$ minirun run --name demo --network none demo-web sh -c 'echo changed > /srv/www/index.html;" in out
    assert "\\ " not in "".join(ln for ln in out.splitlines() if ln.startswith("$ "))
    # whiteouts in the image layer's tar, and in the container layer
    assert re.search(r"etc/\.wh\.issue$", out, re.M) and re.search(r"home/\.wh\.\.wh\.\.opq$", out, re.M)
    assert re.search(r"^c--------- .* 0, 0 .*/upper/etc/motd$", out, re.M)
    assert 'trusted.overlay.opaque="y"' in out
    # diff: A/C/D
    for line in ("C /srv/www/index.html", "D /etc/motd", "A /home/NOTE", "A /new"):
        assert re.search(rf"^{re.escape(line)}$", out, re.M), line
    # blame: from an image layer, then from rw
    assert re.search(r"^/srv/www/index.html +1 ", out, re.M)
    assert re.search(r"^/srv/www/index.html +rw .*changed in the container", out, re.M)
    assert re.search(r"^/etc/motd +rw .*deleted \(whiteout\)", out, re.M)
    # the image's layer dirs: the same checksum before and after
    sums = re.findall(r"^([0-9a-f]{64})  -$", out, re.M)
    assert len(sums) == 2 and sums[0] == sums[1]
    # sharing: busybox's layer shared by several images; system df counts it once
    assert re.search(r"COPY rootfs/ / .* [3-9] images", out)  # images/busybox/Containerfile
    assert "SHARED SIZE" in out and re.search(r"^Images +\d+ ", out, re.M)
    # and it removed what it made
    assert store_snapshot(root)["images"] == before["images"]
    assert subprocess.run([str(MINIRUN), "ps", "-aq"], env=env, capture_output=True, text=True).stdout == ""
