"""What fails the gate, and options checked before any test runs.

- ``--irene-fail-on``: decreases pass by default (and say so), ``any`` fails them too;
- an xfail test whose gate fails is the failure it expected;
- ``--irene-markdown`` and ``--irene-device`` are checked like the other options (exit 4),
  and the Markdown file is written even when no wrapped call ran;
- hook return values obey the marker's rules.
"""

from __future__ import annotations

import dataclasses

import pytest

from inner import run
from test_plugin import write_tiny


@pytest.fixture
def cheaper(pytester: pytest.Pytester) -> pytest.Pytester:
    """Baselines saved at width 512, the code now at width 64: every block module got cheaper."""
    write_tiny(pytester, width=512)
    run(pytester, "--irene-save").assert_outcomes(passed=1)
    write_tiny(pytester, width=64)
    return pytester


def test_a_cheaper_call_passes_and_says_so(cheaper: pytest.Pytester) -> None:
    result = run(cheaper, "--irene-min-delta=0J", "-rA")
    result.assert_outcomes(passed=1)
    out = result.stdout.str()
    assert "no module costlier beyond 5.0%" in out and "cheaper beyond the limits, starting at block" in out
    assert "--irene-save records the lower energy" in out


def test_fail_on_any_fails_a_decrease_as_a_change(cheaper: pytest.Pytester) -> None:
    result = run(cheaper, "--irene-min-delta=0J", "--irene-fail-on=any")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "[tiny] energy change against the baseline" in out and "energy regression" not in out


def test_a_costlier_call_still_fails_as_a_regression(pytester: pytest.Pytester) -> None:
    write_tiny(pytester, width=64)
    run(pytester, "--irene-save").assert_outcomes(passed=1)
    write_tiny(pytester, width=512)
    result = run(pytester, "--irene-min-delta=0J")
    result.assert_outcomes(failed=1)
    assert "[tiny] energy regression against the baseline: " in result.stdout.str()
    assert "module(s) costlier beyond 5.0%" in result.stdout.str()


XFAIL = '''
import pytest
import torch
from torch import nn


@pytest.mark.irene(budget="1uJ")
@pytest.mark.xfail(reason="known energy issue", strict={strict})
def test_known(irene):
    irene(nn.Sequential(nn.Linear(64, 64)), torch.randn(4, 32, 64))


@pytest.mark.irene(budget="1uJ")
@pytest.mark.xfail(reason="expects a ValueError", raises=ValueError)
def test_other_failure_expected(irene):
    irene(nn.Sequential(nn.Linear(64, 64)), torch.randn(4, 32, 64))
'''


@pytest.mark.parametrize("strict", [False, True])
def test_an_xfail_test_whose_gate_fails_is_xfailed(pytester: pytest.Pytester, strict: bool) -> None:
    pytester.makepyfile(test_x=XFAIL.format(strict=strict))
    result = run(pytester, "-rxXf")
    result.assert_outcomes(xfailed=1, failed=1)  # raises=ValueError: the gate is not that failure
    result.stdout.fnmatch_lines(["*XFAIL*test_known*known energy issue*", "*FAILED*test_other_failure_expected*"])


def test_bad_markdown_path_and_device_are_usage_errors(pytester: pytest.Pytester) -> None:
    write_tiny(pytester)
    (pytester.path / "adir").mkdir()
    for option, needle in (
        ("--irene-markdown=adir", "--irene-markdown=adir: is a directory"),
        ("--irene-device=gpu", "--irene-device: expected a torch device such as meta, cpu or cuda:0, got 'gpu'"),
        ("--irene-fail-on=sometimes", "--irene-fail-on: expected one of increase, any"),
    ):
        result = run(pytester, option, "--irene-json=r.json")
        assert result.ret == pytest.ExitCode.USAGE_ERROR, option
        result.stderr.fnmatch_lines([f"*{needle}*"])
        assert not (pytester.path / "r.json").exists()


def test_markdown_is_written_when_no_wrapped_call_ran(pytester: pytest.Pytester) -> None:
    write_tiny(pytester)
    stale = pytester.path / "m.md"
    stale.write_text("### pytest-irene energy summary\n\nan older summary that must not be posted\n")
    run(pytester, "-k", "nothing", "--irene-markdown=m.md")
    text = stale.read_text()
    assert "older summary" not in text and "No wrapped call ran in this session." in text


@pytest.mark.parametrize(
    ("returned", "outcome", "needle"),
    [
        ('"100000%"', "passed", None),
        ("-1", "failed", "pytest_irene_select_tolerance for test_tiny.py::test_tiny: "),
        ("5", "failed", "is a fraction (500%)"),
    ],
)
def test_select_tolerance_values_obey_the_marker_rules(
    pytester: pytest.Pytester, returned: str, outcome: str, needle: str | None
) -> None:
    write_tiny(pytester, width=64)
    run(pytester, "--irene-save").assert_outcomes(passed=1)
    write_tiny(pytester, width=512)
    pytester.makeconftest(f"def pytest_irene_select_tolerance(item, default):\n    return {returned}\n")
    result = run(pytester, "--irene-min-delta=0J")
    result.assert_outcomes(**{outcome: 1})
    if needle:
        assert needle in result.stdout.str()


