"""Serving figures (issue 28): TTFT / TPOT / ITL / E2EL, throughputs and goodput against hand
arithmetic and against vLLM's ``benchmarks/serve.py`` ``calculate_metrics`` written out here;
the request API of a Run (fake clock), its records, the rebuild of a killed run, the report
table and compare's direction."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import perfkit
from perfkit.analysis._read import read_run
from perfkit.analysis._rebuild import rebuild_summary
from perfkit.analysis._repeats import better
from perfkit.figures import FIGURE_OF, RESERVED_KEYS, SERVING_FIGURES
from perfkit.records import json_schema
from perfkit.serving import SERVING_KEYS, RequestTiming, serving_summary
from tests.conftest import FakeClock

REPO = Path(__file__).resolve().parents[1]


def vllm_metrics(requests: list[RequestTiming], dur_s: float, goodput: dict[str, float]) -> dict:
    """vLLM's calculate_metrics (benchmarks/serve.py) on our timelines: its lists built as it
    builds them (ttft, latency, itl per successful request; TPOT only above one output token,
    0 for goodput), np.mean / np.percentile, goodput as ``slo >= value`` for every objective.
    Seconds, not vLLM's milliseconds."""
    ttfts, tpots, all_tpots, itls, e2els = [], [], [], [], []
    completed = good = total_input = total_output = 0
    for r in requests:
        if r.error is not None:
            continue
        ttft = r.first_token_t - r.send_t
        latency = r.end_t - r.send_t
        tpot = 0.0
        if r.output_tokens > 1:
            tpot = (latency - ttft) / (r.output_tokens - 1)
            tpots.append(tpot)
        all_tpots.append(tpot)
        itls += [b - a for a, b in zip(r.token_t, r.token_t[1:], strict=False)]
        ttfts.append(ttft)
        e2els.append(latency)
        completed += 1
        total_input += r.prompt_tokens
        total_output += r.output_tokens
    columns = {"ttft_s": ttfts, "tpot_s": all_tpots, "e2el_s": e2els}
    for values in zip(*(columns[k] for k in goodput), strict=True):
        good += all(slo >= v for slo, v in zip(goodput.values(), values, strict=True))
    out = {
        "requests_completed": completed,
        "requests_per_s": completed / dur_s,
        "output_tps": total_output / dur_s,
        "total_tps": (total_input + total_output) / dur_s,
        "goodput_requests_per_s": good / dur_s,
    }
    for name, values in (("ttft_s", ttfts), ("tpot_s", tpots), ("itl_s", itls), ("e2el_s", e2els)):
        if values:
            out[f"{name}_mean"] = float(np.mean(values))
            for q in (50, 90, 99):
                out[f"{name}_p{q}"] = float(np.percentile(values, q))
    return out


def timeline(send, tokens, prompt, error=None, end=None, output=None) -> RequestTiming:
    return RequestTiming(
        send_t=send,
        end_t=tokens[-1] if end is None else end,
        first_token_t=tokens[0] if tokens else None,
        output_tokens=len(tokens) if output is None else output,
        prompt_tokens=prompt,
        token_t=tuple(tokens),
        error=error,
    )


# A: 3 tokens; B: one token (no TPOT); C: failed; D: misses the TTFT objective. Times are
# binary fractions, so every difference below is exact.
HAND = [
    timeline(0.0, [0.5, 0.625, 0.875], 10),
    timeline(0.25, [1.25], 4),
    timeline(0.375, [1.0], 8, error="HTTP 500", end=1.5),
    timeline(1.0, [3.5, 3.75], 6),
]


