"""The paper's figures for any model shape, from the files ``analyze`` and ``probe`` write.

Every function takes tidy frames (``heads.csv``, ``layers.csv``, ``probes.csv``) and returns a matplotlib
figure; `save_figure` writes PNG and SVG. Palettes are colour-blind safe (viridis / cividis, and the
Okabe–Ito colours for lines).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from plmlens.analysis import AMINO_ACIDS, family_members, property_label
from plmlens.analysis.result import MIN_ARCS, blosum62, property_grid
from plmlens.causal.statistics import ablation_groups, top_group
from plmlens.probing.tasks import HEADLINES
from plmlens.proteins import STANDARD_AMINO_ACIDS

OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"]
#: The headline metric of each probe task (figure 5), from the probing tasks.
PROBE_METRICS = {task: headline.metric for task, headline in HEADLINES.items()}

plt.rcParams.update({"font.size": 9, "axes.titlesize": 10, "axes.spines.top": False, "axes.spines.right": False})


def label(name: str) -> str:
    """Readable name of a property (from the property registry: ``aa_P`` → ``Amino acid P``)."""
    return property_label(name)


def figure_stem(kind: str, name: str) -> str:
    """The file stem of a figure of a property or a registered figure (``heads_contact``). Property names
    come from the run's files, so a name that is not plain (a path, dots, spaces, ...) gets a stem from its
    hash instead."""
    if re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,80}", name) and ".." not in name:
        return f"{kind}_{name}"
    return f"{kind}_name-{hashlib.sha256(name.encode('utf-8', 'surrogatepass')).hexdigest()[:12]}"


def fit_text(text: str, width_inches: float, fontsize: float | str) -> str:
    """`text` wrapped at spaces into lines that fit `width_inches` at `fontsize` points.

    A character is taken as 0.6 em wide (DejaVu Sans averages about 0.55 em), so lines err on the short side.
    """
    import textwrap

    size = matplotlib.font_manager.FontProperties(size=fontsize).get_size_in_points()
    columns = max(12, int(width_inches * 72 / (0.6 * size)))
    return "\n".join(textwrap.wrap(text, columns)) if len(text) > columns else text


def _ticks(n: int) -> np.ndarray:
    step = 1 if n <= 16 else 2 if n <= 32 else 4 if n <= 64 else 8
    return np.arange(0, n, step)


def head_heatmap(heads: pd.DataFrame, prop: str, ax_heat=None, ax_bar=None) -> Figure:
    """Per-head proportion (Eq. 1) as a layers × heads heatmap, layers bottom to top, with heads of fewer
    than `MIN_ARCS` high-confidence arcs greyed out, and each layer's maximum as bars beside it (paper
    figures 2, 3, 8–10, 15)."""
    values, few = property_grid(heads, prop)
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
    # Wrapped to the heatmap's width: a one-line title is wider than the axes of a model with few heads.
    ax_heat.set_title(
        fit_text(f"{label(prop)}: % of high-confidence attention (background {100 * background:.1f}%)",
                 fig.get_figwidth() * ax_heat.get_position().width, plt.rcParams["axes.titlesize"])
    )  # fmt: skip
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
        if column == "proportion":
            _positional_markers(ax, x, top)
        ax.axhline(100 * background, color="black", linestyle="--", linewidth=0.8, label="background")
        ax.set_xticks(x, [f"{a}-{b}" for a, b in zip(top["layer"], top["head"], strict=True)], rotation=45)
        ax.set_xlabel("Head (layer-head)")
        ax.set_title(f"{label(prop)}: top {k} heads ({title})")
    axes[0].set_ylabel("% of high-confidence attention")
    axes[0].legend(frameon=False, loc="upper right")
    return fig


#: Markers of the positional nulls of a head, drawn on its bar: what it would score attending only by offset,
#: or only by position.
POSITIONAL_MARKERS = {"offset_null": ("v", "offset-matched null"), "position_null": ("D", "position-matched null")}


def _positional_markers(ax, x: np.ndarray, top: pd.DataFrame) -> None:
    for column, (marker, name) in POSITIONAL_MARKERS.items():
        if column in top.columns and top[column].notna().any():
            ax.scatter(x, 100 * top[column].to_numpy(dtype=float), marker=marker, s=18, color="white",
                       edgecolors="black", linewidths=0.8, zorder=3, label=name)  # fmt: skip


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
    # A figure title wrapped to the figure's width: the axes title was clipped left of the narrow panels.
    fig.suptitle(fit_text("% attention to property, mean over heads (dashed: centre of gravity)",
                          fig.get_figwidth(), plt.rcParams["figure.titlesize"]))  # fmt: skip
    return fig


def probe_curves(probes: pd.DataFrame) -> Figure:
    """Probe score per layer, embedding vs attention probes, one panel per task — figure 5."""
    tasks = [t for t in HEADLINES if t in set(probes["task"])]
    fig, axes = plt.subplots(len(tasks), 1, figsize=(4.5, 1.0 + 1.4 * len(tasks)), sharex=True, squeeze=False,
                             constrained_layout=True)  # fmt: skip
    for ax, task in zip(axes[:, 0], tasks, strict=True):
        rows = probes[(probes["task"] == task) & (probes["metric"] == HEADLINES[task].metric)]
        for representation, colour in (("embedding", OKABE_ITO[1]), ("attention", OKABE_ITO[0])):
            sub = rows[rows["representation"] == representation].sort_values("layer")
            if len(sub):
                ax.plot(sub["layer"], sub["value"], marker="o", markersize=3, color=colour, label=representation)
        chance = rows["chance"].dropna()
        if len(chance):
            ax.axhline(chance.iloc[0], color="grey", linestyle=":", linewidth=1, label="chance")
        ax.set_ylabel(f"{HEADLINES[task].label}\n{HEADLINES[task].metric}")
        ax.legend(frameon=False, fontsize=7, loc="lower right")
    axes[-1, 0].set_xlabel("Layer")
    axes[0, 0].set_title("Probes per layer")
    return fig


def amino_acid_heatmaps(heads: pd.DataFrame) -> Figure:
    """Per-head attention to each amino acid, one small heatmap per amino acid — figures 6, 18, 19."""
    members = family_members(heads["property"], AMINO_ACIDS)
    fig, axes = plt.subplots(4, 5, figsize=(12, 9), constrained_layout=True)
    for ax, prop in zip(axes.flat, members, strict=False):
        values, few = property_grid(heads, prop)
        ax.imshow(np.ma.masked_where(few, values) * 100, cmap="viridis", origin="lower", aspect="auto", vmin=0)
        letter = property_label(prop).removeprefix("Amino acid ")
        ax.set_title(f"{letter} (bg {100 * heads.loc[heads.property == prop, 'background'].iloc[0]:.1f}%)")
        ax.set_xticks([])
        ax.set_yticks([0, values.shape[0] - 1], ["1", str(values.shape[0])])
    for ax in list(axes.flat)[len(members) :]:
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


# Figures comparing several runs: one panel per model, models keep one colour and marker across figures.

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def model_style(index: int) -> dict:
    """Colour, marker and line style of the `index`-th model; after 8 models the colours repeat with
    another line style."""
    return {
        "color": OKABE_ITO[index % len(OKABE_ITO)],
        "marker": MARKERS[index % len(MARKERS)],
        "linestyle": ("-", "--", ":")[(index // len(OKABE_ITO)) % 3],
    }


def _thin_ticks(n: int, max_ticks: int) -> np.ndarray:
    """0-based positions of at most `max_ticks` ticks over `n` cells, at a round step, starting at the first."""
    step = next(
        (s for s in (1, 2, 4, 5, 8, 10, 16, 20, 32, 50, 64, 100) if -(-n // s) <= max_ticks), -(-n // max_ticks)
    )
    return np.arange(0, n, step)


def _panels(n: int, width: float, height: float, max_columns: int) -> tuple[Figure, list]:
    """A figure with `n` panels in rows of at most `max_columns` (unused grid cells removed)."""
    columns = max(1, min(n, max_columns))
    rows = max(1, -(-n // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(width * columns, height * rows), squeeze=False,
                             constrained_layout=True)  # fmt: skip
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.remove()
    return fig, flat[:n]


def _shaped_grid(heads: pd.DataFrame, prop: str, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A property's proportions on a (layers, heads) grid of the given shape, and where heads have few arcs."""
    rows = heads[heads["property"] == prop]
    values = np.full(shape, np.nan)
    few = np.ones(shape, dtype=bool)
    values[rows["layer"] - 1, rows["head"] - 1] = rows["proportion"]
    few[rows["layer"] - 1, rows["head"] - 1] = rows["few_arcs"].astype(bool)
    return values, few


