"""COCOEvaluator against pycocotools' COCOeval run directly on the same detections.

Cases are generated (hypothesis draws a seed and the knobs): boxes over all three area ranges and
on their 32² / 96² edges, crowd ground truth, ``ignore`` flags (which COCOeval overwrites with
``iscrowd``), annotations without ``iscrowd``, score ties, duplicated boxes (IoU ties), images
without detections or without ground truth, a category without ground truth, labels that are no
category (torchvision's 91-label gaps), ground-truth id 0, more than 100 detections per image,
evaluating a subset of the images, masks as tensors and as RLEs. Boxes are converted as
torchvision's reference ``CocoEvaluator`` converts them (float32 xyxy -> xywh, then ``tolist``).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval, Params

from perfkit.metrics import STAT_NAMES, COCOEvaluator, _cocoeval

CATEGORIES = [1, 3, 7, 9]  # non-contiguous ids; category 9 never has ground truth
GAP_LABEL = 5  # a label that is no category: detections with it are ignored


def make_case(
    seed: int,
    *,
    iou_type: str = "bbox",
    n_images: int = 6,
    max_gt: int = 6,
    max_dt: int = 14,
) -> tuple[dict[str, Any], list[dict[str, torch.Tensor]], list[dict[str, int]]]:
    """A ground-truth dataset and torchvision-style outputs / targets for every image."""
    rng = np.random.default_rng(seed)
    max_dt = max_dt if rng.random() < 0.85 else 100 + max_dt  # sometimes more than 100
    small = iou_type == "segm"  # masks are rasterised: keep images small
    images, anns, outputs, targets = [], [], [], []
    ann_id = int(rng.integers(0, 2))  # sometimes a ground truth with id 0 (pycocotools' quirk)
    for i in range(n_images):
        w_img, h_img = (
            (int(rng.integers(24, 48)), int(rng.integers(24, 48))) if small else (640, 480)
        )
        image_id = 100 + 7 * i
        images.append({"id": image_id, "width": w_img, "height": h_img})
        n_gt = int(rng.integers(0, max_gt + 1))
        side = np.exp(rng.uniform(np.log(3), np.log(w_img if small else 300), (n_gt, 2)))
        gt_boxes = []
        for w, h in side:
            x, y = (
                rng.uniform(0, w_img - min(w, w_img - 1)),
                rng.uniform(0, h_img - min(h, h_img - 1)),
            )
            box = [float(x), float(y), float(min(w, w_img - x)), float(min(h, h_img - y))]
            if rng.random() < 0.15:  # a box exactly on an area edge: 32 x 32 or 96 x 96
                edge = float(rng.choice([32, 96]))
                box = [float(int(x)), float(int(y)), edge, edge]
            crowd = int(rng.random() < 0.15)
            category = int(rng.choice(CATEGORIES[:-1]))
            ann: dict[str, Any] = {
                "id": ann_id,
                "image_id": image_id,
                "category_id": category,
                "bbox": box,
                "area": float(box[2] * box[3] * rng.uniform(0.4, 1.0)),
                "iscrowd": crowd,
            }
            if rng.random() < 0.1:  # an area exactly on an edge
                ann["area"] = float(rng.choice([32**2, 96**2]))
            if rng.random() < 0.1:  # COCOeval overwrites "ignore" with "iscrowd"
                ann["ignore"] = 1
            if not crowd and rng.random() < 0.1:  # no "iscrowd": treated as 0
                del ann["iscrowd"]
            if small:
                ann["segmentation"] = _segmentation(box, crowd, h_img, w_img)
            anns.append(ann)
            gt_boxes.append((box, category))
            ann_id += 1
        outputs.append(_detections(rng, gt_boxes, w_img, h_img, max_dt, small))
        targets.append({"image_id": image_id})
    gt = {
        "images": images,
        "annotations": anns,
        "categories": [{"id": c, "name": f"cat{c}"} for c in CATEGORIES],
    }
    return gt, outputs, targets


def _segmentation(box: list[float], crowd: int, h: int, w: int) -> Any:
    x, y, bw, bh = box
    if not crowd:  # a polygon, as COCO stores most objects
        return [[x, y, x + bw, y, x + bw, y + bh, x, y + bh]]
    mask = np.zeros((h, w), np.uint8, order="F")
    mask[int(y) : int(np.ceil(y + bh)), int(x) : int(np.ceil(x + bw))] = 1
    rle = mask_utils.encode(mask)
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def _detections(
    rng: np.random.Generator,
    gt_boxes: list[tuple[list[float], int]],
    w_img: int,
    h_img: int,
    max_dt: int,
    with_masks: bool,
) -> dict[str, torch.Tensor]:
    n = 0 if rng.random() < 0.2 else int(rng.integers(1, max_dt + 1))  # some images: none
    boxes, labels = [], []
    for _ in range(n):
        if gt_boxes and rng.random() < 0.7:  # near a ground truth, sometimes exactly on it
            (x, y, w, h), cat = gt_boxes[int(rng.integers(len(gt_boxes)))]
            jitter = rng.normal(0, 0.15, 4) * (rng.random() > 0.2)
            x, y = x + jitter[0] * w, y + jitter[1] * h
            w, h = w * np.exp(jitter[2]), h * np.exp(jitter[3])
            label = cat if rng.random() < 0.85 else int(rng.choice(CATEGORIES))
        else:
            w, h = np.exp(rng.uniform(np.log(2), np.log(max(w_img, 3)), 2))
            x, y = rng.uniform(0, w_img), rng.uniform(0, h_img)
            label = int(rng.choice([*CATEGORIES, GAP_LABEL]))
        if rng.random() < 0.1:  # a box of 32 x 32 or 96 x 96: an area on an edge
            x, y, w, h = float(int(x)), float(int(y)), *[float(rng.choice([32, 96]))] * 2
        boxes.append([x, y, x + w, y + h])
        labels.append(label)
        if rng.random() < 0.1:  # a duplicated detection: equal IoU, maybe equal score
            boxes.append(boxes[-1])
            labels.append(label)
    boxes_t = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    out = {
        "boxes": boxes_t,
        "scores": torch.tensor(rng.integers(1, 9, len(boxes)) / 8, dtype=torch.float32),  # ties
        "labels": torch.tensor(labels, dtype=torch.int64),
    }
    if with_masks:
        masks = torch.zeros((len(boxes), 1, h_img, w_img))
        for j, (x1, y1, x2, y2) in enumerate(boxes_t.tolist()):
            masks[j, 0, max(int(y1), 0) : max(int(y2), 0), max(int(x1), 0) : max(int(x2), 0)] = 0.9
        masks += torch.rand(masks.shape, generator=torch.Generator().manual_seed(len(boxes))) * 0.3
        out["masks"] = masks
    return out


def result_dicts(
    outputs: list[dict[str, torch.Tensor]], targets: list[dict[str, int]], iou_type: str
) -> list[dict[str, Any]]:
    """The outputs as COCO result dicts, as torchvision's reference ``CocoEvaluator`` makes them."""
    results = []
    for out, target in zip(outputs, targets, strict=True):
        if iou_type == "bbox":  # references/detection/coco_eval.py convert_to_xywh, then tolist
            xmin, ymin, xmax, ymax = out["boxes"].unbind(1)
            geometry = torch.stack((xmin, ymin, xmax - xmin, ymax - ymin), dim=1).tolist()
        else:
            masks = (out["masks"][:, 0] > 0.5).numpy().astype(np.uint8)
            geometry = [mask_utils.encode(np.asfortranarray(m)) for m in masks]
        for g, s, c in zip(geometry, out["scores"].tolist(), out["labels"].tolist(), strict=True):
            key = "bbox" if iou_type == "bbox" else "segmentation"
            results.append({"image_id": target["image_id"], "category_id": c, "score": s, key: g})
    return results


def coco_from(dataset: dict[str, Any]) -> COCO:
    coco = COCO()
    coco.dataset = copy.deepcopy(dataset)
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def reference_gt(gt: dict[str, Any]) -> COCO:
    """The ground truth for pycocotools, ``iscrowd`` 0 where absent (perfkit's documented
    default; COCOeval raises KeyError instead)."""
    coco_gt = coco_from(gt)
    for ann in coco_gt.dataset["annotations"]:
        ann.setdefault("iscrowd", 0)
    return coco_gt


