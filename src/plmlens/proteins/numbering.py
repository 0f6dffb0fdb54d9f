"""Antibody numbering: IMGT positions, CDR / framework regions, germline genes and somatic mutations.

The field's own tool does the numbering: ANARCI (Dunbar & Deane 2016; PyPI ``anarci``, BSD-3) aligns each
chain to its hidden Markov models of immunoglobulin and T-cell receptor variable domains with HMMER's
``hmmscan`` (PyPI ``hmmer``, MIT, which ships the binary: no system install, no network), numbers it and
assigns the closest germline V and J genes by sequence identity. This module calls ANARCI's Python API once
per batch (one ``hmmscan`` run for the whole batch) and turns its answer into per-residue arrays aligned to
the input sequence (`number_sequences`), then into labels (the ``numbering=SCHEME`` source option, see
`plmlens.proteins.labels`):

``imgt_position``      the IMGT position of each residue with its insertion code (``"111A"``), always IMGT
``region``             ``fr_h1 cdr_h1 fr_h2 cdr_h2 fr_h3 cdr_h3 fr_h4`` (heavy) or ``fr_l1 .. fr_l4`` (light)
                       under the chosen scheme
``framework``          the residue is in a framework region (under the chosen scheme)
``somatic_mutation``   the residue differs from the assigned germline at its IMGT position

and ``protein.meta["numbering"]`` (scheme, chain type, species, V and J genes with their identities, number of
somatic mutations). Residues outside the numbered domain are undefined; a chain that cannot be numbered
keeps its record with every label undefined and the reason in ``meta["unlabelled"]["numbering"]``.

CDR definitions (inclusive, on the scheme's own numbering; an insertion belongs with its number, so Kabat
H1 31–35 holds 35A and 35B and IMGT CDR3 105–117 holds 111A, 112A)::

    scheme   numbering  CDR-H1    CDR-H2    CDR-H3     CDR-L1   CDR-L2   CDR-L3    reference
    imgt     IMGT       27-38     56-65     105-117    27-38    56-65    105-117   Lefranc et al. 2003
    kabat    Kabat      31-35     50-65     95-102     24-34    50-56    89-97     Kabat et al. 1991
    chothia  Chothia    26-32     52-56     95-102     24-34    50-56    89-97     Chothia & Lesk 1987;
                                                                                   Al-Lazikani et al. 1997
    north    Chothia    23-35     50-58     93-102     24-34    49-56    89-97     North et al. 2011

Framework regions are what lies between: FR1 before CDR1, FR2 between CDR1 and CDR2, FR3 between CDR2 and
CDR3, FR4 after CDR3 (IMGT: FR1 1–26, FR2 39–55, FR3 66–104, FR4 118–128). Chothia's H1 is the structural
loop H26–H32 (Al-Lazikani et al. 1997, as abYsis gives it); North's CDRs are the loops of North, Lehmann &
Dunbrack (2011), whose common lengths (H1-13, H2-10, L1-11, L2-8, L3-9) these spans give.

Rules (a chain failing one is not numbered; the reason is one line):

- Not an antibody: no ANARCI hit over its bit-score threshold (80), "not an antibody variable domain".
  A T-cell receptor (or other) domain, "not an antibody chain (ANARCI type A)"; only H (heavy) and K, L
  (light) are antibodies. A chain with two domains (an scFv) is numbered on its first.
- Truncated: the numbered domain must reach from IMGT 23 (the first conserved Cys) or before to 118 (the
  J-region Trp / Phe) or after, and hold IMGT 104 (the second Cys); otherwise "truncated domain (numbered
  positions 1–69 only)" or "truncated domain (IMGT 104 missing)".
- Unknown residues: an ``X`` inside the numbered domain makes its position, the germline identity and the
  mutation calls guesses, "sequence has X at residue 51 (IMGT 56)"; an ``X`` outside the domain is harmless.

Somatic mutations: ANARCI's germline sequences are gapped to IMGT positions 1–128 (index i holds position
i + 1, ``-`` where the gene has no residue; checked in the tests). A residue at IMGT position 1–104 is
mutated when it differs from the assigned V gene there, at 118–128 when it differs from the J gene;
undefined in CDR3 (105–117, made by V(D)J joining, not inherited), at insertions (``"32A"``) and where the
germline has a gap.
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import shutil
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from plmlens.proteins.annotations import antibody_chain_type
from plmlens.proteins.labels import (
    BOOL,
    CATEGORY,
    Annotator,
    LabelSpec,
    mark_unlabelled,
    register_annotator,
    register_label,
)
from plmlens.proteins.positions import IMGT_POSITION
from plmlens.proteins.record import Protein

SCHEMES = ("imgt", "kabat", "chothia", "north")
#: The chain types numbering gives (ANARCI's H heavy; K and L, kappa and lambda, light).
CHAIN_TYPES = ("heavy", "light")
_ANTIBODY_TYPES = {"H": "heavy", "K": "light", "L": "light"}
_ALL_TYPES = {"H", "K", "L", "A", "B", "G", "D"}

#: CDR spans (inclusive, on the scheme's numbering) per scheme, for heavy and light chains: CDR1, CDR2, CDR3.
CDR_SPANS: dict[str, dict[str, tuple[tuple[int, int], ...]]] = {
    "imgt": {"heavy": ((27, 38), (56, 65), (105, 117)), "light": ((27, 38), (56, 65), (105, 117))},
    "kabat": {"heavy": ((31, 35), (50, 65), (95, 102)), "light": ((24, 34), (50, 56), (89, 97))},
    "chothia": {"heavy": ((26, 32), (52, 56), (95, 102)), "light": ((24, 34), (50, 56), (89, 97))},
    "north": {"heavy": ((23, 35), (50, 58), (93, 102)), "light": ((24, 34), (49, 56), (89, 97))},
}
#: The numbering ANARCI applies for each scheme (North's CDRs sit on Chothia numbering).
_ANARCI_SCHEME = {"imgt": "imgt", "kabat": "kabat", "chothia": "chothia", "north": "chothia"}

#: Region categories, heavy then light, each in sequence order.
REGIONS = ("fr_h1", "cdr_h1", "fr_h2", "cdr_h2", "fr_h3", "cdr_h3", "fr_h4",
           "fr_l1", "cdr_l1", "fr_l2", "cdr_l2", "fr_l3", "cdr_l3", "fr_l4")  # fmt: skip
CDRS = tuple(region for region in REGIONS if region.startswith("cdr"))

#: A complete domain holds IMGT 23 (Cys) to 118 (J-region Trp / Phe) and the Cys at 104.
FIRST_REQUIRED, LAST_REQUIRED, SECOND_CYS = 23, 118, 104
#: IMGT positions compared with the V gene and with the J gene.
V_POSITIONS, J_POSITIONS = (1, 104), (118, 128)
#: ANARCI's bit-score threshold for a domain hit (its default).
BIT_SCORE_THRESHOLD = 80
#: Chains per hmmscan run.
BATCH_SIZE = 500


class NumberingToolError(RuntimeError):
    """ANARCI or HMMER's hmmscan cannot be found (one line saying what to install)."""


