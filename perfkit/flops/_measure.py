"""A measured peak FLOP/s where no datasheet figure exists: FlagPerf's ``computation-*`` cases
(a large square ``torch.mm``, warm-up, timed iterations, ``2 * n**3 * iterations / seconds``)
done carefully, and cached on disk so a run does not measure again.

Care taken beyond FlagPerf's case: random inputs (not zeros), a few sizes up to the largest
that fits a memory budget, blocks of iterations each long enough to time well (device events on
an accelerator, the host clock after a sync on the CPU), the best of several blocks, fp32 with
TF32 / HF32 turned off (``tf32`` with it on), and a time limit that skips sizes it cannot
finish in time.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from perfkit import checks
from perfkit.devices import device_name, resolve_device
from perfkit.flops.peaks import normalize_dtype
from perfkit.timing import HostTimer, WindowTimer

#: Square sizes tried (n of an n x n x n matmul), smallest first.
ACCELERATOR_SIZES = (2048, 4096, 8192)
CPU_SIZES = (256, 512, 1024)
#: Each timed block of iterations lasts about this long (seconds).
BLOCK_S = 0.2
#: Timed blocks per size; the best counts.
REPEATS = 5
#: Default time limit of one measurement (seconds): sizes that would pass it are skipped.
TIME_LIMIT_S = 30.0
#: Default memory budget for the three matrices: this share of free device memory (or of
#: available RAM on the CPU), at most MAX_BUDGET_BYTES.
BUDGET_SHARE = 1 / 8
MAX_BUDGET_BYTES = 3 * 2**30
_TORCH_DTYPES = {"fp64": "float64", "fp32": "float32", "tf32": "float32"}
_TORCH_DTYPES |= {"fp16": "float16", "bf16": "bfloat16"}
CACHE_FILE = "peaks.json"


@dataclass(frozen=True)
class MeasuredPeak:
    """A measured peak: ``flops`` (FLOP/s, 2 per multiply-add) of ``device_name`` for ``dtype``,
    the best block of the matmul of size ``size``; ``by_size`` the best FLOP/s per size tried;
    ``method`` says how; ``seconds`` how long the measurement took (wall clock);
    ``measured_at`` when (UTC, ISO 8601); ``key`` the cache key (device, driver and torch
    versions, dtype, CPU threads); ``cached`` whether it was read from the cache."""

    flops: float
    dtype: str
    device_name: str
    size: int
    by_size: dict[int, float]
    method: str
    seconds: float
    measured_at: str
    key: dict[str, str] = field(default_factory=dict)
    cached: bool = False

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["by_size"] = {str(n): v for n, v in self.by_size.items()}
        del out["cached"]
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MeasuredPeak:
        data = dict(data)
        data["by_size"] = {int(n): float(v) for n, v in data["by_size"].items()}
        return cls(**data, cached=True)


def cache_dir() -> Path:
    """Where measured peaks are kept: ``$PERFKIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/perfkit``,
    else ``~/.cache/perfkit``."""
    if os.environ.get("PERFKIT_CACHE_DIR"):
        return Path(os.environ["PERFKIT_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "perfkit"


def cache_key(device: str, dtype: str) -> dict[str, str]:
    """What a measured peak depends on: the device's name, the driver and torch builds (and
    vendor extensions), the dtype and, on the CPU, torch's thread count."""
    import torch

    from perfkit.environment import nvidia_driver, torch_versions

    key = {"device_name": device_name(device), "dtype": dtype}
    key |= torch_versions()
    if device == "cpu":
        key["threads"] = str(torch.get_num_threads())
    elif device.startswith("cuda") and not getattr(torch.version, "hip", None):
        key |= nvidia_driver()
    return key


def _key_text(key: dict[str, str]) -> str:
    return json.dumps(key, sort_keys=True)


def read_cache(key: dict[str, str], directory: Path | None = None) -> MeasuredPeak | None:
    """The cached peak for ``key``, or None (no cache file, no entry, an unreadable file)."""
    path = (directory or cache_dir()) / CACHE_FILE
    try:
        entry = json.loads(path.read_text()).get(_key_text(key))
        return MeasuredPeak.from_json(entry) if entry is not None else None
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None


def write_cache(peak: MeasuredPeak, directory: Path | None = None) -> None:
    """Add ``peak`` to the cache file (atomically: a temporary file renamed over it)."""
    directory = directory or cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / CACHE_FILE
    try:
        entries = json.loads(path.read_text())
        if not isinstance(entries, dict):
            entries = {}
    except (OSError, ValueError):
        entries = {}
    entries[_key_text(peak.key)] = peak.to_json()
    with tempfile.NamedTemporaryFile("w", dir=directory, delete=False, suffix=".tmp") as f:
        json.dump(entries, f, indent=1, sort_keys=True)
    os.replace(f.name, path)


