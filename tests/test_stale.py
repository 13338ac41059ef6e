"""Stale baselines: listed in the summary, dropped by --irene-save --irene-prune, never for deselected tests."""

from __future__ import annotations

import json

import pytest

from inner import run
from test_plugin import TINY

SECOND = '''

def test_{name}(irene):
    irene(Tiny(), torch.randn(2, 8, 64), label="{label}")
'''


def write(pytester: pytest.Pytester, module: str, *tests: tuple[str, str]) -> None:
    pytester.makepyfile(**{module: TINY.format(width=64) + "".join(SECOND.format(name=n, label=lbl) for n, lbl in tests)})


def stored(pytester: pytest.Pytester, module: str) -> dict:
    return json.loads((pytester.path / ".irene" / f"{module}.json").read_text())["tests"]


def test_stale_baselines_are_listed_and_pruned(pytester: pytest.Pytester) -> None:
    write(pytester, "test_tiny", ("old", "x"), ("calls", "a"))
    write(pytester, "test_gone")
    run(pytester, "--irene-save").assert_outcomes(passed=4)
    (pytester.path / "test_gone.py").unlink()
    write(pytester, "test_tiny", ("new", "x"), ("calls", "b"))  # test_old renamed; test_calls now calls "b"

    out = run(pytester, "-n", "2").stdout.str()  # under xdist the workers report what they collected
    assert "irene: 3 stale baseline(s) of tests that no longer exist:" in out
    assert "test_gone.py::test_tiny [tiny] (test module test_gone.py no longer exists)" in out
    assert "test_tiny.py::test_old [x] (test no longer exists)" in out
    assert "test_tiny.py::test_calls [a] (the test passed without making this call)" in out
    assert "--irene-save --irene-prune" in out

    # deselected tests and modules narrowed to one node id keep their baselines
    write(pytester, "test_tiny", ("old", "x"), ("calls", "a"))
    for args in (("-k", "not old"), ("test_tiny.py::test_tiny",)):
        out = run(pytester, *args).stdout.str()
        assert "test_tiny.py::test_old" not in out.split("stale baseline")[-1], args
    write(pytester, "test_tiny", ("new", "x"), ("calls", "b"))

    result = run(pytester, "--irene-prune")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--irene-prune: only with --irene-save*"])

    out = run(pytester, "--irene-save", "--irene-prune").stdout.str()
    assert "irene: pruned 3 stale baseline(s):" in out
    assert not (pytester.path / ".irene" / "test_gone.json").exists()
    tests = stored(pytester, "test_tiny")
    assert set(tests) == {"test_tiny.py::test_tiny", "test_tiny.py::test_new", "test_tiny.py::test_calls"}
    assert set(tests["test_tiny.py::test_calls"]) == {"b"}
    assert "stale baseline" not in run(pytester).stdout.str()


def test_tests_dropped_from_collection_keep_their_baselines(pytester: pytest.Pytester) -> None:
    """--lf and a conftest that filters items drop living tests from the run without
    deselecting them: --irene-save --irene-prune must not take them for deleted tests."""
    write(pytester, "test_tiny", ("a", "x"), ("slow", "y"))
    run(pytester, "--irene-save", "-p", "cacheprovider").assert_outcomes(passed=3)
    before = set(stored(pytester, "test_tiny"))

    pytester.makepyfile(test_fail="def test_broken():\n    assert False\n")
    run(pytester, "-p", "cacheprovider").assert_outcomes(passed=3, failed=1)
    out = run(pytester, "--lf", "--irene-save", "--irene-prune", "-p", "cacheprovider").stdout.str()
    assert "pruned" not in out and "stale baseline" not in out
    assert set(stored(pytester, "test_tiny")) == before

    pytester.makeconftest(
        "def pytest_collection_modifyitems(config, items):\n"
        "    items[:] = [i for i in items if 'slow' not in i.nodeid]\n"
    )
    out = run(pytester, "--irene-save", "--irene-prune").stdout.str()
    assert "pruned" not in out and "stale baseline" not in out
    assert set(stored(pytester, "test_tiny")) == before


def test_a_removed_parametrized_case_is_stale(pytester: pytest.Pytester) -> None:
    body = TINY.format(width=64) + (
        "\n\n@pytest.mark.parametrize('n', {cases})\n"
        "def test_sizes(irene, n):\n    irene(Tiny(), torch.randn(n, 8, 64), label='s')\n"
    )
    pytester.makepyfile(test_tiny=body.format(cases="[1, 2]"))
    run(pytester, "--irene-save").assert_outcomes(passed=3)
    pytester.makepyfile(test_tiny=body.format(cases="[1]"))
    out = run(pytester).stdout.str()
    assert "test_tiny.py::test_sizes[2] [s] (test no longer exists)" in out