def compare_head_heatmaps(
    heads: dict[str, pd.DataFrame], prop: str, shapes: dict[str, tuple[int, int]], max_columns: int = 2
) -> Figure:
    """One property's per-head proportion (Eq. 1) for several models: one layers × heads panel per model in
    its own shape, on one colour scale (paper figures 2, 3, 8–10, 15).

    Parameters
    ----------
    heads : dict of str to DataFrame
        Model name to its ``heads.csv``, in display order.
    prop : str
        The property.
    shapes : dict of str to (int, int)
        Model name to (layers, heads).
    max_columns : int
        Panels per row.

    Returns
    -------
    Figure
        The first ``len(heads)`` axes are the panels, in order; heads with fewer than `MIN_ARCS`
        high-confidence arcs are grey, and a model without the property's labels gets an empty panel.
    """
    grids = {name: _shaped_grid(frame, prop, shapes[name]) for name, frame in heads.items()}
    shown = [np.where(few, np.nan, values) for values, few in grids.values()]
    top = max((float(np.nanmax(v)) for v in shown if np.isfinite(v).any()), default=0.0)
    norm = matplotlib.colors.Normalize(vmin=0, vmax=100 * top if top > 0 else 1.0)
    fig, axes = _panels(len(grids), 6.0, 3.4, max_columns)
    for ax, (name, (values, few)) in zip(axes, grids.items(), strict=True):
        n_layers, n_heads = values.shape
        rows = heads[name][heads[name]["property"] == prop]
        ax.set_xlabel("Head")
        ax.set_ylabel("Layer")
        if not len(rows):
            ax.set_title(f"{name} ({n_layers} × {n_heads}): not labelled in its data")
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        ax.imshow(np.ma.masked_where(~few, np.ones_like(values)), cmap=matplotlib.colors.ListedColormap(["#d9d9d9"]),
                  origin="lower", aspect="auto", interpolation="nearest")  # fmt: skip
        ax.imshow(np.ma.masked_where(few | ~np.isfinite(values), values) * 100, cmap="viridis", norm=norm,
                  origin="lower", aspect="auto", interpolation="nearest")  # fmt: skip
        x_ticks, y_ticks = _thin_ticks(n_heads, 12), _thin_ticks(n_layers, 8)
        ax.set_xticks(x_ticks, [str(t + 1) for t in x_ticks])
        ax.set_yticks(y_ticks, [str(t + 1) for t in y_ticks])
        background = rows["background"].iloc[0]
        ax.set_title(f"{name} ({n_layers} × {n_heads}), background {100 * background:.1f}%")
        if few.all():
            ax.text(0.5, 0.5, f"no head has ≥ {MIN_ARCS} arcs above θ", transform=ax.transAxes, ha="center",
                    va="center", fontsize=9)  # fmt: skip
    fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap="viridis"), ax=axes, shrink=0.8, pad=0.01,
                 label="% of high-confidence attention")  # fmt: skip
    fig.suptitle(f"{label(prop)}: % of each head's high-confidence attention (grey: < {MIN_ARCS} arcs)")
    return fig


