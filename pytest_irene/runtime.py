"""Public path of the runtime measurement names (``from pytest_irene.runtime import measure_tree``).

They live in :mod:`pytest_irene.rig.runtime`; this module re-exports them lazily,
so importing it does not import torch.
"""

from __future__ import annotations

from pytest_irene.lazy import lazy_exports
from pytest_irene.rig.runtime import EXPORTS

#: The rig's runtime names, plus the feature-mode decision that uses them (it lives in the pipeline).
NAMES: dict[str, str] = {**EXPORTS, "choose_features": "pytest_irene.pipeline", "FeatureMode": "pytest_irene.pipeline"}

__all__ = sorted(NAMES)

__getattr__, __dir__ = lazy_exports(__name__, NAMES, globals())
