"""Rank and world helpers over torch.distributed.

Everything here works without torch.distributed being initialised (a single process is rank 0 of a
world of 1) and reads the launcher's environment (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE,
set by torchrun) when no process group exists yet. torch is imported lazily.
"""

from __future__ import annotations

import os
import sys
from typing import Any


def _dist() -> Any | None:
    """torch.distributed when it is imported, available and initialised, else None."""
    if "torch" not in sys.modules:
        return None
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist
    return None


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as err:
        raise ValueError(f"environment variable {name}={raw!r} is not an integer") from err


def is_distributed() -> bool:
    """True when a torch.distributed process group with more than one rank is active."""
    return world_size() > 1 and _dist() is not None


def rank() -> int:
    """Global rank of this process (0 when not distributed)."""
    dist = _dist()
    return int(dist.get_rank()) if dist is not None else _env_int("RANK", 0)


def world_size() -> int:
    """Number of processes in the job (1 when not distributed)."""
    dist = _dist()
    return int(dist.get_world_size()) if dist is not None else _env_int("WORLD_SIZE", 1)


def local_rank() -> int:
    """Rank of this process on its node."""
    return _env_int("LOCAL_RANK", 0)


def local_world_size() -> int:
    """Processes per node (the M of the seeds' NxM layout)."""
    return _env_int("LOCAL_WORLD_SIZE", world_size())


def layout() -> str:
    """Nodes x processes per node as the seeds write it: "1x1", "1x8", "2x8"."""
    per_node = max(1, local_world_size())
    nodes = max(1, world_size() // per_node)
    return f"{nodes}x{per_node}"


def all_gather_object(obj: Any, group: Any = None) -> list[Any]:
    """Gather a picklable object from every rank, in rank order; ``[obj]`` when not distributed.

    ``group``: a process group (default: the job's world group). On a gloo group the gather is
    perfkit's own (:func:`_gather_on_gloo`); on others it is ``torch.distributed``'s."""
    dist = _dist()
    if dist is None or dist.get_world_size() == 1:
        return [obj]
    if dist.get_backend(group) == "gloo":
        return _gather_on_gloo(dist, obj, group)
    gathered: list[Any] = [None] * dist.get_world_size(group)
    dist.all_gather_object(gathered, obj, group=group)
    return gathered


#: The tensors and works of the last gloo gather, released at the next gather (see below).
_last_gloo_gather: list[Any] = []


def _gather_on_gloo(dist: Any, obj: Any, group: Any) -> list[Any]:
    """``all_gather_object`` over gloo that cannot deadlock a later ``destroy_process_group``.

    A gloo work is freed by whichever of its worker thread and Python lets go of it last. When
    the worker thread is last, it takes the GIL to free the work's tensors; up to torch 2.7,
    ``destroy_process_group`` holds the GIL while it joins that thread (pytorch#154976): a
    destroy right after ``torch.distributed.all_gather_object`` hung about one run in three
    (torch 2.1.2, two ranks on 2 cores). Here Python holds the tensors and works until the next
    gather, or the interpreter's end, so the worker thread never frees them. That includes a
    gather that failed (a rank died). Released at once, those aborted the process at exit
    ("terminate called without an active exception": a thread that takes the GIL while the
    interpreter shuts down is ended) in 3 runs of 15 of tests/test_faults_ranks.py, released in
    an ``atexit`` hook in 1 of 20; held to the end, in 0 of 60.
    """
    import pickle

    import torch

    held = _last_gloo_gather
    held.clear()
    n_ranks = dist.get_world_size(group)
    payload = torch.frombuffer(bytearray(pickle.dumps(obj)), dtype=torch.uint8)
    size = torch.tensor([payload.numel()], dtype=torch.int64)
    sizes = [torch.zeros(1, dtype=torch.int64) for _ in range(n_ranks)]
    held += [size, sizes, dist.all_gather(sizes, size, group=group, async_op=True)]
    held[-1].wait()
    longest = max(int(s) for s in sizes)
    padded = torch.zeros(longest, dtype=torch.uint8)
    padded[: payload.numel()] = payload
    parts = [torch.empty(longest, dtype=torch.uint8) for _ in range(n_ranks)]
    held += [padded, parts, dist.all_gather(parts, padded, group=group, async_op=True)]
    held[-1].wait()
    return [
        pickle.loads(part[: int(n)].numpy().tobytes()) for part, n in zip(parts, sizes, strict=True)
    ]


def new_cpu_group(timeout_s: float) -> Any:
    """A gloo process group over all ranks with its own timeout, for perfkit's small collectives
    (run id, phase figures): it works beside an nccl job and fails after ``timeout_s`` seconds
    instead of hanging when a rank is gone. None when not distributed."""
    dist = _dist()
    if dist is None or dist.get_world_size() == 1:
        return None
    from datetime import timedelta

    return dist.new_group(backend="gloo", timeout=timedelta(seconds=timeout_s))
