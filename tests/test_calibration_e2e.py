"""End to end on the emonPi emulator: ``pytest --irene-calibrate`` and ``irene calibrate``.

Real tracer, real node runner and resource sampler, a real pty read through
pyserial, the dataset written atomically, then the regressors retrained and
the model file loaded back. Windows are tiny so the whole run takes seconds.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from inner import run

from pytest_irene.engine.dataset import load_dataset

PERIOD_S = 0.02
SHORT = [
    "--irene-calibrate-window=0.04",
    "--irene-calibrate-rounds=2",
    "--irene-calibrate-cooldown=0",
    "--irene-calibrate-min-reports=2",
    "--irene-calibrate-idle-tolerance=20",
    "--irene-calibrate-idle-cpu=100",
]

SUITE = """
import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.up = nn.Linear(16, width)
        self.act = nn.GELU()
        self.down = nn.Linear(width, 16)
        self.norm = nn.LayerNorm(16)

    def forward(self, x):
        return self.norm(x + self.down(self.act(self.up(x))))


class Tiny(nn.Module):
    def __init__(self, width=32, depth=2):
        super().__init__()
        torch.manual_seed(0)
        self.blocks = nn.Sequential(*[Block(width) for _ in range(depth)])
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        return self.head(self.blocks(x))


def test_gated_call_is_measured(irene):
    for batch, seq in ((2, 8), (4, 16)):
        tree = irene(Tiny(), torch.randn(batch, seq, 16), label=f"b{batch}s{seq}", model_name="tiny-a",
                     batch_size=batch, seq_len=seq)
        assert tree.root.energy_j > 0 and tree.root.predicted_energy_j is None


def test_calibrate_fixture(irene_calibrate):
    tree = irene_calibrate(Tiny(width=64, depth=1), torch.randn(3, 12, 16), model_name="tiny-b",
                           batch_size=3, seq_len=12)
    assert tree["head"].energy_j > 0
"""


def check_dataset(path: Path, expected_trees: int, profile: str) -> None:
    trees = load_dataset(path)  # validates every line as irene-tree/1
    assert len(trees) == expected_trees
    for tree in trees:
        assert tree.profile == profile
        assert tree.meta["calibration"]["meter"].startswith("emonPi on /dev/pts/")
        measured = [n for n in tree.walk() if n.energy_j is not None]
        assert tree.root.energy_j is not None and tree.root.energy_j > 0
        assert len(measured) >= 0.8 * len(tree), "most nodes carry a measured energy"
        for node in measured:
            assert node.energy_j > 0
            assert {"flops", "mem_bytes"} <= set(node.features) and "latency_s" in node.features
    raw = gzip.decompress(path.read_bytes()).decode().splitlines()
    assert all(json.loads(line)["format"] == "irene-tree/1" for line in raw)


def check_model(path: Path, profile: str) -> None:
    from pytest_irene.engine.predict.energy_model import EnergyModel

    model = EnergyModel.load(str(path))
    assert model.profile == profile
    assert model.hardware["meter"].startswith("emonPi on /dev/pts/")
    assert model.hardware["idle_power_w"] > 0 and model.hardware.get("cpu_model")
    assert model.cv_errors


def test_pytest_irene_calibrate_end_to_end(pytester: pytest.Pytester, emonpi_emulator) -> None:
    emulator = emonpi_emulator("kv", period_s=PERIOD_S)  # power follows this host's CPU load
    pytester.makepyfile(SUITE)
    result = run(
        pytester, "--irene-calibrate", f"--irene-meter=emonpi:{emulator.path},115200,period={PERIOD_S}",
        "--irene-calibrate-dataset=rig.jsonl.gz", "--irene-calibrate-output=models/rig.json", *SHORT,
    )
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([
        "*irene calibrate: meter emonpi:*",
        "*irene calibrate: idle power * W*",
        "*planned rig time:*",
        "*irene calibration*",
        "*3 measured tree(s) appended to *rig.jsonl.gz*",
        "*energy model for profile 'rig' written to *rig.json*",
        "*cross-validation (model features, * split): ml * %, module * %, model * %",
    ])
    check_dataset(pytester.path / "rig.jsonl.gz", 3, "rig")
    check_model(pytester.path / "models" / "rig.json", "rig")


def test_irene_calibrate_cli_end_to_end(tmp_path: Path, emonpi_emulator, capsys: pytest.CaptureFixture[str]) -> None:
    from pytest_irene.cli import main

    emulator = emonpi_emulator("jeelib", period_s=PERIOD_S)
    dataset, output = tmp_path / "cli-rig.jsonl.gz", tmp_path / "cli-rig.json"
    def argv(models: list[str], seq_lens: list[str], *extra: str) -> list[str]:
        return [
            "calibrate", *[a for m in models for a in ("--model", m)], "--batch-size", "2", "--seq-len", *seq_lens,
            "--meter", f"emonpi:{emulator.path},38400,period={PERIOD_S}",
            "--window", "0.03", "--rounds", "1", "--cooldown", "0", "--min-reports", "2", "--idle-tolerance", "20",
            "--idle-cpu", "100", "--no-progress", "--dataset", str(dataset), "-o", str(output),
            "--config", "num_hidden_layers=1", "--config", "hidden_size=32", "--config", "num_attention_heads=2",
            "--config", "intermediate_size=64", *extra,
        ]

    assert main(argv(["bert-base-uncased"], ["8", "16"])) == 0
    out = capsys.readouterr().out
    assert "planned rig time" in out and "idle power" in out
    assert "2 tree(s) appended" in out and f"written to {output}" in out
    assert "cross-validation (model features" in out  # errors, or why no split applies to 2 trees
    check_dataset(dataset, 2, "cli-rig")
    check_model(output, "cli-rig")
    # a second run appends: nothing already stored is lost
    assert main(argv(["roberta-base"], ["8"], "--no-train")) == 0
    trees = load_dataset(dataset)
    assert [(t.model_name, t.batch_size, t.seq_len) for t in trees] == [
        ("bert-base-uncased", 2, 8), ("bert-base-uncased", 2, 16), ("roberta-base", 2, 8)
    ]
    check_dataset(dataset, 3, "cli-rig")


def test_cli_reports_unknown_model_and_bad_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pytest_irene.cli import main

    base = ["calibrate", "--batch-size", "2", "--seq-len", "8", "--meter", "rapl", "-o", str(tmp_path / "m.json")]
    assert main([*base, "--model", "bert-base-uncased", "--dataset", str(tmp_path / "d.csv")]) == 2
    assert "expected a .jsonl or .jsonl.gz file" in capsys.readouterr().err
    assert main([*base, "--model", "alexnet", "--dataset", str(tmp_path / "d.jsonl")]) == 2
    assert "unknown architecture(s) alexnet" in capsys.readouterr().err
