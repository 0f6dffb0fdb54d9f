"""What every command shares: the typer app, the two consoles, one-line errors, the default data, the
output format of tables (`print_table`, `OutputFormat`) and progress displays that stay off pipes and logs."""

from __future__ import annotations

import contextlib
import csv
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum, StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.progress import Progress, ProgressColumn
from rich.table import Table
from rich.text import Text

from plmlens.outputs import (
    OutputClaim,
    OutputError,
    OutputSet,
    claim_file,
    claim_output,
    deferred_signals,
    os_error_reason,
)
from plmlens.proteins.sources import shared_data_dir

app = typer.Typer(
    help="What protein language models learn: attention and hidden states against structure and function.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

# Messages, warnings and progress go to stderr; results (tables, "wrote ...") to stdout.
console = Console(stderr=True)
out = Console()

SOURCE_HELP = (
    "A file, directory, glob, 'promod3', 'antibodies', or a dataset file, optionally followed by "
    "'::option=value,...' (see `plmlens proteins sources`)."
)
DEVICE_HELP = "torch device: auto (CUDA when available, else CPU), cpu, cuda, cuda:1, ..."
DTYPE_HELP = "Model precision: auto (bfloat16 on GPUs that support it, else float32), float32, bfloat16, float16."


#: What must not reach a terminal raw: C0 and C1 control characters (newlines, ESC sequences), line and
#: paragraph separators, bidirectional overrides, and lone surrogates (undecodable bytes of file names).
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def printable(value: object) -> str:
    """`value` as text that cannot move the cursor, clear the screen or start a new line on a terminal: control
    characters are written as escapes (``\\n``, ``\\x1b``, ``\\udcff``). For file names, ids, sources and
    reasons, which come from data."""
    return _UNPRINTABLE.sub(lambda match: match.group().encode("unicode_escape").decode("ascii"), str(value))


def escape_text(value: object) -> str:
    """`printable`, with rich markup escaped too: data to put into a message printed with markup."""
    return escape(printable(value))


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print one clear line to stderr and return the exit to raise."""
    console.print(f"[bold red]error:[/] {escape_text(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


OverwriteOption = Annotated[bool, typer.Option("--overwrite", help="Replace the outputs an earlier run left at --out.")]


def claim_or_exit(directory: Path, outputs: OutputSet, *, overwrite: bool = False, resume: bool = False) -> OutputClaim:
    """`plmlens.outputs.claim_output` (lock, check and tidy an output directory before any work), or a
    one-line error and exit 2."""
    try:
        return claim_output(directory, outputs, overwrite=overwrite, resume=resume)
    except OutputError as error:
        raise fail(str(error)) from None


def claim_file_or_exit(path: Path, *, overwrite: bool = False) -> OutputClaim:
    """`plmlens.outputs.claim_file` for a command that writes one file, or a one-line error and exit 2."""
    try:
        return claim_file(path, overwrite=overwrite)
    except OutputError as error:
        raise fail(str(error)) from None


@contextlib.contextmanager
def run_errors(data: str, kept: str = "") -> Iterator[None]:
    """One-line errors for what a long command meets while it runs: a source that turns out damaged as it is
    read (its error names it), a value the command cannot use (named with the data), and a file that cannot
    be written, e.g. a checkpoint on a full disk (exit 1; `kept` says what is left for a second try)."""
    from plmlens.proteins import SourceError

    try:
        yield
    except SourceError as error:
        raise fail(str(error)) from None
    except ValueError as error:
        raise fail(f"{data}: {error}") from None
    except OSError as error:
        where = f"{error.filename}: " if error.filename else ""
        raise fail(f"stopped: {where}{os_error_reason(error)}{kept}", code=1) from None


def commit_or_exit(claim: OutputClaim, save: Callable[[Path], object], kept: str = "") -> None:
    """Write a command's outputs with `save(staging_folder)` and move them into place whole (see
    `OutputClaim.staged`), or a one-line error (e.g. the disk filled up) and exit 1; `kept` says what is left
    for a second try."""
    try:
        with deferred_signals(), claim.staged() as staging:
            save(staging)
    except OSError as error:
        reason = os_error_reason(error)
        raise fail(f"{claim.directory}: the results could not be written ({reason}){kept}", code=1) from None


def default_source() -> str:
    """The built-in default data: the shared antibody structures (variable domains, paratope as binding
    site, IMGT numbering), or the ProMod3 database where they are absent."""
    if (shared_data_dir() / "antibodies" / "MANIFEST.tsv").exists():
        return "antibodies::variable_domain,numbering=imgt"
    return "promod3::antibody,variable_domain,numbering=imgt"


def print_start(command: str, adapter: Any, data: str, where: str = "", after: str = "") -> None:
    """The line a command prints when its model is loaded: the model, its device (and `where`), the data."""
    model, source = escape_text(repr(adapter)), escape_text(data)
    console.print(f"{command}: {model} on {adapter.device}{where}, [bold]{source}[/]{after}", highlight=False)


def load_model_or_exit(model: str, device: str = "auto", dtype: str = "auto", *, random_init: bool = False,
                       init_seed: int = 0, lm_head: bool = False):  # fmt: skip
    """`plmlens.models.load_model` (random weights with ``--random-init``; with its language-model head with
    `lm_head`), or a one-line error and exit 2."""
    from plmlens.models import ModelLoadError, load_model

    try:
        return load_model(model, device=device, dtype=dtype, random_init=random_init, seed=init_seed, lm_head=lm_head)
    except ModelLoadError as error:
        raise fail(str(error)) from None


class OutputFormat(StrEnum):
    """How a command prints its table: ``auto`` (a table on a terminal, CSV otherwise), ``table``, ``csv``,
    ``json``."""

    auto = "auto"
    table = "table"
    csv = "csv"
    json = "json"


FORMAT_HELP = (
    "How to print the table: auto (a table on a terminal, CSV when stdout is a pipe or a file), table, "
    "csv (a header and one line per row, every value in full) or json (an array of objects). In csv and json "
    "stdout holds only the data; every other line goes to stderr."
)

#: The ``--format`` option of every command that prints a table.
FormatOption = Annotated[OutputFormat, typer.Option("--format", help=FORMAT_HELP, case_sensitive=False)]


def resolve_format(fmt: OutputFormat | str) -> OutputFormat:
    """The concrete format for `fmt`: ``auto`` becomes ``table`` when stdout is a terminal and ``csv`` otherwise.

    Parameters
    ----------
    fmt : OutputFormat or str
        The ``--format`` value.

    Returns
    -------
    OutputFormat
        ``table``, ``csv`` or ``json``.
    """
    fmt = OutputFormat(fmt)
    if fmt is OutputFormat.auto:
        # `out.is_terminal` honours TTY_COMPATIBLE / FORCE_COLOR, so a user can ask for tables in a pager.
        return OutputFormat.table if out.is_terminal else OutputFormat.csv
    return fmt


@dataclass(frozen=True)
class Column:
    """One column of a terminal table: its header and how a row is shown in it.

    Parameters
    ----------
    header : str
        The column header; also the row key shown when `show` is None.
    show : callable, optional
        Row -> text for the terminal (e.g. thousands separators, percentages). CSV and JSON never use it:
        they carry the row's raw values.
    justify : {"left", "right"}
        Alignment of the column.
    no_wrap : bool
        Keep the cells on one line (a terminal too narrow for them folds the column instead of cutting it).
    """

    header: str
    show: Callable[[Mapping[str, Any]], str] | None = None
    justify: Literal["left", "right"] = "left"
    no_wrap: bool = False

    def cell(self, row: Mapping[str, Any]) -> Text:
        """The cell of `row`, as plain text (values are never read as rich markup)."""
        if self.show is not None:
            return Text(printable(self.show(row)))
        value = row.get(self.header)
        return Text("" if value is None else printable(value))


def print_note(message: str, fmt: OutputFormat | str) -> None:
    """Print a line that goes with a table: to stdout beside a table, to stderr in CSV or JSON so that stdout
    holds only data.

    Parameters
    ----------
    message : str
        Rich markup.
    fmt : OutputFormat or str
        The command's ``--format``.
    """
    target = out if resolve_format(fmt) is OutputFormat.table else console
    # Rich wraps at the terminal's width; off a terminal a line stays one line (paths are not broken up).
    target.print(message, highlight=False, soft_wrap=not target.is_terminal)


def print_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[Column],
    fmt: OutputFormat | str,
    *,
    title: str | None = None,
    caption: str | None = None,
    show_edge: bool = True,
) -> None:
    """Print rows as a rich table, or as complete CSV or JSON.

    Parameters
    ----------
    rows : sequence of mapping
        The rows with their raw values (numbers as numbers, None where missing). CSV and JSON carry every
        key of every row, in order of first appearance; the terminal table shows `columns`.
    columns : sequence of Column
        The columns of the terminal table.
    fmt : OutputFormat or str
        ``auto``, ``table``, ``csv`` or ``json`` (see `resolve_format`).
    title : str, optional
        Of the terminal table.
    caption : str, optional
        Below the terminal table; on stderr in CSV and JSON, where stdout holds only data.
    show_edge : bool
        Draw the table's outer edge.
    """
    fmt = resolve_format(fmt)
    if fmt is OutputFormat.csv:
        write_csv(rows)
    elif fmt is OutputFormat.json:
        write_json([{key: plain(value) for key, value in row.items()} for row in rows])
    else:
        table = Table(title=title, caption=caption, show_edge=show_edge)
        for column in columns:
            table.add_column(column.header, justify=column.justify, no_wrap=column.no_wrap, overflow="fold")
        for row in rows:
            table.add_row(*(column.cell(row) for column in columns))
        print_wide(table)
        return
    if caption:  # what the numbers mean (e.g. a causal model's support) still reaches the user
        console.print(escape_text(caption), highlight=False, soft_wrap=True)


def print_wide(renderable: Any) -> None:
    """Print to stdout; off a terminal as wide as the renderable needs, so that nothing is wrapped or cut at the
    80 columns rich assumes for pipes and files."""
    if out.is_terminal:
        out.print(renderable)
        return
    natural = Measurement.get(out, out.options.update_width(1 << 16), renderable).maximum
    Console(file=out.file, width=max(natural, out.width), color_system=None, highlight=False).print(renderable)


def fieldnames(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every key of `rows`, in order of first appearance (rows of one table may hold different keys)."""
    return list(dict.fromkeys(key for row in rows for key in row))


