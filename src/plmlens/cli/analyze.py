"""``plmlens analyze`` (one process, torchrun ranks, or one shard of many) and ``plmlens merge``."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

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
    console,
    escape_text,
    fail,
    load_model_or_exit,
    out,
    print_note,
    print_start,
    print_table,
    printable,
    progress_bar,
    resolve_format,
    run_errors,
)
from plmlens.outputs import deferred_signals
from plmlens.proteins import SourceError, iter_records
from plmlens.rundir import RunDir


def _exit_if_complete(out_dir: Path, adapter, properties, data: str, part, **settings) -> None:
    """With --resume and no checkpoint: a finished run of the same fingerprint needs nothing more."""
    from plmlens.analysis.checkpoint import fingerprint_differences
    from plmlens.analysis.run import planned_fingerprint

    finished = RunDir(out_dir).finished_fingerprint(shard=part is not None)
    if finished is None:
        return
    current = planned_fingerprint(adapter, properties, source=data, shard=part, **settings)
    differences = fingerprint_differences(finished, current)
    if differences:
        raise fail(f"{out_dir} holds a finished run with other settings ({'; '.join(differences)}); use --overwrite")
    # On stdout even in CSV mode: it is the command's only result (scripts read it from there).
    out.print(f"{printable(out_dir)}: this run is already complete; nothing to resume", highlight=False, markup=False)
    raise typer.Exit(0)


@app.command()
def analyze(
    model: Annotated[str, typer.Option(help="Registry name (see `plmlens models`), Hugging Face id or directory.")],
    data: Annotated[str, typer.Option(help=SOURCE_HELP)],
    out_dir: Annotated[Path, typer.Option("--out", help="Directory for heads.csv, layers.csv, ...")],
    properties: Annotated[
        str, typer.Option(help="Comma-separated property names or groups (default, contact_ranges, ...).")
    ] = "default",
    threshold: Annotated[float, typer.Option(help="θ: attention above it is a high-confidence arc.")] = 0.3,
    max_length: Annotated[int, typer.Option(help="Token limit per protein; longer ones are truncated.")] = 512,
    limit: Annotated[int | None, typer.Option(help="Stop after N proteins of the source.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the null model and the bootstrap.")] = 123,
    max_tokens: Annotated[
        int | None,
        typer.Option(help="Padded tokens per batch (default: 4096 on CPU, 512 per GiB of GPU memory)."),
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="At most N proteins per batch (default: as many as --max-tokens allows).")
    ] = None,
    n_bootstrap: Annotated[int, typer.Option(help="Protein-level bootstrap replicates (0: none).")] = 200,
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = "auto",
    dtype: Annotated[str, typer.Option(help=DTYPE_HELP)] = "auto",
    shard: Annotated[
        str | None, typer.Option(help="INDEX/COUNT: take every COUNT-th batch from the INDEX-th; sum with `merge`.")
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue the interrupted run whose checkpoint is in --out.")] = False,
    overwrite: Annotated[
        bool, typer.Option(help="Start afresh though --out holds a checkpoint or a finished run (replaced at the end).")
    ] = False,
    checkpoint_seconds: Annotated[float, typer.Option(help="Seconds between checkpoints.")] = 60.0,
    random_init: Annotated[
        bool, typer.Option("--random-init", help="Control: the model's architecture with fresh random weights.")
    ] = False,
    init_seed: Annotated[int, typer.Option(help="Seed of the --random-init weights.")] = 0,
    nulls: Annotated[
        str,
        typer.Option(
            help="Positional nulls, comma-separated: offset (pair properties), position (all); "
            "none: neither. Their rates are fitted on the source, read once more before the run."
        ),
    ] = "offset,position",
    positions: Annotated[
        str,
        typer.Option(
            help="The position null's positions: numbered (IMGT where a chain is numbered, residue index "
            "otherwise) or index (residue index always)."
        ),
    ] = "numbered",
    fmt: FormatOption = OutputFormat.auto,
) -> None:
    """Measure how every attention head aligns with contacts, binding sites, PTMs, secondary structure
    and amino acids, with significance tests, a null model, offset- and position-matched nulls and layer
    profiles.

    Under `torchrun --nproc-per-node=K -m plmlens analyze ...` each rank takes every K-th batch and
    rank 0 writes the result. SIGTERM or Ctrl-C saves a checkpoint; run the same command with --resume.

    At the end it prints the top head per property; --format csv|json prints it as data (see `print_top_heads`).
    """
    fmt = resolve_format(fmt)
    from plmlens.analysis import RUN_OUTPUTS, SHARD_OUTPUTS, get_properties, save_shard
    from plmlens.analysis.run import POSITIONS
    from plmlens.distributed import Shard, destroy_process_group, init_process_group
    from plmlens.models import resolve_device

    try:
        chosen = get_properties([p.strip() for p in properties.split(",") if p.strip()])
        kinds = _null_kinds(nulls)
        if positions not in POSITIONS:
            raise ValueError(f"--positions must be one of {', '.join(POSITIONS)}, not {positions!r}")
        records = iter_records(data)
        part = Shard.parse(shard) if shard is not None else None
        torch_device = resolve_device(device)
    except (KeyError, SourceError, ValueError) as error:
        raise fail(str(error).strip("'\"")) from None
    if resume and overwrite:
        raise fail("--resume and --overwrite exclude each other")
    group = init_process_group(torch_device)
    checkpoint = RunDir(out_dir).checkpoint(group.rank, group.world_size)
    if checkpoint.exists() and not (resume or overwrite):
        raise fail(
            f"{checkpoint} holds an interrupted run: add --resume to continue it, or --overwrite to start afresh"
        )
    # Rank 0 writes the results: it alone claims --out (checked, locked) before the model is loaded.
    outputs = SHARD_OUTPUTS if part is not None else RUN_OUTPUTS
    claim = claim_or_exit(out_dir, outputs, overwrite=overwrite, resume=resume) if group.is_main else None
    group.barrier()
    with claim or contextlib.nullcontext():
        adapter = load_model_or_exit(model, str(torch_device), dtype, random_init=random_init, init_seed=init_seed)
        if resume and not checkpoint.exists():
            _exit_if_complete(out_dir, adapter, chosen, data, part, threshold=threshold, seed=seed,
                              n_bootstrap=n_bootstrap, max_length=max_length, limit=limit, max_tokens=max_tokens,
                              batch_size=batch_size, nulls=kinds, positions=positions)  # fmt: skip
        if group.is_main:
            where = f" × {group.world_size} ranks" if group.distributed else ""
            print_start("analyze", adapter, data, where)
        settings = dict(threshold=threshold, max_length=max_length, max_tokens=max_tokens, batch_size=batch_size,
                        seed=seed, n_bootstrap=n_bootstrap, limit=limit, checkpoint=checkpoint,
                        checkpoint_seconds=checkpoint_seconds, resume=resume, source=data, shard=part,
                        nulls=kinds, positions=positions,
                        null_proteins=iter_records(data) if kinds else None)  # fmt: skip
        result = _compute(adapter, records, chosen, group, **settings)
        # From here to the last line printed, SIGTERM and Ctrl-C wait: a run is never cut short while it is
        # written, and a signal then ends the command with one line (and exit 143 or 130) once it is.
        with deferred_signals():
            result.info["data"] = data
            if result.accumulator.n_proteins == 0:
                raise fail(f"{data}: no proteins could be analysed ({len(result.info['skipped'])} skipped)")
            if claim is not None:
                kept = "; the checkpoint is kept: free space and run again with --resume"
                commit_or_exit(claim, (lambda d: save_shard(result, d)) if part is not None else result.save, kept)
            group.barrier()  # the outputs exist before any rank drops its checkpoint
            checkpoint.unlink(missing_ok=True)
            destroy_process_group()
            if group.is_main:
                _print_result(result, out_dir, part, fmt, random_init, init_seed)


def _null_kinds(text: str) -> tuple[str, ...]:
    """The --nulls option as null names (``none``: no null)."""
    from plmlens.analysis.nulls import NULL_KINDS

    kinds = tuple(dict.fromkeys(k.strip() for k in text.split(",") if k.strip()))
    if kinds == ("none",):
        return ()
    unknown = [kind for kind in kinds if kind not in NULL_KINDS]
    if unknown:
        raise ValueError(f"--nulls: unknown null {', '.join(unknown)}; known: {', '.join(NULL_KINDS)} or none")
    return kinds


def _compute(adapter, records, properties, group, **settings):
    """`plmlens.analysis.analyze` with a progress bar; an interruption, a checkpoint of another run, a damaged
    source or a full disk ends the command with one line."""
    kept = "; the last checkpoint is kept: run the same command with --resume once it is fixed"
    with run_errors(settings["source"], kept):
        return _run_with_progress(adapter, records, properties, group, **settings)


def _run_with_progress(adapter, records, properties, group, **settings):
    from plmlens.analysis import CheckpointError, RunInterrupted
    from plmlens.analysis import analyze as run_analysis

    part, limit = settings["shard"], settings["limit"]
    try:
        with progress_bar(
            TextColumn("[bold]analyze[/]"), BarColumn(), MofNCompleteColumn(), TextColumn("proteins"),
            TextColumn("{task.fields[rate]:,.0f} residues/s"), TimeElapsedColumn(), TimeRemainingColumn(),
            disable=not group.is_main,
        ) as progress:  # fmt: skip
            share = None if limit is None else -(-limit // ((part.count if part else 1) * group.world_size))
            task = progress.add_task("analyze", total=share, rate=0.0)

            def update(state) -> None:
                rate = state.n_residues / state.seconds if state.seconds else 0.0
                progress.update(task, completed=state.n_proteins, rate=rate)

            return run_analysis(adapter, records, properties, progress=update, group=group, **settings)
    except RunInterrupted as stopped:
        console.print(
            f"interrupted ({escape_text(str(stopped))}); continue with the same command and --resume", highlight=False
        )
        raise typer.Exit(stopped.exit_code) from None
    except CheckpointError as error:
        raise fail(str(error)) from None


def _print_result(result, out_dir: Path, part, fmt: OutputFormat, random_init: bool, init_seed: int) -> None:
    """What `analyze` prints at the end: counts, then the top heads (or where the shard went)."""
    info = result.info
    print_truncation(info)
    print_unlabelled(info)
    efficiency = info["padding_efficiency"]
    print_note(
        f"{result.accumulator.n_proteins:,} proteins, {result.accumulator.n_residues:,} residues, "
        f"{info['n_skipped']} skipped, {info['residues_per_second'] or 0:,.0f} residues/s, "
        f"padding efficiency {100 * (efficiency or 0):.0f}%",
        fmt,
    )
    if part is not None:
        where = escape_text(str(out_dir))
        print_note(f"wrote shard {part} to {where}; sum the shards with `plmlens merge DIR... --out DIR`", fmt)
        return
    summary = RunDir(out_dir).summary()
    print_top_heads(summary, fmt)
    if random_init and summary.get("n_arcs_total") is not None:
        print_note(
            f"random weights (seed {init_seed}): {summary['n_arcs_total']:,} high-confidence arcs "
            f"(attention > {summary['threshold']}) over all heads",
            fmt,
        )
    print_note(f"wrote {escape_text(str(out_dir))}/heads.csv, layers.csv, amino_acids.csv, summary.json", fmt)


def print_unlabelled(info: dict) -> None:
    """One line per annotator that left proteins of the run unlabelled (their labels undefined, not false)."""
    for annotator, reasons in (info.get("unlabelled") or {}).items():
        ranked = sorted(reasons.items(), key=lambda kv: -kv[1])
        shown = "; ".join(f"{count} {reason}" for reason, count in ranked[:3])
        more = f"; {len(ranked) - 3} other reasons" if len(ranked) > 3 else ""
        console.print(f"[yellow]unlabelled:[/] {escape_text(annotator)} could not label {sum(reasons.values())} "
                      f"proteins, whose labels are undefined ({escape_text(shown + more)})", highlight=False,
                      soft_wrap=True)  # fmt: skip


def print_truncation(info: dict) -> None:
    """Say on stderr how many proteins were cut to the model's limit, which is often below --max-length."""
    if not info.get("n_truncated"):
        return
    limit, model = info.get("max_residues"), info.get("model", {}).get("name", "the model")
    examples = ", ".join(f"{escape_text(t['id'])} ({t['length']:,} residues)" for t in info.get("truncated", [])[:3])
    console.print(
        f"[yellow]truncated:[/] {info['n_truncated']:,} proteins longer than {escape_text(model)}'s limit of "
        f"{limit:,} residues were cut to their first {limit:,} (e.g. {examples})",
        highlight=False,
        soft_wrap=True,
    )


