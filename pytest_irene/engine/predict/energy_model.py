"""Energy models: trained predictors plus where and how they were trained (the file format: :mod:`.model_file`).

An energy model is what a profile name (``irene-pc1``) stands for: one fitted
:class:`~pytest_irene.engine.predict.strategies.Predictor` per feature set (``model``: model
features only, hardware independent, what CI uses; ``all``: plus the resource
features measured on the rig), the hardware it was measured on, the hash of the
dataset it was trained on and its own cross-validation errors, so a user can
see how far to trust it before gating on it.

The file is versioned JSON (never pickle: users load files from other people)::

    {"format": "irene-model", "schema_version": 1, "profile": "irene-pc1",
     "energy_scope": "wall", "created_by": "pytest-irene 0.1.0",
     "hardware": {"description": ..., "cpu_model": ..., "cpu_count": ..., "memory_gib": ...,
                  "gpus": [...], "driver_version": ...},
     "dataset": {"files": ["irene-pc1.jsonl.gz"], "hash": "sha256:...", "trees": 193, "models": [...]},
     "strategy": "glue", "hyper_parameters": {"seed": 0, "cv_split": "lomo"},
     "feature_sets": {"model": <predictor JSON>, "all": <predictor JSON>},
     "cv_errors": {"model": {"split": "lomo", "levels": {"ml": {...}, ...}}, "all": {...}}}

``energy_scope`` says what the predicted joules cover (``wall``: the whole machine,
``gpu-board``: the GPU alone, from NVML): it comes from the training data, so a
profile trained on NVML's counter never claims wall energy. Files written before
the field existed were trained on the paper's wall measurements and read as ``wall``.

Loading validates everything and names the file and the field of any problem
(a newer schema, a missing field, a wrong type, a NaN weight). Loaded models are
cached per resolved path, modification time and size (the one cache of energy
models: the plugin and the explorer call :meth:`EnergyModel.load` for every
test or request at no cost). Training one is :mod:`.training`; tracing or
measuring a model and predicting it in one call is :func:`pytest_irene.pipeline.predict`.
"""

from __future__ import annotations

import copy
import json
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_irene.atomic import atomic_write_text
from pytest_irene.errors import ModelFileError, UsageError
from pytest_irene.engine.feature_sets import FEATURE_SETS
from pytest_irene.engine.predict.model_file import writer_name, dump_json, parse_fields, read_json
from pytest_irene.engine.predict.profiles import MODEL_FORMAT, SCHEMA_VERSION, resolve_profile
from pytest_irene.engine.tree import DEFAULT_ENERGY_SCOPE, EnergyTree
from pytest_irene.validate import finite_or_none


class ModelFileWriteError(ModelFileError, OSError):
    """A model file could not be written: a :class:`ModelFileError` the CLI prints as one line,
    and still the ``OSError`` that callers of :meth:`EnergyModel.save` caught before."""


