"""The probing tasks, one object each: which features a task reads from a layer, its training examples, its
fit, and its metrics.

`probe` streams the model's layers over the training proteins, asks every task for its examples
(`ProbeTask.train_examples`), fits one model per (task, layer) (`ProbeTask.fit`), streams the test proteins
and lets every task score them into a `Tally` (`ProbeTask.evaluate`), and finally asks each task for its
table rows (`ProbeTask.rows`). Tasks hold no state of a run: what they fit and what they count is passed in.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from plmlens.analysis.properties import PROPERTIES, label_property_names
from plmlens.probing.features import (
    attention_pair_features,
    attention_pair_scores,
    pair_embedding_features,
    pair_embedding_scores,
    symmetrised_apc,
)
from plmlens.probing.linear import LinearScorer
from plmlens.probing.metrics import contact_candidates, contact_precisions, f1_counts, f1_from_counts, precision_at_k
from plmlens.probing.readout import TopHeadsReadout, ranked_pairs
from plmlens.probing.regression import ContactRegression
from plmlens.probing.template import PositionalTemplate
from plmlens.proteins import SS_CLASSES, Protein

#: The paper's tasks. Every property that comes from a per-residue label (``ptm``, ``helix``, ``aa_C``, a
#: label registered by a user or an annotator) is a task too, by its name (`LabelTask`, `known_tasks`).
TASKS = ("secondary_structure", "binding_site", "contact", "contact_regression")


@dataclass(frozen=True)
class Headline:
    """A task's headline metric (the paper's figure 5): its probes.csv name, and how figures name the task
    and the metric."""

    metric: str
    label: str
    metric_label: str


class _Headlines(Mapping):
    """The paper's tasks' headlines, then one for each label property (registered at any time): figures
    draw any label task that probes.csv holds with no edit."""

    def __init__(self, fixed: dict[str, Headline]) -> None:
        self._fixed = fixed

    def _names(self) -> list[str]:
        return [*self._fixed, *(name for name in label_property_names() if name not in self._fixed)]

    def __getitem__(self, task: str) -> Headline:
        if task in self._fixed:
            return self._fixed[task]
        if task in label_property_names():
            return Headline("precision_at_L/20", PROPERTIES[task].label or task, "precision@L/20")
        raise KeyError(task)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())


#: The headline metric of each per-layer task, in `TASKS` order, then the label tasks.
HEADLINES: Mapping[str, Headline] = _Headlines({
    "secondary_structure": Headline("f1_macro", "Secondary structure", "macro F1"),
    "binding_site": Headline("precision_at_L/20", "Binding site", "precision@L/20"),
    "contact": Headline("precision_at_L/5", "Contact", "precision@L/5"),
})  # fmt: skip
SS_NAMES = tuple(SS_CLASSES)
#: Integer codes of the secondary-structure labels (only numbers travel between ranks).
_SS_LABELS = (*SS_NAMES, "other")
#: (task, representation, layer): what one fitted model is keyed by.
Key = tuple[str, str, int]
#: (layer, features, labels): one protein's training examples for the model of one layer.
Examples = tuple[int, np.ndarray, np.ndarray]


@dataclass
class ProteinInputs:
    """One protein of a batch as the model read it, with its labels.

    Attributes
    ----------
    position : int
        Its place in the training or test list (seeds and merge order go by it).
    protein : Protein
        Cut to the residues the model read.
    contacts : masked bool ndarray, shape (L, L)
    residues : ndarray of bool, shape (L,), optional
        Training residues drawn for the residue tasks (training proteins only).
    pairs : (i, j, labels), optional
        Training pairs drawn for the pair tasks (training proteins only).
    attention_features : list of ndarray
        The contact regression's features of the layers read so far (one ``(heads, L, L)`` block each).
    """

    position: int
    protein: Protein
    contacts: np.ma.MaskedArray
    residues: np.ndarray | None = None
    pairs: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    attention_features: list[np.ndarray] = field(default_factory=list)


@dataclass
class LayerInputs:
    """What one layer's output holds for one protein.

    Attributes
    ----------
    layer : int
        The transformer layer as probes.csv numbers it (1 … L).
    hidden : list of (int, ndarray)
        Hidden states ``(L, width)`` with the layer they are probed at: the embedding layer's as 0 (with
        the first layer only), then this layer's.
    attention : ndarray, shape (heads, L, L)
    """

    layer: int
    hidden: list[tuple[int, np.ndarray]]
    attention: np.ndarray


@dataclass
class Tally:
    """What scoring the test proteins keeps: per-protein metric rows and summed counts.

    Attributes
    ----------
    rows : dict of str to list of (position, value, chance)
        By metric name; gathered from every rank and averaged in test-list order.
    counts : dict of str to ndarray
        Summed over proteins and ranks.
    """

    rows: dict[str, list[tuple[float, float, float]]] = field(default_factory=dict)
    counts: dict[str, np.ndarray] = field(default_factory=dict)

    def add(self, name: str, position: int, value: float, chance: float) -> None:
        self.rows.setdefault(name, []).append((position, value, chance))


@dataclass
class Outcome:
    """Everything the tables are made of (on rank 0): the fitted models, their training-set sizes, the
    merged per-protein ``(value, chance)`` rows in test-list order, and the summed counts."""

    fitted: dict[Key, Any]
    n_train: dict[Key, int]
    scores: dict[str, np.ndarray]
    counts: dict[str, np.ndarray]


def _both_classes(labels: np.ndarray) -> bool:
    return bool(0 < labels.sum() < len(labels))


class ProbeTask(ABC):
    """One probing task on one representation: its features, examples, fit and metrics.

    Subclasses set `task` and `representation` and implement `train_examples`, `fit`, `evaluate` and
    `rows`; the hooks run once a protein's every layer has been read (`finish_train`, `finish_test`) are
    optional.
    """

    task: ClassVar[str]
    representation: ClassVar[str]

    def key(self, layer: int) -> Key:
        """The key of this task's model of `layer`."""
        return (self.task, self.representation, layer)

    def initial_counts(self, n_layers: int) -> dict[str, np.ndarray]:
        """Counts this task sums over test proteins (the same names on every rank)."""
        return {}

    @abstractmethod
    def train_examples(self, protein: ProteinInputs, inputs: LayerInputs) -> Iterator[Examples]:
        """A training protein's examples from one layer's output.

        Parameters
        ----------
        protein : ProteinInputs
            With its drawn training residues and pairs.
        inputs : LayerInputs

        Yields
        ------
        layer : int
            The layer whose model the examples train.
        features : ndarray, shape (examples, n_features)
        labels : ndarray, shape (examples,)
        """

    def finish_train(self, protein: ProteinInputs) -> Iterator[Examples]:
        """Examples that need all of a training protein's layers."""
        return iter(())

    def fit_proteins(self, proteins: Sequence[Protein]) -> dict[int, Any]:
        """Models fitted on the training proteins themselves, without the model's output (by layer key).

        Run on every rank with the same proteins (they are deterministic), so nothing travels between ranks.

        Parameters
        ----------
        proteins : sequence of Protein
            The training proteins, in training-list order (whole: a model-free fit needs no cut).
        """
        return {}

    def fit_layer(self, layer: int, features: np.ndarray, labels: np.ndarray, seed: int) -> Any | None:
        """`fit` of the model keyed by `layer`; tasks with models of different kinds tell them apart here."""
        return self.fit(features, labels, seed)

    @abstractmethod
    def fit(self, features: np.ndarray, labels: np.ndarray, seed: int) -> Any | None:
        """The model of one layer from all training proteins' examples.

        Parameters
        ----------
        features : ndarray, shape (examples, n_features)
        labels : ndarray, shape (examples,)
        seed : int
            Random state of the fit.

        Returns
        -------
        model or None
            None when the labels cannot train one (a single class).
        """

    @abstractmethod
    def evaluate(self, models: Mapping[int, Any], protein: ProteinInputs, inputs: LayerInputs, tally: Tally) -> None:
        """Score a test protein on the layers `inputs` holds.

        Parameters
        ----------
        models : mapping of int to model
            This task's fitted models by layer (layers without one are skipped).
        protein : ProteinInputs
        inputs : LayerInputs
        tally : Tally
            Receives per-protein metric rows or adds to this task's counts.
        """

    def finish_test(self, models: Mapping[int, Any], protein: ProteinInputs, tally: Tally) -> None:
        """Score a test protein once all its layers have been read."""
        return None

    @abstractmethod
    def rows(self, layer: int, outcome: Outcome) -> list[tuple]:
        """This task's rows of probes.csv at `layer`.

        Parameters
        ----------
        layer : int
        outcome : Outcome

        Returns
        -------
        list of tuple
            ``(task, representation, layer, metric, value, n_train, n_test, chance)`` each; none where the
            layer has no model or no test protein was scored.
        """

    def model_arrays(self, model: Any) -> dict[str, np.ndarray]:
        """A fitted model as named numeric arrays (what travels from rank 0 to the others)."""
        return model.to_arrays()

    def model_from_arrays(self, arrays: dict[str, np.ndarray]) -> Any:
        """The model `model_arrays` described."""
        return LinearScorer.from_arrays(arrays)


