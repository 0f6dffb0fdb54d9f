"""From accumulated sums to the paper's statistics: proportions, tests, intervals, layer profiles,
amino-acid tables and the BLOSUM62 comparison."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.proportion import proportion_confint, proportions_ztest

from plmlens.analysis.accumulator import Accumulator
from plmlens.analysis.nulls import NULL_KINDS, null_name, split_null_name
from plmlens.proteins import STANDARD_AMINO_ACIDS
from plmlens.rundir import AMINO_ACIDS, ANALYSIS, HEADS, LAYERS, SHARD, SUMMARY, RunDir

#: Heads with fewer high-confidence arcs are flagged (the paper reports only heads with at least 100).
MIN_ARCS = 100

HEAD_COLUMNS = [
    "property", "layer", "head", "n_arcs", "n_hits", "proportion", "weighted_proportion", "background",
    "z", "p_value", "p_bonferroni", "ci_low", "ci_high", "significant", "few_arcs",
    "null_proportion", "null_weighted_proportion", "boot_ci_low", "boot_ci_high",
]  # fmt: skip
#: Per positional null (`plmlens.analysis.nulls`): its proportion (Eq. 1) and weighted proportion (Eq. 3), the
#: head's enrichment over it (proportion / null), and the one-sided test that the head exceeds it.
NULL_COLUMNS = ("null", "weighted_null", "enrichment", "p_bonferroni", "significant")
POSITIONAL_COLUMNS = [f"{kind}_{column}" for kind in NULL_KINDS for column in NULL_COLUMNS]


#: What `AnalysisResult.save` writes (see `plmlens.rundir`); ``summary.json`` marks a finished run.
RUN_OUTPUTS = ANALYSIS.outputs
#: What a shard of a run (``analyze --shard i/K``) writes; ``shard.json`` marks a finished shard.
SHARD_OUTPUTS = SHARD.outputs


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1), np.nan)


def two_proportion_test(
    hits: float, arcs: float, background_hits: float, background_total: float
) -> tuple[float, float]:
    """One-sided two-proportion z-test that a head's proportion exceeds the background (appendix B.2).

    Returns ``(z, p)``; NaN when either sample is empty or both proportions are 0 or 1.
    """
    if arcs <= 0 or background_total <= 0:
        return math.nan, math.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        z, p = proportions_ztest(
            [hits, background_hits], [arcs, background_total], alternative="larger", prop_var=False
        )
    return float(z), float(p)


def null_test(hits: float, arcs: float, null: float) -> tuple[float, float]:
    """One-sided test that a head's proportion ``hits / arcs`` exceeds a positional null proportion.

    Under the null each arc holds the property with its own rate, averaging `null`; the binomial variance
    ``arcs · null · (1 − null)`` bounds the variance of that sum of Bernoulli draws from above, so the test is
    conservative. Returns ``(z, p)``; NaN without arcs or when `null` is 0, 1 or NaN.
    """
    if arcs <= 0 or not 0 < null < 1:
        return math.nan, math.nan
    z = (hits - arcs * null) / math.sqrt(arcs * null * (1 - null))
    return float(z), float(stats.norm.sf(z))


def centre_of_gravity(layer_values: np.ndarray) -> float:
    """Centre of gravity of a property across layers (figure 4).

    ``CoG = Σ_ℓ ℓ · p̄_ℓ / Σ_ℓ p̄_ℓ`` with layers ℓ = 1 … L (1-based) and p̄_ℓ the layer's mean over heads
    of the Eq. 1 proportion (heads without high-confidence arcs left out of the mean; a layer without any
    counts as 0). NaN when every p̄_ℓ is 0.
    """
    values = np.nan_to_num(np.asarray(layer_values, dtype=float))
    total = values.sum()
    return float((np.arange(1, len(values) + 1) * values).sum() / total) if total > 0 else math.nan


def blosum62() -> np.ndarray:
    """BLOSUM62 scores (20 × 20) in the order of `STANDARD_AMINO_ACIDS`, from biotite."""
    from biotite.sequence.align import SubstitutionMatrix

    matrix = SubstitutionMatrix.std_protein_matrix()
    alphabet = matrix.get_alphabet1()
    codes = [alphabet.encode(letter) for letter in STANDARD_AMINO_ACIDS]
    return matrix.score_matrix()[np.ix_(codes, codes)].astype(float)


def blosum_correlation(profiles: np.ndarray) -> tuple[np.ndarray, float]:
    """Attention similarity of amino acids and its agreement with BLOSUM62 (figure 7).

    Parameters
    ----------
    profiles : ndarray (20, n_heads)
        Each amino acid's per-head attention proportion (heads with enough arcs).

    Returns
    -------
    similarity : ndarray (20, 20)
        Pearson correlation between the amino acids' per-head profiles.
    r : float
        Pearson correlation between `similarity` and BLOSUM62 over the 190 distinct pairs (i < j).
    """
    usable = np.isfinite(profiles).all(axis=0)
    if usable.sum() < 3:
        return np.full((20, 20), np.nan), math.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        similarity = np.corrcoef(profiles[:, usable])
    upper = np.triu_indices(20, k=1)
    values, reference = similarity[upper], blosum62()[upper]
    finite = np.isfinite(values)
    if finite.sum() < 3:
        return similarity, math.nan
    return similarity, float(stats.pearsonr(values[finite], reference[finite]).statistic)


@dataclass
class AnalysisResult:
    """Statistics of one analysis run, computed from an `Accumulator`.

    Parameters
    ----------
    accumulator : Accumulator
    alpha : float
        Family-wise significance level; tests and intervals are Bonferroni-corrected over all
        ``n_layers × n_heads`` heads.
    info : dict
        Provenance for ``summary.json`` (model, source, skipped records, timings, ...).
    """

    accumulator: Accumulator
    alpha: float = 0.05
    info: dict = field(default_factory=dict)

    @property
    def n_tests(self) -> int:
        return self.accumulator.n_layers * self.accumulator.n_heads

    def backgrounds(self) -> dict[str, float | None]:
        """Per property: share of defined pairs (pair properties) or residues (token) with f = 1."""
        acc = self.accumulator
        hits, total = acc.sums["background_hits"], acc.sums["background_total"]
        return {
            name: (float(hits[i] / total[i]) if total[i] > 0 else None)
            for i, name in enumerate(acc.property_names)
            if split_null_name(name) is None
        }

    def nulls(self) -> list[str]:
        """The positional nulls this run computed (``offset``, ``position``)."""
        names = self.accumulator.property_names
        return [kind for kind in NULL_KINDS if any(null_name(name, kind) in names for name in names)]

    def _positional(self, proportion: np.ndarray) -> dict[str, np.ndarray]:
        """`POSITIONAL_COLUMNS` as (P, L, H) arrays over the run's properties (NaN where a null does not apply)."""
        acc = self.accumulator
        s = acc.sums
        index = {name: p for p, name in enumerate(acc.property_names)}
        columns = {name: np.full(proportion.shape, np.nan) for name in POSITIONAL_COLUMNS}
        for p, name in enumerate(acc.property_names):
            for kind in NULL_KINDS:
                q = index.get(null_name(name, kind))
                if q is None:
                    continue
                null = _ratio(s["hits"][q], s["arcs"][q])
                columns[f"{kind}_null"][p] = null
                columns[f"{kind}_weighted_null"][p] = _ratio(s["weight_hits"][q], s["weight"][q])
                columns[f"{kind}_enrichment"][p] = _ratio(proportion[p], null)
                tests = [null_test(h, a, n) for h, a, n in zip(s["hits"][p].ravel(), s["arcs"][p].ravel(),
                                                                 null.ravel(), strict=True)]  # fmt: skip
                p_values = np.array([test[1] for test in tests]).reshape(null.shape)
                columns[f"{kind}_p_bonferroni"][p] = np.minimum(1.0, p_values * self.n_tests)
        for kind in NULL_KINDS:
            with np.errstate(invalid="ignore"):
                columns[f"{kind}_significant"] = columns[f"{kind}_p_bonferroni"] < self.alpha
        return columns

    def labelled_properties(self) -> list[str]:
        """Properties that the data defines somewhere (the others have no background and no rows)."""
        return [name for name, value in self.backgrounds().items() if value is not None]

    def heads(self) -> pd.DataFrame:
        """One row per (property, layer, head); columns `HEAD_COLUMNS` (layer and head 1-based)."""
        acc = self.accumulator
        s = acc.sums
        proportion = _ratio(s["hits"], s["arcs"])
        weighted = _ratio(s["weight_hits"], s["weight"])
        null_proportion = _ratio(s["null_hits"], s["null_arcs"])
        null_weighted = _ratio(s["null_weight_hits"], s["null_weight"])
        if acc.n_bootstrap:
            boot = _ratio(s["boot_hits"], s["boot_arcs"])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN heads: no arcs in any replicate
                boot_low = np.nanpercentile(boot, 2.5, axis=0)
                boot_high = np.nanpercentile(boot, 97.5, axis=0)
        else:
            boot_low = boot_high = np.full(proportion.shape, np.nan)
        rows = []
        backgrounds = self.backgrounds()
        positional = self._positional(proportion)
        for p, name in enumerate(acc.property_names):
            background = backgrounds.get(name)
            if background is None:
                continue
            bg_hits, bg_total = s["background_hits"][p], s["background_total"][p]
            for layer in range(acc.n_layers):
                for head in range(acc.n_heads):
                    arcs, hits = s["arcs"][p, layer, head], s["hits"][p, layer, head]
                    z, p_value = two_proportion_test(hits, arcs, bg_hits, bg_total)
                    if arcs > 0:
                        low, high = proportion_confint(hits, arcs, alpha=self.alpha / self.n_tests, method="wilson")
                    else:
                        low = high = math.nan
                    p_bonferroni = min(1.0, p_value * self.n_tests) if np.isfinite(p_value) else math.nan
                    rows.append((
                        name, layer + 1, head + 1, int(np.rint(arcs)), int(np.rint(hits)), proportion[p, layer, head],
                        weighted[p, layer, head], background, z, p_value, p_bonferroni, low, high,
                        bool(np.isfinite(p_bonferroni) and p_bonferroni < self.alpha), bool(arcs < MIN_ARCS),
                        null_proportion[p, layer, head], null_weighted[p, layer, head],
                        boot_low[p, layer, head], boot_high[p, layer, head],
                        *(positional[column][p, layer, head] for column in POSITIONAL_COLUMNS),
                    ))  # fmt: skip
        frame = pd.DataFrame(rows, columns=[*HEAD_COLUMNS, *POSITIONAL_COLUMNS])
        for kind in NULL_KINDS:
            frame[f"{kind}_significant"] = frame[f"{kind}_significant"].astype(bool)
        # A run without positional nulls keeps the columns it always had.
        computed = self.nulls()
        return frame.drop(columns=[f"{kind}_{c}" for kind in NULL_KINDS if kind not in computed for c in NULL_COLUMNS])

    def layers(self, heads: pd.DataFrame | None = None) -> pd.DataFrame:
        """Per (property, layer): mean over heads (with arcs) of each measure, the layer maximum, and the
        background."""
        heads = self.heads() if heads is None else heads
        grouped = heads.groupby(["property", "layer"], sort=False)
        frame = grouped.agg(
            mean_proportion=("proportion", "mean"),
            max_proportion=("proportion", "max"),
            mean_weighted_proportion=("weighted_proportion", "mean"),
            null_mean_proportion=("null_proportion", "mean"),
            null_mean_weighted_proportion=("null_weighted_proportion", "mean"),
            background=("background", "first"),
            n_arcs=("n_arcs", "sum"),
        )
        return frame.reset_index()

    def centres_of_gravity(self, layers: pd.DataFrame | None = None) -> dict[str, float]:
        """`centre_of_gravity` of every labelled property."""
        layers = self.layers() if layers is None else layers
        return {
            name: centre_of_gravity(group.sort_values("layer")["mean_proportion"].to_numpy())
            for name, group in layers.groupby("property", sort=False)
        }

    def top_heads(
        self,
        prop: str,
        k: int = 10,
        null: bool = False,
        include_few_arcs: bool = False,
        heads: pd.DataFrame | None = None,
    ) -> pd.DataFrame:
        """The `k` heads with the highest Eq. 1 proportion for a property (or of the null model).

        Heads with fewer than `MIN_ARCS` high-confidence arcs are left out unless `include_few_arcs`.
        """
        heads = self.heads() if heads is None else heads
        rows = heads[heads["property"] == prop]
        if not include_few_arcs:
            rows = rows[~rows["few_arcs"]]
        column = "null_proportion" if null else "proportion"
        return rows.dropna(subset=[column]).sort_values(column, ascending=False).head(k).reset_index(drop=True)

    def amino_acid_profiles(self, heads: pd.DataFrame | None = None, null: bool = False) -> np.ndarray:
        """(20, n_layers × n_heads) Eq. 1 proportions of each amino acid; NaN for heads with few arcs."""
        heads = self.heads() if heads is None else heads
        column = "null_proportion" if null else "proportion"
        profiles = np.full((20, self.n_tests), np.nan)
        for a, letter in enumerate(STANDARD_AMINO_ACIDS):
            rows = heads[heads["property"] == f"aa_{letter}"]
            if len(rows) == self.n_tests:
                values = rows[column].to_numpy(dtype=float)
                profiles[a] = np.where(rows["few_arcs"].to_numpy(), np.nan, values)
        return profiles

    def amino_acids(self, heads: pd.DataFrame | None = None) -> pd.DataFrame:
        """Table 3 for any model: per amino acid its top head, that head's share, the background
        frequency, and the null model's top head and share."""
        heads = self.heads() if heads is None else heads
        rows = []
        backgrounds = self.backgrounds()
        for letter in STANDARD_AMINO_ACIDS:
            name = f"aa_{letter}"
            if backgrounds.get(name) is None:
                continue
            top = self.top_heads(name, k=1, heads=heads)
            null_top = self.top_heads(name, k=1, null=True, heads=heads)
            rows.append({
                "amino_acid": letter,
                "top_head": f"{top['layer'][0]}-{top['head'][0]}" if len(top) else None,
                "top_proportion": float(top.proportion[0]) if len(top) else math.nan,
                "top_significant": bool(top.significant[0]) if len(top) else False,
                "background": backgrounds[name],
                "null_top_head": f"{null_top['layer'][0]}-{null_top['head'][0]}" if len(null_top) else None,
                "null_top_proportion": float(null_top.null_proportion[0]) if len(null_top) else math.nan,
            })  # fmt: skip
        return pd.DataFrame(rows)

    def blosum(self, heads: pd.DataFrame | None = None) -> dict[str, float]:
        """Correlation of the attention-similarity matrix with BLOSUM62 for the model and the null model."""
        heads = self.heads() if heads is None else heads
        _, model_r = blosum_correlation(self.amino_acid_profiles(heads))
        _, null_r = blosum_correlation(self.amino_acid_profiles(heads, null=True))
        return {"model": model_r, "null": null_r}

    def summary(self, heads: pd.DataFrame | None = None, layers: pd.DataFrame | None = None) -> dict:
        """Everything ``summary.json`` holds."""
        heads = self.heads() if heads is None else heads
        layers = self.layers(heads) if layers is None else layers
        acc = self.accumulator
        top = {}
        # A property with labels but no positive residue (e.g. no PTM in the data) has no top head.
        for name in (n for n, bg in self.backgrounds().items() if bg):
            best = self.top_heads(name, k=1, heads=heads)
            if len(best):
                row = best.iloc[0]
                top[name] = {
                    "head": f"{row['layer']}-{row['head']}", "proportion": row.proportion, "background": row.background,
                    "enrichment": row.proportion / row.background if row.background else None,
                    "null_proportion": row.null_proportion, "p_bonferroni": row.p_bonferroni,
                    "significant": bool(row.significant), "n_arcs": int(row.n_arcs),
                    **{f"{kind}_{column}": row[f"{kind}_{column}"] for kind in self.nulls() for column in NULL_COLUMNS},
                }  # fmt: skip
        return _jsonable({
            **self.info,
            "n_proteins": acc.n_proteins, "n_residues": acc.n_residues, "threshold": acc.threshold,
            "support": acc.support,
            "seed": acc.seed, "n_bootstrap": acc.n_bootstrap, "alpha": self.alpha, "bonferroni_m": self.n_tests,
            "properties": [name for name in acc.property_names if split_null_name(name) is None],
            "properties_without_labels": [
                name for name in self.backgrounds() if name not in self.labelled_properties()
            ],
            "nulls": self.nulls(), "significant_heads": self.significant_heads(heads),
            "backgrounds": self.backgrounds(), "centres_of_gravity": self.centres_of_gravity(layers),
            "blosum62_correlation": self.blosum(heads), "top_heads": top, "n_arcs_total": total_arcs(acc),
        })  # fmt: skip

    def significant_heads(self, heads: pd.DataFrame | None = None) -> dict[str, dict[str, int]]:
        """Per property, how many heads (with enough arcs) are significant against the background and against
        each positional null, and how many are against both: how many of the paper's kind of claims survive
        once position is controlled for."""
        heads = self.heads() if heads is None else heads
        counts = {}
        for name, rows in heads[~heads["few_arcs"]].groupby("property", sort=False):
            entry = {"background": int(rows["significant"].sum())}
            for kind in self.nulls():
                entry[kind] = int(rows[f"{kind}_significant"].sum())
                entry[f"background_and_{kind}"] = int((rows["significant"] & rows[f"{kind}_significant"]).sum())
            counts[str(name)] = entry
        return counts

    def save(self, directory: str | Path) -> dict[str, Path]:
        """Write ``heads.csv``, ``layers.csv``, ``amino_acids.csv``, ``summary.json`` and the raw sums
        ``accumulator.npz`` into `directory`, each file atomically."""
        run = RunDir(directory)
        heads = self.heads()
        layers = self.layers(heads)
        tables = {
            "heads": (HEADS, heads),
            "layers": (LAYERS, layers),
            "amino_acids": (AMINO_ACIDS, self.amino_acids(heads)),
        }
        paths = {key: run.write_table(name, table) for key, (name, table) in tables.items()}
        paths["accumulator"] = self.accumulator.save(run.accumulator_path())
        paths["summary"] = run.write_json(SUMMARY, {**self.summary(heads, layers), "alpha": self.alpha})
        return paths

    @classmethod
    def load(cls, directory: str | Path) -> AnalysisResult:
        """Read a result written by `save` (the statistics are recomputed from ``accumulator.npz``)."""
        run = RunDir(directory)
        summary = run.raw_summary()
        computed = {
            "n_proteins", "n_residues", "threshold", "support", "seed", "n_bootstrap", "alpha", "bonferroni_m",
            "properties", "properties_without_labels", "backgrounds", "centres_of_gravity", "blosum62_correlation",
            "top_heads", "n_arcs_total", "nulls", "significant_heads",
        }  # fmt: skip
        info = {k: v for k, v in summary.items() if k not in computed}
        return cls(Accumulator.load(run.accumulator_path()), alpha=summary.get("alpha", 0.05), info=info)


