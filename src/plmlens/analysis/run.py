"""Running a model over proteins and accumulating attention statistics, one layer at a time.

The proteins are numbered by their *position*: their order in the source among those that pass the
source's and the model's checks. Positions key the null model and the bootstrap and record progress in
checkpoints, so that sorting, batching, sharding and resuming leave the statistics as one uninterrupted,
unsorted run would give them.

Proteins are read ahead in windows, sorted by token count and packed into batches under a token budget
(``max_tokens``), which keeps padding small; a protein longer than the budget runs alone. Every process
makes the same plan of batches and takes every K-th batch (``shard``, torchrun ranks), so each protein is
computed in the same batch whatever the number of processes. A batch that runs out of GPU memory is
split in two and retried.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from plmlens.analysis.accumulator import Accumulator, PreparedBatch
from plmlens.analysis.checkpoint import Progress, load_checkpoint, save_checkpoint
from plmlens.analysis.nulls import NULL_KINDS, PositionalRates, applicable, fit_nulls, null_name
from plmlens.analysis.properties import Property, get_properties
from plmlens.analysis.result import AnalysisResult
from plmlens.distributed import ProcessGroup, Shard
from plmlens.models import ModelAdapter, SequenceError, dtype_name
from plmlens.proteins import Protein
from plmlens.proteins.fingerprint import source_fingerprint
from plmlens.proteins.skips import Skipped

log = logging.getLogger(__name__)

#: A read-ahead window holds about this many batches' worth of tokens.
WINDOW_BATCHES = 16
#: Batches prepared on the host ahead of the one running, beside a GPU (one on the CPU).
PREPARE_AHEAD = 3
#: Where the position null places residues: IMGT positions where a chain is numbered, or residue indices.
POSITIONS = ("numbered", "index")
#: Truncated proteins named in the summary (all are counted).
TRUNCATED_EXAMPLES = 20


def default_max_tokens(device: torch.device | str) -> int:
    """Token budget per batch (padding included) suited to a device.

    4,096 on the CPU. On a GPU, 512 tokens per GiB of its memory, between 4,096 and 65,536: the eager
    attention of a 20-head model over a 512-token batch row, with the statistics' float32 and float64
    copies, takes about 0.2 GiB per 1,000 tokens.
    """
    device = torch.device(device)
    if device.type == "cuda":
        gib = torch.cuda.get_device_properties(device).total_memory / 2**30
        return int(min(65_536, max(4_096, 512 * gib)))
    return 4_096


@dataclass
class RunState:
    """Progress of a run, for progress bars and the summary."""

    n_proteins: int = 0
    n_residues: int = 0
    n_truncated: int = 0
    truncated: list[dict] = field(default_factory=list)  # the first few: id and residues before the cut
    skipped: list[Skipped] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    n_batches: int = 0
    tokens: int = 0
    padded_tokens: int = 0
    oom_retries: int = 0
    previous_seconds: float = 0.0  # work done before a resume
    #: Annotator → reason → proteins of the run it could not label (their labels are undefined, not false).
    unlabelled: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started

    @property
    def padding_efficiency(self) -> float | None:
        """Real tokens over padded tokens of the batches run (1 = no padding)."""
        return self.tokens / self.padded_tokens if self.padded_tokens else None


class RunInterrupted(Exception):  # noqa: N818 -- reads as what happened, like KeyboardInterrupt
    """The run stopped on SIGTERM or SIGINT after saving its checkpoint.

    Attributes
    ----------
    signal_number : int
    checkpoint : Path
    n_proteins : int
        Proteins in the saved sums.
    exit_code : int
        128 + the signal number (143 for SIGTERM, 130 for SIGINT), as a shell reports it.
    """

    def __init__(self, signal_number: int, checkpoint: Path, n_proteins: int) -> None:
        self.signal_number = signal_number
        self.checkpoint = checkpoint
        self.n_proteins = n_proteins
        self.exit_code = 128 + signal_number
        name = signal.Signals(signal_number).name
        super().__init__(f"{name}: {n_proteins:,} proteins saved to {checkpoint}")


class StopRequested(BaseException):
    """Raised by `StopSignals.check` once SIGTERM or SIGINT has arrived: unwind to the checkpoint."""

    def __init__(self, signal_number: int) -> None:
        self.signal_number = signal_number


class StopSignals:
    """SIGTERM (what Slurm sends before preemption) and SIGINT stop the run at the next safe point.

    The handler only notes the signal; `check`, called between records, between layers and between
    batches, raises `StopRequested` there. A batch in progress is abandoned (its sums are only staged), and a
    commit or a checkpoint being written is never cut short. Without a run (``enabled`` False) nothing is
    installed and `check` does nothing.
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signal_number: int, frame) -> None:
        self.received = signal_number

    def __enter__(self) -> StopSignals:
        if self.enabled:
            for number in (signal.SIGTERM, signal.SIGINT):
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)

    def check(self) -> None:
        if self.received is not None:
            raise StopRequested(self.received)


