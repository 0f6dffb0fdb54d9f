"""``plmlens report`` (figures and report.html of a run) and ``plmlens show`` (one head on a structure)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from plmlens.cli.common import (
    DEVICE_HELP,
    DTYPE_HELP,
    app,
    claim_file_or_exit,
    claim_or_exit,
    commit_or_exit,
    console,
    escape_text,
    fail,
    load_model_or_exit,
    out,
    status,
)
from plmlens.proteins import iter_proteins
from plmlens.proteins.record import Protein

if TYPE_CHECKING:
    import numpy as np

    from plmlens.report import AttentionView
    from plmlens.report.interactive import ExampleSet


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
    return AttentionView(protein.first(attention.shape[0]), attention, title, min_weight=min_weight)


@app.command()
def show(
    model: Annotated[str | None, typer.Option(help="Registry name, Hugging Face id or directory.")] = None,
    structure: Annotated[Path | None, typer.Option(help="PDB or mmCIF file.")] = None,
    head: Annotated[str | None, typer.Option(help="LAYER-HEAD, 1-based (e.g. 8-3).")] = None,
    out_path: Annotated[Path, typer.Option("--out", help="HTML file to write.")] = Path("view.html"),
    chain: Annotated[str | None, typer.Option(help="Author chain id (default: the first protein chain).")] = None,
    min_weight: Annotated[float, typer.Option(help="Hide arcs lighter than this.")] = 0.1,
    jacobian: Annotated[
        Path | None,
        typer.Option(
            help="Draw the top couplings of a plmlens jacobian output directory instead of a head "
            "(no model needed); the protein from --structure, or --data with --protein."
        ),
    ] = None,
    data: Annotated[str | None, typer.Option(help="With --jacobian: the source the maps were computed on.")] = None,
    protein_id: Annotated[
        str | None, typer.Option("--protein", help="With --jacobian and --data: the protein's id.")
    ] = None,
    top: Annotated[
        int | None, typer.Option(min=1, help="With --jacobian: couplings drawn (default L, at separation ≥ 6).")
    ] = None,
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = "auto",
    dtype: Annotated[str, typer.Option(help=DTYPE_HELP)] = "auto",
    random_init: Annotated[
        bool, typer.Option("--random-init", help="Control: the model's architecture with fresh random weights.")
    ] = False,
    init_seed: Annotated[int, typer.Option(help="Seed of the --random-init weights.")] = 0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out file.")] = False,
) -> None:
    """Draw one head's attention (or, with --jacobian, a categorical Jacobian's top couplings) on a protein's 3D
    structure (offline HTML page with NGL)."""
    from plmlens.report import ViewerError

    with claim_file_or_exit(out_path, overwrite=overwrite):
        view = _show_view(model, structure, head, chain, min_weight, jacobian, data, protein_id, top, device, dtype,
                          random_init, init_seed)  # fmt: skip
        try:
            view.save(out_path)
        except ViewerError as error:
            raise fail(str(error)) from None
    out.print(f"wrote {escape_text(str(out_path))} ({len(view.arcs())} arcs ≥ {view.min_weight:.3g})", highlight=False)


def _show_view(model, structure, head, chain, min_weight, jacobian, data, protein_id, top, device, dtype,
               random_init, init_seed):  # fmt: skip
    """The view `show` draws: a head of a model on a structure, or a Jacobian's top couplings."""
    from plmlens.proteins import StructureOptions, read_structure_file

    if jacobian is not None:
        view = _jacobian_view(jacobian, structure, chain, data, protein_id, top)
    else:
        if model is None or structure is None or head is None:
            raise fail("show needs --model, --structure and --head (or --jacobian DIR)")
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
    return view


def _jacobian_view(directory: Path, structure: Path | None, chain: str | None, data: str | None,
                   protein_id: str | None, top: int | None) -> AttentionView:  # fmt: skip
    """The top couplings of a Jacobian map drawn like a head (`plmlens.report.coupling_view`)."""
    from plmlens.causal import read_jacobian_maps
    from plmlens.report import coupling_view

    maps_file = directory / "jacobian_maps.npz"
    if not maps_file.is_file():
        raise fail(f"{directory}: no jacobian_maps.npz (written by plmlens jacobian --out)")
    maps = read_jacobian_maps(maps_file)
    protein = _mapped_protein(maps, maps_file, structure, chain, data, protein_id)
    scores = maps[protein.id]
    n = scores.shape[0]
    if len(protein) < n:
        raise fail(f"{protein.id}: the map covers {n} residues, the structure read has {len(protein)}")
    info_file = directory / "jacobian.json"
    name = json.loads(info_file.read_text())["model"]["name"] if info_file.is_file() else "model"
    return coupling_view(protein, scores, name, top)


