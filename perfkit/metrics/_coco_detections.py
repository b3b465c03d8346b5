"""Detections as columns: model outputs (torchvision style, in any box format) and COCO result
dicts, checked and converted to :class:`~perfkit.metrics._cocoeval.Annotations` columns."""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from perfkit.checks import wrong_type, wrong_value
from perfkit.metrics._coco_gt import image_size

if TYPE_CHECKING:
    import torch
    from pycocotools.coco import COCO

    from perfkit.metrics.coco import BoxFormat


def target_image_id(target: Any, where: str) -> int:
    """``target["image_id"]`` (``target`` named ``where``) as an int."""
    if not isinstance(target, Mapping):
        raise wrong_type(where, "a dict with an 'image_id'", target)
    if "image_id" not in target:
        raise wrong_value(where, "a dict with an 'image_id'", target)
    value = target["image_id"]
    if hasattr(value, "numel"):  # a tensor: 0-d or one element, as torchvision's references
        if value.numel() != 1:
            raise ValueError(
                f"Expected argument `{where}['image_id']` to hold one id but got shape "
                f"{tuple(value.shape)}"
            )
        value = value.reshape(-1)[0].item()
    try:
        return operator.index(value)
    except TypeError:
        raise wrong_type(f"{where}['image_id']", "an integer id", value) from None


def locator(counts: Sequence[int], arg: str) -> Callable[[int], str]:
    """Names row ``flat`` of the outputs concatenated along their boxes: outputs[i][arg] row j."""
    ends = np.cumsum(counts)

    def locate(flat: int) -> str:
        image = int(np.searchsorted(ends, flat, side="right"))
        row = flat - (int(ends[image - 1]) if image else 0)
        return f"outputs[{image}]['{arg}'] row {row}"

    return locate


def check_output(out: Any, i: int, geometry: Sequence[str]) -> int:
    """Check the keys, shapes and dtypes of ``outputs[i]``; returns its number of detections."""
    import torch

    if not isinstance(out, Mapping):
        raise wrong_type(f"outputs[{i}]", "a dict of tensors", out)
    missing = [k for k in (*geometry, "scores", "labels") if k not in out]
    if missing:
        raise ValueError(
            f"outputs[{i}] lacks {missing}; expected {', '.join(geometry)}, scores (N,) and "
            "labels (N,)"
        )
    scores = torch.as_tensor(out["scores"])
    if scores.ndim != 1:
        raise ValueError(
            f"Expected argument `outputs[{i}]['scores']` to have shape (N,) but got shape "
            f"{tuple(scores.shape)}"
        )
    n = len(scores)
    for key, shape, text in (("labels", (n,), "(N,)"), ("boxes", (n, 4), "(N, 4)")):
        if key in (*geometry, "labels") and tuple(torch.as_tensor(out[key]).shape) != shape:
            raise ValueError(
                f"Expected argument `outputs[{i}]['{key}']` to have shape {text} with N = {n} as "
                f"in scores but got shape {tuple(torch.as_tensor(out[key]).shape)}"
            )
    labels = torch.as_tensor(out["labels"])
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(
            f"Expected argument `outputs[{i}]['labels']` to hold integer labels but got dtype "
            f"{labels.dtype}"
        )
    return n


EXPECTED_BOXES = {
    "xyxy": "xyxy boxes with x2 >= x1, y2 >= y1",
    "xywh": "xywh boxes with w, h >= 0",
    "cxcywh": "cxcywh boxes with w, h >= 0",
}


def to_xywh(boxes: torch.Tensor, box_format: BoxFormat) -> torch.Tensor:
    """(N, 4) boxes as COCO's xywh, computed in their own dtype (xyxy: torchvision's reference
    ``convert_to_xywh``; cxcywh: the corner is the centre minus half the size)."""
    import torch

    if box_format == "xywh":
        return boxes
    if box_format == "cxcywh":
        return torch.cat([boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, 2:]], dim=1)
    return torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1)


def check_finite_rows(rows: np.ndarray, locate: Callable[[int], str], expected: str) -> None:
    """Rows of finite numbers, else an error naming the first bad row."""
    finite = np.isfinite(rows).all(axis=1)
    if not finite.all():
        first = int(np.flatnonzero(~finite)[0])
        raise ValueError(f"{locate(first)} is NaN or inf; expected {expected}")


def check_boxes(bbox: np.ndarray, locate: Callable[[int], str], expected: str) -> None:
    """Finite xywh boxes with w, h >= 0, else an error naming the first bad row."""
    check_finite_rows(bbox, locate, expected)
    negative = (bbox[:, 2:] < 0).any(axis=1)
    if negative.any():
        first = int(np.flatnonzero(negative)[0])
        raise ValueError(
            f"{locate(first)} has a negative width or height (x, y, w, h = "
            f"{bbox[first].tolist()}); expected {expected}"
        )


