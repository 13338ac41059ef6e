"""Trace any ``torch.nn.Module`` into an :class:`~pytest_irene.engine.tree.EnergyTree`.

How it works, and why:

* **Module nodes** come from forward pre-/post-hooks (with kwargs) registered on
  every submodule for the duration of one forward call, so the tree follows the
  *execution* (a module that is never called is not a node; a module called
  twice gets two nodes, the second scope suffixed ``#1``).
* **Leaves** (level ``ml``) are modules whose type has a formula in
  :mod:`pytest_irene.engine.features` (``Linear``, ``LayerNorm``, ``Conv1D``, GELU...),
  and the functional primitives IrEne adds, caught by a ``TorchFunctionMode``:
  ``MatMul`` (``torch.matmul``, ``@``, ``bmm``, ``baddbmm``, ``mm``), ``Einsum``,
  ``Softmax`` (``torch.softmax``, ``F.softmax``, ``Tensor.softmax``) and
  ``ScaledDotProductAttention``. They are named ``<caller scope>.matmul#i``,
  ``.softmax#i``... per caller scope, as in the reference dataset.
* **Glue**: a ``TorchDispatchMode`` sees every aten op and charges it to the
  innermost node that is not a formula leaf, so a module's features include the
  adds, scalings and masks it runs itself (the dataset counted them that way).
* **Meta device by default**: the model is copied with every parameter and
  buffer replaced by a meta tensor (no data copied), the inputs are converted to
  meta, and nothing of the user's model is touched. Meta tensors have no values,
  so a data-dependent check (``mask.all()``, ``bool(t)``) answers ``False`` for
  booleans ("is every position unmasked?" -> no: the model applies its attention
  mask, as every model of the reference dataset did) and ``1`` for numbers.
  :func:`~pytest_irene.engine.architectures.example_inputs` pads one position so a real
  device takes the same branch. On a real device the user's
  model runs for real, and ``capture=True`` records each node's call so the
  runtime can replay nodes one by one.
"""

from __future__ import annotations

import copy
import gc
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from pytest_irene.engine import datadep
from pytest_irene.engine import features as F_
from pytest_irene.engine import moe
from pytest_irene.engine.meta_fast import fast_elementwise, fast_sdpa
from pytest_irene.engine.mha import MHA_FUNCTION, mha_leaves
from pytest_irene.errors import TraceError, UsageError
from pytest_irene.engine.tree import EnergyNode, EnergyTree, scope_label

__all__ = ["NodeCall", "trace", "infer_batch_seq", "model_device"]


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
_SKIPPED_TYPES: tuple[type, ...] = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.Identity)


def _functional_table() -> dict[Any, tuple[str, str, str]]:
    """torch callables that are functional primitives -> (node type, scope suffix, formula name).

    ``einsum`` is a ``MatMul`` like the others (IrEne's primitive), counted with its own formula.
    """
    table: dict[Any, tuple[str, str, str]] = {}
    for fn in (torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.Tensor.__rmatmul__,
               torch.bmm, torch.Tensor.bmm, torch.mm, torch.Tensor.mm, torch.baddbmm, torch.Tensor.baddbmm):
        table[fn] = ("MatMul", "matmul", "MatMul")
    table[torch.einsum] = ("MatMul", "matmul", "Einsum")
    for fn in (torch.softmax, torch.nn.functional.softmax, torch.Tensor.softmax):
        table[fn] = ("Softmax", "softmax", "Softmax")
    table[torch.nn.functional.linear] = ("Linear", "linear", "LinearFn")
    sdpa = "ScaledDotProductAttention"
    table[torch.nn.functional.scaled_dot_product_attention] = (sdpa, "scaled_dot_product_attention", sdpa)
    return table


_FUNCTIONAL = _functional_table()


