"""Independent jobs on disjoint shards (``plmlens analyze --shard i/K``) and their sum.

A shard's directory holds ``accumulator.npz`` (its sums) and ``shard.json`` (the run's fingerprint and
counters). `merge_runs` checks that the shards are the ``K`` parts of one run (same source, model and
settings; each index once) and sums them into the result one run over all proteins would give. Each
shard is checked first: its record's fields and types, its sums (`Accumulator.load`, with their checksum)
and that the two belong together; a damaged shard is one line naming the file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from plmlens.analysis.accumulator import Accumulator, AccumulatorFileError
from plmlens.analysis.checkpoint import fingerprint_differences
from plmlens.analysis.result import AnalysisResult
from plmlens.proteins.archive import ArchiveError, is_int, is_number, one_line, parse_json
from plmlens.rundir import SHARD_RECORD, SUMMARY, RunDir

FORMAT = "plmlens-analyze-shard/1"
#: Counters of a run that add up over shards.
_ADDITIVE = ("n_truncated", "n_batches", "tokens", "padded_tokens", "oom_retries", "wall_seconds")


class MergeError(ValueError):
    """Shards that are not the parts of one run; the message is one line."""


def save_shard(result: AnalysisResult, directory: str | Path) -> dict[str, Path]:
    """Write a shard's sums (``accumulator.npz``) and record (``shard.json``), each atomically."""
    run = RunDir(directory)
    record = {"format": FORMAT, "info": result.info, "alpha": result.alpha}
    return {
        "accumulator": result.accumulator.save(run.accumulator_path()),
        "shard": run.write_json(SHARD_RECORD, record),
    }


def _read(directory: Path) -> tuple[Accumulator, dict]:
    run = RunDir(directory)
    path = run.file(SHARD_RECORD)
    if not path.exists():
        what = "a whole run, not a shard" if run.file(SUMMARY).exists() else "no shard.json"
        raise MergeError(f"{directory}: {what} (write shards with `plmlens analyze --shard i/K`)")
    try:
        if not path.is_file():
            raise ArchiveError(f"{path}: not a regular file")
        record = parse_json(path, path.read_text(encoding="utf-8"), "shard record")
    except ArchiveError as error:
        raise MergeError(str(error)) from None
    except (OSError, ValueError) as error:  # unreadable, or not UTF-8
        raise MergeError(f"{path}: unreadable ({one_line(error)})") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise MergeError(f"{path}: not a plmlens shard record")
    _check_record(path, record)
    try:
        acc = Accumulator.load(run.accumulator_path())
    except AccumulatorFileError as error:
        raise MergeError(str(error)) from None
    settings = record["info"]["fingerprint"].get("settings")
    # Settings a shard written before they existed lacks are not compared.
    if isinstance(settings, dict) and any(k in settings and settings[k] != v for k, v in acc.config().items()):
        raise MergeError(f"{directory}: accumulator.npz is not the one of shard.json's run (its settings differ)")
    return acc, record


def _check_record(path: Path, record: dict) -> None:
    """The fields of a shard record that merging uses, with their types and ranges."""

    def fail(reason: str) -> MergeError:
        return MergeError(f"{path}: damaged shard record ({reason})")

    info = record.get("info")
    fingerprint = info.get("fingerprint") if isinstance(info, dict) else None
    shard = fingerprint.get("shard") if isinstance(fingerprint, dict) else None
    if not isinstance(shard, dict):
        raise fail("no info.fingerprint.shard")
    count, index = shard.get("count"), shard.get("index")
    if not (is_int(count) and is_int(index) and 0 <= index < count):
        raise fail(f"shard {index!r:.20}/{count!r:.20} is not an index below a count")
    for name in _ADDITIVE:
        value = info.get(name)
        if value is not None and not (is_number(value) and value >= 0):
            raise fail(f"{name} is {value!r:.40}")
    skipped = info.get("skipped")
    if not isinstance(skipped, list) or not all(
        isinstance(s, dict) and isinstance(s.get("file"), str) and isinstance(s.get("reason"), str)
        and isinstance(s.get("chain"), (str, type(None)))
        for s in skipped
    ):  # fmt: skip
        raise fail("skipped is not a list of skipped records")
    alpha = record.get("alpha", 0.05)
    if not (is_number(alpha) and 0 < alpha < 1):
        raise fail(f"alpha is {alpha!r:.40}")


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
            _comparable({**fingerprint, "shard": fingerprint["shard"]["count"]}),
            _comparable({**reference, "shard": count}),
        )
        if differences:
            raise MergeError(f"{directory} is not a shard of the same run as {first_dir}: {'; '.join(differences)}")
        index = fingerprint["shard"]["index"]
        if index in seen:
            raise MergeError(f"shard {index}/{count} given twice: {seen[index]} and {directory}")
        seen[index] = directory
    if len(seen) < count:
        # Indices are distinct and below count, so a missing one is among the first len(seen) + 1; a
        # damaged count of billions must not be enumerated.
        missing = sorted(set(range(min(count, len(seen) + 10))) - set(seen))
        more = f" ({count - len(seen):,} in all)" if count - len(seen) > len(missing) else ""
        raise MergeError(f"shards {', '.join(f'{i}/{count}' for i in missing)}{more} are missing")
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


def _comparable(fingerprint: dict) -> dict:
    """A shard's fingerprint without the data's modification time: shards often run on machines with their own
    copy of the data, the same content written at another time."""
    content = fingerprint.get("source_content")
    if isinstance(content, dict):
        fingerprint = {**fingerprint, "source_content": {k: v for k, v in content.items() if k != "modified"}}
    return fingerprint
