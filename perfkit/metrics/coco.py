"""COCO detection and instance-segmentation mAP, fed straight from model outputs.

:class:`COCOEvaluator` stores detections per image as columns of numpy arrays (no Python object per
box), gathers them from every rank at ``compute`` and evaluates them either with pycocotools'
``COCOeval`` (``backend="pycocotools"``, the reference) or with perfkit's vectorised
re-implementation (``backend="fast"``, the default through ``"auto"``), which gives the same
precision and recall arrays bit for bit and therefore the same twelve stats.

Evaluated images are the images passed to ``update`` (from the targets' ``image_id``, including
images without any detection) and to ``update_results`` (``image_ids``, or the images named in the
results) - as torchvision's reference evaluator does, not every image of the ground truth.
Stored detections grow linearly with the number of images: about 64 bytes per box (``"bbox"``) or
one RLE per mask (``"segm"``); 5000 images x 100 boxes take about 32 MB. ``reset`` frees them.
"""

from __future__ import annotations

import contextlib
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
from perfkit.metrics._cocoeval import STATS, Annotations
from perfkit.metrics._metric import Metric

if TYPE_CHECKING:
    import torch
    from pycocotools.coco import COCO

IouType = Literal["bbox", "segm"]
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
        with _quiet():
            return COCO(os.fspath(gt))
    if not (hasattr(gt, "dataset") and hasattr(gt, "imgs") and hasattr(gt, "loadRes")):
        raise TypeError(f"gt must be a path to an instances json or a pycocotools COCO, got {gt!r}")
    return gt


