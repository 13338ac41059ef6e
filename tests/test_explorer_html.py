"""The explorer's HTML report: complete, self-contained, safe, written atomically."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_irene.compare.comparison import Comparison, ModuleDelta
from pytest_irene.compare.records import CallRecord
from pytest_irene.engine.dataset import load_dataset
from pytest_irene.explorer.html import render_report, write_report
from pytest_irene.explorer.payload import call_view, module_partition
from pytest_irene.engine.tree import EnergyNode, EnergyTree

DATASET = Path(__file__).resolve().parents[1] / "calibration" / "datasets" / "irene-pc1.jsonl.gz"


@pytest.fixture(scope="module")
def bert_tree() -> EnergyTree:
    tree = next(t for t in load_dataset(DATASET) if t.model_name == "bert-base-uncased")
    for node in tree.walk():  # a predicted tree: predictions 10 % above the measurements
        node.predicted_energy_j = node.energy_j * 1.1
    return tree


def small_tree(scope_suffix: str = "") -> EnergyTree:
    root = EnergyNode("", "TinyModel", "model", {"flops": 10.0}, predicted_energy_j=1.0)
    block = root.add_child(EnergyNode("block" + scope_suffix, "Block", "module", {"flops": 8.0}, predicted_energy_j=0.8))
    block.add_child(EnergyNode(f"block{scope_suffix}.fc", "Linear", "ml", {"flops": 6.0}, predicted_energy_j=0.6))
    block.add_child(EnergyNode(f"block{scope_suffix}.act", "GELU", "ml", {"flops": 2.0}, predicted_energy_j=0.15))
    root.add_child(EnergyNode("head", "Linear", "ml", {"flops": 2.0}, predicted_energy_j=0.2))
    return EnergyTree(root, model_name="tiny", batch_size=2, seq_len=4)


def embedded_data(page: str) -> dict:
    match = re.search(r'<script type="application/json" id="irene-data">(.*?)</script>', page, re.S)
    assert match, "the page carries its data in one JSON block"
    return json.loads(match.group(1))


def test_report_contains_every_node_of_every_call(bert_tree: EnergyTree) -> None:
    page = render_report([bert_tree, small_tree()])
    data = embedded_data(page)
    assert [c["model_name"] for c in data["calls"]] == ["bert-base-uncased", "tiny"]

    def scopes(node: dict) -> list[str]:
        return [node["scope"]] + [s for c in node["children"] for s in scopes(c)]

    assert scopes(data["calls"][0]["tree"]["root"]) == [n.scope for n in bert_tree.walk()]
    assert len(scopes(data["calls"][1]["tree"]["root"])) == 5
    # every operation is listed, costliest first
    ops = data["calls"][0]["operations"]
    assert len(ops) == len(bert_tree.leaves())
    energies = [op["energy_j"] for op in ops]
    assert energies == sorted(energies, reverse=True)
    assert data["calls"][0]["total_j"] == pytest.approx(bert_tree.root.predicted_energy_j)


def test_report_is_self_contained(bert_tree: EnergyTree) -> None:
    page = render_report(bert_tree)
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert "<link" not in page.lower()
    assert not re.search(r"<script[^>]*\bsrc=", page, re.I)
    assert "@import" not in page and "url(" not in page
    # the renderer and the styles are inlined
    assert "Irene.renderCall" in page and ".irene-tip" in page


def test_scopes_cannot_break_out_of_the_data_block() -> None:
    tree = small_tree(scope_suffix="</script><script>alert(1)</script>")
    page = render_report(tree)
    assert page.count("</script>") == 2  # the data block and the inline scripts, nothing injected
    data = embedded_data(page)
    assert data["calls"][0]["tree"]["root"]["children"][0]["scope"].startswith("block</script>")


def test_non_finite_numbers_become_null() -> None:
    tree = small_tree()
    tree.root.children[0].features["latency_s"] = float("nan")
    data = embedded_data(render_report(tree))
    assert data["calls"][0]["tree"]["root"]["children"][0]["features"]["latency_s"] is None


def test_profile_hint_labels_plain_trees() -> None:
    data = embedded_data(render_report([small_tree()], profile="irene-pc1"))
    assert data["calls"][0]["profile"] == "irene-pc1"


def test_measured_trees_are_shown_with_measured_energy() -> None:
    tree = next(iter(load_dataset(DATASET)))
    view = call_view(tree)
    assert view["source"] == "measured"
    assert view["total_j"] == pytest.approx(tree.root.energy_j)
    assert view["breakdown"]["module"], "module breakdown uses the measured energy"


def test_call_records_carry_gate_verdict_and_deltas(bert_tree: EnergyTree) -> None:
    failing = "encoder.layer.3.intermediate"
    deltas = tuple(
        ModuleDelta(n.scope, n.type, n.energy_j, n.predicted_energy_j, n.scope == failing) for n in bert_tree.modules()
    ) + (ModuleDelta("encoder.extra", "Extra", 0.5, None, True),)
    record = CallRecord(
        "tests/test_m.py::test_bert", "default", bert_tree, "irene-pc1", "model",
        Comparison("fail", f"{failing} +10.0 % > 5 %", deltas),
    )
    data = embedded_data(render_report([record]))
    call = data["calls"][0]
    assert call["title"] == "tests/test_m.py::test_bert"
    assert call["status"] == "fail" and call["failed"] is True
    assert call["profile"] == "irene-pc1"
    assert call["deltas"][failing]["failed"] is True
    assert call["deltas"][failing]["change"] == pytest.approx(0.1)
    assert [d["scope"] for d in call["removed"]] == ["encoder.extra"]


def test_module_partition_adds_up_to_the_operations() -> None:
    tree = small_tree()
    parts = module_partition(tree)
    assert parts == {"Block": pytest.approx(0.75), "TinyModel": pytest.approx(0.2)}
    assert sum(parts.values()) == pytest.approx(sum(n.predicted_energy_j for n in tree.leaves()))


def test_write_report_is_atomic(tmp_path: Path) -> None:
    target = tmp_path / "out" / "report.html"
    write_report(target, [small_tree()])
    first = target.read_text()
    assert first.startswith("<!DOCTYPE html>")
    with pytest.raises(TypeError):
        write_report(target, [small_tree(), "not a tree"])  # type: ignore[list-item]
    assert target.read_text() == first, "a failed render leaves the old report intact"
    assert [p.name for p in target.parent.iterdir()] == ["report.html"], "no temp files left behind"


def test_report_and_plugin_import_without_torch() -> None:
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import pytest_irene.explorer.pytest_plugin, pytest_irene.explorer.html\n"
        "assert 'transformers' not in sys.modules\n"
    )
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)
