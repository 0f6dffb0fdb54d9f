"""Comparing runs: table 1, top heads, figures with one panel per model (any shape), mixed θ / data /
support, probe curves with layer 0, the CLI, and compare.html in a real headless Chromium."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from plmlens.analysis import Accumulator, AnalysisResult
from plmlens.cli import app
from plmlens.report import CompareError, compare_runs, figures, load_run
from plmlens.report.compare import (
    fmt_p,
    fmt_percent,
    structural_properties,
    top_heads_table,
    unique_names,
    write_compare_figures,
)

BACKGROUNDS = {"contact": 0.05, "binding_site": 0.1, "helix": 0.3}
SHAPES = {"bert8": (8, 8), "tiny4": (4, 8), "deep30": (30, 16), "wide12": (12, 64)}


def synthetic_run(
    directory, n_layers: int, n_heads: int, *, name: str, data: str = "syn::a", threshold: float = 0.3,
    support: str = "full", random_init: bool = False, properties=tuple(BACKGROUNDS), seed: int = 0,
):  # fmt: skip
    """An analyze output directory in the real formats, from made-up sums: attention to every property
    grows with depth, and a random-weight control has no arc above θ."""
    names = Accumulator(n_layers, n_heads, properties, n_bootstrap=0).property_names
    rng = np.random.default_rng(seed)
    shape = (len(names), n_layers, n_heads)
    background = np.array([BACKGROUNDS.get(p, 0.05) for p in names])
    arcs = np.zeros(shape) if random_init else rng.integers(20, 3000, size=shape).astype(float)
    depth = np.arange(1, n_layers + 1) / n_layers
    rate = np.clip(background[:, None, None] * (0.5 + 3 * depth[None, :, None] * rng.random(shape)), 0, 0.9)
    hits = rng.binomial(arcs.astype(int), rate).astype(float)
    null_hits = rng.binomial(arcs.astype(int), np.broadcast_to(background[:, None, None], shape)).astype(float)
    n_boot = 4
    boot_arcs = np.stack([arcs] * n_boot)
    boot_hits = rng.binomial(boot_arcs.astype(int), np.clip(hits / np.maximum(arcs, 1), 0, 1)).astype(float)
    sums = {"arcs": arcs, "hits": hits, "weight": arcs * 1.5, "weight_hits": hits * 1.4, "null_arcs": arcs,
            "null_hits": null_hits, "null_weight": arcs * 1.5, "null_weight_hits": null_hits * 1.5,
            "background_hits": background * 1e5, "background_total": np.full(len(names), 1e5),
            "boot_arcs": boot_arcs, "boot_hits": boot_hits}  # fmt: skip
    acc = Accumulator(n_layers, n_heads, properties, threshold=threshold, n_bootstrap=n_boot, support=support,
                      sums=sums)  # fmt: skip
    acc.n_proteins, acc.n_residues = 40, 4000
    model = {"name": name, "architecture": "BERT", "layers": n_layers, "heads": n_heads,
             "parameters": 1_000_000 * n_layers, "random_init": random_init}  # fmt: skip
    model["init_seed"] = 7 if random_init else None
    AnalysisResult(acc, info={"model": model, "data": data}).save(directory)
    return directory


def edit_summary(run_dir, **changes):
    """Change summary.json fields; a value of None removes the field (as in runs written before it)."""
    summary = json.loads((run_dir / "summary.json").read_text())
    summary.update(changes)
    summary = {k: v for k, v in summary.items() if v is not None}
    (run_dir / "summary.json").write_text(json.dumps(summary))


def write_probes(run_dir, n_layers: int, with_layer_zero: bool) -> pd.DataFrame:
    rows = []
    first = 0 if with_layer_zero else 1
    for layer in range(first, n_layers + 1):
        score = 0.2 + 0.6 * layer / n_layers
        rows += [("secondary_structure", "embedding", layer, "f1_macro", score, 100, 20, 0.33),
                 ("binding_site", "embedding", layer, "precision_at_L/20", score / 2, 100, 20, 0.1),
                 ("contact", "embedding", layer, "precision_at_L/5", score / 3, 100, 20, 0.05)]  # fmt: skip
        if layer >= 1:  # attention probes exist from the first layer only
            rows.append(("contact", "attention", layer, "precision_at_L/5", score / 2, 100, 20, 0.05))
    frame = pd.DataFrame(rows, columns=["task", "representation", "layer", "metric", "value", "n_train", "n_test",
                                        "chance"])  # fmt: skip
    (run_dir / "probe").mkdir(parents=True, exist_ok=True)
    frame.to_csv(run_dir / "probe" / "probes.csv", index=False)
    regression = pd.DataFrame([(r, k, 0.3, 0.05, 20) for r in ("short", "medium", "long", "all") for k in ("L", "L/5")],
                              columns=["range", "k", "precision", "chance", "n_test"])  # fmt: skip
    regression.to_csv(run_dir / "probe" / "contact_regression.csv", index=False)
    return frame


@pytest.fixture(scope="module")
def four_runs(tmp_path_factory):
    """Runs of four model shapes; the 4×8 one has amino acids, the 8×8 one probes with layer 0."""
    base = tmp_path_factory.mktemp("runs")
    dirs = {}
    for k, (name, (n_layers, n_heads)) in enumerate(SHAPES.items()):
        properties = ("contact", "binding_site", "amino_acids") if name == "tiny4" else ("contact", "binding_site")
        dirs[name] = synthetic_run(base / name, n_layers, n_heads, name=name, properties=properties, seed=k)
    write_probes(dirs["bert8"], 8, with_layer_zero=True)
    write_probes(dirs["tiny4"], 4, with_layer_zero=False)
    return dirs


@pytest.fixture(scope="module")
def compared(four_runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("compare")
    return out, compare_runs(list(four_runs.values()), out)


def test_models_csv_is_table_one(compared, four_runs):
    out, written = compared
    models = pd.read_csv(written["models.csv"])
    assert list(models["name"]) == list(SHAPES)
    assert [(r.layers, r.heads) for r in models.itertuples()] == list(SHAPES.values())
    assert list(models["layers × heads"]) == [f"{a} × {b}" for a, b in SHAPES.values()]
    assert list(models["parameters"]) == [1_000_000 * a for a, _ in SHAPES.values()]
    assert set(models["support"]) == {"full"} and not models["random_init"].any()
    assert (models["threshold"] == 0.3).all() and (models["data"] == "syn::a").all()
    for row in models.itertuples():
        heads = pd.read_csv(four_runs[row.name] / "heads.csv")
        # Every property here is labelled, so the largest per-property count in heads.csv is every arc.
        assert row.n_arcs_total == heads.groupby("property")["n_arcs"].sum().max() > 0
    for key in ("top_heads.csv", "centres_of_gravity.csv", "blosum.csv", "compare.html", "figures/heads_contact.png",
                "figures/heads_contact.svg", "figures/layers.png", "figures/probes.png"):  # fmt: skip
        assert key in written and (out / key).is_file(), key


def test_top_heads_count_significant_heads_from_heads_csv(compared, four_runs):
    _, written = compared
    top = pd.read_csv(written["top_heads.csv"])
    assert set(top["model"]) == set(SHAPES)
    for row in top.itertuples():
        heads = pd.read_csv(four_runs[row.model] / "heads.csv")
        rows = heads[heads["property"] == row.property]
        assert row.n_significant_heads == int(rows["significant"].sum())
        eligible = rows[~rows["few_arcs"]]
        best = eligible.loc[eligible["proportion"].idxmax()]
        assert (row.layer, row.head) == (best["layer"], best["head"]) and row.top_head == f"{row.layer}-{row.head}"
        assert row.enrichment == pytest.approx(best["proportion"] / best["background"])
        assert row.ci_low <= row.proportion <= row.ci_high
    # Depth-graded attention: the 30-layer model has many significant contact heads, not all 480.
    contact = top[(top["model"] == "deep30") & (top["property"] == "contact")].iloc[0]
    assert 0 < contact.n_significant_heads < 480 and contact.n_heads == 480
    blosum = pd.read_csv(written["blosum.csv"])
    assert blosum.set_index("model")["r"].notna().to_dict() == {"bert8": False, "tiny4": True, "deep30": False,
                                                                 "wide12": False}  # fmt: skip


def test_centres_of_gravity_relative_to_depth(compared):
    _, written = compared
    centres = pd.read_csv(written["centres_of_gravity.csv"])
    assert np.allclose(centres["relative_centre_of_gravity"], centres["centre_of_gravity"] / centres["n_layers"])
    assert set(centres["model"]) == set(SHAPES)
    # Attention grows with depth, so every property sits in the second half.
    assert (centres["relative_centre_of_gravity"] > 0.5).all() and (centres["relative_centre_of_gravity"] <= 1).all()


def test_heatmaps_have_one_panel_per_model_in_its_shape(four_runs):
    runs = [load_run(d) for d in four_runs.values()]
    heads = {r.name: r.heads for r in runs}
    fig = figures.compare_head_heatmaps(heads, "contact", {r.name: (r.n_layers, r.n_heads) for r in runs})
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == len(SHAPES)
    for ax, (n_layers, n_heads) in zip(panels, SHAPES.values(), strict=True):
        assert all(image.get_array().shape == (n_layers, n_heads) for image in ax.images)
        x_labels = [int(t.get_text()) for t in ax.get_xticklabels()]
        y_labels = [int(t.get_text()) for t in ax.get_yticklabels()]
        assert x_labels[0] == 1 and y_labels[0] == 1 and len(x_labels) <= 12 and len(y_labels) <= 8
        assert max(x_labels) <= n_heads and max(y_labels) <= n_layers
    # One colour scale across models.
    norms = {(ax.images[-1].norm.vmin, ax.images[-1].norm.vmax) for ax in panels}
    assert len(norms) == 1
    top_proportion = max(r.heads.query("property == 'contact' and not few_arcs")["proportion"].max() for r in runs)
    assert norms.pop()[1] == pytest.approx(100 * top_proportion)
    figures.plt.close(fig)


def test_top_heads_figure_pairs_each_bar_with_its_null(four_runs):
    runs = [load_run(d) for d in four_runs.values()]
    fig = figures.compare_top_heads({r.name: r.heads for r in runs}, "binding_site", k=10)
    panels = fig.axes[: len(runs)]
    for ax, run in zip(panels, runs, strict=True):
        assert ax.get_title() == run.name
        assert len(ax.patches) == 2 * 10
        labels = [t.get_text() for t in ax.get_xticklabels()]
        expected = run.heads.query("property == 'binding_site' and not few_arcs").nlargest(10, "proportion")
        assert labels == [f"{a}-{b}" for a, b in zip(expected["layer"], expected["head"], strict=True)]
    figures.plt.close(fig)


def test_layer_profiles_on_relative_depth(four_runs):
    runs = [load_run(d) for d in four_runs.values()]
    properties = ["contact", "binding_site"]
    fig = figures.compare_layer_profiles({r.name: r.layers for r in runs}, properties,
                                         {r.name: r.n_layers for r in runs})  # fmt: skip
    assert len(fig.axes) == len(properties)
    for ax in fig.axes:
        lines = {line.get_label(): line for line in ax.get_lines()}
        assert set(lines) == set(SHAPES)
        for name, (n_layers, _) in SHAPES.items():
            x = np.asarray(lines[name].get_xdata(), dtype=float)
            assert len(x) == n_layers and (x > 0).all() and (x <= 1).all() and x[-1] == 1
    figures.plt.close(fig)


def test_probe_curves_include_layer_zero(four_runs):
    runs = [load_run(d) for d in four_runs.values()]
    probes = {r.name: r.probes for r in runs if r.probes is not None}
    assert list(probes) == ["bert8", "tiny4"]
    fig = figures.compare_probe_curves(probes)
    with_zero, without_zero = fig.axes[:2]
    embedding = [line for line in with_zero.get_lines() if line.get_label().endswith("(embedding)")]
    assert len(embedding) == 3 and all(min(line.get_xdata()) == 0 and len(line.get_xdata()) == 9 for line in embedding)
    assert "0: embedding" in with_zero.get_xlabel() and "0" not in without_zero.get_xlabel()
    assert min(min(line.get_xdata()) for line in without_zero.get_lines() if len(line.get_xdata()) > 2) == 1
    figures.plt.close(fig)


def test_page_notes_and_rounding(compared):
    out, _ = compared
    text = (out / "compare.html").read_text()
    assert "data:image/png;base64," in text
    assert "mixes datasets" not in text and "random-weight control" not in text
    assert "No probe results" in text and "deep30 and wide12" in text  # runs without probes are named
    # Shown numbers are rounded to at most 3 significant digits (outside inlined images, scripts, their data
    # and styles, e.g. where the clickable cells lie).
    hidden = r"<script[^>]*>.*?</script>|<style>.*?</style>|style=\"[^\"]*\"|base64,[A-Za-z0-9+/=]+"
    markup = re.sub(hidden, "", text, flags=re.S)
    decimals = re.findall(r"\d+\.\d+", markup)
    assert decimals and all(len(d.replace(".", "").lstrip("0")) <= 3 for d in decimals), decimals
    assert not re.search(r"""(src|href)=["']https?://""", markup)
    assert fmt_percent(0.0426166552) == "4.3%" and fmt_percent(0.000106649) == "0.011%"
    assert fmt_p(0.0) == "< 1e-300" and fmt_p(2.93478e-121) == "2.93e-121" and fmt_p(0.04567) == "0.0457"