@dataclass
class PlannedItem:
    """A readable protein of a run's source, numbered for the batch plan (`numbered_items`)."""

    record: int
    position: int
    protein: Protein
    tokens: int  # special tokens included, after truncation
    length: int  # residues, after truncation


def numbered_items(
    adapter: ModelAdapter,
    records: Iterable[Protein | Skipped],
    state: RunState,
    progress: Progress,
    *,
    limit: int | None,
    max_length: int,
    signals: StopSignals,
) -> Iterator[PlannedItem]:
    """Every readable protein with its record index, position and token count (after truncation); the
    other records are added to `state.skipped` (and to `progress.skipped`, unless a resumed run has them
    already), and the run goes on."""
    known = {int(s["record"]) for s in progress.skipped}
    position = taken = 0
    for index, record in enumerate(records):
        signals.check()
        if isinstance(record, Skipped):
            if index not in known:
                _skip(state, progress, index, record)
            continue
        if limit is not None and taken >= limit:
            return
        taken += 1
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # truncation is counted per batch instead
                encoding = adapter.encode([record], max_length=max_length)
        except SequenceError as error:
            if index not in known:
                _skip(state, progress, index, Skipped(record.source, record.id, str(error)))
                log.warning("skipped %s: %s", record.id, error)
            continue
        _count_unlabelled(state, record)
        yield PlannedItem(index, position, record, int(encoding.input_ids.shape[1]), int(encoding.lengths[0]))
        position += 1


def _count_unlabelled(state: RunState, protein: Protein) -> None:
    reasons = protein.meta.get("unlabelled")
    for annotator, reason in reasons.items() if isinstance(reasons, dict) else ():
        counts = state.unlabelled.setdefault(str(annotator), {})
        counts[str(reason)] = counts.get(str(reason), 0) + 1


def _skip(state: RunState, progress: Progress, index: int, skipped: Skipped) -> None:
    progress.skipped.append({"record": index, **skipped.to_dict()})  # first: this list is what is saved
    state.skipped.append(skipped)


def _windows(items: Iterable[PlannedItem], budget: int) -> Iterator[list[PlannedItem]]:
    window: list[PlannedItem] = []
    tokens = 0
    for item in items:
        window.append(item)
        tokens += item.tokens
        if tokens >= budget:
            yield window
            window, tokens = [], 0
    if window:
        yield window


def pack_batches(tokens: Sequence[int], max_tokens: int, max_proteins: int | None = None) -> list[list[int]]:
    """Indices of items packed into batches, shortest first, so that each batch's padded size (items ×
    longest item) stays within `max_tokens`; an item longer than the budget gets a batch of its own.

    Parameters
    ----------
    tokens : sequence of int
        Token count of each item.
    max_tokens : int
        Budget of padded tokens per batch.
    max_proteins : int, optional
        At most this many items per batch.

    Returns
    -------
    list of list of int
    """
    batches: list[list[int]] = []
    current: list[int] = []
    for index in sorted(range(len(tokens)), key=lambda k: (tokens[k], k)):
        full = max_proteins is not None and len(current) >= max_proteins
        if current and (full or (len(current) + 1) * tokens[index] > max_tokens):
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


