"""Inner pytest sessions for the plugin tests (``pytester``, in-process).

The plugins are loaded through their installed ``pytest11`` entry points, as in
a user's project; ``conftest.keep_heavy_modules`` keeps torch loaded between sessions.
"""

from __future__ import annotations

import pytest


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    """An in-process inner session. pytest's unraisable-exception plugin runs five full
    garbage collections per session, which with torch loaded costs ~0.5 s: skip it. pytest-benchmark,
    where installed, warns in every inner session that xdist disables it: block it too."""
    return pytester.runpytest("-p", "no:unraisableexception", "-p", "no:cacheprovider", "-p", "no:benchmark", *args)
