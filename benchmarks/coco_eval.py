"""COCO bbox and segm evaluation speed against pycocotools and faster-coco-eval, in one run.

Data (generated, seed 0): 5000 images x 100 detections with COCO-like statistics - objects per
image Poisson(7.3), 80 categories with Zipf-like frequencies, log-normal box areas (about 41 %
small, 34 % medium, 25 % large, as in val2017), 1 % crowd. Per image about half the detections
jitter around ground-truth boxes with high scores (80 % with the right category), the rest are
background boxes with low scores, as a detector's top-100 list looks.

Every library starts from the same torchvision-style outputs (per-image dicts of float32 xyxy boxes,
scores, labels; batches of 8) and ends with the twelve stats. pycocotools and faster-coco-eval get
COCO result dicts made as torchvision's reference evaluator makes them (xywh, ``.tolist()``, one
dict per box); their time includes that conversion and ``loadRes``. Ground-truth loading is not
timed.

segm: the first 500 images of the same data, ground truth as polygons (an octagon in each box),
detections as COCO results with RLE masks (an octagon in each detected box, encoded beforehand, as
a results json of Mask R-CNN holds them). perfkit gets them through ``update_results``, the others
through ``loadRes``; everything from there to the stats is timed, ground-truth polygons to RLEs
included.

Targets: perfkit at least 2.5x faster than faster-coco-eval on bbox and 4x on segm, with
pycocotools' exact numbers. Run: ``python -m benchmarks.coco_eval`` (needs the ``bench`` extra for
faster-coco-eval).

keypoints (``--keypoints``, its own section): the same images and ground truth with 20 detections
per image; each box carries 17 keypoints at fixed places of a person template, jittered (ground
truth: 30 % unlabelled, 10 % hidden). perfkit evaluates the same detections as keypoints and as
boxes, interleaved, and pycocotools runs ``iouType="keypoints"`` once. Target: keypoints within 2x
of bbox on the same counts.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import io
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from benchmarks.results import machine, write_section
from perfkit.metrics import STAT_NAMES, COCOEvaluator

Outputs = list[dict[str, torch.Tensor]]


def make_dataset(
    n_images: int, dets_per_image: int, seed: int = 0
) -> tuple[dict[str, Any], Outputs, list[dict[str, int]]]:
    """COCO ground truth and a detector's outputs for it (see the module docstring)."""
    rng = np.random.default_rng(seed)
    n_cats = 80
    width = rng.choice([640, 480, 500, 427], n_images)
    height = rng.choice([480, 640, 375, 333], n_images)
    n_gt = rng.poisson(7.3, n_images)
    img = np.repeat(np.arange(n_images), n_gt)
    freq = 1.0 / np.arange(1, n_cats + 1) ** 1.1
    freq /= freq.sum()
    cat = rng.choice(n_cats, len(img), p=freq)
    area = np.exp(rng.normal(7.49, 2.44, len(img))).clip(4, None)  # lognormal fit to val2017
    aspect = np.exp(rng.normal(0, 0.5, len(img)))
    w = np.minimum(np.sqrt(area * aspect), width[img])
    h = np.minimum(area / np.sqrt(area * aspect), height[img])
    x, y = rng.random(len(img)) * (width[img] - w), rng.random(len(img)) * (height[img] - h)
    gt = {
        "images": [
            {"id": i + 1, "width": int(width[i]), "height": int(height[i])} for i in range(n_images)
        ],
        "annotations": [
            {
                "id": k + 1,
                "image_id": int(img[k]) + 1,
                "category_id": int(cat[k]) + 1,
                "bbox": [float(x[k]), float(y[k]), float(w[k]), float(h[k])],
                "area": float(w[k] * h[k] * 0.8),  # a mask covers part of its box
                "iscrowd": int(rng.random() < 0.01),
            }
            for k in range(len(img))
        ],
        "categories": [{"id": c + 1, "name": f"class{c + 1}"} for c in range(n_cats)],
    }
    outputs = []
    first_gt = np.concatenate([[0], np.cumsum(n_gt)])
    for i in range(n_images):
        own = np.arange(first_gt[i], first_gt[i + 1])
        n_hit = min(dets_per_image // 2, 6 * len(own))
        src = rng.choice(own, n_hit) if n_hit else np.zeros(0, int)
        jitter = rng.normal(0, 0.1, (n_hit, 4))
        near = np.stack(
            [
                x[src] + jitter[:, 0] * w[src],
                y[src] + jitter[:, 1] * h[src],
                w[src] * np.exp(jitter[:, 2]),
                h[src] * np.exp(jitter[:, 3]),
            ],
            axis=1,
        )
        n_bg = dets_per_image - n_hit
        bg_area = np.exp(rng.normal(7, 1.8, n_bg))
        bg = np.stack(
            [
                rng.uniform(0, width[i], n_bg),
                rng.uniform(0, height[i], n_bg),
                np.sqrt(bg_area),
                np.sqrt(bg_area),
            ],
            axis=1,
        )
        labels = np.concatenate(
            [
                np.where(rng.random(n_hit) < 0.8, cat[src], rng.integers(0, n_cats, n_hit)),
                rng.choice(n_cats, n_bg, p=freq),
            ]
        )
        scores = np.concatenate(
            [np.clip(rng.beta(5, 2, n_hit) - np.abs(jitter).sum(1), 0.05, 1), rng.beta(1, 6, n_bg)]
        )
        xywh = np.concatenate([near, bg])
        order = np.argsort(-scores, kind="stable")  # a detector returns its list by score
        xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)[order]
        outputs.append(
            {
                "boxes": torch.tensor(xyxy, dtype=torch.float32),
                "scores": torch.tensor(scores[order], dtype=torch.float32),
                "labels": torch.tensor(labels[order] + 1),
            }
        )
    return gt, outputs, [{"image_id": i + 1} for i in range(n_images)]


