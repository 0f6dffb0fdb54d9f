"""Several runs side by side: the paper's table 1, each model's top heads, centres of gravity, BLOSUM62
correlations, figures with one panel per model, and one self-contained ``compare.html``.

::

    from plmlens.report import compare_runs

    written = compare_runs(["runs/antiberty", "runs/esm2_8m", "runs/esm2_8m_random"], "runs/compare")
    written["compare.html"]
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from plmlens.analysis import headline_properties
from plmlens.ioutils import write_text_atomic
from plmlens.outputs import OutputSet
from plmlens.report import figures
from plmlens.report.features import coverage_context
from plmlens.report.html import Picture, Table, frame_table, render
from plmlens.report.interactive import HeatmapPanel, head_statistics, panel_of
from plmlens.report.numbers import fmt_count, fmt_number, fmt_p, fmt_parameters, fmt_percent, is_missing
from plmlens.rundir import ANALYSIS_FILES, SUMMARY_DEFAULTS, RunDir, RunDirError

#: Files of an ``analyze`` output directory that a comparison reads.
RUN_FILES = ANALYSIS_FILES


class CompareError(ValueError):
    """Runs that cannot be compared (not an analyze output, different θ, the same run twice)."""


@dataclass(frozen=True, eq=False)
class Run:
    """One ``analyze`` output directory, as a comparison reads it.

    Parameters
    ----------
    path : Path
        The run directory.
    summary : dict
        ``summary.json``.
    heads, layers : DataFrame
        ``heads.csv`` and ``layers.csv``.
    probes, contact_regression : DataFrame or None
        ``probe/probes.csv`` and ``probe/contact_regression.csv`` when the run has probe results.
    name : str
        Display name: the model's name, "(random init)" for random-weight controls; `compare_runs` makes it
        unique across the compared runs.
    """

    path: Path
    summary: dict
    heads: pd.DataFrame
    layers: pd.DataFrame
    probes: pd.DataFrame | None = None
    contact_regression: pd.DataFrame | None = None
    name: str = ""

    @property
    def model(self) -> dict:
        return self.summary.get("model") or {}

    @property
    def n_layers(self) -> int:
        return int(self.model.get("layers") or self.heads["layer"].max())

    @property
    def n_heads(self) -> int:
        return int(self.model.get("heads") or self.heads["head"].max())

    @property
    def threshold(self) -> float:
        return float(self.summary["threshold"])

    @property
    def support(self) -> str:
        return str(self.summary.get("support") or SUMMARY_DEFAULTS["support"])

    @property
    def random_init(self) -> bool:
        return bool(self.model.get("random_init", False))

    @property
    def init_seed(self) -> int | None:
        return self.model.get("init_seed")

    @property
    def data(self) -> str:
        return str(self.summary.get("data") or "unknown")

    def labelled(self, prop: str) -> bool:
        """Whether the run's data labels `prop` with at least one positive (it then has a background)."""
        return bool((self.summary.get("backgrounds") or {}).get(prop))


def load_run(run_dir: str | Path) -> Run:
    """Read an ``analyze`` output directory (and its ``probe/`` results when present).

    Parameters
    ----------
    run_dir : path

    Returns
    -------
    Run
        Named after its model (with "(random init)" for a random-weight control).

    Raises
    ------
    CompareError
        When `run_dir` is not an analyze output, naming the path and what is missing.
    """
    run = RunDir(run_dir)
    try:
        summary, heads, layers = run.check().summary(), run.heads(), run.layers()
        model = summary["model"]
        for key, column in (("layers", "layer"), ("heads", "head")):
            if len(heads) and model.get(key) and heads[column].max() > int(model[key]):
                raise RunDirError(
                    f"{run.path}: heads.csv has {column} {heads[column].max()} but the model has {model[key]}"
                )
        probes, regression = run.probes(), run.contact_regression()
    except RunDirError as error:
        raise CompareError(str(error)) from None
    name = str(model.get("name") or run.path.name)
    if model.get("random_init"):
        name += " (random init)"
    return Run(run.path, summary, heads, layers, probes, regression, name)


