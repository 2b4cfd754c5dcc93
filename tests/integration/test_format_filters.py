"""Issue 14, scripts written for Docker: ``--format`` Go templates (ps, images, inspect,
network ls), ``ps --filter`` and ``images --filter``, and the top-level help — through the
real CLI, as root, with real containers."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from minirun.image import build as b
from tests.conftest import CONTAINER_TESTS, MINIRUN, store_cli

pytestmark = CONTAINER_TESTS

REPO = Path(__file__).resolve().parents[2]
RUN = ("run", "--network", "none", "--pull", "never")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A store with the offline images, a labelled image, a dangling image, and three
    containers: fweb (running, with a bind mount), fex7 (exited 7), flab (exited 0, from
    the labelled image)."""
    sys.path.insert(0, str(REPO))
    from images.build import build_all, busybox_layer, find_busybox

    store = tmp_path_factory.mktemp("store")
    layouts = tmp_path_factory.mktemp("layouts")
    env = {**os.environ, "MINIRUN_ROOT": str(store)}
    mr = store_cli(env)
    for p in build_all(layouts):
        assert mr("load", "-q", "-i", str(p)).returncode == 0
    bb = busybox_layer(find_busybox())
    images = [
        b.image("labelled:1", [bb], {"Cmd": ["true"], "Labels": {"tier": "db", "team": "x"}}),
        b.image("dang:1", [b.Layer(b.layer_tar([b.file("a", b"1")]), "ADD a")], {"Cmd": ["sh"]}),
        b.image("dang:1", [b.Layer(b.layer_tar([b.file("a", b"2")]), "ADD a")], {"Cmd": ["sh"]}),
    ]
    for i, img in enumerate(images):  # the second dang:1 leaves the first untagged
        b.write_oci_layout(layouts / f"extra{i}", [img])
        assert mr("load", "-q", "-i", str(layouts / f"extra{i}")).returncode == 0
    r = mr(*RUN, "-d", "--name", "fweb", "-v", "/tmp:/hosttmp", "busybox", "sleep", "300")
    assert r.returncode == 0, r.stderr
    assert mr(*RUN, "--name", "fex7", "busybox", "sh", "-c", "exit 7").returncode == 7
    assert mr(*RUN, "--name", "flab", "labelled:1").returncode == 0
    yield env
    ids = mr("ps", "-aq").stdout.split()
    if ids:
        mr("rm", "-f", *ids)


def mr(env: dict[str, str], *args: str) -> list[str]:
    r = store_cli(env)(*args)
    assert r.returncode == 0, f"{args}: rc={r.returncode}\n{r.stdout}\n{r.stderr}"
    assert r.stderr == ""
    return r.stdout.splitlines()


def cells(line: str) -> list[str]:
    return re.split(r" {3,}", line)


def fails(env: dict[str, str], *args: str) -> str:
    """A user error: exit 1, one ``Error: ...`` line, no traceback."""
    r = store_cli(env)(*args)
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.stderr
    return lines[0]


# -- ps --format --------------------------------------------------------------------------

def test_ps_template_fields(env: dict[str, str]) -> None:
    out = mr(env, "ps", "-a", "--format",
             "{{.Names}}|{{.Image}}|{{.State}}|{{.Networks}}|{{.Mounts}}|{{.Command}}")
    assert sorted(out) == [
        'fex7|busybox|exited|none||"sh -c exit 7"',
        'flab|labelled:1|exited|none||"true"',
        'fweb|busybox|running|none|/tmp|"sleep 300"',
    ]
    ids = mr(env, "ps", "-aq", "--no-trunc")
    assert sorted(mr(env, "ps", "-a", "--no-trunc", "--format", "{{.ID}}")) == sorted(ids)
    assert all(len(i) == 64 for i in ids)


def test_ps_template_status_created_at_and_labels(env: dict[str, str]) -> None:
    (line,) = mr(env, "ps", "-a", "--filter", "name=flab", "--format",
                 '{{.Status}}|{{.Labels}}|{{.Label "tier"}}|{{.CreatedAt}}|{{.RunningFor}}')
    status, labels, tier, created, running_for = line.split("|")
    assert status.startswith("Exited (0) ") and running_for.endswith(" ago")
    assert labels == "team=x,tier=db" and tier == "db"
    assert len(created.split()) == 4 and created.split()[2][0] in "+-"  # 2024-01-02 15:04:05 +0000 UTC


