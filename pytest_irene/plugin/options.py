"""Command-line options and their ini twins, and the parsed settings of a run.

Every option can be set in ``[tool.pytest.ini_options]`` (or ``pytest.ini``)
under the same name with underscores (``irene_budget = "12J"``); the command
line wins. Values are parsed once, in :func:`load_settings`, so a bad value
stops the run before any test with a message naming the option.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pytest_irene.engine.feature_sets import AUTO, FEATURE_MODES
from pytest_irene.errors import UsageError
from pytest_irene.outputs import check_distinct, check_output_path, same_file
from pytest_irene.compare.comparison import DEFAULT_FAIL_ON, FAIL_ON
from pytest_irene.compare.gate import DEFAULT_MIN_DELTA_J, DEFAULT_TOLERANCE
from pytest_irene.units import DEFAULT_PRICE_CENTS_PER_KWH, parse_energy, parse_percent, parse_price

DEFAULT_PROFILE = "irene-pc1"
DEFAULT_BASELINE_DIR = ".irene"

#: (option name, kind, help). kind: "str" takes a value, "bool" is a flag.
OPTIONS: tuple[tuple[str, str, str], ...] = (
    ("irene-budget", "str", "fail any test whose predicted energy exceeds this, e.g. 12J, 500mJ, 0.01Wh"),
    ("irene-tolerance", "str", "relative change of a module's energy allowed against the baseline (default: 5%%)"),
    ("irene-min-delta", "str", "absolute changes below this never fail, e.g. 0.01J (default: 1mJ)"),
    (
        "irene-fail-on",
        "str",
        "increase|any: fail only when a module got costlier (default), or on decreases too (keeps baselines tight)",
    ),
    ("irene-profile", "str", f"energy model: bundled profile name or model file path (default: {DEFAULT_PROFILE})"),
    (
        "irene-features",
        "str",
        "auto|model|all: 'auto' uses resource features only on the profile's own hardware (default: auto)",
    ),
    ("irene-baselines", "str", f"baseline directory (default: {DEFAULT_BASELINE_DIR}/ at the rootdir)"),
    ("irene-save", "bool", "write or refresh the baselines of every wrapped call that ran"),
    ("irene-strict", "bool", "fail wrapped calls that have no comparable baseline"),
    ("irene-json", "str", "write every call's predicted tree and comparison to this JSON file"),
    (
        "irene-compare",
        "str",
        "gate against a run file from --irene-json (e.g. the main branch's) or a baselines directory, not .irene/",
    ),
    ("irene-markdown", "str", "write the energy summary as Markdown to this file (for a pull-request comment)"),
    ("irene-prune", "bool", "with --irene-save: drop the baselines of tests that no longer exist"),
    ("irene-price", "str", "electricity price for cost columns, e.g. 13.19c/kWh or 0.1319USD/kWh (default: 13.19c)"),
    ("irene-device", "str", "device model features are traced on: meta (default, no weights touched) or a real "
     "device such as cpu for data-dependent code (the model must live there)"),
    ("irene-disable", "bool", "turn pytest-irene off: no model is loaded and irene() calls skip the test"),
    ("irene-only", "bool", "run only the tests that use the irene fixture or carry the irene mark (deselect the rest)"),
)


METAVARS: dict[str, str] = {
    "irene-budget": "ENERGY",
    "irene-tolerance": "PERCENT",
    "irene-min-delta": "ENERGY",
    "irene-fail-on": "increase|any",
    "irene-profile": "NAME|PATH",
    "irene-features": "auto|model|all",
    "irene-baselines": "DIR",
    "irene-json": "PATH",
    "irene-compare": "RUN.json|DIR",
    "irene-markdown": "PATH",
    "irene-price": "PRICE",
    "irene-device": "DEVICE",
}


def add_options(parser: pytest.Parser) -> None:
    """Declare every option on the command line and in the ini file."""
    group = parser.getgroup("irene", "energy gate (pytest-irene)")
    for name, kind, help_text in OPTIONS:
        dest = name.replace("-", "_")
        if kind == "bool":
            group.addoption(f"--{name}", action="store_true", default=None, dest=dest, help=help_text)
            parser.addini(dest, help_text.replace("%%", "%"), type="bool", default=False)
        else:
            metavar = METAVARS.get(name, "VALUE")
            group.addoption(f"--{name}", action="store", default=None, dest=dest, metavar=metavar, help=help_text)
            parser.addini(dest, help_text.replace("%%", "%"), default=None)


def get_raw(config: pytest.Config, name: str) -> tuple[Any, str]:
    """The raw value of an option and where it came from (``--irene-x`` or ``irene_x (ini)``)."""
    dest = name.replace("-", "_")
    value = config.getoption(dest, None)
    if value is not None:
        return value, f"--{name}"
    try:
        ini = config.getini(dest)
    except (ValueError, pytest.UsageError) as exc:  # a bool ini key with a value pytest cannot read ("maybe"):
        # pytest < 9.2 raises the ValueError of its truth-value parser; 9.2 wraps it in pytest.UsageError
        raise UsageError(f"{dest} (ini): expected true or false (also 1/0, yes/no, on/off); {exc}") from None
    if ini in (None, ""):
        return None, f"--{name}"
    return ini, f"{dest} (ini)"


@dataclass(frozen=True)
class Settings:
    """The parsed options of one run."""

    disabled: bool
    """``--irene-disable``: the plugin does nothing."""
    budget_j: float | None
    """``--irene-budget`` in joules; ``None`` for no budget."""
    tolerance: float
    """``--irene-tolerance`` as a fraction (0.05 = 5 %)."""
    min_delta_j: float
    """``--irene-min-delta`` in joules."""
    profile: str
    """``--irene-profile``: bundled name or model file path."""
    features: str
    """``--irene-features``: ``auto``, ``model`` or ``all``."""
    baseline_dir: Path
    """``--irene-baselines``, resolved."""
    save: bool
    """``--irene-save``."""
    strict: bool
    """``--irene-strict``."""
    json_path: Path | None
    """``--irene-json``, resolved; ``None`` when not asked for."""
    price_cents_per_kwh: float
    """``--irene-price`` in US cents per kWh."""
    compare_path: Path | None = None
    """``--irene-compare``, resolved: the run file (or baselines directory) to gate against; ``None`` for ``.irene/``."""
    markdown_path: Path | None = None
    """``--irene-markdown``, resolved; ``None`` when not asked for."""
    prune: bool = False
    """``--irene-prune`` (with ``--irene-save``): drop baselines of tests that no longer exist."""
    device: str | None = None
    """``--irene-device``: where model features are traced (``None``: the meta device)."""
    fail_on: str = DEFAULT_FAIL_ON
    """``--irene-fail-on``: ``increase`` or ``any`` (see :data:`~pytest_irene.compare.comparison.FAIL_ON`)."""
    only: bool = False
    """``--irene-only``: deselect the tests that neither use the ``irene`` fixture nor carry its mark."""


def _path(value: str, source: str, config: pytest.Config) -> Path:
    """Command-line paths are relative to the invocation directory, ini paths to the ini file's."""
    path = Path(value).expanduser()
    if path.is_absolute():
        return path
    if source.endswith("(ini)"):
        base = config.inipath.parent if config.inipath else config.rootpath
    else:
        base = config.invocation_params.dir
    return base / path


