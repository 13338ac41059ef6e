"""Model features: flops and bytes moved, following the IrEne reference dataset.

A regressor trained on ``irene-pc1`` only predicts well for a live model if the
live model's features are counted *the same way* the dataset counted them
(PyTorch 1.7 / transformers 4.2.2, a per-aten-op counter). The conventions
below were reverse-engineered from the dataset numbers (see
``calibration/datasets/FORMAT.md``); ``E`` is the number of elements of the
result, ``u`` = ``E`` × element size (one result-sized transfer):

========================  ===============================  ==========================================
primitive                 flops                            mem_bytes
========================  ===============================  ==========================================
Linear, 2-D input         2·M·K·N (addmm: bias is free)    x + W + out
Linear, 3-D+ input        2·M·K·N + M·N (bias add)         x + W·(batch items) + out + 2·out (add)
Conv1D (transformers)     2·M·K·N (addmm)                  x + W + out
quantized Linear (torch   2·M·K·N (one fused GEMM over     x + W (int8: 1 byte, fp16: 2) + 8 bytes
ao: quantize_dynamic)     x's rows, bias fused)            per scale and zero point + out
MatMul / bmm / einsum     2·M·K·N per batch item           both operands at the broadcast batch + out
Embedding                 0                                indices + out (the table is not read whole)
LayerNorm                 8·E                              4·u
RMSNorm-like              6·E                              4·u       (same spirit as LayerNorm)
Softmax                   5·E                              3·u
Tanh                      4·E                              1·u
GELU (erf: nn.GELU,       6·E                              2·u
GELUActivation)
NewGELU (tanh approx.)    11·E                             19·u      (the 8 aten ops 4.2.2's gelu_new
                                                                      decomposed into, as counted there)
ReLU                      1·E                              2·u
Sigmoid / SiLU            4·E / 5·E                        2·u
other fused activations   1·E (clamp-like: Hardtanh,       2·u (log-softmax: 3·u, as Softmax)
(aten glue)               PReLU), 4·E (Softplus, Hard-
                          swish), 5·E (ELU, SELU, GLU,
                          log-softmax), 9·E (mish)
Conv1d/2d/3d              2·out·(C_in/groups·kernel)+bias  x + W + out
F.conv*d, F.layer_norm,   as their modules (a module's own weights used functionally are the
F.rms_norm, F.gelu        leaf the module form would be; inside such a module, no node)
ScaledDotProductAttention the decomposition: two MatMuls, scale (1·E, 2·u), mask add when given
                          (1·E, 2·u), Softmax (5·E, 3·u), with E the attention-score elements
========================  ===============================  ==========================================

Glue (aten ops a module runs itself, outside its children), as the dataset
counted it: elementwise arithmetic (add, sub, mul, div, pow, ...) costs 1 flop
per result element and ``2·u`` bytes, whatever the shapes of the operands
(BERT's ``scores + mask`` with a ``(b, 1, 1, s)`` mask counts 2·u); activation
ops cost what their primitive costs; matrix products and normalisations cost
what their primitive costs; everything else (views, copies, ``contiguous``,
``where``, ``masked_fill``, comparisons, casts, factories, indexing) is free.
Examples: BERT query Linear at batch 8, seq 32 = 302,186,496 flops and
22,020,096 bytes; its ``BertSelfAttention`` = 932,413,440 flops and 72,744,960
bytes (3 Linear + 2 MatMul + Softmax + scale and mask add).

Users add formulas for their own primitive module types with
:func:`register_formula`; a module whose type has a formula becomes a leaf
(level ``ml``) of the tree and its inner operations are not counted again.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import torch

from pytest_irene.engine.formulas_nn import NN_FORMULAS, nn_heuristic
from pytest_irene.engine.quantized import quantize_cast, quantized_linear, torch_quantized_name
from pytest_irene.engine.tensor_sizes import first_tensor, nbytes, output_tensor, tensors

Formula = Callable[[Any, Sequence[Any], Any], dict[str, float]]
"""``fn(module, inputs, output) -> {"flops": float, "mem_bytes": float}``.

