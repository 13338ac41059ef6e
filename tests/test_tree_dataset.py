"""The tree data model and the irene-tree/1 reader/writer."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from pytest_irene.engine.dataset import DuplicateTreesWarning, append_trees, dataset_hash, iter_trees, load_dataset, tree_from_dict, write_dataset
from pytest_irene.errors import DatasetError, UsageError
from pytest_irene.engine.tree import EnergyNode, EnergyTree

REFERENCE = Path(__file__).resolve().parents[1] / "calibration" / "datasets" / "irene-pc1.jsonl.gz"


def small_tree() -> EnergyTree:
    root = EnergyNode("", "Net", "model", {"flops": 30.0}, energy_j=10.0)
    block = root.add_child(EnergyNode("block", "Block", "module", {"flops": 20.0}, energy_j=6.0))
    block.add_child(EnergyNode("block.fc", "Linear", "ml", {"flops": 15.0}, energy_j=4.0))
    block.add_child(EnergyNode("block.matmul#0", "MatMul", "ml", {"flops": 5.0}, energy_j=1.5))
    root.add_child(EnergyNode("head", "Linear", "ml", {"flops": 10.0}, energy_j=3.0))
    tree = EnergyTree(root, model_name="net", batch_size=2, seq_len=8, profile="rig")
    tree.set_tree_features()
    return tree


def test_walk_is_depth_first_in_execution_order():
    tree = small_tree()
    assert [n.scope for n in tree.walk()] == ["", "block", "block.fc", "block.matmul#0", "head"]
    assert len(tree) == 5
    assert tree["block.fc"].parent is tree["block"]
    assert tree["block.fc"].depth == 2 and tree["block.fc"].name == "fc"


def test_levels_and_find():
    tree = small_tree()
    assert [n.scope for n in tree.leaves()] == ["block.fc", "block.matmul#0", "head"]
    assert [n.scope for n in tree.modules()] == ["block"]
    with pytest.raises(KeyError, match="did you mean"):
        tree.find("fc")


def test_share_breakdown_and_bottlenecks_on_measured_energy():
    tree = small_tree()
    assert tree.share(tree["block"], "measured") == pytest.approx(0.6)
    rows = tree.breakdown(level="ml", source="measured")
    assert rows[0][0] == "Linear" and rows[0][1] == pytest.approx(7.0) and rows[0][3] == 2
    assert rows[0][2] == pytest.approx(0.7)
    assert [n.scope for n in tree.bottlenecks(2, source="measured")] == ["block", "block.fc"]


def test_share_before_any_prediction_and_unknown_levels_are_refused():
    """A share of a tree with no energy is not 0 %, and a misspelt level matches nothing: both say so."""
    tree = small_tree()
    with pytest.raises(UsageError, match="net has no predictions yet: call EnergyModel.predict"):
        tree.share(tree["block"])
    for node in tree.walk():
        node.energy_j = None
    with pytest.raises(UsageError, match="no measured energy"):
        tree.share(tree["block"], "measured")
    tree.root.predicted_energy_j = 10.0
    assert tree.share(tree["block"]) == 0.0  # predicted tree, a node without energy
    with pytest.raises(UsageError, match=r"breakdown\(level=...\): expected one of 'model', 'module', 'ml', None, got 'bogus'"):
        tree.breakdown("bogus")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="source"):
        tree.breakdown("ml", "measure")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="level"):
        tree.bottlenecks(3, level="modules")  # type: ignore[arg-type]
    assert tree.breakdown(None) == []  # no level is every level; nothing measured: no rows


def test_tree_features_come_from_the_line():
    tree = small_tree()
    assert tree["head"].features["batch_seq"] == 16.0
    # ...and are not duplicated into the node features when serialised
    assert "batch_size" not in tree.to_dict()["root"]["features"]


def test_old_field_names_still_work_with_a_deprecation_warning():
    with pytest.warns(DeprecationWarning, match="energy_j"):
        node = EnergyNode("fc", "Linear", "ml", energy=2.0, predicted_energy=1.5)
    assert node.energy_j == 2.0 and node.predicted_energy_j == 1.5
    with pytest.warns(DeprecationWarning, match=r"EnergyNode\.predicted_energy is deprecated.*predicted_energy_j"):
        assert node.predicted_energy == 1.5
    with pytest.warns(DeprecationWarning, match="energy_j"):
        node.energy = 3.0
    assert node.energy_j == 3.0
    with pytest.raises(TypeError, match="both 'energy'"):
        EnergyNode("fc", "Linear", "ml", energy=1.0, energy_j=1.0)
    with pytest.warns(DeprecationWarning, match="profile"):
        tree = EnergyTree(node, device="rig")
    assert tree.profile == "rig"
    with pytest.warns(DeprecationWarning, match=r"EnergyTree\.device"):
        assert tree.device == "rig"
    assert tree.to_dict()["device"] == "rig"  # the irene-tree/1 key stays


def test_round_trip_jsonl_and_gz(tmp_path):
    tree = small_tree()
    tree["head"].predicted_energy_j = 2.5
    tree["head"].notes["generic_regressor"] = True
    for name in ("d.jsonl", "d.jsonl.gz"):
        path = tmp_path / name
        write_dataset(path, [tree, tree])
        with pytest.warns(DuplicateTreesWarning, match="1 of 2 trees are distinct"):
            back = load_dataset(path)
        assert len(back) == 2
        assert back[0].to_dict() == tree.to_dict()
        assert back[0]["head"].notes == {"generic_regressor": True}


def test_append_keeps_earlier_lines(tmp_path):
    path = tmp_path / "d.jsonl.gz"
    write_dataset(path, [small_tree()])
    before = dataset_hash(path)
    append_trees(path, [small_tree()])
    with pytest.warns(DuplicateTreesWarning):  # the same tree twice: both lines are kept
        assert len(load_dataset(path)) == 2
    assert dataset_hash(path) != before
    assert gzip.decompress(path.read_bytes()).count(b"\n") == 2


@pytest.mark.parametrize(
    ("mutate", "field", "message"),
    [
        (lambda d: d.update(format="other/2"), "format", "irene-tree/1"),
        (lambda d: d.update(batch_size=0), "batch_size", "positive integer"),
        (lambda d: d["root"]["children"][0].pop("type"), "root.children[0].type", "missing"),
        (lambda d: d["root"]["children"][0].update(level="layer"), "root.children[0].level", "one of"),
        (
            lambda d: d["root"]["children"][0]["features"].update(flops="many"),
            "root.children[0].features.flops",
            "finite number",
        ),
        (lambda d: d["root"].update(energy_j=-1.0), "root.energy_j", ">= 0"),
        (lambda d: d["root"]["children"][1].update(children=[{"x": 1}]), "root.children[1].children[0].scope", "missing"),
        # a hand-made host fingerprint: training would copy it into a model file that cannot load
        (lambda d: d.setdefault("meta", {}).update(host={"gpus": 5}), "meta.host.gpus", "a list of GPU names"),
        (lambda d: d.setdefault("meta", {}).update(host="rig-1"), "meta.host", "an object"),
    ],
)
def test_bad_line_names_file_line_and_field(tmp_path, mutate, field, message):
    good = small_tree().to_dict()
    bad = json.loads(json.dumps(good))
    mutate(bad)
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(good) + "\n\n" + json.dumps(bad) + "\n")
    with pytest.raises(DatasetError) as info:
        load_dataset(path)
    err = info.value
    assert err.line == 3 and err.field == field
    assert str(path) in str(err) and f":3: field '{field}'" in str(err) and message in str(err)


def test_not_json_and_missing_file(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text("{not json\n")
    with pytest.raises(DatasetError, match=r"x.jsonl:1: not valid JSON"):
        load_dataset(path)
    with pytest.raises(DatasetError, match="no such dataset file"):
        list(iter_trees(tmp_path / "absent.jsonl"))
    gz = tmp_path / "broken.jsonl.gz"
    gz.write_bytes(b"not gzip at all")
    with pytest.raises(DatasetError, match="cannot read"):
        load_dataset(gz)


def test_reference_dataset_loads_with_expected_content():
    trees = load_dataset(REFERENCE)
    assert len(trees) == 193
    counts: dict[str, int] = {}
    for tree in trees:
        counts[tree.model_name] = counts.get(tree.model_name, 0) + 1
    assert counts["bert-base-uncased"] == 28 and counts["sshleifer/tiny-ctrl"] == 27
    bert = next(t for t in trees if t.model_name == "bert-base-uncased" and t.batch_size == 8 and t.seq_len == 32)
    assert bert["encoder.layer.0.attention.self.query"].features["flops"] == 302_186_496
    rows = dict((r[0], r[2]) for r in bert.breakdown("module", "measured"))
    assert 0.2 < rows["BertSelfAttention"] < 0.5 and 0.1 < rows["BertIntermediate"] < 0.4


def test_tree_from_dict_rejects_non_object():
    with pytest.raises(DatasetError, match="expected a JSON object"):
        tree_from_dict([1, 2])
