"""Which torch accelerator backend runs here, and whose chip it is.

Vendor backends register as torch device types of their own (torch_npu: "npu", torch_mlu: "mlu",
torch_musa: "musa", Intel: "xpu"); torch 2.6+ names the current one through ``torch.accelerator``,
older torch (the vendor stacks ship 2.1-2.5) only through the backend modules, which are tried in
``BACKENDS`` order. CUDA-compatible stacks (Iluvatar CoreX, MetaX MACA, Hygon DTK / ROCm) run
through the "cuda" device type; ``cuda_vendor`` tells them apart by device name and HIP build.

Which device a Run or a measurement uses (``resolve_device``) and its name (``device_name``):
these import torch where they need it; the rest import nothing: they take the torch module
(``sys.modules["torch"]`` or a fake).
"""

from __future__ import annotations

import importlib.util
import platform
import re
import sys
from typing import Any

from perfkit.checks import wrong_value

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


def resolve_device(device: Any) -> str:
    """``"cpu"`` or ``"<type>:<index>"`` for ``device`` ("auto", a string, a torch.device)."""
    if device in (None, "auto"):
        if "torch" not in sys.modules and importlib.util.find_spec("torch") is None:
            return "cpu"
        import torch

        return auto_device(torch)
    if isinstance(device, str) and device == "cpu":
        return "cpu"
    import torch

    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise wrong_value(
            "device",
            f"'auto', 'cpu', a device string like 'cuda:0' or a torch.device ({err})",
            device,
        ) from None
    if resolved.type == "cpu":
        return "cpu"
    index = resolved.index if resolved.index is not None else 0
    return f"{resolved.type}:{index}"


def auto_device(torch: Any) -> str:
    """``"<type>:<current index>"`` of the accelerator ``torch`` (the module, or a fake) uses,
    through torch.accelerator or, on torch < 2.6, the backend modules (torch_npu's "npu",
    torch_mlu's "mlu" ...); ``"cpu"`` without one."""
    device_type = current_accelerator(torch)
    if device_type is None or device_type == "cpu":
        return "cpu"
    current_device = getattr(getattr(torch, device_type, None), "current_device", None)
    if callable(current_device):
        return f"{device_type}:{int(current_device())}"
    return f"{device_type}:{int(torch.accelerator.current_device_index())}"


def device_name(device: str) -> str:
    """The marketing name of ``device`` ("NVIDIA A100-SXM4-40GB"), the CPU's model name."""
    device_type = device.split(":")[0]
    if device_type == "cpu":
        return _cpu_name()
    import torch

    module = getattr(torch, device_type, None)
    get_name = getattr(module, "get_device_name", None)
    if callable(get_name):
        return str(get_name(int(device.split(":")[1])))
    return device_type


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
