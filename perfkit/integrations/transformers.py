"""A Hugging Face ``transformers`` callback recording a perfkit run of ``Trainer.train``:
``Trainer(..., callbacks=[PerfkitCallback(name="bert", out_dir="runs")])``.

Phases: one "train" phase per epoch, a step per optimizer step (``on_step_begin`` to
``on_step_end``: with gradient accumulation, a step spans its micro-batches). transformers'
callbacks do not see the batch, so samples per step are the per-device batch size x the
gradient accumulation steps, the last step of an epoch holding what is left of the dataset
(one process, without ``dataloader_drop_last``); pass ``samples=`` to count otherwise. The
callbacks have no evaluation-start hook, so evaluation is not a timed phase: the Trainer's
logs (``on_log``: loss, learning_rate, eval_loss, eval_runtime, ...) and evaluation metrics
(``on_evaluate``) are passed to ``run.log``.

The run starts at ``on_train_begin`` and stops at ``on_train_end``. transformers has no
callback for a training that raises: to mark such a run failed, start the run yourself,
``with callback.run: trainer.train()`` (the callback then leaves starting and stopping to
you). Needs the ``transformers`` extra: ``pip install 'perfkit[transformers]'``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sized
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from perfkit.integrations._steps import CallbackSteps, guarded, log_metrics
from perfkit.run import Run


class PerfkitCallback(TrainerCallback):
    """Records a perfkit :class:`~perfkit.Run` from a Hugging Face Trainer.

    Args:
        name, out_dir, config: as :class:`perfkit.Run`.
        samples: samples per optimizer step, an int (default: see the module's docstring).
        run_kwargs: further :class:`perfkit.Run` arguments (device, probes, ...).

    ``run`` is the Run; ``summary`` its summary once the callback stopped it.
    """

    def __init__(
        self,
        name: str,
        out_dir: str | os.PathLike[str] = "runs",
        config: Mapping[str, Any] | None = None,
        *,
        samples: int | None = None,
        **run_kwargs: Any,
    ) -> None:
        self.run = Run(name, out_dir=out_dir, config=config, **run_kwargs)
        self.samples = samples
        self.summary: dict[str, Any] | None = None
        self._owned = False
        self._steps: CallbackSteps | None = None
        self._left: int | None = None  # samples left in the epoch, where known
        self._per_step = 0

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        if self.run.status == "new":
            self._owned = guarded("starting the run", self.run.start)

    def on_epoch_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        self._end_phase()
        if self.run.status != "running":
            return
        self._per_step = self.samples or (
            args.per_device_train_batch_size * args.gradient_accumulation_steps
        )
        self._left = None
        dataset = getattr(kw.get("train_dataloader"), "dataset", None)
        if self.samples is None and args.world_size == 1 and not args.dataloader_drop_last:
            self._left = len(dataset) if isinstance(dataset, Sized) else None

        def start() -> None:
            self._steps = CallbackSteps(self.run, "train", self._count)

        guarded("starting a train phase", start)

    def _count(self, _batch: Any) -> int:
        if self._left is None:
            return self._per_step
        n = min(self._per_step, self._left)
        self._left -= n
        return n

    def on_step_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        steps = self._steps
        if steps is not None:
            guarded("a train step's start", lambda: steps.begin(state.global_step))

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        if self._steps is not None:
            guarded("a train step's end", self._steps.end)

    def on_epoch_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        self._end_phase()

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: Mapping[str, Any] | None = None,
        **kw: Any,
    ) -> None:
        log_metrics(self.run, logs)

    def on_evaluate(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: Mapping[str, Any] | None = None,
        **kw: Any,
    ) -> None:
        log_metrics(self.run, metrics)

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        self._end_phase()
        if self._owned and self.run.status == "running":

            def stop() -> None:
                self.summary = self.run.stop()

            guarded("stopping the run", stop)

    def _end_phase(self) -> None:
        steps, self._steps = self._steps, None
        if steps is not None:
            guarded("ending the train phase", steps.close)
