"""perfkit.flops.count on fused attention, quantized, recurrent, in-place and grouped-conv ops.

Every expected number is hand arithmetic written next to it (MAC = one multiply-add, 2 FLOPs).
"""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from perfkit.flops import FlopUndercountWarning, count
from perfkit.flops import _formulas as f
from perfkit.flops import _formulas_recurrent as rnn
from tests.custom_ops import fused_matmul

aten = torch.ops.aten


def _tv(model: nn.Module, inputs: object, **kwargs: object) -> int:
    """FLOPs of the multiply-add operators (scope "torchvision")."""
    return count(model, inputs, scope="torchvision", **kwargs).flops  # type: ignore[arg-type]


class _Call(nn.Module):
    """A module whose forward is ``fn``."""

    def __init__(self, fn: object) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        return self.fn(*args)  # type: ignore[operator]


# --- fused attention and transformer layers ---------------------------------------------------

B, L, E, HEADS, FFN = 2, 5, 8, 2, 16
# In-projections Q, K, V and the out-projection: 4 * B*L*E*E = 4 * 2*5*64 = 2560 MACs;
# Q K^T and P V: 2 * B*L*L*E = 2 * 2*5*5*8 = 800 MACs.
MHA_MACS = 2560 + 800
# MLP: B*L rows * (E*FFN + FFN*E) = 10 * 256 = 2560 MACs.
LAYER_MACS = MHA_MACS + 2560


def test_fused_attention_formulas() -> None:
    assert f.native_mha_flop((B, L, E), (B, L, E), (B, L, E), E, HEADS) == 2 * MHA_MACS
    # cross-attention: 3 query rows, 7 key rows: projections 2*(2*3 + 2*7)*64 = 2560 MACs,
    # attention 2 * 2*3*7*8 = 672 MACs
    assert f.native_mha_flop((2, 3, 8), (2, 7, 8), (2, 7, 8), 8, 2) == 2 * (2560 + 672)
    ffn = [(FFN, E), (FFN,), (E, FFN)]
    args = [HEADS, (3 * E, E), (3 * E,), (E, E), (E,), False, False, 1e-5, *[(E,)] * 4, *ffn]
    assert f.transformer_encoder_layer_flop((B, L, E), E, *args) == 2 * LAYER_MACS


def test_fused_mha_operator_counts_as_the_unfused_path() -> None:
    mha = nn.MultiheadAttention(E, HEADS, batch_first=True).eval()
    x = torch.rand(B, L, E)

    def fused(q: torch.Tensor) -> torch.Tensor:
        return aten._native_multi_head_attention(
            q, q, q, E, HEADS, mha.in_proj_weight, mha.in_proj_bias,
            mha.out_proj.weight, mha.out_proj.bias,
        )[0]  # fmt: skip

    assert _tv(_Call(fused), x) == 2 * MHA_MACS
    assert _tv(mha, (x, x, x)) == 2 * MHA_MACS  # count turns the fast path off: unfused ops


def test_transformer_layers_count_in_eval_as_in_training() -> None:
    layer = nn.TransformerEncoderLayer(E, HEADS, FFN, dropout=0.0, batch_first=True)
    encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
    x = torch.rand(B, L, E)
    assert _tv(layer.eval(), x) == 2 * LAYER_MACS  # was 0 (aten._transformer_encoder_layer_fwd)
    assert _tv(encoder.eval(), x) == 2 * 2 * LAYER_MACS
    with pytest.warns(UserWarning, match="training mode"):
        assert _tv(layer.train(), x) == 2 * LAYER_MACS  # the training forward: same operators
    # Forward + backward, x frozen: the forward share is the eval forward's 5920 MACs; backward:
    # in-projection 10*8*24 = 1920 (weight gradient only: its input is x), attention 5 products
    # of 2*5*5*8 = 400 (Q K^T recomputed, dV, dP, dQ, dK) = 2000, out-projection 2 * 640,
    # MLP 2 * 1280 twice: 1920 + 2000 + 1280 + 2560 + 2560 = 10320 MACs
    assert _tv(layer.train(), x, backward=True) == 2 * (LAYER_MACS + 10320)
    mha = getattr(torch.backends, "mha", None)  # the fast-path flag (torch >= 2.2)
    assert mha is None or mha.get_fastpath_enabled()  # restored


def test_attention_cross_check_with_flop_counter_mode() -> None:
    # need_weights=True runs Q K^T and P V as (b)mm, which PyTorch's counter covers: exact.
    mha = nn.MultiheadAttention(E, HEADS, batch_first=True).eval()
    x = torch.rand(B, L, E)
    with FlopCounterMode(display=False) as theirs:
        mha(x, x, x)  # grad enabled: PyTorch takes the unfused path
    assert _tv(mha, (x, x, x)) == theirs.get_total_flops() == 2 * MHA_MACS


# --- grouped convolution backward -------------------------------------------------------------