def reference_cocoeval(
    gt: dict[str, Any],
    results: list[dict[str, Any]],
    img_ids: list[int],
    iou_type: str = "bbox",
    use_cats: bool = True,
    params: dict[str, Any] | None = None,
) -> COCOeval:
    """pycocotools' COCOeval on ``results``, evaluated and accumulated (its prints hidden)."""
    coco_gt = reference_gt(gt)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = (
            coco_gt.loadRes(copy.deepcopy(results))
            if results
            else coco_from({"images": gt["images"], "annotations": []})  # loadRes refuses []
        )
        evaluator = COCOeval(coco_gt, coco_dt, iou_type)
        evaluator.params.imgIds = img_ids
        evaluator.params.useCats = int(use_cats)
        for key, value in (params or {}).items():
            setattr(evaluator.params, key, value)
        evaluator.evaluate()
        evaluator.accumulate()
    return evaluator


def reference(
    gt: dict[str, Any],
    results: list[dict[str, Any]],
    img_ids: list[int],
    iou_type: str = "bbox",
    use_cats: bool = True,
    params: dict[str, Any] | None = None,
) -> tuple[dict[str, float], str]:
    """pycocotools' stats (with per-category AP) and summary text."""
    evaluator = reference_cocoeval(gt, results, img_ids, iou_type, use_cats, params)
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        evaluator.summarize()
    stats = dict(zip(STAT_NAMES, evaluator.stats.tolist(), strict=True))
    text = printed.getvalue()
    if use_cats:
        for k, cat in enumerate(CATEGORIES):
            p = evaluator.eval["precision"][:, :, k, 0, -1]
            stats[f"AP/cat{cat}"] = float(np.mean(p[p > -1])) if (p > -1).any() else -1.0
            r = evaluator.eval["recall"][:, k, 0, -1]
            stats[f"AR/cat{cat}"] = float(np.mean(r[r > -1])) if (r > -1).any() else -1.0
    else:  # torchmetrics' class_metrics with average="micro": useCats=1, catIds=[class] each
        evaluator.params.useCats = 1
        for cat in CATEGORIES:
            evaluator.params.catIds = [cat]
            with contextlib.redirect_stdout(io.StringIO()):
                evaluator.evaluate()
                evaluator.accumulate()
                evaluator.summarize()
            stats[f"AP/cat{cat}"], stats[f"AR/cat{cat}"] = evaluator.stats[[0, 8]].tolist()
    return stats, text


def evaluate(
    gt: dict[str, Any],
    outputs: list[dict[str, torch.Tensor]],
    targets: list[dict[str, int]],
    backend: str,
    **kwargs: Any,
) -> dict[str, float]:
    evaluator = COCOEvaluator(coco_from(gt), backend=backend, **kwargs)  # type: ignore[arg-type]
    for start in range(0, len(outputs), 4):  # batches of 4 images
        evaluator.update(outputs[start : start + 4], targets[start : start + 4])
    return evaluator.compute(per_category=True)


def with_stray_annotations(gt: dict[str, Any], not_evaluated: list[int]) -> dict[str, Any]:
    """``gt`` plus what pycocotools never reads: an annotation of an image missing from
    ``images`` and geometry-less annotations on images that are not evaluated."""
    stray = [{"id": 10_000, "image_id": 99_999, "category_id": CATEGORIES[0]}]
    stray += [
        {"id": 10_001 + i, "image_id": image, "category_id": CATEGORIES[0], "iscrowd": 0}
        for i, image in enumerate(not_evaluated)
    ]
    return {**gt, "annotations": gt["annotations"] + stray}


@pytest.mark.parametrize("backend", ["fast", "pycocotools"])
@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), use_cats=st.booleans(), subset=st.booleans())
def test_bbox_equals_pycocotools(backend: str, seed: int, use_cats: bool, subset: bool) -> None:
    gt, outputs, targets = make_case(seed)
    if subset:  # evaluate every other image: the rest of the ground truth is not read
        outputs, targets = outputs[::2], targets[::2]
        gt = with_stray_annotations(gt, [img["id"] for img in gt["images"][1::2]])
    expected, _ = reference(
        gt,
        result_dicts(outputs, targets, "bbox"),
        [t["image_id"] for t in targets],
        "bbox",
        use_cats,
    )
    assert evaluate(gt, outputs, targets, backend, use_cats=use_cats) == expected


@pytest.mark.parametrize("backend", ["fast", "pycocotools"])
@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), use_cats=st.booleans(), as_rle=st.booleans())
def test_segm_equals_pycocotools(backend: str, seed: int, use_cats: bool, as_rle: bool) -> None:
    gt, outputs, targets = make_case(seed, iou_type="segm", n_images=4)
    results = result_dicts(outputs, targets, "segm")
    image_ids = [t["image_id"] for t in targets]
    expected, _ = reference(gt, results, image_ids, "segm", use_cats)
    if as_rle:  # COCO results with RLEs instead of tensor masks
        evaluator = COCOEvaluator(coco_from(gt), "segm", backend=backend, use_cats=use_cats)  # type: ignore[arg-type]
        evaluator.update_results(results, image_ids)
        result = evaluator.compute(per_category=True)
    else:
        result = evaluate(gt, outputs, targets, backend, iou_type="segm", use_cats=use_cats)
    assert result == expected


def test_more_detections_than_max_dets() -> None:
    # 150 detections of one category on one image: pycocotools keeps the 100 best per image and
    # category (and the 1 / 10 best for AR1 / AR10).
    gt, outputs, targets = make_case(7, n_images=3)
    rng = np.random.default_rng(1)
    (x, y, w, h), cat = next(
        (a["bbox"], a["category_id"]) for a in gt["annotations"] if a["image_id"] == 100
    )
    xy = np.array([x, y]) + rng.normal(0, 0.1, (150, 2)) * [w, h]
    wh = np.array([w, h]) * np.exp(rng.normal(0, 0.1, (150, 2)))
    outputs[0] = {
        "boxes": torch.tensor(np.concatenate([xy, xy + wh], axis=1)),
        "scores": torch.tensor(rng.integers(1, 40, 150) / 40),
        "labels": torch.full((150,), cat),
    }
    expected, _ = reference(gt, result_dicts(outputs, targets, "bbox"), [100, 107, 114])
    for backend in ("fast", "pycocotools"):
        assert evaluate(gt, outputs, targets, backend) == expected


def test_summary_text_is_pycocotools() -> None:
    gt, outputs, targets = make_case(3)
    _, text = reference(
        gt, result_dicts(outputs, targets, "bbox"), [t["image_id"] for t in targets]
    )
    evaluator = COCOEvaluator(coco_from(gt))
    evaluator.update(outputs, targets)
    assert evaluator.summary() + "\n" == text
    assert len(text.splitlines()) == 12


def test_seed_summary_format() -> None:
    # The Faster R-CNN seed's first and ninth lines, formatted from its numbers.
    evaluator = COCOEvaluator(coco_from(make_case(0)[0]))
    lines = evaluator.summary(dict.fromkeys(STAT_NAMES, 0.403)).splitlines()
    assert lines[0] == (
        " Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 0.403"
    )
    assert lines[6] == (
        " Average Recall     (AR) @[ IoU=0.50:0.95 | area=   all | maxDets=  1 ] = 0.403"
    )


def test_update_results_dicts_and_path_equal_update(tmp_path: Path) -> None:
    gt, outputs, targets = make_case(11)
    results = result_dicts(outputs, targets, "bbox")
    image_ids = [t["image_id"] for t in targets]
    expected, _ = reference(gt, results, image_ids)
    gt_path = tmp_path / "instances.json"
    gt_path.write_text(json.dumps(gt))
    res_path = tmp_path / "results.json"
    res_path.write_text(json.dumps(results))
    for source in (results, res_path, str(res_path)):
        evaluator = COCOEvaluator(gt_path)
        evaluator.update_results(source, image_ids=image_ids)
        assert evaluator.compute(per_category=True) == expected


@pytest.mark.parametrize("backend", ["fast", "pycocotools"])
def test_update_results_without_image_ids_evaluates_every_image(backend: str) -> None:
    # COCOeval's default imgIds: every image of the ground truth, also those without results.
    gt, outputs, targets = make_case(11)
    results = [r for r in result_dicts(outputs, targets, "bbox") if r["image_id"] != 100]
    everything = sorted(img["id"] for img in gt["images"])
    named = sorted({r["image_id"] for r in results})
    assert named != everything
    expected = reference(gt, results, everything)[0]
    assert expected != reference(gt, results, named)[0]
    evaluator = COCOEvaluator(coco_from(gt), backend=backend)  # type: ignore[arg-type]
    evaluator.update_results(results)
    assert evaluator.compute(per_category=True) == expected


