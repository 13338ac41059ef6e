"""Ground-truth collection against the emonPi emulator: idle check, windows, alignment, storage.

These tests build the captured-call tree by hand (forward pre-hooks), so they
exercise calibration independently of the tracer; the end-to-end tests in
``test_calibration_e2e.py`` go through ``trace``.
"""

from __future__ import annotations

import gzip
import json
import threading
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from pytest_irene.rig.calibration import (  # noqa: E402
    CalibrationError,
    CalibrationSettings,
    Calibrator,
    Prepared,
    Target,
    format_duration,
)
from pytest_irene.rig.calibration_idle import powers_in  # noqa: E402
from pytest_irene.engine.dataset import load_dataset  # noqa: E402
from pytest_irene.errors import UsageError  # noqa: E402
from pytest_irene.rig.meters import MeterError, PowerSample  # noqa: E402
from pytest_irene.rig.runtime.runner import distinct_signatures  # noqa: E402
from pytest_irene.engine.tree import EnergyNode, EnergyTree  # noqa: E402

FAST = dict(window_s=0.25, rounds=2, min_reports=4, cooldown_s=0.05, idle_cpu_pct=100.0, idle_tolerance=0.5)


class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Linear(32, 32)
        self.b = torch.nn.Linear(32, 32)  # same signature as ``a``: measured once, shared
        self.c = torch.nn.Linear(32, 8)

    def forward(self, x):
        return self.c(torch.relu(self.b(self.a(x))))


def hooked(model: torch.nn.Module, x) -> Prepared:
    """Model tree with one captured call per module (the tracer's ``capture=True`` output, by hand)."""
    root = EnergyNode("", type(model).__name__, "model")
    calls = {"": (model, (x,), {})}
    handles = []
    for name, mod in model.named_children():
        root.add_child(EnergyNode(name, type(mod).__name__, "ml"))
        handles.append(mod.register_forward_pre_hook(lambda m, args, name=name: calls.__setitem__(name, (m, args, {}))))
    with torch.inference_mode():
        model(x)
    for handle in handles:
        handle.remove()
    tree = EnergyTree(root, model_name="tiny", batch_size=4, seq_len=8, calls=calls)
    tree.set_tree_features()
    return Prepared(Target(model, x, "tiny"), tree, distinct_signatures(tree))


def calibrator(reader, tmp_path: Path, *, progress=False, **overrides) -> Calibrator:
    settings = CalibrationSettings(**{**FAST, **overrides})
    lines: list[str] = []
    cal = Calibrator(reader, settings, tmp_path / "rig.jsonl.gz", say=lines.append, progress=progress)
    cal.lines = lines  # type: ignore[attr-defined]
    return cal


def test_settings_are_validated() -> None:
    with pytest.raises(UsageError, match="rounds must be a positive integer"):
        CalibrationSettings(rounds=0)
    with pytest.raises(UsageError, match="window_s must be positive"):
        CalibrationSettings(window_s=0)
    with pytest.raises(UsageError, match="cooldown_s must be a finite number"):
        CalibrationSettings(cooldown_s=float("nan"))
    # the window grows to cover enough meter reports: 10 reports of a 9.8 s emonPi
    assert CalibrationSettings().node_window_s(9.8) == pytest.approx(98.0)
    assert CalibrationSettings().node_window_s(0.5) == 20.0


def test_format_duration() -> None:
    assert format_duration(12.46) == "12.5 s"
    assert format_duration(0.04) == "0.04 s"
    assert format_duration(200) == "3 min 20 s"
    assert format_duration(3720) == "1 h 02 min"


