"""``plmlens models``: the registry."""

from __future__ import annotations

from plmlens.cli.common import Column, FormatOption, OutputFormat, app, print_note, print_table, resolve_format

#: The terminal table of `plmlens models`; CSV and JSON carry the rows of `registry_rows` as they are.
MODEL_COLUMNS = (
    Column("name", no_wrap=True),
    Column("architecture", no_wrap=True),
    Column("layers × heads", lambda row: f"{row['layers']} × {row['heads']}", no_wrap=True),
    Column("parameters", lambda row: _millions(row["parameters"]), justify="right", no_wrap=True),
    Column("source"),
    Column("licence"),
)


def _millions(count: int) -> str:
    # Compact, so that source and licence keep room on an 80-column terminal (CSV and JSON carry the count).
    return f"{count / 1e9:.3g} B" if count >= 1e9 else f"{count / 1e6:.3g} M"


@app.command("models")
def models_list(fmt: FormatOption = OutputFormat.auto) -> None:
    """The built-in model registry: name, architecture, layers × heads, parameters, source, licence.

    In a pipe or with --format csv|json: every row in full (name, architecture, layers, heads, parameters, ...).
    """
    from plmlens.models import registry_rows

    fmt = resolve_format(fmt)
    print_table(registry_rows(), MODEL_COLUMNS, fmt, title="plmlens models", show_edge=False)
    print_note("Any other Hugging Face model id or local directory also works (architecture read from its config).",
               fmt)  # fmt: skip
