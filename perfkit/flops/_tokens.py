"""FLOPs per token of a transformer language model, in the conventions MFU is quoted in.

Pure arithmetic on a :class:`TransformerShape` (read from a Hugging Face config or model, or a
torch model with the sizes given); torch is imported only to read a model or to count a step.
FLOPs are 2 per multiply-add everywhere; recomputation (activation checkpointing, the flash
attention backward's recomputed product) is never counted: these are model FLOPs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from perfkit import checks

TokenConvention = Literal["flagperf-6n", "palm", "megatron", "counted"]
#: Each token convention, in words (the summary's ``mfu_convention``).
TOKEN_CONVENTIONS: dict[TokenConvention, str] = {
    "flagperf-6n": (
        "flagperf-6n: 6 x N per trained token (N all parameters, nominal; frozen ones 2 x), "
        "2 x N per inferred token, no attention term (FlagPerf's LLM cases)"
    ),
    "palm": (
        "palm: 6 x N + 12 x L x H x Q x T per trained token, 2 x N + 4 x L x H x Q x T per "
        "inferred token (N without embedding tables; causal attention not discounted; PaLM "
        "appendix B, nanoGPT, torchtitan)"
    ),
    "megatron": (
        "megatron: 6 x N + 6 x L x H x Q x T per trained token, 2 x N + 2 x L x H x Q x T per "
        "inferred token (the attention term halved for the causal mask, Megatron-LM)"
    ),
    "counted": "counted: perfkit.flops.count of one real step, divided by its tokens",
}


@dataclass(frozen=True)
class TransformerShape:
    """The sizes the token conventions need.

    ``params``: every parameter, each shared tensor once (N of flagperf-6n; pass the active
    count for a mixture of experts); ``embedding_params``: of them, the embedding tables that
    are only looked up (token and position embeddings, not a table tied to the output
    projection): palm and megatron leave them out of N; ``frozen_params``: of ``params``, those
    not trained (``requires_grad`` False); ``layers`` L, ``heads`` H (query heads), ``head_dim``
    Q, ``seq_len`` T (tokens each attention spans; None: unknown, the attention term cannot be
    formed); ``source``: where the sizes were read from.
    """

    params: int
    layers: int
    heads: int
    head_dim: int
    seq_len: int | None = None
    embedding_params: int = 0
    frozen_params: int = 0
    source: str = "given"

    @property
    def matmul_params(self) -> int:
        """N of palm and megatron: ``params`` less the embedding tables only looked up."""
        return self.params - self.embedding_params

    def to_json(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict (recorded in meta.json's ``flops``)."""
        return dataclasses.asdict(self)


def flops_per_token(
    shape: TransformerShape, convention: TokenConvention = "palm", *, training: bool = True
) -> float:
    """FLOPs per token (2 per multiply-add) of ``shape`` in ``convention`` - ``training``:
    forward + backward (per trained token), else forward only (per inferred token).

    ================ ========================================= =============================
    convention       training                                  inference
    ================ ========================================= =============================
    ``flagperf-6n``  6 x (N - frozen) + 2 x frozen, N = params 2 x N
    ``palm``         6 x N' + 12 x L x H x Q x T               2 x N' + 4 x L x H x Q x T
    ``megatron``     6 x N' + 6 x L x H x Q x T                2 x N' + 2 x L x H x Q x T
    ================ ========================================= =============================

    N' = ``shape.matmul_params``. ``counted`` has no formula: use :func:`counted_per_token`.
    """
    if not isinstance(shape, TransformerShape):
        raise checks.wrong_type("shape", "a TransformerShape", shape)
    checks.one_of("convention", convention, tuple(c for c in TOKEN_CONVENTIONS if c != "counted"))
    if convention == "flagperf-6n":
        if not training:
            return 2.0 * shape.params
        return 6.0 * (shape.params - shape.frozen_params) + 2.0 * shape.frozen_params
    if shape.seq_len is None:
        raise ValueError(
            f"Expected argument `shape` to have a seq_len (T) for the {convention!r} "
            "convention's attention term but got seq_len=None; pass seq_len="
        )
    attention = shape.layers * shape.heads * shape.head_dim * shape.seq_len  # L x H x Q x T
    factor = {("palm", True): 12, ("palm", False): 4, ("megatron", True): 6}.get(
        (convention, training), 2
    )
    return (6.0 if training else 2.0) * shape.matmul_params + factor * attention


