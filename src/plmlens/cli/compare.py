"""``plmlens compare``: several runs side by side (table 1, top heads, centres of gravity, figures with one
panel per model, and one self-contained compare.html)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich.markup import escape
from rich.table import Table

from plmlens.cli.common import app, console, fail, out


@app.command()
def compare(
    run_dirs: Annotated[
        list[Path],
        typer.Argument(
            metavar="RUN_DIR", help="Directories written by `plmlens analyze` (probe results in RUN_DIR/probe)."
        ),
    ],
    out_dir: Annotated[Path, typer.Option("--out", help="Directory for the CSV tables, figures/ and compare.html.")],
    allow_mixed: Annotated[
        bool, typer.Option("--allow-mixed", help="Compare runs made with different attention thresholds θ.")
    ] = False,
) -> None:
    """Compare runs of several models: tables, figures with one panel per model, and compare.html."""
    from plmlens.report.compare import CompareError, compare_runs, fmt_count, fmt_parameters

    try:
        with console.status("comparing runs"):
            written = compare_runs(run_dirs, out_dir, allow_mixed=allow_mixed)
    except CompareError as error:
        raise fail(str(error)) from None
    table = Table(title="Compared models")
    for column in ("model", "layers × heads", "parameters", "data", "θ", "support", "arcs > θ"):
        text = column in ("model", "data")
        table.add_column(column, justify="left" if text else "right", overflow="fold" if text else "ellipsis")
    for row in pd.read_csv(written["models.csv"]).to_dict("records"):
        table.add_row(escape(str(row["name"])), row["layers × heads"], fmt_parameters(row["parameters"]),
                      escape(_short_source(str(row["data"]))), f"{row['threshold']:g}", row["support"],
                      fmt_count(row["n_arcs_total"]))  # fmt: skip
    out.print(table)
    out.print(f"wrote {written['compare.html']} (CSV tables and figures/ beside it)", highlight=False)


def _short_source(source: str) -> str:
    """A SOURCE with its location cut to the file name, to fit a terminal (compare.html has it whole)."""
    location, sep, options = source.partition("::")
    return Path(location).name + sep + options
