"""Per-residue hidden states of chosen layers, streamed to disk (`extract`) and read back memory-mapped
(`ActivationStore`).

An activation store is a directory::

    DIR/activations.json           the record: model, layers (1-based), width, dtype, source, counts;
                                   written last, it marks the store finished
    DIR/index.csv                  one row per protein: id, record, position, rank, part, offset, length
    DIR/parts/L{l}.r{rank}-{k}.npy the states of layer l, float16 (or bfloat16 kept as uint16), rows = residues
    DIR/parts/progress.r{rank}.json  the parts a rank has finished, and its `Progress` (for --resume)

Proteins go through the batch plan of `plmlens.analysis.analyze` (read-ahead windows packed by length,
every K-th batch to each of K processes), so a store from torchrun ranks or a resumed run holds exactly the
numbers of one uninterrupted process. Special tokens and padding are dropped; a protein longer than the
model's limit keeps its first residues.
"""

from __future__ import annotations

import contextlib
import json
import logging
import mmap
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from plmlens.analysis.checkpoint import Progress
from plmlens.analysis.run import (
    PlannedItem,
    RunState,
    StopRequested,
    StopSignals,
    default_max_tokens,
    numbered_items,
    planned_batches,
    release_freed_memory,
)
from plmlens.distributed import ProcessGroup
from plmlens.ioutils import write_bytes_atomic, write_text_atomic
from plmlens.models import ModelAdapter, dtype_name
from plmlens.proteins import Protein
from plmlens.proteins.fingerprint import source_fingerprint
from plmlens.proteins.skips import Skipped

log = logging.getLogger(__name__)

STORE_FORMAT = "plmlens-activations/1"
STORE_RECORD = "activations.json"
STORE_INDEX = "index.csv"
PARTS = "parts"
#: What `extract` writes into its directory (for `plmlens.outputs.claim_output`).
STORE_NAMES = (STORE_RECORD, STORE_INDEX, PARTS)
#: Storage types of the states: float16 is exact enough for SAE training and half of float32.
DTYPES = ("float16", "bfloat16")
#: A part is written once this many residues are buffered (and at the end of every read-ahead window).
PART_RESIDUES = 32_768
INDEX_COLUMNS = ("id", "record", "position", "rank", "part", "offset", "length")


class StoreError(ValueError):
    """An activation store that is missing, unfinished or damaged; one line naming the file."""


class ExtractionInterrupted(Exception):  # noqa: N818 -- reads as what happened, like KeyboardInterrupt
    """SIGTERM or SIGINT stopped `extract` after its finished parts were recorded; resume with ``--resume``."""

    def __init__(self, signal_number: int, n_proteins: int) -> None:
        self.exit_code = 128 + signal_number
        super().__init__(f"{n_proteins:,} proteins saved")


# -- writing ------------------------------------------------------------------------------------------------


@dataclass
class _Buffer:
    """States of one rank waiting to be written as a part, with their index rows."""

    layers: list[int]
    rows: list[dict] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    states: dict[int, list[np.ndarray]] = field(default_factory=dict)
    residues: int = 0

    def add(self, item: PlannedItem, states: dict[int, np.ndarray], rank: int) -> None:
        self.rows.append({"id": item.protein.id, "record": item.record, "position": item.position, "rank": rank,
                          "offset": self.residues, "length": int(next(iter(states.values())).shape[0])})  # fmt: skip
        for layer, array in states.items():
            self.states.setdefault(layer, []).append(array)
        self.positions.append(item.position)
        self.residues += self.rows[-1]["length"]

    def clear(self) -> None:
        self.rows, self.positions, self.states, self.residues = [], [], {}, 0


