"""Baseline storage and the per-module comparison (no pytest session, hand-built trees)."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest

from pytest_irene.compare.baselines import BaselineError, entry_from_tree, read_baseline_file, tree_energies
from pytest_irene.compare.baseline_store import BaselineStore
from pytest_irene.compare.gate import check_budget, compare
from pytest_irene.compare.records import CallRecord
from pytest_irene.report.failure import failure_text
from pytest_irene.engine.tree import EnergyNode, EnergyTree


def make_tree(ffn_j: float = 0.3, *, batch_size: int = 8, seq_len: int = 64, extra: bool = False) -> EnergyTree:
    """A small BERT-like tree: model > encoder > layer.0 > (attention, intermediate(Linear))."""
    root = EnergyNode("", "BertModel", "model")
    enc = root.add_child(EnergyNode("encoder", "BertEncoder", "module"))
    layer = enc.add_child(EnergyNode("encoder.layer.0", "BertLayer", "module"))
    att = layer.add_child(EnergyNode("encoder.layer.0.attention", "BertAttention", "module"))
    att.add_child(EnergyNode("encoder.layer.0.attention.query", "Linear", "ml", predicted_energy_j=0.1))
    ffn = layer.add_child(EnergyNode("encoder.layer.0.intermediate", "BertIntermediate", "module"))
    ffn.add_child(EnergyNode("encoder.layer.0.intermediate.dense", "Linear", "ml", predicted_energy_j=ffn_j))
    att.predicted_energy_j = 0.2
    ffn.predicted_energy_j = ffn_j + 0.01
    if extra:
        pool = root.add_child(EnergyNode("pooler", "BertPooler", "module", predicted_energy_j=0.05))
        pool.add_child(EnergyNode("pooler.dense", "Linear", "ml", predicted_energy_j=0.04))
    layer.predicted_energy_j = att.predicted_energy_j + ffn.predicted_energy_j
    enc.predicted_energy_j = layer.predicted_energy_j
    root.predicted_energy_j = enc.predicted_energy_j + (0.05 if extra else 0.0)
    return EnergyTree(root, model_name="BertModel", batch_size=batch_size, seq_len=seq_len)


def test_entry_keeps_root_and_every_module_leaves_included() -> None:
    entry = entry_from_tree(make_tree(), profile="irene-pc1", features="model")
    assert entry.root.type == "BertModel"
    assert set(entry.modules) == {
        "encoder",
        "encoder.layer.0",
        "encoder.layer.0.attention",
        "encoder.layer.0.attention.query",
        "encoder.layer.0.intermediate",
        "encoder.layer.0.intermediate.dense",
    }
    assert entry.leaves
    assert entry.inputs == {"batch_size": 8, "seq_len": 64}


def test_repeated_scopes_are_kept_apart() -> None:
    root = EnergyNode("", "M", "model", predicted_energy_j=3.0)
    for _ in range(2):
        blk = root.add_child(EnergyNode("block", "Block", "module", predicted_energy_j=1.5))
        blk.add_child(EnergyNode("block.fc", "Linear", "ml", predicted_energy_j=1.0))
    tree = EnergyTree(root, batch_size=1, seq_len=1)
    assert list(tree_energies(tree)) == ["", "block", "block.fc", "block#2", "block.fc#2"]
    assert list(tree_energies(tree, leaves=False)) == ["", "block", "block#2"]


def test_unchanged_tree_passes() -> None:
    entry = entry_from_tree(make_tree(), profile="p", features="model")
    comp = compare(entry, make_tree(), tolerance=0.05, min_delta=0.001, profile="p", features="model")
    assert comp.status == "pass"
    assert not comp.failed_modules
    assert all(d.change == 0.0 for d in comp.deltas)


def test_wider_module_fails_and_is_named() -> None:
    entry = entry_from_tree(make_tree(0.3), profile="p", features="model")
    comp = compare(entry, make_tree(0.6), tolerance=0.05, min_delta=0.001, profile="p", features="model")
    assert comp.status == "fail"
    failed = {d.scope for d in comp.failed_modules}
    assert "encoder.layer.0.intermediate" in failed
    assert "encoder.layer.0.attention" not in failed
    assert "encoder.layer.0.intermediate" in comp.reason
    record = CallRecord("t.py::test", "enc", make_tree(0.6), "p", "model", comparison=comp)
    text = failure_text([record])
    assert "encoder.layer.0.intermediate" in text and "BertIntermediate" in text and "+" in text


def test_change_within_tolerance_or_below_min_delta_passes() -> None:
    entry = entry_from_tree(make_tree(0.3), profile="p", features="model")
    assert compare(entry, make_tree(0.31), tolerance=0.05, min_delta=0.0).status == "pass"  # +3 %
    assert compare(entry, make_tree(0.6), tolerance=0.05, min_delta=1.0).status == "pass"  # below 1 J
    assert compare(entry, make_tree(0.6), tolerance=2.0, min_delta=0.0).status == "pass"  # +97 % < 200 %


def test_added_and_removed_modules() -> None:
    base = entry_from_tree(make_tree(extra=True), profile="p", features="model")
    comp = compare(base, make_tree(), tolerance=0.05, min_delta=0.001, fail_on="any")
    assert comp.status == "fail"
    removed = [d for d in comp.deltas if d.now_j is None]
    assert [d.scope for d in removed] == ["pooler", "pooler.dense"] and removed[0].failed
    # by default (fail on increases) dropping a module is a decrease: it passes, and says so
    default = compare(base, make_tree(), tolerance=0.05, min_delta=0.001)
    assert default.status == "pass" and default.cheaper == ("pooler.dense",) and not default.failed_modules
    back = compare(entry_from_tree(make_tree(), profile="p", features="model"), make_tree(extra=True),
                   tolerance=0.05, min_delta=0.001)
    assert [d.scope for d in back.deltas if d.baseline_j is None] == ["pooler", "pooler.dense"]
    text = failure_text([CallRecord("t.py::x", "default", make_tree(extra=True), "p", "model", comparison=back)])
    assert "added modules: pooler (BertPooler" in text


def test_no_baseline_is_new_and_strict_fails() -> None:
    assert compare(None, make_tree()).status == "new"
    strict = compare(None, make_tree(), strict=True)
    assert strict.status == "fail" and "--irene-strict" in strict.reason


@pytest.mark.parametrize(
    ("kwargs", "tree_kwargs", "why"),
    [
        ({"profile": "other"}, {}, "profile 'p'"),
        ({"features": "all"}, {}, "'model' features"),
        ({}, {"batch_size": 16}, "batch_size=8"),
    ],
)
def test_mismatch_is_skipped_with_a_reason(kwargs: dict, tree_kwargs: dict, why: str) -> None:
    entry = entry_from_tree(make_tree(), profile="p", features="model")
    args = {"profile": "p", "features": "model", **kwargs}
    comp = compare(entry, make_tree(**tree_kwargs), tolerance=0.05, min_delta=0.0, **args)
    assert comp.status == "skipped" and why in comp.reason
    assert compare(entry, make_tree(**tree_kwargs), strict=True, **args).status == "fail"


def test_budget_check_and_text() -> None:
    tree = make_tree()
    assert not check_budget(tree, None).over
    assert check_budget(tree, 0.1).over and not check_budget(tree, 10.0).over
    text = failure_text([CallRecord("t.py::x", "default", tree, "p", "model", budget_j=0.1, over_budget=True)])
    assert "> budget 100 mJ" in text and "the 2 costliest modules:" in text
    # the innermost modules (attention, feed-forward) are named, not their containers
    assert "encoder.layer.0.intermediate" in text and "encoder.layer.0.attention" in text
    assert "BertEncoder" not in text


def test_store_round_trip_is_stable_and_sorted(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path / ".irene")
    e1 = entry_from_tree(make_tree(), profile="p", features="model")
    e2 = entry_from_tree(make_tree(0.5), profile="p", features="model")
    written = store.save({("tests/test_m.py::test_b", "x"): e2, ("tests/test_m.py::test_a", "y"): e1})
    path = tmp_path / ".irene" / "tests" / "test_m.json"
    assert written == [path]
    text = path.read_text()
    assert text.endswith("\n") and text.index("test_a") < text.index("test_b")
    fresh = BaselineStore(tmp_path / ".irene")
    assert fresh.get("tests/test_m.py::test_a", "y") == e1
    assert fresh.get("tests/test_m.py::test_b", "x") == e2
    assert fresh.get("tests/test_m.py::test_b", "nope") is None
    # saving the same again changes nothing, byte for byte
    assert fresh.save({("tests/test_m.py::test_a", "y"): e1}) == []
    assert path.read_text() == text
    # the file is plain JSON with only the lock-free content (no side files)
    assert json.loads(text)["format"] == "irene-baselines/2"
    assert sorted(p.name for p in path.parent.iterdir()) == ["test_m.json"]


def test_save_keeps_other_tests_entries(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    e = entry_from_tree(make_tree(), profile="p", features="model")
    store.save({("m.py::a", "default"): e})
    BaselineStore(tmp_path).save({("m.py::b", "default"): e})
    assert set(read_baseline_file(tmp_path / "m.json")) == {"m.py::a", "m.py::b"}


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{not json", "corrupt baseline file"),
        ('{"format": "something-else"}', "not a pytest-irene baseline file"),
        ("[1, 2]", "not a pytest-irene baseline file"),
        ('{"format": "irene-baselines/1", "tests": {"m.py::a": {"default": {"profile": 1}}}}', "profile"),
        ('{"format": "irene-baselines/9", "tests": {}}', "newer than this pytest-irene reads .*upgrade pytest-irene"),
        ('{"format": "irene-baselines/2", "tests": {"m.py::a": {}, "m.py::a": {}}}', "m.py::a is named twice"),
        ('{"format": "irene-baselines/2", "tests": {"m.py::a": {"default": {"profile": "p", "features": "model", '
         '"model_name": "M", "inputs": {"batch_size": -8}, "modules": {}, "root": {"type": "M", "energy_j": 1}}}}}',
         r"inputs: expected an object of integers >= 0, got \{'batch_size': -8\}"),
    ],
)
def test_corrupt_or_foreign_file_is_reported_and_never_overwritten(tmp_path: Path, content: str, match: str) -> None:
    path = tmp_path / "m.json"
    path.write_text(content)
    store = BaselineStore(tmp_path)
    with pytest.raises(BaselineError, match=match) as info:
        store.get("m.py::a", "default")
    assert str(path) in str(info.value)
    e = entry_from_tree(make_tree(), profile="p", features="model")
    with pytest.raises(BaselineError):
        BaselineStore(tmp_path).save({("m.py::a", "default"): e})
    assert path.read_text() == content


def _save_one(args: tuple[str, int]) -> None:
    directory, i = args
    e = entry_from_tree(make_tree(0.1 + i / 100), profile="p", features="model")
    BaselineStore(directory).save({(f"m.py::test_{i}", "default"): e})


def test_concurrent_saves_lose_nothing(tmp_path: Path) -> None:
    with multiprocessing.get_context("fork").Pool(4) as pool:
        pool.map(_save_one, [(str(tmp_path), i) for i in range(16)])
    assert len(read_baseline_file(tmp_path / "m.json")) == 16


def test_saves_work_where_there_is_no_fcntl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows has no ``fcntl``: the import made the whole plugin fail to load there."""
    from pytest_irene.compare import baseline_store

    monkeypatch.setattr(baseline_store, "fcntl", None)
    for i in range(2):
        _save_one((str(tmp_path), i))
    assert len(read_baseline_file(tmp_path / "m.json")) == 2


