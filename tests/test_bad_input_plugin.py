"""Bad input and faults in the pytest plugin (issue 11): each case reproduces one report.

Every case ends in a one-line error naming the option or file, and nothing
already stored is lost. Inner sessions use a one-layer model so each costs a
fraction of a second.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from inner import run

TEST = '''
import os
import torch


def test_{name}(irene):
    irene(torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.GELU()), torch.randn(2, 4, 16))
    {extra}
'''


def write_test(pytester: pytest.Pytester, name: str = "a", extra: str = "") -> Path:
    return pytester.makepyfile(**{f"test_{name}": TEST.format(name=name, extra=extra or "pass")})


def no_temp_files(directory: Path) -> bool:
    return not [p for p in directory.rglob("*.tmp")]


# -- 1. report paths -------------------------------------------------------------------------


@pytest.mark.parametrize("option", ["--irene-json", "--irene-html"])
def test_report_path_that_cannot_be_a_file_is_a_usage_error(pytester: pytest.Pytester, option: str) -> None:
    write_test(pytester)
    (pytester.path / "adir").mkdir()
    (pytester.path / "afile").write_text("x")
    for value, message in (("adir", "is a directory"), ("afile/r.json", "is not a directory")):
        result = run(pytester, f"{option}={value}")
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines([f"ERROR: {option}={value}: *{message}*"])


def test_ini_report_path_names_the_ini_key(pytester: pytest.Pytester) -> None:
    write_test(pytester)
    (pytester.path / "adir").mkdir()
    pytester.makeini("[pytest]\nirene_html = adir\n")
    result = run(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: irene_html (ini)=adir: is a directory*"])


@pytest.mark.parametrize("option", ["--irene-json", "--irene-html", "--irene-markdown"])
def test_report_over_a_file_of_another_kind_is_refused_and_the_file_kept(pytester: pytest.Pytester, option: str) -> None:
    """A report option pointed at a test file or a baseline (a typo, a tab completion) would replace it."""
    test_file = write_test(pytester)
    run(pytester, "--irene-save").assert_outcomes(passed=1)
    baseline = pytester.path / ".irene" / "test_a.json"
    kept = {path: path.read_bytes() for path in (test_file, baseline)}
    for path in kept:
        result = run(pytester, f"{option}={path.relative_to(pytester.path)}")
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines([f"ERROR: {option}={path.relative_to(pytester.path)}: exists and is not a "
                                     "pytest-irene * refusing to replace it (remove it or pick another path)"])
    assert {path: path.read_bytes() for path in kept} == kept
    report = pytester.path / "report.out"
    run(pytester, f"{option}=report.out").assert_outcomes(passed=1)
    first = report.read_bytes()
    run(pytester, f"{option}=report.out").assert_outcomes(passed=1)  # an earlier report of its kind is replaced
    assert report.read_bytes()[:200] == first[:200]


def test_two_reports_or_the_compared_run_in_one_file_are_refused(pytester: pytest.Pytester) -> None:
    write_test(pytester)
    run(pytester, "--irene-json=base.json").assert_outcomes(passed=1)
    base = (pytester.path / "base.json").read_bytes()
    for args, message in (
        (("--irene-compare=base.json", "--irene-json=base.json"),
         "ERROR: --irene-json=*base.json: is the run --irene-compare compares with; *give the new run another file"),
        (("--irene-json=r.out", "--irene-markdown=r.out"),
         "ERROR: --irene-markdown=*r.out: is also the file of --irene-json; give each report its own file"),
        (("--irene-json=r.out", "--irene-html=./r.out"),
         "ERROR: --irene-html=*r.out: is also the file of --irene-json; give each report its own file"),
        (("--irene-markdown=r.out", "--junitxml=r.out"),  # pytest's JUnit writer came last and replaced it
         "ERROR: --junitxml=*r.out: is also the file of --irene-markdown; give each report its own file"),
    ):
        result = run(pytester, *args)
        assert result.ret == pytest.ExitCode.USAGE_ERROR, args
        result.stderr.fnmatch_lines([message])
    assert (pytester.path / "base.json").read_bytes() == base
    assert not (pytester.path / "r.out").exists()


@pytest.mark.parametrize("option", ["--irene-json", "--irene-html", "--irene-markdown", "--irene-compare",
                                    "--irene-baselines"])
def test_an_empty_path_option_is_a_usage_error_not_the_working_directory(pytester: pytest.Pytester, option: str) -> None:
    write_test(pytester)
    result = run(pytester, f"{option}=")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {option}: expected a * got an empty value"])


@pytest.mark.parametrize(("option", "name"), [("--irene-json", "r.json"), ("--irene-html", "r.html")])
def test_report_that_fails_at_the_end_is_one_line_and_the_summary_still_prints(
    pytester: pytest.Pytester, option: str, name: str
) -> None:
    # the path is fine at configure time; the test then puts a directory there
    write_test(pytester, extra=f"os.mkdir({name!r})")
    result = run(pytester, f"{option}={name}")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines([f"*{option}: cannot write *{name}: Is a directory*"])
    assert "Traceback" not in result.stdout.str() and "INTERNALERROR" not in result.stdout.str()
    assert "irene energy summary" in result.stdout.str()
    assert no_temp_files(pytester.path)


# -- 2. one corrupt baseline file ---------------------------------------------------------------


def test_one_corrupt_baseline_file_does_not_stop_the_others(pytester: pytest.Pytester) -> None:
    write_test(pytester, "a")
    write_test(pytester, "b")
    corrupt = pytester.path / ".irene" / "test_a.json"
    corrupt.parent.mkdir()
    corrupt.write_text("{broken")
    result = run(pytester, "--irene-save")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    out = result.stdout.str()
    assert "baselines NOT saved: " in out and "test_a.json: corrupt baseline file" in out
    assert "baselines saved: " in out and "test_b.json" in out
    assert "1 not saved, 1 saved" in out  # the counts are true
    assert corrupt.read_text() == "{broken"
    assert "test_b.py::test_b" in json.loads((pytester.path / ".irene" / "test_b.json").read_text())["tests"]


# -- 3. a test file outside the rootdir ---------------------------------------------------------


def test_test_file_outside_the_rootdir_gets_its_own_baseline_file(pytester: pytest.Pytester) -> None:
    root = pytester.path / "root"
    other = pytester.path / "other"
    root.mkdir()
    other.mkdir()
    (root / "pytest.ini").write_text("[pytest]\n")
    (root / "test_in.py").write_text(TEST.format(name="in", extra="pass"))
    (other / "test_out.py").write_text(TEST.format(name="out", extra="pass"))
    os.chdir(root)
    saved = run(pytester, "--irene-save", "test_in.py", "../other/test_out.py")
    saved.assert_outcomes(passed=2)
    assert (root / ".irene" / "test_in.json").is_file()
    assert (root / ".irene" / "_outside" / "other_test_out.json").is_file()
    again = run(pytester, "--irene-strict", "test_in.py", "../other/test_out.py")
    again.assert_outcomes(passed=2)  # both compared against what was saved


OUTSIDE = '''
import os
import torch


def test_x(irene):
    width = int(os.environ.get("WIDTH", "16")) if {costlier} else 16
    irene(torch.nn.Sequential(torch.nn.Linear(16, width), torch.nn.Linear(width, 16)), torch.randn(2, 4, 16))
'''


def test_two_files_outside_the_rootdir_with_one_test_name_keep_their_own_calls(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pytest names both ``::test_x``: the second file's call replaced the first's record, so a
    regression in the first failed its test but left the summary and the run file."""
    root = pytester.path / "root"
    root.mkdir()
    (root / "pytest.ini").write_text("[pytest]\n")
    for name, costlier in (("one", True), ("two", False)):
        (pytester.path / name).mkdir()
        (pytester.path / name / "test_o.py").write_text(OUTSIDE.format(costlier=costlier))
    monkeypatch.chdir(root)
    paths = ("-c", "pytest.ini", "--rootdir=.", "--import-mode=importlib", "../one/test_o.py", "../two/test_o.py")
    run(pytester, "--irene-save", *paths).assert_outcomes(passed=2)
    monkeypatch.setenv("WIDTH", "4096")  # a tiny layer's energy is mostly its per-call floor
    result = run(pytester, "--irene-json=run.json", "--irene-min-delta=0J", "--irene-tolerance=1%", *paths)
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(["irene: 2 wrapped call(s), 1 fail, 1 pass*"])
    records = json.loads((root / "run.json").read_text())["records"]
    assert sorted(r["nodeid"] for r in records) == ["../one/test_o.py::test_x", "../two/test_o.py::test_x"]


