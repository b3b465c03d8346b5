"""COCOEvaluator on inputs other projects wrote for their own test suites.

torchmetrics' ``tests/unittests/detection/test_map.py`` (``_inputs``: four COCO images' boxes, its
box-format case with the IoUs it expects, empty predictions and ground truth) and mmdetection's
``tests/test_evaluation/test_metrics/test_coco_metric.py`` (a one-image dataset whose detections
are perfect: every stat 1.0, per class too; proposal recall at 2 and 4). The facts are carried
over and the code is written here; expected numbers are the peer's, or pycocotools' run in the
test on the same inputs.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from perfkit.metrics import COCOEvaluator
from tests.test_metrics_coco import (
    BACKENDS,
    coco_from,
    reference_eval,
    reference_ious,
    result_dicts,
)

# torchmetrics' _inputs: preds and targets of COCO images 42, 73, 74 and 987, xyxy, in two
# batches of two (its image ids are the positions 0..3).
TM_PREDS = [
    ([[258.15, 41.29, 606.41, 285.07]], [0.236], [4]),
    ([[61.00, 22.75, 565.00, 632.42], [12.66, 3.32, 281.26, 275.23]], [0.318, 0.726], [3, 2]),
    (
        [
            [87.87, 276.25, 384.29, 379.43],
            [0.00, 3.66, 142.15, 316.06],
            [296.55, 93.96, 314.97, 152.79],
            [328.94, 97.05, 342.49, 122.98],
            [356.62, 95.47, 372.33, 147.55],
            [464.08, 105.09, 495.74, 146.99],
            [276.11, 103.84, 291.44, 150.72],
        ],
        [0.546, 0.3, 0.407, 0.611, 0.335, 0.805, 0.953],
        [4, 1, 0, 0, 0, 0, 0],
    ),
    (
        [
            [72.92, 45.96, 91.23, 80.57],
            [45.17, 45.34, 66.28, 79.83],
            [82.28, 47.04, 99.66, 78.50],
            [59.96, 46.17, 80.35, 80.48],
            [75.29, 23.01, 91.85, 50.85],
            [71.14, 1.10, 96.96, 28.33],
            [61.34, 55.23, 77.14, 79.57],
            [41.17, 45.78, 60.99, 78.48],
            [56.18, 44.80, 64.42, 56.25],
        ],
        [0.532, 0.204, 0.782, 0.202, 0.883, 0.271, 0.561, 0.204, 0.349],
        [49] * 9,
    ),
]
TM_TARGETS = [
    ([[214.1500, 41.2900, 562.4100, 285.0700]], [4]),
    ([[13.00, 22.75, 548.98, 632.42], [1.66, 3.32, 270.26, 275.23]], [2, 2]),
    (
        [
            [61.87, 276.25, 358.29, 379.43],
            [2.75, 3.66, 162.15, 316.06],
            [295.55, 93.96, 313.97, 152.79],
            [326.94, 97.05, 340.49, 122.98],
            [356.62, 95.47, 372.33, 147.55],
            [462.08, 105.09, 493.74, 146.99],
            [277.11, 103.84, 292.44, 150.72],
        ],
        [4, 1, 0, 0, 0, 0, 0],
    ),
    (
        [
            [72.92, 45.96, 91.23, 80.57],
            [50.17, 45.34, 71.28, 79.83],
            [81.28, 47.04, 98.66, 78.50],
            [63.96, 46.17, 84.35, 80.48],
            [75.29, 23.01, 91.85, 50.85],
            [56.39, 21.65, 75.66, 45.54],
            [73.14, 1.10, 98.96, 28.33],
            [62.34, 55.23, 78.14, 79.57],
            [44.17, 45.78, 63.99, 78.48],
            [58.18, 44.80, 66.42, 56.25],
        ],
        [49] * 10,
    ),
]


def torchmetrics_case() -> tuple[dict[str, Any], list[dict[str, torch.Tensor]], list[Any]]:
    """The targets as a COCO ground truth (xywh from the float32 boxes, area w * h, as
    torchmetrics builds it) and the preds as torchvision-style outputs."""
    anns = []
    for image, (boxes, labels) in enumerate(TM_TARGETS):
        xyxy = torch.tensor(boxes)  # float32, as torchmetrics' Tensor
        xywh = torch.cat([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], dim=1).tolist()
        anns += [
            {
                "id": len(anns) + j + 1,
                "image_id": image,
                "category_id": label,
                "bbox": box,
                "area": box[2] * box[3],
                "iscrowd": 0,
            }
            for j, (box, label) in enumerate(zip(xywh, labels, strict=True))
        ]
    categories = sorted({a["category_id"] for a in anns} | {3})  # label 3: predicted only
    gt = {
        "images": [{"id": i, "width": 640, "height": 640} for i in range(len(TM_TARGETS))],
        "annotations": anns,
        "categories": [{"id": c, "name": f"class{c}"} for c in categories],
    }
    outputs = [
        {
            "boxes": torch.tensor(boxes),
            "scores": torch.tensor(scores),
            "labels": torch.tensor(labels, dtype=torch.int32),
        }
        for boxes, scores, labels in TM_PREDS
    ]
    return gt, outputs, [{"image_id": i} for i in range(len(TM_PREDS))]


@pytest.mark.parametrize("backend", BACKENDS)
def test_torchmetrics_inputs_equal_pycocotools(backend: str) -> None:
    gt, outputs, targets = torchmetrics_case()
    image_ids = [t["image_id"] for t in targets]
    results = result_dicts(outputs, targets, "bbox")
    expected = reference_eval(gt, results, image_ids)
    evaluator = COCOEvaluator(coco_from(gt), backend=backend, per_image_ious=True)  # type: ignore[arg-type]
    for batch in (slice(0, 2), slice(2, 4)):  # torchmetrics' two batches
        evaluator.update(outputs[batch], targets[batch])
    stats = evaluator.compute(per_category=True)
    for key, array in expected.items():
        assert np.array_equal(evaluator.eval[key], array), key
    # torchmetrics' extended-summary shapes: 10 thresholds, 101 recall points, 6 classes
    # (0, 1, 2, 3, 4, 49), 4 areas, 3 maxDets
    assert evaluator.eval["precision"].shape == (10, 101, 6, 4, 3)
    assert evaluator.eval["recall"].shape == (10, 6, 4, 3)
    ious = evaluator.eval["ious"]
    assert set(ious) <= set(itertools.product(range(4), [0, 1, 2, 3, 4, 49]))
    reference = reference_ious(gt, results, image_ids, "bbox", True)
    assert sorted(ious) == sorted(reference)
    assert all(np.array_equal(ious[k], reference[k]) for k in reference)
    p = expected["precision"][:, :, :, 0, -1]
    assert stats["AP"] == float(np.mean(p[p > -1]))
    assert stats["AP/class3"] == -1.0  # predicted, never in the ground truth


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("box_format", "target", "iou", "ap"),
    [
        # torchmetrics' test_for_box_format: pred [0.5, 0.5, 1, 1], target [0, 0, 1, 1] in the
        # same format, IoU threshold 0.2: IoU 0.25 -> AP 1; IoU 0.143 -> AP 0. The target as
        # COCO xywh: xyxy [0, 0, 1, 1]; xywh itself; cxcywh centred at 0.
        ("xyxy", [0.0, 0.0, 1.0, 1.0], 0.25, 1.0),
        ("xywh", [0.0, 0.0, 1.0, 1.0], 0.143, 0.0),
        ("cxcywh", [-0.5, -0.5, 1.0, 1.0], 0.143, 0.0),
    ],
)
def test_torchmetrics_box_format_case(
    backend: str, box_format: str, target: list[float], iou: float, ap: float
) -> None:
    gt = {
        "images": [{"id": 0, "width": 2, "height": 2}],
        "annotations": [
            {"id": 1, "image_id": 0, "category_id": 0, "bbox": target, "area": 1.0, "iscrowd": 0}
        ],
        "categories": [{"id": 0, "name": "thing"}],
    }
    evaluator = COCOEvaluator(
        coco_from(gt),
        backend=backend,  # type: ignore[arg-type]
        box_format=box_format,  # type: ignore[arg-type]
        iou_thresholds=[0.2],
        per_image_ious=True,
    )
    pred = {
        "boxes": torch.tensor([[0.5, 0.5, 1.0, 1.0]]),
        "scores": torch.tensor([1.0]),
        "labels": torch.tensor([0]),
    }
    evaluator.update([pred], [{"image_id": 0}])
    stats = evaluator.compute()
    assert round(float(evaluator.eval["ious"][(0, 0)][0, 0]), 3) == iou
    assert round(stats["AP"], 6) == ap  # 1 / (1 + eps) for one true positive


@pytest.mark.parametrize("backend", BACKENDS)
def test_torchmetrics_missing_prediction_and_missing_ground_truth(backend: str) -> None:
    # test_missing_pred / test_missing_gt: "map cannot be 1"; pycocotools gives the value.
    box = torch.tensor([[10.0, 20.0, 15.0, 25.0]])
    gt_ann = {"category_id": 0, "bbox": [10.0, 20.0, 5.0, 5.0], "area": 25.0, "iscrowd": 0}
    base = {"images": [{"id": i, "width": 50, "height": 50} for i in (0, 1)]}
    base["categories"] = [{"id": 0, "name": "thing"}]
    one = {"boxes": box, "scores": torch.tensor([0.9]), "labels": torch.tensor([0])}
    empty = {
        "boxes": torch.zeros(0, 4),
        "scores": torch.zeros(0),
        "labels": torch.zeros(0, dtype=torch.int64),
    }
    cases = {
        "missing_pred": (
            [{**gt_ann, "id": 1, "image_id": 0}, {**gt_ann, "id": 2, "image_id": 1}],
            [one, empty],
        ),
        "missing_gt": (
            [{**gt_ann, "id": 1, "image_id": 0}],
            [one, {**one, "scores": torch.tensor([0.95])}],
        ),
    }
    for anns, outputs in cases.values():
        gt = {**base, "annotations": anns}
        targets = [{"image_id": 0}, {"image_id": 1}]
        expected = reference_eval(gt, result_dicts(outputs, targets, "bbox"), [0, 1])
        evaluator = COCOEvaluator(coco_from(gt), backend=backend)  # type: ignore[arg-type]
        evaluator.update(outputs, targets)
        stats = evaluator.compute()
        p = expected["precision"][:, :, :, 0, -1]
        assert stats["AP"] == float(np.mean(p[p > -1])) < 1


# mmdetection's dummy dataset: one 640 x 640 image, categories 0 (car) and 1 (bicycle), four
# boxes with explicit areas, and four detections on exactly those boxes.
MM_BOXES = [[50, 60, 20, 20], [100, 120, 30, 30], [150, 160, 40, 40], [250, 260, 100, 100]]
MM_AREAS = [400, 900, 1600, 10000]
MM_LABELS = [0, 0, 1, 0]
MM_SCORES = [1.0, 0.98, 0.96, 0.95]


def _mm_mask() -> dict[str, Any]:
    """mmdetection's dummy mask (the top-left 5 x 5 pixels), at the image's size here:
    perfkit refuses an RLE of another size than its image (mmdetection's is 10 x 10)."""
    mask = np.zeros((640, 640), order="F", dtype=np.uint8)
    mask[:5, :5] = 1
    rle = mask_utils.encode(mask)
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def mmdet_gt() -> dict[str, Any]:
    return {
        "images": [{"id": 0, "width": 640, "height": 640}],
        "annotations": [
            {
                "id": i + 1,
                "image_id": 0,
                "category_id": label,
                "area": area,
                "bbox": box,
                "iscrowd": 0,
                "segmentation": _mm_mask(),
            }
            for i, (box, area, label) in enumerate(zip(MM_BOXES, MM_AREAS, MM_LABELS, strict=True))
        ],
        "categories": [{"id": 0, "name": "car"}, {"id": 1, "name": "bicycle"}],
    }


@pytest.mark.parametrize("backend", BACKENDS)
def test_mmdetection_perfect_detections(backend: str) -> None:
    # test_evaluate / test_classwise_evaluate: bbox and segm mAP, mAP_50, mAP_75, s, m, l and
    # each class's precision are 1.0 (mmdetection rounds to 3 decimals).
    results = [
        {
            "image_id": 0,
            "category_id": label,
            "score": score,
            "bbox": box,
            "segmentation": _mm_mask(),
        }
        for box, label, score in zip(MM_BOXES, MM_LABELS, MM_SCORES, strict=True)
    ]
    evaluator = COCOEvaluator(coco_from(mmdet_gt()), ("bbox", "segm"), backend=backend)  # type: ignore[arg-type]
    evaluator.update_results(results)
    stats = evaluator.compute(per_category=True)
    for iou_type in ("bbox", "segm"):
        for name in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AP/car", "AP/bicycle"):
            assert round(stats[f"{iou_type}/{name}"], 3) == 1.0, (iou_type, name)


@pytest.mark.parametrize("backend", BACKENDS)
def test_mmdetection_proposal_recall_and_empty_results(backend: str) -> None:
    # test_fast_eval_recall with proposal_nums=(2, 4): AR@2 0.5, AR@4 1.0 (class-agnostic)
    outputs = [
        {
            "boxes": torch.tensor(
                [[x, y, x + w, y + h] for x, y, w, h in MM_BOXES], dtype=torch.float64
            ),
            "scores": torch.tensor(MM_SCORES),
            "labels": torch.tensor(MM_LABELS),
        }
    ]
    evaluator = COCOEvaluator(
        coco_from(mmdet_gt()),
        backend=backend,
        use_cats=False,
        max_detections=(2, 4),  # type: ignore[arg-type]
    )
    evaluator.update(outputs, [{"image_id": 0}])
    stats = evaluator.compute()
    assert (stats["AR2"], stats["AR4"]) == (0.5, 1.0)
    # test_empty_results: no detection at all evaluates (to 0.0 here)
    empty = COCOEvaluator(coco_from(mmdet_gt()), backend=backend)  # type: ignore[arg-type]
    empty.update([{k: v[:0] for k, v in outputs[0].items()}], [{"image_id": 0}])
    assert empty.compute()["AP"] == 0.0


# detectron2's test_fast_eval: three detections of COCO val image 139 (boxes with RLE masks) and
# its two person annotations (polygons), plus image 285 without any; the experiments compare the
# precision / recall arrays with pycocotools'.
D2_DETECTIONS = [
    {"image_id": 139, "category_id": 1, "bbox": [417.3332824707031, 159.27003479003906, 47.66064453125, 143.00193786621094], "score": 0.9949821829795837, "segmentation": {"size": [426, 640], "counts": "Tc`52W=3N0N4aNN^E7]:4XE1g:8kDMT;U100000001O1gE[Nk8h1dFiNY9Z1aFkN]9g2J3NdN`FlN`9S1cFRN07]9g1bFoM6;X9c1cFoM=8R9g1bFQN>3U9Y30O01OO1O001N2O1N1O4L4L5UNoE3V:CVF6Q:@YF9l9@ZF<k9[O`F=];HYnX2"}},  # noqa: E501
    {"image_id": 139, "category_id": 1, "bbox": [383.5909118652344, 172.0777587890625, 17.959075927734375, 36.94813537597656], "score": 0.7685421705245972, "segmentation": {"size": [426, 640], "counts": "lZP5m0Z<300O100O100000001O00]OlC0T<OnCOT<OnCNX<JnC2bQT3"}},  # noqa: E501
    {"image_id": 139, "category_id": 1, "bbox": [457.8359069824219, 158.88027954101562, 9.89764404296875, 8.771820068359375], "score": 0.07092753797769547, "segmentation": {"size": [426, 640], "counts": "bSo54T=2N2O1001O006ImiW2"}},  # noqa: E501
]  # fmt: skip
D2_GT = {
    "categories": [{"id": 1, "name": "person"}, {"id": 65, "name": "bed"}],
    "images": [{"id": 285, "height": 640, "width": 586}, {"id": 139, "height": 426, "width": 640}],
    "annotations": [
        {"segmentation": [[428.19, 219.47, 430.94, 209.57, 430.39, 210.12, 421.32, 216.17, 412.8, 217.27, 413.9, 214.24, 422.42, 211.22, 429.29, 201.6, 430.67, 181.8, 430.12, 175.2, 427.09, 168.06, 426.27, 164.21, 430.94, 159.26, 440.29, 157.61, 446.06, 163.93, 448.53, 168.06, 448.53, 173.01, 449.08, 174.93, 454.03, 185.1, 455.41, 188.4, 458.43, 195.0, 460.08, 210.94, 462.28, 226.61, 460.91, 233.76, 454.31, 234.04, 460.08, 256.85, 462.56, 268.13, 465.58, 290.67, 465.85, 293.14, 463.38, 295.62, 452.66, 295.34, 448.26, 294.52, 443.59, 282.7, 446.06, 235.14, 446.34, 230.19, 438.09, 232.39, 438.09, 221.67, 434.24, 221.12, 427.09, 219.74]], "area": 2913.1103999999987, "iscrowd": 0, "image_id": 139, "bbox": [412.8, 157.61, 53.05, 138.01], "category_id": 1, "id": 230831},  # noqa: E501
        {"segmentation": [[384.98, 206.58, 384.43, 199.98, 385.25, 193.66, 385.25, 190.08, 387.18, 185.13, 387.18, 182.93, 386.08, 181.01, 385.25, 178.81, 385.25, 175.79, 388.0, 172.76, 394.88, 172.21, 398.72, 173.31, 399.27, 176.06, 399.55, 183.48, 397.9, 185.68, 395.15, 188.98, 396.8, 193.38, 398.45, 194.48, 399.0, 205.75, 395.43, 207.95, 388.83, 206.03]], "area": 435.1449499999997, "iscrowd": 0, "image_id": 139, "bbox": [384.43, 172.21, 15.12, 35.74], "category_id": 1, "id": 233201},  # noqa: E501
    ],
}  # fmt: skip

D2_EXPERIMENTS: dict[str, tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]] = {
    "full": (D2_DETECTIONS, D2_GT, {}),
    "empty_dt": ([], D2_GT, {}),
    "empty_gt": (D2_DETECTIONS, {**D2_GT, "annotations": []}, {}),
    "no_categories": (D2_DETECTIONS, D2_GT, {"use_cats": False}),
    "one_max_det": (D2_DETECTIONS, D2_GT, {"max_detections": [1]}),
    "omit_gt_ignore": (D2_DETECTIONS, D2_GT, {}),  # neither has "ignore": the same as full
    "omit_gt_iscrowd": (
        D2_DETECTIONS,
        {**D2_GT, "annotations": [{k: v for k, v in a.items() if k != "iscrowd"} for a in D2_GT["annotations"]]},  # noqa: E501
        {},
    ),
}  # fmt: skip


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
@pytest.mark.parametrize("experiment", list(D2_EXPERIMENTS))
def test_detectron2_fast_eval_experiments(backend: str, iou_type: str, experiment: str) -> None:
    dt, gt, kwargs = D2_EXPERIMENTS[experiment]
    params = {
        "use_cats": {"useCats": int(kwargs.get("use_cats", True))},
        "max_detections": {"maxDets": kwargs.get("max_detections")},
    }
    reference_params = {k: v for key, p in params.items() if key in kwargs for k, v in p.items()}
    results = [
        {k: v for k, v in d.items() if iou_type == "segm" or k != "segmentation"} for d in dt
    ]
    image_ids = [285, 139]
    expected = reference_eval(gt, results, image_ids, iou_type, params=reference_params)
    evaluator = COCOEvaluator(coco_from(gt), iou_type, backend=backend, **kwargs)  # type: ignore[arg-type]
    evaluator.update_results(results, image_ids)
    evaluator.compute()
    for key, array in expected.items():
        assert np.array_equal(evaluator.eval[key], array), key


