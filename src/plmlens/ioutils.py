"""Atomic file output: a result file is either complete or absent, never half-written."""

from __future__ import annotations

import os
import stat
import tempfile
import threading
from pathlib import Path

_umask_lock = threading.Lock()


def _umask() -> int:
    """The process umask, read without changing it where Linux shows it (os.umask can only be read by
    setting it, so elsewhere it is set and restored under a lock)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _umask_lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _plain_write_mode(path: Path) -> int:
    """The mode a plain ``open(path, "w")`` would leave: an existing file's own, else 0666 less the umask."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return 0o666 & ~_umask()


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` via a temporary file in the same directory and an atomic rename.

    The file gets the mode a plain write would give it (an existing file keeps its mode; a new one gets
    0666 less the umask), not the 0600 of the temporary file, so results stay readable to a group.

    Parameters
    ----------
    path : str or Path
        Destination; its parent directories are created.

    Returns
    -------
    Path
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = _plain_write_mode(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write `text` (UTF-8) atomically; see `write_bytes_atomic`."""
    return write_bytes_atomic(path, text.encode("utf-8"))
