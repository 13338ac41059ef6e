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

from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence

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


class ScopesBelow:
    """Answers "does any of these scopes lie strictly below ``top``?" (:func:`is_under`) by binary search.

    The culprit rule asks it of every failing module: asked of every other failing
    module instead, a change that moves every expert of a 60-layer MoE (16,000 failing
    modules) took minutes. The bases of the scopes below ``top`` are exactly the sorted
    bases starting with ``top``'s base and a dot, which sit together in sorted order."""

    def __init__(self, scopes: Iterable[str]):
        self._bases = sorted({_base(s) for s in scopes})
        self._any_named = bool(self._bases) and self._bases[-1] != ""

    def __call__(self, top: str) -> bool:
        base = _base(top)
        if base == "":
            return self._any_named
        prefix = base + "."
        i = bisect_left(self._bases, prefix)
        return i < len(self._bases) and self._bases[i].startswith(prefix)


def _parent(scope: str) -> str:
    base = _base(scope)
    return base.rsplit(".", 1)[0] if "." in base else ""


def _top_bases(scopes: Iterable[str]) -> dict[str, str]:
    """``{base: base of its outermost ancestor among the bases}`` (itself for a top), in one sorted pass.

    Sorted by their dot-separated parts, the bases below a base follow it without a gap,
    so a base is under the last top seen or is a new top (``""`` holds everything);
    comparing every scope with every other (as :func:`is_under` pairs) was quadratic in
    the scopes of a renamed MoE's experts."""
    owner: dict[str, str] = {}
    top: list[str] | None = None
    for parts in sorted({tuple(_base(s).split(".")) for s in scopes}):
        if top is not None and (top == [""] or list(parts[: len(top)]) == top):
            owner[".".join(parts)] = ".".join(top)
        else:
            top = list(parts)
            owner[".".join(parts)] = ".".join(parts)
    return owner


def _subtrees(scopes: Sequence[str]) -> list[tuple[str, dict[str, str]]]:
    """``(top, {path relative to top: scope})`` for every scope of ``scopes`` with no ancestor in them,
    in order, its subtree holding ``top`` (as ``""``) and the scopes below it in order."""
    owner = _top_bases(scopes)
    below: dict[str, list[str]] = {}
    for s in scopes:
        base = _base(s)
        if owner[base] != base:
            below.setdefault(owner[base], []).append(s)
    out: list[tuple[str, dict[str, str]]] = []
    for top in scopes:
        base = _base(top)
        if owner[base] != base:
            continue
        cut = len(base) + 1
        tree = {"": top}
        for s in below.get(base, ()):
            tree[s[cut:]] = s
        out.append((top, tree))
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
    olds = dict(_subtrees(removed))
    anywhere: dict[tuple[tuple[str, str], ...], _Candidates] = {}
    siblings: dict[tuple[tuple[tuple[str, str], ...], str], _Candidates] = {}
    for top, new in _subtrees(added):  # only a subtree of the same shape and types can fit
        key = _signature(new, now)
        anywhere.setdefault(key, _Candidates()).items.append((top, new))
        siblings.setdefault((key, _parent(top)), _Candidates()).items.append((top, new))
    chosen: dict[str, tuple[str, dict[str, str]]] = {}
    taken: set[str] = set()
    for same_parent in (True, False):  # a sibling first, so it is not taken by a distant match
        for top, old in olds.items():
            if top in chosen:
                continue
            key = _signature(old, was)
            pool = siblings.get((key, _parent(top))) if same_parent else anywhere.get(key)
            pick = pool.first(taken, lambda new, old=old: _same(old, new, was, now, tolerance, min_delta)) if pool else None
            if pick is not None:
                chosen[top] = pick
                taken.add(pick[0])
    renames: list[Rename] = []
    for top, (new_top, new) in chosen.items():
        pairs = tuple((olds[top][rel], new[rel]) for rel in olds[top])
        renames.append(Rename(top, new_top, now[new_top].type, now[new_top].energy_j, pairs))
    order = {scope: i for i, scope in enumerate(was)}
    return sorted(renames, key=lambda r: order[r.old])


def _signature(tree: dict[str, str], energies: Mapping[str, ModuleEnergy]) -> tuple[tuple[str, str], ...]:
    """The shape and types of a subtree (``(relative path, type)`` pairs, sorted): two subtrees
    can be one renamed only when these are equal, so candidates are looked up by them instead
    of each disappeared subtree being tried against every appeared one."""
    return tuple(sorted((rel, energies[scope].type) for rel, scope in tree.items()))


class _Candidates:
    """Appeared subtrees of one signature in tree order, handing out the first untaken one that fits.

    Taken ones at the front are skipped once for all, so pairing thousands of renamed
    experts in order stays linear."""

    def __init__(self) -> None:
        self.items: list[tuple[str, dict[str, str]]] = []
        self._start = 0

    def first(self, taken: set[str], fits: Callable[[dict[str, str]], bool]) -> tuple[str, dict[str, str]] | None:
        """The first item not in ``taken`` whose subtree ``fits``, ``None`` if there is none."""
        while self._start < len(self.items) and self.items[self._start][0] in taken:
            self._start += 1
        for i in range(self._start, len(self.items)):
            top, tree = self.items[i]
            if top not in taken and fits(tree):
                return top, tree
        return None
