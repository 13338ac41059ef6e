"""What a calibration run is made of: its settings, targets, plan and records (no measuring here).

:class:`~pytest_irene.rig.calibration.Calibrator` does the measuring; these are
the values it takes and gives, kept apart so the CLI, the pytest plugin and the
GPU collection script can build and print them without the runner.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

from pytest_irene.engine.tree import EnergyTree
from pytest_irene.errors import IreneError, UsageError
from pytest_irene.validate import is_finite_number

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


class SettingError(UsageError):
    """A bad value of one named setting of a rig object (:class:`CalibrationSettings`, the emonPi emulator).

    ``setting`` is the keyword (``window_s``) and ``problem`` what is wrong with the
    value, so a front-end names its own option (``irene calibrate --window``)
    instead of a field the user never typed."""

    def __init__(self, setting: str, problem: str, owner: str = "calibration") -> None:
        self.setting = setting
        self.problem = problem
        super().__init__(f"{owner} setting {setting} {problem}")


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
        for name, positive in (("window_s", True), ("cooldown_s", False), ("idle_tolerance", False)):
            value = getattr(self, name)
            finite = is_finite_number(value)
            if not finite or (value <= 0 if positive else value < 0):
                bound = "positive (a finite number)" if positive else "a finite number >= 0"
                raise SettingError(name, f"must be {bound}, got {value!r}")
        for name, low in (("idle_power_w", 0.0), ("idle_window_s", 0.0)):  # optional, positive when given
            value = getattr(self, name)
            if value is not None and (not is_finite_number(value) or value <= low):
                raise SettingError(name, f"must be positive (a finite number), got {value!r}")
        value = self.idle_cpu_pct  # NaN would compare false and switch the idle CPU check off
        if not is_finite_number(value) or not 0 <= value <= 100:
            raise SettingError("idle_cpu_pct", f"must be a percentage from 0 to 100, got {value!r}")
        for name in ("rounds", "min_reports"):
            value = getattr(self, name)
            if not is_finite_number(value) or int(value) != value or value < 1:
                raise SettingError(name, f"must be a positive integer, got {value!r}")

        check_device(self.device)

    def node_window_s(self, meter_period_s: float) -> float:
        """The timed window per node for a meter reporting every ``meter_period_s``, s."""
        return max(self.window_s, self.min_reports * meter_period_s)


def check_device(device: str) -> None:
    """:class:`SettingError` unless torch can run on ``device`` here: a typo or a CUDA device on a
    host without one would otherwise end the run in a torch traceback once the meter is open."""
    if device == "cpu":
        return  # always there; and no torch import for the default
    import torch

    from pytest_irene.engine.devices import check_device as parse_device, unavailable_reason

    try:
        parsed = parse_device(device, "device")
    except UsageError:
        raise SettingError("device", f"{device!r} is not a torch device, e.g. cpu, cuda or cuda:1") from None
    if torch.device(parsed).type == "meta":
        raise SettingError("device", "'meta' holds no data and runs nothing: measure on cpu or cuda")
    reason = unavailable_reason(parsed)
    if reason is not None:
        raise SettingError("device", f"{device!r}: not available on this machine ({reason})")


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
    meter_period_s: float | None = None
    """The meter's report period the windows were sized with, s."""
    period_measured: bool = False
    """Whether that period was measured from the meter's reports (else it is the meter's nominal one)."""

    def describe(self) -> str:
        windows = sum(d for _, d, _ in self.targets)
        lines = [
            f"irene calibrate: {len(self.targets)} model call(s), {windows} distinct node(s) x {self.rounds} "
            f"round(s) x {self.window_s:.3g} s windows (+{WARMUP_FRACTION:.0%} warm-up), "
            f"cool-down {format_duration(self.cooldown_s)} between rounds, idle {format_duration(self.idle_s)}",
        ]
        for label, distinct, nodes in self.targets:
            lines.append(f"  {label}: {nodes} nodes, {distinct} distinct")
        if self.meter_period_s is not None:
            if self.period_measured:
                lines.append(f"meter reports every {self.meter_period_s:.3g} s (measured)")
            else:
                lines.append(
                    f"assuming the meter's nominal report period of {self.meter_period_s:.3g} s: windows and "
                    "rig time follow the period it really reports at once it is opened"
                )
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
