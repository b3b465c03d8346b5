"""Bad input, crash safety, killed processes, real clocks and a real PyTorch loop."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import perfkit
from perfkit.records import RecordError, read_records
from tests.conftest import FakeClock, read_step_rows

REPO = Path(__file__).resolve().parents[1]


def step_records(run_dir: Path) -> list[dict]:
    return read_step_rows(run_dir / "steps.bin")


# ---------------------------------------------------------------------------- bad input


def test_runs_do_not_nest(tmp_path):
    with perfkit.Run("outer", out_dir=tmp_path, device="cpu"):
        with pytest.raises(perfkit.RunError, match="runs do not nest"):
            perfkit.Run("inner", out_dir=tmp_path, device="cpu").start()
    # the outer run ended cleanly, so a new run may start
    with perfkit.Run("after", out_dir=tmp_path, device="cpu"):
        pass


def test_phase_outside_its_run(tmp_path):
    run = perfkit.Run("r", out_dir=tmp_path, device="cpu")
    with pytest.raises(perfkit.RunError, match="has not started"):
        run.phase("train")
    with run:
        phase = run.phase("train")
    with pytest.raises(perfkit.RunError, match="has ended"):
        run.phase("train")
    with pytest.raises(perfkit.RunError, match="after run 'r' ended"), phase:
        pass


def test_phase_methods_need_an_active_phase(tmp_path):
    with perfkit.Run("r", out_dir=tmp_path, device="cpu") as run:
        phase = run.phase("val")
        with pytest.raises(perfkit.RunError, match="iterate\\(\\) used on phase 'val'"):
            phase.iterate([1])
        with phase:
            pass
        with pytest.raises(perfkit.RunError, match="which has ended"), phase.compute():
            pass
        later = run.phase("val")
        window = later.compute()  # taken before the phase starts: refused when opened
        with pytest.raises(perfkit.RunError, match="which has not started"), window:
            pass


def test_compute_cannot_be_reentered(tmp_path):
    with perfkit.Run("r", out_dir=tmp_path, device="cpu") as run, run.phase("train") as train:
        with train.compute(), pytest.raises(perfkit.RunError, match="re-entered"):
            with train.compute():
                pass


def test_iterate_rejects_a_non_iterable(tmp_path):
    with perfkit.Run("r", out_dir=tmp_path, device="cpu") as run, run.phase("train") as train:
        with pytest.raises(TypeError, match=r"needs an iterable .* got int"):
            train.iterate(42)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="argument `samples` to be a non-negative int"):
            train.iterate([1], samples=-1)


def test_unknown_phase_kind_and_overlapping_phases(tmp_path):
    with perfkit.Run("r", out_dir=tmp_path, device="cpu") as run:
        with pytest.raises(ValueError, match=r"`kind` to be one of .*'train'.* but got 'eval'"):
            run.phase("eval")
        with run.phase("train"), pytest.raises(perfkit.RunError, match="do not overlap"):
            with run.phase("train", "again"):  # another kind may run inside (pausing it)
                pass


def test_unwritable_out_dir_is_named(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(perfkit.RunError, match=r"out_dir .*a-file.* is not writable"):
        perfkit.Run("r", out_dir=blocker / "runs", device="cpu").start()
    assert perfkit.run.active_run() is None  # a failed start leaves nothing active


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"e2e_from": "boot"}, "Expected argument `e2e_from` to be one of"),
        ({"sync": "always"}, "Expected argument `sync` to be one of"),
        ({"config": {"fn": print}}, "Expected argument `config` to be a JSON-serialisable"),
        ({"config": [1, 2]}, "Expected argument `config` to be a JSON-serialisable mapping"),
        ({"flush_interval_s": 0}, "Expected argument `flush_interval_s` to be a positive"),
        ({"dist_timeout_s": "5"}, "Expected argument `dist_timeout_s` to be a positive"),
        ({"sample_interval_s": -1}, "Expected argument `sample_interval_s` to be a positive"),
        ({"device": "warp-drive:0"}, "Expected argument `device` to be 'auto', 'cpu'"),
    ],
)
def test_bad_run_arguments(tmp_path, kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        perfkit.Run("r", out_dir=tmp_path, **kwargs).start()


def test_log_needs_numbers_and_uncountable_batches_are_named(tmp_path):
    with perfkit.Run("r", out_dir=tmp_path, device="cpu") as run:
        with pytest.raises(TypeError, match=r"run.log\(acc=...\) needs a number"):
            run.log(acc="76.2/76.2")
        with run.phase("train") as train, pytest.raises(perfkit.RunError, match="samples=N"):
            for _ in train.iterate(["text"]):
                pass


def test_count_samples_forms():
    images = np.zeros((8, 3, 4, 4))
    labels = np.zeros(8)
    assert perfkit.run.count_samples(images) == 8
    assert perfkit.run.count_samples((images, labels)) == 8
    detection = ([np.zeros((3, 5, 5))] * 3, [{"boxes": np.zeros((1, 4))}] * 3)
    assert perfkit.run.count_samples(detection) == 3
    assert perfkit.run.count_samples({"pixel_values": images, "label": labels}) == 8


# ---------------------------------------------------------------------------- crash safety


def test_a_crash_leaves_its_steps_and_a_failed_summary(tmp_path):
    clock = FakeClock()
    error = ValueError("boom at step 3")
    run = perfkit.Run("crash", out_dir=tmp_path, clock=clock, device="cpu")
    with pytest.raises(ValueError) as raised, run, run.phase("train") as train:
        for i, _ in enumerate(train.iterate([np.zeros((2, 1))] * 10)):
            clock.advance(1.0)
            if i == 3:
                raise error
    assert raised.value is error  # re-raised untouched
    assert run.run_dir is not None
    # steps 0, 1, 2 finished; step 3 raised half-way and does not count
    assert [r["step"] for r in step_records(run.run_dir)] == [0, 1, 2]
    summary = json.loads((run.run_dir / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert summary["error"] == "ValueError: boom at step 3"
    assert summary["train_steps"] == 3
    assert perfkit.run.active_run() is None


def test_a_killed_process_keeps_its_flushed_steps(tmp_path):
    script = textwrap.dedent(
        f"""
        import os, signal, time
        import perfkit
        with perfkit.Run("killed", out_dir={str(tmp_path)!r}, device="cpu",
                         flush_interval_s=0.05) as run:
            with run.phase("train") as train:
                for i in train.iterate(range(100), samples=1):
                    time.sleep(0.01)
                    if i == 20:
                        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, timeout=60)
    assert proc.returncode == -9
    (run_dir,) = tmp_path.glob("killed-*")
    assert not (run_dir / "summary.json").exists()
    assert (run_dir / "meta.json").exists()
    steps = [r["step"] for r in step_records(run_dir)]
    # flushed every 0.05 s at step ends, steps of 0.01 s: all but the last few steps are on disk
    assert steps == list(range(len(steps)))
    assert 10 <= len(steps) <= 20
    frame = perfkit.analysis.load(tmp_path)
    assert set(frame["status"]) == {"partial"}


