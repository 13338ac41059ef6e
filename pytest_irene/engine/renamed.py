"""Old field names kept working for one release, with a DeprecationWarning naming the new one.

``EnergyNode(energy=...)`` and ``node.predicted_energy`` (before the fields carried
their unit, ``energy_j``) are user code in the wild: they keep running, and say
what to write instead.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

_Cls = TypeVar("_Cls", bound=type)


def _warn_renamed(cls: type, old: str, new: str) -> None:
    warnings.warn(
        f"{cls.__name__}.{old} is deprecated and will be removed in the next release; use {new}",
        DeprecationWarning,
        stacklevel=3,
    )


def _renamed_attribute(old: str, new: str) -> property:
    """A read/write property ``old`` that forwards to ``new`` with a DeprecationWarning."""

    def get(self: Any) -> Any:
        _warn_renamed(type(self), old, new)
        return getattr(self, new)

    def set_(self: Any, value: Any) -> None:
        _warn_renamed(type(self), old, new)
        setattr(self, new, value)

    return property(get, set_, doc=f"Deprecated alias of :attr:`{new}`.")


def renamed_fields(**renames: str) -> Callable[[_Cls], _Cls]:
    """Keep old field names working for one release, as attributes and as constructor keywords.

    Applied above ``@dataclass`` so that user code written against the old names
    (``EnergyNode(energy=...)``, ``node.predicted_energy``) keeps running, with a
    DeprecationWarning naming the replacement.
    """

    def decorate(cls: _Cls) -> _Cls:
        init = cls.__init__

        @functools.wraps(init)
        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            for old, new in renames.items():
                if old in kwargs:
                    if new in kwargs:
                        raise TypeError(f"{cls.__name__}() got both {old!r} (deprecated) and {new!r}")
                    _warn_renamed(cls, old, new)
                    kwargs[new] = kwargs.pop(old)
            init(self, *args, **kwargs)

        cls.__init__ = __init__  # type: ignore[misc]
        for old, new in renames.items():
            setattr(cls, old, _renamed_attribute(old, new))
        return cls

    return decorate


__all__ = ["renamed_fields"]
