"""Custom operators for the FLOP tests (``torch.ops.perfkit_test.*``).

Defined through ``torch.library.Library``, which every supported torch has (``custom_op`` is
torch >= 2.4); the CompositeExplicitAutograd kernel also serves meta tensors.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

_LIBRARY = torch.library.Library("perfkit_test", "DEF")


def _define(schema: str, kernel: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    name = schema.partition("(")[0]
    _LIBRARY.define(schema)
    _LIBRARY.impl(name, kernel, "CompositeExplicitAutograd")
    return getattr(torch.ops.perfkit_test, name)  # type: ignore[no-any-return]


scale = _define("scale(Tensor x) -> Tensor", lambda x: x * 2)
reverse = _define("reverse(Tensor x) -> Tensor", lambda x: x.flip(0))
fused_matmul = _define("fused_matmul(Tensor a, Tensor b) -> Tensor", lambda a, b: a @ b)