def compare_top_heads(heads: dict[str, pd.DataFrame], prop: str, k: int = 10, max_columns: int = 2) -> Figure:
    """Each model's top-k heads for a property, each head's null-model proportion beside it, Wilson
    intervals and the background (dashed); one panel per model on one y scale (figures 11–13, 16–17).

    Parameters
    ----------
    heads : dict of str to DataFrame
        Model name to its ``heads.csv``, in display order.
    prop : str
    k : int
        Heads per model (among those with at least `MIN_ARCS` arcs).
    max_columns : int
        Panels per row.

    Returns
    -------
    Figure
        The first ``len(heads)`` axes are the panels, each with two bars per head (model, then null).
    """
    tops = {}
    for name, frame in heads.items():
        rows = frame[(frame["property"] == prop) & ~frame["few_arcs"].astype(bool)]
        tops[name] = rows.dropna(subset=["proportion"]).sort_values("proportion", ascending=False).head(k)
    shown = ["ci_high", "proportion", "null_proportion", *POSITIONAL_MARKERS]
    peaks = [100 * t[[c for c in shown if c in t.columns]].max().max() for t in tops.values() if len(t)]
    top = float(np.nanmax(peaks)) if peaks and np.isfinite(peaks).any() else 1.0
    fig, axes = _panels(len(tops), 5.2, 3.0, max_columns)
    width = 0.4
    for ax, (name, rows) in zip(axes, tops.items(), strict=True):
        ax.set_title(name)
        ax.set_ylim(0, 1.08 * top)
        if not len(rows):
            ax.text(0.5, 0.5, f"no head has ≥ {MIN_ARCS} arcs above θ", transform=ax.transAxes, ha="center",
                    va="center", fontsize=9)  # fmt: skip
            ax.set_xticks([])
            continue
        x = np.arange(len(rows))
        centre = 100 * rows["proportion"].to_numpy()
        ax.bar(x - width / 2, centre, width, color=OKABE_ITO[0], label="model")
        low, high = 100 * rows["ci_low"].to_numpy(), 100 * rows["ci_high"].to_numpy()
        ax.errorbar(x - width / 2, centre, yerr=np.clip(np.nan_to_num([centre - low, high - centre]), 0, None),
                    fmt="none", ecolor="black", capsize=2, linewidth=0.8)  # fmt: skip
        _positional_markers(ax, x - width / 2, rows)
        ax.bar(x + width / 2, 100 * rows["null_proportion"].fillna(0).to_numpy(), width, color=OKABE_ITO[1],
               label="null model, same head")  # fmt: skip
        ax.axhline(100 * rows["background"].iloc[0], color="black", linestyle="--", linewidth=0.8, label="background")
        ax.set_xticks(x, [f"{a}-{b}" for a, b in zip(rows["layer"], rows["head"], strict=True)], rotation=45)
        ax.set_xlabel("Head (layer-head)")
        ax.set_ylabel("%")
    handles, labels = next(((ax.get_legend_handles_labels()) for ax in axes if ax.patches), ([], []))
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=3, frameon=False)
    fig.suptitle(f"{label(prop)}: top {k} heads, % of high-confidence attention (Bonferroni-corrected Wilson CI)")
    return fig