def test_analysis_refuses_files_that_are_not_records(tmp_path):
    (tmp_path / "records.jsonl").write_text('{"hello": 1}\n')
    with pytest.raises(RecordError, match="not a perfkit record"):
        perfkit.analysis.load(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such run directory"):
        perfkit.analysis.load(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RecordError, match="holds no perfkit run"):
        perfkit.analysis.load(empty)


def test_analysis_load_reads_runs_with_metadata(tmp_path):
    clock = FakeClock()
    for precision in ("fp32", "fp16"):
        with perfkit.Run(
            "bench",
            out_dir=tmp_path,
            clock=clock,
            device="cpu",
            config={"precision": precision, "bs": 8},
        ) as run:
            with run.phase("infer") as infer:
                for _ in infer.iterate([np.zeros((8, 1))] * 2):
                    clock.advance(0.5)
            time.sleep(1.01)  # distinct run directories (second resolution) for the same name
    frame = perfkit.analysis.load(tmp_path)
    assert frame["run_id"].nunique() == 2
    assert set(frame["config.precision"]) == {"fp32", "fp16"}
    steps = frame[frame["name"] == "step"]
    assert len(steps) == 4 and steps["step_time"].tolist() == [0.5] * 4
    assert steps["samples"].tolist() == [8] * 4
    assert set(frame["status"]) == {"ok"}
    long = perfkit.analysis.load(tmp_path, long=True)
    step_times = long[long["name"] == "step_time"]
    assert len(step_times) == 4 and step_times["value"].tolist() == [0.5] * 4


# ---------------------------------------------------------------------------- real clocks


def test_import_is_cheap_and_touches_no_hardware():
    code = (
        "import sys, perfkit; "
        "print(sorted(m for m in ('torch', 'pynvml', 'pandas', 'numpy', 'matplotlib', "
        "'pycocotools', 'psutil', 'mlflow', 'tensorboard', 'pyarrow') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_real_clock_loop_reports_the_true_throughputs(tmp_path):
    # The references are clocks the test reads itself around the sleeps and around each
    # phase (sleeps overshoot on a loaded machine, so their nominal lengths are no reference).
    io_s, compute_s, val_s, steps, bs = 0.010, 0.020, 0.015, 8, 4
    clock = time.perf_counter
    measured = {"compute": 0.0, "train": 0.0, "val": 0.0}

    def loader(n):
        for _ in range(n):
            time.sleep(io_s)
            yield np.zeros((bs, 1))

    with perfkit.Run("sleepy", out_dir=tmp_path, device="cpu") as run:
        for _epoch in range(2):
            t0 = clock()
            with run.phase("train") as train:
                for _ in train.iterate(loader(steps)):
                    c0 = clock()
                    time.sleep(compute_s)
                    measured["compute"] += clock() - c0
            t1 = clock()
            with run.phase("val") as val:
                for _ in val.iterate(range(2), samples=bs):
                    time.sleep(val_s)
            measured["train"] += t1 - t0
            measured["val"] += clock() - t1
    s = run.summary()
    samples = 2 * steps * bs
    assert s["p_core"] == pytest.approx(samples / measured["compute"], rel=0.05)
    assert s["p_train"] == pytest.approx(samples / measured["train"], rel=0.05)
    whole = measured["train"] + measured["val"]
    assert s["p_whole"] == pytest.approx(samples / whole, rel=0.05)


def test_real_pytorch_training_loop(tmp_path):
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    data = torch.utils.data.TensorDataset(torch.randn(12, 3, 32, 32), torch.randint(0, 10, (12,)))
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    with perfkit.Run("resnet18", out_dir=tmp_path, config={"bs": 4}) as run:
        assert run.device == "cpu"
        with run.phase("train") as train:
            for images, labels in train.iterate(loader):
                loss = torch.nn.functional.cross_entropy(model(images), labels)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                run.log(loss=loss.detach())
    s = run.summary()
    assert s["train_samples"] == 12 and s["train_steps"] == 3
    assert 0 < s["p_train"] < s["p_core"]
    assert s["train_compute_s"] + s["train_io_s"] <= s["train_wall_s"] + 1e-9
    assert s["train_compute_s"] > 0.5 * s["train_wall_s"]  # the model, not the loader, dominates
    assert math.isfinite(s["loss"])
    assert torch.__version__.startswith(s["meta"]["torch_version"])


def test_the_remembering_counter_agrees_with_count_samples() -> None:
    """Batches whose types change under the counter: each count is count_samples' answer."""
    from perfkit.run._samples import remembering_counter

    torch = pytest.importorskip("torch")
    count = remembering_counter()
    batches = [
        (torch.zeros(8, 3), torch.zeros(8)),
        (torch.zeros(5, 3), torch.zeros(5)),  # same types, another size: remembered path
        [np.zeros((4, 2)), np.zeros(4)],  # the first element's type changes
        torch.zeros(6, 1),  # a bare tensor
        np.zeros((2, 2)),
        {"pixel_values": torch.zeros(3, 1), "label": torch.zeros(3)},
        ([torch.zeros(3, 4, 4)] * 2, [{}, {}]),  # detection: a list of images
        (torch.zeros(7, 3), torch.zeros(7)),
    ]
    assert [count(b) for b in batches] == [perfkit.run.count_samples(b) for b in batches]
    assert [count(b) for b in batches] == [8, 5, 4, 6, 2, 3, 2, 7]
    with pytest.raises(perfkit.RunError, match="cannot count"):
        count((torch.tensor(1.0), 2))  # a 0-d tensor after a remembered tuple of tensors


#: Batch makers by kind: rows -> a batch of that many samples (rows None: a 0-d tensor or
#: array, which has no samples to count).
BATCH_KINDS = {
    "tensor": lambda torch, rows: torch.zeros(()) if rows is None else torch.zeros(rows, 2),
    "array": lambda torch, rows: np.zeros(()) if rows is None else np.zeros((rows, 2)),
    "tuple": lambda torch, rows: (BATCH_KINDS["tensor"](torch, rows), torch.zeros(3)),
    "array_list": lambda torch, rows: [BATCH_KINDS["array"](torch, rows), 1],
}


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(sorted(BATCH_KINDS)), st.none() | st.integers(0, 5)),
        min_size=1,
        max_size=12,
    )
)
def test_the_remembering_counter_counts_the_rows_made(batches) -> None:
    """Tensors, arrays, tuples and lists of them, with 0 rows or none (0-d) among them, in any
    order: each count is the rows the test made, and a 0-d one is refused as at the first
    batch, however the counter read the batches before it."""
    from perfkit.run._samples import remembering_counter

    torch = pytest.importorskip("torch")
    count = remembering_counter()
    for kind, rows in batches:
        batch = BATCH_KINDS[kind](torch, rows)
        if rows is None:
            with pytest.raises(perfkit.RunError, match="cannot count"):
                count(batch)
        else:
            assert count(batch) == rows


