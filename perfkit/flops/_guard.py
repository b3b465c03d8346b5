"""``untouched``: run a model for counting and leave no trace of it.

Restored on exit, also when the model raises: every module's parameters and buffers (the same
tensor objects, with their values - BatchNorm's running statistics and ``num_batches_tracked``
included), the ``.grad`` of parameters and of input leaves, every module's train/eval mode, the
CPU and initialised CUDA RNG states, and the global torch flags below.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils._pytree import tree_flatten


def _cudnn(name: str) -> tuple[Callable[[], Any], Callable[[Any], None]]:
    def set_flag(value: Any) -> None:
        setattr(torch.backends.cudnn, name, value)

    return (lambda: getattr(torch.backends.cudnn, name)), set_flag


def _set_deterministic(value: tuple[bool, bool]) -> None:
    torch.use_deterministic_algorithms(value[0], warn_only=value[1])


# (getter, setter) of the global flags a counted call could change; restored only if changed.
_FLAGS: tuple[tuple[Callable[[], Any], Callable[[Any], Any]], ...] = (
    (torch.is_grad_enabled, torch.set_grad_enabled),
    (torch.backends.mha.get_fastpath_enabled, torch.backends.mha.set_fastpath_enabled),
    (torch.is_anomaly_enabled, torch.set_anomaly_enabled),
    (torch.get_default_dtype, torch.set_default_dtype),
    (
        lambda: (
            torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled(),
        ),
        _set_deterministic,
    ),
    _cudnn("enabled"),
    _cudnn("benchmark"),
    _cudnn("deterministic"),
)


@dataclass
class _Slot:
    """One entry of a module's ``_parameters`` or ``_buffers``, as it was.

    The value is compared and copied back only if it changed: an unneeded write would bump the
    tensor's version and break a graph the caller still holds. (Kernels such as batch norm's
    update running statistics without bumping the version, so the version cannot tell.)
    Meta tensors have no values to restore.
    """

    table: dict[str, Any]
    name: str
    tensor: torch.Tensor
    value: torch.Tensor | None
    grad: torch.Tensor | None

    @classmethod
    def save(cls, table: dict[str, Any], name: str, tensor: torch.Tensor) -> _Slot:
        value = None if tensor.is_meta else tensor.detach().clone()
        slot = cls(table, name, tensor, value, tensor.grad)
        tensor.grad = None  # a backward then writes new tensors, not into the caller's .grad
        return slot

    def restore(self) -> None:
        self.table[self.name] = self.tensor
        if self.value is not None and not torch.equal(self.tensor, self.value):
            with torch.no_grad():
                self.tensor.copy_(self.value)
        self.tensor.grad = self.grad


def _slots(model: torch.nn.Module) -> list[_Slot]:
    slots = []
    for module in model.modules():
        for table in (module._parameters, module._buffers):
            slots += [_Slot.save(table, n, t) for n, t in table.items() if t is not None]
    return slots


@contextmanager
def untouched(model: torch.nn.Module, inputs: Any) -> Iterator[None]:
    """Run the body, then put ``model``, the inputs' gradients, RNG and flags back as they were."""
    modes = [(module, module.training) for module in model.modules()]
    slots = _slots(model)
    leaves = [
        (t, t.grad)
        for t in tree_flatten(inputs)[0]
        if isinstance(t, torch.Tensor) and t.requires_grad and t.is_leaf
    ]
    for tensor, _ in leaves:
        tensor.grad = None
    flags = [(get, set_, get()) for get, set_ in _FLAGS]
    cuda = range(torch.cuda.device_count()) if torch.cuda.is_initialized() else range(0)
    with torch.random.fork_rng(devices=list(cuda)):
        try:
            yield
        finally:
            for get, set_, value in flags:
                if get() != value:
                    set_(value)
            for module, training in modes:
                module.training = training
            for slot in slots:
                slot.restore()
            for tensor, grad in leaves:
                tensor.grad = grad
