"""Which torch accelerator backend runs here, and whose chip it is.

Vendor backends register as torch device types of their own (torch_npu: "npu", torch_mlu: "mlu",
torch_musa: "musa", Intel: "xpu"); torch 2.6+ names the current one through ``torch.accelerator``,
older torch (the vendor stacks ship 2.1-2.5) only through the backend modules, which are tried in
``BACKENDS`` order. CUDA-compatible stacks (Iluvatar CoreX, MetaX MACA, Hygon DTK / ROCm) run
through the "cuda" device type; ``cuda_vendor`` tells them apart by device name and HIP build.

Nothing here imports torch: functions take the torch module (``sys.modules["torch"]`` or a fake).
"""

from __future__ import annotations

import re
from typing import Any

#: Backend device types tried, in order, on a torch without ``torch.accelerator``.
BACKENDS = ("cuda", "npu", "mlu", "musa", "xpu")


def current_accelerator(torch: Any) -> str | None:
    """The device type of the accelerator torch uses ("cuda", "npu", ...), or None."""
    accelerator = getattr(torch, "accelerator", None)
    if accelerator is not None and hasattr(accelerator, "current_accelerator"):
        if not accelerator.is_available():
            return None
        device = accelerator.current_accelerator()
        return str(device.type) if device is not None else None
    for backend in BACKENDS:
        module = getattr(torch, backend, None)
        is_available = getattr(module, "is_available", None)
        if callable(is_available) and is_available():
            return backend
    return None


# Chip names their CUDA-compatible stacks report through torch.cuda.get_device_name.
_CUDA_VENDORS = (
    ("iluvatar", re.compile(r"iluvatar|\b(BI|MR)-?V\d", re.I)),
    ("metax", re.compile(r"metax|\b(MX)?C[0-9]{3}\b|\bN[0-9]{3}\b", re.I)),
    ("hygon", re.compile(r"hygon|\bDCU\b|\b[ZK]100", re.I)),
)


def cuda_vendor(device_name: str, *, hip: bool) -> str:
    """Whose chip a "cuda" device is: "nvidia", "amd", "hygon", "iluvatar" or "metax".

    ``hip``: torch is a ROCm/HIP build (``torch.version.hip`` set): AMD, or Hygon's DCU.
    """
    for vendor, pattern in _CUDA_VENDORS:
        if pattern.search(device_name):
            return vendor
    return "amd" if hip else "nvidia"