def _mapped_protein(maps: dict[str, np.ndarray], maps_file: Path, structure: Path | None, chain: str | None,
                    data: str | None, protein_id: str | None) -> Protein:  # fmt: skip
    """The protein of --structure (its first chain with a map) or of --data and --protein, which must have a
    map in `maps`; else one line and exit 2."""
    from plmlens.proteins import SourceError, StructureOptions, read_structure_file

    if structure is not None:
        options = StructureOptions(chains=(chain,) if chain else None, dssp=False, min_length=1)
        candidates = [r for r in read_structure_file(structure, options) if isinstance(r, Protein)]
        protein = next((p for p in candidates if p.id in maps), None)
        wanted = ", ".join(p.id for p in candidates) or "no protein chain"
    elif data is not None:
        wanted = protein_id or next(iter(maps), "")
        try:
            protein = next((p for p in iter_proteins(data) if p.id == wanted), None)
        except SourceError as error:
            raise fail(str(error)) from None
    else:
        raise fail("--jacobian needs --structure FILE or --data SOURCE (with --protein ID)")
    if protein is None or protein.id not in maps:
        known = ", ".join(list(maps)[:5])
        raise fail(f"no Jacobian map for {wanted} in {maps_file} (it holds {len(maps)}: {known}, ...)")
    return protein


def _examples(
    summary: dict, candidates: int, per_head: int, min_arc_weight: float
) -> tuple[ExampleSet | None, str | None]:
    """Example proteins for the report's head explorer (`plmlens.report.examples_for_run`), or None and why
    there are none; a model that cannot be loaded is also told on the console."""
    from plmlens.report import NoExamplesError, examples_for_run

    try:
        examples = examples_for_run(summary, candidates=candidates, per_head=per_head, min_arc_weight=min_arc_weight)
    except NoExamplesError as error:
        if error.warning is not None:
            console.print(f"[yellow]no 3D views:[/] {escape_text(error.warning)}", soft_wrap=True)
        return None, str(error)
    return examples, None


@app.command()
def report(
    run_dir: Annotated[
        Path, typer.Argument(help="Directory written by `plmlens analyze` (and `probe --out RUN_DIR/probe`).")
    ],
    views: Annotated[
        bool,
        typer.Option(
            help="Run example proteins through the model for the head explorer's 3D view, and re-read the "
            "feature browser's structures; --no-views: neither."
        ),
    ] = True,
    min_weight: Annotated[float, typer.Option(help="Hide arcs lighter than this in the 3D view at first.")] = 0.1,
    candidates: Annotated[int, typer.Option(help="Proteins of the run's data run to choose examples from.")] = 30,
    examples_per_head: Annotated[int, typer.Option(help="Example proteins offered per head.")] = 3,
    min_arc_weight: Annotated[
        float, typer.Option(help="Lightest arc kept for the 3D view (lower: larger page).")
    ] = 0.05,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace the report.html and figures/ already in RUN_DIR.")
    ] = False,
) -> None:
    """The paper's figures (PNG + SVG in RUN_DIR/figures) and one self-contained RUN_DIR/report.html, whose
    head heatmaps are clickable: a head's statistics and its attention on example proteins in 3D."""
    from plmlens.report import REPORT_OUTPUTS
    from plmlens.rundir import RunDir, RunDirError

    run = RunDir(run_dir)
    if not run.is_analysis():
        raise fail(f"{run_dir}: no summary.json (run `plmlens analyze --out {run_dir}` first)")
    try:
        summary = run.summary()
    except RunDirError as error:
        raise fail(str(error)) from None
    with claim_or_exit(run_dir, REPORT_OUTPUTS, overwrite=overwrite) as claim:
        _report(claim, run_dir, summary, views, min_weight, candidates, examples_per_head, min_arc_weight)
    out.print(f"wrote {escape_text(run_dir / 'report.html')} and {escape_text(run_dir / 'figures')}/", highlight=False)


def _report(claim, run_dir: Path, summary: dict, views: bool, min_weight: float, candidates: int,
            examples_per_head: int, min_arc_weight: float) -> None:  # fmt: skip
    """Find the examples and write report.html and figures/ into the claimed run directory."""
    from plmlens.analysis import AccumulatorFileError
    from plmlens.report import ViewerError, build_report, ngl_javascript
    from plmlens.rundir import RunDirError

    missing_ngl = None
    if views:
        try:
            ngl_javascript()
        except ViewerError as error:
            # Everything but the 3D views still renders; say once how to get them.
            console.print(f"[yellow]no 3D views:[/] {escape_text(str(error))}", highlight=False, soft_wrap=True)
            views, missing_ngl = False, str(error)
    with status("building figures and report"):
        if views:
            examples, note = _examples(summary, candidates, examples_per_head, min(min_arc_weight, min_weight))
        else:
            examples, note = None, missing_ngl or "3D views were left out (--no-views)"
        try:
            commit_or_exit(claim, lambda staging: build_report(run_dir, examples=examples, examples_note=note,
                                                               draw_weight=min_weight, out_dir=staging,
                                                               feature_structures=views))  # fmt: skip
        except (ViewerError, AccumulatorFileError, RunDirError) as error:
            raise fail(str(error)) from None
        except (KeyError, ValueError) as error:  # a hand-edited table (pandas' parser errors are ValueErrors)
            raise fail(f"{run_dir}: damaged analyze output ({type(error).__name__}: {error})") from None
