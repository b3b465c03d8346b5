"""A run's summary rebuilt from its records, by :func:`perfkit.summary.build_summary` - the
function the live run calls - so a killed run's table has the live summary's keys."""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any

from perfkit.analysis._frames import phase_table, row_dicts, step_table
from perfkit.analysis._read import RunData
from perfkit.figures import PHASE_TOTALS
from perfkit.records import RECORD_NAMES
from perfkit.run._power import DEVICE_RECORDS, from_records
from perfkit.serving import from_record, serving_summary
from perfkit.summary import PhaseOverRanks, PhaseTotals, build_summary

if TYPE_CHECKING:
    import pandas as pd

#: The rank whose phases, steps, logged values and probe errors the summary reports.
REPORTING_RANK = 0


def rebuild_summary(run: RunData) -> dict[str, Any]:
    """The summary of ``run`` rebuilt from its records: every metric the live summary has,
    from the same figures (phase records, rank 0's steps, probe samples, logged values).
    ``status`` is "partial" and ``e2e_time`` the time of rank 0's last record (a lower
    bound)."""
    records = run.records
    meta = run.meta
    mine = records[records["rank"] == REPORTING_RANK]
    probe_errors = mine.loc[mine["name"] == "probe_error", "note"]
    return build_summary(
        run_id=run.run_id,
        name=str(meta.get("name", run.label)),
        status="partial",
        e2e_time=_last_t(mine, run.steps[run.steps["rank"] == REPORTING_RANK]),
        phases=rebuilt_phases(run),
        meta=meta,
        memory=_memory(records, meta),
        flops=meta.get("flops"),
        logged=_logged(mine),
        probe_errors=[str(note) for note in probe_errors],
        serving=serving_figures(run),
    )


def serving_figures(run: RunData) -> dict[str, Any]:
    """The serving figures of the reporting rank's requests (requests.jsonl), with the SLO of
    meta.json (a malformed one: no goodput) - what the live run computed."""
    timings = [from_record(line) for line in run.requests if line["rank"] == REPORTING_RANK]
    try:
        return serving_summary(timings, run.meta.get("slo"))
    except (TypeError, ValueError):
        return serving_summary(timings, {})


def _last_t(events: pd.DataFrame, steps: pd.DataFrame) -> float | None:
    times = [float(frame["t"].max()) for frame in (events, steps) if not frame.empty]
    return max(times, default=None)


def rebuilt_phases(run: RunData) -> list[PhaseOverRanks]:
    """The reporting rank's phases in start order, each with every rank's figures (the n-th phase of
    each rank: every rank runs the same phases) and the reporting rank's step wall times
    (its warm-up steps, the first ``warmup_steps`` of the phase, aside)."""
    phases = phase_table(run)
    steps = step_table(run, phases)
    keys = ["rank", "phase", "index"]
    walls: dict[Any, list[float]] = {}
    if not steps.empty:
        steps = steps.merge(phases[[*keys, "warmup_steps"]], on=keys, how="left")
        steady = steps[steps["step"] >= steps["warmup_steps"].fillna(0)]  # warm-up aside
        walls = steady.groupby(keys)["step_time"].apply(list).to_dict()
    by_rank = {
        int(rows["rank"].iloc[0]): row_dicts(rows.sort_values("ordinal", kind="stable"))
        for _, rows in phases.groupby("rank")
    }
    devices = _device_rows(run)
    notes = _token_notes(run)
    results = []
    kind_counts: dict[str, int] = {}
    for position, row in enumerate(by_rank.get(REPORTING_RANK, [])):
        kind = str(row["kind"])
        kind_index = kind_counts.get(kind, 0)
        kind_counts[kind] = kind_index + 1
        figures = {
            rank: _figures(rows[position])
            for rank, rows in sorted(by_rank.items())
            if position < len(rows)
        }
        key = (REPORTING_RANK, row["phase"], row["index"])
        end = (str(row["phase"]), float(row["end_t"]))
        power = from_records(devices.get(end, []))
        figures_0 = figures.get(REPORTING_RANK)
        counted = figures_0 is not None and figures_0.tokens is not None
        results.append(
            PhaseOverRanks(
                str(row["phase"]),
                kind_index,
                REPORTING_RANK,
                figures,
                walls.get(key, []),
                power,
                _tokens_from(notes, row) if counted else "none",
            )
        )
    return results


