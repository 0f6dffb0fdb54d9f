"""The "Features" section of ``report.html`` and the feature concept coverage of ``compare.html``: what a run's
sparse autoencoders (``RUN_DIR/features/NAME/``, read through `plmlens.rundir.FeatureDir`) learned.

Per SAE the section shows its line (model, layer, width, k; variance explained and fidelity when it was
evaluated), how many concepts its features match beside single neurons and the controls, a concepts table,
a feature table filtered by concept in the page, and a feature browser: a click on a feature shows its
activation histogram and its top-activating proteins, each sequence coloured by activation over a region
track, and the chosen protein in 3D coloured by activation (NGL; the page's script writes the activations
into the B-factor column of the protein's structure, re-read here from ``examples.json["source"]``).

Everything from the files (protein ids, concept names, model names, sequences) is untrusted: the templates
escape it and the script inserts it as text.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from plmlens.features.matching import verdict
from plmlens.proteins import Protein, SourceError, iter_proteins
from plmlens.report.numbers import fmt_count, fmt_number, fmt_percent, is_missing
from plmlens.report.view import ViewerError, marked_chain_pdb, ngl_javascript
from plmlens.rundir import (
    CONCEPTS_PLACE,
    CONCEPTS_TABLE,
    FEATURE_EXAMPLES,
    FEATURES_TABLE,
    FeatureDir,
    RunDirError,
    feature_dirs,
)

#: The F1 at which a feature (or neuron) matches a concept, where ``concepts/summary.json`` does not say.
MATCH_F1 = 0.5
#: At most this many rows in a feature table: the matched and browsed features first, then the highest F1
#: (an SAE has thousands of features; ``concepts/features.csv`` has them all).
MAX_FEATURE_ROWS = 500
#: Columns each reader relies on.
FEATURE_COLUMNS = ("feature", "frequency", "max_activation", "concept", "f1", "precision", "recall", "threshold",
                   "matched", "positional")  # fmt: skip
CONCEPT_COLUMNS = ("concept", "feature", "f1", "neuron", "neuron_f1", "shuffled_f1", "position_f1")


# -- small readers --------------------------------------------------------------------------------------------


def _real(value: object) -> float | None:
    """`value` as a finite float, None when it is missing or not a number (values come from files)."""
    if isinstance(value, bool | np.bool_) or is_missing(value):
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _integer(value: object) -> int | None:
    number = _real(value)
    return int(number) if number is not None and number == int(number) else None


def _flag(value: object) -> bool:
    """A CSV's boolean cell (pandas reads True/False, or text where the column has gaps)."""
    return value is True or value is np.True_ or str(value).strip().lower() in ("true", "1", "yes")


def _text(value: object) -> str:
    return "" if is_missing(value) else str(value)


def _checked(frame: pd.DataFrame, columns: Iterable[str], path: Path) -> pd.DataFrame:
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise RunDirError(f"{path}: damaged (no column {', '.join(missing)})")
    return frame


def _three(value: object) -> float | None:
    """A number rounded to 3 significant digits for the page's data (the page shows 3)."""
    number = _real(value)
    return None if number is None else float(f"{number:.3g}")


# -- the SAE's line and its coverage --------------------------------------------------------------------------


def sae_title(fd: FeatureDir) -> str:
    """The model and layer an SAE was trained on, e.g. "antiberty L4" or "antiberty (random init) L4"."""
    record = fd.sae_record()
    model = record.get("model") if isinstance(record.get("model"), dict) else {}
    name = str(model.get("name") or "model") + (" (random init)" if model.get("random_init") else "")
    layer = record.get("layer")
    return f"{name} L{layer}" if layer is not None else name


def is_control(fd: FeatureDir) -> bool:
    """Whether the SAE was trained on a random-weight model (a control)."""
    model = fd.sae_record().get("model")
    return isinstance(model, dict) and bool(model.get("random_init"))


