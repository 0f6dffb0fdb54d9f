"""``report.html`` for a run directory: parameters, every figure, top-head tables, and a head explorer
(click a head in any heatmap: its statistics and its attention on example proteins in 3D)."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from markupsafe import Markup
from matplotlib.figure import Figure

from plmlens.analysis import (
    AMINO_ACIDS,
    AnalysisResult,
    blosum_correlation,
    family_members,
    headline_properties,
    property_family,
)
from plmlens.causal.statistics import ablation_groups
from plmlens.ioutils import write_text_atomic
from plmlens.report import figures
from plmlens.report.causal import save_ablation_figure, save_jacobian_figure
from plmlens.report.features import features_context
from plmlens.report.html import HeadLink, Picture, Table, frame_table, inline_script, macro, render, table_html
from plmlens.report.interactive import ExampleSet, HeatmapPanel, explorer_context, panel_of
from plmlens.report.numbers import fmt_count, fmt_number, fmt_p, fmt_percent
from plmlens.report.view import AttentionView, ngl_javascript
from plmlens.rundir import REPORT, RunDir

log = logging.getLogger(__name__)

#: What `build_report` writes into a run directory; ``report.html`` marks a finished report.
REPORT_OUTPUTS = REPORT.outputs


@dataclass(frozen=True)
class ReportFigure:
    """A figure of one's own in ``report.html``: a section with a title, a caption and the figure.

    Parameters
    ----------
    name : str
        Its file stem under ``figures/`` (``NAME.png`` and ``NAME.svg``).
    title : str
        The section's heading.
    draw : callable
        ``RunDir -> matplotlib Figure``, or None when the run has nothing to show (then no section).
    caption : str
        A line under the heading.
    """

    name: str
    title: str
    draw: Callable[[RunDir], Figure | None]
    caption: str = ""


#: Figures registered with `register_report_figure`, drawn after the built-in ones in this order.
REPORT_FIGURES: dict[str, ReportFigure] = {}


def register_report_figure(figure: ReportFigure) -> ReportFigure:
    """Add a figure to every report: one function that draws it from the run, and this registration::

    def arcs_per_layer(run):
        layers = run.layers()
        fig, ax = plt.subplots()
        ax.bar(...)
        return fig

    register_report_figure(ReportFigure("arcs_per_layer", "Arcs per layer", arcs_per_layer))
    """
    REPORT_FIGURES[figure.name] = figure
    return figure


def _registered_figures(run: RunDir, out: Path) -> list[dict]:
    """Each registered figure the run has something for, drawn into `out`, as the template's sections."""
    sections = []
    for figure in REPORT_FIGURES.values():
        drawn = figure.draw(run)
        if drawn is None:
            continue
        paths = figures.save_figure(drawn, out / figures.figure_stem("figure", figure.name))
        sections.append({"title": figure.title, "caption": figure.caption,
                         "picture": Picture.from_file(paths[0], figure.title)})  # fmt: skip
    return sections


def write_figures(run_dir: str | Path) -> dict[str, list[Path]]:
    """Every figure the run's files support, as PNG and SVG under ``RUN_DIR/figures``."""
    return _write_figures(run_dir)[0]


