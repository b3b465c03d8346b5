"""The figure table: every figure perfkit reports, declared once.

:data:`FIGURES` holds one :class:`Figure` per key of the summary (``summary.json``): its unit,
how it combines phases and ranks, whether :meth:`perfkit.Run.log` refuses the name
(``reserved``), which way is better (the repeats' regressions), the report tables that show
it, and - for a per-phase total - the ``phase_*`` record a Run writes when the phase ends and
the MLPerf keys written from it. ``{kind}`` in a key stands for each phase kind
(``train_wall_s``, ``val_wall_s``, ...).

Every layer that names a figure reads this table: the Run's phase records, the record names
(:mod:`perfkit.records`), the JSON Schema and docs/records.md (a test holds them to it),
analysis's phase table and the rebuild of a killed run, the seed tables and ``compare``, the
repeats and the MLPerf log. The formulas are :mod:`perfkit.summary`'s.

Adding a figure: one entry here plus its formula in :mod:`perfkit.summary` (a serving figure:
in :data:`SERVING_FIGURES`, its formula in :mod:`perfkit.serving`); a new per-phase
total (an entry with a ``record``) also needs its field in ``summary.PhaseTotals`` and its
count in :class:`perfkit.Phase`. This module imports nothing: every layer may read it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

#: The kinds of phase ("train", "val", "infer"), in the summary's order.
PHASE_KINDS = ("train", "val", "infer")
#: Step wall-time percentiles reported per phase and per kind.
PERCENTILES = (50, 90, 99)
#: Summary names of each phase kind's (whole, core) throughput, as the seeds name them.
THROUGHPUT_NAMES = MappingProxyType(
    {
        "train": ("p_train", "p_core"),
        "val": ("p_val_whole", "p_val_core"),
        "infer": ("p_infer_whole", "p_infer_core"),
    }
)
#: Core throughputs MFU is taken from, first present wins.
MFU_THROUGHPUTS = ("p_core", "p_infer_core", "p_val_core")
#: Summary names of each phase kind's (whole, core) token throughput, as p_* are named.
TOKEN_THROUGHPUT_NAMES = MappingProxyType(
    {
        "train": ("tps_train", "tps_core"),
        "val": ("tps_val_whole", "tps_val_core"),
        "infer": ("tps_infer_whole", "tps_infer_core"),
    }
)
#: Token throughputs MFU per token is taken from, first present wins: training's per step wall
#: time (FlagPerf's chip_tps, nanoGPT's and torchtitan's per-iteration time), else the core
#: rate of inference or validation (FlagPerf's inference MFU).
TOKEN_MFU_THROUGHPUTS = ("tps_train", "tps_infer_core", "tps_val_core")
#: The serving latencies (perfkit.serving), each reported with the statistics of
#: :data:`STATISTICS`.
LATENCIES = ("ttft_s", "tpot_s", "itl_s", "e2el_s")
STATISTICS = ("mean", *(f"p{q}" for q in PERCENTILES))
#: The service-level objectives goodput may take (seconds; a request meets one when its value
#: is at most the objective, as vLLM's ``--goodput``).
SLO_KEYS = ("ttft_s", "tpot_s", "e2el_s")

#: How a figure combines the phases: "sum" (the phases of its kind added), "window" (the
#: train..val window of p_whole), "steps" (over the phases' steps: percentiles), "ratio" (of
#: other figures), "run" (not from phases: the run, the probes, set_flops, the records).
PHASE_RULES = ("sum", "window", "steps", "ratio", "run")
#: How a figure combines the ranks: "sum" (every rank's), "max" (the largest rank's: the
#: slowest rank's seconds, the most steps any rank took - the ranks step together), "ratio"
#: (of combined figures: global samples over the slowest rank's seconds), "spread" (min / max
#: / std of the ranks' values), "rank 0" (the reporting rank's), "device max" (the highest
#: device of every node), "run" (one value for the run).
RANK_RULES = ("sum", "max", "ratio", "spread", "rank 0", "device max", "run")
#: When a phase writes a per-phase total's record: "always", "measured" (only with a value:
#: an energy counter was read), "warmup" (only when the phase ran warm-up steps).
WRITTEN_WHEN = ("always", "measured", "warmup")
#: The seed report tables a figure can be a column of (perfkit.analysis.seed_tables); "llm":
#: FlagPerf's LLM training table (runs whose train phases counted tokens).
REPORTS = ("train", "infer", "none", "llm")


@dataclass(frozen=True)
class Figure:
    """One key of the summary; with a ``record``, also a per-phase total."""

    #: The summary key; ``{kind}`` stands for each of :data:`PHASE_KINDS`.
    key: str
    #: Base unit: s, 1/s, samples, steps, tokens, tokens/s, requests, J, J/sample, B, FLOP,
    #: FLOP/s, "fraction", "text" (words or a formatted value), "list" or "object".
    unit: str
    over_phases: str  # :data:`PHASE_RULES`
    over_ranks: str  # :data:`RANK_RULES`
    about: str
    #: Whether run.log refuses the name (a logged value would replace perfkit's own).
    reserved: bool = True
    #: +1 when higher is better, -1 when lower is, None for neither (repeats' regressions).
    better: int | None = None
    #: The seed report tables showing it as a column (:data:`REPORTS`).
    report: tuple[str, ...] = ()
    #: A per-phase total: the record a phase writes when it ends (``phase_wall``); "" for
    #: the other figures.
    record: str = ""
    #: A per-phase total's type (int or float): how its record is read back.
    type: type = float
    #: When a phase writes the record (:data:`WRITTEN_WHEN`); read back as None
    #: ("measured") or 0 when it did not.
    written: str = "always"
    #: MLPerf keys written from a per-phase total: {phase kind: key}, the first phase's value.
    mllog: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        assert self.over_phases in PHASE_RULES and self.over_ranks in RANK_RULES, self
        assert set(self.report) <= set(REPORTS) and self.written in WRITTEN_WHEN, self

    @property
    def name(self) -> str:
        """A per-phase total's name: its field of PhaseTotals, its column of the phase table
        and its key in the summary's ``phases`` (the key without ``{kind}_``)."""
        return self.key.removeprefix("{kind}_")

    def summary_keys(self) -> tuple[str, ...]:
        """The summary keys of this figure: one, or one per phase kind."""
        if "{kind}" in self.key:
            return tuple(self.key.format(kind=kind) for kind in PHASE_KINDS)
        return (self.key,)

    def is_written(self, value: float | None, warmup_steps: int) -> bool:
        """Whether a phase that measured ``value`` after ``warmup_steps`` warm-up steps writes
        this total's record."""
        if self.written == "measured":
            return value is not None
        return self.written == "always" or warmup_steps > 0