def test_grouped_conv_backward_costs_twice_its_forward() -> None:
    # Depthwise 3x3 conv of 32 channels on 8x8: 32*64 outputs * 9 = 18432 MACs = 36864 FLOPs.
    # Backward: input gradient + weight gradient, one forward each = 73728 FLOPs (PyTorch's
    # formula gives 33x the forward: its weight-gradient term ignores the 32 groups).
    conv = nn.Conv2d(32, 32, 3, padding=1, groups=32, bias=False)
    x = torch.rand(1, 32, 8, 8, requires_grad=True)
    assert _tv(conv.eval(), x) == 36864
    assert _tv(conv.train(), x, backward=True) == 36864 * 3
    x.requires_grad_(False)  # the first layer computes no input gradient: weight gradient only
    assert _tv(conv, x, backward=True) == 36864 * 2
    # transposed and grouped: 4 -> 6 channels, 2 groups, 3x3 on 5x5: each of the 4*25 inputs
    # times 3*9 weights = 2700 MACs = 5400 FLOPs per pass
    deconv = nn.ConvTranspose2d(4, 6, 3, groups=2, bias=False)
    x = torch.rand(1, 4, 5, 5, requires_grad=True)
    assert _tv(deconv, x, backward=True) == 5400 * 3


def test_ungrouped_conv_backward_agrees_with_pytorch() -> None:
    conv = nn.Conv2d(3, 8, 3, stride=2)
    x = torch.rand(2, 3, 9, 9, requires_grad=True)
    with FlopCounterMode(display=False) as theirs:
        conv(x).sum().backward()
    assert _tv(conv, x, backward=True) == theirs.get_total_flops()


def test_resnet_training_cross_check_with_flop_counter_mode() -> None:
    # No fast path, no grouped convolution: PyTorch's counter and perfkit's agree exactly,
    # per operator, on forward + backward.
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.resnet18(num_classes=10).train()
    x = torch.rand(2, 3, 32, 32)
    with FlopCounterMode(display=False) as theirs:
        model(x).sum().backward()
    model.zero_grad(set_to_none=True)
    ours = count(model, x, backward=True, scope="torchvision")
    by_op = {str(op): n for op, n in theirs.get_flop_counts()["Global"].items()}
    assert ours.counts[""] == by_op
    assert ours.flops == theirs.get_total_flops()


# --- quantized ----------------------------------------------------------------------------------


def test_quantized_conv_and_linear_count_int8_multiply_adds() -> None:
    qnn = torch.ao.nn.quantized
    x = torch.quantize_per_tensor(torch.rand(1, 3, 10, 10), 0.1, 0, torch.quint8)
    conv = qnn.Conv2d(3, 8, 3, padding=1).eval()
    # 8*10*10 outputs * 3*3*3 = 21600 int8 MACs (was 0: quantized::conv2d had no formula)
    report = count(conv, x, scope="torchvision")
    assert (report.macs, report.int8_macs, report.unsupported) == (21600, 21600, {})
    assert "GMAC int8" in str(report)
    relu_conv = torch.ao.nn.intrinsic.quantized.ConvReLU2d(3, 8, 3, padding=1).eval()
    assert count(relu_conv, x).macs == 21600  # quantized::conv2d_relu
    # transposed, 2 groups: each of the 4*25 inputs times 3*9 weights = 2700 MACs
    deconv = qnn.ConvTranspose2d(4, 6, 3, groups=2).eval()
    qx = torch.quantize_per_tensor(torch.rand(1, 4, 5, 5), 0.1, 0, torch.quint8)
    assert count(deconv, qx).macs == 2700
    linear = qnn.Linear(16, 4).eval()
    qrows = torch.quantize_per_tensor(torch.rand(3, 16), 0.1, 0, torch.quint8)
    assert count(linear, qrows).int8_macs == 3 * 16 * 4  # 192 MACs
    dynamic = qnn.dynamic.Linear(16, 4).eval()  # float activations, int8 weights
    assert count(dynamic, torch.rand(3, 16)).int8_macs == 192  # quantized::linear_dynamic


# --- recurrent ------------------------------------------------------------------------------


def test_rnn_stack_formula() -> None:
    # 2-layer bidirectional LSTM, input 8, hidden 16, T=5, B=2 (10 rows):
    # layer 0, per direction: W_ih 64x8 = 512, W_hh 64x16 = 1024;
    # layer 1, per direction: W_ih 64x32 = 2048, W_hh 1024: sum 2*1536 + 2*3072 = 9216
    # 10 rows * 9216 = 92160 MACs = 184320 FLOPs
    params = [(64, 8), (64, 16), (64,), (64,)] * 2 + [(64, 32), (64, 16), (64,), (64,)] * 2
    hx = [(4, 2, 16), (4, 2, 16)]
    assert rnn.rnn_stack_flop((5, 2, 8), hx, params, True, 2, 0.0, False, True, False) == 184320
    # the packed overload: 7 packed rows * 9216 = 64512 MACs
    assert rnn.rnn_stack_flop((7, 8), (5,), hx, params, True, 2, 0.0, False, True) == 129024
    assert rnn.fused_rnn_flop((5, 2, 8), params) == 184320  # cuDNN / MIOpen: same weights
    # backward with weight gradients (output_mask[3]): twice the forward
    assert rnn.fused_rnn_backward_flop((5, 2, 8), params, *[None] * 19, [1, 1, 1, 1]) == 368640
    # fused CUDA cells, 2 x 16 hidden units = 32 units, with biases:
    # LSTM: 13 FLOPs per unit = 416, + 2 bias adds per gate element 2*128 = 256
    assert rnn.fused_lstm_cell_flop((2, 64), (2, 64), (2, 16), (64,), (64,)) == 672
    # GRU: 11 per unit = 352, + 2 * 96 bias adds = 192
    assert rnn.fused_gru_cell_flop((2, 48), (2, 48), (2, 16), (48,), (48,)) == 544


