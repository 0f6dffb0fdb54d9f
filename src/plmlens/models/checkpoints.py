"""Reading checkpoint files safely and loading them into a module exactly."""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from plmlens.models.errors import ModelLoadError


def read_checkpoint(path: Path, name: str, *, allow_namespace: bool = False) -> Any:
    """Read a ``.bin``/``.pt`` file with ``weights_only=True``, or a ``.safetensors`` file.

    Parameters
    ----------
    path : Path
        Checkpoint file.
    name : str
        Model name for error messages.
    allow_namespace : bool
        Also accept :class:`argparse.Namespace` objects, which fairseq checkpoints hold (plain attribute
        bags; nothing in them is executed).

    Returns
    -------
    object
        The checkpoint (a state dict, or a dict holding one).

    Raises
    ------
    ModelLoadError
        If the file is missing or cannot be read.
    """
    if not path.is_file():
        raise ModelLoadError(f"{name}: checkpoint file {path} is missing")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        safe = [argparse.Namespace] if allow_namespace else []
        with torch.serialization.safe_globals(safe):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelLoadError(f"{name}: could not read checkpoint {path}: {reason}") from error


def load_exact(
    module: nn.Module,
    state: Mapping[str, torch.Tensor],
    name: str,
    *,
    may_miss: Iterable[str] = (),
) -> None:
    """Load a state dict, failing on any missing, unexpected or mis-shaped parameter.

    Parameters
    ----------
    module : nn.Module
        Target module.
    state : mapping of str to Tensor
        Parameters, already renamed to the module's names.
    name : str
        Model name for error messages.
    may_miss : iterable of str
        Parameter names allowed to be absent (weights tied to another parameter that is present).

    Raises
    ------
    ModelLoadError
        On any mismatch, naming the first few offending parameters.
    """
    expected = module.state_dict()
    allowed = set(may_miss)
    missing = sorted(k for k in expected if k not in state and k not in allowed)
    unexpected = sorted(k for k in state if k not in expected)
    shapes = sorted(
        f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
        for k in state
        if k in expected and tuple(state[k].shape) != tuple(expected[k].shape)
    )
    problems = []
    if missing:
        problems.append(f"missing {', '.join(missing[:3])}" + (" ..." if len(missing) > 3 else ""))
    if unexpected:
        problems.append(f"unexpected {', '.join(unexpected[:3])}" + (" ..." if len(unexpected) > 3 else ""))
    if shapes:
        problems.append(f"shape mismatch {', '.join(shapes[:3])}" + (" ..." if len(shapes) > 3 else ""))
    if problems:
        raise ModelLoadError(f"{name}: checkpoint does not match the architecture: {'; '.join(problems)}")
    module.load_state_dict(state, strict=False)
