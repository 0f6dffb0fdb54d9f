"""The model adapter: residue-aligned attention and hidden states, one layer at a time.

A :class:`ModelAdapter` wraps a transformers module and its :class:`ResidueTokenizer`. Hooks on the named
points ``blocks.{l}.attn.pattern`` and ``blocks.{l}.resid_post`` (:mod:`plmlens.models.hooks`) take the
attention probabilities and the block's output as they are computed, cut them down to the residues of each
protein (special tokens and padding dropped, rows *not* renormalised, as in Vig et al. 2021) and hand them
over. The forward pass runs in a worker thread that waits for the consumer to take each layer before it
computes the next, so at most a few layers of a batch are alive at once however deep the model. The hooks
also replace the attention tensor that transformers would carry on in its outputs by an empty one, so the
model keeps nothing either.
"""

from __future__ import annotations

import queue
import threading
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, suppress
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from plmlens.models.errors import ModelLoadError
from plmlens.models.hooks import (
    ATTN_PATTERN,
    EMBED,
    RESID_POST,
    HookFn,
    HookPoint,
    attach_hooks,
    hook_name,
    hook_names,
    hook_point,
)
from plmlens.models.tokenizers import STANDARD_RESIDUES, Encoding, ResidueTokenizer, as_records
from plmlens.proteins.annotations import CHAIN_TYPES, antibody_chain_type

#: Largest token count recorded for models with relative positions only (XLNet, T5), which have no limit.
UNBOUNDED = 1 << 30


class ChainTypeWarning(UserWarning):
    """A chain-type-specific antibody model (Sapiens heavy or light) is run on the other chain type."""


def _chain_type(item: Any, sequence: str) -> str | None:
    """A protein's antibody chain type: its record's own (e.g. from the antibody benchmark's MANIFEST),
    else read from its sequence."""
    meta = getattr(item, "meta", None)
    if isinstance(meta, dict) and meta.get("chain_type"):
        return meta["chain_type"]
    return antibody_chain_type(sequence.upper())


@dataclass
class LayerOutput:
    """One layer of one forward pass over a batch, residue-aligned.

    Attributes
    ----------
    layer : int
        0-based layer index.
    attention : Tensor, shape (B, H, Lmax, Lmax), float32
        ``[b, h, i, j]`` is the attention of head ``h`` from residue ``i`` to residue ``j`` of protein ``b``;
        zero beyond ``lengths[b]``. Special tokens are dropped and rows are not renormalised, so a row sums
        to at most 1.
    hidden : Tensor, shape (B, Lmax, d), or None
        The layer's output hidden states at residue positions (zero beyond ``lengths[b]``); None when not
        requested.
    lengths : LongTensor, shape (B,)
        Residues of each protein after truncation.
    ids : tuple of str
        Protein ids, in batch order.
    truncated : tuple of str
        Ids of the proteins that were truncated to the length limit.
    embedding : Tensor, shape (B, Lmax, d), or None
        On layer 0's output only, when hidden states are requested: the embedding layer's output (the
        input of the first layer), residue-aligned like `hidden`. None on every other layer.
    """

    layer: int
    attention: torch.Tensor
    hidden: torch.Tensor | None
    lengths: torch.Tensor
    ids: tuple[str, ...] = ()
    truncated: tuple[str, ...] = ()
    embedding: torch.Tensor | None = None


