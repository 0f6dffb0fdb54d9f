"""``plmlens ablate`` and ``plmlens jacobian``: what the model uses, and what its output knows about contacts."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from plmlens.cli.common import (
    DEVICE_HELP,
    DTYPE_HELP,
    SOURCE_HELP,
    Column,
    FormatOption,
    OutputFormat,
    OverwriteOption,
    app,
    claim_or_exit,
    commit_or_exit,
    escape_text,
    fail,
    load_model_or_exit,
    print_note,
    print_start,
    print_table,
    progress_bar,
    resolve_format,
    run_errors,
)
from plmlens.proteins import SourceError, iter_records

if TYPE_CHECKING:
    import pandas as pd

    from plmlens.causal import AblationResult, JacobianResult

#: Where `plmlens jacobian` keeps finished maps until the run is written: an interrupted run, started again with
#: the same options, resumes from them.
JACOBIAN_CACHE = ".jacobian_cache"

ModelOption = Annotated[str, typer.Option(help="Registry name, Hugging Face id or directory (with its LM head).")]
DataOption = Annotated[str, typer.Option(help=SOURCE_HELP)]


def _number(value: object, digits: int = 3, signed: bool = False) -> str:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return ""
    if number != number:
        return "–"
    return f"{number:+.{digits}f}" if signed else f"{number:.{digits}f}"


def _records_and_model(data: str, model: str, device: str, dtype: str, check: Callable[[Any], object]):
    """The source's records and the model with its language-model head, or a one-line error and exit 2;
    `check(adapter)` raises ValueError for a model the command cannot use."""
    try:
        records = iter_records(data)
    except SourceError as error:
        raise fail(str(error)) from None
    adapter = load_model_or_exit(model, device, dtype, lm_head=True)
    try:
        check(adapter)
    except ValueError as error:
        raise fail(str(error)) from None
    return records, adapter


def _loss_cell(row: dict) -> str:
    low, high = _number(row["delta_loss_low"], signed=True), _number(row["delta_loss_high"], signed=True)
    return f"{_number(row['delta_loss'], signed=True)} [{low}, {high}]"


@app.command()
def ablate(
    model: ModelOption,
    data: DataOption,
    out_dir: Annotated[Path, typer.Option("--out", help="Directory for ablation.csv, ablation.json and the figure.")],
    analysis: Annotated[
        Path | None,
        typer.Option(
            help="An analyze run of the same model: its top contact heads are ablated together, against "
            "random groups of as many heads, and its contact heatmap is drawn beside the losses."
        ),
    ] = None,
    mode: Annotated[
        str, typer.Option(help="Replace an ablated head's output by zero or by its mean over the data.")
    ] = "zero",
    top_k: Annotated[int, typer.Option(help="Top contact heads taken from --analysis.")] = 5,
    random_groups: Annotated[
        int, typer.Option(min=0, help="Random groups of top-k heads drawn from all heads (the control).")
    ] = 100,
    layer_matched_groups: Annotated[
        int | None,
        typer.Option(min=0, help="Groups with as many heads per layer as the top heads (default: --random-groups)."),
    ] = None,
    mask_draws: Annotated[int, typer.Option(min=1, help="Seeded masks per protein (masked models).")] = 3,
    groups_per_pass: Annotated[
        int, typer.Option(min=1, help="Control groups per forward pass, each on its own copy of a batch (GPUs).")
    ] = 1,
    regression_proteins: Annotated[int, typer.Option(help="Proteins the contact regression is fitted on.")] = 20,
    limit: Annotated[int | None, typer.Option(help="Evaluate at most N proteins.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the split, the masks, the random groups and the bootstrap.")] = 0,
    bootstrap: Annotated[int, typer.Option(help="Protein-level bootstrap replicates of the intervals.")] = 1000,
    max_length: Annotated[int, typer.Option(help="Token limit per protein.")] = 512,
    batch_size: Annotated[int, typer.Option(help="Proteins per forward pass.")] = 8,
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = "auto",
    dtype: Annotated[str, typer.Option(help=DTYPE_HELP)] = "auto",
    overwrite: OverwriteOption = False,
    fmt: FormatOption = OutputFormat.auto,
) -> None:
    """Knock out every head, every layer, the top contact heads and control groups (random, and matched to the
    top heads' layers), and measure the change in masked-LM loss (next-token loss for causal models), residue
    recovery (all and binding-site residues) and contact-regression precision@L/5 (long range), with intervals
    over proteins and mask draws. The verdict ranks the top group among the control groups.

    --format csv|json prints the rows of ablation.csv.
    """
    fmt = resolve_format(fmt)
    from plmlens.causal import ABLATION_MODES, ABLATION_OUTPUTS, head_projections, top_contact_heads

    if mode not in ABLATION_MODES:
        raise fail(f"--mode must be one of {', '.join(ABLATION_MODES)}, got {mode!r}")
    top_heads, contact_heads = [], None
    if analysis is not None:
        import pandas as pd

        try:
            top_heads = top_contact_heads(analysis, k=top_k)
            contact_heads = pd.read_csv(analysis / "heads.csv" if analysis.is_dir() else analysis)
        except (FileNotFoundError, ValueError, KeyError) as error:
            raise fail(f"--analysis {analysis}: {error}") from None
    with claim_or_exit(out_dir, ABLATION_OUTPUTS, overwrite=overwrite) as claim:
        records, adapter = _records_and_model(data, model, device, dtype, head_projections)
        result = _ablate(adapter, records, data, analysis, contact_heads, mode=mode, top_heads=top_heads,
                         random_groups=random_groups, layer_matched_groups=layer_matched_groups,
                         mask_draws=mask_draws, groups_per_pass=groups_per_pass,
                         regression_proteins=regression_proteins, limit=limit, seed=seed,
                         batch_size=batch_size, max_length=max_length, bootstrap=bootstrap)  # fmt: skip
        commit_or_exit(claim, lambda staging: _write_ablation(result, staging, contact_heads))
    _print_ablation(result, adapter.name, mode, out_dir, fmt)


def _ablate(adapter, records, data: str, analysis: Path | None, contact_heads, **settings):
    """`plmlens.causal.ablate` with a progress bar; a model or source it cannot use ends with one line."""
    from plmlens.causal import ablate as run_ablate

    if contact_heads is not None and int(contact_heads["layer"].max()) != adapter.n_layers:
        raise fail(f"--analysis {analysis}: its heads.csv has {int(contact_heads['layer'].max())} layers, "
                   f"{adapter.name} has {adapter.n_layers}")  # fmt: skip
    mode = settings["mode"]
    print_start("ablate", adapter, data, after=f", mode {escape_text(mode)}")
    with progress_bar(
        TextColumn("[bold]ablate[/]"), BarColumn(), MofNCompleteColumn(), TextColumn("ablations"),
        TimeElapsedColumn(), TimeRemainingColumn(),
    ) as progress:  # fmt: skip
        task = progress.add_task("ablate", total=None)
        with run_errors(data):
            result = run_ablate(
                adapter, records, **settings,
                progress=lambda done, total: progress.update(task, completed=done, total=total),
            )  # fmt: skip
    result.info["data"] = data
    if analysis is not None:
        result.info["analysis"] = str(analysis)
    return result


def _write_ablation(result: AblationResult, directory: Path, contact_heads: pd.DataFrame | None) -> None:
    """The run's data and then its figure, drawn by the report, into one staging folder: committed together."""
    from plmlens.report.causal import save_ablation_figure

    result.save(directory, contact_heads)
    save_ablation_figure(result.table, result.info, directory, contact_heads)


def _print_ablation(result, model_name: str, mode: str, out_dir: Path, fmt: OutputFormat) -> None:
    rows = result.table.to_dict("records")
    # On a terminal the groups are summed up by the verdict below the table; CSV and JSON hold every row.
    listed = ("head", "random", "layer_matched")
    shown = [r for r in rows if r["kind"] not in listed] if fmt is OutputFormat.table else rows
    print_table(
        shown,
        [Column("ablation"), Column("heads", no_wrap=False),
         Column("Δ loss [95% CI]", _loss_cell, "right"),
         Column("Δ recovery", lambda r: _number(r["delta_recovery"], signed=True), "right"),
         Column("Δ site recovery", lambda r: _number(r["delta_site_recovery"], signed=True), "right"),
         Column("Δ contact P@L/5 long", lambda r: _number(r["delta_contact_long_p_at_L5"], signed=True), "right")],
        fmt,
        title=f"{model_name}: ablations ({mode}); single heads and control groups are in ablation.csv and the figure",
        caption=result.info["answer"],
    )  # fmt: skip
    floors = result.info.get("contact_floors")
    if floors:
        p = floors["long_p_at_L5"]
        print_note(f"intact model, contact P@L/5 long: regression {_number(p['regression'])}, top "
                   f"{floors['top_heads']['k']} heads {_number(p['top_heads'])}, positional template "
                   f"{_number(p['template'])} (chance {_number(p['chance'])})", fmt)  # fmt: skip
    print_note(f"wrote {escape_text(str(out_dir))}/ablation.csv, ablation.json, ablation.png", fmt)


@app.command()
def jacobian(
    model: ModelOption,
    data: DataOption,
    out_dir: Annotated[Path, typer.Option("--out", help="Directory for jacobian.csv, the maps and the summary.")],
    max_length: Annotated[
        int, typer.Option(help="Longest protein (residues) evaluated; cost is 20 × L forward passes per protein.")
    ] = 300,
    limit: Annotated[int | None, typer.Option(help="Evaluate at most N proteins.")] = None,
    regression_proteins: Annotated[int, typer.Option(help="Proteins the attention baselines are fitted on.")] = 20,
    seed: Annotated[int, typer.Option(help="Seed of the split into baseline-training and evaluation proteins.")] = 0,
    batch_size: Annotated[
        int | None,
        typer.Option(
            help="Substituted sequences per forward pass (default: 20 on a CPU, where larger batches "
            "measured slower, 400 on a GPU)."
        ),
    ] = None,
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = "auto",
    dtype: Annotated[str, typer.Option(help=DTYPE_HELP)] = "auto",
    overwrite: OverwriteOption = False,
    fmt: FormatOption = OutputFormat.auto,
) -> None:
    """Contacts from a masked language model's output (the categorical Jacobian of Zhang et al. 2024), scored
    against the structures beside the attention contact regression, the best single head, the mean of the top-k
    heads (k and heads chosen on the training proteins) and the positional template (the training proteins' mean
    contact map by IMGT position, or residue index where unnumbered).

    Finished maps are kept in OUT/.jacobian_cache until the run is written: run the same command again after an
    interruption and it resumes.

    --format csv|json prints the mean precisions by range and k (jacobian_summary.csv).
    """
    fmt = resolve_format(fmt)
    from plmlens.causal import JACOBIAN_OUTPUTS
    from plmlens.causal.jacobian import check_jacobian_support

    with claim_or_exit(out_dir, JACOBIAN_OUTPUTS, overwrite=overwrite) as claim:
        records, adapter = _records_and_model(data, model, device, dtype, check_jacobian_support)
        print_start("jacobian", adapter, data)
        result = _jacobian(adapter, records, data, max_length=max_length, regression_proteins=regression_proteins,
                           limit=limit, seed=seed, batch_size=batch_size, cache=out_dir / JACOBIAN_CACHE)  # fmt: skip
        commit_or_exit(claim, lambda staging: _write_jacobian(result, staging),
                       "; the finished maps are kept: run the same command again to resume")  # fmt: skip
        shutil.rmtree(out_dir / JACOBIAN_CACHE, ignore_errors=True)
    _print_jacobian(result, adapter, out_dir, fmt)


def _jacobian(adapter, records, data: str, **settings):
    """`plmlens.causal.jacobian` with a progress bar; a source it cannot use ends with one line."""
    from plmlens.causal import jacobian as run_jacobian

    with progress_bar(
        TextColumn("[bold]jacobian[/]"), BarColumn(), MofNCompleteColumn(), TextColumn("proteins"),
        TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[rate]}"),
    ) as progress:  # fmt: skip
        task = progress.add_task("jacobian", total=None, rate="fitting baselines")

        def update(done: int, total: int, seconds: float) -> None:
            progress.update(task, completed=done, total=total, rate=f"{seconds:.1f} s/protein")

        with run_errors(data, "; the finished maps are kept: run the same command again to resume"):
            result = run_jacobian(adapter, records, progress=update, **settings)
    result.info["data"] = data
    return result


