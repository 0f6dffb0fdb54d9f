"""Independent jobs on disjoint shards (``plmlens analyze --shard i/K``) and their sum.

A shard's directory holds ``accumulator.npz`` (its sums) and ``shard.json`` (the run's fingerprint and
counters). `merge_runs` checks that the shards are the ``K`` parts of one run (same source, model and
settings; each index once) and sums them into the result one run over all proteins would give.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from plmlens.analysis.accumulator import Accumulator
from plmlens.analysis.checkpoint import fingerprint_differences
from plmlens.analysis.result import AnalysisResult
from plmlens.ioutils import write_text_atomic

FORMAT = "plmlens-analyze-shard/1"
#: Counters of a run that add up over shards.
_ADDITIVE = ("n_truncated", "n_batches", "tokens", "padded_tokens", "oom_retries", "wall_seconds")


class MergeError(ValueError):
    """Shards that are not the parts of one run; the message is one line."""


def save_shard(result: AnalysisResult, directory: str | Path) -> dict[str, Path]:
    """Write a shard's sums (``accumulator.npz``) and record (``shard.json``), each atomically."""
    directory = Path(directory)
    record = {"format": FORMAT, "info": result.info, "alpha": result.alpha}
    return {
        "accumulator": result.accumulator.save(directory / "accumulator.npz"),
        "shard": write_text_atomic(directory / "shard.json", json.dumps(record, indent=2) + "\n"),
    }


def _read(directory: Path) -> tuple[Accumulator, dict]:
    path = directory / "shard.json"
    if not path.exists():
        what = "a whole run, not a shard" if (directory / "summary.json").exists() else "no shard.json"
        raise MergeError(f"{directory}: {what} (write shards with `plmlens analyze --shard i/K`)")
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise MergeError(f"{path}: unreadable ({error})") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise MergeError(f"{path}: not a plmlens shard record")
    try:
        acc = Accumulator.load(directory / "accumulator.npz")
    except (OSError, ValueError, KeyError) as error:
        raise MergeError(f"{directory / 'accumulator.npz'}: unreadable ({error})") from None
    return acc, record


def merge_runs(directories: Sequence[str | Path]) -> AnalysisResult:
    """Sum the shards of one run.

    Parameters
    ----------
    directories : sequence of path
        The output directories of ``plmlens analyze --shard i/K`` for every ``i`` in ``0 .. K-1``.

    Returns
    -------
    AnalysisResult
        Equal to one run over all the proteins (counts exactly, float sums to float64 rounding).

    Raises
    ------
    MergeError
        For a missing or repeated shard, or shards of different sources, models or settings.
    """
    parts = [(Path(d), *_read(Path(d))) for d in directories]
    if not parts:
        raise MergeError("no shards given")
    first_dir, _, first = parts[0]
    reference = dict(first["info"]["fingerprint"])
    count = reference["shard"]["count"]
    seen: dict[int, Path] = {}
    for directory, _, record in parts:
        fingerprint = dict(record["info"]["fingerprint"])
        differences = fingerprint_differences(
            {**fingerprint, "shard": fingerprint["shard"]["count"]}, {**reference, "shard": count}
        )
        if differences:
            raise MergeError(f"{directory} is not a shard of the same run as {first_dir}: {'; '.join(differences)}")
        index = fingerprint["shard"]["index"]
        if index in seen:
            raise MergeError(f"shard {index}/{count} given twice: {seen[index]} and {directory}")
        seen[index] = directory
    missing = sorted(set(range(count)) - set(seen))
    if missing:
        raise MergeError(f"shards {', '.join(f'{i}/{count}' for i in missing)} are missing")
    merged = parts[0][1]
    for _, acc, _ in parts[1:]:
        merged = merged.merge(acc)
    info = dict(first["info"])
    for name in _ADDITIVE:
        info[name] = sum(record["info"].get(name) or 0 for _, _, record in parts)
    skipped: dict[str, dict] = {}
    for _, _, record in parts:
        skipped.update({str((s["file"], s["chain"], s["reason"])): s for s in record["info"]["skipped"]})
    info["skipped"] = list(skipped.values())
    info["n_skipped"] = len(skipped)
    info["padding_efficiency"] = info["tokens"] / info["padded_tokens"] if info["padded_tokens"] else None
    info["residues_per_second"] = merged.n_residues / info["wall_seconds"] if info["wall_seconds"] else None
    info["shard"] = None
    info["fingerprint"] = {**reference, "shard": {"index": 0, "count": 1}}
    info["merged_from"] = [str(seen[index]) for index in range(count)]
    return AnalysisResult(merged, alpha=first.get("alpha", 0.05), info=info)
