"""`plmlens demo` end to end on a few real antibody chains: every offline model on its chain type, the
random-weights control, probes, reports and the comparison."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from plmlens.cli import app


@pytest.mark.integration
def test_demo_compares_every_offline_model(shared_data, tmp_path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--limit", "10", "--sae-sequences", "150", "--out", str(out)])
    assert result.exit_code == 0, result.output
    runs = ["antiberty", "sapiens-heavy", "sapiens-light", "iglm", "antiberty-random"]
    for run in runs:
        assert (out / run / "report.html").is_file() and (out / run / "probe" / "probes.csv").is_file(), run
    models = pd.read_csv(out / "models.csv").set_index("run_dir")
    assert len(models) == 5 and (out / "compare.html").is_file()
    # compare.html was written in a staging folder and moved: its links still lead to the runs' reports.
    assert '"report":"./antiberty/report.html"' in (out / "compare.html").read_text()
    again = CliRunner().invoke(app, ["demo", "--limit", "10", "--sae-sequences", "150", "--out", str(out)])
    assert again.exit_code == 2 and "add --overwrite to replace it" in again.output  # issue 22
    rows = {run: models.loc[str(out / run)] for run in runs}
    assert rows["sapiens-heavy"]["data"].endswith("chain_type=heavy")
    assert rows["sapiens-light"]["data"].endswith("chain_type=light")
    assert rows["iglm"]["support"] == "causal" and rows["antiberty"]["support"] == "full"
    # The paper's random-weights control: no attention above θ; the pretrained model has plenty.
    assert bool(rows["antiberty-random"]["random_init"]) and rows["antiberty-random"]["n_arcs_total"] == 0
    assert rows["antiberty"]["n_arcs_total"] > 1000
    summaries = {run: json.loads((out / run / "summary.json").read_text()) for run in runs}
    heavy, light = summaries["sapiens-heavy"]["n_proteins"], summaries["sapiens-light"]["n_proteins"]
    assert heavy > 0 and light > 0 and heavy + light <= summaries["antiberty"]["n_proteins"]
    # AntiBERTy's SAE, trained on synthetic sequences, its concepts with the random-weight model's SAE as control,
    # and the feature browser in its report; the stores are gone.
    concepts = json.loads((out / "antiberty" / "features" / "layer4" / "concepts" / "summary.json").read_text())
    assert concepts["n_proteins"]["validation"] + concepts["n_proteins"]["test"] == summaries["antiberty"]["n_proteins"]
    assert concepts["matched_concepts"]["random_model"] is not None and "cdr_h3" in concepts["concept_names"]
    assert (out / "antiberty-random" / "features" / "layer4" / "sae.json").is_file()
    assert not list(out.glob("*/features/.store"))
    assert 'id="features"' in (out / "antiberty" / "report.html").read_text()
    # Layer 0 (the embedding layer) is probed for every model.
    for run in runs:
        probes = pd.read_csv(out / run / "probe" / "probes.csv")
        assert 0 in set(probes[probes.representation == "embedding"].layer), run