class _MeanMetricTask(ProbeTask):
    """A task whose metric is a mean over test proteins: one probes.csv row per layer with rows."""

    metric: ClassVar[str]

    def rows(self, layer: int, outcome: Outcome) -> list[tuple]:
        values = outcome.scores.get(f"{self.task}/{self.representation}/{layer}")
        if values is None:
            return []
        return [(self.task, self.representation, layer, self.metric, float(np.nanmean(values[:, 0])),
                 outcome.n_train[self.key(layer)], len(values), float(np.nanmean(values[:, 1])))]  # fmt: skip

    def _add(self, tally: Tally, layer: int, position: int, value: float, chance: float) -> None:
        tally.add(f"{self.task}/{self.representation}/{layer}", position, value, chance)


class SecondaryStructureTask(ProbeTask):
    """Secondary structure from hidden states: one-vs-rest linear probes per class, F1 per class and macro.

    Trains on the drawn residues with a known class; scores every test residue with a known class, counting
    true and false positives and false negatives per (layer, class) over all test proteins.
    """

    task, representation = "secondary_structure", "embedding"

    def initial_counts(self, n_layers: int) -> dict[str, np.ndarray]:
        return {
            "ss_counts": np.zeros((n_layers + 1, len(SS_NAMES), 3)),  # by layer, 0 the embedding layer
            "ss_prior": np.zeros((len(SS_NAMES), 2)),  # (residues of the class, residues with a class)
            "ss_proteins": np.zeros(1),  # test proteins with DSSP
        }

    def train_examples(self, protein: ProteinInputs, inputs: LayerInputs) -> Iterator[Examples]:
        if protein.protein.dssp is None:
            return
        classes = protein.protein.ss_classes
        known = protein.residues & (classes != "unknown")
        codes = ss_codes(classes[known])
        for depth, hidden in inputs.hidden:
            yield depth, hidden[known], codes

    def fit(self, features: np.ndarray, labels: np.ndarray, seed: int) -> dict[str, LinearScorer]:
        """One scorer per class present and absent among the labels (maybe none)."""
        return {
            name: LinearScorer.fit(features, labels == code, seed)
            for code, name in enumerate(SS_NAMES)
            if _both_classes(labels == code)
        }

    def evaluate(self, models: Mapping[int, Any], protein: ProteinInputs, inputs: LayerInputs, tally: Tally) -> None:
        if protein.protein.dssp is None:
            return
        classes = protein.protein.ss_classes
        known = classes != "unknown"
        for depth, hidden in inputs.hidden:
            for c, name in enumerate(SS_NAMES):
                if name in models.get(depth, {}):
                    predicted = models[depth][name].score(hidden[known]) > 0
                    tally.counts["ss_counts"][depth, c] += f1_counts(predicted, classes[known] == name)

    def finish_test(self, models: Mapping[int, Any], protein: ProteinInputs, tally: Tally) -> None:
        if protein.protein.dssp is None:
            return
        classes = protein.protein.ss_classes
        known = classes != "unknown"
        tally.counts["ss_proteins"] += 1
        for c, name in enumerate(SS_NAMES):
            tally.counts["ss_prior"][c] += (int((classes[known] == name).sum()), int(known.sum()))

    def rows(self, layer: int, outcome: Outcome) -> list[tuple]:
        key = self.key(layer)
        if key not in outcome.fitted:
            return []
        ss_counts, ss_prior = outcome.counts["ss_counts"], outcome.counts["ss_prior"]
        head = (self.task, self.representation, layer)
        n_train, n_test = outcome.n_train[key], int(outcome.counts["ss_proteins"][0])
        rows, f1s = [], {}
        for c, name in enumerate(SS_NAMES):
            if name in outcome.fitted[key]:
                f1s[name] = f1_from_counts(ss_counts[layer, c])
                prior = float(ss_prior[c, 0] / max(ss_prior[c, 1], 1))
                rows.append((*head, f"f1_{name}", f1s[name], n_train, n_test, prior))
        rows.append((*head, "f1_macro", float(np.nanmean(list(f1s.values()))), n_train, n_test, float("nan")))
        return rows

    def model_arrays(self, model: dict[str, LinearScorer]) -> dict[str, np.ndarray]:
        return {f"{name}/{part}": array for name, scorer in model.items() for part, array in scorer.to_arrays().items()}

    def model_from_arrays(self, arrays: dict[str, np.ndarray]) -> dict[str, LinearScorer]:
        names = dict.fromkeys(name.split("/")[0] for name in arrays)
        return {name: LinearScorer.from_arrays({"w": arrays[f"{name}/w"], "b": arrays[f"{name}/b"]}) for name in names}


