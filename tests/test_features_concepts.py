"""Feature × concept matching: hand-computed counts and F1, threshold choice on validation, planted features,
neurons in both signs, streaming and merging, the shuffled and positional controls, the split."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
import torch

from plmlens.features import concepts as cc
from plmlens.features.concepts import (
    MATCH_F1,
    TEST,
    THRESHOLDS,
    VALIDATION,
    ActivationRange,
    ConceptCounts,
    PositionalPredictor,
    best_per_concept,
    best_per_unit,
    concept_matrix,
    concept_names,
    coverage_summary,
    match_table,
    pair_with_partner,
    shuffled_pairs,
    split_proteins,
)
from plmlens.proteins import Protein
from plmlens.proteins.positions import position_keys

# ------------------------------------------------------------------------------------------- the hand example

# Protein V (validation): binding site [1, 1, 0, 1*, 1], residue 3 undefined (its "1" must not count).
# Protein T (test): binding site [0, 1, 1, 0, 0], all defined.
V_ACTS = np.array([[0.9, 0.2], [0.55, 1.0], [0.3, 0.4], [0.7, 2.0], [0.0, 1.3]])
T_ACTS = np.array([[1.0, 0.0], [0.3, 1.8], [0.3, 0.1], [0.0, 0.0], [0.0, 0.5]])


def hand_proteins() -> tuple[Protein, Protein]:
    v = Protein(id="V", sequence="ACDEF")
    v.add_label("binding_site", np.array([1, 1, 0, 1, 1], dtype=bool), defined=np.array([1, 1, 1, 0, 1], dtype=bool))
    t = Protein(id="T", sequence="GHIKL", binding_site=[0, 1, 1, 0, 0])
    return v, t


def hand_counts() -> ConceptCounts:
    v, t = hand_proteins()
    span = ActivationRange(2)
    span.update(V_ACTS)
    span.update(T_ACTS)
    counts = ConceptCounts(2, ["binding_site"], THRESHOLDS, span.max)
    counts.update(V_ACTS, *concept_matrix(v, ["binding_site"]), VALIDATION)
    counts.update(T_ACTS, *concept_matrix(t, ["binding_site"]), TEST)
    return counts


def test_concept_matrix_masks_undefined_residues():
    v, _ = hand_proteins()
    values, defined = concept_matrix(v, ["binding_site", "aa_C"])
    assert values.tolist() == [[1, 0], [1, 1], [0, 0], [0, 0], [1, 0]]  # residue 3's site is undefined, not true
    assert defined[:, 0].tolist() == [1, 1, 1, 0, 1] and defined[:, 1].all()
    with pytest.raises(KeyError, match="unknown concept 'nope'"):
        concept_matrix(v, ["nope"])
    with pytest.raises(ValueError, match="'contact' is a pair property"):
        concept_names(["contact"])
    assert "binding_site" in concept_names() and "aa_Y" in concept_names()


def test_activation_range_by_hand():
    span = ActivationRange(2)
    span.update(V_ACTS)
    span.update(T_ACTS)
    assert span.max.tolist() == [1.0, 2.0] and span.min.tolist() == [0.0, 0.0]
    # Feature 0 is above 0 at 4 + 3 residues, feature 1 at 5 + 3, of 10.
    assert span.active.tolist() == [7, 8] and span.frequency.tolist() == [0.7, 0.8]
    with pytest.raises(ValueError, match="NaN"):
        span.update(np.array([[np.nan, 0.0]]))


def test_counts_by_hand():
    counts = hand_counts()
    v, t = 0, 1
    # Validation, feature 0 (max 1): scaled [0.9, 0.55, 0.3, (0.7), 0.0] over defined residues 0, 1, 2, 4 whose
    # sites are 1, 1, 0, 1. > 0 and > 0.15: residues 0, 1, 2 on (TP 2, predicted 3); > 0.5: 0, 1 (TP 2, pred 2);
    # > 0.6 and > 0.8: residue 0 (TP 1, pred 1).
    assert counts.tp[v, :, 0, 0].tolist() == [2, 2, 2, 1, 1]
    assert counts.predicted[v, :, 0, 0].tolist() == [3, 3, 2, 1, 1]
    # Feature 1 (max 2): scaled [0.1, 0.5, 0.2, (1.0), 0.65]. > 0: all four (TP 3, pred 4); > 0.15: 1, 2, 4
    # (TP 2, pred 3); > 0.5 (0.5 itself is not above): 4 (TP 1, pred 1); > 0.6: 4; > 0.8: only the undefined 3.
    assert counts.tp[v, :, 1, 0].tolist() == [3, 2, 1, 1, 0]
    assert counts.predicted[v, :, 1, 0].tolist() == [4, 3, 1, 1, 0]
    assert counts.positives[v].tolist() == [3] and counts.defined[v].tolist() == [4]
    # Test, sites at 1, 2. Feature 0: [1, 0.3, 0.3, 0, 0]: > 0, > 0.15: 0, 1, 2 (TP 2, pred 3); above: residue 0.
    assert counts.tp[t, :, 0, 0].tolist() == [2, 2, 0, 0, 0]
    assert counts.predicted[t, :, 0, 0].tolist() == [3, 3, 1, 1, 1]
    # Feature 1: scaled [0, 0.9, 0.05, 0, 0.25]: > 0: 1, 2, 4; > 0.15: 1, 4; above: 1.
    assert counts.tp[t, :, 1, 0].tolist() == [2, 1, 1, 1, 1]
    assert counts.predicted[t, :, 1, 0].tolist() == [3, 2, 1, 1, 1]
    assert counts.positives[t].tolist() == [2] and counts.n_residues.tolist() == [5, 5]


def test_f1_threshold_chosen_on_validation_and_reported_on_test_by_hand():
    table = match_table(hand_counts())
    f0, f1 = table.iloc[0], table.iloc[1]
    # Validation F1 = 2 TP / (pred + positives), positives 3. Feature 0: 4/6, 4/6, 4/5, 2/4, 2/4.
    f0_val = [f0[f"validation_f1_{t:g}"] for t in THRESHOLDS]
    assert f0_val == pytest.approx([4 / 6, 4 / 6, 4 / 5, 2 / 4, 2 / 4])
    # It picks 0.5; on test (other proteins) the feature is on at residue 0 only there: TP 0 → P = R = F1 = 0,
    # although test's own best threshold (0 or 0.15) would give 2·2 / (3 + 2) = 0.8.
    assert f0.threshold == 0.5 and f0.validation_f1 == pytest.approx(0.8)
    assert (f0.test_precision, f0.test_recall, f0.test_f1) == (0.0, 0.0, 0.0)
    assert not f0.matched
    # Feature 1: 6/7, 4/6, 2/4, 2/4, 0 → threshold 0; test TP 2, pred 3, positives 2: P 2/3, R 1, F1 4/5.
    assert [f1[f"validation_f1_{t:g}"] for t in THRESHOLDS] == pytest.approx([6 / 7, 4 / 6, 2 / 4, 2 / 4, 0.0])
    assert f1.threshold == 0.0
    assert (f1.test_precision, f1.test_recall, f1.test_f1) == pytest.approx((2 / 3, 1.0, 0.8))
    assert f1.matched and f1.test_positives == 2 and f1.validation_positives == 3
    assert list(table["unit"]) == [0, 1] and "sign" not in table.columns


def test_ties_go_to_the_lower_threshold_and_a_concept_without_positives_is_not_matched():
    counts = ConceptCounts(1, ["a", "b"], (0.0, 0.5), np.array([1.0]))
    acts = np.array([[0.9], [0.9], [0.0]])
    values = np.array([[1, 0], [1, 0], [0, 0]], dtype=bool)  # b: no positive anywhere
    for split in (VALIDATION, TEST):
        counts.update(acts, values, np.ones_like(values), split)
    table = match_table(counts)
    a, b = table.iloc[0], table.iloc[1]
    assert a.threshold == 0.0 and a.test_f1 == 1.0 and a.matched  # F1 1 at both thresholds
    assert np.isnan(b.threshold) and np.isnan(b.test_f1) and not b.matched


# ------------------------------------------------------------------------------------------------- planted


def planted_data(n_proteins: int = 60, length: int = 30, seed: int = 0):
    """Proteins with a random concept; feature 0 is the concept's indicator plus noise, feature 1 random."""
    rng = np.random.default_rng(seed)
    ids = [f"p{i}" for i in range(n_proteins)]
    splits = split_proteins(ids, seed=7)
    data = []
    for name in ids:
        concept = rng.random((length, 1)) < 0.2
        acts = np.stack([concept[:, 0] * 1.0 + 0.05 * rng.random(length), rng.random(length)], axis=1)
        data.append((name, acts, concept, np.ones_like(concept), splits[name]))
    return data