def test_hand_made_timeline_against_hand_arithmetic():
    s = serving_summary(HAND)
    assert s["requests_completed"] == 3 and s["requests_failed"] == 1
    assert s["prompt_tokens"] == 10 + 4 + 6  # the failed request's 8 left out
    assert s["output_tokens"] == 3 + 1 + 2
    assert s["serving_duration_s"] == 3.75  # first send 0.0 to last end 3.75
    # TTFT: 0.5, 1.0, 2.5 -> mean 4/3; linear p90 at index 1.8: 1.0 + 0.8 * 1.5 = 2.2
    assert s["ttft_s_mean"] == pytest.approx(4 / 3)
    assert s["ttft_s_p50"] == 1.0
    assert s["ttft_s_p90"] == pytest.approx(2.2)
    assert s["ttft_s_p99"] == pytest.approx(1.0 + 0.98 * 1.5)
    # TPOT: A (0.875 - 0.5) / 2 = 0.1875, D (2.75 - 2.5) / 1 = 0.25; B has one token: left out
    assert s["tpot_s_mean"] == pytest.approx(0.21875)
    assert s["tpot_s_p90"] == pytest.approx(0.1875 + 0.9 * 0.0625)
    # ITL pooled: A 0.125, 0.25; D 0.25 (a tie) -> mean 0.625 / 3, p50 = p90 = p99 = 0.25
    assert s["itl_s_mean"] == pytest.approx(0.625 / 3)
    assert s["itl_s_p50"] == s["itl_s_p90"] == s["itl_s_p99"] == 0.25
    # E2EL: 0.875, 1.0, 2.75 -> p99 at index 1.98: 1.0 + 0.98 * 1.75
    assert s["e2el_s_mean"] == pytest.approx(4.625 / 3)
    assert s["e2el_s_p99"] == pytest.approx(2.715)
    assert s["requests_per_s"] == pytest.approx(3 / 3.75)  # 0.8
    assert s["output_tps"] == pytest.approx(6 / 3.75)  # 1.6
    assert s["total_tps"] == pytest.approx(26 / 3.75)
    # default SLO TTFT 2 s, TPOT 0.2 s: A (0.5, 0.1875) and B (1.0, TPOT 0) meet it, D not
    assert s["requests_good"] == 2
    assert s["goodput_requests_per_s"] == pytest.approx(2 / 3.75)
    assert (s["slo_ttft_s"], s["slo_tpot_s"]) == (2.0, 0.2)


@pytest.mark.parametrize(
    ("slo", "good"),
    [
        ({"tpot_s": 0.25}, 3),  # D's TPOT is exactly 0.25: an objective is met at equality
        ({"e2el_s": 1.0}, 2),  # B's E2EL is exactly 1.0
        ({"ttft_s": 0.5}, 1),  # only A
        ({"ttft_s": 0.5, "e2el_s": 0.5}, 0),
    ],
)
def test_goodput_on_a_constructed_set(slo, good):
    s = serving_summary(HAND, slo)
    assert s["requests_good"] == good
    assert s["goodput_requests_per_s"] == pytest.approx(good / 3.75)
    assert s["goodput_requests_per_s"] == pytest.approx(
        vllm_metrics(HAND, 3.75, slo)["goodput_requests_per_s"]
    )


def test_no_slo_no_goodput_and_figures_without_data_are_absent():
    s = serving_summary(HAND, {})
    assert "goodput_requests_per_s" not in s and "slo_ttft_s" not in s
    only_failed = serving_summary([timeline(0.0, [1.0], 3, error="timeout")])
    assert only_failed["requests_completed"] == 0 and only_failed["requests_failed"] == 1
    assert not any(k.startswith(("ttft", "tpot", "itl", "e2el")) for k in only_failed)
    one_token = serving_summary([timeline(0.0, [1.0], 3)])
    assert "tpot_s_mean" not in one_token and "itl_s_mean" not in one_token
    assert serving_summary([]) == {}


def test_a_completed_request_without_tokens_has_an_e2el_but_no_ttft():
    empty = timeline(0.0, [], 5, end=0.5)  # the server answered with no token
    s = serving_summary([empty])
    assert "ttft_s_mean" not in s and s["e2el_s_mean"] == 0.5 and s["output_tokens"] == 0
    assert s["requests_good"] == 0  # no first token: the TTFT objective is missed
    assert serving_summary([empty], {"e2el_s": 0.5})["requests_good"] == 1


def test_matches_vllm_on_the_hand_timeline():
    ours, theirs = serving_summary(HAND), vllm_metrics(HAND, 3.75, {"ttft_s": 2.0, "tpot_s": 0.2})
    for key, value in theirs.items():
        assert ours[key] == pytest.approx(value, rel=1e-12), key


