"""Probing classifiers per layer (the paper's appendix B.3) and ESM-style contact regression.

Two passes over the model, each streaming layer by layer:

1. training proteins: per layer, features are taken as the layer arrives (residue hidden states for
   token tasks; the product and difference of two residues' hidden states, and all heads' attention in
   both directions, for contacts; symmetrised APC-corrected attention of every layer and head for the
   contact regression) and subsampled to at most ``max_train_*`` examples; then one linear classifier
   per (task, representation, layer) is fitted with scikit-learn;
2. test proteins: each layer's classifiers score the test proteins as their layers arrive, and only the
   metric counts are kept.

Splits are by protein (seeded); a protein is never in both. Evaluation is on every defined residue or
pair (sequence separation ≥ 6) of the test proteins.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from plmlens.ioutils import write_text_atomic
from plmlens.models import ModelAdapter
from plmlens.probing.metrics import (
    apc,
    contact_candidates,
    contact_precisions,
    f1_counts,
    f1_from_counts,
    precision_at_k,
)
from plmlens.proteins import SS_CLASSES, Protein, contact_map
from plmlens.proteins.skips import Skipped

TASKS = ("secondary_structure", "binding_site", "contact", "contact_regression")
SS_NAMES = tuple(SS_CLASSES)


@dataclass
class _Examples:
    """Training examples of one (task, representation, layer), subsampled as they stream in."""

    features: list[np.ndarray] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)

    def add(self, features: np.ndarray, labels: np.ndarray) -> None:
        if len(labels):
            self.features.append(features.astype(np.float32))
            self.labels.append(np.asarray(labels))

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return np.concatenate(self.features), np.concatenate(self.labels)


class _Linear:
    """Standardised logistic regression whose decision function can also be applied to raw arrays."""

    def __init__(self, features: np.ndarray, labels: np.ndarray, seed: int, l1_c: float | None = None) -> None:
        self.scaler = StandardScaler().fit(features)
        if l1_c is None:
            model = LogisticRegression(max_iter=2000, class_weight="balanced", random_state=seed)
        else:
            model = LogisticRegression(l1_ratio=1.0, C=l1_c, solver="liblinear", max_iter=2000, random_state=seed)
        self.model = model.fit(self.scaler.transform(features), labels)
        # Fold the scaling into the weights: score = x · w + b on raw features.
        scale = np.where(self.scaler.scale_ > 0, self.scaler.scale_, 1.0)
        self.weights = self.model.coef_[0] / scale
        self.bias = float(self.model.intercept_[0] - (self.scaler.mean_ / scale) @ self.model.coef_[0])

    def score(self, features: np.ndarray) -> np.ndarray:
        return features @ self.weights + self.bias


def _pair_embedding_scores(model: _Linear, hidden: np.ndarray) -> np.ndarray:
    """Scores of every pair from features [h_i * h_j, h_i - h_j] without building them (TAPE's pairwise
    features), symmetrised as TAPE symmetrises its contact head."""
    d = hidden.shape[1]
    w_prod, w_diff = model.weights[:d], model.weights[d:]
    prod = (hidden * w_prod) @ hidden.T
    diff = (hidden @ w_diff)[:, None] - (hidden @ w_diff)[None, :]
    scores = prod + diff + model.bias
    return (scores + scores.T) / 2


def _pair_embedding_features(hidden: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    return np.concatenate([hidden[i] * hidden[j], hidden[i] - hidden[j]], axis=1)


def _attention_features(attention: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """All heads' attention for pairs (i, j), both directions: (pairs, 2H)."""
    return np.concatenate([attention[:, i, j].T, attention[:, j, i].T], axis=1)


def _regression_features(attention: np.ndarray) -> np.ndarray:
    """Symmetrised, APC-corrected attention of every head: (H, L, L)."""
    return apc(attention + attention.transpose(0, 2, 1))


@dataclass
class ProbeResult:
    """Per-layer probe scores and contact-regression precisions."""

    probes: pd.DataFrame
    contact_regression: pd.DataFrame
    info: dict

    def save(self, directory: str | Path) -> dict[str, Path]:
        """Write ``probes.csv``, ``contact_regression.csv`` and ``summary.json`` atomically."""
        directory = Path(directory)
        return {
            "probes": write_text_atomic(directory / "probes.csv", self.probes.to_csv(index=False)),
            "contact_regression": write_text_atomic(
                directory / "contact_regression.csv", self.contact_regression.to_csv(index=False)
            ),
            "summary": write_text_atomic(
                directory / "summary.json", json.dumps(self.info, indent=2, default=float) + "\n"
            ),
        }


