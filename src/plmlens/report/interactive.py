"""The interactive part of ``report.html``: clickable head heatmaps, a head's statistics and its attention on
example proteins in 3D.

`clickable_heatmap` lays a grid of buttons (one per head) over a heatmap image; a click dispatches the
``plmlens:head`` event (``detail = {key, layer, head}``) on ``document``, so any page (``compare.html``
too) can reuse it by including the ``head_click.html`` template and listen for the event.
`ExampleCollector` picks, for every head, the proteins where it has the most arcs above θ and keeps their
attention compactly (float16 arcs above a minimum weight, base64 in the page); `explorer_html` shows the
clicked head's statistics and draws its arcs on the chosen protein with NGL. The markup comes from the
``macros.html`` and ``explorer.html`` templates (autoescaping); the explorer's script inserts data as text.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from markupsafe import Markup

from plmlens.analysis import property_family
from plmlens.proteins import Protein
from plmlens.report.figures import label
from plmlens.report.html import Picture, macro
from plmlens.report.numbers import fmt_number
from plmlens.report.view import marked_chain_pdb


@dataclass(frozen=True)
class HeatmapPanel:
    """Where a layers × heads heatmap lies in its figure image.

    Parameters
    ----------
    key : str
        Sent with each click (e.g. the property, or the model's name in a comparison).
    n_layers, n_heads : int
    box : tuple of float
        ``(left, bottom, width, height)`` of the heatmap's axes as fractions of the figure, as
        ``Axes.get_position()`` gives them after the figure was drawn or saved (not with ``bbox_inches``).
    """

    key: str
    n_layers: int
    n_heads: int
    box: tuple[float, float, float, float]


def panel_of(ax, key: str, n_layers: int, n_heads: int) -> HeatmapPanel:
    """The `HeatmapPanel` of a heatmap's axes (call after the figure was saved, when the layout is final)."""
    position = ax.get_position()
    return HeatmapPanel(key, n_layers, n_heads, (position.x0, position.y0, position.width, position.height))


def clickable_heatmap(png: bytes, alt: str, panels: list[HeatmapPanel]) -> Markup:
    """A heatmap figure whose cells are buttons (layer 1 at the bottom, as ``origin="lower"`` draws it).

    Parameters
    ----------
    png : bytes
        The figure as PNG, saved without ``bbox_inches`` so that `panels` fractions hold.
    alt : str
    panels : list of HeatmapPanel
        One per heatmap axes in the figure.

    Returns
    -------
    Markup
        HTML; include the ``head_click.html`` template once per page for the clicks to dispatch
        ``plmlens:head``.
    """
    picture = Picture(alt, base64.b64encode(png).decode("ascii"))
    return macro("macros.html", "clickable_heatmap")(picture, panels)


@dataclass
class Example:
    """One candidate protein and its attention: off-diagonal arcs of every head at or above a minimum weight.

    Attributes
    ----------
    protein : Protein
        The residues the model saw (e.g. the variable domain, truncated to the model's length limit).
    counts : ndarray of int, shape (layers * heads,)
        Per head (``(layer - 1) * heads + head - 1``), the off-diagonal arcs above θ.
    head, i, j : ndarray of uint16
        Arcs sorted by head: flat head index, attending and attended residue.
    w : ndarray of float16
        Arc weights.
    """

    protein: Protein
    counts: np.ndarray
    head: np.ndarray
    i: np.ndarray
    j: np.ndarray
    w: np.ndarray

    def offsets(self, n_heads_total: int) -> np.ndarray:
        """``offsets[h]:offsets[h + 1]`` are head ``h``'s arcs (int32, length ``n_heads_total + 1``)."""
        return np.concatenate([[0], np.cumsum(np.bincount(self.head, minlength=n_heads_total))]).astype("<i4")

    def encoded(self, n_heads_total: int) -> dict[str, str]:
        """The arcs as base64 little-endian arrays: ``offsets`` int32, ``i``/``j`` uint16, ``w`` float16."""
        arrays = {"offsets": self.offsets(n_heads_total), "i": self.i.astype("<u2"), "j": self.j.astype("<u2"),
                  "w": self.w.astype("<f2")}  # fmt: skip
        return {name: base64.b64encode(array.tobytes()).decode("ascii") for name, array in arrays.items()}


@dataclass
class ExampleSet:
    """The example proteins kept for a report and, per head, its best proteins (most arcs above θ first).

    Attributes
    ----------
    n_layers, n_heads : int
    theta : float
        Arcs above it are counted.
    min_weight : float
        Lighter arcs were not kept.
    examples : list of Example
    top : list of list of int
        Per flat head index, indices into `examples`.
    """

    n_layers: int
    n_heads: int
    theta: float
    min_weight: float
    examples: list[Example] = field(default_factory=list)
    top: list[list[int]] = field(default_factory=list)

    def to_json(self) -> dict:
        """What the page needs: per protein its structure (residues not analysed marked), CA coordinates
        of the analysed residues, arc counts and encoded arcs."""
        proteins = []
        for example in self.examples:
            protein = example.protein
            pdb, representation = marked_chain_pdb(protein)
            ca = np.where(np.isfinite(protein.ca), protein.ca, np.nan).round(2)
            proteins.append({
                "id": protein.id, "pdb": pdb, "repr": representation, "sequence": protein.sequence,
                "ids": protein.residue_ids, "ca": [None if not np.isfinite(v).all() else v.tolist() for v in ca],
                "analysed": analysed_text(protein), "counts": example.counts.tolist(),
                "arcs": example.encoded(self.n_layers * self.n_heads),
            })  # fmt: skip
        return {"layers": self.n_layers, "heads": self.n_heads, "theta": self.theta, "minWeight": self.min_weight,
                "proteins": proteins, "top": self.top}  # fmt: skip


def analysed_text(protein: Protein) -> str:
    """Which residues were analysed, in words (e.g. "residues 1–107, the variable domain")."""
    ids = protein.residue_ids
    domain = ", the variable domain" if protein.meta.get("variable_domain") else ""
    return f"chain {protein.chain or '?'}, residues {ids[0]}–{ids[-1]}: {len(protein)} residues{domain}"


class ExampleCollector:
    """Counts each head's arcs above θ on candidate proteins, layer by layer, and keeps their arcs at or
    above `min_weight` sparsely, so that memory does not hold whole attention maps.

    Parameters
    ----------
    n_layers, n_heads : int
    theta : float
    min_weight : float
    """

    def __init__(self, n_layers: int, n_heads: int, theta: float, min_weight: float = 0.05) -> None:
        self.n_layers, self.n_heads, self.theta, self.min_weight = n_layers, n_heads, theta, min_weight
        self._proteins: dict[object, Protein] = {}
        self._counts: dict[object, np.ndarray] = {}
        self._weights: dict[object, np.ndarray] = {}
        self._arcs: dict[object, list[tuple[np.ndarray, ...]]] = {}

    def add(self, protein: Protein, layer: int, attention: np.ndarray, key: object = None) -> None:
        """One layer's attention of one protein.

        Parameters
        ----------
        protein : Protein
            Already cut to the residues `attention` covers.
        layer : int
            0-based.
        attention : ndarray, shape (heads, L, L)
        key : hashable, optional
            What tells this protein from the others, e.g. its position in the source (default its id; give
            positions where ids may repeat).
        """
        n = len(protein)
        if n > np.iinfo(np.uint16).max:
            raise ValueError(f"{protein.id}: {n} residues do not fit the uint16 arc indices")
        attention = np.asarray(attention, dtype=np.float32)[:, :n, :n].copy()
        # Self-attention draws no arc, so it neither counts nor is kept.
        attention[:, np.arange(n), np.arange(n)] = 0.0
        key = protein.id if key is None else key
        if key not in self._proteins:
            self._proteins[key] = protein
            self._counts[key] = np.zeros(self.n_layers * self.n_heads, dtype=np.int64)
            self._weights[key] = np.zeros(self.n_layers * self.n_heads, dtype=np.float64)
            self._arcs[key] = []
        flat = slice(layer * self.n_heads, (layer + 1) * self.n_heads)
        self._counts[key][flat] = (attention > self.theta).sum(axis=(1, 2))
        # The tie-break: a head with no arc above θ on any candidate (a sparse head such as one that attends
        # contacts) still gets the protein where it draws the most, not merely the first one.
        self._weights[key][flat] = np.where(attention >= self.min_weight, attention, 0).sum(axis=(1, 2))
        head, i, j = np.nonzero(attention >= self.min_weight)
        self._arcs[key].append(
            ((head + layer * self.n_heads).astype(np.uint16), i.astype(np.uint16), j.astype(np.uint16),
             attention[head, i, j].astype(np.float16))
        )  # fmt: skip

    def select(self, per_head: int = 3) -> ExampleSet:
        """For every head its `per_head` proteins with the most arcs above θ (ties, e.g. none above θ: more
        attention in arcs at or above `min_weight`); the proteins chosen by any head are kept once."""
        ids = list(self._proteins)
        result = ExampleSet(self.n_layers, self.n_heads, self.theta, self.min_weight)
        if not ids:
            return result
        counts = np.stack([self._counts[p] for p in ids])  # (proteins, heads)
        weights = np.stack([self._weights[p] for p in ids])
        order = np.lexsort((-weights, -counts), axis=0)[:per_head]  # (per_head, heads), best first
        kept: dict[int, int] = {}
        for head in range(counts.shape[1]):
            picks = []
            for candidate in order[:, head].tolist():
                if candidate not in kept:
                    kept[candidate] = len(kept)
                picks.append(kept[candidate])
            result.top.append(picks)
        for candidate in sorted(kept, key=kept.get):
            parts = self._arcs[ids[candidate]]
            arrays = [np.concatenate([part[k] for part in parts]) for k in range(4)]
            order_by_head = np.argsort(arrays[0], kind="stable")
            head, i, j, w = (array[order_by_head] for array in arrays)
            result.examples.append(Example(self._proteins[ids[candidate]], counts[candidate], head, i, j, w))
        return result


STAT_COLUMNS = ("n_arcs", "proportion", "ci_low", "ci_high", "background", "null_proportion", "boot_ci_low",
                "boot_ci_high", "p_bonferroni", "significant", "few_arcs")  # fmt: skip


def head_statistics(heads: pd.DataFrame, n_layers: int, n_heads: int) -> dict:
    """Every property's statistics per head from ``heads.csv``: ``{prop: {column: [value per flat head]}}``,
    values rounded to 4 significant digits (the page shows 3) and None where missing."""
    out = {}
    names = list(dict.fromkeys(heads["property"]))
    structural = [p for p in names if property_family(p) is None]
    grouped = sorted(p for p in names if property_family(p) is not None)
    for prop in structural + grouped:
        rows = heads[heads["property"] == prop]
        flat = ((rows["layer"] - 1) * n_heads + rows["head"] - 1).to_numpy()
        columns = {}
        for column in STAT_COLUMNS:
            if column not in rows:
                continue
            values: list = [None] * (n_layers * n_heads)
            for index, value in zip(flat.tolist(), rows[column].tolist(), strict=True):
                if isinstance(value, bool | np.bool_):
                    values[index] = bool(value)
                elif value is not None and np.isfinite(value):
                    values[index] = float(f"{value:.4g}")
            columns[column] = values
        out[prop] = columns
    return out


def explorer_context(
    heads: pd.DataFrame,
    n_layers: int,
    n_heads: int,
    initial: tuple[int, int],
    examples: ExampleSet | None,
    note: str | None = None,
    draw_weight: float = 0.1,
) -> dict:
    """What the ``explorer`` macro of ``explorer.html`` draws (see `explorer_html` for the parameters): the
    data its script reads, the arc weights offered, the note and the numbers shown beside the 3D view."""
    data = {"layers": n_layers, "heads": n_heads, "initial": list(initial),
            "labels": {p: label(p) for p in dict.fromkeys(heads["property"])},
            "stats": head_statistics(heads, n_layers, n_heads),
            "examples": examples.to_json() if examples is not None and examples.examples else None}  # fmt: skip
    weights = sorted({draw_weight, 0.05, 0.1, 0.2, 0.3} | ({examples.min_weight} if examples else set()))
    if examples is not None:
        weights = [w for w in weights if w >= examples.min_weight]
    return {
        "data": data,
        "weights": [{"value": w, "selected": w == draw_weight, "text": fmt_number(w)} for w in weights],
        "per_head": len(examples.top[0]) if examples is not None and examples.top else 0,
        "theta": fmt_number(examples.theta) if examples is not None else "–",
        "note": note or "no example proteins",
    }


def explorer_html(
    heads: pd.DataFrame,
    n_layers: int,
    n_heads: int,
    initial: tuple[int, int],
    examples: ExampleSet | None,
    note: str | None = None,
    draw_weight: float = 0.1,
) -> Markup:
    """The head explorer: statistics of the clicked head for all properties and, with `examples`, its
    attention on a chosen example protein in 3D (NGL must be on the page).

    Parameters
    ----------
    heads : DataFrame
        ``heads.csv``.
    n_layers, n_heads : int
    initial : (int, int)
        The head shown first (1-based layer, head).
    examples : ExampleSet or None
        Without it, `note` replaces the 3D view.
    note : str, optional
        Why there is no 3D view.
    draw_weight : float
        Arcs lighter than this are hidden at first (the page offers other weights down to the kept minimum).
    """
    context = explorer_context(heads, n_layers, n_heads, initial, examples, note, draw_weight)
    return macro("explorer.html", "explorer")(context)
