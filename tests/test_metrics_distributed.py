"""Gathering for real: two gloo processes on the CPU, as a padded DistributedSampler feeds them."""

from __future__ import annotations

import json
from pathlib import Path

import torch.distributed as dist
import torch.multiprocessing as mp

from perfkit.metrics import COCOEvaluator, TopK
from tests.test_metrics_coco import coco_from, evaluate, make_case
from tests.test_metrics_topk import LABELS, LOGITS

WORLD = 2
N_IMAGES = 5


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        gt, outputs, targets = make_case(13, n_images=N_IMAGES)
        # DistributedSampler(shuffle=False) pads 5 samples to 6 by repeating sample 0:
        # rank 0 gets samples 0, 2, 4 and rank 1 gets 1, 3, 0.
        padded = [*range(N_IMAGES), 0][rank::WORLD]
        coco = COCOEvaluator(coco_from(gt))
        for i in padded:
            out = outputs[i]
            if rank == 1 and i == 0:  # the repeat: other detections, which must be dropped
                out = {k: v[:1] for k, v in out.items()}
            coco.update([out], [targets[i]])
        top = TopK((1, 2))
        top.update(LOGITS[2 * rank : 2 * rank + 2], LABELS[2 * rank : 2 * rank + 2])
        result = {"coco": coco.compute(per_category=True), "top": top.compute()}
        Path(out_dir, f"{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


def test_two_ranks_equal_one(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD)
    gt, outputs, targets = make_case(13, n_images=N_IMAGES)
    alone = evaluate(gt, outputs, targets, "fast")
    for rank in range(WORLD):
        result = json.loads((tmp_path / f"{rank}.json").read_text())
        assert result["coco"] == alone
        # The 4 samples of test_metrics_topk over both ranks: top1 2/4, top2 3/4.
        assert result["top"] == {"top1": 2 / 4, "top2": 3 / 4}
