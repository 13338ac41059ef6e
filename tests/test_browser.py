"""End to end in a real headless browser: Debian's chromium driven by Playwright.

Skips, saying why, when Playwright or the browser is missing. Install with
``apt-get install -y chromium`` and ``pip install playwright`` (no
``playwright install``: the system browser is used).
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("IRENE_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]

sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed (pip install playwright)")
if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
    pytest.skip(f"no chromium at {CHROMIUM} (apt-get install -y chromium, or set IRENE_CHROMIUM)", allow_module_level=True)


@pytest.fixture(scope="module")
def server_url():
    from werkzeug.serving import make_server

    from pytest_irene.explorer.app import ServerConfig, create_app

    app = create_app(ServerConfig(max_batch_size=16, max_seq_len=128))
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=5)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as pw:
        try:
            b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        except Exception as exc:  # a broken browser install is an environment problem, not a failure
            pytest.skip(f"chromium at {CHROMIUM} does not start under Playwright: {exc}")
        yield b
        b.close()


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1300, "height": 900})
    pg = ctx.new_page()
    errors: list[str] = []
    requests: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.on("request", lambda req: requests.append(req.url))
    yield pg
    ctx.close()
    assert not errors, f"JavaScript errors: {errors}"
    outside = [u for u in requests if not u.startswith(("http://127.0.0.1:", "file://", "data:", "about:"))]
    assert not outside, f"the page reached out of this machine: {outside}"


def test_pick_model_expand_hover_and_read_bottlenecks(page, server_url: str) -> None:
    page.goto(server_url + "/")
    page.wait_for_selector("#pick-model option[value='distilbert-base-uncased']", state="attached")
    page.select_option("#pick-model", "distilbert-base-uncased")
    page.fill("#pick-batch", "2")
    page.fill("#pick-seq", "16")
    page.click("#pick-go")
    page.wait_for_selector("#tree-result .row[data-scope='']")
    root = page.locator("#tree-result .row[data-scope='']")
    assert "distilbert-base-uncased" in root.inner_text()

    # the root is open, its children are visible but collapsed
    transformer = page.locator("#tree-result .row[data-scope='transformer']")
    assert transformer.is_visible()
    assert transformer.get_attribute("aria-expanded") == "false"
    layer0 = page.locator("#tree-result li[data-scope='transformer'] > ul > li > .row").first
    assert not layer0.is_visible()
    transformer.locator(".tog").click()
    assert transformer.get_attribute("aria-expanded") == "true"
    assert layer0.is_visible()

    # hovering shows the node's features
    layer0.hover()
    tip = page.locator("#irene-tip")
    tip.wait_for(state="visible")
    text = tip.inner_text()
    assert layer0.get_attribute("data-scope") in text and "FLOPs" in text and "memory traffic" in text
    assert "energy (predicted)" in text and "share of model" in text

    # the operations list is sorted by energy and lists every leaf
    rows = page.locator("#tree-result table.ops tbody tr")
    energies = [float(e) for e in rows.evaluate_all("rs => rs.map(r => r.dataset.energy)")]
    assert len(energies) > 20
    assert energies == sorted(energies, reverse=True)
    leaves = page.locator("#tree-result .row[data-level='ml']").count()
    assert leaves == len(energies)

    # clicking an operation reveals it in the tree; expand/collapse all
    top = rows.first.get_attribute("data-scope")
    rows.first.click()
    assert page.locator(f"#tree-result .row[data-scope='{top}']").is_visible()
    page.click("#tree-result .collapse-all")
    assert not layer0.is_visible()
    # finding nodes by type opens their path
    page.fill("#tree-result input.find", "softmax")
    matches = page.locator("#tree-result .row.match")
    assert matches.count() >= 6 and matches.first.is_visible()
    assert "match" in page.locator("#tree-result .find-count").inner_text()
    page.click("#tree-result .expand-all")
    assert page.locator("#tree-result .row").count() == page.locator("#tree-result .row:visible").count()


def test_bad_input_shows_the_servers_error(page, server_url: str) -> None:
    page.goto(server_url + "/")
    page.wait_for_selector("#pick-model option", state="attached")
    page.evaluate("document.getElementById('pick-batch').removeAttribute('max')")
    page.fill("#pick-batch", "999")
    page.click("#pick-go")
    alert = page.locator("#tree-result .error")
    alert.wait_for()
    assert "batch_size" in alert.inner_text() and "16" in alert.inner_text()


def test_sweep_tab_draws_charts(page, server_url: str) -> None:
    page.goto(server_url + "/")
    page.wait_for_selector("#sweep-models option[value='distilgpt2']", state="attached")
    page.click(".tab-sweep")
    page.select_option("#sweep-models", ["distilgpt2", "distilbert-base-uncased"])
    page.fill("#sweep-batch", "1,2")
    page.fill("#sweep-seq", "8,16")
    page.click("#sweep-go")
    page.wait_for_selector("#sweep-result svg")
    # one line per batch size in each architecture chart, one point per sequence length
    assert page.locator("#sweep-result .per-model .chart").count() == 2
    assert page.locator("#sweep-result .per-model circle").count() == 2 * 2 * 2
    assert page.locator("#sweep-result .per-batch .chart").count() == 2
    assert page.locator("#sweep-result .bars g.bar-stack").count() == 2 * 2


def test_static_report_with_failing_module(page, tmp_path: Path) -> None:
    from pytest_irene.compare.comparison import Comparison, ModuleDelta
    from pytest_irene.compare.records import CallRecord
    from pytest_irene.engine.dataset import load_dataset
    from pytest_irene.explorer.html import write_report

    dataset = Path(__file__).resolve().parents[1] / "calibration" / "datasets" / "irene-pc1.jsonl.gz"
    tree = next(t for t in load_dataset(dataset) if t.model_name == "distilbert-base-uncased")
    for n in tree.walk():
        n.predicted_energy_j = n.energy_j
    failing = "transformer.layer.2.ffn"
    node = tree[failing]
    deltas = (ModuleDelta(failing, node.type, node.energy_j / 1.2, node.energy_j, True),)
    record = CallRecord("tests/test_m.py::test_distil", "default", tree, "irene-pc1", "model",
                        Comparison("fail", f"{failing} +20.0 %", deltas))
    out = tmp_path / "report.html"
    write_report(out, [record])
    page.goto(out.as_uri())
    row = page.locator(f".row.failed[data-scope='{failing}']")
    assert row.is_visible(), "the path to a failing module is opened"
    row.hover()
    assert "fails the gate" in page.locator("#irene-tip").inner_text()
    assert page.locator(".badge.fail").count() >= 1


def test_large_reports_draw_trees_on_demand(page, tmp_path: Path) -> None:
    from pytest_irene.explorer.html import write_report
    from pytest_irene.engine.tree import EnergyNode, EnergyTree

    def tree(i: int) -> EnergyTree:
        root = EnergyNode("", "Tiny", "model", {"flops": 3.0}, predicted_energy_j=1.0 + i)
        root.add_child(EnergyNode("fc", "Linear", "ml", {"flops": 2.0}, predicted_energy_j=0.7 + i))
        root.add_child(EnergyNode("act", "GELU", "ml", {"flops": 1.0}, predicted_energy_j=0.3))
        return EnergyTree(root, model_name=f"tiny-{i}", batch_size=1, seq_len=4)

    out = tmp_path / "many.html"
    write_report(out, [tree(i) for i in range(20)])
    page.goto(out.as_uri())
    assert page.locator("section.call").count() == 20
    assert page.locator("section.call.pending").count() == 20, "no tree drawn before it is asked for"
    page.locator("#call-3 .show-call").click()
    assert page.locator("#call-3 .row[data-scope='fc']").is_visible()
    page.goto(out.as_uri() + "#call-7")  # a link to a call draws it
    assert page.locator("#call-7 .row[data-scope='act']").is_visible()


def test_modules_named_like_object_members_get_no_baseline_badge(page, tmp_path: Path) -> None:
    """``ctx.deltas["constructor"]`` found ``Object.prototype.constructor``: a "new" badge without a baseline."""
    from pytest_irene.explorer.html import write_report
    from pytest_irene.engine.tree import EnergyNode, EnergyTree

    root = EnergyNode("", "Tiny", "model", {"flops": 3.0}, predicted_energy_j=1.0)
    for name in ("constructor", "valueOf", "__proto__"):
        root.add_child(EnergyNode(name, "Linear", "ml", {"flops": 1.0}, predicted_energy_j=0.3))
    out = tmp_path / "members.html"
    write_report(out, [EnergyTree(root, model_name="tiny", batch_size=1, seq_len=4)])
    page.goto(out.as_uri())
    for name in ("constructor", "valueOf", "__proto__"):
        assert page.locator(f".row[data-scope='{name}']").is_visible()
    assert page.locator(".delta").count() == 0


def test_report_badges_totals_and_marks_read_as_the_terminal(page, tmp_path: Path) -> None:
    """A call over budget was badged "pass", a generation said "per forward pass", extrapolation
    was shown only inside a drawn call, and a malformed ``#%`` link threw a URIError."""
    from pytest_irene.compare.comparison import Comparison
    from pytest_irene.compare.records import CallRecord
    from pytest_irene.engine.tree import EnergyNode, EnergyTree
    from pytest_irene.explorer.html import write_report

    def tree(i: int, root_type: str = "Tiny") -> EnergyTree:
        root = EnergyNode("", root_type, "model", {"flops": 3.0}, predicted_energy_j=0.001 * (i + 1))
        root.add_child(EnergyNode("fc", "Linear", "ml", {"flops": 2.0}, predicted_energy_j=0.0007))
        out = EnergyTree(root, model_name=f"tiny-{i}", batch_size=1, seq_len=4)
        out.meta["extrapolation"] = ["batch 1 outside the trained 8-32"]
        return out

    gen = tree(1, "Generation")
    gen.meta["new_tokens"] = 8
    over = CallRecord("t.py::test_budget", "default", tree(0), "irene-pc1", "model",
                      Comparison("pass", "every module within 5.0%"), budget_j=0.001, over_budget=True)
    records = [over, CallRecord("t.py::test_gen", "default", gen, "irene-pc1", "model", Comparison("new", "no baseline"))]
    records += [CallRecord(f"t.py::test_{i}", "default", tree(i), "irene-pc1", "model") for i in range(2, 14)]
    out = tmp_path / "report.html"
    write_report(out, records)
    page.goto(out.as_uri() + "#%E0%A4%A")
    assert page.locator("#irene-sub").inner_text().startswith("14 calls, 1 failing; 105 mJ predicted in all")
    first = page.locator(".irene-index tr").first
    assert first.locator(".badge.fail").count() == 1 and first.locator(".badge.extrapolates").count() == 1
    assert page.locator(".irene-index .badge.extrapolates").count() == 14, "marked before any tree is drawn"
    assert "per generation of 8 new tokens" in page.locator("#call-1 .total").inner_text()
    assert page.locator("#call-0 .call-reason.fail").inner_text() == "budget 1 mJ — exceeded"  # was "1.000 mJ"; the terminal says "1 mJ"


