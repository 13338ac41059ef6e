"""``irene predict``: the predicted energy tree of a model at one input size.

The model is a bundled architecture (``--model bert-base-uncased``) or user code
(``--module path/to/file.py:make`` or ``--module pkg.mod:make``). The factory
returns a ``torch.nn.Module`` or a ``(module, inputs)`` pair; it may take
``batch_size`` and ``seq_len`` keyword arguments to build inputs of the requested
size. A module returned alone gets the tracer's example inputs when it is a
transformers model, or its own ``irene_inputs(batch_size, seq_len, device)``.

With model features (default) everything happens on the meta device: no weights
are allocated, so even a large model predicts in well under a second.
``--device cpu`` traces on a real device instead, for code whose control flow
depends on tensor values (as the plugin's ``--irene-device``).
``--features all`` measures the resource features of every node on this host
(:func:`pytest_irene.rig.runtime.measure_tree`), which is only meaningful on the rig
the profile was calibrated on, so a different host is refused.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Any

from pytest_irene.engine.feature_sets import ALL
from pytest_irene.errors import ModelFileError, UsageError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "predict",
        help="predict the energy of every module of a model at one input size",
        description=(
            "Trace the model, predict every node with an energy model and print the tree with "
            "energies and shares of the total, the top bottleneck modules and (--breakdown) the "
            "energy by module type."
        ),
        epilog="Example: irene predict --model bert-base-uncased --batch-size 32 --seq-len 256 --breakdown",
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", metavar="NAME",
                       help="bundled architecture, e.g. bert-base-uncased; ARCH[L=4,H=256] for a compact variant "
                       "(as irene sweep)")
    which.add_argument(
        "--module", metavar="PYTHON_PATH:FACTORY", help="factory returning a torch.nn.Module or (module, inputs)"
    )
    p.add_argument("--batch-size", type=int, required=True, metavar="B", help="batch size of the inputs")
    p.add_argument("--seq-len", type=int, required=True, metavar="S", help="sequence length of the inputs")
    p.add_argument(
        "--new-tokens", type=int, default=None, metavar="N",
        help="predict a whole generation: the prompt (--seq-len) then N new tokens with the KV cache",
    )
    p.add_argument("--profile", default="irene-pc1", metavar="P", help="bundled profile or energy model file (default: irene-pc1)")
    p.add_argument("--features", default="model", metavar="model|all", help="feature set (default: model; all measures this host)")
    p.add_argument(
        "--device", default=None,
        help="device model features are traced on (default meta: no weights touched; cpu traces data-dependent "
        "code with real values); with --features all, the device measured on (default: cuda if available, else cpu)",
    )
    p.add_argument(
        "--json", action="store_true",
        help="print exactly one JSON object (tree, bottlenecks, breakdown) instead of tables; "
        "anything the model's code prints goes to stderr",
    )
    p.add_argument("--breakdown", action="store_true", help="also show the energy by module type (paper Tables 10/12)")
    p.add_argument("--top", type=int, default=10, metavar="N", help="number of bottleneck modules shown (default 10)")
    p.add_argument("--html", metavar="PATH", help="also write the interactive HTML report of the tree to PATH")
    p.add_argument("--depth", type=int, default=None, metavar="D", help="show the tree down to this depth (default: all)")
    p.set_defaults(func=run)


def build(args: argparse.Namespace, device: str) -> tuple[Any, Any, str | None]:
    """(model, inputs, model name) for ``--model``/``--module`` on ``device`` (with its LM head for ``--new-tokens``).

    A generation of an encoder-only model is refused here, before anything is built:
    the rule is :func:`~pytest_irene.engine.architectures.generation_problem`'s."""
    from pytest_irene.engine.architectures import build_model, check_architecture, example_inputs, generation_problem

    generate = getattr(args, "new_tokens", None) is not None
    if args.model is not None:
        architecture, overrides = args.model, {}
        if "[" in args.model:  # a compact variant, read as irene sweep reads it
            from pytest_irene.explorer.models import resolve_model

            spec = resolve_model(args.model, parameter="--model")
            architecture, overrides = spec.architecture, dict(spec.overrides)
        check_architecture(architecture, "--model")
        problem = generation_problem(architecture) if generate else None
        if problem is not None:
            raise UsageError(f"--new-tokens: {problem}")
        model = build_model(architecture, device=device, causal_lm=generate, **overrides)
        return model, example_inputs(architecture, args.batch_size, args.seq_len, device=device), args.model

    from pytest_irene.engine.architectures import is_encoder_only
    from pytest_irene.engine.factories import build_from_factory

    try:
        model, inputs = build_from_factory(args.module, args.batch_size, args.seq_len, device=device)
    except UsageError as exc:
        raise UsageError(f"--module {exc}") from None
    if generate and is_encoder_only(getattr(model, "config", None)):
        raise UsageError(f"--new-tokens: {args.module}: {generation_problem(model.config)}")
    return model, inputs, None


