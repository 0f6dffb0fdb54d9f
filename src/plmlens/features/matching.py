"""An SAE's features against every per-residue concept of held-out labelled proteins, with neurons and controls.

`match_concepts` reads the evaluation proteins' states from an activation store three times (memory flat in
their number):

1. each feature's and neuron's range, and the position-only predictor's rates (validation proteins);
2. the counts of `plmlens.features.concepts` for the features, the neurons (both signs), the features against
   concepts shuffled between proteins, and the position-only predictor; each feature's top proteins;
3. the activation histograms and the per-residue activations of the features the browser shows.

Beside these, the caller may pass the feature table of another SAE as a control (``random_model``: an SAE of the
same width trained on the random-weight model's states, evaluated on the same proteins).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from plmlens.analysis.properties import property_label
from plmlens.features.concepts import (
    MATCH_F1,
    TEST,
    THRESHOLDS,
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
from plmlens.features.store import ActivationStore
from plmlens.proteins import Protein
from plmlens.proteins.positions import position_keys

#: The controls as sentences name them.
CONTROL_NAMES = {"shuffled": "shuffled concepts", "random_model": "random-weight model", "position": "position alone"}
#: Proteins kept per browsed feature, and bins of its activation histogram.
TOP_PROTEINS = 5
HISTOGRAM_BINS = 20
#: Features the browser shows: the best few per concept, and the most often matched beyond them.
BROWSED_PER_CONCEPT = 3
BROWSED_EXTRA = 20


@dataclass
class ConceptResult:
    """What ``plmlens features concepts`` writes: the per-feature and per-concept tables, the summary, the
    browser's examples, and the full feature × concept table (for controls of other SAEs)."""

    features: pd.DataFrame
    concepts: pd.DataFrame
    summary: dict
    examples: dict
    feature_table: pd.DataFrame


