"""Runtime measurement: resource features measured while a model runs on this host.

* :class:`ResourceSampler` logs CPU, memory, GPU (NVML) and RAPL every 170 ms;
* :func:`measure_tree` traces a model with captured inputs, runs every distinct
  node once in isolation (:func:`run_call`, :func:`distinct_signatures`) and
  fills the dataset's resource features on every node;
* :func:`host_fingerprint` / :func:`fingerprint_matches` tell whether resource
  features may be used with an energy model calibrated elsewhere (the decision
  itself is :func:`pytest_irene.pipeline.choose_features`).

Names are imported lazily: importing this package does not import torch.
"""

from __future__ import annotations

from pytest_irene.lazy import lazy_exports

EXPORTS: dict[str, str] = {
    "ResourceSampler": "pytest_irene.rig.runtime.sampler",
    "Sample": "pytest_irene.rig.runtime.sampler",
    "SamplerWarning": "pytest_irene.rig.runtime.sampler",
    "DEFAULT_PERIOD_S": "pytest_irene.rig.runtime.sampler",
    "load_nvml": "pytest_irene.rig.runtime.nvml",
    "Nvml": "pytest_irene.rig.runtime.nvml",
    "GpuReading": "pytest_irene.rig.runtime.nvml",
    "NvmlUnavailable": "pytest_irene.rig.runtime.nvml",
    "RaplCounter": "pytest_irene.rig.runtime.rapl",
    "RaplUnavailable": "pytest_irene.rig.runtime.rapl",
    "host_fingerprint": "pytest_irene.rig.runtime.fingerprint",
    "fingerprint_matches": "pytest_irene.rig.runtime.fingerprint",
    "fingerprint_differences": "pytest_irene.rig.runtime.fingerprint",
    "describe": "pytest_irene.rig.runtime.fingerprint",
    "measure_tree": "pytest_irene.rig.runtime.runner",
    "run_call": "pytest_irene.rig.runtime.runner",
    "RunWindow": "pytest_irene.rig.runtime.runner",
    "distinct_signatures": "pytest_irene.rig.runtime.signatures",
    "signature": "pytest_irene.rig.runtime.signatures",
    "capture": "pytest_irene.rig.runtime.capture",
    "attribute": "pytest_irene.rig.runtime.runner",
    "gpu_position": "pytest_irene.rig.runtime.runner",
    "RUNTIME_FEATURES": "pytest_irene.rig.runtime.runner",
}

__all__ = sorted(EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, EXPORTS, globals())
