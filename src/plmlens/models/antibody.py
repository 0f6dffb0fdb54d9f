"""Pretrained antibody language models whose weights ship inside PyPI wheels, so they work offline.

The packages' own runners do not work with transformers 5 (and Sapiens needs fairseq), so they are never
imported: we only locate each package's directory and read its weight and vocabulary files ourselves.

* AntiBERTy (``antiberty==0.1.3``, MIT): BERT, 8 layers x 8 heads, with a masked-LM head.
* Sapiens heavy and light (``sapiens==1.0.5``, MIT): fairseq RoBERTa checkpoints, converted here to
  transformers' ``RobertaForMaskedLM`` by renaming parameters.
* IgLM and IgLM-S (``iglm==0.1.0``, JHU academic licence, non-commercial): GPT-2, causal, conditioned on
  a chain tag and a species tag before the residues.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch

from plmlens.models.adapter import ModelAdapter
from plmlens.models.checkpoints import load_exact, read_checkpoint
from plmlens.models.errors import ModelLoadError
from plmlens.models.families import family
from plmlens.models.tokenizers import fixed_vocab_tokenizer

#: IgLM's conditioning tags (``iglm/model/tokens.py``).
IGLM_CHAINS = {"heavy": "[HEAVY]", "light": "[LIGHT]"}
IGLM_SPECIES = {
    "camel": "[CAMEL]",
    "human": "[HUMAN]",
    "mouse": "[MOUSE]",
    "rabbit": "[RABBIT]",
    "rat": "[RAT]",
    "rhesus": "[RHESUS]",
}


def package_dir(package: str, requirement: str, name: str) -> Path:
    """Directory of an installed package, found without importing it.

    Parameters
    ----------
    package : str
        Import name.
    requirement : str
        Pip requirement to name in the error (e.g. ``antiberty==0.1.3``).
    name : str
        Model name for the error.

    Raises
    ------
    ModelLoadError
        If the package is not installed.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"{name}: the {package} package with its weights is not installed; pip install --no-deps {requirement}"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _read_vocab(path: Path, name: str) -> list[str]:
    if not path.is_file():
        raise ModelLoadError(f"{name}: vocabulary file {path} is missing")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def _read_json(path: Path, name: str) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"{name}: could not read {path}: {error}") from error