def unique_names(runs: list[Run]) -> list[Run]:
    """The runs with names made unique: runs sharing a name get their directory's name appended (or its
    whole path, when that is shared too).

    Raises
    ------
    CompareError
        When one directory is given twice.
    """
    resolved = [run.path.resolve() for run in runs]
    for k, path in enumerate(resolved):
        if path in resolved[:k]:
            raise CompareError(f"{runs[k].path}: given twice")
    names = [run.name for run in runs]
    for suffix in (lambda run: run.path.name, lambda run: str(run.path)):
        clashing = {n for n in names if names.count(n) > 1}
        if not clashing:
            break
        names = [
            f"{run.name} [{suffix(run)}]" if name in clashing else name for run, name in zip(runs, names, strict=True)
        ]
    return [replace(run, name=name) for run, name in zip(runs, names, strict=True)]


def check_thresholds(runs: list[Run], allow_mixed: bool = False) -> None:
    """Refuse runs made with different θ (their proportions count different arcs) unless `allow_mixed`.

    Raises
    ------
    CompareError
        Naming every run's θ.
    """
    if allow_mixed or len({run.threshold for run in runs}) <= 1:
        return
    listed = ", ".join(f"{run.path} θ={run.threshold:g}" for run in runs)
    raise CompareError(
        f"runs use different θ ({listed}): their proportions count different arcs; "
        "allow_mixed=True (--allow-mixed) compares them anyway"
    )


def structural_properties(runs: list[Run]) -> list[str]:
    """Properties (not amino acids) labelled in at least one run: the paper's order, then any others."""
    present = [p for run in runs for p in dict.fromkeys(run.heads["property"]) if run.labelled(p)]
    return headline_properties(present)


def arcs_total(run: Run) -> tuple[int | None, str | None]:
    """High-confidence arcs (α > θ) over all layers and heads, and where the count comes from.

    ``summary.json``'s ``n_arcs_total`` where the run records it; otherwise (older runs) the largest
    per-property sum of ``n_arcs`` in ``heads.csv``. Arcs are counted only where a property is defined, so
    both take the property defined on the most pairs; 0 means no attention weight above θ (as in a
    random-weight control).

    Returns
    -------
    (int or None, str or None)
        The count and its source (``"summary.json"`` or ``"heads.csv:PROPERTY"``); None, None for a run
        without properties.
    """
    recorded = run.summary.get("n_arcs_total")
    if recorded is not None:
        return int(recorded), "summary.json"
    if not len(run.heads):
        return None, None
    totals = run.heads.groupby("property", sort=False)["n_arcs"].sum()
    return int(totals.max()), f"heads.csv:{totals.idxmax()}"


def models_table(runs: list[Run]) -> pd.DataFrame:
    """The paper's table 1 for the compared runs, with θ, support and the total high-confidence arcs."""
    rows = []
    for run in runs:
        total, source = arcs_total(run)
        rows.append({
            "name": run.name, "run_dir": str(run.path), "architecture": run.model.get("architecture"),
            "layers": run.n_layers, "heads": run.n_heads, "layers × heads": f"{run.n_layers} × {run.n_heads}",
            "parameters": run.model.get("parameters"), "data": run.data, "n_proteins": run.summary.get("n_proteins"),
            "n_residues": run.summary.get("n_residues"), "threshold": run.threshold, "support": run.support,
            "random_init": run.random_init, "init_seed": run.init_seed, "n_arcs_total": total,
            "n_arcs_total_source": source,
        })  # fmt: skip
    return pd.DataFrame(rows).astype({"parameters": "Int64", "n_proteins": "Int64", "n_residues": "Int64",
                                      "init_seed": "Int64", "n_arcs_total": "Int64"})  # fmt: skip


