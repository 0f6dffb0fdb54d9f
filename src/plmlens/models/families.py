"""One description of each transformers architecture: the family table.

Every loader (:mod:`plmlens.models.hf` for hub ids and directories, :mod:`plmlens.models.tape` for TAPE's
BERT, :mod:`plmlens.models.antibody` for the antibody models shipped in wheels) looks its architecture up
here by family name, the config's ``model_type``, instead of writing its own :class:`HookSpec`. A family
says which transformers class to build, where its attention probabilities, layer outputs, heads' outputs
and language-model head are (the :class:`HookSpec` that :mod:`plmlens.models.hooks` names), and how
proteins are written for it (ProtTrans models read space-separated residues with U, Z, O, B as X; ESM reads
a plain string). A ``model_type`` not listed gets a family derived from transformers' own record of where
its outputs are (:func:`family_from_recorder`), which knows no head projection.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from plmlens.models.adapter import UNBOUNDED, HookSpec, ModelAdapter
from plmlens.models.errors import ModelLoadError
from plmlens.models.tokenizers import PROTTRANS_REPLACEMENTS


@dataclass(frozen=True)
class Family:
    """How to load and read one transformers architecture.

    Parameters
    ----------
    architecture : str
        Label shown in the registry.
    model_class : str
        transformers class of the bare encoder (or decoder), e.g. ``BertModel``.
    hooks : HookSpec
        Where attention, layer outputs, heads' outputs and the language-model head are computed.
    spaced : bool
        Whether residues are written space-separated for the tokenizer.
    replacements : mapping of str to str
        Residue letters read as another letter.
    causal : bool
        Left-to-right attention.
    max_length : callable
        Token limit from the config.
    """

    architecture: str
    model_class: str
    hooks: HookSpec
    spaced: bool = True
    replacements: Mapping[str, str] = field(default_factory=dict)
    causal: bool = False
    max_length: Callable[[Any], int] = lambda config: int(config.max_position_embeddings)

    def adapter(self, name: str, model: Any, tokenizer: Any, config: Any, **details: Any) -> ModelAdapter:
        """A `ModelAdapter` of this family: its architecture, hooks, token limit (from `config`) and
        causality, with `details` (``source``, ``licence``, ``lm_model``, ``device``, ...) as given; a detail
        given overrides the family's (e.g. ``architecture="BERT (TAPE)"``)."""
        settings = {"architecture": self.architecture, "hooks": self.hooks, "max_length": self.max_length(config),
                    "causal": self.causal, **details}  # fmt: skip
        return ModelAdapter(name=name, model=model, tokenizer=tokenizer, **settings)


#: The architectures plmlens knows, keyed by the config's ``model_type``; the only place their module
#: classes and paths are written.
FAMILIES: dict[str, Family] = {
    "bert": Family(
        "BERT",
        "BertModel",
        HookSpec("BertLayer", "BertSelfAttention", 1, head_projection="attention.output.dense", lm_head="cls"),
        replacements=PROTTRANS_REPLACEMENTS,
    ),
    "albert": Family(
        "ALBERT",
        "AlbertModel",
        # One AlbertLayer shared by all layers fires once per layer; the hooks count the calls.
        HookSpec("AlbertLayer", "AlbertAttention", 1, head_projection="attention.dense", lm_head="predictions"),
        replacements=PROTTRANS_REPLACEMENTS,
    ),
    "xlnet": Family(
        "XLNet",
        "XLNetModel",
        HookSpec(
            "XLNetLayer",
            "XLNetRelativeAttention",
            2,
            attention_layout="ijbh",
            hidden_layout="lbd",
            forward_kwargs={"output_attentions": True, "use_mems": False},
            # XLNet projects the heads' outputs back inside one einsum: there is no module to hook.
            heads_mixed=True,
            lm_head="lm_loss",
        ),
        replacements=PROTTRANS_REPLACEMENTS,
        max_length=lambda config: UNBOUNDED,
    ),
    "t5": Family(
        "T5 encoder",
        "T5EncoderModel",
        # T5's self-attention layer returns its probabilities last, after the position bias.
        HookSpec("T5Block", "T5LayerSelfAttention", -1, head_projection="layer.0.SelfAttention.o"),
        replacements=PROTTRANS_REPLACEMENTS,
        max_length=lambda config: UNBOUNDED,
    ),
    "esm": Family(
        "ESM",
        "EsmModel",
        HookSpec("EsmLayer", "EsmSelfAttention", 1, head_projection="attention.output.dense", lm_head="lm_head"),
        spaced=False,
    ),
    "roberta": Family(
        "RoBERTa",
        "RobertaModel",
        HookSpec(
            "RobertaLayer", "RobertaSelfAttention", 1, head_projection="attention.output.dense", lm_head="lm_head"
        ),
        spaced=False,
        # Positions start after the padding index, as in fairseq.
        max_length=lambda config: int(config.max_position_embeddings) - int(config.pad_token_id) - 1,
    ),
    "gpt2": Family(
        "GPT-2",
        "GPT2Model",
        HookSpec("GPT2Block", "GPT2Attention", 1, head_projection="attn.c_proj", lm_head="lm_head"),
        spaced=False,
        causal=True,
        max_length=lambda config: int(config.n_positions),
    ),
}


def family(model_type: str) -> Family:
    """The listed family of a config's ``model_type``.

    Parameters
    ----------
    model_type : str
        A key of :data:`FAMILIES` (e.g. ``bert``, ``roberta``, ``gpt2``).

    Raises
    ------
    KeyError
        For a type not listed (use :func:`family_from_recorder` for those).
    """
    try:
        return FAMILIES[model_type]
    except KeyError:
        raise KeyError(f"no family {model_type!r}; listed: {', '.join(FAMILIES)}") from None


def family_from_recorder(model_type: str, model_class: type) -> Family:
    """A family for an unlisted architecture, from transformers' own record of where its outputs are.

    The record names the layer block and the attention module but nothing about how heads are mixed, so
    the family has no head projection: head ablation and ``blocks.{l}.attn.head_out`` are refused on it.

    Parameters
    ----------
    model_type : str
        The config's ``model_type``, used as the family's label.
    model_class : type
        The transformers class of the bare model, whose ``_can_record_outputs`` is read.

    Raises
    ------
    ModelLoadError
        When transformers records no attentions (or no layer outputs) for the class.
    """
    record = getattr(model_class, "_can_record_outputs", None) or {}

    def target(key: str, default_index: int) -> tuple[str, int] | None:
        spec = record.get(key)
        if isinstance(spec, list):
            spec = spec[0] if spec else None
        if spec is None:
            return None
        if isinstance(spec, type):
            return spec.__name__, default_index
        cls = getattr(spec, "target_class", None)
        return (cls.__name__ if cls else spec.class_name), int(spec.index)

    blocks, attention = target("hidden_states", 0), target("attentions", 1)
    if blocks is None or attention is None:
        raise ModelLoadError(f"model type {model_type!r} is not supported: transformers records no attentions for it")
    return Family(
        model_type,
        model_class.__name__,
        HookSpec(blocks[0], attention[0], attention[1]),
        spaced=False,
        max_length=lambda config: int(getattr(config, "max_position_embeddings", UNBOUNDED)),
    )