# -- 5. a bad --irene-profile -------------------------------------------------------------------


def _model_file(pytester: pytest.Pytester, mutate) -> Path:
    from pytest_irene.engine.predict.profiles import resolve_profile

    doc = json.loads(resolve_profile("irene-pc1").read_text())
    mutate(doc)
    path = pytester.path / "bad-model.json"
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.path / "missing.json", "unknown energy model*"),
        (lambda p: p.mkdir("amodel.json"), "*not a file*"),
        (lambda p: p.makefile(".json", notamodel='{"hello": 1}'), "*field 'format': expected 'irene-model'*"),
        (lambda p: _model_file(p, lambda d: d.update(schema_version=99)), "*field 'schema_version'*got 99*"),
        (
            lambda p: _model_file(p, lambda d: d["feature_sets"]["model"].update(nan=float("nan"))),
            "*NaN or infinite number*",
        ),
    ],
    ids=["missing", "directory", "not-a-model", "future-schema", "nan"],
)
def test_bad_profile_is_a_usage_error_at_configure_time(pytester: pytest.Pytester, make, message: str) -> None:
    write_test(pytester)
    path = make(pytester)
    # --collect-only used to exit 0 and a run to fail every test one by one
    for args in (["--collect-only"], []) if "missing" in str(path) else (["--collect-only"],):
        result = run(pytester, f"--irene-profile={path}", *args)
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines([f"ERROR: --irene-profile={path}: {message}"])


