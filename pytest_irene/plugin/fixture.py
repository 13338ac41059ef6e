"""The ``irene`` fixture's callable: one wrapped model call per ``irene(...)``, handed to the session."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from pytest_irene.compare.records import CallRecord

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
        return self._manager.wrapped_call(
            self._item, model, inputs, label, batch_size=batch_size, seq_len=seq_len, model_name=model_name,
            max_new_tokens=max_new_tokens, trace_on=device,
        )

    @property
    def records(self) -> list[CallRecord]:
        """The records of this test's calls so far."""
        return list(self._manager.item_records.get(self._item.nodeid, []))