def test_detectron2_empty_parameters_and_omitted_fields_are_refused(tmp_path: Path) -> None:
    # detectron2 checks that its evaluator fails as pycocotools does; perfkit refuses these
    # inputs with a ValueError naming them instead.
    for kwargs in ({"iou_thresholds": []}, {"recall_thresholds": []}, {"max_detections": []}):
        with pytest.raises(ValueError, match="Expected argument"):
            COCOEvaluator(coco_from(D2_GT), **kwargs)  # type: ignore[arg-type]
    for field in ("id", "image_id", "category_id"):
        gt = {
            **D2_GT,
            "annotations": [
                {k: v for k, v in a.items() if k != field} for a in D2_GT["annotations"]
            ],
        }
        path = tmp_path / f"without_{field}.json"
        path.write_text(json.dumps(gt))  # pycocotools' own loader raises KeyError on it
        with pytest.raises(ValueError, match=rf"lacks \['{field}'\]"):
            COCOEvaluator(path)
    for field in ("area", "bbox", "segmentation"):
        gt = {
            **D2_GT,
            "annotations": [
                {k: v for k, v in a.items() if k != field} for a in D2_GT["annotations"]
            ],
        }
        evaluator = COCOEvaluator(coco_from(gt), "segm" if field == "segmentation" else "bbox")
        evaluator.update_results(
            [{k: v for k, v in d.items() if k != "segmentation"} for d in D2_DETECTIONS]
            if field != "segmentation"
            else D2_DETECTIONS,
            [285, 139],
        )
        with pytest.raises(ValueError, match="of evaluated images lack one of"):
            evaluator.compute()
    for field in ("score", "image_id", "category_id"):
        with pytest.raises(ValueError, match=rf"results\[0\] lacks \['{field}'\]"):
            COCOEvaluator(coco_from(D2_GT)).update_results(
                [{k: v for k, v in d.items() if k != field} for d in D2_DETECTIONS]
            )
