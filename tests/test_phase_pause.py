"""A phase of another kind inside a running phase pauses it: an evaluation inside a training
epoch is left out of the train phase's wall, IO, compute and step times (hand-worked on a
fake clock), kept in p_whole, and rebuilt from the records the same."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import perfkit
from perfkit.analysis._read import read_run
from perfkit.records import read_records
from tests.conftest import FakeClock, FakeEventTimer, assert_rebuilt_equals_live, timed_batches

REPO = Path(__file__).resolve().parent.parent


def batch(n: int) -> np.ndarray:
    return np.zeros((n, 3))


def evaluate(run: perfkit.Run, clock: FakeClock) -> perfkit.Phase:
    """A val phase of 2 steps of 4 samples: IO 0.25 s and a body of 1.0 s each (2.5 s)."""
    with run.phase("val") as val:
        for _ in val.iterate(timed_batches(clock, [batch(4)] * 2, io_s=0.25)):
            clock.advance(1.0)
    return val


def test_an_evaluation_inside_a_train_step_is_left_out_of_it(tmp_path, clock: FakeClock):
    with perfkit.Run("pause", out_dir=tmp_path, clock=clock, device="cpu", probes=None) as run:
        with run.phase("train") as train:
            # 4 steps of 8 samples, IO 0.5 s, body 2.0 s; step 1's body evaluates in its middle
            for i, _ in enumerate(train.iterate(timed_batches(clock, [batch(8)] * 4, io_s=0.5))):
                clock.advance(1.0)
                if i == 1:
                    with train.io():  # an IO window cut by the evaluation: 0.2 + 0.3 s
                        clock.advance(0.2)
                        val = evaluate(run, clock)
                        clock.advance(0.3)
                clock.advance(1.0)
    s = run.summary()
    # train: 4 x (0.5 + 2.0) = 10 s, + 0.5 s of IO in step 1; the 2.5 s evaluation left out
    assert train.paused_s == pytest.approx(2.5)
    assert s["train_wall_s"] == pytest.approx(10.5)
    assert s["train_io_s"] == pytest.approx(4 * 0.5 + 0.5)
    assert s["train_compute_s"] == pytest.approx(4 * 2.0)
    assert s["p_train"] == pytest.approx(32 / 10.5)
    assert s["p_core"] == pytest.approx(32 / 8.0)
    steps = read_run(run.run_dir).steps
    train_steps = steps[steps["phase"] == "train"]
    # step 1: 2.5 + 0.5 s of IO, not 5.5 s; its end is the clock's, after the evaluation
    assert list(train_steps["step_time"]) == pytest.approx([2.5, 3.0, 2.5, 2.5])
    assert list(train_steps["io_time"]) == pytest.approx([0.5, 1.0, 0.5, 0.5])
    # val: 2 x (0.25 + 1.0)
    assert (s["val_samples"], s["val_wall_s"]) == (8, pytest.approx(2.5))
    assert val.wall_s == pytest.approx(2.5)
    # p_whole: 32 samples over the train phase's whole 13 s, the evaluation in it
    assert s["p_whole"] == pytest.approx(32 / 13.0)
    assert_rebuilt_equals_live(run.run_dir)


def test_a_pause_between_steps_and_in_the_wait_for_data(tmp_path, clock: FakeClock):
    def loader():
        for i in range(3):
            clock.advance(0.5)
            if i == 1:  # the data pipeline evaluates (in next(), so in step 1's IO)
                evaluate(run, clock)
            yield batch(2)

    with perfkit.Run("pause", out_dir=tmp_path, clock=clock, device="cpu", probes=None) as run:
        with run.phase("train") as train:
            evaluate(run, clock)  # before the loop: in the phase, in no step
            for _ in train.iterate(loader()):
                clock.advance(1.0)
            clock.advance(0.1)  # after the loop
    s = run.summary()
    # 3 steps of 0.5 s IO + 1.0 s body, + 0.1 s after the loop; two evaluations of 2.5 s out
    assert train.paused_s == pytest.approx(5.0)
    assert s["train_wall_s"] == pytest.approx(4.6)
    assert s["train_io_s"] == pytest.approx(1.5)
    assert s["train_compute_s"] == pytest.approx(3.0)
    assert s["val_wall_s"] == pytest.approx(5.0) and s["val_steps"] == 4
    assert_rebuilt_equals_live(run.run_dir)


def test_compute_windows_are_cut_on_a_device(tmp_path, clock: FakeClock):
    timer = FakeEventTimer()
    run = perfkit.Run(
        "pause", out_dir=tmp_path, clock=clock, device_timer=timer, device="cpu", probes=None
    )
    with run:
        with run.phase("train") as train:
            for _ in train.iterate([batch(8)] * 2):
                with train.compute():  # 1 s on the device, the evaluation's 2 s not counted
                    timer.device_now += 0.5
                    with run.phase("val"):
                        timer.device_now += 2.0
                        clock.advance(2.0)
                    timer.device_now += 0.5
    s = run.summary()
    assert s["train_compute_s"] == pytest.approx(2 * 1.0)
    assert s["train_wall_s"] == pytest.approx(0.0)
    assert train.paused_s == pytest.approx(4.0)


def test_a_phase_of_the_same_kind_still_cannot_nest(tmp_path, clock: FakeClock):
    with perfkit.Run("pause", out_dir=tmp_path, clock=clock, device="cpu", probes=None) as run:
        with run.phase("train"), run.phase("val"):
            with pytest.raises(perfkit.RunError, match="cannot pause one of its own kind"):
                run.phase("train").__enter__()
        with run.phase("infer") as infer:  # the stack unwound: a new phase starts plainly
            pass
    assert infer.paused_s == 0.0
    assert [p["kind"] for p in run.summary()["phases"]] == ["train", "val", "infer"]


def test_a_run_stopped_inside_a_nested_phase_ends_both(tmp_path, clock: FakeClock):
    run = perfkit.Run("pause", out_dir=tmp_path, clock=clock, device="cpu", probes=None)
    run.start()
    train = run.phase("train").__enter__()
    clock.advance(1.0)
    run.phase("val").__enter__()
    clock.advance(2.0)
    summary = run.stop()
    assert summary["status"] == "ok"
    assert summary["train_wall_s"] == pytest.approx(1.0) and train.paused_s == pytest.approx(2.0)
    assert summary["val_wall_s"] == pytest.approx(2.0)


def test_energy_and_power_of_a_paused_phase(tmp_path):
    from tests.test_run_probes import CardProbe

    card = CardProbe()

    def settle() -> None:  # the sampler (every 10 ms) reads the card's new counter
        time.sleep(0.15)

    with perfkit.Run(
        "energy", out_dir=tmp_path, device="cpu", probes=[card], sample_interval_s=0.01
    ) as run:
        settle()
        with run.phase("train") as train_phase:
            for _ in train_phase.iterate([batch(4)]):  # energy per sample needs samples
                card.energy += 100.0
                settle()
                with run.phase("val") as val_phase:
                    for _ in val_phase.iterate([batch(2)]):
                        card.energy += 1000.0
                        settle()
                card.energy += 10.0
                settle()
    s = run.summary()
    # the card's counter rose 100 + 10 J in training, 1000 J in the evaluation inside it
    assert s["train_energy_j"] == pytest.approx(110.0)
    assert s["val_energy_j"] == pytest.approx(1000.0)
    train, val = s["phases"]
    # power over each phase's span: the train phase's samples include those before the
    # evaluation (they were once dropped at the inner phase's end)
    power = [r["t"] for r in read_records(run.run_dir / "records.jsonl") if r["name"] == "power_w"]
    inside = [t for t in power if train["start_t"] <= t <= train["end_t"]]
    assert train["devices"][0]["samples"] == len(inside) > val["devices"][0]["samples"]


def test_a_run_killed_in_a_paused_phase_is_rebuilt_as_the_live_summary(tmp_path):
    """SIGKILL in the train phase after an evaluation inside it: the summary rebuilt from the
    records (the train phase left open) equals the live one taken just before the kill."""
    script = textwrap.dedent(
        f"""
        import json, os, signal
        from pathlib import Path
        import numpy as np
        import perfkit
        from tests.conftest import FakeClock
        clock = FakeClock()
        out = Path({str(tmp_path)!r})
        with perfkit.Run("killed", out_dir=out, clock=clock, device="cpu", probes=None) as run:
            with run.phase("train") as train:
                for i, _ in enumerate(train.iterate([np.zeros((4, 3))] * 4)):
                    if i == 2:  # steps 0 and 1 ended, the clock at step 1's end
                        live = json.dumps(run.summary(), default=str)
                        (out / "live.json").write_text(live)
                        run.flush()
                        os.kill(os.getpid(), signal.SIGKILL)
                    clock.advance(1.0)
                    if i == 1:
                        with run.phase("val") as val:
                            for _ in val.iterate([np.zeros((2, 3))] * 2):
                                clock.advance(0.75)
                        clock.advance(0.5)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, timeout=120)
    assert proc.returncode == -signal.SIGKILL
    (run_dir,) = tmp_path.glob("killed-*")
    assert not (run_dir / "summary.json").exists()
    live = json.loads((tmp_path / "live.json").read_text())
    # train: step 0 1.0 s, step 1 1.0 + 0.5 s; the 1.5 s evaluation in step 1 left out
    assert live["train_wall_s"] == pytest.approx(2.5) and live["train_samples"] == 8
    assert live["val_wall_s"] == pytest.approx(1.5)
    assert_rebuilt_equals_live(run_dir, live)
