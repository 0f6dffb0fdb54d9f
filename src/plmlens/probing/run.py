"""Probing classifiers per layer (the paper's appendix B.3) and ESM-style contact regression.

Two passes over the model, each streaming layer by layer:

1. training proteins: per layer, features are taken as the layer arrives (residue hidden states for
   token tasks; the product and difference of two residues' hidden states, and all heads' attention in
   both directions, for contacts; symmetrised APC-corrected attention of every layer and head for the
   contact regression) and subsampled to at most ``max_train_*`` examples; then one linear classifier
   per (task, representation, layer) is fitted with scikit-learn;
2. test proteins: each layer's classifiers score the test proteins as their layers arrive, and only the
   metric counts are kept.

Each task is an object of `plmlens.probing.tasks` (its examples from a layer, its fit, its metrics); both
passes stream the model through one loop and hand every (protein, layer) to every task.

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

import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from plmlens.distributed import ProcessGroup
from plmlens.models import LayerOutput, ModelAdapter
from plmlens.probing.metrics import contact_candidates
from plmlens.probing.tasks import (
    CONTACT_REGRESSION_KEY,
    TASKS,
    TOP_HEADS_KEY,
    ContactRegressionTask,
    Key,
    LayerInputs,
    Outcome,
    ProbeTask,
    ProteinInputs,
    Tally,
    make_tasks,
)
from plmlens.proteins import Protein, contact_map
from plmlens.proteins.skips import Skipped
from plmlens.rundir import CONTACT_REGRESSION, PROBE, PROBES, SUMMARY, RunDir

__all__ = ["PROBE_OUTPUTS", "TASKS", "ProbeResult", "probe", "split_proteins"]

#: A task's fitted models by layer, for each task by (task, representation).
_Models = dict[tuple[str, str], dict[int, Any]]


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


#: What `ProbeResult.save` writes; ``summary.json`` marks a finished probe run.
PROBE_OUTPUTS = PROBE.outputs


@dataclass
class ProbeResult:
    """Per-layer probe scores and contact-regression precisions."""

    probes: pd.DataFrame
    contact_regression: pd.DataFrame
    info: dict

    def save(self, directory: str | Path) -> dict[str, Path]:
        """Write ``probes.csv``, ``contact_regression.csv`` and ``summary.json`` atomically."""
        out = RunDir(directory)
        return {
            "probes": out.write_table(PROBES, self.probes),
            "contact_regression": out.write_table(CONTACT_REGRESSION, self.contact_regression),
            "summary": out.write_json(SUMMARY, self.info, default=float),
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
    task_list = make_tasks(tasks, regression_proteins)
    group = group or ProcessGroup()
    started = time.perf_counter()
    records = [p for p in proteins if isinstance(p, Protein)]
    records = records[:limit] if limit is not None else records
    if len(records) < 2:
        raise ValueError(f"probing needs at least 2 proteins, got {len(records)}")
    train, test = split_proteins(records, train_fraction, seed)
    n_train_residues = sum(min(len(p), max_length) for p in train)
    sampler = _TrainingSampler(seed, residue_rate=min(1.0, max_train_residues / max(n_train_residues, 1)),
                               pair_budget=max_train_pairs / max(len(train), 1))  # fmt: skip
    stream = _Stream(adapter, batch_size, max_length, progress)

    examples = _collect_examples(stream, _shard(train, group), task_list, sampler)
    fitted, n_train, n_proteins = _fit_on_main(examples, task_list, group, seed)
    models = _broadcast_models(fitted, task_list, group)
    # Model-free fits (the positional template) read whole training proteins: the test proteins are cut to the
    # model's limit, and their pairs' keys are scored from the same contact maps either way.
    _fit_on_proteins(models, task_list, train)
    tally = _score_test_proteins(stream, _shard(test, group), task_list, models, adapter.n_layers)

    counts = group.all_reduce(tally.counts)
    parts = group.gather_arrays({name: np.array(rows, dtype=np.float64) for name, rows in tally.rows.items()})
    table = None
    if parts is not None:
        # Means over proteins in test-list order, the order a single process adds them up in.
        scores = {name: rows[:, 1:] for name, rows in _merge_scores(parts).items()}
        table = _tables(task_list, Outcome(fitted, n_train, scores, counts), adapter.n_layers)
        regression = fitted.get(CONTACT_REGRESSION_KEY)
        table["info"] = {
            "model": {"name": adapter.name, "layers": adapter.n_layers, "heads": adapter.n_heads,
                      "random_init": adapter.random_init, "init_seed": adapter.init_seed},
            "tasks": list(tasks), "seed": seed, "train_fraction": train_fraction,
            "n_train_proteins": len(train), "n_test_proteins": len(test),
            "regression_train_proteins": n_proteins.get(CONTACT_REGRESSION_KEY, 0),
            "regression_nonzero_features": int((regression.coef_ != 0).sum()) if regression is not None else 0,
            **_floor_info(fitted.get(TOP_HEADS_KEY), models.get(CONTACT_REGRESSION_KEY[:2], {})),
            "world_size": group.world_size,
            "wall_seconds": time.perf_counter() - started,
        }  # fmt: skip
    # Rank 0's tables as JSON (floats round-trip exactly), so that every rank returns the same result.
    table = group.all_gather_json(table)[0]
    probes_frame = pd.DataFrame(
        table["probes"], columns=["task", "representation", "layer", "metric", "value", "n_train", "n_test", "chance"]
    )
    regression_frame = pd.DataFrame(
        table["regression"], columns=["range", "k", "precision", "chance", "n_test", "method"]
    )
    return ProbeResult(probes_frame, regression_frame, table["info"])


def _fit_on_proteins(models: _Models, tasks: Sequence[ProbeTask], train: Sequence[Protein]) -> None:
    """Add every task's models fitted on the training proteins alone (`ProbeTask.fit_proteins`), on this rank."""
    for task in tasks:
        found = task.fit_proteins(train)
        if found:
            models.setdefault((task.task, task.representation), {}).update(found)


