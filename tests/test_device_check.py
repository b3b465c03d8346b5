"""The CPU side of benchmarks.device_check: pass/fail logic, the table, and the exit without
an accelerator (this machine has none, so main() takes that path for real)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from benchmarks import device_check
from benchmarks.device_check import Check, all_passed, table


@pytest.mark.parametrize(
    ("check", "passed"),
    [
        (Check("agree", 101.0, 100.0, 0.01), True),  # |101 - 100| = 1 <= 1 % of 100
        (Check("agree", 101.5, 100.0, 0.01), False),
        (Check("agree", 98.9, 100.0, 0.01), False),
        (Check("overhead", 0.8, 0.0, 1.0, kind="at_most"), True),
        (Check("overhead", 1.2, 0.0, 1.0, kind="at_most"), False),
        (Check("mfu", 0.42, 0.0, 1.0, kind="range"), True),
        (Check("mfu", 0.0, 0.0, 1.0, kind="range"), False),  # the open end
        (Check("mfu", 1.3, 0.0, 1.0, kind="range"), False),  # above the peak: a wrong peak
        (Check("nan", math.nan, 100.0, 0.01), False),  # not measured is not a pass
        (Check("exact", 512.0, 512.0, 0.0), True),
    ],
)
def test_pass_fail(check: Check, passed: bool) -> None:
    assert check.passed is passed


def test_unknown_kind_is_named() -> None:
    with pytest.raises(ValueError, match="`kind`"):
        _ = Check("x", 1.0, 1.0, 0.1, kind="about").passed


def test_table_rows_and_columns() -> None:
    checks = [
        Check("events vs sync", 101.0, 100.0, 0.01, "ms"),
        Check("overhead", 2.5, 0.0, 1.0, "%", kind="at_most", note="untimed 3 s"),
    ]
    assert table(checks).splitlines() == [
        "| check          | measured | reference | limit  | result | note        |",
        "|----------------|----------|-----------|--------|--------|-------------|",
        "| events vs sync | 101 ms   | 100 ms    | ±1 %   | PASS   |             |",
        "| overhead       | 2.5 %    |           | <= 1 % | FAIL   | untimed 3 s |",
    ]
    assert not all_passed(checks)
    assert all_passed(checks[:1])
    assert not all_passed([])


def test_no_accelerator_is_one_line_and_status_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert device_check.main([]) == device_check.NO_ACCELERATOR_EXIT
    out = capsys.readouterr().out
    assert out.strip() == "device_check: no accelerator here (torch sees none); nothing to check"


def test_accelerator_device_from_the_backend() -> None:
    npu = SimpleNamespace(is_available=lambda: True)
    fake = SimpleNamespace(npu=npu, device=lambda kind, index: f"{kind}:{index}")
    assert device_check.accelerator_device(fake) == "npu:0"
    assert device_check.accelerator_device(SimpleNamespace(device=None)) is None