def write_csv(rows: Sequence[Mapping[str, Any]]) -> None:
    """Write `rows` to stdout as CSV: a header of `fieldnames`, one line per row, empty where a value is
    missing, ``true``/``false`` for booleans and floats in full precision."""
    writer = csv.writer(out.file, lineterminator="\n")
    names = fieldnames(rows)
    writer.writerow(names)
    for row in rows:
        writer.writerow(csv_cell(row.get(name)) for name in names)
    out.file.flush()


def write_json(payload: Any) -> None:
    """Write `payload` to stdout as indented JSON (after `plain`; NaN becomes null, so the JSON is strict)."""
    out.file.write(json.dumps(plain(payload), indent=2, ensure_ascii=False, allow_nan=False) + "\n")
    out.file.flush()


def plain(value: Any) -> Any:
    """`value` with numpy and pandas scalars as Python numbers, NaN and pandas' missing values as None, paths
    as strings, recursively through dicts, lists and tuples."""
    if isinstance(value, Mapping):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    if isinstance(value, Enum):
        return plain(value.value)
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, bool | str):
        return value
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return plain(value.item())
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, int):
        return value
    with contextlib.suppress(TypeError, ValueError):
        import pandas as pd

        if pd.isna(value):  # pd.NA, pd.NaT
            return None
    return str(value)


def csv_cell(value: Any) -> str:
    """One CSV cell: empty for a missing value, ``true``/``false``, numbers in full (`repr` of floats)."""
    value = plain(value)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def progress_bar(*columns: str | ProgressColumn, disable: bool = False, **options: Any) -> Progress:
    """A rich `Progress` on stderr that shows only when stderr is a terminal, so that pipes and logs
    (``2>log``) get no bars and no escape codes.

    Parameters
    ----------
    *columns : str or ProgressColumn
        As for `rich.progress.Progress`.
    disable : bool
        Hide it anyway (e.g. on ranks other than 0).
    **options
        Further `Progress` options.
    """
    return Progress(*columns, console=console, disable=disable or not console.is_terminal, **options)


def status(message: str) -> contextlib.AbstractContextManager:
    """`console.status` (a spinner on stderr) on a terminal, nothing otherwise."""
    return console.status(message) if console.is_terminal else contextlib.nullcontext()
