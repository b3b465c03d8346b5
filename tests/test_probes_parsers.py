"""perfkit.probes.parse against every real tool output in tests/fixtures_probes/smi-samples
(kept in the repository, so a clone tests them on its own).

Expected values are read off the sample files by hand; each table row says what was read.
Memory is given in MiB (the tools' unit; "MB" in these tools is binary), power in W,
temperature in C, utilisation in %. NaN marks a value the output does not show.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from perfkit.probes import DeviceSample, ProbeParseError, parse
from tests.conftest import SMI_SAMPLES as SAMPLES

FIXTURES = Path(__file__).resolve().parent / "fixtures_probes"
MIB = 2.0**20
NAN = math.nan

Row = tuple[str, str, float, float, float, float, float]  # device, name, MiB used/total, %, W, C


def sample_body(name: str) -> str:
    """A sample file without its first line (which names the file's source)."""
    return (SAMPLES / name).read_text().split("\n", 1)[1]


def nvidia_sections(name: str = "nvidia-smi_H100_captures.txt") -> dict[str, str]:
    """An nvidia-smi capture file cut into its ``# <label>`` sections (text under the banner)."""
    text = (SAMPLES / name).read_text()
    parts = re.split(r"^#{20,}\n# (.*?)\n(?:#.*\n)*?#{20,}\n", text, flags=re.M)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts), 2)}


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b)


def check(samples: list[DeviceSample], tool: str, expected: list[Row]) -> None:
    assert len(samples) == len(expected)
    for s, (device, name, used, total, util, power, temp) in zip(samples, expected, strict=True):
        assert s.probe == tool
        assert s.device == f"{tool}:{device}"
        assert s.device_name == name
        got = (
            s.memory_used_bytes / MIB,
            s.memory_total_bytes / MIB,
            s.utilization_pct,
            s.power_w,
            s.temperature_c,
        )
        want = (used, total, util, power, temp)
        assert all(same(g, w) for g, w in zip(got, want, strict=True)), (device, got, want)


def test_cnmon_mlu370() -> None:
    # "| 0     /   MLU370-X8    v1.1.6 | ... | 0%  N/A |"
    # "|  0%   32C        106 W/ 250 W |     0 MiB/ 23374 MiB | ..."
    # "| 1     /   MLU370-X8    v1.1.6 | ... | 0%  N/A |"
    # "|  0%   39C        106 W/ 250 W |     0 MiB/ 23374 MiB | ..."
    check(
        parse("cnmon", sample_body("cambricon_cnmon_v5.10.13_paddle_docs.txt")),
        "cnmon",
        [
            ("0", "MLU370-X8", 0, 23374, 0, 106, 32),
            ("1", "MLU370-X8", 0, 23374, 0, 106, 39),
        ],
    )


def test_npu_smi_910b_reads_hbm_not_ddr() -> None:
    # NPU 0 910B2C: Power 89.9, Temp 53, AICore 0, Memory-Usage 0 / 0 (DDR), HBM 3317 / 65536
    # NPU 1 910B2C: Power 93.8, Temp 53, AICore 0, Memory-Usage 0 / 0 (DDR), HBM 3316 / 65536
    # Both are chip 0 of their NPU.
    check(
        parse("npu-smi", sample_body("ascend_npu-smi_info_23.0.3_910B_paddle_docs.txt")),
        "npu-smi",
        [
            ("0.0", "910B2C", 3317, 65536, 0, 89.9, 53),
            ("1.0", "910B2C", 3316, 65536, 0, 93.8, 53),
        ],
    )


def test_rocm_smi_hygon_dcu_table() -> None:
    # DCU Temp AvgPwr ... VRAM% DCU%: only a VRAM percentage, so no memory bytes.
    # 0 30.0c 38.0W 0%;  1 30.0c 41.0W 0%;  2 29.0c 38.0W 0%;  3 29.0c 39.0W 0%
    check(
        parse("rocm-smi", sample_body("hygon_dcu_rocm-smi_paddle_docs.txt")),
        "rocm-smi",
        [
            ("0", "", NAN, NAN, 0, 38.0, 30.0),
            ("1", "", NAN, NAN, 0, 41.0, 30.0),
            ("2", "", NAN, NAN, 0, 38.0, 29.0),
            ("3", "", NAN, NAN, 0, 39.0, 29.0),
        ],
    )


