"""What a person sees in ``perfkit plot``: the memory panel shows the summary's mem quantity,
legends leave the phase names visible, and throughputs 20x apart are both readable."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

import perfkit
from perfkit.analysis import plot_run, save_plot
from perfkit.analysis._validate import read_summary
from perfkit.probes import HOST_DEVICE, DeviceSample, Probe
from tests.conftest import FakeClock, timed_batches

GIB = 2**30


class HostRamProbe(Probe):
    """The host probe's shape: system RAM 3 GiB used of 16 GiB, this process 0.5 GiB; the
    process tree's RSS when ``tree_gib`` is given (what a CPU run's mem then measures)."""

    name = "plot-host"
    kind = "host"

    def __init__(self, tree_gib: float = float("nan"), used_gib: float = 3.0) -> None:
        self.tree_gib = tree_gib
        self.used_gib = used_gib

    def is_available(self) -> bool:
        return True

    def sample(self) -> list[DeviceSample]:
        return [
            DeviceSample(
                self.name,
                HOST_DEVICE,
                "test host",
                memory_used_bytes=self.used_gib * GIB,
                memory_total_bytes=16 * GIB,
                process_rss_bytes=0.5 * GIB,
                process_tree_rss_bytes=self.tree_gib * GIB,
            )
        ]


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CPU run: train 3 steps of 2 samples in 1 s each (2 samples/s), val 3 steps of 40
    samples in 1 s each (40 samples/s, 20x train)."""
    clock = FakeClock()
    with perfkit.Run(
        "cpu",
        out_dir=tmp_path_factory.mktemp("plot"),
        clock=clock,
        device="cpu",
        probes=[HostRamProbe()],
        sample_interval_s=0.01,
    ) as run:
        with run.phase("train") as train:
            for _ in train.iterate(timed_batches(clock, [np.zeros((2, 1))] * 3, io_s=0.2)):
                clock.advance(0.8)
                time.sleep(0.02)  # two sampling intervals
        with run.phase("val") as val:
            for _ in val.iterate(timed_batches(clock, [np.zeros((40, 1))] * 3, io_s=0.2)):
                clock.advance(0.8)
    assert run.run_dir is not None
    return run.run_dir


def test_memory_panel_is_the_summary_mem(cpu_run):
    summary = read_summary(cpu_run)
    assert summary is not None and summary["mem"] == "3.0/16.0"  # a CPU run: the host's RAM
    memory = plot_run(cpu_run).axes[0]
    (line,) = [x for x in memory.get_lines() if not x.get_label().startswith("_")]
    # the axis is scaled to the 3 GiB used (1.3 x 3 = 3.9 GiB); the 16 GiB capacity, more than
    # 1.5 x the use, is named in the label instead of squashing the line to the bottom
    assert not [x for x in memory.get_lines() if x.get_linestyle() == "--"]
    assert memory.get_ylim() == pytest.approx((0.0, 3.9))
    assert line.get_label() == "host (system RAM used) of 16.0 GiB"  # not the process RSS
    assert np.nanmax(line.get_ydata()) == summary["mem_peak_bytes"] / GIB == 3.0
    assert memory.get_legend().get_title().get_text() == "summary mem 3.0/16.0 GiB"


def test_throughputs_20x_apart_get_their_own_axes(cpu_run):
    figure = plot_run(cpu_run)
    throughput = figure.axes[2]
    (val_axis,) = [ax for ax in figure.axes[3:] if ax.get_ylabel() == "val samples/s"]
    (train,) = [x for x in throughput.get_lines() if x.get_label() == "train per step"]
    (val,) = [x for x in val_axis.get_lines() if x.get_label() == "val per step"]
    assert np.nanmax(train.get_ydata()) == pytest.approx(2.0)  # 2 samples / 1 s
    assert np.nanmax(val.get_ydata()) == pytest.approx(40.0)  # 40 samples / 1 s
    # each scale fits its own kind: train's rate fills most of the left axis
    assert throughput.get_ylim()[1] <= 3 * 2.0 and val_axis.get_ylim()[1] <= 3 * 40.0
    assert throughput.get_ylabel() == "train samples/s"
    labels = throughput.get_legend().get_texts()
    assert {"train per step", "val per step"} <= {t.get_text() for t in labels}


def test_legends_never_cover_the_phase_names(cpu_run, tmp_path):
    figure = plot_run(cpu_run)
    out = save_plot(cpu_run, tmp_path / "cpu.png")
    assert out.stat().st_size > 0
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()  # lay the figure out as savefig does
    renderer = canvas.get_renderer()
    names = [t for t in figure.axes[0].texts if t.get_text() in ("train", "val")]
    assert len(names) == 2
    legends = [ax.get_legend() for ax in figure.axes if ax.get_legend() is not None]
    assert len(legends) == 3
    for name in names:
        box = name.get_window_extent(renderer)
        for legend in legends:
            assert not box.overlaps(legend.get_window_extent(renderer)), name.get_text()


