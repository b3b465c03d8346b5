"""A detection probe: a RetinaNet head fitted to the built-in COCO set (the counterpart of
:func:`examples.data.classification_probe`).

A RetinaNet trained for a few steps from random weights detects nothing (mAP 0). To show the
evaluation path on a model that does detect the built-in objects, the probe copies the model's
head, sets the copy's two convolution towers to pass their input through (ReLU of the FPN
features) and fits its last layers by ridge regression on the built-in training images, through
the model's own transform, backbone and anchors:

- ``cls_logits``: 0/1 targets of each anchor for each built-in category, the anchors matched as
  the model's own ``proposal_matcher`` matches them; the other categories never fire;
- ``bbox_reg``: the model's own ``box_coder`` encoding of the matched ground truth, on the
  positive anchors.

:func:`head_swapped` puts the fitted copy in place of the model's own head for an evaluation;
the model's own head and its training are left alone. Its mAP shows the evaluation path, not
training quality.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any

import torch

from examples.data import DETECTION_CATEGORIES, CocoDetection

#: Ridge penalties (per sample, on standardised features) of the class and box fits.
_CLASS_RIDGE = 1e-2
_BOX_RIDGE = 1.0
#: A fitted class score p (about 0 or 1) becomes the logit SCALE * (p - SHIFT): below SHIFT the
#: detection stays under RetinaNet's 0.05 score threshold.
_LOGIT_SCALE = 20.0
_LOGIT_SHIFT = 0.2
_NEVER = -20.0  # the logit of the categories the built-in set has not


class Ridge:
    """Ridge regression of targets ``y`` on features ``x`` from running moments (float64), so
    that memory stays (features x features) however many samples are added."""

    def __init__(self) -> None:
        self.count = 0
        self.sums: dict[str, torch.Tensor] = {}

    def add(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Samples ``x`` (n, features) with targets ``y`` (n, outputs)."""
        x, y = x.double(), y.double()
        moments = {"x": x.sum(0), "y": y.sum(0), "xx": x.T @ x, "xy": x.T @ y}
        for name, value in moments.items():
            self.sums[name] = self.sums[name] + value if name in self.sums else value
        self.count += len(x)

    def solve(self, ridge: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight (outputs, features), bias (outputs,)) minimising the mean squared error plus
        ``ridge`` x the squared weights of the standardised features (the bias is free)."""
        n = max(self.count, 1)
        mean, y_mean = self.sums["x"] / n, self.sums["y"] / n
        covariance = self.sums["xx"] / n - torch.outer(mean, mean)
        std = covariance.diagonal().clamp(min=0).sqrt() + 1e-6
        cross = (self.sums["xy"] / n - torch.outer(mean, y_mean)) / std[:, None]
        penalty = ridge * torch.eye(len(mean), dtype=mean.dtype, device=mean.device)
        solution = torch.linalg.solve(covariance / torch.outer(std, std) + penalty, cross)
        weight = (solution / std[:, None]).T  # folded: w . (x - mean) / std + b
        return weight, y_mean - weight @ mean


def fit_retinanet_head(model: torch.nn.Module, dataset: CocoDetection) -> torch.nn.Module:
    """A copy of ``model``'s head (a torchvision RetinaNet's, or of one in
    DistributedDataParallel) fitted as the module docstring says on ``dataset`` (the built-in
    training images), through ``model``'s transform, backbone, anchors, matcher and box
    coder; ``model`` is left as it was (in eval mode)."""
    from torchvision.ops import box_iou

    retinanet: Any = getattr(model, "module", model).eval()  # torchvision types its parts loosely
    device = next(retinanet.parameters()).device
    head = copy.deepcopy(retinanet.head)
    classes, boxes = head.classification_head, head.regression_head
    anchors_per_place = classes.num_anchors
    category_ids = [category_id for category_id, *_ in DETECTION_CATEGORIES]
    with torch.no_grad():
        for tower in (classes.conv, boxes.conv):  # each block becomes ReLU(input)
            for block in tower:
                conv = block[0]
                conv.weight.zero_()
                conv.bias.zero_()
                centre = (conv.kernel_size[0] // 2, conv.kernel_size[1] // 2)
                conv.weight[:, :, centre[0], centre[1]] = torch.eye(conv.out_channels)
    class_fit, box_fit = Ridge(), Ridge()
    with torch.inference_mode():
        for index in range(len(dataset)):
            image, target = dataset[index]
            if len(target["boxes"]) == 0:
                continue
            target = {"boxes": target["boxes"].to(device), "labels": target["labels"].to(device)}
            images, (target,) = retinanet.transform([image.to(device)], [target])
            levels = list(retinanet.backbone(images.tensors).values())
            anchors = retinanet.anchor_generator(images, levels)[0]
            matched = retinanet.proposal_matcher(box_iou(target["boxes"], anchors))
            start = 0
            for level in levels:
                places = level.shape[-2] * level.shape[-1]
                end = start + places * anchors_per_place
                match = matched[start:end].view(places, anchors_per_place)
                positive = match >= 0
                labels = target["labels"][match.clamp(min=0)]
                hits = [positive & (labels == category_id) for category_id in category_ids]
                # both towers' output: ReLU(level), (places, channels)
                features = level[0].flatten(1).T.relu()
                class_fit.add(features, torch.stack(hits, -1).reshape(places, -1))
                place, anchor = positive.nonzero(as_tuple=True)
                if len(place):
                    gt = target["boxes"][match[place, anchor]]
                    encoded = retinanet.box_coder.encode_single(
                        gt, anchors[start:end][place * anchors_per_place + anchor]
                    )
                    which = torch.nn.functional.one_hot(anchor, anchors_per_place)
                    box_fit.add(torch.cat([features[place], which], 1), encoded)
                start = end
    _set_class_logits(
        classes.cls_logits, *class_fit.solve(_CLASS_RIDGE), category_ids, classes.num_classes
    )
    _set_box_regression(boxes.bbox_reg, *box_fit.solve(_BOX_RIDGE), anchors_per_place)
    return head


@contextlib.contextmanager
def head_swapped(model: torch.nn.Module, head: torch.nn.Module) -> Iterator[None]:
    """``model`` (a RetinaNet, or one in DistributedDataParallel) with ``head`` in place of its
    own inside the block; its own head (trained or not, untouched) back after it."""
    model = getattr(model, "module", model)
    own, model.head = model.head, head
    try:
        yield
    finally:
        model.head = own


def _set_class_logits(
    layer: torch.nn.Conv2d,
    weight: torch.Tensor,
    bias: torch.Tensor,
    category_ids: list[int],
    classes_per_anchor: int,
) -> None:
    """Write the fit (outputs anchor x category) into the 1x1 centre of ``cls_logits``, whose
    output channels are anchor x class."""
    centre = (layer.kernel_size[0] // 2, layer.kernel_size[1] // 2)
    assert layer.bias is not None  # RetinaNet's convolutions have biases
    with torch.no_grad():
        layer.weight.zero_()
        layer.bias.fill_(_NEVER)
        for output in range(len(bias)):
            anchor, category = divmod(output, len(category_ids))
            channel = anchor * classes_per_anchor + category_ids[category]
            layer.weight[channel, :, centre[0], centre[1]] = _LOGIT_SCALE * weight[output]
            layer.bias[channel] = _LOGIT_SCALE * (bias[output] - _LOGIT_SHIFT)


def _set_box_regression(
    layer: torch.nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor, anchors: int
) -> None:
    """Write the box fit (features, then one column per anchor) into the 1x1 centre of
    ``bbox_reg``, whose output channels are anchor x 4 box deltas."""
    centre = (layer.kernel_size[0] // 2, layer.kernel_size[1] // 2)
    channels = layer.in_channels
    assert layer.bias is not None  # RetinaNet's convolutions have biases
    with torch.no_grad():
        layer.weight.zero_()
        for anchor in range(anchors):
            rows = slice(4 * anchor, 4 * anchor + 4)
            layer.weight[rows, :, centre[0], centre[1]] = weight[:, :channels]
            layer.bias[rows] = bias + weight[:, channels + anchor]
