"""``pytest --irene-calibrate``: measure a suite's model calls on a rig (entry point ``irene_calibrate``).

A separate plugin from the energy gate, so the gate stays thin and a suite
is calibrated by adding options, not by editing tests. Design (the seam
between the two plugins):

* ``irene_calibrate(model, inputs, label=...)`` is this plugin's own fixture:
  with ``--irene-calibrate`` it measures the call on the rig and returns the
  measured :class:`~pytest_irene.engine.tree.EnergyTree`; without it the test is
  skipped. It needs nothing from the gate plugin.
* With ``--irene-calibrate``, the gate's ``irene`` fixture measures too
  (this plugin implements the gate's ``pytest_irene_fixture`` hook), so an
  existing energy-gated suite is calibrated unchanged: every ``irene(model,
  inputs, label=...)`` call is *measured instead of predicted* and returns the
  measured tree (``tree.measured_total_j``; the gate does not run, there is no
  prediction to gate).

The first measured call opens the meter and checks that the machine is idle
(the session stops with the reason if not). Each call's plan (rig time) is
printed before it runs, with a rich progress bar while it runs; each finished
tree is appended to the dataset at once. At the end of the session the
regressors are retrained on the dataset and the energy model file is written.

Calibration runs serially (``-n``/xdist is refused: parallel tests would
disturb each other's measurements). Importing this module does not import torch.
"""

from __future__ import annotations

from collections.abc import Generator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pytest_irene.errors import IreneError, UsageError

GROUP_DESCRIPTION = "energy gate (pytest-irene)"
DEFAULT_DATASET = "irene-rig.jsonl.gz"
DEFAULT_OUTPUT = "irene-rig.json"

#: (option, kind, help) — kind: "flag", "str", "float", "int".
OPTIONS: tuple[tuple[str, str, str], ...] = (
    ("irene-calibrate", "flag", "measure every irene()/irene_calibrate() call on this rig with --irene-meter, "
     "append the trees to --irene-calibrate-dataset and train --irene-calibrate-output"),
    ("irene-meter", "str", "power meter: emonpi:PORT[,BAUD][,channels=P1+P2][,period=S] | nvml[:INDEX] | rapl[:SYSFS_DIR]"),
    ("irene-calibrate-dataset", "str", f"irene-tree/1 dataset to append measured trees to (default: {DEFAULT_DATASET})"),
    ("irene-calibrate-output", "str", f"energy model file to train (default: {DEFAULT_OUTPUT}); its stem is the profile"),
    ("irene-calibrate-window", "float", "seconds each node runs per round (default 20; at least 10 meter reports)"),
    ("irene-calibrate-rounds", "int", "rounds per node (default 5)"),
    ("irene-calibrate-cooldown", "float", "seconds of cool-down between rounds (default 30)"),
    ("irene-calibrate-min-reports", "int", "meter reports every window must span (default 10)"),
    ("irene-calibrate-idle-tolerance", "float", "refuse to start above idle power by this fraction (default 0.10)"),
    ("irene-calibrate-idle-watts", "float", "the rig's known idle power in W (default: judged from the idle window)"),
    ("irene-calibrate-idle-cpu", "float", "refuse to start while the CPU is busier than this, %% (default 15)"),
    ("irene-calibrate-device", "str", "torch device the models are measured on (default: cpu)"),
    ("irene-calibrate-no-train", "flag", "only measure and append to the dataset; do not train a model file"),
    ("irene-prior", "str", "with --irene-calibrate: train the model file by transfer from this profile or model file "
     "(a few measured calls suffice; see irene train --prior)"),
)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("irene", GROUP_DESCRIPTION)
    for name, kind, help_text in OPTIONS:
        dest = name.replace("-", "_")
        if kind == "flag":
            group.addoption(f"--{name}", action="store_true", default=False, dest=dest, help=help_text)
        else:
            group.addoption(f"--{name}", action="store", default=None, dest=dest, metavar="VALUE", help=help_text)


