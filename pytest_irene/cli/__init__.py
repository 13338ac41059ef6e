"""The ``irene`` console script.

Each sub-command lives in its own module of this package and exposes
``register(subparsers)``, which adds its parser and sets ``func`` (a callable
taking the parsed namespace and returning an exit code). User errors
(:class:`~pytest_irene.errors.IreneError`) are printed without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings

from pytest_irene.errors import IreneError, IreneWarning

COMMAND_MODULES: tuple[str, ...] = (
    "train",
    "predict",
    "crossvalidate",
    "evaluate",
    "calibrate",
    "emulator",
    "serve",
    "sweep",
    "compare",
    "merge",
    "export",
)


class _StoreOnce(argparse._StoreAction):
    """``store`` that refuses a second value: ``--model A --model B`` would otherwise use B silently.

    Options meant to repeat say so with ``action="append"``; every other option
    that takes a value takes one. Which options were seen is kept per parse on the
    namespace (argparse sets defaults there first, so a value equal to the default
    cannot tell "given" from "not given")."""

    def __call__(self, parser, namespace, values, option_string=None):  # noqa: ANN001 - argparse's signature
        if option_string is not None:
            seen = namespace.__dict__.setdefault(_SEEN, set())
            if self.dest in seen:
                raise argparse.ArgumentError(self, "given more than once; give it once")
            seen.add(self.dest)
        super().__call__(parser, namespace, values, option_string)


#: Namespace attribute where :class:`_StoreOnce` records the options a parse has seen.
_SEEN = "_irene_options_seen"


class IreneParser(argparse.ArgumentParser):
    """The ``irene`` parsers (the sub-commands' too: ``add_subparsers`` makes them of this class),
    whose single-value options refuse a repeat (:class:`_StoreOnce`) and whose options must be spelt in full."""

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003 - argparse's signature
        # No abbreviations: `--batch 8` or `--plan-onl` silently taken for another option
        # would run a different measurement than the one typed.
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        self.register("action", None, _StoreOnce)
        self.register("action", "store", _StoreOnce)

    def parse_known_args(self, args=None, namespace=None):  # noqa: ANN001 - argparse's signature
        parsed, extras = super().parse_known_args(args, namespace)
        parsed.__dict__.pop(_SEEN, None)
        return parsed, extras


def build_parser() -> argparse.ArgumentParser:
    parser = IreneParser(
        prog="irene", description="Interpretable energy prediction for transformers (IrEne)."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning(args.command)
            return int(args.func(args) or 0)
    except IreneError as exc:
        print(f"irene {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"irene {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `irene compare ... | head` closed stdout: stop quietly, as other Unix tools do. Point
        # stdout at devnull so the interpreter's final flush does not raise again (Python docs, signal)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


def _one_line_warning(command: str):
    """pytest-irene's own warnings as ``irene COMMAND: warning: ...``; others as Python prints them."""
    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001 - warnings' signature
        if issubclass(category, IreneWarning):
            print(f"irene {command}: warning: {message}", file=sys.stderr)
        else:
            default(message, category, filename, lineno, file, line)

    return show


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
