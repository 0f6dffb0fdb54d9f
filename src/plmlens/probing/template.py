"""A positional template: the contact map every protein would have if contacts depended on place alone.

The floor a contact predictor from a model has to clear. On a family of aligned domains (antibody variable
domains numbered by IMGT) the mean contact map of a few training domains, read at the test domain's
positions, already predicts most long-range contacts: a model's contact precision means something only above
it. Where the chains are not numbered, positions are residue indices, which align only the sequence start.

The template is a scikit-learn-style estimator: `PositionalTemplate.fit` takes proteins (their position keys
from `plmlens.proteins.positions.position_keys` and their `contact_map`), `predict` one protein's ``(L, L)``
score map, scored like every other contact map (`plmlens.probing.metrics.contact_precisions`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from plmlens.proteins import Protein, contact_map
from plmlens.proteins.positions import NO_POSITION, position_keys

#: The score of a pair whose keys were never seen together in training, or with a residue without a key:
#: below every seen pair (whose contact rates lie in [0, 1]).
UNSEEN = -1.0


class PositionalTemplate(BaseEstimator):
    """The mean contact map of training proteins, aligned by position key; scores any protein.

    For residues ``i < j`` of a protein with keys ``a`` and ``b``, the score is the contact rate of the key
    pair ``(a, b)`` over the training proteins: contacts at ``(a, b)`` divided by the training proteins in which
    both keys occur (in that order) with a defined contact label. Pairs never seen together, and residues
    without a key (`NO_POSITION`), score `UNSEEN`; ties keep their order, so rankings are deterministic.

    The table is stored sparse, as sorted arrays: only the key pairs the training proteins hold (about
    ``n_proteins × L² / 2`` at most), never a dense ``(n_keys, n_keys)`` array.

    Parameters
    ----------
    numbered : bool, default True
        Align by IMGT position where a chain is numbered (`position_keys`); False: by residue index always.

    Attributes
    ----------
    keys_ : ndarray of str, shape (n_keys,)
        The position keys seen in training, sorted.
    pairs_ : ndarray of int64, shape (n_pairs,)
        The key pairs seen together, as ``index(a) × n_keys + index(b)`` into `keys_`, sorted.
    hits_ : ndarray of int64, shape (n_pairs,)
        Training proteins with a contact at each pair.
    counts_ : ndarray of int64, shape (n_pairs,)
        Training proteins with a defined label at each pair.
    contact_rate_ : ndarray of float64, shape (n_pairs,)
        ``hits_ / counts_``: the template's score of each pair.
    n_proteins_ : int
        Training proteins with at least one defined contact label (the others add nothing).
    aligned_by_ : str
        What the keys seen are: ``"imgt"``, ``"residue index"`` or ``"imgt and residue index"``.

    Examples
    --------
    >>> template = PositionalTemplate().fit(training_proteins)  # doctest: +SKIP
    >>> scores = template.predict(protein)  # (L, L)  # doctest: +SKIP
    """

    def __init__(self, numbered: bool = True) -> None:
        self.numbered = numbered

    def fit(self, proteins: Sequence[Protein]) -> PositionalTemplate:
        """Count, over `proteins`, the contacts and the defined labels of every key pair.

        Parameters
        ----------
        proteins : sequence of Protein
            Training proteins; those without coordinates (no defined contact label) add nothing.

        Returns
        -------
        self

        Raises
        ------
        ValueError
            When no training protein has a defined contact label.
        """
        found = [_protein_pairs(protein, self.numbered) for protein in proteins]
        found = [pairs for pairs in found if pairs is not None]
        if not found:
            raise ValueError("no training protein has contacts (coordinates) to fit the positional template on")
        self.keys_ = np.unique(np.concatenate([np.concatenate([a, b]) for a, b, _ in found]))
        n_keys = len(self.keys_)
        codes, labels = [], []
        for first, second, contact in found:
            codes.append(np.searchsorted(self.keys_, first) * n_keys + np.searchsorted(self.keys_, second))
            labels.append(contact)
        all_codes, all_labels = np.concatenate(codes).astype(np.int64), np.concatenate(labels)
        self.pairs_, inverse = np.unique(all_codes, return_inverse=True)
        self.counts_ = np.bincount(inverse, minlength=len(self.pairs_)).astype(np.int64)
        self.hits_ = np.bincount(inverse, weights=all_labels, minlength=len(self.pairs_)).round().astype(np.int64)
        self.contact_rate_ = self.hits_ / self.counts_
        self.n_proteins_ = len(found)
        by_index = np.char.startswith(self.keys_.astype(str), "#")
        kinds = (("imgt", not by_index.all()), ("residue index", by_index.any()))
        self.aligned_by_ = " and ".join(name for name, present in kinds if present)
        return self

    def predict(self, protein: Protein) -> np.ndarray:
        """The template's contact scores of every pair of `protein`.

        Parameters
        ----------
        protein : Protein

        Returns
        -------
        ndarray of float64, shape (L, L)
            Symmetric; `UNSEEN` on the diagonal, at pairs never seen together and at residues without a key.
        """
        check_is_fitted(self)
        keys = position_keys(protein, self.numbered)
        length = len(keys)
        scores = np.full((length, length), UNSEEN)
        if not len(self.pairs_):
            return scores
        index = np.searchsorted(self.keys_, keys).clip(0, len(self.keys_) - 1)
        known = (self.keys_[index] == keys) & (keys != NO_POSITION)
        i, j = np.triu_indices(length, k=1)
        usable = known[i] & known[j]
        i, j = i[usable], j[usable]
        codes = index[i].astype(np.int64) * len(self.keys_) + index[j]
        where = np.searchsorted(self.pairs_, codes).clip(0, len(self.pairs_) - 1)
        seen = self.pairs_[where] == codes
        scores[i[seen], j[seen]] = self.contact_rate_[where[seen]]
        scores[j[seen], i[seen]] = self.contact_rate_[where[seen]]
        return scores


def _protein_pairs(protein: Protein, numbered: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """One training protein's pairs ``i < j`` with a defined label and two keys: the keys of ``i``, of ``j``,
    and the labels (1.0 a contact); None when it has no defined label."""
    contacts = contact_map(protein)
    if not contacts.count():
        return None
    keys = position_keys(protein, numbered)
    i, j = np.triu_indices(len(keys), k=1)
    keep = ~np.ma.getmaskarray(contacts)[i, j] & (keys[i] != NO_POSITION) & (keys[j] != NO_POSITION)
    i, j = i[keep], j[keep]
    return keys[i], keys[j], contacts.filled(False)[i, j].astype(np.float64)
