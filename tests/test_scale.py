"""The biggest models teams ship, end to end after the trace: tens of thousands of nodes, hundreds of levels.

Trees are built here from :class:`EnergyNode` objects (a 60-layer MoE with 256 experts a layer,
a chain of nested modules) rather than traced, so the suite stays fast; the benchmark
``benchmarks/bench_scale.py`` traces real giants. Each test pins a failure found at that scale:
a quadratic loop (minutes), a ``RecursionError``, or an output no reader or GitHub takes.
"""

from __future__ import annotations

import io
import json
import random
import time
from pathlib import Path

import pytest
from rich.console import Console

from pytest_irene.compare.baselines import ModuleEnergy, entry_from_tree, tree_energies
from pytest_irene.compare.comparison import ModuleDelta, Rename, moved
from pytest_irene.compare.gate import compare, culprits
from pytest_irene.compare.records import CallRecord
from pytest_irene.compare.renames import find_renames, is_under
from pytest_irene.compare.runfile import RunFile, RunFileError, read_run_file, write_run_file
from pytest_irene.compare.runs import compare_runs, load_side
from pytest_irene.engine.tree import EnergyNode, EnergyTree
from pytest_irene.explorer.html import _clean, render_report
from pytest_irene.report.failure import MAX_LISTED, failure_text
from pytest_irene.report.markdown import COMMENT_LIMIT_CHARS, MAX_BLOCK_ROWS, compare_markdown, session_markdown
from pytest_irene.report.terminal import render_summary
from pytest_irene.report.tree_report import MAX_RUN, format_share, tree_view
from pytest_irene.units import format_energy

#: Seconds a call on a 20,000-node tree may take here: the quadratic versions took minutes
#: (culprits of 16,000 failing modules: 155 s), the fixed ones well under a second.
SLOW_S = 20.0


# -- synthetic giants ---------------------------------------------------------------------------


def _leaf(parent: EnergyNode, scope: str, type_: str, joules: float) -> None:
    parent.add_child(EnergyNode(scope, type_, "ml", features={"flops": 1e6}, predicted_energy_j=joules))


def _close(node: EnergyNode) -> EnergyNode:
    """Give a module the energy of its children plus 1 % of glue, as a predicted tree has."""
    node.predicted_energy_j = sum(c.predicted_energy_j or 0.0 for c in node.children) * 1.01
    return node


def _expert(parent: EnergyNode, scope: str, scale: float) -> None:
    expert = parent.add_child(EnergyNode(scope, "Expert", "module"))
    for name, joules in (("gate_proj", 0.004), ("up_proj", 0.004), ("act_fn", 0.0002), ("down_proj", 0.004)):
        _leaf(expert, f"{scope}.{name}", "SiLU" if name == "act_fn" else "Linear", joules * scale)
    _close(expert)


def _layer(root: EnergyNode, i: int, experts: int, scale: float, expert_name: str) -> None:
    layer = root.add_child(EnergyNode(f"layers.{i}", "DecoderLayer", "module"))
    attn = layer.add_child(EnergyNode(f"layers.{i}.self_attn", "Attention", "module"))
    for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
        _leaf(attn, f"layers.{i}.self_attn.{name}", "Linear", 0.02 * scale)
    _close(attn)
    mlp = layer.add_child(EnergyNode(f"layers.{i}.mlp", "SparseMoeBlock", "module"))
    _leaf(mlp, f"layers.{i}.mlp.gate", "Linear", 0.002 * scale)
    for j in range(experts):
        _expert(mlp, f"layers.{i}.mlp.{expert_name}.{j}", scale)
    _close(mlp)
    _close(layer)


def moe_tree(layers: int, experts: int, *, scale: float = 1.0, expert_name: str = "experts") -> EnergyTree:
    """A predicted MoE decoder with a list of experts per layer (``layers × experts × 5`` nodes and more)."""
    root = EnergyNode("", "MoEModel", "model")
    _leaf(root, "embed_tokens", "Embedding", 0.01 * scale)
    for i in range(layers):
        _layer(root, i, experts, scale, expert_name)
    _close(root)
    tree = EnergyTree(root, model_name="MoEModel", batch_size=1, seq_len=128)
    tree.set_tree_features()
    return tree


def chain_tree(depth: int, *, scale: float = 1.0) -> EnergyTree:
    """``nn.Sequential`` nested ``depth`` levels deep around one ``Linear``."""
    root = EnergyNode("", "Sequential", "model")
    node, scope = root, ""
    for _ in range(depth - 1):
        scope = f"{scope}.0" if scope else "0"
        node = node.add_child(EnergyNode(scope, "Sequential", "module"))
    _leaf(node, f"{scope}.0" if scope else "0", "Linear", 0.5 * scale)
    while node is not None:
        node.predicted_energy_j = 0.5 * scale
        node = node.parent
    tree = EnergyTree(root, model_name="Deep", batch_size=1, seq_len=4)
    tree.set_tree_features()
    return tree


