"""Contacts from a masked language model's own output: the categorical Jacobian.

Zhang, Wayment-Steele, Kim, Kern, Ovchinnikov et al. (PNAS 2024): substitute each position ``i`` by each of
the 20 amino acids ``a`` and record how the logits of every position ``j`` over the 20 amino acids ``b``
move, ``J[i, a, j, b] = logits(x with x_i = a)[j, b] − logits(x)[j, b]``. Centring ``J`` over each of its
four axes, the Frobenius norm over ``(a, b)`` of each ``(i, j)`` block, a zeroed diagonal, the average product
correction and symmetrisation give a contact score map that uses no labels at all. The order of the last
steps follows the authors' code (norm → APC → symmetrise).

Cost is ``20 L`` forward passes per protein, batched here: all 20 substitutions of several positions go
through the model in one forward pass.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from plmlens.ioutils import write_bytes_atomic, write_text_atomic
from plmlens.models import ModelAdapter, SequenceError
from plmlens.models.tokenizers import STANDARD_RESIDUES
from plmlens.probing.metrics import apc, contact_precisions
from plmlens.probing.readout import TopHeadsReadout
from plmlens.probing.regression import ContactRegression, head_contact_scores
from plmlens.probing.template import PositionalTemplate
from plmlens.proteins import CONTACT_RANGES, Protein, contact_map
from plmlens.proteins.ids import unique_ids
from plmlens.proteins.skips import Skipped
from plmlens.rundir import JACOBIAN, RunDir

#: The contact maps `jacobian` scores, in the order of its table's columns: the Jacobian, the attention baselines
#: (contact regression, best single head, mean of the top-k heads) and the positional template.
METHODS = ("jacobian", "regression", "best_head", "top_heads", "template")
#: Precision@L/x divisors reported.
DIVISORS = (1, 2, 5)
#: Ranges reported (the paper's three, and all pairs at separation ≥ 6).
RANGES = (*CONTACT_RANGES, "all")


def default_batch_size(adapter: ModelAdapter) -> int:
    """Substituted sequences per forward pass when none is given: one position's 20 on a CPU, where larger
    batches measured slower (`benchmarks/jacobian_benchmark.py`: 0.77× for AntiBERTy, 0.55× for Sapiens at 200
    per pass on 2 threads), and 20 positions' 400 on a GPU, which needs large batches to be busy."""
    return 20 if adapter.device.type == "cpu" else 400


class JacobianUnsupportedError(ValueError):
    """The model has no bidirectional language-model output the categorical Jacobian is defined on."""


def check_jacobian_support(adapter: ModelAdapter) -> None:
    """Raise `JacobianUnsupportedError` (one line) unless `adapter` is a masked LM with its head loaded."""
    if adapter.causal:
        raise JacobianUnsupportedError(
            f"{adapter.name} is a causal (left-to-right) model: a substitution moves only later positions' "
            "logits, so the symmetric categorical Jacobian of Zhang et al. is not defined for it; use a masked "
            "language model"
        )
    if adapter.lm_model is None:
        raise JacobianUnsupportedError(
            f"{adapter.name} was loaded without its language-model head (load_model(..., lm_head=True))"
        )


