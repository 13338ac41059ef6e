"""Exceptions that reach users.

Every error a user can cause (a bad file, a bad option, a model that cannot be
traced) derives from :class:`IreneError`, so the CLI and the pytest plugin can
print its message as-is instead of a traceback.
"""

from __future__ import annotations


class IreneError(Exception):
    """Base class of every user-facing pytest-irene error."""


class IreneWarning(UserWarning):
    """Base class of the warnings pytest-irene gives users; the CLI prints them as one line."""


class DatasetError(IreneError):
    """A dataset file (``irene-tree/1``) is unreadable or a line is invalid.

    The message names the file, the 1-based line number and the offending field,
    so a user can open the file at the right place.
    """

    def __init__(self, path: str, line: int | None, field: str | None, problem: str):
        self.path = str(path)
        self.line = line
        self.field = field
        self.problem = problem
        where = self.path if line is None else f"{self.path}:{line}"
        what = f"field '{field}': " if field else ""
        super().__init__(f"{where}: {what}{problem}")


class ModelFileError(IreneError):
    """An energy model file is missing, malformed, too new or holds NaN weights."""


class TraceError(IreneError):
    """A model could not be traced; the message names the module that failed."""


class UsageError(IreneError):
    """A bad option or argument value; the message names the option."""


class NodeNotFound(IreneError, KeyError):
    """``tree.find(scope)`` / ``tree[scope]`` has no node of that scope; the message names close matches.

    A ``KeyError`` too, so ``tree[scope]`` behaves like a mapping (``except KeyError`` keeps working)."""

    def __str__(self) -> str:  # KeyError's str() is the repr of its argument: quotes around the message
        return str(self.args[0]) if self.args else ""
