"""PDB and mmCIF files (optionally gzipped) → `Protein` records, read with gemmi.

One record per protein chain of the first model with at least `min_length` amino acids. Alternate
locations keep the first conformer; hydrogens are dropped.
"""

from __future__ import annotations

import gzip
import logging
import os
import stat
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import gemmi
import numpy as np

from plmlens.proteins import chemistry
from plmlens.proteins.annotations import residues_near, virtual_cb
from plmlens.proteins.dssp import DsspError, mkdssp_path, run_mkdssp, run_pydssp
from plmlens.proteins.record import SS_UNKNOWN, Protein, ProteinError
from plmlens.proteins.skips import Skipped

log = logging.getLogger(__name__)

STRUCTURE_SUFFIXES = (".pdb", ".ent", ".cif", ".mmcif", ".pdb.gz", ".ent.gz", ".cif.gz", ".mmcif.gz")

#: Polymer chains shorter than this that are not kept as proteins count as bound peptides (ligands),
#: e.g. the JG-365 inhibitor of HIV-1 protease in 7HVP.
PEPTIDE_LIGAND_MAX_LENGTH = 30

BINDING_SITE_SOURCES = ("ligands", "site", "both", "partner", "none")


@dataclass(frozen=True)
class StructureOptions:
    """How structure files are turned into records.

    Parameters
    ----------
    min_length : int
        Protein chains with fewer amino acids are skipped (and shorter polymer chains count as
        bound-peptide ligands).
    chains : tuple of str, optional
        Only these author chain ids.
    binding_sites : {"ligands", "site", "both", "partner", "none"}
        ``ligands``: residues with a heavy atom within `cutoff` Å of a ligand heavy atom (ligands are
        non-polymer, non-water groups minus `chemistry.CRYSTALLISATION_ADDITIVES` and glycans attached
        to the protein, plus bound peptides). ``site``: residues listed in PDB ``SITE`` / mmCIF
        ``struct_site_gen`` records. ``both``: their union. ``partner``: residues within `cutoff` Å of
        the partner (see `partner`). ``none``: no labels (None).
    cutoff : float
        Heavy-atom distance in Å for ligand and partner contacts.
    partner : str, optional
        ``chains`` (every other polymer chain of the file), ``chains:C,D`` (those chains), or a file:
        a path, or ``replace:OLD:NEW`` meaning this file's name with OLD replaced by NEW in the same
        directory (e.g. ``replace:_r_b:_l_b`` pairs ``1AHW_r_b.pdb`` with ``1AHW_l_b.pdb``).
    dssp : bool
        Compute secondary structure (mkdssp, or pydssp when mkdssp is absent).
    """

    min_length: int = 30
    chains: tuple[str, ...] | None = None
    binding_sites: str = "ligands"
    cutoff: float = 4.5
    partner: str | None = None
    dssp: bool = True


def is_structure_file(path: Path) -> bool:
    """Whether a path names a PDB or mmCIF file (by suffix, gzip allowed)."""
    return path.name.lower().endswith(STRUCTURE_SUFFIXES)


def _is_cif(path: Path) -> bool:
    # By suffix, not by substring: "1cif.pdb" is a PDB file.
    return path.name.lower().removesuffix(".gz").endswith((".cif", ".mmcif"))


def _read_text(path: Path) -> str:
    """The file's text, gunzipped when it starts with the gzip magic (like gemmi, a ``.gz`` that is plain
    text is read as is), so that gemmi never sees invalid UTF-8 (see below).

    Raises
    ------
    ProteinError
        Naming the file, when it cannot be read or decompressed.
    """
    try:
        # A FIFO would block the read forever and a device (a link to /dev/zero) would never end.
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise ProteinError(f"{path}: not a regular file")
        data = path.read_bytes()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as error:
        raise ProteinError(f"{path}: cannot be read: {' '.join(str(error).split())}") from None
    if _is_cif(path):
        return data.decode("utf-8", errors="replace")
    # PDB is ASCII in fixed columns: one "?" per foreign byte keeps the columns, and gemmi never cuts a
    # multi-byte character in two (which would raise UnicodeDecodeError on a chain or residue name).
    return data.decode("ascii", errors="replace").replace("\ufffd", "?")


