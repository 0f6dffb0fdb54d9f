"""Report: figure structure for any model shape, the offline HTML report, and the 3D views rendered in a
real headless Chromium (no console errors, a non-blank canvas)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import line_positions
from plmlens.analysis import PROPERTIES, Accumulator, AnalysisResult, headline_properties
from plmlens.proteins import Protein
from plmlens.report import AttentionView, build_report, figures
from plmlens.report.view import page

#: Every registered property drawn on its own (the longest labels must fit the figures).
HEADLINE = headline_properties(PROPERTIES)


def synthetic_heads(n_layers: int, n_heads: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for prop in ("contact", "binding_site"):
        for layer in range(1, n_layers + 1):
            for head in range(1, n_heads + 1):
                p = rng.uniform(0, 0.5)
                rows.append({"property": prop, "layer": layer, "head": head, "proportion": p, "background": 0.05,
                             "few_arcs": rng.random() < 0.1, "ci_low": p * 0.9, "ci_high": min(1, p * 1.1),
                             "null_proportion": 0.05 + rng.uniform(0, 0.01)})  # fmt: skip
    return pd.DataFrame(rows)


@pytest.mark.parametrize(("n_layers", "n_heads"), [(12, 12), (30, 16), (12, 64), (8, 8)])
def test_head_heatmap_axes_follow_the_model_shape(n_layers, n_heads):
    fig = figures.head_heatmap(synthetic_heads(n_layers, n_heads), "contact")
    heat, bar = fig.axes[0], fig.axes[1]
    assert heat.get_xlabel() == "Head" and heat.get_ylabel() == "Layer"
    x_labels = [int(t.get_text()) for t in heat.get_xticklabels()]
    y_labels = [int(t.get_text()) for t in heat.get_yticklabels()]
    assert x_labels[0] == 1 and x_labels[-1] <= n_heads and x_labels[-1] > n_heads - 8
    assert y_labels[0] == 1 and y_labels[-1] <= n_layers and y_labels[-1] > n_layers - 4
    assert heat.images[-1].get_array().shape == (n_layers, n_heads)
    assert len(bar.patches) == n_layers  # one bar per layer: its maximum


def test_top_heads_figure_has_model_and_null_panels():
    fig = figures.top_heads_figure(synthetic_heads(12, 12), "contact", k=10)
    model, null = fig.axes[:2]
    assert len(model.patches) == 10 and len(null.patches) == 10
    assert all(re.fullmatch(r"\d+-\d+", t.get_text()) for t in model.get_xticklabels())
    assert "null" in null.get_title()


def small_run(tmp_path) -> tuple:
    """A run directory written by the real analysis code from synthetic attention."""
    ca = line_positions(30, 3.8)
    ca[20:] = ca[:10] + np.array([0.0, 5.0, 0.0])  # residues 20-29 lie next to 0-9: contacts
    protein = Protein(id="syn.A", sequence="ACDEFGHIKLMNPQRSTVWY" + "ACDEFGHIKL", ca=ca, cb=ca,
                      dssp="HHHHHEEEEETTTTT---------HHHHHH", binding_site=np.arange(30) % 5 == 0)  # fmt: skip
    acc = Accumulator(2, 3, ("contact", "binding_site", "helix", "amino_acids"), n_bootstrap=5)
    batch = acc.start_batch([protein], [30], positions=[0])
    rng = np.random.default_rng(0)
    import torch

    for layer in range(2):
        attention = torch.from_numpy(rng.dirichlet(np.full(30, 0.05), size=(1, 3, 30)).astype(np.float32))
        batch.add_layer(layer, attention)
    acc.commit(batch)
    result = AnalysisResult(acc, info={"model": {"name": "synthetic", "layers": 2, "heads": 3}, "data": "syn"})
    result.save(tmp_path)
    return protein, result


def test_report_is_self_contained(tmp_path):
    protein, _ = small_run(tmp_path)
    view = AttentionView(protein, np.eye(30, k=20) * 0.8 + np.eye(30, k=-20) * 0.8, "synthetic view")
    path = build_report(tmp_path, [view])
    text = path.read_text()
    assert "NGL" in text and "data:image/png;base64," in text
    markup = re.sub(r"<script>.*?</script>", "", text, flags=re.S)  # NGL's own code mentions URLs in strings
    assert not re.search(r"""(src|href)=["']https?://""", markup)  # nothing is fetched from the network
    for stem in ("heads_contact", "top_binding_site", "layers", "amino_acids", "blosum"):
        assert (tmp_path / "figures" / f"{stem}.png").exists() and (tmp_path / "figures" / f"{stem}.svg").exists()
    assert len(view.arcs()) == 20 and view.labels()[0]["text"][0] in protein.sequence


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("integration input missing: Debian chromium (apt-get install chromium)", pytrace=False)
    return path


