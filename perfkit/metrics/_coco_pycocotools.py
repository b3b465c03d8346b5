"""The ``"pycocotools"`` backend: the detections evaluated by pycocotools' ``COCOeval`` itself."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from perfkit.metrics._coco_gt import quiet
from perfkit.metrics._cocoeval import Annotations, Params

if TYPE_CHECKING:
    from pycocotools.coco import COCO

    from perfkit.metrics.coco import IouType


def evaluate(
    gt: COCO,
    image_ids: np.ndarray,
    dets: Annotations,
    iou_type: IouType,
    use_cats: bool,
    p: Params,
    sigmas: np.ndarray | None,
    ious: dict[tuple[int, int], np.ndarray],
    progress: Callable[[int], Any],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``COCOeval.evaluate(); accumulate()`` of ``dets`` on the images ``image_ids`` of ``gt``
    -> ``eval``'s precision, recall and scores; ``ious`` receives ``COCOeval.ious`` (the
    non-empty matrices); ``progress(1)`` after each of the two steps."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    coco_gt = with_iscrowd(gt)
    with quiet():
        if len(dets):
            coco_dt = coco_gt.loadRes(_result_dicts(dets, iou_type))
            # each update's area rule (a segm result's box area when it came with a box,
            # as loadRes takes it) holds for its rows, whatever the first row of all holds
            for ann, area in zip(coco_dt.dataset["annotations"], dets.area.tolist(), strict=True):
                ann["area"] = area
        else:  # loadRes refuses an empty list
            coco_dt = COCO()
            coco_dt.dataset = {"images": coco_gt.dataset["images"], "annotations": []}
            coco_dt.createIndex()
        evaluator = COCOeval(coco_gt, coco_dt, iou_type)
        evaluator.params.imgIds = image_ids.tolist()
        evaluator.params.useCats = int(use_cats)
        evaluator.params.iouThrs = p.iou_thrs
        evaluator.params.maxDets = list(p.max_dets)
        evaluator.params.areaRng = p.area_rng.tolist()
        evaluator.params.areaRngLbl = list(p.area_lbl)
        evaluator.params.recThrs = p.rec_thrs
        if sigmas is not None:
            evaluator.params.kpt_oks_sigmas = sigmas
        evaluator.evaluate()
        ious.update({key: m for key, m in evaluator.ious.items() if len(m)})
        progress(1)
        evaluator.accumulate()
        progress(1)
    return evaluator.eval["precision"], evaluator.eval["recall"], evaluator.eval["scores"]


def with_iscrowd(coco: COCO) -> COCO:
    """``coco``, or a copy whose annotations without ``iscrowd`` have ``iscrowd: 0`` (COCOeval
    reads the key; the user's object is left unchanged)."""
    from pycocotools.coco import COCO

    anns = coco.dataset.get("annotations", [])
    if all("iscrowd" in a for a in anns):
        return coco
    patched = COCO()
    patched.dataset = {
        **coco.dataset,
        "annotations": [a if "iscrowd" in a else {**a, "iscrowd": 0} for a in anns],
    }
    with quiet():
        patched.createIndex()
    return patched


def _result_dicts(dets: Annotations, iou_type: IouType) -> list[dict[str, Any]]:
    """COCO result dicts of ``iou_type`` for pycocotools' ``loadRes``, one Python dict per
    detection, in the order of ``dets`` (``loadRes`` numbers them so)."""
    assert dets.score is not None
    columns: dict[str, Sequence[Any]] = {
        "image_id": dets.image.tolist(),
        "category_id": dets.category.tolist(),
        "score": dets.score.tolist(),
    }
    if iou_type == "segm":
        columns["segmentation"] = dets.rles  # type: ignore[assignment]
    elif iou_type == "keypoints":
        assert dets.keypoints is not None
        columns["keypoints"] = dets.keypoints.tolist()
    else:
        assert dets.bbox is not None
        columns["bbox"] = dets.bbox.tolist()
    keys = list(columns)
    return [dict(zip(keys, row, strict=True)) for row in zip(*columns.values(), strict=True)]
