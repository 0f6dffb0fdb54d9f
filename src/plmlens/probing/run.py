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

Layers are numbered as the paper's figure 5 numbers them: the embedding probes also read the embedding
layer's output, before the first transformer layer, as layer 0; the transformer layers are 1 … L. Attention
probes start at layer 1 (the embedding layer has no attention).

Under torchrun, each rank runs the model on its shard of both lists; rank 0 fits on the gathered training
features and the ranks score the test proteins with its broadcast weights. Subsampling is seeded per
protein (by its place in the training list) and per-protein results are merged in list order, so the
numbers do not depend on the number of ranks.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from plmlens.distributed import ProcessGroup
from plmlens.ioutils import write_text_atomic
from plmlens.models import LayerOutput, ModelAdapter
from plmlens.outputs import OutputSet
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
#: Key of the contact regression's training rows among the per-layer examples.
_REGRESSION = ("contact_regression", "attention", -1)


@dataclass
class _Examples:
    """Training examples of one (task, representation, layer): one chunk per protein, keyed by the protein's
    position in the training list, so that chunks made on any rank can be put back in one fixed order."""

    chunks: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def add(self, position: int, features: np.ndarray, labels: np.ndarray) -> None:
        if len(labels):
            self.chunks[position] = (features.astype(np.float32), np.asarray(labels))

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Named arrays for `ProcessGroup.gather_arrays`: ``x<position>`` features, ``y<position>`` labels."""
        arrays = {}
        for position, (features, labels) in self.chunks.items():
            arrays[f"x{position}"], arrays[f"y{position}"] = features, labels
        return arrays


def _merge_examples(parts: list[dict[str, np.ndarray]]) -> tuple[np.ndarray, np.ndarray] | None:
    """All ranks' chunks of one key, concatenated in training-list order (as one process makes them)."""
    chunks: dict[int, dict[str, np.ndarray]] = {}
    for part in parts:
        for name, array in part.items():
            chunks.setdefault(int(name[1:]), {})[name[0]] = array
    if not chunks:
        return None
    order = sorted(chunks)
    return np.concatenate([chunks[p]["x"] for p in order]), np.concatenate([chunks[p]["y"] for p in order])


#: Integer codes of the secondary-structure labels (only numbers travel between ranks).
_SS_LABELS = (*SS_NAMES, "other")


def _ss_codes(classes: np.ndarray) -> np.ndarray:
    codes = np.full(len(classes), -1, dtype=np.int8)
    for code, name in enumerate(_SS_LABELS):
        codes[classes == name] = code
    return codes


class _Linear:
    """A linear scorer on raw features, ``features @ weights + bias``: what is broadcast to the ranks."""

    def __init__(self, weights: np.ndarray, bias: float) -> None:
        self.weights = np.asarray(weights, dtype=np.float64)
        self.bias = float(bias)

    @classmethod
    def fit(cls, features: np.ndarray, labels: np.ndarray, seed: int, l1_c: float | None = None) -> _Linear:
        """A standardised logistic regression (class-balanced; L1 with liblinear when `l1_c` is given)."""
        scaler = StandardScaler().fit(features)
        if l1_c is None:
            model = LogisticRegression(max_iter=2000, class_weight="balanced", random_state=seed)
        else:
            model = LogisticRegression(l1_ratio=1.0, C=l1_c, solver="liblinear", max_iter=2000, random_state=seed)
        model.fit(scaler.transform(features), labels)
        # Fold the scaling into the weights: score = x · w + b on raw features.
        scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
        return cls(model.coef_[0] / scale, model.intercept_[0] - (scaler.mean_ / scale) @ model.coef_[0])

    def score(self, features: np.ndarray) -> np.ndarray:
        return features @ self.weights + self.bias


def _models_to_arrays(fitted: dict[tuple[str, str, int], Any]) -> dict[str, np.ndarray]:
    """``w/<task>/<representation>/<layer>[/<class>]`` weights and ``b/...`` biases of every fitted model."""
    arrays = {}
    for (task, representation, layer), fit in fitted.items():
        named = fit.items() if isinstance(fit, dict) else [(None, fit)]
        for name, model in named:
            suffix = f"{task}/{representation}/{layer}" + (f"/{name}" if name is not None else "")
            arrays[f"w/{suffix}"], arrays[f"b/{suffix}"] = model.weights, np.array([model.bias])
    return arrays


