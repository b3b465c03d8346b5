"""perfkit.flops.count on the cases PyTorch's own ``test/test_flop_counter.py`` and fvcore's
``tests/test_flop_count.py`` check, with the expected counts written there (PyTorch: FLOPs, 2 per
multiply-add, scope "torchvision" counting the same multiply-add operators as PyTorch's counter;
fvcore: multiply-adds, ``report.macs``).

The attention case is PyTorch's CUDA ``test_sdpa`` (causal, its flash / efficient kernels), which
perfkit's CPU attention formula reproduces; the causal conventions are then applied to it.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from perfkit.flops import count


def T(*shape: int) -> torch.Tensor:
    return torch.randn(*shape)


class Calls(nn.Module):
    """A module whose forward makes the calls of one of PyTorch's cases."""

    def __init__(self, body: Callable[[nn.Module], object]) -> None:
        super().__init__()
        self.body = body
        self.linear = nn.Linear(9, 10)

    def forward(self, _: torch.Tensor) -> torch.Tensor:
        self.body(self)
        return torch.zeros(())


CASES: list[tuple[str, Callable[[nn.Module], object], int]] = [
    (
        "variety",
        lambda m: (
            torch.mm(T(4, 5), T(5, 6)),
            torch.addmm(T(4, 6), T(4, 5), T(5, 6), beta=0.5, alpha=0.5),
            torch.matmul(T(5, 6), T(6, 7)),
            torch.einsum("ab,bc->ac", T(6, 7), T(7, 8)),
            m.linear(T(8, 9)),
        ),
        3012,
    ),
    ("mm", lambda m: torch.mm(T(4, 5), T(5, 6)), 240),
    ("bmm", lambda m: torch.bmm(T(3, 4, 5), T(3, 5, 6)), 720),
    (
        "addmm",
        lambda m: (
            torch.addmm(T(4, 6), T(4, 5), T(5, 6)),
            torch.addmm(T(4, 1), T(4, 5), T(5, 6)),
            torch.addmm(T(6), T(4, 5), T(5, 6)),
        ),
        720,
    ),
    ("baddbmm", lambda m: torch.baddbmm(T(3, 4, 6), T(3, 4, 5), T(3, 5, 6)), 720),
    ("conv2d", lambda m: torch.conv2d(T(2, 3, 6, 6), T(6, 3, 4, 4), padding=1), 28800),
    ("conv1d", lambda m: torch.conv1d(T(2, 3, 6), T(6, 3, 4), padding=1), 1440),
]


@pytest.mark.parametrize(("name", "body", "expected"), CASES, ids=[c[0] for c in CASES])
def test_pytorch_inline_counts(
    name: str, body: Callable[[nn.Module], object], expected: int
) -> None:
    assert count(Calls(body).eval(), T(1), scope="torchvision").flops == expected


