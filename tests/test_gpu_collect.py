"""Dry run of ``benchmarks/gpu_collect.py`` on the CPU against the fake NVML.

The first run on a real GPU must not be the script's first run: here it runs as a
subprocess exactly as on the GPU, except that ``import pynvml`` finds a module
backed by ``tests/fakes/fake_nvml.py`` (a 300 W board whose total-energy counter
updates every 2 ms) and the models are tiny and on the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_irene.engine.dataset import load_dataset
from pytest_irene.engine.predict.energy_model import train_energy_model

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "benchmarks"
FAKE_POWER_W = 300.0
FAKE_PERIOD_S = 0.005  # slower than Python's 5 ms thread switch would let a poller see

SHIM = f'''
import sys
sys.path.insert(0, {str(REPO / "tests")!r})
from fakes.fake_nvml import FakeGpu, FakeNvml
_fake = FakeNvml([FakeGpu(name="NVIDIA H200 (fake)", power_w={FAKE_POWER_W}, energy_period_s={FAKE_PERIOD_S})])
for _name in dir(_fake):
    if not _name.startswith("_"):
        globals()[_name] = getattr(_fake, _name)
'''


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, Path]:
    shim = tmp_path_factory.mktemp("shim")
    (shim / "pynvml.py").write_text(SHIM)
    out = tmp_path_factory.mktemp("out")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(shim), str(REPO)]), "OUT": str(out)}
    cmd = [sys.executable, str(BENCH / "gpu_collect.py"), "--device", "cpu", "--tiny", "--models", "gpt2,llama-1b-style",
           "--sizes", "1", "--cooldown-s", "0", "--idle-s", "0.2", "--check-s", "0.4", "--min-window-s", "0.01",
           "--budget-s", "300"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=REPO)
    return proc, out


def test_the_dry_run_passes_and_plans_first(dry_run):
    proc, _ = dry_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = proc.stdout
    assert text.index("planned: 4 targets") < text.index("gpt2/bf16/b1s8: ")
    assert "[FAIL]" not in text and "[skip] run_call on CUDA" in text


def test_the_output_fits_the_device_tool(dry_run):
    _, out = dry_run
    files = [p for p in out.rglob("*") if p.is_file()]
    assert 3 <= len(files) <= 8
    for p in files:
        rel = p.relative_to(out)
        assert len(rel.parts) <= 3 and all(re.fullmatch(r"[A-Za-z0-9._-]+", part) for part in rel.parts), rel
        assert p.stat().st_size < 16 * 2**20


def test_the_summary_records_the_counter_and_idle_power(dry_run):
    _, out = dry_run
    summary = json.loads((out / "nvml-h200" / "summary.json").read_text())
    counter = summary["checks"]["counter"]
    assert counter["update_period_s"] == pytest.approx(FAKE_PERIOD_S, rel=0.5)
    assert counter["ratio"] == pytest.approx(1.0, abs=0.05)
    assert summary["idle_power_w"] == pytest.approx(FAKE_POWER_W, rel=0.1)
    assert summary["idle_probe"]["update_period_s"] == pytest.approx(FAKE_PERIOD_S, rel=0.5)
    assert summary["window_s"] >= 10 * summary["counter_update_period_s"]
    assert [t["label"] for t in summary["targets"]] == [
        "gpt2/bf16/b1s8", "gpt2/fp32/b1s8", "llama-1b-style/bf16/b1s8", "llama-1b-style/fp32/b1s8"]
    for target in summary["targets"]:
        assert target["round_noise"]["nodes"] > 0
        # every window's energy is the board's power times the window's length
        assert target["window_power_w"]["median"] == pytest.approx(FAKE_POWER_W, rel=0.05)
    log = (out / "nvml-h200" / "log.txt").read_text()
    assert "0. NVML total-energy counter" in log and "done in" in log


def test_the_dataset_holds_gpu_board_energy_in_both_dtypes(dry_run, tmp_path: Path):
    _, out = dry_run
    paths = sorted((out / "nvml-h200").glob("*.jsonl.gz"))
    assert [p.name for p in paths] == ["gpt2.jsonl.gz", "llama-1b-style.jsonl.gz"]
    trees = load_dataset(*paths)
    assert sorted(t.meta["dtype"] for t in trees) == ["bfloat16", "bfloat16", "float32", "float32"]
    for tree in trees:
        assert tree.profile == "nvml-h200" and tree.energy_scope == "gpu-board"
        assert tree.meta["calibration"]["rounds"] == 3 and tree.meta["calibration"]["meter"].startswith("nvml:0")
        size = 2.0 if tree.meta["dtype"] == "bfloat16" else 4.0
        assert tree.root.features["bytes_per_element"] == size
        # the board's energy of one execution: at least its power times the median execution time
        assert tree.root.energy_j > 0.5 * FAKE_POWER_W * tree.root.features["latency_s"]
    model = train_energy_model(paths, profile="nvml-dry", feature_sets=("model",), crossvalidate=False)
    assert model.energy_scope == "gpu-board" and model.dataset_info["dtypes"] == ["bfloat16", "float32"]
    assert "bytes_per_element" in model.predictors["model"].feature_names


def test_the_plan_keeps_priority_order_within_the_budget():
    sys.path.insert(0, str(BENCH))
    try:
        import gpu_collect
    finally:
        sys.path.remove(str(BENCH))
    args = argparse.Namespace(tiny=True, sizes=2, models=["gpt2"], dtypes=["bf16", "fp32"], rounds=3, cooldown_s=1.0)
    everything, none_left = gpu_collect.make_plan(args, 0.1, 0.01, 1e9)
    assert [p.label for p in everything] == ["gpt2/bf16/b1s8", "gpt2/fp32/b1s8", "gpt2/bf16/b2s16", "gpt2/fp32/b2s16"]
    assert not none_left
    budget = sum(p.estimate_s for p in everything[:3]) + 0.5
    planned, dropped = gpu_collect.make_plan(args, 0.1, 0.01, budget)
    assert [p.label for p in planned] == [p.label for p in everything[:3]]
    assert [p.label for p in dropped] == [p.label for p in everything[3:]]
    first = everything[0]
    distinct, flops = gpu_collect.distinct_estimate("gpt2", "fp32", 1, 8, True)
    slow_s = 6 * flops / gpu_collect.ASSUMED_FLOPS["bf16"]
    assert first.distinct == distinct and first.estimate_s == pytest.approx(
        3 * (distinct * (0.1 * 1.2 + 0.01) + slow_s) + 2 * 1.0 + gpu_collect.TARGET_OVERHEAD_S)
