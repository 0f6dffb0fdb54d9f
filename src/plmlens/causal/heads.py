"""Per-head access to a model's attention outputs: knocking heads out, and reading what they write.

Every supported architecture concatenates its heads' outputs (``heads × head_dim`` features, head ``h`` in
slice ``h``) and feeds them to one output projection (`HookSpec.head_projection`). The hook point
``blocks.{l}.attn.head_out`` (:mod:`plmlens.models.hooks`) is that projection's input split per head, seen
before heads are mixed, so a head can be removed there without touching its attention probabilities or any
other head. ALBERT shares one projection across its layers; the hooks count calls to know which layer is
running.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

from plmlens.models import ModelAdapter
from plmlens.models.errors import HookUnavailableError
from plmlens.models.hooks import (
    HEAD_OUT,
    HookFn,
    HookPoint,
    attach_hooks,
    hook_name,
    hook_point,
    projection_inputs,
)

#: How an ablated head's output is replaced.
ABLATION_MODES = ("zero", "mean")


class AblationUnsupportedError(HookUnavailableError):
    """The model's heads cannot be separated at its output projection (XLNet mixes them inside its attention;
    an architecture known only from transformers' records has no known projection)."""


def head_projections(adapter: ModelAdapter) -> list[nn.Module]:
    """The output-projection module of each layer (one module repeated for weight-shared layers).

    Raises
    ------
    AblationUnsupportedError
        When the architecture mixes heads elsewhere (XLNet), its projection is not known, or its blocks lack
        the module.
    """
    try:
        return [hook_point(adapter, hook_name(HEAD_OUT, layer)).module for layer in range(adapter.n_layers)]
    except HookUnavailableError as error:
        raise AblationUnsupportedError(str(error)) from None


def head_dim(adapter: ModelAdapter) -> int:
    """Features per head at the output projection (resolving it checks that they divide among the heads)."""
    return int(projection_inputs(head_projections(adapter)[0])) // adapter.n_heads


def _head_output_hooks(
    adapter: ModelAdapter, fn: HookFn, layers: Iterable[int] | None = None
) -> AbstractContextManager[list[HookPoint]]:
    """Hook `fn` on ``blocks.{l}.attn.head_out`` of `layers` (default: all), after checking that the model's
    heads can be separated at all."""
    head_projections(adapter)  # AblationUnsupportedError, not the vocabulary's error, for unsupported models
    chosen = range(adapter.n_layers) if layers is None else layers
    return attach_hooks(adapter, [(hook_name(HEAD_OUT, layer), fn) for layer in chosen])


class HeadAblation:
    """Knock heads out of a model while the context is open: ``with HeadAblation(adapter, [(0, 3)]): ...``.

    Parameters
    ----------
    adapter : ModelAdapter
        The model; the ablation applies to every forward pass through it (``iter_layers``,
        ``residue_log_probs``, its language-model head) and is removed on exit, leaving the model as it was.
    heads : iterable of (layer, head)
        0-based heads to ablate.
    mode : {"zero", "mean"}
        Replace each head's output by zero, or by its mean output over the data (`means`).
    means : ndarray, shape (layers, heads, head_dim), optional
        Mean head outputs (see :func:`mean_head_outputs`); required for ``mode="mean"``.
    """

    def __init__(
        self,
        adapter: ModelAdapter,
        heads: Iterable[tuple[int, int]],
        mode: str = "zero",
        means: np.ndarray | None = None,
    ) -> None:
        if mode not in ABLATION_MODES:
            raise ValueError(f"ablation mode must be one of {ABLATION_MODES}, got {mode!r}")
        if mode == "mean" and means is None:
            raise ValueError("mean ablation needs the heads' mean outputs (mean_head_outputs)")
        self.adapter = adapter
        self.heads = sorted({(int(layer), int(head)) for layer, head in heads})
        for layer, head in self.heads:
            if not (0 <= layer < adapter.n_layers and 0 <= head < adapter.n_heads):
                raise IndexError(f"head ({layer}, {head}) outside {adapter.n_layers} layers × {adapter.n_heads} heads")
        self.mode = mode
        self.dim = head_dim(adapter)
        self._means = None if means is None else torch.as_tensor(np.asarray(means, dtype=np.float32))
        if self._means is not None and tuple(self._means.shape) != (adapter.n_layers, adapter.n_heads, self.dim):
            raise ValueError(
                f"means have shape {tuple(self._means.shape)}, expected "
                f"({adapter.n_layers}, {adapter.n_heads}, {self.dim})"
            )
        self._by_layer: dict[int, list[int]] = {}
        for layer, head in self.heads:
            self._by_layer.setdefault(layer, []).append(head)
        self._context: Any = None

    def _edit(self, head_outputs: torch.Tensor, point: HookPoint) -> torch.Tensor:
        """Replace the ablated heads of ``point.layer`` in a copy of its heads' outputs (..., heads, head_dim)."""
        layer = point.layer
        edited = head_outputs.clone()
        for head in self._by_layer[layer]:
            if self.mode == "zero":
                edited[..., head, :] = 0
            else:
                edited[..., head, :] = self._means[layer, head].to(edited.device, edited.dtype)
        return edited

    def __enter__(self) -> HeadAblation:
        if self._context is not None:
            raise RuntimeError("this HeadAblation is already active")
        self._context = _head_output_hooks(self.adapter, self._edit, sorted(self._by_layer))
        self._context.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        context, self._context = self._context, None
        context.__exit__(*exc)