def test_a_host_fingerprint_hook_must_return_a_dict(pytester: pytest.Pytester) -> None:
    write_tiny(pytester)
    pytester.makeconftest("def pytest_irene_host_fingerprint(config):\n    return 'my-rig'\n")
    result = run(pytester, "--irene-features=all")
    assert "pytest_irene_host_fingerprint: expected a dict" in result.stdout.str() + result.stderr.str()
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


def test_calls_the_gate_could_not_compare_are_said_under_the_summary(pytester: pytest.Pytester) -> None:
    write_tiny(pytester)
    run(pytester, "--irene-save", "--irene-json=first.json").assert_outcomes(passed=1)
    body = (pytester.path / "test_tiny.py").read_text().replace("torch.randn(4, 32, 64)", "torch.randn(4, 16, 64)")
    (pytester.path / "test_tiny.py").write_text(body)  # another input size: not comparable
    out = run(pytester).stdout.str()
    assert "irene: 1 of 1 call(s) not gated: baseline was made with input size batch_size=4, seq_len=32" in out

    other = pytester.path / "other"
    other.mkdir()
    (other / "test_other.py").write_text(body.replace("def test_tiny(", "def test_other("))
    out = run(pytester, "other", "--irene-compare=first.json").stdout.str()
    assert "irene: none of this run's 1 call(s) is in " in out and "nothing was gated against it" in out


def test_a_passing_call_against_a_v1_baseline_says_its_leaves_are_not_gated(pytester: pytest.Pytester) -> None:
    import json

    write_tiny(pytester)
    run(pytester, "--irene-save").assert_outcomes(passed=1)
    path = pytester.path / ".irene" / "test_tiny.json"
    doc = json.loads(path.read_text())
    doc["format"] = "irene-baselines/1"  # as an older pytest-irene wrote it: no leaf scopes
    for entries in doc["tests"].values():
        for entry in entries.values():
            entry.pop("leaves")
            entry["modules"] = {s: m for s, m in entry["modules"].items() if s in ("block",)}
    path.write_text(json.dumps(doc))
    result = run(pytester, "-rA")
    result.assert_outcomes(passed=1)
    assert "the baseline predates leaf-module coverage (irene-baselines/1): --irene-save to gate leaf modules" in result.stdout.str()


OUTCOMES = '''
import pytest
import torch


def model():
    return torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU())


@pytest.mark.xfail(raises=ValueError)
def test_xfail_raises_passes(irene):
    irene(model(), torch.randn(8, 32, 64))


def test_skips_after_the_call(irene):
    irene(model(), torch.randn(8, 32, 64))
    pytest.skip("decided afterwards")


@pytest.fixture
def measured_after(irene):
    yield
    irene(model(), torch.randn(8, 32, 64), label="teardown")


def test_teardown_call(measured_after):
    pass
'''


@pytest.mark.parametrize("xdist", [False, True], ids=["serial", "xdist"])
def test_a_gate_failure_is_a_failure_whatever_else_the_test_did(pytester: pytest.Pytester, xdist: bool) -> None:
    """Each of these printed the gate's failure yet exited 0: an XPASS of ``xfail(raises=)`` kept its
    ``wasxfail``, a test that skipped itself after the call stayed skipped, and a fixture's
    teardown call was never judged."""
    if xdist:
        pytest.importorskip("xdist")
    pytester.makepyfile(test_outcomes=OUTCOMES)
    result = run(pytester, "--irene-budget=1mJ", "--junitxml=junit.xml", *(["-n", "2"] if xdist else []))
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(failed=2, passed=1, errors=1)  # the teardown test passed, then errored
    result.stdout.fnmatch_lines(["*the test skipped itself after these calls*"])
    junit = (pytester.path / "junit.xml").read_text()
    assert 'failures="2"' in junit and 'errors="1"' in junit and "xfail-marked test passes" not in junit


def test_a_second_input_of_another_size_is_the_tests_change_not_compared() -> None:
    """A CLIP's batch and tokens are its ids': bigger images looked like the same call, and the gate
    failed the model for the test's change (a ViT, whose main input is the pixels, was skipped)."""
    import torch

    from pytest_irene.compare.baselines import entry_from_tree
    from pytest_irene.compare.gate import compare
    from pytest_irene.engine.predict.energy_model import EnergyModel
    from pytest_irene.pipeline import predict_with
    from test_ranges import TwoTowers

    model, energy_model = TwoTowers.build(16), EnergyModel.load("irene-pc1")

    def call(patches: int):  # type: ignore[no-untyped-def]
        inputs = {"input_ids": torch.zeros(8, 32, dtype=torch.long), "pixel_values": torch.zeros(8, patches, 48)}
        return predict_with(energy_model, model, inputs, "model", device="meta", option="--irene-features")

    base = entry_from_tree(call(65), profile="irene-pc1", features="model")
    same, bigger = compare(base, call(65), profile="irene-pc1", features="model"), compare(base, call(257), profile="irene-pc1", features="model")
    assert same.status == "pass"
    assert bigger.status == "skipped" and "other inputs beside the main one (24960 elements, this call 98688:" in bigger.reason
    old = dataclasses.replace(base, inputs={k: v for k, v in base.inputs.items() if k != "other_input_elements"})
    assert compare(old, call(257), profile="irene-pc1", features="model").status != "skipped"  # saved before: as before
