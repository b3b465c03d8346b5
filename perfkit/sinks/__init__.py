"""Sinks: where a Run sends its figures as it goes - TensorBoard event files and MLflow runs
(optional extras ``tensorboard`` and ``mlflow``, imported when a sink starts).

``perfkit.Run(..., sinks=[perfkit.sinks.TensorBoard("tb"), perfkit.sinks.MLflow()])`` sends
each phase's figures (at most one update per ``min_interval_s`` per sink) and the summary at
the end; ``perfkit export RUN... --to tensorboard DIR | --to mlflow URI`` sends finished runs.
A sink that fails is disabled and recorded in the summary's ``faults``; the loop never sees
its exception.
"""

from __future__ import annotations

from perfkit.sinks._base import Sink, phase_figures
from perfkit.sinks.mlflow import MLflow
from perfkit.sinks.tensorboard import TensorBoard

__all__ = ["MLflow", "Sink", "TensorBoard", "phase_figures"]
