"""perfkit: honest benchmark metrics for PyTorch training and inference loops.

``import perfkit`` is cheap and touches no hardware: torch, NVML, pandas, matplotlib and
pycocotools are imported only when a feature that needs them is first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from perfkit import sinks
from perfkit.run import Phase, Run, RunError, timed

__version__ = "0.1.0"

__all__ = [
    "Phase",
    "Run",
    "RunError",
    "__version__",
    "analysis",
    "flops",
    "generation",
    "metrics",
    "probes",
    "serving",
    "sinks",
    "timed",
]

_LAZY_SUBMODULES = frozenset(
    {"analysis", "flops", "generation", "metrics", "probes", "distributed", "records", "serving"}
)

if TYPE_CHECKING:
    from perfkit import analysis, flops, generation, metrics, probes, serving


def __getattr__(name: str) -> Any:
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"perfkit.{name}")
    raise AttributeError(f"module 'perfkit' has no attribute {name!r}")
