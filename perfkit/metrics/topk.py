"""Top-k classification accuracy from exact integer counts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from perfkit.metrics._metric import Metric

if TYPE_CHECKING:
    import torch


class TopK(Metric):
    """Micro-averaged top-k accuracy: correct / total over every sample of every rank.

    A sample is top-k correct when fewer than ``k`` classes score strictly higher than its label
    (a class tied with the label does not push it out). Counts stay on the logits' device between
    updates, so ``update`` never synchronises the device; ``compute`` does once. Labels outside
    ``[0, C)`` and rows of logits containing NaN are counted and make ``compute`` raise, rather
    than being dropped. With no samples at all, ``compute`` warns and returns NaN fractions.
    """

    correct: Any  # int64 counts per k: numpy, or a tensor on the logits' device
    total: int
    bad_labels: Any
    nan_rows: Any

    def __init__(self, k: int | Sequence[int] = (1, 5)) -> None:
        super().__init__()
        ks = (k,) if isinstance(k, int) else tuple(k)
        if not ks or any(not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in ks):
            raise ValueError(f"k must be a positive int or a sequence of them, got {k!r}")
        if len(set(ks)) != len(ks):
            raise ValueError(f"k must not repeat a value, got {k!r}")
        self.k = ks
        # correct / bad_labels / nan_rows become device tensors on the first update.
        self.add_state("correct", lambda: np.zeros(len(ks), dtype=np.int64), "sum")
        self.add_state("total", int, "sum")
        self.add_state("bad_labels", int, "sum")
        self.add_state("nan_rows", int, "sum")

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Count one batch: ``logits`` (N, C) scores of any real dtype, ``labels`` (N,) ints."""
        import torch

        logits = torch.as_tensor(logits)
        labels = torch.as_tensor(labels, device=logits.device)
        if logits.ndim != 2:
            raise ValueError(f"logits must have shape (N, C), got shape {tuple(logits.shape)}")
        if logits.dtype == torch.bool or logits.is_complex():
            raise ValueError(f"logits must be real scores, got dtype {logits.dtype}")
        n, classes = logits.shape
        if labels.shape != (n,):
            raise ValueError(
                f"labels must have shape (N,) = ({n},) to match logits, got {tuple(labels.shape)}"
            )
        if labels.dtype == torch.bool or labels.is_floating_point() or labels.is_complex():
            raise ValueError(
                f"labels must be class indices of an integer dtype, got {labels.dtype}"
            )
        if max(self.k) > classes:
            raise ValueError(f"k={max(self.k)} exceeds the number of classes in logits ({classes})")
        valid = (labels >= 0) & (labels < classes)
        target = logits.gather(1, labels.clamp(0, max(classes - 1, 0)).unsqueeze(1))
        rank = (logits > target).sum(dim=1)
        nan = logits.isnan().any(dim=1)
        ks = torch.tensor(self.k, device=logits.device)
        hits = (rank.unsqueeze(1) < ks) & (valid & ~nan).unsqueeze(1)
        self.correct = torch.as_tensor(self.correct, device=logits.device) + hits.sum(dim=0)
        self.bad_labels = self.bad_labels + (~valid).sum()
        self.nan_rows = self.nan_rows + nan.sum()
        self.total += n
        self._updated()

    def _host_state(self, name: str) -> Any:
        value = getattr(self, name)
        if hasattr(value, "cpu"):  # a torch tensor accumulated on the device
            value = value.cpu().numpy()
        return np.asarray(value, dtype=np.int64) if name == "correct" else int(value)

    def compute(self) -> dict[str, float]:
        """``{"top1": ..., "top5": ...}``: fractions of samples top-k correct, over all ranks."""
        state = self._synced_state()
        total = int(state["total"])
        for name, what in (("bad_labels", "labels outside [0, C)"), ("nan_rows", "NaN logits")):
            if state[name]:
                raise ValueError(
                    f"{int(state[name])} of {total} samples passed to TopK.update had {what}; "
                    "expected labels (N,) in [0, C) and logits (N, C) without NaN"
                )
        correct = state["correct"]
        return {
            f"top{k}": float(correct[i]) / total if total else float("nan")
            for i, k in enumerate(self.k)
        }
