"""Feature × concept matching: precision, recall and F1 over residues (InterPLM's protocol).

InterPLM (Simon & Zou 2025) asks of every SAE feature and every per-residue concept (a binding site, a helix,
CDR-H3, an amino acid) how well "the feature is on" predicts "the residue has the concept". A feature is on at a
residue where its activation, scaled by the feature's maximum over the evaluation data, exceeds a threshold
(`THRESHOLDS`; at 0 it means "activation > 0"). The threshold of each feature × concept pair is chosen on a
validation split of proteins (the highest F1, ties to the lower threshold) and its precision, recall and F1 are
reported on the held-out test split; a pair with test F1 ≥ `MATCH_F1` is *matched*.

The computation is two streaming passes over the evaluation proteins, memory flat in their number:

1. `ActivationRange`: each unit's maximum (and minimum) over all evaluation residues.
2. `ConceptCounts`: for each split, threshold, unit and concept, the true positives, the residues predicted on
   and the positives, counted batch by batch as matrix products of the 0/1 "on" matrix with the concept matrix
   (`concept_matrix`). Counts from several processes add up (`ConceptCounts.merge`).

`match_table` turns the counts into one row per unit × concept; `best_per_unit`, `best_per_concept` and
`coverage_summary` condense it. Single neurons (raw hidden dimensions) go through the same machinery, min–max
scaled and in both signs (`ConceptCounts`), as do the controls: concepts shuffled between proteins
(`shuffled_pairs`, `pair_with_partner`) and a predictor that knows only each residue's position
(`PositionalPredictor`). Undefined residues (a label the protein lacks, a residue outside the numbered domain) are
left out of a concept's counts entirely, numerators and denominators alike.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from plmlens.analysis.properties import PROPERTIES, TOKEN, Property, label_property_names
from plmlens.proteins import Protein
from plmlens.proteins.positions import NO_POSITION

#: Thresholds on the scaled activation (activation / the unit's maximum); 0 means "activation > 0".
THRESHOLDS = (0.0, 0.15, 0.5, 0.6, 0.8)
#: A unit × concept pair whose test F1 reaches this is matched.
MATCH_F1 = 0.5
VALIDATION = "validation"
TEST = "test"
#: The splits, in the order of the count arrays' first axis.
SPLITS = (VALIDATION, TEST)
#: The absolute score threshold the position-only predictor tries besides the relative ones (a majority rate).
POSITION_ABSOLUTE = 0.5
#: Entries of the 0/1 "on" matrix processed at once (rows × units): bounds memory (~64 MB as float32), and keeps
#: every float32 partial sum far below 2**24, where integers stop being exact.
CHUNK_ENTRIES = 1 << 24
#: Below this fraction of "on" entries, a chunk is multiplied as a sparse matrix (SAE features mostly are).
SPARSE_DENSITY = 0.05


# --------------------------------------------------------------------------------------------------- concepts


def concept_property(name: str) -> Property:
    """The registered per-residue property a concept is.

    Raises
    ------
    KeyError
        For a name the registry does not know, listing the label properties.
    ValueError
        For a pair property (concepts are per residue).
    """
    prop = PROPERTIES.get(name)
    if prop is None:
        raise KeyError(f"unknown concept {name!r}; known: {', '.join(label_property_names())}")
    if prop.kind != TOKEN:
        raise ValueError(f"concept {name!r} is a {prop.kind} property; concepts are per-residue (token) properties")
    return prop


def concept_names(names: Iterable[str] | None = None) -> list[str]:
    """The concepts to match: `names` checked (`concept_property`), without duplicates, or by default every
    property that comes from a label (`plmlens.analysis.properties.label_property_names`)."""
    chosen = list(dict.fromkeys(names)) if names is not None else label_property_names()
    for name in chosen:
        concept_property(name)
    return chosen


def concept_matrix(protein: Protein, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """The concepts of one protein as ``(values, defined)``, both bool of shape (L, C).

    ``values`` is false wherever ``defined`` is (a residue without the label, or a protein lacking it); the
    counting leaves those residues out of that concept.
    """
    n, c = len(protein), len(names)
    values = np.zeros((n, c), dtype=bool)
    defined = np.zeros((n, c), dtype=bool)
    for j, name in enumerate(names):
        values[:, j], defined[:, j] = concept_property(name).mask(protein)
    return values, defined


# ------------------------------------------------------------------------------------------------------ splits


def _unit_hash(text: str) -> float:
    """A number in [0, 1) from the sha256 of `text`: the same on every machine and in every process."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2.0**64


def split_proteins(ids: Iterable[str], seed: int, fractions: tuple[float, float] = (0.5, 0.5)) -> dict[str, str]:
    """The evaluation split of each protein: ``"validation"`` or ``"test"``.

    Decided by a seeded hash of the id alone (sha256 of ``f"{seed}:{id}"``, as `plmlens.analysis.nulls` draws its
    folds), so a protein lands in the same split whatever the order of `ids` and however they are sharded.

    Parameters
    ----------
    ids : iterable of str
    seed : int
    fractions : (float, float)
        Expected shares of validation and test (normalised to sum 1).
    """
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != 2 or min(fractions) < 0 or not sum(fractions) > 0 or not all(map(math.isfinite, fractions)):
        raise ValueError(f"fractions must be two non-negative numbers with a positive sum, not {fractions}")
    cut = fractions[0] / sum(fractions)
    return {str(i): VALIDATION if _unit_hash(f"{seed}:{i}") < cut else TEST for i in ids}


