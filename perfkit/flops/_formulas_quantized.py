"""FLOP formulas for quantized (int8) convolution and linear operators (``quantized::``).

Unit: 2 **int8 operations** per multiply-add (the ``quantized::`` kernels multiply int8 by int8
into int32), reported with the other multiply-adds (``FlopReport.macs``) and separately as
``FlopReport.int8_macs``. The weight comes packed (a ScriptObject): its shape is read from
``unpack()``. Dynamic linear layers (float activations, int8 weights) count the same way; the
fp16 ones are fp16 multiply-adds.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import prod
from typing import Any

import torch

from perfkit.flops._registry import packets, register_formula

Shape = Sequence[int]

# fmt: off
_CONV = (
    "conv1d", "conv2d", "conv3d", "conv1d_relu", "conv2d_relu", "conv3d_relu", "conv2d_add",
    "conv2d_add_relu", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
)
_LINEAR = (
    "linear", "linear_relu", "linear_leaky_relu", "linear_tanh", "linear_dynamic",
    "linear_relu_dynamic", "linear_dynamic_fp16", "linear_relu_dynamic_fp16",
    "linear_with_input_q_dq_qweight_dq_output_fp32",
    "linear_with_input_q_dq_qweight_dq_relu_output_fp32",
)
_ELEMENTWISE = (
    "add", "add_relu", "mul", "mul_relu", "add_scalar", "hardswish", "sigmoid", "leaky_relu",
    "relu6", "elu", "celu",
)
# fmt: on


def _weight(args: Sequence[Any]) -> tuple[Shape, Any]:
    """The packed weight among the arguments: (weight shape, packed object)."""
    packed: Any = next(arg for arg in args if isinstance(arg, torch.ScriptObject))
    return tuple(packed.unpack()[0].shape), packed


@register_formula(packets(torch.ops.quantized, _CONV), multiply_add=True)
def quantized_conv_flop(x_shape: Shape, *args: Any, out_shape: Shape, **kwargs: Any) -> int:
    """Convolution: each output (input, if transposed) position times C_in/groups * kernel."""
    w_shape, packed = _weight(args)
    positions = x_shape if packed.transpose() else out_shape
    return 2 * prod(positions) * prod(w_shape[1:])


@register_formula(packets(torch.ops.quantized, _LINEAR), multiply_add=True)
def quantized_linear_flop(x_shape: Shape, *args: Any, **kwargs: Any) -> int:
    """Linear: (rows, in) x (out, in)^T, rows * in * out multiply-adds."""
    w_shape, _ = _weight(args)
    return 2 * prod(x_shape[:-1]) * prod(w_shape)


@register_formula(packets(torch.ops.quantized, _ELEMENTWISE), multiply_add=False)
def quantized_elementwise_flop(*args: Any, out_shape: Shape, **kwargs: Any) -> int:
    """Requantizing add, mul and activations: one operation per output element."""
    return prod(out_shape)


@register_formula(torch.ops.aten.quantized_max_pool2d, multiply_add=False)
def quantized_max_pool2d_flop(
    x_shape: Shape, kernel_size: Shape, *args: Any, out_shape: Shape, **kwargs: Any
) -> int:
    """Quantized max pooling: window - 1 comparisons per output element."""
    return (prod(kernel_size) - 1) * prod(out_shape)  # the kernel size always comes as a list
