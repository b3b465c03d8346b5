"""The amdsmi probe (AMD's Python binding) through a fake ``amdsmi`` module at the seam (no AMD
GPU here), serving what the recorded ``amd-smi monitor -ptumv`` output shows (block 1 of
tests/fixtures_probes/smi-samples/amd_amd-smi_monitor_amdsmi_changelog.txt; read here with a
regular expression): the binding and the CLI parser must give the same figures."""

from __future__ import annotations

import math
import re
import sys
from types import SimpleNamespace
from typing import Any

import pytest

from perfkit.probes import AmdSmiLibProbe, parse, resolve_probes
from perfkit.probes import amdsmi as amdsmi_module
from tests.test_probes_parsers import SAMPLES

BLOCK = re.split(
    r"^## block \d+\n\$ .*\n",
    (SAMPLES / "amd_amd-smi_monitor_amdsmi_changelog.txt").read_text(),
    flags=re.M,
)[1]
# "  0  171 W     32 °C     33 °C       0 %    114 MHz       0 %    900 MHz     283 MB   196300 MB"
ROW = re.compile(
    r"^\s*(\d+)\s+(\d+) W\s+(\d+) °C\s+\d+ °C\s+(\d+) %.*?(\d+) MB\s+(\d+) MB\s*$", re.M
)
GPUS = [tuple(int(x) for x in m.groups()) for m in ROW.finditer(BLOCK)]


class AmdSmiLibraryException(Exception):
    pass


def fake_amdsmi(fail: dict[str, str] | None = None, **overrides: Any) -> SimpleNamespace:
    """The eight MI300X-class GPUs of the sample; ``fail`` makes a function raise with that
    message; ``calls`` counts calls."""
    fail = fail or {}
    calls: dict[str, int] = {}

    def api(name: str, result: Any) -> Any:
        def call(*args: Any) -> Any:
            calls[name] = calls.get(name, 0) + 1
            if name in fail:
                raise AmdSmiLibraryException(fail[name])
            return result(*args)

        return call

    functions = {
        "amdsmi_init": lambda: None,
        "amdsmi_shut_down": lambda: None,
        "amdsmi_get_processor_handles": lambda: list(range(len(GPUS))),
        "amdsmi_get_gpu_asic_info": lambda h: {"market_name": "AMD Instinct MI300X"},
        "amdsmi_get_gpu_vram_usage": lambda h: {"vram_total": GPUS[h][5], "vram_used": GPUS[h][4]},
        "amdsmi_get_gpu_activity": lambda h: {"gfx_activity": GPUS[h][3], "umc_activity": "N/A"},
        "amdsmi_get_power_info": lambda h: {"current_socket_power": "N/A",
                                            "average_socket_power": GPUS[h][1]},
        "amdsmi_get_temp_metric": lambda h, sensor, metric: GPUS[h][2],
        "amdsmi_get_energy_count": lambda h: {"energy_accumulator": 1_000_000,
                                              "counter_resolution": 15.3},
        **overrides,
    }  # fmt: skip
    fake = SimpleNamespace(
        AmdSmiException=Exception,
        AmdSmiTemperatureType=SimpleNamespace(EDGE=0),
        AmdSmiTemperatureMetric=SimpleNamespace(CURRENT=0),
        calls=calls,
        **{name: api(name, f) for name, f in functions.items()},
    )
    return fake


def open_probe(monkeypatch: pytest.MonkeyPatch, fake: SimpleNamespace) -> AmdSmiLibProbe:
    monkeypatch.setitem(sys.modules, "amdsmi", fake)
    probe = AmdSmiLibProbe()
    probe.open()
    return probe


def test_the_binding_reads_what_amd_smi_prints(monkeypatch) -> None:
    assert len(GPUS) == 8 and GPUS[0] == (0, 171, 32, 0, 283, 196300)
    samples = open_probe(monkeypatch, fake_amdsmi()).sample()
    printed = parse("amd-smi", BLOCK)
    assert [s.device for s in samples] == [f"amdsmi:{i}" for i in range(8)]
    for ours, cli in zip(samples, printed, strict=True):
        for field in ("memory_used_bytes", "memory_total_bytes", "utilization_pct", "power_w",
                      "temperature_c"):  # fmt: skip
            assert getattr(ours, field) == getattr(cli, field), field
    assert samples[0].device_name == "AMD Instinct MI300X"
    # 1e6 counts x 15.3 uJ = 15.3 J
    assert samples[0].energy_j == pytest.approx(15.3)


def test_na_and_errors_are_not_available(monkeypatch) -> None:
    fake = fake_amdsmi(
        fail={"amdsmi_get_power_info": "AMDSMI_STATUS_NOT_SUPPORTED",
              "amdsmi_get_temp_metric": "AMDSMI_STATUS_RETRY"},
        amdsmi_get_gpu_vram_usage=lambda h: {"vram_total": "N/A", "vram_used": "N/A"},
    )  # fmt: skip
    probe = open_probe(monkeypatch, fake)
    first = probe.sample()[0]
    probe.sample()
    assert all(math.isnan(v) for v in (first.power_w, first.temperature_c, first.memory_used_bytes))
    assert first.utilization_pct == 0
    assert fake.calls["amdsmi_get_power_info"] == 8  # not supported: asked once per GPU
    assert fake.calls["amdsmi_get_temp_metric"] == 16  # a retry: asked again


def test_auto_prefers_the_binding_to_the_tool(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(amdsmi_module, "_driver_present", lambda: True)
    monkeypatch.setitem(sys.modules, "amdsmi", fake_amdsmi())
    monkeypatch.setattr(amdsmi_module.importlib.util, "find_spec", lambda name: object())
    tool = tmp_path / "amd-smi"
    tool.write_text("#!/bin/sh\nexit 0\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    names = [p.name for p in resolve_probes("auto") if p.kind == "device"]
    assert names == ["amdsmi"]
