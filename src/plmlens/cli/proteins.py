"""``plmlens proteins``: what a source holds, and the source syntax."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

from plmlens.cli.common import (
    SOURCE_HELP,
    Column,
    FormatOption,
    OutputFormat,
    OverwriteOption,
    app,
    claim_file_or_exit,
    console,
    escape_text,
    fail,
    out,
    print_note,
    print_table,
    progress_bar,
    resolve_format,
    write_json,
)
from plmlens.ioutils import write_text_atomic
from plmlens.proteins import Description, SourceError, describe, iter_records
from plmlens.proteins.record import Protein
from plmlens.proteins.skips import Skipped

proteins_app = typer.Typer(help="Protein sources: structures, the ProMod3 database, datasets, FASTA.")
app.add_typer(proteins_app, name="proteins")


def describe_with_progress(source: str, limit: int | None, properties: str = "default") -> Description:
    """`describe` a SOURCE with a progress bar: the background of each property (names or groups, as
    ``analyze --properties`` takes them), counted as the property registry defines it."""
    from plmlens.analysis import get_properties, label_properties, property_counters

    counters = property_counters(get_properties([p.strip() for p in properties.split(",") if p.strip()]))

    def label_counters(label: str) -> dict:
        # Labels the proteins hold are counted too, by their properties, with no list to edit.
        return property_counters(label_properties(label))

    text = source if limit is None else f"{source}{',' if '::' in source else '::'}limit={limit}"
    records = iter_records(text)
    with progress_bar(
        TextColumn("[bold]describe[/]"), BarColumn(), MofNCompleteColumn(), TextColumn("proteins"),
        TextColumn("{task.fields[residues]:,} residues"), TextColumn("{task.fields[skipped]} skipped"),
        TimeElapsedColumn(), transient=False,
    ) as progress:  # fmt: skip
        task = progress.add_task("describe", total=limit, residues=0, skipped=0)
        state = {"residues": 0, "skipped": 0}

        def counted(items):
            for record in items:
                if isinstance(record, Skipped):
                    state["skipped"] += 1
                    console.print(f"[yellow]skipped[/] {escape_text(str(record))}", highlight=False, soft_wrap=True)
                    progress.update(task, skipped=state["skipped"])
                yield record

        def advance(protein: Protein) -> None:
            state["residues"] += len(protein)
            progress.update(task, advance=1, residues=state["residues"])

        return describe(counted(records), progress=advance, counters=counters, label_counters=label_counters)


def _format_share(value: float | None) -> str:
    return "n/a (no labels)" if value is None else f"{100 * value:.2f}%"


#: The terminal table of background frequencies; CSV carries the rows of `background_rows` as they are.
BACKGROUND_COLUMNS = (
    Column("annotation"),
    Column("share", lambda row: _format_share(row["share"]), justify="right"),
    Column("hits / defined", lambda row: f"{row['hits']:,} / {row['total']:,}", justify="right"),
)


def background_rows(result: Description) -> list[dict]:
    """One row per annotation: ``annotation``, ``share`` (a fraction, None without labels), ``hits``, ``total``."""
    return [
        {"annotation": name, "share": counter.share, "hits": counter.hits, "total": counter.total}
        for name, counter in result.counters.items()
    ]


def print_description(source: str, result: Description, fmt: OutputFormat | str = OutputFormat.table) -> None:
    """Print a `Description`: a summary and the background frequencies.

    Parameters
    ----------
    source : str
        The SOURCE it describes.
    result : Description
        What `describe` counted.
    fmt : OutputFormat or str
        ``table``: the summary and a table; ``csv``: the background frequencies on stdout, the summary on
        stderr; ``json``: on stdout the object ``--json PATH`` writes (``source`` and `Description.to_dict`).
    """
    fmt = resolve_format(fmt)
    if fmt is OutputFormat.json:
        write_json({"source": source, **result.to_dict()})
        return
    print_note(f"[bold]{escape_text(source)}[/]: {result.n_proteins:,} proteins, {result.n_residues:,} residues, "
               f"{len(result.skipped)} skipped", fmt)  # fmt: skip
    lengths = result.length_distribution()
    if lengths:
        print_note(
            "lengths: " + ", ".join(f"{k} {v:,.0f}" if k != "mean" else f"{k} {v:,.1f}" for k, v in lengths.items()),
            fmt,
        )
    print_table(background_rows(result), BACKGROUND_COLUMNS, fmt, title="background frequencies", show_edge=False)
    numbering = result.numbering_line()
    if numbering:
        print_note(escape_text(numbering), fmt)
    lines = result.unlabelled_lines()
    if lines:
        print_note("unlabelled, by annotator:", fmt)
        for line in lines:
            print_note(f"  {escape_text(line)}", fmt)
    if result.skipped:
        reasons: dict[str, int] = {}
        for skipped in result.skipped:
            reasons[skipped.reason] = reasons.get(skipped.reason, 0) + 1
        print_note("skipped, by reason:", fmt)
        for reason, count in sorted(reasons.items(), key=lambda kv: -kv[1])[:20]:
            print_note(f"  {count:5d}  {escape_text(reason)}", fmt)


@proteins_app.command("describe")
def proteins_describe(
    source: Annotated[str, typer.Argument(help=SOURCE_HELP)],
    limit: Annotated[int | None, typer.Option(help="Stop after N proteins.")] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Also write the numbers as JSON here.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --json file.")] = False,
    properties: Annotated[
        str, typer.Option(help="Comma-separated property names or groups (default, contact_ranges, ...).")
    ] = "default",
    fmt: FormatOption = OutputFormat.auto,
) -> None:
    """How many proteins and residues a SOURCE holds, their lengths, and the background of each property
    (the share of its defined residues or pairs where it holds), named as analyze names them.

    --format csv prints the background frequencies (annotation, share, hits, total; the summary goes to stderr);
    --format json prints the same object as --json PATH writes.
    """
    fmt = resolve_format(fmt)
    # The --json file is checked (and its folder locked) before the source is read, which can take long.
    with claim_file_or_exit(json_path, overwrite=overwrite) if json_path else contextlib.nullcontext():
        try:
            result = describe_with_progress(source, limit, properties)
        except (SourceError, KeyError) as error:
            raise fail(str(error).strip("'\"")) from None
        print_description(source, result, fmt)
        if json_path is not None:
            payload = {"source": source, **result.to_dict()}
            write_text_atomic(json_path, json.dumps(payload, indent=2) + "\n")
            console.print(f"wrote {escape_text(str(json_path))}", highlight=False)


def save_with_progress(source: str, path: Path, limit: int | None = None) -> Path:
    """Read a SOURCE once, with a progress bar, and save it as a protein set (`plmlens.proteins.store`)."""
    from plmlens.proteins.store import save_protein_set

    text = source if limit is None else f"{source}{',' if '::' in source else '::'}limit={limit}"
    records = iter_records(text)
    with progress_bar(
        TextColumn("[bold]read[/]"), BarColumn(), MofNCompleteColumn(), TextColumn("proteins"),
        TextColumn("{task.fields[skipped]} skipped"), TimeElapsedColumn(), transient=False,
    ) as progress:  # fmt: skip
        task = progress.add_task("read", total=limit, skipped=0)

        def counted(items):
            skipped = 0
            for record in items:
                if isinstance(record, Skipped):
                    skipped += 1
                    progress.update(task, skipped=skipped)
                else:
                    progress.advance(task)
                yield record

        return save_protein_set(counted(records), path, source=text)


@proteins_app.command("save")
def proteins_save(
    source: Annotated[str, typer.Argument(help=SOURCE_HELP)],
    out_path: Annotated[Path, typer.Option("--out", help="The protein set to write (NAME.proteins.npz).")],
    limit: Annotated[int | None, typer.Option(help="Stop after N proteins.")] = None,
    overwrite: OverwriteOption = False,
) -> None:
    """Read and annotate a SOURCE once (DSSP, binding sites) and save it as a protein set, a source that
    describe, analyze and probe then read in seconds."""
    from plmlens.proteins.store import SUFFIX

    if not out_path.name.endswith(SUFFIX):
        raise fail(f"{out_path}: a protein set's name ends with {SUFFIX}")
    with claim_file_or_exit(out_path, overwrite=overwrite):
        try:
            path = save_with_progress(source, out_path, limit)
        except SourceError as error:
            raise fail(str(error)) from None
        except OSError as error:
            raise fail(f"{out_path}: could not be written ({error.strerror or error})", code=1) from None
    where = escape_text(str(path))
    console.print(f"wrote {where}; use it as --data {where}", highlight=False)


@proteins_app.command("sources")
def proteins_sources() -> None:
    """Explain the SOURCE syntax and its options."""
    from plmlens.proteins import sources
    from plmlens.proteins.labels import ANNOTATORS

    out.print(sources.__doc__, highlight=False, markup=False)
    if ANNOTATORS:
        out.print("Annotators (SOURCE option → labels):", highlight=False, markup=False)
        for annotator in ANNOTATORS.values():
            choices = "|".join(annotator.choices) if annotator.choices else "VALUE"
            out.print(
                f"  {annotator.option}={choices}  {annotator.name}: {annotator.description} "
                f"(labels: {', '.join(annotator.labels)})",
                highlight=False,
                markup=False,
            )
