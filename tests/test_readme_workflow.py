"""The README's GitHub Actions workflow, run step by step here.

GitHub cannot be reached from CI, so the workflow's own commands are taken from the
README and executed in order as the workflow would on GitHub: the run on main, the
artifact hand-over (a copy), the gate of a pull request that makes a module costlier,
the comment's comparison, and a pull request before main has any energy run. A
renamed option, a changed exit status or a step that reads ``base/`` without checking
it exists fails here instead of in a user's first pull request.

The rest of the README and ARCHITECTURE.md is held to the code too: every ``--irene-*``
option and ``irene`` subcommand named exists and every one is documented, the README's
``irene`` commands parse, the files the layout tables name exist, and the accuracy table
quotes ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path
from typing import Any

import pytest

from inner import run
from test_plugin import write_tiny

yaml = pytest.importorskip("yaml")

README = Path(__file__).resolve().parents[1] / "README.md"
GUARD = "steps.base.outputs.run-id"


def workflow() -> dict[str, Any]:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("### Energy review in CI") :]
    return yaml.safe_load(re.search(r"```yaml\n(.*?)```", section, re.S).group(1))


def steps() -> list[dict[str, Any]]:
    return workflow()["jobs"]["energy"]["steps"]


def command(tool: str, when: str, *, base: bool | None = None) -> list[str]:
    """The argv after ``tool`` (``pytest`` or ``irene``) of the one step that runs it on
    ``when`` (``push`` or ``pull_request``), with (``base=True``) or without main's run file."""
    found = []
    for step in steps():
        cond = str(step.get("if", ""))
        line = str(step.get("run", "")).strip()
        if not line.startswith(tool + " ") or f"github.event_name == '{when}'" not in cond:
            continue
        if base is not None and (f"{GUARD} != ''" in cond) != base:
            continue
        found.append(shlex.split(line.split(" > ")[0])[1:])
    assert len(found) == 1, (when, base, found)
    return found[0]


def test_the_workflow_uses_standard_actions_and_guards_every_read_of_main_s_run() -> None:
    wf = workflow()
    assert wf["permissions"]["pull-requests"] == "write" and wf["permissions"]["actions"] == "read"
    for step in steps():
        if "uses" in step:
            assert re.fullmatch(r"actions/[a-z-]+@v\d+", step["uses"]), step["uses"]
        reads_base = "base/" in str(step.get("run", "")) or step.get("with", {}).get("path") == "base"
        posts = "uses" in step and "github-script" in step["uses"]
        if reads_base or posts:  # the first pull request has no base run: these must not run then
            assert f"{GUARD} != ''" in str(step["if"]), step
    (find,) = [s for s in steps() if s.get("id") == "base"]
    assert "// empty" in find["run"]  # no run found: an empty output, not the string "null"


