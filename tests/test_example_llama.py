"""examples/llama_pretraining.py with small flags: FlagPerf's LLM table printed, tokens counted
from the packed batches, MFU per token against the parameter count of the same model."""

from __future__ import annotations

import numpy as np
import pytest

from perfkit.analysis import summaries

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")


def test_llama_pretraining_prints_the_llm_table(tmp_path, capsys) -> None:
    from examples import llama_pretraining

    data = tmp_path / "tokens.npy"
    np.save(data, np.arange(4 * 2 * 16) % 1024)  # exactly the tokens 4 steps of 2 x 16 need
    flags = ["--out-dir", str(tmp_path / "runs"), "--steps", "4", "--batch-size", "2",
             "--seq-len", "16", "--peak-flops", "1e10", "--data", str(data)]  # fmt: skip
    assert llama_pretraining.main(flags) == 0
    out = capsys.readouterr().out
    assert "tps_train_per_device" in out and "| flagperf-6n |" in out and "| counted |" in out
    (row,) = summaries(tmp_path / "runs").to_dict(orient="records")
    # 4 steps of 2 packed sequences of 16 tokens, the first step warm-up: 3 x 32 and 32
    assert (row["train_tokens"], row["train_warmup_tokens"]) == (96, 32)
    assert row["train_tokens_from"] == "attention_mask"
    # flagperf-6n: 6 x N, N counted here on the same model the flags build
    config = transformers.LlamaConfig(
        vocab_size=1024, hidden_size=64, intermediate_size=172, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=16,
    )  # fmt: skip
    n = sum(p.numel() for p in transformers.LlamaForCausalLM(config).parameters())
    assert row["flops_per_token"] == 6 * n
    assert row["MFU"] == pytest.approx(6 * n * row["tps_train_per_device"] / 1e10)
    assert row["tps_train"] == pytest.approx(96 / row["train_wall_s"])
    assert row["config.seq_len"] == 16
