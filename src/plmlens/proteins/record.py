"""The `Protein` record: one chain, its sequence, coordinates and annotations.

Every loader in :mod:`plmlens.proteins` yields `Protein` and everything downstream (models, analysis,
probing, report) consumes it. Arrays are numpy and always aligned with `sequence`: position ``i`` of
every per-residue array describes residue ``sequence[i]``.
"""

from __future__ import annotations

import re
from dataclasses import InitVar, dataclass, field, replace

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


#: What a label's name may be: an identifier (it becomes part of array and property names).
LABEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
LABEL_NAME_MAX = 64
#: Labels that used to be fields of their own and keep their constructor keyword and attribute.
LEGACY_LABELS = ("binding_site", "ptm")


class _Unset:
    """Default of the ``binding_site`` / ``ptm`` keywords: "not given" (keep what `labels` holds), which
    ``None`` cannot mean since ``None`` removes the label."""

    def __repr__(self) -> str:
        return "<unset>"


_UNSET = _Unset()


def _label_array(values: object, defined: object, n: int, where: str) -> np.ma.MaskedArray:
    """`values` and `defined` as one checked masked array of shape (n,): bool or str, masked = undefined.

    Masked entries hold ``False`` / ``""`` so that two equal labels have equal arrays.
    """
    mask = None
    if isinstance(values, np.ma.MaskedArray):
        mask = np.ma.getmaskarray(values)
        values = np.ma.getdata(values)
    try:
        array = np.asarray(values)
    except (ValueError, TypeError):  # ragged input
        raise ProteinError(f"{where}: values are not a flat array") from None
    if array.shape != (n,):
        raise ProteinError(f"{where}: has shape {array.shape}, expected {(n,)}")
    if array.dtype.kind not in "bU":
        # Integers would be ambiguous (a class code or a flag?): say which, as bool or str.
        raise ProteinError(f"{where}: values must be bool or str, not {array.dtype} (convert them first)")
    if defined is None:
        known = np.ones(n, dtype=bool)
    else:
        known = np.asarray(defined)
        if known.dtype.kind != "b" or known.shape != (n,):
            raise ProteinError(f"{where}: defined must be bool of shape {(n,)}, not {known.dtype}{list(known.shape)}")
    if mask is not None:
        known = known & ~mask
    array = array.copy()
    array[~known] = False if array.dtype.kind == "b" else ""
    return np.ma.MaskedArray(array, mask=~known)


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
        Binding-site labels; None where the source has no such labels (never silently all-False). Kept
        as ``labels["binding_site"]``; the keyword and the attribute are shorthands for it (the attribute
        reads undefined residues as False; `label` gives the mask).
    ptm : ndarray of bool, shape (L,), or None
        Post-translational-modification labels; None where unknown. Kept as ``labels["ptm"]``.
    meta : dict
        Free-form provenance (e.g. antibody chain type, variable-domain cut, truncation). An annotator
        that could not label the protein writes why in ``meta["unlabelled"][ANNOTATOR]``.
    labels : dict of str to numpy.ma.MaskedArray
        Open per-residue labels by name (`add_label`): shape (L,), bool (a residue has it or not) or str
        (a category), masked where undefined — never read as "false". A label the protein does not have
        is undefined at every residue. Labels computed from the record itself (secondary structure from
        `dssp`, the amino acid) are not stored: `label` derives them (`plmlens.proteins.labels`).
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
    binding_site: InitVar[np.ndarray | None] = _UNSET  # type: ignore[assignment]
    ptm: InitVar[np.ndarray | None] = _UNSET  # type: ignore[assignment]
    meta: dict = field(default_factory=dict)
    labels: dict[str, np.ma.MaskedArray] = field(default_factory=dict)

    def __post_init__(self, binding_site: object, ptm: object) -> None:
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
        shapes = {
            "residue_numbers": (self.residue_numbers.shape, (n,)),
            "insertion_codes": (self.insertion_codes.shape, (n,)),
            "ca": (self.ca.shape, (n, 3)),
            "cb": (self.cb.shape, (n, 3)),
            "has_coords": (self.has_coords.shape, (n,)),
        }
        for name, (got, want) in shapes.items():
            if got != want:
                raise ProteinError(f"{where}: {name} has shape {got}, expected {want}")
        if self.dssp is not None and len(self.dssp) != n:
            raise ProteinError(f"{where}: DSSP string has {len(self.dssp)} states for {n} residues")
        self._init_labels({"binding_site": binding_site, "ptm": ptm})

    def _init_labels(self, legacy: dict[str, object]) -> None:
        """Check `labels` (a copy: `dataclasses.replace` passes the original's dict) and apply the
        ``binding_site`` / ``ptm`` keywords."""
        given = self.labels
        where = f"{self.source or '<memory>'}: {self.id}"
        if not isinstance(given, dict):
            raise ProteinError(f"{where}: labels is a {type(given).__name__}, not a dict")
        self.labels = {}
        for name, values in given.items():
            self.add_label(name, values)
        for name, value in legacy.items():
            if value is _UNSET:
                continue
            if value is None:
                self.labels.pop(name, None)
                continue
            try:
                array = np.asarray(value, dtype=bool)
            except (ValueError, TypeError):
                raise ProteinError(f"{where}: {name} is not a flat array of flags") from None
            if array.shape != (len(self),):
                raise ProteinError(f"{where}: {name} has shape {array.shape}, expected {(len(self),)}")
            stored = self.labels.get(name)
            # `dataclasses.replace` passes the attribute back (undefined read as False): keep the stored
            # label, mask included, when that is all the keyword says.
            if stored is not None and np.array_equal(np.asarray(stored.filled(False)), array):
                continue
            self.labels[name] = np.ma.MaskedArray(array, mask=np.zeros(len(self), dtype=bool))

    def add_label(self, name: str, values: object, defined: object = None) -> None:
        """Add (or replace) a per-residue label.

        Parameters
        ----------
        name : str
            An identifier (``[A-Za-z_][A-Za-z0-9_]*``, at most 64 characters): it names arrays in protein
            sets and, through `plmlens.proteins.labels.LabelSpec`, properties.
        values : array-like of bool or str, shape (L,)
            Bool: the residue has the label or not. Str: its category. A masked array's mask marks
            undefined residues too. Integers are refused (class codes or flags? convert them first).
        defined : array-like of bool, shape (L,), optional
            Which residues the label is defined for; default all. Undefined residues are masked.

        Raises
        ------
        ProteinError
            One line naming the record and the label, for a bad name, shape or dtype, or values of
            another kind (bool or category) than the label's registered `LabelSpec`.
        """
        where = f"{self.source or '<memory>'}: {self.id}"
        if not isinstance(name, str) or len(name) > LABEL_NAME_MAX or not LABEL_NAME.fullmatch(name):
            raise ProteinError(
                f"{where}: label name {name!r:.80} is not an identifier of at most {LABEL_NAME_MAX} characters"
            )
        array = _label_array(values, defined, len(self), f"{where}: label {name}")
        from plmlens.proteins.labels import LABELS  # the registry imports this module

        spec = LABELS.get(name)
        kind = "bool" if array.dtype.kind == "b" else "category"
        if spec is not None and spec.kind != kind:
            raise ProteinError(f"{where}: label {name}: values are {kind}, but the label is registered as {spec.kind}")
        self.labels[name] = array

    def label(self, name: str) -> np.ma.MaskedArray | None:
        """A per-residue label: the stored one, else one derived from the record by its registered
        `plmlens.proteins.labels.LabelSpec` (e.g. ``secondary_structure`` from `dssp`), else None (the
        protein has no such label: undefined at every residue)."""
        stored = self.labels.get(name)
        if stored is not None:
            return stored
        from plmlens.proteins.labels import LABELS  # the registry imports this module

        spec = LABELS.get(name)
        if spec is None or spec.derive is None:
            return None
        derived = spec.derive(self)
        return None if derived is None else _label_array(derived, None, len(self), f"{self.id}: label {name}")

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
        labels = ["dssp"] * (self.dssp is not None) + list(self.labels)
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
            binding_site=_UNSET,
            ptm=_UNSET,
            meta=dict(self.meta),
            labels={name: values[positions] for name, values in self.labels.items()},
        )


def _legacy_label(name: str) -> property:
    """The attribute of a label that used to be a field: a bool array (undefined read as False) or None."""

    def get(self: Protein) -> np.ndarray | None:
        stored = self.labels.get(name)
        return None if stored is None else np.asarray(stored.filled(False), dtype=bool)

    def put(self: Protein, value: object) -> None:
        self._init_labels({name: value})

    return property(get, put, doc=f"``labels[{name!r}]`` as a bool array (undefined read as False), or None.")


# After the dataclass is made: its __init__ keeps the keywords (InitVar), the attributes read `labels`.
Protein.binding_site = _legacy_label("binding_site")  # type: ignore[assignment,method-assign]
Protein.ptm = _legacy_label("ptm")  # type: ignore[assignment,method-assign]
