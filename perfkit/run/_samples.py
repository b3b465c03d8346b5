"""Counting the samples of a batch."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any

from perfkit import checks
from perfkit.run._errors import RunError


def count_samples(batch: Any) -> int:
    """Samples in one batch: the first tensor's leading dimension, or len of a list of images.

    ``(images, labels)`` -> ``len(images)`` along dim 0; ``(list_of_image_tensors, targets)``
    (torchvision detection) -> the list's length; a dict -> its first tensor value.
    """
    first = batch
    if isinstance(batch, Mapping):
        first = next((v for v in batch.values() if hasattr(v, "shape")), None)
    elif isinstance(batch, (list, tuple)) and batch:
        first = batch[0]
        if isinstance(first, (list, tuple)):
            return len(first)
    shape = getattr(first, "shape", None)
    if shape is not None and len(shape) > 0:
        return int(shape[0])
    raise RunError(
        f"cannot count the samples of a batch of type {type(batch).__name__}: pass "
        "iterate(..., samples=N) with an int, or a callable batch -> int"
    )


def remembering_counter() -> Callable[[Any], int]:
    """:func:`count_samples` that remembers where the first batch kept its samples: while the
    batches keep the same types (a DataLoader's do), each is counted with one indexing and one
    shape read, not the general search (``isinstance`` on ABCs, ``getattr``)."""
    batch_type: type[Any] | None = None
    first_type: type[Any] | None = None  # None: the batch itself has the shape
    rows: Callable[[Any], int] = _leading_dim  # reads the remembered tensor's rows

    def count(batch: Any) -> int:
        nonlocal batch_type, first_type, rows
        try:
            if type(batch) is batch_type:
                first = batch if first_type is None else batch[0]
                if first_type is None or type(first) is first_type:
                    n = rows(first)
                    if n:  # 0: no rows, or a 0-d tensor (whose len is 0): the general search
                        return n
        except (AttributeError, IndexError, KeyError, TypeError):
            pass
        n = count_samples(batch)  # the general search; remember its path where it is simple
        batch_type, first_type = None, None
        # Remembered only where the shape holds ints (torch, numpy), so no int() per batch.
        if type(batch) in (list, tuple) and batch and _int_rows(batch[0]):
            batch_type, first_type = type(batch), type(batch[0])
            rows = _rows_reader(first_type)
        elif not isinstance(batch, (Mapping, list, tuple)) and _int_rows(batch):
            batch_type = type(batch)
            rows = _rows_reader(batch_type)
        return n

    return count


def _leading_dim(value: Any) -> int:
    """``value.shape[0]``."""
    return value.shape[0]


def _rows_reader(kind: type[Any]) -> Callable[[Any], int]:
    """The cheapest reader of the rows of a ``kind`` whose shape holds ints: for a torch tensor
    or a numpy array their C-level ``len`` (the leading dimension, without building the shape
    tuple; a 0-d tensor's is 0 and a 0-d array's raises TypeError, where the counter falls back
    to the general search, which refuses both), else ``value.shape[0]``."""
    torch, numpy = sys.modules.get("torch"), sys.modules.get("numpy")
    if torch is not None and kind is torch.Tensor:
        base = getattr(torch._C, "TensorBase", None) or torch._C._TensorBase  # older torch
        return base.__len__
    if numpy is not None and kind is numpy.ndarray:
        return len
    return _leading_dim


def _int_rows(value: Any) -> bool:
    """True when ``value.shape[0]`` is an int."""
    shape = getattr(value, "shape", None)
    try:
        return type(shape[0]) is int  # type: ignore[index]
    except (IndexError, KeyError, TypeError):
        return False


#: The most samples one batch may count (a float64 holds every int up to it exactly).
MAX_SAMPLES = 2**53

#: The samples of every batch (an int), or the callable that counts them per batch.
SampleCounter = int | Callable[[Any], int]


def sample_counter(samples: SampleCounter | None) -> SampleCounter:
    """The samples of every batch (an int), or the callable that counts them per batch."""
    if samples is None:
        return remembering_counter()
    if callable(samples):
        return samples
    expected = "a non-negative int (at most 2**53) or a callable batch -> int"
    if isinstance(samples, bool) or not isinstance(samples, int):
        raise checks.wrong_type("samples", expected, samples)
    if not 0 <= samples <= MAX_SAMPLES:
        raise checks.wrong_value("samples", expected, samples)
    return samples


def fixed_or_counter(
    counter: SampleCounter,
) -> tuple[int, Callable[[Any], int] | None]:
    """(the count of every batch, None) for an int; (0, the callable) for a callable that
    counts each batch."""
    return (counter, None) if isinstance(counter, int) else (0, counter)


def as_sample_count(value: Any) -> int | None:
    """``value`` as an int from 0 to :data:`MAX_SAMPLES` when it is one (an int, a numpy int, a
    0-d tensor, an integral float), else None."""
    if isinstance(value, bool):
        return None
    try:
        number = value.item() if hasattr(value, "item") else value
        if not isinstance(number, (int, float)) or isinstance(number, bool):
            return None
        if isinstance(number, float) and not number.is_integer():
            return None
        count = int(number)
    except (TypeError, ValueError, OverflowError, RuntimeError):
        return None
    return count if 0 <= count <= MAX_SAMPLES else None
