"""Sinks of a live Run: TensorBoard event files and MLflow runs read back with tensorboard's
EventAccumulator and MLflow's own client; the rate bound; a failing sink is a recorded fault."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

import perfkit
from perfkit.sinks import MLflow, Sink, TensorBoard
from tests.conftest import FakeClock
from tests.test_analysis import epoch


def sink_run(out: Path, sinks: list[Sink], fail: bool = False) -> perfkit.Run:
    """2 s set-up, 2 epochs (train 8 s: 32 samples, 6 s compute, 2 s IO; val 1 s: 8 samples,
    0.5 s compute), 2 s after: e2e 26 s (tests/test_analysis.py's train_run)."""
    clock = FakeClock()
    run = perfkit.Run(
        "sinks", out_dir=out, clock=clock, device="cpu", probes=None, config={"bs": 8},
        sinks=sinks,
    )  # fmt: skip
    with pytest.raises(RuntimeError) if fail else _nothing():
        with run:
            clock.advance(2.0)
            epoch(run, clock, 1.5)
            epoch(run, clock, 1.5)
            clock.advance(2.0)
            if fail:
                raise RuntimeError("diverged")
    return run


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


class Recording(Sink):
    """A sink that keeps what it was sent."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.calls: list[tuple[str, Any]] = []

    def start(self, run_id: str, name: str, config: Mapping[str, Any]) -> None:
        self.calls.append(("start", name))

    def phase(self, figures: Mapping[str, float], step: int, wall_time: float) -> None:
        self.calls.append(("phase", (next(iter(figures)).split("/")[0], step)))

    def summary(self, summary: Mapping[str, Any], wall_time: float) -> None:
        self.calls.append(("summary", summary["status"]))

    def close(self) -> None:
        self.calls.append(("close", None))


def test_tensorboard_event_files_read_back(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = sink_run(tmp_path, [TensorBoard(tmp_path / "tb", min_interval_s=0)])
    events = EventAccumulator(str(tmp_path / "tb" / run.run_id))
    events.Reload()

    def scalars(tag: str) -> list[tuple[int, float]]:
        return [(e.step, e.value) for e in events.Scalars(tag)]

    # train: 32 samples / 8 s = 4/s, / 6 s compute = 5.333/s, IO 2 / 8 s; val 8 / 1 s, / 0.5 s
    assert scalars("perfkit/train/samples_per_s") == [(0, 4.0), (1, 4.0)]
    core = scalars("perfkit/train/core_samples_per_s")
    assert [c[0] for c in core] == [0, 1] and [c[1] for c in core] == pytest.approx([32 / 6] * 2)
    assert scalars("perfkit/train/io_fraction") == [(0, 0.25), (1, 0.25)]
    assert scalars("perfkit/val/core_samples_per_s") == [(0, 16.0), (1, 16.0)]
    # summary: p_train 64 samples / 16 s of train phases, e2e 26 s
    assert scalars("summary/p_train") == [(0, 4.0)] and scalars("summary/e2e_time") == [(0, 26.0)]
    (text,) = events.Tensors("summary/text_summary")
    assert "| status | ok |" in text.tensor_proto.string_val[0].decode()


def test_mlflow_run_read_back_with_its_client(tmp_path, mlflow_store):
    from mlflow.tracking import MlflowClient

    uri = mlflow_store
    run = sink_run(tmp_path, [MLflow(uri, experiment="perf", min_interval_s=0)])
    failed = sink_run(tmp_path, [MLflow(uri, experiment="perf", min_interval_s=0)], fail=True)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("perf")
    found = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    ok, bad = found[run.run_id], found[failed.run_id]
    assert (ok.info.status, bad.info.status) == ("FINISHED", "FAILED")
    history = client.get_metric_history(ok.info.run_id, "train/samples_per_s")
    assert [(m.step, m.value) for m in history] == [(0, 4.0), (1, 4.0)]
    assert ok.data.metrics["summary/p_core"] == pytest.approx(64 / 12)  # 64 samples, 12 s
    assert ok.data.params == {"bs": "8"}
    assert ok.data.tags["perfkit.status"] == "ok" and bad.data.tags["perfkit.status"] == "failed"
    assert bad.data.tags["perfkit.error"] == "RuntimeError: diverged"


def test_phase_updates_are_rate_bounded(tmp_path):
    every = Recording(min_interval_s=0)
    bounded = Recording(min_interval_s=3600)
    sink_run(tmp_path, [every, bounded])
    phases = [("train", 0), ("val", 0), ("train", 1), ("val", 1)]
    assert every.calls == [
        ("start", "sinks"),
        *[("phase", p) for p in phases],
        ("summary", "ok"),
        ("close", None),
    ]
    # the first phase goes at once; the rest come within the hour: the latest of each name is
    # kept and sent before the summary
    sent = [c[1] for c in bounded.calls if c[0] == "phase"]
    assert sent[0] == ("train", 0) and sorted(sent[1:]) == [("train", 1), ("val", 1)]
    assert bounded.calls[-2:] == [("summary", "ok"), ("close", None)]


class Broken(Recording):
    def __init__(self, where: str) -> None:
        super().__init__(min_interval_s=0)
        self.where = where

    def start(self, run_id: str, name: str, config: Mapping[str, Any]) -> None:
        super().start(run_id, name, config)
        if self.where == "start":
            raise OSError("no route to the tracking server")

    def phase(self, figures: Mapping[str, float], step: int, wall_time: float) -> None:
        super().phase(figures, step, wall_time)
        if self.where == "phase":
            raise ValueError("bad metric")


def test_a_failing_sink_is_a_recorded_fault_not_an_exception(tmp_path):
    at_start, in_phase, fine = Broken("start"), Broken("phase"), Recording(min_interval_s=0)
    # a TensorBoard log folder that cannot be made: a file stands where it should be
    (tmp_path / "blocked").write_text("")
    blocked = TensorBoard(tmp_path / "blocked" / "tb", min_interval_s=0)
    run = sink_run(tmp_path / "runs", [at_start, in_phase, blocked, fine])
    summary = run.summary()
    assert summary["status"] == "ok" and summary["p_train"] == 4.0
    faults = summary["faults"]
    assert len(faults) == 3
    assert "sink Broken failed in start() and was disabled: OSError: no route" in faults[0]
    assert any("sink TensorBoard failed in start()" in f for f in faults)
    assert any("sink Broken failed in phase() and was disabled: ValueError" in f for f in faults)
    assert at_start.calls[-1] == ("close", None) and len(in_phase.calls) == 3  # start, 1, close
    assert len([c for c in fine.calls if c[0] == "phase"]) == 4  # the others go on
    assert run.run_dir is not None
    on_disk = json.loads((run.run_dir / "summary.json").read_text())
    assert on_disk["faults"] == faults


def test_sinks_argument_is_checked():
    with pytest.raises(TypeError, match=r"`sinks` to be a list of perfkit\.sinks\.Sink"):
        perfkit.Run("x", sinks="tensorboard")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`min_interval_s` to be a finite number >= 0"):
        TensorBoard("tb", min_interval_s=-1)
