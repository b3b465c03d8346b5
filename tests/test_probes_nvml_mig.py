"""The NVML probe on a MIG-partitioned H100 and under every NVML error, through a fake pynvml at
the seam (no NVIDIA driver here). The fake serves what the recorded capture
(tests/fixtures_probes/smi-samples/nvidia-smi_H100_MIG_captures.txt, "load" sections) shows:
the MIG table's per-instance memory, ``nvidia-smi -L``'s instance UUIDs and profiles, the
parent GPU's power, temperature and memory; utilisation is N/A on a MIG-enabled GPU."""

from __future__ import annotations

import math
import re
from types import SimpleNamespace
from typing import Any

import pynvml
import pytest

from perfkit.probes import NvmlProbe
from perfkit.probes import nvml as nvml_module
from tests.test_probes_parsers import nvidia_sections

MIB = 2**20
MIG_FILE = "nvidia-smi_H100_MIG_captures.txt"
#: Every NVML error code the real binding defines (an independent list of "every kind").
ERRORS = sorted({v for k, v in vars(pynvml).items() if k.startswith("NVML_ERROR_")} - {0})


def mig_table() -> list[tuple[int, int, int, int, int]]:
    """(GI, CI, MIG dev, used MiB, total MiB) per row of the load table's "MIG devices"."""
    section = nvidia_sections(MIG_FILE)["load :: nvidia-smi (default table)"]
    rows = re.findall(r"^\|\s+0\s+(\d+)\s+(\d+)\s+(\d+)\s+\|\s+(\d+)MiB / +(\d+)MiB", section, re.M)
    return [tuple(int(x) for x in row) for row in rows]  # type: ignore[misc]


def instances() -> list[tuple[str, str]]:
    """(profile, UUID) per MIG device of ``nvidia-smi -L``, in device order."""
    listing = nvidia_sections(MIG_FILE)["capabilities :: list (-L)"]
    return re.findall(r"MIG (\S+)\s+Device\s+\d+: \(UUID: (MIG-[0-9a-f-]+)\)", listing)


class FakeNVMLError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(f"NVML error {value}")
        self.value = value


def fake_pynvml(fail: dict[str, int] | None = None) -> SimpleNamespace:
    """The capture's GPU 0 (MIG on, 7 MIG slots, 4 used) as pynvml would show it. ``fail``
    maps a function name to the NVML error code it raises; ``calls`` counts calls."""
    table, listing = mig_table(), instances()
    calls: dict[str, int] = {}
    fail = fail or {}

    def api(name: str, result: Any) -> Any:
        def call(*args: Any) -> Any:
            calls[name] = calls.get(name, 0) + 1
            if name in fail:
                raise FakeNVMLError(fail[name])
            return result(*args) if callable(result) else result

        return call

    def mig_handle(h: str, k: int) -> str:
        if k >= len(table):
            raise FakeNVMLError(pynvml.NVML_ERROR_NOT_FOUND)
        return f"mig{k}"

    def memory(h: str) -> SimpleNamespace:
        if h == "gpu0":  # "11125MiB /  81559MiB" on the GPU line
            return SimpleNamespace(used=11125 * MIB, total=81559 * MIB)
        used, total = table[int(h[3:])][3:]
        return SimpleNamespace(used=used * MIB, total=total * MIB)

    def not_supported(*args: Any) -> Any:  # "N/A" GPU-Util on a MIG-enabled GPU
        raise FakeNVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)

    return SimpleNamespace(
        NVMLError=FakeNVMLError,
        NVML_ERROR_NOT_SUPPORTED=pynvml.NVML_ERROR_NOT_SUPPORTED,
        NVML_ERROR_NO_PERMISSION=pynvml.NVML_ERROR_NO_PERMISSION,
        NVML_ERROR_FUNCTION_NOT_FOUND=pynvml.NVML_ERROR_FUNCTION_NOT_FOUND,
        NVML_DEVICE_MIG_ENABLE=pynvml.NVML_DEVICE_MIG_ENABLE,
        NVML_TEMPERATURE_GPU=pynvml.NVML_TEMPERATURE_GPU,
        calls=calls,
        nvmlDeviceGetCount=api("nvmlDeviceGetCount", 1),
        nvmlDeviceGetHandleByIndex=api("nvmlDeviceGetHandleByIndex", "gpu0"),
        nvmlDeviceGetUUID=api(
            "nvmlDeviceGetUUID",
            lambda h: (
                "GPU-00000000-0000-0000-0000-000000000000"
                if h == "gpu0"
                else listing[int(h[3:])][1]
            ),
        ),
        nvmlDeviceGetName=api(
            "nvmlDeviceGetName",
            lambda h: (
                b"NVIDIA H100 80GB HBM3"
                if h == "gpu0"
                else f"NVIDIA H100 80GB HBM3 MIG {listing[int(h[3:])][0]}".encode()
            ),
        ),
        nvmlDeviceGetMigMode=api("nvmlDeviceGetMigMode", (1, 1)),  # Current / Pending: Enabled
        nvmlDeviceGetMaxMigDeviceCount=api("nvmlDeviceGetMaxMigDeviceCount", 7),
        nvmlDeviceGetMigDeviceHandleByIndex=api("nvmlDeviceGetMigDeviceHandleByIndex", mig_handle),
        nvmlDeviceGetGpuInstanceId=api(
            "nvmlDeviceGetGpuInstanceId", lambda h: table[int(h[3:])][0]
        ),
        nvmlDeviceGetComputeInstanceId=api(
            "nvmlDeviceGetComputeInstanceId", lambda h: table[int(h[3:])][1]
        ),
        nvmlDeviceGetMemoryInfo=api("nvmlDeviceGetMemoryInfo", memory),
        nvmlDeviceGetUtilizationRates=api("nvmlDeviceGetUtilizationRates", not_supported),
        nvmlDeviceGetPowerUsage=api("nvmlDeviceGetPowerUsage", 432_000),  # "432W /  700W"
        nvmlDeviceGetTemperature=api("nvmlDeviceGetTemperature", 52),  # "52C"
        nvmlDeviceGetTotalEnergyConsumption=api("nvmlDeviceGetTotalEnergyConsumption", 9_000_000),
    )


