"""Head ablation: knock heads out one at a time and in groups, and measure what the model loses.

For each ablation (every head; every layer's heads; the top-k contact heads of an ``analyze`` run; random
groups of the same size, the control) the evaluation proteins go through the ablated model twice:

* language modelling: a fixed, seeded 15% of each protein's residues are masked at once and the masked-LM
  loss (mean negative log-likelihood of the true residues) and the share recovered (arg-max) are taken, for
  all masked residues and for masked binding-site (paratope) residues; a causal model predicts every residue
  from the ones before it instead;
* contacts: the contact regression, fitted once on the intact model's attention of separate training
  proteins, scores the ablated model's attention; long-range precision@L/5. Beside the intact model's, the
  run records the floors it is judged against on the same proteins (``info["contact_floors"]``): the mean of
  the top-k heads and the positional template, fitted on the same training proteins.

The regression reads attention maps, and an ablated head's own map is unchanged (only what the head writes is
removed), so the contact change measures what the later layers lose. Changes are against the intact model
on the same proteins and masks, with percentile intervals from a protein-level bootstrap (the same
resampled proteins for the intact and the ablated model).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from plmlens.causal.heads import GroupAblation, HeadAblation, head_projections, mean_head_outputs
from plmlens.causal.jacobian import ContactBaselines, encodable, fit_contact_baselines, split_for_regression
from plmlens.causal.statistics import CONTROLS, loss_contact_correlation
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
        Row label (``baseline``, ``head 3-2``, ``layer 3``, ``top 5 contact``, ``random 5 #1``,
        ``layer-matched 5 #1``).
    kind : {"baseline", "head", "layer", "top_contact", "random", "layer_matched"}
    heads : tuple of (layer, head)
        0-based heads.
    """

    name: str
    kind: str
    heads: tuple[tuple[int, int], ...] = ()


#: Random groups drawn by default: enough for the top group's rank among them to mean something (the
#: smallest two-sided p-value is 2 / (groups + 1)).
RANDOM_GROUPS = 100
#: Seeded masks per protein by default, so that no verdict hinges on one draw.
MASK_DRAWS = 3
#: Level of the verdict's test.
ALPHA = 0.05


def standard_ablations(
    n_layers: int,
    n_heads: int,
    *,
    top_heads: Sequence[tuple[int, int]] = (),
    random_groups: int = RANDOM_GROUPS,
    layer_matched_groups: int | None = None,
    group_size: int | None = None,
    seed: int = 0,
) -> list[Ablation]:
    """The baseline, every head alone, every layer's heads, the top contact heads, and two controls: seeded
    random groups of as many heads drawn from all heads, and layer-matched groups drawn from the same layers
    as the top heads, as many from each.

    Parameters
    ----------
    top_heads : sequence of (layer, head)
        0-based heads that align most with contacts (see :func:`top_contact_heads`).
    random_groups : int
        Random groups drawn (from all heads).
    layer_matched_groups : int, optional
        Layer-matched groups drawn (default: as many as `random_groups`; none without `top_heads`). Whether a
        group holds a head a layer cannot do without otherwise decides the comparison.
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
    if top_heads:
        matched = random_groups if layer_matched_groups is None else layer_matched_groups
        ablations += _layer_matched(top_heads, n_heads, matched, seed)
    return ablations


def _layer_matched(top_heads: Sequence[tuple[int, int]], n_heads: int, groups: int, seed: int) -> list[Ablation]:
    """Seeded groups with as many heads from each layer as `top_heads` has there, drawn within the layer."""
    per_layer: dict[int, int] = {}
    for layer, _ in set(top_heads):
        per_layer[layer] = per_layer.get(layer, 0) + 1
    rng = np.random.default_rng([seed, 31])
    size = sum(per_layer.values())
    ablations = []
    for k in range(groups):
        heads = [(layer, int(h)) for layer in sorted(per_layer) for h in rng.choice(n_heads, per_layer[layer], False)]
        ablations.append(Ablation(f"layer-matched {size} #{k + 1}", "layer_matched", tuple(sorted(heads))))
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


def _masked_positions(protein_index: int, n: int, seed: int, draw: int = 0) -> np.ndarray:
    """The `draw`-th seeded mask of a protein (`MASK_FRACTION` of its residues); draw 0 is the mask of runs
    with one draw."""
    key = [seed, 17, protein_index] if draw == 0 else [seed, 17, protein_index, draw]
    rng = np.random.default_rng(key)
    return np.sort(rng.choice(n, size=max(1, round(MASK_FRACTION * n)), replace=False))


@dataclass
class _Evaluation:
    """The evaluation proteins cut to the model's limit, with their masks (per draw), labels and contact maps."""

    proteins: list[Protein]
    masks: list[list[np.ndarray]] | None  # [draw][protein]; None for a causal model (every residue scored)
    contacts: list[np.ma.MaskedArray]
    truth: list[np.ndarray] = field(default_factory=list)  # column of the true residue, -1 when not standard

    @property
    def n_draws(self) -> int:
        return 1 if self.masks is None else len(self.masks)


