"""The ``irene`` console script.

Each sub-command lives in its own module of this package and exposes
``register(subparsers)``, which adds its parser and sets ``func`` (a callable
taking the parsed namespace and returning an exit code). User errors
(:class:`~pytest_irene.errors.IreneError`) are printed without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
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
    "export",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