def _percent(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{100 * value:.{digits}f}%"


#: The terminal table of `print_top_heads`; CSV and JSON carry the rows of `top_head_rows` as they are.
TOP_HEAD_COLUMNS = (
    Column("property"),
    Column("head"),
    Column("proportion", lambda row: _percent(row["proportion"], 1)),
    Column("background", lambda row: _percent(row["background"], 2)),
    Column("null", lambda row: _percent(row["null_proportion"] or 0, 1)),
    Column("significant", lambda row: "yes" if row["significant"] else "no"),
    # The positional nulls (absent from runs made without them): a head "beats" one when it is significantly
    # above it too.
    Column("offset null", lambda row: _percent(row.get("offset_null"), 1)),
    Column("position null", lambda row: _percent(row.get("position_null"), 1)),
    Column("beats position", lambda row: _yes_no(row.get("position_significant"))),
)


def _yes_no(value: bool | None) -> str:
    return "n/a" if value is None else "yes" if value else "no"


def top_head_rows(summary: dict) -> list[dict]:
    """The top head of each property (amino acids left out) from a run's summary.json: ``property`` and the
    summary's fields (``head``, ``proportion``, ``background``, ``null_proportion``, ``significant``, ...)."""
    from plmlens.analysis import property_family

    return [{"property": name, **top} for name, top in summary["top_heads"].items() if property_family(name) is None]


def print_top_heads(summary: dict, fmt: OutputFormat | str = OutputFormat.auto) -> None:
    """The top head per property and the BLOSUM62 correlation, as the end of `analyze` and `merge` shows them.

    Parameters
    ----------
    summary : dict
        A run's summary.json.
    fmt : OutputFormat or str
        ``table``, ``csv`` or ``json`` (the rows of `top_head_rows`, proportions as fractions), or ``auto``.
        In CSV and JSON the BLOSUM62 line goes to stderr.
    """
    caption = None
    if summary.get("support") == "causal":
        caption = "causal model: null model and backgrounds over the attendable pairs j ≤ i"
    print_table(top_head_rows(summary), TOP_HEAD_COLUMNS, fmt, title="top head per property", caption=caption,
                show_edge=False)  # fmt: skip
    blosum = summary["blosum62_correlation"]

    def signed(r: float | None) -> str:
        return "n/a" if r is None else f"{r:+.3f}"

    model, null = signed(blosum["model"]), signed(blosum["null"])
    print_note(f"attention similarity vs BLOSUM62: r = {model} (null model: {null})", fmt)


@app.command()
def merge(
    run_dirs: Annotated[list[Path], typer.Argument(help="Output directories of `analyze --shard i/K`, all K.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Directory for the merged heads.csv, layers.csv, ...")],
    overwrite: OverwriteOption = False,
    fmt: FormatOption = OutputFormat.auto,
) -> None:
    """Sum the shards of one run (`plmlens analyze --shard i/K`) into the result of a single run.

    At the end it prints the top head per property; --format csv|json prints it as data.
    """
    from plmlens.analysis import RUN_OUTPUTS, MergeError, merge_runs

    fmt = resolve_format(fmt)
    with claim_or_exit(out_dir, RUN_OUTPUTS, overwrite=overwrite) as claim:
        try:
            result = merge_runs(run_dirs)
        except MergeError as error:
            raise fail(str(error)) from None
        commit_or_exit(claim, result.save)
    print_note(f"merged {len(run_dirs)} shards: {result.accumulator.n_proteins:,} proteins", fmt)
    print_top_heads(RunDir(out_dir).summary(), fmt)
    print_note(f"wrote {escape_text(str(out_dir))}/heads.csv, layers.csv, amino_acids.csv, summary.json", fmt)
