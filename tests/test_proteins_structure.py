"""Structure files → Protein: a synthetic PDB whose contacts, ligands, PTMs and gaps are known by
construction."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from conftest import IDEAL, line_positions
from plmlens.proteins import (
    StructureOptions,
    contact_map,
    iter_records,
    read_structure_file,
    virtual_cb,
)
from plmlens.proteins.skips import Skipped

NUMBERS = [(n, " ") for n in range(1, 30)] + [(29, "A")] + [(n, " ") for n in range(30, 40)]
NAMES = {1: "GLY", 9: "TPO", 11: "MSE", 14: "ASN"}


def synthetic_pdb(builder_cls) -> tuple[str, np.ndarray]:
    """Chain A (40 residues, one insertion code, one residue without CA) plus ligands and a peptide.

    Returns the PDB text and the CA positions by residue index.
    """
    b = builder_cls()
    ca = line_positions(40)
    ca[20] = ca[3] + np.array([0.0, 6.0, 0.0])  # the only contact: residues 3 and 20 (separation 17)
    b.raw("MODRES 9XYZ TPO A   10  THR  PHOSPHOTHREONINE")
    b.raw("MODRES 9XYZ MSE A   12  MET  SELENOMETHIONINE")
    b.raw("SITE     1 AC1  1 ALA A  33")
    b.raw("LINK         ND2 ASN A  15                 C1  NAG A 201     1555   1555  1.45")
    for index, (number, icode) in enumerate(NUMBERS):
        name = NAMES.get(index, "ALA")
        record = "HETATM" if name in ("TPO", "MSE") else "ATOM"
        atoms = ("N", "C", "O", "CB") if index == 24 else ("N", "CA", "C", "O", "CB")
        b.residue(name, "A", number, ca[index], record=record, atoms=atoms, icode=icode)
        if name == "ASN":
            b.atom("ATOM", "ND2", "ASN", "A", number, ca[index] + np.array([-0.5, -1.5, -2.5]), "N")
    b.raw("TER")
    for k in range(5):  # a bound peptide: its first residue 4 Å from residue 35
        b.residue("ALA", "B", k + 1, ca[35] + np.array([0.0, 4.0, 10.0 * k]))
    b.raw("TER")
    b.hetero("LIG", "A", 101, ca[5] + np.array([0.0, 3.0, 0.0]))  # ligand → residue 5
    b.hetero("SO4", "A", 102, ca[8] + np.array([0.0, 3.0, 0.0]), element="S", name="S")  # additive
    b.hetero("HOH", "A", 103, ca[9] + np.array([0.0, 3.0, 0.0]), element="O", name="O")  # water
    b.hetero("NAG", "A", 201, ca[14] + np.array([-0.5, -1.5, -3.9]), name="C1")  # glycan on Asn 15
    b.hetero("ZN", "A", 104, ca[38] + np.array([0.0, 3.0, 0.0]), element="ZN", name="ZN")  # metal
    return b.text(), ca


@pytest.fixture
def synthetic_file(tmp_path, pdb_builder):
    text, ca = synthetic_pdb(pdb_builder)
    path = tmp_path / "9xyz.pdb"
    path.write_text(text)
    return path, ca


def only_protein(records):
    proteins = [r for r in records if not isinstance(r, Skipped)]
    assert len(proteins) == 1, records
    return proteins[0]


def test_sequence_numbering_and_coordinates(synthetic_file):
    path, ca = synthetic_file
    records = list(read_structure_file(path, StructureOptions(dssp=False)))
    protein = only_protein(records)
    assert protein.id == "9XYZ.A"
    assert protein.sequence == "A" + "G" + "A" * 7 + "T" + "A" + "M" + "AA" + "N" + "A" * 25
    assert protein.residue_ids[28:31] == ["29", "29A", "30"]
    assert not protein.has_coords[24] and protein.has_coords.sum() == 39
    np.testing.assert_allclose(protein.ca[3], ca[3], atol=1e-3)
    # Gly (index 1) gets a virtual CB at the ideal position; real CBs are kept.
    np.testing.assert_allclose(protein.cb[1], ca[1] + IDEAL["CB"], atol=0.05)
    np.testing.assert_allclose(protein.cb[0], ca[0] + IDEAL["CB"], atol=1e-3)
    # The peptide chain B is too short to be a record of its own, and is said so.
    assert any(isinstance(r, Skipped) and r.record == "B" and "min_length" in r.reason for r in records)


def test_contacts_known_by_construction(synthetic_file):
    path, _ = synthetic_file
    protein = only_protein(read_structure_file(path, StructureOptions(dssp=False)))
    for atom in ("CA", "CB"):
        contacts = contact_map(protein, atom=atom)
        assert {tuple(p) for p in np.argwhere(contacts.filled(False))} == {(3, 20), (20, 3)}
        # Pairs with residue 24 (no CA) are undefined, not 0; everything else is defined.
        assert contacts.mask[24].all() and contacts.mask[:, 24].all()
        assert contacts.count() == 39 * 39


def test_ligand_binding_sites_exclude_additives_water_and_attached_glycans(synthetic_file):
    path, _ = synthetic_file
    protein = only_protein(read_structure_file(path, StructureOptions(dssp=False)))
    # LIG → 5, bound peptide → 35, Zn → 38; not SO4 (8), water (9) or the N-glycan on Asn (14).
    assert set(np.flatnonzero(protein.binding_site)) == {5, 35, 38}


def test_site_records_and_union(synthetic_file):
    path, _ = synthetic_file
    site = only_protein(read_structure_file(path, StructureOptions(dssp=False, binding_sites="site")))
    assert set(np.flatnonzero(site.binding_site)) == {33}
    both = only_protein(read_structure_file(path, StructureOptions(dssp=False, binding_sites="both")))
    assert set(np.flatnonzero(both.binding_site)) == {5, 33, 35, 38}
    none = only_protein(read_structure_file(path, StructureOptions(dssp=False, binding_sites="none")))
    assert none.binding_site is None


def test_ptms_count_phosphorylation_and_glycosylation_not_selenomethionine(synthetic_file):
    path, _ = synthetic_file
    protein = only_protein(read_structure_file(path, StructureOptions(dssp=False)))
    assert set(np.flatnonzero(protein.ptm)) == {9, 14}


def test_partner_chains(synthetic_file):
    path, _ = synthetic_file
    options = StructureOptions(dssp=False, min_length=30, partner="chains:B")
    protein = only_protein(read_structure_file(path, options))
    assert set(np.flatnonzero(protein.binding_site)) == {35}


def test_partner_file_by_replace_rule(tmp_path, pdb_builder):
    antibody, antigen = pdb_builder(), pdb_builder()
    ca = line_positions(40)
    for i in range(40):
        antibody.residue("ALA", "H", i + 1, ca[i])
    for i, target in enumerate((7, 8, 30)):  # antigen residues 3.5 Å from residues 7, 8 and 30
        antigen.residue("GLY", "C", i + 1, ca[target] + np.array([0.0, 0.0, 3.5]), atoms=("CA",))
    (tmp_path / "1ABC_r_b.pdb").write_text(antibody.text())
    (tmp_path / "1ABC_l_b.pdb").write_text(antigen.text())
    records = list(iter_records(f"{tmp_path}/*_r_b.pdb::partner=replace:_r_b:_l_b,dssp=false"))
    protein = only_protein(records)
    assert set(np.flatnonzero(protein.binding_site)) == {7, 8, 30}


def test_gzip_and_mmcif_round_trip(synthetic_file, tmp_path):
    import gemmi

    path, _ = synthetic_file
    gz = tmp_path / "9xyz.pdb.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    structure = gemmi.read_structure(str(path))
    structure.setup_entities()
    cif = tmp_path / "9xyz.cif"
    structure.make_mmcif_document().write_file(str(cif))
    plain = only_protein(read_structure_file(path, StructureOptions(dssp=False)))
    for other_path in (gz, cif):
        other = only_protein(read_structure_file(other_path, StructureOptions(dssp=False)))
        assert other.sequence == plain.sequence
        np.testing.assert_allclose(other.ca, plain.ca, atol=1e-3)
        assert set(np.flatnonzero(other.binding_site)) == set(np.flatnonzero(plain.binding_site))


def test_virtual_cb_matches_ideal_geometry():
    cb = virtual_cb(IDEAL["N"], IDEAL["CA"], IDEAL["C"])
    assert np.linalg.norm(cb - IDEAL["CB"]) < 0.05
    assert abs(np.linalg.norm(cb - IDEAL["CA"]) - 1.52) < 0.03


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("", "no atoms"),
        ("this is not a structure file\n", "no atoms"),
        (
            "HETATM    1  O   HOH A   1       0.000   0.000   0.000  1.00 20.00           O\nEND\n",
            "no protein",
        ),
    ],
)
def test_bad_files_are_skipped_with_a_reason(tmp_path, content, reason):
    path = tmp_path / "bad.pdb"
    path.write_text(content)
    records = list(read_structure_file(path))
    assert len(records) == 1 and isinstance(records[0], Skipped)
    assert records[0].source == str(path) and reason in records[0].reason


def test_truncated_file_and_missing_backbone(tmp_path, pdb_builder):
    b = pdb_builder()
    ca = line_positions(40)
    for i in range(40):
        b.residue("ALA", "A", i + 1, ca[i])
    for i in range(35):  # chain C has side chains only: no CA anywhere
        b.residue("ALA", "C", i + 1, ca[i] + 100, atoms=("CB",))
    text = b.text()
    truncated = tmp_path / "truncated.pdb"
    truncated.write_text(text[: len(text) // 3] + "ATOM  99999  CA  AL")
    records = list(read_structure_file(truncated, StructureOptions(dssp=False)))
    assert len(records) == 1 and isinstance(records[0], Skipped) and records[0].record is None
    assert "cannot be read as PDB/mmCIF" in records[0].reason and "\n" not in records[0].reason
    full = tmp_path / "full.pdb"
    full.write_text(text)
    records = list(read_structure_file(full, StructureOptions(dssp=False)))
    kinds = {(type(r).__name__, getattr(r, "chain", None) or getattr(r, "record", None)) for r in records}
    assert ("Protein", "A") in kinds
    chain_c = [r for r in records if isinstance(r, Skipped) and r.record == "C"]
    assert chain_c and "no CA atoms" in chain_c[0].reason


def test_one_bad_file_does_not_stop_a_directory(tmp_path, synthetic_file):
    (tmp_path / "broken.cif").write_text("data_x\nloop_\n_atom_site.id\n")
    records = list(iter_records(f"{tmp_path}::dssp=false"))
    assert any(isinstance(r, Skipped) and r.source.endswith("broken.cif") for r in records)
    assert any(not isinstance(r, Skipped) and r.id == "9XYZ.A" for r in records)
