"""A run as MLPerf ``:::MLLOG`` lines, written by the official mlperf-logging package's
``mllog.MLLogger`` (the "mllog" extra: ``pip install 'perfkit[mllog]'``)."""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Any

from perfkit import _messages
from perfkit.analysis._discover import PathArg, find_run
from perfkit.analysis._frames import phase_table, row_dicts
from perfkit.analysis._names import logged_as
from perfkit.analysis._read import RunData, read_run
from perfkit.analysis._rebuild import serving_figures
from perfkit.figures import PHASE_TOTALS, SERVING_FIGURES

#: Logged values (run.log) written as eval_accuracy events (and the names trainers log for
#: them, perfkit.analysis._names.METRIC_NAMES, where perfkit's own is absent).
ACCURACY_KEYS = ("mAP", "acc", "acc_val", "acc_infer", "top1")
#: Config entries of these names (mlperf_logging's keys) are written as events at run start;
#: a closed-division submission needs the ones its benchmark's rules list.
HYPERPARAMETER_KEYS = (
    "seed",
    "gradient_accumulation_steps",
    "opt_name",
    "opt_weight_decay",
    "opt_learning_rate_warmup_epochs",
    "opt_learning_rate_warmup_factor",
    "opt_learning_rate_decay_steps",
    "opt_learning_rate_decay_factor",
)
DIVISIONS = ("open", "closed")
_EVAL_KINDS = ("val", "infer")
#: File names in the metadata are relative to the folder holding the perfkit package.
_ROOT_DIR = str(Path(__file__).resolve().parents[2])

Event = tuple[float, str, str, Any, dict[str, Any]]


def mllog_lines(
    run_dir: PathArg,
    *,
    submission_org: str | None = None,
    division: str | None = None,
    submission_status: str | None = None,
    cache_clear: bool = False,
) -> list[str]:
    """Rank 0's view of the run in ``run_dir`` as ``:::MLLOG {json}`` lines, in time order:

    - cache_clear first (value ``cache_clear``: whether the caches were cleared before the
      run; perfkit does not clear them itself), then init_start;
    - at run start: submission_org, submission_division ("open" or "closed") and
      submission_status where given, submission_benchmark (run name), submission_platform
      (layout and device), global_batch_size (config global_batch_size, else bs x
      gradient_accumulation_steps x world size), max_sequence_length (a language model's:
      config max_sequence_length or seq_len, else set_token_flops' seq_len),
      opt_base_learning_rate (config lr), every config entry named in
      :data:`HYPERPARAMETER_KEYS`, train_samples / eval_samples (samples of the first train /
      val phase), where known;
    - init_stop and run_start at the first phase's start;
    - epoch_start / epoch_stop around each train phase (epoch_num from 1), eval_start /
      eval_stop around each val or infer phase (epoch_num: the epoch it follows);
    - eval_accuracy for each logged mAP / acc value (a fraction), with its epoch_num;
    - for a generation run (requests), each serving figure (ttft_s_p99, requests_per_s, ...;
      :data:`perfkit.figures.SERVING_FIGURES`, the summary's units) at the run's end, with
      metadata ``unit``;
    - run_stop with metadata status "success" (run ok) or "aborted" (failed or killed).

    time_ms is meta.json's started_at (UTC) plus the event's seconds since run start, in ms;
    file and lineno are the call site in perfkit that logged the line (mllog's own metadata).
    """
    if division is not None and division not in DIVISIONS:
        raise ValueError(
            f"Expected argument `division` to be one of {DIVISIONS} but got {division!r}"
        )
    try:
        from mlperf_logging.mllog.mllog import MLLogger
    except ImportError as err:
        raise ImportError("MLPerf logs need mlperf-logging: pip install 'perfkit[mllog]'") from err

    run = read_run(find_run(run_dir))
    events = _events(run, _submission(run, submission_org, division, submission_status))
    lines: list[str] = []
    logger = logging.Logger("perfkit.mllog", logging.INFO)
    logger.addHandler(_Collect(lines))
    mllogger = MLLogger(logger=logger, root_dir=_ROOT_DIR)
    start_ms = _started_ms(run.meta.get("started_at"))
    mllogger.event("cache_clear", value=cache_clear, time_ms=round(start_ms))
    for t, event_type, key, value, metadata in sorted(events, key=lambda e: e[0]):
        time_ms = round(start_ms + 1000.0 * t)
        if event_type == "INTERVAL_START":
            mllogger.start(key, value, metadata=metadata, time_ms=time_ms)
        elif event_type == "INTERVAL_END":
            mllogger.end(key, value, metadata=metadata, time_ms=time_ms)
        else:
            mllogger.event(key, value, metadata=metadata, time_ms=time_ms)
    return lines


