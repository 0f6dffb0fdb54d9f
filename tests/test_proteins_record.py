"""The Protein record, annotation functions and the SOURCE syntax."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import line_positions
from plmlens.cli import app
from plmlens.proteins import (
    Protein,
    ProteinError,
    SourceError,
    contact_map,
    cut_variable_domain,
    describe,
    iter_records,
    variable_domain_end,
)
from plmlens.proteins.annotations import looks_like_variable_domain
from plmlens.proteins.sources import Source

HEAVY = (
    "EVQLVESGGGLVQPGGSLRLSCAASGFTFSSYAMSWVRQAPGKGLEWVSAISGSGGSTYYADSVKGRFTISRDNSKNTLYLQMNSLRAEDTAVYYCAK"
    "DRGYSSGWYFDYWGQGTLVTVSSASTKGPSVFPLAPSSKSTSGGTAALGCLVKDYFPEPVTVSWNSGALTSGVHTFPAVLQSSGLYSLSSVVTVPSS"
)
LIGHT = (
    "DIQMTQSPSSLSASVGDRVTITCRASQSISSYLNWYQQKPGKAPKLLIYAASSLQSGVPSRFSGSGSGTDFTLTISSLQPEDFATYYCQQSYSTPLT"
    "FGQGTKVEIKRTVAAPSVFIFPPS"
)


def test_record_validation_names_the_protein():
    with pytest.raises(ProteinError, match=r"x\.pdb: P1: empty sequence"):
        Protein(id="P1", sequence="", source="x.pdb")
    with pytest.raises(ProteinError, match="outside the 20"):
        Protein(id="P1", sequence="AC1")
    with pytest.raises(ProteinError, match="binding_site has shape"):
        Protein(id="P1", sequence="ACD", binding_site=np.zeros(2, dtype=bool))
    with pytest.raises(ProteinError, match="DSSP"):
        Protein(id="P1", sequence="ACD", dssp="HH")


def test_unknown_labels_are_none_and_ss_is_masked():
    protein = Protein(id="P", sequence="ACDE")
    assert protein.binding_site is None and protein.ptm is None
    assert protein.ss_mask("helix").mask.all()
    labelled = Protein(id="P", sequence="ACDEFG", dssp="HGIE?T")
    helix = labelled.ss_mask("helix")
    assert helix.filled(False).tolist() == [True, True, True, False, False, False]
    assert helix.mask.tolist() == [False] * 4 + [True, False]
    assert list(labelled.ss_classes) == ["helix"] * 3 + ["strand", "unknown", "turn_bend"]


def test_subset_keeps_annotations_aligned():
    ca = line_positions(6)
    protein = Protein(
        id="P", sequence="ACDEFG", ca=ca, cb=ca, dssp="HHEE--", binding_site=[0, 1, 0, 1, 0, 1],
        ptm=[1, 0, 0, 0, 0, 0], residue_numbers=[10, 11, 12, 13, 14, 15],
    )  # fmt: skip
    cut = protein.subset(np.array([1, 3, 5]))
    assert cut.sequence == "CEG" and cut.dssp == "HE-"
    assert cut.binding_site.all() and not cut.ptm.any()
    assert list(cut.residue_numbers) == [11, 13, 15]
    np.testing.assert_array_equal(cut.ca, ca[[1, 3, 5]])


def test_contact_ranges_partition_contacts():
    n = 60
    rng = np.random.default_rng(0)
    ca = rng.uniform(0, 20, size=(n, 3))
    protein = Protein(id="P", sequence="A" * n, ca=ca, cb=ca)
    full = contact_map(protein).filled(False)
    short = contact_map(protein, max_separation=11).filled(False)
    medium = contact_map(protein, min_separation=12, max_separation=23).filled(False)
    long = contact_map(protein, min_separation=24).filled(False)
    assert full.any() and not (short & medium).any() and not (medium & long).any()
    np.testing.assert_array_equal(short | medium | long, full)
    d = np.linalg.norm(ca[:, None] - ca[None], axis=-1)
    sep = np.abs(np.subtract.outer(np.arange(n), np.arange(n)))
    np.testing.assert_array_equal(full, (d < 8.0) & (sep >= 6))


def test_variable_domain_ends_after_the_j_region():
    heavy_end = variable_domain_end(HEAVY)
    assert HEAVY[:heavy_end].endswith("WGQGTLVTVSS")
    light_end = variable_domain_end(LIGHT)
    assert LIGHT[:light_end].endswith("FGQGTKVEIK")
    protein = Protein(id="H", sequence=HEAVY, binding_site=np.arange(len(HEAVY)) % 7 == 0)
    cut = cut_variable_domain(protein)
    assert len(cut) == heavy_end and cut.binding_site.tolist() == (np.arange(heavy_end) % 7 == 0).tolist()
    assert looks_like_variable_domain(HEAVY) and looks_like_variable_domain(LIGHT)
    assert not looks_like_variable_domain("M" + HEAVY[40:]) and not looks_like_variable_domain(HEAVY[:100])
    with pytest.raises(ProteinError, match="no J-region motif"):
        cut_variable_domain(Protein(id="X", sequence="A" * 200))


def test_describe_backgrounds():
    ca = line_positions(10)
    ca[8] = ca[0] + [0.0, 5.0, 0.0]
    proteins = [
        Protein(id="a", sequence="AAAAAAAAAC", ca=ca, cb=ca, dssp="HHHHEE--TT", binding_site=[1] + [0] * 9),
        Protein(id="b", sequence="CC"),
    ]
    result = describe(proteins)
    backgrounds = result.backgrounds()
    assert backgrounds["contact"] == pytest.approx(2 / 100)
    assert backgrounds["binding_site"] == pytest.approx(1 / 10)
    assert backgrounds["ptm"] is None
    assert backgrounds["helix"] == pytest.approx(0.4) and backgrounds["turn_bend"] == pytest.approx(0.2)
    assert backgrounds["C"] == pytest.approx(3 / 12) and backgrounds["W"] == 0.0
    assert result.n_proteins == 2 and result.n_residues == 12


def test_source_syntax_and_errors(tmp_path):
    source = Source.parse("some/dir::chains=A+B,binding_sites=both,fv")
    assert source.location == "some/dir"
    assert source.options == {"chains": "A+B", "binding_sites": "both", "variable_domain": "true"}
    with pytest.raises(SourceError, match="no such file"):
        iter_records(str(tmp_path / "missing.pdb"))
    fasta = tmp_path / "x.fasta"
    fasta.write_text(">a\nACDE\n")
    with pytest.raises(SourceError, match="chains do not apply to a fasta source"):
        iter_records(f"{fasta}::chains=A")


def test_cli_describe_json(tmp_path):
    fasta = tmp_path / "x.fasta"
    fasta.write_text(">a\nACDEC\n>b\nCC\n>bad\nAC!\n")
    out = tmp_path / "d.json"
    result = CliRunner().invoke(app, ["proteins", "describe", str(fasta), "--json", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["n_proteins"] == 2 and data["n_residues"] == 7 and data["n_skipped"] == 1
    assert data["skipped"][0]["file"] == str(fasta) and data["skipped"][0]["chain"] == "bad"
    assert set(data["backgrounds"]) >= {
        "contact",
        "binding_site",
        "ptm",
        "helix",
        "strand",
        "turn_bend",
        "aa_A",
        "aa_Y",
    }  # the property registry's names, as analyze writes them
    assert data["backgrounds"]["contact"] is None and data["backgrounds"]["aa_C"] == pytest.approx(4 / 7)


def test_cli_missing_source_is_one_line(tmp_path):
    result = CliRunner().invoke(app, ["proteins", "describe", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "no such file" in result.output and "Traceback" not in result.output