def _write_jacobian(result: JacobianResult, directory: Path) -> None:
    """The run's data and then its figure, drawn by the report, into one staging folder: committed together."""
    from plmlens.report.causal import save_jacobian_figure

    result.save(directory)
    save_jacobian_figure(result.summary_table(), directory)


def _print_jacobian(result, adapter, out_dir: Path, fmt: OutputFormat) -> None:
    best = result.info["best_head"]
    print_table(
        result.summary_table().to_dict("records"),
        [Column("range"), Column("k"),
         Column("Jacobian", lambda r: _number(r["jacobian"]), "right"),
         Column("regression", lambda r: _number(r["regression"]), "right"),
         Column(f"head {best['layer']}-{best['head']}", lambda r: _number(r["best_head"]), "right"),
         Column(f"top {result.info['top_heads']['k']} heads", lambda r: _number(r["top_heads"]), "right"),
         Column("template", lambda r: _number(r["template"]), "right"),
         Column("chance", lambda r: _number(r["chance"]), "right"),
         Column("proteins", lambda r: str(r["n_proteins"]), "right")],
        fmt,
        title=f"{adapter.name}: contact precision (mean over proteins)",
        caption=f"{result.info['n_evaluation_proteins']} proteins, "
                f"{_number(result.info['seconds_per_protein'], 1)} s per protein on {adapter.device}",
    )  # fmt: skip
    print_note(
        f"wrote {escape_text(str(out_dir))}/jacobian.csv, jacobian_summary.csv, jacobian_maps.npz, jacobian.json", fmt
    )
