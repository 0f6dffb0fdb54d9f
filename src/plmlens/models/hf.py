"""Transformers models from the Hugging Face Hub or a local directory, architecture read from the config.

The architecture is looked up by the config's ``model_type`` (not by model name) in the family table of
:mod:`plmlens.models.families`: which transformers class to build, where its attention and layer outputs
are, and how proteins are written for it. A ``model_type`` not listed there still loads when transformers
records its attentions through ``_can_record_outputs``.
"""

from __future__ import annotations

import os
import socket
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from plmlens.models.adapter import ModelAdapter
from plmlens.models.errors import ModelLoadError
from plmlens.models.families import FAMILIES, Family, family_from_recorder
from plmlens.models.tokenizers import from_hf_tokenizer


def _is_causal(family: Family, config: Any) -> bool:
    """Whether the model's heads attend only to earlier tokens: a causal family, a config marked as a
    decoder (e.g. a BERT built with ``is_decoder=True``), or an unlisted type that transformers knows only
    as a causal language model."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    if family.causal or getattr(config, "is_decoder", False):
        return True
    if config.model_type in FAMILIES:
        return False
    causal = config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    causal = causal and config.model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES
    # Windowed attention (Mistral's sliding window, ModernBERT's local layers) attends a band of pairs,
    # which neither support describes.
    window = getattr(config, "sliding_window", None) or getattr(config, "local_attention", None)
    if window:
        warnings.warn(
            f"{config.model_type}: windowed attention ({window} tokens) is analysed with "
            f"{'causal' if causal else 'full'} support; for proteins longer than the window the null model "
            "and the backgrounds include pairs its windowed layers cannot attend",
            stacklevel=3,
        )
    return causal


def _offline() -> bool:
    return any(
        os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on")
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def _hub_reachable(timeout: float = 3.0) -> bool:
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((endpoint.hostname or "huggingface.co", port), timeout=timeout):
            return True
    except OSError:
        return False


def _download_error(model_id: str, reason: str) -> ModelLoadError:
    return ModelLoadError(
        f"could not download model {model_id!r} from the Hugging Face Hub ({reason}); download it where "
        f"the hub is reachable (huggingface-cli download {model_id} --local-dir DIR) and pass the "
        "directory instead: load_model('DIR')"
    )


def resolve_source(name_or_path: str | Path) -> tuple[str, bool]:
    """Decide whether to read a local directory, the local hub cache, or the hub.

    Parameters
    ----------
    name_or_path : str or Path
        Local directory or hub model id.

    Returns
    -------
    (str, bool)
        What to pass to ``from_pretrained`` and whether to stay off the network.

    Raises
    ------
    ModelLoadError
        When the model is neither a directory nor cached and the hub cannot be reached; this fails in
        seconds instead of retrying.
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return str(path), True
    model_id = str(name_or_path)
    if path.suffix or model_id.startswith((".", "/", "~")):
        raise ModelLoadError(f"{model_id!r} is neither a registry name nor an existing model directory")
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(model_id, "config.json")
    except Exception:
        cached = None
    if _offline():
        if isinstance(cached, str):
            return model_id, True
        raise _download_error(model_id, "offline mode is set and it is not in the local cache")
    if not _hub_reachable():
        if isinstance(cached, str):
            return model_id, True
        raise _download_error(model_id, "the hub cannot be reached")
    return model_id, False


