"""Device and host probes, their output parsers, a background sampler and the ``mem`` summary.

``import perfkit.probes`` imports neither torch nor pynvml and starts nothing: NVML is
initialised on a probe's first ``open()``, tools run only when sampled.
"""

from __future__ import annotations

from perfkit.probes._base import (
    Probe,
    available_probes,
    register_probe,
    registered_probes,
    resolve_probes,
)
from perfkit.probes._sample import DeviceSample, ProbeError, ProbeParseError
from perfkit.probes.allocator import TorchAllocatorProbe
from perfkit.probes.amdsmi import AmdSmiLibProbe
from perfkit.probes.host import HOST_DEVICE, HostProbe
from perfkit.probes.nvml import NvmlProbe
from perfkit.probes.parsers import TOOLS, parse
from perfkit.probes.sampler import Sampler, check_interval
from perfkit.probes.tools import NvidiaSmiProbe, ToolProbe
from perfkit.probes.tracker import MemoryTracker, format_mem, merge_memory_summaries

__all__ = [
    "HOST_DEVICE",
    "TOOLS",
    "AmdSmiLibProbe",
    "DeviceSample",
    "HostProbe",
    "MemoryTracker",
    "NvidiaSmiProbe",
    "NvmlProbe",
    "Probe",
    "ProbeError",
    "ProbeParseError",
    "Sampler",
    "ToolProbe",
    "TorchAllocatorProbe",
    "available_probes",
    "check_interval",
    "format_mem",
    "merge_memory_summaries",
    "parse",
    "register_probe",
    "registered_probes",
    "resolve_probes",
]
