"""The "Features" section of report.html and the feature concept coverage of compare.html: the numbers of a tiny
SAE directory (8 features, 3 concepts, 2 example proteins, one a 30-residue synthetic structure) on the page,
hostile ids and concept names escaped, damaged files as one-line notes, and the browser clicked in a real
headless Chromium (sequence view, histogram, 3D structure with activations as B-factors, the concept filter)."""

from __future__ import annotations

import html
import json
import re
import subprocess

import pandas as pd
import pytest
from markupsafe import escape

from conftest import PdbBuilder, line_positions
from plmlens.report import build_report, compare_runs
from plmlens.report.features import (
    StructureReader,
    coverage_context,
    feature_rows,
    features_context,
    read_structures,
    structure_entry,
)
from plmlens.rundir import FeatureDir
from test_compare import synthetic_run
from test_report import chromium, small_run

SEQUENCE = "ACDEFGHIKLMNPQRSTVWYACDEFGHIKL"
THREE = {"A": "ALA", "C": "CYS", "D": "ASP", "E": "GLU", "F": "PHE", "G": "GLY", "H": "HIS", "I": "ILE", "K": "LYS",
         "L": "LEU", "M": "MET", "N": "ASN", "P": "PRO", "Q": "GLN", "R": "ARG", "S": "SER", "T": "THR", "V": "VAL",
         "W": "TRP", "Y": "TYR"}  # fmt: skip
EVIL = '<script>alert("c")</script>'
EVIL_PROTEIN = "<script>alert(2)</script>"
#: feature, frequency, max_activation, concept, f1, precision, recall, threshold, matched, positional
FEATURES = [(0, 0.05, 3.2, "cdr_h3", 0.81, 0.9, 0.74, 0.5, True, False),
            (1, 0.30, 1.5, "helix", 0.62, 0.6, 0.64, 0.2, True, True),
            (2, 0.02, 0.9, EVIL, 0.12, 0.2, 0.09, 0.3, False, False),
            (3, 0.10, 2.0, "cdr_h3", 0.55, 0.5, 0.61, 0.4, True, False),
            (4, 0.0, 0.0, "", None, None, None, None, False, False),
            (5, 0.40, 4.1, "helix", 0.30, 0.25, 0.37, 1.0, False, False),
            (6, 0.01, 0.5, EVIL, 0.05, 0.1, 0.03, 0.2, False, False),
            (7, 0.20, 1.1, "cdr_h3", 0.45, 0.4, 0.51, 0.6, False, False)]  # fmt: skip
#: concept, label, n_positive, feature, f1, threshold, top_features, neuron, neuron_f1, shuffled_f1,
#: random_model_f1, position_f1, n_matched_features, positional
CONCEPTS = [("cdr_h3", "CDR H3", 120, 0, 0.81, 0.5, "0:0.81;3:0.55;7:0.45", "137+", 0.42, 0.05, 0.2, 0.3, 2, False),
            ("helix", "Helix", 300, 1, 0.62, 0.2, "1:0.62;5:0.3", "88-", 0.55, 0.1, None, 0.66, 1, True),
            (EVIL, EVIL, 40, 2, 0.12, 0.3, "2:0.12", "3+", 0.1, 0.02, None, 0.08, 0, False)]  # fmt: skip
#: As `plmlens.features.workflow.run_concepts` writes it.
SUMMARY = {"layer": 1, "n_features": 8, "n_neurons": 16, "concept_names": ["cdr_h3", "helix", EVIL],
           "source": "synthetic labels", "n_proteins": {"validation": 7, "test": 9},
           "matched_concepts": {"features": 2, "neurons": 1, "shuffled": 0, "random_model": 1, "position": 1},
           "matched_beyond_position": {"features": 1, "neurons": 0, "shuffled": 0, "random_model": 1},
           "features_matched": 3, "matches": 3, "matches_beyond_position": 2, "thresholds": [0, 0.15, 0.5],
           "match_f1": 0.5, "beyond_controls": ["cdr_h3"],
           "evaluation": {"fraction_variance_explained": 0.83, "mean_l0": 2.0, "n_dead": 1, "n_dense": 0},
           "fidelity": {"loss_intact": 1.1, "loss_sae": 1.4, "loss_zero": 5.0, "loss_mean": 3.2,
                        "loss_recovered_zero": 0.92, "loss_recovered_mean": 0.85}}  # fmt: skip