def _throughputs() -> Iterator[Figure]:
    reports = {"train": ("train",), "val": ("infer",), "infer": ("infer",)}
    for kind, names in THROUGHPUT_NAMES.items():
        for name, rate in zip(names, ("wall", "compute"), strict=True):
            about = f"{kind} samples / {kind} {rate} seconds"
            yield Figure(name, "1/s", "ratio", "ratio", about, better=1, report=reports[kind])
    for names in THROUGHPUT_NAMES.values():
        for name in names:
            about = f"{name} / the number of ranks (distributed runs only)"
            yield Figure(f"{name}_per_device", "1/s", "ratio", "ratio", about, better=1)


def _token_throughputs() -> Iterator[Figure]:
    for kind, names in TOKEN_THROUGHPUT_NAMES.items():
        for name, rate in zip(names, ("wall", "compute"), strict=True):
            about = f"{kind} tokens / {kind} {rate} seconds"
            yield Figure(name, "tokens/s", "ratio", "ratio", about, better=1)
            yield Figure(
                f"{name}_per_device", "tokens/s", "ratio", "ratio",
                f"{name} / the number of ranks (FlagPerf's token/p/s; also with one rank)",
                better=1, report=("llm",) if kind == "train" else (),
            )  # fmt: skip


def _spreads() -> Iterator[Figure]:
    for total in ("wall_s", "compute_s"):
        for stat, words in (("min", "least"), ("max", "most"), ("std", "population std dev")):
            about = f"the {words} of the ranks' {{kind}}_{total} (distributed runs only)"
            yield Figure(f"{{kind}}_{total}_{stat}", "s", "sum", "spread", about)


_LATENCY_MEANINGS = {
    "ttft_s": "time to first token: first token time - send time",
    "tpot_s": "time per output token: (e2el - ttft) / (output tokens - 1), 2+ token requests",
    "itl_s": "inter-token latency: gaps between successive token arrivals, pooled",
    "e2el_s": "end-to-end latency: end time - send time",
}

