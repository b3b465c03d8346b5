"""Every device path of perfkit in one go, on a machine with an accelerator (under 8 minutes).

    python -m benchmarks.device_check [--steps 30] [--batch-size 64] [--skip-retinanet]

Checks, printed as one table (check, measured, reference, limit, PASS/FAIL):

1. ResNet-50 training steps timed with device events (``perfkit.timing.EventTimer``) against
   the same steps synchronised every step (``SyncingHostTimer``): mean step times agree within
   1 %, and the event-timed loop's wall time is within 1 % of the same loop untimed.
2. The allocator probe's peak against ``max_memory_allocated``; NVML's used memory against the
   driver's view (``mem_get_info``: total - free), within 2 % (other processes count in both).
3. ResNet-50 inference MFU in bf16 and fp16 against the peak table (a figure in (0, 1]).
4. The RetinaNet example at its real input size for a few steps (it runs and reports p_train).
5. ``perfkit.flops.measure_peak`` in bf16 and fp32 (TF32 off): against the same 8192^3 matmul
   timed here with CUDA events (within 10 %), as a share of the table's dense peak where it has
   one (in (0.5, 1]: FlagPerf's torch.mm reached 81-83 % of an A100's), and its wall time
   (under 60 s for both).
6. MIG, when the GPU has MIG mode on: the instances NVML lists against ``nvidia-smi -L``, and
   the visible instance's memory from the NVML probe against ``mem_get_info`` (within 2 %).

Without an accelerator it prints one line and exits with status 2. Results go to
benchmarks/RESULTS.md (section "Device check") with ``--write``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

NO_ACCELERATOR_EXIT = 2


@dataclass(frozen=True)
class Check:
    """One row: ``measured`` against ``reference`` within ``limit`` (relative unless noted)."""

    name: str
    measured: float
    reference: float
    limit: float
    unit: str = ""
    kind: str = "relative"  # "relative": |m - r| <= limit * |r|; "at_most": m <= limit;
    # "range": reference < m <= limit
    note: str = ""

    @property
    def passed(self) -> bool:
        if math.isnan(self.measured) or math.isnan(self.reference):
            return False
        if self.kind == "relative":
            return abs(self.measured - self.reference) <= self.limit * abs(self.reference)
        if self.kind == "at_most":
            return self.measured <= self.limit
        if self.kind == "range":
            return self.reference < self.measured <= self.limit
        raise ValueError(f"Expected `kind` 'relative', 'at_most' or 'range' but got {self.kind!r}")


def _fmt(value: float, unit: str) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value:.4g}{(' ' + unit) if unit else ''}"


def _limit(check: Check) -> str:
    if check.kind == "relative":
        return f"±{check.limit * 100:g} %"
    if check.kind == "at_most":
        return f"<= {_fmt(check.limit, check.unit)}"
    return f"({_fmt(check.reference, check.unit)}, {_fmt(check.limit, check.unit)}]"


def table(checks: Sequence[Check]) -> str:
    """A Markdown table of the checks, one row each, PASS/FAIL in the last column."""
    rows = [("check", "measured", "reference", "limit", "result", "note")]
    for c in checks:
        reference = "" if c.kind == "at_most" else _fmt(c.reference, c.unit)
        result = "PASS" if c.passed else "FAIL"
        rows.append((c.name, _fmt(c.measured, c.unit), reference, _limit(c), result, c.note))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) + " |"
             for row in rows]  # fmt: skip
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def all_passed(checks: Sequence[Check]) -> bool:
    """True when every check passed (and there is at least one)."""
    return bool(checks) and all(c.passed for c in checks)


# --- the device side ---------------------------------------------------------------------------


def _resnet50(torch: Any, device: Any, train: bool) -> Any:
    import torchvision

    model = torchvision.models.resnet50().to(device)
    return model.train(train)


def _train_steps(torch: Any, model: Any, batch: Any, target: Any, steps: int, mark: Any) -> float:
    """Wall seconds of ``steps`` training steps, ``mark()`` called at every step edge."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    sync = _sync_for(batch.device.type)
    sync()
    started = time.perf_counter()
    mark()
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(batch.device.type, dtype=torch.bfloat16):
            loss = loss_fn(model(batch), target)
        loss.backward()
        optimizer.step()
        mark()
    sync()
    return time.perf_counter() - started


def _sync_for(device_type: str) -> Callable[[], None]:
    from perfkit.timing import device_synchronizer

    return device_synchronizer(device_type)


