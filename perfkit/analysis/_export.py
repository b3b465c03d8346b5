"""``perfkit export RUN... --to parquet DIR | tensorboard DIR | mlflow URI``: finished (or
killed) runs sent where people read metrics - the Parquet dataset, or the same sinks a live
Run feeds (:mod:`perfkit.sinks`), with each phase's figures and the summary at the times the
run recorded them."""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from perfkit.analysis._discover import PathArg
from perfkit.analysis._frames import phase_table
from perfkit.analysis._parquet import export_parquet
from perfkit.analysis._read import RunData, read_runs
from perfkit.analysis._rebuild import rebuild_summary
from perfkit.analysis._validate import reading
from perfkit.checks import check_type, wrong_value
from perfkit.sinks import MLflow, Sink, TensorBoard, phase_figures

#: Where ``export`` sends runs: the value of ``to``.
TARGETS = ("parquet", "tensorboard", "mlflow")


def export(paths: PathArg | Iterable[PathArg], to: str, dest: str) -> list[Path]:
    """Send the runs under ``paths`` to ``to`` (one of :data:`TARGETS`): "parquet" writes the
    Parquet dataset in the folder ``dest``; "tensorboard" event files under the folder
    ``dest`` (``dest/<run id>/``); "mlflow" one MLflow run per run at the tracking URI
    ``dest``. Returns the run directories exported. A failing sink raises (nothing to keep a
    loop alive for here)."""
    if to not in TARGETS:
        raise ValueError(f"Expected argument `to` to be one of {TARGETS} but got {to!r}")
    check_type("dest", dest, str, "a non-empty path or URI")
    if not dest:
        raise wrong_value("dest", "a non-empty path or URI", dest)
    if to == "parquet":
        return export_parquet(paths, dest)
    runs = read_runs(paths)
    for run in runs:
        sink: Sink = TensorBoard(dest) if to == "tensorboard" else MLflow(dest)
        with reading(run.run_dir):
            send_run(run, sink)
    return [run.run_dir for run in runs]


def send_run(run: RunData, sink: Sink) -> None:
    """Send one recorded run to ``sink``: its rank-0 phases' figures (the step of a phase is
    its index among the phases of its name) and its summary (rebuilt for a killed run), at
    the wall times the run recorded (meta.json's started_at + seconds since run start)."""
    summary: dict[str, Any] = run.summary if run.summary is not None else rebuild_summary(run)
    started = _unix_time(run.meta.get("started_at"))
    sink.start(run.run_id, str(run.meta.get("name") or run.label), run.config)
    try:
        phases = phase_table(run)
        count: dict[str, int] = {}
        for row in phases[phases["rank"] == 0].itertuples(index=False):
            name = str(row.phase)
            step = count.get(name, 0)
            count[name] = step + 1
            figures = phase_figures(name, row.samples, row.wall_s, row.io_s, row.compute_s)
            sink.phase(figures, step, started + float(row.end_t))
        e2e = summary.get("e2e_time")
        end = started + (float(e2e) if isinstance(e2e, (int, float)) and math.isfinite(e2e) else 0)
        sink.summary(summary, end)
    finally:
        sink.close()


def _unix_time(text: Any) -> float:
    """meta.json's ``started_at`` (ISO 8601 with its zone) as Unix seconds; 0 without one."""
    try:
        return datetime.fromisoformat(str(text)).timestamp()
    except ValueError:
        return 0.0