@dataclass(frozen=True)
class HookSpec:
    """Where a transformers architecture computes its attention probabilities and layer outputs.

    Parameters
    ----------
    block_class : str
        Class name of the layer block; its output (or first output) is the layer's hidden states.
    attention_class : str
        Class name of the self-attention module whose output tuple holds the attention probabilities.
    attention_index : int
        Index of the probabilities in that tuple.
    attention_layout : {"bhij", "ijbh"}
        Axis order of the probabilities; XLNet computes them as (query, key, batch, head).
    hidden_layout : {"bld", "lbd"}
        Axis order of hidden states; XLNet is time-major.
    forward_kwargs : mapping
        Extra forward arguments: XLNet only returns probabilities when asked for attentions, and would keep
        every layer's hidden states as memories unless told not to.
    head_projection : str, optional
        Dotted path, from the layer block, of the module whose input is the heads' outputs side by side
        (``heads × head_dim`` features, head ``h`` in slice ``h``), the attention's output projection; what
        head ablation edits (hook point ``blocks.{l}.attn.head_out``). None where it is not known.
    heads_mixed : bool
        The architecture has no such module: it mixes heads inside the attention (XLNet projects inside an
        einsum). Tells this case apart from a spec that merely does not know its projection.
    lm_head : str, optional
        Dotted path, from the model with its language-model head (``ModelAdapter.lm_model``), of the module
        whose output is the logits (hook point ``lm_head``).

    The specs of the known architectures are written once, in :data:`plmlens.models.families.FAMILIES`.
    """

    block_class: str
    attention_class: str
    attention_index: int = 1
    attention_layout: str = "bhij"
    hidden_layout: str = "bld"
    forward_kwargs: Mapping[str, Any] = field(default_factory=dict)
    head_projection: str | None = None
    heads_mixed: bool = False
    lm_head: str | None = None


class _LayersDone(Exception):  # noqa: N818 -- not an error: the pass is done
    """Ends a forward pass once the layers `ModelAdapter.layer_states` needs are computed."""


class _StoppedError(Exception):
    """Raised inside the worker's hooks when the consumer has stopped reading."""


_DONE = object()


