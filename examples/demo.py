"""perfkit's main job on built-in data: FlagPerf's ResNet-50 inference case and a short RetinaNet
training, each printing its seed-style metric table (``make demo``).

Runs go to ``runs/`` (override with ``--out-dir``); ``perfkit report runs/`` prints the tables
again, ``perfkit plot`` / ``perfkit trace`` show what happened inside them.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from examples import common, resnet50_inference, retinanet_training


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out-dir", default="runs", help="perfkit run directories")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    args = p.parse_args(argv)
    shared = ["--out-dir", args.out_dir, "--device", args.device]
    print("== ResNet-50 inference (FlagPerf), built-in ImageFolder data ==", flush=True)
    resnet50_inference.main([*shared, "--batch-size", "16"])
    print("\n== RetinaNet training (FlagPerf), built-in COCO data, one epoch ==", flush=True)
    retinanet_training.main([*shared, "--batch-size", "4"])


if __name__ == "__main__":
    common.main_guard(main)