@dataclass(frozen=True)
class NumberingFailure:
    """A chain that could not be numbered, and why (one line)."""

    reason: str
    id: str = ""

    @property
    def kind(self) -> str:
        """The reason without its particulars (``"truncated domain"``), for counting."""
        return self.reason.split(" (")[0].split(" at ")[0].split(": ")[0]


@dataclass(frozen=True, eq=False)
class ChainNumbering:
    """One numbered antibody chain; per-residue arrays are aligned to the input sequence and masked outside
    the numbered domain.

    Attributes
    ----------
    id : str
    scheme : str
        One of `SCHEMES`: the scheme of `region` and `scheme_position`.
    chain_type : {"heavy", "light"}
    locus : {"H", "K", "L"}
        ANARCI's chain type (heavy, kappa, lambda).
    species : str
        Species of the assigned V gene (of the best HMM when no gene was assigned).
    v_gene, j_gene : str or None
        Assigned germline genes (``"IGHV3-66*01"``); None when ANARCI assigned none.
    v_identity, j_identity : float or None
        Identity to them over the germline's positions (ANARCI's measure), 0–1.
    start, end : int
        The numbered domain, ``sequence[start:end]`` (0-based, end exclusive).
    imgt_position : MaskedArray of str, shape (L,)
        IMGT position and insertion code (``"111A"``).
    scheme_position : MaskedArray of str, shape (L,)
        Position in `scheme`'s numbering (equal to `imgt_position` under IMGT).
    region : MaskedArray of str, shape (L,)
        One of `REGIONS` for this chain type.
    somatic_mutation : MaskedArray of bool, shape (L,)
        Differs from the germline at its IMGT position (see the module docstring for where it is defined).
    """

    id: str
    scheme: str
    chain_type: str
    locus: str
    species: str
    v_gene: str | None
    v_identity: float | None
    j_gene: str | None
    j_identity: float | None
    start: int
    end: int
    imgt_position: np.ma.MaskedArray
    scheme_position: np.ma.MaskedArray
    region: np.ma.MaskedArray
    somatic_mutation: np.ma.MaskedArray

    @property
    def n_somatic(self) -> int:
        """Residues called somatic mutations."""
        return int(self.somatic_mutation.filled(False).sum())

    @property
    def framework(self) -> np.ma.MaskedArray:
        """Whether each residue is in a framework region (masked outside the domain)."""
        values = np.char.startswith(np.asarray(self.region.filled("")), "fr_")
        return np.ma.MaskedArray(values, mask=np.ma.getmaskarray(self.region).copy())

    def meta(self) -> dict:
        """The per-chain facts for ``protein.meta["numbering"]``."""
        return {"scheme": self.scheme, "chain_type": self.chain_type, "species": self.species,
                "v_gene": self.v_gene, "v_identity": self.v_identity, "j_gene": self.j_gene,
                "j_identity": self.j_identity, "n_somatic": self.n_somatic}  # fmt: skip