def render(html_path, tmp_path) -> tuple[dict, np.ndarray, list[str]]:
    """Open a page in headless Chromium without network: its DOM state, a screenshot, console errors."""
    common = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--enable-unsafe-swiftshader", "--proxy-server=127.0.0.1:9", "--enable-logging=stderr", "--v=0",
              "--virtual-time-budget=20000", "--window-size=1300,1800"]  # fmt: skip
    url = html_path.resolve().as_uri()
    dom = subprocess.run([*common, f"--user-data-dir={tmp_path / 'profile-dom'}", "--dump-dom", url],
                         capture_output=True, text=True, timeout=180)  # fmt: skip
    shot = tmp_path / "shot.png"
    snap = subprocess.run([*common, f"--user-data-dir={tmp_path / 'profile-shot'}", f"--screenshot={shot}", url],
                          capture_output=True, text=True, timeout=180)  # fmt: skip
    body = re.search(r"<body([^>]*)>", dom.stdout)
    attributes = dict(re.findall(r'data-(\w+)="([^"]*)"', body.group(1))) if body else {}
    logged = [line for line in (dom.stderr + snap.stderr).splitlines() if "CONSOLE" in line and "Uncaught" in line]
    return attributes, np.asarray(Image.open(shot).convert("RGB")), logged


@pytest.mark.integration
@pytest.mark.parametrize("kind", ["view", "report"])
def test_pages_render_in_headless_chromium(tmp_path, kind):
    protein, _ = small_run(tmp_path / "run")
    attention = np.eye(30, k=20) * 0.8 + np.eye(30, k=-20) * 0.8
    view = AttentionView(protein, attention, "synthetic attention")
    html_path = view.save(tmp_path / "view.html") if kind == "view" else build_report(tmp_path / "run", [view])
    attributes, pixels, logged = render(html_path, tmp_path)
    assert logged == []
    assert json.loads(attributes.get("errors", "null")) == [], attributes
    assert attributes.get("stages") == "1"
    # The 3D canvas drew: NGL's stage (left, 640 px wide) holds the grey trace and the blue attention arcs.
    stage = pixels[:, :660].astype(int)
    blue = (stage[..., 2] > 120) & (stage[..., 0] < 60) & (stage[..., 1] > 60) & (stage[..., 1] < 160)
    assert blue.sum() > 200, blue.sum()


def test_page_without_ngl_is_a_clear_error(monkeypatch):
    from plmlens.report import view as view_module

    view_module.ngl_javascript.cache_clear()
    monkeypatch.setenv("PLMLENS_NGL_JS", "/nonexistent/ngl.js")
    monkeypatch.setattr(view_module.sys, "prefix", "/nonexistent")
    monkeypatch.setattr(view_module, "__file__", "/nonexistent/a/b/c/view.py")
    monkeypatch.chdir("/")
    try:
        with pytest.raises(view_module.ViewerError, match="npm install"):
            page("x", "")
    finally:
        view_module.ngl_javascript.cache_clear()


