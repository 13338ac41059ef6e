"""Node runner on the real CPU: timing windows, signature sharing, attribution, whole trees."""

from __future__ import annotations

import time

import pytest

torch = pytest.importorskip("torch")

from pytest_irene.rig.runtime.runner import (  # noqa: E402
    RUNTIME_FEATURES,
    RunWindow,
    attribute,
    distinct_signatures,
    run_call,
    signature,
)
from pytest_irene.rig.runtime.nvml import GpuReading  # noqa: E402
from pytest_irene.rig.runtime.sampler import ResourceSampler, Sample  # noqa: E402
from pytest_irene.engine.tree import EnergyNode, EnergyTree  # noqa: E402


def _tiny_bert():
    from transformers import AutoModel, BertConfig

    cfg = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64)
    torch.manual_seed(0)
    return AutoModel.from_config(cfg, attn_implementation="eager").eval()


def _hooked_tree(model, inputs) -> EnergyTree:
    """A module tree with a captured call per module, built with forward pre-hooks.

    Independent of the tracer on purpose: it tests signature grouping alone.
    """
    names = {mod: n for n, mod in model.named_modules()}
    nodes = {"": EnergyNode("", type(model).__name__, "model")}
    calls = {}

    def hook(mod, args, kwargs):
        calls[names[mod]] = (mod, args, kwargs)

    handles = []
    for name, mod in model.named_modules():
        handles.append(mod.register_forward_pre_hook(hook, with_kwargs=True))
        if name:
            level = "module" if list(mod.children()) else "ml"
            nodes[name] = nodes[name.rpartition(".")[0]].add_child(EnergyNode(name, type(mod).__name__, level))
    with torch.inference_mode():
        model(**inputs)
    for h in handles:
        h.remove()
    return EnergyTree(nodes[""], model_name="tiny-bert", calls=calls)


def test_run_call_repeats_for_the_window_and_marks_its_bounds():
    linear = torch.nn.Linear(16, 16)
    x = torch.randn(4, 16)
    marks = []
    before = time.monotonic()
    w = run_call((linear, (x,), {}), window_s=0.1, mark=lambda: marks.append(time.monotonic()))
    assert isinstance(w, RunWindow)
    assert before <= marks[0] <= w.t_start_s < w.t_end_s <= marks[1] <= time.monotonic()
    assert w.duration_s >= 0.1 and w.executions > 10 and w.warmup >= 1
    assert 0 < w.latency_s < w.duration_s / w.executions * 1.5


def test_run_call_honours_min_executions_for_slow_nodes():
    calls = []

    def slow(delay):
        calls.append(1)
        time.sleep(delay)

    w = run_call((slow, (0.02,), {}), window_s=0.01, warmup_s=0.0, min_executions=3)
    assert w.executions == 3 and w.warmup == 1 and len(calls) == 4
    assert w.latency_s == pytest.approx(0.02, abs=0.015)
    with pytest.raises(ValueError):
        run_call((slow, (0.0,), {}), window_s=0)


def test_signatures_split_on_shape_dtype_and_hyper_parameters():
    a, b = torch.nn.Linear(8, 8), torch.nn.Linear(8, 8)
    x = torch.randn(2, 8)
    assert signature("Linear", (a, (x,), {})) == signature("Linear", (b, (torch.randn(2, 8),), {}))
    assert signature("Linear", (a, (x,), {})) != signature("Linear", (a, (torch.randn(3, 8),), {}))
    assert signature("Linear", (a, (x,), {})) != signature("Linear", (a, (x.double(),), {}))
    assert signature("Linear", (a, (x,), {})) != signature("Linear", (torch.nn.Linear(8, 8, bias=False), (x,), {}))
    assert signature("Softmax", (torch.softmax, (x,), {"dim": -1})) != signature(
        "Softmax", (torch.softmax, (x,), {"dim": 0})
    )
    d1, d2 = torch.nn.Dropout(0.1), torch.nn.Dropout(0.2)
    assert signature("Dropout", (d1, (x,), {})) != signature("Dropout", (d2, (x,), {}))