def analyze(
    adapter: ModelAdapter,
    proteins: Iterable[Protein | Skipped],
    properties: Sequence[str | Property] | None = None,
    *,
    threshold: float = 0.3,
    max_length: int = 512,
    max_tokens: int | None = None,
    batch_size: int | None = None,
    seed: int = 123,
    n_bootstrap: int = 200,
    null: bool = True,
    limit: int | None = None,
    alpha: float = 0.05,
    progress: Callable[[RunState], None] | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_seconds: float = 60.0,
    resume: bool = False,
    source: str | None = None,
    shard: Shard | None = None,
    group: ProcessGroup | None = None,
    engine: str = "auto",
    nulls: Sequence[str] = (),
    positions: str = "numbered",
    null_proteins: Iterable[Protein | Skipped] | None = None,
) -> AnalysisResult:
    """Measure how every head's attention aligns with protein properties (the paper's section 3).

    Parameters
    ----------
    adapter : ModelAdapter
        From `plmlens.models.load_model`; the statistics run on its device.
    proteins : iterable of Protein (or Skipped, which are counted and passed over)
        E.g. `plmlens.proteins.iter_records(source)`.
    properties : sequence of str or Property, optional
        Names or groups (see `plmlens.analysis.get_properties`); default: the paper's properties.
    threshold : float
        θ of Eq. 1.
    max_length : int
        Token limit per protein (512 as in the paper); longer proteins keep their first residues.
    max_tokens : int, optional
        Budget of padded tokens per batch (default: `default_max_tokens` of the model's device). The
        statistics do not depend on the batching; the model's arithmetic may, in the last bits, so resumed
        and sharded runs use the batches one process would (see `run_fingerprint`).
    batch_size : int, optional
        At most this many proteins per batch (default: as many as `max_tokens` allows).
    seed : int
        Seeds the null model and the bootstrap.
    n_bootstrap : int
        Protein-level bootstrap replicates for the ``boot_ci_*`` columns.
    null : bool
        Also compute the row-permuted null model.
    limit : int, optional
        Stop after this many proteins of the source (counted before sharding).
    alpha : float
        Family-wise significance level (Bonferroni over all heads).
    progress : callable, optional
        Called with the `RunState` after every batch.
    checkpoint : path, optional
        Where to save the sums and the run's progress every `checkpoint_seconds`, at the end of the loop,
        and on SIGTERM or SIGINT (after which `RunInterrupted` is raised). Signals are caught only when
        a checkpoint is given.
    resume : bool
        Continue from `checkpoint` if it exists (it must belong to the same run: source, model, settings
        and shard); the result equals an uninterrupted run's.
    source : str, optional
        The source's name, recorded in the checkpoint's fingerprint.
    shard : Shard, optional
        Take only this shard's batches of the run's plan (``--shard i/K``: every K-th batch from the i-th;
        merge the parts with `plmlens.analysis.merge_runs`).
    group : ProcessGroup, optional
        The torchrun process group: each rank takes its share of the batches (within `shard`) and the sums
        are all-reduced at the end, so every rank returns the whole run's result.
    engine : {"auto", "numpy", "torch"}
        The statistics' engine (see `Accumulator`).
    nulls : sequence of {"offset", "position"}
        Positional nulls to compute beside the background and the row-permuted null (see
        `plmlens.analysis.nulls`); their rates are fitted on `null_proteins` before the run.
    positions : {"numbered", "index"}
        The position null's positions: IMGT positions where a chain is numbered, or residue indices always.
    null_proteins : iterable of Protein or Skipped, optional
        The same proteins as `proteins`, read afresh (a source is read once for the rates, once for the run);
        default: `proteins` itself when it is a list.

    Returns
    -------
    AnalysisResult

    Raises
    ------
    RunInterrupted
        After SIGTERM or SIGINT, once the checkpoint is saved.
    CheckpointError
        When resuming from a checkpoint that is unreadable or belongs to another run.
    """
    group = group or ProcessGroup()
    own = (shard or Shard()).within(group.shard)
    max_tokens = int(max_tokens or default_max_tokens(adapter.device))
    if max_tokens < 1 or (batch_size is not None and batch_size < 1):
        raise ValueError("max_tokens and batch_size must be positive")
    support = attention_support(adapter)
    settings = dict(threshold=threshold, seed=seed, n_bootstrap=n_bootstrap, null=null, support=support)
    if null_proteins is None and isinstance(proteins, list):
        null_proteins = proteins
    properties, rates = _with_nulls(adapter, properties, nulls, positions, null_proteins, seed=seed, limit=limit,
                                    max_length=max_length)  # fmt: skip
    acc = Accumulator(adapter.n_layers, adapter.n_heads, properties, device=adapter.device, engine=engine,
                      **settings)  # fmt: skip
    batching = {"max_length": max_length, "limit": limit, "max_tokens": max_tokens, "batch_size": batch_size}
    if rates is not None:
        batching["positions"] = positions
    content = source_fingerprint(source) if source is not None else None
    fingerprint = run_fingerprint(adapter, acc, source=source, shard=own, content=content, **batching)
    job_fingerprint = run_fingerprint(adapter, acc, source=source, shard=shard or Shard(), content=content, **batching)
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    state, done = RunState(), Progress()
    if resume and checkpoint is not None and checkpoint.exists():
        acc, done = load_checkpoint(checkpoint, fingerprint, properties, device=adapter.device, engine=engine)
        _restore(state, done)
        log.info("resuming %s: %d proteins done", checkpoint, acc.n_proteins)
    signals = StopSignals(enabled=checkpoint is not None)
    numbered = numbered_items(adapter, proteins, state, done, limit=limit, max_length=max_length, signals=signals)
    last_save = time.perf_counter()

    def save() -> None:
        nonlocal last_save
        _store(state, done)
        save_checkpoint(checkpoint, acc, fingerprint, done)
        last_save = time.perf_counter()

    # Worker threads prepare the next batches' masks and draws on the host while the model runs this one:
    # one on the CPU, whose cores the forward pass needs; more beside a GPU, which would otherwise wait.
    ahead = 1 if adapter.device.type == "cpu" else PREPARE_AHEAD
    preparer = ThreadPoolExecutor(max_workers=ahead, thread_name_prefix="plmlens-prepare")
    with signals, preparer:
        try:
            planned = planned_batches(numbered, max_tokens, batch_size, own, done)
            for items, prepared, window_end in _prepared(acc, preparer, planned, ahead):
                if items:
                    _run_items(adapter, acc, items, prepared, max_length, state, done, signals)
                    if adapter.device.type == "cpu":
                        release_freed_memory()
                if window_end is not None:
                    done.complete_below = window_end
                    done.done = {k for k in done.done if k >= done.complete_below}
                if progress is not None:
                    progress(state)
                if checkpoint is not None and time.perf_counter() - last_save >= checkpoint_seconds:
                    save()
                signals.check()
            if checkpoint is not None:
                save()
        except StopRequested as stop:
            save()
            raise RunInterrupted(stop.signal_number, checkpoint, acc.n_proteins) from None
    result = _result(adapter, acc, state, group, shard or Shard(), job_fingerprint, alpha, max_length, max_tokens,
                     batch_size)  # fmt: skip
    if rates is not None:
        result.info["positional_nulls"] = rates.describe()
    return result


