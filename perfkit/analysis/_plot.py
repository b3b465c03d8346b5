"""One figure of a run: memory per device, step time split into IO and compute, throughput.

matplotlib is imported when :func:`plot_run` runs, and only its object API is used (a
``Figure`` rendered by the Agg canvas): no pyplot, no global state.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from perfkit.analysis._read import PathArg, find_run, phase_table, read_run, row_dicts, step_table

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: Figure size in inches and resolution in dots per inch: 1200 x 900 pixels.
FIGSIZE_IN = (12.0, 9.0)
DPI = 100
#: Axes titles, top to bottom.
TITLES = ("Memory per device", "Step time: IO and compute", "Throughput")
KIND_COLORS = {"train": "tab:blue", "val": "tab:orange", "infer": "tab:green"}
_GIB = 2.0**30


def plot_run(run_dir: PathArg, *, rank: int = 0) -> Figure:
    """A figure of one run, three axes sharing the time axis (s since run start), phases
    shaded by kind (hatched: a phase a killed process left open):

    1. memory used per device (GiB; dashed: capacity), every rank's devices; the host
       process's RSS when no device memory was sampled;
    2. each step of ``rank`` as a block from its start to its end, IO (bottom) and compute
       (top) in ms, the step's wall time as a line;
    3. throughput of ``rank`` (samples/s): per step, and each phase's average (dashed).
    """
    try:
        from matplotlib.figure import Figure
    except ImportError as err:  # matplotlib is the "plot" extra
        raise ImportError("plotting needs matplotlib: pip install 'perfkit[plot]'") from err

    run = read_run(find_run(run_dir))
    phases = phase_table(run)
    own_phases = phases[phases["rank"] == rank]
    steps = step_table(run, phases)
    steps = steps[steps["rank"] == rank]
    figure = Figure(figsize=FIGSIZE_IN, dpi=DPI, layout="constrained")
    axes = figure.subplots(3, 1, sharex=True)
    figure.suptitle(f"{run.label}  ({run.status}, {run.meta.get('device_name', '?')})")
    _memory(axes[0], run.records)
    _step_split(axes[1], steps)
    _throughput(axes[2], steps, own_phases)
    for ax, title in zip(axes, TITLES, strict=True):
        ax.set_title(title, loc="left")
        ax.grid(alpha=0.3)
        _phase_bands(ax, own_phases)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper right", fontsize="small")
    for phase in row_dicts(own_phases):  # phase names along the top
        axes[0].annotate(
            str(phase["phase"]),
            (phase["start_t"], 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(2, -10),
            textcoords="offset points",
            fontsize="x-small",
        )
    axes[2].set_xlabel("time since run start (s)")
    return figure


def save_plot(run_dir: PathArg, out: PathArg, *, rank: int = 0) -> Path:
    """Render :func:`plot_run` to ``out`` (PNG, SVG or PDF by suffix; 1200 x 900 px for PNG)."""
    path = Path(out)
    plot_run(run_dir, rank=rank).savefig(path)
    return path


def _memory(ax: Axes, records: pd.DataFrame) -> None:
    from perfkit.probes import HOST_DEVICE

    memory = records[records["name"].isin(("memory_used_bytes", "memory_total_bytes"))]
    memory = memory[memory["device"] != HOST_DEVICE]
    ranks = memory["rank"].nunique()
    used = memory[memory["name"] == "memory_used_bytes"]
    for (rank, device), rows in used.groupby(["rank", "device"]):
        label = str(device) if ranks == 1 else f"{device}@rank{rank}"
        (line,) = ax.plot(rows["t"], rows["value"] / _GIB, label=label)
        total = memory[
            (memory["name"] == "memory_total_bytes")
            & (memory["rank"] == rank)
            & (memory["device"] == device)
        ]["value"].max()
        if total == total:  # not NaN
            ax.axhline(total / _GIB, color=line.get_color(), linestyle="--", linewidth=0.8)
    if used.empty:
        rss = records[records["name"] == "process_rss_bytes"]
        for rank, rows in rss.groupby("rank"):
            ax.plot(rows["t"], rows["value"] / _GIB, label=f"host process RSS (rank {rank})")
        if rss.empty:
            ax.text(0.5, 0.5, "no memory samples", transform=ax.transAxes, ha="center")
    ax.set_ylabel("GiB")


def _blocks(start: Any, end: Any, value: Any) -> tuple[np.ndarray, np.ndarray]:
    """x, y drawing each step as a flat block from its start to its end, NaN-separated so
    fill_between leaves the gaps between steps empty."""
    import numpy as np

    x = np.column_stack([start, end, np.full(len(start), np.nan)]).ravel()
    y = np.column_stack([value, value, np.full(len(start), np.nan)]).ravel()
    return x, y


def _step_split(ax: Axes, steps: pd.DataFrame) -> None:
    ms = 1e3
    x, io = _blocks(steps["start_t"], steps["t"], steps["io_time"] * ms)
    _, compute = _blocks(steps["start_t"], steps["t"], steps["compute_time"] * ms)
    _, wall = _blocks(steps["start_t"], steps["t"], steps["step_time"] * ms)
    ax.fill_between(x, 0, io, color="tab:red", alpha=0.6, linewidth=0, label="IO")
    ax.fill_between(
        x, io, io + compute, color="tab:purple", alpha=0.6, linewidth=0, label="compute"
    )
    ax.plot(x, wall, color="black", linewidth=0.8, label="step")
    ax.set_ylabel("ms per step")
    ax.margins(y=0.1)
    ax.set_ylim(bottom=0)


def _throughput(ax: Axes, steps: pd.DataFrame, phases: pd.DataFrame) -> None:
    rate = steps["samples"] / steps["step_time"].where(steps["step_time"] > 0)
    for kind, rows in steps.assign(rate=rate).groupby("kind"):
        x, y = _blocks(rows["start_t"], rows["t"], rows["rate"])
        ax.plot(x, y, color=KIND_COLORS.get(str(kind), "tab:gray"), label=f"{kind} per step")
    averages = row_dicts(phases[phases["wall_s"] > 0])
    for number, phase in enumerate(averages):
        ax.hlines(
            phase["samples"] / phase["wall_s"],
            phase["start_t"],
            phase["end_t"],
            colors="black",
            linestyles="--",
            linewidth=1.0,
            label="phase average" if number == 0 else "_nolegend_",
        )
    ax.set_ylabel("samples/s")
    ax.margins(y=0.1)
    ax.set_ylim(bottom=0)


def _phase_bands(ax: Axes, phases: pd.DataFrame) -> None:
    for phase in row_dicts(phases):
        ax.axvspan(
            phase["start_t"],
            phase["end_t"],
            color=KIND_COLORS.get(str(phase["kind"]), "tab:gray"),
            alpha=0.08,
            hatch=None if phase["complete"] else "//",
            linewidth=0,
        )