def shuffled_pairs(ids: Iterable[str], seed: int, splits: Mapping[str, str] | None = None) -> dict[str, str]:
    """The shuffled-concepts control: each protein's partner, a seeded derangement within each split.

    The caller pairs protein *i*'s activations with the concepts of ``pairs[i]`` (`pair_with_partner`), so any
    match left is chance. Within a split the ids are ordered by a seeded hash and each maps to the next one
    cyclically: nobody maps to itself, the result depends on neither order nor sharding, and a protein keeps its
    split. A split holding a single protein has no partner for it: that protein is left out of the mapping.

    For aligned families (antibody variable domains) a partner's labels sit at about the same residue indices,
    so this control measures positional chance too, not only chance; `PositionalPredictor` measures position
    alone.

    Parameters
    ----------
    ids : iterable of str
    seed : int
    splits : mapping, optional
        id → split; default `split_proteins` (ids, seed).
    """
    unique = list(dict.fromkeys(map(str, ids)))
    splits = split_proteins(unique, seed) if splits is None else splits
    pairs: dict[str, str] = {}
    for split in SPLITS:
        members = sorted((i for i in unique if splits[i] == split), key=lambda i: (_unit_hash(f"{seed}:pair:{i}"), i))
        if len(members) < 2:
            continue
        pairs.update(zip(members, members[1:] + members[:1], strict=True))
    return pairs


def pair_with_partner(
    acts: Any, values: np.ndarray, defined: np.ndarray, partner_values: np.ndarray, partner_defined: np.ndarray
) -> tuple[Any, np.ndarray, np.ndarray]:
    """One protein's activations with its partner's concepts (`shuffled_pairs`).

    Parameters
    ----------
    acts : array (L, U)
        The protein's activations, returned unchanged.
    values, defined : ndarray of bool, shape (L, C)
        The protein's own concepts: they only fix L and C (checked), the partner's replace them.
    partner_values, partner_defined : ndarray of bool, shape (L', C)

    Returns
    -------
    acts, values, defined
        The partner's concepts cut or padded to L: residues beyond the partner's length are undefined.
    """
    n, c = np.shape(values)
    if np.shape(acts)[0] != n or np.shape(defined) != (n, c):
        raise ValueError(f"activations {tuple(np.shape(acts))} and concepts {np.shape(values)} disagree in length")
    if np.shape(partner_values) != np.shape(partner_defined) or np.shape(partner_values)[1:] != (c,):
        raise ValueError(f"partner concepts {np.shape(partner_values)} do not have the protein's {c} concepts")
    m = min(n, len(partner_values))
    paired_values = np.zeros((n, c), dtype=bool)
    paired_defined = np.zeros((n, c), dtype=bool)
    paired_defined[:m] = partner_defined[:m]
    paired_values[:m] = np.asarray(partner_values[:m], dtype=bool) & paired_defined[:m]
    return acts, paired_values, paired_defined


# ---------------------------------------------------------------------------------------------- pass 1: range


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def _numpy(x: Any) -> np.ndarray:
    """`x` as a numpy array (a torch tensor is detached and brought to the CPU)."""
    return x.detach().float().cpu().numpy() if _is_torch(x) else np.asarray(x)


def _check_acts(acts: Any, n_units: int) -> None:
    shape = tuple(acts.shape)
    if len(shape) != 2 or shape[1] != n_units:
        raise ValueError(f"activations have shape {shape}, expected (residues, {n_units})")


