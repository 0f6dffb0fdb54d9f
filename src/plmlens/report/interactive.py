"""The interactive part of ``report.html``: clickable head heatmaps, a head's statistics and its attention on
example proteins in 3D.

`clickable_heatmap` lays a grid of buttons (one per head) over a heatmap image; a click dispatches the
``plmlens:head`` event (``detail = {key, layer, head}``) on ``document``, so any page (``compare.html``
too) can reuse it with `HEAD_CLICK_SCRIPT` and listen for the event. `ExampleCollector` picks, for every
head, the proteins where it has the most arcs above θ and keeps their attention compactly (float16 arcs
above a minimum weight, base64 in the page); `explorer_html` shows the clicked head's statistics and draws
its arcs on the chosen protein with NGL.
"""

from __future__ import annotations

import base64
import html
import json
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from plmlens.proteins import Protein
from plmlens.report.figures import label
from plmlens.report.view import marked_chain_pdb


def fmt_number(value: object, digits: int = 3) -> str:
    """`digits` significant digits, "–" for a missing value."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)) or value is pd.NA:
        return "–"
    return f"{float(value):.{digits}g}"


def fmt_percent(value: object) -> str:
    """A share (0–1) as a percentage with one decimal."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)) or value is pd.NA:
        return "–"
    return f"{100 * float(value):.1f}%"


def fmt_p(value: object) -> str:
    """A p-value in scientific notation with two significant digits."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)) or value is pd.NA:
        return "–"
    return f"{float(value):.1e}"


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


def clickable_heatmap(png: bytes, alt: str, panels: list[HeatmapPanel]) -> str:
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
    str
        HTML; include `HEAD_CLICK_SCRIPT` once per page for the clicks to dispatch ``plmlens:head``.
    """
    data = base64.b64encode(png).decode("ascii")
    grids = []
    for panel in panels:
        left, bottom, width, height = panel.box
        cells = "".join(
            f'<button class="cell" data-key="{html.escape(panel.key)}" data-layer="{layer}" data-head="{head}" '
            f'title="{html.escape(panel.key)}: head {layer}-{head}"></button>'
            for layer in range(panel.n_layers, 0, -1)
            for head in range(1, panel.n_heads + 1)
        )
        grids.append(
            f'<div class="cells" style="left:{100 * left:.3f}%;top:{100 * (1 - bottom - height):.3f}%;'
            f"width:{100 * width:.3f}%;height:{100 * height:.3f}%;grid-template-columns:repeat({panel.n_heads},1fr);"
            f'grid-template-rows:repeat({panel.n_layers},1fr)">{cells}</div>'
        )
    return (
        f'<figure class="clickable"><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'
        f"{''.join(grids)}</figure>"
    )


