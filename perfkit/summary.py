"""The summary: per-phase figures -> the summary dict (pure; no clock, no files, no devices).

This is the one place the seed metrics' formulas are; every figure's name, unit, rules over
phases and ranks and reports are declared in :mod:`perfkit.figures`. :class:`perfkit.Run` calls
:func:`build_summary` with its live figures when it ends; the analysis layer's
``rebuild_summary`` calls it with the same figures read back from a run's records.
Units: seconds, samples, samples/s, joules, bytes. The metric names and formulas are FlagPerf's:

========== =================================================================================
metric     definition
========== =================================================================================
e2e_time   run start (or process start, ``e2e_from="process"``) to run end, seconds
p_whole    train samples, warm-up included / (first train phase start to end of the last
           train/val phase, warm-up included), 1/s
p_train    train samples / sum of train phase wall times (evaluation and warm-up excluded), 1/s
p_core     train samples / sum of train compute windows (IO and warm-up excluded), 1/s
p_val_*    val samples / val wall time (whole) or val compute time (core), 1/s
p_infer_*  infer samples / infer wall time (whole) or infer compute time (core), 1/s
========== =================================================================================

Warm-up (``run.phase(kind, warmup_steps=N)``): a phase's first N steps are reported apart
(``<kind>_warmup_steps``, ``<kind>_warmup_samples``, ``<kind>_warmup_s``: the sum of their step
wall times) and left out of every other figure of the phase: its samples, steps, wall / io /
compute seconds, throughputs and step-time percentiles. p_whole keeps them: it is the job's
end-to-end rate over FlagPerf's TRAIN_START..END window, which the warm-up is part of, so its
samples and its window both include the warm-up. With N = 0 (the default) every definition is
FlagPerf's.

Over ranks: global samples over the slowest rank's seconds (FlagPerf uses rank 0's; the slowest
rank bounds the job); steps per rank (the most any rank took: the ranks step together, so a
sum would count each step once per rank). Step-time percentiles are the reporting rank's
(rank 0's) steps.

Names: :class:`PhaseTotals` is one rank's totals of one phase (a field per
:data:`perfkit.figures.PHASE_TOTALS` entry); :class:`PhaseOverRanks` one phase as the summary
takes it (every rank's PhaseTotals, the reporting rank's step times); :func:`phase_entry` its
entry of the summary's ``phases``. Analysis's ``phase_table`` is the phases of a run read back
as a DataFrame, and its ``rebuilt_phases`` the PhaseOverRanks made from it.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from perfkit.figures import (
    MFU_THROUGHPUTS,
    PERCENTILES,
    PHASE_KINDS,
    PHASE_TOTALS,
    THROUGHPUT_NAMES,
    TOKEN_MFU_THROUGHPUTS,
    TOKEN_THROUGHPUT_NAMES,
    Figure,
)

if TYPE_CHECKING:
    from perfkit.probes.power import DevicePower


class PhaseTotals(NamedTuple):
    """One rank's totals for one phase (seconds on that rank's clock since its run start,
    samples, steps): its kind, start and end, then one field per
    :data:`perfkit.figures.PHASE_TOTALS` entry (a test holds the two together)."""

    kind: str
    samples: int
    steps: int
    wall_s: float
    io_s: float
    compute_s: float
    start_t: float
    end_t: float
    energy_j: float | None = None  # device energy over the phase (node-wide probes), joules
    # The phase's first steps kept apart (run.phase(kind, warmup_steps=N)): how many ran, their
    # samples and the sum of their step wall times (s); the fields above leave them out.
    warmup_steps: int = 0
    warmup_samples: int = 0
    warmup_s: float = 0.0
    # Tokens of the steps (warm-up aside), and of the warm-up steps; None where the phase
    # counted none (its batches held no token ids; no warm-up).
    tokens: int | None = None
    warmup_tokens: int | None = None


@dataclass(frozen=True)
class PhaseOverRanks:
    """One phase over every rank, as the summary takes it: its name, its index among the phases
    of its kind (from 0), every rank's totals, the reporting rank's step wall times (seconds)
    and sampled devices."""

    name: str
    index: int
    rank: int
    by_rank: Mapping[int, PhaseTotals]
    step_walls: Sequence[float]
    #: The reporting rank's sampled devices over the phase (power, temperature, energy).
    devices: Sequence[DevicePower] = ()
    #: How the reporting rank counted tokens (perfkit.Phase.tokens_from).
    tokens_from: str = "none"

    @property
    def totals(self) -> PhaseTotals:
        """The reporting rank's totals."""
        return self.by_rank[self.rank]


