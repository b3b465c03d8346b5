"""The evaluation's parameters (pycocotools' ``Params``) from COCOEvaluator's arguments, checked."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from perfkit.checks import wrong_type, wrong_value
from perfkit.metrics import _cocoeval
from perfkit.metrics._cocoeval import Params

if TYPE_CHECKING:
    from pycocotools.coco import COCO


def evaluation_params(
    iou_thresholds: Sequence[float] | None,
    max_detections: Sequence[int] | None,
    area_ranges: Mapping[str, tuple[float, float]] | None,
    recall_thresholds: Sequence[float] | None = None,
    keypoints: bool = False,
) -> Params:
    """Checked evaluation parameters (pycocotools' ``Params``; ``setKpParams``' defaults for
    keypoints)."""
    default = _cocoeval.KP_PARAMS if keypoints else _cocoeval.DEFAULT_PARAMS
    thrs = default.iou_thrs if iou_thresholds is None else np.asarray(iou_thresholds, float)
    if thrs.ndim != 1 or not len(thrs) or not ((thrs >= 0) & (thrs <= 1)).all():
        raise ValueError(
            f"Expected argument `iou_thresholds` to be a non-empty sequence of floats in [0, 1] "
            f"but got {iou_thresholds!r}"
        )
    rec = default.rec_thrs if recall_thresholds is None else np.asarray(recall_thresholds, float)
    if (
        rec.ndim != 1
        or not len(rec)
        or not ((rec >= 0) & (rec <= 1)).all()
        or (np.diff(rec) < 0).any()
    ):
        raise ValueError(
            "Expected argument `recall_thresholds` to be a non-empty ascending sequence of floats "
            f"in [0, 1] but got {recall_thresholds!r}"
        )
    dets = default.max_dets if max_detections is None else tuple(max_detections)
    expected = "a non-empty sequence of positive ints"
    if any(isinstance(m, bool) or not isinstance(m, int) for m in dets):
        raise wrong_type("max_detections", expected, max_detections)
    if not dets or min(dets) < 1:
        raise wrong_value("max_detections", expected, max_detections)
    if len(set(dets)) != len(dets):
        raise ValueError(
            f"Expected argument `max_detections` to be without repeats but got {max_detections!r}"
        )
    dets = tuple(sorted(dets))  # COCOeval.evaluate sorts maxDets: stats follow the sorted order
    if area_ranges is None:
        return Params(thrs, dets, default.area_rng, default.area_lbl, rec, keypoints)
    rng = np.array([tuple(v) for v in area_ranges.values()], float).reshape(-1, 2)
    if "all" not in area_ranges or not (rng[:, 0] <= rng[:, 1]).all():
        raise ValueError(
            "Expected argument `area_ranges` to map labels, including 'all', to (lo, hi) "
            f"with lo <= hi but got {area_ranges!r}"
        )
    return Params(thrs, dets, rng, tuple(area_ranges), rec, keypoints)


def oks_sigmas(coco: COCO, sigmas: Sequence[float] | None) -> np.ndarray:
    """Checked OKS sigmas, one per keypoint of every ground-truth annotation that has any."""
    values = _cocoeval.KP_SIGMAS if sigmas is None else np.asarray(sigmas, float)
    if values.ndim != 1 or not len(values) or not (values > 0).all():
        raise ValueError(
            "Expected argument `keypoint_sigmas` to be a non-empty sequence of positive floats "
            f"but got {sigmas!r}"
        )
    for a in coco.dataset.get("annotations", []):
        if "keypoints" in a and len(a["keypoints"]) != 3 * len(values):
            raise ValueError(
                f"gt: annotation {a['id']} has {len(a['keypoints'])} keypoint values; expected "
                f"3 x {len(values)} (x, y, v per keypoint, one per sigma"
                + (
                    ", COCO's 17 person keypoints: pass keypoint_sigmas for others)"
                    if sigmas is None
                    else ")"
                )
            )
    return values
