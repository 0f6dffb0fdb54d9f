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
from plmlens.analysis import Accumulator, AnalysisResult
from plmlens.proteins import Protein
from plmlens.report import AttentionView, build_report, figures
from plmlens.report.view import page


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