@st.composite
def timelines(draw: Any) -> list[RequestTiming]:
    out = []
    for _ in range(draw(st.integers(1, 12))):
        send = draw(st.floats(0, 100))
        first = send + draw(st.floats(0, 10))
        gaps = draw(st.lists(st.floats(0, 2), max_size=8))  # 0: tokens arriving together
        tokens = [first]
        for gap in gaps:
            tokens.append(tokens[-1] + gap)
        failed = draw(st.booleans()) and draw(st.booleans())
        out.append(timeline(send, tokens, draw(st.integers(0, 4096)), "x" if failed else None))
    return out


@settings(max_examples=60, deadline=None)
@given(timelines(), st.floats(0.01, 5), st.floats(0.01, 1))
def test_property_every_figure_is_vllms(requests, ttft_slo, tpot_slo):
    slo = {"ttft_s": ttft_slo, "tpot_s": tpot_slo}
    ours = serving_summary(requests, slo)
    duration = max(r.end_t for r in requests) - min(r.send_t for r in requests)
    assert ours["serving_duration_s"] == duration
    if duration <= 0:
        assert "requests_per_s" not in ours
        return
    for key, value in vllm_metrics(requests, duration, slo).items():
        assert ours[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
    for latency in ("ttft_s", "tpot_s", "itl_s", "e2el_s"):
        if f"{latency}_mean" in ours:  # percentiles ordered and inside the values' range
            assert ours[f"{latency}_p50"] <= ours[f"{latency}_p90"] <= ours[f"{latency}_p99"]


def test_every_figure_is_declared_with_its_direction():
    s = serving_summary(HAND)
    assert list(s) == [key for key in SERVING_KEYS if key in s]  # in the table's order
    assert tuple(f.key for f in SERVING_FIGURES) == SERVING_KEYS
    for key in s:  # one declaration: unit, ranks (rank 0's requests) and run.log's refusal
        assert FIGURE_OF[key].over_ranks == "rank 0" and key in RESERVED_KEYS, key
    assert better("ttft_s_p99") == -1 and better("e2el_s_mean") == -1
    # before the declaration, requests_per_s (ending in _s) read as a time: lower is better
    assert better("requests_per_s") == 1 and better("goodput_requests_per_s") == 1
    assert better("output_tps") == 1 and better("requests_failed") is None


# ------------------------------------------------------------------------------ a Run's requests


def fake_run(tmp_path: Path, **kwargs: Any) -> tuple[perfkit.Run, FakeClock]:
    clock = FakeClock()
    run = perfkit.Run("serve", out_dir=tmp_path, clock=clock, probes=None, **kwargs)
    return run, clock


def test_request_context_times_tokens_on_the_runs_clock(tmp_path):
    run, clock = fake_run(tmp_path)
    with run:
        clock.advance(1.0)
        with run.request(prompt_tokens=7) as r:  # sent at 1.0 s
            clock.advance(0.5)
            r.token()  # 1.5
            clock.advance(0.25)
            r.token(2)  # 1.75: a chunk of two tokens, one ITL gap
            clock.advance(0.25)  # ends at 2.0
        with pytest.raises(KeyError), run.request(prompt_tokens=3) as r:  # sent at 2.0
            clock.advance(1.0)
            raise KeyError("lost")
        summary = run.summary()
    # TTFT 0.5, E2EL 1.0, TPOT (1.0 - 0.5) / (3 - 1) = 0.25, ITL 0.25; the failure apart
    assert summary["ttft_s_mean"] == 0.5 and summary["e2el_s_mean"] == 1.0
    assert summary["tpot_s_mean"] == 0.25 and summary["itl_s_mean"] == 0.25
    assert summary["requests_completed"] == 1 and summary["requests_failed"] == 1
    assert summary["output_tokens"] == 3 and summary["prompt_tokens"] == 7
    assert summary["serving_duration_s"] == 2.0  # 1.0 to the failure at 3.0
    lines = [json.loads(x) for x in (run.run_dir / "requests.jsonl").read_text().splitlines()]
    schema = json_schema()
    for line in lines:
        jsonschema.validate(line, schema["$defs"]["request"])
    assert lines[0]["token_t"] == [1.5, 1.75] and lines[0]["end_t"] == 2.0
    assert lines[1]["status"] == "failed" and lines[1]["error"] == "KeyError: 'lost'"
    assert json.loads((run.run_dir / "summary.json").read_text())["ttft_s_p99"] == 0.5
    assert set(summary) <= set(FIGURE_OF)  # every key of a serving run is in the figure table
    jsonschema.validate(summary, schema["$defs"]["summary"])


def test_requests_handed_in_and_their_checks(tmp_path):
    run, _clock = fake_run(tmp_path, slo={"e2el_s": 3.0})
    with run:
        t0 = run.t0  # 100.0: handed-in times are readings of run.clock
        run.add_request(send_t=t0 + 1, token_t=[t0 + 2, t0 + 2.5, t0 + 4], prompt_tokens=5)
        run.add_request(send_t=t0 + 1, first_token_t=t0 + 3, end_t=t0 + 5, output_tokens=5)
        run.add_request(send_t=t0 + 2, end_t=t0 + 6, error="timeout")
        with pytest.raises(ValueError, match="send_t <= first_token_t <= end_t"):
            run.add_request(send_t=t0 + 3, token_t=[t0 + 2])
        with pytest.raises(ValueError, match="non-decreasing"):
            run.add_request(send_t=t0, token_t=[t0 + 2, t0 + 1])
        with pytest.raises(TypeError, match="`prompt_tokens`"):
            run.add_request(send_t=t0, token_t=[t0 + 1], prompt_tokens=1.5)
        with pytest.raises(ValueError, match="`slo`"):
            perfkit.Run("x", slo={"ttft": 2.0})
        with pytest.raises(ValueError, match="is a field perfkit measures"):
            run.log(ttft_s_p99=1.0)
        summary = run.summary()
    # TTFT 1 and 2; TPOT (3 - 1) / 2 = 1.0 and (4 - 2) / 4 = 0.5; ITL 0.5, 1.5 (the second
    # request has no token times); E2EL 3 and 4: only the first meets e2el <= 3
    assert summary["ttft_s_mean"] == 1.5 and summary["tpot_s_mean"] == 0.75
    assert summary["itl_s_mean"] == 1.0 and summary["e2el_s_mean"] == 3.5
    assert summary["requests_good"] == 1 and summary["serving_duration_s"] == 5.0
    assert "prompt_tokens" not in summary and "total_tps" not in summary  # one unknown
    assert summary["output_tps"] == (3 + 5) / 5.0


def test_a_request_open_when_the_run_stops_is_recorded_failed(tmp_path):
    run, clock = fake_run(tmp_path)
    with run:
        r = run.request(prompt_tokens=2).start()
        clock.advance(1.0)
        r.token()
    assert run.summary()["requests_failed"] == 1
    (line,) = (run.run_dir / "requests.jsonl").read_text().splitlines()
    assert json.loads(line)["error"] == "the run ended before the request finished"
    with pytest.raises(perfkit.RunError, match="not running"):
        run.request()


def test_a_killed_run_is_rebuilt_with_the_live_serving_figures(tmp_path):
    """SIGKILL after some requests: the summary rebuilt from requests.jsonl (no summary.json)
    has the serving figures the live summary had just before the kill."""
    script = textwrap.dedent(
        f"""
        import json, os, signal
        from pathlib import Path
        import perfkit
        from tests.conftest import FakeClock
        clock = FakeClock()
        out = Path({str(tmp_path)!r})
        with perfkit.Run("killed", out_dir=out, clock=clock, probes=None,
                         slo={{"ttft_s": 0.3}}) as run:
            for i in range(6):
                try:
                    with run.request(prompt_tokens=10 + i) as r:
                        clock.advance(0.1 * (i + 1))
                        for k in range(i):
                            r.token()
                            clock.advance(0.01 * (k + 1))
                        if i == 4:
                            raise TimeoutError("slow")
                except TimeoutError:
                    pass
            run.add_request(send_t=run.t0 + 1.0, first_token_t=run.t0 + 1.25,
                            end_t=run.t0 + 2.0, output_tokens=4, prompt_tokens=1)
            live = json.dumps(run.summary(), default=str)
            (out / "live.json").write_text(live)
            run.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, timeout=120)
    assert proc.returncode == -signal.SIGKILL
    (run_dir,) = tmp_path.glob("killed-*")
    assert not (run_dir / "summary.json").exists()
    live = json.loads((tmp_path / "live.json").read_text())
    rebuilt = rebuild_summary(read_run(run_dir))
    names = [key for key in SERVING_KEYS if key in live]
    assert len(names) > 20 and live["requests_failed"] == 1 and live["slo_ttft_s"] == 0.3
    assert {k: rebuilt.get(k) for k in names} == {k: live[k] for k in names}  # exactly
    frame = perfkit.analysis.requests(run_dir)
    assert list(frame["status"]) == ["ok"] * 4 + ["failed", "ok", "ok"]
    assert frame["output_tokens"].sum() == 0 + 1 + 2 + 3 + 4 + 5 + 4


def test_a_bad_requests_line_is_skipped_with_a_warning_and_the_rest_rebuilt(tmp_path, caplog):
    run, clock = fake_run(tmp_path)
    with run:
        for _ in range(2):
            with run.request(prompt_tokens=2) as r:
                clock.advance(0.5)
                r.token()
    path = run.run_dir / "requests.jsonl"
    lines = path.read_text().splitlines()
    bad = json.loads(lines[0])
    bad["status"] = "maybe"
    path.write_text("\n".join([json.dumps(bad), lines[1], '{"run_id": "x"}', '{"trunc']))
    rebuilt = rebuild_summary(read_run(run.run_dir))
    assert rebuilt["requests_completed"] == 1 and rebuilt["ttft_s_mean"] == 0.5
    assert "skipped 2 bad line(s)" in caplog.text and "not 'ok' or 'failed'" in caplog.text


def test_report_prints_the_serving_tables_and_compare_keeps_the_figures(tmp_path):
    runs = []
    for scale in (1.0, 2.0):
        run, clock = fake_run(tmp_path)
        with run:
            for _ in range(3):
                with run.request(prompt_tokens=4) as r:
                    clock.advance(0.5 * scale)
                    r.token()
                    clock.advance(0.25 * scale)
                    r.token()
        runs.append(run.run_dir)
    text = perfkit.analysis.report_text(runs)
    assert "## Serving latency" in text and "## Serving throughput" in text
    ttft = [line for line in text.splitlines() if "| TTFT    |" in line]
    assert len(ttft) == 2 and "500.0" in ttft[0] and "1000.0" in ttft[1]  # ms
    assert "TTFT <= 2.0 s, TPOT <= 0.2 s" in text
    numbers = json.loads(perfkit.analysis.report_text(runs, fmt="json"))
    assert numbers["serving"][0]["ttft_s_p50"] == 0.5
    frame = perfkit.analysis.compare(runs[0], runs[1])
    assert frame.loc["ttft_s_p99", f"{runs[1].name}/baseline"] == pytest.approx(2.0)
    assert frame.loc["requests_per_s", f"{runs[1].name}/baseline"] == pytest.approx(0.5)


def test_mllog_writes_the_serving_figures_of_a_finished_and_a_partial_run(tmp_path):
    pytest.importorskip("mlperf_logging")
    run, clock = fake_run(tmp_path)
    with run:
        with run.request(prompt_tokens=1) as r:
            clock.advance(0.5)
            r.token()
    for _ in range(2):  # the summary's figures, then (summary.json gone) the requests'
        lines = perfkit.analysis.mllog_lines(run.run_dir)
        events = {e["key"]: e for e in (json.loads(x.split(" ", 1)[1]) for x in lines)}
        assert events["ttft_s_p99"]["value"] == 0.5  # sent at 0, its token at 0.5 s
        assert events["ttft_s_p99"]["metadata"]["unit"] == "s"
        assert events["requests_per_s"]["value"] == 2.0  # 1 request / 0.5 s
        (run.run_dir / "summary.json").unlink(missing_ok=True)
