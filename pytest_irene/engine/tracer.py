"""The tracer's state during one forward: module hooks, torch-function and dispatch modes.

:mod:`pytest_irene.engine.tracing` registers :class:`Tracer`'s hooks on every
submodule and runs the forward under :class:`FunctionMode` (functional
primitives: matmul, softmax, SDPA, ``F.linear``, ``multi_head_attention_forward``)
and :class:`DispatchMode` (every aten op: glue charged to the innermost node;
values asked of meta tensors answered or refused, see
:mod:`pytest_irene.engine.datadep`). This module holds that machinery; the
tracing module builds the tree from what it records.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from pytest_irene.engine import datadep
from pytest_irene.engine import features as F_
from pytest_irene.engine.glue_ops import glue_op_features
from pytest_irene.engine.inputs import norm_width, row_layout, token_layout
from pytest_irene.engine.tensor_sizes import element_bytes, low_precision, tensors
from pytest_irene.engine import moe
from pytest_irene.engine.meta_fast import check_dtypes, fast_elementwise, fast_sdpa
from pytest_irene.engine.quantized import (
    note_weight_dtype, quantized_linear_meta, stored_low_precision, stored_weight_count,
)
from pytest_irene.engine.mha import MHA_FUNCTION, mha_leaves
from pytest_irene.engine.tree import NORM_WIDTH_NOTE, EnergyNode, join_scope, scope_label

__all__ = ["NodeCall", "Tracer", "FunctionMode", "DispatchMode", "SKIPPED_TYPES", "detach", "skipped"]


@dataclass
class NodeCall:
    """How one node was called, so it can be replayed alone: ``fn(*args, **kwargs)``.

    ``fn`` is the module (module nodes and module leaves) or the torch function
    (functional leaves); tensors in ``args``/``kwargs`` are detached, not copied.
    """

    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __iter__(self):  # lets ``fn, args, kwargs = call`` work
        return iter((self.fn, self.args, self.kwargs))

    def __call__(self) -> Any:
        return self.fn(*self.args, **self.kwargs)


#: Module types that are not nodes: they do nothing at inference.
SKIPPED_TYPES: tuple[type, ...] = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.Identity)
#: Class-name endings of stochastic depth (timm's and transformers' ``DropPath``, torchvision's
#: ``StochasticDepth``): no common base class, and the identity in eval mode, which a trace runs in.
_STOCHASTIC_DEPTH_SUFFIXES = ("DropPath", "StochasticDepth")


def skipped(module: nn.Module) -> bool:
    """A module that is no node: it does nothing at inference (every trace runs the model in eval
    mode), so as a leaf it would be predicted its type's per-call floor for no work (a Swin or
    SegFormer block's ``drop_path``)."""
    return isinstance(module, SKIPPED_TYPES) or type(module).__name__.endswith(_STOCHASTIC_DEPTH_SUFFIXES)


#: A product plus a bias (``addmm(bias, x, W)``, ``addmv(bias, W, x)``): a Linear when a weight is an operand.
_ADDMM = (torch.addmm, torch.Tensor.addmm, torch.addmv, torch.Tensor.addmv)


def _is_weight(value: Any) -> bool:
    """A parameter, or a view of one (``self.weight.t()`` is a plain tensor whose base is the parameter)."""
    return isinstance(value, nn.Parameter) or isinstance(getattr(value, "_base", None), nn.Parameter)


