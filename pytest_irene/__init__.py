"""pytest-irene: interpretable energy prediction for transformers, as a pytest plugin.

The library works without pytest::

    import pytest_irene as irene
    tree = irene.trace(model, inputs)          # EnergyTree; tree.root is the model node
    em = irene.EnergyModel.load("irene-pc1")   # bundled profile name, or a path
    em.predict(tree)                           # sets node.predicted_energy (J) on every node

Names are imported lazily so that ``import pytest_irene`` (which pytest does for
every session through the plugin entry point) does not import torch.
"""

from __future__ import annotations

from ._lazy import lazy_exports


__version__ = "0.1.0"

_LAZY: dict[str, str] = {
    "EnergyNode": "pytest_irene.tree",
    "EnergyTree": "pytest_irene.tree",
    "load_dataset": "pytest_irene.dataset",
    "write_dataset": "pytest_irene.dataset",
    "IreneError": "pytest_irene.errors",
    "trace": "pytest_irene.tracing",
    "NodeCall": "pytest_irene.tracing",
    "register_formula": "pytest_irene.features",
    "ARCHITECTURES": "pytest_irene.architectures",
    "build_model": "pytest_irene.architectures",
    "example_inputs": "pytest_irene.architectures",
    "EnergyModel": "pytest_irene.energy_model",
    "predict": "pytest_irene.energy_model",
}

__all__ = sorted(_LAZY) + ["__version__"]

__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