def region_sequence(sequence: str, numbering: ChainNumbering, region: str) -> str:
    """The residues of `sequence` in one region of `numbering` (e.g. ``"cdr_h3"``), in order."""
    chosen = numbering.region.filled("") == region
    return "".join(letter for letter, keep in zip(sequence, chosen, strict=True) if keep)


# -- finding the tools ------------------------------------------------------------------------------------


def hmmscan_path() -> Path:
    """HMMER's ``hmmscan``: the binary inside the ``hmmer`` wheel, else the one on PATH.

    Raises
    ------
    NumberingToolError
        One line, when neither exists.
    """
    import importlib.util

    spec = importlib.util.find_spec("hmmer")
    if spec is not None and spec.origin:
        binary = Path(spec.origin).parent / "data" / "bin" / "hmmscan"
        if binary.is_file() and os.access(binary, os.X_OK):
            return binary
    found = shutil.which("hmmscan")
    if found:
        return Path(found)
    raise NumberingToolError("antibody numbering needs HMMER's hmmscan: pip install hmmer (or put hmmscan on PATH)")


def _anarci():
    """ANARCI's numbering module, imported on first use (it pulls in Biopython)."""
    import importlib

    try:
        # The package re-exports its function `anarci` over the module of that name: import the module.
        module = importlib.import_module("anarci.anarci")
    except ImportError as error:
        raise NumberingToolError(f"antibody numbering needs ANARCI: pip install anarci ({error})") from None
    return module


@contextlib.contextmanager
def _quiet_with_hmmscan(directory: Path) -> Iterator[None]:
    """Silence ANARCI's prints and put `directory` first on PATH while it runs.

    ANARCI's check for very long CDR3s runs hmmscan again without the path it was given, so hmmscan must
    also be on PATH; its notes and errors go to stdout / stderr, which must not reach the terminal (errors
    come back as `NumberingFailure`).
    """
    old_path = os.environ.get("PATH", "")
    os.environ["PATH"] = f"{directory}{os.pathsep}{old_path}"
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        os.environ["PATH"] = old_path


# -- numbering --------------------------------------------------------------------------------------------


def _key(number: int, insertion: str) -> str:
    return f"{number}{insertion.strip()}"