def _with_nulls(
    adapter: ModelAdapter,
    properties: Sequence[str | Property] | None,
    nulls: Sequence[str],
    positions: str,
    proteins: Iterable[Protein | Skipped] | None,
    *,
    seed: int,
    limit: int | None,
    max_length: int,
) -> tuple[list[Property], PositionalRates | None]:
    """The run's properties followed by their positional nulls, whose rates are fitted on `proteins`: the run's
    own list, or a fresh iterator of its source, read here once before the run reads its own."""
    if positions not in POSITIONS:
        raise ValueError(f"positions must be one of {', '.join(POSITIONS)}, not {positions!r}")
    return fit_nulls(get_properties(properties or None), nulls, proteins, seed=seed, numbered=positions == "numbered",
                     limit=limit, max_residues=max_residues(adapter, max_length))  # fmt: skip


def _prepare(acc: Accumulator, items: list[PlannedItem]) -> PreparedBatch:
    return acc.prepare([i.protein for i in items], [i.length for i in items], [i.position for i in items])


def planned_batches(
    items: Iterable[PlannedItem], max_tokens: int, batch_size: int | None, shard: Shard, done: Progress
) -> Iterator[tuple[list[PlannedItem], int | None]]:
    """This process's batches, still to do.

    Every process plans the same batches (read-ahead windows of all proteins, each packed by length) and
    takes those whose index in the plan its `shard` takes, so that a protein meets the same batch-mates, and
    the model computes the same numbers for it, however many processes share the run and however often it
    is resumed. A window's last entry carries the position below which its proteins are all done once it
    is; a window with nothing to do here yields ``([], end)``.
    """
    index = 0
    for window in _windows(items, WINDOW_BATCHES * max_tokens):
        packed = pack_batches([item.tokens for item in window], max_tokens, batch_size)
        taken = [batch for k, batch in enumerate(packed, start=index) if shard.takes(k)]
        index += len(packed)
        todo = [[window[i] for i in batch if not done.is_done(window[i].position)] for batch in taken]
        todo = [batch for batch in todo if batch] or [[]]
        end = window[-1].position + 1
        for k, batch in enumerate(todo):
            yield batch, end if k == len(todo) - 1 else None


