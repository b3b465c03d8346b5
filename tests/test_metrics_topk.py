"""TopK against hand-computed counts, torch.topk (torchvision's reference accuracy) where no
class ties, and numpy's stable sort / torch's argmax (torchmetrics' top-1) where classes tie."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from perfkit.metrics import TopK

# 4 samples x 5 classes.
LOGITS = torch.tensor(
    [
        [0.1, 0.9, 0.3, 0.2, 0.0],  # label 1: highest                     -> rank 0
        [0.5, 0.1, 0.4, 0.3, 0.2],  # label 2: only 0.5 above it           -> rank 1
        [0.1, 0.2, 0.3, 0.4, 0.5],  # label 0: four classes above it       -> rank 4
        [0.3, 0.1, 0.1, 0.0, 0.2],  # label 0: highest                     -> rank 0
    ]
)
LABELS = torch.tensor([1, 2, 0, 0])


def test_hand_computed_counts() -> None:
    top = TopK((1, 2, 5))
    top.update(LOGITS, LABELS)
    # rank < 1: samples 0 and 3 -> 2 / 4; rank < 2: samples 0, 1, 3 -> 3 / 4; rank < 5: all 4.
    assert top.compute() == {"top1": 2 / 4, "top2": 3 / 4, "top5": 4 / 4}


def test_counts_are_micro_averaged_over_updates() -> None:
    top = TopK(1)
    top.update(LOGITS[:3], LABELS[:3])  # 1 of 3 correct
    top.update(LOGITS[3:], LABELS[3:])  # 1 of 1 correct
    # (1 + 1) / (3 + 1) = 0.5, not the mean of the batch accuracies (1/3 + 1) / 2.
    assert top.compute() == {"top1": 0.5}
    assert top.update_count == 2


def _cpu_half_topk() -> bool:
    """Whether this torch has a float16 topk on the CPU (torch 2.1 has not)."""
    try:
        torch.zeros(1, 2, dtype=torch.float16).topk(1)
    except RuntimeError:
        return False
    return True


def reference(logits: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...]) -> dict[str, float]:
    """torchvision's references/classification/utils.py ``accuracy``, counts not percentages."""
    if logits.dtype == torch.float16 and not _cpu_half_topk():
        logits = logits.float()  # exact: float32 holds every float16 value
    pred = logits.topk(max(ks), 1, True, True).indices.t()
    correct = pred.eq(labels[None].long())
    return {f"top{k}": correct[:k].flatten().sum().item() / len(labels) for k in ks}


def test_agrees_with_torch_topk_without_ties() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(500, 40, generator=generator)
    labels = torch.randint(0, 40, (500,), generator=generator)
    top = TopK((1, 5))
    top.update(logits, labels)
    assert top.compute() == reference(logits, labels, (1, 5))


def stable_reference(
    logits: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...]
) -> dict[str, float]:
    """Classes sorted by logit, largest first, ties by class index: numpy's stable argsort of
    the negated logits (float64 holds every float16 / bfloat16 / float32 value exactly)."""
    order = np.argsort(-logits.double().numpy(), axis=1, kind="stable")
    rank = (order == labels.long().numpy()[:, None]).argmax(axis=1)
    return {f"top{k}": float((rank < k).sum()) / len(labels) for k in ks}


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    classes=st.integers(1, 30),
    levels=st.integers(1, 3),  # logits take 1-3 distinct values: many ties
    dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16, torch.float64]),
    label_dtype=st.sampled_from([torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8]),
)
def test_ties_are_ordered_by_class_index(
    seed: int, classes: int, levels: int, dtype: torch.dtype, label_dtype: torch.dtype
) -> None:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randint(0, levels, (40, classes), generator=generator).to(dtype)
    labels = torch.randint(0, classes, (40,), generator=generator).to(label_dtype)
    ks = tuple(sorted({1, min(5, classes), classes}))
    top = TopK(ks)
    top.update(logits, labels)
    result = top.compute()
    assert result == stable_reference(logits, labels, ks)
    # top-1 is torchmetrics' argmax (the first maximum), whichever other k are requested
    argmax = (logits.float().argmax(dim=1) == labels.long()).sum().item() / len(labels)
    assert result["top1"] == argmax
    alone = TopK(1)
    alone.update(logits, labels)
    assert alone.compute() == {"top1": argmax}


def test_top1_does_not_depend_on_the_other_k() -> None:
    # 8 samples x 10 classes of constant logits, labels 0..7: only label 0 is the first maximum,
    # so top-1 is 1 / 8 with or without top-5 (torch.topk orders such ties differently by k).
    logits, labels = torch.zeros(8, 10), torch.arange(8)
    results = []
    for ks in ((1,), (1, 5), (5, 1), (1, 10)):
        top = TopK(ks)
        top.update(logits, labels)
        results.append(top.compute()["top1"])
    assert results == [1 / 8] * 4


