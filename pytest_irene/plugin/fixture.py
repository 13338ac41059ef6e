"""The ``irene`` fixture's callable: one wrapped model call per ``irene(...)``, handed to the session."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

import pytest

from pytest_irene.compare.records import CallRecord
from pytest_irene.errors import IreneError, TraceError

if TYPE_CHECKING:
    import torch

    from pytest_irene.engine.tree import EnergyTree
    from pytest_irene.plugin.session import IreneSession

DEFAULT_LABEL = "default"


class IreneFixture:
    """What the ``irene`` fixture returns: call it to trace, predict and gate one model call.

    ``irene(model, inputs, label="encoder")`` returns the predicted
    :class:`~pytest_irene.engine.tree.EnergyTree` (``.total_j``, ``tree["encoder.layer.0"]``,
    ``.breakdown()``). Call it several times per test with different labels.
    """

    def __init__(self, manager: IreneSession, item: pytest.Item):
        self._manager = manager
        self._item = item

    def __call__(
        self,
        model: torch.nn.Module,
        inputs: Any,
        label: str = DEFAULT_LABEL,
        *,
        batch_size: int | None = None,
        seq_len: int | None = None,
        model_name: str | None = None,
        max_new_tokens: int | None = None,
        device: str | None = None,
    ) -> EnergyTree:
        """``max_new_tokens=N``: the whole generation (:func:`pytest_irene.trace_generate`);
        ``device="cpu"``: trace with real values (data-dependent code), overriding the marker and ``--irene-device``."""
        caller = sys._getframe(1)  # the line of this call: where a CI annotation of a regression points
        in_test = os.path.abspath(caller.f_code.co_filename) == os.path.abspath(str(self._item.path))
        try:
            return self._manager.wrapped_call(
                self._item, model, inputs, label, batch_size=batch_size, seq_len=seq_len, model_name=model_name,
                max_new_tokens=max_new_tokens, trace_on=device, call_line=caller.f_lineno if in_test else None,
            )
        except TraceError as exc:
            surfaced = model_exception(exc)
            if surfaced is exc:
                raise
        # raised outside the handler, so the user's exception keeps its own __cause__/__context__
        raise surfaced

    @property
    def records(self) -> list[CallRecord]:
        """The records of this test's calls so far."""
        from pytest_irene.plugin.session import baseline_nodeid

        return list(self._manager.item_records.get(baseline_nodeid(self._item), []))


def model_exception(exc: TraceError) -> BaseException:
    """What a failed trace surfaces as in a test: the exception the user's model raised, unchanged
    (same type and traceback, so ``pytest.raises(ValueError)``, ``xfail(raises=...)`` and the
    traceback into the user's forward work as without the plugin), with the tracer's message
    (which module, hints) added as a note; a failure of pytest-irene's own (data-dependent code,
    a refused input) stays the :class:`TraceError` it is."""
    cause = exc.__cause__
    if type(exc) is not TraceError or cause is None or isinstance(cause, IreneError):
        return exc
    note = f"pytest-irene: {exc}"
    if hasattr(cause, "add_note") and note not in getattr(cause, "__notes__", ()):  # notes: Python 3.11+
        cause.add_note(note)
    return cause
