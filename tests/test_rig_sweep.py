"""What a first rig setup runs into: files that must never be lost, refusals before rig time, meter specs.

Each test is the regression test of one defect a new-user sweep of the rig path
found (``irene calibrate``, ``irene train``, ``pytest --irene-calibrate``, the
meters). None needs a meter: the refusals all come before one is opened.
"""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import pytest

from inner import run

from pytest_irene.cli import main
from pytest_irene.engine.dataset import load_dataset
from pytest_irene.errors import DatasetError, UsageError
from pytest_irene.rig.calibration_files import check_dataset_for_append, check_model_output, rescue_trees
from pytest_irene.rig.calibration_idle import judge_idle
from pytest_irene.rig.calibration_plan import CalibrationError, CalibrationPlan, CalibrationSettings, SettingError
from pytest_irene.rig.meters import parse_meter_spec
from pytest_irene.rig.meters.base import Measurement

NO_PORT = "emonpi:/dev/irene-no-such-port,115200"


def tree_line(*, energy_j: float = 2.0, scope: str | None = None, leaf_measured: bool = True, **features: float) -> str:
    """One valid ``irene-tree/1`` line: a model root with one Linear leaf."""
    leaf = {"scope": "lin", "type": "Linear", "level": "ml", "energy_j": energy_j / 2 if leaf_measured else None,
            "features": {"flops": 1000.0, "mem_bytes": 400.0, **features}, "children": []}
    if not leaf_measured:
        leaf["notes"] = {"unmeasured": "RuntimeError: cannot replay alone"}
    root = {"scope": "", "type": "Tiny", "level": "model", "energy_j": energy_j,
            "features": {"flops": 1000.0, "mem_bytes": 400.0}, "children": [leaf]}
    obj = {"format": "irene-tree/1", "device": "rig", "model_name": "tiny", "batch_size": 2, "seq_len": 8, "root": root}
    if scope is not None:
        obj["meta"] = {"energy_scope": scope}
    return json.dumps(obj)


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    path = tmp_path / "rig.jsonl"
    path.write_text(tree_line() + "\n" + tree_line(energy_j=3.0) + "\n")
    return path


# -- the energy model file never replaces a dataset or another file --------------------------------------


def test_train_refuses_to_write_the_model_over_its_own_dataset(dataset: Path, capsys) -> None:
    before = dataset.read_bytes()
    link = dataset.with_name("model.json")
    link.symlink_to(dataset)
    for output, message in ((dataset, "got a dataset name"), (link, "is the dataset")):
        assert main(["train", str(dataset), "-o", str(output), "--no-crossvalidate"]) == 2
        assert f"irene train: error: -o/--output={output}: " in (err := capsys.readouterr().err) and message in err
    assert dataset.read_bytes() == before


def test_model_output_refusals_name_the_option(dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"-o/--output=.*other\.jsonl\.gz: expected an energy model file"):
        check_model_output(tmp_path / "other.jsonl.gz", [dataset], "-o/--output")
    notes = tmp_path / "notes.json"
    notes.write_text('{"my": "notes"}')
    with pytest.raises(UsageError, match="exists and is not an energy model file; refusing to overwrite"):
        check_model_output(notes, [dataset], "-o/--output")
    model = tmp_path / "model.json"
    model.write_text('{"format": "irene-model", "schema_version": 1}')
    assert check_model_output(model, [dataset], "-o") == model  # retraining replaces a model: fine
    empty = tmp_path / "empty.json"
    empty.write_text("")
    assert check_model_output(empty, [dataset], "-o") == empty


def test_train_and_calibrate_refuse_to_write_the_transferred_model_over_its_prior(dataset: Path, tmp_path: Path,
                                                                                   capsys) -> None:
    from pytest_irene.engine.predict.profiles import resolve_profile

    prior = tmp_path / "prior.json"
    prior.write_bytes(resolve_profile("irene-pc1").read_bytes())
    before = prior.read_bytes()
    for argv in (["train", str(dataset), "--no-crossvalidate"],
                 ["calibrate", "--model", "gpt2", "--batch-size", "1", "--seq-len", "4", "--meter", "rapl",
                  "--dataset", str(tmp_path / "d.jsonl")]):
        assert main([*argv, "--prior", str(prior), "-o", str(prior)]) == 2
        err = capsys.readouterr().err
        assert f"error: -o/--output={prior}: is the prior {prior}; the transferred model would replace it" in err, err
    assert prior.read_bytes() == before


def test_calibrate_refuses_the_model_over_the_dataset_before_opening_the_meter(dataset: Path, capsys) -> None:
    before = dataset.read_bytes()
    code = main(["calibrate", "--model", "bert-base-uncased", "--batch-size", "1", "--seq-len", "8",
                 "--meter", NO_PORT, "--dataset", str(dataset), "-o", str(dataset.with_suffix(".jsonl"))])
    assert code == 2 and "-o/--output=" in capsys.readouterr().err
    assert dataset.read_bytes() == before