#: Feature 0 fires on residues 11-15 of the structure's chain, most on 13.
PEAK = [0.0] * 10 + [1.0, 2.0, 3.2, 2.0, 1.0] + [0.0] * 15
REGIONS = ["fr_h1"] * 10 + ["cdr_h1"] * 5 + ["fr_h2"] * 15


def write_structure(path) -> str:
    """A 30-residue chain H on a line; returns its SOURCE (30 residues is the structures' minimum length)."""
    builder = PdbBuilder()
    for number, code in enumerate(SEQUENCE, start=1):
        builder.residue(THREE[code], "H", number, line_positions(30, 3.8)[number - 1])
    path.write_text(builder.text())
    return f"{path}::dssp=false"


def write_sae(directory, source: str, *, name: str = "synthetic", random_init: bool = False, layer: int = 1,
              concepts: bool = True, evaluation: bool = True) -> FeatureDir:  # fmt: skip
    """An SAE directory in the files' formats (the contract of plmlens issue 20)."""
    directory.mkdir(parents=True)
    metadata = {"model": {"name": name, "random_init": random_init}, "layer": layer, "training": {}}
    record = {"format": "plmlens-sae/1", "config": {"d_in": 16, "width": 8, "k": 2, "activation": "topk"},
              "metadata": metadata}  # fmt: skip
    (directory / "sae.json").write_text(json.dumps(record))
    if evaluation:
        training = {"fraction_variance_explained": 0.9, "mean_l0": 2.0, "n_dead": 0, "n_dense": 1}
        (directory / "evaluation.json").write_text(json.dumps({"training_tokens": training}))
    if not concepts:
        return FeatureDir(directory)
    out = directory / "concepts"
    out.mkdir()
    columns = ["feature", "frequency", "max_activation", "concept", "f1", "precision", "recall", "threshold",
               "matched", "positional"]  # fmt: skip
    pd.DataFrame(FEATURES, columns=columns).to_csv(out / "features.csv", index=False)
    columns = ["concept", "label", "n_positive", "feature", "f1", "threshold", "top_features", "neuron", "neuron_f1",
               "shuffled_f1", "random_model_f1", "position_f1", "n_matched_features", "positional"]  # fmt: skip
    pd.DataFrame(CONCEPTS, columns=columns).to_csv(out / "concepts.csv", index=False)
    (out / "summary.json").write_text(json.dumps({"model": metadata["model"], **SUMMARY, "layer": layer}))
    structure = {"protein": "t.H", "max": 3.2, "activations": PEAK, "sequence": SEQUENCE, "regions": REGIONS,
                 "imgt": [str(k) for k in range(1, 31)]}  # fmt: skip
    hostile = {"protein": EVIL_PROTEIN, "max": 0.5, "activations": [0.5] * 10, "sequence": "ACDEFGHIKL",
               "regions": None, "imgt": None}  # fmt: skip
    ramp = dict(structure, max=1.5, activations=[round(k / 20, 2) for k in range(30)])
    examples = {"source": source, "features": [
        {"feature": 0, "concept": "cdr_h3", "f1": 0.81, "frequency": 0.05,
         "histogram": {"edges": [0.0, 0.8, 1.6, 2.4, 3.2], "counts": [10, 5, 2, 1]}, "top": [structure, hostile]},
        {"feature": 1, "concept": "helix", "f1": 0.62, "frequency": 0.3,
         "histogram": {"edges": [0.0, 0.5, 1.0, 1.5], "counts": [30, 20, 10]}, "top": [ramp]},
    ]}  # fmt: skip
    (out / "examples.json").write_text(json.dumps(examples))
    return FeatureDir(directory)


def add_features(run_dir, source: str, name: str = "synthetic") -> None:
    """layer1 (evaluated, with concepts), its random-weight control and layer2 (no concepts yet)."""
    write_sae(run_dir / "features" / "layer1", source, name=name)
    write_sae(run_dir / "features" / "layer1-random", source, name=name, random_init=True, evaluation=False)
    write_sae(run_dir / "features" / "layer2", source, name=name, layer=2, concepts=False)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """report.html of a run directory with SAEs."""
    base = tmp_path_factory.mktemp("features")
    source = write_structure(base / "t.pdb")
    small_run(base / "run")
    add_features(base / "run", source)
    return build_report(base / "run").read_text()


