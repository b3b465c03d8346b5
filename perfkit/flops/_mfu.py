"""Model FLOPs utilisation, with the per-sample work's unit and the convention explicit."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from perfkit.checks import check_finite, one_of, positive_number
from perfkit.flops.peaks import normalize_dtype, resolve

Convention = Literal["perfkit", "flagperf"]
CONVENTIONS: dict[Convention, str] = {
    "perfkit": "perfkit: 2 FLOPs per multiply-add",
    "flagperf": "flagperf: 1 operation per multiply-add (FlagPerf's ResNet-50 'flops')",
}


def mfu(
    *,
    samples_per_s: float,
    peak_flops: float,
    flops_per_sample: float | None = None,
    macs_per_sample: float | None = None,
    convention: Convention = "perfkit",
) -> float:
    """Model FLOPs utilisation as a fraction (0.168 is 16.8 %), for one device.

    Give the per-sample work either in FLOPs (``flops_per_sample``, 2 per multiply-add, e.g.
    ``FlopReport.flops``) or in multiply-adds (``macs_per_sample``, e.g. ``FlopReport.macs`` or
    FlagPerf's 4.12e9 for ResNet-50). ``samples_per_s``: that device's throughput (samples/s);
    ``peak_flops``: its peak FLOP/s.

    ``convention="perfkit"``: work = 2 x multiply-adds (honest FLOPs).
    ``convention="flagperf"``: work = 1 x multiply-adds, FlagPerf's ResNet-50 inference MFU:
    ``mfu(macs_per_sample=4.12e9, samples_per_s=12698.7, peak_flops=312e12,
    convention="flagperf")`` is 0.168.
    """
    if (flops_per_sample is None) == (macs_per_sample is None):
        raise ValueError("give exactly one of flops_per_sample (FLOPs) and macs_per_sample")
    one_of("convention", convention, tuple(CONVENTIONS))
    if macs_per_sample is not None:
        macs = positive_number("macs_per_sample", macs_per_sample, "multiply-adds")
    else:
        macs = positive_number("flops_per_sample", flops_per_sample or 0.0, "FLOPs") / 2
    if check_finite("samples_per_s", samples_per_s) < 0:
        raise ValueError(
            f"Expected argument `samples_per_s` to be a finite non-negative number but got "
            f"{samples_per_s!r}"
        )
    ops_per_mac = 2 if convention == "perfkit" else 1
    return ops_per_mac * macs * samples_per_s / positive_number("peak_flops", peak_flops, "FLOP/s")


def mfu_summary(
    flops_per_sample: float,
    core_samples_per_s_per_device: float,
    device_name: str,
    dtype: Any,
    *,
    peak_flops: float | None = None,
    convention: Convention = "perfkit",
    tf32: bool | None = None,
    measured: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Summary fields for a Run: MFU of one device from its core throughput.

    ``flops_per_sample`` is in FLOPs (2 per multiply-add). The peak is ``peak_flops`` (FLOP/s)
    when given, else ``measured`` (a :class:`~perfkit.flops.MeasuredPeak` or its ``to_json()``
    dict) when given, else the table's (``peak_flops(device_name, dtype, tf32=tf32)``).
    Returns ``MFU`` (fraction), ``mfu_convention``, ``peak_flops`` (FLOP/s), ``peak_dtype``,
    ``peak_source`` (where the figure comes from, in words), ``mfu_peak_source`` (one of
    ``PEAK_SOURCES``: "datasheet", "flagperf-config", "measured", "user"),
    ``flops_per_sample``; or, when no peak is known, only ``mfu_note`` (a warning is issued
    too).
    """
    peak_dtype, source, kind = normalize_dtype(dtype), "given by the caller", "user"
    if peak_flops is None and measured is not None:
        fields = measured.to_json() if hasattr(measured, "to_json") else measured
        peak_flops, peak_dtype, kind = float(fields["flops"]), str(fields["dtype"]), "measured"
        source = f"measured on {fields.get('device_name') or device_name}: {fields['method']}"
    elif peak_flops is None:
        found = resolve(device_name, dtype, tf32=tf32)
        if found is None:
            return {
                "mfu_note": f"MFU not computed: no peak FLOP/s known for {device_name!r} ({dtype})"
            }
        peak_dtype, row = found
        peak_flops, source, kind = row.flops[peak_dtype], f"{row.name}: {row.source}", row.kind
    value = mfu(
        flops_per_sample=flops_per_sample,
        samples_per_s=core_samples_per_s_per_device,
        peak_flops=peak_flops,
        convention=convention,
    )
    return {
        "MFU": value,
        "mfu_convention": CONVENTIONS[convention],
        "peak_flops": peak_flops,
        "peak_dtype": peak_dtype,
        "peak_source": source,
        "mfu_peak_source": kind,
        "flops_per_sample": flops_per_sample,
    }