def test_features_all_on_a_mismatched_host_is_a_usage_error(pytester: pytest.Pytester) -> None:
    write_test(pytester)
    result = run(pytester, "--irene-features=all", "--collect-only")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --irene-features=all: this host differs from the calibration rig*"])


# -- 6. --irene-baselines=<a regular file> ------------------------------------------------------


def test_baselines_option_naming_a_file_is_a_usage_error(pytester: pytest.Pytester) -> None:
    write_test(pytester)
    (pytester.path / "notadir").write_text("keep me")
    for args in (["--irene-baselines=notadir"], ["--irene-baselines=notadir/sub", "--irene-save"]):
        result = run(pytester, *args)
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines(["ERROR: --irene-baselines=notadir*regular file*"])
        assert "saved" not in result.stdout.str()
    assert (pytester.path / "notadir").read_text() == "keep me"


def test_a_baselines_directory_linked_to_nothing_is_a_usage_error(pytester: pytest.Pytester) -> None:
    """A dangling ``.irene`` link (a shared directory not mounted) failed the save with a bare "File exists"."""
    write_test(pytester)
    (pytester.path / ".irene").symlink_to(pytester.path / "not-mounted")
    result = run(pytester, "--irene-save")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --irene-baselines=*.irene: *.irene is a symbolic link to *not-mounted, which "
                                 "does not exist (or loops); create its target or remove the link"])


