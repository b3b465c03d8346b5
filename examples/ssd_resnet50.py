"""Cambricon's SSD-ResNet50 case (NVIDIA DeepLearningExamples' SSD300 v1.1), measured by perfkit.

The model as NVIDIA builds it: a ResNet-50 cut after conv4_x with that stage's stride removed
(38x38 features at 300x300), five extra blocks to 19, 10, 5, 3 and 1 pixels, 4-6-6-6-4-4 default
boxes per location; torchvision's SSD head, box coder and hard-negative-mining loss.

- ``--mode train``: SGD with momentum 0.9, lr 2.6e-3 per 32 images (scaled with the global
  batch), weight decay 5e-4, the seed's 65 epochs with decay at 43 and 54, AMP optional
  (``--precision amp``); a COCO evaluation after the last epoch. Reports e2e_time, p_whole,
  p_train, p_core, mAP, mem.
- ``--mode evaluation``: inference only (the seed's inference mode) with COCO mAP: p_infer_whole,
  p_infer_core, mAP, mem. Pass the trained model with ``--weights``.

    python -m examples.ssd_resnet50                                 # built-in data, train
    python -m examples.ssd_resnet50 --mode evaluation --data /data/coco --weights ssd.pt
    torchrun --nproc_per_node=4 examples/ssd_resnet50.py --data /data/coco --precision amp \\
        --backbone-weights resnet50-19c8e357.pth
"""

from __future__ import annotations

if __package__ in (None, ""):  # run as a file (python/torchrun examples/...py): find `examples`
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

import perfkit
from examples import common

# NVIDIA's SSD300 recipe, as the seed gives it
RECIPE = common.SGDRecipe(
    lr=2.6e-3, batch=32, weight_decay=5e-4, epochs=65, milestones=(43, 54), warmup_steps=300
)
SSD_SIZE = 300
#: (input channels, bottleneck channels, output channels, stride-2 and padded) of the extra blocks
EXTRA_BLOCKS = ((1024, 256, 512, True), (512, 256, 512, True), (512, 128, 256, True),
                (256, 128, 256, False), (256, 128, 256, False))  # fmt: skip
BACKBONE_URL = "https://download.pytorch.org/models/resnet50-19c8e357.pth"


class SSDResNet50Backbone(nn.Module):
    """NVIDIA's SSD300 ResNet-50 feature extractor: six feature maps (1024, 512, 512, 256, 256,
    256 channels; 38, 19, 10, 5, 3, 1 pixels at 300x300)."""

    def __init__(self, resnet: Any) -> None:
        super().__init__()
        stem = [resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool]
        self.features = nn.Sequential(*stem, resnet.layer1, resnet.layer2, resnet.layer3)
        first: Any = resnet.layer3[0]  # conv4_x keeps the 38x38 resolution
        first.conv1.stride = first.conv2.stride = first.downsample[0].stride = (1, 1)
        self.extra = nn.ModuleList(_extra_block(*spec) for spec in EXTRA_BLOCKS)

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        maps = [self.features(x)]
        for block in self.extra:
            maps.append(block(maps[-1]))
        return OrderedDict((str(i), m) for i, m in enumerate(maps))


def _extra_block(inputs: int, channels: int, outputs: int, strided: bool) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inputs, channels, kernel_size=1, bias=False),
        nn.BatchNorm2d(channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(
            channels,
            outputs,
            kernel_size=3,
            padding=1 if strided else 0,
            stride=2 if strided else 1,
            bias=False,
        ),
        nn.BatchNorm2d(outputs),
        nn.ReLU(inplace=True),
    )


def build_model(args: argparse.Namespace) -> nn.Module:
    """SSD300 with the ResNet-50 backbone, 91 COCO classes (torchvision's convention)."""
    import torchvision
    from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
    from torchvision.models.detection.ssd import SSD

    resnet = torchvision.models.resnet50()
    if args.backbone_weights is not None:
        state = common.load_checkpoint(args.backbone_weights, "--backbone-weights", BACKBONE_URL)
        common.load_into(resnet, state, "--backbone-weights")
    anchors = DefaultBoxGenerator(
        [[2], [2, 3], [2, 3], [2, 3], [2], [2]],
        scales=[0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05],
        steps=[8, 16, 32, 64, 100, 300],
    )
    model = SSD(
        SSDResNet50Backbone(resnet),
        anchors,
        (args.image_size, args.image_size),
        num_classes=91,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    )
    common.load_model_weights(model, args, "a checkpoint of this SSD300-ResNet-50")
    return model


def build_parser() -> argparse.ArgumentParser:
    precisions = sorted({*common.TRAIN_PRECISIONS, *common.INFER_PRECISIONS})
    p = common.parser(__doc__ or "", precisions=precisions, batch_size=32)
    p.add_argument("--mode", choices=("train", "evaluation"), default="train")
    p.add_argument("--lr", type=float, help="default: 2.6e-3 x global batch / 32 (the seed's)")
    return p


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    allowed = common.TRAIN_PRECISIONS if args.mode == "train" else common.INFER_PRECISIONS
    if args.precision not in allowed:
        raise common.ExampleError(
            f"--precision: --mode {args.mode} takes one of {allowed}, got {args.precision!r}"
        )
    if args.image_size not in (None, SSD_SIZE):
        raise common.ExampleError(f"--image-size: SSD300 takes {SSD_SIZE} pixels only")
    common.detection_defaults(args, epochs=RECIPE.epochs)
    args.image_size = SSD_SIZE
    env = common.setup(args)
    model = build_model(args)
    if args.mode == "evaluation":
        return evaluation(args, env, model)
    return train(args, env, model)


def train(args: argparse.Namespace, env: common.Setup, model: nn.Module) -> dict[str, Any]:
    train_loader, _ = common.detection_loader(args, env, "train", train=True)
    val_loader, val_annotations = common.detection_loader(args, env, "val", train=False)
    args.lr = args.lr or RECIPE.scaled_lr(args.batch_size * env.world_size)
    model = common.distribute(model, env)
    optimizer, scheduler = common.detection_optimizer(model, args, RECIPE, train_loader)
    with common.start_run("ssd_resnet50", args, env, mode="train", lr=args.lr) as run:
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
            common.say(env, f"epoch {epoch}: loss {loss:.4f}")
        evaluate(run, "val", model, common.limited(val_loader, args.steps), val_annotations, env)
    return common.finish(run, env)


def evaluation(args: argparse.Namespace, env: common.Setup, model: nn.Module) -> dict[str, Any]:
    val_loader, val_annotations = common.detection_loader(args, env, "val", train=False)
    model = model.to(env.device, env.dtype)
    with common.start_run("ssd_resnet50", args, env, mode="evaluation") as run:
        batches = common.limited(val_loader, args.steps)
        evaluate(run, "infer", model, batches, val_annotations, env)
    return common.finish(run, env)


def evaluate(
    run: perfkit.Run,
    kind: str,
    model: nn.Module,
    batches: Iterable[Any],
    annotations: Path,
    env: common.Setup,
) -> dict[str, float]:
    """A ``kind`` phase ("val" after training, "infer" in evaluation mode) with COCO mAP."""
    model.eval()
    coco = common.COCOEvaluation(annotations)
    with run.phase(kind) as phase, torch.inference_mode():
        for images, targets in phase.iterate(batches):
            with phase.io():
                images, _ = common.to_device(images, [], env.device)
            coco.update(common.detect(model, images, env), targets)
    return coco.finish(run, env)


if __name__ == "__main__":
    common.main_guard(main)
