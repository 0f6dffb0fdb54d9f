"""Helpers for the model tests: tiny models with real tokeniser conventions, and real antibody sequences."""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
ANTIBODIES = SHARED / "data" / "antibodies"

#: Rostlab/prot_bert's vocab.txt, in id order.
PROTBERT_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"LAGVESIKRDTPNQFYMHCWXUBZO"]
#: facebook/esm2 vocabulary, in id order.
ESM_VOCAB = ["<cls>", "<pad>", "<eos>", "<unk>", *"LAGVSERTIDPKQNFYMHWCXBUZO", ".", "-", "<null_1>", "<mask>"]
#: Residue order used for the sentencepiece test vocabularies (ProtAlbert, ProtXLNet, ProtT5 style).
SPM_ORDER = "ALGVSREDTIPKFQNYMHWCXBOUZ"

#: IgLM's vocabulary (iglm/trained_models/vocab.txt), in id order.
IGLM_VOCAB = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"ACDEFGHIKLMNPQRSTVWY",
    "[CAMEL]", "[HUMAN]", "[MOUSE]", "[RABBIT]", "[RAT]", "[RHESUS]", "[HEAVY]", "[LIGHT]",
]  # fmt: skip


def word_level_tokenizer(vocab: list[str], template: str, specials: list[str], **tokens: str):
    """A one-character-per-token fast tokenizer over `vocab`, with `template` adding the special tokens."""
    tok = Tokenizer(models.WordLevel({t: i for i, t in enumerate(vocab)}, unk_token=tokens["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.post_processor = processors.TemplateProcessing(
        single=template, special_tokens=[(t, vocab.index(t)) for t in specials]
    )
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, **tokens)


# J-region motifs that end the variable domain: W-G-x-G (heavy), F-G-x-G (light); about ten framework-4
# residues follow them (e.g. WGQGTLVTVSS, FGGGTKLEIK).
_J_MOTIF = {"heavy": re.compile(r"WG.G"), "light": re.compile(r"FG.G")}
_AFTER_MOTIF = {"heavy": 11, "light": 10}


@dataclass(frozen=True)
class AntibodyChain:
    """A variable domain read from a bound antibody structure of the Pierce lab benchmark 5.5."""

    id: str
    chain_type: str
    sequence: str


def variable_domain(sequence: str, chain_type: str) -> str | None:
    """Cut a chain to its variable domain: up to the J-region motif plus the framework-4 residues after it.

    Returns None when the motif is not found where a variable domain ends (residues 90-140).
    """
    for match in _J_MOTIF[chain_type].finditer(sequence):
        if 90 <= match.start() <= 140:
            end = match.start() + _AFTER_MOTIF[chain_type]
            return sequence[:end]
    return None


def antibody_chains(limit: int | None = None) -> list[AntibodyChain]:
    """Heavy and light variable domains of the benchmark's bound antibodies (``*_r_b.pdb``), in file order.

    Fails (never skips) when the shared data or gemmi is missing.
    """
    import gemmi

    manifest = ANTIBODIES / "MANIFEST.tsv"
    if not manifest.is_file():
        raise FileNotFoundError(f"antibody benchmark manifest missing: {manifest}")
    chains: list[AntibodyChain] = []
    with manifest.open() as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            path = ANTIBODIES / "piercelab_bm5.5" / row["file"]
            if not row["file"].endswith("_r_b.pdb") or not path.is_file():
                continue
            wanted = {}
            for chain_type, column in (("heavy", "heavy_chains"), ("light", "light_chains")):
                for chain_id in row[column].split(","):
                    chain_id = chain_id.strip()
                    if re.fullmatch(r"[A-Za-z0-9]", chain_id):
                        wanted[chain_id] = chain_type
            if not wanted:
                continue
            try:
                structure = gemmi.read_structure(str(path))
            except RuntimeError:
                # A few files carry junk in the charge columns (79-80); the sequence does not need them.
                text = "\n".join(line[:78] for line in path.read_text().splitlines())
                structure = gemmi.read_pdb_string(text)
            # These files have no SEQRES; entities must be set up before get_polymer() finds the chain.
            structure.setup_entities()
            for chain in structure[0]:
                if chain.name not in wanted:
                    continue
                polymer = chain.get_polymer()
                sequence = gemmi.one_letter_code([r.name for r in polymer]).upper()
                domain = variable_domain(sequence, wanted[chain.name])
                if domain and set(domain) <= set("ACDEFGHIKLMNPQRSTVWY"):
                    chains.append(AntibodyChain(f"{row['file'][:4]}.{chain.name}", wanted[chain.name], domain))
            if limit is not None and len(chains) >= limit:
                return chains[:limit]
    return chains


def mask_positions(length: int, fraction: float, generator: torch.Generator) -> list[int]:
    """A seeded random choice of ``round(fraction * length)`` residue positions (at least one)."""
    count = max(1, round(fraction * length))
    return sorted(torch.randperm(length, generator=generator)[:count].tolist())


def require_integration() -> bool:
    """Whether CI demands the integration tests (they fail rather than skip there and everywhere)."""
    return os.environ.get("PLMLENS_REQUIRE_INTEGRATION", "") == "1"
