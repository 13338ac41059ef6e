"""Bad input for datasets and the ``irene`` commands (issue 11): a clear error naming the file
or option, never a traceback."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from pytest_irene.cli import main
from pytest_irene.engine.dataset import DuplicateTreesWarning, iter_trees, load_dataset, write_dataset
from pytest_irene.errors import DatasetError, UsageError
from pytest_irene.outputs import OutputError, check_output_path, write_output

REPO = Path(__file__).resolve().parent.parent
PC1 = REPO / "calibration" / "datasets" / "irene-pc1.jsonl.gz"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def two_trees(tmp_path_factory: pytest.TempPathFactory) -> list:
    trees = load_dataset(PC1)
    return [next(t for t in trees if t.model_name == "bert-base-uncased"), next(t for t in trees if t.model_name == "gpt2")]


# -- 7. datasets ----------------------------------------------------------------------------------


def test_corrupt_gzip_names_the_file_and_line(tmp_path: Path) -> None:
    original = PC1.read_bytes()
    messages = []
    for tenth in range(1, 10):  # bytes flipped at several places inside the compressed stream
        data = bytearray(original)
        at = len(data) * tenth // 10
        data[at : at + 64] = b"\xff" * 64
        path = tmp_path / f"flipped{tenth}.jsonl.gz"
        path.write_bytes(bytes(data))
        with pytest.raises(DatasetError) as info:
            list(iter_trees(path))
        assert str(info.value).startswith(f"{path}:{info.value.line}: ") and info.value.line > 1
        messages.append(str(info.value))
    # where the deflate stream itself breaks (a raw zlib.error before), the error says so
    assert any("corrupt or truncated" in m and "invalid" in m for m in messages)


def test_deeply_nested_line_is_a_dataset_error(tmp_path: Path) -> None:
    path = tmp_path / "deep.jsonl"
    path.write_text("[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(DatasetError, match=r"deep.jsonl:1: nested too deep"):
        load_dataset(path)
    node: dict = {"scope": "", "type": "M", "level": "ml", "features": {}, "children": []}
    for _ in range(400):  # valid JSON, but a tree 400 levels deep
        node = {"scope": "s", "type": "M", "level": "module", "features": {}, "children": [node]}
    node["level"] = "model"
    deep_tree = tmp_path / "deep-tree.jsonl"
    deep_tree.write_text(json.dumps({"format": "irene-tree/1", "batch_size": 1, "seq_len": 1, "root": node}) + "\n")
    with pytest.raises(DatasetError, match=r"deep-tree.jsonl:1: .*nested deeper than 200 levels"):
        load_dataset(deep_tree)


def test_duplicate_trees_are_not_trained_on_silently(capsys, tmp_path: Path, two_trees: list) -> None:
    path = tmp_path / "dup.jsonl"
    write_dataset(path, [two_trees[0], two_trees[1], two_trees[0]])
    with pytest.warns(DuplicateTreesWarning, match=r"1 duplicate tree\(s\) \(.*dup.jsonl:3 repeats .*dup.jsonl:1\).*2 of 3 trees are distinct"):
        trees = load_dataset(path)
    assert [t.model_name for t in trees] == ["bert-base-uncased", "gpt2", "bert-base-uncased"]  # as stored
    with pytest.warns(DuplicateTreesWarning, match="4 duplicate"):
        assert len(load_dataset(path, path)) == 6  # the same file passed twice
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(load_dataset(PC1)) == 193  # the paper dataset has none
    code, _, err = run(capsys, "evaluate", path, "--profile", "irene-pc1", "--json")
    assert code == 0
    assert err.startswith("irene evaluate: warning: 1 duplicate tree(s)")  # one line, not a Python warning


def test_evaluate_on_an_empty_dataset_is_an_error(capsys, tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    code, out, err = run(capsys, "evaluate", empty, "--profile", "irene-pc1", "--json")
    assert code == 2 and out == ""
    assert f"irene evaluate: error: DATASET: {empty} hold(s) no trees" in err


def test_crossvalidate_on_one_model_is_an_error(capsys, tmp_path: Path, two_trees: list) -> None:
    one = tmp_path / "one.jsonl"
    write_dataset(one, [two_trees[0]])
    code, out, err = run(capsys, "crossvalidate", one)
    assert code == 2 and out == ""
    assert "split 'lomo' holds one model out and trains on the others, but the data has only bert-base-uncased" in err


# -- 1. report paths of the commands --------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["predict", "--model", "distilbert-base-uncased", "--batch-size", "1", "--seq-len", "8", "--html"],
        ["sweep", "--model", "distilbert-base-uncased", "--batch-sizes", "1", "--seq-lens", "8", "--csv"],
        ["sweep", "--model", "distilbert-base-uncased", "--batch-sizes", "1", "--seq-lens", "8", "--html"],
    ],
    ids=["predict-html", "sweep-csv", "sweep-html"],
)
def test_command_report_path_is_checked_before_any_work(capsys, tmp_path: Path, argv: list[str]) -> None:
    (tmp_path / "afile").write_text("x")
    for bad, message in ((tmp_path, "is a directory"), (tmp_path / "afile" / "r.out", f"{tmp_path / 'afile'} is not a directory")):
        code, out, err = run(capsys, *argv, bad)
        assert code == 2, err
        assert f"error: {argv[-1]}={bad}: {message}" in err
        assert "Traceback" not in err and "wrote" not in err


def test_write_that_fails_after_the_check_is_one_line_and_leaves_no_temp_file(tmp_path: Path) -> None:
    target = check_output_path(tmp_path / "r.html", "--html")
    target.mkdir()  # the path became a directory between the check and the write
    with pytest.raises(OutputError, match=r"^--html: cannot write .*r.html: Is a directory$"):
        write_output(target, "<html>", "--html")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html"]
    with pytest.raises(UsageError, match="cannot write into /proc/self"):
        check_output_path("/proc/self/r.html", "--html")
