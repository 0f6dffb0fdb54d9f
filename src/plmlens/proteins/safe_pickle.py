"""Unpickling of untrusted dataset records: plain containers, numbers, strings and numpy arrays only."""

from __future__ import annotations

import io
import pickle
import pickletools
from typing import Any

_ALLOWED = {
    ("builtins", "dict"), ("builtins", "list"), ("builtins", "tuple"), ("builtins", "set"),
    ("builtins", "frozenset"), ("builtins", "str"), ("builtins", "bytes"), ("builtins", "int"),
    ("builtins", "float"), ("builtins", "bool"), ("builtins", "complex"), ("builtins", "bytearray"),
    ("collections", "OrderedDict"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
}  # fmt: skip


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle refers to a global that is not a plain container, number, string or numpy array."""


#: Opcodes that name a slot of the unpickler's memo.
_MEMO_OPCODES = frozenset({"PUT", "BINPUT", "LONG_BINPUT", "GET", "BINGET", "LONG_BINGET"})


def _check_memo(data: bytes) -> None:
    """Refuse memo slots no pickle of this size can fill.

    The C unpickler keeps its memo in an array as long as the largest slot named: one damaged byte in a
    LONG_BINPUT (``LONG_BINPUT 1261652786``) made it allocate and clear 20 GB, which hung a run. A pickle
    fills its slots in order, each with at least one opcode, so no slot lies beyond its length.
    """
    try:
        for opcode, argument, _ in pickletools.genops(data):
            if opcode.name in _MEMO_OPCODES and (not isinstance(argument, int) or not 0 <= argument <= len(data)):
                raise pickle.UnpicklingError(f"memo slot {argument!r:.20} beyond a {len(data)}-byte pickle")
    except (ValueError, TypeError) as error:  # an unknown opcode, a truncated argument
        raise pickle.UnpicklingError(f"corrupt pickle: {error}") from None


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED or (module == "numpy" and name.endswith("DType")):
            return super().find_class(module, name)
        raise UnsafePickleError(f"refusing to unpickle {module}.{name}")


def safe_loads(data: bytes) -> Any:
    """Unpickle `data`, admitting only plain containers, numbers, strings and numpy arrays.

    Raises
    ------
    UnsafePickleError
        When the pickle names any other global (e.g. ``os.system``).
    pickle.UnpicklingError, EOFError, ValueError
        When the pickle is corrupt (also when it names memo slots beyond its own length, which would make
        the unpickler allocate gigabytes).
    """
    _check_memo(data)
    return _RestrictedUnpickler(io.BytesIO(data)).load()