def _write_figures(
    run_dir: str | Path, out_dir: str | Path | None = None
) -> tuple[dict[str, list[Path]], dict[str, HeatmapPanel]]:
    """`write_figures` (into ``OUT_DIR/figures``, default the run's), and where each head heatmap's cells lie in
    its PNG (for clickable heatmaps)."""
    run = RunDir(run_dir)
    panels: dict[str, HeatmapPanel] = {}
    out = Path(out_dir if out_dir is not None else run_dir) / "figures"
    written: dict[str, list[Path]] = {}
    heads, layers, summary = run.heads(), run.layers(), run.summary()
    labelled = report_properties(summary, heads)
    n_layers, n_heads = int(heads["layer"].max()), int(heads["head"].max())
    for prop in labelled:
        heatmap = figures.head_heatmap(heads, prop)
        written[f"heads_{prop}"] = figures.save_figure(heatmap, out / figures.figure_stem("heads", prop))
        # Read after saving: constrained layout has placed the axes by then.
        panels[prop] = panel_of(heatmap.axes[0], prop, n_layers, n_heads)
        top = figures.top_heads_figure(heads, prop)
        written[f"top_{prop}"] = figures.save_figure(top, out / figures.figure_stem("top", prop))
    centres = {k: v for k, v in summary["centres_of_gravity"].items() if v is not None}
    written["layers"] = figures.save_figure(figures.layer_profiles(layers, centres, labelled), out / "layers")
    if family_members(heads["property"], AMINO_ACIDS):
        written["amino_acids"] = figures.save_figure(figures.amino_acid_heatmaps(heads), out / "amino_acids")
        similarity, r = blosum_correlation(AnalysisResult.load(run.path).amino_acid_profiles(heads))
        written["blosum"] = figures.save_figure(figures.blosum_figure(similarity, r), out / "blosum")
    probes = run.probes()
    if probes is not None:
        written["probes"] = figures.save_figure(figures.probe_curves(probes), out / "probes")
    return written, panels


def report_properties(summary: dict, heads: pd.DataFrame) -> list[str]:
    """The properties that get their own heatmap, top heads and layer profile: every property of the run
    that is drawn on its own (see `headline_properties`) and labelled with at least one positive."""
    return [p for p in headline_properties(heads["property"]) if summary["backgrounds"].get(p)]


#: Columns shown as percentages (shares of attention) and as p-values; other numbers get 3 significant digits.
PERCENT_COLUMNS = {"proportion", "ci_low", "ci_high", "background", "null_proportion", "boot_ci_low", "boot_ci_high",
                   "null", "top_proportion", "null_top_proportion", "weighted_proportion", "offset null",
                   "position null", "offset_null", "position_null"}  # fmt: skip
#: The positional nulls' columns shown beside the row-permuted null, where the run computed them.
POSITIONAL_SHOWN = ("offset_null", "offset_enrichment", "position_null", "position_enrichment", "position_p_bonferroni")
P_COLUMNS = {"p_value", "p_bonferroni", "p (Bonferroni)", "p"}


def _cell(column: str, value: object) -> str | HeadLink:
    """A table cell as text, numbers rounded for reading; a ``head`` column's "L-H" becomes a link to the head."""
    if value is None:
        return "–"
    if isinstance(value, str) and column == "head" and re.fullmatch(r"\d+-\d+", value):
        return HeadLink(*(int(x) for x in value.split("-")))
    if isinstance(value, bool | np.bool_ | str):
        return str(value)
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        if column in PERCENT_COLUMNS:
            return fmt_percent(float(value))
        if column in P_COLUMNS:
            return fmt_p(float(value))
        return fmt_number(float(value))
    return str(value)


def _rounded(frame: pd.DataFrame) -> Table:
    """`frame` as a `Table` with every number rounded for reading (see `PERCENT_COLUMNS` and `P_COLUMNS`)."""
    return frame_table(frame, _cell)


def _table(frame: pd.DataFrame) -> Markup:
    """An HTML table with every number rounded for reading (see `PERCENT_COLUMNS` and `P_COLUMNS`)."""
    return table_html(_rounded(frame))


