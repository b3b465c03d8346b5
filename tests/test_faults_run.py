"""Fault injection on a live Run (issue 16): non-finite values, reserved names, clashing and
deleted run directories, nested IO windows, empty phases, threads, bad arguments, file modes."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import stat
import threading
from pathlib import Path

import pytest

import perfkit
from perfkit.records import read_records
from perfkit.run._setup import make_run_dir
from tests.conftest import FakeClock, FakeEventTimer, read_step_rows, timed_batches


def summary_file(run: perfkit.Run) -> dict:
    assert run.run_dir is not None
    text = (run.run_dir / "summary.json").read_text()
    return json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in summary.json"))


# ------------------------------------------------------------------- 1: non-finite values


def test_nan_and_inf_in_the_summary_are_written_as_null_with_a_note(tmp_path, clock):
    with perfkit.Run("nan", out_dir=tmp_path, device="cpu", clock=clock) as run:
        with run.phase("train") as train:
            for _ in train.iterate(timed_batches(clock, [0, 1], 0.1), samples=2):
                clock.advance(0.2)
        run.log(loss=float("nan"), grad=float("inf"), acc=0.5)
    summary = summary_file(run)  # valid JSON without NaN / Infinity
    assert summary["status"] == "ok"
    assert summary["loss"] is None and summary["grad"] is None and summary["acc"] == 0.5
    assert summary["nonfinite"] == ["loss", "grad"]
    assert summary["p_train"] == pytest.approx(4 / 0.6)  # 4 samples / (2 x 0.3 s)


@pytest.mark.parametrize("bad", [float("nan"), -1, "3", 2.5])
def test_a_samples_callable_returning_garbage_counts_zero_and_says_so(tmp_path, clock, bad):
    with perfkit.Run("bad-samples", out_dir=tmp_path, device="cpu", clock=clock) as run:
        with run.phase("train") as train:
            for _ in train.iterate([1, 2], samples=lambda b: bad if b == 1 else 4):
                clock.advance(0.1)
    summary = summary_file(run)
    assert summary["status"] == "ok" and summary["train_samples"] == 4
    (fault,) = summary["faults"]
    assert "samples callable returned" in fault and "counted as 0" in fault
    assert run.run_dir is not None
    samples = [row["samples"] for row in read_step_rows(run.run_dir / "steps.bin")]
    assert samples == [0, 4]  # every step row holds a number


# ----------------------------------------------------------------- 7: reserved summary keys


@pytest.mark.parametrize("key", ["status", "e2e_time", "p_train", "run_id", "phases", "mem"])
def test_run_log_refuses_the_summary_own_names(tmp_path, key):
    with perfkit.Run("reserved", out_dir=tmp_path, device="cpu") as run:
        with pytest.raises(ValueError, match=f"run.log\\({key}=...\\): '{key}' is a field"):
            run.log(**{key: 1.0})
        run.log(acc=0.7)
    summary = summary_file(run)
    assert summary["status"] == "ok" and summary["acc"] == 0.7


# --------------------------------------------------------------- 6: exclusive run directories


def test_two_runs_with_the_same_name_pid_and_second_get_two_directories(tmp_path, monkeypatch):
    # pid 1 in two containers on one volume: the same name, pid and start second
    monkeypatch.setattr(os, "getpid", lambda: 1)
    frozen = perfkit.run._run.datetime.now(perfkit.run._run.timezone.utc)

    class Frozen:
        @staticmethod
        def now(tz):
            return frozen

    monkeypatch.setattr(perfkit.run._run, "datetime", Frozen)
    first = perfkit.Run("same", out_dir=tmp_path, device="cpu").start()
    first.stop()
    second = perfkit.Run("same", out_dir=tmp_path, device="cpu").start()
    second.stop()
    assert first.run_dir != second.run_dir
    assert len(list(tmp_path.iterdir())) == 2
    assert first.run_id != second.run_id


def test_an_existing_directory_is_never_reused(tmp_path):
    make_run_dir(tmp_path, "taken")
    with pytest.raises(FileExistsError):
        make_run_dir(tmp_path, "taken")
    assert make_run_dir(tmp_path, "taken", exclusive=False) == tmp_path / "taken"


# ----------------------------------------------------------------------- 8: IO windows


def test_nested_io_counts_once_and_io_inside_compute_counts_as_compute(tmp_path, clock):
    with perfkit.Run("io", out_dir=tmp_path, device="cpu", clock=clock) as run:
        with run.phase("train") as train:
            for _ in train.iterate(timed_batches(clock, [0], 0.1), samples=1):
                with train.io():
                    clock.advance(0.1)
                    with train.io():
                        clock.advance(0.2)
                with train.compute():
                    clock.advance(0.3)
                    with train.io():
                        clock.advance(0.4)
    phase = summary_file(run)["phases"][0]
    # wall 0.1 (loader) + 0.3 (nested io) + 0.7 (compute holding 0.4 of io) = 1.1 s
    assert phase["wall_s"] == pytest.approx(1.1)
    assert phase["io_s"] == pytest.approx(0.1 + 0.3)  # the outer io window once
    assert phase["compute_s"] == pytest.approx(0.7)  # the io inside compute() is compute
    assert phase["io_fraction"] <= 1.0


def test_nested_io_on_a_device_timer_counts_once(tmp_path, clock):
    timer = FakeEventTimer()
    with perfkit.Run("io-dev", out_dir=tmp_path, device="cpu", clock=clock, device_timer=timer):
        run = perfkit.run._active.active_run()
        assert run is not None
        with run.phase("train") as train:
            for _ in train.iterate(timed_batches(clock, [0], 0.1), samples=1):
                with train.io(), train.io():
                    clock.advance(0.2)
                timer.device_now += 0.5
                clock.advance(0.5)
    phase = summary_file(run)["phases"][0]
    assert phase["wall_s"] == pytest.approx(0.8)
    assert phase["io_s"] == pytest.approx(0.3)  # loader 0.1 + the outer io window 0.2
    assert phase["compute_s"] == pytest.approx(0.5)


# -------------------------------------------------------------- 9: run directory deleted


def test_run_directory_deleted_mid_run_is_recreated_and_said_once(tmp_path, clock, caplog):
    caplog.set_level(logging.WARNING, logger="perfkit")
    with perfkit.Run("gone", out_dir=tmp_path, device="cpu", clock=clock) as run:
        with run.phase("train") as train:
            for _ in train.iterate(range(3), samples=1):
                clock.advance(0.1)
        assert run.run_dir is not None
        shutil.rmtree(run.run_dir)
        with run.phase("train") as train:
            for _ in train.iterate(range(2), samples=1):
                clock.advance(0.1)
    summary = summary_file(run)
    assert summary["status"] == "ok"
    (fault,) = summary["faults"]
    assert "was deleted" in fault and "recreated" in fault
    assert sum("was deleted" in r.getMessage() for r in caplog.records) == 1
    assert (run.run_dir / "meta.json").is_file()
    steps = read_step_rows(run.run_dir / "steps.bin")
    assert len(steps) == 5  # the 3 steps written before the deletion were kept


def test_run_directory_deleted_after_the_last_flush_still_gets_its_summary(tmp_path):
    with perfkit.Run("gone-late", out_dir=tmp_path, device="cpu") as run:
        run.flush()
        assert run.run_dir is not None
        shutil.rmtree(run.run_dir)
    assert summary_file(run)["status"] == "ok"
    assert "was deleted" in summary_file(run)["faults"][0]


# ---------------------------------------------------------------- 12: phases without samples


def test_an_empty_loader_gives_no_throughput_not_zero(tmp_path, clock):
    with perfkit.Run("empty", out_dir=tmp_path, device="cpu", clock=clock) as run:
        with run.phase("train") as train:
            for _ in train.iterate([]):
                pass
            clock.advance(0.5)
        with run.phase("val") as val:
            for _ in val.iterate([1, 2], samples=0):
                clock.advance(0.1)
    summary = summary_file(run)
    for key in ("p_train", "p_core", "p_whole", "p_val_whole", "p_val_core"):
        assert key not in summary, key
    assert summary["train_samples"] == 0
    assert "throughput_whole" not in summary["phases"][0]


# ---------------------------------------------------------------------- 13: timed threads


def test_timed_shared_across_threads_times_each_thread(tmp_path):
    # a enters at 0, b at 0.1; a leaves first at 0.3, b at 0.4: each region is 0.3 s (one start
    # stack for all threads gave a 0.2 s and b 0.4 s)
    region = perfkit.timed("work")
    clock = FakeClock(0.0)
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()

    def thread_a() -> None:
        with region:
            a_in.set()
            b_in.wait()
            clock.advance(0.2)
        a_out.set()

    def thread_b() -> None:
        a_in.wait()
        clock.advance(0.1)
        with region:
            b_in.set()
            a_out.wait()
            clock.advance(0.1)

    with perfkit.Run("threads", out_dir=tmp_path, device="cpu", clock=clock) as run:
        threads = [threading.Thread(target=f) for f in (thread_a, thread_b)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert run.run_dir is not None
    seconds = [
        r["value"]
        for r in read_records(run.run_dir / "records.jsonl")
        if r["name"] == "region/work"
    ]
    assert seconds == pytest.approx([0.3, 0.3])


# -------------------------------------------------------------------- 14: bad arguments


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"flush_interval_s": math.inf}, ValueError, "`flush_interval_s` to be a positive finite"),
        ({"flush_interval_s": 1e-9}, ValueError, "`flush_interval_s` .*at least 0.01"),
        ({"flush_interval_s": "1"}, TypeError, "`flush_interval_s`"),
        ({"dist_timeout_s": math.nan}, ValueError, "`dist_timeout_s`"),
        ({"probes": 5}, TypeError, "`probes`"),
        ({"clock": 5}, TypeError, "`clock`"),
        ({"out_dir": None}, TypeError, "`out_dir`"),
        ({"name": "n" * 300}, ValueError, "`name` to be .*at most 200 bytes"),
        ({"name": 5}, TypeError, "`name`"),
    ],
)
def test_bad_arguments_name_the_argument(tmp_path, kwargs, error, message):
    kwargs = {"name": "r", "out_dir": tmp_path, **kwargs}
    with pytest.raises(error, match=message):
        perfkit.Run(**kwargs)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_mfu_refuses_non_finite_inputs(bad):
    good = {"samples_per_s": 100.0, "peak_flops": 1e12, "flops_per_sample": 1e9}
    for key in good:
        with pytest.raises(ValueError, match=f"`{key}`"):
            perfkit.flops.mfu(**{**good, key: bad})


# ---------------------------------------------------------------------- 15: file modes


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_meta_and_summary_have_the_records_mode(tmp_path, umask):
    old = os.umask(umask)
    try:
        with perfkit.Run("modes", out_dir=tmp_path, device="cpu") as run:
            pass
    finally:
        os.umask(old)
    assert run.run_dir is not None
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in Path(run.run_dir).iterdir()}
    assert modes == dict.fromkeys(
        ("meta.json", "summary.json", "records.jsonl", "steps.bin"), 0o666 & ~umask
    )
