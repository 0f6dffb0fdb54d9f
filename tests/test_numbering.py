"""Antibody numbering with ANARCI: IMGT positions, regions under four schemes, germlines, somatic mutations,
bad input kept with undefined labels, the summary, and the antibody benchmark (integration)."""

from __future__ import annotations

import importlib
import importlib.util

import numpy as np
import pytest

from plmlens.proteins import Protein, load_proteins, read_protein_set, save_protein_set
from plmlens.proteins.labels import ANNOTATORS, LABELS
from plmlens.proteins.numbering import (
    CDRS,
    REGIONS,
    ChainNumbering,
    NumberingFailure,
    NumberingToolError,
    hmmscan_path,
    label_numbering,
    number_sequences,
    numbering_summary,
    region_sequence,
)
from plmlens.proteins.positions import position_keys

# Trastuzumab (Herceptin) variable domains, as published (DrugBank DB00072; PDB 1N8Z).
TRASTUZUMAB_VH = (
    "EVQLVESGGGLVQPGGSLRLSCAASGFNIKDTYIHWVRQAPGKGLEWVARIYPTNGYTRYADSVKGRFTISADTSKNTAYLQMNSLRAEDTAVYYCSR"
    "WGGDGFYAMDYWGQGTLVTVSS"
)
TRASTUZUMAB_VL = (
    "DIQMTQSPSSLSASVGDRVTITCRASQDVNTAVAWYQQKPGKAPKLLIYSASFLYSGVPSRFSGSRSGTDFTLTISSLQPEDFATYYCQQHYTTPPTFGQGTKVEIK"
)
# Hen egg-white lysozyme (UniProt P00698, mature chain): not an antibody.
LYSOZYME = (
    "KVFGRCELAAAMKRHGLDNYRGYSLGNWVCAAKFESNFNTQATNRNTDGSTDYGILQINSRWWCNDGRTPGSRNLCNIPCSALLSSDITASVNCAKKIVSD"
    "GNGMNAWVAWRNRCKGTDVQAWIRGCRL"
)
# A human T-cell receptor alpha variable domain: an immunoglobulin domain, but no antibody.
TCR_ALPHA = (
    "KEVEQNSGPLSVPEGAIASLNCTYSDRGSQSFFWYRQYSGKSPELIMSIYSNGDKEDGRFTAQLNKASQYVSLLIRDSQPSDSATYLCAVTTDSWGKLQFGAGTQVVVTP"
)
# Germline human IGHV3-23*01 (through the second Cys and A105 K106), a 10-residue D part, and IGHJ4*01:
# an unmutated heavy chain whose CDR3 has 15 residues, so IMGT numbers two of them 111A and 112A.
GERMLINE_V = "EVQLLESGGGLVQPGGSLRLSCAASGFTFSSYAMSWVRQAPGKGLEWVSAISGSGGSTYYADSVKGRFTISRDNSKNTLYLQMNSLRAEDTAVYYCAK"
GERMLINE_VH = GERMLINE_V + "DRGYSSGWYG" + "FDYWGQGTLVTVSS"


def _one(sequence: str, scheme: str = "imgt") -> ChainNumbering:
    (result,) = number_sequences([("x", sequence)], scheme)
    assert isinstance(result, ChainNumbering), result
    return result


def _keys(numbering: ChainNumbering, sequence: str, region: str) -> list[str]:
    chosen = numbering.region.filled("") == region
    return [str(key) for key, keep in zip(numbering.imgt_position.filled(""), chosen, strict=True) if keep]


def test_anarci_germlines_are_gapped_to_imgt_positions():
    # The somatic-mutation call reads germline residue i + 1 at string index i: check the layout on
    # landmarks of IGHV3-23*01 and IGHJ4*01 (hand-checked against IMGT's gapped sequences).
    germlines = importlib.import_module("anarci.anarci").all_germlines
    v = germlines["V"]["H"]["human"]["IGHV3-23*01"]
    j = germlines["J"]["H"]["human"]["IGHJ4*01"]
    assert len(v) == len(j) == 128
    assert (v[23 - 1], v[41 - 1], v[104 - 1]) == ("C", "W", "C")  # Cys 23, Trp 41, Cys 104
    assert [i + 1 for i in range(105) if v[i] == "-"] == [10, 31, 32, 33, 34, 60, 61, 73]
    assert v.replace("-", "") == GERMLINE_V
    assert j[114:] == "FDYWGQGTLVTVSS" and j[118 - 1] == "W" and set(j[:114]) == {"-"}


