"""The ``plmlens`` command: a thin layer over the library (all logic lives in the subpackages).

One module per command group: `proteins` (describe, sources), `models`, `analyze` (analyze, merge),
`probe`, `causal` (ablate, jacobian), `report` (report, show), `compare` and `demo`.
"""

from __future__ import annotations

import logging
import sys

from plmlens.cli import analyze, causal, compare, demo, models, probe, proteins, report  # noqa: F401 -- registers the commands
from plmlens.cli.common import app, default_source, fail

__all__ = ["app", "default_source", "fail", "main"]


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    app()