def markup_of(text: str) -> str:
    """The page without its scripts and inline images."""
    text = re.sub(r"<script[^>]*>.*?</script>", "", text, flags=re.S)
    return re.sub(r"base64,[A-Za-z0-9+/=]+", "", text)


def sae_data(text: str) -> list[dict]:
    return [json.loads(m) for m in re.findall(r'<script type="application/json" class="sae-data">(.*?)</script>',
                                              text, flags=re.S)]  # fmt: skip


def test_features_section_shows_the_saes_numbers(report):
    text = report
    page = html.unescape(markup_of(text))
    assert "synthetic L1: width 8, k 2, topk, input 16; on held-out proteins: variance explained 83.0%, L0 2, " \
           "dead 1, dense 0; loss recovered 92.0% against zero ablation, 85.0% against mean ablation (loss 1.1 " \
           "intact, 1.4 through the SAE)." in page  # fmt: skip
    assert ("2 of 3 concepts matched by features (F1 ≥ 0.5; 1 above the position-only F1), 1 by single neurons "
            "(0 above position); controls: shuffled 0, random-weight model 1, position-only 1; 2 of 3 "
            "feature–concept matches beat position; 3 features match a concept. Matched above every control "
            "(shuffled concepts, random-weight model, position alone): cdr_h3.") in page  # fmt: skip
    assert "Thresholds chosen on 7 validation proteins, F1 measured on 9 test proteins of synthetic labels." in page
    # Sub-sections: the SAE, then the one without concepts, then the random-weight control last.
    headings = re.findall(r"<h3>(.*?)</h3>", page.split('<section id="features">')[1])
    assert headings == ["layer1", "layer2", "layer1-random (control: random-weight model)"]
    assert "synthetic (random init) L1: width 8, k 2, topk, input 16; on held-out proteins: variance" in page
    assert "No concepts yet (plmlens features concepts writes them)." in page
    assert "synthetic L2: width 8, k 2, topk, input 16; on training residues: variance explained 90.0%, L0 2, " \
           "dead 0, dense 1." in page  # fmt: skip
    layer1 = markup_of(text).split('data-sae="sae0"')[1].split('<section class="sae"')[0]
    concept_rows = re.findall(r'<tr data-concept="[^"]*">(.*?)</tr>', layer1)
    cells = [re.sub(r"<[^>]+>", "", cell) for cell in re.findall(r"<td[^>]*>(.*?)</td>", concept_rows[0])]
    assert cells == ["CDR H3", "120", "0", "0.81", "0 (0.81), 3 (0.55), 7 (0.45)", "137+", "0.42", "0.05", "0.2",
                     "0.3", "2", "matched"]  # fmt: skip
    assert re.findall(r'<td class="flag">(.*?)</td>', "".join(concept_rows)) == [
        "matched", "not better than position", "not matched"]  # fmt: skip
    # The feature table: every feature, by F1; only the browsed features (0 and 1) are buttons.
    order = re.findall(r'<tr data-feature="(\d+)"', layer1)
    assert order == ["0", "1", "3", "7", "5", "2", "6", "4"]
    assert sorted(set(re.findall(r'<button class="feature-link" data-feature="(\d+)"', layer1))) == ["0", "1"]
    assert "8 of 8 features" in layer1


def test_browser_data_holds_the_examples_and_the_structure(report):
    text = report
    data = sae_data(text)
    assert len(data) == 2  # layer1 and its control; layer2 has no concepts
    features = data[0]["features"]
    assert sorted(features) == ["0", "1"] and features["0"]["label"] == "CDR H3"
    top = features["0"]["top"]
    assert [t["protein"] for t in top] == ["t.H", EVIL_PROTEIN] and top[0]["activations"] == PEAK
    assert features["0"]["histogram"]["counts"] == [10, 5, 2, 1]
    # Only t.H is in the source: its structure, and per residue the id its activation is written to.
    structure = data[0]["structures"]
    assert list(structure) == ["t.H"] and structure["t.H"]["residues"] == [str(k) for k in range(1, 31)]
    assert structure["t.H"]["repr"] == "cartoon" and structure["t.H"]["pdb"].count(" CA ") == 30
    assert "NGL" in text  # inlined: the page draws in 3D
    note = html.unescape(markup_of(text))
    expected = r"No 3D view for some proteins: 1 of 2 proteins are not in \S+/t\.pdb::dssp=false \((.*?)\)\."
    assert re.search(expected, note).group(1) == EVIL_PROTEIN


