"""Probes that run a vendor monitoring tool and parse what it prints.

Tools are run without a shell, each in its own process group that is killed whole on timeout
or when sampling stops, with their output capped (``perfkit.probes._process``). nvidia-smi loops
by itself (``--loop-ms``), so its probe keeps one process for the whole run and reads its lines
as they come; the others are run once per sample (still no shell, no awk).
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from typing import ClassVar

from perfkit.probes._base import Probe, register_probe
from perfkit.probes._process import MAX_OUTPUT_BYTES, STDERR_TAIL_BYTES, ToolProcess
from perfkit.probes._sample import DeviceSample, ProbeError
from perfkit.probes.parsers import parse

_MAX_LINE_BYTES = 2**16  # a longer "line" from a looping tool is dropped unread


def _flood(executable: str, where: str) -> str:
    return (
        f"{executable} printed more than {MAX_OUTPUT_BYTES // 2**20} MiB {where}; "
        "the rest was discarded and the tool killed"
    )


class ToolProbe(Probe):
    """Runs ``<executable> <args...>`` per sample and parses its output with
    ``perfkit.probes.parse(name, ...)``. Device ids ``"<name>:<index as the tool prints it>"``.

    ``executable`` overrides the search of ``executables`` on PATH (and ``search_dirs``);
    ``timeout_s`` bounds one run of the tool (and the wait for a looping tool's first output):
    past it the tool's whole process group is killed. So is a tool that prints more than
    ``MAX_OUTPUT_BYTES`` (4 MiB) in one run.
    """

    executables: ClassVar[tuple[str, ...]]
    args: ClassVar[tuple[str, ...]] = ()
    search_dirs: ClassVar[tuple[str, ...]] = ()

    def __init__(self, executable: str | None = None, timeout_s: float = 10.0) -> None:
        self._explicit = executable
        self.timeout_s = timeout_s
        self._executable: str | None = None
        self._guard = threading.Lock()  # _tool and _interrupted, shared with interrupt()
        self._tool: ToolProcess | None = None
        self._interrupted = False

    def find(self) -> str | None:
        """The executable to run, or None when the tool is not installed."""
        if self._explicit is not None:
            return shutil.which(self._explicit)
        path = os.pathsep.join([os.environ.get("PATH", ""), *self.search_dirs])
        return next((p for name in self.executables if (p := shutil.which(name, path=path))), None)

    def is_available(self) -> bool:
        return self.find() is not None

    def open(self) -> None:
        self._executable = self.find()
        if self._executable is None:
            wanted = self._explicit or " / ".join(self.executables)
            raise ProbeError(f"{self.name}: {wanted} not found")

    def argv(self) -> list[str]:
        if self._executable is None:
            raise ProbeError(f"{self.name} probe used before open()")
        return [self._executable, *self.args]

    def interrupt(self) -> None:
        """Kill the running tool's process group; the current and later calls fail."""
        with self._guard:
            self._interrupted = True
            tool = self._tool
        if tool is not None:
            tool.kill()

    def _start(self, argv: list[str]) -> ToolProcess:
        with self._guard:
            if self._interrupted:
                raise ProbeError(f"{self.name}: sampling has stopped")
            self._tool = ToolProcess(argv)
            return self._tool

    def sample(self) -> list[DeviceSample]:
        argv = self.argv()
        tool = self._start(argv)
        try:
            out = tool.run_to_end(self.timeout_s)
        finally:
            with self._guard:
                self._tool = None
        status = tool.poll()
        if self._interrupted and status != 0:
            raise ProbeError(f"{argv[0]} was stopped: sampling has stopped")
        if tool.timed_out:
            raise ProbeError(
                f"{argv[0]} did not finish within {self.timeout_s:g} s; its process group "
                "was killed"
            )
        if tool.overflowed:
            raise ProbeError(_flood(argv[0], "in one run"))
        if status != 0:
            raise ProbeError(f"{' '.join(argv)} exited with status {status}: {tool.stderr_text()}")
        text = out.decode("utf-8", errors="replace")
        return parse(self.name, text.replace("\r\n", "\n").replace("\r", "\n"))  # as text mode


_NVIDIA_QUERY = "index,name,memory.used,memory.total,utilization.gpu,power.draw,temperature.gpu"


@register_probe
class NvidiaSmiProbe(ToolProbe):
    """``nvidia-smi --query-gpu=... --format=csv --loop-ms=N``: one process for the whole run,
    looping at the sampler's interval; ``sample()`` returns the newest row of every GPU
    (indices as nvidia-smi numbers them, all GPUs). Fails when the process exits, prints
    nothing for five intervals (at least ``timeout_s``) or prints more than 4 MiB in a
    second (then it is killed)."""

    name = "nvidia-smi"
    executables = ("nvidia-smi",)

    def __init__(self, executable: str | None = None, timeout_s: float = 10.0) -> None:
        super().__init__(executable, timeout_s)
        self._interval_s = 0.5
        self._reader: threading.Thread | None = None
        self._reader_done = threading.Event()  # the tool's output has ended
        self._lock = threading.Lock()  # what the reader thread shares with sample()
        self._header: str | None = None
        self._rows: dict[str, str] = {}  # newest line per GPU index
        self._complete = threading.Event()  # every GPU has printed once
        self._last_line_t = 0.0
        self._last_line = ""  # nvidia-smi prints some failures on stdout

    def set_interval(self, interval_s: float) -> None:
        self._interval_s = interval_s

    def argv(self) -> list[str]:
        loop_ms = max(50, round(self._interval_s * 1000))
        return [
            *super().argv(),
            f"--query-gpu={_NVIDIA_QUERY}",
            "--format=csv",
            f"--loop-ms={loop_ms}",
        ]

    def open(self) -> None:
        super().open()
        started = time.monotonic()
        tool = self._start(self.argv())
        self._last_line_t = started
        self._reader = threading.Thread(
            target=self._read, args=(tool,), name="perfkit-nvidia-smi", daemon=True
        )
        self._reader.start()
        # Complete once a GPU prints its second row (every GPU has printed), or the tool exits.
        complete = self._complete.wait(max(self.timeout_s, 3 * self._interval_s))
        if not complete or self._interrupted:
            self.close()
            if complete:
                waited = f"in the {time.monotonic() - started:.1f} s before sampling stopped"
            else:
                waited = f"within {self.timeout_s:g} s"
            raise ProbeError(f"{self.name} printed no complete sample {waited}")

    def _read(self, tool: ToolProcess) -> None:
        pending = b""
        for chunk in tool.chunks(window_s=1.0):
            lines = (pending + chunk).split(b"\n")
            pending = lines.pop()
            if len(pending) > _MAX_LINE_BYTES:
                pending = b""
            now = time.monotonic()
            with self._lock:
                for raw in lines:
                    self._take(raw.decode("utf-8", errors="replace").strip(), now)
        self._reader_done.set()
        self._complete.set()  # end of output: let open() see the exit instead of waiting

    def _take(self, line: str, now: float) -> None:
        if not line:
            return
        self._last_line_t, self._last_line = now, line
        if self._header is None:
            self._header = line
        elif line != self._header:
            index = line.split(",", 1)[0].strip()
            if index in self._rows:
                self._complete.set()
            self._rows[index] = line

    def _failure(self, tool: ToolProcess) -> str | None:
        if self._reader_done.is_set():  # output ended: the tool exited or was killed
            if tool.overflowed:
                return _flood(self.name, "in one second")
            tail = tool.stderr_text() or self._last_line[-STDERR_TAIL_BYTES:]
            return f"{self.name} exited with status {tool.poll()}: {tail}"
        silent_s = time.monotonic() - self._last_line_t
        if silent_s > max(self.timeout_s, 5 * self._interval_s):
            return f"{self.name} printed nothing for {silent_s:.1f} s"
        return None

    def sample(self) -> list[DeviceSample]:
        tool = self._tool
        if tool is None:
            raise ProbeError(f"{self.name} probe used before open()")
        with self._lock:
            failure = self._failure(tool)
            header, rows = self._header, list(self._rows.values())
        if failure is not None:
            raise ProbeError(failure)
        if header is None or not rows:
            raise ProbeError(f"{self.name} has printed no GPU row yet")
        return parse(self.name, "\n".join([header, *rows]))

    def close(self) -> None:
        with self._guard:
            tool, self._tool = self._tool, None
        if tool is not None:
            tool.kill()
        reader_done = True
        if self._reader is not None:
            self._reader.join(1.0)  # the pipes end with the process group
            reader_done = not self._reader.is_alive()
            self._reader = None
        if tool is not None:
            tool.close(close_pipes=reader_done)


@register_probe
class AmdSmiProbe(ToolProbe):
    name = "amd-smi"
    executables = ("amd-smi",)
    args = ("monitor", "-p", "-t", "-u", "-v")


@register_probe
class RocmSmiProbe(ToolProbe):
    name = "rocm-smi"
    executables = ("rocm-smi",)
    args = ("--showmeminfo", "vram", "--showuse", "--showtemp", "--showpower", "--json")


@register_probe
class HySmiProbe(ToolProbe):
    name = "hy-smi"
    executables = ("hy-smi",)


@register_probe
class IxsmiProbe(ToolProbe):
    name = "ixsmi"
    executables = ("ixsmi",)


@register_probe
class CnmonProbe(ToolProbe):
    name = "cnmon"
    executables = ("cnmon",)


@register_probe
class NpuSmiProbe(ToolProbe):
    name = "npu-smi"
    executables = ("npu-smi",)
    args = ("info",)


@register_probe
class MxSmiProbe(ToolProbe):
    name = "mx-smi"
    executables = ("mx-smi",)


@register_probe
class MthreadsGmiProbe(ToolProbe):
    name = "mthreads-gmi"
    executables = ("mthreads-gmi",)


@register_probe
class XpuSmiProbe(ToolProbe):
    name = "xpu-smi"
    executables = ("xpu_smi", "xpu-smi")
    search_dirs = ("/opt/xre/bin",)  # where FlagPerf's Kunlunxin scripts find xpu_smi
