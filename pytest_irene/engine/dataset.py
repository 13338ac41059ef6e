"""Reading and writing ``irene-tree/1`` datasets (``.jsonl`` and ``.jsonl.gz``).

One JSON object per line, one measured model run per line (see
``calibration/datasets/FORMAT.md``). Validation is strict and every problem is
reported with the file, the line number and the field path, because datasets
are collected by hand on rigs and a silent skip would bias the regressors.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import warnings
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pytest_irene.atomic import atomic_append_lines, atomic_write_bytes
from pytest_irene.errors import DatasetError, IreneWarning
from pytest_irene.validate import DuplicateKeyError, UnreadableNumberError, hardware_problem, is_finite_number, load_user_json
from pytest_irene.engine.tree import (
    ENERGY_SCOPES,
    LEVELS,
    MODEL_FEATURES,
    OPTIONAL_RESOURCE_FEATURES,
    RESOURCE_FEATURES,
    EnergyNode,
    EnergyTree,
)

FORMAT = "irene-tree/1"
#: Features that are counts, sizes, percentages, clocks, times or energies: never negative.
NON_NEGATIVE_FEATURES: tuple[str, ...] = (*MODEL_FEATURES, *RESOURCE_FEATURES, *OPTIONAL_RESOURCE_FEATURES)


#: The largest feature or energy a tree may hold: far beyond any one call (a forward of a
#: trillion-parameter model over a million tokens is ~1e18 flops), yet squares and products of
#: such values stay finite in a fit (a hand-edited 1e160 overflowed to NaN weights at write time).
MAX_VALUE = 1e30


def _open_text(path: Path):
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open("r", encoding="utf-8")


def _number(value: Any, path: str, line: int, field: str, *, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if not is_finite_number(value):
        raise DatasetError(path, line, field, f"expected a finite number, got {value!r:.60}")
    return float(value)


class _Where:
    """A node's field path (``root.children[3].children[0]``), spelled out only when an error names it.

    The path and the field names under it were formatted for every node and feature of a tree,
    a third of reading an 80,000-node run file (a 60-layer MoE with its experts listed)."""

    __slots__ = ("parent", "index")

    def __init__(self, parent: _Where | str, index: int) -> None:
        self.parent, self.index = parent, index

    def __str__(self) -> str:
        steps: list[str] = []
        at: _Where | str = self
        while isinstance(at, _Where):
            steps.append(f".children[{at.index}]")
            at = at.parent
        return at + "".join(reversed(steps))

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


def _optional_number(obj: dict[str, Any], key: str, path: str, line: int, where: _Where | str) -> float | None:
    """``obj[key]`` as a float, ``None`` when absent or null; :func:`_number`'s error (naming the field) otherwise."""
    value = obj.get(key)
    if value is None:
        return None
    return float(value) if is_finite_number(value) else _number(value, path, line, f"{where}.{key}")