@contextlib.contextmanager
def _matmul_precision(torch: Any, dtype: str) -> Iterator[None]:
    """fp32: TF32 (CUDA) and HF32 (Ascend) off; tf32: on; restored afterwards."""
    if dtype not in ("fp32", "tf32"):
        yield
        return
    before = torch.get_float32_matmul_precision()
    npu_matmul: Any = getattr(getattr(torch, "npu", None), "matmul", None)
    hf32_before = getattr(npu_matmul, "allow_hf32", None)
    torch.set_float32_matmul_precision("highest" if dtype == "fp32" else "high")
    if hf32_before is not None:
        npu_matmul.allow_hf32 = dtype == "tf32"
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)
        if hf32_before is not None:
            npu_matmul.allow_hf32 = hf32_before


def _budget_bytes(torch: Any, device: str) -> float:
    if device == "cpu":
        import psutil

        free = float(psutil.virtual_memory().available)
    else:
        kind, index = device.split(":")
        mem_get_info = getattr(getattr(torch, kind, None), "mem_get_info", None)
        free = float(mem_get_info(int(index))[0]) if callable(mem_get_info) else 8 * 2**30
    return min(free * BUDGET_SHARE, MAX_BUDGET_BYTES)


def _timer(device: str) -> WindowTimer:
    if device == "cpu":
        return HostTimer()
    from perfkit.timing import EventTimer

    return EventTimer(device.split(":")[0])


def _block_rate(torch: Any, a: Any, b: Any, out: Any, iterations: int, timer: WindowTimer) -> float:
    """FLOP/s of ``iterations`` back-to-back matmuls between two timer marks."""
    n = a.shape[0]
    start = timer.mark()
    for _ in range(iterations):
        torch.mm(a, b, out=out)
    end = timer.mark()
    timer.synchronize()
    seconds = timer.elapsed_s(start, end)
    timer.release(start)
    timer.release(end)
    return 2.0 * n**3 * iterations / seconds if seconds > 0 else math.nan


def _calibrate(torch: Any, a: Any, b: Any, out: Any, block_s: float, timer: WindowTimer) -> int:
    """Iterations that take about ``block_s``: doubled from 1 until a block takes half of it
    (as timeit's autorange), then scaled; these blocks are the warm-up."""
    flop = 2.0 * a.shape[0] ** 3
    iterations = 1
    while True:
        rate = _block_rate(torch, a, b, out, iterations, timer)
        seconds = flop * iterations / rate if rate > 0 else math.inf
        if seconds >= block_s / 2:
            return max(1, round(iterations * block_s / seconds)) if math.isfinite(seconds) else 1
        iterations *= 2


