"""perfkit.flops.count: formulas, scopes, backends, backward, and bad input.

Every expected number is hand arithmetic written next to it (MAC = one multiply-add).
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from perfkit.flops import FlopCountError, count, register_formula
from perfkit.flops import _formulas as f
from tests.custom_ops import reverse, scale

aten = torch.ops.aten


# --- formulas: shapes in, FLOPs out ---------------------------------------------------------


def test_multiply_add_formulas() -> None:
    assert f.mv_flop((5, 7), (7,)) == 70  # 5*7 MACs
    assert f.addmv_flop((5,), (5, 7), (7,)) == 70  # bias add not counted
    assert f.dot_flop((9,), (9,)) == 18  # 9 MACs
    # Q K^T: 2*4*16*16*8 = 16384 MACs; P V: same; 32768 MACs = 65536 FLOPs
    assert f.sdpa_flop((2, 4, 16, 8), (2, 4, 16, 8), (2, 4, 16, 8)) == 65536
    # backward: Q K^T recomputed (flash kernels keep no scores), dV, dP, dQ, dK:
    # 5 products of 16384 MACs = 81920 MACs = 163840 FLOPs
    assert f.sdpa_backward_flop(*[(2, 4, 16, 8)] * 4) == 163840


def test_other_formulas() -> None:
    x = (2, 3, 4, 4)  # 96 elements
    assert f.batch_norm_inference_flop(x) == 192  # 2 * 96: folded scale and shift
    assert f.batch_norm_flop(x, (3,), (3,), (3,), (3,), True, 0.1, 1e-5) == 576  # (4+2) * 96
    assert f.batch_norm_flop(x, None, None, False, 0.1, 1e-5) == 192  # no_stats overload, eval
    assert f.layer_norm_flop(x, [4], (4,), (4,), 1e-5) == 768  # (4+2+2) * 96
    assert f.group_norm_flop(x, None, None, 2, 3, 16, 1, 1e-5) == 576  # (4+2) * 96, no affine
    assert f.softmax_flop(x, -1, False) == 480  # 5 * 96
    out = (2, 3, 2, 2)  # 24 elements
    assert f.max_pool2d_flop(x, [2, 2], out_shape=(out, out)) == 72  # (2*2-1) * 24
    assert f.avg_pool2d_flop(x, 2, out_shape=out) == 96  # 2*2 * 24
    assert f.mean_flop(x, [2, 3], out_shape=(2, 3, 1, 1)) == 96  # one per input
    assert f.sum_flop((10,), out_shape=()) == 9  # 9 adds
    assert f.upsample_bilinear2d_flop((1, 1, 2, 2), out_shape=(1, 1, 4, 4)) == 112  # 7 * 16


def test_registry_refuses_duplicates() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        register_formula(aten.mm, multiply_add=True)(f.mv_flop)  # torch's own formula
    with pytest.raises(ValueError, match="duplicate"):
        register_formula(aten.mv, multiply_add=True)(f.mv_flop)  # perfkit's


def test_user_formula_for_custom_op() -> None:
    @register_formula(torch.ops.perfkit_test.scale, multiply_add=False)
    def scale_flop(x_shape: tuple[int, ...], *args: object, **kwargs: object) -> int:
        return int(torch.Size(x_shape).numel())

    class Scale(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return scale(x)

    report = count(Scale().eval(), torch.ones(3, 5))
    assert report.flops == 15  # one per element
    assert report.unsupported == {}


# --- count on small models ------------------------------------------------------------------


def _small_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(8 * 5 * 5, 10),
    ).eval()


X = torch.rand(1, 3, 10, 10)
# conv: 8*10*10 outputs * 3*3*3 = 21600 MACs = 43200 FLOPs; linear: 200*10 = 2000 MACs = 4000
# bn: 2 * 800 = 1600; relu: 800; maxpool: (2*2-1) * 200 outputs = 600
CNN_MACS = 21600 + 2000
CNN_FULL = 43200 + 1600 + 800 + 600 + 4000


def test_full_and_torchvision_scopes() -> None:
    full = count(_small_cnn(), X)
    assert (full.flops, full.macs) == (CNN_FULL, CNN_MACS)
    tv = count(_small_cnn(), X, scope="torchvision")
    assert (tv.flops, tv.macs) == (2 * CNN_MACS, CNN_MACS)
    assert full.unsupported == tv.unsupported == {}
    modules = full.by_module().set_index("module")["flops"].to_dict()
    assert modules == {"": CNN_FULL, "0": 43200, "1": 1600, "2": 800, "3": 600, "5": 4000}
    ops = full.by_operator().set_index("operator")
    assert ops.loc["aten.convolution", "macs"] == 21600
    assert ops.loc["aten.relu", "macs"] == 0
    assert list(full.by_operator()["flops"]) == sorted(ops["flops"], reverse=True)
    assert "GFLOP" in str(full) and "multiply-add" in str(full)


def test_input_kinds() -> None:
    class TwoArgs(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(16, 32, bias=False)

        def forward(self, a: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
            return self.linear(a if b is None else a + b)

    a = torch.ones(4, 16)
    model = TwoArgs().eval()
    # 4*16*32 = 2048 MACs = 4096 FLOPs in the linear layer
    assert count(model, a, scope="torchvision").flops == 4096
    assert count(model, (a, a), scope="torchvision").flops == 4096
    assert count(model, {"a": a, "b": a}, scope="torchvision").flops == 4096
    assert count(model, {"a": a, "b": a}).flops == 4096 + 64  # + the 4*16 adds of a + b
    with pytest.raises(TypeError, match="Expected argument `inputs` to be a tensor, a tuple"):
        count(model, {a})  # type: ignore[arg-type]


def test_attention_on_cpu_counts_and_causal_convention() -> None:
    class Attention(nn.Module):
        def __init__(self, causal: bool) -> None:
            super().__init__()
            self.causal = causal

        def forward(self, q: torch.Tensor) -> torch.Tensor:
            return F.scaled_dot_product_attention(q, q, q, is_causal=self.causal)

    q = torch.rand(2, 4, 16, 8)
    # 65536 FLOPs (see test_multiply_add_formulas); PyTorch's own counter gives 0 on CPU
    for causal in (False, True):  # causal: the dense products are counted all the same
        report = count(Attention(causal).eval(), q, scope="torchvision")
        assert report.flops == 65536
    q.requires_grad_(True)
    report = count(Attention(True), (q,), backward=True, scope="torchvision")
    assert report.flops == 65536 + 163840  # forward + backward
    assert report.backward and report.causal == "full"


@pytest.mark.parametrize(("causal", "share"), [("full", 1.0), ("half", 0.5), ("none", 0.0)])
def test_causal_attention_conventions(causal: str, share: float) -> None:
    class Attention(nn.Module):
        def __init__(self, is_causal: bool) -> None:
            super().__init__()
            self.proj = nn.Linear(8, 8, bias=False)
            self.is_causal = is_causal

        def forward(self, q: torch.Tensor) -> torch.Tensor:
            return F.scaled_dot_product_attention(q, q, q, is_causal=self.is_causal).sum(
                -1
            ) + self.proj(q).sum(-1)

    q = torch.rand(2, 4, 16, 8)
    projection = 2 * 2 * 4 * 16 * 8 * 8  # 4096 MACs of the linear layer, never scaled
    # attention: 65536 FLOPs forward, 163840 backward (test_multiply_add_formulas)
    for is_causal in (True, False):
        kept = share if is_causal else 1.0  # only calls with is_causal=True follow the convention
        model = Attention(is_causal).eval()
        report = count(model, q, scope="torchvision", causal=causal)  # type: ignore[arg-type]
        assert report.flops == projection + kept * 65536
        assert report.causal == causal and (causal == "full") != (f"'{causal}'" in str(report))
        training = count(
            model.train(),
            (q.clone().requires_grad_(True),),
            backward=True,
            scope="torchvision",
            causal=causal,  # type: ignore[arg-type]
        )
        # projection forward, input and weight gradients; attention forward and backward
        assert training.flops == 3 * projection + kept * (65536 + 163840)
    with pytest.raises(ValueError, match="`causal`"):
        count(model, q, causal="quarter")  # type: ignore[arg-type]


def test_backward_measures_forward_and_backward() -> None:
    model = nn.Linear(16, 32, bias=False).train()
    x = torch.rand(4, 16)
    report = count(model, x, backward=True, scope="torchvision")
    # forward x @ W^T: 4*16*32 = 2048 MACs; backward grad_W = grad^T @ x: 32*4*16 = 2048 MACs;
    # no grad for x (it does not require grad): 4096 MACs = 8192 FLOPs
    assert (report.flops, report.macs) == (8192, 4096)
    assert model.weight.grad is None  # the count leaves .grad alone
    with pytest.raises(ValueError, match="requires grad"):
        count(model.requires_grad_(False), x, backward=True)


def _torch_counts(run: Callable[[], object]) -> dict[str, dict[str, int]]:
    """PyTorch's own FlopCounterMode around ``run`` (its formulas: matmul, convolution)."""
    counter = FlopCounterMode(display=False)
    with counter:
        run()
    return {
        module: {str(op): n for op, n in ops.items() if n}
        for module, ops in counter.get_flop_counts().items()
    }


