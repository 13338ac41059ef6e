"""Resource sampler, NVML wrapper, RAPL counter and host fingerprint.

The GPU path runs against a fake ``pynvml`` module (``tests/fakes/fake_nvml.py``)
with pynvml's units and error classes; /proc sampling runs for real.
"""

from __future__ import annotations

import statistics
import sys
import time
import warnings
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from fakes.fake_nvml import FakeGpu, FakeNvml, NVMLError_DriverNotLoaded  # noqa: E402

from pytest_irene.rig.runtime import sampler as sampler_mod  # noqa: E402
from pytest_irene.rig.runtime.fingerprint import (  # noqa: E402
    describe,
    fingerprint_differences,
    fingerprint_matches,
    host_fingerprint,
)
from pytest_irene.rig.runtime.nvml import GpuReading, NvmlUnavailable, load_nvml  # noqa: E402
from pytest_irene.rig.runtime.rapl import RaplCounter, RaplUnavailable  # noqa: E402
from pytest_irene.rig.runtime.sampler import ResourceSampler, Sample, SamplerWarning  # noqa: E402

GPU_KEYS = {"gpu", "gpu_mem", "gpu_clk", "gpu_mem_clk", "gpu_energy_j"}


def test_importing_runtime_does_not_import_torch():
    import subprocess

    code = "import sys, pytest_irene.rig.runtime as r; r.ResourceSampler; r.host_fingerprint; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parents[1])
    assert out.stdout.strip() == "False"


def test_sampling_period_is_honoured_with_monotonic_timestamps():
    with ResourceSampler(period_s=0.05, gpus=None, rapl_root=None) as s:
        time.sleep(0.62)
    samples = s.samples
    times = [x.t_s for x in samples]
    assert times == sorted(times) and len(set(times)) == len(times)
    assert times[-1] <= time.monotonic()
    periodic = [b - a for a, b in zip(times[1:-2], times[2:-1])]  # first/last are start/stop samples
    assert 9 <= len(samples) <= 16
    assert statistics.median(periodic) == pytest.approx(0.05, rel=0.2)
    # real /proc readings: utilisation and memory are percentages, CPU from the 2nd sample on
    assert samples[0].cpu_pct is None
    assert all(0.0 <= x.cpu_pct <= 100.0 for x in samples[1:] if x.cpu_pct is not None)
    assert all(0.0 < x.mem_pct < 100.0 for x in samples)
    assert not s.running


def test_cpu_utilisation_follows_proc_stat_deltas(tmp_path):
    stat, meminfo = tmp_path / "stat", tmp_path / "meminfo"
    meminfo.write_text("MemTotal:  1000 kB\nMemFree: 100 kB\nMemAvailable:  250 kB\n")
    stat.write_text("cpu  100 0 100 800 0 0 0 0 0 0\n")
    s = ResourceSampler(gpus=None, rapl_root=None, proc_stat=stat, proc_meminfo=meminfo)
    s.sample_now()
    stat.write_text("cpu  160 0 120 820 0 0 0 0 0 0\n")  # busy +80, idle +20
    second = s.sample_now()
    assert second.cpu_pct == pytest.approx(80.0)
    assert second.mem_pct == pytest.approx(75.0)


def _recorded() -> ResourceSampler:
    # intervals (0,1], (1,2], (2,3], (3,4] at 10, 20, 30, 40 % CPU; GPU counter +100 J per second
    samples = []
    for i in range(5):
        gpu = GpuReading(util_pct=10.0 * i, mem_pct=50.0, sm_clock_mhz=1000.0 + i, mem_clock_mhz=5000.0,
                         power_w=100.0, energy_j=1000.0 + 100.0 * i)
        samples.append(Sample(float(i), 10.0 * i if i else None, 40.0, (gpu,), 5.0 * i))
    return ResourceSampler.from_samples(samples, gpu_names=["Fake GPU"])


def test_window_attribution_by_timestamps():
    s = _recorded()
    w = s.window(1.5, 3.0)
    # half of (1,2] at 20 %, all of (2,3] at 30 %
    assert w["cpu"] == pytest.approx((0.5 * 20 + 1.0 * 30) / 1.5)
    assert w["gpu"] == pytest.approx((0.5 * 20 + 1.0 * 30) / 1.5)
    assert w["gpu_energy_j"] == pytest.approx(150.0)
    assert w["cpu_energy_j"] == pytest.approx(7.5)
    inside = s.window(2.2, 2.4)  # shorter than a period: the covering sample
    assert inside["cpu"] == pytest.approx(30.0) and inside["gpu_clk"] == pytest.approx(1003.0)
    assert inside["gpu_energy_j"] == pytest.approx(20.0)
    outside = s.window(3.5, 9.0)
    assert "gpu_energy_j" not in outside and "cpu_energy_j" not in outside
    assert set(s.window(1.0, 2.0, gpu=None)) == {"cpu", "mem", "cpu_energy_j"}
    with pytest.raises(ValueError):
        s.window(2.0, 1.0)


