"""Streaming per-head sums of attention against protein properties.

For every property p, layer l and head h the accumulator keeps, summed over proteins x and residue
pairs (i, j) where f is *defined*:

* ``arcs``  = Σ 1[α_ij > θ]              (high-confidence arcs, Eq. 1 denominator)
* ``hits``  = Σ 1[α_ij > θ] · f(i, j)     (Eq. 1 numerator)
* ``weight`` = Σ α_ij                     (Eq. 3 denominator)
* ``weight_hits`` = Σ α_ij · f(i, j)      (Eq. 3 numerator)

the same four for the null model (each attention row randomly permuted, appendix B.2), the background
(Σ f and Σ defined over pairs or residues), and Poisson-bootstrap replicates of ``arcs`` and ``hits``
with proteins as the resampled unit. All sums are updated with tensor operations one layer at a time
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

    def _per_protein(self, attention: torch.Tensor, masks: BatchProperties) -> dict[str, torch.Tensor]:
        """The four sums per protein, property and head: each (B, P, H)."""
        high = (attention > self.threshold).to(attention.dtype)
        batch, heads = attention.shape[:2]
        out = {name: attention.new_zeros((batch, len(self._properties), heads)) for name in SUMS}
        if self._token:
            # Token properties only look at the attended residue j: sum over the rows i first.
            column_high = high.sum(dim=2)
            column_weight = attention.sum(dim=2)
            token = torch.tensor(self._token)
            out["arcs"][:, token] = torch.einsum("bhj,bpj->bph", column_high, masks.token_defined)
            out["hits"][:, token] = torch.einsum("bhj,bpj->bph", column_high, masks.token_values)
            out["weight"][:, token] = torch.einsum("bhj,bpj->bph", column_weight, masks.token_defined)
            out["weight_hits"][:, token] = torch.einsum("bhj,bpj->bph", column_weight, masks.token_values)
        if self._pair:
            pair = torch.tensor(self._pair)
            out["arcs"][:, pair] = torch.einsum("bhij,bpij->bph", high, masks.pair_defined)
            out["hits"][:, pair] = torch.einsum("bhij,bpij->bph", high, masks.pair_values)
            out["weight"][:, pair] = torch.einsum("bhij,bpij->bph", attention, masks.pair_defined)
            out["weight_hits"][:, pair] = torch.einsum("bhij,bpij->bph", attention, masks.pair_values)
        return out

    def _generator(self, purpose: int, protein_index: int, layer: int) -> torch.Generator:
        return torch.Generator().manual_seed(
            (self.seed * 1_000_003 + protein_index * 7_919 + layer * 104_729 + purpose) % (2**63)
        )

    def permute_rows(
        self, attention: torch.Tensor, lengths: Sequence[int], first_index: int, layer: int
    ) -> torch.Tensor:
        """The null model: each attention row randomly permuted over the protein's residues.

        One random permutation is drawn per (protein, layer, row) and applied to that row of every head;
        each head's row is thereby a uniformly random permutation of itself (the paper's null model),
        at 1/H of the cost of drawing per head.
        """
        permuted = torch.zeros_like(attention)
        for b, n in enumerate(lengths):
            generator = self._generator(1, first_index + b, layer)
            order = torch.rand((n, n), generator=generator).argsort(dim=-1)
            rows = attention[b, :, :n, :n]
            permuted[b, :, :n, :n] = rows.gather(-1, order.unsqueeze(0).expand_as(rows))
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
        attention = attention.float()
        sums = self._per_protein(attention, masks)
        for name, value in sums.items():
            self.sums[name][:, layer] += value.sum(dim=0).double().numpy()
        if self.n_bootstrap:
            weights = boot_weights if boot_weights is not None else self.bootstrap_weights(lengths, first_index)
            for name in ("arcs", "hits"):
                self.sums[f"boot_{name}"][:, :, layer] += np.einsum("rb,bph->rph", weights, sums[name].double().numpy())
        if self.null:
            null = self._per_protein(self.permute_rows(attention, lengths, first_index, layer), masks)
            for name, value in null.items():
                self.sums[f"null_{name}"][:, layer] += value.sum(dim=0).double().numpy()

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