def top_heads_table(runs: list[Run]) -> pd.DataFrame:
    """Per model and property: the top head (most high-confidence attention to the property among heads
    with at least `MIN_ARCS` arcs), its statistics, and how many of the model's heads are significant."""
    rows = []
    for run in runs:
        for prop, group in run.heads.groupby("property", sort=False):
            if not run.labelled(prop):
                continue
            candidates = group[~group["few_arcs"].astype(bool)].dropna(subset=["proportion"])
            best = candidates.sort_values("proportion", ascending=False).head(1)
            row = {"model": run.name, "run_dir": str(run.path), "property": prop,
                   "n_significant_heads": int(group["significant"].astype(bool).sum()),
                   "n_heads": run.n_layers * run.n_heads, "background": float(group["background"].iloc[0]),
                   "n_above_position": _count_true(group, "position_significant"),
                   "n_above_offset": _count_true(group, "offset_significant")}  # fmt: skip
            if len(best):
                top = best.iloc[0]
                row |= {
                    "top_head": f"{top['layer']}-{top['head']}", "layer": int(top["layer"]), "head": int(top["head"]),
                    "proportion": top["proportion"], "enrichment": top["proportion"] / row["background"],
                    "null_proportion": top["null_proportion"], "p_bonferroni": top["p_bonferroni"],
                    "significant": bool(top["significant"]), "ci_low": top["ci_low"], "ci_high": top["ci_high"],
                    "boot_ci_low": top.get("boot_ci_low", math.nan), "boot_ci_high": top.get("boot_ci_high", math.nan),
                    "n_arcs": int(top["n_arcs"]),
                    **{column: top.get(column, math.nan) for column in POSITIONAL_TOP},
                }  # fmt: skip
            rows.append(row)
    columns = ["model", "run_dir", "property", "top_head", "layer", "head", "proportion", "background", "enrichment",
               "null_proportion", "p_bonferroni", "significant", "ci_low", "ci_high", "boot_ci_low", "boot_ci_high",
               "n_arcs", "n_significant_heads", "n_heads", *POSITIONAL_TOP, "n_above_offset",
               "n_above_position"]  # fmt: skip
    frame = pd.DataFrame(rows, columns=columns)
    return frame.astype({"layer": "Int64", "head": "Int64", "n_arcs": "Int64"})


#: A top head's positional nulls (`plmlens.analysis.nulls`), NaN for runs made without them.
POSITIONAL_TOP = ("offset_null", "offset_enrichment", "position_null", "position_enrichment",
                  "position_p_bonferroni")  # fmt: skip


def _count_true(group: pd.DataFrame, column: str) -> float:
    """Heads with `column` true, or NaN when the run has no such column (made without that null)."""
    if column not in group.columns:
        return math.nan
    return int(group[column].astype(bool).sum())


def centres_table(runs: list[Run]) -> pd.DataFrame:
    """Per model and property: the centre of gravity in layers (1 … L) and relative to depth (CoG / L)."""
    rows = [
        {"model": run.name, "run_dir": str(run.path), "property": prop, "n_layers": run.n_layers,
         "centre_of_gravity": value, "relative_centre_of_gravity": value / run.n_layers}
        for run in runs for prop, value in (run.summary.get("centres_of_gravity") or {}).items() if value is not None
    ]  # fmt: skip
    columns = ["model", "run_dir", "property", "n_layers", "centre_of_gravity", "relative_centre_of_gravity"]
    return pd.DataFrame(rows, columns=columns)


def blosum_table(runs: list[Run]) -> pd.DataFrame:
    """Per model: correlation of its attention similarity between amino acids with BLOSUM62, and the null
    model's (NaN where the run has no amino-acid properties)."""
    rows = []
    for run in runs:
        blosum = run.summary.get("blosum62_correlation") or {}
        rows.append(
            {"model": run.name, "run_dir": str(run.path), "r": blosum.get("model"), "null_r": blosum.get("null")}
        )
    return pd.DataFrame(rows, columns=["model", "run_dir", "r", "null_r"]).astype({"r": float, "null_r": float})


def write_compare_figures(runs: list[Run], out_dir: str | Path) -> dict[str, list[Path]]:
    """Every comparison figure (PNG and SVG) under ``OUT_DIR/figures``, keyed by its stem."""
    return _write_compare_figures(runs, out_dir)[0]