def _functional_table() -> dict[Any, tuple[str, str, str]]:
    """torch callables that are functional primitives -> (node type, scope suffix, formula name).

    ``einsum`` is a ``MatMul`` like the others (IrEne's primitive), counted with its own formula.
    A convolution, norm or GELU written functionally on a module's own weights
    (``F.conv2d(x, self.weight)``, ``F.layer_norm``) is the leaf its module form would be: as glue
    its work was predicted by the glue model, several times the leaf's energy for a convolution.
    Inside a module that is itself a leaf (``nn.Conv2d`` calls ``F.conv2d``) none of them is a node.
    """
    functional = torch.nn.functional
    table: dict[Any, tuple[str, str, str]] = {}
    for fn in (torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.Tensor.__rmatmul__,
               torch.bmm, torch.Tensor.bmm, torch.mm, torch.Tensor.mm, torch.baddbmm, torch.Tensor.baddbmm,
               torch.mv, torch.Tensor.mv, torch.dot, torch.Tensor.dot, torch.vdot, torch.Tensor.vdot):
        table[fn] = ("MatMul", "matmul", "MatMul")
    for fn in _ADDMM:  # a Linear on 2-D rows when a weight is an operand (see Tracer.functional)
        table[fn] = ("MatMul", "matmul", "MatMul")
    for dims in (1, 2, 3):
        table[getattr(functional, f"conv{dims}d")] = (f"Conv{dims}d", f"conv{dims}d", "ConvFn")
    table[functional.layer_norm] = ("LayerNorm", "layer_norm", "LayerNormFn")
    if hasattr(functional, "rms_norm"):  # torch >= 2.4
        table[functional.rms_norm] = ("RMSNorm", "rms_norm", "RMSNormFn")
    table[functional.gelu] = ("GELU", "gelu", "GELUFn")
    table[torch.einsum] = ("MatMul", "matmul", "Einsum")
    for fn in (torch.softmax, torch.nn.functional.softmax, torch.Tensor.softmax):
        table[fn] = ("Softmax", "softmax", "Softmax")
    table[torch.nn.functional.linear] = ("Linear", "linear", "LinearFn")
    sdpa = "ScaledDotProductAttention"
    table[torch.nn.functional.scaled_dot_product_attention] = (sdpa, "scaled_dot_product_attention", sdpa)
    if hasattr(torch, "_scaled_mm"):  # the fp8 GEMM: activations times a weight, so a Linear
        table[torch._scaled_mm] = ("Linear", "scaled_mm", "ScaledMM")
    return table


_FUNCTIONAL = _functional_table()


class _Frame:
    """One active node during the forward call."""

    __slots__ = ("node", "formula", "flops", "mem", "skip", "path", "routing", "module")

    def __init__(self, node: EnergyNode | None, formula: Any = None, skip: bool = False,
                 module: nn.Module | None = None):
        self.node = node
        self.module = module  # the module this frame runs (None for functional leaves and skips)
        self.formula = formula  # set for formula leaves: their inner ops are not counted
        self.skip = skip  # a module called inside a leaf, or a Dropout: no node
        self.flops = 0.0  # glue charged to this node itself
        self.mem = 0.0
        self.path = ""  # the module's name before a repeated call's "#n" (functional leaves are named under it)
        self.routing: moe.ExpectedRouting | None = None  # a list-of-experts block traced on meta