def _prepare(
    adapter: ModelAdapter, proteins: Sequence[Protein], seed: int, max_length: int, mask_draws: int = 1
) -> _Evaluation:
    limit = min(max_length, adapter.max_length) - adapter.tokenizer.n_special
    cut = [p.first(limit) for p in proteins]
    columns = {c: k for k, c in enumerate(STANDARD_RESIDUES)}
    truth = [np.array([columns.get(c, -1) for c in p.sequence.upper()]) for p in cut]
    masks = None
    if not adapter.causal:
        masks = [[_masked_positions(k, len(p), seed, draw) for k, p in enumerate(cut)] for draw in range(mask_draws)]
    return _Evaluation(cut, masks, [contact_map(p) for p in cut], truth)


def _evaluate(
    adapter: ModelAdapter,
    data: _Evaluation,
    regression: ContactRegression | None,
    *,
    batch_size: int,
    max_length: int,
) -> np.ndarray:
    """Per-protein sums (`_COLUMNS`) under whatever ablation is active, shape (proteins, mask draws, columns);
    the contact precision does not depend on the masks and is in every draw."""
    return _evaluate_copies(adapter, data, regression, 1, batch_size=batch_size, max_length=max_length)[0]


def _evaluate_copies(
    adapter: ModelAdapter,
    data: _Evaluation,
    regression: ContactRegression | None,
    copies: int,
    *,
    batch_size: int,
    max_length: int,
) -> np.ndarray:
    """`_evaluate` of every batch repeated `copies` times in one forward pass (a `GroupAblation` gives each copy
    its group), shape (copies, proteins, mask draws, columns)."""
    sums = np.full((copies, len(data.proteins), data.n_draws, len(_COLUMNS)), np.nan)
    for start in range(0, len(data.proteins), batch_size):
        batch = data.proteins[start : start + batch_size]
        rows = slice(start, start + len(batch))
        for draw in range(data.n_draws):
            masks = None if data.masks is None else data.masks[draw][rows] * copies
            found = _language_model_sums(adapter, data, start, batch * copies, masks, max_length, copies)
            sums[:, rows, draw, :5] = found.reshape(copies, len(batch), 5)
        if regression is not None:
            precisions = _contact_precisions(adapter, data, start, batch * copies, regression, max_length, copies)
            sums[:, rows, :, 5] = precisions.reshape(copies, len(batch))[:, :, None]
    return sums


def _language_model_sums(
    adapter: ModelAdapter,
    data: _Evaluation,
    start: int,
    batch: Sequence[Protein],
    masks: Sequence[np.ndarray] | None,
    max_length: int,
    copies: int = 1,
) -> np.ndarray:
    """The first five `_COLUMNS` of each row of `batch` (the proteins from `start` on, `copies` times) under
    `masks`."""
    sums = np.full((len(batch), 5), np.nan)
    log_probs = adapter.residue_log_probs(batch, masked=masks, max_length=max_length)
    width = len(batch) // copies
    for b, (protein, lp) in enumerate(zip(batch, log_probs, strict=True)):
        scored = np.arange(len(protein)) if masks is None else masks[b]
        if adapter.causal and not adapter.tokenizer.prefix:
            scored = scored[scored > 0]
        truth = data.truth[start + b % width][scored]
        keep = truth >= 0
        scored, truth = scored[keep], truth[keep]
        nll = -lp[scored, truth].astype(np.float64)
        correct = lp[scored].argmax(axis=1) == truth
        sums[b, :3] = nll.sum(), len(scored), correct.sum()
        if protein.binding_site is not None:
            site = protein.binding_site[scored]
            sums[b, 3:5] = correct[site].sum(), site.sum()
    return sums