def read_structure(path: Path, text: str | None = None) -> gemmi.Structure:
    """Read a PDB/mmCIF file with gemmi, tolerating junk in PDB columns 73–80.

    Parameters
    ----------
    path : Path
        ``.pdb``/``.ent`` or ``.cif``/``.mmcif``, optionally gzipped.
    text : str, optional
        The file's text, if already read (see `_read_text`).

    Raises
    ------
    ProteinError
        Naming the file, if it cannot be parsed or holds no atoms.
    """
    text = _read_text(path) if text is None else text
    # gemmi raises RuntimeError on syntax errors, but also IndexError (a CIF without data blocks),
    # ValueError or OverflowError (absurd numbers): all mean "not a readable structure".
    errors = (RuntimeError, ValueError, IndexError, OverflowError)
    try:
        if _is_cif(path):
            document = gemmi.cif.read_string(text)
            if len(document) == 0:
                raise ValueError("no data block")
            structure = gemmi.make_structure_from_block(document[0])
            structure.merge_chain_parts()  # as gemmi.read_structure does
        else:
            try:
                structure = gemmi.read_pdb_string(text)
            except errors as first:
                # Some PDB files carry identifiers in columns 73-80, which gemmi reads as charges.
                try:
                    structure = gemmi.read_pdb_string(text, max_line_length=72)
                except errors:
                    raise first from None
            # As gemmi.read_structure does for a PDB file: merged chain parts, named after the file.
            structure.merge_chain_parts()
            structure.name = path.name.removesuffix(".gz").removesuffix(".pdb")
    except errors as error:
        detail = " ".join(str(error).split())
        raise ProteinError(f"{path}: cannot be read as PDB/mmCIF: {detail}") from None
    if len(structure) == 0 or structure[0].count_atom_sites() == 0:
        raise ProteinError(f"{path}: no atoms")
    structure.setup_entities()
    structure.remove_alternative_conformations()
    structure.remove_hydrogens()
    return structure


def site_residues(path: Path, text: str | None = None) -> set[tuple[str, int, str]]:
    """Residues named in the file's binding-site records: PDB ``SITE`` or mmCIF ``struct_site_gen``.

    Parameters
    ----------
    path : Path
    text : str, optional
        The file's text, if already read.

    Returns
    -------
    set of (chain, author residue number, insertion code)
    """
    out: set[tuple[str, int, str]] = set()
    text = _read_text(path) if text is None else text
    if _is_cif(path):
        try:
            block = gemmi.cif.read_string(text).sole_block()
        except (RuntimeError, ValueError) as error:
            raise ProteinError(f"{path}: cannot read struct_site_gen: {error}") from None
        table = block.find("_struct_site_gen.", ["auth_asym_id", "auth_seq_id", "?pdbx_auth_ins_code"])
        for row in table:
            icode = row[2] if row.has(2) and row[2] not in ("?", ".") else ""
            try:
                out.add((row[0], int(row[1]), icode))
            except ValueError:
                continue
        return out
    for line in text.splitlines():
        if not line.startswith("SITE  "):
            continue
        # Up to four residues per line, 11 columns each from column 19: name, chain, number, icode.
        line = line.ljust(80)
        for offset in (18, 29, 40, 51):
            field = line[offset : offset + 11]
            if not field[:3].strip():
                continue
            try:
                out.add((field[4], int(field[5:9]), field[9].strip()))
            except ValueError:
                continue
    return out


def _heavy_atoms(residues: list[gemmi.Residue]) -> np.ndarray:
    coords = [a.pos.tolist() for r in residues for a in r if not a.is_hydrogen()]
    return np.asarray(coords, dtype=np.float64).reshape(-1, 3)


def _attached_glycans(structure: gemmi.Structure, parents: dict[str, str]) -> set[tuple[str, str]]:
    """(chain, residue id) of sugars covalently connected, directly or through other sugars, to an amino
    acid, and of the amino acids they are attached to (the glycosylated residues)."""
    edges: dict[tuple[str, str], set[tuple[str, str]]] = {}
    names: dict[tuple[str, str], str] = {}
    for connection in structure.connections:
        if connection.type != gemmi.ConnectionType.Covale:
            continue
        ends = []
        for partner in (connection.partner1, connection.partner2):
            key = (partner.chain_name, str(partner.res_id.seqid))
            names[key] = partner.res_id.name
            ends.append(key)
        edges.setdefault(ends[0], set()).add(ends[1])
        edges.setdefault(ends[1], set()).add(ends[0])
    attached: set[tuple[str, str]] = set()
    frontier = [
        key for key, name in names.items() if chemistry.is_amino_acid(name, parents) and name not in chemistry.GLYCANS
    ]
    seen = set(frontier)
    while frontier:
        key = frontier.pop()
        for other in edges.get(key, ()):
            if other in seen or names[other] not in chemistry.GLYCANS:
                continue
            seen.add(other)
            attached.add(other)
            frontier.append(other)
    glycosylated = {
        key
        for key, name in names.items()
        if name not in chemistry.GLYCANS and any(o in attached for o in edges.get(key, ()))
    }
    return attached | glycosylated