def percentiles(values: Sequence[float]) -> dict[int, float]:
    """{50: p50, 90: p90, 99: p99} of ``values`` (numpy's linear interpolation); {} when empty."""
    if len(values) == 0:
        return {}
    import numpy as np

    data = np.asarray(values, dtype=np.float64)
    return {q: float(v) for q, v in zip(PERCENTILES, np.percentile(data, PERCENTILES), strict=True)}


def rate_fields(
    prefix: str, samples: int, wall: float, io: float, compute: float
) -> dict[str, float]:
    """io_fraction (IO seconds / wall seconds) where the wall time is positive, and
    throughputs (samples/s) only where there were samples and the denominator is positive: a
    phase without samples (an empty loader) has no throughput, not 0."""
    fields: dict[str, float] = {}
    if wall > 0:
        fields[f"{prefix}io_fraction"] = io / wall
        if samples > 0:
            fields[f"{prefix}throughput_whole"] = samples / wall
    if compute > 0 and samples > 0:
        fields[f"{prefix}throughput_core"] = samples / compute
    return fields


def phase_entry(phase: PhaseOverRanks) -> dict[str, Any]:
    """One phase's entry of the summary's ``phases``: the reporting rank's samples, steps, wall /
    io / compute seconds, throughputs, energy and step-time percentiles."""
    f = phase.totals
    stats: dict[str, Any] = {
        "name": phase.name,
        "kind": f.kind,
        "index": phase.index,
        "start_t": f.start_t,
        "end_t": f.end_t,
        "samples": f.samples,
        "steps": f.steps,
        "wall_s": f.wall_s,
        "io_s": f.io_s,
        "compute_s": f.compute_s,
    }
    if f.warmup_steps:
        stats["warmup_steps"] = f.warmup_steps
        stats["warmup_samples"] = f.warmup_samples
        stats["warmup_s"] = f.warmup_s
    if f.tokens is not None:
        stats["tokens"] = f.tokens
        stats["tokens_from"] = phase.tokens_from
        if f.warmup_steps and f.warmup_tokens is not None:
            stats["warmup_tokens"] = f.warmup_tokens
    stats.update(rate_fields("", f.samples, f.wall_s, f.io_s, f.compute_s))
    if f.energy_j is not None:
        stats["energy_j"] = f.energy_j
        if f.samples:
            stats["energy_per_sample_j"] = f.energy_j / f.samples
    for q, value in percentiles(phase.step_walls).items():
        stats[f"step_time_p{q}_s"] = value
    if phase.devices:
        stats["devices"] = [dataclasses.asdict(power) for power in phase.devices]
    return stats


def _by_rank(phases: Sequence[PhaseOverRanks]) -> dict[int, list[PhaseTotals]]:
    ranks: dict[int, list[PhaseTotals]] = {}
    for phase in phases:
        for rank, figures in phase.by_rank.items():
            ranks.setdefault(rank, []).append(figures)
    return ranks


def _combined(total: Figure, ranks: Mapping[int, Sequence[PhaseTotals]]) -> Any:
    """``total`` of a kind's phases: summed over each rank's phases, then over the ranks as
    the table says (every rank's, or the largest rank's); None when no phase measured it."""
    add: Any = math.fsum if total.type is float else sum
    per_rank = [
        [v for f in figures if (v := getattr(f, total.name)) is not None]
        for figures in ranks.values()
    ]
    if not any(per_rank):
        return None if total.written == "measured" else add([])
    if total.over_ranks == "sum":
        return add(v for values in per_rank for v in values)
    return max(add(values) for values in per_rank)


