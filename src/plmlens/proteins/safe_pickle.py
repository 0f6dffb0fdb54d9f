"""Unpickling of untrusted dataset records: plain containers, numbers, strings and numpy arrays only."""

from __future__ import annotations

import io
import pickle
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
        When the pickle is corrupt.
    """
    return _RestrictedUnpickler(io.BytesIO(data)).load()