``module`` is the module instance (for a functional primitive, the torch
function), ``inputs`` the positional arguments it was called with followed by
the values of its keyword arguments, ``output`` what it returned. Tensors may
live on the meta device: use shapes, dtypes and ``element_size()``, never values.
Both numbers describe ONE execution of the module."""

# -- helpers ---------------------------------------------------------------------------


def _elementwise(flops_per_el: float, units: float) -> Formula:
    """Formula for an elementwise primitive: ``flops_per_el·E`` flops and ``units·u`` bytes."""

    def formula(module: Any, inputs: Sequence[Any], output: Any) -> dict[str, float]:
        out = output_tensor(output)
        if out is None:
            out = first_tensor(inputs)
        if out is None:
            return {"flops": 0.0, "mem_bytes": 0.0}
        return {"flops": flops_per_el * out.numel(), "mem_bytes": units * nbytes(out)}

    formula.__doc__ = f"Elementwise: {flops_per_el:g} flops per element, {units:g} result-sized transfers."
    return formula


# -- matrix products -------------------------------------------------------------------


def matmul_features(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> dict[str, float]:
    """``a @ b`` as the dataset counts it: 2·M·K·N per batch item; operands at the broadcast batch.

    An operand with fewer batch items than the result (a weight in ``x @ W``)
    is read once per batch item, as PyTorch 1.7's broadcasting matmul did.
    """
    k = a.shape[-1] if a.dim() >= 1 else 1
    flops = 2.0 * out.numel() * k
    out_batch = math.prod(out.shape[:-2]) if out.dim() > 2 else 1

    def read(t: torch.Tensor) -> float:
        batch = math.prod(t.shape[:-2]) if t.dim() > 2 else 1
        return nbytes(t) * max(out_batch // max(batch, 1), 1)

    return {"flops": flops, "mem_bytes": read(a) + read(b) + nbytes(out)}


def _weighted_io(module: Any, inputs: Sequence[Any], output: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """(input, weight, output) of a module that multiplies by its ``weight``; ``None`` when one is missing."""
    x = first_tensor(inputs)
    out = output_tensor(output)
    weight = getattr(module, "weight", None)
    if x is None or out is None or not isinstance(weight, torch.Tensor):
        return None
    return x, weight, out


def _linear(module: Any, inputs: Sequence[Any], output: Any) -> dict[str, float]:
    io = _weighted_io(module, inputs, output)
    if io is None:
        return {"flops": 0.0, "mem_bytes": 0.0}
    return _linear_counts(*io, bias=getattr(module, "bias", None) is not None)


def _linear_fn(fn: Any, inputs: Sequence[Any], output: Any) -> dict[str, float]:
    """``F.linear(x, W, b)`` outside a ``Linear`` module (routers, hand-written layers): the module's counts."""
    ts = tensors(list(inputs))
    out = output_tensor(output)
    if len(ts) < 2 or out is None:
        return {"flops": 0.0, "mem_bytes": 0.0}
    return _linear_counts(ts[0], ts[1], out, bias=len(ts) >= 3)


def _linear_counts(x: torch.Tensor, weight: torch.Tensor, out: torch.Tensor, *, bias: bool) -> dict[str, float]:
    k = x.shape[-1]
    n = out.shape[-1] if out.dim() else 1
    m = out.numel() // max(n, 1)
    flops = 2.0 * m * k * n
    if x.dim() <= 2:  # addmm: the bias rides along for free
        return {"flops": flops, "mem_bytes": nbytes(x) + nbytes(weight) + nbytes(out)}
    batch_items = math.prod(x.shape[:-2])
    mem = nbytes(x) + nbytes(weight) * batch_items + nbytes(out)
    if bias:  # matmul + add: the bias add is a glue op
        flops += out.numel()
        mem += 2.0 * nbytes(out)
    return {"flops": flops, "mem_bytes": mem}


