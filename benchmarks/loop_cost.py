"""The step loop's cost against Lightning's ``Throughput.update``, measured in one process.

Batches are ``(images, labels)`` tensors and perfkit counts their samples itself (the default
``samples=None``); Lightning's ``Throughput.update`` is given the counts. Two figures per
variant, each the marginal cost of one step (slope between N and 2N steps, fastest of the
repeats, the variants taking turns in each repeat, garbage collector paused as timeit does),
over the bare loop:

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


def perfkit_run(
    data: list[Any], flush_interval_s: float, compute: bool = False
) -> tuple[float, float]:
    """(loop thread CPU seconds, process CPU seconds of the whole run) of one perfkit pass;
    ``compute``: the body is one ``compute()`` window."""
    with tempfile.TemporaryDirectory() as out:
        cpu = time.process_time()
        with perfkit.Run(
            "loop", out_dir=out, device="cpu", probes=None, flush_interval_s=flush_interval_s
        ) as run:
            with run.phase("train") as train:
                window = train.compute()
                start = time.thread_time()
                if compute:
                    for _ in train.iterate(data):
                        with window:
                            pass
                else:
                    for _ in train.iterate(data):
                        pass
                loop = time.thread_time() - start
        return loop, time.process_time() - cpu


def lightning_run(data: list[Any]) -> tuple[float, float]:
    cpu = time.process_time()
    start = time.thread_time()
    lightning_throughput(data)
    return time.thread_time() - start, time.process_time() - cpu


def bare_run(data: list[Any]) -> tuple[float, float]:
    cpu = time.process_time()
    start = time.thread_time()
    for _ in data:
        pass
    return time.thread_time() - start, time.process_time() - cpu


def per_step_ns(
    measures: dict[str, Any], batch: Any, steps: int, repeats: int
) -> dict[str, tuple[float, float]]:
    """{variant: (loop ns, process CPU ns) per step}: the slope between ``steps`` and
    ``2 * steps``, fastest of ``repeats``. The variants take turns within each repeat, so a
    slow spell of the (shared) machine falls on all of them rather than on one."""
    best: dict[tuple[str, int], tuple[float, float]] = {}
    for _ in range(repeats):
        for n in (steps, 2 * steps):
            data = [batch] * n
            for name, measure in measures.items():
                with gc_paused():
                    loop, cpu = measure(data)
                old = best.get((name, n), (math.inf, math.inf))
                best[(name, n)] = (min(old[0], loop), min(old[1], cpu))
    return {
        name: (
            (best[(name, 2 * steps)][0] - best[(name, steps)][0]) / steps * 1e9,
            (best[(name, 2 * steps)][1] - best[(name, steps)][1]) / steps * 1e9,
        )
        for name in measures
    }


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
        "all_in": lambda d: perfkit_run(d, 2.0),
        "compute": lambda d: perfkit_run(d, 1e9, compute=True),
    }
    figures = per_step_ns(measures, batch, args.steps, args.repeats)
    bare, lightning, loop_only, all_in, compute = (figures[name] for name in measures)
    peer_wall, peer_cpu = lightning[0] - bare[0], lightning[1] - bare[1]
    loop_ns = loop_only[0] - bare[0]
    compute_ns = compute[0] - bare[0]
    cpu_ns = all_in[1] - bare[1]
    body = "\n".join(
        [
            machine(),
            f"Load average (1 min) at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores "
            "(other jobs on the machine inflate absolute times; ratios are taken in one run).",
            f"torch {torch.__version__}; batches `(zeros(32, 3, 8, 8), zeros(32))`, samples "
            f"counted by perfkit (default); marginal cost per step over the bare loop (slope "
            f"between {args.steps} and {2 * args.steps} steps, fastest of {args.repeats}, the "
            "variants taking turns, GC paused), in one process.",
            "",
            "| figure | perfkit ns/step | Lightning `Throughput.update` ns/step | ratio | target |",
            "|---|---|---|---|---|",
            f"| loop thread CPU | {loop_ns:.0f} | {peer_wall:.0f} | {loop_ns / peer_wall:.2f}x "
            "| <= 0.6x |",
            f"| whole-process CPU, all threads, encoding and writing included | {cpu_ns:.0f} | "
            f"{peer_cpu:.0f} | {cpu_ns / peer_cpu:.2f}x | <= 1.0x |",
            f"| loop thread CPU, the body in a `compute()` window | {compute_ns:.0f} | "
            f"{peer_wall:.0f} | {compute_ns / peer_wall:.2f}x | < 1x (issue 2) |",
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
