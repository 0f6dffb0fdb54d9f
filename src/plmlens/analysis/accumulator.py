"""Streaming per-head sums of attention against protein properties.

For every property p, layer l and head h the accumulator keeps, summed over proteins x and residue
pairs (i, j) where f is *defined*:

* ``arcs``  = Σ 1[α_ij > θ]              (high-confidence arcs, Eq. 1 denominator)
* ``hits``  = Σ 1[α_ij > θ] · f(i, j)     (Eq. 1 numerator)
* ``weight`` = Σ α_ij                     (Eq. 3 denominator)
* ``weight_hits`` = Σ α_ij · f(i, j)      (Eq. 3 numerator)

the same four for the null model (each attention row randomly permuted, appendix B.2), the background
(Σ f and Σ defined over pairs or residues), and Poisson-bootstrap replicates of ``arcs`` and ``hits``
with proteins as the resampled unit. All sums are updated with array operations one layer at a time
and merge by addition (`Accumulator.merge`), so runs split across processes or machines can be summed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from plmlens.analysis.properties import PAIR, Property, get_properties
from plmlens.ioutils import write_bytes_atomic
from plmlens.proteins import Protein

SUMS = ("arcs", "hits", "weight", "weight_hits")


@dataclass
class BatchProperties:
    """Property masks of one batch, padded to its longest protein and stacked for tensor maths."""

    pair_values: torch.Tensor  # (B, P_pair, N, N) float, f · defined
    pair_defined: torch.Tensor  # (B, P_pair, N, N) float
    token_values: torch.Tensor  # (B, P_token, N) float, g · defined
    token_defined: torch.Tensor  # (B, P_token, N) float
    # Per-protein masks in the form `Accumulator.update` uses, built at a batch's first layer.
    _prepared: dict = field(default_factory=dict, repr=False, compare=False)


@dataclass
class _ProteinMasks:
    """One protein's masks as `Accumulator.update` uses them (n residues, padded width N)."""

    token: np.ndarray  # (2·P_token, n) float64: values then defined
    # Per pair mask (values of each pair property, then defined of each): flat (i·n + j) indices of its
    # ones, or of its zeros when it is mostly ones (complement True).
    pair: list[tuple[np.ndarray, bool]]


def _sparse(mask: np.ndarray) -> tuple[np.ndarray, bool]:
    """Flat indices where an (n, n) 0/1 mask is 1, or, when it is mostly 1, where it is 0 (``complement``
    True: a sum over the mask is then the total minus the sum over those indices)."""
    complement = int(np.count_nonzero(mask)) > mask.size // 2
    return np.flatnonzero(mask == 0 if complement else mask), complement


