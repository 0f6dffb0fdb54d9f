"""Checkpoints of a running analysis: the sums, which proteins are done, and what the run is.

A checkpoint is one ``.npz`` file (no pickles): the accumulator's sums and settings, plus ``__run__``, a
JSON record of the run's fingerprint (source, model, settings, shard), the positions already consumed,
the records skipped so far and the run's counters. It is written atomically, so after ``kill -9`` the
file is the last complete one. Reading one checks everything before anything is used (see
`load_checkpoint`): a damaged checkpoint is one line naming it, never a traceback or wrong totals.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from plmlens.analysis.accumulator import Accumulator, AccumulatorFileError
from plmlens.analysis.properties import Property
from plmlens.ioutils import write_bytes_atomic
from plmlens.proteins.archive import ArchiveError, is_int, is_number, parse_json, read_npz, text_member

FORMAT = "plmlens-analyze-checkpoint/1"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or that belongs to another run; the message is one line."""


@dataclass
class Progress:
    """Where a run stands: enough to continue it exactly.

    Attributes
    ----------
    complete_below : int
        Every position below it that this process takes is done.
    done : set of int
        Positions at or above `complete_below` that are done (the current read-ahead window).
    skipped : list of dict
        ``{"record": index, "file": ..., "chain": ..., "reason": ...}`` for each skipped record; a resumed
        run does not record them again.
    counters : dict
        Truncated proteins, tokens, padded tokens, batches, out-of-memory retries, seconds of work.
    """

    complete_below: int = 0
    done: set[int] = field(default_factory=set)
    skipped: list[dict] = field(default_factory=list)
    counters: dict[str, float] = field(default_factory=dict)

    def is_done(self, position: int) -> bool:
        return position < self.complete_below or position in self.done

    def to_dict(self) -> dict:
        return {
            "complete_below": self.complete_below, "done": sorted(self.done), "skipped": self.skipped,
            "counters": self.counters,
        }  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict) -> Progress:
        return cls(
            int(data["complete_below"]), {int(k) for k in data["done"]}, list(data["skipped"]),
            dict(data["counters"]),
        )  # fmt: skip


def save_checkpoint(path: str | Path, acc: Accumulator, fingerprint: dict, progress: Progress) -> Path:
    """Write the accumulator and the run's state to `path` atomically."""
    run = {"format": FORMAT, "fingerprint": fingerprint, "progress": progress.to_dict()}
    return write_bytes_atomic(path, acc.to_bytes(extra={"__run__": json.dumps(run)}))


def load_checkpoint(
    path: str | Path,
    fingerprint: dict,
    properties: Sequence[str | Property] | None = None,
    device: str | torch.device | None = None,
    engine: str = "auto",
) -> tuple[Accumulator, Progress]:
    """Read a checkpoint written by `save_checkpoint` for the run described by `fingerprint`.

    Everything is checked before it is used: the archive (plain arrays, CRCs, the checksum of its entries
    where it has one), the run record's types, the accumulator (see `Accumulator.load`) and how the two
    agree (the proteins the sums hold against the positions the record says are done).

    Raises
    ------
    CheckpointError
        One line naming the file: unreadable, damaged, not a plmlens checkpoint, or written by a run with
        another source, model, settings or shard (the differing fields are named).
    """
    path = Path(path)
    try:
        members = read_npz(path, "checkpoint")
        if "__run__" not in members:
            raise CheckpointError(f"{path}: not a plmlens analyze checkpoint (no run record)")
        run = parse_json(path, text_member(path, members, "__run__", "checkpoint"), "checkpoint run record")
    except ArchiveError as error:
        message = f"{path}: unreadable checkpoint ({error.detail})" if error.detail else str(error)
        raise CheckpointError(message) from None
    if not isinstance(run, dict) or run.get("format") != FORMAT:
        found = run.get("format") if isinstance(run, dict) else type(run).__name__
        raise CheckpointError(f"{path}: not a plmlens analyze checkpoint (format {found!r:.60})")
    stored = run.get("fingerprint")
    if not isinstance(stored, dict) or not isinstance(run.get("progress"), dict):
        raise CheckpointError(f"{path}: damaged checkpoint (its fingerprint or progress is not a record)")
    differences = fingerprint_differences(stored, fingerprint)
    if differences and all(d.startswith("source_content.") for d in differences):
        raise CheckpointError(
            f"{path}: the data behind {fingerprint.get('source')} changed since this checkpoint was written "
            f"({'; '.join(differences)}); restore it, or start afresh with --overwrite"
        )
    if differences:
        raise CheckpointError(
            f"{path} belongs to another run ({'; '.join(differences)}); use the same settings, or --overwrite"
        )
    progress = _checked_progress(path, run["progress"])
    try:
        acc = Accumulator.from_members(path, members, properties=properties, device=device, engine=engine)
    except AccumulatorFileError as error:
        raise CheckpointError(str(error).replace("damaged accumulator", "damaged checkpoint", 1)) from None
    _check_consistency(path, acc, progress, fingerprint)
    return acc, progress