def test_lstm_counts_the_same_on_onednn_and_the_default_path() -> None:
    lstm = nn.LSTM(8, 16, num_layers=2, bidirectional=True).eval()
    x = torch.rand(5, 2, 8)
    onednn = count(lstm, x, scope="torchvision")
    assert "aten.mkldnn_rnn_layer" in onednn.counts[""]  # was reported unsupported, 0 FLOPs
    with torch.backends.mkldnn.flags(enabled=False):
        default = count(lstm, x, scope="torchvision")  # decomposes into addmm
    assert onednn.flops == default.flops == 184320  # see test_rnn_stack_formula
    # GRU and RNN decompose on CPU: the stack formula agrees with what runs
    gru = nn.GRU(8, 16).eval()  # W_ih 48x8 + W_hh 48x16 = 1152; 10 rows: 11520 MACs
    assert _tv(gru, x) == 23040 == rnn.rnn_stack_flop(x.shape, (1, 2, 16), [(48, 8), (48, 16)])
    # oneDNN LSTM backward (input frozen): gradients w.r.t. both inputs of each product and
    # w.r.t. each weight: 2x the forward's 10 * (512 + 1024) = 15360 MACs; total 3 * 30720
    one_layer = nn.LSTM(8, 16).train()
    assert _tv(one_layer, x, backward=True) == 3 * 30720


# --- in-place variants and other silent zeros --------------------------------------------------


def test_in_place_variants_count_as_their_out_of_place_op() -> None:
    a = torch.rand(64, 64)
    # 64*64*64 = 262144 MACs (was 0: in-place ops were taken for views)
    assert _tv(_Call(lambda a: torch.zeros(64, 64).addmm_(a, a)).eval(), a) == 2 * 262144
    b1, b2 = torch.rand(2, 4, 3), torch.rand(2, 3, 4)
    # 2*4*4*3 = 96 MACs
    assert _tv(_Call(lambda x, y: torch.zeros(2, 4, 4).baddbmm_(x, y)).eval(), (b1, b2)) == 192
    full = count(_Call(lambda x: x.clone().cumsum_(1)).eval(), torch.rand(3, 4))
    assert full.flops == 12 - 3  # one add per element but the first of each of the 3 rows
    assert count(_Call(lambda x: torch.cumsum(x, 1)).eval(), torch.rand(3, 4)).flops == 9
    index = torch.tensor([0, 2, 0, 1, 2])
    add = _Call(lambda x: torch.zeros(3, 4).index_add_(0, index, x, alpha=2))
    assert count(add.eval(), torch.rand(5, 4)).flops == 40  # 20 source elements * (mul + add)
    swish = count(_Call(lambda x: nn.functional.hardswish(x, inplace=True)).eval(), a)
    assert swish.flops == 64 * 64 and swish.unsupported == {}  # untagged pointwise, in place
    assert count(_Call(torch.relu_).eval(), a, scope="torchvision").unsupported == {}


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 9), st.integers(1, 9), st.integers(1, 9))
def test_in_place_matches_out_of_place(m: int, k: int, n: int) -> None:
    x, y = torch.rand(m, k), torch.rand(k, n)
    in_place = _Call(lambda x, y: torch.zeros(m, n).addmm_(x, y)).eval()
    out_of_place = _Call(lambda x, y: torch.addmm(torch.zeros(m, n), x, y)).eval()
    assert count(in_place, (x, y)).flops == count(out_of_place, (x, y)).flops
    assert count(in_place, (x, y)).macs == m * k * n


# --- warnings and the unsupported list ----------------------------------------------------------


def test_compute_op_without_formula_warns_once_with_its_count() -> None:
    a = torch.rand(4, 4)
    model = _Call(lambda a: fused_matmul(fused_matmul(a, a), a)).eval()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = count(model, a)
    messages = [str(w.message) for w in caught if issubclass(w.category, FlopUndercountWarning)]
    assert len(messages) == 1
    assert "perfkit_test.fused_matmul ran 2 time(s)" in messages[0]
    assert report.unsupported == {"perfkit_test.fused_matmul": 2}


def test_data_movement_in_backward_is_not_unsupported() -> None:
    def pick(x: torch.Tensor) -> torch.Tensor:
        y = x[:, 0] + x[1:].sum(0)[0]  # select, slice: select_backward, slice_backward
        z = x.clone()
        z[torch.tensor([0, 1])] = 0.0  # index_put_
        return y.sum() + z.sum()

    x = torch.rand(3, 4, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FlopUndercountWarning)
        report = count(_Call(pick), x, backward=True)
    assert report.unsupported == {}
