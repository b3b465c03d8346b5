"""FLOP counting: cost against PyTorch's FlopCounterMode, and torchvision's published figures.

1. Cost: resnet50 and vit_b_16 at 224x224 (random weights, eval, CPU). Each of a plain forward,
   ``perfkit.flops.count`` (scope full) and ``FlopCounterMode`` (used as PyTorch documents it:
   ``with FlopCounterMode(): model(x)``) runs ``--repeats`` times after one warm-up, interleaved;
   medians of the process CPU time (all threads) reported - on a shared machine wall time
   mostly measures the neighbours - with the wall-time ratio beside it. Target: perfkit's count
   costs at most FlopCounterMode's.
2. Every torchvision weights entry with a published ``_ops``, counted under the conventions of
   benchmarks/torchvision_cases.py (docs/flops.md); entries with the same builder, figure and
   input are counted once. Target: within 0.5 % (to the published digits under 0.1 GMAC).

Run: ``python -m benchmarks.flops`` (``--cost-only`` or ``--models-only`` for one part; each
part writes its own section of RESULTS.md).
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable
from functools import partial

import torch
import torchvision
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.results import machine, write_section
from benchmarks.torchvision_cases import case, distinct_weights
from perfkit.flops import count

COST_HEADING = "FLOP counting cost (issues 4, 14)"
MODELS_HEADING = "FLOP counts against torchvision's published figures (issue 14)"


def _forward(model: torch.nn.Module, x: torch.Tensor) -> Callable[[], object]:
    def run() -> object:
        with torch.no_grad():
            return model(x)

    return run


def _flop_counter_mode(model: torch.nn.Module, x: torch.Tensor) -> Callable[[], object]:
    def run() -> object:
        with FlopCounterMode(display=False) as counter:
            model(x)
        return counter.get_total_flops()

    return run


def _medians(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, tuple[float, float]]:
    """Median (CPU seconds, wall seconds) of each function, run interleaved."""
    for fn in fns.values():
        fn()  # warm-up
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            cpu, wall = time.process_time(), time.perf_counter()
            fn()
            times[name].append((time.process_time() - cpu, time.perf_counter() - wall))
    return {
        name: (statistics.median(c for c, _ in ts), statistics.median(w for _, w in ts))
        for name, ts in times.items()
    }


def cost_rows(repeats: int) -> list[str]:
    tvm = torchvision.models
    rows = [
        "| model | forward (CPU s) | perfkit count (CPU s) | FlopCounterMode (CPU s) "
        "| perfkit / FlopCounterMode, CPU | same, wall | perfkit GMAC | FlopCounterMode GMAC "
        "| torchvision `_ops` GMAC |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, weights in (
        ("resnet50", tvm.ResNet50_Weights.IMAGENET1K_V1),
        ("vit_b_16", tvm.ViT_B_16_Weights.IMAGENET1K_V1),
    ):
        model, x = tvm.get_model(name).eval(), torch.rand(1, 3, 224, 224)
        s = _medians(
            {
                "forward": _forward(model, x),
                "perfkit": partial(count, model, x),
                "torch": _flop_counter_mode(model, x),
            },
            repeats,
        )
        theirs = int(_flop_counter_mode(model, x)()) // 2  # type: ignore[call-overload]
        ours = count(model, x).macs
        rows.append(
            f"| {name} 224x224 | {s['forward'][0]:.3f} | {s['perfkit'][0]:.3f} "
            f"| {s['torch'][0]:.3f} | {s['perfkit'][0] / s['torch'][0]:.2f} "
            f"| {s['perfkit'][1] / s['torch'][1]:.2f} | {ours / 1e9:.3f} | {theirs / 1e9:.3f} "
            f"| {weights.meta['_ops']:.3f} |"
        )
        print(rows[-1], flush=True)
    return rows


def _within(gmacs: float, published: float) -> bool:
    if published < 0.1:
        return round(gmacs, 3) == published
    return abs(gmacs - published) <= 0.005 * published


def model_rows() -> list[str]:
    results: dict[str, list[str]] = {}
    worst = 0.0
    for (name, _), entries in distinct_weights().items():
        c = case(name, entries[0])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gmacs = count(c.model, c.inputs, scope="torchvision").macs / 1e9
        error = (gmacs - c.published_gmacs) / c.published_gmacs
        ok = _within(gmacs, c.published_gmacs)
        worst = max(worst, abs(error)) if c.published_gmacs >= 0.1 else worst
        names = ", ".join(w.name for w in entries)
        row = (
            f"| {name} | {names} | {c.published_gmacs:.3f} | {gmacs:.3f} | {100 * error:+.3f} % "
            f"| {'yes' if ok else '**no**'} |"
        )
        results.setdefault(c.family, []).append(row)
        print(row, flush=True)
    lines = [f"Largest error at or above 0.1 GMAC: {100 * worst:.3f} %.", ""]
    for family, rows in results.items():
        lines += [
            f"**{family}**",
            "",
            "| model | weights | published GMAC | perfkit GMAC | error | within |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
        ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    part = parser.add_mutually_exclusive_group()
    part.add_argument("--cost-only", action="store_true")
    part.add_argument("--models-only", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    header = [
        machine(),
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, CPU, "
        f"{torch.get_num_threads()} threads.",
        "",
    ]
    if not args.models_only:
        body = [
            *header,
            f"Median of {args.repeats} after one warm-up, interleaved. perfkit count = "
            "`perfkit.flops.count(model, x)` (scope full: every formula, gradients off, attention "
            "fast path off); FlopCounterMode = `with FlopCounterMode(): model(x)` (gradients on, "
            "as PyTorch documents it; it counts 0 for CPU attention, hence vit_b_16's lower "
            "figure).",
            "",
            *cost_rows(args.repeats),
        ]
        write_section(COST_HEADING, "\n".join(body))
    if not args.cost_only:
        body = [
            *header,
            "Scope torchvision (`report.macs`), conventions of docs/flops.md; random weights; "
            "classification, segmentation and video on the meta device. One row per builder, "
            "published figure and crop size (the weights listed count the same call).",
            "",
            *model_rows(),
        ]
        write_section(MODELS_HEADING, "\n".join(body))


if __name__ == "__main__":
    main()