def test_fake_gpu_path_reads_every_quantity_and_energy_advances_with_time():
    nvml = FakeNvml([FakeGpu(power_w=200.0), FakeGpu(name="Tesla V100", unsupported={"energy", "sm_clock"})])
    with ResourceSampler(period_s=0.04, nvml_module=nvml, rapl_root=None) as s:
        assert nvml.init_count == 1
        t0 = s.sample_now().t_s
        time.sleep(0.3)
        t1 = s.sample_now().t_s
    assert nvml.init_count == 0  # NVML released on stop
    assert s.reason is None and s.gpu_names == ["NVIDIA H100 80GB HBM3", "Tesla V100"]
    w = s.window(t0, t1)
    # time-weighted means of constant gauges: equal up to float rounding of the weights
    assert w["gpu"] == pytest.approx(37.0) and w["gpu_mem"] == pytest.approx(25.0)
    assert w["gpu_clk"] == pytest.approx(1755.0) and w["gpu_mem_clk"] == pytest.approx(2619.0)
    assert w["gpu_power_w"] == pytest.approx(200.0)
    assert w["gpu_energy_j"] == pytest.approx(200.0 * (t1 - t0), rel=0.05)
    old = s.window(t0, t1, gpu=1)  # an older board: no energy counter, no SM clock -> absent, not zero
    assert "gpu_clk" not in old
    # ... but its energy is the sampled power over the window (pre-Volta boards have no counter)
    assert old["gpu_energy_j"] == pytest.approx(250.0 * (t1 - t0), rel=1e-6)
    beyond = s.window(t0, t1 + 10.0, gpu=1)  # not sampled to the end: no energy guessed
    assert "gpu_energy_j" not in beyond
    assert old["gpu_mem_clk"] == pytest.approx(2619.0)


def test_absent_gpu_is_absent_not_zero_and_reason_shown_once(monkeypatch):
    monkeypatch.setattr(sampler_mod, "_warned", set())
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        for _ in range(2):
            with ResourceSampler(period_s=0.05, nvml_module=FakeNvml(init_error=NVMLError_DriverNotLoaded),
                                 rapl_root=None) as s:
                t0 = s.sample_now().t_s
                time.sleep(0.06)  # /proc/stat ticks every 10 ms per CPU
                t1 = s.sample_now().t_s
    mine = [w for w in seen if issubclass(w.category, SamplerWarning)]
    assert len(mine) == 1 and "Driver Not Loaded" in str(mine[0].message)
    assert "Driver Not Loaded" in s.reason
    assert all(x.gpus == () for x in s.samples)
    assert not GPU_KEYS & set(s.window(t0, t1)) and "cpu" in s.window(t0, t1)

    with pytest.warns(SamplerWarning, match="no NVIDIA GPU"):
        no_gpu = ResourceSampler(nvml_module=FakeNvml([]), rapl_root=None).start()
    no_gpu.stop()
    assert no_gpu.reason == "NVML sees no NVIDIA GPU"


def test_load_nvml_reasons_and_reference_counting():
    fake = FakeNvml([FakeGpu(), FakeGpu(name="B")])
    session = load_nvml(fake)
    assert [g.name for g in session.gpus] == ["NVIDIA H100 80GB HBM3", "B"] and session.driver_version == "550.54.15"
    session.close()
    session.close()
    assert fake.init_count == 0
    old_board = load_nvml(FakeNvml([FakeGpu(unsupported={"energy"})]))
    gpu, fake_module = old_board.gpus[0], old_board.module
    before = fake_module.calls
    assert gpu.read().energy_j is None and fake_module.calls - before == 6
    before = fake_module.calls
    assert gpu.read().power_w == 250.0 and fake_module.calls - before == 5  # NotSupported is not asked again
    assert gpu.unsupported == {"energy"}
    old_board.close()
    with pytest.raises(NvmlUnavailable, match="no NVIDIA driver"):
        load_nvml(FakeNvml(init_error=NVMLError_DriverNotLoaded))
    with pytest.raises(ValueError, match="NVML index"):
        ResourceSampler(gpus=[3], nvml_module=fake, rapl_root=None).start()
    assert fake.init_count == 0


def _zone(root: Path, name: str, zone: str, energy_uj: int, max_uj: int) -> Path:
    path = root / name
    path.mkdir()
    (path / "name").write_text(zone + "\n")
    (path / "max_energy_range_uj").write_text(f"{max_uj}\n")
    (path / "energy_uj").write_text(f"{energy_uj}\n")
    return path


