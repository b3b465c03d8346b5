"""``untouched``: run a model for counting and leave no trace of it.

Restored on exit, also when the model raises: every module's parameters and buffers (the same
tensor objects, with their values - BatchNorm's running statistics and ``num_batches_tracked``
included), the ``.grad`` of parameters and of input leaves, every module's train/eval mode, the
CPU and initialised CUDA RNG states, and the global torch flags below.

Values are saved copy-on-write: a dispatch mode sees every operator that writes a tensor
(its schema marks the argument ``Tensor(a!)``) and copies a parameter or buffer sharing that
storage just before the first write, so counting copies nothing unless the model writes its
own state (a training-mode BatchNorm copies its statistics, nothing else).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


def _cudnn(name: str) -> tuple[Callable[[], Any], Callable[[Any], None]]:
    def set_flag(value: Any) -> None:
        setattr(torch.backends.cudnn, name, value)

    return (lambda: getattr(torch.backends.cudnn, name)), set_flag


def _set_deterministic(value: tuple[bool, bool]) -> None:
    torch.use_deterministic_algorithms(value[0], warn_only=value[1])


# (getter, setter) of the global flags a counted call could change; restored only if changed.
_FLAGS: tuple[tuple[Callable[[], Any], Callable[[Any], Any]], ...] = (
    (torch.is_grad_enabled, torch.set_grad_enabled),
    (torch.is_anomaly_enabled, torch.set_anomaly_enabled),
    (torch.get_default_dtype, torch.set_default_dtype),
    (
        lambda: (
            torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled(),
        ),
        _set_deterministic,
    ),
    _cudnn("enabled"),
    _cudnn("benchmark"),
    _cudnn("deterministic"),
)


if hasattr(torch.backends, "mha"):
    _FLAGS += ((torch.backends.mha.get_fastpath_enabled, torch.backends.mha.set_fastpath_enabled),)


class _AnyTorchFunction(TorchFunctionMode):
    """A pass-through torch-function mode: while one is active, ``has_torch_function`` is true,
    which is what keeps the fused paths off on torch < 2.2 (no ``torch.backends.mha`` there)."""

    def __torch_function__(
        self, func: Any, types: Any, args: Any = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        return func(*args, **(kwargs or {}))


@contextmanager
def fast_path_off() -> Iterator[None]:
    """Turn off the fused inference path of ``nn.MultiheadAttention`` and
    ``nn.TransformerEncoderLayer`` for the body (restored after)."""
    if not hasattr(torch.backends, "mha"):
        with _AnyTorchFunction():
            yield
        return
    before = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(before)


# Batch norms that update their running statistics although their schemas do not mark them
# written (``Tensor? running_mean``); torch 2.1's BatchNorm dispatches ``native_batch_norm``.
_UNMARKED_WRITES = frozenset(
    f"aten::{name}"
    for name in (
        "native_batch_norm",
        "cudnn_batch_norm",
        "miopen_batch_norm",
        "batch_norm_update_stats",
    )
)
_RUNNING_STATISTICS = ("running_mean", "running_var")


@cache
def _written(func: Any) -> tuple[tuple[int, str], ...]:
    """(position, name) of the arguments operator overload ``func`` writes."""
    unmarked = func._schema.name in _UNMARKED_WRITES
    return tuple(
        (i, arg.name)
        for i, arg in enumerate(func._schema.arguments)
        if (arg.alias_info is not None and arg.alias_info.is_write)
        or (unmarked and arg.name in _RUNNING_STATISTICS)
    )


def _storage(tensor: torch.Tensor) -> int:
    """Address of a tensor's storage (0: none to restore - meta, empty or not a dense tensor)."""
    if tensor.is_meta or tensor.is_nested or tensor.layout != torch.strided:
        return 0
    try:
        return int(tensor.untyped_storage().data_ptr())
    except (RuntimeError, NotImplementedError):
        return 0


class _CopyOnWrite(TorchDispatchMode):
    """Copies a watched tensor just before the first operator that writes its storage."""

    def __init__(self, tensors: list[torch.Tensor]) -> None:
        super().__init__()
        self.watched: dict[int, list[torch.Tensor]] = {}
        for tensor in tensors:
            if address := _storage(tensor):
                self.watched.setdefault(address, []).append(tensor)
        self.saved: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        for position, name in _written(func):
            value = args[position] if position < len(args) else kwargs.get(name)
            for tensor in tree_flatten(value)[0]:
                if isinstance(tensor, torch.Tensor):
                    self._save(tensor)
        return func(*args, **kwargs)

    def _save(self, written: torch.Tensor) -> None:
        for tensor in self.watched.get(_storage(written), ()):
            if id(tensor) not in self.saved:
                self.saved[id(tensor)] = (tensor, tensor.detach().clone())

    def restore(self) -> None:
        with torch.no_grad():
            for tensor, value in self.saved.values():
                tensor.copy_(value)


def _tables(model: torch.nn.Module) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Each module's ``_parameters`` and ``_buffers`` dict with a copy of its entries."""
    return [
        (table, dict(table))
        for module in model.modules()
        for table in (module._parameters, module._buffers)
    ]


@contextmanager
def untouched(model: torch.nn.Module, inputs: Any) -> Iterator[None]:
    """Run the body, then put ``model``, the inputs' gradients, RNG and flags back as they were.

    Gradients are set aside (``.grad = None``) for the body, so that a backward writes new
    tensors, and put back after.
    """
    modes = [(module, module.training) for module in model.modules()]
    tables = _tables(model)
    state = [t for _, entries in tables for t in entries.values() if t is not None]
    leaves = [
        t
        for t in tree_flatten(inputs)[0]
        if isinstance(t, torch.Tensor) and t.requires_grad and t.is_leaf
    ]
    grads = [(t, t.grad) for t in (*state, *leaves)]
    for tensor, _ in grads:
        tensor.grad = None
    flags = [(get, set_, get()) for get, set_ in _FLAGS]
    cuda = range(torch.cuda.device_count()) if torch.cuda.is_initialized() else range(0)
    copy_on_write = _CopyOnWrite(state)
    with torch.random.fork_rng(devices=list(cuda)):
        try:
            with copy_on_write:
                yield
        finally:
            for get, set_, value in flags:
                if get() != value:
                    set_(value)
            for module, training in modes:
                module.training = training
            for table, entries in tables:
                table.clear()
                table.update(entries)
            copy_on_write.restore()
            for tensor, grad in grads:
                tensor.grad = grad