def test_training_counts_per_module_include_the_output_module() -> None:
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.resnet18(num_classes=10).train()
    x = torch.rand(2, 3, 32, 32)
    report = count(model, x, backward=True, scope="torchvision")
    # PyTorch's counter on the same training step (the loss sum is no matmul or convolution)
    expected = _torch_counts(lambda: model(x).sum().backward())
    model.zero_grad(set_to_none=True)
    ours = report.by_module().set_index("module")["flops"].to_dict()
    # "fc" (the output module): forward, input gradient and weight gradient, 2*512*10 MACs each
    assert ours["fc"] == 3 * 2 * 2 * 512 * 10
    assert ours[""] == sum(expected["Global"].values())
    if "ResNet" not in expected:
        return  # torch < 2.4's counter tracks no modules unless told which: totals only
    theirs = {m.removeprefix("ResNet."): sum(ops.values()) for m, ops in expected.items()}
    theirs[""] = theirs.pop("Global")
    del theirs["ResNet"]  # the root module: perfkit reports it as ""
    assert ours == theirs


def test_inference_of_a_model_that_expands_a_parameter() -> None:
    # CaiT / PiT: a class token parameter expanded to the batch and fed to a submodule.
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Linear(8, 8)

        def forward(self, x: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
            return self.proj(torch.cat([cls, x], dim=1))

    class ClassToken(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.cls = nn.Parameter(torch.zeros(1, 1, 8))
            self.block = Block()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.block(x, self.cls.expand(x.shape[0], -1, -1))

    model = ClassToken().eval()
    x = torch.rand(2, 3, 8)
    report = count(model, x, scope="torchvision")
    # 2 * 4 tokens x 8 x 8 MACs = 512 MACs, as PyTorch's counter with gradients on says
    expected = _torch_counts(lambda: model(x))
    assert report.flops == sum(expected["Global"].values()) == 2 * 512
    assert report.by_module().set_index("module")["flops"].to_dict() == {
        "": 1024,
        "block": 1024,
        "block.proj": 1024,
    }
    assert model.cls.requires_grad  # left as it was


def test_dataclass_outputs_count_forward_and_backward() -> None:
    @dataclasses.dataclass
    class Output:
        logits: torch.Tensor
        extra: list[torch.Tensor]

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(4, 6), nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> Output:
            return Output(self.a(x), [self.b(x)])

    model, x = Model().train(), torch.rand(5, 4)
    report = count(model, x, backward=True, scope="torchvision")

    def step() -> None:
        out = model(x)
        (out.logits.sum() + out.extra[0].sum()).backward()

    expected = _torch_counts(step)
    model.zero_grad(set_to_none=True)
    # forward 5*4*(6+3) = 180 MACs, weight gradients the same again (x needs no gradient)
    assert report.flops == sum(expected["Global"].values()) == 2 * 2 * 180


def test_unsupported_operators_are_reported() -> None:
    class Reverse(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return reverse(reverse(x))

    report = count(Reverse().eval(), torch.rand(5, 2))
    assert report.unsupported == {"perfkit_test.reverse": 2}
    assert "perfkit_test.reverse x2" in str(report)


def test_fvcore_backend_agrees_on_multiply_adds() -> None:
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.resnet18().eval()
    x = torch.rand(1, 3, 64, 64)
    ours = count(model, x, scope="torchvision")
    theirs = count(model, x, scope="torchvision", backend="fvcore")
    assert ours.flops == theirs.flops and ours.macs == theirs.macs
    ours_modules = ours.by_module().set_index("module")["flops"].to_dict()
    assert ours_modules == theirs.by_module().set_index("module")["flops"].to_dict()
    assert len(ours_modules) == 37  # whole, conv1, 4 layers, 8 blocks x 3, 3 downsample x 2, fc
    with pytest.raises(ValueError, match="scope='torchvision'"):
        count(model, x, backend="fvcore")


# --- bad input ------------------------------------------------------------------------------


def test_model_error_is_reraised_with_context() -> None:
    with pytest.raises(
        FlopCountError, match=r"Sequential raised RuntimeError .*Tensor\[1, 5, 10"
    ) as e:
        count(_small_cnn(), torch.rand(1, 5, 10, 10))
    assert isinstance(e.value.__cause__, RuntimeError)


def test_training_mode_without_backward_warns() -> None:
    with pytest.warns(UserWarning, match="training mode"):
        count(_small_cnn().train(), X)


def test_bad_options() -> None:
    with pytest.raises(ValueError, match="scope"):
        count(_small_cnn(), X, scope="all")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="backend"):
        count(_small_cnn(), X, backend="thop")  # type: ignore[arg-type]


def test_import_perfkit_flops_does_not_import_torch() -> None:
    code = "import sys, perfkit, perfkit.flops; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
