"""What the probes read from one layer: pair features from hidden states or attention, and the contact
regression's symmetrised APC-corrected attention; with the matching whole-map scorers."""

from __future__ import annotations

import numpy as np

from plmlens.probing.linear import LinearScorer
from plmlens.probing.metrics import apc


def pair_embedding_features(hidden: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """TAPE's pairwise features ``[h_i * h_j, h_i - h_j]`` of pairs (i, j): ``(pairs, 2 × width)``."""
    return np.concatenate([hidden[i] * hidden[j], hidden[i] - hidden[j]], axis=1)


def pair_embedding_scores(scorer: LinearScorer, hidden: np.ndarray) -> np.ndarray:
    """Scores of every pair from `pair_embedding_features` without building them, symmetrised as TAPE
    symmetrises its contact head: ``(L, L)``."""
    d = hidden.shape[1]
    w_prod, w_diff = scorer.weights[:d], scorer.weights[d:]
    prod = (hidden * w_prod) @ hidden.T
    diff = (hidden @ w_diff)[:, None] - (hidden @ w_diff)[None, :]
    scores = prod + diff + scorer.bias
    return (scores + scores.T) / 2


def attention_pair_features(attention: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """All heads' attention for pairs (i, j), both directions: ``(pairs, 2 × heads)``."""
    return np.concatenate([attention[:, i, j].T, attention[:, j, i].T], axis=1)


def attention_pair_scores(scorer: LinearScorer, attention: np.ndarray) -> np.ndarray:
    """Scores of every pair from `attention_pair_features` of a ``(heads, L, L)`` attention: ``(L, L)``."""
    heads = attention.shape[0]
    forward = np.einsum("h,hij->ij", scorer.weights[:heads], attention)
    backward = np.einsum("h,hji->ij", scorer.weights[heads:], attention)
    return forward + backward + scorer.bias


def symmetrised_apc(attention: np.ndarray) -> np.ndarray:
    """Symmetrised, APC-corrected attention of every head, ``apc(A + Aᵀ)``: ``(H, L, L)`` in, ``(H, L, L)`` out.
    The contact regression's features (Rao et al. 2021)."""
    return apc(attention + attention.transpose(0, 2, 1))
