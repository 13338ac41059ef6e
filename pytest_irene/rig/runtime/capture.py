"""The capture step shared by the node runner and calibration: trace a model on its
real device with every node's call recorded, so each node can be replayed alone.

One place decides how a model is prepared for replay (moved to the device, eval
mode, no key/value cache), what the whole model's call is, and how a node
without a measurement is marked; :func:`~pytest_irene.rig.runtime.runner.measure_tree`
and :class:`~pytest_irene.rig.calibration.Calibrator` both use it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

from pytest_irene.engine.tree import EnergyNode, EnergyTree

#: ``node.notes`` key of a node that has no measurement, with the reason as its value.
UNMEASURED = "unmeasured"


def capture(
    model: Any,
    inputs: Any,
    device: Any,
    *,
    model_name: str | None = None,
    batch_size: int | None = None,
    seq_len: int | None = None,
) -> EnergyTree:
    """``model(inputs)`` traced on ``device`` with every node's call in ``tree.calls``.

    The model is moved to ``device`` and put in eval mode, the inputs are moved
    too and get ``use_cache=False`` when the model takes it (:func:`without_cache`),
    and the whole model's call is ``tree.calls[""]`` (:func:`root_call`).
    """
    import torch

    from pytest_irene.engine.inputs import to_device
    from pytest_irene.engine.tracing import NodeCall, trace

    dev = torch.device(device)
    model = model.to(dev).eval()
    inputs = without_cache(model, to_device(inputs, dev))
    kwargs: dict[str, Any] = {"device": str(dev), "capture": True, "model_name": model_name}
    if batch_size is not None:
        kwargs["batch_size"] = batch_size
    if seq_len is not None:
        kwargs["seq_len"] = seq_len
    tree = trace(model, inputs, **kwargs)
    if "" not in tree.calls:
        tree.calls[""] = root_call(model, inputs, NodeCall)
    return tree


def root_call(model: Any, inputs: Any, call_type: Callable[..., Any]) -> Any:
    """The whole model's call as ``call_type(fn, args, kwargs)``: dict inputs as keywords, a tuple as arguments."""
    if isinstance(inputs, dict):
        return call_type(model, (), dict(inputs))
    if isinstance(inputs, (tuple, list)):
        return call_type(model, tuple(inputs), {})
    return call_type(model, (inputs,), {})


def unpack_call(call: Any) -> tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]:
    """``(fn, args, kwargs)`` of a :class:`~pytest_irene.engine.tracing.NodeCall` or a 3-tuple."""
    if isinstance(call, tuple) and len(call) == 3:
        fn, args, kwargs = call
    else:
        fn, args, kwargs = call.fn, call.args, call.kwargs
    return fn, tuple(args or ()), dict(kwargs or {})


def without_cache(model: Any, inputs: Any) -> Any:
    """Inputs with ``use_cache=False`` when the model takes it.

    A key/value cache (transformers' ``DynamicCache``) is mutated by every
    call: replaying a captured attention call would append to it each time, so
    the sequence would grow with every repetition. The paper's measurements ran
    without a cache too.
    """
    if not isinstance(inputs, dict) or "use_cache" in inputs:
        return inputs
    try:
        accepts = "use_cache" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        accepts = False
    return {**inputs, "use_cache": False} if accepts else inputs


def mark_unmeasured(nodes: Iterable[EnergyNode], reason: str) -> None:
    """Note on each node why it has no measurement (its replay failed, nothing was captured)."""
    for node in nodes:
        node.notes[UNMEASURED] = reason


def mark_uncaptured(tree: EnergyTree) -> None:
    """Mark every node the tracer captured no call for (and that is not marked yet)."""
    mark_unmeasured(
        (n for n in tree.walk() if n.scope not in tree.calls and UNMEASURED not in n.notes),
        "no captured call for this node",
    )
