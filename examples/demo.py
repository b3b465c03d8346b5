"""perfkit's main job on built-in data: FlagPerf's ResNet-50 inference case and a short RetinaNet
training, each printing its seed-style metric table (``make demo``).

Each case runs in its own process, as a user runs it, so that e2e_time counts from that
process's start (FlagPerf's convention). Runs go to ``runs/`` (``--out-dir``);
``perfkit report runs/`` prints the tables again, ``perfkit plot`` / ``perfkit trace`` show what
happened inside them.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Sequence

CASES = (
    ("ResNet-50 inference (FlagPerf), built-in ImageFolder data", "resnet50_inference", "16"),
    ("RetinaNet training (FlagPerf), built-in COCO data, one epoch", "retinanet_training", "4"),
)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out-dir", default="runs", help="perfkit run directories")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    args = p.parse_args(argv)
    for title, module, batch_size in CASES:
        print(f"\n== {title} ==", flush=True)
        command = [sys.executable, "-m", f"examples.{module}", "--batch-size", batch_size,
                   "--out-dir", args.out_dir, "--device", args.device]  # fmt: skip
        status = subprocess.run(command, check=False).returncode
        if status != 0:
            return status
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
