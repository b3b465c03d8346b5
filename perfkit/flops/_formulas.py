"""The formulas perfkit adds to torch.utils.flop_counter's (see docs/flops.md for the table).

Multiply-add operators count 2 FLOPs per multiply-add, like PyTorch's own formulas (a bias
add fused into the product is not counted, as in ``addmm``). The other operators count the
arithmetic of a straightforward implementation, per element, as written next to each one.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import prod
from typing import Any

import torch
from torch.utils.flop_counter import conv_flop_count, sdpa_backward_flop_count, sdpa_flop_count

from perfkit.flops._registry import packets, register_formula

aten = torch.ops.aten
Shape = Sequence[int]


# --- multiply-add operators ----------------------------------------------------------------


@register_formula(aten.mv, multiply_add=True)
def mv_flop(a_shape: Shape, v_shape: Shape, *args: Any, **kwargs: Any) -> int:
    """(m, k) @ (k,): m * k multiply-adds."""
    m, k = a_shape
    return 2 * m * k


@register_formula(aten.addmv, multiply_add=True)
def addmv_flop(bias_shape: Shape, a_shape: Shape, v_shape: Shape, *args: Any, **kwargs: Any) -> int:
    """bias + (m, k) @ (k,): the product only, as PyTorch counts ``addmm``."""
    return mv_flop(a_shape, v_shape)


@register_formula(aten.dot, multiply_add=True)
def dot_flop(a_shape: Shape, b_shape: Shape, *args: Any, **kwargs: Any) -> int:
    """(k,) . (k,): k multiply-adds."""
    return 2 * a_shape[0]


@register_formula(
    packets(
        aten,
        (
            "_scaled_dot_product_flash_attention_for_cpu",
            "_scaled_dot_product_fused_attention_overrideable",
        ),
    ),
    multiply_add=True,
)
def sdpa_flop(
    query_shape: Shape, key_shape: Shape, value_shape: Shape, *args: Any, **kwargs: Any
) -> int:
    """Attention on CPU (and out-of-tree accelerators): Q @ K^T and P @ V, dense.

    Dense: the S_q x S_k products are counted, as PyTorch counts its CUDA attention kernels, so
    CPU and GPU counts agree; ``count(..., causal=...)`` applies a causal convention on top.
    """
    return int(sdpa_flop_count(query_shape, key_shape, value_shape))


@register_formula(
    packets(
        aten,
        (
            "_scaled_dot_product_flash_attention_for_cpu_backward",
            "_scaled_dot_product_fused_attention_overrideable_backward",
        ),
    ),
    multiply_add=True,
)
def sdpa_backward_flop(
    grad_out_shape: Shape,
    query_shape: Shape,
    key_shape: Shape,
    value_shape: Shape,
    *args: Any,
    **kwargs: Any,
) -> int:
    """Attention backward: Q K^T recomputed plus the four gradient products, dense."""
    return int(sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape))


@register_formula(aten.convolution_backward, multiply_add=True, replaces_torch=True)
def conv_backward_flop(
    grad_out_shape: Shape,
    x_shape: Shape,
    w_shape: Shape,
    bias_sizes: Any,
    stride: Any,
    padding: Any,
    dilation: Any,
    transposed: bool,
    output_padding: Any,
    groups: int,
    output_mask: Sequence[bool],
    *args: Any,
    **kwargs: Any,
) -> int:
    """Convolution backward: the input gradient and the weight gradient each cost one forward.

    Replaces PyTorch's ``conv_backward_flop`` (torch 2.x, torch/utils/flop_counter.py), whose
    weight-gradient term counts the transposed problem ``conv(x^T, grad_out^T)`` with the weight
    shape ``(C_in / groups, C_out, k)`` but the batch ``C_in``: it ignores ``groups``, so grouped
    and depthwise convolutions are over-counted by the group factor (a depthwise conv of 32
    channels reports backward = 33x its forward instead of 2x). Each gradient is a convolution
    with exactly the forward's multiply-adds (the same output-position x weight products, summed
    over a different index), so the correct count is the forward's once per gradient computed.
    """
    forward = conv_flop_count(list(x_shape), list(w_shape), list(grad_out_shape), transposed)
    return forward * (int(output_mask[0]) + int(output_mask[1]))


def _attention_macs(batch: int, q_len: int, kv_len: int, embed: int) -> int:
    """Multiply-adds of Q K^T and P V over all heads: each is batch * q_len * kv_len * embed."""
    return 2 * batch * q_len * kv_len * embed


def _mha_macs(query_shape: Shape, key_shape: Shape, embed: int) -> int:
    """In-projections of Q, K, V, attention and the out-projection (batch-first shapes)."""
    *batch_dims, q_len, _ = query_shape
    kv_len = key_shape[-2]
    batch = prod(batch_dims)
    projections = batch * (2 * q_len + 2 * kv_len) * embed * embed  # Q, out: q_len; K, V: kv_len
    return projections + _attention_macs(batch, q_len, kv_len, embed)


@register_formula(aten._native_multi_head_attention, multiply_add=True)
def native_mha_flop(
    query_shape: Shape,
    key_shape: Shape,
    value_shape: Shape,
    embed_dim: int,
    *args: Any,
    **kwargs: Any,
) -> int:
    """``nn.MultiheadAttention``'s fused inference path: the projections and attention, dense.

    ``count`` turns this fast path off (so that inference and training count the same
    operators); the formula covers graphs that call the fused operator directly.
    """
    return 2 * _mha_macs(query_shape, key_shape, embed_dim)


@register_formula(aten._transformer_encoder_layer_fwd, multiply_add=True)
def transformer_encoder_layer_flop(
    src_shape: Shape, embed_dim: int, *args: Any, **kwargs: Any
) -> int:
    """``nn.TransformerEncoderLayer``'s fused inference path: attention block plus the MLP.

    Multiply-adds only (the norms and activations inside the fused kernel are not counted, in
    either scope). Arguments 14 and 16 (counting ``src`` as 0) are the MLP's two weights.
    """
    ffn_1, ffn_2 = args[12], args[14]
    rows = prod(src_shape[:-1])
    return 2 * (_mha_macs(src_shape, src_shape, embed_dim) + rows * (prod(ffn_1) + prod(ffn_2)))


# --- other operators (scope "full" only) ----------------------------------------------------

# Mean (1 add), variance (subtract, square, add) per element: the statistics of a norm layer.
_STATS_FLOPS = 4
# (x - mean) * rstd, or one multiply and one add once scale and shift are folded per channel.
_NORMALISE_FLOPS = 2
# * weight + bias, per element, where the weight cannot be folded into the normalisation.
_AFFINE_FLOPS = 2


@register_formula(aten._native_batch_norm_legit_no_training, multiply_add=False)
def batch_norm_inference_flop(x_shape: Shape, *args: Any, **kwargs: Any) -> int:
    """Inference batch norm: running statistics folded into a per-channel scale and shift."""
    return _NORMALISE_FLOPS * prod(x_shape)


@register_formula([aten._native_batch_norm_legit, aten.native_batch_norm], multiply_add=False)
def batch_norm_flop(x_shape: Shape, *args: Any, **kwargs: Any) -> int:
    """Batch norm; in training the batch statistics are computed too.

    Both overloads end with ``training, momentum, eps``.
    """
    training = args[-3]
    return (_STATS_FLOPS * training + _NORMALISE_FLOPS) * prod(x_shape)


def _norm_flop(x_shape: Shape, weight_shape: Shape | None) -> int:
    affine = _AFFINE_FLOPS if weight_shape is not None else 0
    return (_STATS_FLOPS + _NORMALISE_FLOPS + affine) * prod(x_shape)


@register_formula(aten.native_layer_norm, multiply_add=False)
def layer_norm_flop(
    x_shape: Shape, normalized_shape: Shape, weight_shape: Shape | None, *args: Any, **kwargs: Any
) -> int:
    """Layer norm: statistics, normalisation, and the elementwise affine if present."""
    return _norm_flop(x_shape, weight_shape)


@register_formula(aten.native_group_norm, multiply_add=False)
def group_norm_flop(x_shape: Shape, weight_shape: Shape | None, *args: Any, **kwargs: Any) -> int:
    """Group norm: as layer norm (the affine is per channel, the statistics per group)."""
    return _norm_flop(x_shape, weight_shape)


# max (compare), subtract, exp, sum (add), divide - or for log-softmax, subtract the log-sum.
_SOFTMAX_FLOPS = 5


@register_formula(packets(aten, ("_softmax", "_log_softmax", "_safe_softmax")), multiply_add=False)
def softmax_flop(x_shape: Shape, *args: Any, **kwargs: Any) -> int:
    """Softmax and log-softmax: 5 FLOPs per element."""
    return _SOFTMAX_FLOPS * prod(x_shape)


def _window(kernel_size: int | Shape, dims: int = 2) -> int:
    """Elements of a pooling window (an int or a single size is used for every dimension)."""
    if isinstance(kernel_size, int):
        return kernel_size**dims
    if len(kernel_size) == 1:
        return kernel_size[0] ** dims
    return prod(kernel_size)


@register_formula(aten.max_pool2d_with_indices, multiply_add=False)
def max_pool2d_flop(
    x_shape: Shape, kernel_size: int | Shape, *args: Any, out_shape: Sequence[Shape], **kwargs: Any
) -> int:
    """Max pooling: window - 1 comparisons per output element (``out_shape``: values, indices)."""
    return (_window(kernel_size) - 1) * prod(out_shape[0])


@register_formula(aten.max_pool3d_with_indices, multiply_add=False)
def max_pool3d_flop(
    x_shape: Shape, kernel_size: int | Shape, *args: Any, out_shape: Sequence[Shape], **kwargs: Any
) -> int:
    """3-D max pooling (video models): window - 1 comparisons per output element."""
    return (_window(kernel_size, 3) - 1) * prod(out_shape[0])


@register_formula(aten.avg_pool2d, multiply_add=False)
def avg_pool2d_flop(
    x_shape: Shape, kernel_size: int | Shape, *args: Any, out_shape: Shape, **kwargs: Any
) -> int:
    """Average pooling: window - 1 adds and one divide per output element."""
    return _window(kernel_size) * prod(out_shape)


@register_formula(aten.avg_pool3d, multiply_add=False)
def avg_pool3d_flop(
    x_shape: Shape, kernel_size: int | Shape, *args: Any, out_shape: Shape, **kwargs: Any
) -> int:
    """3-D average pooling: window FLOPs per output element."""
    return _window(kernel_size, 3) * prod(out_shape)


@register_formula([aten.argmax, aten.argmin], multiply_add=False)
def argmax_flop(x_shape: Shape, *args: Any, out_shape: Shape, **kwargs: Any) -> int:
    """Arg-max / arg-min: one comparison per input element beyond the first of each output."""
    return prod(x_shape) - prod(out_shape)


@register_formula(aten.linalg_vector_norm, multiply_add=False)
def vector_norm_flop(x_shape: Shape, *args: Any, out_shape: Shape, **kwargs: Any) -> int:
    """Vector norm: a power (square, abs) and an add per input element, a root per output."""
    return 2 * prod(x_shape) + prod(out_shape)


@register_formula([aten._adaptive_avg_pool2d, aten.mean], multiply_add=False)
def mean_flop(x_shape: Shape, *args: Any, out_shape: Shape, **kwargs: Any) -> int:
    """Means over windows: (inputs - outputs) adds plus one divide per output = one per input."""
    return prod(x_shape)


@register_formula(aten.sum, multiply_add=False)
def sum_flop(x_shape: Shape, *args: Any, out_shape: Shape, **kwargs: Any) -> int:
    """Sum: one add per input element beyond the first of each output."""
    return prod(x_shape) - prod(out_shape)


# Four neighbours: 4 multiplies by the precomputed weights and 3 adds.
_BILINEAR_FLOPS = 7


@register_formula(aten.upsample_bilinear2d, multiply_add=False)
def upsample_bilinear2d_flop(x_shape: Shape, *args: Any, out_shape: Shape, **kwargs: Any) -> int:
    """Bilinear resampling: 7 FLOPs per output element."""
    return _BILINEAR_FLOPS * prod(out_shape)


@register_formula(aten.cumsum, multiply_add=False)
def cumsum_flop(x_shape: Shape, dim: int, *args: Any, **kwargs: Any) -> int:
    """Cumulative sum: one add per element except the first of each scanned line."""
    if not x_shape:
        return 0
    return prod(x_shape) - prod(x_shape) // x_shape[dim]


@register_formula(aten.index_add, multiply_add=False)
def index_add_flop(
    x_shape: Shape, dim: int, index_shape: Shape, source_shape: Shape, *args: Any, **kwargs: Any
) -> int:
    """Index add: one add per source element, plus one multiply each when ``alpha`` is not 1."""
    alpha = kwargs.get("alpha", 1)
    return prod(source_shape) * (1 if alpha == 1 else 2)


# Sixteen neighbours: 16 multiplies by the precomputed weights and 15 adds.
_BICUBIC_FLOPS = 31


@register_formula(aten.upsample_bicubic2d, multiply_add=False)
def upsample_bicubic2d_flop(x_shape: Shape, *args: Any, out_shape: Shape, **kwargs: Any) -> int:
    """Bicubic resampling: 31 FLOPs per output element."""
    return _BICUBIC_FLOPS * prod(out_shape)


# Per output element and channel: bilinear = 4 multiplies by the neighbours' weights + 3 adds
# (as upsampling); nearest = none; bicubic = 16 multiplies + 15 adds.
_GRID_SAMPLE_FLOPS = {0: _BILINEAR_FLOPS, 1: 0, 2: _BICUBIC_FLOPS}


@register_formula(aten.grid_sampler_2d, multiply_add=False)
def grid_sampler_2d_flop(
    x_shape: Shape,
    grid_shape: Shape,
    interpolation_mode: int,
    *args: Any,
    out_shape: Shape,
    **kwargs: Any,
) -> int:
    """Grid sampling (RAFT's correlation lookup): the interpolation per output element."""
    return _GRID_SAMPLE_FLOPS[interpolation_mode] * prod(out_shape)