def measure_peak(
    device: Any = None,
    dtype: Any = "bf16",
    *,
    sizes: Sequence[int] | None = None,
    memory_budget_bytes: float | None = None,
    block_s: float = BLOCK_S,
    repeats: int = REPEATS,
    time_limit_s: float = TIME_LIMIT_S,
    cache: bool = True,
    refresh: bool = False,
    directory: str | os.PathLike[str] | None = None,
    timer: WindowTimer | None = None,
) -> MeasuredPeak:
    """The best sustained dense matmul FLOP/s of ``device`` for ``dtype`` (see the module).

    ``device``: None (the accelerator torch uses, else the CPU), "cpu", "cuda:0", a
    torch.device. ``dtype``: "fp64", "fp32" (TF32 / HF32 off), "tf32", "fp16", "bf16" (or a
    torch dtype). ``sizes``: the n of the n x n x n matmuls (default 2048, 4096, 8192 on an
    accelerator, 256, 512, 1024 on the CPU); a size whose three matrices do not fit
    ``memory_budget_bytes`` (default 1/8 of free memory, at most 3 GiB) is skipped, so is one
    the ``time_limit_s`` (seconds, 30) would not allow. Each size: a warm-up, then ``repeats``
    blocks of about ``block_s`` seconds. The peak is read from (and written to) the cache in
    ``directory`` (default :func:`cache_dir`) unless ``cache=False``; ``refresh=True``
    measures again. ``timer``: a :class:`perfkit.timing.WindowTimer` (tests; default device
    events, the host clock on the CPU).
    """
    import torch

    name = normalize_dtype(dtype)
    if name not in _TORCH_DTYPES:
        raise ValueError(
            f"Expected argument `dtype` to be one of {tuple(_TORCH_DTYPES)} but got {dtype!r}"
        )
    repeats = int(checks.positive_number("repeats", repeats))
    checks.positive_number("block_s", block_s, "seconds")
    checks.positive_number("time_limit_s", time_limit_s, "seconds")
    if sizes is not None:
        if not all(isinstance(n, int) and not isinstance(n, bool) for n in sizes):
            raise checks.wrong_type("sizes", "positive ints", sizes)
        if not sizes or min(sizes) < 1:
            raise checks.wrong_value("sizes", "positive ints", sizes)
    resolved = resolve_device("auto" if device is None else device)
    key = cache_key(resolved, name)
    where = Path(directory) if directory is not None else None
    if cache and not refresh:
        found = read_cache(key, where)
        if found is not None:
            return found
    started = time.perf_counter()
    torch_dtype = getattr(torch, _TORCH_DTYPES[name])
    chosen = sorted(sizes or (CPU_SIZES if resolved == "cpu" else ACCELERATOR_SIZES))
    budget = memory_budget_bytes or _budget_bytes(torch, resolved)
    item = torch.empty((), dtype=torch_dtype).element_size()
    fitting = [n for n in chosen if 3 * n * n * item <= budget] or [
        2 ** int(math.log2(math.sqrt(budget / (3 * item))))
    ]
    timer = timer or _timer(resolved)
    by_size: dict[int, float] = {}
    iterations_of: dict[int, int] = {}
    per_flop_s: float | None = None  # seconds per FLOP of the last size, to plan the next
    with _matmul_precision(torch, name), torch.no_grad():
        for n in fitting:
            flop = 2.0 * n**3
            spent = time.perf_counter() - started
            if per_flop_s is not None:  # calibration, a warm-up and the timed blocks
                block = max(block_s, per_flop_s * flop)
                if spent + block * (repeats + 3) > time_limit_s:
                    break
            a = torch.randn(n, n, device=resolved).to(torch_dtype)
            b = torch.randn(n, n, device=resolved).to(torch_dtype)
            out = torch.empty(n, n, device=resolved, dtype=torch_dtype)
            _block_rate(torch, a, b, out, 1, timer)  # first call: kernels chosen
            iterations = _calibrate(torch, a, b, out, block_s, timer)
            iterations_of[n] = iterations
            per_flop_s = block_s / (flop * iterations)
            by_size[n] = max(
                _block_rate(torch, a, b, out, iterations, timer) for _ in range(repeats)
            )
            del a, b, out
    best = max(by_size, key=lambda n: by_size[n])
    clock = "the host clock" if isinstance(timer, HostTimer) else "device events"
    method = (
        f"torch.mm {best}x{best}x{best} {name} (random inputs"
        f"{', TF32/HF32 off' if name == 'fp32' else ''}), best of {repeats} blocks of "
        f"{iterations_of[best]} iterations after a warm-up, timed with {clock}; "
        f"sizes tried: {', '.join(str(n) for n in by_size)}"
    )
    peak = MeasuredPeak(
        flops=by_size[best],
        dtype=name,
        device_name=key["device_name"],
        size=best,
        by_size=by_size,
        method=method,
        seconds=time.perf_counter() - started,
        measured_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        key=key,
    )
    if cache:
        write_cache(peak, where)
    return peak


#: Header of :func:`peak_rows`.
PEAK_COLUMNS = (
    "device", "dtype", "measured TFLOP/s", "n", "seconds", "cached", "table TFLOP/s",
    "table source", "measured / table",
)  # fmt: skip


def default_dtypes(device: str) -> tuple[str, ...]:
    """The dtypes ``perfkit peak`` measures by default: fp32 and bf16 on the CPU (its fp16
    matmul is rarely a fast path), fp32, tf32, fp16 and bf16 on an accelerator."""
    return ("fp32", "bf16") if device == "cpu" else ("fp32", "tf32", "fp16", "bf16")


def peak_rows(
    device: Any = None, dtypes: Sequence[str] | None = None, **options: Any
) -> list[list[str]]:
    """One row (text cells, :data:`PEAK_COLUMNS`) per dtype: the measured peak
    (:func:`measure_peak` with ``options``), and the table's figure for the device beside it
    when it has one ("/" where not)."""
    from perfkit.flops.peaks import lookup

    resolved = resolve_device("auto" if device is None else device)
    rows = []
    for dtype in dtypes or default_dtypes(resolved):
        peak = measure_peak(resolved, dtype, **options)
        found = lookup(peak.device_name, dtype, tf32=dtype == "tf32")
        table, kind, ratio = "/", "/", "/"
        if not isinstance(found, str):
            figure = found[1].flops[found[0]]
            table, kind, ratio = f"{figure / 1e12:.4g}", found[1].kind, f"{peak.flops / figure:.3f}"
        rows.append([
            f"{peak.device_name} ({resolved})", peak.dtype, f"{peak.flops / 1e12:.4g}",
            str(peak.size), f"{peak.seconds:.1f}", "yes" if peak.cached else "no", table, kind,
            ratio,
        ])  # fmt: skip
    return rows