def _record(base: EnergyTree, now: EnergyTree, **compare_kwargs: object) -> CallRecord:
    entry = entry_from_tree(base, profile="irene-pc1", features="model")
    comparison = compare(entry, now, profile="irene-pc1", features="model", **compare_kwargs)  # type: ignore[arg-type]
    return CallRecord("tests/test_big.py::test_big", "default", now, "irene-pc1", "model", comparison=comparison)


def _timed(fn):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


# -- the reference (quadratic) rules the fast ones must agree with ----------------------------------


def _reference_culprits(failed: list[ModuleDelta]) -> list[ModuleDelta]:
    inner = [d for d in failed if not any(is_under(d.scope, o.scope) for o in failed)]
    return sorted(inner, key=lambda d: (-abs((d.now_j or 0.0) - (d.baseline_j or 0.0)), d.scope))


def _reference_renames(was: dict[str, ModuleEnergy], now: dict[str, ModuleEnergy], tolerance: float,
                       min_delta: float) -> list[Rename]:
    """find_renames as it was: every disappeared subtree tried against every appeared one."""
    def base(s: str) -> str:
        return s.split("#", 1)[0]

    def parent(s: str) -> str:
        return base(s).rsplit(".", 1)[0] if "." in base(s) else ""

    def tops(scopes: list[str]) -> list[str]:
        return [s for s in scopes if not any(is_under(t, s) for t in scopes if t != s)]

    def subtree(top: str, scopes: list[str]) -> dict[str, str]:
        cut = len(base(top)) + 1
        return {"": top, **{s[cut:]: s for s in scopes if is_under(top, s)}}

    def same(old: dict[str, str], new: dict[str, str]) -> bool:
        return old.keys() == new.keys() and all(
            was[o].type == now[new[r]].type
            and not moved(was[o].energy_j, now[new[r]].energy_j, tolerance=tolerance, min_delta=min_delta)
            for r, o in old.items())

    removed = [s for s in was if s not in now]
    added = [s for s in now if s not in was]
    candidates = [(t, subtree(t, added)) for t in tops(added)]
    olds = {t: subtree(t, removed) for t in tops(removed)}
    fits = {t: [c for c in candidates if same(olds[t], c[1])] for t in olds}
    chosen: dict[str, tuple[str, dict[str, str]]] = {}
    taken: set[str] = set()
    for same_parent in (True, False):
        for top, options in fits.items():
            if top in chosen:
                continue
            pick = next((f for f in options if f[0] not in taken and (not same_parent or parent(f[0]) == parent(top))), None)
            if pick is not None:
                chosen[top] = pick
                taken.add(pick[0])
    order = {s: i for i, s in enumerate(was)}
    out = [Rename(t, n, now[n].type, now[n].energy_j, tuple((olds[t][r], sub[r]) for r in olds[t]))
           for t, (n, sub) in chosen.items()]
    return sorted(out, key=lambda r: order[r.old])


#: Scope parts that sort before and after ``.`` and repeat suffixes, where a faster rule could slip.
_PARTS = ("a", "b", "a!", "a-b", "ab", "0", "1", "10", "x#2")


def _random_scopes(rng: random.Random, n: int) -> list[str]:
    scopes = {""}
    while len(scopes) < n:
        parent = rng.choice(sorted(scopes))
        scopes.add(f"{parent}.{rng.choice(_PARTS)}" if parent else rng.choice(_PARTS))
    return sorted(scopes, key=lambda _: rng.random())


# -- the gate -----------------------------------------------------------------------------------------


def test_culprits_agree_with_the_pairwise_rule_on_awkward_scopes() -> None:
    rng = random.Random(7)
    for _ in range(200):
        scopes = _random_scopes(rng, rng.randint(1, 25))
        failed = [ModuleDelta(s, "T", 1.0, 1.0 + rng.random(), True) for s in rng.sample(scopes, rng.randint(1, len(scopes)))]
        assert culprits(failed) == _reference_culprits(failed)


def test_a_change_moving_every_expert_of_a_60_layer_moe_is_judged_in_seconds() -> None:
    base, now = moe_tree(61, 256), moe_tree(61, 256, scale=1.1)
    record, seconds = _timed(lambda: _record(base, now))
    comp = record.comparison
    assert comp is not None and comp.status == "fail"
    assert len(comp.failed_modules) > 15_000  # every expert's linears moved by 0.4 mJ: under min_delta
    assert seconds < SLOW_S  # pairwise culprits: 155 s
    names = comp.reason.split("starting at ")[1]
    assert "layers." in names and "experts" not in names.split(",")[0]  # the layers' attention moved most