class LabelTask(_MeanMetricTask):
    """A per-residue label property from hidden states (``binding_site``, ``ptm``, ``helix``, ``aa_C``, any
    registered label's property): a linear probe per layer, precision@L/20 per protein.

    Trains on the drawn residues where the property is defined; scores, over its defined residues (L of
    them), each protein with at least one positive residue, against their share of positives as chance.

    Parameters
    ----------
    prop : str
        The property's name (`plmlens.analysis.properties.label_property_names`); it is the task's name.
    """

    representation, metric = "embedding", "precision_at_L/20"

    def __init__(self, prop: str) -> None:
        self.task = prop  # type: ignore[misc]

    def _labels(self, protein: Protein) -> tuple[np.ndarray, np.ndarray] | None:
        """The property's ``(values, defined)``; None where no residue is defined."""
        values, defined = PROPERTIES[self.task].mask(protein)
        return (values, defined) if defined.any() else None

    def train_examples(self, protein: ProteinInputs, inputs: LayerInputs) -> Iterator[Examples]:
        labels = self._labels(protein.protein)
        if labels is None:
            return
        values, defined = labels
        use = protein.residues & defined
        for depth, hidden in inputs.hidden:
            yield depth, hidden[use], values[use]

    def fit(self, features: np.ndarray, labels: np.ndarray, seed: int) -> LinearScorer | None:
        return LinearScorer.fit(features, labels.astype(bool), seed) if _both_classes(labels) else None

    def evaluate(self, models: Mapping[int, Any], protein: ProteinInputs, inputs: LayerInputs, tally: Tally) -> None:
        labels = self._labels(protein.protein)
        if labels is None:
            return
        values, defined = labels
        every = bool(defined.all())  # the usual case: score the hidden states as they are
        values = values if every else values[defined]
        if not values.any():
            return
        k = max(1, len(values) // 20)
        for depth, hidden in inputs.hidden:
            if depth in models:
                value = precision_at_k(models[depth].score(hidden if every else hidden[defined]), values, k)
                self._add(tally, depth, protein.position, value, float(values.mean()))


class BindingSiteTask(LabelTask):
    """Binding sites from hidden states: `LabelTask` of ``binding_site`` (the paper's task)."""

    def __init__(self) -> None:
        super().__init__("binding_site")


def known_tasks() -> tuple[str, ...]:
    """Every task name `make_tasks` takes: `TASKS`, then the label properties (registered so far)."""
    return (*TASKS, *(name for name in label_property_names() if name not in TASKS))


class _PairTask(_MeanMetricTask):
    """Contacts from one layer: a linear probe on the drawn training pairs, precision@L/5 over all pairs at
    separation ≥ 6 per test protein with contacts (chance: their share of contacts)."""

    metric = "precision_at_L/5"

    def fit(self, features: np.ndarray, labels: np.ndarray, seed: int) -> LinearScorer | None:
        return LinearScorer.fit(features, labels.astype(bool), seed) if _both_classes(labels) else None

    def _add_precision(self, tally: Tally, layer: int, protein: ProteinInputs, scores: np.ndarray) -> None:
        precision, chance = contact_precisions(scores, protein.contacts, divisors=(5,))[("all", 5)]
        self._add(tally, layer, protein.position, precision, chance)


class EmbeddingContactTask(_PairTask):
    """Contacts from hidden states: TAPE's pair features ``[h_i * h_j, h_i - h_j]``, symmetrised scores."""

    task, representation = "contact", "embedding"

    def train_examples(self, protein: ProteinInputs, inputs: LayerInputs) -> Iterator[Examples]:
        i, j, labels = protein.pairs
        for depth, hidden in inputs.hidden:
            yield depth, pair_embedding_features(hidden, i, j), labels

    def evaluate(self, models: Mapping[int, Any], protein: ProteinInputs, inputs: LayerInputs, tally: Tally) -> None:
        if not protein.contacts.count():
            return
        for depth, hidden in inputs.hidden:
            if depth in models:
                self._add_precision(tally, depth, protein, pair_embedding_scores(models[depth], hidden))


class AttentionContactTask(_PairTask):
    """Contacts from one layer's attention: every head's attention of the pair, both directions."""

    task, representation = "contact", "attention"

    def train_examples(self, protein: ProteinInputs, inputs: LayerInputs) -> Iterator[Examples]:
        i, j, labels = protein.pairs
        yield inputs.layer, attention_pair_features(inputs.attention, i, j), labels

    def evaluate(self, models: Mapping[int, Any], protein: ProteinInputs, inputs: LayerInputs, tally: Tally) -> None:
        if inputs.layer in models and protein.contacts.count():
            self._add_precision(
                tally, inputs.layer, protein, attention_pair_scores(models[inputs.layer], inputs.attention)
            )


class ContactRegressionTask(ProbeTask):
    """ESM's contact regression (`ContactRegression`) over all layers' symmetrised APC attention, and beside it
    the two floors it is judged against: the mean of the top-k heads (`TopHeadsReadout`) and the positional
    template (`PositionalTemplate`).

    One model of each for the whole network, keyed by `LAYER`, `TOP_HEADS_LAYER` and `TEMPLATE_LAYER`; all
    trained on the first `max_proteins` training proteins (the regression on every defined pair, the top heads
    on the long-range ones that rank heads, the template on the proteins' contact maps); scored by precision@L,
    L/2, L/5 per sequence-separation range, into contact_regression.csv (column ``method``) rather than
    probes.csv.

    Parameters
    ----------
    max_proteins : int
        Training proteins it is fitted on (ESM fitted it on 20).
    """

    task, representation = "contact_regression", "attention"
    #: The layer its one model is keyed by.
    LAYER = -1
    #: The layer the top-heads readout is keyed by.
    TOP_HEADS_LAYER = -2
    #: The layer the positional template is keyed by.
    TEMPLATE_LAYER = -3
    #: Methods of contact_regression.csv, in its order, by the layer their model is keyed by.
    METHODS: ClassVar[dict[int, str]] = {LAYER: "regression", TOP_HEADS_LAYER: "top_heads", TEMPLATE_LAYER: "template"}

    def __init__(self, max_proteins: int) -> None:
        self.max_proteins = max_proteins

    def train_examples(self, protein: ProteinInputs, inputs: LayerInputs) -> Iterator[Examples]:
        if protein.position < self.max_proteins:
            protein.attention_features.append(symmetrised_apc(inputs.attention))
        return iter(())

    def finish_train(self, protein: ProteinInputs) -> Iterator[Examples]:
        if not protein.attention_features:
            return
        features = np.concatenate(protein.attention_features)  # (layers × H, L, L)
        defined = ~np.ma.getmaskarray(protein.contacts)
        i, j = contact_candidates(len(protein.protein), defined)
        yield self.LAYER, features[:, i, j].T, protein.contacts.filled(False)[i, j]
        # The top heads' pairs carry their protein's place, L/5 and the heads per layer in three leading
        # columns: the fit ranks heads protein by protein, and examples travel as one array per protein.
        scores, labels, top = ranked_pairs(features, protein.contacts)
        head = np.array([protein.position, top, protein.attention_features[0].shape[0]], dtype=np.float64)
        yield self.TOP_HEADS_LAYER, np.column_stack([np.tile(head, (len(labels), 1)), scores]), labels

    def fit(self, features: np.ndarray, labels: np.ndarray, seed: int) -> ContactRegression | None:
        return ContactRegression(random_state=seed).fit_pairs(features, labels) if _both_classes(labels) else None

    def fit_layer(self, layer: int, features: np.ndarray, labels: np.ndarray, seed: int) -> Any | None:
        if layer != self.TOP_HEADS_LAYER:
            return self.fit(features, labels, seed)
        positions = features[:, 0]
        proteins = []
        for position in np.unique(positions):  # training-list order
            rows = positions == position
            proteins.append((features[rows, 3:], labels[rows].astype(bool), int(features[rows][0, 1])))
        return TopHeadsReadout().fit_pairs(proteins, int(features[0, 2]))

    def fit_proteins(self, proteins: Sequence[Protein]) -> dict[int, Any]:
        try:
            return {self.TEMPLATE_LAYER: PositionalTemplate().fit(proteins[: self.max_proteins])}
        except ValueError:  # no training protein with coordinates: no template, as no regression
            return {}

    def evaluate(self, models: Mapping[int, Any], protein: ProteinInputs, inputs: LayerInputs, tally: Tally) -> None:
        if self.LAYER in models or self.TOP_HEADS_LAYER in models:
            protein.attention_features.append(symmetrised_apc(inputs.attention))

    def finish_test(self, models: Mapping[int, Any], protein: ProteinInputs, tally: Tally) -> None:
        if not protein.contacts.count():
            return
        score_maps = {}
        if self.LAYER in models or self.TOP_HEADS_LAYER in models:
            features = np.concatenate(protein.attention_features)
            if self.LAYER in models:
                score_maps[self.LAYER] = models[self.LAYER].predict_features(features)
            if self.TOP_HEADS_LAYER in models:
                score_maps[self.TOP_HEADS_LAYER] = models[self.TOP_HEADS_LAYER].predict_features(features)
        if self.TEMPLATE_LAYER in models:
            score_maps[self.TEMPLATE_LAYER] = models[self.TEMPLATE_LAYER].predict(protein.protein)
        for layer, scores in score_maps.items():
            for (range_name, x), (precision, chance) in contact_precisions(scores, protein.contacts).items():
                tally.add(f"{self.METHODS[layer]}/{range_name}/{x}", protein.position, precision, chance)

    def rows(self, layer: int, outcome: Outcome) -> list[tuple]:
        return []

    def regression_rows(self, outcome: Outcome) -> list[tuple]:
        """Rows of contact_regression.csv: (range, k, precision, chance, test proteins, method), the
        regression's first."""
        rows = []
        for method in self.METHODS.values():
            for name, values in outcome.scores.items():
                kind, range_name, x = name.split("/")
                if kind == method:
                    rows.append((range_name, f"L/{x}" if int(x) > 1 else "L", float(np.nanmean(values[:, 0])),
                                 float(np.nanmean(values[:, 1])), len(values), method))  # fmt: skip
        return rows

    def model_arrays(self, model: ContactRegression | TopHeadsReadout) -> dict[str, np.ndarray]:
        if isinstance(model, TopHeadsReadout):
            return {"heads": model.flat_heads_, "n_heads": np.array([model.n_heads_])}
        return {"coef": model.coef_, "intercept": np.array([model.intercept_])}

    def model_from_arrays(self, arrays: dict[str, np.ndarray]) -> ContactRegression | TopHeadsReadout:
        if "heads" in arrays:
            return TopHeadsReadout.from_heads(arrays["heads"], int(arrays["n_heads"][0]))
        return ContactRegression.from_coefficients(arrays["coef"], arrays["intercept"][0])


#: The key of the contact regression's one model.
CONTACT_REGRESSION_KEY: Key = (
    ContactRegressionTask.task,
    ContactRegressionTask.representation,
    ContactRegressionTask.LAYER,
)
#: The key of the top-heads readout beside it.
TOP_HEADS_KEY: Key = (ContactRegressionTask.task, ContactRegressionTask.representation,
                      ContactRegressionTask.TOP_HEADS_LAYER)  # fmt: skip


def make_tasks(names: Sequence[str], regression_proteins: int) -> list[ProbeTask]:
    """The task objects of task names, in the order probes.csv lists them (`known_tasks` order).

    Raises
    ------
    ValueError
        On a name not in `known_tasks`.
    """
    known = known_tasks()
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise ValueError(f"unknown probing task(s) {unknown}; known: {', '.join(known)}")
    by_name: dict[str, list[ProbeTask]] = {
        "secondary_structure": [SecondaryStructureTask()],
        "binding_site": [BindingSiteTask()],
        "contact": [EmbeddingContactTask(), AttentionContactTask()],
        "contact_regression": [ContactRegressionTask(regression_proteins)],
    }
    return [task for name in known if name in names for task in by_name.get(name, [LabelTask(name)])]


def ss_codes(classes: np.ndarray) -> np.ndarray:
    """Integer codes of secondary-structure class names (index in `SS_NAMES`; -1 for none)."""
    codes = np.full(len(classes), -1, dtype=np.int8)
    for code, name in enumerate(_SS_LABELS):
        codes[classes == name] = code
    return codes