def _conv1d_transformers(module: Any, inputs: Sequence[Any], output: Any) -> dict[str, float]:
    """transformers' ``Conv1D``: ``addmm(bias, x.view(-1, nx), W)``, a 2-D product whatever x's rank."""
    io = _weighted_io(module, inputs, output)
    if io is None:
        return {"flops": 0.0, "mem_bytes": 0.0}
    x, weight, out = io
    k = x.shape[-1]
    n = out.shape[-1]
    m = out.numel() // max(n, 1)
    return {"flops": 2.0 * m * k * n, "mem_bytes": nbytes(x) + nbytes(weight) + nbytes(out)}


def _conv(module: Any, inputs: Sequence[Any], output: Any) -> dict[str, float]:
    io = _weighted_io(module, inputs, output)
    if io is None:
        return {"flops": 0.0, "mem_bytes": 0.0}
    x, weight, out = io
    per_out = math.prod(weight.shape[1:])  # C_in/groups · kernel
    flops = 2.0 * out.numel() * per_out
    if getattr(module, "bias", None) is not None:
        flops += out.numel()
    return {"flops": flops, "mem_bytes": nbytes(x) + nbytes(weight) + nbytes(out)}


def _embedding(module: Any, inputs: Sequence[Any], output: Any) -> dict[str, float]:
    idx = first_tensor(inputs)
    out = output_tensor(output)
    mem = (nbytes(idx) if idx is not None else 0.0) + (nbytes(out) if out is not None else 0.0)
    return {"flops": 0.0, "mem_bytes": mem}


def _matmul_fn(fn: Any, inputs: Sequence[Any], output: Any) -> dict[str, float]:
    ts = tensors(inputs)
    out = output_tensor(output)
    if out is None or len(ts) < 2:
        return {"flops": 0.0, "mem_bytes": 0.0}
    if len(ts) >= 3 and getattr(fn, "__name__", "") in ("baddbmm", "addbmm", "addmm", "addmv"):
        ts = ts[1:]  # baddbmm(input, b1, b2): the product is b1 @ b2
    return matmul_features(ts[0], ts[1], out)


_EINSUM_LABELS = re.compile(r"[A-Za-z]")


def _einsum_fn(fn: Any, inputs: Sequence[Any], output: Any) -> dict[str, float]:
    """einsum: 2 flops per (result element × contracted index combination); operands + result bytes.
    Three operands or more are contracted two at a time, left to right, as torch runs them (without
    opt_einsum): each step 2 flops per combination of its two operands' indices, its intermediate
    written and read (counted as one einsum over all indices it was 16x what torch runs)."""
    eq = next((v for v in inputs if isinstance(v, str)), None)
    ts = tensors(inputs)
    out = output_tensor(output)
    if eq is None or out is None or not ts:
        return {"flops": 0.0, "mem_bytes": 0.0}
    lhs, _, rhs = eq.replace(" ", "").partition("->")
    terms = lhs.split(",")
    sizes: dict[str, int] = {}
    for term, t in zip(terms, ts):
        labels = term.replace("...", "")
        # labels after an ellipsis align with the trailing dims
        if "..." in term:
            before, after = term.split("...")
            dims = list(t.shape[: len(before)]) + list(t.shape[t.dim() - len(after) :])
            labels = before + after
        else:
            dims = list(t.shape)
        for label, d in zip(labels, dims):
            sizes[label] = int(d)
    if not _:
        rhs = "".join(sorted(label for label in sizes if sum(term.count(label) for term in terms) == 1))
    operands = sum(nbytes(t) for t in ts) + nbytes(out)
    if len(terms) > 2:
        return _einsum_chain([set(_EINSUM_LABELS.findall(t)) for t in terms], rhs, sizes, out, operands)
    contracted = [label for label in sizes if label not in rhs]
    k = math.prod(sizes[label] for label in contracted) if contracted else 1
    return {"flops": 2.0 * out.numel() * k, "mem_bytes": operands}


