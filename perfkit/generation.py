"""Timing Hugging Face ``generate``: a streamer that makes each batch row one request of the
active :class:`perfkit.Run` (TTFT, TPOT, ITL, E2EL; see :mod:`perfkit.serving`).

``model.generate(**inputs, streamer=perfkit.generation.Streamer(eos_token_id=...))`` calls
``put`` with the prompt ids first, then with each step's new token ids, and ``end`` at the
end; the streamer only needs ``put`` / ``end`` (transformers' BaseStreamer interface) and
imports neither torch nor transformers. The send time is the prompt's ``put`` (generate's
start, after its input checks); a row's token times are the ``put`` calls that carry its
tokens. generate copies each step's tokens to the host for ``put``: on an accelerator that is
a synchronisation per step - what a client streaming tokens sees anyway.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from perfkit import checks
from perfkit.run import Run, RunError
from perfkit.run._active import active_run
from perfkit.run._requests import Request

#: The error of a batch's open rows when the next batch's prompt comes before ``end``.
NO_END = "generate ended without calling end() (it raised)"


def _rows(value: Any) -> tuple[list[list[int]], bool]:
    """A put's token ids as rows of ints, and whether it was a matrix: (batch, n) - a prompt,
    or assisted decoding's tokens of one row - or (batch,), one token per row."""
    data = value.tolist() if hasattr(value, "tolist") else value
    if not isinstance(data, list):
        data = [data]
    matrix = any(isinstance(row, list) for row in data)
    return [row if isinstance(row, list) else [row] for row in data], matrix


class Streamer:
    """A ``generate(streamer=...)`` streamer timing each batch row as one request.

    Args:
        run: the run to record in (default: the active run, when the first prompt comes).
        eos_token_id: end-of-sequence id(s): a row's request ends at the token that is one
            (generate pads finished rows with pad tokens until the batch ends; those are not
            counted). None: every row runs to the batch's end.
        pad_token_id: the prompt's pad id: a row's prompt tokens are its ids other than it
            (left padding). None: the prompt's full width.
        prompt_tokens: each row's prompt tokens (e.g. ``attention_mask.sum(1).tolist()``);
            overrides ``pad_token_id``; for the next generate call only
            (:meth:`set_prompt_tokens` gives them for each later one).

    One streamer serves successive generate calls: after ``end`` the next ``put`` is a new
    batch's prompt. For batch size 1 this is transformers' own streamer contract; for larger
    batches the rows are told apart here (transformers' text streamers take batch size 1).
    """

    def __init__(
        self,
        run: Run | None = None,
        *,
        eos_token_id: int | Sequence[int] | None = None,
        pad_token_id: int | None = None,
        prompt_tokens: Sequence[int] | None = None,
    ) -> None:
        if run is not None and not isinstance(run, Run):
            raise checks.wrong_type("run", "a perfkit.Run or None", run)
        self._run = run
        eos = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id or [])
        for value in eos:
            checks.check_type("eos_token_id", value, int, "an int, a sequence of ints or None")
        self._eos = frozenset(eos)
        if pad_token_id is not None:
            checks.check_type("pad_token_id", pad_token_id, int, "an int or None")
        self._pad = pad_token_id
        self._prompt_tokens: list[int] | None = None
        if prompt_tokens is not None:
            self.set_prompt_tokens(prompt_tokens)
        self._requests: list[Request] | None = None
        self._active: Run | None = None

    def set_prompt_tokens(self, counts: Sequence[int]) -> None:
        """Each row's prompt tokens for the next generate call (then counted again from the
        prompt and ``pad_token_id``)."""
        expected = "a sequence of non-negative ints, one per batch row"
        if isinstance(counts, (str, bytes)) or not isinstance(counts, Sequence):
            raise checks.wrong_type("prompt_tokens", expected, counts)
        for count in counts:
            checks.check_type("prompt_tokens", count, int, expected)
            if count < 0:
                raise checks.wrong_value("prompt_tokens", expected, counts)
        self._prompt_tokens = list(counts)

    def put(self, value: Any) -> None:
        """generate's call: the prompt ids (first call of a batch), then each step's new ids."""
        rows, matrix = _rows(value)
        if self._requests is not None and (
            len(rows) != len(self._requests) or (matrix and len(rows) > 1)
        ):  # a new batch's prompt: the last generate call raised before its end()
            self.fail(NO_END)
        if self._requests is None:
            self._start(rows)
            return
        requests, run = self._requests, self._active
        assert run is not None
        t = run.elapsed()
        for request, ids in zip(requests, rows, strict=True):
            if request.done:
                continue
            ends = next((i for i, token in enumerate(ids) if token in self._eos), None)
            taken = ids if ends is None else ids[: ends + 1]
            request.add_token(t, len(taken))
            if ends is not None:
                request.finish(t)

    def end(self) -> None:
        """generate's last call: the rows still open end at their last token."""
        for request in self._requests or []:
            request.finish(request.token_t[-1] if request.token_t else None)
        self._requests = None

    def fail(self, error: str) -> None:
        """The generate call failed (``error`` says why): its open rows are recorded as failed
        requests. Call it where generate raised; else the next batch's prompt does it."""
        for request in self._requests or []:
            request.fail(error)
        self._requests = None

    def _start(self, prompt: list[list[int]]) -> None:
        run = self._run or active_run()
        if run is None:
            raise RunError("perfkit.generation.Streamer: no run is active; pass run= or start one")
        counts, self._prompt_tokens = self._prompt_tokens, None  # for this call only
        if counts is None:
            counts = [
                len(row) if self._pad is None else sum(1 for t in row if t != self._pad)
                for row in prompt
            ]
        if len(counts) != len(prompt):
            raise ValueError(
                f"Expected argument `prompt_tokens` to have one count per row ({len(prompt)}) "
                f"but got {len(counts)}"
            )
        requests = [run.request(prompt_tokens=n) for n in counts]
        t = run.elapsed()  # one send time for the batch
        for request in requests:
            request.start(t)
        self._active = run
        self._requests = requests
