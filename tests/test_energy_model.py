"""Energy model files: training, the versioned JSON round trip, validation errors, profiles."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pytest_irene.engine.dataset import dataset_hash, load_dataset, write_dataset
from pytest_irene.engine.predict.energy_model import SCHEMA_VERSION, EnergyModel, clear_cache, train_energy_model
from pytest_irene.errors import ModelFileError, UsageError
from pytest_irene.engine.predict.profiles import bundled_profiles, resolve_profile
from pytest_irene.engine.predict.strategies import DEFAULT_STRATEGY
from pytest_irene.engine.tree import RESOURCE_FEATURES

REPO = Path(__file__).resolve().parent.parent
PC1 = REPO / "calibration" / "datasets" / "irene-pc1.jsonl.gz"
SUBSET_MODELS = ("bert-base-uncased", "gpt2", "distilgpt2")


@pytest.fixture(scope="module")
def subset_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three paper models at two batch sizes: enough for leave-one-model-out, fast to fit."""
    trees = [t for t in load_dataset(PC1) if t.model_name in SUBSET_MODELS and t.batch_size in (8, 16)]
    path = tmp_path_factory.mktemp("data") / "subset.jsonl.gz"
    write_dataset(path, trees)
    return path


@pytest.fixture(scope="module")
def trained(subset_path: Path) -> EnergyModel:
    return train_energy_model([subset_path], profile="subset", hardware={"description": "test rig", "cpu_count": 2})


@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_cache()
    yield
    clear_cache()


def _predictions(model: EnergyModel, features: str, trees) -> list[float]:
    model.predict_many(trees, features=features)
    return [n.predicted_energy_j for t in trees for n in t.walk()]


# -- training --------------------------------------------------------------------------------


def test_train_records_both_feature_sets_hash_and_own_cv_errors(trained: EnergyModel, subset_path: Path):
    assert trained.feature_sets == ("model", "all")
    assert trained.strategy == DEFAULT_STRATEGY
    assert trained.dataset_hash == dataset_hash(subset_path)
    assert trained.dataset_files == ["subset.jsonl.gz"]
    assert trained.dataset_info["trees"] == 48
    for name in ("model", "all"):
        cv = trained.cv_errors[name]
        assert cv["split"] == "lomo"
        assert set(cv["levels"]) == {"ml", "module", "model"}
        assert set(cv["levels"]["model"]) == set(SUBSET_MODELS) | {"average"}
        assert 0 < cv["levels"]["model"]["average"] < 100


def test_training_leaves_no_predictions_from_crossvalidation_behind(subset_path: Path):
    model = train_energy_model([subset_path], profile="p", feature_sets=("model",))
    trees = load_dataset(subset_path)
    assert all(n.predicted_energy_j is None for t in trees for n in t.walk())
    model.predict(trees[0])
    assert all(n.predicted_energy_j and n.predicted_energy_j > 0 for n in trees[0].walk())


def test_train_all_features_needs_resource_features(tmp_path: Path):
    trees = load_dataset(PC1)[:4]
    for tree in trees:
        for node in tree.walk():
            for f in RESOURCE_FEATURES:
                node.features.pop(f, None)
    path = tmp_path / "model-only.jsonl"
    write_dataset(path, trees)
    with pytest.raises(UsageError, match="resource features"):
        train_energy_model([path], profile="x", feature_sets=("model", "all"))


def test_train_takes_hardware_from_measured_trees(tmp_path: Path):
    host = {"cpu_model": "Test CPU", "cpu_count": 4, "memory_gib": 8.0, "gpus": [], "driver_version": None}
    trees = [t for t in load_dataset(PC1) if t.model_name == "gpt2"]
    for tree in trees:
        tree.meta["host"] = dict(host)
    path = tmp_path / "rig.jsonl"
    write_dataset(path, trees)
    model = train_energy_model([path], profile="rig", feature_sets=("model",))
    assert model.hardware == host
    # one model cannot be left out against itself: the errors come from the next split that applies
    assert model.cv_errors["model"]["split"] == "seq"
    assert set(model.cv_errors["model"]["levels"]["model"]) == {"gpt2", "average"}


def test_train_rejects_bad_arguments(subset_path: Path):
    with pytest.raises(UsageError, match="features"):
        train_energy_model([subset_path], profile="x", feature_sets=("bogus",))
    with pytest.raises(UsageError, match="profile"):
        train_energy_model([subset_path], profile="")
    with pytest.raises(UsageError, match="strategy"):
        train_energy_model([subset_path], profile="x", strategy="nope")


# -- round trip ----------------------------------------------------------------------------


