"""One figure of a run: memory per device, step time split into IO and compute, throughput.

matplotlib is imported when :func:`plot_run` runs, and only its object API is used (a
``Figure`` rendered by the Agg canvas): no pyplot, no global state.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from perfkit.analysis._discover import PathArg, find_run
from perfkit.analysis._frames import phase_table, row_dicts, step_table
from perfkit.analysis._read import RunData, read_run

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
#: Throughputs of two phase kinds whose medians differ by more than this factor get their own
#: y axes (the second on the right), so that both stay readable.
SEPARATE_AXES_RATIO = 4.0
#: The memory axis is scaled to the memory used; a device's capacity is drawn as a dashed line
#: only when it is at most this many times the highest use (else it is named in the label
#: only, so 0.6 GiB of a 24 GiB host stays readable).
CAPACITY_LINE_WITHIN = 1.5
#: Steps in the throughput panel's rolling median (centred, per phase).
ROLLING_STEPS = 9
#: The throughput axis ends at this many times the highest rolling median or phase average;
#: faster single steps (a sub-millisecond outlier) are clipped, and the axis says how many.
CLIP_ABOVE = 3.0
#: Rows of phase names at the top of the memory panel; a name with no free row is left out.
NAME_ROWS = 4


def plot_run(run_dir: PathArg, *, rank: int = 0) -> Figure:
    """A figure of one run, three axes sharing the time axis (s since run start), phases
    shaded by kind (hatched: a phase a killed process left open):

    1. memory used (GiB; dashed: capacity) of the devices the summary's ``mem`` is taken
       from (its ``mem_per_device``; on a CPU run the host's RAM), every rank's; without a
       summary, every accelerator, else the host;
    2. each step of ``rank`` as a block from its start to its end, IO (bottom) and compute
       (top) in ms, the step's wall time as a line;
    3. throughput of ``rank`` (samples/s): per step, and each phase's average (dashed); a
       kind whose rates differ from the first kind's by more than
       :data:`SEPARATE_AXES_RATIO` x is drawn against its own y axis on the right.

    Legends sit outside the axes, right of them, so they never cover the phase names.
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
    mem_title = _memory(axes[0], run)
    _step_split(axes[1], steps)
    twins = _throughput(axes[2], steps, own_phases)
    for ax, title in zip(axes, TITLES, strict=True):
        ax.set_title(title, loc="left")
        ax.grid(alpha=0.3)
        _phase_bands(ax, own_phases)
        handles, labels = ax.get_legend_handles_labels()
        if ax is axes[2]:
            for twin in twins:
                more = twin.get_legend_handles_labels()
                handles, labels = handles + more[0], labels + more[1]
        if handles:
            ax.legend(
                handles,
                labels,
                loc="upper left",
                bbox_to_anchor=(1.06 if twins and ax is axes[2] else 1.01, 1.0),
                fontsize="small",
                title=mem_title if ax is axes[0] else None,
                title_fontsize="small",
            )
    axes[2].set_xlabel("time since run start (s)")
    _phase_names(figure, axes[0], own_phases)
    return figure


def save_plot(run_dir: PathArg, out: PathArg, *, rank: int = 0) -> Path:
    """Render :func:`plot_run` to ``out`` (PNG, SVG or PDF by suffix; 1200 x 900 px for PNG)."""
    path = Path(out)
    plot_run(run_dir, rank=rank).savefig(path)
    return path


def _memory(ax: Axes, run: RunData) -> str | None:
    """Draws the memory panel; returns the legend's title (the summary's mem)."""
    import numpy as np
    import pandas as pd

    from perfkit.probes import HOST_DEVICE

    records = run.records
    memory = records[
        records["name"].isin(("memory_used_bytes", "memory_total_bytes", "process_tree_rss_bytes"))
    ]
    ranks = memory["rank"].nunique()

    def label(rank: Any, device: Any) -> str:
        return str(device) if ranks == 1 else f"{device}@rank{rank}"

    shown = _mem_devices(run)
    if shown is None:  # no summary: the accelerators, else the host (a CPU run's device)
        accelerators = memory[memory["device"] != HOST_DEVICE]
        memory = accelerators if not accelerators.empty else memory
    else:
        keep = [label(r, d) in shown for r, d in zip(memory["rank"], memory["device"], strict=True)]
        memory = memory.loc[np.array(keep, dtype=bool)]
    # The host (a CPU run's device) as the summary's mem measures it: the process tree's RSS
    # where recorded, else system RAM used.
    tree = memory[memory["name"] == "process_tree_rss_bytes"]
    used = memory[memory["name"] == "memory_used_bytes"]
    used = pd.concat(
        [tree, used[~used["rank"].isin(tree["rank"]) | (used["device"] != HOST_DEVICE)]]
    )
    top = float(used["value"].max()) / _GIB if not used.empty else 0.0
    shown_top = top
    for (rank, device), rows in used.groupby(["rank", "device"]):
        name = label(rank, device)
        if device == HOST_DEVICE:
            tree_rss = (rows["name"] == "process_tree_rss_bytes").any()
            name += " (process tree RSS)" if tree_rss else " (system RAM used)"
        total = memory[
            (memory["name"] == "memory_total_bytes")
            & (memory["rank"] == rank)
            & (memory["device"] == device)
        ]["value"].max()
        if total == total:  # not NaN: the capacity in the label, as a line where it is near
            name += f" of {total / _GIB:.1f} GiB"
        (line,) = ax.plot(rows["t"], rows["value"] / _GIB, label=name)
        if total == total and total / _GIB <= CAPACITY_LINE_WITHIN * top:
            ax.axhline(total / _GIB, color=line.get_color(), linestyle="--", linewidth=0.8)
            shown_top = max(shown_top, total / _GIB)
    if used.empty:
        ax.text(0.5, 0.5, "no memory samples", transform=ax.transAxes, ha="center")
        ax.set_ylim(bottom=0)
    else:  # scaled to what is drawn, with room above it for the phase names
        ax.set_ylim(0, 1.3 * shown_top if shown_top > 0 else 1.0)
    ax.set_ylabel("GiB")
    mem = (run.summary or {}).get("mem")
    return None if mem is None else f"summary mem {mem} GiB"


def _mem_devices(run: RunData) -> set[str] | None:
    """Labels of the devices the summary's mem covers (``mem_per_device`` keys: ``device``,
    or ``device@rank<r>`` over several ranks); None without a summary."""
    per_device = (run.summary or {}).get("mem_per_device")
    if run.summary is None:
        return None
    return set(per_device) if isinstance(per_device, dict) else set()


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


def _throughput(ax: Axes, steps: pd.DataFrame, phases: pd.DataFrame) -> list[Axes]:
    """Draws the throughput panel - each step's rate faint, its rolling median over
    :data:`ROLLING_STEPS` steps of the phase solid, each phase's average dashed, the axis
    clipped above the medians (:func:`_clip`); returns the extra y axes it made (right side)."""
    import numpy as np

    rate = steps["samples"] / steps["step_time"].where(steps["step_time"] > 0)
    steps = steps.assign(rate=rate)
    kinds = [str(k) for k in dict.fromkeys(steps["kind"])]
    medians = steps.groupby("kind")["rate"].median()
    axis_of: dict[str, Axes] = {}
    twins: list[Axes] = []
    for kind in kinds:
        ratio = float(medians[kind]) / float(medians[kinds[0]])
        if not (ratio > SEPARATE_AXES_RATIO or ratio < 1 / SEPARATE_AXES_RATIO):  # NaN: same
            axis_of[kind] = ax
            continue
        twin = ax.twinx()
        if twins:  # a third scale: its spine further right
            twin.spines["right"].set_position(("axes", 1.0 + 0.06 * len(twins)))
        twins.append(twin)
        axis_of[kind] = twin
    robust: dict[int, float] = {}  # per axis: the highest rolling median or phase average
    raw: dict[int, list[float]] = {}
    for key, rows in steps.groupby("kind", sort=False):
        name = str(key)
        color = KIND_COLORS.get(name, "tab:gray")
        target = axis_of[name]
        x, y = _blocks(rows["start_t"], rows["t"], rows["rate"])
        target.plot(x, y, color=color, alpha=0.3, linewidth=0.8, label=f"{name} per step")
        median = rows.groupby(["phase", "index"], dropna=False)["rate"].transform(
            lambda r: r.rolling(ROLLING_STEPS, center=True, min_periods=1).median()
        )
        x, y = _blocks(rows["start_t"], rows["t"], median)
        target.plot(x, y, color=color, linewidth=1.6, label=f"{name} median of {ROLLING_STEPS}")
        robust[id(target)] = max(robust.get(id(target), 0.0), float(np.nanmax(y, initial=0.0)))
        raw.setdefault(id(target), []).extend(rows["rate"].dropna())
        if target is not ax:
            target.set_ylabel(f"{name} samples/s", color=color)
            target.tick_params(axis="y", colors=color)
    averages = row_dicts(phases[phases["wall_s"] > 0])
    for number, phase in enumerate(averages):
        target = axis_of.get(str(phase["kind"]), ax)
        rate = phase["samples"] / phase["wall_s"]
        robust[id(target)] = max(robust.get(id(target), 0.0), rate)
        target.hlines(
            rate,
            phase["start_t"],
            phase["end_t"],
            colors="black",
            linestyles="--",
            linewidth=1.0,
            label="phase average" if number == 0 else "_nolegend_",
        )
    ax.set_ylabel("samples/s" if not twins else f"{kinds[0]} samples/s")
    for target in (ax, *twins):
        _clip(target, robust.get(id(target), 0.0), raw.get(id(target), []))
    return twins


def _clip(ax: Axes, robust: float, rates: list[float]) -> None:
    """The axis from 0 to :data:`CLIP_ABOVE` x ``robust`` (its highest rolling median or phase
    average), saying how many per-step ``rates`` lie above it."""
    if not robust > 0:
        ax.set_ylim(bottom=0)
        return
    top = CLIP_ABOVE * robust
    ax.set_ylim(0, top)
    above = [r for r in rates if r > top]
    if above:
        ax.text(
            0.99,
            0.97,
            f"{len(above)} step(s) above the axis, up to {max(above):.4g} samples/s",
            transform=ax.transAxes,
            ha="right",
            va="top",
            fontsize="x-small",
        )


def _phase_names(figure: Figure, ax: Axes, phases: pd.DataFrame) -> None:
    """Each phase's name at the top of ``ax``, at its start: in the first of
    :data:`NAME_ROWS` rows where it overlaps no name already placed (measured on the laid-out
    figure); a name with no free row is left out (its band's colour still shows the kind)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()  # lay the figure out as savefig does, so the names' extents are final
    renderer = canvas.get_renderer()
    placed: list[list[Any]] = [[] for _ in range(NAME_ROWS)]
    for phase in row_dicts(phases):
        text = ax.annotate(
            str(phase["phase"]),
            (phase["start_t"], 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(2, -10),
            textcoords="offset points",
            fontsize="x-small",
        )
        for row, boxes in enumerate(placed):
            text.set_position((2, -10 - 9 * row))
            box = text.get_window_extent(renderer).expanded(1.1, 1.0)
            if not any(box.overlaps(other) for other in boxes):
                boxes.append(box)
                break
        else:
            text.remove()


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