def test_update_results_segm() -> None:
    gt, outputs, targets = make_case(5, iou_type="segm", n_images=3)
    results = result_dicts(outputs, targets, "segm")
    image_ids = [t["image_id"] for t in targets]
    evaluator = COCOEvaluator(coco_from(gt), "segm")
    evaluator.update_results(results, image_ids)
    assert evaluator.compute() == {
        k: v for k, v in reference(gt, results, image_ids, "segm")[0].items() if "/" not in k
    }


def test_label_to_category_for_contiguous_labels() -> None:
    gt, outputs, targets = make_case(21)
    outputs = [{k: v[o["labels"] != GAP_LABEL] for k, v in o.items()} for o in outputs]
    expected = evaluate(gt, outputs, targets, "fast")
    to_label = {c: i for i, c in enumerate(CATEGORIES)}
    contiguous = [dict(o, labels=o["labels"].apply_(to_label.__getitem__)) for o in outputs]
    for mapping in (CATEGORIES, dict(enumerate(CATEGORIES))):
        assert evaluate(gt, contiguous, targets, "fast", label_to_category=mapping) == expected


def test_known_values_and_no_ground_truth() -> None:
    # One image, one ground truth of category 1 (a 10x10 box, area 100: "small").
    gt = {
        "images": [{"id": 1, "width": 50, "height": 50}, {"id": 2, "width": 50, "height": 50}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 1,
                "bbox": [0, 0, 10, 10],
                "area": 100.0,
                "iscrowd": 0,
            }
        ],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
    }
    evaluator = COCOEvaluator(coco_from(gt))
    # A perfect box, and a detection of category 2, which has no ground truth.
    evaluator.update(
        [
            {
                "boxes": torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]]),
                "scores": torch.tensor([0.9, 0.8]),
                "labels": torch.tensor([1, 2]),
            }
        ],
        [{"image_id": 1}],
    )
    evaluator.update(  # an image without detections
        [
            {
                "boxes": torch.zeros(0, 4),
                "scores": torch.zeros(0),
                "labels": torch.zeros(0, dtype=torch.int64),
            }
        ],
        [{"image_id": 2}],
    )
    stats = evaluator.compute(per_category=True)
    # pycocotools' precision of one true positive is tp / (tp + fp + eps) = 1 / (1 + eps).
    assert stats["AP"] == stats["APs"] == 1 / (1 + np.spacing(1))
    assert stats["AR1"] == stats["AR100"] == stats["ARs"] == 1.0
    assert stats["APm"] == stats["APl"] == stats["ARm"] == -1.0  # no medium / large ground truth
    assert stats["AP/b"] == -1.0


def test_no_detections_at_all_scores_zero() -> None:
    gt, outputs, targets = make_case(2)
    empty = [{k: v[:0] for k, v in o.items()} for o in outputs]
    for backend in ("fast", "pycocotools"):
        stats = evaluate(gt, empty, targets, backend)
        assert stats["AP"] == 0.0 and stats["AR100"] == 0.0


def test_compute_before_update_warns_and_reports_nothing() -> None:
    evaluator = COCOEvaluator(coco_from(make_case(0)[0]))
    with pytest.warns(UserWarning, match="before any update"):
        stats = evaluator.compute()
    assert stats == dict.fromkeys(STAT_NAMES, -1.0)


def test_reset_forgets_images() -> None:
    gt, outputs, targets = make_case(4)
    evaluator = COCOEvaluator(coco_from(gt))
    evaluator.update(outputs, targets)
    first = evaluator.compute()
    evaluator.reset()
    assert evaluator.update_count == 0 and evaluator.chunks == []
    evaluator.update(outputs, targets)  # the same images again: allowed after reset
    assert evaluator.compute() == first


def test_pycocotools_backend_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    gt, outputs, targets = make_case(8)
    evaluate(gt, outputs, targets, "pycocotools")
    evaluate(gt, outputs, targets, "fast")
    assert capsys.readouterr() == ("", "")  # no prints; no progress bar off a terminal


def test_duplicate_images_from_ranks_are_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    # Two ranks of a padded sampler: rank 1 evaluates image 100 again, with other detections.
    gt, outputs, targets = make_case(9, n_images=5)
    rank0, rank1 = COCOEvaluator(coco_from(gt)), COCOEvaluator(coco_from(gt))
    rank0.update(outputs[0::2], targets[0::2])
    rank1.update([*outputs[1::2], outputs[1]], [*targets[1::2], targets[0]])
    states = [{"chunks": r.chunks, "ignored": r.ignored} for r in (rank0, rank1)]
    monkeypatch.setattr("perfkit.distributed.all_gather_object", lambda obj, group: states)
    alone = evaluate(gt, outputs, targets, "fast")
    assert rank0.compute(per_category=True) == rank1.compute(per_category=True) == alone


def test_parameters_are_pycocotools_defaults() -> None:
    params = Params("bbox")
    assert np.array_equal(_cocoeval.IOU_THRS, params.iouThrs)
    assert np.array_equal(_cocoeval.REC_THRS, params.recThrs)
    assert list(_cocoeval.MAX_DETS) == params.maxDets
    assert _cocoeval.AREA_RNG.tolist() == params.areaRng
    assert list(_cocoeval.AREA_LBL) == params.areaRngLbl


