"""perfkit's figures for a trainer's own loggers (TensorBoard, W&B, MLflow, CSV, ...)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from perfkit.checks import positive_number
from perfkit.integrations._steps import guarded, scalar_metrics
from perfkit.run import Run

#: Summary figures sent, as ``perfkit/<name>``: throughputs (samples/s), IO fractions, MFU
#: (a fraction) and the peak device memory (bytes) - the run's so far.
FIGURES = (
    "p_train", "p_core", "train_io_fraction", "p_whole",
    "p_val_whole", "p_val_core", "val_io_fraction",
    "p_infer_whole", "p_infer_core", "infer_io_fraction",
    "MFU", "mem_peak_bytes",
)  # fmt: skip
PREFIX = "perfkit/"


def figures(run: Run) -> dict[str, float]:
    """``{"perfkit/p_train": ..., ...}``: the run's figures so far that it has (finite)."""
    summary = run.summary()
    found = scalar_metrics({name: summary[name] for name in FIGURES if name in summary})
    return {PREFIX + name: value for name, value in found.items() if math.isfinite(value)}


class FigureSender:
    """Sends ``figures(run)`` with ``send`` at each phase end (:meth:`now`) and, during a phase,
    at most every ``every_s`` seconds (:meth:`maybe`, at step ends; None: only at phase ends)."""

    def __init__(self, send: Callable[[dict[str, float]], None], every_s: float | None) -> None:
        self._send = send
        self.every_s = None if every_s is None else positive_number("figures_every_s", every_s)
        self._last = time.monotonic()

    def now(self, run: Run) -> None:
        """Send the run's figures (when it runs and has any)."""
        self._last = time.monotonic()
        if run.status != "running":
            return

        def send() -> None:
            values = figures(run)
            if values:
                self._send(values)

        guarded("sending perfkit's figures to the trainer's loggers", send)

    def maybe(self, run: Run) -> None:
        """Send the figures if ``every_s`` seconds passed since the last time."""
        if self.every_s is not None and time.monotonic() - self._last >= self.every_s:
            self.now(run)
