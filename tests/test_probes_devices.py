"""The probes themselves: host (for real), NVML (absent here; its logic against a stand-in
pynvml), the torch allocator (against a stand-in torch), and vendor-tool probes run for real
against small executable scripts standing in for the tools."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from perfkit.probes import (
    DeviceSample,
    HostProbe,
    NvidiaSmiProbe,
    NvmlProbe,
    ProbeError,
    Sampler,
    TorchAllocatorProbe,
    resolve_probes,
)
from perfkit.probes import nvml as nvml_module
from perfkit.probes.nvml import visible_indices
from perfkit.probes.tools import CnmonProbe
from tests.conftest import SMI_SAMPLES as SAMPLES


def test_import_is_cheap_and_starts_nothing() -> None:
    code = (
        "import sys, threading, perfkit.probes\n"
        "bad = [m for m in ('torch', 'pynvml', 'psutil') if m in sys.modules]\n"
        "assert not bad, bad\n"
        "assert threading.active_count() == 1\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


# --- host --------------------------------------------------------------------------------------


def test_host_probe_for_real() -> None:
    probe = HostProbe()
    assert probe.is_available()
    probe.open()
    sum(i * i for i in range(200_000))  # some CPU time between the two readings
    (first,) = probe.sample()
    (second,) = probe.sample()
    probe.close()
    for s in (first, second):
        assert s.device == "host" and s.probe == "host"
        assert 0 < s.memory_used_bytes <= s.memory_total_bytes
        assert s.process_rss_bytes > 10 * 2**20  # a Python process with pytest loaded
        assert math.isnan(s.cpu_utilization_pct) or 0 <= s.cpu_utilization_pct <= 100
        assert math.isnan(s.power_w) and math.isnan(s.allocated_bytes)
    units = {name: unit for name, _, unit in first.metrics()}
    assert units["process_rss_bytes"] == "B" and units["memory_total_bytes"] == "B"


# --- NVML --------------------------------------------------------------------------------------


@pytest.mark.skipif(
    Path("/proc/driver/nvidia").exists(), reason="this machine has an NVIDIA driver"
)
def test_nvml_unavailable_here_is_not_a_crash() -> None:
    assert NvmlProbe().is_available() is False
    assert "nvml" not in [p.name for p in resolve_probes("auto")]
    with pytest.raises(ValueError, match="probes: probe 'nvml' is not available on this machine"):
        resolve_probes(["nvml"])


def test_nvml_open_without_library_is_a_probe_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """On this machine pynvml is installed but libnvidia-ml is not: the sampler would record
    this error (the probe is never picked by "auto" here)."""
    if Path("/proc/driver/nvidia").exists():
        pytest.skip("this machine has an NVIDIA driver")
    monkeypatch.setattr(nvml_module, "_pynvml", None)
    with pytest.raises(ProbeError, match="NVML initialisation failed"):
        NvmlProbe().open()


UUIDS = ["GPU-aaaa1111", "GPU-bbbb2222", "GPU-cccc3333"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, [0, 1, 2]),
        ("", []),
        ("2,0", [2, 0]),
        ("1, 7, 0", [1]),  # CUDA stops at the first entry naming no device
        ("GPU-cccc,GPU-aaaa1111", [2, 0]),  # UUIDs and unique UUID prefixes
        ("GPU-,1", []),  # an ambiguous prefix names no device
        ("0,0", [0]),  # a repeat ends the list
        ("-1", []),
    ],
)
def test_cuda_visible_devices(value: str | None, expected: list[int]) -> None:
    assert visible_indices(value, UUIDS) == expected


def test_cuda_visible_devices_names_mig_instances() -> None:
    # NVML's devices: two GPUs, then two MIG instances; indices count GPUs only
    uuids = ["GPU-aaaa", "GPU-bbbb", "MIG-1111", "MIG-2222"]
    assert visible_indices(None, uuids) == [0, 1]
    assert visible_indices("MIG-2222,MIG-11", uuids) == [3, 2]
    assert visible_indices("MIG-1234", uuids) == []  # names no device
    assert visible_indices("1,MIG-1111", uuids) == [1, 2]


class FakeNVMLError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(f"NVML error {value}")
        self.value = value


def fake_pynvml(power_error: int | None = None) -> SimpleNamespace:
    """Two GPUs; GPU 1 does not support the energy counter; ``power_error`` makes power fail."""
    calls: dict[str, int] = {}

    def energy(h: int) -> int:
        calls["energy"] = calls.get("energy", 0) + 1
        if h == 1:
            raise FakeNVMLError(3)  # NVML_ERROR_NOT_SUPPORTED
        return 123_456  # mJ

    def power(h: int) -> int:
        if power_error is not None:
            raise FakeNVMLError(power_error)
        return 69_850  # mW

    return SimpleNamespace(
        NVMLError=FakeNVMLError,
        NVML_ERROR_NOT_SUPPORTED=3,
        NVML_ERROR_NO_PERMISSION=4,
        NVML_TEMPERATURE_GPU=0,
        calls=calls,
        nvmlInit=lambda: None,
        nvmlShutdown=lambda: None,
        nvmlDeviceGetCount=lambda: 2,
        nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetUUID=lambda h: ["GPU-aaaa", "GPU-bbbb"][h],
        nvmlDeviceGetName=lambda h: b"NVIDIA H100 80GB HBM3",
        nvmlDeviceGetMemoryInfo=lambda h: SimpleNamespace(used=(h + 1) * 2**30, total=80 * 2**30),
        nvmlDeviceGetUtilizationRates=lambda h: SimpleNamespace(gpu=97, memory=10),
        nvmlDeviceGetPowerUsage=power,
        nvmlDeviceGetTemperature=lambda h, sensor: 59,
        nvmlDeviceGetTotalEnergyConsumption=energy,
    )


def test_nvml_probe_units_visibility_and_unsupported(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = fake_pynvml()
    monkeypatch.setattr(nvml_module, "_pynvml", fake)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-bbbb,0")
    probe = NvmlProbe()
    probe.open()
    first = probe.sample()
    assert [(s.device, s.memory_used_bytes) for s in first] == [
        ("nvml:0", 2 * 2**30),  # CUDA device 0 is NVML device 1 here
        ("nvml:1", 1 * 2**30),
    ]
    s0, s1 = first
    assert s0.device_name == "NVIDIA H100 80GB HBM3" and s0.memory_total_bytes == 80 * 2**30
    assert (s0.utilization_pct, s0.power_w, s0.temperature_c) == (97, 69.85, 59)  # 69850 mW
    assert math.isnan(s0.energy_j)  # NVML device 1: not supported -> NaN, not an exception
    assert s1.energy_j == pytest.approx(123.456)  # 123456 mJ
    probe.sample()
    assert fake.calls["energy"] == 3  # the unsupported query is not asked again


def test_nvml_other_errors_are_not_available(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = fake_pynvml(power_error=15)  # NVML_ERROR_GPU_IS_LOST
    monkeypatch.setattr(nvml_module, "_pynvml", fake)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    probe = NvmlProbe()
    probe.open()
    s0, s1 = probe.sample()
    assert math.isnan(s0.power_w) and math.isnan(s1.power_w)  # this sample: not available
    assert s0.temperature_c == 59 and s0.memory_used_bytes == 2**30  # the rest is read


# --- torch allocator ---------------------------------------------------------------------------


def fake_torch(stats: list[dict[str, int]]) -> SimpleNamespace:
    xpu = SimpleNamespace(memory_stats=lambda i: stats[i], device_count=lambda: len(stats))
    accelerator = SimpleNamespace(
        is_available=lambda: True, current_accelerator=lambda: SimpleNamespace(type="xpu")
    )
    return SimpleNamespace(accelerator=accelerator, xpu=xpu)


def test_allocator_probe_reads_the_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    stats = {
        "allocated_bytes.all.current": 10,
        "allocated_bytes.all.peak": 30,
        "reserved_bytes.all.current": 40,
        "reserved_bytes.all.peak": 64,
    }
    monkeypatch.setitem(sys.modules, "torch", fake_torch([stats, {}]))
    probe = TorchAllocatorProbe()
    assert probe.is_available()
    probe.open()
    used, untouched = probe.sample()
    assert (used.device, used.allocated_bytes, used.allocated_peak_bytes) == ("xpu:0", 10, 30)
    assert (used.reserved_bytes, used.reserved_peak_bytes) == (40, 64)
    assert untouched.device == "xpu:1" and untouched.allocated_peak_bytes == 0  # never used


def test_allocator_probe_unknown_stats_raise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", fake_torch([{"something.else": 1}]))
    probe = TorchAllocatorProbe()
    probe.open()
    with pytest.raises(ProbeError, match=r"allocated_bytes\.all\.current"):
        probe.sample()


def test_allocator_probe_needs_torch_imported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    assert TorchAllocatorProbe().is_available() is False


# --- vendor tools, with stand-in executables ---------------------------------------------------


def script(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / name
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(0o755)
    return path


def test_one_shot_tool_probe_runs_and_parses(tmp_path: Path) -> None:
    recorded = (SAMPLES / "cambricon_cnmon_v5.10.13_paddle_docs.txt").read_text().split("\n", 1)[1]
    (tmp_path / "out.txt").write_text(recorded)
    tool = script(tmp_path, "cnmon", f"print(open({str(tmp_path / 'out.txt')!r}).read())\n")
    probe = CnmonProbe(executable=str(tool))
    assert probe.is_available() and not CnmonProbe().is_available()  # not on PATH here
    probe.open()
    samples = probe.sample()
    assert [(s.device, s.memory_total_bytes, s.power_w) for s in samples] == [
        ("cnmon:0", 23374 * 2**20, 106.0),
        ("cnmon:1", 23374 * 2**20, 106.0),
    ]


def test_tool_failure_is_a_probe_error_with_its_message(tmp_path: Path) -> None:
    tool = script(tmp_path, "cnmon", "import sys\nsys.exit('cnmon: driver not loaded')\n")
    probe = CnmonProbe(executable=str(tool))
    probe.open()
    with pytest.raises(ProbeError, match="exited with status 1: cnmon: driver not loaded"):
        probe.sample()


def test_hanging_tool_times_out(tmp_path: Path) -> None:
    tool = script(tmp_path, "cnmon", "import time\ntime.sleep(60)\n")
    probe = CnmonProbe(executable=str(tool), timeout_s=0.5)
    probe.open()
    start = time.monotonic()
    with pytest.raises(ProbeError, match=r"did not finish within 0\.5 s"):
        probe.sample()
    assert time.monotonic() - start < 10  # generous bound


FAKE_NVIDIA_SMI = """\
import os, sys, time
args = sys.argv[1:]
with open({log!r}, "a") as log:
    log.write(f"{{os.getpid()}} {{' '.join(args)}}\\n")
