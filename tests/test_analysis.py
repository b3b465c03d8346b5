"""perfkit.analysis on runs made by real perfkit loops on a fake clock: every number checked
against hand arithmetic."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import perfkit
from perfkit.analysis import (
    chrome_trace,
    compare,
    io_share,
    load,
    mllog_lines,
    plot_run,
    save_plot,
    seed_tables,
    step_times,
    summaries,
)
from perfkit.probes import DeviceSample, Probe
from perfkit.records import STEP_NAMES, RecordError
from tests.conftest import FakeClock, timed_batches

GIB = 2**30
CONFIG = {"precision": "fp32", "bs": 8, "lr": 0.04}


def batch(n: int) -> np.ndarray:
    return np.zeros((n, 3))


def epoch(run: perfkit.Run, clock: FakeClock, compute_s: float) -> None:
    """A train phase of 4 steps (8 samples, IO 0.5 s, compute ``compute_s``), a 1 s gap, a val
    phase of 2 steps (4 samples, IO 0.25 s, compute 0.25 s), mAP logged, a 1 s gap."""
    with run.phase("train") as train:
        for _ in train.iterate(timed_batches(clock, [batch(8)] * 4, io_s=0.5)):
            clock.advance(compute_s)
    clock.advance(1.0)
    with run.phase("val") as val:
        for _ in val.iterate(timed_batches(clock, [batch(4)] * 2, io_s=0.25)):
            clock.advance(0.25)
    run.log(mAP=0.3461)
    clock.advance(1.0)


def train_run(out: Path, name: str, compute_s: float = 1.5, **config: object) -> Path:
    """2 s set-up, 2 epochs, 2 s after. With compute_s = 1.5: train [2,10], val [11,12],
    train [13,21], val [22,23], end 26 s."""
    clock = FakeClock()
    with perfkit.Run(
        name, out_dir=out, clock=clock, device="cpu", probes=None, config={**CONFIG, **config}
    ) as run:
        clock.advance(2.0)
        epoch(run, clock, compute_s)
        epoch(run, clock, compute_s)
        clock.advance(2.0)
    assert run.run_dir is not None
    return run.run_dir


def infer_run(out: Path, name: str = "infer") -> Path:
    """3 steps of 256 images, IO 1 s and compute 3 s each: 12 s wall, 9 s compute."""
    clock = FakeClock()
    with perfkit.Run(
        name,
        out_dir=out,
        clock=clock,
        device="cpu",
        probes=None,
        config={"precision": "fp16", "bs": 256},
        flops_per_sample=1e10,
        peak_flops=1e12,
    ) as run:
        with run.phase("infer") as infer:
            for _ in infer.iterate(timed_batches(clock, [batch(256)] * 3, io_s=1.0)):
                clock.advance(3.0)
        run.log(acc_infer=0.7623, acc_val=0.7619)
    assert run.run_dir is not None
    return run.run_dir


def partial_run(out: Path) -> Path:
    """A run killed in its second train phase after 2 steps: the run directory as the killed
    process left it (meta.json and the flushed records, no summary.json, a torn last line)."""
    clock = FakeClock()
    snapshot = out / "killed"
    with perfkit.Run(
        "killed", out_dir=out / "live", clock=clock, device="cpu", probes=None, config=CONFIG
    ) as run:
        clock.advance(2.0)
        epoch(run, clock, 1.5)  # train [2,10] 32 samples, val [11,12] 8 samples, mAP logged
        with run.phase("train") as train:  # starts at 13
            for i, _ in enumerate(train.iterate(timed_batches(clock, [batch(8)] * 4, io_s=0.5))):
                clock.advance(1.5)
                if i == 2:  # steps 0 and 1 ended at 15 and 17; step 2 is running
                    run.flush()
                    assert run.run_dir is not None
                    shutil.copytree(run.run_dir, snapshot)
    with open(snapshot / "records.jsonl", "a", encoding="utf-8") as handle:
        handle.write('{"run_id": "killed", "rank": 0, "na')  # the write the kill interrupted
    with open(snapshot / "steps.bin", "ab") as handle:
        handle.write(b"\x00" * 20)  # and a torn step row: less than one 56-byte row
    assert not (snapshot / "summary.json").exists()
    return snapshot


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("runs")
    return {
        "slow": train_run(out / "a", "slow"),
        "fast": train_run(out / "b", "fast", compute_s=0.5, fix_hp="bs=8,lr=0.08"),
        "infer": infer_run(out / "c"),
        "partial": partial_run(out / "d"),
    }


# -------------------------------------------------------------------------------- load


def test_load_wide_and_long_hold_the_same_records(runs):
    """The wide frame (a row per step) and the long one (a record per step quantity) carry the
    same events and the same step figures, which are step_times()'s."""
    paths = list(runs.values())
    wide, long = load(paths), load(paths, long=True)
    keys = ["run_id", "rank", "phase", "step", "t"]
    on_steps = wide["name"] == "step"
    assert on_steps.sum() == len(step_times(paths)) > 0
    events = wide[~on_steps].drop(columns=list(STEP_NAMES)).reset_index(drop=True)
    long_events = long[~long["name"].isin(STEP_NAMES)].reset_index(drop=True)
    assert events.astype(str).equals(long_events.astype(str))
    assert wide.loc[~on_steps, list(STEP_NAMES)].isna().all().all()
    steps = wide[on_steps].reset_index(drop=True)
    for quantity in STEP_NAMES:
        rows = long[long["name"] == quantity].reset_index(drop=True)
        assert rows["value"].tolist() == steps[quantity].tolist()
        assert rows[keys].astype(str).equals(steps[keys].astype(str))
    assert set(long.loc[long["name"] == "samples", "unit"]) == {"samples"}
    assert sorted(steps["step_time"]) == sorted(step_times(paths)["step_time"])
    assert isinstance(steps["phase"].dtype, pd.CategoricalDtype)