def compare_layer_profiles(
    layers: dict[str, pd.DataFrame], properties: list[str], n_layers: dict[str, int], max_columns: int = 3
) -> Figure:
    """Per-layer mean over heads of each property, on a relative-depth axis (layer / number of layers) so
    that models of any depth share one panel: one panel per property, one line per model (figure 4).

    Parameters
    ----------
    layers : dict of str to DataFrame
        Model name to its ``layers.csv``, in display order (which fixes each model's colour).
    properties : list of str
        One panel each, in order.
    n_layers : dict of str to int
        Model name to its number of layers.
    max_columns : int
        Panels per row.

    Returns
    -------
    Figure
        Panels in the order of `properties`; every line is labelled with its model's name.
    """
    fig, axes = _panels(len(properties), 3.8, 2.7, max_columns)
    for ax, prop in zip(axes, properties, strict=True):
        for index, (name, frame) in enumerate(layers.items()):
            rows = frame[(frame["property"] == prop) & (frame["layer"] >= 1)].sort_values("layer")
            if len(rows):
                ax.plot(rows["layer"] / n_layers[name], 100 * rows["mean_proportion"], label=name, markersize=3,
                        linewidth=1.2, **model_style(index))  # fmt: skip
        ax.set_xlim(0, 1.03)
        ax.set_title(label(prop))
        ax.set_xlabel("Relative depth (layer / layers)")
        ax.set_ylabel("% attention, mean over heads")
    _shared_legend(fig, axes, max_columns=4)
    return fig