def _write_compare_figures(
    runs: list[Run], out_dir: str | Path
) -> tuple[dict[str, list[Path]], dict[str, list[HeatmapPanel]]]:
    """`write_compare_figures`, and where each model's heatmap lies in each property's PNG (to click)."""
    out = Path(out_dir) / "figures"
    heads = {run.name: run.heads for run in runs}
    shapes = {run.name: (run.n_layers, run.n_heads) for run in runs}
    properties = structural_properties(runs)
    written: dict[str, list[Path]] = {}
    panels: dict[str, list[HeatmapPanel]] = {}
    for prop in properties:
        heatmaps = figures.compare_head_heatmaps(heads, prop, shapes)
        written[f"heads_{prop}"] = figures.save_figure(heatmaps, out / figures.figure_stem("heads", prop))
        # After saving, when the layout is final; the first axes are the models' panels, in order.
        panels[prop] = [
            panel_of(ax, run.name, run.n_layers, run.n_heads) for ax, run in zip(heatmaps.axes, runs, strict=False)
        ]
        written[f"top_{prop}"] = figures.save_figure(
            figures.compare_top_heads(heads, prop), out / figures.figure_stem("top", prop)
        )
    if properties:
        layer_figure = figures.compare_layer_profiles(
            {run.name: run.layers for run in runs}, properties, {run.name: run.n_layers for run in runs}
        )
        written["layers"] = figures.save_figure(layer_figure, out / "layers")
    centres = centres_table(runs)
    centres = centres[centres["property"].isin(properties)]
    if len(centres):
        written["centres_of_gravity"] = figures.save_figure(
            figures.compare_centres_of_gravity(centres), out / "centres_of_gravity"
        )
    probes = {run.name: run.probes for run in runs if run.probes is not None and len(run.probes)}
    if probes:
        written["probes"] = figures.save_figure(figures.compare_probe_curves(probes), out / "probes")
    return written, panels


# Numbers as a person reads them; the CSVs keep full precision.


def _interval(low, high) -> str:
    if is_missing(low) or is_missing(high):
        return "–"
    return f"{fmt_percent(low)} – {fmt_percent(high)}"


def _table(frame: pd.DataFrame) -> Table:
    return frame_table(frame)


def _listing(names: list[str]) -> str:
    return ", ".join(names[:-1]) + f" and {names[-1]}" if len(names) > 1 else "".join(names)


def comparison_notes(runs: list[Run]) -> list[tuple[str, bool]]:
    """What a reader must know before comparing the runs, as ``(text, is_warning)``: mixed data, θ or
    support, random-weight controls, runs without probe results."""
    notes: list[tuple[str, bool]] = []
    data = dict.fromkeys(run.data for run in runs)
    if len(data) > 1:
        used = "; ".join(f"{d}: {_listing([r.name for r in runs if r.data == d])}" for d in data)
        text = (f"This comparison mixes datasets ({used}). Backgrounds, proportions and centres of gravity depend "
                "on the proteins, so differences between these models are partly differences in data.")  # fmt: skip
        notes.append((text, True))
    thresholds = dict.fromkeys(run.threshold for run in runs)
    if len(thresholds) > 1:
        used = ", ".join(f"{run.name}: θ = {run.threshold:g}" for run in runs)
        text = (f"The runs use different attention thresholds ({used}); their proportions count different arcs "
                "and are not directly comparable.")  # fmt: skip
        notes.append((text, True))
    causal = [run.name for run in runs if run.support == "causal"]
    if causal:
        explanation = ("causal (left-to-right): row i attends only j ≤ i, so its null model permutes row i over "
                       "j ≤ i and its backgrounds count only the attendable pairs j ≤ i")  # fmt: skip
        if len(causal) < len(runs):
            full = [run.name for run in runs if run.support != "causal"]
            text = (f"The runs have different support. {_listing(causal)}: {explanation}. {_listing(full)}: full "
                    "(every pair). Backgrounds, enrichments and null models differ accordingly.")  # fmt: skip
            notes.append((text, True))
        else:
            notes.append((f"Every run is {explanation}.", False))
    for run in runs:
        if run.random_init:
            seed = f" (init seed {run.init_seed})" if run.init_seed is not None else ""
            total, _ = arcs_total(run)
            text = (f"{run.name} is a random-weight control{seed}: the architecture with untrained weights. "
                    f"It has {fmt_count(total)} high-confidence arcs (α > θ = {run.threshold:g}).")  # fmt: skip
            notes.append((text, False))
    return notes


