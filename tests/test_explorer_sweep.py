"""Sweeps over architectures × batch sizes × sequence lengths: data, CSV, HTML, CLI."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from pytest_irene.explorer.models import compact_variants, predict_tree, resolve_model
from pytest_irene.explorer.params import ParameterError
from pytest_irene.errors import UsageError
from pytest_irene.explorer.sweep import run_sweep
from pytest_irene.engine.predict.profiles import bundled_profiles

def main(argv: list[str]) -> int:
    """``irene sweep ...`` through its own parser and the console script's error handling."""
    import argparse
    import sys

    from pytest_irene.cli import sweep as sweep_cli
    from pytest_irene.errors import IreneError

    parser = argparse.ArgumentParser(prog="irene")
    sweep_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except IreneError as exc:
        print(f"irene sweep: error: {exc}", file=sys.stderr)
        return 2


FACTORY_SRC = '''
import torch
from transformers import GPT2Config, GPT2Model

def tiny_gpt2():
    return GPT2Model(GPT2Config(n_layer=2, n_embd=64, n_head=2, vocab_size=128, n_positions=256,
                                bos_token_id=0, eos_token_id=0, attn_implementation="eager"))


class Mixer(torch.nn.Module):
    """Not a transformers model: it says itself what its inputs are."""

    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(32, 128)
        self.fc2 = torch.nn.Linear(128, 32)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))

    def irene_inputs(self, batch_size, seq_len, device="meta"):
        return torch.zeros(batch_size, seq_len, 32, device=device)


def mixer():
    return Mixer()


def mixer_with_inputs(batch_size, seq_len):
    """The irene predict convention: a (module, inputs) pair built for the input size."""
    model = torch.nn.Sequential(torch.nn.Linear(16, 16))
    return model, torch.zeros(batch_size, seq_len, 16, device="meta")


def no_inputs():
    return torch.nn.Linear(4, 4)
'''


@pytest.fixture(scope="module")
def factory(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("sweepfactories") / "sweep_models.py"
    path.write_text(FACTORY_SRC)
    return f"{path}:tiny_gpt2"


def test_compact_variant_names_resolve() -> None:
    spec = resolve_model("bert-base-uncased[L=2,H=128]")
    assert spec == compact_variants("bert-base-uncased", [2], [128])[0]
    with pytest.raises(ParameterError, match="model"):
        resolve_model("bert-base-uncased[L=two]")


def test_factory_model_with_its_own_inputs(factory: str) -> None:
    ref = factory.replace(":tiny_gpt2", ":mixer")
    sweep = run_sweep([resolve_model(ref)], [1], [8, 64], bundled_profiles()[0])
    assert [p.seq_len for p in sweep.points] == [8, 64]
    for p in sweep.points:
        assert p.total_j > 0 and set(p.parts) == {"Mixer"}


def test_factory_returning_module_and_inputs(factory: str) -> None:
    ref = factory.replace(":tiny_gpt2", ":mixer_with_inputs")
    sweep = run_sweep([resolve_model(ref)], [2], [8, 16], bundled_profiles()[0])
    assert [(p.batch_size, p.seq_len) for p in sweep.points] == [(2, 8), (2, 16)]
    with pytest.raises(UsageError, match="irene_inputs"):
        resolve_model(factory.replace(":tiny_gpt2", ":no_inputs")).trace(1, 4)


def test_run_sweep_covers_the_grid_with_the_real_predictions(factory: str) -> None:
    profile = bundled_profiles()[0]
    specs = [resolve_model("bert-base-uncased[L=2,H=128]"), resolve_model(factory)]
    seen = []
    sweep = run_sweep(specs, [2, 1], [32, 8], profile, on_point=seen.append)
    assert len(sweep.points) == len(seen) == 8
    assert sweep.models == ["bert-base-uncased[L=2,H=128]", factory]
    assert (sweep.batch_sizes, sweep.seq_lens) == ([1, 2], [8, 32])
    by_key = {(p.model, p.batch_size, p.seq_len): p for p in sweep.points}
    assert len(by_key) == 8
    for spec in specs:
        direct = predict_tree(spec, 2, 32, profile)
        assert by_key[(spec.name, 2, 32)].total_j == pytest.approx(direct.total_j)
    for p in sweep.points:
        assert p.total_j > 0
        assert sum(p.parts.values()) == pytest.approx(p.operations_j)
    assert "BertSelfAttention" in by_key[("bert-base-uncased[L=2,H=128]", 1, 8)].parts
    assert set(sweep.part_types) == {t for p in sweep.points for t in p.parts}


def test_energy_grows_with_input_size_in_the_training_range() -> None:
    """Integration sanity: the bundled profile was fitted on batch 8-32 x seq 32-256."""
    profile = bundled_profiles()[0]
    sweep = run_sweep([resolve_model("distilgpt2")], [8, 16], [32, 128], profile)
    totals = {(p.batch_size, p.seq_len): p.total_j for p in sweep.points}
    assert totals[(16, 128)] > totals[(8, 128)] > totals[(8, 32)]
    assert totals[(16, 128)] > totals[(16, 32)] > totals[(8, 32)]


def test_sweep_cli_writes_csv_and_html(tmp_path: Path, factory: str, capsys: pytest.CaptureFixture[str]) -> None:
    out_csv, out_html = tmp_path / "sweep.csv", tmp_path / "sweep.html"
    rc = main([
        "sweep", "--model", "distilgpt2", "--module", factory,
        "--batch-sizes", "1,2", "--seq-lens", "8,16", "--csv", str(out_csv), "--html", str(out_html),
    ])
    assert rc == 0
    rows = list(csv.DictReader(out_csv.open()))
    assert len(rows) == 8
    assert {r["model"] for r in rows} == {"distilgpt2", factory}
    assert {(int(r["batch_size"]), int(r["seq_len"])) for r in rows} == {(1, 8), (1, 16), (2, 8), (2, 16)}
    part_cols = [c for c in rows[0] if c.endswith("_j") and c not in ("energy_j", "operations_j")]
    assert part_cols and all(float(r["energy_j"]) > 0 for r in rows)
    for r in rows:
        assert sum(float(r[c]) for c in part_cols) == pytest.approx(float(r["operations_j"]))
    page = out_html.read_text()
    data = json.loads(re.search(r'id="irene-data">(.*?)</script>', page, re.S).group(1))
    assert len(data["sweep"]["points"]) == 8 and data["calls"] == []
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)


