"""Scope "torchvision" reproduces torchvision's published ``weights.meta["_ops"]`` (GMACs).

The references are torchvision's own metadata (available offline; the models are built with
random weights since no weights can be downloaded here), under the conventions of
benchmarks/torchvision_cases.py (docs/flops.md). Classification, segmentation and video models
run on the meta device (same counts, no arithmetic); a representative subset runs here, all of
them and a representative of each detection convention in the slow test, and every weights
entry in ``python -m benchmarks.flops`` (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import warnings

import pytest
import torch

from perfkit.flops import count

torchvision = pytest.importorskip("torchvision")
from benchmarks.torchvision_cases import all_weights, case, distinct_weights, family_of  # noqa: E402

WEIGHTS = dict(((name, w.name), w) for name, w in all_weights())


def within_published(macs: int, published_gmacs: float) -> bool:
    """Within 0.5 %, or to the published 3 decimals where their rounding alone exceeds 0.5 %."""
    if published_gmacs < 0.1:
        return round(macs / 1e9, 3) == published_gmacs
    return abs(macs / 1e9 - published_gmacs) <= 0.005 * published_gmacs


def _check(name: str, weights: str) -> None:
    c = case(name, WEIGHTS[name, weights])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's quantization deprecation notices
        report = count(c.model, c.inputs, scope="torchvision")
    assert within_published(report.macs, c.published_gmacs), (report.macs, c.published_gmacs)
    assert report.flops == 2 * report.macs


def test_within_published_rounding_rule() -> None:
    assert within_published(40_400_000, 0.04)  # 0.0404 rounds to 0.040
    assert not within_published(40_600_000, 0.04)  # 0.0406 rounds to 0.041
    assert within_published(4_089_000_000 * 1.004, 4.089)
    assert not within_published(4_089_000_000 * 1.006, 4.089)


FAST = [
    ("resnet50", "IMAGENET1K_V1"),  # 4.089
    ("vit_b_16", "IMAGENET1K_V1"),  # 17.564: was 11.27 (fused attention fast path)
    ("vit_b_16", "IMAGENET1K_SWAG_E2E_V1"),  # 384x384
    ("swin_t", "IMAGENET1K_V1"),
    ("convnext_tiny", "IMAGENET1K_V1"),
    ("efficientnet_b0", "IMAGENET1K_V1"),
    ("mobilenet_v3_small", "IMAGENET1K_V1"),  # 0.057: to the published digits
    ("inception_v3", "IMAGENET1K_V1"),  # 299x299
    ("deeplabv3_mobilenet_v3_large", "COCO_WITH_VOC_LABELS_V1"),  # 520x520, aux head
    ("r3d_18", "KINETICS400_V1"),  # 16 frames of 112x112
    ("quantized_shufflenet_v2_x0_5", "IMAGENET1K_FBGEMM_V1"),  # 0.04, int8 (was 0)
    ("ssd300_vgg16", "COCO_V1"),
]


@pytest.mark.parametrize(("name", "weights"), FAST)
def test_published_figure(name: str, weights: str) -> None:
    _check(name, weights)


# Detection and optical flow run for real (value-dependent operators): in the slow test one per
# convention (0 / 1 / 100 boxes reaching a head, 0 proposals), every one in benchmarks/flops.py.
REAL_REPRESENTATIVES = {
    ("fasterrcnn_mobilenet_v3_large_320_fpn", "COCO_V1"),  # 0 proposals reach the box head
    ("keypointrcnn_resnet50_fpn", "COCO_V1"),  # 1 detection reaches the keypoint head
    ("maskrcnn_resnet50_fpn_v2", "COCO_V1"),  # 100 detections reach the mask head
    ("raft_small", "C_T_V1"),
}
SLOW = sorted(
    key
    for key in distinct_weights()
    if family_of(key[0]) not in ("detection", "optical_flow") or key in REAL_REPRESENTATIVES
)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "weights"), SLOW)
def test_every_published_figure(name: str, weights: str) -> None:
    # one weights entry per builder, figure and crop size (the others count the same call)
    _check(name, weights)


def test_meta_device_counts_as_real_tensors() -> None:
    w = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    real = case("resnet18", w, meta=False)
    meta = case("resnet18", w)
    assert next(meta.model.parameters()).is_meta
    x = torch.rand(1, 3, 64, 64)
    assert count(real.model, x).counts == count(meta.model, x.to("meta")).counts


def test_grouped_convolution_training_flops() -> None:
    # convnext_tiny: 4.456 GMAC forward; its depthwise 7x7 convs were counted ~96x in backward
    # (77.5 GFLOP for forward + backward). Correctly, backward is at most twice the forward.
    c = case("convnext_tiny", WEIGHTS["convnext_tiny", "IMAGENET1K_V1"])
    forward = count(c.model, c.inputs, scope="torchvision").flops
    both = count(c.model.train(), c.inputs, backward=True, scope="torchvision").flops
    assert 2 * forward < both < 3 * forward
