"""A new user's sweep of the plugin on today's workloads: what broke, pinned by inner sessions."""

from __future__ import annotations

import sys

import pytest

from inner import run

RAISES = '''
import sys

import pytest
import torch
from torch import nn


class Bad(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(8, 8)

    def forward(self, x):
        raise ValueError("boom inside")


def test_raises_unchanged(irene):
    with pytest.raises(ValueError, match="boom inside") as info:
        irene(Bad(), torch.randn(2, 8), label="bad")
    if sys.version_info >= (3, 11):  # exception notes are Python 3.11+ (the README says so)
        assert any("pytest-irene" in note and "Bad" in note for note in info.value.__notes__)


@pytest.mark.xfail(raises=ValueError, strict=True)
def test_xfail_raises(irene):
    irene(Bad(), torch.randn(2, 8), label="bad")


def test_traceback_reaches_forward(irene):
    irene(Bad(), torch.randn(2, 8), label="bad")
'''


def test_model_exception_surfaces_unchanged(pytester: pytest.Pytester) -> None:
    """A model that raises inside ``irene(...)`` raises its own exception (pytest.raises and
    xfail(raises=) match it, the traceback reaches the user's forward), and no baseline is written."""
    pytester.makepyfile(test_raises=RAISES)
    result = run(pytester, "--irene-save")
    result.assert_outcomes(passed=1, xfailed=1, failed=1)
    note = ["E*pytest-irene: cannot trace*"] if sys.version_info >= (3, 11) else []  # no notes on 3.10
    result.stdout.fnmatch_lines(['*raise ValueError("boom inside")', "E*ValueError: boom inside", *note])
    assert not (pytester.path / ".irene" / "test_raises.json").exists()


STACKED = '''
import torch
import pytest
from torch import nn

pytestmark = pytest.mark.irene(budget="1mJ")


@pytest.mark.irene(tolerance="90%")
class TestLoose:
    def test_over_budget(self, irene):
        irene(nn.Sequential(nn.Linear(64, 64), nn.ReLU()), torch.randn(8, 32, 64), label="mlp")
'''


def test_module_budget_holds_under_a_class_tolerance_mark(pytester: pytest.Pytester) -> None:
    """A module-level ``pytestmark`` budget is not dropped by a closer marker setting only tolerance."""
    pytester.makepyfile(test_stacked=STACKED)
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*[[]mlp[]] predicted * > budget 1 mJ*"])


def test_summary_caps_culprits_per_call() -> None:
    """A call with dozens of culprits (a longer generation moves every decode module) gets a few
    lines in the session summary and a count; ``-v`` (``limit_per_call=None``) lists them all."""
    from pytest_irene.compare.comparison import Comparison, ModuleDelta
    from pytest_irene.report.terminal import SUMMARY_CULPRITS, failing_module_lines

    deltas = [ModuleDelta(f"decode.layers.{i}.mlp", "MLP", 1.0, 2.0 + i, True) for i in range(12)]
    deltas.append(ModuleDelta("decode", "Model", 12.0, 40.0, True))
    comparison = Comparison("fail", "energy regression", tuple(deltas))

    class Record:  # the fields failing_module_lines reads
        nodeid, label, failed, over_budget = "t.py::test_gen", "gen", True, False

    Record.comparison = comparison
    capped = failing_module_lines([Record()], limit_per_call=SUMMARY_CULPRITS)  # type: ignore[list-item]
    assert len([line for line in capped if "(MLP)" in line]) == SUMMARY_CULPRITS
    assert "decode.layers.11.mlp (MLP)" in capped[0]
    assert any(f"... and {12 - SUMMARY_CULPRITS} more innermost module(s)" in line for line in capped)
    assert any("... and 1 enclosing module(s)" in line for line in capped)
    full = failing_module_lines([Record()])  # type: ignore[list-item]
    assert len([line for line in full if "(MLP)" in line]) == 12


def test_failure_section_marks_extrapolation(pytester: pytest.Pytester) -> None:
    """A failed call whose prediction leaves the profile's training range says so in its own
    failure section (read alone under ``-q`` and in CI logs), not only in the session summary."""
    from test_plugin import write_tiny

    write_tiny(pytester)
    run(pytester, "--irene-save").assert_outcomes(passed=1)
    write_tiny(pytester, width=2048)
    result = run(pytester, "-q")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*[[]tiny[]] energy regression*", "[[]tiny[]] extrapolates (trust the figures less): batch 4 outside*"])