def test_sweep_cli_compact_variants(tmp_path: Path) -> None:
    out_csv = tmp_path / "compact.csv"
    rc = main([
        "sweep", "--model", "bert-base-uncased", "--layers", "2,4", "--hidden", "128,256",
        "--batch-sizes", "8", "--seq-lens", "64", "--csv", str(out_csv),
    ])
    assert rc == 0
    rows = {r["model"]: float(r["energy_j"]) for r in csv.DictReader(out_csv.open())}
    assert sorted(rows) == [
        "bert-base-uncased[L=2,H=128]", "bert-base-uncased[L=2,H=256]",
        "bert-base-uncased[L=4,H=128]", "bert-base-uncased[L=4,H=256]",
    ]
    assert rows["bert-base-uncased[L=4,H=256]"] > rows["bert-base-uncased[L=2,H=128]"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sweep", "--batch-sizes", "1", "--seq-lens", "8"], "--model"),
        (["sweep", "--model", "nope", "--batch-sizes", "1", "--seq-lens", "8"], "--model"),
        (["sweep", "--model", "gpt2", "--batch-sizes", "1,x", "--seq-lens", "8"], "--batch-sizes"),
        (["sweep", "--model", "gpt2", "--layers", "2", "--batch-sizes", "1", "--seq-lens", "8"], "--hidden"),
        (["sweep", "--module", "no_such_module_xyz:f", "--batch-sizes", "1", "--seq-lens", "8"], "no_such_module_xyz"),
    ],
)
def test_sweep_cli_usage_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_a_factory_that_ignores_the_requested_size_is_refused_not_relabelled(tmp_path: Path) -> None:
    """Its every point was the same computation under another label, with energies that moved with
    the label (the sizes were forced onto the tree); irene predict read the inputs' real size."""
    from pytest_irene.explorer.app import create_app
    from pytest_irene.explorer.params import RequestError

    fixed = tmp_path / "fixed_factory.py"
    fixed.write_text("import torch\n\ndef make():\n    return torch.nn.Linear(16, 16), torch.randn(1, 8, 16)\n")
    spec = resolve_model(f"{fixed}:make")
    profile = bundled_profiles()[0]
    assert run_sweep([spec], [1], [8], profile).points[0].total_j > 0  # its own size is fine
    with pytest.raises(RequestError, match=r"takes no batch_size or seq_len parameter and builds inputs of batch 1 "
                       r"x sequence 8: it cannot be predicted at batch size 1, sequence length 16"):
        run_sweep([spec], [1, 2], [8, 16], profile)
    client = create_app({"allowed_modules": [f"{fixed}:make"]}).test_client()
    resp = client.get("/api/energy", query_string={"model": f"{fixed}:make", "batch_size": 2, "seq_len": 16})
    assert resp.status_code == 400 and "give the factory batch_size and seq_len parameters" in resp.get_json()["error"]