def test_hmmscan_is_found_in_the_hmmer_wheel():
    path = hmmscan_path()
    assert path.name == "hmmscan" and path.is_file()


def test_missing_hmmscan_is_one_clear_line(monkeypatch):
    numbering = importlib.import_module("plmlens.proteins.numbering")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)  # no hmmer wheel
    monkeypatch.setattr(numbering.shutil, "which", lambda name: None)  # nor hmmscan on PATH
    with pytest.raises(NumberingToolError, match="pip install hmmer"):
        number_sequences([("x", TRASTUZUMAB_VH)])


def test_trastuzumab_imgt_regions_chain_types_and_germlines():
    vh, vl = number_sequences([("vh", TRASTUZUMAB_VH), ("vl", TRASTUZUMAB_VL)], "imgt")
    assert (vh.id, vh.chain_type, vh.locus, vl.id, vl.chain_type, vl.locus) == ("vh", "heavy", "H", "vl", "light", "K")
    assert vh.v_gene.startswith("IGHV3") and vh.j_gene.startswith("IGHJ4") and vh.species == "human"
    assert vl.v_gene.startswith("IGKV1") and vl.j_gene.startswith("IGKJ1")
    assert 0.7 < vh.v_identity < 1 and 0.7 < vl.v_identity < 1  # humanized: not germline
    heavy = {cdr: region_sequence(TRASTUZUMAB_VH, vh, cdr) for cdr in ("cdr_h1", "cdr_h2", "cdr_h3")}
    assert heavy == {"cdr_h1": "GFNIKDTY", "cdr_h2": "IYPTNGYT", "cdr_h3": "SRWGGDGFYAMDY"}
    light = {cdr: region_sequence(TRASTUZUMAB_VL, vl, cdr) for cdr in ("cdr_l1", "cdr_l2", "cdr_l3")}
    assert light == {"cdr_l1": "QDVNTA", "cdr_l2": "SAS", "cdr_l3": "QQHYTTPPT"}
    assert region_sequence(TRASTUZUMAB_VH, vh, "fr_h4") == "WGQGTLVTVSS"
    assert set(vh.region.compressed()) <= set(REGIONS[:7]) and set(vl.region.compressed()) <= set(REGIONS[7:])
    # Heavy chains have no IMGT position 10: residue 10 (G) is position 11; CDR3 is 105-117.
    keys = vh.imgt_position.filled("").tolist()
    assert keys[:11] == ["1", "2", "3", "4", "5", "6", "7", "8", "9", "11", "12"]
    assert _keys(vh, TRASTUZUMAB_VH, "cdr_h3") == [str(i) for i in range(105, 118)]
    assert not np.ma.getmaskarray(vh.imgt_position).any()  # the whole chain is the domain
    assert vh.framework.sum() == len(TRASTUZUMAB_VH) - 8 - 8 - 13


@pytest.mark.parametrize(
    ("scheme", "h1", "h2", "h3", "l1", "l2"),
    [
        ("kabat", "DTYIH", "RIYPTNGYTRYADSVKG", "WGGDGFYAMDY", "RASQDVNTAVA", "SASFLYS"),
        ("chothia", "GFNIKDT", "YPTNGY", "WGGDGFYAMDY", "RASQDVNTAVA", "SASFLYS"),
        ("north", "AASGFNIKDTYIH", "RIYPTNGYTR", "SRWGGDGFYAMDY", "RASQDVNTAVA", "YSASFLYS"),
    ],
)
def test_trastuzumab_cdrs_under_kabat_chothia_north(scheme, h1, h2, h3, l1, l2):
    imgt_vh = _one(TRASTUZUMAB_VH)
    vh, vl = number_sequences([("vh", TRASTUZUMAB_VH), ("vl", TRASTUZUMAB_VL)], scheme)
    assert vh.scheme == scheme
    got = [region_sequence(TRASTUZUMAB_VH, vh, c) for c in ("cdr_h1", "cdr_h2", "cdr_h3")]
    assert got == [h1, h2, h3]
    got = [region_sequence(TRASTUZUMAB_VL, vl, c) for c in ("cdr_l1", "cdr_l2", "cdr_l3")]
    assert got == [l1, l2, "QQHYTTPPT"]
    # The position label stays IMGT whatever the scheme; the scheme's own numbering is beside it.
    assert vh.imgt_position.tolist() == imgt_vh.imgt_position.tolist()
    kabat_h3 = ["95", "96", "97", "98", "99", "100", "100A", "100B", "100C", "101", "102"]
    chosen = vh.region.filled("") == "cdr_h3"
    expected = (["93", "94"] if scheme == "north" else []) + kabat_h3  # North's H3 starts two earlier
    assert vh.scheme_position.filled("")[chosen].tolist() == expected


