"""Metrics and transforms of the probing tasks: precision@k for contacts and sites, F1, APC."""

from __future__ import annotations

import numpy as np

from plmlens.proteins import CONTACT_RANGES


def apc(matrix: np.ndarray) -> np.ndarray:
    """Average product correction of a (..., L, L) matrix (Dunn et al. 2008; as ESM applies it to
    symmetrised attention): ``A_ij - A_i· A_·j / A_··`` with row, column and total sums."""
    rows = matrix.sum(axis=-1, keepdims=True)
    columns = matrix.sum(axis=-2, keepdims=True)
    total = matrix.sum(axis=(-1, -2), keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        correction = np.where(total != 0, rows * columns / np.where(total != 0, total, 1), 0.0)
    return matrix - correction


def precision_at_k(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Share of true labels among the `k` highest scores (ties broken by position); NaN when there is
    nothing to rank. `scores` and `labels` are 1-D over the candidates (pairs or residues)."""
    k = min(int(k), len(scores))
    if k <= 0:
        return float("nan")
    top = np.argsort(-scores, kind="stable")[:k]
    return float(np.asarray(labels, dtype=bool)[top].mean())


def contact_candidates(
    length: int, defined: np.ndarray, min_separation: int = 6, max_separation: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Upper-triangle pairs (i < j) within a separation range whose contact label is defined."""
    i, j = np.triu_indices(length, k=min_separation)
    keep = defined[i, j]
    if max_separation is not None:
        keep &= (j - i) <= max_separation
    return i[keep], j[keep]


def contact_precisions(
    scores: np.ndarray, contacts: np.ma.MaskedArray, divisors: tuple[int, ...] = (1, 2, 5)
) -> dict[tuple[str, int], tuple[float, float]]:
    """Precision@L/x of a contact score map for each range of `CONTACT_RANGES` (and ``all``: ≥ 6).

    Returns ``{(range, x): (precision, chance)}`` where chance is the share of contacts among the ranked
    pairs (the precision of a random ranking).
    """
    length = contacts.shape[0]
    defined = ~np.ma.getmaskarray(contacts)
    values = contacts.filled(False)
    out = {}
    ranges = {**CONTACT_RANGES, "all": (6, None)}
    for name, (low, high) in ranges.items():
        i, j = contact_candidates(length, defined, low, high)
        labels = values[i, j]
        for x in divisors:
            precision = precision_at_k(scores[i, j], labels, max(1, length // x)) if len(i) else float("nan")
            out[(name, x)] = (precision, float(labels.mean()) if len(i) else float("nan"))
    return out


def f1_counts(predicted: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(true positives, false positives, false negatives) of boolean predictions, for streaming F1."""
    predicted, truth = np.asarray(predicted, dtype=bool), np.asarray(truth, dtype=bool)
    return np.array([(predicted & truth).sum(), (predicted & ~truth).sum(), (~predicted & truth).sum()])


def f1_from_counts(counts: np.ndarray) -> float:
    """F1 from (tp, fp, fn); NaN when undefined."""
    tp, fp, fn = (float(c) for c in counts)
    return 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) > 0 else float("nan")
