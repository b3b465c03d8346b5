"""The NVML probe (nvidia-ml-py): memory, utilisation, power, temperature and the energy counter
of every CUDA-visible NVIDIA GPU or MIG instance. NVML is initialised once per process, on first
``open``."""

from __future__ import annotations

import atexit
import importlib.util
import os
import re
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
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
    """Indices into ``uuids`` of the devices CUDA shows, in CUDA's order, for a
    ``CUDA_VISIBLE_DEVICES`` value (None: unset, every GPU).

    ``uuids``: NVML's GPUs (``GPU-...``) and MIG instances (``MIG-...``). Entries are GPU
    indices (counting GPUs only) or (unique prefixes of) GPU or MIG UUIDs; as in CUDA, the
    list ends at the first entry that names no device or repeats one. Indices assume
    ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` (NVML's order).
    """
    gpus = [i for i, uuid in enumerate(uuids) if not uuid.startswith("MIG-")]
    if cuda_visible_devices is None:
        return gpus
    out: list[int] = []
    for raw in cuda_visible_devices.split(","):
        entry = raw.strip()
        index: int | None = None
        if re.fullmatch(r"\d+", entry):
            index = gpus[int(entry)] if int(entry) < len(gpus) else None
        elif entry.startswith(("GPU-", "MIG-")):
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


#: NVML errors that will not change while the process runs: the query is not asked again.
_PERMANENT = (
    "NVML_ERROR_NOT_SUPPORTED",
    "NVML_ERROR_NO_PERMISSION",
    "NVML_ERROR_FUNCTION_NOT_FOUND",
)


@dataclass(frozen=True)
class _Device:
    """An NVML device a probe reads: a GPU, or a MIG instance of one (``parent``: its GPU's
    NVML index, ``instance``: "GI <g> CI <c>")."""

    uuid: str
    handle: Any
    name: str
    parent: int | None = None
    instance: str = ""


@register_probe
class NvmlProbe(Probe):
    """NVIDIA GPUs and MIG instances through NVML. Device ids ``"nvml:<n>"`` where n is the CUDA
    ordinal (``nvml:0`` is what torch calls ``cuda:0``), honouring ``CUDA_VISIBLE_DEVICES``
    (indices, GPU or MIG UUIDs).

    Per device: memory used / total (bytes, all processes; a MIG instance's own), GPU
    utilisation (%), power (W, from milliwatts), temperature (C) and the total energy counter
    (J since driver load, from millijoules; Volta and newer). A MIG instance has its own
    memory (and utilisation where NVML gives it); its name says its parent GPU; power,
    temperature and energy are the whole GPU's, so an instance reports them as NaN (read the
    parent GPU for them). Any NVML
    error, or a function the installed binding lacks, makes that quantity NaN: not supported,
    not permitted and not found in the driver are not asked again, other errors (a GPU lost,
    a timeout) only for that sample.
    """

    name = "nvml"

    def __init__(self) -> None:
        self._devices: list[tuple[str, _Device]] = []  # (device id, device)
        self._unsupported: set[tuple[int, str]] = set()

    def is_available(self) -> bool:
        return importlib.util.find_spec("pynvml") is not None and _driver_present()

    def open(self) -> None:
        pynvml = nvml()
        devices: list[_Device] = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = _text(pynvml.nvmlDeviceGetName(handle))
            devices.append(_Device(_text(pynvml.nvmlDeviceGetUUID(handle)), handle, name))
            devices += mig_instances(pynvml, i, handle, name)
        visible = visible_indices(os.environ.get("CUDA_VISIBLE_DEVICES"), [d.uuid for d in devices])
        self._devices = [(f"nvml:{n}", devices[i]) for n, i in enumerate(visible)]

    def _read(self, n: int, what: str, query: str, *args: Any) -> Any:
        """``pynvml.<query>(*args)``, or None when device ``n`` cannot answer it now."""
        if (n, what) in self._unsupported:
            return None
        pynvml = nvml()
        function = getattr(pynvml, query, None)
        if function is None:  # a binding older than the function
            self._unsupported.add((n, what))
            return None
        try:
            return function(*args)
        except pynvml.NVMLError as exc:
            if exc.value in [getattr(pynvml, name, None) for name in _PERMANENT]:
                self._unsupported.add((n, what))
            return None

    def sample(self) -> list[DeviceSample]:
        pynvml = nvml()
        out = []
        for n, (device, d) in enumerate(self._devices):
            h, gpu = d.handle, d.parent is None
            memory = self._read(n, "memory", "nvmlDeviceGetMemoryInfo", h)
            util = self._read(n, "utilization", "nvmlDeviceGetUtilizationRates", h)
            # power, temperature and energy are the whole GPU's: never a MIG instance's
            power_mw = self._read(n, "power", "nvmlDeviceGetPowerUsage", h) if gpu else None
            sensor = getattr(pynvml, "NVML_TEMPERATURE_GPU", 0)
            temp = (
                self._read(n, "temperature", "nvmlDeviceGetTemperature", h, sensor) if gpu else None
            )
            energy_mj = None
            if gpu:
                energy_mj = self._read(n, "energy", "nvmlDeviceGetTotalEnergyConsumption", h)
            out.append(
                DeviceSample(
                    probe=self.name,
                    device=device,
                    device_name=d.name,
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
        self._devices = []


def mig_instances(pynvml: Any, index: int, handle: Any, gpu_name: str) -> list[_Device]:
    """The MIG instances of GPU ``index`` when MIG mode is on; none where the GPU, the driver
    or the binding has no MIG (any NVML error, a function the binding lacks)."""
    try:
        current, _pending = pynvml.nvmlDeviceGetMigMode(handle)
        if current != getattr(pynvml, "NVML_DEVICE_MIG_ENABLE", 1):
            return []
        count = pynvml.nvmlDeviceGetMaxMigDeviceCount(handle)
    except (pynvml.NVMLError, AttributeError):
        return []
    out = []
    for k in range(count):
        try:
            mig = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, k)
        except pynvml.NVMLError:  # NOT_FOUND: an empty slot
            continue
        try:
            instance = (
                f"GI {pynvml.nvmlDeviceGetGpuInstanceId(mig)} "
                f"CI {pynvml.nvmlDeviceGetComputeInstanceId(mig)}"
            )
        except (pynvml.NVMLError, AttributeError):
            instance = f"MIG device {k}"
        try:
            uuid, name = _text(pynvml.nvmlDeviceGetUUID(mig)), _text(pynvml.nvmlDeviceGetName(mig))
        except pynvml.NVMLError:
            continue
        label = f"{name} ({instance} of GPU {index}: {gpu_name})"
        out.append(_Device(uuid, mig, label, index, instance))
    return out