def test_sweep_charts_mark_extrapolated_points(page, tmp_path: Path) -> None:
    from pytest_irene.explorer.html import write_report
    from pytest_irene.explorer.sweep import Sweep, SweepPoint

    points = [SweepPoint("m", 8, s, 0.1 * s, 0.1 * s, {"Block": 0.1 * s}, () if s <= 64 else ("sequence 512 outside",))
              for s in (32, 64, 512)]
    out = tmp_path / "sweep.html"
    write_report(out, [], sweep=Sweep("irene-pc1", ["m"], [8], [32, 64, 512], points).to_dict())
    page.goto(out.as_uri())
    assert page.locator(".per-model circle.extrapolates").count() == 1
    assert "extrapolates: sequence 512 outside" in page.locator(".per-model circle.extrapolates title").inner_html()
    assert "1 of 3 predictions extrapolate" in page.locator("#sweep .call-reason.extrapolates").inner_text()
    assert page.locator(".cmp-row .badge.extrapolates").count() == 1  # the default column is seq 512


def test_a_compact_variant_can_be_picked_in_the_web_app(page, server_url: str) -> None:
    """The README says ``bert-base-uncased[L=4,H=256]`` works "also in the web app", but the
    architecture was a plain list: no variant could be asked for from the page."""
    page.goto(server_url + "/")
    page.wait_for_selector("#pick-model option[value='gpt2']", state="attached")
    page.select_option("#pick-model", "gpt2")
    assert page.locator("#pick-layers").is_disabled(), "GPT-2 has no compact variants"
    page.select_option("#pick-model", "bert-base-uncased")
    page.fill("#pick-layers", "2")
    page.fill("#pick-hidden", "128")
    page.fill("#pick-batch", "2")
    page.fill("#pick-seq", "16")
    page.click("#pick-go")
    page.wait_for_selector("#tree-result .row[data-scope='']")
    assert page.locator("#tree-result h2").inner_text() == "bert-base-uncased[L=2,H=128]"
    assert page.locator("#tree-result li[data-scope='encoder'] > ul > li").count() == 2


