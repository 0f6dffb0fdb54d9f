"""``plmlens demo``: the main job on the built-in default — every antibody model available offline, compared."""

from __future__ import annotations

import importlib.util
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from plmlens.cli.analyze import analyze
from plmlens.cli.common import OutputFormat, app, claim_file_or_exit, console, default_source, escape_text, fail
from plmlens.cli.compare import compare
from plmlens.cli.probe import probe
from plmlens.cli.proteins import describe_with_progress, print_description, save_with_progress
from plmlens.cli.report import report
from plmlens.proteins import SourceError


@dataclass(frozen=True)
class DemoRun:
    """One model of the demo: its run directory name, registry name, chain type and weights."""

    name: str
    model: str
    chain_type: str | None = None
    random_init: bool = False
    package: str | None = None  # an optional wheel the model needs
    probe_tasks: str | None = None  # default: probe's own

    def data(self, protein_set: Path) -> str:
        return f"{protein_set}::chain_type={self.chain_type}" if self.chain_type else str(protein_set)


#: Every pretrained pLM that works offline here, each on the chains it was trained on, and the paper's
#: random-weights control (appendix B.2).
DEMO_RUNS = (
    DemoRun("antiberty", "antiberty"),
    DemoRun("sapiens-heavy", "sapiens-heavy", chain_type="heavy"),
    DemoRun("sapiens-light", "sapiens-light", chain_type="light"),
    DemoRun("iglm", "iglm", package="iglm"),
    # Its secondary-structure probes take minutes to converge on random features (three times the iterations of
    # the pretrained model's); the demo leaves them out to stay within its time, and keeps the other tasks.
    DemoRun("antiberty-random", "antiberty", random_init=True, probe_tasks="binding_site,contact,contact_regression"),
)


#: The paper's properties, contacts by range, and the antibody concepts of IMGT numbering.
DEMO_PROPERTIES = "default,contact_ranges,antibody"


@dataclass(frozen=True)
class DemoSae:
    """The demo's sparse autoencoder: one model layer, trained on synthetic repertoire sequences (never the
    evaluation proteins), with the same SAE on the random-weight model's states as its control."""

    model: str = "antiberty"
    layer: int = 4
    width: int = 1024
    k: int = 16
    epochs: float = 2.0
    batch_size: int = 1024


DEMO_SAE = DemoSae()


@app.command()
def demo(
    out_dir: Annotated[Path, typer.Option("--out", help="Where the runs and compare.html go.")] = Path("runs/demo"),
    limit: Annotated[int | None, typer.Option(help="Use only the first N proteins.")] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace the outputs of an earlier demo at --out (make demo does).")
    ] = False,
    sae_sequences: Annotated[
        int, typer.Option(help="Synthetic antibody domains the demo's SAE is trained on (0: no SAE).")
    ] = 1200,
) -> None:
    """The main job on the built-in default: AntiBERTy, Sapiens heavy and light (each on its chain type),
    IgLM and random-weight AntiBERTy over the shared antibody structures (variable domains, paratope as
    binding site; ProMod3's antibody chains where those are absent): analyze, probe and report for each,
    then compare them all in compare.html. AntiBERTy also gets a sparse autoencoder on layer 4, trained on
    synthetic repertoire sequences (never the benchmark's), its features matched to the benchmark's concepts
    with the random-weight model's SAE as a control, in its report's feature browser."""
    started = time.perf_counter()
    # The demo prints several different tables, which no single CSV could hold: tables also in a pipe or log,
    # printed as wide as they need there, so that nothing is cut.
    fmt = OutputFormat.table
    source = default_source()
    console.print(f"plmlens demo: the built-in data [bold]{escape_text(source)}[/]", highlight=False)
    protein_set = out_dir / "proteins.proteins.npz"
    with claim_file_or_exit(protein_set, overwrite=overwrite):
        try:
            # DSSP and binding sites once, for every command and model below.
            save_with_progress(source, protein_set, limit)
        except SourceError as error:
            raise fail(str(error)) from None
    print_description(source, describe_with_progress(str(protein_set), None), fmt)
    done = []
    for run in DEMO_RUNS:
        if run.package and importlib.util.find_spec(run.package) is None:
            console.print(f"[yellow]skipped[/] {run.name}: the optional package {run.package} is not installed")
            continue
        console.rule(f"[bold]{run.name}[/]")
        run_dir = out_dir / run.name
        # With --overwrite the demo computes afresh: a checkpoint left by an interrupted demo is replaced too.
        analyze(model=run.model, data=run.data(protein_set), out_dir=run_dir, properties=DEMO_PROPERTIES,
                overwrite=overwrite, random_init=run.random_init, fmt=fmt)  # fmt: skip
        tasks = {"tasks": run.probe_tasks} if run.probe_tasks else {}
        probe(model=run.model, data=run.data(protein_set), out_dir=run_dir / "probe", random_init=run.random_init,
              overwrite=overwrite, fmt=fmt, **tasks)  # fmt: skip
        # A dozen candidate proteins per model for the report's 3D examples keeps the demo within minutes.
        if run.model == DEMO_SAE.model and sae_sequences > 0:
            _demo_features(run, run_dir, protein_set, sae_sequences, overwrite)
        report(run_dir=run_dir, candidates=12, overwrite=overwrite)
        done.append(run_dir)
    console.rule("[bold]compare[/]")
    compare(run_dirs=done, out_dir=out_dir, overwrite=overwrite, fmt=fmt)
    minutes = (time.perf_counter() - started) / 60
    console.print(
        f"plmlens demo: {len(done)} models in {minutes:.1f} min; open [bold]{(out_dir / 'compare.html').resolve()}[/] "
        f"and each model's report.html in {out_dir.resolve()}/<model>/",
        highlight=False,
    )


def _demo_features(run: DemoRun, run_dir: Path, protein_set: Path, n_sequences: int, overwrite: bool) -> None:
    """Extract the SAE layer's states of synthetic repertoire sequences, train the SAE, and (for the pretrained
    model, whose random-weight twin runs later) match its features to the concepts of the benchmark, with the
    random-weight SAE as control: the twin's SAE is trained here first. The stores are removed once used."""
    from plmlens.cli.features import concepts_command, extract_command, repertoire_command, train_command

    if run.random_init:
        return  # trained with the pretrained model's, below
    training = run_dir.parent / "sae-training.fasta"
    repertoire_command(out=training, n=n_sequences, seed=0, overwrite=overwrite)
    sae_dirs = {}
    for random_init in (True, False):
        directory = run_dir.parent / (f"{run.name}-random" if random_init else run.name) / "features"
        store, sae_dir = directory / ".store", directory / f"layer{DEMO_SAE.layer}"
        extract_command(model=run.model, data=str(training), layers=str(DEMO_SAE.layer), out_dir=store,
                        random_init=random_init, overwrite=True)  # fmt: skip
        train_command(store_dir=store, layer=DEMO_SAE.layer, out_dir=sae_dir, width=DEMO_SAE.width, k=DEMO_SAE.k,
                      epochs=DEMO_SAE.epochs, batch_size=DEMO_SAE.batch_size, overwrite=overwrite)  # fmt: skip
        shutil.rmtree(store, ignore_errors=True)
        sae_dirs[random_init] = sae_dir
    concepts_command(sae_dir=sae_dirs[False], data=run.data(protein_set), control=sae_dirs[True], overwrite=overwrite)
