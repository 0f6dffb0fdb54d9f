"""Annotations of a `Protein`: pure functions, each stating its definition.

Undefined values are *masked*, never filled with 0: a pair involving a residue without coordinates is
not "not a contact", it is unknown, and the analysis leaves it out of numerators, denominators and
backgrounds alike.
"""

from __future__ import annotations

import re

import numpy as np
from scipy.spatial import cKDTree

from plmlens.proteins.record import Protein, ProteinError

#: Sequence-separation ranges of contacts as CASP / ESM report them (inclusive bounds).
CONTACT_RANGES: dict[str, tuple[int, int | None]] = {
    "short": (6, 11),
    "medium": (12, 23),
    "long": (24, None),
}


def virtual_cb(n: np.ndarray, ca: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Ideal CB position from backbone N, CA and C.

    Uses the tetrahedral construction of trRosetta / ESM-IF:
    ``b = CA - N``, ``c = C - CA``, ``a = b × c`` and
    ``CB = -0.58273431 a + 0.56802827 b - 0.54067466 c + CA``, which puts CB 1.52 Å from CA at the
    ideal angles of an L-amino acid.

    Parameters
    ----------
    n, ca, c : ndarray, shape (..., 3)
        Backbone coordinates in Å.

    Returns
    -------
    ndarray, shape (..., 3)
        NaN wherever an input coordinate is not finite or the result would not be (coordinates far beyond
        any structure's, as a damaged file may hold): such a CB is missing, not a number.
    """
    with np.errstate(invalid="ignore", over="ignore"):
        b = ca - n
        cc = c - ca
        a = np.cross(b, cc)
        cb = -0.58273431 * a + 0.56802827 * b - 0.54067466 * cc + ca
    return np.where(np.isfinite(cb).all(axis=-1, keepdims=True), cb, np.nan)


def contact_map(
    protein: Protein,
    threshold: float = 8.0,
    min_separation: int = 6,
    max_separation: int | None = None,
    atom: str = "CA",
) -> np.ma.MaskedArray:
    """Residue contacts: pairs closer than `threshold` and at least `min_separation` apart in sequence.

    ``f(i, j) = 1`` if ``d(i, j) < threshold`` and ``min_separation <= |i - j|`` (and
    ``|i - j| <= max_separation`` when given), else 0 — the definition of TAPE and the paper
    (8 Å between CA atoms, at least 6 apart). Pairs closer in sequence are defined and 0. A pair with a
    residue lacking coordinates is undefined (masked), as is every pair of a sequence-only record.

    Parameters
    ----------
    protein : Protein
    threshold : float
        Distance cut-off in Å.
    min_separation, max_separation : int
        Sequence-separation window, inclusive; see `CONTACT_RANGES` for short/medium/long.
    atom : {"CA", "CB"}
        ``CA`` as TAPE and the paper; ``CB`` (virtual for Gly) as CASP and ESM.

    Returns
    -------
    numpy.ma.MaskedArray of bool, shape (L, L)
        Symmetric; the diagonal is defined and 0.
    """
    coords = {"CA": protein.ca, "CB": protein.cb}.get(atom.upper())
    if coords is None:
        raise ValueError(f"atom must be 'CA' or 'CB', got {atom!r}")
    defined = protein.has_coords & np.isfinite(coords).all(axis=1)
    xyz = np.where(defined[:, None], coords, 0.0).astype(np.float64)
    dist = np.sqrt(((xyz[:, None, :] - xyz[None, :, :]) ** 2).sum(-1))
    sep = np.abs(np.subtract.outer(np.arange(len(protein)), np.arange(len(protein))))
    within = sep >= min_separation
    if max_separation is not None:
        within &= sep <= max_separation
    values = (dist < threshold) & within
    mask = ~(defined[:, None] & defined[None, :])
    return np.ma.MaskedArray(values & ~mask, mask=mask)


#: Candidate pairs whose distances are computed at once when contacts are counted (bounds the memory).
_PAIR_CHUNK = 1 << 22
#: Relative margin around the contact threshold within which the KD-tree's rounding could disagree with
#: `contact_map`'s; pairs there are decided by `contact_map`'s own arithmetic.
_MARGIN = 1e-9


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    # The very arithmetic of `contact_map` (float64, squares summed over x, y, z in order), so that a
    # distance next to the threshold falls on the same side.
    return np.sqrt(((a - b) ** 2).sum(-1))


def _pairs_closer_than(xyz: np.ndarray, threshold: float) -> int:
    """Ordered pairs (i, j) of rows of `xyz`, i = j included, whose `contact_map` distance is < `threshold`."""
    if not threshold > 0:
        return 0
    tree = cKDTree(xyz)
    low, high = threshold * (1 - _MARGIN), threshold * (1 + _MARGIN)
    inside = int(tree.count_neighbors(tree, low))
    if int(tree.count_neighbors(tree, high)) == inside:
        # No pair lies within a hair of the threshold: every pair the tree counts is a contact and every
        # other is not, whatever the rounding. Counting takes no memory, even for a dense cluster.
        return inside
    # Some pair is within the margin: decide every candidate with contact_map's arithmetic, a bounded
    # number of candidate pairs at a time.
    lengths = np.asarray(tree.query_ball_point(xyz, high, return_length=True), dtype=np.int64)
    cumulative = np.cumsum(lengths)
    total = start = 0
    while start < len(xyz):
        before = cumulative[start - 1] if start else 0
        stop = max(start + 1, int(np.searchsorted(cumulative, before + _PAIR_CHUNK, side="right")))
        neighbours = tree.query_ball_point(xyz[start:stop], high)
        rows = np.repeat(np.arange(start, stop), lengths[start:stop])
        columns = np.concatenate([np.asarray(n, dtype=np.intp) for n in neighbours])
        total += int(np.count_nonzero(_distances(xyz[rows], xyz[columns]) < threshold))
        start = stop
    return total


def contact_counts(
    protein: Protein, threshold: float = 8.0, min_separation: int = 6, atom: str = "CA"
) -> tuple[int, int]:
    """Contacts of `contact_map` and its defined entries, counted without building the L × L map.

    Equal to ``(m.filled(False).sum(), m.count())`` for ``m = contact_map(protein, threshold,
    min_separation, atom=atom)``, in memory that grows with the number of residues (and of pairs near one
    another), not with its square: a 200,000-residue chain costs megabytes, not 900 GiB.

    Parameters
    ----------
    protein : Protein
    threshold : float
        Distance cut-off in Å.
    min_separation : int
        Pairs closer in sequence are defined and not contacts.
    atom : {"CA", "CB"}

    Returns
    -------
    (int, int)
        Ordered residue pairs (i, j) in contact, and ordered pairs where both residues have coordinates
        (the diagonal included); ``(0, 0)`` without coordinates, at no cost.
    """
    coords = {"CA": protein.ca, "CB": protein.cb}.get(atom.upper())
    if coords is None:
        raise ValueError(f"atom must be 'CA' or 'CB', got {atom!r}")
    index = np.flatnonzero(protein.has_coords & np.isfinite(coords).all(axis=1))
    n = len(index)
    if n == 0:
        return 0, 0
    xyz = coords[index].astype(np.float64)
    contacts = _pairs_closer_than(xyz, threshold)
    # Take out the pairs closer in sequence than min_separation, decided as contact_map decides them.
    for offset in range(min(max(min_separation, 0), len(protein))):
        if offset == 0:
            contacts -= n * int(threshold > 0.0)
            continue
        partner = np.searchsorted(index, index + offset)
        first = np.flatnonzero(partner < n)
        first = first[index[partner[first]] == index[first] + offset]
        close = _distances(xyz[first], xyz[partner[first]]) < threshold
        contacts -= 2 * int(np.count_nonzero(close))
    return contacts, n * n


def residues_near(
    residue_atoms: np.ndarray,
    atom_residue: np.ndarray,
    n_residues: int,
    partner_atoms: np.ndarray,
    cutoff: float = 4.5,
) -> np.ndarray:
    """Residues with any atom within `cutoff` Å of any partner atom.

    Parameters
    ----------
    residue_atoms : ndarray, shape (N, 3)
        Heavy-atom coordinates of the protein.
    atom_residue : ndarray of int, shape (N,)
        Index of the residue (0..n_residues-1) each atom belongs to.
    n_residues : int
    partner_atoms : ndarray, shape (M, 3)
        Heavy-atom coordinates of the ligand(s), other chain(s) or partner file.
    cutoff : float
        Distance in Å (4.5 by default, the usual heavy-atom contact distance).

    Returns
    -------
    ndarray of bool, shape (n_residues,)
    """
    out = np.zeros(n_residues, dtype=bool)
    # Damaged files can hold NaN or infinite coordinates, which the KD-tree refuses: such atoms touch nothing.
    partner_atoms = partner_atoms[np.isfinite(partner_atoms).all(axis=1)]
    finite = np.isfinite(residue_atoms).all(axis=1)
    residue_atoms, atom_residue = residue_atoms[finite], atom_residue[finite]
    if len(residue_atoms) == 0 or len(partner_atoms) == 0:
        return out
    distances, _ = cKDTree(partner_atoms).query(residue_atoms, k=1, distance_upper_bound=cutoff)
    out[np.unique(atom_residue[np.isfinite(distances)])] = True
    return out


_J_MOTIF = re.compile(r"[WF]G.G")
#: Residues from the start of the J-region motif to the end of the variable domain:
#: heavy WGQGTLVTVSS (11), light FGQGTKLEIK (10).
_J_TAIL = {"W": 11, "F": 10}


def variable_domain_end(sequence: str, start: int = 80, stop: int = 150) -> int:
    """End (exclusive) of an antibody variable domain, found by its J-region motif.

    The variable domain ends with the J region: ``WGxG`` in heavy chains (and nanobodies), ``FGxG`` in
    light chains, followed by about 7 (heavy) or 6 (light) more residues (e.g. WGQG-TLVTVSS,
    FGQG-TKLEIK). The first motif starting between `start` and `stop` is used, so a motif inside a CDR
    near the N-terminus is not mistaken for the J region.

    Parameters
    ----------
    sequence : str
    start, stop : int
        Window (0-based) in which the motif must start.

    Returns
    -------
    int
        Index one past the last residue of the variable domain (capped at the sequence length).

    Raises
    ------
    ValueError
        If no J-region motif is found in the window.
    """
    match = _J_MOTIF.search(sequence, start, stop + 4)
    if match is None or match.start() > stop:
        raise ValueError(f"no J-region motif (WGxG / FGxG) between residues {start + 1} and {stop + 1}")
    return min(len(sequence), match.start() + _J_TAIL[match.group()[0]])


_V_DOMAIN_CORE = re.compile(r"C.{9,16}W[YFVIL][QRKL]Q")


def looks_like_variable_domain(sequence: str) -> bool:
    """Whether a sequence starts with an immunoglobulin variable domain (antibody or T-cell receptor).

    True when the first 60 residues hold the V-domain core, the first conserved Cys followed 10–17
    residues later by the conserved Trp (``C…W[YFVIL][QRKL]Q``, e.g. ``C…WVRQ`` in heavy and ``C…WYQQ`` in
    light chains), and a J-region motif ends the domain (see `variable_domain_end`).
    """
    if _V_DOMAIN_CORE.search(sequence, 0, 60) is None:
        return False
    try:
        variable_domain_end(sequence)
    except ValueError:
        return False
    return True


_HEAVY_CORE = re.compile(r"C.{9,16}W[VIAFY][RK][QLKR]")
_LIGHT_CORE = re.compile(r"C.{9,16}W[YFLVN][QLH][QEKR]")
#: Chain types of antibody variable domains.
CHAIN_TYPES = ("heavy", "light")


def antibody_chain_type(sequence: str) -> str | None:
    """``heavy`` or ``light`` for an antibody variable domain, from its sequence; None otherwise.

    The J-region motif that ends the domain says which (``WGxG`` heavy, ``FGxG`` light; see
    `variable_domain_end`), and the conserved core after the first Cys must agree: ``C…W[VIAFY][RK]x``
    in heavy chains (human ``WVRQ``, mouse ``WVKQ``, camelid ``WFRQ``/``WYRQ``), ``C…W[YFLVN][QLH]x`` in
    light chains (``WYQQ``, ``WLQQ``). The core leaves out T-cell receptor chains (``FGxG`` with cores
    such as ``WYRQ`` or ``WYKQ``).
    """
    try:
        variable_domain_end(sequence)
    except ValueError:
        return None
    j_letter = _J_MOTIF.search(sequence, 80, 154).group()[0]  # the motif variable_domain_end found
    if j_letter == "W" and _HEAVY_CORE.search(sequence, 0, 60):
        return "heavy"
    if j_letter == "F" and _LIGHT_CORE.search(sequence, 0, 60):
        return "light"
    return None


def cut_variable_domain(protein: Protein) -> Protein:
    """The protein cut to its antibody variable domain (see `variable_domain_end`), annotations aligned.

    Raises
    ------
    ProteinError
        Naming the protein, when no J-region motif is found.
    """
    try:
        end = variable_domain_end(protein.sequence)
    except ValueError as error:
        raise ProteinError(f"{protein.source}: {protein.id}: {error}") from None
    cut = protein.subset(slice(0, end))
    cut.meta["variable_domain"] = (1, end)
    return cut
