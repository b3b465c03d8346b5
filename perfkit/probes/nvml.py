"""The NVML probe (nvidia-ml-py): memory, utilisation, power, temperature and the energy counter
of every CUDA-visible NVIDIA GPU. NVML is initialised once per process, on first ``open``."""

from __future__ import annotations

import atexit
import importlib.util
import os
import re
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from perfkit.probes._base import Probe, register_probe
from perfkit.probes._sample import NAN, DeviceSample, ProbeError

_lock = threading.Lock()
_pynvml: ModuleType | None = None


def nvml() -> ModuleType:
    """The ``pynvml`` module, with ``nvmlInit`` done once per process (shut down at exit).
    Raises ProbeError when the library or the driver is missing."""
    global _pynvml
    with _lock:
        if _pynvml is None:
            import pynvml

            try:
                pynvml.nvmlInit()
            except pynvml.NVMLError as exc:
                raise ProbeError(f"NVML initialisation failed: {exc}") from exc
            atexit.register(pynvml.nvmlShutdown)
            _pynvml = pynvml
        return _pynvml


def visible_indices(cuda_visible_devices: str | None, uuids: Sequence[str]) -> list[int]:
    """NVML indices of the GPUs CUDA shows, in CUDA's order, for a ``CUDA_VISIBLE_DEVICES``
    value (None: unset, every GPU) and the UUIDs of NVML's devices by index.

    Entries are indices or (prefixes of) ``GPU-`` UUIDs; as in CUDA, the list ends at the first
    entry that names no device or repeats one. Indices assume ``CUDA_DEVICE_ORDER=PCI_BUS_ID``
    (NVML's order). MIG instances (``MIG-...``) are not supported: ProbeError.
    """
    if cuda_visible_devices is None:
        return list(range(len(uuids)))
    out: list[int] = []
    for raw in cuda_visible_devices.split(","):
        entry = raw.strip()
        if entry.startswith("MIG-"):
            raise ProbeError(f"CUDA_VISIBLE_DEVICES names a MIG instance ({entry}): not supported")
        index: int | None = None
        if re.fullmatch(r"\d+", entry):
            index = int(entry) if int(entry) < len(uuids) else None
        elif entry.startswith("GPU-"):
            matches = [i for i, uuid in enumerate(uuids) if uuid.startswith(entry)]
            index = matches[0] if len(matches) == 1 else None
        if index is None or index in out:
            break
        out.append(index)
    return out


def _driver_present() -> bool:
    if sys.platform.startswith("linux"):
        return Path("/proc/driver/nvidia/version").exists()
    if sys.platform == "win32":
        return (Path(os.environ.get("WINDIR", r"C:\Windows")) / "System32" / "nvml.dll").exists()
    return False


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


@register_probe
class NvmlProbe(Probe):
    """NVIDIA GPUs through NVML. Device ids ``"nvml:<n>"`` where n is the CUDA ordinal (``nvml:0``
    is what torch calls ``cuda:0``), honouring ``CUDA_VISIBLE_DEVICES`` (indices or UUIDs).

    Per device: memory used / total (bytes, all processes), GPU utilisation (%), power (W, from
    milliwatts), temperature (C) and the total energy counter (J since driver load, from
    millijoules; Volta and newer). A query the device does not support or does not permit
    gives NaN (and is not asked again); any other NVML error raises.
    """

    name = "nvml"

    def __init__(self) -> None:
        self._handles: list[tuple[str, Any, str]] = []  # (device id, handle, name)
        self._unsupported: set[tuple[int, str]] = set()

    def is_available(self) -> bool:
        return importlib.util.find_spec("pynvml") is not None and _driver_present()

    def open(self) -> None:
        pynvml = nvml()
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        uuids = [_text(pynvml.nvmlDeviceGetUUID(h)) for h in handles]
        visible = visible_indices(os.environ.get("CUDA_VISIBLE_DEVICES"), uuids)
        self._handles = [
            (f"nvml:{n}", handles[i], _text(pynvml.nvmlDeviceGetName(handles[i])))
            for n, i in enumerate(visible)
        ]

    def _read(self, n: int, what: str, query: Callable[..., Any], *args: Any) -> Any:
        """``query(*args)``, or None when device ``n`` cannot answer it."""
        if (n, what) in self._unsupported:
            return None
        pynvml = nvml()
        try:
            return query(*args)
        except pynvml.NVMLError as exc:
            if exc.value in (pynvml.NVML_ERROR_NOT_SUPPORTED, pynvml.NVML_ERROR_NO_PERMISSION):
                self._unsupported.add((n, what))
                return None
            raise ProbeError(f"NVML {what} query failed on device {n}: {exc}") from exc

    def sample(self) -> list[DeviceSample]:
        pynvml = nvml()
        out = []
        for n, (device, h, name) in enumerate(self._handles):
            memory = self._read(n, "memory", pynvml.nvmlDeviceGetMemoryInfo, h)
            util = self._read(n, "utilization", pynvml.nvmlDeviceGetUtilizationRates, h)
            power_mw = self._read(n, "power", pynvml.nvmlDeviceGetPowerUsage, h)
            temp = self._read(
                n, "temperature", pynvml.nvmlDeviceGetTemperature, h, pynvml.NVML_TEMPERATURE_GPU
            )
            energy_mj = self._read(n, "energy", pynvml.nvmlDeviceGetTotalEnergyConsumption, h)
            out.append(
                DeviceSample(
                    probe=self.name,
                    device=device,
                    device_name=name,
                    memory_used_bytes=float(memory.used) if memory is not None else NAN,
                    memory_total_bytes=float(memory.total) if memory is not None else NAN,
                    utilization_pct=float(util.gpu) if util is not None else NAN,
                    power_w=power_mw / 1e3 if power_mw is not None else NAN,
                    temperature_c=float(temp) if temp is not None else NAN,
                    energy_j=energy_mj / 1e3 if energy_mj is not None else NAN,
                )
            )
        return out

    def close(self) -> None:
        self._handles = []
