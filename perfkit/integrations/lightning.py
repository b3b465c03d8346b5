"""A Lightning callback recording a perfkit run of ``Trainer.fit`` / ``validate`` / ``test`` /
``predict``: ``Trainer(callbacks=[PerfkitCallback(name="resnet50", out_dir="runs")])``.

Phases: "train" for training batches (from each epoch's start to its end or to where
validation starts; an epoch with validation mid-way gets a train phase on each side, since
perfkit phases do not overlap), "val" for validation and test batches, "infer" for
predict batches; the sanity check's validation is left out. Samples are counted from each
batch (:func:`perfkit.run.count_samples`, or ``samples=``). The Trainer's logged metrics
(``trainer.logged_metrics``: scalars) are passed to ``run.log`` after each training epoch and
each validation run. Needs the ``lightning`` extra: ``pip install 'perfkit[lightning]'``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import lightning.pytorch as pl

from perfkit.integrations._steps import CallbackSteps, guarded, log_metrics
from perfkit.run import Run


def _batch_hooks(kind: str) -> tuple[Callable[..., None], Callable[..., None]]:
    """A loop's batch start and end hooks: each batch a step of a ``kind`` phase (the sanity
    check's batches, which only validation has, are left out)."""

    def on_batch_start(
        self: PerfkitCallback,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not trainer.sanity_checking:
            self._begin(kind, batch)

    def on_batch_end(
        self: PerfkitCallback,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not trainer.sanity_checking:
            self._end(kind)

    return on_batch_start, on_batch_end


class PerfkitCallback(pl.Callback):
    """Records a perfkit :class:`~perfkit.Run` from a Lightning Trainer.

    Args:
        name, out_dir, config: as :class:`perfkit.Run` (the run starts at the Trainer's
            ``setup`` and stops at its ``teardown``, or when the Trainer raises).
        samples: samples per batch, an int or a callable batch -> int (default: counted from
            the batch).
        run_kwargs: further :class:`perfkit.Run` arguments (device, probes, ...).

    ``run`` is the Run once started; ``summary`` its summary once stopped.
    """

    def __init__(
        self,
        name: str,
        out_dir: str | os.PathLike[str] = "runs",
        config: Mapping[str, Any] | None = None,
        *,
        samples: int | Callable[[Any], int] | None = None,
        **run_kwargs: Any,
    ) -> None:
        self.run = Run(name, out_dir=out_dir, config=config, **run_kwargs)
        self.samples = samples
        self.summary: dict[str, Any] | None = None
        self._steps: CallbackSteps | None = None
        self._kind: str | None = None

    # -- run -----------------------------------------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.run.status == "new":
            guarded("starting the run", self.run.start)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._stop(None)

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self._stop(exception)

    def _stop(self, exc: BaseException | None) -> None:
        if self.run.status != "running":
            return
        self._end_phase(exc)

        def stop() -> None:
            self.summary = self.run.stop(exc)

        guarded("stopping the run", stop)

    # -- phases --------------------------------------------------------------------------
    def _open(self, kind: str) -> None:
        """Make ``kind`` the active phase (ending another one)."""
        if self.run.status != "running" or self._kind == kind:
            return
        self._end_phase(None)

        def start() -> None:
            self._steps = CallbackSteps(self.run, kind, self.samples)
            self._kind = kind

        guarded(f"starting a {kind} phase", start)

    def _begin(self, kind: str, batch: Any) -> None:
        self._open(kind)
        steps = self._steps
        if steps is not None and self._kind == kind:
            guarded(f"a {kind} step's start", lambda: steps.begin(batch))

    def _end(self, kind: str) -> None:
        steps = self._steps
        if steps is not None and self._kind == kind:
            guarded(f"a {kind} step's end", steps.end)

    def _end_phase(self, exc: BaseException | None) -> None:
        steps, self._steps, self._kind = self._steps, None, None
        if steps is not None:
            guarded(f"ending the {steps.phase.kind} phase", lambda: steps.close(exc))

    def _log(self, trainer: pl.Trainer) -> None:
        log_metrics(self.run, trainer.logged_metrics)

    # -- train ---------------------------------------------------------------------------
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._open("train")  # from here, the wait for the epoch's batches is the phase's IO

    on_train_batch_start, on_train_batch_end = _batch_hooks("train")

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._kind == "train":
            self._end_phase(None)
        self._log(trainer)

    # -- validation, test, predict -------------------------------------------------------
    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._end_phase(None)  # a train phase ends where validation starts

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._open("val")

    on_validation_batch_start, on_validation_batch_end = _batch_hooks("val")

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._kind == "val":
            self._end_phase(None)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._log(trainer)

    on_test_batch_start, on_test_batch_end = _batch_hooks("val")

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._end_phase(None)
        self._log(trainer)

    on_predict_batch_start, on_predict_batch_end = _batch_hooks("infer")

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._end_phase(None)
