"""Per-head access to a model's attention outputs: knocking heads out, and reading what they write.

Every supported architecture concatenates its heads' outputs (``heads × head_dim`` features, head ``h`` in
slice ``h``) and feeds them to one output projection (`HookSpec.head_projection`). A forward pre-hook on
that projection sees each head's output separately, before heads are mixed, so a head can be removed there
without touching its attention probabilities or any other head. ALBERT shares one projection across its
layers; the hook counts calls to know which layer is running.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

from plmlens.models import ModelAdapter

#: How an ablated head's output is replaced.
ABLATION_MODES = ("zero", "mean")


class AblationUnsupportedError(ValueError):
    """The model's heads cannot be separated at its output projection."""


def head_projections(adapter: ModelAdapter) -> list[nn.Module]:
    """The output-projection module of each layer (one module repeated for weight-shared layers).

    Raises
    ------
    AblationUnsupportedError
        When the architecture mixes heads elsewhere (XLNet) or its blocks lack the module.
    """
    path = adapter.hooks.head_projection
    if path is None:
        raise AblationUnsupportedError(
            f"{adapter.name}: its {adapter.architecture} layers mix heads inside the attention, so single "
            "heads cannot be ablated"
        )
    blocks = adapter.blocks
    try:
        modules = [block.get_submodule(path) for block in blocks]
    except AttributeError as error:
        raise AblationUnsupportedError(f"{adapter.name}: no {path!r} in its layer blocks ({error})") from None
    if len(modules) == 1 and adapter.n_layers > 1:
        modules = modules * adapter.n_layers
    if len(modules) != adapter.n_layers:
        raise AblationUnsupportedError(f"{adapter.name}: {len(modules)} projections for {adapter.n_layers} layers")
    return modules


def head_dim(adapter: ModelAdapter) -> int:
    """Features per head at the output projection."""
    projection = head_projections(adapter)[0]
    width = projection.weight.shape[1] if isinstance(projection, nn.Linear) else projection.weight.shape[0]
    if width % adapter.n_heads:
        raise AblationUnsupportedError(f"{adapter.name}: {width} projection inputs for {adapter.n_heads} heads")
    return width // adapter.n_heads


@contextmanager
def _projection_hooks(
    adapter: ModelAdapter, edit: Callable[[int, torch.Tensor], torch.Tensor | None]
) -> Iterator[None]:
    """Call ``edit(layer, heads_input)`` before every output projection; a returned tensor replaces the input."""
    modules = head_projections(adapter)
    layers_of: dict[int, list[int]] = {}
    for layer, module in enumerate(modules):
        layers_of.setdefault(id(module), []).append(layer)
    calls = {key: 0 for key in layers_of}

    def hook(module: nn.Module, args: tuple) -> tuple | None:
        key = id(module)
        served = layers_of[key]
        layer = served[calls[key] % len(served)]
        calls[key] += 1
        replaced = edit(layer, args[0])
        return None if replaced is None else (replaced, *args[1:])

    unique = {id(m): m for m in modules}.values()
    handles = [m.register_forward_pre_hook(hook) for m in unique]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


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

    def _edit(self, layer: int, heads_input: torch.Tensor) -> torch.Tensor | None:
        heads = self._by_layer.get(layer)
        if not heads:
            return None
        edited = heads_input.clone()
        for head in heads:
            block = slice(head * self.dim, (head + 1) * self.dim)
            if self.mode == "zero":
                edited[..., block] = 0
            else:
                edited[..., block] = self._means[layer, head].to(edited.device, edited.dtype)
        return edited

    def __enter__(self) -> HeadAblation:
        if self._context is not None:
            raise RuntimeError("this HeadAblation is already active")
        self._context = _projection_hooks(self.adapter, self._edit)
        self._context.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        context, self._context = self._context, None
        context.__exit__(*exc)


@contextmanager
def record_head_outputs(adapter: ModelAdapter) -> Iterator[list[torch.Tensor]]:
    """Collect each layer's heads' outputs of the next forward passes: the list gets one tensor of shape
    ``(batch, tokens, heads, head_dim)`` per layer and pass, in order (float32, on the CPU)."""
    dim = head_dim(adapter)
    seen: list[torch.Tensor] = []

    def keep(layer: int, heads_input: torch.Tensor) -> None:
        seen.append(heads_input.detach().float().cpu().reshape(*heads_input.shape[:-1], adapter.n_heads, dim))

    with _projection_hooks(adapter, keep):
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

        def add(layer: int, heads_input: torch.Tensor, residues: torch.Tensor = residues) -> None:
            values = heads_input.detach().double().cpu()
            sums[layer] += values[residues].reshape(-1, adapter.n_heads, dim).sum(dim=0)

        with _projection_hooks(adapter, add), torch.no_grad():
            adapter.model(**encoding.model_inputs(adapter.device), **adapter.hooks.forward_kwargs)
    if count == 0:
        raise ValueError("no residues to average head outputs over")
    return (sums / count).numpy()
