"""Where a model runs and in which precision: ``auto`` choices and their spelling on the command line."""

from __future__ import annotations

import os

import torch

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """The torch device for ``auto`` (CUDA when available, else CPU) or a named device.

    Under torchrun (``LOCAL_RANK`` set), ``auto`` and a bare ``cuda`` mean this process's own GPU,
    ``cuda:LOCAL_RANK``.

    Parameters
    ----------
    device : str or torch.device or None
        ``auto`` (or None), ``cpu``, ``cuda``, ``cuda:1``, ``mps``, ...

    Returns
    -------
    torch.device

    Raises
    ------
    ValueError
        For CUDA asked for on a machine without it, or an unknown device name.
    """
    if isinstance(device, torch.device):
        chosen = device
    else:
        text = "auto" if device is None else str(device).strip().lower()
        if text == "auto":
            text = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            chosen = torch.device(text)
        except RuntimeError as error:
            raise ValueError(f"unknown device {device!r}: {error}") from None
    if chosen.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: CUDA is not available here (use --device cpu or auto)")
        if chosen.index is None:
            chosen = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    return chosen


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype | None:
    """The parameter dtype for ``auto``: bfloat16 on a GPU that supports it, else float32.

    Parameters
    ----------
    dtype : str or torch.dtype or None
        ``auto``, ``float32``, ``bfloat16``, ``float16`` (or ``fp32``, ``bf16``, ``fp16``), a torch dtype,
        or None to keep the dtype the weights are stored in.
    device : torch.device
        Where the model runs.

    Returns
    -------
    torch.dtype or None
    """
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    text = str(dtype).strip().lower()
    if text == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if text not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; use auto, float32, bfloat16 or float16")
    return DTYPES[text]


def dtype_name(dtype: torch.dtype | None) -> str:
    """``float32``, ``bfloat16``, ... (``as stored`` for None)."""
    return "as stored" if dtype is None else str(dtype).removeprefix("torch.")