def test_nodes_get_wall_energy_per_execution(emonpi_emulator, emonpi_reader, tmp_path: Path) -> None:
    emulator = emonpi_emulator("kv", power_fn=lambda: 120.0)
    with calibrator(emonpi_reader(emulator), tmp_path) as cal:
        cal.check_idle()
        prepared = hooked(Tiny(), torch.randn(4, 32))
        assert prepared.windows_per_round == 3  # model, a=b, c
        plan = cal.plan([prepared])
        assert plan.total_s == pytest.approx(2 * 3 * 0.25 * 1.2 + 0.05 + 2 * emulator.period_s, rel=0.01)
        assert "planned rig time" in plan.describe()
        tree = cal.measure(prepared)
    assert len(cal.windows) == 2 * 3
    for w in cal.windows:  # a steady 120 W integrated over each window
        assert w.energy_j == pytest.approx(120.0 * w.duration_s, rel=1e-6)
        assert w.duration_s >= 0.25 and w.reports >= 3
    for node in tree.walk():
        # one execution costs 120 W x (window / executions), averaged over rounds
        runs = [w for w in cal.windows if w.scope == ("a" if node.scope == "b" else node.scope)]
        expected = sum(120.0 * w.duration_s / w.executions for w in runs) / len(runs)
        assert node.energy_j == pytest.approx(expected, rel=1e-6), node.scope
        assert node.energy_j >= 120.0 * node.features["latency_s"] * 0.9
        assert "cpu" in node.features and "mem" in node.features and "latency_s" in node.features
    assert tree["a"].energy_j == tree["b"].energy_j  # identical signatures share one measurement
    meta = tree.meta["calibration"]
    assert meta["rounds"] == 2 and meta["distinct_nodes"] == 3 and meta["idle_power_w"] == pytest.approx(120.0)
    assert meta["min_reports_per_window"] >= 3
    assert tree.profile == "rig" and tree.meta["host"]["meter"].startswith("emonPi on /dev/pts/")
    stored = load_dataset(tmp_path / "rig.jsonl.gz")
    assert len(stored) == 1
    assert stored[0].root.energy_j == pytest.approx(tree.root.energy_j)
    assert stored[0]["c"].energy_j == pytest.approx(tree["c"].energy_j)


def test_the_plan_uses_the_period_the_meter_really_reports_at(emonpi_emulator, emonpi_reader, tmp_path: Path) -> None:
    """A reader told the firmware's default period (9.8 s) planned 40 s windows for a meter reporting
    every 0.05 s; before the meter is opened the plan says it assumes the nominal period."""
    from pytest_irene.rig.meters.emonpi import EmonPiReader

    emulator = emonpi_emulator("kv", power_fn=lambda: 100.0)
    prepared = hooked(Tiny(), torch.randn(4, 32))
    unopened = EmonPiReader(emulator.path, emulator.baud, period_s=9.8)  # as --plan-only: never started
    before = calibrator(unopened, tmp_path).plan([prepared])
    assert before.window_s == pytest.approx(4 * 9.8) and not before.period_measured
    assert "assuming the meter's nominal report period of 9.8 s" in before.describe()
    with calibrator(emonpi_reader(emulator, period_s=9.8), tmp_path) as cal:
        plan = cal.plan([prepared])
    # FAST's window, not 4 x 9.8 s; on a loaded machine the measured period can pass 0.0625 s, and
    # then min_reports periods (a little over 0.25 s) set the window, as they should
    expected = max(FAST["window_s"], FAST["min_reports"] * plan.meter_period_s)
    assert plan.period_measured and plan.window_s == pytest.approx(expected) and plan.window_s < 1.0
    assert plan.meter_period_s == pytest.approx(emulator.period_s, rel=0.5)
    assert f"meter reports every {plan.meter_period_s:.3g} s (measured)" in plan.describe()