def _einsum_chain(terms: list[set[str]], rhs: str, sizes: dict[str, int], out: torch.Tensor,
                  operands: float) -> dict[str, float]:
    """A many-operand einsum as its pairwise contractions, left to right; ellipsis dims (unnamed) scale
    every step as they scale the result. A step that contracts no index is an elementwise product
    (torch broadcasts a multiply), one flop per element."""
    named_out = math.prod(sizes[label] for label in rhs if label in sizes)
    ellipsis = out.numel() // max(named_out, 1)
    flops, intermediates = 0.0, 0.0
    current = terms[0]
    for i, term in enumerate(terms[1:], start=1):
        union = current | term
        kept = union & (set(rhs) | set().union(*terms[i + 1:]))
        per = 2.0 if union - kept else 1.0  # a multiply-add per combination; an outer product multiplies only
        flops += per * ellipsis * math.prod(sizes[label] for label in union)
        current = kept
        if i < len(terms) - 1:  # written by this step, read by the next
            intermediates += 2.0 * ellipsis * math.prod(sizes[label] for label in current) * out.element_size()
    return {"flops": flops, "mem_bytes": operands + intermediates}


def _sdpa_fn(fn: Any, inputs: Sequence[Any], output: Any) -> dict[str, float]:
    """F.scaled_dot_product_attention counted as its eager decomposition (see the module docstring)."""
    ts = tensors(inputs)
    out = output_tensor(output)
    if len(ts) < 3 or out is None:
        return {"flops": 0.0, "mem_bytes": 0.0}
    q, k, v = ts[0], ts[1], ts[2]
    has_mask = len(ts) >= 4
    batch = math.prod(q.shape[:-2]) if q.dim() > 2 else 1
    n_q, e = q.shape[-2], q.shape[-1]
    n_k, ev = k.shape[-2], v.shape[-1]
    scores = batch * n_q * n_k
    es = q.element_size()
    flops = 2.0 * scores * e + 2.0 * scores * ev + (1 + 5 + (1 if has_mask else 0)) * scores
    mem = nbytes(q) + nbytes(k) + scores * es  # matmul#0
    mem += 2.0 * scores * es  # scale
    if has_mask:
        mem += 2.0 * scores * es
    mem += 3.0 * scores * es  # softmax
    mem += scores * es + nbytes(v) + nbytes(out)  # matmul#1
    return {"flops": flops, "mem_bytes": mem}


# -- the registry ------------------------------------------------------------------------

_BUILTIN: dict[str, Formula] = {
    "Linear": _linear,
    "LazyLinear": _linear,
    "NonDynamicallyQuantizableLinear": _linear,
    "torch.ao.Linear": quantized_linear,  # torch's quantized Linear (by its package: see _match)
    "torch.ao.QuantizeCast": quantize_cast,  # torch's Quantize/DeQuantize (by their package)
    "Conv1D": _conv1d_transformers,
    "Conv1d": _conv,
    "Conv2d": _conv,
    "Conv3d": _conv,
    "Embedding": _embedding,
    "LayerNorm": _elementwise(8, 4),
    "RMSNorm": _elementwise(6, 4),
    "Softmax": _elementwise(5, 3),
    "Tanh": _elementwise(4, 1),
    "GELU": _elementwise(6, 2),
    "GELUActivation": _elementwise(6, 2),
    "NewGELUActivation": _elementwise(11, 19),
    "GELUTanh": _elementwise(11, 19),
    "FastGELUActivation": _elementwise(11, 19),
    "QuickGELUActivation": _elementwise(6, 2),
    "AccurateGELUActivation": _elementwise(11, 19),
    "ReLU": _elementwise(1, 2),
    "LeakyReLU": _elementwise(1, 2),
    "ReLU6": _elementwise(1, 2),
    "Sigmoid": _elementwise(4, 2),
    "SiLU": _elementwise(5, 2),
    "SiLUActivation": _elementwise(5, 2),
    "Mish": _elementwise(9, 2),
    "MishActivation": _elementwise(9, 2),
    # functional primitives (the tracer names them; ``module`` is the torch function)
    "MatMul": _matmul_fn,
    "Einsum": _einsum_fn,
    "ScaledDotProductAttention": _sdpa_fn,
    "LinearFn": _linear_fn,  # F.linear (node type Linear)
    "LayerNormFn": _elementwise(8, 4),  # F.layer_norm, F.rms_norm, F.gelu: counted as their modules
    "RMSNormFn": _elementwise(6, 4),
    "GELUFn": _elementwise(6, 2),  # one fused op, as nn.GELU, for either approximation
    **NN_FORMULAS,
}

