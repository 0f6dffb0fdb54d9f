"""``plmlens features extract | train | concepts | show | repertoire``: sparse autoencoders on a pLM's hidden
states and the biological concepts their features match."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

from plmlens.cli.common import (
    DEVICE_HELP,
    SOURCE_HELP,
    app,
    claim_file_or_exit,
    claim_or_exit,
    commit_or_exit,
    console,
    escape_text,
    fail,
    load_model_or_exit,
    out,
    print_start,
    progress_bar,
    run_errors,
)
from plmlens.outputs import OutputSet

features_app = typer.Typer(help="Sparse autoencoders (SAEs) on hidden states, matched to biological concepts.",
                           no_args_is_help=True)  # fmt: skip
app.add_typer(features_app, name="features")


def _layers(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise fail(f"--layers: comma-separated 1-based layer numbers, not {text!r}") from None


@features_app.command("extract")
def extract_command(
    model: Annotated[str, typer.Option(help="Registry name, Hugging Face id or directory.")],
    data: Annotated[str, typer.Option(help=SOURCE_HELP)],
    layers: Annotated[str, typer.Option(help="Comma-separated 1-based layers (the output of block l).")],
    out_dir: Annotated[Path, typer.Option("--out", help="The activation store's directory.")],
    dtype: Annotated[str, typer.Option(help="Storage type: float16 or bfloat16.")] = "float16",
    max_length: Annotated[int, typer.Option(help="Token limit per protein; longer ones are truncated.")] = 512,
    max_tokens: Annotated[int | None, typer.Option(help="Padded tokens per batch (default as for analyze).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="At most N proteins per batch.")] = None,
    limit: Annotated[int | None, typer.Option(help="Stop after N proteins of the source.")] = None,
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = "auto",
    random_init: Annotated[bool, typer.Option("--random-init", help="Control: fresh random weights.")] = False,
    init_seed: Annotated[int, typer.Option(help="Seed of the --random-init weights.")] = 0,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted extraction in --out.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an earlier store at --out.")] = False,
    checkpoint_seconds: Annotated[float, typer.Option(help="Seconds between progress records.")] = 60.0,
) -> None:
    """Stream per-residue hidden states of the chosen layers to float16 shards (memory-mapped on read), with
    the batch plan, torchrun sharding and --resume of `analyze`."""
    from plmlens.distributed import destroy_process_group, init_process_group
    from plmlens.features.store import STORE_NAMES, ExtractionInterrupted, clear_store, extract
    from plmlens.models import resolve_device
    from plmlens.proteins import SourceError, iter_records

    if resume and overwrite:
        raise fail("--resume and --overwrite exclude each other")
    try:
        records = iter_records(data)
        torch_device = resolve_device(device)
    except (SourceError, ValueError) as error:
        raise fail(str(error)) from None
    chosen = _layers(layers)
    group = init_process_group(torch_device)
    claim = claim_or_exit(out_dir, OutputSet(STORE_NAMES, record=STORE_NAMES[0]), overwrite=overwrite,
                          resume=resume) if group.is_main else None  # fmt: skip
    if claim is not None and not resume:
        clear_store(out_dir)
    group.barrier()
    adapter = load_model_or_exit(model, str(torch_device), random_init=random_init, init_seed=init_seed)
    if group.is_main:
        print_start("features extract", adapter, data, f", layers {chosen}")
    try:
        with run_errors(data, "; the finished parts are kept: run again with --resume"), _bar(
                "extract", "residues", group.is_main) as (bar, task):  # fmt: skip
            record = extract(adapter, records, chosen, out_dir, dtype=dtype, max_length=max_length,
                             max_tokens=max_tokens, batch_size=batch_size, limit=limit, source=data, group=group,
                             resume=resume, checkpoint_seconds=checkpoint_seconds,
                             progress=lambda s: bar.update(task, completed=s.n_residues))  # fmt: skip
    except ExtractionInterrupted as stopped:
        console.print(f"interrupted ({escape_text(str(stopped))}); continue with the same command and --resume")
        raise typer.Exit(stopped.exit_code) from None
    finally:
        if claim is not None:
            claim.release()
    destroy_process_group()
    if group.is_main:
        rate = record.get("residues_per_second") or 0
        console.print(f"{record['n_proteins']:,} proteins, {record['n_residues']:,} residues of layers "
                      f"{record['layers']} ({len(record['skipped'])} skipped), {rate:,.0f} residues/s → "
                      f"{escape_text(str(out_dir))}", highlight=False)  # fmt: skip


class _bar:  # noqa: N801 -- used as a context manager, like a function
    """A progress bar with one task, counting `unit` (residues, steps) with a rate."""

    def __init__(self, name: str, unit: str, show: bool = True, total: int | None = None) -> None:
        self.progress = progress_bar(TextColumn(f"[bold]{name}[/]"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn(unit), TimeElapsedColumn(), disable=not show)  # fmt: skip
        self.total = total

    def __enter__(self):
        self.progress.__enter__()
        return self.progress, self.progress.add_task("work", total=self.total)

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)


@features_app.command("train")
def train_command(
    store_dir: Annotated[Path, typer.Argument(help="An activation store (`plmlens features extract --out`).")],
    layer: Annotated[int, typer.Option(help="1-based layer of the store.")],
    out_dir: Annotated[Path, typer.Option("--out", help="The SAE's directory.")],
    width: Annotated[int, typer.Option(help="Latents (features).")] = 4096,
    k: Annotated[int, typer.Option(help="Active latents per residue (TopK, BatchTopK).")] = 32,
    activation: Annotated[str, typer.Option(help="topk, batchtopk or relu (with --l1).")] = "topk",
    l1: Annotated[float, typer.Option(help="L1 coefficient of a relu SAE.")] = 5.0,
    epochs: Annotated[float, typer.Option(help="Passes over the store.")] = 1.0,
    batch_size: Annotated[int, typer.Option(help="Residues per step.")] = 4096,
    lr: Annotated[float | None, typer.Option(help="Adam learning rate (default: scaled with the width).")] = None,
    seed: Annotated[int, typer.Option(help="Seeds the initialisation and the order of the residues.")] = 0,
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = "auto",
    resume: Annotated[bool, typer.Option(help="Continue an interrupted training in --out.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an earlier SAE at --out.")] = False,
    checkpoint_seconds: Annotated[float, typer.Option(help="Seconds between checkpoints.")] = 60.0,
) -> None:
    """Train a TopK SAE (or BatchTopK, ReLU + L1) on one layer of an activation store, on the model's device,
    seeded, checkpointed and resumable; saved as safetensors + JSON, with variance explained, L0 and dead and
    dense latents."""
    from plmlens.features.sae import SAEConfig, save_sae
    from plmlens.features.store import ActivationStore, StoreError
    from plmlens.features.train import TrainingInterrupted, evaluate_sae, train_sae
    from plmlens.models import resolve_device
    from plmlens.rundir import SAE

    if resume and overwrite:
        raise fail("--resume and --overwrite exclude each other")
    try:
        store = ActivationStore(store_dir)
        tokens = store.tokens(layer)
        config = SAEConfig(d_in=store.d, width=width, k=k, activation=activation, l1_coeff=l1, seed=seed)
        torch_device = resolve_device(device)
    except (StoreError, ValueError, TypeError) as error:
        raise fail(str(error)) from None
    claim = claim_or_exit(out_dir, SAE.outputs, overwrite=overwrite, resume=resume)
    checkpoint = out_dir / "checkpoint"
    if checkpoint.exists() and not (resume or overwrite):
        raise fail(f"{checkpoint} holds an interrupted training: add --resume, or --overwrite to start afresh")
    console.print(f"features train: {tokens.n_tokens:,} residues of layer {layer} ({escape_text(str(store_dir))}), "
                  f"width {width}, k {k}, {activation}, on {torch_device}", highlight=False)  # fmt: skip
    with claim:
        try:
            with run_errors(str(store_dir), "; the checkpoint is kept: run again with --resume"), _bar(
                    "train", "residues", total=int(epochs * tokens.n_tokens)) as (bar, task):  # fmt: skip
                sae, record = train_sae(tokens, config, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                                        device=torch_device, checkpoint=checkpoint, resume=resume,
                                        checkpoint_seconds=checkpoint_seconds,
                                        progress=lambda s: bar.update(task, completed=s.tokens_seen))  # fmt: skip
                evaluation = evaluate_sae(sae, tokens, batch_size=batch_size)
        except TrainingInterrupted as stopped:
            console.print(f"interrupted ({escape_text(str(stopped))}); continue with the same command and --resume")
            raise typer.Exit(130) from None
        evaluation.pop("frequency", None)
        metadata = {"model": store.model, "layer": layer, "store": str(store_dir), "source": store.record["source"],
                    "training": record.to_dict()}  # fmt: skip

        def save(staging: Path) -> None:
            save_sae(sae, staging, metadata)
            (staging / "evaluation.json").write_text(json.dumps({"training_tokens": evaluation}, indent=2) + "\n")

        commit_or_exit(claim, save)
        shutil.rmtree(checkpoint, ignore_errors=True)
    fve = evaluation["fraction_variance_explained"]
    console.print(f"{record.tokens_seen:,} residues in {record.seconds:.0f} s ({record.tokens_per_second:,.0f}/s); "
                  f"variance explained {fve:.3f}, L0 {evaluation['mean_l0']:.1f}, "
                  f"dead {evaluation['n_dead']}, dense {evaluation['n_dense']} → {escape_text(str(out_dir))}",
                  highlight=False)  # fmt: skip


@features_app.command("concepts")
def concepts_command(
    sae_dir: Annotated[Path, typer.Argument(help="An SAE (`plmlens features train --out`).")],
    data: Annotated[str, typer.Option(help="Labelled, held-out proteins. " + SOURCE_HELP)],
    control: Annotated[
        Path | None, typer.Option(help="An SAE of the random-weight model (same layer): the random_model control.")
    ] = None,
    concepts: Annotated[str | None, typer.Option(help="Comma-separated concepts (default: every label).")] = None,
    seed: Annotated[int, typer.Option(help="Seeds the validation/test split and the shuffled control.")] = 0,
    fidelity_proteins: Annotated[int, typer.Option(help="Test proteins for the loss recovered (0: none).")] = 64,
    limit: Annotated[int | None, typer.Option(help="Use only the first N proteins.")] = None,
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = "auto",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace earlier concepts.")] = False,
) -> None:
    """Match every feature (and every neuron of the layer) to every per-residue concept of held-out labelled
    proteins (InterPLM's protocol: threshold chosen on validation proteins, F1 on test proteins), with the
    shuffled, position-only and random-model controls, and the SAE's fidelity; writes SAE_DIR/concepts/."""
    from plmlens.features.workflow import ConceptsError, run_concepts
    from plmlens.rundir import CONCEPTS, CONCEPTS_PLACE, FeatureDir

    names = [c.strip() for c in concepts.split(",") if c.strip()] if concepts else None
    for directory in (sae_dir, control):
        if directory is not None and not FeatureDir(directory).is_sae():
            raise fail(f"{directory}: not an SAE (no sae.json; `plmlens features train --out` writes one)")
    claim = claim_or_exit(sae_dir / CONCEPTS_PLACE, CONCEPTS.outputs, overwrite=overwrite)
    with claim, run_errors(data):
        try:
            result = run_concepts(sae_dir, data, control=control, names=names, seed=seed, limit=limit,
                                  device=device, fidelity_proteins=fidelity_proteins, work=claim.directory,
                                  say=lambda text: console.print(escape_text(text), highlight=False))  # fmt: skip
        except ConceptsError as error:
            raise fail(str(error)) from None
        commit_or_exit(claim, result.save)
    for line in result.headline().splitlines():
        console.print(escape_text(line), highlight=False)


@features_app.command("show")
def show_command(
    sae_dir: Annotated[Path, typer.Argument(help="An SAE (`plmlens features train --out`).")],
    sequence: Annotated[str | None, typer.Option(help="A protein sequence.")] = None,
    structure: Annotated[Path | None, typer.Option(help="A PDB/mmCIF file (its first chain).")] = None,
    top: Annotated[int, typer.Option(help="Features per residue.")] = 3,
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = "auto",
) -> None:
    """One protein's top features per residue, with the concept each matched (when `concepts` ran)."""
    from plmlens.features.workflow import ConceptsError, show_protein

    if (sequence is None) == (structure is None):
        raise fail("give exactly one of --sequence and --structure")
    try:
        rows = show_protein(sae_dir, sequence=sequence, structure=structure, top=top, device=device)
    except ConceptsError as error:
        raise fail(str(error)) from None
    for row in rows:
        cells = "  ".join(f"f{f} {a:.2f}{' (' + c + ')' if c else ''}" for f, a, c in row["features"])
        # The result, on stdout (progress and notes go to stderr).
        out.print(f"{row['index']:>4} {row['residue']}  {escape_text(cells)}", highlight=False, soft_wrap=True)


@features_app.command("repertoire")
def repertoire_command(
    out: Annotated[Path, typer.Option("--out", help="The FASTA file to write.")],
    n: Annotated[int, typer.Option(help="Variable domains.")] = 20_000,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an earlier file.")] = False,
) -> None:
    """Synthetic antibody variable domains (germline V and J genes, random CDR3 junctions, somatic mutations)
    as FASTA: SAE training data that never overlaps a real evaluation set."""
    from plmlens.proteins.repertoire import write_repertoire_fasta

    with claim_file_or_exit(out, overwrite=overwrite), tempfile.TemporaryDirectory():
        write_repertoire_fasta(out, n, seed)
    console.print(f"{n:,} synthetic variable domains → {escape_text(str(out))}", highlight=False)