def split_proteins(
    proteins: Sequence[Protein], train_fraction: float, seed: int
) -> tuple[list[Protein], list[Protein]]:
    """Seeded split by protein: no protein is in both parts."""
    order = np.random.default_rng(seed).permutation(len(proteins))
    n_train = round(train_fraction * len(proteins))
    n_train = min(max(n_train, 1), len(proteins) - 1)
    return [proteins[k] for k in order[:n_train]], [proteins[k] for k in order[n_train:]]


def probe(
    adapter: ModelAdapter,
    proteins: Iterable[Protein | Skipped],
    tasks: Sequence[str] = TASKS,
    *,
    train_fraction: float = 0.8,
    seed: int = 0,
    max_length: int = 512,
    batch_size: int = 8,
    max_train_residues: int = 20_000,
    max_train_pairs: int = 4_000,
    regression_proteins: int = 20,
    limit: int | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> ProbeResult:
    """Train and evaluate linear probes on every layer of a model.

    Parameters
    ----------
    adapter : ModelAdapter
    proteins : iterable of Protein
        Proteins with the labels the tasks need (DSSP, binding sites, coordinates); proteins without a
        task's labels are simply not used for that task.
    tasks : sequence of str
        ``secondary_structure`` (embedding probe, one-vs-rest F1 per class and macro),
        ``binding_site`` (embedding probe, precision@L/20), ``contact`` (embedding and attention probes,
        precision@L/5), ``contact_regression`` (L1 logistic regression over symmetrised APC-corrected
        attention of all layers and heads; precision@L, L/2, L/5 by range).
    train_fraction : float
        Share of proteins (seeded) used for training.
    max_train_residues, max_train_pairs : int
        Per (task, layer), training residues and pairs are subsampled to about this many (all contacts
        are kept up to half of `max_train_pairs`; the rest are random non-contacts).
    regression_proteins : int
        Training proteins of the contact regression (ESM fitted it on 20).
    progress : callable, optional
        ``progress(phase, done, total)`` after every batch.

    Returns
    -------
    ProbeResult
    """
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown:
        raise ValueError(f"unknown probing task(s) {unknown}; known: {', '.join(TASKS)}")
    started = time.perf_counter()
    records = [p for p in proteins if isinstance(p, Protein)]
    records = records[:limit] if limit is not None else records
    if len(records) < 2:
        raise ValueError(f"probing needs at least 2 proteins, got {len(records)}")
    train, test = split_proteins(records, train_fraction, seed)
    rng = np.random.default_rng(seed)
    n_layers = adapter.n_layers
    n_train_residues = sum(min(len(p), max_length) for p in train)
    residue_rate = min(1.0, max_train_residues / max(n_train_residues, 1))
    pair_budget = max_train_pairs / max(len(train), 1)

    examples: dict[tuple[str, str, int], _Examples] = {}
    regression_rows: list[np.ndarray] = []
    regression_labels: list[np.ndarray] = []
    regression_set = {id(p) for p in train[:regression_proteins]}

    def ex(task: str, representation: str, layer: int) -> _Examples:
        return examples.setdefault((task, representation, layer), _Examples())

    def labels_of(protein: Protein, n: int) -> dict:
        cut = protein if n == len(protein) else protein.subset(slice(0, n))
        contacts = contact_map(cut)
        return {"protein": cut, "contacts": contacts}

    # ---- pass 1: training features --------------------------------------------------------------
    for done, batch in enumerate(_batches(train, batch_size)):
        cache: list[dict] = []
        regression_parts: list[list[np.ndarray]] = [[] for _ in batch]
        for output in adapter.iter_layers(batch, max_length=max_length, hidden_states=True):
            lengths = [int(n) for n in output.lengths]
            if not cache:
                cache = [labels_of(p, n) for p, n in zip(batch, lengths, strict=True)]
                for item in cache:
                    item["residues"] = rng.random(len(item["protein"])) < residue_rate
                    item["pairs"] = _sample_pairs(item["contacts"], pair_budget, rng)
            for b, item in enumerate(cache):
                n = lengths[b]
                hidden = output.hidden[b, :n].numpy()
                attention = output.attention[b, :, :n, :n].numpy()
                protein, keep = item["protein"], item["residues"]
                if "secondary_structure" in tasks and protein.dssp is not None:
                    known = keep & (protein.ss_classes != "unknown")
                    ex("secondary_structure", "embedding", output.layer).add(hidden[known], protein.ss_classes[known])
                if "binding_site" in tasks and protein.binding_site is not None:
                    ex("binding_site", "embedding", output.layer).add(hidden[keep], protein.binding_site[keep])
                if "contact" in tasks:
                    i, j, y = item["pairs"]
                    ex("contact", "embedding", output.layer).add(_pair_embedding_features(hidden, i, j), y)
                    ex("contact", "attention", output.layer).add(_attention_features(attention, i, j), y)
                if "contact_regression" in tasks and id(batch[b]) in regression_set:
                    regression_parts[b].append(_regression_features(attention))
        for b, item in enumerate(cache):
            if regression_parts[b]:
                features = np.concatenate(regression_parts[b])  # (layers × H, L, L)
                defined = ~np.ma.getmaskarray(item["contacts"])
                i, j = contact_candidates(len(item["protein"]), defined)
                regression_rows.append(features[:, i, j].T.astype(np.float32))
                regression_labels.append(item["contacts"].filled(False)[i, j])
        if progress is not None:
            progress("train", done + 1, -(-len(train) // batch_size))

    fitted: dict[tuple[str, str, int], object] = {}
    n_train: dict[tuple[str, str, int], int] = {}
    for key, collected in examples.items():
        if not collected.labels:
            continue
        features, labels = collected.arrays()
        if key[0] == "secondary_structure":
            fitted[key] = {
                name: _Linear(features, labels == name, seed)
                for name in SS_NAMES
                if 0 < (labels == name).sum() < len(labels)
            }
        elif 0 < labels.sum() < len(labels):
            fitted[key] = _Linear(features, labels.astype(bool), seed)
        n_train[key] = len(labels)
    regression = None
    if regression_rows:
        features, labels = np.concatenate(regression_rows), np.concatenate(regression_labels)
        if 0 < labels.sum() < len(labels):
            cap = rng.permutation(len(labels))[:200_000]  # bounded memory and fit time on long proteins
            regression = _Linear(features[cap], labels[cap], seed, l1_c=0.15)

    # ---- pass 2: evaluation ------------------------------------------------------------------------
    ss_counts = {(layer, name): np.zeros(3) for layer in range(n_layers) for name in SS_NAMES}
    ss_prior = {name: [0, 0] for name in SS_NAMES}
    scores: dict[tuple[str, str, int], list[float]] = {}
    chance: dict[tuple[str, str, int], list[float]] = {}
    regression_scores: dict[tuple[str, int], list[tuple[float, float]]] = {}
    n_test = {"secondary_structure": 0, "binding_site": 0, "contact": 0}
    for done, batch in enumerate(_batches(test, batch_size)):
        cache = []
        regression_parts = [[] for _ in batch]
        for output in adapter.iter_layers(batch, max_length=max_length, hidden_states=True):
            lengths = [int(n) for n in output.lengths]
            if not cache:
                cache = [labels_of(p, n) for p, n in zip(batch, lengths, strict=True)]
                for item in cache:
                    protein = item["protein"]
                    n_test["secondary_structure"] += protein.dssp is not None
                    n_test["binding_site"] += protein.binding_site is not None
                    n_test["contact"] += bool(item["contacts"].count())
                    if protein.dssp is not None:
                        for name in SS_NAMES:
                            known = protein.ss_classes != "unknown"
                            ss_prior[name][0] += int((protein.ss_classes[known] == name).sum())
                            ss_prior[name][1] += int(known.sum())
            layer = output.layer
            for b, item in enumerate(cache):
                n = lengths[b]
                hidden = output.hidden[b, :n].numpy().astype(np.float64)
                attention = output.attention[b, :, :n, :n].numpy().astype(np.float64)
                protein, contacts = item["protein"], item["contacts"]
                models = fitted.get(("secondary_structure", "embedding", layer))
                if models and protein.dssp is not None:
                    known = protein.ss_classes != "unknown"
                    for name, model in models.items():
                        predicted = model.score(hidden[known]) > 0
                        ss_counts[(layer, name)] += f1_counts(predicted, protein.ss_classes[known] == name)
                model = fitted.get(("binding_site", "embedding", layer))
                if model is not None and protein.binding_site is not None and protein.binding_site.any():
                    k = max(1, n // 20)
                    key = ("binding_site", "embedding", layer)
                    scores.setdefault(key, []).append(precision_at_k(model.score(hidden), protein.binding_site, k))
                    chance.setdefault(key, []).append(float(protein.binding_site.mean()))
                if contacts.count():
                    for representation in ("embedding", "attention"):
                        model = fitted.get(("contact", representation, layer))
                        if model is None:
                            continue
                        if representation == "embedding":
                            pair_scores = _pair_embedding_scores(model, hidden)
                        else:
                            pair_scores = _attention_pair_scores(model, attention)
                        precision, base = contact_precisions(pair_scores, contacts, divisors=(5,))[("all", 5)]
                        key = ("contact", representation, layer)
                        scores.setdefault(key, []).append(precision)
                        chance.setdefault(key, []).append(base)
                if regression is not None:
                    regression_parts[b].append(_regression_features(attention))
        if regression is not None:
            for b, item in enumerate(cache):
                if not item["contacts"].count():
                    continue
                features = np.concatenate(regression_parts[b])
                pair_scores = np.einsum("f,fij->ij", regression.weights, features) + regression.bias
                for key, value in contact_precisions(pair_scores, item["contacts"]).items():
                    regression_scores.setdefault(key, []).append(value)
        if progress is not None:
            progress("test", done + 1, -(-len(test) // batch_size))

    rows = []
    for layer in range(n_layers):
        key = ("secondary_structure", "embedding", layer)
        if key in fitted:
            f1s = {}
            for name in SS_NAMES:
                if name in fitted[key]:
                    f1s[name] = f1_from_counts(ss_counts[(layer, name)])
                    prior = ss_prior[name][0] / max(ss_prior[name][1], 1)
                    rows.append(("secondary_structure", "embedding", layer + 1, f"f1_{name}", f1s[name],
                                 n_train[key], n_test["secondary_structure"], prior))  # fmt: skip
            macro = float(np.nanmean(list(f1s.values())))
            rows.append(("secondary_structure", "embedding", layer + 1, "f1_macro", macro,
                         n_train[key], n_test["secondary_structure"], np.nan))  # fmt: skip
        for task, representation, metric in (
            ("binding_site", "embedding", "precision_at_L/20"),
            ("contact", "embedding", "precision_at_L/5"),
            ("contact", "attention", "precision_at_L/5"),
        ):
            key = (task, representation, layer)
            if key in scores:
                rows.append((task, representation, layer + 1, metric, float(np.nanmean(scores[key])), n_train[key],
                             len(scores[key]), float(np.nanmean(chance[key]))))  # fmt: skip
    probes_frame = pd.DataFrame(
        rows, columns=["task", "representation", "layer", "metric", "value", "n_train", "n_test", "chance"]
    )
    regression_frame = pd.DataFrame(
        [
            (name, f"L/{x}" if x > 1 else "L", float(np.nanmean([v[0] for v in values])),
             float(np.nanmean([v[1] for v in values])), len(values))
            for (name, x), values in regression_scores.items()
        ],
        columns=["range", "k", "precision", "chance", "n_test"],
    )  # fmt: skip
    info = {
        "model": {"name": adapter.name, "layers": adapter.n_layers, "heads": adapter.n_heads},
        "tasks": list(tasks), "seed": seed, "train_fraction": train_fraction,
        "n_train_proteins": len(train), "n_test_proteins": len(test),
        "regression_train_proteins": len(regression_rows),
        "regression_nonzero_features": int((regression.weights != 0).sum()) if regression is not None else 0,
        "wall_seconds": time.perf_counter() - started,
    }  # fmt: skip
    return ProbeResult(probes_frame, regression_frame, info)


def _attention_pair_scores(model: _Linear, attention: np.ndarray) -> np.ndarray:
    heads = attention.shape[0]
    forward = np.einsum("h,hij->ij", model.weights[:heads], attention)
    backward = np.einsum("h,hji->ij", model.weights[heads:], attention)
    return forward + backward + model.bias


def _sample_pairs(contacts: np.ma.MaskedArray, budget: float, rng: np.random.Generator):
    """Training pairs (i < j, separation ≥ 6, defined): up to budget/2 contacts, the rest non-contacts."""
    defined = ~np.ma.getmaskarray(contacts)
    i, j = contact_candidates(contacts.shape[0], defined)
    labels = contacts.filled(False)[i, j]
    positives, negatives = np.flatnonzero(labels), np.flatnonzero(~labels)
    n_pos = min(len(positives), max(1, int(budget / 2)))
    n_neg = min(len(negatives), max(1, int(budget - n_pos)))
    chosen = np.concatenate([rng.choice(positives, n_pos, replace=False) if n_pos else positives[:0],
                             rng.choice(negatives, n_neg, replace=False) if n_neg else negatives[:0]])  # fmt: skip
    return i[chosen], j[chosen], labels[chosen]


def _batches(items: Sequence[Protein], size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]
