"""``report.html`` for a run directory: parameters, every figure, top-head tables and 3D views."""

from __future__ import annotations

import base64
import html
import json
import logging
from pathlib import Path

import pandas as pd

from plmlens.analysis import AnalysisResult, blosum_correlation
from plmlens.ioutils import write_text_atomic
from plmlens.report import figures
from plmlens.report.view import AttentionView, page

log = logging.getLogger(__name__)

SUMMARY_PROPERTIES = ("contact", "contact_short", "contact_medium", "contact_long", "binding_site", "ptm",
                      "helix", "strand", "turn_bend")  # fmt: skip


def write_figures(run_dir: str | Path) -> dict[str, list[Path]]:
    """Every figure the run's files support, as PNG and SVG under ``RUN_DIR/figures``."""
    run_dir = Path(run_dir)
    out = run_dir / "figures"
    written: dict[str, list[Path]] = {}
    result = AnalysisResult.load(run_dir)
    heads = pd.read_csv(run_dir / "heads.csv")
    layers = pd.read_csv(run_dir / "layers.csv")
    summary = json.loads((run_dir / "summary.json").read_text())
    labelled = [p for p in SUMMARY_PROPERTIES if p in set(heads["property"]) and summary["backgrounds"].get(p)]
    for prop in labelled:
        written[f"heads_{prop}"] = figures.save_figure(figures.head_heatmap(heads, prop), out / f"heads_{prop}")
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
    return written


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></figure>'


def _table(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, float_format=lambda v: f"{v:.4g}", border=0, na_rep="–")


def build_report(run_dir: str | Path, views: list[AttentionView] | None = None) -> Path:
    """Write ``RUN_DIR/report.html``: one self-contained offline page.

    Parameters
    ----------
    run_dir : path
        Written by ``plmlens analyze`` (and optionally ``plmlens probe --out RUN_DIR/probe``).
    views : list of AttentionView, optional
        3D views to include (e.g. the top contact and binding-site heads on an example protein).
    """
    run_dir = Path(run_dir)
    written = write_figures(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    heads = pd.read_csv(run_dir / "heads.csv")
    model = summary.get("model", {})
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
    for key, paths in written.items():
        if key.startswith("heads_"):
            prop = key.removeprefix("heads_")
            parts.append(f"<h2>{html.escape(figures.label(prop))}</h2>")
            parts.append(_img(paths[0], f"{prop} per head"))
            parts.append(_img(written[f"top_{prop}"][0], f"{prop} top heads"))
            top = heads[(heads.property == prop) & ~heads.few_arcs].sort_values("proportion", ascending=False).head(10)
            parts.append(_table(top[["layer", "head", "n_arcs", "proportion", "ci_low", "ci_high", "background",
                                     "p_bonferroni", "null_proportion", "boot_ci_low", "boot_ci_high"]]))  # fmt: skip
    parts += ["<h2>Across layers</h2>", _img(written["layers"][0], "layer profiles")]
    if "probes" in written:
        parts += ["<h2>Probes</h2>", _img(written["probes"][0], "probe curves")]
        regression = run_dir / "probe" / "contact_regression.csv"
        if regression.exists():
            parts += ["<h3>Contact regression over all heads</h3>", _table(pd.read_csv(regression))]
    if "amino_acids" in written:
        blosum = summary["blosum62_correlation"]
        parts += [
            "<h2>Amino acids</h2>", _img(written["amino_acids"][0], "amino acids"),
            _table(pd.read_csv(run_dir / "amino_acids.csv")),
            f"<p>Correlation of attention similarity with BLOSUM62: model r = {blosum['model']}, "
            f"null model r = {blosum['null']}.</p>",
            _img(written["blosum"][0], "attention similarity and BLOSUM62"),
        ]  # fmt: skip
    if views:
        parts.append("<h2>Attention on structure</h2>")
        parts += [view.fragment(f"view{k}") for k, view in enumerate(views)]
    title = f"plmlens report: {model.get('name', 'model')} on {summary.get('data', 'data')}"
    return write_text_atomic(run_dir / "report.html", page(title, "\n".join(parts)))