def run(args: argparse.Namespace) -> int:
    from pytest_irene.engine.predict.energy_model import EnergyModel
    from pytest_irene.report.tree_report import report, report_json
    from pytest_irene.cli.common import (
        FEATURE_CHOICES, check_choice, check_device_option, console, positive_int, print_json,
    )
    from pytest_irene.outputs import check_output_path, output_error

    from pytest_irene.explorer.params import MAX_BATCH_SIZE, MAX_SEQ_LEN

    batch_size = positive_int("--batch-size", args.batch_size, MAX_BATCH_SIZE)
    seq_len = positive_int("--seq-len", args.seq_len, MAX_SEQ_LEN)
    features = check_choice("--features", args.features, FEATURE_CHOICES)
    if args.top < 0:
        raise UsageError(f"--top: expected a number >= 0, got {args.top}")
    if args.depth is not None and args.depth < 0:
        raise UsageError(f"--depth: expected a number >= 0, got {args.depth}")
    args.batch_size, args.seq_len = batch_size, seq_len
    if args.html:
        check_output_path(args.html, "--html", kind="html")
    try:
        energy_model = EnergyModel.load(args.profile)
    except ModelFileError as exc:
        raise ModelFileError(f"--profile: {exc}") from None

    from pytest_irene.pipeline import predict_with

    new_tokens = positive_int("--new-tokens", args.new_tokens) if args.new_tokens is not None else None
    if new_tokens is not None and features == ALL:
        raise UsageError("--new-tokens: a generation is predicted from model features; use --features model")
    if features == ALL:
        device = _device_for(args, energy_model)
    else:
        device = check_device_option("--device", args.device or "meta")
    # with --json, stdout carries one JSON object: what the user's factory or model prints goes to stderr
    with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
        model, inputs, name = build(args, device)
        # batch and tokens are read from the inputs, as in the plugin: --batch-size/--seq-len only
        # build them, and a factory's own inputs (an image's patches, an unbatched sequence) win
        tree = predict_with(
            energy_model, model, inputs, features, device=device, option="--features",
            model_name=name, max_new_tokens=new_tokens,
        )
    if args.html:
        from pytest_irene.explorer.html import write_report

        try:
            write_report(args.html, [tree], title=f"pytest-irene: {tree.model_name}", profile=energy_model.profile)
        except OSError as exc:
            raise output_error("--html", args.html, exc) from None
    if args.json:
        print_json(report_json(tree, top=args.top))
    else:
        console().print(report(tree, breakdown=args.breakdown, top=args.top, max_depth=args.depth))
    return 0


def _device_for(args: argparse.Namespace, energy_model: Any) -> str:
    """The device ``--features all`` measures on, once this host is known to be the profile's rig."""
    from pytest_irene.pipeline import HOST_DIFFERS, NO_RESOURCE_SET, FeatureModeRefused, choose_features
    try:
        choose_features(ALL, dict(energy_model.hardware or {}), available=energy_model.feature_sets, option="--features")
    except FeatureModeRefused as exc:
        name = energy_model.describe()
        if exc.mode.code == NO_RESOURCE_SET:
            raise UsageError(f"--features all: energy model {name} has no resource-feature regressors") from None
        if exc.mode.code != HOST_DIFFERS:
            raise UsageError(f"--features all: energy model {name} records no hardware fingerprint") from None
        raise UsageError(
            f"--features all: this host is not the rig profile {energy_model.profile} was calibrated on "
            f"({'; '.join(exc.mode.differences)}); resource features measured here would give wrong energies. "
            "Use --features model, or a profile trained on this host (irene calibrate, irene train)"
        ) from None
    import torch

    from pytest_irene.cli.common import check_device_option

    return check_device_option("--device", args.device or ("cuda" if torch.cuda.is_available() else "cpu"), real=True)
