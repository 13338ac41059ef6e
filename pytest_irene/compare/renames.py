"""Rename matching: tell a renamed module apart from one removed and another added.

Renaming ``self.mlp`` to ``self.ffn`` changes no computation, yet every scope under
it disappears from the baseline and a new one appears. Scopes are only names, so
the match is on what they hold: a subtree that disappeared and a subtree that
appeared with the same shape (the same relative scopes), the same module types and
energies that did not move (:func:`~pytest_irene.compare.comparison.moved`) are the
same modules under a new name.

A pure function on energy maps (``{scope: ModuleEnergy}``, as
:func:`~pytest_irene.compare.baselines.tree_energies` and
:meth:`~pytest_irene.compare.baselines.BaselineEntry.energies` return them), so the
gate and ``irene compare`` on run files match renames the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pytest_irene.compare.baselines import ModuleEnergy
from pytest_irene.compare.comparison import Rename, moved


def _base(scope: str) -> str:
    """The scope without its repeat suffix (``block#2`` -> ``block``): children are named from it."""
    return scope.split("#", 1)[0]


def is_under(top: str, scope: str) -> bool:
    """Whether ``scope`` lies strictly below ``top`` (repeat suffixes ignored; ``""`` holds everything)."""
    base = _base(top)
    other = _base(scope)
    return other != base and (base == "" or other.startswith(base + "."))


def _parent(scope: str) -> str:
    base = _base(scope)
    return base.rsplit(".", 1)[0] if "." in base else ""


def _tops(scopes: Sequence[str]) -> list[str]:
    """The scopes of ``scopes`` with no ancestor in ``scopes``, in order."""
    return [s for s in scopes if not any(is_under(t, s) for t in scopes if t != s)]


def _subtree(top: str, scopes: Sequence[str]) -> dict[str, str]:
    """``{path relative to top: scope}`` for ``top`` (``""``) and the scopes below it."""
    cut = len(_base(top)) + 1
    out = {"": top}
    for s in scopes:
        if is_under(top, s):
            out[s[cut:]] = s
    return out


def _same(
    old: dict[str, str],
    new: dict[str, str],
    was: Mapping[str, ModuleEnergy],
    now: Mapping[str, ModuleEnergy],
    tolerance: float,
    min_delta: float,
) -> bool:
    if old.keys() != new.keys():
        return False
    for rel, o in old.items():
        a, b = was[o], now[new[rel]]
        if a.type != b.type or moved(a.energy_j, b.energy_j, tolerance=tolerance, min_delta=min_delta):
            return False
    return True


def find_renames(
    was: Mapping[str, ModuleEnergy],
    now: Mapping[str, ModuleEnergy],
    *,
    tolerance: float,
    min_delta: float,
) -> list[Rename]:
    """Subtrees of ``was`` missing from ``now`` that reappear in ``now`` under another scope.

    Only scopes present on one side are considered. Each disappeared top-level
    subtree is paired with at most one appeared subtree of the same shape, types
    and energies (within ``tolerance`` or ``min_delta``, the gate's own rule),
    preferring one under the same parent (``layers.3.mlp`` -> ``layers.3.ffn``, not
    ``layers.0.ffn``), then the first in tree order. Anything left unpaired is a
    genuine removal or addition.
    """
    removed = [s for s in was if s not in now]
    added = [s for s in now if s not in was]
    candidates = [(top, _subtree(top, added)) for top in _tops(added)]
    fits: dict[str, list[tuple[str, dict[str, str]]]] = {}
    olds: dict[str, dict[str, str]] = {}
    for top in _tops(removed):
        olds[top] = _subtree(top, removed)
        fits[top] = [(t, new) for t, new in candidates if _same(olds[top], new, was, now, tolerance, min_delta)]
    chosen: dict[str, tuple[str, dict[str, str]]] = {}
    taken: set[str] = set()
    for same_parent in (True, False):  # a sibling first, so it is not taken by a distant match
        for top, options in fits.items():
            if top in chosen:
                continue
            pick = next(
                (f for f in options if f[0] not in taken and (not same_parent or _parent(f[0]) == _parent(top))),
                None,
            )
            if pick is not None:
                chosen[top] = pick
                taken.add(pick[0])
    renames: list[Rename] = []
    for top, (new_top, new) in chosen.items():
        pairs = tuple((olds[top][rel], new[rel]) for rel in olds[top])
        renames.append(Rename(top, new_top, now[new_top].type, now[new_top].energy_j, pairs))
    order = {scope: i for i, scope in enumerate(was)}
    return sorted(renames, key=lambda r: order[r.old])
