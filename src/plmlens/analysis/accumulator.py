"""Streaming per-head sums of attention against protein properties.

For every property p, layer l and head h the accumulator keeps, summed over proteins x and residue
pairs (i, j) where f is *defined*:

* ``arcs``  = Σ 1[α_ij > θ]              (high-confidence arcs, Eq. 1 denominator)
* ``hits``  = Σ 1[α_ij > θ] · f(i, j)     (Eq. 1 numerator)
* ``weight`` = Σ α_ij                     (Eq. 3 denominator)
* ``weight_hits`` = Σ α_ij · f(i, j)      (Eq. 3 numerator)

the same four for the null model (each attention row randomly permuted, appendix B.2), the background
(Σ f and Σ defined over pairs or residues), and Poisson-bootstrap replicates of ``arcs`` and ``hits``
with proteins as the resampled unit.

The *support* is the set of pairs a head can attend. ``full`` (bidirectional models): every pair; the null
model permutes each row over the protein's n residues, and backgrounds count every defined pair (token
properties: every defined residue). ``causal`` (left-to-right models, where row i attends only j ≤ i):
the null model permutes row i only among positions j ≤ i and leaves the zeros above the diagonal where
they are, and backgrounds count the attendable pairs j ≤ i only (token properties: residue j weighted by
the n − j rows that can attend it). Proportions need no such rule: arcs exist only where attention is
non-zero. All sums merge by addition (`Accumulator.merge`), so runs split
across processes or machines can be summed.

A batch is a transaction: `Accumulator.start_batch` builds the batch's property masks once (on the
statistics' device), `AccumulatorBatch.add_layer` stages each layer's per-protein sums, and
`Accumulator.commit` adds the whole batch at once, so a batch abandoned half-way (out of memory, a
signal) leaves the totals untouched.

Two engines compute the same sums. ``torch`` runs where the attention is (the model's GPU): dense
matrix products of the attention with the masks, in float64, so that only the (properties × layers ×
heads) sums ever leave the device. ``numpy`` is the CPU engine: sparse masks protein by protein on one
thread, which leaves the cores to the model's forward pass and is faster there. Counts agree exactly
between them and float sums to float64 rounding; the null model's permutations and the bootstrap weights
are drawn on the host by numpy in both, keyed by each protein's position, so neither depends on the
engine, the device or the batching.
"""

from __future__ import annotations

import inspect
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from plmlens.analysis.nulls import null_property, split_null_name
from plmlens.analysis.properties import PAIR, Property, get_properties
from plmlens.ioutils import write_bytes_atomic
from plmlens.proteins import Protein
from plmlens.proteins.archive import (
    ArchiveError,
    array_checksum,
    is_int,
    is_number,
    parse_json,
    read_npz,
    text_member,
    verify_checksum,
)

SUMS = ("arcs", "hits", "weight", "weight_hits")
#: Pairs a head can attend: every pair, or j ≤ i (see the module docstring).
SUPPORTS = ("full", "causal")
#: Order of the four sums in staged per-protein arrays.
_STAGED = ("weight_hits", "weight", "hits", "arcs")
ENGINES = ("auto", "numpy", "torch")


@dataclass
class _HostMasks:
    """One batch's property masks on the host, padded to its longest protein."""

    pair_values: np.ndarray  # (B, P_pair, N, N) bool, f · defined
    pair_defined: np.ndarray  # (B, P_pair, N, N) bool
    token_values: np.ndarray  # (B, P_token, N) bool, g · defined
    token_defined: np.ndarray  # (B, P_token, N) bool


def _sparse(mask: np.ndarray) -> tuple[np.ndarray, bool]:
    """Flat indices where an (n, n) 0/1 mask is 1, or, when it is mostly 1, where it is 0 (``complement``
    True: a sum over the mask is then the total minus the sum over those indices)."""
    complement = int(np.count_nonzero(mask)) > mask.size // 2
    return np.flatnonzero(mask == 0 if complement else mask), complement


def _pair_mask(mask: np.ndarray, weighted: bool) -> tuple[np.ndarray, bool, np.ndarray | None]:
    """A pair mask as the numpy engine sums it: `_sparse` indices, and for a weighted mask (a null's rates)
    the values at them, which weigh the attention there."""
    if not weighted:
        return (*_sparse(mask), None)
    index = np.flatnonzero(mask)
    return index, False, mask.reshape(-1)[index].astype(np.float64)


@dataclass
class PreparedBatch:
    """The host-side work of a batch, done before its forward pass (`Accumulator.prepare`, safe to run in
    another thread): property masks, background counts, the null model's draws, bootstrap weights, and
    whatever the engine builds from them on the host."""

    lengths: list[int]
    positions: list[int]
    background_hits: np.ndarray
    background_total: np.ndarray
    host: object  # the engine's host state