def _node_from_dict(obj: Any, path: str, line: int, where: _Where | str, depth: int = 0) -> EnergyNode:
    if depth > MAX_DEPTH:
        raise DatasetError(path, line, str(where)[:60] + "...", f"nested deeper than {MAX_DEPTH} levels; not a model tree")
    if not isinstance(obj, dict):
        raise DatasetError(path, line, str(where), f"expected an object, got {type(obj).__name__}")
    for key in ("scope", "type", "level", "features", "children"):
        if key not in obj:
            raise DatasetError(path, line, f"{where}.{key}", "missing")
    for key in ("scope", "type"):
        if not isinstance(obj[key], str):
            raise DatasetError(path, line, f"{where}.{key}", f"expected a string, got {obj[key]!r}")
    if obj["level"] not in LEVELS:
        raise DatasetError(path, line, f"{where}.level", f"expected one of {list(LEVELS)}, got {obj['level']!r}")
    feats = obj["features"]
    if not isinstance(feats, dict):
        raise DatasetError(path, line, f"{where}.features", "expected an object")
    features = {  # the field path is formatted only for a bad value (see _Where)
        str(k): float(v) if is_finite_number(v) else _number(v, path, line, f"{where}.features.{k}")  # type: ignore[misc]
        for k, v in feats.items()
    }
    negative = None
    if features and min(features.values()) < 0:  # type: ignore[type-var]
        negative = next((k for k in NON_NEGATIVE_FEATURES if (features.get(k) or 0.0) < 0), None)  # type: ignore[operator]
    if negative is not None:  # a regressor would learn from it; only a broken sampler or a hand edit writes one
        raise DatasetError(path, line, f"{where}.features.{negative}", f"expected a value >= 0, got {features[negative]}")
    if features and max(features.values()) > MAX_VALUE:  # type: ignore[type-var]
        key = max(features, key=features.__getitem__)  # type: ignore[arg-type]
        raise DatasetError(path, line, f"{where}.features.{key}",
                           f"expected at most {MAX_VALUE:g} (one call's count), got {features[key]:g}")
    if features.get("bytes_per_element", 1.0) <= 0:  # type: ignore[operator]
        raise DatasetError(path, line, f"{where}.features.bytes_per_element", "expected an element size in bytes > 0")
    energy = _optional_number(obj, "energy_j", path, line, where)
    predicted = _optional_number(obj, "predicted_energy_j", path, line, where)
    for key, value in (("energy_j", energy), ("predicted_energy_j", predicted)):  # a run file's compare, export
        if value is not None and value < 0:  # and gate would print "-120 %" changes from a hand edit
            raise DatasetError(path, line, f"{where}.{key}", f"expected energy >= 0, got {value}")
        if value is not None and value > MAX_VALUE:
            raise DatasetError(path, line, f"{where}.{key}", f"expected at most {MAX_VALUE:g} J, got {value:g}")
    notes = obj.get("notes") or {}
    if not isinstance(notes, dict):
        raise DatasetError(path, line, f"{where}.notes", "expected an object")
    node = EnergyNode(
        scope=obj["scope"],
        type=obj["type"],
        level=obj["level"],
        features=features,  # type: ignore[arg-type]
        energy_j=energy,
        predicted_energy_j=predicted,
        notes=dict(notes),
    )
    children = obj["children"]
    if not isinstance(children, list):
        raise DatasetError(path, line, f"{where}.children", "expected a list")
    for i, child in enumerate(children):
        node.add_child(_node_from_dict(child, path, line, _Where(where, i), depth + 1))
    if node.children and node.level == "ml":
        raise DatasetError(path, line, f"{where}.level", "an 'ml' node (a leaf) cannot have children")
    return node


def tree_from_dict(obj: Any, path: str = "<memory>", line: int = 1) -> EnergyTree:
    """Validate one ``irene-tree/1`` object and build the tree."""
    if not isinstance(obj, dict):
        raise DatasetError(path, line, None, f"expected a JSON object, got {type(obj).__name__}")
    if obj.get("format") != FORMAT:
        raise DatasetError(path, line, "format", f"expected {FORMAT!r}, got {obj.get('format')!r}")
    for key in ("batch_size", "seq_len"):
        value = obj.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise DatasetError(path, line, key, f"expected a positive integer, got {value!r}")
    for key in ("device", "model_name"):
        if not isinstance(obj.get(key, ""), str):
            raise DatasetError(path, line, key, f"expected a string, got {obj.get(key)!r}")
    if "root" not in obj:
        raise DatasetError(path, line, "root", "missing")
    meta = obj.get("meta") or {}
    if not isinstance(meta, dict):
        raise DatasetError(path, line, "meta", f"expected an object, got {type(meta).__name__}")
    if meta.get("energy_scope", ENERGY_SCOPES[0]) not in ENERGY_SCOPES:
        raise DatasetError(
            path, line, "meta.energy_scope", f"expected one of {list(ENERGY_SCOPES)} (what energy_j covers), got {meta['energy_scope']!r}"
        )
    host = meta.get("host")
    if host is not None:  # the rig's fingerprint: training copies it into the model file's hardware
        if not isinstance(host, dict):
            raise DatasetError(path, line, "meta.host", f"expected an object, got {type(host).__name__}")
        problem = hardware_problem(host)
        if problem is not None:
            raise DatasetError(path, line, f"meta.host.{problem[0]}", problem[1])
    root = _node_from_dict(obj["root"], path, line, "root")
    if root.level != "model":
        raise DatasetError(path, line, "root.level", f"expected 'model', got {root.level!r}")
    tree = EnergyTree(
        root=root,
        model_name=obj.get("model_name", ""),
        batch_size=obj["batch_size"],
        seq_len=obj["seq_len"],
        profile=obj.get("device", ""),
        meta=dict(meta),
    )
    tree.set_tree_features()
    return tree


#: Deepest node nesting a dataset line may have: real models are a few dozen levels deep,
#: and a deeper (hostile or broken) line must not end in a ``RecursionError``.
MAX_DEPTH = 200


class DuplicateTreesWarning(IreneWarning):
    """A dataset holds the same tree (an identical line) more than once."""