@dataclass
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
        (from the protein's position in the run), so results do not depend on batching.
    n_bootstrap : int
        Poisson-bootstrap replicates (0 disables the bootstrap).
    null : bool
        Compute the row-permuted null model in the same pass.
    """

    n_layers: int
    n_heads: int
    properties: Sequence[str | Property] = ()
    threshold: float = 0.3
    seed: int = 123
    n_bootstrap: int = 200
    null: bool = True
    sums: dict[str, np.ndarray] = field(default_factory=dict)
    n_proteins: int = 0
    n_residues: int = 0

    def __post_init__(self) -> None:
        self._properties = get_properties(self.properties or None)
        self.property_names = [p.name for p in self._properties]
        self.properties = tuple(self.property_names)
        self._pair = [i for i, p in enumerate(self._properties) if p.kind == PAIR]
        self._token = [i for i, p in enumerate(self._properties) if p.kind != PAIR]
        self._unsort = np.argsort(self._token + self._pair)  # (token..., pair...) order -> property order
        self._null_orders: tuple = (None, [])  # (batch key, row permutations), shared by all layers
        shape = (len(self._properties), self.n_layers, self.n_heads)
        defaults = {name: np.zeros(shape) for name in SUMS}
        defaults.update({f"null_{name}": np.zeros(shape) for name in SUMS})
        defaults["background_hits"] = np.zeros(len(self._properties))
        defaults["background_total"] = np.zeros(len(self._properties))
        defaults["boot_arcs"] = np.zeros((self.n_bootstrap, *shape))
        defaults["boot_hits"] = np.zeros((self.n_bootstrap, *shape))
        for name, value in defaults.items():
            self.sums.setdefault(name, value)
            if self.sums[name].shape != value.shape:
                raise ValueError(f"accumulator sum {name!r} has shape {self.sums[name].shape}, not {value.shape}")

    # -- per batch -------------------------------------------------------------------------------

    def batch_properties(self, proteins: Sequence[Protein], lengths: Sequence[int]) -> BatchProperties:
        """Stack the property masks of a batch (proteins cut to `lengths`, as the model saw them) and add
        them to the background counts."""
        width = max(lengths)
        batch = len(proteins)
        pair_values = np.zeros((batch, len(self._pair), width, width), dtype=np.float32)
        pair_defined = np.zeros_like(pair_values)
        token_values = np.zeros((batch, len(self._token), width), dtype=np.float32)
        token_defined = np.zeros_like(token_values)
        for b, (protein, n) in enumerate(zip(proteins, lengths, strict=True)):
            cut = protein if n == len(protein) else protein.subset(slice(0, n))
            for k, index in enumerate(self._pair):
                values, defined = self._properties[index].mask(cut)
                pair_values[b, k, :n, :n] = values
                pair_defined[b, k, :n, :n] = defined
            for k, index in enumerate(self._token):
                values, defined = self._properties[index].mask(cut)
                token_values[b, k, :n] = values
                token_defined[b, k, :n] = defined
        if self._pair:
            self.sums["background_hits"][self._pair] += pair_values.sum(axis=(0, 2, 3))
            self.sums["background_total"][self._pair] += pair_defined.sum(axis=(0, 2, 3))
        if self._token:
            self.sums["background_hits"][self._token] += token_values.sum(axis=(0, 2))
            self.sums["background_total"][self._token] += token_defined.sum(axis=(0, 2))
        self.n_proteins += batch
        self.n_residues += int(sum(lengths))
        return BatchProperties(*(torch.from_numpy(a) for a in (pair_values, pair_defined, token_values, token_defined)))

    def _prepare(self, masks: BatchProperties, lengths: Sequence[int]) -> list[_ProteinMasks]:
        key = tuple(lengths)
        if key not in masks._prepared:
            token_values, token_defined = masks.token_values.numpy(), masks.token_defined.numpy()
            pair_values, pair_defined = masks.pair_values.numpy(), masks.pair_defined.numpy()
            prepared = []
            for b, n in enumerate(key):
                pair = [_sparse(m[b, k, :n, :n]) for m in (pair_values, pair_defined) for k in range(len(self._pair))]
                token = np.concatenate([token_values[b, :, :n], token_defined[b, :, :n]]).astype(np.float64)
                prepared.append(_ProteinMasks(token, pair))
            masks._prepared[key] = prepared
        return masks._prepared[key]

    def _sums(
        self,
        attention: torch.Tensor,
        lengths: Sequence[int],
        masks: BatchProperties,
        orders: Sequence[np.ndarray] | None = None,
    ) -> list[dict[str, np.ndarray]]:
        """The four sums per protein, property and head, each (B, P, H) float64: of `attention`, and when
        `orders` (one (n, n) row permutation per protein) is given, also of the row-permuted attention.

        Protein by protein on the (H, n) rows: token sums need the column sums (over the rows i) of the
        attention and of its high-confidence indicator; pair sums only the attention at the pairs where a
        mask is 1 (or 0, for masks mostly 1: total minus those), as pair masks such as contacts are sparse.
        The permuted attention of the null model is one gather. All in single-threaded numpy: this runs
        next to the model's forward pass, and small multi-threaded operations would compete with it.
        """
        batch, heads, _, width = attention.shape
        values = np.ascontiguousarray(attention.detach().float().numpy()).reshape(batch, heads, width * width)
        copies = 1 if orders is None else 2
        n_pair, n_token = len(self._pair), len(self._token)
        # raw[b, copy, 4 sums (weight_hits, weight, hits, arcs), property (token..., pair...), head]
        raw = np.zeros((batch, copies, 4, n_token + n_pair, heads))
        prepared = self._prepare(masks, lengths)
        count = np.uint16 if max(lengths, default=0) < 2**16 else np.int64
        for b, n in enumerate(lengths):
            if n == 0:
                continue
            # (C·H, n, n): the attention, then (null model) each row permuted, as one array
            stacked = np.empty((copies * heads, n, n), dtype=np.float32)
            np.copyto(stacked[:heads], values[b].reshape(heads, width, width)[:, :n, :n])
            if orders is not None:
                index = (orders[b] + np.arange(0, n * width, width)[:, None]).ravel()
                np.take(values[b], index, axis=1, out=stacked[heads:].reshape(heads, n * n))
            # float64 sums, so that a pair mask's sum equals the total whenever the rest is zero
            column_weight = stacked.sum(axis=1, dtype=np.float64)  # (C·H, n)
            column_high = np.add.reduce((stacked > self.threshold).view(np.uint8), axis=1, dtype=count)
            sums = raw[b].reshape(copies, 2, 2, n_token + n_pair, heads)  # (copy, weight|high, values|defined)
            if n_token:
                columns = np.stack([column_weight, column_high]).reshape(2, copies, heads, n)
                token = np.einsum("kchj,pj->ckph", columns, prepared[b].token)  # (C, 2, 2·P_token, H)
                sums[..., :n_token, :] = token.reshape(copies, 2, 2, n_token, heads)
            if n_pair:
                rows = stacked.reshape(copies * heads, n * n)
                total_weight = column_weight.sum(axis=1)
                total_high = column_high.sum(axis=1, dtype=np.int64)
                for k, (index, complement) in enumerate(prepared[b].pair):
                    picked = np.take(rows, index, axis=1)
                    weight = picked.sum(axis=1, dtype=np.float64)
                    high = np.count_nonzero(picked > self.threshold, axis=1)
                    if complement:
                        weight, high = total_weight - weight, total_high - high
                    side, p = divmod(k, n_pair)  # side 0: values, 1: defined
                    sums[:, 0, side, n_token + p] = weight.reshape(copies, heads)
                    sums[:, 1, side, n_token + p] = high.reshape(copies, heads)
        raw = raw[:, :, :, self._unsort]
        return [
            {"weight_hits": raw[:, c, 0], "weight": raw[:, c, 1], "hits": raw[:, c, 2], "arcs": raw[:, c, 3]}
            for c in range(copies)
        ]

    def _row_order(self, n: int, protein_index: int) -> np.ndarray:
        """The null model's (n, n) row permutations of one protein: ``argsort`` of seeded uniform draws.

        One permutation per row, drawn once per protein (from its position in the run, so batching does not
        matter) and applied to that row in every layer and head. Each head's row is thereby a uniformly random
        permutation of itself — the paper's null model — and drawing costs one sort per protein, not one per
        layer and head.
        """
        rng = np.random.default_rng([self.seed, 1, protein_index])
        return np.argsort(rng.random((n, n)), axis=-1)

    def _orders(self, lengths: Sequence[int], first_index: int) -> list[np.ndarray]:
        key = (first_index, tuple(lengths))
        if self._null_orders[0] != key:
            self._null_orders = (key, [self._row_order(n, first_index + b) for b, n in enumerate(lengths)])
        return self._null_orders[1]

    def permute_rows(self, attention: torch.Tensor, lengths: Sequence[int], first_index: int) -> torch.Tensor:
        """The null model: each attention row randomly permuted over the protein's residues (see `_row_order`)."""
        permuted = torch.zeros_like(attention)
        for b, (n, order) in enumerate(zip(lengths, self._orders(lengths, first_index), strict=True)):
            rows = attention[b, :, :n, :n]
            permuted[b, :, :n, :n] = rows.gather(-1, torch.from_numpy(order).unsqueeze(0).expand_as(rows))
        return permuted

    def bootstrap_weights(self, lengths: Sequence[int], first_index: int) -> np.ndarray:
        """Poisson(1) weight of each protein in each bootstrap replicate: (R, B)."""
        weights = np.empty((self.n_bootstrap, len(lengths)))
        for b in range(len(lengths)):
            rng = np.random.default_rng([self.seed, 2, first_index + b])
            weights[:, b] = rng.poisson(1.0, self.n_bootstrap)
        return weights

    def update(
        self,
        layer: int,
        attention: torch.Tensor,
        lengths: Sequence[int],
        masks: BatchProperties,
        first_index: int,
        boot_weights: np.ndarray | None = None,
    ) -> None:
        """Add one layer of one batch.

        Parameters
        ----------
        layer : int
            0-based layer index.
        attention : Tensor, shape (B, H, N, N)
            Residue-aligned attention, zero beyond each protein's length.
        lengths : sequence of int
            Residues per protein.
        masks : BatchProperties
            From `batch_properties` for the same proteins.
        first_index : int
            Position in the run of the batch's first protein (seeds the null model and bootstrap).
        boot_weights : ndarray (R, B), optional
            From `bootstrap_weights`, computed once per batch.
        """
        lengths = [int(n) for n in lengths]
        orders = self._orders(lengths, first_index) if self.null else None
        results = self._sums(attention, lengths, masks, orders)
        sums = results[0]
        for name, value in sums.items():
            self.sums[name][:, layer] += value.sum(axis=0)
        if self.n_bootstrap:
            weights = boot_weights if boot_weights is not None else self.bootstrap_weights(lengths, first_index)
            for name in ("arcs", "hits"):
                self.sums[f"boot_{name}"][:, :, layer] += np.einsum("rb,bph->rph", weights, sums[name])
        if self.null:
            for name, value in results[1].items():
                self.sums[f"null_{name}"][:, layer] += value.sum(axis=0)

    # -- merging and persistence -----------------------------------------------------------------

    def config(self) -> dict:
        return {
            "n_layers": self.n_layers, "n_heads": self.n_heads, "properties": list(self.property_names),
            "threshold": self.threshold, "seed": self.seed, "n_bootstrap": self.n_bootstrap, "null": self.null,
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

    def save(self, path: str | Path) -> Path:
        """Write the sums and settings to one ``.npz`` file, atomically."""
        import io

        buffer = io.BytesIO()
        meta = {**self.config(), "n_proteins": self.n_proteins, "n_residues": self.n_residues}
        np.savez_compressed(buffer, __meta__=np.array(json.dumps(meta)), **self.sums)
        return write_bytes_atomic(path, buffer.getvalue())

    @classmethod
    def load(cls, path: str | Path, properties: Sequence[str | Property] | None = None) -> Accumulator:
        """Read an accumulator written by `save` (no pickles involved).

        Parameters
        ----------
        properties : sequence of Property, optional
            Property objects for names that are not in the registry (custom properties).
        """
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["__meta__"]))
            sums = {k: data[k] for k in data.files if k != "__meta__"}
        names = meta.pop("properties")
        custom = {p.name: p for p in properties or () if isinstance(p, Property)}
        counts = meta.pop("n_proteins"), meta.pop("n_residues")
        acc = cls(**meta, properties=[custom.get(n, n) for n in names], sums=sums)
        acc.n_proteins, acc.n_residues = counts
        return acc
