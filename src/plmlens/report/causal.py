"""The causal analyses drawn: figures of ``plmlens ablate`` and ``plmlens jacobian``.

`AblationResult.save` and `JacobianResult.save` write data only. The commands then draw ``ablation.png``/``.svg``
and ``jacobian.png``/``.svg`` from the same tables into the same staging folder (`save_ablation_figure`,
`save_jacobian_figure`), so a figure is committed together with the data it shows.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from plmlens.report.figures import ablation_figure, jacobian_figure, save_figure


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


__all__ = ["save_ablation_figure", "save_jacobian_figure"]