def load_hf(
    name_or_path: str | Path,
    *,
    name: str | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    trust_remote_code: bool = False,
    source: str | None = None,
    licence: str = "see the model card",
    replacements: Mapping[str, str] | None = None,
    lm_head: bool = False,
) -> ModelAdapter:
    """Load a transformers protein model (hub id or local directory) as a :class:`ModelAdapter`.

    Parameters
    ----------
    name_or_path : str or Path
        Hub model id (e.g. ``Rostlab/prot_bert``) or a directory written by ``save_pretrained``
        holding the model and its tokenizer.
    name : str, optional
        Name to report (default: `name_or_path`).
    device : str or torch.device
        Where to run.
    dtype : torch.dtype, optional
        Parameter dtype.
    trust_remote_code : bool
        Passed to transformers; off unless asked for, since it runs code from the model repository.
    source, licence : str
        Provenance to report.
    replacements : mapping of str to str, optional
        Residue letters read as another letter (default: the family's convention).
    lm_head : bool
        Also load the checkpoint's language-model head (masked or causal, by the model's attention) as
        ``adapter.lm_model``, for residue prediction, head ablation and the categorical Jacobian; the
        checkpoint must hold it.

    Returns
    -------
    ModelAdapter

    Raises
    ------
    ModelLoadError
        If the model cannot be downloaded, read, or does not match its config.
    """
    import transformers
    from transformers import AutoConfig, AutoTokenizer

    label = name or str(name_or_path)
    where, local_only = resolve_source(name_or_path)
    options = {"local_files_only": local_only, "trust_remote_code": trust_remote_code}
    try:
        config = AutoConfig.from_pretrained(where, **options)
    except Exception as error:
        raise ModelLoadError(f"{label}: could not read its config: {_first_line(error)}") from error
    family = FAMILIES.get(config.model_type)
    if family is None:
        from transformers import AutoModel

        try:
            model_class = AutoModel._model_mapping[type(config)]
        except Exception as error:
            raise ModelLoadError(f"{label}: model type {config.model_type!r} is not supported") from error
        family = family_from_recorder(config.model_type, model_class)
    model_class = getattr(transformers, family.model_class)
    causal = _is_causal(family, config)
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, **options)
    except Exception as error:
        raise ModelLoadError(f"{label}: could not load its tokenizer: {_first_line(error)}") from error
    residues = from_hf_tokenizer(
        tokenizer,
        spaced=family.spaced,
        replacements=family.replacements if replacements is None else replacements,
        name=label,
    )
    lm_model = None
    if lm_head:
        model_class = _lm_class(config, causal, label)
    try:
        model, info = model_class.from_pretrained(
            where, attn_implementation="eager", dtype=dtype, output_loading_info=True, **options
        )
    except Exception as error:
        raise ModelLoadError(f"{label}: could not load its weights: {_first_line(error)}") from error
    if lm_head:
        head_missing = [k for k in info.get("missing_keys", []) if "pooler" not in k]
        if head_missing:
            raise ModelLoadError(
                f"{label}: the checkpoint has no language-model head ({head_missing[0]} missing); head ablation "
                "and the categorical Jacobian need a model saved with its head (e.g. BertForMaskedLM)"
            )
        lm_model, model = model, model.base_model
    # A base model read from a checkpoint with heads may lack only the unused pooler; anything else
    # missing would be silently random.
    missing = [k for k in info.get("missing_keys", []) if "pooler" not in k]
    mismatched = info.get("mismatched_keys", [])
    if missing or mismatched:
        shown = ", ".join(str(k) for k in (missing + list(mismatched))[:3])
        raise ModelLoadError(f"{label}: checkpoint does not match its config ({shown})")
    if model.config._attn_implementation != "eager":
        raise ModelLoadError(f"{label}: eager attention could not be set, so attentions are unavailable")
    return family.adapter(
        label,
        model,
        residues,
        config,
        causal=causal,
        source=source or str(name_or_path),
        licence=licence,
        lm_model=lm_model,
        device=device,
        dtype=dtype,
    )


def _lm_class(config: Any, causal: bool, label: str) -> type:
    """The transformers class with the language-model head of `config`'s architecture."""
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

    auto = AutoModelForCausalLM if causal else AutoModelForMaskedLM
    try:
        return auto._model_mapping[type(config)]
    except KeyError:
        kind = "causal" if causal else "masked"
        raise ModelLoadError(
            f"{label}: transformers has no {kind} language-model head for {config.model_type!r}"
        ) from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