def encode_masks(
    outputs: Sequence[Mapping[str, Any]],
    images: np.ndarray,
    counts: Sequence[int],
    coco: COCO,
    threshold: float,
) -> list[dict[str, Any]]:
    """Masks -> RLEs, one pycocotools ``encode`` call per image; float masks are foreground
    above ``threshold``."""
    import torch
    from pycocotools import mask as mask_utils

    rles: list[dict[str, Any]] = []
    for i, (out, image, n) in enumerate(zip(outputs, images.tolist(), counts, strict=True)):
        masks = torch.as_tensor(out["masks"]).detach()
        size = image_size(coco, image)
        if masks.ndim == 4 and masks.shape[1] == 1:
            masks = masks[:, 0]
        if tuple(masks.shape) != (n, *size):
            raise ValueError(
                f"Expected argument `outputs[{i}]['masks']` to have shape (N, 1, H, W) or "
                f"(N, H, W) = ({n}, {size[0]}, {size[1]}) for image {image} but got shape "
                f"{tuple(out['masks'].shape)}"
            )
        if masks.is_floating_point():
            if not bool(torch.isfinite(masks).all()):
                raise ValueError(f"outputs[{i}]['masks'] contains NaN or inf")
            masks = masks > threshold
        if n:
            binary = masks.ne(0).to(torch.uint8).cpu().numpy()
            rles.extend(mask_utils.encode(np.asfortranarray(binary.transpose(1, 2, 0))))
    return rles


def keypoint_area(points: np.ndarray) -> np.ndarray:
    """``loadRes``' area of keypoint results: the extent of all their x and y, (N, 3K) rows."""
    if not len(points):
        return np.zeros(0)
    x, y = points[:, 0::3], points[:, 1::3]
    return (x.max(axis=1) - x.min(axis=1)) * (y.max(axis=1) - y.min(axis=1))


def result_columns(
    records: Sequence[Mapping[str, Any]], keys: Sequence[str]
) -> dict[str, list[Any]]:
    """``[r[key] for r in records]`` for each key; names the first result that lacks one."""
    try:
        return {key: [r[key] for r in records] for key in keys}
    except KeyError:
        for i, r in enumerate(records):
            missing = [key for key in keys if key not in r]
            if missing:
                raise ValueError(f"results[{i}] lacks {missing}") from None
        raise


def int_column(values: list[Any], key: str) -> np.ndarray:
    """``results[i][key]`` as int64, each an integer (a float id is an error, not truncated)."""
    column = np.array(values)
    if column.dtype.kind in "iu" and column.ndim == 1:  # only integers (the common case)
        return column.astype(np.int64)
    for i, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise wrong_type(f"results[{i}]['{key}']", "an integer id", value)
    return np.array(values, np.int64)


def bbox_column(records: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """``records[i]["bbox"]``: (N, 4) float64 xywh, each four finite numbers with w, h >= 0."""
    if not records:
        return np.zeros((0, 4))
    try:
        bbox = np.array([r.get("bbox") for r in records], np.float64).reshape(len(records), -1)
    except (ValueError, TypeError):  # ragged, or not numbers
        bbox = np.zeros((len(records), 0))
    if bbox.shape[1] != 4:
        for i, r in enumerate(records):
            box = r.get("bbox")
            if not (
                isinstance(box, (list, tuple))
                and len(box) == 4
                and all(isinstance(v, (int, float, np.number)) for v in box)
            ):
                raise wrong_value(f"results[{i}]['bbox']", "[x, y, w, h] (four numbers)", box)
    check_boxes(bbox, lambda i: f"results[{i}]['bbox']", "[x, y, w, h] with w, h >= 0")
    return bbox


def keypoint_column(values: list[Any], n_points: int) -> np.ndarray:
    """``results[i]["keypoints"]`` as (N, 3K) float64, each 3K finite numbers (K = ``n_points``)."""
    width = 3 * n_points
    try:
        points = np.array(values, np.float64).reshape(len(values), -1)
    except (ValueError, TypeError):  # ragged, or not numbers
        points = np.zeros((len(values), 0))
    if points.shape[1] != width:
        for i, value in enumerate(values):
            if not (isinstance(value, (list, tuple)) and len(value) == width):
                expected = f"{width} numbers (x, y, v for each of {n_points} keypoints)"
                raise wrong_value(f"results[{i}]['keypoints']", expected, value)
    check_finite_rows(points, lambda i: f"results[{i}]['keypoints']", "finite keypoints")
    return points


def check_rle_sizes(rles: Sequence[Any], image: np.ndarray, coco: COCO) -> None:
    """Each of ``rles`` an RLE dict whose size is its image's [height, width]."""
    images, inverse = np.unique(image, return_inverse=True)
    expected = np.array([image_size(coco, img) for img in images.tolist()], float).reshape(-1, 2)
    try:
        sizes = np.array([rle["size"] for rle in rles])  # numbers only: no "480" strings
        good = (
            sizes.dtype.kind in "iuf"
            and sizes.shape == (len(rles), 2)
            and bool((sizes == expected[inverse]).all())
        )
    except (TypeError, KeyError, IndexError, ValueError):
        good = False
    if good:
        return
    for i, (rle, img) in enumerate(zip(rles, image.tolist(), strict=True)):
        size = image_size(coco, img)
        if not (type(rle) is dict or isinstance(rle, Mapping)) or (
            rle.get("size") != size and list(rle.get("size") or ()) != size
        ):
            want = f"an RLE dict whose size is the image's [height, width] = {size}"
            raise wrong_value(f"results[{i}]['segmentation']", want, rle)


#: pycocotools 2.0.11's ``area`` counts its input in a uint8 under numpy 2: at most 255 per call.
_AREA_CHUNK = 255


def rle_area(rles: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """pycocotools' ``mask.area`` of each RLE, called on at most 255 at a time."""
    from pycocotools import mask as mask_utils

    parts = [
        np.asarray(mask_utils.area(list(rles[i : i + _AREA_CHUNK])), float).reshape(-1)
        for i in range(0, len(rles), _AREA_CHUNK)
    ]
    return np.concatenate(parts) if parts else np.zeros(0)
