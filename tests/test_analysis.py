"""Analysis statistics: hand-computed examples for every column, planted signals, batch independence,
exclusion of undefined pairs, merging, persistence and the command."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import norm
from typer.testing import CliRunner

from conftest import line_positions
from plmlens.analysis import (
    HEAD_COLUMNS,
    POSITIONAL_COLUMNS,
    Accumulator,
    AnalysisResult,
    Property,
    analyze,
    blosum62,
    blosum_correlation,
    centre_of_gravity,
)
from plmlens.cli import app
from plmlens.models import load_model
from plmlens.proteins import Protein, contact_map, iter_records
from scale_fixtures import tiny_bert as scale_tiny_bert


def hand_protein() -> Protein:
    """8 residues on a line 10 Å apart, residue 7 folded back onto residue 0 (the only contact), residue 3
    without coordinates, residue 7 a binding site."""
    ca = line_positions(8)
    ca[7] = ca[0] + [0.0, 5.0, 0.0]
    ca[3] = np.nan
    return Protein(id="hand", sequence="ACDEFGHI", ca=ca, cb=ca, binding_site=[0] * 7 + [1])


def hand_attention() -> torch.Tensor:
    """One layer, two heads. Head 1: arcs 0→7, 7→0 (contacts), 1→2, and 3→5 (residue 3 has no coordinates).
    Head 2: uniform."""
    a = torch.zeros(1, 2, 8, 8)
    a[0, 0, 0, 7] = a[0, 0, 7, 0] = 0.5
    a[0, 0, 1, 2] = 0.4
    a[0, 0, 3, 5] = 0.9
    a[0, 0, 2, 4] = 0.2  # below θ: weight only
    a[0, 1] = 1 / 8
    return a


def run_accumulator(proteins, attentions, properties=("contact", "binding_site"), **kwargs) -> Accumulator:
    layers = attentions[0].shape[0] if isinstance(attentions, list) else 1
    acc = Accumulator(layers, attentions[0].shape[-3] if isinstance(attentions, list) else 2, properties, **kwargs)
    lengths = [len(p) for p in proteins]
    batch = acc.start_batch(proteins, lengths, positions=range(len(proteins)))
    if isinstance(attentions, list):  # one (layers, H, N, N) tensor per protein, padded into a batch
        width = max(lengths)
        for layer in range(layers):
            padded = torch.zeros(len(proteins), attentions[0].shape[1], width, width)
            for b, att in enumerate(attentions):
                padded[b, :, : lengths[b], : lengths[b]] = att[layer]
            batch.add_layer(layer, padded)
    else:
        batch.add_layer(0, attentions)
    acc.commit(batch)
    return acc


def wilson(hits: float, n: float, alpha: float) -> tuple[float, float]:
    z = norm.ppf(1 - alpha / 2)
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def test_every_column_by_hand():
    acc = run_accumulator([hand_protein()], hand_attention(), n_bootstrap=50)
    heads = AnalysisResult(acc, alpha=0.05).heads()
    assert list(heads.columns) == HEAD_COLUMNS
    contact = heads[(heads.property == "contact") & (heads["head"] == 1)].iloc[0]
    # Defined pairs: 7 × 7 (residue 3 excluded); contacts (0, 7) and (7, 0).
    assert contact.background == pytest.approx(2 / 49)
    # Arcs > 0.3 on defined pairs: 0→7, 7→0, 1→2 (3→5 is undefined); 2 are contacts.
    assert (contact.n_arcs, contact.n_hits) == (3, 2)
    assert contact.proportion == pytest.approx(2 / 3)
    assert contact.weighted_proportion == pytest.approx(1.0 / (0.5 + 0.5 + 0.4 + 0.2))
    # Pooled two-proportion z-test, one-sided, against the background sample (2 of 49).
    pooled = (2 + 2) / (3 + 49)
    z = (2 / 3 - 2 / 49) / math.sqrt(pooled * (1 - pooled) * (1 / 3 + 1 / 49))
    assert contact.z == pytest.approx(z)
    assert contact.p_value == pytest.approx(norm.sf(z))
    assert contact.p_bonferroni == pytest.approx(min(1.0, 2 * norm.sf(z)))  # m = 1 layer × 2 heads
    low, high = wilson(2, 3, 0.05 / 2)
    assert (contact.ci_low, contact.ci_high) == (pytest.approx(low), pytest.approx(high))
    assert contact.few_arcs and contact.significant == (contact.p_bonferroni < 0.05)
    # One protein: every bootstrap replicate that keeps it gives the same proportion.
    assert contact.boot_ci_low == pytest.approx(2 / 3) and contact.boot_ci_high == pytest.approx(2 / 3)

    site = heads[(heads.property == "binding_site") & (heads["head"] == 1)].iloc[0]
    # Token property: every residue is labelled, so 3→5 counts; only 0→7 attends a binding site.
    assert site.background == pytest.approx(1 / 8)
    assert (site.n_arcs, site.n_hits) == (4, 1)
    assert site.weighted_proportion == pytest.approx(0.5 / (0.5 + 0.5 + 0.4 + 0.9 + 0.2))
    # Row permutation keeps each row's weights, so the number of arcs over fully defined columns is kept.
    null_acc = acc.sums["null_arcs"][1, 0, 0]
    assert null_acc == 4

    uniform = heads[(heads.property == "binding_site") & (heads["head"] == 2)].iloc[0]
    assert uniform.n_arcs == 0 and math.isnan(uniform.proportion) and math.isnan(uniform.z)
    assert uniform.weighted_proportion == pytest.approx(1 / 8)  # uniform attention → the background


def planted_proteins(n: int, length: int = 60, seed: int = 0) -> list[Protein]:
    rng = np.random.default_rng(seed)
    proteins = []
    for k in range(n):
        # A random walk with 3.8 Å steps: compact enough to have contacts at all ranges.
        steps = rng.normal(size=(length, 3))
        ca = np.cumsum(3.8 * steps / np.linalg.norm(steps, axis=1, keepdims=True), axis=0)
        sequence = "".join(rng.choice(list("ACDEFGHIKLMNPQRSTVWY"), length))
        sites = rng.random(length) < 0.1
        proteins.append(Protein(id=f"p{k}", sequence=sequence, ca=ca, cb=ca, binding_site=sites))
    return proteins


def planted_attention(protein: Protein, kind: str) -> torch.Tensor:
    n = len(protein)
    if kind == "uniform":
        return torch.full((1, 1, n, n), 1 / n)
    contacts = contact_map(protein).filled(False)
    a = torch.zeros(1, 1, n, n)
    for i in range(n):
        partners = np.flatnonzero(contacts[i])
        if len(partners):
            a[0, 0, i, partners[0]] = 0.6  # the only arc of the row is a contact
            a[0, 0, i, i] = 0.4
        else:
            a[0, 0, i, i] = 1.0  # self-attention: never a contact
    return a


def test_planted_contacts_give_proportion_one_and_permutation_destroys_them():
    proteins = planted_proteins(30)
    acc = run_accumulator(proteins, [planted_attention(p, "contact") for p in proteins], properties=("contact",))
    row = AnalysisResult(acc).heads().iloc[0]
    background = row.background
    # Arcs: the contact (0.6) and the self-attention (0.4 or 1.0) of every row; only the former are contacts.
    contacts_rows = sum(int(contact_map(p).filled(False).any(axis=1).sum()) for p in proteins)
    assert row.n_hits == contacts_rows and row.n_arcs == sum(len(p) for p in proteins) + contacts_rows
    assert row.null_proportion < 2 * background < row.proportion
    only_contacts = [planted_attention(p, "contact") for p in proteins]
    for a in only_contacts:
        a[0, 0].fill_diagonal_(0.0)
    row = AnalysisResult(run_accumulator(proteins, only_contacts, properties=("contact",))).heads().iloc[0]
    assert row.proportion == 1.0 and row.weighted_proportion == 1.0
    assert abs(row.null_proportion - row.background) < 3 * math.sqrt(row.background / row.n_arcs) + 0.01


def test_uniform_attention_weighted_proportion_equals_background():
    proteins = planted_proteins(10)
    acc = run_accumulator(proteins, [planted_attention(p, "uniform") for p in proteins], ("contact", "binding_site"))
    heads = AnalysisResult(acc).heads()
    for _, row in heads.iterrows():
        # Uniform rows weigh every pair of a protein alike: the weighted share is the length-weighted
        # background, exactly the background when all proteins have the same length.
        assert row.weighted_proportion == pytest.approx(row.background, rel=1e-4)  # float32 attention
        assert row.n_arcs == 0


def test_null_model_permutes_each_row_within_the_protein():
    acc = Accumulator(1, 3, ("contact",), seed=7)
    attention = torch.zeros(2, 3, 6, 6)
    attention[0, :, :4, :4] = torch.rand(3, 4, 4)
    attention[1] = torch.rand(3, 6, 6)
    permuted = acc.permute_rows(attention, [4, 6], positions=[10, 11])
    # Every row keeps its weights (a permutation of itself) and nothing moves into the padding.
    torch.testing.assert_close(permuted.sort(dim=-1).values, attention.sort(dim=-1).values)
    assert permuted[0, :, :, 4:].abs().sum() == 0 and permuted[0, :, 4:].abs().sum() == 0
    assert not torch.equal(permuted, attention)
    # Seeded by the protein's position in the run: the same draw whatever the batch.
    again = Accumulator(1, 3, ("contact",), seed=7).permute_rows(attention[1:], [6], positions=[11])
    torch.testing.assert_close(again[0], permuted[1])


def test_undefined_pairs_are_excluded():
    protein = hand_protein()
    loud = hand_attention()
    loud[0, :, 3, :] = 0.0
    loud[0, :, 3, 6] = 0.95  # more attention from the residue without coordinates
    loud[0, :, 6, 3] = 0.95  # and to it
    before = run_accumulator([protein], hand_attention(), properties=("contact",))
    after = run_accumulator([protein], loud, properties=("contact",))
    for name in ("arcs", "hits", "weight", "weight_hits"):
        np.testing.assert_allclose(after.sums[name], before.sums[name], err_msg=name)
    assert after.sums["background_total"][0] == 49 and after.sums["background_hits"][0] == 2


def test_merge_is_addition_and_save_load_round_trip(tmp_path):
    proteins = planted_proteins(6)
    attentions = [planted_attention(p, "contact") for p in proteins]
    whole = run_accumulator(proteins, attentions, properties=("contact", "aa_A"), seed=5)
    first = run_accumulator(proteins[:3], attentions[:3], properties=("contact", "aa_A"), seed=5)
    second = Accumulator(1, 1, ("contact", "aa_A"), seed=5)
    lengths = [len(p) for p in proteins[3:]]
    batch = second.start_batch(proteins[3:], lengths, positions=[3, 4, 5])
    padded = torch.zeros(3, 1, max(lengths), max(lengths))
    for b, a in enumerate(attentions[3:]):
        padded[b, :, : lengths[b], : lengths[b]] = a[0]
    batch.add_layer(0, padded)
    second.commit(batch)
    merged = first.merge(second)
    for name in whole.sums:
        np.testing.assert_allclose(merged.sums[name], whole.sums[name], err_msg=name)
    path = merged.save(tmp_path / "acc.npz")
    loaded = Accumulator.load(path)
    assert loaded.config() == merged.config() and loaded.n_proteins == 6
    with pytest.raises(ValueError, match="different settings"):
        merged.merge(Accumulator(1, 1, ("contact",)))


def test_custom_property_needs_no_edit():
    def cys_cys(protein: Protein) -> np.ma.MaskedArray:
        is_cys = np.array([c == "C" for c in protein.sequence])
        return np.ma.asarray(np.logical_and.outer(is_cys, is_cys))

    protein = Protein(id="c", sequence="CACAC")
    a = torch.zeros(1, 1, 5, 5)
    a[0, 0, 0, 2] = a[0, 0, 1, 3] = 0.9
    acc = run_accumulator([protein], [a], properties=[Property("cys_cys", "pair", cys_cys)])
    row = AnalysisResult(acc).heads().iloc[0]
    assert row.property == "cys_cys" and (row.n_arcs, row.n_hits) == (2, 1) and row.background == 9 / 25


def test_centre_of_gravity_and_blosum():
    assert centre_of_gravity(np.array([0.0, 1.0, 0.0, 1.0])) == pytest.approx(3.0)
    assert centre_of_gravity(np.array([0.1, np.nan, 0.3])) == pytest.approx((1 * 0.1 + 3 * 0.3) / 0.4)
    matrix = blosum62()
    assert matrix.shape == (20, 20) and matrix[18, 18] == 11 and matrix[0, 0] == 4  # W-W, A-A
    rng = np.random.default_rng(0)
    # Profiles generated from BLOSUM62-shaped covariance correlate with BLOSUM62; shuffled ones do not.
    cov = matrix + (1 - np.linalg.eigvalsh(matrix).min()) * np.eye(20)  # BLOSUM62 shifted to be positive definite
    profiles = rng.multivariate_normal(np.zeros(20), cov, size=400).T
    _, r = blosum_correlation(profiles)
    _, r_null = blosum_correlation(rng.normal(size=(20, 400)))
    assert r > 0.6 and abs(r_null) < 0.3


def tiny_bert(tmp_path) -> str:
    return str(scale_tiny_bert(tmp_path / "tiny-bert"))


def test_batch_size_one_equals_eight(tmp_path):
    adapter = load_model(tiny_bert(tmp_path))
    proteins = planted_proteins(11, length=40)
    proteins = [p.subset(slice(0, 20 + 2 * k)) for k, p in enumerate(proteins)]  # different lengths
    one = analyze(adapter, proteins, ["contact", "binding_site", "aa_C"], batch_size=1, n_bootstrap=20).heads()
    eight = analyze(adapter, proteins, ["contact", "binding_site", "aa_C"], batch_size=8, n_bootstrap=20).heads()
    assert one.n_arcs.sum() > 0
    pd.testing.assert_frame_equal(one, eight, atol=1e-6, rtol=1e-5)


def test_cli_analyze_writes_every_output(tmp_path, pdb_builder):
    structures = tmp_path / "structures"
    structures.mkdir()
    for k, protein in enumerate(planted_proteins(3, length=45)):
        builder = pdb_builder()
        for i, (letter, xyz) in enumerate(zip(protein.sequence, protein.ca, strict=True)):
            name = {"G": "GLY", "A": "ALA", "C": "CYS", "W": "TRP"}.get(letter, "SER")
            builder.residue(name, "A", i + 1, xyz)
        (structures / f"{k}abc.pdb").write_text(builder.text())
    out = tmp_path / "run"
    args = ["analyze", "--model", tiny_bert(tmp_path), "--data", f"{structures}::dssp=false", "--out", str(out),
            "--n-bootstrap", "10"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    heads = pd.read_csv(out / "heads.csv")
    # The command computes the positional nulls by default: their columns follow the paper's.
    assert list(heads.columns) == HEAD_COLUMNS + POSITIONAL_COLUMNS
    assert set(heads.layer) == {1, 2, 3} and set(heads["head"]) == {1, 2, 3, 4}
    assert {"contact", "binding_site", "aa_S"} <= set(heads.property)
    layers = pd.read_csv(out / "layers.csv")
    assert len(layers[layers.property == "contact"]) == 3
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"]["layers"] == 3 and summary["n_proteins"] == 3 and summary["data"].endswith("dssp=false")
    assert summary["threshold"] == 0.3 and "contact" in summary["centres_of_gravity"]
    assert set(summary["blosum62_correlation"]) == {"model", "null"}
    assert (out / "amino_acids.csv").exists() and not (out / "accumulator.partial.npz").exists()
    reloaded = AnalysisResult.load(out)
    pd.testing.assert_frame_equal(reloaded.heads(), heads, check_dtype=False, atol=1e-9)


def test_cli_analyze_bad_model_is_one_line(tmp_path):
    fasta = tmp_path / "x.fasta"
    fasta.write_text(">a\nACDEFGHIK\n")
    result = CliRunner().invoke(app, ["analyze", "--model", str(tmp_path / "nothing"), "--data", str(fasta),
                                      "--out", str(tmp_path / "o")])  # fmt: skip
    assert result.exit_code == 2 and "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


@pytest.mark.integration
def test_antiberty_on_antibody_structures(shared_data):
    adapter = load_model("antiberty")
    result = analyze(adapter, iter_records(f"{shared_data / 'antibodies'}::variable_domain"), limit=40, seed=1)
    heads = result.heads()
    assert result.accumulator.n_proteins == 40 and result.backgrounds()["binding_site"] > 0.03
    for prop in ("contact", "binding_site"):
        top = result.top_heads(prop, k=1, heads=heads).iloc[0]
        assert top.significant and top.proportion > 2 * top.background and top.proportion > 2 * top.null_proportion
    assert heads[heads.property == "helix"].background.iloc[0] > 0  # DSSP ran on the structures
