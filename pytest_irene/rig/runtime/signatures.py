"""Node signatures: two captured calls that do the same work share one measurement.

A 12-layer BERT has ~25 distinct signatures among ~250 nodes; the node runner
and calibration run each distinct signature once and give its result to every
node sharing it.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from pytest_irene.engine.tree import EnergyTree
from pytest_irene.rig.runtime.capture import unpack_call


def _value_sig(value: Any) -> Hashable:
    import torch

    if isinstance(value, torch.Tensor):
        return ("tensor", tuple(value.shape), str(value.dtype), str(value.device), value.is_contiguous())
    if value is None or isinstance(value, (bool, int, float, str)):
        return (type(value).__name__, value)
    if isinstance(value, (torch.dtype, torch.device, torch.Size, slice)):
        return (type(value).__name__, str(value))
    if isinstance(value, (tuple, list)):
        return (type(value).__name__, tuple(_value_sig(v) for v in value))
    if isinstance(value, dict):
        return ("dict", tuple(sorted((str(k), _value_sig(v)) for k, v in value.items())))
    if isinstance(value, torch.nn.Module):
        return _module_sig(value)
    return ("object", type(value).__module__, type(value).__qualname__)


def _is_identity_attr(name: str) -> bool:
    # Position in the model (layer_idx) must not split otherwise identical layers.
    lowered = name.lower()
    return name.startswith("_") or "idx" in lowered or "index" in lowered


def _module_sig(module: Any) -> Hashable:
    own = tuple(
        sorted(
            (k, v)
            for k, v in vars(module).items()
            if isinstance(v, (bool, int, float, str)) and not _is_identity_attr(k)
        )
    )
    tensors = tuple(
        (name, tuple(t.shape), str(t.dtype), str(t.device))
        for name, t in list(module.named_parameters()) + list(module.named_buffers())
    )
    return ("module", type(module).__module__, type(module).__qualname__, repr(module), own, tensors)


def _fn_sig(fn: Any) -> Hashable:
    import torch

    if isinstance(fn, torch.nn.Module):
        return _module_sig(fn)
    owner = getattr(fn, "__self__", None)
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or type(fn).__qualname__
    if isinstance(owner, torch.nn.Module):
        return ("method", name, _module_sig(owner))
    if isinstance(owner, torch.Tensor):
        return ("method", name, _value_sig(owner))
    return ("function", getattr(fn, "__module__", None) or "", str(name))


def signature(node_type: str, call: Any) -> Hashable:
    """A hashable key equal for two calls that do the same work on the same hardware.

    Made of the node type, the callable (for modules: class, structure with
    hyper-parameters, parameter shapes/dtypes/devices, scalar attributes except
    positional ones like ``layer_idx``) and every argument (tensors by shape,
    dtype, device and contiguity; scalars by value).
    """
    fn, args, kwargs = unpack_call(call)
    return (node_type, _fn_sig(fn), _value_sig(args), _value_sig(kwargs))


def distinct_signatures(tree: EnergyTree) -> dict[Hashable, list[str]]:
    """Scopes of the tree's captured calls grouped by :func:`signature`, in execution order.

    Nodes without a captured call are left out.
    """
    groups: dict[Hashable, list[str]] = {}
    for node in tree.walk():
        call = tree.calls.get(node.scope)
        if call is None:
            continue
        groups.setdefault(signature(node.type, call), []).append(node.scope)
    return groups


