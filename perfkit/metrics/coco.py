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

The parts: _coco_gt (the ground truth), _coco_params (the checked parameters), _coco_detections
(outputs and results to columns), _cocoeval (the fast backend), _coco_pycocotools (the reference
backend); this module holds the evaluator's state and its outputs.
"""

from __future__ import annotations

import dataclasses
import json
import operator
import os
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import numpy as np

from perfkit.checks import one_of, wrong_type, wrong_value
from perfkit.metrics import _coco_pycocotools, _cocoeval
from perfkit.metrics._coco_detections import (
    EXPECTED_BOXES,
    bbox_column,
    check_boxes,
    check_finite_rows,
    check_output,
    check_rle_sizes,
    encode_masks,
    int_column,
    keypoint_area,
    keypoint_column,
    locator,
    result_columns,
    rle_area,
    target_image_id,
    to_xywh,
)
from perfkit.metrics._coco_gt import check_complete, check_unique_ids, gt_annotations, load_gt
from perfkit.metrics._coco_params import evaluation_params, oks_sigmas
from perfkit.metrics._cocoeval import STATS, Annotations
from perfkit.metrics._metric import Metric

if TYPE_CHECKING:
    import torch
    from pycocotools.coco import COCO

IouType = Literal["bbox", "segm", "keypoints"]
IOU_TYPES = ("bbox", "segm", "keypoints")
BoxFormat = Literal["xyxy", "xywh", "cxcywh"]
BOX_FORMATS = ("xyxy", "xywh", "cxcywh")
Backend = Literal["auto", "fast", "pycocotools"]
BACKENDS = ("auto", "fast", "pycocotools")
STAT_NAMES = tuple(STATS)


class _Chunk(NamedTuple):
    """What one ``update`` adds: the images it covers and their detections."""

    images: np.ndarray
    dets: Annotations


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
                f"'bbox' and 'segm' but got {iou_type!r}"
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
        one_of("backend", backend, BACKENDS)
        one_of("box_format", box_format, BOX_FORMATS)
        self.box_format: BoxFormat = box_format
        self.params = evaluation_params(
            iou_thresholds, max_detections, area_ranges, recall_thresholds, iou_type == "keypoints"
        )
        self.coco_gt = load_gt(gt)
        check_unique_ids(self.coco_gt)
        self.sigmas = oks_sigmas(self.coco_gt, keypoint_sigmas) if iou_type == "keypoints" else None
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
            raise ValueError(
                "Expected argument `label_to_category` to map labels >= 0 but got label "
                f"{int(pairs[:, 0].min())}"
            )
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
                "Expected arguments `outputs` and `targets` to have one entry per image but got "
                f"{len(outputs)} outputs and {len(targets)} targets"
            )
        images = np.array(
            [target_image_id(t, f"targets[{i}]") for i, t in enumerate(targets)], np.int64
        )
        geometry = [
            {"bbox": "boxes", "segm": "masks", "keypoints": "keypoints"}[t] for t in self.iou_types
        ]
        counts = [check_output(out, i, geometry) for i, out in enumerate(outputs)]
        self._check_images(images, "targets")

        def column(key: str, width: int) -> torch.Tensor:
            parts = [torch.as_tensor(out[key]).detach().reshape(-1, width) for out in outputs]
            return torch.cat(parts).cpu() if parts else torch.zeros((0, width))

        scores = column("scores", 1).to(torch.float64).numpy().reshape(-1)
        if not np.isfinite(scores).all():
            where = locator(counts, "scores")(int(np.flatnonzero(~np.isfinite(scores))[0]))
            raise ValueError(f"{where} is NaN or inf; expected finite scores")
        labels = column("labels", 1).to(torch.int64).numpy().reshape(-1)
        category = self._categories(labels, locator(counts, "labels"))
        image = np.repeat(images, counts)
        bbox = rles = None
        if "boxes" in geometry:
            bbox = to_xywh(column("boxes", 4), self.box_format).to(torch.float64).numpy()
            check_boxes(bbox, locator(counts, "boxes"), EXPECTED_BOXES[self.box_format])
        if "masks" in geometry:
            rles = encode_masks(outputs, images, counts, self.coco_gt, self.mask_threshold)
        if "keypoints" in geometry:
            assert self.sigmas is not None
            n_points = len(self.sigmas)
            for i, (out, n) in enumerate(zip(outputs, counts, strict=True)):
                shape = tuple(torch.as_tensor(out["keypoints"]).shape)
                if shape != (n, n_points, 3):
                    raise ValueError(
                        f"Expected argument `outputs[{i}]['keypoints']` to have shape (N, K, 3) = "
                        f"({n}, {n_points}, 3) (K: one per keypoint sigma) but got shape {shape}"
                    )
            points = column("keypoints", 3 * n_points).to(torch.float64).numpy()
            check_finite_rows(points, locator(counts, "keypoints"), "finite keypoints")
            dets = Annotations(
                image, category, keypoint_area(points), keypoints=points, score=scores
            )
        else:  # the area of the masks where there are masks, else the boxes' (w * h)
            if rles is not None:
                area = rle_area(rles)
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
            error = wrong_type if loaded is results else wrong_value  # else a json of another kind
            raise error("results", "a list of COCO result dicts or a path to one", results)
        records: Sequence[Mapping[str, Any]] = loaded
        geometry = [
            {"bbox": "bbox", "segm": "segmentation", "keypoints": "keypoints"}[t]
            for t in self.iou_types
        ]
        columns = result_columns(records, ("image_id", "category_id", "score", *geometry))
        image = int_column(columns["image_id"], "image_id")
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
        category = int_column(columns["category_id"], "category_id")
        score = np.array(columns["score"], np.float64)
        if not np.isfinite(score).all():
            where = f"results[{int(np.flatnonzero(~np.isfinite(score))[0])}]['score']"
            raise ValueError(f"{where} is NaN or inf; expected a finite score")
        with_box = "bbox" in geometry or bool(records and records[0].get("bbox", []) != [])
        bbox = bbox_column(records) if with_box else None
        if "keypoints" in geometry:
            assert self.sigmas is not None
            points = keypoint_column(columns["keypoints"], len(self.sigmas))
            area = keypoint_area(points) if bbox is None else bbox[:, 2] * bbox[:, 3]
            dets = Annotations(image, category, area, keypoints=points, score=score)
        elif "segmentation" in geometry:
            rles = columns["segmentation"]
            check_rle_sizes(rles, image, self.coco_gt)
            area = rle_area(rles) if bbox is None else bbox[:, 2] * bbox[:, 3]
            box = bbox if "bbox" in geometry else None  # the box of a segm result: its area only
            dets = Annotations(image, category, area, bbox=box, rles=rles, score=score)
        else:
            assert bbox is not None
            dets = Annotations(image, category, bbox[:, 2] * bbox[:, 3], bbox=bbox, score=score)
        self._store(images, self._known(dets))

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
        check_complete(self.coco_gt, image_ids, self._cat_ids, iou_type)
        with tqdm(
            total=steps if self.backend == "fast" else 2,
            desc=f"COCO {iou_type} eval",
            delay=1.0,
            disable=None if self.progress is None else not self.progress,
            leave=False,
        ) as bar:
            if self.backend == "pycocotools":
                return _coco_pycocotools.evaluate(
                    self.coco_gt,
                    image_ids,
                    dets,
                    iou_type,
                    use_cats,
                    p,
                    self.sigmas,
                    ious,
                    bar.update,
                )
            if iou_type not in self._gt:
                width = 0 if self.sigmas is None else 3 * len(self.sigmas)
                self._gt[iou_type] = gt_annotations(self.coco_gt, iou_type, width)
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
