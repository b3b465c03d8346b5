"""torch.distributed runs launched by torchrun on the CPU (gloo): 1x2, 2x1 and a rank that fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import perfkit
from tests.conftest import assert_rebuilt_equals_live, free_port, read_step_rows

pytest.importorskip("torch")

REPO = Path(__file__).resolve().parents[1]

LOOP = textwrap.dedent(
    """
    import sys, time
    import torch, torch.distributed as dist
    import perfkit

    out, mode = sys.argv[1], sys.argv[2]
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(8, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    data = torch.utils.data.TensorDataset(torch.randn(32, 8), torch.randint(0, 2, (32,)))
    sampler = torch.utils.data.DistributedSampler(data, shuffle=False)
    loader = torch.utils.data.DataLoader(data, batch_size=4, sampler=sampler)
    with perfkit.Run("dist", out_dir=out, device="cpu", config={"bs": 4}, dist_timeout_s=30,
                     flush_interval_s=0.1) as run:
        for epoch in range(2):
            sampler.set_epoch(epoch)
            with run.phase("train") as train:
                if mode == "raise" and epoch == 1:
                    # no collectives: rank 1 fails, rank 0 is still looping when torchrun
                    # terminates it
                    for i, _ in enumerate(train.iterate(range(300), samples=4)):
                        time.sleep(0.05)
                        if rank == 1 and i == 2:
                            raise RuntimeError("rank 1 fails")
                    continue
                # 8 tokens a sample, as if each were a sequence of 8
                for x, y in train.iterate(loader, tokens=lambda batch: 8 * len(batch[0])):
                    loss = torch.nn.functional.cross_entropy(model(x), y)
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
    dist.destroy_process_group()
    """
)


def torchrun(script: Path, out: Path, mode: str, *launcher_args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            *launcher_args,
            str(script),
            str(out),
            mode,
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 120) -> tuple[int, str]:
    output, _ = proc.communicate(timeout=timeout)
    return proc.returncode, output


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "loop.py"
    path.write_text(LOOP)
    return path


def run_dir_of(out: Path) -> Path:
    (run_dir,) = out.glob("dist-*")
    return run_dir


def steps_of(path: Path) -> list[int]:
    return [r["step"] for r in read_step_rows(path)]


def test_two_processes_report_global_throughput(tmp_path, script):
    out = tmp_path / "runs"
    port = free_port()
    code, output = finish(
        torchrun(script, out, "train", "--nproc_per_node=2", f"--master_port={port}")
    )
    assert code == 0, output
    run_dir = run_dir_of(out)
    summary = json.loads((run_dir / "summary.json").read_text())
    # 2 epochs x 32 samples over both ranks; each rank takes 4 steps of 4 per epoch
    assert summary["train_samples"] == 64
    assert summary["train_steps"] == 8  # steps per rank, not summed over ranks
    assert summary["meta"]["layout"] == "1x2" and summary["meta"]["world_size"] == 2
    # throughput = global samples / slowest rank's seconds, and per device half of it
    assert summary["p_train"] == pytest.approx(64 / summary["train_wall_s_max"])
    assert summary["p_train_per_device"] == pytest.approx(summary["p_train"] / 2)
    # tokens too: every rank's (64 x 8) over the slowest rank's seconds; FlagPerf's token/p/s
    # is that over the world size
    assert (summary["train_tokens"], summary["train_tokens_from"]) == (512, "callable")
    assert summary["tps_train"] == pytest.approx(512 / summary["train_wall_s_max"])
    assert summary["tps_train_per_device"] == pytest.approx(summary["tps_train"] / 2)
    assert summary["train_wall_s_min"] <= summary["train_wall_s_max"]
    assert summary["train_wall_s_std"] >= 0
    # each rank wrote its own records: 8 steps each, in order
    assert steps_of(run_dir / "steps.bin") == list(range(4)) * 2
    assert steps_of(run_dir / "steps-rank1.bin") == list(range(4)) * 2
    assert not list(out.glob("dist-*/summary-*"))  # only rank 0 writes the summary
    # both ranks' host memory (a CPU run's device memory), rebuilt from both ranks' records
    assert len(summary["mem_per_device"]) == 2
    assert_rebuilt_equals_live(run_dir)


@pytest.mark.slow
def test_two_nodes_on_one_machine(tmp_path, script):
    out = tmp_path / "runs"
    port = free_port()
    common = ["--nnodes=2", "--nproc_per_node=1", "--master_addr=127.0.0.1"]
    nodes = [
        torchrun(script, out, "train", *common, f"--node_rank={rank}", f"--master_port={port}")
        for rank in (0, 1)
    ]
    results = [finish(node) for node in nodes]
    assert all(code == 0 for code, _ in results), results
    summary = json.loads((run_dir_of(out) / "summary.json").read_text())
    assert summary["meta"]["layout"] == "2x1"
    assert summary["train_samples"] == 64
    assert_rebuilt_equals_live(run_dir_of(out))


@pytest.mark.slow
def test_a_failing_rank_stops_the_job_and_keeps_every_ranks_records(tmp_path, script):
    out = tmp_path / "runs"
    port = free_port()
    code, output = finish(
        torchrun(script, out, "raise", "--nproc_per_node=2", f"--master_port={port}"), 90
    )
    assert code != 0
    assert "rank 1 fails" in output
    run_dir = run_dir_of(out)
    # rank 1: epoch 0's 4 steps, then steps 0 and 1 of epoch 1 (step 2 raised)
    assert steps_of(run_dir / "steps-rank1.bin") == [0, 1, 2, 3, 0, 1]
    # rank 0 was terminated mid-loop: its epoch-0 steps and some epoch-1 steps are on disk
    rank0 = steps_of(run_dir / "steps.bin")
    assert rank0[:4] == [0, 1, 2, 3] and len(rank0) > 4
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert summary["error"].startswith("SystemExit")


def test_world_size_without_a_process_group_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(perfkit.RunError, match=r"torch\.distributed is not initialised"):
        perfkit.Run("r", out_dir=tmp_path, device="cpu").start()
