"""``irene export``: the JSON github-action-benchmark and Bencher read, validated against their documented fields."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_irene.cli import main
from runs import bert_record, write_run

#: github-action-benchmark's BenchmarkResult (src/extract.ts): name, value, unit; range and extra optional.
GAB_SCHEMA = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "value": {"type": "number"},
            "unit": {"type": "string"},
            "range": {"type": "string"},
            "extra": {"type": "string"},
        },
        "required": ["name", "value", "unit"],
        "additionalProperties": False,
    },
}

#: The Bencher Metric Format JSON schema (https://bencher.dev/docs/reference/bencher-metric-format).
BMF_SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema",
    "type": "object",
    "patternProperties": {
        ".+": {
            "type": "object",
            "patternProperties": {
                ".+": {
                    "type": "object",
                    "properties": {
                        "value": {"type": "number"},
                        "lower_value": {"type": "number"},
                        "upper_value": {"type": "number"},
                    },
                    "required": ["value"],
                }
            },
        }
    },
}


@pytest.fixture(scope="module")
def run_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("export")
    recs = [bert_record(1024, label="encoder"), bert_record(4096, nodeid="tests/test_bert.py::test_wide", item_index=1)]
    return write_run(d / "run.json", recs)


def export(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    code = main(["export", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_github_action_benchmark(run_file: Path, capsys) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    code, out, _ = export(capsys, run_file, "--format", "github-action-benchmark")
    assert code == 0
    doc = json.loads(out)
    jsonschema.validate(doc, GAB_SCHEMA)
    assert [b["name"] for b in doc] == ["tests/test_bert.py::test_encoder [encoder]", "tests/test_bert.py::test_wide [default]"]
    run = json.loads(run_file.read_text())
    assert [b["value"] for b in doc] == [r["total_j"] for r in run["records"]]
    assert {b["unit"] for b in doc} == {"J"} and "profile irene-pc1" in doc[0]["extra"]

    code, out, _ = export(capsys, run_file, "--format", "github-action-benchmark", "--modules")
    doc = json.loads(out)
    jsonschema.validate(doc, GAB_SCHEMA)
    names = [b["name"] for b in doc]
    assert len(names) == len(set(names)) and "tests/test_bert.py::test_wide [default] :: encoder.layer.0.intermediate" in names


def test_bencher_metric_format(run_file: Path, capsys, tmp_path: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    out_path = tmp_path / "bmf.json"
    code, out, err = export(capsys, run_file, run_file, "--format", "bencher", "--modules", "-o", out_path)
    assert code == 0 and out == "" and f"written to {out_path}" in err  # the same run twice (shards) merges
    doc = json.loads(out_path.read_text())
    jsonschema.validate(doc, BMF_SCHEMA)
    total = doc["tests/test_bert.py::test_encoder [encoder]"]
    assert set(total) == {"energy-j"} and total["energy-j"]["value"] > 0
    assert all(len(name) <= 1024 for name in doc) and all(len(m) <= 64 for b in doc.values() for m in b)


def test_bad_format_and_conflicting_runs(run_file: Path, capsys, tmp_path: Path) -> None:
    code, _, err = export(capsys, run_file, "--format", "csv")
    assert code == 2 and "--format: expected one of github-action-benchmark, bencher, got 'csv'" in err
    other = write_run(tmp_path / "other.json", [bert_record(4096, label="encoder")])
    code, _, err = export(capsys, run_file, other, "--format", "bencher")
    assert code == 2 and "with different energies" in err and str(other) in err
    (tmp_path / "bad.json").write_text("[]")
    code, _, err = export(capsys, tmp_path / "bad.json", "--format", "bencher")
    assert code == 2 and "not a pytest-irene run file" in err


def test_output_path_is_checked_before_any_work(run_file: Path, capsys, tmp_path: Path) -> None:
    """``-o DIR`` raised IsADirectoryError and ``-o FILE/x.json`` FileExistsError from the atomic write."""
    (tmp_path / "afile").write_text("x")
    for bad, message in ((tmp_path, "is a directory; expected a file path"),
                         (tmp_path / "afile" / "x.json", f"{tmp_path / 'afile'} is not a directory")):
        code, out, err = export(capsys, run_file, "--format", "bencher", "-o", bad)
        assert code == 2 and out == "" and "Traceback" not in err
        assert err.strip() == f"irene export: error: -o/--output={bad}: {message}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]  # no temporary file left behind


def test_an_output_that_is_the_input_run_file_is_refused(run_file: Path, capsys) -> None:
    """``-o`` naming the run file replaced it with the export: the run file was lost."""
    before = run_file.read_bytes()
    code, out, err = export(capsys, run_file, "--format", "bencher", "-o", run_file)
    assert code == 2 and out == ""
    assert err.strip() == (f"irene export: error: -o/--output={run_file}: is also the input {run_file}; "
                           "write the output to a new file")
    assert run_file.read_bytes() == before


@pytest.mark.parametrize("fmt", ["github-action-benchmark", "bencher"])
def test_an_output_that_is_not_an_earlier_export_is_never_replaced(run_file: Path, capsys, tmp_path: Path, fmt: str) -> None:
    """``-o test_keep.py`` (or a baseline) was overwritten with the export, where ``--irene-json`` refuses."""
    kept = tmp_path / "test_keep.py"
    kept.write_text("def test_keep():\n    pass\n")
    code, out, err = export(capsys, run_file, "--format", fmt, "-o", kept)
    assert code == 2 and out == "" and kept.read_text() == "def test_keep():\n    pass\n"
    assert "exists and is not a irene export JSON (github-action-benchmark or Bencher); refusing to replace it" in err
    earlier = tmp_path / "energy.json"
    for _ in range(2):  # an earlier export (of either format) is replaced
        assert export(capsys, run_file, "--format", fmt, "-o", earlier)[0] == 0
    other = "bencher" if fmt != "bencher" else "github-action-benchmark"
    assert export(capsys, run_file, "--format", other, "-o", earlier)[0] == 0
