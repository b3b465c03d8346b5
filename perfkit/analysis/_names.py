"""The names trainers log for the figures perfkit's tables and MLPerf logs know: Lightning's
``val_acc``, Hugging Face's ``eval_accuracy``, ... read as ``acc_val`` and the others."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

#: {perfkit's name: the logged names read as it, first found first} - a run's config entry
#: ``metric_names`` ({perfkit's name: [logged names]}) comes before these.
METRIC_NAMES: dict[str, tuple[str, ...]] = {
    "acc_val": (
        "val_acc", "val_accuracy", "val_top1", "eval_accuracy", "eval_acc", "eval_top1",
        "test_acc", "test_accuracy", "test_top1",
    ),
    "acc_infer": ("predict_acc", "predict_accuracy", "infer_acc", "infer_accuracy"),
    "mAP": ("val_mAP", "val_map", "eval_mAP", "eval_map", "test_mAP", "test_map", "map"),
}  # fmt: skip


def metric_names(config: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    """{perfkit's name: logged names}: the run config's ``metric_names`` first, then
    :data:`METRIC_NAMES`."""
    names = {key: tuple(value) for key, value in METRIC_NAMES.items()}
    given = config.get("metric_names")
    if isinstance(given, Mapping):
        for key, value in given.items():
            own = (value,) if isinstance(value, str) else tuple(_strings(value))
            names[str(key)] = own + names.get(str(key), ())
    return names


def _strings(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, Sequence) else []


def named_metrics(values: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """{perfkit's name: value} for each of perfkit's names ``values`` lacks whose logged name
    it has (the first found); a name perfkit's own is never replaced."""
    out: dict[str, Any] = {}
    for name, logged in metric_names(config).items():
        if name in values:
            continue
        found = next((key for key in logged if key in values), None)
        if found is not None:
            out[name] = values[found]
    return out


def logged_as(names: Sequence[str], present: Sequence[str], config: Mapping[str, Any]) -> dict:
    """{logged name: perfkit's name} of the ``present`` logged names read as one of ``names``
    (perfkit's own names as themselves; an alias only where its perfkit name is absent)."""
    out = {name: name for name in names if name in present}
    for name, logged in metric_names(config).items():
        if name in names and name not in present:
            found = next((key for key in logged if key in present), None)
            if found is not None:
                out[found] = name
    return out
