"""The ``plmlens`` command: a thin layer over the library (all logic lives in the subpackages)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from plmlens.ioutils import write_text_atomic
from plmlens.proteins import Description, SourceError, describe, iter_proteins, iter_records
from plmlens.proteins.record import Protein
from plmlens.proteins.skips import Skipped
from plmlens.proteins.sources import shared_data_dir

app = typer.Typer(
    help="What protein language models learn: attention and hidden states against structure and function.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
proteins_app = typer.Typer(help="Protein sources: structures, the ProMod3 database, datasets, FASTA.")
app.add_typer(proteins_app, name="proteins")

console = Console(stderr=True)
out = Console()

SOURCE_HELP = (
    "A file, directory, glob, 'promod3', 'antibodies', or a dataset file, optionally followed by "
    "'::option=value,...' (see `plmlens proteins sources`)."
)


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print one clear line to stderr and return the exit to raise."""
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def default_source() -> str:
    """The built-in default data: the shared antibody structures (variable domains, paratope as binding
    site), or the ProMod3 database where they are absent."""
    if (shared_data_dir() / "antibodies" / "MANIFEST.tsv").exists():
        return "antibodies::variable_domain"
    return "promod3::antibody,variable_domain"


def _describe_with_progress(source: str, limit: int | None) -> Description:
    text = source if limit is None else f"{source}{',' if '::' in source else '::'}limit={limit}"
    records = iter_records(text)
    with Progress(
        TextColumn("[bold]describe[/]"), BarColumn(), MofNCompleteColumn(), TextColumn("proteins"),
        TextColumn("{task.fields[residues]:,} residues"), TextColumn("{task.fields[skipped]} skipped"),
        TimeElapsedColumn(), console=console, transient=False,
    ) as progress:  # fmt: skip
        task = progress.add_task("describe", total=limit, residues=0, skipped=0)
        state = {"residues": 0, "skipped": 0}

        def counted(items):
            for record in items:
                if isinstance(record, Skipped):
                    state["skipped"] += 1
                    console.print(f"[yellow]skipped[/] {escape(str(record))}", highlight=False, soft_wrap=True)
                    progress.update(task, skipped=state["skipped"])
                yield record

        def advance(protein: Protein) -> None:
            state["residues"] += len(protein)
            progress.update(task, advance=1, residues=state["residues"])

        return describe(counted(records), progress=advance)


def _format_share(value: float | None) -> str:
    return "n/a (no labels)" if value is None else f"{100 * value:.2f}%"


def print_description(source: str, result: Description) -> None:
    """Human-readable summary of a `Description`."""
    out.print(f"[bold]{source}[/]: {result.n_proteins:,} proteins, {result.n_residues:,} residues, "
              f"{len(result.skipped)} skipped", highlight=False)  # fmt: skip
    lengths = result.length_distribution()
    if lengths:
        out.print(
            "lengths: " + ", ".join(f"{k} {v:,.0f}" if k != "mean" else f"{k} {v:,.1f}" for k, v in lengths.items())
        )
    table = Table(title="background frequencies", show_edge=False)
    table.add_column("annotation")
    table.add_column("share", justify="right")
    table.add_column("hits / defined", justify="right")
    for name, counter in result.counters.items():
        table.add_row(name, _format_share(counter.share), f"{counter.hits:,} / {counter.total:,}")
    out.print(table)
    if result.skipped:
        reasons: dict[str, int] = {}
        for skipped in result.skipped:
            reasons[skipped.reason] = reasons.get(skipped.reason, 0) + 1
        out.print("skipped, by reason:")
        for reason, count in sorted(reasons.items(), key=lambda kv: -kv[1])[:20]:
            out.print(f"  {count:5d}  {reason}", highlight=False)


@proteins_app.command("describe")
def proteins_describe(
    source: Annotated[str, typer.Argument(help=SOURCE_HELP)],
    limit: Annotated[int | None, typer.Option(help="Stop after N proteins.")] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Also write the numbers as JSON here.")] = None,
) -> None:
    """How many proteins and residues a SOURCE holds, their lengths, and annotation backgrounds."""
    try:
        result = _describe_with_progress(source, limit)
    except SourceError as error:
        raise fail(str(error)) from None
    print_description(source, result)
    if json_path is not None:
        payload = {"source": source, **result.to_dict()}
        write_text_atomic(json_path, json.dumps(payload, indent=2) + "\n")
        console.print(f"wrote {json_path}")