def open_probe(monkeypatch: pytest.MonkeyPatch, fake: SimpleNamespace, visible: str | None):
    monkeypatch.setattr(nvml_module, "_pynvml", fake)
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    probe = NvmlProbe()
    probe.open()
    return probe


def test_the_capture_has_four_instances() -> None:
    # "|  0    2   0   0  |   11091MiB / 40448MiB" ... "|  0   10   0   3  |  9MiB /  9984MiB"
    assert mig_table() == [
        (2, 0, 0, 11091, 40448),
        (3, 0, 1, 17, 20096),
        (9, 0, 2, 9, 9984),
        (10, 0, 3, 9, 9984),
    ]
    assert [p for p, _ in instances()] == ["3g.40gb", "2g.20gb", "1g.10gb", "1g.10gb"]


def test_a_mig_instance_named_in_cuda_visible_devices_is_read(monkeypatch) -> None:
    # CUDA device 0 is MIG device 1 (2g.20gb, GI 3 CI 0): 17 MiB of 20096 MiB, by UUID prefix
    probe = open_probe(monkeypatch, fake_pynvml(), "MIG-00000001")
    (s,) = probe.sample()
    assert s.device == "nvml:0" and (s.memory_used_bytes, s.memory_total_bytes) == (
        17 * MIB,
        20096 * MIB,
    )
    assert (
        s.device_name
        == "NVIDIA H100 80GB HBM3 MIG 2g.20gb (GI 3 CI 0 of GPU 0: NVIDIA H100 80GB HBM3)"
    )
    # utilisation N/A on MIG; power, temperature and energy are the whole GPU's: not an instance's
    assert all(math.isnan(v) for v in (s.utilization_pct, s.power_w, s.temperature_c, s.energy_j))


def test_several_instances_in_cuda_order_and_the_parent_alone(monkeypatch) -> None:
    uuids = [u for _, u in instances()]
    probe = open_probe(monkeypatch, fake_pynvml(), f"{uuids[3]},{uuids[0]}")
    samples = probe.sample()
    assert [(s.device, s.memory_used_bytes / MIB, s.memory_total_bytes / MIB) for s in samples] == [
        ("nvml:0", 9, 9984),  # MIG device 3
        ("nvml:1", 11091, 40448),  # MIG device 0, the one gpu_burn runs in
    ]
    # unset: the GPU itself, 11125 MiB / 81559 MiB, 432 W, 52 C, 9000 J (9e6 mJ)
    (gpu,) = open_probe(monkeypatch, fake_pynvml(), None).sample()
    assert (gpu.device, gpu.device_name) == ("nvml:0", "NVIDIA H100 80GB HBM3")
    assert (gpu.memory_used_bytes / MIB, gpu.power_w, gpu.temperature_c, gpu.energy_j) == (
        11125,
        432.0,
        52.0,
        9000.0,
    )
    assert math.isnan(gpu.utilization_pct)


QUERIES = {
    "nvmlDeviceGetMemoryInfo": ("memory_used_bytes", "memory_total_bytes"),
    "nvmlDeviceGetPowerUsage": ("power_w",),
    "nvmlDeviceGetTemperature": ("temperature_c",),
    "nvmlDeviceGetTotalEnergyConsumption": ("energy_j",),
}


@pytest.mark.parametrize("code", ERRORS)
def test_every_nvml_error_makes_that_field_not_available(monkeypatch, code: int) -> None:
    for query, fields in QUERIES.items():
        fake = fake_pynvml(fail={query: code})
        probe = open_probe(monkeypatch, fake, None)
        first = probe.sample()[0]
        again = probe.sample()[0]
        for sample in (first, again):
            assert all(math.isnan(getattr(sample, f)) for f in fields), (query, code)
            others = [f for q, fs in QUERIES.items() if q != query for f in fs]
            assert not any(math.isnan(getattr(sample, f)) for f in others)
        # not supported / not permitted / not in this driver: not asked again
        permanent = code in (
            pynvml.NVML_ERROR_NOT_SUPPORTED,
            pynvml.NVML_ERROR_NO_PERMISSION,
            pynvml.NVML_ERROR_FUNCTION_NOT_FOUND,
        )
        assert fake.calls[query] == (1 if permanent else 2)


def test_mig_discovery_errors_or_an_old_binding_mean_no_instances(monkeypatch) -> None:
    uuid = instances()[0][1]
    for fail in ("nvmlDeviceGetMigMode", "nvmlDeviceGetMaxMigDeviceCount"):
        probe = open_probe(
            monkeypatch, fake_pynvml(fail={fail: pynvml.NVML_ERROR_FUNCTION_NOT_FOUND}), uuid
        )
        assert probe.sample() == []  # the MIG UUID names no device: CUDA's list ends there
    old = fake_pynvml()
    del old.nvmlDeviceGetMigMode  # a binding older than MIG
    del old.nvmlDeviceGetTotalEnergyConsumption  # ... and than the energy counter
    (gpu,) = open_probe(monkeypatch, old, None).sample()
    assert math.isnan(gpu.energy_j) and gpu.power_w == 432.0
