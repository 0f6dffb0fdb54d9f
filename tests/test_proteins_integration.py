"""Integration: the real structures, antibodies and label files of ../shared/data, and Debian's
promod3-data and mkdssp. Each fails loudly when its input is missing."""

from __future__ import annotations

import csv
import json
import re
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from plmlens.cli import app
from plmlens.proteins import StructureDB, describe, iter_records, load_proteins

pytestmark = pytest.mark.integration


def test_promod3_database_and_contact_background(promod3_db):
    db = StructureDB(promod3_db)
    assert len(db) == 21_119
    # Every seventh chain: a fast, representative sample of the 4.5 M residues.
    ids = [entry.id for entry in db.entries[::7]]
    result = describe(db.iter_records(ids=ids))
    backgrounds = result.backgrounds()
    assert result.n_proteins == len(ids) and not result.skipped
    assert 0.01 < backgrounds["contact"] < 0.02  # the paper: 1.3 % of pairs are contacts
    assert 0.3 < backgrounds["helix"] < 0.45 and 0.15 < backgrounds["strand"] < 0.3
    assert backgrounds["binding_site"] is None and backgrounds["ptm"] is None


def test_mkdssp_on_pdb_files_agrees_with_promod3(shared_data, promod3_db):
    require_mkdssp()
    db = StructureDB(promod3_db)
    for record_id in ("1O1Z.A", "2PVB.A", "1XDN.A"):
        stored = db.get(record_id)
        path = shared_data / "structures" / f"{record_id[:4].lower()}.pdb"
        (from_file,) = load_proteins(f"{path}::chains={record_id[-1]}")[0]
        start = from_file.sequence.find(stored.sequence)
        assert start >= 0, record_id
        segment = from_file.subset(slice(start, start + len(stored)))
        ca_steps = np.linalg.norm(np.diff(segment.ca, axis=0), axis=1)
        stored_steps = np.linalg.norm(np.diff(stored.ca, axis=0), axis=1)
        assert np.abs(ca_steps - stored_steps).max() < 0.02
        agreement = np.mean([a == b for a, b in zip(segment.dssp, stored.dssp, strict=True)])
        assert agreement > 0.93, (record_id, agreement)


def require_mkdssp():
    if shutil.which("mkdssp") is None:
        pytest.fail("integration input missing: mkdssp (apt-get install dssp)", pytrace=False)


def test_structures_ligands_ptms_and_modified_residues(shared_data):
    structures = shared_data / "structures"
    (hiv_a, _hiv_b), _ = load_proteins(f"{structures}/7hvp.pdb::chains=A+B")
    # The inhibitor JG-365 (chain C, a bound peptide) sits on the catalytic Asp25 and the flap Ile50.
    bound = set(hiv_a.residue_numbers[hiv_a.binding_site].tolist())
    assert {25, 27, 50} <= bound
    assert hiv_a.sequence[66] == "A"  # ABA 67 (aminobutyric acid) mapped to its parent, Ala
    assert not hiv_a.ptm.any()  # ABA is an engineered substitution, not a PTM
    (cdk2,) = [p for p in load_proteins(f"{structures}/1p5e.pdb::chains=A")[0]]
    tpo = np.flatnonzero(cdk2.residue_numbers == 160)
    assert cdk2.sequence[tpo[0]] == "T" and cdk2.ptm[tpo].all() and cdk2.ptm.sum() == 1
    (xdn,) = load_proteins(f"{structures}/1xdn.pdb")[0]
    assert xdn.sequence.count("M") >= 3 and not xdn.ptm.any()  # selenomethionine is not a PTM
    (ache,) = load_proteins(f"{structures}/1eve.pdb")[0]
    glycosylated = set(ache.residue_numbers[ache.ptm].tolist())
    assert {59, 416, 533} <= glycosylated
    (ncb_n,) = load_proteins(f"{structures}/1ncb.cif::chains=N")[0]
    assert {86, 146, 200} <= set(ncb_n.residue_numbers[ncb_n.ptm].tolist())


def test_describe_structures_finds_binding_sites(shared_data):
    result = describe(iter_records(f"{shared_data / 'structures'}::dssp=false"))
    assert result.n_proteins > 100
    assert 0.02 < result.backgrounds()["binding_site"] < 0.2
    assert result.backgrounds()["ptm"] > 0


def test_antibody_paratopes_match_the_manifest(shared_data):
    antibodies = shared_data / "antibodies"
    with open(antibodies / "MANIFEST.tsv", newline="") as handle:
        rows = {r["file"]: r for r in csv.DictReader(handle, delimiter="\t") if r["role"] == "bound_antibody"}
    counts: dict[str, int] = {}
    result_proteins = []
    for protein in iter_records(f"{antibodies}::dssp=false"):
        if hasattr(protein, "binding_site"):
            name = protein.source.rsplit("/", 1)[-1]
            counts[name] = counts.get(name, 0) + int(protein.binding_site.sum())
            result_proteins.append(protein)
    # The manifest also counts hetero groups of the antibody file (e.g. sulfate) and second conformers;
    # plmlens counts amino acids of the chain, first conformer only, so it may be 1-2 lower.
    differences = np.array([int(r["n_paratope_res_4.5A"]) - counts.get(f, -99) for f, r in rows.items()])
    assert len(rows) == 179
    assert np.mean(differences == 0) > 0.9 and differences.min() >= 0 and differences.max() <= 2, differences
    assert {p.meta["chain_type"] for p in result_proteins} >= {"heavy", "light"}


def test_antibody_variable_domains(shared_data):
    proteins, _ = load_proteins(f"{shared_data / 'antibodies'}::variable_domain,dssp=false", limit=40)
    assert len(proteins) == 40
    for protein in proteins:
        assert 95 <= len(protein) <= 135, (protein.id, len(protein))
        assert re.search(r"(WG.G.{7}|FG.G.{6})$", protein.sequence), protein.id


def test_provis_label_files(shared_data):
    provis = shared_data / "provis"
    sites = describe(iter_records(str(provis / "binding_site_valid.lmdb")))
    ptms = describe(iter_records(str(provis / "protein_modification_valid.lmdb")))
    assert sites.n_proteins == ptms.n_proteins == 1418 and not sites.skipped
    assert sites.backgrounds()["binding_site"] == pytest.approx(0.0496, abs=0.0005)
    assert ptms.backgrounds()["ptm"] == pytest.approx(0.0077, abs=0.0005)


def test_cli_describe_provis_json(shared_data, tmp_path):
    out = tmp_path / "ptm.json"
    source = str(shared_data / "provis" / "protein_modification_valid.lmdb")
    result = CliRunner().invoke(app, ["proteins", "describe", source, "--limit", "100", "--json", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["n_proteins"] == 100 and data["backgrounds"]["ptm"] > 0
    assert data["backgrounds"]["binding_site"] is None


def test_promod3_antibody_chains(promod3_db):
    proteins, _ = load_proteins(f"{promod3_db}::antibody,variable_domain")
    assert 20 <= len(proteins) <= 60
    assert all(95 <= len(p) <= 135 for p in proteins)
