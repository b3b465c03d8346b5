"""Tokens counted beside samples: from a batch's attention_mask (real tokens) or input_ids
(padded), a given int or a callable; warm-up kept apart; each step's count in steps.bin."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import perfkit
from perfkit.analysis._read import read_run
from perfkit.flops import TransformerShape
from perfkit.records import STEP_COLUMNS
from perfkit.steplog import encode_header, read_step_log
from tests.conftest import FakeClock, assert_rebuilt_equals_live, timed_batches

torch = pytest.importorskip("torch")
REPO = Path(__file__).resolve().parents[1]
# N = 1000 parameters, 100 of them embedding tables; L = 2, H = 2, Q = 4, T = 8
SHAPE = TransformerShape(1000, 2, 2, 4, 8, embedding_params=100)


def lm_batch(lengths: list[int], width: int) -> dict[str, Any]:
    """A right-padded batch: one row per length, ``width`` columns."""
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for row, length in enumerate(lengths):
        mask[row, :length] = 1
    return {"input_ids": torch.randint(0, 100, (len(lengths), width)), "attention_mask": mask}


def run_phase(tmp: Path, batches: list[Any], **iterate: Any) -> tuple[perfkit.Phase, Path]:
    with perfkit.Run("tok", out_dir=tmp, device="cpu", probes=None) as run:
        with run.phase("train", warmup_steps=iterate.pop("warmup", 0)) as train:
            for _ in train.iterate(batches, **iterate):
                pass
    assert run.run_dir is not None
    return train, run.run_dir


@pytest.mark.filterwarnings("ignore:phase .train. ran")
@settings(max_examples=15, deadline=None)
@given(
    rows=st.lists(st.lists(st.integers(0, 12), min_size=1, max_size=4), min_size=1, max_size=8),
    warmup=st.integers(0, 3),
)
def test_attention_mask_counts_real_tokens(tmp_path_factory, rows, warmup) -> None:
    batches = [lm_batch(lengths, 12) for lengths in rows]
    train, run_dir = run_phase(tmp_path_factory.mktemp("t"), batches, warmup=warmup)
    # The reference: the lengths the test made each row, summed, warm-up batches apart.
    assert train.tokens_from == "attention_mask"
    assert train.tokens == sum(sum(lengths) for lengths in rows[warmup:])
    figures = train.result().totals
    assert figures.tokens == train.tokens
    if warmup and len(rows) > 0:
        assert figures.warmup_tokens == sum(sum(lengths) for lengths in rows[:warmup])
    steps = read_run(run_dir).steps
    assert steps["tokens"].tolist() == [sum(lengths) for lengths in rows]


def test_input_ids_count_padded_tokens(tmp_path) -> None:
    batches = [{"input_ids": torch.zeros(4, 16, dtype=torch.long)} for _ in range(3)]
    train, _ = run_phase(tmp_path, batches)
    assert (train.tokens_from, train.tokens) == ("input_ids", 3 * 4 * 16)


def test_batches_without_token_ids_count_none(tmp_path) -> None:
    train, run_dir = run_phase(tmp_path, [torch.zeros(8, 3)] * 4)
    assert (train.tokens_from, train.result().totals.tokens) == ("none", None)
    assert read_run(run_dir).steps["tokens"].tolist() == [0, 0, 0, 0]


def test_given_and_callable_tokens(tmp_path) -> None:
    batches = [np.zeros((2, 5)), np.zeros((3, 5))]
    given_phase, _ = run_phase(tmp_path / "a", batches, tokens=128)
    assert (given_phase.tokens_from, given_phase.tokens) == ("given", 256)
    counted, _ = run_phase(tmp_path / "b", batches, tokens=lambda b: b.size)
    assert (counted.tokens_from, counted.tokens) == ("callable", 10 + 15)


def test_a_failing_token_counter_is_a_fault_not_an_error(tmp_path) -> None:
    def broken(batch: Any) -> int:
        raise KeyError("input_ids")

    with perfkit.Run("tok", out_dir=tmp_path, device="cpu", probes=None) as run:
        with run.phase("train") as train:
            steps = sum(1 for _ in train.iterate([np.zeros((2, 2))] * 3, tokens=broken))
    assert (steps, train.steps, train.tokens) == (3, 3, 0)
    assert any("counting tokens raised KeyError" in fault for fault in run.summary()["faults"])
    with perfkit.Run("tok", out_dir=tmp_path, device="cpu", probes=None) as run:
        with run.phase("train") as train:
            for _ in train.iterate([np.zeros((2, 2))] * 2, tokens=lambda b: -3):
                pass
    assert train.tokens == 0
    assert any("tokens callable returned -3" in fault for fault in run.summary()["faults"])


#: A loop's token counting (iterate's ``tokens``, the batches): the tokens of each step.
LOOP_TOKENS = {
    "given": lambda step: 7,
    "mask": lambda step: 2 * (step % 5),  # mask_lengths: rows of step % 5 and 2 tokens
    "none": lambda step: 0,
    "callable": lambda step: step % 3,
}


def loop_batches(mode: str, first: int, count: int) -> tuple[list[Any], dict[str, Any]]:
    """``count`` batches for steps ``first``.. of a loop counting tokens as ``mode`` says, and
    iterate's keyword arguments."""
    if mode == "mask":
        return [lm_batch([2] * (step % 5) or [0], 4) for step in range(first, first + count)], {}
    if mode == "given":
        return [np.zeros((1, 1))] * count, {"tokens": 7}
    if mode == "callable":
        batches = [np.full((1, 1), step % 3) for step in range(first, first + count)]
        return batches, {"tokens": lambda b: int(b[0, 0])}
    return [np.zeros((1, 1))] * count, {}


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # whether 4 slots fill: the flusher's pace
@settings(max_examples=25, deadline=None)
@given(
    phases=st.lists(
        st.lists(
            st.tuples(st.sampled_from(sorted(LOOP_TOKENS)), st.integers(1, 11), st.booleans()),
            min_size=1,
            max_size=4,
        ),
        min_size=1,
        max_size=3,
    )
)
def test_each_step_keeps_its_tokens_through_a_reused_ring(tmp_path_factory, phases) -> None:
    """Phases of loops counting tokens in each way (some left by break), one after another
    through 4 slots the phases hand on (so the ring wraps, fills and is reused): steps.bin
    holds each step's tokens as the test made them (LOOP_TOKENS, by the phase's step)."""
    import perfkit.run._phase as phase_module

    expected: list[list[int]] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(phase_module, "BACKLOG_STEPS", 4)
        out = tmp_path_factory.mktemp("ring")
        with perfkit.Run("ring", out_dir=out, device="cpu", probes=None) as run:
            for loops in phases:
                expected.append([])
                with run.phase("train") as train:
                    for mode, count, left in loops:
                        first = len(expected[-1])
                        batches, tokens = loop_batches(mode, first, count)
                        for step, _ in enumerate(train.iterate(batches, **tokens), first):
                            expected[-1].append(LOOP_TOKENS[mode](step))
                            if left and step == first + count // 2:
                                break
        assert run.run_dir is not None
    steps = read_run(run.run_dir).steps
    assert [group["tokens"].tolist() for _, group in steps.groupby("ordinal")] == expected