def kind_metrics(kind: str, phases: Sequence[PhaseOverRanks]) -> dict[str, Any]:
    """Totals, throughputs, energy, spread over ranks and step-time percentiles of the phases
    of one kind; {} when there are none."""
    if not phases:
        return {}
    ranks = _by_rank(phases)
    totals = {total.name: _combined(total, ranks) for total in PHASE_TOTALS}
    names = ("samples", "steps", "wall_s", "io_s", "compute_s")
    out: dict[str, Any] = {f"{kind}_{name}": totals[name] for name in names}
    samples, wall, io, compute = (totals[n] for n in ("samples", "wall_s", "io_s", "compute_s"))
    rates = rate_fields(f"{kind}_", samples, wall, io, compute)
    for rate, name in zip(("whole", "core"), THROUGHPUT_NAMES[kind], strict=True):
        value = rates.pop(f"{kind}_throughput_{rate}", None)
        if value is not None:
            out[name] = value
            if len(ranks) > 1:
                out[f"{name}_per_device"] = value / len(ranks)
    out.update(rates)
    out.update(_token_fields(kind, totals, len(ranks), phases))
    if totals["warmup_steps"]:  # the totals a phase writes only after warm-up steps
        out.update(
            {f"{kind}_{t.name}": totals[t.name] for t in PHASE_TOTALS if t.written == "warmup"}
        )
    if totals["energy_j"] is not None and samples:
        out[f"{kind}_energy_j"] = totals["energy_j"]
        out[f"{kind}_energy_per_sample_j"] = totals["energy_j"] / samples
    if len(ranks) > 1:
        for name in ("wall_s", "compute_s"):
            values = [math.fsum(getattr(f, name) for f in figures) for figures in ranks.values()]
            out[f"{kind}_{name}_min"] = min(values)
            out[f"{kind}_{name}_max"] = max(values)
            out[f"{kind}_{name}_std"] = statistics.pstdev(values)
    walls = [wall for phase in phases for wall in phase.step_walls]
    for q, value in percentiles(walls).items():
        out[f"{kind}_step_time_p{q}_s"] = value
    return out


def _token_fields(
    kind: str, totals: Mapping[str, Any], world: int, phases: Sequence[PhaseOverRanks]
) -> dict[str, Any]:
    """<kind>_tokens, _warmup_tokens (after warm-up steps), _tokens_from (the reporting rank's
    phases' ways, joined), and the token throughputs: tokens over the wall and compute seconds
    (as p_*), and per device (/ the number of ranks: FlagPerf's token/p/s, also with one
    rank); {} where no phase counted tokens."""
    tokens = totals["tokens"]
    if tokens is None:
        return {}
    out: dict[str, Any] = {f"{kind}_tokens": tokens}
    if totals["warmup_steps"] and totals["warmup_tokens"] is not None:
        out[f"{kind}_warmup_tokens"] = totals["warmup_tokens"]
    ways = sorted({p.tokens_from for p in phases if p.tokens_from != "none"})
    out[f"{kind}_tokens_from"] = ",".join(ways) or "none"
    seconds = (totals["wall_s"], totals["compute_s"])
    for name, s in zip(TOKEN_THROUGHPUT_NAMES[kind], seconds, strict=True):
        if s > 0 and tokens > 0:
            out[name] = tokens / s
            out[f"{name}_per_device"] = tokens / s / world
    return out


def whole_window_s(phases: Sequence[PhaseOverRanks]) -> float | None:
    """Seconds from the first train phase's start to the end of the last train/val phase after
    it, on the slowest rank (each rank's window on its own clock); None without one."""
    windows = []
    for figures in _by_rank([p for p in phases if p.totals.kind in ("train", "val")]).values():
        train_starts = [f.start_t for f in figures if f.kind == "train"]
        if not train_starts:
            continue
        first = min(train_starts)
        windows.append(max(f.end_t for f in figures if f.start_t >= first) - first)
    window = max(windows, default=0.0)
    return window if window > 0 else None