# -- the dataset is read before measuring into it --------------------------------------------------------


def test_calibrate_refuses_a_truncated_dataset_before_measuring(tmp_path: Path, capsys) -> None:
    broken = tmp_path / "rig.jsonl.gz"
    broken.write_bytes(gzip.compress(((tree_line() + "\n") * 50).encode())[:60])  # a copy cut short
    before = broken.read_bytes()
    code = main(["calibrate", "--model", "bert-base-uncased", "--batch-size", "1", "--seq-len", "8",
                 "--meter", NO_PORT, "--dataset", str(broken), "-o", str(tmp_path / "m.json")])
    err = capsys.readouterr().err
    assert code == 2 and "rig.jsonl.gz" in err and "corrupt or truncated" in err and "--dataset" in err
    assert "cannot open emonPi serial port" not in err  # refused before the meter
    assert broken.read_bytes() == before


def test_a_dataset_of_another_energy_scope_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "gpu.jsonl"
    path.write_text(tree_line(scope="gpu-board") + "\n")
    assert check_dataset_for_append(path, "gpu-board", "--dataset") == [("tiny", 2, 8)]
    with pytest.raises(UsageError, match=r"--dataset=.*gpu\.jsonl: holds gpu-board energy and this meter measures wall"):
        check_dataset_for_append(path, "wall", "--dataset")
    assert check_dataset_for_append(tmp_path / "new.jsonl", "wall", "--dataset") == []


def test_a_failed_append_rescues_the_measured_tree(dataset: Path) -> None:
    trees = load_dataset(dataset)
    error = rescue_trees(dataset, trees[:1], OSError(28, "No space left on device"))
    assert isinstance(error, CalibrationError) and "No space left on device" in str(error)
    rescued = next(dataset.parent.glob("rig.rescued-*.jsonl"))
    assert str(rescued) in str(error)
    assert len(load_dataset(rescued)) == 1


def test_training_data_with_negative_features_is_refused(tmp_path: Path) -> None:
    for feature in ("latency_s", "flops", "gpu_energy_j"):
        path = tmp_path / f"{feature}.jsonl"
        path.write_text(tree_line(**{feature: -1.0}) + "\n")
        with pytest.raises(DatasetError, match=rf"{feature}\.jsonl:1: field 'root\.children\[0\]\.features\.{feature}': "
                           r"expected a value >= 0, got -1\.0"):
            load_dataset(path)


def test_one_unmeasured_node_leaves_its_tree_out_not_the_dataset(dataset: Path, tmp_path: Path, capsys) -> None:
    with dataset.open("a") as handle:
        handle.write(tree_line(energy_j=5.0, leaf_measured=False) + "\n")
    assert main(["train", str(dataset), "-o", str(tmp_path / "m.json"), "--no-crossvalidate"]) == 0
    out = capsys.readouterr()
    assert "1 tree(s) left out of training" in out.err and "node 'lin': no measured energy (RuntimeError: cannot replay alone)" in out.err
    assert json.loads((tmp_path / "m.json").read_text())["dataset"]["trees"] == 2
    predictions = tmp_path / "predicted.jsonl"
    predictions.write_text(tree_line(leaf_measured=False) + "\n")
    assert main(["train", str(predictions), "-o", str(tmp_path / "p.json")]) == 2
    assert "no tree has a measured energy on every node" in capsys.readouterr().err