def _prepared(
    acc: Accumulator, preparer: ThreadPoolExecutor, planned: Iterator[tuple[list[PlannedItem], int | None]], ahead: int
) -> Iterator[tuple[list[PlannedItem], Future | None, int | None]]:
    """The planned batches with their host-side preparation under way: up to `ahead` of them are prepared
    while the current one runs (across windows too), and the current one's is awaited only once its first
    layer is computed."""
    queue: deque = deque()
    for items, window_end in planned:
        queue.append((items, preparer.submit(_prepare, acc, items) if items else None, window_end))
        if len(queue) > ahead:
            yield queue.popleft()
    while queue:
        yield queue.popleft()


def _run_items(
    adapter: ModelAdapter,
    acc: Accumulator,
    items: list[PlannedItem],
    prepared: Future | None,
    max_length: int,
    state: RunState,
    done: Progress,
    signals: StopSignals,
) -> None:
    """Run one batch and commit it; out of GPU memory, split it in two and retry (a single protein that
    does not fit is skipped and reported)."""
    try:
        batch, truncated = _stage(adapter, acc, items, prepared, max_length, signals)
    except torch.OutOfMemoryError:
        _free_device_memory(adapter.device)
        state.oom_retries += 1
        if len(items) == 1:
            item = items[0]
            reason = f"out of GPU memory at {item.tokens} tokens, even alone"
            log.warning("skipped %s: %s", item.protein.id, reason)
            _skip(state, done, item.record, Skipped(item.protein.source, item.protein.id, reason))
            done.done.add(item.position)
            return
        log.warning("out of GPU memory on a batch of %d proteins; splitting it", len(items))
        half = len(items) // 2
        _run_items(adapter, acc, items[:half], None, max_length, state, done, signals)
        _run_items(adapter, acc, items[half:], None, max_length, state, done, signals)
        return
    acc.commit(batch)
    done.done.update(item.position for item in items)
    state.n_proteins += len(items)
    state.n_residues += sum(batch.lengths)
    state.n_truncated += len(truncated)
    lengths = {item.protein.id: len(item.protein) for item in items}
    room = max(0, TRUNCATED_EXAMPLES - len(state.truncated))
    state.truncated += [{"id": name, "length": lengths.get(name)} for name in truncated[:room]]
    state.n_batches += 1
    state.tokens += sum(item.tokens for item in items)
    state.padded_tokens += len(items) * max(item.tokens for item in items)