def test_a_batch_without_token_ids_before_ones_with_them_leaves_counting_on(tmp_path) -> None:
    """A dict without token ids, then a tuple, then token batches: the tuple does not turn the
    counting off at the ring's next wrap (4 slots) - each step keeps its own tokens (the
    lengths the test made), none the count of the step at the wrap written for later ones."""
    import perfkit.run._phase as phase_module

    lengths = [2, 3, 4, 0, 5, 1, 2, 3]  # 0: a tuple batch, no tokens
    batches = [{"x": 1}, (1,)] + [lm_batch([n], 6) if n else (1,) for n in lengths]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(phase_module, "BACKLOG_STEPS", 4)
        train, run_dir = run_phase(tmp_path, batches, samples=1)
    assert read_run(run_dir).steps["tokens"].tolist() == [0, 0, *lengths]
    assert train.tokens == 2 + 3 + 4 + 5 + 1 + 2 + 3


def test_a_later_loop_without_tokens_keeps_the_earlier_loops_tokens(tmp_path) -> None:
    """A phase's loop over token batches, then one over tuples (no token ids): the phase's
    tokens (1 + 2 + 3 real tokens) stay in the summary, counted from the attention mask."""
    with perfkit.Run("tok", out_dir=tmp_path, device="cpu", probes=None) as run:
        with run.phase("train") as train:
            for _ in train.iterate([lm_batch([n], 6) for n in (1, 2, 3)]):
                pass
            for _ in train.iterate([(torch.zeros(1),)] * 2):
                pass
    assert run.run_dir is not None
    summary = assert_rebuilt_equals_live(run.run_dir)
    assert (summary["train_tokens"], summary["train_tokens_from"]) == (6, "attention_mask")


