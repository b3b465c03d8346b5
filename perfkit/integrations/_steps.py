"""Steps of a perfkit phase driven from a trainer's callbacks instead of a ``for`` loop.

perfkit's public API times steps by iterating ``phase.iterate(batches)``. A trainer calls back
at each batch's start and end instead, so :class:`CallbackSteps` feeds ``phase.iterate`` one
batch per ``begin`` and marks ``compute`` windows from each batch's start to its end and
``io`` windows from its end to the next batch's start (data loading and the trainer's own
work between batches). Step k then spans from batch k's start to batch k+1's start: its
compute is batch k's body, its IO the gap after it (the gap before the first batch is the
phase's IO). Totals per phase are the same as a ``for`` loop's; the IO of a gap is counted in
the step before it rather than the step after it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from typing import Any

from perfkit._messages import logger
from perfkit.run import Phase, Run
from perfkit.run._tokens import AutoTokens


class _Feed:
    """An iterator that yields the one batch put into it, once."""

    def __init__(self) -> None:
        self._batch: Any = None
        self._full = False

    def put(self, batch: Any) -> None:
        self._batch, self._full = batch, True

    def __iter__(self) -> _Feed:
        return self

    def __next__(self) -> Any:
        if not self._full:
            raise StopIteration
        batch, self._batch, self._full = self._batch, None, False
        return batch


class TokenTally:
    """Tokens of a step that a trainer does not hand to perfkit: the batches it shows
    (:meth:`add`) or its model's forward calls (:meth:`hook`, a forward pre-hook), counted as
    :class:`perfkit.run._tokens.AutoTokens` counts a batch. :meth:`end_step` when a step's body
    ends sets them aside for the phase, which reads them (the tally is its ``tokens=``
    callable) when it writes the step: forward calls after a step's end (an evaluation) are
    not that step's."""

    def __init__(self) -> None:
        self._auto = AutoTokens()
        self._running = 0  # since the last step's end
        self._ended = 0  # of steps ended, not read yet
        self._failed = False

    @property
    def source(self) -> str:
        """How the tokens are counted (the phase's ``tokens_from``)."""
        return self._auto.source

    def add(self, batch: Any) -> None:
        """A batch (or a forward call's inputs) of the running step."""
        self._running += self._auto(batch)

    def hook(self, _module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """A forward pre-hook (``register_forward_pre_hook(..., with_kwargs=True)``): the
        call's ``input_ids`` / ``attention_mask`` keywords, or its first argument as ids."""
        if self._failed:
            return
        inputs = kwargs if "input_ids" in kwargs else {"input_ids": args[0]} if args else {}
        try:
            ids, mask = inputs.get("input_ids"), inputs.get("attention_mask")
            if ids is not None and mask is not None and mask.shape[-1] > ids.shape[-1]:
                # a cached decoding step (generate): the mask covers the past too; the new
                # positions are its last columns
                new = mask[..., mask.shape[-1] - ids.shape[-1] :]
                inputs = {"input_ids": ids, "attention_mask": new}
            self.add(inputs)
        except Exception as err:  # never into the model's forward: counting stops, said once
            self._failed = True
            logger.warning("perfkit: counting tokens of the model's inputs failed (%s: %s); "
                        "no more are counted", type(err).__name__, err)  # fmt: skip

    def end_step(self) -> None:
        """The running step's body ended."""
        self._ended += self._running
        self._running = 0

    def drop_running(self) -> None:
        """The forward calls since the last step's end were not the phase's (an evaluation
        learned of at its first batch's end, that batch left out of every phase)."""
        self._running = 0

    def reset(self) -> None:
        """A phase starts: nothing counted before it is its."""
        self._running = self._ended = 0

    def __call__(self, _batch: Any = None) -> int:
        ended, self._ended = self._ended, 0
        return ended


class CallbackSteps:
    """One phase of ``run`` timed from callbacks: ``begin(batch)`` at a batch's start, ``end()``
    at its end, ``close()`` when the phase is over (``close(exc)`` when it failed).
    ``samples``: as ``phase.iterate(..., samples=)`` (default: counted from the batch);
    ``tokens``: a :class:`TokenTally` the trainer's batches or forward calls feed (default:
    counted from the batch, as ``phase.iterate``)."""

    def __init__(
        self,
        run: Run,
        kind: str,
        samples: int | Callable[[Any], int] | None = None,
        tokens: TokenTally | None = None,
    ) -> None:
        self.phase: Phase = run.phase(kind)
        self.phase.__enter__()
        self._samples = samples
        self._tokens = tokens
        if tokens is not None:
            tokens.reset()
        self._feed = _Feed()
        self._loop: Iterator[Any] | None = None
        self._io = self.phase.io()
        self._compute = self.phase.compute()
        self._in_io = self._in_compute = False
        self._open_io()

    def begin(self, batch: Any, new_step: bool = True) -> None:
        """A batch starts: the previous step ends, this one starts (unless ``new_step`` is
        False: a further micro-batch of the running step), its compute window opens."""
        self._close_io()
        self._close_compute()  # a batch whose end was never called back
        if new_step or self._loop is None:
            self._feed.put(batch)
            if self._loop is None:
                self._loop = self.phase.iterate(
                    self._feed, samples=self._samples, tokens=self._tokens
                )
            next(self._loop)
        self._compute.__enter__()
        self._in_compute = True

    def end(self) -> None:
        """The batch's body ended: its compute window closes, the gap to the next one is IO."""
        if self._tokens is not None:
            self._tokens.end_step()
        self._close_compute()
        self._open_io()

    def close(self, exc: BaseException | None = None) -> None:
        """End the phase (failed when ``exc`` is given: the unfinished step does not count)."""
        self._close_compute()
        self._close_io()
        if exc is None:
            self.phase.__exit__(None, None, None)
        else:
            self.phase.__exit__(type(exc), exc, exc.__traceback__)

    def _open_io(self) -> None:
        if not self._in_io:
            self._io.__enter__()
            self._in_io = True

    def _close_io(self) -> None:
        if self._in_io:
            self._io.__exit__(None, None, None)
            self._in_io = False

    def _close_compute(self) -> None:
        if self._in_compute:
            self._compute.__exit__(None, None, None)
            self._in_compute = False


class EndSteps:
    """One phase of ``run`` whose batches a trainer reports by their end only (transformers'
    ``on_prediction_step``): step k spans from the end of batch k-1 (the phase's start for the
    first) to the end of batch k, all of it compute - the trainer shows no batch start, so its
    data loading cannot be told from its compute. ``tick(batches)`` at each batch's end
    (``batches``: the loop's batch count where known: the last tick then ends the loop);
    ``samples()`` gives the next batch's samples when its step starts; ``close()`` ends the
    phase (an interval after the last batch is no step)."""

    def __init__(
        self,
        run: Run,
        kind: str,
        samples: Callable[[], int],
        tokens: TokenTally | None = None,
    ) -> None:
        self.phase: Phase = run.phase(kind)
        self.phase.__enter__()
        self.ticks = 0
        self._tokens = tokens
        if tokens is not None:
            tokens.reset()
        self._feed = _Feed()
        self._feed.put(None)
        self._loop: Iterator[Any] | None = self.phase.iterate(
            self._feed, samples=lambda _batch: samples(), tokens=tokens
        )
        next(self._loop)  # the first batch's step starts with the phase

    def tick(self, batches: int | None = None) -> None:
        """A batch ended (of ``batches`` in the loop, when known)."""
        if self._loop is None:
            return
        if self._tokens is not None:
            self._tokens.end_step()
        self.ticks += 1
        if batches is None or self.ticks < batches:
            self._feed.put(None)
        try:
            next(self._loop)
        except StopIteration:  # that was the last batch: the loop ended with it
            self._loop = None

    def close(self, exc: BaseException | None = None) -> None:
        """End the phase (failed when ``exc`` is given)."""
        if exc is None:
            self.phase.end(drop_open_step=True)
        else:
            self.phase.__exit__(type(exc), exc, exc.__traceback__)


class BatchSizes:
    """Samples per step of a loop whose batches a trainer does not show: ``per_step`` each,
    the last holding what is left of ``total`` samples where ``total`` is known (one process,
    no dropped last batch; it may be set once the loop is known)."""

    def __init__(self, per_step: int, total: int | None = None) -> None:
        self.per_step = per_step
        self.total = total
        self.given = 0

    def __call__(self, _batch: Any = None) -> int:
        n = self.per_step
        if self.total is not None:
            n = max(0, min(n, self.total - self.given))
        self.given += n
        return n


def guarded(what: str, action: Callable[[], object]) -> bool:
    """Run ``action``; a failure in perfkit is logged (logger "perfkit") rather than raised
    into the training job. True when it ran."""
    try:
        action()
    except Exception as err:
        logger.warning("perfkit callback: %s failed (%s: %s); the run's records so far are kept",
                       what, type(err).__name__, err, stack_info=False)  # fmt: skip
        return False
    return True


def log_metrics(run: Run, metrics: Any) -> None:
    """``run.log`` the entries of a metrics mapping that are numbers or one-element tensors
    (a metric named "step", which run.log takes as the step, is left out)."""
    values = {k: v for k, v in scalar_metrics(metrics).items() if k != "step"}
    if values and run.status == "running":
        record: Callable[..., None] = run.log
        guarded("logging the trainer's metrics", lambda: record(**values))


def scalar_metrics(metrics: Any) -> dict[str, float]:
    """The entries of a metrics mapping that are numbers or one-element tensors, as floats."""
    out: dict[str, float] = {}
    for key, value in dict(metrics or {}).items():
        if isinstance(value, bool):
            continue
        if "torch" in sys.modules and hasattr(value, "numel"):
            if value.numel() != 1:
                continue
            value = value.item()
        if isinstance(value, (int, float)):
            out[str(key)] = float(value)
    return out
