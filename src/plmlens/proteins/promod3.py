"""The ProMod3 structure database (Debian ``promod3-data``): 21,119 PDB chains with backbone and DSSP.

The file is memory-mapped, so opening it reads only the chain table (about 1 MB) and records are built
on demand by index or PDB id. Its little-endian layout (documented in ``shared/data/README.md``):

* header up to ``0x4C``; ``u64`` number of chains at ``0x4D``; the chain table from ``0x55``;
* per chain: ``u32`` n + n bytes PDB id, ``u32`` n + n bytes chain id, ``u32`` first residue index,
  ``u16`` number of residues, ``i16`` start residue number, ``3 × f32`` shift;
* eight arrays, each a ``u64`` count followed by one item per residue: sequence (1 byte), backbone
  N/CA/C/O (12 × ``i16``, Å = value × 0.01 − shift), dihedrals (4 bytes), solvent accessibility
  (``u16``), depth (``u16``), DSSP letter (1 byte), two profiles (40 bytes each).

Chains are gap-free stretches of the 20 standard residues; CB is always virtual.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from plmlens.proteins.annotations import virtual_cb
from plmlens.proteins.record import SS_COIL, Protein, ProteinError
from plmlens.proteins.skips import Skipped

DEFAULT_PATH = Path("/usr/share/promod3/loop_data/structure_db.dat")

_COUNT_OFFSET = 0x4D
_TABLE_OFFSET = 0x55
# Bytes per residue of the eight arrays, in file order.
_ITEM_SIZES = {
    "sequence": 1, "backbone": 24, "dihedrals": 4, "accessibility": 2, "depth": 2, "dssp": 1,
    "profile1": 40, "profile2": 40,
}  # fmt: skip


@dataclass(frozen=True)
class ChainEntry:
    """One chain of the table: PDB id, chain id, first residue index, length, shift."""

    pdb_id: str
    chain: str
    offset: int
    size: int
    start_number: int
    shift: tuple[float, float, float]

    @property
    def id(self) -> str:
        return f"{self.pdb_id.upper()}.{self.chain}"


class StructureDB:
    """Random access to the ProMod3 structure database.

    Parameters
    ----------
    path : str or Path
        ``structure_db.dat``; by default where Debian's ``promod3-data`` installs it.

    Examples
    --------
    >>> db = StructureDB()                      # doctest: +SKIP
    >>> len(db), db[0].id, db.get("1A0C.D")     # doctest: +SKIP
    """

    def __init__(self, path: str | Path = DEFAULT_PATH) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise ProteinError(f"{self.path}: ProMod3 structure database not found (apt-get install promod3-data)")
        self._data = np.memmap(self.path, dtype=np.uint8, mode="r")
        try:
            self.entries, arrays_offset = self._read_table()
            self._arrays = self._locate_arrays(arrays_offset)
        except (struct.error, ValueError, IndexError) as error:
            raise ProteinError(f"{self.path}: not a ProMod3 structure database: {error}") from None
        self._by_id = {entry.id: i for i, entry in enumerate(self.entries)}

    def _unpack(self, fmt: str, offset: int) -> tuple:
        size = struct.calcsize(fmt)
        return struct.unpack(fmt, self._data[offset : offset + size].tobytes())

    def _read_table(self) -> tuple[list[ChainEntry], int]:
        (count,) = self._unpack("<Q", _COUNT_OFFSET)
        if not 0 < count < 10_000_000:
            raise ValueError(f"implausible chain count {count}")
        raw = self._data[_TABLE_OFFSET : _TABLE_OFFSET + count * 64].tobytes()
        entries = []
        pos = 0
        for _ in range(count):
            (n,) = struct.unpack_from("<I", raw, pos)
            pdb_id = raw[pos + 4 : pos + 4 + n].decode("ascii")
            pos += 4 + n
            (n,) = struct.unpack_from("<I", raw, pos)
            chain = raw[pos + 4 : pos + 4 + n].decode("ascii")
            pos += 4 + n
            offset, size, start, *shift = struct.unpack_from("<IHh3f", raw, pos)
            pos += 20
            entries.append(ChainEntry(pdb_id, chain, offset, size, start, tuple(shift)))
        return entries, _TABLE_OFFSET + pos

    def _locate_arrays(self, offset: int) -> dict[str, np.ndarray]:
        arrays = {}
        for name, item in _ITEM_SIZES.items():
            (n,) = self._unpack("<Q", offset)
            offset += 8
            arrays[name] = self._data[offset : offset + n * item].reshape(n, item)
            if arrays[name].shape[0] != n:
                raise ValueError(f"array {name!r} is truncated")
            offset += n * item
        return arrays

    def __len__(self) -> int:
        return len(self.entries)

    def index_of(self, record_id: str) -> int:
        """Index of a chain by id, ``PDBID.CHAIN`` (case-insensitive PDB id)."""
        pdb_id, _, chain = record_id.partition(".")
        try:
            return self._by_id[f"{pdb_id.upper()}.{chain}"]
        except KeyError:
            raise KeyError(f"{self.path}: no chain {record_id!r}") from None

    def get(self, record_id: str) -> Protein:
        """The chain with this id, ``PDBID.CHAIN``."""
        return self[self.index_of(record_id)]

    def __getitem__(self, index: int) -> Protein:
        entry = self.entries[index]
        rows = slice(entry.offset, entry.offset + entry.size)
        sequence = self._arrays["sequence"][rows, 0].tobytes().decode("ascii")
        backbone = self._arrays["backbone"][rows].view("<i2").reshape(-1, 4, 3).astype(np.float32)
        backbone = backbone * 0.01 - np.asarray(entry.shift, dtype=np.float32)
        dssp = self._arrays["dssp"][rows, 0].tobytes().decode("ascii")
        dssp = "".join(c if c in "HGIEBTS" else SS_COIL for c in dssp)
        return Protein(
            id=entry.id,
            sequence=sequence,
            source=str(self.path),
            chain=entry.chain,
            residue_numbers=np.arange(entry.start_number, entry.start_number + entry.size),
            ca=backbone[:, 1],
            cb=virtual_cb(backbone[:, 0], backbone[:, 1], backbone[:, 2]),
            dssp=dssp,
            meta={"numbering": "database (not author) numbering"},
        )

    def iter_records(
        self,
        min_length: int = 0,
        max_length: int | None = None,
        ids: Iterable[str] | None = None,
    ) -> Iterator[Protein | Skipped]:
        """Records in database order, filtered by length and an id list.

        Parameters
        ----------
        min_length, max_length : int
            Keep chains with ``min_length <= length <= max_length``.
        ids : iterable of str, optional
            Keep only these ``PDBID.CHAIN`` ids (in this order); an unknown id yields a `Skipped`.
        """
        if ids is not None:
            indices: list[int] = []
            for record_id in ids:
                try:
                    indices.append(self.index_of(record_id))
                except KeyError:
                    yield Skipped(str(self.path), record_id, "not in the database")
        else:
            indices = list(range(len(self)))
        for index in indices:
            size = self.entries[index].size
            if size < min_length or (max_length is not None and size > max_length):
                continue
            try:
                yield self[index]
            except (ProteinError, UnicodeDecodeError) as error:
                yield Skipped(str(self.path), self.entries[index].id, str(error).split(": ", 2)[-1])


def is_structure_db(path: Path) -> bool:
    """Whether a file looks like a ProMod3 structure database (by name and chain-table header)."""
    if not path.is_file() or path.suffix != ".dat":
        return False
    with open(path, "rb") as handle:
        head = handle.read(_TABLE_OFFSET + 8)
    if len(head) < _TABLE_OFFSET + 8:
        return False
    (count,) = struct.unpack_from("<Q", head, _COUNT_OFFSET)
    (id_length,) = struct.unpack_from("<I", head, _TABLE_OFFSET)
    return 0 < count < 10_000_000 and 0 < id_length <= 8
