"""Protein sets: a source read and annotated once, saved to one file that every command reads back fast.

Reading structures runs DSSP on every file and finds binding sites against partners or ligands; for the
antibody benchmark that takes minutes, and `describe`, `analyze` and `probe` would each do it again. A
protein set (``NAME.proteins.npz``) holds the records of a source exactly as read, in order (skipped
records too, so proteins keep their positions and the skips are still reported), and is itself a source::

    plmlens proteins save 'antibodies::variable_domain' --out runs/antibodies.proteins.npz
    plmlens analyze --model antiberty --data 'runs/antibodies.proteins.npz::chain_type=heavy' ...

The file is a NumPy ``.npz`` read with ``allow_pickle=False``: concatenated per-residue arrays and a JSON
index, nothing executable. The index holds a SHA-256 checksum of the arrays (sets saved before it was
added have none and are read all the same); reading checks the checksum, every field's type, every array's
dtype and shape, and that the arrays hold exactly the residues the index lists, before the first record
comes out: a damaged set is one error naming the file, never a traceback nor a wrong record.

Format ``plmlens-proteins/2`` keeps every per-residue label (`Protein.labels`): for each label name, the
values of the records that have it, concatenated (``label.NAME.values``: bool, or fixed-width unicode for
a categorical label) and which of them are defined (``label.NAME.defined``); each record's index entry
lists its labels. Sets of format ``/1`` (``binding_site`` and ``ptm`` arrays) are still read, their two
arrays becoming those labels.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from plmlens.ioutils import write_bytes_atomic
from plmlens.proteins.archive import ArchiveError, array_checksum, parse_json, read_npz, text_member, verify_checksum
from plmlens.proteins.record import LABEL_NAME, LEGACY_LABELS, STANDARD_AMINO_ACIDS, Protein, ProteinError
from plmlens.proteins.skips import Skipped

#: File name ending that marks a protein set.
SUFFIX = ".proteins.npz"
FORMAT = "plmlens-proteins/2"
#: The format before open labels; still read.
FORMAT_1 = "plmlens-proteins/1"
_ARRAYS = {  # per-residue arrays and their dtypes
    "residue_numbers": np.int64, "insertion_codes": "<U1", "ca": np.float32, "cb": np.float32, "has_coords": bool,
}  # fmt: skip
_ARRAYS_1 = {**_ARRAYS, "binding_site": bool, "ptm": bool}
_LABEL_PREFIX = "label."
_LABEL_PARTS = ("values", "defined")


def _label_member(name: str, part: str) -> str:
    """The array name of one part (values or defined) of a label."""
    return f"{_LABEL_PREFIX}{name}.{part}"


def is_protein_set(path: Path) -> bool:
    """Whether `path` names a protein set file (by its ``.proteins.npz`` ending)."""
    return path.name.endswith(SUFFIX) and path.is_file()


def save_protein_set(
    records: Iterable[Protein | Skipped],
    path: str | Path,
    source: str | None = None,
) -> Path:
    """Write records to a protein set, atomically.

    Parameters
    ----------
    records : iterable of Protein or Skipped
        What a source yielded (e.g. `plmlens.proteins.iter_records`), in order.
    path : str or Path
        Destination; must end with ``.proteins.npz``.
    source : str, optional
        The SOURCE string the records came from, kept as provenance.

    Returns
    -------
    Path
    """
    path = Path(path)
    if not path.name.endswith(SUFFIX):
        raise ValueError(f"{path}: a protein set's name ends with {SUFFIX}")
    index: list[dict] = []
    columns: dict[str, list[np.ndarray]] = {name: [] for name in _ARRAYS}
    kinds: dict[str, str] = {}
    for record in records:
        if isinstance(record, Skipped):
            index.append({"skipped": record.to_dict()})
            continue
        index.append({
            "id": record.id, "sequence": record.sequence, "source": record.source, "chain": record.chain,
            "dssp": record.dssp, "labels": list(record.labels), "meta": record.meta,
        })  # fmt: skip
        for name, dtype in _ARRAYS.items():
            columns[name].append(np.asarray(getattr(record, name), dtype=dtype))
        for name, label in record.labels.items():
            kind = kinds.setdefault(name, label.dtype.kind)
            if kind != label.dtype.kind:  # concatenating would turn the flags into text
                what = {"b": "bool", "U": "categorical"}
                raise ProteinError(f"{path}: {record.id}: label {name} is {what[label.dtype.kind]} here and "
                                   f"{what[kind]} in an earlier record")  # fmt: skip
            columns.setdefault(_label_member(name, "values"), []).append(np.ma.getdata(label))
            columns.setdefault(_label_member(name, "defined"), []).append(~np.ma.getmaskarray(label))
    arrays = {
        name: np.concatenate(parts) if parts else np.zeros((0, 3) if name in ("ca", "cb") else 0, dtype=_ARRAYS[name])
        for name, parts in columns.items()
    }
    # The checksum lets a reader tell arrays damaged (or replaced) after saving from the ones written.
    header = {"format": FORMAT, "source": source, "records": index, "checksum": array_checksum(arrays)}
    buffer = io.BytesIO()
    # Meta values that JSON cannot hold (tuples become lists) are written as text.
    np.savez_compressed(buffer, __index__=np.array(json.dumps(header, default=str)), **arrays)
    return write_bytes_atomic(path, buffer.getvalue())


def _load(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """The index and arrays of a protein set, checked (see `read_protein_set`); a ``/1`` set's
    ``binding_site`` and ``ptm`` arrays come back as the arrays of those labels."""
    try:
        members = read_npz(path, "protein set")
        # A protein's free-form meta may hold a NaN (json writes it): the index is read as it was written.
        text = text_member(path, members, "__index__", "protein set")
        header = parse_json(path, text, "protein set index", allow_nan=True)
    except ArchiveError as error:
        raise ProteinError(str(error)) from None
    if not isinstance(header, dict) or header.get("format") not in (FORMAT, FORMAT_1):
        found = header.get("format") if isinstance(header, dict) else header
        raise ProteinError(f"{path}: protein set format {found!r:.80}, expected {FORMAT!r}")
    version_1 = header["format"] == FORMAT_1
    arrays = {name: value for name, value in members.items() if name != "__index__"}
    expected = set(_ARRAYS_1) if version_1 else set(_ARRAYS) | _label_members(arrays)
    if set(arrays) != expected:
        missing, extra = sorted(expected - set(arrays)), sorted(set(arrays) - expected)
        raise ProteinError(f"{path}: damaged protein set (arrays missing: {missing}, unexpected: {extra})")
    try:
        verify_checksum(path, header.get("checksum"), arrays)
    except ArchiveError as error:
        raise ProteinError(str(error)) from None
    if not isinstance(header.get("source"), (str, type(None))):
        raise ProteinError(f"{path}: damaged protein set index (source is a {type(header['source']).__name__})")
    records = header.get("records")
    if not isinstance(records, list):
        raise ProteinError(f"{path}: damaged protein set index (records is a {type(records).__name__}, not a list)")
    total, label_totals = 0, dict.fromkeys(_label_names(arrays), 0)
    for position, item in enumerate(records):
        n = _check_item(path, position, item, version_1)
        total += n
        for name in item.get("labels", ()) if n else ():
            if name not in label_totals:
                raise ProteinError(
                    f"{path}: damaged protein set index (record {position}: no arrays for label {name!r:.80})"
                )
            label_totals[name] += n
    _check_arrays(path, arrays, _ARRAYS_1 if version_1 else _ARRAYS, total)
    for name, count in label_totals.items():
        _check_label_arrays(path, arrays, name, count)
    if version_1:
        arrays = _upgrade(header, arrays)
    return header, arrays


def _label_names(arrays: dict[str, np.ndarray]) -> list[str]:
    """The labels whose arrays a set holds (names of well-formed ``label.NAME.PART`` members)."""
    names = []
    for member in arrays:
        name, _, part = member.removeprefix(_LABEL_PREFIX).rpartition(".")
        if member.startswith(_LABEL_PREFIX) and part in _LABEL_PARTS and LABEL_NAME.fullmatch(name):
            names.append(name)
    return list(dict.fromkeys(names))


def _label_members(arrays: dict[str, np.ndarray]) -> set[str]:
    """Both arrays of every label a set holds arrays for (a missing one then shows as missing)."""
    return {_label_member(name, part) for name in _label_names(arrays) for part in _LABEL_PARTS}


def _check_arrays(path: Path, arrays: dict[str, np.ndarray], dtypes: dict, total: int) -> None:
    """Every per-residue array has its dtype and the shape of the index's residues."""
    for name, dtype in dtypes.items():
        array, shape = arrays[name], (total, 3) if name in ("ca", "cb") else (total,)
        if array.dtype != np.dtype(dtype) or array.shape != shape:
            raise ProteinError(
                f"{path}: damaged protein set (array {name} is {array.dtype}{list(array.shape)}, "
                f"expected {np.dtype(dtype)}{list(shape)} for the {total:,} residues of its index)"
            )


