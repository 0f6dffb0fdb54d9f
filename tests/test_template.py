"""The contact floors: the positional template (mean training contact map by position key) and the top-k heads
readout, against hand-computed scores, precisions, heads and k."""

from __future__ import annotations

import numpy as np
import pytest

from plmlens.probing.metrics import contact_precisions
from plmlens.probing.readout import TopHeadsReadout
from plmlens.probing.regression import head_contact_scores
from plmlens.probing.template import UNSEEN, PositionalTemplate
from plmlens.proteins import Protein, contact_map


def chain(length: int, partners: dict[int, int] = (), missing: tuple[int, ...] = (), imgt=None) -> Protein:
    """CA atoms 10 Å apart on a line (no contacts), except residue ``j`` of each ``{j: i}`` moved 5 Å beside
    residue ``i`` (one contact, if ``|i - j| ≥ 6``); residues in `missing` without coordinates; `imgt`: the
    IMGT position label (None masked)."""
    ca = np.array([[10.0 * k, 0.0, 0.0] for k in range(length)])
    for j, i in dict(partners).items():
        ca[j] = [10.0 * i, 5.0, 0.0]
    ca[list(missing)] = np.nan
    protein = Protein(id=f"p{length}", sequence="A" * length, ca=ca, cb=ca)
    if imgt is not None:
        protein.labels = {"imgt_position": np.ma.array([k or "" for k in imgt], mask=[k is None for k in imgt])}
    return protein


def training_set() -> list[Protein]:
    # A: a contact #1–#8; B: #1–#7; C (7 residues, #3 without coordinates): #1–#7.
    return [chain(8, {7: 0}), chain(8, {6: 0}), chain(7, {6: 0}, missing=(2,))]


def test_the_synthetic_chains_have_the_contacts_they_were_built_with():
    for protein, (i, j) in zip(training_set(), [(0, 7), (0, 6), (0, 6)], strict=True):
        contacts = contact_map(protein)
        assert set(zip(*np.nonzero(np.triu(contacts.filled(False))), strict=True)) == {(i, j)}
    assert np.ma.getmaskarray(contact_map(training_set()[2]))[2].all()


def test_template_scores_are_the_contact_rates_of_key_pairs():
    template = PositionalTemplate().fit(training_set())
    assert template.n_proteins_ == 3 and template.aligned_by_ == "residue index"
    assert list(template.keys_) == sorted(f"#{k}" for k in range(1, 9))
    scores = template.predict(chain(9, {7: 0}))
    # (#1, #7): contact in B and C, not in A -> 2/3; (#1, #8): A only, of A and B -> 1/2; (#2, #8): 0 of 2.
    assert scores[0, 6] == pytest.approx(2 / 3) and scores[0, 7] == 0.5 and scores[1, 7] == 0.0
    # (#1, #3): no contact in A or B, C's #3 has no coordinates -> 0 of 2 (seen, so above unseen pairs).
    assert scores[0, 2] == 0.0
    assert (scores == scores.T).all()
    # Key #9 never seen; the diagonal is no pair.
    assert (scores[8] == UNSEEN).all() and (np.diag(scores) == UNSEEN).all()
    pairs = dict(zip(template.pairs_, zip(template.hits_, template.counts_, strict=True), strict=True))
    code = {key: k for k, key in enumerate(template.keys_)}
    assert pairs[code["#1"] * 8 + code["#7"]] == (2, 3) and pairs[code["#1"] * 8 + code["#3"]] == (0, 2)


def test_template_precision_by_hand():
    test = chain(9, {7: 0})  # one contact (0, 7) among the six pairs at separation >= 6
    precisions = contact_precisions(PositionalTemplate().fit(training_set()).predict(test), contact_map(test))
    # Ranked: (0,6) 2/3, (0,7) 1/2, (1,7) 0, then the unseen (0,8), (1,8), (2,8) in order.
    assert precisions[("all", 5)] == (0.0, 1 / 6)  # L/5 = 1: (0,6), no contact
    assert precisions[("all", 2)] == (0.25, 1 / 6)  # L/2 = 4: one contact of four
    assert precisions[("all", 1)] == (1 / 6, 1 / 6)  # L = 9, six pairs: all of them
    assert np.isnan(precisions[("long", 5)][0])  # no pair 24 apart


def test_template_aligns_numbered_chains_by_imgt_position_and_others_by_index():
    # Both training chains have the contact 1–8 in IMGT numbering; the test chain has an insertion 1A, so its
    # contact 1–8 is residues 0 and 8 by index.
    train = [chain(8, {7: 0}, imgt=[str(k) for k in range(1, 9)]) for _ in range(2)]
    imgt = ["1", "1A", *[str(k) for k in range(2, 9)], None]
    test = chain(10, {8: 0}, imgt=imgt)
    template = PositionalTemplate().fit(train)
    assert template.aligned_by_ == "imgt"
    numbered = template.predict(test)
    assert numbered[0, 8] == 1.0 and numbered[0, 7] == 0.0
    assert (numbered[1] == UNSEEN).all()  # 1A never seen
    assert (numbered[9] == UNSEEN).all()  # no position
    by_index = PositionalTemplate(numbered=False).fit(train).predict(test)
    assert by_index[0, 7] == 1.0 and by_index[0, 8] == UNSEEN


