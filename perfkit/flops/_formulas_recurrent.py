"""FLOP formulas for recurrent layers (LSTM, GRU, RNN), as each backend dispatches them.

On CPU an ``nn.LSTM`` runs one ``mkldnn_rnn_layer`` per layer and direction (oneDNN), while GRU
and RNN decompose into ``addmm`` (counted by PyTorch); cuDNN and MIOpen run the whole stack as
one ``_cudnn_rnn`` / ``miopen_rnn``; other backends may keep ``aten.lstm`` / ``gru`` /
``rnn_tanh`` / ``rnn_relu`` whole, and CUDA's ``LSTMCell`` / ``GRUCell`` fuse the gate arithmetic
into ``_thnn_fused_*_cell`` after two ``mm``.

Multiply-adds: every weight matrix (input-hidden, hidden-hidden, projection) multiplies one
vector per time step, batch element and direction, so a layer stack costs
``rows * sum(weight elements)`` multiply-adds, where ``rows`` = time steps x batch (the packed
rows of a PackedSequence). Bias adds are not counted (as in ``addmm``); the gate arithmetic is
not a multiply-add (it is the ``_thnn_fused_*`` formulas below, scope "full").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from math import prod
from typing import Any

import torch

from perfkit.flops._registry import register_formula

aten = torch.ops.aten
Shape = Sequence[int]


def _is_shape(value: Any) -> bool:
    return isinstance(value, (tuple, list, torch.Size)) and all(isinstance(d, int) for d in value)


def _weight_elements(weights: Sequence[Any]) -> int:
    """Elements of the 2-D weight matrices in ``weights`` (biases and hidden states skipped)."""
    return sum(prod(w) for w in weights if _is_shape(w) and len(w) == 2)


def _stack_flop(rows_shape: Shape, weights: Sequence[Any]) -> int:
    """2 FLOPs per multiply-add: ``rows`` = product of all dims of the input but the features."""
    return 2 * prod(rows_shape[:-1]) * _weight_elements(weights)


def _params_argument(args: Sequence[Any]) -> Sequence[Any]:
    """The ``Tensor[] params`` argument: the list argument holding 2-D weights."""
    for arg in args:
        if isinstance(arg, (list, tuple)) and not _is_shape(arg) and _weight_elements(arg):
            return arg
    return ()


@register_formula([aten.lstm, aten.gru, aten.rnn_tanh, aten.rnn_relu], multiply_add=True)
def rnn_stack_flop(input_shape: Shape, *args: Any, **kwargs: Any) -> int:
    """Whole LSTM / GRU / RNN stacks (``.input`` and ``.data`` (packed) overloads)."""
    return _stack_flop(input_shape, _params_argument(args))


@register_formula([aten._cudnn_rnn, aten.miopen_rnn], multiply_add=True)
def fused_rnn_flop(input_shape: Shape, weights: Sequence[Any], *args: Any, **kwargs: Any) -> int:
    """cuDNN / MIOpen stacks: ``weights`` lists every layer's and direction's matrices."""
    return _stack_flop(input_shape, weights)


@register_formula([aten._cudnn_rnn_backward, aten.miopen_rnn_backward], multiply_add=True)
def fused_rnn_backward_flop(
    input_shape: Shape, weights: Sequence[Any], *args: Any, **kwargs: Any
) -> int:
    """Backward of a stack: per weight, one product for the input / hidden-state gradient and
    one for the weight gradient (``output_mask``: which of input, hx, cx, weights are needed;
    the input and hidden-state gradients cannot be skipped inside a recurrence)."""
    output_mask = args[-1]
    return fused_rnn_flop(input_shape, weights) * (1 + int(output_mask[3]))


@register_formula(aten.mkldnn_rnn_layer, multiply_add=True)
def mkldnn_rnn_layer_flop(
    input_shape: Shape, w_ih: Shape, w_hh: Shape, *args: Any, **kwargs: Any
) -> int:
    """One oneDNN LSTM layer in one direction: input (T, B, I), W_ih (4H, I), W_hh (4H, H)."""
    return _stack_flop(input_shape, [w_ih, w_hh])


@register_formula(aten.mkldnn_rnn_layer_backward, multiply_add=True)
def mkldnn_rnn_layer_backward_flop(
    input_shape: Shape, w_ih: Shape, w_hh: Shape, *args: Any, **kwargs: Any
) -> int:
    """Its backward: gate gradients times each weight (input and hidden gradients) and times
    each layer input (weight gradients) - twice the forward's multiply-adds."""
    return 2 * mkldnn_rnn_layer_flop(input_shape, w_ih, w_hh)


# Per hidden unit of a fused LSTM cell: 4 gate pre-activation sums (input part + hidden part),
# 3 sigmoids + 1 tanh, c' = f*c + i*g (3), h' = o * tanh(c') (2 with the tanh).
_LSTM_CELL_FLOPS = 4 + 4 + 3 + 2
# Per hidden unit of a fused GRU cell: r, z = sigmoid(i + h) (4), n = tanh(i_n + r * h_n) (3),
# h' = (1 - z) * n + z * h (4).
_GRU_CELL_FLOPS = 4 + 3 + 4


def _fused_cell_formula(gates: int, flops_per_unit: int) -> Callable[..., int]:
    """The formula of a fused CUDA cell with ``gates`` gates per hidden unit: its gate
    arithmetic, ``flops_per_unit`` per hidden unit (its two ``mm`` are counted by PyTorch)."""

    def formula(
        input_gates_shape: Shape,
        hidden_gates_shape: Shape,
        state_shape: Shape,
        input_bias_shape: Shape | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> int:
        units = prod(input_gates_shape) // gates
        # Each of the two biases (input and hidden) is one add per gate element.
        bias_adds = 2 * prod(input_gates_shape) if input_bias_shape is not None else 0
        return flops_per_unit * units + bias_adds

    return formula


fused_lstm_cell_flop = register_formula(aten._thnn_fused_lstm_cell, multiply_add=False)(
    _fused_cell_formula(4, _LSTM_CELL_FLOPS)
)
fused_gru_cell_flop = register_formula(aten._thnn_fused_gru_cell, multiply_add=False)(
    _fused_cell_formula(3, _GRU_CELL_FLOPS)
)