def phase_metrics(phases: Sequence[PhaseOverRanks]) -> dict[str, Any]:
    """Every kind's :func:`kind_metrics`, then p_whole (train samples, warm-up included, over
    :func:`whole_window_s`)."""
    out: dict[str, Any] = {}
    for kind in PHASE_KINDS:
        out.update(kind_metrics(kind, [p for p in phases if p.totals.kind == kind]))
    window = whole_window_s(phases)
    samples = out.get("train_samples", 0) + out.get("train_warmup_samples", 0)
    if window is not None and samples:
        out["p_whole"] = samples / window
    tokens = out.get("train_tokens", 0) + out.get("train_warmup_tokens", 0)
    if window is not None and tokens:
        out["tps_whole"] = tokens / window  # as p_whole, in tokens
    return out


def valid_measured_peak(measured: Mapping[str, Any]) -> bool:
    """Whether a meta.json ``measured_peak`` has what MFU needs (a positive finite ``flops``,
    a ``dtype`` and a ``method``)."""
    value = measured.get("flops")
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
        and isinstance(measured.get("dtype"), str)
        and isinstance(measured.get("method"), str)
    )


#: How a Run picks the peak MFU divides by (``Run(peak_flops=...)``; a number is the user's).
PEAK_MODES = ("auto", "table", "measured")


def needs_measured_peak(flops: Mapping[str, Any] | None, device_name: str) -> bool:
    """Whether a Run with these FLOP settings must measure its peak (not done yet): mode
    "measured", or "auto" on a device and dtype the table has no figure for."""
    if flops is None or flops.get("peak_flops") is not None or flops.get("measured_peak"):
        return False
    mode = flops.get("peak", "auto")
    if mode == "measured":
        return True
    from perfkit.flops.peaks import lookup

    return mode == "auto" and isinstance(
        lookup(device_name, flops["dtype"], tf32=flops["tf32"]), str
    )


def mfu_fields(
    metrics: Mapping[str, Any],
    flops: Mapping[str, Any] | None,
    world_size: int,
    device_name: str,
) -> dict[str, Any]:
    """MFU and its inputs from the core throughput per device (see
    :func:`perfkit.flops.mfu_summary`); ``flops`` is what ``Run.set_flops`` took (None: no
    MFU), with the measured peak (``measured_peak``) once the Run has measured one."""
    if flops is None:
        return {}
    if "flops_per_token" in flops:
        return _token_mfu_fields(metrics, flops, world_size, device_name)
    core = next((metrics[k] for k in MFU_THROUGHPUTS if k in metrics), None)
    if core is None:
        return {"mfu_note": "MFU not computed: no compute time was measured"}
    from perfkit.flops import mfu_summary

    measured = flops.get("measured_peak")
    if not (isinstance(measured, Mapping) and valid_measured_peak(measured)):
        measured = None  # none, or a malformed meta.json: as if not measured
    mode = flops.get("peak", "auto")
    why = flops.get("peak_note") or "the run did not measure it"
    # measured mode, or auto where the table has no figure and the run said why it has no
    # measured one (failed, another rank): a note, not the table's warning
    said_why = bool(flops.get("peak_note")) and needs_measured_peak(flops, device_name)
    if flops.get("peak_flops") is None and measured is None and (mode == "measured" or said_why):
        return {"mfu_note": f"MFU not computed: no measured peak ({why})"}
    running = metrics.get("status") == "running"
    if measured is None and running and needs_measured_peak(flops, device_name):
        # a live summary (a trainer callback's figures) before the run measures its peak
        return {"mfu_note": "MFU not computed yet: the run measures the peak at its end"}
    return mfu_summary(
        flops["flops_per_sample"],
        core / world_size,
        device_name,
        flops["dtype"],
        peak_flops=flops["peak_flops"],
        convention=flops["convention"],
        tf32=flops["tf32"],
        measured=measured if mode != "table" else None,
    )


