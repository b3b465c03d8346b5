"""perfkit.generation.Streamer in a real Hugging Face ``generate`` (issue 28): each batch row
one request, checked against timestamps the test takes itself in the same call (a logits
processor of its own, which runs once per decoding step before that step's tokens reach the
streamer) and against the generated ids; and the example, run with small flags."""

from __future__ import annotations

import contextlib
import io
import json
import time

import pytest
import torch
import transformers  # the "transformers" extra (in dev)

import perfkit
from examples import llm_generation

PAD, EOS = 0, 2


class Forced(transformers.LogitsProcessor):
    """Makes row r emit token 5 + r until its step ``stops[r]`` (from 1), then EOS; notes the
    host clock at each call (one call per decoding step)."""

    def __init__(self, stops: list[int]) -> None:
        self.stops = stops
        self.calls: list[float] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.Tensor:
        self.calls.append(time.perf_counter())
        step = len(self.calls)
        forced = torch.full_like(scores, -float("inf"))
        for row, stop in enumerate(self.stops):
            forced[row, EOS if step >= stop else 5 + row] = 0.0
        return forced


def tiny_llama() -> transformers.LlamaForCausalLM:
    return llm_generation.tiny_llama(layers=1, hidden=32).eval()


def test_each_row_is_a_request_timed_within_the_tests_own_timestamps(tmp_path):
    model = tiny_llama()
    prompts = [[7, 8, 9], [10, 11, 12, 13, 14, 15], [16]]
    ids, mask = llm_generation.left_padded(prompts, PAD)
    stops = [3, 1, 5]  # row 0 ends at step 3, row 1 at once (one token), row 2 at step 5
    forced = Forced(stops)
    with perfkit.Run("gen", out_dir=tmp_path, probes=None) as run:  # host clock: perf_counter
        streamer = perfkit.generation.Streamer(eos_token_id=EOS, pad_token_id=PAD)
        before = time.perf_counter()
        out = model.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=8, do_sample=False,
            pad_token_id=PAD, eos_token_id=EOS, logits_processor=[forced], streamer=streamer,
        )  # fmt: skip
        after = time.perf_counter()
        summary = run.summary()
    lines = [json.loads(x) for x in (run.run_dir / "requests.jsonl").read_text().splitlines()]
    # requests are numbered as they end (row 1 first): matched to rows by prompt length
    lines.sort(key=lambda line: [3, 6, 1].index(line["prompt_tokens"]))
    generated = out[:, ids.shape[1] :].tolist()
    calls = [*forced.calls, after]
    eps = 1e-6  # t0 + (t - t0) round-off
    for row, line in enumerate(lines):
        tokens = generated[row][: generated[row].index(EOS) + 1]  # the ids generate returned
        assert len(tokens) == stops[row] and line["output_tokens"] == stops[row]
        assert line["prompt_tokens"] == len(prompts[row]) == int(mask[row].sum())
        send = run.t0 + line["send_t"]
        assert before - eps <= send <= forced.calls[0] + eps  # before the first step's logits
        for k, t in enumerate(line["token_t"]):  # token k+1 between its step's logits and the next
            assert calls[k] - eps <= run.t0 + t <= calls[k + 1] + eps
        assert line["end_t"] == line["token_t"][-1]  # the row's EOS
        ttft = line["first_token_t"] - line["send_t"]
        assert forced.calls[0] - before - eps <= ttft + (send - before) <= calls[1] - before + eps
    # the batch: 3 requests, one with a single token (no TPOT), output 3 + 1 + 5 tokens
    assert summary["requests_completed"] == 3 and summary["output_tokens"] == 9
    assert summary["prompt_tokens"] == 3 + 6 + 1
    # TPOT of row 0: (e2el - ttft) / 2 = (last - first token) / 2; of row 2 over 4 gaps
    tpots = [(x["end_t"] - x["first_token_t"]) / (x["output_tokens"] - 1) for x in lines[::2]]
    assert summary["tpot_s_mean"] == pytest.approx(sum(tpots) / 2, rel=1e-9)
    # every row shares the send and first-token times (one batch): one TTFT
    assert summary["ttft_s_p50"] == summary["ttft_s_p99"] == pytest.approx(ttft, rel=1e-9)
    # ITL pooled: 2 gaps of row 0, 4 of row 2, each inside the test's step bounds
    assert summary["itl_s_p99"] <= max(b - a for a, b in zip(calls, calls[2:], strict=False)) + 1e-6


