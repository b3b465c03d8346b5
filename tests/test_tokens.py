"""Tokens counted beside samples: from a batch's attention_mask (real tokens) or input_ids
(padded), a given int or a callable; warm-up kept apart; each step's count in steps.bin."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import perfkit
from perfkit.analysis._read import read_run
from perfkit.records import STEP_COLUMNS
from perfkit.steplog import encode_header, read_step_log

torch = pytest.importorskip("torch")


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
    figures = train.result().figures
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
    assert (train.tokens_from, train.result().figures.tokens) == ("none", None)
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
