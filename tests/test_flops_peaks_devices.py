"""Peak rows of the seed and added devices, looked up by the names their backends and tools
report; each expected figure is the one its source prints (sparse figures halved, noted)."""

from __future__ import annotations

import warnings

import pytest

from perfkit.flops import peaks
from perfkit.flops.peaks import peak_flops

T = 1e12


@pytest.mark.parametrize(
    ("device", "dtype", "expected"),
    [
        ("NVIDIA B200", "bf16", 4.5e15 / 2),  # HGX B200: 36 PFLOPS sparse for 8 GPUs
        ("NVIDIA B200", "fp8", 9e15 / 2),  # 72 PFLOPS sparse for 8 GPUs
        ("NVIDIA H20", "bf16", 148 * T),
        ("NVIDIA L4", "fp16", 242 * T / 2),  # datasheet 242 TFLOPS with sparsity
        ("NVIDIA L4", "fp32", 30.3 * T),
        ("Tesla T4", "fp16", 65 * T),
        ("NVIDIA A10", "bf16", 250 * T / 2),
        ("NVIDIA A30", "tf32", 82 * T),  # dense figure as printed (165 with sparsity)
        ("NVIDIA GeForce RTX 4090", "fp16", 330.4 * T / 2),  # 330.4 sparse, FP32 accumulate
        ("Ascend910A", "fp16", 256 * T),  # torch_npu's name
        ("910A", "int8", 512 * T),  # npu-smi's name
        ("MLU370-X8", "fp16", 96 * T),
        ("MLU370-X8", "fp32", 32 * T),
        ("R200", "fp16", 128 * T),
        ("R300", "fp16", 1e15 / 8),  # 1 PetaOPS FP16 for an R480-X8 of 8 R300
        ("MTT S4000", "bf16", 100 * T),
        ("MTT S4000", "tf32", 50 * T),
        ("Iluvatar BI-V100", "fp16", 147 * T),
        ("Iluvatar MR-V100", "fp16", 96 * T),
        ("MetaX C500", "fp16", 240 * T),
        ("MXC500", "fp16", 240 * T),  # the name some MetaX stacks report
    ],
)
def test_row_gives_the_source_figure(device: str, dtype: str, expected: float) -> None:
    assert peak_flops(device, dtype, tf32=False) == pytest.approx(expected, rel=2e-3)


@pytest.mark.parametrize(
    "device",
    [
        "Ascend310P3",
        "MLU370-X4",
        "MLU370-S4",
        "MLU590",
        "P800",
        "MTT S5000",
        "K100_AI",
        "Z100L",
        "MetaX C550",
        "MXC550",
    ],
)
def test_device_without_public_figure_warns_and_gives_none(device: str) -> None:
    row = peaks.find_row(device)
    assert row is not None and not row.flops
    assert "no public" in row.source
    with pytest.warns(UserWarning, match="no public"):
        assert peak_flops(device, "fp16") is None


# FlagPerf's own figures (github.com/FlagOpen/FlagPerf, commit 1b5a030), each the theoryflops
# of the config file the row names, bf16 runs: marked as FlagPerf's, not the vendor's.
@pytest.mark.parametrize(
    ("device", "dtype", "expected", "file"),
    [
        ("Iluvatar BI-V150", "bf16", 192 * T, "config_BI-V150x1x16.py"),  # 192000000000000.0
        ("Iluvatar TG-V200", "bf16", 340 * T, "config_TG-V200x1x16.py"),  # 340000000000000.0
        ("R300", "bf16", 256 * T, "config_R300x10x8.py"),  # 256000000000000.0
        ("Ascend910B2", "bf16", 304.277 * T, "config_Atlas800TA2x1x8.py"),  # 304277000000000.0
        ("Ascend910B3", "bf16", 304.277 * T, "config_Atlas800TA2x1x8.py"),
        ("910B2C", "bf16", 304.277 * T, "config_Atlas800TA2x1x8.py"),
        ("Iluvatar MR-V100", "fp32", 24 * T, "iluvatar_analysis.py"),  # eval("24e12")
        ("MetaX C500", "fp32", 120 * T, "metax_analysis.py"),  # eval("120e12")
    ],
)
def test_flagperf_rows_give_flagperfs_figure(
    device: str, dtype: str, expected: float, file: str
) -> None:
    found = peaks.lookup(device, dtype, tf32=False)
    assert not isinstance(found, str)
    name, row = found
    assert row.flops[name] == pytest.approx(expected, rel=1e-9)
    assert row.kind == "flagperf-config" and file in row.source and "not the vendor's" in row.source


def test_a_flagperf_row_fills_only_what_the_vendor_row_lacks() -> None:
    # R300: the vendor README's 125 TFLOPS fp16 stays; bf16 comes from FlagPerf's theoryflops
    fp16 = peaks.lookup("R300", "fp16")
    bf16 = peaks.lookup("R300", "bf16")
    assert not isinstance(fp16, str) and not isinstance(bf16, str)
    assert fp16[1].kind == "datasheet" and bf16[1].kind == "flagperf-config"
    # the BI-V150's per-card vs per-chip caveat is part of its source
    bi = peaks.lookup("Iluvatar BI-V150", "bf16")
    assert not isinstance(bi, str) and "2 chips" in bi[1].source
    # no FlagPerf figure for fp16 on a BI-V150: still a warning and None, never a guess
    with pytest.warns(UserWarning, match="no fp16 peak"):
        assert peak_flops("Iluvatar BI-V150", "fp16") is None


@pytest.mark.parametrize(
    ("device", "not_this_row"),
    [
        ("Iluvatar BI-V150", "Iluvatar MR-V100 (FlagPerf: iluvatar)"),
        ("MetaX C550", "MetaX C500 (FlagPerf: metax)"),
        ("Ascend910B2", "Huawei Ascend 910A"),
        ("NVIDIA A100-SXM4-80GB", "NVIDIA A10"),
        ("NVIDIA H200", "NVIDIA H20"),
        ("NVIDIA L40S", "NVIDIA L4"),
    ],
)
def test_pattern_matches_the_chip_not_the_vendor(device: str, not_this_row: str) -> None:
    row = peaks.find_row(device)
    assert row is not None and row.name != not_this_row


@pytest.mark.parametrize("device", ["iluvatar", "metax", "NVIDIA GeForce RTX 4090 D"])
def test_vendor_name_or_other_bin_alone_has_no_row(device: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert peaks.find_row(device) is None


def test_fp32_precision_missing_on_old_torch() -> None:
    class OldMatmul:  # torch < 2.9: unknown names raise AssertionError, as torch 2.1 does
        def __getattr__(self, name: str) -> object:
            raise AssertionError("Unknown attribute " + name)

    assert peaks.matmul_fp32_precision(OldMatmul()) is None
    assert peaks.matmul_fp32_precision(type("New", (), {"fp32_precision": "tf32"})()) == "tf32"
