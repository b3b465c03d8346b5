"""perfkit.flops.count leaves no trace: model state, gradients, modes, RNG and global flags."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from perfkit.flops import FlopCountError, count


def _model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5), nn.Flatten(), nn.LazyLinear(2)
    )


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_training_count_changes_nothing() -> None:
    model = _model()
    x = torch.rand(2, 3, 6, 6, requires_grad=True)
    model(x).sum().backward()  # materialise the lazy layer; every parameter has a .grad
    model[0].eval()  # a mixed train/eval model
    before = _state(model)
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    x_grad = x.grad.clone()  # type: ignore[union-attr]
    modes = [m.training for m in model.modules()]
    rng = torch.get_rng_state()
    report = count(model, x, backward=True)
    assert report.flops > 0
    # BatchNorm's running statistics and num_batches_tracked were updated during the count:
    assert _same(_state(model), before)
    assert {n: p.grad for n, p in model.named_parameters()}.keys() == grads.keys()
    assert all(torch.equal(p.grad, grads[n]) for n, p in model.named_parameters())  # type: ignore[arg-type]
    assert torch.equal(x.grad, x_grad)  # type: ignore[arg-type]
    assert [m.training for m in model.modules()] == modes
    assert torch.equal(torch.get_rng_state(), rng)  # dropout drew random numbers
    assert torch.is_grad_enabled()


class _Meddler(nn.Module):
    """Changes everything it can reach, then (optionally) raises."""

    def __init__(self, fail: bool) -> None:
        super().__init__()
        self.fail = fail
        self.linear = nn.Linear(3, 3)
        self.register_buffer("steps", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            self.linear.weight.mul_(2)  # an in-place change of a parameter
        self.steps += 1
        self.linear.bias = nn.Parameter(torch.ones(3))  # a replaced parameter
        self.train(not self.training)
        torch.rand(5)
        torch.set_default_dtype(torch.float64)
        torch.backends.cudnn.benchmark = not torch.backends.cudnn.benchmark
        if self.fail:
            raise RuntimeError("boom")
        return self.linear(x.to(torch.float32))


@pytest.mark.parametrize("fail", [False, True])
def test_state_is_restored_even_when_the_model_changes_it_or_raises(fail: bool) -> None:
    model = _Meddler(fail).eval()
    bias = model.linear.bias
    before = _state(model)
    x = torch.rand(2, 3)
    rng = torch.get_rng_state()
    flags = (torch.get_default_dtype(), torch.backends.cudnn.benchmark)
    mha = getattr(torch.backends, "mha", None)  # the fast-path flag (torch >= 2.2)
    fastpath = mha.get_fastpath_enabled() if mha is not None else None
    if fail:
        with pytest.raises(FlopCountError, match="boom"):
            count(model, x)
    else:
        count(model, x)
    assert _same(_state(model), before)
    assert model.linear.bias is bias
    assert not model.training
    assert torch.equal(torch.get_rng_state(), rng)
    assert (torch.get_default_dtype(), torch.backends.cudnn.benchmark) == flags
    assert (mha.get_fastpath_enabled() if mha is not None else None) == fastpath


def test_no_write_to_unchanged_parameters() -> None:
    # A graph the caller still holds stays usable: unchanged tensors are not written back.
    model = nn.Linear(3, 3).eval()
    loss = model(torch.rand(2, 3)).sum()
    count(model, torch.rand(2, 3))
    loss.backward()  # would raise if count had bumped the weight's version
    assert model.weight.grad is not None
