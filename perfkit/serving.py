"""LLM serving figures: per-request timings -> TTFT / TPOT / ITL / E2EL statistics, throughputs
and goodput (pure; no clock, no files). The one place these figures are defined: the live
:class:`perfkit.Run` and the analysis layer's rebuild of a killed run both call
:func:`serving_summary`. The definitions are vLLM's (``benchmarks/serve.py``,
``calculate_metrics``) and MLPerf loadgen's; units are seconds, tokens and 1/s.

============================ ===============================================================
figure                       definition
============================ ===============================================================
ttft_s                       first token time - send time, per completed request
tpot_s                       (e2el - ttft) / (output tokens - 1), per completed request with
                             at least 2 output tokens (one-token requests left out)
itl_s                        gaps between successive token arrivals of a request, pooled over
                             the completed requests
e2el_s                       end time - send time, per completed request
requests_per_s               completed requests / serving_duration_s
output_tps                   output tokens of the completed requests / serving_duration_s
total_tps                    (prompt + output tokens) of the completed requests /
                             serving_duration_s
goodput_requests_per_s       completed requests meeting every SLO / serving_duration_s
serving_duration_s           first send to last end, over every request (failed included)
============================ ===============================================================

Each latency has ``_mean``, ``_p50``, ``_p90`` and ``_p99`` (numpy's linear interpolation, as
vLLM's ``np.percentile``). A figure without data is absent, not 0 (vLLM prints 0).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from perfkit import checks
from perfkit.summary import PERCENTILES, percentiles

#: The latencies, each reported with the statistics of :data:`STATISTICS`.
LATENCIES = ("ttft_s", "tpot_s", "itl_s", "e2el_s")
STATISTICS = ("mean", *(f"p{q}" for q in PERCENTILES))
#: The service-level objectives goodput may take (seconds; a request meets one when its
#: value is at most the objective, as vLLM's ``--goodput``).
SLO_KEYS = ("ttft_s", "tpot_s", "e2el_s")
#: MLPerf Inference's llama2-70b server scenario latency constraints (TTFT 2 s, TPOT 200 ms).
DEFAULT_SLO: Mapping[str, float] = {"ttft_s": 2.0, "tpot_s": 0.2}


class ServingFigure(NamedTuple):
    """One serving figure: its summary name, unit, better direction (+1 higher is better,
    -1 lower, 0 neither) and meaning."""

    name: str
    unit: str
    better: int
    meaning: str


_MEANINGS = {
    "ttft_s": "time to first token: first token time - send time",
    "tpot_s": "time per output token: (e2el - ttft) / (output tokens - 1), 2+ token requests",
    "itl_s": "inter-token latency: gaps between successive token arrivals, pooled",
    "e2el_s": "end-to-end latency: end time - send time",
}

#: Every figure :func:`serving_summary` may write, in its order (the declaration the summary,
#: reports, compare's direction and the docs follow).
SERVING_FIGURES: tuple[ServingFigure, ...] = (
    ServingFigure("requests_completed", "requests", 0, "requests that completed"),
    ServingFigure(
        "requests_failed", "requests", 0, "requests that failed (not in any other figure)"
    ),
    ServingFigure("prompt_tokens", "tokens", 0, "prompt tokens of the completed requests"),
    ServingFigure("output_tokens", "tokens", 0, "output tokens of the completed requests"),
    ServingFigure("serving_duration_s", "s", 0, "first send to last end, every request"),
    *(
        ServingFigure(f"{latency}_{stat}", "s", -1, f"{stat} of {_MEANINGS[latency]}")
        for latency in LATENCIES
        for stat in STATISTICS
    ),
    ServingFigure("requests_per_s", "1/s", 1, "completed requests / serving_duration_s"),
    ServingFigure("output_tps", "tokens/s", 1, "output tokens / serving_duration_s"),
    ServingFigure("total_tps", "tokens/s", 1, "(prompt + output tokens) / serving_duration_s"),
    ServingFigure("requests_good", "requests", 0, "completed requests meeting every SLO"),
    ServingFigure("goodput_requests_per_s", "1/s", 1, "requests_good / serving_duration_s"),
    *(
        ServingFigure(f"slo_{key}", "s", 0, f"the {key[:-2]} objective goodput used")
        for key in SLO_KEYS
    ),
)
SERVING_NAMES = frozenset(figure.name for figure in SERVING_FIGURES)
_BETTER = {figure.name: figure.better for figure in SERVING_FIGURES}


def better(name: str) -> int | None:
    """The better direction of serving figure ``name`` (+1 higher, -1 lower, 0 neither); None
    when ``name`` is not a serving figure."""
    return _BETTER.get(name)


@dataclass(frozen=True)
class RequestTiming:
    """One request as the client saw it: seconds on the run's clock since its start, tokens.

    ``token_t``: the arrival time of each token or chunk of tokens (its gaps are the ITL; may be
    empty when only ``first_token_t`` is known); ``first_token_t`` None: no token arrived.
    ``prompt_tokens`` None: not known (no total_tps). ``error`` not None: the request failed.
    """

    send_t: float
    end_t: float
    first_token_t: float | None
    output_tokens: int
    prompt_tokens: int | None = None
    token_t: tuple[float, ...] = ()
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the request completed."""
        return self.error is None

    @property
    def ttft_s(self) -> float | None:
        """first_token_t - send_t; None without a first token."""
        return None if self.first_token_t is None else self.first_token_t - self.send_t

    @property
    def e2el_s(self) -> float:
        """end_t - send_t."""
        return self.end_t - self.send_t

    @property
    def tpot_s(self) -> float | None:
        """(e2el - ttft) / (output tokens - 1); None with fewer than 2 output tokens."""
        ttft = self.ttft_s
        if ttft is None or self.output_tokens < 2:
            return None
        return (self.e2el_s - ttft) / (self.output_tokens - 1)

    def itl_s(self) -> list[float]:
        """Gaps between successive token arrivals (s)."""
        return [b - a for a, b in itertools.pairwise(self.token_t)]


