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
  buffer replaced by a meta tensor (no data copied; a 0-dim buffer, a constant,
  keeps its value), the inputs are converted to meta, and nothing of the user's
  model is touched (its forward hooks do not fire). Meta tensors have no values:
  code that reads them raises :class:`~pytest_irene.errors.TraceError` naming the
  line, except transformers' mask helpers ("is every position unmasked?" -> no: the model applies its
  attention mask, as every model of the reference dataset did; see
  :mod:`pytest_irene.engine.datadep`) and MoE routing (:mod:`pytest_irene.engine.moe`).
  :func:`~pytest_irene.engine.architectures.example_inputs` pads one position so a real
  device takes the same branch. On a real device the user's
  model runs for real, and ``capture=True`` records each node's call so the
  runtime can replay nodes one by one.
"""

from __future__ import annotations

import copy
import gc
import math
import sys
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from pytest_irene.engine import moe
from pytest_irene.engine.inputs import (
    batch_and_tokens, check_count, ids_length, infer_batch_seq, main_input_elements, other_input_elements, to_device,
)
from pytest_irene.engine.positions import check_positions
from pytest_irene.engine.trace_hints import failure_hint
from pytest_irene.engine.tracer import DispatchMode, FunctionMode, NodeCall, Tracer, skipped
from pytest_irene.errors import TraceError, UsageError
from pytest_irene.engine.tree import EnergyNode, EnergyTree, scope_label

__all__ = ["NodeCall", "trace", "trace_prepared", "prepare_target", "resolve_callable", "model_device",
           "model_label", "unwrap"]


def _meta_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose parameters and buffers are meta tensors (no data copied).

    A 0-dim buffer is a constant of the model, not a weight (as a 0-dim plain attribute, which the
    copy keeps too): it keeps its value, one number, on the CPU, where torch lets a 0-dim tensor
    join any device's ops as a Python number would; a real device reads the same value. Encodec
    keeps its convolutions' stride and kernel size as such buffers and pads by them, so as meta
    tensors its forward was refused as data-dependent code."""
    memo: dict[int, Any] = {}
    for p in model.parameters():
        memo[id(p)] = nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
    for b in model.buffers():
        constant = b.dim() == 0 and not b.is_meta  # a model built on meta has no value to keep
        memo[id(b)] = b.detach().to("cpu", copy=True) if constant else torch.empty_like(b, device="meta")
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


#: transformers' flag that its output-capturing hooks (hidden states, attentions) are installed.
_CAPTURE_HOOKS_FLAG = "_output_capturing_hooks_installed"


def _drop_user_hooks(module: nn.Module) -> None:
    """The user's forward hooks are for real runs: on the meta copy they would see meta tensors.

    transformers records hidden states with forward hooks it installs once per model, at its first
    call, and flags; a model run before it is traced keeps the flag on its copy, whose hooks are
    dropped here, so the flag goes too: the copy installs its own, else it would capture nothing
    (LLaVA then fails picking its vision tower's hidden states)."""
    for attr in ("_forward_hooks", "_forward_pre_hooks", "_forward_hooks_with_kwargs",
                 "_forward_pre_hooks_with_kwargs", "_forward_hooks_always_called"):
        table = getattr(module, attr, None)
        if table is not None:
            setattr(module, attr, type(table)())
    if vars(module).get(_CAPTURE_HOOKS_FLAG):
        setattr(module, _CAPTURE_HOOKS_FLAG, False)