class AccumulatorBatch:
    """One batch in progress: what `Accumulator.prepare` built, on the statistics' device, and the
    per-protein sums staged layer by layer until `Accumulator.commit`.

    Made by `Accumulator.start_batch` or `Accumulator.begin`; not constructed directly.
    """

    def __init__(self, acc: Accumulator, prepared: PreparedBatch) -> None:
        self.accumulator = acc
        self.lengths = prepared.lengths
        self.positions = prepared.positions
        self.background_hits = prepared.background_hits
        self.background_total = prepared.background_total
        self._engine_state = acc._engine.begin(prepared.host)
        self.layers_done: set[int] = set()

    def add_layer(self, layer: int, attention: torch.Tensor) -> None:
        """Stage one layer.

        Parameters
        ----------
        layer : int
            0-based layer index.
        attention : Tensor, shape (B, H, N, N)
            Residue-aligned attention of the batch's proteins, zero beyond each protein's length, on any
            device (it is moved to the statistics' device and cast to float32 if needed).
        """
        if not 0 <= layer < self.accumulator.n_layers:
            raise IndexError(f"layer {layer} outside 0..{self.accumulator.n_layers - 1}")
        batch, heads = attention.shape[:2]
        if batch != len(self.lengths) or heads != self.accumulator.n_heads:
            raise ValueError(
                f"attention of shape {tuple(attention.shape)} for a batch of {len(self.lengths)} proteins "
                f"and {self.accumulator.n_heads} heads"
            )
        self.accumulator._engine.layer(self._engine_state, layer, attention)
        self.layers_done.add(layer)


@dataclass
class _NumpyState:
    lengths: list[int]
    prepared: list  # per protein: (token mask (2·P_token, n) float64, pair masks [(indices, complement)])
    orders: list[np.ndarray] | None  # per protein: flat indices of its row-permuted attention (null model)
    weights: np.ndarray | None
    staged: np.ndarray  # (L, B, C, 4, P, H)


class _NumpyEngine:
    """Host sums with sparse pair masks, protein by protein, on one thread (see `_NumpyEngine.sums`)."""

    name = "numpy"
    device = torch.device("cpu")

    def __init__(self, acc: Accumulator) -> None:
        self.acc = acc

    def host(self, masks: _HostMasks, lengths: list[int], draws, weights) -> _NumpyState:
        acc = self.acc
        prepared = []
        weighted = [acc._properties[index].weighted for index in acc._pair]
        for b, n in enumerate(lengths):
            pair = [
                _pair_mask(m[b, k, :n, :n], side == 0 and weighted[k])
                for side, m in enumerate((masks.pair_values, masks.pair_defined))
                for k in range(len(acc._pair))
            ]
            token = np.concatenate([masks.token_values[b, :, :n], masks.token_defined[b, :, :n]]).astype(np.float64)
            dense = np.concatenate([masks.pair_values[b, :, :n, :n], masks.pair_defined[b, :, :n, :n]])
            prepared.append((token, pair, dense.reshape(len(dense), n * n)))
        orders = None
        if draws is not None:
            # Flat gather indices into a protein's (n, width) block of rows of the padded attention
            width = max(lengths)
            orders = [(np.argsort(d, axis=-1) + np.arange(0, len(d) * width, width)[:, None]).ravel() for d in draws]
        copies = 2 if orders is not None else 1
        staged = np.zeros((acc.n_layers, len(lengths), copies, 4, len(acc.property_names), acc.n_heads))
        return _NumpyState(lengths, prepared, orders, weights, staged)

    def begin(self, host: _NumpyState) -> _NumpyState:
        return host

    def layer(self, state: _NumpyState, layer: int, attention: torch.Tensor) -> None:
        state.staged[layer] = self.sums(attention, state)

    def sums(self, attention: torch.Tensor, state: _NumpyState) -> np.ndarray:
        """The four sums per protein, property and head, (B, C, 4, P, H) float64: of `attention` and, with
        the null model, of its row-permuted copy.

        Protein by protein on the (H, n) rows: token sums need the column sums (over the rows i) of the
        attention and of its high-confidence indicator; pair weights only the attention at the pairs where a
        mask is 1 (or 0, for masks mostly 1: total minus those), as pair masks such as contacts are sparse.
        High-confidence arcs are sparse too (a row summing to at most 1 has at most 1/θ of them), so they are
        found once and counted per column and per pair mask from their positions. The permuted attention of
        the null model is one gather. All in single-threaded numpy: this runs next to the model's forward
        pass, and small multi-threaded operations would compete with it.
        """
        acc = self.acc
        lengths, orders = state.lengths, state.orders
        batch, heads, _, width = attention.shape
        values = np.ascontiguousarray(attention.detach().float().cpu().numpy()).reshape(batch, heads, width * width)
        copies = 1 if orders is None else 2
        n_pair, n_token = len(acc._pair), len(acc._token)
        raw = np.zeros((batch, copies, 4, n_token + n_pair, heads))  # properties as (token..., pair...)
        for b, n in enumerate(lengths):
            if n == 0:
                continue
            token_mask, pair_masks, pair_dense = state.prepared[b]
            # (C·H, n, n): the attention, then (null model) each row permuted, as one array
            stacked = np.empty((copies * heads, n, n), dtype=np.float32)
            np.copyto(stacked[:heads], values[b].reshape(heads, width, width)[:, :n, :n])
            if orders is not None:
                np.take(values[b], orders[b], axis=1, out=stacked[heads:].reshape(heads, n * n))
            # float64 sums, so that a pair mask's sum equals the total whenever the rest is zero
            column_weight = stacked.sum(axis=1, dtype=np.float64)  # (C·H, n)
            arc_row, arc_pair = np.divmod(np.flatnonzero(stacked.reshape(-1) > acc.threshold), n * n)
            column_high = np.bincount(arc_row * n + arc_pair % n, minlength=copies * heads * n)
            column_high = column_high.reshape(copies * heads, n)
            sums = raw[b].reshape(copies, 2, 2, n_token + n_pair, heads)  # (copy, weight|high, values|defined)
            if n_token:
                columns = np.stack([column_weight, column_high]).reshape(2, copies, heads, n)
                token = (columns.reshape(-1, n) @ token_mask.T).reshape(2, copies, heads, 2 * n_token)  # BLAS
                sums[..., :n_token, :] = token.transpose(1, 0, 3, 2).reshape(copies, 2, 2, n_token, heads)
            if n_pair:
                rows = stacked.reshape(copies * heads, n * n)
                total_weight = column_weight.sum(axis=1)
                for k, (index, complement, rates) in enumerate(pair_masks):
                    if rates is None:
                        weight = np.take(rows, index, axis=1).sum(axis=1, dtype=np.float64)
                    else:  # a null's rates: Σ α · rate
                        weight = np.take(rows, index, axis=1).astype(np.float64) @ rates
                    if complement:
                        weight = total_weight - weight
                    high = np.bincount(arc_row, weights=pair_dense[k, arc_pair], minlength=copies * heads)
                    side, p = divmod(k, n_pair)  # side 0: values, 1: defined
                    sums[:, 0, side, n_token + p] = weight.reshape(copies, heads)
                    sums[:, 1, side, n_token + p] = high.reshape(copies, heads)
        return raw[:, :, :, acc._unsort]

    def commit(self, state: _NumpyState, totals: dict[str, np.ndarray]) -> None:
        _commit(np, state.staged, state.weights, totals)