def texts_outside_canvas(fig) -> list[str]:
    """Drawn, non-empty texts whose extent leaves the figure (tick labels only where the tick is in view)."""
    import matplotlib

    fig.canvas.draw()
    renderer, box = fig.canvas.get_renderer(), fig.bbox
    tick_labels, drawn = set(), []
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            low, high = sorted(axis.get_view_interval())
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                tick_labels.update({id(tick.label1), id(tick.label2)})
                if low - 1e-9 <= tick.get_loc() <= high + 1e-9:
                    drawn += [t for t in (tick.label1, tick.label2) if t.get_visible()]
    drawn += [t for t in fig.findobj(matplotlib.text.Text) if id(t) not in tick_labels and t.get_visible()]
    outside = []
    for text in drawn:
        if text.get_text().strip():
            e = text.get_window_extent(renderer)
            if e.x0 < box.x0 - 1 or e.y0 < box.y0 - 1 or e.x1 > box.x1 + 1 or e.y1 > box.y1 + 1:
                outside.append(text.get_text())
    return outside


@pytest.mark.parametrize(("n_layers", "n_heads"), [(8, 8), (30, 16)])
def test_report_figures_keep_every_text_inside_the_canvas(n_layers, n_heads):
    import matplotlib.pyplot as plt

    from plmlens.proteins import STANDARD_AMINO_ACIDS

    heads = synthetic_heads(n_layers, n_heads)
    # The longest label ("Contact (12–23)") made the heatmap title overflow on narrow models.
    heads.loc[heads["property"] == "contact", "property"] = "contact_medium"
    amino = pd.concat([synthetic_heads(n_layers, n_heads, seed=1).assign(property=f"aa_{a}")
                       for a in STANDARD_AMINO_ACIDS])  # fmt: skip
    layers = pd.DataFrame([{"property": p, "layer": k, "mean_proportion": 0.1 + 0.01 * k}
                           for p in HEADLINE for k in range(1, n_layers + 1)])  # fmt: skip
    probes = pd.DataFrame([{"task": t, "metric": m, "representation": r, "layer": k, "value": 0.5, "chance": 0.1}
                           for t, m in figures.PROBE_METRICS.items() for r in ("embedding", "attention")
                           for k in range(n_layers + 1)])  # fmt: skip
    built = {
        "heads": figures.head_heatmap(heads, "contact_medium"),
        "top": figures.top_heads_figure(heads, "contact_medium"),
        "layers": figures.layer_profiles(layers, {p: n_layers / 2 for p in HEADLINE}, HEADLINE),
        "amino_acids": figures.amino_acid_heatmaps(amino),
        "blosum": figures.blosum_figure(np.eye(20), 0.18591591918095768),
        "probes": figures.probe_curves(probes),
    }
    try:
        for name, fig in built.items():
            assert texts_outside_canvas(fig) == [], name
    finally:
        for fig in built.values():
            plt.close(fig)


def synthetic_examples(protein: Protein, n_layers: int = 2, n_heads: int = 3):
    """Examples over `protein` and a second protein: head 1-1 has more arcs above θ on the second."""
    from plmlens.report.interactive import ExampleCollector

    other = protein.subset(slice(0, 25))
    other.id = "syn.B"
    collector = ExampleCollector(n_layers, n_heads, theta=0.3, min_weight=0.05)
    rng = np.random.default_rng(1)
    for record in (protein, other):
        n = len(record)
        for layer in range(n_layers):
            attention = rng.dirichlet(np.full(n, 0.05), size=(n_heads, n)).astype(np.float32)
            if record is other and layer == 0:
                attention[0] = np.eye(n, k=1) * 0.6 + np.eye(n, k=-1) * 0.35  # 1-1: 2n - 2 arcs above θ
            collector.add(record, layer, attention)
    return collector, other