# -------------------------------------------------------------------------------- summaries


def test_summaries_have_config_and_every_summary_metric(runs):
    table = summaries([runs["slow"], runs["fast"]]).set_index("name")
    slow, fast = table.loc["slow"], table.loc["fast"]
    assert slow["status"] == "ok" and slow["layout"] == "1x1" and slow["world_size"] == 1
    assert slow["precision"] == "fp32" and slow["bs"] == 8 and slow["config.lr"] == 0.04
    assert slow["fix_hp"] == "bs=8,lr=0.04"  # built from bs and lr
    assert fast["fix_hp"] == "bs=8,lr=0.08"  # config["fix_hp"] wins
    # 64 samples over 2 x 8 s of train loops; 8 steps x 1.5 s compute; 21 s from 2 to 23
    assert slow["p_train"] == pytest.approx(4.0)
    assert slow["p_core"] == pytest.approx(64 / 12)
    assert slow["p_whole"] == pytest.approx(64 / 21)
    assert slow["e2e_time"] == pytest.approx(26.0)
    assert slow["mAP"] == pytest.approx(0.3461)
    # fast: steps of 0.5 + 0.5 s -> 2 x 4 s train loops, 4 s compute, e2e 2+4+1+1+1+4+1+1+1+2
    assert fast["p_train"] == pytest.approx(8.0)
    assert fast["p_core"] == pytest.approx(16.0)
    assert fast["e2e_time"] == pytest.approx(18.0)