def _held_out(fd: FeatureDir) -> tuple[dict, dict]:
    """The SAE's reconstruction figures and fidelity: on the held-out labelled proteins of its concepts when
    they ran (``concepts/summary.json``), else on its training residues (``evaluation.json``)."""
    if fd.has_concepts():
        summary = fd.concepts_summary()
        evaluation, fidelity = summary.get("evaluation"), summary.get("fidelity")
        return (evaluation if isinstance(evaluation, dict) else {}), (fidelity if isinstance(fidelity, dict) else {})
    record = fd.evaluation() or {}
    training = record.get("training_tokens")
    return (training if isinstance(training, dict) else {}), {}


def sae_line(fd: FeatureDir) -> str:
    """The SAE in one line: model, layer, width, k, activation; the variance explained, L0, dead and dense
    latents (held-out where its concepts ran) and the loss recovered."""
    record = fd.sae_record()
    config = record.get("config") if isinstance(record.get("config"), dict) else {}
    parts = [f"{sae_title(fd)}: width {fmt_count(_integer(config.get('width')))}, k {config.get('k', '–')}, "
             f"{config.get('activation', 'activation?')}, input {fmt_count(_integer(config.get('d_in')))}"]  # fmt: skip
    evaluation, fidelity = _held_out(fd)
    if not evaluation:
        parts.append("not evaluated")
        return "; ".join(parts)
    where = "held-out proteins" if fd.has_concepts() else "training residues"
    fve, l0 = _real(evaluation.get("fraction_variance_explained")), _real(evaluation.get("mean_l0"))
    dead, dense = _integer(evaluation.get("n_dead")), _integer(evaluation.get("n_dense"))
    parts.append(f"on {where}: variance explained {fmt_percent(fve)}, L0 {fmt_number(l0)}, dead {fmt_count(dead)}, "
                 f"dense {fmt_count(dense)}")  # fmt: skip
    if fidelity:
        parts.append(f"loss recovered {fmt_percent(_real(fidelity.get('loss_recovered_zero')))} against zero "
                     f"ablation, {fmt_percent(_real(fidelity.get('loss_recovered_mean')))} against mean ablation "
                     f"(loss {fmt_number(_real(fidelity.get('loss_intact')))} intact, "
                     f"{fmt_number(_real(fidelity.get('loss_sae')))} through the SAE)")  # fmt: skip
    return "; ".join(parts)


def match_f1(summary: dict) -> float:
    """The F1 at which a concept counts as matched (``summary.json``'s ``match_f1``, else `MATCH_F1`)."""
    value = _real(summary.get("match_f1"))
    return value if value is not None else MATCH_F1


def _counts(summary: dict, key: str) -> dict:
    value = summary.get(key)
    return value if isinstance(value, dict) else {}


def coverage_line(summary: dict) -> str:
    """How many concepts the SAE's features match, beside single neurons and the controls, in one line; each
    with how many of them beat the position-only predictor."""
    matched, beyond = _counts(summary, "matched_concepts"), _counts(summary, "matched_beyond_position")
    names = summary.get("concept_names")
    of = f" of {len(names)}" if isinstance(names, list) else ""
    count = lambda table, key: fmt_count(_integer(table.get(key)))  # noqa: E731
    random_text = (f"random-weight model {count(matched, 'random_model')}" if matched.get("random_model") is not None
                   else "random-weight model not run")  # fmt: skip
    return (f"{count(matched, 'features')}{of} concepts matched by features (F1 ≥ {fmt_number(match_f1(summary))}; "
            f"{count(beyond, 'features')} above the position-only F1), {count(matched, 'neurons')} by single neurons "
            f"({count(beyond, 'neurons')} above position); controls: shuffled {count(matched, 'shuffled')}, "
            f"{random_text}, position-only {count(matched, 'position')}; "
            f"{fmt_count(_integer(summary.get('matches_beyond_position')))} of "
            f"{fmt_count(_integer(summary.get('matches')))} feature–concept matches beat position; "
            f"{fmt_count(_integer(summary.get('features_matched')))} features match a concept."
            + (f" {verdict(summary)}" if "beyond_controls" in summary else ""))  # fmt: skip


