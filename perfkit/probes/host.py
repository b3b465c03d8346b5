"""The host probe: this process's RSS, its process tree's PSS and RSS, system memory and
whole-machine CPU utilisation (psutil)."""

from __future__ import annotations

import importlib.util
import os
import platform
import time
from typing import TYPE_CHECKING, Any

from perfkit.probes._base import Probe, register_probe
from perfkit.probes._sample import NAN, DeviceSample, ProbeError

if TYPE_CHECKING:
    import psutil

HOST_DEVICE = "host"


def _busy_and_total(times: Any) -> tuple[float, float]:
    """(busy, total) CPU seconds from ``psutil.cpu_times()``; idle and iowait are not busy, and
    Linux's guest times are already inside user/nice."""
    fields = times._asdict()
    total = sum(fields.values()) - fields.get("guest", 0.0) - fields.get("guest_nice", 0.0)
    idle = fields.get("idle", 0.0) + fields.get("iowait", 0.0)
    return total - idle, total


#: PSS is read again only after this many times what its last read took (about 5 % of a core).
PSS_COST_SHARE = 20.0
#: Environment variables that name a process's rank in a distributed job (torchrun, Lightning).
RANK_VARIABLES = ("RANK", "LOCAL_RANK")


def read_pss(pid: int) -> float | None:
    """Proportional set size of process ``pid`` in bytes, from ``/proc/<pid>/smaps_rollup``
    (Linux 4.14+): each shared page counted as a fraction, over the processes that share it.
    None where that file cannot be read (another OS, an older kernel, no permission, gone)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return float(line.split()[1]) * 1024  # the kernel writes kB (KiB)
    except (OSError, IndexError, ValueError):
        return None
    return None


class ProcessTree:
    """This process and its descendants, less other ranks of the same job (a child whose
    ``RANK`` / ``LOCAL_RANK`` differ from this process's, as Lightning starts rank 1 under
    rank 0 on one machine) and their descendants. A child's rank is read once from its
    environment; one that cannot be read counts as part of this job."""

    def __init__(self, process: psutil.Process) -> None:
        self.process = process
        self._own = {name: os.environ.get(name, "0") for name in RANK_VARIABLES}
        self._other_rank: dict[tuple[int, float], bool] = {}

    def _is_other_rank(self, child: psutil.Process, known: dict[tuple[int, float], bool]) -> bool:
        """Whether ``child`` is another rank (``known``: the answers of the previous call)."""
        import psutil

        try:
            key = (child.pid, child.create_time())
            if key not in known:
                env = child.environ()
                known[key] = any(
                    name in env and env[name] != own for name, own in self._own.items()
                )
            self._other_rank[key] = known[key]
            return known[key]
        except psutil.Error:
            return False

    def members(self) -> list[psutil.Process]:
        """This process, then its descendants that belong to this rank (children first)."""
        import psutil

        out = [self.process]
        stack = [self.process]
        known = self._other_rank
        self._other_rank = {}  # only the children alive now are kept: no growth over a run
        while stack:
            try:
                children = stack.pop().children()
            except psutil.Error:
                continue
            for child in children:
                if not self._is_other_rank(child, known):
                    out.append(child)
                    stack.append(child)
        return out

    def memory(self, pss: bool = True) -> tuple[float, float]:
        """(RSS, PSS) of the tree in bytes; PSS is NaN when not asked for (``pss=False``) or
        when any member's cannot be read. A process that exits while being read counts 0."""
        import psutil

        rss, total_pss = 0.0, 0.0 if pss else NAN
        for member in self.members():
            try:
                member_rss = member.memory_info().rss
            except psutil.Error:
                continue
            rss += member_rss
            if not pss:
                continue
            member_pss = read_pss(member.pid)
            if member_pss is None and member.is_running():
                total_pss = NAN
            total_pss += member_pss or 0.0
        return rss, total_pss


@register_probe
class HostProbe(Probe):
    """Host memory and CPU through psutil. Device id ``"host"``.

    ``memory_used_bytes`` is system RAM not available to new processes (total - available),
    ``memory_total_bytes`` the installed RAM, ``process_rss_bytes`` this process's resident
    set; ``process_tree_pss_bytes`` and ``process_tree_rss_bytes`` the proportional and the
    resident set sizes summed over this process and its descendants (DataLoader workers,
    tools it started; not other ranks of the same job, see :class:`ProcessTree`). PSS counts
    a page shared by n processes as 1/n in each, so the sum counts it once; RSS counts it in
    every process (see docs/probes.md). PSS is NaN where ``/proc/<pid>/smaps_rollup`` cannot
    be read, with ``pss=False``, and in samples taken before ``PSS_COST_SHARE`` times the last
    PSS read's duration has passed (the kernel walks the page tables: tens of ms per GiB).
    ``cpu_utilization_pct`` is the whole machine's busy share (all cores, 0-100) since the
    previous sample (since ``open`` for the first one). Kept apart from
    its own counters, so other users of ``psutil.cpu_percent`` do not disturb it.
    """

    name = "host"
    kind = "host"

    def __init__(self, pss: bool = True) -> None:
        #: Read the tree's PSS (a Run turns it off where its memory is an accelerator's).
        self.pss = pss
        self._pss_due = 0.0  # time.monotonic() from which PSS is read again
        self._psutil: Any = None
        self._process: psutil.Process | None = None
        self._tree: ProcessTree | None = None
        self._last_cpu: tuple[float, float] = (NAN, NAN)

    def is_available(self) -> bool:
        return importlib.util.find_spec("psutil") is not None

    def open(self) -> None:
        import psutil

        self._psutil = psutil
        self._process = psutil.Process(os.getpid())
        self._tree = ProcessTree(self._process)
        self._last_cpu = _busy_and_total(psutil.cpu_times())

    def sample(self) -> list[DeviceSample]:
        if self._process is None or self._tree is None:
            raise ProbeError("host probe sampled before open()")
        psutil = self._psutil
        memory = psutil.virtual_memory()
        rss = self._process.memory_info().rss
        started = time.monotonic()
        read = self.pss and started >= self._pss_due
        tree_rss, tree_pss = self._tree.memory(pss=read)
        if read:  # the kernel walks every page table: keep that under 1/PSS_COST_SHARE of a core
            self._pss_due = started + PSS_COST_SHARE * (time.monotonic() - started)
        busy, total = _busy_and_total(psutil.cpu_times())
        last_busy, last_total = self._last_cpu
        self._last_cpu = (busy, total)
        elapsed = total - last_total
        cpu_pct = NAN
        if elapsed > 0:  # else both readings fell in one clock tick
            cpu_pct = min(100.0, max(0.0, 100.0 * (busy - last_busy) / elapsed))
        return [
            DeviceSample(
                probe=self.name,
                device=HOST_DEVICE,
                device_name=platform.node(),
                memory_used_bytes=float(memory.total - memory.available),
                memory_total_bytes=float(memory.total),
                process_rss_bytes=float(rss),
                process_tree_rss_bytes=tree_rss,
                process_tree_pss_bytes=tree_pss,
                cpu_utilization_pct=cpu_pct,
            )
        ]

    def close(self) -> None:
        self._process = None
        self._tree = None