def timing_checks(torch: Any, device: Any, steps: int, batch_size: int) -> list[Check]:
    """Device events vs synchronising every step, and the events' cost in wall time."""
    from perfkit.timing import EventTimer, SyncingHostTimer

    model = _resnet50(torch, device, train=True)
    batch = torch.randn(batch_size, 3, 224, 224, device=device)
    target = torch.randint(0, 1000, (batch_size,), device=device)
    _train_steps(torch, model, batch, target, 5, lambda: None)  # warm-up (cuDNN autotune)

    untimed_s = _train_steps(torch, model, batch, target, steps, lambda: None)
    events = EventTimer(device.type)
    marks: list[Any] = []
    events_wall_s = _train_steps(
        torch, model, batch, target, steps, lambda: marks.append(events.mark())
    )
    events.synchronize()
    event_step_s = events.elapsed_s(marks[0], marks[-1]) / steps
    syncing = SyncingHostTimer(_sync_for(device.type))
    host: list[float] = []
    _train_steps(torch, model, batch, target, steps, lambda: host.append(syncing.mark()))
    sync_step_s = (host[-1] - host[0]) / steps
    return [
        Check("ResNet-50 train step: events vs sync every step", event_step_s * 1e3,
              sync_step_s * 1e3, 0.01, "ms"),
        Check("event timing wall-time overhead", (events_wall_s / untimed_s - 1) * 100, 0.0,
              1.0, "%", kind="at_most", note=f"untimed {untimed_s:.3f} s"),
    ]  # fmt: skip


def memory_checks(torch: Any, device: Any) -> list[Check]:
    """The allocator probe and NVML against torch's and the driver's own figures."""
    from perfkit.probes.allocator import TorchAllocatorProbe
    from perfkit.probes.nvml import NvmlProbe

    torch.cuda.reset_peak_memory_stats(device)
    block = torch.empty(512 * 2**20, dtype=torch.uint8, device=device)  # 512 MiB
    del block
    probe = TorchAllocatorProbe()
    probe.open()
    index = device.index or 0
    sample = probe.sample()[index]
    probe.close()
    checks = [
        Check("allocator probe peak vs max_memory_allocated", sample.allocated_peak_bytes / 2**20,
              torch.cuda.max_memory_allocated(device) / 2**20, 0.0, "MiB"),
    ]  # fmt: skip
    free, total = torch.cuda.mem_get_info(device)
    try:
        nvml = NvmlProbe()
        nvml.open()
        used = nvml.sample()[index].memory_used_bytes
        nvml.close()
    except Exception as exc:  # report, do not stop the other checks
        used, note = math.nan, f"NVML: {exc}"
    else:
        note = ""
    checks.append(Check("NVML used vs driver (total - free)", used / 2**20,
                        (total - free) / 2**20, 0.02, "MiB", note=note))  # fmt: skip
    return checks


def mfu_checks(torch: Any, device: Any, batch_size: int, steps: int) -> list[Check]:
    """ResNet-50 inference MFU in bf16 and fp16 against the peak table."""
    import torchvision

    from perfkit.flops.peaks import peak_flops

    name = torch.cuda.get_device_name(device)
    # torchvision publishes multiply-adds per 224x224 image (GFLOPS in its naming); 2 FLOPs each.
    flops_per_image = 2 * torchvision.models.ResNet50_Weights.IMAGENET1K_V2.meta["_ops"] * 1e9
    checks = []
    for dtype_name, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
        model = _resnet50(torch, device, train=False).to(dtype)
        batch = torch.randn(batch_size, 3, 224, 224, device=device, dtype=dtype)
        with torch.inference_mode():
            for _ in range(5):
                model(batch)
            torch.cuda.synchronize(device)
            started = time.perf_counter()
            for _ in range(steps):
                model(batch)
            torch.cuda.synchronize(device)
        images_per_s = batch_size * steps / (time.perf_counter() - started)
        peak = peak_flops(name, dtype_name)
        mfu = images_per_s * flops_per_image / peak if peak else math.nan
        checks.append(Check(f"ResNet-50 inference MFU {dtype_name}", mfu, 0.0, 1.0,
                            kind="range", note=f"{images_per_s:.0f} img/s on {name}"))  # fmt: skip
    return checks