def _floor_info(top_heads: Any, models: Mapping[int, Any]) -> dict[str, Any]:
    """What summary.json records of the contact regression's floors: the top heads chosen (1-based
    ``layer-head``, best first) and the training precision of each k tried, and the template's training
    proteins and keys."""
    info: dict[str, Any] = {}
    if top_heads is not None:
        heads = [f"{layer + 1}-{head + 1}" for layer, head in top_heads.heads_]
        info["top_heads"] = {"k": top_heads.k_, "heads": heads,
                             "train_long_p_at_L5": {str(k): v for k, v in top_heads.k_precision_.items()}}  # fmt: skip
    template = models.get(ContactRegressionTask.TEMPLATE_LAYER)
    if template is not None:
        info["template"] = {"n_train_proteins": template.n_proteins_, "n_keys": len(template.keys_),
                            "aligned_by": template.aligned_by_}  # fmt: skip
    return info


def _tables(tasks: Sequence[ProbeTask], outcome: Outcome, n_layers: int) -> dict[str, list[tuple]]:
    """Rows of probes.csv (layer by layer, 0 the embedding layer, tasks in `TASKS` order) and of
    contact_regression.csv, as plain Python values (for JSON)."""
    return {
        "probes": [row for layer in range(n_layers + 1) for task in tasks for row in task.rows(layer, outcome)],
        "regression": [row for task in tasks if isinstance(task, ContactRegressionTask)
                       for row in task.regression_rows(outcome)],
    }  # fmt: skip


@dataclass
class _TrainingSampler:
    """Draws each training protein's residues and pairs, seeded by its place in the training list (not by
    the order proteins are processed in), so that any sharding draws the same residues and pairs."""

    seed: int
    residue_rate: float
    pair_budget: float

    def __call__(self, protein: ProteinInputs) -> None:
        rng = np.random.default_rng([self.seed, 3, protein.position])
        protein.residues = rng.random(len(protein.protein)) < self.residue_rate
        protein.pairs = _sample_pairs(protein.contacts, self.pair_budget, rng)