def test_import_is_lazy() -> None:
    code = (
        "import sys, perfkit.metrics; "
        "print(sorted(m for m in ('torch', 'pycocotools', 'pandas', 'tqdm') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------------------------- bad input

GT = make_case(0, n_images=2)[0]
GOOD = {
    "boxes": torch.tensor([[1.0, 2, 11, 12], [5, 5, 9, 9]]),
    "scores": torch.tensor([0.9, 0.5]),
    "labels": torch.tensor([1, 3]),
}


def _with(**changes: Any) -> dict[str, Any]:
    return {**GOOD, **changes}


@pytest.mark.parametrize(
    ("outputs", "targets", "match"),
    [
        (
            [_with(boxes=torch.tensor([[1.0, 2, 11, 12], [5, float("nan"), 9, 9]]))],
            [100],
            r"outputs\[0\]\['boxes'\] row 1 is NaN or inf",
        ),
        (
            [_with(scores=torch.tensor([0.9, float("inf")]))],
            [100],
            r"outputs\[0\]\['scores'\] row 1 is NaN or inf",
        ),
        (
            [GOOD, _with(boxes=torch.tensor([[1.0, 2, 11, 12], [9, 5, 5, 9]]))],
            [100, 107],
            r"outputs\[1\]\['boxes'\] row 1 has a negative width.*x2 >= x1",
        ),
        (
            [_with(boxes=torch.zeros(2, 5))],
            [100],
            r"`outputs\[0\]\['boxes'\]` to have shape \(N, 4\) with N = 2 as in scores but got "
            r"shape \(2, 5\)",
        ),
        (
            [_with(labels=torch.tensor([1]))],
            [100],
            r"`outputs\[0\]\['labels'\]` to have shape \(N,\) with N = 2 as in scores but got",
        ),
        (
            [_with(scores=torch.zeros(2, 1))],
            [100],
            r"`outputs\[0\]\['scores'\]` to have shape \(N,\) but got shape \(2, 1\)",
        ),
        (
            [_with(labels=torch.tensor([1.0, 3.0]))],
            [100],
            r"`outputs\[0\]\['labels'\]` to hold integer labels but got dtype torch.float32",
        ),
        (
            [{"boxes": GOOD["boxes"], "scores": GOOD["scores"]}],
            [100],
            r"outputs\[0\] lacks \['labels'\]",
        ),
        ([GOOD], [100, 107], "one entry per image but got 1 outputs and 2 targets"),
        ([GOOD], [5], r"targets: image ids \[5\] are not in the ground truth"),
        ([GOOD, GOOD], [100, 100], r"targets: image ids \[100\] were already updated"),
        ([GOOD], [torch.tensor([100, 107])], r"`targets\[0\]\['image_id'\]` to hold one id"),
    ],
)
def test_update_rejects(outputs: list[Any], targets: list[Any], match: str) -> None:
    evaluator = COCOEvaluator(coco_from(GT))
    with pytest.raises(ValueError, match=match):
        evaluator.update(outputs, [{"image_id": t} for t in targets])
    assert evaluator.update_count == 0 and evaluator.chunks == []


@pytest.mark.parametrize(
    ("outputs", "targets", "match"),
    [
        (
            [GOOD],
            [{"image_id": 1.5}],
            r"`targets\[0\]\['image_id'\]` to be an integer id but got 1.5",
        ),
        ([GOOD], [[100]], r"`targets\[0\]` to be a dict with an 'image_id' but got \[100\]"),
        ([GOOD["boxes"]], [{"image_id": 100}], r"`outputs\[0\]` to be a dict of tensors but got"),
    ],
)
def test_update_rejects_wrong_types(outputs: list[Any], targets: list[Any], match: str) -> None:
    evaluator = COCOEvaluator(coco_from(GT))
    with pytest.raises(TypeError, match=match):
        evaluator.update(outputs, targets)
    assert evaluator.update_count == 0 and evaluator.chunks == []


def test_update_rejects_an_image_seen_before() -> None:
    evaluator = COCOEvaluator(coco_from(GT))
    evaluator.update([GOOD], [{"image_id": torch.tensor([100])}])
    with pytest.raises(ValueError, match=r"image ids \[100\] were already updated"):
        evaluator.update([GOOD], [{"image_id": 100}])


def test_label_to_category_rejects_unmapped_labels() -> None:
    with pytest.raises(ValueError, match=r"category ids \[2\] that the ground truth"):
        COCOEvaluator(coco_from(GT), label_to_category=[1, 2])
    evaluator = COCOEvaluator(coco_from(GT), label_to_category={0: 1, 1: 3})
    with pytest.raises(ValueError, match=r"label 3 maps to no category in label_to_category"):
        evaluator.update([_with(labels=torch.tensor([0, 3]))], [{"image_id": 100}])


def test_update_results_rejects() -> None:
    evaluator = COCOEvaluator(coco_from(GT))
    good = {"image_id": 100, "category_id": 1, "score": 0.5, "bbox": [1, 2, 3, 4]}
    cases: list[tuple[Any, list[int] | None, str]] = [
        ([{**good, "bbox": [1, 2, -3, 4]}], None, r"results\[0\]\['bbox'\] has a negative width"),
        ([good, {**good, "score": float("nan")}], None, r"results\[1\]\['score'\] is NaN"),
        (
            [{**good, "bbox": [1, 2, 3, 4] * 2}],
            None,
            r"`results\[0\]\['bbox'\]` to be \[x, y, w, h\] \(four numbers\) but got",
        ),
        (
            [good, {**good, "bbox": [1, 2, 3]}],
            None,
            r"`results\[1\]\['bbox'\]` to be \[x, y, w, h\]",
        ),
        ([{**good, "image_id": 3}], None, r"results: image ids \[3\] are not in the ground truth"),
        ([good], [107], r"results name images \[100\] missing from image_ids"),
        ([{"image_id": 100, "score": 0.5}], None, r"results\[0\] lacks \['category_id', 'bbox'\]"),
        ("missing.json", None, "results: no results json at 'missing.json'"),
    ]
    for results, image_ids, match in cases:
        with pytest.raises((ValueError, FileNotFoundError), match=match):
            evaluator.update_results(results, image_ids)
    wrong_types: list[tuple[Any, str]] = [
        ([{**good, "image_id": 100.0}], r"`results\[0\]\['image_id'\]` to be an integer id"),
        ([good, {**good, "category_id": 1.7}], r"`results\[1\]\['category_id'\]` to be an"),
        ({"image_id": 100}, "`results` to be a list of COCO result dicts or a path to one but got"),
    ]
    for results, match in wrong_types:
        with pytest.raises(TypeError, match=match):
            evaluator.update_results(results)
    segm = COCOEvaluator(coco_from(make_case(0, iou_type="segm", n_images=1)[0]), "segm")
    with pytest.raises(ValueError, match=r"`results\[0\]\['segmentation'\]` to be an RLE dict"):
        segm.update_results([{**good, "segmentation": {"size": [1, 1], "counts": "1"}}])
    image = segm.coco_gt.imgs[good["image_id"]]
    right = {"size": [image["height"], image["width"]], "counts": "1"}
    for bad in (
        {**right, "size": [str(image["height"]), str(image["width"])]},  # strings, not numbers
        {**right, "size": [image["height"] + 0.5, image["width"]]},
        {"counts": "1"},  # no size
        [[0.0, 0.0, 4.0, 0.0, 4.0, 4.0]],  # a polygon, not an RLE
    ):
        with pytest.raises(ValueError, match=r"`results\[1\]\['segmentation'\]` to be an RLE"):
            segm.update_results([{**good, "segmentation": right}, {**good, "segmentation": bad}])


def test_segm_rejects_masks_of_the_wrong_size() -> None:
    gt, outputs, targets = make_case(1, iou_type="segm", n_images=1, max_dt=3)
    evaluator = COCOEvaluator(coco_from(gt), "segm")
    outputs[0]["masks"] = torch.zeros(len(outputs[0]["scores"]), 1, 3, 3)
    with pytest.raises(ValueError, match=r"`outputs\[0\]\['masks'\]` to have shape"):
        evaluator.update(outputs, targets)


def test_constructor_rejects() -> None:
    with pytest.raises(ValueError, match="`iou_type`"):
        COCOEvaluator(coco_from(GT), "keypoint")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`backend` to be one of"):
        COCOEvaluator(coco_from(GT), backend="gpu")  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError, match="gt: no COCO instances json"):
        COCOEvaluator("/nonexistent/instances.json")
    with pytest.raises(TypeError, match="`gt` to be a path"):
        COCOEvaluator({"images": []})


# ------------------------------------------------------------------- inputs pycocotools accepts

BACKENDS = ["fast", "pycocotools"]


def one_image_gt(anns: list[dict[str, Any]], size: int = 200) -> dict[str, Any]:
    return {
        "images": [{"id": 1, "width": size, "height": size}],
        "annotations": anns,
        "categories": [{"id": c, "name": f"cat{c}"} for c in CATEGORIES],
    }


@pytest.mark.parametrize("backend", BACKENDS)
def test_more_than_255_masks(backend: str) -> None:
    # pycocotools 2.0.11's mask.area overflows a uint8 count on a list of 256 RLEs or more.
    gt, outputs, targets = make_case(3, iou_type="segm", n_images=1)
    rng = np.random.default_rng(0)
    h, w = gt["images"][0]["height"], gt["images"][0]["width"]
    masks = torch.from_numpy(rng.random((300, 1, h, w)) < 0.3)
    outputs = [
        {
            "masks": masks,
            "scores": torch.from_numpy(rng.random(300)).float(),
            "labels": torch.full((300,), CATEGORIES[0]),
        }
    ]
    expected = reference(gt, result_dicts(outputs, targets, "segm"), [100], "segm")[0]
    assert evaluate(gt, outputs, targets, backend, iou_type="segm") == expected
    evaluator = COCOEvaluator(coco_from(gt), "segm", backend=backend)  # type: ignore[arg-type]
    evaluator.update_results(result_dicts(outputs, targets, "segm"), [100])
    assert evaluator.compute(per_category=True) == expected


