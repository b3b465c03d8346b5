"""The host probe: this process's RSS, its process tree's memory (every page once) and RSS,
system memory and whole-machine CPU utilisation (psutil)."""

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


#: Descendants' USS is read again only after this many times what its last read took (about
#: 5 % of a core).
USS_COST_SHARE = 20.0
#: Environment variables that name a process's rank in a distributed job (torchrun, Lightning).
RANK_VARIABLES = ("RANK", "LOCAL_RANK")


def read_uss(pid: int) -> float | None:
    """Unique set size of process ``pid`` in bytes: its private pages (``Private_Clean`` +
    ``Private_Dirty`` of ``/proc/<pid>/smaps_rollup``, Linux 4.14+), mapped by no other
    process. None where that file cannot be read (another OS, an older kernel, no
    permission, gone)."""
    total, found = 0.0, 0
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith((b"Private_Clean:", b"Private_Dirty:")):
                    total += float(line.split()[1]) * 1024  # the kernel writes kB (KiB)
                    found += 1
    except (OSError, IndexError, ValueError):
        return None
    return total if found == 2 else None


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

    def memory(self, uss: bool = True) -> tuple[float, float]:
        """(RSS summed over the tree, this process's RSS + its descendants' USS) in bytes. The
        second counts every page the tree maps once - a page shared between the processes (a
        forked worker's copy-on-write pages, the libraries) in this process's RSS, a page only
        a descendant has in its USS - and never reads this process's own page tables (the
        kernel would lock its memory map while it walks them). NaN when a descendant's USS is
        not read (``uss=False``) or cannot be. A process that exits while
        being read counts 0."""
        import psutil

        members = self.members()
        rss = unique = 0.0
        for k, member in enumerate(members):
            try:
                member_rss = member.memory_info().rss
            except psutil.Error:
                continue
            rss += member_rss
            if k == 0:
                unique += member_rss
                continue
            member_uss = read_uss(member.pid) if uss else None
            if member_uss is None and (not uss or member.is_running()):
                unique = NAN
            unique += member_uss or 0.0
        return rss, unique


@register_probe
class HostProbe(Probe):
    """Host memory and CPU through psutil. Device id ``"host"``.

    ``memory_used_bytes`` is system RAM not available to new processes (total - available),
    ``memory_total_bytes`` the installed RAM, ``process_rss_bytes`` this process's resident
    set. Over this process and its descendants (DataLoader workers, tools it started; not
    other ranks of the same job, see :class:`ProcessTree`): ``process_tree_unique_bytes``
    counts every page once - this process's RSS plus each descendant's unique set (USS) -
    and ``process_tree_rss_bytes`` sums their resident sets, counting a shared page in every
    process that maps it (see docs/probes.md). With descendants, the unique figure is NaN
    where a descendant's ``/proc/<pid>/smaps_rollup`` cannot be read, with ``uss=False``, and
    in samples taken before ``USS_COST_SHARE`` times the last USS read's duration has passed
    (the kernel walks a descendant's page tables: tens of ms per GiB mapped); without
    descendants it is this process's RSS, every sample.
    ``cpu_utilization_pct`` is the whole machine's busy share (all cores, 0-100) since the
    previous sample (since ``open`` for the first one). Kept apart from its own counters, so
    other users of ``psutil.cpu_percent`` do not disturb it.
    """

    name = "host"
    kind = "host"

    def __init__(self, uss: bool = True) -> None:
        #: Read descendants' USS (a Run turns it off where its memory is an accelerator's).
        self.uss = uss
        self._uss_due = 0.0  # time.monotonic() from which USS is read again
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
        read = self.uss and started >= self._uss_due
        tree_rss, tree_unique = self._tree.memory(uss=read)
        if read:  # the kernel walks page tables: keep that under 1/USS_COST_SHARE of a core
            self._uss_due = started + USS_COST_SHARE * (time.monotonic() - started)
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
                process_tree_unique_bytes=tree_unique,
                cpu_utilization_pct=cpu_pct,
            )
        ]

    def close(self) -> None:
        self._process = None
        self._tree = None
