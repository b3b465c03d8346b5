"""FlagPerf's ResNet-50 inference case, measured by perfkit.

A validation pass in eager PyTorch (p_val_whole, p_val_core, acc_val), then the same data through
an optimised model - torch.compile (Inductor) by default - (p_infer_whole, p_infer_core,
acc_infer), at fp32, fp16 or bf16; MFU from perfkit's own FLOP count of the model and the peak
table; mem from the device probes; e2e_time from process start, as FlagPerf counts it.

    python -m examples.resnet50_inference                           # built-in data
    python -m examples.resnet50_inference --data /data/imagenet --weights resnet50-0676ba61.pth \\
        --precision fp16 --batch-size 256
    torchrun --nproc_per_node=8 examples/resnet50_inference.py --data /data/imagenet ...

acc is top-1 accuracy (a fraction). On the built-in data without --weights, the model is
ResNet-50 with random convolution weights and a classifier fitted to the set's training images
(a linear probe, :func:`examples.data.classification_probe`): the accuracy is that of a model
that learnt the built-in classes, not an ImageNet accuracy.
"""

from __future__ import annotations

if __package__ in (None, ""):  # run as a file (python/torchrun examples/...py): find `examples`
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

import perfkit
from examples import common
from examples.data import (
    classification_probe,
    classification_transform,
    imagenet_val,
    make_classification_dataset,
    probe_path,
)

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
PROBE_NOTE = (
    "built-in data, no --weights: ResNet-50 with random convolution weights and its classifier "
    "fitted to 32 generated training images (a linear probe, made once beside the data); its "
    "accuracy on the 64 validation images shows the metric on a model that learnt these "
    "classes, not ImageNet accuracy"
)


def build_parser() -> argparse.ArgumentParser:
    p = common.parser(__doc__ or "", precisions=common.INFER_PRECISIONS, batch_size=256)
    p.add_argument(
        "--backend",
        choices=("compile", "eager"),
        default="compile",
        help="the optimised inference pass: torch.compile, or eager (a baseline)",
    )
    p.add_argument("--compile-mode", choices=COMPILE_MODES, default="default")
    p.add_argument(
        "--mfu-convention",
        choices=("perfkit", "flagperf"),
        default="perfkit",
        help="perfkit: 2 FLOPs per multiply-add; flagperf: 1 (FlagPerf's published MFU)",
    )
    return p


def classify(
    run: perfkit.Run,
    kind: str,
    model: Callable[[torch.Tensor], torch.Tensor],
    batches: Iterable[Any],
    env: common.Setup,
) -> dict[str, float]:
    """One ``kind`` phase of classification; top-1 / top-5 accuracy gathered over ranks.

    The host-to-device copy is part of the compute window, as FlagPerf's inference cases count
    it; only the wait for the loader is IO.
    """
    top = perfkit.metrics.TopK((1, 5))
    with run.phase(kind) as phase, torch.inference_mode():
        for images, labels in phase.iterate(batches):
            images = images.to(env.device, env.dtype, non_blocking=True)
            top.update(model(images), labels.to(env.device, non_blocking=True))
    return top.compute()


def optimise(
    model: torch.nn.Module, args: argparse.Namespace, env: common.Setup, batch_sizes: Sequence[int]
) -> tuple[Callable[[torch.Tensor], torch.Tensor], float]:
    """The inference model and the seconds spent building it: torch.compile with static shapes,
    compiled and warmed up for every batch size the pass will meet, outside the timed phases."""
    if args.backend == "eager":
        return model, 0.0
    start = time.perf_counter()
    compiled = torch.compile(model, mode=args.compile_mode, dynamic=False)
    size = args.image_size
    try:
        with torch.inference_mode():
            for batch in batch_sizes:
                compiled(torch.zeros(batch, 3, size, size, device=env.device, dtype=env.dtype))
    except Exception as err:  # the compiler's own failure, with the way out
        raise common.ExampleError(
            f"--backend compile: torch.compile failed on {env.device} ({type(err).__name__}: "
            f"{err}); Inductor needs a C++ compiler on the CPU and Triton on GPUs - use "
            "--backend eager to measure without it"
        ) from err
    if env.device.type == "cuda":
        torch.cuda.synchronize(env.device)
    return compiled, time.perf_counter() - start


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    args.image_size = args.image_size or 224
    args.epochs = 1
    env = common.setup(args)
    import torchvision

    if args.data is not None:
        folder = imagenet_val(args.data)
    else:
        root = args.out_dir / "data" / "imagefolder-builtin"
        if env.rank == 0:
            make_classification_dataset(root)
            if args.weights is None:
                classification_probe(root, args.image_size)
        common.barrier(env)
        folder = root / "val"
        if args.weights is None:
            args.weights = probe_path(root, args.image_size)
            common.say(env, PROBE_NOTE)
    dataset = torchvision.datasets.ImageFolder(folder, classification_transform(args.image_size))
    loader = common.loader(dataset, args, env, shuffle=False)

    model = torchvision.models.resnet50()
    common.load_model_weights(model, args, common.RESNET50_URL)
    model.eval()
    sample = torch.zeros(1, 3, args.image_size, args.image_size)
    flops_per_image = perfkit.flops.count(model, sample).flops
    model.to(env.device, env.dtype)

    shard = len(loader.sampler)  # type: ignore[arg-type]
    batch_sizes = sorted({min(args.batch_size, shard), shard % args.batch_size} - {0})
    with common.start_run(
        "resnet50_inference",
        args,
        env,
        backend=args.backend,
        compile_mode=args.compile_mode,
        flops_per_image=flops_per_image,
    ) as run:
        run.set_flops(
            flops_per_image,
            dtype=args.precision,
            mfu_convention=args.mfu_convention,
            peak_flops=args.peak_flops,
        )
        val = classify(run, "val", model, common.limited(loader, args.steps), env)
        optimised, build_s = optimise(model, args, env, batch_sizes)
        infer = classify(run, "infer", optimised, common.limited(loader, args.steps), env)
        run.log(
            acc_val=val["top1"],
            acc5_val=val["top5"],
            acc_infer=infer["top1"],
            acc5_infer=infer["top5"],
            build_s=build_s,
        )
    return common.finish(run, env)


if __name__ == "__main__":
    common.main_guard(main)
