"""Ground-truth collection on a measurement rig, and retraining for that rig.

What IrEne's regressors learn from is the energy each node of a model really
draws at the wall on the target hardware. Collecting it, as the paper did:

1. **Idle first.** The machine's power is measured for one window with
   nothing running. The run refuses to start while the machine draws clearly
   more than idle (another job, a fan still spinning down, a GPU stuck at a
   high clock), because every node energy would carry that extra power.
2. **Every distinct node alone.** The model is traced with its real inputs
   captured (``trace(..., capture=True)``); every distinct node signature
   (the runtime's :func:`~pytest_irene.rig.runtime.distinct_signatures`: identical
   layers run once) and the whole model are replayed by the node runner
   (:func:`~pytest_irene.rig.runtime.run_call`) for a window long enough for the
   meter: ``window_s`` (default 20 s) and at least ``min_reports`` meter
   reports (10: an emonPi reports every 5-10 s, so windows grow to 50-100 s).
   The resource sampler runs throughout.
3. **Several rounds** (default 5) with a cool-down between them; the energy of
   one execution of a node is its window's energy divided by the executions in
   the window, averaged over rounds.
4. **Alignment by timestamps.** Windows and meter readings carry the same
   monotonic clock; :meth:`PowerMeter.energy_between` integrates the meter's
   reported power over each window afterwards, so windows run back to back
   without waiting for the meter.
5. **Storage.** Each finished tree is appended to an ``irene-tree/1`` dataset
   at once (atomically): a crash or a meter failure keeps every tree finished
   before. Then the regressors are retrained on the dataset and written as an
   energy model file for the rig's profile, with the rig's hardware
   fingerprint and cross-validation errors.

Every knob is a field of :class:`CalibrationSettings`, so tests run the whole
procedure in seconds against the emonPi emulator.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import Any

from pytest_irene.engine.dataset import append_trees
from pytest_irene.rig.calibration_plan import (
    DEFAULT_COOLDOWN_S,
    DEFAULT_IDLE_CPU_PCT,
    DEFAULT_IDLE_TOLERANCE,
    DEFAULT_MIN_REPORTS,
    DEFAULT_ROUNDS,
    DEFAULT_WINDOW_S,
    WARMUP_FRACTION,
    CalibrationError,
    CalibrationPlan,
    CalibrationSettings,
    IdleReport,
    Prepared,
    Target,
    WindowRecord,
    format_duration,
)
from pytest_irene.rig.calibration_files import check_dataset_for_append, rescue_trees
from pytest_irene.rig.calibration_idle import judge_idle, powers_in, progress_bar
from pytest_irene.rig.calibration_readings import Readings
from pytest_irene.rig.calibration_train import cv_summary, settings_dict, train_rig_model
from pytest_irene.rig.meters.base import MeterError, PowerMeter
from pytest_irene.engine.tree import EnergyTree, scope_label

#: Readings the meter gives before the plan is printed: :attr:`PowerMeter.period_s` is the
#: median interval once there are three (before, the meter's nominal period).
_PERIOD_READINGS = 3


class Calibrator:
    """Runs calibration against one meter and appends finished trees to a dataset.

    Use as a context manager (opens the meter and the resource sampler)::

        with Calibrator(meter, settings, "rig.jsonl.gz") as cal:
            cal.check_idle()
            trees = cal.run([Target(model, inputs, "bert")])

    ``say`` prints one line for humans (plans, idle, warnings); ``progress``
    (default: a rich progress bar on stderr) can be turned off; ``fingerprint``
    replaces :func:`~pytest_irene.rig.runtime.host_fingerprint` (a pinned rig identity);
    ``dataset_option`` names the dataset in messages as the front-end's option does.
    """

    def __init__(
        self,
        meter: PowerMeter,
        settings: CalibrationSettings,
        dataset: str | Path,
        *,
        sampler: Any = None,
        say: Callable[[str], None] | None = None,
        progress: bool = True,
        console: Any = None,
        sleep: Callable[[float], None] = time.sleep,
        fingerprint: Callable[[], dict[str, Any]] | None = None,
        dataset_option: str = "dataset",
    ) -> None:
        self.meter = meter
        self.settings = settings
        self.dataset = Path(dataset)
        self.dataset_option = dataset_option
        """How the user named the dataset (``--dataset``), for the message when it cannot be appended to."""
        self._sampler = sampler
        self._own_sampler = sampler is None
        self._say = say or (lambda line: print(line, flush=True))
        self._progress_enabled = progress
        self._console = console
        self._sleep = sleep
        self._fingerprint = fingerprint
        self.idle: IdleReport | None = None
        self.trees: list[EnergyTree] = []
        """Trees finished and appended to the dataset in this run."""
        self.held_runs: list[tuple[str, int, int]] = []
        """(model, batch, sequence) of each tree the dataset held when the run opened it."""
        self.warnings: list[str] = []
        self.windows: list[WindowRecord] = []
        """Every window measured in this run, for diagnostics."""

    def kept(self) -> str:
        """What a stopped run leaves in the dataset: this run's finished trees and the file's total."""
        return (f"the {len(self.trees)} tree(s) this run finished are in {self.dataset} "
                f"({len(self.held_runs) + len(self.trees)} in all)")

    # -- lifecycle -----------------------------------------------------------------------

    def open(self) -> Calibrator:
        """Check the dataset, open the meter (waiting for its first readings) and start the resource sampler.

        The dataset is read first: a corrupt file or one of another energy scope must stop
        the run now, not when the first finished tree cannot be appended to it.
        """
        self.held_runs = check_dataset_for_append(self.dataset, self.meter.energy_scope, self.dataset_option)
        self.meter.start()
        self.meter.wait_for_samples(2)
        # a third reading gives the meter two intervals to measure its period from (PowerMeter.period_s),
        # so the plan printed next and every window are sized by the period the meter really reports at;
        # waited for as the first ones (the period is not known yet: an NVML counter updating once a
        # second was refused as frozen after the 0.5 s its poll interval implied)
        self.meter.wait_for_samples(_PERIOD_READINGS)
        if self._sampler is None:
            from pytest_irene.rig.runtime.sampler import ResourceSampler

            cuda = self.settings.device.startswith("cuda")
            self._sampler = ResourceSampler(gpus="auto" if cuda else None)
        if not self._sampler.running:
            self._sampler.start()
        return self

    def close(self) -> None:
        """Stop the sampler (if ours) and close the meter."""
        if self._own_sampler and self._sampler is not None and self._sampler.running:
            self._sampler.stop()
        self.meter.close()

    def __enter__(self) -> Calibrator:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def window_s(self) -> float:
        """The timed window per node for this meter, s."""
        return self.settings.node_window_s(self.meter.period_s)

    # -- idle ----------------------------------------------------------------------------

    def check_idle(self) -> IdleReport:
        """Measure idle power; raise :class:`CalibrationError` if the machine is not idle."""
        s = self.settings
        duration = s.idle_window_s if s.idle_window_s is not None else self.window_s
        duration = max(duration, s.min_reports * self.meter.period_s)
        self._say(f"irene calibrate: measuring idle power for {format_duration(duration)} (leave the machine alone)")
        self._sampler.sample_now()
        t0 = time.monotonic()
        self._sleep(duration)
        t1 = time.monotonic()
        self._sampler.sample_now()
        m = self.meter.energy_between(t0, t1)
        powers = powers_in(self.meter.samples(), t0, t1, kind=self.meter.kind) or [m.power_w]
        cpu = self._sampler.window(t0, t1).get("cpu")
        report = judge_idle(m, powers, cpu, s, wall=self.meter.energy_scope == "wall")
        self.idle = report
        cpu_text = "" if cpu is None else f", CPU {cpu:.0f} %"
        self._say(
            f"irene calibrate: idle power {m.power_w:.1f} W ({m.samples} reports, "
            f"{report.min_power_w:.1f}-{report.max_power_w:.1f} W{cpu_text})"
        )
        return report

    # -- planning ------------------------------------------------------------------------

    def prepare(self, target: Target) -> Prepared:
        """Trace ``target`` on the rig's device with captured calls and group its nodes by signature."""
        from pytest_irene.rig.runtime.capture import capture
        from pytest_irene.rig.runtime.signatures import distinct_signatures

        tree = capture(
            target.model, target.inputs, self.settings.device,
            model_name=target.model_name, batch_size=target.batch_size, seq_len=target.seq_len,
        )
        groups = distinct_signatures(tree)
        if not groups:
            raise CalibrationError(f"{target.label}: the traced model has no node that can be replayed")
        return Prepared(target=target, tree=tree, groups=groups)

    def plan(self, prepared: Sequence[Prepared], *, include_idle: bool = True) -> CalibrationPlan:
        """The rig time the targets will take, before running anything."""
        s = self.settings
        window = self.window_s
        per_window = window * (1 + WARMUP_FRACTION)
        total = 0.0
        for p in prepared:
            total += s.rounds * p.windows_per_round * per_window + (s.rounds - 1) * s.cooldown_s
            total += s.rounds * self.meter.period_s  # each round waits for a report past its last window
        idle = 0.0
        if include_idle and self.idle is None:
            idle = s.idle_window_s if s.idle_window_s is not None else window
            idle = max(idle, s.min_reports * self.meter.period_s)
        return CalibrationPlan(
            targets=tuple((p.target.label, p.windows_per_round, len(p.tree)) for p in prepared),
            window_s=window,
            rounds=s.rounds,
            cooldown_s=s.cooldown_s,
            idle_s=idle,
            total_s=total + idle,
            meter_period_s=self.meter.period_s,
            period_measured=len(self.meter.samples()) >= _PERIOD_READINGS,
        )

    # -- measuring -----------------------------------------------------------------------

    def measure(self, prepared: Prepared) -> EnergyTree:
        """Measure every distinct node of ``prepared`` for all rounds; append the tree; return it."""
        if self.idle is None:
            raise CalibrationError("measure idle power first (Calibrator.check_idle)")
        s = self.settings
        tree, groups = prepared.tree, prepared.groups
        window_s = self.window_s
        readings = Readings(groups)
        failed: dict[Hashable, str] = {}
        notes: list[str] = []
        started = time.monotonic()
        with progress_bar(self._progress_enabled, self._console, s.rounds * len(groups), f"calibrating {prepared.target.label}") as advance:
            for round_no in range(s.rounds):
                if round_no:
                    self._sleep(s.cooldown_s)
                windows = self._run_round(prepared, window_s, failed, advance)
                self._align_round(prepared.target.label, round_no, windows, readings, notes)
        readings.apply(tree, groups, failed)
        few = readings.fewest_reports()
        if few is not None and few < s.min_reports:  # before the tree's meta copies the notes
            notes.append(f"some windows saw only {few} meter reports (wanted {s.min_reports})")
        tree.profile = s.profile
        tree.meta.update({
            "label": prepared.target.label,
            "calibration": {
                "meter": self.meter.name,
                "window_s": round(window_s, 6),
                "rounds": s.rounds,
                "cooldown_s": s.cooldown_s,
                "idle_power_w": round(self.idle.power_w, 4),
                "distinct_nodes": len(groups),
                "min_reports_per_window": few or 0,
                "max_round_spread": round(readings.max_spread(), 6),
                "unmeasured_nodes": len(failed),
                "meter_warnings": notes[:20],
                "measure_s": round(time.monotonic() - started, 3),
            },
            "host": self.hardware(),
            "energy_scope": self.meter.energy_scope,
            **(prepared.target.meta or {}),
        })
        for note in notes:
            self.warnings.append(f"{prepared.target.label}: {note}")
        try:
            append_trees(self.dataset, [tree])
        except (OSError, EOFError, ValueError, zlib.error) as exc:  # the disk filled, the file broke meanwhile
            raise rescue_trees(self.dataset, [tree], exc) from None
        # the captured inputs are every activation of the forward pass (GBs on a GPU for a
        # 1B model): release them now, or a run over many targets holds them all at once
        tree.calls = {}
        self.trees.append(tree)
        return tree

    def _run_round(
        self, prepared: Prepared, window_s: float, failed: dict[Hashable, str], advance: Callable[[str], None]
    ) -> list[tuple[Hashable, str, Any]]:
        """Run every distinct node once, back to back: ``[(group key, scope, RunWindow)]``.

        A node that cannot replay alone is noted in ``failed`` and skipped from
        then on; a meter that fails or falls silent stops the round at once
        (:class:`MeterError`), checked between and during the windows.
        """
        from pytest_irene.rig.runtime.runner import run_call

        windows = []
        for key, scopes in prepared.groups.items():
            if key not in failed:
                self._check_meter()
                try:
                    window = run_call(
                        prepared.tree.calls[scopes[0]],
                        window_s=window_s,
                        device=self.settings.device,
                        mark=self._sampler.sample_now,
                        check=self._check_meter,
                    )
                except MeterError:
                    raise  # the meter went silent or failed: stop now, finished trees are kept
                except Exception as exc:  # a node that cannot replay alone must not stop the others
                    failed[key] = f"{type(exc).__name__}: {exc}"
                else:
                    windows.append((key, scopes[0], window))
            advance(scope_label(scopes[0]))
        return windows

    def _align_round(
        self, label: str, round_no: int, windows: list[tuple[Hashable, str, Any]], readings: Readings, notes: list[str]
    ) -> None:
        """Match the meter's readings to one round's windows by timestamp (waits only for the last report)."""
        from pytest_irene.rig.runtime.runner import attribute

        for key, scope, window in windows:
            m = self.meter.energy_between(window.t_start_s, window.t_end_s)
            self.windows.append(WindowRecord(label, scope, round_no, window.executions, m.duration_s, m.energy_j, m.samples))
            readings.add(key, m.energy_j / window.executions, attribute(self._sampler, window, gpu=self._gpu_position()), m.samples)
            for w in m.warnings:
                if w not in notes:
                    notes.append(w)

    def _check_meter(self) -> None:
        self.meter.check_alive()

    def _gpu_position(self) -> int | None:
        if not self.settings.device.startswith("cuda") or not getattr(self._sampler, "gpu_names", None):
            return None
        import torch

        from pytest_irene.rig.runtime.runner import gpu_position

        return gpu_position(self._sampler, torch.device(self.settings.device))

    def hardware(self) -> dict[str, Any]:
        """The rig's hardware fingerprint plus the meter and idle power (recorded in model files)."""
        from pytest_irene.rig.runtime.fingerprint import host_fingerprint

        fp = dict(self._fingerprint() if self._fingerprint is not None else host_fingerprint())
        fp["meter"] = self.meter.name
        if self.idle is not None:
            fp["idle_power_w"] = round(self.idle.power_w, 3)
        return fp

    def note_measured_before(self, prepared: Sequence[Prepared]) -> None:
        """Say which targets' model and input size the dataset already holds: a re-run appends a
        second measurement beside the first (training weighs that size twice), which is what a
        user who meant to replace the old one must be told before the rig time is spent."""
        held = set(self.held_runs)
        again = [p.target.label for p in prepared if (p.tree.model_name, p.tree.batch_size, p.tree.seq_len) in held]
        if again:
            more = f" and {len(again) - 1} more" if len(again) > 1 else ""
            self._say(
                f"irene calibrate: note: {self.dataset} already holds {again[0]}{more}; the new measurement(s) "
                "are added beside the old ones and both train (remove the old lines to replace them)"
            )

    # -- the whole procedure -------------------------------------------------------------

    def run(self, targets: Sequence[Target]) -> list[EnergyTree]:
        """Prepare all targets, print the plan, check idle, measure each target in turn.

        Trees finished before a failure are already in the dataset when the
        failure propagates.
        """
        if not targets:
            raise CalibrationError("nothing to calibrate: no model given")
        # trace everything once for the plan, then again right before measuring: captured
        # inputs of every target held at once could exhaust memory on large grids
        prepared = [self.prepare(t) for t in targets]
        self._say(self.plan(prepared).describe())
        self.note_measured_before(prepared)
        del prepared
        if self.idle is None:
            self.check_idle()
        done = []
        for target in targets:
            p = self.prepare(target)
            try:
                done.append(self.measure(p))
            except MeterError as exc:
                raise CalibrationError(
                    f"the meter failed while measuring {p.target.label}: {str(exc).rstrip('.')}; "
                    f"{self.kept()}."
                ) from None
            self._say(f"irene calibrate: {p.target.label}: {p.tree.root.energy_j or 0:.4g} J per run -> {self.dataset}")
        return done


__all__ = [
    "DEFAULT_COOLDOWN_S", "DEFAULT_IDLE_CPU_PCT", "DEFAULT_IDLE_TOLERANCE", "DEFAULT_MIN_REPORTS", "DEFAULT_ROUNDS",
    "DEFAULT_WINDOW_S", "WARMUP_FRACTION", "CalibrationError", "CalibrationPlan", "CalibrationSettings", "Calibrator",
    "IdleReport", "Prepared", "Target", "WindowRecord", "cv_summary", "format_duration", "settings_dict",
    "train_rig_model",
]