@dataclass
class _Stream:
    """How both passes read the model: batches of proteins, layer by layer."""

    adapter: ModelAdapter
    batch_size: int
    max_length: int
    progress: Callable[[str, int, int], None] | None

    def run(
        self,
        items: Sequence[tuple[int, Protein]],
        phase: str,
        on_layer: Callable[[ProteinInputs, LayerInputs], None],
        on_protein: Callable[[ProteinInputs], None],
        *,
        float64: bool,
        prepare: Callable[[ProteinInputs], None] = lambda protein: None,
    ) -> None:
        """Call `prepare` for every protein of a batch when its lengths are known, `on_layer` for every (protein,
        layer) and `on_protein` once a protein's layers are all read; report ``progress(phase, ...)`` after
        every batch. `float64`: layers are handed on in float64 (the test pass scores in float64; the training
        pass keeps the model's floats, as its examples are stored in float32 anyway)."""
        for done, batch in enumerate(_batches(items, self.batch_size)):
            proteins: list[ProteinInputs] = []
            for output in self.adapter.iter_layers([p for _, p in batch], max_length=self.max_length,
                                                   hidden_states=True):  # fmt: skip
                lengths = [int(n) for n in output.lengths]
                if not proteins:
                    proteins = [_protein_inputs(*item, n) for item, n in zip(batch, lengths, strict=True)]
                    for protein in proteins:
                        prepare(protein)
                for b, protein in enumerate(proteins):
                    on_layer(protein, _layer_inputs(output, b, lengths[b], float64))
            for protein in proteins:
                on_protein(protein)
            if self.progress is not None:
                self.progress(phase, done + 1, -(-len(items) // self.batch_size))


def _protein_inputs(position: int, protein: Protein, n: int) -> ProteinInputs:
    """The protein cut to the `n` residues the model read, with its contact map."""
    cut = protein.first(n)
    return ProteinInputs(position, cut, contact_map(cut))


def _layer_inputs(output: LayerOutput, b: int, n: int, float64: bool) -> LayerInputs:
    attention = output.attention[b, :, :n, :n].numpy()
    hidden = _hidden_states(output, b, n)
    if float64:
        attention = attention.astype(np.float64)
        hidden = [(depth, states.astype(np.float64)) for depth, states in hidden]
    return LayerInputs(output.layer + 1, hidden, attention)  # as probes.csv numbers it: 0 is the embedding layer


def _shard(proteins: Sequence[Protein], group: ProcessGroup) -> list[tuple[int, Protein]]:
    """This rank's proteins with their places in the list."""
    return [(position, p) for position, p in enumerate(proteins) if group.shard.takes(position)]


def _collect_examples(
    stream: _Stream, train: Sequence[tuple[int, Protein]], tasks: Sequence[ProbeTask], sampler: _TrainingSampler
) -> dict[Key, _Examples]:
    """Pass 1: every task's training examples of this rank's training proteins, by model key."""
    examples: dict[Key, _Examples] = {}

    def add(task: ProbeTask, protein: ProteinInputs, found: Iterator[tuple[int, np.ndarray, np.ndarray]]) -> None:
        for layer, features, labels in found:
            examples.setdefault(task.key(layer), _Examples()).add(protein.position, features, labels)

    def on_layer(protein: ProteinInputs, inputs: LayerInputs) -> None:
        for task in tasks:
            add(task, protein, task.train_examples(protein, inputs))

    def on_protein(protein: ProteinInputs) -> None:
        for task in tasks:
            add(task, protein, task.finish_train(protein))

    stream.run(train, "train", on_layer, on_protein, float64=False, prepare=sampler)
    return examples


def _fit_on_main(
    examples: dict[Key, _Examples], tasks: Sequence[ProbeTask], group: ProcessGroup, seed: int
) -> tuple[dict[Key, Any], dict[Key, int], dict[Key, int]]:
    """Every model, fitted on rank 0 on all ranks' examples, one key at a time (only one key's features are
    ever gathered at once). Returns the models, their training examples and training proteins by key
    (empty on other ranks)."""
    task_of = {(task.task, task.representation): task for task in tasks}
    local_keys = [list(key) for key, collected in examples.items() if collected.chunks]
    keys = sorted({tuple(key) for keys_of_rank in group.all_gather_json(local_keys) for key in keys_of_rank})
    fitted: dict[Key, Any] = {}
    n_train: dict[Key, int] = {}
    n_proteins: dict[Key, int] = {}
    for key in keys:
        parts = group.gather_arrays(examples.pop(key, _Examples()).to_arrays())
        if parts is None:
            continue
        n_proteins[key] = sum(len(part) // 2 for part in parts)
        merged = _merge_examples(parts)
        del parts
        if merged is None:
            continue
        features, labels = merged
        model = task_of[key[:2]].fit_layer(key[2], features, labels, seed)
        if model is not None:
            fitted[key] = model
        n_train[key] = len(labels)
        del features, labels, merged
    return fitted, n_train, n_proteins


def _broadcast_models(fitted: dict[Key, Any], tasks: Sequence[ProbeTask], group: ProcessGroup) -> _Models:
    """Rank 0's models on every rank, by task and layer (weights travel exactly, as float64)."""
    task_of = {(task.task, task.representation): task for task in tasks}
    arrays = {
        f"{task}/{representation}/{layer}/{name}": array
        for (task, representation, layer), model in fitted.items()
        for name, array in task_of[(task, representation)].model_arrays(model).items()
    }
    by_model: dict[Key, dict[str, np.ndarray]] = {}
    for name, array in group.broadcast_arrays(arrays if group.is_main else None).items():
        task, representation, layer, part = name.split("/", 3)
        by_model.setdefault((task, representation, int(layer)), {})[part] = array
    models: _Models = {}
    for (task, representation, layer), parts in by_model.items():
        models.setdefault((task, representation), {})[layer] = task_of[(task, representation)].model_from_arrays(parts)
    return models


def _score_test_proteins(
    stream: _Stream, test: Sequence[tuple[int, Protein]], tasks: Sequence[ProbeTask], models: _Models, n_layers: int
) -> Tally:
    """Pass 2: this rank's test proteins scored by every task's models."""
    tally = Tally(counts={name: zeros for task in tasks for name, zeros in task.initial_counts(n_layers).items()})

    def models_of(task: ProbeTask) -> Mapping[int, Any]:
        return models.get((task.task, task.representation), {})

    def on_layer(protein: ProteinInputs, inputs: LayerInputs) -> None:
        for task in tasks:
            task.evaluate(models_of(task), protein, inputs, tally)

    def on_protein(protein: ProteinInputs) -> None:
        for task in tasks:
            task.finish_test(models_of(task), protein, tally)

    stream.run(test, "test", on_layer, on_protein, float64=True)
    return tally


def _hidden_states(output: LayerOutput, b: int, n: int) -> list[tuple[int, np.ndarray]]:
    """Protein `b`'s hidden states that a layer's output brings, with the layer number they are probed at:
    the embedding layer's as layer 0 (on the first output only, when the adapter gives them), then the
    transformer layer's as ``output.layer + 1``."""
    states = []
    if output.embedding is not None:
        states.append((0, output.embedding[b, :n].numpy()))
    states.append((output.layer + 1, output.hidden[b, :n].numpy()))
    return states


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
