"""``count``: FLOPs of one call of a model, by module and by operator, with units named."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch.utils._pytree import tree_flatten, tree_map

from perfkit._messages import warn
from perfkit.checks import one_of, wrong_type

# Importing the formula modules registers perfkit's formulas.
from perfkit.flops import _formulas, _formulas_quantized, _formulas_recurrent  # noqa: F401
from perfkit.flops._counter_base import FlopCounterMode
from perfkit.flops._guard import fast_path_off, untouched
from perfkit.flops._registry import REGISTRY, is_multiply_add

if TYPE_CHECKING:
    import pandas as pd

Scope = Literal["full", "torchvision"]
Backend = Literal["torch", "fvcore"]
Causal = Literal["full", "half", "none"]
Inputs = torch.Tensor | tuple[Any, ...] | dict[str, Any] | list[Any]

SCOPES: tuple[Scope, ...] = ("full", "torchvision")
BACKENDS: tuple[Backend, ...] = ("torch", "fvcore")
#: Conventions for the Q·Kᵀ and P·V products of causal attention (``is_causal=True``): counted
#: dense ("full": PyTorch's counter, PaLM / torchtitan), halved ("half": Megatron-LM), or not at
#: all ("none": FlagPerf's 6N-style model FLOPs leave attention out).
CAUSAL: tuple[Causal, ...] = ("full", "half", "none")

# Operators that move, create, convert or select data (their backward included): no arithmetic,
# so neither counted nor reported as unsupported. Views and in-place writes that are not
# arithmetic are recognised by their schema.
# fmt: off
_DATA_MOVEMENT_NAMES = (
    "_index_put_impl", "im2col", "_local_scalar_dense", "_to_copy", "_unique2", "_unsafe_index",
    "_unsafe_index_put", "_unsafe_view", "arange", "as_strided_scatter", "bernoulli", "cat",
    "clone", "constant_pad_nd", "copy", "dequantize", "diagonal_backward", "diagonal_scatter",
    "embedding", "empty", "empty_like", "empty_strided", "expand_backward", "fill", "flip", "full",
    "full_like", "gather", "index", "index_put", "index_select", "is_same_size",
    "lift_fresh_copy", "linspace", "logspace", "masked_fill", "masked_scatter", "masked_select",
    "new_empty", "new_empty_strided",
    "new_full", "new_ones", "new_zeros", "nonzero", "normal", "ones", "ones_like", "permute",
    "quantize_per_channel", "quantize_per_tensor", "rand", "rand_like", "randint", "randn",
    "randn_like", "randperm", "repeat", "roll", "scalar_tensor", "scatter", "select_backward",
    "select_scatter", "slice_backward", "slice_scatter", "sort", "split_with_sizes_copy", "stack",
    "topk", "unbind_copy", "unfold_backward", "uniform", "upsample_nearest1d",
    "upsample_nearest2d", "upsample_nearest3d", "where", "zero", "zeros", "zeros_like",
)
# fmt: on
_DATA_MOVEMENT = frozenset([f"aten.{name}" for name in _DATA_MOVEMENT_NAMES] + ["quantized.cat"])

# Elementwise operators PyTorch does not tag pointwise: counted by the same rule.
_UNTAGGED_POINTWISE = frozenset(
    f"aten.{name}"
    for name in ("hardswish", "hardswish_backward", "_prelu_kernel", "log_sigmoid_forward")
)

# An operator without a formula whose name says it carries the heavy arithmetic: ``count`` warns.
_COMPUTE_WORDS = ("conv", "mm", "matmul", "linear", "einsum", "attention", "rnn", "lstm", "gru")
_COMPUTE_NAMESPACES = ("quantized.",)

_UNIT = "FLOPs (2 per multiply-add)"


class FlopCountError(RuntimeError):
    """The model raised while being counted; the model's own error is the ``__cause__``."""


class FlopUndercountWarning(UserWarning):
    """An operator that carries matrix, convolution, attention, recurrent or quantized work ran
    without a FLOP formula: the total misses its work."""


@cache
def _overloads(packet: Any) -> tuple[Any, ...]:
    return tuple(getattr(packet, name) for name in packet.overloads())


def _is_pointwise(packet: Any) -> bool:
    if _base_name(packet) in _UNTAGGED_POINTWISE:
        return True
    return any(torch.Tag.pointwise in op.tags for op in _overloads(packet))


def _returns_alias(packet: Any) -> bool:
    return any(
        ret.alias_info is not None
        for op in _overloads(packet)
        if not op._overloadname.endswith("out")
        for ret in op._schema.returns
    )


