"""CPU cost of perfkit's probe sampler against FlagPerf's way of monitoring.

perfkit: a ``Sampler`` thread at 10 Hz over the probes ``"auto"`` picks here (psutil's host
probe, plus NVML and the torch allocator where present). Cost = process CPU time (the main
thread only sleeps) / wall time, as a percentage of one core.

FlagPerf's way: every sample forks a shell that runs the tool through a pipe to awk (its
monitors do this every 5 s). The stand-in command is ``sh -c "cat /proc/meminfo | awk ..."``,
at the same 10 Hz; its cost counts the children's CPU time too. A real vendor tool costs more
than ``cat``, so this is a lower bound for FlagPerf.

Also: the cost of one ``sample()`` per probe, and of one ``parse`` per tool on the real
samples in tests/fixtures_probes/smi-samples. Run: ``python -m benchmarks.sampler
[--seconds 20]``; numbers go to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import re
import resource
import statistics
import subprocess
import threading
import time
from pathlib import Path

from benchmarks.results import machine, write_section
from perfkit.probes import DeviceSample, Probe, Sampler, parse, resolve_probes

HZ = 10.0
SAMPLES = Path(__file__).resolve().parents[1] / "tests" / "fixtures_probes" / "smi-samples"
FLAGPERF_STAND_IN = "cat /proc/meminfo | awk '/MemTotal|MemAvailable/ {print $2}'"
# Tool samples to time parse() on: (tool, file, the pattern that starts each output in the
# file, or None for a file holding one output after its first line, which names the source).
PARSE_CASES = [
    ("nvidia-smi", "nvidia_smi_query_gpu_csv_H100_projected.txt", r"^## \w+\n"),
    ("cnmon", "cambricon_cnmon_v5.10.13_paddle_docs.txt", None),
    ("npu-smi", "ascend_npu-smi_info_23.0.3_910B_paddle_docs.txt", None),
    ("ixsmi", "iluvatar_ixsmi_BI-V150_ernie_docs.txt", None),
    ("amd-smi", "amd_amd-smi_monitor_amdsmi_changelog.txt", r"^## block \d+\n\$ .*\n"),
]


def first_output(name: str, separator: str | None) -> str:
    text = (SAMPLES / name).read_text()
    if separator is None:
        return text.split("\n", 1)[1]
    return re.split(separator, text, flags=re.M)[1]


def cpu_s(children: bool) -> float:
    """CPU seconds of this process (and of its waited-for children), microsecond resolution
    (``os.times`` counts in 10 ms clock ticks, too coarse here)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    total = own.ru_utime + own.ru_stime
    if children:
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        total += kids.ru_utime + kids.ru_stime
    return total


def perfkit_cost(probes: list[Probe], seconds: float) -> tuple[float, int, list[str]]:
    """(% of one core, samples delivered, errors) of a Sampler at HZ for ``seconds``."""
    count = 0
    errors: list[str] = []
    lock = threading.Lock()

    def on_sample(sample: DeviceSample) -> None:
        nonlocal count
        with lock:
            count += 1

    sampler = Sampler(probes, 1.0 / HZ, on_sample, lambda p, m: errors.append(f"{p}: {m}"))
    cpu0, wall0 = cpu_s(children=False), time.perf_counter()
    sampler.start()
    time.sleep(seconds)
    sampler.stop()
    cpu, wall = cpu_s(children=False) - cpu0, time.perf_counter() - wall0
    return 100.0 * cpu / wall, count, errors


def flagperf_cost(seconds: float) -> tuple[float, float]:
    """(% of one core, median wall ms per sample) of a shell forked per sample at HZ."""
    cpu0, wall0 = cpu_s(children=True), time.perf_counter()
    next_t, walls = wall0, []
    while time.perf_counter() - wall0 < seconds:
        start = time.perf_counter()
        subprocess.run(["sh", "-c", FLAGPERF_STAND_IN], capture_output=True, check=True)
        walls.append(time.perf_counter() - start)
        next_t += 1.0 / HZ
        time.sleep(max(0.0, next_t - time.perf_counter()))
    cpu, wall = cpu_s(children=True) - cpu0, time.perf_counter() - wall0
    return 100.0 * cpu / wall, 1e3 * statistics.median(walls)


def per_call_us(fn: object, repeats: int) -> float:
    assert callable(fn)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e6 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each cost run")
    parser.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md")
    args = parser.parse_args()

    probes = resolve_probes("auto")
    names = ", ".join(p.name for p in probes)
    # A first run warms imports and caches; the second is the measurement.
    perfkit_cost(resolve_probes("auto"), 1.0)
    pct, count, errors = perfkit_cost(probes, args.seconds)
    fp_pct, fp_ms = flagperf_cost(args.seconds)

    rows = []
    for probe in resolve_probes("auto"):
        probe.open()
        rows.append(f"| `{probe.name}` sample() | {per_call_us(probe.sample, 200):.0f} |")
        probe.close()
    for tool, name, separator in PARSE_CASES:
        text = first_output(name, separator)
        devices = len(parse(tool, text))
        us = per_call_us(lambda tool=tool, text=text: parse(tool, text), 200)
        rows.append(f"| `parse({tool!r}, ...)` ({devices} devices) | {us:.0f} |")

    errors_note = f"; errors: {'; '.join(errors)}" if errors else ""
    fp_note = f"median {fp_ms:.1f} ms wall per sample; a real vendor tool costs more"
    body = f"""{machine()}
Sampling at {HZ:g} Hz for {args.seconds:g} s each; CPU time over wall time, % of one core.

| monitor | CPU, % of one core | notes |
|---|---|---|
| perfkit `Sampler`, probes `auto` = {names} | {pct:.2f} | {count} samples{errors_note} |
| FlagPerf's way: a shell forked per sample (command below) | {fp_pct:.2f} | {fp_note} |

FlagPerf's stand-in command: `sh -c "{FLAGPERF_STAND_IN}"`. Target for perfkit: under 1 % of
one core at 10 Hz.

| one call | median µs |
|---|---|
{chr(10).join(rows)}

Vendor tools other than nvidia-smi (which loops in one long-lived process) are run once per
sample, without a shell: their cost is the tool's own start-up plus the parse above.
"""
    print(body)
    if not args.no_write:
        write_section("Probe sampler (issue 3)", body)


if __name__ == "__main__":
    main()
