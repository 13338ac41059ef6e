"""The plugin's report-header line: profile, what it stands for, feature mode, baselines.

Read from the profile's JSON without building any regressor, so ``--collect-only``
loads no energy model; the feature mode shown is what
:func:`pytest_irene.pipeline.choose_features` decides for this host (a model on
the CPU with a GPU profile may still fall back to model features at the call).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_irene.compare.runs import machine_differences
from pytest_irene.engine.feature_sets import AUTO, MODEL
from pytest_irene.plugin.options import Settings

if TYPE_CHECKING:
    from pytest_irene.compare.runs import RunSide


def describe_hardware(hardware: dict[str, Any] | None) -> str:
    """A one-line description of a hardware fingerprint for headers and reasons."""
    if not hardware:
        return "unknown hardware"
    for key in ("description", "name"):
        if isinstance(hardware.get(key), str) and hardware[key]:
            return hardware[key]
    if "cpu_model" in hardware:
        from pytest_irene.rig.runtime.fingerprint import describe

        return describe(hardware)
    parts = [str(hardware[k]) for k in ("cpu", "gpu", "gpu_name", "gpus") if hardware.get(k)]
    if not parts:
        parts = [f"{k}={v}" for k, v in sorted(hardware.items())[:3]]
    return ", ".join(parts)


def header_lines(
    settings: Settings,
    rootpath: Path,
    host_fingerprint: Callable[[], dict[str, Any]],
    base_run: RunSide | None = None,
) -> list[str]:
    """``pytest_report_header``: profile, hardware, feature mode, baseline dir (and the base run). Loads no model."""
    from pytest_irene.engine.tree import DEFAULT_ENERGY_SCOPE, describe_energy_scope

    s = settings
    peek = peek_profile(s.profile)
    hardware = peek.get("hardware") if isinstance(peek.get("hardware"), dict) else None
    scope = describe_energy_scope(str(peek.get("energy_scope", DEFAULT_ENERGY_SCOPE))) if peek else ""
    hw = f"stands for {describe_hardware(hardware)}" if hardware else ""
    hw = f" ({'; '.join(p for p in (hw, scope) if p)})" if hw or scope else ""
    mode = s.features
    if s.features == AUTO:
        mode = "auto (decided at the first wrapped call)"
        if hardware is not None:
            try:
                from pytest_irene.pipeline import choose_features

                sets = peek.get("feature_sets")
                available = tuple(sets) if isinstance(sets, (dict, list)) else (MODEL,)
                chosen = choose_features(AUTO, hardware, host=host_fingerprint(), available=available)
                mode = f"{chosen.features} (auto: {chosen.summary})"
            except Exception:  # noqa: BLE001 - the header is informative only
                pass
    baselines = s.baseline_dir
    try:
        baselines = s.baseline_dir.relative_to(rootpath)
    except ValueError:
        pass
    flags = [f for f, on in (("save", s.save), ("strict", s.strict), ("prune", s.prune)) if on]
    extra = f", {'+'.join(flags)}" if flags else ""
    lines = [f"irene: profile {s.profile}{hw}, features {mode}, baselines {baselines}/{extra}"]
    if base_run is not None:
        lines.append(f"irene: comparing against {base_run.describe()}, not {baselines}/")
        diffs = machine_differences(base_run.host, host_fingerprint())
        if diffs:
            lines.append(
                "irene: the base run comes from another machine (" + "; ".join(diffs) + "): calls with resource "
                "features are not compared; model-feature predictions do not depend on the machine"
            )
    return lines


def peek_profile(profile: str) -> dict[str, Any]:
    """The top-level fields of a profile's JSON (``hardware``, ``feature_sets``), without building any regressor.

    The header must not load an energy model (``--collect-only`` loads none), so
    this only parses the file; any problem gives ``{}`` and the header leaves the
    hardware out (the first wrapped call reports a bad profile properly).
    """
    try:
        from pytest_irene.engine.predict.profiles import resolve_profile

        doc = json.loads(Path(resolve_profile(profile)).read_bytes())
        return doc if isinstance(doc, dict) else {}
    except Exception:  # noqa: BLE001 - the header is informative only
        return {}
