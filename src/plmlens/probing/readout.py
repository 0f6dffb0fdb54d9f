"""Contacts from the few best heads: the mean of the top-k heads' symmetrised APC attention.

A readout between the best single head and the contact regression over all heads: on training proteins every
head is ranked by its contact precision (long-range precision@L/5 of `head_contact_scores`, the score that
picks the best single head), and the number of heads averaged is chosen from `TOP_KS` by the training
precision of the averaged map. Predicting takes one forward pass (the attention), where the categorical
Jacobian takes ``20 L``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from plmlens.probing.metrics import contact_candidates, precision_at_k
from plmlens.probing.regression import head_contact_scores
from plmlens.proteins import CONTACT_RANGES

#: The numbers of heads the readout chooses from (capped at the model's heads).
TOP_KS = (1, 2, 4, 8, 16, 32)
#: Heads are ranked, and k chosen, by long-range precision@L/5, as the best single head is chosen.
RANKING_RANGE, RANKING_DIVISOR = "long", 5

#: One training protein as `TopHeadsReadout.fit_pairs` takes it: every head's scores at its ranked pairs
#: ``(pairs, layers × heads)``, their contact labels ``(pairs,)``, and how many top pairs are scored (L/5).
RankedPairs = tuple[np.ndarray, np.ndarray, int]


def ranked_pairs(head_maps: np.ndarray, contacts: np.ma.MaskedArray) -> RankedPairs:
    """A protein's pairs that rank heads (long range, defined label), in the order `contact_precisions` ranks
    them, with every head's score there.

    Parameters
    ----------
    head_maps : ndarray, shape (layers × heads, L, L)
        Each head's contact scores (`head_contact_scores`).
    contacts : masked bool ndarray, shape (L, L)

    Returns
    -------
    RankedPairs
    """
    length = contacts.shape[0]
    low, high = CONTACT_RANGES[RANKING_RANGE]
    i, j = contact_candidates(length, ~np.ma.getmaskarray(contacts), low, high)
    return head_maps[:, i, j].T, contacts.filled(False)[i, j], max(1, length // RANKING_DIVISOR)


def _precision(scores: np.ndarray, labels: np.ndarray, top: int) -> float:
    """`contact_precisions`' precision of one range: NaN without pairs."""
    return precision_at_k(scores, labels, top) if len(scores) else float("nan")


class TopHeadsReadout(BaseEstimator):
    """The mean of the top-k heads' contact scores, heads and k chosen on training proteins.

    Parameters
    ----------
    ks : sequence of int, default TOP_KS
        Numbers of heads tried (capped at the model's heads); the smallest of equally good ones is kept.

    Attributes
    ----------
    n_heads_ : int
        Heads per layer.
    head_precision_ : ndarray of float64, shape (layers, heads)
        Each head's mean training precision (a protein without ranked pairs counts 0, as for the best head).
    ranking_ : ndarray of int, shape (layers × heads,)
        Heads by training precision, best first (flat ``layer × n_heads + head``; ties by position).
    k_precision_ : dict of int to float
        Training precision of the averaged map of the top k heads, for each k tried.
    k_ : int
        The number of heads chosen.
    heads_ : ndarray of int, shape (k_, 2)
        The chosen heads, 0-based ``(layer, head)``, best first.

    Examples
    --------
    >>> readout = TopHeadsReadout().fit(attentions, contact_maps)  # doctest: +SKIP
    >>> scores = readout.predict(attention)  # (L, L)  # doctest: +SKIP
    """

    def __init__(self, ks: Sequence[int] = TOP_KS) -> None:
        self.ks = ks

    def fit(self, attentions: Sequence[np.ndarray], contacts: Sequence[np.ma.MaskedArray]) -> TopHeadsReadout:
        """Rank the heads and choose k on proteins' attention and contact maps.

        Parameters
        ----------
        attentions : sequence of ndarray, each shape (layers, heads, L, L)
        contacts : sequence of masked bool ndarray, each shape (L, L)

        Returns
        -------
        self
        """
        proteins = []
        for attention, contact in zip(attentions, contacts, strict=True):
            layers, heads, length = attention.shape[0], attention.shape[1], attention.shape[-1]
            maps = np.empty((layers * heads, length, length))
            for layer in range(layers):
                for head in range(heads):
                    maps[layer * heads + head] = head_contact_scores(attention[layer, head])
            proteins.append(ranked_pairs(maps, contact))
        return self.fit_pairs(proteins, int(np.shape(attentions[0])[1]))

    def fit_pairs(self, proteins: Sequence[RankedPairs], n_heads: int) -> TopHeadsReadout:
        """Rank the heads and choose k on training proteins' `ranked_pairs`.

        Parameters
        ----------
        proteins : sequence of RankedPairs
        n_heads : int
            Heads per layer (the scores' columns go layer after layer).

        Returns
        -------
        self

        Raises
        ------
        ValueError
            Without training proteins.
        """
        if not proteins:
            raise ValueError("the top-heads readout needs at least one training protein with contacts")
        n_features = proteins[0][0].shape[1]
        per_head = np.array([[_precision(scores[:, h], labels, top) for h in range(n_features)]
                             for scores, labels, top in proteins])  # fmt: skip
        # Summed with NaN as 0 and divided by all proteins: the best single head's score, unchanged.
        totals = np.zeros(n_features)
        for row in per_head:
            totals += np.where(np.isnan(row), 0.0, row)
        head_precision = totals / len(proteins)
        self.n_heads_ = int(n_heads)
        self.head_precision_ = head_precision.reshape(-1, self.n_heads_)
        self.ranking_ = np.argsort(-head_precision, kind="stable")
        self.k_precision_ = {}
        for k in sorted({min(int(k), n_features) for k in self.ks}):
            chosen = self.ranking_[:k]
            values = [_precision(scores[:, chosen].mean(axis=1), labels, top) for scores, labels, top in proteins]
            self.k_precision_[k] = float(sum(0.0 if np.isnan(v) else v for v in values) / len(proteins))
        best = max(self.k_precision_.values())
        self._set_heads(self.ranking_[: min(k for k, v in self.k_precision_.items() if v == best)])
        return self

    @classmethod
    def from_heads(cls, flat: np.ndarray, n_heads: int, **params) -> TopHeadsReadout:
        """A fitted readout of known heads (flat ``layer × n_heads + head``, best first): how `probe`'s ranks
        receive rank 0's fit."""
        readout = cls(**params)
        readout.n_heads_ = int(n_heads)
        readout._set_heads(np.asarray(flat, dtype=np.int64))
        return readout

    def _set_heads(self, flat: np.ndarray) -> None:
        self.flat_heads_ = np.asarray(flat, dtype=np.int64)
        self.k_ = len(self.flat_heads_)
        self.heads_ = np.stack([self.flat_heads_ // self.n_heads_, self.flat_heads_ % self.n_heads_], axis=1)

    def predict_features(self, features: np.ndarray) -> np.ndarray:
        """The mean of the chosen heads' maps from a ``(layers × heads, L, L)`` stack of head contact scores."""
        check_is_fitted(self, "flat_heads_")
        return features[self.flat_heads_].mean(axis=0)

    def predict(self, attention: np.ndarray) -> np.ndarray:
        """Contact scores of one protein from its ``(layers, heads, L, L)`` attention: the mean of the chosen
        heads' `head_contact_scores`."""
        check_is_fitted(self, "flat_heads_")
        maps = [head_contact_scores(attention[layer, head]) for layer, head in self.heads_]
        return np.mean(maps, axis=0)
