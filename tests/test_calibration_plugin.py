"""``pytest --irene-calibrate``: options, refusals and the measured calls, through inner pytest sessions.

The end-to-end runs (tracer, node runner, emulator, dataset, training) are in
``test_calibration_e2e.py``; these check the plugin's own behaviour.
"""

from __future__ import annotations

from importlib.metadata import entry_points

import pytest

from emonpi_fixtures import emonpi_emulator  # noqa: F401  (fixture)

pytest_plugins = ["pytester"]

HEAVY_MODULES = ("torch", "transformers", "sklearn", "numpy", "scipy", "safetensors", "tokenizers", "pytest_irene")


def plugin_args() -> list[str]:
    """Load the calibration plugin unless its entry point is installed (then pytest loads it)."""
    installed = any(ep.value == "pytest_irene.calibration_plugin" for ep in entry_points(group="pytest11"))
    return [] if installed else ["-p", "pytest_irene.calibration_plugin"]


@pytest.fixture(autouse=True)
def keep_heavy_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process inner sessions must not unload torch & co. (re-importing torch crashes)."""
    import _pytest.pytester as pytester_module

    base = pytester_module.SysModulesSnapshot

    class KeepHeavy(base):  # type: ignore[misc, valid-type]
        def __init__(self, preserve=None):  # type: ignore[no-untyped-def]
            super().__init__(preserve=lambda name: name.startswith(HEAVY_MODULES) or bool(preserve and preserve(name)))

    monkeypatch.setattr(pytester_module, "SysModulesSnapshot", KeepHeavy)


SUITE = """
import torch

def test_measured(irene_calibrate):
    tree = irene_calibrate(torch.nn.Linear(8, 8), torch.randn(2, 8), label="lin")
    assert tree.root.energy > 0
"""


def test_options_are_in_the_irene_group(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest(*plugin_args(), "--help")
    text = result.stdout.str()
    for option in ("--irene-calibrate ", "--irene-meter=", "--irene-calibrate-dataset=", "--irene-calibrate-output=",
                   "--irene-calibrate-window=", "--irene-calibrate-rounds="):
        assert option in text, option


def test_calibrate_needs_a_meter(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(SUITE)
    result = pytester.runpytest(*plugin_args(), "--irene-calibrate")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--irene-calibrate needs --irene-meter=SPEC*"])


@pytest.mark.parametrize(
    "args, message",
    [
        (["--irene-meter=wattmeter:/dev/x"], "*meter spec 'wattmeter:/dev/x': unknown meter 'wattmeter'*"),
        (["--irene-meter=rapl", "--irene-calibrate-rounds=two"], "*--irene-calibrate-rounds: expected a int*"),
        (["--irene-meter=rapl", "--irene-calibrate-rounds=0"], "*rounds must be a positive integer*"),
        (["--irene-meter=rapl", "--irene-calibrate-dataset=out.csv"], "*expected a .jsonl or .jsonl.gz file*"),
    ],
)
def test_bad_options_are_usage_errors(pytester: pytest.Pytester, args: list[str], message: str) -> None:
    pytester.makepyfile(SUITE)
    result = pytester.runpytest(*plugin_args(), "--irene-calibrate", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_without_calibrate_the_fixture_skips(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(SUITE)
    result = pytester.runpytest(*plugin_args(), "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*measures only with --irene-calibrate*"])


def test_refuses_to_start_when_not_idle(pytester: pytest.Pytester, emonpi_emulator) -> None:
    emulator = emonpi_emulator("kv", power_fn=lambda: 250.0)
    pytester.makepyfile(SUITE)
    result = pytester.runpytest(
        *plugin_args(), "--irene-calibrate", f"--irene-meter=emonpi:{emulator.path},115200,period=0.05",
        "--irene-calibrate-idle-watts=100", "--irene-calibrate-window=0.2", "--irene-calibrate-min-reports=3",
    )
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*refusing to calibrate: the machine is not idle: it draws 250.0 W*"])
    assert not (pytester.path / "irene-rig.jsonl.gz").exists()


def test_calibrate_refuses_xdist(pytester: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    pytester.makepyfile(SUITE)
    result = pytester.runpytest(*plugin_args(), "--irene-calibrate", "--irene-meter=rapl", "-n", "2")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*run it without -n*"])
