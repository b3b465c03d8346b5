"""A run as MLPerf-style ``:::MLLOG`` lines (mlperf_logging's keys and event types)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from perfkit.analysis._read import PathArg, find_run, phase_table, read_run, row_dicts
from perfkit.records import RECORDS_FILE

PREFIX = ":::MLLOG "
#: Logged values (run.log) written as eval_accuracy events.
ACCURACY_KEYS = ("mAP", "acc", "acc_val", "acc_infer", "top1")
_EVAL_KINDS = ("val", "infer")


def mllog_lines(run_dir: PathArg) -> list[str]:
    """Rank 0's view of the run in ``run_dir`` as ``:::MLLOG {json}`` lines, in time order:

    - at run start, after init_start: submission_benchmark (run name), submission_platform
      (layout and device), global_batch_size (config bs x world size),
      opt_base_learning_rate (config lr), train_samples / eval_samples (samples of the first
      train / val phase), where known;
    - init_start first, init_stop and run_start at the first phase's start;
    - epoch_start / epoch_stop around each train phase (epoch_num from 1), eval_start /
      eval_stop around each val or infer phase (epoch_num: the epoch it follows);
    - eval_accuracy for each logged mAP / acc value (a fraction), with its epoch_num;
    - run_stop with metadata status "success" (run ok) or "aborted" (failed or killed).

    time_ms is meta.json's started_at (UTC) plus the event's seconds since run start, in ms.
    """
    run = read_run(find_run(run_dir))
    meta, config, records = run.meta, run.config, run.records
    phases = phase_table(run)
    phases = phases[phases["rank"] == 0]
    own = records[records["rank"] == 0]
    events: list[tuple[float, str, str, Any, dict[str, Any]]] = []

    def point(t: float, key: str, value: Any, **metadata: Any) -> None:
        events.append((t, "POINT_IN_TIME", key, value, metadata))

    events.append((0.0, "INTERVAL_START", "init_start", None, {}))
    point(0.0, "submission_benchmark", meta.get("name", run.label))
    point(0.0, "submission_platform", f"{meta.get('layout', '?')} {meta.get('device_name', '?')}")
    bs, world = config.get("bs"), meta.get("world_size", 1)
    if isinstance(bs, int) and isinstance(world, int):
        point(0.0, "global_batch_size", bs * world)
    if "lr" in config:
        point(0.0, "opt_base_learning_rate", config["lr"])
    for kind, key in (("train", "train_samples"), ("val", "eval_samples")):
        of_kind = phases[phases["kind"] == kind]
        if not of_kind.empty:
            point(0.0, key, int(of_kind["samples"].iloc[0]))
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
    accuracy = own[own["name"].isin(ACCURACY_KEYS) & (own["unit"] == "")]
    for r in row_dicts(accuracy):
        done = sum(1 for start in train_starts if start <= r["t"])
        point(r["t"], "eval_accuracy", r["value"], epoch_num=done, metric=r["name"])
    end = float(own["t"].max()) if not own.empty else first
    if run.summary is not None and meta.get("e2e_from", "run") == "run":
        end = float(run.summary.get("e2e_time", end))
    status = "success" if run.status == "ok" else "aborted"
    events.append((end, "INTERVAL_END", "run_stop", None, {"status": status}))

    start_ms = _started_ms(meta.get("started_at"))
    lines = []
    for t, event_type, key, value, metadata in sorted(events, key=lambda e: e[0]):
        entry = {
            "namespace": "",
            "time_ms": round(start_ms + 1000.0 * t),
            "event_type": event_type,
            "key": key,
            "value": value,
            "metadata": {"file": RECORDS_FILE, "lineno": 0, **metadata},
        }
        lines.append(PREFIX + json.dumps(entry, allow_nan=False))
    return lines


def _started_ms(started_at: Any) -> float:
    """Milliseconds since the epoch of meta.json's started_at (ISO 8601 with offset); 0 when
    absent, so times are then relative to the run's start."""
    if not isinstance(started_at, str):
        return 0.0
    try:
        return datetime.fromisoformat(started_at).timestamp() * 1000.0
    except ValueError as err:
        raise ValueError(f"meta.json started_at {started_at!r} is not an ISO 8601 time") from err