def test_example_collector_keeps_each_heads_best_proteins_compactly(tmp_path):
    import base64

    protein, _ = small_run(tmp_path)
    collector, _ = synthetic_examples(protein)
    examples = collector.select(per_head=1)
    assert [e.protein.id for e in examples.examples][examples.top[0][0]] == "syn.B"
    assert len(examples.top) == 6 and all(len(t) == 1 for t in examples.top)
    assert len({e.protein.id for e in examples.examples}) == len(examples.examples)  # deduplicated
    example = next(e for e in examples.examples if e.protein.id == "syn.B")
    assert example.counts[0] == 2 * 25 - 2
    assert example.w.dtype == np.float16 and example.w.min() >= 0.05 and (example.i != example.j).all()
    encoded = example.encoded(6)
    offsets = np.frombuffer(base64.b64decode(encoded["offsets"]), "<i4")
    weights = np.frombuffer(base64.b64decode(encoded["w"]), "<f2")
    i = np.frombuffer(base64.b64decode(encoded["i"]), "<u2")
    j = np.frombuffer(base64.b64decode(encoded["j"]), "<u2")
    assert offsets[-1] == len(weights) == len(example.w)
    head_one = slice(offsets[0], offsets[1])
    assert sorted(zip(i[head_one].tolist(), j[head_one].tolist(), strict=True)) == sorted(
        [(k, k + 1) for k in range(24)] + [(k + 1, k) for k in range(24)]
    )
    assert np.allclose(weights[head_one].astype(float), np.where(i[head_one] < j[head_one], 0.6, 0.35), atol=1e-3)
    per_head = collector.select(per_head=2)
    assert all(len(t) == 2 and len(set(t)) == 2 for t in per_head.top)


def test_marked_chain_pdb_fades_residues_the_model_did_not_see(tmp_path, pdb_builder):
    from plmlens.report.view import marked_chain_pdb

    builder = pdb_builder()
    for number in range(1, 31):
        builder.residue("LEU", "H", number, line_positions(30, 3.8)[number - 1])
    path = tmp_path / "fab.pdb"
    path.write_text(builder.text())
    domain = Protein(id="fab.H", sequence="L" * 20, source=str(path), chain="H", ca=line_positions(20, 3.8),
                     meta={"variable_domain": (1, 20)})  # fmt: skip
    pdb, representation = marked_chain_pdb(domain)
    atoms = [line for line in pdb.splitlines() if line.startswith("ATOM")]
    marks = {int(line[22:26]): float(line[60:66]) for line in atoms}
    assert representation == "cartoon"
    assert all(marks[n] == 1.0 for n in range(1, 21)) and all(marks[n] == 0.0 for n in range(21, 31))
    assert {line[12:16].strip() for line in atoms} <= {"N", "CA", "C", "O", "CB"}
    from plmlens.report.interactive import analysed_text

    assert analysed_text(domain) == "chain H, residues 1–20: 20 residues, the variable domain"


