"""torchmetrics' Metric conventions on TopK and COCOEvaluator: pickle, state_dict /
load_state_dict, forward, to(device), sync_on_compute, higher_is_better.

torchmetrics' contract: a metric restored from a state dict and updated further equals one never
saved; a pickled metric equals the original; ``forward`` returns the batch's value and
accumulates it. Values are checked against numpy's stable sort (top-k) and pycocotools.
"""

from __future__ import annotations

import pickle
from typing import Any

import pytest
import torch

from perfkit.metrics import COCOEvaluator, Metric, TopK
from tests.test_metrics_coco import coco_from, make_case, reference, result_dicts
from tests.test_metrics_topk import stable_reference


def _batches(seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randint(0, 4, (n, 10), generator=generator).float(),  # ties on purpose
            torch.randint(0, 10, (n,), generator=generator),
        )
        for n in (7, 12, 5)
    ]


def test_higher_is_better() -> None:
    assert TopK.higher_is_better is True and COCOEvaluator.higher_is_better is True
    assert Metric.higher_is_better is None


def test_topk_pickles_and_restores() -> None:
    batches = _batches()
    top = TopK((1, 3))
    for logits, labels in batches[:2]:
        top.update(logits, labels)
    copied = pickle.loads(pickle.dumps(top))
    assert copied.compute() == top.compute()
    restored = TopK((1, 3))
    restored.load_state_dict(top.state_dict())
    for metric in (top, copied, restored):
        metric.update(*batches[2])
    logits = torch.cat([b[0] for b in batches])
    labels = torch.cat([b[1] for b in batches])
    expected = stable_reference(logits, labels, (1, 3))
    assert top.compute() == copied.compute() == restored.compute() == expected
    assert restored.update_count == top.update_count == 3


def test_topk_forward_returns_the_batch_and_accumulates() -> None:
    batches = _batches(1)
    top = TopK((1, 5))
    for logits, labels in batches:
        assert top(logits, labels) == stable_reference(logits, labels, (1, 5))
    logits = torch.cat([b[0] for b in batches])
    labels = torch.cat([b[1] for b in batches])
    assert top.compute() == stable_reference(logits, labels, (1, 5))
    assert top.update_count == len(batches)


def test_state_dict_is_a_copy_and_is_checked() -> None:
    top = TopK(1)
    top.update(*_batches()[0])
    saved = top.state_dict()
    top.update(*_batches()[1])  # later updates do not change what was saved
    fresh = TopK(1)
    fresh.load_state_dict(saved)
    assert fresh.update_count == 1 and fresh.compute() == stable_reference(*_batches()[0], (1,))
    with pytest.raises(ValueError, match=r"`state_dict`.*'correct'"):
        TopK(1).load_state_dict({"total": 0, "_update_count": 0})


def test_to_moves_tensor_states_only() -> None:
    top = TopK(1)
    top.update(*_batches()[0])
    assert top.to("meta") is top
    assert top.correct.device.type == "meta" and top.total.device.type == "meta"
    coco = COCOEvaluator(coco_from(make_case(0)[0]))
    assert coco.to("meta") is coco and coco.chunks == []


def test_sync_on_compute_false_reduces_the_local_state(monkeypatch: pytest.MonkeyPatch) -> None:
    other_rank = TopK(1)
    other_rank.update(*_batches()[1])
    top = TopK(1, sync_on_compute=False)
    top.update(*_batches()[0])
    states = [top.state_dict(), other_rank.state_dict()]
    monkeypatch.setattr("perfkit.distributed.all_gather_object", lambda obj, group: states)
    assert top.compute() == stable_reference(*_batches()[0], (1,))  # no gather


def _coco_case() -> tuple[dict[str, Any], list[Any], list[Any], dict[str, float]]:
    gt, outputs, targets = make_case(11, n_images=6)
    expected = reference(
        gt, result_dicts(outputs, targets, "bbox"), [t["image_id"] for t in targets]
    )[0]
    return gt, outputs, targets, expected


def test_coco_pickles_and_restores() -> None:
    gt, outputs, targets, expected = _coco_case()
    coco = COCOEvaluator(coco_from(gt))
    coco.update(outputs[:3], targets[:3])
    copied = pickle.loads(pickle.dumps(coco))
    restored = COCOEvaluator(coco_from(gt))
    restored.load_state_dict(coco.state_dict())
    with pytest.raises(ValueError, match="already updated"):  # the images seen are restored
        restored.update(outputs[:1], targets[:1])
    for metric in (coco, copied, restored):
        metric.update(outputs[3:], targets[3:])
    assert (
        coco.compute(per_category=True)
        == copied.compute(per_category=True)
        == restored.compute(per_category=True)
        == expected
    )


def test_coco_forward_returns_the_batch_and_accumulates() -> None:
    gt, outputs, targets, expected = _coco_case()
    coco = COCOEvaluator(coco_from(gt))
    for start in (0, 3):
        batch = slice(start, start + 3)
        alone = reference(
            gt,
            result_dicts(outputs[batch], targets[batch], "bbox"),
            [t["image_id"] for t in targets[batch]],
        )[0]
        value = coco(outputs[batch], targets[batch])
        assert value == {k: v for k, v in alone.items() if "/" not in k}
    assert coco.compute(per_category=True) == expected
    assert coco.ignored_detections == sum(int((o["labels"] == 5).sum()) for o in outputs)
