"""FLOPs per token in the LLM conventions (flagperf-6n, palm, megatron, counted): the formulas
written out by hand for a GPT-2 and a Llama config, parameter counts from the models."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import perfkit.flops as pf
from perfkit.flops import TransformerShape, flops_per_token, transformer_shape

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

# GPT-2: d = 64, L = 2, H = 4 (Q = 16), vocabulary V = 100, P = 128 positions; lm_head tied.
GPT2 = {"n_layer": 2, "n_head": 4, "n_embd": 64, "n_positions": 128, "vocab_size": 100}
# Parameters: wte V*d = 6400, wpe P*d = 8192; per layer ln_1 2d = 128, c_attn d*3d + 3d = 12480,
# attn c_proj d*d + d = 4160, ln_2 128, c_fc d*4d + 4d = 16640, mlp c_proj 4d*d + d = 16448:
# 49984; two layers 99968; ln_f 128. Total 6400 + 8192 + 99968 + 128 = 114688.
GPT2_PARAMS, GPT2_POSITIONS = 114688, 8192
# Llama: d = 64, intermediate 128, L = 2, H = 4, 2 key-value heads, Q = 16, V = 100, untied.
LLAMA = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 100,
    "max_position_embeddings": 64,
    "tie_word_embeddings": False,
}
# Parameters: embed_tokens 6400, lm_head 6400; per layer q 64*64 = 4096, k and v 64*32 = 2048
# each, o 4096, gate / up / down 64*128 = 8192 each, two RMSNorms 64 each: 36992; two layers
# 73984; final norm 64. Total 6400 + 6400 + 73984 + 64 = 86848.
LLAMA_PARAMS, LLAMA_EMBEDDING = 86848, 6400
T = 32


def gpt2() -> object:
    return transformers.GPT2LMHeadModel(
        transformers.GPT2Config(**GPT2, bos_token_id=0, eos_token_id=0)
    )


def llama() -> object:
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(**LLAMA))


def test_gpt2_shape_and_conventions() -> None:
    model = gpt2()
    assert sum(p.numel() for p in model.parameters()) == GPT2_PARAMS  # tied wte once
    shape = transformer_shape(model, seq_len=T)
    assert (shape.params, shape.layers, shape.heads, shape.head_dim, shape.seq_len) == (
        GPT2_PARAMS,
        2,
        4,
        16,
        T,
    )
    # nanoGPT's get_num_params(non_embedding=True): all but the position embeddings (wte is
    # the tied output projection): 114688 - 8192 = 106496
    assert shape.matmul_params == 106496
    # L*H*Q*T = 2 * 4 * 16 * 32 = 4096
    # palm: 6 * 106496 + 12 * 4096 = 638976 + 49152 = 688128 (nanoGPT's estimate_mfu per token)
    assert flops_per_token(shape, "palm") == 688128
    # megatron: 638976 + 6 * 4096 = 663552
    assert flops_per_token(shape, "megatron") == 663552
    # flagperf-6n: 6 * 114688 = 688128 (all parameters, no attention term)
    assert flops_per_token(shape, "flagperf-6n") == 6 * 114688
    # inference: palm 2 * 106496 + 4 * 4096 = 229376; megatron 212992 + 8192 = 221184;
    # flagperf 2 * 114688 = 229376
    assert flops_per_token(shape, "palm", training=False) == 229376
    assert flops_per_token(shape, "megatron", training=False) == 221184
    assert flops_per_token(shape, "flagperf-6n", training=False) == 229376


def test_llama_shape_from_model_and_from_config() -> None:
    model = llama()
    assert sum(p.numel() for p in model.parameters()) == LLAMA_PARAMS
    shape = transformer_shape(model, seq_len=T)
    # torchtitan's get_num_params(exclude_embedding=True): less tok_embeddings, 86848 - 6400
    assert (shape.params, shape.embedding_params) == (LLAMA_PARAMS, LLAMA_EMBEDDING)
    assert shape.matmul_params == 80448
    # palm: 6 * 80448 + 12 * 2 * 4 * 16 * 32 = 482688 + 49152 = 531840
    assert flops_per_token(shape, "palm") == 531840
    from_config = transformer_shape(model.config, seq_len=T)  # built on the meta device
    assert dataclass_fields(from_config) == dataclass_fields(shape)
    assert "meta device" in from_config.source


def dataclass_fields(shape: TransformerShape) -> tuple[int, ...]:
    return (shape.params, shape.embedding_params, shape.layers, shape.heads, shape.head_dim)


def test_frozen_weights_count_twice_in_flagperf_6n() -> None:
    model = llama()
    model.model.embed_tokens.weight.requires_grad_(False)  # 6400 frozen
    shape = transformer_shape(model, seq_len=T)
    assert shape.frozen_params == 6400
    # 6 * (86848 - 6400) + 2 * 6400 = 482688 + 12800 = 495488
    assert flops_per_token(shape, "flagperf-6n") == 495488


def test_nominal_params_override() -> None:
    # FlagPerf's llama2_7b: 6 * 7e9 per token, whatever the model holds
    shape = transformer_shape(llama(), params=7e9)
    assert flops_per_token(shape, "flagperf-6n") == 42e9
    with pytest.raises(ValueError, match="seq_len"):
        flops_per_token(shape, "palm")  # the attention term needs T


def test_palm_matches_a_count_of_the_matrix_products() -> None:
    """FlopCounterMode's matrix products of one training step of the Llama (no biases) equal
    palm's formula less the RMSNorm weights, which palm's 6N counts but no matmul uses, plus
    the attention backward's recomputed Q.K^T, which the kernel runs and palm leaves out:
    6 * (80448 - 5 * 64) + 12 * L*H*Q*T + 4 * L*H*Q*T = 480768 + 49152 + 8192 = 538112 per
    token (attention counted full, as palm does)."""
    torch.manual_seed(0)
    model = llama().train()
    ids = torch.randint(0, 100, (2, T))
    inputs = {"input_ids": ids, "labels": ids}
    report = pf.count(model, inputs, backward=True, scope="torchvision")
    # The rotary angles (inv_freq x positions) are no weight's work: transformers 4.46 (the
    # oldest stack) computes them with a bmm in each forward (512 FLOPs here), 5.x without one.
    rope = sum(report.counts.get("model.rotary_emb", {}).values())
    assert (report.flops - rope) / pf.tokens_in(inputs) == 538112
    counted = pf.counted_per_token(model, inputs)  # the full scope: plus pointwise work
    assert 538112 < counted < 1.2 * 538112


@given(
    params=st.integers(1, 10**12),
    embedding=st.integers(0, 10**6),
    layers=st.integers(1, 200),
    heads=st.integers(1, 128),
    head_dim=st.integers(1, 256),
    seq_len=st.integers(1, 1 << 17),
)
def test_conventions_differ_by_the_attention_term(
    params: int, embedding: int, layers: int, heads: int, head_dim: int, seq_len: int
) -> None:
    shape = TransformerShape(params + embedding, layers, heads, head_dim, seq_len, embedding)
    attention = layers * heads * head_dim * seq_len
    palm, megatron = flops_per_token(shape, "palm"), flops_per_token(shape, "megatron")
    assert palm - megatron == pytest.approx(6 * attention)
    assert palm - 6 * params == pytest.approx(12 * attention)
    # forward only is a third of forward + backward
    assert flops_per_token(shape, "palm", training=False) == pytest.approx(palm / 3)
    assert flops_per_token(shape, "megatron", training=False) == pytest.approx(megatron / 3)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="Expected argument `model`"):
        transformer_shape(torch.nn.Linear(2, 2))  # no L, H, Q
    shape = transformer_shape(torch.nn.Linear(2, 2), layers=1, heads=1, head_dim=2, seq_len=4)
    assert shape.params == 6 and flops_per_token(shape, "palm") == 6 * 6 + 12 * 8
    with pytest.raises(ValueError, match="Expected argument `convention`"):
        flops_per_token(shape, "counted")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Expected argument `shape`"):
        flops_per_token({"params": 1}, "palm")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Expected argument `seq_len`"):
        transformer_shape(llama(), seq_len=0)
