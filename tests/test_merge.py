"""``irene merge``: the run files of a suite split over CI jobs are one run for ``irene compare``."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from inner import run
from runs import HOST, bert_record, write_run

from pytest_irene.cli import main
from pytest_irene.compare.runfile import CommitInfo, RunFile, read_run_file, write_run_file

SHARD = '''
import torch
from torch import nn


def test_{name}(irene):
    irene(nn.Sequential(nn.Linear(32, {width}), nn.ReLU(), nn.Linear({width}, 32)), torch.randn(4, 16, 32))
'''


def test_shards_merge_into_the_run_the_whole_suite_makes(pytester: pytest.Pytester, capsys) -> None:
    pytester.makepyfile(test_a=SHARD.format(name="a", width=64), test_b=SHARD.format(name="b", width=128))
    assert run(pytester, "--irene-json=whole.json").ret == 0
    assert run(pytester, "test_a.py", "--irene-json=shard-1.json").ret == 0
    assert run(pytester, "test_b.py", "--irene-json=shard-2.json").ret == 0
    capsys.readouterr()
    out = pytester.path / "run.json"
    assert main(["merge", str(pytester.path / "shard-1.json"), str(pytester.path / "shard-2.json"), "-o", str(out)]) == 0
    assert "2 run file(s), 2 call(s) written" in capsys.readouterr().err
    merged, whole = read_run_file(out), read_run_file(pytester.path / "whole.json")
    assert [(r.nodeid, r.tree.total_j) for r in merged.records] == [(r.nodeid, r.tree.total_j) for r in whole.records]
    assert (merged.host, merged.commit, merged.settings) == (whole.host, whole.commit, whole.settings)
    assert main(["compare", str(pytester.path / "whole.json"), str(out), "--fail-on", "any", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {c["status"] for c in report["calls"]} == {"pass"} and len(report["calls"]) == 2


def _shard(path: Path, *records, **fields) -> Path:  # type: ignore[no-untyped-def]
    run_file = RunFile(records=list(records), host=dict(HOST), version="0.1.0", profile="irene-pc1",
                       feature_mode="model", commit=CommitInfo("a" * 40, "main", False))
    write_run_file(path, dataclasses.replace(run_file, **fields))
    return path


@pytest.mark.parametrize(("field", "value", "needle"), [
    ("commit", CommitInfo("b" * 40, "main", False), "different commit ('aaaaaaaaaaaa' and 'bbbbbbbbbbbb')"),
    ("version", "0.2.0", "different pytest-irene version ('0.1.0' and '0.2.0')"),
    ("profile", "rig", "different profile (--irene-profile)"),
    ("settings", {"tolerance": 0.1}, "different gate settings"),
])
def test_shards_of_different_runs_are_refused_naming_both_files(tmp_path: Path, capsys, field: str, value,  # type: ignore[no-untyped-def]
                                                                  needle: str) -> None:
    one = _shard(tmp_path / "one.json", bert_record(nodeid="t.py::test_a"))
    two = _shard(tmp_path / "two.json", bert_record(nodeid="t.py::test_b"), **{field: value})
    out = tmp_path / "run.json"
    assert main(["merge", str(one), str(two), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert needle in err and str(one) in err and str(two) in err and not out.exists()


def test_a_call_in_two_shards_is_kept_once_or_refused_when_it_differs(tmp_path: Path, capsys) -> None:
    one = _shard(tmp_path / "one.json", bert_record(nodeid="t.py::test_a"))
    same = _shard(tmp_path / "same.json", bert_record(nodeid="t.py::test_a"), bert_record(nodeid="t.py::test_b"))
    other = _shard(tmp_path / "other.json", bert_record(2048, nodeid="t.py::test_a"))
    out = tmp_path / "run.json"
    assert main(["merge", str(one), str(same), "-o", str(out)]) == 0
    assert [r.nodeid for r in read_run_file(out).records] == ["t.py::test_a", "t.py::test_b"]
    assert main(["merge", str(one), str(other), "-o", str(tmp_path / "x.json")]) == 2
    assert "t.py::test_a [default] is in" in capsys.readouterr().err and not (tmp_path / "x.json").exists()


def test_shards_on_different_machines_merge_only_from_model_features(tmp_path: Path, capsys) -> None:
    other_host = {**HOST, "cpu_model": "Another CPU"}
    one = _shard(tmp_path / "one.json", bert_record(nodeid="t.py::test_a"))
    two = _shard(tmp_path / "two.json", bert_record(nodeid="t.py::test_b"), host=other_host)
    out = tmp_path / "run.json"
    assert main(["merge", str(one), str(two), "-o", str(out)]) == 0
    assert "different machines" in capsys.readouterr().err and read_run_file(out).host == {}
    measured = dataclasses.replace(bert_record(nodeid="t.py::test_b"), features="all")
    three = _shard(tmp_path / "three.json", measured, host=other_host)
    assert main(["merge", str(one), str(three), "-o", str(tmp_path / "x.json")]) == 2
    assert "resource features" in capsys.readouterr().err


def test_shards_whose_feature_modes_were_decided_on_other_runners_or_not_at_all_merge(tmp_path: Path, capsys) -> None:
    """Before: the mode's reason names the runner ("memory 15.62 GiB != 32.0 GiB"), so shards of two
    runners, or a shard without an energy test (no mode decided), were "different gate settings"."""
    def modes(memory: str, features: str = "model") -> dict:
        return {"feature_modes": {"irene-pc1": {"features": features, "code": "host-differs", "device": None,
                                                "reason": f"auto: this host differs: memory {memory} GiB != 32.0 GiB"}}}

    one = _shard(tmp_path / "one.json", bert_record(nodeid="t.py::test_a"), settings=modes("15.62"))
    two = _shard(tmp_path / "two.json", bert_record(nodeid="t.py::test_b"), settings=modes("15.61"))
    empty = _shard(tmp_path / "empty.json", settings={"feature_modes": {}})
    out = tmp_path / "run.json"
    assert main(["merge", str(empty), str(one), str(two), "-o", str(out)]) == 0
    merged = read_run_file(out)
    assert [r.nodeid for r in merged.records] == ["t.py::test_a", "t.py::test_b"]
    assert merged.settings == modes("15.62")  # the first shard that decided one
    assert main(["merge", str(one), str(two), "-o", str(out)]) == 0  # the output is an earlier run: replaced
    rig = _shard(tmp_path / "rig.json", bert_record(nodeid="t.py::test_c"), settings=modes("32.0", "all"))
    assert main(["merge", str(one), str(rig), "-o", str(tmp_path / "x.json")]) == 2
    assert "profile 'irene-pc1' used 'model' features in one and 'all' in the other" in capsys.readouterr().err


def test_the_output_never_replaces_a_shard_and_bad_shards_are_named(tmp_path: Path, capsys) -> None:
    one = _shard(tmp_path / "one.json", bert_record(nodeid="t.py::test_a"))
    before = one.read_text()
    assert main(["merge", str(one), "-o", str(one)]) == 2
    assert "is also the input" in capsys.readouterr().err and one.read_text() == before
    assert main(["merge", str(one), str(tmp_path / "." / "one.json"), "-o", str(tmp_path / "x.json")]) == 2
    assert f"SHARD {tmp_path / 'one.json'}: given twice (also as {one})" in capsys.readouterr().err
    (tmp_path / "empty.json").write_text("")
    assert main(["merge", str(one), str(tmp_path / "empty.json"), "-o", str(tmp_path / "x.json")]) == 2
    assert "empty.json: empty run file" in capsys.readouterr().err
    kept = tmp_path / "test_keep.py"
    kept.write_text("def test_keep():\n    pass\n")
    assert main(["merge", str(one), "-o", str(kept)]) == 2  # was overwritten with the merged run
    assert "exists and is not a pytest-irene run file" in capsys.readouterr().err
    assert kept.read_text() == "def test_keep():\n    pass\n"
    write_run(tmp_path / "old.json", [bert_record(nodeid="t.py::test_b")])  # no commit recorded
    assert main(["merge", str(one), str(tmp_path / "old.json"), "-o", str(tmp_path / "x.json")]) == 2
    assert "different commit" in capsys.readouterr().err


def test_the_merged_run_is_dirty_when_a_shard_was_and_does_not_depend_on_the_shards_order(tmp_path: Path) -> None:
    one = _shard(tmp_path / "one.json", bert_record(nodeid="t.py::test_b"), bert_record(nodeid="t.py::test_a"))
    two = _shard(tmp_path / "two.json", bert_record(nodeid="t.py::test_c"), commit=CommitInfo("a" * 40, "main", True))
    assert main(["merge", str(one), str(two), "-o", str(tmp_path / "ab.json")]) == 0
    assert main(["merge", str(two), str(one), "-o", str(tmp_path / "ba.json")]) == 0
    assert (tmp_path / "ab.json").read_bytes() == (tmp_path / "ba.json").read_bytes()
    merged = read_run_file(tmp_path / "ab.json")
    assert merged.commit is not None and merged.commit.dirty
    assert [r.nodeid for r in merged.records] == ["t.py::test_a", "t.py::test_b", "t.py::test_c"]
