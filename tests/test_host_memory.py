"""A CPU run's ``mem``: this process tree's memory with every page once (this process's RSS plus
its descendants' USS: DataLoader workers included, other ranks of the job left out), its RSS
where that cannot be read, never the machine's RAM used, which other jobs share."""

from __future__ import annotations

import contextlib
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import psutil
import pytest
import torch

from perfkit.probes import DeviceSample, HostProbe, MemoryTracker

MIB = 2**20
#: A child that touches 128 MiB, says so, and waits for its stdin to close.
CHILD = (
    "import sys; block = bytearray(128 * 2**20); block[::4096] = b'x' * (len(block) // 4096); "
    "print('ready', flush=True); sys.stdin.read()"
)


def start_child(**env: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    return proc


@pytest.fixture
def child() -> Iterator[subprocess.Popen[str]]:
    proc = start_child()
    yield proc
    proc.communicate()


def smaps(pid: int, *fields: str) -> int:
    """The sum of ``fields`` ("Private_Dirty", ...) of /proc/<pid>/smaps_rollup, in bytes (the
    kernel writes kB)."""
    with open(f"/proc/{pid}/smaps_rollup") as f:
        return sum(int(line.split()[1]) * 1024 for line in f if line.split(":")[0] in fields)


def own_rss() -> int:
    """This process's resident set from /proc/self/statm (pages), in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Numbers(torch.utils.data.Dataset[int]):
    def __len__(self) -> int:
        return 64

    def __getitem__(self, i: int) -> int:
        return i


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps_rollup"), reason="Linux 4.14+ only")
def test_the_tree_counts_shared_pages_once_and_leaves_other_ranks_out(child) -> None:
    # This process, two real DataLoader workers (forked: they share torch's pages with it), a
    # real child that touched 128 MiB, and a second child started as rank 1 of this job (as
    # Lightning starts it on one machine). Read here from /proc: this process's RSS plus the
    # private pages (Private_Clean + Private_Dirty of smaps_rollup) of every descendant but
    # rank 1 and its own - every page once.
    other_rank = start_child(RANK="1", LOCAL_RANK="1")
    loader = torch.utils.data.DataLoader(Numbers(), batch_size=4, num_workers=2)
    batches = iter(loader)
    next(batches)  # the workers are up
    probe = HostProbe()
    probe.open()
    private = ("Private_Clean", "Private_Dirty")
    try:
        ours = [p for p in psutil.Process().children(recursive=True) if p.pid != other_rank.pid]
        assert {w.pid for w in batches._workers} <= {p.pid for p in ours}  # type: ignore[attr-defined]
        before = own_rss() + sum(smaps(p.pid, *private) for p in ours)
        (sample,) = probe.sample()
        after = own_rss() + sum(smaps(p.pid, *private) for p in ours)
        rss = psutil.Process().memory_info().rss + sum(p.memory_info().rss for p in ours)
        other = smaps(other_rank.pid, *private)
    finally:
        probe.close()
        del batches
        other_rank.communicate()
    assert other >= 128 * MIB  # it touched 128 MiB: counted, it would show
    low, high = min(before, after), max(before, after)
    assert low * 0.95 <= sample.process_tree_unique_bytes <= high * 1.05
    # the child's 128 MiB are its own, so they count in full
    assert sample.process_tree_unique_bytes >= sample.process_rss_bytes + 128 * MIB * 0.95
    # RSS counts torch's shared pages once per worker: more than every page once
    assert sample.process_tree_rss_bytes == pytest.approx(rss, rel=0.05)
    assert sample.process_tree_rss_bytes > sample.process_tree_unique_bytes
    tracker = MemoryTracker(include_host=True)
    tracker.update(sample)
    summary = tracker.summary()
    assert summary["mem_peak_bytes"] == sample.process_tree_unique_bytes
    assert summary["mem_source"].startswith("RSS of this process + USS of its descendants")


def test_the_host_probe_sums_the_rss_of_this_process_and_its_children(child) -> None:
    probe = HostProbe()
    probe.open()
    try:
        (sample,) = probe.sample()
    finally:
        probe.close()
    child_rss = psutil.Process(child.pid).memory_info().rss  # read independently
    # The tree is this process plus every descendant: the child's 128 MiB are touched page by
    # page, so its RSS is at least 128 MiB = 134217728 bytes. Other descendants may be alive
    # too (torch.compile's worker pool from an earlier test): read them all independently.
    assert child_rss >= 128 * MIB
    descendants = 0
    for process in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            descendants += process.memory_info().rss
    extra = sample.process_tree_rss_bytes - sample.process_rss_bytes
    assert sample.process_tree_unique_bytes <= sample.process_tree_rss_bytes
    assert extra >= child_rss * 0.95
    assert extra == pytest.approx(descendants, rel=0.05)


def test_a_cpu_run_folds_the_process_tree_not_the_system_ram() -> None:
    # Two samples, hand-made: system RAM used 10 GiB then 12 GiB (other jobs), the tree's RSS
    # 3 GiB then 2 GiB, of 16 GiB installed. mem = peak tree RSS / installed = "3.0/16.0".
    gib = 2.0**30
    tracker = MemoryTracker(include_host=True)
    for system, tree in ((10 * gib, 3 * gib), (12 * gib, 2 * gib)):
        tracker.update(
            DeviceSample(
                "host",
                "host",
                memory_used_bytes=system,
                memory_total_bytes=16 * gib,
                process_rss_bytes=1 * gib,
                process_tree_rss_bytes=tree,
            )
        )
    summary = tracker.summary()
    assert summary["mem"] == "3.0/16.0" and summary["mem_peak_bytes"] == 3 * gib
    assert summary["mem_source"].startswith("RSS of this process and its descendants")


def test_records_without_the_tree_fall_back_to_system_ram_and_say_so() -> None:
    # A run recorded before the host probe read the tree: its mem stays system RAM used
    # (6 GiB of 16 GiB: "6.0/16.0"), and mem_source says that is what it is.
    gib = 2.0**30
    tracker = MemoryTracker(include_host=True)
    tracker.update(
        DeviceSample("host", "host", memory_used_bytes=6 * gib, memory_total_bytes=16 * gib)
    )
    summary = tracker.summary()
    assert summary["mem"] == "6.0/16.0"
    assert summary["mem_source"] == "system RAM used (all processes) / installed RAM"


def test_an_accelerator_mem_says_it_is_device_memory() -> None:
    tracker = MemoryTracker()
    tracker.update(
        DeviceSample("nvml", "nvml:0", memory_used_bytes=2 * 2.0**30, memory_total_bytes=2.0**32)
    )
    assert tracker.summary()["mem_source"] == "device memory used (all processes) / capacity"


def test_samples_between_uss_reads_do_not_mix_rss_into_the_peak() -> None:
    # every page once 1 GiB (RSS 3 GiB), then a sample between two USS reads (RSS 3.5 GiB
    # only), then 1.5 GiB: mem is the peak of the first kind, 1.5 of 16 GiB.
    gib = 2.0**30
    tracker = MemoryTracker(include_host=True)
    for rss, unique in ((3 * gib, 1 * gib), (3.5 * gib, float("nan")), (3.2 * gib, 1.5 * gib)):
        tracker.update(
            DeviceSample(
                "host",
                "host",
                memory_total_bytes=16 * gib,
                process_tree_rss_bytes=rss,
                process_tree_unique_bytes=unique,
            )
        )
        if rss == 3.5 * gib:
            assert tracker.summary()["mem"] == "1.0/16.0"
    assert tracker.summary()["mem"] == "1.5/16.0"


def test_uss_is_read_again_only_after_twenty_times_its_cost(child) -> None:
    probe = HostProbe()
    probe.open()
    try:
        started = time.monotonic()
        (first,) = probe.sample()
        took = time.monotonic() - started
        (second,) = probe.sample()  # at once: within 20x the first read's duration
        skipped = time.monotonic() - started < 20 * took
    finally:
        probe.close()
    assert first.process_tree_unique_bytes > 128 * MIB  # the child's own pages
    assert not skipped or math.isnan(second.process_tree_unique_bytes)
    assert second.process_tree_rss_bytes > 0
    off = HostProbe(uss=False)
    off.open()
    try:
        (sample,) = off.sample()
    finally:
        off.close()
    assert math.isnan(sample.process_tree_unique_bytes)  # a descendant not read
