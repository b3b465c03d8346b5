"""What the seed examples share: flags, device and distributed set-up, data, weights, tables.

The perfkit instrumentation (``run.phase``, ``phase.iterate``, ``phase.io``) is in each
example's own file; this module only holds the parts that are not about measuring.

Every example takes ``--data``, ``--weights`` / ``--backbone-weights``, ``--device``,
``--precision``, ``--batch-size``, ``--epochs`` / ``--steps`` and ``--out-dir``, runs on built-in
generated data when ``--data`` is not given, and accepts a torchrun launch (one process per
device; ``torchrun --nproc_per_node=8 examples/retinanet_training.py --data /data/coco``).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import math
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import perfkit
from examples.data import DataError, coco_split, collate_detection, make_detection_dataset
from perfkit import distributed
from perfkit.devices import current_accelerator

TRAIN_PRECISIONS = ("fp32", "amp", "bf16")
INFER_PRECISIONS = ("fp32", "fp16", "bf16")
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
RESNET50_URL = "https://download.pytorch.org/models/resnet50-0676ba61.pth"


class ExampleError(ValueError):
    """A flag or file an example cannot use; the message names the flag and the fix."""


# --------------------------------------------------------------------------------------------
# Flags


def parser(
    description: str, *, precisions: Sequence[str], batch_size: int
) -> argparse.ArgumentParser:
    """The flags every example takes."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        "--data",
        type=Path,
        help="dataset folder (the seed's layout); default: generated built-in data",
    )
    p.add_argument("--weights", type=Path, help="checkpoint of the whole model (a state dict)")
    p.add_argument(
        "--backbone-weights",
        type=Path,
        help=f"ResNet-50 checkpoint for the backbone, e.g. {RESNET50_URL.rsplit('/', 1)[1]}",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ... (default auto)")
    p.add_argument("--precision", default="fp32", choices=precisions)
    p.add_argument("--batch-size", type=_positive_int, default=batch_size, help="per device")
    p.add_argument("--epochs", type=_positive_int, help="default: the seed's on --data, else 1")
    p.add_argument("--steps", type=_positive_int, help="at most this many batches per phase")
    p.add_argument(
        "--warmup-steps",
        type=_non_negative_int,
        default=0,
        help="first steps of each train phase reported apart, out of p_train/p_core (default 0)",
    )
    p.add_argument("--image-size", type=_positive_int, help="model input size in pixels")
    p.add_argument("--workers", type=_non_negative_int, default=2, help="DataLoader workers")
    p.add_argument("--out-dir", type=Path, default=Path("runs"), help="perfkit run directories")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--peak-flops",
        type=float,
        help="peak FLOP/s of one device for MFU (default: perfkit's table for the device, "
        "else a matmul peak measured on it at the run's end, cached)",
    )
    p.add_argument("--sample-interval", type=float, default=0.5, help="probe interval, seconds")
    return p


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def main_guard(main: Callable[[Sequence[str] | None], object]) -> None:
    """Run an example's ``main``: a bad flag or file is one clear line and exit status 2."""
    try:
        main(None)
    except (ExampleError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


# --------------------------------------------------------------------------------------------
# Device, precision, distributed


@dataclass
class Setup:
    """Where and how an example runs; ranks come from :mod:`perfkit.distributed`."""

    device: torch.device
    precision: str
    scaler: Any = None
    _owns_group: bool = field(default=False, repr=False)

    @property
    def rank(self) -> int:
        """Global rank of this process (0 when not distributed)."""
        return distributed.rank()

    @property
    def world_size(self) -> int:
        """Processes in the job (1 when not distributed)."""
        return distributed.world_size()

    @property
    def distributed(self) -> bool:
        return distributed.is_distributed()

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """Mixed precision for ``amp`` (fp16 on accelerators, bf16 on the CPU) and ``bf16``."""
        if self.precision == "amp":
            dtype = torch.bfloat16 if self.device.type == "cpu" else torch.float16
            return torch.autocast(self.device.type, dtype=dtype)
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @property
    def dtype(self) -> torch.dtype:
        """The parameter dtype of an inference model at this precision."""
        return _DTYPES.get(self.precision, torch.float32)

    def backward_and_step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """loss.backward() and optimizer.step(), through the gradient scaler under fp16 AMP."""
        optimizer.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            optimizer.step()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.step(optimizer)
            self.scaler.update()

    def close(self) -> None:
        """Destroy the process group this set-up created."""
        if self._owns_group:
            torch.distributed.destroy_process_group()


def setup(args: argparse.Namespace) -> Setup:
    """Device, seed and, under torchrun (WORLD_SIZE > 1), the process group: NCCL on CUDA,
    gloo on the CPU, one device per local rank."""
    torch.manual_seed(args.seed)
    launched = distributed.world_size() > 1  # torchrun's environment, before the group exists
    device = _device(args.device, distributed.local_rank() if launched else None)
    owns_group = False
    if launched and not torch.distributed.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend)
        owns_group = True
    if device.type == "cuda":
        torch.cuda.set_device(device)
    scaler = None
    if args.precision == "amp" and device.type == "cuda":
        scaler = torch.amp.GradScaler("cuda")
    return Setup(device=device, precision=args.precision, scaler=scaler, _owns_group=owns_group)


