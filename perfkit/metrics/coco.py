"""COCO detection and instance-segmentation mAP, fed straight from model outputs.

:class:`COCOEvaluator` stores detections per image as columns of numpy arrays (no Python object per
box), gathers them from every rank at ``compute`` and evaluates them either with pycocotools'
``COCOeval`` (``backend="pycocotools"``, the reference) or with perfkit's vectorised
re-implementation (``backend="fast"``, the default through ``"auto"``), which gives the same
precision and recall arrays bit for bit and therefore the same twelve stats.

Evaluated images are the images passed to ``update`` (from the targets' ``image_id``, including
images without any detection), as torchvision's reference evaluator does, and to
``update_results`` (``image_ids``, or every image of the ground truth, as ``COCOeval`` does).
Detections whose category is not one of the ground truth are not evaluated (pycocotools ignores
them); :attr:`COCOEvaluator.ignored_detections` counts them.
Stored detections grow linearly with the number of images: about 64 bytes per box (``"bbox"``) or
one RLE per mask (``"segm"``); 5000 images x 100 boxes take about 32 MB. ``reset`` frees them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import operator
import os
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import numpy as np

from perfkit.metrics import _cocoeval
from perfkit.metrics._cocoeval import STATS, Annotations, Params
from perfkit.metrics._metric import Metric

if TYPE_CHECKING:
    import torch
    from pycocotools.coco import COCO

IouType = Literal["bbox", "segm", "keypoints"]
IOU_TYPES = ("bbox", "segm", "keypoints")
#: What evaluation reads of a ground-truth annotation, besides ``area``, per IoU type.
_GEOMETRY = {
    "bbox": ("bbox",),
    "segm": ("segmentation",),
    "keypoints": ("keypoints", "num_keypoints", "bbox"),
}
BoxFormat = Literal["xyxy", "xywh", "cxcywh"]
BOX_FORMATS = ("xyxy", "xywh", "cxcywh")
Backend = Literal["auto", "fast", "pycocotools"]
BACKENDS = ("auto", "fast", "pycocotools")
STAT_NAMES = tuple(STATS)


class _Chunk(NamedTuple):
    """What one ``update`` adds: the images it covers and their detections."""

    images: np.ndarray
    dets: Annotations


def _quiet() -> contextlib.AbstractContextManager[Any]:
    """pycocotools prints progress to stdout; a library must not."""
    return contextlib.redirect_stdout(io.StringIO())


def _load_gt(gt: str | os.PathLike[str] | COCO) -> COCO:
    from pycocotools.coco import COCO

    if isinstance(gt, (str, os.PathLike)):
        if not Path(gt).is_file():
            raise FileNotFoundError(f"gt: no COCO instances json at {str(gt)!r}")
        with open(gt, encoding="utf-8") as f:
            dataset = json.load(f)
        if not isinstance(dataset, dict):
            raise ValueError(f"gt: {str(gt)!r} must hold a COCO dict, got {type(dataset).__name__}")
        _check_keys(dataset)  # before pycocotools indexes it (a KeyError there)
        coco = COCO()
        coco.dataset = dataset
        with _quiet():
            coco.createIndex()
        return coco
    if not (hasattr(gt, "dataset") and hasattr(gt, "imgs") and hasattr(gt, "loadRes")):
        raise TypeError(f"gt must be a path to an instances json or a pycocotools COCO, got {gt!r}")
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


def _check_unique_ids(coco: COCO) -> None:
    """Refuse repeated annotation or category ids: pycocotools would evaluate something else
    (the last annotation of an id wins; a category listed twice is gathered twice)."""
    for key in ("annotations", "categories"):
        counts = Counter(item.get("id") for item in coco.dataset.get(key, []))
        repeated = sorted(i for i, n in counts.items() if n > 1)
        if repeated:
            raise ValueError(
                f"gt: {key} ids {repeated[:10]} repeat; expected each id once in {key!r}"
            )


def _gt_annotations(coco: COCO, iou_type: IouType, keypoint_values: int = 0) -> Annotations:
    """The ground truth as columns, in dataset order (pycocotools' order within an image).

    Read as leniently as pycocotools: rows that no evaluation reaches (an image missing from
    ``images``, a missing geometry on an image that is not evaluated) are kept with NaN geometry;
    ``iscrowd`` defaults to 0. ``keypoint_values``: 3 x the number of keypoints.
    """
    anns = coco.dataset.get("annotations", [])
    geometry = _GEOMETRY[iou_type]
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


def _with_iscrowd(coco: COCO) -> COCO:
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
    with _quiet():
        patched.createIndex()
    return patched


def _merge(chunks: Sequence[_Chunk]) -> tuple[np.ndarray, Annotations]:
    """Sorted evaluated image ids and their detections; an image that several ranks evaluated
    (a padded distributed sampler repeats samples) keeps the detections of its first chunk."""
    images = np.concatenate([c.images for c in chunks])
    chunk_of_image = np.repeat(np.arange(len(chunks)), [len(c.images) for c in chunks])
    image_ids, first = np.unique(images, return_index=True)
    owner = chunk_of_image[first]
    dets = Annotations.concat([c.dets for c in chunks])
    chunk_of_det = np.repeat(np.arange(len(chunks)), [len(c.dets) for c in chunks])
    keep = owner[np.searchsorted(image_ids, dets.image)] == chunk_of_det
    return image_ids, dets if keep.all() else dets.take(np.flatnonzero(keep))


def _image_id(target: Any, where: str) -> int:
    if not isinstance(target, Mapping) or "image_id" not in target:
        raise ValueError(f"{where} must be a dict with an 'image_id', got {type(target).__name__}")
    value = target["image_id"]
    if hasattr(value, "numel"):  # a tensor: 0-d or one element, as torchvision's references
        if value.numel() != 1:
            raise ValueError(
                f"{where}['image_id'] must hold one id, got shape {tuple(value.shape)}"
            )
        value = value.reshape(-1)[0].item()
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError(f"{where}['image_id'] must be an integer id, got {value!r}") from None


def _locator(counts: Sequence[int], arg: str) -> Callable[[int], str]:
    """Names row ``flat`` of the outputs concatenated along their boxes: outputs[i][arg] row j."""
    ends = np.cumsum(counts)

    def locate(flat: int) -> str:
        image = int(np.searchsorted(ends, flat, side="right"))
        row = flat - (int(ends[image - 1]) if image else 0)
        return f"outputs[{image}]['{arg}'] row {row}"

    return locate


class COCOEvaluator(Metric):
    """COCO mAP of detections (``iou_type="bbox"``), instance masks (``"segm"``) or keypoints
    (``"keypoints"``, by OKS).

    Args:
        gt: path to a COCO instances (or person keypoints) json, or a pycocotools ``COCO``.
        iou_type: ``"bbox"``, ``"segm"`` or ``"keypoints"``.
        label_to_category: maps model labels to COCO category ids - a sequence indexed by label
            (contiguous training labels) or a mapping; ``None``: labels are category ids.
        backend: ``"fast"`` (perfkit's vectorised evaluation), ``"pycocotools"`` (``COCOeval``
            itself) or ``"auto"`` (the fastest exact one: ``"fast"``). All give identical numbers.
        use_cats: ``COCOeval.params.useCats``; ``False`` evaluates class-agnostically.
        mask_threshold: float masks (torchvision's (N, 1, H, W) probabilities) are foreground
            above it; bool and integer masks are foreground where non-zero.
        progress: a tqdm bar on evaluations longer than a second; ``None``: only when stderr is a
            terminal.
        iou_thresholds: ``Params.iouThrs``; ``None``: 0.50:0.05:0.95.
        max_detections: ``Params.maxDets``, detections per image and category, in any order
            (sorted, as ``COCOeval.evaluate`` sorts them: AP uses the largest). ``None``: COCO's
            (1, 10, 100); (20,) for keypoints.
        area_ranges: ``{label: (lo, hi)}`` in pixels² (``Params.areaRngLbl`` / ``areaRng``); must
            include ``"all"``. ``None``: COCO's all / small / medium / large (keypoints: all /
            medium / large).
        keypoint_sigmas: ``Params.kpt_oks_sigmas``, one per keypoint, for ``"keypoints"``;
            ``None``: COCO's 17 person keypoints' (other keypoint counts must give theirs).
        per_image_ious: ``compute`` also keeps ``eval["ious"]``, pycocotools' ``COCOeval.ious``
            (costs memory: one matrix per image and category).
        process_group, sync_on_compute: see :class:`~perfkit.metrics.Metric`.
        recall_thresholds: ``Params.recThrs``, ascending in [0, 1]; ``None``: 0:0.01:1.
        box_format: how ``update``'s ``boxes`` are given: ``"xyxy"`` (torchvision), ``"xywh"``
            (COCO's) or ``"cxcywh"`` (centre, width, height: DETR's, in pixels).
    """

    higher_is_better = True
    chunks: list[_Chunk]
    ignored: int

    def __init__(
        self,
        gt: str | os.PathLike[str] | COCO,
        iou_type: IouType | Sequence[IouType] = "bbox",
        *,
        label_to_category: Sequence[int] | Mapping[int, int] | None = None,
        backend: Backend = "auto",
        use_cats: bool = True,
        mask_threshold: float = 0.5,
        progress: bool | None = None,
        iou_thresholds: Sequence[float] | None = None,
        max_detections: Sequence[int] | None = None,
        area_ranges: Mapping[str, tuple[float, float]] | None = None,
        box_format: BoxFormat = "xyxy",
        recall_thresholds: Sequence[float] | None = None,
        keypoint_sigmas: Sequence[float] | None = None,
        per_image_ious: bool = False,
        process_group: Any = None,
        sync_on_compute: bool = True,
    ) -> None:
        super().__init__(process_group=process_group, sync_on_compute=sync_on_compute)
        self.per_image_ious = bool(per_image_ious)
        types = (iou_type,) if isinstance(iou_type, str) else tuple(iou_type)
        if (
            not types
            or any(t not in IOU_TYPES for t in types)
            or len(set(types)) != len(types)
            or ("keypoints" in types and len(types) > 1)
        ):
            raise ValueError(
                f"Expected argument `iou_type` to be one of {IOU_TYPES} or a sequence of "
                f"'bbox' and 'segm', but got {iou_type!r}"
            )
        #: The evaluated IoU types; with several, stats and ``eval`` keys are prefixed
        #: ``"<type>/"``.
        self.iou_types: tuple[IouType, ...] = types
        self.iou_type = iou_type  # as given
        if iou_type == "keypoints" and not use_cats:
            raise ValueError(
                "use_cats=False with iou_type='keypoints': pycocotools' computeOks compares "
                "each category's own keypoints only; expected use_cats=True"
            )
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if box_format not in BOX_FORMATS:
            raise ValueError(
                f"Expected argument `box_format` to be one of {BOX_FORMATS}, but got {box_format!r}"
            )
        self.box_format: BoxFormat = box_format
        self.params = _params(
            iou_thresholds, max_detections, area_ranges, recall_thresholds, iou_type == "keypoints"
        )
        self.coco_gt = _load_gt(gt)
        _check_unique_ids(self.coco_gt)
        self.sigmas = _sigmas(self.coco_gt, keypoint_sigmas) if iou_type == "keypoints" else None
        self.backend: Backend = "fast" if backend == "auto" else backend
        self.use_cats = bool(use_cats)
        self.mask_threshold = float(mask_threshold)
        self.progress = progress
        self._gt_images = set(self.coco_gt.getImgIds())
        self._cat_ids = np.array(sorted(self.coco_gt.getCatIds()), np.int64)
        self._label_lut = self._lookup(label_to_category)
        self._gt: dict[str, Annotations] = {}  # ground-truth columns per type, built on demand
        self._seen: set[int] = set()
        #: Detections not evaluated because their category is none of the ground truth's
        #: (summed over ranks by the last ``compute``).
        self.ignored_detections = 0
        #: The last ``compute``'s arrays, as pycocotools' ``COCOeval.eval``: ``precision`` and
        #: ``scores`` (T, R, K, A, M), ``recall`` (T, K, A, M) - IoU thresholds, recall
        #: thresholds, categories (ascending id; one with ``use_cats=False``), area ranges,
        #: max_detections; -1 where no ground truth counts. With ``per_image_ious``, also
        #: ``ious``: {(image id, category id, -1 with ``use_cats=False``): (D, G) IoU matrix},
        #: detections by score, for each pair of an image and category that has both.
        self.eval: dict[str, Any] = {}
        self.add_state("chunks", list, "cat")
        self.add_state("ignored", int, "sum")

    def _lookup(self, mapping: Sequence[int] | Mapping[int, int] | None) -> np.ndarray | None:
        """label -> category id array (-1: no category), checked against the ground truth."""
        if mapping is None:
            return None
        items = mapping.items() if isinstance(mapping, Mapping) else enumerate(mapping)
        pairs = np.array([(operator.index(k), operator.index(v)) for k, v in items], np.int64)
        pairs = pairs.reshape(-1, 2)
        if len(pairs) and pairs[:, 0].min() < 0:
            raise ValueError("label_to_category: labels must be >= 0")
        unknown = np.setdiff1d(pairs[:, 1], self._cat_ids)
        if len(unknown):
            raise ValueError(
                f"label_to_category maps to category ids {unknown[:10].tolist()} that the "
                "ground truth does not define"
            )
        lut = np.full(int(pairs[:, 0].max()) + 1 if len(pairs) else 0, -1, np.int64)
        lut[pairs[:, 0]] = pairs[:, 1]
        return lut

    def reset(self) -> None:
        """Forget every stored detection and evaluated image."""
        super().reset()
        self._seen = set()

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore the detections of ``state_dict()`` (and so the images already updated)."""
        super().load_state_dict(state_dict)
        self._seen = {image for chunk in self.chunks for image in chunk.images.tolist()}

    def update(
        self, outputs: Sequence[Mapping[str, torch.Tensor]], targets: Sequence[Mapping[str, Any]]
    ) -> None:
        """Add one batch of torchvision-style predictions.

        ``outputs[i]`` holds ``boxes`` (N, 4) in pixels (``box_format``, xyxy by default),
        ``scores`` (N,), ``labels`` (N,)
        and, for ``"segm"``, ``masks`` (N, 1, H, W) or (N, H, W) at the image's size instead of
        boxes, for ``"keypoints"`` ``keypoints`` (N, K, 3) x, y, visibility in pixels
        (torchvision's Keypoint R-CNN; a detection's area is its keypoints' extent, as
        ``loadRes`` takes it); ``targets[i]["image_id"]`` names the image (an int or a
        one-element tensor). Boxes become xywh in their own dtype (torchvision's reference
        ``convert_to_xywh``), then float64. Detections of a label that is no ground-truth
        category are ignored and counted.
        """
        import torch

        if len(outputs) != len(targets):
            raise ValueError(
                f"outputs and targets must have one entry per image, got {len(outputs)} outputs "
                f"and {len(targets)} targets"
            )
        images = np.array([_image_id(t, f"targets[{i}]") for i, t in enumerate(targets)], np.int64)
        geometry = [
            {"bbox": "boxes", "segm": "masks", "keypoints": "keypoints"}[t] for t in self.iou_types
        ]
        counts = [_check_output(out, i, geometry) for i, out in enumerate(outputs)]
        self._check_images(images, "targets")

        def column(key: str, width: int) -> torch.Tensor:
            parts = [torch.as_tensor(out[key]).detach().reshape(-1, width) for out in outputs]
            return torch.cat(parts).cpu() if parts else torch.zeros((0, width))

        scores = column("scores", 1).to(torch.float64).numpy().reshape(-1)
        if not np.isfinite(scores).all():
            where = _locator(counts, "scores")(int(np.flatnonzero(~np.isfinite(scores))[0]))
            raise ValueError(f"{where} is NaN or inf; expected finite scores")
        labels = column("labels", 1).to(torch.int64).numpy().reshape(-1)
        category = self._categories(labels, _locator(counts, "labels"))
        image = np.repeat(images, counts)
        bbox = rles = None
        if "boxes" in geometry:
            bbox = _to_xywh(column("boxes", 4), self.box_format).to(torch.float64).numpy()
            _check_boxes(bbox, _locator(counts, "boxes"), _EXPECTED_BOXES[self.box_format])
        if "masks" in geometry:
            rles = self._encode_masks(outputs, images, counts)
        if "keypoints" in geometry:
            assert self.sigmas is not None
            n_points = len(self.sigmas)
            for i, (out, n) in enumerate(zip(outputs, counts, strict=True)):
                shape = tuple(torch.as_tensor(out["keypoints"]).shape)
                if shape != (n, n_points, 3):
                    raise ValueError(
                        f"outputs[{i}]['keypoints'] must have shape (N, K, 3) = ({n}, {n_points}, "
                        f"3) (K: one per keypoint sigma), got {shape}"
                    )
            points = column("keypoints", 3 * n_points).to(torch.float64).numpy()
            _check_finite(points, _locator(counts, "keypoints"), "finite keypoints")
            dets = Annotations(
                image, category, _keypoint_area(points), keypoints=points, score=scores
            )
        else:  # the area of the masks where there are masks, else the boxes' (w * h)
            if rles is not None:
                area = _rle_area(rles)
            else:
                assert bbox is not None
                area = bbox[:, 2] * bbox[:, 3]
            dets = Annotations(image, category, area, bbox=bbox, rles=rles, score=scores)
        self._store(images, self._known(dets))

    def update_results(
        self,
        results: str | os.PathLike[str] | Sequence[Mapping[str, Any]],
        image_ids: Iterable[int] | None = None,
    ) -> None:
        """Add detections in COCO results format (a list of dicts, or a results json's path).

        Each result holds ``image_id``, ``category_id``, ``score`` and ``bbox`` [x, y, w, h]
        (``"bbox"``), an RLE ``segmentation`` (``"segm"``) or ``keypoints`` [x1, y1, v1, ...]
        (``"keypoints"``). segm and keypoints results may carry a ``bbox`` as well: when the
        first result of this call has one, each detection's area is its box's, as ``loadRes``
        takes it (calls may differ); else the mask's area or the keypoints' extent.
        The evaluated images are ``image_ids`` when given, else every image of the ground truth
        (``COCOeval``'s default). Results of a category the ground truth lacks are ignored and
        counted.
        """
        loaded: Any = results
        if isinstance(results, (str, os.PathLike)):
            if not Path(results).is_file():
                raise FileNotFoundError(f"results: no results json at {str(results)!r}")
            with open(results, encoding="utf-8") as f:
                loaded = json.load(f)
        if not isinstance(loaded, (list, tuple)) or not all(
            kind is dict or issubclass(kind, Mapping) for kind in set(map(type, loaded))
        ):
            raise ValueError("results must be a list of COCO result dicts or a path to one")
        records: Sequence[Mapping[str, Any]] = loaded
        geometry = [
            {"bbox": "bbox", "segm": "segmentation", "keypoints": "keypoints"}[t]
            for t in self.iou_types
        ]
        columns = _columns(records, ("image_id", "category_id", "score", *geometry))
        image = _int_column(columns["image_id"], "image_id")
        unknown = sorted(set(image.tolist()) - self._gt_images)
        if unknown:
            raise ValueError(f"results: image ids {unknown[:10]} are not in the ground truth")
        images = (
            np.array(sorted(self._gt_images), np.int64)
            if image_ids is None
            else np.array(list(image_ids), np.int64)
        )
        stray = np.setdiff1d(image, images)
        if len(stray):
            raise ValueError(f"results name images {stray[:10].tolist()} missing from image_ids")
        self._check_images(images, "results" if image_ids is None else "image_ids")
        category = _int_column(columns["category_id"], "category_id")
        score = np.array(columns["score"], np.float64)
        if not np.isfinite(score).all():
            where = f"results[{int(np.flatnonzero(~np.isfinite(score))[0])}]['score']"
            raise ValueError(f"{where} is NaN or inf; expected a finite score")
        with_box = "bbox" in geometry or bool(records and records[0].get("bbox", []) != [])
        bbox = _bbox_column(records) if with_box else None
        if "keypoints" in geometry:
            points = self._keypoint_column(columns["keypoints"])
            area = _keypoint_area(points) if bbox is None else bbox[:, 2] * bbox[:, 3]
            dets = Annotations(image, category, area, keypoints=points, score=score)
        elif "segmentation" in geometry:
            rles = columns["segmentation"]
            self._check_rle_sizes(rles, image)
            area = _rle_area(rles) if bbox is None else bbox[:, 2] * bbox[:, 3]
            box = bbox if "bbox" in geometry else None  # the box of a segm result: its area only
            dets = Annotations(image, category, area, bbox=box, rles=rles, score=score)
        else:
            assert bbox is not None
            dets = Annotations(image, category, bbox[:, 2] * bbox[:, 3], bbox=bbox, score=score)
        self._store(images, self._known(dets))

    def _keypoint_column(self, values: list[Any]) -> np.ndarray:
        """``results[i]["keypoints"]`` as (N, 3K) float64, each 3K finite numbers."""
        assert self.sigmas is not None
        width = 3 * len(self.sigmas)
        try:
            points = np.array(values, np.float64).reshape(len(values), -1)
        except (ValueError, TypeError):  # ragged, or not numbers
            points = np.zeros((len(values), 0))
        if points.shape[1] != width:
            for i, value in enumerate(values):
                if not (isinstance(value, (list, tuple)) and len(value) == width):
                    raise ValueError(
                        f"results[{i}]['keypoints'] must be {width} numbers (x, y, v for each of "
                        f"{len(self.sigmas)} keypoints), got {value!r}"[:300]
                    )
        _check_finite(points, lambda i: f"results[{i}]['keypoints']", "finite keypoints")
        return points

    def _check_rle_sizes(self, rles: Sequence[Any], image: np.ndarray) -> None:
        """Each of ``rles`` an RLE dict whose size is its image's [height, width]."""
        images, inverse = np.unique(image, return_inverse=True)
        expected = np.array([self._size(img) for img in images.tolist()], float).reshape(-1, 2)
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
            size = self._size(img)
            if not (type(rle) is dict or isinstance(rle, Mapping)) or (
                rle.get("size") != size and list(rle.get("size") or ()) != size
            ):
                raise ValueError(
                    f"results[{i}]['segmentation'] must be an RLE dict whose size is the "
                    f"image's [height, width] = {size}"
                )

    def _known(self, dets: Annotations) -> Annotations:
        """``dets`` without those of a category the ground truth lacks, which are counted."""
        known = np.isin(dets.category, self._cat_ids)
        if known.all():
            return dets
        self.ignored += int((~known).sum())
        return dets.take(np.flatnonzero(known))

    def _store(self, images: np.ndarray, dets: Annotations) -> None:
        self.chunks.append(_Chunk(images, dets))
        self._seen.update(images.tolist())
        self._updated()

    def _check_images(self, images: np.ndarray, where: str) -> None:
        ids = images.tolist()
        unknown = [i for i in ids if i not in self._gt_images]
        if unknown:
            raise ValueError(f"{where}: image ids {unknown[:10]} are not in the ground truth")
        repeated = {i for i, n in Counter(ids).items() if n > 1}
        again = sorted(repeated | {i for i in ids if i in self._seen})
        if again:
            raise ValueError(
                f"{where}: image ids {again[:10]} were already updated; each image may be added "
                "once (reset() starts a new evaluation)"
            )

    def _categories(self, labels: np.ndarray, locate: Callable[[int], str]) -> np.ndarray:
        """Model labels -> COCO category ids; with ``label_to_category`` every label must map."""
        if self._label_lut is None:
            return labels
        inside = (labels >= 0) & (labels < len(self._label_lut))
        category = np.where(inside, self._label_lut[np.where(inside, labels, 0)], -1)
        bad = category < 0
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"{locate(first)}: label {int(labels[first])} maps to no category in "
                "label_to_category"
            )
        return category

    def _size(self, image_id: int) -> list[int]:
        img = self.coco_gt.imgs[image_id]
        return [int(img["height"]), int(img["width"])]

    def _encode_masks(
        self, outputs: Sequence[Mapping[str, Any]], images: np.ndarray, counts: Sequence[int]
    ) -> list[dict[str, Any]]:
        """Masks -> RLEs, one pycocotools ``encode`` call per image."""
        import torch
        from pycocotools import mask as mask_utils

        rles: list[dict[str, Any]] = []
        for i, (out, image, n) in enumerate(zip(outputs, images.tolist(), counts, strict=True)):
            masks = torch.as_tensor(out["masks"]).detach()
            size = self._size(image)
            if masks.ndim == 4 and masks.shape[1] == 1:
                masks = masks[:, 0]
            if tuple(masks.shape) != (n, *size):
                raise ValueError(
                    f"outputs[{i}]['masks'] must have shape (N, 1, H, W) or (N, H, W) = "
                    f"({n}, {size[0]}, {size[1]}) for image {image}, "
                    f"got {tuple(out['masks'].shape)}"
                )
            if masks.is_floating_point():
                if not bool(torch.isfinite(masks).all()):
                    raise ValueError(f"outputs[{i}]['masks'] contains NaN or inf")
                masks = masks > self.mask_threshold
            if n:
                binary = masks.ne(0).to(torch.uint8).cpu().numpy()
                rles.extend(mask_utils.encode(np.asfortranarray(binary.transpose(1, 2, 0))))
        return rles

    def compute(self, per_category: bool = False) -> dict[str, float]:
        """The COCO stats over the images of every rank, in pycocotools' order.

        With the default parameters these are ``COCOeval.summarize``'s twelve (:data:`STAT_NAMES`);
        other parameters name them as :meth:`Params.stats` says. A stat is -1.0 where no ground
        truth counts (pycocotools' convention); all are -1.0 when no image was evaluated.
        ``per_category=True`` adds ``"AP/<key>"`` and ``"AR/<key>"`` (over all IoU thresholds,
        area all, the last maxDets) for each category of the ground truth, keyed as
        :meth:`category_keys` says (unique even where names repeat or are missing). With
        ``use_cats=False`` these come from a second, per-category evaluation (torchmetrics'
        ``class_metrics`` with ``average="micro"``).
        Also sets :attr:`eval`, pycocotools' ``COCOeval.eval`` arrays of this evaluation.
        """
        state = self._synced_state()
        self.ignored_detections = int(state["ignored"])
        return self._compute(state, per_category, keep_arrays=True)

    def _compute(
        self, state: Mapping[str, Any], per_category: bool = False, keep_arrays: bool = False
    ) -> dict[str, float]:
        """Stats of every IoU type (prefixed ``"<type>/"`` when there are several)."""
        merged = _merge(state["chunks"]) if state["chunks"] else None
        stats: dict[str, float] = {}
        arrays: dict[str, Any] = {}
        prefix = len(self.iou_types) > 1
        for iou_type in self.iou_types:
            pre = f"{iou_type}/" if prefix else ""
            evaluated = self._arrays(merged, iou_type, self.use_cats)
            arrays |= {pre + k: v for k, v in evaluated.items()}
            stats |= {pre + k: v for k, v in self._stats(evaluated).items()}
            if per_category:
                by_category = evaluated if self.use_cats else self._arrays(merged, iou_type, True)
                stats |= {pre + k: v for k, v in self._per_category(by_category).items()}
        if keep_arrays:
            self.eval = arrays
        return stats

    def _arrays(
        self, merged: tuple[np.ndarray, Annotations] | None, iou_type: IouType, use_cats: bool
    ) -> dict[str, Any]:
        """``COCOeval.eval``'s arrays for the evaluated images and detections (-1 where none),
        and ``ious`` with ``per_image_ious``."""
        p = self.params
        shape = (
            len(p.iou_thrs),
            len(self._cat_ids) if use_cats else 1,
            len(p.area_rng),
            len(p.max_dets),
        )
        precision = -np.ones((shape[0], len(p.rec_thrs), *shape[1:]))
        recall, scores = -np.ones(shape), precision.copy()
        ious: dict[tuple[int, int], np.ndarray] = {}
        if merged is not None:
            image_ids, dets = merged
            if iou_type == "bbox" and len(self.iou_types) > 1:
                assert dets.bbox is not None  # its area is its box's, whatever the masks' are
                dets = dataclasses.replace(dets, area=dets.bbox[:, 2] * dets.bbox[:, 3])
            precision, recall, scores = self._evaluate(image_ids, dets, iou_type, use_cats, ious)
        out = {"precision": precision, "recall": recall, "scores": scores}
        return out | {"ious": ious} if self.per_image_ious else out

    def _stats(self, arrays: Mapping[str, np.ndarray]) -> dict[str, float]:
        """The stats of ``arrays``."""
        return _cocoeval.summarize(arrays["precision"], arrays["recall"], self.params)

    def _per_category(self, arrays: Mapping[str, np.ndarray]) -> dict[str, float]:
        """``AP/<key>`` and ``AR/<key>`` of each category, from a per-category evaluation."""
        aps, ars = _cocoeval.per_category(arrays["precision"], arrays["recall"], self.params)
        stats = {}
        for key, ap, ar in zip(self.category_keys(), aps, ars, strict=True):
            stats[f"AP/{key}"], stats[f"AR/{key}"] = float(ap), float(ar)
        return stats

    def category_keys(self) -> list[str]:
        """The name of each ground-truth category (ascending id) in per-category stats: its
        ``name``, or ``"<name>#<id>"`` where several categories share that name, ``"#<id>"``
        where it has none."""
        cats = self.coco_gt.loadCats(self._cat_ids.tolist())
        names = [None if c.get("name") is None else str(c["name"]) for c in cats]
        shared = Counter(names)
        return [
            name if name is not None and shared[name] == 1 else f"{name or ''}#{c['id']}"
            for c, name in zip(cats, names, strict=True)
        ]

    def summary(self, stats: Mapping[str, float] | None = None) -> str:
        """pycocotools' summary of ``stats``, one line per stat (computed now when not given);
        with several IoU types, each type's lines after an ``IoU metric: <type>`` line (as
        torchvision's reference prints them)."""
        stats = self.compute() if stats is None else stats
        lines = []
        thrs = self.params.iou_thrs
        for iou_type in self.iou_types:
            pre = ""
            if len(self.iou_types) > 1:
                pre = f"{iou_type}/"
                lines.append(f"IoU metric: {iou_type}")
            for name, (is_ap, iou_thr, area, max_det) in self.params.stats().items():
                title, kind = ("Average Precision", "(AP)") if is_ap else ("Average Recall", "(AR)")
                iou = f"{thrs[0]:0.2f}:{thrs[-1]:0.2f}" if iou_thr is None else f"{iou_thr:0.2f}"
                lines.append(
                    f" {title:<18} {kind} @[ IoU={iou:<9} | area={area:>6s} | "
                    f"maxDets={max_det:>3d} ] = {stats[pre + name]:0.3f}"
                )
        return "\n".join(lines)

    def _evaluate(
        self,
        image_ids: np.ndarray,
        dets: Annotations,
        iou_type: IouType,
        use_cats: bool,
        ious: dict[tuple[int, int], np.ndarray],
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        from tqdm.auto import tqdm

        p = self.params
        steps = p.max_dets[-1] + len(p.max_dets) * len(p.area_rng)
        self._check_complete(image_ids, iou_type)
        with tqdm(
            total=steps if self.backend == "fast" else 2,
            desc=f"COCO {iou_type} eval",
            delay=1.0,
            disable=None if self.progress is None else not self.progress,
            leave=False,
        ) as bar:
            if self.backend == "pycocotools":
                return self._evaluate_pycocotools(
                    image_ids, dets, iou_type, use_cats, ious, bar.update
                )
            if iou_type not in self._gt:
                width = 0 if self.sigmas is None else 3 * len(self.sigmas)
                self._gt[iou_type] = _gt_annotations(self.coco_gt, iou_type, width)
            return _cocoeval.evaluate(
                self._gt[iou_type],
                dets,
                image_ids,
                self._cat_ids,
                use_cats=use_cats,
                iou_type=iou_type,
                params=p,
                progress=bar.update,
                sigmas=self.sigmas,
                ious=ious if self.per_image_ious else None,
            )

    def _check_complete(self, image_ids: np.ndarray, iou_type: IouType) -> None:
        """A ValueError naming the ground truth of evaluated images and categories that lacks
        what evaluation reads (on either backend: pycocotools raises a KeyError deep inside)."""
        needed = ("area", *_GEOMETRY[iou_type])
        cats = set(self._cat_ids.tolist())
        bad = [
            ann.get("id")
            for image in image_ids.tolist()
            for ann in self.coco_gt.imgToAnns.get(image, ())
            if ann["category_id"] in cats and any(key not in ann for key in needed)
        ]
        if bad:
            raise ValueError(
                f"gt: annotations {sorted(bad)[:10]} of evaluated images lack one of "
                f"{list(needed)}, which COCO {iou_type} evaluation needs"
            )

    def _evaluate_pycocotools(
        self,
        image_ids: np.ndarray,
        dets: Annotations,
        iou_type: IouType,
        use_cats: bool,
        ious: dict[tuple[int, int], np.ndarray],
        progress: Callable[[int], Any],
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        coco_gt = _with_iscrowd(self.coco_gt)
        p = self.params
        with _quiet():
            if len(dets):
                coco_dt = coco_gt.loadRes(_result_dicts(dets, iou_type))
                # each update's area rule (a segm result's box area when it came with a box,
                # as loadRes takes it) holds for its rows, whatever the first row of all holds
                for ann, area in zip(
                    coco_dt.dataset["annotations"], dets.area.tolist(), strict=True
                ):
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
            if self.sigmas is not None:
                evaluator.params.kpt_oks_sigmas = self.sigmas
            evaluator.evaluate()
            ious.update({key: m for key, m in evaluator.ious.items() if len(m)})
            progress(1)
            evaluator.accumulate()
            progress(1)
        return evaluator.eval["precision"], evaluator.eval["recall"], evaluator.eval["scores"]


def _check_output(out: Any, i: int, geometry: Sequence[str]) -> int:
    """Check the keys, shapes and dtypes of ``outputs[i]``; returns its number of detections."""
    import torch

    if not isinstance(out, Mapping):
        raise ValueError(f"outputs[{i}] must be a dict of tensors, got {type(out).__name__}")
    missing = [k for k in (*geometry, "scores", "labels") if k not in out]
    if missing:
        raise ValueError(
            f"outputs[{i}] lacks {missing}; expected {', '.join(geometry)}, scores (N,) and "
            "labels (N,)"
        )
    scores = torch.as_tensor(out["scores"])
    if scores.ndim != 1:
        raise ValueError(f"outputs[{i}]['scores'] must have shape (N,), got {tuple(scores.shape)}")
    n = len(scores)
    for key, shape, text in (("labels", (n,), "(N,)"), ("boxes", (n, 4), "(N, 4)")):
        if key in (*geometry, "labels") and tuple(torch.as_tensor(out[key]).shape) != shape:
            raise ValueError(
                f"outputs[{i}]['{key}'] must have shape {text} with N = {n} as in scores, "
                f"got {tuple(torch.as_tensor(out[key]).shape)}"
            )
    labels = torch.as_tensor(out["labels"])
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"outputs[{i}]['labels'] must hold integer labels, got {labels.dtype}")
    return n


_EXPECTED_BOXES = {
    "xyxy": "xyxy boxes with x2 >= x1, y2 >= y1",
    "xywh": "xywh boxes with w, h >= 0",
    "cxcywh": "cxcywh boxes with w, h >= 0",
}


def _to_xywh(boxes: torch.Tensor, box_format: BoxFormat) -> torch.Tensor:
    """(N, 4) boxes as COCO's xywh, computed in their own dtype (xyxy: torchvision's reference
    ``convert_to_xywh``; cxcywh: the corner is the centre minus half the size)."""
    import torch

    if box_format == "xywh":
        return boxes
    if box_format == "cxcywh":
        return torch.cat([boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, 2:]], dim=1)
    return torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1)