loop_ms = int(next(a for a in args if a.startswith("--loop-ms=")).split("=")[1])
print("index, name, memory.used [MiB], memory.total [MiB], utilization.gpu [%], "
      "power.draw [W], temperature.gpu", flush=True)
n = 0
while n < {rounds}:
    n += 1
    for i in range(2):
        row = f"{{i}}, NVIDIA H100 80GB HBM3, {{n}} MiB, 81559 MiB, 100 %, 631.95 W, 59"
        print(row, flush=True)
    time.sleep(loop_ms / 1000)
sys.exit("{exit_message}")
"""


def fake_nvidia_smi(tmp_path: Path, rounds: int = 10**9, exit_message: str = "") -> Path:
    body = FAKE_NVIDIA_SMI.format(
        log=str(tmp_path / "log"), rounds=rounds, exit_message=exit_message
    )
    return script(tmp_path, "nvidia-smi", body)


def wait_for(condition: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_nvidia_smi_probe_keeps_one_looping_process(tmp_path: Path) -> None:
    probe = NvidiaSmiProbe(executable=str(fake_nvidia_smi(tmp_path)))
    probe.set_interval(0.1)
    probe.open()
    try:
        first = probe.sample()
        assert [s.device for s in first] == ["nvidia-smi:0", "nvidia-smi:1"]  # both GPUs at once
        assert first[0].power_w == 631.95 and first[0].memory_total_bytes == 81559 * 2**20
        wait_for(lambda: probe.sample()[0].memory_used_bytes > first[0].memory_used_bytes)
    finally:
        probe.close()
    (line,) = (tmp_path / "log").read_text().splitlines()  # one process for every sample
    pid, args = line.split(" ", 1)
    assert "--format=csv" in args and "--loop-ms=100" in args and "--query-gpu=index," in args
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid), 0)  # stopped and reaped by close()


def test_nvidia_smi_probe_reports_the_tool_dying(tmp_path: Path) -> None:
    tool = fake_nvidia_smi(tmp_path, rounds=2, exit_message="Unable to determine the device handle")
    probe = NvidiaSmiProbe(executable=str(tool))
    probe.set_interval(0.02)
    probe.open()
    try:
        with pytest.raises(ProbeError, match="exited with status 1: Unable to determine"):
            wait_for(lambda: not probe.sample())
    finally:
        probe.close()


def test_sampler_with_a_dying_tool_and_the_host(tmp_path: Path) -> None:
    tool = script(tmp_path, "cnmon", "import sys\nsys.exit('no MLU found')\n")
    samples: list[DeviceSample] = []
    errors: list[tuple[str, str]] = []
    probes = [CnmonProbe(executable=str(tool)), HostProbe()]
    with Sampler(probes, 60.0, samples.append, lambda p, m: errors.append((p, m))):
        pass
    assert len(errors) == 1 and errors[0][0] == "cnmon" and "no MLU found" in errors[0][1]
    assert [s.device for s in samples] == ["host", "host"]


def test_auto_picks_an_installed_vendor_tool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script(tmp_path, "cnmon", "print('stand-in')\n")
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")
    if NvmlProbe().is_available():
        pytest.skip("NVML is available here and comes first")
    assert [p.name for p in resolve_probes("auto")] == ["cnmon", "host"]
