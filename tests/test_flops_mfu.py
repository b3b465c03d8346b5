"""Peak FLOP/s table and MFU: datasheet figures and FlagPerf's seed table as references."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from perfkit.flops import mfu, mfu_summary, peak_flops, peaks, register_peak

A100 = "NVIDIA A100-SXM4-40GB"


@pytest.fixture(autouse=True)
def _no_user_rows(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(peaks, "_USER", [])
    yield


# Datasheet figures, dense; "x/2" where the datasheet prints the sparse figure x.
@pytest.mark.parametrize(
    ("device", "dtype", "expected"),
    [
        (A100, "fp16", 312e12),
        (A100, "bf16", 312e12),
        ("NVIDIA A100 80GB PCIe", "fp16", 312e12),
        (A100, "tf32", 156e12),
        ("NVIDIA A800-SXM4-80GB", "bf16", 312e12),
        ("NVIDIA H100 80GB HBM3", "bf16", 1979e12 / 2),
        ("NVIDIA H100 80GB HBM3", "fp8", 3958e12 / 2),
        ("NVIDIA H100 PCIe", "fp16", 1513e12 / 2),
        ("NVIDIA H100 NVL", "bf16", 1671e12 / 2),
        ("NVIDIA H200", "fp16", 1979e12 / 2),
        ("NVIDIA H800", "bf16", 1979e12 / 2),
        ("NVIDIA L40S", "fp16", 362.05e12),
        ("Tesla V100-SXM2-32GB", "fp16", 125e12),
        ("Tesla V100-PCIE-16GB", "fp32", 14e12),
        ("AMD Instinct MI300X", "bf16", 1307.4e12),  # AMD prints dense figures
        ("AMD Instinct MI250X", "fp16", 383e12),
        ("Iluvatar MR-V100", "fp16", 96e12),  # FlagPerf's figures (docs/flagperf-metrics.md)
        ("MetaX C500", "fp16", 240e12),
        ("zixiao", "fp32", 30e12),
        ("hexaflake", "fp16", 120e12),
    ],
)
def test_peak_table(device: str, dtype: str, expected: float) -> None:
    assert peak_flops(device, dtype, tf32=False) == pytest.approx(expected)


def test_every_row_has_a_source() -> None:
    assert all(row.source.strip() for row in peaks.BUILTIN)


def test_fp32_uses_tf32_peak_where_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    assert peak_flops(A100, "fp32", tf32=True) == 156e12
    assert peak_flops(A100, "float32", tf32=False) == 19.5e12
    assert peak_flops("Tesla V100-SXM2-32GB", "fp32", tf32=True) == 15.7e12  # no TF32 on Volta
    monkeypatch.setattr(peaks, "torch_allows_tf32", lambda: True)
    assert peak_flops(A100, "fp32") == 156e12
    monkeypatch.setattr(peaks, "torch_allows_tf32", lambda: False)
    assert peak_flops(A100, "fp32") == 19.5e12


def test_torch_allows_tf32_reads_pytorch_setting() -> None:
    torch = pytest.importorskip("torch")
    matmul = torch.backends.cuda.matmul
    # torch 2.9+ has fp32_precision ("tf32" / "ieee"); older torch only allow_tf32.
    name, on, off = (
        ("fp32_precision", "tf32", "ieee")
        if peaks.matmul_fp32_precision(matmul) is not None
        else ("allow_tf32", True, False)
    )
    before = getattr(matmul, name)
    try:
        setattr(matmul, name, on)
        assert peaks.torch_allows_tf32()
        setattr(matmul, name, off)
        assert not peaks.torch_allows_tf32()
    finally:
        setattr(matmul, name, before)


def test_unknown_device_or_dtype() -> None:
    with pytest.warns(UserWarning, match="no peak FLOP/s known"):
        assert peak_flops("NVIDIA GH200 480GB", "bf16") is None  # not an H200
    with pytest.warns(UserWarning, match="no tf32 peak"):
        assert peak_flops("Tesla V100-SXM2-32GB", "tf32") is None
    with pytest.raises(ValueError, match="dtype"):
        peak_flops(A100, "fp12")


def test_register_peak() -> None:
    register_peak("My Card", {"fp16": 100e12}, source="vendor sheet v1")
    assert peak_flops("ACME My Card 16GB", "fp16") == 100e12
    register_peak("A100 at 1 GHz", {"fp16": 200e12}, source="measured", pattern="A100")
    assert peak_flops(A100, "fp16") == 200e12  # user rows first
    with pytest.raises(ValueError, match="flops"):
        register_peak("Bad", {"fp16": 0.0}, source="x")
    with pytest.raises(ValueError, match="source"):
        register_peak("Bad", {"fp16": 1e12}, source=" ")
    with pytest.raises(ValueError, match="dtype"):
        register_peak("Bad", {"fp7": 1e12}, source="x")


# FlagPerf's ResNet-50 inference table (seed 003): 4.12e9 multiply-adds per image.
@pytest.mark.parametrize(
    ("samples_per_s", "peak", "percent"),
    [(12698.7, 312e12, 16.8), (6091.6, 156e12, 16.1), (2721.402, 96e12, 11.7)],
)
def test_flagperf_seed_table(samples_per_s: float, peak: float, percent: float) -> None:
    value = mfu(
        macs_per_sample=4.12e9, samples_per_s=samples_per_s, peak_flops=peak, convention="flagperf"
    )
    assert round(100 * value, 1) == percent
    # perfkit's convention counts 2 FLOPs per multiply-add: twice FlagPerf's figure
    honest = mfu(macs_per_sample=4.12e9, samples_per_s=samples_per_s, peak_flops=peak)
    assert honest == pytest.approx(2 * value)
    assert mfu(flops_per_sample=8.24e9, samples_per_s=samples_per_s, peak_flops=peak) == honest


def test_mfu_summary_reproduces_seed() -> None:
    # 4.12e9 * 12698.7 / 312e12 = 0.1677
    fp16 = mfu_summary(2 * 4.12e9, 12698.7, A100, "fp16", convention="flagperf")
    assert round(100 * fp16["MFU"], 1) == 16.8
    assert fp16["peak_flops"] == 312e12 and fp16["peak_dtype"] == "fp16"
    assert fp16["mfu_convention"].startswith("flagperf")
    assert "A100" in fp16["peak_source"]
    # 4.12e9 * 6091.6 / 156e12 = 0.1609 (fp32 run as TF32)
    fp32 = mfu_summary(2 * 4.12e9, 6091.6, A100, "fp32", convention="flagperf", tf32=True)
    assert round(100 * fp32["MFU"], 1) == 16.1 and fp32["peak_dtype"] == "tf32"
    # 2 * 4.12e9 * 12698.7 / 312e12 = 0.3354
    assert round(100 * mfu_summary(2 * 4.12e9, 12698.7, A100, "fp16")["MFU"], 1) == 33.5
    given = mfu_summary(1e9, 100.0, "anything", "bf16", peak_flops=1e12)
    assert given["MFU"] == pytest.approx(0.1) and given["peak_source"] == "given by the caller"


def test_mfu_summary_unknown_device_gives_a_note() -> None:
    with pytest.warns(UserWarning, match="no peak"):
        summary = mfu_summary(1e9, 100.0, "Mystery GPU", "fp16")
    assert list(summary) == ["mfu_note"]


def test_mfu_bad_input() -> None:
    with pytest.raises(ValueError, match="peak_flops"):
        mfu(flops_per_sample=1e9, samples_per_s=1.0, peak_flops=0.0)
    with pytest.raises(ValueError, match="peak_flops"):
        mfu_summary(1e9, 1.0, A100, "fp16", peak_flops=-1.0)
    with pytest.raises(ValueError, match="dtype"):
        mfu_summary(1e9, 1.0, A100, "fp12")
    with pytest.raises(ValueError, match="exactly one"):
        mfu(flops_per_sample=1e9, macs_per_sample=1e9, samples_per_s=1.0, peak_flops=1e12)
    with pytest.raises(ValueError, match="flops_per_sample"):
        mfu(flops_per_sample=-1.0, samples_per_s=1.0, peak_flops=1e12)
    with pytest.raises(ValueError, match="samples_per_s"):
        mfu(flops_per_sample=1.0, samples_per_s=-1.0, peak_flops=1e12)
    with pytest.raises(ValueError, match="convention"):
        mfu(flops_per_sample=1.0, samples_per_s=1.0, peak_flops=1.0, convention="x")  # type: ignore[arg-type]