def _base_name(packet: Any) -> str:
    """``aten.addmm_`` -> ``aten.addmm``: the out-of-place operator of an in-place one."""
    name = str(packet)
    return name[:-1] if name.endswith("_") and not name.endswith("__") else name


def _out_of_place(packet: Any) -> Any:
    """The out-of-place packet of an in-place operator (``addmm_`` -> ``addmm``), else None."""
    base = _base_name(packet)
    if base == str(packet):
        return None
    namespace, _, name = base.partition(".")
    return getattr(getattr(torch.ops, namespace), name, None)


def carries_compute(op: str) -> bool:
    """Whether an operator's name marks it as matrix, convolution, attention, recurrent or
    quantized work (so that missing it is a real undercount)."""
    name = op.rpartition(".")[2]
    return op.startswith(_COMPUTE_NAMESPACES) or any(word in name for word in _COMPUTE_WORDS)


def _is_int8(op: str) -> bool:
    return op.startswith("quantized.") and "fp16" not in op


def _pointwise_flop(*args: Any, out_val: Any = None, **kwargs: Any) -> int:
    """One FLOP per floating-point output element (comparisons and integer ops count none)."""
    if isinstance(out_val, torch.Tensor) and out_val.is_floating_point():
        return out_val.numel()
    return 0


@cache
def _causal_position(packet: Any) -> int | None:
    """Position of the ``is_causal`` argument of an attention operator, None if it has none."""
    if "attention" not in str(packet) or not hasattr(packet, "overloads"):
        return None  # (higher-order operators such as flex attention have no schema)
    for op in _overloads(packet):
        names = [arg.name for arg in op._schema.arguments]
        if "is_causal" in names:
            return names.index("is_causal")
    return None


def _causal_formula(formula: Any, position: int, causal: Causal) -> Any:
    """``formula`` with the ``causal`` convention applied to calls with ``is_causal`` set."""

    def counted(*args: Any, **kwargs: Any) -> int:
        flops = formula(*args, **kwargs)
        is_causal = (
            kwargs["is_causal"]
            if "is_causal" in kwargs
            else (position < len(args) and args[position])
        )
        if not is_causal:
            return flops
        return flops // 2 if causal == "half" else 0

    return counted


class _Counter(FlopCounterMode):
    """FlopCounterMode that also counts pointwise operators and records unsupported ones, and
    applies the causal-attention convention."""

    def __init__(self, scope: Scope, causal: Causal = "full") -> None:
        in_scope = {
            packet: entry.formula
            for packet, entry in REGISTRY.items()
            if scope == "full" or entry.multiply_add
        }
        super().__init__(display=False, custom_mapping=in_scope)
        self.out_of_scope = frozenset(REGISTRY) - frozenset(in_scope)
        self.count_pointwise = scope == "full"
        self.unsupported: Counter[str] = Counter()
        self._no_formula: dict[Any, bool] = {}  # packet -> whether it is reported as unsupported
        self.in_place: dict[Any, Any] = {}  # in-place packet counted -> its out-of-place packet
        if causal != "full":
            for packet, formula in list(self.flop_registry.items()):
                position = _causal_position(packet)
                if position is not None:
                    self.flop_registry[packet] = _causal_formula(formula, position, causal)

    def _count_flops(self, func_packet: Any, out: Any, args: Any, kwargs: Any) -> Any:
        if func_packet not in self.flop_registry:
            if func_packet not in self._no_formula:
                self._no_formula[func_packet] = self._classify(func_packet)
            if self._no_formula[func_packet]:
                self.unsupported[str(func_packet)] += 1
        return super()._count_flops(func_packet, out, args, kwargs)

    def _classify(self, packet: Any) -> bool:
        """Register the rule for ``packet`` if one applies (in-place variant of a counted
        operator, pointwise); True if it is unsupported."""
        base = _out_of_place(packet)
        if base is not None and base in self.flop_registry:
            self.flop_registry[packet] = self.flop_registry[base]  # same arguments, same work
            self.in_place[packet] = base
            return False
        if packet in self.out_of_scope or base in self.out_of_scope:
            return False
        if _base_name(packet) in _DATA_MOVEMENT:
            return False
        if _is_pointwise(packet) or (base is not None and _is_pointwise(base)):
            if self.count_pointwise:
                self.flop_registry[packet] = _pointwise_flop
            return False
        if _returns_alias(packet):
            # A view or an in-place write: unsupported only as in-place arithmetic.
            return base is not None and not _returns_alias(base)
        return True