def _gt_annotations(coco: COCO, iou_type: IouType) -> Annotations:
    """The ground truth as columns, in dataset order (pycocotools' order within an image)."""
    anns = coco.dataset.get("annotations", [])
    missing = [
        a.get("id") for a in anns if "area" not in a or (iou_type == "bbox" and "bbox" not in a)
    ]
    if missing:
        raise ValueError(
            f"gt: annotations {missing[:5]} lack 'area' or 'bbox', which COCO evaluation needs"
        )
    return Annotations(
        image=np.array([a["image_id"] for a in anns], np.int64),
        category=np.array([a["category_id"] for a in anns], np.int64),
        area=np.array([a["area"] for a in anns], float),
        bbox=np.array([a["bbox"] for a in anns], float).reshape(-1, 4)
        if iou_type == "bbox"
        else None,
        rles=[coco.annToRLE(a) for a in anns] if iou_type == "segm" else None,
        crowd=np.array([bool(a.get("iscrowd", 0)) for a in anns], bool),
        ann_id=np.array([a["id"] for a in anns], np.int64),
    )


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
    """COCO mAP of detections (``iou_type="bbox"``) or instance masks (``"segm"``).

    Args:
        gt: path to a COCO instances json, or a pycocotools ``COCO``.
        iou_type: ``"bbox"`` or ``"segm"``.
        label_to_category: maps model labels to COCO category ids - a sequence indexed by label
            (contiguous training labels) or a mapping; ``None``: labels are category ids.
        backend: ``"fast"`` (perfkit's vectorised evaluation), ``"pycocotools"`` (``COCOeval``
            itself) or ``"auto"`` (the fastest exact one: ``"fast"``). All give identical numbers.
        use_cats: ``COCOeval.params.useCats``; ``False`` evaluates class-agnostically.
        mask_threshold: float masks (torchvision's (N, 1, H, W) probabilities) are foreground
            above it; bool and integer masks are foreground where non-zero.
        progress: a tqdm bar on evaluations longer than a second; ``None``: only when stderr is a
            terminal.
    """

    chunks: list[_Chunk]

    def __init__(
        self,
        gt: str | os.PathLike[str] | COCO,
        iou_type: IouType = "bbox",
        *,
        label_to_category: Sequence[int] | Mapping[int, int] | None = None,
        backend: Backend = "auto",
        use_cats: bool = True,
        mask_threshold: float = 0.5,
        progress: bool | None = None,
    ) -> None:
        super().__init__()
        if iou_type not in ("bbox", "segm"):
            raise ValueError(f"iou_type must be 'bbox' or 'segm', got {iou_type!r}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.coco_gt = _load_gt(gt)
        self.iou_type: IouType = iou_type
        self.backend: Backend = "fast" if backend == "auto" else backend
        self.use_cats = bool(use_cats)
        self.mask_threshold = float(mask_threshold)
        self.progress = progress
        self._gt_images = set(self.coco_gt.getImgIds())
        self._cat_ids = np.array(sorted(self.coco_gt.getCatIds()), np.int64)
        self._label_lut = self._lookup(label_to_category)
        self._gt: Annotations | None = None  # ground-truth columns, built on the first compute
        self._seen: set[int] = set()
        self.add_state("chunks", list, "cat")

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

    def update(
        self, outputs: Sequence[Mapping[str, torch.Tensor]], targets: Sequence[Mapping[str, Any]]
    ) -> None:
        """Add one batch of torchvision-style predictions.

        ``outputs[i]`` holds ``boxes`` (N, 4) xyxy in pixels, ``scores`` (N,), ``labels`` (N,)
        and, for ``"segm"``, ``masks`` (N, 1, H, W) or (N, H, W) at the image's size instead of
        boxes; ``targets[i]["image_id"]`` names the image (an int or a one-element tensor). Boxes
        become xywh in float64.
        """
        import torch

        if len(outputs) != len(targets):
            raise ValueError(
                f"outputs and targets must have one entry per image, got {len(outputs)} outputs "
                f"and {len(targets)} targets"
            )
        images = np.array([_image_id(t, f"targets[{i}]") for i, t in enumerate(targets)], np.int64)
        geometry = "boxes" if self.iou_type == "bbox" else "masks"
        counts = [_check_output(out, i, geometry) for i, out in enumerate(outputs)]
        self._check_images(images, "targets")

        def column(key: str, width: int, dtype: torch.dtype) -> np.ndarray:
            parts = [torch.as_tensor(out[key]).detach().reshape(-1, width) for out in outputs]
            cat = torch.cat(parts).cpu() if parts else torch.zeros((0, width))
            return cat.to(dtype).numpy()

        scores = column("scores", 1, torch.float64).reshape(-1)
        if not np.isfinite(scores).all():
            where = _locator(counts, "scores")(int(np.flatnonzero(~np.isfinite(scores))[0]))
            raise ValueError(f"{where} is NaN or inf; expected finite scores")
        labels = column("labels", 1, torch.int64).reshape(-1)
        category = self._categories(labels, _locator(counts, "labels"))
        image = np.repeat(images, counts)
        if geometry == "boxes":
            xyxy = column("boxes", 4, torch.float64)
            bbox = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)
            _check_boxes(bbox, _locator(counts, "boxes"), "xyxy boxes with x2 >= x1, y2 >= y1")
            dets = Annotations(image, category, bbox[:, 2] * bbox[:, 3], bbox=bbox, score=scores)
        else:
            rles = self._encode_masks(outputs, images, counts)
            dets = Annotations(image, category, _rle_area(rles), rles=rles, score=scores)
        self._store(images, dets)

    def update_results(
        self,
        results: str | os.PathLike[str] | Sequence[Mapping[str, Any]],
        image_ids: Iterable[int] | None = None,
    ) -> None:
        """Add detections in COCO results format (a list of dicts, or a results json's path).

        Each result holds ``image_id``, ``category_id``, ``score`` and ``bbox`` [x, y, w, h]
        (``"bbox"``) or an RLE ``segmentation`` (``"segm"``). The evaluated images are
        ``image_ids`` when given (pass them to count images without any detection), else the
        images the results name.
        """
        loaded: Any = results
        if isinstance(results, (str, os.PathLike)):
            if not Path(results).is_file():
                raise FileNotFoundError(f"results: no results json at {str(results)!r}")
            with open(results, encoding="utf-8") as f:
                loaded = json.load(f)
        if not isinstance(loaded, (list, tuple)) or not all(isinstance(r, Mapping) for r in loaded):
            raise ValueError("results must be a list of COCO result dicts or a path to one")
        records: Sequence[Mapping[str, Any]] = loaded
        geometry = "bbox" if self.iou_type == "bbox" else "segmentation"
        for i, r in enumerate(records):
            missing = [k for k in ("image_id", "category_id", "score", geometry) if k not in r]
            if missing:
                raise ValueError(f"results[{i}] lacks {missing}")
        image = np.array([r["image_id"] for r in records], np.int64)
        images = np.unique(image) if image_ids is None else np.array(list(image_ids), np.int64)
        stray = np.setdiff1d(image, images)
        if len(stray):
            raise ValueError(f"results name images {stray[:10].tolist()} missing from image_ids")
        self._check_images(images, "results" if image_ids is None else "image_ids")

        def locate(arg: str) -> Callable[[int], str]:
            return lambda i: f"results[{i}]['{arg}']"

        category = np.array([r["category_id"] for r in records], np.int64)
        unknown = ~np.isin(category, self._cat_ids)
        if unknown.any():
            where = locate("category_id")(int(np.flatnonzero(unknown)[0]))
            raise ValueError(f"{where} is not a category id of the ground truth")
        score = np.array([r["score"] for r in records], np.float64)
        if not np.isfinite(score).all():
            where = locate("score")(int(np.flatnonzero(~np.isfinite(score))[0]))
            raise ValueError(f"{where} is NaN or inf; expected a finite score")
        if geometry == "bbox":
            bbox = np.array([r["bbox"] for r in records], np.float64).reshape(-1, 4)
            _check_boxes(bbox, locate("bbox"), "[x, y, w, h] with w, h >= 0")
            dets = Annotations(image, category, bbox[:, 2] * bbox[:, 3], bbox=bbox, score=score)
        else:
            rles = [r["segmentation"] for r in records]
            for i, (rle, img) in enumerate(zip(rles, image.tolist(), strict=True)):
                if not isinstance(rle, Mapping) or list(rle.get("size", ())) != self._size(img):
                    raise ValueError(
                        f"{locate('segmentation')(i)} must be an RLE dict whose size is the "
                        f"image's [height, width] = {self._size(img)}"
                    )
            dets = Annotations(image, category, _rle_area(rles), rles=rles, score=score)
        self._store(images, dets)

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
        """Model labels -> COCO category ids, every label checked."""
        if self._label_lut is None:
            category = labels
            bad = ~np.isin(labels, self._cat_ids)
            hint = "is not a category id of the ground truth (pass label_to_category)"
        else:
            inside = (labels >= 0) & (labels < len(self._label_lut))
            category = np.where(inside, self._label_lut[np.where(inside, labels, 0)], -1)
            bad = category < 0
            hint = "maps to no category in label_to_category"
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{locate(first)}: label {int(labels[first])} {hint}")
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
        """The twelve COCO stats over the images of every rank, in pycocotools' order.

        A stat is -1.0 where no ground truth counts (pycocotools' convention); all are -1.0 when
        no image was evaluated. ``per_category=True`` adds ``"AP/<category name>"`` (AP@[.50:.95],
        all areas, maxDets 100) for each category of the ground truth.
        """
        if per_category and not self.use_cats:
            raise ValueError("per_category=True needs use_cats=True")
        chunks = self._synced_state()["chunks"]
        shape: tuple[int, ...] = (
            len(_cocoeval.IOU_THRS),
            len(self._cat_ids) if self.use_cats else 1,
        )
        shape += (len(_cocoeval.AREA_RNG), len(_cocoeval.MAX_DETS))
        precision = -np.ones((shape[0], len(_cocoeval.REC_THRS), *shape[1:]))
        recall = -np.ones(shape)
        if chunks:
            precision, recall = self._evaluate(*_merge(chunks))
        stats = _cocoeval.summarize(precision, recall)
        if per_category:
            cats = self.coco_gt.loadCats(self._cat_ids.tolist())
            for cat, ap in zip(cats, _cocoeval.per_category_ap(precision), strict=True):
                stats[f"AP/{cat['name']}"] = float(ap)
        return stats

    def summary(self, stats: Mapping[str, float] | None = None) -> str:
        """pycocotools' 12-line summary of ``stats`` (computed now when not given)."""
        stats = self.compute() if stats is None else stats
        lines = []
        for name, (is_ap, iou_thr, area, max_det) in STATS.items():
            title, kind = ("Average Precision", "(AP)") if is_ap else ("Average Recall", "(AR)")
            iou = "0.50:0.95" if iou_thr is None else f"{iou_thr:0.2f}"
            lines.append(
                f" {title:<18} {kind} @[ IoU={iou:<9} | area={area:>6s} | maxDets={max_det:>3d} ]"
                f" = {stats[name]:0.3f}"
            )
        return "\n".join(lines)

    def _evaluate(self, image_ids: np.ndarray, dets: Annotations) -> tuple[np.ndarray, np.ndarray]:
        from tqdm.auto import tqdm

        steps = _cocoeval.MAX_DETS[-1] + len(_cocoeval.MAX_DETS) * len(_cocoeval.AREA_RNG)
        with tqdm(
            total=steps if self.backend == "fast" else 2,
            desc=f"COCO {self.iou_type} eval",
            delay=1.0,
            disable=None if self.progress is None else not self.progress,
            leave=False,
        ) as bar:
            if self.backend == "pycocotools":
                return self._evaluate_pycocotools(image_ids, dets, bar.update)
            if self._gt is None:
                self._gt = _gt_annotations(self.coco_gt, self.iou_type)
            return _cocoeval.evaluate(
                self._gt,
                dets,
                image_ids,
                self._cat_ids,
                use_cats=self.use_cats,
                iou_type=self.iou_type,
                progress=bar.update,
            )

    def _evaluate_pycocotools(
        self, image_ids: np.ndarray, dets: Annotations, progress: Callable[[int], Any]
    ) -> tuple[np.ndarray, np.ndarray]:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        with _quiet():
            if len(dets):
                coco_dt = self.coco_gt.loadRes(_result_dicts(dets))
            else:  # loadRes refuses an empty list
                coco_dt = COCO()
                coco_dt.dataset = {"images": self.coco_gt.dataset["images"], "annotations": []}
                coco_dt.createIndex()
            evaluator = COCOeval(self.coco_gt, coco_dt, self.iou_type)
            evaluator.params.imgIds = image_ids.tolist()
            evaluator.params.useCats = int(self.use_cats)
            evaluator.evaluate()
            progress(1)
            evaluator.accumulate()
            progress(1)
        return evaluator.eval["precision"], evaluator.eval["recall"]