def test_long_cdr3_gets_imgt_insertion_codes_and_germline_is_unmutated():
    chain = _one(GERMLINE_VH)
    assert (chain.v_gene, chain.j_gene, chain.v_identity, chain.j_identity) == ("IGHV3-23*01", "IGHJ4*01", 1.0, 1.0)
    assert _keys(chain, GERMLINE_VH, "cdr_h3") == [
        "105", "106", "107", "108", "109", "110", "111", "111A", "112A", "112", "113", "114", "115", "116", "117",
    ]  # fmt: skip
    assert chain.n_somatic == 0
    # Defined at the V (1-104) and J (118-128) positions where the germline has a residue, not in CDR3.
    defined = ~np.ma.getmaskarray(chain.somatic_mutation)
    assert defined.sum() == len(GERMLINE_V) - 2 + 11
    assert not defined[len(GERMLINE_V) - 2 : len(GERMLINE_V) + 13].any()


def test_mutated_copy_gives_exactly_the_mutations_introduced():
    sequence = list(GERMLINE_VH)
    q44 = GERMLINE_VH.index("WVRQ") + 3  # IMGT 41 is the Trp
    m91 = GERMLINE_VH.index("LQMNSL") + 2  # L89 Q90 M91
    t125 = GERMLINE_VH.index("TLVTVSS") + 3  # T122 L123 V124 T125
    d107 = len(GERMLINE_V)  # the first residue of the D part, in CDR3
    for index, residue in ((q44, "K"), (m91, "L"), (t125, "A"), (d107, "E")):
        sequence[index] = residue
    mutated = "".join(sequence)
    chain = _one(mutated)
    assert chain.v_gene.startswith("IGHV3-23") and chain.j_gene == "IGHJ4*01"
    calls = chain.somatic_mutation
    assert np.flatnonzero(calls.filled(False)).tolist() == [q44, m91, t125]
    assert [chain.imgt_position[i] for i in (q44, m91, t125)] == ["44", "91", "125"]
    assert calls.mask[d107]  # CDR3 is not compared with the germline
    assert chain.meta()["n_somatic"] == 3


def test_residues_outside_the_domain_are_undefined():
    tagged = TRASTUZUMAB_VH + "ASTKGPSHHHHHH"
    chain = _one(tagged)
    assert (chain.start, chain.end) == (0, len(TRASTUZUMAB_VH))
    for array in (chain.imgt_position, chain.region, chain.somatic_mutation, chain.framework):
        assert np.ma.getmaskarray(array)[len(TRASTUZUMAB_VH) :].all()
        assert not np.ma.getmaskarray(array)[:10].any()


def test_bad_input_fails_in_one_line_per_chain():
    x_chain = TRASTUZUMAB_VH[:50] + "X" + TRASTUZUMAB_VH[51:]
    items = [("lys", LYSOZYME), ("tcr", TCR_ALPHA), ("short", TRASTUZUMAB_VH[:70]), ("x", x_chain),
             ("junk", "not a protein"), ("vh", TRASTUZUMAB_VH)]  # fmt: skip
    results = number_sequences(items, "kabat")
    reasons = {r.id: r.reason for r in results if isinstance(r, NumberingFailure)}
    assert reasons == {
        "lys": "not an antibody variable domain",
        "tcr": "not an antibody chain (ANARCI type A)",
        # Residue 70 of a heavy chain is IMGT 78 (no 10, 31-34, 60-61 or 73 in this one).
        "short": "truncated domain (numbered positions 1–78 only)",
        "x": "sequence has X at residue 51 (IMGT 56)",
        "junk": "sequence has characters other than upper-case amino-acid letters",
    }
    assert isinstance(results[-1], ChainNumbering) and results[-1].id == "vh"
    assert {NumberingFailure(r).kind for r in reasons.values()} >= {"truncated domain", "sequence has X"}


