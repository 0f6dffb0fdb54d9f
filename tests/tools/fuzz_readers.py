"""Fuzz every protein reader of `plmlens.proteins` with mutated real and synthetic inputs.

Each input is a file (or a directory) built from a small real seed — PDB/mmCIF entries of
``shared/data/structures`` and ``shared/data/antibodies``, records of the paper's label LMDBs, a few
chains sliced out of the ProMod3 database — or from a synthetic structure, then mutated: truncated,
bytes flipped, columns dropped, numbering broken, models duplicated or interleaved, altlocs, insertion
codes, HETATM-only and empty chains, 100,000-residue chains, binary data named ``.pdb``, a ``.gz`` that
is not gzip, corrupt pickles, LMDB pages and zip members.

The contract every reader must keep (`check_case`): the SOURCE yields `Protein` records or one-line
`Skipped` records naming the file, or raises a one-line `SourceError` naming it — no other exception,
no hang, no crash, and a directory with bad files among good ones still yields the good ones' records.

Usage::

    python tests/tools/fuzz_readers.py --n 10000 --seed 0 --timeout 30 --out runs/fuzz
    python tests/tools/fuzz_readers.py --seed 1234 --readers mmcif --case 17     # replay one input

prints the count of inputs per reader and outcome, and every failure; each failing input is saved under
``OUT/failures/<reader>-<case>/`` with ``case.json`` (SOURCE, mutations, error). Input number ``i`` of a
run is drawn from ``case_rng(seed, i)`` for reader ``readers[i % len(readers)]``. The test suite
(``tests/test_fuzz_readers.py``) imports this module and runs the same generators with a seed that
changes from commit to commit, and prints the command that replays any input that fails.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import io
import json
import multiprocessing
import os
import pickle
import random
import shutil
import signal
import struct
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = Path(os.environ.get("PLMLENS_SHARED_DATA", REPO.parent / "shared" / "data"))
PROMOD3_DB = Path("/usr/share/promod3/loop_data/structure_db.dat")

READERS = (
    "pdb", "mmcif", "gzip", "fasta", "tape_lmdb", "tape_json", "label_lmdb", "promod3", "proteinset", "directory",
)  # fmt: skip

# Small real seeds: few hundred residues each, with ligands, SITE records, NMR models (1gya), modified
# residues (1xdn MSE), altlocs and insertion codes (antibodies), junk in columns 73-80 (1MLC).
PDB_SEEDS = (
    "structures/1vfy.pdb", "structures/1rmd.pdb", "structures/3ems.pdb", "structures/1aku.pdb",
    "structures/7hvp.pdb", "structures/1gya.pdb", "structures/1xdn.pdb",
    "antibodies/piercelab_bm5.5/1MLC_l_b.pdb", "antibodies/piercelab_bm5.5/5WK3_l_b.pdb",
)  # fmt: skip
CIF_SEEDS = ("structures/4i39.cif", "structures/7gsa.cif")
LABEL_SEEDS = ("provis/binding_site_valid.lmdb", "provis/protein_modification_valid.lmdb")
#: Coordinate lines kept per seed structure, so that one input reads in milliseconds.
MAX_COORD_LINES = 1200


class ContractError(AssertionError):
    """A reader broke the contract (wrong exception, multi-line message, lost records, no output)."""


# --------------------------------------------------------------------------------------------------
# Seeds
# --------------------------------------------------------------------------------------------------


@dataclass
class Seeds:
    """Real inputs every generator starts from (built once, kept in memory)."""

    pdb: list[tuple[str, str]]
    cif: list[tuple[str, str]]
    labels: list[dict]
    promod3: bytes
    promod3_chains: list[dict]
    proteins: list[Any] = field(default_factory=list)


def _trim_pdb(text: str) -> str:
    # Keep header records (SITE, MODRES, LINK, ...) and the first coordinate lines: small but real.
    kept, coords = [], 0
    for line in text.splitlines():
        if line.startswith(("ATOM", "HETATM", "TER", "MODEL", "ENDMDL", "ANISOU")):
            coords += 1
            if coords > MAX_COORD_LINES or line.startswith("ANISOU"):
                continue
        kept.append(line)
    return "\n".join(kept) + "\n"


def _read_lmdb_records(path: Path, count: int) -> list[dict]:
    import lmdb

    env = lmdb.open(str(path), readonly=True, lock=False, readahead=False)
    try:
        with env.begin() as txn:
            # Real seed data we ship ourselves, read with the project's restricted unpickler all the same.
            from plmlens.proteins.safe_pickle import safe_loads

            return [safe_loads(txn.get(str(i).encode())) for i in range(count)]
    finally:
        env.close()


def slice_promod3(path: Path, n_chains: int = 4, max_size: int = 120) -> tuple[bytes, list[dict]]:
    """A small valid ProMod3 database: a few short chains of the real one, in the documented layout.

    Returns
    -------
    bytes, list of dict
        The file content and, per chain, ``pdb_id``, ``chain``, ``sequence``, ``dssp`` and ``ca``.
    """
    from plmlens.proteins.promod3 import _COUNT_OFFSET, _ITEM_SIZES, StructureDB

    db = StructureDB(path)
    picked = [i for i, entry in enumerate(db.entries[:400]) if 20 <= entry.size <= max_size][:n_chains]
    header = db._data[:_COUNT_OFFSET].tobytes()
    table, offset, chains = bytearray(), 0, []
    arrays: dict[str, list[bytes]] = {name: [] for name in _ITEM_SIZES}
    for index in picked:
        entry = db.entries[index]
        table += struct.pack("<I", len(entry.pdb_id)) + entry.pdb_id.encode()
        table += struct.pack("<I", len(entry.chain)) + entry.chain.encode()
        table += struct.pack("<IHh3f", offset, entry.size, entry.start_number, *entry.shift)
        offset += entry.size
        # The reader's located arrays are views of the real file: copy this chain's rows of each.
        for name in _ITEM_SIZES:
            arrays[name].append(db._arrays[name][entry.offset : entry.offset + entry.size].tobytes())
        protein = db[index]
        chains.append({"pdb_id": entry.pdb_id, "chain": entry.chain, "sequence": protein.sequence,
                       "dssp": protein.dssp, "ca": protein.ca})  # fmt: skip
    body = b"".join(struct.pack("<Q", offset) + b"".join(parts) for parts in arrays.values())
    return header + struct.pack("<Q", len(picked)) + bytes(table) + body, chains


def load_seeds(shared: Path = SHARED_DATA, promod3: Path = PROMOD3_DB) -> Seeds:
    """Read the seeds; a missing input raises `FileNotFoundError` (fuzzing without seeds proves nothing)."""
    for relative in (*PDB_SEEDS, *CIF_SEEDS, *LABEL_SEEDS):
        if not (shared / relative).exists():
            raise FileNotFoundError(f"fuzz seed missing: {shared / relative}")
    if not promod3.exists():
        raise FileNotFoundError(f"fuzz seed missing: {promod3} (apt-get install promod3-data)")
    pdb = [(Path(r).name, _trim_pdb((shared / r).read_text(errors="replace"))) for r in PDB_SEEDS]
    cif = [(Path(r).name, (shared / r).read_text(errors="replace")) for r in CIF_SEEDS]
    labels = [record for r in LABEL_SEEDS for record in _read_lmdb_records(shared / r, 6)]
    db_bytes, chains = slice_promod3(promod3)
    seeds = Seeds(pdb=pdb, cif=cif, labels=labels, promod3=db_bytes, promod3_chains=chains)
    from plmlens.proteins import iter_records

    with tempfile.TemporaryDirectory() as tmp:
        seed_file = Path(tmp) / "seed.pdb"
        seed_file.write_text(pdb[0][1])
        seeds.proteins = list(iter_records(f"{seed_file}::dssp=false,min_length=60"))
    return seeds


# --------------------------------------------------------------------------------------------------
# Mutations
# --------------------------------------------------------------------------------------------------


def random_bytes(rng: random.Random, n: int) -> bytes:
    """`n` random bytes from `rng` (works with hypothesis' `st.randoms()` too)."""
    return rng.getrandbits(8 * n).to_bytes(n, "little") if n else b""


def mutate_bytes(data: bytes, rng: random.Random, log: list[str]) -> bytes:
    """One byte-level mutation: truncate, flip bytes, insert junk, delete or duplicate a slice."""
    kind = rng.choice(("truncate", "flip", "insert", "delete", "duplicate", "zero"))
    log.append(f"bytes:{kind}")
    n = len(data)
    if kind == "truncate" or n == 0:
        return data[: rng.randrange(n + 1)]
    at = rng.randrange(n)
    if kind == "flip":
        out = bytearray(data)
        for _ in range(rng.choice((1, 1, 2, 8, 64))):
            out[rng.randrange(n)] ^= rng.randrange(1, 256)
        return bytes(out)
    if kind == "insert":
        return data[:at] + random_bytes(rng, rng.choice((1, 4, 100))) + data[at:]
    end = min(n, at + rng.choice((1, 10, 100, 5000)))
    if kind == "delete":
        return data[:at] + data[end:]
    if kind == "zero":
        return data[:at] + b"\0" * (end - at) + data[end:]
    return data[:end] + data[at:]


def _set(line: str, start: int, end: int, text: str) -> str:
    line = line.ljust(end)
    return line[:start] + text[: end - start].rjust(end - start) + line[end:]


def _coord(line: str) -> bool:
    return line.startswith(("ATOM", "HETATM"))


def _weird_number(rng: random.Random) -> str:
    return rng.choice(("-999", "9999", "0", "****", "A000", "  1A", "", "-1", "1e3", str(rng.randrange(-999, 9999))))


def mutate_pdb_lines(lines: list[str], rng: random.Random, log: list[str]) -> list[str]:
    """One structural mutation of PDB text (columns, numbering, models, altlocs, chains, records)."""
    kind = rng.choice((
        "drop_columns", "cut_lines", "numbering", "renumber_all", "models", "interleave_models", "altlocs",
        "insertion_codes", "hetatm_only", "empty_chains", "chain_ids", "resnames", "atom_names", "coordinates",
        "delete_lines", "duplicate_lines", "shuffle", "junk_records", "occupancy",
    ))  # fmt: skip
    log.append(f"pdb:{kind}")
    coord = [i for i, line in enumerate(lines) if _coord(line)] or [0]
    pick = [i for i in coord if rng.random() < rng.choice((0.01, 0.1, 1.0))]
    out = list(lines)
    if kind == "drop_columns":
        start = rng.randrange(0, 80)
        end = min(80, start + rng.choice((1, 4, 10, 30)))
        return [line[:start] + line[end:] if _coord(line) else line for line in out]
    if kind == "cut_lines":
        width = rng.randrange(0, 80)
        return [line[:width] if _coord(line) else line for line in out]
    if kind == "numbering":
        for i in pick:
            out[i] = _set(out[i], 22, 26, _weird_number(rng))
    elif kind == "renumber_all":
        step = rng.choice((-1, 0, 7, 1000))
        for k, i in enumerate(coord):
            out[i] = _set(out[i], 22, 26, str((k // 8) * step % 10000))
    elif kind == "models":
        copies = rng.choice((2, 3))
        body = [line for line in out if _coord(line) or line.startswith("TER")]
        rest = [line for line in out if not (_coord(line) or line.startswith(("TER", "MODEL", "ENDMDL", "END")))]
        numbers = [rng.choice((1, 1, 2, 0, -3)) for _ in range(copies)]
        models = [[f"MODEL     {m:>4}", *body, *([] if rng.random() < 0.2 else ["ENDMDL"])] for m in numbers]
        return rest + [line for model in models for line in model]
    elif kind == "interleave_models":
        for _ in range(rng.choice((1, 3))):
            out.insert(rng.choice(coord), rng.choice(("MODEL        2", "ENDMDL", "MODEL        1", "END")))
    elif kind == "altlocs":
        extra = []
        for i in pick:
            out[i] = _set(out[i], 16, 17, rng.choice("AB1 ?"))
            if rng.random() < 0.5:
                extra.append((i, _set(out[i], 16, 17, rng.choice("BCA"))))
        for i, line in reversed(extra):
            out.insert(i + 1, line)
    elif kind == "insertion_codes":
        for i in pick:
            out[i] = _set(out[i], 26, 27, rng.choice("ABZa1 "))
    elif kind == "hetatm_only":
        out = [("HETATM" + line[6:]) if line.startswith("ATOM") else line for line in out]
    elif kind == "empty_chains":
        for _ in range(rng.choice((1, 5))):
            out.insert(rng.choice(coord), rng.choice(("TER", "TER      99      ALA Q   1", "TER    " + "\x00" * 3)))
    elif kind == "chain_ids":
        for i in pick:
            out[i] = _set(out[i], 21, 22, rng.choice(" ab9Z#\t"))
    elif kind == "resnames":
        for i in pick:
            out[i] = _set(out[i], 17, 20, rng.choice(("UNK", "HOH", "MSE", "XXX", "", "ala", "NAG", "TPO", "A", "DA")))
    elif kind == "atom_names":
        for i in pick:
            out[i] = _set(out[i], 12, 16, rng.choice((" CA ", " N  ", "    ", " H  ", "CA  ", " CB ", "ZN  ")))
    elif kind == "coordinates":
        for i in pick:
            start = rng.choice((30, 38, 46))
            out[i] = _set(out[i], start, start + 8, rng.choice(("nan", "inf", "********", "-1e30", "1e300", "", "x")))
    elif kind == "delete_lines":
        return [line for line in out if rng.random() > rng.choice((0.01, 0.3, 0.9))]
    elif kind == "duplicate_lines":
        for i in sorted(pick, reverse=True):
            out.insert(i, out[i])
    elif kind == "shuffle":
        block = [out[i] for i in coord]
        rng.shuffle(block)
        for i, line in zip(coord, block, strict=True):
            out[i] = line
    elif kind == "junk_records":
        junk = (
            "SITE     1 AC1  9 ZZZ A9999  ALA Q   1  GLY     ", "MODRES 1ABC MSE A   -5  MET  GLYCOSYLATION SITE",
            "LINK         C1  NAG A 901                 ND2 ASN A  -7     1555   1555  1.45",
            "SSBOND   1 CYS A    1    CYS B 9999", "HEADER " + "x" * 200, "SEQRES   1 A  999  ALA", "\x00\x01\x02",
        )  # fmt: skip
        for _ in range(rng.choice((1, 5))):
            out.insert(rng.randrange(len(out) + 1), rng.choice(junk))
    elif kind == "occupancy":
        for i in pick:
            out[i] = _set(out[i], 54, 66, rng.choice(("  0.00  0.00", " -1.00 99.99", "   nan   nan", "")))
    return out


def _cif_atom_loop(lines: list[str]) -> tuple[list[int], list[int]] | None:
    tags = [i for i, line in enumerate(lines) if line.startswith("_atom_site.")]
    if not tags:
        return None
    rows, i = [], tags[-1] + 1
    while i < len(lines) and lines[i] and not lines[i].startswith(("#", "_", "loop_")):
        rows.append(i)
        i += 1
    return tags, rows


def mutate_cif_lines(lines: list[str], rng: random.Random, log: list[str]) -> list[str]:
    """One structural mutation of the mmCIF ``_atom_site`` loop (columns, numbering, models, altlocs)."""
    loop = _cif_atom_loop(lines)
    kind = rng.choice(("drop_column", "numbering", "models", "altlocs", "insertion_codes", "hetatm_only",
                       "chain_ids", "delete_rows", "duplicate_rows", "drop_tag_only", "values"))  # fmt: skip
    log.append(f"cif:{kind}")
    if loop is None:
        return lines
    tags, rows = loop
    names = [lines[i].split()[0].removeprefix("_atom_site.") for i in tags]
    out = list(lines)
    pick = [i for i in rows if rng.random() < rng.choice((0.01, 0.2, 1.0))]

    def edit(column: str | None, values: Callable[[], str]) -> None:
        index = names.index(column) if column in names else rng.randrange(len(names))
        for i in pick:
            tokens = out[i].split()
            if index < len(tokens):
                tokens[index] = values() or "?"
                out[i] = " ".join(tokens)

    if kind == "drop_column":
        index = rng.randrange(len(names))
        for i in rows:
            tokens = out[i].split()
            out[i] = " ".join(tokens[:index] + tokens[index + 1 :])
        del out[tags[index]]
    elif kind == "drop_tag_only":
        del out[rng.choice(tags)]
    elif kind == "numbering":
        edit(rng.choice(("auth_seq_id", "label_seq_id")), lambda: _weird_number(rng).strip())
    elif kind == "models":
        edit("pdbx_PDB_model_num", lambda: rng.choice(("1", "2", "0", "-1", "x")))
    elif kind == "altlocs":
        edit("label_alt_id", lambda: rng.choice("AB.?C"))
    elif kind == "insertion_codes":
        edit("pdbx_PDB_ins_code", lambda: rng.choice("AB.?z"))
    elif kind == "hetatm_only":
        edit("group_PDB", lambda: "HETATM")
    elif kind == "chain_ids":
        edit(rng.choice(("auth_asym_id", "label_asym_id")), lambda: rng.choice(("A", "ZZ", ".", "?", "'a b'")))
    elif kind == "delete_rows":
        return [line for i, line in enumerate(out) if i not in set(pick)]
    elif kind == "duplicate_rows":
        for i in sorted(pick, reverse=True):
            out.insert(i, out[i])
    else:
        edit(None, lambda: rng.choice(("nan", "1e400", "-", "'", '"', "''", "x" * 300, "0")))
    return out


def synthetic_pdb(rng: random.Random, log: list[str], n_residues: int | None = None) -> str:
    """A synthetic structure: chains with an ideal backbone, maybe ligands, HETATM-only and empty chains."""
    n = n_residues or rng.choice((1, 5, 29, 30, 31, 80))
    log.append(f"synthetic:{n}")
    ideal = {"N": (-0.525, 1.363, 0.0), "CA": (0.0, 0.0, 0.0), "C": (1.526, 0.0, 0.0), "O": (2.153, -1.062, 0.0),
             "CB": (-0.529, -0.774, -1.205)}  # fmt: skip
    lines, serial = ["HEADER    SYNTHETIC"], 0
    chains = rng.choice((("A",), ("A", "B"), ("A", " ")))
    if n > 9999:
        # A chain longer than PDB's four number columns: one chain of CA atoms on a grid, numbers wrapping
        # around with an insertion code per lap (as some real files do).
        chains, ideal = ("A",), {"CA": (0.0, 0.0, 0.0)}
    for chain in chains:
        record = "HETATM" if rng.random() < 0.2 else "ATOM  "
        for k in range(n):
            resname = rng.choice(("ALA", "GLY", "MSE", "UNK", "TPO")) if rng.random() < 0.1 else "ALA"
            icode = " ABCDEFGHIJKLMNOPQRSTUVWXYZ"[(k + 1) // 10000 % 27]
            for name, (dx, dy, dz) in ideal.items():
                serial += 1
                x, y, z = 3.8 * (k % 1000) + dx, dy + 3.8 * (k // 1000) + 20.0 * (chain == "B"), dz
                lines.append(f"{record}{serial % 100000:>5} {name:<4} {resname} {chain}{(k + 1) % 10000:>4}{icode}   "
                             f"{x:8.3f}{y:8.3f}{z:8.3f}  1.00 20.00           {name[0]}")  # fmt: skip
        lines.append("TER")
    if rng.random() < 0.5:
        lines.append("HETATM99999  C1  LIG L   1       1.000   2.000   3.000  1.00 20.00           C")
    if rng.random() < 0.3:
        lines += ["TER", "TER"]  # empty chains
    return "\n".join([*lines, "END", ""])


def structure_options(rng: random.Random, size: int) -> str:
    """Random SOURCE options for a structure file (DSSP only now and then: mkdssp takes ~0.3 s)."""
    options = [f"dssp={'true' if size < 400_000 and rng.random() < 0.03 else 'false'}"]
    if rng.random() < 0.5:
        options.append(f"binding_sites={rng.choice(('ligands', 'site', 'both', 'none'))}")
    elif rng.random() < 0.3:
        options.append(rng.choice(("partner=chains", "partner=chains:A+B", "partner=replace:_l_:_r_")))
    if rng.random() < 0.3:
        options.append(f"min_length={rng.choice((0, 1, 30, 100))}")
    if rng.random() < 0.1:
        options.append("chains=A+B+Z")
    return "::" + ",".join(options)


# --------------------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------------------


@dataclass
class Case:
    """One fuzz input: where it lies, the SOURCE that reads it, and how it was made."""

    reader: str
    path: Path
    source: str
    mutations: list[str]
    #: Record ids that must be among the output (good files of a directory with bad ones).
    expect_ids: list[str] = field(default_factory=list)
    #: Whether yielding nothing at all is acceptable (a length filter or an empty saved set).
    allow_empty: bool = False
    #: Whether a `Skipped` may name another file (a protein set keeps the skips of the source it was saved from).
    foreign_skips: bool = False


def _structure_text(seeds: Seeds, rng: random.Random, log: list[str], cif: bool) -> tuple[str, str]:
    if cif:
        name, text = rng.choice(seeds.cif)
        log.append(f"seed:{name}")
        lines = text.splitlines()
        for _ in range(rng.choice((0, 1, 1, 2, 3))):
            lines = mutate_cif_lines(lines, rng, log)
        return name, "\n".join(lines) + "\n"
    if rng.random() < 0.15:
        name, text = "synthetic.pdb", synthetic_pdb(rng, log, 100_000 if rng.random() < 0.02 else None)
    else:
        name, text = rng.choice(seeds.pdb)
        log.append(f"seed:{name}")
    lines = text.splitlines()
    for _ in range(rng.choice((0, 1, 1, 2, 3))):
        lines = mutate_pdb_lines(lines, rng, log)
    return name, "\n".join(lines) + "\n"


def _finish_bytes(data: bytes, rng: random.Random, log: list[str], p: float = 0.3) -> bytes:
    while rng.random() < p:
        data = mutate_bytes(data, rng, log)
        p /= 2
    return data


def make_structure_case(seeds: Seeds, rng: random.Random, workdir: Path, reader: str) -> Case:
    """A PDB (``pdb``), mmCIF (``mmcif``) or gzip (``gzip``) input."""
    log: list[str] = []
    cif = reader == "mmcif" or (reader == "gzip" and rng.random() < 0.3)
    if rng.random() < 0.05:
        log.append("binary")
        name, data = "binary.cif" if cif else "binary.pdb", random_bytes(rng, rng.choice((0, 1, 100, 5000)))
    else:
        name, text = _structure_text(seeds, rng, log, cif)
        data = _finish_bytes(text.encode(errors="replace"), rng, log)
    stem = Path(name).stem.replace("_l_b", "_l_x") if rng.random() < 0.5 else Path(name).stem
    suffix = ".cif" if cif else rng.choice((".pdb", ".pdb", ".ent"))
    if reader == "gzip":
        suffix += ".gz"
        kind = rng.choice(("gzip", "gzip", "not_gzip", "truncated", "flipped", "random", "gzip_of_binary"))
        log.append(f"gz:{kind}")
        if kind == "gzip_of_binary":
            data = gzip.compress(random_bytes(rng, 1000))
        elif kind == "random":
            data = random_bytes(rng, rng.choice((0, 2, 18, 500)))
        elif kind != "not_gzip":
            data = gzip.compress(data, mtime=0)
            if kind == "truncated":
                data = data[: rng.randrange(len(data) + 1)]
            elif kind == "flipped":
                data = mutate_bytes(data, rng, log)
    path = workdir / f"{stem}{suffix}"
    path.write_bytes(data)
    options = structure_options(rng, len(data))
    return Case(reader, path, f"{path}{options}", log)


def make_directory_case(seeds: Seeds, rng: random.Random, workdir: Path) -> Case:
    """A directory with good seed files and bad ones: the good ones' records must all come out."""
    log: list[str] = []
    folder = workdir / "mixed"
    folder.mkdir()
    from plmlens.proteins import Protein, iter_records

    expect: list[str] = []
    for name, text in rng.sample(seeds.pdb, 2):
        good = folder / name
        good.write_text(text)
        expect += [r.id for r in iter_records(f"{good}::dssp=false") if isinstance(r, Protein)]
    for k in range(rng.choice((1, 2, 3))):
        bad = rng.choice(("binary.pdb", "notgzip.pdb.gz", "truncated.cif", "empty.ent", "dir.pdb", "mutated.pdb",
                          "gzip.cif.gz"))  # fmt: skip
        log.append(f"bad:{bad}")
        path = folder / f"{k}{bad}"
        if bad == "dir.pdb":
            path.mkdir()
        elif bad == "binary.pdb":
            path.write_bytes(random_bytes(rng, 3000))
        elif bad == "notgzip.pdb.gz":
            path.write_text(seeds.pdb[0][1])
        elif bad == "truncated.cif":
            text = seeds.cif[0][1]
            path.write_text(text[: rng.randrange(len(text))])
        elif bad == "empty.ent":
            path.write_bytes(b"")
        elif bad == "gzip.cif.gz":
            path.write_bytes(mutate_bytes(gzip.compress(seeds.cif[1][1].encode()), rng, log))
        else:
            _, text = _structure_text(seeds, rng, log, cif=False)
            path.write_bytes(_finish_bytes(text.encode(), rng, log, 0.5))
    options = f"::dssp=false,binding_sites={rng.choice(('ligands', 'site', 'both'))}"
    return Case("directory", folder, f"{folder}{options}", log, expect_ids=expect)


def make_fasta_case(seeds: Seeds, rng: random.Random, workdir: Path) -> Case:
    """A FASTA file from real sequences, with broken headers, characters, line ends and bytes."""
    log: list[str] = []
    entries = [(r["id"], r["primary"]) for r in rng.sample(seeds.labels, 3)]
    parts = []
    for title, sequence in entries:
        kind = rng.choice(("ok", "ok", "lower", "stars", "digits", "empty", "no_header", "wrapped", "unicode",
                           "spaces", "header_only", "nul"))  # fmt: skip
        log.append(f"fasta:{kind}")
        header = f">{title} some description"
        if kind == "lower":
            sequence = sequence.lower()
        elif kind == "stars":
            sequence = sequence[:10] + "*" + sequence[10:] + "*"
        elif kind == "digits":
            sequence = "".join(f"{c}{i % 10}" if i % 7 == 0 else c for i, c in enumerate(sequence))
        elif kind == "empty":
            sequence = ""
        elif kind == "no_header":
            header = ""
        elif kind == "wrapped":
            sequence = "\r\n".join(sequence[i : i + 60] for i in range(0, len(sequence), 60))
        elif kind == "unicode":
            header, sequence = ">ümlaut\u2028id", sequence[:20] + "ßé\u00b5" + sequence[20:]
        elif kind == "spaces":
            header, sequence = ">", " ".join(sequence)
        elif kind == "header_only":
            header, sequence = ">>>", ""
        elif kind == "nul":
            sequence = sequence[:5] + "\x00" + sequence[5:]
        parts.append(f"{header}\n{sequence}\n")
    data = _finish_bytes("".join(parts).encode(), rng, log, 0.4)
    if rng.random() < 0.05:
        log.append("binary")
        data = random_bytes(rng, 300)
    path = workdir / f"seqs{rng.choice(('.fasta', '.fa', '.faa', '.fas'))}"
    path.write_bytes(data)
    return Case("fasta", path, str(path), log)


def tape_records(seeds: Seeds) -> list[dict]:
    """TAPE ``proteinnet`` and ``secondary_structure`` records built from the sliced ProMod3 chains."""
    records: list[dict] = []
    ss8_index = {c: i for i, c in enumerate("GHIBESTC")}
    for k, chain in enumerate(seeds.promod3_chains):
        n = len(chain["sequence"])
        name = f"{chain['pdb_id']}_{chain['chain']}"
        records.append({"id": f"{name}_pn", "primary": chain["sequence"], "tertiary": chain["ca"].astype(np.float64),
                        "valid_mask": np.ones(n, dtype=bool), "protein_length": n})  # fmt: skip
        ss8 = np.array([ss8_index.get(c, 7) for c in chain["dssp"]], dtype=np.int64)
        ss3 = np.array([0 if c in "GHI" else 1 if c in "EB" else 2 for c in chain["dssp"]], dtype=np.int64)
        record = {"id": f"{name}_ss", "primary": chain["sequence"], "ss8": ss8, "ss3": ss3}
        if k % 2:
            del record["ss8"]
        records.append(record)
    return records


def _junk_value(rng: random.Random, n: int) -> Any:
    return rng.choice((
        None, 0, -1, 10**30, float("nan"), float("inf"), "", "ACDE", b"\xff\xfe", "x\ny", [], [1, [2, 3]],
        [[1, 2, 3]] * n, ["a"] * n, list(range(n + 1)), np.zeros(n),
        np.full(n, 2**62, dtype=np.int64), np.array(["q"] * n), {"a": 1}, {1, 2}, (1, 2), 3.5, True,
        np.zeros((n, 2), dtype=np.float16), np.array(np.nan), list(range(-n, 0)),
    ))  # fmt: skip


def mutate_record(record: dict, rng: random.Random, log: list[str]) -> Any:
    """One mutation of a dataset record: drop or replace a field, break lengths, types and ids."""
    if not isinstance(record, dict):
        return record
    kind = rng.choice(("drop", "replace", "replace", "shorten", "lengthen", "primary", "id", "not_dict", "none"))
    log.append(f"record:{kind}")
    record = dict(record)
    keys = list(record)
    primary = record.get("primary")
    n = len(primary) if isinstance(primary, (str, bytes)) else 10
    key = rng.choice(keys) if keys else "primary"
    value = record.get(key)
    if kind == "drop" and keys:
        del record[key]
    elif kind == "replace":
        record[key] = _junk_value(rng, n)
    elif kind in ("shorten", "lengthen") and (
        isinstance(value, (str, bytes, list)) or (isinstance(value, np.ndarray) and value.ndim)
    ):
        if kind == "shorten":
            record[key] = value[: max(0, len(value) - 3)]
        else:
            record[key] = np.concatenate([value, value[:3]]) if isinstance(value, np.ndarray) else value + value[:3]
    elif kind == "primary":
        record["primary"] = rng.choice((
            "", "acde", "AC DE", "AC\nDE", "ÄÖÜ", "ACD1", "U" * n, b"ACDE", b"\xff\xfe", "X" * 20_000, 42, None, ["A"],
        ))  # fmt: skip
    elif kind == "id":
        record["id"] = rng.choice(("a\nb", "", "x" * 10_000, 5, None, ["list"], "a: b: c", "\udcff", "tab\tid"))
    elif kind == "not_dict":
        return rng.choice(([record], "a string", 42, None, (1, 2), np.arange(3)))
    return record


def _pickle(value: Any, rng: random.Random) -> bytes:
    try:
        return pickle.dumps(value, protocol=rng.choice((2, 3, 4, 5)))
    except (pickle.PicklingError, TypeError, ValueError):
        return pickle.dumps(repr(value))


class FileMaker:
    """A pickle whose ``__reduce__`` would create a file (the restricted unpickler must refuse it)."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.target,))


def write_lmdb(path: Path, items: dict[bytes, bytes], single_file: bool = False) -> Path:
    """Write raw key → value pairs to an LMDB (a ``.lmdb`` directory, or a single file)."""
    import lmdb

    if not single_file:
        path.mkdir(parents=True, exist_ok=True)
    env = lmdb.open(str(path), map_size=1 << 26, subdir=not single_file, lock=False)
    with env.begin(write=True) as txn:
        for key, value in items.items():
            txn.put(key, value)
    env.close()
    if single_file:
        Path(f"{path}-lock").unlink(missing_ok=True)
    return path


def make_lmdb_case(seeds: Seeds, rng: random.Random, workdir: Path, reader: str) -> Case:
    """A TAPE (``tape_lmdb``) or label (``label_lmdb``) LMDB with mutated records, pickles and pages."""
    log: list[str] = []
    base = tape_records(seeds) if reader == "tape_lmdb" else seeds.labels
    records: list[Any] = rng.sample(base, rng.choice((1, 3, 5)))
    for _ in range(rng.choice((0, 1, 2, 3))):
        i = rng.randrange(len(records))
        records[i] = mutate_record(records[i], rng, log) if isinstance(records[i], dict) else records[i]
    items = {str(i).encode(): _pickle(r, rng) for i, r in enumerate(records)}
    count: Any = len(records)
    kind = rng.choice(("ok", "ok", "count", "missing_count", "raw_pickle", "drop_key", "malicious", "extra_keys"))
    log.append(f"lmdb:{kind}")
    if kind == "count":
        count = rng.choice((0, -1, len(records) + 2, 10**12, 2.5, float("inf"), float("nan"), "3", "x", [1], None))
    elif kind == "raw_pickle":
        key = rng.choice(list(items))
        items[key] = mutate_bytes(items[key], rng, log)
    elif kind == "drop_key":
        del items[rng.choice(list(items))]
    elif kind == "malicious":
        items[rng.choice(list(items))] = pickle.dumps(FileMaker(workdir / "PWNED"))
    elif kind == "extra_keys":
        items[b"extra"] = b"\x00"
        items[b"-1"] = pickle.dumps({"primary": "AC"})
    if kind != "missing_count":
        items[b"num_examples"] = _pickle(count, rng) if rng.random() < 0.95 else random_bytes(rng, 5)
    single = rng.random() < 0.2
    path = write_lmdb(workdir / "data.lmdb", items, single_file=single)
    if rng.random() < 0.25:
        page_file = path if single else path / "data.mdb"
        page_file.write_bytes(mutate_bytes(page_file.read_bytes(), rng, log))
    return Case(reader, path, str(path), log)


def _json_safe(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist() if value.dtype != object else [str(v) for v in value.ravel()]
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, (set, tuple)):
        return list(value)
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def make_json_case(seeds: Seeds, rng: random.Random, workdir: Path) -> Case:
    """A TAPE JSON dataset with mutated records and text (truncation, deep nesting, NaN, bad UTF-8)."""
    log: list[str] = []
    records: list[Any] = rng.sample(tape_records(seeds), 3)
    for _ in range(rng.choice((0, 1, 2))):
        i = rng.randrange(len(records))
        records[i] = mutate_record(records[i], rng, log)
    text = json.dumps(_json_safe(records))
    kind = rng.choice(("ok", "ok", "deep", "object", "empty", "nan", "huge_number", "bom", "bytes"))
    log.append(f"json:{kind}")
    if kind == "deep":
        depth = rng.choice((100, 10_000, 200_000))
        text = "[" * depth + "]" * depth
    elif kind == "object":
        text = json.dumps({"records": _json_safe(records)})
    elif kind == "empty":
        text = rng.choice(("", "[]", "null", "[{}]"))
    elif kind == "nan":
        text = text.replace("1", "NaN", 3)
    elif kind == "huge_number":
        text = text.replace("true", "1e999", 2).replace("0.", "9" * 5000 + ".", 1)
    elif kind == "bom":
        text = "\ufeff" + text
    data = _finish_bytes(text.encode(), rng, log, 0.3)
    if kind == "bytes":
        data = random_bytes(rng, 200)
    path = workdir / "dataset.json"
    path.write_bytes(data)
    return Case("tape_json", path, str(path), log)


def make_promod3_case(seeds: Seeds, rng: random.Random, workdir: Path) -> Case:
    """A sliced ProMod3 database with corrupt counts, ids, offsets, sizes, shifts, letters or bytes."""
    log: list[str] = []
    data = bytearray(seeds.promod3)
    table = 0x55
    kind = rng.choice(("ok", "count", "id_length", "offset", "size", "shift", "sequence", "dssp", "array_count",
                       "truncate", "bytes", "table_bytes"))  # fmt: skip
    log.append(f"promod3:{kind}")
    (id_length,) = struct.unpack_from("<I", data, table)
    (chain_length,) = struct.unpack_from("<I", data, table + 4 + id_length)
    fields = table + 8 + id_length + chain_length  # offset, size, start, shift of the first chain
    n_chains = len(seeds.promod3_chains)
    residues = sum(len(c["sequence"]) for c in seeds.promod3_chains)
    # The first array (sequence) starts after the table: find it from the end, arrays have known sizes.
    arrays_start = len(data) - sum(8 + residues * s for s in (1, 24, 4, 2, 2, 1, 40, 40))
    if kind == "count":
        struct.pack_into("<Q", data, 0x4D, rng.choice((0, 1, n_chains + 1, 9_999_999, 2**64 - 1)))
    elif kind == "id_length":
        struct.pack_into("<I", data, table, rng.choice((0, 3, 9, 200, 2**32 - 1)))
    elif kind == "offset":
        struct.pack_into("<I", data, fields, rng.choice((residues - 1, residues, 2**32 - 1)))
    elif kind == "size":
        struct.pack_into("<H", data, fields + 4, rng.choice((0, 1, residues + 5, 65535)))
    elif kind == "shift":
        struct.pack_into("<f", data, fields + 8 + 4 * rng.randrange(3), rng.choice((float("nan"), float("inf"), 1e38)))
    elif kind == "sequence":
        for i in rng.sample(range(residues), 3):
            data[arrays_start + 8 + i] = rng.choice(b"axUBZ*\x00\xff ")
    elif kind == "dssp":
        dssp_start = arrays_start + sum(8 + residues * s for s in (1, 24, 4, 2, 2)) + 8
        for i in rng.sample(range(residues), 3):
            data[dssp_start + i] = rng.choice(b"\x00\xff?P ")
    elif kind == "array_count":
        struct.pack_into("<Q", data, arrays_start, rng.choice((0, residues - 1, residues + 1, 2**63)))
    elif kind == "truncate":
        data = data[: rng.randrange(len(data))]
    elif kind == "table_bytes":
        for _ in range(4):
            data[rng.randrange(table, arrays_start)] ^= rng.randrange(1, 256)
    elif kind == "bytes":
        data = bytearray(mutate_bytes(bytes(data), rng, log))
    path = workdir / "structure_db.dat"
    path.write_bytes(bytes(data))
    options, allow_empty = "", False
    if rng.random() < 0.3:
        options = rng.choice(("::min_length=30", "::max_length=50", "::ids=1AKE.A+zzzz.Q", "::min_length=0"))
        allow_empty = "length" in options
    return Case("promod3", path, f"{path}{options}", log, allow_empty=allow_empty)


def make_proteinset_case(seeds: Seeds, rng: random.Random, workdir: Path) -> Case:
    """A ``.proteins.npz`` whose zip bytes, JSON index or arrays are damaged."""
    from plmlens.proteins import Skipped, save_protein_set

    log: list[str] = []
    path = workdir / "set.proteins.npz"
    records = [*(p for p in seeds.proteins if not isinstance(p, Skipped)), Skipped("x.pdb", "B", "too short")]
    save_protein_set(records, path, source="fuzz")
    kind = rng.choice(("ok", "bytes", "bytes", "index", "index", "arrays", "drop_member"))
    log.append(f"npz:{kind}")
    allow_empty = False
    if kind == "bytes":
        path.write_bytes(mutate_bytes(path.read_bytes(), rng, log))
    elif kind in ("index", "arrays", "drop_member"):
        with np.load(path) as data:
            members = {name: data[name] for name in data.files}
        header = json.loads(str(members["__index__"]))
        if kind == "index":
            target = rng.choice(("format", "records", "item", "skipped", "whole"))
            log.append(f"index:{target}")
            item = header["records"][0]
            if target == "format":
                header["format"] = rng.choice((None, 1, "plmlens-proteins/3", ["x"]))
            elif target == "records":
                header["records"] = rng.choice((None, 5, "abc", {"a": 1}, [], [None], [[1]]))
                allow_empty = header["records"] == []
            elif target == "item":
                key = rng.choice(sorted(item))
                item[key] = rng.choice((None, 5, "", "x\ny", [1], {"a": 1}, "ACDE" * 100, "acd"))
            elif target == "skipped":
                header["records"][-1]["skipped"] = rng.choice(({}, None, 5, {"file": 1}, {"file": "a", "chain": 2}))
            members["__index__"] = np.array(rng.choice((json.dumps(header), "[1, 2]", "{", "5", "null")))
        elif kind == "arrays":
            name = rng.choice(sorted(members))
            n = len(members[name]) if members[name].ndim else 1
            members[name] = rng.choice((
                members[name][:-1] if members[name].ndim else np.zeros(0), np.zeros(3), np.array(["a", "b"]),
                np.zeros((n, 5)), np.array(3), np.full(n, "x"), np.full(n, 1e30), np.zeros(n, dtype=np.complex64),
            ))  # fmt: skip
            log.append(f"array:{name}")
        else:
            del members[rng.choice(sorted(members))]
        buffer = io.BytesIO()
        np.savez(buffer, **members)
        path.write_bytes(buffer.getvalue())
    return Case("proteinset", path, str(path), log, allow_empty=allow_empty, foreign_skips=True)


def make_case(reader: str, seeds: Seeds, rng: random.Random, workdir: Path) -> Case:
    """Build one fuzz input for `reader` (one of `READERS`) under `workdir`."""
    if reader in ("pdb", "mmcif", "gzip"):
        return make_structure_case(seeds, rng, workdir, reader)
    if reader in ("tape_lmdb", "label_lmdb"):
        return make_lmdb_case(seeds, rng, workdir, reader)
    makers: dict[str, Callable[[Seeds, random.Random, Path], Case]] = {
        "fasta": make_fasta_case, "tape_json": make_json_case, "promod3": make_promod3_case,
        "proteinset": make_proteinset_case, "directory": make_directory_case,
    }  # fmt: skip
    return makers[reader](seeds, rng, workdir)


# --------------------------------------------------------------------------------------------------
# The contract
# --------------------------------------------------------------------------------------------------


#: The types of `Protein`'s fields (a list where the id belongs once passed, and broke sets and dicts later).
_PROTEIN_TYPES = {"id": (str,), "sequence": (str,), "source": (str,), "chain": (str, type(None)),
                  "dssp": (str, type(None)), "meta": (dict,)}  # fmt: skip


def _check_protein(protein: Any) -> None:
    for name, types in _PROTEIN_TYPES.items():
        if not isinstance(getattr(protein, name), types):
            raise ContractError(f"Protein.{name} is a {type(getattr(protein, name)).__name__}: {protein.id!r:.80}")
    n = len(protein.sequence)
    for name in ("residue_numbers", "insertion_codes", "has_coords"):
        if getattr(protein, name).shape != (n,):
            raise ContractError(f"Protein.{name} has shape {getattr(protein, name).shape} for {n} residues")
    if protein.residue_numbers.dtype != np.int64 or protein.ca.shape != (n, 3) or protein.cb.shape != (n, 3):
        raise ContractError(f"Protein {protein.id!r:.80}: residue numbers or coordinates of the wrong type")


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise `TimeoutError` in the main thread after `seconds` (a hang becomes a failure, not a stall)."""

    def expire(signum: int, frame: Any) -> None:
        raise TimeoutError(f"no result within {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def check_case(case: Case) -> str:
    """Read a case's SOURCE and enforce the contract.

    Returns
    -------
    str
        The outcome: ``records`` (at least one `Protein`), ``skipped`` (only `Skipped`), ``source_error``
        or ``empty`` (nothing, where `Case.allow_empty`).

    Raises
    ------
    ContractError
        When the reader raised anything else, wrote a multi-line message, did not name the file, lost
        the records of good files, yielded nothing where it must say something, or ran a pickle.
    """
    from plmlens.proteins import DuplicateIdWarning, Protein, Skipped, SourceError, iter_records

    location = str(case.path)
    records: list[Any] = []
    try:
        # Mutations copy records, so repeated ids are expected here (and renamed, which `unique_ids` tests).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DuplicateIdWarning)
            records.extend(iter_records(case.source))
    except SourceError as error:
        message = str(error)
        if "\n" in message or "\r" in message or location not in message:
            raise ContractError(f"SourceError not one line naming {location}: {message!r}") from error
        outcome = "source_error"
    except TimeoutError:
        raise
    except Exception as error:
        raise ContractError(f"{type(error).__name__} escaped: {error!r}"[:2000]) from error
    else:
        outcome = "empty"
        for record in records:
            if isinstance(record, Skipped):
                text = str(record)
                named = record.source.startswith(location) or (case.foreign_skips and record.source)
                if "\n" in text or "\r" in text or not named:
                    raise ContractError(f"Skipped not one line naming {location}: {text!r}")
                outcome = "skipped" if outcome == "empty" else outcome
            elif isinstance(record, Protein):
                _check_protein(record)
                outcome = "records"
            else:
                raise ContractError(f"yielded a {type(record).__name__}, not Protein or Skipped")
        if outcome == "empty" and not case.allow_empty:
            raise ContractError("no records, no Skipped and no SourceError")
    missing = sorted(set(case.expect_ids) - {r.id for r in records if isinstance(r, Protein)})
    if missing:
        raise ContractError(f"good files' records lost among bad ones: {missing}")
    if (case.path.parent / "PWNED").exists():
        raise ContractError("a pickle's __reduce__ ran: PWNED was created")
    return outcome


# --------------------------------------------------------------------------------------------------
# The runner: a forked worker per batch, so that hangs and crashes are caught and the run goes on
# --------------------------------------------------------------------------------------------------


def _worker(connection: Any) -> None:
    while True:
        case = connection.recv()
        if case is None:
            return
        try:
            result = ("ok", check_case(case))
        except ContractError as error:
            result = ("violation", f"{error}\n{''.join(traceback.format_exception(error.__cause__ or error))}")
        except BaseException as error:  # the checker itself must never take the worker down unreported
            result = ("violation", "".join(traceback.format_exception(error)))
        connection.send(result)


class Runner:
    """Checks cases in a forked worker; a case that takes longer than `timeout` or kills it is a failure."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.context = multiprocessing.get_context("fork")
        self.process: Any = None
        self.connection: Any = None

    def _start(self) -> None:
        parent, child = self.context.Pipe()
        self.process = self.context.Process(target=_worker, args=(child,), daemon=True)
        self.process.start()
        self.connection = parent

    def _stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.join()
            self.process = None

    def check(self, case: Case) -> tuple[str, str]:
        """``(status, detail)``: status ``ok`` (detail is the outcome), ``violation``, ``hang`` or ``crash``."""
        if self.process is None or not self.process.is_alive():
            self._start()
        self.connection.send(case)
        if not self.connection.poll(self.timeout):
            self._stop()
            return "hang", f"no result within {self.timeout} s"
        try:
            return self.connection.recv()
        except (EOFError, OSError):
            self.process.join(5)
            code = self.process.exitcode
            self._stop()
            return "crash", f"worker died (exit code {code})"

    def close(self) -> None:
        if self.process is not None and self.process.is_alive():
            self.connection.send(None)
            self.process.join(5)
        self._stop()


def case_rng(seed: int, case: int) -> random.Random:
    """The generator of input number `case` of a run seeded with `seed` (the test suite draws the same)."""
    return random.Random(f"{seed}:{case}")


def run(
    n: int,
    seed: int,
    timeout: float,
    out: Path,
    readers: tuple[str, ...] = READERS,
    cases: list[int] | None = None,
) -> int:
    """Fuzz `n` inputs round-robin over `readers` (or only the inputs numbered `cases`, to replay a
    failure); returns the number of failures."""
    seeds = load_seeds()
    # Import the readers (gemmi, lmdb, numpy) before forking, so every worker starts warm.
    import plmlens.proteins  # noqa: F401

    counts: dict[str, Counter] = {reader: Counter() for reader in readers}
    failures = 0
    runner = Runner(timeout)
    started = time.perf_counter()
    scratch = Path(tempfile.mkdtemp(prefix="plmlens-fuzz-"))
    try:
        for i in cases if cases is not None else range(n):
            reader = readers[i % len(readers)]
            workdir = scratch / f"{i:06d}"
            workdir.mkdir()
            rng = case_rng(seed, i)
            try:
                case = make_case(reader, seeds, rng, workdir)
                status, detail = runner.check(case)
            except Exception:
                case, status, detail = None, "generator", traceback.format_exc()
            counts[reader][detail if status == "ok" else status] += 1
            if status != "ok":
                failures += 1
                saved = out / "failures" / f"{reader}-{i:06d}"
                shutil.copytree(workdir, saved, dirs_exist_ok=True)
                info = {"reader": reader, "case": i, "seed": seed, "status": status, "detail": detail}
                if case is not None:
                    info.update(source=case.source, mutations=case.mutations)
                (saved / "case.json").write_text(json.dumps(info, indent=2))
                first = detail.strip().splitlines()[0] if detail.strip() else ""
                print(f"FAIL {reader} #{i} {status}: {first}  [{case.mutations if case else ''}] -> {saved}")
            shutil.rmtree(workdir, ignore_errors=True)
            if (i + 1) % 1000 == 0:
                print(f"... {i + 1}/{n} inputs, {failures} failures, {time.perf_counter() - started:.0f} s", flush=True)
    finally:
        runner.close()
        shutil.rmtree(scratch, ignore_errors=True)
    elapsed = time.perf_counter() - started
    print(f"\n{'reader':<12} {'inputs':>7} {'records':>8} {'skipped':>8} {'src_err':>8} {'empty':>6} {'FAILED':>7}")
    for reader, counter in counts.items():
        bad = sum(v for k, v in counter.items() if k not in ("records", "skipped", "source_error", "empty"))
        print(f"{reader:<12} {sum(counter.values()):>7} {counter['records']:>8} {counter['skipped']:>8} "
              f"{counter['source_error']:>8} {counter['empty']:>6} {bad:>7}")  # fmt: skip
    total = len(cases) if cases is not None else n
    print(f"\n{total} inputs, {failures} failures, wall time {elapsed:.1f} s (seed {seed}, timeout {timeout} s)")
    return failures


def main(argv: list[str] | None = None) -> int:
    """Command line: ``--n``, ``--seed``, ``--timeout``, ``--out``, ``--readers``, ``--case``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="number of inputs (default 10,000)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per input before it is a hang")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "fuzz_readers", help="where failures are saved")
    parser.add_argument("--readers", default=",".join(READERS), help=f"comma-separated subset of {READERS}")
    parser.add_argument("--case", default=None,
                        help="only these input numbers, comma-separated (to replay a failure)")  # fmt: skip
    args = parser.parse_args(argv)
    readers = tuple(r for r in args.readers.split(",") if r)
    unknown = set(readers) - set(READERS)
    if unknown:
        parser.error(f"unknown readers: {sorted(unknown)}")
    try:
        cases = None if args.case is None else [int(c) for c in args.case.split(",") if c.strip()]
    except ValueError:
        parser.error(f"--case takes input numbers, not {args.case!r}")
    return 1 if run(args.n, args.seed, args.timeout, args.out, readers, cases) else 0


if __name__ == "__main__":
    sys.exit(main())
