"""Reading plmlens' own ``.npz`` files (protein sets, accumulators, checkpoints) as untrusted input.

A damaged or hand-edited file must end in one line naming it, never in a traceback, an unpickled object
or a memory blow-up. `read_npz` reads every member as a plain NumPy array (no pickles), checks each
member's declared shape against the bytes the archive holds before allocating anything, and drains every
member to its end so that zip's CRC is always checked. `array_checksum` is the SHA-256 of the arrays that
the writers store beside them (in their JSON header) and the readers compare; `parse_json` reads a JSON
header, refusing NaN and infinities (unless asked to keep them) and nesting deep enough to exhaust the
stack, as one line too.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import math
import struct
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np

#: Prefix of the checksums `array_checksum` writes (the algorithm, should it ever change).
CHECKSUM_PREFIX = "sha256:"
#: More members than any plmlens file has: a damaged directory must not make us read thousands.
MAX_MEMBERS = 256

# What reading a damaged zip or .npy member can raise: a bad directory (BadZipFile, struct.error), a
# damaged member (zlib.error, BadZipFile on a bad CRC, EOFError), a changed compression method or version
# (NotImplementedError, lzma.LZMAError, OSError from bz2), encryption flags (RuntimeError), a name that is
# not UTF-8 (UnicodeDecodeError), a bad .npy header (ValueError), absurd sizes (OverflowError, MemoryError).
_DAMAGE = (
    OSError, EOFError, ValueError, KeyError, IndexError, TypeError, RuntimeError, OverflowError, MemoryError,
    zipfile.BadZipFile, zlib.error, lzma.LZMAError, struct.error,
)  # fmt: skip


class ArchiveError(ValueError):
    """A plmlens ``.npz`` file that cannot be read or fails its checks; the message is one line.

    Attributes
    ----------
    detail : str or None
        For a file that is not a readable archive at all (`read_npz`), what is wrong, so that a caller can
        word its own message.
    """

    def __init__(self, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.detail = detail


def one_line(error: BaseException | str, limit: int = 200) -> str:
    """An exception (or text) as one line of at most `limit` characters, for error messages."""
    text = error if isinstance(error, str) else " ".join(str(error).split()) or type(error).__name__
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def array_checksum(arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 over each array's name, dtype, shape and bytes (C order), in name order.

    Parameters
    ----------
    arrays : mapping of str to ndarray
        Plain (non-object) arrays.

    Returns
    -------
    str
        ``"sha256:"`` and 64 hex digits.
    """
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(json.dumps([name, array.dtype.str, list(array.shape)]).encode())
        digest.update(array.reshape(-1).view(np.uint8))
    return CHECKSUM_PREFIX + digest.hexdigest()


def verify_checksum(path: Path, stored: object, arrays: Mapping[str, np.ndarray]) -> None:
    """Compare a stored checksum with the arrays read; None (a file written before checksums) passes.

    Raises
    ------
    ArchiveError
        When `stored` is not a checksum or does not match.
    """
    if stored is None:
        return
    if not isinstance(stored, str) or not stored.startswith(CHECKSUM_PREFIX):
        raise ArchiveError(f"{path}: damaged file (checksum field is {stored!r:.60})")
    if array_checksum(arrays) != stored:
        raise ArchiveError(f"{path}: damaged file (its arrays do not match their checksum)")


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    with archive.open(info) as handle:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
        else:
            raise ValueError(f"member {info.filename!r}: .npy format version {version} is not supported")
        if dtype.hasobject:
            raise ValueError(f"member {info.filename!r} holds Python objects (refused: no unpickling)")
        # The header's shape is checked against the bytes the archive declares before anything is
        # allocated: a damaged header must not make us allocate petabytes.
        if math.prod(shape) * dtype.itemsize > info.file_size:
            raise ValueError(f"member {info.filename!r} claims {shape} {dtype} in {info.file_size} bytes")
    with archive.open(info) as handle:
        array = np.lib.format.read_array(handle, allow_pickle=False)
        # Reading to the end is what makes zipfile compare the member's CRC.
        if handle.read(1):
            raise ValueError(f"member {info.filename!r} has bytes after its array")
    return array


def read_npz(path: str | Path, what: str) -> dict[str, np.ndarray]:
    """Every member of an ``.npz`` file as a plain array, or one line naming the file.

    Parameters
    ----------
    path : str or Path
        A regular file.
    what : str
        What the file should be (``protein set``, ``accumulator``...), for the message.

    Returns
    -------
    dict of str to ndarray
        By member name without ``.npy``.

    Raises
    ------
    ArchiveError
        ``PATH: not a readable WHAT (detail)`` for anything but a complete, undamaged archive of arrays.
    """
    path = Path(path)
    try:
        if not path.is_file():
            raise ValueError("not a regular file" if path.exists() else "no such file")
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            if len(infos) > MAX_MEMBERS:
                raise ValueError(f"{len(infos)} members")
            arrays = {}
            for info in infos:
                if not info.filename.endswith(".npy"):
                    raise ValueError(f"member {info.filename!r} is not a NumPy array")
                arrays[info.filename.removesuffix(".npy")] = _read_member(archive, info)
            return arrays
    except _DAMAGE as error:
        detail = one_line(error.strerror if isinstance(error, OSError) and error.strerror else error)
        raise ArchiveError(f"{path}: not a readable {what} ({detail})", detail) from None


def text_member(path: Path, arrays: Mapping[str, np.ndarray], name: str, what: str) -> str:
    """The text stored as a 0-d string array (a JSON header), or one line naming the file."""
    value = arrays.get(name)
    if value is None:
        raise ArchiveError(f"{path}: not a {what} (no {name} entry)")
    if value.ndim != 0 or value.dtype.kind != "U":
        raise ArchiveError(f"{path}: damaged {what} ({name} is not text)")
    return str(value[()])


def parse_json(path: Path, text: str, what: str, allow_nan: bool = False) -> object:
    """JSON, or one line naming the file (also for nesting too deep to parse).

    Parameters
    ----------
    allow_nan : bool
        Accept ``NaN`` and ``Infinity`` (which Python's json writes for such floats); refused by default,
        where every number must be finite.
    """

    def refuse(constant: str) -> object:
        raise ValueError(f"{constant} is not a number JSON allows")

    try:
        return json.loads(text, parse_constant=None if allow_nan else refuse)
    except (ValueError, RecursionError) as error:
        raise ArchiveError(f"{path}: damaged {what} (unreadable JSON: {one_line(error, 120)})") from None


def is_int(value: object) -> bool:
    """Whether a JSON value is an integer (not a bool, not a float such as ``1e9``)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    """Whether a JSON value is a finite int or float (not a bool)."""
    if is_int(value):
        return True  # math.isfinite would overflow on a huge int: every int is finite
    return isinstance(value, float) and math.isfinite(value)