def test_renames_agree_with_the_pairwise_matching() -> None:
    rng = random.Random(11)
    for _ in range(150):
        scopes = [s for s in _random_scopes(rng, rng.randint(2, 18)) if s]
        was = {s: ModuleEnergy(rng.choice("AB"), rng.choice((0.1, 0.2, 0.3))) for s in scopes}
        now = dict(was)
        for s in rng.sample(scopes, rng.randint(1, len(scopes))):  # move some scopes under a new name
            energy = now.pop(s)
            now[s.replace(rng.choice(_PARTS), "z", 1) if rng.random() < 0.7 else f"{s}.n"] = energy
        for s in rng.sample(sorted(now), min(2, len(now))):  # and nudge some energies beyond the limits
            now[s] = ModuleEnergy(now[s].type, now[s].energy_j * rng.choice((1.0, 1.5)))
        assert find_renames(was, now, tolerance=0.05, min_delta=0.001) == _reference_renames(was, now, 0.05, 0.001)


def test_renaming_every_expert_of_a_60_layer_moe_pairs_them_in_order() -> None:
    base, now = moe_tree(61, 256), moe_tree(61, 256, expert_name="moe_experts")
    record, seconds = _timed(lambda: _record(base, now))
    comp = record.comparison
    assert comp is not None and comp.status == "pass"
    assert len(comp.renames) == 61 * 256
    assert (comp.renames[0].old, comp.renames[0].new) == ("layers.0.mlp.experts.0", "layers.0.mlp.moe_experts.0")
    assert all(r.old.replace(".experts.", ".moe_experts.") == r.new for r in comp.renames)
    assert seconds < SLOW_S  # every subtree against every other: hours


def test_a_block_shared_thousands_of_times_keeps_one_key_per_execution() -> None:
    root = EnergyNode("", "Loop", "model", predicted_energy_j=1.0)
    for _ in range(3000):
        root.add_child(EnergyNode("cell", "Cell", "module", predicted_energy_j=0.0003))
    root.add_child(EnergyNode("cell#3", "Cell", "module", predicted_energy_j=0.5))  # a scope that looks like a repeat
    energies, seconds = _timed(lambda: tree_energies(EnergyTree(root)))
    assert list(energies)[:4] == ["", "cell", "cell#2", "cell#3"]
    assert len(energies) == 3002 and energies["cell#3000"].energy_j == 0.0003
    assert energies["cell#3#2"].energy_j == 0.5
    assert seconds < SLOW_S


# -- what the reports say about it ------------------------------------------------------------------


def test_failure_section_of_doubled_experts_names_a_few_and_counts_the_rest() -> None:
    record = _record(moe_tree(8, 64), moe_tree(8, 128))
    text = failure_text([record])
    assert len(text) < 20_000  # every added module named: 400 kB here, 4 MB at 61 layers
    added = next(line for line in text.splitlines() if line.startswith("added modules: "))
    assert added.count("(Expert") + added.count("(Linear") + added.count("(SiLU") == MAX_LISTED
    assert added.endswith(f"... and {8 * 64 * 5 - MAX_LISTED} more (all are in --irene-json)")


def test_terminal_summary_counts_renamed_experts_beyond_the_first_few() -> None:
    record = _record(moe_tree(8, 64), moe_tree(8, 64, expert_name="moe_experts"))
    short = render_summary([record], width=200)
    assert f"... and {8 * 64 - MAX_LISTED} more (all are in --irene-json)" in short
    assert len(short) < 10_000
    full = render_summary([record], width=200, verbosity=1)
    assert "layers.7.mlp.experts.63 -> layers.7.mlp.moe_experts.63" in full


def test_pr_comment_of_a_giant_regression_still_names_its_culprits() -> None:
    record = _record(moe_tree(16, 256), moe_tree(16, 256, scale=1.5))
    text = session_markdown([record])
    assert len(text) <= COMMENT_LIMIT_CHARS
    assert "### Failing modules" in text  # the whole block was dropped: the comment named no module
    assert "more innermost module(s) that moved; all are in the run file" in text
    assert text.count("| `layers.") == MAX_BLOCK_ROWS


def test_irene_compare_markdown_of_a_giant_regression_keeps_the_call_block(tmp_path: Path) -> None:
    base, new = moe_tree(16, 256), moe_tree(16, 256, scale=1.5)
    write_run_file(tmp_path / "base.json", RunFile([CallRecord("t.py::t", "default", base, "irene-pc1", "model")]))
    write_run_file(tmp_path / "new.json", RunFile([CallRecord("t.py::t", "default", new, "irene-pc1", "model")]))
    rc = compare_runs(load_side(tmp_path / "base.json"), load_side(tmp_path / "new.json"))
    text = compare_markdown(rc)
    assert len(text) <= COMMENT_LIMIT_CHARS
    assert "Modules beyond the limits, deepest first:" in text
    assert "more module(s) beyond the limits; all are in the output of irene compare --json" in text


