"""Named hook points of a model, in the style of TransformerLens: one vocabulary, one way to hook.

Every tensor plmlens reads from (or edits in) a model during a forward pass has a name. The names are the
same for every architecture; which module computes the tensor, and where in its inputs or outputs it is,
comes from the model's :class:`~plmlens.models.adapter.HookSpec` (the family table of
:mod:`plmlens.models.families`).

``embed``
    The hidden states entering the first layer block: the embedding layer's output (after ALBERT's
    projection, before T5's and XLNet's first layer), shape ``(batch, tokens, d)``.
``blocks.{l}.attn.pattern``
    The attention probabilities of layer ``l``, all heads, shape ``(batch, heads, query, key)`` over
    tokens (special tokens and padding included); XLNet's ``(query, key, batch, head)`` is permuted to
    this order.
``blocks.{l}.attn.head_out``
    Each head's output in layer ``l``, before the attention's output projection mixes the heads (the
    projection's input, split per head), shape ``(batch, tokens, heads, head_dim)``. Only where the
    projection is known: not XLNet (which mixes heads inside its attention) and not an architecture whose
    spec was derived from transformers' records.
``blocks.{l}.resid_post``
    The output hidden states of layer block ``l``, shape ``(batch, tokens, d)``; XLNet's time-major
    states are transposed to this order.
``lm_head``
    The logits of the language-model head, shape ``(batch, tokens, vocabulary)``; only for a model loaded
    with its head (``ModelAdapter.lm_model``) whose spec names it.

:func:`hook_names` lists the names a model has, :func:`hook_point` resolves one to its module and hook kind,
and :func:`attach_hooks` is the one way plmlens registers hooks: a context manager that hooks functions by
name and always removes them. A hook function is called as ``fn(value, point)`` with the tensor in the
shape above and the :class:`HookPoint`; returning a tensor (of the same shape) replaces the value in the
forward pass, returning None leaves it. Values are the model's own tensors (its dtype and device), so a
function that edits should edit a copy and return it.

Weight-shared layers (ALBERT runs one layer module once per layer) are told apart by counting: the
``k``-th call of a point's modules since the model's forward pass began is layer ``k``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from plmlens.models.errors import HookUnavailableError

if TYPE_CHECKING:
    from plmlens.models.adapter import ModelAdapter

#: Hook point kinds: the part of a name after ``blocks.{l}.`` for layer points, the whole name otherwise.
EMBED = "embed"
ATTN_PATTERN = "attn.pattern"
HEAD_OUT = "attn.head_out"
RESID_POST = "resid_post"
LM_HEAD = "lm_head"
LAYER_POINTS = (ATTN_PATTERN, HEAD_OUT, RESID_POST)
MODEL_POINTS = (EMBED, LM_HEAD)

#: How each point is hooked: a forward hook sees the module's output, a pre-hook its input.
HOOK_KINDS = {
    EMBED: "forward_pre",
    ATTN_PATTERN: "forward",
    HEAD_OUT: "forward_pre",
    RESID_POST: "forward",
    LM_HEAD: "forward",
}

_LAYER_NAME = re.compile(r"blocks\.(\d+)\.(" + "|".join(re.escape(p) for p in LAYER_POINTS) + r")")
_KNOWN = "embed, blocks.{layer}.attn.pattern, blocks.{layer}.attn.head_out, blocks.{layer}.resid_post, lm_head"


@dataclass(frozen=True, eq=False)
class HookPoint:
    """A hook name resolved on one model.

    Attributes
    ----------
    name : str
        The full name, e.g. ``blocks.3.attn.pattern``.
    point : str
        Its kind: ``embed``, ``attn.pattern``, ``attn.head_out``, ``resid_post`` or ``lm_head``.
    layer : int or None
        0-based layer for ``blocks.{l}.*`` names, None for ``embed`` and ``lm_head``.
    module : torch.nn.Module
        The module hooked to reach it (for weight-shared layers, the one module every layer runs).
    kind : {"forward", "forward_pre"}
        Whether the value is the module's output (forward hook) or its input (forward pre-hook).
    """

    name: str
    point: str
    layer: int | None
    module: nn.Module
    kind: str


#: A hook function: ``fn(value, point)``; a returned tensor replaces the value, None leaves it.
HookFn = Callable[[torch.Tensor, HookPoint], torch.Tensor | None]


def hook_name(point: str, layer: int | None = None) -> str:
    """The name of a point: ``hook_name("attn.pattern", 3) == "blocks.3.attn.pattern"``.

    Parameters
    ----------
    point : str
        A layer point (``attn.pattern``, ``attn.head_out``, ``resid_post``) with its `layer`, or ``embed`` or
        ``lm_head`` without.
    layer : int, optional
        0-based layer.
    """
    if point in LAYER_POINTS and layer is not None:
        return f"blocks.{int(layer)}.{point}"
    if point in MODEL_POINTS and layer is None:
        return point
    raise ValueError(f"no hook point {point!r} with layer {layer!r}; names are {_KNOWN}")


def parse_hook_name(name: str) -> tuple[str, int | None]:
    """Split a hook name into its point and layer: ``"blocks.3.resid_post"`` gives ``("resid_post", 3)``.

    Raises
    ------
    ValueError
        For a name outside the vocabulary, in one line listing the names.
    """
    if name in MODEL_POINTS:
        return name, None
    match = _LAYER_NAME.fullmatch(name) if isinstance(name, str) else None
    if match is None:
        raise ValueError(f"unknown hook name {name!r}; names are {_KNOWN}")
    return match.group(2), int(match.group(1))


def hook_names(adapter: ModelAdapter) -> list[str]:
    """Every hook name `adapter` has, in forward order (layer points of a layer together).

    ``blocks.{l}.attn.head_out`` is left out where the head projection is unknown, ``lm_head`` where there
    is no language-model head.
    """
    points = [p for p in LAYER_POINTS if _available(adapter, p)]
    names = [EMBED] + [hook_name(point, layer) for layer in range(adapter.n_layers) for point in points]
    return names + ([LM_HEAD] if _available(adapter, LM_HEAD) else [])


def hook_point(adapter: ModelAdapter, name: str) -> HookPoint:
    """Resolve a hook name on `adapter` to its module and hook kind.

    Parameters
    ----------
    adapter : ModelAdapter
        The model.
    name : str
        A name of the vocabulary (see the module's description).

    Raises
    ------
    ValueError
        For an unknown name or a layer the model does not have.
    HookUnavailableError
        For a point this model has no module for (a subclass of ValueError).
    """
    point, layer = parse_hook_name(name)
    if layer is not None and not 0 <= layer < adapter.n_layers:
        raise ValueError(
            f"{adapter.name}: hook {name!r} names layer {layer}, but it has layers 0 to {adapter.n_layers - 1}"
        )
    modules = _point_modules(adapter, point)
    # One module per layer, one shared by all, or (ALBERT's groups) consecutive layers sharing one.
    module = modules[0 if layer is None else layer * len(modules) // adapter.n_layers]
    return HookPoint(name, point, layer, module, HOOK_KINDS[point])


@contextmanager
def attach_hooks(
    adapter: ModelAdapter, hooks: Mapping[str, HookFn] | Iterable[tuple[str, HookFn]]
) -> Iterator[list[HookPoint]]:
    """Hook functions onto `adapter`'s model by name while the context is open; they are always removed.

    Parameters
    ----------
    adapter : ModelAdapter
        The model; the hooks act on every forward pass through it (its ``model`` or ``lm_model``).
    hooks : mapping of name to function, or iterable of (name, function)
        Several functions may share a name; they are called in the given order, each seeing the previous
        one's replacement.

    Yields
    ------
    list of HookPoint
        The resolved points, in the given order.

    Raises
    ------
    ValueError, HookUnavailableError
        From :func:`hook_point`, before anything is registered.
    """
    pairs = list(hooks.items()) if isinstance(hooks, Mapping) else list(hooks)
    resolved = [(hook_point(adapter, name), fn) for name, fn in pairs]
    by_point: dict[str, list[tuple[HookPoint, HookFn]]] = {}
    for point, fn in resolved:
        by_point.setdefault(point.point, []).append((point, fn))
    # Calls of each point's modules since the current forward pass began: the layer of the next call.
    calls: dict[str, int] = {}
    handles = [adapter.model.register_forward_pre_hook(lambda module, args: calls.clear())]
    try:
        for point, entries in by_point.items():
            handles += _register(adapter, point, entries, calls)
        yield [point for point, _ in resolved]
    finally:
        for handle in handles:
            handle.remove()


def _available(adapter: ModelAdapter, point: str) -> bool:
    try:
        _point_modules(adapter, point)
    except HookUnavailableError:
        return False
    return True


def _point_modules(adapter: ModelAdapter, point: str) -> list[nn.Module]:
    """The distinct modules to hook for `point`, in model order."""
    if point == ATTN_PATTERN:
        return adapter.attention_modules
    if point in (RESID_POST, EMBED):
        return adapter.blocks
    if point == HEAD_OUT:
        return _head_projections(adapter)
    return [_lm_head(adapter)]


def _head_projections(adapter: ModelAdapter) -> list[nn.Module]:
    spec, name = adapter.hooks, adapter.name
    if spec.head_projection is None:
        if spec.heads_mixed:
            reason = f"its {adapter.architecture} layers mix heads inside the attention"
        else:
            reason = f"its {adapter.architecture} family has no known head projection"
        raise HookUnavailableError(f"{name}: {reason}, so single heads cannot be separated (no {HEAD_OUT} hook)")
    try:
        modules = [block.get_submodule(spec.head_projection) for block in adapter.blocks]
    except AttributeError as error:
        raise HookUnavailableError(f"{name}: no {spec.head_projection!r} in its layer blocks ({error})") from None
    for module in modules:
        width = projection_inputs(module)
        if width is None:
            raise HookUnavailableError(f"{name}: its head projection {spec.head_projection!r} has no weight matrix")
        if width % adapter.n_heads:
            raise HookUnavailableError(f"{name}: {width} projection inputs for {adapter.n_heads} heads")
    return modules


def projection_inputs(module: nn.Module) -> int | None:
    """Input features of a head projection (``heads × head_dim``), read from its weight; None without one.

    Parameters
    ----------
    module : torch.nn.Module
        A ``torch.nn.Linear``, which stores its weight as (out, in), or GPT-2's ``Conv1D``, which stores (in, out).
    """
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        return None
    return int(weight.shape[1] if isinstance(module, nn.Linear) else weight.shape[0])


def _lm_head(adapter: ModelAdapter) -> nn.Module:
    path = adapter.hooks.lm_head
    if adapter.lm_model is None:
        raise HookUnavailableError(f"{adapter.name}: loaded without its language-model head (no {LM_HEAD} hook)")
    if path is None:
        raise HookUnavailableError(f"{adapter.name}: its {adapter.architecture} family names no language-model head")
    try:
        return adapter.lm_model.get_submodule(path)
    except AttributeError as error:
        raise HookUnavailableError(f"{adapter.name}: no {path!r} in its language-model head ({error})") from None


def _apply(entries: list[tuple[HookPoint, HookFn]], value: torch.Tensor) -> torch.Tensor | None:
    """Run the functions in order; the last replacement, or None when none replaced the value."""
    replaced = None
    for point, fn in entries:
        result = fn(value, point)
        if result is not None:
            value = replaced = result
    return replaced


def _register(
    adapter: ModelAdapter, point: str, entries: list[tuple[HookPoint, HookFn]], calls: dict[str, int]
) -> list[Any]:
    """Register one torch hook per distinct module of `point`, dispatching to the functions of each layer."""
    spec, modules = adapter.hooks, _point_modules(adapter, point)
    by_layer: dict[int | None, list[tuple[HookPoint, HookFn]]] = {}
    for entry in entries:
        by_layer.setdefault(entry[0].layer, []).append(entry)

    def layer_entries() -> list[tuple[HookPoint, HookFn]]:
        # Counted on every call, hooked layer or not; a call beyond the last layer (a module run outside
        # the model's forward pass) starts again at layer 0.
        count = calls.get(point, 0)
        calls[point] = count + 1
        return by_layer.get(count % adapter.n_layers, [])

    if point == ATTN_PATTERN:
        index, ijbh = spec.attention_index, spec.attention_layout == "ijbh"

        def on_attention(module: nn.Module, args: Any, output: Any) -> Any:
            chosen = layer_entries()
            if not chosen:
                return None
            probs = output[index]
            replaced = _apply(chosen, probs.permute(2, 3, 0, 1) if ijbh else probs)
            if replaced is None:
                return None
            edited = list(output)
            edited[index] = replaced.permute(2, 3, 0, 1) if ijbh else replaced
            return tuple(edited)

        return [m.register_forward_hook(on_attention) for m in modules]
    if point == HEAD_OUT:

        def on_heads(module: nn.Module, args: tuple) -> tuple | None:
            chosen = layer_entries()
            if not chosen:
                return None
            merged = args[0]
            replaced = _apply(chosen, merged.reshape(*merged.shape[:-1], adapter.n_heads, -1))
            return None if replaced is None else (replaced.reshape(*replaced.shape[:-2], -1), *args[1:])

        return [m.register_forward_pre_hook(on_heads) for m in modules]
    if point == RESID_POST:
        return [m.register_forward_hook(_block_output_hook(layer_entries, spec.hidden_layout)) for m in modules]
    if point == EMBED:
        hook = _first_block_input_hook(adapter, by_layer[None], calls)
        return [m.register_forward_pre_hook(hook, with_kwargs=True) for m in modules]

    def on_logits(module: nn.Module, args: Any, output: Any) -> Any:
        logits = output if isinstance(output, torch.Tensor) else output[0]
        replaced = _apply(by_layer[None], logits)
        if replaced is None or isinstance(output, torch.Tensor):
            return replaced
        return (replaced, *output[1:])

    return [m.register_forward_hook(on_logits) for m in modules]


def _block_output_hook(layer_entries: Callable[[], list], layout: str) -> Callable[..., Any]:
    """A forward hook reading (and replacing) a block's output hidden states as (batch, tokens, d)."""
    time_major = layout == "lbd"

    def on_block(module: nn.Module, args: Any, output: Any) -> Any:
        chosen = layer_entries()
        if not chosen:
            return None
        packed = isinstance(output, tuple | list)
        hidden = output[0] if packed else output
        replaced = _apply(chosen, hidden.transpose(0, 1) if time_major else hidden)
        if replaced is None:
            return None
        replaced = replaced.transpose(0, 1) if time_major else replaced
        return (replaced, *output[1:]) if packed else replaced

    return on_block


def _first_block_input_hook(
    adapter: ModelAdapter, entries: list[tuple[HookPoint, HookFn]], calls: dict[str, int]
) -> Callable[..., Any]:
    """A forward pre-hook on every block that reads the first block call's input of each forward pass: the
    embedding layer's output whatever the architecture (a shared block is called once per layer, and only
    its first call is the embedding)."""
    spec = adapter.hooks

    def on_block_input(module: nn.Module, args: Any, kwargs: Any) -> Any:
        first = calls.get(EMBED, 0) == 0
        calls[EMBED] = calls.get(EMBED, 0) + 1
        if not first:
            return None
        key = "hidden_states" if "hidden_states" in kwargs else "output_h"
        hidden = args[0] if args else kwargs.get(key)
        if not isinstance(hidden, torch.Tensor):
            raise RuntimeError(f"{adapter.name}: the first {spec.block_class} got no hidden states to read")
        time_major = spec.hidden_layout == "lbd"
        replaced = _apply(entries, hidden.transpose(0, 1) if time_major else hidden)
        if replaced is None:
            return None
        replaced = replaced.transpose(0, 1) if time_major else replaced
        return ((replaced, *args[1:]), kwargs) if args else (args, {**kwargs, key: replaced})

    return on_block_input
