"""The probing task objects and the ContactRegression estimator on tiny cases whose answer is known."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
from sklearn.base import clone, is_classifier
from sklearn.exceptions import NotFittedError
from sklearn.utils import estimator_checks

from plmlens.probing import ContactRegression
from plmlens.probing.metrics import contact_candidates
from plmlens.probing.readout import TopHeadsReadout
from plmlens.probing.regression import REGRESSION_C, REGRESSION_MAX_PAIRS, contact_pair_examples
from plmlens.probing.tasks import (
    TASKS,
    AttentionContactTask,
    BindingSiteTask,
    ContactRegressionTask,
    EmbeddingContactTask,
    LayerInputs,
    Outcome,
    ProbeTask,
    ProteinInputs,
    SecondaryStructureTask,
    Tally,
    make_tasks,
)
from plmlens.probing.template import PositionalTemplate
from plmlens.proteins import Protein, contact_map

LENGTH, N_LAYERS = 40, 2


def clustered(k: int) -> Protein:
    """Residues in blocks of 5 alternating between two far-apart clusters: contacts are exactly the pairs of
    one cluster at separation ≥ 6. Random DSSP letters; every 8th residue a binding site."""
    rng = np.random.default_rng(k)
    cluster = (np.arange(LENGTH) // 5) % 2
    ca = np.stack([100.0 * cluster, np.zeros(LENGTH), np.zeros(LENGTH)], axis=1) + rng.uniform(0, 1, (LENGTH, 3))
    dssp = "".join(rng.choice(list("HET-"), LENGTH))
    return Protein(id=f"c{k}", sequence="A" * LENGTH, ca=ca, cb=ca, dssp=dssp, binding_site=np.arange(LENGTH) % 8 == 0)


def inputs_of(protein: Protein, position: int) -> tuple[ProteinInputs, list[LayerInputs]]:
    """Every residue and pair for training; per layer: hidden states one-hot in the SS class, the site and the
    cluster (plus noise); attention with head 0 on the contacts. Layer 1 also brings the embedding layer (0)."""
    rng = np.random.default_rng(100 + position)
    contacts = contact_map(protein)
    i, j = contact_candidates(LENGTH, ~np.ma.getmaskarray(contacts))
    labels = contacts.filled(False)
    cluster = (np.arange(LENGTH) // 5) % 2
    signal = np.stack([protein.ss_classes == name for name in ("helix", "strand", "turn_bend", "other")]
                      + [protein.binding_site, cluster == 0, cluster == 1], axis=1).astype(float)  # fmt: skip
    layers = []
    for layer in range(1, N_LAYERS + 1):
        attention = rng.uniform(0, 0.1, (2, LENGTH, LENGTH))
        attention[0] += labels
        hidden = [(depth, signal + rng.normal(0, 0.05, signal.shape)) for depth in ([0, 1] if layer == 1 else [layer])]
        layers.append(LayerInputs(layer, hidden, attention))
    item = ProteinInputs(position, protein, contacts, residues=np.ones(LENGTH, bool), pairs=(i, j, labels[i, j]))
    return item, layers


def fit_and_score(task: ProbeTask, n_train: int = 4, n_test: int = 3) -> Outcome:
    """The task's whole path: examples from every layer, one fit per layer, scores of the test proteins."""
    examples: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
    for position in range(n_train):
        protein, layers = inputs_of(clustered(position), position)
        found = [example for inputs in layers for example in task.train_examples(protein, inputs)]
        for layer, features, labels in [*found, *task.finish_train(protein)]:
            examples.setdefault(layer, []).append((features, labels))
    fitted, counts = {}, {}
    for layer, chunks in examples.items():
        features, labels = np.concatenate([x for x, _ in chunks]), np.concatenate([y for _, y in chunks])
        fitted[layer], counts[task.key(layer)] = task.fit_layer(layer, features, labels, seed=0), len(labels)
    tally = Tally(counts=task.initial_counts(N_LAYERS))
    for position in range(n_test):
        protein, layers = inputs_of(clustered(50 + position), position)
        for inputs in layers:
            task.evaluate(fitted, protein, inputs, tally)
        task.finish_test(fitted, protein, tally)
    scores = {name: np.array(rows)[:, 1:] for name, rows in tally.rows.items()}
    return Outcome({task.key(layer): model for layer, model in fitted.items()}, counts, scores, tally.counts)


def probe_rows(task: ProbeTask, outcome: Outcome) -> dict[tuple[int, str], tuple]:
    return {(row[2], row[3]): row for layer in range(N_LAYERS + 1) for row in task.rows(layer, outcome)}


def test_secondary_structure_task_separable_classes_give_f1_one():
    rows = probe_rows(task := SecondaryStructureTask(), fit_and_score(task))
    assert sorted({layer for layer, _ in rows}) == [0, 1, 2]
    for layer in range(N_LAYERS + 1):
        for metric in ("f1_helix", "f1_strand", "f1_turn_bend", "f1_macro"):
            assert rows[(layer, metric)][4] == 1.0, (layer, metric)
        assert rows[(layer, "f1_macro")][5:7] == (4 * LENGTH, 3)  # training residues, test proteins with DSSP
    assert 0 < rows[(1, "f1_helix")][7] < 1  # chance: the share of helix residues