def proteins_line(summary: dict) -> str:
    """Which labelled proteins the concepts were measured on."""
    counts = summary.get("n_proteins") if isinstance(summary.get("n_proteins"), dict) else {}
    validation, test = (fmt_count(_integer(counts.get(key))) for key in ("validation", "test"))
    source = _text(summary.get("source")) or "–"
    return f"Thresholds chosen on {validation} validation proteins, F1 measured on {test} test proteins of {source}."


# -- the tables -----------------------------------------------------------------------------------------------


def concept_labels(fd: FeatureDir) -> dict[str, str]:
    """Each concept's display name (``concepts.csv``'s ``label``), by name."""
    table = _checked(fd.concepts_table(), ("concept",), fd.path / CONCEPTS_PLACE / CONCEPTS_TABLE)
    if "label" not in table.columns:
        return {}
    return {_text(c): _text(label) or _text(c) for c, label in zip(table["concept"], table["label"], strict=True)}


def _top_features(text: object) -> list[dict]:
    """``"12:0.81;40:0.77"`` as ``[{"feature": 12, "f1": "0.81"}, ...]`` (parts that do not parse are dropped)."""
    out = []
    for part in _text(text).split(";"):
        feature, _, f1 = part.partition(":")
        if _integer(feature.strip()) is not None:
            out.append({"feature": _integer(feature.strip()), "f1": fmt_number(_real(f1.strip()))})
    return out


def concept_rows(fd: FeatureDir, browsed: set[int], summary: dict) -> list[dict]:
    """One row per concept of ``concepts.csv``: its best feature and F1 beside the best neuron, the controls
    and the position-only predictor, and a flag (matched, not better than position, or not matched)."""
    path = fd.path / CONCEPTS_PLACE / CONCEPTS_TABLE
    table = _checked(fd.concepts_table(), CONCEPT_COLUMNS, path)
    threshold = match_f1(summary)
    rows = []
    for record in table.to_dict("records"):
        f1 = _real(record.get("f1"))
        positional = _flag(record.get("positional"))
        flag = ("not better than position" if positional else "matched") if f1 is not None and f1 >= threshold \
            else "not matched"  # fmt: skip
        feature = _integer(record.get("feature"))
        rows.append({
            "concept": _text(record["concept"]), "label": _text(record.get("label")) or _text(record["concept"]),
            "positives": fmt_count(_integer(record.get("n_positive"))), "feature": feature,
            "browsed": feature in browsed, "f1": fmt_number(f1), "top": _top_features(record.get("top_features"))[:3],
            "neuron": _text(record.get("neuron")) or "–", "neuron_f1": fmt_number(_real(record.get("neuron_f1"))),
            "shuffled_f1": fmt_number(_real(record.get("shuffled_f1"))),
            "random_model_f1": fmt_number(_real(record.get("random_model_f1"))),
            "position_f1": fmt_number(_real(record.get("position_f1"))),
            "n_matched": fmt_count(_integer(record.get("n_matched_features"))), "flag": flag,
        })  # fmt: skip
    return rows


