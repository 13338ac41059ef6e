"""Retraining for a rig: an energy model file from the datasets calibration appended to."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pytest_irene.rig.calibration_plan import CalibrationSettings
from pytest_irene.validate import is_finite_number


def train_rig_model(
    dataset_paths: Sequence[str | Path],
    output: str | Path,
    *,
    profile: str,
    hardware: dict[str, Any] | None = None,
    prior: str | Path | None = None,
) -> Any:
    """Retrain the regressors on the rig's dataset(s) and save an energy model file; returns it.

    With ``prior`` (a profile name or model file) the model is a transfer of that prior
    (:func:`pytest_irene.engine.predict.transfer.transfer_energy_model`): a few measured
    trees suffice. The ``all`` feature set (model + resource features) is trained only when every
    tree carries every resource feature: a CPU-only rig has no GPU features, so
    its model predicts from model features (and says so in its ``feature_sets``).
    """
    from pytest_irene.engine.dataset import load_dataset
    from pytest_irene.engine.predict.training import train_energy_model
    from pytest_irene.engine.tree import RESOURCE_FEATURES

    paths = [str(p) for p in dataset_paths]
    trees = load_dataset(*paths)
    complete = bool(trees) and all(all(f in t.root.features for f in RESOURCE_FEATURES) for t in trees)
    feature_sets = ("model", "all") if complete else ("model",)
    if prior is not None:
        from pytest_irene.engine.predict.transfer import transfer_energy_model

        model = transfer_energy_model(paths, prior=prior, profile=profile, hardware=hardware, feature_sets=feature_sets)
    else:
        model = train_energy_model(paths, profile=profile, hardware=hardware, feature_sets=feature_sets)
    try:
        model.save(output)
    except OSError as exc:  # after hours of measuring: a one-line error that says what is kept, no traceback
        from pytest_irene.rig.calibration_plan import CalibrationError

        raise CalibrationError(
            f"cannot write the energy model {output}: {exc.strerror or exc}; the measured trees are kept in "
            f"{', '.join(paths)} (train them with irene train {' '.join(paths)} -o MODEL.json)"
        ) from None
    return model


def cv_summary(model: Any) -> list[str]:
    """One line per feature set with the model file's cross-validation errors (average %, per level)."""
    lines = []
    for name, result in (getattr(model, "cv_errors", None) or {}).items():
        if not isinstance(result, dict):
            continue
        levels = result.get("levels") or {}
        parts = []
        for level in ("ml", "module", "model"):
            row = levels.get(level)
            value = row.get("average") if isinstance(row, dict) else None
            if is_finite_number(value):
                parts.append(f"{level} {value:.2f} %")
        if parts:
            lines.append(f"cross-validation ({name} features, {result.get('split')} split): " + ", ".join(parts))
        elif result.get("note"):
            lines.append(f"cross-validation ({name} features): {result['note']}")
    return lines


def settings_dict(settings: CalibrationSettings) -> dict[str, Any]:
    """The settings as a JSON-able dict (for reports)."""
    return asdict(settings)


__all__ = ["cv_summary", "settings_dict", "train_rig_model"]
