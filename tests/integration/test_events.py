"""``minirun events`` through the real CLI as root: a stream that sees a container's life
in order, --since/--until/--filter/--format, image events, and Ctrl-C ending it with 0."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import CONTAINER_TESTS, MINIRUN, RUN, Cli, loaded_root, store_cli, wait_for

pytestmark = CONTAINER_TESTS


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory, built_images: Path) -> Iterator[Path]:
    yield from loaded_root(tmp_path_factory, built_images)


@pytest.fixture
def env(root: Path) -> dict[str, str]:
    return {**os.environ, "MINIRUN_ROOT": str(root), "TZ": "UTC"}


@pytest.fixture
def mr(env: dict[str, str]) -> Cli:
    return store_cli(env)


def stream(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    p = subprocess.Popen([str(MINIRUN), "events", *args], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)  # its start is "now": what happens after it is what it shows
    return p


def stop_stream(p: subprocess.Popen[str]) -> tuple[int, str, str]:
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=10)
    return p.returncode, out, err


def test_stream_sees_a_container_life_in_order(mr: Cli, env: dict[str, str]) -> None:
    p = stream(env, "--format", "{{json .}}")
    try:
        r = mr("run", "--name", "ev1", "-l", "tier=web", *RUN, "busybox", "sh", "-c", "exit 3")
        assert r.returncode == 3, r.stderr
        assert mr("rm", "ev1").returncode == 0
        journal = Path(env["MINIRUN_ROOT"]) / "events.jsonl"
        wait_for(lambda: '"destroy"' in journal.read_text())
        time.sleep(0.4)  # a poll of the stream
    finally:
        code, out, err = stop_stream(p)
    assert code == 0 and "Traceback" not in err, err  # Ctrl-C ends it cleanly
    evs = [json.loads(line) for line in out.splitlines()]
    mine = [e for e in evs if e["Actor"]["Attributes"].get("name") == "ev1"]
    assert [e["Action"] for e in mine] == ["create", "start", "die", "destroy"]
    cid = mine[0]["Actor"]["ID"]
    assert all(e["Actor"]["ID"] == cid and e["Type"] == "container" for e in mine)
    assert mine[2]["Actor"]["Attributes"]["exitCode"] == "3"
    assert mine[0]["Actor"]["Attributes"] == {"image": "busybox", "name": "ev1", "tier": "web"}
    assert mine[0]["from"] == "busybox" and mine[0]["scope"] == "local"
    times = [e["timeNano"] for e in mine]
    assert times == sorted(times)


def test_since_until_filter_and_default_format(mr: Cli, env: dict[str, str]) -> None:
    before = time.time()
    assert mr("run", "-d", "--name", "ev2", *RUN, "busybox", "sleep", "30").returncode == 0
    r = mr("kill", "ev2")
    assert r.returncode == 0, r.stderr
    wait_for(lambda: "Exited" in mr("ps", "-a", "--filter", "name=ev2").stdout)
    assert mr("rm", "ev2").returncode == 0
    after = time.time()
    since = f"{before:.3f}"
    r = mr("events", "--since", since, "--until", f"{after:.3f}", "--filter", "container=ev2")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    actions = [ln.split()[2] for ln in lines]
    assert actions == ["create", "start", "kill", "die", "destroy"], r.stdout
    # Docker's line: TIME TYPE ACTION ID (sorted attributes)
    t, typ, _act, cid, *rest = lines[2].split(" ", 4)
    assert t.endswith("Z") and len(t) == len("2026-12-03T17:43:32.123456789Z")
    assert typ == "container" and len(cid) == 64
    assert rest[0] == "(image=busybox, name=ev2, signal=9)"
    # filters: event=, type=, and the keys AND
    r = mr("events", "--since", since, "--until", f"{after:.3f}", "--filter", "event=die",
           "--filter", "container=ev2", "--format", "{{.Action}} {{.Actor.Attributes.exitCode}}")
    assert r.stdout.splitlines() == ["die 137"]
    r = mr("events", "--since", since, "--until", f"{after:.3f}", "--filter", "type=image")
    assert r.stdout == ""
    # --until before the container existed: nothing; a relative --since works
    r = mr("events", "--since", "1h", "--until", f"{before - 1:.3f}", "--filter", "container=ev2")
    assert r.returncode == 0 and r.stdout == ""
    r = mr("events", "--since", "10m", "--until", "0s", "--filter", "container=ev2", "--format", "json")
    assert [json.loads(ln)["Action"] for ln in r.stdout.splitlines()] == actions
    r = mr("events", "--since", "last tuesday")
    assert r.returncode == 1 and r.stderr.startswith("Error: invalid value"), r.stderr
    r = mr("events", "--filter", "colour=red")
    assert r.returncode == 1 and "invalid filter" in r.stderr


def test_image_and_stop_events(mr: Cli, env: dict[str, str]) -> None:
    start = f"{time.time():.3f}"
    assert mr("tag", "busybox", "evtag:v1").returncode == 0
    assert mr("rmi", "evtag:v1").returncode == 0
    assert mr("run", "-d", "--name", "ev3", *RUN, "busybox", "sleep", "30").returncode == 0
    assert mr("stop", "-t", "0", "ev3").returncode == 0
    assert mr("rm", "ev3").returncode == 0
    r = mr("events", "--since", start, "--until", "0s", "--format",
           "{{.Type}} {{.Action}} {{.Actor.Attributes.name}}")
    lines = r.stdout.splitlines()
    assert "image tag evtag:v1" in lines
    assert any(ln.startswith("image untag sha256:") for ln in lines)
    ev3 = [ln.split()[1] for ln in lines if ln.endswith(" ev3")]
    # stop -t 0 of a PID 1 that ignores SIGTERM: kill 15, kill 9 (as Docker), die, stop
    assert ev3[:2] == ["create", "start"] and ev3[-2:] == ["stop", "destroy"], lines
    assert sorted(ev3[2:-2]) == ["die", "kill", "kill"], lines


def test_stream_with_until_in_the_future_ends_by_itself(mr: Cli, env: dict[str, str]) -> None:
    until = f"{time.time() + 2:.3f}"
    p = subprocess.Popen([str(MINIRUN), "events", "--until", until, "--filter", "type=container"],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)
    assert mr("create", "--name", "ev4", *RUN, "busybox", "true").returncode == 0
    out, err = p.communicate(timeout=15)
    assert p.returncode == 0, err
    assert " container create " in out and "name=ev4" in out
    assert mr("rm", "ev4").returncode == 0