def _models_from_arrays(arrays: dict[str, np.ndarray]) -> dict[tuple[str, str, int], Any]:
    fitted: dict[tuple[str, str, int], Any] = {}
    for name, weights in arrays.items():
        if not name.startswith("w/"):
            continue
        task, representation, layer, *ss_class = name[2:].split("/")
        model = _Linear(weights, arrays["b/" + name[2:]][0])
        key = (task, representation, int(layer))
        if ss_class:
            fitted.setdefault(key, {})[ss_class[0]] = model
        else:
            fitted[key] = model
    return fitted


def _merge_scores(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per-protein rows ``(test position, value, chance)`` of every rank, by name, in test-list order."""
    merged: dict[str, list[np.ndarray]] = {}
    for part in parts:
        for name, rows in part.items():
            merged.setdefault(name, []).append(rows)
    out = {}
    for name, blocks in merged.items():
        rows = np.concatenate(blocks)
        out[name] = rows[np.argsort(rows[:, 0], kind="stable")]
    return out


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


#: What `ProbeResult.save` writes; ``summary.json`` marks a finished probe run.
PROBE_OUTPUTS = OutputSet(("probes.csv", "contact_regression.csv", "summary.json"), record="summary.json")


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
    group: ProcessGroup | None = None,
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
        ``progress(phase, done, total)`` after every batch, with this rank's own batch counts.
    group : ProcessGroup, optional
        The ranks sharing the work (default: this process alone). Every rank must pass the same proteins
        and arguments. Each rank runs the model on its shard of the training and of the test proteins;
        rank 0 gathers the training features, fits the probes and broadcasts them, and gathers the test
        scores. The subsampling is seeded per protein and everything is merged in protein order, so the
        result does not depend on the number of ranks.

    Returns
    -------
    ProbeResult
        The same on every rank. Layer 0 is the embedding layer's output (embedding probes only), layers
        1 … L the transformer layers. ``info["model"]`` records whether the weights are random
        (``random_init``, ``init_seed``).
    """
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown:
        raise ValueError(f"unknown probing task(s) {unknown}; known: {', '.join(TASKS)}")
    group = group or ProcessGroup()
    started = time.perf_counter()
    records = [p for p in proteins if isinstance(p, Protein)]
    records = records[:limit] if limit is not None else records
    if len(records) < 2:
        raise ValueError(f"probing needs at least 2 proteins, got {len(records)}")
    train, test = split_proteins(records, train_fraction, seed)
    n_layers = adapter.n_layers
    n_train_residues = sum(min(len(p), max_length) for p in train)
    residue_rate = min(1.0, max_train_residues / max(n_train_residues, 1))
    pair_budget = max_train_pairs / max(len(train), 1)

    examples: dict[tuple[str, str, int], _Examples] = {}

    def ex(task: str, representation: str, layer: int) -> _Examples:
        return examples.setdefault((task, representation, layer), _Examples())

    def labels_of(protein: Protein, n: int) -> dict:
        cut = protein if n == len(protein) else protein.subset(slice(0, n))
        contacts = contact_map(cut)
        return {"protein": cut, "contacts": contacts}

    # ---- pass 1: training features of this rank's shard ------------------------------------------------
    local_train = [(position, p) for position, p in enumerate(train) if group.shard.takes(position)]
    for done, batch in enumerate(_batches(local_train, batch_size)):
        cache: list[dict] = []
        regression_parts: list[list[np.ndarray]] = [[] for _ in batch]
        for output in adapter.iter_layers([p for _, p in batch], max_length=max_length, hidden_states=True):
            lengths = [int(n) for n in output.lengths]
            if not cache:
                cache = [labels_of(p, n) for (_, p), n in zip(batch, lengths, strict=True)]
                for (position, _), item in zip(batch, cache, strict=True):
                    # Seeded by the protein's place in the training list, not by the order proteins are
                    # processed in, so any sharding draws the same residues and pairs.
                    rng = np.random.default_rng([seed, 3, position])
                    item["residues"] = rng.random(len(item["protein"])) < residue_rate
                    item["pairs"] = _sample_pairs(item["contacts"], pair_budget, rng)
            layer = output.layer + 1  # as probes.csv numbers it: 0 is the embedding layer
            for b, ((position, _), item) in enumerate(zip(batch, cache, strict=True)):
                n = lengths[b]
                attention = output.attention[b, :, :n, :n].numpy()
                protein, keep = item["protein"], item["residues"]
                i, j, y = item["pairs"]
                for depth, hidden in _hidden_states(output, b, n):
                    if "secondary_structure" in tasks and protein.dssp is not None:
                        known = keep & (protein.ss_classes != "unknown")
                        codes = _ss_codes(protein.ss_classes[known])
                        ex("secondary_structure", "embedding", depth).add(position, hidden[known], codes)
                    if "binding_site" in tasks and protein.binding_site is not None:
                        ex("binding_site", "embedding", depth).add(position, hidden[keep], protein.binding_site[keep])
                    if "contact" in tasks:
                        ex("contact", "embedding", depth).add(position, _pair_embedding_features(hidden, i, j), y)
                if "contact" in tasks:
                    ex("contact", "attention", layer).add(position, _attention_features(attention, i, j), y)
                if "contact_regression" in tasks and position < regression_proteins:
                    regression_parts[b].append(_regression_features(attention))
        for b, ((position, _), item) in enumerate(zip(batch, cache, strict=True)):
            if regression_parts[b]:
                features = np.concatenate(regression_parts[b])  # (layers × H, L, L)
                defined = ~np.ma.getmaskarray(item["contacts"])
                i, j = contact_candidates(len(item["protein"]), defined)
                ex(*_REGRESSION).add(position, features[:, i, j].T, item["contacts"].filled(False)[i, j])
        if progress is not None:
            progress("train", done + 1, -(-len(local_train) // batch_size))

    # ---- fit on rank 0, one key at a time (only one key's features are ever gathered at once) ----------
    local_keys = [list(key) for key, collected in examples.items() if collected.chunks]
    keys = sorted({tuple(key) for keys_of_rank in group.all_gather_json(local_keys) for key in keys_of_rank})
    fitted: dict[tuple[str, str, int], Any] = {}
    n_train: dict[tuple[str, str, int], int] = {}
    regression = None
    regression_train_proteins = 0
    for key in keys:
        collected = examples.pop(key, _Examples())
        parts = group.gather_arrays(collected.to_arrays())
        del collected
        if parts is None:
            continue
        if key == _REGRESSION:
            regression_train_proteins = sum(len(part) // 2 for part in parts)
        merged = _merge_examples(parts)
        del parts
        if merged is None:
            continue
        features, labels = merged
        if key == _REGRESSION:
            if 0 < labels.sum() < len(labels):
                # Bounded memory and fit time on long proteins; its own seed, drawn only here.
                cap = np.random.default_rng([seed, 4]).permutation(len(labels))[:200_000]
                regression = _Linear.fit(features[cap], labels[cap], seed, l1_c=0.15)
        elif key[0] == "secondary_structure":
            fitted[key] = {
                name: _Linear.fit(features, labels == code, seed)
                for code, name in enumerate(SS_NAMES)
                if 0 < (labels == code).sum() < len(labels)
            }
        elif 0 < labels.sum() < len(labels):
            fitted[key] = _Linear.fit(features, labels.astype(bool), seed)
        n_train[key] = len(labels)
        del features, labels, merged

    # Every rank scores with rank 0's models (weights travel exactly, as float64).
    models = _models_to_arrays({**fitted, _REGRESSION: regression} if regression is not None else fitted)
    received = _models_from_arrays(group.broadcast_arrays(models if group.is_main else None))
    regression = received.pop(_REGRESSION, None)
    scorers = received

    # ---- pass 2: evaluation of this rank's shard of the test proteins ---------------------------------
    ss_counts = np.zeros((n_layers + 1, len(SS_NAMES), 3))  # by layer, 0 the embedding layer
    ss_prior = np.zeros((len(SS_NAMES), 2))
    n_test = np.zeros(3)  # proteins with DSSP, with binding sites, with contacts
    scores: dict[str, list[tuple[float, float, float]]] = {}  # name -> (test position, value, chance)
    local_test = [(position, p) for position, p in enumerate(test) if group.shard.takes(position)]
    for done, batch in enumerate(_batches(local_test, batch_size)):
        cache = []
        regression_parts = [[] for _ in batch]
        for output in adapter.iter_layers([p for _, p in batch], max_length=max_length, hidden_states=True):
            lengths = [int(n) for n in output.lengths]
            if not cache:
                cache = [labels_of(p, n) for (_, p), n in zip(batch, lengths, strict=True)]
                for item in cache:
                    protein = item["protein"]
                    labelled = (
                        protein.dssp is not None,
                        protein.binding_site is not None,
                        item["contacts"].count() > 0,
                    )
                    n_test += labelled
                    if protein.dssp is not None:
                        known = protein.ss_classes != "unknown"
                        for c, name in enumerate(SS_NAMES):
                            ss_prior[c] += (int((protein.ss_classes[known] == name).sum()), int(known.sum()))
            layer = output.layer + 1  # as probes.csv numbers it: 0 is the embedding layer
            for b, ((position, _), item) in enumerate(zip(batch, cache, strict=True)):
                n = lengths[b]
                attention = output.attention[b, :, :n, :n].numpy().astype(np.float64)
                protein, contacts = item["protein"], item["contacts"]
                for depth, hidden in _hidden_states(output, b, n):
                    hidden = hidden.astype(np.float64)
                    models_of_layer = scorers.get(("secondary_structure", "embedding", depth))
                    if models_of_layer and protein.dssp is not None:
                        known = protein.ss_classes != "unknown"
                        for c, name in enumerate(SS_NAMES):
                            if name in models_of_layer:
                                predicted = models_of_layer[name].score(hidden[known]) > 0
                                ss_counts[depth, c] += f1_counts(predicted, protein.ss_classes[known] == name)
                    model = scorers.get(("binding_site", "embedding", depth))
                    if model is not None and protein.binding_site is not None and protein.binding_site.any():
                        k = max(1, n // 20)
                        value = precision_at_k(model.score(hidden), protein.binding_site, k)
                        scores.setdefault(f"binding_site/embedding/{depth}", []).append(
                            (position, value, float(protein.binding_site.mean()))
                        )
                    model = scorers.get(("contact", "embedding", depth))
                    if model is not None and contacts.count():
                        precision, base = contact_precisions(
                            _pair_embedding_scores(model, hidden), contacts, divisors=(5,)
                        )[("all", 5)]
                        scores.setdefault(f"contact/embedding/{depth}", []).append((position, precision, base))
                model = scorers.get(("contact", "attention", layer))
                if model is not None and contacts.count():
                    pair_scores = _attention_pair_scores(model, attention)
                    precision, base = contact_precisions(pair_scores, contacts, divisors=(5,))[("all", 5)]
                    scores.setdefault(f"contact/attention/{layer}", []).append((position, precision, base))
                if regression is not None:
                    regression_parts[b].append(_regression_features(attention))
        if regression is not None:
            for b, ((position, _), item) in enumerate(zip(batch, cache, strict=True)):
                if not item["contacts"].count():
                    continue
                features = np.concatenate(regression_parts[b])
                pair_scores = np.einsum("f,fij->ij", regression.weights, features) + regression.bias
                for (range_name, x), (precision, base) in contact_precisions(pair_scores, item["contacts"]).items():
                    scores.setdefault(f"regression/{range_name}/{x}", []).append((position, precision, base))
        if progress is not None:
            progress("test", done + 1, -(-len(local_test) // batch_size))

    counts = group.all_reduce({"ss_counts": ss_counts, "ss_prior": ss_prior, "n_test": n_test})
    parts = group.gather_arrays({name: np.array(rows, dtype=np.float64) for name, rows in scores.items()})
    table = None
    if parts is not None:
        # Means over proteins in test-list order, the order a single process adds them up in.
        merged = {name: rows[:, 1:] for name, rows in _merge_scores(parts).items()}
        table = _tables(fitted, n_train, merged, counts, n_layers)
        table["info"] = {
            "model": {"name": adapter.name, "layers": adapter.n_layers, "heads": adapter.n_heads,
                      "random_init": adapter.random_init, "init_seed": adapter.init_seed},
            "tasks": list(tasks), "seed": seed, "train_fraction": train_fraction,
            "n_train_proteins": len(train), "n_test_proteins": len(test),
            "regression_train_proteins": regression_train_proteins,
            "regression_nonzero_features": int((regression.weights != 0).sum()) if regression is not None else 0,
            "world_size": group.world_size,
            "wall_seconds": time.perf_counter() - started,
        }  # fmt: skip
    # Rank 0's tables as JSON (floats round-trip exactly), so that every rank returns the same result.
    table = group.all_gather_json(table)[0]
    probes_frame = pd.DataFrame(
        table["probes"], columns=["task", "representation", "layer", "metric", "value", "n_train", "n_test", "chance"]
    )
    regression_frame = pd.DataFrame(table["regression"], columns=["range", "k", "precision", "chance", "n_test"])
    return ProbeResult(probes_frame, regression_frame, table["info"])


def _tables(
    fitted: dict[tuple[str, str, int], Any],
    n_train: dict[tuple[str, str, int], int],
    scores: dict[str, np.ndarray],
    counts: dict[str, np.ndarray],
    n_layers: int,
) -> dict[str, Any]:
    """Rows of the probe and contact-regression tables (plain Python values, for JSON) from the merged
    per-protein ``(value, chance)`` rows and the summed secondary-structure counts; layers 0 (the embedding
    layer) to `n_layers`."""
    ss_counts, ss_prior = counts["ss_counts"], counts["ss_prior"]
    n_test_ss = int(counts["n_test"][0])
    rows: list[tuple] = []
    for layer in range(n_layers + 1):
        key = ("secondary_structure", "embedding", layer)
        if key in fitted:
            f1s = {}
            for c, name in enumerate(SS_NAMES):
                if name in fitted[key]:
                    f1s[name] = f1_from_counts(ss_counts[layer, c])
                    prior = float(ss_prior[c, 0] / max(ss_prior[c, 1], 1))
                    rows.append(("secondary_structure", "embedding", layer, f"f1_{name}", f1s[name],
                                 n_train[key], n_test_ss, prior))  # fmt: skip
            macro = float(np.nanmean(list(f1s.values())))
            rows.append(("secondary_structure", "embedding", layer, "f1_macro", macro,
                         n_train[key], n_test_ss, float("nan")))  # fmt: skip
        for task, representation, metric in (
            ("binding_site", "embedding", "precision_at_L/20"),
            ("contact", "embedding", "precision_at_L/5"),
            ("contact", "attention", "precision_at_L/5"),
        ):
            values = scores.get(f"{task}/{representation}/{layer}")
            if values is not None:
                rows.append((task, representation, layer, metric, float(np.nanmean(values[:, 0])),
                             n_train[(task, representation, layer)], len(values),
                             float(np.nanmean(values[:, 1]))))  # fmt: skip
    regression_rows = []
    for name, values in scores.items():
        kind, range_name, x = name.split("/")
        if kind == "regression":
            regression_rows.append((range_name, f"L/{x}" if int(x) > 1 else "L", float(np.nanmean(values[:, 0])),
                                    float(np.nanmean(values[:, 1])), len(values)))  # fmt: skip
    return {"probes": rows, "regression": regression_rows}


def _hidden_states(output: LayerOutput, b: int, n: int) -> list[tuple[int, np.ndarray]]:
    """Protein `b`'s hidden states that a layer's output brings, with the layer number they are probed at:
    the embedding layer's as layer 0 (on the first output only, when the adapter gives them), then the
    transformer layer's as ``output.layer + 1``."""
    states = []
    if output.embedding is not None:
        states.append((0, output.embedding[b, :n].numpy()))
    states.append((output.layer + 1, output.hidden[b, :n].numpy()))
    return states


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


def _batches(items: Sequence[tuple[int, Protein]], size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]