def _call(model: nn.Module, inputs: Any) -> Any:
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def model_label(model: nn.Module) -> str:
    """The name a tree and a message give ``model``: its config's ``_name_or_path``, else its class."""
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
    ``torch.compile`` and data-parallel wrappers are traced as the model inside them (same
    scopes, same energy). Raises :class:`TraceError` naming the module that failed (an input
    of a dtype the model's kernels refuse fails on meta as on a real device), and
    :class:`UsageError` for a ``batch_size``/``seq_len`` that is not a positive integer or
    ids longer than the model's absolute position table (:mod:`pytest_irene.engine.positions`).
    """
    module, method = resolve_callable(model, "trace")
    batch_size = check_count("batch_size", batch_size) if batch_size is not None else None
    seq_len = check_count("seq_len", seq_len) if seq_len is not None else None
    dev = _device(device)
    if capture and dev.type == "meta":
        raise UsageError("trace: capture=True records calls to replay for real; pass a real device ('cpu', 'cuda')")
    check_positions(module, ids_length(inputs), model_name=model_name or model_label(module))
    target = prepare_target(module, dev)
    return trace_prepared(target, method, to_device(inputs, dev), dev, batch_size=batch_size, seq_len=seq_len,
                          capture=capture, model_name=model_name or model_label(module))


def _device(value: Any) -> torch.device:
    """``torch.device(value)``, or :class:`UsageError`: torch's own is a bare ``RuntimeError`` listing 20 backends."""
    try:
        return torch.device(value)
    except (RuntimeError, TypeError, ValueError):
        raise UsageError(f"trace: device: expected a torch device such as 'meta', 'cpu' or 'cuda:0', "
                         f"got {value!r}") from None


def resolve_callable(model: Any, who: str) -> tuple[nn.Module, str | None]:
    """``(module, method name or None)`` of what the user passed, the one entry of every trace.

    Wrappers are unwrapped (:func:`unwrap`); a plain function, a TorchScript module, a model
    lowered by torch.export and a module that does nothing at inference (``nn.Identity``,
    ``nn.Dropout``) are refused.
    """
    if isinstance(model, nn.Module):
        module = unwrap(model)
        _check_traceable(module, who)
        return module, None
    owner = getattr(model, "__self__", None)
    name = getattr(model, "__name__", None)
    if isinstance(owner, nn.Module) and isinstance(name, str) and callable(model):
        return unwrap(owner), name
    exported = getattr(sys.modules.get("torch.export"), "ExportedProgram", None)
    if isinstance(exported, type) and isinstance(model, exported):
        raise TraceError(_LOWERED.format(who=who, kind="an ExportedProgram"))
    what = "a plain function" if callable(model) else type(model).__name__
    raise UsageError(
        f"{who}: expected a torch.nn.Module or a bound method of one (model, model.encode), got {what}; "
        "a function has no parameters to trace: wrap it in an nn.Module whose forward calls it"
    )


def _wrapper_types() -> tuple[type, ...]:
    """torch.compile's ``OptimizedModule`` (only once torch._dynamo is loaded: a compiled model has
    loaded it, and importing it costs seconds), ``DataParallel`` and ``DistributedDataParallel``."""
    found: list[type] = [nn.DataParallel, nn.parallel.DistributedDataParallel]
    compiled = getattr(sys.modules.get("torch._dynamo.eval_frame"), "OptimizedModule", None)
    if isinstance(compiled, type):
        found.append(compiled)
    return tuple(found)


def unwrap(module: nn.Module) -> nn.Module:
    """The model inside ``torch.compile`` (``_orig_mod``) and data-parallel wrappers (``.module``).

    A wrapper computes nothing of its own at inference, but traced as the root it would add its
    glue to the energy and prefix every scope (``_orig_mod.``, ``module.``), so the same model
    would miss its baselines once wrapped. Nested wrappers are all taken off."""
    wrappers = _wrapper_types()
    while isinstance(module, wrappers):
        inner = getattr(module, "_orig_mod", None)  # not `or`: an empty Sequential is falsy
        module = inner if inner is not None else module.module
    return module


#: Why a model lowered to ATen operators (torch.export) is refused.
_LOWERED = (
    "{who}: cannot trace {kind}: torch.export lowers a model to a graph of ATen operators with no modules "
    "left in it, so there is no module or primitive to trace (a tree of one node no baseline could tell "
    "apart); trace the nn.Module you exported"
)


def _lowered(module: nn.Module) -> bool:
    """An ``fx.GraphModule`` calling ATen operators (``ExportedProgram.module()``, an AOT graph):
    its modules were inlined away, unlike a ``symbolic_trace`` graph, which still calls them."""
    graph = getattr(module, "graph", None)
    if not isinstance(module, torch.fx.GraphModule) or graph is None:
        return False
    return any(n.op == "call_function" and isinstance(n.target, torch._ops.OpOverload) for n in graph.nodes)


def _check_traceable(module: nn.Module, who: str) -> None:
    """Refuse, before any copy or run, a root module whose call no forward hook can see."""
    kind = type(module).__name__
    if isinstance(module, torch.jit.ScriptModule):
        raise TraceError(
            f"{who}: cannot trace {kind}: a TorchScript module runs compiled code that forward hooks do not see, "
            "so it has no module or primitive to trace; trace the nn.Module before torch.jit.script/trace"
        )
    if _lowered(module):
        raise TraceError(_LOWERED.format(who=who, kind="an exported graph module (ExportedProgram.module())"))
    if skipped(module):
        raise TraceError(
            f"{who}: cannot trace {kind}: it does nothing at inference (Identity, Dropout and DropPath are not "
            "nodes: they cost no energy), so the model has no module or primitive to trace"
        )


#: Device types whose ``torch.autocast`` a meta trace would not follow.
_AUTOCAST_DEVICES = ("cpu", "cuda", "xpu", "mps", "hpu")


def _active_autocast() -> tuple[str, torch.dtype] | None:
    """``(device type, dtype)`` of an active ``torch.autocast``, else ``None``."""
    for device_type in _AUTOCAST_DEVICES:
        try:
            enabled = torch.is_autocast_enabled(device_type)
        except TypeError:  # torch 2.3: no device argument; CPU autocast has its own (later deprecated) call
            return ("cpu", torch.get_autocast_cpu_dtype()) if torch.is_autocast_cpu_enabled() else None
        except RuntimeError:  # a device type this build does not know
            continue
        if enabled:
            return device_type, torch.get_autocast_dtype(device_type)
    return None


def _check_no_autocast() -> None:
    """Refuse a meta trace under ``torch.autocast``: autocast casts the tensors of its own device type,
    and meta tensors are none, so the trace counted the model's float32 where the run computes in
    16 bits, silently (a real device follows it: trace there)."""
    active = _active_autocast()
    if active is not None:
        device_type, dtype = active
        raise UsageError(
            f"trace: torch.autocast({device_type!r}, dtype={dtype}) is active, but the meta device does not follow "
            f"autocast: the trace would count the model's own dtype; trace on {device_type!r} "
            f"(device={device_type!r}, --irene-device={device_type}) where autocast applies, or cast the model "
            f"itself (model.to({dtype}))")


def prepare_target(module: nn.Module, dev: torch.device) -> nn.Module:
    """The module to run: a meta copy on ``meta``, else the user's own module (no copy), checked to live on ``dev``."""
    if dev.type == "meta":
        _check_no_autocast()
        return _meta_copy(module)
    here = model_device(module)
    if here == "meta":  # model.to('cpu') cannot copy weights it never had
        raise UsageError(f"trace: the model lives on meta (the meta device: no weights), so it cannot run on {dev}; "
                         "trace it on meta (the default), or build it on a real device (to_empty(), then load weights)")
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
    name = model_name or type(target).__name__
    # named_modules(remove_duplicate=False) lists a shared module under each of its paths
    names: dict[nn.Module, list[str]] = {}
    for path, m in target.named_modules(remove_duplicate=False):
        names.setdefault(m, []).append(path)
    tracer = Tracer(names, capture, on_meta=dev.type == "meta")
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
            with torch.no_grad(), FunctionMode(tracer), DispatchMode(tracer):
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
            hint = failure_hint(exc, target, inputs, failing.module if failing else None, on_meta=dev.type == "meta")
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
    found_batch, found_seq = batch_and_tokens(inputs, tracer.token_layout, inferred, tracer.row_layout)
    batch = int(batch_size) if batch_size is not None else found_batch
    seq = int(seq_len) if seq_len is not None else found_seq
    tree = EnergyTree(root=root_node, model_name=name, batch_size=batch, seq_len=seq, profile="", calls=tracer.calls)
    tree.meta["traced_on"] = str(dev)
    tree.meta["dtype"] = str(dtype).removeprefix("torch.")
    if (elements := main_input_elements(inputs)) is not None:  # same inputs, other tokens: the model changed
        tree.meta["input_elements"] = elements
        tree.meta["other_input_elements"] = other_input_elements(inputs)  # other inputs: the test changed
    tree.set_tree_features()
    return tree


def _root(tracer: Tracer, model: nn.Module) -> EnergyNode:
    node = getattr(tracer, "root_node", None)
    if node is not None:
        return node
    raise TraceError(
        f"cannot trace {type(model).__name__}: calling it never ran nn.Module's forward hooks (does it override "
        "__call__?), so it has no module or primitive to trace"
    )


def _element_bytes(node: EnergyNode, tracer: Tracer, default: int) -> float:
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


def _totals(root: EnergyNode, tracer: Tracer, default_bytes: int) -> None:
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