def test_one_unmeasured_node_leaves_its_tree_out_of_a_transfer_too(dataset: Path, tmp_path: Path, capsys) -> None:
    """``--prior`` loads its trees itself: one unmeasured node blocked the whole transfer."""
    with dataset.open("a") as handle:
        handle.write(tree_line(energy_j=5.0, leaf_measured=False) + "\n")
    code = main(["train", str(dataset), "--prior", "irene-pc1", "-o", str(tmp_path / "m.json"), "--no-crossvalidate"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "1 tree(s) left out of training" in err
    assert json.loads((tmp_path / "m.json").read_text())["dataset"]["trees"] == 2


def test_train_names_a_bad_prior_as_the_option(dataset: Path, tmp_path: Path, capsys) -> None:
    assert main(["train", str(dataset), "--prior", "no-such-profile", "-o", str(tmp_path / "m.json")]) == 2
    assert "irene train: error: --prior: unknown energy model 'no-such-profile'" in capsys.readouterr().err


def test_a_failed_model_write_says_the_trees_are_kept(dataset: Path, tmp_path: Path) -> None:
    from pytest_irene.rig.calibration_train import train_rig_model

    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(CalibrationError, match=r"cannot write the energy model .*; the measured trees are kept in .*rig\.jsonl"):
        train_rig_model([dataset], blocker / "m.json", profile="rig", prior="irene-pc1")


def test_ctrl_c_says_what_is_kept(tmp_path: Path, monkeypatch, capsys) -> None:
    import pytest_irene.rig.calibration as calibration

    class Interrupted:
        trees = ["one finished"]
        held_runs = [("m", 8, 32), ("m", 8, 64)]  # the dataset held two trees before this run
        kept = calibration.Calibrator.kept

        def __init__(self, meter, settings, dataset, **kwargs) -> None:
            self.dataset = dataset

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            pass

        def run(self, targets):
            raise KeyboardInterrupt

    monkeypatch.setattr(calibration, "Calibrator", Interrupted)
    code = main(["calibrate", "--model", "bert-base-uncased", "--config", "num_hidden_layers=1", "--batch-size", "1",
                 "--seq-len", "8", "--meter", NO_PORT, "--dataset", str(tmp_path / "d.jsonl"), "-o", str(tmp_path / "m.json")])
    out = capsys.readouterr()
    assert code == 130
    assert "interrupted: the 1 tree(s) this run finished are in" in out.out and "d.jsonl (3 in all)" in out.out


# -- settings and idle ------------------------------------------------------------------------------------


@pytest.mark.parametrize("field, value", [("idle_power_w", math.nan), ("idle_power_w", 0.0), ("idle_power_w", -5.0),
                                          ("idle_cpu_pct", math.nan), ("idle_cpu_pct", 150.0), ("idle_cpu_pct", -1.0),
                                          ("idle_window_s", 0.0)])
def test_idle_settings_that_would_switch_the_check_off_are_refused(field: str, value: float) -> None:
    with pytest.raises(SettingError) as info:
        CalibrationSettings(**{field: value})
    assert info.value.setting == field


def test_calibrate_refuses_a_prior_it_would_ignore(capsys, tmp_path: Path) -> None:
    code = main(["calibrate", "--model", "gpt2", "--batch-size", "1", "--seq-len", "8", "--meter", NO_PORT,
                 "--prior", "irene-pc1", "--no-train", "--dataset", str(tmp_path / "d.jsonl")])
    assert code == 2 and "--prior: " in capsys.readouterr().err


def test_calibrate_names_the_idle_option(capsys, tmp_path: Path) -> None:
    code = main(["calibrate", "--model", "bert-base-uncased", "--batch-size", "1", "--seq-len", "8", "--meter", NO_PORT,
                 "--idle-watts", "nan", "--dataset", str(tmp_path / "d.jsonl"), "-o", str(tmp_path / "m.json")])
    assert code == 2 and "--idle-watts: must be positive (a finite number), got nan" in capsys.readouterr().err


@pytest.mark.parametrize("device, message", [("foo", "'foo' is not a torch device"), ("meta", "holds no data"),
                                             ("cuda:7", "cuda:7")])
def test_a_device_torch_cannot_use_here_is_refused_up_front(device: str, message: str) -> None:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available() and torch.cuda.device_count() > 7:
        pytest.skip("this host has 8 CUDA devices")
    with pytest.raises(SettingError, match=message) as info:
        CalibrationSettings(device=device)
    assert info.value.setting == "device"


def test_calibrate_no_train_needs_no_output_and_names_the_profile_after_the_dataset(tmp_path: Path, monkeypatch) -> None:
    import pytest_irene.rig.calibration as calibration

    seen = {}

    class Recording:
        def __init__(self, meter, settings, dataset, **kwargs) -> None:
            seen["profile"] = settings.profile
            raise KeyboardInterrupt  # stop before the meter: the settings are what this test is about

    monkeypatch.setattr(calibration, "Calibrator", Recording)
    code = main(["calibrate", "--model", "bert-base-uncased", "--config", "num_hidden_layers=1", "--batch-size", "1",
                 "--seq-len", "8", "--meter", NO_PORT, "--dataset", str(tmp_path / "my-rig.jsonl.gz"), "--no-train"])
    assert code == 130 and seen["profile"] == "my-rig"


@pytest.mark.parametrize("power_w, hint", [(0.0, "CT clamped around the live wire"), (-120.0, "wrong way round")])
def test_a_meter_reading_no_power_is_refused_at_idle(power_w: float, hint: str) -> None:
    m = Measurement(energy_j=power_w * 2, duration_s=2.0, samples=4, start_s=0.0, end_s=2.0)
    with pytest.raises(CalibrationError, match=rf"meter reads {power_w:.1f} W with the machine idle.*{hint}"):
        judge_idle(m, [power_w] * 4, 1.0, CalibrationSettings(idle_cpu_pct=100.0))
    with pytest.raises(CalibrationError, match="Does the meter read the device the models run on"):
        judge_idle(m, [power_w] * 4, 1.0, CalibrationSettings(idle_cpu_pct=100.0), wall=False)


def test_the_plan_prints_the_idle_time_rounded() -> None:
    plan = CalibrationPlan(targets=(("t", 2, 3),), window_s=2.0, rounds=2, cooldown_s=1.0, idle_s=2.01181, total_s=10.0)
    assert "idle 2.01 s" in plan.describe() and "2.01181" not in plan.describe()


# -- meter specs -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec, message", [
    ("emonpi:/dev/ttyAMA0,period=0", "'0' is not a report period"),
    ("emonpi:/dev/ttyAMA0,period=-1", "'-1' is not a report period"),
    ("emonpi:/dev/ttyAMA0,period=nan", "'nan' is not a report period"),
    ("emonpi:/dev/ttyAMA0,fast", "'fast' is not a baud rate such as 38400 or 115200"),
    ("emonpi:/dev/ttyAMA0,node=x", "'x' is not an RF node id"),
    ("nvml:-1", "GPU index -1 is negative"),
])
def test_bad_meter_specs_say_what_was_expected(spec: str, message: str) -> None:
    with pytest.raises(UsageError, match=f"meter spec '{spec}': .*{message}"):
        parse_meter_spec(spec)


