"""The CPU's measured peak (``perfkit.flops.measure_peak``) and how long measuring takes.

Per dtype (fp32, bf16): ``--repeats`` fresh measurements (no cache) with the default sizes and
time limit, interleaved with the same matmul timed independently here (the best of three
blocks of perf_counter around torch.mm at the size perfkit chose); reported: the best and the
median measured peak, the independent figure, the wall time of one measurement (median and
most), the load average around the run - on a shared 2-core machine the neighbours decide most
of what a CPU matmul reaches - and what a second, cached call takes.

Run: ``python -m benchmarks.peak [--repeats 3]`` (writes its section of RESULTS.md).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import torch

from benchmarks.results import machine, write_section
from perfkit.flops import measure_peak

HEADING = "Measured peak on the CPU (issue 25)"


def independent_rate(n: int, dtype: torch.dtype, seconds: float = 0.2) -> float:
    """FLOP/s of torch.mm on random n x n matrices, best of three ~``seconds`` blocks."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    out = torch.empty(n, n, dtype=dtype)
    torch.mm(a, b, out=out)
    start = time.perf_counter()
    torch.mm(a, b, out=out)
    iterations = max(1, round(seconds / (time.perf_counter() - start)))
    best = 0.0
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(iterations):
            torch.mm(a, b, out=out)
        best = max(best, 2 * n**3 * iterations / (time.perf_counter() - start))
    return best


def rows(repeats: int) -> list[str]:
    out = [
        "| dtype | measured peak, best (GFLOP/s) | median | same matmul timed here, best "
        "| n | one measurement, median (s) | most (s) | cached call (ms) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for dtype, torch_dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        peaks, seconds, independent = [], [], 0.0
        for _ in range(repeats):
            peak = measure_peak("cpu", dtype, cache=False)
            peaks.append(peak)
            seconds.append(peak.seconds)
            independent = max(independent, independent_rate(peak.size, torch_dtype))
        best = max(peaks, key=lambda p: p.flops)
        with tempfile.TemporaryDirectory() as cache:
            measure_peak("cpu", dtype, directory=cache)
            started = time.perf_counter()
            cached = measure_peak("cpu", dtype, directory=cache)
            cached_ms = (time.perf_counter() - started) * 1e3
            assert cached.cached
        median = statistics.median(p.flops for p in peaks)
        out.append(
            f"| {dtype} | {best.flops / 1e9:.1f} (n={best.size}) | {median / 1e9:.1f} | "
            f"{independent / 1e9:.1f} | {', '.join(str(p.size) for p in peaks)} | "
            f"{statistics.median(seconds):.1f} | {max(seconds):.1f} | {cached_ms:.1f} |"
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    load_before = os.getloadavg()
    table = rows(args.repeats)
    load_after = os.getloadavg()
    body = [
        machine(),
        f"torch {torch.__version__}, CPU, {torch.get_num_threads()} threads; load average "
        f"(1 min) {load_before[0]:.1f} before, {load_after[0]:.1f} after.",
        "",
        f"{args.repeats} fresh measurements per dtype (`measure_peak('cpu', dtype, "
        "cache=False)`: sizes 256, 512, 1024, 5 blocks of about 0.2 s each, 30 s limit), "
        "interleaved with the same matmul timed here. A run reads its peak from the cache "
        "after the first measurement.",
        "",
        *table,
    ]
    print("\n".join(body))
    write_section(HEADING, "\n".join(body))


if __name__ == "__main__":
    main()