def _check_finite(rows: np.ndarray, locate: Callable[[int], str], expected: str) -> None:
    """Rows of finite numbers, else an error naming the first bad row."""
    finite = np.isfinite(rows).all(axis=1)
    if not finite.all():
        first = int(np.flatnonzero(~finite)[0])
        raise ValueError(f"{locate(first)} is NaN or inf; expected {expected}")


def _keypoint_area(points: np.ndarray) -> np.ndarray:
    """``loadRes``' area of keypoint results: the extent of all their x and y, (N, 3K) rows."""
    if not len(points):
        return np.zeros(0)
    x, y = points[:, 0::3], points[:, 1::3]
    return (x.max(axis=1) - x.min(axis=1)) * (y.max(axis=1) - y.min(axis=1))


def _check_boxes(bbox: np.ndarray, locate: Callable[[int], str], expected: str) -> None:
    """Finite xywh boxes with w, h >= 0, else an error naming the first bad row."""
    _check_finite(bbox, locate, expected)
    negative = (bbox[:, 2:] < 0).any(axis=1)
    if negative.any():
        first = int(np.flatnonzero(negative)[0])
        raise ValueError(
            f"{locate(first)} has a negative width or height (x, y, w, h = "
            f"{bbox[first].tolist()}); expected {expected}"
        )


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


