"""perfkit.flops.measure_peak: against the same matmul timed here, on a fake device-event timer,
its memory budget, time limit and on-disk cache. Sizes are small, so each measurement takes a
fraction of a second."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from perfkit.flops import MeasuredPeak, measure_peak
from perfkit.flops._measure import CACHE_FILE
from perfkit.timing import HostTimer

N = 256


def independent_rate(n: int, seconds: float = 0.1, blocks: int = 3) -> float:
    """FLOP/s of torch.mm on two random fp32 n x n matrices, timed here: the best of ``blocks``
    loops of about ``seconds`` each (2 n^3 FLOPs per matmul), on the calling thread's CPU
    clock (one torch thread: the time the matmuls had a core, whatever the neighbours do)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    out = torch.empty(n, n)
    torch.mm(a, b, out=out)
    start = time.thread_time()
    torch.mm(a, b, out=out)
    iterations = max(1, round(seconds / max(time.thread_time() - start, 1e-6)))
    best = 0.0
    for _ in range(blocks):
        start = time.thread_time()
        for _ in range(iterations):
            torch.mm(a, b, out=out)
        best = max(best, 2 * n**3 * iterations / (time.thread_time() - start))
    return best


def test_the_measured_peak_matches_the_same_matmul_timed_here() -> None:
    # One torch thread, timed on that thread's CPU clock on both sides (HostTimer takes any
    # clock): on a loaded 2-core machine wall time measures the neighbours. Interleaved
    # rounds, the best of each side so far, until they agree or 15 rounds have passed.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    ours, theirs = 0.0, 0.0
    cpu_clock = HostTimer(time.thread_time)
    try:
        for _ in range(15):
            peak = measure_peak(
                "cpu", "fp32", sizes=(N,), repeats=3, block_s=0.1, cache=False, timer=cpu_clock
            )
            ours = max(ours, peak.flops)
            theirs = max(theirs, independent_rate(N))
            if ours == pytest.approx(theirs, rel=0.05):
                break
    finally:
        torch.set_num_threads(threads)
    assert ours == pytest.approx(theirs, rel=0.10)
    assert peak.size == N and list(peak.by_size) == [N] and peak.dtype == "fp32"
    assert "torch.mm 256x256x256 fp32" in peak.method and "host clock" in peak.method
    assert "TF32/HF32 off" in peak.method and not peak.cached
    # the default timer (wall clock) on the same matmul: a positive, finite figure
    wall = measure_peak("cpu", "fp32", sizes=(64,), repeats=1, block_s=0.01, cache=False)
    assert 0 < wall.flops < float("inf")


class FakeDevice(TorchDispatchMode):
    """A fake accelerator's timing events: each matmul takes 1 ms on it, so two marks are
    1 ms apart per ``aten.mm`` run between them (counted at dispatch); ``synchronize`` notes
    the float32 matmul precision in force."""

    def __init__(self) -> None:
        super().__init__()
        self.matmuls = 0
        self.syncs: list[str] = []
        self.released = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if func.overloadpacket is torch.ops.aten.mm:
            self.matmuls += 1
        return func(*args, **(kwargs or {}))

    def mark(self) -> int:
        return self.matmuls

    def ready(self, mark: Any) -> bool:
        return True

    def elapsed_s(self, start: int, end: int) -> float:
        return 1e-3 * (end - start)

    def release(self, mark: Any) -> None:
        self.released += 1

    def synchronize(self) -> None:
        self.syncs.append(torch.get_float32_matmul_precision())


