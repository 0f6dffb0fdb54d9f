"""The paper's figures for any model shape, from the files ``analyze`` and ``probe`` write.

Every function takes tidy frames (``heads.csv``, ``layers.csv``, ``probes.csv``) and returns a matplotlib
figure; `save_figure` writes PNG and SVG. Palettes are colour-blind safe (viridis / cividis, and the
Okabe–Ito colours for lines).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from plmlens.analysis.result import MIN_ARCS, blosum62
from plmlens.proteins import STANDARD_AMINO_ACIDS

OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"]
LABELS = {
    "contact": "Contact", "contact_short": "Contact (6–11)", "contact_medium": "Contact (12–23)",
    "contact_long": "Contact (≥ 24)", "binding_site": "Binding site", "ptm": "PTM", "helix": "Helix",
    "strand": "Strand", "turn_bend": "Turn/Bend",
}  # fmt: skip

plt.rcParams.update({"font.size": 9, "axes.titlesize": 10, "axes.spines.top": False, "axes.spines.right": False})


def label(prop: str) -> str:
    """Readable name of a property (``aa_P`` → ``Pro (P)``)."""
    if prop.startswith("aa_"):
        return f"Amino acid {prop[3:]}"
    return LABELS.get(prop, prop)


def _grid(heads: pd.DataFrame, prop: str, column: str = "proportion") -> tuple[np.ndarray, np.ndarray]:
    rows = heads[heads["property"] == prop]
    n_layers, n_heads = int(heads["layer"].max()), int(heads["head"].max())
    values = np.full((n_layers, n_heads), np.nan)
    few = np.zeros((n_layers, n_heads), dtype=bool)
    values[rows["layer"] - 1, rows["head"] - 1] = rows[column]
    few[rows["layer"] - 1, rows["head"] - 1] = rows["few_arcs"].astype(bool)
    return values, few


def _ticks(n: int) -> np.ndarray:
    step = 1 if n <= 16 else 2 if n <= 32 else 4 if n <= 64 else 8
    return np.arange(0, n, step)


def head_heatmap(heads: pd.DataFrame, prop: str, ax_heat=None, ax_bar=None) -> Figure:
    """Per-head proportion (Eq. 1) as a layers × heads heatmap, layers bottom to top, with heads of fewer
    than `MIN_ARCS` high-confidence arcs greyed out, and each layer's maximum as bars beside it (paper
    figures 2, 3, 8–10, 15)."""
    values, few = _grid(heads, prop)
    n_layers, n_heads = values.shape
    if ax_heat is None:
        width = min(14.0, 2.5 + 0.22 * n_heads)
        fig, (ax_heat, ax_bar) = plt.subplots(
            1, 2, figsize=(width + 1.5, 1.2 + 0.22 * n_layers + 0.8), gridspec_kw={"width_ratios": [width, 1.5]},
            sharey=True, constrained_layout=True,
        )  # fmt: skip
    else:
        fig = ax_heat.figure
    shown = np.ma.masked_where(few | ~np.isfinite(values), values)
    grey = np.ma.masked_where(~few, np.ones_like(values))
    ax_heat.imshow(grey, cmap=matplotlib.colors.ListedColormap(["#d9d9d9"]), origin="lower", aspect="auto")
    image = ax_heat.imshow(shown * 100, cmap="viridis", origin="lower", aspect="auto", vmin=0)
    ax_heat.set_xticks(_ticks(n_heads), [str(t + 1) for t in _ticks(n_heads)])
    ax_heat.set_yticks(_ticks(n_layers), [str(t + 1) for t in _ticks(n_layers)])
    ax_heat.set_xlabel("Head")
    ax_heat.set_ylabel("Layer")
    background = heads.loc[heads["property"] == prop, "background"].iloc[0]
    ax_heat.set_title(f"{label(prop)}: % of high-confidence attention (background {100 * background:.1f}%)")
    fig.colorbar(image, ax=ax_heat, label="%", shrink=0.8, pad=0.01)
    maxima = np.nanmax(np.where(few, np.nan, values), axis=1, initial=0) * 100
    ax_bar.barh(np.arange(n_layers), maxima, color=OKABE_ITO[0], height=0.7)
    ax_bar.axvline(100 * background, color="black", linestyle="--", linewidth=0.8)
    ax_bar.set_xlabel("Max %")
    ax_bar.tick_params(labelleft=False)
    return fig


def top_heads_figure(heads: pd.DataFrame, prop: str, k: int = 10) -> Figure:
    """Top-k heads with Bonferroni-corrected intervals and the background as a dashed line, beside the
    null model's top-k (paper figures 11–14, 16–17)."""
    rows = heads[(heads["property"] == prop) & ~heads["few_arcs"].astype(bool)]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), sharey=True, constrained_layout=True)
    background = heads.loc[heads["property"] == prop, "background"].iloc[0]
    for ax, column, title in ((axes[0], "proportion", "model"), (axes[1], "null_proportion", "null model")):
        top = rows.dropna(subset=[column]).sort_values(column, ascending=False).head(k)
        x = np.arange(len(top))
        ax.bar(x, 100 * top[column], color=OKABE_ITO[0] if column == "proportion" else OKABE_ITO[1])
        if column == "proportion":
            low, high = 100 * top["ci_low"].to_numpy(), 100 * top["ci_high"].to_numpy()
            centre = 100 * top[column].to_numpy()
            ax.errorbar(x, centre, yerr=np.clip([centre - low, high - centre], 0, None),
                        fmt="none", ecolor="black", capsize=2, linewidth=0.8)  # fmt: skip
        ax.axhline(100 * background, color="black", linestyle="--", linewidth=0.8, label="background")
        ax.set_xticks(x, [f"{a}-{b}" for a, b in zip(top["layer"], top["head"], strict=True)], rotation=45)
        ax.set_xlabel("Head (layer-head)")
        ax.set_title(f"{label(prop)}: top {k} heads ({title})")
    axes[0].set_ylabel("% of high-confidence attention")
    axes[0].legend(frameon=False, loc="upper right")
    return fig