@dataclass
class CalibrationRun:
    """State of one ``--irene-calibrate`` session."""

    config: pytest.Config
    meter_spec: str
    settings: Any  # CalibrationSettings
    dataset: Path
    output: Path
    calibrator: Any = None
    error: str | None = None
    """Why measuring stopped (idle refused, meter lost), for the summary."""
    trained: Any = None
    train_error: str | None = None

    # -- measuring -----------------------------------------------------------------------

    def _print(self, line: str) -> None:
        tw = self.config.get_terminal_writer()
        tw.line(line)

    @contextmanager
    def _uncaptured(self) -> Generator[None, None, None]:
        """Plans and the progress bar go to the terminal even while the test's output is captured."""
        capman = self.config.pluginmanager.getplugin("capturemanager")
        if capman is None:
            yield
            return
        with capman.global_and_fixture_disabled():
            yield

    def _fingerprint(self) -> dict[str, Any]:
        """The rig's identity: what ``pytest_irene_host_fingerprint`` pins (the gate decides its feature
        mode with the same hook, so the trained model matches the gate), else the measured host."""
        hook = getattr(self.config.hook, "pytest_irene_host_fingerprint", None)
        pinned = hook(config=self.config) if hook is not None else None
        if isinstance(pinned, dict):
            return dict(pinned)
        from pytest_irene.rig.runtime.fingerprint import host_fingerprint

        return host_fingerprint()

    def _open(self) -> Any:
        from pytest_irene.rig.calibration import CalibrationError, Calibrator
        from pytest_irene.rig.meters import parse_meter_spec

        if self.error is not None:
            pytest.exit(self.error, returncode=pytest.ExitCode.INTERRUPTED)
        if self.calibrator is None:
            meter = parse_meter_spec(self.meter_spec)
            tw = self.config.get_terminal_writer()
            cal = Calibrator(
                meter, self.settings, self.dataset, say=self._print, progress=tw.hasmarkup, fingerprint=self._fingerprint,
                dataset_option="--irene-calibrate-dataset",
            )
            try:
                with self._uncaptured():
                    cal.open()
                    cal.check_idle()
            except (CalibrationError, IreneError) as exc:
                cal.close()
                self.error = f"irene calibrate: {exc}"
                pytest.exit(self.error, returncode=pytest.ExitCode.INTERRUPTED)
            self.calibrator = cal
        return self.calibrator

    def measure(self, item: pytest.Item, model: Any, inputs: Any, label: str, **kwargs: Any) -> Any:
        """Measure one model call on the rig; returns the measured tree (appended to the dataset)."""
        from pytest_irene.rig.calibration import Target
        from pytest_irene.rig.meters.base import MeterError

        if not isinstance(label, str) or not label:
            raise UsageError(f"irene(..., label=...): expected a non-empty string, got {label!r}")
        cal = self._open()
        target = Target(model, inputs, f"{item.nodeid}::{label}", meta={"nodeid": item.nodeid}, **kwargs)
        with self._uncaptured():
            prepared = cal.prepare(target)
            self._print(cal.plan([prepared], include_idle=False).describe())
            cal.note_measured_before([prepared])
            try:
                tree = cal.measure(prepared)
            except MeterError as exc:
                self.error = (
                    f"irene calibrate: the meter failed while measuring {target.label}: {str(exc).rstrip('.')}; "
                    f"{cal.kept()}"
                )
                pytest.exit(self.error, returncode=pytest.ExitCode.INTERRUPTED)
        return tree

    # -- end of session ------------------------------------------------------------------

    def finish(self, interrupted: bool = False) -> None:
        """Close the meter; retrain on the dataset when this session added trees and ran to its end.

        Not after Ctrl-C or a meter failure (``interrupted``): the run was stopped, and the model
        file it would replace stays as it was, as ``irene calibrate`` leaves it (its trees are kept;
        ``irene train`` trains on them)."""
        cal = self.calibrator
        if cal is None:
            return
        cal.close()
        if not cal.trees or self.config.getoption("irene_calibrate_no_train"):
            return
        if interrupted or self.error is not None:
            self.train_error = (f"the run was stopped; the model file {self.output} is unchanged (train on the "
                                f"measured trees with irene train {self.dataset} -o {self.output})")
            return
        from pytest_irene.rig.calibration import train_rig_model

        try:
            self.trained = train_rig_model(
                [self.dataset],
                self.output,
                profile=self.settings.profile,
                hardware=cal.hardware(),
                prior=self.config.getoption("irene_prior"),
            )
        except (IreneError, OSError) as exc:  # the session's end must report it, not end in a traceback
            self.train_error = str(exc)

    def summary_lines(self) -> list[str]:
        cal = self.calibrator
        lines = []
        if cal is not None:
            lines.append(f"meter: {cal.meter.name}; idle power {cal.idle.power_w:.1f} W" if cal.idle else "")
            lines.append(f"{len(cal.trees)} measured tree(s) appended to {self.dataset}")
            lines.extend(f"warning: {w}" for w in cal.warnings[:10])
        if self.error:
            lines.append(self.error)
        if self.trained is not None:
            from pytest_irene.rig.calibration import cv_summary

            lines.append(f"energy model for profile {self.settings.profile!r} written to {self.output}")
            lines.extend(cv_summary(self.trained))
        elif self.train_error:
            lines.append(f"no energy model trained: {self.train_error}")
        return [line for line in lines if line]