def _stage(
    adapter: ModelAdapter,
    acc: Accumulator,
    items: list[PlannedItem],
    prepared: Future | None,
    max_length: int,
    signals: StopSignals,
):
    proteins = [item.protein for item in items]
    batch = None
    truncated: tuple[str, ...] = ()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # truncation is counted in the summary instead
        for output in adapter.iter_layers(proteins, max_length=max_length, hidden_states=False, on_device=True):
            if batch is None:
                # While this waits, the model computes the next layer.
                prepared = prepared.result() if prepared is not None else _prepare(acc, items)
                if output.lengths.tolist() != prepared.lengths:
                    raise RuntimeError(f"{adapter.name}: residue counts {output.lengths.tolist()} of a batch differ "
                                       f"from its encoding's {prepared.lengths}")  # fmt: skip
                batch = acc.begin(prepared)
                truncated = tuple(output.truncated)
            batch.add_layer(output.layer, output.attention)
            signals.check()
    return batch, truncated


def _free_device_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


_COUNTERS = ("n_truncated", "n_batches", "tokens", "padded_tokens", "oom_retries")


def _store(state: RunState, done: Progress) -> None:
    done.counters = {name: getattr(state, name) for name in _COUNTERS}
    done.counters["seconds"] = state.previous_seconds + state.seconds
    done.counters["n_proteins"] = state.n_proteins
    done.counters["n_residues"] = state.n_residues


def _restore(state: RunState, done: Progress) -> None:
    for name in (*_COUNTERS, "n_proteins", "n_residues"):
        setattr(state, name, int(done.counters.get(name, 0)))
    state.previous_seconds = float(done.counters.get("seconds", 0.0))
    state.skipped = [Skipped(s["file"], s["chain"], s["reason"]) for s in done.skipped]


def max_residues(adapter: ModelAdapter, max_length: int) -> int:
    """The residues of a protein the model sees: `max_length` tokens, capped at the model's own limit, less
    its special tokens. Longer proteins keep their first residues."""
    return min(int(max_length), adapter.max_length) - adapter.tokenizer.n_special


def attention_support(adapter: ModelAdapter) -> str:
    """The pairs the model's heads can attend, as `Accumulator` takes it: ``causal`` for left-to-right
    models (j ≤ i), else ``full``."""
    return "causal" if adapter.causal else "full"


def run_fingerprint(
    adapter: ModelAdapter,
    acc: Accumulator,
    *,
    source: str | None,
    max_length: int,
    limit: int | None,
    max_tokens: int,
    batch_size: int | None,
    shard: Shard,
    content: dict | None = None,
    positions: str | None = None,
) -> dict:
    """What must match for two partial runs to be continued or summed: source and its content, model,
    settings, batching and shard.

    The content (`plmlens.proteins.source_fingerprint`, computed from `source` unless given) is there
    because a SOURCE names a path: data replaced behind the same path must not be resumed or merged as if it
    were the same.

    The batching is part of it because a model's arithmetic for a protein can depend, in the last bits,
    on the shape of its batch (an attention weight next to θ may fall on either side); with the same
    batching, resumed and sharded runs see exactly the numbers an uninterrupted run sees. The device and
    the statistics' engine are left out: the sums do not depend on them. Whether the weights are random
    (and their seed) is part of the model, so a pretrained run's checkpoint never continues a
    random-weights run, nor the other way round.
    """
    if content is None and source is not None:
        content = source_fingerprint(source)
    return {
        "source": source,
        "source_content": content,
        "model": {"name": adapter.name, "architecture": adapter.architecture, "layers": adapter.n_layers,
                  "heads": adapter.n_heads, "parameters": adapter.n_params, "dtype": dtype_name(adapter.dtype),
                  "random_init": adapter.random_init, "init_seed": adapter.init_seed},
        "settings": {**acc.config(), "max_length": max_length, "limit": limit, "max_tokens": max_tokens,
                     "batch_size": batch_size, **({"positions": positions} if positions is not None else {})},
        "shard": {"index": shard.index, "count": shard.count},
    }  # fmt: skip


