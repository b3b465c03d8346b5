"""The sink interface and the per-phase figures every sink receives."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from perfkit import checks


class Sink:
    """Receives one run's figures: :meth:`start` once, :meth:`phase` after phases (rate-bounded
    by ``min_interval_s`` for a live run), :meth:`summary` once at the end, then :meth:`close`.
    Subclasses override what they send; the base class sends nothing.

    ``min_interval_s``: a live run sends a sink at most one phase update per this many seconds
    (host clock); figures of phases that end in between are kept, the latest per phase name,
    and sent with the next update or before the summary.
    """

    def __init__(self, min_interval_s: float = 1.0) -> None:
        interval = checks.check_finite("min_interval_s", min_interval_s)
        if interval < 0:
            raise checks.wrong_value("min_interval_s", "a finite number >= 0", min_interval_s)
        self.min_interval_s = interval

    def start(self, run_id: str, name: str, config: Mapping[str, Any]) -> None:
        """The run ``run_id`` (named ``name``, with ``config``) begins."""

    def phase(self, figures: Mapping[str, float], step: int, wall_time: float) -> None:
        """Per-phase ``figures`` (:func:`phase_figures`) at ``step`` (the phase's index among
        the phases of its name); ``wall_time``: when the phase ended, Unix seconds."""

    def summary(self, summary: Mapping[str, Any], wall_time: float) -> None:
        """The run's summary (perfkit.Run.summary()) at its end, ``wall_time`` Unix seconds."""

    def close(self) -> None:
        """Release files and connections (also called after a failure)."""


def phase_figures(
    name: str, samples: float, wall_s: float, io_s: float, compute_s: float
) -> dict[str, float]:
    """The figures sent per phase, keyed ``<phase name>/<figure>``: samples, wall_s,
    samples_per_s (samples / wall), core_samples_per_s (samples / compute) and io_fraction
    (io / wall); a rate or fraction whose divisor is 0 is left out."""
    figures = {f"{name}/samples": float(samples), f"{name}/wall_s": float(wall_s)}
    if wall_s > 0:
        figures[f"{name}/samples_per_s"] = samples / wall_s
        figures[f"{name}/io_fraction"] = io_s / wall_s
    if compute_s > 0:
        figures[f"{name}/core_samples_per_s"] = samples / compute_s
    return figures


def numeric_items(summary: Mapping[str, Any]) -> dict[str, float]:
    """The summary's finite numbers (bools and texts left out), as floats."""
    return {
        key: float(value)
        for key, value in summary.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    }


def text_items(summary: Mapping[str, Any]) -> dict[str, str]:
    """The summary's texts (status, mem, mem_source, error, ...)."""
    return {key: value for key, value in summary.items() if isinstance(value, str)}