def test_a_backlog_wakes_the_flusher_and_its_bound_says_so_once(tmp_path, monkeypatch) -> None:
    """A flusher that would wait 1000 s and, woken at the bound, stalls (as on a disk that never
    keeps up): after a second's wait the loop writes the steps itself, and says so once."""
    import perfkit.run._phase as phase_module

    monkeypatch.setattr(phase_module, "BACKLOG_STEPS", 64)
    with perfkit.Run("backlog", out_dir=tmp_path, device="cpu", probes=None,
                     flush_interval_s=1000) as run:  # fmt: skip
        assert run._flusher is not None
        monkeypatch.setattr(run._flusher, "wake", lambda: None)  # the stalled disk
        with run.phase("train") as train, pytest.warns(RuntimeWarning, match="does not keep up"):
            for _ in train.iterate(range(1000), samples=1):
                assert train._backlog is not None  # bounded: never a full backlog kept
                assert train.steps - train._backlog.drained <= 64  # the ring's 64 slots
    assert run.run_dir is not None
    assert [r["step"] for r in step_records(run.run_dir)] == list(range(1000))
    said = [
        r for r in read_records(run.run_dir / "records.jsonl") if r["name"] == "step_backlog_full"
    ]
    assert len(said) == 1


def test_a_lagging_flusher_is_waited_for_not_warned_about(tmp_path, monkeypatch) -> None:
    """A flusher that takes 20 ms to start each flush (as one outrun for the GIL does) behind
    a 64-slot backlog: the loop waits for it at the bound instead of writing the steps itself,
    and nothing is said; the ring never holds more than its 64 slots."""
    import warnings

    import perfkit.run._phase as phase_module

    monkeypatch.setattr(phase_module, "BACKLOG_STEPS", 64)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with perfkit.Run("lag", out_dir=tmp_path, device="cpu", probes=None,
                         flush_interval_s=1000) as run:  # fmt: skip
            assert run._flusher is not None
            flush = run._flusher._flush

            def late_flush() -> None:
                time.sleep(0.02)
                flush()

            monkeypatch.setattr(run._flusher, "_flush", late_flush)
            with run.phase("train") as train:
                for _ in train.iterate(range(640), samples=1):
                    assert train._backlog is not None
                    assert train.steps - train._backlog.drained <= 64
    assert run.run_dir is not None
    assert [r["step"] for r in step_records(run.run_dir)] == list(range(640))
    names = [r["name"] for r in read_records(run.run_dir / "records.jsonl")]
    assert "step_backlog_full" not in names


