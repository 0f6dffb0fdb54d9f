"""``plmlens compare``: several runs side by side (table 1, top heads, centres of gravity, figures with one
panel per model, and one self-contained compare.html)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from plmlens.cli.common import (
    Column,
    FormatOption,
    OutputFormat,
    OverwriteOption,
    app,
    claim_or_exit,
    commit_or_exit,
    escape_text,
    fail,
    print_note,
    print_table,
    resolve_format,
    status,
)


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
    overwrite: OverwriteOption = False,
    fmt: FormatOption = OutputFormat.auto,
) -> None:
    """Compare runs of several models: tables, figures with one panel per model, and compare.html.

    It prints the compared models; --format csv|json prints every column of models.csv in full instead.
    """
    from plmlens.report.compare import COMPARE_OUTPUTS, CompareError, compare_runs

    fmt = resolve_format(fmt)
    with claim_or_exit(out_dir, COMPARE_OUTPUTS, overwrite=overwrite) as claim:
        try:
            with status("comparing runs"):
                commit_or_exit(claim, lambda staging: compare_runs(run_dirs, out_dir, allow_mixed=allow_mixed,
                                                                   staging=staging))  # fmt: skip
        except CompareError as error:
            raise fail(str(error)) from None
    print_compared_models(out_dir / "models.csv", fmt)
    print_note(f"wrote {escape_text(str(out_dir / 'compare.html'))} (CSV tables and figures/ beside it)", fmt)


_INTEGER_COLUMNS = ("layers", "heads", "parameters", "n_proteins", "n_residues", "init_seed", "n_arcs_total")


def _compared_columns() -> tuple[Column, ...]:
    from plmlens.report.compare import fmt_count, fmt_parameters

    return (
        Column("model", lambda row: str(row["name"])),
        Column("layers × heads", justify="right"),
        Column("parameters", lambda row: fmt_parameters(row["parameters"]), justify="right"),
        Column("data", lambda row: _short_source(str(row["data"]))),
        Column("θ", lambda row: f"{row['threshold']:g}", justify="right"),
        Column("support", justify="right"),
        Column("arcs > θ", lambda row: fmt_count(row["n_arcs_total"]), justify="right"),
    )


def print_compared_models(models_csv: Path, fmt: OutputFormat | str = OutputFormat.auto) -> None:
    """The "Compared models" table from a comparison's models.csv.

    Parameters
    ----------
    models_csv : Path
        Written by `plmlens.report.compare.compare_runs`.
    fmt : OutputFormat or str
        ``table`` shows the main columns (data cut to its file name); ``csv`` and ``json`` carry every column of
        models.csv in full, with missing values empty (CSV) or null (JSON); ``auto`` picks as `resolve_format`.
    """
    frame = pd.read_csv(models_csv)
    # Counts with gaps (a model without a parameter count) stay integers rather than turning into floats.
    frame = frame.astype({name: "Int64" for name in _INTEGER_COLUMNS if name in frame})
    rows = frame.to_dict("records")
    print_table(rows, _compared_columns(), fmt, title="Compared models")


def _short_source(source: str) -> str:
    """A SOURCE with its location cut to the file name, to fit a terminal (compare.html has it whole)."""
    location, sep, options = source.partition("::")
    return Path(location).name + sep + options
