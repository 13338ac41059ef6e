"""Hand-edited and foreign energy model files, the model cache, and widths without normalisation.

A new user edits the bundled profile, hands over a gzip or a pickle, saves over a file in the
same second, loads one file from many threads: every problem must be a ``ModelFileError``
naming the file and the field, nothing must be unpickled, and the cache must stay one cache.
"""

from __future__ import annotations

import copy
import gzip
import json
import os
import pickle
import threading
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from pytest_irene.cli import main
from pytest_irene.engine.dataset import load_dataset, write_dataset
from pytest_irene.engine.predict import energy_model as energy_model_module
from pytest_irene.engine.predict.energy_model import EnergyModel, clear_cache
from pytest_irene.engine.predict.profiles import peek_profile, resolve_profile
from pytest_irene.engine.predict.ranges import tree_width
from pytest_irene.errors import ModelFileError

REPO = Path(__file__).resolve().parent.parent
PC1 = REPO / "calibration" / "datasets" / "irene-pc1.jsonl.gz"
BUNDLED = resolve_profile("irene-pc1")


@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_cache()
    yield
    clear_cache()


@pytest.fixture(scope="module")
def bundled_doc() -> dict[str, Any]:
    return json.loads(BUNDLED.read_text())


def _both_readers(path: Path) -> list[str]:
    """The messages of the configure-time peek and of the full load, in that order."""
    messages = []
    for read in (peek_profile, EnergyModel.load):
        clear_cache()
        with pytest.raises(ModelFileError) as exc:
            read(path)
        messages.append(str(exc.value))
    return messages


# -- files that are not JSON text --------------------------------------------------------------


class _Payload:
    """Unpickling this would create ``marker``: proof the loader never unpickles."""

    marker = ""

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_binary_files_are_named_for_what_they_are_and_never_unpickled(tmp_path: Path):
    payload = _Payload()
    payload.marker = str(tmp_path / "unpickled")
    zipped = tmp_path / "torch.json"
    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr("data.pkl", b"x")
    cases = {
        tmp_path / "compressed.json": (gzip.compress(BUNDLED.read_bytes()), "gzip"),
        tmp_path / "model.pkl": (pickle.dumps(payload), "pickle"),
        zipped: (None, "zip"),
    }
    for path, (data, word) in cases.items():
        if data is not None:
            path.write_bytes(data)
        for message in _both_readers(path):
            assert message.startswith(f"{path}: this is a {word}") and "expected an energy model JSON file" in message
    assert not (tmp_path / "unpickled").exists()


def test_a_file_in_another_encoding_says_so(tmp_path: Path):
    path = tmp_path / "latin1.json"
    path.write_bytes(BUNDLED.read_text().replace("irene-pc1", "iréne-pc1", 1).encode("latin-1"))
    for message in _both_readers(path):
        assert message.startswith(f"{path}: not UTF-8 text (byte 0xe9") and "save it as UTF-8" in message


def test_a_utf8_byte_order_mark_is_skipped(tmp_path: Path):
    path = tmp_path / "notepad.json"
    path.write_bytes(b"\xef\xbb\xbf" + BUNDLED.read_bytes())
    assert peek_profile(path)["format"] == "irene-model"
    assert EnergyModel.load(path).to_json() == EnergyModel.load("irene-pc1").to_json()


def test_json_nested_too_deeply_is_a_model_file_error(tmp_path: Path):
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    for message in _both_readers(path):
        assert message.startswith(f"{path}: JSON nested too deeply")


def test_a_profile_name_given_as_a_path_says_how_to_name_it():
    with pytest.raises(ModelFileError, match=r"a Path is read as a file path: pass the bundled profile's name as a string"):
        EnergyModel.load(Path("irene-pc1"))


# -- hand edits of the text --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ('"profile": "irene-pc1"', '"profile": "irene-pc1", "profile": "mine"', "profile"),
        ('"kind": "anchored"', '"kind": "anchored", "kind": "linear"', "kind"),
    ],
    ids=["top-level", "nested"],
)
def test_a_field_named_twice_is_refused(tmp_path: Path, old: str, new: str, field: str):
    path = tmp_path / "dup.json"
    path.write_text(BUNDLED.read_text().replace(old, new, 1))
    for message in _both_readers(path):
        assert message.startswith(f"{path}: field '{field}': named twice")


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_literals_name_the_field_at_configure_time_too(tmp_path: Path, literal: str):
    path = tmp_path / "nan.json"
    path.write_text(BUNDLED.read_text().replace('"clip": 0.7', f'"clip": {literal}', 1))
    for message in _both_readers(path):
        assert message.startswith(f"{path}: field 'feature_sets.model.params.leaves.per_type.")
        assert ".clip': NaN or infinite number" in message


