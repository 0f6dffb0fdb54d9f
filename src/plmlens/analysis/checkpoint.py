"""Checkpoints of a running analysis: the sums, which proteins are done, and what the run is.

A checkpoint is one ``.npz`` file (no pickles): the accumulator's sums and settings, plus ``__run__``, a
JSON record of the run's fingerprint (source, model, settings, shard), the positions already consumed,
the records skipped so far and the run's counters. It is written atomically, so after ``kill -9`` the
file is the last complete one.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from plmlens.analysis.accumulator import Accumulator
from plmlens.analysis.properties import Property
from plmlens.ioutils import write_bytes_atomic

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

    Raises
    ------
    CheckpointError
        One line naming the file: unreadable, not a plmlens checkpoint, or written by a run with another
        source, model, settings or shard (the differing fields are named).
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            if "__run__" not in data.files:
                raise CheckpointError(f"{path}: not a plmlens analyze checkpoint (no run record)")
            run = json.loads(str(data["__run__"]))
    except CheckpointError:
        raise
    except (ValueError, EOFError, zipfile.BadZipFile, KeyError):
        raise CheckpointError(f"{path}: unreadable checkpoint (not a complete .npz archive)") from None
    except OSError as error:
        raise CheckpointError(f"{path}: unreadable checkpoint ({error.strerror or error})") from None
    if not isinstance(run, dict) or run.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a plmlens analyze checkpoint (format {run.get('format')!r})")
    differences = fingerprint_differences(run.get("fingerprint", {}), fingerprint)
    if differences:
        raise CheckpointError(
            f"{path} belongs to another run ({'; '.join(differences)}); use the same settings, or --overwrite"
        )
    try:
        acc = Accumulator.load(path, properties=properties, device=device, engine=engine)
        progress = Progress.from_dict(run["progress"])
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: damaged checkpoint ({type(error).__name__}: {error})") from None
    return acc, progress


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