def _columns(records: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> dict[str, list[Any]]:
    """``[r[key] for r in records]`` for each key; names the first result that lacks one."""
    try:
        return {key: [r[key] for r in records] for key in keys}
    except KeyError:
        for i, r in enumerate(records):
            missing = [key for key in keys if key not in r]
            if missing:
                raise ValueError(f"results[{i}] lacks {missing}") from None
        raise


def _int_column(values: list[Any], key: str) -> np.ndarray:
    """``results[i][key]`` as int64, each an integer (a float id is an error, not truncated)."""
    column = np.array(values)
    if column.dtype.kind in "iu" and column.ndim == 1:  # only integers (the common case)
        return column.astype(np.int64)
    for i, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"results[{i}]['{key}'] must be an integer id, got {value!r}")
    return np.array(values, np.int64)


def _bbox_column(records: Sequence[Mapping[str, Any]]) -> np.ndarray:
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
                raise ValueError(
                    f"results[{i}]['bbox'] must be [x, y, w, h] (four numbers), got {box!r}"
                )
    _check_boxes(bbox, lambda i: f"results[{i}]['bbox']", "[x, y, w, h] with w, h >= 0")
    return bbox


#: pycocotools 2.0.11's ``area`` counts its input in a uint8 under numpy 2: at most 255 per call.
_AREA_CHUNK = 255