def test_partial_run_is_marked_and_rebuilt_from_records(runs):
    (row,) = summaries(runs["partial"]).to_dict(orient="records")
    assert row["status"] == "partial"
    # train: 32 samples in [2,10] plus 2 steps x 8 in the open phase (13 to 17)
    assert row["train_samples"] == 48 and row["train_steps"] == 6
    assert row["train_wall_s"] == pytest.approx(8.0 + 4.0)
    assert row["p_train"] == pytest.approx(48 / 12)
    assert row["p_core"] == pytest.approx(48 / (6 * 1.5))
    assert row["train_io_fraction"] == pytest.approx(6 * 0.5 / 12)
    # first train start (2) to the end of the open phase's last step (17)
    assert row["p_whole"] == pytest.approx(48 / 15)
    assert row["val_samples"] == 8 and row["p_val_whole"] == pytest.approx(8.0)
    assert row["e2e_time"] == pytest.approx(17.0)  # the last record: a lower bound
    assert row["mAP"] == pytest.approx(0.3461)


def test_phases_and_io_share(runs):
    phases = io_share([runs["slow"], runs["partial"]])
    slow = phases[phases["run"] == runs["slow"].name]
    assert slow["phase"].tolist() == ["train", "val", "train", "val"]
    assert slow["index"].tolist() == [0, 0, 1, 1]
    assert slow["start_t"].tolist() == pytest.approx([2, 11, 13, 22])
    assert slow["end_t"].tolist() == pytest.approx([10, 12, 21, 23])
    # train: 4 x 0.5 s IO / 8 s; val: 2 x 0.25 s / 1 s
    assert slow["io_share"].tolist() == pytest.approx([0.25, 0.5, 0.25, 0.5])
    killed = phases[phases["run"] == "killed"]
    assert killed["complete"].tolist() == [True, True, False]
    open_phase = killed.iloc[-1]
    assert (open_phase["kind"], open_phase["index"], open_phase["samples"]) == ("train", 1, 16)
    assert open_phase["start_t"] == pytest.approx(13.0)
    assert open_phase["io_share"] == pytest.approx(1.0 / 4.0)


def test_step_times_per_phase(runs):
    steps = step_times(runs["slow"])
    assert len(steps) == 2 * (4 + 2)
    train = steps[steps["phase"] == "train"]
    assert train["index"].tolist() == [0] * 4 + [1] * 4
    assert train["start_t"].tolist() == pytest.approx([2, 4, 6, 8, 13, 15, 17, 19])
    assert train["step_time"].tolist() == pytest.approx([2.0] * 8)
    assert train["io_time"].tolist() == pytest.approx([0.5] * 8)
    assert train["compute_time"].tolist() == pytest.approx([1.5] * 8)
    val = steps[steps["phase"] == "val"]
    assert val["t"].tolist() == pytest.approx([11.5, 12.0, 22.5, 23.0])
    assert val["samples"].tolist() == [4] * 4


# -------------------------------------------------------------------------------- tables


def test_seed_tables_per_kind_with_formatted_cells(runs):
    tables = seed_tables([runs["slow"], runs["infer"], runs["partial"]])
    # no MFU or acc column: no training run has them
    assert list(tables["train"].columns) == [
        "run", "config", "precision", "fix_hp", "e2e_time", "p_whole", "p_train", "p_core",
        "mAP", "mem", "status",
    ]  # fmt: skip
    train = tables["train"].set_index("status")
    ok = train.loc["ok"]
    # 26.0 s; 64/21 = 3.05; 64/16 = 4.0; 64/12 = 5.33; no device memory probe: "/"
    assert ok[["config", "precision", "fix_hp", "e2e_time", "p_whole", "p_train"]].tolist() == [
        "1x1", "fp32", "bs=8,lr=0.04", "26.0", "3.05", "4.0",
    ]  # fmt: skip
    assert ok[["p_core", "mAP", "mem"]].tolist() == ["5.33", "0.3461", "/"]
    partial = train.loc["partial"]
    assert partial[["e2e_time", "p_train", "p_core", "p_whole"]].tolist() == [
        "17.0", "4.0", "5.33", "3.2",  # 48/12, 48/9, 48/15
    ]  # fmt: skip
    (infer,) = tables["infer"].to_dict(orient="records")
    # 768 images / 12 s = 64.0; / 9 s = 85.3; MFU = 1e10 FLOPs x 85.33/s / 1e12 FLOP/s = 85.3%
    assert infer["p_infer_whole"] == "64.0" and infer["p_infer_core"] == "85.3"
    assert infer["p_val_whole"] == "/" and infer["p_val_core"] == "/"
    assert infer["MFU"] == "85.3%"
    assert infer["acc"] == "76.2/76.2"  # infer/val top-1 in percent
    assert infer["fix_hp"] == "bs=256" and infer["precision"] == "fp16"
    assert "mAP" not in infer  # no inference run logged mAP


