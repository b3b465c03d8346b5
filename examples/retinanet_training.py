"""FlagPerf's RetinaNet training case, measured by perfkit.

torchvision's retinanet_resnet50_fpn trained with SGD (momentum 0.9, weight decay 1e-4) at the
seed's bs=8 per device and lr=0.04 for the seed's 1x8 global batch of 64, scaled linearly with
the global batch; a COCO evaluation after every epoch. Reports e2e_time, p_whole, p_train,
p_core, mAP and mem as the seed's table does.

    python -m examples.retinanet_training                            # built-in data, 1 epoch
    python -m examples.retinanet_training --data /data/coco --backbone-weights \\
        resnet50-0676ba61.pth
    torchrun --nproc_per_node=8 examples/retinanet_training.py --data /data/coco ...

mAP is COCO AP@[.50:.95] (a fraction). On the built-in data without --weights or
--backbone-weights, a few steps from random weights detect nothing, so the evaluation runs the
trained model with a head fitted to the built-in training images before training (a detection
probe, :mod:`examples.detection_probe`): its mAP shows the evaluation path, not training quality.
"""

from __future__ import annotations

if __package__ in (None, ""):  # run as a file (python/torchrun examples/...py): find `examples`
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import contextlib
import time
from collections.abc import Sequence
from typing import Any

import torch

import perfkit
from examples import common, detection_probe
from examples.data import CocoDetection

# bs=8, lr=0.04 at 1x8 (a global batch of 64); torchvision's RetinaNet epochs and milestones
RECIPE = common.SGDRecipe(
    lr=0.04, batch=64, weight_decay=1e-4, epochs=26, milestones=(16, 22), warmup_steps=1000
)
PROBE_NOTE = (
    "built-in data, no weights: RetinaNet heads fitted to the 32 built-in training images "
    "(a detection probe, {seconds:.1f} s before the first train phase: in e2e_time, not in "
    "p_whole / p_train / p_core); training runs as the seed's, then the evaluation runs the "
    "trained backbone with the fitted heads: mAP shows the evaluation path, not training quality"
)
WEIGHTS_URL = "https://download.pytorch.org/models/retinanet_resnet50_fpn_coco-eeacb38b.pth"


def build_parser() -> argparse.ArgumentParser:
    p = common.parser(__doc__ or "", precisions=common.TRAIN_PRECISIONS, batch_size=8)
    p.add_argument("--lr", type=float, help="default: 0.04 x global batch / 64 (the seed's)")
    return p


def build_model(args: argparse.Namespace) -> torch.nn.Module:
    """retinanet_resnet50_fpn as torchvision builds it (91 COCO classes, P3-P7)."""
    from torchvision.models.detection import RetinaNet
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7

    backbone = common.resnet50_fpn(
        args, returned_layers=[2, 3, 4], extra_blocks=LastLevelP6P7(256, 256)
    )
    model = RetinaNet(backbone, num_classes=91, min_size=args.image_size, max_size=args.max_size)
    common.load_model_weights(model, args, WEIGHTS_URL)
    return model


def fit_probe(
    args: argparse.Namespace, env: common.Setup, model: torch.nn.Module, run: perfkit.Run
) -> torch.nn.Module | None:
    """On the built-in data with no weights given: the detection probe's head, fitted to the
    built-in training images (outside every phase, so out of p_whole, p_train and p_core; in
    e2e_time), logged as ``probe_fit_s`` and said in the output. None otherwise."""
    if args.data is not None or args.weights is not None or args.backbone_weights is not None:
        return None
    start = time.perf_counter()
    head = detection_probe.fit_retinanet_head(
        model, CocoDetection(*common.coco_data(args, env, "train"), train=True)
    )
    seconds = time.perf_counter() - start
    run.log(probe_fit_s=seconds)
    common.say(env, PROBE_NOTE.format(seconds=seconds))
    return head


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    common.detection_defaults(args, epochs=RECIPE.epochs)
    env = common.setup(args)
    train_loader, _ = common.detection_loader(args, env, "train", train=True)
    val_loader, val_annotations = common.detection_loader(args, env, "val", train=False)
    args.lr = args.lr or RECIPE.scaled_lr(args.batch_size * env.world_size)
    model = common.distribute(build_model(args), env)
    optimizer, scheduler = common.detection_optimizer(model, args, RECIPE, train_loader)
    with common.start_run(
        "retinanet", args, env, lr=args.lr, model="retinanet_resnet50_fpn"
    ) as run:
        probe = fit_probe(args, env, model, run)
        for epoch in range(1, args.epochs + 1):
            common.set_epoch(train_loader, epoch)
            model.train()
            losses = common.LossMeans()
            with run.phase("train") as phase:
                for images, targets in phase.iterate(common.limited(train_loader, args.steps)):
                    with phase.io():  # moving the batch to the device counts as IO
                        images, targets = common.to_device(images, targets, env.device)
                    losses.add(common.train_step(model, images, targets, optimizer, scheduler, env))
            loss = losses.means()["loss"]
            run.log(loss=loss)

            model.eval()
            coco = common.COCOEvaluation(val_annotations)
            evaluated = (
                detection_probe.head_swapped(model, probe) if probe else contextlib.nullcontext()
            )
            with evaluated, run.phase("val") as phase, torch.inference_mode():
                for images, targets in phase.iterate(common.limited(val_loader, args.steps)):
                    with phase.io():
                        images, _ = common.to_device(images, [], env.device)
                    coco.update(common.detect(model, images, env), targets)
            stats = coco.finish(run, env)
            common.say(env, f"epoch {epoch}: loss {loss:.4f}, mAP {stats['AP']:.4f}")
    return common.finish(run, env)


if __name__ == "__main__":
    common.main_guard(main)