def _checked_progress(path: Path, data: dict) -> Progress:
    """A run record's progress, with every field's type and range checked."""

    def fail(reason: str) -> CheckpointError:
        return CheckpointError(f"{path}: damaged checkpoint ({reason})")

    complete_below, done = data.get("complete_below"), data.get("done")
    skipped, counters = data.get("skipped"), data.get("counters")
    if not is_int(complete_below) or complete_below < 0:
        raise fail(f"complete_below is {complete_below!r:.40}, not a position")
    if not isinstance(done, list) or not all(is_int(k) and k >= 0 for k in done) or len(set(done)) != len(done):
        raise fail("done is not a list of distinct positions")
    if not isinstance(skipped, list):
        raise fail("skipped is not a list")
    for entry in skipped:
        if not (
            isinstance(entry, dict)
            and is_int(entry.get("record"))
            and entry["record"] >= 0
            and all(isinstance(entry.get(k), str) for k in ("file", "reason"))
            and isinstance(entry.get("chain"), (str, type(None)))
        ):
            raise fail(f"a skipped record is {entry!r:.60}")
    if not isinstance(counters, dict) or not all(is_number(v) and v >= 0 for v in counters.values()):
        raise fail("counters are not non-negative numbers")
    return Progress(complete_below, set(done), list(skipped), dict(counters))


def _check_consistency(path: Path, acc: Accumulator, progress: Progress, fingerprint: dict) -> None:
    """The sums and the run record must tell one story: the proteins the sums hold are the positions marked
    done (less those skipped); counters equal the accumulator's counts."""

    def fail(reason: str) -> CheckpointError:
        return CheckpointError(f"{path}: damaged checkpoint ({reason})")

    for name, count in (("n_proteins", acc.n_proteins), ("n_residues", acc.n_residues)):
        if name in progress.counters and progress.counters[name] != count:
            raise fail(f"the run record counts {progress.counters[name]!r:.20} {name[2:]}, the sums {count}")
    # Every protein in the sums has its own position, done: below complete_below or in `done`.
    covered = progress.complete_below + sum(1 for k in progress.done if k >= progress.complete_below)
    if acc.n_proteins > covered:
        raise fail(f"{acc.n_proteins} proteins in the sums but {covered} positions done")
    settings, shard = fingerprint.get("settings"), fingerprint.get("shard")
    limit = settings.get("limit") if isinstance(settings, dict) else None
    if is_int(limit) and covered > limit:
        raise fail(f"{covered} positions done, beyond the run's limit of {limit}")
    # A process that takes every batch has done each position it passed: put in the sums, or skipped.
    skipped = len(progress.skipped)
    if isinstance(shard, dict) and shard.get("count") == 1 and covered > acc.n_proteins + skipped:
        raise fail(f"{covered} positions done but {acc.n_proteins} proteins in the sums and {skipped} skipped")


def fingerprint_differences(stored: dict, current: dict, prefix: str = "") -> list[str]:
    """Human-readable differences between two fingerprints (nested dicts), e.g. ``model.name: a ≠ b``."""
    differences = []
    for key in sorted(set(stored) | set(current)):
        a, b = stored.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            differences += fingerprint_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            differences.append(f"{prefix}{key}: {a!r} there, {b!r} here")
    return differences