@pytest.fixture
def unrendered(monkeypatch):
    """Figures are built but not rendered, for tests about tables and notes (the four-model comparison and
    the single-model test render real ones)."""

    def save(fig, stem):
        figures.plt.close(fig)
        png = stem.with_suffix(".png")
        png.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (2, 2), "white").save(png)
        return [png]

    monkeypatch.setattr(figures, "save_figure", save)


def test_mixed_threshold_is_refused_unless_allowed(tmp_path, unrendered):
    a = synthetic_run(tmp_path / "a", 4, 8, name="low", threshold=0.3)
    b = synthetic_run(tmp_path / "b", 8, 8, name="high", threshold=0.5, seed=1)
    with pytest.raises(CompareError, match=r"θ=0\.3.*θ=0\.5") as error:
        compare_runs([a, b], tmp_path / "out")
    assert "\n" not in str(error.value) and str(a) in str(error.value) and str(b) in str(error.value)
    assert not (tmp_path / "out" / "compare.html").exists()
    written = compare_runs([a, b], tmp_path / "out", allow_mixed=True)
    assert list(pd.read_csv(written["models.csv"])["threshold"]) == [0.3, 0.5]
    assert "different attention thresholds" in written["compare.html"].read_text()


def test_mixed_data_support_and_random_control(tmp_path, unrendered):
    a = synthetic_run(tmp_path / "a", 4, 8, name="esm", data="syn::a", properties=("contact",))
    edit_summary(a, n_arcs_total=123_456)
    b = synthetic_run(tmp_path / "b", 4, 8, name="gpt", data="syn::b", support="causal", properties=("contact",))
    c = synthetic_run(tmp_path / "c", 4, 8, name="esm", random_init=True, properties=("contact",))
    edit_summary(b, n_arcs_total=None)  # older runs: counted from heads.csv
    written = compare_runs([a, b, c], tmp_path / "out")
    models = pd.read_csv(written["models.csv"])
    assert list(models["name"]) == ["esm", "gpt", "esm (random init)"]
    assert list(models["data"]) == ["syn::a", "syn::b", "syn::a"] and list(models["support"]) == ["full", "causal",
                                                                                                 "full"]  # fmt: skip
    assert list(models["random_init"]) == [False, False, True] and models["init_seed"].iloc[2] == 7
    b_arcs = pd.read_csv(b / "heads.csv")["n_arcs"].sum()
    assert list(models["n_arcs_total"]) == [123_456, b_arcs, 0] and b_arcs > 0
    assert list(models["n_arcs_total_source"]) == ["summary.json", "heads.csv:contact", "summary.json"]
    top = pd.read_csv(written["top_heads.csv"])
    control = top[top["model"] == "esm (random init)"]
    assert len(control) == 1 and control["top_head"].isna().all() and (control["n_significant_heads"] == 0).all()
    text = written["compare.html"].read_text()
    assert "mixes datasets" in text and "syn::a: esm and esm (random init); syn::b: gpt" in text
    assert "different support" in text and "j ≤ i" in text
    assert "esm (random init) is a random-weight control (init seed 7)" in text and "It has 0 high-confidence" in text
    assert "No probe results" in text