def _placed(domain: tuple, sequence: str) -> list[tuple[int, int, str]]:
    """ANARCI's numbering of one domain as (sequence index, number, insertion code), gaps left out."""
    numbering, start, _ = domain
    out, index = [], start
    for (number, insertion), letter in numbering:
        if letter == "-":
            continue
        if sequence[index] != letter:  # ANARCI validates this; a mismatch would misplace every label
            raise AssertionError(f"numbering does not match the sequence at residue {index + 1}")
        out.append((index, number, insertion))
        index += 1
    return out


def _region(number: int, spans: tuple[tuple[int, int], ...], letter: str) -> str:
    for i, (first, last) in enumerate(spans, start=1):
        if number < first:
            return f"fr_{letter}{i}"
        if number <= last:
            return f"cdr_{letter}{i}"
    return f"fr_{letter}4"


def _failure(name: str, sequence: str, imgt: list[tuple[int, int, str]]) -> NumberingFailure | None:
    """The rules of the module docstring: X inside the domain, a truncated domain."""
    x_at = [(index, _key(number, ins)) for index, number, ins in imgt if sequence[index] == "X"]
    if x_at:
        where = ", ".join(f"residue {index + 1} (IMGT {key})" for index, key in x_at[:3])
        more = f" and {len(x_at) - 3} more" if len(x_at) > 3 else ""
        return NumberingFailure(f"sequence has X at {where}{more}", name)
    numbers = [number for _, number, _ in imgt]
    if not numbers or numbers[0] > FIRST_REQUIRED or numbers[-1] < LAST_REQUIRED:
        span = f"{numbers[0]}–{numbers[-1]}" if numbers else "none"
        return NumberingFailure(f"truncated domain (numbered positions {span} only)", name)
    if SECOND_CYS not in numbers:
        return NumberingFailure(f"truncated domain (IMGT {SECOND_CYS} missing)", name)
    return None


def _germline(module, kind: str, locus: str, gene: tuple[str, str] | None) -> str | None:
    if gene is None:
        return None
    species, name = gene
    return module.all_germlines[kind].get(locus, {}).get(species, {}).get(name)


def _mutations(sequence: str, imgt: list[tuple[int, int, str]], v_line: str | None, j_line: str | None) -> tuple:
    values = np.zeros(len(sequence), dtype=bool)
    defined = np.zeros(len(sequence), dtype=bool)
    for index, number, insertion in imgt:
        if insertion.strip():
            continue
        line = v_line if V_POSITIONS[0] <= number <= V_POSITIONS[1] else None
        if J_POSITIONS[0] <= number <= J_POSITIONS[1]:
            line = j_line
        if line is None or number > len(line) or line[number - 1] == "-":
            continue
        defined[index] = True
        values[index] = sequence[index] != line[number - 1]
    return values, defined


def _chain(
    module, name: str, sequence: str, scheme: str, imgt_domain: tuple, scheme_domain: tuple | None, details: dict
) -> ChainNumbering | NumberingFailure:
    """One numbered domain → a `ChainNumbering`, or the rule it fails."""
    locus = details["chain_type"]
    if locus not in _ANTIBODY_TYPES:
        return NumberingFailure(f"not an antibody chain (ANARCI type {locus})", name)
    imgt = _placed(imgt_domain, sequence)
    failure = _failure(name, sequence, imgt)
    if failure is not None:
        return failure
    if scheme != "imgt" and scheme_domain is None:
        return NumberingFailure(f"ANARCI gave no {scheme} numbering (only IMGT)", name)
    chain_type = _ANTIBODY_TYPES[locus]
    n = len(sequence)
    imgt_keys = np.full(n, "", dtype="<U5")
    for index, number, insertion in imgt:
        imgt_keys[index] = _key(number, insertion)
    placed = imgt if scheme == "imgt" else _placed(scheme_domain, sequence)
    keys = np.full(n, "", dtype="<U5")
    regions = np.full(n, "", dtype="<U6")
    spans, letter = CDR_SPANS[scheme][chain_type], chain_type[0]
    for index, number, insertion in placed:
        keys[index] = _key(number, insertion)
        regions[index] = _region(number, spans, letter)
    genes = details.get("germlines") or {}
    v_gene, v_identity = (genes.get("v_gene") or [None, None])[:2]
    j_gene, j_identity = (genes.get("j_gene") or [None, None])[:2]
    mutated, defined = _mutations(
        sequence, imgt, _germline(module, "V", locus, v_gene), _germline(module, "J", locus, j_gene)
    )
    indices = [index for index, _, _ in imgt]
    return ChainNumbering(
        id=name,
        scheme=scheme,
        chain_type=chain_type,
        locus=locus,
        species=v_gene[0] if v_gene else str(details.get("species", "")),
        v_gene=v_gene[1] if v_gene else None,
        v_identity=None if v_identity is None else float(v_identity),
        j_gene=j_gene[1] if j_gene else None,
        j_identity=None if j_identity is None else float(j_identity),
        start=min(indices),
        end=max(indices) + 1,
        imgt_position=np.ma.MaskedArray(imgt_keys, mask=imgt_keys == ""),
        scheme_position=np.ma.MaskedArray(keys, mask=keys == ""),
        region=np.ma.MaskedArray(regions, mask=regions == ""),
        somatic_mutation=np.ma.MaskedArray(mutated, mask=~defined),
    )


