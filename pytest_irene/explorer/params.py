"""Validation of user-supplied explorer parameters (web requests and CLI options).

The web app answers a bad parameter with 400 and a JSON error naming it; the
CLI prints the same message. Both go through these functions, so a limit or a
message is defined once.
"""

from __future__ import annotations

import re

from pytest_irene.errors import UsageError

_INTEGER = re.compile(r"[+-]?[0-9]+")
#: More digits than any size a machine runs; ``int()`` itself refuses a string past 4300 digits
#: with a ValueError (a 500 from the web app, a traceback from the CLI).
MAX_DIGITS = 18


def too_long(text: str) -> bool:
    """Whether the integer ``text`` (ASCII digits, a sign) has more than :data:`MAX_DIGITS` digits."""
    return len(text.lstrip("+-").lstrip("0")) > MAX_DIGITS

#: The largest batch and sequence a CLI point takes (``irene predict``, ``irene sweep``): beyond,
#: a tree's flop counts leave the range a float holds exactly, and no machine runs such a call.
MAX_BATCH_SIZE = 65536
MAX_SEQ_LEN = 1 << 20


class RequestError(UsageError):
    """A request (or CLI sweep) whose values the model refuses; the web app answers 400.

    The tracer raises :class:`UsageError` for inputs a model cannot take (a
    sequence longer than its position table): that is the request's fault, not the
    model's, unlike a factory that fails to build (422). ``parameter`` names the
    parameter when one is to blame, ``None`` when it is the combination."""

    parameter: str | None = None


class ParameterError(RequestError):
    """A bad value for one named parameter (``batch_size``, ``seq_lens``, ``model`` ...)."""

    def __init__(self, parameter: str, problem: str):
        self.parameter = parameter
        self.problem = problem
        super().__init__(f"{parameter}: {problem}")


def parse_int(value: str | int | None, parameter: str, *, minimum: int = 1, maximum: int | None = None) -> int:
    """One integer in ``[minimum, maximum]``; ``ParameterError`` naming ``parameter`` otherwise."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ParameterError(parameter, "missing; expected an integer")
    text = str(value).strip()
    # ASCII digits only, as the CLI's options: int() also takes '８' or '1_000', which no form sends
    if not _INTEGER.fullmatch(text):
        raise ParameterError(parameter, f"expected an integer, got {str(value)!r:.60}")
    if too_long(text):
        bound = f"at most {maximum}" if maximum is not None else f"under {MAX_DIGITS} digits"
        raise ParameterError(parameter, f"must be {bound}, got a {len(text.lstrip('+-'))}-digit number")
    number = int(text)
    if number < minimum:
        raise ParameterError(parameter, f"must be at least {minimum}, got {number}")
    if maximum is not None and number > maximum:
        raise ParameterError(parameter, f"must be at most {maximum} (server limit), got {number}")
    return number


def parse_int_list(
    value: str | None, parameter: str, *, minimum: int = 1, maximum: int | None = None, max_items: int = 64
) -> list[int]:
    """A comma-separated list of integers (``8,16,32``), sorted, without duplicates."""
    if value is None or not str(value).strip():
        raise ParameterError(parameter, "missing; expected comma-separated integers such as 8,16,32")
    items = str(value).replace(" ", "").split(",")
    if "" in items:  # "1,,2" or "8,": a value lost to a typo, not one to skip
        raise ParameterError(parameter, f"expected comma-separated integers such as 8,16,32, got {str(value)!r}")
    numbers = sorted({parse_int(p, parameter, minimum=minimum, maximum=maximum) for p in items})
    if not numbers:
        raise ParameterError(parameter, "expected at least one integer")
    if len(numbers) > max_items:
        raise ParameterError(parameter, f"at most {max_items} values, got {len(numbers)}")
    return numbers