def _rle_area(rles: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """pycocotools' ``mask.area`` of each RLE, called on at most 255 at a time."""
    from pycocotools import mask as mask_utils

    parts = [
        np.asarray(mask_utils.area(list(rles[i : i + _AREA_CHUNK])), float).reshape(-1)
        for i in range(0, len(rles), _AREA_CHUNK)
    ]
    return np.concatenate(parts) if parts else np.zeros(0)


def _params(
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
            f"Expected argument `iou_thresholds` to be a non-empty sequence of floats in [0, 1], "
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
            f"in [0, 1], but got {recall_thresholds!r}"
        )
    dets = default.max_dets if max_detections is None else tuple(max_detections)
    if not dets or any(isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in dets):
        raise ValueError(
            "Expected argument `max_detections` to be a non-empty sequence of positive ints, "
            f"but got {max_detections!r}"
        )
    if len(set(dets)) != len(dets):
        raise ValueError(f"Expected argument `max_detections` without repeats, but got {dets!r}")
    dets = tuple(sorted(dets))  # COCOeval.evaluate sorts maxDets: stats follow the sorted order
    if area_ranges is None:
        return Params(thrs, dets, default.area_rng, default.area_lbl, rec, keypoints)
    rng = np.array([tuple(v) for v in area_ranges.values()], float).reshape(-1, 2)
    if "all" not in area_ranges or not (rng[:, 0] <= rng[:, 1]).all():
        raise ValueError(
            "Expected argument `area_ranges` to map labels, including 'all', to (lo, hi) "
            f"with lo <= hi, but got {area_ranges!r}"
        )
    return Params(thrs, dets, rng, tuple(area_ranges), rec, keypoints)


def _sigmas(coco: COCO, sigmas: Sequence[float] | None) -> np.ndarray:
    """Checked OKS sigmas, one per keypoint of every ground-truth annotation that has any."""
    values = _cocoeval.KP_SIGMAS if sigmas is None else np.asarray(sigmas, float)
    if values.ndim != 1 or not len(values) or not (values > 0).all():
        raise ValueError(
            "Expected argument `keypoint_sigmas` to be a non-empty sequence of positive floats, "
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
