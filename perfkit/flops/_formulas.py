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
from torch.utils.flop_counter import sdpa_backward_flop_count, sdpa_flop_count

from perfkit.flops._registry import register_formula

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
    [
        aten._scaled_dot_product_flash_attention_for_cpu,
        aten._scaled_dot_product_fused_attention_overrideable,
    ],
    multiply_add=True,
)
def sdpa_flop(
    query_shape: Shape, key_shape: Shape, value_shape: Shape, *args: Any, **kwargs: Any
) -> int:
    """Attention on CPU (and out-of-tree accelerators): Q @ K^T and P @ V, dense.

    Causal convention: a causal mask does not reduce the count (the dense S_q x S_k products are
    counted, as PyTorch counts its CUDA attention kernels), so CPU and GPU counts agree.
    """
    return int(sdpa_flop_count(query_shape, key_shape, value_shape))


@register_formula(
    [
        aten._scaled_dot_product_flash_attention_for_cpu_backward,
        aten._scaled_dot_product_fused_attention_overrideable_backward,
    ],
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


@register_formula([aten._softmax, aten._log_softmax], multiply_add=False)
def softmax_flop(x_shape: Shape, *args: Any, **kwargs: Any) -> int:
    """Softmax and log-softmax: 5 FLOPs per element."""
    return _SOFTMAX_FLOPS * prod(x_shape)


def _window(kernel_size: int | Shape) -> int:
    if isinstance(kernel_size, int):
        return kernel_size * kernel_size
    return kernel_size[0] * kernel_size[-1]


@register_formula(aten.max_pool2d_with_indices, multiply_add=False)
def max_pool2d_flop(
    x_shape: Shape, kernel_size: int | Shape, *args: Any, out_shape: Sequence[Shape], **kwargs: Any
) -> int:
    """Max pooling: window - 1 comparisons per output element (``out_shape``: values, indices)."""
    return (_window(kernel_size) - 1) * prod(out_shape[0])


@register_formula(aten.avg_pool2d, multiply_add=False)
def avg_pool2d_flop(
    x_shape: Shape, kernel_size: int | Shape, *args: Any, out_shape: Shape, **kwargs: Any
) -> int:
    """Average pooling: window - 1 adds and one divide per output element."""
    return _window(kernel_size) * prod(out_shape)


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