# fmt: off
#: The LLM serving figures (perfkit.serving's formulas), in the order serving_summary writes
#: them: rank 0's requests over the whole run.
SERVING_FIGURES: tuple[Figure, ...] = tuple(
    Figure(key, unit, "run", "rank 0", about, better=better)
    for key, unit, better, about in (
        ("requests_completed", "requests", None, "requests that completed"),
        ("requests_failed", "requests", None, "requests that failed (not in any other figure)"),
        ("prompt_tokens", "tokens", None, "prompt tokens of the completed requests"),
        ("output_tokens", "tokens", None, "output tokens of the completed requests"),
        ("serving_duration_s", "s", None, "first send to last end, every request"),
        *(
            (f"{latency}_{stat}", "s", -1, f"{stat} of {_LATENCY_MEANINGS[latency]}")
            for latency in LATENCIES
            for stat in STATISTICS
        ),
        ("requests_per_s", "1/s", 1, "completed requests / serving_duration_s"),
        ("output_tps", "tokens/s", 1, "output tokens / serving_duration_s"),
        ("total_tps", "tokens/s", 1, "(prompt + output tokens) / serving_duration_s"),
        ("requests_good", "requests", None, "completed requests meeting every SLO"),
        ("goodput_requests_per_s", "1/s", 1, "requests_good / serving_duration_s"),
        *((f"slo_{key}", "s", None, f"the {key[:-2]} objective goodput used") for key in SLO_KEYS),
    )
)

