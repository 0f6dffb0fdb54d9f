"""``report.html`` for a run directory: parameters, every figure, top-head tables, and a head explorer
(click a head in any heatmap: its statistics and its attention on example proteins in 3D)."""

from __future__ import annotations

import base64
import html
import json
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd

from plmlens.analysis import AnalysisResult, blosum_correlation
from plmlens.ioutils import write_text_atomic
from plmlens.report import figures
from plmlens.report.interactive import (
    HEAD_CLICK_SCRIPT,
    ExampleSet,
    HeatmapPanel,
    clickable_heatmap,
    explorer_html,
    fmt_number,
    fmt_p,
    fmt_percent,
    panel_of,
)
from plmlens.report.view import AttentionView, page

log = logging.getLogger(__name__)

SUMMARY_PROPERTIES = ("contact", "contact_short", "contact_medium", "contact_long", "binding_site", "ptm",
                      "helix", "strand", "turn_bend")  # fmt: skip


def write_figures(run_dir: str | Path) -> dict[str, list[Path]]:
    """Every figure the run's files support, as PNG and SVG under ``RUN_DIR/figures``."""
    return _write_figures(run_dir)[0]


def _write_figures(run_dir: str | Path) -> tuple[dict[str, list[Path]], dict[str, HeatmapPanel]]:
    """`write_figures`, and where each head heatmap's cells lie in its PNG (for clickable heatmaps)."""
    run_dir = Path(run_dir)
    panels: dict[str, HeatmapPanel] = {}
    out = run_dir / "figures"
    written: dict[str, list[Path]] = {}
    result = AnalysisResult.load(run_dir)
    heads = pd.read_csv(run_dir / "heads.csv")
    layers = pd.read_csv(run_dir / "layers.csv")
    summary = json.loads((run_dir / "summary.json").read_text())
    labelled = [p for p in SUMMARY_PROPERTIES if p in set(heads["property"]) and summary["backgrounds"].get(p)]
    n_layers, n_heads = int(heads["layer"].max()), int(heads["head"].max())
    for prop in labelled:
        heatmap = figures.head_heatmap(heads, prop)
        written[f"heads_{prop}"] = figures.save_figure(heatmap, out / f"heads_{prop}")
        # Read after saving: constrained layout has placed the axes by then.
        panels[prop] = panel_of(heatmap.axes[0], prop, n_layers, n_heads)
        written[f"top_{prop}"] = figures.save_figure(figures.top_heads_figure(heads, prop), out / f"top_{prop}")
    centres = {k: v for k, v in summary["centres_of_gravity"].items() if v is not None}
    written["layers"] = figures.save_figure(figures.layer_profiles(layers, centres, labelled), out / "layers")
    if any(p.startswith("aa_") for p in heads["property"]):
        written["amino_acids"] = figures.save_figure(figures.amino_acid_heatmaps(heads), out / "amino_acids")
        similarity, r = blosum_correlation(result.amino_acid_profiles(heads))
        written["blosum"] = figures.save_figure(figures.blosum_figure(similarity, r), out / "blosum")
    probes_csv = run_dir / "probe" / "probes.csv"
    if probes_csv.exists():
        written["probes"] = figures.save_figure(figures.probe_curves(pd.read_csv(probes_csv)), out / "probes")
    return written, panels


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></figure>'


#: Columns shown as percentages (shares of attention) and as p-values; other numbers get 3 significant digits.
PERCENT_COLUMNS = {"proportion", "ci_low", "ci_high", "background", "null_proportion", "boot_ci_low", "boot_ci_high",
                   "null", "top_proportion", "null_top_proportion", "weighted_proportion"}  # fmt: skip
P_COLUMNS = {"p_value", "p_bonferroni", "p (Bonferroni)", "p"}


def _cell(column: str, value: object) -> str:
    if value is None:
        return "–"
    if isinstance(value, str) and column == "head" and re.fullmatch(r"\d+-\d+", value):
        return _head_link(*(int(x) for x in value.split("-")))
    if isinstance(value, bool | np.bool_ | str):
        return html.escape(str(value))
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        if column in PERCENT_COLUMNS:
            return fmt_percent(float(value))
        if column in P_COLUMNS:
            return fmt_p(float(value))
        return fmt_number(float(value))
    return str(value)


def _table(frame: pd.DataFrame) -> str:
    """An HTML table with every number rounded for reading (see `PERCENT_COLUMNS` and `P_COLUMNS`)."""
    shown = frame.astype(object).where(frame.notna(), None)
    for column in shown.columns:
        shown[column] = [_cell(str(column), v) for v in shown[column]]
    return shown.to_html(index=False, border=0, na_rep="–", escape=False)