def test_save_load_round_trip_gives_identical_predictions(trained: EnergyModel, tmp_path: Path, subset_path: Path):
    path = tmp_path / "m.json"
    trained.save(path)
    loaded = EnergyModel.load(path)
    assert loaded.source == path.resolve()
    assert loaded.profile == "subset"
    assert loaded.hardware == {"description": "test rig", "cpu_count": 2}
    assert loaded.dataset_hash == trained.dataset_hash
    assert loaded.cv_errors == json.loads(json.dumps(trained.cv_errors))
    assert loaded.schema_version == SCHEMA_VERSION
    for features in ("model", "all"):
        a = _predictions(trained, features, load_dataset(subset_path))
        b = _predictions(loaded, features, load_dataset(subset_path))
        assert a == b
    # and saving the loaded model again reproduces the file byte for byte (stable key order)
    again = tmp_path / "again.json"
    loaded.save(again)
    assert again.read_bytes() == path.read_bytes()


def test_file_is_readable_json_with_documented_top_level(trained: EnergyModel, tmp_path: Path):
    path = tmp_path / "m.json"
    trained.save(path)
    text = path.read_text()
    obj = json.loads(text)
    assert list(obj) == [
        "format", "schema_version", "profile", "energy_scope", "created_by", "hardware", "dataset",
        "strategy", "hyper_parameters", "feature_sets", "cv_errors",
    ]
    assert obj["format"] == "irene-model"
    assert obj["created_by"].startswith("pytest-irene ")
    assert obj["dataset"]["hash"].startswith("sha256:")
    assert text.count("\n") > 50  # indented, not one line


def test_predict_traced_tree_after_round_trip(trained: EnergyModel, tmp_path: Path):
    from pytest_irene.engine.architectures import build_model, example_inputs
    from pytest_irene.engine.tracing import trace

    path = tmp_path / "m.json"
    trained.save(path)
    model = build_model("gpt2", n_layer=2)
    tree_a = trace(model, example_inputs("gpt2", 8, 32))
    tree_b = trace(model, example_inputs("gpt2", 8, 32))
    assert trained.predict(tree_a) is tree_a
    EnergyModel.load(path).predict(tree_b)
    assert [n.predicted_energy_j for n in tree_a.walk()] == [n.predicted_energy_j for n in tree_b.walk()]
    assert tree_a.total_j > 0 and tree_a.meta["profile"] == "subset" and tree_a.meta["features"] == "model"


def test_predict_errors_name_the_feature_set(trained: EnergyModel, tmp_path: Path, subset_path: Path):
    from pytest_irene.engine.architectures import build_model, example_inputs
    from pytest_irene.engine.tracing import trace

    tree = trace(build_model("gpt2", n_layer=1), example_inputs("gpt2", 8, 32))
    with pytest.raises(UsageError, match="resource features"):
        trained.predict(tree, features="all")
    with pytest.raises(UsageError, match="features"):
        trained.predict(tree, features="everything")
    only_model = train_energy_model([subset_path], profile="m", feature_sets=("model",), crossvalidate=False)
    assert only_model.cv_errors == {}
    with pytest.raises(UsageError, match=r"no 'all' feature set.*\['model'\]"):
        only_model.predict(load_dataset(subset_path)[0], features="all")


# -- atomic save and cache -------------------------------------------------------------------


def test_failed_save_keeps_the_existing_file(trained: EnergyModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / "m.json"
    trained.save(path)
    before = path.read_bytes()
    broken = EnergyModel(**{**trained.__dict__, "hardware": {"memory_gib": float("nan")}})
    with pytest.raises(ValueError):
        broken.save(path)
    assert path.read_bytes() == before

    def failing_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError):
        trained.save(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]  # no temp file left behind


def test_load_is_cached_per_path_and_mtime(trained: EnergyModel, tmp_path: Path):
    path = tmp_path / "m.json"
    trained.save(path)
    first = EnergyModel.load(path)
    assert EnergyModel.load(str(path)) is first
    obj = json.loads(path.read_text())
    obj["profile"] = "renamed"
    path.write_text(json.dumps(obj))
    os.utime(path, ns=(first_ns := path.stat().st_mtime_ns + 10**9, first_ns))
    second = EnergyModel.load(path)
    assert second is not first and second.profile == "renamed"


# -- validation errors ----------------------------------------------------------------------


@pytest.fixture
def model_file(trained: EnergyModel, tmp_path: Path) -> Path:
    path = tmp_path / "model.json"
    trained.save(path)
    return path


def _edit(path: Path, change) -> Path:
    obj = json.loads(path.read_text())
    change(obj)
    path.write_text(json.dumps(obj))
    return path