def test_compare_ratios(runs):
    frame = compare(runs["slow"], runs["fast"])
    slow, fast = runs["slow"].name, runs["fast"].name
    assert list(frame.columns) == [slow, fast, f"{fast}/baseline"]
    ratio = frame[f"{fast}/baseline"]
    assert ratio["p_train"] == pytest.approx(8.0 / 4.0)
    assert ratio["p_core"] == pytest.approx(16.0 / (64 / 12))
    assert ratio["e2e_time"] == pytest.approx(18.0 / 26.0)
    assert ratio["mAP"] == pytest.approx(1.0)
    assert frame.loc["status", fast] == "ok" and np.isnan(ratio["status"])
    assert frame.index[0] == "status"
    assert list(frame.index).index("e2e_time") < list(frame.index).index("train_samples")
    with pytest.raises(ValueError, match="at least one run besides the baseline"):
        compare(runs["slow"])
    with pytest.raises(ValueError, match="holds 5 runs; give one run directory"):
        compare(runs["slow"].parent.parent, runs["fast"])  # a, b, c, d/live, d/killed


def test_a_run_killed_before_any_record(runs, tmp_path):
    started = tmp_path / "started"
    started.mkdir()
    shutil.copy(runs["slow"] / "meta.json", started)
    (row,) = seed_tables(started)["none"].to_dict(orient="records")  # no phase: not inference
    assert row["status"] == "partial" and row["e2e_time"] == "/" and row["config"] == "1x1"
    assert step_times(started).empty and io_share(started).empty
    validate_trace(chrome_trace(started))
    assert len(plot_run(started).axes) == 3
    keys = [e["key"] for e in parse_mllog(mllog_lines(started))]
    assert keys[:2] == ["cache_clear", "init_start"] and keys[-1] == "run_stop"


def test_not_perfkit_files_are_refused(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "meta.json").write_text("[1, 2]")
    with pytest.raises(RecordError, match=r"meta\.json is not a perfkit metadata file"):
        summaries(bad)
    (bad / "meta.json").write_text("{}")
    (bad / "summary.json").write_text("not json")
    with pytest.raises(RecordError, match=r"summary\.json is not a perfkit JSON file"):
        summaries(bad)


# -------------------------------------------------------------------------------- plot


class CardProbe(Probe):
    """A stand-in accelerator using 10 GiB of 32 GiB."""

    name = "analysis-card"
    kind = "device"

    def is_available(self) -> bool:
        return True

    def sample(self) -> list[DeviceSample]:
        return [
            DeviceSample(
                "analysis-card",
                "card:0",
                "Test Card",
                memory_used_bytes=10 * GIB,
                memory_total_bytes=32 * GIB,
                power_w=250.0,
            )
        ]


@pytest.fixture(scope="module")
def probed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    clock = FakeClock()
    with perfkit.Run(
        "probed",
        out_dir=tmp_path_factory.mktemp("probed"),
        clock=clock,
        device="cpu",
        probes=[CardProbe()],
        sample_interval_s=0.01,
    ) as run:
        with run.phase("train") as train:
            for _ in train.iterate(timed_batches(clock, [batch(2)] * 3, io_s=0.1)):
                clock.advance(0.4)
                time.sleep(0.02)  # two sampling intervals
        with perfkit.timed("checkpoint"):
            clock.advance(0.5)
    assert run.run_dir is not None
    return run.run_dir