HEAD_CLICK_SCRIPT = """<style>
figure.clickable { position: relative; display: inline-block; margin: 0.5em 0; }
figure.clickable img { display: block; }
.cells { position: absolute; display: grid; }
.cells .cell { border: 0; padding: 0; margin: 0; background: transparent; cursor: pointer; }
.cells .cell:hover { outline: 1px solid #fff; }
.cells .cell.selected { outline: 2px solid #d55e00; z-index: 1; }
button.head-link { border: 0; background: none; color: #0072b2; cursor: pointer; text-decoration: underline; }
</style>
<script>
// Any element with data-layer and data-head (heatmap cells, table links) selects that head on click.
document.addEventListener("click", function (event) {
  const target = event.target.closest("[data-layer][data-head]");
  if (!target || target.closest("#explorer")) { return; }
  document.dispatchEvent(new CustomEvent("plmlens:head", { detail: {
    key: target.dataset.key || "", layer: Number(target.dataset.layer), head: Number(target.dataset.head) } }));
});
document.addEventListener("plmlens:head", function (event) {
  const d = event.detail;
  document.querySelectorAll(".cells .cell.selected").forEach((c) => c.classList.remove("selected"));
  // A comparison (data-head-scope="key") selects the head in its own model's panels only.
  const scope = document.body.dataset.headScope === "key" ? `[data-key="${CSS.escape(d.key)}"]` : "";
  document.querySelectorAll(`.cells .cell${scope}[data-layer="${d.layer}"][data-head="${d.head}"]`)
    .forEach((c) => c.classList.add("selected"));
});
</script>"""


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
        self._proteins: dict[str, Protein] = {}
        self._counts: dict[str, np.ndarray] = {}
        self._weights: dict[str, np.ndarray] = {}
        self._arcs: dict[str, list[tuple[np.ndarray, ...]]] = {}

    def add(self, protein: Protein, layer: int, attention: np.ndarray) -> None:
        """One layer's attention of one protein.

        Parameters
        ----------
        protein : Protein
            Already cut to the residues `attention` covers.
        layer : int
            0-based.
        attention : ndarray, shape (heads, L, L)
        """
        n = len(protein)
        if n > np.iinfo(np.uint16).max:
            raise ValueError(f"{protein.id}: {n} residues do not fit the uint16 arc indices")
        attention = np.asarray(attention, dtype=np.float32)[:, :n, :n].copy()
        # Self-attention draws no arc, so it neither counts nor is kept.
        attention[:, np.arange(n), np.arange(n)] = 0.0
        if protein.id not in self._proteins:
            self._proteins[protein.id] = protein
            self._counts[protein.id] = np.zeros(self.n_layers * self.n_heads, dtype=np.int64)
            self._weights[protein.id] = np.zeros(self.n_layers * self.n_heads, dtype=np.float64)
            self._arcs[protein.id] = []
        flat = slice(layer * self.n_heads, (layer + 1) * self.n_heads)
        self._counts[protein.id][flat] = (attention > self.theta).sum(axis=(1, 2))
        # The tie-break: a head with no arc above θ on any candidate (a sparse head such as one that attends
        # contacts) still gets the protein where it draws the most, not merely the first one.
        self._weights[protein.id][flat] = np.where(attention >= self.min_weight, attention, 0).sum(axis=(1, 2))
        head, i, j = np.nonzero(attention >= self.min_weight)
        self._arcs[protein.id].append(
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
    structural = [p for p in dict.fromkeys(heads["property"]) if not str(p).startswith("aa_")]
    amino_acids = sorted(p for p in set(heads["property"]) if str(p).startswith("aa_"))
    for prop in structural + amino_acids:
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


def explorer_html(
    heads: pd.DataFrame,
    n_layers: int,
    n_heads: int,
    initial: tuple[int, int],
    examples: ExampleSet | None,
    note: str | None = None,
    draw_weight: float = 0.1,
) -> str:
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
    data = {"layers": n_layers, "heads": n_heads, "initial": list(initial),
            "labels": {p: label(p) for p in set(heads["property"])},
            "stats": head_statistics(heads, n_layers, n_heads),
            "examples": examples.to_json() if examples is not None and examples.examples else None}  # fmt: skip
    weights = sorted({draw_weight, 0.05, 0.1, 0.2, 0.3} | ({examples.min_weight} if examples else set()))
    if examples is not None:
        weights = [w for w in weights if w >= examples.min_weight]
    options = "".join(
        f'<option value="{w}"{" selected" if w == draw_weight else ""}>{fmt_number(w)}</option>' for w in weights
    )
    if data["examples"] is not None:
        structure = (
            f'<p class="note">Proteins: the {len(examples.top[0]) if examples.top else 0} examples where this head has '
            f"the most arcs above θ = {fmt_number(examples.theta)} (of the candidates run). "
            "Analysed residues are dark grey, the rest of the chain (not seen by the model) is faded; line width ∝ "
            "weight; the most attended residues are labelled.</p>"
            '<p><label>Protein <select id="explorer-protein"></select></label> '
            f'<label>Arcs with weight ≥ <select id="explorer-weight">{options}</select></label></p>'
            '<p id="explorer-status" class="note" data-head="" data-protein="" data-arcs="">no head selected</p>'
            '<div class="stage" id="explorer-stage"></div>'
        )
    else:
        reason = html.escape(note or "no example proteins")
        structure = f'<p class="note" id="explorer-status" data-head="" data-arcs="">No 3D view: {reason}.</p>'
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    return (
        '<section id="explorer"><h2>Head explorer</h2>'
        '<p class="note">Click a head in any heatmap below (or a head in a table) to see its statistics and its '
        "attention on example proteins.</p>"
        f'<div class="explorer-body"><div>{structure}</div>'
        '<div><h3 id="explorer-title"></h3><div id="explorer-stats"></div></div></div></section>'
        f'<script type="application/json" id="explorer-data">{payload}</script>'
        f"<script>{EXPLORER_SCRIPT}</script>"
    )


EXPLORER_SCRIPT = """
(function () {
  const D = JSON.parse(document.getElementById("explorer-data").textContent);
  const E = D.examples;
  const fmt = (v) => (v === null || v === undefined ? "–" : String(Number(v.toPrecision(3))));
  const pct = (v) => (v === null || v === undefined ? "–" : (100 * v).toFixed(1) + "%");
  const sci = (v) => (v === null || v === undefined ? "–" : v.toExponential(1).replace(/e([+-])(\\d)$/, "e$10$2"));
  const state = { layer: D.initial[0], head: D.initial[1], protein: 0, weight: 0.1 };
  function statsTable(flat) {
    const rows = Object.entries(D.stats).map(([prop, c]) => {
      const get = (name) => (c[name] ? c[name][flat] : null);
      const enrichment = get("proportion") !== null && get("background") ? get("proportion") / get("background") : null;
      return `<tr><th>${D.labels[prop] || prop}</th><td>${get("n_arcs") === null ? "–" : get("n_arcs")}</td>` +
        `<td>${pct(get("proportion"))}</td><td>${pct(get("ci_low"))} – ${pct(get("ci_high"))}</td>` +
        `<td>${pct(get("background"))}</td><td>${fmt(enrichment)}</td><td>${pct(get("null_proportion"))}</td>` +
        `<td>${pct(get("boot_ci_low"))} – ${pct(get("boot_ci_high"))}</td><td>${sci(get("p_bonferroni"))}</td>` +
        `<td>${get("significant") ? "yes" : "no"}${get("few_arcs") ? " (few arcs)" : ""}</td></tr>`;
    });
    const header = "<tr><th>property</th><th>arcs</th><th>proportion</th><th>95% CI (Bonferroni)</th>" +
      "<th>background</th><th>enrichment</th><th>null model</th><th>bootstrap CI</th><th>p (Bonferroni)</th>" +
      "<th>significant</th></tr>";
    const props = Object.keys(D.stats);
    const main = rows.filter((_, k) => !props[k].startsWith("aa_"));
    const aa = rows.filter((_, k) => props[k].startsWith("aa_"));
    // Amino acids fold away so that the structure stays in view beside the structural properties.
    return "<table>" + header + main.join("") + "</table>" + (aa.length ?
      "<details><summary>Amino acids</summary><table>" + header + aa.join("") + "</table></details>" : "");
  }
  function decode(text, Type) {
    const bytes = Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
    return new Type(bytes.buffer);
  }
  function half(h) {
    const sign = h & 0x8000 ? -1 : 1, exponent = (h >> 10) & 0x1f, fraction = h & 0x3ff;
    if (exponent === 0) { return sign * Math.pow(2, -14) * (fraction / 1024); }
    if (exponent === 31) { return fraction ? NaN : sign * Infinity; }
    return sign * Math.pow(2, exponent - 15) * (1 + fraction / 1024);
  }
  const decoded = {};
  function arcsOf(index) {
    if (!decoded[index]) {
      const a = E.proteins[index].arcs;
      decoded[index] = { offsets: decode(a.offsets, Int32Array), i: decode(a.i, Uint16Array),
                         j: decode(a.j, Uint16Array), w: decode(a.w, Uint16Array) };
    }
    return decoded[index];
  }
  let stage = null, shapeComponent = null;
  const components = {};
  function structure(index) {
    if (!components[index]) {
      const p = E.proteins[index];
      const scheme = NGL.ColormakerRegistry.addScheme(function () {
        // B-factor 1 marks the residues the model saw (see marked_chain_pdb).
        this.atomColor = (atom) => (atom.bfactor > 0.5 ? 0x8c8c8c : 0xe8e8e8);
      });
      components[index] = stage.loadFile(new Blob([p.pdb], { type: "text/plain" }), { ext: "pdb" })
        .then(function (component) {
          component.addRepresentation(p.repr, { color: scheme });
          return component;
        });
    }
    return components[index];
  }
  function draw() {
    const status = document.getElementById("explorer-status");
    const flat = (state.layer - 1) * D.heads + state.head - 1;
    const p = E.proteins[state.protein];
    const arcs = arcsOf(state.protein);
    const shape = new NGL.Shape("attention");
    const received = new Float64Array(p.sequence.length);
    let drawn = 0, top = 1e-9;
    const chosen = [];
    for (let k = arcs.offsets[flat]; k < arcs.offsets[flat + 1]; k++) {
      const w = half(arcs.w[k]);
      received[arcs.j[k]] += w;
      if (w >= state.weight && p.ca[arcs.i[k]] && p.ca[arcs.j[k]]) {
        chosen.push([arcs.i[k], arcs.j[k], w]);
        top = Math.max(top, w);
      }
    }
    chosen.forEach(([i, j, w]) => {
      shape.addCylinder(p.ca[i], p.ca[j], [0.0, 0.45, 0.70], 0.05 + 0.45 * w / top);
      drawn++;
    });
    Array.from(received.keys()).sort((a, b) => received[b] - received[a]).slice(0, 5)
      .filter((j) => received[j] > 0 && p.ca[j])
      .forEach((j) => shape.addText(p.ca[j], [0.84, 0.37, 0.0], 6, p.sequence[j] + p.ids[j]));
    const token = (draw.token = (draw.token || 0) + 1);
    Object.keys(components).forEach((k) => components[k].then((c) => c.setVisibility(Number(k) === state.protein)));
    structure(state.protein).then(function (component) {
      if (token !== draw.token) { return; }
      if (shapeComponent) { stage.removeComponent(shapeComponent); shapeComponent = null; }
      // A shape with labels but no arcs is still drawn, so the most attended residues stay marked.
      shapeComponent = stage.addComponentFromObject(shape);
      shapeComponent.addRepresentation("buffer");
      component.setVisibility(true);
      component.autoView();
      document.getElementById("explorer-stage").dataset.rendered = "true";
      stage.viewer.requestRender();
      status.dataset.head = state.layer + "-" + state.head;
      status.dataset.protein = p.id;
      status.dataset.arcs = String(drawn);
      status.textContent = `Head ${state.layer}-${state.head} on ${p.id} (${p.analysed}): ${drawn} arcs with ` +
        `weight ≥ ${fmt(state.weight)} drawn; ${p.counts[flat]} arcs above θ = ${fmt(E.theta)}.`;
    }).catch((error) => console.error("plmlens explorer: " + error));
  }
  function proteinOptions(flat) {
    const select = document.getElementById("explorer-protein");
    select.innerHTML = E.top[flat].map((index) =>
      `<option value="${index}">${E.proteins[index].id}: ${E.proteins[index].counts[flat]} arcs above θ</option>`
    ).join("");
    state.protein = E.top[flat][0];
  }
  function show(layer, head, key) {
    state.layer = layer; state.head = head;
    const flat = (layer - 1) * D.heads + head - 1;
    document.getElementById("explorer-title").textContent =
      `Head ${layer}-${head}` + (key ? ` (clicked in ${D.labels[key] || key})` : "");
    document.getElementById("explorer-stats").innerHTML = statsTable(flat);
    if (E) { proteinOptions(flat); draw(); }
    else { document.getElementById("explorer-status").dataset.head = layer + "-" + head; }
  }
  document.addEventListener("plmlens:head", function (event) {
    show(event.detail.layer, event.detail.head, event.detail.key);
    document.getElementById("explorer").scrollIntoView({ block: "start" });
  });
  window.addEventListener("load", function () {
    if (E) {
      stage = new NGL.Stage("explorer-stage", { backgroundColor: "white" });
      window.plmlensStages = (window.plmlensStages || []).concat([stage]);
      const weight = document.getElementById("explorer-weight");
      state.weight = Number(weight.value);
      weight.addEventListener("change", () => { state.weight = Number(weight.value); draw(); });
      document.getElementById("explorer-protein").addEventListener("change", (event) => {
        state.protein = Number(event.target.value); draw(); });
    }
    show(state.layer, state.head, "");
  });
})();
"""