class Tracer:
    def __init__(self, scopes: dict[nn.Module, list[str]], capture: bool, on_meta: bool = False):
        self.scopes = scopes
        self.capture = capture
        self.on_meta = on_meta
        #: (batch, tokens per sample) from the first node that knows its input's layout
        #: (:func:`~pytest_irene.engine.inputs.token_layout`)
        self.token_layout: tuple[int, int] | None = None
        #: (batch, 1) from the first token-wise layer given ``(B, D)`` rows
        #: (:func:`~pytest_irene.engine.inputs.row_layout`)
        self.row_layout: tuple[int, int] | None = None
        self.calls: dict[str, NodeCall] = {}
        self.used: dict[str, int] = {}
        self.stack: list[_Frame] = []
        self.own: dict[int, tuple[float, float]] = {}  # id(node) -> glue (flops, mem)
        self.leaf_values: dict[int, dict[str, float]] = {}
        self.params: dict[int, float] = {}
        self.element_bytes: dict[int, int] = {}  # id(node) -> element size of its result (dtype)
        self.root_node: EnergyNode | None = None
        self.functional_counts: dict[str, int] = {}  # "head.matmul" -> functional leaves named so far
        #: modules storing low-precision weights (int8, fp8, torch-quantized) -> those weights; found
        #: once, so that an fp32 model (none) pays nothing per node
        self.low_precision = {m: w for m in scopes if (w := stored_low_precision(m))}
        self.stored_weights = {m: stored_weight_count(m) for m in self.low_precision}

    # -- naming ---------------------------------------------------------------------
    def _name(self, module: nn.Module, top: _Frame | None) -> str | None:
        """The module's path; a module registered under several paths (an activation
        instance shared by every layer) takes the path under its caller."""
        names = self.scopes.get(module)
        if not names:
            return None
        if len(names) == 1 or top is None or top.node is None:
            return names[0]
        prefix = top.node.scope.split("#", 1)[0] + "." if top.node.scope else ""
        under = [n for n in names if n.startswith(prefix)]
        fresh = [n for n in under if n not in self.used]
        return (fresh or under or names)[0]

    def _params(self, module: nn.Module) -> float:
        """Parameters of ``module`` and its submodules, plus the low-precision weights they store as
        buffers or packed (which ``parameters()`` does not list)."""
        count = float(sum(p.numel() for p in module.parameters()))
        if self.stored_weights:
            count += sum(self.stored_weights.get(m, 0.0) for m in module.modules())
        return count

    def unique(self, scope: str) -> str:
        n = self.used.get(scope, 0)
        self.used[scope] = n + 1
        return scope if n == 0 else f"{scope}#{n}"

    def functional_scope(self, parent: _Frame, suffix: str) -> str:
        """``head.matmul#0``, ``#1``...: numbered over every call of the module, as its module children are
        (a second call of ``head`` names its children ``head.fc#1`` and ``head.matmul#2``, not ``head#1.matmul#0``)."""
        key = join_scope(parent.path, suffix)
        i = self.functional_counts.get(key, 0)
        self.functional_counts[key] = i + 1
        return f"{key}#{i}"

    # -- module hooks -----------------------------------------------------------------
    def pre_hook(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        top = self.stack[-1] if self.stack else None
        if (top is not None and (top.skip or top.formula is not None)) or skipped(module):
            self.stack.append(_Frame(None, skip=True))
            return
        name = self._name(module, top)
        if name is None:  # a module created inside forward: name it after its caller
            parent = top.node.scope if top is not None and top.node is not None else ""
            name = join_scope(parent, type(module).__name__.lower())
        scope = self.unique(name)
        formula = F_.formula_for(module)
        if formula is None and moe.is_fused_experts(module):
            formula = moe.fused_experts_features
        level = "model" if top is None else ("ml" if formula is not None else "module")
        node = EnergyNode(scope=scope, type=type(module).__name__, level=level)
        trained_as = F_.regressor_type(module) if formula is not None else None
        if trained_as is not None:
            node.notes["regressor_type"] = trained_as
        if top is None:
            self.root_node = node
        self.params[id(node)] = self._params(module)
        note_weight_dtype(node, self.low_precision.get(module, []))
        if top is not None and top.node is not None:
            top.node.add_child(node)
        frame = _Frame(node, formula, module=module)
        frame.path = name
        experts = moe.experts_in_block(module) if self.on_meta and formula is None else None
        if experts is not None:
            frame.routing = moe.ExpectedRouting(experts)
        self.stack.append(frame)
        if self.capture:
            self.calls[scope] = NodeCall(module, detach(args), detach(kwargs))

    def post_hook(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        frame = self.stack.pop()
        if frame.node is None:
            return
        self._close(frame, module, tuple(args) + tuple(kwargs.values()), output)

    def _close(self, frame: _Frame, fn: Any, inputs: tuple[Any, ...], output: Any) -> None:
        node = frame.node
        assert node is not None
        size = element_bytes(output)
        size = size if size is not None else element_bytes(inputs)
        if size is not None:
            self.element_bytes[id(node)] = size
        if frame.formula is not None:
            self.leaf_values[id(node)] = self._leaf_features(frame, fn, inputs, output)
            width = norm_width(fn, inputs)
            if width is not None:  # the model's width, which flops over the tree's tokens misread in a
                node.notes[NORM_WIDTH_NOTE] = width  # tower of other tokens (CLIP's vision beside its text)
        else:
            self.own[id(node)] = (frame.flops, frame.mem)
        if self.token_layout is None:  # a module leaf, or a functional one (F.linear on a module's weights)
            self.token_layout = token_layout(fn, inputs, self._caller_module())
        if self.row_layout is None:
            self.row_layout = row_layout(fn, inputs)

    def _caller_module(self) -> nn.Module | None:
        """The module whose forward called the node being closed (its frame is popped already)."""
        return next((f.module for f in reversed(self.stack) if f.module is not None), None)

    def _leaf_features(self, frame: _Frame, fn: Any, inputs: tuple[Any, ...], output: Any) -> dict[str, float]:
        """The formula's features, computed under a formula frame: reading a parametrized weight
        (``weight_norm``: wav2vec2's positional conv) runs its parametrization's modules and ops,
        which are the leaf's own work, already in its formula, not nodes or glue of its caller."""
        assert frame.node is not None
        self.stack.append(_Frame(None, formula=frame.formula))
        try:
            return F_.leaf_features(fn, inputs, output, frame.formula, frame.node.type)
        finally:
            self.stack.pop()

    def open_root(self, module: nn.Module, method: str) -> None:
        """The root of a traced bound method: that method's call (the module's own hooks are not set)."""
        node = EnergyNode(scope="", type=f"{type(module).__name__}.{method}", level="model")
        self.root_node = node
        self.params[id(node)] = self._params(module)
        self.stack.append(_Frame(node))

    def close_root(self) -> None:
        frame = self.stack.pop()
        self.own[id(frame.node)] = (frame.flops, frame.mem)

    # -- functional primitives ----------------------------------------------------------
    def functional(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        kind = _FUNCTIONAL.get(func)
        top = self.stack[-1] if self.stack else None
        if func is MHA_FUNCTION and top is not None and top.node is not None and not top.skip and top.formula is None:
            return self._mha(top, func, args, kwargs)
        if kind is None or top is None or top.skip or top.formula is not None or top.node is None:
            return func(*args, **kwargs)
        type_name, suffix, formula_name = kind
        if func in _ADDMM and any(_is_weight(a) for a in args[1:3]):  # addmm(bias, x, W): what nn.Linear
            type_name, suffix = "Linear", "linear"  # runs on 2-D rows, counted by the same 2·M·K·N
        scope = self.functional_scope(top, suffix)
        formula = F_.formula_by_name(formula_name)
        node = top.node.add_child(EnergyNode(scope=scope, type=type_name, level="ml"))
        self.params[id(node)] = _functional_params(type_name, args, kwargs)
        if type_name == "Linear":  # an fp8 GEMM's operands, an int8 weight handed to F.linear
            note_weight_dtype(node, [t for t in tensors((args, tuple(kwargs.values())))[1:2] if low_precision(t)])
        frame = _Frame(node, formula)
        self.stack.append(frame)
        if self.capture:
            self.calls[scope] = NodeCall(func, detach(args), detach(kwargs))
        output = fast_sdpa(args, kwargs) if self.on_meta and type_name == "ScaledDotProductAttention" else None
        if output is None:
            output = func(*args, **kwargs)
        self.stack.pop()
        self._close(frame, func, tuple(args) + tuple(kwargs.values()), output)
        return output

    def _mha(self, top: _Frame, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Run ``multi_head_attention_forward`` uncounted; add its projections and attention as leaves."""
        self.stack.append(_Frame(None, formula="mha"))
        try:
            output = func(*args, **kwargs)
        finally:
            self.stack.pop()
        assert top.node is not None
        found = mha_leaves(args, kwargs)
        for leaf in found.leaves:
            scope = self.functional_scope(top, leaf.name) if leaf.type in ("MatMul", "Softmax") \
                else self.unique(join_scope(top.node.scope, leaf.name))
            node = top.node.add_child(EnergyNode(scope=scope, type=leaf.type, level="ml"))
            self.leaf_values[id(node)] = leaf.features
            self.params[id(node)] = leaf.params
        top.flops += found.glue[0]
        top.mem += found.glue[1]
        if self.token_layout is None:
            self.token_layout = found.layout
        return output

    # -- values asked of meta tensors ------------------------------------------------------
    def _scope(self) -> str:
        frame = next((f for f in reversed(self.stack) if f.node is not None), None)
        return scope_label(frame.node.scope) if frame is not None and frame.node is not None else scope_label("")

    def _routing(self) -> moe.ExpectedRouting | None:
        return next((f.routing for f in reversed(self.stack) if f.routing is not None), None)

    def meta_scalar(self, t: torch.Tensor) -> Any:
        """A value asked of a meta tensor: known for mask helpers and routing, refused otherwise."""
        stack = traceback.extract_stack()
        frame = datadep.user_frame(stack)
        if datadep.known_answer(frame):
            return _meta_scalar(t)
        if t.dtype == torch.bool and datadep.is_assertion(stack):
            return True  # an assertion that the inputs are consistent: it holds, or a real device raises
        routing = self._routing()
        if routing is not None and t.dtype == torch.bool:
            return True  # "does this expert get tokens?": every expert does under even routing
        index = routing.expert_index(t) if routing is not None else None
        if index is not None:
            return index  # which expert a loop over the hit experts runs: the expected answer's own positions
        raise datadep.refuse(datadep.describe_value(t), self._scope(), frame)

    def meta_format(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        """``f"{t}"`` of a meta tensor: an expert's index read back from the hit experts formats as
        that index (Switch Transformers names its experts ``f"expert_{idx[0]}"``); torch formats any
        other meta tensor as its repr, as it always does."""
        routing = self._routing()
        t = args[0]
        index = routing.expert_index(t) if routing is not None and isinstance(t, torch.Tensor) else None
        return format(index, *args[1:]) if index is not None else func(*args, **kwargs)

    def meta_copy_out(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """A meta tensor copied to the CPU (``.tolist()``, ``.cpu()``): a router's rows per expert
        get the expected ones; anything else runs as it is (and fails: a meta tensor has no data)."""
        routing = self._routing()
        counts = routing.rows_per_expert(args[0]) if routing is not None else None
        return counts if counts is not None else func(*args, **kwargs)

    def meta_nonzero(self, t: torch.Tensor) -> torch.Tensor:
        routing = self._routing()
        if routing is not None:
            return routing.nonzero(t)
        raise datadep.refuse("the positions of non-zero values (nonzero, torch.where(mask), boolean indexing)",
                             self._scope(), datadep.user_frame())

    def _saw_topk(self, out: Any) -> None:
        """A top-k selection inside a MoE block: its indices are the rows its experts receive."""
        routing = self._routing()
        if routing is not None and isinstance(out, tuple) and len(out) == 2:
            routing.saw_topk(out[1])

    # -- aten ops ------------------------------------------------------------------------
    def aten(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> None:
        top = self.stack[-1] if self.stack else None
        if top is None or top.formula is not None:
            return
        if top.skip:  # inside a Dropout/Identity: charge the nearest real node
            top = next((f for f in reversed(self.stack) if not f.skip), None)
            if top is None or top.formula is not None:
                return
        name = func.overloadpacket.__name__ if hasattr(func, "overloadpacket") else str(func)
        if name == "topk" and self.on_meta:
            self._saw_topk(out)
        counted = glue_op_features(name, args, out)
        if counted is not None:
            top.flops += counted[0]
            top.mem += counted[1]


class FunctionMode(TorchFunctionMode):
    def __init__(self, tracer: Tracer):
        super().__init__()
        self.tracer = tracer

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        if func in _FUNCTIONAL or func is MHA_FUNCTION:
            return self.tracer.functional(func, args, kwargs)
        if func is _FORMAT and self.tracer.on_meta:
            return self.tracer.meta_format(func, args, kwargs)
        return func(*args, **kwargs)


class DispatchMode(TorchDispatchMode):
    def __init__(self, tracer: Tracer):
        super().__init__()
        self.tracer = tracer

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        if args and isinstance(args[0], torch.Tensor) and args[0].is_meta:
            if func is _LOCAL_SCALAR:
                return self.tracer.meta_scalar(args[0])
            if func is _NONZERO:
                return self.tracer.meta_nonzero(args[0])
            if func is _TO_COPY and _to_cpu(kwargs):
                return self.tracer.meta_copy_out(func, args, kwargs)
            check_dtypes(func, args)  # what the real kernels refuse and torch's meta kernels let through
            out = quantized_linear_meta(func, args)
            out = fast_elementwise(func, args, kwargs) if out is None else out
            if out is None:
                out = func(*args, **kwargs)
        else:
            out = func(*args, **kwargs)
        self.tracer.aten(func, args, kwargs, out)
        return out


#: Functional leaves that combine activations only: no parameters of their own.
_ACTIVATION_PRODUCTS = ("MatMul", "Softmax", "ScaledDotProductAttention")


def _functional_params(type_name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> float:
    """Parameters of a functional leaf: ``F.linear(x, W, b)``'s (or ``F.conv2d``'s, ``F.layer_norm``'s)
    weight and bias when they are parameters (a MoE router, a hand-written layer), as the module
    leaf counts its own; it had none, so the leaf looked weightless to the regressor. Products of
    activations (``MatMul``, ``Softmax``, SDPA) have none."""
    if type_name in _ACTIVATION_PRODUCTS:
        return 0.0
    weights = [v for v in (*args, *kwargs.values()) if _is_weight(v)]
    return float(sum(w.numel() for w in weights))


_LOCAL_SCALAR = torch.ops.aten._local_scalar_dense.default
_NONZERO = torch.ops.aten.nonzero.default
_TO_COPY = torch.ops.aten._to_copy.default
_FORMAT = torch.Tensor.__format__


def _to_cpu(kwargs: dict[str, Any]) -> bool:
    """``_to_copy`` bound for the CPU: the copy ``.tolist()``/``.cpu()`` make of a meta tensor."""
    device = kwargs.get("device")
    return device is not None and torch.device(device).type == "cpu"


def _meta_scalar(t: torch.Tensor) -> Any:
    """The answer transformers' mask helpers get on meta (see :mod:`pytest_irene.engine.datadep`).

    "Is every position unmasked?" -> no, so the model builds and applies its
    attention mask, as every model of the reference dataset did (transformers
    4.2.2 always added the mask). Numbers answer ``1``.
    """
    if t.dtype == torch.bool:
        return False
    if t.is_floating_point():
        return 1.0
    return 1


def detach(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, tuple):
        return tuple(detach(v) for v in value)
    if isinstance(value, list):
        return [detach(v) for v in value]
    if isinstance(value, dict):
        return {k: detach(v) for k, v in value.items()}
    return value
