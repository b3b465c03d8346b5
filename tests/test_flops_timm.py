"""perfkit.flops.count reproduces timm's published GMACs (``infer_gmacs`` of
``results/benchmark-infer-amp-nchw-pt240-cu124-rtx4090.csv``, 224 x 224, two decimals).

timm measures with fvcore's ``FlopCountAnalysis`` and its default handles, so its figure is, per
image: the multiply-adds of convolutions and matrix products (perfkit's ``report.macs``,
attention's Q·Kᵀ and P·V included) plus fvcore's per-element terms for normalisation: inference
batch norm 2 per element (perfkit's full-scope batch-norm FLOPs, the same rule) and layer / group
norm with an affine 5 per element (perfkit counts 8: its FLOPs x 5/8). fvcore's other
per-element terms (adaptive average pooling, upsampling) are under 0.0001 GMAC here. CaiT and PiT
expand a class-token parameter into a submodule, which crashed the inference count before.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from perfkit.flops import count

timm = pytest.importorskip("timm")

#: timm's published infer_gmacs at 224 x 224.
PUBLISHED = {
    "cait_xxs24_224": 2.53,
    "pit_ti_224": 0.70,
    "resnet18": 1.82,
    "resnet50": 4.11,
    "densenet121": 2.87,
    "efficientnet_b0": 0.40,
    "mobilenetv3_large_100": 0.23,
    "levit_128": 0.41,
    "deit_tiny_patch16_224": 1.26,
    "vit_small_patch16_224": 4.61,
    "convnext_tiny": 4.47,
    "swin_tiny_patch4_window7_224": 4.51,
    "mixer_b16_224": 12.62,
    "vgg11": 7.61,
}
FAST = ("cait_xxs24_224", "pit_ti_224")  # the crash cases; the rest run with the slow tests


def fvcore_gmacs(name: str) -> float:
    """GMACs of one 224 x 224 image in fvcore's convention (module docstring)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # timm's deprecation notices
        model = timm.create_model(name, pretrained=False).eval()
    report = count(model, torch.randn(1, 3, 224, 224), scope="full")
    by_op = report.by_operator().set_index("operator")["flops"].to_dict()
    batch_norm = sum(n for op, n in by_op.items() if "batch_norm" in op)
    affine_norm = sum(n for op, n in by_op.items() if "layer_norm" in op or "group_norm" in op)
    return (report.macs + batch_norm + affine_norm * 5 / 8) / 1e9


@pytest.mark.parametrize(
    "name",
    [n if n in FAST else pytest.param(n, marks=pytest.mark.slow) for n in PUBLISHED],
)
def test_published_gmacs(name: str) -> None:
    assert round(fvcore_gmacs(name), 2) == PUBLISHED[name]