class _PartWriter:
    """Writes a rank's parts and its progress file; on resume, picks up the parts recorded before."""

    def __init__(self, directory: Path, rank: int, layers: list[int], dtype: str, resume: bool) -> None:
        self.parts = directory / PARTS
        self.rank, self.layers, self.dtype = rank, layers, dtype
        self.progress_path = self.parts / f"progress.r{rank}.json"
        self.written: list[dict] = []  # {"part": k, "rows": [...]} in order
        self.done = Progress()
        if resume and self.progress_path.is_file():
            record = _read_json(self.progress_path)
            self.written, self.done = list(record["parts"]), Progress.from_dict(record["progress"])
        self.parts.mkdir(parents=True, exist_ok=True)
        self._remove_unrecorded()

    def _remove_unrecorded(self) -> None:
        """Parts of this rank written after its last progress record (a run killed mid-write) go."""
        kept = {self._name(layer, entry["part"]) for entry in self.written for layer in self.layers}
        for path in self.parts.glob(f"L*.r{self.rank}-*.npy"):
            if path.name not in kept:
                path.unlink()

    def _name(self, layer: int, part: int) -> str:
        return f"L{layer + 1}.r{self.rank}-{part:06d}.npy"

    def write(self, buffer: _Buffer) -> None:
        if not buffer.rows:
            return
        part = len(self.written)
        for layer in self.layers:
            array = np.concatenate(buffer.states[layer])
            _save_npy(self.parts / self._name(layer, part), array)
        self.written.append({"part": part, "rows": [{**row, "part": part} for row in buffer.rows]})
        # Done once on disk: a protein buffered when the run stops is computed again on resume.
        self.done.done.update(buffer.positions)
        buffer.clear()

    def record(self, state: RunState) -> None:
        self.done.counters = {"n_proteins": state.n_proteins, "n_residues": state.n_residues,
                              "seconds": state.previous_seconds + state.seconds}  # fmt: skip
        payload = {"parts": self.written, "progress": self.done.to_dict()}
        write_text_atomic(self.progress_path, json.dumps(payload) + "\n")


def _save_npy(path: Path, array: np.ndarray) -> None:
    import io

    handle = io.BytesIO()
    np.save(handle, array, allow_pickle=False)
    write_bytes_atomic(path, handle.getvalue())


def _to_storage(hidden: torch.Tensor, dtype: str) -> np.ndarray:
    if dtype == "bfloat16":
        return hidden.to(torch.bfloat16).view(torch.uint16).cpu().numpy()  # numpy has no bfloat16
    return hidden.to(torch.float16).cpu().numpy()


def extract(
    adapter: ModelAdapter,
    proteins: Iterable[Protein | Skipped],
    layers: Sequence[int],
    directory: str | Path,
    *,
    dtype: str = "float16",
    max_length: int = 512,
    max_tokens: int | None = None,
    batch_size: int | None = None,
    limit: int | None = None,
    source: str | None = None,
    group: ProcessGroup | None = None,
    resume: bool = False,
    checkpoint_seconds: float = 60.0,
    progress: Callable[[RunState], None] | None = None,
) -> dict:
    """Stream the residue hidden states of `layers` of every protein to an activation store.

    Parameters
    ----------
    adapter : ModelAdapter
    proteins : iterable of Protein or Skipped
        Sequences are enough (FASTA); skipped and unreadable records are counted and passed over.
    layers : sequence of int
        1-based layers (the output of block ``l``), as in heads.csv.
    directory : path
        The store's directory; its parts are written as they fill, the record last (rank 0).
    dtype : {"float16", "bfloat16"}
    max_length, max_tokens, batch_size, limit
        As for `plmlens.analysis.analyze`: the same batch plan.
    source : str, optional
        The SOURCE string, recorded with its content fingerprint.
    group : ProcessGroup, optional
        torchrun ranks: each takes every K-th batch; rank 0 writes the index and the record.
    resume : bool
        Continue from the parts this rank recorded (same settings); the store equals an uninterrupted one.
    checkpoint_seconds : float
        At least this often the finished parts are recorded (and on SIGTERM/SIGINT, then
        `ExtractionInterrupted` is raised).
    progress : callable, optional
        Called with the `RunState` after every batch.

    Returns
    -------
    dict
        The store's record (``activations.json``).
    """
    group = group or ProcessGroup()
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    chosen = sorted({int(layer) for layer in layers})
    if not chosen or chosen[0] < 1 or chosen[-1] > adapter.n_layers:
        raise ValueError(f"{adapter.name} has layers 1..{adapter.n_layers}; --layers {list(layers)} is outside")
    directory = Path(directory)
    settings = {"layers": chosen, "dtype": dtype, "max_length": max_length, "limit": limit,
                "max_tokens": int(max_tokens or default_max_tokens(adapter.device)), "batch_size": batch_size,
                "world_size": group.world_size}  # fmt: skip
    fingerprint = {"source": source, "source_content": source_fingerprint(source) if source else None,
                   "model": _model_record(adapter), "settings": settings}  # fmt: skip
    writer = _PartWriter(directory, group.rank, [layer - 1 for layer in chosen], dtype, resume)
    _check_resumed(writer, fingerprint, resume)
    state = _run(adapter, proteins, writer, settings, group, progress, checkpoint_seconds, fingerprint)
    group.barrier()
    record = None
    if group.is_main:
        record = _finish(adapter, directory, writer, group.world_size, fingerprint, state)
    group.barrier()
    return record if record is not None else _read_json(directory / STORE_RECORD)