@proteins_app.command("sources")
def proteins_sources() -> None:
    """Explain the SOURCE syntax and its options."""
    from plmlens.proteins import sources

    out.print(sources.__doc__, highlight=False, markup=False)


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


def _load_model_or_exit(model: str, device: str):
    from plmlens.models import ModelLoadError, load_model

    try:
        return load_model(model, device=device)
    except ModelLoadError as error:
        raise fail(str(error)) from None


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
    limit: Annotated[int | None, typer.Option(help="Stop after N proteins.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the null model and the bootstrap.")] = 123,
    batch_size: Annotated[int, typer.Option(help="Proteins per forward pass.")] = 8,
    n_bootstrap: Annotated[int, typer.Option(help="Protein-level bootstrap replicates (0: none).")] = 200,
    device: Annotated[str, typer.Option(help="torch device.")] = "cpu",
) -> None:
    """Measure how every attention head aligns with contacts, binding sites, PTMs, secondary structure
    and amino acids, with significance tests, a null model and layer profiles."""
    from plmlens.analysis import analyze as run_analysis
    from plmlens.analysis import get_properties

    try:
        chosen = get_properties([p.strip() for p in properties.split(",") if p.strip()])
        records = iter_records(data)
    except (KeyError, SourceError) as error:
        raise fail(str(error).strip("'\"")) from None
    adapter = _load_model_or_exit(model, device)
    console.print(f"analyze: {adapter!r} on [bold]{escape(data)}[/]", highlight=False)
    with Progress(
        TextColumn("[bold]analyze[/]"), BarColumn(), MofNCompleteColumn(), TextColumn("proteins"),
        TextColumn("{task.fields[rate]:,.0f} residues/s"), TimeElapsedColumn(), TimeRemainingColumn(),
        console=console,
    ) as progress:  # fmt: skip
        task = progress.add_task("analyze", total=limit, rate=0.0)

        def update(state) -> None:
            rate = state.n_residues / state.seconds if state.seconds else 0.0
            progress.update(task, completed=state.n_proteins, rate=rate)

        result = run_analysis(
            adapter, records, chosen, threshold=threshold, max_length=max_length, batch_size=batch_size,
            seed=seed, n_bootstrap=n_bootstrap, limit=limit, progress=update,
            checkpoint=out_dir / "accumulator.partial.npz",
        )  # fmt: skip
    result.info["data"] = data
    if result.accumulator.n_proteins == 0:
        raise fail(f"{data}: no proteins could be analysed ({len(result.info['skipped'])} skipped)")
    paths = result.save(out_dir)
    (out_dir / "accumulator.partial.npz").unlink(missing_ok=True)
    summary = json.loads(paths["summary"].read_text())
    out.print(
        f"{summary['n_proteins']:,} proteins, {summary['n_residues']:,} residues, {summary['n_skipped']} skipped, "
        f"{summary['residues_per_second']:,.0f} residues/s",
        highlight=False,
    )
    table = Table(title="top head per property", show_edge=False)
    for column in ("property", "head", "proportion", "background", "null", "significant"):
        table.add_column(column)
    for name, top in summary["top_heads"].items():
        if name.startswith("aa_"):
            continue
        table.add_row(
            name, top["head"], f"{100 * top['proportion']:.1f}%", f"{100 * top['background']:.2f}%",
            f"{100 * (top['null_proportion'] or 0):.1f}%", "yes" if top["significant"] else "no",
        )  # fmt: skip
    out.print(table)
    blosum = summary["blosum62_correlation"]

    def fmt(r: float | None) -> str:
        return "n/a" if r is None else f"{r:+.3f}"

    out.print(f"attention similarity vs BLOSUM62: r = {fmt(blosum['model'])} (null model: {fmt(blosum['null'])})")
    out.print(f"wrote {out_dir}/heads.csv, layers.csv, amino_acids.csv, summary.json", highlight=False)