def layer_profiles(layers: pd.DataFrame, centres: dict[str, float], properties: list[str] | None = None) -> Figure:
    """Per-layer mean over heads of every property, sorted by centre of gravity (dashed line) — figure 4."""
    props = [p for p in (properties or list(dict.fromkeys(layers["property"]))) if p in set(layers["property"])]
    props = sorted(props, key=lambda p: np.nan_to_num(centres.get(p, np.nan), nan=1e9))
    n_layers = int(layers["layer"].max())
    fig, axes = plt.subplots(len(props), 1, figsize=(4.5, 0.9 + 1.0 * len(props)), sharex=True, squeeze=False,
                             constrained_layout=True)  # fmt: skip
    for ax, prop in zip(axes[:, 0], props, strict=True):
        rows = layers[layers["property"] == prop].sort_values("layer")
        ax.bar(rows["layer"], 100 * rows["mean_proportion"].fillna(0), color=OKABE_ITO[0], width=0.8)
        if np.isfinite(centres.get(prop, np.nan)):
            ax.axvline(centres[prop], color=OKABE_ITO[5], linestyle="--", linewidth=1)
        ax.set_ylabel(label(prop), rotation=0, ha="right", va="center")
    axes[-1, 0].set_xticks(_ticks(n_layers) + 1)
    axes[-1, 0].set_xlabel("Layer")
    axes[0, 0].set_title("% attention to property, mean over heads (dashed: centre of gravity)")
    return fig


def probe_curves(probes: pd.DataFrame) -> Figure:
    """Probe score per layer, embedding vs attention probes, one panel per task — figure 5."""
    metrics = {"secondary_structure": "f1_macro", "binding_site": "precision_at_L/20", "contact": "precision_at_L/5"}
    tasks = [t for t in metrics if t in set(probes["task"])]
    fig, axes = plt.subplots(len(tasks), 1, figsize=(4.5, 1.0 + 1.4 * len(tasks)), sharex=True, squeeze=False,
                             constrained_layout=True)  # fmt: skip
    for ax, task in zip(axes[:, 0], tasks, strict=True):
        rows = probes[(probes["task"] == task) & (probes["metric"] == metrics[task])]
        for representation, colour in (("embedding", OKABE_ITO[1]), ("attention", OKABE_ITO[0])):
            sub = rows[rows["representation"] == representation].sort_values("layer")
            if len(sub):
                ax.plot(sub["layer"], sub["value"], marker="o", markersize=3, color=colour, label=representation)
        chance = rows["chance"].dropna()
        if len(chance):
            ax.axhline(chance.iloc[0], color="grey", linestyle=":", linewidth=1, label="chance")
        ax.set_ylabel(f"{label(task)}\n{metrics[task]}")
        ax.legend(frameon=False, fontsize=7, loc="lower right")
    axes[-1, 0].set_xlabel("Layer")
    axes[0, 0].set_title("Probes per layer")
    return fig


def amino_acid_heatmaps(heads: pd.DataFrame) -> Figure:
    """Per-head attention to each amino acid, one small heatmap per amino acid — figures 6, 18, 19."""
    letters = [a for a in STANDARD_AMINO_ACIDS if f"aa_{a}" in set(heads["property"])]
    fig, axes = plt.subplots(4, 5, figsize=(12, 9), constrained_layout=True)
    for ax, letter in zip(axes.flat, letters, strict=False):
        values, few = _grid(heads, f"aa_{letter}")
        ax.imshow(np.ma.masked_where(few, values) * 100, cmap="viridis", origin="lower", aspect="auto", vmin=0)
        ax.set_title(f"{letter} (bg {100 * heads.loc[heads.property == f'aa_{letter}', 'background'].iloc[0]:.1f}%)")
        ax.set_xticks([])
        ax.set_yticks([0, values.shape[0] - 1], ["1", str(values.shape[0])])
    for ax in list(axes.flat)[len(letters) :]:
        ax.axis("off")
    fig.suptitle("% of each head's attention to each amino acid (rows: layers, columns: heads)")
    return fig


def blosum_figure(similarity: np.ndarray, r: float) -> Figure:
    """Attention similarity between amino acids beside BLOSUM62, with their correlation — figure 7."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4), constrained_layout=True)
    for ax, matrix, title, cmap in (
        (axes[0], similarity, f"Attention similarity (r with BLOSUM62 = {r:.2f})", "cividis"),
        (axes[1], blosum62(), "BLOSUM62", "cividis"),
    ):
        image = ax.imshow(matrix, cmap=cmap)
        ax.set_xticks(range(20), list(STANDARD_AMINO_ACIDS))
        ax.set_yticks(range(20), list(STANDARD_AMINO_ACIDS))
        ax.set_title(title)
        fig.colorbar(image, ax=ax, shrink=0.8)
    return fig


def save_figure(fig: Figure, stem: str | Path) -> list[Path]:
    """Write `fig` as ``stem.png`` (150 dpi) and ``stem.svg``; returns both paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".svg")]
    for path in paths:
        fig.savefig(path, dpi=150 if path.suffix == ".png" else None)
    plt.close(fig)
    return paths


__all__ = [
    "MIN_ARCS",
    "amino_acid_heatmaps",
    "blosum_figure",
    "head_heatmap",
    "label",
    "layer_profiles",
    "probe_curves",
    "save_figure",
    "top_heads_figure",
]
