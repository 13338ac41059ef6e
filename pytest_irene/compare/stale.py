"""Stale baselines: stored entries of tests (or calls) that no longer exist.

Renaming or deleting a test leaves its baseline behind in ``.irene/``, where
it is never compared again and silently rots. A baseline is stale when

- its test module is gone from the rootdir;
- its test module was collected in full this session (not narrowed to some
  node ids on the command line, not a ``--lf`` run) and the test is neither
  collected nor deselected (``-k``/``-m`` keep their tests' baselines), nor
  still defined in the module's source: a conftest that drops items without
  deselecting them, or any plugin that filters collection, must not make a
  living test look deleted. Only a parametrized id whose function was
  collected with other ids is judged by collection alone (a removed case);
- its test passed this session without making the call with that label.

Listing is always safe; ``--irene-save --irene-prune`` drops them.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pytest_irene.compare.baselines import BaselineError
from pytest_irene.compare.baseline_store import BaselineStore


@dataclass(frozen=True)
class StaleBaseline:
    """One stored entry that no test makes any more."""

    nodeid: str
    label: str
    file: Path
    """The baseline file holding it."""
    reason: str
    """Why it is stale, for the summary."""


def defined_tests(module: Path) -> set[str] | None:
    """``func`` and ``Class::method`` names defined in a test module's source (``None``
    when it cannot be read or parsed: then only collection decides)."""
    try:
        tree = ast.parse(module.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, SyntaxError, ValueError):
        return None
    names: set[str] = set()
    functions = (ast.FunctionDef, ast.AsyncFunctionDef)
    for node in tree.body:
        if isinstance(node, functions):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef):
            names.update(f"{node.name}::{item.name}" for item in node.body if isinstance(item, functions))
    return names


def _function_of(nodeid: str) -> str:
    """``mod.py::Class::test[case]`` -> ``Class::test``: the definition a node id comes from."""
    return nodeid.split("::", 1)[1].split("[", 1)[0] if "::" in nodeid else ""


def find_stale(
    store: BaselineStore,
    rootdir: Path,
    known: set[str],
    passed_calls: dict[str, set[str]],
    narrowed: Iterable[str] = (),
) -> list[StaleBaseline]:
    """The stale entries of ``store``.

    ``known``: node ids collected or deselected this session. ``passed_calls``:
    for each test whose call phase passed, the labels it recorded. ``narrowed``:
    test modules given with ``::`` node ids on the command line (only part of
    them was collected, so absence says nothing).
    """
    seen = {nodeid.split("::", 1)[0] for nodeid in known} - set(narrowed)
    out: list[StaleBaseline] = []
    for path in store.files():
        rel = path.relative_to(store.directory)
        if rel.parts and rel.parts[0] == "_outside":
            continue
        module = rel.with_suffix(".py").as_posix()
        try:
            tests = store.tests_in(path)
        except BaselineError:
            continue  # a corrupt file is reported by the gate; never prune from it
        gone = not (rootdir / module).exists()
        defined = None if gone or module not in seen else defined_tests(rootdir / module)
        for nodeid in sorted(tests):
            for label in sorted(tests[nodeid]):
                reason = ""
                if gone:
                    reason = f"test module {module} no longer exists"
                elif module in seen and nodeid not in known and not _still_defined(nodeid, defined, known):
                    reason = "test no longer exists"
                elif nodeid in passed_calls and label not in passed_calls[nodeid]:
                    reason = "the test passed without making this call"
                if reason:
                    out.append(StaleBaseline(nodeid, label, path, reason))
    return out


def _still_defined(nodeid: str, defined: set[str] | None, known: set[str]) -> bool:
    """Whether the test behind ``nodeid`` is still in its module's source. A parametrized
    case counts as removed when its function was collected this session with other cases."""
    function = _function_of(nodeid)
    if defined is None or function not in defined:
        return False
    module = nodeid.split("::", 1)[0]
    if "[" in nodeid:
        return not any(_function_of(k) == function and k.split("::", 1)[0] == module for k in known)
    return True


def stale_note(stale: list[StaleBaseline], pruned: bool, shown: int = 5) -> str:
    """The summary line: what is stale (or was pruned), and how to drop it."""
    items = ", ".join(f"{s.nodeid} [{s.label}] ({s.reason})" for s in stale[:shown])
    more = f" and {len(stale) - shown} more" if len(stale) > shown else ""
    if pruned:
        return f"irene: pruned {len(stale)} stale baseline(s): {items}{more}"
    return (
        f"irene: {len(stale)} stale baseline(s) of tests that no longer exist: {items}{more}; "
        "drop them with --irene-save --irene-prune"
    )