@pytest.mark.parametrize("backend", BACKENDS)
def test_masks_of_other_sizes_and_categories_in_one_image(backend: str) -> None:
    # The fast backend computes an image's categories in one pycocotools call, each category's
    # masks widened by its index; a ground-truth RLE of another size than its image must still
    # get pycocotools' IoU -1 (never matched), and masks of other categories must not count.
    h, w = 20, 30

    def rle(size: tuple[int, int], rows: slice, cols: slice) -> dict[str, Any]:
        mask = np.zeros(size, np.uint8, order="F")
        mask[rows, cols] = 1
        encoded = mask_utils.encode(mask)
        return {"size": encoded["size"], "counts": encoded["counts"].decode("ascii")}

    cat_a, cat_b = CATEGORIES[0], CATEGORIES[1]
    region = (slice(2, 12), slice(3, 15))
    anns = [
        (cat_a, rle((h, w), *region), 0),
        (cat_a, rle((h, w + 1), *region), 0),  # another width: IoU -1 in pycocotools
        (cat_a, rle((h + 1, w), *region), 1),  # another height, a crowd
        (cat_b, rle((h, w), slice(0, 20), slice(0, 30)), 0),  # the whole image, other category
    ]
    gt = {
        "images": [{"id": 1, "width": w, "height": h}],
        "annotations": [
            {"id": i + 1, "image_id": 1, "category_id": c, "segmentation": m, "area": 120.0}
            | {"bbox": [3.0, 2.0, 12.0, 10.0], "iscrowd": crowd}
            for i, (c, m, crowd) in enumerate(anns)
        ],
        "categories": [{"id": c, "name": f"cat{c}"} for c in CATEGORIES],
    }
    masks = torch.zeros((4, 1, h, w))
    masks[0, 0, 2:12, 3:15] = 1  # on the first ground truth
    masks[1, 0, 2:12, 3:14] = 1  # nearly so: the second ground truth is no match
    masks[2, 0, 0:20, 0:30] = 1  # a category-a mask over everything
    masks[3, 0, 0:10, 0:30] = 1  # half of the category-b ground truth
    outputs = [
        {
            "masks": masks,
            "scores": torch.tensor([0.9, 0.8, 0.7, 0.6]),
            "labels": torch.tensor([cat_a, cat_a, cat_a, cat_b]),
        }
    ]
    targets = [{"image_id": 1}]
    expected = reference(gt, result_dicts(outputs, targets, "segm"), [1], "segm")[0]
    assert expected["AP"] not in (-1.0, 0.0)  # the case has matches and misses
    assert evaluate(gt, outputs, targets, backend, iou_type="segm") == expected


@pytest.mark.parametrize("backend", BACKENDS)
def test_labels_that_are_no_category_are_ignored_and_counted(backend: str) -> None:
    # torchvision's 91-label models emit gap ids; pycocotools and CocoEvaluator ignore them.
    gt, outputs, targets = make_case(5)
    gaps = [dict(o, labels=torch.where(o["scores"] > 0.5, o["labels"], 12)) for o in outputs]
    n_gap = sum(int((o["labels"] == 12).sum()) for o in gaps)
    assert n_gap > 0
    results = result_dicts(gaps, targets, "bbox")
    expected = reference(gt, results, [t["image_id"] for t in targets])[0]
    evaluator = COCOEvaluator(coco_from(gt), backend=backend)  # type: ignore[arg-type]
    evaluator.update(gaps, targets)
    assert evaluator.compute(per_category=True) == expected
    assert evaluator.ignored_detections == n_gap + sum(
        int((o["labels"] == GAP_LABEL).sum()) for o in gaps
    )
    from_results = COCOEvaluator(coco_from(gt), backend=backend)  # type: ignore[arg-type]
    from_results.update_results(results, [t["image_id"] for t in targets])
    assert from_results.compute(per_category=True) == expected
    assert from_results.ignored_detections == evaluator.ignored_detections


@pytest.mark.parametrize("backend", BACKENDS)
def test_boxes_are_converted_as_torchvision_reference(backend: str) -> None:
    # x2 - x1 in float32 is 51.55148, in float64 51.551485; the IoU with the ground truth is
    # 0.74999999 or 0.75000002: AP75 is 0 as torchvision's reference converts, 1 in float64.
    gt = one_image_gt(
        [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 1,
                "bbox": [24.5103816986084, 0.0, 68.73531187029747, 10.0],
                "area": 687.35,
                "iscrowd": 0,
            }
        ]
    )
    boxes = torch.tensor([[24.5103816986084, 0.0, 76.0618667602539, 10.0]], dtype=torch.float32)
    outputs = [{"boxes": boxes, "scores": torch.tensor([0.9]), "labels": torch.tensor([1])}]
    targets = [{"image_id": 1}]
    expected = reference(gt, result_dicts(outputs, targets, "bbox"), [1])[0]
    float64 = [
        {**r, "bbox": [24.5103816986084, 0.0, 76.0618667602539 - 24.5103816986084, 10.0]}
        for r in result_dicts(outputs, targets, "bbox")
    ]
    assert expected["AP75"] == 0.0 and reference(gt, float64, [1])[0]["AP75"] > 0.99
    assert evaluate(gt, outputs, targets, backend) == expected


@pytest.mark.parametrize("backend", BACKENDS)
def test_segm_results_with_boxes_take_the_box_area(backend: str) -> None:
    # detectron2 / mmdet write both; loadRes then takes each area from the box (w * h).
    gt, outputs, targets = make_case(5, iou_type="segm", n_images=3)
    results = result_dicts(outputs, targets, "segm")
    for r in results:  # boxes whose areas fall in other ranges than the masks'
        r["bbox"] = [0.0, 0.0, 40.0, 30.0] if r["score"] > 0.5 else [0.0, 0.0, 5.0, 5.0]
    image_ids = [t["image_id"] for t in targets]
    expected = reference(gt, results, image_ids, "segm")[0]
    without = reference(
        gt, [{k: v for k, v in r.items() if k != "bbox"} for r in results], image_ids, "segm"
    )[0]
    assert expected != without
    evaluator = COCOEvaluator(coco_from(gt), "segm", backend=backend)  # type: ignore[arg-type]
    evaluator.update_results(results, image_ids)
    assert evaluator.compute(per_category=True) == expected


@pytest.mark.parametrize("backend", BACKENDS)
def test_missing_iscrowd_is_zero(backend: str) -> None:
    gt, outputs, targets = make_case(6)
    for ann in gt["annotations"]:
        if not ann.get("iscrowd"):
            ann.pop("iscrowd", None)
    expected = reference(
        gt, result_dicts(outputs, targets, "bbox"), [t["image_id"] for t in targets]
    )[0]
    assert evaluate(gt, outputs, targets, backend) == expected


@pytest.mark.parametrize("backend", BACKENDS)
def test_mini_val_by_filtering_images(backend: str) -> None:
    # A mini-val made by filtering "images" alone keeps annotations of the removed images.
    gt, outputs, targets = make_case(12)
    kept = gt["images"][:3]
    mini = with_stray_annotations({**gt, "images": kept}, [])
    mini["annotations"][-1]["image_id"] = gt["images"][-1]["id"]  # on a removed image
    expected = reference(
        mini, result_dicts(outputs[:3], targets[:3], "bbox"), [i["id"] for i in kept]
    )[0]
    assert evaluate(mini, outputs[:3], targets[:3], backend) == expected


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
@pytest.mark.parametrize("key", ["area", "geometry"])
def test_ground_truth_an_evaluation_reads_must_be_complete(
    backend: str, iou_type: str, key: str
) -> None:
    gt, outputs, targets = make_case(12, iou_type=iou_type, n_images=3)
    geometry = "bbox" if iou_type == "bbox" else "segmentation"
    victim = gt["annotations"][0]
    with pytest.raises(KeyError):  # what pycocotools itself says
        reference(
            {**gt, "annotations": [{k: v for k, v in victim.items() if k != "area"}]},
            result_dicts(outputs, targets, iou_type)[:1],
            [victim["image_id"]],
            iou_type,
        )
    del victim[geometry if key == "geometry" else key]
    evaluator = COCOEvaluator(coco_from(gt), iou_type, backend=backend)  # type: ignore[arg-type]
    evaluator.update(outputs, targets)
    with pytest.raises(ValueError, match=rf"gt: annotations \[{victim['id']}\] of evaluated im"):
        evaluator.compute()


@pytest.mark.parametrize("key", ["id", "image_id", "category_id"])
def test_ground_truth_without_ids_is_refused(tmp_path: Path, key: str) -> None:
    gt = make_case(12, n_images=2)[0]
    del gt["annotations"][1][key]
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(gt))
    with pytest.raises(KeyError), contextlib.redirect_stdout(io.StringIO()):
        COCO(str(path))  # pycocotools' own loader
    for source in (str(path), path):
        with pytest.raises(ValueError, match=rf"gt: annotations\[1\] lacks \['{key}'\]"):
            COCOEvaluator(source)
    categories = {**gt, "annotations": [], "categories": [{"name": "no id"}]}
    path.write_text(json.dumps(categories))
    with pytest.raises(ValueError, match=r"gt: categories\[0\] lacks \['id'\]"):
        COCOEvaluator(path)