def _ini_relative_profile(profile: str, source: str, config: pytest.Config) -> str:
    """An ini file's model file path is relative to the ini file, like its report paths: from a
    subdirectory ``irene_profile = "models/rig.json"`` was looked up there and refused. Returned
    relative to the invocation directory (the string is recorded in run files and baselines, which
    must not hold one checkout's absolute paths); a bundled profile name stays as it is."""
    from pytest_irene.engine.predict.profiles import bundled_profiles

    if not source.endswith("(ini)") or profile in bundled_profiles():
        return profile
    path = _path(profile, source, config)
    if not path.is_file() or Path(profile).expanduser().is_absolute():
        return profile  # left to resolve_profile, whose error names what would have worked
    try:
        return os.path.relpath(path, config.invocation_params.dir)
    except ValueError:  # another drive (Windows)
        return str(path)


def _check_baseline_dir(path: Path, source: str, raw: Any) -> None:
    """The baseline directory may be missing (``--irene-save`` creates it), but not be a file, nor a
    symbolic link to nothing (saving then failed with a bare "File exists")."""
    for candidate in (path, *path.parents):
        if candidate.is_symlink() and not candidate.exists():
            shown = raw if raw is not None else path
            raise UsageError(f"{source}={shown}: {candidate} is a symbolic link to {os.readlink(candidate)}, which "
                             "does not exist (or loops); create its target or remove the link")
        if candidate.exists():
            if not candidate.is_dir():
                shown = raw if raw is not None else path
                what = "is a regular file" if candidate == path else f"lies under {candidate}, a regular file"
                raise UsageError(f"{source}={shown}: {what}; expected a baseline directory such as .irene")
            return


def _html_path(config: pytest.Config) -> Path | None:
    """The HTML report's path when its plugin is active (``-p no:irene_html`` turns it off)."""
    if not config.pluginmanager.has_plugin("irene_html"):
        return None
    from pytest_irene.explorer.pytest_plugin import report_path

    return report_path(config)


