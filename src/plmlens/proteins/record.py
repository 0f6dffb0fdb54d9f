"""The `Protein` record: one chain, its sequence, coordinates and annotations.

Every loader in :mod:`plmlens.proteins` yields `Protein` and everything downstream (models, analysis,
probing, report) consumes it. Arrays are numpy and always aligned with `sequence`: position ``i`` of
every per-residue array describes residue ``sequence[i]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

STANDARD_AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"

#: The paper's secondary-structure classes (appendix B.4 / C.1) and the DSSP 8-state letters in each.
SS_CLASSES: dict[str, str] = {"helix": "HGI", "strand": "EB", "turn_bend": "TS"}

#: DSSP letter used for a residue whose secondary structure is unknown (no coordinates, no label).
SS_UNKNOWN = "?"
#: DSSP letter used for coil / loop (DSSP writes a blank; mkdssp 4 may also write ``P``, polyproline).
SS_COIL = "-"


class ProteinError(ValueError):
    """A protein record that cannot be built or used; the message names the file and chain."""


def residue_number_array(values: object, where: str = "<memory>") -> np.ndarray:
    """Author residue numbers as int64, ``-1`` where a number is missing.

    A missing number is ``None`` or NaN (what a reader gives for a blank or unreadable field, or a
    dataset for a residue without one): it becomes ``-1``, explicitly, never a cast of NaN to int.

    Parameters
    ----------
    values : array-like
        Integers, or floats with integral values or NaN, or ``None`` entries.
    where : str
        Names the record in the error message.

    Raises
    ------
    ProteinError
        For a number that is not an integer (``1.5``, infinite, beyond int64, text).
    """
    try:
        array = np.asarray(values)
        if array.dtype.kind == "O":  # a list with None entries
            items = array.reshape(-1).tolist()
            numbers = (int, float, np.integer, np.floating)
            if any(isinstance(item, bool) or not (item is None or isinstance(item, numbers)) for item in items):
                raise ValueError("not a number")
            array = np.array([np.nan if item is None else float(item) for item in items]).reshape(array.shape)
    except (ValueError, OverflowError):  # ragged lists, text, ints beyond a float
        raise ProteinError(f"{where}: residue numbers must be integers") from None
    if array.dtype.kind in "iu":
        if array.dtype.kind == "u" and array.size and array.max() > np.iinfo(np.int64).max:
            raise ProteinError(f"{where}: residue numbers beyond the int64 range")
        return array.astype(np.int64)
    if array.dtype.kind != "f":
        raise ProteinError(f"{where}: residue numbers must be integers, not {array.dtype}")
    array = array.astype(np.float64)  # float16 or float32 cannot hold the limit below
    missing = np.isnan(array)
    known = array[~missing]
    limit = float(2**62)  # well inside int64, and exact in float64
    if not (np.isfinite(known).all() and (known == np.round(known)).all() and (np.abs(known) < limit).all()):
        raise ProteinError(f"{where}: residue numbers must be integers (or NaN where unknown)")
    return np.where(missing, -1.0, array).astype(np.int64)


@dataclass(eq=False)
class Protein:
    """One protein chain with per-residue coordinates and annotations.

    Parameters
    ----------
    id : str
        Identifier, ``PDBID.CHAIN`` for structures (e.g. ``7HVP.A``), the record id for datasets.
    sequence : str
        One-letter sequence over the 20 standard residues; anything else is ``X`` (modified residues
        are first mapped to their parent, e.g. MSE → M, TPO → T).
    source : str
        Where the record came from (file path or dataset path), for error messages and provenance.
    chain : str or None
        Author chain id in `source`, where there is one.
    residue_numbers : ndarray of int, shape (L,)
        Author residue numbers (PDB numbering); ``-1`` where unknown. Given as floats, NaN means unknown
        and becomes ``-1`` (see `residue_number_array`); a non-integral number is an error.
    insertion_codes : ndarray of str, shape (L,)
        Author insertion codes, ``""`` where there is none.
    ca, cb : ndarray of float32, shape (L, 3)
        Coordinates (Å) of CA and of CB; CB is virtual (built from N, CA, C) for Gly and wherever CB is
        missing. ``NaN`` where the residue has no coordinates.
    has_coords : ndarray of bool, shape (L,)
        Which residues have coordinates (CA, and N and C for a virtual CB).
    dssp : str or None
        DSSP 8-state string (``H G I E B T S`` and ``-`` for coil, ``?`` where unknown), or None.
    binding_site : ndarray of bool, shape (L,), or None
        Binding-site labels; None where the source has no such labels (never silently all-False).
    ptm : ndarray of bool, shape (L,), or None
        Post-translational-modification labels; None where unknown.
    meta : dict
        Free-form provenance (e.g. antibody chain type, variable-domain cut, truncation).
    """

    id: str
    sequence: str
    source: str = ""
    chain: str | None = None
    residue_numbers: np.ndarray = field(default=None)  # type: ignore[assignment]
    insertion_codes: np.ndarray = field(default=None)  # type: ignore[assignment]
    ca: np.ndarray = field(default=None)  # type: ignore[assignment]
    cb: np.ndarray = field(default=None)  # type: ignore[assignment]
    has_coords: np.ndarray = field(default=None)  # type: ignore[assignment]
    dssp: str | None = None
    binding_site: np.ndarray | None = None
    ptm: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._check_types()
        n = len(self.sequence)
        where = f"{self.source or '<memory>'}: {self.id}"
        if n == 0:
            raise ProteinError(f"{where}: empty sequence")
        bad = sorted(set(self.sequence) - set(STANDARD_AMINO_ACIDS) - {"X"})
        if bad:
            raise ProteinError(f"{where}: sequence has characters outside the 20 amino acids and X: {bad}")
        if self.residue_numbers is None:
            self.residue_numbers = np.arange(1, n + 1, dtype=np.int64)
        if self.insertion_codes is None:
            self.insertion_codes = np.full(n, "", dtype="<U1")
        if self.ca is None:
            self.ca = np.full((n, 3), np.nan, dtype=np.float32)
        if self.cb is None:
            self.cb = np.full((n, 3), np.nan, dtype=np.float32)
        self.residue_numbers = residue_number_array(self.residue_numbers, where)
        self.insertion_codes = np.asarray(self.insertion_codes, dtype="<U1")
        # A coordinate beyond float32 (only a damaged file holds one) becomes infinite: no coordinate.
        with np.errstate(over="ignore"):
            self.ca = np.asarray(self.ca, dtype=np.float32)
            self.cb = np.asarray(self.cb, dtype=np.float32)
        if self.has_coords is None:
            self.has_coords = np.isfinite(self.ca).all(axis=1)
        self.has_coords = np.asarray(self.has_coords, dtype=bool)
        for name in ("binding_site", "ptm"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, np.asarray(value, dtype=bool))
        shapes = {
            "residue_numbers": (self.residue_numbers.shape, (n,)),
            "insertion_codes": (self.insertion_codes.shape, (n,)),
            "ca": (self.ca.shape, (n, 3)),
            "cb": (self.cb.shape, (n, 3)),
            "has_coords": (self.has_coords.shape, (n,)),
        }
        if self.binding_site is not None:
            shapes["binding_site"] = (self.binding_site.shape, (n,))
        if self.ptm is not None:
            shapes["ptm"] = (self.ptm.shape, (n,))
        for name, (got, want) in shapes.items():
            if got != want:
                raise ProteinError(f"{where}: {name} has shape {got}, expected {want}")
        if self.dssp is not None and len(self.dssp) != n:
            raise ProteinError(f"{where}: DSSP string has {len(self.dssp)} states for {n} residues")

    def _check_types(self) -> None:
        # Records come from damaged files too: a list where the id belongs must fail here, with the
        # record named, not later in a set, a dict key or a JSON file.
        expected = {"id": (str,), "sequence": (str,), "source": (str,), "chain": (str, type(None)),
                    "dssp": (str, type(None)), "meta": (dict,)}  # fmt: skip
        for name, types in expected.items():
            value = getattr(self, name)
            if not isinstance(value, types):
                where = f"{self.source if isinstance(self.source, str) and self.source else '<memory>'}"
                record = self.id if isinstance(self.id, str) else f"{self.id!r:.60}"
                wanted = " or ".join("None" if t is type(None) else t.__name__ for t in types)
                raise ProteinError(f"{where}: {record}: {name} is a {type(value).__name__}, not {wanted}")

    def __len__(self) -> int:
        return len(self.sequence)

    def __repr__(self) -> str:
        labels = [
            name
            for name, value in (("dssp", self.dssp), ("binding_site", self.binding_site), ("ptm", self.ptm))
            if value is not None
        ]
        return f"Protein(id={self.id!r}, length={len(self)}, with_coords={int(self.has_coords.sum())}, labels={labels})"

    @property
    def residue_ids(self) -> list[str]:
        """Author residue ids as PDB writes them, number plus insertion code (e.g. ``"52A"``)."""
        pairs = zip(self.residue_numbers.tolist(), self.insertion_codes.tolist(), strict=True)
        return [f"{number}{code}" for number, code in pairs]

    def ss_mask(self, ss_class: str) -> np.ma.MaskedArray:
        """Per-residue membership of a secondary-structure class, masked where DSSP is unknown.

        Parameters
        ----------
        ss_class : {"helix", "strand", "turn_bend"}
            Helix = DSSP H/G/I, Strand = E/B, Turn/Bend = T/S (the paper's taxonomy).

        Returns
        -------
        numpy.ma.MaskedArray of bool, shape (L,)
            Fully masked when the protein has no DSSP.
        """
        letters = SS_CLASSES[ss_class]
        if self.dssp is None:
            return np.ma.masked_all(len(self), dtype=bool)
        states = np.frombuffer(self.dssp.encode("ascii"), dtype="S1")
        values = np.isin(states, [c.encode() for c in letters])
        return np.ma.MaskedArray(values, mask=states == SS_UNKNOWN.encode())

    @property
    def ss_classes(self) -> np.ndarray:
        """Per-residue class name: ``helix``, ``strand``, ``turn_bend``, ``other``, or ``unknown``."""
        out = np.full(len(self), "unknown" if self.dssp is None else "other", dtype="<U9")
        if self.dssp is None:
            return out
        for name, letters in SS_CLASSES.items():
            out[[c in letters for c in self.dssp]] = name
        out[[c == SS_UNKNOWN for c in self.dssp]] = "unknown"
        return out

    def first(self, n: int) -> Protein:
        """The protein cut to its first `n` residues (the residues a model with that limit sees); the
        protein itself when it has no more than `n`."""
        return self if len(self) <= n else self.subset(slice(0, n))

    def subset(self, index: slice | np.ndarray) -> Protein:
        """The same protein restricted to some residues, with every annotation kept aligned.

        Parameters
        ----------
        index : slice or ndarray of int or bool
            Residues to keep, in order.
        """
        positions = np.arange(len(self))[index]
        dssp = None if self.dssp is None else "".join(self.dssp[i] for i in positions)
        return replace(
            self,
            sequence="".join(self.sequence[i] for i in positions),
            residue_numbers=self.residue_numbers[positions],
            insertion_codes=self.insertion_codes[positions],
            ca=self.ca[positions],
            cb=self.cb[positions],
            has_coords=self.has_coords[positions],
            dssp=dssp,
            binding_site=None if self.binding_site is None else self.binding_site[positions],
            ptm=None if self.ptm is None else self.ptm[positions],
            meta=dict(self.meta),
        )