def _contact_precisions(
    adapter: ModelAdapter,
    data: _Evaluation,
    start: int,
    batch: Sequence[Protein],
    regression: ContactRegression,
    max_length: int,
    copies: int = 1,
) -> np.ndarray:
    """Long-range precision@L/5 of the contact regression on each row of `batch` (the proteins from `start` on,
    `copies` times; NaN without contacts)."""
    # Layer by layer: a deep model's attention over a batch need never be in memory at once.
    scores = [np.full((len(p), len(p)), regression.intercept_) for p in batch]
    for output in adapter.iter_layers(batch, max_length=max_length, hidden_states=False):
        for b, protein in enumerate(batch):
            n = len(protein)
            scores[b] += regression.layer_scores(output.layer, output.attention[b, :, :n, :n].numpy())
    width = len(batch) // copies
    precisions = np.full(len(batch), np.nan)
    for b in range(len(batch)):
        contacts = data.contacts[start + b % width]
        if contacts.count():
            precisions[b] = contact_precisions(scores[b], contacts, (5,))[("long", 5)][0]
    return precisions


def _statistics(sums: np.ndarray, weights: np.ndarray, draws: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Each statistic of per-protein, per-draw sums ``(proteins, draws, columns)`` under protein weights
    ``(replicates, proteins)`` and mask-draw weights ``(replicates, proteins, draws)`` (default: every draw
    once); ones give the point estimate.

    The loss and recoveries are ratios of sums over proteins and their mask draws; the contact precision, which
    no mask changes, is the weighted mean over proteins with contacts.
    """
    per_draw = np.ones(sums.shape[1]) if draws is None else draws
    combined = (weights[:, :, None] * per_draw).reshape(len(weights), -1)

    def ratio(numerator: np.ndarray, denominator: np.ndarray, by: np.ndarray) -> np.ndarray:
        usable = ~np.isnan(numerator) & ~np.isnan(denominator)
        top = by @ np.where(usable, numerator, 0.0)
        bottom = by @ np.where(usable, denominator, 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(bottom > 0, top / np.where(bottom > 0, bottom, 1), np.nan)

    flat = sums.reshape(-1, sums.shape[2])
    long = sums[:, 0, 5]
    usable = ~np.isnan(long)
    return {
        "loss": ratio(flat[:, 0], flat[:, 1], combined),
        "recovery": ratio(flat[:, 2], flat[:, 1], combined),
        "site_recovery": ratio(flat[:, 3], flat[:, 4], combined),
        "contact_long_p_at_L5": ratio(np.where(usable, long, np.nan), usable.astype(float), weights),
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


def compare_with_groups(
    top: float,
    top_boot: np.ndarray,
    groups: np.ndarray,
    groups_boot: np.ndarray,
    *,
    larger_matters: bool = True,
    alpha: float = ALPHA,
    seed: int = 0,
) -> dict[str, Any] | None:
    """Where the top group's change stands among the changes of control groups of as many heads.

    Parameters
    ----------
    top : float
        The top group's change (e.g. its Δ loss).
    top_boot : ndarray, shape (replicates,)
        Its bootstrap replicates (over proteins and mask draws).
    groups : ndarray, shape (groups,)
        Each control group's change.
    groups_boot : ndarray, shape (groups, replicates)
        Their replicates, from the same resamples as `top_boot`.
    larger_matters : bool
        Whether a larger change means the heads matter more (a loss rises; a recovery falls).
    alpha : float
        Level of the two-sided test.
    seed : int
        Seed of the resampling of the groups in the interval.

    Returns
    -------
    dict or None
        ``top``, the groups' ``median``, ``q05`` and ``q95``, ``n_groups``, ``rank_as_large`` (groups whose change
        is at least the top group's, in the direction of mattering), ``p_value`` (two-sided, empirical, with
        the +1 correction: ``2 min(1 + as large, 1 + as small) / (groups + 1)``, at most 1), ``min_p_value``
        (the smallest that as many groups can give), ``difference`` (top − median) with ``difference_low`` and
        ``difference_high`` (95%, over proteins, mask draws and a redraw of the groups), and ``verdict``:
        ``"more than"`` or ``"less than"`` when p ≤ `alpha` and the interval lies on that side of zero, else
        ``"not different from"``. None without a finite top value or finite group values.
    """
    keep = np.isfinite(groups)
    if not np.isfinite(top) or not keep.any():
        return None
    values, boot = groups[keep], groups_boot[keep]
    sign = 1.0 if larger_matters else -1.0
    n = len(values)
    as_large = int(np.sum(sign * values >= sign * top))
    as_small = int(np.sum(sign * values <= sign * top))
    p_value = min(1.0, 2 * min(1 + as_large, 1 + as_small) / (n + 1))
    # Each replicate redraws the groups too: the interval holds the choice of groups as well as the proteins.
    rng = np.random.default_rng([seed, 41])
    picks = rng.integers(0, n, size=(boot.shape[1], n))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a replicate without finite groups is NaN, and left out
        medians = np.nanmedian(np.take_along_axis(boot.T, picks, axis=1), axis=1)
    difference = top_boot - medians
    finite = difference[np.isfinite(difference)]
    low, high = np.percentile(finite, [2.5, 97.5]) if len(finite) else (np.nan, np.nan)
    median = float(np.median(values))
    matters = sign * np.array([low, high])
    verdict = "not different from"
    if p_value <= alpha and np.nanmin(matters) > 0:
        verdict = "more than"
    elif p_value <= alpha and np.nanmax(matters) < 0:
        verdict = "less than"
    return {
        "top": float(top), "median": median, "q05": float(np.quantile(values, 0.05)),
        "q95": float(np.quantile(values, 0.95)), "n_groups": n, "rank_as_large": as_large, "p_value": p_value,
        "min_p_value": min(1.0, 2 / (n + 1)), "difference": float(top) - median, "difference_low": float(low),
        "difference_high": float(high), "verdict": verdict,
    }  # fmt: skip


def _question(table: pd.DataFrame, boot: dict[str, dict[str, np.ndarray]], statistic: str, seed: int) -> dict:
    """`compare_with_groups` of the top contact group against each control (`CONTROLS`) present, for one
    statistic."""
    top = table[table["kind"] == "top_contact"]
    if top.empty:
        return {}
    top_name, delta = top["ablation"].iloc[0], f"delta_{statistic}"
    answers = {}
    for kind in CONTROLS:
        rows = table[table["kind"] == kind]
        if rows.empty:
            continue
        answer = compare_with_groups(
            float(top[delta].iloc[0]), boot[top_name][statistic], rows[delta].to_numpy(dtype=float),
            np.stack([boot[name][statistic] for name in rows["ablation"]]),
            larger_matters=statistic == "loss", seed=seed,
        )  # fmt: skip
        if answer is not None:
            answers[kind] = answer
    return answers


_VERDICT_PHRASES = {"more than": "matter more than", "less than": "matter less than",
                    "not different from": "are not shown to differ from"}  # fmt: skip


def _control_sentence(answer: dict, control: str, k: int) -> str:
    """What one control says, with the numbers it rests on."""
    sentence = (
        f"against {answer['n_groups']} {control} of {k} heads (median {answer['median']:+.3f}, 5–95% "
        f"{answer['q05']:+.3f} to {answer['q95']:+.3f}; {answer['rank_as_large']} cost at least as much), they "
        f"{_VERDICT_PHRASES[answer['verdict']]} those: two-sided p = "
        f"{answer['p_value']:.3g}, difference from the median {answer['difference']:+.3f} nats (95% interval "
        f"{answer['difference_low']:+.3f} to {answer['difference_high']:+.3f}, over proteins, mask draws and groups)"
    )
    if answer["min_p_value"] > ALPHA:
        sentence += (
            f" — with only {answer['n_groups']} groups p cannot fall below {answer['min_p_value']:.2g}, so no "
            f"difference could be shown; draw more groups (--random-groups)"
        )
    return sentence


def answer_text(info: dict) -> str:
    """The answer to the user's first question, with the numbers it rests on: do the top contact heads
    matter more than random groups of as many heads (and than layer-matched ones)?"""
    answers = (info.get("question") or {}).get("loss") or {}
    if not answers:
        return "No top contact heads were given (--analysis RUN_DIR), so they were not compared with random heads."
    k = info["top_contact_heads"]["k"]
    first = next(iter(answers.values()))
    parts = [_control_sentence(answers[kind], CONTROLS[kind], k) for kind in CONTROLS if kind in answers]
    return f"Ablating the top {k} contact heads changes the loss by {first['top']:+.3f} nats; " + "; ".join(parts) + "."


def ablate(
    adapter: ModelAdapter,
    proteins: Iterable[Protein | Skipped],
    *,
    mode: str = "zero",
    top_heads: Sequence[tuple[int, int]] = (),
    random_groups: int = RANDOM_GROUPS,
    layer_matched_groups: int | None = None,
    mask_draws: int = MASK_DRAWS,
    groups_per_pass: int = 1,
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
        Random groups of ``len(top_heads)`` heads (5 without top heads), drawn from all heads.
    layer_matched_groups : int, optional
        Groups with as many heads from each layer as the top heads (default: `random_groups`).
    mask_draws : int
        Seeded masks per protein (masked models); the statistics pool them and the intervals resample them.
    groups_per_pass : int
        Control groups evaluated together, each on its own copy of a batch (`GroupAblation`); 1 runs them one
        by one. The numbers agree with one-by-one runs to the model's float rounding. On a CPU it measured no
        faster (``benchmarks/ablation_groups_benchmark.py``), hence the default; on a GPU, whose passes are
        not full with one batch, it is meant to be.
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
    if mask_draws < 1 or groups_per_pass < 1:
        raise ValueError(f"mask_draws and groups_per_pass must be at least 1, got {mask_draws}, {groups_per_pass}")
    data = _prepare(adapter, evaluation, seed, max_length, mask_draws)
    baselines = _fit_baselines(adapter, train, seed, max_length)
    regression = baselines.regression if baselines is not None else None
    if ablations is None:
        ablations = standard_ablations(adapter.n_layers, adapter.n_heads, top_heads=top_heads,
                                       random_groups=random_groups, layer_matched_groups=layer_matched_groups,
                                       seed=seed)  # fmt: skip
    ablations = list(ablations)
    if not any(a.kind == "baseline" for a in ablations):
        ablations.insert(0, Ablation("baseline", "baseline"))
    means = (
        mean_head_outputs(adapter, data.proteins, batch_size=batch_size, max_length=max_length)
        if mode == "mean"
        else None
    )

    settings = {"mode": mode, "means": means, "groups_per_pass": groups_per_pass, "batch_size": batch_size,
                "max_length": max_length}  # fmt: skip
    per_protein, seconds = _run_ablations(adapter, ablations, data, regression, settings, progress)
    table, boot_deltas = _table(ablations, per_protein, data, bootstrap, seed)
    question = {statistic: _question(table, boot_deltas, statistic, seed) for statistic in STATISTICS}
    # The top contact group as run (given as `top_heads`, or among custom `ablations`).
    top_group = next((a.heads for a in ablations if a.kind == "top_contact"), tuple(top_heads))
    objective = "next-token loss" if adapter.causal else f"masked-LM loss ({data.n_draws} seeded 15% masks per protein)"
    info = {
        "model": {"name": adapter.name, "layers": adapter.n_layers, "heads": adapter.n_heads,
                  "causal": adapter.causal, "random_init": adapter.random_init, "init_seed": adapter.init_seed},
        "mode": mode, "seed": seed, "mask_fraction": None if adapter.causal else MASK_FRACTION,
        "mask_draws": data.n_draws, "objective": objective,
        "n_proteins": len(records), "n_skipped": len(skipped), "skipped": skipped[:50],
        "n_regression_proteins": len(train), "n_evaluation_proteins": len(data.proteins),
        "evaluation_ids": [p.id for p in data.proteins],
        "n_binding_site_proteins": int(sum(p.binding_site is not None for p in data.proteins)),
        "bootstrap": bootstrap, "n_ablations": len(ablations),
        "top_contact_heads": {"k": len(top_group), "heads": [f"{layer + 1}-{head + 1}" for layer, head in top_group]},
        "question": {k: v for k, v in question.items() if v} or None,
        "groups_per_pass": groups_per_pass,
        "seconds_per_ablation": float(np.mean(seconds["single"])) if seconds["single"] else None,
        "seconds_per_group": float(np.mean(seconds["group"])) if seconds["group"] else None,
        "wall_seconds": time.perf_counter() - started,
    }  # fmt: skip
    info["contact_floors"] = _contact_floors(adapter, data, baselines, table, max_length)
    info["answer"] = answer_text(info)
    return AblationResult(table, info)


def _run_ablations(
    adapter: ModelAdapter,
    ablations: Sequence[Ablation],
    data: _Evaluation,
    regression: ContactRegression | None,
    settings: dict[str, Any],
    progress: Callable[[int, int], None] | None,
) -> tuple[dict[str, np.ndarray], dict[str, list[float]]]:
    """Each ablation's per-protein sums (`_evaluate`), and the seconds per ablation of single runs and of the
    control groups, which run `settings["groups_per_pass"]` at a time (`GroupAblation`)."""
    mode, means, per_pass = settings["mode"], settings["means"], settings["groups_per_pass"]
    sizes = {"batch_size": settings["batch_size"], "max_length": settings["max_length"]}
    singles = [a for a in ablations if a.kind not in CONTROLS or per_pass == 1]
    controls = [a for a in ablations if a.kind in CONTROLS and per_pass > 1]
    per_protein: dict[str, np.ndarray] = {}
    seconds: dict[str, list[float]] = {"single": [], "group": []}
    for ablation in singles:
        started = time.perf_counter()
        with HeadAblation(adapter, ablation.heads, mode=mode, means=means) if ablation.heads else nullcontext():
            per_protein[ablation.name] = _evaluate(adapter, data, regression, **sizes)
        seconds["single" if ablation.kind not in CONTROLS else "group"].append(time.perf_counter() - started)
        if progress is not None:
            progress(len(per_protein), len(ablations))
    for first in range(0, len(controls), per_pass):
        chunk = controls[first : first + per_pass]
        started = time.perf_counter()
        with GroupAblation(adapter, [a.heads for a in chunk], mode=mode, means=means):
            found = _evaluate_copies(adapter, data, regression, len(chunk), **sizes)
        per_protein.update({a.name: found[g] for g, a in enumerate(chunk)})
        seconds["group"] += [(time.perf_counter() - started) / len(chunk)] * len(chunk)
        if progress is not None:
            progress(len(per_protein), len(ablations))
    return per_protein, seconds


def _table(
    ablations: Sequence[Ablation], per_protein: dict[str, np.ndarray], data: _Evaluation, bootstrap: int, seed: int
) -> tuple[pd.DataFrame, dict[str, dict[str, np.ndarray]]]:
    """The ablation table (statistics, their change from the baseline and its 95% interval), and each
    ablation's replicates of the changes, over proteins and, within each protein, its mask draws."""
    n = len(data.proteins)
    rng = np.random.default_rng([seed, 29])
    weights = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(bootstrap)]).astype(float)
    draws = None
    if data.n_draws > 1:
        draw_rng = np.random.default_rng([seed, 37])
        draws = draw_rng.multinomial(data.n_draws, np.full(data.n_draws, 1 / data.n_draws), size=(bootstrap, n))
    ones = np.ones((1, n))
    base_name = next(a.name for a in ablations if a.kind == "baseline")
    base_point = _statistics(per_protein[base_name], ones)
    base_boot = _statistics(per_protein[base_name], weights, draws)
    rows, boot_deltas = [], {}
    for ablation in ablations:
        sums = per_protein[ablation.name]
        point, boot = _statistics(sums, ones), _statistics(sums, weights, draws)
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
    return pd.DataFrame(rows), boot_deltas


