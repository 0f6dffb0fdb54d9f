"""Offset- and position-matched nulls: what a head would score if it attended only by where residues are.

A head that attends to fixed sequence offsets, or always to the same places of an aligned family (the CDRs of
an antibody), shows a high proportion of contacts or paratope residues against the paper's background and its
row-permuted null, because both ignore position. The nulls here do not:

``offset`` (pair properties)
    The property's rate at sequence separation ``d = |i − j|``, over the whole protein set: ``r(d)`` = pairs at
    separation d with the property / defined pairs at separation d. A head's offset-matched null proportion is
    ``r(|i − j|)`` averaged over its high-confidence arcs (Eq. 1), or weighted by its attention (Eq. 3).
``position`` (pair and residue properties)
    The property's rate at the arc's pair of positions ``(pos_i, pos_j)`` (pair properties) or at the attended
    residue's position ``pos_j`` (residue properties), averaged the same way. Positions are IMGT positions where
    a chain is numbered and residue indices otherwise (`plmlens.proteins.positions.position_keys`). These rates
    have many more parameters than the offset's, so they are *cross-fitted*: every protein falls in one of two
    folds by a seeded hash of its id, and a protein's null uses the rates of the other fold only, so the null is
    never fitted to the data it judges. Where the other fold never saw a position (pair), the rate falls back to
    that fold's offset rate (pair properties) or its overall rate, so that the null is defined wherever the
    property is, and the head's proportion and its null count the same arcs.

The rates depend on labels only, not on the model: `PositionalRates.fit` reads the proteins once before the
forward passes. Each null is then a *weighted property* (`NullProperty`): its value at a pair or residue is the
rate there instead of 0 or 1, and the accumulator's four sums give, summed over a head's arcs and weights,
exactly the numerators of the null proportions above (``hits`` = Σ over arcs of the rate, ``weight_hits`` =
Σ α · rate), with the same streaming, merging, sharding and bootstrap as any property.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from plmlens.analysis.properties import PAIR, Property, get_properties
from plmlens.proteins import Protein
from plmlens.proteins.positions import NO_POSITION, position_keys
from plmlens.proteins.skips import Skipped

OFFSET = "offset"
POSITION = "position"
#: The nulls, in column order.
NULL_KINDS = (OFFSET, POSITION)
#: Joins a property's name and a null's in the name of the weighted property (``contact@offset``).
SEPARATOR = "@"
FOLDS = 2


def null_name(prop: str, kind: str) -> str:
    """The name of the weighted property behind property `prop`'s `kind` null (``contact@position``)."""
    return f"{prop}{SEPARATOR}{kind}"


def split_null_name(name: str) -> tuple[str, str] | None:
    """``(property, kind)`` for the name of a null's weighted property, None for any other name."""
    prop, sep, kind = name.rpartition(SEPARATOR)
    return (prop, kind) if sep and prop and kind in NULL_KINDS else None


def applicable(prop: Property, kind: str) -> bool:
    """Whether a null applies to a property: the offset null to pair properties, the position null to all."""
    return kind == POSITION or prop.kind == PAIR


def protein_fold(protein_id: str, seed: int) -> int:
    """The cross-fitting fold of a protein, from a seeded hash of its id (not of its position, so that the
    split does not depend on order, sharding or the records skipped before it)."""
    digest = hashlib.sha256(f"{seed}:{protein_id}".encode()).digest()
    return digest[0] % FOLDS


class _Counts:
    """Hits and defined entries of one property, per fold, by an integer key that grows as keys appear."""

    def __init__(self, dims: int) -> None:
        self.dims = dims
        self.hits = np.zeros((FOLDS,) + (0,) * dims)
        self.defined = np.zeros_like(self.hits)

    def _grow(self, size: int) -> None:
        if size <= self.hits.shape[-1]:
            return
        size = max(size, 2 * self.hits.shape[-1])
        for name in ("hits", "defined"):
            old = getattr(self, name)
            new = np.zeros((FOLDS,) + (size,) * self.dims)
            new[(slice(None), *(slice(0, n) for n in old.shape[1:]))] = old
            setattr(self, name, new)

    def add(self, fold: int, index: tuple[np.ndarray, ...], values: np.ndarray, defined: np.ndarray) -> None:
        """Add entries at integer keys `index` (one array per dimension, all of one shape)."""
        if not defined.any():
            return
        self._grow(max(int(i[defined].max()) for i in index) + 1)
        np.add.at(self.hits[fold], tuple(i[defined] for i in index), values[defined])
        np.add.at(self.defined[fold], tuple(i[defined] for i in index), 1.0)

    def rate(self, folds: Sequence[int], index: tuple[np.ndarray, ...]) -> np.ndarray:
        """The rate at keys `index` over `folds`; NaN where no entry was defined (or the key is unseen)."""
        size = self.hits.shape[-1]
        if size == 0:  # nothing defined anywhere
            return np.full(index[0].shape, np.nan)
        inside = np.all([i < size for i in index], axis=0) & np.all([i >= 0 for i in index], axis=0)
        clipped = tuple(np.where(inside, i, 0) for i in index)
        hits = self.hits[list(folds)].sum(axis=0)[clipped]
        defined = self.defined[list(folds)].sum(axis=0)[clipped]
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(inside & (defined > 0), hits / np.where(defined > 0, defined, 1), np.nan)