def _check_output(out: Any, i: int, geometry: str) -> int:
    """Check the keys, shapes and dtypes of ``outputs[i]``; returns its number of detections."""
    import torch

    if not isinstance(out, Mapping):
        raise ValueError(f"outputs[{i}] must be a dict of tensors, got {type(out).__name__}")
    missing = [k for k in (geometry, "scores", "labels") if k not in out]
    if missing:
        raise ValueError(
            f"outputs[{i}] lacks {missing}; expected {geometry}, scores (N,) and labels (N,)"
        )
    scores = torch.as_tensor(out["scores"])
    if scores.ndim != 1:
        raise ValueError(f"outputs[{i}]['scores'] must have shape (N,), got {tuple(scores.shape)}")
    n = len(scores)
    for key, shape, text in (("labels", (n,), "(N,)"), ("boxes", (n, 4), "(N, 4)")):
        if key in (geometry, "labels") and tuple(torch.as_tensor(out[key]).shape) != shape:
            raise ValueError(
                f"outputs[{i}]['{key}'] must have shape {text} with N = {n} as in scores, "
                f"got {tuple(torch.as_tensor(out[key]).shape)}"
            )
    labels = torch.as_tensor(out["labels"])
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"outputs[{i}]['labels'] must hold integer labels, got {labels.dtype}")
    return n


