"""Baseline storage: what each wrapped call predicted last time it was accepted.

One JSON file per test module under the baseline directory (``.irene/`` at the
rootdir by default), mirroring the module's path: ``tests/test_models.py`` is
stored in ``.irene/tests/test_models.json``. Files are meant to live in git, so
they are indented, key-sorted and end with a newline: an unchanged model gives
an unchanged file and a changed module shows up as a one-line diff.

Layout (``irene-baselines/2``)::

    {"format": "irene-baselines/2",
     "tests": {"<node id>": {"<label>": {
         "profile": "irene-pc1", "features": "model",
         "inputs": {"batch_size": 8, "seq_len": 64},
         "model_name": "BertModel", "energy_model": "3f2a9c01b7de", "leaves": true,
         "root": {"type": "BertModel", "energy_j": 1.23},
         "modules": {"<scope>": {"type": "BertLayer", "energy_j": 0.4}, ...}}}}}

``modules`` holds every ``nn.Module`` the user can name, leaf modules included
(``lm_head``, a ``Conv2d`` stem, each ``Linear``); functional primitives
(``...matmul#0``) are not modules and are left out. ``irene-baselines/1`` files,
which stored non-leaf modules only, still load: their entries read with
``leaves: false``, so their leaf modules are not reported as added, and the next
``--irene-save`` rewrites them as ``/2`` with the leaves.

Only the pytest controller writes (xdist workers hand their entries over), and
every write re-reads the file and merges under a lock, so concurrent sessions
sharing a directory lose nothing. A file that is not valid JSON or not in this
format is reported and never overwritten.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_irene.errors import IreneError
from pytest_irene.engine.tree import EnergyTree, scope_label
from pytest_irene.validate import (
    DuplicateKeyError,
    UnreadableNumberError,
    find_non_finite,
    is_finite_number,
    load_user_json,
    special_file,
)

FORMAT = "irene-baselines/2"
#: Formats this version reads: ``/1`` entries stored non-leaf modules only.
READABLE_FORMATS: tuple[str, ...] = ("irene-baselines/1", FORMAT)


class BaselineError(IreneError):
    """A baseline file is unreadable, corrupt or not an ``irene-baselines/1`` or ``/2`` file."""


@dataclass(frozen=True)
class ModuleEnergy:
    """The stored energy of one module (or of the root)."""

    type: str
    """Class name of the module (``BertIntermediate``)."""
    energy_j: float
    """Predicted energy of one execution, joules."""


@dataclass(frozen=True)
class BaselineEntry:
    """What one wrapped call (test node id + label) predicted when its baseline was saved."""

    profile: str
    """Energy model profile the prediction used (``irene-pc1`` or a model file path)."""
    features: str
    """Feature set: ``model`` or ``all``."""
    inputs: dict[str, int]
    """Input sizes of the call: ``batch_size`` and ``seq_len``."""
    model_name: str
    """Architecture or class name of the model, for humans reading the file."""
    root: ModuleEnergy
    """The whole model."""
    modules: dict[str, ModuleEnergy] = field(default_factory=dict)
    """Every module node but the root, keyed by scope (repeated scopes get ``#2``, ``#3``...)."""
    energy_model: str = ""
    """Version of the energy model file (first 12 hex digits of its SHA-256): a retrained
    model predicts differently, so its baselines are not compared; ``""`` when unknown."""
    leaves: bool = True
    """Whether leaf modules (``Linear``, ``lm_head``...) are stored; ``False`` for entries
    saved as ``irene-baselines/1``, which kept non-leaf modules only."""

    def energies(self) -> dict[str, ModuleEnergy]:
        """Root (scope ``""``) and modules in one mapping, the shape :func:`tree_energies` returns."""
        return {"": self.root, **self.modules}

    def to_dict(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "features": self.features,
            "inputs": dict(self.inputs),
            "model_name": self.model_name,
            "root": {"type": self.root.type, "energy_j": self.root.energy_j},
            "modules": {s: {"type": m.type, "energy_j": m.energy_j} for s, m in self.modules.items()},
            "energy_model": self.energy_model,
            "leaves": self.leaves,
        }


#: Fields of a model file's ``dataset`` that never change a prediction and were added after
#: files existed (``irene evaluate``'s training-tree fingerprints, the element sizes of the
#: training ranges): left out of the version, so recording them keeps stored baselines valid.
_UNVERSIONED_DATASET_FIELDS: tuple[tuple[str, ...], ...] = (("tree_fingerprints",), ("ranges", "element_bytes"))


def energy_model_version(path: str | os.PathLike[str]) -> str:
    """The version stored with baselines: first 12 hex digits of the model file's SHA-256.

    The :data:`_UNVERSIONED_DATASET_FIELDS` are left out: such a file is hashed as our writer
    would write it without them (the bytes of a file from before they existed)."""
    data = Path(path).read_bytes()
    keys = [k for k in _UNVERSIONED_DATASET_FIELDS if f'"{k[-1]}"'.encode() in data]
    if keys:
        import json

        from pytest_irene.engine.predict.model_file import dump_json

        try:
            obj = json.loads(data)
            for key in keys:
                parent = obj["dataset"]
                for part in key[:-1]:
                    parent = parent[part]
                parent.pop(key[-1], None)
            data = (dump_json(obj) + "\n").encode("utf-8")
        except (ValueError, KeyError, TypeError, AttributeError):
            pass  # not our layout: the bytes as they are
    return hashlib.sha256(data).hexdigest()[:12]


def tree_energies(tree: EnergyTree, *, leaves: bool = True) -> dict[str, ModuleEnergy]:
    """Predicted energy of the root (scope ``""``) and every module node, in tree order.

    Leaf modules (``lm_head``, a ``Conv2d`` stem) are included unless ``leaves`` is
    false (what ``irene-baselines/1`` stored); functional primitives never are.
    A module executed more than once (weight sharing, a loop) keeps one key per
    execution: ``scope``, ``scope#2``, ... so nothing is summed away.
    """
    out: dict[str, ModuleEnergy] = {}
    last: dict[str, int] = {}  # per scope, the repeat number it last got: a block shared 1,000 times is not 1,000² probes
    for node in tree.walk():
        if not node.is_module or (node.level == "ml" and not leaves):
            continue
        energy_j = node.energy_of("predicted")
        if energy_j is None:
            raise BaselineError(f"node {scope_label(node.scope)!r} ({node.type}) has no predicted energy")
        key, n = node.scope, last.get(node.scope, 1)
        if n > 1:
            key = f"{node.scope}#{n}"
        while key in out:
            n += 1
            key = f"{node.scope}#{n}"
        last[node.scope] = n
        out[key] = ModuleEnergy(type=node.type, energy_j=float(energy_j))
    return out


#: The ``inputs`` key holding the elements of the call's main input (:func:`~pytest_irene.engine.inputs.main_input_elements`):
#: not an input size that must match, but what tells a model change (the same pixels cut into
#: other patches) from a test's new input size, where both change the tokens per sample.
INPUT_ELEMENTS_KEY = "input_elements"
#: The ``inputs`` key holding the elements of every input after the main one
#: (:func:`~pytest_irene.engine.inputs.other_input_elements`): when it moved, the test changed its
#: inputs (a CLIP's image size) though the main input's batch and tokens did not.
OTHER_INPUT_ELEMENTS_KEY = "other_input_elements"
#: The ``inputs`` key of a generation's ``max_new_tokens``: not an input size that stops the
#: comparison either (a longer generation is gated; the gate names the length change).
GENERATION_LENGTH_KEY = "new_tokens"
#: Keys of ``tree.meta`` recorded in an entry's ``inputs`` that are not the batch and tokens.
NOTED_INPUT_KEYS = (INPUT_ELEMENTS_KEY, OTHER_INPUT_ELEMENTS_KEY, GENERATION_LENGTH_KEY)


def entry_from_tree(tree: EnergyTree, *, profile: str, features: str, energy_model: str = "") -> BaselineEntry:
    """The baseline entry a predicted tree would be stored as."""
    energies = tree_energies(tree)
    root = energies.pop("")
    inputs = {"batch_size": int(tree.batch_size), "seq_len": int(tree.seq_len)}
    for key in NOTED_INPUT_KEYS:
        value = tree.meta.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            inputs[key] = value
    return BaselineEntry(
        profile=profile,
        features=features,
        inputs=inputs,
        model_name=tree.model_name,
        root=root,
        modules=energies,
        energy_model=energy_model,
    )


# -- validation ----------------------------------------------------------------------------


def _module_energy(obj: Any, path: Path, where: str, *, root: bool = False) -> ModuleEnergy:
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        raise BaselineError(f"{path}: {where}: expected {{'type': str, 'energy_j': number}}, got {obj!r}")
    energy = obj.get("energy_j")
    if not is_finite_number(energy):
        raise BaselineError(f"{path}: {where}.energy_j: expected a finite number, got {energy!r}")
    if energy < 0 or (root and energy == 0):
        # a predicted energy is positive: a negative one would show as "-100 %" changes
        expected = "a positive number of joules" if root else "a number of joules >= 0"
        raise BaselineError(
            f"{path}: {where}.energy_j: expected {expected}, got {energy!r}; the file was edited or is corrupt: "
            "fix it or delete the entry, then run with --irene-save"
        )
    return ModuleEnergy(type=obj["type"], energy_j=float(energy))


def entry_from_dict(obj: Any, path: Path, where: str, *, leaves: bool = True) -> BaselineEntry:
    """Validate one stored entry; :class:`BaselineError` names ``path`` and the field ``where``.

    ``leaves`` is what an entry without a ``leaves`` field means (``False`` in a ``/1`` file).
    """
    if not isinstance(obj, dict):
        raise BaselineError(f"{path}: {where}: expected an object, got {type(obj).__name__}")
    for key in ("profile", "features", "model_name"):
        if not isinstance(obj.get(key), str):
            raise BaselineError(f"{path}: {where}.{key}: expected a string, got {obj.get(key)!r}")
    inputs = obj.get("inputs")
    if not isinstance(inputs, dict) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in inputs.values()
    ):  # batch and sequence sizes, new tokens: never negative
        raise BaselineError(f"{path}: {where}.inputs: expected an object of integers >= 0, got {inputs!r:.120}")
    version = obj.get("energy_model", "")
    if not isinstance(version, str):
        raise BaselineError(f"{path}: {where}.energy_model: expected a string, got {version!r}")
    modules = obj.get("modules")
    if not isinstance(modules, dict):
        raise BaselineError(f"{path}: {where}.modules: expected an object, got {modules!r}")
    has_leaves = obj.get("leaves", leaves)
    if not isinstance(has_leaves, bool):
        raise BaselineError(f"{path}: {where}.leaves: expected true or false, got {has_leaves!r}")
    return BaselineEntry(
        profile=obj["profile"],
        features=obj["features"],
        inputs=dict(inputs),
        model_name=obj["model_name"],
        root=_module_energy(obj.get("root"), path, f"{where}.root", root=True),
        modules={str(s): _module_energy(m, path, f"{where}.modules[{s!r}]") for s, m in modules.items()},
        energy_model=version,
        leaves=has_leaves,
    )