class ModelAdapter:
    """A protein language model with residue-aligned, layer-by-layer access to attention and hidden states.

    Parameters
    ----------
    name : str
        Registry name or model id.
    architecture : str
        Architecture label (e.g. ``BERT``, ``XLNet``).
    model : torch.nn.Module
        The transformers encoder or decoder (no language-model head).
    tokenizer : ResidueTokenizer
        The model's residue tokenisation.
    hooks : HookSpec
        Where the architecture computes attention and layer outputs.
    max_length : int
        Largest number of tokens (special tokens included) the model accepts.
    causal : bool
        Whether attention is causal (left-to-right models such as GPT-2).
    source : str
        Where the weights come from (hub id, wheel, directory).
    licence : str
        Licence of the weights.
    lm_model : torch.nn.Module, optional
        The same model with its language-model head (sharing `model`'s weights), for residue prediction.
    device : str or torch.device
        Where to run.
    dtype : torch.dtype, optional
        Parameter dtype; outputs are float32 whatever it is.
    chain_type : {"heavy", "light"}, optional
        The antibody chain type the model was trained on (Sapiens heavy, Sapiens light): proteins known to
        be of the other type are still run, with a `ChainTypeWarning`.
    """

    def __init__(
        self,
        *,
        name: str,
        architecture: str,
        model: nn.Module,
        tokenizer: ResidueTokenizer,
        hooks: HookSpec,
        max_length: int,
        causal: bool = False,
        source: str = "",
        licence: str = "",
        lm_model: nn.Module | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        chain_type: str | None = None,
    ) -> None:
        self.name = name
        self.chain_type = chain_type
        self._warned_chain_types: set[str] = set()
        self.architecture = architecture
        self.tokenizer = tokenizer
        self.hooks = hooks
        self.max_length = int(max_length)
        self.causal = causal
        self.source = source
        self.licence = licence
        self.random_init = False
        self.init_seed: int | None = None
        self.device = torch.device(device)
        owner = lm_model if lm_model is not None else model
        owner.to(device=self.device, dtype=dtype)
        owner.eval()
        self.dtype = next(owner.parameters()).dtype
        self.model = model
        self.lm_model = lm_model
        config = model.config
        self.n_layers = int(config.num_hidden_layers)
        self.n_heads = int(config.num_attention_heads)
        #: Width of the hidden states (transformers maps GPT-2's n_embd and T5's d_model to hidden_size).
        self.hidden_size = int(config.hidden_size)
        self.n_params = sum(p.numel() for p in model.parameters())
        self._blocks = self._modules_named(hooks.block_class)
        self._attentions = [
            m
            for name_, m in model.named_modules()
            if type(m).__name__ == hooks.attention_class
            # Decoder-style blocks may also hold cross-attention; only self-attention maps residues.
            and "cross" not in name_.lower()
        ]
        if not self._blocks or not self._attentions:
            raise ValueError(
                f"{name}: no {hooks.block_class} / {hooks.attention_class} modules in {type(model).__name__}"
            )
        self._busy = threading.Lock()
        self._worker: ThreadPoolExecutor | None = None

    @property
    def blocks(self) -> list[nn.Module]:
        """The model's layer blocks, in order (one module for weight-shared layers such as ALBERT's)."""
        return list(self._blocks)

    @property
    def attention_modules(self) -> list[nn.Module]:
        """The self-attention modules whose outputs hold the probabilities, in order (one when shared)."""
        return list(self._attentions)

    def hook_names(self) -> list[str]:
        """Every hook point name this model has (see :mod:`plmlens.models.hooks`)."""
        return hook_names(self)

    def hook_point(self, name: str) -> HookPoint:
        """Resolve a hook name, e.g. ``blocks.3.attn.head_out``, to its module and hook kind.

        Raises
        ------
        ValueError
            For an unknown name or layer; `HookUnavailableError` (a ValueError) for a point this model lacks.
        """
        return hook_point(self, name)

    def attach_hooks(
        self, hooks: Mapping[str, HookFn] | Iterable[tuple[str, HookFn]]
    ) -> AbstractContextManager[list[HookPoint]]:
        """Hook functions by name while the context is open (see :func:`plmlens.models.hooks.attach_hooks`):
        ``with adapter.attach_hooks({"blocks.0.attn.pattern": fn}): ...``."""
        return attach_hooks(self, hooks)

    def _modules_named(self, class_name: str) -> list[nn.Module]:
        return [m for m in self.model.modules() if type(m).__name__ == class_name]

    def __repr__(self) -> str:
        weights = f", random_init=True, init_seed={self.init_seed}" if self.random_init else ""
        return (
            f"ModelAdapter({self.name!r}, {self.architecture}, {self.n_layers} layers, {self.n_heads} heads, "
            f"{self.n_params:,} parameters{weights})"
        )

    def randomize_weights(self, seed: int = 0) -> None:
        """Replace every weight by a seeded draw of the model's own initialisation (the random-weights control).

        The architecture, config, tokenizer, device, dtype and hooks stay as they are. transformers models are
        re-initialised with their ``_init_weights`` (what ``ModelClass(config)`` would draw); parameters it
        leaves alone, and modules outside transformers, get their module's ``reset_parameters()``. The draw
        runs on the CPU in float32 under its own random state, so a seed gives the same weights on any device
        (then cast to the adapter's dtype), and the caller's random state is left as it was.

        Parameters
        ----------
        seed : int
            Seed of the initialisation.

        Raises
        ------
        ModelLoadError
            If some parameter is re-initialised neither by the model nor by its module.
        """
        owner = self.lm_model if self.lm_model is not None else self.model
        owner.to(device="cpu", dtype=torch.float32)
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(seed))
                _reinitialise(owner, self.name)
        finally:
            owner.to(device=self.device, dtype=self.dtype)
        self.random_init, self.init_seed = True, int(seed)

    def encode(self, sequences: Iterable[Any], ids: Sequence[str] | None = None, *, max_length: int = 512) -> Encoding:
        """Tokenise a batch the way the model was trained.

        Parameters
        ----------
        sequences : iterable of str or records with ``id`` and ``sequence``
            Proteins.
        ids : sequence of str, optional
            Protein ids (default: the records' ids, or ``seq0``, ``seq1``, ...).
        max_length : int
            Token limit per protein, special tokens included (512 as in the paper); also capped at the
            model's own limit. Longer proteins keep their first residues and are reported.

        Returns
        -------
        Encoding
        """
        limit = min(int(max_length), self.max_length)
        items = list(sequences)
        records = as_records(items, ids)
        chain_types = None
        if self.chain_type is not None or self.tokenizer.chain_prefixes:
            chain_types = [_chain_type(item, sequence) for item, (_, sequence) in zip(items, records, strict=True)]
            self._check_chain_types(records, chain_types)
        return self.tokenizer.encode(records, max_tokens=limit, model_name=self.name, chain_types=chain_types)

    def _check_chain_types(self, records: list[tuple[str, str]], chain_types: list[str | None]) -> None:
        """Warn, once per type, when proteins of another antibody chain type than the model's are run."""
        if self.chain_type is None:
            return
        for (protein_id, _), kind in zip(records, chain_types, strict=True):
            if kind in CHAIN_TYPES and kind != self.chain_type and kind not in self._warned_chain_types:
                self._warned_chain_types.add(kind)
                warnings.warn(
                    f"{self.name} was trained on {self.chain_type} chains; running it on {kind} chains "
                    f"(first: {protein_id}) is allowed, but they are outside its training data",
                    ChainTypeWarning,
                    stacklevel=4,
                )

    def iter_layers(
        self,
        sequences: Iterable[Any],
        ids: Sequence[str] | None = None,
        *,
        max_length: int = 512,
        hidden_states: bool = True,
        on_device: bool = False,
    ) -> Iterator[LayerOutput]:
        """Run one forward pass over a batch and yield each layer's residue-aligned outputs in order.

        Parameters
        ----------
        sequences : iterable of str or records with ``id`` and ``sequence``
            One batch of proteins; it is padded, and padding is masked so that each protein's results do
            not depend on the rest of the batch.
        ids : sequence of str, optional
            Protein ids.
        max_length : int
            Token limit per protein (see :meth:`encode`).
        hidden_states : bool
            Whether to return hidden states as well as attention; layer 0's output then also carries the
            embedding layer's output (`LayerOutput.embedding`).
        on_device : bool
            Leave the outputs on the model's device (for statistics computed there) instead of copying
            them to host memory. Either way they are float32.

        Returns
        -------
        iterator of LayerOutput
            Layer ``k`` is computed only after layer ``k - 1`` was taken, so memory does not grow with the
            number of layers. Input errors are raised here, before iteration starts.

        Raises
        ------
        SequenceError
            For an empty sequence or characters outside the model's alphabet.
        """
        encoding = self.encode(sequences, ids, max_length=max_length)
        return self._stream(encoding, hidden_states, on_device)

    def _stream(self, encoding: Encoding, hidden_states: bool, on_device: bool = False) -> Iterator[LayerOutput]:
        if not self._busy.acquire(blocking=False):
            raise RuntimeError(f"{self.name}: iter_layers is already running; finish that iteration first")
        # One slot: the worker computes layer k + 1 while the consumer holds layer k, then waits.
        channel: queue.Queue[Any] = queue.Queue(maxsize=1)
        stop = threading.Event()

        def send(item: Any) -> None:
            while True:
                if stop.is_set():
                    raise _StoppedError
                try:
                    channel.put(item, timeout=0.05)
                    return
                except queue.Full:
                    continue

        # One long-lived worker thread per adapter: a new thread per batch would leave glibc a new malloc arena
        # per thread, and resident memory would creep up over thousands of batches.
        job = None
        try:
            if self._worker is None:
                self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"plmlens-{self.name}")
            job = self._worker.submit(self._forward_worker, encoding, hidden_states, on_device, send)
            while True:
                item = channel.get()
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            # Also when an exception (a signal's, say) arrives before the job was started.
            stop.set()
            try:
                if job is not None:
                    job.result()
            finally:
                self._busy.release()

    def _forward_worker(self, encoding: Encoding, hidden_states: bool, on_device: bool, send: Any) -> None:
        state: dict[str, Any] = {"layer": 0, "attention": None}
        batch, width = encoding.input_ids.shape

        def on_attention(probs: torch.Tensor, point: HookPoint) -> torch.Tensor:
            if probs.dim() != 4 or probs.shape[0] != batch or probs.shape[2:] != (width, width):
                raise RuntimeError(
                    f"{self.name}: attention of layer {state['layer']} has shape {tuple(probs.shape)}, "
                    f"expected ({batch}, heads, {width}, {width})"
                )
            if probs.shape[1] != self.n_heads:
                raise RuntimeError(f"{self.name}: {probs.shape[1]} heads, config says {self.n_heads}")
            state["attention"] = _residue_square(probs, encoding, on_device)
            # Hand the probabilities over and leave the model an empty tensor, so it keeps no layer.
            return probs.new_zeros((0,) * probs.dim())

        def on_embedding(embedding: torch.Tensor, point: HookPoint) -> None:
            state["embedding"] = _residue_rows(embedding, encoding, on_device)

        def on_block(hidden: torch.Tensor, point: HookPoint) -> None:
            # The layer is counted here too: a model running more or fewer blocks than its config says is an
            # error, not a wrapped-around layer number.
            attention = state.pop("attention", None)
            state["attention"] = None
            if attention is None:
                raise RuntimeError(f"{self.name}: layer {state['layer']} finished without attention")
            send(
                LayerOutput(
                    layer=state["layer"],
                    attention=attention,
                    hidden=_residue_rows(hidden, encoding, on_device) if hidden_states else None,
                    lengths=encoding.lengths,
                    ids=encoding.ids,
                    truncated=encoding.truncated,
                    embedding=state.pop("embedding", None) if state["layer"] == 0 else None,
                )
            )
            state["layer"] += 1

        layers = range(self.n_layers)
        hooks: list[tuple[str, HookFn]] = [(hook_name(ATTN_PATTERN, layer), on_attention) for layer in layers]
        if hidden_states:
            hooks.append((EMBED, on_embedding))
        hooks += [(hook_name(RESID_POST, layer), on_block) for layer in layers]
        try:
            # Grad mode is per thread. no_grad, not inference_mode, so callers may edit results in place.
            with attach_hooks(self, hooks), torch.no_grad():
                self.model(**encoding.model_inputs(self.device), **self.hooks.forward_kwargs)
            if state["layer"] != self.n_layers:
                raise RuntimeError(f"{self.name}: {state['layer']} layers ran, config says {self.n_layers}")
            send(_DONE)
        except _StoppedError:
            return
        except BaseException as error:  # handed to the consumer, who re-raises it
            try:
                send(error)
            except _StoppedError:
                return

    def attention(self, sequence: Any, max_length: int = 512) -> np.ndarray:
        """All layers' attention for one protein.

        Parameters
        ----------
        sequence : str or record with ``id`` and ``sequence``
            One protein.
        max_length : int
            Token limit (see :meth:`encode`).

        Returns
        -------
        ndarray of float32, shape (layers, heads, L, L)
        """
        layers = [
            out.attention[0].numpy() for out in self.iter_layers([sequence], max_length=max_length, hidden_states=False)
        ]
        return np.stack(layers)

    def embed(
        self,
        sequences: Iterable[Any],
        ids: Sequence[str] | None = None,
        *,
        layer: int = -1,
        max_length: int = 512,
    ) -> list[np.ndarray]:
        """Hidden states of one layer for each protein of a batch.

        Parameters
        ----------
        sequences : iterable of str or records with ``id`` and ``sequence``
            Proteins.
        ids : sequence of str, optional
            Protein ids.
        layer : int
            Layer index, negative from the end (default: the last layer's output).
        max_length : int
            Token limit (see :meth:`encode`).

        Returns
        -------
        list of ndarray of float32, shape (L, d)
        """
        wanted = layer % self.n_layers
        for out in self.iter_layers(sequences, ids, max_length=max_length, hidden_states=True):
            if out.layer == wanted and out.hidden is not None:
                return [out.hidden[b, :n].numpy() for b, n in enumerate(out.lengths.tolist())]
        raise RuntimeError(f"{self.name}: layer {layer} was not produced")

    def layer_states(self, encoding: Encoding, layers: Sequence[int]) -> dict[int, list[torch.Tensor]]:
        """Each protein's residue rows of the hidden states leaving `layers` (``blocks.{l}.resid_post``).

        The forward pass stops once the last layer asked for is computed, and no attention is returned, so
        this costs at most a bare forward pass.

        Parameters
        ----------
        encoding : Encoding
            A batch from :meth:`encode`.
        layers : sequence of int
            0-based layers.

        Returns
        -------
        dict of int to list of Tensor, shape (L, d)
            Per layer, per protein: its residues' states in the model's dtype, on its device.
        """
        wanted = sorted({int(layer) for layer in layers})
        if not wanted or wanted[0] < 0 or wanted[-1] >= self.n_layers:
            raise ValueError(f"{self.name}: layers must be within 0..{self.n_layers - 1}, not {list(layers)}")
        spans = list(zip(encoding.starts.tolist(), encoding.lengths.tolist(), strict=True))
        found: dict[int, list[torch.Tensor]] = {}

        def keep(hidden: torch.Tensor, point: HookPoint) -> None:
            found[point.layer] = [hidden[b, start : start + n].detach() for b, (start, n) in enumerate(spans)]
            if point.layer == wanted[-1]:
                raise _LayersDone

        kwargs = {**self.hooks.forward_kwargs, **({"output_attentions": False} if "output_attentions" in
                                                  self.hooks.forward_kwargs else {})}  # fmt: skip
        hooks = [(hook_name(RESID_POST, layer), keep) for layer in wanted]
        with self.attach_hooks(hooks), torch.no_grad(), suppress(_LayersDone):
            self.model(**encoding.model_inputs(self.device), **kwargs)
        if len(found) != len(wanted):
            raise RuntimeError(f"{self.name}: layers {sorted(set(wanted) - set(found))} were not computed")
        return found

    def residue_log_probs(
        self,
        sequences: Iterable[Any],
        ids: Sequence[str] | None = None,
        *,
        masked: Sequence[Iterable[int]] | None = None,
        max_length: int = 512,
    ) -> list[np.ndarray]:
        """Log-probabilities the language-model head gives the 20 standard residues at each position.

        For a masked language model, position ``i`` is predicted from the whole sequence, with the positions
        in ``masked`` replaced by the mask token. For a causal model, position ``i`` is predicted from the
        tokens before it.

        Parameters
        ----------
        sequences : iterable of str or records with ``id`` and ``sequence``
            Proteins.
        ids : sequence of str, optional
            Protein ids.
        masked : sequence of iterables of int, optional
            For each protein, 0-based residue positions to mask (masked models only).
        max_length : int
            Token limit (see :meth:`encode`).

        Returns
        -------
        list of ndarray of float32, shape (L, 20)
            Columns in the order of ``STANDARD_RESIDUES`` (``ACDEFGHIKLMNPQRSTVWY``); log-probabilities over
            the whole vocabulary, so a row need not sum to 1 over these columns.
        """
        if self.lm_model is None:
            raise RuntimeError(f"{self.name} was loaded without a language-model head")
        encoding = self.encode(sequences, ids, max_length=max_length)
        input_ids = encoding.input_ids.clone()
        if masked is not None:
            if self.causal or self.tokenizer.mask_id is None:
                raise ValueError(f"{self.name} has no mask token; it predicts residues left to right")
            for b, positions in enumerate(masked):
                for i in positions:
                    if not 0 <= int(i) < int(encoding.lengths[b]):
                        raise IndexError(f"{encoding.ids[b]}: masked position {i} outside the sequence")
                    input_ids[b, int(encoding.starts[b]) + int(i)] = self.tokenizer.mask_id
        inputs = encoding.model_inputs(self.device)
        inputs["input_ids"] = input_ids.to(self.device)
        columns = torch.tensor([self.tokenizer.residue_ids[c] for c in STANDARD_RESIDUES])
        with torch.no_grad():
            logits = self.lm_model(**inputs).logits.float().cpu()
        log_probs = torch.log_softmax(logits, dim=-1)[..., columns]
        shift = 1 if self.causal else 0
        if self.causal and not self.tokenizer.prefix:
            raise ValueError(f"{self.name}: no token precedes the first residue, so it cannot be predicted")
        result = []
        for b, (start, n) in enumerate(zip(encoding.starts.tolist(), encoding.lengths.tolist(), strict=True)):
            result.append(log_probs[b, start - shift : start - shift + n].numpy())
        return result


