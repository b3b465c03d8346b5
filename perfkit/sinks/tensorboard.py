"""TensorBoard sink: event files written by torch.utils.tensorboard's SummaryWriter (needs the
``tensorboard`` package: ``pip install 'perfkit[tensorboard]'``)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from perfkit import checks
from perfkit.sinks._base import Sink, numeric_items, text_items


class TensorBoard(Sink):
    """Writes a run's figures as TensorBoard scalars into ``log_dir/<run id>/``: per phase
    ``perfkit/<phase name>/<figure>`` at the phase's index, the summary's numbers as
    ``summary/<key>`` at step 0 and its texts (status, mem, ...) and config as a text panel,
    with the event times of the run (wall clock)."""

    def __init__(self, log_dir: str | os.PathLike[str] = "runs/tensorboard", **kwargs: Any):
        checks.check_type("log_dir", log_dir, (str, os.PathLike), "a folder path")
        super().__init__(**kwargs)
        self.log_dir = Path(log_dir)
        self._writer: Any = None

    def start(self, run_id: str, name: str, config: Mapping[str, Any]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(log_dir=str(self.log_dir / run_id))
        lines = [f"| {key} | {value} |" for key, value in config.items()]
        self._writer.add_text("config", "\n".join(["| key | value |", "|---|---|", *lines]), 0)

    def phase(self, figures: Mapping[str, float], step: int, wall_time: float) -> None:
        for key, value in figures.items():
            self._writer.add_scalar(f"perfkit/{key}", value, step, walltime=wall_time)

    def summary(self, summary: Mapping[str, Any], wall_time: float) -> None:
        for key, value in numeric_items(summary).items():
            self._writer.add_scalar(f"summary/{key}", value, 0, walltime=wall_time)
        lines = [f"| {key} | {value} |" for key, value in text_items(summary).items()]
        table = "\n".join(["| key | value |", "|---|---|", *lines])
        self._writer.add_text("summary", table, 0, walltime=wall_time)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
