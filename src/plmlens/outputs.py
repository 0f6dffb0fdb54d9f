"""Where a command writes: one writer per directory, nothing replaced unasked, and results that appear whole.

Every command that writes files claims its output directory first, before any model runs
(`claim_output`):

* the directory must be a directory that can be written and has space left, or the command stops with one
  line (`OutputError`);
* a lock (``DIR/.plmlens.lock``) keeps a second process from writing the same directory at the same time;
* outputs an earlier run left there are never replaced without ``--overwrite`` (the files a command writes
  are named by its `OutputSet`);
* temporary files and staging folders left by a process that was killed are removed.

A command with several output files writes them into a staging folder inside the directory and
`OutputClaim.commit` moves them into place. The set's *record* (``summary.json`` of a run,
``ablation.json``, ...) is removed first and moved last, with SIGTERM and SIGINT held back meanwhile: a
directory that holds a record holds the files written with it, never a mix of two runs, even after
``kill -9`` or a full disk.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import signal
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

#: The lock file of an output directory.
LOCK_NAME = ".plmlens.lock"
#: Bytes written (and removed) to check that an output directory has room before the work starts.
PROBE_BYTES = 64 * 1024
_STAGING_PREFIX = ".staging-"
_TRASH_PREFIX = ".replaced-"


class OutputError(OSError):
    """An output that cannot be written (not a directory, no permission, no space, in use, or already there
    and ``--overwrite`` not given); the message is one line naming the path."""


class Interrupted(BaseException):
    """SIGTERM or SIGINT arrived while results were being moved into place; they were moved first.

    Attributes
    ----------
    signal_number : int
    exit_code : int
        128 + the signal number, as a shell reports it.
    """

    def __init__(self, signal_number: int) -> None:
        self.signal_number = signal_number
        self.exit_code = 128 + signal_number
        super().__init__(f"{signal.Signals(signal_number).name} received; the results were written first")


@dataclass(frozen=True)
class OutputSet:
    """The files (or folders) a command writes into its output directory.

    Parameters
    ----------
    names : tuple of str
        Every file or folder the command may write, relative to the directory. An earlier output is any of
        them already there; on commit, names this run did not write are removed, so none is left stale.
    record : str, optional
        The file that marks a finished output (one of `names`): removed first and moved last on commit.
    stale : tuple of str
        Files or folders derived from an earlier output (e.g. ``report.html``, ``figures``), removed when it
        is replaced.
    """

    names: tuple[str, ...]
    record: str | None = None
    stale: tuple[str, ...] = ()


def os_error_reason(error: OSError) -> str:
    """An OS error in a few words, for one-line messages (a full disk and a refusal said plainly)."""
    if error.errno == errno.ENOSPC:
        return "no space left on the device"
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "permission denied" if error.errno != errno.EROFS else "read-only file system"
    return error.strerror or type(error).__name__


@dataclass
class OutputClaim:
    """A claimed output directory (see `claim_output`); release it with `release` or a ``with`` block."""

    directory: Path
    outputs: OutputSet
    _lock: object = field(default=None, repr=False)

    def existing(self) -> list[str]:
        """The set's names already present in the directory."""
        return [name for name in self.outputs.names if os.path.lexists(self.directory / name)]

    def staging(self) -> Path:
        """A new, empty staging folder inside the directory, for `commit`."""
        path = self.directory / f"{_STAGING_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"
        path.mkdir()
        return path

    @contextlib.contextmanager
    def staged(self) -> Iterator[Path]:
        """A staging folder whose contents are committed when the block ends without an error, and removed
        either way."""
        path = self.staging()
        try:
            yield path
            self.commit(path)
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def commit(self, staging: Path) -> list[Path]:
        """Move everything in `staging` into the directory, replacing the earlier output whole.

        The record is removed first and moved last; names of the set that this run did not write and the
        stale derived files are removed; SIGTERM and SIGINT wait until the moves are done (then
        `Interrupted` is raised).

        Returns
        -------
        list of Path
            The committed paths, in the directory.
        """
        record = self.outputs.record
        written = sorted(p.name for p in staging.iterdir())
        moved = [name for name in written if name != record] + ([record] if record in written else [])
        with deferred_signals():
            if record is not None:
                _remove(self.directory / record)
            for name in (*self.outputs.stale, *(n for n in self.outputs.names if n not in written)):
                _remove(self.directory / name)
            for name in moved:
                _replace(staging / name, self.directory / name)
            _fsync_directory(self.directory)
        shutil.rmtree(staging, ignore_errors=True)
        return [self.directory / name for name in moved]

    def release(self) -> None:
        """Give up the lock (the lock file stays: removing it would let two processes hold two locks)."""
        if self._lock is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock, fcntl.LOCK_UN)
                self._lock.close()
            self._lock = None

    def __enter__(self) -> OutputClaim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def claim_output(
    directory: str | Path, outputs: OutputSet, *, overwrite: bool = False, resume: bool = False
) -> OutputClaim:
    """Check, lock and tidy an output directory before any work is done.

    Parameters
    ----------
    directory : str or Path
        Created if missing (with its parents).
    outputs : OutputSet
        What the command writes there.
    overwrite : bool
        Replace an earlier output of the set (``--overwrite``).
    resume : bool
        Continue an interrupted run (``--resume``): its earlier output may be replaced too.

    Returns
    -------
    OutputClaim
        Holds the directory's lock until released.

    Raises
    ------
    OutputError
        One line: the path is not a directory, cannot be created or written, has no space left, is being
        written by another process, or holds an earlier output and neither `overwrite` nor `resume` is set.
    """
    directory = Path(directory)
    if os.path.lexists(directory) and not directory.is_dir():
        raise OutputError(f"{directory}: exists and is not a directory")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        lock = _lock(directory)
    except OutputError:
        raise
    except OSError as error:
        raise OutputError(f"{directory}: cannot write here ({os_error_reason(error)})") from None
    claim = OutputClaim(directory, outputs, lock)
    try:
        _check_space(directory)
        _remove_leftovers(directory)
        existing = claim.existing()
        if existing and not (overwrite or resume):
            raise OutputError(
                f"{directory} already holds {', '.join(existing)} from an earlier run; add --overwrite to replace it"
            )
    except BaseException:
        claim.release()
        raise
    return claim


