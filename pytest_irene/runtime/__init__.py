"""Runtime measurement: resource features measured while a model runs on this host.

* :class:`ResourceSampler` logs CPU, memory, GPU (NVML) and RAPL every 170 ms;
* :func:`measure_tree` traces a model with captured inputs, runs every distinct
  node once in isolation (:func:`run_call`, :func:`distinct_signatures`) and
  fills the dataset's resource features on every node;
* :func:`host_fingerprint` / :func:`fingerprint_matches` decide whether resource
  features may be used with an energy model calibrated elsewhere;
  :func:`choose_features` turns ``auto|model|all`` into a mode and a reason.

Names are imported lazily: importing this package does not import torch.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_LAZY: dict[str, str] = {
    "ResourceSampler": "pytest_irene.runtime.sampler",
    "Sample": "pytest_irene.runtime.sampler",
    "SamplerWarning": "pytest_irene.runtime.sampler",
    "DEFAULT_PERIOD_S": "pytest_irene.runtime.sampler",
    "load_nvml": "pytest_irene.runtime.nvml",
    "Nvml": "pytest_irene.runtime.nvml",
    "GpuReading": "pytest_irene.runtime.nvml",
    "NvmlUnavailable": "pytest_irene.runtime.nvml",
    "RaplCounter": "pytest_irene.runtime.rapl",
    "RaplUnavailable": "pytest_irene.runtime.rapl",
    "host_fingerprint": "pytest_irene.runtime.fingerprint",
    "fingerprint_matches": "pytest_irene.runtime.fingerprint",
    "fingerprint_differences": "pytest_irene.runtime.fingerprint",
    "describe": "pytest_irene.runtime.fingerprint",
    "choose_features": "pytest_irene.runtime.fingerprint",
    "FeatureMode": "pytest_irene.runtime.fingerprint",
    "measure_tree": "pytest_irene.runtime.runner",
    "run_call": "pytest_irene.runtime.runner",
    "RunWindow": "pytest_irene.runtime.runner",
    "distinct_signatures": "pytest_irene.runtime.runner",
    "signature": "pytest_irene.runtime.runner",
    "attribute": "pytest_irene.runtime.runner",
    "gpu_position": "pytest_irene.runtime.runner",
    "RUNTIME_FEATURES": "pytest_irene.runtime.runner",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
