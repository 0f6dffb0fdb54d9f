"""Residue tokenisers: one token per residue, the model's own special tokens around them.

Every model in the registry reads one token per residue. A :class:`ResidueTokenizer` holds the id of each
residue letter, the special tokens before and after the residues, the padding token and side, and builds
padded batches together with where each protein's residues sit in its row. That position is what lets the
adapter hand back attention over residues only, for right-padded models (``[CLS] residues [SEP] pad``) and
for XLNet, which puts its special tokens at the end and pads on the left (``pad residues <sep> <cls>``).

Tokenisers come either from a fixed vocabulary (TAPE, and the models shipped in wheels, whose vocabularies
are small files we read ourselves) or from a transformers tokenizer, whose conventions are checked against
its own output when the model is loaded.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from plmlens.models.errors import ModelLoadError, SequenceError

#: The 20 standard amino acids.
STANDARD_RESIDUES = "ACDEFGHIKLMNPQRSTVWY"
#: Standard residues plus the IUPAC ambiguity and rare codes a protein model may know.
EXTENDED_RESIDUES = STANDARD_RESIDUES + "XBZUO"
#: ProtTrans models were trained with the rare residues U, Z, O, B mapped to X.
PROTTRANS_REPLACEMENTS: dict[str, str] = {"U": "X", "Z": "X", "O": "X", "B": "X"}


class TruncationWarning(UserWarning):
    """Some proteins were longer than the model's limit and were cut to their first residues."""


