"""ESM's contact regression as a scikit-learn estimator: fit on a few proteins' attention, score any protein.

The one model behind `probe`'s ``contact_regression`` task, ablation's contact precision and the categorical
Jacobian's attention baseline: an L1 logistic regression over the symmetrised, APC-corrected attention of
every layer and head (Rao et al. 2021).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from plmlens.probing.features import symmetrised_apc
from plmlens.probing.linear import LinearScorer
from plmlens.probing.metrics import apc, contact_candidates, contact_precisions

#: ESM's regularisation of the contact regression: the inverse L1 strength ``C`` (Rao et al. 2021).
REGRESSION_C = 0.15
#: At most this many training pairs (a seeded subsample) are fitted on: bounds memory and fit time on long
#: proteins, where the pairs grow with the square of the length.
REGRESSION_MAX_PAIRS = 200_000
#: Second entry of the subsample's seed (``[random_state, 4]``): a random stream of its own, apart from the
#: streams `probe` draws its training residues and pairs from.
_SUBSAMPLE_STREAM = 4


def attention_contact_features(attention: np.ndarray) -> np.ndarray:
    """Symmetrised, APC-corrected attention of every layer and head.

    Parameters
    ----------
    attention : ndarray, shape (layers, heads, L, L) or (heads, L, L)

    Returns
    -------
    ndarray of float64, shape (layers × heads, L, L)
    """
    attention = np.asarray(attention, dtype=np.float64)
    length = attention.shape[-1]
    return symmetrised_apc(attention.reshape(-1, length, length))


def head_contact_scores(attention: np.ndarray) -> np.ndarray:
    """One head's symmetrised, APC-corrected attention (``apc(A + Aᵀ)``), as a contact score map."""
    attention = np.asarray(attention, dtype=np.float64)
    return apc(attention + attention.T)


def contact_pair_examples(
    attentions: Sequence[np.ndarray], contacts: Sequence[np.ma.MaskedArray]
) -> tuple[np.ndarray, np.ndarray]:
    """Training pairs of proteins: every pair at sequence separation ≥ 6 with a defined contact label.

    Parameters
    ----------
    attentions : sequence of ndarray, each shape (layers, heads, L, L)
    contacts : sequence of masked bool ndarray, each shape (L, L)
        Masked where the label is undefined.

    Returns
    -------
    X : ndarray of float64, shape (pairs, layers × heads)
        `attention_contact_features` at the pairs, protein after protein.
    y : ndarray of bool, shape (pairs,)
    """
    features, labels = [], []
    for attention, contact in zip(attentions, contacts, strict=True):
        defined = ~np.ma.getmaskarray(contact)
        i, j = contact_candidates(contact.shape[0], defined)
        features.append(attention_contact_features(attention)[:, i, j].T)
        labels.append(contact.filled(False)[i, j])
    return np.concatenate(features), np.concatenate(labels)


