"""``plmlens report`` (figures and report.html of a run) and ``plmlens show`` (one head on a structure)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from plmlens.cli.common import DEVICE_HELP, DTYPE_HELP, app, console, fail, load_model_or_exit, out
from plmlens.proteins import iter_proteins
from plmlens.proteins.record import Protein


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
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = "auto",
    dtype: Annotated[str, typer.Option(help=DTYPE_HELP)] = "auto",
    random_init: Annotated[
        bool, typer.Option("--random-init", help="Control: the model's architecture with fresh random weights.")
    ] = False,
    init_seed: Annotated[int, typer.Option(help="Seed of the --random-init weights.")] = 0,
) -> None:
    """Draw one head's attention on a protein's 3D structure (offline HTML page with NGL)."""
    from plmlens.proteins import StructureOptions, read_structure_file
    from plmlens.report import ViewerError

    layer, head_index = _parse_head(head)
    options = StructureOptions(chains=(chain,) if chain else None, dssp=False, min_length=1)
    proteins = [r for r in read_structure_file(structure, options) if isinstance(r, Protein)]
    if not proteins:
        raise fail(f"{structure}: no protein chain{f' {chain}' if chain else ''} found")
    adapter = load_model_or_exit(model, device, dtype, random_init=random_init, init_seed=init_seed)
    protein = proteins[0]
    weights = f" (random weights, seed {init_seed})" if random_init else ""
    title = f"{adapter.name} head {layer}-{head_index} on {protein.id}{weights}"
    view = _head_view(adapter, protein, layer, head_index, min_weight, title)
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
    described = summary["model"]
    # A random-weights run is drawn with the weights it ran with: the same seed draws them again.
    random_init, init_seed = bool(described.get("random_init")), described.get("init_seed") or 0
    try:
        adapter = load_model(described["name"], random_init=random_init, seed=init_seed)
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
    weights = f" (random weights, seed {init_seed})" if random_init else ""
    return [
        _head_view(adapter, example, *(int(x) for x in head.split("-")), min_weight,
                   f"Top {prop.replace('_', ' ')} head {head} on {example.id}{weights}")
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