def test_identical_layers_of_a_tiny_bert_share_signatures():
    model = _tiny_bert()
    ids = torch.randint(0, 100, (2, 8))
    tree = _hooked_tree(model, {"input_ids": ids})
    groups = distinct_signatures(tree)
    scopes = [s for group in groups.values() for s in group]
    assert sorted(scopes) == sorted(tree.calls) and len(groups) < len(tree.calls) / 1.8
    by_first = {group[0]: group for group in groups.values()}
    assert by_first["encoder.layer.0"] == ["encoder.layer.0", "encoder.layer.1"]
    qkv = by_first["encoder.layer.0.attention.self.query"]
    assert {"encoder.layer.0.attention.self.key", "encoder.layer.1.attention.self.value"} <= set(qkv)
    assert "encoder.layer.0.intermediate.dense" not in qkv  # 32 -> 64, not 32 -> 32
    assert by_first[""] == [""]


def test_attribute_gives_features_of_one_execution():
    samples = [
        Sample(float(i), 50.0 if i else None, 30.0,
               (GpuReading(80.0, 20.0, 1500.0, 5000.0, 100.0, 100.0 * i),), 10.0 * i)
        for i in range(5)
    ]
    sampler = ResourceSampler.from_samples(samples, gpu_names=["Fake"])
    window = RunWindow(1.0, 3.0, executions=4, latency_s=0.4)
    feats = attribute(sampler, window, gpu=0)
    assert feats == pytest.approx({"cpu": 50.0, "mem": 30.0, "gpu": 80.0, "gpu_mem": 20.0, "gpu_clk": 1500.0,
                                   "gpu_mem_clk": 5000.0, "latency_s": 0.4, "gpu_energy_j": 50.0,
                                   "cpu_energy_j": 5.0})
    assert set(feats) <= set(RUNTIME_FEATURES)
    cpu_only = attribute(sampler, window, gpu=None)
    assert not {"gpu", "gpu_energy_j"} & set(cpu_only) and cpu_only["cpu_energy_j"] == pytest.approx(5.0)


def test_measure_tree_fills_resource_features_on_every_node():
    from pytest_irene.rig.runtime import measure_tree

    torch.set_num_threads(1)
    model = _tiny_bert()
    inputs = {"input_ids": torch.randint(0, 100, (2, 8))}
    with ResourceSampler(period_s=0.05, gpus=None, rapl_root=None) as sampler:
        tree = measure_tree(model, inputs, window_s=0.03, sampler=sampler, model_name="tiny-bert")
        assert sampler.running  # a caller's sampler is left running
    info = tree.meta["runtime"]
    assert info["distinct_nodes"] < info["nodes"] and info["gpu"] is None and info["gpu_reason"] == "not a CUDA device"
    measured = [n for n in tree.walk() if "latency_s" in n.features]
    assert tree.root in measured and len(measured) >= 0.8 * len(tree)
    for node in measured:
        assert node.features["latency_s"] > 0
        assert 0 <= node.features["cpu"] <= 100 and 0 < node.features["mem"] < 100
        assert "gpu" not in node.features and "gpu_energy_j" not in node.features  # absent, not zero
    layer0, layer1 = tree["encoder.layer.0"], tree["encoder.layer.1"]
    assert layer0.features["latency_s"] == layer1.features["latency_s"]  # shared signature
    assert tree.root.features["latency_s"] > layer0.features["latency_s"]
    assert tree.meta["host"]["cpu_count"] >= 1


def test_measure_tree_refuses_weights_without_values():
    from pytest_irene.errors import UsageError
    from pytest_irene.rig.runtime import measure_tree

    with torch.device("meta"):
        model = torch.nn.Linear(4, 4)
    with pytest.raises(UsageError, match="meta device"):
        measure_tree(model, torch.randn(2, 4))
    with pytest.raises(UsageError, match="runs nothing"):
        measure_tree(torch.nn.Linear(4, 4), torch.randn(2, 4), device="meta")


