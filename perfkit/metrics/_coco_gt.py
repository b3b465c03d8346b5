"""The COCO ground truth of an evaluation: loaded, checked, and its annotations as columns."""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from perfkit.checks import short_repr, wrong_type
from perfkit.metrics._cocoeval import Annotations

if TYPE_CHECKING:
    from pycocotools.coco import COCO

    from perfkit.metrics.coco import IouType

#: What evaluation reads of a ground-truth annotation, besides ``area``, per IoU type.
GEOMETRY = {
    "bbox": ("bbox",),
    "segm": ("segmentation",),
    "keypoints": ("keypoints", "num_keypoints", "bbox"),
}


def quiet() -> contextlib.AbstractContextManager[Any]:
    """pycocotools prints progress to stdout; a library must not."""
    return contextlib.redirect_stdout(io.StringIO())


def load_gt(gt: str | os.PathLike[str] | COCO) -> COCO:
    from pycocotools.coco import COCO

    if isinstance(gt, (str, os.PathLike)):
        if not Path(gt).is_file():
            raise FileNotFoundError(f"gt: no COCO instances json at {str(gt)!r}")
        with open(gt, encoding="utf-8") as f:
            dataset = json.load(f)
        if not isinstance(dataset, dict):
            raise ValueError(
                f"Expected argument `gt` to be a path to a COCO instances json (an object) but "
                f"got {str(gt)!r}, which holds {short_repr(dataset, 60)}"
            )
        _check_keys(dataset)  # before pycocotools indexes it (a KeyError there)
        coco = COCO()
        coco.dataset = dataset
        with quiet():
            coco.createIndex()
        return coco
    if not (hasattr(gt, "dataset") and hasattr(gt, "imgs") and hasattr(gt, "loadRes")):
        raise wrong_type("gt", "a path to an instances json or a pycocotools COCO", gt)
    _check_keys(gt.dataset)
    return gt


#: The keys every entry of a COCO ground truth's lists needs (pycocotools' index reads them).
_REQUIRED = {
    "images": ("id",),
    "annotations": ("id", "image_id", "category_id"),
    "categories": ("id",),
}


def _check_keys(dataset: Mapping[str, Any]) -> None:
    """A ValueError naming the first image, annotation or category that lacks an id key."""
    for key, required in _REQUIRED.items():
        for i, item in enumerate(dataset.get(key, [])):
            missing = [k for k in required if k not in item]
            if missing:
                raise ValueError(
                    f"gt: {key}[{i}] lacks {missing}; expected each of {key!r} to have "
                    f"{list(required)}"
                )


def check_unique_ids(coco: COCO) -> None:
    """Refuse repeated annotation or category ids: pycocotools would evaluate something else
    (the last annotation of an id wins; a category listed twice is gathered twice)."""
    for key in ("annotations", "categories"):
        counts = Counter(item.get("id") for item in coco.dataset.get(key, []))
        repeated = sorted(i for i, n in counts.items() if n > 1)
        if repeated:
            raise ValueError(
                f"gt: {key} ids {repeated[:10]} repeat; expected each id once in {key!r}"
            )


def image_size(coco: COCO, image_id: int) -> list[int]:
    """[height, width] of image ``image_id``, in pixels."""
    img = coco.imgs[image_id]
    return [int(img["height"]), int(img["width"])]


def check_complete(
    coco: COCO, image_ids: np.ndarray, cat_ids: np.ndarray, iou_type: IouType
) -> None:
    """A ValueError naming the ground truth of evaluated images and categories that lacks
    what evaluation reads (on either backend: pycocotools raises a KeyError deep inside)."""
    needed = ("area", *GEOMETRY[iou_type])
    cats = set(cat_ids.tolist())
    bad = [
        ann.get("id")
        for image in image_ids.tolist()
        for ann in coco.imgToAnns.get(image, ())
        if ann["category_id"] in cats and any(key not in ann for key in needed)
    ]
    if bad:
        raise ValueError(
            f"gt: annotations {sorted(bad)[:10]} of evaluated images lack one of "
            f"{list(needed)}, which COCO {iou_type} evaluation needs"
        )


def gt_annotations(coco: COCO, iou_type: IouType, keypoint_values: int = 0) -> Annotations:
    """The ground truth as columns, in dataset order (pycocotools' order within an image).

    Read as leniently as pycocotools: rows that no evaluation reaches (an image missing from
    ``images``, a missing geometry on an image that is not evaluated) are kept with NaN geometry;
    ``iscrowd`` defaults to 0. ``keypoint_values``: 3 x the number of keypoints.
    """
    anns = coco.dataset.get("annotations", [])
    geometry = GEOMETRY[iou_type]
    incomplete = np.array(
        [
            "area" not in a
            or any(key not in a for key in geometry)
            or (iou_type == "segm" and a["image_id"] not in coco.imgs)
            for a in anns
        ],
        bool,
    )
    nan_box = [np.nan] * 4
    rles = _gt_rles(coco, anns, incomplete) if iou_type == "segm" else None
    keypoints = ignore = None
    if iou_type == "keypoints":
        nan_points = [np.nan] * keypoint_values
        keypoints = np.array(
            [
                nan_points if bad else a["keypoints"]
                for a, bad in zip(anns, incomplete.tolist(), strict=True)
            ],
            float,
        ).reshape(len(anns), keypoint_values)
        ignore = np.array([a.get("num_keypoints", 0) == 0 for a in anns], bool)
    return Annotations(
        image=np.array([a["image_id"] for a in anns], np.int64),
        category=np.array([a["category_id"] for a in anns], np.int64),
        area=np.array([a.get("area", np.nan) for a in anns], float),
        bbox=np.array([a.get("bbox", nan_box) for a in anns], float).reshape(-1, 4)
        if iou_type != "segm"
        else None,
        rles=rles,
        crowd=np.array([bool(a.get("iscrowd", 0)) for a in anns], bool),
        ann_id=np.array([a["id"] for a in anns], np.int64),
        keypoints=keypoints,
        ignore=ignore,
    )


def _gt_rles(coco: COCO, anns: list[dict[str, Any]], incomplete: np.ndarray) -> list[Any]:
    """``coco.annToRLE`` of each annotation (None where ``incomplete``).

    Single-polygon annotations, COCO's common case, are encoded one ``frPyObjects`` call per
    image, which gives ``annToRLE``'s RLEs (its ``merge`` of one part is that part) at a fraction
    of the per-annotation calls' cost. Polygons of 4 numbers are left to ``annToRLE``, which
    reads them as a box.
    """
    from pycocotools import mask as mask_utils

    rles: list[Any] = [None] * len(anns)
    polygons: dict[Any, list[int]] = {}
    for i, (ann, bad) in enumerate(zip(anns, incomplete.tolist(), strict=True)):
        if bad:
            continue
        segm = ann["segmentation"]
        if type(segm) is list and len(segm) == 1 and len(segm[0]) > 4:
            polygons.setdefault(ann["image_id"], []).append(i)
        else:
            rles[i] = coco.annToRLE(ann)
    for image_id, rows in polygons.items():
        image = coco.imgs[image_id]
        encoded = mask_utils.frPyObjects(
            [anns[i]["segmentation"][0] for i in rows], image["height"], image["width"]
        )
        for i, rle in zip(rows, encoded, strict=True):
            rles[i] = rle
    return rles