_RUN = pytest.StashKey[CalibrationRun]()


def _number(config: pytest.Config, name: str, kind: type, default: Any) -> Any:
    raw = config.getoption(name.replace("-", "_"))
    if raw is None:
        return default
    try:
        return kind(raw)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise pytest.UsageError(f"--{name}: expected {what}, got {raw!r}") from None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "irene_calibrate: (informational) the test's model calls are measured with --irene-calibrate"
    )
    if not config.getoption("irene_calibrate"):
        if config.getoption("irene_prior"):
            raise pytest.UsageError("--irene-prior trains a calibrated model file: it needs --irene-calibrate")
        if config.getoption("irene_meter"):
            config.issue_config_time_warning(
                pytest.PytestConfigWarning(
                    f"--irene-meter={config.getoption('irene_meter')} is ignored without --irene-calibrate: "
                    "nothing is measured; add --irene-calibrate to measure on this rig"
                ),
                stacklevel=2,
            )
        return
    from pytest_irene.rig.calibration import CalibrationSettings
    from pytest_irene.rig.calibration_plan import SettingError
    from pytest_irene.rig.meters import parse_meter_spec

    spec = config.getoption("irene_meter")
    if not spec:
        raise pytest.UsageError("--irene-calibrate needs --irene-meter=SPEC (e.g. emonpi:/dev/ttyAMA0)")
    if hasattr(config, "workerinput") or (config.getoption("numprocesses", None) not in (None, 0, "0")):
        raise pytest.UsageError("--irene-calibrate measures one call at a time: run it without -n (pytest-xdist)")
    try:
        meter = parse_meter_spec(spec)  # validate now, open on the first call
        if config.getoption("irene_prior") and config.getoption("irene_calibrate_no_train"):
            raise UsageError("--irene-prior: it sets how the model file is trained, and --irene-calibrate-no-train "
                             "trains none; drop one")
        if config.getoption("irene_prior"):  # a bad prior fails now, not after hours of measuring
            from pytest_irene.engine.predict.transfer import load_prior

            load_prior(config.getoption("irene_prior"), meter.energy_scope, "--irene-prior")
        root = Path(str(config.rootpath))
        dataset = Path(config.getoption("irene_calibrate_dataset") or DEFAULT_DATASET)
        output = Path(config.getoption("irene_calibrate_output") or DEFAULT_OUTPUT)
        dataset = dataset if dataset.is_absolute() else root / dataset
        output = output if output.is_absolute() else root / output
        suffixes = "".join(dataset.suffixes[-2:])
        if not (dataset.suffix == ".jsonl" or suffixes == ".jsonl.gz"):
            raise UsageError(f"--irene-calibrate-dataset: expected a .jsonl or .jsonl.gz file, got {dataset}")
        _check_files(dataset, output, meter.energy_scope, train=not config.getoption("irene_calibrate_no_train"),
                     prior=config.getoption("irene_prior"))
        defaults = CalibrationSettings()
        settings = CalibrationSettings(
            window_s=_number(config, "irene-calibrate-window", float, defaults.window_s),
            rounds=_number(config, "irene-calibrate-rounds", int, defaults.rounds),
            cooldown_s=_number(config, "irene-calibrate-cooldown", float, defaults.cooldown_s),
            min_reports=_number(config, "irene-calibrate-min-reports", int, defaults.min_reports),
            idle_tolerance=_number(config, "irene-calibrate-idle-tolerance", float, defaults.idle_tolerance),
            idle_power_w=_number(config, "irene-calibrate-idle-watts", float, None),
            idle_cpu_pct=_number(config, "irene-calibrate-idle-cpu", float, defaults.idle_cpu_pct),
            device=config.getoption("irene_calibrate_device") or "cpu",
            profile=output.stem,
        )
    except SettingError as exc:  # name the option the user typed, not the settings field
        raise pytest.UsageError(f"{PLUGIN_SETTING_OPTIONS.get(exc.setting, exc.setting)}: {exc.problem}") from None
    except IreneError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[_RUN] = CalibrationRun(config, spec, settings, dataset, output)


