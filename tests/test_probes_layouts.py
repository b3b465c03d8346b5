"""More recorded layouts per tool (tests/fixtures_probes/<tool>/, each file's first line names
its source): npu-smi 20.x-25.x (910A with Memory-Usage (the control CPU's DDR) and HBM-Usage
columns, 310P3 without HBM, the 300I Duo's two chips per NPU, NA power), cnmon 1.16 and 4.20,
hy-smi's HCU columns, xpu_smi's layouts with and without power/temperature, rocm-smi 6's Concise
Info (two header lines, "°C" / "_C", Power N/A), mx-smi 2.1 (power cap NA). NA fields read NaN
and never raise.

Expected values are read off the files by hand (memory in MiB, power W, temperature C, %).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from perfkit.probes import parse
from tests.test_probes_parsers import NAN, Row, check

FIXTURES = Path(__file__).resolve().parent / "fixtures_probes"
TOOLS = ("npu-smi", "cnmon", "hy-smi", "xpu_smi", "rocm-smi", "mx-smi")


def body(name: str) -> str:
    """A fixture (``<tool>/<file>``) without its first line (its source)."""
    return (FIXTURES / name).read_text().split("\n", 1)[1]


CASES: dict[str, list[Row]] = {
    # "| 0     910A | OK | 68.6  36 |" / "| 0 | 0000:C1:00.0 | 0  591 / 14795  0 / 32768 |":
    # HBM 0 / 32768 is the device memory, not the 591 / 14795 DDR pair.
    "npu-smi/npu-smi_20.2.2_910A_haicgu_docs.txt": [
        ("0.0", "910A", 0, 32768, 0, 68.6, 36),
        ("1.0", "910A", 0, 32768, 0, 63.7, 31),
    ],
    # Hugepages-Usage "15 / 15" on the NPU line is not memory; HBM 1 / 32768.
    "npu-smi/npu-smi_21.0.4_910A_paddle_docs.txt": [
        ("0.0", "910A", 1, 32768, 0, 70.9, 42),
        ("1.0", "910A", 1, 32768, 0, 67.2, 36),
    ],
    # Power NA -> NaN; everything else as in the 21.0.4 file.
    "npu-smi/npu-smi_910A_power_NA_constructed.txt": [
        ("0.0", "910A", 1, 32768, 0, 70.9, 42),
        ("1.0", "910A", 1, 32768, 0, NAN, 36),
    ],
    # FlagPerf's Ascend README: npu-smi 22.0.3, Power NA, "43" then Hugepages "0          / 970"
    # (a pair, not a second temperature), "861  / 21534" MB on the Chip/Device line, no HBM.
    "npu-smi/npu-smi_22.0.3_910A_flagperf_readme.txt": [("4.0", "910A", 861, 21534, 0, NAN, 43)],
    # Health "Warning"; "30750/ 32768" (no space before the slash) on NPU 2.
    "npu-smi/npu-smi_23.0.rc1_910A_warning.txt": [
        ("0.0", "910A", 3, 32768, 0, 72.0, 39),
        ("1.0", "910A", 3, 32768, 0, 70.2, 37),
        ("2.0", "910A", 30750, 32768, 0, 70.8, 37),
    ],
    # 310P3: no HBM column, so Memory-Usage 1805 / 21527 is the device memory; Power NA.
    "npu-smi/npu-smi_22.0.4_310P3_hami_tutorial.txt": [("7.0", "310P3", 1805, 21527, 0, NAN, 28)],
    # The process table after the devices ("No running processes found") is not a device.
    "npu-smi/npu-smi_24.1.0.1_310P3_notes.txt": [("1.0", "310P3", 1894, 44215, 0, NAN, 47)],
    # 300I Duo: NPU 1 and 2 each have chips 0 and 1, one block per chip.
    "npu-smi/npu-smi_25.5.1_310P3_duo_two_chips.txt": [
        ("1.0", "310P3", 1448, 44278, 0, NAN, 49),
        ("1.1", "310P3", 1511, 43693, 0, NAN, 45),
        ("2.0", "310P3", 1384, 44278, 0, NAN, 46),
        ("2.1", "310P3", 1572, 43693, 0, NAN, 46),
    ],
    # cnmon 4.20.11, MLU370-X4: "|  0%   32C         30 W/ 150 W |     0 MiB/ 23308 MiB |";
    # vMemory-Usage (10240 MiB/1048576 MiB, virtual) is not device memory.
    "cnmon/cnmon_v4.20.11_MLU370-X4_paddle_docs.txt": [
        ("0", "MLU370-X4", 0, 23308, 0, 30, 32),
        ("1", "MLU370-X4", 0, 23308, 0, 25, 33),
        ("2", "MLU370-X4", 0, 23308, 0, 26, 30),
    ],
    # CNMON 1.16.0, MLU220-M2: "|  0%   51C     3.70 W/ 8.25 W |   967 MiB/  4096 MiB |"
    "cnmon/cnmon_1.16.0_MLU220-M2_firefly_docs.txt": [("0", "MLU220-M2", 967, 4096, 0, 3.7, 51)],
    # hy-smi with HCU / HCU% columns: only VRAM% for memory, so no memory bytes.
    "hy-smi/hy-smi_DTK-26.04_BW1000_two_cards.txt": [
        ("0", "", NAN, NAN, 0.0, 80.0, 50.0),
        ("1", "", NAN, NAN, 0.0, 89.0, 52.0),
    ],
    "hy-smi/hy-smi_manual_perf_four_cards_busy.txt": [
        ("0", "", NAN, NAN, 0.0, 145.0, 51.0),
        ("1", "", NAN, NAN, 4.5, 147.0, 49.0),
        ("2", "", NAN, NAN, 97.0, 251.0, 57.0),
        ("3", "", NAN, NAN, 81.7, 254.0, 58.0),
    ],
    # xpu_smi with Power(W) and Temp: R200 25 W 49 C, K100 22 W 51 C; L3 is not device memory.
    "xpu_smi/xpu_smi_4.0_R200_K100_power_temp_faq.txt": [
        ("0", "R200", 0, 16384, 0, 25, 49),
        ("1", "K100", 0, 8064, 0, 22, 51),
    ],
    # K200: "14 / 16 MB" L3 and "504 / 8064 MB" memory on devices 0 and 1.
    "xpu_smi/xpu_smi_4.0_K200_paddle_docs.txt": [
        ("0", "K200", 504, 8064, 0, NAN, NAN),
        ("1", "K200", 504, 8064, 0, NAN, NAN),
        ("2", "K200", 0, 8064, 0, NAN, NAN),
        ("3", "K200", 0, 8064, 0, NAN, NAN),
    ],
    # rocm-smi 6 Concise Info: Temp 45.0°C, Power (Socket) 24.0W, GPU% 0% (VRAM% is only a
    # percentage: no memory bytes); Fan 14.51% is not utilisation.
    "rocm-smi/rocm-smi_6.3.3_MI50_four_cards_issue.txt": [
        ("0", "", NAN, NAN, 0, 24, 45),
        ("1", "", NAN, NAN, 0, 19, 47),
        ("2", "", NAN, NAN, 0, 18, 43),
        ("3", "", NAN, NAN, 0, 18, 43),
    ],
    # "32.0_C" and GPU% 3% after a warning line.
    "rocm-smi/rocm-smi_RX9070XT_underscore_C_readme.txt": [("0", "", NAN, NAN, 3, 17, 32)],
    # Power N/A -> NaN.
    "rocm-smi/rocm-smi_MI250X-GCD_power_NA_pawsey_docs.txt": [("0", "", NAN, NAN, 0, NAN, 35)],
    # mx-smi 2.1.12: "97W / NA" (the cap NA, the usage read), empty GPU-State cell.
    "mx-smi/mx-smi_2.1.12_C550_power_cap_NA_k8s_docs.txt": [
        ("0", "MetaX C550", 858, 65536, 0, 97, 34)
    ],
    "mx-smi/mx-smi_2.1.12_C500_tutorial.txt": [("0", "MetaX C500", 5680, 65536, 0, 69, 36)],
}


def test_rocm_smi_units_line_behind_a_real_escape_byte() -> None:
    text = body("rocm-smi/rocm-smi_MI250X-GCD_power_NA_pawsey_docs.txt").replace("^[", "\x1b[")
    check(parse("rocm-smi", text), "rocm-smi", [("0", "", NAN, NAN, 0, NAN, 35)])


@pytest.mark.parametrize("name", sorted(CASES))
def test_recorded_layout(name: str) -> None:
    tool = name.split("/")[0]
    check(parse(tool, body(name)), tool, CASES[name])


def test_every_recorded_fixture_has_a_case() -> None:
    files = sorted(f"{p.parent.name}/{p.name}" for t in TOOLS for p in (FIXTURES / t).glob("*.txt"))
    assert files == sorted(CASES)


@pytest.mark.parametrize("missing", ["NA", "N/A", "-"])
def test_npu_smi_missing_temperature_and_aicore_read_nan(missing: str) -> None:
    # The 310P3 table with Temp(C) and AICore(%) also unreadable: NaN, never an exception.
    text = body("npu-smi/npu-smi_22.0.4_310P3_hami_tutorial.txt")
    text = text.replace("| NA           28", f"| NA           {missing:<2}")
    text = text.replace("| 0            1805", f"| {missing:<2}           1805")
    check(parse("npu-smi", text), "npu-smi", [("7.0", "310P3", 1805, 21527, NAN, NAN, NAN)])