@dataclass
class PositionalRates:
    """The rates behind the offset and position nulls of some properties, fitted on a protein set.

    Parameters
    ----------
    properties : sequence of Property
        The properties to fit rates for.
    seed : int
        Seeds the cross-fitting folds (`protein_fold`).
    numbered : bool
        Positions are IMGT positions where a chain is numbered (False: residue indices always).
    max_residues : int, optional
        Each protein counts with its first `max_residues` residues only (about what the model sees).
    """

    properties: Sequence[Property]
    seed: int = 123
    numbered: bool = True
    max_residues: int | None = None
    n_proteins_: list[int] = field(default_factory=lambda: [0] * FOLDS)
    _keys: dict[str, int] = field(default_factory=dict)
    _offset: dict[str, _Counts] = field(default_factory=dict)
    _position: dict[str, _Counts] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for prop in self.properties:
            if prop.kind == PAIR:
                self._offset[prop.name] = _Counts(1)
            self._position[prop.name] = _Counts(2 if prop.kind == PAIR else 1)

    # -- fitting -----------------------------------------------------------------------------------

    def key_ids(self, protein: Protein, grow: bool = True) -> np.ndarray:
        """Integer ids of the residues' position keys; -1 for a residue without one (or, with `grow` False,
        a key never seen in fitting)."""
        ids = np.empty(len(protein), dtype=np.int64)
        for k, key in enumerate(position_keys(protein, numbered=self.numbered).tolist()):
            if key == NO_POSITION:
                ids[k] = -1
            elif grow:
                ids[k] = self._keys.setdefault(key, len(self._keys))
            else:
                ids[k] = self._keys.get(key, -1)
        return ids

    def _cut(self, protein: Protein) -> Protein:
        return protein if self.max_residues is None else protein.first(self.max_residues)

    def add(self, protein: Protein) -> None:
        """Count one protein's properties into its fold's rates."""
        protein = self._cut(protein)
        fold = protein_fold(protein.id, self.seed)
        self.n_proteins_[fold] += 1
        ids = self.key_ids(protein)
        n = len(protein)
        rows, cols = np.indices((n, n))
        separation = np.abs(rows - cols)
        for prop in self.properties:
            values, defined = prop.mask(protein)
            if prop.kind == PAIR:
                self._offset[prop.name].add(fold, (separation,), values, defined)
                known = defined & (ids[:, None] >= 0) & (ids[None, :] >= 0)
                self._position[prop.name].add(fold, (ids[rows], ids[cols]), values, known)
            else:
                self._position[prop.name].add(fold, (ids,), values, defined & (ids >= 0))

    def fit(self, proteins: Iterable[Protein | Skipped]) -> PositionalRates:
        """Count every protein (skipped records are passed over); returns self."""
        for protein in proteins:
            if isinstance(protein, Protein):
                self.add(protein)
        return self

    def describe(self) -> dict:
        """What ``summary.json`` records of the fit: positions, folds and how many distinct positions."""
        numbered = any(not key.startswith("#") for key in self._keys)
        return {
            "positions": "numbered" if self.numbered else "index", "folds": FOLDS, "seed": self.seed,
            "proteins_per_fold": list(self.n_proteins_), "n_positions": len(self._keys),
            "imgt_positions_seen": numbered,
        }  # fmt: skip

    # -- the nulls of one protein ------------------------------------------------------------------

    def _overall(self, name: str, folds: Sequence[int]) -> float:
        counts = self._position[name] if name not in self._offset else self._offset[name]
        hits = counts.hits[list(folds)].sum()
        defined = counts.defined[list(folds)].sum()
        return float(hits / defined) if defined > 0 else np.nan

    def offset_rates(self, prop: Property, protein: Protein) -> np.ma.MaskedArray:
        """The offset null's (L, L) rates for `protein`: r(|i − j|) over the whole set, masked where the
        property is undefined."""
        protein = self._cut(protein)
        _, defined = prop.mask(protein)
        n = len(protein)
        separation = np.abs(np.subtract.outer(np.arange(n), np.arange(n)))
        rates = self._offset[prop.name].rate(range(FOLDS), (separation,))
        return _masked(rates, defined)

    def position_rates(self, prop: Property, protein: Protein) -> np.ma.MaskedArray:
        """The position null's rates for `protein`, (L, L) or (L,): the other fold's rate at each pair of
        positions or position, falling back to its offset rate (pair) and then its overall rate; masked where
        the property is undefined."""
        protein = self._cut(protein)
        _, defined = prop.mask(protein)
        other = [f for f in range(FOLDS) if f != protein_fold(protein.id, self.seed)]
        ids = self.key_ids(protein, grow=False)
        counts = self._position[prop.name]
        if prop.kind == PAIR:
            rates = counts.rate(other, (ids[:, None].repeat(len(ids), 1), ids[None, :].repeat(len(ids), 0)))
            missing = ~np.isfinite(rates)
            if missing.any():
                separation = np.abs(np.subtract.outer(np.arange(len(ids)), np.arange(len(ids))))
                rates[missing] = self._offset[prop.name].rate(other, (separation[missing],))
        else:
            rates = counts.rate(other, (ids,))
        missing = ~np.isfinite(rates)
        rates[missing] = self._overall(prop.name, other)
        return _masked(rates, defined)


