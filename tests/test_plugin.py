"""The pytest plugin, end to end, through inner pytest sessions (``pytester``).

Inner tests use a tiny custom module so each inner session takes a fraction of
a second; the real tracer and the bundled energy model run in every one.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from inner import run

TINY = '''
import pytest
import torch
from torch import nn

WIDTH = {width}


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.block = nn.Sequential(nn.Linear(64, WIDTH), nn.GELU(), nn.Linear(WIDTH, 64))
        self.head = nn.Linear(64, 8)

    def forward(self, x):
        return self.head(self.block(x))


def test_tiny(irene):
    tree = irene(Tiny(), torch.randn(4, 32, 64), label="tiny")
    assert tree.total_j > 0
    assert tree["block"].predicted_energy_j > 0
'''


def write_tiny(pytester: pytest.Pytester, width: int = 64, name: str = "test_tiny") -> Path:
    return pytester.makepyfile(**{name: TINY.format(width=width)})


def baseline_file(pytester: pytest.Pytester, module: str = "test_tiny") -> Path:
    return pytester.path / ".irene" / f"{module}.json"


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def test_new_then_save_then_pass(pytester: pytest.Pytester) -> None:
    write_tiny(pytester)
    result = run(pytester, "-rP")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "*irene: profile irene-pc1 (stands for IrEne PC1*), features model (auto: this host differs*), "
            "baselines .irene/",
            "*irene energy summary*",
        ]
    )
    assert re.search(r"test_tiny.py::test_tiny\s.*tiny.*new", result.stdout.str())
    assert "no baseline yet; run with --irene-save" in result.stdout.str()
    assert not baseline_file(pytester).exists()  # nothing is written without --irene-save

    saved = run(pytester, "--irene-save")
    saved.assert_outcomes(passed=1)
    saved.stdout.fnmatch_lines(["*baselines saved:*test_tiny.json*"])
    doc = read_json(baseline_file(pytester))
    entry = doc["tests"]["test_tiny.py::test_tiny"]["tiny"]
    assert doc["format"] == "irene-baselines/2"
    assert entry["profile"] == "irene-pc1" and entry["features"] == "model"
    assert entry["root"]["type"] == "Tiny" and "block" in entry["modules"]
    assert entry["modules"]["block"]["type"] == "Sequential"

    again = run(pytester)
    again.assert_outcomes(passed=1)
    assert re.search(r"test_tiny.py::test_tiny\s.*tiny.*\+0\.0%.*pass", again.stdout.str())


def test_module_regression_fails_the_test_and_names_the_module(pytester: pytest.Pytester) -> None:
    write_tiny(pytester, width=64)
    run(pytester, "--irene-save").assert_outcomes(passed=1)
    write_tiny(pytester, width=512)  # a wider feed-forward block
    result = run(pytester)
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "energy regression against the baseline" in out
    assert "starting at block" in out
    result.stdout.fnmatch_lines(["*module*type*baseline*now*change*", "*block*Sequential*J*J*+*%*"])
    result.stdout.fnmatch_lines(["*failing modules:*", "*test_tiny.py::test_tiny ?tiny?: block (Sequential)*"])
    # the head did not change and is not reported as failing
    assert not re.search(r"head\s+Linear", out)
    # a generous tolerance lets the same change through
    run(pytester, "--irene-tolerance=10000%").assert_outcomes(passed=1)


def test_budget_failure_shows_total_and_costliest_modules(pytester: pytest.Pytester) -> None:
    write_tiny(pytester)
    result = run(pytester, "--irene-budget=1uJ")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*[[]tiny[]] predicted * > budget 1 uJ*", "*the * costliest module*:*", "*module*type*energy*share*", "*block*"]
    )
    run(pytester, "--irene-budget=1 kWh").assert_outcomes(passed=1)


def test_marker_overrides_budget_per_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        TINY.format(width=64)
        + '''

@pytest.mark.irene(budget="1uJ")
def test_tight(irene):
    irene(Tiny(), torch.randn(4, 32, 64))
'''
    )
    result = run(pytester, "--irene-budget=1kWh")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["FAILED *::test_tight*"])


def test_strict_mode_fails_calls_without_baseline(pytester: pytest.Pytester) -> None:
    write_tiny(pytester)
    result = run(pytester, "--irene-strict")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*no baseline for this call and --irene-strict is set*"])
    run(pytester, "--irene-save").assert_outcomes(passed=1)
    run(pytester, "--irene-strict").assert_outcomes(passed=1)


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [
        ("profile", "irene-pc2", "baseline was made with profile 'irene-pc2', this run uses 'irene-pc1'"),
        ("features", "all", "baseline was made with 'all' features, this run uses 'model'"),
        ("inputs", {"batch_size": 2, "seq_len": 32}, "baseline was made with input size batch_size=2"),
    ],
)
def test_mismatched_baseline_is_not_compared(pytester: pytest.Pytester, field: str, value: object, why: str) -> None:
    write_tiny(pytester)
    run(pytester, "--irene-save").assert_outcomes(passed=1)
    path = baseline_file(pytester)
    doc = read_json(path)
    doc["tests"]["test_tiny.py::test_tiny"]["tiny"][field] = value
    if field == "profile":  # another profile is another model file (the same file named twice compares)
        doc["tests"]["test_tiny.py::test_tiny"]["tiny"]["energy_model"] = "0" * 16
    path.write_text(json.dumps(doc))
    result = run(pytester, "-rP")
    result.assert_outcomes(passed=1)
    assert why in result.stdout.str()
    assert re.search(r"test_tiny.py::test_tiny\s.*skipped", result.stdout.str())
    strict = run(pytester, "--irene-strict")
    strict.assert_outcomes(failed=1)
    strict.stdout.fnmatch_lines(["*--irene-strict is set*"])


def test_one_model_file_named_two_ways_is_one_profile_and_ini_paths_are_ini_relative(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: a baseline saved with ``irene_profile = models/rig.json`` was "not compared" (and the
    test passed ungated) when a run named the same file by another path, and the ini path was looked
    up in the directory pytest ran from (from a subdirectory: unknown energy model, exit 4)."""
    from pytest_irene.engine.predict.profiles import resolve_profile

    write_tiny(pytester)
    rig = pytester.path / "models" / "rig.json"
    rig.parent.mkdir()
    rig.write_bytes(resolve_profile("irene-pc1").read_bytes())
    pytester.makeini("[pytest]\nirene_profile = models/rig.json\n")
    run(pytester, "--irene-save").assert_outcomes(passed=1)
    assert read_json(baseline_file(pytester))["tests"]["test_tiny.py::test_tiny"]["tiny"]["profile"] == "models/rig.json"
    for args in ([f"--irene-profile={rig}"], ["--irene-profile=./models/../models/rig.json"]):
        result = run(pytester, "--irene-strict", *args)  # strict: a call not compared would fail
        result.assert_outcomes(passed=1)
        assert "not compared" not in result.stdout.str()
    monkeypatch.chdir(pytester.mkdir("sub"))
    result = run(pytester, "--irene-strict", str(pytester.path))
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*irene: profile ../models/rig.json*"])
    # another model file is another profile, whatever its name
    rig.write_bytes(rig.read_bytes().replace(b'"profile": "irene-pc1"', b'"profile": "my-rig"', 1))
    result = run(pytester, "-rP", f"--irene-profile={rig}", str(pytester.path))
    result.assert_outcomes(passed=1)
    assert "not compared" in result.stdout.str()