@pytest.mark.parametrize("backend", BACKENDS)
def test_repeated_ids_are_refused(backend: str) -> None:
    gt = make_case(0)[0]
    twice = {**gt, "annotations": gt["annotations"] + [dict(gt["annotations"][1])]}
    repeated_id = gt["annotations"][1]["id"]
    with pytest.raises(ValueError, match=rf"gt: annotations ids \[{repeated_id}\] repeat"):
        COCOEvaluator(coco_from(twice), backend=backend)  # type: ignore[arg-type]
    cats = {**gt, "categories": [*gt["categories"], {"id": 3, "name": "again"}]}
    with pytest.raises(ValueError, match=r"gt: categories ids \[3\] repeat"):
        COCOEvaluator(coco_from(cats), backend=backend)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- evaluation parameters

PARAMS = [
    {"iouThrs": np.array([0.3, 0.5, 0.7]), "maxDets": [1, 10, 100]},
    {"maxDets": [2, 20, 300]},
    {"maxDets": [5, 50]},
    {
        "areaRng": [[0, 1e10], [0, 40**2], [40**2, 1e10]],
        "areaRngLbl": ["all", "small", "big"],
        "maxDets": [3, 30, 150],
    },
]


def reference_arrays(
    gt: dict[str, Any], results: list[dict[str, Any]], img_ids: list[int], params: dict[str, Any]
) -> dict[str, float]:
    """The stats named as perfkit names them, from pycocotools' precision / recall arrays:
    COCOeval.summarize's means, with the last maxDets where summarize hard-codes 100."""
    coco_gt = reference_gt(gt)
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(results)), "bbox")
        evaluator.params.imgIds = img_ids
        for key, value in params.items():
            setattr(evaluator.params, key, value)
        evaluator.evaluate()
        evaluator.accumulate()
    p, precision, recall = evaluator.params, evaluator.eval["precision"], evaluator.eval["recall"]

    def mean(values: np.ndarray) -> float:
        return float(np.mean(values[values > -1])) if (values > -1).any() else -1.0

    suffix = {"small": "s", "medium": "m", "large": "l"}
    areas = [(a, lbl) for a, lbl in enumerate(p.areaRngLbl) if lbl != "all"]
    out = {"AP": mean(precision[:, :, :, 0, -1])}
    for thr, name in ((0.5, "AP50"), (0.75, "AP75")):
        if (p.iouThrs == thr).any():
            out[name] = mean(precision[p.iouThrs == thr][:, :, :, 0, -1])
    out |= {"AP" + suffix.get(lbl, f"_{lbl}"): mean(precision[:, :, :, a, -1]) for a, lbl in areas}
    out |= {f"AR{m}": mean(recall[:, :, 0, i]) for i, m in enumerate(p.maxDets)}
    out |= {"AR" + suffix.get(lbl, f"_{lbl}"): mean(recall[:, :, a, -1]) for a, lbl in areas}
    return out


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("params", PARAMS)
def test_parameters_equal_pycocotools(backend: str, params: dict[str, Any]) -> None:
    gt, outputs, targets = make_case(17, max_dt=60)
    image_ids = [t["image_id"] for t in targets]
    results = result_dicts(outputs, targets, "bbox")
    expected = reference_arrays(gt, results, image_ids, params)
    evaluator = COCOEvaluator(
        coco_from(gt),
        backend=backend,  # type: ignore[arg-type]
        iou_thresholds=params.get("iouThrs"),
        max_detections=params["maxDets"],
        area_ranges=dict(zip(params["areaRngLbl"], params["areaRng"], strict=True))
        if "areaRng" in params
        else None,
    )
    evaluator.update(outputs, targets)
    stats = evaluator.compute()
    assert stats == expected
    assert all(v != -1.0 for k, v in stats.items() if k.startswith("AR"))  # no -1 quirk
    assert len(evaluator.summary(stats).splitlines()) == len(stats)
    if params["maxDets"][-1] == 100:  # where pycocotools' own summarize applies, it agrees
        pyco = reference(gt, results, image_ids, params=params)[0]
        assert {k: pyco[k] for k in ("AP", "AR1", "AR10", "AR100")} == {
            k: stats[k] for k in ("AP", "AR1", "AR10", "AR100")
        }


def test_parameters_are_checked() -> None:
    coco = coco_from(GT)
    for kwargs, match in [
        ({"iou_thresholds": [1.5]}, "`iou_thresholds`"),
        ({"max_detections": [0, 10]}, "`max_detections`"),
        ({"max_detections": [10, 10]}, "`max_detections` to be without repeats"),
        ({"area_ranges": {"small": (0, 10)}}, "`area_ranges`.*'all'"),
    ]:
        with pytest.raises(ValueError, match=match):
            COCOEvaluator(coco, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"`max_detections` to be a non-empty sequence of posi"):
        COCOEvaluator(coco, max_detections=[1.5, 10])  # type: ignore[list-item]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("order", [(100, 1, 10), (10, 1, 100), (1, 100, 10)])
def test_max_detections_in_any_order(backend: str, order: tuple[int, ...]) -> None:
    # COCOeval.evaluate sorts maxDets; summarize then reads AR1 / AR10 / AR100 by position.
    gt, outputs, targets = make_case(17, max_dt=60)
    expected = reference(
        gt,
        result_dicts(outputs, targets, "bbox"),
        [t["image_id"] for t in targets],
        params={"maxDets": list(order)},
    )[0]
    assert expected["AR1"] < expected["AR10"]  # the labels cannot be swapped unnoticed
    stats = evaluate(gt, outputs, targets, backend, max_detections=order)
    assert stats == expected


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("use_cats", [True, False])
def test_segm_results_with_boxes_one_image_per_update(backend: str, use_cats: bool) -> None:
    # detectron2 / mmdet style: segm results carry the detector's box, added image by image;
    # an image without results (an update of no rows, so no box either) mixed with the others
    # crashed the concatenation (seed 1 has one).
    gt, outputs, targets = make_case(1, iou_type="segm", n_images=4)
    results = result_dicts(outputs, targets, "segm")
    for r, b in zip(results, result_dicts(outputs, targets, "bbox"), strict=True):
        r["bbox"] = b["bbox"]
    image_ids = [t["image_id"] for t in targets]
    expected = reference(gt, results, image_ids, "segm", use_cats)[0]
    evaluator = COCOEvaluator(coco_from(gt), "segm", backend=backend, use_cats=use_cats)  # type: ignore[arg-type]
    for image in image_ids:
        evaluator.update_results([r for r in results if r["image_id"] == image], [image])
    assert evaluator.compute(per_category=True) == expected


@pytest.mark.parametrize("backend", BACKENDS)
def test_per_category_keys_are_unique(backend: str) -> None:
    # Categories 1 and 3 share a name, 7 has none: each keeps its own AP / AR (pycocotools'
    # arrays by category index), none is dropped.
    gt, outputs, targets = make_case(3)
    expected = reference(
        gt, result_dicts(outputs, targets, "bbox"), [t["image_id"] for t in targets]
    )[0]
    gt["categories"] = [
        {"id": 1, "name": "person"},
        {"id": 3, "name": "person"},
        {"id": 7},
        {"id": 9, "name": "cat9"},
    ]
    stats = evaluate(gt, outputs, targets, backend)
    renamed = {"cat1": "person#1", "cat3": "person#3", "cat7": "#7"}
    for key, value in expected.items():
        kind, _, name = key.partition("/")
        assert stats[f"{kind}/{renamed.get(name, name)}" if name else key] == value
    assert len(stats) == len(expected)
    assert expected["AP/cat1"] != expected["AP/cat3"]  # a collapse would lose one of them


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("box_format", ["xywh", "cxcywh"])
def test_box_formats(backend: str, box_format: str) -> None:
    # Boxes on a 1/8 pixel grid in float64: every conversion below is exact, so the three
    # formats describe the same boxes, and pycocotools evaluates them from the xyxy results.
    gt, outputs, targets = make_case(8)
    for out in outputs:
        out["boxes"] = (out["boxes"].double() * 8).round() / 8
    expected = reference(
        gt, result_dicts(outputs, targets, "bbox"), [t["image_id"] for t in targets]
    )[0]
    converted = []
    for out in outputs:
        x1, y1, x2, y2 = out["boxes"].unbind(1)
        w, h = x2 - x1, y2 - y1
        boxes = (x1, y1, w, h) if box_format == "xywh" else (x1 + w / 2, y1 + h / 2, w, h)
        converted.append({**out, "boxes": torch.stack(boxes, dim=1)})
    stats = evaluate(gt, converted, targets, backend, box_format=box_format)
    assert stats == expected
    with pytest.raises(ValueError, match=r"outputs\[0\]\['boxes'\] row 0 has a negative width"):
        bad = [{**converted[0], "boxes": converted[0]["boxes"] * torch.tensor([1, 1, -1, 1])}]
        COCOEvaluator(coco_from(gt), box_format=box_format).update(bad, targets[:1])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`box_format`"):
        COCOEvaluator(coco_from(gt), box_format="yxyx")  # type: ignore[arg-type]


