"""What a SOURCE holds: counts, lengths and the background frequency of every annotation."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from plmlens.proteins.annotations import contact_counts
from plmlens.proteins.record import SS_CLASSES, STANDARD_AMINO_ACIDS, Protein
from plmlens.proteins.skips import Skipped


@dataclass
class Counter:
    """Numerator and denominator of one background frequency; ``share`` is None with no data."""

    hits: int = 0
    total: int = 0

    def add(self, hits: int, total: int) -> None:
        self.hits += int(hits)
        self.total += int(total)

    @property
    def share(self) -> float | None:
        return self.hits / self.total if self.total else None


@dataclass
class Description:
    """Summary of a set of proteins (see `describe`)."""

    lengths: list[int] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    counters: dict[str, Counter] = field(default_factory=dict)
    #: Annotator → reason → how many proteins it could not label (from ``meta["unlabelled"]``).
    unlabelled: dict[str, dict[str, int]] = field(default_factory=dict)
    #: The chains the ``numbering=`` annotator saw: id, sequence and meta only (for `numbering`).
    numbered_chains: list[Protein] = field(default_factory=list)

    def numbering(self) -> dict | None:
        """`plmlens.proteins.numbering.numbering_summary` of the chains numbering saw; None without it."""
        if not self.numbered_chains:
            return None
        from plmlens.proteins.numbering import numbering_summary

        return numbering_summary(self.numbered_chains)

    def numbering_line(self) -> str | None:
        """One line: chains numbered, why the others were not, and how the chain types agree."""
        summary = self.numbering()
        if summary is None:
            return None
        reasons = "; ".join(f"{count} {reason}" for reason, count in summary["reasons"].items())
        manifest, rule = summary["vs_manifest"], summary["vs_sequence_rule"]
        return (
            f"numbering: {summary['numbered']} of {summary['chains']} chains numbered"
            + (f" (not: {reasons})" if reasons else "")
            + f"; chain type agrees with the source's (MANIFEST) for {manifest['agree']} of {manifest['compared']}"
            + f", with the sequence rule for {rule['agree']} of {rule['compared']}"
        )

    @property
    def n_proteins(self) -> int:
        return len(self.lengths)

    @property
    def n_residues(self) -> int:
        return int(sum(self.lengths))

    def length_distribution(self) -> dict[str, float]:
        """Min, quartiles, mean and max of the protein lengths (empty when there are none)."""
        if not self.lengths:
            return {}
        values = np.asarray(self.lengths)
        q1, median, q3 = np.percentile(values, [25, 50, 75])
        return {
            "min": int(values.min()), "q1": float(q1), "median": float(median), "mean": float(values.mean()),
            "q3": float(q3), "max": int(values.max()),
        }  # fmt: skip

    def backgrounds(self) -> dict[str, float | None]:
        return {name: counter.share for name, counter in self.counters.items()}

    def to_dict(self) -> dict:
        """The JSON form: ``n_proteins``, ``n_residues``, ``n_skipped``, ``skipped``, ``lengths``,
        ``backgrounds`` and ``counts`` (numerator and denominator of each background), and ``unlabelled``
        (annotator → reason → proteins) when an annotator left proteins unlabelled."""
        out = {
            "n_proteins": self.n_proteins,
            "n_residues": self.n_residues,
            "n_skipped": len(self.skipped),
            "skipped": [s.to_dict() for s in self.skipped],
            "lengths": self.length_distribution(),
            "backgrounds": self.backgrounds(),
            "counts": {name: {"hits": c.hits, "total": c.total} for name, c in self.counters.items()},
        }
        if self.unlabelled:
            out["unlabelled"] = self.unlabelled
        numbering = self.numbering()
        if numbering is not None:
            out["numbering"] = numbering
        return out

    def unlabelled_lines(self) -> list[str]:
        """One line per annotator: how many proteins it could not label, and why (most common first)."""
        lines = []
        for annotator, reasons in self.unlabelled.items():
            ranked = sorted(reasons.items(), key=lambda kv: -kv[1])
            shown = "; ".join(f"{count} {reason}" for reason, count in ranked[:5])
            more = f"; {len(ranked) - 5} other reasons" if len(ranked) > 5 else ""
            lines.append(f"{annotator}: {sum(reasons.values())} proteins unlabelled ({shown}{more})")
        return lines


BACKGROUND_KEYS = ("contact", "binding_site", "ptm", *SS_CLASSES, *STANDARD_AMINO_ACIDS)

#: Counts ``(hits, defined)`` of one annotation in one protein.
CountFunction = Callable[[Protein], tuple[int, int]]


def describe(
    records: Iterable[Protein | Skipped],
    progress: Callable[[Protein], None] | None = None,
    counters: Mapping[str, CountFunction] | None = None,
    label_counters: Callable[[str], Mapping[str, CountFunction]] | None = None,
) -> Description:
    """Count proteins and residues and measure the background frequency of each annotation.

    With `counters` (name to a function giving a protein's ``(hits, defined)``) those are the annotations;
    ``plmlens proteins describe`` passes the property registry's (`plmlens.analysis.property_counters`), so
    that its names are the properties' own. Without, the annotations below (`BACKGROUND_KEYS`).

    With `label_counters` (a label's name to the counters of its properties), every label a protein holds
    adds the counters of its properties not counted yet (after the others, in the order met): proteins
    before it lacked the label, which is undefined for them, so they add nothing to it. Proteins an
    annotator could not label (``meta["unlabelled"]``) are counted per annotator and reason.

    Backgrounds are shares over the *defined* entries only:

    * ``contact``: contacts (`contact_map`, 8 Å between CA, separation ≥ 6) over all defined ordered
      residue pairs (i, j), the diagonal included — the denominator the attention analysis uses; counted
      by `contact_counts` in memory linear in the protein's length;
    * ``binding_site``, ``ptm``: labelled residues over residues of proteins that carry such labels;
    * ``helix``, ``strand``, ``turn_bend``: over residues with a known DSSP state;
    * each amino acid: over all residues.

    A background is None (``null`` in JSON) when no protein defines it.
    """
    functions = dict(counters) if counters is not None else None
    result = Description(counters={key: Counter() for key in (functions or BACKGROUND_KEYS)})
    for record in records:
        if isinstance(record, Skipped):
            result.skipped.append(record)
            continue
        result.lengths.append(len(record))
        if label_counters is not None and functions is not None:
            for label in record.labels:
                for name, count in label_counters(label).items():
                    if name not in functions:
                        functions[name] = count
                        result.counters[name] = Counter()
        _count_unlabelled(record, result.unlabelled)
        if "numbering" in record.meta or "numbering" in (record.meta.get("unlabelled") or {}):
            # A small copy (no coordinates): sets of many chains are described in a stream.
            result.numbered_chains.append(Protein(id=record.id, sequence=record.sequence, meta=record.meta))
        if functions is None:
            _count_annotations(record, result.counters)
        else:
            for name, count in functions.items():
                result.counters[name].add(*count(record))
        if progress is not None:
            progress(record)
    return result


def _count_unlabelled(record: Protein, unlabelled: dict[str, dict[str, int]]) -> None:
    """Add the annotators that could not label `record` (its ``meta["unlabelled"]``) to `unlabelled`."""
    reasons = record.meta.get("unlabelled")
    if not isinstance(reasons, dict):
        return
    for annotator, reason in reasons.items():
        per_reason = unlabelled.setdefault(str(annotator), {})
        text = " ".join(str(reason).split())
        per_reason[text] = per_reason.get(text, 0) + 1


def _count_annotations(record: Protein, counters: dict[str, Counter]) -> None:
    """Add one protein to the counters of `BACKGROUND_KEYS`."""
    # Counted, not mapped: an L × L map of a 200,000-residue chain would take 900 GiB.
    counters["contact"].add(*contact_counts(record))
    for name in ("binding_site", "ptm"):
        labels = record.label(name)
        if labels is not None:
            counters[name].add(labels.filled(False).sum(), labels.count())
    for ss_class in SS_CLASSES:
        mask = record.ss_mask(ss_class)
        counters[ss_class].add(mask.filled(False).sum(), mask.count())
    letters = np.frombuffer(record.sequence.encode("ascii"), dtype="S1")
    for letter in STANDARD_AMINO_ACIDS:
        counters[letter].add((letters == letter.encode()).sum(), len(letters))
