"""Which peak a Run's MFU divides by, and that the summary and the report say so:
``mfu_peak_source`` is "datasheet", "flagperf-config", "measured" or "user".

A measured peak comes from the on-disk cache when one was measured before for this device,
versions, dtype and thread count: these tests put a known figure there (a MeasuredPeak written
to the session's cache), so the MFU is hand arithmetic and no test measures for long."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import pytest

import perfkit
from perfkit.analysis._tables import seed_rows, summary_rows
from perfkit.flops import MeasuredPeak, mfu_summary
from perfkit.flops._measure import cache_key, read_cache, write_cache
from tests.conftest import FakeClock


def cache_a_peak(dtype: str, flops: float) -> MeasuredPeak:
    """Put ``flops`` (FLOP/s) in the session's cache as this CPU's measured ``dtype`` peak."""
    import torch

    key = cache_key("cpu", dtype)
    peak = MeasuredPeak(
        flops=flops,
        dtype=dtype,
        device_name=key["device_name"],
        size=512,
        by_size={512: flops},
        method="torch.mm 512x512x512 (written by the test)",
        seconds=1.0,
        measured_at="2026-01-01T00:00:00+00:00",
        key=key,
    )
    assert key["threads"] == str(torch.get_num_threads())
    write_cache(peak)
    return peak


def infer_run(tmp_path: Path, clock: FakeClock, **kwargs: object) -> perfkit.Run:
    """1000 samples in 2 s of compute: 500 samples/s on one device."""
    run = perfkit.Run("peak", out_dir=tmp_path, clock=clock, device="cpu", probes=None, **kwargs)  # type: ignore[arg-type]
    with run, run.phase("infer") as infer:
        for _ in infer.iterate([None], samples=1000):
            clock.advance(2.0)
    return run


def test_a_cpu_run_divides_by_its_measured_peak_by_default(tmp_path: Path, clock) -> None:
    cache_a_peak("fp32", 2e12)
    run = infer_run(tmp_path, clock, flops_per_sample=1e9)
    s = run.summary()
    # 1e9 FLOPs x 500 samples/s / 2e12 FLOP/s = 0.25
    assert s["MFU"] == pytest.approx(0.25)
    assert s["mfu_peak_source"] == "measured" and s["peak_flops"] == 2e12
    assert s["peak_source"].startswith("measured on ") and "written by the test" in s["peak_source"]
    assert s["peak_dtype"] == "fp32"
    # meta.json keeps the measured peak: a killed run's summary, rebuilt, has the same MFU
    assert run.run_dir is not None
    meta = json.loads((run.run_dir / "meta.json").read_text())
    assert meta["flops"]["measured_peak"]["flops"] == 2e12
    os.remove(run.run_dir / "summary.json")
    (rebuilt,) = summary_rows(run.run_dir)
    assert rebuilt["status"] == "partial" and rebuilt["MFU"] == pytest.approx(0.25)
    assert rebuilt["mfu_peak_source"] == "measured"
    # the report labels it, so nobody takes it for a datasheet MFU
    (row,) = seed_rows(tmp_path)["infer"]
    assert row["MFU"] == "25.0% (measured peak)"


def test_peak_flops_measured_table_or_a_number(tmp_path: Path, clock) -> None:
    cache_a_peak("bf16", 4e12)
    measured = infer_run(
        tmp_path, clock, flops_per_sample=1e9, peak_flops="measured", config={"precision": "bf16"}
    )
    # 1e9 x 500 / 4e12 = 0.125
    assert measured.summary()["MFU"] == pytest.approx(0.125)
    user = infer_run(tmp_path, clock, flops_per_sample=1e9, peak_flops=1e12)
    assert user.summary()["mfu_peak_source"] == "user" and user.summary()["MFU"] == 0.5
    with pytest.warns(UserWarning, match="no peak FLOP/s known"):
        table = infer_run(tmp_path, clock, flops_per_sample=1e9, peak_flops="table")
    assert "MFU" not in table.summary() and "mfu_note" in table.summary()
    with pytest.raises(ValueError, match="peak_flops"):
        perfkit.Run("bad", out_dir=tmp_path, flops_per_sample=1e9, peak_flops="datasheet")


def test_a_failed_measurement_is_a_note_not_an_error(tmp_path: Path, clock) -> None:
    # measure_peak has no fp8 matmul: it raises, the run ends normally and says why
    run = infer_run(
        tmp_path, clock, flops_per_sample=1e9, peak_flops="measured", config={"precision": "fp8"}
    )
    s = run.summary()
    assert s["status"] == "ok" and "MFU" not in s
    assert "no measured peak" in s["mfu_note"] and "ValueError" in s["mfu_note"]


def test_no_measurement_without_a_core_throughput(tmp_path: Path, clock) -> None:
    run = perfkit.Run(
        "idle",
        out_dir=tmp_path,
        clock=clock,
        device="cpu",
        probes=None,
        flops_per_sample=1e9,
        config={"precision": "fp16"},
    )
    with run:
        pass
    assert read_cache(cache_key("cpu", "fp16")) is None  # nothing was measured
    assert run.summary()["mfu_note"] == "MFU not computed: no compute time was measured"


@pytest.mark.parametrize(
    ("device", "dtype", "kind", "peak"),
    [
        ("NVIDIA A100-SXM4-40GB", "fp16", "datasheet", 312e12),  # A100 datasheet, dense
        ("Iluvatar BI-V150", "bf16", "flagperf-config", 192e12),  # FlagPerf's theoryflops
    ],
)
def test_the_table_says_whose_figure_it_is(device: str, dtype: str, kind: str, peak: float):
    # 2e9 FLOPs x 1000 samples/s / peak
    fields = mfu_summary(2e9, 1000.0, device, dtype)
    assert fields["mfu_peak_source"] == kind and fields["peak_flops"] == peak
    assert fields["MFU"] == pytest.approx(2e9 * 1000 / peak)


@pytest.mark.parametrize("bad", ["x", {"flops": "fast"}, {"flops": -1.0, "dtype": "fp32"}, None])
def test_a_malformed_measured_peak_in_meta_is_ignored(tmp_path: Path, clock, bad: object) -> None:
    cache_a_peak("fp32", 2e12)
    run = infer_run(tmp_path, clock, flops_per_sample=1e9)
    assert run.run_dir is not None
    meta = json.loads((run.run_dir / "meta.json").read_text())
    meta["flops"]["measured_peak"] = bad
    (run.run_dir / "meta.json").write_text(json.dumps(meta))
    os.remove(run.run_dir / "summary.json")
    with pytest.warns(UserWarning, match="no peak FLOP/s known"):
        (rebuilt,) = summary_rows(run.run_dir)
    assert "MFU" not in rebuilt
    assert "no peak FLOP/s known" in rebuilt["mfu_note"]


def test_a_failed_run_does_not_measure(tmp_path: Path, clock) -> None:
    # a finished infer phase (a core throughput), then the job fails: no measurement delays
    # the error; the note says why there is no MFU
    run = perfkit.Run(
        "boom",
        out_dir=tmp_path,
        clock=clock,
        device="cpu",
        probes=None,
        flops_per_sample=1e9,
        config={"precision": "fp64"},
    )
    with warnings.catch_warnings(), pytest.raises(RuntimeError, match="boom"):
        warnings.simplefilter("error")  # the note says why: no warning on top
        with run:
            with run.phase("infer") as infer:
                for _ in infer.iterate([None], samples=10):
                    clock.advance(1.0)
            raise RuntimeError("boom")
    s = run.summary()
    assert s["status"] == "failed" and read_cache(cache_key("cpu", "fp64")) is None
    assert "not measured: the run failed" in s["mfu_note"]