_USER: dict[str, Formula] = {}


def register_formula(type_name: str, fn: Formula) -> None:
    """Register ``fn`` as the flops/bytes formula of module type ``type_name`` (its class name).

    A module whose class name has a formula becomes a leaf (level ``ml``) of the
    traced tree. ``fn(module, inputs, output)`` returns ``{"flops": ..., "mem_bytes": ...}``
    for ONE execution (see :data:`Formula`). Registering a name again replaces the
    earlier formula; user formulas take precedence over the built-in ones.
    """
    if not isinstance(type_name, str) or not type_name:
        raise TypeError(f"register_formula: type_name must be a non-empty class name, got {type_name!r}")
    if not callable(fn):
        raise TypeError(f"register_formula: fn for {type_name!r} must be callable, got {fn!r}")
    _USER[type_name] = fn


def unregister_formula(type_name: str) -> None:
    """Remove a user formula (tests, plugins that clean up); unknown names are ignored."""
    _USER.pop(type_name, None)


def user_formulas() -> dict[str, Formula]:
    """A copy of the user formulas registered so far (what :func:`restore_user_formulas` takes back)."""
    return dict(_USER)


def restore_user_formulas(formulas: dict[str, Formula]) -> None:
    """Make ``formulas`` the user formulas again, dropping any registered since the copy was taken.

    Formulas are process-wide; the pytest plugin calls this at the end of a session
    so that the formulas of one (in-process, e.g. pytester) session do not leak into
    the next.
    """
    _USER.clear()
    _USER.update(formulas)


def registered_types() -> tuple[str, ...]:
    """Every type name with a formula (built-in and user-registered)."""
    return tuple(sorted(set(_BUILTIN) | set(_USER)))


def _heuristic(name: str) -> tuple[str, Formula] | None:
    """Families recognised by name, so third-party norms, activations and rotary tables are leaves too."""
    low = name.lower()
    if low.endswith("rmsnorm") or low in ("t5layernorm",):
        return "RMSNorm", _BUILTIN["RMSNorm"]
    if low.endswith("layernorm"):
        return "LayerNorm", _BUILTIN["LayerNorm"]
    guess = nn_heuristic(name)
    return (name, guess) if guess is not None else None


def _holds_no_layers(module: Any) -> bool:
    """Whether no submodule of ``module`` holds parameters: only then is a name family a primitive.

    A norm, an activation or a rotary table computes with its own tensors; a class named after
    its norm that holds layers is a block (wav2vec2-large's ``Wav2Vec2EncoderStableLayerNorm``
    and its ``...EncoderLayerStableLayerNorm`` layers, the same in HuBERT, WavLM, UniSpeech):
    taken for a LayerNorm leaf, its whole encoder was 8 flops per element of its output."""
    if not isinstance(module, torch.nn.Module):
        return True
    return next((p for child in module.children() for p in child.parameters()), None) is None


#: Formulas of torch functions only, read from the call's arguments (an einsum's equation): a user's
#: module class of that name (``class Einsum(nn.Module)``) is no such leaf, its einsum inside is.
FUNCTION_ONLY = frozenset({"Einsum", "LinearFn", "ConvFn", "LayerNormFn", "RMSNormFn", "GELUFn", "ScaledMM"})


