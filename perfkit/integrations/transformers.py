"""A Hugging Face ``transformers`` callback recording perfkit runs of ``Trainer.train`` and of
evaluations and predictions: ``Trainer(..., callbacks=[PerfkitCallback(name="bert")])``.

Runs: one per entry point. ``trainer.train()`` records a run named ``name`` (a second
``train()`` records another); ``callback.evaluate(trainer, ...)`` and
``callback.predict(trainer, ...)`` call the Trainer's own and record runs named
``<name>-evaluate`` / ``<name>-predict`` (a bare ``trainer.evaluate()`` outside training cannot
be recorded - transformers calls no callback when an evaluation starts - and is warned about
once). Each run's config holds the Trainer's settings (batch size, gradient accumulation,
global batch, precision, learning rate, world size, max steps, epochs, seed, model class and
parameter count) under the user's own ``config``.

Phases: one "train" phase per epoch, a step per optimizer step (``on_step_begin`` to
``on_step_end``, with gradient accumulation its micro-batches; the gap to the next step is
IO). An evaluation during training (``eval_strategy="steps"`` or ``"epoch"``) is a "val" phase:
one inside the epoch's train phase pauses it (:meth:`perfkit.Run.phase`), so p_train and p_core
leave the evaluation out and p_whole keeps it. ``predict`` is an "infer" phase. Evaluation
steps are prediction steps, timed from one ``on_prediction_step`` to the next: all compute, as
the Trainer shows no batch start. transformers' callbacks do not see the batch: samples per
step are the per-device batch size (x the gradient accumulation steps in training), the last
step holding what is left of the dataset (one process, without ``dataloader_drop_last``); pass
``samples=`` to count training steps otherwise. Tokens are counted from the model's forward
calls (a forward pre-hook): their ``attention_mask`` on the host (real tokens), else their
``input_ids`` (padded tokens, also where the mask is on an accelerator: no sync per step).
Several eval datasets (a dict) make a val phase each (without :meth:`PerfkitCallback.attach`,
the second and later ones from their first batch's end). The Trainer's logs (``on_log``: loss,
learning_rate, eval_loss, eval_accuracy, ...) go to ``run.log``, each value once.

A run the user started, ``with callback.run: trainer.train()``, is used as it is (the callback
then leaves starting and stopping it to the user): transformers has no callback for a training
that raises, so this is how such a run is marked failed. Needs the ``transformers`` extra:
``pip install 'perfkit[transformers]'``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sized
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from perfkit._messages import warn
from perfkit.integrations._figures import PREFIX, FigureSender
from perfkit.integrations._runs import EntryRuns, RunsOf
from perfkit.integrations._settings import global_batch, parameter_count, read_settings
from perfkit.integrations._steps import (
    BatchSizes,
    CallbackSteps,
    EndSteps,
    TokenTally,
    guarded,
    log_metrics,
)

_SUFFIXES = {"train": "", "val": "-evaluate", "infer": "-predict"}


def trainer_settings(args: TrainingArguments, state: TrainerState | None, model: Any) -> dict:
    """The Trainer's settings as config entries (None where unknown)."""
    per_device = args.per_device_train_batch_size
    accumulation = args.gradient_accumulation_steps
    world = args.world_size
    precision = "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32"
    return {
        "bs": per_device,
        "eval_bs": args.per_device_eval_batch_size,
        "gradient_accumulation_steps": accumulation,
        "world_size": world,
        "global_batch_size": global_batch(per_device, accumulation, world),
        "precision": precision,
        "lr": args.learning_rate,
        "max_steps": state.max_steps if state is not None and state.max_steps > 0 else None,
        "epochs": args.num_train_epochs,
        "seed": args.seed,
        "model": type(model).__name__ if model is not None else None,
        "params": parameter_count(model),
    }


def _size(dataset: Any) -> int | None:
    """Samples in ``dataset`` where it has a length (not a dict of datasets)."""
    return len(dataset) if isinstance(dataset, Sized) and not isinstance(dataset, Mapping) else None