def test_hostile_ids_and_concept_names_stay_text(report):
    text = report
    assert "<script>alert" not in text  # neither in the markup nor in the scripts' JSON
    markup = markup_of(text)
    assert str(escape(EVIL)) in markup  # the concept name, as text
    assert "\\u003cscript\\u003ealert(2)\\u003c/script\\u003e" in text  # the protein id in the JSON data
    assert not re.search(r"""(src|href)=["']https?://""", markup)  # self-contained: nothing fetched


def test_structure_entry_maps_the_sequence_the_sae_saw(tmp_path):
    source = write_structure(tmp_path / "t.pdb")
    found, note = read_structures(source, {"t.H", "x.Y"})
    assert list(found) == ["t.H"] and note is None
    protein = found["t.H"]
    # A domain the SAE saw inside the chain: residues 6-20 get the activations, the rest of the chain -1.
    entry = structure_entry(protein, SEQUENCE[5:20])
    assert entry["residues"] == [str(k) for k in range(6, 21)]
    assert structure_entry(protein, "WWWW") is None
    # Per SAE: which of its proteins the source lacks, and which it holds with another sequence.
    reader = StructureReader(read=lambda source, ids: (found, None))
    top = [{"protein": "t.H", "sequence": "WWWW"}, {"protein": "x.Y", "sequence": "AC"}]
    entries, why = reader.structures("src", {0: {"top": top}})
    assert entries == {} and why == ("1 of 2 proteins are not in src (x.Y); the structures of t.H in the source lack "
                                     "the sequence the SAE saw or coordinates")  # fmt: skip
    missing, why = read_structures(str(tmp_path / "gone.pdb"), {"t.H"})
    assert missing == {} and why.startswith(f"the proteins' source {tmp_path / 'gone.pdb'} could not be read (")


def test_without_a_readable_source_the_browser_shows_sequences_and_says_why(tmp_path):
    add_features(tmp_path, str(tmp_path / "gone.pdb"))
    context = features_context(tmp_path)
    assert context["ngl"] is False
    layer1 = context["saes"][0]
    assert layer1["data"]["structures"] == {} and sorted(layer1["data"]["features"]) == ["0", "1"]
    assert layer1["structure_note"].startswith(f"the proteins' source {tmp_path / 'gone.pdb'} could not be read")
    off = features_context(tmp_path, structures=False)["saes"][0]
    assert off["structure_note"] == "3D views were left out"
    # No SAE with concepts yet: no section at all.
    only_training = tmp_path / "other"
    write_sae(only_training / "features" / "layer2", "none", concepts=False)
    assert features_context(only_training) is None and features_context(tmp_path / "no-run") is None


def test_feature_table_keeps_matched_and_browsed_features_first(tmp_path, monkeypatch):
    from plmlens.report import features

    fd = write_sae(tmp_path / "layer1", "none")
    monkeypatch.setattr(features, "MAX_FEATURE_ROWS", 3)
    rows, note = feature_rows(fd, {0, 5}, {"cdr_h3": "CDR H3"})
    # Matched (0, 1, 3) and browsed (5): the first three by F1 are 0, 1 and 3; shown by F1.
    assert [row["feature"] for row in rows] == [0, 1, 3] and rows[0]["label"] == "CDR H3"
    assert note.startswith("3 of 8 features (the matched ones and those with example proteins first")
    assert [row["browsed"] for row in rows] == [True, False, False]
    assert rows[1]["flag"] == "not better than position" and rows[0]["frequency"] == "5.0%"


def test_damaged_files_are_one_line_notes_not_a_failed_report(tmp_path):
    fd = write_sae(tmp_path / "features" / "layer1", "none")
    (fd.path / "concepts" / "features.csv").write_text("feature,frequency\n0,0.1\n")
    examples = json.loads((fd.path / "concepts" / "examples.json").read_text())
    examples["features"][0]["top"][0]["activations"] = [1.0, 2.0]
    (fd.path / "concepts" / "examples.json").write_text(json.dumps(examples))
    sae = features_context(tmp_path, structures=False)["saes"][0]
    assert f"{fd.path / 'concepts' / 'features.csv'}: damaged (no column max_activation, concept, f1, " in (
        " ".join(sae["notes"]))  # fmt: skip
    assert any("feature 0, protein t.H: 2 activations (all numbers?) for 30 residues" in n for n in sae["notes"])
    assert sae["feature_table"] is None and len(sae["concepts"]) == 3  # the rest of the section stands
    assert [t["protein"] for t in sae["data"]["features"]["0"]["top"]] == [EVIL_PROTEIN]


