"""Cost of counting FLOPs against one plain forward pass and against fvcore's FlopCountAnalysis.

Models: resnet50 at 224x224 and fasterrcnn_resnet50_fpn at 800x800 (random weights, eval, CPU).
Each variant runs ``--repeats`` times after one warm-up; the median is reported, with the
counted figures next to torchvision's published ``_ops``. Target: counting costs at most 3
forward passes and less than fvcore.
Run: ``python -m benchmarks.flops``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
import torchvision

from benchmarks.results import machine, write_section
from perfkit.flops import count


def _models() -> list[tuple[str, torch.nn.Module, Any, float]]:
    """(name, model, inputs, torchvision's published GMACs)."""
    detection = torchvision.models.detection
    # Zero RPN box deltas and no suppression: 1000 proposals, as in torchvision's figure
    # (see tests/test_flops_torchvision.py).
    rcnn = detection.fasterrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, rpn_nms_thresh=1.0
    )
    torch.nn.init.zeros_(rcnn.rpn.head.bbox_pred.weight)
    torch.nn.init.zeros_(rcnn.rpn.head.bbox_pred.bias)
    return [
        (
            "resnet50 224x224",
            torchvision.models.resnet50().eval(),
            torch.rand(1, 3, 224, 224),
            torchvision.models.ResNet50_Weights.IMAGENET1K_V1.meta["_ops"],
        ),
        (
            "fasterrcnn_resnet50_fpn 800x800",
            rcnn.eval(),
            [torch.rand(3, 800, 800)],
            detection.FasterRCNN_ResNet50_FPN_Weights.COCO_V1.meta["_ops"],
        ),
    ]


def _median_s(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _forward(model: torch.nn.Module, inputs: Any) -> Callable[[], object]:
    def run() -> object:
        with torch.no_grad():
            return model(inputs)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    repeats = parser.parse_args().repeats
    torch.manual_seed(0)
    rows = [
        "| model | forward (s) | perfkit count (s) | x forward | fvcore (s) | x forward "
        "| perfkit GMAC | fvcore GMAC | torchvision `_ops` GMAC | perfkit full GFLOP |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, model, inputs, published in _models():
        forward_s = _median_s(_forward(model, inputs), repeats)
        ours_s = _median_s(partial(count, model, inputs), repeats)
        fv_s = _median_s(
            partial(count, model, inputs, scope="torchvision", backend="fvcore"), repeats
        )
        ours = count(model, inputs, scope="torchvision")
        full = count(model, inputs)
        theirs = count(model, inputs, scope="torchvision", backend="fvcore")
        rows.append(
            f"| {name} | {forward_s:.3f} | {ours_s:.3f} | {ours_s / forward_s:.2f} "
            f"| {fv_s:.3f} | {fv_s / forward_s:.2f} | {ours.macs / 1e9:.3f} "
            f"| {theirs.macs / 1e9:.3f} | {published:.3f} | {full.flops / 1e9:.3f} |"
        )
        print(rows[-1], flush=True)
    body = "\n".join(
        [
            machine(),
            f"torch {torch.__version__}, torchvision {torchvision.__version__}, CPU, "
            f"{torch.get_num_threads()} threads, median of {repeats} after one warm-up.",
            "",
            "perfkit count = `perfkit.flops.count(model, inputs)` (scope full); fvcore"
            " = `count(..., backend='fvcore')`, i.e. "
            "`FlopCountAnalysis(...).by_module_and_operator()` (a torch.jit trace). GMAC columns "
            "are multiply-adds of convolutions and linear layers.",
            "",
            *rows,
        ]
    )
    write_section("FLOP counting (issue 4)", body)


if __name__ == "__main__":
    main()