class ContactRegression(ClassifierMixin, BaseEstimator):
    """Contacts from attention: an L1 logistic regression over every head's symmetrised APC attention.

    A binary classifier of residue pairs (contact or not). `fit` takes proteins (their attention and contact
    maps) and `predict` one protein's attention, returning its map of contact log-odds, as the callers need
    them; `fit_pairs` and `decision_function` are the same model on pair features ``(pairs, layers × heads)``.

    Parameters
    ----------
    C : float, default REGRESSION_C
        Inverse L1 strength (ESM's 0.15).
    max_pairs : int, default REGRESSION_MAX_PAIRS
        Training pairs kept (a seeded subsample) to bound memory and fit time on long proteins.
    random_state : int, default 0
        Seed of the subsample and of the solver.

    Attributes
    ----------
    coef_ : ndarray of float64, shape (layers × heads,)
        Weights on the raw (unstandardised) features, layer after layer.
    intercept_ : float
        The intercept (log-odds).
    classes_ : ndarray of bool
        ``[False, True]``.
    n_features_in_ : int
        Features (layers × heads) seen in fit.
    n_heads_ : int
        Heads per layer (set by `fit`, which sees the attention's shape).

    Examples
    --------
    >>> regression = ContactRegression(random_state=0).fit(attentions, contact_maps)  # doctest: +SKIP
    >>> scores = regression.predict(attention)  # (L, L) log-odds  # doctest: +SKIP
    """

    def __init__(self, C: float = REGRESSION_C, max_pairs: int = REGRESSION_MAX_PAIRS, random_state: int = 0) -> None:
        self.C = C
        self.max_pairs = max_pairs
        self.random_state = random_state

    def fit(self, attentions: Sequence[np.ndarray], contacts: Sequence[np.ma.MaskedArray]) -> ContactRegression:
        """Fit on proteins' attention and contact maps (pairs at separation ≥ 6 with a defined label).

        Parameters
        ----------
        attentions : sequence of ndarray, each shape (layers, heads, L, L)
        contacts : sequence of masked bool ndarray, each shape (L, L)
            Masked where the label is undefined.

        Returns
        -------
        self

        Raises
        ------
        ValueError
            When the training pairs lack contacts or non-contacts.
        """
        self.fit_pairs(*contact_pair_examples(attentions, contacts))
        self.n_heads_ = int(np.shape(attentions[0])[-3])
        return self

    def fit_pairs(self, X: np.ndarray, y: np.ndarray) -> ContactRegression:
        """Fit on pair features, as `contact_pair_examples` makes them.

        Parameters
        ----------
        X : ndarray, shape (pairs, layers × heads)
        y : ndarray of bool, shape (pairs,)

        Returns
        -------
        self

        Raises
        ------
        ValueError
            When `y` lacks contacts or non-contacts.
        """
        y = np.asarray(y).astype(bool)
        if not 0 < y.sum() < len(y):
            raise ValueError("the contact regression needs both contacts and non-contacts among its training pairs")
        keep = np.random.default_rng([self.random_state, _SUBSAMPLE_STREAM]).permutation(len(y))[: self.max_pairs]
        scorer = LinearScorer.fit(X[keep], y[keep], self.random_state, l1_c=self.C)
        self._set_coefficients(scorer.weights, scorer.bias)
        return self

    @classmethod
    def from_coefficients(cls, coef: np.ndarray, intercept: float, **params) -> ContactRegression:
        """A fitted regression with known coefficients (how `probe`'s ranks receive rank 0's fit).

        Parameters
        ----------
        coef : ndarray, shape (layers × heads,)
        intercept : float
        **params
            Hyper-parameters to record (``C``, ``max_pairs``, ``random_state``).
        """
        regression = cls(**params)
        regression._set_coefficients(coef, intercept)
        return regression

    def _set_coefficients(self, coef: np.ndarray, intercept: float) -> None:
        self.coef_ = np.asarray(coef, dtype=np.float64)
        self.intercept_ = float(intercept)
        self.classes_ = np.array([False, True])
        self.n_features_in_ = len(self.coef_)

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Contact log-odds of pair features ``(pairs, layers × heads)``."""
        check_is_fitted(self)
        return np.asarray(X) @ self.coef_ + self.intercept_

    def predict_features(self, features: np.ndarray) -> np.ndarray:
        """Contact log-odds of every pair from a ``(layers × heads, L, L)`` stack of `attention_contact_features`."""
        check_is_fitted(self)
        if features.shape[0] != len(self.coef_):
            raise ValueError(f"attention has {features.shape[0]} heads in all, the regression was fitted on "
                             f"{len(self.coef_)}")  # fmt: skip
        return np.einsum("f,fij->ij", self.coef_, features) + self.intercept_

    def predict(self, attention: np.ndarray) -> np.ndarray:
        """Contact scores (log-odds) of every pair of one protein from its ``(layers, heads, L, L)`` attention."""
        check_is_fitted(self)
        return self.predict_features(attention_contact_features(attention))

    def layer_scores(self, layer: int, attention: np.ndarray) -> np.ndarray:
        """One layer's share of the contact scores (without the intercept), from its ``(heads, L, L)``
        attention: summing the shares of every layer and adding ``intercept_`` gives `predict`, with only one
        layer's attention in memory at a time."""
        check_is_fitted(self, "n_heads_")
        weights = self.coef_[layer * self.n_heads_ : (layer + 1) * self.n_heads_]
        if len(weights) != len(attention):
            raise ValueError(f"layer {layer} has {len(attention)} heads; the regression was fitted on {self.n_heads_}")
        return np.einsum("f,fij->ij", weights, attention_contact_features(attention))

    def score(self, attentions: Sequence[np.ndarray], contacts: Sequence[np.ma.MaskedArray]) -> float:
        """Mean precision@L/5 over proteins, on all pairs at separation ≥ 6 (NaN-skipping).

        Overrides `ClassifierMixin.score` (accuracy), since `predict` gives score maps, not labels.
        """
        check_is_fitted(self)
        precisions = [contact_precisions(self.predict(attention), contact, (5,))[("all", 5)][0]
                      for attention, contact in zip(attentions, contacts, strict=True)]  # fmt: skip
        return float(np.nanmean(precisions))