def test_report_numbers_are_rounded_and_heatmaps_clickable(tmp_path):
    protein, _ = small_run(tmp_path)
    collector, _ = synthetic_examples(protein)
    text = build_report(tmp_path, examples=collector.select()).read_text()
    markup = re.sub(r"<script[^>]*>.*?</script>", "", text, flags=re.S)
    markup = re.sub(r"base64,[A-Za-z0-9+/=]+", "", markup)
    assert not re.findall(r"\d\.\d{4,}", markup)  # e.g. "r = 0.18591591918095768" before
    assert re.search(r"model r = (–|-?\d\.?\d{0,3}),", markup)
    from plmlens.report.numbers import fmt_number, fmt_p, fmt_percent

    assert (fmt_number(0.18591591918095768), fmt_percent(0.18591), fmt_p(1.234e-7)) == ("0.186", "18.6%", "1.23e-07")
    assert re.search(r"<td>\d+\.\d%</td>", markup)  # proportions as percentages, one decimal
    from plmlens.report.run_report import _table

    shown = _table(pd.DataFrame({"head": ["8-8"], "n_arcs": [1234], "proportion": [0.18591], "enrichment": [1.23456],
                                 "p_bonferroni": [1.234e-7], "significant": [True]}))  # fmt: skip
    cells = re.findall(r"<td>(.*?)</td>", shown)
    assert cells[1:] == ["1234", "18.6%", "1.23", "1.23e-07", "True"] and 'data-layer="8" data-head="8"' in cells[0]
    cells = re.findall(r'<button class="cell" data-key="contact" data-layer="(\d)" data-head="(\d)"', markup)
    assert sorted(set(cells)) == [(str(a), str(b)) for a in (1, 2) for b in (1, 2, 3)] and len(cells) == 6
    data = json.loads(re.search(r'<script type="application/json" id="explorer-data">(.*?)</script>', text,
                                flags=re.S).group(1).replace("<\\/", "</"))  # fmt: skip
    assert {p["id"] for p in data["examples"]["proteins"]} == {"syn.A", "syn.B"}
    assert set(data["stats"]) >= {"contact", "binding_site", "helix", "aa_A"}
    assert len(data["stats"]["contact"]["proportion"]) == 6
    without = build_report(tmp_path, examples_note="model offline").read_text()
    assert "No 3D view: model offline." in without and '<div class="stage" id="explorer-stage">' not in without


@pytest.mark.integration
def test_clicking_a_head_draws_it_on_the_structure(tmp_path):
    protein, _ = small_run(tmp_path / "run")
    collector, _ = synthetic_examples(protein)
    examples = collector.select()
    path = build_report(tmp_path / "run", examples=examples, draw_weight=0.1)
    from plmlens.report.run_report import _initial_head

    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    initial = "-".join(map(str, _initial_head(summary, pd.read_csv(tmp_path / "run" / "heads.csv"))))
    layer, head = (2, 3) if initial != "2-3" else (1, 2)
    flat = (layer - 1) * 3 + head - 1
    best = examples.examples[examples.top[flat][0]]
    expected = int((best.w[best.head == flat].astype(np.float32) >= np.float32(0.1)).sum())
    script = f"""<script>
window.addEventListener("load", () => setTimeout(() => {{
  const status = document.getElementById("explorer-status");
  document.body.dataset.before = status.dataset.head + "|" + status.dataset.arcs;
  document.querySelector('.cells .cell[data-key="contact"][data-layer="{layer}"][data-head="{head}"]').click();
  setTimeout(() => {{
    document.body.dataset.after = status.dataset.head + "|" + status.dataset.arcs + "|" + status.dataset.protein;
  }}, 1500);
}}, 1000));
</script></body>"""
    clicked = tmp_path / "clicked.html"
    clicked.write_text(path.read_text().replace("</body>", script))
    attributes, _, logged = render(clicked, tmp_path)
    assert logged == [] and json.loads(attributes.get("errors", "null")) == [], attributes
    assert attributes["before"].split("|")[0] == initial
    assert attributes["after"] == f"{layer}-{head}|{expected}|{best.protein.id}"
    assert attributes.get("stages") == "1"


def test_a_head_without_arcs_above_theta_gets_the_protein_where_it_draws_most():
    from plmlens.report.interactive import ExampleCollector

    collector = ExampleCollector(1, 1, theta=0.3, min_weight=0.05)
    faint, drawn = np.full((1, 6, 6), 0.04, dtype=np.float32), np.zeros((1, 6, 6), dtype=np.float32)
    drawn[0, 0, 3] = drawn[0, 1, 4] = drawn[0, 2, 5] = 0.25  # below θ, but three arcs worth drawing
    for name, attention in (("faint", faint), ("drawn", drawn)):
        collector.add(Protein(id=name, sequence="ACDEFG"), 0, attention)
    examples = collector.select(per_head=2)
    assert [examples.examples[k].protein.id for k in examples.top[0]] == ["drawn", "faint"]
