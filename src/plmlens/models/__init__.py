"""Protein language models with residue-aligned, layer-by-layer attention and hidden states.

``load_model(name_or_path)`` returns a :class:`ModelAdapter`; its :meth:`~ModelAdapter.iter_layers` runs a
batch and yields one :class:`LayerOutput` per layer (attention ``(B, H, L, L)`` over residues only, special
tokens dropped and not renormalised, and hidden states ``(B, L, d)``). ``registry_rows()`` lists the
built-in models. Inside a forward pass, tensors are reached by name (``blocks.{l}.attn.pattern``,
``blocks.{l}.attn.head_out``, ...; see :mod:`plmlens.models.hooks`) with ``attach_hooks``; each
architecture is described once, in :mod:`plmlens.models.families`.
"""

from plmlens.models.adapter import ChainTypeWarning, LayerOutput, ModelAdapter
from plmlens.models.devices import DTYPES, dtype_name, resolve_device, resolve_dtype
from plmlens.models.errors import HookUnavailableError, ModelLoadError, SequenceError
from plmlens.models.hooks import HookPoint, attach_hooks
from plmlens.models.registry import REGISTRY, load_model, paper_models, registry_rows
from plmlens.models.tokenizers import STANDARD_RESIDUES, TruncationWarning

__all__ = [
    "DTYPES",
    "REGISTRY",
    "STANDARD_RESIDUES",
    "ChainTypeWarning",
    "HookPoint",
    "HookUnavailableError",
    "LayerOutput",
    "ModelAdapter",
    "ModelLoadError",
    "SequenceError",
    "TruncationWarning",
    "attach_hooks",
    "dtype_name",
    "load_model",
    "paper_models",
    "registry_rows",
    "resolve_device",
    "resolve_dtype",
]