def check_profile(settings: Settings, host: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Configure-time check of ``--irene-profile`` (and ``--irene-features=all`` against this host).

    Reads only the model file's header (:func:`~pytest_irene.engine.predict.profiles.peek_profile`):
    no regressor is built, so ``--collect-only`` stays cheap, yet a missing,
    foreign, too new or NaN-holding file is a usage error before the first test
    instead of a failure in every test. Returns the header.
    """
    from pytest_irene.engine.predict.profiles import peek_profile
    from pytest_irene.errors import ModelFileError

    option = "--irene-profile"
    try:
        header = peek_profile(settings.profile)
    except ModelFileError as exc:
        raise UsageError(f"{option}={settings.profile}: {exc}") from None
    if settings.features == "all":
        from pytest_irene.pipeline import choose_features

        hardware = header.get("hardware")
        choose_features("all", hardware if isinstance(hardware, dict) else None, host=host(),
                        available=tuple(header.get("feature_sets") or ()))
    return header


def load_settings(config: pytest.Config) -> Settings:
    """Parse every option (command line first, then ini); :class:`UsageError` names a bad one."""

    def flag(name: str) -> bool:
        value, _ = get_raw(config, name)
        return bool(value)

    raw_budget, src = get_raw(config, "irene-budget")
    budget = parse_energy(str(raw_budget), src) if raw_budget is not None else None

    raw, src = get_raw(config, "irene-tolerance")
    tolerance = parse_percent(str(raw), src) if raw is not None else DEFAULT_TOLERANCE

    raw, src = get_raw(config, "irene-min-delta")
    min_delta = parse_energy(str(raw), src) if raw is not None else DEFAULT_MIN_DELTA_J

    raw, src = get_raw(config, "irene-fail-on")
    fail_on = str(raw).strip().lower() if raw is not None else DEFAULT_FAIL_ON
    if fail_on not in FAIL_ON:
        raise UsageError(f"{src}: expected one of {', '.join(FAIL_ON)}, got {raw!r}")

    raw, src = get_raw(config, "irene-profile")
    profile = str(raw).strip() if raw is not None else DEFAULT_PROFILE
    if not profile:
        raise UsageError(f"{src}: expected a profile name or a model file path, got an empty value")
    profile = _ini_relative_profile(profile, src, config)

    raw, src = get_raw(config, "irene-features")
    features = str(raw).strip().lower() if raw is not None else AUTO
    if features not in FEATURE_MODES:
        raise UsageError(f"{src}: expected one of {', '.join(FEATURE_MODES)}, got {raw!r}")

    raw, src = get_raw(config, "irene-baselines")
    if raw is not None and not str(raw).strip():
        raise UsageError(f"{src}: expected a baseline directory such as .irene, got an empty value")
    baseline_dir = _path(str(raw), src, config) if raw is not None else config.rootpath / DEFAULT_BASELINE_DIR
    _check_baseline_dir(baseline_dir, src, raw)

    raw, src = get_raw(config, "irene-json")
    json_src = src
    json_path = check_output_path(_path(str(raw), src, config), src, str(raw), kind="run") if raw is not None else None

    raw, src = get_raw(config, "irene-compare")
    if raw is not None and not str(raw).strip():
        raise UsageError(f"{src}: expected a run file or a baseline directory, got an empty value")
    compare_path = _path(str(raw), src, config) if raw is not None else None
    if compare_path is not None and flag("irene-save"):
        raise UsageError(f"{src}: cannot be combined with --irene-save (saving does not compare); choose one")
    if json_path is not None and compare_path is not None and same_file(json_path, compare_path):
        raise UsageError(f"{json_src}={json_path}: is the run {src} compares with; writing this run there "
                         "would replace it: give the new run another file")

    raw, src = get_raw(config, "irene-markdown")
    markdown_path = (check_output_path(_path(str(raw), src, config), src, str(raw), kind="markdown")
                     if raw is not None else None)
    markdown_src = src
    pytest_html = config.getoption("htmlpath", None)  # pytest-html's --html, when installed
    junit = config.getoption("xmlpath", None)  # pytest's --junitxml, written after ours: it replaced them
    check_distinct({json_src: json_path, markdown_src: markdown_path, "--irene-html": _html_path(config),
                    "--html": _path(str(pytest_html), "--html", config) if pytest_html else None,
                    "--junitxml": _path(str(junit), "--junitxml", config) if junit else None})

    if flag("irene-prune") and not flag("irene-save"):
        raise UsageError("--irene-prune: only with --irene-save (it rewrites the baselines)")

    raw, src = get_raw(config, "irene-price")
    price = parse_price(str(raw), src) if raw is not None else DEFAULT_PRICE_CENTS_PER_KWH

    raw, src = get_raw(config, "irene-device")
    device = None
    if raw is not None:  # torch is imported only when the option is given
        from pytest_irene.engine.devices import check_device

        device = check_device(str(raw).strip(), src)

    if flag("irene-only") and flag("irene-disable"):
        raise UsageError("--irene-only: cannot be combined with --irene-disable (it would run nothing); choose one")

    return Settings(
        disabled=flag("irene-disable"),
        budget_j=budget,
        tolerance=tolerance,
        min_delta_j=min_delta,
        profile=profile,
        features=features,
        baseline_dir=baseline_dir,
        save=flag("irene-save"),
        strict=flag("irene-strict"),
        json_path=json_path,
        price_cents_per_kwh=price,
        compare_path=compare_path,
        markdown_path=markdown_path,
        prune=flag("irene-prune"),
        device=device,
        fail_on=fail_on,
        only=flag("irene-only"),
    )