def test_tree_view_sums_long_runs_of_experts_on_one_line() -> None:
    tree = moe_tree(2, 256)
    console = Console(file=io.StringIO(), width=200, color_system=None)
    console.print(tree_view(tree))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    rest = [line for line in text.splitlines() if "more Expert" in line]
    assert len(rest) == 2 and f"... {256 - MAX_RUN} more Expert (layers.0.mlp.experts.{MAX_RUN} to layers.0.mlp.experts.255)" in rest[0]
    mlp = tree.find("layers.0.mlp")
    hidden_j = sum(n.predicted_energy_j or 0.0 for n in mlp.children[1 + MAX_RUN:])  # after the router
    assert rest[0].endswith(f": {format_energy(hidden_j)}, {format_share(hidden_j / (tree.total_j or 1.0))}")
    assert text.count(" Expert  ") == 2 * MAX_RUN  # a label: name, type, two spaces, energy
    everything = Console(file=io.StringIO(), width=200, color_system=None)
    everything.print(tree_view(tree, max_run=None))
    assert everything.file.getvalue().count(" Expert  ") == 2 * 256  # type: ignore[attr-defined]


def test_tree_view_of_a_model_nested_500_deep_renders() -> None:
    console = Console(file=io.StringIO(), width=200, color_system=None)
    console.print(tree_view(chain_tree(500), max_depth=3))
    assert "nodes below" in console.file.getvalue()  # type: ignore[attr-defined]
    console.print(tree_view(chain_tree(500)))  # recursing once per level ran out of Python's stack


def test_html_report_of_a_model_nested_300_deep_renders() -> None:
    page = render_report([chain_tree(300)])  # the recursive _clean: RecursionError at ~250 levels
    assert '"scope":"' + ".".join(["0"] * 300) + '"' in page


def test_clean_copies_in_order_and_nulls_non_finite_numbers() -> None:
    data = {"b": [1.0, float("nan"), {"c": (float("inf"), 2)}], 3: "x", "n": None, "a": -float("inf")}
    cleaned = _clean(data)
    assert cleaned == {"b": [1.0, None, {"c": [None, 2]}], "3": "x", "n": None, "a": None}
    assert list(cleaned) == ["b", "3", "n", "a"]
    json.dumps(cleaned, allow_nan=False)


def test_a_run_file_nested_too_deep_to_parse_is_a_run_file_error(tmp_path: Path) -> None:
    path = tmp_path / "deep.json"
    path.write_text('{"format": "irene-run/2", "records": [' + "[" * 100_000 + "]" * 100_000 + "]}")
    with pytest.raises(RunFileError, match="nested too deep"):
        read_run_file(path)
    with pytest.raises(RunFileError, match="NEW: .*nested too deep"):
        load_side(path, "NEW")


def test_a_tree_as_deep_as_the_format_allows_goes_through_run_files_and_irene_compare(tmp_path: Path) -> None:
    from pytest_irene.engine.dataset import MAX_DEPTH

    base, new = chain_tree(MAX_DEPTH), chain_tree(MAX_DEPTH, scale=1.5)
    write_run_file(tmp_path / "base.json", RunFile([CallRecord("t.py::t", "default", base, "irene-pc1", "model")]))
    write_run_file(tmp_path / "new.json", RunFile([CallRecord("t.py::t", "default", new, "irene-pc1", "model")]))
    rc = compare_runs(load_side(tmp_path / "base.json"), load_side(tmp_path / "new.json"))
    [call] = rc.calls
    assert call.comparison is not None and call.comparison.status == "fail"
    assert [d.scope for d in call.moved][0] == ".".join(["0"] * MAX_DEPTH)  # the innermost Linear, deepest first
    assert len(compare_markdown(rc)) <= COMMENT_LIMIT_CHARS


def test_script_json_is_the_cleaned_copy_whether_or_not_a_copy_was_needed() -> None:
    from pytest_irene.explorer.html import json_for_script, report_data

    data = report_data([chain_tree(5)])
    assert json.loads(json_for_script(data)) == json.loads(json.dumps(_clean(data)))  # no copy made
    data["calls"][0]["tree"]["root"]["predicted_energy_j"] = float("nan")
    data["calls"][0]["tree"]["meta"] = {3: "</script>"}
    text = json_for_script(data)
    assert "NaN" not in text and "</script>" not in text
    assert json.loads(text)["calls"][0]["tree"]["root"]["predicted_energy_j"] is None