INTERRUPTED = '''
import os
import torch
from torch import nn


def test_a(irene):
    irene(nn.Linear(64, 64), torch.randn(8, 32, 64), label="a")


def test_b(irene):
    if os.environ.get("IRENE_SWEEP_INTERRUPT"):
        raise KeyboardInterrupt


def test_c(irene):
    irene(nn.Linear(64, int(os.environ.get("IRENE_SWEEP_WIDTH", "64"))), torch.randn(8, 32, 64), label="c")
'''


def test_interrupted_save_keeps_whole_entries(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C during ``--irene-save --irene-prune``: the file stays valid JSON, the calls that
    finished are saved, and the tests that never ran keep their old entries (not pruned, not blanked)."""
    import json

    pytester.makepyfile(test_int=INTERRUPTED)
    run(pytester, "--irene-save").assert_outcomes(passed=3)
    path = pytester.path / ".irene" / "test_int.json"
    before = json.loads(path.read_text())["tests"]
    monkeypatch.setenv("IRENE_SWEEP_INTERRUPT", "1")
    monkeypatch.setenv("IRENE_SWEEP_WIDTH", "4096")
    # in-process, pytester re-raises an inner session's Ctrl-C unless told not to
    flags = ("-p", "no:unraisableexception", "-p", "no:cacheprovider", "-p", "no:benchmark")
    result = pytester.runpytest(*flags, "--irene-save", "--irene-prune", no_reraise_ctrlc=True)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    after = json.loads(path.read_text())["tests"]
    assert set(after) == {"test_int.py::test_a", "test_int.py::test_c"}
    assert after["test_int.py::test_c"] == before["test_int.py::test_c"]  # never ran: untouched


CHAINED = '''
import pytest
import torch
from torch import nn


class Chained(nn.Module):
    def forward(self, x):
        try:
            {}["missing"]
        except KeyError as err:
            raise ValueError("wrapped by the model") from err


def test_chain_kept(irene):
    with pytest.raises(ValueError) as info:
        irene(Chained(), torch.randn(2, 8), label="chained")
    assert isinstance(info.value.__cause__, KeyError)
    assert info.value.__context__ is info.value.__cause__
'''


def test_model_exception_keeps_its_own_chain(pytester: pytest.Pytester) -> None:
    """The surfaced exception is the model's own object: its ``__cause__`` is not replaced."""
    pytester.makepyfile(test_chained=CHAINED)
    run(pytester).assert_outcomes(passed=1)


GENERATE = '''
import os
import torch
from transformers import AutoModelForCausalLM, LlamaConfig


def test_generate(irene):
    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1)
    model = AutoModelForCausalLM.from_config(config)
    new = int(os.environ.get("IRENE_SWEEP_NEW_TOKENS", "4"))
    irene(model, {"input_ids": torch.zeros(1, 8, dtype=torch.long)}, max_new_tokens=new, label="gen")
'''


def test_longer_generation_is_named(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """A test that generates more tokens than its baseline fails (the decode modules cost more)
    and its reason says the generation length changed, rather than only listing every decode module."""
    import json

    pytester.makepyfile(test_gen=GENERATE)
    run(pytester, "--irene-save").assert_outcomes(passed=1)
    entry = json.loads((pytester.path / ".irene" / "test_gen.json").read_text())["tests"]["test_gen.py::test_generate"]["gen"]
    assert entry["inputs"] == {"batch_size": 1, "seq_len": 8, "new_tokens": 4}
    run(pytester).assert_outcomes(passed=1)  # unchanged: compared, zero change
    monkeypatch.setenv("IRENE_SWEEP_NEW_TOKENS", "12")
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["[[]gen[]] energy regression against the baseline: generation length changed 4 -> 12 new tokens*"])


def test_generation_length_is_not_an_input_size_mismatch() -> None:
    """The gate compares a generation's baseline with a call of another length (and names it); an
    entry without the key (written before it was recorded) compares as before."""
    from pytest_irene.compare import gate

    class Entry:
        inputs = {"batch_size": 1, "seq_len": 8, "new_tokens": 4}

    class Tree:  # the generation tree's meta records its length
        def __init__(self, new_tokens: int | None) -> None:
            self.meta = {} if new_tokens is None else {"new_tokens": new_tokens}

    assert gate._sizes(Entry.inputs) == {"batch_size": 1, "seq_len": 8}
    assert gate._length_note(Entry(), Tree(12)).startswith("generation length changed 4 -> 12 new tokens")  # type: ignore[arg-type]
    assert gate._length_note(Entry(), Tree(4)) == "" and gate._length_note(Entry(), Tree(None)) == ""  # type: ignore[arg-type]
    Entry.inputs = {"batch_size": 1, "seq_len": 8}
    assert gate._length_note(Entry(), Tree(12)) == ""  # type: ignore[arg-type]
