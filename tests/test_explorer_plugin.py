"""``--irene-html`` end to end through pytester, with the real irene plugin and predictor."""

from __future__ import annotations

import json
import re
from importlib.metadata import entry_points

import pytest

for _needed in ("pytest_irene.tracing", "pytest_irene.architectures", "pytest_irene.energy_model"):
    pytest.importorskip(_needed, reason=f"{_needed} (tracer / energy model) is not available")

#: Modules in-process inner sessions must keep loaded: pytester unloads what an inner run
#: imported, and re-importing torch's extension modules breaks them.
HEAVY_MODULES = ("torch", "transformers", "sklearn", "numpy", "scipy", "safetensors", "tokenizers", "pytest_irene")


@pytest.fixture(autouse=True)
def keep_heavy_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    import _pytest.pytester as pytester_module

    base = pytester_module.SysModulesSnapshot

    class KeepHeavy(base):  # type: ignore[misc, valid-type]
        def __init__(self, preserve=None):  # type: ignore[no-untyped-def]
            super().__init__(preserve=lambda name: name.startswith(HEAVY_MODULES) or bool(preserve and preserve(name)))

    monkeypatch.setattr(pytester_module, "SysModulesSnapshot", KeepHeavy)


TEST_FILE = '''
import torch
from transformers import BertConfig, BertModel

def tiny(layers):
    cfg = BertConfig(num_hidden_layers=layers, hidden_size=128, num_attention_heads=2,
                     intermediate_size=INTERMEDIATE, vocab_size=128, attn_implementation="eager")
    with torch.device("meta"):
        return BertModel(cfg)

def test_tiny_bert(irene):
    model = tiny(2)
    ids = torch.zeros(4, 64, dtype=torch.long, device="meta")
    irene(model, {"input_ids": ids})
'''


def plugin_args() -> list[str]:
    """``-p`` for the plugins that are not already loaded through an installed entry point."""
    installed = {ep.value for ep in entry_points(group="pytest11")}
    wanted = ["pytest_irene.plugin", "pytest_irene.explorer.pytest_plugin"]
    args = [arg for mod in wanted if mod not in installed for arg in ("-p", mod)]
    return args + ["-p", "no:unraisableexception", "-p", "no:cacheprovider"]


def report_data(path) -> dict:
    page = path.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    return json.loads(re.search(r'id="irene-data">(.*?)</script>', page, re.S).group(1))


def test_irene_html_writes_the_report_and_highlights_failures(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_model=TEST_FILE.replace("INTERMEDIATE", "256"))
    saved = pytester.runpytest(*plugin_args(), "--irene-save")
    saved.assert_outcomes(passed=1)

    # first: an unchanged model passes, and the report shows the call
    result = pytester.runpytest(*plugin_args(), "--irene-html=out/report.html")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*irene: HTML energy report (1 call) written to *report.html"])
    data = report_data(pytester.path / "out" / "report.html")
    (call,) = data["calls"]
    assert call["nodeid"] == "test_model.py::test_tiny_bert"
    assert call["status"] == "pass" and not call["failed"]
    assert call["source"] == "predicted" and call["total_j"] > 0
    assert call["tree"]["root"]["type"] == "BertModel"

    # then: a wider feed-forward fails the gate, and the report marks the failing modules
    pytester.makepyfile(test_model=TEST_FILE.replace("INTERMEDIATE", "4096"))
    result = pytester.runpytest(*plugin_args(), "--irene-html=out/report.html")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*irene: HTML energy report (1 call, 1 failing) written to *"])
    (call,) = report_data(pytester.path / "out" / "report.html")["calls"]
    assert call["status"] == "fail" and call["failed"]
    failing = [scope for scope, d in call["deltas"].items() if d["failed"]]
    assert any("intermediate" in scope for scope in failing), failing


def test_ini_option_and_no_report_without_it(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_model=TEST_FILE.replace("INTERMEDIATE", "256"))
    result = pytester.runpytest(*plugin_args())
    result.assert_outcomes(passed=1)
    assert not list(pytester.path.glob("*.html"))
    pytester.makeini("[pytest]\nirene_html = reports/energy.html\n")
    result = pytester.runpytest(*plugin_args())
    result.assert_outcomes(passed=1)
    assert report_data(pytester.path / "reports" / "energy.html")["calls"][0]["status"] == "new"


def test_directory_path_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_model="def test_ok():\n    pass\n")
    pytester.mkdir("adir")
    result = pytester.runpytest(*plugin_args(), "--irene-html=adir")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--irene-html=adir: is a directory*"])