def _head_link(layer: int, head: int) -> str:
    return f'<button class="head-link" data-layer="{layer}" data-head="{head}">{layer}-{head}</button>'


def build_report(
    run_dir: str | Path,
    views: list[AttentionView] | None = None,
    examples: ExampleSet | None = None,
    examples_note: str | None = None,
    draw_weight: float = 0.1,
) -> Path:
    """Write ``RUN_DIR/report.html``: one self-contained offline page.

    Every head heatmap is clickable: a click shows the head's statistics for all properties and, with
    `examples`, draws its attention on the example proteins where it has the most arcs above θ.

    Parameters
    ----------
    run_dir : path
        Written by ``plmlens analyze`` (and optionally ``plmlens probe --out RUN_DIR/probe``).
    views : list of AttentionView, optional
        Further fixed 3D views to include at the end.
    examples : ExampleSet, optional
        Example proteins' attention for the head explorer's 3D view (see `ExampleCollector`).
    examples_note : str, optional
        Shown instead of the 3D view when there are no `examples` (e.g. why the model could not be loaded).
    draw_weight : float
        Arcs lighter than this are hidden in the 3D view at first.
    """
    run_dir = Path(run_dir)
    written, panels = _write_figures(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    heads = pd.read_csv(run_dir / "heads.csv")
    model = summary.get("model", {})
    n_layers, n_heads = int(heads["layer"].max()), int(heads["head"].max())
    parts = [
        "<h2>Run</h2>",
        _table(
            pd.DataFrame(
                [
                    {
                        "model": model.get("name"),
                        "layers × heads": f"{model.get('layers')} × {model.get('heads')}",
                        "data": summary.get("data"),
                        "proteins": summary.get("n_proteins"),
                        "residues": summary.get("n_residues"),
                        "skipped": summary.get("n_skipped"),
                        "θ": summary.get("threshold"),
                        "support": summary.get("support", "full"),
                        "seed": summary.get("seed"),
                        "max length": summary.get("max_length"),
                        "Bonferroni m": summary.get("bonferroni_m"),
                    }
                ]
            )
        ),
    ]
    top_rows = [
        {"property": figures.label(p), "head": t["head"], "proportion": t["proportion"], "background": t["background"],
         "enrichment": t["enrichment"], "null": t["null_proportion"], "p (Bonferroni)": t["p_bonferroni"],
         "significant": t["significant"], "arcs": t["n_arcs"]}
        for p, t in summary["top_heads"].items() if not p.startswith("aa_")
    ]  # fmt: skip
    parts += ["<h2>Top head per property</h2>", _table(pd.DataFrame(top_rows))]
    initial = _initial_head(summary, heads)
    if examples is None and examples_note is None:
        examples_note = "no example proteins were given (plmlens report --views draws them)"
    parts.append(explorer_html(heads, n_layers, n_heads, initial, examples, examples_note, draw_weight))
    for key, paths in written.items():
        if key.startswith("heads_"):
            prop = key.removeprefix("heads_")
            parts.append(f"<h2>{html.escape(figures.label(prop))}</h2>")
            parts.append(clickable_heatmap(paths[0].read_bytes(), f"{prop} per head (click a head)", [panels[prop]]))
            parts.append(_img(written[f"top_{prop}"][0], f"{prop} top heads"))
            top = heads[(heads.property == prop) & ~heads.few_arcs].sort_values("proportion", ascending=False).head(10)
            top = top.assign(head=[f"{a}-{b}" for a, b in zip(top["layer"], top["head"], strict=True)])
            parts.append(_table(top[["head", "n_arcs", "proportion", "ci_low", "ci_high", "background",
                                     "p_bonferroni", "null_proportion", "boot_ci_low", "boot_ci_high"]]))  # fmt: skip
    parts += ["<h2>Across layers</h2>", _img(written["layers"][0], "layer profiles")]
    if "probes" in written:
        parts += ["<h2>Probes</h2>", _img(written["probes"][0], "probe curves")]
        regression = run_dir / "probe" / "contact_regression.csv"
        if regression.exists():
            parts += ["<h3>Contact regression over all heads</h3>", _table(pd.read_csv(regression))]
    if "amino_acids" in written:
        blosum = summary["blosum62_correlation"]
        amino_acids = pd.read_csv(run_dir / "amino_acids.csv")
        for column in ("top_head", "null_top_head"):
            amino_acids[column] = amino_acids[column].astype(str)
        parts += [
            "<h2>Amino acids</h2>", _img(written["amino_acids"][0], "amino acids"),
            _table(amino_acids.rename(columns={"top_head": "head"})),
            f"<p>Correlation of attention similarity with BLOSUM62: model r = {fmt_number(blosum['model'])}, "
            f"null model r = {fmt_number(blosum['null'])}.</p>",
            _img(written["blosum"][0], "attention similarity and BLOSUM62"),
        ]  # fmt: skip
    parts += causal_sections(run_dir)
    if views:
        parts.append("<h2>Attention on structure</h2>")
        parts += [view.fragment(f"view{k}") for k, view in enumerate(views)]
    title = f"plmlens report: {model.get('name', 'model')} on {summary.get('data', 'data')}"
    # NGL is inlined only when something is drawn in 3D, so a report without views needs no NGL install.
    text = page(title, "\n".join(parts), head=HEAD_CLICK_SCRIPT + EXPLORER_STYLE, ngl=bool(examples or views))
    return write_text_atomic(run_dir / "report.html", text)


def _find(run_dir: Path, name: str, subdirectory: str) -> Path | None:
    """``RUN_DIR/name``, else ``RUN_DIR/subdirectory/name``, where ``plmlens ablate``/``jacobian --out`` wrote it."""
    for path in (run_dir / name, run_dir / subdirectory / name):
        if path.is_file():
            return path
    return None


def causal_sections(run_dir: str | Path) -> list[str]:
    """The report's head-ablation and categorical-Jacobian sections, when ``plmlens ablate`` or ``plmlens
    jacobian`` wrote their outputs into the run directory (or its ``ablation/`` or ``jacobian/``)."""
    run_dir = Path(run_dir)
    parts: list[str] = []
    ablation = _find(run_dir, "ablation.csv", "ablation")
    if ablation is not None:
        table = pd.read_csv(ablation)
        info = json.loads((ablation.parent / "ablation.json").read_text())
        parts += [
            "<h2>Head ablation</h2>",
            f"<p>{html.escape(info.get('answer', ''))}</p>",
            f"<p>{html.escape(str(info.get('mode')))} ablation, {html.escape(str(info.get('objective')))}; "
            f"{info.get('n_evaluation_proteins')} evaluation proteins, contact regression fitted on "
            f"{info.get('n_regression_proteins')}; intervals from {info.get('bootstrap')} protein-bootstrap "
            "replicates. Single-head rows are in ablation.csv.</p>",
        ]
        figure = ablation.parent / "ablation.png"
        if figure.is_file():
            parts.append(_img(figure, "loss increase per ablated head"))
        groups = table[table["kind"] != "head"]
        columns = ["ablation", "heads", "loss", "delta_loss", "delta_loss_low", "delta_loss_high", "delta_recovery",
                   "delta_site_recovery", "delta_contact_long_p_at_L5"]  # fmt: skip
        parts.append(_table(groups[[c for c in columns if c in groups.columns]]))
    jacobian = _find(run_dir, "jacobian_summary.csv", "jacobian")
    if jacobian is not None:
        info = json.loads((jacobian.parent / "jacobian.json").read_text())
        best = info.get("best_head", {})
        summary = pd.read_csv(jacobian)
        parts += [
            "<h2>Contacts from the model's output (categorical Jacobian)</h2>",
            f"<p>Mean precision over {info.get('n_evaluation_proteins')} proteins of the categorical Jacobian "
            f"(Zhang et al. 2024), the contact regression over all heads and the best single head "
            f"({best.get('layer')}-{best.get('head')}, chosen on the {info.get('n_regression_proteins')} training "
            f"proteins); {fmt_number(info.get('seconds_per_protein'))} s per protein on "
            f"{html.escape(str(info.get('device')))}.</p>",
        ]
        chart = jacobian.parent / "jacobian.png"
        if not chart.is_file():
            figures.save_figure(figures.jacobian_figure(summary), chart.with_suffix(""))
        parts.append(_img(chart, "Jacobian contact precision"))
        parts.append(_table(summary.rename(columns={"best_head": f"head {best.get('layer')}-{best.get('head')}"})))
    return parts


EXPLORER_STYLE = """<style>
#explorer { border: 1px solid #ddd; padding: 0 1em 1em; background: #fcfcfc; }
.explorer-body { display: flex; gap: 1.5em; flex-wrap: wrap; align-items: flex-start; }
#explorer-stats table { font-size: 0.8em; }
</style>"""


def _initial_head(summary: dict, heads: pd.DataFrame) -> tuple[int, int]:
    """The head the explorer shows first: the top contact head, else the first property's top head."""
    top = summary.get("top_heads", {})
    for prop in ("contact", *top):
        head = top.get(prop, {}).get("head") if isinstance(top.get(prop), dict) else None
        if head:
            layer, index = (int(x) for x in str(head).split("-"))
            return layer, index
    return int(heads["layer"].min()), int(heads["head"].min())