def test_a_refused_save_is_never_counted_as_saved(pytester: pytest.Pytester) -> None:
    # the directory is fine at configure time; the test puts a file where the baseline file goes
    write_test(pytester, extra="os.makedirs('.irene/test_a.json/x')")
    result = run(pytester, "--irene-save")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    out = result.stdout.str()
    assert "baselines NOT saved: " in out and "1 not saved" in out
    assert "1 saved" not in out and "baselines saved" not in out


# -- 10. non-physical energies ------------------------------------------------------------------


def test_negative_baseline_energy_is_rejected_naming_the_file_and_field(pytester: pytest.Pytester) -> None:
    write_test(pytester)
    run(pytester, "--irene-save").assert_outcomes(passed=1)
    path = pytester.path / ".irene" / "test_a.json"
    doc = json.loads(path.read_text())
    doc["tests"]["test_a.py::test_a"]["default"]["root"]["energy_j"] = -5.0
    path.write_text(json.dumps(doc))
    result = run(pytester)
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "test_a.json: tests['test_a.py::test_a']['default'].root.energy_j: expected a positive number" in out
    assert "-100" not in out


# -- 11. smaller gaps -----------------------------------------------------------------------------


def test_save_cleans_stale_temp_files_keeps_unknown_fields_and_writes_through_symlinks(
    pytester: pytest.Pytester,
) -> None:
    write_test(pytester)
    real = pytester.path / "elsewhere" / "test_a.json"
    real.parent.mkdir()
    run(pytester, f"--irene-baselines={real.parent}", "--irene-save").assert_outcomes(passed=1)
    doc = json.loads(real.read_text())
    doc["reviewed_by"] = "ana"
    doc["tests"]["test_a.py::test_a"]["default"]["note"] = "approved 2026-11"
    real.write_text(json.dumps(doc))
    link_dir = pytester.path / ".irene"
    link_dir.mkdir()
    (link_dir / "test_a.json").symlink_to(real)
    stale_at_target = real.parent / ".test_a.json.k1ll3d.tmp"
    stale_at_target.write_text("half")
    write_test(pytester, extra="torch.nn.Linear(1, 1)")  # same model: an unchanged entry is still re-merged
    run(pytester, "--irene-save").assert_outcomes(passed=1)
    assert (link_dir / "test_a.json").is_symlink()
    kept = json.loads(real.read_text())
    assert kept["reviewed_by"] == "ana"
    assert kept["tests"]["test_a.py::test_a"]["default"]["note"] == "approved 2026-11"
    assert not stale_at_target.exists()


def test_bad_bool_ini_value_names_the_key(pytester: pytest.Pytester) -> None:
    write_test(pytester)
    pytester.makeini("[pytest]\nirene_save = maybe\n")
    result = run(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: irene_save (ini): expected true or false*'maybe'*"])



@pytest.mark.parametrize("error", [ValueError, pytest.UsageError], ids=["pytest<9.2", "pytest>=9.2"])
def test_a_bad_bool_ini_value_names_the_key_whatever_pytest_raises(error: type[Exception]) -> None:
    """pytest 9.2 raises ``pytest.UsageError`` for an unreadable bool ini value where 9.0 raised
    ``ValueError``; missing it printed only pytest's ``invalid truth value 'maybe'``."""
    from pytest_irene.errors import UsageError
    from pytest_irene.plugin.options import get_raw

    class Config:
        def getoption(self, name: str, default: object = None) -> object:
            return None

        def getini(self, name: str) -> object:
            raise error("invalid truth value 'maybe'")

    with pytest.raises(UsageError, match=r"irene_save \(ini\): expected true or false.*'maybe'"):
        get_raw(Config(), "irene-save")  # type: ignore[arg-type]


def test_meter_without_calibrate_warns(pytester: pytest.Pytester) -> None:
    write_test(pytester)
    result = run(pytester, "--irene-meter=emonpi:/dev/ttyAMA0", "--collect-only", "-q")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*PytestConfigWarning: --irene-meter=emonpi:/dev/ttyAMA0 is ignored without --irene-calibrate*"])