def batches(outputs: Outputs, targets: list[dict[str, int]], size: int = 8) -> Any:
    for start in range(0, len(outputs), size):
        yield outputs[start : start + size], targets[start : start + size]


def reference_results(outputs: Outputs, targets: list[dict[str, int]]) -> list[dict[str, Any]]:
    """torchvision's ``prepare_for_coco_detection``: xywh in the boxes' float32, then tolist."""
    results: list[dict[str, Any]] = []
    for batch_out, batch_tgt in batches(outputs, targets):
        for out, target in zip(batch_out, batch_tgt, strict=True):
            xmin, ymin, xmax, ymax = out["boxes"].unbind(1)
            boxes = torch.stack((xmin, ymin, xmax - xmin, ymax - ymin), dim=1)
            results.extend(
                {"image_id": target["image_id"], "category_id": c, "bbox": b, "score": s}
                for b, s, c in zip(
                    boxes.tolist(), out["scores"].tolist(), out["labels"].tolist(), strict=True
                )
            )
    return results


def _octagon(x: np.ndarray, y: np.ndarray, w: np.ndarray, h: np.ndarray) -> np.ndarray:
    """(N, 16) polygons: an octagon inscribed in each xywh box, corners cut at 30 %."""
    fx = np.array([0.3, 0.7, 1, 1, 0.7, 0.3, 0, 0])
    fy = np.array([0, 0, 0.3, 0.7, 1, 1, 0.7, 0.3])
    px, py = x[:, None] + fx * w[:, None], y[:, None] + fy * h[:, None]
    return np.stack([px, py], axis=2).reshape(len(x), 16)