def test_ps_table_template_has_docker_headers(env: dict[str, str]) -> None:
    out = mr(env, "ps", "--format", r"table {{.ID}}\t{{.Names}}\t{{.Size}}")
    assert cells(out[0]) == ["CONTAINER ID", "NAMES", "SIZE"]
    assert len(out) == 2 and out[1].split()[1] == "fweb"
    assert "(virtual " in out[1]
    # the header row comes even when no container matches
    assert mr(env, "ps", "-f", "name=nothing-here", "--format", r"table {{.Names}}\t{{.Image}}") == [
        "NAMES   IMAGE"]
    assert mr(env, "ps", "--format", "table")[0].split() == [
        "CONTAINER", "ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"]


def test_ps_tab_escape_and_json_func(env: dict[str, str]) -> None:
    (line,) = mr(env, "ps", "--format", r"{{.Names}}\t{{json .State}}")
    assert line == 'fweb\t"running"'
    (doc,) = [json.loads(x) for x in mr(env, "ps", "--format", "{{json .}}")]
    assert doc["Names"] == "fweb" and doc["Mounts"] == "/tmp" and "Label" not in doc


def test_ps_json_keyword_keeps_working(env: dict[str, str]) -> None:
    rows = [json.loads(x) for x in mr(env, "ps", "-a", "--format", "json")]
    assert {r["Names"] for r in rows} == {"fweb", "fex7", "flab"}
    assert {"ID", "Image", "Command", "CreatedAt", "RunningFor", "Status", "State", "Ports",
            "Names", "Labels", "Mounts", "Networks"} <= set(rows[0])


def test_ps_template_errors_are_one_line(env: dict[str, str]) -> None:
    err = fails(env, "ps", "--format", "{{.Foo}}")
    assert err == ('Error: template: :1:2: executing "" at <.Foo>: '
                   "can't evaluate field Foo in type container")
    assert fails(env, "ps", "--format", "{{.ID").endswith("template: :1: unclosed action")
    assert 'function "nope" not defined' in fails(env, "ps", "--format", "{{nope .ID}}")


# -- ps --filter --------------------------------------------------------------------------

def names(env: dict[str, str], *args: str) -> set[str]:
    return set(mr(env, "ps", *args, "--format", "{{.Names}}"))


def test_ps_filter_status(env: dict[str, str]) -> None:
    assert names(env, "--filter", "status=exited") == {"fex7", "flab"}  # no -a needed, as Docker
    assert names(env, "-f", "status=running") == {"fweb"}
    assert names(env, "-f", "status=running", "-f", "status=exited") == {"fweb", "fex7", "flab"}
    assert names(env, "-f", "status=paused") == set()
    assert "invalid filter 'status=bogus'" in fails(env, "ps", "-f", "status=bogus")


def test_ps_filter_name_id_exited(env: dict[str, str]) -> None:
    assert names(env, "-a", "-f", "name=f.*7") == {"fex7"}  # a regular expression
    assert names(env, "-a", "-f", "name=^/fweb$") == {"fweb"}  # Docker's names have a "/"
    assert names(env, "-a", "-f", "name=^fweb$") == {"fweb"}
    assert names(env, "-a", "-f", "name=fweb", "-f", "name=flab") == {"fweb", "flab"}  # OR
    assert names(env, "-a", "-f", "name=f", "-f", "status=exited") == {"fex7", "flab"}  # AND
    cid = mr(env, "ps", "-q", "-f", "name=fweb", "--no-trunc")[0]
    assert names(env, "-a", "-f", f"id={cid[:6]}") == {"fweb"}
    assert names(env, "-a", "-f", "exited=7") == {"fex7"}
    assert names(env, "-a", "-f", "exited=0") == {"flab"}


def test_ps_filter_ancestor_and_label(env: dict[str, str]) -> None:
    assert names(env, "-a", "-f", "ancestor=busybox") == {"fweb", "fex7"}
    image_id = mr(env, "inspect", "-f", "{{.Id}}", "labelled:1")[0]
    assert names(env, "-a", "-f", f"ancestor={image_id[7:19]}") == {"flab"}  # by ID too
    assert names(env, "-a", "-f", "ancestor=busybox", "-f", "ancestor=labelled:1") == {
        "fweb", "fex7", "flab"}
    assert names(env, "-a", "-f", "label=tier") == {"flab"}
    assert names(env, "-a", "-f", "label=tier=db", "-f", "label=team=x") == {"flab"}
    assert names(env, "-a", "-f", "label=tier=db", "-f", "label=team=y") == set()  # labels AND
    assert names(env, "-a", "-f", "ancestor=no-such-image") == set()


def test_ps_filter_errors(env: dict[str, str]) -> None:
    assert "invalid filter 'publish'" in fails(env, "ps", "-f", "publish=80")
    assert "bad format of filter" in fails(env, "ps", "-f", "status")
    assert "invalid filter 'exited=x'" in fails(env, "ps", "-a", "-f", "exited=x")
    assert "bad pattern" in fails(env, "ps", "-a", "-f", "name=(")


