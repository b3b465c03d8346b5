"""``perfkit peak``: the measured peak per dtype, from the cache when measured before."""

from __future__ import annotations

import json

import pytest

from perfkit.cli import main
from tests.test_run_peak import cache_a_peak


def test_peak_reads_the_cache_and_measures_what_is_not_there(capsys) -> None:
    cache_a_peak("fp32", 2.5e12)
    assert main(["peak", "--device", "cpu", "--dtype", "fp32", "--format", "json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    # 2.5e12 FLOP/s = 2.5 TFLOP/s, as cached; a CPU has no table figure
    assert row["measured TFLOP/s"] == "2.5" and row["cached"] == "yes" and row["dtype"] == "fp32"
    assert row["table TFLOP/s"] == "/" and row["device"].endswith("(cpu)")
    # not cached: measured, the time limit leaving only the smallest size (256)
    args = ["peak", "--device", "cpu", "--dtype", "fp64", "--no-cache", "--time-limit", "0.001"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("| device") and "| fp64  |" in out and "| 256 |" in out and "| no " in out


@pytest.mark.parametrize("dtype", ["fp8", "int4"])
def test_peak_refuses_a_dtype_it_cannot_measure(dtype: str, capsys) -> None:
    assert main(["peak", "--device", "cpu", "--dtype", dtype, "--no-cache"]) == 2
    assert "dtype" in capsys.readouterr().err