def _token_mfu_fields(
    metrics: Mapping[str, Any], flops: Mapping[str, Any], world_size: int, device_name: str
) -> dict[str, Any]:
    """MFU per token (``Run.set_token_flops``): flops_per_token x the first token throughput
    of :data:`perfkit.figures.TOKEN_MFU_THROUGHPUTS` per device / the peak, with the token
    convention named; the peak as for samples (:func:`mfu_fields`)."""
    name = next((k for k in TOKEN_MFU_THROUGHPUTS if k in metrics), None)
    if name is None:
        return {"mfu_note": "MFU not computed: no tokens were counted (iterate(tokens=))"}
    from perfkit.flops import TOKEN_CONVENTIONS

    per_sample = {k: v for k, v in flops.items() if k != "flops_per_token"}
    per_sample["flops_per_sample"] = flops["flops_per_token"]  # a token as the sample
    rate = {"p_core": metrics[name], "status": metrics.get("status")}
    fields = mfu_fields(rate, per_sample, world_size, device_name)
    if "MFU" not in fields:
        return fields
    fields.pop("flops_per_sample")
    fields["mfu_convention"] = TOKEN_CONVENTIONS[flops["token_convention"]]
    fields["mfu_throughput"] = f"{name}_per_device"
    fields["flops_per_token"] = flops["flops_per_token"]
    return fields


def build_summary(
    *,
    run_id: str,
    name: str,
    status: str,
    e2e_time: float | None,
    phases: Sequence[PhaseOverRanks],
    meta: Mapping[str, Any],
    memory: Mapping[str, Any] | None = None,
    flops: Mapping[str, Any] | None = None,
    logged: Mapping[str, float] | None = None,
    probe_errors: Sequence[str] = (),
    error: str | None = None,
    flush_error: str | None = None,
    faults: Sequence[str] = (),
    serving: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The summary dict, keys in this order: run_id, name, status, e2e_time (when known), error and
    flush_error (when set), the phase metrics, the memory fields (``memory``), probe_errors
    (when any), MFU fields, the serving figures (``serving``: the run's requests'
    :func:`perfkit.serving.serving_summary`), the logged values, ``phases``
    (:func:`phase_entry` of each) and
    ``meta``, then ``nonfinite`` (when any): the paths of NaN / inf values written as null
    (a diverged loss, a tool's unparseable number). ``faults``: what went wrong with the run's
    own IO (a deleted run directory, a failed gather), each once. A metric without data is
    absent, never 0; the summary is always valid JSON."""
    summary: dict[str, Any] = {"run_id": run_id, "name": name, "status": status}
    if e2e_time is not None:
        summary["e2e_time"] = e2e_time
    if error is not None:
        summary["error"] = error
    if flush_error is not None:
        summary["flush_error"] = flush_error
    if faults:
        summary["faults"] = list(faults)
    summary.update(phase_metrics(phases))
    summary.update(memory or {})
    if probe_errors:
        summary["probe_errors"] = list(probe_errors)
    summary.update(
        mfu_fields(summary, flops, int(meta.get("world_size", 1)), meta.get("device_name", ""))
    )
    summary.update(serving or {})
    summary.update(logged or {})
    summary["phases"] = [phase_entry(p) for p in phases]
    summary["meta"] = dict(meta)
    nulled = null_nonfinite(summary)
    if nulled:
        summary["nonfinite"] = nulled
    return summary


def null_nonfinite(obj: Any, path: str = "") -> list[str]:
    """Replace every NaN / inf float inside ``obj`` (dicts and lists, in place) by None, so
    it is valid JSON; returns the paths of the values replaced (``"loss"``,
    ``"phases[0].io_fraction"``)."""
    found: list[str] = []
    items: Any = obj.items() if isinstance(obj, dict) else enumerate(obj)
    for key, value in list(items):
        where = f"{path}[{key}]" if isinstance(obj, list) else f"{path}.{key}".lstrip(".")
        if isinstance(value, float) and not math.isfinite(value):
            obj[key] = None
            found.append(where)
        elif isinstance(value, (dict, list)):
            found.extend(null_nonfinite(value, where))
    return found