# -- images -------------------------------------------------------------------------------

def test_images_template_and_table(env: dict[str, str]) -> None:
    out = mr(env, "images", "--format", "{{.Repository}}:{{.Tag}}")
    assert {"busybox:latest", "labelled:1", "dang:1", "<none>:<none>"} <= set(out)
    table = mr(env, "images", "busybox", "--format", r"table {{.Repository}}\t{{.ID}}\t{{.CreatedAt}}")
    assert cells(table[0]) == ["REPOSITORY", "IMAGE ID", "CREATED AT"]
    assert table[1].startswith("busybox ") and "2026-01-01 00:00:00" in table[1]
    assert fails(env, "images", "--format", "{{.Names}}").endswith(
        "can't evaluate field Names in type image")


def test_images_filters(env: dict[str, str]) -> None:
    def refs(*args: str) -> set[str]:
        return set(mr(env, "images", *args, "--format", "{{.Repository}}:{{.Tag}}"))

    assert refs("-f", "dangling=true") == {"<none>:<none>"}
    assert "<none>:<none>" not in refs("-f", "dangling=false")
    assert refs("-f", "reference=busybox*") == {"busybox:latest", "busybox-extra:latest",
                                                 "busybox-edit:latest"}
    assert refs("-f", "reference=*:1") == {"labelled:1", "dang:1"}
    assert refs("-f", "reference=busybox", "-f", "reference=dang") == {"busybox:latest", "dang:1"}
    assert refs("-f", "label=tier=db") == {"labelled:1"}
    assert refs("-f", "label=tier", "-f", "reference=busybox") == set()
    assert len(mr(env, "images", "-q", "-f", "dangling=true")) == 1
    assert "invalid filter 'dangling=maybe'" in fails(env, "images", "-f", "dangling=maybe")
    assert "invalid filter 'before'" in fails(env, "images", "-f", "before=busybox")


# -- inspect -f ---------------------------------------------------------------------------

def test_inspect_format_one_line_per_object(env: dict[str, str]) -> None:
    out = mr(env, "inspect", "-f", "{{.Name}} {{.State.Status}} {{.State.ExitCode}} {{.HostConfig.Binds}}",
             "fweb", "fex7")
    assert out == ["/fweb running 0 [/tmp:/hosttmp]", "/fex7 exited 7 []"]
    pid = int(mr(env, "inspect", "--format", "{{.State.Pid}}", "fweb")[0])
    assert pid > 0 and Path(f"/proc/{pid}").exists()
    (env_line,) = mr(env, "inspect", "-f", "{{range .Config.Env}}{{println .}}{{end}}", "fex7")[:1]
    assert env_line.startswith("PATH=")
    assert json.loads(mr(env, "inspect", "-f", "{{json .Config.Cmd}}", "fex7")[0]) == ["sh", "-c", "exit 7"]
    assert mr(env, "inspect", "-f", '{{index .Config.Labels "tier"}} {{.Os}}', "labelled:1") == ["db linux"]
    assert mr(env, "inspect", "-f", "{{if .State.Running}}up{{else}}down{{end}}", "fweb", "fex7") == [
        "up", "down"]
    docs = json.loads("\n".join(mr(env, "inspect", "-f", "json", "fweb")))
    assert docs[0]["Name"] == "/fweb"


def test_inspect_format_errors(env: dict[str, str]) -> None:
    r = store_cli(env)("inspect", "-f", "{{.Name}}", "fweb", "no-such-thing")
    assert r.returncode == 1 and r.stdout == "/fweb\n"
    assert r.stderr.strip() == "Error: no such object: no-such-thing"
    err = fails(env, "inspect", "-f", "{{.State.Nope}}", "fweb")
    assert err == ('Error: template: :1:2: executing "" at <.State.Nope>: '
                   "can't evaluate field Nope in type State")
    assert "template parsing error" in fails(env, "inspect", "-f", "{{if}}", "fweb")


# -- network ls, help ---------------------------------------------------------------------

def test_network_ls_format(env: dict[str, str]) -> None:
    assert mr(env, "network", "ls", "--format", "{{.Name}}/{{.Driver}}") == ["host/host", "none/null"]
    assert mr(env, "network", "ls", "--format", r"table {{.Name}}\t{{.Scope}}")[0] == "NAME   SCOPE"


def test_bare_minirun_prints_help_and_succeeds(env: dict[str, str]) -> None:
    r = subprocess.run([str(MINIRUN)], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and r.stderr == ""
    assert r.stdout.startswith("Usage: minirun") and "Commands:" in r.stdout
    commands = r.stdout.split("Commands:")[1]
    assert not [ln for ln in commands.splitlines() if ln.endswith("...")]
    assert "on the container layer they already" in commands
