"""The FlopCounterMode perfkit's counter builds on, and PyTorch's own formulas.

torch's own where it has torch >= 2.4's interface (``flop_registry``, ``_count_flops``, module
tracking of every module); on older torch (2.1-2.3) the same interface from _legacy_counter.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch.utils import flop_counter as _torch_flop_counter

if hasattr(_torch_flop_counter, "flop_registry") and hasattr(
    _torch_flop_counter.FlopCounterMode, "_count_flops"
):
    FlopCounterMode = _torch_flop_counter.FlopCounterMode
    TORCH_FORMULAS: dict[Any, Callable[..., int]] = _torch_flop_counter.flop_registry
else:  # torch < 2.4
    from perfkit.flops import _legacy_counter

    FlopCounterMode = _legacy_counter.FlopCounterMode  # type: ignore[assignment,misc]
    TORCH_FORMULAS = _legacy_counter.TORCH_FORMULAS
