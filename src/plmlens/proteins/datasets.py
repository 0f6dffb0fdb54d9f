"""Benchmark datasets → `Protein`: TAPE's LMDB/JSON files, the paper's label files, FASTA.

TAPE's formats (Rao et al. 2019): an LMDB whose key ``num_examples`` holds the record count and keys
``0``, ``1``, … hold pickled dicts; or a JSON list of the same dicts. Pickles are untrusted and are
read with `safe_loads`.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from plmlens.proteins.record import SS_COIL, STANDARD_AMINO_ACIDS, Protein, ProteinError, residue_number_array
from plmlens.proteins.safe_pickle import safe_loads
from plmlens.proteins.skips import Skipped

#: TAPE's ``ss8`` label order (NetSurfP): index 7 is DSSP's blank, i.e. coil.
TAPE_SS8 = "GHIBESTC"


def _normalise_sequence(sequence: str) -> str:
    # U (selenocysteine), O (pyrrolysine) and the ambiguity codes B/Z/J have no place among the 20;
    # anything that is not a letter is left for `Protein` to reject with a clear error.
    return "".join(c if c in STANDARD_AMINO_ACIDS or not c.isalpha() else "X" for c in sequence.upper())


# LMDB's on-disk layout (mdb.c, LMDB 0.9): 16-byte page headers, meta pages 0 and 1, B-tree pages of
# 8-byte nodes (size or child page, flags, key size), values over a page long in overflow pages.
_PAGE_HEADER = 16
_P_BRANCH, _P_LEAF, _P_OVERFLOW = 0x01, 0x02, 0x04
_F_BIGDATA, _F_SUBDATA, _F_DUPDATA = 0x01, 0x02, 0x04
_LMDB_MAGIC = 0xBEEFC0DE
_MAX_DEPTH = 64


def _lmdb_meta(data: mmap.mmap) -> tuple[int, int, int]:
    """Page size, last page and main-database root of the newer of the two meta pages, as LMDB picks it."""
    metas = []
    offset = 0  # meta page 0, then meta page 1 one page further, at the page size meta 0 gives
    for _ in range(2):
        magic, _version, _, _, psize = struct.unpack_from("<IIQQI", data, offset + _PAGE_HEADER)
        (root,) = struct.unpack_from("<Q", data, offset + _PAGE_HEADER + 112)
        last, txnid = struct.unpack_from("<QQ", data, offset + _PAGE_HEADER + 120)
        if magic != _LMDB_MAGIC or psize < 512 or psize & (psize - 1) or (metas and psize != metas[0][1]):
            raise ValueError("damaged meta page")
        metas.append((txnid, psize, last, root))
        offset = psize
    _, psize, last, root = max(metas)
    return psize, last, root


def _lmdb_page_nodes(data: mmap.mmap, page: int, psize: int) -> tuple[int, list[tuple[int, int, int, int]]]:
    """A B-tree page's flags and nodes ``(offset, low 32 bits, flags, key size)``, bounds checked."""
    base = page * psize
    _, _, flags, lower, upper = struct.unpack_from("<QHHHH", data, base)
    if not flags & (_P_BRANCH | _P_LEAF) or not _PAGE_HEADER <= lower <= upper <= psize or lower % 2:
        raise ValueError(f"page {page} is not a B-tree page")
    nodes = []
    for k in range((lower - _PAGE_HEADER) // 2):
        (offset,) = struct.unpack_from("<H", data, base + _PAGE_HEADER + 2 * k)
        if not upper <= offset <= psize - 8:
            raise ValueError(f"page {page}: node {k} lies outside its page")
        low, high, node_flags, key_size = struct.unpack_from("<HHHH", data, base + offset)
        if offset + 8 + key_size > psize:
            raise ValueError(f"page {page}: node {k}'s key runs past its page")
        nodes.append((offset, low | high << 16, node_flags, key_size))
    return flags, nodes


def lmdb_tree_problem(data_file: Path) -> str | None:
    """What is wrong with an LMDB file's B-tree, or None when every page a read can reach is sound.

    LMDB trusts its file: a damaged node offset, value size or page number makes a read touch memory past
    the end of the file, which kills the process (SIGBUS). This walks the main database's tree from the
    root the newer meta page names and checks every page, node and overflow run against the page and the
    file before LMDB reads them. Named databases and duplicate keys (never in TAPE's files) are refused.
    """
    try:
        with open(data_file, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            psize, last, root = _lmdb_meta(data)
            pages = len(data) // psize
            if root == 2**64 - 1:
                return None  # an empty database
            stack, seen = [(root, 1)], set()
            while stack:
                page, depth = stack.pop()
                if not 2 <= page <= last or page >= pages or page in seen or depth > _MAX_DEPTH:
                    raise ValueError(f"page {page} cannot be in the tree")
                seen.add(page)
                flags, nodes = _lmdb_page_nodes(data, page, psize)
                for offset, low, node_flags, key_size in nodes:
                    value = page * psize + offset + 8 + key_size
                    if flags & _P_BRANCH:
                        stack.append((low | node_flags << 32, depth + 1))  # the flags are the page's top bits
                    elif node_flags & (_F_SUBDATA | _F_DUPDATA):
                        raise ValueError(f"page {page}: a named database or duplicate keys")
                    elif node_flags & _F_BIGDATA:
                        if offset + 8 + key_size + 8 > psize:
                            raise ValueError(f"page {page}: an overflow reference runs past its page")
                        (first,) = struct.unpack_from("<Q", data, value)
                        if not 2 <= first <= last or first >= pages:
                            raise ValueError(f"page {page}: overflow page {first} is not in the file")
                        _, _, over_flags, count = struct.unpack_from("<QHHI", data, first * psize)
                        if not over_flags & _P_OVERFLOW or first + count - 1 > min(last, pages - 1):
                            raise ValueError(f"overflow page {first} is damaged")
                        if low > count * psize - _PAGE_HEADER:
                            raise ValueError(f"page {page}: a value longer than its overflow pages")
                    elif offset + 8 + key_size + low > psize:
                        raise ValueError(f"page {page}: a value runs past its page")
    except (OSError, ValueError, struct.error) as error:
        return " ".join(str(error).split()) or type(error).__name__
    return None


def iter_lmdb(path: str | Path) -> Iterator[tuple[str, Any | Exception]]:
    """Records of a TAPE-style LMDB as ``(key, dict)``; a record that cannot be read comes as
    ``(key, exception)`` so the caller can skip it and go on.

    Raises
    ------
    ProteinError
        When the LMDB itself cannot be opened or has no ``num_examples``.
    """
    import lmdb

    path = Path(path)
    try:
        env = lmdb.open(str(path), readonly=True, lock=False, readahead=False, subdir=path.is_dir())
    except lmdb.Error as error:
        raise ProteinError(f"{path}: cannot open LMDB: {error}") from None
    try:
        # LMDB memory-maps its file and trusts it: reading a page past the end of a truncated file kills
        # the process with SIGBUS, so check the size against the last page the header says is in use.
        data_file = path / "data.mdb" if path.is_dir() else path
        needed = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
        if os.path.getsize(data_file) < needed:
            raise ProteinError(f"{path}: truncated LMDB ({os.path.getsize(data_file):,} of {needed:,} bytes)")
        # Nor does it check its pages: a damaged node offset or value size reads past the file (SIGBUS).
        problem = lmdb_tree_problem(data_file)
        if problem is not None:
            raise ProteinError(f"{path}: corrupt LMDB ({problem})")
        with env.begin() as txn:
            raw = txn.get(b"num_examples")
            if raw is None:
                raise ProteinError(f"{path}: not a TAPE-style LMDB (no 'num_examples' key)")
            try:
                count = safe_loads(raw)
                count = int(count) if not isinstance(count, float) or count.is_integer() else None
            except Exception as error:  # any corrupt pickle (bad opcode, refused global, inf, a list ...)
                raise ProteinError(f"{path}: corrupt num_examples: {' '.join(str(error).split())}") from None
            if count is None or count < 0:
                raise ProteinError(f"{path}: corrupt num_examples: not a count")
            # A corrupt count must not turn into billions of "missing" records: there are at most as many
            # records as keys besides num_examples.
            stored = env.stat()["entries"] - 1
            for index in range(min(count, stored)):
                key = str(index)
                try:
                    raw = txn.get(key.encode())
                    if raw is None:
                        raise KeyError("missing")
                    record = safe_loads(raw)
                    if not isinstance(record, dict):
                        raise TypeError(f"record is a {type(record).__name__}, not a dict")
                except Exception as error:  # any corruption of one record skips that record only
                    yield key, error
                    continue
                yield key, record
            if count > stored:
                yield "num_examples", ValueError(f"num_examples is {count:,} but only {stored:,} other keys are stored")
    except lmdb.Error as error:
        raise ProteinError(f"{path}: corrupt LMDB: {error}") from None
    finally:
        env.close()


def iter_json(path: str | Path) -> Iterator[tuple[str, Any | Exception]]:
    """Records of a TAPE JSON dataset (a list of dicts) as ``(index, dict)``."""
    path = Path(path)
    try:
        records = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError) as error:  # RecursionError: nesting too deep
        raise ProteinError(f"{path}: cannot read JSON dataset: {' '.join(str(error).split())}") from None
    if not isinstance(records, list):
        raise ProteinError(f"{path}: a TAPE JSON dataset is a list of records")
    for index, record in enumerate(records):
        if isinstance(record, dict):
            yield str(index), record
        else:
            yield str(index), TypeError(f"record is a {type(record).__name__}, not a dict")


def iter_dataset_records(path: str | Path) -> Iterator[tuple[str, Any | Exception]]:
    """Records of a TAPE dataset file, LMDB (a ``.lmdb`` directory or file) or JSON."""
    path = Path(path)
    if path.suffix == ".json":
        return iter_json(path)
    return iter_lmdb(path)


def dataset_kind(record: dict) -> str | None:
    """Which dataset a record belongs to, from its keys."""
    if "tertiary" in record and "valid_mask" in record:
        return "proteinnet"
    if "ss8" in record or "ss3" in record:
        return "secondary_structure"
    if "sites" in record and "positions" in record:
        return "binding_sites"
    if "modifications" in record and "positions" in record:
        return "ptm"
    if "primary" in record:
        return "sequence"
    return None


def record_to_protein(record: dict, source: str, key: str) -> Protein:
    """Turn one dataset record into a `Protein` (dataset recognised from its keys, see `dataset_kind`).

    * ``proteinnet``: ``tertiary`` (L, 3) CA coordinates in Å, ``valid_mask`` (L,) → `has_coords`.
    * ``secondary_structure``: ``ss8`` in TAPE's order `TAPE_SS8` → `Protein.dssp`.
    * ``binding_sites`` / ``ptm`` (the paper's files): ``positions`` are PDB author residue numbers, one
      per residue; ``sites`` / ``modifications`` list the labelled residue numbers.

    Raises
    ------
    ProteinError
        Naming the source and record when a field is missing or has the wrong length.
    """
    record_id = str(record.get("id", key))
    where = f"{source}: {record_id} (record {key})"
    try:
        return _record_to_protein(record, source, record_id, where)
    except ProteinError:
        raise
    except (ValueError, TypeError, IndexError, KeyError, OverflowError) as error:
        # Fields of the wrong type or content (ragged lists, text where numbers belong, bad UTF-8 ...).
        detail = " ".join(f"{type(error).__name__}: {error}".split())
        raise ProteinError(f"{where}: malformed record: {detail[:200]}") from None


def _record_to_protein(record: dict, source: str, record_id: str, where: str) -> Protein:
    kind = dataset_kind(record)
    if kind is None or "primary" not in record:
        raise ProteinError(f"{where}: no 'primary' sequence")
    sequence = record["primary"]
    if isinstance(sequence, bytes):
        sequence = sequence.decode()
    if not isinstance(sequence, str):
        raise ProteinError(f"{where}: 'primary' is a {type(sequence).__name__}, not a string")
    sequence = _normalise_sequence(sequence)
    n = len(sequence)
    if n == 0:
        raise ProteinError(f"{where}: empty sequence")
    fields: dict[str, Any] = {}

    def per_residue(name: str, shape: tuple[int, ...]) -> np.ndarray:
        value = np.asarray(record[name])
        if value.shape != shape:
            raise ProteinError(f"{where}: '{name}' has shape {value.shape}, expected {shape}")
        return value

    def class_labels(name: str, count: int) -> np.ndarray:
        value = per_residue(name, (n,))
        integral = value.dtype.kind in "iub" or (
            value.dtype.kind == "f" and bool(np.isfinite(value).all() and (value == np.round(value)).all())
        )  # a NaN or 1.5 label is no class: refuse it rather than cast it to some integer
        if not integral or value.min(initial=0) < 0 or value.max(initial=0) >= count:
            raise ProteinError(f"{where}: '{name}' labels outside 0..{count - 1}")
        return value.astype(np.int64)

    if kind == "proteinnet":
        with np.errstate(over="ignore"):  # beyond float32: infinite, and not valid below
            tertiary = per_residue("tertiary", (n, 3)).astype(np.float32)
        valid = per_residue("valid_mask", (n,)).astype(bool) & np.isfinite(tertiary).all(axis=1)
        fields["ca"] = np.where(valid[:, None], tertiary, np.nan)
        fields["has_coords"] = valid
    elif kind == "secondary_structure":
        if "ss8" in record:
            labels = class_labels("ss8", len(TAPE_SS8))
            fields["dssp"] = "".join(TAPE_SS8[i] for i in labels).replace("C", SS_COIL)
        else:
            # ss3 alone (H, E, C) cannot tell Turn/Bend from coil: keep helix and strand only.
            labels = class_labels("ss3", 3)  # a negative index would pass silently
            fields["dssp"] = "".join("HE-"[i] for i in labels)
    elif kind in ("binding_sites", "ptm"):
        # A position may be NaN: a residue without an author number. It becomes -1 (unknown) and is
        # labelled by nothing, not even by a label of -1.
        raw = np.asarray(record["positions"])
        unknown = np.isnan(raw) if raw.dtype.kind == "f" else np.zeros(raw.shape, dtype=bool)
        positions = residue_number_array(raw, where)
        if positions.shape != (n,):
            raise ProteinError(f"{where}: positions of shape {positions.shape} for {n} residues")
        labelled = np.asarray(list(record["sites" if kind == "binding_sites" else "modifications"]))
        if labelled.dtype.kind == "f":
            labelled = labelled[~np.isnan(labelled)]  # a label without a number labels no residue
        mask = np.isin(positions, residue_number_array(labelled, where)) & ~unknown
        fields["residue_numbers"] = positions
        fields["binding_site" if kind == "binding_sites" else "ptm"] = mask
    return Protein(id=record_id, sequence=sequence, source=source, **fields)


def read_dataset(path: str | Path) -> Iterator[Protein | Skipped]:
    """Yield the `Protein` records of a TAPE / provis dataset file (LMDB or JSON)."""
    path = Path(path)
    empty = True
    try:
        for key, record in iter_dataset_records(path):
            empty = False
            if isinstance(record, Exception):
                yield Skipped(str(path), key, f"unreadable record: {record}")
                continue
            try:
                yield record_to_protein(record, str(path), key)
            except ProteinError as error:
                yield Skipped(str(path), str(record.get("id", key)), str(error).split(": ", 2)[-1])
    except ProteinError as error:
        yield Skipped(str(path), None, str(error).removeprefix(f"{path}: "))
        return
    if empty:
        # Silence would look like a dataset that was read: say that there was nothing to read.
        yield Skipped(str(path), None, "no records")


def read_fasta(path: str | Path) -> Iterator[Protein | Skipped]:
    """Yield sequence-only `Protein` records from a FASTA file (id = first word of the header)."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        yield Skipped(str(path), None, f"cannot read FASTA: {error}")
        return
    header: str | None = None
    chunks: list[str] = []
    entries: list[tuple[str, str]] = []
    for line in text.splitlines():
        if line.startswith(">"):
            if header is not None:
                entries.append((header, "".join(chunks)))
            header, chunks = line[1:].strip(), []
        elif line.strip() and header is not None:
            chunks.append(line.strip().rstrip("*"))
    if header is not None:
        entries.append((header, "".join(chunks)))
    if not entries:
        yield Skipped(str(path), None, "no FASTA records")
    for number, (title, sequence) in enumerate(entries, 1):
        record_id = title.split()[0] if title.split() else f"record{number}"
        try:
            yield Protein(id=record_id, sequence=_normalise_sequence(sequence), source=str(path))
        except ProteinError as error:
            yield Skipped(str(path), record_id, str(error).split(": ", 2)[-1])