def test_bad_tokens_argument(tmp_path) -> None:
    with perfkit.Run("tok", out_dir=tmp_path, device="cpu", probes=None) as run:
        with run.phase("train") as train:
            with pytest.raises(TypeError, match="Expected argument `tokens`"):
                train.iterate([1], tokens="input_ids")  # type: ignore[arg-type]
            with pytest.raises(ValueError, match="Expected argument `tokens`"):
                train.iterate([1], tokens=-1)


def test_a_step_log_without_the_tokens_column_reads_as_zero(tmp_path) -> None:
    """Step logs written before the tokens column existed stay readable."""
    old = [(name, unit) for name, unit in STEP_COLUMNS if name != "tokens"]
    fields = {
        "schema_version": 2,
        "columns": [name for name, _ in old],
        "units": [unit for _, unit in old],
        "dtype": "float64",
        "byteorder": "little",
        "run_id": "r",
        "rank": 0,
    }
    path = tmp_path / "steps.bin"
    rows = np.array([[0, 0, 1.0, 1.0, 0.5, 0.5, 8.0]], dtype="<f8")
    path.write_bytes(encode_header(fields) + rows.tobytes())
    header, read = read_step_log(path)
    assert header["columns"] == fields["columns"] and read.tolist() == rows.tolist()


def mask_batch(rows: int, width: int) -> dict[str, Any]:
    """``rows`` unpadded sequences of ``width`` tokens (a packed batch)."""
    return {"input_ids": torch.zeros(rows, width, dtype=torch.long),
            "attention_mask": torch.ones(rows, width, dtype=torch.long)}  # fmt: skip


def test_token_throughputs_on_a_fake_clock(tmp_path) -> None:
    clock = FakeClock()
    with perfkit.Run("tps", out_dir=tmp_path, clock=clock, device="cpu", probes=None) as run:
        run.set_token_flops(SHAPE, convention="palm", dtype="fp32", peak_flops=1e6)
        with run.phase("train", warmup_steps=1) as train:
            for _ in train.iterate(timed_batches(clock, [mask_batch(2, 8)] * 4, io_s=0.5)):
                clock.advance(1.5)
        with run.phase("val") as val:
            for _ in val.iterate(timed_batches(clock, [mask_batch(1, 8)] * 2, io_s=0.25)):
                clock.advance(0.75)
    s = run.summary()
    # train: 4 steps of 2 x 8 = 16 tokens, each 0.5 s IO + 1.5 s compute; step 0 is warm-up.
    assert (s["train_tokens"], s["train_warmup_tokens"]) == (48, 16)
    assert s["tps_train"] == pytest.approx(48 / 6.0)  # 3 steady steps of 2.0 s: 8.0 tokens/s
    assert s["tps_core"] == pytest.approx(48 / 4.5)  # their compute: 3 x 1.5 s
    assert s["tps_train_per_device"] == s["tps_train"]  # one rank
    # val: 2 steps of 8 tokens, 1.0 s each, 0.75 s compute
    assert s["val_tokens"] == 16 and s["tps_val_whole"] == pytest.approx(8.0)
    assert s["tps_val_core"] == pytest.approx(16 / 1.5)
    # tps_whole, as p_whole: all 64 train tokens over train start .. val end = 8 + 2 s
    assert s["tps_whole"] == pytest.approx(64 / 10.0)
    assert s["train_tokens_from"] == s["val_tokens_from"] == "attention_mask"
    # MFU per token: palm's 6 x 900 + 12 x 2 x 2 x 4 x 8 = 6936 FLOPs a token x 8.0 tokens/s
    # / 1e6 FLOP/s = 0.055488
    assert s["flops_per_token"] == 6936
    assert s["MFU"] == pytest.approx(6936 * 8.0 / 1e6)
    assert s["mfu_throughput"] == "tps_train_per_device"
    assert s["mfu_convention"].startswith("palm: 6 x N + 12 x L x H x Q x T")
    assert run.meta["flops"]["transformer"]["params"] == 1000
    assert_rebuilt_equals_live(run.run_dir)