def _device(name: str, local_rank: int | None) -> torch.device:
    """``--device`` as a torch device; "auto" is the current accelerator (torch.accelerator where
    torch has it, else the backend modules), else the CPU, as perfkit.Run's "auto"; an
    accelerator without an index is the local rank's."""
    if name == "auto":
        name = current_accelerator(torch) or "cpu"
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ExampleError(f"--device: {name!r} is not a torch device ({err})") from None
    if device.type != "cpu" and device.index is None and local_rank is not None:
        device = torch.device(device.type, local_rank)
    return device


def barrier(env: Setup) -> None:
    """Wait for every rank (nothing when not distributed)."""
    if env.distributed:
        torch.distributed.barrier()


# --------------------------------------------------------------------------------------------
# Data


def detection_defaults(args: argparse.Namespace, *, epochs: int) -> None:
    """Fill the size and length defaults of a detection example: on ``--data`` the seed's
    epochs and COCO's 800-pixel shorter side (1333 at most); on the built-in data 1 epoch at
    256 pixels."""
    real = args.data is not None
    args.epochs = args.epochs or (epochs if real else 1)
    args.image_size = args.image_size or (800 if real else 256)
    args.max_size = round(args.image_size * 1333 / 800)


def scaled_milestones(milestones: Sequence[int], seed_epochs: int, epochs: int) -> list[int]:
    """The seed's learning-rate milestones (epochs) scaled to a run of ``epochs``."""
    return [max(1, round(m * epochs / seed_epochs)) for m in milestones]


def set_epoch(batches: torch.utils.data.DataLoader[Any], epoch: int) -> None:
    """Reshuffle a DistributedSampler for ``epoch``."""
    if isinstance(batches.sampler, torch.utils.data.DistributedSampler):
        batches.sampler.set_epoch(epoch)


def say(env: Setup, message: str) -> None:
    """Print on the first rank only."""
    if env.rank == 0:
        print(message, flush=True)


def coco_data(args: argparse.Namespace, env: Setup, split: str) -> tuple[Path, Path]:
    """(images, instances json) of ``split`` from ``--data``, or of the built-in set (generated
    once under ``--out-dir/data``, by the first rank)."""
    if args.data is not None:
        return coco_split(args.data, split)
    root = args.out_dir / "data" / "coco-builtin"
    if env.rank == 0:
        make_detection_dataset(root)
    barrier(env)
    return coco_split(root, split)