def test_compare_shows_feature_concept_coverage(tmp_path):
    source = write_structure(tmp_path / "t.pdb")
    first = synthetic_run(tmp_path / "a", 4, 8, name="alpha")
    second = synthetic_run(tmp_path / "b", 4, 8, name="beta", seed=1)
    add_features(first, source, name="alpha")
    write_sae(second / "features" / "layer3", source, name="beta", layer=3)
    context = coverage_context([("alpha", first), ("beta", second)])
    assert context["saes"] == ["alpha L1", "alpha (random init) L1", "beta L3"]
    assert context["rows"][0]["label"] == "CDR H3" and context["rows"][0]["cells"][0] == ["0.81", "0.42", "0.3"]
    assert context["matched"][2] == ["2 of 3", "1 of 3", "1 of 3"]
    text = compare_runs([first, second], tmp_path / "out")["compare.html"].read_text()
    table = text.split("<h2>Feature concept coverage</h2>")[1].split("</table>")[0]
    assert re.findall(r'<th colspan="3">(.*?)</th>', table) == ["alpha L1", "alpha (random init) L1", "beta L3"]
    assert "<td>concepts matched</td><td>2 of 3</td><td>1 of 3</td><td>1 of 3</td>" in table
    assert "<script>alert" not in text and str(escape(EVIL)) in table


@pytest.mark.integration
def test_clicking_a_feature_shows_its_proteins_and_the_filter_hides_rows(report, tmp_path):
    text = report
    script = """<script>
window.addEventListener("load", () => setTimeout(() => {
  const section = document.querySelector('#features section.sae[data-sae="sae0"]');
  section.querySelector('table.concepts button.feature-link[data-feature="0"]').click();
  const filter = section.querySelector("input.feature-filter");
  filter.value = "helix";
  filter.dispatchEvent(new Event("input"));
  setTimeout(() => {
    const stage = section.querySelector(".feature-stage"), d = document.body.dataset;
    d.feature = section.querySelector(".browser-status").dataset.feature;
    d.residues = Array.from(section.querySelectorAll(".proteins .residues"), (r) => r.children.length).join(",");
    d.bars = String(section.querySelectorAll(".histogram svg rect").length);
    d.title = section.querySelector(".browser-title").textContent;
    d.shown = Array.from(section.querySelectorAll("table.features tbody tr"))
      .filter((r) => !r.hidden).map((r) => r.dataset.feature).join(",");
    d.drawn = [stage.dataset.rendered, stage.dataset.protein, stage.dataset.bmax].join("|");
  }, 2500);
}, 500));
</script></body>"""
    clicked = tmp_path / "clicked.html"
    clicked.write_text(text.replace("</body>", script))
    command = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--enable-unsafe-swiftshader", "--proxy-server=127.0.0.1:9", "--virtual-time-budget=20000",
               "--window-size=1300,1800", f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
               clicked.resolve().as_uri()]  # fmt: skip
    dom = subprocess.run(command, capture_output=True, text=True, timeout=180).stdout
    body = re.search(r"<body([^>]*)>", dom)
    attributes = {k: html.unescape(v) for k, v in re.findall(r'data-(\w+)="([^"]*)"', body.group(1))}
    assert json.loads(attributes.get("errors", "null")) == [], attributes
    assert attributes["feature"] == "0"
    assert attributes["residues"] == "30,10"  # both top proteins' sequences, one cell per residue
    assert attributes["bars"] == "4" and attributes["title"].startswith("Feature 0: CDR H3 (test F1 0.81)")
    assert attributes["shown"] == "1,5"  # the filter left the helix features
    # The structure drawn with feature 0's activations as B-factors: its largest is residue 13's.
    assert attributes["drawn"] == f"true|t.H|{max(PEAK):.2f}"
    assert attributes.get("stages") == "1"


def test_report_no_views_leaves_the_feature_structures_out(tmp_path):
    from typer.testing import CliRunner

    from plmlens.cli import app

    source = write_structure(tmp_path / "t.pdb")
    small_run(tmp_path / "run")
    add_features(tmp_path / "run", source)
    result = CliRunner().invoke(app, ["report", str(tmp_path / "run"), "--no-views"])
    assert result.exit_code == 0, result.output
    assert "3D views were left out" in (tmp_path / "run" / "report.html").read_text()
