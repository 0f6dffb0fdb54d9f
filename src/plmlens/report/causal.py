"""The causal analyses drawn: figures of ``plmlens ablate`` and ``plmlens jacobian``, and a Jacobian's couplings
in 3D.

`AblationResult.save` and `JacobianResult.save` write data only. The commands then draw ``ablation.png``/``.svg``
and ``jacobian.png``/``.svg`` from the same tables into the same staging folder (`save_ablation_figure`,
`save_jacobian_figure`), so a figure is committed together with the data it shows. `coupling_view` draws the
strongest couplings of a saved Jacobian map on a structure like a head's attention (``plmlens show --jacobian``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from plmlens.causal.jacobian import top_couplings
from plmlens.proteins import Protein
from plmlens.report.figures import ablation_figure, jacobian_figure, save_figure
from plmlens.report.view import AttentionView

#: Weakest arc weight of a coupling view: every chosen coupling is drawn, however weak beside the strongest.
COUPLING_MIN_WEIGHT = 1e-3


def save_ablation_figure(
    table: pd.DataFrame, info: dict, directory: str | Path, contact_heads: pd.DataFrame | None = None
) -> list[Path]:
    """Draw `ablation_figure` as ``ablation.png`` and ``ablation.svg`` in `directory`.

    Parameters
    ----------
    table, info : DataFrame, dict
        An ablation run's table and summary (`AblationResult`, or ``ablation.csv`` and ``ablation.json``).
    directory : path
        Where the run's data is written (a staging folder, for the command).
    contact_heads : DataFrame, optional
        The ``heads.csv`` of an analyze run of the same model, drawn beside the loss increases.

    Returns
    -------
    list of Path
        The PNG and the SVG.
    """
    return save_figure(ablation_figure(table, info, contact_heads), Path(directory) / "ablation")


def save_jacobian_figure(summary: pd.DataFrame, directory: str | Path) -> list[Path]:
    """Draw `jacobian_figure` as ``jacobian.png`` and ``jacobian.svg`` in `directory`.

    Parameters
    ----------
    summary : DataFrame
        Mean precisions by range and k (`JacobianResult.summary_table`, ``jacobian_summary.csv``).
    directory : path
        Where the run's data is written (a staging folder, for the command).

    Returns
    -------
    list of Path
        The PNG and the SVG.
    """
    return save_figure(jacobian_figure(summary), Path(directory) / "jacobian")


def coupling_view(protein: Protein, coupling: np.ndarray, model_name: str, top: int | None = None) -> AttentionView:
    """The strongest couplings of a Jacobian contact map drawn on the protein's structure like a head's
    attention: an arc's weight is its coupling over the strongest one's.

    Parameters
    ----------
    protein : Protein
        The protein the map was computed on, with coordinates; at least as long as the map.
    coupling : ndarray, shape (L, L)
        Its contact score map (`read_jacobian_maps`); a map of a truncated protein covers its first residues.
    model_name : str
        For the title.
    top : int, optional
        Couplings drawn (`top_couplings`: default L, at sequence separation ≥ 6).

    Returns
    -------
    AttentionView
    """
    n = coupling.shape[0]
    rows, columns = top_couplings(coupling, top)
    weights = np.zeros((n, n))
    if len(rows):
        strongest = coupling[rows, columns]
        largest = max(float(strongest.max()), 1e-12)
        weights[rows, columns] = np.clip(strongest / largest, COUPLING_MIN_WEIGHT, 1.0)
    title = f"{model_name}: categorical Jacobian, top {len(rows)} couplings on {protein.id}"
    return AttentionView(protein.first(n), weights, title, min_weight=COUPLING_MIN_WEIGHT)


__all__ = ["COUPLING_MIN_WEIGHT", "coupling_view", "save_ablation_figure", "save_jacobian_figure"]
