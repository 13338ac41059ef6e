"""Bad inputs tried / handled (issue 11): every hostile input and fault of the issue, tried for real.

Each case sets up the bad input in a fresh temporary directory, runs what a
user would run (``pytest`` in a subprocess, an ``irene`` command, a web
request, a meter on the emonPi emulator) and checks that it was *handled*: a
clear error naming the option or file (no traceback), the right exit status,
and nothing already stored lost. The table lists every case with what the user
sees. ``tests/test_bad_input_*.py`` and ``tests/test_fault_injection.py`` hold
the same cases as regression tests.

Usage: ``python benchmarks/bench_bad_input.py [--markdown] [--write-results]``
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from common import DATASET, ROOT, table, write_results_section

TEST = """
import os
import torch


def test_{name}(irene):
    irene(torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.GELU()), torch.randn(2, 4, 16))
    {extra}
"""

Case = tuple[str, str, Callable[[Path], tuple[bool, str]]]
CASES: list[Case] = []


def case(item: str, what: str) -> Callable[[Callable[[Path], tuple[bool, str]]], Callable[[Path], tuple[bool, str]]]:
    def register(fn: Callable[[Path], tuple[bool, str]]) -> Callable[[Path], tuple[bool, str]]:
        CASES.append((item, what, fn))
        return fn

    return register


def project(d: Path, *names: str, extra: str = "pass") -> Path:
    (d / "pytest.ini").write_text("[pytest]\n")
    for name in names or ("a",):
        (d / f"test_{name}.py").write_text(TEST.format(name=name, extra=extra))
    return d


def pytest_run(d: Path, *args: str) -> tuple[int, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    p = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *(a for a in args if a)],
        cwd=d, env=env, capture_output=True, text=True,
    )
    return p.returncode, p.stdout + p.stderr


def irene_cli(*argv: str) -> tuple[int, str]:
    from pytest_irene.cli import main

    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        code = main([str(a) for a in argv])
    return code, err.getvalue() + out.getvalue()


def line_with(text: str, needle: str) -> str:
    return next((ln.strip() for ln in text.splitlines() if needle in ln), "")


def usage_error(d: Path, needle: str, *args: str) -> tuple[bool, str]:
    rc, out = pytest_run(d, *args)
    shown = line_with(out, needle)
    return rc == 4 and bool(shown) and "Traceback" not in out, shown


# -- 1. report paths ----------------------------------------------------------------------------


@case("1", "--irene-json=<a directory>")
def _(d: Path):
    (project(d) / "adir").mkdir()
    return usage_error(d, "--irene-json=adir", "--irene-json=adir")


@case("1", "--irene-json=<a file>/r.json (parent not a directory)")
def _(d: Path):
    (project(d) / "afile").write_text("x")
    return usage_error(d, "--irene-json=afile/r.json", "--irene-json=afile/r.json")


@case("1", "--irene-html=<a directory>, ini irene_html=<a directory>")
def _(d: Path):
    (project(d) / "adir").mkdir()
    ok1, shown = usage_error(d, "--irene-html=adir", "--irene-html=adir")
    (d / "pytest.ini").write_text("[pytest]\nirene_html = adir\n")
    ok2, _ = usage_error(d, "irene_html (ini)=adir", "")
    return ok1 and ok2, shown


@case("1", "--irene-json path turns into a directory before the end of the run")
def _(d: Path):
    project(d, extra="os.mkdir('r.json')")
    rc, out = pytest_run(d, "--irene-json=r.json")
    shown = line_with(out, "cannot write")
    handled = rc == 1 and "Is a directory" in shown and "irene energy summary" in out and "Traceback" not in out
    return handled and not list(d.rglob("*.tmp")), shown


@case("1", "irene predict --html / sweep --csv / sweep --html <a directory>")
def _(d: Path):
    shown, ok = "", True
    sweep = ["sweep", "--model", "distilbert-base-uncased", "--batch-sizes", "1", "--seq-lens", "8"]
    for argv in (["predict", "--model", "gpt2", "--batch-size", "1", "--seq-len", "8", "--html"], sweep + ["--csv"], sweep + ["--html"]):
        code, err = irene_cli(*argv, d)
        shown = shown or line_with(err, "is a directory")
        ok = ok and code == 2 and "is a directory" in err
    return ok, shown


# -- 2, 3, 6, 10, 11: baselines ---------------------------------------------------------------------


@case("2", "one corrupt baseline file, --irene-save of two test files")
def _(d: Path):
    project(d, "a", "b")
    (d / ".irene").mkdir()
    (d / ".irene" / "test_a.json").write_text("{broken")
    rc, out = pytest_run(d, "--irene-save")
    saved_b = (d / ".irene" / "test_b.json").is_file()
    ok = rc == 1 and saved_b and "1 not saved, 1 saved" in out and (d / ".irene" / "test_a.json").read_text() == "{broken"
    return ok, line_with(out, "baselines NOT saved")[:110]


@case("3", "a test file outside the rootdir, --irene-save")
def _(d: Path):
    root, other = d / "root", d / "other"
    root.mkdir()
    other.mkdir()
    project(root, "in")
    (other / "test_out.py").write_text(TEST.format(name="out", extra="pass"))
    rc, out = pytest_run(root, "--irene-save", "test_in.py", "../other/test_out.py")
    stored = (root / ".irene" / "test_in.json").is_file() and (root / ".irene" / "_outside" / "other_test_out.json").is_file()
    return rc == 0 and stored, "stored in .irene/_outside/other_test_out.json"


@case("6", "--irene-baselines=<a regular file> (with and without --irene-save)")
def _(d: Path):
    (project(d) / "notadir").write_text("keep")
    ok1, shown = usage_error(d, "regular file", "--irene-baselines=notadir")
    ok2, _ = usage_error(d, "regular file", "--irene-baselines=notadir", "--irene-save")
    return ok1 and ok2 and (d / "notadir").read_text() == "keep", shown


@case("6", "--irene-save refused (a directory where the file goes): never counted as saved")
def _(d: Path):
    project(d, extra="os.makedirs('.irene/test_a.json/x')")
    rc, out = pytest_run(d, "--irene-save")
    return rc == 1 and "1 not saved" in out and "1 saved" not in out, line_with(out, "not saved")[:110]


@case("10", "a baseline root at -5 J")
def _(d: Path):
    project(d)
    pytest_run(d, "--irene-save")
    path = d / ".irene" / "test_a.json"
    doc = json.loads(path.read_text())
    doc["tests"]["test_a.py::test_a"]["default"]["root"]["energy_j"] = -5.0
    path.write_text(json.dumps(doc))
    rc, out = pytest_run(d)
    shown = line_with(out, "root.energy_j")
    return rc == 1 and "expected a positive number" in shown and "-100" not in out, shown[shown.find("tests["):][:110]


@case("11", "a temp file left by kill -9 during a save; a symlinked baseline; unknown fields")
def _(d: Path):
    from pytest_irene.compare.baselines import read_baseline_file
    from pytest_irene.compare.baseline_store import BaselineStore

    project(d)
    real = d / "real"
    pytest_run(d, f"--irene-baselines={real}", "--irene-save")
    doc = json.loads((real / "test_a.json").read_text())
    doc["reviewed_by"] = "ana"
    (real / "test_a.json").write_text(json.dumps(doc))
    (real / ".test_a.json.k1ll3d.tmp").write_text("half")
    (d / ".irene").mkdir()
    (d / ".irene" / "test_a.json").symlink_to(real / "test_a.json")
    entries = read_baseline_file(real / "test_a.json")
    BaselineStore(d / ".irene").save({(n, lbl): e for n, labels in entries.items() for lbl, e in labels.items()})
    kept = json.loads((real / "test_a.json").read_text()).get("reviewed_by") == "ana"
    ok = kept and (d / ".irene" / "test_a.json").is_symlink() and not (real / ".test_a.json.k1ll3d.tmp").exists()
    return ok, "temp file removed, link kept, 'reviewed_by' kept"


@case("11", "irene_save = maybe (ini)")
def _(d: Path):
    (project(d) / "pytest.ini").write_text("[pytest]\nirene_save = maybe\n")
    return usage_error(d, "irene_save (ini)", "")


@case("11", "--irene-meter without --irene-calibrate")
def _(d: Path):
    rc, out = pytest_run(project(d), "--irene-meter=emonpi:/dev/ttyAMA0", "--collect-only", "-q")
    shown = line_with(out, "is ignored without --irene-calibrate")
    return rc == 0 and bool(shown), shown[shown.find("--irene-meter"):][:110]


# -- 5. profiles ------------------------------------------------------------------------------------


def _model_file(d: Path, mutate: Callable[[dict], None]) -> Path:
    doc = json.loads((ROOT / "models" / "irene-pc1.json").read_text())
    mutate(doc)
    path = d / "bad-model.json"
    path.write_text(json.dumps(doc))
    return path


for _what, _make in (
    ("missing file", lambda d: d / "missing.json"),
    ("a directory", lambda d: (d / "m.json").mkdir() or d / "m.json"),
    ("not an energy model", lambda d: (d / "x.json").write_text('{"a": 1}') and d / "x.json"),
    ("NaN weights", lambda d: _model_file(d, lambda m: m["feature_sets"]["model"].update(nan=float("nan")))),
    ("future schema", lambda d: _model_file(d, lambda m: m.update(schema_version=99))),
):

    @case("5", f"--irene-profile=<{_what}>, --collect-only")
    def _(d: Path, make=_make):
        path = make(project(d))
        return usage_error(d, "--irene-profile=", f"--irene-profile={path}", "--collect-only")


@case("5", "--irene-features=all on a host that is not the rig")
def _(d: Path):
    return usage_error(project(d), "--irene-features=all", "--irene-features=all", "--collect-only")


# -- 4. web API -------------------------------------------------------------------------------------


@case("4", "web API: L=2000, L=0, L=-1, H=0, H=-64, H=100")
def _(d: Path):
    from pytest_irene.explorer.app import create_app

    client = create_app().test_client()
    ok, shown = True, ""
    for variant in ("L=2000,H=64", "L=0,H=64", "L=-1,H=64", "L=2,H=0", "L=2,H=-64", "L=2,H=100"):
        resp = client.get("/api/energy", query_string={"model": f"bert-base-uncased[{variant}]", "batch_size": 1, "seq_len": 8})
        body = resp.get_json()
        ok = ok and resp.status_code == 400 and body.get("parameter") == "model"
        shown = shown or body["error"]
    return ok, shown[:110]


@case("4", "web API: a slow request while another arrives (2 slots)")
def _(d: Path):
    import threading

    from pytest_irene.explorer.app import ServerConfig, create_app
    from pytest_irene.explorer.models import predict_tree

    gate = threading.Event()

    def predict(spec, b, s, profile):
        if spec.name.endswith("[L=2,H=128]"):
            gate.wait(30)
        return predict_tree(spec, b, s, profile)

    app = create_app(ServerConfig(predict=predict))
    slow = threading.Thread(target=lambda: app.test_client().get("/api/energy?model=bert-base-uncased[L=2,H=128]&batch_size=1&seq_len=8"))
    slow.start()
    time.sleep(0.2)
    t0 = time.perf_counter()
    fast = app.test_client().get("/api/energy?model=distilgpt2&batch_size=1&seq_len=8")
    waited = time.perf_counter() - t0
    gate.set()
    slow.join()
    return fast.status_code == 200 and slow.is_alive() is False, f"other request answered in {waited:.2f} s meanwhile"


# -- 7. datasets ------------------------------------------------------------------------------------


def dataset_error(fn: Callable[[], object]) -> tuple[bool, str]:
    from pytest_irene.errors import DatasetError

    try:
        fn()
    except DatasetError as exc:
        return exc.line is not None, str(exc)[-110:]
    return False, "no error"


@case("7", "a .jsonl.gz with bytes overwritten inside")
def _(d: Path):
    from pytest_irene.engine.dataset import load_dataset

    data = bytearray(DATASET.read_bytes())
    data[1000:1064] = b"\xff" * 64
    (d / "bad.jsonl.gz").write_bytes(bytes(data))
    return dataset_error(lambda: load_dataset(d / "bad.jsonl.gz"))


@case("7", "a line nested 5,000 levels deep")
def _(d: Path):
    from pytest_irene.engine.dataset import load_dataset

    (d / "deep.jsonl").write_text("[" * 5000 + "]" * 5000 + "\n")
    return dataset_error(lambda: load_dataset(d / "deep.jsonl"))


@case("7", "irene evaluate on an empty dataset; irene crossvalidate on one model")
def _(d: Path):
    from pytest_irene.engine.dataset import load_dataset, write_dataset

    (d / "empty.jsonl").write_text("\n")
    code1, err1 = irene_cli("evaluate", d / "empty.jsonl", "--profile", "irene-pc1", "--json")
    write_dataset(d / "one.jsonl", [t for t in load_dataset(DATASET) if t.model_name == "gpt2"][:3])
    code2, err2 = irene_cli("crossvalidate", d / "one.jsonl")
    return code1 == 2 and code2 == 2 and "no trees" in err1 and "only gpt2" in err2, line_with(err1, "error")[-80:]


@case("7", "the same tree twice in a dataset")
def _(d: Path):
    from pytest_irene.engine.dataset import DuplicateTreesWarning, load_dataset

    lines = gzip.decompress(DATASET.read_bytes()).splitlines()
    (d / "dup.jsonl").write_bytes(lines[0] + b"\n" + lines[1] + b"\n" + lines[0] + b"\n")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        load_dataset(d / "dup.jsonl")
    found = [w for w in seen if issubclass(w.category, DuplicateTreesWarning)]
    return bool(found), str(found[0].message)[:110] if found else "no warning"


# -- 8, 9, 11: the rig ------------------------------------------------------------------------------


@case("8", "the meter falls silent during a 20 s window (5 rounds)")
def _(d: Path):
    import torch

    from pytest_irene.rig.calibration import CalibrationError, CalibrationSettings, Calibrator, Target
    from pytest_irene.rig.emulator import EmonPiEmulator
    from pytest_irene.rig.meters.emonpi import EmonPiReader

    emulator = EmonPiEmulator("kv", period_s=0.05, power_fn=lambda: 100.0)
    emulator.start()
    reader = EmonPiReader(emulator.path, emulator.baud, period_s=0.05)
    settings = CalibrationSettings(window_s=20.0, rounds=5, min_reports=4, cooldown_s=0.0, idle_cpu_pct=100.0, idle_tolerance=1.0, idle_window_s=0.3)
    model = torch.nn.Sequential(torch.nn.Linear(32, 32), torch.nn.ReLU())
    try:
        with Calibrator(reader, settings, d / "rig.jsonl.gz", say=lambda line: None, progress=False) as cal:
            cal.check_idle()
            emulator.fault, emulator.fault_after = "silence", 0
            t0 = time.monotonic()
            try:
                cal.run([Target(model, torch.randn(4, 32), "tiny")])
            except CalibrationError as exc:
                waited = time.monotonic() - t0
                return waited < 10.0 and "silent" in str(exc), f"stopped after {waited:.1f} s (a round is >= 40 s)"
    finally:
        emulator.stop()
    return False, "not detected"


@case("9", "emulator --fault wrong-baud --fault-after 3")
def _(d: Path):
    from pytest_irene.rig.emulator import EmonPiEmulator
    from pytest_irene.rig.meters.emonpi import EmonPiReader

    emulator = EmonPiEmulator("kv", period_s=0.05, fault="wrong-baud", fault_after=3)
    emulator.start()
    reader = EmonPiReader(emulator.path, emulator.baud, period_s=0.05)
    try:
        reader.start()
        reader.wait_for_samples(3, timeout_s=5.0)
        good = reader.reports
        time.sleep(0.5)
        return good >= 3 and reader.reports <= 3, f"{reader.reports} good reports, then garbled"
    finally:
        reader.close()
        emulator.stop()


@case("11", "--irene-meter=emonpi:PORT,channels=P9")
def _(d: Path):
    from pytest_irene.rig.emulator import EmonPiEmulator
    from pytest_irene.rig.meters import MeterError
    from pytest_irene.rig.meters.emonpi import EmonPiReader

    emulator = EmonPiEmulator("kv", period_s=0.05)
    emulator.start()
    reader = EmonPiReader(emulator.path, emulator.baud, channels=("P9",), period_s=0.05)
    try:
        reader.start()
        reader.wait_for_samples(1, timeout_s=5.0)
    except MeterError as exc:
        return "no channel P9" in str(exc) and "still starting" not in str(exc), str(exc)[str(exc).find("channels="):][:110]
    finally:
        reader.close()
        emulator.stop()
    return False, "no error"


# -- fault injection --------------------------------------------------------------------------------


@case("faults", "-n 2 --irene-save: a worker killed; os.replace raising (tests/test_fault_injection.py)")
def _(d: Path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(ROOT / "tests" / "test_fault_injection.py")],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )
    last = p.stdout.strip().splitlines()[-1] if p.stdout.strip() else p.stderr[-100:]
    last = last.split(" in ")[0]  # "2 passed", without the load-dependent time
    return p.returncode == 0, f"every file old or new and valid ({last})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--write-results", action="store_true", help="replace the bench_bad_input section of RESULTS.md")
    args = parser.parse_args()
    rows, handled = [], 0
    for item, what, fn in CASES:
        with tempfile.TemporaryDirectory() as tmp:
            cwd = os.getcwd()
            try:
                ok, shown = fn(Path(tmp))
            except Exception as exc:  # noqa: BLE001 - a case that crashes is a case not handled
                ok, shown = False, f"{type(exc).__name__}: {exc}"[:110]
            finally:
                os.chdir(cwd)
        handled += ok
        shown = shown.replace(tmp, "<tmp>").replace("|", "/")
        rows.append([item, what, "yes" if ok else "NO", shown if len(shown) <= 120 else shown[:117] + "..."])
        print(f"[{item}] {what}: {'handled' if ok else 'NOT handled'}", file=sys.stderr, flush=True)
    text = table(["issue 11 item", "bad input tried", "handled", "what the user sees"], rows, args.markdown or args.write_results, left=4)
    summary = f"{handled} of {len(rows)} bad inputs handled."
    print(text)
    print(summary)
    if args.write_results:
        write_results_section(
            "bad_input",
            "## Bad inputs tried / handled (`benchmarks/bench_bad_input.py`)\n\n"
            "Every case of issue 11, tried for real (pytest in a subprocess, the `irene` commands, the web API, "
            "the emonPi emulator). *Handled*: a clear error naming the option or file and no traceback, the "
            "right exit status (4 for a usage error), and nothing already stored lost.\n\n"
            f"{text}\n\n{summary}\n",
        )


if __name__ == "__main__":
    main()
