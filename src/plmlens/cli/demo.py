"""``plmlens demo``: the main job on the built-in default data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from plmlens.cli.analyze import analyze
from plmlens.cli.common import app, console, default_source, fail
from plmlens.cli.probe import probe
from plmlens.cli.proteins import describe_with_progress, print_description
from plmlens.cli.report import report
from plmlens.proteins import SourceError


@app.command()
def demo(
    out_dir: Annotated[Path, typer.Option("--out", help="Where the run's files go.")] = Path("runs/demo"),
    limit: Annotated[int | None, typer.Option(help="Stop after N proteins.")] = None,
) -> None:
    """The main job on the built-in default: AntiBERTy over the shared antibody structures (variable
    domains, paratope as binding site), or over the antibody chains of ProMod3 where those are absent."""
    source = default_source()
    console.print(f"plmlens demo: the built-in data [bold]{source}[/]", highlight=False)
    try:
        description = describe_with_progress(source, limit)
    except SourceError as error:
        raise fail(str(error)) from None
    print_description(source, description)
    # The demo always computes afresh: a checkpoint left by an interrupted demo is replaced.
    analyze(model="antiberty", data=source, out_dir=out_dir, limit=limit, properties="default,contact_ranges",
            overwrite=True)  # fmt: skip
    probe(model="antiberty", data=source, out_dir=out_dir / "probe", limit=limit)
    report(run_dir=out_dir)
    console.print(f"plmlens demo: results in [bold]{out_dir.resolve()}[/]", highlight=False)