def _check_resumed(writer: _PartWriter, fingerprint: dict, resume: bool) -> None:
    stored = writer.parts / "fingerprint.json"
    if resume and stored.is_file() and _read_json(stored) != json.loads(json.dumps(fingerprint)):
        raise ValueError(f"{stored}: the parts here come from other settings, model or data; use --overwrite")
    write_text_atomic(stored, json.dumps(fingerprint, indent=2) + "\n")


def _run(adapter, proteins, writer, settings, group, progress, checkpoint_seconds, fingerprint) -> RunState:
    state, done = RunState(), writer.done
    state.n_proteins = int(done.counters.get("n_proteins", 0))
    state.n_residues = int(done.counters.get("n_residues", 0))
    state.previous_seconds = float(done.counters.get("seconds", 0.0))
    state.skipped = [Skipped(s["file"], s["chain"], s["reason"]) for s in done.skipped]
    signals = StopSignals(enabled=True)
    buffer = _Buffer(writer.layers)
    last_record = time.perf_counter()
    with signals:
        items = numbered_items(adapter, proteins, state, done, limit=settings["limit"],
                               max_length=settings["max_length"], signals=signals)  # fmt: skip
        try:
            plan = planned_batches(items, settings["max_tokens"], settings["batch_size"], group.shard, done)
            for batch, window_end in plan:
                if batch:
                    _run_batch(adapter, batch, buffer, writer, settings, state, group.rank)
                if window_end is not None:
                    # A window's proteins are on disk before its end is recorded as done.
                    writer.write(buffer)
                    done.complete_below = window_end
                    done.done = {k for k in done.done if k >= window_end}
                    if time.perf_counter() - last_record >= checkpoint_seconds:
                        writer.record(state)
                        last_record = time.perf_counter()
                if progress is not None:
                    progress(state)
                signals.check()
            writer.write(buffer)
            writer.record(state)
        except StopRequested as stop:
            state.n_proteins -= len(buffer.rows)  # not on disk: the resumed run computes them again
            state.n_residues -= buffer.residues
            buffer.clear()
            writer.record(state)
            raise ExtractionInterrupted(stop.signal_number, state.n_proteins) from None
    return state


def _run_batch(adapter, batch, buffer, writer, settings, state, rank) -> None:
    encoding = adapter.encode([item.protein for item in batch], max_length=settings["max_length"])
    found = adapter.layer_states(encoding, writer.layers)
    for b, item in enumerate(batch):
        buffer.add(item, {layer: _to_storage(found[layer][b], settings["dtype"]) for layer in writer.layers}, rank)
    state.n_proteins += len(batch)
    state.n_residues += int(encoding.lengths.sum())
    state.n_batches += 1
    state.tokens += sum(item.tokens for item in batch)
    state.padded_tokens += len(batch) * max(item.tokens for item in batch)
    if buffer.residues >= PART_RESIDUES:
        writer.write(buffer)
    if adapter.device.type == "cpu":
        release_freed_memory()  # as analyze does after each batch: the forward pass's freed blocks go back


