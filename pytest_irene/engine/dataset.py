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
import math
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pytest_irene.atomic import atomic_append_lines, atomic_write_bytes
from pytest_irene.errors import DatasetError
from pytest_irene.engine.tree import ENERGY_SCOPES, LEVELS, EnergyNode, EnergyTree

FORMAT = "irene-tree/1"


def _open_text(path: Path):
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open("r", encoding="utf-8")


def _number(value: Any, path: str, line: int, field: str, *, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DatasetError(path, line, field, f"expected a finite number, got {value!r}")
    return float(value)


def _node_from_dict(obj: Any, path: str, line: int, where: str) -> EnergyNode:
    if not isinstance(obj, dict):
        raise DatasetError(path, line, where, f"expected an object, got {type(obj).__name__}")
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
    features = {
        str(k): _number(v, path, line, f"{where}.features.{k}") for k, v in feats.items()  # type: ignore[misc]
    }
    if features.get("bytes_per_element", 1.0) <= 0:  # type: ignore[operator]
        raise DatasetError(path, line, f"{where}.features.bytes_per_element", "expected an element size in bytes > 0")
    energy = _number(obj.get("energy_j"), path, line, f"{where}.energy_j", optional=True)
    if energy is not None and energy < 0:
        raise DatasetError(path, line, f"{where}.energy_j", f"expected energy >= 0, got {energy}")
    predicted = _number(obj.get("predicted_energy_j"), path, line, f"{where}.predicted_energy_j", optional=True)
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
        node.add_child(_node_from_dict(child, path, line, f"{where}.children[{i}]"))
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


def iter_trees(path: str | os.PathLike[str]) -> Iterator[EnergyTree]:
    """Yield the trees of a dataset file, validating each line."""
    p = Path(path)
    if not p.is_file():
        raise DatasetError(str(p), None, None, "no such dataset file (expected a .jsonl or .jsonl.gz file)")
    try:
        with _open_text(p) as handle:
            for number, text in enumerate(handle, start=1):
                if not text.strip():
                    continue
                try:
                    obj = json.loads(text)
                except json.JSONDecodeError as exc:
                    raise DatasetError(str(p), number, None, f"not valid JSON ({exc.msg} at column {exc.colno})") from None
                yield tree_from_dict(obj, str(p), number)
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise DatasetError(str(p), None, None, f"cannot read: {exc}") from None


def load_dataset(*paths: str | os.PathLike[str]) -> list[EnergyTree]:
    """All trees of one or more dataset files."""
    return [tree for path in paths for tree in iter_trees(path)]


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
