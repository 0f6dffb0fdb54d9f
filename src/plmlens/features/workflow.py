"""The steps ``plmlens features concepts`` and ``show`` take, as functions: load the SAE and its model, stream the
labelled proteins' states through a temporary activation store, match concepts, measure fidelity."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from plmlens.features.concepts import MATCH_F1, TEST, split_proteins
from plmlens.features.fidelity import fidelity
from plmlens.features.matching import CONTROL_NAMES, ConceptResult, match_concepts, verdict
from plmlens.features.sae import load_sae
from plmlens.features.store import ActivationStore, extract
from plmlens.features.train import evaluate_sae
from plmlens.models import ModelAdapter, ModelLoadError, load_model
from plmlens.proteins import Protein, Skipped, load_proteins, read_structure_file
from plmlens.rundir import CONCEPTS_TABLE, FEATURE_EXAMPLES, FEATURES_TABLE, SUMMARY, FeatureDir, RunDirError


class ConceptsError(ValueError):
    """An SAE, its model or its data that cannot be used; one line."""


@dataclass
class ConceptsRun:
    """The outputs of ``plmlens features concepts``: what `save` writes into ``SAE_DIR/concepts/``."""

    result: ConceptResult
    summary: dict = field(default_factory=dict)

    def save(self, directory: Path) -> None:
        self.result.features.to_csv(directory / FEATURES_TABLE, index=False)
        self.result.concepts.to_csv(directory / CONCEPTS_TABLE, index=False)
        (directory / FEATURE_EXAMPLES).write_text(json.dumps(self.result.examples, allow_nan=False) + "\n")
        (directory / SUMMARY).write_text(json.dumps(self.summary, indent=2, default=_plain) + "\n")

    def headline(self) -> str:
        """The counts of concepts matched by features, neurons and each control, then the verdict they
        support: which concepts the features match above every control."""
        matched, beyond = self.summary["matched_concepts"], self.summary["matched_beyond_position"]
        controls = ", ".join(f"{CONTROL_NAMES.get(name, name)} {matched[name]}" for name in matched
                             if name not in ("features", "neurons"))  # fmt: skip
        fid = self.summary.get("fidelity") or {}
        recovered = fid.get("loss_recovered_mean")
        loss = f"; loss recovered {recovered:.2f} (against mean ablation)" if recovered is not None else ""
        counts = (f"{matched['features']} of {len(self.summary['concept_names'])} concepts matched by features "
                  f"(test F1 ≥ {MATCH_F1}; {beyond['features']} above the position-only F1), {matched['neurons']} "
                  f"by single neurons ({beyond['neurons']} above position); controls: {controls}{loss}.")  # fmt: skip
        return f"{counts}\n{verdict(self.summary)}"


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(type(value).__name__)


def load_sae_and_model(sae_dir: Path, device: str, lm_head: bool = False):
    """The SAE of `sae_dir` and the model it was trained on (with the same random weights where it was)."""
    try:
        record = FeatureDir(sae_dir).sae_record()
        sae, _ = load_sae(sae_dir, device="cpu")
    except (RunDirError, ValueError) as error:
        raise ConceptsError(str(error)) from None
    model = record.get("model") or {}
    try:
        adapter = load_model(model["name"], device=device, random_init=bool(model.get("random_init")),
                             seed=int(model.get("init_seed") or 0), lm_head=lm_head)  # fmt: skip
    except (ModelLoadError, KeyError) as error:
        raise ConceptsError(f"{sae_dir}: its model cannot be loaded ({error})") from None
    return sae.to(adapter.device).eval(), adapter, int(record["layer"])


def _store_of(adapter: ModelAdapter, proteins: Sequence[Protein], layer: int, work: Path) -> ActivationStore:
    directory = Path(tempfile.mkdtemp(prefix=".states-", dir=work))
    extract(adapter, proteins, [layer], directory, checkpoint_seconds=1e9)
    return ActivationStore(directory)


def run_concepts(
    sae_dir: Path,
    data: str,
    *,
    control: Path | None = None,
    names: Sequence[str] | None = None,
    seed: int = 0,
    limit: int | None = None,
    device: str = "auto",
    fidelity_proteins: int = 64,
    work: Path,
    say: Callable[[str], None] = lambda text: None,
) -> ConceptsRun:
    """Match the SAE's features to the concepts of `data` (see `match_concepts`), with the random-model control
    from `control` and the fidelity of the SAE on test proteins; temporary stores go under `work`."""
    sae, adapter, layer = load_sae_and_model(sae_dir, device, lm_head=fidelity_proteins > 0)
    proteins, skipped = load_proteins(data, limit)
    if not proteins:
        raise ConceptsError(f"{data}: no proteins ({len(skipped)} skipped)")
    by_id = {p.id: p for p in proteins}
    temporary: list[Path] = []
    try:
        controls = {}
        if control is not None:
            c_sae, c_adapter, c_layer = load_sae_and_model(control, device)
            say(f"control: {control} ({c_adapter.name}{' random weights' if c_adapter.random_init else ''})")
            c_store = _store_of(c_adapter, proteins, c_layer, work)
            temporary.append(c_store.path)
            controls["random_model"] = match_concepts(c_sae, c_store, c_layer, by_id, names=names,
                                                      seed=seed).feature_table  # fmt: skip
        store = _store_of(adapter, proteins, layer, work)
        temporary.append(store.path)
        say(f"concepts: {len(proteins):,} proteins ({store.record['n_residues']:,} residues) through {adapter.name} "
            f"layer {layer}")  # fmt: skip
        result = match_concepts(sae, store, layer, by_id, names=names, seed=seed, controls=controls)
        evaluation = evaluate_sae(sae, store.tokens(layer))
        mean = _mean_state(store, layer)
    finally:
        for path in temporary:
            shutil.rmtree(path, ignore_errors=True)
    evaluation.pop("frequency", None)
    summary = {**result.summary, "model": FeatureDir(sae_dir).sae_record().get("model"), "source": data,
               "evaluation": evaluation, "n_skipped": len(skipped)}  # fmt: skip
    if fidelity_proteins > 0:
        splits = split_proteins(by_id, seed)
        test = [p for p in proteins if splits[p.id] == TEST][:fidelity_proteins]
        summary["fidelity"] = fidelity(adapter, sae, test, layer, mean=mean, seed=seed)
    result.examples["source"] = data
    return ConceptsRun(result, summary)


def _mean_state(store: ActivationStore, layer: int, block: int = 65_536) -> np.ndarray:
    """The mean residue state of a layer, read a block at a time (the mean ablation's state)."""
    tokens = store.tokens(layer)
    total = np.zeros(tokens.d, dtype=np.float64)
    for start in range(0, tokens.n_tokens, block):
        total += tokens.read(start, start + block).sum(axis=0, dtype=np.float64)
    return (total / max(tokens.n_tokens, 1)).astype(np.float32)


def show_protein(sae_dir: Path, *, sequence: str | None, structure: Path | None, top: int = 3,
                 device: str = "auto") -> list[dict]:  # fmt: skip
    """Each residue of one protein with its `top` features (index, activation, matched concept or "")."""
    sae, adapter, layer = load_sae_and_model(sae_dir, device)
    if structure is not None:
        records = list(read_structure_file(structure))
        chains = [r for r in records if not isinstance(r, Skipped)]
        if not chains:
            reason = records[0].reason if records else "no protein chain"
            raise ConceptsError(f"{structure}: {reason}")
        protein = chains[0]
    else:
        protein = Protein("query", sequence.strip().upper())
    concepts = _matched_concepts(sae_dir)
    try:
        encoding = adapter.encode([protein])
    except ValueError as error:
        raise ConceptsError(f"{protein.id}: {error}") from None
    states = adapter.layer_states(encoding, [layer - 1])[layer - 1][0].float()
    with torch.no_grad():
        latents = sae.encode(states.to(sae.W_dec.device)).cpu()
    values, indices = latents.topk(min(top, latents.shape[1]), dim=1)
    rows = []
    for i, residue in enumerate(encoding.sequences[0]):
        found = [(int(f), float(a), concepts.get(int(f), "")) for a, f in zip(values[i], indices[i], strict=True)
                 if float(a) > 0]  # fmt: skip
        rows.append({"index": i + 1, "residue": residue, "features": found})
    return rows


def _matched_concepts(sae_dir: Path) -> dict[int, str]:
    directory = FeatureDir(sae_dir)
    if not directory.has_concepts():
        return {}
    table: pd.DataFrame = directory.features_table()
    matched = table[table["matched"].astype(bool)]
    return {int(f): str(c) for f, c in zip(matched["feature"], matched["concept"], strict=True)}