def count_all(data, n_units=2, names=("c",), unit_min=False, batches=1):
    span = ActivationRange(n_units)
    for _, acts, *_ in data:
        span.update(acts)
    counts = ConceptCounts(n_units, list(names), THRESHOLDS, span.max, span.min if unit_min else None)
    for split in (VALIDATION, TEST):
        chosen = [d for d in data if d[4] == split]
        for part in np.array_split(np.arange(len(chosen)), batches):
            if len(part):
                counts.update(*(np.concatenate([chosen[i][k] for i in part]) for k in (1, 2, 3)), split)
    return counts


def test_planted_feature_is_matched_and_a_random_one_is_not():
    table = match_table(count_all(planted_data()))
    planted, random = table.iloc[0], table.iloc[1]
    # Off residues reach 0.05 at most, on residues at least 1 (max ≈ 1.05): every threshold from 0.15 separates.
    assert planted.threshold == 0.15 and planted.test_f1 == pytest.approx(1.0) and planted.matched
    assert random.test_f1 < MATCH_F1 and not random.matched


def test_a_neuron_low_exactly_on_the_concept_is_matched_in_its_negative_sign():
    data = []
    for name, acts, concept, defined, split in planted_data():
        neurons = np.stack([1.0 - acts[:, 0], acts[:, 1], np.full(len(acts), 3.0)], axis=1)  # the last is constant
        data.append((name, neurons, concept, defined, split))
    counts = count_all(data, n_units=3, unit_min=True)
    table = match_table(counts)
    assert counts.kind == "neuron" and counts.tp.shape[2] == 6
    rows = {(r.unit, r.sign): r for r in table.itertuples()}
    assert rows[(0, -1)].test_f1 == pytest.approx(1.0) and rows[(0, -1)].matched
    assert not rows[(0, 1)].matched and not rows[(1, 1)].matched and not rows[(1, -1)].matched
    # A constant neuron never turns on: it predicts nothing at any threshold.
    assert counts.predicted[:, :, [2, 5]].sum() == 0 and rows[(2, 1)].test_f1 == 0.0
    best = best_per_unit(table)
    assert best.iloc[0].sign == -1 and best.iloc[0].unit == 0 and len(best) == 3