class _Collect(logging.Handler):
    """Keeps mllog's lines; anything else it says goes to the "perfkit" logger."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__(logging.INFO)
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith(":::MLLOG"):
            self.lines.append(message)
        else:
            _messages.logger.warning("mllog: %s", message.strip())


def _submission(
    run: RunData, org: str | None, division: str | None, status: str | None
) -> list[tuple[str, Any]]:
    meta, config = run.meta, run.config
    keys: list[tuple[str, Any]] = [
        (key, value)
        for key, value in (
            ("submission_org", org),
            ("submission_division", division),
            ("submission_status", status),
        )
        if value is not None
    ]
    keys.append(("submission_benchmark", meta.get("name", run.label)))
    keys.append(
        ("submission_platform", f"{meta.get('layout', '?')} {meta.get('device_name', '?')}")
    )
    batch = _global_batch(config, meta.get("world_size", 1))
    if batch is not None:
        keys.append(("global_batch_size", batch))
    length = _sequence_length(config, meta)
    if length is not None:
        keys.append(("max_sequence_length", length))
    if "lr" in config:
        keys.append(("opt_base_learning_rate", config["lr"]))
    keys.extend((key, config[key]) for key in HYPERPARAMETER_KEYS if key in config)
    return keys


def _sequence_length(config: dict[str, Any], meta: dict[str, Any]) -> int | None:
    """Tokens per sequence of a language model's run: config max_sequence_length or seq_len,
    else the seq_len of the shape given to ``Run.set_token_flops``."""
    flops = meta.get("flops")
    shape = flops.get("transformer") if isinstance(flops, dict) else None
    candidates = [config.get("max_sequence_length"), config.get("seq_len")]
    candidates.append(shape.get("seq_len") if isinstance(shape, dict) else None)
    return next((v for v in candidates if isinstance(v, int) and not isinstance(v, bool)), None)


def _global_batch(config: dict[str, Any], world: Any) -> int | None:
    """Samples per optimizer step over every rank: config global_batch_size (what the trainer
    callbacks write), else bs x gradient_accumulation_steps (1 when absent) x world size."""
    given = config.get("global_batch_size")
    if isinstance(given, int) and not isinstance(given, bool):
        return given
    bs, accumulation = config.get("bs"), config.get("gradient_accumulation_steps", 1)
    if all(isinstance(v, int) and not isinstance(v, bool) for v in (bs, accumulation, world)):
        return int(bs * accumulation * world)
    return None


def _events(run: RunData, points: list[tuple[str, Any]]) -> list[Event]:
    meta, records = run.meta, run.records
    phases = phase_table(run)
    phases = phases[phases["rank"] == 0]
    own = records[records["rank"] == 0]
    events: list[Event] = [(0.0, "INTERVAL_START", "init_start", None, {})]

    def point(t: float, key: str, value: Any, **metadata: Any) -> None:
        events.append((t, "POINT_IN_TIME", key, value, metadata))

    for key, value in points:
        point(0.0, key, value)
    for total in PHASE_TOTALS:  # the MLPerf keys the figure table names: the first phase's
        for kind, key in total.mllog.items():
            of_kind = phases[phases["kind"] == kind]
            if not of_kind.empty:
                point(0.0, key, total.type(of_kind[total.name].iloc[0]))
    first = float(phases["start_t"].min()) if not phases.empty else 0.0
    events.append((first, "INTERVAL_END", "init_stop", None, {}))
    events.append((first, "INTERVAL_START", "run_start", None, {}))
    epoch = 0
    for p in row_dicts(phases):
        if p["kind"] == "train":
            epoch += 1
            keys = ("epoch_start", "epoch_stop")
        elif p["kind"] in _EVAL_KINDS:
            keys = ("eval_start", "eval_stop")
        else:
            continue
        events.append((p["start_t"], "INTERVAL_START", keys[0], None, {"epoch_num": epoch}))
        if p["complete"]:
            events.append((p["end_t"], "INTERVAL_END", keys[1], None, {"epoch_num": epoch}))
    train_starts = sorted(phases.loc[phases["kind"] == "train", "start_t"])
    values = own[own["unit"] == ""]
    names = logged_as(ACCURACY_KEYS, list(values["name"].unique()), run.config)
    accuracy = values[values["name"].isin(names)]
    for r in row_dicts(accuracy):
        done = sum(1 for start in train_starts if start <= r["t"])
        point(r["t"], "eval_accuracy", r["value"], epoch_num=done, metric=r["name"])
    end = float(own["t"].max()) if not own.empty else first
    if run.summary is not None and meta.get("e2e_from", "run") == "run":
        end = float(run.summary.get("e2e_time", end))
    serving = run.summary if run.summary is not None else serving_figures(run)
    for figure in SERVING_FIGURES:
        value = serving.get(figure.key)
        if value is not None:
            point(end, figure.key, value, unit=figure.unit)
    status = "success" if run.status == "ok" else "aborted"
    events.append((end, "INTERVAL_END", "run_stop", None, {"status": status}))
    return events


def _started_ms(started_at: Any) -> float:
    """Milliseconds since the epoch of meta.json's started_at (ISO 8601 with offset); 0 when
    absent, so times are then relative to the run's start."""
    if not isinstance(started_at, str):
        return 0.0
    try:
        return datetime.fromisoformat(started_at).timestamp() * 1000.0
    except ValueError as err:
        raise ValueError(f"meta.json started_at {started_at!r} is not an ISO 8601 time") from err