def _partner_atoms(path: Path, structure: gemmi.Structure, chain: str, spec: str) -> np.ndarray:
    if spec == "chains" or spec.startswith("chains:"):
        wanted = None if spec == "chains" else set(spec.split(":", 1)[1].split(","))
        residues = [
            r
            for ch in structure[0]
            if ch.name != chain and (wanted is None or ch.name in wanted)
            for r in ch.get_polymer()
        ]
        return _heavy_atoms(residues)
    if spec.startswith("replace:"):
        _, old, new = spec.split(":", 2)
        if old not in path.name:
            raise ProteinError(f"{path}: partner rule {spec!r}: {old!r} is not in the file name")
        partner_path = path.with_name(path.name.replace(old, new, 1))
    else:
        partner_path = Path(spec)
    partner = read_structure(partner_path) if partner_path.exists() else None
    if partner is None:
        raise ProteinError(f"{path}: partner file {partner_path} does not exist")
    # Everything the partner brings counts (its glycans and ligands too), but not its waters.
    return _heavy_atoms([r for ch in partner[0] for r in ch if r.name not in chemistry.WATER])


def read_structure_file(path: str | Path, options: StructureOptions | None = None) -> Iterator[Protein | Skipped]:
    """Yield one `Protein` per protein chain of a PDB/mmCIF file, or a `Skipped` naming the problem.

    Parameters
    ----------
    path : str or Path
        ``.pdb``, ``.ent``, ``.cif`` or ``.mmcif``, optionally ``.gz``.
    options : StructureOptions, optional

    Yields
    ------
    Protein or Skipped
        Records carry CA/CB coordinates (virtual CB for Gly and missing CB), author numbering, DSSP,
        binding-site labels per `options.binding_sites` and PTM labels (modified residues of
        `chemistry.PTM_RESIDUES`, MODRES glycosylation sites and residues covalently linked to glycans).
    """
    path = Path(path)
    options = options or StructureOptions()
    try:
        text = _read_text(path)
        structure = read_structure(path, text)
        sites = site_residues(path, text) if options.binding_sites in ("site", "both") else set()
    except ProteinError as error:
        yield Skipped(str(path), None, str(error).removeprefix(f"{path}: "))
        return
    parents = {m.mod_id or m.res_id.name: m.parent_comp_id for m in structure.mod_residues if m.parent_comp_id}
    modres_sites = {(m.chain_name, m.res_id.seqid.num, m.res_id.seqid.icode.strip()): m for m in structure.mod_residues}
    glycan_keys = _attached_glycans(structure, parents)
    pdb_id = structure.name or path.name.split(".")[0]
    if len(pdb_id) == 4:
        pdb_id = pdb_id.upper()

    model = structure[0]
    polymers: dict[str, list[gemmi.Residue]] = {}
    for chain in model:
        residues = [r for r in chain.get_polymer() if chemistry.is_amino_acid(r.name, parents)]
        if residues:
            polymers[chain.name] = residues

    ligands: list[gemmi.Residue] = []
    for chain in model:
        polymer_ids = {str(r.seqid) for r in polymers.get(chain.name, [])}
        short_peptide = 0 < len(polymers.get(chain.name, [])) < min(options.min_length, PEPTIDE_LIGAND_MAX_LENGTH + 1)
        for residue in chain:
            key = (chain.name, str(residue.seqid))
            if (short_peptide and residue.name not in chemistry.WATER) or (
                str(residue.seqid) not in polymer_ids
                and residue.entity_type != gemmi.EntityType.Polymer
                and chemistry.is_ligand(residue.name)
                and key not in glycan_keys
            ):
                ligands.append(residue)
    ligand_atoms = _heavy_atoms(ligands)

    dssp_states: dict | None = None
    dssp_error: str | None = None
    if options.dssp and mkdssp_path():
        try:
            dssp_states = run_mkdssp(structure)
        except DsspError as error:
            dssp_error = str(error)
        # Secondary structure is one annotation: whatever else goes wrong computing it for one file leaves
        # it unknown there (one warning line per chain), never ends the run.
        except Exception as error:
            dssp_error = f"DSSP failed: {type(error).__name__}: {' '.join(str(error).split())}"

    found = False
    for chain in model:
        if options.chains is not None and chain.name not in options.chains:
            continue
        residues = polymers.get(chain.name)
        if residues is None:
            if options.chains is not None:
                yield Skipped(str(path), chain.name, "no protein residues")
            continue
        found = True
        record = f"{pdb_id}.{chain.name}"
        if len(residues) < options.min_length:
            yield Skipped(
                str(path), chain.name, f"{len(residues)} residues, fewer than min_length={options.min_length}"
            )
            continue
        try:
            protein = _chain_record(
                path, record, chain.name, residues, parents, modres_sites, glycan_keys, options,
                ligand_atoms, sites, structure, dssp_states, dssp_error,
            )  # fmt: skip
        except ProteinError as error:
            yield Skipped(str(path), chain.name, str(error).split(": ", 2)[-1])
            continue
        yield protein
    if not found:
        yield Skipped(str(path), None, "no protein chains")