@app.command()
def probe(
    model: Annotated[str, typer.Option(help="Registry name, Hugging Face id or directory.")],
    data: Annotated[str, typer.Option(help=SOURCE_HELP)],
    out_dir: Annotated[Path, typer.Option("--out", help="Directory for probes.csv, contact_regression.csv, ...")],
    tasks: Annotated[
        str, typer.Option(help="Comma-separated: secondary_structure, binding_site, contact, contact_regression.")
    ] = "secondary_structure,binding_site,contact,contact_regression",
    train_fraction: Annotated[
        float, typer.Option(help="Share of proteins used for training (split by protein).")
    ] = 0.8,
    seed: Annotated[int, typer.Option(help="Seed of the split and the subsampling.")] = 0,
    limit: Annotated[int | None, typer.Option(help="Use at most N proteins.")] = None,
    max_length: Annotated[int, typer.Option(help="Token limit per protein.")] = 512,
    batch_size: Annotated[int, typer.Option(help="Proteins per forward pass.")] = 8,
    device: Annotated[str, typer.Option(help="torch device.")] = "cpu",
) -> None:
    """Linear probes per layer on embeddings and attention, and contact regression over all heads."""
    from plmlens.probing import TASKS
    from plmlens.probing import probe as run_probe

    chosen = [t.strip() for t in tasks.split(",") if t.strip()]
    unknown = sorted(set(chosen) - set(TASKS))
    if unknown:
        raise fail(f"unknown task(s) {', '.join(unknown)}; known: {', '.join(TASKS)}")
    try:
        records = iter_records(data)
    except SourceError as error:
        raise fail(str(error)) from None
    adapter = _load_model_or_exit(model, device)
    console.print(f"probe: {adapter!r} on [bold]{escape(data)}[/]", highlight=False)
    with Progress(
        TextColumn("[bold]probe {task.fields[phase]}[/]"), BarColumn(), MofNCompleteColumn(), TextColumn("batches"),
        TimeElapsedColumn(), console=console,
    ) as progress:  # fmt: skip
        task = progress.add_task("probe", total=None, phase="load")

        def update(phase: str, done: int, total: int) -> None:
            progress.update(task, completed=done, total=total, phase=phase)

        try:
            result = run_probe(
                adapter, records, chosen, train_fraction=train_fraction, seed=seed, limit=limit,
                max_length=max_length, batch_size=batch_size, progress=update,
            )  # fmt: skip
        except ValueError as error:
            raise fail(f"{data}: {error}") from None
    result.info["data"] = data
    result.save(out_dir)
    probes = result.probes
    for (task_name, representation, metric), rows in probes.groupby(["task", "representation", "metric"], sort=False):
        values = " ".join(f"{v:.2f}" for v in rows.sort_values("layer").value)
        chance = rows.chance.iloc[0]
        out.print(f"{task_name:<20} {representation:<10} {metric:<18} by layer: {values}  (chance {chance:.2f})",
                  highlight=False, soft_wrap=True)  # fmt: skip
    for _, row in result.contact_regression.iterrows():
        line = f"contact regression {row['range']:<7} P@{row['k']:<4} {row.precision:.3f}  (chance {row.chance:.3f})"
        out.print(line,
                  highlight=False, soft_wrap=True)  # fmt: skip
    out.print(f"wrote {out_dir}/probes.csv, contact_regression.csv, summary.json", highlight=False)


def _parse_head(text: str) -> tuple[int, int]:
    try:
        layer, head = (int(part) for part in text.split("-"))
    except ValueError:
        raise fail(f"--head must be LAYER-HEAD (1-based, e.g. 8-3), not {text!r}") from None
    return layer, head


def _head_view(adapter, protein, layer: int, head: int, min_weight: float, title: str):
    from plmlens.report import AttentionView

    if not (1 <= layer <= adapter.n_layers and 1 <= head <= adapter.n_heads):
        raise fail(
            f"head {layer}-{head} is outside {adapter.name}'s {adapter.n_layers} layers × {adapter.n_heads} heads"
        )
    attention = adapter.attention(protein)[layer - 1, head - 1]
    return AttentionView(protein.subset(slice(0, attention.shape[0])), attention, title, min_weight=min_weight)