def load_antiberty(
    *, name: str = "antiberty", device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> ModelAdapter:
    """Load AntiBERTy from the ``antiberty`` wheel (BERT with a masked-LM head).

    Parameters
    ----------
    name : str
        Name to report.
    device : str or torch.device
        Where to run.
    dtype : torch.dtype, optional
        Parameter dtype.

    Returns
    -------
    ModelAdapter
        With ``lm_model`` set (``BertForMaskedLM``), for masked-residue prediction.
    """
    from transformers import BertConfig, BertForMaskedLM

    root = package_dir("antiberty", "antiberty==0.1.3", name) / "trained_models"
    checkpoint = root / "AntiBERTy_md_smooth"
    fields = _read_json(checkpoint / "config.json", name)
    fields.pop("architectures", None)
    fields.pop("_name_or_path", None)
    config = BertConfig(
        **{**fields, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0},
        attn_implementation="eager",
    )
    state = read_checkpoint(checkpoint / "pytorch_model.bin", name)
    # The species, chain and graft classifiers and the pooler they read are training heads, unused here.
    state = {
        k: v
        for k, v in state.items()
        if not k.startswith(("cls.species", "cls.chain", "cls.graft", "bert.pooler."))
        and k != "bert.embeddings.position_ids"
    }
    model = BertForMaskedLM(config)
    load_exact(model, state, name)
    # AntiBERTy's vocabulary has no X; its BertTokenizer reads X as [UNK], and so do we.
    vocab = _read_vocab(root / "vocab.txt", name)
    tokenizer = fixed_vocab_tokenizer(
        vocab, prefix=["[CLS]"], suffix=["[SEP]"], pad="[PAD]", mask="[MASK]", aliases={"X": "[UNK]"}
    )
    bert = family("bert")
    return bert.adapter(
        name,
        model.bert,
        tokenizer,
        config,
        source="antiberty==0.1.3 (PyPI wheel)",
        licence="MIT",
        lm_model=model,
        device=device,
        dtype=dtype,
    )


def fairseq_roberta_to_transformers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a fairseq (0.9/0.10) RoBERTa masked-LM state dict to ``RobertaForMaskedLM`` names.

    Parameters
    ----------
    state : dict of str to Tensor
        The checkpoint's ``model`` entry (``decoder.sentence_encoder.*`` and ``decoder.lm_head.*``).

    Returns
    -------
    dict of str to Tensor
        Includes zero token-type embeddings, which fairseq does not have.
    """
    encoder, out = "decoder.sentence_encoder.", {}
    names = {
        "embed_tokens.weight": "roberta.embeddings.word_embeddings.weight",
        "embed_positions.weight": "roberta.embeddings.position_embeddings.weight",
        "emb_layer_norm.weight": "roberta.embeddings.LayerNorm.weight",
        "emb_layer_norm.bias": "roberta.embeddings.LayerNorm.bias",
    }
    in_layer = {
        "self_attn.q_proj": "attention.self.query",
        "self_attn.k_proj": "attention.self.key",
        "self_attn.v_proj": "attention.self.value",
        "self_attn.out_proj": "attention.output.dense",
        "self_attn_layer_norm": "attention.output.LayerNorm",
        "fc1": "intermediate.dense",
        "fc2": "output.dense",
        "final_layer_norm": "output.LayerNorm",
    }
    head = {
        "decoder.lm_head.dense.weight": "lm_head.dense.weight",
        "decoder.lm_head.dense.bias": "lm_head.dense.bias",
        "decoder.lm_head.layer_norm.weight": "lm_head.layer_norm.weight",
        "decoder.lm_head.layer_norm.bias": "lm_head.layer_norm.bias",
        "decoder.lm_head.weight": "lm_head.decoder.weight",
    }
    for key, value in state.items():
        if key in head:
            out[head[key]] = value
        elif key == "decoder.lm_head.bias":
            out["lm_head.bias"] = value
            out["lm_head.decoder.bias"] = value
        elif key.startswith(encoder + "layers."):
            index, rest = key[len(encoder + "layers.") :].split(".", 1)
            module, parameter = rest.rsplit(".", 1)
            if module not in in_layer:
                raise KeyError(key)
            out[f"roberta.encoder.layer.{index}.{in_layer[module]}.{parameter}"] = value
        elif key.startswith(encoder) and key[len(encoder) :] in names:
            out[names[key[len(encoder) :]]] = value
        else:
            raise KeyError(key)
    embeddings = out["roberta.embeddings.word_embeddings.weight"]
    out["roberta.embeddings.token_type_embeddings.weight"] = torch.zeros(1, embeddings.shape[1])
    return out


def load_sapiens(
    chain: str = "heavy",
    *,
    name: str | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> ModelAdapter:
    """Load a Sapiens model (heavy or light chain) from the ``sapiens`` wheel.

    Parameters
    ----------
    chain : {"heavy", "light"}
        Which of the two models (the light model serves kappa and lambda chains).
    name : str, optional
        Name to report (default ``sapiens-<chain>``).
    device : str or torch.device
        Where to run.
    dtype : torch.dtype, optional
        Parameter dtype.

    Returns
    -------
    ModelAdapter
        With ``lm_model`` set (``RobertaForMaskedLM``).
    """
    from transformers import RobertaConfig, RobertaForMaskedLM

    files = {"heavy": "checkpoint_vh.pt", "light": "checkpoint_vl.pt"}
    if chain not in files:
        raise ValueError(f"chain must be 'heavy' or 'light', not {chain!r}")
    name = name or f"sapiens-{chain}"
    root = package_dir("sapiens", "sapiens==1.0.5", name) / "models" / "v1"
    checkpoint = read_checkpoint(root / files[chain], name, allow_namespace=True)
    if not isinstance(checkpoint, dict) or "model" not in checkpoint or "args" not in checkpoint:
        raise ModelLoadError(f"{name}: {root / files[chain]} is not a fairseq checkpoint")
    args = checkpoint["args"]
    # fairseq's Dictionary: <s> <pad> </s> <unk>, the symbols of dict.txt, then <mask> added by masked_lm.
    letters = [line.split()[0] for line in _read_vocab(root / "dict.txt", name)]
    vocab = ["<s>", "<pad>", "</s>", "<unk>", *letters, "<mask>"]
    try:
        state = fairseq_roberta_to_transformers(checkpoint["model"])
    except KeyError as error:
        raise ModelLoadError(f"{name}: unexpected fairseq parameter {error}") from error
    embeddings = state["roberta.embeddings.word_embeddings.weight"]
    if embeddings.shape[0] != len(vocab):
        raise ModelLoadError(f"{name}: {embeddings.shape[0]} token embeddings for a {len(vocab)}-token dictionary")
    config = RobertaConfig(
        vocab_size=len(vocab),
        hidden_size=int(args.encoder_embed_dim),
        num_hidden_layers=int(args.encoder_layers),
        num_attention_heads=int(args.encoder_attention_heads),
        intermediate_size=int(args.encoder_ffn_embed_dim),
        hidden_act=str(args.activation_fn),
        max_position_embeddings=int(state["roberta.embeddings.position_embeddings.weight"].shape[0]),
        type_vocab_size=1,
        layer_norm_eps=1e-5,  # fairseq uses torch's LayerNorm default
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        attn_implementation="eager",
    )
    model = RobertaForMaskedLM(config)
    load_exact(model, state, name)
    # Sapiens' own predict code writes unknown residues (X, *) as <mask>.
    tokenizer = fixed_vocab_tokenizer(
        vocab, prefix=["<s>"], suffix=["</s>"], pad="<pad>", mask="<mask>", aliases={"X": "<mask>"}
    )
    roberta = family("roberta")
    return roberta.adapter(
        name,
        model.roberta,
        tokenizer,
        config,
        source="sapiens==1.0.5 (PyPI wheel)",
        licence="MIT",
        lm_model=model,
        device=device,
        dtype=dtype,
        chain_type=chain,
    )


def load_iglm(
    variant: str = "IgLM",
    *,
    chain: str = "heavy",
    species: str = "human",
    name: str | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> ModelAdapter:
    """Load IgLM or IgLM-S from the ``iglm`` wheel (GPT-2, causal).

    IgLM reads ``[chain tag] [species tag] residues [SEP]``; the two tags are its conditioning and count
    as special tokens here.

    Parameters
    ----------
    variant : {"IgLM", "IgLM-S"}
        Full model or the small one.
    chain : {"heavy", "light"}
        Chain tag of proteins whose chain type is unknown; heavy and light chains (from their record, e.g.
        the antibody benchmark's MANIFEST, or from their sequence) get their own tag.
    species : {"human", "mouse", "camel", "rabbit", "rat", "rhesus"}
        Species tag.
    name : str, optional
        Name to report (default: ``iglm`` or ``iglm-s``).
    device : str or torch.device
        Where to run.
    dtype : torch.dtype, optional
        Parameter dtype.

    Returns
    -------
    ModelAdapter
        Causal, with ``lm_model`` set (``GPT2LMHeadModel``).
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    if variant not in ("IgLM", "IgLM-S"):
        raise ValueError(f"variant must be 'IgLM' or 'IgLM-S', not {variant!r}")
    if chain not in IGLM_CHAINS or species not in IGLM_SPECIES:
        raise ValueError(f"chain must be one of {sorted(IGLM_CHAINS)} and species one of {sorted(IGLM_SPECIES)}")
    name = name or variant.lower()
    root = package_dir("iglm", "iglm==0.1.0", name) / "trained_models"
    fields = _read_json(root / variant / "config.json", name)
    # bos/eos 50256 are GPT-2's English ids, meaningless in IgLM's 33-token vocabulary.
    for key in ("architectures", "_name_or_path", "transformers_version", "bos_token_id", "eos_token_id"):
        fields.pop(key, None)
    fields.update(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    config = GPT2Config(**fields, bos_token_id=None, eos_token_id=None, attn_implementation="eager")
    state = read_checkpoint(root / variant / "pytorch_model.bin", name)
    # Older transformers stored the causal-mask buffers with the weights; they are rebuilt from the config.
    state = {k: v for k, v in state.items() if not k.endswith((".attn.bias", ".attn.masked_bias"))}
    model = GPT2LMHeadModel(config)
    load_exact(model, state, name)
    vocab = _read_vocab(root / "vocab.txt", name)
    tokenizer = fixed_vocab_tokenizer(
        vocab,
        prefix=[IGLM_CHAINS[chain], IGLM_SPECIES[species]],
        suffix=["[SEP]"],
        pad="[PAD]",
        mask=None,
        chain_prefixes={kind: [tag, IGLM_SPECIES[species]] for kind, tag in IGLM_CHAINS.items()},
    )
    gpt2 = family("gpt2")
    return gpt2.adapter(
        name,
        model.transformer,
        tokenizer,
        config,
        source="iglm==0.1.0 (PyPI wheel)",
        licence="JHU Academic Software License (non-commercial)",
        lm_model=model,
        device=device,
        dtype=dtype,
    )
