"""Docker's resource flags -> Resources: units, defaults and each validation rule."""

from __future__ import annotations

import pytest

from minirun.container import resources
from minirun.container.resources import (
    Resources,
    parse_bytes,
    parse_cpus,
    parse_resources,
    shares_to_weight,
)
from minirun.errors import UsageError

MiB = 1 << 20


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("100", 100),
        ("1024b", 1024),
        ("1024B", 1024),
        ("512k", 512 << 10),
        ("512K", 512 << 10),
        ("32m", 32 * MiB),
        ("32M", 32 * MiB),
        ("32mb", 32 * MiB),
        ("32MiB", 32 * MiB),
        ("32 m", 32 * MiB),
        ("1g", 1 << 30),
        ("1G", 1 << 30),
        ("1gib", 1 << 30),
        ("2t", 2 << 40),
        ("1p", 1 << 50),
        ("1.5g", 3 << 29),
        ("0.5k", 512),
        ("0", 0),
    ],
)
def test_parse_bytes_units(text: str, expected: int) -> None:
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("text", ["", "m", "abc", "-1", "-32m", "1..5m", "3 2m", "1e3"])
def test_parse_bytes_rejects_bad_numbers(text: str) -> None:
    with pytest.raises(UsageError, match="invalid size"):
        parse_bytes(text)


@pytest.mark.parametrize("text", ["32x", "32mm", "32mbb", "32ib", "1kbit", "10bi"])
def test_parse_bytes_rejects_bad_suffixes(text: str) -> None:
    with pytest.raises(UsageError, match="invalid suffix"):
        parse_bytes(text)


def test_parse_bytes_too_large() -> None:
    with pytest.raises(UsageError, match="too large"):
        parse_bytes("9000000p")


@pytest.mark.parametrize(
    "text", ["1" + "0" * 309 + ".", "9" * 400 + ".5m", "1" * 4301, "1" * 20, "10000000000000000000"]
)
def test_parse_bytes_huge_numbers_are_too_large(text: str) -> None:
    # no float inf (OverflowError) and no int() digit limit (ValueError): a UsageError
    with pytest.raises(UsageError, match="too large") as ei:
        parse_bytes(text)
    assert len(str(ei.value)) < 200  # a 4301-digit size is not echoed whole


def test_parse_bytes_limits() -> None:
    assert parse_bytes("9223372036854775807") == 2**63 - 1
    assert parse_bytes("000000000000000000000001k") == 1024  # leading zeros do not count
    assert parse_bytes("0" * 5000 + "1m") == 1 << 20
    assert parse_bytes("1." + "5" * 5000) == 1
    with pytest.raises(UsageError, match="too large"):
        parse_bytes("9223372036854775808")


@pytest.mark.parametrize("text", ["²", "١٢m", "1²"])
def test_parse_bytes_ascii_digits_only(text: str) -> None:
    with pytest.raises(UsageError, match="invalid size"):
        parse_bytes(text)


def test_empty_resources() -> None:
    res = parse_resources()
    assert res == Resources()
    assert res.is_empty()


def test_memory_and_default_swap_is_twice_memory() -> None:
    res = parse_resources(memory="32m")
    assert res.memory == 32 * MiB
    assert res.memory_swap == 64 * MiB  # Docker's default: as much swap as memory
    assert not res.is_empty()


@pytest.mark.parametrize("memory", ["4096p", str(2**63 - 1)])
def test_default_swap_stays_within_int64(memory: str) -> None:
    # 2 x memory would exceed the int64 the OCI spec takes: memory+swap saturates
    res = parse_resources(memory=memory)
    assert res.memory == parse_bytes(memory)
    assert res.memory_swap == 2**63 - 1
    assert res.to_oci()["memory"]["swap"] == 2**63 - 1


def test_memory_zero_means_unlimited() -> None:
    assert parse_resources(memory="0") == Resources()


def test_memory_minimum_is_6mb() -> None:
    assert parse_resources(memory="6m").memory == 6 * MiB
    with pytest.raises(UsageError, match="Minimum memory limit allowed is 6MB"):
        parse_resources(memory="5m")
    with pytest.raises(UsageError, match="Minimum memory limit allowed is 6MB"):
        parse_resources(memory="100")


def test_memory_bad_unit_names_the_flag() -> None:
    with pytest.raises(UsageError, match="invalid --memory: invalid suffix"):
        parse_resources(memory="32q")