def _finish(adapter, directory: Path, writer: _PartWriter, world_size: int, fingerprint: dict, state) -> dict:
    """Rank 0: the index of every rank's parts, then the record."""
    rows = []
    skipped: list[dict] = []
    for rank in range(world_size):
        record = _read_json(directory / PARTS / f"progress.r{rank}.json")
        rows += [row for entry in record["parts"] for row in entry["rows"]]
        skipped += record["progress"]["skipped"] if rank == 0 else []
    index = pd.DataFrame(rows, columns=list(INDEX_COLUMNS)).sort_values("position", kind="stable")
    write_text_atomic(directory / STORE_INDEX, index.to_csv(index=False))
    seconds = state.previous_seconds + state.seconds
    record = {
        "format": STORE_FORMAT, **fingerprint, "layers": fingerprint["settings"]["layers"],
        "d": adapter.hidden_size, "dtype": fingerprint["settings"]["dtype"],
        "n_proteins": len(index), "n_residues": int(index["length"].sum()), "skipped": skipped,
        "seconds": seconds, "residues_per_second": state.n_residues / state.seconds if state.seconds else None,
    }  # fmt: skip
    write_text_atomic(directory / STORE_RECORD, json.dumps(record, indent=2) + "\n")
    return record


def _model_record(adapter: ModelAdapter) -> dict:
    return {"name": adapter.name, "architecture": adapter.architecture, "layers": adapter.n_layers,
            "d": adapter.hidden_size, "dtype": dtype_name(adapter.dtype), "random_init": adapter.random_init,
            "init_seed": adapter.init_seed, "causal": adapter.causal}  # fmt: skip


def _read_json(path: Path) -> dict:
    try:
        record = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise StoreError(f"{path}: missing") from None
    except (OSError, ValueError, RecursionError) as error:
        raise StoreError(f"{path}: unreadable ({type(error).__name__})") from None
    if not isinstance(record, dict):
        raise StoreError(f"{path}: damaged (not a record)")
    return record


# -- reading ------------------------------------------------------------------------------------------------