def _fit_baselines(
    adapter: ModelAdapter, train: Sequence[Protein], seed: int, max_length: int
) -> ContactBaselines | None:
    """The contact regression (and the floors beside it) on the intact model's attention of the training
    proteins; None when they have no contacts (or no non-contacts) to fit on."""
    try:
        return fit_contact_baselines(adapter, train, seed=seed, max_length=max_length)
    except ValueError:
        return None


def _contact_floors(
    adapter: ModelAdapter, data: _Evaluation, baselines: ContactBaselines | None, table: pd.DataFrame, max_length: int
) -> dict[str, Any] | None:
    """Long-range precision@L/5 of the intact model's contact regression (the baseline row's) beside the top-k
    heads and the positional template on the same evaluation proteins, with the chance level
    (``long_p_at_L5``), and which heads and template they are (`ContactBaselines.info`); None without a
    regression. Means over the proteins with contacts, as the regression's."""
    if baselines is None:
        return None
    found: dict[str, list[float]] = {"top_heads": [], "template": [], "chance": []}
    for protein, contacts in zip(data.proteins, data.contacts, strict=True):
        if not contacts.count():
            continue
        attention = adapter.attention(protein, max_length=max_length).astype(np.float64)
        for method, scores in (("top_heads", baselines.top_heads.predict(attention)),
                               ("template", baselines.template.predict(protein))):  # fmt: skip
            precision, chance = contact_precisions(scores, contacts, (5,))[("long", 5)]
            found[method].append(precision)
        found["chance"].append(chance)

    def mean(values: list[float]) -> float | None:
        finite = [v for v in values if not np.isnan(v)]
        return float(np.mean(finite)) if finite else None

    baseline = table[table["kind"] == "baseline"]["contact_long_p_at_L5"]
    precisions = {"regression": float(baseline.iloc[0]) if len(baseline) else None,
                  **{method: mean(values) for method, values in found.items()}}  # fmt: skip
    return {"long_p_at_L5": precisions, **baselines.info()}
