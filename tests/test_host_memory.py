"""A CPU run's ``mem``: the RSS of this process tree (DataLoader workers included), not the
machine's RAM used, which other jobs share."""

from __future__ import annotations

import contextlib
import subprocess
import sys

import psutil
import pytest

from perfkit.probes import DeviceSample, HostProbe, MemoryTracker

MIB = 2**20
#: A child that touches 128 MiB, says so, and waits for its stdin to close.
CHILD = (
    "import sys; block = bytearray(128 * 2**20); block[::4096] = b'x' * (len(block) // 4096); "
    "print('ready', flush=True); sys.stdin.read()"
)


@pytest.fixture
def child() -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    yield proc
    proc.communicate()


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
    assert summary["mem_source"] == "RSS of this process and its descendants / installed RAM"


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
