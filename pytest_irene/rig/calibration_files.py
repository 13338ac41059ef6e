"""The files a calibration run appends to and writes, checked before any rig time is spent.

A rig dataset holds hours of measurements and nothing can re-create it, so:

* the dataset a run appends to is read (validated) *before* measuring: a
  truncated gzip or a line of another schema would otherwise only surface when
  the first finished tree is appended, or when training after the last one;
  its trees must measure what this meter measures (one energy scope per file);
* the energy model file (``-o``) must never be one of the datasets (training
  ``rig.jsonl`` into ``-o rig.jsonl`` replaced the measurements by the model), and
  an existing file there is only replaced when it is an energy model itself;
* a tree whose append fails anyway (the disk filled) is written to a rescue
  file next to the dataset instead of being lost with the exception.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pytest_irene.errors import DatasetError, IreneError, UsageError
from pytest_irene.outputs import same_file

#: Suffixes of dataset files, which an energy model file must not have.
DATASET_SUFFIXES = (".jsonl", ".jsonl.gz")


def _is_energy_model(path: Path) -> bool:
    """Whether ``path`` holds an energy model file (``"format": "irene-model"``)."""
    try:
        with path.open("rb") as handle:
            obj = json.loads(handle.read())
    except (OSError, ValueError):
        return False
    return isinstance(obj, dict) and obj.get("format") == "irene-model"


def check_model_output(output: str | os.PathLike[str], datasets: Sequence[str | os.PathLike[str]], option: str,
                       prior: str | None = None) -> Path:
    """``output`` when an energy model may be written there, else a :class:`UsageError` naming ``option``.

    Refused: a dataset name (``.jsonl``, ``.jsonl.gz``), one of ``datasets`` itself (also
    through a link), the ``prior`` model file a transfer starts from, and an existing
    non-empty file that is not an energy model (what is there would be lost; an
    energy model is replaced, that is what retraining does).
    """
    target = Path(output)
    if target.name.endswith(DATASET_SUFFIXES):
        raise UsageError(f"{option}={target}: expected an energy model file (MODEL.json), got a dataset name")
    for dataset in datasets:
        if same_file(target, dataset):
            raise UsageError(
                f"{option}={target}: is the dataset {dataset}; writing the model there would destroy "
                "the measurements: pick another file (MODEL.json)"
            )
    if prior is not None and same_file(target, prior):
        raise UsageError(f"{option}={target}: is the prior {prior}; the transferred model would replace it: "
                         "pick another file (MODEL.json)")
    if target.is_file() and target.stat().st_size > 0 and not _is_energy_model(target):
        raise UsageError(
            f"{option}={target}: exists and is not an energy model file; refusing to overwrite it "
            "(remove it or pick another path)"
        )
    return target


def check_dataset_for_append(dataset: str | os.PathLike[str], energy_scope: str, option: str) -> list[tuple[str, int, int]]:
    """The runs ``dataset`` holds, one ``(model, batch size, sequence length)`` per tree (none
    when it does not exist yet); an :class:`IreneError` naming ``option`` when the file is
    unreadable or invalid, or holds trees of another energy scope than the meter's (``wall``
    vs ``gpu-board``: training refuses to mix them)."""
    from pytest_irene.engine.dataset import load_dataset

    path = Path(dataset)
    if not path.exists():
        return []
    try:
        trees = load_dataset(path)
    except DatasetError as exc:
        raise DatasetError(
            exc.path, exc.line, exc.field, f"{exc.problem} ({option}: fix or move the file before measuring into it)"
        ) from None
    scopes = sorted({t.energy_scope for t in trees})
    if scopes and scopes != [energy_scope]:
        raise UsageError(
            f"{option}={path}: holds {', '.join(scopes)} energy and this meter measures {energy_scope}; "
            "one profile holds one energy scope: append to another dataset file"
        )
    return [(t.model_name, t.batch_size, t.seq_len) for t in trees]


def rescue_trees(dataset: Path, trees: Sequence[Any], error: BaseException) -> IreneError:
    """Write ``trees`` (whose append to ``dataset`` failed with ``error``) to a rescue file next
    to it; returns the error to raise, naming both files."""
    from pytest_irene.engine.dataset import write_dataset
    from pytest_irene.rig.calibration_plan import CalibrationError

    why = getattr(error, "strerror", None) or error
    rescue = dataset.with_name(f"{dataset.name.removesuffix('.gz').removesuffix('.jsonl')}.rescued-{int(time.time())}.jsonl")
    try:
        write_dataset(rescue, trees)
    except OSError as exc:
        return CalibrationError(f"cannot append to {dataset} ({why}) nor write {rescue} ({exc.strerror or exc})")
    return CalibrationError(
        f"cannot append to {dataset} ({why}); the measured tree(s) were written to {rescue} instead "
        f"(append them by hand, or train on both files)"
    )


__all__ = ["DATASET_SUFFIXES", "check_dataset_for_append", "check_model_output", "rescue_trees"]