def _config_of(source: Any) -> Any:
    """The Hugging Face config of a model (``.config``) or the config itself."""
    return getattr(source, "config", source)


def _config_int(config: Any, names: tuple[str, ...]) -> int | None:
    """The first of ``names`` the config has as a positive int."""
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _parameter_counts(model: Any) -> tuple[int, int, int]:
    """(every parameter once, embedding tables only looked up, frozen parameters) of a torch
    model."""
    import torch

    params = {id(p): p for p in model.parameters()}
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    tied = {id(p) for p in output.parameters()} if output is not None else set()
    embeddings = {
        id(p): p
        for module in model.modules()
        if isinstance(module, torch.nn.Embedding)
        for p in module.parameters()
        if id(p) not in tied
    }
    return (
        sum(p.numel() for p in params.values()),
        sum(p.numel() for p in embeddings.values()),
        sum(p.numel() for p in params.values() if not p.requires_grad),
    )


def _meta_model(config: Any) -> Any:
    """A Hugging Face causal LM built from ``config`` on the meta device (no memory)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def transformer_shape(
    model: Any,
    *,
    seq_len: int | None = None,
    layers: int | None = None,
    heads: int | None = None,
    head_dim: int | None = None,
    params: int | None = None,
) -> TransformerShape:
    """The :class:`TransformerShape` of ``model``: a Hugging Face model (its ``config`` gives
    L, H and Q: ``num_hidden_layers`` / ``n_layer``, ``num_attention_heads`` / ``n_head``,
    ``head_dim`` or ``hidden_size // heads``; its parameters give N), a Hugging Face config
    (N from the model built on the meta device; needs transformers) or any torch module with
    ``layers``, ``heads`` and ``head_dim`` given. A keyword given overrides what is read
    (``params``: the nominal or active count, e.g. 7e9 as FlagPerf's llama2_7b config says).
    ``seq_len``: T, the tokens each sequence's attention spans (the training sequence length).
    """
    config = _config_of(model)
    is_module = hasattr(model, "parameters") and hasattr(model, "modules")
    sizes = {
        "layers": layers or _config_int(config, ("num_hidden_layers", "n_layer", "num_layers")),
        "heads": heads or _config_int(config, ("num_attention_heads", "n_head", "num_heads")),
    }
    hidden = _config_int(config, ("hidden_size", "n_embd", "d_model"))
    sizes["head_dim"] = head_dim or _config_int(config, ("head_dim",))
    if sizes["head_dim"] is None and hidden is not None and sizes["heads"]:
        sizes["head_dim"] = hidden // sizes["heads"]
    missing = [name for name, value in sizes.items() if not value]
    if missing:
        raise ValueError(
            f"Expected argument `model` to be a Hugging Face model or config, or a torch module "
            f"with {', '.join(missing)} given, but got {checks.short_repr(model, 80)} "
            f"({type(model).__name__}) without {', '.join(missing)}"
        )
    module = model if is_module else _meta_model(config)
    total, embedding, frozen = _parameter_counts(module)
    for name, value in (("seq_len", seq_len), ("params", params)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0
        ):
            raise checks.wrong_value(name, "a positive number or None", value)
    source = type(model).__name__ + ("" if is_module else " (parameters on the meta device)")
    size = {name: int(value or 0) for name, value in sizes.items()}
    return TransformerShape(
        params=int(params) if params is not None else total,
        layers=size["layers"],
        heads=size["heads"],
        head_dim=size["head_dim"],
        seq_len=int(seq_len) if seq_len is not None else None,
        embedding_params=embedding,
        frozen_params=frozen if params is None else 0,
        source=source,
    )


def tokens_in(inputs: Any) -> int:
    """Tokens a model input processes: the elements of ``input_ids`` (padding included: the
    model computes on it) of a dict, or of a tensor."""
    ids = inputs.get("input_ids") if isinstance(inputs, Mapping) else inputs
    numel = getattr(ids, "numel", None)
    if numel is None:
        raise checks.wrong_type("inputs", "a tensor of token ids or a dict with input_ids", inputs)
    return int(numel())


def counted_per_token(model: Any, inputs: Any, *, training: bool = True) -> float:
    """FLOPs per token of one real step (convention ``counted``):
    ``perfkit.flops.count(model, inputs, backward=training).flops / tokens_in(inputs)`` - the
    operators that ran, attention as the kernel computed it (a causal kernel's masked half
    included or not, as it ran)."""
    from perfkit.flops._count import count

    return count(model, inputs, backward=training).flops / tokens_in(inputs)
