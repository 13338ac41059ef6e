"""The self-contained HTML page of the explorer.

One file, no network: the CSS and JS in ``static/`` are read from the package
and inlined, the data travel as one JSON block that the JS draws. A report can
be attached to a CI run, mailed or opened years later and still work. The web
app (:mod:`.app`) serves the same page with ``kind: "app"`` data, so both views
share one renderer.
"""

from __future__ import annotations

import html as _html
import json
import math
import os
from collections.abc import Iterable
from datetime import datetime, timezone
from functools import lru_cache
from importlib import resources
from typing import Any

from pytest_irene.atomic import atomic_write_text
from pytest_irene.compare.records import CallRecord
from pytest_irene.engine.tree import EnergyTree
from pytest_irene.explorer.payload import call_views

#: Asset files inlined into every page, in this order.
STYLES: tuple[str, ...] = ("explorer.css",)
SCRIPTS: tuple[str, ...] = ("format.js", "explorer.js", "charts.js", "app.js")


@lru_cache(maxsize=None)
def asset(name: str) -> str:
    """The text of a file in ``pytest_irene/explorer/static``."""
    return resources.files(__package__).joinpath("static", name).read_text(encoding="utf-8")


def _clean(value: Any) -> Any:
    """JSON-safe copy: non-finite floats become ``null`` (``JSON.parse`` rejects NaN).

    Walked with a stack, not recursion: recursing took four Python frames per tree level, so
    a model nested 250 modules deep ended the report in a ``RecursionError``."""
    if not isinstance(value, (dict, list, tuple, float)):
        return value
    top: list[Any] = [None]
    stack: list[tuple[Any, Any, Any]] = [(value, top, 0)]  # (value, container of its copy, key there)
    while stack:
        item, into, key = stack.pop()
        if isinstance(item, float):
            into[key] = item if math.isfinite(item) else None
        elif isinstance(item, dict):
            copy: dict[str, Any] = {str(k): None for k in item}  # the order of the original
            into[key] = copy
            stack.extend((v, copy, str(k)) for k, v in reversed(item.items()))  # in order: a repeated str(k) keeps the last
        elif isinstance(item, (list, tuple)):
            into[key] = items = [None] * len(item)
            stack.extend((v, items, i) for i, v in enumerate(item))
        else:
            into[key] = item
    return top[0]


def json_for_script(data: Any) -> str:
    """JSON that can sit inside ``<script type="application/json">`` whatever the strings hold.

    ``<``, ``>`` and ``&`` are escaped as ``\\u003c`` etc., so a scope or a test
    id containing ``</script>`` cannot end the block early.
    """
    try:  # the copy is only needed for a NaN or infinity: copying a 60-layer MoE's 40 MB payload took 3 s
        text = json.dumps(data, separators=(",", ":"), allow_nan=False)
    except (ValueError, TypeError):  # a non-finite number, or a key JSON does not take
        text = json.dumps(_clean(data), separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_page(data: dict[str, Any], title: str) -> str:
    """A complete HTML document showing ``data`` (``{"kind": "report"|"app", ...}``)."""
    styles = "\n".join(asset(n) for n in STYLES)
    scripts = "\n".join(asset(n) for n in SCRIPTS)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_html.escape(title)}</title>\n"
        f"<style>\n{styles}\n</style>\n</head>\n"
        '<body class="irene">\n'
        f'<header class="irene-header"><h1>{_html.escape(title)}</h1>'
        '<p class="irene-sub" id="irene-sub"></p></header>\n'
        '<main id="irene-root"><noscript>This report needs JavaScript to draw the trees.</noscript></main>\n'
        '<div id="irene-tip" class="irene-tip" role="tooltip" hidden></div>\n'
        f'<script type="application/json" id="irene-data">{json_for_script(data)}</script>\n'
        f"<script>\n{scripts}\n</script>\n"
        "</body>\n</html>\n"
    )


def report_data(
    items: Iterable[EnergyTree | CallRecord] | EnergyTree | CallRecord,
    *,
    sweep: dict[str, Any] | None = None,
    profile: str | None = None,
) -> dict[str, Any]:
    """The JSON block of a report: call views (and optionally a sweep).

    ``profile`` names the energy model for trees that do not say which one predicted them."""
    views = call_views(items if not isinstance(items, (EnergyTree, CallRecord)) else [items])
    for view in views:
        if view["profile"] is None:
            view["profile"] = profile
    return {
        "kind": "report",
        "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        # the terminal summary's "... J predicted in all": the same sum, so the page can say it too
        "total_j": sum(v["total_j"] for v in views if v["total_j"] is not None),
        "calls": views,
        "sweep": sweep,
    }


def render_report(
    items: Iterable[EnergyTree | CallRecord] | EnergyTree | CallRecord,
    *,
    title: str = "pytest-irene energy report",
    sweep: dict[str, Any] | None = None,
    profile: str | None = None,
) -> str:
    """The report page for trees and/or call records (and optionally a sweep)."""
    return render_page(report_data(items, sweep=sweep, profile=profile), title)


def write_report(
    path: str | os.PathLike[str],
    trees_or_records: Iterable[EnergyTree | CallRecord] | EnergyTree | CallRecord,
    *,
    title: str = "pytest-irene energy report",
    sweep: dict[str, Any] | None = None,
    profile: str | None = None,
) -> None:
    """Write the report atomically: a reader sees the previous page or the new one, never half.

    ``trees_or_records``: predicted :class:`EnergyTree` objects (``irene predict --html``),
    :class:`CallRecord` objects (``--irene-html``) or a mix; ``profile`` labels trees that
    do not carry their profile in ``tree.meta``."""
    atomic_write_text(path, render_report(trees_or_records, title=title, sweep=sweep, profile=profile))