# ---------------------------------------------------------------------- eval arrays


def reference_eval(
    gt: dict[str, Any],
    results: list[dict[str, Any]],
    img_ids: list[int],
    iou_type: str = "bbox",
    use_cats: bool = True,
    params: dict[str, Any] | None = None,
) -> dict[str, np.ndarray]:
    """pycocotools' ``COCOeval.eval`` arrays (precision, recall, scores)."""
    evaluator = reference_cocoeval(gt, results, img_ids, iou_type, use_cats, params)
    return {key: evaluator.eval[key] for key in ("precision", "recall", "scores")}


def assert_same_arrays(ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray]) -> None:
    assert set(ours) == set(theirs)
    for key, expected in theirs.items():
        assert ours[key].shape == expected.shape, key
        assert np.array_equal(ours[key], expected), key  # element by element, bit for bit


REC_THRS = [None, [0.0, 0.3, 0.55, 1.0], [0.25, 0.5], [0.0]]


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    use_cats=st.booleans(),
    rec=st.sampled_from(REC_THRS),
)
def test_eval_arrays_equal_pycocotools(
    backend: str, seed: int, use_cats: bool, rec: list[float] | None
) -> None:
    gt, outputs, targets = make_case(seed)
    params = {} if rec is None else {"recThrs": np.array(rec)}
    expected = reference_eval(
        gt,
        result_dicts(outputs, targets, "bbox"),
        [t["image_id"] for t in targets],
        use_cats=use_cats,
        params=params,
    )
    evaluator = COCOEvaluator(
        coco_from(gt),
        backend=backend,  # type: ignore[arg-type]
        use_cats=use_cats,
        recall_thresholds=rec,
    )
    evaluator.update(outputs, targets)
    stats = evaluator.compute()
    assert_same_arrays(evaluator.eval, expected)
    if rec is not None:  # the stats are the means of those arrays
        p = expected["precision"][:, :, :, 0, -1]
        assert stats["AP"] == (float(np.mean(p[p > -1])) if (p > -1).any() else -1.0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_eval_arrays_segm_and_parameters(backend: str) -> None:
    gt, outputs, targets = make_case(4, iou_type="segm", n_images=4)
    results = result_dicts(outputs, targets, "segm")
    image_ids = [t["image_id"] for t in targets]
    params = {**PARAMS[3], "recThrs": np.array([0.0, 0.1, 0.9])}
    expected = reference_eval(gt, results, image_ids, "segm", params=params)
    evaluator = COCOEvaluator(
        coco_from(gt),
        "segm",
        backend=backend,  # type: ignore[arg-type]
        max_detections=params["maxDets"],
        area_ranges=dict(zip(params["areaRngLbl"], params["areaRng"], strict=True)),
        recall_thresholds=[0.0, 0.1, 0.9],
    )
    evaluator.update_results(results, image_ids)
    evaluator.compute()
    assert_same_arrays(evaluator.eval, expected)


def test_recall_thresholds_are_checked() -> None:
    for bad in ([], [0.5, 0.2], [1.5], [[0.1]]):
        with pytest.raises(ValueError, match="`recall_thresholds`"):
            COCOEvaluator(coco_from(GT), recall_thresholds=bad)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- keypoints

KP_STATS = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")


def make_keypoint_case(
    seed: int, n_images: int = 5, n_points: int = 17
) -> tuple[dict[str, Any], list[dict[str, torch.Tensor]], list[dict[str, int]]]:
    """People with ``n_points`` keypoints (COCO's layout: v = 0 unlabeled at (0, 0), 1 hidden,
    2 visible), crowds and people without labelled keypoints (ignored by COCOeval), two
    categories, and Keypoint R-CNN style outputs: noisy copies, strays, score ties, sometimes
    more than 20 detections."""
    rng = np.random.default_rng(seed)
    images, anns, outputs, targets = [], [], [], []
    ann_id = 1
    for i in range(n_images):
        image_id = 10 + i
        images.append({"id": image_id, "width": 640, "height": 480})
        people = []
        for _ in range(int(rng.integers(0, 6))):
            w, h = rng.uniform(8, 200, 2)
            x, y = rng.uniform(0, 640 - w), rng.uniform(0, 480 - h)
            px, py = rng.uniform(x, x + w, n_points), rng.uniform(y, y + h, n_points)
            v = rng.choice([0, 1, 2], n_points, p=[0.3, 0.2, 0.5])
            if rng.random() < 0.15:
                v[:] = 0  # no labelled keypoint: ignored, but its box still bounds OKS
            crowd = int(rng.random() < 0.1)
            if crowd:
                v[:] = 0
            points = np.stack([np.where(v > 0, px, 0), np.where(v > 0, py, 0), v], 1)
            category = int(rng.choice([1, 2], p=[0.8, 0.2]))
            anns.append(
                {
                    "id": ann_id,
                    "image_id": image_id,
                    "category_id": category,
                    "bbox": [float(x), float(y), float(w), float(h)],
                    "area": float(w * h * rng.uniform(0.5, 1.0)),
                    "iscrowd": crowd,
                    "keypoints": [
                        float(c) if j % 3 < 2 else int(c) for j, c in enumerate(points.ravel())
                    ],
                    "num_keypoints": int((v > 0).sum()),
                }
            )
            people.append((px, py, w * h, category))
            ann_id += 1
        dets = []
        for px, py, area, category in people:
            for _ in range(int(rng.integers(0, 3))):
                noise = rng.normal(0, np.sqrt(area) * rng.uniform(0.01, 0.2), (2, n_points))
                dets.append((px + noise[0], py + noise[1], category))
        n_stray = int(rng.integers(0, 4)) if rng.random() < 0.8 else 25
        for _ in range(n_stray):
            cx, cy = rng.uniform(0, 640), rng.uniform(0, 480)
            dets.append((cx + rng.normal(0, 20, n_points), cy + rng.normal(0, 20, n_points), 1))
        n = len(dets)
        keypoints = torch.zeros(n, n_points, 3)
        for j, (x, y, _) in enumerate(dets):
            keypoints[j, :, 0], keypoints[j, :, 1] = torch.tensor(x), torch.tensor(y)
        keypoints[:, :, 2] = 1  # torchvision's visibility
        outputs.append(
            {
                "boxes": torch.zeros(n, 4),
                "keypoints": keypoints,
                "scores": torch.tensor(rng.integers(1, 12, n) / 12, dtype=torch.float32),
                "labels": torch.tensor([c for _, _, c in dets], dtype=torch.int64),
            }
        )
        targets.append({"image_id": image_id})
    categories = [{"id": 1, "name": "person"}, {"id": 2, "name": "robot"}]
    return {"images": images, "annotations": anns, "categories": categories}, outputs, targets


def keypoint_results(
    outputs: list[dict[str, torch.Tensor]], targets: list[dict[str, int]]
) -> list[dict[str, Any]]:
    """torchvision's reference ``prepare_for_coco_keypoint``: flattened keypoints, tolist."""
    return [
        {"image_id": t["image_id"], "category_id": c, "keypoints": k, "score": s}
        for out, t in zip(outputs, targets, strict=True)
        for k, s, c in zip(
            out["keypoints"].flatten(start_dim=1).tolist(),
            out["scores"].tolist(),
            out["labels"].tolist(),
            strict=True,
        )
    ]


def reference_keypoints(
    gt: dict[str, Any],
    results: list[dict[str, Any]],
    img_ids: list[int],
    sigmas: np.ndarray | None = None,
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """pycocotools' keypoint stats (summarize's ten) and eval arrays."""
    coco_gt = reference_gt(gt)
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(results)), "keypoints")
        evaluator.params.imgIds = img_ids
        if sigmas is not None:
            evaluator.params.kpt_oks_sigmas = sigmas
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = dict(zip(KP_STATS, evaluator.stats.tolist(), strict=True))
    return stats, {key: evaluator.eval[key] for key in ("precision", "recall", "scores")}


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), as_results=st.booleans())
def test_keypoints_equal_pycocotools(backend: str, seed: int, as_results: bool) -> None:
    gt, outputs, targets = make_keypoint_case(seed)
    image_ids = [t["image_id"] for t in targets]
    results = keypoint_results(outputs, targets)
    expected, arrays = reference_keypoints(gt, results, image_ids)
    evaluator = COCOEvaluator(coco_from(gt), "keypoints", backend=backend)  # type: ignore[arg-type]
    if as_results:
        evaluator.update_results(results, image_ids)
    else:
        for start in range(0, len(outputs), 2):
            evaluator.update(outputs[start : start + 2], targets[start : start + 2])
    stats = evaluator.compute()
    assert stats == expected
    assert_same_arrays(evaluator.eval, arrays)
    assert len(evaluator.summary(stats).splitlines()) == len(KP_STATS)