# -- pytest --irene-calibrate: the same file checks before any test ---------------------------------------

SUITE = """
def test_measured(irene_calibrate):
    raise AssertionError("must not run: the run is refused at start-up")
"""


def test_plugin_refuses_bad_files_before_any_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(SUITE)
    (pytester.path / "rig.jsonl").write_text(tree_line() + "\n")
    (pytester.path / "cut.jsonl.gz").write_bytes(gzip.compress(((tree_line() + "\n") * 50).encode())[:60])
    (pytester.path / "adir").mkdir()
    cases = [
        (["--irene-calibrate-dataset=rig.jsonl", "--irene-calibrate-output=rig.jsonl"], "*expected an energy model file*"),
        (["--irene-calibrate-output=adir"], "*--irene-calibrate-output=*adir: is a directory*"),
        (["--irene-calibrate-dataset=cut.jsonl.gz"], "*cut.jsonl.gz*corrupt or truncated*--irene-calibrate-dataset*"),
        (["--irene-prior=no-such-profile"], "*--irene-prior: unknown energy model 'no-such-profile'*"),
        (["--irene-calibrate-idle-watts=nan"], "*--irene-calibrate-idle-watts: must be positive*"),
        (["--irene-prior=irene-pc1", "--irene-calibrate-no-train"], "*--irene-prior: *--irene-calibrate-no-train*"),
    ]
    for args, message in cases:
        result = run(pytester, "--irene-calibrate", "--irene-meter=rapl", *args)
        assert result.ret == pytest.ExitCode.USAGE_ERROR, args
        result.stderr.fnmatch_lines([message])
    assert (pytester.path / "rig.jsonl").read_text() == tree_line() + "\n"


def test_a_frozen_nvml_counter_is_named_as_such() -> None:
    from fakes.fake_nvml import FakeGpu, FakeNvml
    from pytest_irene.rig.meters.base import MeterError
    from pytest_irene.rig.meters.nvml import NvmlMeter

    meter = NvmlMeter(0, poll_s=0.01, timeout_s=0.2, nvml_module=FakeNvml([FakeGpu(power_w=0.0)]))  # never advances
    with meter, pytest.raises(MeterError, match="total-energy counter did not change"):
        meter.wait_for_samples(2)


def test_two_calibration_sessions_on_one_rig_keep_its_fingerprint() -> None:
    """Their trees' ``meta.host`` differ in the idle power each session read: irene train wrote ``{}``."""
    from pytest_irene.engine.predict.training import hardware_of
    from pytest_irene.engine.tree import EnergyNode, EnergyTree

    rig = {"cpu_model": "Rig CPU", "cpu_count": 8, "memory_gib": 32.0, "gpus": ["GPU"], "driver_version": "1"}

    def tree(idle_w: float, **machine: object) -> EnergyTree:
        t = EnergyTree(EnergyNode("", "M", "model"), model_name="m", batch_size=1, seq_len=1)
        t.meta["host"] = {**rig, **machine, "meter": "emonPi on /dev/ttyAMA0", "idle_power_w": idle_w}
        return t

    assert hardware_of([tree(140.1), tree(145.5)]) == {**rig, "meter": "emonPi on /dev/ttyAMA0", "idle_power_w": 145.5}
    assert hardware_of([tree(140.1), tree(140.1, cpu_model="Other CPU")]) == {}  # two machines: none of them
