"""pytest-xdist (workers predict, the controller saves and reports) and ``--collect-only`` (loads nothing).

The xdist and collect-only sessions run in subprocesses: xdist needs real
processes, and a fresh interpreter is the only honest place to see which
modules got imported.
"""

from __future__ import annotations

import json

import pytest

from inner import run


PARAM_TESTS = '''
import pytest
import torch
from torch import nn


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.block = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 32))

    def forward(self, x):
        return self.block(x)


@pytest.mark.parametrize("batch_size", [1, 2, 4, 8])
def test_batch(irene, batch_size):
    irene(Tiny(), torch.randn(batch_size, 16, 32), label="fwd")
    irene(Tiny(), torch.randn(batch_size, 8, 32), label="short")
'''


def test_xdist_saves_every_entry_and_prints_one_merged_summary(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_par=PARAM_TESTS)
    saved = pytester.runpytest_subprocess("-n", "2", "-p", "xdist", "--irene-save", "--irene-json=xdist.json")
    saved.assert_outcomes(passed=4)
    out = saved.stdout.str()
    assert out.count("irene energy summary") == 1
    for bs in (1, 2, 4, 8):
        assert f"test_par.py::test_batch[{bs}]" in out.split("irene energy summary")[1]
    assert "8 wrapped call(s), 8 saved" in out
    doc = json.loads((pytester.path / ".irene" / "test_par.json").read_text())
    assert sorted(doc["tests"]) == [f"test_par.py::test_batch[{bs}]" for bs in (1, 2, 4, 8)]
    assert all(set(labels) == {"fwd", "short"} for labels in doc["tests"].values())
    records = json.loads((pytester.path / "xdist.json").read_text())["records"]
    assert len(records) == 8

    # the same suite in one process predicts bit-identical trees, and passes against the xdist baselines
    single = run(pytester, "-p", "no:xdist", "--irene-strict", "--irene-json=single.json")
    single.assert_outcomes(passed=4)
    records_single = json.loads((pytester.path / "single.json").read_text())["records"]
    assert [r["tree"] for r in records_single] == [r["tree"] for r in records]
    assert all(r["comparison"]["status"] == "pass" for r in records_single)
    modes = [json.loads((pytester.path / f).read_text())["settings"]["feature_modes"] for f in ("xdist.json", "single.json")]
    assert modes[0] == modes[1] and modes[0]["irene-pc1"]["features"] == "model"  # decided by the workers, said as serially


def test_collect_only_loads_no_model_and_no_regressor(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        '''
import json, sys

HEAVY = ["torch", "transformers", "sklearn", "pytest_irene.engine.tracing", "pytest_irene.engine.predict.energy_model",
         "pytest_irene.engine.predict.regressors", "pytest_irene.engine.predict.strategies"]

def pytest_unconfigure(config):  # the very end: after the header, collection and the summary
    with open("modules.json", "w") as handle:
        json.dump({name: name in sys.modules for name in HEAVY}, handle)
'''
    )
    pytester.makepyfile(
        test_lazy='''
import pytest

@pytest.mark.irene(budget="2J")
def test_lazy(irene):
    import torch
    irene(torch.nn.Linear(4, 4), torch.randn(2, 3, 4))
'''
    )
    result = pytester.runpytest_subprocess("--collect-only", "--irene-budget=12J")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*irene: profile irene-pc1*", "*<Function test_lazy>*"])
    loaded = json.loads((pytester.path / "modules.json").read_text())
    assert loaded == {name: False for name in loaded}, loaded