def test_ixsmi_bi_v150_with_missing_power() -> None:
    # 16 cards, each "64MiB / 32768MiB", GPU-Util 0%. Even cards print "N/A / N/A" power;
    # odd cards: 1 103W 34C, 3 106W 34C, 5 105W 35C, 7 106W 34C, 9 107W 35C, 11 103W 33C,
    # 13 104W 35C, 15 107W 36C. Temperatures of even cards: 0 35C, 2 35C, 4 35C, 6 34C,
    # 8 34C, 10 34C, 12 34C, 14 35C.
    temps = [35, 34, 35, 34, 35, 35, 34, 34, 34, 35, 34, 33, 34, 35, 35, 36]
    power = {1: 103, 3: 106, 5: 105, 7: 106, 9: 107, 11: 103, 13: 104, 15: 107}
    expected: list[Row] = [
        (str(i), "Iluvatar BI-V150", 64, 32768, 0, power.get(i, NAN), temps[i]) for i in range(16)
    ]
    check(parse("ixsmi", sample_body("iluvatar_ixsmi_BI-V150_ernie_docs.txt")), "ixsmi", expected)


@pytest.mark.parametrize("tool", ["xpu_smi", "xpu-smi"])
def test_xpu_smi_r300(tool: str) -> None:
    # DEVICES table: DevID 0 / 1, Model R300, UseRate "0 %", Memory "0 / 32768 MB";
    # no temperature or power column in this layout. L3 "0 / 63 MB" is not device memory.
    body = sample_body("kunlunxin_xpu_smi_R300_paddle_docs.txt")
    check(
        parse(tool, body),
        tool,
        [("0", "R300", 0, 32768, 0, NAN, NAN), ("1", "R300", 0, 32768, 0, NAN, NAN)],
    )


def test_mx_smi_c550_unit_written_once() -> None:
    # Memory-Usage "858/65536 MiB" on all 8; GPU-Util 0%.
    # Temp / power: 0 29C 53W, 1 29C 53W, 2 30C 54W, 3 29C 54W, 4 30C 53W, 5 32C 55W,
    # 6 32C 56W, 7 31C 56W.
    readings = [(29, 53), (29, 53), (30, 54), (29, 54), (30, 53), (32, 55), (32, 56), (31, 56)]
    expected: list[Row] = [
        (str(i), "MetaX C550", 858, 65536, 0, w, c) for i, (c, w) in enumerate(readings)
    ]
    check(parse("mx-smi", sample_body("metax_mx-smi_C550_ernie_docs.txt")), "mx-smi", expected)


def test_mthreads_gmi_s5000_used_paren_total() -> None:
    # "0MiB(81920MiB)", %GPU 0%, no power column; Temp: 48 48 49 48 48 50 48 49 (C).
    temps = [48, 48, 49, 48, 48, 50, 48, 49]
    expected: list[Row] = [(str(i), "MTT S5000", 0, 81920, 0, NAN, t) for i, t in enumerate(temps)]
    check(
        parse("mthreads-gmi", sample_body("mthreads_gmi_S5000_doc.txt")), "mthreads-gmi", expected
    )