def test_plot_has_the_three_axes_and_renders(probed, tmp_path):
    figure = plot_run(probed)
    memory, steps, throughput = figure.axes
    assert [ax.get_title(loc="left") for ax in figure.axes] == [
        "Memory per device", "Step time: IO and compute", "Throughput",
    ]  # fmt: skip
    assert memory.get_ylabel() == "GiB" and steps.get_ylabel() == "ms per step"
    assert throughput.get_ylabel() == "samples/s"
    assert throughput.get_xlabel() == "time since run start (s)"
    # 10 GiB used of 32: the capacity (more than 1.5x the use) named in the label, no line
    (card,) = [line for line in memory.get_lines() if line.get_label() == "card:0 of 32.0 GiB"]
    assert set(card.get_ydata()) == {10.0}  # 10 GiB used throughout
    step_line = next(line for line in steps.get_lines() if line.get_label() == "step")
    # each step: IO 0.1 s + compute 0.4 s = 500 ms, drawn from its start to its end
    assert np.nanmax(step_line.get_ydata()) == pytest.approx(500.0)
    assert np.nanmin(step_line.get_xdata()) == pytest.approx(0.0)
    assert np.nanmax(step_line.get_xdata()) == pytest.approx(1.5)
    rate = next(line for line in throughput.get_lines() if line.get_label() == "train per step")
    assert np.nanmax(rate.get_ydata()) == pytest.approx(2 / 0.5)  # 2 samples per 0.5 s

    out = save_plot(probed, tmp_path / "run.png")
    import matplotlib.image

    pixels = matplotlib.image.imread(out)
    assert pixels.shape[:2] == (900, 1200)  # 9 x 12 inches at 100 dpi
    assert pixels[..., :3].std() > 0.05  # not a blank image


# -------------------------------------------------------------------------------- trace

REQUIRED = {
    "X": {"name", "ph", "pid", "tid", "ts", "dur"},
    "C": {"name", "ph", "pid", "ts", "args"},
    "i": {"name", "ph", "pid", "tid", "ts", "s"},
    "M": {"name", "ph", "pid", "args"},
}


def validate_trace(trace: dict) -> list[dict]:
    """Check the Trace Event Format's JSON object form; returns the events."""
    assert trace["displayTimeUnit"] == "ms"
    events = trace["traceEvents"]
    json.loads(json.dumps(trace, allow_nan=False))  # plain JSON, no NaN
    for event in events:
        assert REQUIRED[event["ph"]] <= event.keys(), event
        assert isinstance(event["pid"], int)
        if "tid" in event:
            assert isinstance(event["tid"], int)
        for key in ("ts", "dur"):
            if key in event:
                assert isinstance(event[key], (int, float)) and event[key] >= 0, event
    return events