def test_collect_only_leaves_the_reports_of_the_last_run_as_they_were(pytester: pytest.Pytester) -> None:
    """``pytest --co`` with ``irene_json`` in the ini file replaced the last run's run file with an empty run."""
    write_tiny(pytester)
    pytester.makeini("[pytest]\nirene_json = run.json\nirene_markdown = summary.md\n")
    run(pytester).assert_outcomes(passed=1)
    before = {name: (pytester.path / name).read_bytes() for name in ("run.json", "summary.md")}
    result = run(pytester, "--collect-only")
    assert result.ret == pytest.ExitCode.OK and "written to" not in result.stdout.str()
    assert {name: (pytester.path / name).read_bytes() for name in before} == before


def test_corrupt_baseline_is_reported_and_not_overwritten(pytester: pytest.Pytester) -> None:
    write_tiny(pytester)
    path = baseline_file(pytester)
    path.parent.mkdir()
    path.write_text('{"format": "irene-baselines/1", "tests": {')
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*BaselineError: *test_tiny.json: corrupt baseline file (invalid JSON*"])
    saved = run(pytester, "--irene-save")
    assert saved.ret == pytest.ExitCode.TESTS_FAILED
    saved.stdout.fnmatch_lines(["*baselines NOT saved: *test_tiny.json: corrupt baseline file*"])
    assert path.read_text() == '{"format": "irene-baselines/1", "tests": {'


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--irene-budget=12"], "--irene-budget: expected an energy with a unit*got the bare number '12'*"),
        (["--irene-budget=12 furlongs"], "--irene-budget: unknown energy unit 'furlongs'*"),
        (["--irene-min-delta=0.01"], "--irene-min-delta: *bare number*"),
        (["--irene-tolerance=5"], "--irene-tolerance: expected a percentage such as '5%'*"),
        (["--irene-features=fast"], "--irene-features: expected one of auto, model, all, got 'fast'"),
        (["--irene-price=cheap"], "--irene-price: expected a price*"),
    ],
)
def test_bad_option_values_are_usage_errors(pytester: pytest.Pytester, args: list[str], message: str) -> None:
    write_tiny(pytester)
    result = run(pytester, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {message}"])


def test_options_from_ini_and_command_line_wins(pytester: pytest.Pytester) -> None:
    write_tiny(pytester)
    pytester.makeini("[pytest]\nirene_budget = 1uJ\nirene_baselines = energy-baselines\n")
    run(pytester).assert_outcomes(failed=1)
    run(pytester, "--irene-budget=1kWh").assert_outcomes(passed=1)
    run(pytester, "--irene-save", "--irene-budget=1kWh").assert_outcomes(passed=1)
    assert (pytester.path / "energy-baselines" / "test_tiny.json").is_file()
    pytester.makeini("[pytest]\nirene_tolerance = five\n")
    bad = run(pytester)
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines(["ERROR: irene_tolerance (ini): expected a percentage*"])


def test_bad_marker_argument_names_the_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        '''
import pytest, torch

@pytest.mark.irene(budget=12)
def test_bare(irene):
    irene(torch.nn.Linear(4, 4), torch.randn(2, 3, 4))

@pytest.mark.irene(budjet="12J")
def test_typo(irene):
    irene(torch.nn.Linear(4, 4), torch.randn(2, 3, 4))

@pytest.mark.irene(profile="nope")
def test_profile(irene):
    irene(torch.nn.Linear(4, 4), torch.randn(2, 3, 4))

def test_label(irene):
    irene(torch.nn.Linear(4, 4), torch.randn(2, 3, 4), label="a\\nb")
'''
    )
    result = run(pytester)
    result.assert_outcomes(failed=4)
    result.stdout.fnmatch_lines(
        [
            "*UsageError: @pytest.mark.irene on test_bad_marker_argument_names_the_test.py::test_bare: budget=*bare number 12*",
            "*UsageError: @pytest.mark.irene on *::test_typo: unknown argument(s) ?'budjet'?*",
            "*UsageError: @pytest.mark.irene(profile=) on *::test_profile: unknown energy model 'nope'*",
            "*UsageError: irene(..., label=...): expected a non-empty string of printable characters, got 'a\\nb'*",
        ]
    )