def planned_fingerprint(
    adapter: ModelAdapter,
    properties: Sequence[str | Property],
    *,
    source: str | None,
    shard: Shard | None = None,
    threshold: float = 0.3,
    seed: int = 123,
    n_bootstrap: int = 200,
    null: bool = True,
    max_length: int = 512,
    limit: int | None = None,
    max_tokens: int | None = None,
    batch_size: int | None = None,
    nulls: Sequence[str] = (),
    positions: str = "numbered",
) -> dict:
    """The `run_fingerprint` that `analyze` with these arguments gives its run (the whole job's, not a rank's),
    without running it: to tell whether a finished run in a directory is this one."""
    base = get_properties(properties or None)
    names = [*base, *(null_name(p.name, kind) for kind in NULL_KINDS if kind in nulls for p in base
                      if applicable(p, kind))]  # fmt: skip
    acc = Accumulator(adapter.n_layers, adapter.n_heads, names, threshold=threshold, seed=seed,
                      n_bootstrap=n_bootstrap, null=null, support=attention_support(adapter))  # fmt: skip
    budget = int(max_tokens or default_max_tokens(adapter.device))
    return run_fingerprint(adapter, acc, source=source, shard=shard or Shard(), max_length=max_length, limit=limit,
                           max_tokens=budget, batch_size=batch_size,
                           positions=positions if nulls else None)  # fmt: skip


def _result(
    adapter: ModelAdapter,
    acc: Accumulator,
    state: RunState,
    group: ProcessGroup,
    shard: Shard,
    fingerprint: dict,
    alpha: float,
    max_length: int,
    max_tokens: int,
    batch_size: int | None,
) -> AnalysisResult:
    """The run's result: on several ranks, the sums and counters of all of them."""
    skipped = [s.to_dict() for s in state.skipped]
    seconds = state.previous_seconds + state.seconds
    if group.distributed:
        sums = group.all_reduce({**acc.sums, "__counts__": np.array([acc.n_proteins, acc.n_residues])})
        acc._sums = {k: v for k, v in sums.items() if not k.startswith("__")}
        acc.n_proteins, acc.n_residues = (int(v) for v in sums["__counts__"])
        totals = group.all_reduce({name: np.array(getattr(state, name), dtype=float) for name in _COUNTERS})
        for name, value in totals.items():
            setattr(state, name, int(value))
        # Every rank reads the whole source, so they share its skips; out-of-memory skips are a rank's own.
        merged: dict[str, dict] = {}
        for part in group.all_gather_json(skipped):
            merged.update({str((s["file"], s["chain"], s["reason"])): s for s in part})
        skipped = list(merged.values())
        seconds = max(group.all_gather_json(seconds))
        state.truncated = [t for part in group.all_gather_json(state.truncated) for t in part][:TRUNCATED_EXAMPLES]
    info = {
        "model": {"name": adapter.name, "architecture": adapter.architecture, "layers": adapter.n_layers,
                  "heads": adapter.n_heads, "parameters": adapter.n_params, "random_init": adapter.random_init,
                  "init_seed": adapter.init_seed},
        "max_length": max_length, "max_tokens": max_tokens, "batch_size": batch_size,
        "device": str(adapter.device), "dtype": dtype_name(adapter.dtype), "engine": acc.engine,
        "world_size": group.world_size, "shard": str(shard) if shard.count > 1 else None,
        "n_skipped": len(skipped), "skipped": skipped, "max_residues": max_residues(adapter, max_length),
        "n_truncated": state.n_truncated, "truncated": state.truncated, "unlabelled": state.unlabelled,
        "n_batches": state.n_batches, "tokens": state.tokens, "padded_tokens": state.padded_tokens,
        "padding_efficiency": state.padding_efficiency, "oom_retries": state.oom_retries,
        "wall_seconds": seconds, "residues_per_second": acc.n_residues / seconds if seconds > 0 else None,
        "fingerprint": fingerprint,
    }  # fmt: skip
    return AnalysisResult(acc, alpha=alpha, info=info)


def release_freed_memory() -> None:
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