def categorical_jacobian(
    logits_fn: Callable[[torch.Tensor], torch.Tensor],
    tokens: torch.Tensor,
    positions: Sequence[int],
    alphabet: Sequence[int],
    *,
    batch_size: int = 200,
) -> np.ndarray:
    """The raw categorical Jacobian of one sequence, batched.

    Parameters
    ----------
    logits_fn : callable
        ``logits_fn(input_ids)`` maps ``(N, T)`` token ids to ``(N, T, V)`` logits.
    tokens : LongTensor, shape (T,)
        The sequence's token ids (special tokens included).
    positions : sequence of int
        Token positions of the ``L`` residues.
    alphabet : sequence of int
        Token ids of the amino acids substituted and read (20 for proteins).
    batch_size : int
        Substituted sequences per forward pass; rounded down to whole positions (all of a position's
        substitutions go in one pass), at least one position.

    Returns
    -------
    ndarray of float32, shape (L, A, L, A)
        ``J[i, a, j, b]``: change of the logit of amino acid ``b`` at residue ``j`` when residue ``i`` is
        set to amino acid ``a``.
    """
    positions_t = torch.as_tensor(list(positions), dtype=torch.long)
    alphabet_t = torch.as_tensor(list(alphabet), dtype=torch.long)
    n, a = len(positions_t), len(alphabet_t)
    tokens = tokens.reshape(-1).long()

    def read(ids: torch.Tensor) -> torch.Tensor:
        logits = logits_fn(ids).float()
        return logits[:, positions_t.to(logits.device)][..., alphabet_t.to(logits.device)].cpu()

    base = read(tokens[None])[0]
    jacobian = torch.empty((n, a, n, a), dtype=torch.float32)
    per_pass = max(1, int(batch_size) // a)
    for first in range(0, n, per_pass):
        chunk = range(first, min(n, first + per_pass))
        ids = tokens.repeat(len(chunk) * a, 1)
        rows = torch.arange(len(chunk) * a)
        ids[rows, positions_t[list(chunk)].repeat_interleave(a)] = alphabet_t.repeat(len(chunk))
        jacobian[first : chunk.stop] = (read(ids) - base).reshape(len(chunk), a, n, a)
    return jacobian.numpy()


def jacobian_contacts(jacobian: np.ndarray) -> np.ndarray:
    """Contact scores from a categorical Jacobian: centred over its four axes, the norm of each ``(i, j)``
    block, diagonal zeroed, APC, diagonal zeroed again, then symmetrised.

    Parameters
    ----------
    jacobian : ndarray, shape (L, A, L, A)

    Returns
    -------
    ndarray of float64, shape (L, L)
    """
    centred = np.asarray(jacobian, dtype=np.float64).copy()
    for axis in range(4):
        centred -= centred.mean(axis=axis, keepdims=True)
    norms = np.sqrt(np.square(centred).sum(axis=(1, 3)))
    np.fill_diagonal(norms, 0.0)
    corrected = apc(norms)
    np.fill_diagonal(corrected, 0.0)
    return (corrected + corrected.T) / 2


def _logits_fn(adapter: ModelAdapter, inputs: dict[str, torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    def logits(ids: torch.Tensor) -> torch.Tensor:
        batch = {key: value.expand(len(ids), -1) for key, value in inputs.items()}
        batch["input_ids"] = ids.to(adapter.device)
        with torch.no_grad():
            return adapter.lm_model(**batch).logits

    return logits


def protein_jacobian_contacts(
    adapter: ModelAdapter, protein: Protein | str, *, batch_size: int | None = None, max_length: int = 512
) -> np.ndarray:
    """The categorical-Jacobian contact map of one protein under `adapter`'s masked language model.

    Parameters
    ----------
    adapter : ModelAdapter
        A masked language model loaded with its head.
    protein : Protein or str
        The protein (or sequence); longer than the token limit, its first residues are kept.
    batch_size : int, optional
        Substituted sequences per forward pass (default: `default_batch_size`).
    max_length : int
        Token limit (special tokens included).

    Returns
    -------
    ndarray of float64, shape (L, L)

    Raises
    ------
    JacobianUnsupportedError
        For causal models and models without their language-model head.
    """
    check_jacobian_support(adapter)
    encoding = adapter.encode([protein], max_length=max_length)
    start, n = int(encoding.starts[0]), int(encoding.lengths[0])
    inputs = encoding.model_inputs(adapter.device)
    alphabet = [adapter.tokenizer.residue_ids[c] for c in STANDARD_RESIDUES]
    jacobian = categorical_jacobian(
        _logits_fn(adapter, inputs),
        encoding.input_ids[0],
        range(start, start + n),
        alphabet,
        batch_size=batch_size or default_batch_size(adapter),
    )
    return jacobian_contacts(jacobian)


#: What a finished Jacobian run writes (into an analyze run directory, too): `JacobianResult.save`'s data and the
#: figure the report draws from its summary (``jacobian.png``/``.svg``); ``jacobian.json`` marks a finished one.
JACOBIAN_OUTPUTS = JACOBIAN.outputs


@dataclass
class JacobianResult:
    """Per-protein contact precisions of the Jacobian and the attention baselines, and the Jacobian maps."""

    table: pd.DataFrame
    maps: dict[str, np.ndarray]
    info: dict

    def summary_table(self) -> pd.DataFrame:
        """Mean precision over proteins by method, range and k (rows), with the mean chance level."""
        rows = []
        for range_name in RANGES:
            part = self.table[self.table["range"] == range_name]
            for x in DIVISORS:
                k = "L" if x == 1 else f"L/{x}"
                row = {"range": range_name, "k": k, "chance": float(part["chance"].mean()) if len(part) else np.nan}
                for method in METHODS:
                    column = f"{method}_p_at_{k.replace('/', '')}"
                    row[method] = float(part[column].mean()) if len(part) else np.nan
                row["n_proteins"] = int(part[f"jacobian_p_at_{k.replace('/', '')}"].notna().sum())
                rows.append(row)
        return pd.DataFrame(rows)

    def save(self, directory: str | Path) -> dict[str, Path]:
        """Write ``jacobian.csv``, ``jacobian_summary.csv``, ``jacobian_maps.npz`` and ``jacobian.json``
        atomically; the maps are float16, keyed by position with the ids alongside (no pickles). Data only: the
        report draws the figure (see ``plmlens.report.causal``).

        Returns
        -------
        dict of str to Path
            ``jacobian``, ``summary_table``, ``maps`` and ``summary`` (the JSON).
        """
        out = RunDir(directory)
        buffer = io.BytesIO()
        ids = list(self.maps)
        arrays = {f"map{k}": self.maps[key].astype(np.float16) for k, key in enumerate(ids)}
        np.savez_compressed(buffer, ids=np.array(ids, dtype=str), **arrays)
        return {
            "jacobian": out.write_table("jacobian.csv", self.table),
            "summary_table": out.write_table("jacobian_summary.csv", self.summary_table()),
            "maps": write_bytes_atomic(out.file("jacobian_maps.npz"), buffer.getvalue()),
            "summary": out.write_json("jacobian.json", self.info, default=float),
        }


def read_jacobian_maps(path: str | Path) -> dict[str, np.ndarray]:
    """The Jacobian contact maps written by `JacobianResult.save`, by protein id."""
    with np.load(Path(path), allow_pickle=False) as data:
        ids = [str(i) for i in data["ids"]]
        return {protein_id: data[f"map{k}"].astype(np.float64) for k, protein_id in enumerate(ids)}


def top_couplings(coupling: np.ndarray, k: int | None = None, min_separation: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """The strongest couplings of a Jacobian contact map, the pairs `show --jacobian` draws.

    Parameters
    ----------
    coupling : ndarray, shape (L, L)
        A symmetric contact score map (`jacobian_contacts`, `read_jacobian_maps`).
    k : int, optional
        Couplings kept (default, and for 0: L, as many as the protein has residues).
    min_separation : int
        Pairs closer in sequence are left out, as from the contact ranges scored (separation ≥ 6).

    Returns
    -------
    (ndarray, ndarray)
        Residue indices ``i < j`` of the pairs, strongest first (ties in the order of ``np.triu_indices``).
    """
    if k is not None and k < 0:
        raise ValueError(f"the number of couplings must not be negative, got {k}")
    n = coupling.shape[0]
    i, j = np.triu_indices(n, k=min_separation)
    count = min(k or n, len(i))
    order = np.argsort(-coupling[i, j], kind="stable")[:count]
    return i[order], j[order]


def split_for_regression(
    proteins: Sequence[Protein], regression_proteins: int, seed: int, limit: int | None = None
) -> tuple[list[Protein], list[Protein]]:
    """A seeded split: the contact regression's training proteins, and the evaluation proteins (at most
    `limit`); no protein is in both."""
    if len(proteins) < 2:
        raise ValueError(f"need at least 2 proteins (training and evaluation), got {len(proteins)}")
    order = np.random.default_rng([seed, 11]).permutation(len(proteins))
    n_train = min(max(1, regression_proteins), len(proteins) - 1)
    train = [proteins[k] for k in order[:n_train]]
    evaluation = [proteins[k] for k in order[n_train:]]
    return train, evaluation[:limit] if limit is not None else evaluation


def encodable(
    adapter: ModelAdapter, proteins: Sequence[Protein], max_length: int = 512
) -> tuple[list[Protein], list[dict[str, str]]]:
    """The proteins the model can take, and one ``{"id", "reason"}`` per protein it cannot (e.g. a letter
    outside its alphabet), so that one bad protein never stops a run."""
    usable, skipped = [], []
    for protein in proteins:
        try:
            adapter.encode([protein], max_length=max_length)
        except SequenceError as error:
            skipped.append({"id": protein.id, "reason": str(error).splitlines()[0]})
        else:
            usable.append(protein)
    return usable, skipped


class _MapCache:
    """Finished Jacobian maps on disk, one file per protein, so an interrupted run resumes where it stopped.

    A fingerprint of what shapes the maps (model, weights, precision, token limit) is kept beside them; a
    cache made under another fingerprint is cleared rather than reused.
    """

    def __init__(self, directory: str | Path, fingerprint: dict[str, Any]) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        stamp = self.directory / "fingerprint.json"
        text = json.dumps(fingerprint, sort_keys=True)
        if not stamp.is_file() or stamp.read_text() != text:
            for old in self.directory.glob("*.npy"):
                old.unlink()
            write_text_atomic(stamp, text)

    def _path(self, key: str) -> Path:
        return self.directory / f"{hashlib.sha256(key.encode('utf-8', 'surrogatepass')).hexdigest()[:32]}.npy"

    def get(self, key: str) -> np.ndarray | None:
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            value = np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            return None  # a damaged file is computed again
        return value if value.ndim == 2 and value.shape[0] == value.shape[1] else None

    def put(self, key: str, value: np.ndarray) -> None:
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(value, dtype=np.float64), allow_pickle=False)
        write_bytes_atomic(self._path(key), buffer.getvalue())


def labelled_attention(
    adapter: ModelAdapter, proteins: Sequence[Protein], max_length: int = 512
) -> Iterator[tuple[np.ndarray, np.ndarray | np.ma.MaskedArray]]:
    """Each protein's attention (``(layers, heads, L, L)``, float64) with its contact map, for the proteins that
    have contacts (coordinates); truncated proteins are cut to match."""
    for protein in proteins:
        attention = adapter.attention(protein, max_length=max_length).astype(np.float64)
        n = attention.shape[-1]
        contact = contact_map(protein.first(n))
        if contact.count():
            yield attention, contact


@dataclass
class ContactBaselines:
    """What contact maps from a model are judged against, fitted on the same training proteins.

    Attributes
    ----------
    regression : ContactRegression
        The contact regression over every head's symmetrised APC attention.
    top_heads : TopHeadsReadout
        The mean of the top-k heads; its best-ranked head is the best single head.
    template : PositionalTemplate
        The training proteins' mean contact map by position.
    """

    regression: ContactRegression
    top_heads: TopHeadsReadout
    template: PositionalTemplate

    @property
    def best_head(self) -> tuple[int, int]:
        """The single head with the best mean long-range precision@L/5 (0-based layer, head)."""
        layer, head = self.top_heads.heads_[0]
        return int(layer), int(head)

    @property
    def best_head_precision(self) -> float:
        """That head's mean training precision."""
        return float(self.top_heads.head_precision_[self.best_head])

    def info(self) -> dict[str, Any]:
        """The top heads (1-based ``layer-head``, best first), k and its training precision, and the template's
        training proteins and keys, for a run's JSON."""
        top = self.top_heads
        return {
            "top_heads": {"k": top.k_, "heads": [f"{layer + 1}-{head + 1}" for layer, head in top.heads_],
                          "train_long_p_at_L5": {str(k): v for k, v in top.k_precision_.items()}},
            "template": {"n_train_proteins": self.template.n_proteins_, "n_keys": len(self.template.keys_),
                         "aligned_by": self.template.aligned_by_},
        }  # fmt: skip


def fit_contact_baselines(
    adapter: ModelAdapter, proteins: Sequence[Protein], *, seed: int = 0, max_length: int = 512
) -> ContactBaselines:
    """The contact regression, the top-k heads and the positional template, fitted on the training proteins that
    have contacts (the template on them cut as the model reads them), from one forward pass each."""
    attentions, contacts, cut = [], [], []
    for protein in proteins:
        attention = adapter.attention(protein, max_length=max_length).astype(np.float64)
        contact = contact_map(protein.first(attention.shape[-1]))
        if contact.count():
            attentions.append(attention)
            contacts.append(contact)
            cut.append(protein.first(attention.shape[-1]))
    if not attentions:
        raise ValueError("no training protein has contacts (coordinates) to fit the attention baselines on")
    regression = ContactRegression(random_state=seed).fit(attentions, contacts)
    top_heads = TopHeadsReadout().fit(attentions, contacts)
    return ContactBaselines(regression, top_heads, PositionalTemplate().fit(cut))


def fit_attention_baselines(
    adapter: ModelAdapter, proteins: Sequence[Protein], *, seed: int = 0, max_length: int = 512
) -> tuple[ContactRegression, tuple[int, int], float]:
    """The two attention baselines, fitted on training proteins: the contact regression, and the single head
    whose symmetrised APC attention has the best mean long-range precision@L/5 (0-based layer, head; and that
    precision). `fit_contact_baselines` gives these and the others."""
    baselines = fit_contact_baselines(adapter, proteins, seed=seed, max_length=max_length)
    return baselines.regression, baselines.best_head, baselines.best_head_precision


def jacobian(
    adapter: ModelAdapter,
    proteins: Iterable[Protein | Skipped],
    *,
    max_length: int = 300,
    regression_proteins: int = 20,
    limit: int | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    progress: Callable[[int, int, float], None] | None = None,
    cache: str | Path | None = None,
) -> JacobianResult:
    """Categorical-Jacobian contacts of each evaluation protein, scored against its structure beside the
    contact regression, the best single head, the mean of the top-k heads and the positional template.

    Parameters
    ----------
    adapter : ModelAdapter
        A masked language model loaded with its head (``load_model(..., lm_head=True)``).
    proteins : iterable of Protein
        Proteins with coordinates. A seeded split gives the attention baselines' training proteins
        (`regression_proteins`) and the evaluation proteins; proteins longer than `max_length` residues are
        left out (the Jacobian costs ``20 L`` forward passes).
    max_length : int
        Longest protein (residues) evaluated.
    limit : int, optional
        Most evaluation proteins.
    batch_size : int, optional
        Substituted sequences per forward pass (all 20 substitutions of ``batch_size // 20`` positions; default
        `default_batch_size`: 20 on a CPU, 400 on a GPU).
    progress : callable, optional
        ``progress(done, total, seconds_of_last_protein)`` after each evaluation protein.
    cache : path, optional
        A directory for each protein's finished map: run again after an interruption, maps already there are
        read instead of computed (made under the same model, weights, precision and limits only).

    Returns
    -------
    JacobianResult
        ``table``: one row per evaluation protein and range (``short``, ``medium``, ``long``, ``all``) with
        ``chance`` (the share of contacts among the ranked pairs) and ``<method>_p_at_L``, ``_L2``, ``_L5``
        for each of `METHODS`: the Jacobian, the contact regression, the best head, the top-k heads and the
        positional template.

    Raises
    ------
    JacobianUnsupportedError
        For causal models and models without their language-model head.
    """
    check_jacobian_support(adapter)
    batch_size = batch_size or default_batch_size(adapter)
    started = time.perf_counter()
    # Maps and rows are keyed by id: repeated ids (a list built by hand; sources make theirs unique) are renamed.
    records = [p for p in unique_ids(proteins, "jacobian") if isinstance(p, Protein)]
    token_limit = min(adapter.max_length, max_length + adapter.tokenizer.n_special)
    fitting = [p for p in records if len(p) <= max_length]
    too_long = [p.id for p in records if len(p) > max_length]
    fitting, skipped = encodable(adapter, fitting, token_limit)
    train, evaluation = split_for_regression(fitting, regression_proteins, seed, limit)
    baselines = fit_contact_baselines(adapter, train, seed=seed, max_length=token_limit)
    regression, best = baselines.regression, baselines.best_head
    finished = None
    if cache is not None:
        finished = _MapCache(cache, {"model": adapter.name, "random_init": adapter.random_init,
                                     "init_seed": adapter.init_seed, "dtype": str(adapter.dtype),
                                     "token_limit": token_limit})  # fmt: skip
    rows, maps, seconds, resumed, computed_residues = [], {}, [], 0, 0
    position = {id(p): k for k, p in enumerate(records)}
    for done, protein in enumerate(evaluation):
        tick = time.perf_counter()
        # A finished map is found by the protein's position in the source, its id and its sequence: never
        # another protein's, whatever the ids.
        key = f"{position[id(protein)]}\0{protein.id}\0{protein.sequence}"
        coupling = finished.get(key) if finished is not None else None
        if coupling is None:
            coupling = protein_jacobian_contacts(adapter, protein, batch_size=batch_size, max_length=token_limit)
            seconds.append(time.perf_counter() - tick)
            computed_residues += coupling.shape[0]
            if finished is not None:
                finished.put(key, coupling)
        else:
            resumed += 1
        n = coupling.shape[0]
        cut = protein.first(n)
        contacts = contact_map(cut)
        maps[protein.id] = coupling
        if contacts.count():
            attention = adapter.attention(protein, max_length=token_limit).astype(np.float64)
            score_maps = {
                "jacobian": coupling,
                "regression": regression.predict(attention),
                "best_head": head_contact_scores(attention[best]),
                "top_heads": baselines.top_heads.predict(attention),
                "template": baselines.template.predict(cut),
            }
            precisions = {
                method: contact_precisions(scores, contacts, DIVISORS) for method, scores in score_maps.items()
            }
            for range_name in RANGES:
                row: dict[str, Any] = {"protein": protein.id, "length": n, "range": range_name}
                row["chance"] = precisions["jacobian"][(range_name, 1)][1]
                for method in METHODS:
                    for x in DIVISORS:
                        k = "L" if x == 1 else f"L{x}"
                        row[f"{method}_p_at_{k}"] = precisions[method][(range_name, x)][0]
                rows.append(row)
        if progress is not None:
            progress(done + 1, len(evaluation), seconds[-1] if seconds else 0.0)
    columns = ["protein", "length", "range", "chance"] + [
        f"{method}_p_at_{'L' if x == 1 else f'L{x}'}" for method in METHODS for x in DIVISORS
    ]
    info = {
        "model": {"name": adapter.name, "layers": adapter.n_layers, "heads": adapter.n_heads,
                  "random_init": adapter.random_init, "init_seed": adapter.init_seed},
        "device": str(adapter.device), "dtype": str(adapter.dtype).removeprefix("torch."),
        "max_length": max_length, "seed": seed, "batch_size": batch_size,
        "n_proteins": len(records), "n_too_long": len(too_long), "too_long": too_long[:50],
        "n_skipped": len(skipped), "skipped": skipped[:50], "n_resumed": resumed,
        "n_regression_proteins": len(train), "n_evaluation_proteins": len(evaluation),
        "regression_nonzero_features": int((regression.coef_ != 0).sum()),
        "best_head": {"layer": best[0] + 1, "head": best[1] + 1, "train_long_p_at_L5": baselines.best_head_precision},
        **baselines.info(),
        "seconds_per_protein": float(np.mean(seconds)) if seconds else None,
        "residues_per_second": float(computed_residues / sum(seconds)) if seconds else None,
        "wall_seconds": time.perf_counter() - started,
    }  # fmt: skip
    return JacobianResult(pd.DataFrame(rows, columns=columns), maps, info)
