"""Stored files that are readable JSON but not what a reader can use, and paths that are not files.

Found by a fault sweep: each of these ended in a raw traceback (or, for a FIFO, a wait that never
ended, and for a symbolic link loop as a baseline, calls counted as new and passed ungated).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest
from runs import bert_record, write_run

from pytest_irene.compare.baseline_store import BaselineStore
from pytest_irene.compare.baselines import BaselineError, dumps_baselines, read_baseline_file
from pytest_irene.compare.comparison import Comparison, ModuleDelta
from pytest_irene.compare.runfile import RunFile, RunFileError, read_run_file, run_file_text
from pytest_irene.engine.dataset import load_dataset
from pytest_irene.engine.predict.energy_model import EnergyModel
from pytest_irene.errors import DatasetError, ModelFileError, UsageError
from pytest_irene.outputs import check_output_path

#: An integer json reads only past Python's 4300-digit limit for int() (a bare ValueError before).
HUGE = "1" * 5000


def test_an_integer_too_long_to_read_is_named_by_every_reader(tmp_path: Path) -> None:
    baseline = tmp_path / "test_m.json"
    baseline.write_text(dumps_baselines({}).replace('"format"', f'"big": {HUGE}, "format"', 1))
    with pytest.raises(BaselineError, match=r"test_m\.json: corrupt baseline file \(an integer of thousands of digits"):
        read_baseline_file(baseline)
    run = write_run(tmp_path / "run.json", [bert_record()])
    run.write_text(run.read_text().replace('"format"', f'"big": {HUGE}, "format"', 1))
    with pytest.raises(RunFileError, match=r"run\.json: corrupt run file \(an integer of thousands of digits"):
        read_run_file(run)
    dataset = tmp_path / "d.jsonl"
    dataset.write_text(f'{{"format": "irene-tree/1", "batch_size": {HUGE}}}\n')
    with pytest.raises(DatasetError, match=r"d\.jsonl:1: an integer of thousands of digits"):
        load_dataset(dataset)
    model = tmp_path / "m.json"
    model.write_text(f'{{"format": "irene-energy-model", "profile": {HUGE}}}')
    with pytest.raises(ModelFileError, match=r"m\.json.*an integer of thousands of digits"):
        EnergyModel.load(model)


def test_a_nan_in_a_field_the_baselines_do_not_read_is_refused_on_reading(tmp_path: Path) -> None:
    """It was kept, and ``--irene-save`` then failed to write the file (allow_nan=False) with a traceback."""
    baseline = tmp_path / "test_m.json"
    baseline.write_text(dumps_baselines({}).replace('"format"', '"note": NaN, "format"', 1))
    with pytest.raises(BaselineError, match=r"test_m\.json: note: NaN or infinite number"):
        read_baseline_file(baseline)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_a_symbolic_link_loop_or_a_fifo_is_named_not_read(tmp_path: Path) -> None:
    loop = tmp_path / "loop.json"
    loop.symlink_to(loop)
    with pytest.raises(UsageError, match=r"--irene-json=.*loop\.json: a symbolic link that loops"):
        check_output_path(loop, "--irene-json", kind="run")
    with pytest.raises(BaselineError, match=r"loop\.json: a symbolic link that loops"):
        read_baseline_file(loop)  # exists() is False for a loop: its calls counted as new, ungated
    with pytest.raises(RunFileError, match=r"loop\.json: a symbolic link that loops"):
        read_run_file(loop)
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    with pytest.raises(BaselineError, match=r"fifo\.json: not a regular file"):
        read_baseline_file(fifo)  # reading waited forever for a writer
    with pytest.raises(RunFileError, match=r"fifo\.json: not a regular file"):
        read_run_file(fifo)


def test_a_change_that_is_not_a_number_is_written_as_null(tmp_path: Path) -> None:
    """A baseline of 5e-324 J (valid: finite and positive) made the change +inf, and the run file
    was not written (allow_nan=False raised at the end of the run)."""
    delta = ModuleDelta("", "BertModel", 5e-324, 1.0, True)
    record = dataclasses.replace(bert_record(), comparison=Comparison("fail", deltas=(delta,)))
    doc = json.loads(run_file_text(RunFile(records=[record])))
    assert doc["records"][0]["comparison"]["deltas"][0]["change"] is None


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("gpus", 5, "expected a list of GPU names or null, got 5"),
    ("memory_gib", "x", "expected a number of GiB >= 0 or null, got 'x'"),
])
def test_a_run_files_host_of_the_wrong_types_is_refused(tmp_path: Path, field: str, value: object, expected: str) -> None:
    """Comparing it with another machine's raised TypeError/ValueError in irene compare."""
    path = write_run(tmp_path / "run.json", [bert_record()])
    doc = json.loads(path.read_text())
    doc["host"][field] = value
    path.write_text(json.dumps(doc))
    with pytest.raises(RunFileError, match=rf"run\.json: host\.{field}: {expected}"):
        read_run_file(path)


def test_a_prune_that_cannot_write_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = BaselineStore(tmp_path)

    def full(path, change):  # type: ignore[no-untyped-def]
        raise OSError(28, "No space left on device")

    rewritten = store._rewrite
    monkeypatch.setattr(store, "_rewrite", lambda path, change: full(path, change) if path.name == "test_m.json"
                        else rewritten(path, change))
    (tmp_path / "test_a.json").write_text(dumps_baselines({}))
    with pytest.raises(BaselineError, match=r"test_m\.json: No space left on device$"):
        store.prune({("test_m.py::test_x", "default")})
    with pytest.raises(BaselineError, match=r"test_m\.json: No space left on device \(pruned before it: .*test_a\.json\)"):
        store.prune({("test_m.py::test_x", "default"), ("test_a.py::test_y", "default")})
