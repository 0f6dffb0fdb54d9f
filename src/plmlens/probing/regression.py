"""ESM's contact regression as a reusable estimator: fit on a few proteins' attention, score any protein.

The same model `probe` fits for its ``contact_regression`` task (an L1 logistic regression over the
symmetrised, APC-corrected attention of every layer and head, Rao et al. 2021), with scikit-learn's
fit/predict conventions, so that ablation and the categorical Jacobian can set their contact maps beside it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from plmlens.probing.metrics import apc, contact_candidates
from plmlens.probing.run import _Linear, _regression_features

#: ESM's regularisation of the contact regression (inverse L1 strength).
REGRESSION_C = 0.15


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
    return _regression_features(attention.reshape(-1, length, length))


def head_contact_scores(attention: np.ndarray) -> np.ndarray:
    """One head's symmetrised, APC-corrected attention (``apc(A + Aᵀ)``), as a contact score map."""
    attention = np.asarray(attention, dtype=np.float64)
    return apc(attention + attention.T)


class ContactRegression:
    """Contacts from attention: an L1 logistic regression over every head's symmetrised APC attention.

    Parameters
    ----------
    C : float
        Inverse L1 strength (ESM's 0.15).
    max_pairs : int
        Training pairs kept (a seeded subsample) to bound memory and fit time on long proteins.
    random_state : int
        Seed of the subsample and of the solver.
    """

    def __init__(self, C: float = REGRESSION_C, max_pairs: int = 200_000, random_state: int = 0) -> None:
        self.C = C
        self.max_pairs = max_pairs
        self.random_state = random_state
        self.model_: _Linear | None = None

    def fit(self, attentions: Sequence[np.ndarray], contacts: Sequence[np.ma.MaskedArray]) -> ContactRegression:
        """Fit on proteins' attention (each ``(layers, heads, L, L)``) and contact maps (masked where undefined).

        Pairs at sequence separation ≥ 6 with a defined label are used, as in `probe`.
        """
        features, labels = [], []
        for attention, contact in zip(attentions, contacts, strict=True):
            defined = ~np.ma.getmaskarray(contact)
            i, j = contact_candidates(contact.shape[0], defined)
            features.append(attention_contact_features(attention)[:, i, j].T)
            labels.append(contact.filled(False)[i, j])
        x, y = np.concatenate(features), np.concatenate(labels).astype(bool)
        if not 0 < y.sum() < len(y):
            raise ValueError("the contact regression needs both contacts and non-contacts among its training pairs")
        keep = np.random.default_rng([self.random_state, 4]).permutation(len(y))[: self.max_pairs]
        self.model_ = _Linear.fit(x[keep], y[keep], self.random_state, l1_c=self.C)
        self.n_heads_ = int(np.shape(attentions[0])[-3])
        return self

    def layer_scores(self, layer: int, attention: np.ndarray) -> np.ndarray:
        """One layer's share of the contact scores (without the intercept), from its ``(heads, L, L)``
        attention: summing the shares of every layer and adding ``intercept_`` gives `predict`, with only one
        layer's attention in memory at a time."""
        if self.model_ is None:
            raise RuntimeError("ContactRegression is not fitted")
        weights = self.model_.weights[layer * self.n_heads_ : (layer + 1) * self.n_heads_]
        if len(weights) != len(attention):
            raise ValueError(f"layer {layer} has {len(attention)} heads; the regression was fitted on {self.n_heads_}")
        return np.einsum("f,fij->ij", weights, attention_contact_features(attention))

    @property
    def intercept_(self) -> float:
        """The regression's intercept (log-odds)."""
        if self.model_ is None:
            raise RuntimeError("ContactRegression is not fitted")
        return self.model_.bias

    def predict(self, attention: np.ndarray) -> np.ndarray:
        """Contact scores (log-odds) of every pair of one protein from its ``(layers, heads, L, L)`` attention."""
        if self.model_ is None:
            raise RuntimeError("ContactRegression is not fitted")
        features = attention_contact_features(attention)
        if features.shape[0] != len(self.model_.weights):
            raise ValueError(f"attention has {features.shape[0]} heads in all, the regression was fitted on "
                             f"{len(self.model_.weights)}")  # fmt: skip
        return np.einsum("f,fij->ij", self.model_.weights, features) + self.model_.bias