def _first_weight_list(obj):
    """Path to the first list of numbers inside the 'model' predictor."""
    stack = [obj["feature_sets"]["model"]["params"]]
    while stack:
        node = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in items:
            if isinstance(value, list) and value and all(isinstance(v, float) for v in value):
                return value
            if isinstance(value, (dict, list)):
                stack.append(value)
    raise AssertionError("no weights found")


def test_newer_schema_is_refused_naming_file_and_field(model_file: Path):
    _edit(model_file, lambda o: o.update(schema_version=SCHEMA_VERSION + 1))
    with pytest.raises(ModelFileError) as exc:
        EnergyModel.load(model_file)
    msg = str(exc.value)
    assert str(model_file) in msg and "schema_version" in msg and "newer" in msg and "upgrade" in msg


@pytest.mark.parametrize("field", ["profile", "hardware", "dataset", "strategy", "feature_sets", "cv_errors"])
def test_missing_field_is_named(model_file: Path, field: str):
    _edit(model_file, lambda o: o.pop(field))
    with pytest.raises(ModelFileError, match=rf"model\.json: field '{field}': missing"):
        EnergyModel.load(model_file)


def test_wrong_types_are_named(model_file: Path):
    _edit(model_file, lambda o: o.update(hardware=["not", "an", "object"]))
    with pytest.raises(ModelFileError, match="field 'hardware': expected an object, got list"):
        EnergyModel.load(model_file)


def test_bad_dataset_hash_is_named(model_file: Path):
    _edit(model_file, lambda o: o["dataset"].update(hash="md5:abc"))
    with pytest.raises(ModelFileError, match="field 'dataset.hash'"):
        EnergyModel.load(model_file)


@pytest.mark.parametrize("prints", ["abc", [123], ["not-hex-digits-16"], ["0123456789abcde"]])
def test_bad_tree_fingerprints_are_named(model_file: Path, prints):
    _edit(model_file, lambda o: o["dataset"].update(tree_fingerprints=prints))
    with pytest.raises(ModelFileError, match="field 'dataset.tree_fingerprints': expected a list of 16-digit"):
        EnergyModel.load(model_file)


def test_nan_weight_is_refused_naming_the_field(model_file: Path):
    def poison(obj):
        _first_weight_list(obj)[0] = float("nan")

    _edit(model_file, poison)  # json.dumps writes NaN, as a buggy writer would
    assert "NaN" in model_file.read_text()
    with pytest.raises(ModelFileError) as exc:
        EnergyModel.load(model_file)
    msg = str(exc.value)
    assert str(model_file) in msg and "field 'feature_sets.model.params." in msg and "NaN" in msg


def test_broken_predictor_content_is_named(model_file: Path):
    _edit(model_file, lambda o: o["feature_sets"]["model"].pop("params"))
    with pytest.raises(ModelFileError, match=r"field 'feature_sets.model': .*params"):
        EnergyModel.load(model_file)


def test_predictor_of_other_strategy_is_refused(model_file: Path):
    _edit(model_file, lambda o: o.update(strategy="end2end"))
    with pytest.raises(ModelFileError, match="feature_sets.model.strategy"):
        EnergyModel.load(model_file)


def test_unknown_feature_set_is_named(model_file: Path):
    _edit(model_file, lambda o: o["feature_sets"].update(gpu_only=o["feature_sets"]["model"]))
    with pytest.raises(ModelFileError, match="feature_sets.gpu_only"):
        EnergyModel.load(model_file)


def test_not_json_and_wrong_format(tmp_path: Path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ModelFileError, match=r"bad\.json: not valid JSON .*line 1"):
        EnergyModel.load(bad)
    dataset_line = tmp_path / "tree.json"
    dataset_line.write_text(json.dumps({"format": "irene-tree/1"}))
    with pytest.raises(ModelFileError, match=r"tree\.json: field 'format': expected 'irene-model'"):
        EnergyModel.load(dataset_line)
    array = tmp_path / "array.json"
    array.write_text("[]")
    with pytest.raises(ModelFileError, match="array.json: expected a JSON object"):
        EnergyModel.load(array)


# -- profiles and the bundled model ---------------------------------------------------------------


def test_profiles_resolve_names_and_paths(model_file: Path, tmp_path: Path):
    assert "irene-pc1" in bundled_profiles()
    bundled = resolve_profile("irene-pc1")
    assert bundled.name == "irene-pc1.json" and bundled.is_file()
    assert resolve_profile(str(model_file)) == model_file.resolve()
    assert resolve_profile(model_file) == model_file.resolve()
    with pytest.raises(ModelFileError, match=r"unknown energy model 'irene-pc9'.*bundled profiles: .*irene-pc1"):
        resolve_profile("irene-pc9")
    with pytest.raises(ModelFileError, match="no such file"):
        resolve_profile(tmp_path / "missing.json")
    with pytest.raises(ModelFileError, match="not a file"):
        resolve_profile(str(tmp_path) + "/")