@pytest.mark.parametrize("version", [0, "1", 1.0, True])
def test_a_bad_schema_version_is_not_called_newer(tmp_path: Path, bundled_doc, version):
    path = tmp_path / "v.json"
    path.write_text(json.dumps(bundled_doc | {"schema_version": version}))
    for message in _both_readers(path):
        assert f"field 'schema_version': expected a positive integer, got {version!r}" in message
        assert "newer" not in message


# -- hand edits of the weights -----------------------------------------------------------------

Edit = Callable[[dict[str, Any]], None]


def _leaves(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["feature_sets"]["model"]["params"]["leaves"]


def _conv(doc: dict[str, Any]) -> dict[str, Any]:
    return _leaves(doc)["per_type"]["Conv1D"]


EDITS: list[tuple[str, Edit, str]] = [
    ("negative cost", lambda d: _leaves(d)["generic"].update(coef=[-1.0, 2.0]), "field 'coef': expected values >= 0"),
    ("negative floor", lambda d: _leaves(d)["generic"].update(intercept=-5.0), "field 'intercept': expected values >= 0"),
    ("centred base", lambda d: _leaves(d)["generic"].update(mean=[1.0, 0.0]), "field 'mean': expected zeros"),
    ("string as bool", lambda d: _leaves(d)["generic"].update(fit_intercept="no"), "field 'fit_intercept': expected true or false"),
    ("bad weighting", lambda d: _leaves(d)["generic"].update(weighting="bogus"), "field 'weighting': expected one of ['none', 'relative']"),
    ("fractional count", lambda d: _leaves(d).update(min_samples=4.7), "field 'min_samples': expected an integer >= 1, got 4.7"),
    ("count as text", lambda d: _leaves(d).update(min_samples="four"), "field 'min_samples': expected an integer >= 1, got 'four'"),
    ("unhashable kind", lambda d: _leaves(d)["generic"].update(kind=[]), "unknown kind [] (expected one of ['anchored', 'linear'])"),
    ("columns reordered", lambda d: _leaves(d).update(features=_leaves(d)["features"][::-1]), "leaf regressors field 'features': expected the predictor's feature_names"),
    ("negative clip", lambda d: _conv(d).update(clip=-1.0), "anchored regressor field 'clip': expected a bound >= 0"),
    ("negative floor_j", lambda d: _conv(d).update(floor_j=-1.0), "anchored regressor field 'floor_j': expected a positive energy"),
    ("signed base", lambda d: _conv(d)["base"].update(nonneg=False), "anchored regressor field 'base.nonneg': expected true"),
    ("negative counts", lambda d: d["feature_sets"]["model"]["params"]["memories"][0].update(counts=[-1.0] * len(d["feature_sets"]["model"]["params"]["memories"][0]["counts"])), "residual memory field 'counts': expected positive"),
    ("ragged point", lambda d: d["feature_sets"]["model"]["params"]["memories"][0]["points"].__setitem__(3, [1.0]), "residual memory field 'points[3]': expected 5 values, got 1"),
    ("short glue", lambda d: d["feature_sets"]["model"]["params"]["glue"].update(coef=[1.0]), "glue model field 'coef': expected 23 values"),
    ("glue category twice", lambda d: d["feature_sets"]["model"]["params"]["glue"]["categories"].__setitem__(0, "<other>"), "glue model field 'categories': expected a list of distinct names"),
    ("inverted clip range", lambda d: _conv(d)["correction"].update(clip_inputs=True, lo=[1.0] * 5, hi=[0.0] * 5), "field 'lo': expected lo <= hi"),
]


@pytest.mark.parametrize(("edit", "expected"), [(e, x) for _, e, x in EDITS], ids=[n for n, _, _ in EDITS])
def test_hand_edited_weights_are_refused_naming_file_and_field(tmp_path: Path, bundled_doc, edit: Edit, expected: str):
    doc = copy.deepcopy(bundled_doc)
    edit(doc)
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ModelFileError) as exc:
        EnergyModel.load(path)
    message = str(exc.value)
    assert message.startswith(f"{path}: field 'feature_sets.model': ") and expected in message


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [("gpus", 5, "a list of GPU names"), ("memory_gib", "lots", "a number of GiB"), ("cpu_count", True, "a positive integer")],
)
def test_a_hand_edited_fingerprint_names_its_field_at_load(tmp_path: Path, bundled_doc, field: str, value: Any, expected: str):
    """Before, it loaded and a run with --irene-features=auto died in the host comparison."""
    doc = copy.deepcopy(bundled_doc)
    doc["hardware"][field] = value
    path = tmp_path / "hw.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ModelFileError, match=rf"hw\.json: field 'hardware\.{field}': expected {expected}"):
        EnergyModel.load(path)