def _match(module: Any) -> tuple[str, Formula] | None:
    """(registry name, formula) of a module instance: its class name, a name family, then its base classes.

    A class outside torch named like a primitive but holding layers is a block around one: peft's
    LoRA ``Linear`` holds ``base_layer``, ``lora_A`` and ``lora_B``; taken for a ``Linear`` leaf (its
    ``weight`` property is the base layer's), its adapter's products were not counted."""
    cls = type(module)
    name = cls.__name__
    if name in _USER:
        return name, _USER[name]
    quantized = torch_quantized_name(module)
    if quantized is not None:
        return quantized, _BUILTIN[quantized]
    if name in _BUILTIN and name not in FUNCTION_ONLY and (cls.__module__.startswith("torch.") or _holds_no_layers(module)):
        return name, _BUILTIN[name]
    guess = _heuristic(name)
    if guess is not None and _holds_no_layers(module):
        return guess
    for base in cls.__mro__[1:]:
        if base.__module__.startswith("torch.nn") and base.__name__ in ("Module",):
            break
        if base.__name__ in _USER:
            return base.__name__, _USER[base.__name__]
        if base.__name__ in _BUILTIN:
            return base.__name__, _BUILTIN[base.__name__]
    return None


def formula_for(module: Any) -> Formula | None:
    """The formula of a module instance (its class name, then its base classes), or ``None``."""
    found = _match(module)
    return found[1] if found is not None else None


#: Built-in formula names -> the primitive type of the reference dataset whose regressor
#: predicts them. A scaled embedding IS an embedding lookup and an RMSNorm a LayerNorm
#: without the mean. The node keeps its own type; ``notes["regressor_type"]`` tells the
#: predictor which regressor to use. Activations (GELU, SiLU...) are NOT mapped: the
#: dataset has no activation leaf of their size (ReLU and Tanh were measured elsewhere), and
#: on bert-base (b8, s128) the ReLU regressor gives 0.26 J for the GELU where the measured
#: intermediate leaves 0.032 J beyond its Linear; the generic regressor gives 0.024 J.
TRAINED_AS: dict[str, str] = {
    "LazyLinear": "Linear",
    "NonDynamicallyQuantizableLinear": "Linear",
    "torch.ao.Linear": "Linear",
    "RMSNorm": "LayerNorm",
    "GroupNorm": "LayerNorm",
}
_TRAINED = ("Conv1D", "Embedding", "LayerNorm", "Linear", "MatMul", "ReLU", "Softmax", "Tanh")


def regressor_type(module: Any) -> str | None:
    """The dataset primitive whose regressor predicts this module, when it differs from its class name.

    ``None`` for a type predicted under its own name (``Linear``) or one with no
    built-in counterpart (left to the generic regressor, and flagged as such).
    """
    found = _match(module)
    if found is None or found[0] in _USER:
        return None
    name = found[0]
    trained = name if name in _TRAINED else TRAINED_AS.get(name)
    if trained is None or trained == type(module).__name__:
        return None
    return trained


def formula_by_name(type_name: str) -> Formula | None:
    """The formula registered for a type name (user first), or ``None``."""
    return _USER.get(type_name) or _BUILTIN.get(type_name)


def leaf_features(module: Any, inputs: Sequence[Any], output: Any, formula: Formula, type_name: str) -> dict[str, float]:
    """Call a formula and validate what it returns (a user formula's mistake is named)."""
    result = formula(module, inputs, output)
    try:
        flops = float(result["flops"])
        mem = float(result["mem_bytes"])
    except (TypeError, KeyError, ValueError) as exc:
        raise ValueError(
            f"the formula for {type_name!r} must return {{'flops': number, 'mem_bytes': number}}, got {result!r}"
        ) from exc
    if not (math.isfinite(flops) and math.isfinite(mem)) or flops < 0 or mem < 0:
        raise ValueError(f"the formula for {type_name!r} returned negative or non-finite values: {result!r}")
    return {"flops": flops, "mem_bytes": mem}