def feature_rows(fd: FeatureDir, browsed: set[int], labels: dict[str, str]) -> tuple[list[dict], str]:
    """The feature table's rows (at most `MAX_FEATURE_ROWS`: matched and browsed features first, then the
    highest F1; sorted by F1) and a line saying how many of the SAE's features they are."""
    path = fd.path / CONCEPTS_PLACE / FEATURES_TABLE
    table = _checked(fd.features_table(), FEATURE_COLUMNS, path)
    f1 = pd.to_numeric(table["f1"], errors="coerce")
    features = pd.to_numeric(table["feature"], errors="coerce")
    first = table["matched"].map(_flag) | features.isin(browsed)
    order = pd.DataFrame({"first": first, "f1": f1.fillna(-1.0)}).sort_values(["first", "f1"], ascending=False)
    shown = table.loc[order.index[:MAX_FEATURE_ROWS]]
    shown = shown.loc[f1.loc[shown.index].fillna(-1.0).sort_values(ascending=False, kind="stable").index]
    rows = []
    for record in shown.to_dict("records"):
        feature, concept = _integer(record["feature"]), _text(record["concept"])
        if feature is None:
            continue  # a row without a feature number names nothing to click or look up
        label = labels.get(concept, concept)
        flag = "not better than position" if _flag(record["positional"]) else ("matched" if _flag(
            record["matched"]) else "")  # fmt: skip
        rows.append({
            "feature": feature, "browsed": feature in browsed, "concept": concept, "label": label or "–",
            "search": f"{concept} {label}".lower(), "f1": fmt_number(_real(record["f1"])),
            "precision": fmt_number(_real(record["precision"])), "recall": fmt_number(_real(record["recall"])),
            "threshold": fmt_number(_real(record["threshold"])), "frequency": fmt_percent(_real(record["frequency"])),
            "max_activation": fmt_number(_real(record["max_activation"])), "flag": flag,
        })  # fmt: skip
    note = f"{fmt_count(len(rows))} of {fmt_count(len(table))} features"
    if len(rows) < len(table):
        note += (" (the matched ones and those with example proteins first, then the highest F1; "
                 "concepts/features.csv has them all)")  # fmt: skip
    return rows, note


# -- the browsed features and their proteins ------------------------------------------------------------------


def _example_protein(record: object) -> dict | str:
    """One top-activating protein of ``examples.json`` as the page's script reads it, or why it is left out."""
    if not isinstance(record, dict) or not isinstance(record.get("protein"), str):
        return "a protein without an id"
    name, sequence = record["protein"], record.get("sequence")
    activations = record.get("activations")
    if not isinstance(sequence, str) or not isinstance(activations, list):
        return f"protein {name}: no sequence or activations"
    values = [_real(value) for value in activations]
    if len(values) != len(sequence) or any(value is None for value in values):
        return f"protein {name}: {len(values)} activations (all numbers?) for {len(sequence)} residues"
    tracks = {}
    for key in ("regions", "imgt"):
        track = record.get(key)
        if track is not None and (not isinstance(track, list) or len(track) != len(sequence)):
            return f"protein {name}: {key} does not give one entry per residue"
        tracks[key] = None if track is None else [None if item is None else str(item) for item in track]
    peak = _real(record.get("max"))
    return {"protein": name, "sequence": sequence, "activations": [_three(value) for value in values],
            "max": _three(peak if peak is not None else max(values, default=0.0)), **tracks}  # fmt: skip


def _histogram(record: object) -> dict | None:
    """``{"edges": [...], "counts": [...]}`` with one more edge than counts, else None."""
    if not isinstance(record, dict):
        return None
    edges, counts = record.get("edges"), record.get("counts")
    if not isinstance(edges, list) or not isinstance(counts, list) or len(edges) != len(counts) + 1 or not counts:
        return None
    edges, counts = [_real(e) for e in edges], [_integer(c) for c in counts]
    if any(e is None for e in edges) or any(c is None for c in counts):
        return None
    return {"edges": [_three(e) for e in edges], "counts": counts}


