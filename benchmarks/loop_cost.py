"""The step loop's cost against Lightning's ``Throughput.update``, measured in one process.

Batches are ``(images, labels)`` tensors and perfkit counts their samples itself (the default
``samples=None``); Lightning's ``Throughput.update`` is given the counts. Figures, each the
marginal cost of one step (slope between N and 2N steps, fastest of the repeats, the variants
taking turns in each repeat, garbage collector paused as timeit does), over the bare loop:

- loop wall clock, default Run (probes sampling, the flusher writing every step): what the
  user's loop waits for - the loop's own work and every moment the other threads hold the GIL
  (per step of the longer loop, timed around the loop only);
- loop thread: CPU time of the thread running the loop (``time.thread_time``: robust on a busy
  machine, where wall time measures the other processes; perfkit's flusher held back, as it
  runs on another thread);
- whole process: CPU time of every thread of the process over the whole run - start, loop,
  encoding and writing every step, stop.

and the loop thread's figure once more with the body in a ``compute()`` window.

Run: ``python -m benchmarks.loop_cost``.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from typing import Any

import perfkit
from benchmarks.overhead import gc_paused, lightning_throughput
from benchmarks.results import machine, write_section

#: (loop thread CPU s, process CPU s of the whole run, loop wall s) of one pass.
Times = tuple[float, float, float]


def perfkit_run(
    data: list[Any], flush_interval_s: float = 2.0, compute: bool = False, probes: Any = None
) -> Times:
    """One perfkit pass; ``compute``: the body is one ``compute()`` window; ``probes``: the
    Run's (``"auto"``: its default)."""
    with tempfile.TemporaryDirectory() as out:
        cpu = time.process_time()
        with perfkit.Run(
            "loop", out_dir=out, device="cpu", probes=probes, flush_interval_s=flush_interval_s
        ) as run:
            with run.phase("train") as train:
                window = train.compute()
                start, wall = time.thread_time(), time.perf_counter()
                if compute:
                    for _ in train.iterate(data):
                        with window:
                            pass
                else:
                    for _ in train.iterate(data):
                        pass
                loop, wall = time.thread_time() - start, time.perf_counter() - wall
        return loop, time.process_time() - cpu, wall


def lightning_run(data: list[Any]) -> Times:
    cpu = time.process_time()
    start, wall = time.thread_time(), time.perf_counter()
    lightning_throughput(data)
    wall = time.perf_counter() - wall
    return time.thread_time() - start, time.process_time() - cpu, wall


def bare_run(data: list[Any]) -> Times:
    cpu = time.process_time()
    start, wall = time.thread_time(), time.perf_counter()
    for _ in data:
        pass
    wall = time.perf_counter() - wall
    return time.thread_time() - start, time.process_time() - cpu, wall