def test_same_model_twice_gets_run_names_and_bad_dirs_fail(tmp_path):
    a = synthetic_run(tmp_path / "first", 4, 8, name="esm")
    b = synthetic_run(tmp_path / "second", 4, 8, name="esm", seed=1)
    assert [r.name for r in unique_names([load_run(a), load_run(b)])] == ["esm [first]", "esm [second]"]
    with pytest.raises(CompareError, match="given twice"):
        compare_runs([a, a], tmp_path / "out")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CompareError, match=rf"^{re.escape(str(empty))}: not a `plmlens analyze` output"):
        compare_runs([a, empty], tmp_path / "out")
    (empty / "summary.json").write_text("{}")
    with pytest.raises(CompareError, match=r"heads\.csv"):
        load_run(empty)


def test_figures_for_one_random_weight_control(tmp_path):
    """One model, and one without any arc above θ: every figure still renders (no centre of gravity)."""
    run = load_run(synthetic_run(tmp_path / "a", 4, 8, name="solo", random_init=True, properties=("contact",)))
    written = write_compare_figures([run], tmp_path / "out")
    assert set(written) == {"heads_contact", "top_contact", "layers"}
    assert all(path.stat().st_size > 1000 for paths in written.values() for path in paths)
    assert top_heads_table([run])["top_head"].isna().all()


