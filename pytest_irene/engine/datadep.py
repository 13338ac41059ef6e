"""Data-dependent code on the meta device: answered where the answer is known, refused elsewhere.

Meta tensors have shapes but no values. Code that looks at values (``if
x.mean() > 0``, ``x.item()``, ``.tolist()``, ``nonzero``, boolean indexing)
cannot be traced there: any answer invented for it can send the model down the
wrong branch or loop the wrong number of times, and the tree is silently wrong.
So such a question raises :class:`DataDependentError`, naming the module and
the source line and telling the user to trace on a real device.

The exceptions, where the answer is known:

* transformers' attention-mask helpers ask "is every position unmasked?"
  (``padding_mask.all()``) to skip building the mask. The answer is *no*, so
  the model applies its mask, as every model of the reference dataset did
  (transformers 4.2.2 always added it); the example inputs pad one position so
  a real device takes the same branch.
* transformers' ``warn_if_padding_and_no_attention_mask`` asks "is a padding id at either
  end?" when no attention mask is given (DeBERTa, among others). It only decides whether to
  print a warning, never what runs, so the answer *no* changes nothing in the tree.
* inside a mixture-of-experts block, which tokens go to which expert is
  answered with the expected routing (:mod:`pytest_irene.engine.moe`): the rows of
  each expert (``nonzero``, ``torch.where(mask)``), which experts are hit (all of
  them, their indices read back as ``0, 1, 2...``: ``item()``, ``int()``,
  ``f"{idx}"``) and a router's rows per expert copied to a list (``.tolist()``).
  Any other value read there is refused as elsewhere.
* ``torch._check_tensor_all(cond)`` (transformers' ``torch_compilable_check``: LLaVA's "as many
  image tokens as image features?") is an assertion: it raises or does nothing, never changes
  what runs, so it is answered *it holds* (a real device still raises for invalid inputs).
"""

from __future__ import annotations

import os
import traceback
from typing import Any

from pytest_irene.errors import TraceError

__all__ = [
    "DataDependentError",
    "MASK_HELPERS",
    "WARNING_ONLY_CHECKS",
    "describe_value",
    "is_assertion",
    "known_answer",
    "meta_failure_hint",
    "refuse",
    "user_frame",
]

#: Source files whose value checks are answered ``False`` on meta (see the module docstring).
MASK_HELPERS: tuple[str, ...] = (
    os.path.join("transformers", "masking_utils.py"),
    os.path.join("transformers", "modeling_attn_mask_utils.py"),
)
#: (source file, function) whose value checks only decide whether to warn: answered ``False``.
WARNING_ONLY_CHECKS: tuple[tuple[str, str], ...] = (
    (os.path.join("transformers", "modeling_utils.py"), "warn_if_padding_and_no_attention_mask"),
)
#: torch's tensor assertions (``torch._check_tensor_all``): answered True on meta (see the module docstring).
_ASSERTIONS: tuple[str, ...] = ("_check_tensor_all_with",)
_TORCH_INIT = os.path.join("torch", "__init__.py")
_GENERATION = os.path.join("transformers", "generation")
_INTERNAL = (
    os.sep + os.path.join("torch", ""),
    os.sep + os.path.join("pytest_irene", "engine", ""),
    os.sep + "contextlib.py",
)


class DataDependentError(TraceError):
    """The model looked at tensor values during a meta trace."""


def user_frame(frames: list[traceback.FrameSummary] | None = None) -> traceback.FrameSummary | None:
    """The innermost frame outside torch and the tracer: the line that asked for a value."""
    stack = frames if frames is not None else traceback.extract_stack()
    for frame in reversed(stack):
        if not any(part in frame.filename for part in _INTERNAL):
            return frame
    return None


def _where(frame: traceback.FrameSummary | None) -> str:
    if frame is None:
        return "an unknown line"
    return f"{frame.filename}:{frame.lineno} ({(frame.line or '').strip()})"


def known_answer(frame: traceback.FrameSummary | None) -> bool:
    """True when the value check comes from one of :data:`MASK_HELPERS` or :data:`WARNING_ONLY_CHECKS`."""
    if frame is None:
        return False
    return any(frame.filename.endswith(h) for h in MASK_HELPERS) or any(
        frame.filename.endswith(f) and frame.name == fn for f, fn in WARNING_ONLY_CHECKS
    )


def is_assertion(frames: list[traceback.FrameSummary] | None = None) -> bool:
    """True when the value is asked by one of torch's tensor assertions (:data:`_ASSERTIONS`)."""
    stack = frames if frames is not None else traceback.extract_stack()
    return any(f.name in _ASSERTIONS and f.filename.endswith(_TORCH_INIT) for f in stack)


def refuse(what: str, module: str, frame: traceback.FrameSummary | None) -> DataDependentError:
    """The error for a value asked of a meta tensor by ``module`` at ``frame``."""
    if frame is not None and _GENERATION in frame.filename:
        return DataDependentError(
            f"module '{module}' calls transformers' generate() during a meta trace ({_where(frame)} asks "
            f"for {what}); its loop stops on token values, which meta tensors do not have. Trace the "
            "generation with pytest_irene.trace_generate(model, inputs, max_new_tokens=N) or "
            "irene(model, inputs, max_new_tokens=N), or pass device='cpu'"
        )
    return DataDependentError(
        f"module '{module}' depends on tensor values at {_where(frame)}: it asks for {what}, which a "
        "meta tensor does not have, so the traced branch or loop count would be a guess. "
        "Pass device='cpu' (irene(model, inputs, device='cpu'), @pytest.mark.irene(device='cpu'), "
        "--irene-device=cpu, or --device cpu for irene predict/sweep) to trace it with real values"
    )


_META_MARKERS = ("meta", "data-dependent", "data dependent", "cannot copy out of", "nonzero")


def meta_failure_hint(exc: BaseException) -> str:
    """For an exception raised on meta by a value-dependent op: where, and what to do; else ``""``."""
    text = str(exc).lower()
    if not any(m in text for m in _META_MARKERS):
        return ""
    frame = user_frame(traceback.extract_tb(exc.__traceback__))
    return (
        f" (at {_where(frame)}: this operation needs tensor values or value-dependent shapes, which the "
        "meta device does not have; pass device='cpu' to trace it for real)"
    )


def describe_value(t: Any) -> str:
    """``bool()``/``.item()`` of a bool tensor, or a number."""
    return "a boolean (if/while on a tensor, bool(), .all(), .any())" if str(getattr(t, "dtype", "")) == "torch.bool" \
        else "a number (.item(), .tolist(), int()/float() of a tensor)"
