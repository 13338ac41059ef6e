"""Lazy package attributes (PEP 562), shared by ``pytest_irene`` and ``pytest_irene.rig.runtime``.

pytest imports ``pytest_irene`` for every session through the plugin entry
point; importing torch, scikit-learn or NVML there would cost every user's test
run seconds, even runs that never touch the ``irene`` fixture.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    package: str, names: Mapping[str, str], namespace: dict[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: ``names`` maps an attribute to the module defining it.

    An attribute is imported on first use and then cached in ``namespace`` (the
    package's ``globals()``), so later lookups never reach ``__getattr__``."""

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        """The lazy names (not imported yet) and what the module already holds (``__version__``, its
        submodules, names already imported): ``dir()`` and notebook completion see them all."""
        return sorted(set(namespace) | set(names) | set(namespace.get("__all__", ())))

    return __getattr__, __dir__