def test_constant_and_overflowing_logits_are_not_all_correct() -> None:
    # A collapsed model: every class scores the same; fp16 logits that overflow to inf likewise.
    labels = torch.arange(1000)
    for logits in (torch.zeros(1000, 1000), torch.full((1000, 1000), 7e4).half()):
        top = TopK((1, 5))
        top.update(logits, labels)
        result = top.compute()
        assert result == stable_reference(logits, labels, (1, 5))
        assert result["top1"] == 1 / 1000 and result["top5"] == 5 / 1000  # one / five classes


@pytest.mark.parametrize("dtype", [torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8])
def test_every_integer_label_dtype(dtype: torch.dtype) -> None:
    top = TopK((1, 2, 5))
    top.update(LOGITS, LABELS.to(dtype))
    assert top.compute() == {"top1": 2 / 4, "top2": 3 / 4, "top5": 4 / 4}


def test_ignore_index_leaves_samples_out() -> None:
    # torchmetrics' convention: ignored samples count neither as correct nor in the total.
    for ignore in (0, -100):
        top = TopK((1, 2), ignore_index=ignore)
        labels = LABELS.clone()
        labels[1] = ignore  # sample 1 (top-2 correct, not top-1) is ignored
        top.update(LOGITS, labels)
        if ignore == 0:  # samples 2 and 3 have label 0 too: only sample 0 is counted
            assert top.compute() == {"top1": 1.0, "top2": 1.0}
        else:  # samples 0, 2, 3: top-1 correct 0 and 3; top-2 likewise
            assert top.compute() == {"top1": 2 / 3, "top2": 2 / 3}
    with pytest.raises(TypeError, match="`ignore_index`"):
        TopK(1, ignore_index=1.5)  # type: ignore[arg-type]


def test_compute_after_only_empty_updates_warns() -> None:
    top = TopK(1)
    top.update(torch.zeros(0, 3), torch.zeros(0, dtype=torch.int64))
    with pytest.warns(UserWarning, match="no counted sample"):
        result = top.compute()
    assert result["top1"] != result["top1"]  # NaN
    top = TopK(1, ignore_index=-1)
    top.update(LOGITS, torch.full((4,), -1))
    with pytest.warns(UserWarning, match="no counted sample"):
        top.compute()
    top = TopK(1)
    top.update(LOGITS, LABELS)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        top.compute()


def test_reset_and_compute_before_update() -> None:
    top = TopK((1, 5))
    top.update(LOGITS, LABELS)
    top.reset()
    with pytest.warns(UserWarning, match=r"TopK.compute\(\) was called before any update"):
        result = top.compute()
    assert all(v != v for v in result.values())  # NaN: no samples


def test_sum_over_ranks(monkeypatch: pytest.MonkeyPatch) -> None:
    rank0, rank1 = TopK(1), TopK(1)
    rank0.update(LOGITS[:2], LABELS[:2])  # 1 of 2
    rank1.update(LOGITS[2:], LABELS[2:])  # 1 of 2
    states = [
        {name: r._host_state(name) for name in ("correct", "total", "bad_labels", "nan_rows")}
        for r in (rank0, rank1)
    ]
    monkeypatch.setattr("perfkit.distributed.all_gather_object", lambda obj, group: states)
    assert rank0.compute() == rank1.compute() == {"top1": 2 / 4}


@pytest.mark.parametrize(
    ("k", "error", "match"),
    [
        (0, ValueError, "Expected argument `k` to be a positive int or a sequence of them"),
        ((1, 1), ValueError, "without repeats but got \\(1, 1\\)"),
        ((), ValueError, "positive int"),
        (1.5, TypeError, "`k` to be a positive int .* but got 1.5 \\(float\\)"),
        ((1, "5"), TypeError, "`k` to be a positive int"),
    ],
)
def test_rejects_bad_k(k: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        TopK(k)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("logits", "labels", "match"),
    [
        (LOGITS[0], LABELS, r"`logits` to have shape \(N, C\) but got shape \(5,\)"),
        (LOGITS, LABELS[:3], r"`labels` to have shape \(N,\) = \(4,\) to match logits but"),
        (LOGITS, LABELS.float(), "`labels` to be class indices of an integer dtype but got"),
        (LOGITS[:, :4], LABELS, r"k=5 exceeds the number of classes in logits \(4\)"),
        (LOGITS > 0, LABELS, "`logits` to be real scores but got dtype torch.bool"),
    ],
)
def test_update_rejects(logits: torch.Tensor, labels: torch.Tensor, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TopK((1, 5)).update(logits, labels)


def test_bad_values_are_reported_at_compute() -> None:
    # Checking values in update would synchronise the device every step; they are counted.
    top = TopK(1)
    top.update(LOGITS, torch.tensor([1, 2, 5, -1]))
    with pytest.raises(
        ValueError, match=r"2 of 4 samples passed to TopK.update had labels outside"
    ):
        top.compute()
    top = TopK(1)
    top.update(torch.tensor([[0.0, float("nan")]]), torch.tensor([0]))
    with pytest.raises(ValueError, match=r"1 of 1 samples passed to TopK\.update had NaN logits"):
        top.compute()