def test_another_energy_model_version_is_not_compared(tmp_path: Path) -> None:
    entry = entry_from_tree(make_tree(), profile="p", features="model", energy_model="aaaaaaaaaaaa")
    same = compare(entry, make_tree(), profile="p", features="model", energy_model="aaaaaaaaaaaa")
    assert same.status == "pass"
    other = compare(entry, make_tree(), profile="p", features="model", energy_model="bbbbbbbbbbbb")
    assert other.status == "skipped" and "another version of energy model 'p'" in other.reason
    store = BaselineStore(tmp_path)
    store.save({("m.py::a", "default"): entry})
    assert BaselineStore(tmp_path).get("m.py::a", "default").energy_model == "aaaaaaaaaaaa"


def test_a_baseline_directory_that_cannot_be_read_is_an_error_naming_it(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Without read or search permission (injected: the tests may run as root, who has every
    permission), the files below it are not "no baselines": their calls would pass as new."""
    import os

    store = BaselineStore(tmp_path)
    store.save({("t.py::test_a", "default"): entry_from_tree(make_tree(), profile="p", features="model")})
    locked = tmp_path / "sub"
    locked.mkdir()
    real_scandir, real_exists = os.scandir, Path.exists

    def scandir(path="."):
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    def exists(self, *args, **kwargs):
        if self.parent == locked:
            raise PermissionError(13, "Permission denied", str(self))
        return real_exists(self, *args, **kwargs)

    monkeypatch.setattr(os, "scandir", scandir)
    monkeypatch.setattr(Path, "exists", exists)
    with pytest.raises(BaselineError, match=rf"^{locked}: cannot read the baseline directory: Permission denied$"):
        store.files()
    with pytest.raises(BaselineError, match=rf"^{locked / 'x.json'}: cannot read baseline file: .*Permission denied"):
        read_baseline_file(locked / "x.json")