def _models_html(models: pd.DataFrame, runs: list[Run]) -> Table:
    seeds = {run.name: run.init_seed for run in runs}
    shown = pd.DataFrame({
        "model": models["name"], "architecture": models["architecture"].fillna("–"),
        "layers × heads": models["layers × heads"], "parameters": models["parameters"].map(fmt_parameters),
        "data": models["data"], "proteins": models["n_proteins"].map(fmt_count),
        "residues": models["n_residues"].map(fmt_count), "θ": models["threshold"].map(fmt_number),
        "support": models["support"],
        "random init": [("yes" + (f" (seed {seeds[n]})" if seeds[n] is not None else "")) if r else "no"
                        for n, r in zip(models["name"], models["random_init"], strict=True)],
        "arcs > θ": models["n_arcs_total"].map(fmt_count),
    })  # fmt: skip
    return _table(shown)


def _top_heads_html(top: pd.DataFrame) -> Table:
    shown = pd.DataFrame({
        "model": top["model"], "top head": top["top_head"].astype(object).fillna("–"),
        "attention to property": top["proportion"].map(fmt_percent), "background": top["background"].map(fmt_percent),
        "enrichment": [("–" if is_missing(v) else f"{fmt_number(v)}×") for v in top["enrichment"]],
        "null model": top["null_proportion"].map(fmt_percent), "p (Bonferroni)": top["p_bonferroni"].map(fmt_p),
        "Wilson CI": [_interval(lo, hi) for lo, hi in zip(top["ci_low"], top["ci_high"], strict=True)],
        "bootstrap CI": [_interval(lo, hi) for lo, hi in zip(top["boot_ci_low"], top["boot_ci_high"], strict=True)],
        "arcs": top["n_arcs"].map(fmt_count),
        "significant heads": [f"{s} of {n}" for s, n in zip(top["n_significant_heads"], top["n_heads"], strict=True)],
        "offset null": top["offset_null"].map(fmt_percent),
        "position null": top["position_null"].map(fmt_percent),
        "× position": [("–" if is_missing(v) else f"{fmt_number(v)}×") for v in top["position_enrichment"]],
        "heads above position null": [("–" if is_missing(a) else f"{int(a)} of {n}")
                                      for a, n in zip(top["n_above_position"], top["n_heads"], strict=True)],
    })  # fmt: skip
    return _table(shown)


def _significant_html(top: pd.DataFrame, properties: list[str], names: list[str]) -> Table:
    rows = []
    for name in names:
        row = {"model": name}
        for prop in properties:
            match = top[(top["model"] == name) & (top["property"] == prop)]
            row[figures.label(prop)] = (
                f"{match['n_significant_heads'].iloc[0]} of {match['n_heads'].iloc[0]}" if len(match) else "–"
            )
        rows.append(row)
    return _table(pd.DataFrame(rows))


def _centres_html(centres: pd.DataFrame, properties: list[str], names: list[str]) -> Table:
    rows = []
    for prop in properties:
        row = {"property": figures.label(prop)}
        for name in names:
            match = centres[(centres["model"] == name) & (centres["property"] == prop)]
            row[name] = (
                f"{match['relative_centre_of_gravity'].iloc[0]:.2f} (layer {match['centre_of_gravity'].iloc[0]:.1f})"
                if len(match) else "–"
            )  # fmt: skip
        rows.append(row)
    return _table(pd.DataFrame(rows))


#: How the comparison names the contact maps of contact_regression.csv.
_METHOD_NAMES = {"regression": "contact regression", "top_heads": "top-k heads", "template": "positional template"}


def _regression_html(runs: list[Run]) -> Table | None:
    rows = []
    for run in runs:
        if run.contact_regression is None:
            continue
        at_l5 = run.contact_regression[run.contact_regression["k"] == "L/5"]
        # One row per method (runs written before the floors have the regression's rows only, no method).
        methods = at_l5["method"] if "method" in at_l5.columns else pd.Series("regression", index=at_l5.index)
        for method in dict.fromkeys(methods):
            row = {"model": run.name, "method": _METHOD_NAMES.get(method, str(method))}
            for _, r in at_l5[methods == method].iterrows():
                row[f"{r['range']} range"] = f"{fmt_number(r['precision'])} (chance {fmt_number(r['chance'])})"
            rows.append(row)
    return _table(pd.DataFrame(rows)) if rows else None


