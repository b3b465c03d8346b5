"""Records at scale: bytes per step on disk, RSS growth of a long tight loop, the step-record
format candidates, ``perfkit.analysis.load`` of the run and ``perfkit report`` of it against
``perfkit --help``.

Run: ``python -m benchmarks.records`` (``--steps`` sets the loop length, default 1M).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from array import array
from pathlib import Path

import psutil

import perfkit
from benchmarks.results import machine, write_section

#: Measures load() in a fresh process: (seconds, peak RSS growth in bytes, rows).
_LOAD = textwrap.dedent(
    """
    import resource, sys, time, json
    import pandas, numpy  # imported by any analysis session; kept out of the timing
    import perfkit.analysis
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    frame = perfkit.analysis.load(sys.argv[1], long=sys.argv[2] == 'long')
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps([seconds, (peak - before) * 1024, len(frame)]))
    """
)


def tight_loop(out: Path, steps: int) -> tuple[Path, float, float]:
    """(run directory, RSS growth in bytes, loop seconds) of a ``steps``-step no-op loop."""
    process = psutil.Process()
    with perfkit.Run("scale", out_dir=out, device="cpu", probes=None) as run:
        with run.phase("train") as train:
            before = process.memory_info().rss
            start = time.perf_counter()
            for _ in train.iterate(range(steps), samples=1):
                pass
            seconds = time.perf_counter() - start
            grown = process.memory_info().rss - before
    assert run.run_dir is not None
    return run.run_dir, grown, seconds


def wall_s(*args: str, repeats: int = 5) -> float:
    """Fastest wall seconds of ``python -m perfkit.cli *args``."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "perfkit.cli", *args], check=True, capture_output=True
        )
        times.append(time.perf_counter() - start)
    return min(times)


def candidates(rows: int) -> list[tuple[str, float, float]]:
    """(format, bytes per step, encoding ns per step) of the step-record candidates, for
    ``rows`` steps of typical values."""
    values = [(0, i, 1.0 + i * 1e-4, 1.23456789e-4, 2.5e-5, 9.8e-5, 32) for i in range(rows)]
    out = []
    start = time.perf_counter()
    buffer = array("d")
    for row in values:
        buffer.extend(row)
    data = buffer.tobytes()
    out.append(
        ("binary rows (steps.bin), 7 float64", len(data) / rows, time.perf_counter() - start)
    )
    template = '{{"p":{0},"s":{1},"t":{2!r},"w":{3!r},"io":{4!r},"c":{5!r},"n":{6}}}'
    start = time.perf_counter()
    text = "\n".join(template.format(*row) for row in values) + "\n"
    out.append(
        ("compact wide JSON line, repr floats", len(text) / rows, time.perf_counter() - start)
    )
    short = '{{"p":{0},"s":{1},"t":{2:.9f},"w":{3:.9f},"io":{4:.9f},"c":{5:.9f},"n":{6}}}'
    start = time.perf_counter()
    text = "\n".join(short.format(*row) for row in values) + "\n"
    out.append(
        ("compact wide JSON line, 9 decimals", len(text) / rows, time.perf_counter() - start)
    )
    return [(name, size, seconds / rows * 1e9) for name, size, seconds in out]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=1_000_000, help="steps of the loop")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run_dir, grown, loop_s = tight_loop(Path(tmp), args.steps)
        on_disk = sum(p.stat().st_size for p in run_dir.iterdir())
        steps_bytes = (run_dir / "steps.bin").stat().st_size
        loads = {
            form: json.loads(
                subprocess.run(
                    [sys.executable, "-c", _LOAD, str(run_dir), form],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
            )
            for form in ("wide", "long")
        }
        report_s = wall_s("report", str(run_dir))
        help_s = wall_s("--help")
    table = candidates(200_000)
    rows = [
        f"| bytes per step on disk (run directory / steps) | {on_disk / args.steps:.1f} | <= 64 |",
        f"| steps.bin bytes per step | {steps_bytes / args.steps:.1f} | |",
        f"| RSS growth over the loop | {grown / 2**20:.1f} MiB | <= 64 MiB |",
        f"| loop wall time | {loop_s:.2f} s ({loop_s / args.steps * 1e9:.0f} ns/step) | |",
        *(
            f"| `perfkit.analysis.load({call})` | {load_s:.2f} s, peak RSS "
            f"+{load_bytes / 2**20:.0f} MiB, {load_rows} rows | {target} |"
            for call, (load_s, load_bytes, load_rows), target in (
                ("run", loads["wide"], "<= 3 s, <= 1 GiB"),
                ("run, long=True", loads["long"], ""),
            )
        ),
        f"| `perfkit report` / `perfkit --help` wall | {report_s:.2f} s / {help_s:.2f} s = "
        f"{report_s / help_s:.2f}x | <= 2x |",
    ]
    body = "\n".join(
        [
            machine(),
            f"Load average (1 min) at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores "
            "(other jobs on the machine inflate absolute times; ratios are taken in one run).",
            f"A {args.steps}-step tight loop (`iterate(range(n), samples=1)`, no-op body, no "
            "probes, default flush interval) in one process; load() and report in fresh "
            "processes (fastest of 5 for the CLI).",
            "",
            "| quantity | measured | target |",
            "|---|---|---|",
            *rows,
            "",
            "Step-record candidates (200000 typical rows, encoding on one thread):",
            "",
            "| format | bytes per step | encoding ns per step |",
            "|---|---|---|",
            *(f"| {name} | {size:.1f} | {ns:.0f} |" for name, size, ns in table),
        ]
    )
    print(body)
    if not args.no_write:
        write_section("Records at scale (issue 13)", body)


if __name__ == "__main__":
    main()