# ------------------------------------------------------------------------------------------------ streaming


def assert_same_counts(a: ConceptCounts, b: ConceptCounts) -> None:
    for name in ("tp", "predicted", "positives", "defined", "n_residues"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name


def test_streaming_batches_merge_and_save_load_give_the_same_counts(tmp_path):
    data = planted_data(20)
    single = count_all(data, batches=1)
    assert single.tp.sum() > 0
    assert_same_counts(count_all(data, batches=3), single)
    halves = [count_all(data[:9]), count_all(data[9:])]
    # The two halves were scaled by their own maxima: merging them needs the same scaling, given here.
    first, second = (ConceptCounts(2, ["c"], THRESHOLDS, single.unit_max) for _ in range(2))
    for counts, part in ((first, data[:9]), (second, data[9:])):
        for _, acts, values, defined, split in part:
            counts.update(acts, values, defined, split)
    assert_same_counts(first.merge(second), single)
    with pytest.raises(ValueError, match="cannot merge"):
        halves[0].merge(halves[1])
    single.save(tmp_path / "counts.npz")
    loaded = ConceptCounts.load(tmp_path / "counts.npz")
    assert_same_counts(loaded, single)
    assert loaded.concept_names == ["c"] and loaded.thresholds == THRESHOLDS and loaded.kind == "feature"
    neurons = count_all(data, unit_min=True)
    neurons.save(tmp_path / "neurons.npz")
    assert ConceptCounts.load(tmp_path / "neurons.npz").kind == "neuron"
    (tmp_path / "bad.npz").write_text("not npz")
    with pytest.raises(ValueError, match=r"bad\.npz: not a readable npz"):
        ConceptCounts.load(tmp_path / "bad.npz")


def test_ranges_merge():
    data = planted_data(10)
    whole, a, b = ActivationRange(2), ActivationRange(2), ActivationRange(2)
    for i, (_, acts, *_) in enumerate(data):
        whole.update(acts)
        (a if i < 4 else b).update(acts)
    merged = a.merge(b)
    assert np.array_equal(merged.max, whole.max) and np.array_equal(merged.min, whole.min)
    assert np.array_equal(merged.active, whole.active) and merged.n_residues == 300


@pytest.mark.parametrize("density", [0.0, 1.0])
def test_dense_sparse_and_torch_products_agree(monkeypatch, density):
    data = planted_data(12)
    reference = count_all(data, unit_min=True)
    monkeypatch.setattr(cc, "SPARSE_DENSITY", density)  # 0: always dense; 1: always sparse
    monkeypatch.setattr(cc, "CHUNK_ENTRIES", 64)  # many chunks per batch
    assert_same_counts(count_all(data, unit_min=True), reference)
    torch_data = [(n, torch.from_numpy(a), v, d, s) for n, a, v, d, s in data]
    span = ActivationRange(2)
    for _, acts, *_ in torch_data:
        span.update(acts)
    assert np.allclose(span.max, reference.unit_max) and np.allclose(span.min, reference.unit_min)
    counts = ConceptCounts(2, ["c"], THRESHOLDS, reference.unit_max, reference.unit_min)
    for _, acts, values, defined, split in torch_data:
        counts.update(acts, values, defined, split)
    assert_same_counts(counts, reference)


def test_bad_input_is_one_line_error():
    counts = ConceptCounts(2, ["c"], THRESHOLDS, np.ones(2))
    with pytest.raises(ValueError, match=r"shape \(3, 1\), expected \(residues, 2\)"):
        counts.update(np.zeros((3, 1)), np.zeros((3, 1), bool), np.zeros((3, 1), bool), TEST)
    with pytest.raises(ValueError, match="split must be one of"):
        counts.update(np.zeros((3, 2)), np.zeros((3, 1), bool), np.zeros((3, 1), bool), "train")
    with pytest.raises(ValueError, match="must lie in"):
        ConceptCounts(2, ["c"], (0.0, 1.5), np.ones(2))


# ---------------------------------------------------------------------------------------------------- tables


def test_best_per_unit_and_per_concept():
    table = pd.DataFrame({
        "unit": [0, 0, 1, 1, 2, 2],
        "concept": ["a", "b"] * 3,
        "validation_f1": [0.2, 0.9, 0.7, 0.7, 0.1, np.nan],
        "test_f1": [0.3, 0.6, 0.4, 0.8, 0.0, np.nan],
        "matched": [False, True, False, True, False, False],
    })  # fmt: skip
    best = best_per_unit(table)
    # Unit 0: b (0.9); unit 1: a tie, the earlier concept a; unit 2: a (b has no validation F1).
    assert best[["unit", "concept", "test_f1"]].values.tolist() == [[0, "b", 0.6], [1, "a", 0.4], [2, "a", 0.0]]
    top = best_per_concept(table, k=2)
    # a: units 1 (0.7), 0 (0.2); b: 0 (0.9), 1 (0.7).
    assert top[["concept", "rank", "unit", "test_f1"]].values.tolist() == [
        ["a", 1, 1, 0.4], ["a", 2, 0, 0.3], ["b", 1, 0, 0.6], ["b", 2, 1, 0.8]]  # fmt: skip


# -------------------------------------------------------------------------------------------------- controls


def test_split_is_deterministic_order_independent_and_seeded():
    ids = [f"prot{i}" for i in range(400)]
    split = split_proteins(ids, seed=3)
    assert split == split_proteins(list(reversed(ids)), seed=3)
    assert split_proteins(ids[:50], seed=3) == {i: split[i] for i in ids[:50]}  # sharding changes nothing
    assert split != split_proteins(ids, seed=4)
    # By hand: sha256("3:prot0"), its first 8 bytes as a fraction of 2**64, below 0.5 → validation.
    digest = int.from_bytes(hashlib.sha256(b"3:prot0").digest()[:8], "big") / 2**64
    assert split["prot0"] == (VALIDATION if digest < 0.5 else TEST)
    assert 150 < sum(v == VALIDATION for v in split.values()) < 250
    assert 280 < sum(v == VALIDATION for v in split_proteins(ids, 3, (0.8, 0.2)).values()) < 360


def test_shuffled_pairs_are_a_seeded_derangement_within_each_split():
    ids = [f"p{i}" for i in range(50)]
    splits = split_proteins(ids, seed=1)
    pairs = shuffled_pairs(ids, seed=1)
    assert set(pairs) == set(ids) and sorted(pairs.values()) == sorted(ids)  # a permutation
    assert all(a != b and splits[a] == splits[b] for a, b in pairs.items())
    assert pairs == shuffled_pairs(reversed(ids), seed=1) and pairs != shuffled_pairs(ids, seed=2)
    # A split of one protein has nobody to swap with: that protein is left out.
    lonely = shuffled_pairs(["x", "y", "z"], 0, splits={"x": VALIDATION, "y": TEST, "z": TEST})
    assert lonely == {"y": "z", "z": "y"}


def test_pair_with_partner_cuts_and_pads():
    acts = np.arange(8.0).reshape(4, 2)
    own = np.zeros((4, 1), bool)
    longer = np.array([[1], [0], [1], [1], [1], [1]], bool)
    got_acts, values, defined = pair_with_partner(acts, own, own, longer, np.ones_like(longer))
    assert got_acts is acts and values[:, 0].tolist() == [1, 0, 1, 1] and defined.all()
    shorter = np.array([[1], [1]], bool)
    _, values, defined = pair_with_partner(acts, own, own, shorter, np.ones_like(shorter))
    assert values[:, 0].tolist() == [1, 1, 0, 0] and defined[:, 0].tolist() == [1, 1, 0, 0]
    with pytest.raises(ValueError, match="disagree in length"):
        pair_with_partner(acts[:3], own, own, shorter, shorter)


def test_positional_rates_by_hand():
    predictor = PositionalPredictor(["x"])
    a, b = Protein(id="a", sequence="ACDE"), Protein(id="b", sequence="ACDEF")
    predictor.fit_update(position_keys(a), np.array([[0], [0], [1], [0]], bool), np.ones((4, 1), bool), VALIDATION)
    predictor.fit_update(position_keys(b), np.array([[0], [1], [1], [0], [0]], bool), np.ones((5, 1), bool),
                         VALIDATION)  # fmt: skip
    # A test protein is no part of the fit.
    predictor.fit_update(position_keys(b), np.ones((5, 1), bool), np.ones((5, 1), bool), TEST)
    # #1: 0/2, #2: 1/2, #3: 2/2, #4: 0/2, #5: 0/1; an unseen #6 takes the overall rate 3/9.
    keys = np.array(["#1", "#2", "#3", "#4", "#5", "#6", ""])
    assert predictor.score(keys)[:, 0] == pytest.approx([0, 0.5, 1, 0, 0, 1 / 3, 1 / 3])
    with pytest.raises(RuntimeError, match="already used"):
        predictor.fit_update(keys[:1], np.ones((1, 1), bool), np.ones((1, 1), bool), VALIDATION)


def test_a_positional_concept_is_matched_by_position_and_flagged():
    rng = np.random.default_rng(5)
    ids = [f"q{i}" for i in range(60)]
    splits = split_proteins(ids, seed=2)
    predictor = PositionalPredictor(["at3", "random"])
    data = []
    for name in ids:
        length = int(rng.integers(6, 12))
        keys = position_keys(Protein(id=name, sequence="A" * length))
        values = np.stack([keys == "#3", rng.random(length) < 0.3], axis=1)
        acts = values.astype(float) + 0.01 * rng.random((length, 2))  # feature 0 = at3, feature 1 = random
        data.append((name, keys, acts, values, np.ones_like(values), splits[name]))
        predictor.fit_update(keys, values, np.ones_like(values), splits[name])
    for _, keys, _, values, defined, split in data:
        predictor.update(keys, values, defined, split)
    position = predictor.position_f1()
    assert position["at3"] == pytest.approx(1.0) and position["random"] < MATCH_F1
    assert predictor.table().set_index("concept").loc["at3", "threshold"] == "0*max"
    counts = count_all([(n, a, v, d, s) for n, _, a, v, d, s in data], names=("at3", "random"))
    table = match_table(counts, position)
    rows = {(r.unit, r.concept): r for r in table.itertuples()}
    assert rows[(0, "at3")].matched and rows[(0, "at3")].positional  # not above position's F1 of 1
    assert rows[(1, "random")].matched and not rows[(1, "random")].positional
    summary = coverage_summary(table, table, {"shuffled": table.assign(matched=False)}, position)
    assert summary["matched_concepts"] == {"features": 2, "neurons": 2, "shuffled": 0, "position": 1}
    assert summary["features_matched"] == 2 and summary["matches"] == 2 and summary["matches_beyond_position"] == 1
    assert summary["concepts"]["at3"]["position"] == pytest.approx(1.0)
    assert summary["concepts"]["random"]["features"]["selected_test_f1"] == pytest.approx(rows[(1, "random")].test_f1)


def test_positional_predictors_merge_like_one():
    rng = np.random.default_rng(1)
    rows = [(np.array([f"#{i + 1}" for i in range(8)]), rng.random((8, 2)) < 0.4) for _ in range(10)]
    whole, a, b = (PositionalPredictor(["x", "y"]) for _ in range(3))
    for i, (keys, values) in enumerate(rows):
        for target in (whole, a if i < 5 else b):
            target.fit_update(keys[: 4 + i % 4], values[: 4 + i % 4], np.ones((4 + i % 4, 2), bool), VALIDATION)
    a.merge(b)
    probe = np.array(["#1", "#5", "#8", "#9"])
    assert np.allclose(a.score(probe), whole.score(probe))


def test_positional_predictor_saves_and_a_concept_never_defined_on_validation_never_fires(tmp_path):
    predictor = PositionalPredictor(["x", "never"])
    keys = np.array(["#1", "#2", "#3"])
    values = np.array([[1, 0], [0, 0], [1, 0]], bool)
    predictor.fit_update(keys, values, np.array([[1, 0]] * 3, bool), VALIDATION)
    predictor.save(tmp_path / "position.npz")
    loaded = PositionalPredictor.load(tmp_path / "position.npz")
    assert np.allclose(loaded.score(keys), predictor.score(keys), equal_nan=True)
    assert loaded.score(keys)[:, 0].tolist() == [1, 0, 1] and np.isnan(loaded.score(keys)[:, 1]).all()
    for split in (VALIDATION, TEST):
        loaded.update(keys, values | np.array([[0, 1]] * 3, bool), np.ones((3, 2), bool), split)
    f1 = loaded.position_f1()
    # x: on at #1 and #3 exactly; "never": positives on both splits but no rate, so never on: F1 0.
    assert f1 == {"x": 1.0, "never": 0.0}
    assert loaded.predicted[:, :, 1].sum() == 0
