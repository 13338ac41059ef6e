"""Shards of one run as one run file (``irene merge``): CI suites split over several jobs.

A suite split with pytest-split or a CI matrix writes one run file per shard, but
``irene compare`` and ``--irene-compare`` take one run per side. The shards are one
run when they were made from the same code with the same gate: so merging refuses
shards of different commits, pytest-irene versions, profiles, feature modes or gate
settings, and a call found in two shards with different energies (with the same
energy it is kept once, as ``irene export`` does). The shards' machines may differ
(CI runners vary) as long as every call was predicted from model features, which do
not depend on the machine; resource features measured on different machines are
not one run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from pytest_irene.compare.records import CallRecord
from pytest_irene.compare.runfile import RunFile
from pytest_irene.engine.feature_sets import ALL
from pytest_irene.errors import UsageError


def merge_runs(shards: Sequence[tuple[str, RunFile]]) -> tuple[RunFile, list[str]]:
    """One run of ``shards`` (``(path, run)`` pairs, in the order given), and notes to show the user."""
    if not shards:
        raise UsageError("irene merge: expected at least one run file")
    first_path, first = shards[0]
    for path, run in shards[1:]:
        for what, mine, theirs in (
            ("commit", _sha(first), _sha(run)),
            ("pytest-irene version", first.version, run.version),
            ("profile (--irene-profile)", first.profile, run.profile),
            ("feature mode (--irene-features)", first.feature_mode, run.feature_mode),
            ("gate settings", _gate_settings(first), _gate_settings(run)),
        ):
            if mine != theirs:
                raise UsageError(
                    f"{first_path} and {path}: different {what} ({_shown(mine)} and {_shown(theirs)}); shards of one run "
                    "are made from the same code with the same options: merge the run files of one CI run"
                )
    records: dict[tuple[str, str], tuple[CallRecord, str]] = {}
    for path, run in shards:
        for rec in run.records:
            seen = records.get(rec.key)
            if seen is None:
                records[rec.key] = (rec, path)
            elif seen[0].tree.total_j != rec.tree.total_j:
                raise UsageError(
                    f"{rec.nodeid} [{rec.label}] is in {seen[1]} and {path} with different energies; a call belongs to "
                    "one shard (was the suite split twice, or are these different runs?)"
                )
    notes: list[str] = []
    host = first.host
    hosts = {path: run.host for path, run in shards if run.host}
    if any(h != host for h in hosts.values()):
        measured = sorted({path for rec, path in records.values() if rec.features == ALL})
        if measured:
            raise UsageError(
                f"{', '.join(sorted(hosts))}: the shards ran on different machines, and {', '.join(measured)} hold "
                "calls predicted from resource features (measured on that machine): they are not one run"
            )
        host = {}
        notes.append("the shards ran on different machines: the merged run records none (its calls are "
                     "predicted from model features, which do not depend on the machine)")
    commit = first.commit
    if commit is not None and any(run.commit is not None and run.commit.dirty for _, run in shards):
        commit = dataclasses.replace(commit, dirty=True)  # one shard's uncommitted changes make the run's
    # in (test, label) order: the shards' own collection orders do not make one, and the file must not
    # depend on the order the shards were given in
    ordered = sorted(records.values(), key=lambda pair: (pair[0].nodeid, pair[0].label))
    settings = dict(first.settings)
    if any(FEATURE_MODES_KEY in run.settings for _, run in shards):
        settings[FEATURE_MODES_KEY] = _feature_modes(shards)
    merged = RunFile(records=[rec for rec, _ in ordered], host=dict(host), commit=commit,
                     version=first.version, profile=first.profile, feature_mode=first.feature_mode,
                     settings=settings)
    return merged, notes


#: The settings entry holding the feature set each profile was decided to use, and why (the why
#: names the host: "this host differs from the calibration rig: memory 15.62 GiB != 32.0 GiB").
FEATURE_MODES_KEY = "feature_modes"


def _gate_settings(run: RunFile) -> dict[str, Any]:
    """The options the shards must share. The feature modes are not among them: they are decided per
    shard, on its machine, and a shard without an energy test decided none (merged by :func:`_feature_modes`)."""
    return {k: v for k, v in run.settings.items() if k != FEATURE_MODES_KEY}


def _feature_modes(shards: Sequence[tuple[str, RunFile]]) -> dict[str, Any]:
    """Every shard's decided feature modes, per profile; shards that used another feature set with
    one profile are not one run (the calls' own ``features`` differ too)."""
    out: dict[str, Any] = {}
    where: dict[str, str] = {}
    for path, run in shards:
        modes = run.settings.get(FEATURE_MODES_KEY)
        for profile, mode in sorted(modes.items()) if isinstance(modes, dict) else ():
            seen = out.get(profile)
            if seen is None:
                out[profile], where[profile] = mode, path
            elif _features(seen) != _features(mode):
                raise UsageError(
                    f"{where[profile]} and {path}: profile {profile!r} used {_features(seen)!r} features in one and "
                    f"{_features(mode)!r} in the other; shards of one run predict with the same features"
                )
    return out


def _features(mode: Any) -> Any:
    return mode.get("features") if isinstance(mode, dict) else mode


def _sha(run: RunFile) -> str | None:
    return run.commit.sha[:12] if run.commit is not None else None


def _shown(value: Any) -> str:
    return repr(value) if value not in ("", None, {}) else "none"


__all__ = ["merge_runs"]
