"""The energy explorer: IrEne-viz for pytest-irene.

Three views of the same data, drawn by the same small vanilla JS (``static/``):

- a self-contained HTML report (:mod:`.html`) written by ``--irene-html`` and
  ``irene predict --html``;
- a local Flask app (:mod:`.app`, ``irene serve``) with a JSON API;
- sweeps over batch size and sequence length (:mod:`.sweep`, ``irene sweep``).

Importing this package (and :mod:`.html`, :mod:`.payload`,
:mod:`.pytest_plugin`) never imports torch: the report writer runs in every
pytest session. Tracing and prediction are imported lazily by :mod:`.models`.
"""

from __future__ import annotations

from pytest_irene.explorer.html import render_report, write_report

__all__ = ["render_report", "write_report"]