def test_a_type_unseen_in_training_is_marked_on_its_collapsed_ancestors(page, tmp_path: Path) -> None:
    """Generic-regressor leaves sat two levels down, collapsed: nothing above them said so."""
    from pytest_irene.engine.tree import EnergyNode, EnergyTree
    from pytest_irene.explorer.html import write_report

    root = EnergyNode("", "Tiny", "model", {"flops": 3.0}, predicted_energy_j=1.0)
    block = root.add_child(EnergyNode("block", "Block", "module", {}, predicted_energy_j=0.9))
    inner = block.add_child(EnergyNode("block.inner", "Inner", "module", {}, predicted_energy_j=0.9))
    inner.add_child(EnergyNode("block.inner.act", "NewGELU", "ml", {}, predicted_energy_j=0.9, notes={"generic_regressor": True}))
    root.add_child(EnergyNode("head", "Linear", "ml", {}, predicted_energy_j=0.1))
    out = tmp_path / "generic.html"
    write_report(out, [EnergyTree(root, model_name="tiny", batch_size=8, seq_len=32)])
    page.goto(out.as_uri())
    assert not page.locator(".row[data-scope='block.inner.act']").is_visible()
    assert page.locator(".row.has-generic").evaluate_all("rs => rs.map(r => r.dataset.scope)") == ["", "block", "block.inner"]
    assert page.locator(".row[data-scope='head']").get_attribute("class").split() == ["row"]