@dataclass(eq=False)
class EnergyModel:
    """A trained energy model (one profile), as stored in a model file."""

    profile: str
    """Profile name (``irene-pc1``): which machine the energies are for."""
    hardware: dict[str, Any]
    """The rig it was measured on: a host fingerprint (``cpu_model``, ``cpu_count``,
    ``memory_gib``, ``gpus``, ``driver_version``) plus a human ``description``."""
    dataset_hash: str
    """``sha256:...`` of the decompressed training data (:func:`~pytest_irene.engine.dataset.dataset_hash`)."""
    predictors: dict[str, Any]
    """Fitted predictor per feature set (``model`` / ``all``)."""
    strategy: str
    """Tree strategy of the predictors (``glue``, ``end2end``, ...)."""
    cv_errors: dict[str, Any] = field(default_factory=dict)
    """Per feature set: ``{"split": "lomo", "levels": {"ml": {model: pct, "average": pct}, ...}}``."""
    dataset_files: list[str] = field(default_factory=list)
    """Base names of the training files (the hash is what identifies the data)."""
    dataset_info: dict[str, Any] = field(default_factory=dict)
    """Extra facts about the training data (number of trees, model names)."""
    hyper_parameters: dict[str, Any] = field(default_factory=dict)
    """Settings used to train (seed, cross-validation split)."""
    energy_scope: str = DEFAULT_ENERGY_SCOPE
    """What the predicted energy covers (one of :data:`~pytest_irene.engine.tree.ENERGY_SCOPES`):
    ``wall`` (the whole machine) or ``gpu-board`` (the GPU alone, NVML), as the training data said."""
    created_by: str = field(default_factory=writer_name)
    schema_version: int = SCHEMA_VERSION
    source: Path | None = None
    """The file this model was loaded from (not stored)."""

    # -- properties -----------------------------------------------------------------------

    @property
    def feature_sets(self) -> tuple[str, ...]:
        """Feature sets this model can predict with, in file order."""
        return tuple(name for name in FEATURE_SETS if name in self.predictors)

    @property
    def training_ranges(self) -> Any:
        """The :class:`~pytest_irene.engine.predict.ranges.TrainingRanges` of ``dataset.ranges``
        (validated when the file is loaded), ``None`` for files written before they were stored."""
        from pytest_irene.engine.predict.ranges import TrainingRanges

        raw = self.dataset_info.get("ranges")
        return None if raw is None else TrainingRanges.from_json(raw)

    def training_trees_among(self, trees: Sequence[EnergyTree]) -> int | None:
        """How many of ``trees`` this model was trained on (by :func:`tree_fingerprint
        <pytest_irene.engine.dataset.tree_fingerprint>`), ``None`` for files written before
        the fingerprints were stored. Their error is a fit, not a held-out error."""
        from pytest_irene.engine.dataset import tree_fingerprint

        known = self.dataset_info.get("tree_fingerprints")
        if known is None:
            return None
        seen = set(known)
        return sum(tree_fingerprint(t) in seen for t in trees)

    def describe(self) -> str:
        """``irene-pc1 (/path/to/irene-pc1.json)`` for messages."""
        return f"{self.profile} ({self.source})" if self.source else self.profile

    # -- prediction -----------------------------------------------------------------------

    def predict(self, tree: EnergyTree, features: str = "model") -> EnergyTree:
        """Set ``predicted_energy_j`` (J) on every node of ``tree``; returns the same tree.

        ``features="all"`` needs a tree measured on the host (resource features on
        every node, see :func:`pytest_irene.rig.runtime.measure_tree`); a traced tree
        only has model features.
        """
        self.predict_many([tree], features)
        return tree

    def predict_many(self, trees: Sequence[EnergyTree], features: str = "model") -> list[EnergyTree]:
        """:meth:`predict` for several trees in one vectorised pass."""
        trees = list(trees)
        predictor = self._predictor(features)
        for tree in trees:
            if not isinstance(tree, EnergyTree):  # em.predict(model): the model must be traced first
                raise UsageError(
                    f"predict: expected an EnergyTree, got {type(tree).__name__}; trace the model first "
                    "(pytest_irene.trace(model, inputs)) or call pytest_irene.predict(model, inputs)"
                )
            self._check_features(tree, predictor, features)
            self._check_scope(tree)
        from pytest_irene.engine.generation_tree import GenerationTree, predict_generation

        predictor.predict_many([t for t in trees if not isinstance(t, GenerationTree)])
        for tree in trees:
            if isinstance(tree, GenerationTree):  # prefill and decode steps, summed (see engine.generation)
                predict_generation(tree, predictor.predict_many)
        ranges = self.training_ranges
        for tree in trees:
            tree.meta["profile"] = self.profile
            tree.meta["features"] = features
            reasons = ranges.extrapolation(tree) if ranges is not None else []
            if reasons:
                tree.meta["extrapolation"] = reasons
            else:
                tree.meta.pop("extrapolation", None)
            tree.meta["energy_scope"] = self.energy_scope
        return trees

    def _predictor(self, features: str) -> Any:
        if features not in FEATURE_SETS:
            raise UsageError(f"features: expected one of {list(FEATURE_SETS)}, got {features!r}")
        predictor = self.predictors.get(features)
        if predictor is None:
            raise UsageError(
                f"energy model {self.describe()} has no {features!r} feature set "
                f"(it has {list(self.feature_sets)}); predict with one of those"
            )
        return predictor

    def _check_scope(self, tree: EnergyTree) -> None:
        """A measured tree keeps what its joules cover: predicting wall-measured nodes with a
        GPU-board profile would relabel the tree and set two different quantities side by side
        (an unmeasured, traced tree simply takes the profile's scope)."""
        if tree.root.energy_j is not None and tree.energy_scope != self.energy_scope:
            raise UsageError(
                f"predict: tree {tree.model_name} b{tree.batch_size} s{tree.seq_len} measured {tree.energy_scope!r} "
                f"energy but {self.describe()} predicts {self.energy_scope!r} energy; predict measured trees "
                "with a profile of their own scope (meta.energy_scope)"
            )

    @staticmethod
    def _check_features(tree: EnergyTree, predictor: Any, features: str) -> None:
        """A clear message before the predictor's generic one when resource features are absent."""
        if features != "all":
            return
        missing = [f for f in predictor.feature_names if f not in tree.root.features]
        if missing:
            raise UsageError(
                f"features='all' needs resource features measured on this host, but the tree of "
                f"{tree.model_name or 'the model'} lacks {missing}: a traced tree only has model features. "
                "Measure it with pytest_irene.rig.runtime.measure_tree(...) or use features='model'"
            )

    # -- (de)serialisation ----------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """The model file's content, keys in a fixed order; nested values are copies, so editing
        the result (a test breaking a field on purpose) never changes this (possibly cached) model."""
        return copy.deepcopy({
            "format": MODEL_FORMAT,
            "schema_version": self.schema_version,
            "profile": self.profile,
            "energy_scope": self.energy_scope,
            "created_by": self.created_by,
            "hardware": dict(self.hardware),
            "dataset": {"files": list(self.dataset_files), "hash": self.dataset_hash, **self.dataset_info},
            "strategy": self.strategy,
            "hyper_parameters": dict(self.hyper_parameters),
            "feature_sets": {name: self.predictors[name].to_json() for name in self.feature_sets},
            "cv_errors": {name: finite_or_none(self.cv_errors[name]) for name in self.feature_sets if name in self.cv_errors},
        })

    def dumps(self) -> str:
        """The model file's text: readable (nested objects indented, number lists on one line)."""
        return dump_json(self.to_json()) + "\n"

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the model file atomically: an existing file is replaced whole or kept as it was.

        A target that cannot be written (a directory, a read-only place) is a
        :class:`ModelFileError` naming it, not the ``OSError`` of the hidden temporary file.
        What is written is first read back as :meth:`load` reads it: a model carrying a value
        the reader refuses (a fingerprint copied from a hand-made dataset line) is refused
        here, naming the field, instead of becoming a file nothing can load."""
        text = self.dumps()  # serialise first: a bad value never touches the target
        try:
            parse_fields(json.loads(text), os.fspath(path))
        except ModelFileError as exc:
            raise ModelFileError(f"refusing to write an energy model file that would not load: {exc}") from None
        try:
            atomic_write_text(path, text)
        except OSError as exc:
            what = "it is a directory" if Path(path).is_dir() else (exc.strerror or str(exc))
            raise ModelFileWriteError(f"{os.fspath(path)}: cannot write energy model file: {what}") from None

    @classmethod
    def from_json(cls, obj: Any, source: str | os.PathLike[str] = "<memory>") -> EnergyModel:
        """Validate a parsed model file; :class:`ModelFileError` names ``source`` and the field."""
        return cls(**parse_fields(obj, str(source)))

    @classmethod
    def load(cls, name_or_path: str | os.PathLike[str]) -> EnergyModel:
        """Load a bundled profile (``"irene-pc1"``) or a model file by path (cached, see module doc).

        The returned model is the cached one, shared by every caller in the process (the plugin,
        the explorer, other threads): edit a ``copy.deepcopy`` of it, or build one with
        :meth:`from_json`, rather than the model itself."""
        path = resolve_profile(name_or_path)
        try:
            stat = path.stat()
        except OSError as exc:
            raise ModelFileError(f"{path}: cannot read energy model file: {exc.strerror or exc}") from None
        # The inode joins the key: a save replaces the file by a rename (a new inode), so a
        # model saved over another within one mtime tick and of the same size is still new.
        key = (str(path), stat.st_mtime_ns, stat.st_size, stat.st_ino)
        with _CACHE_LOCK:
            cached = _CACHE.get(key)
        if cached is not None:
            return cached
        # One load at a time: threads asking for one file at once get one object (the one
        # cache), not one each with the last one cached. Other loads wait: a load is rare.
        with _LOAD_LOCK:
            with _CACHE_LOCK:
                cached = _CACHE.get(key)
            if cached is not None:
                return cached
            model = cls.from_json(read_json(path), path)
            model.source = path
            with _CACHE_LOCK:
                for old in [k for k in _CACHE if k[0] == key[0]]:
                    del _CACHE[old]
                _CACHE[key] = model
        return model


_CACHE: dict[tuple[str, int, int, int], EnergyModel] = {}
_CACHE_LOCK = threading.Lock()
_LOAD_LOCK = threading.Lock()


def clear_cache() -> None:
    """Forget every loaded model (tests, long-running servers after retraining)."""
    with _CACHE_LOCK:
        _CACHE.clear()


def __getattr__(name: str) -> Any:
    """``train_energy_model`` and ``energy_scope_of`` moved to :mod:`.training`; old imports keep working."""
    if name in ("train_energy_model", "energy_scope_of"):
        from pytest_irene.engine.predict import training

        return getattr(training, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "EnergyModel",
    "ModelFileWriteError",
    "MODEL_FORMAT",
    "SCHEMA_VERSION",
    "clear_cache",
]
