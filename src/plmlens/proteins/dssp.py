"""Secondary structure by DSSP: Debian's ``mkdssp`` when present, ``pydssp`` otherwise."""

from __future__ import annotations

import functools
import shutil
import string
import subprocess
import tempfile
from pathlib import Path

import gemmi
import numpy as np

from plmlens.proteins.record import SS_COIL

ResidueKey = tuple[str, int, str]  # chain, author number, insertion code

# mkdssp 4 reads PDB only when the file starts with HEADER; gemmi writes none for header-less input.
_HEADER = "HEADER    PLMLENS DSSP INPUT                      01-JAN-00   XXXX              \n"


#: One-character chain names mkdssp reads in a PDB file.
_PDB_CHAIN_NAMES = string.ascii_uppercase + string.ascii_lowercase + string.digits

#: Seconds one mkdssp run may take (a large structure takes a few): a pathological input must not hang a run.
MKDSSP_TIMEOUT = 300


class DsspError(RuntimeError):
    """DSSP could not be computed for a structure."""


@functools.cache
def mkdssp_path() -> str | None:
    """Path of the ``mkdssp`` executable, or None."""
    return shutil.which("mkdssp")


def dssp_available() -> bool:
    """Whether secondary structure can be computed here (mkdssp or pydssp)."""
    if mkdssp_path():
        return True
    try:
        import pydssp  # noqa: F401
    except ImportError:
        return False
    return True


def parse_dssp(text: str) -> dict[ResidueKey, str]:
    """Per-residue 8-state letters from classic DSSP output.

    Blank (loop) and mkdssp 4's polyproline ``P`` are written as ``-``; chain-break lines (``!``) are
    ignored. Columns follow the DSSP format: number 6–10, insertion code 11, chain 12, structure 17.
    """
    states: dict[ResidueKey, str] = {}
    lines = iter(text.splitlines())
    for line in lines:
        if line.startswith("  #  RESIDUE"):
            break
    for line in lines:
        if len(line) < 17 or line[13] == "!":
            continue
        try:
            number = int(line[5:10])
        except ValueError:  # a residue number DSSP could not write in its five columns: no key to match
            continue
        letter = line[16]
        states[(line[11], number, line[10].strip())] = letter if letter in "HGIEBTS" else SS_COIL
    return states


def pdb_chain_names(names: list[str]) -> dict[str, str]:
    """A one-character PDB chain name for each chain name, for mkdssp's input.

    The PDB format has one column for the chain, and mkdssp 4 refuses some single characters too (a blank);
    gemmi cannot write a longer name (``a b``, or the two-letter chains of large mmCIF entries) at all.
    Names that are already one letter or digit keep it, so ordinary files are written exactly as before;
    the others get a letter or digit no other chain uses.

    Raises
    ------
    DsspError
        When there are more chains than one-character names.
    """
    unique = list(dict.fromkeys(names))
    mapping = {name: name for name in unique if len(name) == 1 and name in _PDB_CHAIN_NAMES}
    free = iter(c for c in _PDB_CHAIN_NAMES if c not in mapping)
    for name in unique:
        if name not in mapping:
            mapping[name] = next(free, "")
            if not mapping[name]:
                raise DsspError(f"{len(unique)} chains: more than the PDB format mkdssp reads can name")
    return mapping


def run_mkdssp(structure: gemmi.Structure) -> dict[ResidueKey, str]:
    """DSSP states of every residue of the first model, by running ``mkdssp``.

    Chains whose names PDB cannot hold are renamed for mkdssp (see `pdb_chain_names`) and the states are
    returned under the original names.

    Raises
    ------
    DsspError
        When mkdssp is missing or fails, or the structure cannot be written for it (the reason is included,
        on one line).
    """
    exe = mkdssp_path()
    if exe is None:
        raise DsspError("mkdssp is not installed (Debian package 'dssp')")
    names = [chain.name for model in structure for chain in model]
    mapping = pdb_chain_names(names)
    if any(new != old for old, new in mapping.items()):
        structure = structure.clone()
        for model in structure:
            for chain in model:
                chain.name = mapping[chain.name]
    original = {new: old for old, new in mapping.items()}
    try:
        with tempfile.TemporaryDirectory(prefix="plmlens-dssp-") as tmp:
            pdb = Path(tmp) / "in.pdb"
            out = Path(tmp) / "out.dssp"
            options = gemmi.PdbWriteOptions(minimal=True)
            pdb.write_text(_HEADER + structure.make_pdb_string(options))
            result = subprocess.run(
                [exe, "--output-format", "dssp", str(pdb), str(out)],
                capture_output=True, text=True, check=False, timeout=MKDSSP_TIMEOUT,
            )  # fmt: skip
            if result.returncode != 0 or not out.exists():
                message = (result.stderr or result.stdout).strip().splitlines()
                raise DsspError(f"mkdssp failed: {message[-1] if message else 'no output'}")
            states = parse_dssp(out.read_text(errors="replace"))
    except DsspError:
        raise
    except subprocess.TimeoutExpired:
        raise DsspError(f"mkdssp took longer than {MKDSSP_TIMEOUT} s") from None
    # gemmi refuses what PDB cannot hold (RuntimeError), the disk may be full (OSError).
    except (RuntimeError, ValueError, OSError) as error:
        raise DsspError(f"mkdssp input could not be written or run: {' '.join(str(error).split())}") from None
    return {(original.get(chain, chain), number, icode): state for (chain, number, icode), state in states.items()}


def run_pydssp(n: np.ndarray, ca: np.ndarray, c: np.ndarray, o: np.ndarray) -> str:
    """Three-state DSSP (H, E, -) from backbone coordinates with ``pydssp`` (no mkdssp needed).

    pydssp assigns only helix (H), strand (E) and loop, so Turn/Bend cannot be told from coil.
    """
    import pydssp

    backbone = np.stack([n, ca, c, o], axis=1).astype(np.float32)
    states = pydssp.assign(backbone, out_type="c3")
    return "".join(SS_COIL if s == "-" else s for s in states)
