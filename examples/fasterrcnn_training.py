"""MindSpore's Faster R-CNN case on torchvision's fasterrcnn_resnet50_fpn, measured by perfkit.

Training (SGD, momentum 0.9, weight decay 1e-4, the seed's batch of 2 per device and 12 epochs,
lr 0.02 per 16 images as torchvision's recipe) prints one loss line per epoch in the seed's
form (rpn_loss = rpn_cls_loss + rpn_reg_loss, rcnn_loss = rcnn_cls_loss + rcnn_reg_loss) and the
speed in ms/step; the evaluation after training (or alone, ``--mode evaluation --weights ...``)
prints pycocotools' 12-line COCO summary. The run's table has e2e_time, p_whole, p_train,
p_core, mAP and mem.

    python -m examples.fasterrcnn_training                           # built-in data
    python -m examples.fasterrcnn_training --data /data/coco --backbone-weights \\
        resnet50-0676ba61.pth
    torchrun --nproc_per_node=8 examples/fasterrcnn_training.py --data /data/coco ...
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

import perfkit
from examples import common

# the seed's 12 epochs at bs=2; torchvision's lr of 0.02 for 16 images and its warm-up
RECIPE = common.SGDRecipe(
    lr=0.02, batch=16, weight_decay=1e-4, epochs=12, milestones=(8, 11), warmup_steps=1000
)
WEIGHTS_URL = "https://download.pytorch.org/models/fasterrcnn_resnet50_fpn_coco-258fb6c6.pth"
#: the seed's loss names and torchvision's
LOSS_NAMES = {
    "rpn_cls_loss": "loss_objectness",
    "rpn_reg_loss": "loss_rpn_box_reg",
    "rcnn_cls_loss": "loss_classifier",
    "rcnn_reg_loss": "loss_box_reg",
}


def build_parser() -> argparse.ArgumentParser:
    p = common.parser(__doc__ or "", precisions=common.TRAIN_PRECISIONS, batch_size=2)
    p.add_argument("--mode", choices=("train", "evaluation"), default="train")
    p.add_argument("--lr", type=float, help="default: 0.02 x global batch / 16")
    return p


def build_model(args: argparse.Namespace) -> torch.nn.Module:
    """fasterrcnn_resnet50_fpn as torchvision builds it (91 COCO classes)."""
    from torchvision.models.detection import FasterRCNN

    model = FasterRCNN(
        common.resnet50_fpn(args), num_classes=91, min_size=args.image_size, max_size=args.max_size
    )
    common.load_model_weights(model, args, WEIGHTS_URL)
    return model


def loss_line(epoch: int, steps: int, losses: dict[str, float]) -> str:
    """One epoch's losses as the seed prints them."""
    values = {seed: losses[torchvision] for seed, torchvision in LOSS_NAMES.items()}
    values = {
        "rpn_loss": values["rpn_cls_loss"] + values["rpn_reg_loss"],
        "rcnn_loss": values["rcnn_cls_loss"] + values["rcnn_reg_loss"],
        **values,
        "total_loss": losses["loss"],
    }
    return f"epoch: {epoch} step: {steps}, " + ", ".join(f"{k}: {v:.5f}" for k, v in values.items())


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    common.detection_defaults(args, epochs=RECIPE.epochs)
    env = common.setup(args)
    val_loader, val_annotations = common.detection_loader(args, env, "val", train=False)
    model = common.distribute(build_model(args), env)
    if args.mode == "train":
        args.lr = args.lr or RECIPE.scaled_lr(args.batch_size * env.world_size)
    with common.start_run("fasterrcnn", args, env, mode=args.mode, lr=args.lr) as run:
        if args.mode == "train":
            train(run, args, env, model)
        model.eval()
        coco = common.COCOEvaluation(val_annotations)
        with run.phase("val") as phase, torch.inference_mode():
            for images, targets in phase.iterate(common.limited(val_loader, args.steps)):
                with phase.io():
                    images, _ = common.to_device(images, [], env.device)
                coco.update(common.detect(model, images, env), targets)
        coco.finish(run, env)
    return common.finish(run, env)


def train(
    run: perfkit.Run, args: argparse.Namespace, env: common.Setup, model: torch.nn.Module
) -> None:
    """``args.epochs`` training phases, each followed by the seed's loss and speed lines."""
    train_loader, _ = common.detection_loader(args, env, "train", train=True)
    optimizer, scheduler = common.detection_optimizer(model, args, RECIPE, train_loader)
    for epoch in range(1, args.epochs + 1):
        common.set_epoch(train_loader, epoch)
        model.train()
        losses = common.LossMeans()
        with run.phase("train") as phase:
            for images, targets in phase.iterate(common.limited(train_loader, args.steps)):
                with phase.io():  # moving the batch to the device counts as IO
                    images, targets = common.to_device(images, targets, env.device)
                losses.add(common.train_step(model, images, targets, optimizer, scheduler, env))
        means = losses.means()
        run.log(loss=means["loss"])
        common.say(env, loss_line(epoch, phase.steps, means))
        common.say(env, f"speed: {1000 * phase.wall_s / max(phase.steps, 1):.2f} ms/step")


if __name__ == "__main__":
    common.main_guard(main)