def test_amd_smi_monitor_three_layouts() -> None:
    text = (SAMPLES / "amd_amd-smi_monitor_amdsmi_changelog.txt").read_text()
    blocks = re.split(r"^## block \d+\n\$ .*\n", text, flags=re.M)[1:]
    assert len(blocks) == 3
    # block 1 (-ptumv): GPU 0 "171 W  32 °C ... 0 % ... 283 MB  196300 MB"; GPU 4 reads 284 MB.
    watts = [171, 175, 177, 172, 178, 176, 176, 175]
    temps = [32, 33, 31, 33, 32, 33, 32, 34]
    expected: list[Row] = [
        (str(i), "", 284 if i == 4 else 283, 196300, 0, watts[i], temps[i]) for i in range(8)
    ]
    check(parse("amd-smi", blocks[0]), "amd-smi", expected)
    # block 2 (-p -t -v): 32 GPUs, no GFX_UTIL column; first "0  248 W  55 °C ... 283 MB
    # 196300 MB", last "31  227 W  51 °C".
    second = parse("amd-smi", blocks[1])
    assert len(second) == 32
    check(second[:1], "amd-smi", [("0", "", 283, 196300, NAN, 248, 55)])
    check(second[-1:], "amd-smi", [("31", "", 283, 196300, NAN, 227, 51)])
    # block 3 (-q, Radeon): "0  199 W  103 °C ... 99 % ... 1235 MB  16335 MB"; the process
    # table after the blank line is not a device.
    check(parse("amd-smi", blocks[2]), "amd-smi", [("0", "", 1235, 16335, 99, 199, 103)])


H100 = "NVIDIA H100 80GB HBM3"


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        # "| N/A   41C    P0    69W /  700W |       0MiB /  81559MiB |      0%      Default |"
        ("idle :: nvidia-smi (default table)", ("0", H100, 0, 81559, 0, 69, 41)),
        # "| N/A   59C    P0   629W /  700W |   19818MiB /  81559MiB |    100%      Default |"
        ("load :: nvidia-smi (default table)", ("0", H100, 19818, 81559, 100, 629, 59)),
        # FB Memory Usage Total 81559 MiB / Used 0 MiB, Utilization GPU 0 %, GPU Current Temp
        # 41 C, GPU Power Readings: Average Power Draw 69.85 W (no plain "Power Draw" line)
        ("idle :: query (-q)", ("0", H100, 0, 81559, 0, 69.85, 41)),
        # load -q: Used 19818 MiB, GPU 100 %, 59 C, Average Power Draw 629.45 W
        ("load :: query (-q)", ("0", H100, 19818, 81559, 100, 629.45, 59)),
        # the 212-column csv: memory.total 81559 MiB, memory.used 0 MiB, utilization.gpu 0 %,
        # temperature.gpu 41, power.draw 69.85 W
        ("idle :: query-gpu (csv, what the exporter parses)", ("0", H100, 0, 81559, 0, 69.85, 41)),
        # load: memory.used 19818 MiB, 100 %, 59, power.draw 631.95 W
        (
            "load :: query-gpu (csv, what the exporter parses)",
            ("0", H100, 19818, 81559, 100, 631.95, 59),
        ),
    ],
)
def test_nvidia_smi_layouts(section: str, expected: Row) -> None:
    check(parse("nvidia-smi", nvidia_sections()[section]), "nvidia-smi", [expected])


def test_nvidia_smi_dmon_rows() -> None:
    # load dmon: pwr 631 634 633 634 636 W; gtemp 63 63 64 64 65 C; sm 100 %; no fb column.
    samples = parse(
        "nvidia-smi", nvidia_sections()["load :: dmon (per-device monitor, incl. PCIe rx/tx)"]
    )
    expected: list[Row] = [
        ("0", "", NAN, NAN, 100, w, c)
        for w, c in [(631, 63), (634, 63), (633, 64), (634, 64), (636, 65)]
    ]
    check(samples, "nvidia-smi", expected)


def test_nvidia_smi_query_csv_projection() -> None:
    # idle: "0, NVIDIA H100 80GB HBM3, 81559 MiB, 0 MiB, 81081 MiB, 0 %, 41, 69.85 W, 700.00 W"
    # load: "0, NVIDIA H100 80GB HBM3, 81559 MiB, 19818 MiB, 61263 MiB, 100 %, 59, 631.95 W, ..."
    text = (SAMPLES / "nvidia_smi_query_gpu_csv_H100_projected.txt").read_text()
    idle, load = re.split(r"^## \w+\n", text, flags=re.M)[1:]
    check(parse("nvidia-smi", idle), "nvidia-smi", [("0", H100, 0, 81559, 0, 69.85, 41)])
    check(parse("nvidia-smi", load), "nvidia-smi", [("0", H100, 19818, 81559, 100, 631.95, 59)])


