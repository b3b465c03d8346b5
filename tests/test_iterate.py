"""iterate() keeps the length of a sized iterable and stays one pass, so tqdm and torchvision's
MetricLogger.log_every wrap it; the phase's optional progress bar."""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, IterableDataset, TensorDataset
from tqdm import tqdm

import perfkit
from tests.conftest import FakeClock, timed_batches


def batch(n: int) -> np.ndarray:
    return np.zeros((n, 3))


def log_every(iterable: Any, print_freq: int, out: list[str]) -> Iterator[Any]:
    """torchvision's references/classification/utils.py MetricLogger.log_every, its printing
    reduced to what it reads: len(iterable) before and while iterating."""
    i = 0
    space_fmt = ":" + str(len(str(len(iterable)))) + "d"
    for obj in iterable:
        yield obj
        if i % print_freq == 0 or i == len(iterable) - 1:
            out.append(("[{0" + space_fmt + "}/{1}]").format(i, len(iterable)))
        i += 1  # noqa: SIM113  (as torchvision writes it)


@pytest.fixture
def run(tmp_path, clock: FakeClock) -> Iterator[perfkit.Run]:
    with perfkit.Run("iterate", out_dir=tmp_path, clock=clock, device="cpu", probes=None) as run:
        yield run


def test_metric_logger_log_every_wraps_iterate(run: perfkit.Run, clock: FakeClock) -> None:
    lines: list[str] = []
    with run.phase("train") as train:
        for _ in log_every(train.iterate([batch(2)] * 12), print_freq=5, out=lines):
            clock.advance(1.0)
    # 12 batches: lines at i = 0, 5, 10 and the last, 11, each with the total
    assert lines == ["[ 0/12]", "[ 5/12]", "[10/12]", "[11/12]"]
    assert train.steps == 12 and train.samples == 24


def test_tqdm_sees_the_total(run: perfkit.Run, clock: FakeClock) -> None:
    out = io.StringIO()
    with run.phase("train") as train:
        bar = tqdm(train.iterate([batch(2)] * 7), file=out)
        assert bar.total == 7
        for _ in bar:
            clock.advance(1.0)
    assert "7/7" in out.getvalue() and train.steps == 7


def test_a_dataloader_keeps_its_length(run: perfkit.Run) -> None:
    loader = DataLoader(TensorDataset(torch.zeros(10, 3)), batch_size=4)  # 4 + 4 + 2
    with run.phase("train") as train:
        steps = train.iterate(loader)
        assert len(steps) == 3
        assert [len(b[0]) for b in steps] == [4, 4, 2]
    assert train.samples == 10


def test_one_pass_like_a_generator(run: perfkit.Run) -> None:
    with run.phase("train") as train:
        steps = train.iterate([batch(1)] * 3)
        assert iter(steps) is steps
        assert len(list(steps)) == 3
        assert list(steps) == []  # exhausted, as a generator would be
    assert train.steps == 3


def test_unsized_iterables_have_no_length(run: perfkit.Run, clock: FakeClock) -> None:
    class Stream(IterableDataset[torch.Tensor]):
        def __iter__(self) -> Iterator[torch.Tensor]:
            return iter([torch.zeros(3)] * 4)

    with run.phase("train") as train:
        for unsized in (
            timed_batches(clock, [batch(2)] * 2, io_s=0.1),
            DataLoader(Stream(), batch_size=2),  # len() raises TypeError
        ):
            steps = train.iterate(unsized)  # one loop at a time: a new one ends the one before
            with pytest.raises(TypeError):
                len(steps)  # type: ignore[arg-type]
            assert len(list(steps)) == 2
    assert train.steps == 4


def test_a_break_still_counts_the_step_it_left(run: perfkit.Run, clock: FakeClock) -> None:
    with run.phase("train") as train:
        for i, _ in enumerate(train.iterate([batch(2)] * 5)):
            clock.advance(1.0)
            if i == 1:
                break
    assert train.steps == 2 and train.wall_s == pytest.approx(2.0)


class TimedLoader:
    """A sized loader of 4 batches of 3 samples, spending 0.5 fake seconds producing each."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock

    def __len__(self) -> int:
        return 4

    def __iter__(self) -> Iterator[np.ndarray]:
        return timed_batches(self.clock, [batch(3)] * 4, io_s=0.5)


def epoch(run: perfkit.Run, clock: FakeClock, **phase_args: Any) -> dict[str, Any]:
    with run.phase("train", **phase_args) as train:
        for _ in train.iterate(TimedLoader(clock)):
            clock.advance(1.5)
    return train.stats()


def test_progress_bar_on_stderr(run: perfkit.Run, clock: FakeClock, capsys) -> None:
    with_bar = epoch(run, clock, progress=True)
    err = capsys.readouterr().err
    assert "train" in err and "4/4" in err
    # the bar's updates read no fake time, so the figures equal a bar-less epoch's:
    # 12 samples over 4 x 2.0 s
    without = epoch(run, clock, progress=False)
    assert capsys.readouterr().err == ""
    for key in ("samples", "steps", "wall_s", "io_s", "compute_s", "throughput_whole"):
        assert with_bar[key] == without[key], key
    assert without["throughput_whole"] == pytest.approx(12 / 8.0)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("stream", "shown"), [(io.StringIO(), False), (Terminal(), True)])
def test_progress_none_means_only_on_a_terminal(
    run: perfkit.Run, clock: FakeClock, monkeypatch, stream: io.StringIO, shown: bool
) -> None:
    monkeypatch.setattr(sys, "stderr", stream)
    epoch(run, clock)
    assert ("4/4" in stream.getvalue()) is shown


def test_progress_must_be_a_bool_or_none(run: perfkit.Run) -> None:
    with pytest.raises(TypeError, match="Expected argument `progress` to be True, False or"):
        run.phase("train", progress="yes")  # type: ignore[arg-type]
