"""Probes that run a vendor monitoring tool and parse what it prints.

Tools are run without a shell, with a timeout. nvidia-smi loops by itself (``--loop-ms``), so
its probe keeps one process for the whole run and reads its lines as they come; the others are
run once per sample (still no shell, no awk).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
from typing import IO, ClassVar

from perfkit.probes._base import Probe, register_probe
from perfkit.probes._sample import DeviceSample, ProbeError
from perfkit.probes.parsers import parse

_STDERR_TAIL = 500


class ToolProbe(Probe):
    """Runs ``<executable> <args...>`` per sample and parses its output with
    ``perfkit.probes.parse(name, ...)``. Device ids ``"<name>:<index as the tool prints it>"``.

    ``executable`` overrides the search of ``executables`` on PATH (and ``search_dirs``);
    ``timeout_s`` bounds one run of the tool (and the wait for a looping tool's first output).
    """

    executables: ClassVar[tuple[str, ...]]
    args: ClassVar[tuple[str, ...]] = ()
    search_dirs: ClassVar[tuple[str, ...]] = ()

    def __init__(self, executable: str | None = None, timeout_s: float = 10.0) -> None:
        self._explicit = executable
        self.timeout_s = timeout_s
        self._executable: str | None = None

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

    def sample(self) -> list[DeviceSample]:
        argv = self.argv()
        try:
            done = subprocess.run(
                argv,
                capture_output=True,
                encoding="utf-8",
                errors="replace",
                timeout=self.timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise ProbeError(f"{argv[0]} did not finish within {self.timeout_s:g} s") from exc
        if done.returncode != 0:
            raise ProbeError(
                f"{' '.join(argv)} exited with status {done.returncode}: "
                f"{done.stderr.strip()[-_STDERR_TAIL:]}"
            )
        return parse(self.name, done.stdout)


_NVIDIA_QUERY = "index,name,memory.used,memory.total,utilization.gpu,power.draw,temperature.gpu"


@register_probe
class NvidiaSmiProbe(ToolProbe):
    """``nvidia-smi --query-gpu=... --format=csv --loop-ms=N``: one process for the whole run,
    looping at the sampler's interval; ``sample()`` returns the newest row of every GPU
    (indices as nvidia-smi numbers them, all GPUs). Fails when the process exits or prints
    nothing for five intervals (at least ``timeout_s``)."""

    name = "nvidia-smi"
    executables = ("nvidia-smi",)

    def __init__(self, executable: str | None = None, timeout_s: float = 10.0) -> None:
        super().__init__(executable, timeout_s)
        self._interval_s = 0.5
        self._proc: subprocess.Popen[str] | None = None
        self._stderr: IO[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._lock = threading.Lock()
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
        # Kept open for the process's lifetime; read on failure, closed by close().
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115
        self._proc = subprocess.Popen(
            self.argv(),
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            stdin=subprocess.DEVNULL,
            encoding="utf-8",
            errors="replace",
        )
        self._last_line_t = time.monotonic()
        self._reader = threading.Thread(
            target=self._read, args=(self._proc,), name="perfkit-nvidia-smi", daemon=True
        )
        self._reader.start()
        # Complete once a GPU prints its second row (every GPU has printed), or the tool exits.
        if not self._complete.wait(max(self.timeout_s, 3 * self._interval_s)):
            self.close()
            raise ProbeError(f"{self.name} printed no complete sample within {self.timeout_s:g} s")

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            if not line.strip():
                continue
            with self._lock:
                self._last_line_t, self._last_line = time.monotonic(), line
                if self._header is None:
                    self._header = line
                elif line != self._header:
                    index = line.split(",", 1)[0].strip()
                    if index in self._rows:
                        self._complete.set()
                    self._rows[index] = line
        self._complete.set()  # end of output: let open() see the exit instead of waiting

    def _failure(self) -> str | None:
        assert self._proc is not None
        status = self._proc.poll()
        if status is not None:
            tail = ""
            if self._stderr is not None:
                self._stderr.seek(0)
                tail = self._stderr.read().decode(errors="replace").strip()[-_STDERR_TAIL:]
            return f"{self.name} exited with status {status}: {tail or self._last_line}"
        silent_s = time.monotonic() - self._last_line_t
        if silent_s > max(self.timeout_s, 5 * self._interval_s):
            return f"{self.name} printed nothing for {silent_s:.1f} s"
        return None

    def sample(self) -> list[DeviceSample]:
        if self._proc is None:
            raise ProbeError(f"{self.name} probe used before open()")
        with self._lock:
            failure = self._failure()
            header, rows = self._header, list(self._rows.values())
        if failure is not None:
            raise ProbeError(failure)
        if header is None or not rows:
            raise ProbeError(f"{self.name} has printed no GPU row yet")
        return parse(self.name, "\n".join([header, *rows]))

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(self.timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(self.timeout_s)
        if self._reader is not None:
            self._reader.join(self.timeout_s)  # the pipe ends when the process does
            if not self._reader.is_alive() and proc is not None and proc.stdout is not None:
                proc.stdout.close()
            self._reader = None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None


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