def make_segm_dataset(
    gt: dict[str, Any], outputs: Outputs, targets: list[dict[str, int]], n_images: int
) -> tuple[dict[str, Any], list[dict[str, Any]], list[int]]:
    """Polygon ground truth and RLE results for the first ``n_images`` (module docstring)."""
    from pycocotools import mask as mask_utils

    images = gt["images"][:n_images]
    keep = {img["id"] for img in images}
    anns = [dict(a) for a in gt["annotations"] if a["image_id"] in keep]
    boxes = np.array([a["bbox"] for a in anns]).reshape(-1, 4)
    for ann, poly in zip(anns, _octagon(*boxes.T).tolist(), strict=True):
        ann["segmentation"] = [poly]
    size = {img["id"]: (img["height"], img["width"]) for img in images}
    results: list[dict[str, Any]] = []
    for r in reference_results(outputs[:n_images], targets[:n_images]):
        h, w = size[r["image_id"]]
        poly = _octagon(*np.array(r["bbox"])[:, None]).tolist()
        rle = mask_utils.merge(mask_utils.frPyObjects(poly, h, w))
        rle["counts"] = rle["counts"].decode("ascii")
        results.append({k: v for k, v in r.items() if k != "bbox"} | {"segmentation": rle})
    return {**gt, "images": images, "annotations": anns}, results, sorted(keep)