def _reinitialise(owner: nn.Module, name: str) -> None:
    """Draw every parameter of `owner` afresh, in place, from the current random state."""
    with torch.no_grad():
        for parameter in owner.parameters():
            # NaN marks what is still to be drawn: a parameter the initialisation skips cannot keep its trained
            # values unnoticed.
            parameter.fill_(float("nan"))
        for module in owner.modules():
            # transformers skips modules and tensors it marked as loaded from a checkpoint.
            module.__dict__.pop("_is_hf_initialized", None)
            for parameter in module.parameters(recurse=False):
                if hasattr(parameter, "_is_hf_initialized"):
                    del parameter._is_hf_initialized
        initialize = getattr(owner, "initialize_weights", None)
        if callable(initialize):
            initialize()
        for module in owner.modules():
            undrawn = any(torch.isnan(p).any() for p in module.parameters(recurse=False))
            if undrawn and callable(getattr(module, "reset_parameters", None)):
                module.reset_parameters()
    left = [key for key, parameter in owner.named_parameters() if torch.isnan(parameter).any()]
    if left:
        more = f" and {len(left) - 1} more" if len(left) > 1 else ""
        raise ModelLoadError(f"{name}: nothing re-initialises parameter {left[0]}{more}; random weights unavailable")


def _residue_square(probs: torch.Tensor, encoding: Encoding, on_device: bool = False) -> torch.Tensor:
    """Cut (B, H, T, T) attention to each protein's residue block, zero-padded to (B, H, Lmax, Lmax), float32."""
    lengths = encoding.lengths.tolist()
    width = max(lengths)
    device = probs.device if on_device else torch.device("cpu")
    out = torch.zeros((probs.shape[0], probs.shape[1], width, width), dtype=torch.float32, device=device)
    for b, (start, n) in enumerate(zip(encoding.starts.tolist(), lengths, strict=True)):
        out[b, :, :n, :n] = probs[b, :, start : start + n, start : start + n].to(device, torch.float32)
    return out


def _residue_rows(hidden: torch.Tensor, encoding: Encoding, on_device: bool = False) -> torch.Tensor:
    """Cut (B, T, d) hidden states to each protein's residues, zero-padded to (B, Lmax, d), float32."""
    lengths = encoding.lengths.tolist()
    device = hidden.device if on_device else torch.device("cpu")
    out = torch.zeros((hidden.shape[0], max(lengths), hidden.shape[-1]), dtype=torch.float32, device=device)
    for b, (start, n) in enumerate(zip(encoding.starts.tolist(), lengths, strict=True)):
        out[b, :n] = hidden[b, start : start + n].to(device, torch.float32)
    return out