def check_slo(slo: Mapping[str, float] | None) -> dict[str, float]:
    """``slo`` as a dict of objectives in seconds (keys of :data:`SLO_KEYS`); None gives
    :data:`DEFAULT_SLO`, {} no goodput."""
    if slo is None:
        return dict(DEFAULT_SLO)
    expected = f"a mapping of {SLO_KEYS} to seconds, or None"
    if not isinstance(slo, Mapping):
        raise checks.wrong_type("slo", expected, slo)
    for key in slo:
        if key not in SLO_KEYS:
            raise checks.wrong_value("slo", expected, slo)
    return {key: checks.positive_number(f"slo[{key!r}]", value) for key, value in slo.items()}


def _stats(name: str, values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {}
    out = {f"{name}_mean": math.fsum(values) / len(values)}
    out.update({f"{name}_p{q}": value for q, value in percentiles(values).items()})
    return out


def meets(timing: RequestTiming, slo: Mapping[str, float]) -> bool:
    """Whether a completed request meets every objective of ``slo`` (value <= objective); a
    request with one output token has TPOT 0 here (vLLM's goodput), one without a first token
    misses a TTFT objective."""
    values = {"ttft_s": timing.ttft_s, "tpot_s": timing.tpot_s, "e2el_s": timing.e2el_s}
    if values["tpot_s"] is None and timing.first_token_t is not None:
        values["tpot_s"] = 0.0
    for key, objective in slo.items():
        value = values[key]
        if value is None or value > objective:
            return False
    return True


def serving_summary(
    requests: Sequence[RequestTiming], slo: Mapping[str, float] | None = None
) -> dict[str, Any]:
    """The serving figures of ``requests`` (see the module's table), in the order of
    :data:`SERVING_FIGURES`; {} without requests. ``slo``: objectives for goodput (None:
    :data:`DEFAULT_SLO`; {}: no goodput)."""
    if not requests:
        return {}
    objectives = check_slo(slo)
    done = [r for r in requests if r.ok]
    prompts = [r.prompt_tokens for r in done]
    output = sum(r.output_tokens for r in done)
    duration = max(r.end_t for r in requests) - min(r.send_t for r in requests)
    out: dict[str, Any] = {
        "requests_completed": len(done),
        "requests_failed": len(requests) - len(done),
        "output_tokens": output,
    }
    if all(p is not None for p in prompts):
        out["prompt_tokens"] = sum(p for p in prompts if p is not None)
    out["serving_duration_s"] = duration
    out.update(_stats("ttft_s", [v for r in done if (v := r.ttft_s) is not None]))
    out.update(_stats("tpot_s", [v for r in done if (v := r.tpot_s) is not None]))
    out.update(_stats("itl_s", [gap for r in done for gap in r.itl_s()]))
    out.update(_stats("e2el_s", [r.e2el_s for r in done]))
    if duration > 0:
        out["requests_per_s"] = len(done) / duration
        out["output_tps"] = output / duration
        if "prompt_tokens" in out:
            out["total_tps"] = (out["prompt_tokens"] + output) / duration
    if objectives:
        good = sum(1 for r in done if meets(r, objectives))
        out["requests_good"] = good
        if duration > 0:
            out["goodput_requests_per_s"] = good / duration
        out.update({f"slo_{key}": value for key, value in objectives.items()})
    order = {figure.name: i for i, figure in enumerate(SERVING_FIGURES)}
    return dict(sorted(out.items(), key=lambda item: order[item[0]]))


def to_record(timing: RequestTiming, run_id: str, rank: int, index: int, phase: str | None) -> dict:
    """One ``requests.jsonl`` line (fields :data:`perfkit.records.REQUEST_FIELDS`)."""
    return {
        "run_id": run_id,
        "rank": rank,
        "request": index,
        "phase": phase,
        "status": "ok" if timing.ok else "failed",
        "send_t": timing.send_t,
        "first_token_t": timing.first_token_t,
        "end_t": timing.end_t,
        "prompt_tokens": timing.prompt_tokens,
        "output_tokens": timing.output_tokens,
        "token_t": list(timing.token_t),
        "error": timing.error,
    }


def from_record(record: Mapping[str, Any]) -> RequestTiming:
    """The :class:`RequestTiming` of one ``requests.jsonl`` line (checked by
    :func:`perfkit.records.read_requests`)."""
    error = record.get("error")
    if record["status"] == "failed" and error is None:
        error = "failed"
    return RequestTiming(
        send_t=float(record["send_t"]),
        end_t=float(record["end_t"]),
        first_token_t=None if record["first_token_t"] is None else float(record["first_token_t"]),
        output_tokens=int(record["output_tokens"]),
        prompt_tokens=None if record["prompt_tokens"] is None else int(record["prompt_tokens"]),
        token_t=tuple(float(t) for t in record.get("token_t") or ()),
        error=None if record["status"] == "ok" else str(error),
    )
