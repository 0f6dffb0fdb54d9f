"""Inputs for the scale tests: a tiny random BERT (and a causal GPT-2) on disk and a directory of synthetic structures
(random-walk chains of varied lengths, one chain too short to be read, so runs have a skipped record)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import transformers

from conftest import PdbBuilder
from models_fixtures import IGLM_VOCAB, PROTBERT_VOCAB, word_level_tokenizer

THREE = {"A": "ALA", "C": "CYS", "D": "ASP", "E": "GLU", "F": "PHE", "G": "GLY", "H": "HIS", "I": "ILE", "K": "LYS",
         "L": "LEU", "M": "MET", "N": "ASN", "P": "PRO", "Q": "GLN", "R": "ARG", "S": "SER", "T": "THR", "V": "VAL",
         "W": "TRP", "Y": "TYR"}  # fmt: skip


def tiny_bert(directory: Path, layers: int = 3, heads: int = 4, seed: int = 0, lm_head: bool = False) -> Path:
    """A random BERT with ProtBert's vocabulary, saved with `save_pretrained` (sharp attention, so that some
    weights pass θ); with its masked-LM head when `lm_head`."""
    torch.manual_seed(seed)
    tokenizer = transformers.BertTokenizer(vocab={t: i for i, t in enumerate(PROTBERT_VOCAB)}, do_lower_case=False)
    config = transformers.BertConfig(
        vocab_size=30, hidden_size=32, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=40,
        max_position_embeddings=256, hidden_act="gelu", initializer_range=2.0,
    )  # fmt: skip
    (transformers.BertForMaskedLM if lm_head else transformers.BertModel)(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def tiny_gpt2(directory: Path, layers: int = 2, heads: int = 4, seed: int = 0, lm_head: bool = False) -> Path:
    """A random causal GPT-2 with IgLM's vocabulary and tags, saved with `save_pretrained` (with its LM head
    when `lm_head`)."""
    torch.manual_seed(seed)
    tokenizer = word_level_tokenizer(
        IGLM_VOCAB, "[HEAVY] [HUMAN] $A [SEP]", ["[HEAVY]", "[HUMAN]", "[SEP]"],
        pad_token="[PAD]", unk_token="[UNK]", sep_token="[SEP]", mask_token="[MASK]",
    )  # fmt: skip
    config = transformers.GPT2Config(
        vocab_size=len(IGLM_VOCAB), n_embd=32, n_layer=layers, n_head=heads, n_positions=256,
        initializer_range=2.0, bos_token_id=None, eos_token_id=None,
    )  # fmt: skip
    (transformers.GPT2LMHeadModel if lm_head else transformers.GPT2Model)(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def random_walk(length: int, rng: np.random.Generator) -> np.ndarray:
    steps = rng.normal(size=(length, 3))
    return np.cumsum(3.8 * steps / np.linalg.norm(steps, axis=1, keepdims=True), axis=0)


def synthetic_structures(directory: Path, n: int, seed: int = 0, min_length: int = 30, max_length: int = 90) -> Path:
    """`n` PDB files of one chain each (lengths drawn between `min_length` and `max_length`), plus
    ``short.pdb`` whose chain of 12 residues is skipped by the reader. Read with ``DIR::dssp=false``."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    letters = list(THREE)
    for k in range(n):
        length = int(rng.integers(min_length, max_length + 1))
        builder = PdbBuilder()
        for i, xyz in enumerate(random_walk(length, rng)):
            builder.residue(THREE[letters[rng.integers(20)]], "A", i + 1, xyz)
        (directory / f"s{k:03d}.pdb").write_text(builder.text())
    builder = PdbBuilder()
    for i, xyz in enumerate(random_walk(12, rng)):
        builder.residue("ALA", "A", i + 1, xyz)
    (directory / "short.pdb").write_text(builder.text())
    return directory