def build_report(
    run_dir: str | Path,
    views: list[AttentionView] | None = None,
    examples: ExampleSet | None = None,
    examples_note: str | None = None,
    draw_weight: float = 0.1,
    out_dir: str | Path | None = None,
    feature_structures: bool = True,
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
    out_dir : path, optional
        Where ``report.html`` and ``figures/`` go (default `run_dir`; ``plmlens report`` stages them and moves
        them into the run directory, see `plmlens.outputs`).
    feature_structures : bool
        Draw the top-activating proteins of the run's SAE features (``RUN_DIR/features/``) in 3D, their
        structures re-read from the source their ``examples.json`` names (see `features_context`).
    """
    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir is not None else run_dir
    written, panels = _write_figures(run_dir, out_dir)
    run = RunDir(run_dir)
    summary, heads = run.summary(), run.heads()
    model = summary["model"]
    n_layers, n_heads = int(heads["layer"].max()), int(heads["head"].max())
    if examples is None and examples_note is None:
        examples_note = "no example proteins were given (plmlens report --views draws them)"
    initial = _initial_head(summary, heads)
    features = features_context(run_dir, structures=feature_structures)
    # NGL is inlined only when something is drawn in 3D, so a report without views needs no NGL install.
    ngl = bool(examples or views or (features and features["ngl"]))
    text = render(
        "report.html",
        title=f"plmlens report: {model.get('name', 'model')} on {summary.get('data', 'data')}",
        ngl_js=inline_script(ngl_javascript()) if ngl else None,
        run_table=_rounded(_run_frame(summary)),
        top_table=_rounded(_top_frame(summary)),
        explorer=explorer_context(heads, n_layers, n_heads, initial, examples, examples_note, draw_weight),
        heatmaps=_heatmap_sections(written, panels, heads),
        layers=Picture.from_file(written["layers"][0], "layer profiles"),
        probes=_probe_section(run, written),
        amino_acids=_amino_acid_section(run, written, summary),
        extra_figures=_registered_figures(run, out_dir / "figures"),
        causal=causal_context(run_dir, out_dir / "figures"),
        features=features,
        views=[view.context(f"view{k}") for k, view in enumerate(views or [])],
    )
    return write_text_atomic(out_dir / "report.html", text)


def _run_frame(summary: dict) -> pd.DataFrame:
    """The "Run" table: the model, the data and the analysis parameters."""
    model = summary.get("model", {})
    return pd.DataFrame([{
        "model": model.get("name"), "layers × heads": f"{model.get('layers')} × {model.get('heads')}",
        "data": summary.get("data"), "proteins": summary.get("n_proteins"), "residues": summary.get("n_residues"),
        "skipped": summary.get("n_skipped"), "θ": summary.get("threshold"), "support": summary["support"],
        "seed": summary.get("seed"), "max length": summary.get("max_length"),
        "Bonferroni m": summary.get("bonferroni_m"),
    }])  # fmt: skip


def _top_frame(summary: dict) -> pd.DataFrame:
    """The top head of every structural property (amino acids have their own table)."""
    return pd.DataFrame([
        {"property": figures.label(p), "head": t["head"], "proportion": t["proportion"], "background": t["background"],
         "enrichment": t["enrichment"], "null": t["null_proportion"], "p (Bonferroni)": t["p_bonferroni"],
         "significant": t["significant"], "arcs": t["n_arcs"],
         **{name: t[key] for name, key in _POSITIONAL_TOP.items() if key in t}}
        for p, t in summary["top_heads"].items() if property_family(p) is None
    ])  # fmt: skip


#: The top-head table's columns for the positional nulls, and their keys in ``summary.json``.
_POSITIONAL_TOP = {"offset null": "offset_null", "× offset": "offset_enrichment", "position null": "position_null",
                   "× position": "position_enrichment", "above position": "position_significant"}  # fmt: skip


def _heatmap_sections(
    written: dict[str, list[Path]], panels: dict[str, HeatmapPanel], heads: pd.DataFrame
) -> list[dict]:
    """Per labelled property: its clickable heatmap, its top heads beside the null model and their table."""
    sections = []
    for key, paths in written.items():
        if not key.startswith("heads_"):
            continue
        prop = key.removeprefix("heads_")
        top = heads[(heads.property == prop) & ~heads.few_arcs].sort_values("proportion", ascending=False).head(10)
        top = top.assign(head=[f"{a}-{b}" for a, b in zip(top["layer"], top["head"], strict=True)])
        columns = ["head", "n_arcs", "proportion", "ci_low", "ci_high", "background", "p_bonferroni",
                   "null_proportion", *(c for c in POSITIONAL_SHOWN if c in top.columns and top[c].notna().any()),
                   "boot_ci_low", "boot_ci_high"]  # fmt: skip
        sections.append({
            "title": figures.label(prop),
            "heatmap": Picture.from_file(paths[0], f"{prop} per head (click a head)"),
            "panels": [panels[prop]],
            "top_heads": Picture.from_file(written[f"top_{prop}"][0], f"{prop} top heads"),
            "table": _rounded(top[columns]),
        })  # fmt: skip
    return sections


def _probe_section(run: RunDir, written: dict[str, list[Path]]) -> dict | None:
    """The probe curves and the contact regression's table, when ``plmlens probe`` wrote them."""
    if "probes" not in written:
        return None
    regression = run.contact_regression()
    return {"figure": Picture.from_file(written["probes"][0], "probe curves"),
            "regression": _rounded(regression) if regression is not None else None}  # fmt: skip


def _amino_acid_section(run: RunDir, written: dict[str, list[Path]], summary: dict) -> dict | None:
    """The amino-acid heatmaps, their top heads and the correlation with BLOSUM62, when the run has them."""
    if "amino_acids" not in written:
        return None
    blosum = summary["blosum62_correlation"]
    amino_acids = run.amino_acids().copy()
    for column in ("top_head", "null_top_head"):
        amino_acids[column] = amino_acids[column].astype(str)
    return {
        "figure": Picture.from_file(written["amino_acids"][0], "amino acids"),
        "table": _rounded(amino_acids.rename(columns={"top_head": "head"})),
        "model_r": fmt_number(blosum["model"]),
        "null_r": fmt_number(blosum["null"]),
        "blosum": Picture.from_file(written["blosum"][0], "attention similarity and BLOSUM62"),
    }


def causal_context(run_dir: str | Path, figures_dir: str | Path | None = None) -> dict:
    """What the report's head-ablation and categorical-Jacobian sections (``causal.html``) show, when
    ``plmlens ablate`` or ``plmlens jacobian`` wrote their outputs into the run directory (or its
    ``ablation/`` or ``jacobian/``): ``{"ablation": dict or None, "jacobian": dict or None}``.

    The figures are those the commands drew beside their data; where one is missing (a result saved from
    Python writes data only) it is drawn into `figures_dir`, the report's own ``figures/``.
    """
    run = RunDir(run_dir)
    context: dict[str, dict | None] = {"ablation": None, "jacobian": None}
    ablation = run.ablation()
    if ablation is not None:
        table, info, directory = ablation
        figure = directory / "ablation.png"
        if not figure.is_file() and figures_dir is not None:
            contact_heads = run.heads() if run.is_analysis() else None
            figure = save_ablation_figure(table, info, figures_dir, contact_heads)[0]
        # Single heads and the many random groups would drown the table: the groups are summarised below it.
        groups = table[~table["kind"].isin(["head", *figures.GROUP_KINDS])]
        columns = ["ablation", "heads", "loss", "delta_loss", "delta_loss_low", "delta_loss_high", "delta_recovery",
                   "delta_site_recovery", "delta_contact_long_p_at_L5"]  # fmt: skip
        context["ablation"] = {
            "answer": str(info.get("answer", "")), "mode": str(info.get("mode")),
            "objective": str(info.get("objective")), "n_evaluation_proteins": str(info.get("n_evaluation_proteins")),
            "n_regression_proteins": str(info.get("n_regression_proteins")), "bootstrap": str(info.get("bootstrap")),
            "figure": Picture.from_file(figure, "loss increase per ablated head") if figure.is_file() else None,
            "table": _rounded(groups[[c for c in columns if c in groups.columns]]),
            "groups": _ablation_group_summary(table, info),
            "floors": _contact_floors_text(info.get("contact_floors")),
        }  # fmt: skip
    jacobian = run.jacobian()
    if jacobian is not None:
        summary, info, directory = jacobian
        best = info.get("best_head", {})
        chart = directory / "jacobian.png"
        if not chart.is_file() and figures_dir is not None:
            chart = save_jacobian_figure(summary, figures_dir)[0]
        context["jacobian"] = {
            "n_evaluation_proteins": str(info.get("n_evaluation_proteins")),
            "n_regression_proteins": str(info.get("n_regression_proteins")),
            "best_head": f"{best.get('layer')}-{best.get('head')}",
            "seconds_per_protein": fmt_number(info.get("seconds_per_protein")), "device": str(info.get("device")),
            "figure": Picture.from_file(chart, "Jacobian contact precision") if chart.is_file() else None,
            "table": _rounded(summary.rename(columns={"best_head": f"head {best.get('layer')}-{best.get('head')}",
                                                      "top_heads": f"top {info.get('top_heads', {}).get('k')} heads"})),
        }  # fmt: skip
    return context


def _contact_floors_text(floors: object) -> str | None:
    """The intact model's contact regression beside the top-k heads and the positional template (ablation.json's
    ``contact_floors``), as one line; None for runs without them."""
    if not isinstance(floors, dict) or not isinstance(floors.get("long_p_at_L5"), dict):
        return None
    p, top = floors["long_p_at_L5"], floors.get("top_heads") or {}
    return (
        f"regression {fmt_number(p.get('regression'))}, top {top.get('k')} heads {fmt_number(p.get('top_heads'))}, "
        f"positional template {fmt_number(p.get('template'))}, chance {fmt_number(p.get('chance'))}"
    )


def _ablation_verdicts(info: object) -> dict[str, dict]:
    """The run's test of the top group against each kind of random group (``info["question"]["loss"]``), for
    the kinds it gives one for; none for runs written before it took that form (a flat dict) or without it."""
    question = info.get("question") if isinstance(info, dict) else None
    loss = question.get("loss") if isinstance(question, dict) else None
    if not isinstance(loss, dict):
        return {}
    return {kind: loss[kind] for kind in figures.GROUP_KINDS if isinstance(loss.get(kind), dict)}


def _real(value: object) -> float:
    """`value` as a float, NaN when it is not a real number (the values come from a run's JSON)."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        return float("nan")
    return float(value)


def _ablation_group_summary(table: pd.DataFrame, info: dict) -> Table | None:
    """One row per kind of random group of an ablation run (`figures.GROUP_KINDS`): how many, their heads,
    the median and 5–95% range of their loss increase and how many reach the top group's, all from the table
    (so that older runs read the same), with the run's p-value and verdict where ``ablation.json`` gives them.

    Parameters
    ----------
    table, info : DataFrame, dict
        ``ablation.csv`` and ``ablation.json``.

    Returns
    -------
    Table or None
        None when the run has no random groups.
    """
    groups = ablation_groups(table)
    if not groups:
        return None
    verdicts = _ablation_verdicts(info)
    top = table.loc[table["kind"] == "top_contact", "delta_loss"]
    rows = []
    for kind, group in groups.items():
        verdict = verdicts.get(kind, {})
        rows.append({
            "groups": f"{figures.GROUP_KINDS[kind][0]} groups ({fmt_count(group['n'])})",
            "heads each": fmt_count(group["heads"]),
            "median Δ loss": group["median"], "5% Δ loss": group["q05"], "95% Δ loss": group["q95"],
            "top group's Δ loss": _real(top.iloc[0]) if len(top) else float("nan"),
            "groups as large": fmt_count(group["as_large"]),
            "p": _real(verdict.get("p_value")),
            "verdict": str(verdict["verdict"]) if verdict.get("verdict") is not None else "–",
        })  # fmt: skip
    return _rounded(pd.DataFrame(rows))


def causal_sections(run_dir: str | Path) -> list[Markup]:
    """The report's head-ablation and categorical-Jacobian sections as HTML fragments (see `causal_context`)."""
    context = causal_context(run_dir)
    return [macro("causal.html", name)(context[name]) for name in ("ablation", "jacobian") if context[name]]


def _initial_head(summary: dict, heads: pd.DataFrame) -> tuple[int, int]:
    """The head the explorer shows first: the top contact head, else the first property's top head."""
    top = summary.get("top_heads", {})
    for prop in ("contact", *top):
        head = top.get(prop, {}).get("head") if isinstance(top.get(prop), dict) else None
        if head:
            layer, index = (int(x) for x in str(head).split("-"))
            return layer, index
    return int(heads["layer"].min()), int(heads["head"].min())
