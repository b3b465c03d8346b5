"""Run/Phase arithmetic on a fake clock: every metric checked against hand-worked numbers."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import perfkit
from perfkit.records import read_records
from tests.conftest import FakeClock, FakeEventTimer, read_step_rows, timed_batches


def batch(n: int) -> np.ndarray:
    return np.zeros((n, 3))


def run_epochs(run: perfkit.Run, clock: FakeClock) -> None:
    """2 epochs of 4 train steps (8 samples, IO 0.5 s, compute 1.5 s), each followed by a 1 s gap
    and a val pass of 2 steps (4 samples, IO 0.25 s, compute 0.25 s), then a 1 s gap."""
    for _epoch in range(2):
        with run.phase("train") as train:
            for _ in train.iterate(timed_batches(clock, [batch(8)] * 4, io_s=0.5)):
                clock.advance(1.5)
        clock.advance(1.0)
        with run.phase("val") as val:
            for _ in val.iterate(timed_batches(clock, [batch(4)] * 2, io_s=0.25)):
                clock.advance(0.25)
        clock.advance(1.0)


def test_training_metrics_match_flagperf_definitions(tmp_path, clock):
    with perfkit.Run("train", out_dir=tmp_path, clock=clock, device="cpu") as run:
        clock.advance(2.0)  # model construction before the first phase
        run_epochs(run, clock)
        clock.advance(2.0)  # after training: saving a checkpoint
    s = run.summary()
    # Timeline (s since run start): train1 [2,10], val1 [11,12], train2 [13,21], val2 [22,23],
    # run end 26.
    assert s["e2e_time"] == pytest.approx(26.0)
    # 2 epochs x 4 steps x 8 samples = 64 train samples.
    assert s["train_samples"] == 64
    assert s["train_steps"] == 8
    # p_train = 64 samples / (8 s + 8 s of train loops) = 4.0 samples/s
    assert s["p_train"] == pytest.approx(4.0)
    # p_core = 64 / (8 steps x 1.5 s compute) = 5.333 samples/s
    assert s["p_core"] == pytest.approx(64 / 12)
    # p_whole = 64 / (23 - 2) s: first train start to last val end, evaluation included
    assert s["p_whole"] == pytest.approx(64 / 21)
    # io_fraction = 8 x 0.5 s IO / 16 s train wall = 0.25
    assert s["train_io_fraction"] == pytest.approx(0.25)
    assert s["train_io_s"] == pytest.approx(4.0)
    assert s["train_compute_s"] == pytest.approx(12.0)
    # val: 2 passes x 2 steps x 4 samples = 16 samples over 2 x 1.0 s wall, 2 x 0.5 s compute
    assert s["val_samples"] == 16
    assert s["p_val_whole"] == pytest.approx(8.0)
    assert s["p_val_core"] == pytest.approx(16.0)
    # every train step took 0.5 + 1.5 = 2.0 s
    assert s["train_step_time_p50_s"] == pytest.approx(2.0)
    assert s["train_step_time_p99_s"] == pytest.approx(2.0)
    # no inference phase: its metrics are absent, not zero
    assert not any(k.startswith("p_infer") or k.startswith("infer_") for k in s)
    assert s["status"] == "ok"


def test_inference_metrics_and_absent_training_metrics(tmp_path, clock):
    with perfkit.Run("infer", out_dir=tmp_path, clock=clock, device="cpu") as run:
        with run.phase("infer") as infer:
            for _ in infer.iterate(timed_batches(clock, [batch(256)] * 3, io_s=1.0)):
                clock.advance(3.0)
    s = run.summary()
    # 768 images over 3 x (1 + 3) = 12 s wall and 9 s compute
    assert s["p_infer_whole"] == pytest.approx(64.0)
    assert s["p_infer_core"] == pytest.approx(768 / 9)
    for absent in ("p_whole", "p_train", "p_core", "p_val_whole", "p_val_core"):
        assert absent not in s


def test_step_time_percentiles_interpolate_linearly(tmp_path, clock):
    with perfkit.Run("pct", out_dir=tmp_path, clock=clock, device="cpu") as run:
        with run.phase("train") as train:
            for seconds in train.iterate([1.0, 2.0, 3.0, 4.0], samples=1):
                clock.advance(seconds)
    s = run.summary()
    # sorted [1,2,3,4]: p50 at position 1.5 -> 2.5; p90 at 2.7 -> 3.7; p99 at 2.97 -> 3.97
    assert s["train_step_time_p50_s"] == pytest.approx(2.5)
    assert s["train_step_time_p90_s"] == pytest.approx(3.7)
    assert s["train_step_time_p99_s"] == pytest.approx(3.97)


def test_explicit_windows_split_io_and_compute(tmp_path, clock):
    with perfkit.Run("windows", out_dir=tmp_path, clock=clock, device="cpu") as run:
        with run.phase("train") as train:
            for _ in train.iterate(timed_batches(clock, [batch(2)], io_s=0.3)):
                clock.advance(0.1)  # unmarked: neither IO nor compute once compute() is used
                with train.io():
                    clock.advance(0.2)  # host-to-device copy
                with train.compute():
                    clock.advance(0.5)
                clock.advance(0.05)
    s = run.summary()
    # wall = 0.3 + 0.1 + 0.2 + 0.5 + 0.05 = 1.15; IO = 0.3 + 0.2 = 0.5; compute = 0.5
    assert s["train_step_time_p50_s"] == pytest.approx(1.15)
    assert s["train_io_s"] == pytest.approx(0.5)
    assert s["train_compute_s"] == pytest.approx(0.5)


def test_io_windows_are_cut_out_of_the_implicit_compute_window(tmp_path, clock):
    with perfkit.Run("io-only", out_dir=tmp_path, clock=clock, device="cpu") as run:
        with run.phase("train") as train:
            for _ in train.iterate(timed_batches(clock, [batch(2)] * 2, io_s=0.3)):
                with train.io():
                    clock.advance(0.2)
                clock.advance(0.7)
                with train.io():
                    clock.advance(0.1)
                clock.advance(0.4)
    s = run.summary()
    # per step: IO = 0.3 + 0.2 + 0.1 = 0.6, compute = 0.7 + 0.4 = 1.1; two steps
    assert s["train_io_s"] == pytest.approx(1.2)
    assert s["train_compute_s"] == pytest.approx(2.2)
    assert s["p_core"] == pytest.approx(4 / 2.2)


def test_step_records_are_long_format_base_units(tmp_path, clock):
    with perfkit.Run("records", out_dir=tmp_path, clock=clock, device="cpu") as run:
        with run.phase("train") as train:
            for _ in train.iterate(timed_batches(clock, [batch(8)] * 2, io_s=0.5)):
                clock.advance(1.5)
        run.log(mAP=0.3461)
    assert run.run_dir is not None
    records = list(read_records(run.run_dir / "records.jsonl"))
    assert all(list(r) == list(perfkit.records.RECORD_FIELDS) for r in records)
    assert all(r["step"] is None for r in records)  # steps are in steps.bin, one row each
    # step 0 ends at 2.0 s (0.5 s IO + 1.5 s compute), step 1 at 4.0 s; phase ordinal 0
    assert read_step_rows(run.run_dir / "steps.bin") == [
        {"phase": 0, "step": 0, "t": 2.0, "step_time": 2.0, "io_time": 0.5,
         "compute_time": 1.5, "samples": 8, "tokens": 0},
        {"phase": 0, "step": 1, "t": 4.0, "step_time": 2.0, "io_time": 0.5,
         "compute_time": 1.5, "samples": 8, "tokens": 0},
    ]  # fmt: skip
    by_name = {r["name"]: r for r in records}
    assert by_name["phase_wall"]["value"] == pytest.approx(4.0)
    assert by_name["phase_samples"]["value"] == 16
    assert by_name["mAP"]["value"] == 0.3461
    assert run.summary()["mAP"] == 0.3461
    summary = json.loads((run.run_dir / "summary.json").read_text())
    assert summary["p_train"] == pytest.approx(4.0)
    meta = json.loads((run.run_dir / "meta.json").read_text())
    assert meta["schema_version"] == perfkit.records.SCHEMA_VERSION
    assert meta["world_size"] == 1 and meta["layout"] == "1x1"
    assert meta["perfkit_version"] == perfkit.__version__


def test_device_windows_resolve_lazily_with_one_sync_per_phase(tmp_path, clock):
    timer = FakeEventTimer()
    with perfkit.Run("lazy", out_dir=tmp_path, clock=clock, device_timer=timer) as run:
        with run.phase("train") as train:
            for i, _ in enumerate(train.iterate([batch(4)] * 3)):
                # The host runs ahead; the device spends 2 s on each step's work.
                timer.device_now += 2.0
                if i == 1:
                    # the device has reached step 0's marks only
                    timer.completed = 1
                    run.flush()
                    assert run.run_dir is not None
                    rows = read_step_rows(run.run_dir / "steps.bin")
                    assert [(r["step"], r["compute_time"]) for r in rows] == [(0, 2.0)]
                    assert timer.syncs == 0
            assert timer.syncs == 0  # nothing blocked the host during the steps
    assert timer.syncs == 1  # the one sync at phase end
    s = run.summary()
    # 3 steps x 2 s of device time
    assert s["train_compute_s"] == pytest.approx(6.0)
    assert s["p_core"] == pytest.approx(12 / 6.0)
    assert timer.released == len(timer.marks)  # every event went back to the pool


def test_device_compute_windows_replace_the_implicit_window(tmp_path, clock):
    timer = FakeEventTimer()
    with perfkit.Run("explicit", out_dir=tmp_path, clock=clock, device_timer=timer) as run:
        with run.phase("train") as train:
            with train.compute():  # before the first step: the phase's, not a step's
                timer.device_now += 0.5
            for i, _ in enumerate(train.iterate([batch(4)] * 2)):
                timer.device_now += 3.0  # device work outside the window: not compute
                if i == 0:
                    with train.compute():
                        timer.device_now += 1.25
    # step 0: its window (1.25 s) replaces the implicit one; step 1: implicit window 3.0 s;
    # plus the 0.5 s window outside any step: 1.25 + 3.0 + 0.5 = 4.75 s
    assert run.summary()["train_compute_s"] == pytest.approx(4.75)
    assert run.run_dir is not None
    computes = [r["compute_time"] for r in read_step_rows(run.run_dir / "steps.bin")]
    assert computes == pytest.approx([1.25, 3.0])
    assert timer.released == len(timer.marks)  # the dropped implicit marks went back too


def test_syncing_timer_synchronises_at_every_mark(clock):
    calls = []
    timer = perfkit.timing.SyncingHostTimer(lambda: calls.append(clock()), clock)
    start = timer.mark()
    clock.advance(0.25)
    end = timer.mark()
    assert calls == [100.0, 100.25]
    assert timer.elapsed_s(start, end) == pytest.approx(0.25)


def test_break_counts_the_step_but_a_crash_does_not(tmp_path, clock):
    with perfkit.Run("break", out_dir=tmp_path, clock=clock, device="cpu") as run:
        with run.phase("train") as train:
            for i, _ in enumerate(train.iterate([batch(2)] * 10)):
                clock.advance(1.0)
                if i == 2:
                    break
    assert run.summary()["train_steps"] == 3
    assert run.summary()["train_samples"] == 6


def test_timed_region_records_its_duration(tmp_path, clock):
    @perfkit.timed("preprocess")
    def preprocess(x: float) -> float:
        clock.advance(0.125)
        return x * 2

    assert preprocess(1.0) == 2.0  # outside a run: plain call
    with perfkit.Run("regions", out_dir=tmp_path, clock=clock, device="cpu") as run:
        with run.phase("train") as train:
            for _ in train.iterate([batch(1)] * 2):
                preprocess(1.0)
        with perfkit.timed("save"):
            clock.advance(0.5)
    assert run.run_dir is not None
    regions = [
        (r["name"], r["value"], r["step"], r["phase"])
        for r in read_records(run.run_dir / "records.jsonl")
        if r["name"].startswith("region/")
    ]
    assert regions == [
        ("region/preprocess", 0.125, 0, "train"),
        ("region/preprocess", 0.125, 1, "train"),
        ("region/save", 0.5, None, None),
    ]


def test_e2e_from_process_adds_the_time_before_the_run(tmp_path, clock):
    import time

    import psutil

    before_run = time.time() - psutil.Process().create_time()
    with perfkit.Run("proc", out_dir=tmp_path, clock=clock, e2e_from="process", device="cpu"):
        clock.advance(5.0)
    with perfkit.Run("plain", out_dir=tmp_path, clock=clock, device="cpu") as plain:
        clock.advance(5.0)
    assert plain.summary()["e2e_time"] == pytest.approx(5.0)
    summaries = sorted(tmp_path.glob("proc-*/summary.json"))
    proc_e2e = json.loads(summaries[0].read_text())["e2e_time"]
    # 5 s of run plus the process's age when the run started (at least `before_run`)
    assert proc_e2e >= 5.0 + before_run
    assert proc_e2e < 5.0 + before_run + 60


@settings(max_examples=40, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.integers(1, 64),
            st.floats(0.0, 2.0, allow_nan=False),
            st.floats(0.001, 2.0, allow_nan=False),
        ),
        min_size=1,
        max_size=20,
    )
)
def test_throughputs_equal_their_definitions_for_any_steps(tmp_path_factory, steps):
    clock = FakeClock()
    out = tmp_path_factory.mktemp("prop")

    def loader():
        for n, io_s, _ in steps:
            clock.advance(io_s)
            yield batch(n)

    with perfkit.Run("prop", out_dir=out, clock=clock, device="cpu") as run:
        with run.phase("train") as train:
            for (_, _, compute_s), _b in zip(steps, train.iterate(loader()), strict=True):
                clock.advance(compute_s)
    s = run.summary()
    samples = sum(n for n, _, _ in steps)
    compute = math.fsum(c for _, _, c in steps)
    wall = math.fsum(i + c for _, i, c in steps)
    assert s["train_samples"] == samples
    assert s["p_core"] == pytest.approx(samples / compute, rel=1e-9)
    assert s["p_train"] == pytest.approx(samples / wall, rel=1e-9)
    assert s["p_whole"] == pytest.approx(samples / wall, rel=1e-9)


@pytest.mark.parametrize(
    ("precision", "images_per_s_x10", "peak", "expected"),
    [
        # FlagPerf's ResNet-50 seed table, A100: 12698.7 img/s x 4.12e9 / 312e12 = 0.1677 (16.8 %)
        ("fp16", 126987, 312e12, 0.168),
        # 6091.6 img/s x 4.12e9 / 156e12 (TF32 peak) = 0.1609 (16.1 %)
        ("fp32", 60916, 156e12, 0.161),
    ],
)
def test_run_reproduces_the_seed_mfu(tmp_path, clock, precision, images_per_s_x10, peak, expected):
    with perfkit.Run("mfu", out_dir=tmp_path, clock=clock, device="cpu") as run:
        # FlagPerf's "4.12e9 flops" per image are multiply-adds: 8.24e9 FLOPs in perfkit's unit;
        # the flagperf convention counts one operation per multiply-add again.
        run.set_flops(2 * 4.12e9, dtype=precision, mfu_convention="flagperf", peak_flops=peak)
        with run.phase("infer") as infer:
            for _ in infer.iterate([None], samples=images_per_s_x10):
                clock.advance(10.0)  # 10 s of compute: p_infer_core = images_per_s_x10 / 10
    s = run.summary()
    assert s["p_infer_core"] == pytest.approx(images_per_s_x10 / 10)
    assert round(s["MFU"], 3) == expected
    assert s["mfu_convention"].startswith("flagperf")


def test_set_flops_rejects_bad_input(tmp_path):
    with perfkit.Run("mfu", out_dir=tmp_path, device="cpu") as run:
        with pytest.raises(ValueError, match="argument `flops_per_sample` to be a positive"):
            run.set_flops(0, dtype="fp16")
        with pytest.raises(ValueError, match="Expected argument `peak_flops` to be a positive"):
            run.set_flops(1e9, dtype="fp16", peak_flops=-1)
        with pytest.raises(ValueError, match="Expected argument `mfu_convention` to be one of"):
            run.set_flops(1e9, dtype="fp16", mfu_convention="marketing")
        with pytest.raises(ValueError, match="dtype"):
            run.set_flops(1e9, dtype="fp7")


def test_flops_given_to_the_run_constructor(tmp_path, clock):
    # 1000 samples in 2 s of compute = 500 samples/s; 1e9 FLOPs each on a 1e12 FLOP/s peak:
    # MFU = 1e9 x 500 / 1e12 = 0.5
    run = perfkit.Run(
        "mfu",
        out_dir=tmp_path,
        clock=clock,
        device="cpu",
        config={"precision": "bf16"},
        flops_per_sample=1e9,
        peak_flops=1e12,
    )
    with run, run.phase("infer") as infer:
        for _ in infer.iterate([None], samples=1000):
            clock.advance(2.0)
    assert run.summary()["MFU"] == pytest.approx(0.5)
    assert run.summary()["peak_dtype"] == "bf16"


STEP_KINDS = st.sampled_from(["plain", "io", "compute"])


@settings(max_examples=25, deadline=None)
@given(
    loops=st.lists(
        st.tuples(st.lists(STEP_KINDS, max_size=11), st.booleans()), min_size=1, max_size=4
    ),
    flush_every=st.integers(1, 7),
)
def test_steps_through_a_small_backlog_are_written_and_counted_exactly(
    tmp_path_factory: pytest.TempPathFactory, loops: list[tuple[list[str], bool]], flush_every: int
) -> None:
    """Loops of plain steps, steps with an io() window and steps with a compute() window,
    some left by break, flushed at random points through a backlog of 4 slots (so it wraps
    and fills): steps.bin and the phase's totals hold every step exactly as the fake clock
    made it. Step: 0.5 s waiting for data, then a body of 0.25 s compute (plain), 0.125 s
    io() + 0.25 s (io: io_time 0.625), or 0.25 s in compute() + 0.125 s outside it
    (compute: wall 0.875, compute_time 0.25)."""
    import perfkit.run._phase as phase_module

    clock = FakeClock()
    expected: list[dict[str, float]] = []
    with (
        pytest.MonkeyPatch.context() as patch,
        warnings.catch_warnings(),  # whether the 4 slots fill depends on the flusher thread
    ):
        warnings.simplefilter("ignore", RuntimeWarning)
        patch.setattr(phase_module, "BACKLOG_STEPS", 4)
        out = tmp_path_factory.mktemp("backlog")
        with perfkit.Run("ring", out_dir=out, clock=clock, device="cpu", probes=None) as run:
            with run.phase("train") as train:
                for kinds, left_by_break in loops:
                    batches = timed_batches(clock, [np.zeros((3, 1))] * len(kinds), 0.5)
                    for kind, _ in zip(kinds, train.iterate(batches), strict=False):
                        if kind == "io":
                            with train.io():
                                clock.advance(0.125)
                            clock.advance(0.25)
                        elif kind == "compute":
                            with train.compute():
                                clock.advance(0.25)
                            clock.advance(0.125)
                        else:
                            clock.advance(0.25)
                        wall = {"plain": 0.75, "io": 0.875, "compute": 0.875}[kind]
                        io = 0.625 if kind == "io" else 0.5
                        expected.append(
                            {
                                "step": len(expected),
                                "t": clock() - 100.0,  # the run started at 100.0
                                "step_time": wall,
                                "io_time": io,
                                "compute_time": 0.25,
                                "samples": 3,
                                "tokens": 0,
                            }
                        )
                        if len(expected) % flush_every == 0:
                            run.flush()
                        if left_by_break and len(expected) % 3 == 0:
                            break
                    clock.advance(1.0)  # between loops: no step's time
            # a loop's last step left by break (or zip) counts once the phase has ended
            assert train.steps == len(expected)
            assert train.samples == 3 * len(expected)
            assert train.io_s == sum(e["io_time"] for e in expected)
            assert train.compute_s == 0.25 * len(expected)
            walls = sorted(e["step_time"] for e in expected)
            assert sorted(train._walls()) == walls
    assert run.run_dir is not None
    rows = read_step_rows(run.run_dir / "steps.bin")
    assert [{k: v for k, v in r.items() if k != "phase"} for r in rows] == expected
