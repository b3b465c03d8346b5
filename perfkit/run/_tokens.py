"""Counting the tokens of a batch (language models), beside its samples."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from perfkit import checks
from perfkit.run._samples import MAX_SAMPLES

#: How a phase's tokens were counted (``tokens_from`` in its figures and records).
TOKEN_SOURCES = ("attention_mask", "input_ids", "given", "callable", "none")


def _on_host(tensor: Any) -> bool:
    """True for a tensor whose values can be read without a device sync (CPU, numpy)."""
    device = getattr(tensor, "device", None)
    return device is None or getattr(device, "type", device) == "cpu"


class AutoTokens:
    """Tokens of each batch counted from the batch itself, the way decided at the first batch
    that is a dict (a ``BatchEncoding``, a collator's output) holding token ids:

    - ``attention_mask`` on the host: its sum, the real tokens (padding left out);
    - else ``input_ids``: its elements, padded tokens included (a mask on an accelerator is not
      summed: reading the sum would sync the device every step);
    - a batch without either counts no tokens (``source`` "none"); when the first batch is not
      a dict, ``off`` tells the step loop to stop asking (no cost per step).
    """

    def __init__(self) -> None:
        self.source = "none"
        self.off = False

    def __call__(self, batch: Any) -> int:
        if not isinstance(batch, Mapping):
            self.off = self.source == "none"
            return 0
        mask = batch.get("attention_mask")
        if self.source != "input_ids" and mask is not None and _on_host(mask):
            self.source, self.off = "attention_mask", False  # token ids seen: keep asking
            return int(mask.sum())
        ids = batch.get("input_ids")
        if ids is None:
            return 0
        if self.source == "none":
            self.source, self.off = "input_ids", False
        return int(ids.numel()) if hasattr(ids, "numel") else int(ids.size)


def token_counter(
    tokens: int | Callable[[Any], int] | None,
) -> tuple[int | Callable[[Any], int], str]:
    """(the tokens of every batch - an int - or the callable that counts them per batch, how
    they are counted: one of :data:`TOKEN_SOURCES`, "auto" until an :class:`AutoTokens` has
    seen a batch)."""
    if tokens is None:
        return AutoTokens(), "auto"
    if callable(tokens):
        return tokens, "callable"
    expected = "a non-negative int (at most 2**53), a callable batch -> int, or None"
    if isinstance(tokens, bool) or not isinstance(tokens, int):
        raise checks.wrong_type("tokens", expected, tokens)
    if not 0 <= tokens <= MAX_SAMPLES:
        raise checks.wrong_value("tokens", expected, tokens)
    return tokens, "given"
