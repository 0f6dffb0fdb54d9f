"""A cheap fingerprint of the data behind a SOURCE, so that a run is never resumed or merged on other data.

A SOURCE string names a path, not its content: a file replaced behind the same name would otherwise be
read as the same data. `source_fingerprint` records, for a file, its size, modification time and a SHA-256
of its first and last MiB; for a directory (or a glob) the same over its files, folded into one digest;
for an LMDB dataset also its record count. Reading at most 2 MiB per file keeps it fast on large
databases; a change that keeps size, time and both ends intact goes unnoticed, which a replaced or
re-written file never does.
"""

from __future__ import annotations

import glob
import hashlib
import os
from datetime import UTC, datetime
from pathlib import Path

from plmlens.proteins.sources import Source

#: Bytes hashed at each end of a file.
END_BYTES = 1 << 20
#: Hex digits of SHA-256 kept: 80 bits tell a changed file from an unchanged one, and fit in a one-line message.
DIGEST_CHARS = 20
#: Files an LMDB environment rewrites when read with locking; they say nothing about the records.
_VOLATILE = {"lock.mdb"}


def _ends_digest(path: Path, size: int) -> str:
    """SHA-256 of the first and the last `END_BYTES` of a file (the whole file when it is smaller)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        digest.update(handle.read(END_BYTES))
        if size > END_BYTES:
            handle.seek(max(END_BYTES, size - END_BYTES))
            digest.update(handle.read(END_BYTES))
    return digest.hexdigest()[:DIGEST_CHARS]


def _modified(mtime_ns: int) -> str:
    return datetime.fromtimestamp(mtime_ns / 1e9, tz=UTC).isoformat(timespec="microseconds")


def file_fingerprint(path: str | Path) -> dict:
    """``{"size", "modified", "sha256_ends"}`` of one regular file (`END_BYTES` at each end hashed)."""
    path = Path(path)
    stat = path.stat()
    ends = _ends_digest(path, stat.st_size)
    return {"size": stat.st_size, "modified": _modified(stat.st_mtime_ns), "sha256_ends": ends}


def _files_under(directory: Path) -> list[Path]:
    """Regular files below `directory` (symbolic links to files included), sorted; unreadable entries are left
    to the readers, which report them."""
    files = []
    for root, _dirs, names in os.walk(directory):
        files += [Path(root) / name for name in names if name not in _VOLATILE]
    return sorted(p for p in files if p.is_file())


def files_fingerprint(files: list[Path], base: Path | None = None) -> dict:
    """``{"files", "bytes", "modified", "sha256"}`` over a list of files: the count, their total size, the
    latest modification and one digest of every file's name (relative to `base`), size and ends (the time is
    kept apart, so that copies of the same data on two machines have the same digest)."""
    digest = hashlib.sha256()
    total, latest = 0, 0
    for path in files:
        try:
            stat = path.stat()
            ends = _ends_digest(path, stat.st_size)
        except OSError:
            continue
        name = path.relative_to(base).as_posix() if base is not None else str(path)
        digest.update(f"{name}\0{stat.st_size}\0{ends}\n".encode("utf-8", "surrogateescape"))
        total += stat.st_size
        latest = max(latest, stat.st_mtime_ns)
    return {"files": len(files), "bytes": total, "modified": _modified(latest) if files else None,
            "sha256": digest.hexdigest()[:DIGEST_CHARS]}  # fmt: skip


def _lmdb_records(path: Path) -> int | None:
    try:
        import lmdb

        with lmdb.open(str(path), readonly=True, lock=False, readahead=False, subdir=path.is_dir()) as env:
            return int(env.stat()["entries"])
    except Exception:  # a damaged dataset is the reader's to report, record by record
        return None


def source_fingerprint(source: str | Source) -> dict:
    """What the data behind a SOURCE is, cheaply (see the module docstring).

    Parameters
    ----------
    source : str or Source
        A SOURCE string (its options are not part of the fingerprint: the run's fingerprint holds the
        string itself).

    Returns
    -------
    dict
        ``kind`` (``file``, ``directory``, ``glob`` or ``missing``) with `file_fingerprint` or
        `files_fingerprint` fields, and ``records`` for an LMDB dataset.
    """
    source = source if isinstance(source, Source) else Source.parse(source)
    path = source.path()
    try:
        if path.is_file():
            found = {"kind": "file", **file_fingerprint(path)}
        elif path.is_dir():
            found = {"kind": "directory", **files_fingerprint(_files_under(path), path)}
        else:
            matches = sorted(Path(p) for p in glob.glob(source.location, recursive=True))
            found = {"kind": "glob", **files_fingerprint([p for p in matches if p.is_file()])} if matches else {}
    except OSError as error:  # the readers report what cannot be read; the fingerprint says it could not look
        return {"kind": "unreadable", "error": error.strerror or type(error).__name__}
    if not found:
        return {"kind": "missing"}
    if path.suffix == ".lmdb":
        found["records"] = _lmdb_records(path)
    return found
