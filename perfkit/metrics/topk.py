"""Top-k classification accuracy from exact integer counts, ties ordered by class index."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from perfkit.checks import check_type, wrong_type, wrong_value
from perfkit.metrics._metric import Metric

if TYPE_CHECKING:
    import torch


class TopK(Metric):
    """Micro-averaged top-k accuracy: correct / counted over every sample of every rank.

    A sample is top-k correct when fewer than k classes rank before its label: classes with a
    higher logit, and classes tied with it that have a lower index (a stable descending sort;
    top-1 is ``argmax``, the first maximum, as torchmetrics' top-1). The rule does not depend
    on which k are requested, and constant logits are not all correct. Samples whose label is
    ``ignore_index`` are left out of both counts (torchmetrics' convention). Counts stay on the
    logits' device between updates, so ``update`` never synchronises the device; ``compute`` does
    once. Other labels outside ``[0, C)`` and rows of logits containing NaN are counted and make
    ``compute`` raise, rather than being dropped. With no counted sample, ``compute`` warns and
    returns NaN fractions. ``process_group`` / ``sync_on_compute``: see :class:`Metric`.
    """

    higher_is_better = True
    correct: Any  # int64 counts per k: numpy, or a tensor on the logits' device
    total: Any
    bad_labels: Any
    nan_rows: Any

    def __init__(
        self,
        k: int | Sequence[int] = (1, 5),
        *,
        ignore_index: int | None = None,
        process_group: Any = None,
        sync_on_compute: bool = True,
    ) -> None:
        super().__init__(process_group=process_group, sync_on_compute=sync_on_compute)
        expected = "a positive int or a sequence of them without repeats"
        ks = (k,) if isinstance(k, int) else tuple(k) if isinstance(k, Sequence) else (None,)
        if any(not isinstance(v, int) or isinstance(v, bool) for v in ks):
            raise wrong_type("k", expected, k)
        if not ks or min(ks) < 1 or len(set(ks)) != len(ks):
            raise wrong_value("k", expected, k)
        if ignore_index is not None:
            check_type("ignore_index", ignore_index, int, "an int or None")
        self.k = ks
        self.ignore_index = ignore_index
        # correct / total / bad_labels / nan_rows become device tensors on the first update.
        self.add_state("correct", functools.partial(np.zeros, len(ks), dtype=np.int64), "sum")
        self.add_state("total", int, "sum")
        self.add_state("bad_labels", int, "sum")
        self.add_state("nan_rows", int, "sum")

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Count one batch: ``logits`` (N, C) scores of any real dtype, ``labels`` (N,) class
        indices of any integer dtype."""
        import torch

        logits = torch.as_tensor(logits)
        labels = torch.as_tensor(labels, device=logits.device)
        if logits.ndim != 2:
            raise ValueError(
                f"Expected argument `logits` to have shape (N, C) but got shape "
                f"{tuple(logits.shape)}"
            )
        if logits.dtype == torch.bool or logits.is_complex():
            raise ValueError(
                f"Expected argument `logits` to be real scores but got dtype {logits.dtype}"
            )
        n, classes = logits.shape
        if labels.shape != (n,):
            raise ValueError(
                f"Expected argument `labels` to have shape (N,) = ({n},) to match logits but got "
                f"shape {tuple(labels.shape)}"
            )
        if labels.dtype == torch.bool or labels.is_floating_point() or labels.is_complex():
            raise ValueError(
                "Expected argument `labels` to be class indices of an integer dtype but got "
                f"dtype {labels.dtype}"
            )
        if max(self.k) > classes:
            raise ValueError(f"k={max(self.k)} exceeds the number of classes in logits ({classes})")
        labels = labels.long()
        counted = (
            torch.ones_like(labels, dtype=torch.bool)
            if self.ignore_index is None
            else labels != self.ignore_index
        )
        valid = (labels >= 0) & (labels < classes)
        nan = logits.isnan().any(dim=1) & counted
        ks = torch.tensor(self.k, device=logits.device)
        hits = (label_rank(logits, labels.clamp(0, classes - 1)).unsqueeze(1) < ks) & (
            counted & valid & ~nan
        ).unsqueeze(1)
        self.correct = torch.as_tensor(self.correct, device=logits.device) + hits.sum(dim=0)
        self.bad_labels = self.bad_labels + (counted & ~valid).sum()
        self.nan_rows = self.nan_rows + nan.sum()
        self.total = self.total + counted.sum()
        self._updated()

    def _host_state(self, name: str) -> Any:
        value = getattr(self, name)
        if hasattr(value, "cpu"):  # a torch tensor accumulated on the device
            value = value.cpu().numpy()
        return np.asarray(value, dtype=np.int64) if name == "correct" else int(value)

    def compute(self) -> dict[str, float]:
        """``{"top1": ..., "top5": ...}``: fractions of samples top-k correct, over all ranks."""
        return self._compute(self._synced_state())

    def _compute(self, state: Mapping[str, Any]) -> dict[str, float]:
        total = int(state["total"])
        for name, what in (("bad_labels", "labels outside [0, C)"), ("nan_rows", "NaN logits")):
            if state[name]:
                raise ValueError(
                    f"{int(state[name])} of {total} samples passed to TopK.update had {what}; "
                    "expected labels (N,) in [0, C) and logits (N, C) without NaN"
                )
        if not total and self.update_count:
            warnings.warn(
                "TopK.compute(): the updates held no counted sample (empty batches, or every "
                "label ignore_index); the fractions are NaN",
                UserWarning,
                stacklevel=3,
            )
        correct = state["correct"]
        return {
            f"top{k}": float(correct[i]) / total if total else float("nan")
            for i, k in enumerate(self.k)
        }


def label_rank(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Position of each row's label in its classes sorted by logit, largest first, ties by
    ascending class index (0: the label is the first maximum). ``labels`` (N,) in [0, C)."""
    import torch

    own = logits.gather(1, labels.unsqueeze(1))  # (N, 1)
    before = torch.arange(logits.shape[1], device=logits.device) < labels.unsqueeze(1)
    return ((logits > own) | ((logits == own) & before)).sum(dim=1)
