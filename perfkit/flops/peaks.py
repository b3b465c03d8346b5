"""Dense peak FLOP/s per device and dtype, every row with its source.

Figures are dense (no structured sparsity; datasheets that print sparse figures give twice
these). Device names are matched as ``torch.cuda.get_device_name``, NVML, the vendor backends
(``torch.npu`` / ``torch.mlu`` / ``torch.musa`` ``get_device_name``) and the vendor tools report
them, by a case-insensitive regular expression per row that names a chip, never a vendor; the
first matching row wins, rows registered with ``register_peak`` before the built-in ones. An
unknown device or dtype, or a device without a public figure (a row without figures), gives a
warning and None, never a guess. Rows marked ``flagperf-config`` hold FlagPerf's own figures
(the ``theoryflops`` its configs divide by), not the vendor's; where neither exists, a run can
measure one (:func:`perfkit.flops.measure_peak`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from perfkit import checks
from perfkit._messages import warn

DTYPES = ("fp64", "fp32", "tf32", "fp16", "bf16", "fp8", "int8")

_ALIASES = {
    "float64": "fp64",
    "double": "fp64",
    "float32": "fp32",
    "float": "fp32",
    "tfloat32": "tf32",
    "float16": "fp16",
    "half": "fp16",
    "bfloat16": "bf16",
    "float8_e4m3fn": "fp8",
    "float8_e5m2": "fp8",
}


def normalize_dtype(dtype: Any) -> str:
    """``"fp16"``, ``"float16"``, ``"half"``, ``torch.float16`` -> ``"fp16"``; ValueError else."""
    name = str(dtype).lower().removeprefix("torch.")
    name = _ALIASES.get(name, name)
    if name not in DTYPES:
        raise checks.wrong_value("dtype", f"one of {DTYPES} (or a torch dtype / alias)", dtype)
    return name


#: Where a peak comes from (the summary's ``mfu_peak_source``): a vendor's figure, a figure
#: FlagPerf's own configs or scripts divide by, a measured matmul, or the caller's number.
PEAK_SOURCES = ("datasheet", "flagperf-config", "measured", "user")


@dataclass(frozen=True)
class PeakRow:
    """Dense peak FLOP/s (or OP/s for int8) of one device, per dtype, with its source;
    ``kind`` is "datasheet" (the vendor's) or "flagperf-config" (FlagPerf's, not the
    vendor's)."""

    name: str
    pattern: str
    flops: Mapping[str, float]
    source: str
    kind: str = "datasheet"

    def matches(self, device_name: str) -> bool:
        return re.search(self.pattern, device_name, re.IGNORECASE) is not None


def _row(name: str, pattern: str, source: str, **flops: float) -> PeakRow:
    return PeakRow(name, pattern, {k: v * 1e12 for k, v in flops.items()}, source)


def _flagperf(name: str, pattern: str, source: str, **flops: float) -> PeakRow:
    """A row of FlagPerf's own figures (``theoryflops`` / analysis scripts), not the vendor's."""
    figures = {k: v * 1e12 for k, v in flops.items()}
    return PeakRow(name, pattern, figures, source, "flagperf-config")


_A100 = "NVIDIA A100 Tensor Core GPU datasheet (2021), dense column: same for SXM4/PCIe, 40/80 GB"
_H100 = "NVIDIA H100 Tensor Core GPU datasheet (2023); the Tensor Core figures printed 'with "
_H100 += "sparsity' halved to dense"
_MI300 = "AMD Instinct MI300X data sheet (2023): matrix figures, dense (without sparsity)"
# FlagPerf (github.com/FlagOpen/FlagPerf, commit 1b5a030, 2025-11): its LLM training cases divide
# per-chip throughput by the `theoryflops` of the vendor's config (bf16 runs), its inference
# cases by the fp32 / fp16 pair its per-vendor analysis script returns.
_FP = "FlagPerf's own figure, not the vendor's: "
_FP_INFER = _FP + "the (fp32, fp16) peaks inference/docker_images/{}/{}_analysis.py returns"
_BI_V150 = (
    _FP + "theoryflops = 192e12 in training/iluvatar/llama2_7b-deepspeed/config/"
    "config_BI-V150x1x16.py (and the chatglm3_6b, llama3_8B, llava1.5_13b, mixtral_8x7B BI-V150 "
    "configs; baichuan2_13b's config_BI-V150x2x8.py says 198e12), bf16 runs. Per card or per "
    "chip is not stated: FlagPerf runs 16 processes on an 8-card machine (one per chip) and "
    "divides each one's throughput by it, while its computation-BF16 case doubles the per-chip "
    "figure because 'BI-V150 has 2 chips' and reports 196.77 TFLOPS per card - so 192e12 may be "
    "a card's, and the MFU of one chip twice FlagPerf's"
)
_NONE = "no public dense figure from the vendor found (datasheet, product page or FlagPerf config)"

# Order matters: more specific patterns first (H100 NVL / PCIe before H100 SXM).
BUILTIN: tuple[PeakRow, ...] = (
    _row("NVIDIA V100S PCIe", r"V100S", "NVIDIA V100 datasheet (2020), V100S PCIe column",
         fp64=8.2, fp32=16.4, fp16=130),
    _row("NVIDIA V100 PCIe", r"V100.*PCIE", "NVIDIA V100 datasheet (2020), V100 PCIe column",
         fp64=7, fp32=14, fp16=112),
    _row("NVIDIA V100 SXM2", r"V100.*SXM2", "NVIDIA V100 datasheet (2020), V100 SXM2 column",
         fp64=7.8, fp32=15.7, fp16=125),
    _row("NVIDIA A100", r"\bA100\b", _A100,
         fp64=19.5, fp32=19.5, tf32=156, fp16=312, bf16=312, int8=624),
    _row("NVIDIA A800", r"\bA800\b", "NVIDIA A800 datasheet (2022), dense column (as A100)",
         fp64=19.5, fp32=19.5, tf32=156, fp16=312, bf16=312, int8=624),
    _row("NVIDIA H100 NVL", r"\bH100\b.*\bNVL\b", _H100 + ", H100 NVL column (one GPU)",
         fp64=60, fp32=60, tf32=417.5, fp16=835.5, bf16=835.5, fp8=1670.5, int8=1670.5),
    _row("NVIDIA H100 PCIe", r"\bH100\b.*\bPCIE\b", _H100 + ", H100 PCIe column",
         fp64=51, fp32=51, tf32=378, fp16=756.5, bf16=756.5, fp8=1513, int8=1513),
    _row("NVIDIA H100 SXM", r"\bH100\b.*(HBM3|SXM)", _H100 + ", H100 SXM column",
         fp64=67, fp32=67, tf32=494.5, fp16=989.5, bf16=989.5, fp8=1979, int8=1979),
    _row("NVIDIA H200 NVL", r"\bH200\b.*\bNVL\b", "NVIDIA H200 datasheet (2024), H200 NVL "
         "column, sparse figures halved", fp64=60, fp32=60, tf32=417.5, fp16=835.5,
         bf16=835.5, fp8=1670.5, int8=1670.5),
    _row("NVIDIA H200 SXM", r"\bH200\b", "NVIDIA H200 datasheet (2024), H200 SXM column, "
         "sparse figures halved", fp64=67, fp32=67, tf32=494.5, fp16=989.5, bf16=989.5,
         fp8=1979, int8=1979),
    _row("NVIDIA H800 PCIe", r"\bH800\b.*\bPCIE\b", "NVIDIA H800 PCIe datasheet (2023), "
         "sparse figures halved", fp64=0.8, fp32=51, tf32=378, fp16=756.5, bf16=756.5,
         fp8=1513, int8=1513),
    _row("NVIDIA H800 SXM", r"\bH800\b", "NVIDIA H800 SXM5 datasheet (2023), sparse figures "
         "halved", fp64=1, fp32=67, tf32=494.5, fp16=989.5, bf16=989.5, fp8=1979, int8=1979),
    _row("NVIDIA L40S", r"\bL40S\b", "NVIDIA L40S datasheet (2023), dense figures",
         fp32=91.6, tf32=183, fp16=362.05, bf16=362.05, fp8=733, int8=733),
    _row("NVIDIA B200", r"\bB200\b", "NVIDIA HGX B200 specifications (8-GPU column, with "
         "sparsity where marked), divided by 8 GPUs and sparse figures halved", fp64=37,
         tf32=1125, fp16=2250, bf16=2250, fp8=4500, int8=4500),
    _row("NVIDIA H20", r"\bH20\b", "NVIDIA H20 product brief (2023) as published in press "
         "reports; NVIDIA has no public datasheet for it", fp32=44, tf32=74, fp16=148,
         bf16=148, fp8=296, int8=296),
    _row("NVIDIA L4", r"\bL4\b", "NVIDIA L4 datasheet (2023), sparse figures halved",
         fp32=30.3, tf32=60, fp16=121, bf16=121, fp8=242.5, int8=242.5),
    _row("NVIDIA T4", r"\bT4\b", "NVIDIA T4 datasheet (2019): FP16/FP32 mixed precision, "
         "no sparsity on Turing", fp32=8.1, fp16=65, int8=130),
    _row("NVIDIA A10", r"\bA10\b", "NVIDIA A10 datasheet (2021), sparse figures halved",
         fp32=31.2, tf32=62.5, fp16=125, bf16=125, int8=250),
    _row("NVIDIA A30", r"\bA30\b", "NVIDIA A30 datasheet (2021), sparse figures halved; "
         "fp64 is the FP64 Tensor Core figure", fp64=10.3, fp32=10.3, tf32=82, fp16=165,
         bf16=165, int8=330),
    _row("NVIDIA GeForce RTX 4090", r"RTX 4090(?!\s*D\b)", "NVIDIA Ada Lovelace architecture "
         "whitepaper (2022), appendix, RTX 4090 column: dense, FP16/BF16/FP8 Tensor with FP32 "
         "accumulate (what PyTorch uses)", fp32=82.6, tf32=82.6, fp16=165.2, bf16=165.2,
         fp8=330.3, int8=660.6),
    _row("AMD Instinct MI300X", r"MI300X", _MI300,
         fp64=163.4, fp32=163.4, tf32=653.7, fp16=1307.4, bf16=1307.4, fp8=2614.9,
         int8=2614.9),
    _row("AMD Instinct MI250X", r"MI250X(?!/MI250)", "AMD Instinct MI250X data sheet (2021): "
         "matrix figures", fp64=95.7, fp32=95.7, fp16=383, bf16=383, int8=383),
    # Chips of other vendors, by the names their torch backends and tools print (torch_npu's
    # "Ascend910A", torch_mlu's "MLU370-X8", xpu_smi's "R300", torch_musa's "MTT S4000", ...).
    # A row without figures is a device with no public dense figure: it warns and gives None.
    _row("Huawei Ascend 910A", r"910A?(?![0-9a-z])", "Huawei Ascend 910 "
         "launch (2019-08, Hot Chips 31): 256 TFLOPS FP16, 512 TOPS INT8", fp16=256, int8=512),
    _flagperf("Huawei Ascend 910B family in an Atlas 800T A2 (FlagPerf)", r"910B",
              _FP + "theoryflops = 304.277e12 in training/ascend/llava1.5_7b-deepspeed-torch/"
              "config/config_Atlas800TA2x1x8.py, a bf16 run on an Atlas 800T A2; the 910B "
              "variant (910B1-910B4 differ) is not named, and FlagPerf's computation-FP16 case "
              "quotes 313 TFLOPS for the same machine; the vendor publishes no dense figure",
              bf16=304.277),
    _row("Huawei Ascend 310P", r"310P", _NONE),
    _row("Cambricon MLU370-X8", r"MLU370-X8", "Cambricon MLU370-X8 launch (2022-03): 32 TFLOPS "
         "FP32, 96 FP16, 96 BF16, 256 TOPS INT8", fp32=32, fp16=96, bf16=96, int8=256),
    _row("Cambricon MLU370-X4", r"MLU370-X4", _NONE),
    _row("Cambricon MLU370-S4", r"MLU370-S4", _NONE),
    _row("Cambricon MLU590", r"MLU590", _NONE),
    _row("Kunlunxin R200", r"\bR200\b", "Kunlunxin R200 product page: 128 TFLOPS FP16, "
         "32 FP32, 256 TOPS INT8", fp32=32, fp16=128, int8=256),
    _row("Kunlunxin R300", r"\bR300\b", "FlagPerf's Kunlunxin vendor README: an R480-X8 of 8 "
         "R300 gives 1 PetaOPS FP16, i.e. 125 TFLOPS per R300 as printed (a rounded figure)",
         fp16=125),
    _flagperf("Kunlunxin R300 (FlagPerf)", r"\bR300\b", _FP + "theoryflops = 256e12 in "
              "training/kunlunxin/llama2_70B-megatron/config/config_R300x10x8.py and "
              "baichuan2_13b-deepspeed/config/config_R300x1x1.py, bf16 runs (its other R300 "
              "configs hold the placeholders 999e12 and 1.0, left out); twice the 125 TFLOPS "
              "FP16 row above, which FlagPerf's vendor README prints", bf16=256),
    _row("Kunlunxin P800", r"\bP800\b", _NONE),
    _row("Moore Threads MTT S4000", r"\bS4000\b", "Moore Threads MTT S4000 launch (2023-12): "
         "25 TFLOPS FP32, 50 TF32, 100 FP16/BF16, 200 TOPS INT8", fp32=25, tf32=50, fp16=100,
         bf16=100, int8=200),
    _row("Moore Threads MTT S5000", r"\bS5000\b", _NONE),
    _row("Hygon DCU Z100", r"\bZ100", _NONE),
    _row("Hygon DCU K100 / K100_AI", r"\bK100", _NONE),
    _row("MetaX C550", r"\b(MX)?C550\b", _NONE + "; FlagPerf's computation-FP16 case gives "
         "only the measured/peak ratio (90.9 %)"),
    _flagperf("Iluvatar BI-V150 (FlagPerf)", r"BI-?V150", _BI_V150, bf16=192),
    _flagperf("Iluvatar TG-V200 (FlagPerf)", r"TG-?V200", _FP + "theoryflops = 340e12 in "
              "training/iluvatar/llama3_8B-megatron/config/config_TG-V200x1x16.py, a bf16 run "
              "(16 processes on one machine, as for the BI-V150)", bf16=340),
    _row("Iluvatar BI-V100", r"BI-?V100", "FlagPerf's Iluvatar vendor README: 147 TFLOPS "
         "FP16/BF16 peak (Tiangai 100)", fp16=147, bf16=147),
    _flagperf("Iluvatar MR-V100 (FlagPerf: iluvatar)", r"MR-?V100",
              _FP_INFER.format("iluvatar", "iluvatar"), fp32=24, fp16=96),
    _flagperf("MetaX C500 (FlagPerf: metax)", r"\b(MX)?C500\b",
              _FP_INFER.format("metax", "metax") + "; its training configs for the C500 say "
              "theoryflops = -1 (none)", fp32=120, fp16=240),
    _flagperf("Tencent Zixiao C100 (FlagPerf: zixiao)", r"zixiao",
              _FP_INFER.format("zixiao", "zixiao"), fp32=30, fp16=120),
    _flagperf("Hexaflake (FlagPerf: hexaflake)", r"hexaflake",
              _FP_INFER.format("hexaflake", "hexaflake"), fp32=30, fp16=120),
)  # fmt: skip

_USER: list[PeakRow] = []


def register_peak(
    name: str,
    flops: Mapping[str, float],
    *,
    source: str,
    pattern: str | None = None,
) -> PeakRow:
    """Add a row (FLOP/s per dtype name) matched before the built-in ones.

    ``pattern`` is a case-insensitive regular expression searched in device names; by default
    ``name`` itself. ``source`` says where the figures come from and may not be empty.
    """
    if not source.strip():
        raise ValueError("source: say where the peak figures come from")
    normalised = {normalize_dtype(dtype): float(value) for dtype, value in flops.items()}
    bad = {dtype: value for dtype, value in normalised.items() if not value > 0}
    if bad:
        raise ValueError(
            f"Expected argument `flops` to be positive peak FLOP/s per dtype but got {bad}"
        )
    row = PeakRow(name, pattern or re.escape(name), normalised, source)
    _USER.insert(0, row)
    return row


def find_row(device_name: str) -> PeakRow | None:
    """The first row (user rows first) whose pattern matches ``device_name``."""
    return next(iter(find_rows(device_name)), None)


def find_rows(device_name: str) -> list[PeakRow]:
    """Every row (user rows first) whose pattern matches ``device_name``, in table order."""
    return [row for row in (*_USER, *BUILTIN) if row.matches(device_name)]


def matmul_fp32_precision(matmul: Any) -> str | None:
    """``torch.backends.cuda.matmul.fp32_precision``, or None on torch < 2.9 (whose matmul
    settings object raises AssertionError, not AttributeError, for a name it does not know)."""
    try:
        return str(matmul.fp32_precision)
    except (AttributeError, AssertionError):
        return None


def torch_allows_tf32() -> bool:
    """Whether PyTorch runs float32 CUDA matmuls in TF32 (``allow_tf32`` / matmul precision)."""
    import torch

    matmul = torch.backends.cuda.matmul
    precision = matmul_fp32_precision(matmul)
    if precision is None:  # torch < 2.9
        return bool(matmul.allow_tf32)
    if precision == "none":
        precision = torch.backends.fp32_precision  # type: ignore[attr-defined]
    return bool(precision == "tf32")


def lookup(device_name: str, dtype: Any, *, tf32: bool | None = None) -> tuple[str, PeakRow] | str:
    """(dtype whose peak applies, row) for a device, or the reason there is none (no warning).

    The first matching row that has a figure for the dtype wins (so a FlagPerf row after a
    vendor row fills only the dtypes the vendor's leaves out). fp32 uses the device's TF32
    peak when a row has one and ``tf32`` is True, or ``tf32`` is None and PyTorch allows TF32
    matmuls (FlagPerf's convention); ``tf32=False`` forces the fp32 peak.
    """
    name = normalize_dtype(dtype)
    rows = find_rows(device_name)
    if not rows:
        return (
            f"no peak FLOP/s known for device {device_name!r}; register one with "
            "perfkit.flops.register_peak(...), pass peak_flops explicitly or measure one "
            "(peak_flops='measured')"
        )
    use_tf32: bool | None = tf32
    for row in rows:
        wanted = name
        if name == "fp32" and "tf32" in row.flops:
            if use_tf32 is None:
                use_tf32 = torch_allows_tf32()
            wanted = "tf32" if use_tf32 else "fp32"
        if wanted in row.flops:
            return wanted, row
    return f"no {name} peak known for {rows[0].name} (source: {rows[0].source})"


def resolve(
    device_name: str, dtype: Any, *, tf32: bool | None = None
) -> tuple[str, PeakRow] | None:
    """:func:`lookup`, with a warning and None when there is no figure."""
    found = lookup(device_name, dtype, tf32=tf32)
    if isinstance(found, str):
        warn(found)
        return None
    return found


def peak_flops(device_name: str, dtype: Any, *, tf32: bool | None = None) -> float | None:
    """Dense peak FLOP/s of ``device_name`` for ``dtype``, or None with a warning if unknown.

    ``dtype``: ``"fp64" | "fp32" | "tf32" | "fp16" | "bf16" | "fp8" | "int8"`` (or a
    torch.dtype / its name). For fp32 on a device with TF32 see ``resolve``. Raises ValueError
    for an unknown dtype name.
    """
    found = resolve(device_name, dtype, tf32=tf32)
    if found is None:
        return None
    name, row = found
    return row.flops[name]
