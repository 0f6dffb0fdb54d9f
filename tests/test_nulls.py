"""Offset- and position-matched nulls: hand-computed examples, cross-fitting, both engines, persistence,
merging and the run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

from conftest import line_positions
from plmlens.analysis import Accumulator, AnalysisResult, analyze, get_properties
from plmlens.analysis.nulls import PositionalRates, fit_nulls, null_name, protein_fold, split_null_name
from plmlens.models import load_model
from plmlens.proteins import Protein
from scale_fixtures import tiny_bert

SEED = 123


def ids_in_folds(n: int = 2) -> list[str]:
    """Protein ids whose cross-fitting folds are 0, 1, 0, 1, ... for `SEED`."""
    found: list[str] = []
    candidate = 0
    while len(found) < n:
        name = f"p{candidate}"
        if protein_fold(name, SEED) == len(found) % 2:
            found.append(name)
        candidate += 1
    return found


def hand_protein(name: str = "hand") -> Protein:
    """8 residues on a line 10 Å apart, residue 7 folded back onto residue 0 (the only contact, at separation
    7), residue 3 without coordinates, residue 7 a binding site."""
    ca = line_positions(8)
    ca[7] = ca[0] + [0.0, 5.0, 0.0]
    ca[3] = np.nan
    return Protein(id=name, sequence="ACDEFGHI", ca=ca, cb=ca, binding_site=[0] * 7 + [1])


def hand_attention() -> torch.Tensor:
    """One layer, two heads. Head 1: arcs 0→7, 7→0 (contacts), 1→2, and 3→5 (residue 3 has no coordinates);
    2→4 below θ. Head 2: uniform."""
    a = torch.zeros(1, 2, 8, 8)
    a[0, 0, 0, 7] = a[0, 0, 7, 0] = 0.5
    a[0, 0, 1, 2] = 0.4
    a[0, 0, 3, 5] = 0.9
    a[0, 0, 2, 4] = 0.2
    a[0, 1] = 1 / 8
    return a


def accumulate(proteins, attention, properties, kinds=("offset", "position"), engine="numpy", **kwargs):
    chosen, _ = fit_nulls(get_properties(properties), kinds, proteins, seed=SEED, numbered=True)
    acc = Accumulator(1, attention.shape[1], chosen, seed=SEED, engine=engine, **kwargs)
    batch = acc.start_batch(proteins, [len(p) for p in proteins], positions=range(len(proteins)))
    batch.add_layer(0, attention)
    acc.commit(batch)
    return acc


def test_offset_null_by_hand():
    acc = accumulate([hand_protein()], hand_attention(), ["contact"], kinds=("offset",))
    heads = AnalysisResult(acc).heads()
    head1 = heads[heads["head"] == 1].iloc[0]
    # Rates by separation over the 7 residues with coordinates: the two pairs at separation 7, (0, 7) and (7, 0),
    # are both contacts (rate 1); every other separation has rate 0. Arcs on defined pairs: 0→7, 7→0 (rate 1)
    # and 1→2 (rate 0): the null is 2/3, the head's own proportion, so its enrichment over the null is 1.
    assert head1.offset_null == pytest.approx(2 / 3)
    assert head1.offset_enrichment == pytest.approx(1.0)
    # Eq. 3: Σ α · r / Σ α over defined pairs = (0.5 + 0.5) / (0.5 + 0.5 + 0.4 + 0.2).
    assert head1.offset_weighted_null == pytest.approx(1.0 / 1.6)
    head2 = heads[heads["head"] == 2].iloc[0]
    # Uniform attention weighs every defined pair alike: the weighted null is the background, 2 / 49.
    assert head2.offset_weighted_null == pytest.approx(2 / 49)
    assert math.isnan(head2.offset_null)  # no arcs
    # The nulls are columns of their property, not rows of their own.
    assert set(heads["property"]) == {"contact"}


def test_position_null_is_cross_fitted_by_hand():
    """Two proteins in different folds: each one's null uses the other's rate at each attended position."""
    first, second = ids_in_folds(2)
    a = Protein(id=first, sequence="ACDE", binding_site=[0, 1, 0, 0])
    b = Protein(id=second, sequence="ACDE", binding_site=[0, 1, 1, 0])
    attention = torch.zeros(2, 1, 4, 4)
    attention[0, 0, 0, 1] = attention[0, 0, 1, 2] = 0.6  # a: arcs to residues 1 (a site) and 2 (not)
    attention[1, 0, 3, 2] = 0.8  # b: an arc to residue 2 (a site)
    acc = accumulate([a, b], attention, ["binding_site"], kinds=("position",))
    row = AnalysisResult(acc).heads().iloc[0]
    # a's arcs take b's rates at residues 1 and 2 (1 and 1); b's arc takes a's rate at residue 2 (0).
    assert row.position_null == pytest.approx((1 + 1 + 0) / 3)
    assert row.proportion == pytest.approx(2 / 3)
    assert row.position_enrichment == pytest.approx((2 / 3) / (2 / 3))
    weighted = (0.6 * 1 + 0.6 * 1 + 0.8 * 0) / (0.6 + 0.6 + 0.8 + 0.0)
    # Eq. 3 sums α · rate over every residue, the zero weights included.
    assert row.position_weighted_null == pytest.approx(weighted)
    # Token properties have no offset null.
    assert "offset_null" not in AnalysisResult(acc).heads().columns


def test_position_null_falls_back_where_the_other_fold_never_saw_a_position():
    first, second = ids_in_folds(2)
    short = Protein(id=first, sequence="ACD", binding_site=[0, 1, 0])
    long = Protein(id=second, sequence="ACDEF", binding_site=[1, 0, 0, 0, 1])
    rates = PositionalRates(get_properties(["binding_site"]), seed=SEED).fit([short, long])
    prop = get_properties(["binding_site"])[0]
    values = rates.position_rates(prop, long)
    # Residues 1–3 of `long` take `short`'s rates; residues 4 and 5 were never seen in `short`'s fold and
    # take its overall rate, 1 / 3.
    assert values.tolist() == pytest.approx([0, 1, 0, 1 / 3, 1 / 3])
    assert rates.position_rates(prop, short).tolist() == pytest.approx([1, 0, 0])


def test_pair_position_null_falls_back_to_the_other_folds_offset_rate():
    first, second = ids_in_folds(2)
    one = hand_protein(first)
    other = hand_protein(second).subset(slice(0, 7))  # residues 0–6: no contact at all
    rates = PositionalRates(get_properties(["contact"]), seed=SEED).fit([one, other])
    prop = get_properties(["contact"])[0]
    values = rates.position_rates(prop, one)
    # `one` takes `other`'s rates: every pair of positions both saw is 0 there, and positions 8 (#8) was never
    # seen by `other`, so pairs with residue 7 take `other`'s offset rate, 0 too; residue 3 has no coordinates.
    assert not np.ma.getmaskarray(values)[0, 7] and values[0, 7] == 0
    assert np.ma.getmaskarray(values)[3].all()
    back = rates.position_rates(prop, other)
    # `other` takes `one`'s rates: the pair of positions (#1, #7) — separation 6 — is 0 in `one`; no pair of
    # `other` is at separation 7, so nothing of `one`'s contact reaches it.
    assert float(back.sum()) == 0.0


def test_a_property_defined_nowhere_has_an_undefined_null():
    proteins = [Protein(id=name, sequence="ACDE") for name in ids_in_folds(2)]  # no binding-site labels
    rates = PositionalRates(get_properties(["binding_site"]), seed=SEED).fit(proteins)
    assert np.ma.getmaskarray(rates.position_rates(get_properties(["binding_site"])[0], proteins[0])).all()


def test_folds_depend_on_the_id_only():
    assert protein_fold("7HVP.A", 1) == protein_fold("7HVP.A", 1)
    folds = {protein_fold(f"x{k}", 5) for k in range(20)}
    assert folds == {0, 1}


def test_engines_agree_and_files_round_trip(tmp_path):
    proteins = [hand_protein(name) for name in ids_in_folds(2)]
    attention = torch.cat([hand_attention(), hand_attention().flip(-1)])
    properties = ["contact", "binding_site"]
    cpu = accumulate(proteins, attention, properties, n_bootstrap=10)
    gpu_like = accumulate(proteins, attention, properties, engine="torch", n_bootstrap=10)
    for name, value in cpu.sums.items():
        np.testing.assert_allclose(gpu_like.sums[name], value, rtol=1e-12, atol=1e-12, err_msg=name)
    path = cpu.save(tmp_path / "acc.npz")
    loaded = Accumulator.load(path)
    assert loaded.property_names == cpu.property_names
    assert null_name("contact", "offset") in loaded.property_names
    heads = AnalysisResult(loaded).heads()
    np.testing.assert_allclose(heads["position_null"], AnalysisResult(cpu).heads()["position_null"])
    merged = loaded.merge(cpu)
    assert AnalysisResult(merged).heads()["offset_null"].dropna().tolist() == pytest.approx(
        heads["offset_null"].dropna().tolist()
    )


def test_null_test_and_significant_heads():
    first, second = ids_in_folds(2)
    proteins = [hand_protein(first), hand_protein(second)]
    acc = accumulate(proteins, torch.cat([hand_attention()] * 2), ["contact"])
    result = AnalysisResult(acc)
    row = result.heads().iloc[0]
    null = row.position_null
    z = (row.n_hits - row.n_arcs * null) / math.sqrt(row.n_arcs * null * (1 - null))
    assert row.position_p_bonferroni == pytest.approx(min(1.0, 2 * norm.sf(z)))
    heads = result.heads()
    assert result.significant_heads(heads) == {}  # every head has fewer than 100 arcs
    heads["few_arcs"] = False
    heads.loc[0, ["significant", "offset_significant", "position_significant"]] = [True, False, True]
    heads.loc[1, ["significant", "offset_significant", "position_significant"]] = [True, True, False]
    assert result.significant_heads(heads) == {"contact": {
        "background": 2, "offset": 1, "background_and_offset": 1, "position": 1, "background_and_position": 1,
    }}  # fmt: skip
    assert result.summary()["nulls"] == ["offset", "position"]
    assert "contact@offset" not in result.summary()["properties"]


def test_names():
    assert split_null_name("contact@offset") == ("contact", "offset")
    assert split_null_name("contact") is None and split_null_name("a@b") is None


def test_analyze_with_nulls_end_to_end(tmp_path, pdb_builder):
    model = load_model(str(tiny_bert(tmp_path / "bert")), device="cpu")
    rng = np.random.default_rng(0)
    proteins = []
    for k in range(6):
        ca = np.cumsum(rng.normal(0, 2.2, (40, 3)), axis=0)
        proteins.append(Protein(id=f"r{k}", sequence="ACDEFGHIKLMNPQRSTVWY" * 2, ca=ca, cb=ca,
                                binding_site=rng.random(40) < 0.2))  # fmt: skip
    plain = analyze(model, proteins, ["contact", "binding_site"], n_bootstrap=0)
    both = analyze(model, proteins, ["contact", "binding_site"], n_bootstrap=0, nulls=("offset", "position"))
    a, b = plain.heads(), both.heads()
    # The nulls add columns and change nothing else.
    for column in a.columns:
        np.testing.assert_array_equal(a[column].to_numpy(), b[column].to_numpy())
    assert {"offset_null", "position_null", "position_enrichment"} <= set(b.columns)
    assert b[b.property == "binding_site"]["offset_null"].isna().all()
    summary = both.summary()
    assert summary["positional_nulls"]["proteins_per_fold"] == [
        sum(protein_fold(p.id, 123) == f for p in proteins) for f in (0, 1)
    ]
    with pytest.raises(ValueError, match="unknown null"):
        analyze(model, proteins, ["contact"], nulls=("diagonal",))


def test_report_and_compare_show_the_positional_nulls(tmp_path):
    from typer.testing import CliRunner

    from plmlens.cli import app
    from scale_fixtures import synthetic_structures

    bert = tiny_bert(tmp_path / "bert")
    data = f"{synthetic_structures(tmp_path / 'structures', 6, min_length=30, max_length=40)}::dssp=false"
    runner = CliRunner()
    runs = []
    for name, nulls in (("with", "offset,position"), ("without", "none")):
        run = tmp_path / name
        done = runner.invoke(app, ["analyze", "--model", str(bert), "--data", data, "--out", str(run), "--nulls", nulls,
                                   "--properties", "contact,aa_A", "--n-bootstrap", "0"])  # fmt: skip
        assert done.exit_code == 0, done.output
        assert runner.invoke(app, ["report", str(run), "--candidates", "2"]).exit_code == 0
        runs.append(run)
    with_nulls = (runs[0] / "report.html").read_text()
    assert "position null" in with_nulls and "offset null" in with_nulls
    assert "position null" not in (runs[1] / "report.html").read_text()
    heads = (runs[0] / "heads.csv").read_text().splitlines()[0]
    assert "offset_null" in heads and "position_enrichment" in heads
    assert "offset_null" not in (runs[1] / "heads.csv").read_text().splitlines()[0]
    compared = runner.invoke(app, ["compare", str(runs[0]), str(runs[1]), "--out", str(tmp_path / "cmp")])
    assert compared.exit_code == 0, compared.output
    page = (tmp_path / "cmp" / "compare.html").read_text()
    assert "heads above position null" in page
    bad = runner.invoke(app, ["analyze", "--model", str(bert), "--data", data, "--out", str(tmp_path / "x"),
                              "--nulls", "diagonal"])  # fmt: skip
    assert bad.exit_code == 2 and "unknown null diagonal" in bad.output