class GroupAblation:
    """Knock a different group of heads out of each slice of every batch: ``with GroupAblation(adapter, groups)``
    and a batch of the same proteins repeated ``len(groups)`` times, group after group, evaluates every group in
    one forward pass.

    Parameters
    ----------
    adapter : ModelAdapter
    groups : sequence of iterables of (layer, head)
        0-based heads of each group; rows ``[g·B, (g+1)·B)`` of a batch of ``len(groups) · B`` rows lose group
        ``g``'s heads.
    mode : {"zero", "mean"}
        As in `HeadAblation`.
    means : ndarray, shape (layers, heads, head_dim), optional
        As in `HeadAblation`.
    """

    def __init__(
        self,
        adapter: ModelAdapter,
        groups: Sequence[Iterable[tuple[int, int]]],
        mode: str = "zero",
        means: np.ndarray | None = None,
    ) -> None:
        # One HeadAblation per group checks the arguments exactly as a single group is checked.
        checked = [HeadAblation(adapter, heads, mode=mode, means=means) for heads in groups]
        if not checked:
            raise ValueError("GroupAblation needs at least one group")
        self.adapter, self.mode = adapter, mode
        self._means = checked[0]._means
        self._kept = torch.ones((len(checked), adapter.n_layers, adapter.n_heads), dtype=torch.bool)
        for g, ablation in enumerate(checked):
            for layer, head in ablation.heads:
                self._kept[g, layer, head] = False
        self._layers = sorted({layer for ablation in checked for layer, _ in ablation.heads})
        self._context: Any = None

    def _edit(self, head_outputs: torch.Tensor, point: HookPoint) -> torch.Tensor:
        """Each slice of rows with its group's heads of ``point.layer`` replaced."""
        groups = self._kept.shape[0]
        if head_outputs.shape[0] % groups:
            raise ValueError(f"a batch of {head_outputs.shape[0]} rows does not hold {groups} groups' copies")
        kept = self._kept[:, point.layer].repeat_interleave(head_outputs.shape[0] // groups, dim=0)
        kept = kept.to(head_outputs.device)[:, None, :, None]
        if self.mode == "zero":
            replacement = torch.zeros((), dtype=head_outputs.dtype, device=head_outputs.device)
        else:
            replacement = self._means[point.layer].to(head_outputs.device, head_outputs.dtype)
        return torch.where(kept, head_outputs, replacement)

    def __enter__(self) -> GroupAblation:
        if self._context is not None:
            raise RuntimeError("this GroupAblation is already active")
        self._context = _head_output_hooks(self.adapter, self._edit, self._layers)
        self._context.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        context, self._context = self._context, None
        context.__exit__(*exc)


@contextmanager
def record_head_outputs(adapter: ModelAdapter) -> Iterator[list[torch.Tensor]]:
    """Collect each layer's heads' outputs of the next forward passes: the list gets one tensor of shape
    ``(batch, tokens, heads, head_dim)`` per layer and pass, in order (float32, on the CPU)."""
    seen: list[torch.Tensor] = []

    def keep(head_outputs: torch.Tensor, point: HookPoint) -> None:
        seen.append(head_outputs.detach().float().cpu())

    with _head_output_hooks(adapter, keep):
        yield seen


def mean_head_outputs(
    adapter: ModelAdapter,
    sequences: Sequence[Any],
    *,
    batch_size: int = 8,
    max_length: int = 512,
) -> np.ndarray:
    """Each head's output averaged over every residue position of `sequences` (special tokens and padding
    excluded): the replacement of mean ablation.

    Returns
    -------
    ndarray of float64, shape (layers, heads, head_dim)
    """
    dim = head_dim(adapter)
    sums = torch.zeros((adapter.n_layers, adapter.n_heads, dim), dtype=torch.float64)
    count = 0
    for start in range(0, len(sequences), batch_size):
        encoding = adapter.encode(sequences[start : start + batch_size], max_length=max_length)
        residues = torch.zeros(encoding.input_ids.shape, dtype=torch.bool)
        for b, (first, n) in enumerate(zip(encoding.starts.tolist(), encoding.lengths.tolist(), strict=True)):
            residues[b, first : first + n] = True
        count += int(residues.sum())

        def add(head_outputs: torch.Tensor, point: HookPoint, residues: torch.Tensor = residues) -> None:
            values = head_outputs.detach().double().cpu()
            sums[point.layer] += values[residues].reshape(-1, adapter.n_heads, dim).sum(dim=0)

        with _head_output_hooks(adapter, add), torch.no_grad():
            adapter.model(**encoding.model_inputs(adapter.device), **adapter.hooks.forward_kwargs)
    if count == 0:
        raise ValueError("no residues to average head outputs over")
    return (sums / count).numpy()
