"""perfkit's main job on built-in data: FlagPerf's ResNet-50 inference case and a short RetinaNet
training, each printing its seed-style metric table (``make demo``), then a plot and a trace of
each run, written beside its records.

Each case runs in its own process, as a user runs it, so that e2e_time counts from that
process's start (FlagPerf's convention). Runs go to ``runs/`` (``--out-dir``);
``perfkit report runs/`` prints the tables again.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

CASES = (
    ("ResNet-50 inference (FlagPerf), built-in ImageFolder data", "resnet50_inference", "16"),
    ("RetinaNet training (FlagPerf), built-in COCO data, one epoch", "retinanet_training", "4"),
)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out-dir", default="runs", help="perfkit run directories")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    args = p.parse_args(argv)
    started = datetime.now(timezone.utc)
    for title, module, batch_size in CASES:
        print(f"\n== {title} ==", flush=True)
        command = [sys.executable, "-m", f"examples.{module}", "--batch-size", batch_size,
                   "--out-dir", args.out_dir, "--device", args.device]  # fmt: skip
        status = subprocess.run(command, check=False).returncode
        if status != 0:
            return status
    show_runs(Path(args.out_dir), started)
    return 0


def show_runs(out_dir: Path, since: datetime) -> None:
    """For each run under ``out_dir`` started at ``since`` or later: its MFU (or why it has
    none), then a plot (plot.png) and a trace (trace.json) written into its run directory."""
    from perfkit.analysis import save_plot, summaries, write_trace

    table = summaries(out_dir)
    started = [datetime.fromisoformat(str(t)) for t in table["started_at"]]
    print("\n== Plots and traces ==")
    for row, start in zip(table.to_dict(orient="records"), started, strict=True):
        if start < since:
            continue
        run_dir = Path(row["run_dir"])
        mfu, note = row.get("MFU"), row.get("mfu_note")
        if isinstance(mfu, float) and mfu == mfu:  # not NaN
            print(f"{row['name']}: MFU {100 * mfu:.2f}% (peak: {row.get('peak_source')})")
        elif isinstance(note, str):
            print(f"{row['name']}: {note}")
        else:
            print(f"{row['name']}: no MFU (this case counts no FLOPs)")
        plot = save_plot(run_dir, run_dir / "plot.png")
        trace = write_trace(run_dir, run_dir / "trace.json")
        print(f"  plot:  {plot}\n  trace: {trace} (open it in https://ui.perfetto.dev)")


if __name__ == "__main__":
    raise SystemExit(main())