@pytest.mark.parametrize("backend", BACKENDS)
def test_keypoints_with_other_sigmas(backend: str) -> None:
    # 5 keypoints of another skeleton, each with its own sigma.
    gt, outputs, targets = make_keypoint_case(3, n_points=5)
    sigmas = np.array([0.3, 0.5, 0.7, 0.9, 1.1]) / 10
    image_ids = [t["image_id"] for t in targets]
    expected, arrays = reference_keypoints(
        gt, keypoint_results(outputs, targets), image_ids, sigmas
    )
    evaluator = COCOEvaluator(
        coco_from(gt),
        "keypoints",
        backend=backend,  # type: ignore[arg-type]
        keypoint_sigmas=sigmas.tolist(),
    )
    evaluator.update(outputs, targets)
    assert evaluator.compute() == expected
    assert_same_arrays(evaluator.eval, arrays)
    with pytest.raises(
        ValueError, match=r"gt: annotation 1 has 15 keypoint values; expected 3 x 17"
    ):
        COCOEvaluator(coco_from(gt), "keypoints")
    with pytest.raises(ValueError, match=r"`outputs\[0\]\['keypoints'\]` to have shape"):
        wrong = COCOEvaluator(coco_from(gt), "keypoints", keypoint_sigmas=[0.1] * 5)
        wrong.update([{**outputs[0], "keypoints": outputs[0]["keypoints"][:, :4]}], targets[:1])


def test_keypoints_bad_input() -> None:
    gt, outputs, targets = make_keypoint_case(1)
    with pytest.raises(ValueError, match="use_cats=False"):
        COCOEvaluator(coco_from(gt), "keypoints", use_cats=False)
    with pytest.raises(ValueError, match="`keypoint_sigmas`"):
        COCOEvaluator(coco_from(gt), "keypoints", keypoint_sigmas=[0.0] * 17)
    results = keypoint_results(outputs, targets)
    evaluator = COCOEvaluator(coco_from(gt), "keypoints")
    with pytest.raises(ValueError, match=r"`results\[0\]\['keypoints'\]` to be 51 numbers"):
        evaluator.update_results(
            [{**results[0], "keypoints": [1.0, 2.0]}], [targets[0]["image_id"]]
        )
    no_count = copy.deepcopy(gt)
    victim = no_count["annotations"][0]
    del victim["num_keypoints"]
    evaluator = COCOEvaluator(coco_from(no_count), "keypoints", backend="pycocotools")
    evaluator.update(outputs, targets)
    with pytest.raises(ValueError, match=rf"gt: annotations \[{victim['id']}\] of evaluated"):
        evaluator.compute()


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_oks_is_pycocotools_bit_for_bit(seed: int) -> None:
    # Every (detection, ground truth) OKS of COCOeval.computeOks, through 0..17 visible points.
    gt, outputs, targets = make_keypoint_case(seed, n_images=3)
    results = keypoint_results(outputs, targets)
    coco_gt = reference_gt(gt)
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(results)), "keypoints")
        evaluator.evaluate()
    for (image, cat), ious in evaluator.ious.items():
        if not len(ious):
            continue
        gts, dts = evaluator._gts[image, cat], evaluator._dts[image, cat]
        dts = [dts[i] for i in np.argsort([-d["score"] for d in dts], kind="mergesort")][:20]
        pair_det, pair_gt = (a.ravel() for a in np.indices((len(dts), len(gts))))
        ours = _cocoeval._oks(
            np.array([d["keypoints"] for d in dts], float),
            np.array([g["keypoints"] for g in gts], float),
            np.array([g["bbox"] for g in gts], float),
            np.array([g["area"] for g in gts], float),
            pair_det,
            pair_gt,
            _cocoeval.KP_SIGMAS,
        )
        assert np.array_equal(ours.reshape(ious.shape), ious)


# ---------------------------------------------------------------------- bbox and segm together


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("as_results", [False, True])
def test_bbox_and_segm_in_one_evaluator(backend: str, as_results: bool) -> None:
    # One update with boxes and masks (Mask R-CNN's outputs), both results; as COCO results,
    # each record holds both, and the segm evaluation takes the box's area (loadRes' rule).
    gt, outputs, targets = make_case(6, iou_type="segm", n_images=4)
    image_ids = [t["image_id"] for t in targets]
    boxes, masks = result_dicts(outputs, targets, "bbox"), result_dicts(outputs, targets, "segm")
    both = [{**m, "bbox": b["bbox"]} for b, m in zip(boxes, masks, strict=True)]
    expected = {f"bbox/{k}": v for k, v in reference(gt, boxes, image_ids, "bbox")[0].items()}
    segm = reference(gt, both if as_results else masks, image_ids, "segm")[0]
    expected |= {f"segm/{k}": v for k, v in segm.items()}
    arrays = {
        f"{t}/{k}": v
        for t, results in (("bbox", boxes), ("segm", both if as_results else masks))
        for k, v in reference_eval(gt, results, image_ids, t).items()
    }
    evaluator = COCOEvaluator(coco_from(gt), ("bbox", "segm"), backend=backend)  # type: ignore[arg-type]
    if as_results:
        evaluator.update_results(both, image_ids)
    else:
        evaluator.update(outputs[:2], targets[:2])
        evaluator.update(outputs[2:], targets[2:])
    stats = evaluator.compute(per_category=True)
    assert stats == expected
    assert_same_arrays(evaluator.eval, arrays)
    text = evaluator.summary(stats).splitlines()
    assert text[0] == "IoU metric: bbox" and text[13] == "IoU metric: segm" and len(text) == 26
    for bad in ((), ("bbox", "bbox"), ("bbox", "keypoints"), ("box",)):
        with pytest.raises(ValueError, match="`iou_type`"):
            COCOEvaluator(coco_from(gt), bad)  # type: ignore[arg-type]


def reference_ious(
    gt: dict[str, Any],
    results: list[dict[str, Any]],
    img_ids: list[int],
    iou_type: str,
    use_cats: bool,
) -> dict[tuple[int, int], np.ndarray]:
    """pycocotools' ``COCOeval.ious`` of the pairs that have both detections and ground truth."""
    coco_gt = reference_gt(gt)
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(results)), iou_type)
        evaluator.params.imgIds = img_ids
        evaluator.params.useCats = int(use_cats)
        evaluator.evaluate()
    return {key: np.asarray(m) for key, m in evaluator.ious.items() if len(m)}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("iou_type", "use_cats"),
    [("bbox", True), ("bbox", False), ("segm", True), ("segm", False), ("keypoints", True)],
)
def test_per_image_ious_equal_pycocotools(backend: str, iou_type: str, use_cats: bool) -> None:
    if iou_type == "keypoints":
        gt, outputs, targets = make_keypoint_case(5)
        results = keypoint_results(outputs, targets)
    else:  # bbox seed 4: 108 detections on an image, of which the matrix keeps the best 100
        seed = 4 if iou_type == "bbox" else 2
        gt, outputs, targets = make_case(seed, iou_type=iou_type, n_images=6)
        results = result_dicts(outputs, targets, iou_type)
    image_ids = [t["image_id"] for t in targets]
    expected = reference_ious(gt, results, image_ids, iou_type, use_cats)
    evaluator = COCOEvaluator(
        coco_from(gt),
        iou_type,  # type: ignore[arg-type]
        backend=backend,  # type: ignore[arg-type]
        use_cats=use_cats,
        per_image_ious=True,
    )
    evaluator.update_results(results, image_ids)
    evaluator.compute()
    ours = evaluator.eval["ious"]
    assert sorted(ours) == sorted(expected) and len(expected) >= 3
    for key, matrix in expected.items():
        assert ours[key].shape == matrix.shape and np.array_equal(ours[key], matrix), key
