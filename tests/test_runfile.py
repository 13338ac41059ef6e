"""Run files (``--irene-json``): self-describing, stable, validated, old versions readable."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from inner import run
from pytest_irene import __version__
from pytest_irene.compare.comparison import Comparison
from pytest_irene.compare.records import CallRecord, RecordError, record_from_dict, record_to_dict, sort_records
from pytest_irene.compare.runfile import RUN_FORMAT, RunFile, RunFileError, read_run_file, write_run_file
from test_baselines import make_tree
from test_plugin import write_tiny


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=cwd, check=True, capture_output=True, text=True,
    ).stdout.strip()


def test_run_file_describes_machine_commit_version_and_settings(pytester: pytest.Pytester) -> None:
    write_tiny(pytester)
    git(pytester.path, "init", "-q", "-b", "trunk")
    git(pytester.path, "add", "test_tiny.py")
    git(pytester.path, "commit", "-q", "-m", "one")
    sha = git(pytester.path, "rev-parse", "HEAD")
    run(pytester, "--irene-json=run.json", "--irene-features=model", "--irene-tolerance=7%").assert_outcomes(passed=1)
    doc = json.loads((pytester.path / "run.json").read_text())
    assert doc["format"] == RUN_FORMAT == "irene-run/2"
    assert doc["pytest_irene"] == __version__
    assert doc["commit"] == {"sha": sha, "branch": "trunk", "dirty": False}
    assert doc["host"]["cpu_count"] > 0 and doc["host"]["cpu_model"]
    assert doc["profile"] == "irene-pc1" and doc["feature_mode"] == "model"
    assert doc["settings"]["tolerance"] == 0.07
    assert doc["settings"]["feature_modes"]["irene-pc1"]["features"] == "model"
    (record,) = doc["records"]
    assert record["tolerance"] == 0.07 and record["feature_mode_reason"].startswith("model")
    lines = (pytester.path / "test_tiny.py").read_text().splitlines()
    assert record["test_file"] == "test_tiny.py" and lines[record["test_line"] - 1].strip().startswith("tree = irene(")
    assert "extra" not in record

    back = read_run_file(pytester.path / "run.json")
    assert back.commit is not None and back.commit.sha == sha and back.version == __version__
    assert [r.key for r in back.records] == [("test_tiny.py::test_tiny", "tiny")]
    assert back.records[0].tree.total_j == pytest.approx(record["total_j"])

    (pytester.path / "test_tiny.py").write_text((pytester.path / "test_tiny.py").read_text() + "\n# edit\n")
    run(pytester, "--irene-json=run2.json", "--irene-features=model").assert_outcomes(passed=1)
    assert read_run_file(pytester.path / "run2.json").commit.dirty is True


def test_outside_git_the_commit_is_null(tmp_path: Path) -> None:
    from pytest_irene.compare.runfile import git_commit

    assert git_commit(tmp_path) is None


def _record(nodeid: str = "t.py::test", label: str = "enc", ffn_j: float = 0.3, **kw) -> CallRecord:
    return CallRecord(nodeid, label, make_tree(ffn_j), "irene-pc1", "model", **kw)


def test_record_round_trip_keeps_every_typed_field() -> None:
    rec = _record(call_index=2, item_index=5, tolerance=0.1, hardware="rig", energy_model="abc", saved=True,
                  test_file="t.py", test_line=3, feature_mode_reason="model features requested")
    back = record_from_dict(json.loads(json.dumps(record_to_dict(rec))))
    for name in ("nodeid", "label", "call_index", "item_index", "tolerance", "hardware", "energy_model", "saved",
                 "test_file", "test_line", "feature_mode_reason", "price_cents_per_kwh", "min_delta_j"):
        assert getattr(back, name) == getattr(rec, name), name
    assert back.tree.to_dict() == rec.tree.to_dict()


def test_comparison_flags_round_trip_and_are_validated() -> None:
    rec = _record(comparison=Comparison("pass", "ok", cheaper=("enc.ffn",), legacy_baseline=True))
    doc = json.loads(json.dumps(record_to_dict(rec)))
    back = record_from_dict(doc)
    assert back.comparison == rec.comparison
    del doc["comparison"]["legacy_baseline"]  # run files written before the field
    assert record_from_dict(doc).comparison.legacy_baseline is False
    doc["comparison"]["legacy_baseline"] = "yes"
    with pytest.raises(RecordError, match="legacy_baseline: expected true or false"):
        record_from_dict(doc)


def test_records_are_written_in_collection_order_and_stably(tmp_path: Path) -> None:
    recs = [_record("b.py::t", item_index=1), _record("a.py::t", "y", item_index=0, call_index=1),
            _record("a.py::t", "x", item_index=0)]
    ordered = sort_records(recs)
    assert [r.key for r in ordered] == [("a.py::t", "x"), ("a.py::t", "y"), ("b.py::t", "enc")]
    write_run_file(tmp_path / "1.json", RunFile(records=ordered, host={"cpu_model": "x"}))
    write_run_file(tmp_path / "2.json", RunFile(records=sort_records(list(reversed(recs))), host={"cpu_model": "x"}))
    assert (tmp_path / "1.json").read_text() == (tmp_path / "2.json").read_text()


def test_version_1_run_files_are_read(tmp_path: Path) -> None:
    """irene-run/1 kept the typed fields in ``extra`` and had no host/commit/version."""
    new = record_to_dict(_record(tolerance=0.2, call_index=1, hardware="old rig"))
    typed = ("call_index", "item_index", "feature_mode_reason", "tolerance", "min_delta_j", "hardware",
             "energy_model", "baseline_file", "saved", "price_cents_per_kwh", "test_file", "test_line")
    old = {k: v for k, v in new.items() if k not in typed}
    old["extra"] = {k: new[k] for k in typed[:10]}
    path = tmp_path / "v1.json"
    path.write_text(json.dumps({"format": "irene-run/1", "settings": {"profile": "irene-pc1", "features": "auto"},
                                "records": [old]}))
    run_file = read_run_file(path)
    assert run_file.format == "irene-run/1" and run_file.commit is None and run_file.host == {}
    assert run_file.profile == "irene-pc1" and run_file.feature_mode == "auto"
    (rec,) = run_file.records
    assert rec.tolerance == 0.2 and rec.call_index == 1 and rec.hardware == "old rig" and rec.test_line is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"format": "irene-run/2", "records": [', "corrupt run file (invalid JSON at line 1"),
        ('{"format": "irene-baselines/1", "tests": {}}', "not a pytest-irene run file"),
        ('[1, 2]', "found 'list'"),
        ('{"format": "irene-run/2", "records": {}}', "records: expected a list"),
        ('{"format": "irene-run/2", "records": [{"nodeid": 3}]}', "records[0].nodeid: expected a string"),
        ('{"format": "irene-run/2", "records": [], "records": []}', "field records named twice"),
    ],
)
def test_corrupt_run_files_are_named(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(RunFileError) as info:
        read_run_file(path)
    assert str(path) in str(info.value) and message in str(info.value)


def test_a_bad_field_deep_in_a_record_is_named(tmp_path: Path) -> None:
    doc = RunFile(records=[_record()]).to_dict()
    doc["records"][0]["tolerance"] = "5%"
    doc["records"][0]["comparison"] = {"status": "maybe"}
    path = tmp_path / "r.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(RunFileError, match=r"records\[0\]\.tolerance: expected a finite number, got '5%'"):
        read_run_file(path)
    doc["records"][0]["tolerance"] = 0.05
    path.write_text(json.dumps(doc))
    with pytest.raises(RunFileError, match=r"records\[0\]\.comparison\.status: expected one of pass"):
        read_run_file(path)
    with pytest.raises(RunFileError, match="no such run file"):
        read_run_file(tmp_path / "missing.json")


def test_a_negative_predicted_energy_in_a_run_file_is_named(tmp_path: Path) -> None:
    """A hand edit: compare, export and the gate would print "-120 %" changes from it."""
    doc = RunFile(records=[_record()]).to_dict()
    doc["records"][0]["tree"]["root"]["predicted_energy_j"] = -1.5
    path = tmp_path / "r.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(RunFileError, match=r"root.predicted_energy_j.*expected energy >= 0, got -1.5"):
        read_run_file(path)
