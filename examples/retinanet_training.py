"""FlagPerf's RetinaNet training case, measured by perfkit.

torchvision's retinanet_resnet50_fpn trained with SGD (momentum 0.9, weight decay 1e-4) at the
seed's bs=8 per device and lr=0.04 for the seed's 1x8 global batch of 64, scaled linearly with
the global batch; a COCO evaluation after every epoch. Reports e2e_time, p_whole, p_train,
p_core, mAP and mem as the seed's table does.

    python -m examples.retinanet_training                            # built-in data, 1 epoch
    python -m examples.retinanet_training --data /data/coco --backbone-weights \\
        resnet50-0676ba61.pth
    torchrun --nproc_per_node=8 examples/retinanet_training.py --data /data/coco ...

mAP is COCO AP@[.50:.95] (a fraction). On the built-in data a short run gives a low mAP: the
point there is that it is computed through the real evaluation path.
"""

from __future__ import annotations

if __package__ in (None, ""):  # run as a file (python/torchrun examples/...py): find `examples`
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
from collections.abc import Sequence
from typing import Any

import torch

from examples import common

SEED_LR, SEED_GLOBAL_BATCH = 0.04, 64  # bs=8, lr=0.04 at 1x8
SEED_EPOCHS, SEED_MILESTONES = 26, (16, 22)  # torchvision's RetinaNet recipe
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


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    common.detection_defaults(args, epochs=SEED_EPOCHS)
    env = common.setup(args)
    train_loader, _ = common.detection_loader(args, env, "train", train=True)
    val_loader, val_annotations = common.detection_loader(args, env, "val", train=False)
    args.lr = args.lr or SEED_LR * args.batch_size * env.world_size / SEED_GLOBAL_BATCH

    model = common.distribute(build_model(args), env)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=args.lr, momentum=0.9, weight_decay=1e-4)
    steps_per_epoch = min(len(train_loader), args.steps or len(train_loader))
    scheduler = common.step_schedule(
        optimizer,
        steps_per_epoch=steps_per_epoch,
        milestones=common.scaled_milestones(SEED_MILESTONES, SEED_EPOCHS, args.epochs),
        warmup_steps=min(1000, steps_per_epoch * args.epochs),
    )
    with common.start_run(
        "retinanet", args, env, lr=args.lr, model="retinanet_resnet50_fpn"
    ) as run:
        for epoch in range(1, args.epochs + 1):
            common.set_epoch(train_loader, epoch)
            losses = common.train_detection_epoch(
                run, model, common.limited(train_loader, args.steps), optimizer, scheduler, env
            )
            stats = common.evaluate_coco(
                run, model, common.limited(val_loader, args.steps), val_annotations, env
            )
            run.log(mAP=stats["AP"], loss=losses["loss"])
            common.say(env, f"epoch {epoch}: loss {losses['loss']:.4f}, mAP {stats['AP']:.4f}")
    common.report(run, env)
    env.close()
    return run.summary()


if __name__ == "__main__":
    common.main_guard(main)