class ActivationRange:
    """Pass 1: each unit's maximum and minimum over the evaluation residues, and how often it is above 0.

    Parameters
    ----------
    n_units : int
        Features of the SAE, or hidden dimensions for neurons.
    """

    def __init__(self, n_units: int) -> None:
        self.n_units = int(n_units)
        self.max = np.full(self.n_units, -np.inf)
        self.min = np.full(self.n_units, np.inf)
        self.active = np.zeros(self.n_units, dtype=np.int64)
        self.n_residues = 0

    def update(self, acts: Any) -> None:
        """Add a batch of activations, shape (residues, units), numpy or torch (reduced on its device)."""
        _check_acts(acts, self.n_units)
        if acts.shape[0] == 0:
            return
        if _is_torch(acts):
            high, low = (_numpy(v) for v in (acts.amax(0), acts.amin(0)))
            active = _numpy((acts > 0).sum(0))
        else:
            high, low, active = acts.max(0), acts.min(0), (acts > 0).sum(0)
        if not (np.isfinite(high).all() and np.isfinite(low).all()):
            raise ValueError("activations contain NaN or infinite values")
        np.maximum(self.max, high, out=self.max)
        np.minimum(self.min, low, out=self.min)
        self.active += np.asarray(active, dtype=np.int64)
        self.n_residues += int(acts.shape[0])

    def merge(self, other: ActivationRange) -> ActivationRange:
        """Fold in another process's range (same units); returns self."""
        if other.n_units != self.n_units:
            raise ValueError(f"cannot merge ranges of {other.n_units} and {self.n_units} units")
        np.maximum(self.max, other.max, out=self.max)
        np.minimum(self.min, other.min, out=self.min)
        self.active += other.active
        self.n_residues += other.n_residues
        return self

    @property
    def frequency(self) -> np.ndarray:
        """The fraction of evaluation residues where each unit is above 0."""
        return self.active / max(self.n_residues, 1)

    def save(self, path: str | Path) -> None:
        """Write to an npz file."""
        np.savez(path, max=self.max, min=self.min, active=self.active, n_residues=np.int64(self.n_residues))

    @classmethod
    def load(cls, path: str | Path) -> ActivationRange:
        """Read what `save` wrote."""
        with _open_npz(path, ("max", "min", "active", "n_residues")) as data:
            found = cls(len(data["max"]))
            found.max, found.min = data["max"].astype(float), data["min"].astype(float)
            found.active, found.n_residues = data["active"].astype(np.int64), int(data["n_residues"])
        return found


def _open_npz(path: str | Path, keys: Sequence[str]) -> Any:
    """An npz file opened without pickles, with `keys` checked present (a one-line error naming it otherwise)."""
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: not a readable npz file ({error})") from None
    missing = [key for key in keys if key not in data.files]
    if missing:
        data.close()
        raise ValueError(f"{path}: missing {', '.join(missing)}; not written by plmlens.features.concepts")
    return data


# --------------------------------------------------------------------------------------------- pass 2: counts


def _cuts(thresholds: Sequence[float], unit_max: np.ndarray, unit_min: np.ndarray | None) -> np.ndarray:
    """Per threshold and (signed) unit, the raw activation a unit must exceed to be on: shape (T, U') with
    U' = U for features and 2U for neurons; +inf for a unit that never turns on."""
    t = np.asarray(thresholds, dtype=np.float64)[:, None]
    if unit_min is None:
        # act / max > t  ⇔  act > t · max when max > 0 (at t = 0: act > 0); a unit with max ≤ 0 never fires.
        return np.where(unit_max > 0, t * unit_max, np.inf)
    span = unit_max - unit_min
    # Min–max scaling: x is on where (x − min) / span > t; its mirror −x where (max − x) / span > t, i.e.
    # −x > −max + t · span. A constant neuron (span ≤ 0) never turns on.
    plus = np.where(span > 0, unit_min + t * span, np.inf)
    minus = np.where(span > 0, -unit_max + t * span, np.inf)
    return np.concatenate([plus, minus], axis=1)


