"""Where each residue sits, as a key that matches the same place in other proteins.

Positional baselines and nulls ask "how often does a property hold at this place?" across proteins. For
numbered antibody chains the place is the chain type and the IMGT position with its insertion code
(``"H111A"``, ``"L111A"``), which aligns every variable domain of a chain type; for any other chain it is the
residue index (``"#12"``, 1-based), which aligns nothing but the sequence start. The chain type is part of the
key because the same IMGT position is CDR-H3 in a heavy chain and CDR-L3 in a light one: pooled, a set of
both would make a head that attends to heavy CDR3s look more specific than its position. The kinds of key
never collide, so a set that mixes numbered and unnumbered chains does not pool IMGT position 12 with
residue 12.
"""

from __future__ import annotations

import numpy as np

from plmlens.proteins.record import Protein

#: The label holding the IMGT position and insertion code of each residue (written by antibody numbering).
IMGT_POSITION = "imgt_position"
#: A residue without a position key (outside the numbered domain of a numbered chain).
NO_POSITION = ""


def index_keys(length: int) -> np.ndarray:
    """Residue-index keys ``#1 .. #length``."""
    return np.array([f"#{i}" for i in range(1, length + 1)], dtype=object).astype(str)


def position_keys(protein: Protein, numbered: bool = True) -> np.ndarray:
    """The position key of every residue of `protein`.

    Parameters
    ----------
    protein : Protein
    numbered : bool
        Use IMGT positions where the chain is numbered (it has an `IMGT_POSITION` label with at least one
        defined residue); False: residue indices always (for sets of unrelated proteins or to compare).

    Returns
    -------
    ndarray of str, shape (L,)
        IMGT keys with the chain type (``"H111A"``; without it, ``"111A"``, when numbering gave no heavy or
        light type) for a numbered chain, `NO_POSITION` for its residues outside the numbered domain;
        residue-index keys (``"#1"``, ...) for any other chain.
    """
    labels = getattr(protein, "labels", None) or {}
    imgt = labels.get(IMGT_POSITION) if numbered else None
    if imgt is not None:
        defined = ~np.ma.getmaskarray(imgt)
        if defined.any():
            keys = np.char.add(_chain_letter(protein), np.asarray(np.ma.getdata(imgt)).astype(str))
            return np.where(defined, keys, NO_POSITION)
    return index_keys(len(protein))


def _chain_letter(protein: Protein) -> str:
    """``H`` or ``L`` for a chain numbering typed heavy or light (``meta["numbering"]["chain_type"]``), else
    ``""``."""
    facts = protein.meta.get("numbering")
    chain_type = facts.get("chain_type") if isinstance(facts, dict) else None
    return {"heavy": "H", "light": "L"}.get(chain_type, "") if isinstance(chain_type, str) else ""
