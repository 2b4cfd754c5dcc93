"""The event journal (minirun/events.py) and the pure rules of restart and health."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from minirun import events as ev
from minirun.container import health, restart
from minirun.container.runflags import RestartPolicy
from minirun.errors import UsageError


def test_emit_writes_docker_event_lines(tmp_path: Path) -> None:
    ev.emit(tmp_path, "container", "start", "abc", {"image": "busybox", "name": "c1"})
    ev.emit(tmp_path, "network", "create", "n1", {"name": "net", "type": "bridge"})
    lines = (tmp_path / "events.jsonl").read_text().splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert first["Type"] == "container" and first["Action"] == "start"
    assert first["Actor"] == {"ID": "abc", "Attributes": {"image": "busybox", "name": "c1"}}
    assert first["status"] == "start" and first["id"] == "abc" and first["from"] == "busybox"
    assert first["scope"] == "local" and first["time"] == first["timeNano"] // 10**9
    net = json.loads(lines[1])
    assert "status" not in net and "from" not in net  # legacy fields: containers and images only
    assert oct(os.stat(tmp_path / "events.jsonl").st_mode & 0o777) == "0o600"


def test_emit_never_raises(tmp_path: Path) -> None:
    ev.emit(tmp_path / "missing" / "dir", "container", "start", "x")  # no store dir: ignored


def test_emit_is_cheap(tmp_path: Path) -> None:
    start = time.perf_counter()
    for i in range(500):
        ev.emit(tmp_path, "container", "start", f"id{i}", {"name": "c"})
    per_event = (time.perf_counter() - start) / 500
    assert per_event < 0.002, per_event  # microseconds in practice; generous for loaded CI


def test_trim_keeps_the_newest_whole_lines(tmp_path: Path) -> None:
    path = ev.journal_path(tmp_path)
    for i in range(400):
        ev.emit(tmp_path, "container", "start", f"{i:06d}", {"pad": "x" * 200})
    size = os.path.getsize(path)
    ev.trim(path, keep_bytes=size // 4, limit=size // 2)
    kept = ev.read(tmp_path)
    assert 0 < len(kept) < 400
    assert kept[-1]["Actor"]["ID"] == "000399"  # the newest survive
    ids = [int(e["Actor"]["ID"]) for e in kept]
    assert ids == list(range(ids[0], 400))  # contiguous, no torn line
    ev.trim(path, keep_bytes=10**6, keep_lines=5, limit=0)
    assert [e["Actor"]["ID"] for e in ev.read(tmp_path)] == [f"{i:06d}" for i in range(395, 400)]


def test_journal_stays_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ev, "MAX_BYTES", 20_000)
    monkeypatch.setattr(ev, "KEEP_BYTES", 10_000)
    for i in range(1000):
        ev.emit(tmp_path, "container", "start", str(i))
    assert os.path.getsize(ev.journal_path(tmp_path)) <= 20_000 + 400
    assert ev.read(tmp_path)[-1]["Actor"]["ID"] == "999"


def test_concurrent_writers_lose_nothing_between_trims(tmp_path: Path) -> None:
    def writer(n: int) -> None:
        for i in range(200):
            ev.emit(tmp_path, "container", "start", f"{n}-{i}")

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = ev.read(tmp_path)
    assert len(got) == 800
    assert len({e["Actor"]["ID"] for e in got}) == 800


def test_follow_past_and_new_events_and_a_trim(tmp_path: Path) -> None:
    ev.emit(tmp_path, "container", "create", "old")
    since = time.time_ns()
    ev.emit(tmp_path, "container", "start", "a")
    out: list[str] = []
    done = threading.Event()

    def reader() -> None:
        for e in ev.follow(tmp_path, since, None, poll=0.01, stop=done.is_set):
            out.append(e["Actor"]["ID"])

    t = threading.Thread(target=reader)
    t.start()
    deadline = time.monotonic() + 5
    while "a" not in out and time.monotonic() < deadline:
        time.sleep(0.01)
    ev.emit(tmp_path, "container", "start", "b")
    while "b" not in out and time.monotonic() < deadline:
        time.sleep(0.01)
    path = ev.journal_path(tmp_path)
    ev.trim(path, keep_bytes=10**6, limit=0)  # a new file with the same lines
    ev.emit(tmp_path, "container", "start", "c")
    while "c" not in out and time.monotonic() < deadline:
        time.sleep(0.01)
    done.set()
    t.join(5)
    assert out == ["a", "b", "c"]


def test_follow_until_in_the_past_returns(tmp_path: Path) -> None:
    ev.emit(tmp_path, "container", "start", "a")
    now = time.time_ns()
    ev.emit(tmp_path, "container", "die", "a")
    got = list(ev.follow(tmp_path, 0, now))
    assert [e["Action"] for e in got] == ["start"]
    assert list(ev.follow(tmp_path / "none", 0, now)) == []


def test_parse_time_forms() -> None:
    now = 1_800_000_000 * 10**9
    assert ev.parse_time("10m", now_ns=now) == now - 600 * 10**9
    assert ev.parse_time("1h30m", now_ns=now) == now - 5400 * 10**9
    assert ev.parse_time("-5s", now_ns=now) == now + 5 * 10**9
    assert ev.parse_time("1700000000") == 1_700_000_000 * 10**9
    assert ev.parse_time("1700000000.5") == 1_700_000_000_500_000_000
    assert ev.parse_time("2023-11-14T22:13:20Z") == 1_700_000_000 * 10**9
    assert ev.parse_time("2023-11-14T22:13:20.123456789Z") == 1_700_000_000_123_456_789
    assert ev.parse_time("2023-11-14T23:13:20+01:00") == 1_700_000_000 * 10**9
    local = ev.parse_time("2023-11-14")
    assert abs(local - 1_699_920_000 * 10**9) <= 14 * 3600 * 10**9
    for bad in ("yesterday", "10x", "2023-13-40", ""):
        with pytest.raises(UsageError):
            ev.parse_time(bad)


def _event(type_: str, action: str, aid: str, **attrs: str) -> dict:
    return ev.message(type_, action, aid, attrs, time_ns=1_700_000_000_123_456_789)


def test_filters_as_docker() -> None:
    start = _event("container", "start", "abcdef", image="busybox:latest", name="c1", tier="web")
    health_ev = _event("container", "health_status: healthy", "abcdef", image="busybox", name="c1")
    tag = _event("image", "tag", "sha256:11", name="busybox:v2")
    net = _event("network", "connect", "n123", name="front", container="abcdef", type="bridge")

    def m(*specs: str) -> list[bool]:
        f = ev.parse_filters(list(specs))
        return [f.match(e) for e in (start, health_ev, tag, net)]

    assert m("type=container") == [True, True, False, False]
    assert m("event=start", "event=tag") == [True, False, True, False]
    assert m("event=health_status") == [False, True, False, False]  # Docker's prefix match
    assert m("container=c1") == [True, True, False, False]
    assert m("container=abc") == [True, True, False, False]  # an ID prefix
    assert m("image=busybox") == [True, True, True, False]
    assert m("label=tier") == [True, False, False, False]
    assert m("label=tier=db") == [False, False, False, False]
    assert m("network=front") == [False, False, False, True]
    assert m("type=container", "event=start") == [True, False, False, False]  # keys AND
    with pytest.raises(UsageError):
        ev.parse_filters(["colour=red"])
    with pytest.raises(UsageError):
        ev.parse_filters(["type"])


def test_pretty_line_is_dockers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    try:
        line = ev.pretty(_event("container", "die", "abc", name="c1", image="busybox", exitCode="3"))
    finally:
        monkeypatch.undo()
        time.tzset()
    assert line == ("2023-11-14T22:13:20.123456789Z container die abc "
                    "(exitCode=3, image=busybox, name=c1)")


def test_template_fields() -> None:
    from minirun.cli.template import parse

    data = ev.template_data(_event("container", "start", "abc", name="c1", image="busybox"))
    out = parse("{{.Type}} {{.Action}} {{.Actor.ID}} {{.Actor.Attributes.name}} {{.Status}} "
                "{{.From}} {{.Scope}} {{.TimeNano}}").render(data)
    assert out == "container start abc c1 start busybox local 1700000000123456789"


def test_restart_rules() -> None:
    always, failure2 = RestartPolicy("always"), RestartPolicy("on-failure", 2)
    assert restart.should_restart(always, 0, 99, stopped=False)
    assert not restart.should_restart(always, 0, 0, stopped=True)
    assert restart.should_restart(RestartPolicy("unless-stopped"), 1, 0, stopped=False)
    assert restart.should_restart(failure2, 1, 1, stopped=False)
    assert not restart.should_restart(failure2, 1, 2, stopped=False)  # N restarts made
    assert not restart.should_restart(failure2, 0, 0, stopped=False)  # success: done
    assert restart.should_restart(RestartPolicy("on-failure"), 1, 10**6, stopped=False)  # no limit
    assert not restart.should_restart(RestartPolicy("no"), 1, 0, stopped=False)


def test_restart_backoff() -> None:
    d = restart.next_delay(0, 0.1)
    assert d == 100_000_000
    seq = [d]
    for _ in range(12):
        d = restart.next_delay(d, 0.1)
        seq.append(d)
    assert seq[:4] == [100_000_000, 200_000_000, 400_000_000, 800_000_000]
    assert seq[-1] == 60_000_000_000  # capped at a minute
    assert restart.next_delay(seq[-1], 10.0) == 100_000_000  # a 10 s run resets it


def _result(code: int, start_ns: int = 0) -> dict:
    return {"Start": "s", "End": "e", "ExitCode": code, "Output": ""}


def test_health_transitions() -> None:
    check = {"Test": ["CMD-SHELL", "true"], "Retries": 2, "StartPeriod": 5 * 10**9}
    started = 1000.0
    h = health.Health()
    # failures inside the start period do not count while starting
    h = health.record(h, _result(1), check, started, int((started + 1) * 1e9))
    assert (h.Status, h.FailingStreak) == ("starting", 0)
    h = health.record(h, _result(0), check, started, int((started + 2) * 1e9))
    assert (h.Status, h.FailingStreak) == ("healthy", 0)
    h = health.record(h, _result(1), check, started, int((started + 3) * 1e9))
    assert (h.Status, h.FailingStreak) == ("healthy", 1)  # once healthy, the period is over
    h = health.record(h, _result(-1), check, started, int((started + 4) * 1e9))
    assert (h.Status, h.FailingStreak) == ("unhealthy", 2)
    for i in range(5):
        h = health.record(h, _result(i), check, started, int((started + 10) * 1e9))
    assert len(h.Log) == health.MAX_LOG
    assert h.Status == "unhealthy" and h.FailingStreak == 4  # a pass resets, then 4 fail


def test_health_defaults_and_active() -> None:
    h = health.Health()
    for _ in range(2):
        h = health.record(h, _result(1), {"Test": ["CMD", "false"]}, 0.0, 10**12)
    assert h.Status == "starting"
    h = health.record(h, _result(1), {"Test": ["CMD", "false"]}, 0.0, 10**12)
    assert h.Status == "unhealthy"  # Retries defaults to 3
    assert health.active({"Test": ["CMD-SHELL", "x"]}) and health.active({"Test": ["CMD", "x"]})
    assert not health.active({"Test": ["NONE"]}) and not health.active(None)
    assert health._go_duration(30 * 10**9) == "30s" and health._go_duration(200_000_000) == "200ms"
    assert health._go_duration(90 * 10**9) == "1m30s"