def _head_explorer(runs: list[Run], out_dir: Path) -> dict:
    """The data of the comparison's head explorer: per model its shape, its ``heads.csv`` statistics per head
    and a link to its report.html (which draws the head in 3D) where there is one."""
    data = {}
    for run in runs:
        report = run.path / "report.html"
        try:
            link = report.resolve().relative_to(out_dir.resolve()).as_posix() if report.exists() else None
            # "./": a first directory named like "javascript:x" stays a path, not a URL scheme.
            link = f"./{link}" if link is not None else None
        except ValueError:
            link = report.resolve().as_uri()
        data[run.name] = {"layers": run.n_layers, "heads": run.n_heads, "report": link,
                          "stats": head_statistics(run.heads, run.n_layers, run.n_heads)}  # fmt: skip
    return data


def build_compare_html(
    runs: list[Run],
    tables: dict[str, pd.DataFrame],
    written: dict[str, list[Path]],
    out_dir: str | Path,
    panels: dict[str, list[HeatmapPanel]] | None = None,
    staging: str | Path | None = None,
) -> Path:
    """Write ``OUT_DIR/compare.html``: the tables and figures of a comparison on one offline page.

    Parameters
    ----------
    runs : list of Run
        With unique names.
    tables : dict of str to DataFrame
        ``models``, ``top_heads``, ``centres_of_gravity`` and ``blosum`` as `compare_runs` builds them.
    written : dict of str to list of Path
        `write_compare_figures`'s output.
    out_dir : path
    panels : dict of str to list of HeatmapPanel, optional
        Where each model's heatmap lies in each property's figure: those heatmaps become clickable, and a
        head explorer shows the clicked head's statistics.
    staging : path, optional
        Where to write the page (default `out_dir`, where it will live and its links point from).
    """
    context = _figures_context(runs, tables, written, panels or {})
    names = [run.name for run in runs]
    sources = [
        {"name": run.name, "data": run.data, "proteins": fmt_count(run.summary.get("n_proteins")),
         "residues": fmt_count(run.summary.get("n_residues")), "path": str(run.path)}
        for run in runs
    ]  # fmt: skip
    text = render(
        "compare.html",
        # No NGL: the comparison draws no 3D views (each model's report.html does), so it needs none.
        ngl_js=None,
        title=f"plmlens compare: {_listing(names)}",
        listing=_listing(names),
        notes=comparison_notes(runs),
        models=_models_html(tables["models"], runs),
        sources=sources,
        explorer=_head_explorer(runs, Path(out_dir)) if panels else None,
        feature_coverage=coverage_context((run.name, run.path) for run in runs),
        **context,
    )
    return write_text_atomic(Path(staging if staging is not None else out_dir) / "compare.html", text)


def _figures_context(
    runs: list[Run],
    tables: dict[str, pd.DataFrame],
    written: dict[str, list[Path]],
    panels: dict[str, list[HeatmapPanel]],
) -> dict:
    """The figures and the tables beside them, for ``compare.html``; None where a run set has nothing to show."""
    names = [run.name for run in runs]
    properties = structural_properties(runs)
    top = tables["top_heads"]
    context: dict = dict.fromkeys(("significant", "layers", "centres", "blosum", "probes", "regression",
                                   "without_probes"))  # fmt: skip
    if properties:
        context["significant"] = _significant_html(top, properties, names)
    context["properties"] = [_property_section(prop, written, panels.get(prop), top) for prop in properties]
    if "layers" in written:
        context["layers"] = Picture.from_file(written["layers"][0], "layer profiles on a relative-depth axis")
    if "centres_of_gravity" in written:
        context["centres"] = {"figure": Picture.from_file(written["centres_of_gravity"][0], "centres of gravity"),
                              "table": _centres_html(tables["centres_of_gravity"], properties, names)}  # fmt: skip
    blosum = tables["blosum"]
    if blosum["r"].notna().any():
        context["blosum"] = _table(pd.DataFrame({"model": blosum["model"], "r (model)": blosum["r"].map(fmt_number),
                                                 "r (null model)": blosum["null_r"].map(fmt_number)}))  # fmt: skip
    if "probes" in written:
        context["probes"] = Picture.from_file(written["probes"][0], "probe curves, one panel per model")
        context["regression"] = _regression_html(runs)
    without = [run.name for run in runs if run.probes is None or not len(run.probes)]
    if without:
        they = "they are" if len(without) > 1 else "it is"
        context["without_probes"] = (
            f"No probe results (RUN_DIR/probe/probes.csv) for {_listing(without)}: {they} left out of the probe figure."
        )
    return context


