"""``irene compare BASE NEW`` on two example runs: a tiny BERT and one with a widened feed-forward."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pytest_irene.cli import main
from pytest_irene.compare.baselines import entry_from_tree
from pytest_irene.compare.baseline_store import BaselineStore
from pytest_irene.compare.runs import compare_runs, entry_tree, load_side
from runs import HOST, bert_record, write_run

FFN = "encoder.layer.0.intermediate"


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("runs")
    base, wide = bert_record(1024), bert_record(4096)
    store = BaselineStore(d / "baselines")
    store.save({base.key: entry_from_tree(base.tree, profile="irene-pc1", features="model")})
    return {
        "base": write_run(d / "base.json", [base]),
        "wide": write_run(d / "wide.json", [wide]),
        "baselines": d / "baselines",
        "dir": d,
    }


def irene(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    code = main(["compare", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_widened_feed_forward_is_a_regression_named_deepest_first(example, capsys) -> None:
    code, out, _ = irene(capsys, example["base"], example["wide"])
    assert code == 1
    head = next(line for line in out.splitlines() if line.startswith("tests/test_bert.py::test_encoder [default]"))
    assert "REGRESSION" in head and re.search(r"\(\+\d+(\.\d)?%\)", head)
    moved = [line.strip().split(" ")[0] for line in out.splitlines() if line.startswith("  ") and " -> " in line]
    assert FFN in moved and "encoder.layer.1.intermediate" in moved
    assert f"{FFN}.dense" in moved and moved[0].endswith(".dense")  # leaf modules are gated too
    assert "encoder.layer.0.attention" not in moved  # only the feed-forward was widened
    depths = [0 if s == "<model>" else s.count(".") + 1 for s in moved]
    assert depths == sorted(depths, reverse=True)  # deepest first: the culprit leads
    assert moved[-1] == "<model>"


def test_markdown_is_a_valid_pull_request_comment(example, capsys) -> None:
    code, out, _ = irene(capsys, example["base"], example["wide"], "--markdown")
    assert code == 1
    assert out.startswith("### pytest-irene energy comparison")
    tables = [block for block in out.split("\n\n") if block.lstrip().startswith("|") or "\n|" in block]
    assert len(tables) >= 2
    for block in tables:
        rows = [line for line in block.splitlines() if line.startswith("|")]
        widths = {len(re.split(r"(?<!\\)\|", row)) for row in rows}
        assert len(widths) == 1, block  # every row has the header's number of cells
        assert re.fullmatch(r"\|( ---:? \|)+", rows[1])
    assert f"`{FFN}`" in out and "**regression**" in out
    assert len(out) <= 65536


def test_json_names_the_intermediate_modules(example, capsys) -> None:
    code, out, _ = irene(capsys, example["base"], example["wide"], "--json")
    assert code == 1
    doc = json.loads(out)
    (call,) = doc["calls"]
    assert doc["regressed"] is True and call["status"] == "fail" and call["side"] == "both"
    assert call["verdict"] == "regression"
    scopes = [d["scope"] for d in call["moved"]]
    assert FFN in scopes and all(d["now_j"] > d["baseline_j"] for d in call["moved"])
    assert call["new_total_j"] > call["base_total_j"] and call["change"] > 0.05


def test_identical_runs_and_fail_on(example, capsys) -> None:
    code, out, _ = irene(capsys, example["base"], example["base"])
    assert code == 0 and " pass" in out and "0 failing" in out
    code, out, _ = irene(capsys, example["base"], example["wide"], "--markdown")
    assert code == 1 and "❌ **regression**" in out
    # --fail-on decides the exit code, not what the change is: a costlier call stays costlier
    code, out, _ = irene(capsys, example["base"], example["wide"], "--fail-on", "none", "--markdown")
    assert code == 0 and "📈 costlier" in out and "📉" not in out and "❌" not in out
    # a smaller model is not an increase, but it is a change: the call says "cheaper", not "fail"
    code, out, _ = irene(capsys, example["wide"], example["base"])
    assert code == 0 and ") cheaper" in out and ") fail" not in out and "0 failing" in out
    code, out, _ = irene(capsys, example["wide"], example["base"], "--markdown")
    assert code == 0 and "📉 cheaper" in out and "❌" not in out and "📈" not in out
    # the JSON's status is the same word: a passing cheaper call is no "fail" there either
    for args, status in (((), "cheaper"), (("--fail-on", "any"), "fail")):
        code, out, _ = irene(capsys, example["wide"], example["base"], "--json", *args)
        (call,) = json.loads(out)["calls"]
        assert call["status"] == status and json.loads(out)["regressed"] is bool(code)
    code, out, _ = irene(capsys, example["base"], example["wide"], "--json", "--fail-on", "none")
    assert code == 0 and json.loads(out)["calls"][0]["status"] == "costlier"
    code, out, _ = irene(capsys, example["wide"], example["base"], "--fail-on", "any")
    assert code == 1 and "FAIL (CHEAPER)" in out and "REGRESSION" not in out
    code, out, _ = irene(capsys, example["wide"], example["base"], "--fail-on", "any", "--markdown")
    assert code == 1 and "❌ fail (📉 cheaper)" in out and "regression" not in out
    # a looser tolerance than the change lets it through
    assert irene(capsys, example["base"], example["wide"], "--tolerance", "1000%")[0] == 0
    code, _, err = irene(capsys, example["base"], example["wide"], "--fail-on", "sometimes")
    assert code == 2 and "--fail-on: expected one of none, increase, any" in err


def test_a_baselines_directory_is_a_side(example, capsys) -> None:
    code, out, _ = irene(capsys, example["baselines"], example["wide"])
    assert code == 1 and f"  {FFN} " in out and "(baselines)" in out
    assert irene(capsys, example["baselines"], example["base"])[0] == 0


def test_entry_tree_gives_back_the_entry() -> None:
    rec = bert_record(1024)
    entry = entry_from_tree(rec.tree, profile="irene-pc1", features="model")
    again = entry_from_tree(entry_tree(entry), profile="irene-pc1", features="model")
    assert again == entry


def test_calls_on_one_side_only(example, capsys) -> None:
    extra = write_run(example["dir"] / "extra.json", [bert_record(1024), bert_record(1024, label="decoder")])
    code, out, _ = irene(capsys, example["base"], extra)
    assert code == 0 and "only in NEW: tests/test_bert.py::test_encoder [decoder]" in out
    code, out, _ = irene(capsys, extra, example["base"])
    assert code == 0 and "only in BASE: tests/test_bert.py::test_encoder [decoder]" in out
    assert irene(capsys, extra, example["base"], "--fail-on", "any")[0] == 1
    doc = json.loads(irene(capsys, extra, example["base"], "--json")[1])
    assert [c["side"] for c in doc["calls"]] == ["both", "base"]


def test_a_renamed_module_is_reported(example, capsys) -> None:
    rec = bert_record(1024)
    entry = entry_from_tree(rec.tree, profile="irene-pc1", features="model")
    renamed = {k.replace("pooler", "head"): v for k, v in entry.modules.items()}
    store = BaselineStore(example["dir"] / "renamed")
    store.save({rec.key: type(entry)(**{**entry.__dict__, "modules": renamed})})
    rc = compare_runs(load_side(example["baselines"]), load_side(example["dir"] / "renamed"))
    (call,) = rc.calls
    assert call.renamed == [("pooler", "head")]
    assert not call.added and not call.removed and not call.moved and call.comparison.status == "pass"
    code, out, _ = irene(capsys, example["baselines"], example["dir"] / "renamed")
    assert code == 0 and "  renamed: pooler -> head" in out
    code, out, _ = irene(capsys, example["baselines"], example["dir"] / "renamed", "--markdown")
    assert "Renamed: `pooler` → `head`" in out


def test_a_run_from_another_machine(example, capsys, tmp_path: Path) -> None:
    other = dict(HOST, cpu_model="Other CPU 1", cpu_count=64)
    moved = write_run(tmp_path / "other.json", [bert_record(4096)], host=other)
    code, out, _ = irene(capsys, example["base"], moved)
    # model features do not depend on the machine that ran the tests: still compared, and said so
    assert code == 1 and "machines differ (CPU model 'Example CPU 9000' != 'Other CPU 1'" in out
    measured = bert_record(4096)
    measured.features = "all"
    base_all = bert_record(1024)
    base_all.features = "all"
    write_run(tmp_path / "base_all.json", [base_all])
    write_run(tmp_path / "new_all.json", [measured], host=other)
    code, out, _ = irene(capsys, tmp_path / "base_all.json", tmp_path / "new_all.json")
    assert code == 0 and "skipped" in out and "the base run was made on another machine" in out


def test_corrupt_run_file_is_a_clear_error(example, capsys, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "irene-run/2", "records": [{"nodeid": "x"')
    code, out, err = irene(capsys, example["base"], bad)
    assert code == 2 and out == ""
    assert f"irene compare: error: NEW: {bad}: corrupt run file (invalid JSON at line 1" in err
    code, _, err = irene(capsys, tmp_path / "missing.json", example["base"])
    assert code == 2 and "BASE:" in err and "no such run file" in err
    (tmp_path / "empty").mkdir()
    code, _, err = irene(capsys, tmp_path / "empty", example["base"])
    assert code == 2 and "no baseline files" in err
    code, _, err = irene(capsys, tmp_path, example["base"])  # a directory holding the corrupt file
    assert code == 2 and f"{bad}: corrupt baseline file" in err


def test_markdown_is_truncated_within_the_limit_with_a_note() -> None:
    from pytest_irene.report.markdown import fit, session_markdown

    blocks = ["# head", *(f"block {i} " + "x" * 100 for i in range(50))]
    text = fit(blocks, 1000)
    assert len(text) <= 1000 and text.startswith("# head\n\nblock 0 ")
    assert re.search(r"\*\*Truncated:\*\* \d+ of 51 sections are not shown \(the report is cut to 1000 chars for GitHub\)", text)
    assert fit(blocks[:3], 1000) == "\n\n".join(blocks[:3]) + "\n"
    records = [bert_record(4096, nodeid=f"tests/test_bert.py::test_{i}", item_index=i) for i in range(400)]
    big = session_markdown(records, limit=20_000, unit="bytes")
    assert len(big.encode()) <= 20_000 and "Truncated" in big
    assert len(session_markdown(records[:2])) < 2000


def test_irene_compare_gates_a_pytest_run_against_a_run_file(pytester: pytest.Pytester) -> None:
    from inner import run
    from test_plugin import write_tiny

    write_tiny(pytester, width=64)
    run(pytester, "--irene-json=main.json").assert_outcomes(passed=1)
    assert not (pytester.path / ".irene").exists()  # nothing committed: the run file is the baseline
    result = run(pytester, "--irene-compare=main.json")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["irene: comparing against *main.json (run*), not .irene/", "*tiny*pass*"])
    write_tiny(pytester, width=512)
    result = run(pytester, "--irene-compare=main.json", "--irene-min-delta=0J")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*energy regression against the baseline*", "*block*"])
    # a call the base run does not have is new, like a call without a baseline
    write_tiny(pytester, width=64, name="test_other")
    run(pytester, "test_other.py", "--irene-compare=main.json").stdout.fnmatch_lines(["*test_other.py::test_tiny*new*"])
    # a base run from another machine: model-feature calls are still compared, and the header says so
    pytester.makeconftest(
        "def pytest_irene_host_fingerprint(config):\n"
        "    return {'cpu_model': 'Other CPU', 'cpu_count': 3, 'memory_gib': 8.0, 'gpus': [], 'driver_version': None}\n"
    )
    result = run(pytester, "test_tiny.py", "--irene-compare=main.json", "--irene-features=model", "--irene-min-delta=0J")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["irene: the base run comes from another machine (CPU model *Other CPU*): calls with "
                                 "resource features are not compared; model-feature predictions do not depend on the machine"])
    (pytester.path / "conftest.py").unlink()
    (pytester.path / "bad.json").write_text("{")
    result = run(pytester, "--irene-compare=bad.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--irene-compare: *bad.json: corrupt run file*"])
    result = run(pytester, "--irene-compare=main.json", "--irene-save")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--irene-compare: cannot be combined with --irene-save*"])


def test_text_lists_the_first_module_lines_and_v_lists_them_all(example, capsys) -> None:
    """A change to every expert of a big MoE printed one line per module (megabytes); the text
    report now stops at MAX_BLOCK_ROWS lines per call unless -v asks for every one."""
    from pytest_irene.cli.compare import text_lines

    rc = compare_runs(load_side(example["base"], "BASE"), load_side(example["wide"], "NEW"))
    full = text_lines(rc, "increase")
    cut = text_lines(rc, "increase", limit=2)
    moved = [line for line in full if line.startswith("  ") and " -> " in line]
    assert len(moved) > 2
    assert cut[: cut.index(moved[1]) + 1] == full[: full.index(moved[1]) + 1]
    assert f"  ... and {len(moved) - 2} more module line(s) (irene compare -v lists them all)" in cut
    _, out, _ = irene(capsys, example["base"], example["wide"], "-v")
    assert all(line in out.splitlines() for line in moved)


def test_a_call_the_compared_run_had_and_this_run_dropped_is_named(pytester: pytest.Pytester) -> None:
    """A removed test passes the gate unseen; a deselected one, or a file not collected, is not "removed"."""
    from inner import run

    pytester.makepyfile(test_two='''
import torch

def test_a(irene):
    irene(torch.nn.Linear(8, 8), torch.randn(2, 8), label="enc")
    irene(torch.nn.Linear(8, 8), torch.randn(2, 8), label="dec")

def test_b(irene):
    irene(torch.nn.Linear(8, 8), torch.randn(2, 8))
''')
    pytester.makepyfile(test_other='''
import torch

def test_c(irene):
    irene(torch.nn.Linear(8, 8), torch.randn(2, 8))
''')
    run(pytester, "--irene-json=main.json").assert_outcomes(passed=3)
    for args in (("-k", "test_a"), ("test_two.py",)):  # deselected, or another file not collected
        assert "not made by this run" not in run(pytester, "--irene-compare=main.json", *args).stdout.str()
    pytester.makepyfile(test_two='''
import torch

def test_a(irene):
    irene(torch.nn.Linear(8, 8), torch.randn(2, 8), label="enc")
''')
    result = run(pytester, "--irene-compare=main.json")
    result.assert_outcomes(passed=2)
    assert ("main.json not made by this run (a removed or renamed test, or a call no longer made; nothing of theirs "
            "is gated): test_two.py::test_a [dec], test_two.py::test_b [default]\n") in result.stdout.str()
