"""RAPL (fake sysfs tree) and NVML (fake pynvml module) meters."""

from __future__ import annotations

import pathlib
import time
from pathlib import Path

import pytest

from pytest_irene.rig.meters import MeterError
from pytest_irene.rig.meters.nvml import NvmlMeter
from pytest_irene.rig.meters.rapl import RaplMeter

from fakes.fake_nvml import FakeGpu, FakeNvml, NVMLError_DriverNotLoaded

MAX_UJ = 262_143_328_850


def make_zone(root: Path, name: str, label: str, energy_uj: int, max_uj: int = MAX_UJ) -> Path:
    zone = root / name
    zone.mkdir(parents=True)
    (zone / "name").write_text(label + "\n")
    (zone / "energy_uj").write_text(f"{energy_uj}\n")
    (zone / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return zone


@pytest.fixture
def sysfs(tmp_path: Path) -> Path:
    root = tmp_path / "powercap"
    make_zone(root, "intel-rapl:0", "package-0", 1_000_000)
    make_zone(root, "intel-rapl:0:0", "core", 500_000)  # a sub-zone: inside the package, not added
    make_zone(root, "intel-rapl:1", "psys", 9_000_000)  # whole platform: overlaps the package
    make_zone(root, "intel-rapl:2", "package-1", 2_000_000)
    return root


def test_only_package_zones_are_summed(sysfs: Path) -> None:
    meter = RaplMeter(sysfs)
    meter._open()
    assert meter.name == "rapl (package-0+package-1)"


def test_rapl_counter_wrap_around(sysfs: Path) -> None:
    meter = RaplMeter(sysfs)
    meter._open()
    assert meter._read_energy_j(0.0) == 0.0
    (sysfs / "intel-rapl:0" / "energy_uj").write_text(f"{MAX_UJ - 1_000_000}\n")  # +MAX-2 J before the wrap
    (sysfs / "intel-rapl:2" / "energy_uj").write_text("2500000\n")
    before = meter._read_energy_j(0.0)
    assert before == pytest.approx((MAX_UJ - 2_000_000 + 500_000) / 1e6)
    (sysfs / "intel-rapl:0" / "energy_uj").write_text("3000000\n")  # wrapped: 1 J to the top, then 3 J
    assert meter._read_energy_j(0.0) - before == pytest.approx(4.0)


def test_rapl_window_with_the_background_poller(sysfs: Path) -> None:
    with RaplMeter(sysfs, poll_s=0.01) as meter:
        assert meter.name == "rapl (package-0+package-1)"
        meter.begin_window("node")
        time.sleep(0.05)
        (sysfs / "intel-rapl:0" / "energy_uj").write_text("4000000\n")  # +3 J
        time.sleep(0.05)
        m = meter.end_window("node")
    assert m.energy_j == pytest.approx(3.0)
    assert m.samples >= 3


def test_rapl_permission_error_says_how_to_grant_access(sysfs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = pathlib.Path.read_text

    def read_text(self: Path, *args, **kwargs) -> str:  # root ignores file modes: simulate the kernel's 0400
        if self.name == "energy_uj":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "read_text", read_text)
    with pytest.raises(MeterError) as info:
        RaplMeter(sysfs).start()
    message = str(info.value)
    assert "intel-rapl:0/energy_uj" in message and "root only" in message
    assert "sudo chmod a+r /sys/class/powercap/intel-rapl:*/energy_uj" in message
    assert "udev" in message


def test_rapl_missing_interface(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pytest_irene.rig.meters.rapl.POWERCAP_DIR", str(tmp_path / "nothing"))
    with pytest.raises(MeterError, match="no powercap interface at .*no RAPL here"):  # the default directory
        RaplMeter(tmp_path / "nothing").start()
    (tmp_path / "empty").mkdir()
    with pytest.raises(MeterError, match="no intel-rapl:N zone"):
        RaplMeter(tmp_path / "empty").start()


def test_nvml_total_energy_counter_in_millijoules() -> None:
    fake = FakeNvml([FakeGpu(name="GTX 1080 Ti"), FakeGpu(name="NVIDIA H100", power_w=200.0)])
    with NvmlMeter(1, poll_s=0.01, nvml_module=fake) as meter:
        assert meter.source == "counter" and meter.name == "nvml:1 (NVIDIA H100)"
        meter.begin_window("w")
        time.sleep(0.2)
        m = meter.end_window("w")
    # the fake's counter advances at 200 W in whole millijoules
    assert m.energy_j == pytest.approx(200.0 * m.duration_s, rel=0.05)  # read-time jitter on a loaded host
    assert fake.init_count == 0  # NVML released on close


def test_nvml_falls_back_to_integrated_power() -> None:
    fake = FakeNvml([FakeGpu(power_w=150.0, unsupported={"energy"})])
    with NvmlMeter(0, poll_s=0.01, nvml_module=fake) as meter:
        assert meter.source == "power"
        meter.begin_window("w")
        time.sleep(0.2)
        m = meter.end_window("w")
    assert m.power_w == pytest.approx(150.0, rel=1e-6)


def test_nvml_errors_are_clear() -> None:
    with pytest.raises(MeterError, match="no GPU with index 3 \\(1 visible\\)"):
        NvmlMeter(3, nvml_module=FakeNvml()).start()
    with pytest.raises(MeterError, match="nvml: NVML cannot start \\(Driver Not Loaded\\)"):
        NvmlMeter(0, nvml_module=FakeNvml(init_error=NVMLError_DriverNotLoaded)).start()
    with pytest.raises(MeterError, match="neither a total-energy counter nor power"):
        NvmlMeter(0, nvml_module=FakeNvml([FakeGpu(unsupported={"energy", "power"})])).start()


def test_a_failing_counter_fails_the_next_window_not_the_earlier_one() -> None:
    gpu = FakeGpu(power_w=100.0)
    with NvmlMeter(0, poll_s=0.01, nvml_module=FakeNvml([gpu])) as meter:
        meter.begin_window("first")
        time.sleep(0.05)
        first = meter.end_window("first")
        meter.begin_window("second")
        gpu.unsupported = {"energy", "power"}  # the GPU fell off the bus
        time.sleep(0.05)
        with pytest.raises(MeterError, match="GPU lost or driver reset"):
            meter.end_window("second")
    assert first.energy_j == pytest.approx(100.0 * first.duration_s, rel=0.1)


def test_nvml_counter_updates_are_the_meters_readings() -> None:
    """A real board updates its counter every few tens of ms and repeats the value in between:
    the meter records updates only, so its period is the counter's (windows are sized from it)
    and a window's energy is not cut to the last update before its end."""
    gpu = FakeGpu(power_w=200.0, energy_period_s=0.02)
    with NvmlMeter(0, poll_s=0.002, nvml_module=FakeNvml([gpu])) as meter:
        meter.wait_for_samples(8)
        t0 = time.monotonic()
        time.sleep(0.3)
        m = meter.energy_between(t0, time.monotonic())
        readings = meter.samples()
    values = [s.energy_j for s in readings]
    assert len(set(values)) == len(values)  # no repeated value was recorded
    assert meter.period_s == pytest.approx(0.02, rel=0.3)
    assert 10 <= m.samples <= 17
    assert m.energy_j == pytest.approx(200.0 * m.duration_s, rel=0.1)


def test_rapl_at_a_named_directory_blames_the_directory_not_the_cpu(tmp_path: Path) -> None:
    """``rapl:/bad/path`` said "not an Intel/AMD CPU"; the path is what the user should check."""
    with pytest.raises(MeterError, match=r"no powercap interface at .*nope \(expected a powercap directory"):
        RaplMeter(tmp_path / "nope").start()


def test_calibration_opens_an_nvml_counter_that_updates_once_a_second(tmp_path) -> None:
    """The wait for the third reading used the poll interval's 0.5 s: a slow counter was refused as frozen."""
    from pytest_irene.rig.calibration import Calibrator, CalibrationSettings

    gpu = FakeGpu(power_w=200.0, energy_period_s=0.8)
    meter = NvmlMeter(0, poll_s=0.1, nvml_module=FakeNvml([gpu]))
    cal = Calibrator(meter, CalibrationSettings(idle_cpu_pct=100.0), tmp_path / "rig.jsonl", progress=False)
    try:
        cal.open()
        assert meter.period_s == pytest.approx(0.8, abs=0.15)
    finally:
        cal.close()