def test_rapl_wraps_around_and_sums_packages_only(tmp_path):
    p0 = _zone(tmp_path, "intel-rapl:0", "package-0", 900_000, 1_000_000)
    core = _zone(tmp_path, "intel-rapl:0:0", "core", 5, 1_000_000)
    p1 = _zone(tmp_path, "intel-rapl:1", "package-1", 10, 1_000_000)
    counter = RaplCounter(tmp_path)
    assert [z.name for z in counter.zones] == ["package-0", "package-1"]
    (p0 / "energy_uj").write_text("950000\n")
    (core / "energy_uj").write_text("999999\n")
    assert counter.read_j() == pytest.approx(0.05)
    (p0 / "energy_uj").write_text("100000\n")  # wrapped: +50 000 to the top, +100 000 after
    (p1 / "energy_uj").write_text("1000010\n")
    assert counter.read_j() == pytest.approx(0.05 + 0.15 + 1.0)

    with pytest.raises(RaplUnavailable, match="no powercap"):
        RaplCounter(tmp_path / "missing")
    s = ResourceSampler(gpus=None, rapl_root=tmp_path / "missing")
    s.start()
    s.stop()
    assert "no powercap" in s.rapl_reason and all(x.cpu_energy_j is None for x in s.samples)


def test_sampler_reads_rapl_energy_into_windows(tmp_path):
    p0 = _zone(tmp_path, "intel-rapl:0", "package-0", 999_000, 1_000_000)
    with ResourceSampler(period_s=10.0, gpus=None, rapl_root=tmp_path) as s:
        a = s.sample_now()
        (p0 / "energy_uj").write_text("3000\n")  # wrapped: 4 mJ
        b = s.sample_now()
    assert s.rapl_reason is None
    assert s.window(a.t_s, b.t_s)["cpu_energy_j"] == pytest.approx(0.004)


def test_fingerprint_of_this_host_and_matching():
    here = host_fingerprint(nvml_module=FakeNvml(init_error=NVMLError_DriverNotLoaded))
    assert here["cpu_count"] >= 1 and here["cpu_model"] and here["memory_gib"] > 0
    assert here["gpus"] == [] and "no NVIDIA driver" in here["gpu_reason"]
    assert fingerprint_matches(here, dict(here))
    gpu_host = host_fingerprint(nvml_module=FakeNvml([FakeGpu(), FakeGpu()]))
    assert gpu_host["gpus"] == ["NVIDIA H100 80GB HBM3"] * 2 and gpu_host["driver_version"] == "550.54.15"
    assert not fingerprint_matches(here, gpu_host)
    assert any("GPUs" in d for d in fingerprint_differences(here, gpu_host))
    assert "2x NVIDIA H100 80GB HBM3 (driver 550.54.15)" in describe(gpu_host)
    assert "no GPU" in describe(here)

    rig = {"cpu_model": "Intel(R) Core(TM) i9-7900X CPU @ 3.30GHz", "cpu_count": 20, "memory_gib": 31.3,
           "gpus": ["GeForce GTX 1080 Ti"], "driver_version": "455.32"}
    same = dict(rig, memory_gib=30.5, driver_version="470.1", cpu_model="Intel(R) Core(TM)  i9-7900X CPU @ 3.30GHz")
    assert fingerprint_matches(rig, same)  # memory within 5 %, driver and whitespace do not matter
    assert not fingerprint_matches(rig, dict(rig, memory_gib=64.0))
    assert not fingerprint_matches(rig, dict(rig, cpu_count=10))
    assert not fingerprint_matches(rig, dict(rig, gpus=["GeForce RTX 2080 Ti"]))
    assert not fingerprint_matches({}, {})


def test_choose_features_uses_resources_only_on_the_calibration_rig():
    from pytest_irene.errors import UsageError
    from pytest_irene.pipeline import choose_features

    rig = {"cpu_model": "Intel(R) Core(TM) i9-7900X CPU @ 3.30GHz", "cpu_count": 20, "memory_gib": 31.3,
           "gpus": ["GeForce GTX 1080 Ti"], "driver_version": "455.32"}
    other = dict(rig, gpus=[])
    auto_here = choose_features("auto", rig, host=dict(rig))
    assert auto_here.features == "all" and "matches" in auto_here.reason
    auto_elsewhere = choose_features("auto", rig, host=other)
    assert auto_elsewhere.features == "model" and "GPUs" in auto_elsewhere.reason
    assert choose_features("auto", None, host=other).reason == "the energy model records no hardware fingerprint"
    assert choose_features("auto", rig, host=dict(rig), available=("model",)).features == "model"
    assert choose_features("model", rig, host=dict(rig)).features == "model"
    assert choose_features("all", rig, host=dict(rig)).features == "all"
    with pytest.raises(UsageError, match="--irene-features=all: this host differs"):
        choose_features("all", rig, host=other)
    with pytest.raises(UsageError, match="--features: expected one of auto, model, all"):
        choose_features("some", rig, option="--features")


def test_a_failing_sampler_thread_records_why(tmp_path, monkeypatch):
    monkeypatch.setattr(sampler_mod, "_warned", set())
    stat = tmp_path / "stat"
    stat.write_text("cpu  1 0 1 8 0 0 0 0 0 0\n")
    s = ResourceSampler(period_s=0.02, gpus=None, rapl_root=None, proc_stat=stat).start()
    with pytest.warns(SamplerWarning, match="FileNotFoundError"):
        stat.unlink()
        deadline = time.monotonic() + 2.0
        while s.error is None and time.monotonic() < deadline:
            time.sleep(0.01)
    s.stop()
    assert "FileNotFoundError" in s.error and len(s.samples) >= 1