def _number_batch(
    module, items: list[tuple[str, str]], scheme: str, species: Sequence[str] | None, hmmscan: Path
) -> list[ChainNumbering | NumberingFailure]:
    """One hmmscan run for `items`, numbered under IMGT (and under `scheme` from the same alignments)."""
    allowed = list(species) if species else None
    alignments = module.run_hmmer(items, hmmerpath=str(hmmscan.parent), bit_score_threshold=BIT_SCORE_THRESHOLD,
                                  hmmer_species=allowed)  # fmt: skip
    module.check_for_j(items, alignments, "imgt")
    other = copy.deepcopy(alignments) if scheme != "imgt" else None
    imgt_numbered, imgt_details, _ = module.number_sequences_from_alignment(
        items, alignments, scheme="imgt", allow=_ALL_TYPES, assign_germline=True, allowed_species=allowed
    )
    scheme_numbered = None
    if other is not None:
        # Only antibody chains: ANARCI has no Kabat or Chothia numbering for T-cell receptors.
        scheme_numbered, _, _ = module.number_sequences_from_alignment(
            items, other, scheme=_ANARCI_SCHEME[scheme], allow=set(_ANTIBODY_TYPES)
        )
    out: list[ChainNumbering | NumberingFailure] = []
    for i, (name, sequence) in enumerate(items):
        if not imgt_numbered[i]:
            out.append(NumberingFailure("not an antibody variable domain", name))
            continue
        scheme_domain = scheme_numbered[i][0] if scheme_numbered and scheme_numbered[i] else None
        out.append(_chain(module, name, sequence, scheme, imgt_numbered[i][0], scheme_domain, imgt_details[i][0]))
    return out


def _readable(name: str, sequence: str) -> NumberingFailure | None:
    if not sequence:
        return NumberingFailure("empty sequence", name)
    if len(sequence) >= 10000:
        return NumberingFailure(f"sequence too long for ANARCI ({len(sequence)} residues)", name)
    if not sequence.isascii() or not sequence.isalpha() or not sequence.isupper():
        return NumberingFailure("sequence has characters other than upper-case amino-acid letters", name)
    return None