def test_several_labelled_calls_and_tree_access(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        TINY.format(width=64)
        + '''

def test_two(irene):
    model = Tiny()
    small = irene(model, torch.randn(2, 16, 64), label="small")
    big = irene(model, torch.randn(8, 64, 64), label="big")
    assert big.total_j > small.total_j
    assert big["block"].type == "Sequential"
    rows = big.breakdown()
    assert rows and rows[0][1] > 0
    assert [r.label for r in irene.records] == ["small", "big"]


def test_same_label_twice(irene):
    irene(Tiny(), torch.randn(2, 16, 64), label="x")
    irene(Tiny(), torch.randn(2, 16, 64), label="x")
'''
    )
    result = run(pytester, "--irene-save")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*UsageError: irene(..., label='x') called twice in *::test_same_label_twice*"])
    doc = read_json(pytester.path / ".irene" / "test_several_labelled_calls_and_tree_access.json")
    assert set(doc["tests"]["test_several_labelled_calls_and_tree_access.py::test_two"]) == {"small", "big"}


def test_json_report_and_determinism(pytester: pytest.Pytester) -> None:
    write_tiny(pytester)
    run(pytester, "--irene-json=run1.json").assert_outcomes(passed=1)
    run(pytester, "--irene-json=run2.json").assert_outcomes(passed=1)
    one, two = read_json(pytester.path / "run1.json"), read_json(pytester.path / "run2.json")
    assert one["format"] == "irene-run/2"
    (record,) = one["records"]
    assert record["nodeid"] == "test_tiny.py::test_tiny" and record["label"] == "tiny"
    assert record["comparison"]["status"] == "new"
    assert record["tree"]["format"] == "irene-tree/1" and record["tree"]["root"]["predicted_energy_j"] > 0
    # model-features predictions are bit-identical from run to run
    assert one["records"][0]["tree"] == two["records"][0]["tree"]
    assert (pytester.path / "run1.json").read_text() == (pytester.path / "run2.json").read_text()