def _token_notes(run: RunData) -> list[tuple[str, float, str]]:
    """The reporting rank's phase_tokens_from records: (phase, t, how it counts tokens)."""
    records = run.records
    rows = records[(records["rank"] == REPORTING_RANK) & (records["name"] == "phase_tokens_from")]
    columns = (rows["phase"].astype(str), rows["t"].astype(float), rows["note"].astype(str))
    return list(zip(*columns, strict=True))


def _tokens_from(notes: list[tuple[str, float, str]], row: dict[str, Any]) -> str:
    """How the phase of ``row`` counted its tokens: the last note of its name at its start."""
    name, start = str(row["phase"]), float(row["start_t"])
    found = [note for phase, t, note in notes if phase == name and t == start]
    return found[-1] if found else "none"


def _device_rows(run: RunData) -> dict[tuple[str, float], list[dict[str, Any]]]:
    """The reporting rank's phase_device_* records by (phase, end time)."""
    records = run.records
    rows = records[(records["rank"] == REPORTING_RANK) & records["name"].isin(DEVICE_RECORDS)]
    grouped: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for row in row_dicts(rows):
        grouped.setdefault((str(row["phase"]), float(row["t"])), []).append(row)
    return grouped


def _figures(row: dict[str, Any]) -> PhaseTotals:
    """One rank's figures of one phase from its phase-table row (NaN: not measured, None)."""
    totals: dict[str, Any] = {}
    for total in PHASE_TOTALS:
        value = float(row[total.name])
        totals[total.name] = None if math.isnan(value) else total.type(value)
    return PhaseTotals(
        kind=str(row["kind"]), start_t=float(row["start_t"]), end_t=float(row["end_t"]), **totals
    )


def _memory(records: pd.DataFrame, meta: dict[str, Any]) -> dict[str, Any]:
    """The mem fields from the probe samples in the records, folded as the live run folds them
    (one MemoryTracker per rank, merged over ranks when there are several)."""
    from perfkit.probes import DeviceSample, MemoryTracker, merge_memory_summaries

    fields = {f.name for f in dataclasses.fields(DeviceSample) if f.type == "float"}
    samples = records[records["name"].isin(fields) & records["device"].notna()]
    world_size = int(meta.get("world_size") or 1)
    trackers = [MemoryTracker(include_host=meta.get("device") == "cpu") for _ in range(world_size)]
    if not samples.empty:
        wide = samples.pivot_table(
            index=["rank", "t", "device"], columns="name", values="value", aggfunc="last"
        ).reset_index()
        columns = [c for c in wide.columns if c in fields]
        for rank, device, values in zip(
            wide["rank"],
            wide["device"],
            wide[columns].to_dict(orient="records"),
            strict=True,
        ):
            if 0 <= int(rank) < world_size:
                trackers[int(rank)].update(
                    DeviceSample(probe="", device=str(device), **_numbers(values))
                )
    if world_size == 1:
        return trackers[0].summary()
    return merge_memory_summaries([tracker.summary() for tracker in trackers])


def _numbers(values: dict[Any, Any]) -> dict[str, Any]:
    return {str(k): float(v) for k, v in values.items()}


def _logged(records: pd.DataFrame) -> dict[str, float]:
    """The last value of each name given to ``run.log`` (unit-less records other than
    perfkit's own events)."""
    logged = records[(records["unit"] == "") & ~records["name"].isin(RECORD_NAMES)]
    last = logged.sort_values("t", kind="stable").groupby("name", sort=False)["value"].last()
    return {str(name): float(value) for name, value in last.items()}
