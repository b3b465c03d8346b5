"""Gathering for real: two gloo processes on the CPU, as a padded DistributedSampler feeds them."""

from __future__ import annotations

import json
import socket
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from perfkit.metrics import COCOEvaluator, TopK
from tests.test_metrics_coco import coco_from, evaluate, make_case
from tests.test_metrics_topk import LABELS, LOGITS

WORLD = 2
N_IMAGES = 5


def _worker(rank: int, init_method: str, out_dir: str) -> None:
    dist.init_process_group(
        "gloo", init_method=init_method, rank=rank, world_size=WORLD, timeout=timedelta(seconds=60)
    )
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


def _gather_and_destroy(rank: int, ports: list[int]) -> None:
    # Each cycle: a new group, a perfkit gather, and a destroy at once (where torch <= 2.7's
    # destroy_process_group could deadlock against gloo's worker thread).
    from perfkit import distributed

    for port in ports:
        dist.init_process_group(
            "gloo",
            init_method=f"tcp://127.0.0.1:{port}",
            rank=rank,
            world_size=WORLD,
            timeout=timedelta(seconds=60),
        )
        assert distributed.all_gather_object({"rank": rank}) == [{"rank": 0}, {"rank": 1}]
        dist.destroy_process_group()


def _join(workers: mp.ProcessContext, deadline_s: float) -> None:
    for _ in range(int(deadline_s / 0.5)):
        if workers.join(timeout=0.5):
            return
    for process in workers.processes:
        process.kill()
    raise AssertionError(f"the two gloo workers did not finish within {deadline_s:.0f} s")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_two_ranks_equal_one(tmp_path: Path) -> None:
    # A TCP rendezvous on loopback (a file:// one hung once on torch 2.1), every collective
    # bounded by the group's timeout, and the workers joined with a deadline.
    init = f"tcp://127.0.0.1:{_free_port()}"
    workers = mp.spawn(_worker, args=(init, str(tmp_path)), nprocs=WORLD, join=False)
    _join(workers, 120)
    gt, outputs, targets = make_case(13, n_images=N_IMAGES)
    alone = evaluate(gt, outputs, targets, "fast")
    for rank in range(WORLD):
        result = json.loads((tmp_path / f"{rank}.json").read_text())
        assert result["coco"] == alone
        # The 4 samples of test_metrics_topk over both ranks: top1 2/4, top2 3/4.
        assert result["top"] == {"top1": 2 / 4, "top2": 3 / 4}


def test_destroy_right_after_a_gather_never_hangs() -> None:
    # Without perfkit's own gloo gather, one cycle in three or four hung on torch 2.1.2.
    ports = [_free_port() for _ in range(4)]
    workers = mp.spawn(_gather_and_destroy, args=(ports,), nprocs=WORLD, join=False)
    _join(workers, 120)


def _own_group_worker(rank: int, init_method: str, out_dir: str) -> None:
    dist.init_process_group(
        "gloo", init_method=init_method, rank=rank, world_size=WORLD, timeout=timedelta(seconds=60)
    )
    try:
        # one group per rank (every rank creates every group); each metric gathers over its own
        own = [dist.new_group([r]) for r in range(WORLD)][rank]
        alone = TopK((1, 2), process_group=own)
        alone.update(LOGITS[2 * rank : 2 * rank + 2], LABELS[2 * rank : 2 * rank + 2])
        result = alone.compute()
        Path(out_dir, f"{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(
    tuple(int(v) for v in torch.__version__.split(".")[:2]) < (2, 8),
    reason="torch <= 2.7's destroy_process_group can hang after gathers on gloo subgroups "
    "(pytorch#154976; 2 of 10 runs on torch 2.1.2)",
)
def test_process_group_gathers_over_that_group(tmp_path: Path) -> None:
    init = f"tcp://127.0.0.1:{_free_port()}"
    workers = mp.spawn(_own_group_worker, args=(init, str(tmp_path)), nprocs=WORLD, join=False)
    _join(workers, 120)
    # each rank's own two samples of test_metrics_topk: rank 0 (samples 0, 1): top1 1/2, top2
    # 2/2; rank 1 (samples 2, 3): top1 1/2, top2 1/2 - not the 2/4, 3/4 of both ranks
    expected = [{"top1": 1 / 2, "top2": 2 / 2}, {"top1": 1 / 2, "top2": 1 / 2}]
    for rank in range(WORLD):
        assert json.loads((tmp_path / f"{rank}.json").read_text()) == expected[rank]