def test_trace_events(runs, probed, tmp_path):
    events = validate_trace(chrome_trace(runs["slow"]))
    phases = [e for e in events if e.get("cat") == "phase"]
    steps = [e for e in events if e.get("cat") == "step"]
    assert [(p["name"], p["ts"], p["dur"]) for p in phases] == [
        ("train", 2e6, 8e6), ("val", 11e6, 1e6), ("train", 13e6, 8e6), ("val", 22e6, 1e6),
    ]  # fmt: skip
    assert len(steps) == 12
    for step in steps:  # nested in the phase of its name
        assert any(
            p["name"] == step["name"].split()[0]
            and p["ts"] <= step["ts"]
            and step["ts"] + step["dur"] <= p["ts"] + p["dur"]
            for p in phases
        ), step
    first_io, first_compute = (
        next(e for e in events if e.get("cat") == cat) for cat in ("io", "compute")
    )
    # step 0 of train: 2 s to 4 s, IO 0.5 s first, then 1.5 s compute
    assert (first_io["ts"], first_io["dur"]) == (2e6, 0.5e6)
    assert (first_compute["ts"], first_compute["dur"]) == (2.5e6, 1.5e6)
    assert first_io["tid"] != first_compute["tid"] != steps[0]["tid"]
    (logged, _) = [e for e in events if e["ph"] == "i"]
    assert logged["name"] == "mAP" and logged["args"]["value"] == 0.3461
    names = {e["args"]["name"] for e in events if e["name"] == "process_name"}
    assert names == {"rank 0"}

    events = validate_trace(chrome_trace(probed))
    counters = [e for e in events if e["ph"] == "C"]
    assert {"memory_used_bytes card:0", "power_w card:0"} <= {c["name"] for c in counters}
    assert all(c["args"]["value"] == 10 * GIB for c in counters if "memory_used" in c["name"])
    (region,) = [e for e in events if e.get("cat") == "region"]
    assert (region["name"], region["ts"], region["dur"]) == ("checkpoint", 1.5e6, 0.5e6)

    events = validate_trace(chrome_trace(runs["partial"]))
    open_phase = [e for e in events if e.get("cat") == "phase"][-1]
    assert open_phase["args"]["complete"] is False
    assert (open_phase["ts"], open_phase["dur"]) == (13e6, 4e6)


# -------------------------------------------------------------------------------- mllog


def parse_mllog(lines: list[str]) -> list[dict]:
    assert all(line.startswith(":::MLLOG ") for line in lines)
    return [json.loads(line.removeprefix(":::MLLOG ")) for line in lines]


def test_mllog_events_in_order(runs):
    entries = parse_mllog(mllog_lines(runs["slow"]))
    meta = json.loads((runs["slow"] / "meta.json").read_text())
    from datetime import datetime

    start_ms = datetime.fromisoformat(meta["started_at"]).timestamp() * 1000
    intervals = [
        (e["key"], e["metadata"].get("epoch_num"), e["time_ms"] - round(start_ms))
        for e in entries
        if e["event_type"] != "POINT_IN_TIME"
    ]
    assert intervals == [
        ("init_start", None, 0),
        ("init_stop", None, 2000),
        ("run_start", None, 2000),
        ("epoch_start", 1, 2000),
        ("epoch_stop", 1, 10000),
        ("eval_start", 1, 11000),
        ("eval_stop", 1, 12000),
        ("epoch_start", 2, 13000),
        ("epoch_stop", 2, 21000),
        ("eval_start", 2, 22000),
        ("eval_stop", 2, 23000),
        ("run_stop", None, 26000),
    ]
    points = {e["key"]: e for e in entries if e["event_type"] == "POINT_IN_TIME"}
    assert points["global_batch_size"]["value"] == 8  # bs 8 x world size 1
    assert points["train_samples"]["value"] == 32 and points["eval_samples"]["value"] == 8
    accuracy = [e for e in entries if e["key"] == "eval_accuracy"]
    assert [(e["value"], e["metadata"]["epoch_num"]) for e in accuracy] == [
        (0.3461, 1),
        (0.3461, 2),
    ]
    assert entries[-1]["metadata"]["status"] == "success"
    assert all(e["namespace"] == "" for e in entries)
    # file and lineno: the line of perfkit that logged the event, as mllog records a call site
    source = (Path(perfkit.__file__).parent / "analysis" / "_mllog.py").read_text().splitlines()
    for e in entries:
        assert e["metadata"]["file"] == "perfkit/analysis/_mllog.py"
        assert "mllogger." in source[e["metadata"]["lineno"] - 1]

    killed = parse_mllog(mllog_lines(runs["partial"]))
    assert killed[-1]["key"] == "run_stop" and killed[-1]["metadata"]["status"] == "aborted"
    # the open epoch 2 has a start and no stop
    assert [e["key"] for e in killed if e["metadata"].get("epoch_num") == 2] == ["epoch_start"]