def run_cocoeval(
    coco_gt: Any,
    cocoeval: Callable[..., Any],
    convert: Callable[[], list[dict[str, Any]]],
    iou_type: str = "bbox",
) -> tuple[float, float, np.ndarray]:
    """(conversion s, evaluation s, stats) for a pycocotools-compatible COCOeval class."""
    t0 = time.perf_counter()
    results = convert()
    t1 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = cocoeval(coco_gt, coco_gt.loadRes(results), iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return t1 - t0, time.perf_counter() - t1, np.asarray(evaluator.stats)


def run_perfkit(
    coco_gt: Any, outputs: Outputs, targets: list[dict[str, int]]
) -> tuple[float, float, np.ndarray]:
    t0 = time.perf_counter()
    evaluator = COCOEvaluator(coco_gt, progress=False)
    for batch_out, batch_tgt in batches(outputs, targets):
        evaluator.update(batch_out, batch_tgt)
    t1 = time.perf_counter()
    stats = evaluator.compute()
    return t1 - t0, time.perf_counter() - t1, np.array([stats[k] for k in STAT_NAMES])


def run_perfkit_segm(
    coco_gt: Any, results: list[dict[str, Any]], image_ids: list[int]
) -> tuple[float, float, np.ndarray]:
    t0 = time.perf_counter()
    evaluator = COCOEvaluator(coco_gt, "segm", progress=False)
    evaluator.update_results(results, image_ids)
    stats = evaluator.compute()
    return 0.0, time.perf_counter() - t0, np.array([stats[k] for k in STAT_NAMES])


#: A standing person's 17 COCO keypoints as fractions of its box (nose, eyes, ears, shoulders,
#: elbows, wrists, hips, knees, ankles).
_TEMPLATE = np.array(
    [
        [0.50, 0.08], [0.45, 0.06], [0.55, 0.06], [0.40, 0.08], [0.60, 0.08],
        [0.30, 0.22], [0.70, 0.22], [0.22, 0.38], [0.78, 0.38], [0.18, 0.52], [0.82, 0.52],
        [0.38, 0.55], [0.62, 0.55], [0.38, 0.75], [0.62, 0.75], [0.38, 0.95], [0.62, 0.95],
    ]
)  # fmt: skip


def _keypoints_in(xywh: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(N, 17, 2): the template placed in each xywh box, jittered by 3 % of the box."""
    jitter = rng.normal(0, 0.03, (len(xywh), 17, 2))
    return xywh[:, None, :2] + (_TEMPLATE + jitter) * xywh[:, None, 2:]


def make_keypoint_dataset(
    gt: dict[str, Any], outputs: Outputs, dets_per_image: int, seed: int = 1
) -> tuple[dict[str, Any], Outputs]:
    """Keypoint ground truth and Keypoint R-CNN style outputs (module docstring): the top
    ``dets_per_image`` detections of each image, with keypoints in their boxes."""
    rng = np.random.default_rng(seed)
    anns = [dict(a) for a in gt["annotations"]]
    boxes = np.array([a["bbox"] for a in anns]).reshape(-1, 4)
    points = _keypoints_in(boxes, rng)
    visibility = rng.choice([0, 1, 2], (len(anns), 17), p=[0.3, 0.1, 0.6])
    labelled = np.where(visibility[..., None] > 0, points, 0)
    flat = np.concatenate([labelled, visibility[..., None]], axis=2).reshape(len(anns), 51)
    for ann, row, v in zip(anns, flat.tolist(), visibility, strict=True):
        ann["keypoints"] = row
        ann["num_keypoints"] = int((v > 0).sum())
    kp_outputs = []
    for out in outputs:
        top = {key: value[:dets_per_image] for key, value in out.items()}
        xyxy = top["boxes"].double().numpy()
        xywh = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)
        keypoints = np.concatenate([_keypoints_in(xywh, rng), np.ones((len(xywh), 17, 1))], axis=2)
        kp_outputs.append({**top, "keypoints": torch.tensor(keypoints, dtype=torch.float32)})
    return {**gt, "annotations": anns}, kp_outputs


def keypoint_results(outputs: Outputs, targets: list[dict[str, int]]) -> list[dict[str, Any]]:
    """torchvision's ``prepare_for_coco_keypoint``: flattened keypoints, ``tolist``."""
    return [
        {"image_id": target["image_id"], "category_id": c, "keypoints": k, "score": s}
        for out, target in zip(outputs, targets, strict=True)
        for k, s, c in zip(
            out["keypoints"].flatten(start_dim=1).tolist(),
            out["scores"].tolist(),
            out["labels"].tolist(),
            strict=True,
        )
    ]


KP_STAT_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")


def run_perfkit_as(
    iou_type: str, coco_gt: Any, outputs: Outputs, targets: list[dict[str, int]]
) -> tuple[float, float, np.ndarray]:
    """perfkit's (update s, compute s, stats) on ``outputs`` evaluated as ``iou_type``."""
    t0 = time.perf_counter()
    evaluator = COCOEvaluator(coco_gt, iou_type, progress=False)  # type: ignore[arg-type]
    for batch_out, batch_tgt in batches(outputs, targets):
        evaluator.update(batch_out, batch_tgt)
    t1 = time.perf_counter()
    stats = evaluator.compute()
    names = KP_STAT_NAMES if iou_type == "keypoints" else STAT_NAMES
    return t1 - t0, time.perf_counter() - t1, np.array([stats[k] for k in names])


def keypoints_section(images: int, dets: int, repeats: int) -> str:
    """The keypoints section's text (module docstring), measured now."""
    from pycocotools.cocoeval import COCOeval

    gt, outputs, targets = make_dataset(images, 100)
    kp_gt, kp_outputs = make_keypoint_dataset(gt, outputs, dets)
    runs = repeated(
        {
            "perfkit keypoints": lambda: run_perfkit_as(
                "keypoints", coco_objects(kp_gt, faster=False)[0], kp_outputs, targets
            ),
            "perfkit bbox (same detections)": lambda: run_perfkit_as(
                "bbox", coco_objects(kp_gt, faster=False)[0], kp_outputs, targets
            ),
            "pycocotools keypoints": lambda: run_cocoeval(
                coco_objects(kp_gt, faster=False)[0],
                COCOeval,
                lambda: keypoint_results(kp_outputs, targets),
                "keypoints",
            ),
        },
        {"perfkit keypoints": repeats, "perfkit bbox (same detections)": repeats,
         "pycocotools keypoints": 1},
    )  # fmt: skip
    kp, box, reference = (runs[name] for name in runs)
    rows = []
    for name, (convert, evaluate, stats) in runs.items():
        same = "bbox" not in name
        diff = float(np.abs(stats - reference[2]).max()) if same else float("nan")
        agreement = "identical" if diff == 0 else ("-" if not same else f"{diff:.1e}")
        rows.append(
            f"| {name} | {convert:.2f} | {evaluate:.2f} | {convert + evaluate:.2f} | "
            f"{stats[0]:.6f} | {agreement} |"
        )
    ratio = (kp[0] + kp[1]) / (box[0] + box[1])
    return "\n".join(
        [
            machine(),
            f"torch {torch.__version__}, numpy {np.__version__}; perfkit {repeats} runs each, "
            "interleaved, the median shown; pycocotools one run; load average (1 min) at the end: "
            f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores.",
            "",
            f"**keypoints**: {images} images x {dets} detections ({images * dets} people, 17 "
            f"keypoints each), {len(kp_gt['annotations'])} ground truths, 80 categories "
            "(generated: `python -m benchmarks.coco_eval --keypoints`). Conversion = `update` per "
            "batch of 8 (pycocotools: result dicts as torchvision's reference makes them); "
            "evaluation = `compute` (pycocotools: `loadRes`, evaluate, accumulate, summarize). "
            f"Keypoints take **{ratio:.2f}x** the time of bbox on the same detections (target: "
            "within 2x).",
            "",
            "| run | conversion (s) | evaluation (s) | total (s) | AP | max abs diff of the 10 "
            "stats vs pycocotools |",
            "|---|---|---|---|---|---|",
            *rows,
        ]
    )


def coco_objects(gt: dict[str, Any], faster: bool = True) -> list[Any]:
    """The ground truth indexed by pycocotools' and by faster-coco-eval's ``COCO``."""
    from pycocotools.coco import COCO

    classes: list[Any] = [COCO]
    if faster:
        from faster_coco_eval import COCO as FasterCOCO

        classes.append(FasterCOCO)
    out = []
    for cls in classes:
        coco = cls()
        coco.dataset = copy.deepcopy(gt)
        with contextlib.redirect_stdout(io.StringIO()):
            coco.createIndex()
        out.append(coco)
    return out


def table(runs: dict[str, tuple[float, float, np.ndarray]], reference: str) -> list[str]:
    """Markdown rows: times, speed-ups over pycocotools and the peer, and the stats' agreement."""
    reference_stats = runs["pycocotools"][2]
    totals = {name: convert + evaluate for name, (convert, evaluate, _) in runs.items()}
    rows = []
    for name, (convert, evaluate, stats) in runs.items():
        diff = float(np.abs(stats - reference_stats).max())
        rows.append(
            f"| {name} | {convert:.2f} | {evaluate:.2f} | {totals[name]:.2f} | "
            f"{totals['pycocotools'] / totals[name]:.1f}x | "
            f"{totals[reference] / totals[name]:.2f}x | {stats[0]:.6f} | "
            f"{'identical' if diff == 0 else f'{diff:.1e}'} |"
        )
    return rows


Result = tuple[float, float, np.ndarray]


def repeated(runs: dict[str, Callable[[], Result]], repeats: dict[str, int]) -> dict[str, Result]:
    """Each run ``repeats[name]`` times, interleaved (round r runs every library still due), with
    a full garbage collection before each so that no run pays for another's garbage; the result
    of the repetition with the median total time."""
    done: dict[str, list[Result]] = {name: [] for name in runs}
    for round_ in range(max(repeats.values())):
        for name, run in runs.items():
            if round_ < repeats[name]:
                gc.collect()
                done[name].append(run())
    return {
        name: sorted(results, key=lambda r: r[0] + r[1])[(len(results) - 1) // 2]
        for name, results in done.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--dets", type=int, default=100)
    parser.add_argument("--segm-images", type=int, default=500)
    parser.add_argument(
        "--repeats", type=int, default=5, help="runs of perfkit and faster-coco-eval (median)"
    )
    parser.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md")
    parser.add_argument(
        "--keypoints", action="store_true", help="only the keypoints section (no faster-coco-eval)"
    )
    parser.add_argument("--kp-dets", type=int, default=20, help="keypoint detections per image")
    args = parser.parse_args()
    if args.keypoints:
        text = keypoints_section(args.images, args.kp_dets, args.repeats)
        print(text)
        if not args.no_write:
            write_section("COCO keypoints evaluation (issue 24)", text)
        return

    from faster_coco_eval import COCOeval_faster
    from faster_coco_eval import __version__ as faster_version
    from pycocotools.cocoeval import COCOeval

    faster = f"faster-coco-eval {faster_version}"
    # pycocotools, the slow reference, runs once; the others args.repeats times.
    repeats = {"perfkit (backend fast)": args.repeats, faster: args.repeats, "pycocotools": 1}
    gt, outputs, targets = make_dataset(args.images, args.dets)
    # Every run gets its own ground-truth objects (COCOeval writes RLEs and flags into them) and,
    # for segm, its own copy of the results (loadRes adds keys): made before its timer starts.
    bbox = repeated(
        {
            "perfkit (backend fast)": lambda: run_perfkit(coco_objects(gt)[0], outputs, targets),
            faster: lambda: run_cocoeval(
                coco_objects(gt)[1], COCOeval_faster, lambda: reference_results(outputs, targets)
            ),
            "pycocotools": lambda: run_cocoeval(
                coco_objects(gt)[0], COCOeval, lambda: reference_results(outputs, targets)
            ),
        },
        repeats,
    )
    segm_gt, results, image_ids = make_segm_dataset(gt, outputs, targets, args.segm_images)
    segm = repeated(
        {
            "perfkit (backend fast)": lambda: run_perfkit_segm(
                coco_objects(segm_gt)[0], results, image_ids
            ),
            faster: lambda: run_cocoeval(
                coco_objects(segm_gt)[1], COCOeval_faster, copy.deepcopy(results).copy, "segm"
            ),
            "pycocotools": lambda: run_cocoeval(
                coco_objects(segm_gt)[0], COCOeval, copy.deepcopy(results).copy, "segm"
            ),
        },
        repeats,
    )
    header = [
        "| library | conversion (s) | evaluation (s) | total (s) | speed-up over pycocotools "
        f"| speed-up over {faster} | AP | max abs diff of the 12 stats vs pycocotools |",
        "|---|---|---|---|---|---|---|---|",
    ]
    n_gt = len(gt["annotations"])
    body = "\n".join(
        [
            machine(),
            f"torch {torch.__version__}, numpy {np.__version__}, in one process; perfkit and "
            f"faster-coco-eval {args.repeats} runs each, interleaved, the median shown (wall "
            "times on this machine vary by up to 1.5x from run to run), pycocotools one run; "
            f"load average (1 min) at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores.",
            "",
            f"**bbox**: {args.images} images x {args.dets} detections "
            f"({args.images * args.dets} boxes), {n_gt} ground-truth boxes, 80 categories "
            "(generated: `benchmarks/coco_eval.py`). Conversion = torchvision-style outputs to "
            "what the library evaluates (perfkit: `update` per batch of 8; the others: result "
            "dicts as torchvision's reference evaluator makes them); evaluation = `loadRes` + "
            "evaluate + accumulate + summarize (perfkit: `compute`). Ground-truth loading is not "
            "timed. Target: 2.5x faster than faster-coco-eval.",
            "",
            *header,
            *table(bbox, faster),
            "",
            f"**segm**: {len(image_ids)} images, {len(results)} RLE detections, "
            f"{len(segm_gt['annotations'])} polygon ground truths. Evaluation = from the result "
            "dicts to the stats (perfkit: `update_results` + `compute`; the others: "
            "`loadRes`, evaluate, accumulate, summarize), ground-truth polygons to RLEs "
            "included. Target: 4x faster than faster-coco-eval.",
            "",
            *header,
            *table(segm, faster),
        ]
    )
    print(body)
    if not args.no_write:
        write_section("COCO evaluation (issue 5)", body)


if __name__ == "__main__":
    main()