def browsed_features(fd: FeatureDir, labels: dict[str, str]) -> tuple[dict[int, dict], list[str], str]:
    """The features of ``examples.json`` with their histogram and top-activating proteins, what was left out
    of them (one line each), and the SOURCE their proteins can be re-read from.

    Raises
    ------
    RunDirError
        ``examples.json`` missing or not a record.
    """
    examples = fd.examples()
    where = fd.path / CONCEPTS_PLACE / FEATURE_EXAMPLES
    features: dict[int, dict] = {}
    problems: list[str] = []
    entries = examples.get("features") if isinstance(examples.get("features"), list) else []
    for entry in entries:
        feature = _integer(entry.get("feature")) if isinstance(entry, dict) else None
        if feature is None:
            problems.append("a feature without a number")
            continue
        top = []
        for record in entry.get("top") if isinstance(entry.get("top"), list) else []:
            protein = _example_protein(record)
            if isinstance(protein, str):
                problems.append(f"feature {feature}, {protein}")
            else:
                top.append(protein)
        concept = _text(entry.get("concept"))
        features[feature] = {"feature": feature, "concept": concept, "label": labels.get(concept, concept),
                             "f1": _three(entry.get("f1")), "frequency": _real(entry.get("frequency")),
                             "histogram": _histogram(entry.get("histogram")), "top": top}  # fmt: skip
    notes = [f"{where}: left out {len(problems)} damaged entries ({'; '.join(problems[:3])}"
             f"{', ...' if len(problems) > 3 else ''})"] if problems else []  # fmt: skip
    return features, notes, _text(examples.get("source"))