def test_pytorch_backward_count() -> None:
    # test_backward: mm, expand, bmm, then backward: 5184 FLOPs
    class Chain(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w1 = nn.Parameter(T(5, 6), requires_grad=False)
            self.w2 = nn.Parameter(T(7, 6, 7), requires_grad=False)

        def forward(self, a: torch.Tensor) -> torch.Tensor:
            a = torch.mm(a, self.w1)
            a = a.unsqueeze(0).expand(7, 4, 6)
            return torch.bmm(a, self.w2)

    x = T(4, 5).requires_grad_(True)
    assert count(Chain(), (x,), backward=True, scope="torchvision").flops == 5184


def test_pytorch_autograd_function_count() -> None:
    # test_autograd_op: forward one 5x5 mm, backward two: 3 x 250 = 750 FLOPs
    class Custom(torch.autograd.Function):
        @staticmethod
        def forward(ctx: object, x: torch.Tensor) -> torch.Tensor:
            return torch.mm(x, x)

        @staticmethod
        def backward(ctx: object, grad: torch.Tensor) -> torch.Tensor:
            return torch.mm(grad, grad) + torch.mm(grad, grad)

    class Model(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return Custom.apply(x)  # type: ignore[no-any-return]

    x = T(5, 5).requires_grad_(True)
    assert count(Model(), (x,), backward=True, scope="torchvision").flops == 750


def test_pytorch_resnet18_training_count() -> None:
    # test_module: resnet18 forward + backward at 1x3x224x224 (input requiring grad):
    # 10884440064 FLOPs; layer1's convolutions 924844032 forward and 1849688064 backward.
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.resnet18()
    x = T(1, 3, 224, 224).requires_grad_(True)
    report = count(model, (x,), backward=True, scope="torchvision")
    assert report.flops == 10884440064
    layer1 = report.counts["layer1"]
    assert layer1["aten.convolution"] == 924844032
    assert layer1["aten.convolution_backward"] == 1849688064


class Attention(nn.Module):
    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)


@pytest.mark.parametrize(
    ("seq_k", "forward", "training"),
    # test_sdpa, batch 4, 8 heads, S_q 128, head dim 64: forward 134217728 / 268435456 FLOPs;
    # forward + backward of the flash and efficient kernels 7/2 x forward / 939524096
    [(128, 134217728, 134217728 * 7 // 2), (256, 268435456, 939524096)],
)
@pytest.mark.parametrize("causal", ["full", "half", "none"])
def test_pytorch_attention_counts_and_causal_conventions(
    seq_k: int, forward: int, training: int, causal: str
) -> None:
    share = {"full": 1.0, "half": 0.5, "none": 0.0}[causal]
    q, k, v = T(4, 8, 128, 64), T(4, 8, seq_k, 64), T(4, 8, seq_k, 64)
    report = count(Attention().eval(), (q, k, v), scope="torchvision", causal=causal)  # type: ignore[arg-type]
    assert report.flops == share * forward
    inputs = tuple(t.requires_grad_(True) for t in (q, k, v))
    report = count(Attention(), inputs, backward=True, scope="torchvision", causal=causal)  # type: ignore[arg-type]
    assert report.flops == share * training


# fvcore's tests/test_flop_count.py: its convolution cases (dims, batch, C_in, C_out, spatial,
# kernel, padding, stride, groups, transposed) and its rule, in multiply-adds:
# batch * C_in * C_out * k^d * out_spatial^d / groups (a transposed convolution: the input's
# spatial size).
FVCORE_CONVS = [
    (2, 5, 10, 3, 15, 3, 1, 1, 1, False),
    (2, 2, 10, 6, 20, 3, 1, 2, 1, False),
    (2, 5, 16, 8, 15, 5, 2, 1, 4, False),
    (2, 5, 16, 8, 15, 3, 1, 1, 8, False),  # depthwise-like: groups = C_out
    (1, 5, 10, 3, 15, 3, 1, 1, 1, False),
    (3, 5, 10, 3, 15, 3, 1, 1, 1, False),
    (2, 5, 10, 3, 15, 3, 1, 1, 1, True),
]


@pytest.mark.parametrize("case", FVCORE_CONVS)
def test_fvcore_convolution_cases(case: tuple[int, ...]) -> None:
    dims, batch, c_in, c_out, spatial, kernel, padding, stride, groups, transposed = case
    layers = (
        (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
        if transposed
        else (nn.Conv1d, nn.Conv2d, nn.Conv3d)
    )
    conv = layers[dims - 1](c_in, c_out, kernel, stride, padding, groups=groups)
    x = T(batch, c_in, *[spatial] * dims)
    out_spatial = spatial if transposed else (spatial + 2 * padding - kernel) // stride + 1
    expected = batch * c_in * c_out * kernel**dims * out_spatial**dims // groups
    assert count(conv.eval(), x, scope="torchvision").macs == expected


def test_fvcore_linear_cases() -> None:
    # test_linear: batch 5, 10 -> 20: 5*10*20 multiply-adds; with an extra dimension of 5, x5
    linear = nn.Linear(10, 20).eval()
    assert count(linear, T(5, 10), scope="torchvision").macs == 5 * 10 * 20
    assert count(linear, T(5, 5, 10), scope="torchvision").macs == 5 * 5 * 10 * 20