@app.command()
def show(
    model: Annotated[str, typer.Option(help="Registry name, Hugging Face id or directory.")],
    structure: Annotated[Path, typer.Option(help="PDB or mmCIF file.")],
    head: Annotated[str, typer.Option(help="LAYER-HEAD, 1-based (e.g. 8-3).")],
    out_path: Annotated[Path, typer.Option("--out", help="HTML file to write.")] = Path("view.html"),
    chain: Annotated[str | None, typer.Option(help="Author chain id (default: the first protein chain).")] = None,
    min_weight: Annotated[float, typer.Option(help="Hide arcs lighter than this.")] = 0.1,
    device: Annotated[str, typer.Option(help="torch device.")] = "cpu",
) -> None:
    """Draw one head's attention on a protein's 3D structure (offline HTML page with NGL)."""
    from plmlens.proteins import StructureOptions, read_structure_file
    from plmlens.report import ViewerError

    layer, head_index = _parse_head(head)
    options = StructureOptions(chains=(chain,) if chain else None, dssp=False, min_length=1)
    proteins = [r for r in read_structure_file(structure, options) if isinstance(r, Protein)]
    if not proteins:
        raise fail(f"{structure}: no protein chain{f' {chain}' if chain else ''} found")
    adapter = _load_model_or_exit(model, device)
    protein = proteins[0]
    view = _head_view(
        adapter, protein, layer, head_index, min_weight, f"{adapter.name} head {layer}-{head_index} on {protein.id}"
    )
    try:
        view.save(out_path)
    except ViewerError as error:
        raise fail(str(error)) from None
    out.print(f"wrote {out_path} ({len(view.arcs())} arcs ≥ {min_weight})", highlight=False)


def _example_views(summary: dict, run_dir: Path, min_weight: float) -> list:
    """3D views of the top contact and binding-site heads on the run's first protein with a binding site."""
    from plmlens.models import ModelLoadError, load_model

    data = summary.get("data")
    heads = {p: summary["top_heads"][p]["head"] for p in ("contact", "binding_site") if p in summary["top_heads"]}
    if not data or not heads:
        return []
    try:
        adapter = load_model(summary["model"]["name"])
    except ModelLoadError as error:
        console.print(f"[yellow]no 3D views:[/] {escape(str(error))}", soft_wrap=True)
        return []
    example = None
    for k, protein in enumerate(iter_proteins(data)):
        if example is None or (protein.binding_site is not None and protein.binding_site.any()):
            example = protein
            if protein.binding_site is not None and protein.binding_site.any():
                break
        if k >= 50:
            break
    if example is None:
        return []
    return [
        _head_view(adapter, example, *(int(x) for x in head.split("-")), min_weight,
                   f"Top {prop.replace('_', ' ')} head {head} on {example.id}")
        for prop, head in heads.items()
    ]  # fmt: skip


@app.command()
def report(
    run_dir: Annotated[
        Path, typer.Argument(help="Directory written by `plmlens analyze` (and `probe --out RUN_DIR/probe`).")
    ],
    views: Annotated[bool, typer.Option(help="Include 3D views of the top contact and binding-site heads.")] = True,
    min_weight: Annotated[float, typer.Option(help="Hide arcs lighter than this in 3D views.")] = 0.1,
) -> None:
    """The paper's figures (PNG + SVG in RUN_DIR/figures) and one self-contained RUN_DIR/report.html."""
    from plmlens.report import ViewerError, build_report

    if not (run_dir / "summary.json").exists():
        raise fail(f"{run_dir}: no summary.json (run `plmlens analyze --out {run_dir}` first)")
    summary = json.loads((run_dir / "summary.json").read_text())
    with console.status("building figures and report"):
        example_views = _example_views(summary, run_dir, min_weight) if views else []
        try:
            path = build_report(run_dir, example_views)
        except ViewerError as error:
            raise fail(str(error)) from None
    out.print(f"wrote {path} and {run_dir / 'figures'}/", highlight=False)


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
        description = _describe_with_progress(source, limit)
    except SourceError as error:
        raise fail(str(error)) from None
    print_description(source, description)
    analyze(model="antiberty", data=source, out_dir=out_dir, limit=limit, properties="default,contact_ranges")
    probe(model="antiberty", data=source, out_dir=out_dir / "probe", limit=limit)
    report(run_dir=out_dir)
    console.print(f"plmlens demo: results in [bold]{out_dir.resolve()}[/]", highlight=False)


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    app()


if __name__ == "__main__":
    main()