def number_sequences(
    items: Sequence[tuple[str, str]],
    scheme: str = "imgt",
    species: Sequence[str] | None = None,
    batch_size: int = BATCH_SIZE,
) -> list[ChainNumbering | NumberingFailure]:
    """Number antibody chains with ANARCI, one hmmscan run per batch.

    Parameters
    ----------
    items : sequence of (str, str)
        (id, sequence) pairs.
    scheme : {"imgt", "kabat", "chothia", "north"}
        The scheme of the regions (the IMGT position is always given too).
    species : sequence of str, optional
        Germline species to choose from (ANARCI's: human, mouse, rat, rabbit, rhesus, pig, alpaca, cow);
        None: all.
    batch_size : int
        Chains per hmmscan run.

    Returns
    -------
    list of ChainNumbering or NumberingFailure
        One per item, in order; never raises for a bad chain.

    Raises
    ------
    ValueError
        For an unknown scheme.
    NumberingToolError
        When ANARCI or hmmscan is missing.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"numbering scheme must be one of {', '.join(SCHEMES)}, not {scheme!r:.40}")
    module = _anarci()
    hmmscan = hmmscan_path()
    out: list[ChainNumbering | NumberingFailure | None] = [_readable(name, seq) for name, seq in items]
    todo = [i for i, result in enumerate(out) if result is None]
    for first in range(0, len(todo), max(1, batch_size)):
        chunk = todo[first : first + max(1, batch_size)]
        batch = [(f"s{i}", items[i][1]) for i in chunk]  # ANARCI's FASTA needs ids without spaces
        for i, result in zip(chunk, _number_robustly(module, batch, scheme, species, hmmscan), strict=True):
            out[i] = replace(result, id=items[i][0])
    return out  # type: ignore[return-value]


def _number_robustly(
    module, batch: list[tuple[str, str]], scheme: str, species: Sequence[str] | None, hmmscan: Path
) -> list[ChainNumbering | NumberingFailure]:
    """`_number_batch`, and chain by chain when the batch fails, so one bad chain fails alone."""
    try:
        with _quiet_with_hmmscan(hmmscan.parent):
            return _number_batch(module, batch, scheme, species, hmmscan)
    except Exception:
        pass  # ANARCI raises assertions (and others) on a chain it cannot handle: find it, number the rest
    out: list[ChainNumbering | NumberingFailure] = []
    for item in batch:
        try:
            with _quiet_with_hmmscan(hmmscan.parent):
                out.extend(_number_batch(module, [item], scheme, species, hmmscan))
        except Exception as error:
            first = str(error).splitlines()[0] if str(error) else type(error).__name__
            out.append(NumberingFailure(f"ANARCI could not number it: {first}", item[0]))
    return out


# -- labels -----------------------------------------------------------------------------------------------

ANNOTATOR = "numbering"
REGION, FRAMEWORK, SOMATIC_MUTATION = "region", "framework", "somatic_mutation"
#: The labels numbering writes.
NUMBERING_LABELS = (IMGT_POSITION, REGION, FRAMEWORK, SOMATIC_MUTATION)
_CDR_LABELS = {cdr: f"CDR-{cdr[-2:].upper()}" for cdr in CDRS}

register_label(LabelSpec(
    IMGT_POSITION, CATEGORY, "IMGT position and insertion code of each residue of a numbered antibody chain",
    label="IMGT position", categories=tuple(str(i) for i in range(1, 129)), properties=(), counted=False,
))  # fmt: skip
register_label(LabelSpec(
    REGION, CATEGORY, "CDR and framework region of each residue of a numbered antibody chain (numbering= scheme)",
    label="Region", categories=REGIONS, properties=CDRS, property_names={cdr: cdr for cdr in CDRS},
    property_labels=_CDR_LABELS,
    property_descriptions={cdr: f"attention to {name} residues" for cdr, name in _CDR_LABELS.items()},
))  # fmt: skip
register_label(LabelSpec(
    FRAMEWORK, BOOL, "framework residues of a numbered antibody chain (numbering= scheme)", label="Framework",
    property_descriptions={FRAMEWORK: "attention to antibody framework residues"},
))  # fmt: skip
register_label(LabelSpec(
    SOMATIC_MUTATION, BOOL, "residues that differ from the assigned germline V or J gene at their IMGT position",
    label="Somatic mutation",
    property_descriptions={SOMATIC_MUTATION: "attention to somatically mutated residues (vs. the germline)"},
))  # fmt: skip


def _unnumbered(protein: Protein, reason: str) -> None:
    """Every numbering label undefined at every residue, and the reason."""
    nowhere = np.zeros(len(protein), dtype=bool)
    protein.add_label(IMGT_POSITION, np.full(len(protein), "", dtype="<U1"), defined=nowhere)
    protein.add_label(REGION, np.full(len(protein), "", dtype="<U1"), defined=nowhere)
    protein.add_label(FRAMEWORK, nowhere, defined=nowhere)
    protein.add_label(SOMATIC_MUTATION, nowhere, defined=nowhere)
    protein.meta.pop("numbering", None)
    mark_unlabelled(protein, ANNOTATOR, reason)


def label_numbering(proteins: Sequence[Protein], scheme: str) -> None:
    """Number a batch of proteins under `scheme` and add the numbering labels (the ``numbering=`` option).

    A protein that cannot be numbered keeps its record with the labels undefined at every residue and the
    reason in ``meta["unlabelled"]["numbering"]``; one that can gets ``meta["numbering"]`` (see
    `ChainNumbering.meta`).
    """
    results = number_sequences([(protein.id, protein.sequence) for protein in proteins], scheme)
    for protein, result in zip(proteins, results, strict=True):
        if isinstance(result, NumberingFailure):
            _unnumbered(protein, result.reason)
            continue
        protein.add_label(IMGT_POSITION, result.imgt_position)
        protein.add_label(REGION, result.region)
        protein.add_label(FRAMEWORK, result.framework)
        protein.add_label(SOMATIC_MUTATION, result.somatic_mutation)
        protein.meta["numbering"] = result.meta()
        unlabelled = protein.meta.get("unlabelled")
        if isinstance(unlabelled, dict):
            unlabelled.pop(ANNOTATOR, None)


register_annotator(Annotator(
    ANNOTATOR, "antibody numbering with ANARCI: IMGT positions, CDR/framework regions, germline genes, "
    "somatic mutations", option="numbering", choices=SCHEMES, labels=NUMBERING_LABELS, function=label_numbering,
))  # fmt: skip


# -- summary ----------------------------------------------------------------------------------------------


def _agreement(pairs: list[tuple[str, str, str | None]]) -> dict:
    """Agreement of numbering's chain type with another call: (id, numbering, other) per chain."""
    disagree = [{"id": name, "numbering": ours, "other": other} for name, ours, other in pairs if ours != other]
    return {"compared": len(pairs), "agree": len(pairs) - len(disagree), "disagree": disagree}