def _encode(sae: torch.nn.Module, states: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        return sae.encode(torch.from_numpy(states).to(sae.W_dec.device)).float().cpu()


def match_concepts(
    sae: torch.nn.Module,
    store: ActivationStore,
    layer: int,
    proteins: Mapping[str, Protein],
    *,
    names: Sequence[str] | None = None,
    seed: int = 0,
    controls: Mapping[str, pd.DataFrame] | None = None,
    numbered: bool = True,
    progress: Callable[[str, int], None] | None = None,
) -> ConceptResult:
    """Match `sae`'s features (and the layer's neurons) to concepts on the proteins of `store`.

    Parameters
    ----------
    sae : SparseAutoencoder
    store : ActivationStore
        The evaluation proteins' states of `layer` (never the SAE's training proteins).
    layer : int
        1-based.
    proteins : mapping of id to Protein
        The labelled proteins of the store, by id.
    names : sequence of str, optional
        Concepts (default: every per-residue label property; those no protein defines are dropped).
    seed : int
        Seeds the validation/test split and the shuffled control.
    controls : mapping of str to DataFrame, optional
        Feature tables (`ConceptResult.feature_table`) of control SAEs, e.g. ``{"random_model": ...}``.
    numbered : bool
        Positions for the position-only predictor: IMGT where numbered (else residue index).
    progress : callable, optional
        ``progress(stage, proteins_done)``.
    """
    ids = [i for i in store.index["id"].astype(str) if i in proteins]
    splits = split_proteins(ids, seed)
    names, matrices = _defined_concepts(proteins, ids, concept_names(names))
    width = int(sae.config.width)
    features, neurons = ActivationRange(width), ActivationRange(store.d)
    predictor = PositionalPredictor(names)
    keys = {i: position_keys(proteins[i], numbered) for i in ids}
    for k, (protein_id, states) in enumerate(_states(store, layer, proteins)):
        features.update(_encode(sae, states).numpy())
        neurons.update(states)
        predictor.fit_update(keys[protein_id], *matrices[protein_id], splits[protein_id])
        if progress is not None:
            progress("range", k + 1)
    partners = shuffled_pairs(ids, seed, splits)
    counts = {"features": ConceptCounts(width, names, THRESHOLDS, features.max),
              "neurons": ConceptCounts(store.d, names, THRESHOLDS, neurons.max, neurons.min),
              "shuffled": ConceptCounts(width, names, THRESHOLDS, features.max)}  # fmt: skip
    top = _TopProteins(width)
    for k, (protein_id, states) in enumerate(_states(store, layer, proteins)):
        latents = _encode(sae, states).numpy()
        values, defined = matrices[protein_id]
        split = splits[protein_id]
        counts["features"].update(latents, values, defined, split)
        counts["neurons"].update(states, values, defined, split)
        shuffled = pair_with_partner(latents, values, defined, *matrices[partners[protein_id]])
        counts["shuffled"].update(shuffled[0], shuffled[1], shuffled[2], split)
        predictor.update(keys[protein_id], values, defined, split)
        top.add(k, latents.max(axis=0))
        if progress is not None:
            progress("counts", k + 1)
    position_f1 = predictor.position_f1()
    tables = {name: match_table(c, position_f1 if name == "features" else None) for name, c in counts.items()}
    control_tables = {"shuffled": tables["shuffled"], **(controls or {})}
    summary = coverage_summary(tables["features"], tables["neurons"], control_tables, position_f1)
    everything = {"features": tables["features"], "neurons": tables["neurons"], **control_tables}
    summary["matched_beyond_position"] = {name: _beyond_position(table, position_f1) for name, table in
                                          everything.items()}  # fmt: skip
    summary["beyond_controls"] = _beyond_controls(summary["concepts"], list(control_tables))
    concepts = _concepts_table(tables, control_tables, position_f1, names, counts["features"])
    feature_rows = _features_table(tables["features"], features)
    browsed = _browsed(tables["features"])
    examples = _examples(sae, store, layer, proteins, browsed, top, features, feature_rows)
    summary |= {"layer": layer, "n_features": width, "n_neurons": store.d, "concept_names": names,
                "n_proteins": {s: sum(1 for i in ids if splits[i] == s) for s in ("validation", TEST)},
                "thresholds": list(THRESHOLDS), "match_f1": MATCH_F1, "seed": seed}  # fmt: skip
    return ConceptResult(feature_rows, concepts, summary, examples, tables["features"])


def _beyond_position(table: pd.DataFrame, position_f1: Mapping[str, float]) -> int:
    """Concepts some unit matches with a test F1 above what position alone reaches: in aligned families
    (antibody domains) and for common concepts (a neuron on everywhere matches the framework), the count that
    says something about the model."""
    floor = table["concept"].map(lambda c: np.nan_to_num(position_f1.get(c, np.nan))).astype(float)
    beyond = table["matched"].to_numpy() & (table["test_f1"].to_numpy() > floor.to_numpy())
    return int(table.loc[beyond, "concept"].nunique())


def _beyond_controls(per_concept: Mapping[str, dict], controls: list[str]) -> list[str]:
    """The concepts the features match (test F1 ≥ `MATCH_F1`) with a test F1 above every control's best and above
    the position-only predictor: what only the trained model's features carry."""
    beyond = []
    for name, entry in per_concept.items():
        mine = entry["features"]["best_test_f1"]
        floors = [entry[c]["best_test_f1"] for c in controls] + [entry.get("position")]
        if mine is not None and mine >= MATCH_F1 and all(mine > (f if f is not None else 0.0) for f in floors):
            beyond.append(name)
    return beyond


def verdict(summary: dict) -> str:
    """What the counts say, in one sentence: the concepts features match above every control, or that none
    is."""
    above = summary.get("beyond_controls") or []
    controls = [name for name in summary["matched_concepts"] if name not in ("features", "neurons")]
    against = ", ".join(CONTROL_NAMES.get(c, c) for c in controls)
    if not above:
        return (f"No concept is matched above every control ({against}): what these features match, the controls "
                "reach too.")  # fmt: skip
    return f"Matched above every control ({against}): {', '.join(above)}."


def _states(store: ActivationStore, layer: int, proteins: Mapping[str, Protein]):
    for protein_id, states in store.proteins(layer):
        if protein_id in proteins:
            yield protein_id, states


def _defined_concepts(
    proteins: Mapping[str, Protein], ids: list[str], names: list[str]
) -> tuple[list[str], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """The concepts that hold somewhere in the proteins (the rest cannot be matched and are left out), and
    each protein's `concept_matrix` of them."""
    matrices = {protein_id: concept_matrix(proteins[protein_id], names) for protein_id in ids}
    present = np.zeros(len(names), dtype=bool)
    for values, _ in matrices.values():
        present |= values.any(axis=0)
    kept = np.flatnonzero(present)
    chosen = {k: (values[:, kept], defined[:, kept]) for k, (values, defined) in matrices.items()}
    return [names[j] for j in kept], chosen


class _TopProteins:
    """Per feature, the `TOP_PROTEINS` proteins where it is highest (by their order in the store)."""

    def __init__(self, width: int) -> None:
        self.values = np.full((width, TOP_PROTEINS), -np.inf)
        self.proteins = np.full((width, TOP_PROTEINS), -1, dtype=np.int64)

    def add(self, index: int, maxima: np.ndarray) -> None:
        values = np.concatenate([self.values, maxima[:, None]], axis=1)
        proteins = np.concatenate([self.proteins, np.full((len(maxima), 1), index)], axis=1)
        order = np.argsort(-values, axis=1, kind="stable")[:, :TOP_PROTEINS]
        self.values = np.take_along_axis(values, order, 1)
        self.proteins = np.take_along_axis(proteins, order, 1)


def _best(table: pd.DataFrame) -> pd.DataFrame:
    """Per concept, the unit with the highest validation F1, with its test scores."""
    return best_per_concept(table, k=1).set_index("concept")


def _concepts_table(tables, controls, position_f1, names, counts) -> pd.DataFrame:
    top = best_per_concept(tables["features"], k=5)
    best = {name: _best(table) for name, table in {**tables, **controls}.items()}
    rows = []
    for k, name in enumerate(names):
        mine = top[top["concept"] == name]
        first = mine.iloc[0] if len(mine) else None
        neuron = best["neurons"].loc[name] if name in best["neurons"].index else None
        matched = tables["features"]
        row = {
            "concept": name, "label": property_label(name), "n_positive": int(counts.positives[1, k]),
            "feature": int(first["unit"]) if first is not None else None,
            "f1": float(first["test_f1"]) if first is not None else None,
            "threshold": float(first["threshold"]) if first is not None else None,
            "top_features": ";".join(f"{int(r.unit)}:{r.test_f1:.2f}" for r in mine.itertuples()),
            "neuron": f"{int(neuron['unit'])}{'+' if neuron['sign'] > 0 else '-'}" if neuron is not None else None,
            "neuron_f1": float(neuron["test_f1"]) if neuron is not None else None,
            "position_f1": position_f1.get(name),
            "n_matched_features": int(matched.loc[(matched["concept"] == name) & matched["matched"], "unit"].nunique()),
        }  # fmt: skip
        for control in controls:
            found = best[control]
            row[f"{control}_f1"] = float(found.loc[name, "test_f1"]) if name in found.index else None
        row["positional"] = bool(row["f1"] is not None and not row["f1"] > np.nan_to_num(row["position_f1"] or 0.0))
        rows.append(row)
    return pd.DataFrame(rows)


def _features_table(table: pd.DataFrame, features: ActivationRange) -> pd.DataFrame:
    best = best_per_unit(table).set_index("unit")
    frame = pd.DataFrame({"feature": np.arange(features.n_units), "frequency": features.frequency,
                          "max_activation": features.max})  # fmt: skip
    frame["concept"] = frame["feature"].map(best["concept"]) if len(best) else None
    for column, source in (("f1", "test_f1"), ("precision", "test_precision"), ("recall", "test_recall"),
                           ("threshold", "threshold")):  # fmt: skip
        frame[column] = frame["feature"].map(best[source]) if len(best) else np.nan
    frame["matched"] = (frame["f1"].fillna(0.0) >= MATCH_F1) & (frame["max_activation"] > 0)
    positional = best["positional"] if "positional" in best else pd.Series(dtype=bool)
    frame["positional"] = frame["feature"].map(positional).fillna(False).astype(bool) & frame["matched"]
    return frame


def _browsed(table: pd.DataFrame) -> list[int]:
    """The features the browser shows: the best per concept, then the highest test F1s."""
    chosen = list(dict.fromkeys(int(u) for u in best_per_concept(table, k=BROWSED_PER_CONCEPT)["unit"]))
    ranked = table.sort_values("test_f1", ascending=False, kind="stable")["unit"]
    extra = [int(u) for u in dict.fromkeys(ranked) if int(u) not in chosen][:BROWSED_EXTRA]
    return chosen + extra


def _examples(sae, store, layer, proteins, browsed, top, features, feature_rows) -> dict:
    wanted = {int(p) for f in browsed for p in top.proteins[f] if p >= 0}
    counts = np.zeros((len(browsed), HISTOGRAM_BINS), dtype=np.int64)
    scale = np.where(features.max[browsed] > 0, features.max[browsed], 1.0)
    kept: dict[int, tuple[str, np.ndarray]] = {}
    for k, (protein_id, states) in enumerate(_states(store, layer, proteins)):
        latents = _encode(sae, states).numpy()[:, browsed]
        bins = np.minimum((latents / scale * HISTOGRAM_BINS).astype(int), HISTOGRAM_BINS - 1)
        for j in range(len(browsed)):
            on = latents[:, j] > 0
            counts[j] += np.bincount(bins[on, j], minlength=HISTOGRAM_BINS)
        if k in wanted:
            kept[k] = (protein_id, latents)
    rows = feature_rows.set_index("feature")
    entries = []
    for j, feature in enumerate(browsed):
        top_entries = []
        for index, value in zip(top.proteins[feature], top.values[feature], strict=True):
            if index < 0 or value <= 0 or int(index) not in kept:
                continue
            protein_id, latents = kept[int(index)]
            top_entries.append(_protein_entry(proteins[protein_id], latents[:, j], float(value)))
        row = rows.loc[feature]
        entries.append({"feature": feature, "concept": row["concept"] if isinstance(row["concept"], str) else None,
                        "f1": _number(row["f1"]), "frequency": float(row["frequency"]),
                        "histogram": {"edges": (np.linspace(0, 1, HISTOGRAM_BINS + 1) * scale[j]).round(4).tolist(),
                                      "counts": counts[j].tolist()},
                        "top": top_entries})  # fmt: skip
    return {"features": entries}


def _protein_entry(protein: Protein, activations: np.ndarray, maximum: float) -> dict:
    region = protein.labels.get("region")
    imgt = protein.labels.get("imgt_position")
    n = len(activations)
    return {
        "protein": protein.id, "max": round(maximum, 4), "sequence": protein.sequence[:n],
        "activations": np.round(activations.astype(float), 4).tolist(),
        "regions": _label_list(region, n), "imgt": _label_list(imgt, n),
    }  # fmt: skip


def _label_list(label, n: int) -> list | None:
    if label is None:
        return None
    values = np.ma.asarray(label)[:n]
    return [None if masked else str(value) for value, masked in zip(values.data, np.ma.getmaskarray(values),
                                                                     strict=True)]  # fmt: skip


def _number(value) -> float | None:
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else float(value)
