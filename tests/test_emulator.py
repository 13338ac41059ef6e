"""The emonPi emulator on a real pty, read by the real EmonPiReader through pyserial.

Every fault gets a clear error or a warning, and measurements finished before
the fault keep their values.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from pytest_irene.rig.emulator import CpuUtilisation, EmonPiEmulator, misclock
from pytest_irene.rig.meters import MeterError, MeterWarning
from pytest_irene.rig.meters.emonpi_lines import parse_line

WINDOW_S = 0.5


def measure(reader, seconds: float = WINDOW_S):
    reader.begin_window("w")
    time.sleep(seconds)
    return reader.end_window("w")


def truth(emulator: EmonPiEmulator, m) -> float:
    """What the emulator really reported over the window, once its log covers the window's end
    (the reader may have received the last report a little after the emulator wrote it)."""
    wait_for(lambda: bool(emulator.log) and emulator.log[-1].t_s >= m.end_s)
    return emulator.true_energy_j(m.start_s, m.end_s)


def steady(watts: float):
    return lambda: watts


@pytest.mark.parametrize("fmt", ["kv", "jeelib", "json"])
def test_reader_measures_what_the_emulator_reports(fmt: str, emonpi_emulator, emonpi_reader) -> None:
    emulator = emonpi_emulator(fmt, power_fn=steady(180.0))
    reader = emonpi_reader(emulator)
    reader.wait_for_samples(2)
    m = measure(reader)
    assert reader.firmware == fmt
    assert m.power_w == pytest.approx(180.0, rel=1e-6)
    assert m.samples >= 4  # ~10 at 0.05 s; fewer only on a badly overloaded host
    assert m.energy_j == pytest.approx(truth(emulator, m), rel=0.02)
    # no data problem (a late report on a loaded host may still be noted as a pause)
    assert not [w for w in m.warnings if "missing" in w or "rejected" in w or "noise" in w]
    assert reader.rejected == 0 and reader.skipped >= (1 if fmt == "jeelib" else 0)  # node 10's packets


def test_energy_follows_changing_power(emonpi_emulator, emonpi_reader) -> None:
    watts = iter(range(100, 100000, 7))
    emulator = emonpi_emulator("kv", power_fn=lambda: next(watts))
    reader = emonpi_reader(emulator)
    reader.wait_for_samples(2)
    m = measure(reader)
    assert m.energy_j == pytest.approx(truth(emulator, m), rel=0.03)


def test_power_comes_from_real_cpu_utilisation(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    stat.write_text("cpu  100 0 100 800 0 0 0 0 0 0\n")
    util = CpuUtilisation(stat)
    stat.write_text("cpu  175 0 100 825 0 0 0 0 0 0\n")  # 75 busy of 100 jiffies
    assert util() == pytest.approx(0.75)
    emulator = EmonPiEmulator("kv", idle_watts=50.0, watts_per_util=200.0)
    emulator._cpu = util
    stat.write_text("cpu  185 0 100 915 0 0 0 0 0 0\n")  # 10 busy of 100
    assert emulator.power_w() == pytest.approx(50.0 + 200.0 * 0.1)


def test_banner_is_skipped(emonpi_emulator, emonpi_reader) -> None:
    emulator = emonpi_emulator("kv", period_s=0.2, power_fn=steady(70.0))
    reader = emonpi_reader(emulator)  # opened before the first report: sees the start-up banner
    reader.wait_for_samples(1)
    assert reader.skipped >= 3 and reader.rejected == 0


def test_garbage_warns_and_measures(emonpi_emulator, emonpi_reader) -> None:
    emulator = emonpi_emulator("kv", fault="garbage", fault_after=0, power_fn=steady(120.0))
    reader = emonpi_reader(emulator)
    reader.wait_for_samples(2)
    with pytest.warns(MeterWarning, match="noise|garbage"):
        m = measure(reader)
    assert m.power_w == pytest.approx(120.0, rel=1e-6)  # noise was seen and not used
    assert reader.skipped + reader.rejected > 0


@pytest.mark.parametrize("fmt", ["kv", "json", "jeelib"])
def test_truncated_lines_are_rejected_with_a_warning(fmt: str, emonpi_emulator, emonpi_reader) -> None:
    emulator = emonpi_emulator(fmt, fault="truncated", fault_after=3, power_fn=steady(90.0))
    reader = emonpi_reader(emulator)
    reader.wait_for_samples(3)
    with pytest.warns(MeterWarning) as record:
        m = measure(reader)
    messages = " ".join(str(w.message) for w in record)
    assert "rejected a damaged line" in messages or "truncated" in messages
    assert m.power_w == pytest.approx(90.0, rel=1e-6)  # nothing from a damaged line was used
    assert reader.rejected >= 2


def test_dropped_messages_are_reported_as_msg_gaps(emonpi_emulator, emonpi_reader) -> None:
    emulator = emonpi_emulator("kv", fault="drop", fault_after=2, power_fn=steady(150.0))
    reader = emonpi_reader(emulator)
    reader.wait_for_samples(2)
    with pytest.warns(MeterWarning, match=r"1 report\(s\) missing \(MSG \d+ -> \d+\)"):
        m = measure(reader)
    assert m.power_w == pytest.approx(150.0, rel=1e-6)
    assert reader.missing_messages >= 2


def wait_for(condition, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "the emulator did not reach the fault"
        time.sleep(0.01)


def test_silence_is_an_error_and_the_earlier_measurement_stays(emonpi_emulator, emonpi_reader) -> None:
    emulator = emonpi_emulator("json", fault="silence", fault_after=12, power_fn=steady(200.0))
    reader = emonpi_reader(emulator)
    reader.wait_for_samples(1)
    first = measure(reader, 0.15)
    wait_for(lambda: len(emulator.log) > 12)
    with pytest.raises(MeterError, match="silent for .* measurements finished before are kept"):
        measure(reader, 0.1)
    assert first.power_w == pytest.approx(200.0, rel=1e-6)


def test_vanished_port_is_an_error_and_the_earlier_measurement_stays(emonpi_emulator, emonpi_reader) -> None:
    emulator = emonpi_emulator("kv", fault="vanish", fault_after=12, power_fn=steady(200.0))
    reader = emonpi_reader(emulator)
    reader.wait_for_samples(1)
    first = measure(reader, 0.15)
    wait_for(lambda: emulator.vanished)
    with pytest.raises(MeterError, match="serial port vanished"):
        measure(reader, 0.1)
    assert first.energy_j == pytest.approx(200.0 * first.duration_s, rel=1e-6)


@pytest.mark.parametrize("fmt, reader_baud", [("kv", 38400), ("jeelib", 115200)])
def test_wrong_baud_rate_is_diagnosed(fmt: str, reader_baud: int, emonpi_emulator, emonpi_reader) -> None:
    emulator = emonpi_emulator(fmt, fault="wrong-baud", fault_after=0)  # misclocked from the first byte
    reader = emonpi_reader(emulator, baud=reader_baud)
    with pytest.raises(MeterError, match=f"at {reader_baud} baud.*baud rate is probably wrong"):
        reader.wait_for_samples(1, timeout_s=0.6)


def test_a_port_with_no_data_at_all(emonpi_reader, tmp_path: Path) -> None:
    import os
    import pty

    master, slave = pty.openpty()  # a port where nothing ever speaks
    try:
        emulator = EmonPiEmulator("kv", period_s=0.05)
        emulator.path = os.ttyname(slave)
        reader = emonpi_reader(emulator)
        with pytest.raises(MeterError, match="no data at all in 0.3 s at 115200 baud: is the emonPi powered"):
            reader.wait_for_samples(1, timeout_s=0.3)
    finally:
        os.close(master)
        os.close(slave)


def test_misclocked_bytes_are_what_a_uart_would_see() -> None:
    line = b"MSG:1,Vrms:240.12,P1:253\r\n"
    assert misclock(line, 115200, 115200) == line
    slow = misclock(line, 115200, 38400)  # a reader three times too slow: fewer, wrong bytes
    fast = misclock(line, 38400, 115200)  # three times too fast: more bytes, framing errors (NUL)
    assert 0 < len(slow) < len(line) and b"MSG" not in slow
    assert len(fast) > len(line) and b"\x00" in fast and b"MSG" not in fast
    assert parse_line(slow) is None and parse_line(fast) is None


def test_cli_prints_the_device_path_first_and_serves(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest_irene.cli", "emonpi-emulator", "--format", "json", "--period", "0.05",
         "--idle-watts", "80", "--watts-per-util", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=Path(__file__).parents[1],
    )
    try:
        path = proc.stdout.readline().strip()  # type: ignore[union-attr]
        assert path.startswith("/dev/pts/")
        from pytest_irene.rig.meters import parse_meter_spec

        hint = proc.stderr.readline()  # type: ignore[union-attr]
        spec = hint.split("read it with --meter ", 1)[1].split(";")[0].strip()
        assert spec == f"emonpi:{path},115200,period=0.05"  # the period too: the reader knows it from the start
        with parse_meter_spec(spec) as reader:
            reader.wait_for_samples(3, timeout_s=5)
            assert reader.firmware == "json"
            assert [s.power_w for s in reader.samples()][-1] == 80
    finally:
        proc.terminate()
        proc.wait(timeout=5)
    assert proc.returncode == 0


def test_emulator_rejects_unknown_format_and_fault() -> None:
    with pytest.raises(ValueError, match="unknown emonPi format 'csv'"):
        EmonPiEmulator("csv")
    with pytest.raises(ValueError, match="unknown fault 'fire'"):
        EmonPiEmulator("kv", fault="fire")


def test_wrong_baud_waits_for_fault_after_like_every_fault(emonpi_emulator, emonpi_reader) -> None:
    """Issue 11: --fault-after was ignored for wrong-baud (garbled from the first byte)."""
    emulator = emonpi_emulator("kv", fault="wrong-baud", fault_after=3)
    reader = emonpi_reader(emulator)
    reader.wait_for_samples(3, timeout_s=5.0)  # the three good reports arrive
    wait_for(lambda: len(emulator.log) >= 8)
    assert reader.reports == 3
    assert [e.delivered for e in emulator.log[:6]] == [True, True, True, False, False, False]
    # garbled bytes keep arriving after the good reports: said so, not "silent"
    with pytest.raises(MeterError, match=r"no valid report for .* byte\(s\) arrived since the last one, most of them "
                       r"undecodable \(line noise, a loose cable or a changed baud rate\)"):
        reader.wait_for_samples(4, timeout_s=1.0)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--period", "nan"], "--period: must be a positive finite number, got nan"),
        (["--period", "0"], "--period: must be a positive finite number, got 0.0"),
        (["--idle-watts", "-500"], "--idle-watts: must be a finite number >= 0, got -500.0"),
        (["--watts-per-util", "inf"], "--watts-per-util: must be a finite number >= 0, got inf"),
        (["--fault-after", "2"], "--fault-after: only with --fault (it says after how many good reports the fault starts)"),
        (["--fault", "drop", "--fault-after", "-1"], "--fault-after: must be an integer >= 0, got -1"),
    ],
)
def test_cli_refuses_what_no_emonpi_reports(capsys, monkeypatch, argv: list[str], message: str) -> None:
    """A NaN period flooded the port with reports; negative or infinite watts are no meter's readings."""
    from pytest_irene.cli import main

    monkeypatch.setattr(EmonPiEmulator, "wait", lambda self: None)  # an accepted value must not serve forever
    monkeypatch.setattr("signal.signal", lambda *args: None)
    assert main(["emonpi-emulator", *argv]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.strip() == f"irene emonpi-emulator: error: {message}"  # before any pty is opened


def test_emulator_settings_are_validated_in_the_library() -> None:
    from pytest_irene.rig.calibration_plan import SettingError

    for kwargs, setting in (({"period_s": float("nan")}, "period_s"), ({"idle_watts": -1.0}, "idle_watts"),
                            ({"watts_per_util": float("inf")}, "watts_per_util"), ({"fault_after": -2}, "fault_after"),
                            ({"voltage_v": 0.0}, "voltage_v")):
        with pytest.raises(SettingError, match=f"^emulator setting {setting} must be") as info:
            EmonPiEmulator("kv", **kwargs)
        assert info.value.setting == setting
    assert EmonPiEmulator("kv", idle_watts=0.0, watts_per_util=0.0).period_s == 9.8  # zero watts is a reading


def test_the_log_periods_tile_time_without_overlap(emonpi_emulator) -> None:
    """Each report averages the time since the previous one: stamped after its write, the periods
    overlapped by the write's duration and the "true" energy exceeded what was reported (a 2 %
    flake of the reader test above on a loaded host)."""
    emulator = emonpi_emulator("kv", power_fn=steady(100.0))
    wait_for(lambda: len(emulator.log) >= 4)
    log = list(emulator.log)
    assert all(b.start_s == a.t_s for a, b in zip(log, log[1:]))
    assert emulator.true_energy_j(log[0].t_s, log[-1].t_s) == pytest.approx(100.0 * (log[-1].t_s - log[0].t_s))