def test_cli_compares_end_to_end(tmp_path, unrendered):
    a = synthetic_run(tmp_path / "a", 4, 8, name="esm [small]")
    b = synthetic_run(tmp_path / "b", 8, 8, name="bert", seed=1, threshold=0.5)
    runner = CliRunner()
    refused = runner.invoke(app, ["compare", str(a), str(b), "--out", str(tmp_path / "out")])
    assert refused.exit_code == 2 and "θ=0.3" in refused.output and "θ=0.5" in refused.output
    result = runner.invoke(app, ["compare", str(a), str(b), "--out", str(tmp_path / "out"), "--allow-mixed"])
    assert result.exit_code == 0, result.output
    assert str(tmp_path / "out" / "compare.html") in result.output.replace("\n", "")
    assert "esm [small]" in result.output and "8 × 8" in result.output
    again = runner.invoke(app, ["compare", str(a), str(b), "--out", str(tmp_path / "out"), "--allow-mixed"])
    assert again.exit_code == 2 and "add --overwrite to replace it" in again.output  # issue 22: never replaced unasked
    replaced = runner.invoke(app, ["compare", str(a), "--out", str(tmp_path / "out"), "--overwrite"])
    assert replaced.exit_code == 0, replaced.output
    missing = runner.invoke(app, ["compare", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out2")])
    assert missing.exit_code == 2 and "nowhere: not a directory" in missing.output


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("integration input missing: Debian chromium (apt-get install chromium)", pytrace=False)
    return path


@pytest.mark.integration
def test_compare_html_loads_in_headless_chromium(compared, tmp_path):
    out, written = compared
    command = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--proxy-server=127.0.0.1:9", "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000",
               f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
               (out / "compare.html").resolve().as_uri()]  # fmt: skip
    dom = subprocess.run(command, capture_output=True, text=True, timeout=180)
    body = re.search(r"<body([^>]*)>", dom.stdout)
    assert body, dom.stderr[-2000:]
    attributes = dict(re.findall(r'data-(\w+)="([^"]*)"', body.group(1)))
    assert [line for line in dom.stderr.splitlines() if "CONSOLE" in line and "Uncaught" in line] == []
    assert json.loads(attributes.get("errors", "null")) == [], attributes
    n_images = len([key for key in written if key.startswith("figures/") and key.endswith(".png")])
    assert n_images == 7 and attributes.get("images") == attributes.get("decoded") == str(n_images), attributes


def test_compare_heatmaps_are_clickable(compared):
    out, _ = compared
    page = (out / "compare.html").read_text()
    properties = structural_properties([load_run(run) for run in pd.read_csv(out / "models.csv")["run_dir"]])
    for name, (layers, heads) in SHAPES.items():
        # One button per head of each model, in every property's heatmap.
        assert page.count(f'class="cell" data-key="{html.escape(name)}"') == layers * heads * len(properties), name
    assert 'id="compare-heads"' in page and 'data-head-scope="key"' in page


@pytest.mark.integration
def test_clicking_a_compared_head_shows_its_statistics(compared, tmp_path):
    out, _ = compared
    name, (layers, heads) = list(SHAPES.items())[2]
    script = f"""<script>
window.addEventListener("load", () => setTimeout(() => {{
  document.querySelector('.cells .cell[data-key="{name}"][data-layer="{layers}"][data-head="{heads}"]').click();
  setTimeout(() => {{
    const status = document.getElementById("explorer-status");
    document.body.dataset.after = status.dataset.head;
    document.body.dataset.rows = String(document.querySelectorAll("#explorer-table tr").length - 1);
    document.body.dataset.selected = String(document.querySelectorAll(".cells .cell.selected").length);
  }}, 500);
}}, 500));
</script></body>"""
    clicked = out / "clicked.html"
    clicked.write_text((out / "compare.html").read_text().replace("</body>", script))
    command = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
               "--disable-background-networking", "--proxy-server=127.0.0.1:9", "--virtual-time-budget=10000",
               f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", clicked.resolve().as_uri()]  # fmt: skip
    dom = subprocess.run(command, capture_output=True, text=True, timeout=180)
    body = re.search(r"<body([^>]*)>", dom.stdout)
    assert body, dom.stderr[-2000:]
    attributes = dict(re.findall(r'data-(\w+)="([^"]*)"', body.group(1)))
    assert attributes.get("after") == f"{name} {layers}-{heads}", attributes
    # Every property of that model's heads.csv, and the head selected in that model's panels only.
    run = load_run(pd.read_csv(out / "models.csv")["run_dir"][2])
    assert int(attributes["rows"]) == run.heads["property"].nunique()
    assert int(attributes["selected"]) == len(
        structural_properties([load_run(r) for r in pd.read_csv(out / "models.csv")["run_dir"]])
    )


def test_contact_prediction_table_shows_every_method_and_reads_older_runs():
    from types import SimpleNamespace

    from plmlens.report.compare import _regression_html

    columns = ["range", "k", "precision", "chance", "n_test"]
    new = pd.DataFrame([("long", "L/5", 0.2, 0.03, 6, "regression"), ("long", "L/5", 0.9, 0.03, 6, "template"),
                        ("long", "L", 0.1, 0.03, 6, "template")], columns=[*columns, "method"])  # fmt: skip
    old = pd.DataFrame([("long", "L/5", 0.25, 0.04, 5)], columns=columns)
    table = _regression_html([SimpleNamespace(name="new", contact_regression=new),
                              SimpleNamespace(name="old", contact_regression=old)])  # fmt: skip
    assert table.columns == ["model", "method", "long range"]
    assert table.rows == [["new", "contact regression", "0.2 (chance 0.03)"],
                          ["new", "positional template", "0.9 (chance 0.03)"],
                          ["old", "contact regression", "0.25 (chance 0.04)"]]  # fmt: skip