#: Every figure. The per-phase totals (those with a record) come in the order a phase writes
#: their records; the seed tables show theirs in this order (:func:`report_columns`).
FIGURES: tuple[Figure, ...] = (
    Figure(
        "e2e_time", "s", "run", "rank 0",
        "run start (or process start, e2e_from='process') to run end", better=-1,
        report=("train", "infer", "none", "llm"),
    ),
    Figure(
        "p_whole", "1/s", "window", "ratio",
        "train samples, warm-up included / first train start to last train or val end",
        better=1, report=("train",),
    ),
    # the per-phase totals
    Figure(
        "{kind}_wall_s", "s", "sum", "max", "wall seconds, warm-up steps and pauses aside",
        better=-1, record="phase_wall",
    ),
    Figure(
        "{kind}_io_s", "s", "sum", "max", "IO seconds: waits in next() and io() windows",
        better=-1, record="phase_io",
    ),
    Figure(
        "{kind}_compute_s", "s", "sum", "max",
        "compute seconds: step bodies or their compute() windows", better=-1,
        record="phase_compute",
    ),
    Figure(
        "{kind}_samples", "samples", "sum", "sum", "samples, warm-up steps aside",
        record="phase_samples", type=int,
        mllog={"train": "train_samples", "val": "eval_samples"},
    ),
    Figure(
        "{kind}_steps", "steps", "sum", "max", "finished steps, warm-up steps aside",
        record="phase_steps", type=int,
    ),
    Figure(
        "{kind}_energy_j", "J", "sum", "sum", "device energy (node-wide probes)",
        record="phase_energy", written="measured",
    ),
    Figure(
        "{kind}_warmup_steps", "steps", "sum", "max",
        "warm-up steps (run.phase(kind, warmup_steps=N))", reserved=False,
        record="phase_warmup_steps", type=int, written="warmup",
    ),
    Figure(
        "{kind}_warmup_samples", "samples", "sum", "sum", "samples of the warm-up steps",
        reserved=False, record="phase_warmup_samples", type=int, written="warmup",
    ),
    Figure(
        "{kind}_warmup_s", "s", "sum", "max", "the sum of the warm-up steps' wall times",
        reserved=False, better=-1, record="phase_warmup", written="warmup",
    ),
    Figure(
        "{kind}_tokens", "tokens", "sum", "sum",
        "tokens, warm-up steps aside (iterate(tokens=): a dict batch's attention_mask or "
        "input_ids, an int or a callable); written where the phase counted some",
        record="phase_tokens", type=int, written="measured",
    ),
    Figure(
        "{kind}_warmup_tokens", "tokens", "sum", "sum", "tokens of the warm-up steps",
        reserved=False, record="phase_warmup_tokens", type=int, written="measured",
    ),
    # derived per kind
    *_throughputs(),
    Figure(
        "tps_whole", "tokens/s", "window", "ratio",
        "train tokens, warm-up included / first train start to last train or val end",
        better=1, report=("llm",),
    ),
    *_token_throughputs(),
    Figure(
        "{kind}_tokens_from", "text", "run", "rank 0",
        "how the tokens were counted: attention_mask (real tokens), input_ids (padded), "
        "given, callable",
    ),
    Figure("{kind}_io_fraction", "fraction", "ratio", "ratio", "IO seconds / wall seconds"),
    Figure("{kind}_energy_per_sample_j", "J/sample", "ratio", "ratio", "energy / samples"),
    *_spreads(),
    *(
        Figure(
            f"{{kind}}_step_time_p{q}_s", "s", "steps", "rank 0",
            f"the {q}th percentile of the step wall times, warm-up aside", better=-1,
        )
        for q in PERCENTILES
    ),
    Figure(
        "MFU", "fraction", "ratio", "ratio",
        "flops_per_sample x core throughput per device / peak_flops; with set_token_flops "
        "flops_per_token x mfu_throughput per device / peak_flops", better=1,
        report=("train", "infer", "llm"),
    ),
    Figure(
        "mem", "text", "run", "device max", "peak used / total memory, GiB ('18.7/32.0')",
        report=("train", "infer", "none", "llm"),
    ),
    Figure("mem_source", "text", "run", "device max", "what mem measures", reserved=False),
    # the run's own values, not from phases: (key, unit, over ranks, meaning)
    *(
        Figure(key, unit, "run", ranks, about)
        for key, unit, ranks, about in (
            ("run_id", "text", "run", "the run directory's name"),
            ("name", "text", "run", "the run's name"),
            ("status", "text", "run", "ok, failed, unfinished (or partial: rebuilt)"),
            ("error", "text", "run", "the exception that failed the run"),
            ("flush_error", "text", "run", "the first failure writing the records"),
            ("faults", "list", "run", "what went wrong with the run's own IO, each once"),
            ("mfu_note", "text", "run", "why MFU is missing"),
            (
                "mfu_convention", "text", "run",
                "FLOPs per multiply-add MFU counts; per token: flagperf-6n, palm, megatron or "
                "counted",
            ),
            ("mfu_throughput", "text", "run", "the token throughput MFU per token used"),
            ("flops_per_token", "FLOP", "run", "set_token_flops' work per token"),
            ("peak_flops", "FLOP/s", "run", "the peak MFU divides by"),
            ("peak_dtype", "text", "run", "the dtype of peak_flops"),
            ("peak_source", "text", "run", "where peak_flops comes from, in words"),
            ("mfu_peak_source", "text", "run", "datasheet, flagperf-config, measured or user"),
            ("flops_per_sample", "FLOP", "run", "set_flops' work per sample"),
            ("mem_per_device", "object", "device max", "mem of each device"),
            ("mem_peak_bytes", "B", "device max", "peak used memory of mem's device"),
            ("mem_total_bytes", "B", "device max", "the memory of mem's device"),
            ("allocator_peak_allocated_bytes", "B", "device max", "torch allocator peak allocated"),
            ("allocator_peak_reserved_bytes", "B", "device max", "torch allocator peak reserved"),
            ("probe_errors", "list", "run", "probes that failed and were disabled"),
            ("phases", "list", "rank 0", "each phase's totals and rates"),
            ("meta", "object", "run", "the run's metadata (meta.json)"),
            ("nonfinite", "list", "run", "paths of NaN / inf values written as null"),
        )
    ),
    *SERVING_FIGURES,
)
# fmt: on

#: The per-phase totals: the figures a phase writes as records, in their order.
PHASE_TOTALS: tuple[Figure, ...] = tuple(f for f in FIGURES if f.record)
#: {summary key: its figure}, every kind spelled out.
FIGURE_OF: Mapping[str, Figure] = MappingProxyType(
    {key: figure for figure in FIGURES for key in figure.summary_keys()}
)
#: Names the summary's own fields use: :meth:`perfkit.Run.log` refuses them.
RESERVED_KEYS = frozenset(key for key, figure in FIGURE_OF.items() if figure.reserved)
#: Names of the records a phase writes: ``phase_start`` when it starts (t = value = its
#: start), the per-phase totals' when it ends (t = its end).
PHASE_RECORDS = ("phase_start", *(total.record for total in PHASE_TOTALS))


def report_columns(report: str) -> tuple[str, ...]:
    """The figures shown as columns of the seed table ``report`` ("train", "infer", "none"),
    in table order."""
    return tuple(key for key, figure in FIGURE_OF.items() if report in figure.report)
