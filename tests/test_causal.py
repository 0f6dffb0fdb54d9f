"""Causal support: for a left-to-right model the null model permutes row i within j ≤ i and the backgrounds
count the attendable pairs j ≤ i; bidirectional models keep the full-support rules to the last digit."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import line_positions
from plmlens.analysis import Accumulator, AnalysisResult, Property, analyze
from plmlens.cli import app
from plmlens.models import load_model
from plmlens.proteins import Protein, contact_map, iter_records
from scale_fixtures import synthetic_structures, tiny_bert, tiny_gpt2


def _future(protein: Protein) -> np.ma.MaskedArray:
    """f(i, j) = 1 for j > i: the pairs a causal head can never attend."""
    n = len(protein)
    return np.ma.asarray(np.arange(n)[None, :] > np.arange(n)[:, None])


FUTURE = Property("future", "pair", _future, "pairs j > i")


def _near_contacts(protein: Protein) -> np.ma.MaskedArray:
    return contact_map(protein, min_separation=2)


#: Contacts at sequence separation ≥ 2 rather than 6, so that a 6-residue chain can have one.
NEAR_CONTACT = Property("near_contact", "pair", _near_contacts, "CA–CA < 8 Å, separation ≥ 2")


def six_residues() -> Protein:
    """6 residues on a line 10 Å apart; residue 4 moved 5 Å from residue 1 (their contact, separation 3);
    residue 2 without coordinates; binding sites at residues 0, 3 and 5."""
    ca = line_positions(6)
    ca[4] = ca[1] + [0.0, 5.0, 0.0]
    ca[2] = np.nan
    return Protein(id="six", sequence="ACDEFG", ca=ca, cb=ca, binding_site=[1, 0, 0, 1, 0, 1])


def four_residues() -> Protein:
    """4 residues on a line, no contact, a binding site at residue 3."""
    ca = line_positions(4)
    return Protein(id="four", sequence="ACDE", ca=ca, cb=ca, binding_site=[0, 0, 0, 1])


def causal_attention(batch: int, heads: int, width: int, lengths: list[int], seed: int = 0) -> torch.Tensor:
    """Random causal rows (softmax over j ≤ i, sharp enough for arcs above θ), zero beyond each length."""
    generator = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(batch, heads, width, width, generator=generator)
    logits = logits.masked_fill(torch.ones(width, width, dtype=torch.bool).triu(1), float("-inf"))
    attention = logits.softmax(-1)
    for b, n in enumerate(lengths):
        attention[b, :, n:] = 0
        attention[b, :, :, n:] = 0
    return attention


def _accumulate(proteins, attention, properties, **kwargs) -> Accumulator:
    acc = Accumulator(1, attention.shape[1], properties, **kwargs)
    batch = acc.start_batch(proteins, [len(p) for p in proteins], positions=range(len(proteins)))
    batch.add_layer(0, attention)
    acc.commit(batch)
    return acc


def test_causal_background_by_hand():
    six = six_residues()
    attention = causal_attention(1, 2, 6, [6])
    acc = _accumulate([six], attention, ("contact", NEAR_CONTACT, "binding_site"), support="causal", n_bootstrap=0)
    sums = zip(acc.sums["background_hits"], acc.sums["background_total"], strict=True)
    backgrounds = dict(zip(acc.property_names, sums, strict=True))
    # Attendable pairs j ≤ i: 21; the 6 with residue 2 (no coordinates) are undefined, leaving 15. Of these
    # only (4, 1) is a contact at separation ≥ 2; none is one at separation ≥ 6.
    assert backgrounds["near_contact"] == (1, 15)
    assert backgrounds["contact"] == (0, 15)
    # Residue j is attended by the 6 − j rows i ≥ j: binding sites 0, 3, 5 weigh 6 + 3 + 1 of 6 + 5 + ... + 1.
    assert backgrounds["binding_site"] == (10, 21)
    # The same protein with full support: 5 × 5 defined pairs, contacts (1, 4) and (4, 1); 3 of 6 residues.
    full = _accumulate([six], attention, ("contact", NEAR_CONTACT, "binding_site"), n_bootstrap=0)
    assert full.sums["background_hits"].tolist() == [0, 2, 3] and full.sums["background_total"].tolist() == [25, 25, 6]
    # Proportions do not depend on the support: arcs exist only where the attention is non-zero.
    for name in ("arcs", "hits", "weight", "weight_hits"):
        np.testing.assert_array_equal(acc.sums[name], full.sums[name], err_msg=name)

    # Batched with a 4-residue protein (padded to 6): its 10 attendable pairs and weights 4, 3, 2, 1 add up.
    four = four_residues()
    both = _accumulate([six, four], causal_attention(2, 2, 6, [6, 4]), ("contact", NEAR_CONTACT, "binding_site"),
                       support="causal", n_bootstrap=0)  # fmt: skip
    assert both.sums["background_hits"].tolist() == [0, 1, 10 + 1]
    assert both.sums["background_total"].tolist() == [15 + 10, 15 + 10, 21 + 10]
    row = AnalysisResult(both).heads().set_index(["property", "head"]).loc[("binding_site", 1)]
    assert row.background == pytest.approx(11 / 31)


def test_causal_null_permutes_each_row_within_its_past(tmp_path):
    adapter = load_model(str(tiny_gpt2(tmp_path / "gpt2")))
    assert adapter.causal
    sequences = ["ACDEFGHIKLMNPQ", "MNPQRSTV"]
    lengths = [len(s) for s in sequences]
    attention = next(iter(adapter.iter_layers(sequences, hidden_states=False))).attention
    assert attention.shape == (2, 4, 14, 14)
    above = torch.ones(14, 14, dtype=torch.bool).triu(1)
    assert attention[:, :, above].abs().sum() == 0  # the model is causal
    causal = Accumulator(1, 4, ("contact",), support="causal", seed=5).permute_rows(attention, lengths, [0, 1])
    assert causal[:, :, above].abs().sum() == 0  # the null stays within j ≤ i
    for b, n in enumerate(lengths):
        for i in range(n):
            past, permuted = attention[b, :, i, : i + 1], causal[b, :, i, : i + 1]
            torch.testing.assert_close(permuted.sort(-1).values, past.sort(-1).values, rtol=0, atol=0)
    assert not torch.equal(causal, attention)
    # The full-support null, by contrast, moves weight onto pairs the model can never attend.
    full = Accumulator(1, 4, ("contact",), seed=5).permute_rows(attention, lengths, [0, 1])
    assert full[:, :, above].sum() > 1


@pytest.mark.parametrize("support", ["causal", "full"])
def test_engines_agree_and_the_causal_null_never_reaches_the_future(support):
    proteins = [six_residues(), four_residues()]
    attention = causal_attention(2, 3, 6, [6, 4], seed=3)
    properties = ("contact", NEAR_CONTACT, "binding_site", FUTURE)
    numpy = _accumulate(proteins, attention, properties, support=support, n_bootstrap=4, engine="numpy")
    torch_ = _accumulate(proteins, attention, properties, support=support, n_bootstrap=4, engine="torch")
    for name, value in numpy.sums.items():
        np.testing.assert_allclose(torch_.sums[name], value, rtol=1e-12, atol=1e-12, err_msg=name)
    future = numpy.property_names.index("future")
    assert numpy.sums["weight_hits"][future].sum() == 0
    if support == "causal":
        assert numpy.sums["null_weight_hits"][future].sum() == 0 and numpy.sums["null_hits"][future].sum() == 0
        # Every pair is defined for this property: permuting within rows keeps the total weight.
        assert numpy.sums["null_weight"][future].sum() == pytest.approx(numpy.sums["weight"][future].sum())
    else:
        assert numpy.sums["null_weight_hits"][future].sum() > 0


def test_bidirectional_null_and_backgrounds_are_unchanged():
    """Full support draws exactly the permutations it always drew (argsort of the seeded uniforms of each
    protein's position) and counts every pair, so bidirectional results keep every digit."""
    acc = Accumulator(1, 2, ("contact", "binding_site"), seed=9)
    assert acc.support == "full" and acc.config()["support"] == "full"
    for n, position in ((6, 0), (13, 7)):
        legacy = np.argsort(np.random.default_rng([9, 1, position]).random((n, n)), axis=-1)
        np.testing.assert_array_equal(acc._row_order(n, position), legacy)
    attention = torch.rand(1, 2, 6, 6)
    legacy = attention.gather(-1, torch.from_numpy(np.argsort(np.random.default_rng([9, 1, 4]).random((6, 6)))).expand(
        1, 2, 6, 6))  # fmt: skip
    assert torch.equal(acc.permute_rows(attention, [6], [4]), legacy)
    with pytest.raises(ValueError, match="support"):
        Accumulator(1, 2, ("contact",), support="sliding")


def test_support_is_recorded_saved_and_guards_merges(tmp_path):
    causal = _accumulate([six_residues()], causal_attention(1, 2, 6, [6]), ("contact",), support="causal")
    full = _accumulate([six_residues()], causal_attention(1, 2, 6, [6]), ("contact",))
    assert AnalysisResult(causal).summary()["support"] == "causal"
    assert AnalysisResult(full).summary()["support"] == "full"
    assert Accumulator.load(causal.save(tmp_path / "causal.npz")).support == "causal"
    with pytest.raises(ValueError, match="support"):
        causal.merge(full)


def test_analyze_of_a_causal_model_records_causal_support(tmp_path):
    data = f"{synthetic_structures(tmp_path / 'structures', 4)}::dssp=false"
    runner = CliRunner()
    for name, build, support in (("gpt2", tiny_gpt2, "causal"), ("bert", tiny_bert, "full")):
        model = build(tmp_path / name)
        out = tmp_path / f"run_{name}"
        result = runner.invoke(app, ["analyze", "--model", str(model), "--data", data, "--out", str(out),
                                     "--properties", "contact,binding_site,helix", "--n-bootstrap", "0"])  # fmt: skip
        assert result.exit_code == 0, result.output
        assert json.loads((out / "summary.json").read_text())["support"] == support


@pytest.mark.integration
def test_iglm_null_stays_within_the_causal_support(shared_data):
    adapter = load_model("iglm")
    records = iter_records(f"{shared_data / 'antibodies'}::variable_domain,dssp=false")
    proteins = [p for p in records if isinstance(p, Protein)][:12]
    result = analyze(adapter, proteins, ("contact", "binding_site", FUTURE), n_bootstrap=0)
    summary = result.summary()
    assert summary["support"] == "causal" and result.accumulator.n_proteins == 12
    sums, future = result.accumulator.sums, result.accumulator.property_names.index("future")
    # IgLM attends nothing ahead, and neither does its null; both keep all of the residues' weight.
    assert sums["weight_hits"][future].sum() == 0 and sums["null_weight_hits"][future].sum() == 0
    assert sums["null_arcs"].sum() > 0 and sums["null_hits"][future].sum() == 0
    np.testing.assert_allclose(sums["null_weight"], sums["weight"], rtol=1e-9)
    # The backgrounds are counted over the attendable pairs: binding site j of a chain of n weighs n − j.
    assert max(len(p) for p in proteins) < 500  # no truncation
    sites = sum(float((len(p) - np.flatnonzero(p.binding_site)).sum()) for p in proteins)
    pairs = sum(len(p) * (len(p) + 1) / 2 for p in proteins)
    assert summary["backgrounds"]["binding_site"] == pytest.approx(sites / pairs)
    assert summary["backgrounds"]["future"] == 0


def test_causal_support_is_read_from_the_config(tmp_path):
    import transformers

    from plmlens.models.hf import FAMILIES, Family, _is_causal

    unlisted = Family("unlisted", "AutoModel", FAMILIES["bert"].hooks)
    assert _is_causal(FAMILIES["gpt2"], transformers.GPT2Config())
    assert not _is_causal(FAMILIES["bert"], transformers.BertConfig())
    assert not _is_causal(FAMILIES["xlnet"], transformers.XLNetConfig())  # bidirectional at inference
    assert not _is_causal(FAMILIES["esm"], transformers.EsmConfig(vocab_size=33))
    assert _is_causal(unlisted, transformers.LlamaConfig())  # known only as a causal LM
    with pytest.warns(UserWarning, match="windowed attention"):
        assert _is_causal(unlisted, transformers.MistralConfig(sliding_window=64))
    # A BERT built as a decoder is causal, and its attention says so.
    directory = tiny_bert(tmp_path / "decoder")
    config = transformers.BertConfig.from_pretrained(directory)
    config.is_decoder = True
    config.save_pretrained(directory)
    adapter = load_model(str(directory))
    attention = next(iter(adapter.iter_layers(["ACDEFGHIK"], hidden_states=False))).attention
    assert adapter.causal and attention[0, :, torch.ones(9, 9, dtype=torch.bool).triu(1)].abs().sum() == 0