def test_template_needs_a_protein_with_coordinates():
    template = PositionalTemplate().fit([*training_set(), chain(8, missing=tuple(range(8)))])
    assert template.n_proteins_ == 3
    with pytest.raises(ValueError, match="no training protein has contacts"):
        PositionalTemplate().fit([chain(8, missing=tuple(range(8)))])


def test_top_heads_rank_and_k_by_hand():
    # Six ranked pairs, the last three contacts, L/5 = 3 scored; 2 layers × 4 heads. Heads 2, 5 and 6 each
    # score one contact alone (precision 1/3); the noise heads score the non-contacts (0).
    labels = np.array([0, 0, 0, 1, 1, 1], bool)
    scores = np.tile([[0.3], [0.2], [0.1], [0.0], [0.0], [0.0]], (1, 8))
    for head, pair in ((2, 3), (5, 4), (6, 5)):
        scores[:, head] = 0.0
        scores[pair, head] = 1.0
    readout = TopHeadsReadout().fit_pairs([(scores, labels, 3)], n_heads=4)
    assert list(readout.ranking_[:4]) == [2, 5, 6, 0]
    assert readout.head_precision_[0, 2] == pytest.approx(1 / 3) and readout.head_precision_[0, 0] == 0.0
    # k = 1: 1/3; k = 2: two contacts at 0.5, then (0) -> 2/3; k = 4: contacts at 0.25 above noise ≤ 0.075 -> 1;
    # k = 8: five noise heads put pair 0 (0.1875) first, then ties at 0.125 in order (1, 3) -> 1/3.
    assert readout.k_precision_ == pytest.approx({1: 1 / 3, 2: 2 / 3, 4: 1.0, 8: 1 / 3})
    assert readout.k_ == 4
    assert readout.heads_.tolist() == [[0, 2], [1, 1], [1, 2], [0, 0]]


def planted_attention(seed: int, length: int = 60) -> tuple[np.ndarray, np.ma.MaskedArray]:
    """2 layers × 4 heads; heads (0, 1), (1, 2) and (1, 3) attend along a different third of nine long-range
    contacts each, the others at random (ten times more weakly)."""
    rng = np.random.default_rng(seed)
    i = rng.choice(length - 34, 9, replace=False)
    j = i + 24 + rng.integers(0, 10, 9)
    contacts = np.zeros((length, length), bool)
    contacts[i, j] = contacts[j, i] = True
    attention = np.empty((2, 4, length, length))
    for part, (layer, head) in enumerate(((0, 1), (1, 2), (1, 3))):
        attention[layer, head] = 0.001
        attention[layer, head, i[3 * part : 3 * part + 3], j[3 * part : 3 * part + 3]] = 1.0
    attention[[0, 0, 0, 1, 1], [0, 2, 3, 0, 1]] = 0.1 * rng.random((5, length, length))
    return attention, np.ma.MaskedArray(contacts)


def test_top_heads_find_the_three_planted_heads_and_predict_their_mean():
    attentions, contacts = zip(*(planted_attention(seed) for seed in range(4)), strict=True)
    readout = TopHeadsReadout().fit(attentions, contacts)
    assert {tuple(h) for h in readout.heads_[:3].tolist()} == {(0, 1), (1, 2), (1, 3)}
    # L/5 = 12 top pairs, 9 contacts: one planted head finds its 3 (and the ties after them, in order, maybe
    # one more), two 6, three all 9 (the fourth head, a weak random one, costs nothing); eight heads do as well
    # as four, and the smaller k is kept.
    precision = readout.k_precision_
    assert 3 / 12 <= precision[1] < 6 / 12 <= precision[2] < 9 / 12 == precision[4] == precision[8]
    assert readout.k_ == 4
    attention, contact = planted_attention(9)
    assert contact_precisions(readout.predict(attention), contact, (5,))[("long", 5)][0] == 9 / 12
    # The same mean from a stack of every head's map (as `probe` holds them), by flat head index.
    features = np.stack([head_contact_scores(attention[layer, head]) for layer in range(2) for head in range(4)])
    assert np.allclose(readout.predict_features(features), readout.predict(attention), rtol=0, atol=1e-12)
    again = TopHeadsReadout.from_heads(readout.flat_heads_, 4)
    assert np.array_equal(again.predict(attention), readout.predict(attention))