def test_the_flusher_keeps_up_with_a_million_empty_steps(tmp_path) -> None:
    """The tightest loop there is, with the Run's defaults (probes sampling, the 65,536-slot
    backlog) on this busy 2-core machine: the flusher, outrun for the GIL, is waited for - no
    "steps waited to be written" - and every step is on disk: the loop's own count of
    1,000,000 rows, numbered 0..999,999, one sample each, their ends in order."""
    import warnings

    n = 1_000_000
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # the warning would fail the test
        with perfkit.Run("tight", out_dir=tmp_path, device="cpu") as run:
            with run.phase("train") as train:
                for _ in train.iterate(range(n), samples=1):
                    pass
    assert run.run_dir is not None
    names = [r["name"] for r in read_records(run.run_dir / "records.jsonl")]
    assert "step_backlog_full" not in names
    _header, rows = perfkit.steplog.read_step_log(run.run_dir / "steps.bin")
    assert rows.shape == (n, len(perfkit.records.STEP_COLUMNS))
    assert np.array_equal(rows[:, 1], np.arange(n))  # step
    assert np.all(rows[:, 6] == 1)  # samples
    assert np.all(np.diff(rows[:, 2]) >= 0)  # ends, in order
    assert run.summary()["phases"][0]["steps"] == n


