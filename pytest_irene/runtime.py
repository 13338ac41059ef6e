"""Public path of the runtime measurement names (``from pytest_irene.runtime import measure_tree``).

They live in :mod:`pytest_irene.rig.runtime`; this module re-exports them lazily,
so importing it does not import torch.
"""

from __future__ import annotations

from pytest_irene._lazy import lazy_exports
from pytest_irene.rig.runtime import EXPORTS as _RIG_RUNTIME

__all__ = sorted(_RIG_RUNTIME)

__getattr__, __dir__ = lazy_exports(__name__, _RIG_RUNTIME, globals())