def _check_boxes(bbox: np.ndarray, locate: Callable[[int], str], expected: str) -> None:
    """Finite xywh boxes with w, h >= 0, else an error naming the first bad row."""
    finite = np.isfinite(bbox).all(axis=1)
    if not finite.all():
        first = int(np.flatnonzero(~finite)[0])
        raise ValueError(f"{locate(first)} is NaN or inf; expected {expected}")
    negative = (bbox[:, 2:] < 0).any(axis=1)
    if negative.any():
        first = int(np.flatnonzero(negative)[0])
        raise ValueError(
            f"{locate(first)} has a negative width or height (x, y, w, h = "
            f"{bbox[first].tolist()}); expected {expected}"
        )


def _result_dicts(dets: Annotations) -> list[dict[str, Any]]:
    """COCO result dicts for pycocotools (one Python dict per detection)."""
    key, values = (
        ("bbox", dets.bbox.tolist()) if dets.bbox is not None else ("segmentation", dets.rles)
    )
    assert dets.score is not None and values is not None
    return [
        {"image_id": i, "category_id": c, "score": s, key: g}
        for i, c, s, g in zip(
            dets.image.tolist(), dets.category.tolist(), dets.score.tolist(), values, strict=True
        )
    ]


def _rle_area(rles: Sequence[Mapping[str, Any]]) -> np.ndarray:
    from pycocotools import mask as mask_utils

    return np.asarray(mask_utils.area(list(rles)), float).reshape(-1) if rles else np.zeros(0)