def test_memory_swap_explicit_and_unlimited() -> None:
    res = parse_resources(memory="32m", memory_swap="100m")
    assert (res.memory, res.memory_swap) == (32 * MiB, 100 * MiB)
    assert parse_resources(memory="32m", memory_swap="32m").memory_swap == 32 * MiB  # no swap
    assert parse_resources(memory="32m", memory_swap="-1").memory_swap == -1
    assert parse_resources(memory="32m", memory_swap="0").memory_swap == 64 * MiB  # 0 = unset


def test_memory_swap_needs_memory() -> None:
    with pytest.raises(
        UsageError, match="You should always set the Memory limit when using Memoryswap"
    ):
        parse_resources(memory_swap="64m")


def test_memory_swap_below_memory() -> None:
    with pytest.raises(
        UsageError, match="Minimum memoryswap limit should be larger than memory limit"
    ):
        parse_resources(memory="64m", memory_swap="32m")


def test_memory_swap_bad_value() -> None:
    with pytest.raises(UsageError, match="invalid --memory-swap"):
        parse_resources(memory="64m", memory_swap="-2")


@pytest.mark.parametrize(
    ("text", "nano"),
    [("1", 10**9), ("0.5", 5 * 10**8), (".25", 25 * 10**7), ("1.", 10**9), ("0.000000001", 1)],
)
def test_parse_cpus(text: str, nano: int) -> None:
    assert parse_cpus(text) == nano


@pytest.mark.parametrize("text", ["", "abc", "-1", "1/2", "0x1", "."])
def test_parse_cpus_rejects_non_numbers(text: str) -> None:
    with pytest.raises(UsageError, match="failed to parse"):
        parse_cpus(text)


@pytest.mark.parametrize("text", ["1" * 4301, "2" * 5000 + ".5", "9223372037", "1" * 20])
def test_parse_cpus_too_large(text: str) -> None:
    with pytest.raises(UsageError, match="value is too large") as ei:
        parse_cpus(text)
    assert len(str(ei.value)) < 200


def test_parse_cpus_ascii_digits_only() -> None:
    assert parse_cpus("0000000000000000000000002") == 2 * 10**9
    for text in ("²", "١", "1.²"):
        with pytest.raises(UsageError, match="failed to parse"):
            parse_cpus(text)


def test_parse_cpus_too_precise() -> None:
    with pytest.raises(UsageError, match="value is too precise"):
        parse_cpus("0.0000000001")


def test_cpus_to_quota(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resources, "_cpu_count", lambda: 2)
    res = parse_resources(cpus="0.5")
    assert (res.cpu_quota, res.cpu_period) == (50_000, 100_000)
    assert res.cpus == 0.5
    assert parse_resources(cpus="2").cpu_quota == 200_000
    assert parse_resources(cpus="0.01").cpu_quota == 1_000  # the kernel's minimum quota
    assert parse_resources(cpus="1.5").cpu_quota == 150_000


@pytest.mark.parametrize("cpus", ["0", "0.009", "2.01", "3"])
def test_cpus_out_of_range(monkeypatch: pytest.MonkeyPatch, cpus: str) -> None:
    monkeypatch.setattr(resources, "_cpu_count", lambda: 2)
    with pytest.raises(
        UsageError, match=r"range of CPUs is from 0\.01 to 2\.00, as there are only 2 CPUs"
    ):
        parse_resources(cpus=cpus)


def test_cpu_shares() -> None:
    assert parse_resources(cpu_shares=512).cpu_shares == 512
    assert parse_resources(cpu_shares=0).cpu_shares is None  # 0 = default weight
    assert parse_resources(cpu_shares=1).cpu_shares == 2  # the kernel's bounds
    assert parse_resources(cpu_shares=10**6).cpu_shares == 262144
    with pytest.raises(UsageError, match="invalid --cpu-shares -5: must be a positive integer"):
        parse_resources(cpu_shares=-5)


@pytest.mark.parametrize(
    ("shares", "weight"),
    [(2, 1), (1024, 39), (512, 20), (100, 4), (262144, 10000), (0, 0)],
)
def test_shares_to_weight(shares: int, weight: int) -> None:
    # weight = 1 + ((shares - 2) * 9999) / 262142, as runc and crun compute it.
    assert shares_to_weight(shares) == weight
    if shares:
        assert parse_resources(cpu_shares=shares).cpu_weight == weight


def test_pids_limit() -> None:
    assert parse_resources(pids_limit=20).pids_limit == 20
    assert parse_resources(pids_limit=0).pids_limit == -1  # Docker: <= 0 is unlimited
    assert parse_resources(pids_limit=-1).pids_limit == -1
    assert parse_resources().pids_limit is None