def test_memory_panel_follows_the_process_tree_when_mem_does(tmp_path):
    clock = FakeClock()
    with perfkit.Run(
        "tree", out_dir=tmp_path, clock=clock, device="cpu", probes=[HostRamProbe(tree_gib=1.5)],
        sample_interval_s=0.01,
    ) as run:  # fmt: skip
        with run.phase("train") as train:
            for _ in train.iterate(timed_batches(clock, [np.zeros((2, 1))] * 2, io_s=0.2)):
                time.sleep(0.02)
    assert run.summary()["mem"] == "1.5/16.0"  # the process tree's 1.5 GiB, not system 3 GiB
    assert run.run_dir is not None
    memory = plot_run(run.run_dir).axes[0]
    (line,) = [x for x in memory.get_lines() if not x.get_label().startswith("_")]
    assert line.get_label() == "host (process tree RSS) of 16.0 GiB"
    assert np.nanmax(line.get_ydata()) == 1.5


def test_memory_capacity_is_a_line_when_near_the_use(tmp_path):
    clock = FakeClock()
    with perfkit.Run(
        "near", out_dir=tmp_path, clock=clock, device="cpu", probes=[HostRamProbe(used_gib=12)],
        sample_interval_s=0.01,
    ) as run:  # fmt: skip
        with run.phase("train") as train:
            for _ in train.iterate(timed_batches(clock, [np.zeros((2, 1))] * 2, io_s=0.2)):
                time.sleep(0.02)
    assert run.run_dir is not None
    memory = plot_run(run.run_dir).axes[0]
    # 16 GiB <= 1.5 x 12 GiB: drawn as a dashed line, the axis up to 1.3 x 16 = 20.8 GiB
    (capacity,) = [x for x in memory.get_lines() if x.get_linestyle() == "--"]
    assert set(capacity.get_ydata()) == {16.0}
    assert memory.get_ylim() == pytest.approx((0.0, 20.8))


def test_phase_names_never_overlap(tmp_path):
    """Six short phases in a row, 0.05 s apart on a 10 s axis: their names, at the phases'
    starts, would sit on each other in one row."""
    clock = FakeClock()
    with perfkit.Run("names", out_dir=tmp_path, clock=clock, device="cpu", probes=None) as run:
        for name in ("train", "validation", "train", "validation", "train", "validation"):
            with run.phase("val" if name == "validation" else "train", name=name) as phase:
                for _ in phase.iterate(timed_batches(clock, [np.zeros((2, 1))], io_s=0.01)):
                    clock.advance(0.04)
        with run.phase("train", name="long") as phase:  # a 10 s phase sets the time axis
            for _ in phase.iterate(timed_batches(clock, [np.zeros((2, 1))], io_s=0.01)):
                clock.advance(10.0)
    assert run.run_dir is not None
    figure = plot_run(run.run_dir)
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    renderer = canvas.get_renderer()
    names = [t for t in figure.axes[0].texts if t.get_text() in ("train", "validation")]
    assert len(names) >= 2  # the first rows fill; a name with no free row is left out
    boxes = [t.get_window_extent(renderer) for t in names]
    for i, box in enumerate(boxes):
        for other in boxes[i + 1 :]:
            assert not box.overlaps(other)


def test_throughput_axis_is_robust_to_an_outlier_step(tmp_path):
    """Nine 1 s steps of 8 samples and one of 0.1 ms (80000 samples/s): the axis stays at the
    steps' scale and says one step is above it."""
    clock = FakeClock()
    with perfkit.Run("outlier", out_dir=tmp_path, clock=clock, device="cpu", probes=None) as run:
        with run.phase("train") as train:
            for i, _ in enumerate(train.iterate([np.zeros((8, 1))] * 10)):
                clock.advance(1e-4 if i == 4 else 1.0)
    assert run.run_dir is not None
    throughput = plot_run(run.run_dir).axes[2]
    # phase average 80 samples / 9.0001 s = 8.889/s, the highest of the medians and averages:
    # the axis ends at 3 x 8.889 = 26.67 samples/s
    assert throughput.get_ylim() == pytest.approx((0.0, 3 * 80 / 9.0001))
    (note,) = [t for t in throughput.texts if "above the axis" in t.get_text()]
    assert note.get_text() == "1 step(s) above the axis, up to 8e+04 samples/s"
    (median,) = [x for x in throughput.get_lines() if x.get_label() == "train median of 9"]
    assert np.nanmax(median.get_ydata()) == pytest.approx(8.0)  # the outlier is not the median
