"""Benchmark datasets → `Protein`: TAPE's LMDB/JSON files, the paper's label files, FASTA.

TAPE's formats (Rao et al. 2019): an LMDB whose key ``num_examples`` holds the record count and keys
``0``, ``1``, … hold pickled dicts; or a JSON list of the same dicts. Pickles are untrusted and are
read with `safe_loads`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from plmlens.proteins.record import SS_COIL, STANDARD_AMINO_ACIDS, Protein, ProteinError
from plmlens.proteins.safe_pickle import safe_loads
from plmlens.proteins.skips import Skipped

#: TAPE's ``ss8`` label order (NetSurfP): index 7 is DSSP's blank, i.e. coil.
TAPE_SS8 = "GHIBESTC"


def _normalise_sequence(sequence: str) -> str:
    # U (selenocysteine), O (pyrrolysine) and the ambiguity codes B/Z/J have no place among the 20;
    # anything that is not a letter is left for `Protein` to reject with a clear error.
    return "".join(c if c in STANDARD_AMINO_ACIDS or not c.isalpha() else "X" for c in sequence.upper())


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

    if kind == "proteinnet":
        tertiary = per_residue("tertiary", (n, 3)).astype(np.float32)
        valid = per_residue("valid_mask", (n,)).astype(bool) & np.isfinite(tertiary).all(axis=1)
        fields["ca"] = np.where(valid[:, None], tertiary, np.nan)
        fields["has_coords"] = valid
    elif kind == "secondary_structure":
        if "ss8" in record:
            labels = per_residue("ss8", (n,)).astype(int)
            if labels.min(initial=0) < 0 or labels.max(initial=0) >= len(TAPE_SS8):
                raise ProteinError(f"{where}: 'ss8' labels outside 0..{len(TAPE_SS8) - 1}")
            fields["dssp"] = "".join(TAPE_SS8[i] for i in labels).replace("C", SS_COIL)
        else:
            # ss3 alone (H, E, C) cannot tell Turn/Bend from coil: keep helix and strand only.
            labels = per_residue("ss3", (n,)).astype(int)
            if labels.min(initial=0) < 0 or labels.max(initial=0) > 2:
                raise ProteinError(f"{where}: 'ss3' labels outside 0..2")  # a negative index would pass silently
            fields["dssp"] = "".join("HE-"[i] for i in labels)
    elif kind in ("binding_sites", "ptm"):
        positions = np.asarray(record["positions"]).astype(np.int64)
        if positions.shape != (n,):
            raise ProteinError(f"{where}: positions of shape {positions.shape} for {n} residues")
        labelled = record["sites" if kind == "binding_sites" else "modifications"]
        mask = np.isin(positions, np.asarray(list(labelled), dtype=np.int64))
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
