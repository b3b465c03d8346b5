"""Scope "torchvision" reproduces torchvision's published ``weights.meta["_ops"]`` (GMACs).

The references are torchvision's own metadata (available offline; the models are built with
random weights since no weights can be downloaded here).
"""

from __future__ import annotations

import pytest
import torch

from perfkit.flops import count

torchvision = pytest.importorskip("torchvision")
detection = torchvision.models.detection


def _check(model: torch.nn.Module, inputs: object, weights: object) -> None:
    published = weights.meta["_ops"] * 1e9  # type: ignore[attr-defined]
    report = count(model.eval(), inputs, scope="torchvision")  # type: ignore[arg-type]
    assert report.macs == pytest.approx(published, rel=0.005)
    assert report.flops == 2 * report.macs
    full = count(model, inputs)  # type: ignore[arg-type]
    assert full.macs == report.macs and full.flops > report.flops  # + norms, activations, ...


def test_resnet50() -> None:
    # 4.089 GMACs: convolutions 4.0871e9 + fc 2048*1000 = 2.048e6
    _check(
        torchvision.models.resnet50(),
        torch.rand(1, 3, 224, 224),
        torchvision.models.ResNet50_Weights.IMAGENET1K_V1,
    )


def test_ssd300_vgg16() -> None:
    _check(
        detection.ssd300_vgg16(weights=None, weights_backbone=None),
        [torch.rand(3, 300, 300)],
        detection.SSD300_VGG16_Weights.COCO_V1,
    )


@pytest.mark.slow
def test_retinanet_resnet50_fpn() -> None:
    _check(
        detection.retinanet_resnet50_fpn(weights=None, weights_backbone=None),
        [torch.rand(3, 800, 800)],
        detection.RetinaNet_ResNet50_FPN_Weights.COCO_V1,
    )


@pytest.mark.slow
def test_fasterrcnn_resnet50_fpn() -> None:
    # torchvision's figure has 1000 proposals reaching the box head (trained weights). With
    # random weights the RPN's boxes are degenerate and NMS drops most of them, so the RPN is
    # made to propose its anchors (zero box deltas) and suppress nothing: 1000 proposals.
    # Box head per proposal: 256*7*7*1024 + 1024*1024 + 1024*91 + 1024*364 = 14.36e6 MACs,
    # so the head is 14.36 of the published 134.38 GMACs.
    model = detection.fasterrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, rpn_nms_thresh=1.0
    )
    torch.nn.init.zeros_(model.rpn.head.bbox_pred.weight)
    torch.nn.init.zeros_(model.rpn.head.bbox_pred.bias)
    _check(model, [torch.rand(3, 800, 800)], detection.FasterRCNN_ResNet50_FPN_Weights.COCO_V1)
