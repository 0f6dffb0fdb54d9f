"""Head ablation: knock heads out one at a time and in groups, and measure what the model loses.

For each ablation (every head; every layer's heads; the top-k contact heads of an ``analyze`` run; random
groups of the same size, the control) the evaluation proteins go through the ablated model twice:

* language modelling: a fixed, seeded 15% of each protein's residues are masked at once and the masked-LM
  loss (mean negative log-likelihood of the true residues) and the share recovered (arg-max) are taken, for
  all masked residues and for masked binding-site (paratope) residues; a causal model predicts every residue
  from the ones before it instead;
* contacts: the contact regression, fitted once on the intact model's attention of separate training
  proteins, scores the ablated model's attention; long-range precision@L/5.

The regression reads attention maps, and an ablated head's own map is unchanged (only what the head writes is
removed), so the contact change measures what the later layers lose. Changes are against the intact model
on the same proteins and masks, with percentile intervals from a protein-level bootstrap (the same
resampled proteins for the intact and the ablated model).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from plmlens.causal.heads import HeadAblation, head_projections, mean_head_outputs
from plmlens.causal.jacobian import encodable, labelled_attention, split_for_regression
from plmlens.causal.statistics import loss_contact_correlation
from plmlens.models import ModelAdapter
from plmlens.models.tokenizers import STANDARD_RESIDUES
from plmlens.probing.metrics import contact_precisions
from plmlens.probing.regression import ContactRegression
from plmlens.proteins import Protein, contact_map
from plmlens.proteins.skips import Skipped
from plmlens.rundir import ABLATION, RunDir

#: Share of residues masked for the masked-LM loss.
MASK_FRACTION = 0.15
#: Per-protein sums kept for every ablation, in this order.
_COLUMNS = ("nll", "scored", "correct", "site_correct", "site_scored", "long_p_at_L5")
#: The statistics of ablation.csv: (column stem, how it is computed from the per-protein sums).
STATISTICS = ("loss", "recovery", "site_recovery", "contact_long_p_at_L5")


@dataclass(frozen=True)
class Ablation:
    """One set of heads knocked out together.

    Parameters
    ----------
    name : str
        Row label (``baseline``, ``head 3-2``, ``layer 3``, ``top 5 contact``, ``random 5 #1``).
    kind : {"baseline", "head", "layer", "top_contact", "random"}
    heads : tuple of (layer, head)
        0-based heads.
    """

    name: str
    kind: str
    heads: tuple[tuple[int, int], ...] = ()


def standard_ablations(
    n_layers: int,
    n_heads: int,
    *,
    top_heads: Sequence[tuple[int, int]] = (),
    random_groups: int = 10,
    group_size: int | None = None,
    seed: int = 0,
) -> list[Ablation]:
    """The baseline, every head alone, every layer's heads, the top contact heads, and seeded random groups
    of as many heads (drawn from all heads) as the control.

    Parameters
    ----------
    top_heads : sequence of (layer, head)
        0-based heads that align most with contacts (see :func:`top_contact_heads`).
    random_groups : int
        Random groups drawn.
    group_size : int, optional
        Heads per random group (default: as many as `top_heads`, else 5).
    """
    ablations = [Ablation("baseline", "baseline")]
    ablations += [
        Ablation(f"head {layer + 1}-{head + 1}", "head", ((layer, head),))
        for layer in range(n_layers)
        for head in range(n_heads)
    ]
    if n_layers > 1:
        ablations += [
            Ablation(f"layer {layer + 1}", "layer", tuple((layer, h) for h in range(n_heads)))
            for layer in range(n_layers)
        ]
    size = group_size or len(top_heads) or 5
    if top_heads:
        ablations.append(Ablation(f"top {len(top_heads)} contact", "top_contact", tuple(top_heads)))
    rng = np.random.default_rng([seed, 23])
    for k in range(random_groups):
        picks = rng.choice(n_layers * n_heads, size=min(size, n_layers * n_heads), replace=False)
        heads = tuple(sorted((int(p) // n_heads, int(p) % n_heads) for p in picks))
        ablations.append(Ablation(f"random {size} #{k + 1}", "random", heads))
    return ablations


def top_contact_heads(heads: pd.DataFrame | str | Path, k: int = 5, prop: str = "contact") -> list[tuple[int, int]]:
    """The `k` heads with the highest share of high-confidence attention on contacts in an ``analyze`` run
    (its ``heads.csv`` or directory), among heads with enough arcs (not ``few_arcs``); 0-based."""
    if not isinstance(heads, pd.DataFrame):
        path = Path(heads)
        path = path / "heads.csv" if path.is_dir() else path
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no heads.csv of an analyze run")
        heads = pd.read_csv(path)
    rows = heads[(heads["property"] == prop) & ~heads["few_arcs"].astype(bool)]
    if rows.empty:
        raise ValueError(f"the analyze run has no {prop} head with enough high-confidence arcs")
    rows = rows.sort_values(["proportion", "n_arcs"], ascending=False).head(k)
    return [(int(layer) - 1, int(head) - 1) for layer, head in zip(rows["layer"], rows["head"], strict=True)]


def _masked_positions(protein_index: int, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, 17, protein_index])
    return np.sort(rng.choice(n, size=max(1, round(MASK_FRACTION * n)), replace=False))


@dataclass
class _Evaluation:
    """The evaluation proteins cut to the model's limit, with their masks, labels and contact maps."""

    proteins: list[Protein]
    masks: list[np.ndarray] | None
    contacts: list[np.ma.MaskedArray]
    truth: list[np.ndarray] = field(default_factory=list)  # column of the true residue, -1 when not standard


def _prepare(adapter: ModelAdapter, proteins: Sequence[Protein], seed: int, max_length: int) -> _Evaluation:
    limit = min(max_length, adapter.max_length) - adapter.tokenizer.n_special
    cut = [p.first(limit) for p in proteins]
    columns = {c: k for k, c in enumerate(STANDARD_RESIDUES)}
    truth = [np.array([columns.get(c, -1) for c in p.sequence.upper()]) for p in cut]
    masks = None if adapter.causal else [_masked_positions(k, len(p), seed) for k, p in enumerate(cut)]
    return _Evaluation(cut, masks, [contact_map(p) for p in cut], truth)


def _evaluate(
    adapter: ModelAdapter,
    data: _Evaluation,
    regression: ContactRegression | None,
    *,
    batch_size: int,
    max_length: int,
) -> np.ndarray:
    """Per-protein sums (`_COLUMNS`) under whatever ablation is active."""
    sums = np.full((len(data.proteins), len(_COLUMNS)), np.nan)
    for start in range(0, len(data.proteins), batch_size):
        batch = data.proteins[start : start + batch_size]
        masks = None if data.masks is None else data.masks[start : start + batch_size]
        log_probs = adapter.residue_log_probs(batch, masked=masks, max_length=max_length)
        for b, (protein, lp) in enumerate(zip(batch, log_probs, strict=True)):
            k = start + b
            scored = np.arange(len(protein)) if masks is None else masks[b]
            if adapter.causal and not adapter.tokenizer.prefix:
                scored = scored[scored > 0]
            truth = data.truth[k][scored]
            keep = truth >= 0
            scored, truth = scored[keep], truth[keep]
            nll = -lp[scored, truth].astype(np.float64)
            correct = lp[scored].argmax(axis=1) == truth
            sums[k, :3] = nll.sum(), len(scored), correct.sum()
            if protein.binding_site is not None:
                site = protein.binding_site[scored]
                sums[k, 3:5] = correct[site].sum(), site.sum()
        if regression is not None:
            # Layer by layer: a deep model's attention over a batch need never be in memory at once.
            scores = [np.full((len(p), len(p)), regression.intercept_) for p in batch]
            for output in adapter.iter_layers(batch, max_length=max_length, hidden_states=False):
                for b, protein in enumerate(batch):
                    n = len(protein)
                    scores[b] += regression.layer_scores(output.layer, output.attention[b, :, :n, :n].numpy())
            for b in range(len(batch)):
                k = start + b
                if data.contacts[k].count():
                    sums[k, 5] = contact_precisions(scores[b], data.contacts[k], (5,))[("long", 5)][0]
    return sums


def _statistics(sums: np.ndarray, weights: np.ndarray) -> dict[str, np.ndarray]:
    """Each statistic under protein weights ``(replicates, proteins)`` (ones for the point estimate)."""

    def ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
        usable = ~np.isnan(numerator) & ~np.isnan(denominator)
        top = weights @ np.where(usable, numerator, 0.0)
        bottom = weights @ np.where(usable, denominator, 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(bottom > 0, top / np.where(bottom > 0, bottom, 1), np.nan)

    long = sums[:, 5]
    usable = ~np.isnan(long)
    return {
        "loss": ratio(sums[:, 0], sums[:, 1]),
        "recovery": ratio(sums[:, 2], sums[:, 1]),
        "site_recovery": ratio(sums[:, 3], sums[:, 4]),
        "contact_long_p_at_L5": ratio(np.where(usable, long, np.nan), usable.astype(float)),
    }


#: What a finished ablation run writes (into an analyze run directory, too): `AblationResult.save`'s data and the
#: figure the report draws from it (``ablation.png``/``.svg``); ``ablation.json`` marks a finished one.
ABLATION_OUTPUTS = ABLATION.outputs


@dataclass
class AblationResult:
    """One row per ablation (``table``) and the run's summary (``info``)."""

    table: pd.DataFrame
    info: dict

    def save(self, directory: str | Path, contact_heads: pd.DataFrame | None = None) -> dict[str, Path]:
        """Write ``ablation.csv`` and ``ablation.json`` atomically (data only: the report draws the figure,
        see ``plmlens.report.causal``).

        Parameters
        ----------
        contact_heads : DataFrame, optional
            The ``heads.csv`` of an analyze run of the same model: the correlation of the heads' loss increases
            with their contact alignment goes into ``info["loss_contact_correlation"]``.

        Returns
        -------
        dict of str to Path
            ``ablation`` (the table) and ``summary`` (the JSON).
        """
        out = RunDir(directory)
        correlation = loss_contact_correlation(self.table, self.info, contact_heads)
        if correlation is not None:
            self.info["loss_contact_correlation"] = correlation
        return {
            "ablation": out.write_table("ablation.csv", self.table),
            "summary": out.write_json("ablation.json", self.info, default=float),
        }


def _group_answer(table: pd.DataFrame, boot: dict[str, dict[str, np.ndarray]], statistic: str) -> dict | None:
    """Do the top contact heads matter more than random groups of as many heads, for one statistic?"""
    top = table[table["kind"] == "top_contact"]
    random = table[table["kind"] == "random"]
    if top.empty or random.empty:
        return None
    delta = f"delta_{statistic}"
    top_value = float(top[delta].iloc[0])
    values = random[delta].to_numpy(dtype=float)
    if not np.isfinite(top_value) or not np.isfinite(values).any():
        return None
    values = values[np.isfinite(values)]
    # A loss rises when a model loses something; recovery and contact precision fall.
    sign = 1.0 if statistic == "loss" else -1.0
    as_large = int(np.sum(sign * values >= sign * top_value))
    difference = boot[top["ablation"].iloc[0]][statistic] - np.nanmean(
        [boot[name][statistic] for name in random["ablation"]], axis=0
    )
    low, high = np.nanpercentile(difference, [2.5, 97.5]) if np.isfinite(difference).any() else (np.nan, np.nan)
    return {
        "top_contact": top_value,
        "random_mean": float(np.nanmean(values)),
        "random_min": float(np.nanmin(values)),
        "random_max": float(np.nanmax(values)),
        "random_groups": len(values),
        "random_as_large": as_large,
        "empirical_p": (1 + as_large) / (1 + len(values)),
        "difference": top_value - float(np.nanmean(values)),
        "difference_low": float(low),
        "difference_high": float(high),
    }


def answer_text(info: dict) -> str:
    """One sentence for the user's first question: do the contact heads matter more than random heads?"""
    answer = (info.get("question") or {}).get("loss")
    if answer is None:
        return "No top contact heads were given (--analysis RUN_DIR), so they were not compared with random heads."
    k = info["top_contact_heads"]["k"]
    if answer["difference_low"] > 0:
        verdict = "matter more than"
    elif answer["difference_high"] < 0:
        verdict = "matter less than"
    else:
        verdict = "do not clearly differ from"
    return (
        f"The top {k} contact heads {verdict} random groups of {k} heads: loss {answer['top_contact']:+.3f} nats "
        f"against {answer['random_mean']:+.3f} on average ({answer['random_as_large']} of "
        f"{answer['random_groups']} random groups as large; difference {answer['difference']:+.3f}, 95% bootstrap "
        f"interval {answer['difference_low']:+.3f} to {answer['difference_high']:+.3f})."
    )


def ablate(
    adapter: ModelAdapter,
    proteins: Iterable[Protein | Skipped],
    *,
    mode: str = "zero",
    top_heads: Sequence[tuple[int, int]] = (),
    random_groups: int = 10,
    ablations: Sequence[Ablation] | None = None,
    regression_proteins: int = 20,
    limit: int | None = None,
    seed: int = 0,
    batch_size: int = 8,
    max_length: int = 512,
    bootstrap: int = 1000,
    progress: Callable[[int, int], None] | None = None,
) -> AblationResult:
    """Ablate heads and measure the change in language-modelling loss, residue recovery (all residues and
    binding-site residues) and contact-regression precision.

    Parameters
    ----------
    adapter : ModelAdapter
        A model with its language-model head (``load_model(..., lm_head=True)``).
    proteins : iterable of Protein
        Proteins (binding-site labels and coordinates where available). A seeded split gives the contact
        regression's training proteins (`regression_proteins`, intact model) and the evaluation proteins.
    mode : {"zero", "mean"}
        Replace an ablated head's output by zero, or by its mean over the evaluation proteins' residues.
    top_heads : sequence of (layer, head)
        0-based top contact heads (:func:`top_contact_heads`), ablated together and against random groups.
    random_groups : int
        Random groups of ``len(top_heads)`` heads (5 without top heads).
    ablations : sequence of Ablation, optional
        Instead of :func:`standard_ablations`; a baseline is added when missing.
    limit : int, optional
        Most evaluation proteins.
    bootstrap : int
        Protein-level bootstrap replicates of the intervals.
    progress : callable, optional
        ``progress(done, total)`` after each ablation.

    Returns
    -------
    AblationResult
        ``table`` has, per ablation, each statistic (``loss``, ``recovery``, ``site_recovery``,
        ``contact_long_p_at_L5``), its change from the baseline (``delta_*``) and the change's interval
        (``delta_*_low``, ``delta_*_high``).
    """
    if adapter.lm_model is None:
        raise ValueError(f"{adapter.name} was loaded without its language-model head (load_model(..., lm_head=True))")
    head_projections(adapter)  # unsupported architectures fail before any work
    started = time.perf_counter()
    records = [p for p in proteins if isinstance(p, Protein)]
    usable, skipped = encodable(adapter, records, max_length)
    train, evaluation = split_for_regression(usable, regression_proteins, seed, limit)
    data = _prepare(adapter, evaluation, seed, max_length)
    regression = _fit_regression(adapter, train, seed, max_length)
    if ablations is None:
        ablations = standard_ablations(
            adapter.n_layers, adapter.n_heads, top_heads=top_heads, random_groups=random_groups, seed=seed
        )
    ablations = list(ablations)
    if not any(a.kind == "baseline" for a in ablations):
        ablations.insert(0, Ablation("baseline", "baseline"))
    means = (
        mean_head_outputs(adapter, data.proteins, batch_size=batch_size, max_length=max_length)
        if mode == "mean"
        else None
    )

    per_protein: dict[str, np.ndarray] = {}
    for done, ablation in enumerate(ablations):
        if ablation.heads:
            with HeadAblation(adapter, ablation.heads, mode=mode, means=means):
                per_protein[ablation.name] = _evaluate(
                    adapter, data, regression, batch_size=batch_size, max_length=max_length
                )
        else:
            per_protein[ablation.name] = _evaluate(
                adapter, data, regression, batch_size=batch_size, max_length=max_length
            )
        if progress is not None:
            progress(done + 1, len(ablations))

    # The top contact group as run (given as `top_heads`, or among custom `ablations`).
    top_group = next((a.heads for a in ablations if a.kind == "top_contact"), tuple(top_heads))
    n = len(data.proteins)
    rng = np.random.default_rng([seed, 29])
    weights = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(bootstrap)]).astype(float)
    ones = np.ones((1, n))
    base_name = next(a.name for a in ablations if a.kind == "baseline")
    base_point = _statistics(per_protein[base_name], ones)
    base_boot = _statistics(per_protein[base_name], weights)
    rows, boot_deltas = [], {}
    for ablation in ablations:
        sums = per_protein[ablation.name]
        point, boot = _statistics(sums, ones), _statistics(sums, weights)
        row: dict[str, Any] = {"ablation": ablation.name, "kind": ablation.kind}
        row["layer"] = ablation.heads[0][0] + 1 if ablation.kind in ("head", "layer") else None
        row["head"] = ablation.heads[0][1] + 1 if ablation.kind == "head" else None
        row["n_heads"] = len(ablation.heads)
        row["heads"] = " ".join(f"{layer + 1}-{head + 1}" for layer, head in ablation.heads)
        boot_deltas[ablation.name] = {}
        for statistic in STATISTICS:
            delta = boot[statistic] - base_boot[statistic]
            boot_deltas[ablation.name][statistic] = delta
            row[statistic] = float(point[statistic][0])
            row[f"delta_{statistic}"] = float(point[statistic][0] - base_point[statistic][0])
            finite = delta[np.isfinite(delta)]
            low, high = np.percentile(finite, [2.5, 97.5]) if len(finite) else (np.nan, np.nan)
            row[f"delta_{statistic}_low"], row[f"delta_{statistic}_high"] = float(low), float(high)
        rows.append(row)
    table = pd.DataFrame(rows)
    question = {statistic: _group_answer(table, boot_deltas, statistic) for statistic in STATISTICS}
    info = {
        "model": {"name": adapter.name, "layers": adapter.n_layers, "heads": adapter.n_heads,
                  "causal": adapter.causal, "random_init": adapter.random_init, "init_seed": adapter.init_seed},
        "mode": mode, "seed": seed, "mask_fraction": None if adapter.causal else MASK_FRACTION,
        "objective": "next-token loss" if adapter.causal else "masked-LM loss (one fixed 15% mask per protein)",
        "n_proteins": len(records), "n_skipped": len(skipped), "skipped": skipped[:50],
        "n_regression_proteins": len(train), "n_evaluation_proteins": n,
        "evaluation_ids": [p.id for p in data.proteins],
        "n_binding_site_proteins": int(sum(p.binding_site is not None for p in data.proteins)),
        "bootstrap": bootstrap, "n_ablations": len(ablations),
        "top_contact_heads": {"k": len(top_group), "heads": [f"{layer + 1}-{head + 1}" for layer, head in top_group]},
        "question": {k: v for k, v in question.items() if v is not None} or None,
        "wall_seconds": time.perf_counter() - started,
    }  # fmt: skip
    info["answer"] = answer_text(info)
    return AblationResult(table, info)


def _fit_regression(
    adapter: ModelAdapter, train: Sequence[Protein], seed: int, max_length: int
) -> ContactRegression | None:
    """The contact regression on the intact model's attention of the training proteins; None when they have
    no contacts (or no non-contacts) to fit on."""
    labelled = list(labelled_attention(adapter, train, max_length))
    if not labelled:
        return None
    try:
        return ContactRegression(random_state=seed).fit(*zip(*labelled, strict=True))
    except ValueError:
        return None