def compare_centres_of_gravity(centres: pd.DataFrame) -> Figure:
    """Relative centre of gravity (CoG / number of layers) of each property for several models as a dot
    plot: properties sorted by their mean over models, one colour and marker per model (figure 4).

    Parameters
    ----------
    centres : DataFrame
        Columns ``model``, ``property``, ``relative_centre_of_gravity``; models in display order.

    Returns
    -------
    Figure
        One axes; one scatter collection per model, labelled with its name.
    """
    frame = centres.dropna(subset=["relative_centre_of_gravity"])
    order = frame.groupby("property", sort=False)["relative_centre_of_gravity"].mean().sort_values().index.tolist()
    models = list(dict.fromkeys(centres["model"]))
    fig, ax = plt.subplots(figsize=(6.5, 1.2 + 0.38 * max(1, len(order))), constrained_layout=True)
    spread = 0.6 / max(1, len(models))
    for index, name in enumerate(models):
        rows = frame[frame["model"] == name]
        y = [order.index(p) + (index - (len(models) - 1) / 2) * spread for p in rows["property"]]
        style = model_style(index)
        ax.scatter(rows["relative_centre_of_gravity"], y, color=style["color"], marker=style["marker"], s=28,
                   label=name, zorder=3)  # fmt: skip
    ax.set_yticks(range(len(order)), [label(p) for p in order])
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.grid(axis="x", color="#e5e5e5", zorder=0)
    ax.set_xlabel("Relative centre of gravity (CoG / layers)")
    ax.set_title("Where in depth each property is attended to")
    ax.legend(frameon=False, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    return fig


def compare_probe_curves(probes: dict[str, pd.DataFrame], max_columns: int = 3) -> Figure:
    """Probe scores per layer for several models: one panel per model, one colour per task, embedding
    probes solid and attention probes dashed, chance dotted (figure 5). Layer 0, where present, is the
    embedding output.

    Parameters
    ----------
    probes : dict of str to DataFrame
        Model name to its ``probe/probes.csv``, in display order.
    max_columns : int
        Panels per row.

    Returns
    -------
    Figure
        The first ``len(probes)`` axes are the panels; each line is one task and representation.
    """
    fig, axes = _panels(len(probes), 4.4, 3.0, max_columns)
    for ax, (name, frame) in zip(axes, probes.items(), strict=True):
        tasks = [t for t in PROBE_METRICS if t in set(frame["task"])]
        for t, task in enumerate(tasks):
            headline = HEADLINES[task]
            rows = frame[(frame["task"] == task) & (frame["metric"] == headline.metric)]
            for representation, linestyle in (("embedding", "-"), ("attention", "--")):
                sub = rows[rows["representation"] == representation].sort_values("layer")
                if len(sub):
                    line = f"{headline.label}, {headline.metric_label} ({representation})"
                    ax.plot(sub["layer"], sub["value"], color=OKABE_ITO[t], linestyle=linestyle, marker="o",
                            markersize=2.5, label=line)  # fmt: skip
            chance = rows["chance"].dropna()
            if len(chance):
                ax.axhline(chance.iloc[0], color=OKABE_ITO[t], linestyle=":", linewidth=0.8)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True, nbins=8))
        ax.set_ylim(0, 1)
        ax.set_title(name)
        ax.set_xlabel("Layer (0: embedding output)" if (frame["layer"] == 0).any() else "Layer")
        ax.set_ylabel("Score")
    _shared_legend(fig, axes, max_columns=2)
    fig.suptitle("Probes per layer: embedding (solid) and attention (dashed) probes; dotted: chance")
    return fig


__all__ = [
    "MARKERS",
    "MIN_ARCS",
    "PROBE_METRICS",
    "amino_acid_heatmaps",
    "blosum_figure",
    "compare_centres_of_gravity",
    "compare_head_heatmaps",
    "compare_layer_profiles",
    "compare_probe_curves",
    "compare_top_heads",
    "fit_text",
    "head_heatmap",
    "label",
    "layer_profiles",
    "model_style",
    "probe_curves",
    "save_figure",
    "top_heads_figure",
]


def _shared_legend(fig: Figure, axes, max_columns: int) -> None:
    """One legend below the panels for every line any panel labels (each label once)."""
    named = {}
    for ax in axes:
        for handle, name in zip(*ax.get_legend_handles_labels(), strict=True):
            named.setdefault(name, handle)
    if named:
        fig.legend(list(named.values()), list(named), loc="outside lower center", ncols=min(max_columns, len(named)),
                   frameon=False)  # fmt: skip


# Figures of the causal analyses (plmlens ablate, plmlens jacobian).


def _layer_head_axes(ax, n_layers: int, n_heads: int) -> None:
    ax.set_xticks(_ticks(n_heads), [str(t + 1) for t in _ticks(n_heads)])
    ax.set_yticks(_ticks(n_layers), [str(t + 1) for t in _ticks(n_layers)])
    ax.set_xlabel("Head")
    ax.set_ylabel("Layer")


