"""Rendering of pull/push progress: plain lines and live terminal bars."""

from __future__ import annotations

import io

from minirun.image.progress import PlainRenderer, ProgressEvent, TtyRenderer, bar, renderer


def test_bar() -> None:
    assert bar(0, 100, 10) == "[>         ]      0B/100B"
    assert bar(50, 100, 10) == "[=====>    ]     50B/100B"
    assert bar(100, 100, 10) == "[==========]    100B/100B"
    assert bar(1_200_000, 4_500_000).endswith("1.2MB/4.5MB")
    assert bar(5, 0) == "5B"


def test_plain_lines_skip_byte_counts_and_repeats() -> None:
    out = io.StringIO()
    r = PlainRenderer(out)
    for ev in [ProgressEvent("1: Pulling from test/app"), ProgressEvent("Pulling fs layer", "aaa"),
               ProgressEvent("Downloading", "aaa", 10, 100), ProgressEvent("Downloading", "aaa", 100, 100),
               ProgressEvent("Download complete", "aaa"), ProgressEvent("Pull complete", "aaa"),
               ProgressEvent("Pull complete", "aaa"), ProgressEvent("Already exists", "bbb")]:
        r(ev)
    assert out.getvalue().splitlines() == [
        "1: Pulling from test/app", "aaa: Pulling fs layer", "aaa: Download complete", "aaa: Pull complete",
        "bbb: Already exists"]


def test_tty_redraws_in_place() -> None:
    out = io.StringIO()
    r = TtyRenderer(out, min_interval=0)
    r(ProgressEvent("latest: Pulling from library/busybox"))
    r(ProgressEvent("Pulling fs layer", "aaa"))
    r(ProgressEvent("Pulling fs layer", "bbb"))
    r(ProgressEvent("Downloading", "aaa", 500, 1000))
    text = out.getvalue()
    assert text.startswith("latest: Pulling from library/busybox\n\x1b[2Kaaa: Pulling fs layer\n")
    # aaa is 2 lines up from the cursor: up 2, clear, draw, back down 2
    assert text.endswith("\x1b[2A\x1b[2K\raaa: Downloading [" + "=" * 25 + ">" + " " * 24 + "]    500B/1kB\r\x1b[2B")
    r(ProgressEvent("Pull complete", "bbb"))
    assert out.getvalue().endswith("\x1b[1A\x1b[2K\rbbb: Pull complete\r\x1b[1B")


def test_tty_throttles_byte_updates_not_states() -> None:
    out = io.StringIO()
    r = TtyRenderer(out, min_interval=60)
    r(ProgressEvent("Downloading", "aaa", 1, 100))
    before = out.getvalue()
    r(ProgressEvent("Downloading", "aaa", 2, 100))
    assert out.getvalue() == before
    r(ProgressEvent("Download complete", "aaa"))
    assert out.getvalue().endswith("aaa: Download complete\r\x1b[1B")


def test_renderer_choice() -> None:
    assert isinstance(renderer(io.StringIO()), PlainRenderer)
    assert isinstance(renderer(io.StringIO(), tty=True), TtyRenderer)