def test_a_full_backlog_hands_its_steps_to_the_flusher(tmp_path, monkeypatch) -> None:
    """A flusher that would wait 1000 s: the steps that fill the 64 slots are written by the
    flusher's thread, woken and waited for at the bound, before the loop writes the next."""
    import threading

    import perfkit.run._phase as phase_module

    monkeypatch.setattr(phase_module, "BACKLOG_STEPS", 64)
    writers: set[str] = set()
    with perfkit.Run("woken", out_dir=tmp_path, device="cpu", probes=None,
                     flush_interval_s=1000) as run:  # fmt: skip
        assert run._steps is not None and run.run_dir is not None
        write = run._steps.write

        def noted_write(rows: bytes) -> None:
            if rows:
                writers.add(threading.current_thread().name)
            write(rows)

        monkeypatch.setattr(run._steps, "write", noted_write)
        with run.phase("train") as train:
            for i in train.iterate(range(100), samples=1):
                if i == 65:  # step 64 found the ring full: steps 0..63 went to disk first
                    assert train._backlog is not None and train._backlog.drained == 64
                    assert len(step_records(run.run_dir)) == 64
                    assert writers == {"perfkit-flush"}


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"flush_interval_s": "2"}, TypeError),  # a wrong type
        ({"flush_interval_s": float("nan")}, ValueError),  # a wrong value
        ({"sync": 1}, TypeError),
        ({"sync": "often"}, ValueError),
        ({"config": [1, 2]}, TypeError),
    ],
)
def test_wrong_types_are_type_errors_and_wrong_values_value_errors(tmp_path, kwargs, error):
    with pytest.raises(error, match=r"^Expected argument `\w+` to be .* but got "):
        perfkit.Run("r", out_dir=tmp_path, **kwargs)