def test_tokens_per_second_against_a_clock_around_the_loop(tmp_path) -> None:
    batches = [mask_batch(4, 32) for _ in range(6)]
    with perfkit.Run("tps", out_dir=tmp_path, device="cpu", probes=None) as run:
        started = time.perf_counter()
        with run.phase("train") as train:
            for _ in train.iterate(batches):
                time.sleep(0.01)
        loop_s = time.perf_counter() - started
    s = run.summary()
    assert s["train_tokens"] == 6 * 4 * 32  # the batches' masks: 768 tokens
    # the phase's wall time is inside the clock's (started before the phase, stopped after
    # it), and at least the 6 sleeps
    assert 0.06 <= s["train_wall_s"] <= loop_s
    assert 768 / loop_s <= s["tps_train"] <= 768 / 0.06
    assert s["tps_train"] == pytest.approx(768 / s["train_wall_s"])


def test_runs_without_tokens_have_no_token_figures(tmp_path) -> None:
    with perfkit.Run("plain", out_dir=tmp_path, device="cpu", probes=None) as run:
        with run.phase("train") as train:
            for _ in train.iterate([np.zeros((2, 2))] * 3):
                pass
    s = run.summary()
    assert not [k for k in s if "token" in k or k.startswith("tps_")]
    assert "tokens" not in s["phases"][0]


def test_mfu_per_token_without_tokens_says_why(tmp_path) -> None:
    with perfkit.Run("plain", out_dir=tmp_path, device="cpu", probes=None) as run:
        run.set_token_flops(1e6, convention="counted", dtype="fp32", peak_flops=1e9)
        with run.phase("train") as train:
            for _ in train.iterate([np.zeros((2, 2))] * 3):
                pass
    assert "no tokens were counted" in run.summary()["mfu_note"]
    with pytest.raises(ValueError, match="Expected argument `work`"):
        run.set_token_flops(SHAPE, convention="counted", dtype="fp32")
    with pytest.raises(ValueError, match="Expected argument `convention`"):
        run.set_token_flops(SHAPE, convention="6n", dtype="fp32")


def test_a_killed_run_with_tokens_is_rebuilt_as_the_live_summary(tmp_path) -> None:
    script = textwrap.dedent(
        f"""
        import json, os, signal
        from pathlib import Path
        import torch
        import perfkit
        from tests.conftest import FakeClock
        clock = FakeClock()
        out = Path({str(tmp_path)!r})
        batch = {{"input_ids": torch.zeros(2, 8, dtype=torch.long),
                  "attention_mask": torch.tensor([[1] * 8, [1] * 5 + [0] * 3])}}
        with perfkit.Run("killed", out_dir=out, clock=clock, device="cpu", probes=None) as run:
            with run.phase("train") as train:
                for i, _ in enumerate(train.iterate([batch] * 4)):
                    if i == 2:
                        (out / "live.json").write_text(json.dumps(run.summary(), default=str))
                        run.flush()
                        os.kill(os.getpid(), signal.SIGKILL)
                    clock.advance(1.0)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, timeout=120)
    assert proc.returncode == -signal.SIGKILL
    (run_dir,) = tmp_path.glob("killed-*")
    live = json.loads((tmp_path / "live.json").read_text())
    # two steps of 8 + 5 real tokens, 1.0 s each
    assert live["train_tokens"] == 26 and live["tps_train"] == pytest.approx(13.0)
    assert live["train_tokens_from"] == "attention_mask"
    assert_rebuilt_equals_live(run_dir, live)


def test_a_live_summary_before_the_peak_is_measured_says_so(tmp_path) -> None:
    """A trainer callback's figures mid-run: the CPU has no table peak, the run measures one
    at its end - until then the live summary notes it, without the table's warning."""
    with perfkit.Run("live", out_dir=tmp_path, device="cpu", probes=None) as run:
        run.set_token_flops(SHAPE, convention="palm", dtype="fp32", peak_flops="auto")
        with run.phase("train") as train:
            for _ in train.iterate([mask_batch(2, 8)] * 3):
                pass
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            live = run.summary()
        assert live["mfu_note"] == "MFU not computed yet: the run measures the peak at its end"
        run.stop()
    assert run.summary()["mfu_peak_source"] == "measured" and "MFU" in run.summary()