def read_structures(source: str, ids: set[str]) -> tuple[dict[str, Protein], str | None]:
    """The proteins `ids` of a SOURCE (`plmlens.proteins.iter_proteins`), reading no further than the last
    one found, and why the source could not be read (one line) or None.

    A source that fails part way gives what was found before it failed, and the reason.
    """
    if not source:
        return {}, "examples.json does not name the proteins' source"
    found: dict[str, Protein] = {}
    try:
        for protein in iter_proteins(source):
            if protein.id in ids and protein.id not in found:
                found[protein.id] = protein
                if len(found) == len(ids):
                    break
    except (SourceError, OSError, ValueError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        return found, f"the proteins' source {source} could not be read ({reason})"
    return found, None


def _listed(names: Iterable[str]) -> str:
    """At most three names, then "..."."""
    names = sorted(names)
    return ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")


def structure_entry(protein: Protein, sequence: str) -> dict | None:
    """What the page's script draws `protein` from: its structure (``marked_chain_pdb``: backbone atoms of
    the chain) and, per residue of `sequence` (what the SAE saw), the structure's residue id (number and
    insertion code) that the activations are written to; None when the structure does not hold `sequence`
    or has no coordinates."""
    offset = protein.sequence.find(sequence) if sequence else -1
    if offset < 0 or not np.asarray(protein.has_coords).any():
        return None
    pdb, representation = marked_chain_pdb(protein)
    numbers = protein.residue_numbers[offset : offset + len(sequence)].tolist()
    codes = protein.insertion_codes[offset : offset + len(sequence)].tolist()
    residues = [f"{number}{str(code).strip()}" for number, code in zip(numbers, codes, strict=True)]
    return {"pdb": pdb, "repr": representation, "residues": residues}


@dataclass
class StructureReader:
    """Reads each SOURCE once for every SAE that needs it (a layer's SAE and its random-weight control
    usually share their proteins), or gives every SAE the same reason for no 3D view."""

    unavailable: str | None = None
    read: Callable[[str, set[str]], tuple[dict[str, Protein], str | None]] = read_structures
    wanted: dict[str, set[str]] = field(default_factory=dict)
    done: dict[str, tuple[dict[str, Protein], str | None]] = field(default_factory=dict)

    def want(self, source: str, ids: Iterable[str]) -> None:
        self.wanted.setdefault(source, set()).update(ids)

    def structures(self, source: str, features: dict[int, dict]) -> tuple[dict[str, dict], str | None]:
        """Per protein id of `features`, its `structure_entry`; and why there is no 3D view for some or all."""
        if self.unavailable is not None:
            return {}, self.unavailable
        if source not in self.done:
            self.done[source] = self.read(source, self.wanted.get(source, set()))
        found, note = self.done[source]
        entries: dict[str, dict] = {}
        ids = {top["protein"]: top["sequence"] for entry in features.values() for top in entry["top"]}
        differing = set()
        for name, sequence in ids.items():
            protein = found.get(name)
            try:
                structure = structure_entry(protein, sequence) if protein is not None else None
            except (RuntimeError, ValueError, OSError):  # a structure file gemmi cannot write back
                structure = None
            if structure is not None:
                entries[name] = structure
            elif protein is not None:
                differing.add(name)
        missing = set(ids) - set(found)
        notes = [note] if note is not None else []
        if missing and note is None:
            notes.append(f"{len(missing)} of {len(ids)} proteins are not in {source} ({_listed(missing)})")
        if differing:
            notes.append(f"the structures of {_listed(differing)} in the source lack the sequence the SAE saw or "
                         "coordinates")  # fmt: skip
        note = "; ".join(notes) or None
        return entries, note


# -- the section ----------------------------------------------------------------------------------------------


def _sae_parts(fd: FeatureDir, index: int) -> dict:
    """What an SAE's sub-section shows from its own files; each damaged file becomes a one-line note."""
    part: dict = {"id": f"sae{index}", "name": fd.name, "title": fd.name, "control": False, "line": None,
                  "has_concepts": False, "concepts": [], "feature_table": None, "notes": [], "features": {},
                  "source": ""}  # fmt: skip
    try:
        part.update(title=sae_title(fd), control=is_control(fd), line=sae_line(fd))
    except RunDirError as error:
        part["notes"].append(str(error))
        return part
    if not fd.has_concepts():
        part["notes"].append("No concepts yet (plmlens features concepts writes them).")
        return part
    try:
        summary = fd.concepts_summary()
        part["coverage"], part["proteins"] = coverage_line(summary), proteins_line(summary)
        labels = concept_labels(fd)
        part["has_concepts"] = True
    except RunDirError as error:
        part["notes"].append(str(error))
        return part
    try:
        part["features"], notes, part["source"] = browsed_features(fd, labels)
        part["notes"] += notes
    except RunDirError as error:
        part["notes"].append(f"{error}: no feature browser")
    browsed = set(part["features"])
    for key, build in (("concepts", lambda: concept_rows(fd, browsed, summary)),
                       ("feature_table", lambda: feature_rows(fd, browsed, labels))):  # fmt: skip
        try:
            part[key] = build()
        except RunDirError as error:
            part["notes"].append(str(error))
    part["random_model"] = any(row["random_model_f1"] != "–" for row in part["concepts"])
    return part


def features_context(run_dir: str | Path, structures: bool = True) -> dict | None:
    """What the ``features`` macro of ``features.html`` draws for a run directory, or None when it has no SAE.

    Parameters
    ----------
    run_dir : path
        A run directory whose ``features/NAME/`` hold SAEs (``sae.json``) and their concepts.
    structures : bool
        Re-read the browsed proteins' structures from ``examples.json["source"]`` for the 3D view (when NGL
        is installed); otherwise, or when they cannot be read, the browser shows sequences only and says why.

    Returns
    -------
    dict or None
        ``saes``: one context per SAE (random-weight controls after the others; one without concepts gets its
        line only); ``ngl``: whether a 3D view is drawn (the page must then inline NGL). None when no SAE has
        concepts.
    """
    dirs = feature_dirs(run_dir)
    if not any(fd.has_concepts() for fd in dirs):
        return None  # SAEs still training or matching concepts: nothing to browse yet
    parts = [_sae_parts(fd, index) for index, fd in enumerate(dirs)]
    parts.sort(key=lambda part: (part["control"], part["name"]))
    reader = StructureReader(None if structures else "3D views were left out")
    if structures:
        try:
            ngl_javascript()
        except ViewerError as error:
            reader.unavailable = str(error).splitlines()[0]
    for part in parts:
        reader.want(part["source"], (top["protein"] for entry in part["features"].values() for top in entry["top"]))
    for part in parts:
        entries, note = reader.structures(part["source"], part["features"]) if part["features"] else ({}, None)
        part["structure_note"] = note
        part["data"] = {"features": {str(k): v for k, v in part["features"].items()}, "structures": entries}
    return {"saes": parts, "ngl": any(part["data"]["structures"] for part in parts)}


# -- the comparison -------------------------------------------------------------------------------------------


def _unique_titles(columns: list[dict]) -> list[str]:
    """Each SAE's column title ("antiberty L4"), with its directory's name (then its run's too) where two
    would read the same."""
    titles = [column["title"] for column in columns]
    for suffix in (lambda c: c["name"], lambda c: f"{c['run']}/{c['name']}"):
        clashing = {t for t in titles if titles.count(t) > 1}
        if not clashing:
            break
        titles = [f"{c['title']} [{suffix(c)}]" if t in clashing else t for c, t in zip(columns, titles, strict=True)]
    return titles


def _coverage_columns(runs: Iterable[tuple[str, Path]]) -> tuple[list[dict], list[str]]:
    """Every SAE with concepts in the runs (its title, summary and concepts table), and a line per damaged one."""
    columns, notes = [], []
    for run_name, path in runs:
        for fd in feature_dirs(path):
            if not fd.has_concepts():
                continue
            try:
                table = _checked(fd.concepts_table(), CONCEPT_COLUMNS, fd.path / CONCEPTS_PLACE / CONCEPTS_TABLE)
                columns.append({"title": sae_title(fd), "name": fd.name, "run": run_name,
                                "summary": fd.concepts_summary(), "table": table})  # fmt: skip
            except RunDirError as error:
                notes.append(f"left out: {error}")
    return columns, notes


def coverage_context(runs: Iterable[tuple[str, Path]]) -> dict | None:
    """What the ``coverage`` macro of ``features.html`` draws for compared runs: per concept, the best test F1
    of a feature of each SAE beside its best neuron and the position-only predictor, and per SAE how many
    concepts each matches; None when no run has an SAE with concepts.

    Parameters
    ----------
    runs : iterable of (str, path)
        Each run's display name and its directory (whose ``features/NAME/`` hold the SAEs).
    """
    columns, notes = _coverage_columns(runs)
    if not columns and not notes:
        return None
    labels: dict[str, str] = {}
    by_concept: list[dict[str, dict]] = []
    for column in columns:
        records = {}
        for record in column["table"].to_dict("records"):
            concept = _text(record["concept"])
            labels.setdefault(concept, _text(record.get("label")) or concept)
            records[concept] = record
        by_concept.append(records)
    rows = []
    for concept, label in labels.items():
        cells = []
        for records in by_concept:
            record = records.get(concept)
            cells.append(["–"] * 3 if record is None else [fmt_number(_real(record.get(key))) for key in (
                "f1", "neuron_f1", "position_f1")])  # fmt: skip
        rows.append({"concept": concept, "label": label, "cells": cells})
    matched = []
    for column in columns:
        counts = _counts(column["summary"], "matched_concepts")
        total = len(column["table"])
        matched.append([f"{fmt_count(_integer(counts.get(key)))} of {total}" for key in ("features", "neurons",
                                                                                         "position")])  # fmt: skip
    return {"saes": _unique_titles(columns), "rows": rows, "matched": matched, "notes": notes}


__all__ = [
    "MATCH_F1",
    "MAX_FEATURE_ROWS",
    "StructureReader",
    "browsed_features",
    "concept_rows",
    "coverage_context",
    "coverage_line",
    "feature_rows",
    "features_context",
    "read_structures",
    "sae_line",
    "sae_title",
    "structure_entry",
]
