"""Synthetic antibody variable domains from germline genes: training sequences for SAEs at scale.

The labelled antibody sets here are small (hundreds of domains), and an SAE needs hundreds of thousands of
residues. `synthetic_repertoire` recombines germline V and J genes with a random CDR3 junction and adds
somatic mutations, the way a B-cell repertoire arises:

* V gene: a germline V of the chosen species and chain (IMGT-gapped, from ANARCI's germline tables), up to
  IMGT 104 (the second Cys), then 0–3 residues of its 3' end (IMGT 105–107);
* junction: N/D residues drawn from CDR3 amino-acid frequencies, 2–14 for heavy chains, 1–4 for light;
* J gene: a germline J of the same species and chain, its first 0–3 residues trimmed (CDR3 end and FR4);
* somatic mutations: each residue outside the junction mutates with the sequence's rate (drawn from a
  gamma with mean 5%, twice as often in IMGT CDR1 and CDR2), to any other amino acid.

ANARCI (BSD-3) ships the germlines it aligns against, taken from IMGT/GENE-DB, whose terms of use apply to
them (free for academic use). They are read from the installed package; nothing is downloaded. IgLM (a
generative model, non-commercial) is the alternative when realistic CDR3s matter more than licences.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from plmlens.ioutils import write_text_atomic

#: Chain loci sampled, with their share: heavy, kappa, lambda.
LOCI = {"H": 0.5, "K": 0.3, "L": 0.2}
SPECIES = ("human", "mouse")
#: Amino-acid frequencies of CDR3 junctions (N/D additions are rich in G, Y, S, D).
_JUNCTION = {"A": 6, "C": 1, "D": 9, "E": 4, "F": 4, "G": 14, "H": 2, "I": 3, "K": 2, "L": 5, "M": 2, "N": 4,
             "P": 4, "Q": 2, "R": 7, "S": 9, "T": 5, "V": 4, "W": 4, "Y": 13}  # fmt: skip
_AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"
#: IMGT CDR1 and CDR2 (27–38, 56–65): mutated twice as often.
_CDR12 = set(range(27, 39)) | set(range(56, 66))


@dataclass(frozen=True)
class SyntheticChain:
    """One synthetic variable domain and how it was made."""

    id: str
    sequence: str
    chain_type: str  # heavy or light
    v_gene: str
    j_gene: str
    species: str
    mutations: int


def _germlines() -> dict:
    try:
        return importlib.import_module("anarci.germlines").all_germlines
    except ImportError:
        raise RuntimeError("synthetic antibodies need ANARCI's germlines: pip install anarci") from None


def _genes(table: dict, segment: str, locus: str, species: str) -> list[tuple[str, str]]:
    genes = table[segment].get(locus, {}).get(species, {})
    # Functional genes only: a germline with a stop or a gap inside its framework is left out.
    return [(name, seq) for name, seq in sorted(genes.items()) if "*" not in seq.replace("-", "")[:-1]]


def synthetic_repertoire(n: int, seed: int = 0, species: tuple[str, ...] = SPECIES) -> Iterator[SyntheticChain]:
    """`n` synthetic heavy and light variable domains (see the module docstring), the same for the same seed.

    Parameters
    ----------
    n : int
    seed : int
    species : tuple of str
        Species whose germlines are drawn from (each chain picks one uniformly).

    Yields
    ------
    SyntheticChain
    """
    table = _germlines()
    rng = np.random.default_rng([seed, 20])
    loci, shares = list(LOCI), np.array(list(LOCI.values()))
    junction = np.array(list(_JUNCTION.values()), dtype=float)
    junction_letters = list(_JUNCTION)
    made = 0
    while made < n:
        locus = loci[rng.choice(len(loci), p=shares / shares.sum())]
        kind = str(rng.choice(species))
        vs, js = _genes(table, "V", locus, kind), _genes(table, "J", locus, kind)
        if not vs or not js:
            continue
        v_name, v_gapped = vs[rng.integers(len(vs))]
        j_name, j_gapped = js[rng.integers(len(js))]
        v_part, v_positions = _v_segment(v_gapped, int(rng.integers(0, 4)))
        j_part = j_gapped.replace("-", "")[int(rng.integers(0, 4)) :]
        low, high = (2, 15) if locus == "H" else (1, 5)
        added = rng.choice(junction_letters, size=int(rng.integers(low, high)), p=junction / junction.sum())
        rate = float(rng.gamma(2.0, 0.025))
        v_mutated, count = _mutate(v_part, v_positions, rate, rng)
        j_mutated, j_count = _mutate(j_part, [0] * len(j_part), rate, rng)
        sequence = v_mutated + "".join(added) + j_mutated
        yield SyntheticChain(f"syn{seed}-{made}", sequence, "heavy" if locus == "H" else "light", v_name, j_name,
                             kind, count + j_count)  # fmt: skip
        made += 1


def _v_segment(gapped: str, tail: int) -> tuple[str, list[int]]:
    """The V gene's residues up to IMGT 104 plus `tail` residues after it, with their IMGT positions."""
    residues, positions = [], []
    for position, letter in enumerate(gapped, start=1):
        if letter == "-" or (position > 104 and len([p for p in positions if p > 104]) >= tail):
            continue
        residues.append(letter)
        positions.append(position)
    return "".join(residues), positions


def _mutate(sequence: str, positions: list[int], rate: float, rng: np.random.Generator) -> tuple[str, int]:
    letters = list(sequence)
    count = 0
    for k, letter in enumerate(letters):
        if rng.random() < rate * (2.0 if positions[k] in _CDR12 else 1.0):
            letters[k] = _AMINO_ACIDS[(_AMINO_ACIDS.index(letter) + int(rng.integers(1, 20))) % 20] \
                if letter in _AMINO_ACIDS else letter  # fmt: skip
            count += 1
    return "".join(letters), count


def write_repertoire_fasta(path: str | Path, n: int, seed: int = 0) -> Path:
    """Write `n` synthetic domains (`synthetic_repertoire`) as FASTA, atomically; the header carries the chain
    type, genes and mutation count (``>syn0-1 chain_type=heavy v=IGHV3-23*01 j=IGHJ4*02 species=human mut=7``)."""
    lines = []
    for chain in synthetic_repertoire(n, seed):
        lines.append(f">{chain.id} chain_type={chain.chain_type} v={chain.v_gene} j={chain.j_gene} "
                     f"species={chain.species} mut={chain.mutations}")  # fmt: skip
        lines.append(chain.sequence)
    return write_text_atomic(path, "\n".join(lines) + "\n")