@dataclass(frozen=True)
class FlopReport:
    """FLOPs of one call of a model (forward, or forward + backward).

    ``counts`` maps module name (``""`` is the whole call) to operator to FLOPs, two FLOPs per
    multiply-add. ``unsupported`` maps operators met that have no formula to their call counts:
    their work is not in the total. ``causal`` is the convention the attention products of
    causal attention were counted by (:data:`CAUSAL`).
    """

    model: str
    scope: Scope
    backend: Backend
    backward: bool
    counts: Mapping[str, Mapping[str, int]]
    multiply_add_ops: frozenset[str]
    unsupported: dict[str, int] = field(default_factory=dict)
    causal: Causal = "full"

    @property
    def flops(self) -> int:
        """Total FLOPs (floating-point operations, 2 per multiply-add) in the scope."""
        return sum(self.counts.get("", {}).values())

    @property
    def macs(self) -> int:
        """Multiply-adds of the matrix-product operators (convolution, matmul, attention,
        recurrent layers, and the int8 ones of quantized operators)."""
        return self._macs(self.counts.get("", {}))

    @property
    def int8_macs(self) -> int:
        """Of ``macs``, the int8 multiply-adds of quantized operators (``quantized.*``)."""
        return self._macs({op: n for op, n in self.counts.get("", {}).items() if _is_int8(op)})

    def _macs(self, ops: Mapping[str, int]) -> int:
        return sum(n for op, n in ops.items() if op in self.multiply_add_ops) // 2

    def by_module(self) -> pd.DataFrame:
        """One row per module (``""`` = whole call): columns module, flops, macs."""
        import pandas as pd

        rows = [(mod, sum(ops.values()), self._macs(ops)) for mod, ops in self.counts.items()]
        return pd.DataFrame(rows, columns=["module", "flops", "macs"])

    def by_operator(self) -> pd.DataFrame:
        """One row per operator, largest first: columns operator, flops, macs."""
        import pandas as pd

        rows = [
            (op, n, n // 2 if op in self.multiply_add_ops else 0)
            for op, n in self.counts.get("", {}).items()
        ]
        frame = pd.DataFrame(rows, columns=["operator", "flops", "macs"])
        return frame.sort_values("flops", ascending=False, ignore_index=True)

    def __str__(self) -> str:
        what = "forward + backward" if self.backward else "forward"
        causal = "" if self.causal == "full" else f", causal attention {self.causal!r}"
        text = (
            f"{self.model} {what} (scope {self.scope!r}, backend {self.backend!r}{causal}): "
            f"{self.flops / 1e9:.3f} GFLOP [{_UNIT}], {self.macs / 1e9:.3f} GMAC [multiply-adds]"
        )
        if self.int8_macs:
            text += f", of which {self.int8_macs / 1e9:.3f} GMAC int8 [quantized operators]"
        if self.unsupported:
            ops = ", ".join(f"{op} x{n}" for op, n in sorted(self.unsupported.items()))
            text += f"; not counted (no formula): {ops}"
        return text


def _describe(inputs: Any) -> str:
    if isinstance(inputs, torch.Tensor):
        return f"Tensor{list(inputs.shape)} {str(inputs.dtype).removeprefix('torch.')}"
    if isinstance(inputs, (list, tuple)):
        inner = ", ".join(_describe(item) for item in inputs)
        return f"[{inner}]" if isinstance(inputs, list) else f"({inner})"
    if isinstance(inputs, dict):
        return "{" + ", ".join(f"{k!r}: {_describe(v)}" for k, v in inputs.items()) + "}"
    return type(inputs).__name__


def _call(model: torch.nn.Module, inputs: Inputs) -> Any:
    """Call ``model`` the way ``inputs`` says, re-raising its errors with the inputs described."""
    try:
        if isinstance(inputs, tuple):
            return model(*inputs)
        if isinstance(inputs, dict):
            return model(**inputs)
        return model(inputs)
    except Exception as err:
        raise FlopCountError(
            f"{type(model).__name__} raised {type(err).__name__} on inputs "
            f"{_describe(inputs)}: {err}"
        ) from err


def _check_inputs(inputs: Any) -> None:
    if not isinstance(inputs, (torch.Tensor, tuple, dict, list)):
        expected = (
            "a tensor, a tuple (positional arguments), a dict (keyword arguments) or a list "
            "(e.g. of images)"
        )
        raise wrong_type("inputs", expected, inputs)


def _requires_grad(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and value.requires_grad


def _leaves(value: Any) -> list[Any]:
    """``tree_flatten``'s leaves, looking inside dataclass instances (a model's own output
    class) as well as tuples, lists and dicts."""
    out = []
    for leaf in tree_flatten(value)[0]:
        if dataclasses.is_dataclass(leaf) and not isinstance(leaf, type):
            out.extend(_leaves([getattr(leaf, f.name) for f in dataclasses.fields(leaf)]))
        else:
            out.append(leaf)
    return out


def _backward(out: Any) -> None:
    """Backpropagate ones from every output tensor that requires grad (``.grad`` is restored
    after).

    ``torch.autograd.grad`` would not touch ``.grad``, but the module tracker's backward hooks
    do not support it, so this runs ``backward`` and ``untouched`` puts the gradients back. The
    gradient enters through a view of each output (no arithmetic), so that the output's own
    gradient hook runs and the module that produced it is tracked in the backward too.
    """
    roots = [t for t in _leaves(out) if _requires_grad(t)]
    if not roots:
        raise ValueError(
            "backward=True needs an output tensor that requires grad (is the model frozen, its "
            f"output detached, or none of it a tensor? got {type(out).__name__})"
        )
    views = [t.view_as(t) for t in roots]
    torch.autograd.backward(views, grad_tensors=[torch.ones_like(t) for t in views])


@contextmanager
def _inference(model: torch.nn.Module, inputs: Inputs) -> Iterator[Inputs]:
    """Gradients off, and no parameter or input requiring grad for the body (restored after).

    Under ``no_grad`` a view of a parameter that requires grad (``cls_token.expand(B, -1, -1)``
    in CaiT / PiT) still requires grad but has no grad function, which the module tracker
    refuses when the view enters a module; with nothing requiring grad the same operators run.
    """
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        with torch.no_grad():
            yield tree_map(lambda v: v.detach() if _requires_grad(v) else v, inputs)
    finally:
        for p in frozen:
            p.requires_grad_(True)


def _module_counts(counter: FlopCounterMode, root: str) -> dict[str, dict[str, int]]:
    """Module -> operator -> FLOPs, renamed as ``named_modules`` names them; zeros dropped."""
    counts: dict[str, dict[str, int]] = {}
    for name, ops in counter.get_flop_counts().items():
        if name == root:
            continue  # the whole call is "Global", which also holds work outside forward hooks
        module = "" if name == "Global" else name.removeprefix(root + ".")
        nonzero = {str(op): n for op, n in ops.items() if n}
        if nonzero:
            counts[module] = nonzero
    return dict(sorted(counts.items(), key=lambda item: item[0] != ""))


def _warn_compute_not_counted(model: str, unsupported: Mapping[str, int]) -> None:
    for op, calls in sorted(unsupported.items()):
        if carries_compute(op):
            warn(
                f"perfkit.flops.count: {op} ran {calls} time(s) in {model} and has no FLOP "
                "formula: its work is NOT in the total (register_formula adds one)",
                FlopUndercountWarning,
            )


def _count_torch(
    model: torch.nn.Module, inputs: Inputs, backward: bool, scope: Scope, causal: Causal
) -> FlopReport:
    counter = _Counter(scope, causal)
    # The fused inference paths of nn.MultiheadAttention / nn.TransformerEncoderLayer are off
    # while counting: the same operators run as in training, so the forward and the forward
    # share of forward + backward agree (``untouched`` restores the flag).
    with untouched(model, inputs), fast_path_off():
        if backward:
            with torch.enable_grad(), counter:
                _backward(_call(model, inputs))
        else:
            with _inference(model, inputs) as detached, counter:
                _call(model, detached)
    counts = _module_counts(counter, type(model).__name__)
    multiply_add = {
        str(p) for p in counter.flop_registry if is_multiply_add(counter.in_place.get(p, p))
    }
    unsupported = dict(counter.unsupported)
    _warn_compute_not_counted(type(model).__name__, unsupported)
    return FlopReport(
        model=type(model).__name__,
        scope=scope,
        backend="torch",
        backward=backward,
        counts=counts,
        multiply_add_ops=frozenset(multiply_add),
        unsupported=unsupported,
        causal=causal,
    )


# fvcore's handles for operators that are not multiply-adds (its own per-element estimates):
# ignored, so that fvcore's figure is the multiply-add count of its remaining handles.
_FVCORE_NOT_MULTIPLY_ADD = (
    "aten::batch_norm",
    "aten::group_norm",
    "aten::layer_norm",
    "aten::instance_norm",
    "aten::upsample_nearest2d",
    "aten::upsample_bilinear2d",
    "aten::adaptive_avg_pool2d",
    "aten::grid_sampler",
)


def _count_fvcore(
    model: torch.nn.Module, inputs: Inputs, backward: bool, scope: Scope, causal: Causal
) -> FlopReport:
    if backward or scope != "torchvision" or isinstance(inputs, dict) or causal != "full":
        raise ValueError(
            "backend='fvcore' traces the forward with torch.jit and counts multiply-adds of "
            "positional inputs only: use scope='torchvision', backward=False, causal='full' "
            "and a tensor, tuple or list as inputs"
        )
    from fvcore.nn import FlopCountAnalysis
    from fvcore.nn import jit_handles as fv

    analysis = FlopCountAnalysis(model, inputs if isinstance(inputs, tuple) else (inputs,))
    # set_op_handle(name, None) does not remove a default handle: clear them all, then set
    # fvcore's multiply-add handles (as in its defaults) and ignore its other ones.
    analysis.clear_op_handles()
    analysis.set_op_handle(
        **{
            "aten::addmm": fv.addmm_flop_jit,
            "aten::bmm": fv.bmm_flop_jit,
            "aten::_convolution": fv.conv_flop_jit,
            "aten::einsum": fv.einsum_flop_jit,
            "aten::matmul": fv.matmul_flop_jit,
            "aten::mm": fv.matmul_flop_jit,
            "aten::linear": fv.linear_flop_jit,
        }
    )
    analysis.set_op_handle(**dict.fromkeys(_FVCORE_NOT_MULTIPLY_ADD))
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    analysis.tracer_warnings("none")
    with torch.no_grad(), fast_path_off():
        try:
            by_module = analysis.by_module_and_operator()
        except Exception as err:
            raise FlopCountError(
                f"fvcore could not trace {type(model).__name__} on inputs "
                f"{_describe(inputs)}: {type(err).__name__}: {err}"
            ) from err
    # fvcore counts one multiply-add as one "flop"; perfkit counts two FLOPs.
    counts = {
        module: {op: 2 * n for op, n in ops.items() if n}
        for module, ops in by_module.items()
        if any(ops.values())
    }
    return FlopReport(
        model=type(model).__name__,
        scope=scope,
        backend="fvcore",
        backward=False,
        counts=counts,
        multiply_add_ops=frozenset(op for ops in counts.values() for op in ops),
        unsupported=dict(analysis.unsupported_ops()),
    )


def count(
    model: torch.nn.Module,
    inputs: Inputs,
    *,
    backward: bool = False,
    scope: Scope = "full",
    backend: Backend = "torch",
    causal: Causal = "full",
) -> FlopReport:
    """Count the FLOPs of one call of ``model`` on ``inputs`` (run for real, once).

    Args:
        model: the module; counted in the mode it is in (call ``model.eval()`` for inference).
        inputs: a tensor (``model(x)``), a tuple (``model(*inputs)``), a dict of keyword
            arguments (``model(**inputs)``) or a list (``model(list)``, e.g. detection images).
        backward: also backpropagate ones from every output that requires grad and count the
            backward (training FLOPs, measured); parameters' ``.grad`` are left untouched.
        scope: ``"full"`` counts every operator perfkit has a formula for (matrix products,
            normalisation, pooling, softmax, pointwise arithmetic); ``"torchvision"`` counts the
            multiply-add operators only (convolution, matmul, attention), which reproduces
            torchvision's published ``weights.meta["_ops"]`` as ``report.macs``.
        backend: ``"torch"`` (torch.utils.flop_counter plus perfkit's formulas) or
            ``"fvcore"`` (fvcore's FlopCountAnalysis, forward and scope ``"torchvision"`` only).
        causal: how the Q·Kᵀ and P·V products of fused attention called with
            ``is_causal=True`` are counted, forward and backward: ``"full"`` (dense, as PyTorch
            counts them; PaLM, torchtitan), ``"half"`` (Megatron-LM) or ``"none"`` (FlagPerf);
            recorded in the report. Attention masked by an explicit mask is counted dense.

    Returns:
        A FlopReport: ``.flops`` (2 per multiply-add), ``.macs``, ``.by_module()``,
        ``.by_operator()``, ``.unsupported``.

    Raises:
        ValueError: unknown scope or backend, or an option the backend cannot do.
        TypeError: inputs of another type.
        FlopCountError: the model raised on the inputs (its error is the cause).
    """
    one_of("scope", scope, SCOPES)
    one_of("backend", backend, BACKENDS)
    if causal not in CAUSAL:
        raise ValueError(f"Expected argument `causal` to be one of {CAUSAL}, but got {causal!r}")
    _check_inputs(inputs)
    if model.training and not backward:
        warn(
            f"{type(model).__name__} is in training mode but backward=False: counting the "
            "training forward (batch statistics, training-only branches); call model.eval() "
            "to count inference"
        )
    run = _count_fvcore if backend == "fvcore" else _count_torch
    return run(model, inputs, backward, scope, causal)
