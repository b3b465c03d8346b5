"""A Lightning callback recording perfkit runs of ``Trainer.fit`` / ``validate`` / ``test`` /
``predict``: ``Trainer(callbacks=[PerfkitCallback(name="resnet50", out_dir="runs")])``.

Runs: one per entry point, from the Trainer's ``setup`` to its ``teardown``: ``fit`` records a
run named ``name``, ``validate`` / ``test`` / ``predict`` runs named ``<name>-validate``,
``<name>-test``, ``<name>-predict``. Each run's config holds the Trainer's settings (batch size,
gradient accumulation, global batch, precision, learning rate, world size, max epochs / steps,
seed, model class and parameter count) under the user's own ``config``.

Phases: "train" per training epoch, "val" for validation and test batches, "infer" for predict
batches. A validation during training (at the epoch's end or mid-epoch with
``val_check_interval``) runs inside the epoch's train phase and pauses it
(:meth:`perfkit.Run.phase`): p_train and p_core leave it out, p_whole keeps it, and an epoch
stays one train phase. The sanity check's validation is left out. A step is an optimizer step:
with ``accumulate_grad_batches=k`` a step spans its k micro-batches (their loading between them
is IO), as in the Hugging Face callback. Samples are counted from each step's first batch
(:func:`perfkit.run.count_samples`, or ``samples=`` per batch) times its micro-batches; tokens
from every micro-batch that is a dict of token ids (its ``attention_mask`` on the host: real
tokens, else its ``input_ids``: padded tokens; :meth:`perfkit.Phase.iterate`). The
Trainer's logged metrics (``trainer.logged_metrics``: scalars) go to ``run.log`` after each
training epoch, validation, test and predict, each new value once. Needs the ``lightning``
extra: ``pip install 'perfkit[lightning]'``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from typing import Any

import lightning.pytorch as pl

from perfkit.integrations._figures import FigureSender
from perfkit.integrations._runs import EntryRuns, RunsOf
from perfkit.integrations._settings import (
    PRECISIONS,
    global_batch,
    parameter_count,
    read_settings,
)
from perfkit.integrations._steps import CallbackSteps, TokenTally, guarded, log_metrics
from perfkit.run import count_samples

_SUFFIXES = {"fit": "", "validate": "-validate", "test": "-test", "predict": "-predict"}
_TRAINING_SETTINGS = (
    "bs", "gradient_accumulation_steps", "global_batch_size", "lr", "max_epochs", "max_steps",
)  # fmt: skip


def trainer_settings(trainer: pl.Trainer, module: pl.LightningModule) -> dict[str, Any]:
    """The Trainer's settings as config entries (None where not known yet)."""
    per_device = getattr(trainer.train_dataloader, "batch_size", None)  # None before fit
    accumulation = trainer.accumulate_grad_batches
    world = trainer.world_size
    optimizers = trainer.optimizers
    lr = optimizers[0].param_groups[0].get("lr") if optimizers else None
    seed = os.environ.get("PL_GLOBAL_SEED")
    return {
        "bs": per_device,
        "gradient_accumulation_steps": accumulation,
        "world_size": world,
        "global_batch_size": global_batch(per_device, accumulation, world),
        "precision": PRECISIONS.get(str(trainer.precision)),
        "lr": lr,
        "max_epochs": trainer.max_epochs,
        "max_steps": trainer.max_steps if trainer.max_steps > 0 else None,
        "seed": int(seed) if seed is not None and seed.lstrip("-").isdigit() else None,
        "model": type(module).__name__,
        "params": parameter_count(module),
    }


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


