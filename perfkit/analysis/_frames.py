"""A run's phase and step tables (pandas), from its records: phases a killed process left open
rebuilt from their steps, pauses left out of their wall time."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from perfkit.analysis._read import RunData
from perfkit.figures import PHASE_KINDS, PHASE_TOTALS
from perfkit.records import STEP_NAMES

if TYPE_CHECKING:
    import pandas as pd


def phase_table(run: RunData) -> pd.DataFrame:
    """One row per phase per rank, in time order: rank, phase (name), ordinal (its position
    among the rank's phases, from 0), kind, index (the n-th phase of that name on that rank,
    from 0), start_t, end_t (s since run start), then the totals of the figure table
    (:data:`perfkit.figures.PHASE_TOTALS`) with ``complete`` after those written for every
    phase: wall_s, io_s, compute_s (s), samples, steps, complete, energy_j (J, NaN without
    an energy counter), warmup_steps, warmup_samples, warmup_s (the phase's warm-up steps,
    which wall_s, io_s, compute_s, samples and steps leave out; 0 without warm-up).

    Finished phases come from their phase_* records; a phase a killed process left open is
    rebuilt from its steps (end = last step's end; complete = False). ``kind`` comes from the
    phase records, else from summary.json's phases when the run has one, else it is the phase
    name when that names a kind (train, val, infer), else None.
    """
    table = _with_open_phases(_recorded_phases(run.records), run.steps)
    return _phase_columns(table, run)


def _recorded_phases(records: pd.DataFrame) -> pd.DataFrame:
    """One row per phase_start per rank with its end records' totals (NaN where the phase
    has not ended) and ``complete``."""
    ends = _phase_ends(records)
    starts = records.loc[records["name"] == "phase_start", ["rank", "phase", "value", "kind"]]
    starts = starts.rename(columns={"value": "start_t"})
    starts["ordinal"] = starts.groupby("rank").cumcount()
    if starts.empty:  # no phase_start on disk (lost lines): the phases from their ends
        return ends.assign(start_t=ends["end_t"] - ends["wall_s"], complete=True)
    # The n-th start of a name with its n-th end: a phase run inside another (pausing it)
    # ends first, so the end records' order is not the start records'.
    nth = ["rank", "phase", "nth"]
    starts["nth"] = starts.groupby(["rank", "phase"]).cumcount()
    named_ends = ends.assign(nth=ends.groupby(["rank", "phase"]).cumcount())
    table = starts.merge(named_ends.drop(columns=["kind", "ordinal"]), on=nth, how="left")
    table = table.drop(columns=["nth"])
    table["complete"] = table["end_t"].notna()
    return table


def _with_open_phases(table: pd.DataFrame, steps: pd.DataFrame) -> pd.DataFrame:
    """The ended phases of ``table``, and each phase left open (a killed process) rebuilt
    from its steps: end = its last step's end, IO / compute seconds, samples, tokens and
    steps summed, complete = False."""
    import pandas as pd

    done = table[table["complete"]]
    open_steps = steps[
        ~steps.set_index(["rank", "ordinal"]).index.isin(done.set_index(["rank", "ordinal"]).index)
    ]
    if open_steps.empty:
        return done
    rebuilt = (
        open_steps.assign(start=open_steps["t"] - open_steps["step_time"])
        .groupby(["rank", "ordinal"])
        .agg(
            phase=("phase", "first"),
            first_start=("start", "min"),
            end_t=("t", "max"),
            io_s=("io_time", "sum"),
            compute_s=("compute_time", "sum"),
            samples=("samples", "sum"),
            tokens=("tokens", "sum"),
            steps=("step", "count"),
        )
        .reset_index()
    )
    known = table[~table["complete"]].drop(
        columns=["end_t", "io_s", "compute_s", "samples", "tokens", "steps"], errors="ignore"
    )
    rebuilt["tokens"] = rebuilt["tokens"].where(rebuilt["tokens"] > 0)  # 0: none counted
    merged = rebuilt.merge(known.drop(columns=["phase"]), on=["rank", "ordinal"], how="left")
    merged["start_t"] = merged["start_t"].fillna(merged["first_start"])
    merged["complete"] = False
    return pd.concat([done, merged.drop(columns=["first_start"])], ignore_index=True)


def _phase_columns(table: pd.DataFrame, run: RunData) -> pd.DataFrame:
    """``table`` with phase_table's columns, types and order: wall_s of open phases (their
    pauses left out), index, kind, and the totals a phase writes only sometimes (NaN or 0)."""
    import pandas as pd

    columns = ["rank", "phase", "ordinal", "start_t", "end_t", "wall_s", "io_s", "compute_s"]
    if table.empty:
        table = pd.DataFrame(columns=[*columns, "samples", "steps", "complete", "kind"])
    table["wall_s"] = (
        table["end_t"] - table["start_t"]
        if "wall_s" not in table
        else (table["wall_s"].fillna(table["end_t"] - table["start_t"] - _paused_s(table)))
    )
    if "kind" not in table:
        table["kind"] = None
    table = table.sort_values(["rank", "ordinal"], kind="stable").reset_index(drop=True)
    table = table.astype(
        {c: float for c in columns[3:]}
        | {"rank": int, "ordinal": int, "samples": int, "steps": int, "complete": bool}
    )
    table["index"] = table.groupby(["rank", "phase"]).cumcount()
    recorded = table["kind"]
    table["kind"] = recorded.where(recorded.notna(), pd.Series(_phase_kinds(run, table)))
    every = [t.name for t in PHASE_TOTALS if t.written == "always"]
    sometimes = [t for t in PHASE_TOTALS if t.written != "always"]
    for total in sometimes:  # not written: NaN (not measured) or 0 (no warm-up steps)
        missing = float("nan") if total.written == "measured" else 0
        table[total.name] = table[total.name].fillna(missing) if total.name in table else missing
    table = table.astype({t.name: t.type for t in sometimes if t.written != "measured"})
    return table[
        [*columns[:3], "kind", "index", "start_t", "end_t", *every, "complete"]
        + [total.name for total in sometimes]
    ].reset_index(drop=True)


def _paused_s(table: pd.DataFrame) -> pd.Series:
    """Seconds (s) each open phase (no wall_s: a killed process left it open) was paused by
    the ended phases run inside it - a phase of another kind pauses it, and the live run
    leaves that time out of its wall time (Phase.paused_s). Nested inner phases count once."""
    import pandas as pd

    done = table[table["complete"]]
    paused = pd.Series(0.0, index=table.index)
    for row in table[table["wall_s"].isna()].itertuples():
        inside = done[
            (done["rank"] == row.rank)
            & (done["ordinal"] > row.ordinal)
            & (done["start_t"] >= row.start_t)
            & (done["end_t"] <= row.end_t)
        ]
        reached = row.start_t
        for start, end in sorted(zip(inside["start_t"], inside["end_t"], strict=True)):
            paused[row.Index] += max(end - max(start, reached), 0.0)
            reached = max(reached, end)
    return paused


#: The phase_* records written when a phase ends: the figure table's PHASE_TOTALS.
_END_NAMES = tuple(total.record for total in PHASE_TOTALS)


def _phase_ends(records: pd.DataFrame) -> pd.DataFrame:
    """One row per ended phase per rank (rank, phase, kind, ordinal, end_t and its totals)."""
    ends = _wide(records, _END_NAMES, ["rank", "phase", "t", "kind"]).rename(
        columns={"t": "end_t"} | {total.record: total.name for total in PHASE_TOTALS}
    )
    ends = ends.sort_values(["rank", "end_t"], kind="stable").reset_index(drop=True)
    ends["ordinal"] = ends.groupby("rank").cumcount()
    return ends


def _phase_kinds(run: RunData, table: pd.DataFrame) -> list[str | None]:
    """Each phase's kind: by position from summary.json's phases (every rank runs the same
    phases in the same order), else the phase name when it names a kind."""
    listed = (run.summary or {}).get("phases") or []
    kinds: list[str | None] = []
    position: dict[int, int] = {}
    for rank, name in zip(table["rank"], table["phase"], strict=True):
        at = position.get(rank, 0)
        position[rank] = at + 1
        if at < len(listed) and listed[at].get("name") == name:
            kinds.append(listed[at].get("kind"))
        else:
            kinds.append(name if name in PHASE_KINDS else None)
    return kinds


def step_table(run: RunData, phases: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per finished step of ``run``: rank, phase, kind, index (of the phase instance,
    as in :func:`phase_table`), step, start_t and t (start and end, s since run start),
    step_time, io_time, compute_time (s), samples."""
    if phases is None:
        phases = phase_table(run)
    steps = run.steps
    keys = phases[["rank", "ordinal", "kind", "index"]]
    merged = steps.merge(keys, on=["rank", "ordinal"], how="left")
    merged["start_t"] = merged["t"] - merged["step_time"]
    columns = ["rank", "phase", "kind", "index", "step", "start_t", "t", *STEP_NAMES]
    return merged[columns].sort_values(["rank", "t"], kind="stable").reset_index(drop=True)


def row_dicts(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The rows of ``frame`` as dicts, column -> value."""
    return [{str(k): v for k, v in row.items()} for row in frame.to_dict(orient="records")]


def _wide(records: pd.DataFrame, names: tuple[str, ...], keys: list[str]) -> pd.DataFrame:
    """The records named ``names``, one row per ``keys`` with a column per name."""
    import pandas as pd

    rows = records[records["name"].isin(names)]
    if rows.empty:
        return pd.DataFrame({column: pd.Series(dtype=float) for column in [*keys, *names]})
    wide = (
        rows.groupby([*keys, "name"], dropna=False)["value"]
        .first()
        .unstack("name")
        .reindex(columns=list(names))
        .reset_index()
    )
    wide.columns.name = None
    return wide
