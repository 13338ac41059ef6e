"""The feature-set vocabulary, named once for the predictors, the model files, the plugin and the CLI.

A prediction uses one of two feature sets: ``model`` (features known from the
model alone: hardware independent, what CI uses) or ``all`` (plus the resource
features measured while the model runs on the rig). A user of the pytest plugin
may also ask for ``auto``: resource features only on the profile's own hardware
(decided by :func:`pytest_irene.pipeline.choose_features`).
"""

from __future__ import annotations

#: Model features only; traces on the meta device, nothing runs.
MODEL = "model"
#: Model plus resource features; the model is measured on this host.
ALL = "all"
#: Let the host decide: ``all`` on the calibration rig, else ``model``.
AUTO = "auto"

#: Feature sets a predictor is fitted on and a model file may hold, in the order they are written.
FEATURE_SETS: tuple[str, ...] = (MODEL, ALL)
#: What ``--irene-features`` accepts.
FEATURE_MODES: tuple[str, ...] = (AUTO, MODEL, ALL)

__all__ = ["ALL", "AUTO", "FEATURE_MODES", "FEATURE_SETS", "MODEL"]
