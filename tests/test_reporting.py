"""Terminal and JSON views of a predicted tree (pure data: no torch, no model file)."""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from pytest_irene.report.tree_report import (
    bottlenecks,
    bottlenecks_table,
    breakdown_table,
    errors_table,
    format_share,
    innermost_modules,
    report,
    report_json,
    tree_view,
)
from pytest_irene.engine.tree import EnergyNode, EnergyTree
from pytest_irene.units import format_energy


def render(renderable) -> str:
    console = Console(width=200, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def _node(scope: str, type_: str, level: str, predicted: float, measured: float | None = None) -> EnergyNode:
    return EnergyNode(scope=scope, type=type_, level=level, predicted_energy_j=predicted, energy_j=measured)  # type: ignore[arg-type]


def small_tree() -> EnergyTree:
    """root 10 J = embeddings 1 J + encoder 8.5 J (two layers of attention + ffn) + glue."""
    root = _node("", "ToyModel", "model", 10.0, measured=9.0)
    emb = root.add_child(_node("embeddings", "Embeddings", "module", 1.0))
    emb.add_child(_node("embeddings.word", "Embedding", "ml", 0.9))
    enc = root.add_child(_node("encoder", "Encoder", "module", 8.5))
    for i, (att, ffn) in enumerate(((2.0, 2.2), (2.0, 2.3))):
        layer = enc.add_child(_node(f"encoder.layer.{i}", "Layer", "module", att + ffn))
        a = layer.add_child(_node(f"encoder.layer.{i}.attention", "Attention", "module", att))
        a.add_child(_node(f"encoder.layer.{i}.attention.matmul#0", "MatMul", "ml", att * 0.4))
        s = a.add_child(_node(f"encoder.layer.{i}.attention.softmax#0", "Softmax", "ml", 0.01))
        s.notes["generic_regressor"] = True
        f = layer.add_child(_node(f"encoder.layer.{i}.ffn", "FFN", "module", ffn))
        f.add_child(_node(f"encoder.layer.{i}.ffn.dense", "Linear", "ml", ffn * 0.9))
    return EnergyTree(root=root, model_name="toy", batch_size=8, seq_len=32, meta={"profile": "p", "features": "model"})


def test_format_energy_picks_a_readable_unit():
    assert format_energy(1.23456) == "1.235 J"
    assert format_energy(0.0123) == "12.3 mJ"
    assert format_energy(2.5e-6) == "2.5 uJ"
    assert format_energy(4200.0) == "4.2 kJ"
    assert format_energy(0) == "0 J"
    assert format_energy(None) == "-"
    assert format_share(0.1234) == "12.3%"


def test_tree_view_shows_every_node_with_energy_share_and_flags():
    text = render(tree_view(small_tree()))
    assert "toy ToyModel  10 J  (measured 9 J)" in text
    assert "encoder Encoder  8.5 J  85.0%" in text
    assert "attention Attention  2 J  20.0%" in text
    assert text.count("[generic regressor]") == 2
    assert text.count("dense Linear") == 2


def test_tree_view_depth_and_share_filters():
    shallow = render(tree_view(small_tree(), max_depth=1))
    assert "encoder Encoder" in shallow and "layer" not in shallow.replace("... ", "")
    assert "nodes below" in shallow
    filtered = render(tree_view(small_tree(), min_share=0.15))
    assert "Embeddings" not in filtered and "Softmax" not in filtered
    assert "under 15.0% each" in filtered


def test_bottlenecks_are_innermost_modules_sorted_by_energy():
    tree = small_tree()
    assert [n.scope for n in innermost_modules(tree)] == [
        "embeddings",
        "encoder.layer.0.attention",
        "encoder.layer.0.ffn",
        "encoder.layer.1.attention",
        "encoder.layer.1.ffn",
    ]
    top = bottlenecks(tree, 3)
    assert [n.scope for n in top] == ["encoder.layer.1.ffn", "encoder.layer.0.ffn", "encoder.layer.0.attention"]
    assert [n.scope for n in bottlenecks(tree, 2, innermost=False)] == ["encoder", "encoder.layer.1"]
    text = render(bottlenecks_table(tree, 3))
    assert "Top 3 bottleneck modules" in text
    assert "encoder.layer.1.ffn" in text and "23.0%" in text and "embeddings" not in text


def test_bottlenecks_of_a_model_without_modules_are_its_primitives():
    root = _node("", "Tiny", "model", 3.0)
    root.add_child(_node("lin", "Linear", "ml", 2.0))
    root.add_child(_node("act", "GELU", "ml", 0.5))
    tree = EnergyTree(root=root, model_name="tiny")
    assert [n.scope for n in bottlenecks(tree)] == ["lin", "act"]
    assert "bottleneck primitives" in render(bottlenecks_table(tree))


def test_breakdown_table_sums_by_type_like_the_paper():
    text = render(breakdown_table(small_tree()))
    rows = {}
    for line in text.splitlines():
        cells = [c for c in line.replace("│", " ").split() if c]
        if cells and cells[0] in ("Encoder", "Layer", "FFN", "Attention", "Embeddings"):
            rows[cells[0]] = cells[1:]
    assert rows == {
        "Encoder": ["1", "8.5", "J", "85.0%"],
        "Layer": ["2", "8.5", "J", "85.0%"],
        "FFN": ["2", "4.5", "J", "45.0%"],
        "Attention": ["2", "4", "J", "40.0%"],
        "Embeddings": ["1", "1", "J", "10.0%"],
    }
    order = [line.split()[1] for line in text.splitlines() if line.startswith("│")]
    assert order == ["Encoder", "Layer", "FFN", "Attention", "Embeddings"]


def test_errors_table_lists_models_and_average():
    result = {
        "levels": {
            "ml": {"bert": 1.234, "gpt2": 2.0, "average": 1.617},
            "module": {"bert": 3.0, "gpt2": 4.0, "average": 3.5},
            "model": {"bert": 5.0, "gpt2": float("nan"), "average": 5.0},
        }
    }
    text = render(errors_table(result, title="cv"))
    assert "bert" in text and "1.23" in text and "average" in text and "3.50" in text
    gpt2_row = next(line for line in text.splitlines() if "gpt2" in line)
    assert "-" in gpt2_row


def test_report_combines_header_tree_tables():
    text = render(report(small_tree(), breakdown=True, top=2))
    assert "toy  batch 8 x seq 32: 10 J predicted per forward pass  (profile p, model features)" in text
    assert "Top 2 bottleneck modules" in text and "Energy by module type" in text
    no_tree = render(report(small_tree(), breakdown=False, show_tree=False))
    assert "Energy by module type" not in no_tree and "ToyModel" not in no_tree


def test_report_json_is_plain_json_with_tree_and_tables():
    out = report_json(small_tree(), top=2)
    again = json.loads(json.dumps(out, allow_nan=False))
    assert again["total_j"] == 10.0 and again["profile"] == "p" and again["features"] == "model"
    assert [b["scope"] for b in again["bottlenecks"]] == ["encoder.layer.1.ffn", "encoder.layer.0.ffn"]
    assert again["bottlenecks"][0]["share"] == pytest.approx(0.23)
    assert again["breakdown"][0] == {"type": "Encoder", "count": 1, "energy_j": 8.5, "share": 0.85}
    assert again["tree"]["format"] == "irene-tree/1"
    assert again["tree"]["root"]["predicted_energy_j"] == 10.0


def test_the_one_line_summary_of_no_calls_has_no_empty_count_list() -> None:
    from pytest_irene.report.terminal import one_line

    assert one_line([]) == "irene: 0 wrapped call(s); 0 J predicted in all"