def test_bundled_model_loads_by_name_and_path():
    by_name = EnergyModel.load("irene-pc1")
    by_path = EnergyModel.load(str(resolve_profile("irene-pc1")))
    assert by_name is by_path  # same file, one cached object
    assert by_name.feature_sets == ("model", "all")
    hw = by_name.hardware
    assert {"cpu_model", "cpu_count", "memory_gib", "gpus", "driver_version", "description"} <= set(hw)
    assert "i9-7900X" in hw["cpu_model"] and "1080 Ti" in hw["gpus"][0] and hw["memory_gib"] == 32.0


def test_bundled_model_matches_a_fresh_training_run():
    """The shipped file is what scripts/build_bundled_model.py builds from the reference data
    with the current default strategy (rerun the script when the predictor changes)."""
    shipped = EnergyModel.load("irene-pc1")
    assert shipped.strategy == DEFAULT_STRATEGY
    assert shipped.dataset_hash == dataset_hash(PC1)
    fresh = train_energy_model([PC1], profile="irene-pc1", crossvalidate=False)
    trees = [t for t in load_dataset(PC1) if t.batch_size == 16 and t.seq_len in (64, 256)]
    for features in ("model", "all"):
        assert _predictions(shipped, features, trees) == pytest.approx(_predictions(fresh, features, trees), rel=1e-9)
    assert shipped.cv_errors["model"]["split"] == "lomo"


def test_module_level_predict_traces_and_predicts():
    from pytest_irene import pipeline
    from pytest_irene.engine.architectures import build_model, example_inputs

    model = build_model("distilbert-base-uncased", n_layers=1)
    tree = pipeline.predict(model, example_inputs("distilbert-base-uncased", 8, 64), profile="irene-pc1")
    assert tree.batch_size == 8 and tree.seq_len == 64
    assert all(n.predicted_energy_j is not None and n.predicted_energy_j > 0 for n in tree.walk())
    assert tree.total_j == pytest.approx(tree.root.predicted_energy_j)
    with pytest.raises(UsageError, match="features"):
        pipeline.predict(model, example_inputs("distilbert-base-uncased", 8, 64), features="some")


def test_training_on_two_machines_warns_and_records_no_hardware(tmp_path: Path):
    import warnings

    from pytest_irene.engine.predict.training import MixedMachinesWarning

    pc1, pc2 = tmp_path / "pc1.jsonl", tmp_path / "pc2.jsonl"
    write_dataset(pc1, [t for t in load_dataset(PC1) if t.model_name == "gpt2" and t.batch_size == 8])
    write_dataset(pc2, [t for t in load_dataset(PC1.parent / "irene-pc2-sample.jsonl.gz") if t.model_name == "gpt2"][:4])
    with pytest.warns(MixedMachinesWarning, match=r"2 machines: irene-pc1 \(\d+ trees\), irene-pc2 \(4 trees\)"):
        mixed = train_energy_model([pc1, pc2], profile="mix", feature_sets=["model"], crossvalidate=False)
    assert mixed.hardware == {}
    with warnings.catch_warnings():
        warnings.simplefilter("error", MixedMachinesWarning)  # one machine: silent
        train_energy_model([pc1], profile="one", feature_sets=["model"], crossvalidate=False)


def test_recording_tree_fingerprints_keeps_the_energy_model_version(tmp_path: Path):
    """Baselines store the model file's version; the fingerprints list is bookkeeping that never
    changes a prediction, so a file with and without it has one version, and a weight does not."""
    from pytest_irene.compare.baselines import energy_model_version
    from pytest_irene.engine.predict.model_file import dump_json

    shipped = resolve_profile("irene-pc1")
    obj = json.loads(shipped.read_text())
    assert obj["dataset"]["tree_fingerprints"]
    obj["dataset"].pop("tree_fingerprints")
    without = tmp_path / "without.json"
    without.write_text(dump_json(obj) + "\n")
    assert energy_model_version(without) == energy_model_version(shipped)
    _first_weight_list(obj)[0] += 1e-3
    without.write_text(dump_json(obj) + "\n")
    assert energy_model_version(without) != energy_model_version(shipped)


def test_predicting_a_module_instead_of_a_tree_says_to_trace_it() -> None:
    """``em.predict(model)`` raised ``AttributeError: 'Sequential' object has no attribute 'root'``."""
    import torch

    from pytest_irene.errors import UsageError

    with pytest.raises(UsageError, match="expected an EnergyTree, got Sequential; trace the model first"):
        EnergyModel.load("irene-pc1").predict(torch.nn.Sequential(torch.nn.Linear(4, 4)))
