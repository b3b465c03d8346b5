"""A vendor tool that prints 100 MB per run, sampled next to a training loop: the loop's step time.

The loop: steps of pure-Python work (it holds the GIL, as a data loader or a Python model
step does), about 5 ms each, timed with ``time.perf_counter``. Three cases, one after the other:

- alone (no sampler);
- perfkit's ``Sampler`` with a one-shot tool probe whose tool prints 100 MB per run (``yes``
  through ``head -c``), at 10 Hz: it reads 4 MiB, kills the tool and disables the probe;
- the peer, the naive way perfkit used before: a thread running ``subprocess.run(...,
  capture_output=True)`` of the same tool at 10 Hz and splitting its output into lines.

Reports the p50 / p90 step time and their ratio to the loop alone. Run:
``python -m benchmarks.tool_flood [--seconds 5]``; numbers go to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.results import machine, write_section
from perfkit.probes import Sampler
from perfkit.probes.tools import CnmonProbe

HZ = 10.0
FLOOD_BYTES = 100_000_000
STEP_ITERATIONS = 60_000  # about 5 ms of Python on the reference machine


def step() -> None:
    sum(i * i for i in range(STEP_ITERATIONS))


def loop_ms(seconds: float) -> list[float]:
    """Step times (ms) of the loop run for ``seconds``."""
    times: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        step()
        times.append(1e3 * (time.perf_counter() - start))
    return times


def flood_tool(directory: Path) -> Path:
    tool = directory / "cnmon"
    tool.write_text(f"#!/bin/sh\nyes 'endless output of a broken tool' | head -c {FLOOD_BYTES}\n")
    tool.chmod(0o755)
    return tool


def with_perfkit(tool: Path, seconds: float) -> tuple[list[float], list[str]]:
    errors: list[str] = []
    sampler = Sampler(
        [CnmonProbe(executable=str(tool))],
        1.0 / HZ,
        lambda sample: None,
        lambda probe, message: errors.append(f"{probe}: {message}".replace(f"{tool.parent}/", "")),
    )
    with sampler:
        times = loop_ms(seconds)
    return times, errors


def with_naive_reader(tool: Path, seconds: float) -> tuple[list[float], int]:
    """The peer: subprocess.run with capture_output per sample, output split into lines."""
    stop = threading.Event()
    runs = 0

    def sample_forever() -> None:
        nonlocal runs
        while not stop.is_set():
            done = subprocess.run([str(tool)], capture_output=True, timeout=30, check=False)
            done.stdout.decode(errors="replace").splitlines()
            runs += 1
            stop.wait(1.0 / HZ)

    thread = threading.Thread(target=sample_forever, daemon=True)
    thread.start()
    times = loop_ms(seconds)
    stop.set()
    thread.join()
    return times, runs


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each case")
    parser.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as directory:
        tool = flood_tool(Path(directory))
        loop_ms(0.5)  # warm up
        alone = loop_ms(args.seconds)
        perfkit, errors = with_perfkit(tool, args.seconds)
        naive, runs = with_naive_reader(tool, args.seconds)

    base50, base90 = statistics.median(alone), percentile(alone, 90)
    rows = []
    for label, times, note in [
        ("loop alone", alone, ""),
        ("perfkit `Sampler`, tool probe", perfkit, "; ".join(errors)),
        ("peer: `subprocess.run(capture_output=True)` thread", naive, f"{runs} runs of the tool"),
    ]:
        p50, p90 = statistics.median(times), percentile(times, 90)
        rows.append(
            f"| {label} | {p50:.2f} | {p90:.2f} | {p50 / base50:.2f}x | {p90 / base90:.2f}x "
            f"| {note} |"
        )
    body = f"""{machine()}
A loop of ~5 ms pure-Python steps for {args.seconds:g} s per case, next to a tool that prints
{FLOOD_BYTES // 10**6} MB per run, sampled at {HZ:g} Hz.

| case | p50 step ms | p90 step ms | p50 vs alone | p90 vs alone | notes |
|---|---|---|---|---|---|
{chr(10).join(rows)}
"""
    print(body)
    if not args.no_write:
        write_section("Vendor tool printing 100 MB per run (issue 16)", body)


if __name__ == "__main__":
    main()