def loader(
    dataset: torch.utils.data.Dataset[Any],
    args: argparse.Namespace,
    env: Setup,
    *,
    shuffle: bool,
    collate: Callable[[Any], Any] | None = None,
) -> torch.utils.data.DataLoader[Any]:
    """A DataLoader of ``--batch-size`` per device, sharded over ranks (DistributedSampler)."""
    sampler: torch.utils.data.Sampler[int] | None = None
    if env.distributed:
        sampler = torch.utils.data.DistributedSampler(dataset, shuffle=shuffle, seed=args.seed)
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=args.batch_size,
        shuffle=shuffle if sampler is None else None,
        sampler=sampler,
        num_workers=args.workers,
        collate_fn=collate,
        pin_memory=env.device.type == "cuda",
        drop_last=False,
    )


def limited(batches: Iterable[Any], steps: int | None) -> Iterable[Any]:
    """At most ``steps`` batches (all when None)."""
    return batches if steps is None else itertools.islice(batches, steps)


def detection_loader(
    args: argparse.Namespace, env: Setup, split: str, *, train: bool
) -> tuple[torch.utils.data.DataLoader[Any], Path]:
    """A loader of (images, targets) lists for ``split`` and the split's instances json."""
    from examples.data import CocoDetection

    images, annotations = coco_data(args, env, split)
    dataset = CocoDetection(images, annotations, train=train, hflip=train)
    if len(dataset) == 0:
        raise DataError(f"--data: {str(images)!r} has no usable images for {split}")
    return loader(dataset, args, env, shuffle=train, collate=collate_detection), annotations


def to_device(
    images: Sequence[torch.Tensor], targets: Sequence[dict[str, Any]], device: torch.device
) -> tuple[list[torch.Tensor], list[dict[str, Any]]]:
    """Images and targets moved to ``device`` (non-blocking from pinned memory)."""
    moved = [image.to(device, non_blocking=True) for image in images]
    moved_targets = [
        {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in t.items()}
        for t in targets
    ]
    return moved, moved_targets


# --------------------------------------------------------------------------------------------
# Weights