@dataclass
class _TorchState:
    lengths: list[int]
    token_masks: torch.Tensor | None  # (B, 2·P_token, N) float64: values then defined
    pair_masks: torch.Tensor | None  # (B, N·N, 2·P_pair) float64: values then defined
    pair_masks32: torch.Tensor | None  # the same in float32, for counts
    null_index: torch.Tensor | None  # (B, N, N) int64: row permutations, identity in the padding
    weights: torch.Tensor | None  # (R, B) float64
    staged: torch.Tensor  # (L, B, C, 4, P, H) float64
    weighted: bool = False  # some pair mask holds a null's rates (not 0/1)


class _TorchEngine:
    """Sums on the attention's device with dense batched products (see the module docstring)."""

    name = "torch"

    def __init__(self, acc: Accumulator, device: torch.device) -> None:
        self.acc = acc
        self.device = device
        self.totals: dict[str, torch.Tensor] = {}

    def _zeros(self, shape) -> torch.Tensor:
        return torch.zeros(shape, dtype=torch.float64, device=self.device)

    def host(self, masks: _HostMasks, lengths: list[int], draws, weights) -> dict:
        """Padded host arrays for one upload: masks, and the null model's draws with the padding sorting
        after every draw and in place, so that their row-wise argsort is each row's permutation within the
        protein and the identity beyond it."""
        acc = self.acc
        batch, width = len(lengths), max(lengths)
        host: dict = {"lengths": lengths, "weights": weights}
        if acc._token:
            host["token"] = np.concatenate([masks.token_values, masks.token_defined], axis=1)
        if acc._pair:
            host["pair"] = np.concatenate([masks.pair_values, masks.pair_defined], axis=1)
        if draws is not None:
            padded = np.broadcast_to(2.0 + np.arange(width), (batch, width, width)).copy()
            for b, (n, draw) in enumerate(zip(lengths, draws, strict=True)):
                padded[b, :n, :n] = draw
            host["draws"] = padded
        return host

    def begin(self, host: dict) -> _TorchState:
        acc = self.acc
        lengths, weights = host["lengths"], host["weights"]
        batch, width = len(lengths), max(lengths)
        device = self.device

        def upload(array: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(array)).to(device)

        token_masks = pair_masks = pair_masks32 = null_index = None
        if "token" in host:
            token_masks = upload(host["token"]).to(torch.float64)
        if "pair" in host:
            both = upload(host["pair"]).reshape(batch, 2 * len(acc._pair), width * width).transpose(1, 2)
            pair_masks, pair_masks32 = both.to(torch.float64), both.to(torch.float32)
        if "draws" in host:
            # The same permutations as numpy's argsort of the same draws (uniform draws do not tie).
            null_index = torch.argsort(upload(host["draws"]), dim=-1)
        copies = 2 if null_index is not None else 1
        staged = self._zeros((acc.n_layers, batch, copies, 4, len(acc.property_names), acc.n_heads))
        boot = torch.from_numpy(weights).to(device) if weights is not None else None
        weighted = any(acc._properties[index].weighted for index in acc._pair)
        return _TorchState(lengths, token_masks, pair_masks, pair_masks32, null_index, boot, staged, weighted)

    def layer(self, state: _TorchState, layer: int, attention: torch.Tensor) -> None:
        acc = self.acc
        attention = attention.detach().to(self.device, torch.float32)
        batch, heads, width, _ = attention.shape
        n_token = len(acc._token)
        copies = [attention]
        if state.null_index is not None:
            index = state.null_index.unsqueeze(1).expand(batch, heads, width, width)
            copies.append(attention.gather(-1, index))
        for c, values in enumerate(copies):
            high = values > acc.threshold
            out = state.staged[layer, :, c]  # (B, 4, P, H)
            if state.token_masks is not None:
                column_weight = values.sum(dim=2, dtype=torch.float64)  # (B, H, N)
                column_high = high.sum(dim=2, dtype=torch.float64)
                weight = torch.einsum("bhj,bqj->bqh", column_weight, state.token_masks)  # (B, 2·P_token, H)
                count = torch.einsum("bhj,bqj->bqh", column_high, state.token_masks)
                out[:, 0, acc._token] = weight[:, :n_token]
                out[:, 1, acc._token] = weight[:, n_token:]
                out[:, 2, acc._token] = count[:, :n_token]
                out[:, 3, acc._token] = count[:, n_token:]
            if state.pair_masks is not None:
                n_pair = len(acc._pair)
                flat = values.reshape(batch, heads, width * width)
                # Weights in float64: float32 sums over up to 2**18 pairs would depend on the padded width.
                weight = torch.bmm(flat.to(torch.float64), state.pair_masks)  # (B, H, 2·P_pair)
                del flat
                high_flat = high.reshape(batch, heads, width * width)
                if state.weighted:  # a null's rates weigh the arcs: sums of rates need float64
                    count = torch.bmm(high_flat.to(torch.float64), state.pair_masks)
                else:
                    # Counts of 0/1 products below 2**24 are exact in float32 (and in TF32, should it be enabled).
                    count = torch.bmm(high_flat.to(torch.float32), state.pair_masks32).to(torch.float64)
                del high_flat
                out[:, 0, acc._pair] = weight[..., :n_pair].transpose(1, 2)
                out[:, 1, acc._pair] = weight[..., n_pair:].transpose(1, 2)
                out[:, 2, acc._pair] = count[..., :n_pair].transpose(1, 2)
                out[:, 3, acc._pair] = count[..., n_pair:].transpose(1, 2)
            del high

    def commit(self, state: _TorchState, host_totals: dict[str, np.ndarray]) -> None:
        if not self.totals:
            names = [*SUMS, *(f"null_{n}" for n in SUMS), "boot_arcs", "boot_hits"]
            self.totals = {name: self._zeros(host_totals[name].shape) for name in names}
        _commit(torch, state.staged, state.weights, self.totals)

    def fold(self, host_totals: dict[str, np.ndarray]) -> None:
        """Add the device sums to the host's and zero them (the only transfer of sums to the host)."""
        for name, total in self.totals.items():
            host_totals[name] += total.cpu().numpy()
            total.zero_()