def _products_numpy(acts: np.ndarray, cuts: np.ndarray, both: np.ndarray, signed: bool) -> np.ndarray:
    """Σ over rows of on[r, u] · both[r, k] for each threshold: (T, U', K) int64, `both` 0/1 float32 (n, K)."""
    import scipy.sparse

    units = cuts.shape[1]
    out = np.zeros((cuts.shape[0], units, both.shape[1]), dtype=np.int64)
    step = max(1, CHUNK_ENTRIES // max(units, 1))
    for start in range(0, len(acts), step):
        block = np.asarray(acts[start : start + step], dtype=np.float32)
        if signed:
            block = np.concatenate([block, -block], axis=1)
        right = both[start : start + step]
        for k, cut in enumerate(cuts):
            on = block > cut.astype(np.float32)
            if on.mean() < SPARSE_DENSITY:
                product = scipy.sparse.csr_matrix(on, dtype=np.float32).T @ right
            else:
                product = on.astype(np.float32).T @ right
            out[k] += np.rint(product).astype(np.int64)
    return out


def _products_torch(acts: Any, cuts: np.ndarray, both: np.ndarray, signed: bool) -> np.ndarray:
    """`_products_numpy` on the tensor's device (dense float32 products: exact for 0/1 below 2**24 rows)."""
    import torch

    device = acts.device
    cut_t = torch.as_tensor(cuts, dtype=torch.float32, device=device)
    right_all = torch.as_tensor(both, device=device)
    out = torch.zeros((cuts.shape[0], cuts.shape[1], both.shape[1]), dtype=torch.int64, device=device)
    step = max(1, CHUNK_ENTRIES // max(cuts.shape[1], 1))
    for start in range(0, acts.shape[0], step):
        block = acts[start : start + step].float()
        if signed:
            block = torch.cat([block, -block], dim=1)
        right = right_all[start : start + step]
        for k in range(len(cuts)):
            out[k] += torch.round((block > cut_t[k]).float().T @ right).long()
    return out.cpu().numpy()


class ConceptCounts:
    """Pass 2: per split, threshold, unit and concept, the counts behind precision, recall and F1.

    ``tp[s, t, u, c]``: residues where unit u is on at threshold t and concept c holds; ``predicted[s, t, u, c]``:
    residues where u is on and c is defined; ``positives[s, c]``: residues where c holds (``defined[s, c]``: where
    c is defined). Only residues where c is defined count for c.

    Scaling. Features (``unit_min`` None) are on where activation / max > threshold, the max over the evaluation
    data (`ActivationRange`); a feature whose max is ≤ 0 never turns on. Neurons (``unit_min`` given) are
    min–max scaled, as InterPLM scaled them, and counted in both signs: unit u < U is neuron u, unit U + u is
    −neuron u (on where (max − x) / (max − min) > threshold), so a neuron that codes a concept by low values is
    found as well as one that codes it by high values. A constant neuron never turns on.

    Parameters
    ----------
    n_units : int
        Features, or neurons (hidden dimensions; the counts then hold 2 · n_units signed units).
    concept_names : sequence of str
    thresholds : sequence of float
        Relative thresholds in [0, 1), sorted on construction.
    unit_max, unit_min : ndarray (n_units,)
        From `ActivationRange`; ``unit_min`` given means neurons.
    """

    def __init__(
        self,
        n_units: int,
        concept_names: Sequence[str],
        thresholds: Sequence[float] = THRESHOLDS,
        unit_max: np.ndarray | None = None,
        unit_min: np.ndarray | None = None,
    ) -> None:
        self.n_units = int(n_units)
        self.concept_names = [str(name) for name in concept_names]
        self.thresholds = tuple(sorted(float(t) for t in thresholds))
        if not self.thresholds or len(set(self.thresholds)) != len(self.thresholds):
            raise ValueError(f"thresholds must be distinct, not {thresholds}")
        if not all(0 <= t < 1 for t in self.thresholds):
            raise ValueError(f"thresholds are relative to a unit's range and must lie in [0, 1), not {thresholds}")
        if unit_max is None:
            raise ValueError("unit_max is required (ActivationRange.max, pass 1)")
        self.unit_max = np.asarray(unit_max, dtype=np.float64)
        self.unit_min = None if unit_min is None else np.asarray(unit_min, dtype=np.float64)
        for name, array in (("unit_max", self.unit_max), ("unit_min", self.unit_min)):
            if array is not None and array.shape != (self.n_units,):
                raise ValueError(f"{name} has shape {array.shape}, expected ({self.n_units},)")
        self.signed = self.unit_min is not None
        self._cuts = _cuts(self.thresholds, self.unit_max, self.unit_min)
        shape = (len(SPLITS), len(self.thresholds), self._cuts.shape[1], len(self.concept_names))
        self.tp = np.zeros(shape, dtype=np.int64)
        self.predicted = np.zeros(shape, dtype=np.int64)
        self.positives = np.zeros((len(SPLITS), len(self.concept_names)), dtype=np.int64)
        self.defined = np.zeros((len(SPLITS), len(self.concept_names)), dtype=np.int64)
        self.n_residues = np.zeros(len(SPLITS), dtype=np.int64)

    @property
    def kind(self) -> str:
        """``"neuron"`` (signed, min–max scaled) or ``"feature"``."""
        return "neuron" if self.signed else "feature"

    def update(self, acts: Any, values: np.ndarray, defined: np.ndarray, split: str) -> None:
        """Count a batch of residues of one split.

        Parameters
        ----------
        acts : array (n, n_units), numpy or torch
            Activations; a torch tensor is counted on its device.
        values, defined : ndarray of bool, shape (n, C)
            `concept_matrix` of the same residues (several proteins concatenated, or one).
        split : {"validation", "test"}
        """
        _check_acts(acts, self.n_units)
        s = _split_index(split)
        values, defined = np.asarray(values, dtype=bool), np.asarray(defined, dtype=bool)
        expected = (acts.shape[0], len(self.concept_names))
        if values.shape != expected or defined.shape != expected:
            raise ValueError(f"concepts have shapes {values.shape} / {defined.shape}, expected {expected}")
        hits = values & defined
        # One product gives TP (with the hits) and predicted-on-among-defined (with `defined`).
        both = np.concatenate([hits, defined], axis=1).astype(np.float32)
        products = (_products_torch if _is_torch(acts) else _products_numpy)(acts, self._cuts, both, self.signed)
        c = len(self.concept_names)
        self.tp[s] += products[..., :c]
        self.predicted[s] += products[..., c:]
        self.positives[s] += hits.sum(0)
        self.defined[s] += defined.sum(0)
        self.n_residues[s] += acts.shape[0]

    def merge(self, other: ConceptCounts) -> ConceptCounts:
        """Add another process's counts (same units, concepts, thresholds and scaling); returns self."""
        same = (
            other.n_units == self.n_units
            and other.concept_names == self.concept_names
            and other.thresholds == self.thresholds
            and np.array_equal(other._cuts, self._cuts)
        )
        if not same:
            raise ValueError("cannot merge concept counts of different units, concepts, thresholds or scaling")
        for name in ("tp", "predicted", "positives", "defined", "n_residues"):
            np.add(getattr(self, name), getattr(other, name), out=getattr(self, name))
        return self

    def save(self, path: str | Path) -> None:
        """Write to an npz file (no pickles)."""
        extra = {} if self.unit_min is None else {"unit_min": self.unit_min}
        np.savez(path, tp=self.tp, predicted=self.predicted, positives=self.positives, defined=self.defined,
                 n_residues=self.n_residues, thresholds=np.array(self.thresholds), unit_max=self.unit_max,
                 concept_names=np.array(self.concept_names, dtype=str), **extra)  # fmt: skip

    @classmethod
    def load(cls, path: str | Path) -> ConceptCounts:
        """Read what `save` wrote."""
        keys = ("tp", "predicted", "positives", "defined", "n_residues", "thresholds", "unit_max", "concept_names")
        with _open_npz(path, keys) as data:
            unit_min = data["unit_min"] if "unit_min" in data.files else None
            counts = cls(len(data["unit_max"]), data["concept_names"].tolist(), data["thresholds"].tolist(),
                         data["unit_max"], unit_min)  # fmt: skip
            for name in ("tp", "predicted", "positives", "defined", "n_residues"):
                array = data[name]
                if array.shape != getattr(counts, name).shape:
                    raise ValueError(f"{path}: {name} has shape {array.shape}, expected {getattr(counts, name).shape}")
                setattr(counts, name, array.astype(np.int64))
        return counts


def _split_index(split: str) -> int:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    return SPLITS.index(split)


# ------------------------------------------------------------------------------------------------- statistics


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, NaN where the denominator is 0."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / np.maximum(denominator, 1), np.nan)


def scores(tp: np.ndarray, predicted: np.ndarray, positives: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall and F1 from counts (broadcast together).

    Precision is NaN where nothing was predicted on; recall and F1 are NaN where the concept has no positive
    (such a concept cannot be matched); otherwise F1 = 2 TP / (predicted + positives), 0 for a unit never on.
    """
    positives = np.broadcast_to(positives, np.broadcast_shapes(np.shape(tp), np.shape(positives)))
    recall = _ratio(tp, positives)
    f1 = np.where(positives > 0, _ratio(2 * tp, predicted + positives), np.nan)
    return {"precision": _ratio(tp, predicted), "recall": recall, "f1": f1}


def _threshold_column(threshold: float) -> str:
    return f"validation_f1_{threshold:g}"


def _choose(validation_f1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the highest validation F1 over the first axis (ties → the lower threshold, the earlier one) and
    whether any threshold had an F1 at all."""
    known = ~np.isnan(validation_f1)
    best = np.argmax(np.where(known, validation_f1, -1.0), axis=0)
    return best, known.any(axis=0)


def match_table(counts: ConceptCounts, position_f1: Mapping[str, float] | None = None) -> pd.DataFrame:
    """One row per unit × concept: the threshold chosen on validation and the scores on test.

    Columns: ``unit`` (feature or neuron index), ``sign`` (neurons: +1, or −1 for the mirrored unit), ``concept``,
    ``validation_f1_<t>`` for each threshold, ``threshold`` (argmax of validation F1, ties → lower; NaN when the
    concept has no validation positive), ``validation_f1`` (at it), ``test_precision``, ``test_recall``,
    ``test_f1`` (at it), ``validation_positives``, ``test_positives``, ``matched`` (test F1 ≥ `MATCH_F1`) and, given
    `position_f1` (`PositionalPredictor.position_f1`), ``positional``: a match whose test F1 is not above the
    position-only test F1 of its concept.
    """
    v, t = _split_index(VALIDATION), _split_index(TEST)
    val = scores(counts.tp[v], counts.predicted[v], counts.positives[v][None, None])["f1"]  # (T, U', C)
    best, chosen = _choose(val)
    pick = best[None]
    test = scores(np.take_along_axis(counts.tp[t], pick, 0)[0], np.take_along_axis(counts.predicted[t], pick, 0)[0],
                  counts.positives[t][None])  # fmt: skip
    n_units, n_concepts = val.shape[1], val.shape[2]
    unit_index = np.repeat(np.arange(n_units), n_concepts)
    table: dict[str, Any] = {"unit": unit_index % counts.n_units}
    if counts.signed:
        table["sign"] = np.where(unit_index < counts.n_units, 1, -1)
    table["concept"] = np.tile(np.array(counts.concept_names, dtype=object), n_units)
    for k, threshold in enumerate(counts.thresholds):
        table[_threshold_column(threshold)] = val[k].ravel()
    test_f1 = np.where(chosen, test["f1"], np.nan)
    table |= {
        "threshold": np.where(chosen, np.asarray(counts.thresholds)[best], np.nan).ravel(),
        "validation_f1": np.where(chosen, np.take_along_axis(val, pick, 0)[0], np.nan).ravel(),
        "test_precision": np.where(chosen, test["precision"], np.nan).ravel(),
        "test_recall": np.where(chosen, test["recall"], np.nan).ravel(),
        "test_f1": test_f1.ravel(),
        "validation_positives": np.tile(counts.positives[v], n_units),
        "test_positives": np.tile(counts.positives[t], n_units),
        "matched": (np.nan_to_num(test_f1, nan=0.0) >= MATCH_F1).ravel(),
    }
    frame = pd.DataFrame(table)
    if position_f1 is not None:
        flag_positional(frame, position_f1)
    return frame


def flag_positional(table: pd.DataFrame, position_f1: Mapping[str, float]) -> pd.DataFrame:
    """Add (in place, and return) ``positional``: matched rows whose test F1 is not above the position-only
    test F1 of their concept (a concept the predictor has no F1 for counts as 0)."""
    floor = table["concept"].map(lambda c: position_f1.get(c, np.nan)).astype(float).fillna(0.0)
    table["positional"] = table["matched"].to_numpy() & ~(table["test_f1"].to_numpy() > floor.to_numpy())
    return table


def _unit_columns(table: pd.DataFrame) -> list[str]:
    return ["unit", "sign"] if "sign" in table.columns else ["unit"]


def best_per_unit(table: pd.DataFrame) -> pd.DataFrame:
    """Per unit (a neuron over both its signs): the concept with the highest validation F1 (at its chosen
    threshold; ties → the earlier concept), with that pair's test scores. Selection on validation, report on
    test: the best test F1 itself would be chosen on the data it reports. A unit whose every concept lacks
    validation positives has no row."""
    ranked = table[table["validation_f1"].notna()].sort_values(["validation_f1"], ascending=False, kind="stable")
    return ranked.groupby("unit", sort=True).head(1).sort_values("unit", kind="stable").reset_index(drop=True)


def best_per_concept(table: pd.DataFrame, k: int = 5) -> pd.DataFrame:
    """Per concept: the top-`k` units by validation F1 (ties → the lower unit), with their test scores and their
    ``rank`` (1 = best); concepts in the table's order."""
    ranked = table[table["validation_f1"].notna()].sort_values(["validation_f1"], ascending=False, kind="stable")
    top = ranked.groupby("concept", sort=False).head(k).copy()
    order = {name: i for i, name in enumerate(dict.fromkeys(table["concept"]))}
    top["_order"] = top["concept"].map(order)
    top = top.sort_values(["_order", "validation_f1"], ascending=[True, False], kind="stable").drop(columns="_order")
    top.insert(1, "rank", top.groupby("concept", sort=False).cumcount() + 1)
    columns = ["concept", "rank", *_unit_columns(table)]
    rest = [name for name in top.columns if name not in columns and not name.startswith("validation_f1_")]
    return top[columns + rest].reset_index(drop=True)


# ------------------------------------------------------------------------------------------------ position


class PositionalPredictor:
    """The position-only control: each concept's rate at each position key, as a per-residue score.

    Fitted on the validation split only (`fit_update`): for each concept, its plain rate (hits / defined) at
    each position key (`plmlens.proteins.positions.position_keys`: IMGT ``"H111A"`` for numbered chains,
    ``"#12"`` otherwise); a residue whose key validation never defined for the concept, or with no key
    (``NO_POSITION``), scores the concept's overall validation rate. Then, like one more unit per concept,
    scored on both splits (`update`): on where the score exceeds a threshold, chosen on validation, reported on
    test. The thresholds are `THRESHOLDS` relative to the concept's highest rate (at 0: score > 0), plus
    `POSITION_ABSOLUTE` (score > 0.5: the majority rate). The validation F1 that chooses the threshold is
    in-sample (the rates were fitted there); only the test F1 is reported.

    With several processes: merge the fits (`merge`) before any process scores; merging later sums the
    scoring counts too.
    """

    def __init__(self, concept_names: Sequence[str], thresholds: Sequence[float] = THRESHOLDS) -> None:
        self.concept_names = [str(name) for name in concept_names]
        self.thresholds = tuple(sorted(float(t) for t in thresholds))
        c = len(self.concept_names)
        self.keys: dict[str, int] = {}
        self.key_hits = np.zeros((0, c), dtype=np.int64)
        self.key_defined = np.zeros((0, c), dtype=np.int64)
        # Hits and defined residues without a key: they count towards the overall rate only.
        self.unkeyed = np.zeros((2, c), dtype=np.int64)
        shape = (len(SPLITS), len(self.thresholds) + 1, c)
        self.tp = np.zeros(shape, dtype=np.int64)
        self.predicted = np.zeros(shape, dtype=np.int64)
        self.positives = np.zeros((len(SPLITS), c), dtype=np.int64)
        self._rates: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    @property
    def threshold_names(self) -> list[str]:
        """How each score threshold is written in `table`: ``"0.15*max"`` (relative) and ``"0.5"`` (absolute)."""
        return [f"{t:g}*max" for t in self.thresholds] + [f"{POSITION_ABSOLUTE:g}"]

    def _check(self, keys: np.ndarray, values: np.ndarray, defined: np.ndarray) -> tuple[np.ndarray, ...]:
        keys = np.asarray(keys).astype(str)
        values, defined = np.asarray(values, dtype=bool), np.asarray(defined, dtype=bool)
        expected = (len(keys), len(self.concept_names))
        if keys.ndim != 1 or values.shape != expected or defined.shape != expected:
            raise ValueError(f"keys {keys.shape} and concepts {values.shape} / {defined.shape} do not fit {expected}")
        return keys, values & defined, defined

    def fit_update(self, keys: np.ndarray, values: np.ndarray, defined: np.ndarray, split: str) -> None:
        """Count one protein's concepts by position key; proteins not in the validation split are ignored."""
        if _split_index(split) != _split_index(VALIDATION):
            return
        if self._rates is not None:
            raise RuntimeError("the positional rates were already used to score; fit every protein first")
        keys, hits, defined = self._check(keys, values, defined)
        known = keys != NO_POSITION
        for key in dict.fromkeys(keys[known].tolist()):
            self.keys.setdefault(key, len(self.keys))
        grow = len(self.keys) - len(self.key_hits)
        if grow > 0:
            pad = np.zeros((grow, len(self.concept_names)), dtype=np.int64)
            self.key_hits, self.key_defined = np.vstack([self.key_hits, pad]), np.vstack([self.key_defined, pad])
        ids = np.array([self.keys[k] for k in keys[known]], dtype=np.int64)
        np.add.at(self.key_hits, ids, hits[known])
        np.add.at(self.key_defined, ids, defined[known])
        self.unkeyed += np.stack([hits[~known].sum(0), defined[~known].sum(0)])

    def _fitted(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rate per key (K, C), overall rate (C,), score cuts (T + 1, C)), computed once, on first use."""
        if self._rates is None:
            overall = _ratio(self.key_hits.sum(0) + self.unkeyed[0], self.key_defined.sum(0) + self.unkeyed[1])
            rates = np.where(self.key_defined > 0, _ratio(self.key_hits, self.key_defined), overall)
            # fmax skips NaN (a concept never defined on validation stays NaN, without a warning).
            top = np.fmax.reduce(np.vstack([rates, overall[None]]), axis=0)
            relative = np.asarray(self.thresholds)[:, None] * top[None]
            cuts = np.vstack([relative, np.full((1, len(top)), POSITION_ABSOLUTE)])
            # A concept validation never defined has no rate: never on.
            cuts[:, np.isnan(overall)] = np.inf
            self._rates = (rates, overall, cuts)
        return self._rates

    def score(self, keys: np.ndarray) -> np.ndarray:
        """Each residue's rate for each concept, (L, C) in [0, 1] (NaN for a concept never defined on
        validation)."""
        rates, overall, _ = self._fitted()
        keys = np.asarray(keys).astype(str)
        ids = np.array([self.keys.get(k, -1) for k in keys.tolist()], dtype=np.int64)
        out = np.broadcast_to(overall, (len(keys), len(overall))).copy()
        out[ids >= 0] = rates[ids[ids >= 0]]
        return out

    def update(self, keys: np.ndarray, values: np.ndarray, defined: np.ndarray, split: str) -> None:
        """Score one protein (or a batch of residues) and count its TP, predicted and positives per threshold."""
        s = _split_index(split)
        keys, hits, defined = self._check(keys, values, defined)
        on = self.score(keys)[None] > self._fitted()[2][:, None, :]  # (T + 1, L, C); NaN compares False
        self.tp[s] += (on & hits[None]).sum(1)
        self.predicted[s] += (on & defined[None]).sum(1)
        self.positives[s] += hits.sum(0)

    def merge(self, other: PositionalPredictor) -> PositionalPredictor:
        """Add another process's fit and counts (same concepts and thresholds); returns self."""
        if other.concept_names != self.concept_names or other.thresholds != self.thresholds:
            raise ValueError("cannot merge positional predictors of different concepts or thresholds")
        if self._rates is not None and other.keys:
            raise RuntimeError("this predictor already scored; merge the fits before scoring")
        for key in other.keys:
            self.keys.setdefault(key, len(self.keys))
        grow = len(self.keys) - len(self.key_hits)
        pad = np.zeros((grow, len(self.concept_names)), dtype=np.int64)
        self.key_hits, self.key_defined = np.vstack([self.key_hits, pad]), np.vstack([self.key_defined, pad])
        rows = np.array([self.keys[key] for key in other.keys], dtype=np.int64)
        np.add.at(self.key_hits, rows, other.key_hits)
        np.add.at(self.key_defined, rows, other.key_defined)
        self.unkeyed += other.unkeyed
        self.tp += other.tp
        self.predicted += other.predicted
        self.positives += other.positives
        return self

    _ARRAYS = ("key_hits", "key_defined", "unkeyed", "tp", "predicted", "positives")

    def save(self, path: str | Path) -> None:
        """Write the fit and the counts to an npz file (no pickles)."""
        arrays = {name: getattr(self, name) for name in self._ARRAYS}
        np.savez(path, keys=np.array(list(self.keys), dtype=str), thresholds=np.array(self.thresholds),
                 concept_names=np.array(self.concept_names, dtype=str), **arrays)  # fmt: skip

    @classmethod
    def load(cls, path: str | Path) -> PositionalPredictor:
        """Read what `save` wrote."""
        with _open_npz(path, ("keys", "thresholds", "concept_names", *cls._ARRAYS)) as data:
            found = cls(data["concept_names"].tolist(), data["thresholds"].tolist())
            found.keys = {key: i for i, key in enumerate(data["keys"].tolist())}
            for name in cls._ARRAYS:
                array = data[name].astype(np.int64)
                rows_fit = not name.startswith("key") or len(array) == len(found.keys)
                if array.shape[1:] != getattr(found, name).shape[1:] or not rows_fit:
                    raise ValueError(f"{path}: {name} has shape {array.shape}, which does not fit its concepts")
                setattr(found, name, array)
        return found

    def table(self) -> pd.DataFrame:
        """Per concept: validation F1 at each score threshold, the chosen ``threshold`` (its name), and
        ``test_precision``, ``test_recall``, ``test_f1`` at it."""
        v, t = _split_index(VALIDATION), _split_index(TEST)
        val = scores(self.tp[v], self.predicted[v], self.positives[v][None])["f1"]  # (T + 1, C)
        best, chosen = _choose(val)
        pick = best[None]
        test = scores(np.take_along_axis(self.tp[t], pick, 0)[0], np.take_along_axis(self.predicted[t], pick, 0)[0],
                      self.positives[t])  # fmt: skip
        names = np.array(self.threshold_names, dtype=object)
        frame = pd.DataFrame({"concept": self.concept_names})
        for k, name in enumerate(self.threshold_names):
            frame[f"validation_f1_{name}"] = val[k]
        frame["threshold"] = np.where(chosen, names[best], None)
        frame["validation_f1"] = np.where(chosen, np.take_along_axis(val, pick, 0)[0], np.nan)
        for name in ("precision", "recall", "f1"):
            frame[f"test_{name}"] = np.where(chosen, test[name], np.nan)
        return frame

    def position_f1(self) -> dict[str, float]:
        """Concept → the position-only test F1 (NaN where it cannot be computed)."""
        frame = self.table()
        return dict(zip(frame["concept"], frame["test_f1"].astype(float), strict=True))


# ---------------------------------------------------------------------------------------------------- summary


def _clean(value: float) -> float | None:
    """A JSON-ready float: None for NaN."""
    return None if value is None or not np.isfinite(value) else float(value)


def _per_concept(table: pd.DataFrame, names: list[str]) -> tuple[dict[str, float], dict[str, float]]:
    """Per concept: the best test F1 over units, and the test F1 of the unit best on validation."""
    best = table.groupby("concept", sort=False)["test_f1"].max()
    selected = best_per_concept(table, k=1).set_index("concept")["test_f1"]
    return ({n: best.get(n, np.nan) for n in names}, {n: selected.get(n, np.nan) for n in names})


def coverage_summary(
    feature_table: pd.DataFrame,
    neuron_table: pd.DataFrame,
    controls: Mapping[str, pd.DataFrame],
    position_f1: Mapping[str, float],
) -> dict:
    """How many concepts features, neurons and the controls match (JSON-ready; NaN → None).

    Returns
    -------
    dict
        ``concepts``: per concept, for ``features``, ``neurons`` and each control, ``best_test_f1`` (the highest
        test F1 of any unit; a concept counts as matched when it reaches `MATCH_F1`) and ``selected_test_f1`` (the
        test F1 of the unit with the highest validation F1: the honest single number), and ``position`` (the
        position-only test F1). ``matched_concepts``: how many concepts each matched (and ``position``: how many
        the position-only predictor reaches `MATCH_F1` on). ``features_matched``: features matched to at least
        one concept; ``matches``: feature × concept matches; ``matches_beyond_position``: of those, the ones
        whose test F1 is above the position-only F1 of their concept.
    """
    tables = {"features": feature_table, "neurons": neuron_table, **controls}
    names = list(dict.fromkeys([*feature_table["concept"], *neuron_table["concept"]]))
    per: dict[str, dict[str, Any]] = {name: {} for name in names}
    matched: dict[str, int] = {}
    for label, table in tables.items():
        best, selected = _per_concept(table, names)
        for name in names:
            per[name][label] = {"best_test_f1": _clean(best[name]), "selected_test_f1": _clean(selected[name])}
        matched[label] = int(table.loc[table["matched"], "concept"].nunique())
    for name in names:
        per[name]["position"] = _clean(position_f1.get(name, np.nan))
    matched["position"] = sum(1 for name in names if np.nan_to_num(position_f1.get(name, np.nan)) >= MATCH_F1)
    flagged = flag_positional(feature_table.copy(), position_f1)
    hits = flagged[flagged["matched"]]
    return {
        "match_f1": MATCH_F1,
        "concepts": per,
        "matched_concepts": matched,
        "features_matched": int(hits["unit"].nunique()),
        "matches": len(hits),
        "matches_beyond_position": int((~hits["positional"]).sum()),
    }