def test_the_event_path_counts_flops_over_event_time() -> None:
    before = torch.get_float32_matmul_precision()
    with FakeDevice() as device:
        peak = measure_peak(
            "cpu", "fp32", sizes=(64,), repeats=4, block_s=0.1, cache=False, timer=device
        )
    # Calibration: blocks of 1, 2, ..., 64 matmuls; 64 take 64 ms of device time, at least half
    # of block_s = 0.1 s: 64 * 0.1 / 0.064 = 100 iterations a block, 0.1 s each by the events:
    # 2 * 64^3 * 100 / 0.1 = 5.24288e8 FLOP/s.
    assert peak.flops == pytest.approx(2 * 64**3 * 100 / 0.1)
    assert "blocks of 100 iterations" in peak.method and "device events" in peak.method
    # a first matmul, seven calibration blocks, four timed blocks: a sync after each, TF32 off
    assert device.syncs == ["highest"] * 12 and device.released == 24
    assert device.matmuls == 1 + (1 + 2 + 4 + 8 + 16 + 32 + 64) + 4 * 100
    assert torch.get_float32_matmul_precision() == before
    with FakeDevice() as tf32:
        measure_peak("cpu", "tf32", sizes=(64,), repeats=1, cache=False, timer=tf32)
    assert set(tf32.syncs) == {"high"}


def test_sizes_beyond_the_memory_budget_or_the_time_limit_are_skipped() -> None:
    # three 128 x 128 fp32 matrices are 196608 bytes; a 200000-byte budget leaves 256 out
    fits = measure_peak(
        "cpu",
        "fp32",
        sizes=(64, 128, 256),
        memory_budget_bytes=200_000,
        repeats=1,
        block_s=0.01,
        cache=False,
    )
    assert list(fits.by_size) == [64, 128]
    # below the smallest size: the largest power of two that fits, 3 * 32 * 32 * 4 = 12288 B
    tiny = measure_peak(
        "cpu", "fp32", sizes=(64,), memory_budget_bytes=13_000, repeats=1, block_s=0.01, cache=False
    )
    assert list(tiny.by_size) == [32]
    # no time for a second size: the first is still measured
    hurried = measure_peak(
        "cpu", "fp32", sizes=(64, 512), time_limit_s=1e-6, repeats=1, block_s=0.01, cache=False
    )
    assert list(hurried.by_size) == [64]


def test_the_cache_is_keyed_by_device_versions_dtype_and_threads(tmp_path: Path) -> None:
    first = measure_peak("cpu", "fp32", sizes=(64,), repeats=1, block_s=0.01, directory=tmp_path)
    again = measure_peak("cpu", "fp32", sizes=(64,), repeats=1, block_s=0.01, directory=tmp_path)
    assert again.cached and not first.cached and again.flops == first.flops
    assert again == MeasuredPeak(**{**first.__dict__, "cached": True})
    assert first.key["torch"] == torch.__version__ and first.key["dtype"] == "fp32"
    assert first.key["threads"] == str(torch.get_num_threads()) and first.key["device_name"]
    other = measure_peak("cpu", "bf16", sizes=(64,), repeats=1, block_s=0.01, directory=tmp_path)
    assert not other.cached
    threads = torch.get_num_threads()
    torch.set_num_threads(1 if threads > 1 else 2)
    try:
        assert not measure_peak(
            "cpu", "fp32", sizes=(64,), repeats=1, block_s=0.01, directory=tmp_path
        ).cached
    finally:
        torch.set_num_threads(threads)
    entries = json.loads((tmp_path / CACHE_FILE).read_text())
    assert len(entries) == 3
    refreshed = measure_peak(
        "cpu", "fp32", sizes=(64,), repeats=1, block_s=0.01, directory=tmp_path, refresh=True
    )
    assert not refreshed.cached
    (tmp_path / CACHE_FILE).write_text("{not json")  # a broken cache is measured over
    assert not measure_peak(
        "cpu", "fp32", sizes=(64,), repeats=1, block_s=0.01, directory=tmp_path
    ).cached
    assert len(json.loads((tmp_path / CACHE_FILE).read_text())) == 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dtype": "fp8"}, "argument `dtype`"),
        ({"dtype": "fp12"}, "dtype"),
        ({"sizes": (0,)}, "argument `sizes`"),
        ({"sizes": ()}, "argument `sizes`"),
        ({"repeats": 0}, "argument `repeats`"),
        ({"block_s": -1.0}, "argument `block_s`"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        measure_peak("cpu", **{"dtype": "fp32", "cache": False, **kwargs})
