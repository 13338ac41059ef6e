"""The public Python API as a new user in a notebook meets it: names, reprs, errors, units.

Each test pins a defect a user hit: a 15 kB tree repr, ``except irene.TraceError`` needing a
submodule import, a share of another tree's node read as this tree's, torch's bare
``RuntimeError`` for a misspelt device, ``3 mWh`` and a Greek-mu ``µJ`` refused.
"""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
from torch import nn

import pytest_irene as irene
from pytest_irene.engine.tree import EnergyNode, EnergyTree
from pytest_irene.errors import IreneError, NodeNotFound, UsageError
from pytest_irene.units import format_energy, parse_energy, parse_price


def _mlp(layers: int = 3) -> nn.Module:
    return nn.Sequential(*[nn.Sequential(nn.Linear(8, 8), nn.ReLU()) for _ in range(layers)])


def _predicted(tree: EnergyTree) -> EnergyTree:
    """Fake predictions (no energy model: fast): 1 mJ per leaf, summed upwards."""
    for node in reversed(list(tree.walk())):
        node.predicted_energy_j = 1e-3 if not node.children else sum(c.predicted_energy_j or 0 for c in node.children)
    return tree


X = torch.randn(2, 4, 8)


# -- names -------------------------------------------------------------------------------------


def test_error_classes_import_from_the_package_without_importing_torch() -> None:
    code = (
        "import sys, pytest_irene as i\n"
        "from pytest_irene import IreneError, TraceError, UsageError, DatasetError, ModelFileError, NodeNotFound\n"
        "errors = (TraceError, UsageError, DatasetError, ModelFileError, NodeNotFound)\n"
        "assert all(issubclass(c, IreneError) for c in errors)\n"
        "assert 'TraceError' in dir(i) and '__version__' in dir(i) and '__file__' in dir(i)\n"
        "assert 'torch' not in sys.modules, 'import pytest_irene imported torch'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- EnergyTree in a notebook ------------------------------------------------------------------


def test_tree_and_node_reprs_are_one_short_line() -> None:
    tree = _predicted(irene.trace(_mlp(10), X))
    for text in (repr(tree), repr(tree.root), repr(tree.bottlenecks(3))):
        assert "\n" not in text and len(text) < 400, text
    assert repr(tree.root).count("EnergyNode(") == 1  # no descendants printed
    assert "nodes=" in repr(tree) and "total_j=" in repr(tree)


def test_from_dict_is_the_exact_inverse_of_to_dict() -> None:
    tree = _predicted(irene.trace(_mlp(), X))
    tree.root.children[0].notes["generic_regressor"] = True
    data = tree.to_dict()
    again = EnergyTree.from_dict(data)
    assert again.to_dict() == data
    assert [n.features for n in again.walk()] == [n.features for n in tree.walk()]


def test_find_of_a_missing_scope_is_an_irene_error_and_a_key_error() -> None:
    tree = irene.trace(_mlp(), X)
    with pytest.raises(NodeNotFound, match=r"no node with scope 'nope'") as info:
        tree.find("nope")
    assert isinstance(info.value, KeyError) and isinstance(info.value, IreneError)
    assert not str(info.value).startswith('"')  # KeyError's quoted message
    with pytest.raises(NodeNotFound):
        tree[3]  # type: ignore[index]  # was a TypeError from `3 in scope`



def test_a_misspelt_scope_gets_the_nearest_spellings() -> None:
    """The hint listed only scopes containing the name asked for, so a typo got no hint at all."""
    from collections import OrderedDict

    block = nn.Sequential(OrderedDict(attention=nn.Linear(8, 8), output=nn.Linear(8, 8)))
    tree = irene.trace(nn.Sequential(OrderedDict(encoder=block)), X)
    with pytest.raises(NodeNotFound, match=r"did you mean one of \['encoder\.attention'\]"):
        tree["encoder.atention"]
    with pytest.raises(NodeNotFound, match=r"did you mean one of \['encoder\.attention'\]"):
        tree["attention"]  # a part of a scope still lists the scopes holding it
    with pytest.raises(NodeNotFound, match=r"in Sequential$"):
        tree["pooler"]  # nothing near: no hint

def test_share_of_another_trees_node_is_refused() -> None:
    model = _mlp()
    one, two = _predicted(irene.trace(model, X)), _predicted(irene.trace(model, X))
    assert one.share(one.find("0")) == pytest.approx(1 / 3)
    with pytest.raises(UsageError, match=r"node '0' \(Sequential\) is not in this tree"):
        one.share(two.find("0"))


def test_share_accepts_a_node_whose_children_were_set_without_add_child() -> None:
    leaf = EnergyNode("a", "Linear", "ml", predicted_energy_j=1.0)
    tree = EnergyTree(EnergyNode("", "M", "model", predicted_energy_j=4.0, children=[leaf]))
    assert tree.share(leaf) == 0.25


# -- trace's arguments -------------------------------------------------------------------------


def test_a_misspelt_device_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match=r"device: expected a torch device .* got 'gpu'"):
        irene.trace(_mlp(), X, device="gpu")


def test_a_list_spread_into_arguments_says_so() -> None:
    class TakesAList(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(8, 8)

        def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
            return [self.linear(x) for x in xs]

    with pytest.raises(irene.TraceError, match=r"spread into positional arguments .* as a 1-tuple"):
        irene.trace(TakesAList(), [X, X])
    assert len(irene.trace(TakesAList(), ([X, X],))) == 3


def test_a_meta_model_on_a_real_device_says_it_has_no_weights() -> None:
    with pytest.raises(UsageError, match="lives on meta \\(the meta device: no weights\\)") as info:
        irene.trace(_mlp().to("meta"), X, device="cpu")
    assert "model.to('cpu')" not in str(info.value)  # a meta model cannot be copied to the CPU


def test_tracing_leaves_the_users_model_as_it_was() -> None:
    model = _mlp()
    model.train()
    model[0][0].weight.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for device in ("meta", "cpu"):
        irene.trace(model, X, device=device)
        assert all(m.training for m in model.modules())
        assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
        assert [p.requires_grad for p in model.parameters()][:2] == [False, True]
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
        assert next(model.parameters()).device.type == "cpu"


# -- units -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "joules"),
    [("3mWh", 10.8), ("3 mWh", 10.8), ("5 \u03bcJ", 5e-6), ("5 \u00b5J", 5e-6), ("12j", 12.0), ("1e-3 J", 1e-3)],
)
def test_energies_users_type(text: str, joules: float) -> None:
    assert parse_energy(text) == pytest.approx(joules)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("1MWh", "unknown energy unit 'MWh'"),  # mega, not milli
        ("\u22121J", "expected an energy >= 0"),  # a unicode minus
        ("1,000J", "without separators"),
        (None, r"got None \(a NoneType, not a string\)"),
        (12, "got the bare number 12"),
    ],
)
def test_energies_refused_with_the_reason(value: object, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_energy(value)  # type: ignore[arg-type]


def test_non_finite_energies_are_formatted_in_joules() -> None:
    assert format_energy(math.nan) == "nan J"
    assert format_energy(math.inf) == "inf J"
    assert format_energy(-0.0) == "0 J"


def test_a_price_in_cents_with_the_cent_sign() -> None:
    assert parse_price("13.19\u00a2/kWh") == pytest.approx(13.19)