def read_baseline_file(path: str | os.PathLike[str]) -> dict[str, dict[str, BaselineEntry]]:
    """Read and validate one baseline file: ``{node id: {label: entry}}``; ``{}`` if it does not exist.

    Raises :class:`BaselineError` naming the file for anything else than a valid
    ``irene-baselines/1`` or ``/2`` document, so that a corrupt or foreign file is
    never mistaken for "no baselines" and overwritten.
    """
    return parse_document(Path(path))[1]


def parse_document(p: Path) -> tuple[dict[str, Any], dict[str, dict[str, BaselineEntry]]]:
    """The raw document (unknown fields included) and its validated entries; empty if no file."""
    try:
        special = special_file(p)
        if special:
            raise BaselineError(f"{p}: {special}; expected a baseline JSON file")
        if not p.exists():  # raises, not False, when a directory above cannot be searched
            return {"format": FORMAT, "tests": {}}, {}
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BaselineError(f"{p}: cannot read baseline file: {exc}") from exc
    try:
        doc = load_user_json(text)
    except UnreadableNumberError as exc:
        raise BaselineError(f"{p}: corrupt baseline file ({exc}); fix or delete it, then run with --irene-save") from None
    except DuplicateKeyError as exc:
        raise BaselineError(f"{p}: {exc} is named twice in one JSON object (which value is meant?); fix the "
                            "file, or delete it and run with --irene-save") from None
    except (json.JSONDecodeError, RecursionError) as exc:
        where = f" at line {exc.lineno}, column {exc.colno}: {exc.msg}" if isinstance(exc, json.JSONDecodeError) else ": nested too deep"
        raise BaselineError(
            f"{p}: corrupt baseline file (invalid JSON{where}); fix or delete it, then run with --irene-save"
        ) from exc
    if not isinstance(doc, dict) or doc.get("format") not in READABLE_FORMATS:
        found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        expected = " or ".join(repr(f) for f in READABLE_FORMATS)
        if isinstance(found, str) and found.startswith("irene-baselines/"):
            raise BaselineError(
                f"{p}: a baseline file of format {found!r}, newer than this pytest-irene reads ({expected}): "
                "upgrade pytest-irene (pip install -U pytest-irene); the file is left untouched"
            )
        raise BaselineError(
            f"{p}: not a pytest-irene baseline file (expected format {expected}, found {found!r}); "
            "it is left untouched: move it away or point --irene-baselines elsewhere"
        )
    tests = doc.get("tests")
    if not isinstance(tests, dict):
        raise BaselineError(f"{p}: 'tests': expected an object, got {tests!r}")
    leaves = doc["format"] != "irene-baselines/1"
    out: dict[str, dict[str, BaselineEntry]] = {}
    for nodeid, labels in tests.items():
        if not isinstance(labels, dict):
            raise BaselineError(f"{p}: tests[{nodeid!r}]: expected an object of labels, got {labels!r}")
        out[nodeid] = {
            label: entry_from_dict(entry, p, f"tests[{nodeid!r}][{label!r}]", leaves=leaves)
            for label, entry in labels.items()
        }
    bad = find_non_finite(doc)
    if bad is not None:  # in a field the entries do not read: kept on save, which could not then write it
        raise BaselineError(f"{p}: {bad}: NaN or infinite number (not JSON); fix or delete it, then run with --irene-save")
    return doc, out


