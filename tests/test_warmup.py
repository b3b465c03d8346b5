"""Warm-up: a phase's first N steps timed and reported apart, left out of its other figures
(hand-worked on a fake clock)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import perfkit
import perfkit.analysis
from tests.conftest import FakeClock, FakeEventTimer, assert_rebuilt_equals_live, timed_batches


def batch(n: int) -> np.ndarray:
    return np.zeros((n, 3))


def train_epoch(run: perfkit.Run, clock: FakeClock, **phase_args: object) -> perfkit.Phase:
    """5 steps of 8 samples, IO 0.5 s each; bodies of 10 s, 3 s, then 1.5 s three times
    (step walls 10.5, 3.5, 2.0, 2.0, 2.0 s: 20 s from the phase's start)."""
    bodies = iter([10.0, 3.0, 1.5, 1.5, 1.5])
    with run.phase("train", **phase_args) as train:  # type: ignore[arg-type]
        for _ in train.iterate(timed_batches(clock, [batch(8)] * 5, io_s=0.5)):
            clock.advance(next(bodies))
    return train


def test_warmup_steps_are_kept_apart(tmp_path, clock: FakeClock) -> None:
    with perfkit.Run("warm", out_dir=tmp_path, clock=clock, device="cpu", probes=None) as run:
        train = train_epoch(run, clock, warmup_steps=2)
    s = run.summary()
    # Warm-up: steps 0 and 1, 16 samples, 10.5 + 3.5 = 14 s.
    assert (s["train_warmup_steps"], s["train_warmup_samples"]) == (2, 16)
    assert s["train_warmup_s"] == pytest.approx(14.0)
    # Steady state: steps 2-4, 24 samples over 3 x 2.0 = 6 s wall, 3 x 0.5 s IO, 3 x 1.5 s
    # compute: p_train = 24 / 6 = 4.0, p_core = 24 / 4.5 = 5.333...
    assert (s["train_steps"], s["train_samples"]) == (3, 24)
    assert s["train_wall_s"] == pytest.approx(6.0)
    assert s["train_io_s"] == pytest.approx(1.5)
    assert s["train_compute_s"] == pytest.approx(4.5)
    assert s["p_train"] == pytest.approx(4.0)
    assert s["p_core"] == pytest.approx(24 / 4.5)
    assert s["train_step_time_p99_s"] == pytest.approx(2.0)  # the 10.5 s step is not in it
    # p_whole keeps the warm-up: 40 samples over the phase's 20 s = 2.0.
    assert s["p_whole"] == pytest.approx(2.0)
    assert (train.steps, train.samples, train.warmup_samples) == (3, 24, 16)
    (phase,) = s["phases"]
    assert (phase["steps"], phase["warmup_steps"], phase["warmup_samples"]) == (3, 2, 16)
    assert phase["wall_s"] == pytest.approx(6.0) and phase["warmup_s"] == pytest.approx(14.0)
    assert phase["throughput_whole"] == pytest.approx(4.0)
    assert_rebuilt_equals_live(run.run_dir)


def test_no_warmup_is_flagperfs_definition(tmp_path, clock: FakeClock) -> None:
    with perfkit.Run("cold", out_dir=tmp_path, clock=clock, device="cpu", probes=None) as run:
        train_epoch(run, clock)
    s = run.summary()
    # Every step counts: 40 samples over 20 s, p_train = p_whole = 2.0; compute 10 + 3 + 4.5 s.
    assert s["p_train"] == pytest.approx(2.0) and s["p_whole"] == pytest.approx(2.0)
    assert s["p_core"] == pytest.approx(40 / 17.5)
    assert not [key for key in s if "warmup" in key]
    assert "warmup_steps" not in s["phases"][0]


def test_the_runs_default_and_a_phases_own(tmp_path, clock: FakeClock) -> None:
    with perfkit.Run(
        "defaults", out_dir=tmp_path, clock=clock, device="cpu", probes=None, warmup_steps=1
    ) as run:
        train_epoch(run, clock)  # the run's 1: step 0 (10.5 s) is warm-up
        train_epoch(run, clock, warmup_steps=0)  # its own 0: every step counts
    first, second = run.summary()["phases"]
    assert (first["warmup_steps"], first["steps"]) == (1, 4)
    assert first["wall_s"] == pytest.approx(20.0 - 10.5)
    assert "warmup_steps" not in second and second["steps"] == 5
    # Over the kind: 4 + 5 = 9 steps, 72 samples over 9.5 + 20 = 29.5 s.
    s = run.summary()
    assert s["train_steps"] == 9 and s["p_train"] == pytest.approx(72 / 29.5)


def test_a_default_per_kind_leaves_the_other_kinds_alone(tmp_path, clock: FakeClock) -> None:
    with perfkit.Run(
        "kinds", out_dir=tmp_path, clock=clock, device="cpu", probes=None, warmup_steps={"train": 2}
    ) as run:
        train_epoch(run, clock)
        with run.phase("val") as val:
            for _ in val.iterate(timed_batches(clock, [batch(4)] * 3, io_s=0.25)):
                clock.advance(0.75)
    s = run.summary()
    assert s["train_warmup_steps"] == 2 and "val_warmup_steps" not in s
    # val: 3 steps of 1 s, 12 samples: p_val_whole = 12 / 3 = 4.0
    assert s["val_steps"] == 3 and s["p_val_whole"] == pytest.approx(4.0)
    # p_whole: 40 train samples over 20 s train + 3 s val = 40 / 23
    assert s["p_whole"] == pytest.approx(40 / 23)
    assert_rebuilt_equals_live(run.run_dir)


def test_device_windows_of_warmup_steps_resolve_to_their_records_only(tmp_path, clock) -> None:
    timer = FakeEventTimer()
    with perfkit.Run("lazy", out_dir=tmp_path, clock=clock, device_timer=timer) as run:
        with run.phase("train", warmup_steps=1) as train:
            for work in (5.0, 1.0, 1.0):
                for _ in train.iterate([batch(4)]):
                    timer.device_now += work  # the device's time for this step
    # Device work per step: 5.0 s (step 0, warm-up), then 1.0 s twice; resolved at phase end.
    # compute_s = 1.0 + 1.0 = 2.0 s; p_core = 8 samples / 2.0 s = 4.0.
    s = run.summary()
    assert s["train_compute_s"] == pytest.approx(2.0) and s["p_core"] == pytest.approx(4.0)
    assert s["train_warmup_steps"] == 1 and s["train_samples"] == 8
    steps = perfkit.analysis.step_times(run.run_dir)
    assert steps["compute_time"].tolist() == pytest.approx([5.0, 1.0, 1.0])  # records keep all
    assert_rebuilt_equals_live(run.run_dir)


def test_a_loop_left_inside_the_warmup(tmp_path, clock: FakeClock) -> None:
    with perfkit.Run("left", out_dir=tmp_path, clock=clock, device="cpu", probes=None) as run:
        with run.phase("train", warmup_steps=2) as train:
            for i, _ in enumerate(train.iterate(timed_batches(clock, [batch(8)] * 5, io_s=0.5))):
                clock.advance(1.0)
                if i == 0:
                    break
            # the step left by break (1.5 s) is warm-up step 0; the next loop's first is step 1
            for _ in train.iterate(timed_batches(clock, [batch(8)] * 3, io_s=0.5)):
                clock.advance(1.0)
    s = run.summary()
    # warm-up: 1.5 + 1.5 s; steady: 2 steps of 1.5 s, 16 samples: p_train = 16 / 3.0
    assert s["train_warmup_steps"] == 2 and s["train_warmup_s"] == pytest.approx(3.0)
    assert s["train_steps"] == 2 and s["p_train"] == pytest.approx(16 / 3.0)
    assert_rebuilt_equals_live(run.run_dir)


def test_a_phase_that_is_all_warmup_warns_at_the_users_line(tmp_path, clock) -> None:
    with perfkit.Run("short", out_dir=tmp_path, clock=clock, device="cpu", probes=None) as run:
        with pytest.warns(UserWarning, match="all of them warm-up") as caught:
            train_epoch(run, clock, warmup_steps=5)
    # train_epoch's with-statement, in this file, is where the phase ended
    assert caught[0].filename == __file__
    assert run.summary()["train_warmup_steps"] == 5 and run.summary()["train_steps"] == 0


def test_the_warning_as_an_error_still_ends_the_phase(tmp_path, clock: FakeClock) -> None:
    with perfkit.Run("strict", out_dir=tmp_path, clock=clock, device="cpu", probes=None) as run:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pytest.raises(UserWarning, match="all of them warm-up"):
                train_epoch(run, clock, warmup_steps=5)
        train_epoch(run, clock)  # the next phase starts: the first one ended
    assert [p["warmup_steps"] for p in run.summary()["phases"] if "warmup_steps" in p] == [5]
    assert_rebuilt_equals_live(run.run_dir)


@pytest.mark.parametrize(
    ("value", "error"),
    [(-1, ValueError), (1.5, TypeError), ("2", TypeError), (True, TypeError)],
)
def test_bad_warmup_steps_are_named(tmp_path, value: object, error: type) -> None:
    with pytest.raises(error, match="Expected argument `warmup_steps` to be a non-negative int"):
        perfkit.Run("bad", out_dir=tmp_path, warmup_steps=value)  # type: ignore[arg-type]
    with perfkit.Run("ok", out_dir=tmp_path, device="cpu", probes=None) as run:
        with pytest.raises(error, match="`warmup_steps`"):
            run.phase("train", warmup_steps=value)  # type: ignore[arg-type]


def test_a_default_for_an_unknown_kind_is_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match="`warmup_steps` to map phase kinds"):
        perfkit.Run("bad", out_dir=tmp_path, warmup_steps={"training": 2})