def test_measure_tree_names_a_device_it_cannot_use():
    """A CPU-only torch raised its bare ``AssertionError`` from the first ``.to("cuda")``; the
    library's errors are ``IreneError``s, as ``trace`` and ``irene predict --device`` give."""
    from pytest_irene.errors import UsageError
    from pytest_irene.rig.runtime import measure_tree

    with pytest.raises(UsageError, match="expected a torch device"):
        measure_tree(torch.nn.Linear(4, 4), torch.randn(2, 4), device="gpu9")
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match=r"device='cuda' cannot be used here"):
            measure_tree(torch.nn.Linear(4, 4), torch.randn(2, 4), device="cuda")


class _HostEvent:
    """A CUDA event stand-in for a device that runs synchronously (the host): it timestamps at record()."""

    created = 0

    def __init__(self, enable_timing: bool = False) -> None:
        assert enable_timing
        type(self).created += 1
        self.t = None

    def record(self) -> None:
        self.t = time.perf_counter()

    def elapsed_time(self, end: "_HostEvent") -> float:
        return (end.t - self.t) * 1000.0  # ms, like torch.cuda.Event


def test_cuda_window_is_event_timed_and_synchronised_once(monkeypatch):
    import contextlib

    syncs: list[float] = []
    monkeypatch.setattr(torch.cuda, "Event", _HostEvent)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: syncs.append(time.monotonic()))
    monkeypatch.setattr(torch.cuda, "device", lambda dev: contextlib.nullcontext())
    marks: list[float] = []
    _HostEvent.created = 0
    # A call of well under a microsecond: the window holds far more than 1000 of them even
    # on a loaded CI box, so the grouping of event pairs is exercised every time.
    w = run_call((abs, (-1.0,), {}), window_s=0.1, device="cuda:0", mark=lambda: marks.append(time.monotonic()))
    inside = [t for t in syncs if marks[0] <= t <= marks[1]]
    assert len(inside) == 1 and w.t_start_s < inside[0] <= w.t_end_s  # once per window, at its end
    assert w.executions > 1000  # sized from the warm-up estimate to fill the window
    assert _HostEvent.created <= 2 + 2 * 1000  # calls timed in groups beyond 1000 event pairs
    assert 0 < w.latency_s < 0.1 / 1000 * 3 and 0.02 < w.duration_s < 1.0

    slow = run_call((time.sleep, (0.01,), {}), window_s=0.03, device="cuda:0", min_executions=5)
    assert slow.executions == 5 and slow.latency_s == pytest.approx(0.01, abs=0.008)


def test_cuda_devices_are_matched_to_nvml_gpus_by_uuid(monkeypatch):
    import sys
    from pathlib import Path
    from types import SimpleNamespace

    sys.path.insert(0, str(Path(__file__).parent))
    from fakes.fake_nvml import FakeGpu, FakeNvml

    from pytest_irene.rig.runtime.runner import gpu_position

    fake = FakeNvml([FakeGpu(uuid="GPU-aaaa"), FakeGpu(name="B", uuid="GPU-bbbb")])
    sampler = ResourceSampler(nvml_module=fake, rapl_root=None).start()
    try:
        # CUDA device 0 is NVML's second board (CUDA orders fastest first, NVML by PCI bus)
        monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: SimpleNamespace(uuid="bbbb"))
        assert gpu_position(sampler, torch.device("cuda:0")) == 1
        monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: SimpleNamespace(uuid="cccc"))
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
        assert gpu_position(sampler, torch.device("cuda:1")) == 1  # no UUID match: same index
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
        assert gpu_position(sampler, torch.device("cuda:0")) is None  # renumbered: do not guess
    finally:
        sampler.stop()