def test_save_refuses_to_write_what_load_would_refuse(tmp_path: Path):
    model = EnergyModel.load("irene-pc1")
    broken = EnergyModel(**{**model.__dict__, "hardware": {"gpus": "GTX 1080 Ti"}})  # a string, not a list
    path = tmp_path / "rig.json"
    with pytest.raises(ModelFileError, match=r"refusing to write .*rig\.json: field 'hardware\.gpus'"):
        broken.save(path)
    assert not path.exists()


def test_every_strategy_trained_here_still_loads(tmp_path: Path):
    """The stricter reading accepts what training writes (all strategies, both feature sets)."""
    from pytest_irene.engine.predict.strategies import STRATEGIES, make_predictor, predictor_from_json

    trees = [t for t in load_dataset(PC1) if t.batch_size == 8 and t.seq_len in (32, 64)]
    for strategy in STRATEGIES:
        for features in ("model", "all"):
            fitted = make_predictor(strategy, features).fit(trees)
            assert predictor_from_json(json.loads(json.dumps(fitted.to_json()))).to_json() == fitted.to_json()
    # the paper's alpha weighting names itself, not "regressor", and a boolean is no degree
    doc = make_predictor("end2end", "model").fit(trees).to_json()
    for key, value, expected in (("W", [1.0], "alpha weighting field 'W': expected"), ("degree", True, "'degree': expected 1, 2 or 3")):
        broken = copy.deepcopy(doc)
        broken["params"]["alpha"][key] = value
        with pytest.raises(ModelFileError, match=expected):
            predictor_from_json(broken)


# -- the cache ---------------------------------------------------------------------------------


def test_a_model_saved_over_another_within_one_mtime_tick_is_reloaded(tmp_path: Path):
    path = tmp_path / "rig.json"
    first = EnergyModel.load("irene-pc1")
    first.save(path)
    before = os.stat(path)
    assert EnergyModel.load(path).profile == "irene-pc1"
    second = EnergyModel.from_json(first.to_json() | {"profile": "irene-pcX"})  # same length: same size
    second.save(path)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # a coarse clock: the same mtime
    assert os.stat(path).st_size == before.st_size
    assert EnergyModel.load(path).profile == "irene-pcX"


def test_saving_onto_a_directory_names_the_target_and_leaves_nothing(tmp_path: Path):
    target = tmp_path / "models"
    target.mkdir()
    with pytest.raises(ModelFileError, match=r"models: cannot write energy model file: it is a directory") as exc:
        EnergyModel.load("irene-pc1").save(target)
    assert isinstance(exc.value, OSError)  # what callers of save() caught before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models"]  # no temporary file left behind