def _check_files(dataset: Path, output: Path, energy_scope: str, *, train: bool, prior: str | None) -> None:
    """Before any test: both files can be written, the model cannot overwrite the dataset, the prior or
    another file, and the dataset reads and holds this meter's energy scope (else the run would measure for
    hours and then fail to append or to train)."""
    from pytest_irene.outputs import check_output_path
    from pytest_irene.rig.calibration_files import check_dataset_for_append, check_model_output

    check_output_path(dataset, "--irene-calibrate-dataset")
    if train:
        check_output_path(output, "--irene-calibrate-output")
        check_model_output(output, [dataset], "--irene-calibrate-output", prior=prior)
    check_dataset_for_append(dataset, energy_scope, "--irene-calibrate-dataset")


#: ``CalibrationSettings`` field -> the option of this plugin that sets it.
PLUGIN_SETTING_OPTIONS = {
    "window_s": "--irene-calibrate-window",
    "rounds": "--irene-calibrate-rounds",
    "cooldown_s": "--irene-calibrate-cooldown",
    "min_reports": "--irene-calibrate-min-reports",
    "idle_tolerance": "--irene-calibrate-idle-tolerance",
    "idle_power_w": "--irene-calibrate-idle-watts",
    "idle_cpu_pct": "--irene-calibrate-idle-cpu",
    "device": "--irene-calibrate-device",
}


def _run(config: pytest.Config) -> CalibrationRun | None:
    return config.stash.get(_RUN, None)


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    run = _run(config)
    if run is None:
        return None
    s = run.settings
    return [
        f"irene calibrate: meter {run.meter_spec}, windows >= {s.window_s:g} s and {s.min_reports} reports, "
        f"{s.rounds} rounds, cool-down {s.cooldown_s:g} s, device {s.device}",
        f"irene calibrate: dataset {run.dataset}, model {run.output} (profile {s.profile!r})"
        + (f", transferred from {config.getoption('irene_prior')}" if config.getoption("irene_prior") else ""),
    ]


class CalibratingCall:
    """What ``irene_calibrate`` (and, in calibrate mode, ``irene``) returns: call it to measure a model call."""

    def __init__(self, run: CalibrationRun, item: pytest.Item) -> None:
        self._run = run
        self._item = item
        self._labels: set[str] = set()

    def __call__(
        self,
        model: Any,
        inputs: Any,
        label: str = "default",
        *,
        batch_size: int | None = None,
        seq_len: int | None = None,
        model_name: str | None = None,
    ) -> Any:
        if label in self._labels:
            raise UsageError(f"irene(..., label={label!r}) called twice in {self._item.nodeid}; give each call its own label")
        self._labels.add(label)
        return self._run.measure(
            self._item, model, inputs, label, batch_size=batch_size, seq_len=seq_len, model_name=model_name
        )


@pytest.fixture
def irene_calibrate(request: pytest.FixtureRequest) -> Any:
    """Measure a model call on the rig: ``tree = irene_calibrate(model, inputs, label="encoder")``.

    Only with ``--irene-calibrate`` (otherwise the test is skipped). Returns the
    measured :class:`~pytest_irene.engine.tree.EnergyTree` (``node.energy_j`` in J per
    execution on every node); the tree is also appended to the dataset.
    """
    run = _run(request.config)
    if run is None:

        def not_calibrating(*args: Any, **kwargs: Any) -> Any:
            pytest.skip("irene_calibrate() measures only with --irene-calibrate --irene-meter=SPEC")

        return not_calibrating
    return CalibratingCall(run, request.node)


@pytest.hookimpl(optionalhook=True)  # the gate plugin, which defines the hook, may be disabled
def pytest_irene_fixture(request: pytest.FixtureRequest) -> Any | None:
    """In calibrate mode, the gate's ``irene`` fixture measures instead of predicting."""
    run = _run(request.config)
    return None if run is None else CalibratingCall(run, request.node)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    run = _run(session.config)
    if run is not None:
        run.finish(interrupted=exitstatus == pytest.ExitCode.INTERRUPTED)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    run = _run(config)
    if run is None:
        return
    terminalreporter.write_sep("=", "irene calibration")
    for line in run.summary_lines():
        terminalreporter.write_line(line)