def _masked(rates: np.ndarray, defined: np.ndarray) -> np.ma.MaskedArray:
    usable = defined & np.isfinite(rates)
    return np.ma.MaskedArray(np.where(usable, rates, 0.0), mask=~usable)


@dataclass(frozen=True)
class NullProperty(Property):
    """The weighted property behind a null: its value at a pair or residue is a rate in [0, 1] (see the module
    docstring). `rates` is None in an accumulator read back from a file, which needs the sums only."""

    rates: PositionalRates | None = None
    base: Property | None = None
    null_kind: str = OFFSET

    weighted = True

    def mask(self, protein: Protein) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[override]
        """The rates of `protein` as ``(values, defined)``: float64 values, 0 where undefined."""
        if self.rates is None or self.base is None:
            raise RuntimeError(f"{self.name}: the positional rates of this null were not fitted")
        if self.null_kind == OFFSET:
            result = self.rates.offset_rates(self.base, protein)
        else:
            result = self.rates.position_rates(self.base, protein)
        n = len(protein)
        if result.shape != ((n, n) if self.kind == PAIR else (n,)):  # a protein longer than the rates' cut
            raise ValueError(f"{self.name}: rates of shape {result.shape} for {protein.id} (length {n})")
        defined = ~np.ma.getmaskarray(result)
        return np.where(defined, result.data, 0.0), defined

    def count(self, protein: Protein) -> tuple[int, int]:  # pragma: no cover - describe never counts nulls
        raise TypeError(f"{self.name} is a null, not a property to count")


def null_property(name: str, base: Property | None = None, rates: PositionalRates | None = None) -> NullProperty:
    """The weighted property named `name` (``contact@offset``), bound to `rates` when given."""
    parts = split_null_name(name)
    if parts is None:
        raise KeyError(f"{name!r} is not the name of a null")
    prop, kind = parts
    base = base or get_properties([prop])[0]
    if not applicable(base, kind):
        raise KeyError(f"the {kind} null does not apply to the residue property {prop!r}")
    description = f"{kind}-matched null of {prop}"
    return NullProperty(name, base.kind, base.function, description, label=f"{base.label or prop} ({kind} null)",
                        rates=rates, base=base, null_kind=kind)  # fmt: skip


def with_nulls(properties: Sequence[Property], kinds: Sequence[str], rates: PositionalRates) -> list[Property]:
    """`properties` followed by the nulls of `kinds` that apply to each, bound to `rates`."""
    extra = [
        null_property(null_name(prop.name, kind), prop, rates)
        for kind in kinds
        for prop in properties
        if applicable(prop, kind)
    ]
    return [*properties, *extra]


def fit_nulls(
    properties: Sequence[Property],
    kinds: Sequence[str],
    proteins: Iterable[Protein | Skipped] | None,
    *,
    seed: int,
    numbered: bool = True,
    limit: int | None = None,
    max_residues: int | None = None,
) -> tuple[list[Property], PositionalRates | None]:
    """`properties` with the positional nulls of `kinds`, their rates fitted on `proteins`.

    Parameters
    ----------
    properties : sequence of Property
    kinds : sequence of {"offset", "position"}
        Empty: no nulls (and `proteins` is not read).
    proteins : iterable of Protein or Skipped
        The run's proteins, read once here before the run reads them again.
    seed : int
        Seeds the cross-fitting folds.
    numbered : bool
        IMGT positions where a chain is numbered (False: residue indices).
    limit : int, optional
        The run's limit: only its first `limit` proteins.
    max_residues : int, optional
        The residues of a protein the model sees.

    Raises
    ------
    ValueError
        For an unknown null, or nulls without proteins to fit them on.
    """
    unknown = sorted(set(kinds) - set(NULL_KINDS))
    if unknown:
        raise ValueError(f"unknown null {', '.join(unknown)}; known: {', '.join(NULL_KINDS)}")
    if not kinds:
        return list(properties), None
    if proteins is None:
        raise ValueError("positional nulls need the proteins to fit their rates on")
    rates = PositionalRates(properties, seed=seed, numbered=numbered, max_residues=max_residues)
    taken = 0
    for protein in proteins:
        if isinstance(protein, Protein):
            if limit is not None and taken >= limit:
                break
            rates.add(protein)
            taken += 1
    ordered = [kind for kind in NULL_KINDS if kind in kinds]
    return with_nulls(properties, ordered, rates), rates
