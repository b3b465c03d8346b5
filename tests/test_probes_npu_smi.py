"""npu-smi layouts 20.x-25.x (tests/fixtures_probes/npu-smi, each file's first line names its
source): 910A with Memory-Usage (the control CPU's DDR) and HBM-Usage columns, 310P3 without
HBM, the 300I Duo's two chips per NPU, and NA fields, which read as NaN and never raise.

Expected values are read off the files by hand (memory in MiB, power W, temperature C, AICore %).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from perfkit.probes import parse
from tests.test_probes_parsers import NAN, Row, check

NPU_SMI = Path(__file__).resolve().parent / "fixtures_probes" / "npu-smi"


def body(name: str) -> str:
    """A fixture without its first line (its source)."""
    return (NPU_SMI / name).read_text().split("\n", 1)[1]


CASES: dict[str, list[Row]] = {
    # "| 0     910A | OK | 68.6  36 |" / "| 0 | 0000:C1:00.0 | 0  591 / 14795  0 / 32768 |":
    # HBM 0 / 32768 is the device memory, not the 591 / 14795 DDR pair.
    "npu-smi_20.2.2_910A_haicgu_docs.txt": [
        ("0.0", "910A", 0, 32768, 0, 68.6, 36),
        ("1.0", "910A", 0, 32768, 0, 63.7, 31),
    ],
    # Hugepages-Usage "15 / 15" on the NPU line is not memory; HBM 1 / 32768.
    "npu-smi_21.0.4_910A_paddle_docs.txt": [
        ("0.0", "910A", 1, 32768, 0, 70.9, 42),
        ("1.0", "910A", 1, 32768, 0, 67.2, 36),
    ],
    # Power NA -> NaN; everything else as in the 21.0.4 file.
    "npu-smi_910A_power_NA_constructed.txt": [
        ("0.0", "910A", 1, 32768, 0, 70.9, 42),
        ("1.0", "910A", 1, 32768, 0, NAN, 36),
    ],
    # Health "Warning"; "30750/ 32768" (no space before the slash) on NPU 2.
    "npu-smi_23.0.rc1_910A_warning.txt": [
        ("0.0", "910A", 3, 32768, 0, 72.0, 39),
        ("1.0", "910A", 3, 32768, 0, 70.2, 37),
        ("2.0", "910A", 30750, 32768, 0, 70.8, 37),
    ],
    # 310P3: no HBM column, so Memory-Usage 1805 / 21527 is the device memory; Power NA.
    "npu-smi_22.0.4_310P3_hami_tutorial.txt": [("7.0", "310P3", 1805, 21527, 0, NAN, 28)],
    # The process table after the devices ("No running processes found") is not a device.
    "npu-smi_24.1.0.1_310P3_notes.txt": [("1.0", "310P3", 1894, 44215, 0, NAN, 47)],
    # 300I Duo: NPU 1 and 2 each have chips 0 and 1, one block per chip.
    "npu-smi_25.5.1_310P3_duo_two_chips.txt": [
        ("1.0", "310P3", 1448, 44278, 0, NAN, 49),
        ("1.1", "310P3", 1511, 43693, 0, NAN, 45),
        ("2.0", "310P3", 1384, 44278, 0, NAN, 46),
        ("2.1", "310P3", 1572, 43693, 0, NAN, 46),
    ],
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_npu_smi_layout(name: str) -> None:
    check(parse("npu-smi", body(name)), "npu-smi", CASES[name])


def test_every_npu_smi_fixture_has_a_case() -> None:
    assert sorted(p.name for p in NPU_SMI.glob("*.txt")) == sorted(CASES)


@pytest.mark.parametrize("missing", ["NA", "N/A", "-"])
def test_npu_smi_missing_temperature_and_aicore_read_nan(missing: str) -> None:
    # The 310P3 table with Temp(C) and AICore(%) also unreadable: NaN, never an exception.
    text = body("npu-smi_22.0.4_310P3_hami_tutorial.txt")
    text = text.replace("| NA           28", f"| NA           {missing:<2}")
    text = text.replace("| 0            1805", f"| {missing:<2}           1805")
    check(parse("npu-smi", text), "npu-smi", [("7.0", "310P3", 1805, 21527, NAN, NAN, NAN)])
