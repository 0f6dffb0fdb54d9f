"""One owner of a run directory (`plmlens.rundir.RunDir`) and of property names (the property registry):
a property registered once appears in report.html and compare.html with no other edit."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import line_positions
from plmlens.analysis import PROPERTIES, Accumulator, AnalysisResult, Property, register_property
from plmlens.analysis.properties import TOKEN, headline_properties, property_family, property_label
from plmlens.proteins import Protein
from plmlens.report import build_report, compare_runs, load_run
from plmlens.report import figures as report_figures
from plmlens.report.figures import figure_stem
from plmlens.rundir import ABLATION, OUTPUT_KINDS, SUMMARY_DEFAULTS, RunDir, RunDirError


def _protein() -> Protein:
    ca = line_positions(30, 3.8)
    ca[20:] = ca[:10] + np.array([0.0, 5.0, 0.0])
    return Protein(id="syn.A", sequence="ACDEFGHIKLMNPQRSTVWY" + "ACDEFGHIKL", ca=ca, cb=ca,
                   dssp="HHHHHEEEEETTTTT---------HHHHHH", binding_site=np.arange(30) % 5 == 0)  # fmt: skip


def _run(directory, properties, name="synthetic", seed=0) -> AnalysisResult:
    """A run directory written by the real analysis code from synthetic attention."""
    protein = _protein()
    acc = Accumulator(2, 3, properties, n_bootstrap=0)
    batch = acc.start_batch([protein], [30], positions=[0])
    rng = np.random.default_rng(seed)
    for layer in range(2):
        batch.add_layer(layer, torch.from_numpy(rng.dirichlet(np.full(30, 0.05), size=(1, 3, 30)).astype(np.float32)))
    acc.commit(batch)
    result = AnalysisResult(acc, info={"model": {"name": name, "layers": 2, "heads": 3}, "data": "syn"})
    result.save(directory)
    return result


@pytest.fixture
def glycine_like():
    """A property registered the way a user would: one function and one registration, with a label."""

    def small(protein: Protein) -> np.ma.MaskedArray:
        return np.ma.asarray(np.array([c in "AGS" for c in protein.sequence]))

    prop = register_property(Property("tiny_residue", TOKEN, small, "attention to A, G, S", label="Tiny residue"))
    yield prop
    del PROPERTIES[prop.name]


def test_registered_property_gets_heatmap_top_heads_and_layer_profile(tmp_path, glycine_like, monkeypatch):
    run_a, run_b = tmp_path / "a", tmp_path / "b"
    _run(run_a, ("contact", "tiny_residue", "amino_acids"), "model-a")
    _run(run_b, ("contact", "tiny_residue"), "model-b", seed=1)
    profiled: list[list[str]] = []
    original = report_figures.layer_profiles

    def layer_profiles(layers, centres, properties=None):
        profiled.append(list(properties))
        return original(layers, centres, properties)

    compared: list[list[str]] = []
    original_compare = report_figures.compare_layer_profiles

    def compare_layer_profiles(layers, properties, *args, **kwargs):
        compared.append(list(properties))
        return original_compare(layers, properties, *args, **kwargs)

    monkeypatch.setattr(report_figures, "layer_profiles", layer_profiles)
    monkeypatch.setattr(report_figures, "compare_layer_profiles", compare_layer_profiles)
    text = build_report(run_a).read_text()
    assert (run_a / "figures" / "heads_tiny_residue.png").is_file() and (
        run_a / "figures" / "top_tiny_residue.png"
    ).is_file()
    assert "Tiny residue" in text and profiled == [["contact", "tiny_residue"]]
    written = compare_runs([run_a, run_b], tmp_path / "compare")
    page = written["compare.html"].read_text()
    assert {"figures/heads_tiny_residue.png", "figures/top_tiny_residue.png"} <= set(written)
    assert "Tiny residue" in page and ["contact", "tiny_residue"] in compared
    assert property_family("tiny_residue") is None and property_label("tiny_residue") == "Tiny residue"


def test_amino_acids_stay_in_their_own_panel_and_unknown_names_are_their_own_label():
    names = ["aa_C", "contact", "someone_elses", "aa_A", "helix"]
    assert headline_properties(names) == ["contact", "helix", "someone_elses"]
    assert property_label("someone_elses") == "someone_elses" and property_label("aa_P") == "Amino acid P"
    assert property_label("contact_long") == "Contact (≥ 24)" and property_family("aa_W") == "amino_acids"


@pytest.mark.parametrize("hostile", ["../../escape", "a/b", "..", ".hidden", "x" * 200, "tab\there", "ünï"])
def test_figure_stems_of_hostile_property_names_stay_inside(hostile):
    stem = figure_stem("heads", hostile)
    assert re.fullmatch(r"heads_[A-Za-z0-9_.+-]+", stem) and "/" not in stem and ".." not in stem


def test_summary_defaults_for_an_older_run_are_written_once(tmp_path):
    _run(tmp_path, ("contact",))
    summary = json.loads((tmp_path / "summary.json").read_text())
    del summary["support"], summary["alpha"]
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    run = RunDir(tmp_path)
    assert run.summary()["support"] == SUMMARY_DEFAULTS["support"] == "full" and run.summary()["alpha"] == 0.05
    assert "support" not in run.raw_summary()
    assert load_run(tmp_path).support == "full"
    assert run.shape() == (2, 3) and list(run.heads()["property"].unique()) == ["contact"]


def test_damaged_or_missing_files_are_one_line_naming_the_file(tmp_path):
    with pytest.raises(RunDirError, match=r"not a directory"):
        RunDir(tmp_path / "nowhere").check()
    with pytest.raises(RunDirError, match=r"no summary\.json, heads\.csv, layers\.csv"):
        RunDir(tmp_path).check()
    _run(tmp_path, ("contact",))
    (tmp_path / "summary.json").write_text("{not json")
    with pytest.raises(
        RunDirError, match=rf"^{re.escape(str(tmp_path / 'summary.json'))}: unreadable \(JSONDecodeError\)$"
    ):
        RunDir(tmp_path).summary()
    (tmp_path / "summary.json").write_text(json.dumps({"model": {}}))
    with pytest.raises(RunDirError, match=r"not an analyze summary \(no threshold\)"):
        RunDir(tmp_path).summary()
    pd.DataFrame({"property": ["contact"]}).to_csv(tmp_path / "heads.csv", index=False)
    with pytest.raises(RunDirError, match=r"damaged heads\.csv \(no column head, layer, proportion\)"):
        RunDir(tmp_path).heads()


def test_outputs_of_other_commands_are_found_where_they_may_be(tmp_path):
    run = RunDir(tmp_path)
    assert run.ablation() is None and run.probes() is None and run.find("jacobian") is None
    (tmp_path / "ablation").mkdir()
    pd.DataFrame({"kind": ["head"], "delta_loss": [0.5]}).to_csv(tmp_path / "ablation" / "ablation.csv", index=False)
    (tmp_path / "ablation" / "ablation.json").write_text(json.dumps({"answer": "x"}))
    table, info, directory = run.ablation()
    assert directory == tmp_path / "ablation" and info == {"answer": "x"} and table["delta_loss"].tolist() == [0.5]
    assert OUTPUT_KINDS["ablation"] is ABLATION and "ablation.json" in ABLATION.outputs.names
    assert run.checkpoint() == tmp_path / "checkpoint.npz"
    assert run.checkpoint(1, 4) == tmp_path / "checkpoint.rank1-of-4.npz"


def test_finished_fingerprint_reads_runs_and_shards_and_ignores_damage(tmp_path):
    run = RunDir(tmp_path)
    assert run.finished_fingerprint() is None
    (tmp_path / "summary.json").write_text(json.dumps({"fingerprint": {"source": "s"}}))
    (tmp_path / "shard.json").write_text(json.dumps({"info": {"fingerprint": {"source": "t"}}}))
    assert run.finished_fingerprint() == {"source": "s"} and run.finished_fingerprint(shard=True) == {"source": "t"}
    (tmp_path / "summary.json").write_text("[1, 2")
    assert run.finished_fingerprint() is None


def test_describe_counts_each_registered_property_as_its_mask_does(glycine_like):
    from plmlens.analysis import get_properties, property_counters
    from plmlens.proteins import describe

    protein = _protein()
    chosen = get_properties(["default", "contact_ranges", "tiny_residue"])
    for prop in chosen:
        values, defined = prop.mask(protein)
        assert prop.count(protein) == (int(values.sum()), int(defined.sum())), prop.name
    by_name = {prop.name: prop.count(protein) for prop in chosen}
    # Residues 20-29 lie next to 0-9: contacts at separation 20 (medium range), none long.
    assert by_name["contact_medium"][0] > 0 and by_name["contact_long"][0] == 0 and by_name["contact_short"][0] >= 0
    assert by_name["contact"][0] == sum(by_name[f"contact_{r}"][0] for r in ("short", "medium", "long"))
    result = describe([protein, protein], counters=property_counters(chosen))
    assert list(result.counters) == [prop.name for prop in chosen]
    assert (result.counters["tiny_residue"].hits, result.counters["tiny_residue"].total) == (
        2 * by_name["tiny_residue"][0],
        60,
    )


def test_a_registered_report_figure_gets_its_section(tmp_path):
    import matplotlib.pyplot as plt

    from plmlens.report import ReportFigure, register_report_figure
    from plmlens.report.run_report import REPORT_FIGURES

    def arcs_per_layer(run: RunDir):
        layers = run.layers()
        rows = layers[layers["property"] == "contact"]
        fig, ax = plt.subplots()
        ax.bar(rows["layer"], rows["n_arcs"])
        return fig

    _run(tmp_path, ("contact",))
    register_report_figure(
        ReportFigure("arcs<per>layer", "Arcs <b>per</b> layer", arcs_per_layer, "n_arcs of layers.csv")
    )
    register_report_figure(ReportFigure("nothing", "Never shown", lambda run: None))
    try:
        text = build_report(tmp_path).read_text()
    finally:
        REPORT_FIGURES.clear()
    stems = [p.stem for p in (tmp_path / "figures").glob("figure_*.png")]
    assert len(stems) == 1 and stems[0].startswith("figure_name-")  # "<" and ">" are no file name
    assert "<h2>Arcs &lt;b&gt;per&lt;/b&gt; layer</h2>" in text and "n_arcs of layers.csv" in text
    assert "Never shown" not in text
