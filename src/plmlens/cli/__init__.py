"""The ``plmlens`` command: a thin layer over the library (all logic lives in the subpackages).

One module per command group: `proteins` (describe, sources), `models`, `analyze` (analyze, merge),
`probe`, `causal` (ablate, jacobian), `features` (extract, train, concepts, show, repertoire), `report`
(report, show), `compare` and `demo`.
"""

from __future__ import annotations

import logging
import sys
import warnings

from plmlens.cli import analyze, causal, compare, demo, features, models, probe, proteins, report  # noqa: F401 -- registers the commands
from plmlens.cli.common import app, console, default_source, escape_text, fail, printable
from plmlens.outputs import Interrupted

__all__ = ["app", "default_source", "fail", "main"]


class _PrintableFormatter(logging.Formatter):
    """Log lines carry ids and file names from data: no control character of theirs reaches the terminal."""

    def format(self, record: logging.LogRecord) -> str:
        return printable(super().format(record))


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    # One line per warning (not Python's two, with the source line), its data escaped.
    console.print(f"[yellow]warning:[/] {escape_text(message)}", highlight=False, soft_wrap=True)


def main() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_PrintableFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    warnings.showwarning = _show_warning
    try:
        app()
    except Interrupted as stopped:
        # A signal held back while results were moved into place: they are complete, then the command stops.
        console.print(f"interrupted: {stopped}", highlight=False, markup=False)
        sys.exit(stopped.exit_code)
