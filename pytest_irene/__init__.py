"""pytest-irene: interpretable energy prediction for transformers, as a pytest plugin.

The library works without pytest::

    import pytest_irene as irene
    tree = irene.trace(model, inputs)          # EnergyTree; tree.root is the model node
    em = irene.EnergyModel.load("irene-pc1")   # bundled profile name, or a path
    em.predict(tree)                           # sets node.predicted_energy_j (J) on every node

Names are imported lazily so that ``import pytest_irene`` (which pytest does for
every session through the plugin entry point) does not import torch.
"""

from __future__ import annotations

from pytest_irene.lazy import lazy_exports


__version__ = "0.1.0"

_LAZY: dict[str, str] = {
    "EnergyNode": "pytest_irene.engine.tree",
    "EnergyTree": "pytest_irene.engine.tree",
    "load_dataset": "pytest_irene.engine.dataset",
    "write_dataset": "pytest_irene.engine.dataset",
    # the errors a user may catch: ``except irene.TraceError`` must not need a submodule import
    "IreneError": "pytest_irene.errors",
    "IreneWarning": "pytest_irene.errors",
    "DatasetError": "pytest_irene.errors",
    "ModelFileError": "pytest_irene.errors",
    "NodeNotFound": "pytest_irene.errors",
    "TraceError": "pytest_irene.errors",
    "UsageError": "pytest_irene.errors",
    "trace": "pytest_irene.engine.tracing",
    "trace_generate": "pytest_irene.engine.generation",
    "GenerationTree": "pytest_irene.engine.generation_tree",
    "NodeCall": "pytest_irene.engine.tracing",
    "register_formula": "pytest_irene.engine.features",
    "ARCHITECTURES": "pytest_irene.engine.architectures",
    "build_model": "pytest_irene.engine.architectures",
    "example_inputs": "pytest_irene.engine.architectures",
    "EnergyModel": "pytest_irene.engine.predict.energy_model",
    "predict": "pytest_irene.pipeline",
}

__all__ = sorted(_LAZY) + ["__version__"]

__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
