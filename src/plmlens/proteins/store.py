"""Protein sets: a source read and annotated once, saved to one file that every command reads back fast.

Reading structures runs DSSP on every file and finds binding sites against partners or ligands; for the
antibody benchmark that takes minutes, and `describe`, `analyze` and `probe` would each do it again. A
protein set (``NAME.proteins.npz``) holds the records of a source exactly as read, in order (skipped
records too, so proteins keep their positions and the skips are still reported), and is itself a source::

    plmlens proteins save 'antibodies::variable_domain' --out runs/antibodies.proteins.npz
    plmlens analyze --model antiberty --data 'runs/antibodies.proteins.npz::chain_type=heavy' ...

The file is a NumPy ``.npz`` read with ``allow_pickle=False``: concatenated per-residue arrays and a JSON
index, nothing executable.
"""

from __future__ import annotations

import io
import json
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from plmlens.ioutils import write_bytes_atomic
from plmlens.proteins.record import Protein, ProteinError
from plmlens.proteins.skips import Skipped

#: File name ending that marks a protein set.
SUFFIX = ".proteins.npz"
FORMAT = "plmlens-proteins/1"
_ARRAYS = {  # per-residue arrays and their dtypes
    "residue_numbers": np.int64, "insertion_codes": "<U1", "ca": np.float32, "cb": np.float32,
    "has_coords": bool, "binding_site": bool, "ptm": bool,
}  # fmt: skip


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
    for record in records:
        if isinstance(record, Skipped):
            index.append({"skipped": record.to_dict()})
            continue
        index.append({
            "id": record.id, "sequence": record.sequence, "source": record.source, "chain": record.chain,
            "dssp": record.dssp, "binding_site": record.binding_site is not None, "ptm": record.ptm is not None,
            "meta": record.meta,
        })  # fmt: skip
        n = len(record)
        for name, dtype in _ARRAYS.items():
            value = getattr(record, name)
            columns[name].append(np.zeros(n, dtype=dtype) if value is None else np.asarray(value, dtype=dtype))
    arrays = {
        name: np.concatenate(parts) if parts else np.zeros((0, 3) if name in ("ca", "cb") else 0, dtype=_ARRAYS[name])
        for name, parts in columns.items()
    }
    header = {"format": FORMAT, "source": source, "records": index}
    buffer = io.BytesIO()
    # Meta values that JSON cannot hold (tuples become lists) are written as text.
    np.savez_compressed(buffer, __index__=np.array(json.dumps(header, default=str)), **arrays)
    return write_bytes_atomic(path, buffer.getvalue())


def read_protein_set(path: str | Path) -> Iterator[Protein | Skipped]:
    """The records of a protein set, in the order they were saved.

    Raises
    ------
    ProteinError
        Naming the file, when it is not a readable protein set (the whole file fails: its arrays are
        shared by all of its records).
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            header = json.loads(str(data["__index__"]))
            arrays = {name: data[name] for name in _ARRAYS}
    # A damaged zip fails on opening (BadZipFile) or only when a member is read (bad CRC, zlib.error);
    # damaged version or flag fields make zipfile raise NotImplementedError ("zip file version 19.9").
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError) as error:
        detail = " ".join(str(error).split()) or type(error).__name__
        raise ProteinError(f"{path}: not a readable protein set ({detail[:200]})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        found = header.get("format") if isinstance(header, dict) else header
        raise ProteinError(f"{path}: protein set format {found!r:.80}, expected {FORMAT!r}")
    try:
        records = header["records"]
        total = sum(len(item["sequence"]) for item in records if "skipped" not in item)
        bad_arrays = any(
            not isinstance(array, np.ndarray) or array.ndim == 0 or len(array) != total for array in arrays.values()
        )  # a member that is not .npy comes back as bytes
    except (KeyError, TypeError) as error:  # an index that is not a list of record dicts
        raise ProteinError(f"{path}: damaged protein set index ({type(error).__name__}: {error})") from None
    if bad_arrays:
        raise ProteinError(f"{path}: per-residue arrays do not match the {total:,} residues of its index")
    offset = 0
    for position, item in enumerate(header["records"]):
        if "skipped" in item:
            skipped = item["skipped"]
            try:
                yield Skipped(str(skipped["file"]), skipped["chain"], str(skipped["reason"]))
            except (KeyError, TypeError):
                yield Skipped(str(path), str(position), "damaged skipped record in the index")
            continue
        n = len(item["sequence"])
        window = {name: array[offset : offset + n] for name, array in arrays.items()}
        offset += n
        try:
            yield Protein(
                id=item["id"], sequence=item["sequence"], source=item["source"], chain=item["chain"],
                residue_numbers=window["residue_numbers"], insertion_codes=window["insertion_codes"],
                ca=window["ca"], cb=window["cb"], has_coords=window["has_coords"], dssp=item["dssp"],
                binding_site=window["binding_site"] if item["binding_site"] else None,
                ptm=window["ptm"] if item["ptm"] else None, meta=dict(item["meta"]),
            )  # fmt: skip
        # ValueError: an array of the wrong dtype (text where coordinates belong).
        except (ValueError, KeyError, TypeError) as error:
            yield Skipped(str(path), str(item.get("id", position)), str(error).split(": ")[-1])


def protein_set_source(path: str | Path) -> str | None:
    """The SOURCE string a protein set was saved from (None if not recorded)."""
    with np.load(path, allow_pickle=False) as data:
        return json.loads(str(data["__index__"])).get("source")
