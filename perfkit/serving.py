"""LLM serving figures: per-request timings -> TTFT / TPOT / ITL / E2EL statistics, throughputs
and goodput (pure; no clock, no files). The one place these figures are defined: the live
:class:`perfkit.Run` and the analysis layer's rebuild of a killed run both call
:func:`serving_summary`; each figure's unit and direction are declared in the figure table
(:data:`perfkit.figures.SERVING_FIGURES`). The definitions are vLLM's (``benchmarks/serve.py``,
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
from typing import Any

from perfkit import checks
from perfkit.figures import SERVING_FIGURES, SLO_KEYS
from perfkit.summary import percentiles

#: MLPerf Inference's llama2-70b server scenario latency constraints (TTFT 2 s, TPOT 200 ms).
DEFAULT_SLO: Mapping[str, float] = {"ttft_s": 2.0, "tpot_s": 0.2}
#: Every key :func:`serving_summary` may write, in its order: the serving figures of the figure
#: table (:data:`perfkit.figures.SERVING_FIGURES`, with their units and directions).
SERVING_KEYS: tuple[str, ...] = tuple(figure.key for figure in SERVING_FIGURES)
_ORDER = {key: i for i, key in enumerate(SERVING_KEYS)}


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
    :data:`SERVING_KEYS`; {} without requests. ``slo``: objectives for goodput (None:
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
    return dict(sorted(out.items(), key=lambda item: _ORDER[item[0]]))


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