def test_binding_site_task_separable_sites_give_precision_one():
    rows = probe_rows(task := BindingSiteTask(), fit_and_score(task))
    for layer in range(N_LAYERS + 1):
        row = rows[(layer, "precision_at_L/20")]
        assert row[4] == 1.0 and row[6] == 3 and row[7] == pytest.approx(1 / 8)


@pytest.mark.parametrize("task", [EmbeddingContactTask(), AttentionContactTask()], ids=["embedding", "attention"])
def test_pair_tasks_separable_contacts_give_precision_one(task):
    rows = probe_rows(task, fit_and_score(task))
    layers = [0, 1, 2] if task.representation == "embedding" else [1, 2]
    assert sorted(layer for layer, _ in rows) == layers
    for layer in layers:
        row = rows[(layer, "precision_at_L/5")]
        assert row[4] == 1.0 and row[6] == 3 and 0 < row[7] < 0.6


def test_contact_regression_task_planted_attention_gives_precision_one():
    task = ContactRegressionTask(max_proteins=3)
    outcome = fit_and_score(task)
    assert task.rows(1, outcome) == []
    key, top_key = ("contact_regression", "attention", -1), ("contact_regression", "attention", -2)
    assert set(outcome.fitted) == {key, top_key}
    assert outcome.n_train[key] == 3 * len(contact_candidates(LENGTH, np.ones((LENGTH, LENGTH), bool))[0])
    assert isinstance(outcome.fitted[key], ContactRegression)
    # Head 0 of each layer attends along the contacts: one of them alone is as good as any mean (k = 1).
    top = outcome.fitted[top_key]
    assert isinstance(top, TopHeadsReadout) and top.k_ == 1 and top.heads_[0, 1] == 0
    assert outcome.n_train[top_key] == 3 * len(contact_candidates(LENGTH, np.ones((LENGTH, LENGTH), bool), 24)[0])
    rows = {(r[5], r[0], r[1]): r for r in task.regression_rows(outcome)}
    assert [r[5] for r in task.regression_rows(outcome)][:12] == ["regression"] * 12
    assert {(method, name) for method, name, _ in rows} == {
        (method, name) for method in ("regression", "top_heads") for name in ("short", "medium", "long", "all")
    }
    for method in ("regression", "top_heads"):
        assert rows[(method, "all", "L/5")][2] == 1.0 and rows[(method, "all", "L/5")][4] == 3


def test_contact_regression_task_fits_the_template_on_its_training_proteins_and_scores_it():
    task = ContactRegressionTask(max_proteins=3)
    models = task.fit_proteins([clustered(k) for k in range(5)])
    (template,) = models.values()
    assert isinstance(template, PositionalTemplate) and template.n_proteins_ == 3
    # The clusters sit at the same residues in every protein: the template knows every contact.
    tally = Tally()
    protein, _ = inputs_of(clustered(50), 0)
    task.finish_test({ContactRegressionTask.TEMPLATE_LAYER: template}, protein, tally)
    scores = {name: np.array(rows)[:, 1:] for name, rows in tally.rows.items()}
    rows = {(r[0], r[1]): r for r in task.regression_rows(Outcome({}, {}, scores, {}))}
    assert rows[("all", "L/5")][2:] == (1.0, float(protein.contacts.filled(False)[np.triu_indices(LENGTH, 6)].mean()),
                                        1, "template")  # fmt: skip
    assert task.fit_proteins([Protein(id="x", sequence="A" * 10)]) == {}  # no coordinates, no template


def test_tasks_refuse_single_class_labels():
    features = np.random.default_rng(0).normal(size=(20, 3))
    for task in (BindingSiteTask(), EmbeddingContactTask(), AttentionContactTask(), ContactRegressionTask(1)):
        assert task.fit(features, np.zeros(20, bool), seed=0) is None
    assert SecondaryStructureTask().fit(features, np.zeros(20, np.int8), seed=0) == {}


def _coefficients(model) -> tuple[np.ndarray, float]:
    if isinstance(model, ContactRegression):
        return model.coef_, model.intercept_
    if isinstance(model, TopHeadsReadout):
        return model.heads_, model.k_
    return model.weights, model.bias


def test_models_travel_as_arrays_exactly():
    for task in (SecondaryStructureTask(), BindingSiteTask(), ContactRegressionTask(3)):
        for model in fit_and_score(task).fitted.values():
            again = task.model_from_arrays(task.model_arrays(model))
            if isinstance(model, dict):  # one scorer per secondary-structure class
                assert list(again) == list(model)
                model, again = list(model.values()), list(again.values())
            else:
                model, again = [model], [again]
            for sent, received in zip(model, again, strict=True):
                (w, b), (w_again, b_again) = _coefficients(sent), _coefficients(received)
                np.testing.assert_array_equal(w_again, w)
                assert b_again == b


