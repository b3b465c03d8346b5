"""Runs that counted tokens in the reports: perfkit report's LLM table (FlagPerf's token/p/s,
MFU, mem, e2e_time), compare's token rows and the MLPerf log's max_sequence_length."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import perfkit
from perfkit.analysis import compare, mllog_lines
from perfkit.cli import main
from perfkit.flops import TransformerShape
from tests.conftest import FakeClock, timed_batches

torch = pytest.importorskip("torch")


def llm_run(out: Path, name: str, compute_s: float) -> Path:
    """4 train steps of 2 sequences x 16 tokens: IO 0.5 s, compute ``compute_s`` each; MFU in
    flagperf-6n over 6 x 1000 FLOPs a token and a peak of 1e6 FLOP/s."""
    clock = FakeClock()
    batch = {"input_ids": torch.zeros(2, 16, dtype=torch.long)}
    with perfkit.Run(name, out_dir=out, clock=clock, device="cpu", probes=None,
                     config={"precision": "bf16", "bs": 2}) as run:  # fmt: skip
        shape = TransformerShape(1000, 2, 2, 4, seq_len=16)
        run.set_token_flops(shape, convention="flagperf-6n", dtype="bf16", peak_flops=1e6)
        with run.phase("train") as train:
            for _ in train.iterate(timed_batches(clock, [batch] * 4, io_s=0.5)):
                clock.advance(compute_s)
    assert run.run_dir is not None
    return run.run_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("llm")
    return {"slow": llm_run(out, "slow", 1.5), "fast": llm_run(out, "fast", 0.5)}


def test_report_prints_flagperfs_llm_table(runs, capsys) -> None:
    assert main(["report", str(runs["slow"]), "--format", "json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["llm"]
    # 4 x 32 = 128 padded tokens (input_ids) over 4 x 2.0 s = 16 tokens/s (one device);
    # compute 4 x 1.5 s: 21.33 tokens/s; MFU = 6 x 1000 x 16 / 1e6 = 0.096
    assert row["tps_train_per_device"] == pytest.approx(16.0)
    assert row["tps_core_per_device"] == pytest.approx(128 / 6.0)
    assert row["tps_whole"] == pytest.approx(16.0)
    assert row["MFU"] == pytest.approx(0.096)
    assert main(["report", str(runs["slow"])]) == 0
    text = capsys.readouterr().out
    header = next(line for line in text.splitlines() if line.startswith("| run "))
    assert [c.strip() for c in header.strip("|").split("|")] == [
        "run", "config", "precision", "fix_hp", "e2e_time", "tps_whole",
        "tps_train_per_device", "tps_core_per_device", "MFU", "mem", "status",
    ]  # fmt: skip
    row_line = next(line for line in text.splitlines() if line.startswith(f"| {runs['slow'].name}"))
    cells = [c.strip() for c in row_line.strip("|").split("|")]
    assert cells[4:9] == ["8.0", "16.0", "16.0", "21.3", "9.6%"]  # e2e 8 s, no memory probe


def test_compare_has_the_token_rows(runs) -> None:
    frame = compare(runs["slow"], runs["fast"])
    # fast: 128 tokens over 4 x 1.0 s = 32 tokens/s, twice slow's 16
    assert frame.loc["tps_train", f"{runs['fast'].name}/baseline"] == pytest.approx(2.0)
    assert frame.loc["train_tokens", runs["fast"].name] == 128
    assert list(frame.index).index("tps_train_per_device") < list(frame.index).index("MFU")


def test_mllog_names_the_sequence_length(runs) -> None:
    pytest.importorskip("mlperf_logging")
    events = [json.loads(line.split(" ", 1)[1]) for line in mllog_lines(runs["slow"])]
    assert {e["key"]: e["value"] for e in events}["max_sequence_length"] == 16
