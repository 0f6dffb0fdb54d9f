"""Running a model over proteins and accumulating attention statistics, one layer at a time."""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from plmlens.analysis.accumulator import Accumulator
from plmlens.analysis.properties import Property
from plmlens.analysis.result import AnalysisResult
from plmlens.models import ModelAdapter, SequenceError
from plmlens.proteins import Protein
from plmlens.proteins.skips import Skipped

log = logging.getLogger(__name__)


@dataclass
class RunState:
    """Progress of a run, for progress bars and the summary."""

    n_proteins: int = 0
    n_residues: int = 0
    n_truncated: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started


def _valid(adapter: ModelAdapter, proteins: Iterable[Protein], state: RunState) -> Iterator[Protein]:
    """Proteins the model can read; the others are recorded as skipped (one never stops the run)."""
    for protein in proteins:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # only the alphabet is checked here, not the length
                adapter.encode([protein], max_length=10**9)
        except SequenceError as error:
            state.skipped.append(Skipped(protein.source, protein.id, str(error)))
            log.warning("skipped %s: %s", protein.id, error)
            continue
        yield protein


def _release_freed_memory() -> None:
    """Hand memory freed by the last batch back to the OS (glibc only).

    Attention blocks of varying size are allocated by the model's worker thread and freed by this one;
    glibc keeps such freed blocks in per-thread arenas, so without a trim resident memory creeps up with
    the number of proteins although nothing is kept.
    """
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _load_libc():
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


_LIBC = _load_libc()


def _batches(proteins: Iterable[Protein], size: int) -> Iterator[list[Protein]]:
    batch: list[Protein] = []
    for protein in proteins:
        batch.append(protein)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def analyze(
    adapter: ModelAdapter,
    proteins: Iterable[Protein | Skipped],
    properties: Sequence[str | Property] | None = None,
    *,
    threshold: float = 0.3,
    max_length: int = 512,
    batch_size: int = 8,
    seed: int = 123,
    n_bootstrap: int = 200,
    null: bool = True,
    limit: int | None = None,
    alpha: float = 0.05,
    progress: Callable[[RunState], None] | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_seconds: float = 60.0,
) -> AnalysisResult:
    """Measure how every head's attention aligns with protein properties (the paper's section 3).

    Parameters
    ----------
    adapter : ModelAdapter
        From `plmlens.models.load_model`.
    proteins : iterable of Protein (or Skipped, which are counted and passed over)
        E.g. `plmlens.proteins.iter_records(source)`.
    properties : sequence of str or Property, optional
        Names or groups (see `plmlens.analysis.get_properties`); default: the paper's properties.
    threshold : float
        θ of Eq. 1.
    max_length : int
        Token limit per protein (512 as in the paper); longer proteins keep their first residues.
    batch_size : int
        Proteins per forward pass; results do not depend on it.
    seed : int
        Seeds the null model and the bootstrap.
    n_bootstrap : int
        Protein-level bootstrap replicates for the ``boot_ci_*`` columns.
    null : bool
        Also compute the row-permuted null model.
    limit : int, optional
        Stop after this many proteins.
    alpha : float
        Family-wise significance level (Bonferroni over all heads).
    progress : callable, optional
        Called with the `RunState` after every batch.
    checkpoint : path, optional
        Where to save the accumulator every `checkpoint_seconds` and when interrupted, so an
        interrupted run loses nothing (`Accumulator.load` reads it back).

    Returns
    -------
    AnalysisResult
    """
    state = RunState()
    acc = Accumulator(
        adapter.n_layers, adapter.n_heads, properties or (), threshold=threshold, seed=seed,
        n_bootstrap=n_bootstrap, null=null,
    )  # fmt: skip

    def readable() -> Iterator[Protein]:
        taken = 0
        for record in proteins:
            if isinstance(record, Skipped):
                state.skipped.append(record)
                continue
            if limit is not None and taken >= limit:
                return
            taken += 1
            yield record

    last_save = time.perf_counter()
    try:
        for batch in _batches(_valid(adapter, readable(), state), batch_size):
            _run_batch(adapter, acc, batch, max_length, state)
            _release_freed_memory()
            if progress is not None:
                progress(state)
            if checkpoint is not None and time.perf_counter() - last_save > checkpoint_seconds:
                acc.save(checkpoint)
                last_save = time.perf_counter()
    except KeyboardInterrupt:
        if checkpoint is not None:
            acc.save(checkpoint)
            log.warning("interrupted after %d proteins; sums saved to %s", acc.n_proteins, checkpoint)
        raise
    info = {
        "model": {"name": adapter.name, "architecture": adapter.architecture, "layers": adapter.n_layers,
                  "heads": adapter.n_heads, "parameters": adapter.n_params},
        "max_length": max_length, "batch_size": batch_size,
        "n_skipped": len(state.skipped), "skipped": [s.to_dict() for s in state.skipped],
        "n_truncated": state.n_truncated, "wall_seconds": state.seconds,
        "residues_per_second": state.n_residues / state.seconds if state.seconds > 0 else None,
    }  # fmt: skip
    return AnalysisResult(acc, alpha=alpha, info=info)


def _run_batch(adapter: ModelAdapter, acc: Accumulator, batch: list[Protein], max_length: int, state: RunState) -> None:
    first_index = acc.n_proteins
    masks = None
    weights = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # truncation is counted in the summary instead
        layers = adapter.iter_layers(batch, max_length=max_length, hidden_states=False)
        for output in layers:
            lengths = [int(n) for n in output.lengths]
            if masks is None:
                masks = acc.batch_properties(batch, lengths)
                weights = acc.bootstrap_weights(lengths, first_index) if acc.n_bootstrap else None
                state.n_truncated += len(output.truncated)
            acc.update(output.layer, output.attention, lengths, masks, first_index, weights)
    state.n_proteins += len(batch)
    state.n_residues += sum(int(n) for n in output.lengths)