def test_unknown_scheme_is_refused():
    with pytest.raises(ValueError, match="imgt, kabat, chothia, north"):
        number_sequences([("vh", TRASTUZUMAB_VH)], "aho")


def test_one_hmmscan_run_per_batch(monkeypatch):
    module = importlib.import_module("anarci.anarci")
    calls = []
    real = module.run_hmmer
    monkeypatch.setattr(module, "run_hmmer", lambda items, **kw: calls.append(len(items)) or real(items, **kw))
    items = [(f"c{i}", TRASTUZUMAB_VH if i % 2 else TRASTUZUMAB_VL) for i in range(5)]
    results = number_sequences(items, "imgt", batch_size=2)
    assert calls == [2, 2, 1]
    assert [r.chain_type for r in results] == ["light", "heavy", "light", "heavy", "light"]


def test_a_chain_anarci_chokes_on_fails_alone(monkeypatch):
    module = importlib.import_module("anarci.anarci")
    real = module.number_sequences_from_alignment

    def choke(sequences, alignments, **kw):
        if any(seq == TRASTUZUMAB_VL for _, seq in sequences):
            raise AssertionError("Numbering was found to decrease along the sequence")
        return real(sequences, alignments, **kw)

    monkeypatch.setattr(module, "number_sequences_from_alignment", choke)
    vh, vl = number_sequences([("vh", TRASTUZUMAB_VH), ("vl", TRASTUZUMAB_VL)])
    assert isinstance(vh, ChainNumbering)
    reason = "ANARCI could not number it: Numbering was found to decrease along the sequence"
    assert vl == NumberingFailure(reason, "vl")


def test_labels_are_registered_with_their_properties():
    assert ANNOTATORS["numbering"].option == "numbering"
    assert ANNOTATORS["numbering"].choices == ("imgt", "kabat", "chothia", "north")
    assert LABELS["imgt_position"].property_categories() == {}
    assert LABELS["region"].property_categories() == {cdr: cdr for cdr in CDRS}
    assert LABELS["region"].property_label("cdr_h3") == "CDR-H3" and LABELS["region"].family is None
    assert LABELS["framework"].property_label("framework") == "Framework"
    assert LABELS["somatic_mutation"].property_label("somatic_mutation") == "Somatic mutation"


def test_annotator_labels_numbered_chains_and_masks_the_rest():
    proteins = [Protein(id="vh", sequence=TRASTUZUMAB_VH, meta={"chain_type": "heavy"}),
                Protein(id="lys", sequence=LYSOZYME),
                Protein(id="x", sequence=TRASTUZUMAB_VH[:50] + "X" + TRASTUZUMAB_VH[51:])]  # fmt: skip
    label_numbering(proteins, "chothia")
    vh, lys, x = proteins
    assert vh.meta["numbering"] == {
        "scheme": "chothia", "chain_type": "heavy", "species": "human", "v_gene": vh.meta["numbering"]["v_gene"],
        "v_identity": pytest.approx(vh.meta["numbering"]["v_identity"]), "j_gene": "IGHJ4*01",
        "j_identity": pytest.approx(13 / 14), "n_somatic": vh.meta["numbering"]["n_somatic"],
    }  # fmt: skip
    assert vh.meta["numbering"]["v_gene"].startswith("IGHV3") and vh.meta["numbering"]["n_somatic"] > 5
    region = vh.label("region")
    assert "".join(a for a, r in zip(TRASTUZUMAB_VH, region, strict=True) if r == "cdr_h1") == "GFNIKDT"
    assert vh.label("framework").dtype == bool and not vh.label("framework").mask.any()
    assert position_keys(vh).tolist()[9] == "H11"  # positional baselines use the chain type and IMGT key
    assert position_keys(vh, numbered=False).tolist()[9] == "#10"
    for protein, reason in ((lys, "not an antibody variable domain"), (x, "sequence has X at residue 51 (IMGT 56)")):
        assert protein.meta["unlabelled"]["numbering"] == reason and "numbering" not in protein.meta
        for name in ("imgt_position", "region", "framework", "somatic_mutation"):
            label = protein.label(name)
            assert label is not None and label.mask.all()  # undefined, not False
        assert position_keys(protein).tolist()[:2] == ["#1", "#2"]