def as_records(sequences: Iterable[Any], ids: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """Pair sequences with protein ids.

    Parameters
    ----------
    sequences : iterable of str or objects with ``id`` and ``sequence`` attributes
        Protein sequences, or records such as :class:`plmlens.proteins.Protein`.
    ids : sequence of str, optional
        Protein ids; by default the records' own ids, or ``seq0``, ``seq1``, ... for plain strings.

    Returns
    -------
    list of (str, str)
        ``(id, sequence)`` pairs in input order.
    """
    items = list(sequences)
    if ids is not None and len(ids) != len(items):
        raise ValueError(f"{len(ids)} ids given for {len(items)} sequences")
    records = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            sequence, own_id = item, f"seq{i}"
        elif hasattr(item, "sequence") and hasattr(item, "id"):
            sequence, own_id = str(item.sequence), str(item.id)
        else:
            raise TypeError(f"expected a sequence string or a record with .id and .sequence, got {type(item)}")
        records.append((str(ids[i]) if ids is not None else own_id, sequence))
    return records


@dataclass
class Encoding:
    """A padded batch of tokenised proteins.

    Attributes
    ----------
    input_ids, attention_mask : LongTensor, shape (B, T)
        Token ids and the padding mask (1 for real tokens).
    token_type_ids : LongTensor, shape (B, T), or None
        Segment ids, for tokenisers that emit them.
    starts : LongTensor, shape (B,)
        Token index of each protein's first residue.
    lengths : LongTensor, shape (B,)
        Residues of each protein after truncation.
    ids : tuple of str
        Protein ids.
    sequences : tuple of str
        The residues that were encoded (upper-cased, truncated).
    truncated : tuple of str
        Ids of the proteins that were truncated.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    token_type_ids: torch.Tensor | None
    starts: torch.Tensor
    lengths: torch.Tensor
    ids: tuple[str, ...]
    sequences: tuple[str, ...]
    truncated: tuple[str, ...]

    def model_inputs(self, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """Keyword arguments for a transformers model's forward, on `device`."""
        inputs = {"input_ids": self.input_ids.to(device), "attention_mask": self.attention_mask.to(device)}
        if self.token_type_ids is not None:
            inputs["token_type_ids"] = self.token_type_ids.to(device)
        return inputs

    def residue_positions(self) -> list[torch.Tensor]:
        """Token indices of each protein's residues, in residue order."""
        return [
            torch.arange(int(s), int(s) + int(n))
            for s, n in zip(self.starts.tolist(), self.lengths.tolist(), strict=True)
        ]


@dataclass(frozen=True)
class ResidueTokenizer:
    """One token per residue between a model's own special tokens.

    Parameters
    ----------
    residue_ids : mapping of str to int
        Token id of every residue letter the model accepts (rare letters already mapped to their
        replacement's id, e.g. U → id of X for ProtTrans).
    prefix, suffix : tuple of int
        Special tokens before and after the residues (``[CLS]`` / ``[SEP]``; XLNet has ``<sep> <cls>``
        after; IgLM has its chain and species tags before).
    pad_id : int
        Padding token.
    mask_id : int or None
        Mask token, for masked-residue prediction.
    padding_side : {"right", "left"}
        Where padding goes; XLNet pads on the left.
    type_ids : tuple or None
        Segment ids as ``(prefix types, residue type, suffix types, pad type)`` for tokenisers that emit
        them, else None.
    chain_prefixes : mapping of str to tuple of int
        A prefix per antibody chain type (IgLM's ``[HEAVY]`` / ``[LIGHT]`` tag), used instead of `prefix`
        for proteins of that type; each as long as `prefix`.
    """

    residue_ids: Mapping[str, int]
    prefix: tuple[int, ...]
    suffix: tuple[int, ...]
    pad_id: int
    mask_id: int | None = None
    padding_side: str = "right"
    type_ids: tuple[tuple[int, ...], int, tuple[int, ...], int] | None = None
    chain_prefixes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    letters: str = field(init=False)

    def __post_init__(self) -> None:
        if self.padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', not {self.padding_side!r}")
        if any(len(p) != len(self.prefix) for p in self.chain_prefixes.values()):
            raise ValueError("every chain prefix must be as long as the prefix")
        object.__setattr__(self, "letters", "".join(sorted(self.residue_ids)))

    @property
    def n_special(self) -> int:
        """Number of special tokens around each protein."""
        return len(self.prefix) + len(self.suffix)

    def check(self, protein_id: str, sequence: str, model_name: str) -> str:
        """Upper-case a sequence and check it against the alphabet.

        Parameters
        ----------
        protein_id : str
            Named in error messages.
        sequence : str
            One-letter residues; lower case is accepted (FASTA soft-masking) and upper-cased.
        model_name : str
            Named in error messages.

        Returns
        -------
        str
            The upper-cased sequence.

        Raises
        ------
        SequenceError
            If the sequence is empty or has characters the model has no token for.
        """
        sequence = sequence.strip().upper()
        if not sequence:
            raise SequenceError(f"protein {protein_id!r}: empty sequence")
        bad = sorted(set(sequence) - set(self.residue_ids))
        if bad:
            raise SequenceError(
                f"protein {protein_id!r}: characters {''.join(bad)!r} are outside the alphabet of "
                f"{model_name} ({self.letters})"
            )
        return sequence

    def encode(
        self,
        records: Sequence[tuple[str, str]],
        max_tokens: int,
        model_name: str = "the model",
        chain_types: Sequence[str | None] | None = None,
    ) -> Encoding:
        """Tokenise and pad a batch, truncating proteins longer than `max_tokens` tokens.

        Parameters
        ----------
        records : sequence of (str, str)
            ``(id, sequence)`` pairs (see :func:`as_records`).
        max_tokens : int
            Largest number of tokens per protein, special tokens included; longer proteins keep their
            first ``max_tokens - n_special`` residues and a :class:`TruncationWarning` names them.
        model_name : str
            Named in error and warning messages.
        chain_types : sequence of str or None, optional
            Each protein's antibody chain type, which picks its prefix from `chain_prefixes` (others
            get `prefix`).

        Returns
        -------
        Encoding
        """
        if not records:
            raise ValueError("no sequences to encode")
        max_residues = max_tokens - self.n_special
        if max_residues < 1:
            raise ValueError(f"max_length {max_tokens} leaves no room for residues in {model_name}")
        sequences, truncated = [], []
        for protein_id, raw in records:
            sequence = self.check(protein_id, raw, model_name)
            if len(sequence) > max_residues:
                truncated.append(protein_id)
                sequence = sequence[:max_residues]
            sequences.append(sequence)
        if truncated:
            warnings.warn(
                f"{model_name}: truncated to the first {max_residues} residues ({max_tokens} tokens): "
                + ", ".join(truncated),
                TruncationWarning,
                stacklevel=3,
            )
        width = max(len(s) for s in sequences) + self.n_special
        batch = len(sequences)
        input_ids = torch.full((batch, width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((batch, width), dtype=torch.long)
        token_types = None
        if self.type_ids is not None:
            token_types = torch.full((batch, width), self.type_ids[3], dtype=torch.long)
        starts = torch.zeros(batch, dtype=torch.long)
        chain_types = chain_types or [None] * batch
        for b, sequence in enumerate(sequences):
            prefix = self.chain_prefixes.get(chain_types[b] or "", self.prefix)
            row = [*prefix, *(self.residue_ids[c] for c in sequence), *self.suffix]
            offset = width - len(row) if self.padding_side == "left" else 0
            input_ids[b, offset : offset + len(row)] = torch.tensor(row)
            attention_mask[b, offset : offset + len(row)] = 1
            starts[b] = offset + len(self.prefix)
            if token_types is not None and self.type_ids is not None:
                pre, residue, suf, _ = self.type_ids
                types = [*pre, *([residue] * len(sequence)), *suf]
                token_types[b, offset : offset + len(row)] = torch.tensor(types)
        return Encoding(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_types,
            starts=starts,
            lengths=torch.tensor([len(s) for s in sequences], dtype=torch.long),
            ids=tuple(pid for pid, _ in records),
            sequences=tuple(sequences),
            truncated=tuple(truncated),
        )


def fixed_vocab_tokenizer(
    vocab: Sequence[str],
    *,
    prefix: Sequence[str],
    suffix: Sequence[str],
    pad: str,
    mask: str | None,
    aliases: Mapping[str, str] | None = None,
    chain_prefixes: Mapping[str, Sequence[str]] | None = None,
) -> ResidueTokenizer:
    """Build a tokeniser from a vocabulary list (token at index i has id i).

    Parameters
    ----------
    vocab : sequence of str
        Tokens in id order; single upper-case letters among them are residues.
    prefix, suffix : sequence of str
        Special tokens around each protein.
    pad : str
        Padding token.
    mask : str or None
        Mask token.
    aliases : mapping of str to str, optional
        Extra residue letters and the token they are read as (e.g. ``{"X": "[UNK]"}``).
    chain_prefixes : mapping of str to sequence of str, optional
        Prefix tokens per antibody chain type (see `ResidueTokenizer`).

    Returns
    -------
    ResidueTokenizer
    """
    index = {token: i for i, token in enumerate(vocab)}
    residue_ids = {t: i for t, i in index.items() if len(t) == 1 and t in EXTENDED_RESIDUES}
    for letter, token in (aliases or {}).items():
        residue_ids[letter] = index[token]
    return ResidueTokenizer(
        residue_ids=residue_ids,
        prefix=tuple(index[t] for t in prefix),
        suffix=tuple(index[t] for t in suffix),
        pad_id=index[pad],
        mask_id=None if mask is None else index[mask],
        chain_prefixes={kind: tuple(index[t] for t in tokens) for kind, tokens in (chain_prefixes or {}).items()},
    )


def from_hf_tokenizer(
    tokenizer: Any,
    *,
    spaced: bool,
    replacements: Mapping[str, str] | None = None,
    name: str = "the model",
) -> ResidueTokenizer:
    """Read the residue conventions of a transformers tokenizer, and check them against its output.

    Parameters
    ----------
    tokenizer : transformers tokenizer
        The model's own tokenizer.
    spaced : bool
        Whether the model reads space-separated residues (ProtTrans) or a plain string (ESM).
    replacements : mapping of str to str, optional
        Letters read as another letter (ProtTrans: U, Z, O, B → X).
    name : str
        Model name for error messages.

    Returns
    -------
    ResidueTokenizer

    Raises
    ------
    ModelLoadError
        If the tokenizer does not give one token per residue, or its padding differs from ours.
    """
    unk = tokenizer.unk_token_id

    def letter_id(letter: str) -> int | None:
        # Word-piece vocabularies hold the bare letter; sentencepiece ones the word-initial "▁A".
        for token in (letter, "\u2581" + letter):
            token_id = tokenizer.convert_tokens_to_ids(token)
            if isinstance(token_id, int) and token_id != unk:
                return token_id
        return None

    residue_ids = {c: i for c in EXTENDED_RESIDUES if (i := letter_id(c)) is not None}
    missing = sorted(set(STANDARD_RESIDUES) - set(residue_ids))
    if missing:
        raise ModelLoadError(f"{name}: its tokenizer has no token for residues {''.join(missing)}")
    if "X" not in residue_ids and unk is not None:
        # An unknown residue is what the model's own tokenizer makes of X when it has no X token.
        residue_ids["X"] = unk
    for letter, target in (replacements or {}).items():
        if target in residue_ids:
            residue_ids[letter] = residue_ids[target]

    probe = tokenizer("A", add_special_tokens=True)
    ids = list(probe["input_ids"])
    if ids.count(residue_ids["A"]) != 1:
        raise ModelLoadError(f"{name}: its tokenizer does not encode one residue as one token")
    at = ids.index(residue_ids["A"])
    type_ids = None
    if "token_type_ids" in probe:
        types = list(probe["token_type_ids"])
        type_ids = (tuple(types[:at]), types[at], tuple(types[at + 1 :]), int(tokenizer.pad_token_type_id))
    result = ResidueTokenizer(
        residue_ids=residue_ids,
        prefix=tuple(ids[:at]),
        suffix=tuple(ids[at + 1 :]),
        pad_id=int(tokenizer.pad_token_id),
        mask_id=tokenizer.mask_token_id,
        padding_side=tokenizer.padding_side,
        type_ids=type_ids,
    )
    _verify_against(tokenizer, result, spaced=spaced, name=name)
    return result


def _verify_against(tokenizer: Any, ours: ResidueTokenizer, *, spaced: bool, name: str) -> None:
    """Fail loading when our encoding of a padded probe batch differs from the tokenizer's own."""
    probes = [STANDARD_RESIDUES, "MKV"]
    texts = [" ".join(p) if spaced else p for p in probes]
    theirs = tokenizer(texts, padding=True, add_special_tokens=True)
    mine = ours.encode(list(zip(["probe0", "probe1"], probes, strict=True)), max_tokens=10_000, model_name=name)
    if [list(r) for r in theirs["input_ids"]] != mine.input_ids.tolist() or [
        list(r) for r in theirs["attention_mask"]
    ] != mine.attention_mask.tolist():
        raise ModelLoadError(
            f"{name}: its tokenizer's encoding of a probe batch differs from one token per residue "
            "between its special tokens; this tokenizer is not supported"
        )
