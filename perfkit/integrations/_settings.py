"""The trainer's settings as a run's config: read ones under the user's own (the user's win)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from perfkit.integrations._steps import guarded
from perfkit.run import Run

#: Trainer precision names -> perfkit's (``config["precision"]``, the dtype of MFU's peak).
PRECISIONS = {
    "32": "fp32", "32-true": "fp32", "fp32": "fp32",
    "16": "fp16", "16-mixed": "fp16", "16-true": "fp16", "fp16": "fp16",
    "bf16": "bf16", "bf16-mixed": "bf16", "bf16-true": "bf16",
    "64": "fp64", "64-true": "fp64", "transformer-engine": "fp8",
}  # fmt: skip


def read_settings(read: Callable[[], Mapping[str, Any]]) -> dict[str, Any]:
    """What ``read`` returns; {} where reading the trainer failed (logged, never raised)."""
    out: dict[str, Any] = {}
    guarded("reading the trainer's settings", lambda: out.update(read()))
    return out


def parameter_count(model: Any) -> int | None:
    """The model's parameters (every element of every parameter), None without any."""
    parameters = getattr(model, "parameters", None)
    if not callable(parameters):
        return None
    return sum(p.numel() for p in parameters()) or None


def global_batch(per_device: Any, accumulation: Any, world: Any) -> int | None:
    """Samples per optimizer step over every rank: per-device batch x accumulation x world."""
    values = (per_device, accumulation, world)
    if all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values):
        return int(per_device * accumulation * world)
    return None


def apply_settings(run: Run, settings: Mapping[str, Any], user: Mapping[str, Any]) -> None:
    """Fill ``run``'s config with the trainer's ``settings`` (None values left out), ``user``'s
    own config winning; a running run's metadata is written again."""
    read = {key: value for key, value in settings.items() if value is not None}
    run.set_config({**run.config, **read, **user})