def _check_label_arrays(path: Path, arrays: dict[str, np.ndarray], name: str, total: int) -> None:
    """A label's values are bool or unicode and its defined flags bool, both as long as the residues of
    the records that list the label."""
    for part in _LABEL_PARTS:
        member = _label_member(name, part)
        array = arrays[member]
        kinds = "bU" if part == "values" else "b"
        if array.dtype.kind not in kinds or array.shape != (total,):
            wanted = "bool or unicode" if part == "values" else "bool"
            raise ProteinError(
                f"{path}: damaged protein set (array {member} is {array.dtype}{list(array.shape)}, "
                f"expected {wanted}[{total}] for the residues of the records with label {name})"
            )


def _upgrade(header: dict, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A checked ``/1`` set as ``/2``: each record lists its labels, and the ``binding_site`` / ``ptm``
    arrays keep only the residues of the records that have them (all defined)."""
    arrays = dict(arrays)
    offset, keep = 0, {name: [] for name in LEGACY_LABELS}
    for item in header["records"]:
        if "skipped" in item:
            continue
        n = len(item["sequence"])
        item["labels"] = [name for name in LEGACY_LABELS if item.pop(name)]
        for name in item["labels"]:
            keep[name].append(np.arange(offset, offset + n))
        offset += n
    for name, parts in keep.items():
        chosen = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        arrays[_label_member(name, "values")] = arrays.pop(name)[chosen]
        arrays[_label_member(name, "defined")] = np.ones(len(chosen), dtype=bool)
    return arrays


#: Fields of a protein's index entry and the JSON types they must have.
_FIELDS = {"id": (str,), "sequence": (str,), "source": (str,), "chain": (str, type(None)), "dssp": (str, type(None)),
           "labels": (list,), "meta": (dict,)}  # fmt: skip
_FIELDS_1 = {**{k: v for k, v in _FIELDS.items() if k != "labels"}, "binding_site": (bool,), "ptm": (bool,)}
_SKIP_FIELDS = {"file": (str,), "chain": (str, type(None)), "reason": (str,)}
_LETTERS = frozenset(STANDARD_AMINO_ACIDS + "X")


def _check_item(path: Path, position: int, item: object, version_1: bool = False) -> int:
    """Check one entry of the index; returns its residue count (0 for a skipped record)."""
    where = f"{path}: damaged protein set index (record {position}"
    if isinstance(item, dict) and "skipped" in item:
        item, fields = item["skipped"], _SKIP_FIELDS
    elif isinstance(item, dict):
        fields = _FIELDS_1 if version_1 else _FIELDS
    else:
        raise ProteinError(f"{where} is a {type(item).__name__}, not a dict)")
    if not isinstance(item, dict):
        raise ProteinError(f"{where}: skipped is a {type(item).__name__}, not a dict)")
    for name, types in fields.items():
        if name not in item:
            raise ProteinError(f"{where} has no {name})")
        if not isinstance(item[name], types):
            raise ProteinError(f"{where}: {name} is a {type(item[name]).__name__})")
    if fields is _SKIP_FIELDS:
        return 0
    sequence = item["sequence"]
    if not sequence or not _LETTERS.issuperset(sequence):
        raise ProteinError(f"{where}: sequence is not one of the 20 amino acids and X)")
    if item["dssp"] is not None and len(item["dssp"]) != len(sequence):
        raise ProteinError(f"{where}: {len(item['dssp'])} DSSP states for {len(sequence)} residues)")
    labels = item.get("labels", [])
    if not all(isinstance(name, str) for name in labels) or len(set(labels)) != len(labels):
        raise ProteinError(f"{where}: labels is not a list of distinct names)")
    return len(sequence)


def read_protein_set(path: str | Path) -> Iterator[Protein | Skipped]:
    """The records of a protein set, in the order they were saved.

    Raises
    ------
    ProteinError
        Naming the file, when it is not a readable, undamaged protein set: the whole file fails, before
        any record comes out (its arrays are shared by all of its records).
    """
    path = Path(path)
    header, arrays = _load(path)
    records: list[Protein | Skipped] = []
    offset = 0
    label_offsets = dict.fromkeys(_label_names(arrays), 0)
    for position, item in enumerate(header["records"]):
        if "skipped" in item:
            skipped = item["skipped"]
            records.append(Skipped(skipped["file"], skipped["chain"], skipped["reason"]))
            continue
        n = len(item["sequence"])
        window = {name: arrays[name][offset : offset + n] for name in _ARRAYS}
        offset += n
        labels = {}
        for name in item["labels"]:
            start = label_offsets[name]
            label_offsets[name] += n
            values = arrays[_label_member(name, "values")][start : start + n]
            labels[name] = np.ma.MaskedArray(values, mask=~arrays[_label_member(name, "defined")][start : start + n])
        try:
            records.append(Protein(
                id=item["id"], sequence=item["sequence"], source=item["source"], chain=item["chain"],
                residue_numbers=window["residue_numbers"], insertion_codes=window["insertion_codes"],
                ca=window["ca"], cb=window["cb"], has_coords=window["has_coords"], dssp=item["dssp"],
                meta=dict(item["meta"]), labels=labels,
            ))  # fmt: skip
        except ProteinError as error:
            detail = str(error).split(": ", 2)[-1]
            raise ProteinError(f"{path}: damaged protein set (record {position}: {detail})") from None
    # Records are views of the arrays: building them all first costs little and means a damaged set
    # fails before any of its records is used.
    yield from records


def protein_set_source(path: str | Path) -> str | None:
    """The SOURCE string a protein set was saved from (None if not recorded).

    Raises
    ------
    ProteinError
        Naming the file, when it is not a readable, undamaged protein set.
    """
    return _load(Path(path))[0].get("source")
