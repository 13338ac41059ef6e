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

import math
import statistics
import time
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pytest_irene.engine.dataset import append_trees
from pytest_irene.errors import IreneError, UsageError
from pytest_irene.rig.meters.base import MeterError, PowerMeter
from pytest_irene.engine.tree import EnergyNode, EnergyTree, scope_label

DEFAULT_WINDOW_S = 20.0
DEFAULT_ROUNDS = 5
DEFAULT_MIN_REPORTS = 10
DEFAULT_COOLDOWN_S = 30.0
DEFAULT_IDLE_TOLERANCE = 0.10
DEFAULT_IDLE_CPU_PCT = 15.0
#: The node runner warms up for this fraction of the window before timing it.
WARMUP_FRACTION = 0.2


class CalibrationError(IreneError):
    """Calibration cannot start or go on (machine not idle, nothing to measure, meter lost)."""


@dataclass(frozen=True)
class CalibrationSettings:
    """Every knob of a calibration run (defaults are the paper's procedure)."""

    window_s: float = DEFAULT_WINDOW_S
    """Minimum length of one node's timed window, s."""
    rounds: int = DEFAULT_ROUNDS
    """How many times every node is measured; energies are averaged over rounds."""
    min_reports: int = DEFAULT_MIN_REPORTS
    """Minimum meter reports per window; the window grows to ``min_reports x`` the meter's period."""
    cooldown_s: float = DEFAULT_COOLDOWN_S
    """Pause between rounds (the machine returns to its idle temperature and clocks), s."""
    idle_window_s: float | None = None
    """Length of the idle measurement, s (default: the node window)."""
    idle_tolerance: float = DEFAULT_IDLE_TOLERANCE
    """Refuse to start when idle-window power exceeds the idle reference by more than this fraction."""
    idle_power_w: float | None = None
    """The rig's known idle power, W (e.g. from an earlier calibration). Without it the reference
    is the lowest report of the idle window, so a machine whose load varies is refused."""
    idle_cpu_pct: float = DEFAULT_IDLE_CPU_PCT
    """Refuse to start when CPU utilisation during the idle window exceeds this, %."""
    device: str = "cpu"
    """Torch device the model runs on (``cpu``, ``cuda:0``)."""
    profile: str = "rig"
    """Name of the rig's profile: the ``device`` field of the dataset lines and the model's profile."""

    def __post_init__(self) -> None:
        for name in ("window_s", "cooldown_s", "idle_tolerance"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise UsageError(f"calibration setting {name} must be a finite number >= 0, got {value!r}")
        if self.window_s <= 0:
            raise UsageError(f"calibration window must be positive, got {self.window_s} s")
        if int(self.rounds) != self.rounds or self.rounds < 1:
            raise UsageError(f"calibration rounds must be a positive integer, got {self.rounds!r}")
        if int(self.min_reports) != self.min_reports or self.min_reports < 1:
            raise UsageError(f"calibration min_reports must be a positive integer, got {self.min_reports!r}")

    def node_window_s(self, meter_period_s: float) -> float:
        """The timed window per node for a meter reporting every ``meter_period_s``, s."""
        return max(self.window_s, self.min_reports * meter_period_s)


@dataclass(frozen=True)
class IdleReport:
    """The machine's power with nothing running."""

    power_w: float
    """Mean power over the idle window, W."""
    reference_w: float
    """What it was compared with: the known idle power, or the lowest report in the window, W."""
    min_power_w: float
    max_power_w: float
    reports: int
    """Meter reports inside the idle window."""
    cpu_pct: float | None
    """Host CPU utilisation during the idle window, %."""
    duration_s: float


@dataclass(frozen=True)
class WindowRecord:
    """One measured window: a node run repeatedly while the meter integrated its power."""

    label: str
    """The target's label."""
    scope: str
    """The first scope of the node's signature group (``""``: the whole model)."""
    round: int
    executions: int
    duration_s: float
    energy_j: float
    """Wall energy of the whole window, J."""
    reports: int
    """Meter reports inside the window."""


@dataclass
class Target:
    """One model call to calibrate."""

    model: Any
    """The ``torch.nn.Module``."""
    inputs: Any
    """Its inputs (tensor, tuple or dict of tensors)."""
    label: str = "default"
    """A name for messages and the dataset's ``meta``."""
    model_name: str | None = None
    batch_size: int | None = None
    seq_len: int | None = None
    meta: dict[str, Any] | None = None
    """Extra line-level information stored in the tree's ``meta`` (e.g. the test's node id)."""


@dataclass
class Prepared:
    """A target traced on the rig's device, with its captured calls grouped by signature."""

    target: Target
    tree: EnergyTree
    groups: dict[Hashable, list[str]]
    """Scopes sharing one signature, keyed by signature, in execution order."""

    @property
    def windows_per_round(self) -> int:
        return len(self.groups)


@dataclass(frozen=True)
class CalibrationPlan:
    """How long the rig will be busy, computed before anything runs."""

    targets: tuple[tuple[str, int, int], ...]
    """``(label, distinct nodes, nodes)`` per target."""
    window_s: float
    rounds: int
    cooldown_s: float
    idle_s: float
    total_s: float

    def describe(self) -> str:
        windows = sum(d for _, d, _ in self.targets)
        lines = [
            f"irene calibrate: {len(self.targets)} model call(s), {windows} distinct node(s) x {self.rounds} "
            f"round(s) x {self.window_s:.3g} s windows (+{WARMUP_FRACTION:.0%} warm-up), "
            f"cool-down {self.cooldown_s:g} s between rounds, idle {self.idle_s:g} s",
        ]
        for label, distinct, nodes in self.targets:
            lines.append(f"  {label}: {nodes} nodes, {distinct} distinct")
        lines.append(f"planned rig time: {format_duration(self.total_s)}")
        return "\n".join(lines)


def format_duration(seconds: float) -> str:
    """``1 h 02 min``, ``3 min 20 s``, ``12.5 s``, ``0.04 s``."""
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _to_device(value: Any, device: Any) -> Any:
    import torch

    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: _to_device(v, device) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(_to_device(v, device) for v in value)
    return value


def _root_call(model: Any, inputs: Any) -> tuple[Any, tuple[Any, ...], dict[str, Any]]:
    if isinstance(inputs, dict):
        return (model, (), dict(inputs))
    if isinstance(inputs, (tuple, list)):
        return (model, tuple(inputs), {})
    return (model, (inputs,), {})


def _mean_features(rows: list[dict[str, float]]) -> dict[str, float]:
    keys = {k for row in rows for k in row}
    out = {}
    for key in sorted(keys):
        values = [row[key] for row in rows if key in row and row[key] is not None]
        if values:
            out[key] = float(statistics.fmean(values))
    return out


def _powers_in(samples: Sequence[Any], t0: float, t1: float, *, kind: str, parts: int = 10) -> list[float]:
    """The power readings inside ``[t0, t1]``, W: the reports of a power meter, or the mean
    power over about ``parts`` sub-intervals of a counter meter's readings."""
    inside = [x for x in samples if t0 <= x.t_s <= t1]
    if kind == "power":
        return [x.power_w for x in inside if x.power_w is not None]
    powers, last = [], None
    step = (t1 - t0) / parts
    for x in inside:
        if x.energy_j is None:
            continue
        if last is not None and x.t_s - last.t_s >= step:
            powers.append((x.energy_j - last.energy_j) / (x.t_s - last.t_s))
            last = x
        elif last is None:
            last = x
    return powers


class Calibrator:
    """Runs calibration against one meter and appends finished trees to a dataset.

    Use as a context manager (opens the meter and the resource sampler)::

        with Calibrator(meter, settings, "rig.jsonl.gz") as cal:
            cal.check_idle()
            trees = cal.run([Target(model, inputs, "bert")])

    ``say`` prints one line for humans (plans, idle, warnings); ``progress``
    (default: a rich progress bar on stderr) can be turned off; ``fingerprint``
    replaces :func:`~pytest_irene.rig.runtime.host_fingerprint` (a pinned rig identity).
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
    ) -> None:
        self.meter = meter
        self.settings = settings
        self.dataset = Path(dataset)
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
        self.warnings: list[str] = []
        self.windows: list[WindowRecord] = []
        """Every window measured in this run, for diagnostics."""

    # -- lifecycle -----------------------------------------------------------------------

    def open(self) -> Calibrator:
        """Open the meter (waiting for its first readings) and start the resource sampler."""
        self.meter.start()
        self.meter.wait_for_samples(2)
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
        powers = _powers_in(self.meter.samples(), t0, t1, kind=self.meter.kind) or [m.power_w]
        cpu = self._sampler.window(t0, t1).get("cpu")
        reference = s.idle_power_w if s.idle_power_w is not None else min(powers)
        report = IdleReport(
            power_w=m.power_w,
            reference_w=reference,
            min_power_w=min(powers),
            max_power_w=max(powers),
            reports=m.samples,
            cpu_pct=cpu,
            duration_s=t1 - t0,
        )
        problems = []
        if reference > 0 and m.power_w > reference * (1 + s.idle_tolerance):
            what = "the rig's idle power" if s.idle_power_w is not None else "the lowest report in the idle window"
            problems.append(
                f"it draws {m.power_w:.1f} W, {100 * (m.power_w / reference - 1):.0f} % above {what} "
                f"({reference:.1f} W; tolerance {100 * s.idle_tolerance:.0f} %)"
            )
        if cpu is not None and cpu > s.idle_cpu_pct:
            problems.append(f"the CPU is {cpu:.0f} % busy (limit {s.idle_cpu_pct:.0f} %)")
        if problems:
            raise CalibrationError(
                "refusing to calibrate: the machine is not idle: "
                + "; ".join(problems)
                + ". Stop other jobs (training, builds, browsers), let it cool down and retry; "
                "raise the idle tolerance only if this load is part of the machine's normal state."
            )
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
        import torch

        from pytest_irene.rig.runtime.runner import distinct_signatures, without_cache
        from pytest_irene.engine.tracing import trace

        dev = torch.device(self.settings.device)
        model = target.model.to(dev).eval()
        inputs = without_cache(model, _to_device(target.inputs, dev))
        kwargs: dict[str, Any] = {"device": str(dev), "capture": True, "model_name": target.model_name}
        if target.batch_size is not None:
            kwargs["batch_size"] = target.batch_size
        if target.seq_len is not None:
            kwargs["seq_len"] = target.seq_len
        tree = trace(model, inputs, **kwargs)
        if "" not in tree.calls:
            tree.calls[""] = _root_call(model, inputs)
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
        )

    # -- measuring -----------------------------------------------------------------------

    @contextmanager
    def _progress(self, total: int, description: str) -> Iterator[Callable[[str], None]]:
        if not self._progress_enabled:
            yield lambda text: None
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        console = self._console or Console(stderr=True)
        columns = (
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[node]}"),
        )
        with Progress(*columns, console=console, transient=False) as bar:
            task = bar.add_task(description, total=total, node="")

            def advance(node: str) -> None:
                bar.update(task, advance=1, node=node)

            yield advance

    def measure(self, prepared: Prepared) -> EnergyTree:
        """Measure every distinct node of ``prepared`` for all rounds; append the tree; return it."""
        from pytest_irene.rig.runtime.runner import attribute, run_call

        if self.idle is None:
            raise CalibrationError("measure idle power first (Calibrator.check_idle)")
        s = self.settings
        tree, groups = prepared.tree, prepared.groups
        window_s = self.window_s
        energies: dict[Hashable, list[float]] = {k: [] for k in groups}
        features: dict[Hashable, list[dict[str, float]]] = {k: [] for k in groups}
        reports: dict[Hashable, list[int]] = {k: [] for k in groups}
        failed: dict[Hashable, str] = {}
        notes: list[str] = []
        started = time.monotonic()
        total = s.rounds * len(groups)
        with self._progress(total, f"calibrating {prepared.target.label}") as advance:
            for round_no in range(s.rounds):
                if round_no:
                    self._sleep(s.cooldown_s)
                windows = []
                for key, scopes in groups.items():
                    if key in failed:
                        advance(scope_label(scopes[0]))
                        continue
                    self._check_meter()
                    try:
                        window = run_call(
                            tree.calls[scopes[0]],
                            window_s=window_s,
                            device=s.device,
                            mark=self._sampler.sample_now,
                            check=self._check_meter,
                        )
                    except MeterError:
                        raise  # the meter went silent or failed: stop now, finished trees are kept
                    except Exception as exc:  # a node that cannot replay alone must not stop the others
                        failed[key] = f"{type(exc).__name__}: {exc}"
                        advance(scope_label(scopes[0]))
                        continue
                    windows.append((key, scopes[0], window))
                    advance(scope_label(scopes[0]))
                # align meter readings with this round's windows (waits only for the last report)
                for key, scope, window in windows:
                    m = self.meter.energy_between(window.t_start_s, window.t_end_s)
                    self.windows.append(
                        WindowRecord(
                            prepared.target.label, scope, round_no, window.executions, m.duration_s, m.energy_j, m.samples
                        )
                    )
                    energies[key].append(m.energy_j / window.executions)
                    reports[key].append(m.samples)
                    features[key].append(attribute(self._sampler, window, gpu=self._gpu_position()))
                    for w in m.warnings:
                        if w not in notes:
                            notes.append(w)
        self._apply(tree, groups, energies, features, failed)
        few = [min(r) for r in reports.values() if r]
        spreads = [
            statistics.pstdev(e) / statistics.fmean(e) for e in energies.values() if len(e) > 1 and statistics.fmean(e) > 0
        ]
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
                "min_reports_per_window": min(few) if few else 0,
                "max_round_spread": round(max(spreads), 6) if spreads else 0.0,
                "unmeasured_nodes": len(failed),
                "meter_warnings": notes[:20],
                "measure_s": round(time.monotonic() - started, 3),
            },
            "host": self.hardware(),
            "energy_scope": self.meter.energy_scope,
            **(prepared.target.meta or {}),
        })
        if few and min(few) < s.min_reports:
            notes.append(f"some windows saw only {min(few)} meter reports (wanted {s.min_reports})")
        for note in notes:
            self.warnings.append(f"{prepared.target.label}: {note}")
        append_trees(self.dataset, [tree])
        # the captured inputs are every activation of the forward pass (GBs on a GPU for a
        # 1B model): release them now, or a run over many targets holds them all at once
        tree.calls = {}
        self.trees.append(tree)
        return tree

    def _apply(
        self,
        tree: EnergyTree,
        groups: dict[Hashable, list[str]],
        energies: dict[Hashable, list[float]],
        features: dict[Hashable, list[dict[str, float]]],
        failed: dict[Hashable, str],
    ) -> None:
        by_scope: dict[str, EnergyNode] = {n.scope: n for n in tree.walk()}
        for key, scopes in groups.items():
            values = energies[key]
            feats = _mean_features(features[key]) if features[key] else {}
            for scope in scopes:
                node = by_scope[scope]
                if values:
                    node.energy_j = float(statistics.fmean(values))
                    node.features.update(feats)
                else:
                    node.notes["unmeasured"] = failed.get(key, "not measured")
        for node in tree.walk():
            if node.scope not in tree.calls and "unmeasured" not in node.notes:
                node.notes["unmeasured"] = "no captured call for this node"

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
        self._say(self.plan([self.prepare(t) for t in targets]).describe())
        if self.idle is None:
            self.check_idle()
        done = []
        for target in targets:
            p = self.prepare(target)
            try:
                done.append(self.measure(p))
            except MeterError as exc:
                raise CalibrationError(
                    f"the meter failed while measuring {p.target.label}: {exc}. "
                    f"{len(self.trees)} finished tree(s) are in {self.dataset}."
                ) from None
            self._say(f"irene calibrate: {p.target.label}: {p.tree.root.energy_j or 0:.4g} J per run -> {self.dataset}")
        return done


def train_rig_model(
    dataset_paths: Sequence[str | Path],
    output: str | Path,
    *,
    profile: str,
    hardware: dict[str, Any] | None = None,
    prior: str | Path | None = None,
) -> Any:
    """Retrain the regressors on the rig's dataset(s) and save an energy model file; returns it.

    With ``prior`` (a profile name or model file) the model is a transfer of that prior
    (:func:`pytest_irene.engine.predict.transfer.transfer_energy_model`): a few measured
    trees suffice. The ``all`` feature set (model + resource features) is trained only when every
    tree carries every resource feature: a CPU-only rig has no GPU features, so
    its model predicts from model features (and says so in its ``feature_sets``).
    """
    from pytest_irene.engine.dataset import load_dataset
    from pytest_irene.engine.predict.training import train_energy_model
    from pytest_irene.engine.tree import RESOURCE_FEATURES

    paths = [str(p) for p in dataset_paths]
    trees = load_dataset(*paths)
    complete = bool(trees) and all(all(f in t.root.features for f in RESOURCE_FEATURES) for t in trees)
    feature_sets = ("model", "all") if complete else ("model",)
    if prior is not None:
        from pytest_irene.engine.predict.transfer import transfer_energy_model

        model = transfer_energy_model(paths, prior=prior, profile=profile, hardware=hardware, feature_sets=feature_sets)
    else:
        model = train_energy_model(paths, profile=profile, hardware=hardware, feature_sets=feature_sets)
    model.save(output)
    return model


def cv_summary(model: Any) -> list[str]:
    """One line per feature set with the model file's cross-validation errors (average %, per level)."""
    lines = []
    for name, result in (getattr(model, "cv_errors", None) or {}).items():
        if not isinstance(result, dict):
            continue
        levels = result.get("levels") or {}
        parts = []
        for level in ("ml", "module", "model"):
            row = levels.get(level)
            value = row.get("average") if isinstance(row, dict) else None
            if isinstance(value, (int, float)) and math.isfinite(value):
                parts.append(f"{level} {value:.2f} %")
        if parts:
            lines.append(f"cross-validation ({name} features, {result.get('split')} split): " + ", ".join(parts))
        elif result.get("note"):
            lines.append(f"cross-validation ({name} features): {result['note']}")
    return lines


def settings_dict(settings: CalibrationSettings) -> dict[str, Any]:
    """The settings as a JSON-able dict (for reports)."""
    return asdict(settings)


__all__ = [
    "CalibrationError",
    "CalibrationPlan",
    "CalibrationSettings",
    "Calibrator",
    "IdleReport",
    "Prepared",
    "Target",
    "WindowRecord",
    "format_duration",
    "train_rig_model",
    "cv_summary",
]