def test_make_tasks_in_table_order_and_unknown_names():
    names = [(t.task, t.representation) for t in make_tasks(list(reversed(TASKS)), 5)]
    assert names == [("secondary_structure", "embedding"), ("binding_site", "embedding"), ("contact", "embedding"),
                     ("contact", "attention"), ("contact_regression", "attention")]  # fmt: skip
    assert [t.task for t in make_tasks(["contact"], 5)] == ["contact", "contact"]
    with pytest.raises(ValueError, match="unknown probing task"):
        make_tasks(["nope"], 5)


# ---- ContactRegression, the estimator ------------------------------------------------------------------


def planted_attention(n: int = 4) -> tuple[list[np.ndarray], list[np.ma.MaskedArray]]:
    """(layers, heads, L, L) attention of `n` clustered proteins, head 0 of each layer on the contacts."""
    attentions, contacts = [], []
    for k in range(n):
        protein, layers = inputs_of(clustered(k), k)
        attentions.append(np.stack([inputs.attention for inputs in layers]))
        contacts.append(protein.contacts)
    return attentions, contacts


def test_contact_regression_not_fitted_raises():
    attentions, contacts = planted_attention(1)
    regression = ContactRegression()
    for call in (lambda: regression.predict(attentions[0]), lambda: regression.layer_scores(0, attentions[0][0]),
                 lambda: regression.decision_function(np.zeros((3, 4))), lambda: regression.score(attentions, contacts),
                 lambda: regression.predict_features(np.zeros((4, 5, 5)))):  # fmt: skip
        with pytest.raises(NotFittedError):
            call()


def test_contact_regression_fit_returns_self_and_scores_planted_contacts():
    attentions, contacts = planted_attention()
    regression = ContactRegression(random_state=1)
    assert regression.fit(attentions[:3], contacts[:3]) is regression
    assert regression.coef_.shape == (N_LAYERS * 2,) and regression.n_features_in_ == N_LAYERS * 2
    assert regression.n_heads_ == 2 and isinstance(regression.intercept_, float)
    assert regression.classes_.tolist() == [False, True] and is_classifier(regression)
    assert regression.score(attentions[3:], contacts[3:]) == 1.0
    # The same model on pair features: fit_pairs and decision_function.
    X, y = contact_pair_examples(attentions[:3], contacts[:3])
    same = ContactRegression(random_state=1)
    assert same.fit_pairs(X, y) is same
    np.testing.assert_array_equal(same.coef_, regression.coef_)
    assert ((same.decision_function(X) > 0) == y).mean() > 0.99
    # A regression rebuilt from its coefficients predicts the same.
    rebuilt = ContactRegression.from_coefficients(regression.coef_, regression.intercept_)
    np.testing.assert_array_equal(rebuilt.predict(attentions[3]), regression.predict(attentions[3]))


def test_contact_regression_needs_both_classes():
    attentions, contacts = planted_attention(1)
    empty = [np.ma.MaskedArray(np.zeros_like(c.data), mask=np.ma.getmaskarray(c)) for c in contacts]
    with pytest.raises(ValueError, match="both contacts and non-contacts"):
        ContactRegression().fit(attentions, empty)


def test_contact_regression_params_clone_and_defaults():
    regression = ContactRegression(C=0.3, max_pairs=100, random_state=5)
    assert regression.get_params() == {"C": 0.3, "max_pairs": 100, "random_state": 5}
    assert ContactRegression().get_params() == {"C": REGRESSION_C, "max_pairs": REGRESSION_MAX_PAIRS, "random_state": 0}
    assert (REGRESSION_C, REGRESSION_MAX_PAIRS) == (0.15, 200_000)  # ESM's values
    copy = clone(regression)
    assert copy is not regression and copy.get_params() == regression.get_params()
    assert copy.set_params(C=1.0) is copy and copy.C == 1.0 and regression.C == 0.3
    attentions, contacts = planted_attention(2)
    fitted_copy = clone(regression.fit(attentions, contacts))
    assert not hasattr(fitted_copy, "coef_")
    with pytest.raises(NotFittedError):
        fitted_copy.predict(attentions[0])
    # scikit-learn's own checks of the parameter conventions.
    name = type(regression).__name__
    estimator_checks.check_no_attributes_set_in_init(name, ContactRegression())
    estimator_checks.check_parameters_default_constructible(name, ContactRegression())
    estimator_checks.check_get_params_invariance(name, ContactRegression())
    estimator_checks.check_set_params(name, ContactRegression())


def test_contact_regression_max_pairs_subsamples():
    attentions, contacts = planted_attention(2)
    small = ContactRegression(max_pairs=50).fit(attentions, contacts)
    full = ContactRegression().fit(attentions, contacts)
    assert not np.array_equal(small.coef_, full.coef_)


def test_no_private_names_imported_across_probing_modules():
    package = Path(__file__).resolve().parents[1] / "src" / "plmlens" / "probing"
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("plmlens"):
                private = [alias.name for alias in node.names if alias.name.startswith("_")]
                assert not private, f"{path.name} imports {private} from {node.module}"
