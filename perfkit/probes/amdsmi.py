"""The amdsmi probe: AMD GPUs through AMD's Python binding (``import amdsmi``, shipped with ROCm
6+), read as a library instead of parsing ``amd-smi`` output (the ``amd-smi`` tool probe stays
the fallback where the binding is not importable)."""

from __future__ import annotations

import contextlib
import importlib.util
import math
from pathlib import Path
from typing import Any

from perfkit.probes._base import Probe, register_probe
from perfkit.probes._sample import NAN, DeviceSample, ProbeError

MIB = 2.0**20


def _driver_present() -> bool:
    return Path("/sys/module/amdgpu").exists()


def _number(value: Any) -> float:
    """A binding value as a float; NaN for "N/A" and anything else that is not a number."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return NAN
    return number if math.isfinite(number) else NAN


@register_probe
class AmdSmiLibProbe(Probe):
    """AMD GPUs through the ``amdsmi`` binding. Device ids ``"amdsmi:<n>"``, n the index in
    amdsmi's processor list (as ``amd-smi`` numbers GPUs).

    Per device: VRAM used / total (the binding's MB, binary like amd-smi's: MiB), GFX activity
    (%), socket power (W: current, else average), edge temperature (C) and the energy
    accumulator (J, from its count times its resolution in microjoules). A value the binding
    gives as "N/A", or a query that raises, is NaN; a query the device does not support or
    does not permit is not asked again.
    """

    name = "amdsmi"

    def __init__(self) -> None:
        self._amdsmi: Any = None
        self._handles: list[tuple[str, Any, str]] = []  # (device id, handle, name)
        self._failed: set[tuple[int, str]] = set()
        self._errors: type[BaseException] = Exception

    def is_available(self) -> bool:
        return importlib.util.find_spec("amdsmi") is not None and _driver_present()

    def open(self) -> None:
        import amdsmi  # type: ignore[import-not-found]

        try:
            amdsmi.amdsmi_init()
            handles = amdsmi.amdsmi_get_processor_handles()
        except Exception as exc:  # the binding's AmdSmiException family, ctypes errors
            raise ProbeError(f"amdsmi initialisation failed: {exc}") from exc
        self._amdsmi = amdsmi
        self._errors = getattr(amdsmi, "AmdSmiException", Exception)
        self._handles = []
        for n, handle in enumerate(handles):
            asic = self._read(n, "name", "amdsmi_get_gpu_asic_info", handle) or {}
            self._handles.append((f"amdsmi:{n}", handle, str(asic.get("market_name", ""))))

    def _read(self, n: int, what: str, query: str, *args: Any) -> Any:
        """``amdsmi.<query>(*args)``, or None when device ``n`` cannot answer it."""
        if (n, what) in self._failed:
            return None
        function = getattr(self._amdsmi, query, None)
        if function is None:  # a binding without it
            self._failed.add((n, what))
            return None
        try:
            return function(*args)
        except self._errors as exc:  # the binding's exceptions: not available
            if any(code in str(exc) for code in ("STATUS_NOT_SUPPORTED", "STATUS_NO_PERM")):
                self._failed.add((n, what))
            return None

    def sample(self) -> list[DeviceSample]:
        if self._amdsmi is None:
            raise ProbeError("amdsmi probe sampled before open()")
        amdsmi = self._amdsmi
        out = []
        for n, (device, h, name) in enumerate(self._handles):
            vram = self._read(n, "memory", "amdsmi_get_gpu_vram_usage", h) or {}
            activity = self._read(n, "utilization", "amdsmi_get_gpu_activity", h) or {}
            power = self._read(n, "power", "amdsmi_get_power_info", h) or {}
            watts = _number(power.get("current_socket_power"))
            if math.isnan(watts):  # older gpu_metrics report only the average
                watts = _number(power.get("average_socket_power"))
            sensor = getattr(getattr(amdsmi, "AmdSmiTemperatureType", None), "EDGE", None)
            current = getattr(getattr(amdsmi, "AmdSmiTemperatureMetric", None), "CURRENT", None)
            temp = _number(
                self._read(n, "temperature", "amdsmi_get_temp_metric", h, sensor, current)
            )
            energy = self._read(n, "energy", "amdsmi_get_energy_count", h) or {}
            count = energy.get("energy_accumulator", energy.get("power"))
            energy_j = _number(count) * _number(energy.get("counter_resolution")) / 1e6
            out.append(
                DeviceSample(
                    probe=self.name,
                    device=device,
                    device_name=name,
                    memory_used_bytes=_number(vram.get("vram_used")) * MIB,
                    memory_total_bytes=_number(vram.get("vram_total")) * MIB,
                    utilization_pct=_number(activity.get("gfx_activity")),
                    power_w=watts,
                    temperature_c=temp,
                    energy_j=energy_j,
                )
            )
        return out

    def close(self) -> None:
        if self._amdsmi is not None:
            with contextlib.suppress(self._errors):  # closing must not fail the run
                self._amdsmi.amdsmi_shut_down()
        self._amdsmi = None
        self._handles = []
