"""CI glue: GitHub Actions step summary and annotations, ``--irene-markdown``, JUnit XML properties.

A second plugin object, registered by the main plugin when pytest-irene is on
(no entry point of its own). It only consumes what the gate hands over: the
records of each call (``pytest_irene_tree_predicted`` on the process that ran
the test, ``pytest_irene_session_records`` on the controller), so the gate
knows nothing about CI and CI output is the same under xdist.

- JUnit: each call adds ``irene.<label>.predicted_j``, ``.change`` and
  ``.profile`` (and ``.status``) to the test's ``user_properties``, which
  ``--junitxml`` writes as ``<property>`` elements.
- ``GITHUB_STEP_SUMMARY`` set: the Markdown summary is appended to that file,
  kept within GitHub's 1 MiB per step.
- ``--irene-markdown=PATH``: the same summary, within a comment's 65536 characters.
- ``GITHUB_ACTIONS=true``: one ``::error file=...,line=...::`` annotation per
  failing call, so the pull request shows it on the test's line.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_irene.compare.records import CallRecord
from pytest_irene.plugin.reports import summary_notes

if TYPE_CHECKING:
    from pytest_irene.plugin.session import IreneSession


#: Lines of one annotation's message: GitHub shows it in a small box beside the test's line.
ANNOTATION_LINES = 10


def junit_properties(record: CallRecord) -> list[tuple[str, str]]:
    """The JUnit ``<property>`` name/value pairs of one call."""
    from pytest_irene.report.terminal import call_status, root_change

    change, status = root_change(record), call_status(record)
    prefix = f"irene.{record.label}"
    return [
        (f"{prefix}.predicted_j", f"{record.tree.total_j:.6g}"),
        (f"{prefix}.change", "" if change is None else f"{change:+.4f}"),
        (f"{prefix}.profile", record.profile),
        (f"{prefix}.status", status),
    ]


def _escape_data(text: str) -> str:
    """A workflow command's message: ``%``, CR and LF escaped as the Actions runner expects."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    """A workflow command's property value: additionally ``:`` and ``,`` escaped."""
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def workspace_path(test_file: str, rootdir: Path) -> str:
    """``test_file`` (relative to pytest's rootdir) relative to the repository GitHub checked
    out (``GITHUB_WORKSPACE``), where annotations are placed: a suite with its own
    ``pytest.ini`` in a subdirectory has another rootdir than the repository."""
    workspace = os.environ.get("GITHUB_WORKSPACE")
    if not workspace:
        return test_file
    try:
        return (rootdir / test_file).resolve().relative_to(Path(workspace).resolve()).as_posix()
    except ValueError:  # outside the checkout: the rootdir-relative path is the best there is
        return test_file


def annotation(record: CallRecord, rootdir: Path | None = None) -> str:
    """The ``::error file=...,line=...,title=...::message`` line for one failing call."""
    from pytest_irene.report.terminal import failing_module_lines

    props = []
    if record.test_file:
        path = workspace_path(record.test_file, rootdir) if rootdir is not None else record.test_file
        props.append(f"file={_escape_property(path)}")
        if record.test_line is not None:
            props.append(f"line={record.test_line}")
    head = f"{record.nodeid} [{record.label}]"
    props.append(f"title={_escape_property(f'irene energy gate: {head}')}")
    # the title names the call: each line without it, and a widened 12-layer model's 36 culprits cut to a few
    lines = [line.removeprefix(f"{head}: ") for line in failing_module_lines([record])]
    if len(lines) > ANNOTATION_LINES:
        lines = lines[: ANNOTATION_LINES - 1] + [f"... and {len(lines) - ANNOTATION_LINES + 1} more line(s) in the job log"]
    message = "\n".join(lines) or f"{head} failed the energy gate"
    return f"::error {','.join(props)}::{_escape_data(message)}"



def _shown(path: Path, config: pytest.Config) -> str:
    """``path`` as a reader of the PR comment knows it: relative to where pytest ran (the
    checkout on CI), never the runner's absolute path; outside it, the file name."""
    try:
        return path.relative_to(config.invocation_params.dir).as_posix()
    except ValueError:
        return path.name

class CiReporter:
    """Writes the CI outputs of one session; registered as the plugin ``irene_ci``."""

    def __init__(self, manager: IreneSession):
        self.manager = manager
        self.records: list[CallRecord] = []
        self.notes: list[str] = []

    @pytest.hookimpl
    def pytest_irene_tree_predicted(self, item: pytest.Item, record: CallRecord) -> None:
        item.user_properties.extend(junit_properties(record))

    @pytest.hookimpl
    def pytest_irene_session_records(self, config: pytest.Config, records: list[CallRecord]) -> None:
        from pytest_irene.report.markdown import COMMENT_LIMIT_CHARS, STEP_SUMMARY_LIMIT_BYTES, session_markdown

        self.records = list(records)
        notes = summary_notes(self.manager)
        json_path = self.manager.settings.json_path
        where = (f"the run file {_shown(json_path, config)} (--irene-json)" if json_path is not None
                 else "the job log (the terminal summary)")
        path = self.manager.settings.markdown_path
        if path is not None:  # written even with no wrapped call: an older file must not be posted
            from pytest_irene.outputs import OutputError, write_output

            try:
                write_output(path, session_markdown(records, notes, limit=COMMENT_LIMIT_CHARS, where=where), "--irene-markdown")
            except OutputError as exc:  # the other reports are still written; the run fails
                self.manager.report_errors.append(str(exc))
                self.notes.append(f"irene: {exc}")
            else:
                self.notes.append(f"irene: Markdown summary written to {path}")
        if not records:
            return
        summary = os.environ.get("GITHUB_STEP_SUMMARY")
        if summary:
            target = Path(summary)
            try:
                used = target.stat().st_size if target.exists() else 0
                room = max(STEP_SUMMARY_LIMIT_BYTES - used, 0)
                text = session_markdown(records, notes, limit=room, unit="bytes", where=where)
                if not text:  # over GitHub's limit GitHub drops the whole step summary: add nothing
                    self.notes.append(
                        f"irene: GITHUB_STEP_SUMMARY already holds {used} of GitHub's {STEP_SUMMARY_LIMIT_BYTES} bytes "
                        f"for this step: the energy summary was not added; the full report is in {where}"
                    )
                    return
                with target.open("a", encoding="utf-8") as handle:
                    handle.write(text)
            except OSError as exc:
                self.notes.append(f"irene: GITHUB_STEP_SUMMARY not written: {exc}")

    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
        for note in self.notes:
            terminalreporter.write_line(note)
        if os.environ.get("GITHUB_ACTIONS") == "true":
            for record in self.records:
                if record.failed:
                    terminalreporter.write_line(annotation(record, config.rootpath))