def dumps_baselines(tests: dict[str, dict[str, BaselineEntry]]) -> str:
    """The file text: indented, keys sorted, trailing newline (diffs well in git)."""
    return dumps_document(
        {
            "format": FORMAT,
            "tests": {nodeid: {label: e.to_dict() for label, e in labels.items()} for nodeid, labels in tests.items()},
        }
    )


def dumps_document(doc: dict[str, Any]) -> str:
    text = json.dumps(doc, indent=1, sort_keys=True, allow_nan=False)
    # one line per module ({"energy_j": ..., "type": ...}): a changed module is a one-line diff
    return _INNERMOST_OBJECT.sub(lambda m: "{" + _WS.sub(" ", m.group(1)).strip() + "}", text) + "\n"


def merge_entry(old: Any, entry: BaselineEntry) -> dict[str, Any]:
    """The stored form of ``entry``, keeping fields of the ``old`` stored entry this version does not know."""
    new = entry.to_dict()
    kept = {k: v for k, v in old.items() if k not in new} if isinstance(old, dict) else {}
    return {**kept, **new}


#: A JSON object holding no object or array (JSON strings never contain raw newlines).
_INNERMOST_OBJECT = re.compile(r"\{\n([^{}\[\]]*?)\n\s*\}")
_WS = re.compile(r"\n\s*")