#: The kinds of group that an ablation run draws at random, in display order, with their label and colour.
GROUP_KINDS = {"random": ("random", OKABE_ITO[0]), "layer_matched": ("layer-matched", OKABE_ITO[2])}


def _groups_title(top: dict, groups: dict[str, dict], k: int | None) -> str:
    """The distribution panel's title: what is set against what, with the counts."""
    size = f" of {k} heads" if k else ""
    n = groups.get("random", {}).get("n", 0)
    against = f"{n} random group{'s' if n != 1 else ''}{size}"
    if "layer_matched" in groups:
        against += f" (and {groups['layer_matched']['n']} layer-matched)"
    if not np.isfinite(top["delta"]):
        return f"Δ loss of {against}"
    return f"Top contact heads against {against}"


def group_distribution_panel(ax, table: pd.DataFrame, info: dict, width: float) -> None:
    """Draw the loss increase of every random (and layer-matched) group as a jittered strip over a light
    histogram, one row per kind with its median and 5–95% range, and the top contact group as a vertical line
    with its bootstrap interval as a band.

    Parameters
    ----------
    ax : Axes
        The panel.
    table, info : DataFrame, dict
        The ablation run's table and summary (``ablation.json``; only ``top_contact_heads`` is read, if any).
    width : float
        Width in inches the title is wrapped to.
    """
    groups, top = ablation_groups(table), top_group(table)
    k = top["heads"] or next((g["heads"] for g in groups.values() if g["heads"]), None)
    k = k or ((info.get("top_contact_heads") or {}).get("k") if isinstance(info, dict) else None)
    rng = np.random.default_rng(0)  # the jitter is fixed so that a figure redraws identically
    labelled = False  # the median and range are named once in the legend, by the first kind that has them
    for row, (kind, group) in enumerate(groups.items()):
        colour = GROUP_KINDS[kind][1]
        values = group["finite"]
        if values.size >= 10:
            # A light histogram in the row's band (rows run downwards), scaled to its tallest bin, so the shape
            # reads at a glance; a handful of groups has no shape to show.
            counts, edges = np.histogram(values, bins=min(30, values.size // 4))
            ax.stairs(row + 0.35 - 0.7 * counts / counts.max(), edges, baseline=row + 0.35, fill=True, color=colour,
                      alpha=0.15, linewidth=0)  # fmt: skip
        if values.size:
            ax.scatter(values, row + rng.uniform(-0.3, 0.3, values.size), s=8, color=colour, alpha=0.6,
                       linewidths=0, zorder=2)  # fmt: skip
            ax.hlines(row + 0.47, group["q05"], group["q95"], color="black", linewidth=2,
                      label=None if labelled else "5–95% of the groups", zorder=3)  # fmt: skip
            ax.plot([group["median"]], [row + 0.47], marker="D", markersize=5, color="white", markeredgecolor="black",
                    linestyle="none", label=None if labelled else "median", zorder=4)  # fmt: skip
            labelled = True
    if np.isfinite(top["delta"]):
        if np.isfinite(top["low"]) and np.isfinite(top["high"]):
            ax.axvspan(top["low"], top["high"], color=OKABE_ITO[5], alpha=0.15, linewidth=0,
                       label="top group, 95% bootstrap interval")  # fmt: skip
        ax.axvline(top["delta"], color=OKABE_ITO[5], linewidth=1.8, label="top contact group", zorder=5)
    labels = [f"{GROUP_KINDS[kind][0]}\n({group['n']})" for kind, group in groups.items()]
    ax.set_yticks(np.arange(len(groups)), labels)
    ax.set_ylim(max(len(groups), 1) - 0.35, -0.5)  # the first kind (random) on top
    ax.set_xlabel("Δ loss (nats)")
    ax.grid(axis="x", color="#e5e5e5", zorder=0)
    if ax.get_legend_handles_labels()[0]:
        # Below the panel's x label, where it hides no point: a fixed distance in points, as a fraction of the
        # axes would drift away on tall (many-layer) figures. Constrained layout makes room for it.
        below = matplotlib.transforms.offset_copy(ax.transAxes, fig=ax.figure, y=-30, units="points")
        ax.legend(frameon=False, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, 0), bbox_transform=below,
                  ncols=2)  # fmt: skip
    ax.set_title(fit_text(_groups_title(top, groups, k), width, plt.rcParams["axes.titlesize"]))


def ablation_figure(table: pd.DataFrame, info: dict, contact_heads: pd.DataFrame | None = None) -> Figure:
    """Loss increase of each head's ablation as a layers × heads heatmap, beside the contact-alignment heatmap
    of an analyze run when given (with the correlation of the two over heads), and the top contact heads'
    group against the whole distribution of random (and layer-matched) groups of as many heads
    (`group_distribution_panel`)."""
    from plmlens.causal.statistics import head_correlation, loss_and_alignment

    n_layers, n_heads = int(info["model"]["layers"]), int(info["model"]["heads"])
    increase, alignment = loss_and_alignment(table, info, contact_heads)
    has_groups = table["kind"].isin(["top_contact", *GROUP_KINDS]).any()
    panels = 1 + (contact_heads is not None) + bool(has_groups)
    cell = min(14.0, 2.5 + 0.22 * n_heads)
    fig, axes = plt.subplots(1, panels, figsize=(cell * panels + 0.5, 1.6 + 0.22 * n_layers + 0.8),
                             constrained_layout=True, squeeze=False)  # fmt: skip
    axes = list(axes[0])
    ax = axes.pop(0)
    limit = np.nanmax(np.abs(increase)) if np.isfinite(increase).any() else 1.0
    image = ax.imshow(increase, cmap="RdBu_r", origin="lower", aspect="auto", vmin=-limit, vmax=limit)
    _layer_head_axes(ax, n_layers, n_heads)
    # Titles wrapped to a panel's axes (a panel less its labels and colour bar).
    width = 0.7 * fig.get_figwidth() / panels
    objective = "next-token" if info["model"].get("causal") else "masked-LM"
    ax.set_title(fit_text(f"Loss increase when the head is ablated ({info['mode']}, {objective}, nats)", width,
                          plt.rcParams["axes.titlesize"]))  # fmt: skip
    fig.colorbar(image, ax=ax, label="Δ loss", shrink=0.8, pad=0.01)
    if alignment is not None:
        ax = axes.pop(0)
        image = ax.imshow(np.ma.masked_invalid(alignment), cmap="viridis", origin="lower", aspect="auto", vmin=0)
        _layer_head_axes(ax, n_layers, n_heads)
        pearson, spearman, n = head_correlation(increase, alignment)
        ax.set_title(fit_text(f"Contact alignment, % of high-confidence attention (r = {pearson:.2f}, "
                              f"Spearman {spearman:.2f} with Δ loss over {n} heads)", width,
                              plt.rcParams["axes.titlesize"]))  # fmt: skip
        fig.colorbar(image, ax=ax, label="%", shrink=0.8, pad=0.01)
    if has_groups:
        group_distribution_panel(axes.pop(0), table, info, width)
    return fig


def jacobian_figure(summary: pd.DataFrame) -> Figure:
    """Mean contact precision@L/5 by range of the categorical Jacobian, the contact regression, the best single
    head, the mean of the top-k heads and the positional template (those the summary has), with the chance
    level."""
    rows = summary[summary["k"] == "L/5"].set_index("range")
    ranges = [r for r in ("short", "medium", "long", "all") if r in rows.index]
    methods = [("jacobian", "Categorical Jacobian"), ("regression", "Contact regression (attention)"),
               ("best_head", "Best single head"), ("top_heads", "Top-k heads, mean"),
               ("template", "Positional template")]  # fmt: skip
    methods = [(column, name) for column, name in methods if column in rows.columns]
    fig, ax = plt.subplots(figsize=(6.5, 3.4), constrained_layout=True)
    x = np.arange(len(ranges))
    width = 0.8 / len(methods)
    for k, (column, name) in enumerate(methods):
        ax.bar(
            x + (k - (len(methods) - 1) / 2) * width,
            [rows.loc[r, column] for r in ranges],
            width,
            label=name,
            color=OKABE_ITO[k],
        )
    ax.scatter(x, [rows.loc[r, "chance"] for r in ranges], marker="_", s=400, color="black", label="chance", zorder=3)
    ax.set_xticks(x, ranges)
    ax.set_ylabel("Precision@L/5")
    ax.set_ylim(0, 1)
    ax.set_title("Contacts from the model's output and from its attention")
    ax.legend(frameon=False, fontsize=8, loc="upper left")
    return fig
