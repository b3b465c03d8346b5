"""Many small runs: ``perfkit.analysis.load()`` of N runs (default 10,000) against
``summaries()`` of the same runs, the Parquet export and reading the export back with pandas,
each in a fresh process (pandas and numpy imported before the clock starts).

The runs are copies of one real run (a 100-step train phase and a 10-step val phase, no
probes) with their own run ids. Run: ``python -m benchmarks.many_runs [--runs N]``.
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
from pathlib import Path

import perfkit
from benchmarks.results import machine, write_section

#: Times one call in a fresh process: prints [wall seconds, CPU seconds of the process, rows].
_TIMED = textwrap.dedent(
    """
    import json, sys, time
    import numpy, pandas  # any analysis session has them; kept out of the timing
    import perfkit.analysis
    what, path = sys.argv[1], sys.argv[2]
    start, cpu = time.perf_counter(), time.process_time()
    if what == "load":
        rows = len(perfkit.analysis.load(path))
    elif what == "summaries":
        rows = len(perfkit.analysis.summaries(path))
    elif what == "export":
        perfkit.analysis.export(path, "parquet", sys.argv[3])
        rows = 0
    else:
        rows = len(pandas.read_parquet(path))
    print(json.dumps([time.perf_counter() - start, time.process_time() - cpu, rows]))
    """
)


def make_runs(out: Path, count: int) -> Path:
    """``count`` copies of one small run under ``out/runs``, each with its own run id, 1000
    to a folder (``part-0`` holds the first 1000)."""
    with perfkit.Run("many", out_dir=out / "template", device="cpu", probes=None) as run:
        with run.phase("train") as train:
            for _ in train.iterate(range(100), samples=8):
                pass
        with run.phase("val") as val:
            for _ in val.iterate(range(10), samples=8):
                pass
        run.log(mAP=0.5)
    assert run.run_dir is not None
    files = {p.name: p.read_bytes() for p in run.run_dir.iterdir()}
    old = run.run_dir.name.encode()
    for i in range(count):
        target = out / "runs" / f"part-{i // 1000}" / f"many-{i}"
        target.mkdir(parents=True)
        new = f"many-{i}".encode()
        for name, data in files.items():
            text = name.endswith((".json", ".jsonl"))
            (target / name).write_bytes(data.replace(old, new) if text else data)
    return out / "runs"


def timed(*args: str) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, rows) of one call of _TIMED in a fresh process."""
    out = subprocess.run(
        [sys.executable, "-c", _TIMED, *args], check=True, capture_output=True, text=True
    ).stdout
    seconds, cpu, rows = json.loads(out)
    return float(seconds), float(cpu), int(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10_000, help="how many runs (10000)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md")
    args = parser.parse_args()
    n = args.runs
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        runs = make_runs(Path(tmp), args.runs)
        made_s = time.perf_counter() - start
        calls = {
            "load": ("`load(runs)`", n, timed("load", str(runs))),
            "summaries": ("`summaries(runs)`", n, timed("summaries", str(runs))),
        }
        exported = min(n, 1000)  # the export costs ~50x a load per run: part-0 only
        pq = str(Path(tmp) / "pq")
        calls["export"] = (
            f"`export({exported} runs, 'parquet', dir)`",
            exported,
            timed("export", str(runs / "part-0"), pq),
        )
        calls["read"] = (
            "`pd.read_parquet(dir / 'steps')` of those",
            exported,
            timed("parquet", str(Path(pq) / "steps")),
        )
    rows = [
        f"| {call} | {wall:.2f} s | {cpu:.2f} s | {cpu / count * 1e3:.2f} ms | {found or ''} |"
        for call, count, (wall, cpu, found) in calls.values()
    ]
    body = "\n".join(
        [
            machine(),
            f"Load average (1 min) at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} "
            "cores (other jobs on the machine inflate absolute times).",
            f"{n} runs of 110 steps and 13 events each (copies of one real run, made in "
            f"{made_s:.1f} s); each call in a fresh process, its wall time and the CPU time of "
            "that process (on a shared machine the CPU time is the steadier figure). Target: "
            "load() of 10,000 runs under 10 s.",
            "",
            "| call | wall | CPU | CPU per run | rows |",
            "|---|---|---|---|---|",
            *rows,
        ]
    )
    print(body)
    if not args.no_write:
        write_section("Many runs (issue 26)", body)


if __name__ == "__main__":
    main()