def test_streamer_counts_and_checks(tmp_path):
    model = tiny_llama()
    ids, mask = llm_generation.left_padded([[5, 6], [7, 8, 9, 10]], PAD)
    with perfkit.Run("gen", out_dir=tmp_path, probes=None) as run:
        streamer = perfkit.generation.Streamer(prompt_tokens=[2, 4])  # no EOS: max_new_tokens
        for _ in range(2):  # one streamer, successive generate calls
            model.generate(
                input_ids=ids, attention_mask=mask, max_new_tokens=3, do_sample=False,
                pad_token_id=PAD, streamer=streamer,
            )  # fmt: skip
        summary = run.summary()
    assert summary["requests_completed"] == 4 and summary["output_tokens"] == 4 * 3
    # the first call's given counts (2 + 4), then the prompt's full width (4 + 4)
    assert summary["prompt_tokens"] == 2 + 4 + 4 + 4
    with pytest.raises(TypeError, match="`eos_token_id`"):
        perfkit.generation.Streamer(eos_token_id="2")
    with pytest.raises(perfkit.RunError, match="no run is active"):
        perfkit.generation.Streamer().put(torch.ones((1, 2), dtype=torch.long))


class Raises(transformers.LogitsProcessor):
    """Raises at decoding step ``at`` (from 1): a generate call that fails midway."""

    def __init__(self, at: int) -> None:
        self.at, self.calls = at, 0

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.at:
            raise RuntimeError("device lost")
        return scores


def test_a_generate_call_that_raises_leaves_failed_requests_and_the_next_call_works(tmp_path):
    model = tiny_llama()
    ids, mask = llm_generation.left_padded([[5, 6], [7, 8, 9]], PAD)
    kwargs = {"attention_mask": mask, "max_new_tokens": 3, "do_sample": False}
    with perfkit.Run("gen", out_dir=tmp_path, probes=None) as run:
        streamer = perfkit.generation.Streamer(pad_token_id=PAD)
        for explicit in (False, True):
            with pytest.raises(RuntimeError, match="device lost"):
                model.generate(ids, logits_processor=[Raises(2)], streamer=streamer, **kwargs)
            if explicit:
                streamer.fail("RuntimeError: device lost")
            model.generate(ids, streamer=streamer, **kwargs)  # the next prompt starts a batch
        summary = run.summary()
    # per round: 2 rows failed after one token, then 2 rows of 3 tokens
    assert summary["requests_failed"] == 4 and summary["requests_completed"] == 4
    assert summary["output_tokens"] == 4 * 3 and summary["prompt_tokens"] == 2 * (2 + 3)
    lines = [json.loads(x) for x in (run.run_dir / "requests.jsonl").read_text().splitlines()]
    errors = [line["error"] for line in lines if line["status"] == "failed"]
    assert errors == [perfkit.generation.NO_END] * 2 + ["RuntimeError: device lost"] * 2


def test_the_example_prints_the_serving_table(tmp_path):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = llm_generation.main(
            ["--out-dir", str(tmp_path), "--requests", "3", "--batch-size", "2",
             "--max-new-tokens", "3", "--prompt-len", "2", "5", "--hidden", "32"]
        )  # fmt: skip
    assert code == 0
    text = out.getvalue()
    assert "## Serving latency" in text and "| TTFT" in text and "goodput requests/s" in text
    (run_dir,) = tmp_path.glob("llm-generation-*")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["requests_completed"] == 3 and summary["infer_samples"] == 3
