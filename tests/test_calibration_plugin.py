"""``pytest --irene-calibrate``: options, refusals and the measured calls, through inner pytest sessions.

The end-to-end runs (tracer, node runner, emulator, dataset, training) are in
``test_calibration_e2e.py``; these check the plugin's own behaviour.
"""

from __future__ import annotations

import pytest

from inner import run

SUITE = """
import torch

def test_measured(irene_calibrate):
    tree = irene_calibrate(torch.nn.Linear(8, 8), torch.randn(2, 8), label="lin")
    assert tree.root.energy_j > 0
"""


def test_options_are_in_the_irene_group(pytester: pytest.Pytester) -> None:
    result = run(pytester, "--help")
    text = result.stdout.str()
    for option in ("--irene-calibrate ", "--irene-meter=", "--irene-calibrate-dataset=", "--irene-calibrate-output=",
                   "--irene-calibrate-window=", "--irene-calibrate-rounds="):
        assert option in text, option


def test_calibrate_needs_a_meter(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(SUITE)
    result = run(pytester, "--irene-calibrate")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--irene-calibrate needs --irene-meter=SPEC*"])


@pytest.mark.parametrize(
    "args, message",
    [
        (["--irene-meter=wattmeter:/dev/x"], "*meter spec 'wattmeter:/dev/x': unknown meter 'wattmeter'*"),
        (["--irene-meter=rapl", "--irene-calibrate-rounds=two"], "*--irene-calibrate-rounds: expected an integer*"),
        (["--irene-meter=rapl", "--irene-calibrate-rounds=0"], "*--irene-calibrate-rounds: must be a positive integer*"),
        (["--irene-meter=rapl", "--irene-calibrate-window=-1"], "*--irene-calibrate-window: must be *, got -1.0*"),
        (["--irene-meter=rapl", "--irene-calibrate-dataset=out.csv"], "*expected a .jsonl or .jsonl.gz file*"),
        (["--irene-meter=rapl", "--irene-prior=no-such-profile"], "*unknown energy model 'no-such-profile'*"),
    ],
)
def test_bad_options_are_usage_errors(pytester: pytest.Pytester, args: list[str], message: str) -> None:
    pytester.makepyfile(SUITE)
    result = run(pytester, "--irene-calibrate", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_prior_needs_calibrate(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(SUITE)
    result = run(pytester, "--irene-prior=irene-pc1")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--irene-prior trains a calibrated model file: it needs --irene-calibrate*"])


def test_without_calibrate_the_fixture_skips(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(SUITE)
    result = run(pytester, "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*measures only with --irene-calibrate*"])


def test_refuses_to_start_when_not_idle(pytester: pytest.Pytester, emonpi_emulator) -> None:
    emulator = emonpi_emulator("kv", power_fn=lambda: 250.0)
    pytester.makepyfile(SUITE)
    result = run(
        pytester, "--irene-calibrate", f"--irene-meter=emonpi:{emulator.path},115200,period=0.05",
        "--irene-calibrate-idle-watts=100", "--irene-calibrate-window=0.2", "--irene-calibrate-min-reports=3",
    )
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*refusing to calibrate: the machine is not idle: it draws 250.0 W*"])
    assert not (pytester.path / "irene-rig.jsonl.gz").exists()


def test_calibrate_refuses_xdist(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(SUITE)
    result = run(pytester, "--irene-calibrate", "--irene-meter=rapl", "-n", "2")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*run it without -n*"])


HAND_TRACED = """
import pytest
import torch

from pytest_irene.rig.calibration import Calibrator, Prepared
from pytest_irene.rig.runtime.runner import distinct_signatures
from pytest_irene.engine.tree import EnergyNode, EnergyTree


@pytest.fixture(autouse=True)
def hand_traced(monkeypatch):
    # the tracer's capture=True output, built by hand: this session tests the plugin seam only
    def prepare(self, target):
        model, x = target.model, target.inputs
        root = EnergyNode("", type(model).__name__, "model")
        calls = {"": (model, (x,), {})}
        for name, mod in model.named_children():
            root.add_child(EnergyNode(name, type(mod).__name__, "ml"))
            calls[name] = (mod, (x,), {})
        tree = EnergyTree(root, model_name=target.model_name or "seq", batch_size=2, seq_len=1, calls=calls)
        return Prepared(target, tree, distinct_signatures(tree))

    monkeypatch.setattr(Calibrator, "prepare", prepare)


def test_gate_fixture_measures(irene):
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 8))
    tree = irene(model, torch.randn(2, 8), label="seq")
    assert tree.root.energy_j > 0 and tree["0"].energy_j > 0
    assert tree.root.predicted_energy_j is None  # measured, not predicted
    with pytest.raises(Exception, match="called twice"):
        irene(model, torch.randn(2, 8), label="seq")


def test_own_fixture_measures(irene_calibrate):
    tree = irene_calibrate(torch.nn.Sequential(torch.nn.Linear(8, 4)), torch.randn(2, 8), label="small")
    assert tree.meta["label"].endswith("test_own_fixture_measures::small")
"""


def test_both_fixtures_measure_in_calibrate_mode(pytester: pytest.Pytester, emonpi_emulator) -> None:
    emulator = emonpi_emulator("json", power_fn=lambda: 150.0)
    pytester.makepyfile(HAND_TRACED)
    pytester.makeconftest(
        "def pytest_irene_host_fingerprint(config):\n"
        "    return {'cpu_model': 'Pinned Rig CPU', 'cpu_count': 64, 'gpus': []}\n"
    )
    result_args = (
        "--irene-calibrate", f"--irene-meter=emonpi:{emulator.path},115200,period=0.05",
        "--irene-calibrate-window=0.1", "--irene-calibrate-rounds=1", "--irene-calibrate-min-reports=2",
        "--irene-calibrate-cooldown=0", "--irene-calibrate-idle-cpu=100", "--irene-calibrate-no-train",
        "--irene-calibrate-dataset=out/rig.jsonl",
    )
    result = run(pytester, *result_args)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([
        "*irene calibrate: idle power 150.0 W*",
        "*planned rig time:*",
        "*2 measured tree(s) appended to *rig.jsonl*",
    ])
    assert "energy model" not in result.stdout.str()
    from pytest_irene.engine.dataset import load_dataset

    trees = load_dataset(pytester.path / "out" / "rig.jsonl")
    assert [t.meta["nodeid"].split("::")[-1] for t in trees] == ["test_gate_fixture_measures", "test_own_fixture_measures"]
    assert all(t.profile == "irene-rig" and t.root.energy_j > 0 for t in trees)
    # the rig identity pinned with the gate's hook is what the trees (and the model file) record
    assert trees[0].meta["host"]["cpu_model"] == "Pinned Rig CPU"
    assert "already holds" not in result.stdout.str()
    again = run(pytester, *result_args)  # the same sizes again: said before each is measured
    again.stdout.fnmatch_lines(["*note: *rig.jsonl already holds *test_gate_fixture_measures::seq; the new "
                                "measurement(s) are added beside the old ones*"])
    assert len(load_dataset(pytester.path / "out" / "rig.jsonl")) == 4


def test_ctrl_c_leaves_the_model_file_untrained(pytester: pytest.Pytester, emonpi_emulator) -> None:
    """The session's end retrained (and replaced the model file) after Ctrl-C, as after a full run."""
    emulator = emonpi_emulator("json", power_fn=lambda: 150.0)
    pytester.makepyfile(HAND_TRACED + "\n\ndef test_zz_interrupted():\n    raise KeyboardInterrupt\n")
    model = pytester.path / "out" / "rig.json"
    model.parent.mkdir()
    from pytest_irene.engine.predict.profiles import resolve_profile

    model.write_bytes(resolve_profile("irene-pc1").read_bytes())
    before = model.read_bytes()
    result = pytester.runpytest_subprocess(  # in process, pytester re-raises the KeyboardInterrupt
        "-p", "no:cacheprovider", "-p", "no:xdist", "--irene-calibrate", f"--irene-meter=emonpi:{emulator.path},115200,period=0.05",
        "--irene-calibrate-window=0.1", "--irene-calibrate-rounds=1", "--irene-calibrate-min-reports=2",
        "--irene-calibrate-cooldown=0", "--irene-calibrate-idle-cpu=100", "--irene-calibrate-dataset=out/rig.jsonl",
        "--irene-calibrate-output=out/rig.json",
    )
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*2 measured tree(s) appended to *rig.jsonl*",
                                 "*no energy model trained: the run was stopped; the model file *rig.json is unchanged*"])
    assert model.read_bytes() == before
