"""From an ``nn.Module`` to a predicted tree: choose the features, trace or measure, predict.

The pytest plugin, the ``irene predict`` command and :func:`pytest_irene.predict`
all go through this module, so each step is decided in one place:

1. :func:`choose_features` turns what the user asked for (``auto|model|all``)
   into the feature set used with one energy model on this host, with a reason
   code and a message (resource features only mean the same thing on the rig the
   profile was calibrated on, and a GPU profile's resource features need a model
   on the GPU);
2. :func:`build_tree` traces the model on the meta device (``model``: nothing
   runs) or measures it where it lives (``all``: the node runner);
3. :meth:`EnergyModel.predict <pytest_irene.engine.predict.energy_model.EnergyModel.predict>`
   sets every node's ``predicted_energy_j``.

It sits above ``engine`` and ``rig`` (it joins the tracer and the runtime) and
below the front-ends; neither ``engine`` nor ``rig`` imports it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pytest_irene.engine.devices import check_device
from pytest_irene.engine.feature_sets import ALL, AUTO, FEATURE_MODES, FEATURE_SETS, MODEL
from pytest_irene.errors import UsageError

if TYPE_CHECKING:
    from pytest_irene.engine.predict.energy_model import EnergyModel
    from pytest_irene.engine.tree import EnergyTree

# -- why a feature set was chosen (FeatureMode.code) -------------------------------------------

#: Model features were asked for.
REQUESTED = "requested"
#: The energy model has no ``all`` predictor.
NO_RESOURCE_SET = "no-resource-set"
#: The energy model records no hardware fingerprint to compare this host with.
NO_FINGERPRINT = "no-fingerprint"
#: This host is not the calibration rig.
HOST_DIFFERS = "host-differs"
#: This host is the calibration rig: resource features are used.
HOST_MATCHES = "host-matches"
#: The host matches, but the model is not on the GPU the profile's resource features need.
MODEL_OFF_GPU = "model-off-gpu"

_HOST_DIFFERS_TEXT = "this host differs from the calibration rig"


@dataclass(frozen=True)
class FeatureMode:
    """Which feature set to predict with, and why (shown to the user)."""

    features: str
    """``"model"`` (model features only) or ``"all"`` (model + resource features, runs the node runner)."""
    reason: str
    """One line saying why this mode was chosen."""
    code: str = REQUESTED
    """The reason as a code: :data:`REQUESTED`, :data:`NO_RESOURCE_SET`, :data:`NO_FINGERPRINT`,
    :data:`HOST_DIFFERS`, :data:`HOST_MATCHES` or :data:`MODEL_OFF_GPU`."""
    requested: str = AUTO
    """What the user asked for: ``auto``, ``model`` or ``all``."""
    differences: tuple[str, ...] = ()
    """With :data:`HOST_DIFFERS`: each way this host differs from the rig."""

    @property
    def summary(self) -> str:
        """The reason cut to its first difference, for the one-line report header."""
        if self.code == HOST_DIFFERS and self.differences:
            return f"{_HOST_DIFFERS_TEXT}: {self.differences[0]}"
        return self.reason

    @property
    def message(self) -> str:
        """The reason as a call record shows it: ``auto: <reason>[; what follows from it]``."""
        text = f"{self.requested}: {self.reason}"
        if self.features == MODEL and self.requested == AUTO and self.code != MODEL_OFF_GPU:
            text += "; resource features would not transfer, so model features are used"
        return text


class FeatureModeRefused(UsageError):
    """``all`` was asked for where resource features would give wrong energies."""

    def __init__(self, message: str, mode: FeatureMode):
        super().__init__(message)
        self.mode = mode
        """The decision that was refused (its ``code`` and ``differences`` say why)."""


def choose_features(
    requested: str,
    profile_hardware: dict[str, Any] | None,
    *,
    host: dict[str, Any] | None = None,
    available: tuple[str, ...] = FEATURE_SETS,
    device: str | None = None,
    option: str = "--irene-features",
) -> FeatureMode:
    """Decide between model and resource features for one profile on this host.

    ``auto`` uses resource features only when the profile was calibrated on a
    host matching this one (and has ``all`` regressors), and, when ``device``
    (the model's) is given and the rig had GPUs, only for a model on a CUDA
    device; ``model`` never does; ``all`` insists and raises
    :class:`FeatureModeRefused` (a :class:`~pytest_irene.errors.UsageError`)
    naming ``option`` when the host does not match, because resource features
    measured on different hardware would silently give wrong energies.
    ``host`` defaults to this machine's fingerprint.
    """
    if requested not in FEATURE_MODES:
        raise UsageError(f"{option}: expected one of {', '.join(FEATURE_MODES)}, got {requested!r}")
    if requested == MODEL:
        return FeatureMode(MODEL, "model features requested", REQUESTED, requested)
    from pytest_irene.rig.runtime import fingerprint

    problem: FeatureMode | None = None
    if ALL not in available:
        problem = FeatureMode(
            MODEL, "the energy model has no resource-feature ('all') regressors", NO_RESOURCE_SET, requested
        )
    elif not profile_hardware:
        problem = FeatureMode(MODEL, "the energy model records no hardware fingerprint", NO_FINGERPRINT, requested)
    else:
        if host is None:
            from pytest_irene.rig import runtime

            host = runtime.host_fingerprint()
        diffs = tuple(fingerprint.fingerprint_differences(host, profile_hardware))
        if diffs:
            reason = f"{_HOST_DIFFERS_TEXT}: " + "; ".join(diffs)
            problem = FeatureMode(MODEL, reason, HOST_DIFFERS, requested, diffs)
    if problem is not None:
        if requested == ALL:
            raise FeatureModeRefused(f"{option}=all: {problem.reason}; use 'auto' or 'model' on this host", problem)
        return problem
    matches = f"host matches the calibration rig ({fingerprint.describe(profile_hardware or {})})"
    rig_gpus = list((profile_hardware or {}).get("gpus") or [])
    if requested == AUTO and device is not None and rig_gpus and not str(device).startswith("cuda"):
        reason = (
            f"{matches}, but the model is on {device} and the profile's resource features need its GPU; "
            "model features are used"
        )
        return FeatureMode(MODEL, reason, MODEL_OFF_GPU, requested)
    return FeatureMode(ALL, matches, HOST_MATCHES, requested)


# -- trace or measure, then predict ----------------------------------------------------------------


def build_tree(
    model: Any,
    inputs: Any,
    features: str,
    *,
    device: Any = None,
    option: str = "features",
    max_new_tokens: int | None = None,
    **trace_kwargs: Any,
) -> EnergyTree:
    """The tree to predict with ``features``: traced for ``model``, measured on this host for ``all``.

    With ``max_new_tokens`` the tree is a whole generation
    (:func:`pytest_irene.engine.generation.trace_generate`), model features only.

    ``model`` traces on the meta device unless ``device`` says otherwise (nothing
    runs); ``all`` measures the model with
    :func:`pytest_irene.rig.runtime.measure_tree` on ``device``, by default where
    the model lives, which must be a real device. ``trace_kwargs`` go to the
    tracer (``batch_size``, ``seq_len``, ``model_name``).
    """
    where = device if device is not None else "meta"
    if features == MODEL and max_new_tokens is not None:
        from pytest_irene.engine.generation import trace_generate

        tree = trace_generate(model, inputs, max_new_tokens=max_new_tokens, device=where,
                              model_name=trace_kwargs.get("model_name"))
        for name in ("batch_size", "seq_len"):  # a generation's sizes are its prompt's: say so, never drop them
            given = trace_kwargs.get(name)
            if given is not None and given != getattr(tree, name):
                raise UsageError(
                    f"{name}={given!r} with max_new_tokens: a generation's sizes are its prompt's "
                    f"({name} {getattr(tree, name)}); leave {name} out or pass a prompt of that size"
                )
        return tree
    if features == MODEL:
        from pytest_irene.engine.tracing import trace

        return trace(model, inputs, device=where, **trace_kwargs)
    if max_new_tokens is not None:
        raise UsageError(f"{option}=all: a generation is predicted from model features (a rig measures single "
                         "forwards); use model features with max_new_tokens")
    if features != ALL:
        raise UsageError(f"{option}: expected one of {list(FEATURE_SETS)}, got {features!r}")
    from pytest_irene.engine.tracing import model_device
    from pytest_irene.rig.runtime import measure_tree

    where = str(device) if device is not None else (model_device(model) or "cpu")
    if where == "meta":
        raise UsageError(f"{option}=all measures the model: it must be on a real device, not 'meta'")
    return measure_tree(model, inputs, device=where, **trace_kwargs)


def predict_with(
    energy_model: EnergyModel,
    model: Any,
    inputs: Any,
    features: str = MODEL,
    *,
    device: Any = None,
    option: str = "features",
    max_new_tokens: int | None = None,
    **trace_kwargs: Any,
) -> EnergyTree:
    """:func:`build_tree`, then every node predicted by ``energy_model``; returns the tree."""
    tree = build_tree(model, inputs, features, device=device, option=option, max_new_tokens=max_new_tokens,
                      **trace_kwargs)
    return energy_model.predict(tree, features=features)


def predict(
    model: Any,
    inputs: Any,
    *,
    profile: str | os.PathLike[str] = "irene-pc1",
    features: str = MODEL,
    **trace_kwargs: Any,
) -> EnergyTree:
    """Trace ``model(inputs)`` and predict every node's energy with ``profile``, in one call.

    ``features="model"`` traces on the meta device (nothing runs);
    ``features="all"`` measures the model where it lives with
    :func:`pytest_irene.rig.runtime.measure_tree` (it must be on a real device).
    ``trace_kwargs`` go to the tracer (``batch_size``, ``seq_len``, ``model_name``,
    ``device``); ``max_new_tokens=N`` predicts a whole generation
    (:func:`pytest_irene.trace_generate`). The tree is returned with every node's
    ``predicted_energy_j`` set (``tree.total_j`` is the model's, joules).
    """
    from pytest_irene.engine.predict.energy_model import EnergyModel

    return predict_with(EnergyModel.load(profile), model, inputs, features, **trace_kwargs)


__all__ = [
    "HOST_DIFFERS",
    "HOST_MATCHES",
    "MODEL_OFF_GPU",
    "NO_FINGERPRINT",
    "NO_RESOURCE_SET",
    "REQUESTED",
    "FeatureMode",
    "FeatureModeRefused",
    "build_tree",
    "check_device",
    "choose_features",
    "predict",
    "predict_with",
]
