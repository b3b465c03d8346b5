"""The inputs and settings under which torchvision's published ``_ops`` are reproduced.

``case(name, weights)`` builds torchvision model ``name`` with random weights, set up the way
torchvision's figure for ``weights`` was measured (docs/flops.md, "torchvision's published
figures"), and the inputs for one call. Used by the tests and by ``benchmarks/flops.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch

#: Video clips: 16 frames of the weights' crop size.
VIDEO_FRAMES = 16
#: Segmentation: 520x520 (the weights' resize size), with the auxiliary head.
SEGMENTATION_SIZE = 520
#: Optical flow: a pair of 512x512 frames, 12 flow updates (RAFT's default).
FLOW_SIZE = 512
#: Detection: 800x800 images (SSD and SSDlite resize to 300 and 320 themselves).
DETECTION_SIZE = 800
#: R-CNN: proposals that reach the box head (1000 unless listed: the RPN's post-NMS top-n)
#: and detections that reach the mask or keypoint head, per weights - what torchvision's
#: measurement with trained weights happened to pass on.
PROPOSALS = {
    "FasterRCNN_MobileNet_V3_Large_FPN_Weights.COCO_V1": 0,
    "FasterRCNN_MobileNet_V3_Large_320_FPN_Weights.COCO_V1": 0,
}
HEAD_BOXES = {
    "MaskRCNN_ResNet50_FPN_Weights.COCO_V1": 0,
    "MaskRCNN_ResNet50_FPN_V2_Weights.COCO_V1": 100,
    "KeypointRCNN_ResNet50_FPN_Weights.COCO_LEGACY": 0,
    "KeypointRCNN_ResNet50_FPN_Weights.COCO_V1": 1,
}


@dataclass
class Case:
    """A model set up as torchvision measured ``weights``, inputs for one call, the figure."""

    family: str
    name: str
    weights: str
    model: torch.nn.Module
    inputs: Any
    published_gmacs: float


def family_of(name: str) -> str:
    import torchvision.models as tvm

    for family in ("quantization", "detection", "segmentation", "video", "optical_flow"):
        if name in tvm.list_models(module=getattr(tvm, family)):
            return family
    return "classification"


def _crop(weights: Any) -> int:
    crop = weights.transforms.keywords["crop_size"]
    return int(crop[0] if isinstance(crop, (tuple, list)) else crop)


def _rcnn_settings(weights_key: str) -> dict[str, Any]:
    """Every anchor proposed and kept (zero deltas are set after building), and exactly
    ``HEAD_BOXES`` detections passed on to a mask or keypoint head."""
    # An objectness score is at most 1: a threshold of 2 passes no proposal on.
    no_proposals = PROPOSALS.get(weights_key) == 0
    settings: dict[str, Any] = {"rpn_nms_thresh": 1.0, "rpn_score_thresh": 2.0 * no_proposals}
    boxes = HEAD_BOXES.get(weights_key)
    if boxes is not None:
        settings.update(box_nms_thresh=1.0, box_detections_per_img=boxes, box_score_thresh=0.0)
    return settings


def _zero_box_deltas(model: Any) -> None:
    for head in (model.rpn.head.bbox_pred, model.roi_heads.box_predictor.bbox_pred):
        torch.nn.init.zeros_(head.weight)
        torch.nn.init.zeros_(head.bias)


def _build(family: str, name: str, weights: Any) -> tuple[torch.nn.Module, Any]:
    import torchvision.models as tvm

    key = f"{type(weights).__name__}.{weights.name}"
    if family == "classification":
        size = _crop(weights)
        # Vision transformers are built for one image size (SWAG weights: 384, 512, 518).
        sized = {"image_size": size} if name.startswith("vit_") else {}
        return tvm.get_model(name, **sized), torch.rand(1, 3, size, size)
    if family == "quantization":
        model = tvm.get_model(name, quantize=True)
        return model, torch.rand(1, 3, _crop(weights), _crop(weights))
    if family == "segmentation":
        aux = {} if name.startswith("lraspp") else {"aux_loss": True}
        model = tvm.get_model(name, num_classes=21, weights_backbone=None, **aux)
        return model, torch.rand(1, 3, SEGMENTATION_SIZE, SEGMENTATION_SIZE)
    if family == "video":
        size = _crop(weights)
        return tvm.get_model(name), torch.rand(1, 3, VIDEO_FRAMES, size, size)
    if family == "optical_flow":
        frames = torch.rand(1, 3, FLOW_SIZE, FLOW_SIZE), torch.rand(1, 3, FLOW_SIZE, FLOW_SIZE)
        return tvm.get_model(name), frames
    rcnn = "rcnn" in name
    model = tvm.get_model(name, weights_backbone=None, **(_rcnn_settings(key) if rcnn else {}))
    if rcnn:
        _zero_box_deltas(model)
    return model, [torch.rand(3, DETECTION_SIZE, DETECTION_SIZE)]


#: Families whose counts do not depend on values: built on the meta device (no memory, no
#: arithmetic), which gives the same counts as real tensors.
META_FAMILIES = frozenset({"classification", "segmentation", "video"})


def case(name: str, weights: Any, meta: bool = True) -> Case:
    """``name``'s model (eval mode) and inputs as torchvision measured ``weights``."""
    family = family_of(name)
    meta = meta and family in META_FAMILIES
    torch.manual_seed(0)
    try:
        with torch.device("meta") if meta else nullcontext():
            model, inputs = _build(family, name, weights)
    except NotImplementedError:  # a builder that reads values (RegNet's widths): build, move
        model, inputs = _build(family, name, weights)
        model, inputs = model.to("meta"), inputs.to("meta")
    return Case(
        family,
        name,
        f"{type(weights).__name__}.{weights.name}",
        model.eval(),
        inputs,
        float(weights.meta["_ops"]),
    )


def all_weights() -> Iterator[tuple[str, Any]]:
    """(builder name, weights) for every torchvision weights entry with a published ``_ops``."""
    import torchvision.models as tvm

    for name in tvm.list_models():
        for weights in tvm.get_model_weights(name):
            if "_ops" in weights.meta:
                yield name, weights


def distinct_weights() -> dict[tuple[str, str], list[Any]]:
    """The weights of ``all_weights`` grouped by what is counted: (builder name, first weights'
    name) -> every weights entry with the same builder, published figure and crop size."""
    groups: dict[tuple[str, float, str], list[Any]] = {}
    for name, weights in all_weights():
        crop = getattr(weights.transforms, "keywords", {}).get("crop_size")
        groups.setdefault((name, weights.meta["_ops"], repr(crop)), []).append(weights)
    return {(name, entries[0].name): entries for (name, _, _), entries in groups.items()}
