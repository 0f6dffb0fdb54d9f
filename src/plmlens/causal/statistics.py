"""Per-head statistics of a head-ablation run: each head's loss increase beside its contact alignment.

`AblationResult.save` records their correlation in ``ablation.json``; the report's ablation figure draws the
same two grids, so both read them from here and agree by construction.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from plmlens.analysis.result import property_grid


def head_correlation(first: np.ndarray, second: np.ndarray) -> tuple[float, float, int]:
    """Pearson and Spearman r between two per-head grids over the heads where both are finite.

    Parameters
    ----------
    first, second : ndarray, shape (layers, heads)

    Returns
    -------
    (float, float, int)
        Pearson r, Spearman r, and the number of heads compared; both r are NaN below 3 heads or when
        either grid is constant over them.
    """
    from scipy import stats

    keep = np.isfinite(first) & np.isfinite(second)
    if keep.sum() < 3 or np.ptp(first[keep]) == 0 or np.ptp(second[keep]) == 0:
        return float("nan"), float("nan"), int(keep.sum())
    return (float(stats.pearsonr(first[keep], second[keep])[0]),
            float(stats.spearmanr(first[keep], second[keep])[0]), int(keep.sum()))  # fmt: skip


def _contact_alignment(heads: pd.DataFrame) -> np.ndarray:
    """The ``contact`` proportion of an analyze run's ``heads.csv`` as a (layers, heads) grid in %, NaN for
    heads with too few high-confidence arcs to say."""
    values, few = property_grid(heads, "contact")
    return np.where(few, np.nan, values * 100)


def loss_and_alignment(
    table: pd.DataFrame, info: dict, contact_heads: pd.DataFrame | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Per head, as (layers, heads) arrays: the loss increase of its single-head ablation, and its contact
    alignment.

    Parameters
    ----------
    table : DataFrame
        An ablation table (``ablation.csv``, `AblationResult.table`).
    info : dict
        The run's summary (``ablation.json``); its ``model`` gives the layers and heads.
    contact_heads : DataFrame, optional
        The ``heads.csv`` of an analyze run of the same model.

    Returns
    -------
    (ndarray, ndarray or None)
        The loss increase (NaN for heads not ablated alone), and with `contact_heads` the contact alignment
        in % of high-confidence attention (NaN for heads with few arcs).
    """
    n_layers, n_heads = int(info["model"]["layers"]), int(info["model"]["heads"])
    rows = table[table["kind"] == "head"]
    increase = np.full((n_layers, n_heads), np.nan)
    increase[rows["layer"].astype(int) - 1, rows["head"].astype(int) - 1] = rows["delta_loss"]
    if contact_heads is None:
        return increase, None
    return increase, _contact_alignment(contact_heads)[:n_layers, :n_heads]


def loss_contact_correlation(
    table: pd.DataFrame, info: dict, contact_heads: pd.DataFrame | None
) -> dict[str, float | int] | None:
    """``{"pearson", "spearman", "n_heads"}`` between the heads' loss increases and their contact alignment
    (see `loss_and_alignment`), or None without an analyze run's ``heads.csv``."""
    increase, alignment = loss_and_alignment(table, info, contact_heads)
    if alignment is None:
        return None
    pearson, spearman, n = head_correlation(increase, alignment)
    return {"pearson": pearson, "spearman": spearman, "n_heads": n}


#: The control groups the top contact group is compared with: ablation kind and how the verdict names them.
CONTROLS = {"random": "random groups", "layer_matched": "layer-matched groups"}


def ablation_groups(table: pd.DataFrame) -> dict[str, dict]:
    """How the random groups of an ablation run spread, per kind, read from the table itself (so that runs
    written before ``info["question"]`` took its current form read the same).

    Parameters
    ----------
    table : DataFrame
        An ablation table (``ablation.csv``, `AblationResult.table`) with ``kind`` and ``delta_loss``.

    Returns
    -------
    dict of str to dict
        For each kind of `CONTROLS` with at least one row: ``n`` (rows), ``finite`` (the finite
        ``delta_loss`` values), ``median``, ``q05`` and ``q95`` of those (NaN when there are none),
        ``heads`` (heads per group, None when the table does not say) and ``as_large`` (groups whose loss
        increase is at least the top contact group's; None without a finite top value).
    """
    top = top_group(table)
    groups = {}
    for kind in CONTROLS:
        rows = table[table["kind"] == kind]
        if rows.empty:
            continue
        values = pd.to_numeric(rows["delta_loss"], errors="coerce").to_numpy(dtype=float)
        finite = values[np.isfinite(values)]
        median, q05, q95 = np.quantile(finite, [0.5, 0.05, 0.95]) if finite.size else (np.nan,) * 3
        sizes = pd.to_numeric(rows.get("n_heads", pd.Series(dtype=float)), errors="coerce").dropna()
        groups[kind] = {
            "n": len(rows), "finite": finite, "median": float(median), "q05": float(q05), "q95": float(q95),
            "heads": int(sizes.iloc[0]) if len(sizes) and sizes.nunique() == 1 else None,
            "as_large": int((finite >= top["delta"]).sum()) if np.isfinite(top["delta"]) else None,
        }  # fmt: skip
    return groups


def top_group(table: pd.DataFrame) -> dict:
    """The top contact group's ``delta``, ``low``, ``high`` (NaN where missing) and ``heads`` (its size, or None)."""
    rows = table[table["kind"] == "top_contact"]

    def value(column: str) -> float:
        number = pd.to_numeric(rows[column], errors="coerce").iloc[0] if len(rows) and column in rows else np.nan
        return float(number) if np.isfinite(number) else np.nan

    size = value("n_heads")
    return {"delta": value("delta_loss"), "low": value("delta_loss_low"), "high": value("delta_loss_high"),
            "heads": int(size) if np.isfinite(size) else None}  # fmt: skip
