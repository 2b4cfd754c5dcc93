"""The run flags that are small languages: --label-file, --ulimit, --device, --sysctl,
--restart, durations and --health-*, parsed with Docker's rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from minirun.container import runflags as rf
from minirun.errors import UsageError


def test_labels_file_then_flags(tmp_path: Path) -> None:
    f = tmp_path / "labels"
    f.write_text("# comment\n\na=1\nb=from-file\nempty\n")
    assert rf.parse_labels(["b=flag", "c=x=y"], [str(f)]) == {
        "a": "1", "b": "flag", "empty": "", "c": "x=y"}


@pytest.mark.parametrize("bad", ["=x", "  =y"])
def test_label_without_key(bad: str) -> None:
    with pytest.raises(UsageError, match="key is empty"):
        rf.parse_labels([bad], [])


def test_label_file_missing(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--label-file .*No such file"):
        rf.parse_labels([], [str(tmp_path / "nope")])


@pytest.mark.parametrize(("text", "soft", "hard"), [
    ("nofile=1024:2048", 1024, 2048), ("nproc=50", 50, 50), ("core=-1", rf.UNLIMITED, rf.UNLIMITED),
    ("memlock=unlimited:unlimited", rf.UNLIMITED, rf.UNLIMITED)])
def test_ulimit(text: str, soft: int, hard: int) -> None:
    u = rf.parse_ulimit(text)
    assert (u.soft, u.hard) == (soft, hard)
    assert u.to_oci()["type"] == "RLIMIT_" + text.split("=")[0].upper()


@pytest.mark.parametrize(("text", "match"), [
    ("nofile", "NAME=SOFT"), ("files=1", "unknown resource"), ("nofile=2:1", "soft limit"),
    ("nofile=x", "not a number"), ("nofile=١٢", "not a number"), ("nofile=" + "9" * 30, "not a number")])
def test_ulimit_errors(text: str, match: str) -> None:
    with pytest.raises(UsageError, match=match):
        rf.parse_ulimit(text)


def test_device_forms() -> None:
    (d,) = rf.parse_device("/dev/null")
    assert (d.path, d.kind, d.major, d.minor, d.access) == ("/dev/null", "c", 1, 3, "rwm")
    (d,) = rf.parse_device("/dev/null:/dev/x:r")
    assert (d.host, d.path, d.access) == ("/dev/null", "/dev/x", "r")
    (d,) = rf.parse_device("/dev/zero:rw")
    assert (d.path, d.access) == ("/dev/zero", "rw")
    assert d.rule() == {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "rw"}


@pytest.mark.parametrize(("text", "match"), [
    ("/dev/nope", "no such file"), ("/etc/passwd", "not a device"), ("dev/null", "absolute"),
    ("/dev/null:rel", "absolute"), ("/dev/null:/a:/b:/c", "HOST")])
def test_device_errors(text: str, match: str) -> None:
    with pytest.raises(UsageError, match=match):
        rf.parse_device(text)


def test_sysctls() -> None:
    assert rf.parse_sysctls(["net.ipv4.ip_forward=1", "kernel.shmmax=1"], "bridge") == {
        "net.ipv4.ip_forward": "1", "kernel.shmmax": "1"}
    with pytest.raises(UsageError, match="not allowed"):
        rf.parse_sysctls(["kernel.panic=1"], "bridge")
    with pytest.raises(UsageError, match="network namespace"):
        rf.parse_sysctls(["net.ipv4.ip_forward=1"], "host")
    with pytest.raises(UsageError, match="KEY=VALUE"):
        rf.parse_sysctls(["net.ipv4.ip_forward"], "none")


@pytest.mark.parametrize(("text", "name", "n"), [
    ("no", "no", 0), ("always", "always", 0), ("unless-stopped", "unless-stopped", 0),
    ("on-failure", "on-failure", 0), ("on-failure:3", "on-failure", 3)])
def test_restart(text: str, name: str, n: int) -> None:
    assert rf.parse_restart(text) == rf.RestartPolicy(name, n)


@pytest.mark.parametrize("bad", ["sometimes", "always:3", "on-failure:x", "on-failure:-1", ""])
def test_restart_errors(bad: str) -> None:
    with pytest.raises(UsageError, match="restart policy"):
        rf.parse_restart(bad)


@pytest.mark.parametrize(("text", "ns"), [
    ("0", 0), ("30s", 30 * 10**9), ("1m30s", 90 * 10**9), ("500ms", 5 * 10**8), ("1.5s", 15 * 10**8),
    ("2h", 7200 * 10**9), ("10us", 10_000)])
def test_duration(text: str, ns: int) -> None:
    assert rf.parse_duration(text, "--health-interval") == ns


@pytest.mark.parametrize("bad", ["", "10", "s", "1x", "-1s", "1s2"])
def test_duration_errors(bad: str) -> None:
    with pytest.raises(UsageError, match="invalid"):
        rf.parse_duration(bad, "--health-interval")


def test_healthcheck_merges_over_image() -> None:
    image = {"Test": ["CMD", "true"], "Interval": 5 * 10**9, "Retries": 5}
    got = rf.healthcheck(rf.HealthFlags(interval="1s"), image)
    assert got == {"Test": ["CMD", "true"], "Interval": 10**9, "Retries": 5}
    got = rf.healthcheck(rf.HealthFlags(cmd="test -f /ok", retries=2), None)
    assert got == {"Test": ["CMD-SHELL", "test -f /ok"], "Retries": 2}
    assert rf.healthcheck(rf.HealthFlags(), None) is None
    assert rf.healthcheck(rf.HealthFlags(disabled=True), image) == {"Test": ["NONE"]}


@pytest.mark.parametrize(("flags", "match"), [
    (rf.HealthFlags(disabled=True, cmd="x"), "conflicts"),
    (rf.HealthFlags(cmd="x", interval="10us"), "less than 1ms"),
    (rf.HealthFlags(cmd="x", retries=-1), "negative")])
def test_healthcheck_errors(flags: rf.HealthFlags, match: str) -> None:
    with pytest.raises(UsageError, match=match):
        rf.healthcheck(flags, None)