def _chain_record(
    path: Path,
    record: str,
    chain: str,
    residues: list[gemmi.Residue],
    parents: dict[str, str],
    modres_sites: dict,
    glycan_keys: set[tuple[str, str]],
    options: StructureOptions,
    ligand_atoms: np.ndarray,
    sites: set[tuple[str, int, str]],
    structure: gemmi.Structure,
    dssp_states: dict | None,
    dssp_error: str | None,
) -> Protein:
    n = len(residues)
    backbone = np.full((4, n, 3), np.nan)  # N, CA, C, O
    cb = np.full((n, 3), np.nan)
    atoms: list[list[float]] = []
    atom_residue: list[int] = []
    for i, residue in enumerate(residues):
        for k, name in enumerate(("N", "CA", "C", "O")):
            atom = residue.find_atom(name, "*")
            if atom is not None:
                backbone[k, i] = atom.pos.tolist()
        atom = residue.find_atom("CB", "*")
        if atom is not None and residue.name != "GLY":
            cb[i] = atom.pos.tolist()
        for atom in residue:
            if not atom.is_hydrogen():
                atoms.append(atom.pos.tolist())
                atom_residue.append(i)
    if not np.isfinite(backbone[1]).all(axis=1).any():
        raise ProteinError(f"{path}: {record}: no CA atoms")
    missing_cb = ~np.isfinite(cb).all(axis=1)
    cb[missing_cb] = virtual_cb(backbone[0], backbone[1], backbone[2])[missing_cb]
    has_coords = np.isfinite(backbone[1]).all(axis=1) & np.isfinite(cb).all(axis=1)

    names = [r.name for r in residues]
    # gemmi gives no number (None) for a blank or unreadable residue-number field: -1 means unknown.
    keys = [(chain, -1 if r.seqid.num is None else r.seqid.num, r.seqid.icode.strip()) for r in residues]
    atom_xyz = np.asarray(atoms, dtype=np.float64).reshape(-1, 3)
    atom_index = np.asarray(atom_residue, dtype=np.int64)

    binding: np.ndarray | None
    if options.partner is not None or options.binding_sites == "partner":
        if options.partner is None:
            raise ProteinError(f"{path}: {record}: binding_sites='partner' needs a partner option")
        partner_xyz = _partner_atoms(path, structure, chain, options.partner)
        binding = residues_near(atom_xyz, atom_index, n, partner_xyz, options.cutoff)
    elif options.binding_sites == "none":
        binding = None
    else:
        binding = np.zeros(n, dtype=bool)
        if options.binding_sites in ("ligands", "both"):
            binding |= residues_near(atom_xyz, atom_index, n, ligand_atoms, options.cutoff)
        if options.binding_sites in ("site", "both"):
            binding |= np.array([key in sites for key in keys])

    ptm = np.array(
        [
            name in chemistry.PTM_RESIDUES
            or (chain, str(r.seqid)) in glycan_keys
            or ("GLYCOSYL" in (getattr(modres_sites.get(key), "details", "") or "").upper())
            for name, r, key in zip(names, residues, keys, strict=True)
        ],
        dtype=bool,
    )

    dssp = None
    if options.dssp:
        if dssp_states is not None:
            dssp = "".join(dssp_states.get(key, SS_UNKNOWN) for key in keys)
        elif dssp_error is None:
            try:
                bb = np.nan_to_num(backbone)
                dssp = run_pydssp(bb[0], bb[1], bb[2], bb[3])
            except ImportError:
                log.warning("%s: no mkdssp and no pydssp: secondary structure left unknown", path)
            except Exception as error:  # as for mkdssp: one chain's DSSP never ends the run
                log.warning("%s: pydssp failed (%s): secondary structure left unknown", path, error)
        else:
            log.warning("%s: %s: secondary structure left unknown", path, dssp_error)

    return Protein(
        id=record,
        sequence="".join(chemistry.residue_letter(name, parents) for name in names),
        source=str(path),
        chain=chain,
        residue_numbers=np.array([k[1] for k in keys]),
        insertion_codes=np.array([k[2] for k in keys], dtype="<U1"),
        ca=backbone[1],
        cb=cb,
        has_coords=has_coords,
        dssp=dssp,
        binding_site=binding,
        ptm=ptm,
        meta={"residue_names": names},
    )
