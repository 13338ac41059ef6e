"""Each pytest-irene hookspec shown working from a conftest.py."""

from __future__ import annotations

import json

import pytest

from inner import run
from test_plugin import write_tiny



def test_tree_predicted_and_session_records_hooks(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        '''
import json

SEEN = []

def pytest_irene_tree_predicted(item, record):
    SEEN.append({"item": item.nodeid, "label": record.label, "total_j": record.tree.total_j,
                 "status": record.comparison.status})

def pytest_irene_session_records(config, records):
    with open("session_records.json", "w") as handle:
        json.dump({"seen": SEEN, "records": [[r.nodeid, r.label] for r in records]}, handle)
'''
    )
    write_tiny(pytester)
    try:
        run(pytester).assert_outcomes(passed=1)
    finally:
        from pytest_irene.engine.features import unregister_formula

        unregister_formula("SquarePlus")  # formulas are process-wide; leave none behind
    data = json.loads((pytester.path / "session_records.json").read_text())
    assert data["records"] == [["test_tiny.py::test_tiny", "tiny"]]
    (seen,) = data["seen"]
    assert seen["item"] == "test_tiny.py::test_tiny" and seen["label"] == "tiny"
    assert seen["total_j"] > 0 and seen["status"] == "new"


def test_select_tolerance_hook(pytester: pytest.Pytester) -> None:
    write_tiny(pytester, width=64)
    run(pytester, "--irene-save").assert_outcomes(passed=1)
    write_tiny(pytester, width=512)
    run(pytester, "--irene-min-delta=0J").assert_outcomes(failed=1)
    pytester.makeconftest(
        '''
def pytest_irene_select_tolerance(item, default):
    assert default == 0.05  # what --irene-tolerance / the marker chose
    return "100000%" if item.name == "test_tiny" else None
'''
    )
    result = run(pytester, "--irene-min-delta=0J", "--irene-json=r.json")
    result.assert_outcomes(passed=1)
    record = json.loads((pytester.path / "r.json").read_text())["records"][0]
    assert record["tolerance"] == 1000.0


def test_select_profile_hook(pytester: pytest.Pytester) -> None:
    from pytest_irene.engine.predict.profiles import resolve_profile

    bundled = resolve_profile("irene-pc1")
    copy = pytester.path / "my-rig.json"
    copy.write_bytes(bundled.read_bytes())
    pytester.makeconftest(
        f'''
def pytest_irene_select_profile(item, default):
    assert default == "irene-pc1"
    return {str(copy)!r} if "tiny" in item.name else None
'''
    )
    write_tiny(pytester)
    run(pytester, "--irene-json=r.json", "--irene-save").assert_outcomes(passed=1)
    record = json.loads((pytester.path / "r.json").read_text())["records"][0]
    assert record["profile"] == str(copy)
    entry = json.loads((pytester.path / ".irene" / "test_tiny.json").read_text())["tests"]["test_tiny.py::test_tiny"]
    assert entry["tiny"]["profile"] == str(copy)


def test_host_fingerprint_hook(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        '''
CALLS = []

def pytest_irene_host_fingerprint(config):
    CALLS.append(1)
    assert len(CALLS) == 1, "the fingerprint is asked once per run"
    return {"cpu_model": "Hooked CPU 9000", "cpu_count": 3, "memory_gib": 1.0, "gpus": []}
'''
    )
    write_tiny(pytester)
    result = run(pytester, "--irene-features=auto")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*feature mode: auto: this host differs from the calibration rig: CPU model ?Hooked CPU 9000?*"])


def test_register_formulas_hook(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        '''
import pytest_irene.engine.features as features

CALLS = []

def squareplus_formula(module, inputs, output):
    (x,) = inputs
    return {"flops": 3.0 * x.numel(), "mem_bytes": 2.0 * x.numel() * x.element_size()}

def pytest_irene_register_formulas(config):
    CALLS.append(1)
    features.register_formula("SquarePlus", squareplus_formula)
'''
    )
    pytester.makepyfile(
        '''
import torch
from torch import nn
import conftest


class SquarePlus(nn.Module):
    def forward(self, x):
        return 0.5 * (x + torch.sqrt(x * x + 4.0))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 16)
        self.act = SquarePlus()

    def forward(self, x):
        return self.act(self.fc(x))


def test_custom_primitive(irene):
    x = torch.randn(2, 8, 16)
    tree = irene(Net(), x, label="one")
    irene(Net(), x, label="two")
    node = tree["act"]
    assert node.features["flops"] == 3.0 * x.numel()
    assert node.features["mem_bytes"] == 2.0 * x.numel() * 4
    assert conftest.CALLS == [1]  # registered once, before the first trace
'''
    )
    try:
        run(pytester).assert_outcomes(passed=1)
    finally:
        from pytest_irene.engine.features import unregister_formula

        unregister_formula("SquarePlus")  # formulas are process-wide; leave none behind


def test_host_fingerprint_hook_matching_the_profile_on_a_cpu_model(pytester: pytest.Pytester) -> None:
    """A host that matches the rig switches auto mode towards resource features; a model on the
    CPU cannot give the rig's GPU counters, so auto says so and keeps model features."""
    from pytest_irene.engine.predict.energy_model import EnergyModel

    hardware = dict(EnergyModel.load("irene-pc1").hardware)
    pytester.makeconftest(
        f'''
def pytest_irene_host_fingerprint(config):
    return {hardware!r}
'''
    )
    write_tiny(pytester)
    result = run(pytester, "--irene-json=r.json")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        ["*feature mode: auto: host matches the calibration rig*but the model is on cpu*model features are used*"]
    )
    assert json.loads((pytester.path / "r.json").read_text())["records"][0]["features"] == "model"


def test_fixture_hook_replaces_the_gate(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
def pytest_irene_fixture(request):
    return lambda model, inputs, **options: ("replaced", request.node.name, options)
"""
    )
    pytester.makepyfile(
        test_swap="""
def test_swapped(irene):
    assert irene(object(), None, label="x") == ("replaced", "test_swapped", {"label": "x"})
"""
    )
    result = run(pytester, "--irene-budget=1uJ")  # the gate would fail any real call at this budget
    result.assert_outcomes(passed=1)


def test_formulas_registered_in_a_session_end_with_it(pytester: pytest.Pytester) -> None:
    """An in-process session's user formulas do not leak into the next session."""
    from pytest_irene.engine import features

    features.register_formula("KeptAcross", lambda m, i, o: {"flops": 1.0, "mem_bytes": 1.0})
    pytester.makeconftest(
        '''
import pytest_irene.engine.features as features

def pytest_irene_register_formulas(config):
    features.register_formula("SessionOnly", lambda m, i, o: {"flops": 1.0, "mem_bytes": 1.0})
'''
    )
    write_tiny(pytester)
    try:
        run(pytester).assert_outcomes(passed=1)
        assert "SessionOnly" not in features.registered_types()
        assert "KeptAcross" in features.registered_types()  # registered before the session: kept
    finally:
        features.unregister_formula("KeptAcross")
        features.unregister_formula("SessionOnly")