class _Frame:
    """One active node during the forward call."""

    __slots__ = ("node", "formula", "flops", "mem", "skip", "suffixes", "routing")

    def __init__(self, node: EnergyNode | None, formula: Any = None, skip: bool = False):
        self.node = node
        self.formula = formula  # set for formula leaves: their inner ops are not counted
        self.skip = skip  # a module called inside a leaf, or a Dropout: no node
        self.flops = 0.0  # glue charged to this node itself
        self.mem = 0.0
        self.suffixes: dict[str, int] = {}
        self.routing: moe.ExpectedRouting | None = None  # a list-of-experts block traced on meta


class _Tracer:
    def __init__(self, scopes: dict[nn.Module, list[str]], capture: bool, on_meta: bool = False):
        self.scopes = scopes
        self.capture = capture
        self.on_meta = on_meta
        self.token_len: int | None = None  # sequence length of the first token-wise leaf input (B, S, D)
        self.calls: dict[str, NodeCall] = {}
        self.used: dict[str, int] = {}
        self.stack: list[_Frame] = []
        self.own: dict[int, tuple[float, float]] = {}  # id(node) -> glue (flops, mem)
        self.leaf_values: dict[int, dict[str, float]] = {}
        self.params: dict[int, float] = {}
        self.element_bytes: dict[int, int] = {}  # id(node) -> element size of its result (dtype)
        self.root_node: EnergyNode | None = None

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

    def unique(self, scope: str) -> str:
        n = self.used.get(scope, 0)
        self.used[scope] = n + 1
        return scope if n == 0 else f"{scope}#{n}"

    def functional_scope(self, parent: _Frame, suffix: str) -> str:
        i = parent.suffixes.get(suffix, 0)
        parent.suffixes[suffix] = i + 1
        base = parent.node.scope if parent.node is not None else ""
        return f"{base}.{suffix}#{i}" if base else f"{suffix}#{i}"

    # -- module hooks -----------------------------------------------------------------
    def pre_hook(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        top = self.stack[-1] if self.stack else None
        if (top is not None and (top.skip or top.formula is not None)) or isinstance(module, _SKIPPED_TYPES):
            self.stack.append(_Frame(None, skip=True))
            return
        name = self._name(module, top)
        if name is None:  # a module created inside forward: name it after its caller
            parent = top.node.scope if top is not None and top.node is not None else ""
            name = f"{parent}.{type(module).__name__.lower()}" if parent else type(module).__name__.lower()
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
        self.params[id(node)] = float(sum(p.numel() for p in module.parameters()))
        if top is not None and top.node is not None:
            top.node.add_child(node)
        frame = _Frame(node, formula)
        experts = moe.experts_in_block(module) if self.on_meta and formula is None else None
        if experts is not None:
            frame.routing = moe.ExpectedRouting(experts)
        self.stack.append(frame)
        if self.capture:
            self.calls[scope] = NodeCall(module, _detach(args), _detach(kwargs))

    def post_hook(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        frame = self.stack.pop()
        if frame.node is None:
            return
        self._close(frame, module, tuple(args) + tuple(kwargs.values()), output)

    def _close(self, frame: _Frame, fn: Any, inputs: tuple[Any, ...], output: Any) -> None:
        node = frame.node
        assert node is not None
        size = F_.element_bytes(output)
        size = size if size is not None else F_.element_bytes(inputs)
        if size is not None:
            self.element_bytes[id(node)] = size
        if frame.formula is not None:
            self.leaf_values[id(node)] = F_.leaf_features(fn, inputs, output, frame.formula, node.type)
            if self.token_len is None and isinstance(fn, nn.Module) and _token_wise(fn):
                x = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None
                if x is not None and x.dim() == 3 and x.is_floating_point():
                    self.token_len = int(x.shape[1])
        else:
            self.own[id(node)] = (frame.flops, frame.mem)

    def open_root(self, module: nn.Module, method: str) -> None:
        """The root of a traced bound method: that method's call (the module's own hooks are not set)."""
        node = EnergyNode(scope="", type=f"{type(module).__name__}.{method}", level="model")
        self.root_node = node
        self.params[id(node)] = float(sum(p.numel() for p in module.parameters()))
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
        scope = self.functional_scope(top, suffix)
        formula = F_.formula_by_name(formula_name)
        node = top.node.add_child(EnergyNode(scope=scope, type=type_name, level="ml"))
        self.params[id(node)] = 0.0
        frame = _Frame(node, formula)
        self.stack.append(frame)
        if self.capture:
            self.calls[scope] = NodeCall(func, _detach(args), _detach(kwargs))
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
        leaves, (glue_flops, glue_mem) = mha_leaves(args, kwargs)
        for suffix, type_name, values in leaves:
            node = top.node.add_child(EnergyNode(scope=f"{top.node.scope}.{suffix}", type=type_name, level="ml"))
            self.leaf_values[id(node)] = values
            self.params[id(node)] = 0.0
        top.flops += glue_flops
        top.mem += glue_mem
        return output

    # -- values asked of meta tensors ------------------------------------------------------
    def _scope(self) -> str:
        frame = next((f for f in reversed(self.stack) if f.node is not None), None)
        return scope_label(frame.node.scope) if frame is not None and frame.node is not None else scope_label("")

    def _routing(self) -> moe.ExpectedRouting | None:
        return next((f.routing for f in reversed(self.stack) if f.routing is not None), None)

    def meta_scalar(self, t: torch.Tensor) -> Any:
        """A value asked of a meta tensor: known for mask helpers and routing, refused otherwise."""
        frame = datadep.user_frame()
        if datadep.known_answer(frame):
            return _meta_scalar(t)
        if self._routing() is not None and t.dtype == torch.bool:
            return True  # "does this expert get tokens?": every expert does under even routing
        raise datadep.refuse(datadep.describe_value(t), self._scope(), frame)

    def meta_nonzero(self, t: torch.Tensor) -> torch.Tensor:
        routing = self._routing()
        if routing is not None:
            return routing.nonzero(t)
        raise datadep.refuse("the positions of non-zero values (nonzero, torch.where(mask), boolean indexing)",
                             self._scope(), datadep.user_frame())

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
        counted = F_.glue_op_features(name, args, out)
        if counted is not None:
            top.flops += counted[0]
            top.mem += counted[1]


class _FunctionMode(TorchFunctionMode):
    def __init__(self, tracer: _Tracer):
        super().__init__()
        self.tracer = tracer

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        if func in _FUNCTIONAL or func is MHA_FUNCTION:
            return self.tracer.functional(func, args, kwargs)
        return func(*args, **kwargs)


class _DispatchMode(TorchDispatchMode):
    def __init__(self, tracer: _Tracer):
        super().__init__()
        self.tracer = tracer

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        if args and isinstance(args[0], torch.Tensor) and args[0].is_meta:
            if func is _LOCAL_SCALAR:
                return self.tracer.meta_scalar(args[0])
            if func is _NONZERO:
                return self.tracer.meta_nonzero(args[0])
            out = fast_elementwise(func, args, kwargs)
            if out is None:
                out = func(*args, **kwargs)
        else:
            out = func(*args, **kwargs)
        self.tracer.aten(func, args, kwargs, out)
        return out


_LOCAL_SCALAR = torch.ops.aten._local_scalar_dense.default
_NONZERO = torch.ops.aten.nonzero.default
#: Module types whose (batch, tokens, features) input gives the tokens per sample.
_TOKEN_WISE: tuple[type, ...] = (nn.Linear, nn.LayerNorm)


def _token_wise(module: nn.Module) -> bool:
    """A leaf that works token by token (Linear, LayerNorm, RMSNorm): its input's dim 1 is the tokens."""
    name = type(module).__name__.lower()
    return isinstance(module, _TOKEN_WISE) or name.endswith("rmsnorm") or name.endswith("layernorm")


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


def _detach(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, tuple):
        return tuple(_detach(v) for v in value)
    if isinstance(value, list):
        return [_detach(v) for v in value]
    if isinstance(value, dict):
        return {k: _detach(v) for k, v in value.items()}
    return value


def _to_device(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, tuple):
        return tuple(_to_device(v, device) for v in value)
    if isinstance(value, list):
        return [_to_device(v, device) for v in value]
    if isinstance(value, Mapping):  # dict, transformers' BatchEncoding
        return {k: _to_device(v, device) for k, v in value.items()}
    return value


def _flat_tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _flat_tensors(v)]
    if isinstance(value, Mapping):
        return [t for v in value.values() for t in _flat_tensors(v)]
    return []


def infer_batch_seq(inputs: Any) -> tuple[int, int]:
    """(batch size, sequence length) of model inputs.

    The first 2-D integer tensor (``input_ids``: ``(batch, seq)``) decides; otherwise
    the first tensor's dims 0 and 1 (a 1-D tensor is a batch of one sequence).
    """
    tensors = _flat_tensors(inputs)
    if not tensors:
        raise UsageError("trace: inputs must be a tensor, a tuple or a dict holding at least one tensor")
    for t in tensors:
        if t.dim() == 2 and not t.is_floating_point() and not t.is_complex() and t.dtype != torch.bool:
            return int(t.shape[0]), int(t.shape[1])
    first = tensors[0]
    if first.dim() == 0:
        return 1, 1
    if first.dim() == 1:
        return 1, int(first.shape[0])
    return int(first.shape[0]), int(first.shape[1])


def _meta_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose parameters and buffers are meta tensors (no data copied)."""
    memo: dict[int, Any] = {}
    for p in model.parameters():
        memo[id(p)] = nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
    for b in model.buffers():
        memo[id(b)] = torch.empty_like(b, device="meta")
    for m in model.modules():  # tensors kept as plain attributes (cached tables, masks)
        for value in vars(m).values():
            if isinstance(value, torch.Tensor) and value.dim() > 0 and id(value) not in memo:
                memo[id(value)] = torch.empty_like(value, device="meta")
    try:
        clone = copy.deepcopy(model, memo)
    except Exception as exc:  # noqa: BLE001 - any attribute that refuses to copy
        raise TraceError(
            f"cannot trace {type(model).__name__} on the meta device: copying the model failed "
            f"({type(exc).__name__}: {exc}); pass device='cpu' to trace it for real"
        ) from exc
    for m in clone.modules():
        _drop_user_hooks(m)
        if moe.is_fused_experts(m):
            m.forward = moe.meta_forward(m)
    return clone


def _drop_user_hooks(module: nn.Module) -> None:
    """The user's forward hooks are for real runs: on the meta copy they would see meta tensors."""
    for attr in ("_forward_hooks", "_forward_pre_hooks", "_forward_hooks_with_kwargs",
                 "_forward_pre_hooks_with_kwargs", "_forward_hooks_always_called"):
        table = getattr(module, attr, None)
        if table is not None:
            setattr(module, attr, type(table)())


def _call(model: nn.Module, inputs: Any) -> Any:
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def _default_name(model: nn.Module) -> str:
    config = getattr(model, "config", None)
    name = getattr(config, "_name_or_path", "") if config is not None else ""
    return name or type(model).__name__


def model_device(model: nn.Module) -> str | None:
    """Where ``model`` lives (``"cpu"``, ``"cuda:0"``, ``"meta"``): its first parameter's
    device, else its first buffer's; ``None`` for a model without tensors. A bound method is
    looked up on its module; anything else that is not a module gives ``None`` (trace refuses it)."""
    model = getattr(model, "__self__", model)
    if not isinstance(model, nn.Module):
        return None
    for t in model.parameters():
        return str(t.device)
    for t in model.buffers():
        return str(t.device)
    return None


def trace(
    model: nn.Module | Callable[..., Any],
    inputs: Any,
    *,
    batch_size: int | None = None,
    seq_len: int | None = None,
    device: str | torch.device = "meta",
    capture: bool = False,
    model_name: str | None = None,
) -> EnergyTree:
    """Build the energy tree of ``model`` called with ``inputs`` (one forward, no grad, eval mode).

    ``model`` is a ``torch.nn.Module`` or a bound method of one (``model.encode``:
    the root is that method's call). ``inputs`` is a tensor (``model(x)``), a
    tuple/list (``model(*inputs)``) or a dict (``model(**inputs)``). Every node gets
    the model features of ONE execution: ``batch_size, seq_len, batch_seq, params,
    flops, mem_bytes, bytes_per_element`` (the element size of the node's
    result: its dtype; ``tree.meta["dtype"]`` names the model's); without ``seq_len=``, tokens per sample are the ids' length,
    else what the model processes (patches + class token, audio frames: the
    sequence dim of the first token-wise layer's input), else an image's positions.
    On ``device="meta"`` (default) no arithmetic runs, the user's model is left
    untouched and its forward hooks do not fire; code that depends on tensor values
    raises :class:`TraceError` asking for a real device. On a real device the model
    (which must already live there, weights used as they are) runs for real and
    ``capture=True`` fills ``tree.calls[scope]`` with a :class:`NodeCall` per node.
    Raises :class:`TraceError` naming the module that failed.
    """
    module, method = resolve_callable(model, "trace")
    dev = torch.device(device)
    if capture and dev.type == "meta":
        raise UsageError("trace: capture=True records calls to replay for real; pass a real device ('cpu', 'cuda')")
    target = prepare_target(module, dev)
    return trace_prepared(target, method, _to_device(inputs, dev), dev, batch_size=batch_size, seq_len=seq_len,
                          capture=capture, model_name=model_name or _default_name(module))


def resolve_callable(model: Any, who: str) -> tuple[nn.Module, str | None]:
    """``(module, method name or None)`` of what the user passed; a plain function is refused."""
    if isinstance(model, nn.Module):
        return model, None
    owner = getattr(model, "__self__", None)
    name = getattr(model, "__name__", None)
    if isinstance(owner, nn.Module) and isinstance(name, str) and callable(model):
        return owner, name
    what = "a plain function" if callable(model) else type(model).__name__
    raise UsageError(
        f"{who}: expected a torch.nn.Module or a bound method of one (model, model.encode), got {what}; "
        "a function has no parameters to trace: wrap it in an nn.Module whose forward calls it"
    )


def prepare_target(module: nn.Module, dev: torch.device) -> nn.Module:
    """The module to run: a meta copy on ``meta``, else the user's own module (no copy), checked to live on ``dev``."""
    if dev.type == "meta":
        return _meta_copy(module)
    here = model_device(module)
    if here is not None and torch.device(here).type != dev.type:
        raise UsageError(
            f"trace: the model lives on {here}, not on {dev}; move it there first (model.to({str(dev)!r})) "
            "or trace on the meta device"
        )
    return module


def trace_prepared(
    target: nn.Module,
    method: str | None,
    inputs: Any,
    dev: torch.device,
    *,
    batch_size: int | None = None,
    seq_len: int | None = None,
    capture: bool = False,
    model_name: str = "",
    on_output: Callable[[Any], None] | None = None,
) -> EnergyTree:
    """:func:`trace` of a module already prepared by :func:`prepare_target`, inputs already on ``dev``.

    ``on_output`` receives what the model returned (the generation loop picks its next token from it)."""
    inferred = infer_batch_seq(inputs)
    batch = int(batch_size) if batch_size is not None else inferred[0]
    name = model_name or type(target).__name__
    # named_modules(remove_duplicate=False) lists a shared module under each of its paths
    names: dict[nn.Module, list[str]] = {}
    for path, m in target.named_modules(remove_duplicate=False):
        names.setdefault(m, []).append(path)
    tracer = _Tracer(names, capture, on_meta=dev.type == "meta")
    handles = []
    training = {m: m.training for m in target.modules()}
    collecting = gc.isenabled()
    gc.disable()  # a trace allocates many small objects and frees none: collections only cost time
    try:
        for m in names:
            if isinstance(m, torch.jit.ScriptModule) or (method is not None and m is target):
                continue  # compiled: no hooks; its ops are charged to its caller
            handles.append(m.register_forward_pre_hook(tracer.pre_hook, with_kwargs=True))
            handles.append(m.register_forward_hook(tracer.post_hook, with_kwargs=True))
        target.eval()
        try:
            with torch.no_grad(), _FunctionMode(tracer), _DispatchMode(tracer):
                if method is None:
                    output = _call(target, inputs)
                else:
                    tracer.open_root(target, method)
                    output = _call(getattr(target, method), inputs)
                    tracer.close_root()
        except TraceError:
            raise
        except Exception as exc:
            failing = next((f for f in reversed(tracer.stack) if f.node is not None), None)
            where = (
                f"module '{scope_label(failing.node.scope)}' ({failing.node.type})" if failing else f"{type(target).__name__}"
            )
            hint = datadep.meta_failure_hint(exc) if dev.type == "meta" else ""
            raise TraceError(f"cannot trace {name}: {where} failed: {type(exc).__name__}: {exc}{hint}") from exc
        if on_output is not None:
            on_output(output)
        del output
    finally:
        for h in handles:
            h.remove()
        for m, flag in training.items():
            m.training = flag
        if collecting:
            gc.enable()

    root_node = _root(tracer, target)
    dtype = _model_dtype(target)
    _totals(root_node, tracer, torch.empty((), dtype=dtype).element_size())
    seq = int(seq_len) if seq_len is not None else _tokens_per_sample(inputs, tracer.token_len, inferred[1])
    tree = EnergyTree(root=root_node, model_name=name, batch_size=batch, seq_len=seq, profile="", calls=tracer.calls)
    tree.meta["traced_on"] = str(dev)
    tree.meta["dtype"] = str(dtype).removeprefix("torch.")
    tree.set_tree_features()
    return tree


def _tokens_per_sample(inputs: Any, token_len: int | None, inferred: int) -> int:
    """Tokens per sample: the ids' length; for pixels or spectrograms what the model processes, never a channel dim."""
    tensors = _flat_tensors(inputs)
    first = tensors[0] if tensors else None  # the model's main input: ids, pixels or a spectrogram
    if first is None or first.dim() < 3 or not first.is_floating_point():
        return inferred
    if token_len is not None:
        return token_len  # ViT patches + class token, Whisper frames
    return int(math.prod(first.shape[2:]))  # a CNN: every spatial position


def _root(tracer: _Tracer, model: nn.Module) -> EnergyNode:
    node = getattr(tracer, "root_node", None)
    if node is not None:
        return node
    raise TraceError(f"cannot trace {type(model).__name__}: its forward was never called")


def _element_bytes(node: EnergyNode, tracer: _Tracer, default: int) -> float:
    """A node's ``bytes_per_element``: its result's dtype, else its children's (largest), else
    the model's (a node returning no floating-point tensor, e.g. one that only builds masks)."""
    own = tracer.element_bytes.get(id(node))
    if own is not None:
        return own
    kids = [c.features["bytes_per_element"] for c in node.children if "bytes_per_element" in c.features]
    return max(kids) if kids else default


def _model_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of the model's floating-point parameters (the first one), else torch's default."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.get_default_dtype()


def _totals(root: EnergyNode, tracer: _Tracer, default_bytes: int) -> None:
    """Features bottom-up: a leaf has its formula's numbers, a module its glue plus its children."""
    order = list(root.walk())
    for node in reversed(order):
        leaf = tracer.leaf_values.get(id(node))
        if leaf is not None:
            flops, mem = leaf["flops"], leaf["mem_bytes"]
        else:
            flops, mem = tracer.own.get(id(node), (0.0, 0.0))
            for child in node.children:
                flops += child.features["flops"]
                mem += child.features["mem_bytes"]
            if not node.children and node.level == "module":
                node.level = "ml"  # a module with no primitive inside is itself a primitive
        node.features["flops"] = float(flops)
        node.features["mem_bytes"] = float(mem)
        node.features["params"] = tracer.params.get(id(node), 0.0)
        node.features["bytes_per_element"] = float(_element_bytes(node, tracer, default_bytes))
    if not math.isfinite(root.features["flops"]):
        raise TraceError("flops overflowed")
