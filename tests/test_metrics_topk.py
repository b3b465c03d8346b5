"""TopK against hand-computed counts and against torch.topk."""

from __future__ import annotations

import pytest
import torch

from perfkit.metrics import TopK

# 4 samples x 5 classes.
LOGITS = torch.tensor(
    [
        [0.1, 0.9, 0.3, 0.2, 0.0],  # label 1: highest                     -> rank 0
        [0.5, 0.1, 0.4, 0.3, 0.2],  # label 2: only 0.5 above it           -> rank 1
        [0.1, 0.2, 0.3, 0.4, 0.5],  # label 0: four classes above it       -> rank 4
        [0.3, 0.3, 0.1, 0.0, 0.2],  # label 0: tied with class 1, none above -> rank 0
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


def test_agrees_with_torch_topk_without_ties() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(500, 40, generator=generator)
    labels = torch.randint(0, 40, (500,), generator=generator)
    top = TopK((1, 5))
    top.update(logits, labels)
    expected = {
        f"top{k}": (logits.topk(k, dim=1).indices == labels[:, None]).any(dim=1).sum().item() / 500
        for k in (1, 5)
    }
    assert top.compute() == expected


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
    monkeypatch.setattr("perfkit.distributed.all_gather_object", lambda obj: states)
    assert rank0.compute() == rank1.compute() == {"top1": 2 / 4}


@pytest.mark.parametrize(
    ("k", "match"),
    [(0, "k must be a positive int"), ((1, 1), "must not repeat"), ((), "positive int")],
)
def test_rejects_bad_k(k: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TopK(k)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("logits", "labels", "match"),
    [
        (LOGITS[0], LABELS, r"logits must have shape \(N, C\)"),
        (LOGITS, LABELS[:3], r"labels must have shape \(N,\) = \(4,\)"),
        (LOGITS, LABELS.float(), "labels must be class indices of an integer dtype"),
        (LOGITS[:, :4], LABELS, r"k=5 exceeds the number of classes in logits \(4\)"),
        (LOGITS > 0, LABELS, "logits must be real scores"),
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
