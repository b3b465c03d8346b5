"""A run as a Chrome / Perfetto trace (the Trace Event Format's JSON object form).

Open the file in https://ui.perfetto.dev or chrome://tracing. One process per rank
(pid = rank + 1, named "rank N"), threads for phases, steps, IO and compute windows, timed
regions and point events, and a counter track per probe quantity and device.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from perfkit.analysis._read import (
    PathArg,
    find_run,
    phase_table,
    read_run,
    row_dicts,
    step_table,
)
from perfkit.figures import PHASE_RECORDS
from perfkit.records import STEP_NAMES

if TYPE_CHECKING:
    import pandas as pd

#: Thread id of each track inside a rank's process.
TIDS = {"phases": 1, "steps": 2, "IO": 3, "compute": 4, "regions": 5, "events": 6}
_US = 1e6  # trace timestamps are microseconds
_REGION = "region/"


def _us(seconds: float) -> float:
    return round(float(seconds) * _US, 3)


def _finite(*values: float) -> bool:
    return all(math.isfinite(v) for v in values)


def _jsonable(args: dict[str, Any]) -> dict[str, Any]:
    """Event args as plain JSON values: numpy scalars as Python numbers, NaN as null."""
    out = {}
    for key, value in args.items():
        if hasattr(value, "item"):
            value = value.item()
        out[key] = None if isinstance(value, float) and math.isnan(value) else value
    return out


def _complete(
    name: str, cat: str, pid: int, tid: int, start_s: float, dur_s: float, args: dict[str, Any]
) -> dict[str, Any]:
    return {
        "name": name,
        "cat": cat,
        "ph": "X",
        "pid": int(pid),
        "tid": tid,
        "ts": _us(start_s),
        "dur": _us(max(dur_s, 0.0)),
        "args": _jsonable(args),
    }


def chrome_trace(run_dir: PathArg) -> dict[str, Any]:
    """The run in ``run_dir`` as a trace: ``{"traceEvents": [...], "displayTimeUnit": "ms",
    "otherData": {...}}``. Times are microseconds since run start. Phases, steps, IO and
    compute windows and ``perfkit.timed`` regions are complete events ("X"); a step's IO is
    drawn at the start of the step and its compute right after (perfkit records per-step
    totals, not the order of windows inside a step). Logged values and probe errors are
    instant events ("i"); probe samples are counters ("C") named ``<quantity> <device>`` in
    base units."""
    run = read_run(find_run(run_dir))
    records = run.records
    phases = phase_table(run)
    steps = step_table(run, phases)
    ranks = sorted({int(r) for r in records["rank"].dropna()} | {0})
    events: list[dict[str, Any]] = []
    for rank in ranks:
        pid = rank + 1
        events.append(_meta("process_name", pid, 0, f"rank {rank}"))
        events.append(_meta("process_sort_index", pid, 0, rank, key="sort_index"))
        events.extend(_meta("thread_name", pid, tid, name) for name, tid in TIDS.items())
    for p in row_dicts(phases):
        if not _finite(p["start_t"], p["wall_s"]):
            continue  # a phase whose records are incomplete (a malformed file): not drawn
        args = {
            key: p[key]
            for key in ("kind", "index", "samples", "steps", "io_s", "compute_s", "complete")
        }
        events.append(
            _complete(
                str(p["phase"]),
                "phase",
                p["rank"] + 1,
                TIDS["phases"],
                p["start_t"],
                p["wall_s"],
                args,
            )
        )
    for s in row_dicts(steps):
        pid, start, io, compute = s["rank"] + 1, s["start_t"], s["io_time"], s["compute_time"]
        if not _finite(start, s["step_time"], io, compute):
            continue  # a step with a record missing (a malformed file): not drawn
        args = {"samples": s["samples"], "io_time_s": io, "compute_time_s": compute}
        events.append(
            _complete(
                f"{s['phase']} {s['step']}", "step", pid, TIDS["steps"], start, s["step_time"], args
            )
        )
        if io > 0:
            events.append(_complete("IO", "io", pid, TIDS["IO"], start, io, {}))
        if compute > 0:
            events.append(
                _complete("compute", "compute", pid, TIDS["compute"], start + io, compute, {})
            )
    events.extend(_record_events(records))
    return {
        "traceEvents": events,
        "displayTimeUnit": "ms",
        "otherData": {
            "run_id": run.run_id,
            "status": run.status,
            "started_at": run.meta.get("started_at"),
            "device_name": run.meta.get("device_name"),
        },
    }


def _meta(name: str, pid: int, tid: int, value: Any, key: str = "name") -> dict[str, Any]:
    return {"name": name, "ph": "M", "pid": pid, "tid": tid, "args": {key: value}}


def _record_events(records: pd.DataFrame) -> list[dict[str, Any]]:
    """Regions, logged values, probe errors and probe counters from the records."""
    events: list[dict[str, Any]] = []
    timing = set(STEP_NAMES) | set(PHASE_RECORDS)
    for r in row_dicts(records[~records["name"].isin(timing)]):
        pid, name, value, t = int(r["rank"]) + 1, str(r["name"]), r["value"], r["t"]
        if name.startswith(_REGION) and not math.isnan(value):
            events.append(
                _complete(
                    name.removeprefix(_REGION),
                    "region",
                    pid,
                    TIDS["regions"],
                    t - value,
                    value,
                    {"phase": r["phase"]},
                )
            )
        elif isinstance(r["device"], str):
            if not math.isnan(value):
                events.append(
                    {
                        "name": f"{name} {r['device']}",
                        "cat": "probe",
                        "ph": "C",
                        "pid": pid,
                        "ts": _us(t),
                        "args": {"value": float(value)},
                    }
                )
        elif r["unit"] == "":  # a logged value (run.log), or a probe error with its text in note
            args = {"note": r["note"]} if math.isnan(value) else {"value": value, "step": r["step"]}
            events.append(
                {
                    "name": name,
                    "cat": "log",
                    "ph": "i",
                    "s": "t",
                    "pid": pid,
                    "tid": TIDS["events"],
                    "ts": _us(t),
                    "args": _jsonable(args),
                }
            )
    return events


def write_trace(run_dir: PathArg, out: PathArg) -> Path:
    """Write :func:`chrome_trace` of ``run_dir`` to ``out`` as JSON; returns the path."""
    path = Path(out)
    trace = chrome_trace(run_dir)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(trace, handle, allow_nan=False)
    return path