def per_step_ns(measures: dict[str, Any], batch: Any, steps: int, repeats: int) -> dict[str, Times]:
    """{variant: (loop thread CPU, process CPU, loop wall) ns per step}: the CPU times the slope
    between ``steps`` and ``2 * steps`` (the run's start and stop cancel), the wall time that of
    the ``2 * steps`` loop alone (timed around the loop: nothing to cancel; a slope of two noisy
    wall times would be noise), fastest of ``repeats``. The variants take turns within each
    repeat, so a slow spell of the (shared) machine falls on all of them rather than on one."""
    best: dict[tuple[str, int], Times] = {}
    for _ in range(repeats):
        for n in (steps, 2 * steps):
            data = [batch] * n
            for name, measure in measures.items():
                with gc_paused():
                    times = measure(data)
                old = best.get((name, n), (math.inf, math.inf, math.inf))
                best[(name, n)] = (
                    min(old[0], times[0]),
                    min(old[1], times[1]),
                    min(old[2], times[2]),
                )
    slopes = {}
    for name in measures:
        one, two = best[(name, steps)], best[(name, 2 * steps)]
        slopes[name] = (
            (two[0] - one[0]) / steps * 1e9,
            (two[1] - one[1]) / steps * 1e9,
            two[2] / (2 * steps) * 1e9,
        )
    return slopes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=200_000, help="steps per measurement")
    parser.add_argument("--repeats", type=int, default=5, help="measurements (fastest is kept)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md")
    args = parser.parse_args()
    import torch

    batch = (torch.zeros(32, 3, 8, 8), torch.zeros(32, dtype=torch.long))
    measures = {
        "bare": bare_run,
        "lightning": lightning_run,
        "loop": lambda d: perfkit_run(d, 1e9),
        "all_in": perfkit_run,
        "compute": lambda d: perfkit_run(d, 1e9, compute=True),
        "defaults": lambda d: perfkit_run(d, probes="auto"),
    }
    load = os.getloadavg()[0]
    figures = per_step_ns(measures, batch, args.steps, args.repeats)
    bare, lightning, loop_only, all_in, compute, defaults = (figures[name] for name in measures)
    peer_thread, peer_cpu = lightning[0] - bare[0], lightning[1] - bare[1]
    peer_wall, wall_ns = lightning[2] - bare[2], defaults[2] - bare[2]
    quiet_wall_ns = all_in[2] - bare[2]
    loop_ns = loop_only[0] - bare[0]
    compute_ns = compute[0] - bare[0]
    cpu_ns = all_in[1] - bare[1]
    body = "\n".join(
        [
            machine(),
            f"Load average (1 min) at the start and end: {load:.1f}, {os.getloadavg()[0]:.1f} on "
            f"{os.cpu_count()} cores (other jobs on the machine inflate absolute times, wall "
            "times most; ratios are taken in one run).",
            f"torch {torch.__version__}; batches `(zeros(32, 3, 8, 8), zeros(32))`, samples "
            f"counted by perfkit (default); cost per step over the bare loop, fastest of "
            f"{args.repeats}, the variants taking turns, GC paused, in one process: CPU rows "
            f"the slope between {args.steps} and {2 * args.steps} steps, wall rows the "
            f"{2 * args.steps}-step loop timed around the loop (the flusher waited for each "
            "time the 65,536-step ring fills).",
            f"Command: `PYTHONPATH=$PWD python -m benchmarks.loop_cost --steps {args.steps} "
            f"--repeats {args.repeats}`.",
            "",
            "| figure | perfkit ns/step | Lightning `Throughput.update` ns/step (same clock) "
            "| ratio | target |",
            "|---|---|---|---|---|",
            f"| loop wall clock, default Run (probes on, flusher writing) | {wall_ns:.0f} | "
            f"{peer_wall:.0f} | {wall_ns / peer_wall:.2f}x | <= 0.6x (issue 27) |",
            f"| loop wall clock, no probes (flusher writing) | {quiet_wall_ns:.0f} | "
            f"{peer_wall:.0f} | {quiet_wall_ns / peer_wall:.2f}x | |",
            f"| loop thread CPU | {loop_ns:.0f} | {peer_thread:.0f} | "
            f"{loop_ns / peer_thread:.2f}x | <= 0.6x |",
            f"| whole-process CPU, all threads, encoding and writing included | {cpu_ns:.0f} | "
            f"{peer_cpu:.0f} | {cpu_ns / peer_cpu:.2f}x | <= 1.0x |",
            f"| loop thread CPU, the body in a `compute()` window | {compute_ns:.0f} | "
            f"{peer_thread:.0f} | {compute_ns / peer_thread:.2f}x | < 1x (issue 2) |",
            "",
            "The `compute()` window is the Python class (the C one, about 276 ns a window "
            "cheaper, was removed in issue 13): the last row is what marking compute windows "
            "costs with it.",
        ]
    )
    print(body)
    if not args.no_write:
        write_section("Loop cost against Lightning (issue 13)", body)


if __name__ == "__main__":
    main()
