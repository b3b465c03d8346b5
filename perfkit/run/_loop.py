"""How a phase's step loop is set up: its warm-up steps, its progress bar, and the iterator
:meth:`Phase.iterate` returns (sized when the iterable is)."""

from __future__ import annotations

import itertools
import sys
from collections.abc import Generator, Iterable, Mapping, Sized
from typing import Any

from perfkit.figures import PHASE_KINDS


def check_warmup_steps(value: Any, argument: str = "warmup_steps") -> int:
    """``value`` as a number of warm-up steps (a non-negative int)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(
            f"Expected argument `{argument}` to be a non-negative int but got "
            f"{type(value).__name__} {value!r}"
        )
    if value < 0:
        raise ValueError(
            f"Expected argument `{argument}` to be a non-negative int but got {value!r}"
        )
    return value


def warmup_by_kind(value: int | Mapping[str, int]) -> dict[str, int]:
    """Run's ``warmup_steps`` (an int for every kind, or {kind: int}) as {kind: steps}."""
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - set(PHASE_KINDS))
        if unknown:
            raise ValueError(
                f"Expected argument `warmup_steps` to map phase kinds {PHASE_KINDS} to ints "
                f"but got the keys {unknown}"
            )
        return {
            kind: check_warmup_steps(value.get(kind, 0), f"warmup_steps[{kind!r}]")
            for kind in PHASE_KINDS
        }
    steps = check_warmup_steps(value)
    return dict.fromkeys(PHASE_KINDS, steps)


def wants_progress(progress: bool | None) -> bool:
    """Whether a phase shows a progress bar: ``progress``, or for None whether stderr is a
    terminal (never in a batch job, a CI log or a redirected run)."""
    if progress is None:
        stream = sys.stderr
        return bool(stream is not None and hasattr(stream, "isatty") and stream.isatty())
    if not isinstance(progress, bool):
        raise TypeError(
            f"Expected argument `progress` to be True, False or None but got {progress!r}"
        )
    return progress


def progress_bar(name: str, total: int | None) -> Any:
    """A tqdm bar on stderr counting the steps of phase ``name`` (``total``: None if unknown)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=name, unit="step", dynamic_ncols=True)


def length_of(iterable: Iterable[Any]) -> int | None:
    """``len(iterable)`` for a sized iterable, else None - also where ``len`` raises (a
    DataLoader over an iterable dataset without ``__len__``: TypeError; NotImplementedError, a
    negative or huge length ...), as a plain ``for`` loop never asks for it."""
    if not isinstance(iterable, Sized):
        return None
    try:
        return len(iterable)
    except Exception:  # any failure: the loop goes on without a length
        return None


class SizedSteps(itertools.chain[Any]):
    """The step loop with the length of what it iterates, for tqdm and torchvision's
    ``MetricLogger.log_every``: ``len()``, and one pass (``iter()`` returns itself).

    A chain over the one step generator: its ``__next__`` is C, so a step costs no Python
    frame more than the bare generator, and dropping it (a ``break``) closes the generator as
    dropping the generator itself would."""

    __slots__ = ("_length",)
    _length: int

    def __new__(cls, loop: Generator[Any, None, None], length: int) -> SizedSteps:
        steps = super().__new__(cls, loop)
        steps._length = length
        return steps

    def __len__(self) -> int:
        return self._length

    def __repr__(self) -> str:
        return f"<perfkit steps over {self._length} batches>"
