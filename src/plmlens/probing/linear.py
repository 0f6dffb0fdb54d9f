"""The linear scorer every probe fits: a standardised logistic regression folded into raw-feature weights."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler


class LinearScorer:
    """A linear scorer on raw features, ``features @ weights + bias``.

    Only the weights and the bias travel between ranks, so every rank scores with exactly the model rank 0
    fitted.

    Parameters
    ----------
    weights : ndarray, shape (n_features,)
        Stored as float64.
    bias : float
    """

    def __init__(self, weights: np.ndarray, bias: float) -> None:
        self.weights = np.asarray(weights, dtype=np.float64)
        self.bias = float(bias)

    @classmethod
    def fit(cls, features: np.ndarray, labels: np.ndarray, seed: int, l1_c: float | None = None) -> LinearScorer:
        """A standardised logistic regression (class-balanced; L1 with liblinear when `l1_c` is given).

        Parameters
        ----------
        features : ndarray, shape (n_examples, n_features)
        labels : ndarray of bool, shape (n_examples,)
            Both classes must occur.
        seed : int
            The solver's random state.
        l1_c : float, optional
            Inverse L1 strength; without it, an L2-regularised class-balanced fit.

        Returns
        -------
        LinearScorer
            Scores ``x · w + b`` on the raw (unstandardised) features.
        """
        scaler = StandardScaler().fit(features)
        if l1_c is None:
            model = LogisticRegression(max_iter=2000, class_weight="balanced", random_state=seed)
        else:
            model = LogisticRegression(l1_ratio=1.0, C=l1_c, solver="liblinear", max_iter=2000, random_state=seed)
        model.fit(scaler.transform(features), labels)
        # Fold the scaling into the weights: score = x · w + b on raw features.
        scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
        return cls(model.coef_[0] / scale, model.intercept_[0] - (scaler.mean_ / scale) @ model.coef_[0])

    def score(self, features: np.ndarray) -> np.ndarray:
        """Log-odds of each row of `features` (``(n, n_features)``)."""
        return features @ self.weights + self.bias

    def to_arrays(self) -> dict[str, np.ndarray]:
        """``w`` and ``b`` as arrays, for `plmlens.distributed.ProcessGroup.broadcast_arrays`."""
        return {"w": self.weights, "b": np.array([self.bias])}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> LinearScorer:
        """The scorer `to_arrays` describes."""
        return cls(arrays["w"], arrays["b"][0])