class LayerTokens:
    """One layer's residues of a store as one (n_tokens, d) matrix read in blocks: the `TokenSource` the SAE
    trainer reads. Parts are memory-mapped, so memory does not grow with the store."""

    def __init__(self, paths: Sequence[Path], d: int, dtype: str) -> None:
        self.arrays = [np.load(path, mmap_mode="r", allow_pickle=False) for path in paths]
        for path, array in zip(paths, self.arrays, strict=True):
            if array.ndim != 2 or array.shape[1] != d:
                raise StoreError(f"{path}: damaged (shape {array.shape}, expected (n, {d}))")
        self.d, self.dtype = d, dtype
        self.offsets = np.cumsum([0] + [len(a) for a in self.arrays])
        self.n_tokens = int(self.offsets[-1])

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` as float32."""
        start, stop = max(0, int(start)), min(self.n_tokens, int(stop))
        pieces = []
        first = int(np.searchsorted(self.offsets, start, side="right")) - 1
        for k in range(max(first, 0), len(self.arrays)):
            lo, hi = self.offsets[k], self.offsets[k + 1]
            if lo >= stop:
                break
            rows = (max(start, lo) - lo, min(stop, hi) - lo)
            pieces.append(self._float32(self.arrays[k][rows[0] : rows[1]]))
            _release(self.arrays[k], *rows)
        return np.concatenate(pieces) if pieces else np.zeros((0, self.d), np.float32)

    def _float32(self, rows: np.ndarray) -> np.ndarray:
        if self.dtype == "bfloat16":
            return torch.from_numpy(np.array(rows, copy=True)).view(torch.bfloat16).float().numpy()
        return np.asarray(rows, dtype=np.float32)


def _release(array: np.memmap, first: int, stop: int) -> None:
    """Drop the pages of rows ``first:stop`` from this process once copied (they stay in the page cache), so
    that a pass over a store larger than memory does not count it all as this process's resident memory."""
    mapping = getattr(array, "_mmap", None)
    if mapping is None or not hasattr(mmap, "MADV_DONTNEED"):
        return
    row = array.shape[1] * array.itemsize
    # np.memmap maps from the allocation boundary below the data's offset (the .npy header sits before it).
    start = array.offset % mmap.ALLOCATIONGRANULARITY + first * row
    low = start // mmap.PAGESIZE * mmap.PAGESIZE
    with contextlib.suppress(OSError, ValueError):
        mapping.madvise(mmap.MADV_DONTNEED, low, min(start - low + (stop - first) * row, len(mapping) - low))


class ActivationStore:
    """A finished activation store (see the module docstring), read memory-mapped.

    Parameters
    ----------
    path : path
        The directory `extract` wrote.

    Raises
    ------
    StoreError
        Missing or unfinished (no record), another format, or a damaged index.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.record = _read_json(self.path / STORE_RECORD)
        if self.record.get("format") != STORE_FORMAT:
            raise StoreError(f"{self.path / STORE_RECORD}: not an activation store ({self.record.get('format')!r})")
        try:
            self.index = pd.read_csv(self.path / STORE_INDEX, dtype={"id": str})
        except (OSError, ValueError) as error:
            raise StoreError(f"{self.path / STORE_INDEX}: damaged ({type(error).__name__})") from None
        if list(self.index.columns) != list(INDEX_COLUMNS):
            raise StoreError(f"{self.path / STORE_INDEX}: damaged (columns {list(self.index.columns)})")
        self.layers: list[int] = [int(layer) for layer in self.record["layers"]]
        self.d = int(self.record["d"])
        self._tokens: dict[int, LayerTokens] = {}

    def __repr__(self) -> str:
        return f"ActivationStore({str(self.path)!r}: {len(self.index):,} proteins, layers {self.layers})"

    @property
    def model(self) -> dict:
        return self.record["model"]

    def tokens(self, layer: int) -> LayerTokens:
        """Every residue of 1-based `layer`, parts in the order their rows are indexed."""
        if layer not in self.layers:
            raise StoreError(f"{self.path}: layer {layer} was not extracted (layers {self.layers})")
        if layer not in self._tokens:
            parts = self.index[["rank", "part"]].drop_duplicates().sort_values(["rank", "part"])
            paths = [self.path / PARTS / f"L{layer}.r{r}-{p:06d}.npy" for r, p in parts.itertuples(index=False)]
            missing = [str(p) for p in paths if not p.is_file()]
            if missing:
                raise StoreError(f"{missing[0]}: missing ({len(missing)} part(s) of layer {layer})")
            self._tokens[layer] = LayerTokens(paths, self.d, self.record["dtype"])
        return self._tokens[layer]

    def proteins(self, layer: int) -> Iterator[tuple[str, np.ndarray]]:
        """``(id, states (L, d) float32)`` of every protein, in source order."""
        tokens = self.tokens(layer)
        starts = self._row_starts()
        for row, start in zip(self.index.itertuples(index=False), starts, strict=True):
            yield str(row.id), tokens.read(start, start + int(row.length))

    def _row_starts(self) -> np.ndarray:
        """Where each index row's residues start in `tokens` (parts concatenated in rank, part order)."""
        parts = self.index.groupby(["rank", "part"])["length"].sum().sort_index()
        part_start = dict(zip(parts.index, np.concatenate([[0], np.cumsum(parts.to_numpy())[:-1]]), strict=True))
        return np.array([part_start[(r, p)] + o for r, p, o in
                         self.index[["rank", "part", "offset"]].itertuples(index=False)], dtype=np.int64)  # fmt: skip


def clear_store(directory: str | Path) -> None:
    """Remove an earlier store (``--overwrite``): its record first, so that no reader takes the rest for a
    finished store, then its index and parts."""
    directory = Path(directory)
    for name in (STORE_RECORD, STORE_INDEX):
        (directory / name).unlink(missing_ok=True)
    parts = directory / PARTS
    if parts.is_dir():
        for path in parts.iterdir():
            path.unlink()
        os.rmdir(parts)