def test_the_workflow_s_commands_gate_a_regression_and_write_the_comment(
    pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    from pytest_irene.cli import main

    write_tiny(pytester, width=64)
    run(pytester, *command("pytest", "push")).assert_outcomes(passed=1)  # main's energy run
    (pytester.path / "base").mkdir()
    shutil.copy(pytester.path / "energy-run.json", pytester.path / "base" / "energy-run.json")  # upload/download

    write_tiny(pytester, width=512)  # the pull request makes the block costlier
    result = run(pytester, *command("pytest", "pull_request", base=True))
    result.assert_outcomes(failed=1)
    assert "block (Sequential)" in result.stdout.str()  # the module that got costlier is named
    assert (pytester.path / "junit.xml").is_file() and (pytester.path / "energy-run.json").is_file()

    capsys.readouterr()
    assert main(command("irene", "pull_request", base=True)) == 1  # a regression: the step's shell accepts 1, not 2
    (step,) = [s for s in steps() if str(s.get("run", "")).startswith("irene compare")]
    assert step["run"].strip().endswith("> energy.md || [ $? -eq 1 ]")
    comment = capsys.readouterr().out
    assert "test_tiny.py::test_tiny" in comment and "`block`" in comment and "❌ **regression**" in comment


def test_the_accepted_increase_label_swaps_the_gate_for_the_committed_baselines() -> None:
    """With the label, exactly one pytest step runs, and it does not compare with main's run."""
    label = "contains(github.event.pull_request.labels.*.name, 'energy-increase-accepted')"
    gates = [s for s in steps() if str(s.get("run", "")).startswith("pytest ") and "pull_request" in str(s["if"])]
    assert len(gates) == 2
    against_main, own = gates
    assert f"!{label}" in against_main["if"] and "--irene-compare=base/" in against_main["run"]
    assert f"|| {label}" in " ".join(own["if"].split()) and "--irene-compare" not in own["run"]
    assert "labeled" in workflow()[True]["pull_request"]["types"]  # YAML 1.1 reads the key "on" as True


def test_a_pull_request_before_main_has_an_energy_run(pytester: pytest.Pytester) -> None:
    write_tiny(pytester, width=64)
    first = command("pytest", "pull_request", base=False)
    assert not any("base/" in arg for arg in first)
    run(pytester, *first).assert_outcomes(passed=1)  # no baselines yet: reported as new, not failed
    assert (pytester.path / "energy-run.json").is_file()


# --- The rest of the README and ARCHITECTURE.md, kept honest -------------------------------

ROOT = README.parent
PACKAGE = ROOT / "pytest_irene"
OPTION = re.compile(r"--irene-[a-z]+(?:-[a-z]+)*")


def readme() -> str:
    return README.read_text(encoding="utf-8")


def named_options(text: str) -> set[str]:
    """Every ``--irene-*`` option the text names; ``--irene-calibrate-{a,b}`` names two."""
    names = set(OPTION.findall(text))
    for stem, words in re.findall(r"(--irene-[a-z-]+?)-\{([a-z,-]+)\}", text):
        names |= {f"{stem}-{word}" for word in words.split(",")}
    return names


def test_every_irene_option_the_readme_names_exists_and_every_one_is_documented(pytester: pytest.Pytester) -> None:
    help_text = run(pytester, "--help").stdout.str()
    real = set(re.findall(r"^\s+(--irene-[a-z-]+)", help_text, re.M))
    assert "--irene-budget" in real and "--irene-html" in real and "--irene-calibrate" in real
    named = named_options(readme())
    assert not named - real, f"the README names options that do not exist: {sorted(named - real)}"
    assert not real - named, f"options the README does not document: {sorted(real - named)}"
    # the Options table's rows can be set in the ini file as irene_<name>, as the README says
    ini = set(re.findall(r"^\s+(irene_[a-z_]+) \(", help_text, re.M))
    table = readme().split("### Options", 1)[1].split("\n\n`@pytest.mark.irene", 1)[0]
    rows = set(re.findall(r"^\| `(--irene-[a-z-]+)", table, re.M))
    assert len(rows) >= 15
    missing = {o for o in rows if "irene_" + o[2:].removeprefix("irene-").replace("-", "_") not in ini}
    assert not missing, f"table options with no ini key: {sorted(missing)}"


def subcommands() -> dict[str, Any]:
    import argparse

    from pytest_irene.cli import build_parser

    (sub,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def console_lines(text: str) -> list[str]:
    return [line.strip() for block in re.findall(r"```console\n(.*?)```", text, re.S) for line in block.splitlines()]


def test_every_irene_command_the_readme_shows_parses_and_every_subcommand_is_documented() -> None:
    commands = subcommands()
    text = readme()
    shown = [line for line in console_lines(text) if line.startswith("irene ")]
    assert len(shown) >= 8
    for line in shown:  # a whole command: it parses with this version's options
        argv = shlex.split(line, comments=True)[1:]
        try:
            commands[argv[0]].parse_args(argv[1:])
        except SystemExit:
            pytest.fail(f"the README's command does not parse: {line}")
        known = {o for action in commands[argv[0]]._actions for o in action.option_strings}
        spelled = {word.split("=")[0] for word in argv[1:] if word.startswith("--")}
        assert spelled <= known, f"not spelled as irene {argv[0]} spells it (argparse takes prefixes): {line}"
    spans = [" ".join(s.split()) for s in re.findall(r"`(irene [^`]+)`", text)]
    for span in spans:  # inline: the subcommand exists and has every option named after it
        words = span.split()
        assert words[1] in commands, span
        known = {o for action in commands[words[1]]._actions for o in action.option_strings}
        for word in words[2:]:
            option = word.strip("[]").split("=")[0]
            if option.startswith("--"):
                assert option in known, f"{option} is not an option of irene {words[1]}: {span}"
    documented = {line.split()[1] for line in shown} | {span.split()[1] for span in spans}
    assert set(commands) <= documented, f"subcommands the README never shows: {sorted(set(commands) - documented)}"


def cells(line: str) -> list[str]:
    """A Markdown table row's cells, without bold and without RESULTS.md's target marks."""
    return [re.sub(r"\*\*| [✓✗]", "", c).strip() for c in line.strip().strip("|").split("|")]


def section_rows(text: str, heading: str) -> list[list[str]]:
    body = text.split(heading, 1)[1]
    body = re.split(r"^#", body, maxsplit=1, flags=re.M)[0]
    return [cells(line) for line in body.splitlines() if line.startswith("|") and not line.startswith("|---")]


def test_the_readme_s_accuracy_table_matches_benchmarks_results() -> None:
    results = (ROOT / "benchmarks" / "RESULTS.md").read_text(encoding="utf-8")
    ablation = {
        (r[0].removesuffix(" (default)"), r[1]): r[2:5] for r in section_rows(results, "### Ablation, leave-one-model-out")
    }
    transfer = {(r[1], r[2]): r[4:7] for r in section_rows(results, "## Generalisation: a new machine") if r[0] == "2"}
    width = {r[0]: r[1:4] for r in section_rows(results, "### New width: train on the six paper models")}
    expected = {
        "glue": (ablation[("glue", "model")], ablation[("glue", "all")]),
        "end2end": (ablation[("end2end", "model")], ablation[("end2end", "all")]),
        "stepwise": (ablation[("stepwise", "model")], ablation[("stepwise", "all")]),
        "predictedsum": (ablation[("predictedsum", "model")], ablation[("predictedsum", "all")]),
        "unstructured": (ablation[("unstructured", "model")], ablation[("unstructured", "all")]),
        "transfer": (transfer[("model", "transfer from irene-pc1")], transfer[("all", "transfer from irene-pc1")]),
        "new width": (width["model"], width["all"]),
    }
    table = section_rows(readme(), "| strategy | model features | all features |")
    seen = set()
    for row in table:
        key = next(k for k in expected if row[0].lower().startswith(k))
        seen.add(key)
        got = ([v.strip() for v in row[1].split("/")], [v.strip() for v in row[2].split("/")])
        assert got == tuple(map(list, expected[key])), (row, expected[key])
    assert seen == set(expected)
    # the prose quotes the prior used as it is, rounded to one decimal
    as_is = [float(v) for v in transfer[("model", "irene-pc1 as it is")] + transfer[("all", "irene-pc1 as it is")]]
    quoted = re.search(r"used there as it is: ([\d. /]+) and ([\d. /]+)\)", readme())
    assert quoted, "the README no longer quotes the prior as it is"
    numbers = [float(v) for part in quoted.groups() for v in part.split("/")]
    assert all(abs(a - b) <= 0.05 + 1e-9 for a, b in zip(numbers, as_is, strict=True)), (numbers, as_is)


def backticked_files(text: str) -> list[str]:
    """File and folder names in backticks (``tracing.py``, ``runtime/``, ``rig/calibration_{plan,idle}.py``),
    braces expanded, ``:symbol`` kept."""
    names = []
    for name in re.findall(r"`([\w./*{},-]+(?:\.py|/)(?::\w+)?)`", text):
        brace = re.search(r"\{([\w,]+)\}", name)
        names += [name[: brace.start()] + w + name[brace.end() :] for w in brace.group(1).split(",")] if brace else [name]
    return names


def assert_exists(base: Path, name: str) -> None:
    path, _, symbol = name.partition(":")
    found = [p for p in (base / path, *base.rglob(path.rstrip("/"))) if p.exists()]
    assert found, f"{name} not found under {base.relative_to(ROOT)}"
    if symbol:
        assert re.search(rf"^(?:def|class) {symbol}\b", found[0].read_text(encoding="utf-8"), re.M), name


def test_the_layout_tables_and_where_a_change_goes_name_files_that_exist() -> None:
    layout = readme().split("## Layout", 1)[1]
    rows = [cells(line) for line in layout.splitlines() if line.startswith("| `")]
    for path, what in ((r[0].strip("`"), r[1]) for r in rows):
        assert (ROOT / path).exists(), path
        for name in backticked_files(what) if (ROOT / path).is_dir() else ():
            assert_exists(ROOT / path, name)
    packages = {p.parent.relative_to(PACKAGE).as_posix() for p in PACKAGE.glob("*/__init__.py")} | {"engine/predict"}
    listed = {r[0].strip("`").removeprefix("pytest_irene/").rstrip("/") for r in rows}
    assert packages <= listed, f"packages the README's layout leaves out: {sorted(packages - listed)}"

    arch = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    table = arch.split("## Packages", 1)[1].split("## Where a change goes", 1)[0]
    arch_rows = [cells(line) for line in table.splitlines() if line.startswith("| ") and "| one job |" not in line]
    for package, what in ((r[0].strip("`"), r[1]) for r in arch_rows):
        base = PACKAGE if package == "top level" else PACKAGE / package
        assert base.is_dir(), package
        for name in backticked_files(what):
            assert_exists(base, name)
    arch_listed = {r[0].strip("`").rstrip("/") for r in arch_rows}
    assert packages <= arch_listed, f"packages ARCHITECTURE.md leaves out: {sorted(packages - arch_listed)}"
    top_level = {p.name for p in PACKAGE.glob("*.py")} - {"__init__.py"}
    (top,) = [r[1] for r in arch_rows if r[0] == "top level"]
    assert top_level <= set(re.findall(r"`(\w+\.py)`", top)), "top-level modules ARCHITECTURE.md leaves out"
    for name in backticked_files(arch.split("## Where a change goes", 1)[1]):
        if "<" not in name:
            assert_exists(PACKAGE, name)