def test_threads_loading_one_file_share_one_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    real = energy_model_module.read_json

    def slow_read(path: Path) -> Any:
        time.sleep(0.05)  # a large file: every thread is inside the load at once
        return real(path)

    monkeypatch.setattr(energy_model_module, "read_json", slow_read)
    start = threading.Barrier(6)
    got: list[EnergyModel] = []

    def load() -> None:
        start.wait()
        got.append(EnergyModel.load(BUNDLED))

    threads = [threading.Thread(target=load) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 6 and len({id(m) for m in got}) == 1
    assert EnergyModel.load(BUNDLED) is got[0]


# -- width without normalisation ---------------------------------------------------------------


class _EmbeddingMLP(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(1000, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.proj(self.embed(ids))


def test_a_model_without_normalisation_takes_its_width_from_its_embedding():
    from pytest_irene import trace

    model = EnergyModel.load("irene-pc1")
    tree = trace(_EmbeddingMLP(512), torch.ones(8, 64, dtype=torch.long))
    assert tree_width(tree) == 512.0
    model.predict(tree)
    assert tree.meta["extrapolation"] == ["width 512 not trained (trained: 16, 768)"]
    inside = trace(_EmbeddingMLP(768), torch.ones(8, 64, dtype=torch.long))
    assert tree_width(inside) == 768.0 and "extrapolation" not in model.predict(inside).meta
    mlp = trace(nn.Sequential(nn.Linear(64, 64), nn.ReLU()), torch.ones(8, 64, 64))
    assert tree_width(mlp) is None  # a Linear does not say which of its sizes is the model's


def test_normalised_trees_keep_the_width_of_their_norms():
    """The embedding is only a fallback: every training tree (all have LayerNorm) keeps its width,
    so the bundled profile's ranges and what it reports do not move."""
    widths = {(t.model_name, tree_width(t)) for t in load_dataset(PC1)}
    assert {w for _, w in widths} == {16.0, 768.0}
    assert EnergyModel.load("irene-pc1").training_ranges.widths == [16.0, 768.0]


# -- the commands ------------------------------------------------------------------------------


def _run(capsys: pytest.CaptureFixture[str], *argv: Any) -> tuple[int, str, str]:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    trees = [t for t in load_dataset(PC1) if t.model_name in ("bert-base-uncased", "gpt2") and t.batch_size == 8]
    path = tmp_path_factory.mktemp("data") / "small.jsonl"
    write_dataset(path, trees)
    return path


def test_crossvalidate_json_says_which_data_and_seed(capsys, small: Path):
    code, out, err = _run(capsys, "crossvalidate", small, "--json", "--split", "seq", "--seed", "3")
    assert code == 0, err
    obj = json.loads(out)
    assert list(obj)[:4] == ["features", "strategy", "split", "levels"]  # the old keys first, unchanged
    assert obj["seed"] == 3 and obj["trees"] == 16 and obj["datasets"] == [str(small)]
    assert obj["dataset_hash"].startswith("sha256:")


def test_evaluate_refuses_data_of_another_energy_scope(capsys, small: Path, tmp_path: Path):
    board = tmp_path / "board.jsonl"
    trees = load_dataset(small)
    for t in trees:
        t.meta["energy_scope"] = "gpu-board"
    write_dataset(board, trees)
    code, _, err = _run(capsys, "evaluate", board, "--profile", "irene-pc1")
    assert code == 2 and "'gpu-board' energy" in err and "'wall' energy" in err


def test_evaluate_says_how_many_trees_extrapolate(capsys, small: Path, tmp_path: Path):
    long = tmp_path / "long.jsonl"
    trees = load_dataset(small)[:3]
    trees[0].seq_len = 4096  # outside the trained 32-256
    write_dataset(long, trees)
    code, out, err = _run(capsys, "evaluate", long, "--profile", "irene-pc1", "--json")
    assert code == 0, err
    obj = json.loads(out)
    assert obj["extrapolating_trees"] == 1 and obj["energy_scope"] == "wall"
    code, out, _ = _run(capsys, "evaluate", long, "--profile", "irene-pc1")
    assert "note: 1 of 3 trees lie outside the profile's training ranges (sequence 4096 outside the trained 32-256" in out


def test_a_memory_of_many_points_predicts_in_bounded_blocks(monkeypatch: pytest.MonkeyPatch):
    """A large calibration (or an edited file) can store many shapes: a block of 256 queries
    against every point at once would need gigabytes; the blocks shrink instead, same numbers."""
    import tracemalloc

    import numpy as np

    from pytest_irene.engine.predict.regressors import memory

    rng = np.random.default_rng(0)
    mem = memory.ResidualMemory(["flops", "mem_bytes", "seq_len", "batch_seq"])
    mem.fit(rng.uniform(1, 1e6, size=(5_000, 4)), rng.normal(size=5_000))
    queries = rng.uniform(1, 1e6, size=(300, 4))
    whole = mem.predict(queries)
    monkeypatch.setattr(memory, "CHUNK_ELEMENTS", 2**14)
    tracemalloc.start()
    try:
        blocked = mem.predict(queries)
        peak_bytes = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert np.allclose(blocked, whole, rtol=1e-12, atol=0)
    assert peak_bytes < 8 * 2**20  # 256 rows at once: 256 × 5,000 × 4 floats = 40 MiB