class PerfkitCallback(RunsOf, TrainerCallback):
    """Records perfkit runs from a Hugging Face Trainer (see the module's docstring).

    Args:
        name, out_dir, config: as :class:`perfkit.Run` (``config`` wins over the settings
            read from the Trainer).
        samples: samples per optimizer step, an int (default: see the module's docstring).
        e2e_from: as :class:`perfkit.Run`; ``"process"`` (the default here, as FlagPerf's
            e2e_time): e2e_time counts from the process's start, start-up included.
        figures_every_s: with the callback added by :meth:`attach`, perfkit's figures
            (``perfkit/p_train``, ``perfkit/p_core``, ...) go to the Trainer's ``report_to``
            loggers at each phase's end and, during a phase, at most this often (seconds; None:
            at phase ends only).
        run_kwargs: further :class:`perfkit.Run` arguments (device, probes, ...).

    ``run`` is the latest Run (before any entry point, a new one the user may start);
    ``runs`` every run the callback recorded; ``summary`` the latest stopped run's summary.
    """

    def __init__(
        self,
        name: str,
        out_dir: str | os.PathLike[str] = "runs",
        config: Mapping[str, Any] | None = None,
        *,
        samples: int | None = None,
        e2e_from: str = "process",
        figures_every_s: float | None = 60.0,
        **run_kwargs: Any,
    ) -> None:
        self._runs = EntryRuns(name, out_dir, config, {"e2e_from": e2e_from, **run_kwargs})
        self.samples = samples
        self._trainer: Any = None
        self._sender = FigureSender(self._send, figures_every_s)
        self._unattached_said = False
        self._train: CallbackSteps | None = None
        self._eval: EndSteps | None = None
        self._eval_sizes: BatchSizes | None = None
        self._eval_kind = "val"
        self._evals_left = 0  # evaluations still to come in this one (several eval datasets)
        self._in_train = False
        self._warned = False
        # Tokens of the model's forward calls (a forward pre-hook), per phase kind
        self._train_tokens = TokenTally()
        self._eval_tokens = TokenTally()
        self._hook: Any = None

    def _start(self, kind: str, args: TrainingArguments, state: Any, model: Any) -> None:
        settings = read_settings(lambda: trainer_settings(args, state, model))
        self._runs.start(_SUFFIXES[kind], settings)
        if self._trainer is None and args.report_to and not self._unattached_said:
            self._unattached_said = True
            warn(
                "perfkit: the Trainer reports to "
                f"{', '.join(map(str, args.report_to))} but perfkit's figures reach those "
                "loggers only when the callback is added with callback.attach(trainer) "
                "(transformers gives callbacks no handle on the Trainer)"
            )

    def attach(self, trainer: Any) -> PerfkitCallback:
        """Add this callback to ``trainer`` (unless it has it) and keep a handle on it, so
        perfkit's figures reach the Trainer's ``report_to`` loggers through ``trainer.log``
        (TensorBoard, W&B, MLflow, ...; ``perfkit/p_train``, ...). Returns the callback."""
        if self not in trainer.callback_handler.callbacks:
            trainer.add_callback(self)
        self._trainer = trainer
        return self

    def _send(self, values: dict[str, float]) -> None:
        """perfkit's figures to the Trainer's loggers (``trainer.log``: its on_log callbacks)."""
        if self._trainer is not None:
            self._trainer.log(dict(values))

    # -- train ---------------------------------------------------------------------------
    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        self._in_train = True
        self._count_tokens_of(kw.get("model"))
        self._start("train", args, state, kw.get("model"))
        if getattr(args, "eval_on_start", False):  # the Trainer evaluates before training
            self._open_eval("val", args, self._eval_dataset(kw))

    def on_epoch_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        self._end_train_phase()
        if self.run.status != "running":
            return
        per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps
        total = None
        if self.samples is None and args.world_size == 1 and not args.dataloader_drop_last:
            total = _size(getattr(kw.get("train_dataloader"), "dataset", None))
        count: Callable[[Any], int] = BatchSizes(self.samples or per_step, total)

        def start() -> None:
            self._train = CallbackSteps(self.run, "train", count, self._train_tokens)

        guarded("starting a train phase", start)

    def on_step_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        steps = self._train
        if steps is not None:
            guarded("a train step's start", lambda: steps.begin(state.global_step))

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        if self._train is not None:
            guarded("a train step's end", self._train.end)
            self._sender.maybe(self.run)
        if control.should_evaluate:  # the Trainer evaluates now: inside the train phase
            self._open_eval("val", args, self._eval_dataset(kw))

    def on_epoch_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        self._end_train_phase()
        if control.should_evaluate:
            self._open_eval("val", args, self._eval_dataset(kw))

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        self._in_train = False
        self._close_eval()
        self._end_train_phase()
        self._runs.stop()
        self._uncount_tokens()

    def _count_tokens_of(self, model: Any) -> None:
        """Count the tokens of ``model``'s forward calls: their ``attention_mask`` on the host
        (real tokens), else ``input_ids`` (padded) - the Trainer shows callbacks no batch."""
        self._uncount_tokens()
        if hasattr(model, "register_forward_pre_hook"):
            self._hook = model.register_forward_pre_hook(self._on_forward, with_kwargs=True)

    def _uncount_tokens(self) -> None:
        hook, self._hook = self._hook, None
        if hook is not None:
            hook.remove()

    def _on_forward(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        tally = self._eval_tokens if self._eval is not None else self._train_tokens
        tally.hook(module, args, kwargs)

    def _end_train_phase(self) -> None:
        steps, self._train = self._train, None
        if steps is not None:
            guarded("ending the train phase", steps.close)
            self._sender.now(self.run)

    # -- evaluation and prediction -------------------------------------------------------
    def evaluate(self, trainer: Any, *args: Any, **kwargs: Any) -> Any:
        """``trainer.evaluate(*args, **kwargs)``, recorded as a "val" phase (in a run of its own
        unless the user's run is running); returns what it returns."""
        return self._record("val", trainer, trainer.evaluate, args, kwargs)

    def predict(self, trainer: Any, *args: Any, **kwargs: Any) -> Any:
        """``trainer.predict(*args, **kwargs)``, recorded as an "infer" phase (in a run of its
        own unless the user's run is running); returns what it returns."""
        return self._record("infer", trainer, trainer.predict, args, kwargs)

    def _record(
        self,
        kind: str,
        trainer: Any,
        call: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
    ) -> Any:
        self._trainer = self._trainer or trainer
        self._count_tokens_of(trainer.model)
        self._start(kind, trainer.args, getattr(trainer, "state", None), trainer.model)
        dataset = args[0] if args else kwargs.get("eval_dataset", kwargs.get("test_dataset"))
        self._open_eval(kind, trainer.args, trainer.eval_dataset if dataset is None else dataset)
        try:
            result = call(*args, **kwargs)
        except BaseException as exc:
            self._close_eval(exc)
            self._runs.stop(exc)
            self._uncount_tokens()
            raise
        self._close_eval()
        self._runs.stop()
        self._uncount_tokens()
        return result

    def _eval_dataset(self, kw: Mapping[str, Any]) -> Any:
        """The dataset the Trainer evaluates on: its own where the callback has the Trainer,
        else the last evaluation's."""
        if self._trainer is not None:
            return self._trainer.eval_dataset
        return getattr(kw.get("eval_dataloader"), "dataset", None)

    def _open_eval(
        self, kind: str, args: TrainingArguments, dataset: Any, late: bool = False
    ) -> None:
        """Start a ``kind`` phase for an evaluation or prediction over ``dataset`` (several,
        in a dict: an evaluation each); ``late``: it started a batch ago, the phase from that
        batch's end on (that batch left out)."""
        if self.run.status != "running" or self._eval is not None:
            return
        several = isinstance(dataset, Mapping)
        self._evals_left = len(dataset) - 1 if several else 0
        sizes = BatchSizes(args.per_device_eval_batch_size)
        self._eval_sizes = sizes
        self._eval_kind = kind
        self._eval_total(args, None if several else _size(dataset))
        if late:
            sizes()  # the batch left out

        def start() -> None:
            self._eval = EndSteps(self.run, kind, sizes, self._eval_tokens)
            self._eval.ticks = int(late)

        guarded(f"starting a {kind} phase", start)

    def _eval_total(self, args: TrainingArguments, size: int | None) -> None:
        sizes = self._eval_sizes
        if sizes is not None and args.world_size == 1 and not args.dataloader_drop_last:
            sizes.total = size

    def on_prediction_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        steps = self._eval
        dataloader = kw.get("eval_dataloader")
        if steps is None and self._in_train:  # an evaluation no hook announced
            self._train_tokens.drop_running()  # its first batch's forward: not a train step's
            self._open_eval("val", args, getattr(dataloader, "dataset", None), late=True)
            return
        if steps is None:
            if not self._warned:
                self._warned = True
                warn(
                    "perfkit: an evaluation or prediction outside training is not recorded "
                    "(transformers calls no callback when one starts); call it through the "
                    "callback - callback.evaluate(trainer, ...) or callback.predict(trainer, "
                    "...) - to record it"
                )
            return
        if steps.ticks == 0:  # the loop is known from its first batch on
            self._eval_total(args, _size(getattr(dataloader, "dataset", None)))
        batches = len(dataloader) if isinstance(dataloader, Sized) else None
        guarded("an evaluation step", lambda: steps.tick(batches))

    def on_evaluate(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        self._close_eval()  # its metrics reached run.log through on_log already
        if self._evals_left > 0:  # several eval datasets: the next one's evaluation starts
            left = self._evals_left - 1
            self._open_eval(self._eval_kind, args, None)
            self._evals_left = left

    def on_predict(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: Mapping[str, Any] | None = None,
        **kw: Any,
    ) -> None:
        log_metrics(self.run, metrics)  # predict() does not log its metrics (no on_log)
        self._close_eval()

    def _close_eval(self, exc: BaseException | None = None) -> None:
        steps, self._eval, self._eval_sizes = self._eval, None, None
        if steps is not None:
            guarded(f"ending the {steps.phase.kind} phase", lambda: steps.close(exc))
            if exc is None:
                self._sender.now(self.run)

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: Mapping[str, Any] | None = None,
        **kw: Any,
    ) -> None:
        own = {k: v for k, v in (logs or {}).items() if not str(k).startswith(PREFIX)}
        log_metrics(self.run, own)  # perfkit's own figures, sent through trainer.log, aside
