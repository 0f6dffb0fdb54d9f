"""``plmlens probe``: linear probes per layer, on one process or across torchrun ranks."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

from plmlens.cli.common import (
    DEVICE_HELP,
    DTYPE_HELP,
    SOURCE_HELP,
    FormatOption,
    OutputFormat,
    OverwriteOption,
    app,
    claim_or_exit,
    commit_or_exit,
    escape_text,
    fail,
    load_model_or_exit,
    out,
    print_note,
    print_start,
    print_table,
    progress_bar,
    resolve_format,
    run_errors,
)
from plmlens.proteins import SourceError, iter_records


@app.command()
def probe(
    model: Annotated[str, typer.Option(help="Registry name, Hugging Face id or directory.")],
    data: Annotated[str, typer.Option(help=SOURCE_HELP)],
    out_dir: Annotated[Path, typer.Option("--out", help="Directory for probes.csv, contact_regression.csv, ...")],
    tasks: Annotated[
        str,
        typer.Option(
            help="Comma-separated: secondary_structure, binding_site, contact, contact_regression, "
            "or any label property (ptm, helix, aa_C, ...)."
        ),
    ] = "secondary_structure,binding_site,contact,contact_regression",
    train_fraction: Annotated[
        float, typer.Option(help="Share of proteins used for training (split by protein).")
    ] = 0.8,
    seed: Annotated[int, typer.Option(help="Seed of the split and the subsampling.")] = 0,
    limit: Annotated[int | None, typer.Option(help="Use at most N proteins.")] = None,
    max_length: Annotated[int, typer.Option(help="Token limit per protein.")] = 512,
    batch_size: Annotated[int, typer.Option(help="Proteins per forward pass.")] = 8,
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = "auto",
    dtype: Annotated[str, typer.Option(help=DTYPE_HELP)] = "auto",
    random_init: Annotated[
        bool, typer.Option("--random-init", help="Control: the model's architecture with fresh random weights.")
    ] = False,
    init_seed: Annotated[int, typer.Option(help="Seed of the --random-init weights.")] = 0,
    overwrite: OverwriteOption = False,
    fmt: FormatOption = OutputFormat.auto,
) -> None:
    """Linear probes per layer on embeddings and attention, and contact regression over all heads.

    Layer 0 is the embedding layer's output (embedding probes only); layers 1 to L the transformer layers.

    Under torchrun every rank extracts features from its share of the proteins and rank 0 fits the probes.

    --format csv|json prints one row per task, representation, layer and metric (the rows of probes.csv), then
    the contact regression's rows (task contact_regression, metric precision, with range and k).
    """
    fmt = resolve_format(fmt)
    from plmlens.distributed import destroy_process_group, init_process_group
    from plmlens.models import resolve_device
    from plmlens.probing import PROBE_OUTPUTS
    from plmlens.probing.tasks import known_tasks

    chosen = [t.strip() for t in tasks.split(",") if t.strip()]
    known = known_tasks()  # the paper's tasks and every label property (ptm, helix, aa_C, ...)
    unknown = sorted(set(chosen) - set(known))
    if unknown:
        raise fail(f"unknown task(s) {', '.join(unknown)}; known: {', '.join(known)}")
    try:
        records = iter_records(data)
    except SourceError as error:
        raise fail(str(error)) from None
    try:
        torch_device = resolve_device(device)
    except ValueError as error:
        raise fail(str(error)) from None
    group = init_process_group(torch_device)
    # Rank 0 writes the results: it alone claims --out (checked, locked) before the model is loaded.
    claim = claim_or_exit(out_dir, PROBE_OUTPUTS, overwrite=overwrite) if group.is_main else None
    with claim or contextlib.nullcontext():
        adapter = load_model_or_exit(model, str(torch_device), dtype, random_init=random_init, init_seed=init_seed)
        if group.is_main:
            print_start("probe", adapter, data)
        settings = dict(train_fraction=train_fraction, seed=seed, limit=limit, max_length=max_length,
                        batch_size=batch_size)  # fmt: skip
        result = _compute(adapter, records, chosen, group, data, **settings)
        destroy_process_group()
        if claim is None:
            return
        result.info["data"] = data
        commit_or_exit(claim, result.save)
    print_probe_results(result, fmt)
    print_note(f"wrote {escape_text(str(out_dir))}/probes.csv, contact_regression.csv, summary.json", fmt)


def _compute(adapter, records, tasks: list[str], group, data: str, **settings):
    """`plmlens.probing.probe` with a progress bar; a source it cannot use ends the command with one line."""
    from plmlens.probing import probe as run_probe

    with progress_bar(
        TextColumn("[bold]probe {task.fields[phase]}[/]"), BarColumn(), MofNCompleteColumn(), TextColumn("batches"),
        TimeElapsedColumn(), disable=not group.is_main,
    ) as progress:  # fmt: skip
        task = progress.add_task("probe", total=None, phase="load")

        def update(phase: str, done: int, total: int) -> None:
            progress.update(task, completed=done, total=total, phase=phase)

        with run_errors(data):
            return run_probe(adapter, records, tasks, progress=update, group=group, **settings)


def probe_rows(result) -> list[dict]:
    """A `ProbeResult` as one table: the rows of probes.csv (``task``, ``representation``, ``layer``, ``metric``,
    ``value``, ``n_train``, ``n_test``, ``chance``), then one row per contact-regression score with task
    ``contact_regression``, representation ``attention``, metric ``precision`` and its ``range``, ``k`` and
    ``method`` (``regression``, and the floors beside it: ``top_heads``, ``template``)."""
    rows = result.probes.to_dict("records")
    for row in result.contact_regression.to_dict("records"):
        rows.append({"task": "contact_regression", "representation": "attention", "layer": None,
                     "metric": "precision", "value": row["precision"], "n_train": None, "n_test": row["n_test"],
                     "chance": row["chance"], "range": row["range"], "k": row["k"],
                     "method": row.get("method", "regression")})  # fmt: skip
    return rows


def print_probe_results(result, fmt: OutputFormat | str = OutputFormat.auto) -> None:
    """Print a `ProbeResult`: one line per task, representation and metric with its value per layer (and one per
    contact-regression score) on a terminal, or the rows of `probe_rows` as CSV or JSON.

    Parameters
    ----------
    result : ProbeResult
        What `plmlens.probing.probe` returned.
    fmt : OutputFormat or str
        ``auto``, ``table``, ``csv`` or ``json``.
    """
    fmt = resolve_format(fmt)
    if fmt is not OutputFormat.table:
        print_table(probe_rows(result), (), fmt)
        return
    # The terminal form keeps a task's whole layer profile on one line, which a table could not show.
    probes = result.probes
    for (task_name, representation, metric), rows in probes.groupby(["task", "representation", "metric"], sort=False):
        rows = rows.sort_values("layer")
        values = " ".join(f"{v:.2f}" for v in rows.value)
        span = f"{rows.layer.iloc[0]}-{rows.layer.iloc[-1]}"
        chance = rows.chance.iloc[0]
        out.print(f"{task_name:<20} {representation:<10} {metric:<18} layers {span}: {values}  (chance {chance:.2f})",
                  highlight=False, markup=False, soft_wrap=True)  # fmt: skip
    top = result.info.get("top_heads", {})
    names = {"regression": "contact regression", "top_heads": f"top {top.get('k', '?')} heads mean",
             "template": "positional template"}  # fmt: skip
    for _, row in result.contact_regression.iterrows():
        name = names.get(row.get("method", "regression"), str(row.get("method")))
        line = f"{name:<20} {row['range']:<7} P@{row['k']:<4} {row.precision:.3f}  (chance {row.chance:.3f})"
        out.print(line, highlight=False, markup=False, soft_wrap=True)