def test_energy_follows_the_power_the_node_draws(emonpi_emulator, emonpi_reader, tmp_path: Path) -> None:
    """Windows are aligned by timestamps: a node measured while the meter reports more power costs more."""
    emulator = emonpi_emulator("jeelib", power_fn=lambda: 100.0)
    with calibrator(emonpi_reader(emulator), tmp_path, rounds=1) as cal:
        cal.check_idle()
        low = cal.measure(hooked(Tiny(), torch.randn(4, 32)))
        emulator._power_fn = lambda: 300.0
        high = cal.measure(hooked(Tiny(), torch.randn(4, 32)))
    assert low.root.energy_j is not None and high.root.energy_j is not None
    low_w, high_w = cal.windows[: len(cal.windows) // 2], cal.windows[len(cal.windows) // 2 :]
    assert sum(w.energy_j for w in low_w) / sum(w.duration_s for w in low_w) == pytest.approx(100.0, rel=0.02)
    assert sum(w.energy_j for w in high_w) / sum(w.duration_s for w in high_w) == pytest.approx(300.0, rel=0.02)
    assert len(load_dataset(tmp_path / "rig.jsonl.gz")) == 2


def test_refuses_to_start_above_the_rigs_idle_power(emonpi_emulator, emonpi_reader, tmp_path: Path) -> None:
    emulator = emonpi_emulator("kv", power_fn=lambda: 180.0)
    with calibrator(emonpi_reader(emulator), tmp_path, idle_power_w=100.0, idle_tolerance=0.1) as cal:
        with pytest.raises(CalibrationError, match=r"not idle: it draws 180.0 W, 80 % above the rig's idle power"):
            cal.check_idle()
        assert cal.idle is None
        with pytest.raises(CalibrationError, match="measure idle power first"):
            cal.measure(hooked(Tiny(), torch.randn(4, 32)))
    assert not (tmp_path / "rig.jsonl.gz").exists()


def test_refuses_to_start_while_load_varies(emonpi_emulator, emonpi_reader, tmp_path: Path) -> None:
    state = {"watts": 100.0}
    emulator = emonpi_emulator("kv", power_fn=lambda: state["watts"])

    def sleep(seconds: float) -> None:  # a job starts in the middle of the idle window
        time.sleep(seconds / 2)
        state["watts"] = 400.0
        time.sleep(seconds / 2)

    with calibrator(emonpi_reader(emulator), tmp_path, idle_tolerance=0.1, idle_window_s=0.5) as cal:
        cal._sleep = sleep
        with pytest.raises(CalibrationError, match="above the lowest report in the idle window"):
            cal.check_idle()


def test_refuses_to_start_while_the_cpu_is_busy(emonpi_emulator, emonpi_reader, tmp_path: Path) -> None:
    emulator = emonpi_emulator("kv", power_fn=lambda: 100.0)
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            pass

    busy = threading.Thread(target=spin, daemon=True)
    with calibrator(emonpi_reader(emulator), tmp_path, idle_cpu_pct=0.0) as cal:
        busy.start()  # a CPU-bound thread keeps utilisation above 0 % for certain
        try:
            with pytest.raises(CalibrationError, match=r"the CPU is \d+ % busy \(limit 0 %\).*Stop other jobs"):
                cal.check_idle()
        finally:
            stop.set()
            busy.join()


def test_meter_failure_keeps_finished_trees(emonpi_emulator, emonpi_reader, tmp_path: Path, monkeypatch) -> None:
    emulator = emonpi_emulator("kv", power_fn=lambda: 100.0)
    reader = emonpi_reader(emulator)
    cal = calibrator(reader, tmp_path, rounds=1)
    targets = [Target(Tiny(), torch.randn(4, 32), "first"), Target(Tiny(), torch.randn(4, 32), "second")]
    monkeypatch.setattr(cal, "prepare", lambda target: hooked(target.model, target.inputs))

    def say(line: str) -> None:
        if "J per run" in line:  # the first tree is stored: now pull the plug
            emulator.stop()

    cal._say = say
    with cal:
        with pytest.raises(CalibrationError, match=r"meter failed while measuring tiny: .*; the 1 tree\(s\) this run finished are in .*\(1 in all\)") as info:
            cal.run(targets)
    assert ".." not in str(info.value)  # the meter's own sentence end is not doubled
    assert len(load_dataset(tmp_path / "rig.jsonl.gz")) == 1


def test_a_rerun_of_a_measured_size_says_it_is_added_beside_the_old(emonpi_emulator, emonpi_reader, tmp_path: Path,
                                                                    monkeypatch) -> None:
    emulator = emonpi_emulator("kv", power_fn=lambda: 100.0)
    for run in range(2):
        cal = calibrator(emonpi_reader(emulator), tmp_path, rounds=1)
        monkeypatch.setattr(cal, "prepare", lambda target: hooked(target.model, target.inputs))
        with cal:
            assert len(cal.held_runs) == run
            cal.run([Target(Tiny(), torch.randn(4, 32), "tiny")])
        notes = [line for line in cal.lines if "already holds" in line]
        if run == 0:
            assert notes == []
        else:  # the same model and input size again: two measurements of one size will train
            assert notes == [f"irene calibrate: note: {tmp_path / 'rig.jsonl.gz'} already holds tiny; the new "
                             "measurement(s) are added beside the old ones and both train (remove the old lines "
                             "to replace them)"]
    assert len(load_dataset(tmp_path / "rig.jsonl.gz")) == 2


def test_a_tree_whose_append_fails_is_rescued_not_lost(emonpi_emulator, emonpi_reader, tmp_path: Path, monkeypatch) -> None:
    import pytest_irene.rig.calibration as calibration

    def full_disk(path, trees):
        raise OSError(28, "No space left on device")

    emulator = emonpi_emulator("kv", power_fn=lambda: 100.0)
    monkeypatch.setattr(calibration, "append_trees", full_disk)
    with calibrator(emonpi_reader(emulator), tmp_path, rounds=1) as cal:
        cal.check_idle()
        with pytest.raises(CalibrationError, match=r"cannot append to .*rig\.jsonl\.gz \(No space left on device\); "
                           r"the measured tree\(s\) were written to .*rig\.rescued-\d+\.jsonl"):
            cal.measure(hooked(Tiny(), torch.randn(4, 32)))
    (rescued,) = tmp_path.glob("rig.rescued-*.jsonl")
    assert load_dataset(rescued)[0].root.energy_j > 0


def test_a_node_that_cannot_replay_is_marked_not_fatal(emonpi_emulator, emonpi_reader, tmp_path: Path) -> None:
    emulator = emonpi_emulator("kv", power_fn=lambda: 100.0)
    prepared = hooked(Tiny(), torch.randn(4, 32))

    def broken(*args):
        raise RuntimeError("needs state from the forward pass")

    key = next(k for k, scopes in prepared.groups.items() if scopes == ["c"])
    prepared.tree.calls["c"] = (broken, (), {})
    with calibrator(emonpi_reader(emulator), tmp_path, rounds=1) as cal:
        cal.check_idle()
        tree = cal.measure(prepared)
    assert key in prepared.groups
    assert tree["c"].energy_j is None and "needs state" in tree["c"].notes["unmeasured"]
    assert tree["a"].energy_j is not None
    assert tree.meta["calibration"]["unmeasured_nodes"] == 1


def test_progress_bar_and_meter_warnings(emonpi_emulator, emonpi_reader, tmp_path: Path) -> None:
    from rich.console import Console

    out = Path(tmp_path / "progress.txt")
    emulator = emonpi_emulator("kv", power_fn=lambda: 100.0, fault="drop", fault_after=1)
    with out.open("w") as handle:
        console = Console(file=handle, force_terminal=False, width=100)
        cal = calibrator(emonpi_reader(emulator), tmp_path, rounds=1, progress=True)
        cal._console = console
        with cal:
            cal.check_idle()
            tree = cal.measure(hooked(Tiny(), torch.randn(4, 32)))
    text = out.read_text()
    assert "calibrating tiny" in text and "3/3" in text
    assert any("report(s) missing" in w for w in tree.meta["calibration"]["meter_warnings"])
    assert any("report(s) missing" in w for w in cal.warnings)
    raw = json.loads(gzip.decompress((tmp_path / "rig.jsonl.gz").read_bytes()))
    assert raw["format"] == "irene-tree/1" and raw["device"] == "rig"


def test_too_few_reports_per_window_is_recorded_in_the_tree_as_printed(emonpi_emulator, emonpi_reader, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The note was appended after the tree's meta had copied the notes: printed, never recorded."""
    from pytest_irene.rig.meters.emonpi import EmonPiReader

    reader = emonpi_reader(emonpi_emulator("kv", power_fn=lambda: 100.0))
    real = EmonPiReader.period_s.fget
    monkeypatch.setattr(EmonPiReader, "period_s", property(lambda self: real(self) / 4))  # windows sized too short
    cal = calibrator(reader, tmp_path, rounds=1, window_s=0.05)
    with cal:
        cal.check_idle()
        tree = cal.measure(hooked(Tiny(), torch.randn(4, 32)))
    note = f"some windows saw only {tree.meta['calibration']['min_reports_per_window']} meter reports (wanted 4)"
    assert note in tree.meta["calibration"]["meter_warnings"] and f"tiny: {note}" in cal.warnings


def test_meter_that_never_reports_is_a_clear_error(emonpi_emulator, emonpi_reader, tmp_path: Path) -> None:
    emulator = emonpi_emulator("kv", fault="silence", fault_after=0)
    reader = emonpi_reader(emulator, timeout_s=0.5)
    with pytest.raises(MeterError, match="no report in 0.5 s, only .* other line\\(s\\) such as '\\|Format: key:value'"):
        calibrator(reader, tmp_path).open()


def test_idle_powers_of_a_counter_meter_come_from_counter_differences() -> None:
    # a RAPL/NVML counter polled every 0.1 s: 50 W for 1 s, then 150 W for 1 s
    samples = [PowerSample(t_s=i / 10, energy_j=5.0 * i if i <= 10 else 50.0 + 15.0 * (i - 10)) for i in range(21)]
    powers = powers_in(samples, 0.0, 2.0, kind="counter", parts=4)
    assert powers == pytest.approx([50.0, 50.0, 150.0, 150.0])
    reports = [PowerSample(t_s=1.0, power_w=80.0), PowerSample(t_s=2.0, power_w=90.0), PowerSample(t_s=3.0, power_w=1.0)]
    # the report at 3.0 s gives the power of (2.0, 3.0]: the window's last half second, which its mean holds
    assert powers_in(reports, 0.5, 2.5, kind="power") == [80.0, 90.0, 1.0]
    assert powers_in(reports[:2], 0.5, 2.5, kind="power") == [80.0, 90.0]  # no report after the window yet


def test_decoders_replay_without_a_cache_and_release_their_inputs(emonpi_emulator, emonpi_reader, tmp_path: Path) -> None:
    """A key/value cache grows with every replayed attention call (found reading the CUDA path:
    ``measure_tree`` turned it off, calibration did not); and the captured activations of a
    finished tree must not stay alive while the next target runs (GBs on a GPU)."""
    from pytest_irene.engine.architectures import build_model, example_inputs

    model = build_model("gpt2", device="cpu", n_layer=1, n_embd=32, n_head=2)
    emulator = emonpi_emulator("kv", power_fn=lambda: 120.0)
    with calibrator(emonpi_reader(emulator), tmp_path, rounds=1) as cal:
        cal.check_idle()
        prepared = cal.prepare(Target(model, example_inputs(model, 2, 8, device="cpu"), "gpt2", "gpt2"))
        _, _, root_kwargs = prepared.tree.calls[""]
        assert root_kwargs["use_cache"] is False
        tree = cal.measure(prepared)
    assert tree.calls == {} and tree.root.energy_j > 0
    assert tree.energy_scope == "wall"  # an emonPi measures at the wall


def test_a_meter_gone_silent_stops_within_a_few_periods_not_a_round(
    emonpi_emulator, emonpi_reader, tmp_path: Path, monkeypatch
) -> None:
    """Issue 11: silence was only noticed when a round's readings were aligned (5 rounds x
    20 s windows by default); now the window itself stops within a few report periods."""
    import dataclasses

    emulator = emonpi_emulator("kv", power_fn=lambda: 100.0)
    reader = emonpi_reader(emulator)  # reports every 0.05 s: silent after max(3 periods, 0.5 s)
    cal = calibrator(reader, tmp_path, rounds=1)
    targets = [Target(Tiny(), torch.randn(4, 32), "first"), Target(Tiny(), torch.randn(4, 32), "second")]
    monkeypatch.setattr(cal, "prepare", lambda target: hooked(target.model, target.inputs))
    switched: list[float] = []

    def say(line: str) -> None:
        if "J per run" in line:  # the first tree is stored: long windows from now on, and the meter falls silent
            cal.settings = dataclasses.replace(cal.settings, window_s=20.0, rounds=5)
            emulator.fault, emulator.fault_after = "silence", 0
            switched.append(time.monotonic())

    cal._say = say
    with cal:
        with pytest.raises(CalibrationError, match=r"meter failed while measuring tiny: .*silent for .*; the 1 tree\(s\) this run finished are in .*\(1 in all\)"):
            cal.run(targets)
    assert time.monotonic() - switched[0] < 8.0  # one 20 s window alone would take longer; a round takes 60 s
    assert len(load_dataset(tmp_path / "rig.jsonl.gz")) == 1