def _property_section(prop: str, written: dict[str, list[Path]], panels: list[HeatmapPanel] | None,
                      top: pd.DataFrame) -> dict:  # fmt: skip
    """One property's heatmaps (clickable where `panels` says where each model's lies), top heads and table."""
    return {
        "title": figures.label(prop),
        "heatmap": Picture.from_file(written[f"heads_{prop}"][0], f"{prop}: attention per head, one panel per model"),
        "panels": panels or [],
        "top_heads": Picture.from_file(written[f"top_{prop}"][0], f"{prop}: top heads beside the null model"),
        "table": _top_heads_html(top[top["property"] == prop]),
    }


#: What `compare_runs` writes; ``compare.html`` marks a finished comparison.
COMPARE_OUTPUTS = OutputSet(
    ("models.csv", "top_heads.csv", "centres_of_gravity.csv", "blosum.csv", "figures", "compare.html"),
    record="compare.html",
)


def compare_runs(
    run_dirs: list[str | Path], out_dir: str | Path, *, allow_mixed: bool = False, staging: str | Path | None = None
) -> dict[str, Path]:
    """Compare ``analyze`` runs of several models: tables, figures (one panel per model) and ``compare.html``.

    Parameters
    ----------
    run_dirs : list of path
        ``analyze`` output directories; probe results, where present, in ``RUN_DIR/probe``.
    out_dir : path
        Receives ``models.csv`` (table 1 with θ, support, random-weight controls and total arcs),
        ``top_heads.csv``, ``centres_of_gravity.csv``, ``blosum.csv``, ``figures/*.png|svg`` and
        ``compare.html``; every file is written whole or not at all.
    allow_mixed : bool
        Compare runs made with different θ (refused otherwise).
    staging : path, optional
        Write the files here instead, to be moved to `out_dir` afterwards (`plmlens.outputs`); links from
        compare.html to the runs' reports are made for `out_dir`.

    Returns
    -------
    dict of str to Path
        Every file written, keyed by its path relative to `out_dir` (e.g. ``"figures/heads_contact.png"``).

    Raises
    ------
    CompareError
        No runs; a directory that is not an analyze output or is given twice; different θ without
        `allow_mixed`.
    """
    if not run_dirs:
        raise CompareError("no runs to compare")
    out_dir = Path(out_dir)
    runs = unique_names([load_run(path) for path in run_dirs])
    check_thresholds(runs, allow_mixed)
    tables = {
        "models": models_table(runs),
        "top_heads": top_heads_table(runs),
        "centres_of_gravity": centres_table(runs),
        "blosum": blosum_table(runs),
    }
    target = Path(staging) if staging is not None else out_dir
    written = {
        f"{name}.csv": write_text_atomic(target / f"{name}.csv", frame.to_csv(index=False))
        for name, frame in tables.items()
    }
    figure_paths, panels = _write_compare_figures(runs, target)
    for paths in figure_paths.values():
        written.update({path.relative_to(target).as_posix(): path for path in paths})
    written["compare.html"] = build_compare_html(runs, tables, figure_paths, out_dir, panels, target)
    return written


__all__ = [
    "COMPARE_OUTPUTS",
    "CompareError",
    "Run",
    "arcs_total",
    "blosum_table",
    "build_compare_html",
    "centres_table",
    "check_thresholds",
    "compare_runs",
    "comparison_notes",
    "load_run",
    "models_table",
    "top_heads_table",
    "unique_names",
    "write_compare_figures",
]