def load_checkpoint(path: Path, flag: str, what: str) -> dict[str, torch.Tensor]:
    """A state dict from a local file (tensors only: ``weights_only=True``, nothing unpickled).

    Accepts a bare state dict or a training checkpoint holding one under "model" or
    "state_dict"; the "module." prefix DistributedDataParallel adds is removed.
    """
    if not path.is_file():
        raise ExampleError(
            f"{flag}: no such file {str(path)!r}; download {what} and pass its local path "
            "(nothing is downloaded at run time)"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ExampleError(f"{flag}: {str(path)!r} holds no state dict")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_into(
    module: torch.nn.Module,
    state: dict[str, torch.Tensor],
    flag: str,
    *,
    ignore: Iterable[str] = (),
) -> None:
    """Load ``state`` into ``module``; every key must match except those in ``ignore``."""
    try:
        result = module.load_state_dict(state, strict=False)
    except RuntimeError as err:  # tensors of the wrong shape
        raise ExampleError(
            f"{flag}: the checkpoint does not fit {type(module).__name__}: {err}"
        ) from None
    missing = list(result.missing_keys)
    unexpected = [k for k in result.unexpected_keys if k not in set(ignore)]
    if missing or unexpected:
        raise ExampleError(
            f"{flag}: the checkpoint does not fit {type(module).__name__}: missing "
            f"{missing[:5]}{'...' if len(missing) > 5 else ''}, unexpected "
            f"{unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
        )


def resnet50_fpn(
    args: argparse.Namespace, *, returned_layers: list[int] | None = None, extra_blocks: Any = None
) -> torch.nn.Module:
    """torchvision's ResNet-50 FPN backbone (frozen batch norm, the last three stages trained),
    with ``--backbone-weights`` (resnet50-0676ba61.pth) loaded into its body."""
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

    backbone = resnet_fpn_backbone(
        backbone_name="resnet50",
        weights=None,
        trainable_layers=3,
        returned_layers=returned_layers,
        extra_blocks=extra_blocks,
    )
    if args.backbone_weights is not None:
        state = load_checkpoint(args.backbone_weights, "--backbone-weights", RESNET50_URL)
        load_into(backbone.body, state, "--backbone-weights", ignore=("fc.weight", "fc.bias"))
    return backbone


def load_model_weights(model: torch.nn.Module, args: argparse.Namespace, url: str) -> None:
    """``--weights`` (a whole-model checkpoint) into ``model``, when given."""
    if args.weights is not None:
        load_into(model, load_checkpoint(args.weights, "--weights", url), "--weights")


def distribute(model: torch.nn.Module, env: Setup) -> torch.nn.Module:
    """The model on its device, wrapped in DistributedDataParallel when distributed."""
    model = model.to(env.device)
    if env.distributed:
        ids = [env.device.index] if env.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    return model


# --------------------------------------------------------------------------------------------
# Training and evaluation steps of torchvision detection models


def step_schedule(
    optimizer: torch.optim.Optimizer,
    *,
    steps_per_epoch: int,
    milestones: Sequence[int],
    warmup_steps: int,
    warmup_factor: float = 1e-3,
    gamma: float = 0.1,
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup_steps`` iterations, then x ``gamma`` at each milestone epoch
    (torchvision's detection reference schedule); stepped once per iteration."""

    def factor(step: int) -> float:
        warm = 1.0
        if step < warmup_steps:
            alpha = step / warmup_steps
            warm = warmup_factor * (1 - alpha) + alpha
        epoch = step // max(1, steps_per_epoch)
        return warm * gamma ** sum(epoch >= m for m in milestones)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@dataclass(frozen=True)
class SGDRecipe:
    """A seed's SGD recipe (momentum 0.9): ``lr`` for a global batch of ``batch`` images,
    scaled linearly with the global batch; ``milestones`` (epochs of a ``epochs``-epoch run)
    where the rate drops 10x, after a linear warm-up of ``warmup_steps`` iterations."""

    lr: float
    batch: int
    weight_decay: float
    epochs: int
    milestones: tuple[int, ...]
    warmup_steps: int

    def scaled_lr(self, global_batch: int) -> float:
        """The learning rate for ``global_batch`` images per step."""
        return self.lr * global_batch / self.batch


def detection_optimizer(
    model: torch.nn.Module,
    args: argparse.Namespace,
    recipe: SGDRecipe,
    batches: torch.utils.data.DataLoader[Any],
) -> tuple[torch.optim.SGD, torch.optim.lr_scheduler.LambdaLR]:
    """SGD at ``args.lr`` with the recipe's weight decay, and the recipe's schedule scaled to
    ``args.epochs`` epochs of ``batches`` (at most ``args.steps`` each)."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=args.lr, momentum=0.9, weight_decay=recipe.weight_decay)
    steps_per_epoch = min(len(batches), args.steps or len(batches))
    scheduler = step_schedule(
        optimizer,
        steps_per_epoch=steps_per_epoch,
        milestones=scaled_milestones(recipe.milestones, recipe.epochs, args.epochs),
        warmup_steps=min(recipe.warmup_steps, steps_per_epoch * args.epochs),
    )
    return optimizer, scheduler


def train_step(
    model: torch.nn.Module,
    images: list[torch.Tensor],
    targets: list[dict[str, Any]],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    env: Setup,
) -> dict[str, torch.Tensor]:
    """One optimiser step of a torchvision detection model; its losses and their sum ("loss"),
    on the device (no sync)."""
    with env.autocast():
        losses = model(images, targets)
    loss = sum(losses.values(), torch.zeros((), device=env.device))
    env.backward_and_step(loss, optimizer)
    scheduler.step()
    return {**losses, "loss": loss}


class LossMeans:
    """Each loss's mean over a phase; the sums stay on the device until :meth:`means`."""

    def __init__(self) -> None:
        self._sums: dict[str, torch.Tensor] = {}
        self._steps = 0

    def add(self, losses: dict[str, torch.Tensor]) -> None:
        for name, value in losses.items():
            self._sums[name] = self._sums.get(name, 0) + value.detach().float()
        self._steps += 1

    def means(self) -> dict[str, float]:
        """The means; FloatingPointError when one is not finite (training diverged)."""
        means = {name: float(total) / max(self._steps, 1) for name, total in self._sums.items()}
        if not all(math.isfinite(v) for v in means.values()):
            raise FloatingPointError(f"training diverged: mean losses {means}")
        return means


def detect(
    model: torch.nn.Module, images: Sequence[torch.Tensor], env: Setup
) -> list[dict[str, torch.Tensor]]:
    """A detection model's outputs for ``images`` (cast to the model's dtype: fp16 / bf16
    inference models take such images)."""
    dtype = next(model.parameters()).dtype
    with env.autocast():
        return list(model([image.to(dtype) for image in images]))


class COCOEvaluation:
    """COCO evaluation of a phase's detections, gathered over ranks.

    The models use torchvision's 91-label COCO convention (label = category id), which has
    labels no category owns; the evaluator ignores detections of those labels, as pycocotools
    does, and the run logs how many there were (``detections_without_category``, all ranks).
    """

    def __init__(self, annotations: Path) -> None:
        self.coco = perfkit.metrics.COCOEvaluator(annotations)

    def update(self, outputs: list[dict[str, torch.Tensor]], targets: Sequence[Any]) -> None:
        self.coco.update(outputs, targets)

    def finish(self, run: perfkit.Run, env: Setup) -> dict[str, float]:
        """The twelve COCO stats; logs ``detections_without_category`` and AP as ``mAP`` and
        prints pycocotools' 12-line summary (first rank)."""
        stats = self.coco.compute()
        run.log(detections_without_category=self.coco.ignored_detections, mAP=stats["AP"])
        say(env, self.coco.summary(stats))
        return stats


# --------------------------------------------------------------------------------------------
# Run and report


def run_config(args: argparse.Namespace, env: Setup, **extra: Any) -> dict[str, Any]:
    """The run's config: the seed table's precision / bs plus what reproduces the run."""
    return {
        "precision": args.precision,
        "bs": args.batch_size,
        "global_bs": args.batch_size * env.world_size,
        "data": str(args.data) if args.data is not None else "built-in",
        "epochs": args.epochs,
        "steps": args.steps,
        "warmup_steps": args.warmup_steps,
        "image_size": args.image_size,
        **extra,
    }


def start_run(name: str, args: argparse.Namespace, env: Setup, **config: Any) -> perfkit.Run:
    """A perfkit Run on the example's device, FlagPerf's e2e convention (from process start)."""
    return perfkit.Run(
        name,
        out_dir=args.out_dir,
        config=run_config(args, env, **config),
        device=env.device,
        e2e_from="process",
        sample_interval_s=args.sample_interval,
        warmup_steps={"train": args.warmup_steps},
    )


def finish(run: perfkit.Run, env: Setup) -> dict[str, Any]:
    """End an example: print the run's seed-style metric table (first rank only), release the
    process group, return the run's summary."""
    if env.rank == 0 and run.run_dir is not None:
        from perfkit.analysis import report_text

        print(report_text(run.run_dir))
        summary = run.summary()
        if "mfu_peak_source" in summary:
            tflops = summary["peak_flops"] / 1e12
            source = f"{summary['mfu_peak_source']}): {tflops:.4g} TFLOP/s"
            print(f"MFU peak ({source} - {summary['peak_source']}")
        print(f"records: {run.run_dir}")
    env.close()
    return run.summary()