class PerfkitCallback(RunsOf, pl.Callback):
    """Records perfkit runs from a Lightning Trainer (see the module's docstring).

    Args:
        name, out_dir, config: as :class:`perfkit.Run` (``config`` wins over the settings
            read from the Trainer).
        samples: samples per batch, an int or a callable batch -> int (default: counted from
            the batch).
        e2e_from: as :class:`perfkit.Run`; ``"process"`` (the default here, as FlagPerf's
            e2e_time): e2e_time counts from the process's start, start-up included.
        figures_every_s: perfkit's figures (``perfkit/p_train``, ``perfkit/p_core``, ...) go
            to the Trainer's loggers at each phase's end and, during a phase, at most this
            often (seconds; None: at phase ends only).
        run_kwargs: further :class:`perfkit.Run` arguments (device, probes, ...).

    ``run`` is the latest Run (before any entry point, a new one the user may start: the
    entry points then record into it); ``runs`` every run recorded; ``summary`` the latest
    stopped run's summary.
    """

    def __init__(
        self,
        name: str,
        out_dir: str | os.PathLike[str] = "runs",
        config: Mapping[str, Any] | None = None,
        *,
        samples: int | Callable[[Any], int] | None = None,
        e2e_from: str = "process",
        figures_every_s: float | None = 60.0,
        **run_kwargs: Any,
    ) -> None:
        self._runs = EntryRuns(name, out_dir, config, {"e2e_from": e2e_from, **run_kwargs})
        self.samples = samples
        self._trainer: pl.Trainer | None = None
        self._sender = FigureSender(self._send, figures_every_s)
        self._phases: list[CallbackSteps] = []  # open phases, outermost first
        self._group = 1  # micro-batches in the running optimizer step
        self._train_tokens = TokenTally()  # of every micro-batch of a step
        self._logged: dict[str, Any] = {}

    # -- runs ----------------------------------------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._logged = {}
        self._trainer = trainer
        settings = read_settings(lambda: trainer_settings(trainer, pl_module))
        if stage != "fit":  # the training's settings are not this run's
            settings = {k: v for k, v in settings.items() if k not in _TRAINING_SETTINGS}
        self._runs.start(_SUFFIXES.get(stage, f"-{stage}"), settings)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._stop(None)

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self._stop(exception)

    def _stop(self, exc: BaseException | None) -> None:
        while self._phases:
            self._close(exc)
        self._runs.stop(exc)

    # -- phases --------------------------------------------------------------------------
    def _open(self, kind: str, samples: Any = None, tokens: TokenTally | None = None) -> None:
        """Start a ``kind`` phase (inside the open one, which it pauses)."""
        if self.run.status != "running":
            return

        def start() -> None:
            self._phases.append(CallbackSteps(self.run, kind, samples or self.samples, tokens))

        guarded(f"starting a {kind} phase", start)

    def _close(self, exc: BaseException | None = None) -> None:
        """End the innermost phase."""
        steps = self._phases.pop()
        guarded(f"ending the {steps.phase.kind} phase", lambda: steps.close(exc))

    def _close_kind(self, kind: str) -> None:
        """End the innermost phase if it is a ``kind`` one; its figures go to the loggers."""
        if self._phases and self._phases[-1].phase.kind == kind:
            self._close()
            self._sender.now(self.run)

    def _send(self, values: dict[str, float]) -> None:
        """perfkit's figures to the Trainer's loggers (rank 0's, at the global step)."""
        trainer = self._trainer
        if trainer is not None and trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(values, step=trainer.global_step)

    def _begin(self, kind: str, batch: Any, new_step: bool = True) -> None:
        if not self._phases or self._phases[-1].phase.kind != kind:
            self._open(kind)  # a loop without its epoch hook (a step of an unknown loop)
        if self._phases and self._phases[-1].phase.kind == kind:
            steps = self._phases[-1]
            guarded(f"a {kind} step's start", lambda: steps.begin(batch, new_step))

    def _end(self, kind: str) -> None:
        if self._phases and self._phases[-1].phase.kind == kind:
            guarded(f"a {kind} step's end", self._phases[-1].end)

    def _log(self, trainer: pl.Trainer) -> None:
        """``run.log`` the logged metrics new since the last time (each value once)."""
        # The Trainer makes a new object for each value it logs: one seen already (held here,
        # so its id is not reused) is not logged again.
        metrics = dict(trainer.logged_metrics)
        new = {k: v for k, v in metrics.items() if self._logged.get(k) is not v}
        self._logged.update(new)
        log_metrics(self.run, new)

    # -- train ---------------------------------------------------------------------------
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        settings = read_settings(lambda: trainer_settings(trainer, pl_module))  # loader known
        guarded("reading the trainer's settings", lambda: self._runs.apply(settings))

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # from here, the epoch's waits are its IO
        self._open("train", self._step_samples, self._train_tokens)

    def _step_samples(self, batch: Any) -> int:
        """An optimizer step's samples: its first batch's times its micro-batches."""
        counted = self.samples(batch) if callable(self.samples) else self.samples
        return (count_samples(batch) if counted is None else counted) * self._group

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        k = max(int(trainer.accumulate_grad_batches), 1)
        first = batch_idx % k == 0
        if first:
            left = trainer.num_training_batches - batch_idx
            self._group = k if math.isinf(left) else int(min(k, left))
        self._begin("train", batch, new_step=first)
        self._train_tokens.add(batch)  # after the step before took its own

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        self._end("train")
        self._sender.maybe(self.run)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._close_kind("train")
        self._log(trainer)

    # -- validation, test, predict -------------------------------------------------------
    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._open("val")  # inside a train phase, it pauses it

    on_validation_batch_start, on_validation_batch_end = _batch_hooks("val")

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # after the validation's own end of epoch: its metrics and the loggers' writes
        if not trainer.sanity_checking:
            self._close_kind("val")
            self._log(trainer)

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._open("val")

    on_test_batch_start, on_test_batch_end = _batch_hooks("val")

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._close_kind("val")
        self._log(trainer)

    def on_predict_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._open("infer")

    on_predict_batch_start, on_predict_batch_end = _batch_hooks("infer")

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._close_kind("infer")