def test_quiet_and_color(pytester: pytest.Pytester) -> None:
    write_tiny(pytester)
    quiet = run(pytester, "-q")
    quiet.stdout.fnmatch_lines(["irene: 1 wrapped call(s), 1 new; * predicted in all"])
    assert "costliest module" not in quiet.stdout.str()
    plain = run(pytester, "--color=no")
    assert "costliest module" in plain.stdout.str() and "\x1b[" not in plain.stdout.str()
    coloured = run(pytester, "--color=yes")
    assert "\x1b[" in coloured.stdout.str().split("irene energy summary")[1]


def test_cost_column_uses_the_price(pytester: pytest.Pytester) -> None:
    write_tiny(pytester)
    out = run(pytester, "--irene-json=r.json").stdout.str()
    total = read_json(pytester.path / "r.json")["records"][0]["total_j"]
    kwh = total * 1e6 / 3.6e6
    assert re.search(rf"tiny .* {kwh:.3g} +{kwh * 0.1319:.3g} *$", out, re.M)
    doubled = run(pytester, "--irene-price=26.38c/kWh").stdout.str()
    assert "USD /1M @26.38c" in doubled
    assert re.search(rf"tiny .* {kwh:.3g} +{kwh * 0.2638:.3g} *$", doubled, re.M)


def test_disable(pytester: pytest.Pytester) -> None:
    write_tiny(pytester)
    result = run(pytester, "--irene-disable", "--irene-budget=1uJ", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*irene: disabled (--irene-disable)*", "*pytest-irene is disabled*"])
    assert "irene energy summary" not in result.stdout.str()


def test_retrained_energy_model_is_not_compared(pytester: pytest.Pytester) -> None:
    from pytest_irene.engine.predict.profiles import resolve_profile

    model_file = pytester.path / "rig.json"
    model_file.write_bytes(resolve_profile("irene-pc1").read_bytes())
    write_tiny(pytester)
    run(pytester, "--irene-save", f"--irene-profile={model_file}").assert_outcomes(passed=1)
    run(pytester, f"--irene-profile={model_file}", "--irene-strict").assert_outcomes(passed=1)
    obj = json.loads(model_file.read_text())  # same profile, another file version
    obj["hyper_parameters"]["retrained"] = True
    model_file.write_text(json.dumps(obj))
    result = run(pytester, "-rP", f"--irene-profile={model_file}")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*not compared: baseline was made with another version of energy model*"])


ONLY = '''
import pytest
import torch
from torch import nn


@pytest.fixture
def wrapped(irene):
    return irene


def test_direct(irene):
    irene(nn.Linear(8, 8), torch.randn(2, 8))


def test_through_a_fixture(wrapped):
    wrapped(nn.Linear(8, 8), torch.randn(2, 8))


@pytest.mark.irene(budget="1J")
def test_marked():
    pass


def test_plain():
    pass
'''


def test_irene_only_runs_the_energy_tests_and_deselects_the_rest(pytester: pytest.Pytester) -> None:
    """``--irene-only`` is pytest-benchmark's ``--benchmark-only``: a CI job for the energy gate
    runs the tests that use ``irene`` (directly or through a fixture) or carry its mark."""
    pytester.makepyfile(test_only=ONLY)
    result = run(pytester, "--irene-only", "-v")
    result.assert_outcomes(passed=3, deselected=1)
    assert "test_plain" not in result.stdout.str()
    run(pytester).assert_outcomes(passed=4)  # without the option every test runs
    bad = run(pytester, "--irene-only", "--irene-disable")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines(["*--irene-only: cannot be combined with --irene-disable*"])