def _commit(xp, staged, weights, totals) -> None:
    """Add staged per-protein sums (L, B, C, 4, P, H) to the totals; ``xp`` is numpy or torch."""
    for c, prefix in enumerate(("", "null_")[: staged.shape[2]]):
        for k, name in enumerate(_STAGED):
            totals[prefix + name] += xp.einsum("lbph->plh", staged[:, :, c, k])
    if weights is not None:
        totals["boot_hits"] += xp.einsum("rb,lbph->rplh", weights, staged[:, :, 0, 2])
        totals["boot_arcs"] += xp.einsum("rb,lbph->rplh", weights, staged[:, :, 0, 3])


def _resolve(properties: Sequence[str | Property]) -> list[Property]:
    """Property objects for names or objects (`get_properties`); the name of a null (``contact@offset``)
    gives its weighted property unbound, as an accumulator read back from a file needs only its sums."""
    if not properties:
        return get_properties(None)
    resolved: dict[str, Property] = {}
    for item in properties:
        if isinstance(item, str) and split_null_name(item) is not None:
            resolved[item] = null_property(item)
        else:
            resolved.update((prop.name, prop) for prop in get_properties([item]))
    return list(resolved.values())


class Accumulator:
    """Per-head sums for a model shape and a list of properties (see the module docstring).

    Parameters
    ----------
    n_layers, n_heads : int
        Model shape.
    properties : sequence of str or Property
        Names (see `get_properties`) or objects.
    threshold : float
        θ of Eq. 1: attention weights above it are high-confidence arcs.
    seed : int
        Seeds the null model's row permutations and the bootstrap weights; both are drawn per protein
        from the protein's position, so results depend neither on batching nor on sharding.
    n_bootstrap : int
        Poisson-bootstrap replicates (0 disables the bootstrap).
    null : bool
        Compute the row-permuted null model in the same pass.
    support : {"full", "causal"}
        The pairs a head can attend, which the null model and the backgrounds respect: ``full`` for
        bidirectional models, ``causal`` (j ≤ i) for left-to-right ones (see the module docstring).
    sums : dict of ndarray, optional
        Starting sums (as `save` writes them).
    device : str or torch.device, optional
        Where the statistics are computed: the model's device. Default CPU.
    engine : {"auto", "numpy", "torch"}
        ``auto``: numpy on the CPU, torch on any other device.
    """

    def __init__(
        self,
        n_layers: int,
        n_heads: int,
        properties: Sequence[str | Property] = (),
        threshold: float = 0.3,
        seed: int = 123,
        n_bootstrap: int = 200,
        null: bool = True,
        support: str = "full",
        sums: dict[str, np.ndarray] | None = None,
        device: str | torch.device | None = None,
        engine: str = "auto",
    ) -> None:
        self.n_layers, self.n_heads = int(n_layers), int(n_heads)
        self.threshold, self.seed, self.n_bootstrap, self.null = float(threshold), int(seed), int(n_bootstrap), null
        if support not in SUPPORTS:
            raise ValueError(f"support must be one of {SUPPORTS}, not {support!r}")
        self.support = support
        self._properties = _resolve(properties)
        self.property_names = [p.name for p in self._properties]
        self.properties = tuple(self.property_names)
        self._pair = [i for i, p in enumerate(self._properties) if p.kind == PAIR]
        self._token = [i for i, p in enumerate(self._properties) if p.kind != PAIR]
        self._unsort = np.argsort(self._token + self._pair)  # (token..., pair...) order -> property order
        self.n_proteins = 0
        self.n_residues = 0
        shape = (len(self._properties), self.n_layers, self.n_heads)
        defaults = {name: np.zeros(shape) for name in SUMS}
        defaults.update({f"null_{name}": np.zeros(shape) for name in SUMS})
        defaults["background_hits"] = np.zeros(len(self._properties))
        defaults["background_total"] = np.zeros(len(self._properties))
        defaults["boot_arcs"] = np.zeros((self.n_bootstrap, *shape))
        defaults["boot_hits"] = np.zeros((self.n_bootstrap, *shape))
        self._sums = dict(sums or {})
        for name, value in defaults.items():
            self._sums.setdefault(name, value)
            if self._sums[name].shape != value.shape:
                raise ValueError(f"accumulator sum {name!r} has shape {self._sums[name].shape}, not {value.shape}")
            self._sums[name] = np.array(self._sums[name], dtype=np.float64)
        device = torch.device(device) if device is not None else torch.device("cpu")
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, not {engine!r}")
        if engine == "auto":
            engine = "numpy" if device.type == "cpu" else "torch"
        if engine == "numpy" and device.type != "cpu":
            raise ValueError(f"the numpy engine runs on the CPU, not on {device}")
        self._engine = _NumpyEngine(self) if engine == "numpy" else _TorchEngine(self, device)

    def __repr__(self) -> str:
        return (
            f"Accumulator({self.n_layers} layers × {self.n_heads} heads, {len(self.property_names)} properties, "
            f"{self.n_proteins} proteins, {self.support} support, {self.engine} engine on {self.device})"
        )

    @property
    def engine(self) -> str:
        return self._engine.name

    @property
    def device(self) -> torch.device:
        return self._engine.device

    @property
    def sums(self) -> dict[str, np.ndarray]:
        """All sums as float64 host arrays (``arcs``, ``null_hits``, ``boot_arcs``, ``background_total``, ...)."""
        if isinstance(self._engine, _TorchEngine):
            self._engine.fold(self._sums)
        return self._sums

    # -- per batch -------------------------------------------------------------------------------

    def start_batch(
        self, proteins: Sequence[Protein], lengths: Sequence[int], positions: Sequence[int]
    ) -> AccumulatorBatch:
        """Begin a batch (`prepare` then `begin`). Nothing is added until `commit`.

        Parameters
        ----------
        proteins : sequence of Protein
            The batch, in the order of the attention's batch axis.
        lengths : sequence of int
            Residues of each protein as the model saw them (after truncation).
        positions : sequence of int
            Each protein's position in the run (seeds its null model and bootstrap weights).

        Returns
        -------
        AccumulatorBatch
        """
        return self.begin(self.prepare(proteins, lengths, positions))

    def prepare(self, proteins: Sequence[Protein], lengths: Sequence[int], positions: Sequence[int]) -> PreparedBatch:
        """The host-side work of a batch: property masks (built once, for all layers), background counts,
        null-model draws and bootstrap weights. It changes nothing in the accumulator, so a run can prepare
        the next batch in another thread while the model computes this one.

        Parameters are as for `start_batch`.
        """
        lengths = [int(n) for n in lengths]
        positions = [int(k) for k in positions]
        if not (len(proteins) == len(lengths) == len(positions)) or not proteins:
            raise ValueError(f"{len(proteins)} proteins, {len(lengths)} lengths and {len(positions)} positions")
        masks = self._host_masks(proteins, lengths)
        hits, total = self._backgrounds(masks, lengths)
        draws = [self._row_draws(n, k) for n, k in zip(lengths, positions, strict=True)] if self.null else None
        weights = self.bootstrap_weights(positions) if self.n_bootstrap else None
        host = self._engine.host(masks, lengths, draws, weights)
        return PreparedBatch(lengths, positions, hits, total, host)

    def begin(self, prepared: PreparedBatch) -> AccumulatorBatch:
        """Move a prepared batch to the statistics' device and start staging its layers."""
        return AccumulatorBatch(self, prepared)

    def _host_masks(self, proteins: Sequence[Protein], lengths: list[int]) -> _HostMasks:
        width, batch = max(lengths), len(proteins)
        # A null's rates are values in [0, 1]: its group's values are then float64 (0/1 for the others).
        pair_type = np.float64 if any(self._properties[i].weighted for i in self._pair) else bool
        token_type = np.float64 if any(self._properties[i].weighted for i in self._token) else bool
        pair_values = np.zeros((batch, len(self._pair), width, width), dtype=pair_type)
        pair_defined = np.zeros((batch, len(self._pair), width, width), dtype=bool)
        token_values = np.zeros((batch, len(self._token), width), dtype=token_type)
        token_defined = np.zeros((batch, len(self._token), width), dtype=bool)
        for b, (protein, n) in enumerate(zip(proteins, lengths, strict=True)):
            cut = protein.first(n)
            for k, index in enumerate(self._pair):
                pair_values[b, k, :n, :n], pair_defined[b, k, :n, :n] = self._properties[index].mask(cut)
            for k, index in enumerate(self._token):
                token_values[b, k, :n], token_defined[b, k, :n] = self._properties[index].mask(cut)
        return _HostMasks(pair_values, pair_defined, token_values, token_defined)

    def _backgrounds(self, masks: _HostMasks, lengths: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """Σ f and Σ defined of each property over the batch's support: all pairs and residues, or (causal)
        the pairs j ≤ i, where residue j of a protein of n can be attended by n − j rows."""
        hits, total = np.zeros(len(self.property_names)), np.zeros(len(self.property_names))
        if self.support == "causal":
            width = max(lengths)
            column = np.arange(width)
            attendable = column[None, :] <= column[:, None]  # (i, j): j ≤ i; the padding is zero in the masks
            rows = np.clip(np.asarray(lengths)[:, None] - column[None, :], 0, None)  # (B, N): n − j
            if self._pair:
                hits[self._pair] = (masks.pair_values * attendable).sum(axis=(0, 2, 3))
                total[self._pair] = (masks.pair_defined & attendable).sum(axis=(0, 2, 3))
            if self._token:
                hits[self._token] = np.einsum("bkn,bn->k", masks.token_values, rows)
                total[self._token] = np.einsum("bkn,bn->k", masks.token_defined, rows)
            return hits, total
        if self._pair:
            hits[self._pair] = masks.pair_values.sum(axis=(0, 2, 3))
            total[self._pair] = masks.pair_defined.sum(axis=(0, 2, 3))
        if self._token:
            hits[self._token] = masks.token_values.sum(axis=(0, 2))
            total[self._token] = masks.token_defined.sum(axis=(0, 2))
        return hits, total

    def commit(self, batch: AccumulatorBatch) -> None:
        """Add a batch whose every layer was staged."""
        if batch.accumulator is not self:
            raise ValueError("this batch was started by another accumulator")
        missing = sorted(set(range(self.n_layers)) - batch.layers_done)
        if missing:
            raise ValueError(f"cannot commit a batch without layers {[m + 1 for m in missing]}")
        self._engine.commit(batch._engine_state, self._sums)
        self._sums["background_hits"] += batch.background_hits
        self._sums["background_total"] += batch.background_total
        self.n_proteins += len(batch.lengths)
        self.n_residues += sum(batch.lengths)
        batch.layers_done = set()  # committed once only

    def _row_draws(self, n: int, position: int) -> np.ndarray:
        """The seeded uniform draws whose row-wise ``argsort`` is the null model's permutation of each row.

        With causal support the draws of row i beyond the diagonal (j > i) are replaced by ``2 + j``, which
        sorts after every uniform draw and in order: the permutation then mixes only j ≤ i and leaves each
        position j > i in place (where a causal model's attention is zero).
        """
        draws = np.random.default_rng([self.seed, 1, position]).random((n, n))
        if self.support == "causal":
            column = np.arange(n)
            np.copyto(draws, np.broadcast_to(2.0 + column, (n, n)), where=column[None, :] > column[:, None])
        return draws

    def _row_order(self, n: int, position: int) -> np.ndarray:
        """The null model's (n, n) row permutations of one protein: ``argsort`` of seeded uniform draws.

        One permutation per row, drawn once per protein (from its position, so batching does not matter) and
        applied to that row in every layer and head. Each head's row is thereby a uniformly random
        permutation of itself — the paper's null model — and drawing costs one sort per protein, not one per
        layer and head. With causal support row i is permuted among j ≤ i only (see `_row_draws`). The
        torch engine sorts the same draws on its device.
        """
        return np.argsort(self._row_draws(n, position), axis=-1)

    def permute_rows(self, attention: torch.Tensor, lengths: Sequence[int], positions: Sequence[int]) -> torch.Tensor:
        """The null model: each attention row randomly permuted over the protein's residues, or with causal
        support row i over j ≤ i only (see `_row_order`)."""
        permuted = torch.zeros_like(attention)
        for b, (n, k) in enumerate(zip(lengths, positions, strict=True)):
            rows = attention[b, :, :n, :n]
            order = torch.from_numpy(self._row_order(int(n), int(k))).to(attention.device)
            permuted[b, :, :n, :n] = rows.gather(-1, order.unsqueeze(0).expand_as(rows))
        return permuted

    def bootstrap_weights(self, positions: Sequence[int]) -> np.ndarray:
        """Poisson(1) weight of each protein in each bootstrap replicate: (R, B)."""
        weights = np.empty((self.n_bootstrap, len(positions)))
        for b, k in enumerate(positions):
            weights[:, b] = np.random.default_rng([self.seed, 2, int(k)]).poisson(1.0, self.n_bootstrap)
        return weights

    # -- merging and persistence -----------------------------------------------------------------

    def config(self) -> dict:
        return {
            "n_layers": self.n_layers, "n_heads": self.n_heads, "properties": list(self.property_names),
            "threshold": self.threshold, "seed": self.seed, "n_bootstrap": self.n_bootstrap, "null": self.null,
            "support": self.support,
        }  # fmt: skip

    def merge(self, other: Accumulator) -> Accumulator:
        """The sum of two accumulators of the same configuration (e.g. two shards of one dataset)."""
        if self.config() != other.config():
            raise ValueError(f"cannot merge accumulators with different settings: {self.config()} vs {other.config()}")
        settings = {**self.config(), "properties": self._properties}
        merged = Accumulator(**settings, sums={k: self.sums[k] + other.sums[k] for k in self.sums})
        merged.n_proteins = self.n_proteins + other.n_proteins
        merged.n_residues = self.n_residues + other.n_residues
        return merged

    def to_bytes(self, extra: dict[str, str] | None = None) -> bytes:
        """The sums and settings as ``.npz`` bytes (what `save` writes).

        The settings (``__meta__``) hold a SHA-256 checksum of every other entry, which `load` verifies.

        Parameters
        ----------
        extra : dict of str, optional
            More text entries, named ``__name__`` (`load` ignores them), e.g. a checkpoint's run record.
        """
        buffer = io.BytesIO()
        texts = {name: np.array(text) for name, text in (extra or {}).items()}
        if any(not (name.startswith("__") and name.endswith("__")) for name in texts):
            raise ValueError("extra entries are named __name__")
        if "__meta__" in texts:
            raise ValueError("__meta__ is the accumulator's own entry")
        checksum = array_checksum({**texts, **self.sums})
        meta = {**self.config(), "n_proteins": self.n_proteins, "n_residues": self.n_residues, "checksum": checksum}
        np.savez_compressed(buffer, __meta__=np.array(json.dumps(meta)), **texts, **self.sums)
        return buffer.getvalue()

    def save(self, path: str | Path) -> Path:
        """Write the sums and settings to one ``.npz`` file, atomically."""
        return write_bytes_atomic(path, self.to_bytes())

    @classmethod
    def load(
        cls,
        path: str | Path,
        properties: Sequence[str | Property] | None = None,
        device: str | torch.device | None = None,
        engine: str = "auto",
    ) -> Accumulator:
        """Read an accumulator written by `save` (no pickles involved), checking it.

        Parameters
        ----------
        properties : sequence of Property, optional
            Property objects for names that are not in the registry (custom properties).
        device : str or torch.device, optional
            Where further batches will be computed.
        engine : {"auto", "numpy", "torch"}
            Their engine (see `Accumulator`).

        Raises
        ------
        AccumulatorFileError
            One line naming the file when it is unreadable or damaged: not a complete archive of plain
            arrays, settings of the wrong type, sums missing or of the wrong shape, not finite, negative or
            inconsistent (more hits than arcs, sums without proteins), or a checksum that does not match
            (files written before checksums have none and are checked all the same).
        """
        path = Path(path)
        try:
            members = read_npz(path, "accumulator")
        except ArchiveError as error:
            raise AccumulatorFileError(str(error)) from None
        return cls.from_members(path, members, properties=properties, device=device, engine=engine)

    @classmethod
    def from_members(
        cls,
        path: Path,
        members: dict[str, np.ndarray],
        properties: Sequence[str | Property] | None = None,
        device: str | torch.device | None = None,
        engine: str = "auto",
    ) -> Accumulator:
        """An accumulator from the arrays of a file `load` (or a checkpoint's reader) has read, checked.

        Parameters
        ----------
        path : Path
            The file, for messages.
        members : dict of str to ndarray
            Every entry of the file (`plmlens.proteins.archive.read_npz`).

        Raises
        ------
        AccumulatorFileError
            See `load`.
        """
        try:
            meta = parse_json(path, text_member(path, members, "__meta__", "accumulator"), "accumulator settings")
            verify_checksum(path, meta.get("checksum") if isinstance(meta, dict) else None,
                            {name: value for name, value in members.items() if name != "__meta__"})  # fmt: skip
        except ArchiveError as error:
            raise AccumulatorFileError(str(error)) from None
        settings, counts = _checked_meta(path, meta)
        stored = {k: v for k, v in members.items() if not k.startswith("__")}
        _check_sums(path, stored, settings, counts)
        names = settings.pop("properties")
        custom = {p.name: p for p in properties or () if isinstance(p, Property)}
        try:
            acc = cls(**settings, properties=[custom.get(n, n) for n in names], sums=stored, device=device,
                      engine=engine)  # fmt: skip
        except KeyError as error:  # a property neither registered nor given
            raise AccumulatorFileError(f"{path}: {error.args[0] if error.args else error}") from None
        acc.n_proteins, acc.n_residues = counts
        return acc


class AccumulatorFileError(ValueError):
    """An accumulator file (``accumulator.npz``, a checkpoint) that cannot be read; the message is one line."""


#: Settings an accumulator file holds and their JSON types; those not in `_REQUIRED` take the constructor's
#: default when absent (a file written before the setting existed).
_META_TYPES = {"n_layers": int, "n_heads": int, "properties": list, "threshold": (int, float), "seed": int,
               "n_bootstrap": int, "null": bool, "support": str}  # fmt: skip
_REQUIRED = ("n_layers", "n_heads", "properties")
#: Sums that count pairs (integers stored as float64), and sub-counts that cannot exceed their whole.
_COUNTS = ("arcs", "hits", "null_arcs", "null_hits", "boot_arcs", "boot_hits", "background_hits", "background_total")
#: Counts that a null's rates replace by sums of rates.
_RATE_SUMS = ("hits", "null_hits", "boot_hits")
_PARTS = (("hits", "arcs"), ("null_hits", "null_arcs"), ("boot_hits", "boot_arcs"),
          ("background_hits", "background_total"), ("weight_hits", "weight"),
          ("null_weight_hits", "null_weight"))  # fmt: skip


def _checked_meta(path: Path, meta: object) -> tuple[dict, tuple[int, int]]:
    """The settings of an accumulator file, type-checked, with defaults filled in, and its
    (n_proteins, n_residues)."""

    def fail(reason: str) -> AccumulatorFileError:
        return AccumulatorFileError(f"{path}: damaged accumulator ({reason})")

    if not isinstance(meta, dict):
        raise fail(f"settings are a {type(meta).__name__}, not a dict")
    meta = {k: v for k, v in meta.items() if k != "checksum"}
    counts = (meta.pop("n_proteins", None), meta.pop("n_residues", None))
    if not all(is_int(count) and count >= 0 for count in counts):
        raise fail(f"n_proteins, n_residues are {counts[0]!r:.30}, {counts[1]!r:.30}: not counts")
    unknown, missing = sorted(set(meta) - set(_META_TYPES)), [k for k in _REQUIRED if k not in meta]
    if unknown or missing:
        raise fail(f"unknown settings {unknown}" if unknown else f"no {', '.join(missing)}")
    defaults = inspect.signature(Accumulator.__init__).parameters
    settings = {name: meta.get(name, defaults[name].default) for name in _META_TYPES if name != "properties"}
    settings["properties"] = meta["properties"]
    for name, types in _META_TYPES.items():
        value = settings[name]
        if not isinstance(value, types) or (isinstance(value, bool) and types is not bool):
            raise fail(f"{name} is a {type(value).__name__}")
    smallest = {"n_layers": 1, "n_heads": 1, "n_bootstrap": 0, "seed": 0}
    if any(settings[name] < low for name, low in smallest.items()):
        raise fail("a layer, head, bootstrap or seed count below its least value")
    if not is_number(settings["threshold"]) or settings["support"] not in SUPPORTS:
        raise fail(f"threshold {settings['threshold']!r:.30} or support {settings['support']!r:.30}")
    names = settings["properties"]
    if not all(isinstance(name, str) for name in names) or len(set(names)) != len(names):
        raise fail("properties are not distinct names")
    return settings, (counts[0], counts[1])


def _counted_rows(name: str, value: np.ndarray, whole: np.ndarray) -> np.ndarray:
    """The entries of a sum that count pairs: all, less a null's sums of rates (its rows of `_RATE_SUMS` and
    of the background's hits)."""
    if name in _RATE_SUMS:
        return value[..., whole, :, :]
    return value[whole] if name == "background_hits" else value


def _check_sums(path: Path, stored: dict[str, np.ndarray], settings: dict, counts: tuple[int, int]) -> None:
    """The invariants of an accumulator file's sums (see `Accumulator.load`), checked before any is used."""

    def fail(reason: str) -> AccumulatorFileError:
        return AccumulatorFileError(f"{path}: damaged accumulator ({reason})")

    shape = (len(settings["properties"]), settings["n_layers"], settings["n_heads"])
    expected = {name: shape for name in (*SUMS, *(f"null_{name}" for name in SUMS))}
    expected.update(background_hits=shape[:1], background_total=shape[:1])
    expected.update(boot_arcs=(settings["n_bootstrap"], *shape), boot_hits=(settings["n_bootstrap"], *shape))
    missing, unknown = sorted(set(expected) - set(stored)), sorted(set(stored) - set(expected))
    if missing or unknown:
        # The constructor would fill a missing sum with zeros: a damaged file must not pass for a run.
        raise fail(f"sums missing: {missing}, unexpected: {unknown}")
    n_proteins, n_residues = counts
    if n_proteins == 0 and n_residues != 0:
        raise fail(f"{n_residues} residues but no protein")
    # A null's hits are sums of rates, not counts: only its arcs must be whole.
    whole = np.array([split_null_name(name) is None for name in settings["properties"]], dtype=bool)
    for name, value in stored.items():
        if value.shape != expected[name] or value.dtype.kind not in "fiu":
            raise fail(f"sum {name} is {value.dtype}{list(value.shape)}, expected numbers{list(expected[name])}")
        if not np.isfinite(value).all() or (value < 0).any():
            raise fail(f"sum {name} is not finite and non-negative")
        counted = _counted_rows(name, value, whole)
        if name in _COUNTS and (counted != np.round(counted)).any():
            raise fail(f"sum {name} counts pairs but is not whole")
        # No protein, no sums; and pairs of residues number at most the residues squared (bootstrap
        # replicates weigh proteins, so their counts may exceed it).
        too_many = name in _COUNTS and not name.startswith("boot_") and (value > float(n_residues) ** 2).any()
        if (n_proteins == 0 and value.any()) or too_many:
            raise fail(f"sum {name} does not fit {n_proteins} proteins of {n_residues} residues")
    for part, total in _PARTS:
        # Weights (and a null's sums of rates) are float sums added in differing orders: only an excess beyond
        # rounding is damage.
        slack = 1e-9 * stored[total] + 1e-12
        if part in _COUNTS:
            rates = ~whole[:, None, None] if stored[total].ndim > 1 else ~whole
            slack = np.where(rates, slack, 0.0)
        if (stored[part] > stored[total] + slack).any():
            raise fail(f"{part} exceeds {whole}")