def property_grid(heads: pd.DataFrame, prop: str, column: str = "proportion") -> tuple[np.ndarray, np.ndarray]:
    """One property's `column` of a heads frame (``heads.csv``) as a (layers, heads) array, and which heads
    have few arcs."""
    rows = heads[heads["property"] == prop]
    n_layers, n_heads = int(heads["layer"].max()), int(heads["head"].max())
    values = np.full((n_layers, n_heads), np.nan)
    few = np.zeros((n_layers, n_heads), dtype=bool)
    values[rows["layer"] - 1, rows["head"] - 1] = rows[column]
    few[rows["layer"] - 1, rows["head"] - 1] = rows["few_arcs"].astype(bool)
    return values, few


def total_arcs(acc: Accumulator) -> int | None:
    """High-confidence arcs (α > θ) over all layers and heads: the run's ``n_arcs_total``.

    Arcs are counted per property, over the pairs where the property is defined, so this is the largest of
    the properties' counts: that of the property defined on the most pairs. Amino-acid properties are
    defined on every pair, and so is ``contact`` on structures with all coordinates, so with either among
    the properties it is every arc. A random-weights model has almost none (appendix B.2 of the paper
    found none at all).

    Parameters
    ----------
    acc : Accumulator

    Returns
    -------
    int or None
        None for a run without properties.
    """
    if not len(acc.property_names):
        return None
    return int(np.rint(acc.sums["arcs"].sum(axis=(1, 2)).max()))


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