def test_nvidia_smi_csv_without_units() -> None:
    text = "index, memory.used [MiB], memory.total [MiB], power.draw [W]\n1, 512, 1024, [N/A]\n"
    (s,) = parse("nvidia-smi", text)
    assert (s.device, s.memory_used_bytes, s.memory_total_bytes) == (
        "nvidia-smi:1",
        512 * MIB,
        1024 * MIB,
    )
    assert math.isnan(s.power_w) and math.isnan(s.temperature_c)


# rocm-smi --showmeminfo vram: no real capture exists (see the notes file); these fixtures are
# built from amd_rocm-smi_showmeminfo_vram_NOTES.md: JSON values are strings, keys vary in case,
# and the text form's "Used" line also contains "Total".


def test_rocm_smi_json_from_notes() -> None:
    # card0: 17163091968 B total, 14876672 B used, 3 %, 35.0 C, 12.0 W; "system" is not a card.
    (s,) = parse("rocm-smi", (FIXTURES / "rocm-smi_showmeminfo_vram.json").read_text())
    assert s.device == "rocm-smi:0" and s.device_name == "Radeon RX 7900 XT"
    assert (s.memory_total_bytes, s.memory_used_bytes) == (17163091968, 14876672)
    assert (s.utilization_pct, s.temperature_c, s.power_w) == (3, 35.0, 12.0)


def test_rocm_smi_text_from_notes() -> None:
    # GPU[0] (two-TAB separators): total 17163091968, used 14876672;
    # GPU[1] (spaces): total 34342961152, used 1073741824.
    samples = parse("rocm-smi", (FIXTURES / "rocm-smi_showmeminfo_vram.txt").read_text())
    assert [(s.device, s.memory_used_bytes, s.memory_total_bytes) for s in samples] == [
        ("rocm-smi:0", 14876672, 17163091968),
        ("rocm-smi:1", 1073741824, 34342961152),
    ]


# --- layouts a parser does not know ------------------------------------------------------------


def test_pmon_is_not_a_device_layout() -> None:
    text = nvidia_sections()["load :: pmon (per-process monitor)"]
    with pytest.raises(ProbeParseError) as err:
        parse("nvidia-smi", text)
    assert err.value.tool == "nvidia-smi" and err.value.line_number == 1
    assert "# gpu" in err.value.line and "nvidia-smi" in str(err.value)


def test_unknown_layout_names_tool_and_line() -> None:
    with pytest.raises(ProbeParseError) as err:
        parse("cnmon", "\nCNMON: no MLU device found\n")
    assert (err.value.tool, err.value.line_number) == ("cnmon", 2)
    assert "no MLU device found" in str(err.value)


def test_bad_value_names_its_line() -> None:
    text = "index, memory.used [MiB]\n0, 12 MiB\n1, lots\n"
    with pytest.raises(ProbeParseError) as err:
        parse("nvidia-smi", text)
    assert err.value.line_number == 3 and err.value.line == "1, lots"
    assert "lots" in err.value.reason


def test_unknown_unit_is_an_error_not_a_guess() -> None:
    text = "GPU  Temp  VRAM_USED  VRAM_TOTAL\n0    40 F   1 MB       2 MB\n"
    with pytest.raises(ProbeParseError, match="unit 'f'"):
        parse("amd-smi", text)


def test_rows_that_do_not_match_the_header() -> None:
    text = "+---+\n| GPU | Memory-Usage |\n|===|\n| 0 |\n+---+\n"
    with pytest.raises(ProbeParseError, match="do not match") as err:
        parse("mx-smi", text)
    assert err.value.line_number == 4


def test_empty_output() -> None:
    with pytest.raises(ProbeParseError, match="empty output"):
        parse("npu-smi", "  \n")


def test_unknown_tool_lists_supported() -> None:
    with pytest.raises(ValueError, match="supported tools: nvidia-smi, ixsmi, cnmon"):
        parse("xyz-smi", "")
