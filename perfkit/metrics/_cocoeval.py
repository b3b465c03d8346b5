"""COCO evaluation vectorised with numpy, reproducing pycocotools' ``COCOeval`` bit for bit.

pycocotools matches detections greedily, one detection at a time in score order, per image,
category, area range and IoU threshold, in Python loops. Here the loops run over detection
*ranks* instead: the detections ranked r-th in their (image, category) group are matched for all
groups, area ranges and thresholds at once, with the same tie rules (the last ground truth with the
highest IoU wins; regular ground truth before ignored; crowds can match many times). The arithmetic
(bbox IoU, cumulative sums, precision envelope, recall search) repeats pycocotools' operations in
the same order on float64, so precision, recall and the twelve stats come out identical.
The IoU thresholds, recall thresholds, maxDets and area ranges are pycocotools' ``Params``
(:class:`Params`; the defaults are COCO's).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

IOU_THRS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
REC_THRS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
MAX_DETS = (1, 10, 100)
AREA_RNG = np.array([[0**2, 1e5**2], [0**2, 32**2], [32**2, 96**2], [96**2, 1e5**2]], dtype=float)
AREA_LBL = ("all", "small", "medium", "large")
#: pycocotools' ``setKpParams``: maxDets and area ranges of keypoint evaluation.
KP_MAX_DETS = (20,)
KP_AREA_RNG = AREA_RNG[[0, 2, 3]]
KP_AREA_LBL = ("all", "medium", "large")
#: COCO's 17 person keypoints' OKS sigmas (pycocotools' ``Params.kpt_oks_sigmas``).
KP_SIGMAS = (
    np.array(
        [
            0.26,
            0.25,
            0.25,
            0.35,
            0.35,
            0.79,
            0.79,
            0.72,
            0.72,
            0.62,
            0.62,
            1.07,
            1.07,
            0.87,
            0.87,
            0.89,
            0.89,
        ]
    )
    / 10.0
)
_AREA_SUFFIX = {"small": "s", "medium": "m", "large": "l"}

Progress = Callable[[int], object]
#: A stat: (AP or AR, IoU threshold or None for the mean over all, area label, maxDets).
StatSpec = tuple[bool, float | None, str, int]


@dataclass(frozen=True)
class Params:
    """pycocotools' ``Params`` that evaluation depends on: ``iouThrs``, ``maxDets``,
    ``areaRng`` (pixels², [lo, hi] inclusive), ``areaRngLbl`` and ``recThrs``."""

    iou_thrs: np.ndarray = field(default_factory=lambda: IOU_THRS)
    max_dets: tuple[int, ...] = MAX_DETS
    area_rng: np.ndarray = field(default_factory=lambda: AREA_RNG)  # (A, 2) float64
    area_lbl: tuple[str, ...] = AREA_LBL
    rec_thrs: np.ndarray = field(default_factory=lambda: REC_THRS)  # (R,) ascending in [0, 1]
    keypoints: bool = False  # iouType "keypoints": summarize's keypoint stats

    def stats(self) -> dict[str, StatSpec]:
        """The stats of ``COCOeval.summarize`` for these parameters, by name.

        The defaults give its twelve (AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm,
        ARl). AP50 / AP75 exist when 0.5 / 0.75 is a threshold; area stats are named by the area
        label (``s`` / ``m`` / ``l`` for COCO's, else ``_<label>``); AP and area stats use the
        last maxDets (pycocotools hard-codes 100 there and reports -1 for other values), AR one
        stat per maxDets. For keypoints, as ``_summarizeKps``: AR (the last maxDets), AR50 and
        AR75 instead (its ten with the defaults: AP, AP50, AP75, APm, APl, AR, AR50, AR75, ARm,
        ARl), and ``AR<m>`` for any other maxDets.
        """
        last = self.max_dets[-1]
        areas = [lbl for lbl in self.area_lbl if lbl != "all"]
        at = [
            (thr, name) for thr, name in ((0.5, "50"), (0.75, "75")) if (self.iou_thrs == thr).any()
        ]
        out: dict[str, StatSpec] = {"AP": (True, None, "all", last)}
        out |= {f"AP{name}": (True, thr, "all", last) for thr, name in at}
        for lbl in areas:
            out["AP" + _AREA_SUFFIX.get(lbl, f"_{lbl}")] = (True, None, lbl, last)
        if self.keypoints:
            out |= {f"AR{m}": (False, None, "all", m) for m in self.max_dets[:-1]}
            out["AR"] = (False, None, "all", last)
            out |= {f"AR{name}": (False, thr, "all", last) for thr, name in at}
        else:
            out |= {f"AR{m}": (False, None, "all", m) for m in self.max_dets}
        for lbl in areas:
            out["AR" + _AREA_SUFFIX.get(lbl, f"_{lbl}")] = (False, None, lbl, last)
        return out


DEFAULT_PARAMS = Params()
KP_PARAMS = Params(max_dets=KP_MAX_DETS, area_rng=KP_AREA_RNG, area_lbl=KP_AREA_LBL, keypoints=True)
#: The twelve stats of ``COCOeval.summarize`` with COCO's parameters.
STATS = DEFAULT_PARAMS.stats()


@dataclass(frozen=True)
class Annotations:
    """Columnar annotations, one row each: ground truth (``crowd``, ``ann_id``, ``ignore``) or
    detections (``score``). ``bbox`` is xywh (bbox evaluation; the ground truth's for keypoints
    too), ``rles`` the masks (segm evaluation), ``keypoints`` (N, 3K) x, y, v (keypoints)."""

    image: np.ndarray  # int64 image ids
    category: np.ndarray  # int64 category ids
    area: np.ndarray  # float64
    bbox: np.ndarray | None = None  # (N, 4) float64 xywh
    rles: Sequence[Any] | None = None  # RLE dicts (None: a ground truth no evaluation reads)
    score: np.ndarray | None = None  # float64, detections
    crowd: np.ndarray | None = None  # bool, ground truth
    ann_id: np.ndarray | None = None  # int64, ground truth
    keypoints: np.ndarray | None = None  # (N, 3K) float64
    ignore: np.ndarray | None = None  # bool, ground truth ignored besides crowds (no keypoints)

    def __len__(self) -> int:
        return len(self.image)

    def take(self, index: np.ndarray) -> Annotations:
        """The rows at ``index`` (integer positions), every column."""
        return Annotations(**{f.name: _take(getattr(self, f.name), index) for f in fields(self)})

    @classmethod
    def concat(cls, parts: Sequence[Annotations]) -> Annotations:
        """Rows of ``parts`` one after the other (all parts have the same columns)."""
        columns: dict[str, Any] = {}
        for f in fields(cls):
            values = [getattr(p, f.name) for p in parts]
            if values[0] is None:
                columns[f.name] = None
            elif isinstance(values[0], np.ndarray):
                columns[f.name] = np.concatenate(values)
            else:
                columns[f.name] = [item for value in values for item in value]
        return cls(**columns)


def _take(column: Any, index: np.ndarray) -> Any:
    if column is None:
        return None
    if isinstance(column, np.ndarray):
        return column[index]
    return [column[i] for i in index]


def _index_in(sorted_ids: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Position of each value in ``sorted_ids``, -1 where absent."""
    pos = np.searchsorted(sorted_ids, values).clip(0, max(len(sorted_ids) - 1, 0))
    found = sorted_ids[pos] == values if len(sorted_ids) else np.zeros(len(values), bool)
    return np.where(found, pos, -1)


def _starts(sorted_keys: np.ndarray, n_keys: int) -> np.ndarray:
    """Boundaries of each key 0..n_keys-1 in a sorted key array (n_keys + 1 entries)."""
    return np.searchsorted(sorted_keys, np.arange(n_keys + 1))


def _bbox_iou(dt: np.ndarray, gt: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """pycocotools' ``bbIou`` on pairs of xywh boxes, the same float64 operations in order."""
    w = np.minimum(dt[:, 2] + dt[:, 0], gt[:, 2] + gt[:, 0]) - np.maximum(dt[:, 0], gt[:, 0])
    h = np.minimum(dt[:, 3] + dt[:, 1], gt[:, 3] + gt[:, 1]) - np.maximum(dt[:, 1], gt[:, 1])
    inter = w * h
    dt_area = dt[:, 2] * dt[:, 3]
    union = np.where(crowd, dt_area, dt_area + gt[:, 2] * gt[:, 3] - inter)
    return np.divide(inter, union, out=np.zeros(len(inter)), where=(w > 0) & (h > 0))


def _segm_iou(
    dt_rles: Sequence[Any],
    dt_rows: np.ndarray,
    gt_rles: Sequence[Any],
    gt_rows: np.ndarray,
    crowd: np.ndarray,
    pair_det: np.ndarray,
    pair_gt: np.ndarray,
    pair_group: np.ndarray,
    n_cats: int,
) -> np.ndarray:
    """Mask IoU of every pair, from one pycocotools ``iou`` call per image.

    ``dt_rles[dt_rows[i]]`` / ``gt_rles[gt_rows[j]]`` are the masks of ``pair_det == i`` /
    ``pair_gt == j``; pairs are in group order (image-major). A call costs about 18 µs before any
    work, more than most (image, category) groups' pairs, so each image's groups go in one call.
    Pairs of other categories would then be computed too; pycocotools' ``rleIou`` skips a pair
    whose masks' sizes differ (IoU -1, no work), so the masks of category index k are given the
    width ``w + k * (widest + 1)``: unique to (k, w), so no two categories' masks ever share a
    size (if they did, masks of different pixel counts would be walked, and pycocotools loops
    forever on those), while the counts, the height (the only dimension ``rleToBbox`` reads) and
    so every IoU within a group are unchanged.
    """
    from pycocotools import mask as mask_utils

    if not len(pair_det):
        return np.zeros(0)
    dets = pair_det[np.r_[True, pair_det[1:] != pair_det[:-1]]]  # pair_det is ascending
    gts = np.flatnonzero(np.bincount(pair_gt, minlength=len(gt_rows)))
    d_group = np.empty(len(dt_rows), np.int64)
    d_group[pair_det] = pair_group
    g_group = np.empty(len(gt_rows), np.int64)
    g_group[pair_gt] = pair_group
    # Detections and ground truths are in group order, so each image's are one run of each.
    images, d_bounds = np.unique(d_group[dets] // n_cats, return_index=True)
    g_bounds = np.searchsorted(g_group[gts] // n_cats, images)
    d_bounds, g_bounds = np.r_[d_bounds, len(dets)], np.r_[g_bounds, len(gts)]
    n_d, n_g = np.diff(d_bounds), np.diff(g_bounds)
    block_start = np.r_[0, np.cumsum(n_d * n_g)[:-1]]
    local_d = np.zeros(len(dt_rows), np.int64)
    local_d[dets] = np.arange(len(dets)) - np.repeat(d_bounds[:-1], n_d)
    local_g = np.zeros(len(gt_rows), np.int64)
    local_g[gts] = np.arange(len(gts)) - np.repeat(g_bounds[:-1], n_g)
    dt_sized, gt_sized = _widened(
        [[dt_rles[i] for i in dt_rows[dets].tolist()], [gt_rles[i] for i in gt_rows[gts].tolist()]],
        [d_group[dets] % n_cats, g_group[gts] % n_cats],
    )
    crowd_list = crowd[gts].astype(np.uint8).tolist()  # lists: faster than arrays here
    blocks = [
        np.asarray(
            mask_utils.iou(dt_sized[d_lo:d_hi], gt_sized[g_lo:g_hi], crowd_list[g_lo:g_hi]),
            dtype=float,
        ).reshape(-1)
        for d_lo, d_hi, g_lo, g_hi in zip(
            d_bounds[:-1].tolist(),
            d_bounds[1:].tolist(),
            g_bounds[:-1].tolist(),
            g_bounds[1:].tolist(),
            strict=True,
        )
    ]
    image_pos = np.searchsorted(images, pair_group // n_cats)
    flat = block_start[image_pos] + local_d[pair_det] * n_g[image_pos] + local_g[pair_gt]
    return np.concatenate(blocks)[flat]


#: Pairs whose OKS are computed at once (bounds the temporaries to about 100 MB for 17 points).
_OKS_CHUNK = 1 << 16


def _oks(
    dt_kp: np.ndarray,
    gt_kp: np.ndarray,
    gt_bbox: np.ndarray,
    gt_area: np.ndarray,
    pair_det: np.ndarray,
    pair_gt: np.ndarray,
    sigmas: np.ndarray,
) -> np.ndarray:
    """pycocotools' ``computeOks`` of each (detection, ground truth) pair, the same float64
    operations in order.

    Over the ground truth's visible keypoints (v > 0), or, for a ground truth with none, over
    every keypoint's distance outside the box enlarged by its size on each side. The mean of
    ``exp(-e)`` is summed as numpy sums a 1-D array of that length (one row-wise sum per count
    of visible keypoints, on rows compacted to the front), so each OKS is bit for bit
    pycocotools'.
    """
    out = np.empty(len(pair_det))
    variances = (sigmas * 2) ** 2
    for lo in range(0, len(pair_det), _OKS_CHUNK):
        d, g = pair_det[lo : lo + _OKS_CHUNK], pair_gt[lo : lo + _OKS_CHUNK]
        xd, yd = dt_kp[d, 0::3], dt_kp[d, 1::3]
        xg, yg, vg = gt_kp[g, 0::3], gt_kp[g, 1::3], gt_kp[g, 2::3]
        visible = vg > 0
        n_visible = visible.sum(axis=1)
        bb = gt_bbox[g]
        x0, x1 = (bb[:, 0] - bb[:, 2])[:, None], (bb[:, 0] + bb[:, 2] * 2)[:, None]
        y0, y1 = (bb[:, 1] - bb[:, 3])[:, None], (bb[:, 1] + bb[:, 3] * 2)[:, None]
        some = (n_visible > 0)[:, None]
        dx = np.where(some, xd - xg, np.maximum(0, x0 - xd) + np.maximum(0, xd - x1))
        dy = np.where(some, yd - yg, np.maximum(0, y0 - yd) + np.maximum(0, yd - y1))
        e = (dx**2 + dy**2) / variances / (gt_area[g] + np.spacing(1))[:, None] / 2
        terms = np.exp(-e)
        counted = np.where(some, visible, True)
        # counted terms first, in keypoint order (a stable sort of "not counted")
        compact = np.take_along_axis(terms, np.argsort(~counted, axis=1, kind="stable"), axis=1)
        n = counted.sum(axis=1)
        oks = np.empty(len(d))
        for k in np.unique(n).tolist():
            rows = np.flatnonzero(n == k)
            oks[rows] = np.ascontiguousarray(compact[rows, :k]).sum(axis=1) / k
        out[lo : lo + len(d)] = oks
    return out


def _widened(rles: list[list[Any]], category: list[np.ndarray]) -> list[list[dict[str, Any]]]:
    """Each list of ``rles`` with the width of a mask of category index k increased by
    ``k * (widest + 1)`` (the same counts; index 0 keeps the mask as it is)."""
    step = 1 + max((int(rle["size"][1]) for part in rles for rle in part), default=0)
    out = []
    for part, index in zip(rles, category, strict=True):
        widened = []
        for rle, k in zip(part, index.tolist(), strict=True):
            if k:
                height, width = rle["size"]
                rle = {"size": (height, width + k * step), "counts": rle["counts"]}
            widened.append(rle)
        out.append(widened)
    return out


def evaluate(
    gt: Annotations,
    dt: Annotations,
    img_ids: np.ndarray,
    cat_ids: np.ndarray,
    *,
    use_cats: bool = True,
    iou_type: str = "bbox",
    params: Params = DEFAULT_PARAMS,
    progress: Progress | None = None,
    sigmas: np.ndarray | None = None,
    ious: dict[tuple[int, int], np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``COCOeval.evaluate(); accumulate()`` -> ``eval``'s precision (T,R,K,A,M), recall
    (T,K,A,M) and scores (T,R,K,A,M). ``ious``, when given, receives ``COCOeval.ious``: the
    (detections by score, ground truths) IoU matrix of each (image id, category id or -1) that
    has both. ``img_ids`` and ``cat_ids`` are sorted unique ids (ground truth of others is not
    read); ``progress(n)`` is told of finished steps: one per detection rank (maxDets[-1]), one
    per maxDets and area range. ``sigmas``: the keypoints' OKS sigmas (``iou_type="keypoints"``).
    """
    assert dt.score is not None and gt.crowd is not None and gt.ann_id is not None
    n_cats = len(cat_ids) if use_cats else 1

    # Ground truth of the evaluated images and categories, as pycocotools lists it per group.
    g_order, g_group, _ = _grouped(gt, img_ids, cat_ids, use_cats)
    g_area, g_crowd = gt.area[g_order], gt.crowd[g_order]
    area_lo, area_hi = params.area_rng[:, :1], params.area_rng[:, 1:]
    g_ignore = g_crowd | (g_area < area_lo) | (g_area > area_hi)  # (A, G)
    if gt.ignore is not None:  # keypoints: pycocotools ignores ground truth without any
        g_ignore |= gt.ignore[g_order]
    g_nonzero_id = gt.ann_id[g_order] != 0  # pycocotools tests a match by the gt id's truth
    g_start = _starts(g_group, len(img_ids) * n_cats)

    # Detections by score within their group, truncated to maxDets[-1] per group.
    d_order, d_group, d_img = _grouped(dt, img_ids, cat_ids, use_cats, dt.score)
    rank = np.arange(len(d_order)) - np.searchsorted(d_group, d_group)
    keep = rank < params.max_dets[-1]
    d_order, d_group, d_img, rank = d_order[keep], d_group[keep], d_img[keep], rank[keep]

    pair_det, pair_gt, pair_iou = _pair_ious(
        dt, gt, d_order, d_group, g_order, g_start, iou_type, sigmas, n_cats
    )
    if ious is not None:
        ious.update(_iou_matrices(pair_iou, d_group, np.diff(g_start), img_ids, cat_ids, use_cats))
    dtm, dt_ignore = _match(
        pair_det, pair_gt, pair_iou, rank, g_ignore, g_crowd, g_nonzero_id, len(d_order), params,
        progress,
    )  # fmt: skip
    d_area = dt.area[d_order]
    d_out = (d_area < area_lo) | (d_area > area_hi)  # (A, D)
    dt_ignore |= ~dtm & d_out[:, None, :]

    # (K, A) regular ground truth per category (group % n_cats is the category index, or 0)
    npig = np.stack([np.bincount(g_group[~ig] % n_cats, minlength=n_cats) for ig in g_ignore], 1)
    return _accumulate(
        dtm, dt_ignore, dt.score[d_order], d_img, d_group % n_cats, rank, npig, params, progress
    )


def _grouped(
    rows: Annotations,
    img_ids: np.ndarray,
    cat_ids: np.ndarray,
    use_cats: bool,
    score: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The positions of the ``rows`` of evaluated images and categories in pycocotools' order,
    their group (image index x categories + category index; with ``use_cats=False`` all
    categories share a group) and image index. Within a group: by descending ``score`` when
    given (a stable sort), then category, then input order."""
    img, cat = _index_in(img_ids, rows.image), _index_in(cat_ids, rows.category)
    key = img * len(cat_ids) + cat if use_cats else img
    sel = np.flatnonzero((img >= 0) & (cat >= 0))
    by_score = () if score is None else (-score[sel],)
    order = sel[np.lexsort((sel, cat[sel], *by_score, key[sel]))]
    return order, key[order], img[order]


def _pair_ious(
    dt: Annotations,
    gt: Annotations,
    d_order: np.ndarray,
    d_group: np.ndarray,
    g_order: np.ndarray,
    g_start: np.ndarray,
    iou_type: str,
    sigmas: np.ndarray | None,
    n_cats: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (detection, ground truth) pair of a group, detection-major: the positions of each
    in ``d_order`` and ``g_order``, and their IoU (OKS for keypoints)."""
    assert gt.crowd is not None
    n_pairs_of = np.diff(g_start)[d_group]
    pair_det = np.repeat(np.arange(len(d_order)), n_pairs_of)
    offset = np.arange(len(pair_det)) - np.repeat(np.cumsum(n_pairs_of) - n_pairs_of, n_pairs_of)
    pair_gt = g_start[d_group][pair_det] + offset
    g_crowd = gt.crowd[g_order]
    if iou_type == "bbox":
        assert dt.bbox is not None and gt.bbox is not None
        dt_box, gt_box = dt.bbox[d_order][pair_det], gt.bbox[g_order][pair_gt]
        return pair_det, pair_gt, _bbox_iou(dt_box, gt_box, g_crowd[pair_gt])
    if iou_type == "keypoints":
        assert dt.keypoints is not None and gt.keypoints is not None and gt.bbox is not None
        assert sigmas is not None
        oks = _oks(
            dt.keypoints[d_order], gt.keypoints[g_order], gt.bbox[g_order], gt.area[g_order],
            pair_det, pair_gt, sigmas,
        )  # fmt: skip
        return pair_det, pair_gt, oks
    assert dt.rles is not None and gt.rles is not None
    segm = _segm_iou(
        dt.rles, d_order, gt.rles, g_order, g_crowd, pair_det, pair_gt, d_group[pair_det], n_cats
    )
    return pair_det, pair_gt, segm


def _iou_matrices(
    pair_iou: np.ndarray,
    d_group: np.ndarray,
    n_gt: np.ndarray,
    img_ids: np.ndarray,
    cat_ids: np.ndarray,
    use_cats: bool,
) -> dict[tuple[int, int], np.ndarray]:
    """Each group's pairs (detection-major, groups ascending) as its (D, G) matrix."""
    groups, n_det = np.unique(d_group, return_counts=True)
    keep = n_gt[groups] > 0
    groups, n_det = groups[keep], n_det[keep]
    sizes = n_det * n_gt[groups]
    blocks = np.split(pair_iou, np.cumsum(sizes)[:-1]) if len(sizes) else []
    n_cats = len(cat_ids) if use_cats else 1
    return {
        (int(img_ids[g // n_cats]), int(cat_ids[g % n_cats]) if use_cats else -1): block.reshape(
            d, int(n_gt[g])
        )
        for g, d, block in zip(groups.tolist(), n_det.tolist(), blocks, strict=True)
    }


def _match(
    pair_det: np.ndarray,
    pair_gt: np.ndarray,
    pair_iou: np.ndarray,
    rank: np.ndarray,
    g_ignore: np.ndarray,
    g_crowd: np.ndarray,
    g_nonzero_id: np.ndarray,
    n_det: int,
    params: Params,
    progress: Progress | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy matching as ``COCOeval.evaluateImg`` -> (dtm, dtIg), both (A, T, D) bool."""
    n_area, n_thr = len(params.area_rng), len(params.iou_thrs)
    thr = np.minimum(params.iou_thrs, 1 - 1e-10)[:, None]
    taken = np.zeros((n_area, n_thr, len(g_crowd)), bool)
    dtm = np.zeros((n_area, n_thr, n_det), bool)
    dt_ignore = np.zeros((n_area, n_thr, n_det), bool)
    # A pair under every threshold never matches: only the others take part.
    close = np.flatnonzero(pair_iou >= thr.min())
    pair_det, pair_gt, pair_iou = pair_det[close], pair_gt[close], pair_iou[close]
    by_rank = np.argsort(rank[pair_det], kind="stable")
    bounds = _starts(rank[pair_det][by_rank], params.max_dets[-1])
    for lo, hi in itertools.pairwise(bounds):
        if progress is not None:
            progress(1)
        if lo == hi:
            continue
        sel = by_rank[lo:hi]
        pdet, pgt, iou = pair_det[sel], pair_gt[sel], pair_iou[sel]
        first = np.r_[True, pdet[1:] != pdet[:-1]]
        starts, seg = np.flatnonzero(first), np.cumsum(first) - 1
        ignored = g_ignore[:, None, pgt]
        ok = (~taken[:, :, pgt] | g_crowd[pgt]) & (iou >= thr)
        regular = ok & ~ignored
        # Regular ground truth first; ignored ground truth only for detections with none.
        has_regular = np.maximum.reduceat(regular, starts, axis=2)[..., seg]
        candidate = np.where(has_regular, regular, ok & ignored)
        value = np.where(candidate, iou, -1.0)
        best = np.maximum.reduceat(value, starts, axis=2)[..., seg]
        last = np.where(candidate & (value == best), np.arange(len(sel)), -1)
        chosen = np.maximum.reduceat(last, starts, axis=2)
        a, t, s = np.nonzero(chosen >= 0)
        p = chosen[a, t, s]
        g, d = pgt[p], pdet[p]
        taken[a, t, g] = True
        dtm[a, t, d] = g_nonzero_id[g]
        dt_ignore[a, t, d] = g_ignore[a, g]
    return dtm, dt_ignore


def _accumulate(
    dtm: np.ndarray,
    dt_ignore: np.ndarray,
    score: np.ndarray,
    img: np.ndarray,
    cat: np.ndarray,
    rank: np.ndarray,
    npig: np.ndarray,
    params: Params,
    progress: Progress | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``COCOeval.accumulate`` on matched detections, vectorised over categories and thresholds.

    pycocotools reads precision and score at the first detection reaching each recall threshold,
    after taking the running maximum of tp / (tp + fp + eps) from the right. Precision only rises
    at a true positive, so that maximum is the maximum over the true positives from there on:
    only true positives are visited, with the same float operations. A recall threshold of 0 is
    reached at the first detection, whatever it is: its score is the best one.
    """
    max_dets = params.max_dets
    n_thr, n_rec, n_area, n_cats = dtm.shape[1], len(params.rec_thrs), dtm.shape[0], len(npig)
    # filled as (M, A, T, K, R) / (M, A, T, K), contiguous per (maxDets, area) step
    precision = np.empty((len(max_dets), n_area, n_thr, n_cats, n_rec))
    scores = np.empty_like(precision)
    recall = np.empty((len(max_dets), n_area, n_thr, n_cats))
    # pycocotools concatenates detections image by image in rank order, then sorts by score
    # stably: the same order as sorting by (score, image, rank).
    order = np.lexsort((rank, img, -score, cat))
    counted_all = ~dt_ignore[:, :, order]  # (A, T, D) in that order
    tp_all = dtm[:, :, order] & counted_all
    rank, cat, score = rank[order], cat[order], score[order]
    needed = _tp_needed(npig, params.rec_thrs)  # (K, A, R)
    segments = np.arange(n_thr * n_cats)
    for m, max_det in enumerate(max_dets):
        keep = rank < max_det
        every = bool(keep.all())
        cat_sel = cat if every else cat[keep]
        score_sel = score if every else score[keep]
        bounds = _starts(cat_sel, n_cats)
        # each category's best score (its first detection), 0 without detections
        top = np.zeros(n_cats)
        has_det = np.diff(bounds) > 0
        top[has_det] = score_sel[bounds[:-1][has_det]]
        for a in range(n_area):
            if progress is not None:
                progress(1)
            counted = counted_all[a] if every else counted_all[a][:, keep]
            tp = tp_all[a] if every else tp_all[a][:, keep]  # (T, n)
            t, p = np.nonzero(tp)  # true positives by threshold, then category, then order
            k = cat_sel[p]
            segment = t * n_cats + k
            first = np.searchsorted(segment, segments)
            n_tp = np.diff(np.r_[first, len(segment)]).reshape(n_thr, n_cats)
            tp_k = np.arange(1, len(segment) + 1) - first[segment]  # the i-th of its category
            counted_cum = _cumsum0(counted)
            fp_k = counted_cum[t, p + 1] - counted_cum[t, bounds[k]] - tp_k
            best = _segment_suffix_max(
                tp_k.astype(float) / (fp_k.astype(float) + tp_k + np.spacing(1)), segment
            )
            first = first.reshape(n_thr, n_cats)
            # the needed-th true positive (at least the first) of each (threshold, category)
            nth = np.maximum(needed[:, a], 1)[None]  # (1, K, R)
            found = nth <= n_tp[..., None]
            at = np.where(found, first[..., None] + nth - 1, 0)
            precision[m, a] = np.where(found, best[at] if len(best) else 0.0, 0.0)
            scores[m, a] = np.where(found, score_sel[p][at] if len(p) else 0.0, 0.0)
            scores[m, a] = np.where(needed[:, a] == 0, top[:, None], scores[m, a])
            recall[m, a] = n_tp / np.maximum(npig[:, a], 1)
    # -1 for categories without regular ground truth in the area, as pycocotools leaves them
    no_gt = (npig == 0).T[None, :, None, :]  # (1, A, 1, K)
    precision[np.broadcast_to(no_gt, recall.shape)] = -1
    scores[np.broadcast_to(no_gt, recall.shape)] = -1
    recall[np.broadcast_to(no_gt, recall.shape)] = -1
    return (
        precision.transpose(2, 4, 3, 1, 0),
        recall.transpose(2, 3, 1, 0),
        scores.transpose(2, 4, 3, 1, 0),
    )


def _cumsum0(flags: np.ndarray) -> np.ndarray:
    """Cumulative count along the last axis with a leading 0: ``out[..., i]`` counts ``[:i]``."""
    out = np.zeros((*flags.shape[:-1], flags.shape[-1] + 1), np.int32)
    np.cumsum(flags, axis=-1, out=out[..., 1:])
    return out


def _tp_needed(npig: np.ndarray, rec_thrs: np.ndarray) -> np.ndarray:
    """Smallest true-positive count j with ``j / npig >= r`` in float64, per recall threshold r:
    the count at which pycocotools' ``searchsorted(rc, recThrs, "left")`` lands."""
    n = np.maximum(npig, 1)[..., None].astype(float)
    low = np.maximum(np.ceil(rec_thrs * n) - 2, 0)
    needed = low.copy()
    for step in range(4):  # the float answer is within 2 of the real one
        needed += (low + step) / n < rec_thrs
    return needed.astype(np.int64)


def _segment_suffix_max(values: np.ndarray, segment: np.ndarray) -> np.ndarray:
    """Running maximum from the right within each run of an ascending ``segment`` key, exactly
    (on the ranks of the values, so no float is altered)."""
    if not len(values):
        return values
    uniq, inv = np.unique(values, return_inverse=True)
    key = (segment[-1] - segment) * len(uniq) + inv  # later segments have smaller keys
    return uniq[np.maximum.accumulate(key[::-1])[::-1] % len(uniq)]


def _mean_valid(values: np.ndarray) -> float:
    """``COCOeval.summarize``'s mean over entries > -1, or -1 when there are none."""
    valid = values[values > -1]
    return -1.0 if valid.size == 0 else float(np.mean(valid))


def summarize(
    precision: np.ndarray, recall: np.ndarray, params: Params = DEFAULT_PARAMS
) -> dict[str, float]:
    """The stats of ``COCOeval.summarize`` (:meth:`Params.stats`) from accumulate's arrays."""
    out = {}
    for name, (is_ap, iou_thr, area, max_det) in params.stats().items():
        a, m = params.area_lbl.index(area), params.max_dets.index(max_det)
        at = slice(None) if iou_thr is None else np.where(iou_thr == params.iou_thrs)[0]
        if is_ap:
            out[name] = _mean_valid(precision[at][:, :, :, a, m])
        else:
            out[name] = _mean_valid(recall[at][:, :, a, m])
    return out


def per_category(
    precision: np.ndarray, recall: np.ndarray, params: Params = DEFAULT_PARAMS
) -> tuple[np.ndarray, np.ndarray]:
    """(AP, AR) per category over all thresholds (area all, last maxDets), -1 where no ground
    truth counts: ``summarize``'s means restricted to one category."""
    a = params.area_lbl.index("all")
    ks = range(precision.shape[2])
    return (
        np.array([_mean_valid(precision[:, :, k, a, -1]) for k in ks]),
        np.array([_mean_valid(recall[:, k, a, -1]) for k in ks]),
    )
