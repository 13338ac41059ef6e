"""The run's state: one manager object per pytest session, like pytest-benchmark's.

``IreneSession`` owns everything that lives for the duration of a run: the
parsed settings, the feature mode decided for each profile (energy models are
loaded lazily, on the first wrapped call that needs one, so ``--collect-only``
and suites without energy tests load nothing), the baseline store, the call
records and the baselines waiting to be saved. Tracing and predicting a call go
through :mod:`pytest_irene.pipeline`. ``plugin.py`` only forwards pytest's hooks here.

Under pytest-xdist each worker predicts its own tests and hands its records
and baseline entries to the controller on each test's teardown report (what is
left at the end goes through ``workeroutput``); only the controller writes
baselines and reports, so nothing races, and a worker that crashes later (an
``os._exit`` in a test) loses none of the calls of the tests it already ran.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_irene.compare.baselines import BaselineEntry, energy_model_version, entry_from_dict, entry_from_tree
from pytest_irene.compare.baseline_store import BaselineStore
from pytest_irene.compare.comparison import Comparison
from pytest_irene.compare.records import CallRecord, record_from_dict, record_to_dict, sort_records
from pytest_irene.compare.runs import RunSide, load_side, machine_differences, machine_mismatch, not_compared
from pytest_irene.errors import ModelFileError, UsageError
from pytest_irene.units import parse_percent
from pytest_irene.compare.gate import check_budget, compare
from pytest_irene.engine.feature_sets import ALL, MODEL
from pytest_irene.plugin.header import describe_hardware
from pytest_irene.compare.stale import StaleBaseline
from pytest_irene.plugin.outcome import apply_gate
from pytest_irene.plugin.marks import IreneMark, read_mark
from pytest_irene.plugin.stale import StaleTracker
from pytest_irene.plugin.options import Settings

if TYPE_CHECKING:
    from pytest_irene.engine.predict.energy_model import EnergyModel
    from pytest_irene.engine.tree import EnergyTree
    from pytest_irene.pipeline import FeatureMode

WORKEROUTPUT_KEY = "pytest_irene"
#: The attribute of a worker's teardown report that carries the test's records to the controller.
WORKER_CALLS_ATTR = "irene_worker_calls"


# -- helpers --------------------------------------------------------------------------------


def baseline_nodeid(item: pytest.Item) -> str:
    """The node id a test's baselines are stored under: pytest's own, except for a test
    file outside the rootdir, whose node id has no module part (``::test_x``); its
    path relative to the rootdir (``../other/test_x.py::test_x``) is used instead, so it
    gets a stable file of its own under ``_outside/``. It keys the session's records and marks
    too (and is the records' node id): two such files' ``::test_x`` were one test, whose second
    file's calls replaced the first's as a rerun's would."""
    module, sep, rest = item.nodeid.partition("::")
    if module or not sep:
        return item.nodeid
    import os

    return f"{os.path.relpath(item.path, item.config.rootpath)}::{rest}"


class IreneSession:
    """Owns one run: settings, energy models, baselines, records; forwards to reporters."""

    def __init__(self, config: pytest.Config, settings: Settings):
        self.config = config
        self.settings = settings
        self.store = BaselineStore(settings.baseline_dir)
        self.stale_tracker = StaleTracker()
        self.stale: list[StaleBaseline] = []
        """Baselines of tests that no longer exist (pruned with ``--irene-save --irene-prune``)."""
        self.pruned_files: list[Path] = []
        self.base_run: RunSide | None = None
        """``--irene-compare``: the run the calls are gated against instead of :attr:`store`."""
        if settings.compare_path is not None:
            self.base_run = load_side(settings.compare_path, "--irene-compare")
        self.records: list[CallRecord] = []
        """Every record of the session (on the controller: merged from all workers)."""
        self.item_records: dict[str, list[CallRecord]] = {}
        self.repeated_calls: list[tuple[str, str, bool]] = []
        """Controller under ``--dist each``: (node id, label, same energy) of calls another worker made first."""
        self.to_save: dict[tuple[str, str], BaselineEntry] = {}
        self.save_errors: list[str] = []
        self.report_errors: list[str] = []
        """``--irene-json`` files that could not be written (one line each; the run fails)."""
        self.saved_files: list[Path] = []
        self._modes: dict[tuple[str, str | None], FeatureMode] = {}
        self._worker_modes: dict[tuple[str, str | None], dict[str, Any]] = {}
        """Controller under xdist: the feature modes the workers decided, per (profile, device)."""
        self._marks: dict[str, IreneMark] = {}
        self._formulas_registered = False
        self._formulas_before = _user_formulas()
        self._host: dict[str, Any] | None = None
        self._item_order: dict[str, int] | None = None
        self._versions: dict[str, str] = {}
        self._handed_records = 0
        """xdist worker: how many of :attr:`records` were handed to the controller already."""
        self._handed_save: set[tuple[str, str]] = set()
        """xdist worker: the keys of :attr:`to_save` handed to the controller already."""
        self._restarted: list[tuple[str, str]] = []
        """xdist worker: (node id, baseline key) of tests rerun after their calls were handed over."""
        self._origin: dict[tuple[str, str], str | None] = {}
        """Controller: the worker each kept (node id, label) record and (key, label) entry came from."""
        self._judged: dict[str, int] = {}
        """How many of a test's records a call-phase report already judged (a subtest's: see :meth:`update_report`)."""

    @property
    def is_worker(self) -> bool:
        return hasattr(self.config, "workerinput")

    # -- energy models and feature mode -----------------------------------------------------

    def energy_model(self, profile: str) -> EnergyModel:
        """The energy model of ``profile`` (:meth:`EnergyModel.load` keeps the one cache of them)."""
        from pytest_irene.engine.predict.energy_model import EnergyModel

        return EnergyModel.load(profile)

    def energy_model_version(self, profile: str) -> str:
        """Version (file hash) of the energy model behind ``profile``, computed once."""
        if profile not in self._versions:
            from pytest_irene.engine.predict.profiles import resolve_profile

            self._versions[profile] = energy_model_version(resolve_profile(profile))
        return self._versions[profile]

    def host_fingerprint(self) -> dict[str, Any]:
        """This machine's fingerprint: the ``pytest_irene_host_fingerprint`` hook, else the runtime's."""
        if self._host is None:
            fp = self.config.hook.pytest_irene_host_fingerprint(config=self.config)
            if fp is None:
                from pytest_irene.rig.runtime import host_fingerprint

                fp = host_fingerprint()
            elif not isinstance(fp, dict):
                raise UsageError(
                    f"pytest_irene_host_fingerprint: expected a dict such as {{'cpu_model': ..., 'gpus': [...]}} "
                    f"or None, got {type(fp).__name__} {fp!r:.60}"
                )
            self._host = dict(fp)
        return self._host

    def feature_mode(self, profile: str, device: str | None = None) -> FeatureMode:
        """The feature set used with ``profile`` for a model on ``device``, and why; decided once for each."""
        key = (profile, device)
        if key not in self._modes:
            from pytest_irene.pipeline import choose_features

            wanted = self.settings.features
            model = self.energy_model(profile)
            host = self.host_fingerprint() if wanted != MODEL else None
            self._modes[key] = choose_features(
                wanted, dict(model.hardware or {}), host=host, available=model.feature_sets, device=device
            )
        return self._modes[key]

    def feature_modes(self) -> dict[str, dict[str, Any]]:
        """Per profile, the feature mode decided for its first model device (each record has its own)."""
        decided = {
            key: {"features": mode.features, "reason": mode.message, "code": mode.code, "device": key[1]}
            for key, mode in self._modes.items()
        }
        decided.update(self._worker_modes)  # under xdist the workers decided them
        out: dict[str, dict[str, Any]] = {}
        for (profile, _), mode in sorted(decided.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
            out.setdefault(profile, mode)
        return out

    def close(self) -> None:
        """End of the run (``pytest_unconfigure``): user formulas registered during it are dropped."""
        features = sys.modules.get(_FEATURES_MODULE)
        if features is not None:
            features.restore_user_formulas(self._formulas_before)

    def machine_mismatch(self, features: str) -> str:
        """``--irene-compare``: why a call with ``features`` cannot be compared with a run from another machine."""
        if self.base_run is None or features != "all":
            return ""
        return machine_mismatch(machine_differences(self.base_run.host, self.host_fingerprint()), features)

    def _register_formulas(self) -> None:
        if not self._formulas_registered:
            self._formulas_registered = True
            self.config.hook.pytest_irene_register_formulas(config=self.config)

    # -- per test -----------------------------------------------------------------------------

    def _item_index(self, item: pytest.Item) -> int:
        if self._item_order is None:
            self._item_order = {baseline_nodeid(it): i for i, it in enumerate(item.session.items)}
        return self._item_order.get(baseline_nodeid(item), len(self._item_order))

    def mark(self, item: pytest.Item) -> IreneMark:
        key = baseline_nodeid(item)  # two test files outside the rootdir share pytest's "::test_x"
        if key not in self._marks:
            self._marks[key] = read_mark(item)
        return self._marks[key]

    def test_settings(self, item: pytest.Item) -> tuple[str, float, float | None]:
        """(profile, tolerance, budget in J) for one test: marker over options, then the hooks.

        A profile the marker or the hook chose that does not load is a :class:`UsageError` naming
        which of them and the test (``--irene-profile`` was checked at configure time)."""
        mark = self.mark(item)
        profile = mark.profile or self.settings.profile
        source = f"@pytest.mark.irene(profile=) on {item.nodeid}" if mark.profile else ""
        chosen = item.config.hook.pytest_irene_select_profile(item=item, default=profile)
        if chosen is not None:
            profile, source = str(chosen), f"pytest_irene_select_profile for {item.nodeid}"
        if source:
            try:
                self.energy_model(profile)
            except ModelFileError as exc:
                raise UsageError(f"{source}: {exc}") from None
        tolerance = mark.tolerance if mark.tolerance is not None else self.settings.tolerance
        chosen_tol = item.config.hook.pytest_irene_select_tolerance(item=item, default=tolerance)
        if chosen_tol is not None:  # a hook's value obeys the marker's rules (0.05 or "5%")
            tolerance = parse_percent(chosen_tol, f"pytest_irene_select_tolerance for {item.nodeid}")
        budget = mark.budget_j if mark.budget_j is not None else self.settings.budget_j
        return profile, tolerance, budget

    def trace_device(self, item: pytest.Item, device: str | None) -> str:
        """Where model features are traced: the call's ``device=``, the marker's, ``--irene-device``, else meta."""
        from pytest_irene.engine.devices import check_device

        chosen = device if device is not None else (self.mark(item).device or self.settings.device or "meta")
        return check_device(chosen, f"irene(..., device=) in {item.nodeid}" if device is not None else
                            "@pytest.mark.irene(device=) / --irene-device")

    def wrapped_call(
        self,
        item: pytest.Item,
        model: Any,
        inputs: Any,
        label: str,
        *,
        batch_size: int | None = None,
        seq_len: int | None = None,
        model_name: str | None = None,
        max_new_tokens: int | None = None,
        trace_on: str | None = None,
        call_line: int | None = None,
    ) -> EnergyTree:
        """Trace ``model(inputs)``, predict every node, compare with the baseline, record it
        (``call_line``: the test file's line that made the call, else the test's own line is recorded)."""
        if not isinstance(label, str) or not label or not label.isprintable():  # it heads report rows and
            # JUnit properties: a newline or NUL would break them
            raise UsageError(f"irene(..., label=...): expected a non-empty string of printable characters, "
                             f"got {label!r:.80}")
        key = baseline_nodeid(item)
        mine = self.item_records.setdefault(key, [])
        if any(r.label == label for r in mine):
            raise UsageError(
                f"irene(..., label={label!r}) called twice in {item.nodeid}; give each call its own label"
            )
        profile, tolerance, budget_j = self.test_settings(item)
        from pytest_irene.engine.tracing import model_device
        from pytest_irene.pipeline import predict_with

        energy_model = self.energy_model(profile)
        device = model_device(model) or "cpu"
        mode = self.feature_mode(profile, device)
        features = mode.features
        self._register_formulas()
        tree = predict_with(
            energy_model,
            model,
            inputs,
            features,
            device=device if features == ALL else self.trace_device(item, trace_on),
            option="--irene-features",
            batch_size=batch_size,
            seq_len=seq_len,
            model_name=model_name,
            max_new_tokens=max_new_tokens,
        )

        version = self.energy_model_version(profile)
        entry = entry_from_tree(tree, profile=profile, features=features, energy_model=version)
        comparison: Comparison | None = None
        if self.settings.save:
            self.to_save[(key, label)] = entry
        else:
            baseline = self.base_run.get(key, label) if self.base_run else self.store.get(key, label)
            mismatch = self.machine_mismatch(features)
            comparison = not_compared(mismatch, self.settings.strict) if mismatch and baseline else compare(
                baseline,
                tree,
                tolerance=tolerance,
                min_delta=self.settings.min_delta_j,
                profile=profile,
                features=features,
                strict=self.settings.strict,
                energy_model=version,
                fail_on=self.settings.fail_on,
            )
        budget = check_budget(tree, budget_j)
        test_file, line0, _ = item.location
        test_line = call_line if call_line is not None else (line0 + 1 if isinstance(line0, int) else None)
        record = CallRecord(
            nodeid=key,
            label=label,
            tree=tree,
            profile=profile,
            features=features,
            comparison=comparison,
            budget_j=budget_j,
            over_budget=budget.over,
            call_index=len(mine),
            item_index=self._item_index(item),
            feature_mode_reason=mode.message,
            tolerance=tolerance,
            min_delta_j=self.settings.min_delta_j,
            hardware=describe_hardware(dict(energy_model.hardware)),
            energy_model=version,
            baseline_file=str(self.store.path_for(key)),
            saved=self.settings.save,
            price_cents_per_kwh=self.settings.price_cents_per_kwh,
            test_file=test_file,
            test_line=test_line,
        )
        mine.append(record)
        self.records.append(record)
        item.config.hook.pytest_irene_tree_predicted(item=item, record=record)
        return tree

    def start_attempt(self, item: pytest.Item) -> None:
        """A test starts (again): the calls of an earlier attempt of it go.

        pytest-rerunfailures and flaky run a failed test's protocol again in the same session:
        its first attempt's calls were still recorded, so the rerun's first ``irene()`` call was
        refused as "called twice", and a passing rerun reported the failed attempt's energy.
        The last attempt is the test's, as its pytest outcome is. On an xdist worker, calls
        already handed to the controller are withdrawn with the next hand-over."""
        key = baseline_nodeid(item)
        self._judged.pop(key, None)
        old = self.item_records.pop(key, None)
        if not old:
            return
        handed = self._drop(key, old)
        if handed:
            self._restarted.append((key, key))

    def _drop(self, key: str, gone: list[CallRecord]) -> bool:
        """Remove ``gone`` (records of one test, whose baseline key is ``key``) from :attr:`records`
        and their baseline entries; whether any had been handed to the controller (xdist worker)."""
        ids = {id(r) for r in gone}
        handed = sum(1 for r in self.records[: self._handed_records] if id(r) in ids)
        self.records = [r for r in self.records if id(r) not in ids]
        self._handed_records -= handed
        entries = [(key, r.label) for r in gone]
        handed_entries = [k for k in entries if k in self._handed_save]
        for k in entries:
            self.to_save.pop(k, None)
            self._handed_save.discard(k)
        return bool(handed or handed_entries)

    def update_report(self, item: pytest.Item, call: pytest.CallInfo[None], report: pytest.TestReport) -> None:
        """The test's own report, with its wrapped calls' verdicts (see :func:`~pytest_irene.plugin.outcome.apply_gate`).

        Each call-phase report judges the calls made since the previous one: pytest's ``subtests``
        makes one per subtest before the test's own, so a subtest fails for its own calls only,
        and the test for the calls it made outside them (pytest fails it for a failed subtest).
        Judging every call at every report failed each later subtest, and the test, with an
        earlier subtest's regression."""
        if call.when in ("call", "teardown"):  # teardown: the calls a fixture made after the test
            key = baseline_nodeid(item)
            mine = self.item_records.get(key, [])
            start, self._judged[key] = self._judged.get(key, 0), len(mine)
            apply_gate(item, call, report, mine[start:])
        if call.when == "teardown" and self.is_worker:
            self.hand_over_on(report)

    # -- xdist ----------------------------------------------------------------------------------

    def _hand_over(self) -> dict[str, Any]:
        """The records and baseline entries not handed to the controller yet (now marked handed
        over), with the feature modes decided so far: each call reaches the controller once."""
        records = self.records[self._handed_records:]
        self._handed_records = len(self.records)
        keys = sorted(k for k in self.to_save if k not in self._handed_save)
        self._handed_save.update(keys)
        restarted, self._restarted = self._restarted, []
        return {
            "restarted": [{"nodeid": n, "key": k} for n, k in restarted],
            "records": [record_to_dict(r) for r in records],
            "save": [{"nodeid": n, "label": lbl, "entry": self.to_save[(n, lbl)].to_dict()} for n, lbl in keys],
            "feature_modes": self.feature_modes(),
        }

    def worker_output(self) -> str:
        """What a worker hands to the controller at its end (JSON text): what no teardown report carried."""
        return json.dumps(self._hand_over(), allow_nan=False)

    def hand_over_on(self, report: pytest.TestReport) -> None:
        """Worker: put this test's new records and baseline entries on its teardown report.

        xdist sends every report to the controller as it happens, and a report's extra
        attributes travel with it, so the calls of a test that passed are on the
        controller before the next test starts: when the worker then dies (``os._exit``,
        a segfault, the OOM killer) its earlier tests are still summarised and saved, as
        the passes xdist reports for them. ``workeroutput`` only comes from a worker that
        finishes."""
        payload = self._hand_over()
        if payload["records"] or payload["save"] or payload["restarted"]:
            setattr(report, WORKER_CALLS_ATTR, json.dumps(payload, allow_nan=False))

    def take_worker_calls(self, report: pytest.TestReport) -> None:
        """Controller: merge the calls a worker's report carries, and drop them from the
        report, so other plugins (``--junitxml``, report logs) see the report as serially."""
        if self.is_worker:  # its own report, on its way to the controller
            return
        text = report.__dict__.pop(WORKER_CALLS_ATTR, None)
        if text:
            self.merge_worker_output(text, worker_id(getattr(report, "node", None)))

    def merge_worker_output(self, text: str, worker: str | None = None) -> None:
        """Controller side: add one worker's records and baseline entries (``worker``: its id)."""
        data = json.loads(text)
        for obj in data.get("restarted", []):  # a rerun on that worker: its earlier attempt's calls go
            self._forget_from(worker, obj["nodeid"], obj["key"])
        for obj in data.get("records", []):
            self._merge_record(record_from_dict(obj), worker)
        for profile, mode in data.get("feature_modes", {}).items():
            self._worker_modes[(profile, mode.get("device"))] = mode
        for obj in data.get("save", []):
            where = Path(f"<worker entry {obj['nodeid']}>")
            key = (obj["nodeid"], obj["label"])
            if key not in self.to_save:  # --dist each: the first worker's entry, as its record
                self.to_save[key] = entry_from_dict(obj["entry"], where, obj["label"])
                self._origin[key] = worker

    def _forget_from(self, worker: str | None, nodeid: str, key: str) -> None:
        """Controller: drop what ``worker`` handed over for a test it is running again."""
        mine = self.item_records.get(nodeid, [])
        gone = [r for r in mine if self._origin.get((nodeid, r.label)) == worker]
        self.item_records[nodeid] = [r for r in mine if r not in gone]
        self._drop(key, gone)

    def _merge_record(self, record: CallRecord, worker: str | None = None) -> None:
        """Add one worker's record, unless another worker already handed over the same call.

        Under ``--dist each`` every worker runs every test: the controller got each call once
        per worker, so the summary counted them twice and the run file held each call twice,
        which ``irene compare`` refuses. A run has one record per (test, label), as serially:
        the first one stays (its baseline entry too) and :attr:`repeated_calls` notes the others."""
        mine = self.item_records.setdefault(record.nodeid, [])
        first = next((r for r in mine if r.label == record.label), None)
        if first is not None:
            self.repeated_calls.append((record.nodeid, record.label, first.tree.total_j == record.tree.total_j))
            return
        mine.append(record)
        self.records.append(record)
        self._origin[(record.nodeid, record.label)] = worker

    # -- end of session ---------------------------------------------------------------------

    @property
    def collect_only(self) -> bool:
        """``--collect-only``: no test runs, so no report is written."""
        return bool(self.config.option.collectonly)

    def finish(self, session: pytest.Session) -> None:
        """Controller (or single process): save baselines, then hand every record to the reporters."""
        if self.is_worker:
            self.config.workeroutput[WORKEROUTPUT_KEY] = self.worker_output()  # type: ignore[attr-defined]
            return
        if self.settings.save and self.to_save:
            self._save_baselines(session)
        self.find_stale(session)
        self.records = sort_records(self.records)
        if not self.collect_only:  # nothing ran: an ini irene_json's run file (or a report) of the last
            # real run would be replaced by an empty one
            self.config.hook.pytest_irene_session_records(config=self.config, records=list(self.records))
        if self.report_errors and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def _save_baselines(self, session: pytest.Session) -> None:
        """Save each baseline file on its own; a refused file fails the run and its calls say so."""
        result = self.store.save_each(self.to_save)
        self.saved_files = result.written
        for path, exc in result.errors.items():
            reason = f"{path}: {exc.strerror}" if isinstance(exc, OSError) and exc.strerror else str(exc)
            self.save_errors.append(f"baselines NOT saved: {reason}")
        refused = {str(p) for p in result.errors}
        for record in self.records:
            if record.baseline_file in refused:
                record.saved = False
                record.save_refused = True
        if result.errors and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def find_stale(self, session: pytest.Session) -> None:
        """List the stale baselines of ``.irene/`` and, with ``--irene-save --irene-prune``, drop them."""
        if self.base_run is None:
            prune = self.settings.save and self.settings.prune
            self.stale, self.pruned_files, error = self.stale_tracker.settle(self.store, self.config, self.records, prune)
            self.save_errors += [error] if error else []

    # -- header -----------------------------------------------------------------------------

    def header_lines(self) -> list[str]:
        """``pytest_report_header`` (see :func:`pytest_irene.plugin.header.header_lines`). Loads no model."""
        from pytest_irene.plugin.header import header_lines

        return header_lines(self.settings, self.config.rootpath, self.host_fingerprint, self.base_run)


def worker_id(node: Any) -> str | None:
    """The id (``gw0``) of the xdist worker behind a controller-side ``node``; ``None`` without one."""
    workerinput = getattr(node, "workerinput", None)
    return str(workerinput.get("workerid")) if isinstance(workerinput, dict) else None


class WorkerCallsIntake:
    """The controller's ear for the calls xdist workers put on their reports; registered as
    the plugin ``irene_xdist_calls`` (``pytest_runtest_logreport`` has no ``config`` to
    find the session by)."""

    def __init__(self, manager: IreneSession):
        self.manager = manager

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.manager.take_worker_calls(report)  # first: no other plugin sees the payload


#: The module holding user formulas; only looked up in ``sys.modules`` because it imports torch.
_FEATURES_MODULE = "pytest_irene.engine.features"


def _user_formulas() -> dict[str, Any]:
    """The user formulas now, without importing torch (none can exist before the module is imported)."""
    features = sys.modules.get(_FEATURES_MODULE)
    return features.user_formulas() if features is not None else {}