def claim_file(path: str | Path, *, overwrite: bool = False) -> OutputClaim:
    """`claim_output` for a command that writes one file (e.g. a protein set, a JSON summary, a page):
    its folder is locked and checked, and an existing file is replaced only with `overwrite`. Write the file
    with `plmlens.ioutils.write_bytes_atomic`."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path}: is a directory, not a file name")
    return claim_output(path.parent if str(path.parent) else Path("."), OutputSet((path.name,)), overwrite=overwrite)


def _lock(directory: Path):
    handle = open(directory / LOCK_NAME, "a+")  # noqa: SIM115 -- held until release
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip()[:20]
        handle.close()
        who = f" (pid {holder})" if holder.isdigit() else ""
        message = f"{directory}: another plmlens process is writing here{who}; wait for it or use another --out"
        raise OutputError(message) from None
    except OSError:
        handle.close()
        raise
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def _check_space(directory: Path) -> None:
    """Write and remove a small file: a full disk or a folder that cannot be written fails here, in one line,
    rather than after hours of work."""
    probe = directory / f".plmlens-probe-{os.getpid()}.tmp"
    try:
        with open(probe, "wb") as handle:
            handle.write(b"\0" * PROBE_BYTES)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as error:
        raise OutputError(f"{directory}: cannot write here ({os_error_reason(error)})") from None
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()


def _remove_leftovers(directory: Path) -> None:
    """Temporary files (``.NAME.*.tmp`` of atomic writes, probes) and staging folders that a killed process
    left; this process holds the lock, so no live writer owns them."""
    for path in directory.glob(".*.tmp"):
        _remove(path)
    for path in directory.glob(f"{_TRASH_PREFIX}*"):
        _remove(path)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _replace(source: Path, target: Path) -> None:
    """Move `source` onto `target`; a folder replaces a folder (the old one is moved aside, then removed)."""
    if target.is_dir() and not target.is_symlink():
        aside = target.with_name(f"{_TRASH_PREFIX}{target.name}-{uuid.uuid4().hex[:8]}")
        os.replace(target, aside)
        os.replace(source, target)
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.replace(source, target)


def _fsync_directory(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def deferred_signals() -> Iterator[None]:
    """Hold SIGTERM and SIGINT back for the block (results being written or moved into place are never cut
    short); one that arrived meanwhile raises `Interrupted` once the block is done. A block inside another
    defers to the outer one. Off the main thread, where handlers cannot be set, the block runs as it is."""
    if threading.current_thread() is not threading.main_thread() or _held:
        yield
        return
    previous = {number: signal.signal(number, lambda n, _f: _held.append(n)) for number in _DEFERRED}
    _held.append(0)  # marks a block in progress; signals follow it
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        received = _held[1:]
        _held.clear()
    if received:
        raise Interrupted(received[0])


_DEFERRED = (signal.SIGTERM, signal.SIGINT)
#: While a `deferred_signals` block runs (main thread only): a 0, then the signals that arrived.
_held: list[int] = []
