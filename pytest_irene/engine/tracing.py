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
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from pytest_irene.engine import features as F_
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
    sdpa = "ScaledDotProductAttention"
    table[torch.nn.functional.scaled_dot_product_attention] = (sdpa, "scaled_dot_product_attention", sdpa)
    return table


_FUNCTIONAL = _functional_table()


class _Frame:
    """One active node during the forward call."""

    __slots__ = ("node", "formula", "flops", "mem", "skip", "suffixes")

    def __init__(self, node: EnergyNode | None, formula: Any = None, skip: bool = False):
        self.node = node
        self.formula = formula  # set for formula leaves: their inner ops are not counted
        self.skip = skip  # a module called inside a leaf, or a Dropout: no node
        self.flops = 0.0  # glue charged to this node itself
        self.mem = 0.0
        self.suffixes: dict[str, int] = {}


class _Tracer:
    def __init__(self, scopes: dict[nn.Module, list[str]], capture: bool):
        self.scopes = scopes
        self.capture = capture
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
        level = "model" if top is None else ("ml" if formula is not None else "module")
        node = EnergyNode(scope=scope, type=type(module).__name__, level=level)
        if top is None:
            self.root_node = node
        self.params[id(node)] = float(sum(p.numel() for p in module.parameters()))
        if top is not None and top.node is not None:
            top.node.add_child(node)
        self.stack.append(_Frame(node, formula))
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
        else:
            self.own[id(node)] = (frame.flops, frame.mem)

    # -- functional primitives ----------------------------------------------------------
    def functional(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        kind = _FUNCTIONAL.get(func)
        top = self.stack[-1] if self.stack else None
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
        output = func(*args, **kwargs)
        self.stack.pop()
        self._close(frame, func, tuple(args) + tuple(kwargs.values()), output)
        return output

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
        if func in _FUNCTIONAL:
            return self.tracer.functional(func, args, kwargs)
        return func(*args, **kwargs)


class _DispatchMode(TorchDispatchMode):
    def __init__(self, tracer: _Tracer):
        super().__init__()
        self.tracer = tracer

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        if func is _LOCAL_SCALAR and args and isinstance(args[0], torch.Tensor) and args[0].is_meta:
            return _meta_scalar(args[0])
        out = func(*args, **kwargs)
        self.tracer.aten(func, args, kwargs, out)
        return out


_LOCAL_SCALAR = torch.ops.aten._local_scalar_dense.default


def _meta_scalar(t: torch.Tensor) -> Any:
    """The value a data-dependent check on a meta tensor sees (``mask.all()``, ``x.item()``).

    Meta tensors have no values; models mostly ask such questions of masks and
    ids. Booleans answer ``False``: "is every position unmasked?" -> no, so the
    model builds and applies its attention mask, as every model of the reference
    dataset did (transformers 4.2.2 always added the mask); "is anything NaN?"
    -> no. Numbers answer ``1``.
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
        return copy.deepcopy(model, memo)
    except Exception as exc:  # noqa: BLE001 - any attribute that refuses to copy
        raise TraceError(
            f"cannot trace {type(model).__name__} on the meta device: copying the model failed "
            f"({type(exc).__name__}: {exc}); pass device='cpu' to trace it for real"
        ) from exc


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
    device, else its first buffer's; ``None`` for a model without tensors."""
    for t in model.parameters():
        return str(t.device)
    for t in model.buffers():
        return str(t.device)
    return None


def trace(
    model: nn.Module,
    inputs: Any,
    *,
    batch_size: int | None = None,
    seq_len: int | None = None,
    device: str | torch.device = "meta",
    capture: bool = False,
    model_name: str | None = None,
) -> EnergyTree:
    """Build the energy tree of ``model`` called with ``inputs`` (one forward, no grad, eval mode).

    ``inputs`` is a tensor (``model(x)``), a tuple/list (``model(*inputs)``) or a dict
    (``model(**inputs)``). Every node gets the model features of ONE execution:
    ``batch_size, seq_len, batch_seq, params, flops, mem_bytes, bytes_per_element`` (the
    element size of the node's result: its dtype; ``tree.meta["dtype"]`` names the model's). On ``device="meta"``
    (default) no arithmetic runs and the user's model is left untouched; on a real
    device the model (which must already live there) runs for real and
    ``capture=True`` fills ``tree.calls[scope]`` with a :class:`NodeCall` per node.
    Raises :class:`TraceError` naming the module that failed.
    """
    if not isinstance(model, nn.Module):
        raise UsageError(f"trace: model must be a torch.nn.Module, got {type(model).__name__}")
    dev = torch.device(device)
    if capture and dev.type == "meta":
        raise UsageError("trace: capture=True records calls to replay for real; pass a real device ('cpu', 'cuda')")
    inferred = infer_batch_seq(inputs)
    batch = int(batch_size) if batch_size is not None else inferred[0]
    seq = int(seq_len) if seq_len is not None else inferred[1]
    name = model_name or _default_name(model)

    if dev.type == "meta":
        target = _meta_copy(model)
        inputs = _to_device(inputs, dev)
    else:
        here = model_device(model)
        if here is not None and torch.device(here).type != dev.type:
            raise UsageError(
                f"trace: the model lives on {here}, not on {dev}; move it there first (model.to({str(dev)!r})) "
                "or trace on the meta device"
            )
        target = model
        inputs = _to_device(inputs, dev)

    # named_modules(remove_duplicate=False) lists a shared module under each of its paths
    names: dict[nn.Module, list[str]] = {}
    for path, m in target.named_modules(remove_duplicate=False):
        names.setdefault(m, []).append(path)
    tracer = _Tracer(names, capture)
    handles = []
    training = {m: m.training for m in target.modules()}
    try:
        for m in names:
            if isinstance(m, torch.jit.ScriptModule):
                continue  # compiled: no hooks; its ops are charged to its caller
            handles.append(m.register_forward_pre_hook(tracer.pre_hook, with_kwargs=True))
            handles.append(m.register_forward_hook(tracer.post_hook, with_kwargs=True))
        target.eval()
        try:
            with torch.no_grad(), _FunctionMode(tracer), _DispatchMode(tracer):
                output = _call(target, inputs)
        except TraceError:
            raise
        except Exception as exc:
            failing = next((f for f in reversed(tracer.stack) if f.node is not None), None)
            where = (
                f"module '{scope_label(failing.node.scope)}' ({failing.node.type})" if failing else f"{type(model).__name__}"
            )
            raise TraceError(f"cannot trace {name}: {where} failed: {type(exc).__name__}: {exc}") from exc
        del output
    finally:
        for h in handles:
            h.remove()
        for m, flag in training.items():
            m.training = flag

    root_node = _root(tracer, target)
    dtype = _model_dtype(target)
    _totals(root_node, tracer, torch.empty((), dtype=dtype).element_size())
    tree = EnergyTree(root=root_node, model_name=name, batch_size=batch, seq_len=seq, profile="", calls=tracer.calls)
    tree.meta["traced_on"] = str(dev)
    tree.meta["dtype"] = str(dtype).removeprefix("torch.")
    tree.set_tree_features()
    return tree


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
