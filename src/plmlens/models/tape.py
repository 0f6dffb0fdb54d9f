"""TAPE's BERT (Rao et al. 2019, the paper's TapeBert) read from its published files into transformers.

TAPE published ``bert-base-config.json`` and ``bert-base-pytorch_model.bin``; its ``ProteinBertModel``
has the same module tree as transformers' ``BertModel`` under a ``bert.`` prefix (old checkpoints name
LayerNorm parameters ``gamma``/``beta``), so the weights map onto ``BertModel`` by renaming alone and the
unmaintained ``tape-proteins`` package is not needed. The tokeniser is TAPE's IUPAC vocabulary with
``<cls>`` before and ``<sep>`` after the residues.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import torch

from plmlens.models.adapter import ModelAdapter
from plmlens.models.checkpoints import load_exact, read_checkpoint
from plmlens.models.errors import ModelLoadError
from plmlens.models.families import family
from plmlens.models.tokenizers import ResidueTokenizer, fixed_vocab_tokenizer

#: TAPE's IUPAC vocabulary, in id order (songlab-cal/tape, ``tape/tokenizers.py``).
TAPE_IUPAC_VOCAB = (
    "<pad>", "<mask>", "<cls>", "<sep>", "<unk>",
    "A", "B", "C", "D", "E", "F", "G", "H", "I", "K", "L", "M", "N", "O", "P",
    "Q", "R", "S", "T", "U", "V", "W", "X", "Y", "Z",
)  # fmt: skip

#: Where TAPE published the checkpoint; files there are named ``bert-base-config.json`` and
#: ``bert-base-pytorch_model.bin``.
TAPE_URL_PREFIX = "https://s3.amazonaws.com/proteindata/pytorch-models/"

#: ``ProteinBertConfig`` defaults, for keys a TAPE config file leaves out.
_TAPE_DEFAULTS = {
    "vocab_size": 30,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "max_position_embeddings": 8096,
    "type_vocab_size": 2,
    "layer_norm_eps": 1e-12,
}


def tape_tokenizer() -> ResidueTokenizer:
    """TAPE's IUPAC tokeniser: ``<cls>`` residues ``<sep>``, right-padded with ``<pad>``."""
    return fixed_vocab_tokenizer(TAPE_IUPAC_VOCAB, prefix=["<cls>"], suffix=["<sep>"], pad="<pad>", mask="<mask>")


def is_tape_directory(directory: Path) -> bool:
    """Whether a directory holds a TAPE checkpoint: a ``config.json`` without transformers' ``model_type``.

    Parameters
    ----------
    directory : Path
        Candidate directory.
    """
    config = directory / "config.json"
    if not config.is_file():
        return False
    try:
        fields = json.loads(config.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(fields, dict) and "model_type" not in fields and "num_hidden_layers" in fields


def map_tape_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename TAPE ``ProteinBertModel`` parameters to transformers ``BertModel`` names.

    Parameters
    ----------
    state : mapping of str to Tensor
        A TAPE state dict, from ``ProteinBertModel`` (no prefix) or a model with heads (``bert.`` prefix
        plus head parameters such as ``mlm.*``, which are dropped).

    Returns
    -------
    dict of str to Tensor
    """
    prefixed = any(k.startswith("bert.") for k in state)
    mapped = {}
    for key, value in state.items():
        if prefixed:
            if not key.startswith("bert."):
                continue
            key = key[len("bert.") :]
        # TAPE's loader renames TensorFlow-era LayerNorm names the same way.
        key = key.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
        mapped[key] = value
    return mapped


def _checkpoint_directory(path: str | Path | None) -> Path:
    candidates = [Path(path).expanduser()] if path is not None else []
    if path is None:
        if os.environ.get("PLMLENS_TAPE_BERT"):
            candidates.append(Path(os.environ["PLMLENS_TAPE_BERT"]).expanduser())
        candidates.append(Path.home() / ".cache" / "plmlens" / "tape-bert")
    for candidate in candidates:
        if (candidate / "config.json").is_file():
            return candidate
    raise ModelLoadError(
        f"tape-bert: no TAPE checkpoint in {', '.join(str(c) for c in candidates)}; download "
        f"bert-base-config.json and bert-base-pytorch_model.bin from {TAPE_URL_PREFIX} as config.json and "
        "pytorch_model.bin into a directory DIR and pass load_model('tape-bert', path='DIR') "
        "(or set PLMLENS_TAPE_BERT=DIR)"
    )


def load_tape_bert(
    path: str | Path | None = None,
    *,
    name: str = "tape-bert",
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> ModelAdapter:
    """Load TAPE's BERT from its published ``config.json`` and ``pytorch_model.bin``.

    Parameters
    ----------
    path : str or Path, optional
        Directory with the two files; by default ``$PLMLENS_TAPE_BERT`` or ``~/.cache/plmlens/tape-bert``.
    name : str
        Name to report.
    device : str or torch.device
        Where to run.
    dtype : torch.dtype, optional
        Parameter dtype.

    Returns
    -------
    ModelAdapter

    Raises
    ------
    ModelLoadError
        If the files are missing, unreadable, or do not match TAPE's BERT.
    """
    from transformers import BertConfig, BertModel

    directory = _checkpoint_directory(path)
    try:
        fields = json.loads((directory / "config.json").read_text())
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"{name}: could not read {directory / 'config.json'}: {error}") from error
    settings = {key: fields.get(key, default) for key, default in _TAPE_DEFAULTS.items()}
    config = BertConfig(
        **settings,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        pad_token_id=0,
        attn_implementation="eager",
    )
    weights = directory / "pytorch_model.bin"
    if not weights.is_file() and (directory / "model.safetensors").is_file():
        weights = directory / "model.safetensors"
    state = map_tape_state_dict(read_checkpoint(weights, name))
    model = BertModel(config, add_pooling_layer=any(k.startswith("pooler.") for k in state))
    load_exact(model, state, name)
    bert = family("bert")
    return bert.adapter(
        name,
        model,
        tape_tokenizer(),
        config,
        architecture=f"{bert.architecture} (TAPE)",
        source=str(directory),
        licence="BSD-3-Clause",
        device=device,
        dtype=dtype,
    )
