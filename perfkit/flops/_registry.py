"""perfkit's FLOP formulas for operators torch.utils.flop_counter does not cover.

A formula takes the operator's arguments with every tensor replaced by its shape (``out_shape``
is the output's) and returns a FLOP count as an int, so it is testable without tensors. Each
operator has one formula; a second registration for the same operator, or one for an operator
that PyTorch's own counter already covers, is refused - except where perfkit corrects one of
PyTorch's formulas (``replaces_torch``, with the reason beside it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from perfkit.flops._counter_base import TORCH_FORMULAS as _torch_registry

Formula = Callable[..., int]
F = TypeVar("F", bound=Formula)


@dataclass(frozen=True)
class Registered:
    """A registered formula; ``multiply_add`` says it counts 2 FLOPs per multiply-add."""

    formula: Formula
    multiply_add: bool


REGISTRY: dict[torch._ops.OpOverloadPacket, Registered] = {}


def register_formula(
    targets: torch._ops.OpOverloadPacket | list[torch._ops.OpOverloadPacket],
    *,
    multiply_add: bool,
    replaces_torch: bool = False,
) -> Callable[[F], F]:
    """Register ``formula(*shapes, out_shape=..., **kwargs) -> FLOPs`` for operator packets.

    ``multiply_add=True`` marks matrix-product-like operators (the formula returns 2 FLOPs per
    multiply-add; they count towards ``FlopReport.macs`` and the ``"torchvision"`` scope);
    ``False`` marks everything else (normalisation, pooling, ...), counted in the ``"full"``
    scope only. Raises ValueError for an operator that already has a formula here or in
    ``torch.utils.flop_counter`` (``replaces_torch=True``: the formula replaces PyTorch's in
    perfkit's counter, for a formula of PyTorch's that is wrong; PyTorch's registry is untouched).
    """
    packets = targets if isinstance(targets, list) else [targets]

    def decorate(formula: F) -> F:
        for packet in packets:
            if packet in REGISTRY or (packet in _torch_registry and not replaces_torch):
                raise ValueError(f"duplicate FLOP formula for {packet}: it already has one")
            if replaces_torch and packet not in _torch_registry:
                raise ValueError(f"replaces_torch=True but PyTorch has no formula for {packet}")
        for packet in packets:
            REGISTRY[packet] = Registered(formula, multiply_add)
        return formula

    return decorate


def packets(namespace: Any, names: list[str] | tuple[str, ...]) -> list[Any]:
    """The operator packets of ``namespace`` (``torch.ops.aten``) named ``names`` that this torch
    has (torch 2.1 lacks some newer ones, such as ``_safe_softmax``)."""
    return [getattr(namespace, name) for name in names if hasattr(namespace, name)]


def is_multiply_add(packet: Any) -> bool:
    """Whether ``packet``'s formula counts multiply-adds (PyTorch's own formulas all do)."""
    if packet in REGISTRY:
        return REGISTRY[packet].multiply_add
    return packet in _torch_registry