def test_summary_counts_reasons_and_chain_type_agreement():
    proteins = [Protein(id="vh", sequence=TRASTUZUMAB_VH, meta={"chain_type": "heavy"}),
                Protein(id="vl", sequence=TRASTUZUMAB_VL, meta={"chain_type": "heavy"}),  # MANIFEST wrong
                Protein(id="scfv", sequence=TRASTUZUMAB_VH, meta={"chain_type": "scFv"}),
                Protein(id="germ", sequence=GERMLINE_VH.replace("WVRQ", "WVGQ")),  # rule: no type
                Protein(id="lys", sequence=LYSOZYME),
                Protein(id="short", sequence=TRASTUZUMAB_VH[:70])]  # fmt: skip
    label_numbering(proteins, "imgt")
    summary = numbering_summary(proteins)
    assert (summary["chains"], summary["numbered"], summary["not_numbered"]) == (6, 4, 2)
    assert summary["share_numbered"] == pytest.approx(4 / 6)
    assert summary["reasons"] == {"not an antibody variable domain": 1, "truncated domain": 1}
    assert [f["id"] for f in summary["failures"]] == ["lys", "short"]
    assert summary["chain_types"] == {"heavy": 3, "light": 1}
    manifest = summary["vs_manifest"]
    assert (manifest["compared"], manifest["agree"]) == (2, 1)
    assert manifest["disagree"] == [{"id": "vl", "numbering": "light", "other": "heavy"}]
    assert manifest["other_types"] == [{"id": "scfv", "numbering": "heavy", "other": "scFv"}]
    rule = summary["vs_sequence_rule"]
    assert (rule["compared"], rule["agree"]) == (4, 3)
    assert rule["disagree"] == [{"id": "germ", "numbering": "heavy", "other": None}]


def test_numbering_source_option_on_a_fasta_file(tmp_path):
    fasta = tmp_path / "chains.fasta"
    fasta.write_text(f">vh\n{TRASTUZUMAB_VH}\n>lys\n{LYSOZYME}\n>vl\n{TRASTUZUMAB_VL}\n")
    proteins, skipped = load_proteins(f"{fasta}::numbering=kabat")
    assert [p.id for p in proteins] == ["vh", "lys", "vl"] and not skipped
    vh, lys, vl = proteins
    assert vh.meta["numbering"]["scheme"] == "kabat" and vl.meta["numbering"]["chain_type"] == "light"
    h3 = "".join(a for a, r in zip(TRASTUZUMAB_VH, vh.label("region"), strict=True) if r == "cdr_h3")
    assert h3 == "WGGDGFYAMDY"
    assert lys.label("region").mask.all() and lys.meta["unlabelled"]["numbering"] == "not an antibody variable domain"


@pytest.mark.integration
def test_antibody_benchmark_is_numbered_and_agrees_with_the_manifest(shared_data):
    source = f"{shared_data / 'antibodies'}::variable_domain,dssp=false"
    proteins, _ = load_proteins(source)
    assert len(proteins) >= 300, "the antibody benchmark should hold about 330 heavy and light chains"
    label_numbering(proteins, "imgt")
    summary = numbering_summary(proteins)
    assert summary["share_numbered"] >= 0.95, summary["failures"]
    manifest = summary["vs_manifest"]
    assert manifest["compared"] >= 0.95 * len(proteins)
    assert manifest["agree"] >= 0.99 * manifest["compared"], manifest["disagree"]


def test_numbering_labels_survive_a_protein_set(tmp_path):
    proteins = [Protein(id="vh", sequence=GERMLINE_VH), Protein(id="lys", sequence=LYSOZYME)]
    label_numbering(proteins, "north")
    path = save_protein_set(proteins, tmp_path / "chains.proteins.npz")
    vh, lys = read_protein_set(path)
    assert vh.label("imgt_position").tolist() == proteins[0].label("imgt_position").tolist()
    assert "111A" in vh.label("imgt_position").tolist() and "112A" in vh.label("imgt_position").tolist()
    assert vh.label("region").tolist() == proteins[0].label("region").tolist()
    assert vh.meta["numbering"]["v_gene"] == "IGHV3-23*01" and vh.meta["numbering"]["scheme"] == "north"
    assert lys.label("somatic_mutation").mask.all()
    assert lys.meta["unlabelled"]["numbering"] == "not an antibody variable domain"
