"""torch.utils.flop_counter's counter interface (torch >= 2.4) for torch 2.1-2.3.

perfkit's counter subclasses ``FlopCounterMode`` and relies on what newer torch has: a
``flop_registry`` dict of formulas called as ``formula(*args, out_val=out, **kwargs)``, the
``_count_flops`` step, and module attribution by ``ModuleTracker`` (every module's fully
qualified name, forward and backward, with no ``mods`` argument). torch 2.1 has none of these
(its ``flop_mapping`` formulas take shapes, and its counter attributes only the modules passed
to it), so this module provides the same interface there; the counts are the same because the
formulas are the same (torch's own, shape-wrapped, plus perfkit's).
"""

from __future__ import annotations

import weakref
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch
from torch.autograd.graph import register_multi_grad_hook
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
from torch.utils import flop_counter as _torch_flop_counter
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map
from torch.utils.hooks import RemovableHandle


def _shape(value: Any) -> Any:
    return value.shape if isinstance(value, torch.Tensor) else value


def shape_wrapper(formula: Callable[..., int]) -> Callable[..., int]:
    """``formula(*shapes, out_shape=...)`` as ``f(*args, out_val=out)`` (torch >= 2.2's form)."""

    def on_values(*args: Any, out_val: Any = None, **kwargs: Any) -> int:
        args, kwargs, out_shape = tree_map(_shape, (args, kwargs, out_val))
        return formula(*args, out_shape=out_shape, **kwargs)

    return on_values


def _torch_formulas() -> dict[Any, Callable[..., int]]:
    registry = getattr(_torch_flop_counter, "flop_registry", None)
    if registry is not None:  # torch 2.2-2.3: already called with values
        return dict(registry)
    return {op: shape_wrapper(f) for op, f in vars(_torch_flop_counter)["flop_mapping"].items()}


TORCH_FORMULAS: dict[Any, Callable[..., int]] = _torch_formulas()


class ModuleTracker:
    """The fully qualified names of the modules running now, forward or backward (``parents``,
    always with ``"Global"``), as torch.utils.module_tracker.ModuleTracker gives them."""

    def __init__(self) -> None:
        self.parents = {"Global"}
        self._names: weakref.WeakKeyDictionary[torch.nn.Module, str] = weakref.WeakKeyDictionary()
        self._hooks: list[RemovableHandle] = []
        self._has_callback = False

    def _name(self, module: torch.nn.Module) -> str:
        if module not in self._names:
            self._names[module] = type(module).__name__
        name = self._names[module]
        for child_name, child in module.named_children():
            self._names.setdefault(child, f"{name}.{child_name}")
        return name

    def _enter(self, name: str, backward: bool) -> Callable[..., None]:
        def enter(*args: Any) -> None:
            if backward and not self._has_callback:
                # Reset at the end of backward (a module whose inputs need no grad never pops).
                torch.autograd.Variable._execution_engine.queue_callback(self._reset)
                self._has_callback = True
            self.parents.add(name)

        return enter

    def _exit(self, name: str) -> Callable[..., None]:
        def leave(*args: Any) -> None:
            self.parents.discard(name)

        return leave

    def _reset(self) -> None:
        self.parents = {"Global"}
        self._has_callback = False

    def _watch(self, values: Any, hook: Callable[..., None]) -> None:
        if not torch.is_grad_enabled():
            return
        flat = tree_flatten(values)[0]
        grads = [v for v in flat if isinstance(v, torch.Tensor) and v.requires_grad]
        if grads:
            self._hooks.append(register_multi_grad_hook(grads, hook))

    def _pre_hook(self, module: torch.nn.Module, inputs: Any) -> None:
        name = self._name(module)
        self._enter(name, backward=False)()
        self._watch(inputs, self._exit(name))  # backward leaves the module at its inputs

    def _post_hook(self, module: torch.nn.Module, inputs: Any, outputs: Any) -> None:
        name = self._name(module)
        self._exit(name)()
        self._watch(outputs, self._enter(name, backward=True))

    def __enter__(self) -> ModuleTracker:
        self._handles = [
            register_module_forward_pre_hook(self._pre_hook),
            register_module_forward_hook(self._post_hook),
        ]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in [*self._handles, *self._hooks]:
            handle.remove()
        self._hooks.clear()


class FlopCounterMode(TorchDispatchMode):
    """torch >= 2.4's FlopCounterMode interface: ``flop_registry``, ``_count_flops``,
    ``get_flop_counts`` by fully qualified module name (``"Global"``: the whole call)."""

    def __init__(
        self, display: bool = False, custom_mapping: dict[Any, Callable[..., int]] | None = None
    ) -> None:
        super().__init__()
        custom = {op: shape_wrapper(f) for op, f in (custom_mapping or {}).items()}
        self.flop_registry: dict[Any, Callable[..., int]] = {**TORCH_FORMULAS, **custom}
        self.flop_counts: defaultdict[str, defaultdict[Any, int]] = defaultdict(
            lambda: defaultdict(int)
        )
        self.mod_tracker = ModuleTracker()

    def get_flop_counts(self) -> dict[str, dict[Any, int]]:
        """Module name -> operator packet -> FLOPs."""
        return {name: dict(ops) for name, ops in self.flop_counts.items()}

    def __enter__(self) -> FlopCounterMode:
        self.flop_counts.clear()
        self.mod_tracker.__enter__()
        super().__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        super().__exit__(*exc)
        self.mod_tracker.__exit__()

    def _count_flops(self, func_packet: Any, out: Any, args: Any, kwargs: Any) -> Any:
        if func_packet in self.flop_registry:
            flops = self.flop_registry[func_packet](*args, **kwargs, out_val=out)
            for parent in set(self.mod_tracker.parents):
                self.flop_counts[parent][func_packet] += flops
        return out

    def __torch_dispatch__(
        self, func: Any, types: Any, args: Any = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        return self._count_flops(func._overloadpacket, out, args, kwargs)