def _event_rate(torch: Any, device: Any, dtype: Any, n: int = 8192, iterations: int = 20) -> float:
    """FLOP/s of ``iterations`` n^3 matmuls between two CUDA events, best of 3 (2 n^3 each)."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    for _ in range(3):
        torch.mm(a, b)
    best = 0.0
    for _ in range(3):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iterations):
            torch.mm(a, b)
        end.record()
        torch.cuda.synchronize(device)
        best = max(best, 2 * n**3 * iterations / (start.elapsed_time(end) / 1e3))
    return best


def peak_checks(torch: Any, device: Any) -> list[Check]:
    """measure_peak against an independent event timing, the table, and its wall time."""
    from perfkit.flops import measure_peak
    from perfkit.flops.peaks import lookup

    checks, total_s = [], 0.0
    for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        peak = measure_peak(device, name, cache=False)
        total_s += peak.seconds
        precision = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision("highest")  # fp32 without TF32, as measure_peak
        try:
            reference = _event_rate(torch, device, dtype)
        finally:
            torch.set_float32_matmul_precision(precision)
        note = f"{peak.flops / 1e12:.1f} TFLOP/s, n={peak.size}"
        checks.append(
            Check(
                f"measured {name} peak vs 8192^3 torch.mm timed with events",
                peak.flops / 1e12,
                reference / 1e12,
                0.10,
                "TFLOP/s",
                note=note,
            )
        )
        found = lookup(peak.device_name, name, tf32=False)
        if not isinstance(found, str):
            table = found[1].flops[found[0]]
            checks.append(
                Check(
                    f"measured {name} peak / table peak ({found[1].kind})",
                    peak.flops / table,
                    0.5,
                    1.0,
                    kind="range",
                    note=f"table {table / 1e12:g} TFLOP/s",
                )
            )
    checks.append(
        Check("measure_peak wall time, bf16 + fp32", total_s, 0.0, 60.0, "s", kind="at_most")
    )
    return checks  # fmt: skip


def mig_checks(torch: Any, device: Any) -> list[Check]:
    """NVML's MIG instances against ``nvidia-smi -L`` and the visible instance's memory
    against the driver's; none when MIG mode is off (said on stdout)."""
    import subprocess

    from perfkit.probes.nvml import NvmlProbe, nvml

    pynvml = nvml()
    listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False)
    mig_lines = [line for line in listed.stdout.splitlines() if line.strip().startswith("MIG ")]
    if not mig_lines:
        print("device_check: MIG mode is off on this machine's GPUs: no MIG rows")
        return []
    probe = NvmlProbe()
    probe.open()
    try:
        found = sum(len(_migs(pynvml, i)) for i in range(pynvml.nvmlDeviceGetCount()))
        sample = probe.sample()[device.index or 0]
    finally:
        probe.close()
    free, total = torch.cuda.mem_get_info(device)
    return [
        Check("MIG instances: NVML vs nvidia-smi -L", found, len(mig_lines), 0.0),
        Check("visible device memory: NVML probe vs driver (total - free)",
              sample.memory_used_bytes / 2**20, (total - free) / 2**20, 0.02, "MiB",
              note=sample.device_name),
    ]  # fmt: skip


def _migs(pynvml: Any, index: int) -> list[Any]:
    from perfkit.probes.nvml import mig_instances

    handle = pynvml.nvmlDeviceGetHandleByIndex(index)
    return mig_instances(pynvml, index, handle, "")


def retinanet_check(steps: int) -> list[Check]:
    """The RetinaNet example at its real input size (800 px) for a few steps."""
    from examples import retinanet_training

    started = time.perf_counter()
    summary = retinanet_training.main(
        ["--device", "cuda", "--precision", "amp", "--steps", str(steps), "--workers", "2",
         "--out-dir", "runs/device_check"]
    )  # fmt: skip
    p_train = float(summary.get("p_train", math.nan)) if isinstance(summary, dict) else math.nan
    return [Check("RetinaNet example, real size: p_train", p_train, 0.0, math.inf, "img/s",
                  kind="range", note=f"{time.perf_counter() - started:.0f} s")]  # fmt: skip


def accelerator_device(torch: Any) -> Any | None:
    """The torch device of the current accelerator, or None."""
    from perfkit.devices import current_accelerator

    kind = current_accelerator(torch)
    return torch.device(kind, 0) if kind is not None else None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--skip-retinanet", action="store_true")
    parser.add_argument("--write", action="store_true", help="record in benchmarks/RESULTS.md")
    args = parser.parse_args(argv)

    import torch

    device = accelerator_device(torch)
    if device is None:
        print("device_check: no accelerator here (torch sees none); nothing to check")
        return NO_ACCELERATOR_EXIT
    checks = timing_checks(torch, device, args.steps, args.batch_size)
    if device.type == "cuda":  # the NVML, allocator and MFU checks read CUDA's own figures
        checks += memory_checks(torch, device)
        checks += mfu_checks(torch, device, args.batch_size, args.steps)
        checks += peak_checks(torch, device)
        checks += mig_checks(torch, device)
        if not args.skip_retinanet:
            checks += retinanet_check(steps=5)
    text = table(checks)
    print(text)
    if args.write:
        from benchmarks.results import machine, write_section

        name = torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)
        write_section("Device check", f"{machine()} Device: {name}.\n\n{text}")
    return 0 if all_passed(checks) else 1


if __name__ == "__main__":
    sys.exit(main())
