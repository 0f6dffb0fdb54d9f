"""The registry of models and :func:`load_model`.

One table of loaders, in the style of ``esm/pretrained.py``: each :class:`ModelSpec` names a model, says
what it is, and carries the function that loads it. :func:`load_model` looks a name up in that table
(registry names and hub ids alike), and otherwise reads a local directory or the hub, taking the
architecture from the model's config.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from plmlens.models.adapter import ModelAdapter
from plmlens.models.antibody import load_antiberty, load_iglm, load_sapiens
from plmlens.models.devices import resolve_device, resolve_dtype
from plmlens.models.errors import ModelLoadError
from plmlens.models.hf import load_hf
from plmlens.models.tape import is_tape_directory, load_tape_bert

_PROTTRANS_LICENCE = "AFL-3.0 (ProtTrans)"
_ESM_LICENCE = "MIT"


@dataclass(frozen=True)
class ModelSpec:
    """One registry entry.

    Parameters
    ----------
    name : str
        Registry name (lower case, e.g. ``prot-bert``).
    architecture : str
        Architecture label.
    layers, heads : int
        Published layer and head counts.
    parameters : int
        Published parameter count (exact for the wheel models, rounded as published for the others).
    source : str
        Hub id, wheel or URL of the weights.
    licence : str
        Licence of the weights.
    loader : callable
        ``loader(device=..., dtype=..., **options) -> ModelAdapter``.
    in_paper : bool
        One of the five models of Vig et al. 2021.
    """

    name: str
    architecture: str
    layers: int
    heads: int
    parameters: int
    source: str
    licence: str
    loader: Callable[..., ModelAdapter]
    in_paper: bool = False

    def row(self) -> dict[str, Any]:
        """The entry as a table row."""
        return {
            "name": self.name,
            "architecture": self.architecture,
            "layers": self.layers,
            "heads": self.heads,
            "parameters": self.parameters,
            "source": self.source,
            "licence": self.licence,
        }


def _hub(model_id: str, name: str, licence: str) -> Callable[..., ModelAdapter]:
    """Loader for a hub model; ``path=`` reads a local copy with the same conventions."""

    def load(
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        path: str | Path | None = None,
        trust_remote_code: bool = False,
        lm_head: bool = False,
    ) -> ModelAdapter:
        return load_hf(
            path if path is not None else model_id,
            name=name,
            device=device,
            dtype=dtype,
            trust_remote_code=trust_remote_code,
            source=model_id,
            licence=licence,
            lm_head=lm_head,
        )

    return load


def _esm2(layers: int, heads: int, size: str, parameters: int) -> ModelSpec:
    model_id = f"facebook/esm2_t{layers}_{size}_UR50D"
    name = f"esm2-t{layers}-{size.lower()}"
    return ModelSpec(
        name, "ESM-2", layers, heads, parameters, model_id, _ESM_LICENCE, _hub(model_id, name, _ESM_LICENCE)
    )


_SPECS: list[ModelSpec] = [
    ModelSpec(
        "tape-bert", "BERT (TAPE)", 12, 12, 92_000_000, "TAPE bert-base (songlab-cal/tape)", "BSD-3-Clause",
        load_tape_bert, in_paper=True,
    ),
    ModelSpec(
        "prot-bert", "BERT", 30, 16, 420_000_000, "Rostlab/prot_bert", _PROTTRANS_LICENCE,
        _hub("Rostlab/prot_bert", "prot-bert", _PROTTRANS_LICENCE), in_paper=True,
    ),
    ModelSpec(
        "prot-bert-bfd", "BERT", 30, 16, 420_000_000, "Rostlab/prot_bert_bfd", _PROTTRANS_LICENCE,
        _hub("Rostlab/prot_bert_bfd", "prot-bert-bfd", _PROTTRANS_LICENCE), in_paper=True,
    ),
    ModelSpec(
        "prot-albert", "ALBERT", 12, 64, 224_000_000, "Rostlab/prot_albert", _PROTTRANS_LICENCE,
        _hub("Rostlab/prot_albert", "prot-albert", _PROTTRANS_LICENCE), in_paper=True,
    ),
    ModelSpec(
        "prot-xlnet", "XLNet", 30, 16, 409_000_000, "Rostlab/prot_xlnet", _PROTTRANS_LICENCE,
        _hub("Rostlab/prot_xlnet", "prot-xlnet", _PROTTRANS_LICENCE), in_paper=True,
    ),
    ModelSpec(
        "prot-t5-xl-encoder", "T5 encoder", 24, 32, 1_208_000_000, "Rostlab/prot_t5_xl_uniref50",
        _PROTTRANS_LICENCE, _hub("Rostlab/prot_t5_xl_uniref50", "prot-t5-xl-encoder", _PROTTRANS_LICENCE),
    ),
    _esm2(6, 20, "8M", 8_000_000),
    _esm2(12, 20, "35M", 35_000_000),
    _esm2(30, 20, "150M", 150_000_000),
    _esm2(33, 20, "650M", 650_000_000),
    _esm2(36, 40, "3B", 3_000_000_000),
    _esm2(48, 40, "15B", 15_000_000_000),
    ModelSpec(
        "esm1b", "ESM-1b", 33, 20, 650_000_000, "facebook/esm1b_t33_650M_UR50S", _ESM_LICENCE,
        _hub("facebook/esm1b_t33_650M_UR50S", "esm1b", _ESM_LICENCE),
    ),
    ModelSpec("antiberty", "BERT", 8, 8, 25_496_064, "antiberty==0.1.3 (PyPI wheel)", "MIT", load_antiberty),
    ModelSpec(
        "sapiens-heavy", "RoBERTa", 4, 8, 552_192, "sapiens==1.0.5 (PyPI wheel)", "MIT",
        functools.partial(load_sapiens, "heavy"),
    ),
    ModelSpec(
        "sapiens-light", "RoBERTa", 4, 8, 550_144, "sapiens==1.0.5 (PyPI wheel)", "MIT",
        functools.partial(load_sapiens, "light"),
    ),
    ModelSpec(
        "iglm", "GPT-2", 4, 8, 12_889_600, "iglm==0.1.0 (PyPI wheel, optional)",
        "JHU Academic Software License (non-commercial)", functools.partial(load_iglm, "IgLM"),
    ),
    ModelSpec(
        "iglm-s", "GPT-2", 3, 6, 1_439_616, "iglm==0.1.0 (PyPI wheel, optional)",
        "JHU Academic Software License (non-commercial)", functools.partial(load_iglm, "IgLM-S"),
    ),
]  # fmt: skip

#: Registry entries by name.
REGISTRY: dict[str, ModelSpec] = {spec.name: spec for spec in _SPECS}
#: Registry entries by hub id, so ``load_model("Rostlab/prot_bert")`` gets the registry's conventions.
_BY_SOURCE: dict[str, ModelSpec] = {spec.source: spec for spec in _SPECS if "/" in spec.source}


def registry_rows() -> list[dict[str, Any]]:
    """The registry as rows for ``plmlens models``.

    Returns
    -------
    list of dict
        Keys ``name``, ``architecture``, ``layers``, ``heads``, ``parameters``, ``source``, ``licence``.
    """
    return [spec.row() for spec in _SPECS]


def paper_models() -> list[str]:
    """Registry names of the five models of Vig et al. 2021."""
    return [spec.name for spec in _SPECS if spec.in_paper]


def load_model(
    name_or_path: str | Path,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype | None = "auto",
    *,
    trust_remote_code: bool = False,
    random_init: bool = False,
    seed: int = 0,
    lm_head: bool = False,
    **options: Any,
) -> ModelAdapter:
    """Load a protein language model as a :class:`ModelAdapter`.

    Parameters
    ----------
    name_or_path : str or Path
        A registry name (see :func:`registry_rows`; e.g. ``antiberty``, ``prot-bert``, ``esm2-t6-8m``), a
        hub id (``Rostlab/prot_bert``, ``facebook/esm2_t6_8M_UR50D``, or any other transformers model), or
        a local directory: one written by ``save_pretrained`` (model and tokenizer), or TAPE's
        ``config.json`` + ``pytorch_model.bin``.
    device : str or torch.device
        ``auto`` (default): CUDA when available (under torchrun, this process's ``cuda:LOCAL_RANK``), else
        CPU; or a device name (``cpu``, ``cuda``, ``cuda:1``).
    dtype : str or torch.dtype or None
        ``auto`` (default): bfloat16 on a GPU that supports it, else float32; ``float32``, ``bfloat16``,
        ``float16``, a torch dtype, or None for the dtype the weights are stored in. Whatever it is,
        attention reaches the statistics as float32.
    trust_remote_code : bool
        Let transformers run code from the model repository; off unless asked for.
    random_init : bool
        Keep the architecture, config and tokenizer but replace every weight by a fresh draw of the model's
        own initialisation (the random-weights control of the paper's appendix B.2); see
        :meth:`ModelAdapter.randomize_weights`. The adapter records it (``random_init``, ``init_seed``).
    seed : int
        Seed of that draw: the same seed gives the same weights, on any device.
    lm_head : bool
        Load the language-model head as well (``adapter.lm_model``), which head ablation and the categorical
        Jacobian need. The wheel models (AntiBERTy, Sapiens, IgLM) always have theirs; a transformers
        checkpoint must hold one (e.g. saved from ``BertForMaskedLM``).
    **options
        Loader options of registry entries: ``path=`` a local copy of a hub or TAPE model; IgLM's
        ``chain=`` (``heavy``/``light``) and ``species=`` (``human``, ``mouse``, ...).

    Returns
    -------
    ModelAdapter

    Raises
    ------
    ModelLoadError
        With a one-line message: hub unreachable, wheel missing, checkpoint corrupt or mismatched.
    """
    adapter = _load(name_or_path, device, dtype, trust_remote_code, lm_head, options)
    if random_init:
        adapter.randomize_weights(seed)
    return adapter


def _load(
    name_or_path: str | Path,
    device: str | torch.device,
    dtype: str | torch.dtype | None,
    trust_remote_code: bool,
    lm_head: bool,
    options: dict[str, Any],
) -> ModelAdapter:
    try:
        device = resolve_device(device)
        dtype = resolve_dtype(dtype, device)
    except ValueError as error:
        raise ModelLoadError(f"{name_or_path}: {error}") from None
    key = str(name_or_path)
    spec = REGISTRY.get(key.lower()) or _BY_SOURCE.get(key)
    if spec is not None:
        if trust_remote_code:
            options["trust_remote_code"] = True
        if lm_head and "lm_head" in inspect.signature(spec.loader).parameters:
            options["lm_head"] = True  # hub entries; the wheel models always carry their head
        adapter = spec.loader(device=device, dtype=dtype, **options)
        if lm_head and adapter.lm_model is None:
            raise ModelLoadError(f"{spec.name}: loaded without a language-model head, which this needs")
        return adapter
    if options:
        raise TypeError(f"options {sorted(options)} apply to registry models only")
    path = Path(key).expanduser()
    if path.is_dir() and is_tape_directory(path):
        if lm_head:
            raise ModelLoadError(f"{key}: plmlens reads TAPE checkpoints without their language-model head")
        return load_tape_bert(path, name=key, device=device, dtype=dtype)
    return load_hf(key, device=device, dtype=dtype, trust_remote_code=trust_remote_code, lm_head=lm_head)