def _numbered_trees(p: Path) -> Iterator[tuple[int, str, EnergyTree]]:
    """``(line number, line text, tree)`` for every non-empty line of one dataset file."""
    if not p.is_file():
        raise DatasetError(str(p), None, None, "no such dataset file (expected a .jsonl or .jsonl.gz file)")
    number = 0
    try:
        with _open_text(p) as handle:
            for number, text in enumerate(handle, start=1):
                if not text.strip():
                    continue
                yield number, text.strip(), tree_from_dict(_parse_line(text, str(p), number), str(p), number)
    except (OSError, EOFError, UnicodeDecodeError, zlib.error) as exc:
        # gzip reads ahead: the corrupt block starts after the last good line
        where = f"after line {number}" if number else "at the start"
        raise DatasetError(str(p), number + 1, None, f"cannot read ({where}): {exc}; the file is corrupt or truncated") from None


def _parse_line(text: str, path: str, number: int) -> Any:
    try:
        obj = load_user_json(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(path, number, None, f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    except UnreadableNumberError as exc:
        raise DatasetError(path, number, None, str(exc)) from None
    except DuplicateKeyError as exc:
        raise DatasetError(path, number, None, f"field {exc} named twice in one JSON object (which value is meant?)") from None
    except RecursionError:
        raise DatasetError(path, number, None, f"nested too deep to be a model tree (over {MAX_DEPTH} levels)") from None
    return obj


def iter_trees(path: str | os.PathLike[str]) -> Iterator[EnergyTree]:
    """Yield the trees of a dataset file, validating each line."""
    for _, _, tree in _numbered_trees(Path(path)):
        yield tree


def load_dataset(*paths: str | os.PathLike[str]) -> list[EnergyTree]:
    """All trees of one or more dataset files.

    A line repeated verbatim (a run appended twice, a file passed twice) weighs
    that run double in training, and a repeated measurement never gives the same
    digits: a :class:`DuplicateTreesWarning` says how many copies there are and
    where, so they are not trained on silently. The trees are returned as stored.
    """
    trees: list[EnergyTree] = []
    first_seen: dict[bytes, str] = {}  # digest of the line -> where it first appeared
    copies: list[str] = []
    for path in paths:
        for number, text, tree in _numbered_trees(Path(path)):
            where, digest = f"{path}:{number}", hashlib.sha256(text.encode("utf-8")).digest()
            if digest in first_seen:
                copies.append(f"{where} repeats {first_seen[digest]}")
            else:
                first_seen[digest] = where
            trees.append(tree)
    if copies:
        more = f" and {len(copies) - 1} more" if len(copies) > 1 else ""
        warnings.warn(
            DuplicateTreesWarning(
                f"{len(copies)} duplicate tree(s) ({copies[0]}{more}): each copy weighs that run again in "
                f"training; {len(first_seen)} of {len(trees)} trees are distinct"
            ),
            stacklevel=2,
        )
    return trees


#: Hex digits of a tree fingerprint: 64 bits, no collision among millions of trees.
FINGERPRINT_HEX_DIGITS = 16


def tree_fingerprint(tree: EnergyTree) -> str:
    """A short digest of what was *measured*: the model, the input size and every node's
    scope and measured energy. Predictions, notes and line formatting do not enter it, so
    an energy model can record the trees it was trained on (``dataset.tree_fingerprints``)
    and ``irene evaluate`` can tell which of any file's trees are that training data, even
    from a subset or a reordered copy of the files."""
    measured = [tree.model_name, tree.batch_size, tree.seq_len, [[n.scope, n.energy_j] for n in tree.walk()]]
    text = json.dumps(measured, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:FINGERPRINT_HEX_DIGITS]


def dumps_tree(tree: EnergyTree) -> str:
    """One ``irene-tree/1`` line (no newline)."""
    return json.dumps(tree.to_dict(), separators=(",", ":"), allow_nan=False)


def write_dataset(path: str | os.PathLike[str], trees: Iterable[EnergyTree]) -> None:
    """Write trees to a new dataset file atomically (gzip when the name ends in ``.gz``)."""
    p = Path(path)
    data = "".join(dumps_tree(t) + "\n" for t in trees).encode("utf-8")
    atomic_write_bytes(p, gzip.compress(data, mtime=0) if p.suffix == ".gz" else data)


def append_trees(path: str | os.PathLike[str], trees: Iterable[EnergyTree]) -> None:
    """Append trees to a dataset file atomically; every earlier line is kept."""
    atomic_append_lines(path, [dumps_tree(t) for t in trees])


def dataset_hash(*paths: str | os.PathLike[str]) -> str:
    """SHA-256 of the decompressed content of the files, so a model records what it was trained on."""
    digest = hashlib.sha256()
    for path in paths:
        p = Path(path)
        digest.update(gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes())
    return "sha256:" + digest.hexdigest()
