"""FLOP counting (unit named every time), a sourced peak FLOP/s table, a measured peak where
the table has none, MFU, and language models' FLOPs per token in the conventions MFU is quoted in.

``count`` needs torch and is imported on first use; the peak table and MFU are pure Python, so
``perfkit.flops.mfu_summary`` stays cheap for a Run that was given its FLOPs per sample.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from perfkit.flops._mfu import CONVENTIONS, Convention, mfu, mfu_summary
from perfkit.flops._tokens import (
    TOKEN_CONVENTIONS,
    TokenConvention,
    TransformerShape,
    counted_per_token,
    flops_per_token,
    tokens_in,
    transformer_shape,
)
from perfkit.flops.peaks import PeakRow, normalize_dtype, peak_flops, register_peak

if TYPE_CHECKING:
    from perfkit.flops._count import FlopCountError, FlopReport, FlopUndercountWarning, count
    from perfkit.flops._measure import MeasuredPeak, measure_peak
    from perfkit.flops._registry import register_formula

__all__ = [
    "CONVENTIONS",
    "TOKEN_CONVENTIONS",
    "Convention",
    "FlopCountError",
    "FlopReport",
    "FlopUndercountWarning",
    "MeasuredPeak",
    "PeakRow",
    "TokenConvention",
    "TransformerShape",
    "count",
    "counted_per_token",
    "flops_per_token",
    "measure_peak",
    "mfu",
    "mfu_summary",
    "normalize_dtype",
    "peak_flops",
    "register_formula",
    "register_peak",
    "tokens_in",
    "transformer_shape",
]

_LAZY = {
    "count": "perfkit.flops._count",
    "FlopReport": "perfkit.flops._count",
    "FlopCountError": "perfkit.flops._count",
    "FlopUndercountWarning": "perfkit.flops._count",
    "register_formula": "perfkit.flops._registry",
    "measure_peak": "perfkit.flops._measure",
    "MeasuredPeak": "perfkit.flops._measure",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'perfkit.flops' has no attribute {name!r}")
