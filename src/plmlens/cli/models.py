"""``plmlens models``: the registry."""

from __future__ import annotations

from rich.table import Table

from plmlens.cli.common import app, out


@app.command("models")
def models_list() -> None:
    """The built-in model registry: name, architecture, layers × heads, parameters, source, licence."""
    from plmlens.models import registry_rows

    table = Table(title="plmlens models", show_edge=False)
    for column in ("name", "architecture", "layers × heads", "parameters", "source", "licence"):
        table.add_column(column, justify="right" if column == "parameters" else "left", no_wrap=column != "source")
    for row in registry_rows():
        table.add_row(
            row["name"], row["architecture"], f"{row['layers']} × {row['heads']}", f"{row['parameters']:,}",
            row["source"], row["licence"],
        )  # fmt: skip
    out.print(table)
    out.print("Any other Hugging Face model id or local directory also works (architecture read from its config).")