def numbering_summary(proteins: Sequence[Protein]) -> dict:
    """How numbering went on a set of labelled proteins, and how its chain types agree with the others.

    Parameters
    ----------
    proteins : sequence of Protein
        Proteins after the ``numbering=`` annotator.

    Returns
    -------
    dict
        ``chains`` (all), ``numbered``, ``not_numbered``, ``share_numbered`` (None for no chains),
        ``reasons`` (kind of reason → count, e.g. ``"truncated domain"``), ``failures`` (id, reason) per
        chain not numbered, ``chain_types`` (numbering's heavy / light counts); ``vs_manifest``: numbered
        chains whose ``meta["chain_type"]`` (the antibody benchmark's MANIFEST.tsv) is heavy or light
        compared with it, and ``other_types`` for those it calls something else (``scFv``, ``other``);
        ``vs_sequence_rule``: numbered chains compared with `antibody_chain_type` (``other`` None where
        the rule gives no type). Each comparison has ``compared``, ``agree`` and ``disagree`` (id,
        numbering, other).
    """
    failures, numbered = [], []
    for protein in proteins:
        facts = protein.meta.get("numbering")
        if isinstance(facts, dict) and facts.get("chain_type") in CHAIN_TYPES:
            numbered.append((protein, facts["chain_type"]))
        else:
            reason = (protein.meta.get("unlabelled") or {}).get(ANNOTATOR, "not annotated (no numbering= option)")
            failures.append({"id": protein.id, "reason": reason})
    typed = [(p.id, ours, p.meta.get("chain_type")) for p, ours in numbered if p.meta.get("chain_type")]
    manifest = [entry for entry in typed if entry[2] in CHAIN_TYPES]
    other_types = [{"id": name, "numbering": ours, "other": other} for name, ours, other in typed
                   if other not in CHAIN_TYPES]  # fmt: skip
    rule = [(p.id, ours, antibody_chain_type(p.sequence)) for p, ours in numbered]
    return {
        "chains": len(proteins),
        "numbered": len(numbered),
        "not_numbered": len(failures),
        "share_numbered": len(numbered) / len(proteins) if proteins else None,
        "reasons": dict(Counter(NumberingFailure(f["reason"]).kind for f in failures).most_common()),
        "failures": failures,
        "chain_types": dict(Counter(ours for _, ours in numbered)),
        "vs_manifest": {**_agreement(manifest), "other_types": other_types},
        "vs_sequence_rule": _agreement(rule),
    }
